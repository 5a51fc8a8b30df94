#!/bin/sh
# redis-entrypoint: runs redis-server for bangfu in a container.
#
# Started as root, it gives /data to the redis user and re-executes itself as
# that user. Redis runs in the foreground, logging to stdout, with its data in
# /data: the append-only file (appendonly yes, appendfsync everysec) and RDB
# snapshots (Redis's default save points). It listens on $REDIS_BIND (every
# address by default) port $REDIS_PORT, with no unauthenticated access: the
# ACL users of bangfu-redis-acl (scripts/redis-acl.sh; default user off), made
# at every start, as root, from the passwords mounted at $BANGFU_SECRETS
# (/run/bangfu/secrets/redis-<user>.password) into a file only redis reads.
# maxmemory $REDIS_MAXMEMORY (default 1gb) with policy noeviction: streams and
# queues are never evicted; writes fail when full (docs/operations.md).
# Extra arguments are Redis options.
set -eu

: "${REDIS_PORT:=6379}"
: "${REDIS_BIND:=* -::*}"

: "${REDIS_MAXMEMORY:=1gb}"
SECRETS=${BANGFU_SECRETS:-/run/bangfu/secrets}
ACL=/run/bangfu-redis/users.acl

if [ "$(id -u)" = 0 ]; then
    if [ ! -s "$SECRETS/redis-admin.password" ]; then
        echo "redis-entrypoint: no $SECRETS/redis-admin.password: refusing to run Redis" \
             "without passwords (make them with scripts/gen-secrets.sh)" >&2
        exit 1
    fi
    mkdir -p /run/bangfu-redis
    bangfu-redis-acl "$SECRETS" >"$ACL.new"
    mv "$ACL.new" "$ACL"
    chown -R redis:redis /run/bangfu-redis
    chmod 0700 /run/bangfu-redis
    chmod 0600 "$ACL"
    mkdir -p /data
    find /data \! -user redis -exec chown redis:redis {} +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

[ -s "$ACL" ] || { echo "redis-entrypoint: no ACL file $ACL (start as root)" >&2; exit 1; }
set -f # REDIS_BIND is a list of addresses, "*" among them: split it, never glob it
# shellcheck disable=SC2086
exec redis-server --bind $REDIS_BIND --port "$REDIS_PORT" --aclfile "$ACL" \
    --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy noeviction \
    --dir /data --appendonly yes --appendfsync everysec \
    --daemonize no --supervised no --logfile "" "$@"
