/* batch.c: paying many recipients at once (e.g. a month of public-welfare
 * jobs at 1000 yuan a person), idempotent per batch and per line.
 *
 * A batch is named by the client's batch_key and bound to one payer (a budget
 * or a project). Each line has a line_key unique within the batch; a line key
 * is paid at most once, ever: sending it again (in a retried or a later
 * submission) reports the earlier payment as a duplicate instead of paying
 * twice, and sending it with another recipient or amount is a per-line
 * conflict. Lines are checked one by one and each gets its own result: a bad
 * line, or one the payer's balance can no longer cover (lines are taken in
 * order), fails alone while the others are paid, all in one transaction.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *key, *recipient, *note;
    int64_t amount;
    const char *err_code, *err_field;
    char *err_msg;
    bool duplicate;
    int64_t transfer_id;
    int64_t account;
} s_line_t;

static void s_line_fail(bf_req_t *r, s_line_t *l, const char *code, const char *field,
                        const char *msg)
{
    l->err_code = code;
    l->err_field = field;
    l->err_msg = bf_arena_strndup(r->arena, msg, strlen(msg));
}

/* Reads one line; failures are the line's, not the request's. */
static void s_read_line(bf_req_t *r, const msgpack_object *o, uint32_t i, s_line_t *l)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "lines[%u]", i);
    memset(l, 0, sizeof *l);
    if (o->type != MSGPACK_OBJECT_MAP) {
        s_line_fail(r, l, BF_E_INVALID, bf_arena_strndup(r->arena, prefix, strlen(prefix)),
                    "a line must be a map {line_key, recipient, amount_fen, note?}");
        return;
    }
    const msgpack_object *k = bf_mp_get(o, "line_key");
    if (k && k->type == MSGPACK_OBJECT_STR && k->via.str.size <= 64)
        l->key = bf_arena_strndup(r->arena, k->via.str.ptr, k->via.str.size);
    bf_err_t saved = r->err;
    const char *key = NULL, *recipient = NULL, *note = NULL;
    int64_t amount = 0;
    for (uint32_t m = 0; m < o->via.map.size; m++) {
        const msgpack_object *mk = &o->via.map.ptr[m].key;
        if (!(bf_mp_str_eq(mk, "line_key") || bf_mp_str_eq(mk, "recipient") ||
              bf_mp_str_eq(mk, "amount_fen") || bf_mp_str_eq(mk, "note"))) {
            s_line_fail(r, l, BF_E_INVALID, bf_arena_strndup(r->arena, prefix, strlen(prefix)),
                        "unknown key in a line (allowed: line_key, recipient, amount_fen, note)");
            return;
        }
    }
    if (bf_req_str(r, o, prefix, "line_key", true, 64, &key) != 0 ||
        funds_req_recipient(r, o, prefix, "recipient", true, &recipient) != 0 ||
        funds_req_amount(r, o, prefix, "amount_fen", true, 1, &amount) != 0 ||
        bf_req_str(r, o, prefix, "note", false, 200, &note) < 0) {
        s_line_fail(r, l, r->err.code, bf_arena_strndup(r->arena, r->err.field,
                                                        strlen(r->err.field)),
                    r->err.message);
        r->err = saved;
        return;
    }
    if (!*key) {
        s_line_fail(r, l, BF_E_INVALID, bf_arena_printf(r->arena, "%s.line_key", prefix),
                    "line_key must not be empty");
        return;
    }
    l->key = key;
    l->recipient = recipient;
    l->amount = amount;
    l->note = note;
}

typedef struct {
    const char *key;
    size_t idx;
} s_key_t;

static int s_key_cmp(const void *a, const void *b)
{
    const s_key_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int disbursement_batch(bf_req_t *r)
{
    const char *batch_key, *purpose = NULL;
    int64_t project_id = 0, budget_id = 0;
    const msgpack_object_array *list;
    if (bf_req_str(r, r->params, NULL, "batch_key", true, FUNDS_KEY_MAX, &batch_key) != 0)
        return -1;
    if (!*batch_key) return bf_req_fail(r, BF_E_INVALID, "batch_key", "batch_key must not be empty");
    if (funds_req_id(r, "project_id", false, &project_id) < 0) return -1;
    if (funds_req_id(r, "budget_id", false, &budget_id) < 0) return -1;
    if ((project_id != 0) == (budget_id != 0))
        return bf_req_fail(r, BF_E_INVALID, "budget_id",
                           "give exactly one of budget_id and project_id (the payer)");
    if (bf_req_str(r, r->params, NULL, "purpose", false, 500, &purpose) < 0) return -1;
    if (bf_req_list(r, r->params, NULL, "lines", true, FUNDS_MAX_LINES, &list) != 0) return -1;
    if (list->size == 0) return bf_req_fail(r, BF_E_INVALID, "lines", "lines must not be empty");
    size_t n = list->size;
    s_line_t *lines = bf_arena_alloc(r->arena, n * sizeof *lines);
    s_key_t *keys = bf_arena_alloc(r->arena, n * sizeof *keys);
    if (!lines || !keys) return bf_req_fail(r, BF_E_EXHAUSTED, "lines", "out of memory");
    size_t nk = 0;
    for (uint32_t i = 0; i < n; i++) {
        s_read_line(r, &list->ptr[i], i, &lines[i]);
        if (!lines[i].err_code) keys[nk++] = (s_key_t){lines[i].key, i};
    }
    /* a line key twice in one request: the later ones fail */
    qsort(keys, nk, sizeof *keys, s_key_cmp);
    for (size_t i = 1; i < nk; i++)
        if (!strcmp(keys[i].key, keys[i - 1].key))
            s_line_fail(r, &lines[keys[i].idx], BF_E_INVALID,
                        bf_arena_printf(r->arena, "lines[%zu].line_key", keys[i].idx),
                        "this line_key appears earlier in the same request");

    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    int64_t payer = project_id ? project_id : budget_id;
    const char *pp[] = {bf_req_itoa(r, payer)};
    PGresult *res = project_id
                        ? bf_db_prep(r->db, "funds_batch_payer_p",
                                     "SELECT b.root_id, b.year FROM project j "
                                     "JOIN budget b ON b.id = j.budget_id WHERE j.id = $1",
                                     1, pp, NULL, NULL)
                        : bf_db_prep(r->db, "funds_batch_payer_b",
                                     "SELECT root_id, year FROM budget WHERE id = $1", 1, pp,
                                     NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return project_id ? bf_req_fail(r, BF_E_NOT_FOUND, "project_id", "no project %lld",
                                        (long long)project_id)
                          : bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                                        (long long)budget_id);
    }
    int64_t root = bf_db_int(res, 0, "root_id");
    int year = (int)bf_db_int(res, 0, "year");
    PQclear(res);

    /* the batch: found by its key (same payer) or created */
    const char *bp[] = {batch_key,
                        pp[0],
                        budget_id ? bf_req_itoa(r, budget_id) : NULL,
                        project_id ? bf_req_itoa(r, project_id) : NULL,
                        purpose,
                        r->actor};
    res = bf_db_prep(r->db, "funds_batch_upsert",
                     "WITH ins AS (INSERT INTO batch (batch_key, payer_id, budget_id, project_id, "
                     "  purpose, created_by) VALUES ($1, $2, $3, $4, $5, $6) "
                     "  ON CONFLICT (batch_key) DO NOTHING RETURNING id, payer_id) "
                     "SELECT id, payer_id FROM ins UNION ALL "
                     "SELECT id, payer_id FROM batch WHERE batch_key = $1",
                     6, bp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t batch_id = bf_db_int(res, 0, "id"), batch_payer = bf_db_int(res, 0, "payer_id");
    PQclear(res);
    if (batch_payer != payer)
        return bf_req_fail(r, BF_E_CONFLICT, "batch_key",
                           "batch %s pays from account %lld, not %lld", batch_key,
                           (long long)batch_payer, (long long)payer);

    /* lines this batch already paid */
    funds_arr_t ak;
    funds_arr_init(&ak);
    for (size_t i = 0; i < n; i++)
        if (!lines[i].err_code) funds_arr_text(&ak, lines[i].key);
    const char *lp[] = {bf_req_itoa(r, batch_id), funds_arr_end(&ak)};
    res = bf_db_prep(r->db, "funds_batch_paid",
                     "SELECT line_key, recipient, amount_fen, transfer_id FROM batch_line "
                     "WHERE batch_id = $1 AND line_key = ANY($2::text[])",
                     2, lp, NULL, NULL);
    funds_arr_free(&ak);
    if (!res) return bf_req_db_fail(r);
    int npaid = PQntuples(res);
    for (int k = 0; k < npaid; k++) {
        /* the first line with this key (keys are sorted by key, then index) */
        s_key_t probe = {bf_db_str(res, k, "line_key"), 0};
        size_t lo = 0, hi = nk;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (s_key_cmp(&keys[mid], &probe) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo >= nk || strcmp(keys[lo].key, probe.key) != 0) continue;
        size_t i = keys[lo].idx;
        s_line_t *l = &lines[i];
        if (strcmp(l->recipient, bf_db_str(res, k, "recipient")) != 0 ||
            l->amount != bf_db_int(res, k, "amount_fen")) {
            s_line_fail(r, l, BF_E_CONFLICT, bf_arena_printf(r->arena, "lines[%zu].line_key", i),
                        "this line_key was already paid with another recipient or amount");
        } else {
            l->duplicate = true;
            l->transfer_id = bf_db_int(res, k, "transfer_id");
        }
    }
    PQclear(res);

    /* what the payer can still cover, line by line in order (what a running
     * allocation holds on it is not available) */
    int64_t balance;
    if (funds_account_available(r, payer, &balance) != 0) return -1;
    size_t npay = 0;
    int64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        s_line_t *l = &lines[i];
        if (l->err_code || l->duplicate) continue;
        if (l->amount > balance) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "insufficient funds: the payer has %s yuan left for this line of %s yuan",
                     funds_yuan(r, balance), funds_yuan(r, l->amount));
            s_line_fail(r, l, BF_E_PRECONDITION,
                        bf_arena_printf(r->arena, "lines[%zu].amount_fen", i), msg);
            continue;
        }
        balance -= l->amount;
        total += l->amount; /* <= the starting balance: no overflow */
        npay++;
    }

    /* recipients' accounts, then the transfers and the lines */
    funds_xfer_t *x = bf_arena_alloc(r->arena, npay * sizeof *x + 1);
    if (!x) return bf_req_fail(r, BF_E_EXHAUSTED, "lines", "out of memory");
    if (npay) {
        funds_arr_t ar;
        funds_arr_init(&ar);
        for (size_t i = 0; i < n; i++)
            if (!lines[i].err_code && !lines[i].duplicate) funds_arr_text(&ar, lines[i].recipient);
        const char *ap[] = {funds_arr_end(&ar)};
        res = bf_db_prep(r->db, "funds_recipients_create",
                         "INSERT INTO account (kind, ref, name, floor_fen) "
                         "SELECT DISTINCT 'recipient', u.r, u.r, 0 FROM unnest($1::text[]) AS u(r) "
                         "ON CONFLICT (kind, ref) DO NOTHING",
                         1, ap, NULL, NULL);
        if (res) {
            PQclear(res);
            res = bf_db_prep(r->db, "funds_recipients_ids",
                             "SELECT a.id FROM unnest($1::text[]) WITH ORDINALITY AS u(r, ord) "
                             "JOIN account a ON a.kind = 'recipient' AND a.ref = u.r "
                             "ORDER BY u.ord",
                             1, ap, NULL, NULL);
        }
        funds_arr_free(&ar);
        if (!res) return bf_req_db_fail(r);
        if ((size_t)PQntuples(res) != npay) {
            PQclear(res);
            return bf_req_fail(r, BF_E_INTERNAL, "lines", "recipient accounts went missing");
        }
        for (size_t i = 0, k = 0; i < n; i++) {
            s_line_t *l = &lines[i];
            if (l->err_code || l->duplicate) continue;
            l->account = bf_db_int(res, (int)k, "id");
            x[k] = (funds_xfer_t){.from = payer,
                                  .to = l->account,
                                  .amount = l->amount,
                                  .kind = "disbursement",
                                  .year = year,
                                  .budget_id = root,
                                  .project_id = project_id,
                                  .ref = bf_arena_printf(r->arena, "batch/%lld#%s",
                                                         (long long)batch_id, l->key),
                                  .note = l->note};
            k++;
        }
        PQclear(res);
        if (funds_ledger_append(r, &head, x, npay, idem.key, "lines") != 0) return -1;
        funds_arr_t lk, lr, la, lt;
        funds_arr_init(&lk);
        funds_arr_init(&lr);
        funds_arr_init(&la);
        funds_arr_init(&lt);
        for (size_t i = 0, k = 0; i < n; i++) {
            s_line_t *l = &lines[i];
            if (l->err_code || l->duplicate) continue;
            l->transfer_id = x[k++].id;
            funds_arr_text(&lk, l->key);
            funds_arr_text(&lr, l->recipient);
            funds_arr_int(&la, l->amount, false);
            funds_arr_int(&lt, l->transfer_id, false);
        }
        const char *ip[] = {bf_req_itoa(r, batch_id), funds_arr_end(&lk),
                            funds_arr_end(&lr), funds_arr_end(&la), funds_arr_end(&lt)};
        res = bf_db_prep(r->db, "funds_batch_lines",
                         "INSERT INTO batch_line (batch_id, line_key, recipient, amount_fen, "
                         "  transfer_id) SELECT $1, x.k, x.r, x.a, x.t "
                         "FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) "
                         "  AS x(k, r, a, t)",
                         5, ip, NULL, NULL);
        funds_arr_free(&lk);
        funds_arr_free(&lr);
        funds_arr_free(&la);
        funds_arr_free(&lt);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    size_t ndup = 0, nfail = 0;
    for (size_t i = 0; i < n; i++) {
        if (lines[i].err_code)
            nfail++;
        else if (lines[i].duplicate)
            ndup++;
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 11);
    bf_mp_kv_int(pk, "id", batch_id);
    bf_mp_kv_str(pk, "batch_key", batch_key);
    if (budget_id)
        bf_mp_kv_int(pk, "budget_id", budget_id);
    else
        bf_mp_kv_nil(pk, "budget_id");
    if (project_id)
        bf_mp_kv_int(pk, "project_id", project_id);
    else
        bf_mp_kv_nil(pk, "project_id");
    bf_mp_kv_str(pk, "purpose", purpose);
    bf_mp_kv_int(pk, "paid", (int64_t)npay);
    bf_mp_kv_int(pk, "duplicates", (int64_t)ndup);
    bf_mp_kv_int(pk, "failed", (int64_t)nfail);
    bf_mp_kv_int(pk, "paid_fen", total);
    bf_mp_kv_int(pk, "first_transfer_id", npay ? x[0].id : 0);
    bf_mp_kv_int(pk, "last_transfer_id", npay ? x[npay - 1].id : 0);
    if (funds_emit(r, &ev, "batch.disbursed",
                   bf_arena_printf(r->arena, "batch/%lld", (long long)batch_id)) != 0)
        return -1;

    msgpack_pack_map(r->out, 8);
    bf_mp_kv_int(r->out, "id", batch_id);
    bf_mp_kv_str(r->out, "batch_key", batch_key);
    bf_mp_kv_int(r->out, "paid", (int64_t)npay);
    bf_mp_kv_int(r->out, "duplicates", (int64_t)ndup);
    bf_mp_kv_int(r->out, "failed", (int64_t)nfail);
    bf_mp_kv_int(r->out, "paid_fen", total);
    bf_mp_kv_int(r->out, "payer_balance_fen", balance);
    bf_mp_key(r->out, "lines");
    msgpack_pack_array(r->out, n);
    for (size_t i = 0; i < n; i++) {
        s_line_t *l = &lines[i];
        if (l->err_code) {
            msgpack_pack_map(r->out, 3);
            bf_mp_kv_str(r->out, "line_key", l->key);
            bf_mp_kv_str(r->out, "status", "error");
            bf_mp_key(r->out, "error");
            msgpack_pack_map(r->out, 3);
            bf_mp_kv_str(r->out, "code", l->err_code);
            bf_mp_kv_str(r->out, "message", l->err_msg);
            bf_mp_kv_str(r->out, "field", l->err_field);
        } else {
            msgpack_pack_map(r->out, 5);
            bf_mp_kv_str(r->out, "line_key", l->key);
            bf_mp_kv_str(r->out, "status", "ok");
            bf_mp_kv_int(r->out, "transfer_id", l->transfer_id);
            bf_mp_kv_int(r->out, "amount_fen", l->amount);
            bf_mp_kv_bool(r->out, "duplicate", l->duplicate);
        }
    }
    return funds_idem_commit(r, &idem);
}
