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

static void s_net(EVP_MD_CTX *ctx, const char *s)
{
    if (!s) {
        EVP_DigestUpdate(ctx, "~,", 2);
        return;
    }
    char len[24];
    int k = snprintf(len, sizeof len, "%zu:", strlen(s));
    EVP_DigestUpdate(ctx, len, (size_t)k);
    EVP_DigestUpdate(ctx, s, strlen(s));
    EVP_DigestUpdate(ctx, ",", 1);
}

static void s_hash(EVP_MD_CTX *ctx, const unsigned char prev[FUNDS_HASH_LEN],
                   const char *const f[FUNDS_EV_FIELDS], unsigned char out[FUNDS_HASH_LEN])
{
    unsigned int len = 0;
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, prev, FUNDS_HASH_LEN);
    s_net(ctx, s_tag);
    for (int i = 0; i < FUNDS_EV_FIELDS; i++) s_net(ctx, f[i]);
    EVP_DigestFinal_ex(ctx, out, &len);
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
    s_net(ctx, "bangfu.funds.head.v1");
    s_net(ctx, a);
    s_net(ctx, ledger_hash);
    s_net(ctx, b);
    s_net(ctx, ev_hash);
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
    {
        const char *p[FUNDS_EV_FIELDS + 2];
        for (int k = 0; k <= FUNDS_EV_FIELDS; k++) p[k] = funds_arr_end(&arr[k]);
        p[FUNDS_EV_FIELDS + 1] = first_prev;
        res = bf_db_prep(
            r->db, "funds_ev_insert",
            "INSERT INTO evidence (id, kind, subject_id, account_kind, ref, name, floor_fen, "
            "  payer_id, seq, amount_fen, recipient, requested_by, approved_by, note, actor, "
            "  created_at, prev_hash, hash) "
            "SELECT x.id::bigint, x.kind, x.sid::bigint, x.ak, x.ref, x.name, x.fl::bigint, "
            "  x.pay::bigint, x.seq::int, x.amt::bigint, x.rcp, x.rq, x.ap, x.note, x.actor, "
            "  x.at::timestamptz, "
            "  decode(COALESCE(lag(x.h) OVER (ORDER BY x.ord), $18), 'hex'), decode(x.h, 'hex') "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
            "  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], "
            "  $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]) "
            "  WITH ORDINALITY AS x(id, kind, sid, ak, ref, name, fl, pay, seq, amt, rcp, rq, ap, "
            "  note, actor, at, h, ord)",
            FUNDS_EV_FIELDS + 2, p, NULL, NULL);
    }
    if (!res) {
        bf_req_db_fail(r);
        goto done;
    }
    PQclear(res);
    res = bf_db_prep(r->db, "funds_ev_clear",
                     "DELETE FROM evidence_pending WHERE xact IN (txid_current(), 0)", 0, NULL,
                     NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        goto done;
    }
    PQclear(res);
    {
        char hx[2 * FUNDS_HASH_LEN + 1];
        funds_hex(prev, FUNDS_HASH_LEN, hx);
        const char *p[] = {bf_req_itoa(r, last + n), hx};
        res = bf_db_prep(r->db, "funds_ev_head_move",
                         "UPDATE ledger_head SET ev_last_id = $1, ev_last_hash = decode($2, 'hex')",
                         2, p, NULL, NULL);
    }
    if (!res) {
        bf_req_db_fail(r);
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
 * (table, id, column). */
static const char s_diff_sql[] =
    "WITH ea AS (SELECT * FROM evidence WHERE kind = 'account.created'), "
    "et AS (SELECT * FROM evidence WHERE kind = 'tranche.approved') "
    "SELECT 'account' AS tbl, COALESCE(a.id, e.subject_id) AS id, e.id AS entry_id, c.col, "
    "  c.expected, c.found "
    "FROM account a FULL JOIN ea e ON e.subject_id = a.id "
    "CROSS JOIN LATERAL (VALUES "
    "  ('evidence', CASE WHEN a.id IS NULL THEN 'account.created' END, "
    "               CASE WHEN e.id IS NULL THEN 'none' END), "
    "  ('kind', e.account_kind, a.kind), ('ref', e.ref, a.ref), ('name', e.name, a.name), "
    "  ('floor_fen', e.floor_fen::text, a.floor_fen::text), "
    "  ('created_at', to_char(e.created_at AT TIME ZONE 'UTC', " S_TS "), "
    "                 to_char(a.created_at AT TIME ZONE 'UTC', " S_TS "))) "
    "  AS c(col, expected, found) "
    "WHERE c.expected IS DISTINCT FROM c.found AND (c.col = 'evidence' OR "
    "      (a.id IS NOT NULL AND e.id IS NOT NULL)) "
    "UNION ALL "
    "SELECT 'tranche', COALESCE(t.id, e.subject_id), e.id, c.col, c.expected, c.found "
    "FROM (SELECT * FROM tranche WHERE approved_by IS NOT NULL OR state <> 'planned') t "
    "FULL JOIN et e ON e.subject_id = t.id "
    "CROSS JOIN LATERAL (VALUES "
    "  ('evidence', CASE WHEN t.id IS NULL THEN 'tranche.approved' END, "
    "               CASE WHEN e.id IS NULL THEN 'none' END), "
    "  ('payer_id', e.payer_id::text, t.payer_id::text), ('seq', e.seq::text, t.seq::text), "
    "  ('amount_fen', e.amount_fen::text, t.amount_fen::text), "
    "  ('recipient', e.recipient, t.recipient), ('requested_by', e.requested_by, t.requested_by), "
    "  ('approved_by', e.approved_by, t.approved_by), ('approval_note', e.note, t.approval_note), "
    "  ('approved_at', to_char(e.created_at AT TIME ZONE 'UTC', " S_TS "), "
    "                  to_char(t.approved_at AT TIME ZONE 'UTC', " S_TS "))) "
    "  AS c(col, expected, found) "
    "WHERE c.expected IS DISTINCT FROM c.found AND (c.col = 'evidence' OR "
    "      (t.id IS NOT NULL AND e.id IS NOT NULL)) "
    "ORDER BY 1, 2, 4 LIMIT " "100";

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
    while (!out->problem) {
        const char *p[] = {bf_req_itoa(r, last)};
        res = bf_db_prep(r->db, "funds_ev_verify_page", sql, 1, p, NULL, NULL);
        if (!res) {
            EVP_MD_CTX_free(ctx);
            return bf_req_db_fail(r);
        }
        int n = PQntuples(res);
        int fc[FUNDS_EV_FIELDS];
        for (int k = 0; k < FUNDS_EV_FIELDS; k++) fc[k] = PQfnumber(res, s_cols[k]);
        for (int i = 0; i < n && !out->problem; i++) {
            int64_t id = bf_db_int(res, i, "id");
            unsigned char sp[FUNDS_HASH_LEN], sh[FUNDS_HASH_LEN], ch[FUNDS_HASH_LEN];
            if (id != last + 1) {
                out->bad_id = last + 1;
                out->problem = "missing";
                out->message = "the evidence entry is missing: the chain jumps over it";
                break;
            }
            if (funds_unhex(bf_db_str(res, i, "prev_hash"), sp, FUNDS_HASH_LEN) != 0 ||
                funds_unhex(bf_db_str(res, i, "hash"), sh, FUNDS_HASH_LEN) != 0) {
                out->bad_id = id;
                out->problem = "damaged";
                out->message = "the evidence entry's hashes are not 32 bytes";
                break;
            }
            if (memcmp(sp, running, FUNDS_HASH_LEN) != 0) {
                out->bad_id = id;
                out->problem = "broken_link";
                out->message = "prev_hash is not the hash of the evidence entry before it";
                break;
            }
            const char *f[FUNDS_EV_FIELDS];
            for (int k = 0; k < FUNDS_EV_FIELDS; k++)
                f[k] = PQgetisnull(res, i, fc[k]) ? NULL : PQgetvalue(res, i, fc[k]);
            s_hash(ctx, running, f, ch);
            if (memcmp(ch, sh, FUNDS_HASH_LEN) != 0) {
                out->bad_id = id;
                out->problem = "altered";
                out->message = "the evidence entry's content does not match its hash: it was "
                               "changed";
                break;
            }
            memcpy(running, sh, FUNDS_HASH_LEN);
            last = id;
        }
        PQclear(res);
        if (n < S_PAGE) break;
    }
    EVP_MD_CTX_free(ctx);
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
