#!/usr/bin/env bash
# bench/p5_scale.sh: how disbursement.batch scales with its number of lines,
# outside the full `make bench`. Starts PostgreSQL (durable), Redis, the bus
# and the funds service as bench/run.sh does, funds a budget, then for each
# size in P5_SIZES (default "2000 5000 10000 20000") pays P5_RUNS (default 3)
# batches of that many lines to recipients that have no account yet (as P5's
# first round) and COPYs as many ledger-shaped rows, and prints the medians.
#   P5_KEEP=1        keep the temporary directory (logs) afterwards
#   P5_PGLOG=1       log every statement's duration (log_min_duration_statement=0)
#                    and the plans of those over 100 ms (auto_explain)
#   P5_WARM=S        first S seconds (default 3; 0: none) of 1-line batches from
#                    16 clients, as P2 runs before P5 in `make bench`: each
#                    worker's connection then runs its prepared statements with
#                    the plans it settled on for one-line arrays
#   P5_WRAP="CMD"    run the funds service under CMD (e.g. "valgrind --tool=callgrind")
#   P5_HOLD=S        keep the stack up S seconds at the end (to look at it)
#   BUILD=DIR        the binaries of DIR (default build), e.g. an older build to compare
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
SIZES=${P5_SIZES:-2000 5000 10000 20000}
RUNS=${P5_RUNS:-3}
. scripts/lib.sh
PGBIN=$(bf_pg_bindir) || { echo "p5: PostgreSQL binaries not found" >&2; exit 1; }
LOAD="$BUILD/bench/bench_load"; CLI="$BUILD/bin/bangfu"
T=$(mktemp -d /tmp/bangfu-p5.XXXXXX); chmod 755 "$T"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  bf_redis_stop "$T/redis"; bf_pg_stop "$T/pg"
  if [ -n "${P5_KEEP:-}" ]; then echo "p5: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PG_PORT=$(bf_free_port); REDIS_PORT=$(bf_free_port); XSUB_PORT=$(bf_free_port)
PUB_PORT=$(bf_free_port); FUNDS_PORT=$(bf_free_port)
bf_pg_start "$T/pg" "$PG_PORT" durable || exit 1
bf_pg_bootstrap "$PG_PORT" || exit 1
bf_redis_start "$T/redis" "$REDIS_PORT" yes || exit 1
psqls() { "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U bangfu -d bangfu -v ON_ERROR_STOP=1 -Atq "$@"; }
if [ -n "${P5_PGLOG:-}" ]; then
  psqls -c "alter system set log_min_duration_statement = 0" \
        -c "alter system set session_preload_libraries = 'auto_explain'" -c "select pg_reload_conf()" >/dev/null
  # a new session has the module loaded, so its settings are known
  psqls -c "alter system set auto_explain.log_min_duration = 100" -c "select pg_reload_conf()" >/dev/null
fi
"$CLI" keygen --deployment "$T/keys" >/dev/null || exit 1
export BANGFU_KEYS_DIR="$T/keys" BANGFU_PRINCIPAL=admin BANGFU_CONFIG="$ROOT/configs/bangfu.conf"
export BANGFU_LOG_LEVEL=warn BANGFU_RELAY_STREAM_KEEP_S=0 BANGFU_RELAY_TRIM_INTERVAL_S=5
export BANGFU_PG_DSN="postgresql://bangfu@127.0.0.1:$PG_PORT/bangfu"
export BANGFU_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export BANGFU_BUS_XSUB="tcp://127.0.0.1:$XSUB_PORT" BANGFU_BUS_PUB="tcp://127.0.0.1:$PUB_PORT"
export BANGFU_FUNDS_BIND="tcp://127.0.0.1:$FUNDS_PORT" BANGFU_FUNDS_RPC="tcp://127.0.0.1:$FUNDS_PORT"
"$BUILD/bin/bangfu-bus" >"$T/bus.log" 2>&1 & PIDS+=($!)
${P5_WRAP:-} "$BUILD/bin/bangfu-funds" >"$T/funds.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 600); do "$CLI" call funds sys.health --timeout 500 >/dev/null 2>&1 && break; sleep 0.1; done
call() { "$CLI" call "$@" --actor admin >/dev/null || { echo "p5: setup call $1 $2 failed" >&2; exit 1; }; }
call funds source.create '{"name":"bench","kind":"county","request_key":"p5-src"}'
SRC=$(psqls -c 'select min(id) from funds.source')
call funds source.receive "{\"source_id\":$SRC,\"amount_fen\":4000000000000000,\"year\":2026,\"request_key\":\"p5-rcv\"}"
call funds budget.create "{\"recipient\":\"region:120110000000\",\"year\":2026,\"funding\":[{\"source_id\":$SRC,\"amount_fen\":2000000000000000}],\"request_key\":\"p5-b1\"}"
BUD=$(psqls -c "select min(id) from funds.budget")
psqls -c 'create table public.bench_transfer (like funds.transfer including all)'
WARM=${P5_WARM:-3}
if [ "$WARM" != 0 ]; then
  "$LOAD" rpc "funds=$BANGFU_FUNDS_RPC" disbursement.batch 16 "$WARM" \
    "{\"batch_key\":\"w-@N@\",\"budget_id\":$BUD,\"lines\":[{\"line_key\":\"1\",\"recipient\":\"household:@R@\",\"amount_fen\":100000}],\"request_key\":\"w-@N@\"}" \
    900000000 900009999 >"$T/warm.out" || { echo "p5: warm-up failed" >&2; exit 1; }
  echo "p5: warm-up: $(cat "$T/warm.out")"
fi
now() { date +%s.%N; }
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=1
for n in $SIZES; do
  bs=(); cs=()
  for run in $(seq 1 "$RUNS"); do
    /usr/bin/python3 - "$T" "$n" "$BUD" "$base" <<'EOF'
import json, sys
t, n, bud, base = sys.argv[1], *map(int, sys.argv[2:])
with open(f"{t}/batch.json", "w") as f:
    json.dump({"batch_key": "p5-@N@", "budget_id": bud, "purpose": "公益岗位工资",
               "lines": [{"line_key": str(i), "recipient": f"household:{base + i}",
                          "amount_fen": 100000} for i in range(n)],
               "request_key": "p5b-@N@"}, f)
with open(f"{t}/lines.copy", "w") as f:
    for i in range(n):
        f.write(f"{i + 1}\t1\t2\t100000\tdisbursement\t2026\t1\t\\N\t\\N\tbatch/1#{i}\t\\N\t"
                f"p5-{i}\t\\N\tbench\t2026-12-04 00:00:00+00\t\\\\x{'00' * 32}\t\\\\x{'11' * 32}\n")
EOF
    base=$((base + n))
    out=$("$LOAD" once "funds=$BANGFU_FUNDS_RPC" disbursement.batch "$T/batch.json") || { echo "p5: batch failed" >&2; exit 1; }
    b=${out#secs=}
    psqls -c 'truncate public.bench_transfer'
    a=$(now); psqls -c "\\copy public.bench_transfer from '$T/lines.copy'" || exit 1; c=$(now)
    cp=$(echo "$c - $a" | bc -l)
    bs+=("$b"); cs+=("$cp")
    echo "p5: $n lines run $run: batch ${b}s, COPY ${cp}s"
  done
  mb=$(printf '%s\n' "${bs[@]}" | med); mc=$(printf '%s\n' "${cs[@]}" | med)
  printf 'p5: %6d lines: batch %.3fs, COPY %.3fs, ratio %.2fx (medians of %d)\n' \
    "$n" "$mb" "$mc" "$(echo "$mc / $mb" | bc -l)" "$RUNS"
done
if [ -n "${P5_HOLD:-}" ]; then echo "p5: holding; PG port $PG_PORT, dir $T"; sleep "$P5_HOLD"; fi
