/* budget.c: budgets per recipient and year, and allocation.
 *
 * A root budget (e.g. seed 003: 承德县, 2016, 20,000,000 yuan through the
 * carrier unit 东丽开发区) is funded by one or more sources. An allocation
 * splits an amount of a budget across many recipients, by fixed amounts or by
 * weights, with the largest-remainder method so the parts always sum to the
 * whole; applying it moves each part into a child budget of that recipient
 * (created on first use), all in one transaction with bulk statements, so
 * 130,000 recipients take a handful of statements, not 130,000.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ funding */

typedef struct {
    int64_t source_id, amount;
} s_funding_t;

/* Reads `funding`: 1..32 maps {source_id, amount_fen}, distinct sources. */
static int s_read_funding(bf_req_t *r, s_funding_t **out, size_t *n, int64_t *total)
{
    const msgpack_object_array *list;
    if (bf_req_list(r, r->params, NULL, "funding", true, 32, &list) != 0) return -1;
    if (list->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "funding", "funding needs at least one source");
    s_funding_t *f = bf_arena_alloc(r->arena, list->size * sizeof *f);
    if (!f) return bf_req_fail(r, BF_E_EXHAUSTED, "funding", "out of memory");
    *total = 0;
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *o = &list->ptr[i];
        const char *prefix = bf_arena_printf(r->arena, "funding[%u]", i);
        if (o->type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, prefix, "%s must be a map {source_id, amount_fen}",
                               prefix);
        if (bf_req_int(r, o, prefix, "source_id", true, 1, INT64_MAX, &f[i].source_id) != 0)
            return -1;
        if (funds_req_amount(r, o, prefix, "amount_fen", true, 1, &f[i].amount) != 0) return -1;
        for (uint32_t k = 0; k < i; k++)
            if (f[k].source_id == f[i].source_id)
                return bf_req_fail(r, BF_E_INVALID, bf_req_field(r, prefix, "source_id"),
                                   "source %lld appears twice in funding",
                                   (long long)f[i].source_id);
        if (bf_money_add(*total, f[i].amount, total) != 0)
            return bf_req_fail(r, BF_E_INVALID, bf_req_field(r, prefix, "amount_fen"),
                               "the funding amounts overflow a 64-bit sum");
    }
    *out = f;
    *n = list->size;
    return 0;
}

/* Moves the funding from its sources into a root budget (head locked). */
static int s_fund(bf_req_t *r, funds_head_t *head, int64_t budget_id, int year,
                  const s_funding_t *f, size_t n, const char *request_key, const char *note,
                  funds_xfer_t **xo)
{
    funds_xfer_t *x = bf_arena_alloc(r->arena, n * sizeof *x);
    if (!x) return bf_req_fail(r, BF_E_EXHAUSTED, "funding", "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *p[] = {bf_req_itoa(r, f[i].source_id)};
        PGresult *res = bf_db_prep(r->db, "funds_source_exists",
                                   "SELECT 1 FROM source WHERE id = $1", 1, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res) == 1;
        PQclear(res);
        if (!found)
            return bf_req_fail(r, BF_E_NOT_FOUND,
                               bf_arena_printf(r->arena, "funding[%zu].source_id", i),
                               "no source %lld", (long long)f[i].source_id);
        x[i] = (funds_xfer_t){.from = f[i].source_id,
                              .to = budget_id,
                              .amount = f[i].amount,
                              .kind = "funding",
                              .year = year,
                              .budget_id = budget_id,
                              .source_id = f[i].source_id,
                              .ref = bf_arena_printf(r->arena, "budget/%lld", (long long)budget_id),
                              .note = note};
    }
    if (funds_ledger_append(r, head, x, n, request_key, "funding") != 0) return -1;
    *xo = x;
    return 0;
}

static void s_pack_funding(msgpack_packer *pk, const s_funding_t *f, const funds_xfer_t *x,
                           size_t n)
{
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(pk, 3);
        bf_mp_kv_int(pk, "source_id", f[i].source_id);
        bf_mp_kv_int(pk, "amount_fen", f[i].amount);
        bf_mp_kv_int(pk, "transfer_id", x[i].id);
    }
}

int budget_create(bf_req_t *r)
{
    const char *recipient, *name = "", *carrier = NULL;
    int year;
    s_funding_t *f;
    size_t nf;
    int64_t total;
    if (funds_req_recipient(r, r->params, NULL, "recipient", true, &recipient) != 0) return -1;
    if (funds_req_year(r, "year", true, &year) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "name", false, 200, &name) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "carrier", false, 200, &carrier) < 0) return -1;
    if (s_read_funding(r, &f, &nf, &total) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    char ys[8];
    snprintf(ys, sizeof ys, "%d", year);
    const char *up[] = {recipient, ys, name};
    PGresult *res = bf_db_prep(r->db, "funds_budget_root_exists",
                               "SELECT id FROM budget WHERE parent_id IS NULL AND recipient = $1 "
                               "AND year = $2 AND name = $3",
                               3, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t existing = PQntuples(res) ? bf_db_int(res, 0, "id") : 0;
    PQclear(res);
    if (existing)
        return bf_req_fail(r, BF_E_EXISTS, "recipient",
                           "%s already has a %d budget%s%s (id %lld)", recipient, year,
                           *name ? " named " : "", name, (long long)existing);
    const char *acct_name =
        bf_arena_printf(r->arena, "budget %s %d%s%s", recipient, year, *name ? " " : "", name);
    int64_t id = funds_account_create(r, "budget", NULL, acct_name);
    if (!id) return -1;
    const char *ids = bf_req_itoa(r, id);
    const char *p[] = {ids, recipient, ys, name, carrier, r->actor};
    res = bf_db_prep(r->db, "funds_budget_create",
                     "INSERT INTO budget (id, parent_id, root_id, recipient, year, name, carrier, "
                     "  created_by) VALUES ($1, NULL, $1, $2, $3, $4, $5, $6)",
                     6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    funds_xfer_t *x;
    if (s_fund(r, &head, id, year, f, nf, idem.key, NULL, &x) != 0) return -1;

    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "recipient", recipient);
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "carrier", carrier);
    bf_mp_kv_int(pk, "total_fen", total);
    bf_mp_key(pk, "funding");
    s_pack_funding(pk, f, x, nf);
    if (funds_emit(r, &ev, "budget.created",
                   bf_arena_printf(r->arena, "budget/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 9);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "account_id", id);
    bf_mp_kv_str(r->out, "recipient", recipient);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "carrier", carrier);
    bf_mp_kv_int(r->out, "total_fen", total);
    bf_mp_kv_int(r->out, "balance_fen", total);
    bf_mp_key(r->out, "funding");
    s_pack_funding(r->out, f, x, nf);
    return funds_idem_commit(r, &idem);
}

int budget_fund(bf_req_t *r)
{
    int64_t id, total;
    const char *note = NULL;
    s_funding_t *f;
    size_t nf;
    if (funds_req_id(r, "budget_id", true, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    if (s_read_funding(r, &f, &nf, &total) != 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "funds_budget_kind",
                               "SELECT parent_id, year FROM budget WHERE id = $1", 1, p, NULL,
                               NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld", (long long)id);
    }
    bool child = !bf_db_null(res, 0, "parent_id");
    int year = (int)bf_db_int(res, 0, "year");
    PQclear(res);
    if (child)
        return bf_req_fail(r, BF_E_PRECONDITION, "budget_id",
                           "budget %lld is a child budget: it is funded by allocation from its "
                           "parent, not by sources",
                           (long long)id);
    funds_xfer_t *x;
    if (s_fund(r, &head, id, year, f, nf, idem.key, note, &x) != 0) return -1;
    int64_t balance;
    if (funds_account_balance(r, id, &balance) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_int(pk, "total_fen", total);
    bf_mp_kv_str(pk, "note", note);
    bf_mp_key(pk, "funding");
    s_pack_funding(pk, f, x, nf);
    if (funds_emit(r, &ev, "budget.funded",
                   bf_arena_printf(r->arena, "budget/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "total_fen", total);
    bf_mp_kv_int(r->out, "balance_fen", balance);
    bf_mp_key(r->out, "funding");
    s_pack_funding(r->out, f, x, nf);
    return funds_idem_commit(r, &idem);
}

/* One statement: the budget, the net figures of its account by what the money
 * did, and its funding by source (a JSON array, funds_pack_json_list). */
int budget_get(bf_req_t *r)
{
    int64_t id;
    if (funds_req_id(r, "id", true, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *b = bf_db_prep(
        r->db, "funds_budget_get1",
        "SELECT b.id, b.parent_id, b.root_id, b.recipient, b.year, b.name, b.carrier, "
        "  b.created_by, a.balance_fen, "
        "  (SELECT count(*) FROM budget c WHERE c.parent_id = b.id) AS children, "
        "  (SELECT count(*) FROM project j WHERE j.budget_id = b.id) AS projects, "
        "  fig.received_fen, fig.allocated_fen, fig.disbursed_fen, "
        "  (SELECT json_agg(json_build_object('source_id', f.source_id, 'name', f.name, "
        "     'kind', f.kind, 'amount_fen', f.amount_fen) ORDER BY f.source_id)::text "
        "   FROM (SELECT x.source_id, s.name, s.kind, sum(x.amt)::bigint AS amount_fen FROM ( "
        "       SELECT source_id, amount_fen AS amt FROM transfer "
        "         WHERE to_account = b.id AND kind = 'funding' "
        "       UNION ALL SELECT source_id, -amount_fen FROM transfer "
        "         WHERE from_account = b.id AND kind = 'reversal' AND to_account = source_id) x "
        "     JOIN source s ON s.id = x.source_id GROUP BY 1, 2, 3 HAVING sum(x.amt) <> 0) f) "
        "    AS funding "
        "FROM budget b JOIN account a ON a.id = b.id "
        /* net figures of this budget's account, by what the money did */
        "CROSS JOIN LATERAL (WITH m AS ( "
        "  SELECT COALESCE(o.kind, t.kind) AS kind, "
        "    CASE WHEN t.kind = 'reversal' THEN -t.amount_fen ELSE t.amount_fen END AS amt, "
        "    (CASE WHEN t.kind = 'reversal' THEN t.to_account ELSE t.from_account END) = b.id "
        "      AS outgoing "
        "  FROM transfer t LEFT JOIN transfer o ON t.kind = 'reversal' AND o.id = t.reverses_id "
        "  WHERE t.from_account = b.id OR t.to_account = b.id) "
        "  SELECT COALESCE(sum(amt) FILTER (WHERE NOT outgoing), 0) AS received_fen, "
        "    COALESCE(sum(amt) FILTER (WHERE outgoing AND kind IN ('allocation', "
        "      'project_funding')), 0) AS allocated_fen, "
        "    COALESCE(sum(amt) FILTER (WHERE outgoing AND kind = 'disbursement'), 0) "
        "      AS disbursed_fen FROM m) fig "
        "WHERE b.id = $1",
        1, p, NULL, NULL);
    if (!b) return bf_req_db_fail(r);
    if (PQntuples(b) != 1) {
        PQclear(b);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no budget %lld", (long long)id);
    }
    msgpack_pack_map(r->out, 15);
    bf_mp_kv_int(r->out, "id", id);
    if (bf_db_null(b, 0, "parent_id"))
        bf_mp_kv_nil(r->out, "parent_id");
    else
        bf_mp_kv_int(r->out, "parent_id", bf_db_int(b, 0, "parent_id"));
    bf_mp_kv_int(r->out, "root_id", bf_db_int(b, 0, "root_id"));
    bf_mp_kv_str(r->out, "recipient", bf_db_str(b, 0, "recipient"));
    bf_mp_kv_int(r->out, "year", bf_db_int(b, 0, "year"));
    bf_mp_kv_str(r->out, "name", bf_db_str(b, 0, "name"));
    bf_mp_kv_str(r->out, "carrier", bf_db_str(b, 0, "carrier"));
    bf_mp_kv_int(r->out, "balance_fen", bf_db_int(b, 0, "balance_fen"));
    bf_mp_kv_int(r->out, "received_fen", bf_db_int(b, 0, "received_fen"));
    bf_mp_kv_int(r->out, "allocated_fen", bf_db_int(b, 0, "allocated_fen"));
    bf_mp_kv_int(r->out, "disbursed_fen", bf_db_int(b, 0, "disbursed_fen"));
    bf_mp_kv_int(r->out, "children", bf_db_int(b, 0, "children"));
    bf_mp_kv_int(r->out, "projects", bf_db_int(b, 0, "projects"));
    bf_mp_kv_str(r->out, "created_by", bf_db_str(b, 0, "created_by"));
    bf_mp_key(r->out, "funding");
    int rc = funds_pack_json_list(r, b, 0, "funding");
    PQclear(b);
    return rc;
}

/* ------------------------------------------------------------ allocation */

typedef struct {
    int64_t rem;
    const char *name;
    size_t idx;
} s_rank_t;

static int s_rank_cmp(const void *a, const void *b)
{
    const s_rank_t *x = a, *y = b;
    if (x->rem != y->rem) return x->rem > y->rem ? -1 : 1; /* larger remainder first */
    return strcmp(x->name, y->name);
}

int funds_split(int64_t amount, const int64_t *weights, const char *const *names, size_t n,
                int64_t weight_sum, int64_t *parts)
{
    s_rank_t *rank = malloc(n * sizeof *rank);
    if (!rank) return -1;
    int64_t given = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned __int128 q = (unsigned __int128)(uint64_t)amount * (uint64_t)weights[i];
        parts[i] = (int64_t)(q / (uint64_t)weight_sum); /* <= amount */
        rank[i] = (s_rank_t){(int64_t)(q % (uint64_t)weight_sum), names[i], i};
        given += parts[i]; /* <= amount: the floors never exceed the whole */
    }
    int64_t left = amount - given; /* < n, see docs/funds.md */
    if (left > 0) {
        qsort(rank, n, sizeof *rank, s_rank_cmp);
        for (int64_t k = 0; k < left && (size_t)k < n; k++) parts[rank[k].idx] += 1;
    }
    free(rank);
    return 0;
}

typedef struct {
    const char *name;
    size_t idx;
} s_name_t;

static int s_name_cmp(const void *a, const void *b)
{
    const s_name_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* A parsed allocation request. */
typedef struct {
    int64_t budget_id, total;
    const char *rule;
    size_t n;
    const char **names;
    int64_t *values; /* amounts (fixed) or weights */
    int64_t *parts;
    bool from_registry; /* weights_from: recipients and weights asked of the registry */
} s_alloc_t;

static int s_item_fail(bf_req_t *r, uint32_t i, const char *key, const char *msg)
{
    const char *field = bf_arena_printf(r->arena, "recipients[%u]%s%s", i, key ? "." : "",
                                        key ? key : "");
    return bf_req_fail(r, BF_E_INVALID, field, "%s %s", field, msg);
}

static int s_read_alloc(bf_req_t *r, s_alloc_t *a)
{
    static const char *const rules[] = {"fixed", "weights", NULL};
    const msgpack_object_array *list;
    int64_t amount = 0;
    memset(a, 0, sizeof *a);
    if (funds_req_id(r, "budget_id", true, &a->budget_id) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "rule", true, rules, &a->rule) != 0) return -1;
    bool weights = !strcmp(a->rule, "weights");
    int has_amount = funds_req_amount(r, r->params, NULL, "amount_fen", weights, 1, &amount);
    if (has_amount < 0) return -1;
    const msgpack_object *wf = bf_mp_get(r->params, "weights_from");
    if (wf && wf->type == MSGPACK_OBJECT_NIL) wf = NULL;
    int has_list = bf_req_list(r, r->params, NULL, "recipients", !wf, FUNDS_MAX_RECIPIENTS, &list);
    if (has_list < 0) return -1;
    if (wf) {
        /* the recipients and their weights from the registry (weights.c) */
        if (!weights)
            return bf_req_fail(r, BF_E_INVALID, "weights_from",
                               "weights_from goes with rule \"weights\"");
        if (has_list == 0)
            return bf_req_fail(r, BF_E_INVALID, "recipients",
                               "give recipients or weights_from, not both");
        if (funds_weights_from(r, wf, &a->names, &a->values, &a->n) != 0) return -1;
        a->from_registry = true;
        a->parts = bf_arena_alloc(r->arena, a->n * sizeof *a->parts);
        if (!a->parts) return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
        int64_t sum = 0;
        for (size_t i = 0; i < a->n; i++)
            if (bf_money_add(sum, a->values[i], &sum) != 0)
                return bf_req_fail(r, BF_E_INVALID, "weights_from", "the weights overflow");
        a->total = amount;
        if (funds_split(amount, a->values, a->names, a->n, sum, a->parts) != 0)
            return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
        return 0;
    }
    if (list->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "recipients", "recipients must not be empty");
    a->n = list->size;
    a->names = bf_arena_alloc(r->arena, a->n * sizeof *a->names);
    a->values = bf_arena_alloc(r->arena, a->n * sizeof *a->values);
    a->parts = bf_arena_alloc(r->arena, a->n * sizeof *a->parts);
    if (!a->names || !a->values || !a->parts)
        return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
    const char *vkey = weights ? "weight" : "amount_fen";
    int64_t sum = 0;
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *o = &list->ptr[i];
        if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 2)
            return s_item_fail(r, i, NULL,
                               weights ? "must be a map {recipient, weight}"
                                       : "must be a map {recipient, amount_fen}");
        const msgpack_object *rv = bf_mp_get(o, "recipient"), *vv = bf_mp_get(o, vkey);
        if (!rv || rv->type != MSGPACK_OBJECT_STR || rv->via.str.size > FUNDS_RECIPIENT_MAX)
            return s_item_fail(r, i, "recipient", "must be a recipient reference string");
        if (!vv) return s_item_fail(r, i, vkey, "is required");
        const char *name = bf_arena_strndup(r->arena, rv->via.str.ptr, rv->via.str.size);
        if (!name) return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
        if (strlen(name) != rv->via.str.size || funds_recipient_check(name) != 0)
            return s_item_fail(r, i, "recipient",
                               "must be a recipient reference (region:<code>, village:<id>, "
                               "household:<id>, person:<id>, unit:<id>, program:<name>)");
        if (vv->type == MSGPACK_OBJECT_FLOAT32 || vv->type == MSGPACK_OBJECT_FLOAT64)
            return s_item_fail(r, i, vkey, "must be an integer, not a float");
        if (vv->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return s_item_fail(r, i, vkey, "must not be negative");
        if (vv->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return s_item_fail(r, i, vkey, "must be an integer");
        if (vv->via.u64 > (uint64_t)INT64_MAX)
            return s_item_fail(r, i, vkey, "overflows a 64-bit integer");
        a->names[i] = name;
        a->values[i] = (int64_t)vv->via.u64;
        if (bf_money_add(sum, a->values[i], &sum) != 0)
            return bf_req_fail(r, BF_E_INVALID, "recipients",
                               "the recipients' %s overflow a 64-bit sum",
                               weights ? "weights" : "amounts");
    }
    /* each recipient once */
    s_name_t *sorted = malloc(a->n * sizeof *sorted);
    if (!sorted) return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
    for (size_t i = 0; i < a->n; i++) sorted[i] = (s_name_t){a->names[i], i};
    qsort(sorted, a->n, sizeof *sorted, s_name_cmp);
    for (size_t i = 1; i < a->n; i++) {
        if (!strcmp(sorted[i].name, sorted[i - 1].name)) {
            uint32_t dup = (uint32_t)sorted[i].idx;
            free(sorted);
            return s_item_fail(r, dup, "recipient", "names a recipient listed before");
        }
    }
    free(sorted);
    if (weights) {
        if (sum == 0)
            return bf_req_fail(r, BF_E_INVALID, "recipients",
                               "at least one weight must be positive");
        a->total = amount;
        if (funds_split(amount, a->values, a->names, a->n, sum, a->parts) != 0)
            return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
    } else {
        if (sum == 0)
            return bf_req_fail(r, BF_E_INVALID, "recipients",
                               "the fixed amounts must not all be zero");
        if (has_amount == 0 && amount != sum)
            return bf_req_fail(r, BF_E_INVALID, "amount_fen",
                               "amount_fen is %lld but the fixed amounts sum to %lld",
                               (long long)amount, (long long)sum);
        a->total = sum;
        memcpy(a->parts, a->values, a->n * sizeof *a->parts);
    }
    return 0;
}

int allocation_preview(bf_req_t *r)
{
    s_alloc_t a;
    bool include_parts = true;
    if (s_read_alloc(r, &a) != 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "include_parts", false, &include_parts) < 0) return -1;
    int64_t balance;
    const char *p[] = {bf_req_itoa(r, a.budget_id)};
    PGresult *res = bf_db_prep(r->db, "funds_budget_balance",
                               "SELECT a.balance_fen FROM budget b JOIN account a ON a.id = b.id "
                               "WHERE b.id = $1",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                           (long long)a.budget_id);
    }
    balance = bf_db_int(res, 0, "balance_fen");
    PQclear(res);
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_int(r->out, "budget_id", a.budget_id);
    bf_mp_kv_str(r->out, "rule", a.rule);
    bf_mp_kv_int(r->out, "total_fen", a.total);
    bf_mp_kv_int(r->out, "recipients", (int64_t)a.n);
    bf_mp_kv_int(r->out, "budget_balance_fen", balance);
    bf_mp_kv_bool(r->out, "sufficient", balance >= a.total);
    bf_mp_key(r->out, "parts");
    if (!include_parts) {
        msgpack_pack_nil(r->out);
        return 0;
    }
    msgpack_pack_array(r->out, a.n);
    for (size_t i = 0; i < a.n; i++) {
        /* from the registry, the weights too: they can go to apply as recipients */
        msgpack_pack_map(r->out, a.from_registry ? 3 : 2);
        bf_mp_kv_str(r->out, "recipient", a.names[i]);
        if (a.from_registry) bf_mp_kv_int(r->out, "weight", a.values[i]);
        bf_mp_kv_int(r->out, "amount_fen", a.parts[i]);
    }
    return 0;
}

/* Finds or creates the child budgets of parent for names[0..n) (all with a
 * part); ids[i] receives each one's id. Two statements whatever n is: one
 * creates the missing accounts and budgets together (a child budget's
 * account has ref "<parent id>/<recipient>", which maps the generated ids
 * back to recipients), one reads every id in input order. */
static int s_children(bf_req_t *r, int64_t parent, int64_t root, int year, const char **names,
                      size_t n, int64_t *ids)
{
    funds_arr_t an;
    funds_arr_init(&an);
    for (size_t i = 0; i < n; i++) funds_arr_text(&an, names[i]);
    char ys[8];
    snprintf(ys, sizeof ys, "%d", year);
    const char *p[] = {bf_req_itoa(r, parent), funds_arr_end(&an), bf_req_itoa(r, root),
                       ys, r->actor};
    PGresult *res = bf_db_prep(
        r->db, "funds_children_create",
        "WITH want AS (SELECT u.r FROM unnest($2::text[]) AS u(r) "
        "  WHERE NOT EXISTS (SELECT 1 FROM budget b WHERE b.parent_id = $1::bigint "
        "                    AND b.recipient = u.r)), "
        "acc AS (INSERT INTO account (kind, ref, name, floor_fen) "
        "  SELECT 'budget', $1::bigint::text || '/' || w.r, 'budget ' || w.r, 0 FROM want w "
        "  RETURNING id, ref) "
        "INSERT INTO budget (id, parent_id, root_id, recipient, year, created_by) "
        "SELECT acc.id, $1::bigint, $3::bigint, "
        "  substr(acc.ref, length($1::bigint::text) + 2), $4::int, $5 FROM acc",
        5, p, NULL, NULL);
    if (res) {
        PQclear(res);
        res = bf_db_prep(r->db, "funds_children_find",
                         "SELECT b.id FROM unnest($2::text[]) WITH ORDINALITY AS u(r, ord) "
                         "JOIN budget b ON b.parent_id = $1::bigint AND b.recipient = u.r "
                         "ORDER BY u.ord",
                         2, p, NULL, NULL);
    }
    funds_arr_free(&an);
    if (!res) return bf_req_db_fail(r);
    if ((size_t)PQntuples(res) != n) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, "recipients", "child budgets went missing");
    }
    int col = PQfnumber(res, "id");
    for (size_t i = 0; i < n; i++) ids[i] = strtoll(PQgetvalue(res, (int)i, col), NULL, 10);
    PQclear(res);
    return 0;
}

/* Starts an allocation in the transaction funds_idem_begin opened: checks
 * the budget, records the allocation as running and holds its whole on the
 * budget, so nothing else can spend it while the chunks run. */
static int s_alloc_start(bf_req_t *r, const s_alloc_t *a, const char *key)
{
    const char *bp[] = {bf_req_itoa(r, a->budget_id)};
    PGresult *res = bf_db_prep(r->db, "funds_alloc_budget",
                               "SELECT b.id, a.name, a.balance_fen, a.held_fen, a.floor_fen "
                               "FROM budget b JOIN account a ON a.id = b.id WHERE b.id = $1",
                               1, bp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "budget_id", "no budget %lld",
                           (long long)a->budget_id);
    }
    int64_t bal = bf_db_int(res, 0, "balance_fen"), held = bf_db_int(res, 0, "held_fen");
    int64_t floor = bf_db_int(res, 0, "floor_fen"), avail;
    if (bf_money_sub(bal, held, &avail) != 0 || bf_money_sub(avail, floor, &avail) != 0)
        avail = 0;
    if (avail < a->total) {
        int rc = bf_req_fail(r, BF_E_PRECONDITION, "amount_fen",
                             "insufficient funds: account %lld (%s) has %s yuan%s%s%s, %s yuan "
                             "needed",
                             (long long)a->budget_id, bf_db_str(res, 0, "name"),
                             funds_yuan(r, bal), held ? ", of which " : "",
                             held ? funds_yuan(r, held) : "",
                             held ? " yuan are held for a running allocation" : "",
                             funds_yuan(r, a->total));
        PQclear(res);
        return rc;
    }
    PQclear(res);
    const char *ap[] = {bp[0], a->rule, bf_req_itoa(r, a->total), bf_req_itoa(r, (int64_t)a->n),
                        key, r->actor};
    res = bf_db_prep(r->db, "funds_allocation_create",
                     "INSERT INTO allocation (budget_id, rule, total_fen, recipients, request_key, "
                     "  created_by, state) VALUES ($1, $2, $3, $4, $5, $6, 'running')",
                     6, ap, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *hp[] = {bp[0], bf_req_itoa(r, a->total)};
    res = bf_db_prep(r->db, "funds_alloc_hold",
                     "UPDATE account SET held_fen = held_fen + $2 WHERE id = $1", 2, hp, NULL,
                     NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    return 0;
}

/* The allocation.applied event and the result, when the last chunk is done. */
static int s_alloc_finish(bf_req_t *r, const s_alloc_t *a, int64_t alloc_id, int64_t nz,
                          int64_t first, int64_t last, int64_t chunks)
{
    int64_t balance;
    if (funds_account_balance(r, a->budget_id, &balance) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 9);
    bf_mp_kv_int(pk, "id", alloc_id);
    bf_mp_kv_int(pk, "budget_id", a->budget_id);
    bf_mp_kv_str(pk, "rule", a->rule);
    bf_mp_kv_int(pk, "total_fen", a->total);
    bf_mp_kv_int(pk, "recipients", (int64_t)a->n);
    bf_mp_kv_int(pk, "transfers", nz);
    bf_mp_kv_int(pk, "first_transfer_id", first);
    bf_mp_kv_int(pk, "last_transfer_id", last);
    bf_mp_kv_int(pk, "chunks", chunks);
    if (funds_emit(r, &ev, "allocation.applied",
                   bf_arena_printf(r->arena, "allocation/%lld", (long long)alloc_id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 11);
    bf_mp_kv_int(r->out, "id", alloc_id);
    bf_mp_kv_int(r->out, "budget_id", a->budget_id);
    bf_mp_kv_str(r->out, "rule", a->rule);
    bf_mp_kv_int(r->out, "total_fen", a->total);
    bf_mp_kv_int(r->out, "recipients", (int64_t)a->n);
    bf_mp_kv_int(r->out, "transfers", nz);
    bf_mp_kv_int(r->out, "first_transfer_id", first);
    bf_mp_kv_int(r->out, "last_transfer_id", last);
    bf_mp_kv_int(r->out, "budget_balance_fen", balance);
    bf_mp_kv_int(r->out, "chunks", chunks);
    bf_mp_kv_bool(r->out, "complete", true);
    return 0;
}

/* allocation.apply: started in one transaction (key, hold), then applied in
 * chunks of funds.chunk_rows recipients, each its own transaction that takes
 * the ledger head only for its own rows; progress is kept on the allocation
 * row, so a retry with the same key after a crash continues where the last
 * committed chunk ended. The first chunk shares the starting transaction, so
 * an allocation of at most chunk_rows recipients is one transaction. */
int allocation_apply(bf_req_t *r)
{
    s_alloc_t a;
    if (s_read_alloc(r, &a) != 0) return -1;
    if (a.from_registry) {
        /* figures can change between a crash and the retry that resumes a
         * chunked apply: from the registry, the whole allocation is one
         * transaction (the first chunk), so a retry either replays it or
         * starts afresh */
        size_t with_part = 0;
        for (size_t i = 0; i < a.n; i++)
            if (a.parts[i] > 0) with_part++;
        int64_t chunk_rows = bf_cfg_int(r->cfg, "funds.chunk_rows");
        if ((int64_t)with_part > chunk_rows)
            return bf_req_fail(r, BF_E_INVALID, "weights_from",
                               "weights_from gives %zu recipients, more than funds.chunk_rows "
                               "(%lld): preview it and apply its recipients, or choose a coarser "
                               "level",
                               with_part, (long long)chunk_rows);
    }
    funds_idem_t idem;
    int rc = funds_idem_begin_resumable(r, &idem);
    if (rc < 0) return -1;
    if (rc == 1) return 0;
    bool open = rc == 0; /* the starting transaction is open */
    if (open) {
        funds_head_t head0;
        if (funds_ledger_lock(r, &head0) != 0) return -1;
        if (s_alloc_start(r, &a, idem.key) != 0) return -1;
    }

    /* only recipients with a part get a child budget and a transfer, in
     * input order: the chunks walk this list */
    size_t nz = 0;
    for (size_t i = 0; i < a.n; i++)
        if (a.parts[i] > 0) nz++;
    const char **names = bf_arena_alloc(r->arena, nz * sizeof *names + 1);
    int64_t *parts = bf_arena_alloc(r->arena, nz * sizeof *parts + 1);
    size_t chunk = (size_t)bf_cfg_int(r->cfg, "funds.chunk_rows");
    if (chunk > nz) chunk = nz;
    int64_t *ids = bf_arena_alloc(r->arena, chunk * sizeof *ids + 1);
    funds_xfer_t *x = bf_arena_alloc(r->arena, chunk * sizeof *x + 1);
    if (!names || !parts || !ids || !x)
        return bf_req_fail(r, BF_E_EXHAUSTED, "recipients", "out of memory");
    for (size_t i = 0, k = 0; i < a.n; i++)
        if (a.parts[i] > 0) {
            names[k] = a.names[i];
            parts[k++] = a.parts[i];
        }
    const char *kp[] = {idem.key};
    for (;;) {
        funds_head_t head;
        if (!open && bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        open = true;
        if (funds_ledger_lock(r, &head) != 0) return -1;
        PGresult *res = bf_db_prep(
            r->db, "funds_alloc_progress",
            "SELECT l.id, l.state, l.applied, l.chunks, l.first_transfer_id, b.root_id, b.year "
            "FROM allocation l JOIN budget b ON b.id = l.budget_id "
            "WHERE l.request_key = $1 FOR UPDATE OF l",
            1, kp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        if (PQntuples(res) != 1) {
            PQclear(res);
            return bf_req_fail(r, BF_E_INTERNAL, "request_key",
                               "the allocation of request_key %s is missing", idem.key);
        }
        int64_t alloc_id = bf_db_int(res, 0, "id"), root = bf_db_int(res, 0, "root_id");
        int year = (int)bf_db_int(res, 0, "year");
        size_t done = (size_t)bf_db_int(res, 0, "applied");
        int64_t chunks = bf_db_int(res, 0, "chunks") + 1;
        int64_t first = bf_db_int(res, 0, "first_transfer_id");
        bool finished = strcmp(bf_db_str(res, 0, "state"), "done") == 0;
        PQclear(res);
        if (finished || done > nz) {
            /* a concurrent retry finished it: replay its stored result */
            bf_db_rollback(r->db);
            rc = funds_idem_begin(r, &idem);
            return rc > 0 ? 0 : -1;
        }
        size_t k = nz - done < chunk ? nz - done : chunk;
        if (s_children(r, a.budget_id, root, year, names + done, k, ids) != 0) return -1;
        const char *ref = bf_arena_printf(r->arena, "allocation/%lld", (long long)alloc_id);
        int64_t sum = 0;
        for (size_t i = 0; i < k; i++) {
            x[i] = (funds_xfer_t){.from = a.budget_id,
                                  .to = ids[i],
                                  .amount = parts[done + i],
                                  .kind = "allocation",
                                  .year = year,
                                  .budget_id = root,
                                  .ref = ref};
            sum += parts[done + i]; /* parts sum to a.total, which fits */
        }
        /* this chunk's part of the hold is released as it is spent */
        const char *hp[] = {bf_req_itoa(r, a.budget_id), bf_req_itoa(r, sum)};
        res = bf_db_prep(r->db, "funds_alloc_release",
                         "UPDATE account SET held_fen = held_fen - $2 WHERE id = $1", 2, hp,
                         NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        if (funds_ledger_append(r, &head, x, k, idem.key, "amount_fen") != 0) return -1;
        if (!first) first = x[0].id;
        int64_t last = x[k - 1].id;
        bool complete = done + k == nz;
        const char *up[] = {bf_req_itoa(r, alloc_id), bf_req_itoa(r, first),
                            bf_req_itoa(r, last), bf_req_itoa(r, (int64_t)k),
                            bf_req_itoa(r, sum), complete ? "done" : "running"};
        res = bf_db_prep(r->db, "funds_alloc_step",
                         "UPDATE allocation SET first_transfer_id = $2, last_transfer_id = $3, "
                         "  applied = applied + $4, transfers = transfers + $4, "
                         "  applied_fen = applied_fen + $5, chunks = chunks + 1, state = $6, "
                         "  completed_at = CASE WHEN $6 = 'done' THEN now() END "
                         "WHERE id = $1",
                         6, up, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        if (complete) {
            if (s_alloc_finish(r, &a, alloc_id, (int64_t)nz, first, last, chunks) != 0)
                return -1;
            return funds_idem_commit(r, &idem);
        }
        if (funds_evidence_flush(r) != 0) return -1;
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
        open = false;
    }
}
