#!/usr/bin/env bash
# bench/run.sh (`make bench`): bangfu side by side with raw PostgreSQL and
# Redis on the same servers, in one run.
#
# Starts its own durable PostgreSQL (fsync on, synchronous_commit on, as
# `make run`) and Redis (appendonly, everysec) in a temporary directory, the
# bus and the registry and funds services from $BUILD/bin, loads what the
# benchmarks need, then runs BENCH_RUNS rounds (default 3) of:
#   P1 household.get, 4 clients        vs pgbench -M prepared -c 4 of the 4
#                                        queries household.get runs, and of
#                                        one point select
#   P2 household.create (1 member) and disbursement.batch (1 line), 16 clients
#                                      vs pgbench -c 16 of household.create's
#                                        statements in one transaction, and of
#                                        a one-row durable insert
#   P3 CSV import of N households (3 persons each) through `bangfu import`
#                                      vs COPY of the same rows
#   P4 relay events/s                  vs pipelined XADD (hiredis, C)
#      commit -> bus subscriber p50/p99
#   P5 disbursement.batch of 20,000 lines, allocation.apply to 130,000
#      recipients                      vs COPY of as many ledger rows
# (then, once, the RPC stack alone: bench_rpc, bf_rpc vs raw REQ/REP in-process)
# It prints min/median/max of each figure and of each ratio (bangfu / raw,
# as throughput: above 1 means bangfu is faster).
#
#   BENCH_RUNS=N     rounds (default 3)
#   BENCH_SMALL=1    small numbers (the CI smoke run): 2,000 households,
#                    2 s load phases, 2,000-line batch, 13,000 recipients
#   BENCH_SECS=S     seconds per load phase (default 10; 2 with BENCH_SMALL)
#   BENCH_KEEP=1     keep the temporary directory (logs) afterwards
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
RUNS=${BENCH_RUNS:-3}
if [ -n "${BENCH_SMALL:-}" ]; then
  SECS=${BENCH_SECS:-2}; NHH=2000; NLINES=2000; NRECIP=13000; NEV=2000; NLAT=50
else
  SECS=${BENCH_SECS:-10}; NHH=100000; NLINES=20000; NRECIP=130000; NEV=20000; NLAT=300
fi
. scripts/lib.sh
PGBIN=$(bf_pg_bindir) || { echo "bench: PostgreSQL binaries not found" >&2; exit 1; }
LOAD="$BUILD/bench/bench_load"
CLI="$BUILD/bin/bangfu"
for b in "$LOAD" "$CLI" "$BUILD/bin/bangfu-bus" "$BUILD/bin/bangfu-registry" "$BUILD/bin/bangfu-funds"; do
  [ -x "$b" ] || { echo "bench: $b missing (make all)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/bangfu-bench.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  bf_redis_stop "$T/redis"
  bf_pg_stop "$T/pg"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PG_PORT=$(bf_free_port); REDIS_PORT=$(bf_free_port)
XSUB_PORT=$(bf_free_port); PUB_PORT=$(bf_free_port)
REG_PORT=$(bf_free_port); FUNDS_PORT=$(bf_free_port)
echo "bench: starting PostgreSQL (durable) and Redis (appendonly) in $T"
bf_pg_start "$T/pg" "$PG_PORT" durable || exit 1
# the services log in as their own roles, as deployed (docs/security.md); the
# raw baselines run as the superuser. Redis runs without ACL users here: the
# services and the raw XADD both use the default user.
bf_pg_bootstrap "$PG_PORT" || exit 1
bf_redis_start "$T/redis" "$REDIS_PORT" yes || exit 1

# CURVE keys as `make run` makes them: the deployment set; the bench acts as admin
"$CLI" keygen --deployment "$T/keys" >/dev/null || { echo "bench: bangfu keygen failed" >&2; exit 1; }
export BANGFU_KEYS_DIR="$T/keys" BANGFU_PRINCIPAL=admin
export BANGFU_CONFIG="$ROOT/configs/bangfu.conf"
export BANGFU_LOG_LEVEL=warn
export BANGFU_PG_DSN="postgresql://bangfu@127.0.0.1:$PG_PORT/bangfu"
export BANGFU_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export BANGFU_BUS_XSUB="tcp://127.0.0.1:$XSUB_PORT" BANGFU_BUS_PUB="tcp://127.0.0.1:$PUB_PORT"
export BANGFU_REGISTRY_BIND="tcp://127.0.0.1:$REG_PORT" BANGFU_REGISTRY_RPC="tcp://127.0.0.1:$REG_PORT"
export BANGFU_FUNDS_BIND="tcp://127.0.0.1:$FUNDS_PORT" BANGFU_FUNDS_RPC="tcp://127.0.0.1:$FUNDS_PORT"
REG="registry=$BANGFU_REGISTRY_RPC"; FUNDS="funds=$BANGFU_FUNDS_RPC"
psqlc() { "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U bangfu -d bangfu -v ON_ERROR_STOP=1 -Atq "$@"; }

"$BUILD/bin/bangfu-bus" >"$T/bus.log" 2>&1 & PIDS+=($!)
for s in registry funds; do
  "$BUILD/bin/bangfu-$s" >"$T/$s.log" 2>&1 & PIDS+=($!)
  ok=""
  for _ in $(seq 1 300); do
    "$CLI" call "$s" sys.health --timeout 500 >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "bench: bangfu-$s did not start:" >&2; tail -20 "$T/$s.log" >&2; exit 1; }
done
WORKERS=${BANGFU_RPC_WORKERS:-$(sed -n 's/^;*workers = //p' configs/bangfu.conf | head -1)}

call() { "$CLI" call "$@" --actor admin >/dev/null || { echo "bench: setup call $1 $2 failed" >&2; exit 1; }; }
echo "bench: loading setup data"
call registry region.put '{"code":"120000000000","name":"天津市","level":"province"}'
call registry region.put '{"code":"120110000000","name":"东丽区","level":"county","parent_code":"120000000000"}'
call registry region.put '{"code":"120110001000","name":"张贵庄街道","level":"township","parent_code":"120110000000"}'
for i in $(seq 1 50); do
  call registry village.create "{\"region_code\":\"120110001000\",\"name\":\"村$i\",\"category\":\"poor\"}"
done
VLO=$(psqlc -c 'select min(id) from registry.village'); VHI=$(psqlc -c 'select max(id) from registry.village')
call funds source.create '{"name":"bench","kind":"county","request_key":"bench-src"}'
SRC=$(psqlc -c 'select min(id) from funds.source')
call funds source.receive "{\"source_id\":$SRC,\"amount_fen\":4000000000000000,\"year\":2026,\"request_key\":\"bench-rcv\"}"
call funds budget.create "{\"recipient\":\"region:120110000000\",\"year\":2026,\"funding\":[{\"source_id\":$SRC,\"amount_fen\":2000000000000000}],\"request_key\":\"bench-b1\"}"
call funds budget.create "{\"recipient\":\"region:120110000000\",\"year\":2026,\"name\":\"alloc\",\"funding\":[{\"source_id\":$SRC,\"amount_fen\":1000000000000000}],\"request_key\":\"bench-b2\"}"
BUD=$(psqlc -c "select min(id) from funds.budget where name = ''")
ABUD=$(psqlc -c "select min(id) from funds.budget where name = 'alloc'")
psqlc -c 'create table public.bench_row (id bigserial primary key, v bigint not null, t text not null)'
psqlc -c 'create table public.bench_transfer (like funds.transfer including all)'

# the statements household.get runs (services/registry/household.c), and a point select
cat >"$T/p1_same.sql" <<'EOF'
\set id random(:lo, :hi)
SELECT h.id, h.village_id, v.name AS village_name, v.region_code, h.categories, h.cause_main, h.cause_secondary, h.route, h.income_fen, h.address, h.phone, h.status, to_char(h.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS"Z"') AS created_at, to_char(h.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS"Z"') AS updated_at FROM registry.household h JOIN registry.village v ON v.id = h.village_id WHERE h.id = :id;
SELECT id, household_id, name, id_number, relation, gender, birth_date, phone, disability, labour FROM registry.person WHERE household_id = :id ORDER BY (relation = 'head') DESC, id;
SELECT p.id AS pairing_id, c.id AS cadre_id, c.name, c.rank, c.unit_id, c.phone, p.starts_on, p.ends_on FROM registry.pairing p JOIN registry.cadre c ON c.id = p.helper_id WHERE p.kind = 'cadre_household' AND p.target_id = :id AND p.ended_at IS NULL ORDER BY p.id;
SELECT p.id AS pairing_id, u.id AS unit_id, u.name, u.contact_cadre_id, p.starts_on, p.ends_on FROM registry.pairing p JOIN registry.unit u ON u.id = p.helper_id WHERE p.kind = 'helper_household' AND p.target_id = :id AND p.ended_at IS NULL ORDER BY p.id;
EOF
cat >"$T/p1_point.sql" <<'EOF'
\set id random(:lo, :hi)
SELECT id, village_id, income_fen FROM registry.household WHERE id = :id;
EOF
# household.create's statements in one transaction (village check, ID number
# check, ids, household, person, its event into the outbox)
cat >"$T/p2_same.sql" <<'EOF'
\set v random(:vlo, :vhi)
BEGIN;
SELECT id FROM registry.village WHERE id = ANY(ARRAY[:v]::bigint[]);
SELECT nextval('registry.household_id_seq') AS hid \gset
SELECT id_number FROM registry.person WHERE id_number = ANY(ARRAY[lpad('9' || :hid, 18, '0')]::char(18)[]);
INSERT INTO registry.household (id, village_id, categories, cause_main, route, income_fen, created_by) VALUES (:hid, :v, '{dibao}', 'illness', 'employment', 300000, 'bench');
INSERT INTO registry.person (household_id, name, id_number, relation) VALUES (:hid, '李四', lpad('9' || :hid, 18, '0'), 'head');
INSERT INTO registry.outbox (event_id, type, subject, payload) VALUES (gen_random_uuid(), 'bangfu.registry.household.created', 'household/' || :hid, decode(repeat('ab', 300), 'hex'));
END;
EOF
cat >"$T/p2_row.sql" <<'EOF'
INSERT INTO public.bench_row (v, t) VALUES (1, 'a one-row durable insert');
EOF

# pgbench FILE CLIENTS [-D var=value ...]: prints tps
pgb() {
  local f=$1 c=$2; shift 2
  local out
  out=$("$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U bangfu -n -M prepared -c "$c" -j 2 \
        -T "$SECS" -f "$f" "$@" bangfu 2>&1) || { echo "bench: pgbench $f failed: $out" >&2; echo 0; return; }
  echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1
}
# kv LINE KEY: the value of key=value in LINE
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
now() { date +%s.%N; }
# div A B: A / B, or "nan" when either is missing or B is zero
div() { if [ -n "$1" ] && [ -n "$2" ] && [ "$(echo "$2 != 0" | bc -l)" = 1 ]; then echo "$1 / $2" | bc -l; else echo nan; fi; }
RES="$T/results"; : >"$RES"
rec() { echo "$*" >>"$RES"; }

# P3 first: its import also gives P1 its households
for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS"
  # ---- P3 import vs COPY
  pfx=$(printf '3201%02d' "$run")
  "$LOAD" csv "$NHH" "$VLO" "$VHI" "$pfx" 0 $((1000000000 * run)) "$T/import.csv" "$T/hh.copy" "$T/person.copy" \
    || { echo "bench: csv generation failed" >&2; exit 1; }
  t0=$(now)
  "$CLI" import households "$T/import.csv" --actor admin >"$T/import.out" 2>&1 \
    || { echo "bench: import failed:" >&2; tail -5 "$T/import.out" >&2; exit 1; }
  t1=$(now)
  psqlc -c "begin" -c "\\copy registry.household (id, village_id, categories, cause_main, route, income_fen, created_by) from '$T/hh.copy'" \
        -c "\\copy registry.person (id, household_id, name, id_number, relation) from '$T/person.copy'" -c "commit" \
    || { echo "bench: COPY failed" >&2; exit 1; }
  t2=$(now)
  imp=$(echo "$t1 - $t0" | bc -l); cop=$(echo "$t2 - $t1" | bc -l)
  rec P3 bangfu_s "$imp"; rec P3 copy_s "$cop"; rec P3 ratio "$(div "$cop" "$imp")"
  echo "P3 import $NHH households: bangfu ${imp}s, COPY ${cop}s"

  HLO=$(psqlc -c 'select min(id) from registry.household'); HHI=$(psqlc -c 'select max(id) from registry.household where id < 1000000000')
  # ---- P1 household.get, 4 clients
  out=$(taskset -c 1 "$LOAD" rpc "$REG" household.get 4 "$SECS" '{"id":@R@}' "$HLO" "$HHI") || { echo "bench: P1 errors" >&2; exit 1; }
  same=$(pgb "$T/p1_same.sql" 4 -D lo="$HLO" -D hi="$HHI"); point=$(pgb "$T/p1_point.sql" 4 -D lo="$HLO" -D hi="$HHI")
  rps=$(kv "$out" rps)
  rec P1 bangfu_rps "$rps"; rec P1 bangfu_p50_ms "$(kv "$out" p50_ms)"; rec P1 bangfu_p99_ms "$(kv "$out" p99_ms)"
  rec P1 raw_same_tps "$same"; rec P1 raw_point_tps "$point"
  rec P1 ratio_same "$(div "$rps" "$same")"; rec P1 ratio_point "$(div "$rps" "$point")"
  echo "P1 household.get: bangfu $out | pgbench same queries $same tps, point select $point tps"

  # ---- P2 household.create and disbursement.batch (1 line), 16 clients
  out=$(BENCH_ID_PREFIX=$(printf '1201%02d' "$run") taskset -c 1 "$LOAD" rpc "$REG" household.create 16 "$SECS" \
    '{"village_id":@R@,"categories":["dibao"],"causes":{"main":"illness"},"route":"employment","income_fen":300000,"members":[{"name":"李@N@","id_number":"@ID@","relation":"head"}]}' \
    "$VLO" "$VHI") || { echo "bench: P2 household.create errors" >&2; exit 1; }
  dout=$(BENCH_SEQ_BASE=$((run * 100000000)) taskset -c 1 "$LOAD" rpc "$FUNDS" disbursement.batch 16 "$SECS" \
    "{\"batch_key\":\"p2-@N@\",\"budget_id\":$BUD,\"lines\":[{\"line_key\":\"1\",\"recipient\":\"household:@R@\",\"amount_fen\":100000}],\"request_key\":\"p2-@N@\"}" \
    "$HLO" "$HHI") || { echo "bench: P2 disbursement errors" >&2; exit 1; }
  same=$(pgb "$T/p2_same.sql" 16 -D vlo="$VLO" -D vhi="$VHI"); row=$(pgb "$T/p2_row.sql" 16)
  rps=$(kv "$out" rps); drps=$(kv "$dout" rps)
  rec P2 create_rps "$rps"; rec P2 create_p50_ms "$(kv "$out" p50_ms)"; rec P2 create_p99_ms "$(kv "$out" p99_ms)"
  rec P2 disburse_rps "$drps"; rec P2 disburse_p50_ms "$(kv "$dout" p50_ms)"; rec P2 disburse_p99_ms "$(kv "$dout" p99_ms)"
  rec P2 raw_same_tps "$same"; rec P2 raw_row_tps "$row"
  rec P2 ratio_create_same "$(div "$rps" "$same")"; rec P2 ratio_create_row "$(div "$rps" "$row")"
  rec P2 ratio_disburse_row "$(div "$drps" "$row")"
  echo "P2 household.create: $out | disbursement: $dout | pgbench same inserts $same tps, one-row insert $row tps"

  # ---- P4 relay vs pipelined XADD; commit -> subscriber
  rout=$("$LOAD" relay "$BANGFU_PG_DSN" registry "$BANGFU_BUS_PUB" "$NEV" "$NLAT") || { echo "bench: P4 relay failed" >&2; exit 1; }
  xout=$("$LOAD" xadd "$BANGFU_REDIS_URL" "$NEV" 100) || { echo "bench: P4 xadd failed" >&2; exit 1; }
  eps=$(kv "$rout" events_per_s); xeps=$(kv "$xout" events_per_s)
  rec P4 relay_eps "$eps"; rec P4 xadd_eps "$xeps"; rec P4 ratio "$(div "$eps" "$xeps")"
  rec P4 commit_bus_p50_ms "$(kv "$rout" p50_ms)"; rec P4 commit_bus_p99_ms "$(kv "$rout" p99_ms)"
  echo "P4 relay: $rout | pipelined XADD: $xout"

  # ---- P5 disbursement.batch of NLINES, allocation.apply to NRECIP vs COPY
  /usr/bin/python3 - "$T" "$NLINES" "$NRECIP" "$BUD" "$ABUD" "$HLO" "$HHI" <<'EOF'
import json, sys
t, nl, nr, bud, abud, hlo, hhi = sys.argv[1], *map(int, sys.argv[2:])
span = hhi - hlo + 1
with open(f"{t}/p5_batch.json", "w") as f:
    json.dump({"batch_key": "p5-@N@", "budget_id": bud, "purpose": "公益岗位工资",
               "lines": [{"line_key": str(i), "recipient": f"household:{hlo + i % span}",
                          "amount_fen": 100000} for i in range(nl)],
               "request_key": "p5b-@N@"}, f)
with open(f"{t}/p5_alloc.json", "w") as f:
    json.dump({"budget_id": abud, "rule": "weights", "amount_fen": nr * 1000,
               "recipients": [{"recipient": f"village:{i + 1}", "weight": 1 + i % 17}
                              for i in range(nr)],
               "request_key": "p5a-@N@"}, f)
for name, n in (("lines", nl), ("recip", nr)):
    with open(f"{t}/p5_{name}.copy", "w") as f:
        for i in range(n):
            f.write(f"{i + 1}\t1\t2\t100000\tdisbursement\t2026\t1\t\\N\t\\N\tbatch/1#{i}\t\\N\t"
                    f"p5-{i}\t\\N\tbench\t2026-12-04 00:00:00+00\t\\\\x{'00' * 32}\t\\\\x{'11' * 32}\n")
EOF
  bout=$("$LOAD" once "$FUNDS" disbursement.batch "$T/p5_batch.json") || { echo "bench: P5 batch failed" >&2; exit 1; }
  aout=$("$LOAD" once "$FUNDS" allocation.apply "$T/p5_alloc.json") || { echo "bench: P5 allocation failed" >&2; exit 1; }
  cp_s() {
    psqlc -c 'truncate public.bench_transfer'
    local a b; a=$(now)
    psqlc -c "\\copy public.bench_transfer from '$1'" || { echo "bench: COPY $1 failed" >&2; exit 1; }
    b=$(now); echo "$b - $a" | bc -l
  }
  cl=$(cp_s "$T/p5_lines.copy"); cr=$(cp_s "$T/p5_recip.copy")
  bs=$(kv "$bout" secs); as=$(kv "$aout" secs)
  rec P5 batch_s "$bs"; rec P5 copy_lines_s "$cl"; rec P5 ratio_batch "$(div "$cl" "$bs")"
  rec P5 alloc_s "$as"; rec P5 copy_recip_s "$cr"; rec P5 ratio_alloc "$(div "$cr" "$as")"
  echo "P5 disbursement.batch $NLINES lines ${bs}s vs COPY ${cl}s; allocation.apply $NRECIP ${as}s vs COPY ${cr}s"
done

echo
echo "bangfu vs raw on this machine ($(nproc) CPUs, $(uptime | sed 's/.*load average/load average/')),"
echo "rpc.workers=$WORKERS, $RUNS run(s), ${SECS}s load phases, P3 $NHH households, P5 $NLINES lines / $NRECIP recipients."
echo "Ratios are bangfu / raw as throughput (above 1: bangfu faster). min / median / max:"
/usr/bin/python3 - "$RES" <<'EOF'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault((f[0], f[1]), []).append(float(f[2]) if len(f) > 2 else float("nan"))
for (p, k), vs in rows.items():
    vs = sorted(vs, key=lambda x: (x != x, x))  # a missing figure (nan) sorts last
    fmt = "{:.2f}" if k.startswith("ratio") or k.endswith("_s") or k.endswith("_ms") else "{:.0f}"
    print(f"  {p}  {k:22s} " + "  ".join(fmt.format(x) for x in (vs[0], statistics.median(vs), vs[-1])))
EOF

# the RPC stack alone (in-process, no database): a bf_rpc round trip against
# raw ZeroMQ REQ/REP, and the bounds check against msgpack-c's unpack alone
echo
echo "RPC stack micro-benchmark (bench/bench_rpc.c):"
taskset -c 0 "$BUILD/bench/bench_rpc" $([ -n "${BENCH_SMALL:-}" ] && echo 5000 || echo 20000) | sed 's/^/  /'
