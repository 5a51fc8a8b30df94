#!/usr/bin/env bash
# gen-secrets.sh DIR: makes the database and Redis passwords of a bangfu
# deployment in DIR (0700), one file per login, keeping any that exist:
#   pg-<service>.password     PostgreSQL role bangfu_<service>
#   redis-<user>.password     Redis ACL user bangfu_<user> (admin, the five
#                             services, cli)
# For docker-compose (DIR = docker/secrets by default, BANGFU_SECRETS_DIR):
# run as root, it gives the files a service container reads to uid 10001 (the
# image's bangfu user), mode 0400; the PostgreSQL and Redis containers read
# them as root at start. docs/operations.md, "Passwords and rotation".
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"
dir=${1:?usage: gen-secrets.sh DIR}
bf_secrets_init "$dir"
if [ "$(id -u)" = 0 ]; then
  for s in $BF_PRIV_SERVICES; do
    chown 10001:10001 "$dir/pg-$s.password" "$dir/redis-$s.password"
    chmod 0400 "$dir/pg-$s.password" "$dir/redis-$s.password"
  done
else
  echo "gen-secrets.sh: not root: the bangfu containers (uid 10001) cannot read" \
       "$dir/{pg,redis}-<service>.password until they are given to uid 10001 (sudo chown 10001)" >&2
fi
echo "passwords in $dir"
