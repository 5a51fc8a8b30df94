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

/* region.figures: the active households of a region, their persons (current
 * members) and how many households carry each category, in total and broken
 * down by sub-region at a level (or by village), in ONE statement: part 0 a
 * row per group (k) with its households and persons, part 1 a row per group
 * and category. Funds can take these as allocation weights. Groups without
 * households are not listed (their weight is 0). */
#define REGION_FIGURES_MAX 10000

static void s_pack_cats(msgpack_packer *pk, const int64_t *counts)
{
    size_t n = 0;
    while (registry_categories[n]) n++;
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) bf_mp_kv_int(pk, registry_categories[i], counts[i]);
}

static void s_add_cat(int64_t *counts, const char *cat, int64_t n)
{
    for (size_t i = 0; registry_categories[i]; i++)
        if (!strcmp(registry_categories[i], cat)) counts[i] += n;
}

int region_figures(bf_req_t *r)
{
    const char *code, *level = NULL;
    static const char *const levels[] = {"province", "city", "county", "township", "village",
                                         NULL};
    if (s_code(r, "region_code", true, &code) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "level", false, levels, &level) < 0) return -1;
    if (!bf_req_in_region(r, code))
        return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s", code);
    const char *gp[] = {code};
    PGresult *res = bf_db_prep(r->db, "region_get",
                               "SELECT code, name, level, parent_code FROM region WHERE code = $1",
                               1, gp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s", code);
    }
    const char *rname = bf_arena_strndup(r->arena, bf_db_str(res, 0, "name"), 400);
    const char *rlevel = bf_arena_strndup(r->arena, bf_db_str(res, 0, "level"), 16);
    PQclear(res);
    if (!rname || !rlevel) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    int own = registry_prefix_len(code);
    bool by_village = level && !strcmp(level, "village");
    int glen = own;
    if (level && !by_village) {
        static const int lens[] = {2, 4, 6, 9};
        for (int i = 0; i < 4; i++)
            if (!strcmp(levels[i], level)) glen = lens[i];
        if (glen < own)
            return bf_req_fail(r, BF_E_INVALID, "level",
                               "level %s is above the region's own level (%s)", level, rlevel);
    }
    const char *pattern = bf_arena_printf(r->arena, "%.*s%%", own, code);
    if (!pattern) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    const char *p[] = {pattern, bf_req_itoa(r, glen), by_village ? "t" : "f"};
    res = bf_db_prep(
        r->db, "region_figures",
        "WITH hh AS (SELECT h.id, h.categories, "
        "    CASE WHEN $3::boolean THEN v.id::text "
        "      ELSE rpad(left(v.region_code::text, $2::int), 12, '0') END COLLATE \"C\" AS k, "
        "    (SELECT count(*) FROM person p WHERE p.household_id = h.id) AS persons "
        "  FROM household h JOIN village v ON v.id = h.village_id "
        "  WHERE v.region_code::text LIKE $1 AND h.status = 'active') "
        "SELECT 0 AS part, k, count(*) AS n, sum(persons)::bigint AS persons, NULL::text AS cat, "
        "  CASE WHEN $3::boolean THEN (SELECT name FROM village WHERE id = k::bigint) "
        "    ELSE (SELECT name FROM region WHERE code = k) END AS name, "
        "  CASE WHEN $3::boolean THEN (SELECT code::text FROM village WHERE id = k::bigint) "
        "    ELSE k END AS code "
        "FROM hh GROUP BY k "
        "UNION ALL SELECT 1, k, count(*), NULL, c, NULL, NULL FROM hh, unnest(categories) AS c "
        "GROUP BY k, c "
        "ORDER BY part, k, cat",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res), groups = 0;
    while (groups < n && bf_db_int(res, groups, "part") == 0) groups++;
    size_t ncat = 0;
    while (registry_categories[ncat]) ncat++;
    int64_t *total = bf_arena_alloc(r->arena, (ncat + 1) * sizeof *total);
    int64_t *cur = bf_arena_alloc(r->arena, (ncat + 1) * sizeof *cur);
    if (!total || !cur) {
        PQclear(res);
        return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    memset(total, 0, (ncat + 1) * sizeof *total);
    int64_t households = 0, persons = 0;
    for (int i = 0; i < groups; i++) {
        households += bf_db_int(res, i, "n");
        persons += bf_db_int(res, i, "persons");
    }
    for (int i = groups; i < n; i++) s_add_cat(total, bf_db_str(res, i, "cat"), bf_db_int(res, i, "n"));
    int shown = groups > REGION_FIGURES_MAX ? REGION_FIGURES_MAX : groups;
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 9);
    bf_mp_kv_str(pk, "region_code", code);
    bf_mp_kv_str(pk, "name", rname);
    bf_mp_kv_str(pk, "level", rlevel);
    bf_mp_kv_str(pk, "by", by_village ? "village" : level ? level : rlevel);
    bf_mp_kv_int(pk, "households", households);
    bf_mp_kv_int(pk, "persons", persons);
    bf_mp_key(pk, "categories");
    s_pack_cats(pk, total);
    bf_mp_kv_bool(pk, "truncated", shown < groups);
    bf_mp_key(pk, "groups");
    msgpack_pack_array(pk, (size_t)shown);
    int j = groups; /* part 1 rows, in the same order of k */
    for (int i = 0; i < shown; i++) {
        const char *k = bf_db_str(res, i, "k");
        memset(cur, 0, (ncat + 1) * sizeof *cur);
        while (j < n && strcmp(bf_db_str(res, j, "k"), k) < 0) j++;
        while (j < n && !strcmp(bf_db_str(res, j, "k"), k)) {
            s_add_cat(cur, bf_db_str(res, j, "cat"), bf_db_int(res, j, "n"));
            j++;
        }
        msgpack_pack_map(pk, by_village ? 6 : 5);
        if (by_village) bf_mp_kv_int(pk, "village_id", strtoll(k, NULL, 10));
        bf_mp_kv_str(pk, "code", bf_db_str(res, i, "code"));
        bf_mp_kv_str(pk, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_int(pk, "households", bf_db_int(res, i, "n"));
        bf_mp_kv_int(pk, "persons", bf_db_int(res, i, "persons"));
        bf_mp_key(pk, "categories");
        s_pack_cats(pk, cur);
    }
    PQclear(res);
    return 0;
}
