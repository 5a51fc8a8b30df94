/* report.c: utilisation reports and the trace of a recipient's money.
 *
 * Both read the `movement` view (each transfer in the direction of the money
 * it concerns, reversals as negative amounts), so every figure is net of
 * reversals. Utilisation is computed per root budget (budgeted = funding from
 * sources, allocated = moved from the root budget to child budgets and
 * projects, disbursed = paid to recipients anywhere in the budget's tree,
 * remaining = budgeted - disbursed) and then grouped; per source, a budget's
 * allocated and disbursed money is attributed to its sources in proportion to
 * their share of its funding, rounded to the fen per budget and source.
 *
 * trace.recipient walks the net money flows upstream from the recipient's
 * accounts to the sources, splitting every account's inflow in proportion to
 * what each of its own inflows contributed (proportional attribution), and
 * rounds the sources' shares with the largest-remainder method so they sum
 * to what the recipient received.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *by;
    const char *key, *label; /* SQL expressions (constants of this file, never input) */
    int shape;               /* 0: per budget, 1: per source, 2: per project */
} s_group_t;

static const s_group_t s_groups[] = {
    {"budget", "b.id::text",
     "b.recipient || ' ' || b.year || CASE WHEN b.name <> '' THEN ' ' || b.name ELSE '' END", 0},
    {"year", "b.year::text", "b.year::text", 0},
    {"recipient", "b.recipient", "b.recipient", 0},
    {"source", "s.id::text", "s.name", 1},
    {"source_kind", "s.kind", "s.kind", 1},
    {"project", "j.id::text", "j.name", 2},
    {"project_kind", "j.kind", "j.kind", 2},
    {NULL, NULL, NULL, 0},
};

static const char *s_base =
    "WITH m AS (SELECT * FROM movement WHERE budget_id IS NOT NULL "
    "  AND ($1::int IS NULL OR year = $1::int) AND ($2::bigint IS NULL OR budget_id = $2::bigint)), "
    "pb AS (SELECT m.budget_id AS id, "
    "  COALESCE(sum(amount_fen) FILTER (WHERE kind = 'funding'), 0) AS budgeted, "
    "  COALESCE(sum(amount_fen) FILTER (WHERE kind IN ('allocation', 'project_funding') "
    "    AND from_account = m.budget_id), 0) AS allocated, "
    "  COALESCE(sum(amount_fen) FILTER (WHERE kind = 'disbursement'), 0) AS disbursed "
    "  FROM m GROUP BY m.budget_id) ";

int report_utilisation(bf_req_t *r)
{
    const char *by;
    int year = 0;
    int64_t budget_id = 0;
    static const char *const bys[] = {"budget", "year", "recipient", "source", "source_kind",
                                      "project", "project_kind", NULL};
    if (bf_req_enum(r, r->params, NULL, "by", true, bys, &by) != 0) return -1;
    if (funds_req_year(r, "year", false, &year) < 0) return -1;
    if (funds_req_id(r, "budget_id", false, &budget_id) < 0) return -1;
    const s_group_t *g = s_groups;
    while (g->by && strcmp(g->by, by) != 0) g++;
    char *sql;
    if (g->shape == 0)
        sql = bf_arena_printf(r->arena,
                              "%sSELECT %s AS key, %s AS label, sum(pb.budgeted) AS budgeted, "
                              "  sum(pb.allocated) AS allocated, sum(pb.disbursed) AS disbursed "
                              "FROM pb JOIN budget b ON b.id = pb.id GROUP BY 1, 2 ORDER BY 1",
                              s_base, g->key, g->label);
    else if (g->shape == 1)
        sql = bf_arena_printf(
            r->arena,
            "%s, sf AS (SELECT source_id, budget_id, sum(amount_fen) AS f FROM m "
            "  WHERE kind = 'funding' GROUP BY 1, 2) "
            "SELECT %s AS key, %s AS label, sum(sf.f) AS budgeted, "
            "  COALESCE(sum(round(pb.allocated * sf.f / NULLIF(pb.budgeted, 0))), 0) AS allocated, "
            "  COALESCE(sum(round(pb.disbursed * sf.f / NULLIF(pb.budgeted, 0))), 0) AS disbursed "
            "FROM sf JOIN pb ON pb.id = sf.budget_id JOIN source s ON s.id = sf.source_id "
            "GROUP BY 1, 2 ORDER BY 1",
            s_base, g->key, g->label);
    else
        sql = bf_arena_printf(
            r->arena,
            "%s, pj AS (SELECT project_id AS id, "
            "  COALESCE(sum(amount_fen) FILTER (WHERE kind = 'project_funding'), 0) AS budgeted, "
            "  COALESCE(sum(amount_fen) FILTER (WHERE kind = 'disbursement'), 0) AS disbursed "
            "  FROM m WHERE project_id IS NOT NULL GROUP BY 1) "
            "SELECT %s AS key, %s AS label, sum(pj.budgeted) AS budgeted, "
            "  sum((SELECT COALESCE(sum(t.amount_fen), 0) FROM tranche t "
            "       WHERE t.project_id = j.id AND t.state <> 'reversed')) AS allocated, "
            "  sum(pj.disbursed) AS disbursed "
            "FROM pj JOIN project j ON j.id = pj.id GROUP BY 1, 2 ORDER BY 1",
            s_base, g->key, g->label);
    char ys[8];
    snprintf(ys, sizeof ys, "%d", year);
    const char *p[] = {year ? ys : NULL, budget_id ? bf_req_itoa(r, budget_id) : NULL};
    char stmt[64];
    snprintf(stmt, sizeof stmt, "funds_report_%s", by);
    PGresult *res = bf_db_prep(r->db, stmt, sql, 2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    int64_t tb = 0, ta = 0, td = 0;
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_str(r->out, "by", by);
    bf_mp_key(r->out, "rows");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        int64_t b = bf_db_int(res, i, "budgeted"), a = bf_db_int(res, i, "allocated");
        int64_t d = bf_db_int(res, i, "disbursed"), rem;
        if (bf_money_sub(b, d, &rem) != 0) rem = 0;
        bf_money_add(tb, b, &tb);
        bf_money_add(ta, a, &ta);
        bf_money_add(td, d, &td);
        msgpack_pack_map(r->out, 6);
        bf_mp_kv_str(r->out, "key", bf_db_str(res, i, "key"));
        bf_mp_kv_str(r->out, "label", bf_db_str(res, i, "label"));
        bf_mp_kv_int(r->out, "budgeted_fen", b);
        bf_mp_kv_int(r->out, "allocated_fen", a);
        bf_mp_kv_int(r->out, "disbursed_fen", d);
        bf_mp_kv_int(r->out, "remaining_fen", rem);
    }
    PQclear(res);
    int64_t trem;
    if (bf_money_sub(tb, td, &trem) != 0) trem = 0;
    bf_mp_key(r->out, "totals");
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_int(r->out, "budgeted_fen", tb);
    bf_mp_kv_int(r->out, "allocated_fen", ta);
    bf_mp_kv_int(r->out, "disbursed_fen", td);
    bf_mp_kv_int(r->out, "remaining_fen", trem);
    return 0;
}

/* ------------------------------------------------------------ trace */

/* The inflows of account X as rows (f = the counterparty, amt): transfers
 * into X, and reversals of them (out of X) as negative amounts. Two index
 * scans. */
#define S_INFLOW(X)                                                                   \
    "SELECT from_account AS f, amount_fen AS amt FROM transfer "                       \
    "  WHERE to_account = " X " AND kind <> 'reversal' "                               \
    "UNION ALL SELECT to_account, -amount_fen FROM transfer "                          \
    "  WHERE from_account = " X " AND kind = 'reversal'"

typedef struct {
    int64_t frac; /* the fraction of a fen, in 1e-9 */
    int64_t source_id;
    int row;
} s_share_t;

static int s_share_cmp(const void *a, const void *b)
{
    const s_share_t *x = a, *y = b;
    if (x->frac != y->frac) return x->frac > y->frac ? -1 : 1;
    return x->source_id < y->source_id ? -1 : x->source_id > y->source_id;
}

int trace_recipient(bf_req_t *r)
{
    const char *recipient;
    if (funds_req_recipient(r, r->params, NULL, "recipient", true, &recipient) != 0) return -1;
    const char *p[] = {recipient};
    /* REPEATABLE READ: the three reads below see one state of the ledger */
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (bf_db_cmd(r->db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") != 0)
        return bf_req_db_fail(r);
    PGresult *acc = bf_db_prep(
        r->db, "funds_trace_accounts",
        "WITH mine AS (SELECT id FROM account WHERE kind = 'recipient' AND ref = $1 "
        "              UNION SELECT id FROM budget WHERE recipient = $1) "
        "SELECT a.id, a.kind, a.balance_fen, b.year, b.parent_id, "
        "  (SELECT COALESCE(sum(q.amt), 0) FROM (" S_INFLOW("a.id") ") q "
        "    WHERE q.f NOT IN (SELECT id FROM mine)) AS received_fen "
        "FROM mine JOIN account a ON a.id = mine.id LEFT JOIN budget b ON b.id = a.id "
        "ORDER BY a.id",
        1, p, NULL, NULL);
    if (!acc) return bf_req_db_fail(r);
    int na = PQntuples(acc);
    if (na == 0) {
        PQclear(acc);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "recipient",
                           "%s has no budget and was never paid", recipient);
    }
    /* upstream, account by account through indexed lookups of each one's
     * inflows: an inflow is a transfer into it, less the reversals of such
     * transfers (which leave it) */
    PGresult *src = bf_db_prep(
        r->db, "funds_trace_sources",
        "WITH RECURSIVE "
        "mine AS (SELECT id FROM account WHERE kind = 'recipient' AND ref = $1 "
        "         UNION SELECT id FROM budget WHERE recipient = $1), "
        "walk(acct, amt, depth) AS ( "
        "  SELECT e.f, e.net::numeric, 1 FROM mine m, LATERAL (SELECT q.f, sum(q.amt) AS net "
        "    FROM (" S_INFLOW("m.id") ") q GROUP BY q.f HAVING sum(q.amt) > 0) e "
        "  WHERE e.f NOT IN (SELECT id FROM mine) "
        "  UNION ALL "
        "  SELECT e.f, round(w.amt * e.net * 1.0000000000 / e.total, 10), w.depth + 1 "
        "  FROM walk w JOIN account a ON a.id = w.acct AND a.kind IN ('budget', 'project'), "
        "  LATERAL (SELECT g.f, g.net, sum(g.net) OVER () AS total FROM "
        "    (SELECT q.f, sum(q.amt) AS net FROM (" S_INFLOW("w.acct") ") q "
        "     GROUP BY q.f HAVING sum(q.amt) > 0) g) e "
        "  WHERE w.depth < 64 AND e.f NOT IN (SELECT id FROM mine)) "
        "SELECT s.id, s.name, s.kind, floor(sum(w.amt))::bigint AS base, "
        "  ((sum(w.amt) - floor(sum(w.amt))) * 1000000000)::bigint AS frac "
        "FROM walk w JOIN source s ON s.id = w.acct GROUP BY 1, 2, 3 ORDER BY 1",
        1, p, NULL, NULL);
    if (!src) {
        PQclear(acc);
        return bf_req_db_fail(r);
    }
    PGresult *in = bf_db_prep(
        r->db, "funds_trace_inflows",
        "WITH mine AS (SELECT id FROM account WHERE kind = 'recipient' AND ref = $1 "
        "              UNION SELECT id FROM budget WHERE recipient = $1) "
        "SELECT q.f AS from_account, a.kind, a.name, sum(q.amt) AS amount_fen "
        "FROM mine m, LATERAL (" S_INFLOW("m.id") ") q JOIN account a ON a.id = q.f "
        "WHERE q.f NOT IN (SELECT id FROM mine) "
        "GROUP BY 1, 2, 3 HAVING sum(q.amt) <> 0 ORDER BY 1 LIMIT 1000",
        1, p, NULL, NULL);
    if (!in) {
        PQclear(src);
        PQclear(acc);
        return bf_req_db_fail(r);
    }
    bf_db_rollback(r->db);

    int64_t received = 0;
    for (int i = 0; i < na; i++) bf_money_add(received, bf_db_int(acc, i, "received_fen"), &received);
    /* the sources' shares: floors plus largest remainders up to the total */
    int ns = PQntuples(src);
    int64_t *amount = bf_arena_alloc(r->arena, (size_t)ns * sizeof *amount + 1);
    s_share_t *rank = bf_arena_alloc(r->arena, (size_t)ns * sizeof *rank + 1);
    if (!amount || !rank) {
        PQclear(in);
        PQclear(src);
        PQclear(acc);
        return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    int64_t floor_sum = 0, frac_sum = 0;
    for (int i = 0; i < ns; i++) {
        amount[i] = bf_db_int(src, i, "base");
        rank[i] = (s_share_t){bf_db_int(src, i, "frac"), bf_db_int(src, i, "id"), i};
        bf_money_add(floor_sum, amount[i], &floor_sum);
        frac_sum += rank[i].frac;
    }
    int64_t left = (frac_sum + 500000000) / 1000000000; /* the fractions' sum, rounded */
    qsort(rank, (size_t)ns, sizeof *rank, s_share_cmp);
    for (int64_t k = 0; k < left && k < ns; k++) amount[rank[k].row] += 1;

    msgpack_pack_map(r->out, 6);
    bf_mp_kv_str(r->out, "recipient", recipient);
    bf_mp_kv_int(r->out, "received_fen", received);
    bf_mp_kv_str(r->out, "attribution", "proportional");
    bf_mp_key(r->out, "accounts");
    msgpack_pack_array(r->out, (size_t)na);
    for (int i = 0; i < na; i++) {
        msgpack_pack_map(r->out, 6);
        bf_mp_kv_int(r->out, "id", bf_db_int(acc, i, "id"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(acc, i, "kind"));
        if (bf_db_null(acc, i, "year"))
            bf_mp_kv_nil(r->out, "year");
        else
            bf_mp_kv_int(r->out, "year", bf_db_int(acc, i, "year"));
        if (bf_db_null(acc, i, "parent_id"))
            bf_mp_kv_nil(r->out, "parent_budget_id");
        else
            bf_mp_kv_int(r->out, "parent_budget_id", bf_db_int(acc, i, "parent_id"));
        bf_mp_kv_int(r->out, "received_fen", bf_db_int(acc, i, "received_fen"));
        bf_mp_kv_int(r->out, "balance_fen", bf_db_int(acc, i, "balance_fen"));
    }
    bf_mp_key(r->out, "inflows");
    int ni = PQntuples(in);
    msgpack_pack_array(r->out, (size_t)ni);
    for (int i = 0; i < ni; i++) {
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "from_account", bf_db_int(in, i, "from_account"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(in, i, "kind"));
        bf_mp_kv_str(r->out, "name", bf_db_str(in, i, "name"));
        bf_mp_kv_int(r->out, "amount_fen", bf_db_int(in, i, "amount_fen"));
    }
    bf_mp_key(r->out, "sources");
    msgpack_pack_array(r->out, (size_t)ns);
    for (int i = 0; i < ns; i++) {
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "source_id", bf_db_int(src, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(src, i, "name"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(src, i, "kind"));
        bf_mp_kv_int(r->out, "amount_fen", amount[i]);
    }
    PQclear(in);
    PQclear(src);
    PQclear(acc);
    return 0;
}
