#!/bin/sh
# redis-entrypoint: runs redis-server for bangfu in a container.
#
# Started as root, it gives /data to the redis user and re-executes itself as
# that user. Redis runs in the foreground, logging to stdout, with its data in
# /data: the append-only file (appendonly yes, appendfsync everysec) and RDB
# snapshots (Redis's default save points). It listens on $REDIS_BIND (every
# address by default) port $REDIS_PORT. bangfu does not send a Redis password,
# so Redis must only be reachable on the compose network: never publish its
# port. Extra arguments are Redis options, e.g. `--maxmemory 2gb`; keep the
# default maxmemory-policy noeviction (queues must never be evicted).
set -eu

: "${REDIS_PORT:=6379}"
: "${REDIS_BIND:=* -::*}"

if [ "$(id -u)" = 0 ]; then
    mkdir -p /data
    find /data \! -user redis -exec chown redis:redis {} +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

set -f # REDIS_BIND is a list of addresses, "*" among them: split it, never glob it
# shellcheck disable=SC2086
exec redis-server --bind $REDIS_BIND --port "$REDIS_PORT" --protected-mode no \
    --dir /data --appendonly yes --appendfsync everysec \
    --daemonize no --supervised no --logfile "" "$@"
