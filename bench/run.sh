#!/usr/bin/env bash
# bench/run.sh (`make bench`): bangfu side by side with raw PostgreSQL and
# Redis on the same servers, in one run.
#
# Starts its own durable PostgreSQL (fsync on, synchronous_commit on, as
# `make run`) and Redis (appendonly, everysec) in a temporary directory, the
# bus and the registry and funds services from $BUILD/bin, loads what the
# benchmarks need, then runs BENCH_RUNS rounds (default 3) of:
#   P1 household.get, 4 clients        vs pgbench -M prepared -c 4 of the one
#                                        statement household.get runs (taken
#                                        from its source), and of one point
#                                        select
#   P2 household.create (1 member) and disbursement.batch (1 line), 16 clients
#                                      vs pgbench -c 16 of household.create's
#                                        statements in one transaction, of the
#                                        disbursement's statements in one
#                                        transaction, and of a one-row durable
#                                        insert
#   P3 CSV import of N households (3 persons each) through `bangfu import`
#                                      vs COPY of the same rows
#   P4 relay events/s                  vs pipelined XADD (hiredis, C)
#      commit -> bus subscriber p50/p99
#   P5 disbursement.batch of 20,000 lines, allocation.apply to 130,000
#      recipients                      vs COPY of as many ledger rows
# then, once, a sweep of rpc.workers (BENCH_WORKERS): registry and funds
# restarted with each count, P1 and P2 again, as ratios to the rounds' raw
# figures; then the RPC stack alone (bench_rpc, bf_rpc vs raw REQ/REP in-process)
# It prints min/median/max of each figure and of each ratio (bangfu / raw,
# as throughput: above 1 means bangfu is faster).
#
#   BENCH_RUNS=N     rounds (default 3)
#   BENCH_SMALL=1    small numbers (the CI smoke run): 2,000 households,
#                    2 s load phases, 2,000-line batch, 13,000 recipients
#   BENCH_SECS=S     seconds per load phase (default 10; 2 with BENCH_SMALL)
#   BENCH_WORKERS="2 4 8 4:solo"  the rpc.workers counts of the sweep; N:solo
#                    is N workers with commit groups off (rpc.group_max = 1)
#                    (default "2 4 8 4:solo"; "2 4 4:solo" with BENCH_SMALL;
#                    empty: no sweep)
#   BENCH_KEEP=1     keep the temporary directory (logs) afterwards
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
RUNS=${BENCH_RUNS:-3}
if [ -n "${BENCH_SMALL:-}" ]; then
  SECS=${BENCH_SECS:-2}; NHH=2000; NLINES=2000; NRECIP=13000; NEV=2000; NLAT=50
  SWEEP=${BENCH_WORKERS-2 4 4:solo}
else
  SECS=${BENCH_SECS:-10}; NHH=100000; NLINES=20000; NRECIP=130000; NEV=20000; NLAT=300
  SWEEP=${BENCH_WORKERS-2 4 8 4:solo}
fi
for w in $SWEEP; do
  case ${w%:solo} in ''|*[!0-9]*) echo "bench: BENCH_WORKERS: '$w' is not a worker count (N or N:solo)" >&2; exit 2;; esac
done
. scripts/lib.sh
PGBIN=$(bf_pg_bindir) || { echo "bench: PostgreSQL binaries not found" >&2; exit 1; }
LOAD="$BUILD/bench/bench_load"
CLI="$BUILD/bin/bangfu"
for b in "$LOAD" "$CLI" "$BUILD/bin/bangfu-bus" "$BUILD/bin/bangfu-registry" "$BUILD/bin/bangfu-funds"; do
  [ -x "$b" ] || { echo "bench: $b missing (make all)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/bangfu-bench.XXXXXX)
chmod 755 "$T"
PIDS=()                # the bus
declare -A SVC_PID     # service name -> pid (the sweep restarts them)
cleanup() {
  local p
  for p in "${SVC_PID[@]}" "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${SVC_PID[@]}" "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
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
# the stream keeps no history here: three full rounds relay ~700,000 events, more
# than Redis's 256 MB maxmemory holds for the day relay.stream_keep_s keeps by
# default (the relay then waits for room, as it should, and P4's probe times out)
export BANGFU_RELAY_STREAM_KEEP_S=0 BANGFU_RELAY_TRIM_INTERVAL_S=5
export BANGFU_PG_DSN="postgresql://bangfu@127.0.0.1:$PG_PORT/bangfu"
export BANGFU_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export BANGFU_BUS_XSUB="tcp://127.0.0.1:$XSUB_PORT" BANGFU_BUS_PUB="tcp://127.0.0.1:$PUB_PORT"
export BANGFU_REGISTRY_BIND="tcp://127.0.0.1:$REG_PORT" BANGFU_REGISTRY_RPC="tcp://127.0.0.1:$REG_PORT"
export BANGFU_FUNDS_BIND="tcp://127.0.0.1:$FUNDS_PORT" BANGFU_FUNDS_RPC="tcp://127.0.0.1:$FUNDS_PORT"
REG="registry=$BANGFU_REGISTRY_RPC"; FUNDS="funds=$BANGFU_FUNDS_RPC"
psqlc() { "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U bangfu -d bangfu -v ON_ERROR_STOP=1 -Atq "$@"; }

# start_svc NAME [WORKERS]: starts bangfu-NAME (with rpc.workers = WORKERS if
# given, else as configured) and waits until it answers sys.health
start_svc() {
  local s=$1 w=${2:-} ok="" _
  if [ -n "$w" ]; then
    # "N:solo": N workers with commit groups off (rpc.group_max = 1)
    BANGFU_RPC_WORKERS=${w%:solo} BANGFU_RPC_GROUP_MAX=$([ "${w%:solo}" != "$w" ] && echo 1 || echo 16) \
      "$BUILD/bin/bangfu-$s" >>"$T/$s.log" 2>&1 &
  else
    "$BUILD/bin/bangfu-$s" >>"$T/$s.log" 2>&1 &
  fi
  SVC_PID[$s]=$!
  for _ in $(seq 1 300); do
    "$CLI" call "$s" sys.health --timeout 500 >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "bench: bangfu-$s did not start:" >&2; tail -20 "$T/$s.log" >&2; exit 1; }
}
# stop_svc NAME: SIGTERM, and wait until it has exited (its port is free)
stop_svc() {
  kill -TERM "${SVC_PID[$1]}" 2>/dev/null
  wait "${SVC_PID[$1]}" 2>/dev/null
  unset "SVC_PID[$1]"
}

"$BUILD/bin/bangfu-bus" >"$T/bus.log" 2>&1 & PIDS+=($!)
for s in registry funds; do start_svc "$s"; done
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
psqlc -c 'create sequence public.bench_rawd_seq'

# the statement household.get runs, taken from services/registry/household.c
# at bench time (after the preprocessor: its scope macros expanded), as the
# admin the bench acts as runs it (no region or cadre scope: $2, $3 NULL); the
# raw side runs it with the services' search_path (P1_PATH); and a point select
P1_PATH="-c search_path=registry,public"
# shellcheck disable=SC2046
{ echo '\set id random(:lo, :hi)'
  gcc -E -P -std=c11 -D_GNU_SOURCE -Ilibcommon -I"$BUILD/gen" $(pkg-config --cflags libpq hiredis msgpack libzmq) \
      services/registry/household.c \
    | /usr/bin/python3 bench/sql_from_c.py services/registry/household.c s_hh_get_sql 1=:id 2=NULL 3=NULL
} >"$T/p1_same.sql" && [ "$(wc -l <"$T/p1_same.sql")" = 2 ] \
  || { echo "bench: could not take household.get's statement from services/registry/household.c" >&2; exit 1; }
cat >"$T/p1_point.sql" <<'EOF'
\set id random(:lo, :hi)
SELECT id, village_id, income_fen FROM registry.household WHERE id = :id;
EOF
# household.create's statements in one transaction (village check, ID number
# check, ids, household, person, its event into the outbox; no NOTIFY: the
# service wakes its own relay after the commit, bf_relay.h)
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
# disbursement.batch of one line, the statements the funds service runs for
# it (captured with log_statement = all), in its one transaction, in order:
#   idem.c     funds_idem_begin_resumable: BEGIN; claim the request key
#   ledger.c   funds_ledger_lock: take the chain head (FOR UPDATE)
#   batch.c    s_start: the payer, the batch (upsert), its lines paid before
#              (s_mark_paid), what the payer has (funds_account_available),
#              batch_run (no hold: the one line fits the first chunk, paid in
#              this transaction)
#   batch.c    s_chunk (the first chunk shares the start's transaction, so
#              it reuses the start's head, plan and payer and no other
#              request can have paid a line meanwhile): the recipient
#              account (created if new)
#   ledger.c   funds_ledger_append: the accounts; the transfer with its
#              SHA-256 chain hash, the balances and the head in one statement
#   batch.c    s_chunk: the batch line; s_chunks: the run's step and end (one);
#              s_finish: the event (the lines' results and the payer's
#              balance are known in the start's one transaction)
#   libcommon  bf_outbox.c: the event into the outbox (no NOTIFY: the relay
#              runs in the service's process and is woken after the commit)
#   evidence.c funds_evidence_flush: the new recipient account's
#              account.created entry, hashed into the evidence chain (entry,
#              pending row cleared and head moved in one statement)
#   idem.c     funds_idem_commit: the stored result, COMMIT
# The service hashes in C (OpenSSL) and sends hex; here PostgreSQL's core
# sha256() hashes the same netstring encoding, so the chains stay valid
# (ledger.verify passes after this script ran). The key comes from a
# sequence inside the claim, as a client's unique request key would.
cat >"$T/p2_disburse.sql" <<'EOF'
\set r random(:hlo, :hhi)
BEGIN;
INSERT INTO funds.request (key, method, params_hash, actor) SELECT k, 'disbursement.batch', sha256(convert_to(k, 'UTF8')), 'admin' FROM (SELECT 'rawd-' || nextval('public.bench_rawd_seq') AS k) s ON CONFLICT (key) DO NOTHING RETURNING key AS rk \gset
SELECT last_id, encode(last_hash, 'hex') AS last_hash FROM funds.ledger_head FOR UPDATE \gset
SELECT root_id, year FROM funds.budget WHERE id = :bud \gset
WITH ins AS (INSERT INTO funds.batch (batch_key, payer_id, budget_id, project_id, purpose, created_by) VALUES (:rk, :bud, :bud, NULL, NULL, 'admin') ON CONFLICT (batch_key) DO NOTHING RETURNING id, payer_id) SELECT id AS batch_id, payer_id FROM ins UNION ALL SELECT id, payer_id FROM funds.batch WHERE batch_key = :rk \gset
SELECT bl.line_key, bl.recipient, bl.amount_fen, bl.transfer_id, t.request_key = '' AS mine FROM funds.batch_line bl JOIN funds.transfer t ON t.id = bl.transfer_id WHERE bl.batch_id = :batch_id AND bl.line_key = ANY(ARRAY['1']);
SELECT balance_fen - held_fen AS available FROM funds.account WHERE id = :bud;
INSERT INTO funds.batch_run (request_key, batch_id, payer_id, planned, planned_fen) VALUES (:rk, :batch_id, :bud, '{0}'::integer[], 100000);
INSERT INTO funds.account (kind, ref, name, floor_fen) SELECT DISTINCT 'recipient', u.r, u.r, 0 FROM unnest(ARRAY['household' || chr(58) || :r]) AS u(r) ON CONFLICT (kind, ref) DO NOTHING;
SELECT a.id AS acct FROM unnest(ARRAY['household' || chr(58) || :r]) WITH ORDINALITY AS u(r, ord) JOIN funds.account a ON a.kind = 'recipient' AND a.ref = u.r ORDER BY u.ord \gset
SELECT id, name, floor_fen, balance_fen, held_fen FROM funds.account WHERE id = ANY(ARRAY[:bud, :acct]::bigint[]) ORDER BY id;
WITH ins AS (INSERT INTO funds.transfer (id, from_account, to_account, amount_fen, kind, year, budget_id, project_id, source_id, ref, note, request_key, reverses_id, actor, created_at, prev_hash, hash) SELECT x.id, x.f, x.t, 100000, 'disbursement', x.y, x.b, NULL, NULL, x.ref, NULL, x.rk, NULL, 'admin', x.at, x.prev, sha256(x.prev || convert_to('24' || chr(58) || 'bangfu.funds.transfer.v1,' || length(x.id::text) || chr(58) || x.id || ',' || length(x.f::text) || chr(58) || x.f || ',' || length(x.t::text) || chr(58) || x.t || ',' || '6' || chr(58) || '100000,' || '12' || chr(58) || 'disbursement,' || length(x.y::text) || chr(58) || x.y || ',' || length(x.b::text) || chr(58) || x.b || ',' || '~,~,' || octet_length(x.ref) || chr(58) || x.ref || ',' || '~,' || octet_length(x.rk) || chr(58) || x.rk || ',' || '~,' || '5' || chr(58) || 'admin,' || '27' || chr(58) || to_char(x.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"') || ',', 'UTF8')) FROM (SELECT :last_id::bigint + 1 AS id, :bud::bigint AS f, :acct::bigint AS t, :year::smallint AS y, :root_id::bigint AS b, 'batch/' || :batch_id || '#1' AS ref, :rk::text AS rk, date_trunc('microseconds', clock_timestamp()) AS at, decode(:last_hash, 'hex') AS prev) x RETURNING id, hash), mv AS (UPDATE funds.account a SET balance_fen = a.balance_fen + x.d FROM unnest(ARRAY[:bud, :acct]::bigint[], ARRAY[-100000, 100000]::bigint[]) AS x(id, d) WHERE a.id = x.id RETURNING 1) UPDATE funds.ledger_head SET last_id = (SELECT id FROM ins), last_hash = (SELECT hash FROM ins) RETURNING last_id AS xfer \gset
INSERT INTO funds.batch_line (batch_id, line_key, recipient, amount_fen, transfer_id) SELECT :batch_id, x.k, x.r, x.a, x.t FROM unnest(ARRAY['1'], ARRAY['household' || chr(58) || :r], ARRAY[100000]::bigint[], ARRAY[:xfer]::bigint[]) AS x(k, r, a, t);
UPDATE funds.batch_run SET applied = applied + 1, paid_fen = paid_fen + 100000, chunks = chunks + 1, first_transfer_id = :xfer, last_transfer_id = :xfer, state = 'done', completed_at = now() WHERE request_key = :rk;
INSERT INTO funds.outbox (event_id, type, subject, payload) VALUES (gen_random_uuid(), 'bangfu.funds.batch.disbursed', 'batch/' || :batch_id, decode(repeat('ab', 330), 'hex'));
SELECT count(*) AS nev FROM (SELECT 1 FROM funds.evidence_pending WHERE xact IN (txid_current(), 0) LIMIT 1) p \gset
\if :nev
SELECT ev_last_id, encode(ev_last_hash, 'hex') AS ev_hash FROM funds.ledger_head FOR UPDATE \gset
SELECT p.kind, p.subject_id, a.kind AS account_kind, a.ref, a.name, a.floor_fen, t.payer_id, t.seq, t.amount_fen, t.recipient, t.requested_by, t.approved_by, t.approval_note AS note, CASE WHEN p.xact = 0 THEN 'system' || chr(58) || 'evidence-backfill' ELSE 'admin' END AS actor, to_char(COALESCE(a.created_at, t.approved_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"') AS created_at FROM funds.evidence_pending p LEFT JOIN funds.account a ON p.kind = 'account.created' AND a.id = p.subject_id LEFT JOIN funds.tranche t ON p.kind = 'tranche.approved' AND t.id = p.subject_id WHERE p.xact IN (txid_current(), 0) ORDER BY p.kind, p.subject_id;
WITH ins AS (INSERT INTO funds.evidence (id, kind, subject_id, account_kind, ref, name, floor_fen, payer_id, seq, amount_fen, recipient, requested_by, approved_by, note, actor, created_at, prev_hash, hash) SELECT x.id, 'account.created', x.sid, 'recipient', x.ref, x.ref, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'admin', x.at, x.prev, sha256(x.prev || convert_to('24' || chr(58) || 'bangfu.funds.evidence.v1,' || length(x.id::text) || chr(58) || x.id || ',' || '15' || chr(58) || 'account.created,' || length(x.sid::text) || chr(58) || x.sid || ',' || '9' || chr(58) || 'recipient,' || octet_length(x.ref) || chr(58) || x.ref || ',' || octet_length(x.ref) || chr(58) || x.ref || ',' || '1' || chr(58) || '0,' || '~,~,~,~,~,~,~,' || '5' || chr(58) || 'admin,' || '27' || chr(58) || to_char(x.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"') || ',', 'UTF8')) FROM (SELECT :ev_last_id::bigint + 1 AS id, a.id AS sid, a.ref, a.created_at AS at, decode(:ev_hash, 'hex') AS prev FROM funds.account a WHERE a.id = :acct) x RETURNING id, hash), del AS (DELETE FROM funds.evidence_pending WHERE xact IN (txid_current(), 0) RETURNING 1) UPDATE funds.ledger_head SET ev_last_id = (SELECT id FROM ins), ev_last_hash = (SELECT hash FROM ins);
\endif
UPDATE funds.request SET result = decode(repeat('ab', 165), 'hex') WHERE key = :rk;
END;
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
  same=$(PGOPTIONS=$P1_PATH pgb "$T/p1_same.sql" 4 -D lo="$HLO" -D hi="$HHI"); point=$(pgb "$T/p1_point.sql" 4 -D lo="$HLO" -D hi="$HHI")
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
  dsame=$(pgb "$T/p2_disburse.sql" 16 -D hlo="$HLO" -D hhi="$HHI" -D bud="$BUD")
  # the same with as many connections as the service has workers: both
  # serialise on the ledger head, and 16 connections queue on its row lock
  # where the service queues requests in ZeroMQ in front of its workers
  dsamew=$(pgb "$T/p2_disburse.sql" "$WORKERS" -D hlo="$HLO" -D hhi="$HHI" -D bud="$BUD")
  rps=$(kv "$out" rps); drps=$(kv "$dout" rps)
  rec P2 create_rps "$rps"; rec P2 create_p50_ms "$(kv "$out" p50_ms)"; rec P2 create_p99_ms "$(kv "$out" p99_ms)"
  rec P2 disburse_rps "$drps"; rec P2 disburse_p50_ms "$(kv "$dout" p50_ms)"; rec P2 disburse_p99_ms "$(kv "$dout" p99_ms)"
  rec P2 raw_same_tps "$same"; rec P2 raw_row_tps "$row"; rec P2 raw_disburse_same_tps "$dsame"
  rec P2 raw_disburse_w_tps "$dsamew"
  rec P2 ratio_create_same "$(div "$rps" "$same")"; rec P2 ratio_create_row "$(div "$rps" "$row")"
  rec P2 ratio_disburse_same "$(div "$drps" "$dsame")"; rec P2 ratio_disburse_w "$(div "$drps" "$dsamew")"
  rec P2 ratio_disburse_row "$(div "$drps" "$row")"
  echo "P2 household.create: $out | disbursement: $dout | pgbench same inserts $same tps, one-row insert $row tps, disbursement's statements $dsame tps ($dsamew tps with $WORKERS connections)"

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

# the raw disbursement script appended to the same chains as the service (it
# hashes what the service hashes): both chains and the books must still verify
vout=$("$CLI" call funds ledger.verify --actor admin --timeout 600000 2>&1) \
  || { echo "bench: ledger.verify failed: $vout" >&2; exit 1; }
echo "$vout" | /usr/bin/python3 -c 'import json, sys; v = json.load(sys.stdin); sys.exit(0 if v.get("ok") is True else 1)' \
  || { echo "bench: the ledger does not verify after the rounds: $(echo "$vout" | head -c 2000)" >&2; exit 1; }
echo "ledger.verify: ok (the service's and the raw script's entries chain)"

# ---- the rpc.workers sweep: registry and funds restarted with each count,
# P1 and P2 measured again, as ratios to this run's median raw figures
# med P KEY: the median of the figures recorded as "P KEY value"
med() {
  grep "^$1 $2 " "$RES" | awk '{print $3}' | sort -g |
    awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'
}
SWT="$T/sweep"; : >"$SWT"
if [ -n "$SWEEP" ]; then
  echo "== rpc.workers sweep: $SWEEP"
  i=0; sweep_t0=$SECONDS
  for w in $SWEEP; do
    i=$((i + 1))
    stop_svc registry; stop_svc funds
    start_svc registry "$w"; start_svc funds "$w"
    got=$("$CLI" call registry sys.stats | sed -n 's/.*"workers":\([0-9]*\).*/\1/p')
    [ "$got" = "${w%:solo}" ] || { echo "bench: registry runs '$got' workers, not $w" >&2; exit 1; }
    gout=$(taskset -c 1 "$LOAD" rpc "$REG" household.get 4 "$SECS" '{"id":@R@}' "$HLO" "$HHI") \
      || { echo "bench: sweep household.get errors" >&2; exit 1; }
    cout=$(BENCH_ID_PREFIX=$(printf '1202%02d' "$i") taskset -c 1 "$LOAD" rpc "$REG" household.create 16 "$SECS" \
      '{"village_id":@R@,"categories":["dibao"],"causes":{"main":"illness"},"route":"employment","income_fen":300000,"members":[{"name":"李@N@","id_number":"@ID@","relation":"head"}]}' \
      "$VLO" "$VHI") || { echo "bench: sweep household.create errors" >&2; exit 1; }
    dout=$(BENCH_SEQ_BASE=$(((50 + i) * 100000000)) taskset -c 1 "$LOAD" rpc "$FUNDS" disbursement.batch 16 "$SECS" \
      "{\"batch_key\":\"p2-@N@\",\"budget_id\":$BUD,\"lines\":[{\"line_key\":\"1\",\"recipient\":\"household:@R@\",\"amount_fen\":100000}],\"request_key\":\"p2-@N@\"}" \
      "$HLO" "$HHI") || { echo "bench: sweep disbursement errors" >&2; exit 1; }
    echo "$w $(kv "$gout" rps) $(kv "$gout" p99_ms) $(kv "$cout" rps) $(kv "$cout" p99_ms) $(kv "$dout" rps) $(kv "$dout" p99_ms)" >>"$SWT"
    echo "workers=$w household.get: $gout | household.create: $cout | disbursement: $dout"
  done
  echo "bench: the sweep took $((SECONDS - sweep_t0)) s"
fi

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

if [ -s "$SWT" ]; then
  echo
  echo "rpc.workers sweep (registry and funds restarted with each; ${SECS}s phases; x: ratio to the"
  echo "median raw figure of the rounds above: P1 same queries / point select, P2 same statements / one-row insert):"
  /usr/bin/python3 - "$SWT" "$(med P1 raw_same_tps)" "$(med P1 raw_point_tps)" "$(med P2 raw_same_tps)" \
    "$(med P2 raw_row_tps)" "$(med P2 raw_disburse_same_tps)" <<'EOF'
import sys
def num(s):
    try:
        return float(s)
    except ValueError:
        return float("nan")
p1s, p1p, p2s, p2r, p2d = (num(a) for a in sys.argv[2:7])
def x(a, b):
    return f"{a / b:.2f}" if b == b and b > 0 else "-"
print(f"  {'workers':>7} | {'get rps':>7} {'p99 ms':>7} {'x same':>6} {'x point':>7}"
      f" | {'create rps':>10} {'p99 ms':>7} {'x same':>6} {'x row':>5}"
      f" | {'disburse rps':>12} {'p99 ms':>7} {'x same':>6} {'x row':>5}")
for line in open(sys.argv[1]):
    w, g, gp, c, cp, d, dp = line.split()
    g, gp, c, cp, d, dp = map(num, (g, gp, c, cp, d, dp))
    print(f"  {w:>7} | {g:7.0f} {gp:7.2f} {x(g, p1s):>6} {x(g, p1p):>7}"
          f" | {c:10.0f} {cp:7.2f} {x(c, p2s):>6} {x(c, p2r):>5}"
          f" | {d:12.0f} {dp:7.2f} {x(d, p2d):>6} {x(d, p2r):>5}")
EOF
fi

# the RPC stack alone (in-process, no database): a bf_rpc round trip against
# raw ZeroMQ REQ/REP, and the bounds check against msgpack-c's unpack alone
echo
echo "RPC stack micro-benchmark (bench/bench_rpc.c):"
taskset -c 0 "$BUILD/bench/bench_rpc" $([ -n "${BENCH_SMALL:-}" ] && echo 5000 || echo 20000) | sed 's/^/  /'
echo
echo "bench: $SECONDS s in all"
