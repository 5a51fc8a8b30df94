/* village.c: villages (困难村 / 贫困村 / 经济薄弱村) under a township or street. */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *const s_categories[] = {"difficult", "poor", "weak", "other", NULL};

static const char *s_village_cols =
    "v.id, v.region_code, v.name, v.category, v.code, v.reasons, v.status, v.created_at, "
    "(SELECT count(*) FROM household h WHERE h.village_id = v.id) AS households";

/* Packs the village's 8 fields as a map of 8 + extra entries; the caller
 * packs the extra ones. */
static void s_pack_village(msgpack_packer *pk, const PGresult *res, int row, size_t extra)
{
    msgpack_pack_map(pk, 8 + extra);
    bf_mp_kv_int(pk, "id", bf_db_int(res, row, "id"));
    bf_mp_kv_str(pk, "region_code", bf_db_str(res, row, "region_code"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, row, "name"));
    bf_mp_kv_str(pk, "category", bf_db_str(res, row, "category"));
    bf_mp_kv_str(pk, "code", bf_db_str(res, row, "code"));
    bf_mp_key(pk, "reasons");
    registry_pack_text_array(pk, bf_db_str(res, row, "reasons"));
    bf_mp_kv_int(pk, "households", bf_db_int(res, row, "households"));
    bf_mp_kv_str(pk, "status", bf_db_str(res, row, "status"));
}

int village_create(bf_req_t *r)
{
    const char *region, *name, *category, *code = NULL;
    const msgpack_object_array *reasons = NULL;
    if (bf_req_str(r, r->params, NULL, "region_code", true, 12, &region) != 0) return -1;
    if (bf_division_check(region, strlen(region)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit statistical division code");
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_enum(r, r->params, NULL, "category", true, s_categories, &category) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "code", false, 12, &code) < 0) return -1;
    if (code && bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "code", "code must be a 12-digit division code");
    if (bf_req_list(r, r->params, NULL, "reasons", false, 16, &reasons) < 0) return -1;
    const char *reasons_lit = registry_text_array(r, reasons, "reasons", 200);
    if (!reasons_lit) return -1;

    if (registry_region_denied(r, "region_code", region) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *rp[] = {region};
    PGresult *res = bf_db_prep(r->db, "region_level", "SELECT level FROM region WHERE code = $1",
                               1, rp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    const char *lvl = PQntuples(res) ? bf_db_str(res, 0, "level") : NULL;
    int ok_level = lvl && (!strcmp(lvl, "township") || !strcmp(lvl, "county"));
    int found = lvl != NULL;
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s", region);
    }
    if (!ok_level) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "a village belongs to a township or street (or a county)");
    }
    const char *p[] = {region, name, category, code, reasons_lit, r->actor};
    res = bf_db_prep(r->db, "village_create",
                     "INSERT INTO village (region_code, name, category, code, reasons, created_by) "
                     "VALUES ($1, $2, $3, $4, $5::text[], $6) RETURNING id",
                     6, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "code", "a village with code %s exists", code);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "region_code", region);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "category", category);
    bf_mp_kv_str(pk, "code", code);
    bf_mp_key(pk, "reasons");
    registry_pack_text_array(pk, reasons_lit);
    char subject[32];
    snprintf(subject, sizeof subject, "village/%lld", (long long)id);
    if (registry_emit(r, &ev, "village.created", subject) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_int(r->out, "id", id);
    return 0;
}

/* SQL: village v is visible under scope parameters P (region pattern) and C
 * (a cadre-only caller: villages of its own households). */
#define S_VILLAGE_VISIBLE(P, C)                                                                \
    "(" P "::text IS NULL OR v.region_code::text LIKE " P ") AND (" C "::bigint IS NULL OR "  \
    "EXISTS (SELECT 1 FROM household sh JOIN pairing sp ON sp.target_id = sh.id "              \
    "AND sp.kind = 'cadre_household' AND sp.ended_at IS NULL "                                 \
    "WHERE sh.village_id = v.id AND sp.helper_id = " C "::bigint))"

/* One statement: the village (part 0) and its active unit/team pairings (1). */
int village_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "village_get1",
        "WITH v AS (SELECT v.id, v.region_code, v.name, v.category, v.code, v.reasons, v.status, "
        "    (SELECT count(*) FROM household h WHERE h.village_id = v.id) AS households "
        "  FROM village v WHERE v.id = $1 AND " S_VILLAGE_VISIBLE("$2", "$3") ") "
        "SELECT 0 AS part, 0::bigint AS k, v.region_code::text AS c1, v.name AS c2, "
        "  v.category AS c3, v.code::text AS c4, v.reasons::text AS c5, "
        "  v.households::text AS c6, v.status AS c7 FROM v "
        "UNION ALL SELECT 1, p.id, p.id::text, p.kind, p.helper_id::text, "
        "  COALESCE(u.name, t.name), "
        "  (CASE WHEN p.kind = 'team_village' THEN t.leader_id ELSE u.contact_cadre_id END)::text, "
        "  p.starts_on::text, p.ends_on::text "
        "FROM v JOIN pairing p ON p.kind IN ('unit_village','team_village') "
        "  AND p.target_id = v.id AND p.ended_at IS NULL "
        "LEFT JOIN unit u ON p.kind = 'unit_village' AND u.id = p.helper_id "
        "LEFT JOIN team t ON p.kind = 'team_village' AND t.id = p.helper_id "
        "ORDER BY part, k",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no village with id %lld", (long long)id);
    }
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 9);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "region_code", registry_c(res, 0, 1));
    bf_mp_kv_str(pk, "name", registry_c(res, 0, 2));
    bf_mp_kv_str(pk, "category", registry_c(res, 0, 3));
    bf_mp_kv_str(pk, "code", registry_c(res, 0, 4));
    bf_mp_key(pk, "reasons");
    registry_pack_text_array(pk, registry_c(res, 0, 5));
    bf_mp_kv_int(pk, "households", registry_ci(res, 0, 6));
    bf_mp_kv_str(pk, "status", registry_c(res, 0, 7));
    bf_mp_key(pk, "helpers");
    msgpack_pack_array(pk, registry_part_count(res, 1));
    for (int i = 1; i < PQntuples(res); i++) {
        msgpack_pack_map(pk, 7);
        bf_mp_kv_int(pk, "pairing_id", registry_ci(res, i, 1));
        bf_mp_kv_str(pk, "kind", registry_c(res, i, 2));
        bf_mp_kv_int(pk, "helper_id", registry_ci(res, i, 3));
        bf_mp_kv_str(pk, "helper_name", registry_c(res, i, 4));
        /* whom to tell: the team's leader or the unit's contact */
        registry_kv_ci(pk, "contact_cadre_id", res, i, 5);
        bf_mp_kv_str(pk, "starts_on", registry_c(res, i, 6));
        bf_mp_kv_str(pk, "ends_on", registry_c(res, i, 7));
    }
    PQclear(res);
    return 0;
}

int village_list(bf_req_t *r)
{
    const char *region = NULL, *category = NULL;
    int64_t limit, after;
    if (bf_req_str(r, r->params, NULL, "region_code", false, 12, &region) < 0) return -1;
    if (region && bf_division_check(region, strlen(region)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit division code");
    if (bf_req_enum(r, r->params, NULL, "category", false, s_categories, &category) < 0)
        return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    char prefix[16] = "";
    if (region) snprintf(prefix, sizeof prefix, "%.*s%%", registry_prefix_len(region), region);
    const char *p[] = {region ? prefix : NULL, category, bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1), sc.region, sc.cadre};
    char *sql = bf_arena_printf(r->arena,
                                "SELECT %s FROM village v "
                                "WHERE ($1::text IS NULL OR v.region_code::text LIKE $1) "
                                "  AND ($2::text IS NULL OR v.category = $2) AND v.id > $3::bigint "
                                "  AND " S_VILLAGE_VISIBLE("$5", "$6") " "
                                "ORDER BY v.id LIMIT $4::int",
                                s_village_cols);
    PGresult *res = bf_db_prep(r->db, "village_list2", sql, 6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_village(r->out, res, i, 0);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
