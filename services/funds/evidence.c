/* evidence.c: the evidence chain, ledger evidence beyond transfers.
 *
 * Transfers are not the only facts money depends on: an account's floor,
 * kind and ref decide what may be spent and who a payment reaches, and a
 * tranche's approval decides whether it may be paid. Triggers refuse UPDATEs
 * of those columns (migrations/003_evidence.sql); for someone who bypasses
 * the triggers (a database superuser), each such fact is also recorded, in
 * the transaction that creates it, as an entry of a second hash chain,
 * `evidence`, built like the ledger:
 *     hash = SHA-256(prev_hash || netstrings("bangfu.funds.evidence.v1",
 *                    the FUNDS_EV_FIELDS fields))
 * with the same netstring encoding as transfers (ledger.c). Entries are
 * `account.created` (account kind, ref, name, floor_fen, created_at) and
 * `tranche.approved` (payer, seq, amount, recipient, requested_by,
 * approved_by, approval note, approved_at). Its head (ev_last_id,
 * ev_last_hash) is on the one ledger_head row and is locked with it.
 *
 * How facts get here: triggers put every new account and every
 * planned -> approved tranche in evidence_pending, keyed by the writing
 * transaction; funds_evidence_flush(), called by every write just before it
 * commits, chains exactly its own transaction's pending rows (and rows left
 * by the migration that introduced the chain, xact 0). A row written behind
 * the service stays pending, unchained, and ledger.verify names it.
 *
 * funds_evidence_verify() walks the evidence chain like the ledger's, then
 * compares every account and every approved tranche with its chained record,
 * column by column, and reports each difference (which row, which column,
 * expected vs found, the evidence entry).
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#define S_TS "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
#define S_PAGE 5000

static const char s_tag[] = "bangfu.funds.evidence.v1";

/* the hashed fields, in order */
static const char *const s_cols[FUNDS_EV_FIELDS] = {
    "id",        "kind",       "subject_id", "account_kind", "ref",          "name",
    "floor_fen", "payer_id",   "seq",        "amount_fen",   "recipient",    "requested_by",
    "approved_by", "note",     "actor",      "created_at"};

static void s_hash(EVP_MD_CTX *ctx, const unsigned char prev[FUNDS_HASH_LEN],
                   const char *const f[FUNDS_EV_FIELDS], unsigned char out[FUNDS_HASH_LEN])
{
    funds_chain_hash(ctx, s_tag, prev, f, FUNDS_EV_FIELDS, out);
}

void funds_head_hash(int64_t ledger_id, const char *ledger_hash, int64_t ev_id,
                     const char *ev_hash, char out[2 * FUNDS_HASH_LEN + 1])
{
    unsigned char h[FUNDS_HASH_LEN];
    unsigned int len = 0;
    char a[24], b[24];
    snprintf(a, sizeof a, "%lld", (long long)ledger_id);
    snprintf(b, sizeof b, "%lld", (long long)ev_id);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) {
        out[0] = 0;
        return;
    }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    funds_chain_field(ctx, "bangfu.funds.head.v1");
    funds_chain_field(ctx, a);
    funds_chain_field(ctx, ledger_hash);
    funds_chain_field(ctx, b);
    funds_chain_field(ctx, ev_hash);
    EVP_DigestFinal_ex(ctx, h, &len);
    EVP_MD_CTX_free(ctx);
    funds_hex(h, FUNDS_HASH_LEN, out);
}

/* ------------------------------------------------------------ flush */

int funds_evidence_flush(bf_req_t *r)
{
    PGresult *res = bf_db_prep(r->db, "funds_ev_any",
                               "SELECT 1 FROM evidence_pending "
                               "WHERE xact IN (txid_current(), 0) LIMIT 1",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int any = PQntuples(res);
    PQclear(res);
    if (!any) return 0;

    /* the head first (lock order: request key, head, entity rows), then the
     * pending rows as committed by everyone before us */
    res = bf_db_prep(r->db, "funds_ev_head",
                     "SELECT ev_last_id, encode(ev_last_hash, 'hex') AS h "
                     "FROM ledger_head FOR UPDATE",
                     0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    unsigned char prev[FUNDS_HASH_LEN];
    if (PQntuples(res) != 1 || funds_unhex(bf_db_str(res, 0, "h"), prev, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the evidence head is missing or damaged");
    }
    int64_t last = bf_db_int(res, 0, "ev_last_id");
    PQclear(res);

    const char *ap[] = {r->actor ? r->actor : "system"};
    res = bf_db_prep(
        r->db, "funds_ev_pending",
        "SELECT p.kind, p.subject_id, a.kind AS account_kind, a.ref, a.name, a.floor_fen, "
        "  t.payer_id, t.seq, t.amount_fen, t.recipient, t.requested_by, t.approved_by, "
        "  t.approval_note AS note, CASE WHEN p.xact = 0 THEN 'system:evidence-backfill' "
        "  ELSE $1 END AS actor, "
        "  to_char(COALESCE(a.created_at, t.approved_at) AT TIME ZONE 'UTC', " S_TS
        ") AS created_at "
        "FROM evidence_pending p "
        "LEFT JOIN account a ON p.kind = 'account.created' AND a.id = p.subject_id "
        "LEFT JOIN tranche t ON p.kind = 'tranche.approved' AND t.id = p.subject_id "
        "WHERE p.xact IN (txid_current(), 0) ORDER BY p.kind, p.subject_id",
        1, ap, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    funds_arr_t arr[FUNDS_EV_FIELDS + 1]; /* the fields, then the hashes */
    for (int k = 0; k <= FUNDS_EV_FIELDS; k++) funds_arr_init(&arr[k]);
    char first_prev[2 * FUNDS_HASH_LEN + 1];
    funds_hex(prev, FUNDS_HASH_LEN, first_prev);
    if (!ctx) {
        bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
        goto done;
    }
    int fc[FUNDS_EV_FIELDS];
    for (int k = 0; k < FUNDS_EV_FIELDS; k++) fc[k] = PQfnumber(res, s_cols[k]);
    for (int i = 0; i < n; i++) {
        char idb[24];
        snprintf(idb, sizeof idb, "%lld", (long long)(last + 1 + i));
        const char *f[FUNDS_EV_FIELDS];
        for (int k = 0; k < FUNDS_EV_FIELDS; k++)
            f[k] = k == 0 ? idb : PQgetisnull(res, i, fc[k]) ? NULL : PQgetvalue(res, i, fc[k]);
        if (!f[15]) { /* the subject row is gone: nothing true to chain */
            bf_req_fail(r, BF_E_INTERNAL, NULL, "%s %s is pending evidence but does not exist",
                        f[1], f[2]);
            goto done;
        }
        unsigned char h[FUNDS_HASH_LEN];
        char hx[2 * FUNDS_HASH_LEN + 1];
        s_hash(ctx, prev, f, h);
        memcpy(prev, h, FUNDS_HASH_LEN);
        funds_hex(h, FUNDS_HASH_LEN, hx);
        for (int k = 0; k < FUNDS_EV_FIELDS; k++) funds_arr_text(&arr[k], f[k]);
        funds_arr_text(&arr[FUNDS_EV_FIELDS], hx);
    }
    PQclear(res);
    res = NULL;
    /* the entries, the pending rows' removal and the head in ONE statement
     * (data-modifying WITH: one round trip under the head instead of three) */
    {
        char hx[2 * FUNDS_HASH_LEN + 1];
        funds_hex(prev, FUNDS_HASH_LEN, hx);
        const char *p[FUNDS_EV_FIELDS + 4];
        for (int k = 0; k <= FUNDS_EV_FIELDS; k++) p[k] = funds_arr_end(&arr[k]);
        p[FUNDS_EV_FIELDS + 1] = first_prev;
        p[FUNDS_EV_FIELDS + 2] = bf_req_itoa(r, last + n);
        p[FUNDS_EV_FIELDS + 3] = hx;
        res = bf_db_prep(
            r->db, "funds_ev_append",
            "WITH ins AS (INSERT INTO evidence (id, kind, subject_id, account_kind, ref, name, "
            "  floor_fen, payer_id, seq, amount_fen, recipient, requested_by, approved_by, note, "
            "  actor, created_at, prev_hash, hash) "
            "SELECT x.id::bigint, x.kind, x.sid::bigint, x.ak, x.ref, x.name, x.fl::bigint, "
            "  x.pay::bigint, x.seq::int, x.amt::bigint, x.rcp, x.rq, x.ap, x.note, x.actor, "
            "  x.at::timestamptz, "
            "  decode(COALESCE(lag(x.h) OVER (ORDER BY x.ord), $18), 'hex'), decode(x.h, 'hex') "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
            "  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], "
            "  $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]) "
            "  WITH ORDINALITY AS x(id, kind, sid, ak, ref, name, fl, pay, seq, amt, rcp, rq, ap, "
            "  note, actor, at, h, ord) RETURNING 1), "
            "del AS (DELETE FROM evidence_pending WHERE xact IN (txid_current(), 0) RETURNING 1) "
            "UPDATE ledger_head SET ev_last_id = $19, ev_last_hash = decode($20, 'hex') "
            "RETURNING (SELECT count(*) FROM ins) AS entries, (SELECT count(*) FROM del) AS cleared",
            FUNDS_EV_FIELDS + 4, p, NULL, NULL);
    }
    if (!res) {
        bf_req_db_fail(r);
        goto done;
    }
    if (PQntuples(res) != 1 || bf_db_int(res, 0, "entries") != (int64_t)n ||
        bf_db_int(res, 0, "cleared") != (int64_t)n) {
        bf_req_fail(r, BF_E_INTERNAL, NULL, "the evidence append did not write every row");
        goto done;
    }
    rc = 0;
done:
    if (res) PQclear(res);
    for (int k = 0; k <= FUNDS_EV_FIELDS; k++) funds_arr_free(&arr[k]);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------------ verify */

/* Every difference between a row and its chained record, one row per
 * (table, id, column). The join compares typed values; only rows that differ
 * are spelled out column by column. */
static const char s_diff_sql[] =
    "SELECT 'account' AS tbl, COALESCE(m.aid, m.sid) AS id, m.eid AS entry_id, c.col, "
    "  c.expected, c.found "
    "FROM (SELECT a.id AS aid, e.subject_id AS sid, e.id AS eid, "
    "        a.kind AS a_kind, e.account_kind AS e_kind, a.ref AS a_ref, e.ref AS e_ref, "
    "        a.name AS a_name, e.name AS e_name, a.floor_fen AS a_floor, "
    "        e.floor_fen AS e_floor, a.created_at AS a_at, e.created_at AS e_at "
    "      FROM account a "
    "      FULL JOIN (SELECT * FROM evidence WHERE kind = 'account.created') e "
    "        ON e.subject_id = a.id "
    "      WHERE a.id IS NULL OR e.id IS NULL OR a.kind IS DISTINCT FROM e.account_kind "
    "         OR a.ref IS DISTINCT FROM e.ref OR a.name IS DISTINCT FROM e.name "
    "         OR a.floor_fen IS DISTINCT FROM e.floor_fen "
    "         OR a.created_at IS DISTINCT FROM e.created_at) m "
    "CROSS JOIN LATERAL (VALUES "
    "  ('evidence', CASE WHEN m.aid IS NULL THEN 'account.created' END, "
    "               CASE WHEN m.eid IS NULL THEN 'none' END), "
    "  ('kind', m.e_kind, m.a_kind), ('ref', m.e_ref, m.a_ref), ('name', m.e_name, m.a_name), "
    "  ('floor_fen', m.e_floor::text, m.a_floor::text), "
    "  ('created_at', to_char(m.e_at AT TIME ZONE 'UTC', " S_TS "), "
    "                 to_char(m.a_at AT TIME ZONE 'UTC', " S_TS "))) "
    "  AS c(col, expected, found) "
    "WHERE c.expected IS DISTINCT FROM c.found AND (c.col = 'evidence' OR "
    "      (m.aid IS NOT NULL AND m.eid IS NOT NULL)) "
    "UNION ALL "
    "SELECT 'tranche', COALESCE(m.tid, m.sid), m.eid, c.col, c.expected, c.found "
    "FROM (SELECT t.id AS tid, e.subject_id AS sid, e.id AS eid, t.payer_id, e.payer_id AS "
    "        e_payer, t.seq, e.seq AS e_seq, t.amount_fen, e.amount_fen AS e_amount, "
    "        t.recipient, e.recipient AS e_recipient, t.requested_by, "
    "        e.requested_by AS e_requested_by, t.approved_by, e.approved_by AS e_approved_by, "
    "        t.approval_note, e.note AS e_note, t.approved_at, e.created_at AS e_at "
    "      FROM (SELECT * FROM tranche WHERE approved_by IS NOT NULL OR state <> 'planned') t "
    "      FULL JOIN (SELECT * FROM evidence WHERE kind = 'tranche.approved') e "
    "        ON e.subject_id = t.id "
    "      WHERE t.id IS NULL OR e.id IS NULL OR t.payer_id IS DISTINCT FROM e.payer_id "
    "         OR t.seq IS DISTINCT FROM e.seq OR t.amount_fen IS DISTINCT FROM e.amount_fen "
    "         OR t.recipient IS DISTINCT FROM e.recipient "
    "         OR t.requested_by IS DISTINCT FROM e.requested_by "
    "         OR t.approved_by IS DISTINCT FROM e.approved_by "
    "         OR t.approval_note IS DISTINCT FROM e.note "
    "         OR t.approved_at IS DISTINCT FROM e.created_at) m "
    "CROSS JOIN LATERAL (VALUES "
    "  ('evidence', CASE WHEN m.tid IS NULL THEN 'tranche.approved' END, "
    "               CASE WHEN m.eid IS NULL THEN 'none' END), "
    "  ('payer_id', m.e_payer::text, m.payer_id::text), ('seq', m.e_seq::text, m.seq::text), "
    "  ('amount_fen', m.e_amount::text, m.amount_fen::text), "
    "  ('recipient', m.e_recipient, m.recipient), "
    "  ('requested_by', m.e_requested_by, m.requested_by), "
    "  ('approved_by', m.e_approved_by, m.approved_by), "
    "  ('approval_note', m.e_note, m.approval_note), "
    "  ('approved_at', to_char(m.e_at AT TIME ZONE 'UTC', " S_TS "), "
    "                  to_char(m.approved_at AT TIME ZONE 'UTC', " S_TS "))) "
    "  AS c(col, expected, found) "
    "WHERE c.expected IS DISTINCT FROM c.found AND (c.col = 'evidence' OR "
    "      (m.tid IS NOT NULL AND m.eid IS NOT NULL)) "
    "ORDER BY 1, 2, 4 LIMIT 100";

int funds_evidence_verify(bf_req_t *r, funds_ev_result_t *out)
{
    memset(out, 0, sizeof *out);
    PGresult *res = bf_db_prep(r->db, "funds_ev_verify_head",
                               "SELECT ev_last_id, encode(ev_last_hash, 'hex') AS h "
                               "FROM ledger_head",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    unsigned char head[FUNDS_HASH_LEN];
    if (PQntuples(res) != 1 || funds_unhex(bf_db_str(res, 0, "h"), head, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the evidence head is missing or damaged");
    }
    out->head_id = bf_db_int(res, 0, "ev_last_id");
    funds_hex(head, FUNDS_HASH_LEN, out->head_hash);
    PQclear(res);

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    unsigned char running[FUNDS_HASH_LEN] = {0};
    int64_t last = 0;
    char *sql = bf_arena_printf(
        r->arena,
        "SELECT id, kind, subject_id, account_kind, ref, name, floor_fen, payer_id, seq, "
        "  amount_fen, recipient, requested_by, approved_by, note, actor, "
        "  to_char(created_at AT TIME ZONE 'UTC', %s) AS created_at, "
        "  encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash "
        "FROM evidence WHERE id > $1 ORDER BY id LIMIT %d",
        S_TS, S_PAGE);
    funds_chain_walk_t w = {
        .tag = s_tag, .what = "evidence entry", .cols = s_cols, .ncols = FUNDS_EV_FIELDS};
    while (!w.problem) {
        const char *p[] = {bf_req_itoa(r, w.last)};
        res = bf_db_prep(r->db, "funds_ev_verify_page", sql, 1, p, NULL, NULL);
        if (!res) {
            EVP_MD_CTX_free(ctx);
            return bf_req_db_fail(r);
        }
        int n = PQntuples(res);
        funds_chain_walk(r, ctx, &w, res);
        PQclear(res);
        if (n < S_PAGE) break;
    }
    EVP_MD_CTX_free(ctx);
    last = w.last;
    memcpy(running, w.running, FUNDS_HASH_LEN);
    out->bad_id = w.bad_id;
    out->problem = w.problem;
    out->message = w.message;
    out->entries = last;
    if (!out->problem && (last != out->head_id || memcmp(running, head, FUNDS_HASH_LEN) != 0)) {
        out->bad_id = last < out->head_id ? last + 1 : out->head_id;
        out->problem = "head_mismatch";
        out->message = last < out->head_id
                           ? "evidence entries after this one are missing (the head is further on)"
                           : "the evidence head does not point at the last entry";
    }
    out->diffs = bf_db_prep(r->db, "funds_ev_diffs", s_diff_sql, 0, NULL, NULL, NULL);
    if (!out->diffs) return bf_req_db_fail(r);
    return 0;
}

void funds_evidence_pack_diffs(msgpack_packer *pk, const PGresult *diffs)
{
    int n = diffs ? PQntuples(diffs) : 0;
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(pk, 6);
        bf_mp_kv_str(pk, "table", bf_db_str(diffs, i, "tbl"));
        bf_mp_kv_int(pk, "id", bf_db_int(diffs, i, "id"));
        bf_mp_kv_str(pk, "column", bf_db_str(diffs, i, "col"));
        bf_mp_kv_str(pk, "expected", bf_db_str(diffs, i, "expected"));
        bf_mp_kv_str(pk, "found", bf_db_str(diffs, i, "found"));
        if (bf_db_null(diffs, i, "entry_id"))
            bf_mp_kv_nil(pk, "evidence_id");
        else
            bf_mp_kv_int(pk, "evidence_id", bf_db_int(diffs, i, "entry_id"));
    }
}
