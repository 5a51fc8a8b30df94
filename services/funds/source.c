/* source.c: fund sources (资金来源): central, provincial, prefecture and county
 * special funds, sector funds, social funds, unit-raised funds, donations and
 * loans. A source has two accounts: its pool (id = the source id, floor 0, so
 * it can never give more than it received) and an external account with no
 * floor, the counter-side that money enters the system from. */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"

#include <stdio.h>
#include <string.h>

static const char *const s_kinds[] = {"central", "provincial", "prefecture", "county",
                                      "sector",  "social",     "unit_raised", "donation",
                                      "loan",    NULL};

int source_create(bf_req_t *r)
{
    const char *name, *kind, *provider = NULL;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_enum(r, r->params, NULL, "kind", true, s_kinds, &kind) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "provider", false, 200, &provider) < 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;

    const char *np[] = {name};
    PGresult *res = bf_db_prep(r->db, "funds_source_by_name",
                               "SELECT id FROM source WHERE name = $1", 1, np, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t existing = PQntuples(res) ? bf_db_int(res, 0, "id") : 0;
    PQclear(res);
    if (existing)
        return bf_req_fail(r, BF_E_EXISTS, "name", "a source named %s exists (id %lld)", name,
                           (long long)existing);
    int64_t id = funds_account_create(r, "source", NULL, name);
    if (!id) return -1;
    const char *ext_name = bf_arena_printf(r->arena, "external: %s", name);
    int64_t ext = funds_account_create(r, "external", bf_req_itoa(r, id), ext_name);
    if (!ext) return -1;
    const char *p[] = {bf_req_itoa(r, id), bf_req_itoa(r, ext), name, kind, provider,
                       r->actor};
    res = bf_db_prep(r->db, "funds_source_create",
                     "INSERT INTO source (id, external_id, name, kind, provider, created_by) "
                     "VALUES ($1, $2, $3, $4, $5, $6)",
                     6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_int(pk, "external_account_id", ext);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_str(pk, "provider", provider);
    if (funds_emit(r, &ev, "source.created",
                   bf_arena_printf(r->arena, "source/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "account_id", id);
    bf_mp_kv_int(r->out, "external_account_id", ext);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "kind", kind);
    return funds_idem_commit(r, &idem);
}

int source_receive(bf_req_t *r)
{
    int64_t id, amount;
    int year;
    const char *note = NULL;
    if (funds_req_id(r, "source_id", true, &id) != 0) return -1;
    if (funds_req_amount(r, r->params, NULL, "amount_fen", true, 1, &amount) != 0) return -1;
    if (funds_req_year(r, "year", true, &year) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, 500, &note) < 0) return -1;
    funds_idem_t idem;
    int rc = funds_idem_begin(r, &idem);
    if (rc != 0) return rc > 0 ? 0 : -1;
    funds_head_t head;
    if (funds_ledger_lock(r, &head) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "funds_source_ext",
                               "SELECT external_id FROM source WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "source_id", "no source %lld", (long long)id);
    }
    funds_xfer_t x = {.from = bf_db_int(res, 0, "external_id"),
                      .to = id,
                      .amount = amount,
                      .kind = "receipt",
                      .year = year,
                      .source_id = id,
                      .ref = bf_arena_printf(r->arena, "source/%lld", (long long)id),
                      .note = note};
    PQclear(res);
    if (funds_ledger_append(r, &head, &x, 1, idem.key, "amount_fen") != 0) return -1;
    int64_t balance;
    if (funds_account_balance(r, id, &balance) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "source_id", id);
    bf_mp_kv_int(pk, "transfer_id", x.id);
    bf_mp_kv_int(pk, "amount_fen", amount);
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_str(pk, "note", note);
    if (funds_emit(r, &ev, "source.received",
                   bf_arena_printf(r->arena, "source/%lld", (long long)id)) != 0)
        return -1;
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "transfer_id", x.id);
    bf_mp_kv_int(r->out, "source_id", id);
    bf_mp_kv_int(r->out, "amount_fen", amount);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_int(r->out, "balance_fen", balance);
    return funds_idem_commit(r, &idem);
}

/* received = receipts into the pool, less reversals of receipts (pool ->
 * external); both through indexes on the account columns */
static const char *s_source_cols =
    "s.id, s.external_id, s.name, s.kind, s.provider, s.created_by, a.balance_fen, "
    "(SELECT COALESCE(sum(t.amount_fen), 0) FROM transfer t "
    "   WHERE t.to_account = s.id AND t.kind = 'receipt') - "
    "(SELECT COALESCE(sum(t.amount_fen), 0) FROM transfer t "
    "   WHERE t.from_account = s.id AND t.kind = 'reversal' AND t.to_account = s.external_id) "
    "  AS received_fen";

static void s_pack_source(msgpack_packer *pk, const PGresult *res, int i)
{
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_int(pk, "external_account_id", bf_db_int(res, i, "external_id"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, i, "name"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "kind"));
    bf_mp_kv_str(pk, "provider", bf_db_str(res, i, "provider"));
    bf_mp_kv_int(pk, "received_fen", bf_db_int(res, i, "received_fen"));
    bf_mp_kv_int(pk, "balance_fen", bf_db_int(res, i, "balance_fen"));
}

/* One statement: the source, its figures and what it received by year (a JSON
 * array, funds_pack_json_list). */
int source_get(bf_req_t *r)
{
    int64_t id;
    if (funds_req_id(r, "id", true, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    char *sql = bf_arena_printf(
        r->arena,
        "SELECT %s, "
        " (SELECT json_agg(json_build_object('year', q.year, 'received_fen', q.received_fen) "
        "   ORDER BY q.year)::text FROM (SELECT year, sum(amt)::bigint AS received_fen FROM ( "
        "     SELECT year, amount_fen AS amt FROM transfer WHERE to_account = s.id "
        "       AND kind = 'receipt' "
        "     UNION ALL SELECT year, -amount_fen FROM transfer WHERE from_account = s.id "
        "       AND kind = 'reversal' AND to_account = s.external_id) y "
        "   GROUP BY year) q) AS received_by_year "
        "FROM source s JOIN account a ON a.id = s.id WHERE s.id = $1",
        s_source_cols);
    if (!sql) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, "funds_source_get1", sql, 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no source %lld", (long long)id);
    }
    msgpack_pack_map(r->out, 8);
    s_pack_source(r->out, res, 0);
    bf_mp_key(r->out, "received_by_year");
    int rc = funds_pack_json_list(r, res, 0, "received_by_year");
    PQclear(res);
    return rc;
}

int source_list(bf_req_t *r)
{
    const char *kind = NULL;
    int64_t limit, after;
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_kinds, &kind) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    char *sql = bf_arena_printf(r->arena,
                                "SELECT %s FROM source s JOIN account a ON a.id = s.id "
                                "WHERE ($1::text IS NULL OR s.kind = $1) AND s.id > $2 "
                                "ORDER BY s.id LIMIT $3",
                                s_source_cols);
    const char *p[] = {kind, bf_req_itoa(r, after), bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(r->db, "funds_source_list", sql, 3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 7);
        s_pack_source(r->out, res, i);
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
