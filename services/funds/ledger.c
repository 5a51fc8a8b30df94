/* ledger.c: the hash-chained, append-only ledger and its accounts.
 *
 * funds_ledger_append() is the only code that writes `transfer` and changes
 * account balances. It runs inside the caller's transaction after
 * funds_ledger_lock() took the chain head, so appends are serialised: ids are
 * the chain positions (gapless from 1), each entry's prev_hash is the hash of
 * the entry before it, and its hash is
 *     SHA-256(prev_hash || canonical content)
 * where the canonical content is the tag "bangfu.funds.transfer.v1" and then
 * each of the FUNDS_HASH_FIELDS fields as a netstring "<len>:<bytes>," (a NULL
 * field is "~,"), integers in decimal, created_at as
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ". Length prefixes make the encoding
 * unambiguous whatever a note or actor contains. The first entry's prev_hash
 * is 32 zero bytes.
 *
 * ledger.verify walks the chain from 1 in pages inside one REPEATABLE READ
 * snapshot, recomputes every hash and names the first entry that does not
 * match (missing, altered content, broken link, or a head that is not the last
 * entry), then re-derives every account's balance from the ledger and
 * compares it with the cache and the floor.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_VERIFY_PAGE 5000
#define S_TS_FMT "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"

static const char s_tag[] = "bangfu.funds.transfer.v1";

/* ------------------------------------------------------------ hashing */

void funds_chain_field(EVP_MD_CTX *ctx, const char *s)
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

void funds_chain_hash(EVP_MD_CTX *ctx, const char *tag, const unsigned char prev[FUNDS_HASH_LEN],
                      const char *const *f, int n, unsigned char out[FUNDS_HASH_LEN])
{
    unsigned int len = 0;
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, prev, FUNDS_HASH_LEN);
    funds_chain_field(ctx, tag);
    for (int i = 0; i < n; i++) funds_chain_field(ctx, f[i]);
    EVP_DigestFinal_ex(ctx, out, &len);
}

void funds_chain_walk(bf_req_t *r, EVP_MD_CTX *ctx, funds_chain_walk_t *w, const PGresult *res)
{
    int n = PQntuples(res), fc[FUNDS_CHAIN_MAX_FIELDS];
    for (int k = 0; k < w->ncols; k++) fc[k] = PQfnumber(res, w->cols[k]);
    for (int i = 0; i < n && !w->problem; i++) {
        int64_t id = bf_db_int(res, i, "id");
        unsigned char sp[FUNDS_HASH_LEN], sh[FUNDS_HASH_LEN], ch[FUNDS_HASH_LEN];
        if (id != w->last + 1) {
            w->bad_id = w->last + 1;
            w->problem = "missing";
            w->message = bf_arena_printf(r->arena, "the %s is missing: the chain jumps over it",
                                         w->what);
        } else if (funds_unhex(bf_db_str(res, i, "prev_hash"), sp, FUNDS_HASH_LEN) != 0 ||
                   funds_unhex(bf_db_str(res, i, "hash"), sh, FUNDS_HASH_LEN) != 0) {
            w->bad_id = id;
            w->problem = "damaged";
            w->message = bf_arena_printf(r->arena, "the %s's hashes are not 32 bytes", w->what);
        } else if (memcmp(sp, w->running, FUNDS_HASH_LEN) != 0) {
            w->bad_id = id;
            w->problem = "broken_link";
            w->message = bf_arena_printf(r->arena, "prev_hash is not the hash of the %s before it",
                                         w->what);
        } else {
            const char *f[FUNDS_CHAIN_MAX_FIELDS];
            for (int k = 0; k < w->ncols; k++)
                f[k] = PQgetisnull(res, i, fc[k]) ? NULL : PQgetvalue(res, i, fc[k]);
            funds_chain_hash(ctx, w->tag, w->running, f, w->ncols, ch);
            if (memcmp(ch, sh, FUNDS_HASH_LEN) != 0) {
                w->bad_id = id;
                w->problem = "altered";
                w->message = bf_arena_printf(
                    r->arena, "the %s's content does not match its hash: it was changed", w->what);
            } else {
                memcpy(w->running, sh, FUNDS_HASH_LEN);
                w->last = id;
            }
        }
    }
}

static void s_hash(EVP_MD_CTX *ctx, const unsigned char prev[FUNDS_HASH_LEN],
                   const char *const f[FUNDS_HASH_FIELDS], unsigned char out[FUNDS_HASH_LEN])
{
    funds_chain_hash(ctx, s_tag, prev, f, FUNDS_HASH_FIELDS, out);
}

void funds_entry_hash(const unsigned char prev[FUNDS_HASH_LEN],
                      const char *const fields[FUNDS_HASH_FIELDS],
                      unsigned char out[FUNDS_HASH_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) {
        memset(out, 0, FUNDS_HASH_LEN);
        return;
    }
    s_hash(ctx, prev, fields, out);
    EVP_MD_CTX_free(ctx);
}

/* ------------------------------------------------------------ accounts */

int64_t funds_account_create(bf_req_t *r, const char *kind, const char *ref, const char *name)
{
    const char *p[] = {kind, ref, name};
    PGresult *res = bf_db_prep(r->db, "funds_account_create",
                               "INSERT INTO account (kind, ref, name, floor_fen) "
                               "VALUES ($1, $2, $3, CASE WHEN $1 = 'external' THEN NULL ELSE 0 END) "
                               "RETURNING id",
                               3, p, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return 0;
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    return id;
}

int funds_account_balance(bf_req_t *r, int64_t account, int64_t *balance)
{
    const char *p[] = {bf_req_itoa(r, account)};
    PGresult *res = bf_db_prep(r->db, "funds_account_balance",
                               "SELECT balance_fen FROM account WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, NULL, "no account %lld", (long long)account);
    }
    *balance = bf_db_int(res, 0, "balance_fen");
    PQclear(res);
    return 0;
}

int funds_account_available(bf_req_t *r, int64_t account, int64_t *available)
{
    const char *p[] = {bf_req_itoa(r, account)};
    PGresult *res = bf_db_prep(r->db, "funds_account_available",
                               "SELECT balance_fen - held_fen AS available FROM account "
                               "WHERE id = $1",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, NULL, "no account %lld", (long long)account);
    }
    *available = bf_db_int(res, 0, "available");
    PQclear(res);
    return 0;
}

int funds_account_net_in(bf_req_t *r, int64_t account, int64_t *net_in)
{
    const char *p[] = {bf_req_itoa(r, account)};
    PGresult *res = bf_db_prep(
        r->db, "funds_account_net_in",
        "SELECT (SELECT COALESCE(sum(amount_fen), 0) FROM transfer "
        "         WHERE to_account = $1 AND kind <> 'reversal') - "
        "       (SELECT COALESCE(sum(amount_fen), 0) FROM transfer "
        "         WHERE from_account = $1 AND kind = 'reversal') AS net_in",
        1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *net_in = bf_db_int(res, 0, "net_in");
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ append */

int funds_ledger_lock(bf_req_t *r, funds_head_t *head)
{
    PGresult *res = bf_db_prep(r->db, "funds_head_lock",
                               "SELECT last_id, encode(last_hash, 'hex') AS last_hash "
                               "FROM ledger_head FOR UPDATE",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1 ||
        funds_unhex(bf_db_str(res, 0, "last_hash"), head->last_hash, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the ledger head is missing or damaged");
    }
    head->last_id = bf_db_int(res, 0, "last_id");
    PQclear(res);
    /* the time is taken after the lock, so created_at follows the chain order
     * (as long as the clock does not step back) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(head->now, sizeof head->now, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000L);
    return 0;
}

typedef struct {
    int64_t account, delta;
} s_delta_t;

static int s_delta_cmp(const void *a, const void *b)
{
    int64_t x = ((const s_delta_t *)a)->account, y = ((const s_delta_t *)b)->account;
    return x < y ? -1 : x > y;
}

/* Sums the balance changes per account (sorted by account). Returns the
 * number of accounts, or -1 on overflow. */
static long s_deltas(const funds_xfer_t *x, size_t n, s_delta_t *d)
{
    for (size_t i = 0; i < n; i++) {
        d[2 * i] = (s_delta_t){x[i].from, -x[i].amount};
        d[2 * i + 1] = (s_delta_t){x[i].to, x[i].amount};
    }
    qsort(d, 2 * n, sizeof *d, s_delta_cmp);
    size_t m = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        if (m && d[m - 1].account == d[i].account) {
            if (bf_money_add(d[m - 1].delta, d[i].delta, &d[m - 1].delta) != 0) return -1;
        } else {
            d[m++] = d[i];
        }
    }
    return (long)m;
}

int funds_ledger_append(bf_req_t *r, funds_head_t *head, funds_xfer_t *x, size_t n,
                        const char *request_key, const char *field)
{
    if (n == 0) return 0;
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    s_delta_t *d = malloc(2 * n * sizeof *d);
    funds_arr_t a_from, a_to, a_amt, a_kind, a_year, a_bud, a_proj, a_src, a_ref, a_note,
        a_rev, a_hash, a_ids, a_bal;
    funds_arr_t *arrs[] = {&a_from, &a_to,  &a_amt, &a_kind, &a_year, &a_bud, &a_proj,
                           &a_src,  &a_ref, &a_note, &a_rev, &a_hash, &a_ids, &a_bal};
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++) funds_arr_init(arrs[i]);
    PGresult *res = NULL;
    if (!ctx || !d) {
        bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
        goto cleanup;
    }

    /* balances: lock every account involved, check overflow and floors */
    long m = s_deltas(x, n, d);
    if (m < 0) {
        bf_req_fail(r, BF_E_INVALID, field, "%s: the amounts overflow a 64-bit sum", field);
        goto cleanup;
    }
    for (long i = 0; i < m; i++) funds_arr_int(&a_ids, d[i].account, false);
    {
        const char *p[] = {funds_arr_end(&a_ids)};
        /* no row locks needed: every balance change happens under the head
         * lock this transaction holds; the CHECK on account guards the floor
         * a second time */
        res = bf_db_prep(r->db, "funds_accounts_read",
                         "SELECT id, name, floor_fen, balance_fen, held_fen FROM account "
                         "WHERE id = ANY($1::bigint[]) ORDER BY id",
                         1, p, NULL, NULL);
    }
    if (!res) {
        bf_req_db_fail(r);
        goto cleanup;
    }
    if (PQntuples(res) != m) {
        bf_req_fail(r, BF_E_INTERNAL, field, "an account of this transfer does not exist");
        goto cleanup;
    }
    funds_arr_free(&a_ids);
    funds_arr_init(&a_ids);
    for (long i = 0; i < m; i++) {
        int64_t bal = bf_db_int(res, (int)i, "balance_fen"), nb;
        if (bf_db_int(res, (int)i, "id") != d[i].account) {
            bf_req_fail(r, BF_E_INTERNAL, field, "account rows out of order");
            goto cleanup;
        }
        if (bf_money_add(bal, d[i].delta, &nb) != 0) {
            bf_req_fail(r, BF_E_INVALID, field,
                        "%s: the balance of account %lld (%s) would overflow 64 bits", field,
                        (long long)d[i].account, bf_db_str(res, (int)i, "name"));
            goto cleanup;
        }
        /* what a running chunked allocation holds is not spendable by others
         * (its chunks release their part of the hold before appending) */
        int64_t held = bf_db_int(res, (int)i, "held_fen"), avail_after;
        if (bf_money_sub(nb, held, &avail_after) != 0) avail_after = INT64_MIN;
        if (!bf_db_null(res, (int)i, "floor_fen") &&
            avail_after < bf_db_int(res, (int)i, "floor_fen")) {
            int64_t need;
            if (bf_money_sub(bal, nb, &need) != 0) need = INT64_MAX;
            if (held)
                bf_req_fail(r, BF_E_PRECONDITION, field,
                            "insufficient funds: account %lld (%s) has %s yuan, of which %s "
                            "yuan are held for a running allocation; %s yuan needed",
                            (long long)d[i].account, bf_db_str(res, (int)i, "name"),
                            funds_yuan(r, bal), funds_yuan(r, held), funds_yuan(r, need));
            else
                bf_req_fail(r, BF_E_PRECONDITION, field,
                            "insufficient funds: account %lld (%s) has %s yuan, %s yuan needed",
                            (long long)d[i].account, bf_db_str(res, (int)i, "name"),
                            funds_yuan(r, bal), funds_yuan(r, need));
            goto cleanup;
        }
        funds_arr_int(&a_ids, d[i].account, false);
        funds_arr_int(&a_bal, nb, false);
    }
    PQclear(res);
    res = NULL;

    /* the chain: ids, hashes, then one INSERT */
    char first_prev[2 * FUNDS_HASH_LEN + 1];
    funds_hex(head->last_hash, FUNDS_HASH_LEN, first_prev);
    unsigned char prev[FUNDS_HASH_LEN];
    memcpy(prev, head->last_hash, FUNDS_HASH_LEN);
    for (size_t i = 0; i < n; i++) {
        char idb[24], fb[24], tb[24], ab[24], yb[8], bb[24], pb[24], sb[24], rb[24];
        x[i].id = head->last_id + 1 + (int64_t)i;
        snprintf(idb, sizeof idb, "%lld", (long long)x[i].id);
        snprintf(fb, sizeof fb, "%lld", (long long)x[i].from);
        snprintf(tb, sizeof tb, "%lld", (long long)x[i].to);
        snprintf(ab, sizeof ab, "%lld", (long long)x[i].amount);
        snprintf(yb, sizeof yb, "%d", x[i].year);
        snprintf(bb, sizeof bb, "%lld", (long long)x[i].budget_id);
        snprintf(pb, sizeof pb, "%lld", (long long)x[i].project_id);
        snprintf(sb, sizeof sb, "%lld", (long long)x[i].source_id);
        snprintf(rb, sizeof rb, "%lld", (long long)x[i].reverses_id);
        const char *f[FUNDS_HASH_FIELDS] = {
            idb, fb, tb, ab, x[i].kind,
            x[i].year ? yb : NULL,
            x[i].budget_id ? bb : NULL,
            x[i].project_id ? pb : NULL,
            x[i].source_id ? sb : NULL,
            x[i].ref, x[i].note, request_key,
            x[i].reverses_id ? rb : NULL,
            r->actor, head->now};
        unsigned char h[FUNDS_HASH_LEN];
        char hx[2 * FUNDS_HASH_LEN + 1];
        s_hash(ctx, prev, f, h);
        memcpy(prev, h, FUNDS_HASH_LEN);
        funds_hex(h, FUNDS_HASH_LEN, hx);
        funds_arr_int(&a_from, x[i].from, false);
        funds_arr_int(&a_to, x[i].to, false);
        funds_arr_int(&a_amt, x[i].amount, false);
        funds_arr_text(&a_kind, x[i].kind);
        funds_arr_int(&a_year, x[i].year, x[i].year == 0);
        funds_arr_int(&a_bud, x[i].budget_id, x[i].budget_id == 0);
        funds_arr_int(&a_proj, x[i].project_id, x[i].project_id == 0);
        funds_arr_int(&a_src, x[i].source_id, x[i].source_id == 0);
        funds_arr_text(&a_ref, x[i].ref);
        funds_arr_text(&a_note, x[i].note);
        funds_arr_int(&a_rev, x[i].reverses_id, x[i].reverses_id == 0);
        funds_arr_text(&a_hash, hx);
    }
    /* the transfers, the balances and the head in ONE statement (data-
     * modifying WITH: one round trip under the head instead of three) */
    char new_hash[2 * FUNDS_HASH_LEN + 1];
    funds_hex(prev, FUNDS_HASH_LEN, new_hash);
    {
        const char *p[] = {bf_req_itoa(r, head->last_id),
                           request_key,
                           r->actor,
                           head->now,
                           first_prev,
                           funds_arr_end(&a_from),
                           funds_arr_end(&a_to),
                           funds_arr_end(&a_amt),
                           funds_arr_end(&a_kind),
                           funds_arr_end(&a_year),
                           funds_arr_end(&a_bud),
                           funds_arr_end(&a_proj),
                           funds_arr_end(&a_src),
                           funds_arr_end(&a_ref),
                           funds_arr_end(&a_note),
                           funds_arr_end(&a_rev),
                           funds_arr_end(&a_hash),
                           funds_arr_end(&a_ids),
                           funds_arr_end(&a_bal),
                           bf_req_itoa(r, head->last_id + (int64_t)n),
                           new_hash};
        res = bf_db_prep(
            r->db, "funds_ledger_append",
            "WITH ins AS (INSERT INTO transfer (id, from_account, to_account, amount_fen, kind, "
            "  year, budget_id, project_id, source_id, ref, note, request_key, reverses_id, "
            "  actor, created_at, prev_hash, hash) "
            "SELECT $1::bigint + x.ord, x.f, x.t, x.a, x.k, x.y, x.b, x.p, x.s, x.ref, x.note, "
            "  $2, x.rev, $3, $4::timestamptz, "
            "  decode(COALESCE(lag(x.h) OVER (ORDER BY x.ord), $5), 'hex'), decode(x.h, 'hex') "
            "FROM unnest($6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::smallint[], "
            "  $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], "
            "  $16::bigint[], $17::text[]) "
            "  WITH ORDINALITY AS x(f, t, a, k, y, b, p, s, ref, note, rev, h, ord) "
            "  RETURNING 1), "
            "mv AS (UPDATE account a SET balance_fen = x.b "
            "  FROM unnest($18::bigint[], $19::bigint[]) AS x(id, b) WHERE a.id = x.id "
            "  RETURNING 1) "
            "UPDATE ledger_head SET last_id = $20, last_hash = decode($21, 'hex') "
            "RETURNING (SELECT count(*) FROM ins) AS transfers, (SELECT count(*) FROM mv) AS moved",
            21, p, NULL, NULL);
    }
    if (!res) {
        bf_req_db_fail(r);
        goto cleanup;
    }
    if (PQntuples(res) != 1 || bf_db_int(res, 0, "transfers") != (int64_t)n ||
        bf_db_int(res, 0, "moved") != m) {
        bf_req_fail(r, BF_E_INTERNAL, field, "the ledger append did not write every row");
        goto cleanup;
    }
    head->last_id += (int64_t)n;
    memcpy(head->last_hash, prev, FUNDS_HASH_LEN);
    PQclear(res);
    res = NULL;
    rc = 0;
cleanup:
    if (res) PQclear(res);
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++) funds_arr_free(arrs[i]);
    free(d);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------------ reads */

static const char *s_entry_cols =
    "t.id, t.from_account, t.to_account, t.amount_fen, t.kind, t.year, t.budget_id, "
    "t.project_id, t.source_id, t.ref, t.note, t.request_key, t.reverses_id, t.actor, "
    "to_char(t.created_at AT TIME ZONE 'UTC', " S_TS_FMT ") AS created_at, "
    "(SELECT v.id FROM transfer v WHERE v.reverses_id = t.id) AS reversed_by";

static void s_kv_opt_int(msgpack_packer *pk, const PGresult *res, int row, const char *col)
{
    if (bf_db_null(res, row, col))
        bf_mp_kv_nil(pk, col);
    else
        bf_mp_kv_int(pk, col, bf_db_int(res, row, col));
}

/* Packs one transfer row selected with s_entry_cols; direction relative to
 * account (0 = none). */
static void s_pack_entry(msgpack_packer *pk, const PGresult *res, int row, int64_t account)
{
    msgpack_pack_map(pk, account ? 16 : 15);
    bf_mp_kv_int(pk, "id", bf_db_int(res, row, "id"));
    bf_mp_kv_int(pk, "from_account", bf_db_int(res, row, "from_account"));
    bf_mp_kv_int(pk, "to_account", bf_db_int(res, row, "to_account"));
    if (account)
        bf_mp_kv_str(pk, "direction",
                     bf_db_int(res, row, "to_account") == account ? "in" : "out");
    bf_mp_kv_int(pk, "amount_fen", bf_db_int(res, row, "amount_fen"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, row, "kind"));
    s_kv_opt_int(pk, res, row, "year");
    s_kv_opt_int(pk, res, row, "budget_id");
    s_kv_opt_int(pk, res, row, "project_id");
    s_kv_opt_int(pk, res, row, "source_id");
    bf_mp_kv_str(pk, "ref", bf_db_str(res, row, "ref"));
    bf_mp_kv_str(pk, "note", bf_db_str(res, row, "note"));
    s_kv_opt_int(pk, res, row, "reverses_id");
    s_kv_opt_int(pk, res, row, "reversed_by");
    bf_mp_kv_str(pk, "actor", bf_db_str(res, row, "actor"));
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, row, "created_at"));
}

/* account.get is one statement: the account's row and figures (computed once,
 * in a materialised CTE) with its page of entries joined on (no entries: one
 * row with the entry columns NULL); limit + 1 entries tell whether there is a
 * next page. $1 id or recipient, $2 before, $3 limit + 1. */
#define S_ACCOUNT_GET_SQL(where)                                                               \
    "WITH acc AS MATERIALIZED (SELECT a.id AS acc_id, a.kind AS acc_kind, a.ref AS acc_ref, "    \
    "  a.name AS acc_name, a.floor_fen, a.balance_fen, "                                         \
    "  (SELECT COALESCE(sum(amount_fen), 0) FROM transfer WHERE to_account = a.id) AS in_fen, "  \
    "  (SELECT COALESCE(sum(amount_fen), 0) FROM transfer WHERE from_account = a.id) "           \
    "    AS out_fen FROM account a WHERE " where ") "                                            \
    "SELECT acc.*, e.* FROM acc LEFT JOIN LATERAL (SELECT %s FROM ( "                            \
    "  SELECT * FROM (SELECT * FROM transfer WHERE from_account = acc.acc_id "                   \
    "    AND id < $2 ORDER BY id DESC LIMIT $3) o UNION ALL "                                    \
    "  SELECT * FROM (SELECT * FROM transfer WHERE to_account = acc.acc_id AND id < $2 "         \
    "    ORDER BY id DESC LIMIT $3) i) t ORDER BY t.id DESC LIMIT $3) e ON true "                \
    "ORDER BY e.id DESC"

int account_get(bf_req_t *r)
{
    int64_t id = 0, limit = 20, before = INT64_MAX;
    const char *recipient = NULL;
    if (funds_req_id(r, "id", false, &id) < 0) return -1;
    if (funds_req_recipient(r, r->params, NULL, "recipient", false, &recipient) < 0) return -1;
    if ((id != 0) == (recipient != NULL))
        return bf_req_fail(r, BF_E_INVALID, "id", "give exactly one of id and recipient");
    if (bf_req_int(r, r->params, NULL, "limit", false, BF_PAGE_MIN, BF_PAGE_MAX, &limit) < 0)
        return -1;
    if (bf_page_cursor(r, &before) < 0) return -1;
    const char *p[] = {id ? bf_req_itoa(r, id) : recipient, bf_req_itoa(r, before),
                       bf_req_itoa(r, limit + 1)};
    char *sql = bf_arena_printf(r->arena,
                                id ? S_ACCOUNT_GET_SQL("a.id = $1::bigint")
                                   : S_ACCOUNT_GET_SQL("a.kind = 'recipient' AND a.ref = $1"),
                                s_entry_cols);
    if (!sql) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, id ? "funds_account_get1" : "funds_account_get1_r", sql, 3,
                               p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (recipient)
            return bf_req_fail(r, BF_E_NOT_FOUND, "recipient",
                               "no money was ever paid to %s", recipient);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no account %lld", (long long)id);
    }
    id = bf_db_int(res, 0, "acc_id");
    int n = bf_db_null(res, 0, "id") ? 0 : PQntuples(res); /* entries on this page + 1 */
    int shown = n > limit ? (int)limit : n;
    msgpack_pack_map(r->out, 10);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "kind", bf_db_str(res, 0, "acc_kind"));
    bf_mp_kv_str(r->out, "ref", bf_db_str(res, 0, "acc_ref"));
    bf_mp_kv_str(r->out, "name", bf_db_str(res, 0, "acc_name"));
    s_kv_opt_int(r->out, res, 0, "floor_fen");
    bf_mp_kv_int(r->out, "balance_fen", bf_db_int(res, 0, "balance_fen"));
    bf_mp_kv_int(r->out, "in_fen", bf_db_int(res, 0, "in_fen"));
    bf_mp_kv_int(r->out, "out_fen", bf_db_int(res, 0, "out_fen"));
    bf_mp_key(r->out, "entries");
    msgpack_pack_array(r->out, (size_t)shown);
    for (int i = 0; i < shown; i++) s_pack_entry(r->out, res, i, id);
    bf_page_end(r, res, limit, "id"); /* a next page only when n > limit */
    PQclear(res);
    return 0;
}

int transfer_get(bf_req_t *r)
{
    int64_t id;
    if (funds_req_id(r, "id", true, &id) != 0) return -1;
    char *sql = bf_arena_printf(r->arena,
                                "SELECT %s, encode(t.prev_hash, 'hex') AS prev_hash, "
                                "encode(t.hash, 'hex') AS hash FROM transfer t WHERE t.id = $1",
                                s_entry_cols);
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "funds_transfer_get", sql, 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no transfer %lld", (long long)id);
    }
    /* the entry map plus request_key and the two hashes */
    msgpack_sbuffer tmp;
    msgpack_sbuffer_init(&tmp);
    msgpack_packer tpk;
    msgpack_packer_init(&tpk, &tmp, msgpack_sbuffer_write);
    s_pack_entry(&tpk, res, 0, 0);
    msgpack_pack_map(r->out, 18);
    msgpack_sbuffer_write(r->out->data, tmp.data + 1, tmp.size - 1); /* fixmap of 15 */
    msgpack_sbuffer_destroy(&tmp);
    bf_mp_kv_str(r->out, "request_key", bf_db_str(res, 0, "request_key"));
    bf_mp_kv_str(r->out, "prev_hash", bf_db_str(res, 0, "prev_hash"));
    bf_mp_kv_str(r->out, "hash", bf_db_str(res, 0, "hash"));
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ reverse */

int transfer_reverse(bf_req_t *r)
{
    int64_t id;
    const char *reason;
    if (funds_req_id(r, "transfer_id", true, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "reason", true, 500, &reason) != 0) return -1;
    if (!*reason) return bf_req_fail(r, BF_E_INVALID, "reason", "reason must not be empty");
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(
        r->db, "funds_reverse_read",
        "SELECT t.from_account, t.to_account, t.amount_fen, t.kind, t.year, t.budget_id, "
        "  t.project_id, t.source_id, t.ref, "
        "  (SELECT v.id FROM transfer v WHERE v.reverses_id = t.id) AS reversed_by "
        "FROM transfer t WHERE t.id = $1",
        1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "transfer_id", "no transfer %lld", (long long)id);
    }
    if (!strcmp(bf_db_str(res, 0, "kind"), "reversal")) {
        PQclear(res);
        return bf_req_fail(r, BF_E_PRECONDITION, "transfer_id",
                           "transfer %lld is a reversal; a reversal is not reversed (make a new "
                           "transfer instead)",
                           (long long)id);
    }
    if (!bf_db_null(res, 0, "reversed_by")) {
        int64_t by = bf_db_int(res, 0, "reversed_by");
        PQclear(res);
        return bf_req_fail(r, BF_E_PRECONDITION, "transfer_id",
                           "transfer %lld was already reversed by transfer %lld", (long long)id,
                           (long long)by);
    }
    funds_xfer_t x = {
        .from = bf_db_int(res, 0, "to_account"),
        .to = bf_db_int(res, 0, "from_account"),
        .amount = bf_db_int(res, 0, "amount_fen"),
        .kind = "reversal",
        .year = (int)bf_db_int(res, 0, "year"),
        .budget_id = bf_db_int(res, 0, "budget_id"),
        .project_id = bf_db_int(res, 0, "project_id"),
        .source_id = bf_db_int(res, 0, "source_id"),
        .reverses_id = id,
        .note = reason,
    };
    const char *orig_kind = bf_arena_strndup(r->arena, bf_db_str(res, 0, "kind"),
                                             strlen(bf_db_str(res, 0, "kind")));
    const char *ref = bf_db_str(res, 0, "ref");
    x.ref = ref ? bf_arena_strndup(r->arena, ref, strlen(ref)) : NULL;
    PQclear(res);
    if (funds_ledger_append(r, &head, &x, 1, idem.key, "transfer_id") != 0) return -1;

    /* what the reversed transfer paid for goes back a state */
    res = bf_db_prep(r->db, "funds_reverse_tranche",
                     "UPDATE tranche SET state = 'reversed' WHERE transfer_id = $1 RETURNING id",
                     1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t tranche_id = PQntuples(res) ? bf_db_int(res, 0, "id") : 0;
    PQclear(res);
    res = bf_db_prep(r->db, "funds_reverse_line",
                     "UPDATE batch_line SET state = 'reversed' WHERE transfer_id = $1", 1, p,
                     NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);

    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 8);
    bf_mp_kv_int(pk, "transfer_id", x.id);
    bf_mp_kv_int(pk, "reverses_id", id);
    bf_mp_kv_str(pk, "reversed_kind", orig_kind);
    bf_mp_kv_int(pk, "from_account", x.from);
    bf_mp_kv_int(pk, "to_account", x.to);
    bf_mp_kv_int(pk, "amount_fen", x.amount);
    bf_mp_kv_str(pk, "reason", reason);
    if (tranche_id)
        bf_mp_kv_int(pk, "tranche_id", tranche_id);
    else
        bf_mp_kv_nil(pk, "tranche_id");
    if (funds_emit(r, &ev, "transfer.reversed",
                   bf_arena_printf(r->arena, "transfer/%lld", (long long)x.id)) != 0)
        return -1;
    int64_t from_bal, to_bal;
    if (funds_account_balance(r, x.from, &from_bal) != 0) return -1;
    if (funds_account_balance(r, x.to, &to_bal) != 0) return -1;
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_int(r->out, "transfer_id", x.id);
    bf_mp_kv_int(r->out, "reverses_id", id);
    bf_mp_kv_int(r->out, "amount_fen", x.amount);
    bf_mp_kv_int(r->out, "from_account", x.from);
    bf_mp_kv_int(r->out, "to_account", x.to);
    bf_mp_kv_int(r->out, "from_balance_fen", from_bal);
    bf_mp_kv_int(r->out, "to_balance_fen", to_bal);
    return funds_idem_commit(r, &idem);
}

/* ------------------------------------------------------------ verify */

int ledger_verify(bf_req_t *r)
{
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (bf_db_cmd(r->db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") != 0)
        return bf_req_db_fail(r);
    PGresult *res = bf_db_prep(r->db, "funds_verify_head",
                               "SELECT last_id, encode(last_hash, 'hex') AS last_hash "
                               "FROM ledger_head",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    unsigned char head_hash[FUNDS_HASH_LEN];
    if (PQntuples(res) != 1 ||
        funds_unhex(bf_db_str(res, 0, "last_hash"), head_hash, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the ledger head is missing or damaged");
    }
    int64_t head_id = bf_db_int(res, 0, "last_id");
    PQclear(res);

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    unsigned char running[FUNDS_HASH_LEN] = {0};
    int64_t last = 0, bad_id = 0;
    const char *problem = NULL, *message = NULL;
    char *sql = bf_arena_printf(
        r->arena,
        "SELECT id, from_account, to_account, amount_fen, kind, year, budget_id, project_id, "
        "  source_id, ref, note, request_key, reverses_id, actor, "
        "  to_char(created_at AT TIME ZONE 'UTC', %s) AS created_at, "
        "  encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash "
        "FROM transfer WHERE id > $1 ORDER BY id LIMIT %d",
        S_TS_FMT, S_VERIFY_PAGE);
    static const char *const cols[FUNDS_HASH_FIELDS] = {
        "id", "from_account", "to_account", "amount_fen", "kind", "year", "budget_id",
        "project_id", "source_id", "ref", "note", "request_key", "reverses_id", "actor",
        "created_at"};
    funds_chain_walk_t w = {
        .tag = s_tag, .what = "entry", .cols = cols, .ncols = FUNDS_HASH_FIELDS};
    while (!w.problem) {
        const char *p[] = {bf_req_itoa(r, w.last)};
        res = bf_db_prep(r->db, "funds_verify_page", sql, 1, p, NULL, NULL);
        if (!res) {
            EVP_MD_CTX_free(ctx);
            return bf_req_db_fail(r);
        }
        int n = PQntuples(res);
        funds_chain_walk(r, ctx, &w, res);
        PQclear(res);
        if (n < S_VERIFY_PAGE) break;
    }
    EVP_MD_CTX_free(ctx);
    last = w.last;
    memcpy(running, w.running, FUNDS_HASH_LEN);
    bad_id = w.bad_id;
    problem = w.problem;
    message = w.message;
    if (!problem && (last != head_id || memcmp(running, head_hash, FUNDS_HASH_LEN) != 0)) {
        bad_id = last < head_id ? last + 1 : head_id;
        problem = "head_mismatch";
        message = last < head_id ? "entries after this one are missing (the head is further on)"
                                 : "the ledger head does not point at the last entry";
    }

    /* books: cached balances against the ledger, floors, holds, and the total */
    PGresult *bad = bf_db_prep(
        r->db, "funds_verify_accounts",
        "SELECT a.id, a.name, a.floor_fen, a.balance_fen, a.held_fen, "
        "  COALESCE(i.s, 0) - COALESCE(o.s, 0) AS ledger_fen, COALESCE(h.s, 0) AS hold_fen "
        "FROM account a "
        "LEFT JOIN (SELECT to_account AS id, sum(amount_fen) AS s FROM transfer GROUP BY 1) i "
        "  ON i.id = a.id "
        "LEFT JOIN (SELECT from_account AS id, sum(amount_fen) AS s FROM transfer GROUP BY 1) o "
        "  ON o.id = a.id "
        "LEFT JOIN (SELECT budget_id AS id, sum(total_fen - applied_fen) AS s FROM allocation "
        "           WHERE state = 'running' GROUP BY 1) h ON h.id = a.id "
        "WHERE a.balance_fen <> COALESCE(i.s, 0) - COALESCE(o.s, 0) "
        "   OR a.held_fen <> COALESCE(h.s, 0) "
        "   OR (a.floor_fen IS NOT NULL AND "
        "       COALESCE(i.s, 0) - COALESCE(o.s, 0) - a.held_fen < a.floor_fen) "
        "ORDER BY a.id LIMIT 100",
        0, NULL, NULL, NULL);
    if (!bad) return bf_req_db_fail(r);
    PGresult *tot = bf_db_prep(r->db, "funds_verify_total",
                               "SELECT count(*) AS accounts, COALESCE(sum(balance_fen), 0) AS sum, "
                               "  (SELECT to_char(created_at AT TIME ZONE 'UTC', " S_TS_FMT ") "
                               "   FROM transfer t WHERE t.id = (SELECT last_id FROM ledger_head)) "
                               "  AS head_time "
                               "FROM account",
                               0, NULL, NULL, NULL);
    if (!tot) {
        PQclear(bad);
        return bf_req_db_fail(r);
    }
    funds_ev_result_t ev;
    if (funds_evidence_verify(r, &ev) != 0) {
        PQclear(tot);
        PQclear(bad);
        return -1;
    }
    int nbad = PQntuples(bad), ndiff = PQntuples(ev.diffs);
    const char *sum = bf_db_str(tot, 0, "sum");
    bool sum_zero = sum && strcmp(sum, "0") == 0;
    bool books_ok = nbad == 0 && sum_zero;
    bool evidence_ok = !ev.problem && ndiff == 0;
    char hx[2 * FUNDS_HASH_LEN + 1], published[2 * FUNDS_HASH_LEN + 1];
    funds_hex(head_hash, FUNDS_HASH_LEN, hx);
    funds_head_hash(head_id, hx, ev.head_id, ev.head_hash, published);
    msgpack_pack_map(r->out, 17);
    bf_mp_kv_bool(r->out, "ok", !problem && books_ok && evidence_ok);
    bf_mp_kv_int(r->out, "entries", last);
    bf_mp_kv_int(r->out, "head_id", head_id);
    bf_mp_kv_str(r->out, "head_hash", hx);
    bf_mp_kv_str(r->out, "head_time", bf_db_str(tot, 0, "head_time"));
    bf_mp_key(r->out, "first_bad");
    if (problem) {
        msgpack_pack_map(r->out, 3);
        bf_mp_kv_int(r->out, "id", bad_id);
        bf_mp_kv_str(r->out, "problem", problem);
        bf_mp_kv_str(r->out, "message", message);
    } else {
        msgpack_pack_nil(r->out);
    }
    bf_mp_kv_bool(r->out, "books_ok", books_ok);
    bf_mp_kv_int(r->out, "accounts", bf_db_int(tot, 0, "accounts"));
    bf_mp_kv_int(r->out, "balance_sum_fen", bf_db_int(tot, 0, "sum"));
    bf_mp_key(r->out, "bad_accounts");
    msgpack_pack_array(r->out, (size_t)nbad);
    for (int i = 0; i < nbad; i++) {
        msgpack_pack_map(r->out, 7);
        bf_mp_kv_int(r->out, "id", bf_db_int(bad, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(bad, i, "name"));
        s_kv_opt_int(r->out, bad, i, "floor_fen");
        bf_mp_kv_int(r->out, "balance_fen", bf_db_int(bad, i, "balance_fen"));
        bf_mp_kv_int(r->out, "ledger_fen", bf_db_int(bad, i, "ledger_fen"));
        bf_mp_kv_int(r->out, "held_fen", bf_db_int(bad, i, "held_fen"));
        bf_mp_kv_int(r->out, "hold_fen", bf_db_int(bad, i, "hold_fen"));
    }
    bf_mp_kv_bool(r->out, "evidence_ok", evidence_ok);
    bf_mp_kv_int(r->out, "evidence_entries", ev.entries);
    bf_mp_kv_int(r->out, "evidence_head_id", ev.head_id);
    bf_mp_kv_str(r->out, "evidence_head_hash", ev.head_hash);
    bf_mp_key(r->out, "evidence_first_bad");
    if (ev.problem) {
        msgpack_pack_map(r->out, 3);
        bf_mp_kv_int(r->out, "id", ev.bad_id);
        bf_mp_kv_str(r->out, "problem", ev.problem);
        bf_mp_kv_str(r->out, "message", ev.message);
    } else {
        msgpack_pack_nil(r->out);
    }
    bf_mp_key(r->out, "differences");
    funds_evidence_pack_diffs(r->out, ev.diffs);
    bf_mp_kv_str(r->out, "published_hash", published);
    PQclear(ev.diffs);
    PQclear(tot);
    PQclear(bad);
    bf_db_rollback(r->db);
    return 0;
}
