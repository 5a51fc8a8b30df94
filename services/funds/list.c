/* list.c: budget.list and project.list, the operator's paged views.
 *
 * Both page by id (libcommon/bf_page) and take optional filters that AND
 * together. A filter on a division code (`region`) matches everything under
 * that division (bf_region_prefix: a county code matches its townships and
 * villages). project.list is also scoped to the caller's region when the
 * caller is bound to one (a project's location is a division code);
 * budget.list is not, since most recipients (village:<id>, household:<id>)
 * are registry ids whose place the funds service does not know.
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <string.h>

static const char *const s_status[] = {"open", "spent", NULL};
static const char *const s_project_kinds[] = {"industry",  "infrastructure", "education",
                                              "health",    "training",       "employment",
                                              "other",     NULL};

/* Reads the optional `region` param: a 12-digit division code, returned as
 * its prefix (bf_region_prefix) in the arena. Returns 0, 1 absent, -1. */
static int s_region(bf_req_t *r, const char **prefix)
{
    const char *code;
    int rc = bf_req_str(r, r->params, NULL, "region", false, BF_DIVISION_LEN, &code);
    if (rc != 0) return rc;
    if (bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region", "region must be a 12-digit division code");
    char out[13];
    bf_region_prefix(code, out);
    *prefix = bf_arena_strndup(r->arena, out, strlen(out));
    return 0;
}

static void s_kv_opt(msgpack_packer *pk, const PGresult *res, int i, const char *col)
{
    if (bf_db_null(res, i, col))
        bf_mp_kv_nil(pk, col);
    else
        bf_mp_kv_int(pk, col, bf_db_int(res, i, col));
}

int budget_list(bf_req_t *r)
{
    int year = 0;
    int64_t source_id = 0, parent_id = 0, after, limit;
    const char *recipient = NULL, *region = NULL, *status = NULL;
    bool root = false;
    int has_root;
    if (funds_req_year(r, "year", false, &year) < 0) return -1;
    if (funds_req_id(r, "source_id", false, &source_id) < 0) return -1;
    if (funds_req_id(r, "parent_id", false, &parent_id) < 0) return -1;
    if (funds_req_recipient(r, r->params, NULL, "recipient", false, &recipient) < 0) return -1;
    if (s_region(r, &region) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, s_status, &status) < 0) return -1;
    if ((has_root = bf_req_bool(r, r->params, NULL, "root", false, &root)) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *p[] = {year ? bf_req_itoa(r, year) : NULL,
                       source_id ? bf_req_itoa(r, source_id) : NULL,
                       parent_id ? bf_req_itoa(r, parent_id) : NULL,
                       recipient,
                       region,
                       status,
                       has_root == 0 ? (root ? "t" : "f") : NULL,
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "funds_budget_list",
        "SELECT b.id, b.parent_id, b.root_id, b.recipient, b.year, b.name, b.carrier, "
        "  b.created_by, a.balance_fen, a.held_fen, "
        "  to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "    AS created_at "
        "FROM budget b JOIN account a ON a.id = b.id "
        "WHERE ($1::int IS NULL OR b.year = $1::int) "
        "  AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM transfer t "
        "       WHERE t.to_account = b.root_id AND t.kind = 'funding' "
        "         AND t.source_id = $2::bigint)) "
        "  AND ($3::bigint IS NULL OR b.parent_id = $3::bigint) "
        "  AND ($4::text IS NULL OR b.recipient = $4::text) "
        "  AND ($5::text IS NULL OR b.recipient LIKE 'region:' || $5::text || '%') "
        "  AND ($6::text IS NULL OR ($6::text = 'open') = (a.balance_fen > 0)) "
        "  AND ($7::bool IS NULL OR $7::bool = (b.parent_id IS NULL)) "
        "  AND b.id > $8::bigint ORDER BY b.id LIMIT $9::int",
        9, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 11);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        s_kv_opt(r->out, res, i, "parent_id");
        bf_mp_kv_int(r->out, "root_id", bf_db_int(res, i, "root_id"));
        bf_mp_kv_str(r->out, "recipient", bf_db_str(res, i, "recipient"));
        bf_mp_kv_int(r->out, "year", bf_db_int(res, i, "year"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_str(r->out, "carrier", bf_db_str(res, i, "carrier"));
        bf_mp_kv_int(r->out, "balance_fen", bf_db_int(res, i, "balance_fen"));
        bf_mp_kv_int(r->out, "held_fen", bf_db_int(res, i, "held_fen"));
        bf_mp_kv_str(r->out, "created_by", bf_db_str(res, i, "created_by"));
        bf_mp_kv_str(r->out, "created_at", bf_db_str(res, i, "created_at"));
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

int project_list(bf_req_t *r)
{
    int year = 0;
    int64_t budget_id = 0, source_id = 0, after, limit;
    const char *kind = NULL, *region = NULL, *status = NULL;
    if (funds_req_year(r, "year", false, &year) < 0) return -1;
    if (funds_req_id(r, "budget_id", false, &budget_id) < 0) return -1;
    if (funds_req_id(r, "source_id", false, &source_id) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_project_kinds, &kind) < 0) return -1;
    if (s_region(r, &region) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, s_status, &status) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *p[] = {year ? bf_req_itoa(r, year) : NULL,
                       budget_id ? bf_req_itoa(r, budget_id) : NULL,
                       source_id ? bf_req_itoa(r, source_id) : NULL,
                       kind,
                       region,
                       bf_req_region_prefix(r),
                       status,
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "funds_project_list",
        "SELECT j.id, j.budget_id, j.name, j.kind, j.location, j.unit_id, j.beneficiaries, "
        "  j.amount_fen, j.created_by, b.year, a.balance_fen, "
        "  (SELECT count(*) FROM tranche t WHERE t.project_id = j.id) AS tranches, "
        "  (SELECT count(*) FROM tranche t WHERE t.project_id = j.id "
        "     AND t.state = 'disbursed') AS tranches_disbursed "
        "FROM project j JOIN account a ON a.id = j.id JOIN budget b ON b.id = j.budget_id "
        "WHERE ($1::int IS NULL OR b.year = $1::int) "
        "  AND ($2::bigint IS NULL OR j.budget_id = $2::bigint) "
        "  AND ($3::bigint IS NULL OR EXISTS (SELECT 1 FROM transfer t "
        "       WHERE t.to_account = b.root_id AND t.kind = 'funding' "
        "         AND t.source_id = $3::bigint)) "
        "  AND ($4::text IS NULL OR j.kind = $4::text) "
        "  AND ($5::text IS NULL OR j.location LIKE $5::text || '%') "
        "  AND ($6::text IS NULL OR j.location LIKE $6::text || '%') "
        "  AND ($7::text IS NULL OR ($7::text = 'open') = (a.balance_fen > 0)) "
        "  AND j.id > $8::bigint ORDER BY j.id LIMIT $9::int",
        9, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 13);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_int(r->out, "budget_id", bf_db_int(res, i, "budget_id"));
        bf_mp_kv_int(r->out, "year", bf_db_int(res, i, "year"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(res, i, "kind"));
        bf_mp_kv_str(r->out, "location", bf_db_str(res, i, "location"));
        bf_mp_kv_int(r->out, "unit_id", bf_db_int(res, i, "unit_id"));
        bf_mp_kv_int(r->out, "beneficiaries", bf_db_int(res, i, "beneficiaries"));
        bf_mp_kv_int(r->out, "amount_fen", bf_db_int(res, i, "amount_fen"));
        bf_mp_kv_int(r->out, "balance_fen", bf_db_int(res, i, "balance_fen"));
        bf_mp_kv_int(r->out, "tranches", bf_db_int(res, i, "tranches"));
        bf_mp_kv_int(r->out, "tranches_disbursed", bf_db_int(res, i, "tranches_disbursed"));
        bf_mp_kv_str(r->out, "created_by", bf_db_str(res, i, "created_by"));
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
