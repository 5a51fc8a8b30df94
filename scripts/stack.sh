#!/usr/bin/env bash
# stack.sh run|up|down|status: the local bangfu stack under ./var, for users
# without Docker (`make run`, `make up`, `make down`).
#
#   up      start PostgreSQL and Redis (own data dirs in var/, spare loopback
#           ports chosen once and kept in var/ports.env), apply migrations,
#           start the bus and every service in $BUILD/bin, load the demo data,
#           write var/endpoints.env and print where everything listens
#   run     up, then follow the logs until Ctrl-C, which stops everything
#   down    stop the services (SIGTERM, they drain and exit), Redis, PostgreSQL
#   status  what is running
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
VAR="${BANGFU_VAR:-$ROOT/var}"  # BANGFU_VAR: another directory (tests)
SECRETS="$VAR/secrets"          # database and Redis passwords (0700)
. scripts/lib.sh

SERVICES=(registry funds tasks notify gateway)

svc_present() { [ -x "$BUILD/bin/bangfu-$1" ]; }

pidfile() { echo "$VAR/run/$1.pid"; }

running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

ports() {
  mkdir -p "$VAR/run" "$VAR/log"
  if [ ! -f "$VAR/ports.env" ]; then
    {
      echo "PG_PORT=$(bf_free_port)"
      echo "REDIS_PORT=$(bf_free_port)"
      echo "BUS_XSUB_PORT=$(bf_free_port)"
      echo "BUS_PUB_PORT=$(bf_free_port)"
      for s in "${SERVICES[@]}"; do echo "${s^^}_PORT=$(bf_free_port)"; done
    } >"$VAR/ports.env"
  fi
  # a service added since ports.env was written gets a port too
  for s in "${SERVICES[@]}"; do
    grep -q "^${s^^}_PORT=" "$VAR/ports.env" || echo "${s^^}_PORT=$(bf_free_port)" >>"$VAR/ports.env"
  done
  # the console: 8080 when free, else a spare port; kept like the others
  if ! grep -q '^GATEWAY_HTTP_PORT=' "$VAR/ports.env"; then
    local hp=8080
    /usr/bin/python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",8080))' 2>/dev/null \
      || hp=$(bf_free_port)
    echo "GATEWAY_HTTP_PORT=$hp" >>"$VAR/ports.env"
  fi
  . "$VAR/ports.env"
}

# CURVE keys (docs/security.md), made once under var/keys: the deployment set
# plus the demo principals the loaders use and a few to try roles with
make_keys() {
  local k="$VAR/keys" b="$BUILD/bin/bangfu"
  { "$b" keygen --deployment "$k" &&
    # the gateway vouches for the people who sign in to the console, admins
    # included, so it holds admin too (it may only grant roles it holds)
    "$b" keygen gateway --dir "$k" --roles service,admin --act-for &&
    "$b" keygen system:demo --dir "$k" --roles admin &&
    "$b" keygen demo.loader --dir "$k" --roles admin --act-for &&
    # the tranche approver, a principal distinct from the planner (system:demo);
    # admin until every method names its roles (then finance,approver suffice)
    "$b" keygen cadre:finance-bureau --dir "$k" --roles finance,approver,admin &&
    "$b" keygen operator.dongli --dir "$k" --roles county_operator --region 120110000000 &&
    "$b" keygen auditor.demo --dir "$k" --roles auditor &&
    "$b" keygen events.reader --dir "$k" --roles subscriber; } >/dev/null
}

write_endpoints() {
  {
    echo "# bangfu local stack endpoints (written by scripts/stack.sh; source this file)"
    echo "BANGFU_KEYS_DIR=$VAR/keys"
    echo "BANGFU_PRINCIPAL=admin"
    echo "BANGFU_PG_DSN=postgresql://bangfu@127.0.0.1:$PG_PORT/bangfu"
    echo "BANGFU_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "BANGFU_REDIS_PASSWORD_FILE=$SECRETS/redis-{service}.password"
    echo "BANGFU_BUS_XSUB=tcp://127.0.0.1:$BUS_XSUB_PORT"
    echo "BANGFU_BUS_PUB=tcp://127.0.0.1:$BUS_PUB_PORT"
    for s in "${SERVICES[@]}"; do
      svc_present "$s" || continue
      local var="${s^^}_PORT"
      echo "BANGFU_${s^^}_RPC=tcp://127.0.0.1:${!var}"
    done
  } >"$VAR/endpoints.env"
}

export_env() {
  set -a; . "$VAR/endpoints.env"; set +a
  export BANGFU_CONFIG="$ROOT/configs/bangfu.conf"
  for s in "${SERVICES[@]}"; do
    local var="${s^^}_PORT"
    export "BANGFU_${s^^}_BIND=tcp://127.0.0.1:${!var}"
    export "BANGFU_${s^^}_RPC=tcp://127.0.0.1:${!var}"
  done
  export BANGFU_GATEWAY_HTTP_BIND="127.0.0.1:$GATEWAY_HTTP_PORT"
  export BANGFU_GATEWAY_WWW_DIR="$ROOT/services/gateway/www"
}

start_one() { # name binary
  local name=$1 bin=$2
  running "$name" && return 0
  "$bin" >>"$VAR/log/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
}

wait_healthy() { # service
  local s=$1 i
  for i in $(seq 1 300); do
    "$BUILD/bin/bangfu" call "$s" sys.health --timeout 500 >/dev/null 2>&1 && return 0
    running "$s" || { echo "bangfu-$s exited; last log lines:" >&2; tail -20 "$VAR/log/$s.log" >&2; return 1; }
    sleep 0.1
  done
  echo "bangfu-$s did not become healthy; see var/log/$s.log" >&2
  return 1
}

stop_one() {
  local name=$1 f; f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    local i; for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "bangfu-$name did not stop in 15 s; killing" >&2; kill -9 "$pid"; }
  fi
  rm -f "$f"
}

up() {
  ports
  [ -x "$BUILD/bin/bangfu" ] || { echo "build first: make" >&2; return 1; }
  if ! bf_as_pg true 2>/dev/null; then :; fi
  # least privilege (docs/security.md): passwords in $SECRETS (made once, kept),
  # one PostgreSQL role per service (bootstrapped on every up: idempotent),
  # Redis with ACL users and maxmemory (noeviction)
  bf_secrets_init "$SECRETS" || return 1
  if [ ! -f "$VAR/pg/data/postmaster.pid" ]; then
    bf_pg_start "$VAR/pg" "$PG_PORT" durable || return 1
  fi
  bf_pg_bootstrap "$PG_PORT" || return 1
  [ -f "$VAR/redis/redis.pid" ] && kill -0 "$(cat "$VAR/redis/redis.pid")" 2>/dev/null \
    || bf_redis_start "$VAR/redis" "$REDIS_PORT" yes "$SECRETS" "${BANGFU_REDIS_MAXMEMORY:-512mb}" \
    || return 1
  make_keys || { echo "bangfu keygen failed" >&2; return 1; }
  write_endpoints
  export_env
  start_one bus "$BUILD/bin/bangfu-bus"
  for s in "${SERVICES[@]}"; do
    svc_present "$s" || continue
    start_one "$s" "$BUILD/bin/bangfu-$s"
    wait_healthy "$s" || return 1
  done
  # notify's subscriptions go in before the funds and tasks demos, so their
  # events already reach the inboxes
  for s in registry notify funds tasks; do
    svc_present "$s" || continue
    if [ -f "scripts/demo/$s.py" ]; then
      echo "loading demo data: $s"
      /usr/bin/python3 "scripts/demo/$s.py" || { echo "demo data for $s failed" >&2; return 1; }
    fi
  done
  echo
  echo "bangfu is up. Endpoints (var/endpoints.env):"
  sed -e '/^#/d' -e 's/^/  /' "$VAR/endpoints.env"
  echo "Logs: var/log/*.log   CLI: set -a; . var/endpoints.env; set +a; $BUILD/bin/bangfu help"
  if svc_present gateway; then
    echo "Console and HTTP API: http://127.0.0.1:$GATEWAY_HTTP_PORT/  (user admin; password in" \
         "$BANGFU_KEYS_DIR/gateway-admin.password)"
  fi
}

down() {
  [ -d "$VAR" ] || return 0
  for s in gateway notify tasks funds registry bus; do stop_one "$s"; done
  bf_redis_stop "$VAR/redis"
  bf_pg_stop "$VAR/pg"
  rm -f "$VAR/endpoints.env"
  echo "bangfu stopped"
}

status() {
  for s in bus "${SERVICES[@]}"; do
    if running "$s"; then echo "$s: running (pid $(cat "$(pidfile "$s")"))"; else echo "$s: stopped"; fi
  done
}

case "${1:-}" in
  up) up || { down; exit 1; } ;;
  down) down ;;
  status) status ;;
  run)
    TAIL_PID=""
    trap 'echo; [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null; down; exit 0' INT TERM
    up || { down; exit 1; }
    echo "Following the logs; Ctrl-C stops everything."
    tail -n 0 -F "$VAR"/log/*.log &
    TAIL_PID=$!
    wait "$TAIL_PID"
    ;;
  *) echo "usage: stack.sh run|up|down|status" >&2; exit 2 ;;
esac
