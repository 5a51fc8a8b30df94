#!/usr/bin/env bash
# docker/compose-test.sh (`make compose-test`): the docker-compose deployment,
# built and run for real on this machine, with nothing left behind.
#
#  1. installs docker.io, docker-compose and debootstrap if missing (and the
#     build/test packages of scripts/deps.sh, for the host's `bangfu` CLI);
#  2. starts a private dockerd (data root, exec root and socket in a temp dir,
#     --iptables=false --bridge=none) and stops it by its PID at the end,
#     whatever happens;
#  3. makes debian:bookworm-slim offline with docker/debian-base.sh
#     (debootstrap from the apt mirror; the tarball is cached for a week);
#  4. builds the images with docker-compose (host network for apt) and starts
#     the stack with docker/docker-compose.hostnet.yml: every container on the
#     host network, on free 127.0.0.1 ports, under its own project name;
#  5. waits for every health check (every container runs with CURVE on; the
#     keys volume is copied out for the host's CLI), checks the images (non-root, no secrets)
#     and the logs (JSON lines on stdout), runs docker/compose_scenario.py
#     with the host's CLI (registry writes, events on the stream and the bus,
#     and, where those services exist in services/: funds allocated and
#     disbursed, a task going overdue, the webhook at a receiver on the host),
#     restarts PostgreSQL and Redis and checks the data and new writes, stops
#     the services (each must exit 0 on SIGTERM), and removes everything with
#     its volumes;
#  6. checks the production compose file with `docker-compose config`.
# Ends with a PASS/FAIL/SKIP list; exits 1 if anything failed.
#
#   BANGFU_KEEP=1          leave the stack and dockerd running for a look (prints how)
#   BANGFU_CACHE=DIR       where the base tarball is kept (default /var/cache/bangfu)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PY=/usr/bin/python3

RESULTS=()
FAILS=0
pass() { RESULTS+=("PASS $*"); echo "PASS $*"; }
fail() { RESULTS+=("FAIL $*"); echo "FAIL $*"; FAILS=$((FAILS + 1)); }
skip() { RESULTS+=("SKIP $*"); echo "SKIP $*"; }
say() { echo "== $(($(date +%s) - T0))s $*"; }

summary() {
    echo
    echo "==== compose test summary ($(($(date +%s) - T0)) s) ===="
    local r
    for r in "${RESULTS[@]}"; do echo "  $r"; done
    if [ "$FAILS" -eq 0 ] && [ ${#RESULTS[@]} -gt 0 ]; then
        echo "compose test: PASS"
    else
        echo "compose test: FAIL ($FAILS failed)"
    fi
    local passes=0
    for r in "${RESULTS[@]}"; do case "$r" in PASS*) passes=$((passes + 1)) ;; esac; done
    echo "compose: $passes passed, $FAILS failed"
}

# ---------------------------------------------------------------- 1. packages
need=()
for p in docker.io docker-compose debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null
    if ! $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; then
        fail "install ${need[*]}"
        summary
        exit 1
    fi
fi
bash scripts/deps.sh || { fail "scripts/deps.sh"; summary; exit 1; }
DOCKER=/usr/bin/docker
COMPOSE_BIN=/usr/bin/docker-compose

# The host's CLI ($BUILD/bin/bangfu; up to date already after `make all`).
BUILD=${BUILD:-build}
say "the host's bangfu CLI: make $BUILD/bin/bangfu"
if ! out=$(make -s BUILD="$BUILD" "$BUILD/bin/bangfu" 2>&1); then
    echo "$out" | tail -30
    fail "build the host CLI (make BUILD=$BUILD $BUILD/bin/bangfu)"
    summary
    exit 1
fi
export BANGFU_CLI=$ROOT/$BUILD/bin/bangfu

# ---------------------------------------------------------------- 2. dockerd
TMP=$(mktemp -d /tmp/bangfu-compose.XXXXXX)
chmod 755 "$TMP"
DOCKERD_PID=""
PROJECT="bangfuct$$"
COMPOSE=()
STARTED=""

cleanup() {
    local rc=$?
    if [ -n "${BANGFU_KEEP:-}" ] && [ -n "$DOCKERD_PID" ]; then
        echo "BANGFU_KEEP: stack left running. export DOCKER_HOST=unix://$TMP/docker.sock;"
        echo "  ${COMPOSE[*]} ps    ... then: kill $DOCKERD_PID; rm -rf $TMP"
        exit $rc
    fi
    if [ -n "$STARTED" ] && [ -n "$DOCKERD_PID" ]; then
        "${COMPOSE[@]}" down -v --timeout 10 >/dev/null 2>&1
    fi
    if [ -n "$DOCKERD_PID" ] && [ -d "/proc/$DOCKERD_PID" ]; then
        # dockerd stops its containers and its own containerd on SIGTERM.
        $SUDO kill -TERM "$DOCKERD_PID" 2>/dev/null
        local i
        for i in $(seq 1 100); do [ -d "/proc/$DOCKERD_PID" ] || break; sleep 0.2; done
        [ -d "/proc/$DOCKERD_PID" ] && $SUDO kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    # Whatever this engine started (containerd, shims) still running: by PID.
    local p
    for p in $(pgrep -f -- "$TMP/" 2>/dev/null); do
        [ "$p" != "$$" ] && $SUDO kill -KILL "$p" 2>/dev/null
    done
    # Mounts the engine left (overlays, network namespaces), deepest first.
    awk -v t="$TMP/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do $SUDO umount -l "$m" 2>/dev/null; done
    $SUDO rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'fail "interrupted"; exit 130' INT TERM

export DOCKER_HOST="unix://$TMP/docker.sock"
# Builds go through Debian's docker CLI with BuildKit (the build and runtime
# stages of docker/Dockerfile run side by side): docker-compose calls the
# `docker` first in PATH, so that is Debian's, matched to Debian's engine.
mkdir -p "$TMP/bin"
ln -s "$DOCKER" "$TMP/bin/docker"
export PATH="$TMP/bin:$PATH" COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1 BUILDKIT_PROGRESS=plain
say "starting dockerd in $TMP"
group=()
[ -n "$SUDO" ] && group=(--group "$(id -gn)") # the socket is ours, not only root's
$SUDO dockerd --data-root "$TMP/data" --exec-root "$TMP/exec" --pidfile "$TMP/dockerd.pid" \
    --host "$DOCKER_HOST" --iptables=false --bridge=none --log-level warn "${group[@]}" \
    >"$TMP/dockerd.log" 2>&1 &
DOCKERD_PID=$!
ok=""
for _ in $(seq 1 150); do
    if $DOCKER info >/dev/null 2>&1; then ok=1; break; fi
    [ -d "/proc/$DOCKERD_PID" ] || break
    sleep 0.2
done
# dockerd's own PID (not sudo's) from here on
[ -s "$TMP/dockerd.pid" ] && DOCKERD_PID=$(cat "$TMP/dockerd.pid")
if [ -z "$ok" ]; then
    tail -20 "$TMP/dockerd.log"
    fail "dockerd did not start"
    summary
    exit 1
fi
pass "dockerd $($DOCKER version -f '{{.Server.Version}}') (pid $DOCKERD_PID)"

# ---------------------------------------------------------------- 3. base image
say "base image debian:bookworm-slim"
if DOCKER=$DOCKER bash docker/debian-base.sh; then
    pass "debian:bookworm-slim imported offline (debootstrap, cached tarball)"
else
    fail "debian:bookworm-slim (docker/debian-base.sh)"
    summary
    exit 1
fi

# ---------------------------------------------------------------- 4. build and start
SERVICES=(bus registry)
for s in funds tasks notify; do
    if [ -d "services/$s" ]; then SERVICES+=("$s"); else skip "$s: services/$s is not in this tree"; fi
done
export BANGFU_SERVICES="${SERVICES[*]}"

# Free loopback ports for everything, and the test's env file.
read -r P_PG P_REDIS P_XSUB P_PUB P_REG P_FUNDS P_TASKS P_NOTIFY < <($PY -c '
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
ENVF="$TMP/test.env"
PGPW="ct-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
# the per-service PostgreSQL and Redis passwords (docs/security.md)
bash scripts/gen-secrets.sh "$TMP/secrets" >/dev/null || { fail "scripts/gen-secrets.sh"; summary; exit 1; }
cat >"$ENVF" <<EOF
# docker/compose-test.sh: generated, removed with its temp dir
POSTGRES_PASSWORD=$PGPW
BANGFU_SECRETS_DIR=$TMP/secrets
BANGFU_ENV_FILE=$ENVF
BANGFU_LOG_LEVEL=info
BF_HOSTNET_PG_PORT=$P_PG
BF_HOSTNET_REDIS_PORT=$P_REDIS
BF_HOSTNET_BUS_XSUB_PORT=$P_XSUB
BF_HOSTNET_BUS_PUB_PORT=$P_PUB
BF_HOSTNET_REGISTRY_PORT=$P_REG
BF_HOSTNET_FUNDS_PORT=$P_FUNDS
BF_HOSTNET_TASKS_PORT=$P_TASKS
BF_HOSTNET_NOTIFY_PORT=$P_NOTIFY
# quicker schedulers, so the test does not wait long for time to pass
BANGFU_TASKS_TICK_SECONDS=1
BANGFU_NOTIFY_BACKOFF_BASE_MS=500
# the scenario's webhook receiver listens on the host's loopback: webhooks
# reach loopback only when the allow-list names it (docs/notify.md)
BANGFU_NOTIFY_WEBHOOK_ALLOW=127.0.0.1/32
EOF
export BANGFU_ENV_FILE=$ENVF
# docker-compose 1.29 refuses published ports on the host network and an
# override cannot remove the production file's `ports`, so the test runs the
# merged configuration (docker-compose config) with `ports` dropped: they mean
# nothing on the host network. Everything else is exactly the two files.
if ! $COMPOSE_BIN -f docker/docker-compose.yml -f docker/docker-compose.hostnet.yml \
    --env-file "$ENVF" config >"$TMP/merged.yml" 2>"$TMP/merged.err" ||
    ! $PY -c '
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
for s in d["services"].values():
    s.pop("ports", None)
yaml.safe_dump(d, open(sys.argv[2], "w"), sort_keys=False)' "$TMP/merged.yml" "$TMP/compose.yml"; then
    cat "$TMP/merged.err"
    fail "docker-compose config of docker-compose.yml + docker-compose.hostnet.yml"
    summary
    exit 1
fi
COMPOSE=($COMPOSE_BIN --ansi never -p "$PROJECT" -f "$TMP/compose.yml"
    --project-directory "$ROOT/docker" --env-file "$ENVF")

say "building images: bangfu (make -j2 all inside), bangfu-postgres, bangfu-redis"
if "${COMPOSE[@]}" build --parallel postgres redis bus >"$TMP/build.log" 2>&1; then
    pass "images built: $($DOCKER images --format '{{.Repository}}:{{.Tag}} {{.Size}}' |
        grep -E '^bangfu' | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
else
    grep -E 'error|Error|ERROR|returned a non-zero' "$TMP/build.log" | tail -20
    tail -20 "$TMP/build.log"
    fail "image build (docker-compose build)"
    summary
    exit 1
fi

# The images: non-root, no password baked in, every library present.
img_user=$($DOCKER image inspect -f '{{.Config.User}}' bangfu:latest)
if [ -n "$img_user" ] && [ "${img_user%%:*}" != root ] && [ "${img_user%%:*}" != 0 ]; then
    pass "bangfu image runs as $img_user"
else
    fail "bangfu image runs as root"
fi
leak=""
for img in bangfu:latest bangfu-postgres:15 bangfu-redis:7; do
    if $DOCKER image inspect -f '{{json .Config.Env}}' "$img" | grep -qi 'PASSWORD'; then leak+=" $img"; fi
    if $DOCKER history --no-trunc "$img" | grep -qF "$PGPW"; then leak+=" $img"; fi
done
[ -z "$leak" ] && pass "no password in any image's config or history" || fail "secrets in:$leak"
for s in "${SERVICES[@]}"; do
    if ! $DOCKER run --rm --network none bangfu:latest "$s" --version >/dev/null 2>&1; then
        fail "bangfu:latest has no working bangfu-$s"
    fi
done

say "starting postgres redis ${SERVICES[*]} (host network, 127.0.0.1)"
STARTED=1
if ! "${COMPOSE[@]}" up -d --no-build postgres redis "${SERVICES[@]}" >"$TMP/up.log" 2>&1; then
    cat "$TMP/up.log"
    "${COMPOSE[@]}" logs --no-color --tail 30 2>&1 | tail -60
    fail "docker-compose up"
    summary
    exit 1
fi

# Every health check, within 3 minutes.
healthy=()
deadline=$(($(date +%s) + 180))
for s in postgres redis "${SERVICES[@]}"; do
    cid=$("${COMPOSE[@]}" ps -q "$s")
    st=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        st=$($DOCKER inspect -f '{{.State.Health.Status}}' "$cid" 2>/dev/null)
        [ "$st" = healthy ] && break
        sleep 0.5
    done
    if [ "$st" = healthy ]; then healthy+=("$s"); else
        fail "$s is $st, not healthy"
        $DOCKER logs --tail 20 "$cid" 2>&1
    fi
done
[ ${#healthy[@]} -eq $((2 + ${#SERVICES[@]})) ] && pass "healthy: ${healthy[*]} ($(($(date +%s) - T0)) s in)"

# Keys: the `keys` service made the deployment's keys in the volume; add the
# scenario's two principals (a tranche planner and a distinct approver) the way
# an operator would, then copy the volume out for the host's CLI and scripts.
mkdir -p "$TMP/keys"
if "${COMPOSE[@]}" run --rm -T keys bangfu keygen compose-test --roles admin \
        --dir /var/lib/bangfu/keys >"$TMP/keys.log" 2>&1 &&
    "${COMPOSE[@]}" run --rm -T keys bangfu keygen compose-test-approver --roles admin \
        --dir /var/lib/bangfu/keys >>"$TMP/keys.log" 2>&1 &&
    $DOCKER run --rm --network none -v "${PROJECT}_keys:/k:ro" --entrypoint tar bangfu:latest \
        -C /k -cf - . 2>>"$TMP/keys.log" | tar -C "$TMP/keys" -xf - &&
    [ -f "$TMP/keys/admin.key" ] && [ -f "$TMP/keys/principals.conf" ]; then
    pass "keys: deployment set made by the keys service; principals added at run time"
else
    cat "$TMP/keys.log"
    fail "keys volume (keys service, bangfu keygen)"
fi
export BANGFU_KEYS_DIR="$TMP/keys" BANGFU_PRINCIPAL=admin
if grep -q '"security.mode=plaintext' <("${COMPOSE[@]}" logs --no-color 2>&1); then
    fail "a container runs with security.mode=plaintext"
fi

export BANGFU_REGISTRY_RPC="tcp://127.0.0.1:$P_REG" BANGFU_FUNDS_RPC="tcp://127.0.0.1:$P_FUNDS"
export BANGFU_TASKS_RPC="tcp://127.0.0.1:$P_TASKS" BANGFU_NOTIFY_RPC="tcp://127.0.0.1:$P_NOTIFY"
export BANGFU_BUS_PUB="tcp://127.0.0.1:$P_PUB" BANGFU_BUS_XSUB="tcp://127.0.0.1:$P_XSUB"
# the host's CLI and the scenario read Redis as bangfu_admin
export BANGFU_REDIS_URL="redis://bangfu_admin:$(cat "$TMP/secrets/redis-admin.password")@127.0.0.1:$P_REDIS/0"
if out=$("$BANGFU_CLI" health "${SERVICES[@]}" --strict 2>&1); then
    pass "bangfu health --strict ${SERVICES[*]} (from the host)"
else
    echo "$out"
    fail "bangfu health --strict ${SERVICES[*]}"
fi

# ---------------------------------------------------------------- 5. the scenario
STATE="$TMP/scenario.json"
# scenario MODE: one pass of docker/compose_scenario.py; its PASS/FAIL/SKIP
# lines join the summary.
scenario() {
    $PY docker/compose_scenario.py "$1" "$STATE" >"$TMP/scenario.out" 2>&1
    local rc=$? status rest
    cat "$TMP/scenario.out"
    while read -r status rest; do
        case "$status" in PASS) RESULTS+=("PASS $rest") ;; SKIP) RESULTS+=("SKIP $rest") ;;
        FAIL) RESULTS+=("FAIL $rest"); FAILS=$((FAILS + 1)) ;; esac
    done <"$TMP/scenario.out"
    if [ $rc -ne 0 ] && ! grep -q '^FAIL' "$TMP/scenario.out"; then fail "scenario $1 exited $rc"; fi
}
# wait_healthy SERVICE...: until each is healthy (2 minutes at most).
wait_healthy() {
    local deadline=$(($(date +%s) + 120)) s cid
    for s in "$@"; do
        cid=$("${COMPOSE[@]}" ps -q "$s")
        until [ "$($DOCKER inspect -f '{{.State.Health.Status}}' "$cid" 2>/dev/null)" = healthy ]; do
            [ "$(date +%s)" -ge "$deadline" ] && { fail "$s not healthy again"; return 1; }
            sleep 0.3
        done
    done
}
# still_up: every service container running, never restarted.
still_up() {
    local s cid bad=""
    for s in "${SERVICES[@]}"; do
        cid=$("${COMPOSE[@]}" ps -q "$s")
        [ "$($DOCKER inspect -f '{{.State.Running}} {{.RestartCount}}' "$cid")" = "true 0" ] || bad+=" $s"
    done
    [ -z "$bad" ] && pass "$1: every service stayed up (no exit, no restart)" || fail "$1: crashed or restarted:$bad"
}

say "scenario"
scenario run
grep -q '^\(PASS\|FAIL\)' "$TMP/scenario.out" || fail "the scenario reported nothing"

say "docker-compose restart postgres redis"
started_before=$($DOCKER inspect -f '{{.State.StartedAt}}' "$("${COMPOSE[@]}" ps -q postgres)" "$("${COMPOSE[@]}" ps -q redis)")
if "${COMPOSE[@]}" restart postgres redis >"$TMP/restart.log" 2>&1 && wait_healthy postgres redis; then
    started_after=$($DOCKER inspect -f '{{.State.StartedAt}}' "$("${COMPOSE[@]}" ps -q postgres)" "$("${COMPOSE[@]}" ps -q redis)")
    # Redis answers nobody without a password: ask as bangfu_admin, as the health check does
    aof=$("${COMPOSE[@]}" exec -T redis sh -c 'REDISCLI_AUTH=$(head -n 1 "${BANGFU_SECRETS:-/run/bangfu/secrets}/redis-admin.password") redis-cli -p "$REDIS_PORT" --user bangfu_admin config get appendonly | tail -1' 2>&1)
    if [ "$started_before" = "$started_after" ]; then
        fail "postgres and redis were not restarted"
    elif [ "$aof" != yes ]; then
        fail "redis appendonly is '$aof', not yes"
    else
        pass "postgres and redis restarted (redis appendonly yes)"
    fi
else
    cat "$TMP/restart.log"
    fail "docker-compose restart postgres redis"
fi
scenario verify

say "PostgreSQL down and back"
"${COMPOSE[@]}" stop postgres >/dev/null 2>&1
scenario pg-down
still_up "PostgreSQL down"
"${COMPOSE[@]}" start postgres >/dev/null 2>&1 && wait_healthy postgres
scenario pg-back

say "Redis down and back"
"${COMPOSE[@]}" stop redis >/dev/null 2>&1
scenario redis-down
still_up "Redis down"
"${COMPOSE[@]}" start redis >/dev/null 2>&1 && wait_healthy redis
scenario redis-back

# Logs: JSON objects, one per line, on stdout; nothing on stderr.
badlog=""
for s in "${SERVICES[@]}"; do
    cid=$("${COMPOSE[@]}" ps -q "$s")
    $DOCKER logs "$cid" >"$TMP/log.out" 2>"$TMP/log.err"
    if [ -s "$TMP/log.err" ] || [ ! -s "$TMP/log.out" ] || ! $PY -c '
import json, sys
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        o = json.loads(line)
    except ValueError:
        o = None
    assert isinstance(o, dict), "line %d is not a JSON object: %.160s" % (n, line)
' "$TMP/log.out" 2>"$TMP/log.why"; then
        badlog+=" $s($(tail -1 "$TMP/log.why" 2>/dev/null; head -c 200 "$TMP/log.err"))"
    fi
done
[ -z "$badlog" ] && pass "logs are JSON lines on stdout (${SERVICES[*]})" || fail "logs:$badlog"

# Graceful stop: SIGTERM, each service exits 0 well inside its grace period.
say "stopping the services"
"${COMPOSE[@]}" stop "${SERVICES[@]}" >/dev/null 2>&1
codes=""
for s in "${SERVICES[@]}"; do
    c=$($DOCKER inspect -f '{{.State.ExitCode}}' "$("${COMPOSE[@]}" ps -q "$s")")
    [ "$c" = 0 ] || codes+=" $s=$c"
done
[ -z "$codes" ] && pass "every service exited 0 on SIGTERM" || fail "exit codes on SIGTERM:$codes"

say "docker-compose down -v"
if "${COMPOSE[@]}" down -v --timeout 20 >"$TMP/down.log" 2>&1; then
    left=$($DOCKER ps -aq; $DOCKER volume ls -q)
    [ -z "$left" ] && pass "down -v: no container or volume left" || fail "left after down -v: $left"
else
    cat "$TMP/down.log"
    fail "docker-compose down -v"
fi
STARTED=""

# ---------------------------------------------------------------- 6. the production file
PRODENV="$TMP/prod.env"
printf 'POSTGRES_PASSWORD=example-only\n' >"$PRODENV"
if BANGFU_ENV_FILE=$PRODENV $COMPOSE_BIN -f docker/docker-compose.yml --env-file "$PRODENV" \
    config >"$TMP/prod.yml" 2>"$TMP/prod.err"; then
    if grep -q 'network_mode: host' "$TMP/prod.yml"; then
        fail "docker-compose.yml uses host networking"
    elif ! grep -q 'tcp://registry:7101' "$TMP/prod.yml" || ! grep -q 'driver: bridge' "$TMP/prod.yml"; then
        fail "docker-compose.yml: no bridge network or service-name addresses"
    else
        pass "docker-compose -f docker/docker-compose.yml config (bridge network, service names)"
    fi
else
    cat "$TMP/prod.err"
    fail "docker-compose -f docker/docker-compose.yml config"
fi
printf 'BANGFU_LOG_LEVEL=info\n' >"$PRODENV"
if BANGFU_ENV_FILE=$PRODENV $COMPOSE_BIN -f docker/docker-compose.yml --env-file "$PRODENV" \
    config >/dev/null 2>&1; then
    fail "docker-compose.yml accepts a missing POSTGRES_PASSWORD"
else
    pass "docker-compose.yml refuses to run without POSTGRES_PASSWORD"
fi

summary
[ "$FAILS" -eq 0 ]
