/* region.c: administrative regions (province > city > county > township >
 * village > group), keyed by the 12-digit statistical division code. */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_levels[] = {"province", "city", "county", "township",
                                       "village", "group", NULL};

static void s_pack_region(msgpack_packer *pk, const PGresult *res, int row)
{
    msgpack_pack_map(pk, 4);
    bf_mp_kv_str(pk, "code", bf_db_str(res, row, "code"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, row, "name"));
    bf_mp_kv_str(pk, "level", bf_db_str(res, row, "level"));
    bf_mp_kv_str(pk, "parent_code", bf_db_str(res, row, "parent_code"));
}

static int s_code(bf_req_t *r, const char *key, bool required, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, key, required, 12, out);
    if (rc != 0) return rc;
    if (bf_division_check(*out, strlen(*out)) != 0)
        return bf_req_fail(r, BF_E_INVALID, key,
                           "%s must be a 12-digit statistical division code", key);
    return 0;
}

int region_put(bf_req_t *r)
{
    const char *code, *name, *level, *parent = NULL;
    if (s_code(r, "code", true, &code) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_enum(r, r->params, NULL, "level", true, s_levels, &level) != 0) return -1;
    if (s_code(r, "parent_code", false, &parent) < 0) return -1;
    if (parent && strcmp(parent, code) == 0)
        return bf_req_fail(r, BF_E_INVALID, "parent_code", "a region cannot be its own parent");
    if (registry_region_denied(r, "code", code) != 0) return -1;

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (parent) {
        const char *pp[] = {parent};
        PGresult *res = bf_db_prep(r->db, "region_exists",
                                   "SELECT 1 FROM region WHERE code = $1", 1, pp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res) > 0;
        PQclear(res);
        if (!found) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, "parent_code", "no region with code %s",
                               parent);
        }
    }
    const char *p[] = {code, name, level, parent};
    /* insert, or update only if something differs; RETURNING tells which */
    PGresult *res = bf_db_prep(
        r->db, "region_put",
        "INSERT INTO region (code, name, level, parent_code) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, level = EXCLUDED.level, "
        "  parent_code = EXCLUDED.parent_code, updated_at = now() "
        "  WHERE (region.name, region.level, region.parent_code) IS DISTINCT FROM "
        "        (EXCLUDED.name, EXCLUDED.level, EXCLUDED.parent_code) "
        "RETURNING code, name, level, parent_code, (xmax = 0) AS inserted",
        4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    const char *change = NULL;
    if (PQntuples(res) == 1) change = bf_db_bool(res, 0, "inserted") ? "created" : "updated";
    PQclear(res);
    if (change) {
        bf_event_t ev;
        msgpack_packer *pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 4);
        bf_mp_kv_str(pk, "code", code);
        bf_mp_kv_str(pk, "name", name);
        bf_mp_kv_str(pk, "level", level);
        bf_mp_kv_str(pk, "parent_code", parent);
        char what[32];
        snprintf(what, sizeof what, "region.%s", change);
        if (registry_emit(r, &ev, what, bf_arena_printf(r->arena, "region/%s", code)) != 0)
            return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_str(r->out, "code", code);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "level", level);
    bf_mp_kv_str(r->out, "parent_code", parent);
    bf_mp_kv_str(r->out, "change", change ? change : "none");
    return 0;
}

int region_get(bf_req_t *r)
{
    const char *code;
    if (s_code(r, "code", true, &code) != 0) return -1;
    if (!bf_req_in_region(r, code))
        return bf_req_fail(r, BF_E_NOT_FOUND, "code", "no region with code %s", code);
    const char *p[] = {code};
    PGresult *res = bf_db_prep(r->db, "region_get",
                               "SELECT code, name, level, parent_code FROM region WHERE code = $1",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "code", "no region with code %s", code);
    }
    s_pack_region(r->out, res, 0);
    PQclear(res);
    return 0;
}

int region_list(bf_req_t *r)
{
    const char *parent = NULL, *level = NULL, *cursor = NULL;
    int64_t limit = BF_PAGE_DEFAULT;
    if (s_code(r, "parent_code", false, &parent) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "level", false, s_levels, &level) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "cursor", false, 12, &cursor) < 0) return -1;
    if (cursor && bf_division_check(cursor, strlen(cursor)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "cursor", "cursor is not one this method returned");
    if (bf_req_int(r, r->params, NULL, "limit", false, BF_PAGE_MIN, BF_PAGE_MAX, &limit) < 0)
        return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {parent, level, cursor, bf_req_itoa(r, limit + 1), sc.region};
    PGresult *res = bf_db_prep(r->db, "region_list2",
                               "SELECT code, name, level, parent_code FROM region "
                               "WHERE ($1::char(12) IS NULL OR parent_code = $1) "
                               "  AND ($5::text IS NULL OR code::text LIKE $5) "
                               "  AND ($2::text IS NULL OR level = $2) "
                               "  AND ($3::char(12) IS NULL OR code > $3) "
                               "ORDER BY code LIMIT $4::int",
                               5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_region(r->out, res, i);
    bf_page_end(r, res, limit, "code");
    PQclear(res);
    return 0;
}
