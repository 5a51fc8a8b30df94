/* points.c: the points supermarket (爱心超市, seed 004; docs/funds.md,
 * "Points supermarket").
 *
 * Households earn points for behaviours their village has set a value on
 * (points.rule.define): a village operator proposes an earning (points.earn)
 * and someone else approves it (points.approve, four eyes) before the points
 * are credited. Goods donated by helper units and the public are stocked on
 * the village supermarket's shelf (goods.stock_in) and handed out for points
 * (points.redeem).
 *
 * Points are not money and never touch the money ledger: they live in their
 * own accounts (points_account) and their own append-only ledger
 * (points_entry), hash-chained like the money ledger (the same netstring
 * hash, tag "bangfu.funds.points.v1") with its own head (points_head). Each
 * entry moves a positive amount of one asset between two accounts of that
 * asset: points (household <-> supermarket) or a count of one goods
 * (donated -> shelf -> handed_out). s_append() is the only code that writes
 * entries and changes cached balances; it runs under the locked points head,
 * so appends are serialised and a household's balance or a shelf's stock is
 * checked against its floor (0) as committed by everyone before: concurrent
 * redemptions never take more than there is. Corrections are reversal
 * entries (points.reverse); nothing is updated or deleted (triggers).
 *
 * Lock order: the request key row, then the points head, then the earning
 * row. Points transactions never lock the money ledger head.
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

#define S_PT_FIELDS 16
#define S_VERIFY_PAGE 5000
#define S_TS_FMT "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
#define S_MAX_POINTS 100000      /* a rule's value */
#define S_MAX_PRICE 1000000      /* a goods' price in points */
#define S_MAX_STOCK_IN 1000000   /* units stocked at once */
#define S_MAX_REDEEM 10000       /* units redeemed at once */

static const char s_tag[] = "bangfu.funds.points.v1";

typedef struct {
    int64_t last_id;
    unsigned char last_hash[FUNDS_HASH_LEN];
    char now[40];
} s_head_t;

/* One entry to append. 0 / NULL = none for the optional fields. */
typedef struct {
    int64_t from, to, amount;
    const char *kind; /* earn redeem stock_in reversal */
    const char *region;
    int64_t household_id, goods_id, earning_id, redemption_id, reverses_id;
    const char *donor, *note;
    const char *field; /* named by a floor violation */
    int64_t id;        /* out */
    int64_t from_balance, to_balance; /* out: after the entry */
} s_entry_t;

/* ------------------------------------------------------------ helpers */

static int s_req_region(bf_req_t *r, const char *key, bool required, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, key, required, 12, out);
    if (rc != 0) return rc;
    if (bf_division_check(*out, strlen(*out)) != 0)
        return bf_req_fail(r, BF_E_INVALID, key,
                           "%s must be a 12-digit statistical division code", key);
    return 0;
}

static int s_req_text(bf_req_t *r, const char *key, bool required, size_t max, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, key, required, max, out);
    if (rc == 0 && !**out) return bf_req_fail(r, BF_E_INVALID, key, "%s must not be empty", key);
    return rc;
}

/* A positive count (points, quantity): an integer in [1, max]. */
static int s_req_count(bf_req_t *r, const char *key, int64_t max, int64_t *out)
{
    const msgpack_object *o = bf_mp_get(r->params, key);
    if (o && (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64))
        return bf_req_fail(r, BF_E_INVALID, key, "%s must be an integer, not a float", key);
    if (bf_req_int(r, r->params, NULL, key, true, 1, max, out) != 0) {
        if (r->err.code && !strcmp(r->err.code, BF_E_INVALID) && o &&
            (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
             o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER))
            return bf_req_fail(r, BF_E_INVALID, key, "%s must be 1..%lld", key, (long long)max);
        return -1;
    }
    return 0;
}

static void s_kv_opt(msgpack_packer *pk, const PGresult *res, int row, const char *col)
{
    if (bf_db_null(res, row, col))
        bf_mp_kv_nil(pk, col);
    else
        bf_mp_kv_int(pk, col, bf_db_int(res, row, col));
}

static const char *s_dup(bf_req_t *r, const char *s)
{
    return s ? bf_arena_strndup(r->arena, s, strlen(s)) : NULL;
}

static int s_lock(bf_req_t *r, s_head_t *head)
{
    PGresult *res = bf_db_prep(r->db, "points_head_lock",
                               "SELECT last_id, encode(last_hash, 'hex') AS last_hash "
                               "FROM points_head FOR UPDATE",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1 ||
        funds_unhex(bf_db_str(res, 0, "last_hash"), head->last_hash, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the points head is missing or damaged");
    }
    head->last_id = bf_db_int(res, 0, "last_id");
    PQclear(res);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(head->now, sizeof head->now, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000L);
    return 0;
}

/* The region's supermarket account (created on first use). */
static int s_supermarket(bf_req_t *r, const char *region, int64_t *id)
{
    const char *p[] = {region};
    PGresult *res = bf_db_prep(r->db, "points_supermarket_ensure",
                               "INSERT INTO points_account (kind, region, name) "
                               "VALUES ('supermarket', $1::text, '爱心超市 ' || $1::text) "
                               "ON CONFLICT (region) WHERE kind = 'supermarket' DO NOTHING",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    res = bf_db_prep(r->db, "points_supermarket_get",
                     "SELECT id FROM points_account WHERE kind = 'supermarket' AND region = $1",
                     1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the supermarket account is missing");
    }
    *id = bf_db_int(res, 0, "id");
    PQclear(res);
    return 0;
}

/* A household's points account: *id 0 if it has none (and !create). A
 * household's points belong to one village: another region is
 * failed_precondition household_id. */
static int s_household(bf_req_t *r, int64_t household_id, const char *region, bool create,
                       int64_t *id)
{
    const char *p[] = {bf_req_itoa(r, household_id)};
    PGresult *res = bf_db_prep(r->db, "points_household_get",
                               "SELECT id, region FROM points_account "
                               "WHERE kind = 'household' AND household_id = $1",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 1) {
        if (region && strcmp(bf_db_str(res, 0, "region"), region) != 0) {
            const char *had = s_dup(r, bf_db_str(res, 0, "region"));
            PQclear(res);
            return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                               "household %lld's points account is in %s, not %s",
                               (long long)household_id, had, region);
        }
        *id = bf_db_int(res, 0, "id");
        PQclear(res);
        return 0;
    }
    PQclear(res);
    *id = 0;
    if (!create) return 0;
    const char *q[] = {region, bf_req_itoa(r, household_id)};
    res = bf_db_prep(r->db, "points_household_create",
                     "INSERT INTO points_account (kind, region, household_id, name, floor) "
                     "VALUES ('household', $1::text, $2::bigint, 'household:' || $2::text, 0) RETURNING id",
                     2, q, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *id = bf_db_int(res, 0, "id");
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ the chain */

static void s_hash(EVP_MD_CTX *ctx, const unsigned char prev[FUNDS_HASH_LEN],
                   const char *const f[S_PT_FIELDS], unsigned char out[FUNDS_HASH_LEN])
{
    funds_chain_hash(ctx, s_tag, prev, f, S_PT_FIELDS, out);
}

static const char *s_opt(bf_req_t *r, int64_t v)
{
    return v ? bf_req_itoa(r, v) : NULL;
}

/* Appends n entries in order: checks each account's floor and overflow,
 * writes the entry with its hash, moves the cached balances, advances the
 * head. Returns 0 or -1 (failed_precondition naming e->field on a floor). */
static int s_append(bf_req_t *r, s_head_t *head, s_entry_t *e, size_t n, const char *key)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        const char *ap[] = {bf_req_itoa(r, e[i].from), bf_req_itoa(r, e[i].to)};
        PGresult *res = bf_db_prep(r->db, "points_accounts_read",
                                   "SELECT id, kind, name, floor, balance, goods_id "
                                   "FROM points_account WHERE id IN ($1, $2) ORDER BY id",
                                   2, ap, NULL, NULL);
        if (!res) {
            bf_req_db_fail(r);
            goto out;
        }
        if (PQntuples(res) != 2) {
            PQclear(res);
            bf_req_fail(r, BF_E_INTERNAL, e[i].field, "an account of this entry does not exist");
            goto out;
        }
        int fr = bf_db_int(res, 0, "id") == e[i].from ? 0 : 1, tr = 1 - fr;
        if (bf_db_null(res, 0, "goods_id") != bf_db_null(res, 1, "goods_id") ||
            bf_db_int(res, 0, "goods_id") != bf_db_int(res, 1, "goods_id")) {
            PQclear(res);
            bf_req_fail(r, BF_E_INTERNAL, e[i].field, "an entry between different assets");
            goto out;
        }
        int64_t fb = bf_db_int(res, fr, "balance"), tb = bf_db_int(res, tr, "balance"), nf, nt;
        if (bf_money_sub(fb, e[i].amount, &nf) != 0 || bf_money_add(tb, e[i].amount, &nt) != 0) {
            PQclear(res);
            bf_req_fail(r, BF_E_INVALID, e[i].field, "%s: a balance would overflow 64 bits",
                        e[i].field);
            goto out;
        }
        if (!bf_db_null(res, fr, "floor") && nf < bf_db_int(res, fr, "floor")) {
            bool goods = !strcmp(bf_db_str(res, fr, "kind"), "shelf");
            bf_req_fail(r, BF_E_PRECONDITION, e[i].field,
                        goods ? "insufficient stock: %s has %lld on hand, %lld needed"
                              : "insufficient points: %s has %lld points, %lld needed",
                        bf_db_str(res, fr, "name"), (long long)fb, (long long)e[i].amount);
            PQclear(res);
            goto out;
        }
        PQclear(res);

        char prev_hex[2 * FUNDS_HASH_LEN + 1], hx[2 * FUNDS_HASH_LEN + 1];
        funds_hex(head->last_hash, FUNDS_HASH_LEN, prev_hex);
        e[i].id = head->last_id + 1;
        const char *f[S_PT_FIELDS] = {
            bf_req_itoa(r, e[i].id), bf_req_itoa(r, e[i].from), bf_req_itoa(r, e[i].to),
            bf_req_itoa(r, e[i].amount), e[i].kind, e[i].region, s_opt(r, e[i].household_id),
            s_opt(r, e[i].goods_id), s_opt(r, e[i].earning_id), s_opt(r, e[i].redemption_id),
            e[i].donor, e[i].note, key, s_opt(r, e[i].reverses_id), r->actor, head->now};
        unsigned char h[FUNDS_HASH_LEN];
        s_hash(ctx, head->last_hash, f, h);
        funds_hex(h, FUNDS_HASH_LEN, hx);
        const char *ip[] = {f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9],
                            f[10], f[11], f[12], f[13], f[14], f[15], prev_hex, hx};
        res = bf_db_prep(r->db, "points_entry_insert",
                         "INSERT INTO points_entry (id, from_account, to_account, amount, kind, "
                         "  region, household_id, goods_id, earning_id, redemption_id, donor, "
                         "  note, request_key, reverses_id, actor, created_at, prev_hash, hash) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
                         "  $15, $16::timestamptz, decode($17, 'hex'), decode($18, 'hex'))",
                         18, ip, NULL, NULL);
        if (!res) {
            bf_req_db_fail(r);
            goto out;
        }
        PQclear(res);
        const char *bp[] = {f[1], bf_req_itoa(r, nf), f[2], bf_req_itoa(r, nt), f[0], hx};
        res = bf_db_prep(r->db, "points_move",
                         "WITH a AS (UPDATE points_account SET balance = $2 WHERE id = $1), "
                         "  b AS (UPDATE points_account SET balance = $4 WHERE id = $3) "
                         "UPDATE points_head SET last_id = $5, last_hash = decode($6, 'hex')",
                         6, bp, NULL, NULL);
        if (!res) {
            bf_req_db_fail(r);
            goto out;
        }
        PQclear(res);
        head->last_id = e[i].id;
        memcpy(head->last_hash, h, FUNDS_HASH_LEN);
        e[i].from_balance = nf;
        e[i].to_balance = nt;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* Packs one entry as seen from account `self` (amount signed: + in, - out;
 * self 0: unsigned, with from_account and to_account). */
static void s_pack_entry(msgpack_packer *pk, const PGresult *res, int i, int64_t self)
{
    int64_t amount = bf_db_int(res, i, "amount");
    msgpack_pack_map(pk, self ? 12 : 14);
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "kind"));
    if (self) {
        bf_mp_kv_int(pk, "amount", bf_db_int(res, i, "to_account") == self ? amount : -amount);
    } else {
        bf_mp_kv_int(pk, "from_account", bf_db_int(res, i, "from_account"));
        bf_mp_kv_int(pk, "to_account", bf_db_int(res, i, "to_account"));
        bf_mp_kv_int(pk, "amount", amount);
    }
    s_kv_opt(pk, res, i, "goods_id");
    s_kv_opt(pk, res, i, "earning_id");
    s_kv_opt(pk, res, i, "redemption_id");
    s_kv_opt(pk, res, i, "reverses_id");
    s_kv_opt(pk, res, i, "reversed_by");
    bf_mp_kv_str(pk, "donor", bf_db_str(res, i, "donor"));
    bf_mp_kv_str(pk, "note", bf_db_str(res, i, "note"));
    bf_mp_kv_str(pk, "actor", bf_db_str(res, i, "actor"));
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, i, "created_at"));
}

#define S_ENTRY_COLS                                                                       \
    "e.id, e.kind, e.from_account, e.to_account, e.amount, e.goods_id, e.earning_id, "     \
    "e.redemption_id, e.reverses_id, "                                                     \
    "(SELECT v.id FROM points_entry v WHERE v.reverses_id = e.id) AS reversed_by, "        \
    "e.donor, e.note, e.actor, to_char(e.created_at AT TIME ZONE 'UTC', " S_TS_FMT         \
    ") AS created_at"

/* ------------------------------------------------------------ rules */

int points_rule_define(bf_req_t *r)
{
    const char *region, *code, *name;
    int64_t points;
    if (s_req_region(r, "region", true, &region) != 0) return -1;
    if (s_req_text(r, "code", true, 32, &code) != 0) return -1;
    if (s_req_text(r, "name", true, 200, &name) != 0) return -1;
    if (s_req_count(r, "points", S_MAX_POINTS, &points) != 0) return -1;
    if (funds_scope_location(r, region, true, "region", "region", 0) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    const char *p[] = {region, code, name, bf_req_itoa(r, points), r->actor};
    PGresult *res = bf_db_prep(r->db, "points_rule_exists",
                               "SELECT id, name, points FROM points_rule "
                               "WHERE region = $1 AND code = $2",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res)) {
        int64_t id = bf_db_int(res, 0, "id");
        PQclear(res);
        return bf_req_fail(r, BF_E_EXISTS, "code",
                           "region %s already has rule %s (id %lld); a rule never changes: "
                           "define a new code",
                           region, code, (long long)id);
    }
    PQclear(res);
    res = bf_db_prep(r->db, "points_rule_insert",
                     "INSERT INTO points_rule (region, code, name, points, created_by) "
                     "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                     5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    int64_t sm;
    if (s_supermarket(r, region, &sm) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_str(pk, "code", code);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_int(pk, "points", points);
    if (funds_emit(r, &ev, "points.rule_defined",
                   bf_arena_printf(r->arena, "points_rule/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "region", region);
    bf_mp_kv_str(r->out, "code", code);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_int(r->out, "points", points);
    return funds_idem_commit(r, &idem);
}

int points_rule_list(bf_req_t *r)
{
    const char *region;
    if (s_req_region(r, "region", true, &region) != 0) return -1;
    if (r->region && *r->region && !bf_req_in_region(r, region))
        return bf_req_fail(r, BF_E_NOT_FOUND, "region", "no region %s in the caller's region",
                           region);
    const char *p[] = {region};
    PGresult *res = bf_db_prep(r->db, "points_rule_list",
                               "SELECT id, code, name, points, created_by FROM points_rule "
                               "WHERE region = $1 ORDER BY code LIMIT 1000",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_str(r->out, "region", region);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(r->out, 5);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "code", bf_db_str(res, i, "code"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_int(r->out, "points", bf_db_int(res, i, "points"));
        bf_mp_kv_str(r->out, "created_by", bf_db_str(res, i, "created_by"));
    }
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ earnings */

int points_earn(bf_req_t *r)
{
    const char *region, *code, *note = NULL;
    int64_t household_id;
    if (s_req_region(r, "region", true, &region) != 0) return -1;
    if (funds_req_id(r, "household_id", true, &household_id) != 0) return -1;
    if (s_req_text(r, "rule_code", true, 32, &code) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    if (funds_scope_location(r, region, true, "region", "region", 0) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    const char *p[] = {region, code};
    PGresult *res = bf_db_prep(r->db, "points_rule_get",
                               "SELECT id, name, points FROM points_rule "
                               "WHERE region = $1 AND code = $2",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "rule_code", "region %s has no rule %s", region,
                           code);
    }
    int64_t rule_id = bf_db_int(res, 0, "id"), points = bf_db_int(res, 0, "points");
    const char *rule_name = s_dup(r, bf_db_str(res, 0, "name"));
    PQclear(res);
    int64_t acct;
    if (s_household(r, household_id, region, false, &acct) != 0) return -1;
    const char *ip[] = {region, bf_req_itoa(r, household_id), bf_req_itoa(r, rule_id),
                        bf_req_itoa(r, points), note, r->actor};
    res = bf_db_prep(r->db, "points_earning_insert",
                     "INSERT INTO points_earning (region, household_id, rule_id, points, note, "
                     "  proposed_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                     6, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "earning_id", id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_int(pk, "household_id", household_id);
    bf_mp_kv_str(pk, "rule_code", code);
    bf_mp_kv_int(pk, "points", points);
    bf_mp_kv_str(pk, "note", note);
    if (funds_emit(r, &ev, "points.proposed",
                   bf_arena_printf(r->arena, "points_earning/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 8);
    bf_mp_kv_int(r->out, "earning_id", id);
    bf_mp_kv_str(r->out, "state", "proposed");
    bf_mp_kv_str(r->out, "region", region);
    bf_mp_kv_int(r->out, "household_id", household_id);
    bf_mp_kv_str(r->out, "rule_code", code);
    bf_mp_kv_str(r->out, "rule_name", rule_name);
    bf_mp_kv_int(r->out, "points", points);
    bf_mp_kv_str(r->out, "proposed_by", r->actor);
    return funds_idem_commit(r, &idem);
}

/* Reads and locks a proposed earning for a decision by r->actor. Returns the
 * row (PQclear it) or NULL with r->err set. */
static PGresult *s_earning_for_decision(bf_req_t *r, int64_t id)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "points_earning_lock",
                               "SELECT e.id, e.region, e.household_id, e.points, e.state, "
                               "  e.proposed_by, u.code AS rule_code, u.name AS rule_name "
                               "FROM points_earning e JOIN points_rule u ON u.id = e.rule_id "
                               "WHERE e.id = $1 FOR UPDATE OF e",
                               1, p, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return NULL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_req_fail(r, BF_E_NOT_FOUND, "earning_id", "no earning %lld", (long long)id);
        return NULL;
    }
    if (funds_scope_location(r, bf_db_str(res, 0, "region"), true, "earning_id", "earning",
                             id) != 0) {
        PQclear(res);
        return NULL;
    }
    if (!strcmp(bf_db_str(res, 0, "proposed_by"), r->actor)) {
        bf_req_fail(r, BF_E_PERMISSION, "actor",
                    "an earning is decided by someone other than its proposer (%s)",
                    bf_db_str(res, 0, "proposed_by"));
        PQclear(res);
        return NULL;
    }
    if (strcmp(bf_db_str(res, 0, "state"), "proposed") != 0) {
        bf_req_fail(r, BF_E_PRECONDITION, "earning_id",
                    "earning %lld is %s; only a proposed earning is decided", (long long)id,
                    bf_db_str(res, 0, "state"));
        PQclear(res);
        return NULL;
    }
    return res;
}

int points_approve(bf_req_t *r)
{
    int64_t id;
    const char *note = NULL;
    if (funds_req_id(r, "earning_id", true, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    s_head_t head;
    if (s_lock(r, &head) != 0) return -1;
    PGresult *res = s_earning_for_decision(r, id);
    if (!res) return -1;
    const char *region = s_dup(r, bf_db_str(res, 0, "region"));
    const char *rule_name = s_dup(r, bf_db_str(res, 0, "rule_name"));
    const char *rule_code = s_dup(r, bf_db_str(res, 0, "rule_code"));
    int64_t household_id = bf_db_int(res, 0, "household_id"),
            points = bf_db_int(res, 0, "points");
    PQclear(res);
    int64_t acct, sm;
    if (s_household(r, household_id, region, true, &acct) != 0) return -1;
    if (s_supermarket(r, region, &sm) != 0) return -1;
    s_entry_t e = {.from = sm, .to = acct, .amount = points, .kind = "earn", .region = region,
                   .household_id = household_id, .earning_id = id,
                   .note = note ? note : rule_name, .field = "earning_id"};
    if (s_append(r, &head, &e, 1, idem.key) != 0) return -1;
    const char *up[] = {bf_req_itoa(r, id), r->actor, note, bf_req_itoa(r, e.id)};
    res = bf_db_prep(r->db, "points_earning_approve",
                     "UPDATE points_earning SET state = 'approved', decided_by = $2, "
                     "  decided_at = now(), decision_note = $3, entry_id = $4 WHERE id = $1",
                     4, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 8);
    bf_mp_kv_int(pk, "earning_id", id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_int(pk, "household_id", household_id);
    bf_mp_kv_str(pk, "rule_code", rule_code);
    bf_mp_kv_int(pk, "points", points);
    bf_mp_kv_int(pk, "entry_id", e.id);
    bf_mp_kv_int(pk, "balance", e.to_balance);
    bf_mp_kv_str(pk, "approved_by", r->actor);
    if (funds_emit(r, &ev, "points.approved",
                   bf_arena_printf(r->arena, "points_earning/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_int(r->out, "earning_id", id);
    bf_mp_kv_str(r->out, "state", "approved");
    bf_mp_kv_int(r->out, "household_id", household_id);
    bf_mp_kv_int(r->out, "points", points);
    bf_mp_kv_int(r->out, "entry_id", e.id);
    bf_mp_kv_int(r->out, "balance", e.to_balance);
    bf_mp_kv_str(r->out, "approved_by", r->actor);
    return funds_idem_commit(r, &idem);
}

int points_reject(bf_req_t *r)
{
    int64_t id;
    const char *reason;
    if (funds_req_id(r, "earning_id", true, &id) != 0) return -1;
    if (s_req_text(r, "reason", true, 500, &reason) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    PGresult *res = s_earning_for_decision(r, id);
    if (!res) return -1;
    int64_t household_id = bf_db_int(res, 0, "household_id");
    const char *region = s_dup(r, bf_db_str(res, 0, "region"));
    PQclear(res);
    const char *up[] = {bf_req_itoa(r, id), r->actor, reason};
    res = bf_db_prep(r->db, "points_earning_reject",
                     "UPDATE points_earning SET state = 'rejected', decided_by = $2, "
                     "  decided_at = now(), decision_note = $3 WHERE id = $1",
                     3, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "earning_id", id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_int(pk, "household_id", household_id);
    bf_mp_kv_str(pk, "reason", reason);
    bf_mp_kv_str(pk, "rejected_by", r->actor);
    if (funds_emit(r, &ev, "points.rejected",
                   bf_arena_printf(r->arena, "points_earning/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_int(r->out, "earning_id", id);
    bf_mp_kv_str(r->out, "state", "rejected");
    bf_mp_kv_str(r->out, "rejected_by", r->actor);
    bf_mp_kv_str(r->out, "reason", reason);
    return funds_idem_commit(r, &idem);
}

/* ------------------------------------------------------------ goods */

int goods_define(bf_req_t *r)
{
    const char *region, *name, *unit;
    int64_t price;
    if (s_req_region(r, "region", true, &region) != 0) return -1;
    if (s_req_text(r, "name", true, 200, &name) != 0) return -1;
    if (s_req_text(r, "unit", true, 16, &unit) != 0) return -1;
    if (s_req_count(r, "price_points", S_MAX_PRICE, &price) != 0) return -1;
    if (funds_scope_location(r, region, true, "region", "region", 0) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    const char *p[] = {region, name, unit, bf_req_itoa(r, price), r->actor};
    PGresult *res = bf_db_prep(r->db, "points_goods_exists",
                               "SELECT id FROM goods WHERE region = $1 AND name = $2", 2, p,
                               NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res)) {
        int64_t id = bf_db_int(res, 0, "id");
        PQclear(res);
        return bf_req_fail(r, BF_E_EXISTS, "name", "region %s already has goods %s (id %lld)",
                           region, name, (long long)id);
    }
    PQclear(res);
    res = bf_db_prep(r->db, "points_goods_insert",
                     "WITH g AS (INSERT INTO goods (region, name, unit, price_points, created_by) "
                     "  VALUES ($1::text, $2::text, $3, $4, $5) RETURNING id), "
                     "a AS (INSERT INTO points_account (kind, region, goods_id, name, floor) "
                     "  SELECT k, $1::text, g.id, $2::text || ' (' || k || ')', "
                     "    CASE WHEN k = 'shelf' THEN 0 END "
                     "  FROM g, unnest(ARRAY['shelf','donated','handed_out']) k) "
                     "SELECT id FROM g",
                     5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    int64_t sm;
    if (s_supermarket(r, region, &sm) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "unit", unit);
    bf_mp_kv_int(pk, "price_points", price);
    if (funds_emit(r, &ev, "goods.defined",
                   bf_arena_printf(r->arena, "goods/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "region", region);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "unit", unit);
    bf_mp_kv_int(r->out, "price_points", price);
    bf_mp_kv_int(r->out, "stock", 0);
    return funds_idem_commit(r, &idem);
}

/* A goods and its three accounts. Returns the row (PQclear it) or NULL with
 * r->err set (not_found / out of scope naming field). */
static PGresult *s_goods(bf_req_t *r, int64_t id, bool write, const char *field)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(
        r->db, "points_goods_get",
        "SELECT g.id, g.region, g.name, g.unit, g.price_points, "
        "  (SELECT id FROM points_account WHERE goods_id = g.id AND kind = 'shelf') AS shelf, "
        "  (SELECT id FROM points_account WHERE goods_id = g.id AND kind = 'donated') AS donated, "
        "  (SELECT id FROM points_account WHERE goods_id = g.id AND kind = 'handed_out') "
        "    AS handed_out "
        "FROM goods g WHERE g.id = $1",
        1, p, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return NULL;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_req_fail(r, BF_E_NOT_FOUND, field, "no goods %lld", (long long)id);
        return NULL;
    }
    if (funds_scope_location(r, bf_db_str(res, 0, "region"), write, field, "goods", id) != 0) {
        PQclear(res);
        return NULL;
    }
    return res;
}

/* "unit:<id>" or a name. */
static int s_donor_check(bf_req_t *r, const char *donor)
{
    if (strncmp(donor, "unit:", 5) != 0) return 0;
    const char *d = donor + 5;
    if (!*d || *d == '0' || strlen(d) > 18) goto bad;
    for (; *d; d++)
        if (*d < '0' || *d > '9') goto bad;
    return 0;
bad:
    return bf_req_fail(r, BF_E_INVALID, "donor",
                       "donor must be unit:<registry unit id> or a donor's name");
}

int goods_stock_in(bf_req_t *r)
{
    int64_t goods_id, qty;
    const char *donor, *note = NULL;
    if (funds_req_id(r, "goods_id", true, &goods_id) != 0) return -1;
    if (s_req_count(r, "quantity", S_MAX_STOCK_IN, &qty) != 0) return -1;
    if (s_req_text(r, "donor", true, 200, &donor) != 0) return -1;
    if (s_donor_check(r, donor) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    s_head_t head;
    if (s_lock(r, &head) != 0) return -1;
    PGresult *g = s_goods(r, goods_id, true, "goods_id");
    if (!g) return -1;
    const char *region = s_dup(r, bf_db_str(g, 0, "region"));
    const char *name = s_dup(r, bf_db_str(g, 0, "name"));
    s_entry_t e = {.from = bf_db_int(g, 0, "donated"), .to = bf_db_int(g, 0, "shelf"),
                   .amount = qty, .kind = "stock_in", .region = region, .goods_id = goods_id,
                   .donor = donor, .note = note, .field = "quantity"};
    PQclear(g);
    if (s_append(r, &head, &e, 1, idem.key) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "goods_id", goods_id);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_int(pk, "quantity", qty);
    bf_mp_kv_str(pk, "donor", donor);
    bf_mp_kv_int(pk, "entry_id", e.id);
    bf_mp_kv_int(pk, "stock", e.to_balance);
    if (funds_emit(r, &ev, "goods.stocked",
                   bf_arena_printf(r->arena, "goods/%lld", (long long)goods_id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "entry_id", e.id);
    bf_mp_kv_int(r->out, "goods_id", goods_id);
    bf_mp_kv_int(r->out, "quantity", qty);
    bf_mp_kv_str(r->out, "donor", donor);
    bf_mp_kv_int(r->out, "stock", e.to_balance);
    return funds_idem_commit(r, &idem);
}

int points_redeem(bf_req_t *r)
{
    int64_t household_id, goods_id, qty;
    const char *note = NULL;
    if (funds_req_id(r, "household_id", true, &household_id) != 0) return -1;
    if (funds_req_id(r, "goods_id", true, &goods_id) != 0) return -1;
    if (s_req_count(r, "quantity", S_MAX_REDEEM, &qty) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    s_head_t head;
    if (s_lock(r, &head) != 0) return -1;
    PGresult *g = s_goods(r, goods_id, true, "goods_id");
    if (!g) return -1;
    const char *region = s_dup(r, bf_db_str(g, 0, "region"));
    const char *name = s_dup(r, bf_db_str(g, 0, "name"));
    int64_t price = bf_db_int(g, 0, "price_points"), shelf = bf_db_int(g, 0, "shelf"),
            out = bf_db_int(g, 0, "handed_out");
    PQclear(g);
    int64_t acct, sm;
    if (s_household(r, household_id, region, false, &acct) != 0) return -1;
    if (!acct)
        return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                           "household %lld has no points (none was ever approved)",
                           (long long)household_id);
    if (s_supermarket(r, region, &sm) != 0) return -1;
    int64_t points = price * qty; /* <= 1e6 * 1e4: no overflow */
    const char *ip[] = {region, bf_req_itoa(r, household_id), bf_req_itoa(r, goods_id),
                        bf_req_itoa(r, qty), bf_req_itoa(r, points), r->actor};
    PGresult *res = bf_db_prep(r->db, "points_redemption_insert",
                               "INSERT INTO points_redemption (region, household_id, goods_id, "
                               "  quantity, points, created_by) VALUES ($1, $2, $3, $4, $5, $6) "
                               "RETURNING id",
                               6, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t rid = bf_db_int(res, 0, "id");
    PQclear(res);
    s_entry_t e[2] = {
        {.from = acct, .to = sm, .amount = points, .kind = "redeem", .region = region,
         .household_id = household_id, .goods_id = 0, .redemption_id = rid, .note = note,
         .field = "household_id"},
        {.from = shelf, .to = out, .amount = qty, .kind = "redeem", .region = region,
         .household_id = household_id, .goods_id = goods_id, .redemption_id = rid, .note = note,
         .field = "quantity"},
    };
    if (s_append(r, &head, e, 2, idem.key) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 9);
    bf_mp_kv_int(pk, "redemption_id", rid);
    bf_mp_kv_str(pk, "region", region);
    bf_mp_kv_int(pk, "household_id", household_id);
    bf_mp_kv_int(pk, "goods_id", goods_id);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_int(pk, "quantity", qty);
    bf_mp_kv_int(pk, "points", points);
    bf_mp_kv_int(pk, "balance", e[0].from_balance);
    bf_mp_kv_int(pk, "stock", e[1].from_balance);
    if (funds_emit(r, &ev, "points.redeemed",
                   bf_arena_printf(r->arena, "points_redemption/%lld", (long long)rid)) != 0)
        return -1;
    msgpack_pack_map(r->out, 8);
    bf_mp_kv_int(r->out, "redemption_id", rid);
    bf_mp_kv_int(r->out, "household_id", household_id);
    bf_mp_kv_int(r->out, "goods_id", goods_id);
    bf_mp_kv_int(r->out, "quantity", qty);
    bf_mp_kv_int(r->out, "points", points);
    bf_mp_kv_int(r->out, "balance", e[0].from_balance);
    bf_mp_kv_int(r->out, "stock", e[1].from_balance);
    bf_mp_key(r->out, "entry_ids");
    msgpack_pack_array(r->out, 2);
    msgpack_pack_int64(r->out, e[0].id);
    msgpack_pack_int64(r->out, e[1].id);
    return funds_idem_commit(r, &idem);
}

/* ------------------------------------------------------------ reversal */

int points_reverse(bf_req_t *r)
{
    int64_t id;
    const char *reason;
    if (funds_req_id(r, "entry_id", true, &id) != 0) return -1;
    if (s_req_text(r, "reason", true, 500, &reason) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    s_head_t head;
    if (s_lock(r, &head) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    /* the entry, or both entries of its redemption */
    PGresult *res = bf_db_prep(
        r->db, "points_reverse_read",
        "SELECT e.id, e.from_account, e.to_account, e.amount, e.kind, e.region, e.household_id, "
        "  e.goods_id, e.earning_id, e.redemption_id, e.donor, e.actor, "
        "  (SELECT v.id FROM points_entry v WHERE v.reverses_id = e.id) AS reversed_by "
        "FROM points_entry x JOIN points_entry e ON e.id = x.id "
        "  OR (x.redemption_id IS NOT NULL AND x.kind = 'redeem' AND e.kind = 'redeem' "
        "      AND e.redemption_id = x.redemption_id) "
        "WHERE x.id = $1 ORDER BY e.id",
        1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "entry_id", "no points entry %lld", (long long)id);
    }
    if (funds_scope_location(r, bf_db_str(res, 0, "region"), true, "entry_id", "points entry",
                             id) != 0) {
        PQclear(res);
        return -1;
    }
    if (n > 2 || !strcmp(bf_db_str(res, 0, "kind"), "reversal")) {
        PQclear(res);
        return bf_req_fail(r, BF_E_PRECONDITION, "entry_id",
                           "entry %lld is a reversal; a reversal is not reversed",
                           (long long)id);
    }
    s_entry_t e[2];
    memset(e, 0, sizeof e);
    for (int i = 0; i < n; i++) {
        if (!bf_db_null(res, i, "reversed_by")) {
            int64_t by = bf_db_int(res, i, "reversed_by"), was = bf_db_int(res, i, "id");
            PQclear(res);
            return bf_req_fail(r, BF_E_PRECONDITION, "entry_id",
                               "entry %lld was already reversed by entry %lld", (long long)was,
                               (long long)by);
        }
        if (!strcmp(bf_db_str(res, i, "actor"), r->actor)) {
            const char *who = s_dup(r, bf_db_str(res, i, "actor"));
            PQclear(res);
            return bf_req_fail(r, BF_E_PERMISSION, "actor",
                               "an entry is reversed by someone other than who made it (%s)",
                               who);
        }
        e[i] = (s_entry_t){.from = bf_db_int(res, i, "to_account"),
                           .to = bf_db_int(res, i, "from_account"),
                           .amount = bf_db_int(res, i, "amount"),
                           .kind = "reversal",
                           .region = s_dup(r, bf_db_str(res, i, "region")),
                           .household_id = bf_db_int(res, i, "household_id"),
                           .goods_id = bf_db_int(res, i, "goods_id"),
                           .earning_id = bf_db_int(res, i, "earning_id"),
                           .redemption_id = bf_db_int(res, i, "redemption_id"),
                           .reverses_id = bf_db_int(res, i, "id"),
                           .donor = s_dup(r, bf_db_str(res, i, "donor")),
                           .note = reason,
                           .field = "entry_id"};
    }
    const char *orig_kind = s_dup(r, bf_db_str(res, 0, "kind"));
    PQclear(res);
    if (s_append(r, &head, e, (size_t)n, idem.key) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_str(pk, "region", e[0].region);
    bf_mp_kv_str(pk, "reversed_kind", orig_kind);
    bf_mp_kv_str(pk, "reason", reason);
    if (e[0].household_id)
        bf_mp_kv_int(pk, "household_id", e[0].household_id);
    else
        bf_mp_kv_nil(pk, "household_id");
    bf_mp_key(pk, "entries");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "entry_id", e[i].id);
        bf_mp_kv_int(pk, "reverses_id", e[i].reverses_id);
        bf_mp_kv_int(pk, "amount", e[i].amount);
        if (e[i].goods_id)
            bf_mp_kv_int(pk, "goods_id", e[i].goods_id);
        else
            bf_mp_kv_nil(pk, "goods_id");
    }
    if (funds_emit(r, &ev, "points.reversed",
                   bf_arena_printf(r->arena, "points_entry/%lld", (long long)e[0].id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_str(r->out, "reversed_kind", orig_kind);
    bf_mp_kv_str(r->out, "reason", reason);
    bf_mp_key(r->out, "entries");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "entry_id", e[i].id);
        bf_mp_kv_int(r->out, "reverses_id", e[i].reverses_id);
        bf_mp_kv_int(r->out, "amount", e[i].amount);
        if (e[i].goods_id)
            bf_mp_kv_int(r->out, "goods_id", e[i].goods_id);
        else
            bf_mp_kv_nil(r->out, "goods_id");
    }
    return funds_idem_commit(r, &idem);
}

/* ------------------------------------------------------------ reads */

int points_account(bf_req_t *r)
{
    int64_t household_id, limit = 20, before = INT64_MAX;
    if (funds_req_id(r, "household_id", true, &household_id) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, BF_PAGE_MIN, BF_PAGE_MAX, &limit) < 0)
        return -1;
    if (bf_page_cursor(r, &before) < 0) return -1;
    /* one statement: the account and its figures (computed once, in a
     * materialised CTE) with its page of entries joined on (no entries: one
     * row with the entry columns NULL); the region is checked on the row */
    const char *p[] = {bf_req_itoa(r, household_id), bf_req_itoa(r, before),
                       bf_req_itoa(r, limit + 1)};
    PGresult *acc = bf_db_prep(
        r->db, "points_account_get1",
        "WITH acc AS MATERIALIZED (SELECT a.id AS acc_id, a.region AS acc_region, "
        "  a.balance AS acc_balance, "
        "  (SELECT COALESCE(sum(amount), 0) FROM points_movement m "
        "    WHERE m.household_id = a.household_id AND m.to_account = a.id "
        "      AND m.kind = 'earn') AS acc_earned, "
        "  (SELECT COALESCE(sum(amount), 0) FROM points_movement m "
        "    WHERE m.household_id = a.household_id AND m.from_account = a.id "
        "      AND m.kind = 'redeem') AS acc_redeemed, "
        "  (SELECT count(*) FROM points_earning e WHERE e.household_id = a.household_id "
        "    AND e.state = 'proposed') AS acc_pending "
        "  FROM points_account a WHERE a.kind = 'household' AND a.household_id = $1) "
        "SELECT acc.*, x.* FROM acc LEFT JOIN LATERAL (SELECT " S_ENTRY_COLS
        "  FROM points_entry e WHERE (e.from_account = acc.acc_id OR e.to_account = acc.acc_id) "
        "  AND e.id < $2 ORDER BY e.id DESC LIMIT $3) x ON true "
        "ORDER BY x.id DESC",
        3, p, NULL, NULL);
    if (!acc) return bf_req_db_fail(r);
    if (PQntuples(acc) == 0 ||
        (r->region && *r->region && !bf_req_in_region(r, bf_db_str(acc, 0, "acc_region")))) {
        PQclear(acc);
        return bf_req_fail(r, BF_E_NOT_FOUND, "household_id",
                           "household %lld has no points account", (long long)household_id);
    }
    int64_t id = bf_db_int(acc, 0, "acc_id");
    int n = bf_db_null(acc, 0, "id") ? 0 : PQntuples(acc); /* entries on this page + 1 */
    int shown = n > limit ? (int)limit : n;
    msgpack_pack_map(r->out, 9);
    bf_mp_kv_int(r->out, "account_id", id);
    bf_mp_kv_int(r->out, "household_id", household_id);
    bf_mp_kv_str(r->out, "region", bf_db_str(acc, 0, "acc_region"));
    bf_mp_kv_int(r->out, "balance", bf_db_int(acc, 0, "acc_balance"));
    bf_mp_kv_int(r->out, "earned", bf_db_int(acc, 0, "acc_earned"));
    bf_mp_kv_int(r->out, "redeemed", bf_db_int(acc, 0, "acc_redeemed"));
    bf_mp_kv_int(r->out, "pending", bf_db_int(acc, 0, "acc_pending"));
    bf_mp_key(r->out, "entries");
    msgpack_pack_array(r->out, (size_t)shown);
    for (int i = 0; i < shown; i++) s_pack_entry(r->out, acc, i, id);
    bf_page_end(r, acc, limit, "id"); /* a next page only when n > limit */
    PQclear(acc);
    return 0;
}

int goods_list(bf_req_t *r)
{
    const char *region = NULL;
    int64_t after, limit;
    if (s_req_region(r, "region", false, &region) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    char prefix[13] = {0};
    if (region) bf_region_prefix(region, prefix);
    const char *p[] = {region ? prefix : NULL, bf_req_region_prefix(r), bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "points_goods_list",
        "SELECT g.id, g.region, g.name, g.unit, g.price_points, s.balance AS stock, "
        "  -d.balance AS stocked_in, o.balance AS handed_out "
        "FROM goods g "
        "JOIN points_account s ON s.goods_id = g.id AND s.kind = 'shelf' "
        "JOIN points_account d ON d.goods_id = g.id AND d.kind = 'donated' "
        "JOIN points_account o ON o.goods_id = g.id AND o.kind = 'handed_out' "
        "WHERE ($1::text IS NULL OR g.region LIKE $1::text || '%') "
        "  AND ($2::text IS NULL OR g.region LIKE $2::text || '%') "
        "  AND g.id > $3::bigint ORDER BY g.id LIMIT $4::int",
        4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 8);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "region", bf_db_str(res, i, "region"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_str(r->out, "unit", bf_db_str(res, i, "unit"));
        bf_mp_kv_int(r->out, "price_points", bf_db_int(res, i, "price_points"));
        bf_mp_kv_int(r->out, "stock", bf_db_int(res, i, "stock"));
        bf_mp_kv_int(r->out, "stocked_in", bf_db_int(res, i, "stocked_in"));
        bf_mp_kv_int(r->out, "handed_out", bf_db_int(res, i, "handed_out"));
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

/* "YYYY-MM" with a year 2000..2100: the first day "YYYY-MM-01" into out. */
static int s_month(bf_req_t *r, const char *m, char out[11])
{
    if (strlen(m) != 7 || m[4] != '-') goto bad;
    for (int i = 0; i < 7; i++)
        if (i != 4 && (m[i] < '0' || m[i] > '9')) goto bad;
    int y = atoi(m), mo = atoi(m + 5);
    if (y < 2000 || y > 2100 || mo < 1 || mo > 12) goto bad;
    snprintf(out, 11, "%.7s-01", m);
    return 0;
bad:
    return bf_req_fail(r, BF_E_INVALID, "month", "month must be YYYY-MM (2000..2100)");
}

int points_statement(bf_req_t *r)
{
    const char *region, *month;
    char first[11], prefix[13];
    if (s_req_region(r, "region", true, &region) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "month", true, 7, &month) != 0) return -1;
    if (s_month(r, month, first) != 0) return -1;
    if (r->region && *r->region && !bf_req_in_region(r, region))
        return bf_req_fail(r, BF_E_NOT_FOUND, "region", "no region %s in the caller's region",
                           region);
    bf_region_prefix(region, prefix);
    /* one snapshot for all three parts, so the figures add up */
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (bf_db_cmd(r->db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") != 0)
        return bf_req_db_fail(r);
    /* the region as a range of codes (index-friendly, unlike LIKE on char) */
    char lo[13], hi[13];
    size_t pl = strlen(prefix);
    memcpy(lo, prefix, pl);
    memcpy(hi, prefix, pl);
    memset(lo + pl, '0', 12 - pl);
    memset(hi + pl, '9', 12 - pl);
    lo[12] = hi[12] = '\0';
    const char *p[] = {lo, hi, first};
    /* each movement of the region's entries once per side: incoming (to) and
     * outgoing (from), reversals negative in their original's direction */
#define S_SIDES                                                                              \
    "WITH b AS (SELECT ($3::date)::timestamp AT TIME ZONE 'UTC' AS s, "                     \
    "                  ($3::date + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS e), " \
    "mv AS (SELECT * FROM points_movement WHERE region BETWEEN $1 AND $2), "                \
    "side AS (SELECT to_account AS acct, true AS incoming, kind, amount, created_at FROM mv " \
    "  UNION ALL SELECT from_account, false, kind, amount, created_at FROM mv) "
#define S_FIGURES(in_kind, out_kind)                                                         \
    "  COALESCE(sum(CASE WHEN x.created_at < b.s THEN "                                     \
    "    CASE WHEN x.incoming THEN x.amount ELSE -x.amount END END), 0) AS opening, "        \
    "  COALESCE(sum(CASE WHEN x.created_at >= b.s AND x.created_at < b.e AND x.incoming "    \
    "    AND x.kind = '" in_kind "' THEN x.amount END), 0) AS added, "                     \
    "  COALESCE(sum(CASE WHEN x.created_at >= b.s AND x.created_at < b.e AND NOT x.incoming " \
    "    AND x.kind = '" out_kind "' THEN x.amount END), 0) AS taken "
    PGresult *hh = bf_db_prep(
        r->db, "points_statement_households",
        S_SIDES "SELECT a.household_id, a.region, " S_FIGURES("earn", "redeem") ", "
        "  (SELECT count(*) FROM points_earning y WHERE y.household_id = a.household_id "
        "    AND y.proposed_at >= b.s AND y.proposed_at < b.e) AS proposals, "
        "  (SELECT count(*) FROM points_earning y WHERE y.household_id = a.household_id "
        "    AND y.state = 'rejected' AND y.decided_at >= b.s AND y.decided_at < b.e) "
        "    AS rejected "
        "FROM b, points_account a LEFT JOIN side x ON x.acct = a.id "
        "WHERE a.kind = 'household' AND a.region BETWEEN $1 AND $2 "
        "GROUP BY a.id, a.household_id, a.region, b.s, b.e ORDER BY a.household_id",
        3, p, NULL, NULL);
    if (!hh) return bf_req_db_fail(r);
    PGresult *gd = bf_db_prep(
        r->db, "points_statement_goods",
        S_SIDES "SELECT g.id, g.name, g.unit, g.price_points, " S_FIGURES("stock_in", "redeem")
        "FROM b, goods g JOIN points_account a ON a.goods_id = g.id AND a.kind = 'shelf' "
        "LEFT JOIN side x ON x.acct = a.id "
        "WHERE g.region BETWEEN $1 AND $2 "
        "GROUP BY g.id, g.name, g.unit, g.price_points, b.s, b.e ORDER BY g.id",
        3, p, NULL, NULL);
#undef S_SIDES
#undef S_FIGURES
    if (!gd) {
        PQclear(hh);
        return bf_req_db_fail(r);
    }
    PGresult *dn = bf_db_prep(
        r->db, "points_statement_donors",
        "WITH b AS (SELECT ($3::date)::timestamp AT TIME ZONE 'UTC' AS s, "
        "                  ($3::date + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS e) "
        "SELECT x.donor, x.goods_id, g.name, "
        "  sum(CASE WHEN x.kind = 'reversal' THEN -x.amount ELSE x.amount END) AS quantity "
        "FROM b, points_entry x JOIN goods g ON g.id = x.goods_id "
        "LEFT JOIN points_entry o ON x.kind = 'reversal' AND o.id = x.reverses_id "
        "WHERE COALESCE(o.kind, x.kind) = 'stock_in' AND x.region BETWEEN $1 AND $2 "
        "  AND x.created_at >= b.s AND x.created_at < b.e "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2",
        3, p, NULL, NULL);
    if (!dn) {
        PQclear(gd);
        PQclear(hh);
        return bf_req_db_fail(r);
    }
    int nh = PQntuples(hh), ng = PQntuples(gd), nd = PQntuples(dn);
    int64_t t_open = 0, t_earn = 0, t_red = 0;
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_str(r->out, "region", region);
    bf_mp_kv_str(r->out, "month", month);
    bf_mp_key(r->out, "households");
    msgpack_pack_array(r->out, (size_t)nh);
    for (int i = 0; i < nh; i++) {
        int64_t o = bf_db_int(hh, i, "opening"), e = bf_db_int(hh, i, "added"),
                d = bf_db_int(hh, i, "taken");
        t_open += o;
        t_earn += e;
        t_red += d;
        msgpack_pack_map(r->out, 8);
        bf_mp_kv_int(r->out, "household_id", bf_db_int(hh, i, "household_id"));
        bf_mp_kv_str(r->out, "region", bf_db_str(hh, i, "region"));
        bf_mp_kv_int(r->out, "opening", o);
        bf_mp_kv_int(r->out, "earned", e);
        bf_mp_kv_int(r->out, "redeemed", d);
        bf_mp_kv_int(r->out, "closing", o + e - d);
        bf_mp_kv_int(r->out, "proposals", bf_db_int(hh, i, "proposals"));
        bf_mp_kv_int(r->out, "rejected", bf_db_int(hh, i, "rejected"));
    }
    bf_mp_key(r->out, "totals");
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "households", nh);
    bf_mp_kv_int(r->out, "opening", t_open);
    bf_mp_kv_int(r->out, "earned", t_earn);
    bf_mp_kv_int(r->out, "redeemed", t_red);
    bf_mp_kv_int(r->out, "closing", t_open + t_earn - t_red);
    bf_mp_key(r->out, "goods");
    msgpack_pack_array(r->out, (size_t)ng);
    for (int i = 0; i < ng; i++) {
        int64_t o = bf_db_int(gd, i, "opening"), in = bf_db_int(gd, i, "added"),
                out = bf_db_int(gd, i, "taken");
        msgpack_pack_map(r->out, 8);
        bf_mp_kv_int(r->out, "goods_id", bf_db_int(gd, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(gd, i, "name"));
        bf_mp_kv_str(r->out, "unit", bf_db_str(gd, i, "unit"));
        bf_mp_kv_int(r->out, "price_points", bf_db_int(gd, i, "price_points"));
        bf_mp_kv_int(r->out, "opening", o);
        bf_mp_kv_int(r->out, "stocked_in", in);
        bf_mp_kv_int(r->out, "handed_out", out);
        bf_mp_kv_int(r->out, "closing", o + in - out);
    }
    bf_mp_key(r->out, "donations");
    msgpack_pack_array(r->out, (size_t)nd);
    for (int i = 0; i < nd; i++) {
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_str(r->out, "donor", bf_db_str(dn, i, "donor"));
        bf_mp_kv_int(r->out, "goods_id", bf_db_int(dn, i, "goods_id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(dn, i, "name"));
        bf_mp_kv_int(r->out, "quantity", bf_db_int(dn, i, "quantity"));
    }
    PQclear(dn);
    PQclear(gd);
    PQclear(hh);
    bf_db_rollback(r->db);
    return 0;
}

/* ------------------------------------------------------------ verify */

int points_verify(bf_req_t *r)
{
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (bf_db_cmd(r->db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") != 0)
        return bf_req_db_fail(r);
    PGresult *res = bf_db_prep(r->db, "points_verify_head",
                               "SELECT last_id, encode(last_hash, 'hex') AS last_hash "
                               "FROM points_head",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    unsigned char head_hash[FUNDS_HASH_LEN];
    if (PQntuples(res) != 1 ||
        funds_unhex(bf_db_str(res, 0, "last_hash"), head_hash, FUNDS_HASH_LEN) != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "the points head is missing or damaged");
    }
    int64_t head_id = bf_db_int(res, 0, "last_id");
    PQclear(res);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    unsigned char running[FUNDS_HASH_LEN] = {0};
    int64_t last = 0, bad_id = 0;
    const char *problem = NULL, *message = NULL;
    static const char *const cols[S_PT_FIELDS] = {
        "id", "from_account", "to_account", "amount", "kind", "region", "household_id",
        "goods_id", "earning_id", "redemption_id", "donor", "note", "request_key",
        "reverses_id", "actor", "created_at"};
    funds_chain_walk_t w = {.tag = s_tag, .what = "entry", .cols = cols, .ncols = S_PT_FIELDS};
    while (!w.problem) {
        const char *p[] = {bf_req_itoa(r, w.last)};
        res = bf_db_prep(
            r->db, "points_verify_page",
            "SELECT id, from_account, to_account, amount, kind, region, household_id, goods_id, "
            "  earning_id, redemption_id, donor, note, request_key, reverses_id, actor, "
            "  to_char(created_at AT TIME ZONE 'UTC', " S_TS_FMT ") AS created_at, "
            "  encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash "
            "FROM points_entry WHERE id > $1 ORDER BY id LIMIT 5000",
            1, p, NULL, NULL);
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
                                 : "the head does not point at the last entry";
    }
    /* books: balances against the entries, floors; every asset sums to zero;
     * an entry moves one asset; an approved earning's entry is its points */
    PGresult *bad = bf_db_prep(
        r->db, "points_verify_accounts",
        "SELECT a.id, a.kind, a.name, a.floor, a.balance, "
        "  COALESCE(i.s, 0) - COALESCE(o.s, 0) AS ledger "
        "FROM points_account a "
        "LEFT JOIN (SELECT to_account AS id, sum(amount) AS s FROM points_entry GROUP BY 1) i "
        "  ON i.id = a.id "
        "LEFT JOIN (SELECT from_account AS id, sum(amount) AS s FROM points_entry GROUP BY 1) o "
        "  ON o.id = a.id "
        "WHERE a.balance <> COALESCE(i.s, 0) - COALESCE(o.s, 0) "
        "   OR (a.floor IS NOT NULL AND COALESCE(i.s, 0) - COALESCE(o.s, 0) < a.floor) "
        "ORDER BY a.id LIMIT 100",
        0, NULL, NULL, NULL);
    if (!bad) return bf_req_db_fail(r);
    PGresult *tot = bf_db_prep(
        r->db, "points_verify_totals",
        "SELECT (SELECT count(*) FROM points_account) AS accounts, "
        "  (SELECT count(*) FROM (SELECT goods_id FROM points_account "
        "     GROUP BY goods_id HAVING sum(balance) <> 0) z) AS unbalanced_assets, "
        "  (SELECT count(*) FROM points_entry e JOIN points_account f ON f.id = e.from_account "
        "     JOIN points_account t ON t.id = e.to_account "
        "     WHERE f.goods_id IS DISTINCT FROM t.goods_id) AS mixed_entries, "
        "  (SELECT COALESCE(sum(balance), 0) FROM points_account WHERE kind = 'household') "
        "    AS household_points",
        0, NULL, NULL, NULL);
    if (!tot) {
        PQclear(bad);
        return bf_req_db_fail(r);
    }
    PGresult *ear = bf_db_prep(
        r->db, "points_verify_earnings",
        "SELECT x.id FROM points_earning x LEFT JOIN points_entry e ON e.id = x.entry_id "
        "WHERE x.state = 'approved' AND (e.id IS NULL OR e.kind <> 'earn' "
        "  OR e.earning_id <> x.id OR e.amount <> x.points OR e.household_id <> x.household_id) "
        "ORDER BY x.id LIMIT 100",
        0, NULL, NULL, NULL);
    if (!ear) {
        PQclear(tot);
        PQclear(bad);
        return bf_req_db_fail(r);
    }
    int nbad = PQntuples(bad), near = PQntuples(ear);
    bool books_ok = nbad == 0 && near == 0 && bf_db_int(tot, 0, "unbalanced_assets") == 0 &&
                    bf_db_int(tot, 0, "mixed_entries") == 0;
    char hx[2 * FUNDS_HASH_LEN + 1];
    funds_hex(head_hash, FUNDS_HASH_LEN, hx);
    msgpack_pack_map(r->out, 12);
    bf_mp_kv_bool(r->out, "ok", !problem && books_ok);
    bf_mp_kv_int(r->out, "entries", last);
    bf_mp_kv_int(r->out, "head_id", head_id);
    bf_mp_kv_str(r->out, "head_hash", hx);
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
    bf_mp_kv_int(r->out, "household_points", bf_db_int(tot, 0, "household_points"));
    bf_mp_kv_int(r->out, "unbalanced_assets", bf_db_int(tot, 0, "unbalanced_assets"));
    bf_mp_kv_int(r->out, "mixed_entries", bf_db_int(tot, 0, "mixed_entries"));
    bf_mp_key(r->out, "bad_accounts");
    msgpack_pack_array(r->out, (size_t)nbad);
    for (int i = 0; i < nbad; i++) {
        msgpack_pack_map(r->out, 6);
        bf_mp_kv_int(r->out, "id", bf_db_int(bad, i, "id"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(bad, i, "kind"));
        bf_mp_kv_str(r->out, "name", bf_db_str(bad, i, "name"));
        s_kv_opt(r->out, bad, i, "floor");
        bf_mp_kv_int(r->out, "balance", bf_db_int(bad, i, "balance"));
        bf_mp_kv_int(r->out, "ledger", bf_db_int(bad, i, "ledger"));
    }
    bf_mp_key(r->out, "bad_earnings");
    msgpack_pack_array(r->out, (size_t)near);
    for (int i = 0; i < near; i++) msgpack_pack_int64(r->out, bf_db_int(ear, i, "id"));
    PQclear(ear);
    PQclear(tot);
    PQclear(bad);
    bf_db_rollback(r->db);
    return 0;
}
