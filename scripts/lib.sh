# scripts/lib.sh: start and stop a private PostgreSQL and Redis on loopback.
# Sourced by tests/run.sh (temp dir, spare ports, always stopped) and by
# scripts/stack.sh (./var, for `make run` / `make up`). Never touches system
# services. PostgreSQL refuses to run as root, so as root its data directory is
# given to the `postgres` user and its tools run through runuser.

bf_free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

bf_pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  return 1
}

# bf_as_pg CMD...: run a PostgreSQL tool as the owner of the data directory.
bf_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# bf_pg_start DIR PORT [durable]: initdb if needed, start, create database bangfu.
bf_pg_start() {
  local dir=$1 port=$2 durable=${3:-}
  local bin; bin=$(bf_pg_bindir) || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; chmod 700 "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local nosync="--no-sync"; [ -n "$durable" ] && nosync=""
    bf_as_pg "$bin/initdb" -D "$dir/data" -U bangfu -A trust -E UTF8 --locale=C.UTF-8 \
      $nosync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
  fi
  local opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300"
  [ -z "$durable" ] && opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  bf_as_pg "$bin/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; return 1; }
  local i
  for i in $(seq 1 50); do
    "$bin/psql" -h 127.0.0.1 -p "$port" -U bangfu -d postgres -Atqc 'select 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U bangfu -d postgres -Atqc \
      "select 1 from pg_database where datname='bangfu'" | grep -q 1; then
    "$bin/psql" -h 127.0.0.1 -p "$port" -U bangfu -d postgres -qc 'create database bangfu' >/dev/null
  fi
}

bf_pg_stop() {
  local dir=$1
  local bin; bin=$(bf_pg_bindir) || return 0
  [ -f "$dir/data/postmaster.pid" ] && bf_as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
  return 0
}

# ---- least privilege (docs/security.md "PostgreSQL and Redis privileges") ----
# Per-service PostgreSQL roles and Redis ACL users. The passwords live in one
# secrets directory (0700), next to the CURVE keys: one file per login,
# pg-<service>.password and redis-<user>.password, made once and kept.

BF_PRIV_SERVICES="registry funds tasks notify gateway"
BF_REDIS_USERS="admin registry funds tasks notify gateway cli"

# bf_secrets_init DIR: creates the password files that are missing.
bf_secrets_init() {
  local dir=$1 name
  mkdir -p "$dir" && chmod 700 "$dir" || return 1
  for name in $(for s in $BF_PRIV_SERVICES; do echo "pg-$s"; done) \
              $(for u in $BF_REDIS_USERS; do echo "redis-$u"; done); do
    [ -s "$dir/$name.password" ] && continue
    ( umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/$name.password" ) \
      || return 1
  done
}

# bf_redis_admin_url PORT SECRETS_DIR: the bangfu_admin URL (tests, operators).
bf_redis_admin_url() {
  echo "redis://bangfu_admin:$(cat "$2/redis-admin.password")@127.0.0.1:$1/0"
}

# bf_pg_bootstrap PORT: the service roles and schemas (scripts/db-bootstrap.sh),
# without passwords: loopback trust authentication, but each service still
# logs in as its own role.
bf_pg_bootstrap() {
  local bin; bin=$(bf_pg_bindir) || return 1
  PSQL="$bin/psql" PGHOST=127.0.0.1 PGPORT=$1 PGUSER=bangfu PGDATABASE=bangfu \
    "$(dirname "${BASH_SOURCE[0]}")/db-bootstrap.sh" >/dev/null \
    || { echo "PostgreSQL bootstrap (roles, schemas) failed" >&2; return 1; }
}

# bf_redis_start DIR PORT [aof] [SECRETS_DIR] [MAXMEMORY]: with SECRETS_DIR,
# Redis runs with the ACL users of scripts/redis-acl.sh (no unauthenticated
# access), and maxmemory (default 256mb) with policy noeviction: streams and
# queues are never evicted, writes fail instead (docs/operations.md).
bf_redis_start() {
  local dir=$1 port=$2 aof=${3:-no} secrets=${4:-} maxmem=${5:-256mb}
  mkdir -p "$dir"
  local acl=() auth=() pw=""
  if [ -n "$secrets" ]; then
    "$(dirname "${BASH_SOURCE[0]}")/redis-acl.sh" "$secrets" >"$dir/users.acl" || return 1
    acl=(--aclfile "$dir/users.acl")
    auth=(--user bangfu_admin)
    pw=$(cat "$secrets/redis-admin.password")
  fi
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" \
    --appendonly "$aof" --appendfsync everysec \
    --maxmemory "$maxmem" --maxmemory-policy noeviction "${acl[@]}" >/dev/null || return 1
  local i
  for i in $(seq 1 50); do
    REDISCLI_AUTH=$pw redis-cli -p "$port" "${auth[@]}" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  echo "redis did not start" >&2; return 1
}

bf_redis_stop() {
  local dir=$1
  if [ -f "$dir/redis.pid" ]; then
    local pid; pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null
    local i; for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$dir/redis.pid"
  fi
  return 0
}
