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
 * order), fails alone while the others are paid.
 *
 * Paid in chunks, so a large batch does not hold the ledger head (which every
 * payment takes) for its whole length: the start (one transaction with the
 * request key's claim) decides which lines this request pays, records them in
 * batch_run and holds their total on the payer; then chunks of
 * funds.chunk_rows lines, each its own transaction, take the head, release
 * their part of the hold and pay. The first chunk shares the starting
 * transaction, so a batch of at most chunk_rows lines is one transaction
 * (which needs no hold, and takes its head, plan and result from the start
 * instead of reading them again: nobody else can pay meanwhile). A
 * retry with the same request key after an interruption resumes after the
 * last committed chunk (a line is paid at most once: batch_line's key), and
 * the result, built from what the batch's lines hold at the end, is stored
 * with the key when the last chunk commits.
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
    bool bad;   /* wrong in itself (read, or its key repeated in the request) */
    bool mine;  /* paid by this request */
    bool taken; /* in a chunk: paid meanwhile by another request */
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

typedef struct {
    const char *batch_key, *purpose, *key;
    int64_t budget_id, project_id, payer, batch_id, root;
    int year;
    s_line_t *lines;
    size_t n;
    s_key_t *keys;
    size_t nk;
    /* set by s_start for the first chunk, which shares its transaction: the
     * head it took (still held), the planned line indexes, and the knowledge
     * that no other request paid a line since (that needs the head) */
    bool fresh;
    funds_head_t head;
    int64_t *planned;
    size_t nplanned;
    int64_t avail_after; /* what the payer has once the planned lines are paid */
    bool unheld; /* all planned lines fit the first chunk: nothing was held */
} s_batch_t;

/* The payer's root budget and year. */
static int s_payer(bf_req_t *r, s_batch_t *b)
{
    const char *pp[] = {bf_req_itoa(r, b->payer)};
    PGresult *res = b->project_id
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
        return b->project_id ? bf_req_fail(r, BF_E_NOT_FOUND, "project_id", "no project %lld",
                                           (long long)b->project_id)
                             : bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                                           (long long)b->budget_id);
    }
    b->root = bf_db_int(res, 0, "root_id");
    b->year = (int)bf_db_int(res, 0, "year");
    PQclear(res);
    return 0;
}

/* The lines of batch $1 whose keys are in the text array $2 (each key once),
 * one probe of batch_line's primary key per key: "FROM S_KEYS_PROBE(cols,
 * joins)" gives the columns cols of batch_line bl (and of joins, looked up by
 * bl) as rows "x".
 *
 * Not "WHERE bl.batch_id = $1 AND bl.line_key = ANY($2)": once a worker's
 * connection has run such a statement a few times with small arrays (one-line
 * batches), PostgreSQL keeps a generic plan for it, which takes the batch's
 * lines by batch_id and tests each against the whole array, one element after
 * the other: lines x keys comparisons, which made a 20,000-line batch
 * quadratic (each chunk asks about its 2,000 keys among the up to 18,000 lines
 * paid before it, the result about 20,000 keys among 20,000 lines). A plain
 * join with unnest($2) would leave the planner that choice in another form (a
 * nested loop over the lines that rescans the keys for each). A LATERAL
 * subquery with a LIMIT is never flattened into the outer query, so every plan is a loop over
 * the keys with one index lookup each: linear in the keys, whatever the
 * batch's size. LIMIT 1 changes nothing else: (batch_id, line_key) is the
 * primary key. */
#define S_KEYS_PROBE(cols, joins)                                                    \
    "unnest($2::text[]) AS k(line_key) CROSS JOIN LATERAL ("                         \
    "SELECT " cols " FROM batch_line bl " joins                                      \
    " WHERE bl.batch_id = $1::bigint AND bl.line_key = k.line_key LIMIT 1) x"

/* The first line (by index) with this key, or -1. */
static long s_find(const s_batch_t *b, const char *key)
{
    s_key_t probe = {key, 0};
    size_t lo = 0, hi = b->nk;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s_key_cmp(&b->keys[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= b->nk || strcmp(b->keys[lo].key, key) != 0) return -1;
    return (long)b->keys[lo].idx;
}

/* The lines of this request the batch already holds: paid by this request
 * (mine, when key is given), else a duplicate, or a conflict when the
 * recipient or amount differ. */
static int s_mark_paid(bf_req_t *r, s_batch_t *b, const char *key)
{
    funds_arr_t ak;
    funds_arr_init(&ak);
    for (size_t i = 0; i < b->n; i++)
        if (!b->lines[i].bad) funds_arr_text(&ak, b->lines[i].key);
    const char *lp[] = {bf_req_itoa(r, b->batch_id), funds_arr_end(&ak), key ? key : ""};
    PGresult *res = bf_db_prep(
        r->db, "funds_batch_paid",
        "SELECT x.line_key, x.recipient, x.amount_fen, x.transfer_id, x.mine "
        "FROM " S_KEYS_PROBE("bl.line_key, bl.recipient, bl.amount_fen, bl.transfer_id, "
                             "t.request_key = $3 AS mine",
                             "JOIN transfer t ON t.id = bl.transfer_id"),
        3, lp, NULL, NULL);
    funds_arr_free(&ak);
    if (!res) return bf_req_db_fail(r);
    int npaid = PQntuples(res);
    for (int k = 0; k < npaid; k++) {
        long i = s_find(b, bf_db_str(res, k, "line_key"));
        if (i < 0) continue;
        s_line_t *l = &b->lines[i];
        l->transfer_id = bf_db_int(res, k, "transfer_id");
        if (key && bf_db_bool(res, k, "mine")) {
            l->mine = true;
        } else if (strcmp(l->recipient, bf_db_str(res, k, "recipient")) != 0 ||
                   l->amount != bf_db_int(res, k, "amount_fen")) {
            l->transfer_id = 0;
            s_line_fail(r, l, BF_E_CONFLICT, bf_arena_printf(r->arena, "lines[%ld].line_key", i),
                        "this line_key was already paid with another recipient or amount");
        } else {
            l->duplicate = true;
        }
    }
    PQclear(res);
    return 0;
}

/* The start, in the transaction the request key's claim opened: the batch
 * (found by key or created), the lines this request pays (neither bad, nor
 * paid before, and covered by what the payer has, in order) recorded in
 * batch_run, and their total held on the payer. */
static int s_start(bf_req_t *r, s_batch_t *b)
{
    if (funds_ledger_lock(r, &b->head) != 0) return -1;
    if (s_payer(r, b) != 0) return -1;
    const char *bp[] = {b->batch_key,
                        bf_req_itoa(r, b->payer),
                        b->budget_id ? bf_req_itoa(r, b->budget_id) : NULL,
                        b->project_id ? bf_req_itoa(r, b->project_id) : NULL,
                        b->purpose,
                        r->actor};
    PGresult *res = bf_db_prep(r->db, "funds_batch_upsert",
                     "WITH ins AS (INSERT INTO batch (batch_key, payer_id, budget_id, project_id, "
                     "  purpose, created_by) VALUES ($1, $2, $3, $4, $5, $6) "
                     "  ON CONFLICT (batch_key) DO NOTHING RETURNING id, payer_id) "
                     "SELECT id, payer_id FROM ins UNION ALL "
                     "SELECT id, payer_id FROM batch WHERE batch_key = $1",
                     6, bp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    b->batch_id = bf_db_int(res, 0, "id");
    int64_t batch_payer = bf_db_int(res, 0, "payer_id");
    PQclear(res);
    if (batch_payer != b->payer)
        return bf_req_fail(r, BF_E_CONFLICT, "batch_key",
                           "batch %s pays from account %lld, not %lld", b->batch_key,
                           (long long)batch_payer, (long long)b->payer);
    if (s_mark_paid(r, b, NULL) != 0) return -1;

    /* what the payer can cover, line by line in order (what a running
     * allocation or batch holds on it is not available) */
    int64_t balance;
    if (funds_account_available(r, b->payer, &balance) != 0) return -1;
    b->planned = bf_arena_alloc(r->arena, b->n * sizeof *b->planned);
    if (!b->planned) return bf_req_fail(r, BF_E_EXHAUSTED, "lines", "out of memory");
    b->nplanned = 0;
    funds_arr_t ap;
    funds_arr_init(&ap);
    int64_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        s_line_t *l = &b->lines[i];
        if (l->err_code || l->duplicate || l->amount > balance) continue;
        balance -= l->amount;
        total += l->amount; /* <= the starting balance: no overflow */
        funds_arr_int(&ap, (int64_t)i, false);
        b->planned[b->nplanned++] = (int64_t)i;
    }
    b->avail_after = balance;
    const char *rp[] = {b->key, bf_req_itoa(r, b->batch_id), bf_req_itoa(r, b->payer),
                        funds_arr_end(&ap), bf_req_itoa(r, total)};
    res = bf_db_prep(r->db, "funds_batch_run_create",
                     "INSERT INTO batch_run (request_key, batch_id, payer_id, planned, planned_fen) "
                     "VALUES ($1, $2, $3, $4::integer[], $5)",
                     5, rp, NULL, NULL);
    funds_arr_free(&ap);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    /* a hold keeps the planned total from others between the chunks'
     * transactions; lines that all fit the first chunk are paid in this
     * transaction, under the head, and need none (nor its release) */
    b->unheld = b->nplanned <= (size_t)bf_cfg_int(r->cfg, "funds.chunk_rows");
    if (total > 0 && !b->unheld) {
        const char *hp[] = {bf_req_itoa(r, b->payer), bf_req_itoa(r, total)};
        res = bf_db_prep(r->db, "funds_batch_hold",
                         "UPDATE account SET held_fen = held_fen + $2 WHERE id = $1", 2, hp, NULL,
                         NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    b->fresh = true;
    return 0;
}

/* One chunk: the planned lines [done, done + k) that nobody paid meanwhile.
 * Returns 0 or -1; *first / *last are the ids appended (0 if none). */
static int s_chunk(bf_req_t *r, s_batch_t *b, funds_head_t *head, const int64_t *idx, size_t k,
                   funds_xfer_t *x, int64_t *first, int64_t *last, int64_t *paid_fen)
{
    *first = *last = 0;
    *paid_fen = 0;
    /* lines another request (another key, same batch) paid since the start;
     * none in the start's own transaction, which has held the head since it
     * read the paid lines */
    PGresult *res = NULL;
    if (!b->fresh) {
        funds_arr_t ak;
        funds_arr_init(&ak);
        for (size_t j = 0; j < k; j++) funds_arr_text(&ak, b->lines[idx[j]].key);
        const char *lp[] = {bf_req_itoa(r, b->batch_id), funds_arr_end(&ak)};
        res = bf_db_prep(r->db, "funds_batch_taken",
                         "SELECT x.line_key FROM " S_KEYS_PROBE("bl.line_key", ""), 2, lp, NULL,
                         NULL);
        funds_arr_free(&ak);
        if (!res) return bf_req_db_fail(r);
        for (int t = 0; t < PQntuples(res); t++) {
            long i = s_find(b, bf_db_str(res, t, "line_key"));
            if (i >= 0) b->lines[i].taken = true;
        }
        PQclear(res);
        res = NULL;
    }
    int64_t release = 0;
    size_t npay = 0;
    funds_arr_t ar;
    funds_arr_init(&ar);
    for (size_t j = 0; j < k; j++) {
        s_line_t *l = &b->lines[idx[j]];
        release += l->amount; /* part of the held total: fits */
        if (l->taken) continue;
        funds_arr_text(&ar, l->recipient);
        npay++;
    }
    if (npay) {
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
    }
    funds_arr_free(&ar);
    if (npay && !res) return bf_req_db_fail(r);
    if (npay && (size_t)PQntuples(res) != npay) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, "lines", "recipient accounts went missing");
    }
    for (size_t j = 0, m = 0; npay && j < k; j++) {
        s_line_t *l = &b->lines[idx[j]];
        if (l->taken) continue;
        l->account = bf_db_int(res, (int)m, "id");
        x[m] = (funds_xfer_t){.from = b->payer,
                              .to = l->account,
                              .amount = l->amount,
                              .kind = "disbursement",
                              .year = b->year,
                              .budget_id = b->root,
                              .project_id = b->project_id,
                              .ref = bf_arena_printf(r->arena, "batch/%lld#%s",
                                                     (long long)b->batch_id, l->key),
                              .note = l->note};
        m++;
    }
    if (npay) PQclear(res);
    /* this chunk's part of the hold is released as it is spent (or as its
     * lines turn out paid by another request) */
    if (!b->unheld) {
        const char *hp[] = {bf_req_itoa(r, b->payer), bf_req_itoa(r, release)};
        res = bf_db_prep(r->db, "funds_batch_release",
                         "UPDATE account SET held_fen = held_fen - $2 WHERE id = $1", 2, hp,
                         NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    if (!npay) return 0;
    if (funds_ledger_append(r, head, x, npay, b->key, "lines") != 0) return -1;
    funds_arr_t lk, lr, la, lt;
    funds_arr_init(&lk);
    funds_arr_init(&lr);
    funds_arr_init(&la);
    funds_arr_init(&lt);
    for (size_t j = 0, m = 0; j < k; j++) {
        s_line_t *l = &b->lines[idx[j]];
        if (l->taken) continue;
        funds_arr_text(&lk, l->key);
        funds_arr_text(&lr, l->recipient);
        funds_arr_int(&la, l->amount, false);
        l->mine = true;
        l->transfer_id = x[m].id;
        funds_arr_int(&lt, x[m++].id, false);
        *paid_fen += l->amount;
    }
    const char *ip[] = {bf_req_itoa(r, b->batch_id), funds_arr_end(&lk),
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
    *first = x[0].id;
    *last = x[npay - 1].id;
    return 0;
}

/* The result, when the last chunk is done, from what the batch holds now:
 * lines paid by this request, duplicates and conflicts of lines paid by
 * others, and the rest, which the payer could not cover at the start. A batch
 * done in the start's one transaction (start_tx) knows it all already: the
 * start marked the lines paid before, its one chunk marked what it paid, and
 * nobody else could pay a line or touch the payer meanwhile (the head). */
static int s_finish(bf_req_t *r, s_batch_t *b, int64_t first, int64_t last, int64_t chunks,
                    bool start_tx)
{
    if (!start_tx) {
        for (size_t i = 0; i < b->n; i++) {
            s_line_t *l = &b->lines[i];
            if (l->bad) continue;
            l->err_code = NULL;
            l->duplicate = l->mine = false;
            l->transfer_id = 0;
        }
        if (s_mark_paid(r, b, b->key) != 0) return -1;
    }
    size_t npay = 0, ndup = 0, nfail = 0;
    int64_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        s_line_t *l = &b->lines[i];
        if (!l->err_code && !l->duplicate && !l->mine) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "insufficient funds: the payer could not cover this line of %s yuan after "
                     "the lines before it",
                     funds_yuan(r, l->amount));
            s_line_fail(r, l, BF_E_PRECONDITION,
                        bf_arena_printf(r->arena, "lines[%zu].amount_fen", i), msg);
        }
        if (l->err_code) {
            nfail++;
        } else if (l->duplicate) {
            ndup++;
        } else {
            npay++;
            total += l->amount;
        }
    }
    int64_t balance = b->avail_after;
    if (!start_tx && funds_account_available(r, b->payer, &balance) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 12);
    bf_mp_kv_int(pk, "id", b->batch_id);
    bf_mp_kv_str(pk, "batch_key", b->batch_key);
    if (b->budget_id)
        bf_mp_kv_int(pk, "budget_id", b->budget_id);
    else
        bf_mp_kv_nil(pk, "budget_id");
    if (b->project_id)
        bf_mp_kv_int(pk, "project_id", b->project_id);
    else
        bf_mp_kv_nil(pk, "project_id");
    bf_mp_kv_str(pk, "purpose", b->purpose);
    bf_mp_kv_int(pk, "paid", (int64_t)npay);
    bf_mp_kv_int(pk, "duplicates", (int64_t)ndup);
    bf_mp_kv_int(pk, "failed", (int64_t)nfail);
    bf_mp_kv_int(pk, "paid_fen", total);
    bf_mp_kv_int(pk, "first_transfer_id", first);
    bf_mp_kv_int(pk, "last_transfer_id", last);
    bf_mp_kv_int(pk, "chunks", chunks);
    if (funds_emit(r, &ev, "batch.disbursed",
                   bf_arena_printf(r->arena, "batch/%lld", (long long)b->batch_id)) != 0)
        return -1;

    msgpack_pack_map(r->out, 9);
    bf_mp_kv_int(r->out, "id", b->batch_id);
    bf_mp_kv_str(r->out, "batch_key", b->batch_key);
    bf_mp_kv_int(r->out, "paid", (int64_t)npay);
    bf_mp_kv_int(r->out, "duplicates", (int64_t)ndup);
    bf_mp_kv_int(r->out, "failed", (int64_t)nfail);
    bf_mp_kv_int(r->out, "paid_fen", total);
    bf_mp_kv_int(r->out, "payer_balance_fen", balance);
    bf_mp_kv_int(r->out, "chunks", chunks);
    bf_mp_key(r->out, "lines");
    msgpack_pack_array(r->out, b->n);
    for (size_t i = 0; i < b->n; i++) {
        s_line_t *l = &b->lines[i];
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
    return 0;
}

/* The chunks, from the progress in batch_run (re-read under the head in
 * each, so concurrent retries of one key never pay a line twice). */
static int s_chunks(bf_req_t *r, s_batch_t *b, funds_idem_t *idem, bool open)
{
    size_t chunk = (size_t)bf_cfg_int(r->cfg, "funds.chunk_rows");
    if (chunk > b->n) chunk = b->n;
    int64_t *idx = bf_arena_alloc(r->arena, chunk * sizeof *idx + 1);
    funds_xfer_t *x = bf_arena_alloc(r->arena, chunk * sizeof *x + 1);
    if (!idx || !x) return bf_req_fail(r, BF_E_EXHAUSTED, "lines", "out of memory");
    const char *kp[] = {b->key};
    for (;;) {
        if (!open && bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        open = true;
        funds_head_t head;
        PGresult *res;
        bool finished = false, start_tx = b->fresh, stepped = false;
        int64_t done = 0, np = (int64_t)b->nplanned, chunks = 0, first = 0, last = 0;
        if (b->fresh) {
            /* the start's transaction: its head, its batch_run as created */
            head = b->head;
        } else {
            if (funds_ledger_lock(r, &head) != 0) return -1;
            res = bf_db_prep(
                r->db, "funds_batch_progress",
                "SELECT batch_id, state, applied, cardinality(planned) AS nplanned, chunks, "
                "  COALESCE(first_transfer_id, 0) AS first, COALESCE(last_transfer_id, 0) AS last "
                "FROM batch_run WHERE request_key = $1 FOR UPDATE",
                1, kp, NULL, NULL);
            if (!res) return bf_req_db_fail(r);
            if (PQntuples(res) != 1) {
                PQclear(res);
                return bf_req_fail(r, BF_E_INTERNAL, "request_key",
                                   "the batch run of request_key %s is missing", b->key);
            }
            b->batch_id = bf_db_int(res, 0, "batch_id");
            finished = strcmp(bf_db_str(res, 0, "state"), "done") == 0;
            done = bf_db_int(res, 0, "applied");
            np = bf_db_int(res, 0, "nplanned");
            chunks = bf_db_int(res, 0, "chunks");
            first = bf_db_int(res, 0, "first");
            last = bf_db_int(res, 0, "last");
            PQclear(res);
        }
        if (finished) {
            /* a concurrent retry finished it: replay its stored result */
            bf_db_rollback(r->db);
            int rc = funds_idem_begin(r, idem);
            return rc > 0 ? 0 : -1;
        }
        if (done < np) {
            size_t k;
            if (b->fresh) {
                /* the payer was read and the plan made in this transaction */
                k = b->nplanned < chunk ? b->nplanned : chunk;
                memcpy(idx, b->planned, k * sizeof *idx);
            } else {
                if (s_payer(r, b) != 0) return -1;
                const char *sp[] = {b->key, bf_req_itoa(r, done + 1),
                                    bf_req_itoa(r, done + (int64_t)chunk)};
                res = bf_db_prep(r->db, "funds_batch_slice",
                                 "SELECT u.i FROM batch_run br, "
                                 "  unnest(br.planned[$2::int:$3::int]) WITH ORDINALITY AS u(i, o) "
                                 "WHERE br.request_key = $1 ORDER BY u.o",
                                 3, sp, NULL, NULL);
                if (!res) return bf_req_db_fail(r);
                k = (size_t)PQntuples(res);
                if (k > chunk) k = chunk;
                for (size_t j = 0; j < k; j++) idx[j] = bf_db_int(res, (int)j, "i");
                PQclear(res);
            }
            for (size_t j = 0; j < k; j++)
                if (idx[j] < 0 || (size_t)idx[j] >= b->n || b->lines[idx[j]].bad)
                    return bf_req_fail(r, BF_E_INTERNAL, "request_key",
                                       "the batch run of request_key %s does not match its lines",
                                       b->key);
            if (k == 0)
                return bf_req_fail(r, BF_E_INTERNAL, "request_key",
                                   "the batch run of request_key %s has no lines left", b->key);
            int64_t f, l, paid_fen;
            if (s_chunk(r, b, &head, idx, k, x, &f, &l, &paid_fen) != 0) return -1;
            b->fresh = false; /* later chunks are transactions of their own */
            if (!first) first = f;
            if (l) last = l;
            chunks++;
            done += (int64_t)k;
            const char *up[] = {b->key, bf_req_itoa(r, (int64_t)k), bf_req_itoa(r, paid_fen),
                                first ? bf_req_itoa(r, first) : NULL,
                                last ? bf_req_itoa(r, last) : NULL,
                                done >= np ? "done" : "running"};
            /* the last chunk's step also ends the run */
            res = bf_db_prep(r->db, "funds_batch_step",
                             "UPDATE batch_run SET applied = applied + $2::int, "
                             "  paid_fen = paid_fen + $3::bigint, chunks = chunks + 1, "
                             "  first_transfer_id = $4::bigint, last_transfer_id = $5::bigint, "
                             "  state = $6, "
                             "  completed_at = CASE WHEN $6 = 'done' THEN now() END "
                             "WHERE request_key = $1",
                             6, up, NULL, NULL);
            if (!res) return bf_req_db_fail(r);
            PQclear(res);
            stepped = true;
        }
        if (done >= np) {
            if (!stepped) {
                res = bf_db_prep(r->db, "funds_batch_done",
                                 "UPDATE batch_run SET state = 'done', completed_at = now() "
                                 "WHERE request_key = $1",
                                 1, kp, NULL, NULL);
                if (!res) return bf_req_db_fail(r);
                PQclear(res);
            }
            if (s_finish(r, b, first, last, chunks, start_tx) != 0) return -1;
            return funds_idem_commit(r, idem);
        }
        if (funds_evidence_flush(r) != 0) return -1;
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
        open = false;
    }
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
    /* more lines than one chunk commit in chunks of their own: never inside
     * a commit group, whose other members would wait for the whole batch */
    if (n > (size_t)bf_cfg_int(r->cfg, "funds.chunk_rows") && bf_req_alone(r) != 0) return -1;
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
    for (size_t i = 0; i < n; i++) lines[i].bad = lines[i].err_code != NULL;


    funds_idem_t idem;
    int rc = funds_idem_begin_resumable(r, &idem);
    if (rc < 0) return -1;
    if (rc == 1) return 0;
    s_batch_t b = {.batch_key = batch_key, .purpose = purpose, .budget_id = budget_id,
                   .project_id = project_id, .payer = project_id ? project_id : budget_id,
                   .lines = lines, .n = n, .keys = keys, .nk = nk, .key = idem.key};
    bool open = rc == 0; /* the starting transaction is open */
    if (open && s_start(r, &b) != 0) return -1;
    return s_chunks(r, &b, &idem, open);
}
