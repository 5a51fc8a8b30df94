#!/usr/bin/env bash
# tests/fuzz/run.sh: the libFuzzer targets (`make fuzz`), each for FUZZ_SECONDS
# (default 30) under ASan+UBSan, starting from the seed corpus in the tree
# (tests/fuzz/corpus/<target>, read only; new inputs go to a temp dir).
# A crash, leak, sanitizer report or failed property aborts the run and
# leaves the crashing input in $FUZZ_OUT (default: a temp dir, printed).
# Ends with one line "N passed, N failed".
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
SECONDS_EACH=${FUZZ_SECONDS:-30}
need=()
command -v clang >/dev/null || need+=(clang)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed" \
  || need+=(libclang-rt-14-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi
make --no-print-directory FUZZ=1 -j2 fuzz-bins || { echo "0 passed, 1 failed"; exit 1; }
OUT=${FUZZ_OUT:-$(mktemp -d /tmp/bangfu-fuzz.XXXXXX)}
passed=0 failed=0
for bin in build-fuzz/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  work="$OUT/$name"; mkdir -p "$work/corpus" "$work/crash"
  if "$bin" -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -max_len=65536 \
      -artifact_prefix="$work/crash/" -print_final_stats=1 \
      "$work/corpus" "tests/fuzz/corpus/$name" >"$work/log" 2>&1; then
    echo "ok - $name ($(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/log" | grep -Eo '[0-9]+$') runs in ${SECONDS_EACH}s)"
    passed=$((passed + 1))
  else
    echo "not ok - $name: crash input in $work/crash"; tail -30 "$work/log"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
