/* coverage.c: the full-coverage report (全覆盖): every poor household must
 * have a responsible person (帮扶责任人), no cadre may carry more households
 * than the cap of the cadre's rank, and every assisted village needs a
 * helper unit or team. Gaps are counted exactly; the lists are cut at
 * REGISTRY_REPORT_ITEMS, lowest ids first.
 *
 * For a region, households and villages are those whose village lies under
 * the region's code prefix; a cadre is listed if over the cap overall and
 * responsible for at least one household in the region (a cap is per cadre,
 * not per region).
 *
 * Scope: a caller bound to a region gets the report of its region, or of
 * the region asked for if that lies under its own (a wider one is narrowed
 * to its own; one elsewhere is not found). A cadre-only caller gets
 * permission_denied: the report names households it does not help.
 */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define S_ACTIVE_CADRE                                                              \
    "EXISTS (SELECT 1 FROM pairing p WHERE p.kind = 'cadre_household' "             \
    "AND p.target_id = h.id AND p.ended_at IS NULL)"
#define S_VILLAGE_HELPED                                                            \
    "EXISTS (SELECT 1 FROM pairing p WHERE p.kind IN ('unit_village','team_village') " \
    "AND p.target_id = v.id AND p.ended_at IS NULL)"

int coverage_report(bf_req_t *r)
{
    const char *region = NULL;
    if (registry_code_param(r, "region_code", false, &region) < 0) return -1;
    if (registry_cadre_only(r))
        return bf_req_fail(r, BF_E_PERMISSION, "method",
                           "coverage.report lists households of other cadres: a cadre reads its "
                           "own households (household.list)");
    if (r->region && *r->region) {
        char mine[13], asked[13];
        bf_region_prefix(r->region, mine);
        if (!region) {
            region = r->region;
        } else {
            bf_region_prefix(region, asked);
            if (strncmp(asked, mine, strlen(mine)) == 0) {
                /* under the caller's region: as asked */
            } else if (strncmp(mine, asked, strlen(asked)) == 0) {
                region = r->region; /* wider than the caller's: narrowed */
            } else {
                return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s",
                                   region);
            }
        }
    }
    const char *prefix = NULL;
    if (region) {
        const char *rp[] = {region};
        PGresult *res = bf_db_prep(r->db, "region_exists", "SELECT 1 FROM region WHERE code = $1",
                                   1, rp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res) > 0;
        PQclear(res);
        if (!found)
            return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s", region);
        prefix = bf_arena_printf(r->arena, "%.*s%%", registry_prefix_len(region), region);
        if (!prefix) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    const registry_t *reg = r->svc;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", REGISTRY_REPORT_ITEMS);
    PGresult *hc = NULL, *hl = NULL, *cl = NULL, *vc = NULL, *vl = NULL;
    int rc = -1;
    /* one snapshot for all five queries, so the numbers agree */
    if (bf_db_begin(r->db) != 0 ||
        bf_db_cmd(r->db, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") != 0)
        goto dbfail;
    const char *hp[] = {prefix};
    hc = bf_db_prep(r->db, "cov_hh_count",
                    "SELECT count(*) AS total, count(*) FILTER (WHERE NOT " S_ACTIVE_CADRE
                    ") AS uncovered "
                    "FROM household h JOIN village v ON v.id = h.village_id "
                    "WHERE h.status = 'active' AND ($1::text IS NULL OR v.region_code::text LIKE $1)",
                    1, hp, NULL, NULL);
    if (!hc) goto dbfail;
    const char *hlp[] = {prefix, lim};
    hl = bf_db_prep(r->db, "cov_hh_list",
                    "SELECT h.id, h.village_id, v.name AS village_name, "
                    "  (SELECT name FROM person WHERE household_id = h.id AND relation = 'head') "
                    "    AS head_name "
                    "FROM household h JOIN village v ON v.id = h.village_id "
                    "WHERE h.status = 'active' AND ($1::text IS NULL OR v.region_code::text LIKE $1) "
                    "  AND NOT " S_ACTIVE_CADRE " ORDER BY h.id LIMIT $2::int",
                    2, hlp, NULL, NULL);
    if (!hl) goto dbfail;
    char caps[5][16];
    snprintf(caps[0], sizeof caps[0], "%d", reg->cap_county);
    snprintf(caps[1], sizeof caps[1], "%d", reg->cap_division);
    snprintf(caps[2], sizeof caps[2], "%d", reg->cap_section);
    snprintf(caps[3], sizeof caps[3], "%d", reg->cap_general);
    snprintf(caps[4], sizeof caps[4], "%d", reg->cap_village);
    const char *cp[] = {prefix, caps[0], caps[1], caps[2], caps[3], caps[4]};
    cl = bf_db_prep(r->db, "cov_cadres",
                    "WITH load AS ("
                    "  SELECT helper_id, count(*) AS n FROM pairing "
                    "  WHERE kind = 'cadre_household' AND ended_at IS NULL GROUP BY helper_id), "
                    "capped AS ("
                    "  SELECT c.id, c.name, c.rank, c.unit_id, l.n, "
                    "    CASE c.rank WHEN 'county' THEN $2::int WHEN 'division' THEN $3::int "
                    "      WHEN 'section' THEN $4::int WHEN 'general' THEN $5::int "
                    "      ELSE $6::int END AS cap "
                    "  FROM cadre c JOIN load l ON l.helper_id = c.id) "
                    "SELECT id, name, rank, unit_id, n, cap FROM capped c "
                    "WHERE cap > 0 AND n > cap AND ($1::text IS NULL OR EXISTS ("
                    "  SELECT 1 FROM pairing p JOIN household h ON h.id = p.target_id "
                    "  JOIN village v ON v.id = h.village_id "
                    "  WHERE p.kind = 'cadre_household' AND p.helper_id = c.id "
                    "    AND p.ended_at IS NULL AND v.region_code::text LIKE $1)) "
                    "ORDER BY id",
                    6, cp, NULL, NULL);
    if (!cl) goto dbfail;
    vc = bf_db_prep(r->db, "cov_village_count",
                    "SELECT count(*) AS total, count(*) FILTER (WHERE NOT " S_VILLAGE_HELPED
                    ") AS unhelped "
                    "FROM village v WHERE ($1::text IS NULL OR v.region_code::text LIKE $1)",
                    1, hp, NULL, NULL);
    if (!vc) goto dbfail;
    vl = bf_db_prep(r->db, "cov_village_list",
                    "SELECT v.id, v.name, v.region_code, v.category FROM village v "
                    "WHERE ($1::text IS NULL OR v.region_code::text LIKE $1) "
                    "  AND NOT " S_VILLAGE_HELPED " ORDER BY v.id LIMIT $2::int",
                    2, hlp, NULL, NULL);
    if (!vl) goto dbfail;
    if (bf_db_commit(r->db) != 0) goto dbfail;

    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 5);
    bf_mp_kv_str(pk, "region_code", region);
    bf_mp_kv_int(pk, "list_limit", REGISTRY_REPORT_ITEMS);
    bf_mp_key(pk, "households");
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "total", bf_db_int(hc, 0, "total"));
    bf_mp_kv_int(pk, "uncovered", bf_db_int(hc, 0, "uncovered"));
    bf_mp_key(pk, "items");
    msgpack_pack_array(pk, (size_t)PQntuples(hl));
    for (int i = 0; i < PQntuples(hl); i++) {
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "id", bf_db_int(hl, i, "id"));
        bf_mp_kv_int(pk, "village_id", bf_db_int(hl, i, "village_id"));
        bf_mp_kv_str(pk, "village_name", bf_db_str(hl, i, "village_name"));
        bf_mp_kv_str(pk, "head_name", bf_db_str(hl, i, "head_name"));
    }
    int ncl = PQntuples(cl);
    int shown = ncl > REGISTRY_REPORT_ITEMS ? REGISTRY_REPORT_ITEMS : ncl;
    bf_mp_key(pk, "cadres_over_cap");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_int(pk, "count", ncl);
    bf_mp_key(pk, "items");
    msgpack_pack_array(pk, (size_t)shown);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(pk, 6);
        bf_mp_kv_int(pk, "id", bf_db_int(cl, i, "id"));
        bf_mp_kv_str(pk, "name", bf_db_str(cl, i, "name"));
        bf_mp_kv_str(pk, "rank", bf_db_str(cl, i, "rank"));
        bf_mp_kv_int(pk, "unit_id", bf_db_int(cl, i, "unit_id"));
        bf_mp_kv_int(pk, "households", bf_db_int(cl, i, "n"));
        bf_mp_kv_int(pk, "cap", bf_db_int(cl, i, "cap"));
    }
    bf_mp_key(pk, "villages");
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "total", bf_db_int(vc, 0, "total"));
    bf_mp_kv_int(pk, "without_helper", bf_db_int(vc, 0, "unhelped"));
    bf_mp_key(pk, "items");
    msgpack_pack_array(pk, (size_t)PQntuples(vl));
    for (int i = 0; i < PQntuples(vl); i++) {
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "id", bf_db_int(vl, i, "id"));
        bf_mp_kv_str(pk, "name", bf_db_str(vl, i, "name"));
        bf_mp_kv_str(pk, "region_code", bf_db_str(vl, i, "region_code"));
        bf_mp_kv_str(pk, "category", bf_db_str(vl, i, "category"));
    }
    rc = 0;
    goto cleanup;
dbfail:
    bf_req_db_fail(r);
    bf_db_rollback(r->db);
cleanup:
    PQclear(hc);
    PQclear(hl);
    PQclear(cl);
    PQclear(vc);
    PQclear(vl);
    return rc;
}
