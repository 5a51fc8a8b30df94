#!/usr/bin/env bash
# tests/run.sh: the whole test suite, as `make test` runs it.
#
# Starts a private PostgreSQL and Redis on spare loopback ports in a temp dir
# (always stopped and removed, whatever happens), runs every unit test binary
# in $BUILD/tests and every integration test in tests/integration, and ends
# with one line "N passed, N failed" counting every test.
#   UNIT_ONLY=1   only the unit tests (no servers needed by most)
#   MEMCHECK=1    unit tests under valgrind
#   SANITIZE=1    the binaries are the ASan+UBSan build; logs are checked
#   TESTS=pattern only integration test files matching the pattern
#   TEST_ONLY=name only the test functions whose name holds it (in those files)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
export BANGFU_BUILD="$ROOT/$BUILD"
. scripts/lib.sh

TMP=$(mktemp -d /tmp/bangfu-test.XXXXXX)
chmod 755 "$TMP"
export BANGFU_TEST_TMP="$TMP"
cleanup() {
  # stop anything a test left running, then the servers
  if [ -f "$TMP/pids" ]; then while read -r p; do kill -9 "$p" 2>/dev/null; done <"$TMP/pids"; fi
  bf_redis_stop "$TMP/redis"
  bf_pg_stop "$TMP/pg"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CURVE keys for every service and the test principals (docs/security.md):
# every service in the tests runs with security on
export BANGFU_KEYS_DIR="$TMP/keys" BANGFU_PRINCIPAL=admin
unset BANGFU_SECURITY_MODE
if [ -x "$BANGFU_BUILD/bin/bangfu" ]; then
  { "$BANGFU_BUILD/bin/bangfu" keygen --deployment "$BANGFU_KEYS_DIR" &&
    "$BANGFU_BUILD/bin/bangfu" keygen harness --roles admin --act-for &&
    "$BANGFU_BUILD/bin/bangfu" keygen events.reader --roles subscriber; } >/dev/null ||
    { echo "not ok - bangfu keygen failed"; echo "0 passed, 1 failed"; exit 1; }
fi

PG_PORT=$(bf_free_port)
REDIS_PORT=$(bf_free_port)
# least privilege (docs/security.md): services log in to PostgreSQL as their
# own roles (trust on loopback) and to Redis as their own ACL users with the
# passwords in $TMP/secrets; BANGFU_PG_DSN stays the superuser's, for tests
bf_secrets_init "$TMP/secrets" || { echo "0 passed, 1 failed"; exit 1; }
bf_pg_start "$TMP/pg" "$PG_PORT" || { echo "0 passed, 1 failed"; exit 1; }
bf_pg_bootstrap "$PG_PORT" || { echo "0 passed, 1 failed"; exit 1; }
bf_redis_start "$TMP/redis" "$REDIS_PORT" no "$TMP/secrets" || { echo "0 passed, 1 failed"; exit 1; }
export BANGFU_PG_DSN="postgresql://bangfu@127.0.0.1:$PG_PORT/bangfu"
export BANGFU_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export BANGFU_REDIS_PASSWORD_FILE="$TMP/secrets/redis-{service}.password"
export BANGFU_TEST_SECRETS_DIR="$TMP/secrets" BANGFU_TEST_REDIS_ACL="$TMP/redis/users.acl"
BANGFU_TEST_REDIS_ADMIN_URL=$(bf_redis_admin_url "$REDIS_PORT" "$TMP/secrets")
export BANGFU_TEST_REDIS_ADMIN_URL
export BANGFU_TEST_PG_PORT=$PG_PORT BANGFU_TEST_REDIS_PORT=$REDIS_PORT
export BANGFU_TEST_PG_DIR="$TMP/pg" BANGFU_TEST_REDIS_DIR="$TMP/redis"
if [ -n "${SANITIZE:-}" ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23:log_path=$TMP/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=24:log_path=$TMP/ubsan"
  export BANGFU_SANITIZE=1
fi

passed=0
failed=0
count() { # parse "# N passed, N failed" from a log; a log without it is one failure
  local log=$1 line
  line=$(grep -E '^# [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -z "$line" ]; then
    failed=$((failed + 1)); echo "not ok - $2 (no result line; crashed?)"; tail -20 "$log"
    return
  fi
  local p f
  p=$(echo "$line" | sed -E 's/^# ([0-9]+) passed, ([0-9]+) failed.*/\1/')
  f=$(echo "$line" | sed -E 's/^# ([0-9]+) passed, ([0-9]+) failed.*/\2/')
  passed=$((passed + p)); failed=$((failed + f))
}

echo "== unit tests"
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  log="$TMP/$name.log"
  # unit tests exercise libcommon as the superuser and the Redis admin
  unit_env=(BANGFU_PG_USER= BANGFU_REDIS_PASSWORD_FILE= BANGFU_REDIS_URL="$BANGFU_TEST_REDIS_ADMIN_URL")
  if [ -n "${MEMCHECK:-}" ]; then
    env "${unit_env[@]}" valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 "$t" >"$log" 2>&1
  else
    env "${unit_env[@]}" "$t" >"$log" 2>&1
  fi
  rc=$?
  grep -E '^(ok|not ok)' "$log" | grep -v '^ok' ; grep -E '^  ' "$log" | head -20
  count "$log" "$name"
  if [ $rc -ne 0 ] && ! grep -q '^not ok' "$log"; then
    failed=$((failed + 1)); echo "not ok - $name exited $rc"; tail -20 "$log"
  fi
  echo "$name: $(grep -E '^# [0-9]+ passed' "$log" | tail -1)"
done

if [ -z "${UNIT_ONLY:-}" ]; then
  echo "== integration tests"
  log="$TMP/integration.log"
  /usr/bin/python3 -u tests/lib/runner.py ${TESTS:+--match "$TESTS"} 2>&1 | tee "$log" | grep -vE '^ok '
  count "$log" integration
fi

if [ -n "${SANITIZE:-}" ]; then
  reports=$(ls "$TMP"/asan* "$TMP"/ubsan* 2>/dev/null)
  if [ -n "$reports" ]; then
    echo "not ok - sanitizer reports:"; for r in $reports; do head -40 "$r"; done
    failed=$((failed + 1))
  else
    echo "ok - no sanitizer reports"; passed=$((passed + 1))
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
