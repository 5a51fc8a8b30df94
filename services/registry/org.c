/* org.c: who helps: helper units (帮扶单位), their cadres (干部) and work
 * teams (驻村工作组).
 *
 * Other services (tasks, notify) call unit.get, cadre.get and team.get to
 * check ids and find the people to remind, so the result shapes here are a
 * contract (docs/registry.md): unit.get always carries contact_cadre_id,
 * team.get leader_id and member_ids, cadre.get the current household count
 * and the cap of the cadre's rank.
 *
 * A team has exactly one leader, who must be a party member (seed 000: 1名党员
 * 干部担任组长); creating it also pairs it with its villages (team_village) in
 * the same transaction.
 *
 * Each entity has one INSERT and one created event: registry_unit_insert,
 * registry_cadre_insert and registry_team_insert, which the create methods
 * here and the bulk imports (orgimport.c) both call.
 */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_name(bf_req_t *r, const char **out)
{
    if (bf_req_str(r, r->params, NULL, "name", true, 200, out) != 0) return -1;
    if (!**out) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    return 0;
}

static void s_kv_id_or_nil(msgpack_packer *pk, const char *key, const PGresult *res, int row,
                           const char *col)
{
    if (bf_db_null(res, row, col))
        bf_mp_kv_nil(pk, key);
    else
        bf_mp_kv_int(pk, key, bf_db_int(res, row, col));
}

/* Runs an INSERT ... ON CONFLICT (name) DO NOTHING RETURNING id: 0 with *id,
 * or -1 with already_exists on name ("a <what> with this name exists"). */
static int s_insert_named(bf_req_t *r, const char *stmt, const char *sql, int np, const char **p,
                          const char *what, int64_t *id)
{
    PGresult *res = bf_db_prep(r->db, stmt, sql, np, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_EXISTS, "name", "a %s with this name exists", what);
    }
    *id = bf_db_int(res, 0, "id");
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ units */

int registry_unit_insert(bf_req_t *r, const char *name, const char *kind, const char *region,
                         int64_t *id)
{
    if (region) {
        const char *rp[] = {region};
        PGresult *res = bf_db_prep(r->db, "region_exists",
                                   "SELECT 1 FROM region WHERE code = $1", 1, rp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res) > 0;
        PQclear(res);
        if (!found)
            return bf_req_fail(r, BF_E_NOT_FOUND, "region_code", "no region with code %s",
                               region);
    }
    const char *p[] = {name, kind, region, r->actor};
    if (s_insert_named(r, "unit_create",
                       "INSERT INTO unit (name, kind, region_code, created_by) "
                       "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING id",
                       4, p, "unit", id) != 0)
        return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "id", *id);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_str(pk, "region_code", region);
    return registry_emit(r, &ev, "unit.created", registry_subject(r, "unit", *id));
}

int unit_create(bf_req_t *r)
{
    const char *name, *kind, *region = NULL;
    if (s_name(r, &name) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "kind", true, registry_unit_kinds, &kind) != 0) return -1;
    if (registry_code_param(r, "region_code", false, &region) < 0) return -1;
    if (region && registry_region_denied(r, "region_code", region) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    int64_t id;
    if (registry_unit_insert(r, name, kind, region, &id) != 0) {
        bf_db_rollback(r->db);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "kind", kind);
    bf_mp_kv_str(r->out, "region_code", region);
    bf_mp_kv_nil(r->out, "contact_cadre_id");
    return 0;
}

/* One statement: the unit with its contact (part 0) and its active pairings
 * as helper (1), those the caller's scope may see. A cadre-only caller sees
 * only its own unit. */
int unit_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "unit_get1",
        "WITH u AS (SELECT u.id, u.name, u.kind, u.region_code, u.contact_cadre_id, "
        "    c.name AS contact_name, c.phone AS contact_phone, "
        "    (SELECT count(*) FROM cadre WHERE unit_id = u.id) AS cadres "
        "  FROM unit u LEFT JOIN cadre c ON c.id = u.contact_cadre_id "
        "  WHERE u.id = $1 AND ($3::bigint IS NULL OR "
        "    u.id = (SELECT cu.unit_id FROM cadre cu WHERE cu.id = $3::bigint))) "
        "SELECT 0 AS part, 0::bigint AS k, u.name AS c1, u.kind AS c2, u.region_code::text AS c3, "
        "  u.contact_cadre_id::text AS c4, u.contact_name AS c5, u.contact_phone AS c6, "
        "  u.cadres::text AS c7 FROM u "
        "UNION ALL SELECT 1, p.id, p.id::text, p.kind, p.target_id::text, p.target_code::text, "
        "  COALESCE(v.name, g.name), p.starts_on::text, p.ends_on::text "
        "FROM u JOIN pairing p ON p.helper_id = u.id AND p.ended_at IS NULL "
        "  AND p.kind IN ('unit_village', 'district_county', 'helper_household') "
        "LEFT JOIN village v ON p.kind = 'unit_village' AND v.id = p.target_id "
        "LEFT JOIN region g ON p.kind = 'district_county' AND g.code = p.target_code "
        "WHERE " REGISTRY_PAIRING_VISIBLE("$2", "$3") " "
        "ORDER BY part, k",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no unit with id %" PRId64, id);
    }
    msgpack_packer *pk = r->out;
    int n = PQntuples(res);
    msgpack_pack_map(pk, 10);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "name", registry_c(res, 0, 1));
    bf_mp_kv_str(pk, "kind", registry_c(res, 0, 2));
    bf_mp_kv_str(pk, "region_code", registry_c(res, 0, 3));
    registry_kv_ci(pk, "contact_cadre_id", res, 0, 4);
    bf_mp_key(pk, "contact");
    if (!registry_c(res, 0, 4)) {
        msgpack_pack_nil(pk);
    } else {
        msgpack_pack_map(pk, 3);
        bf_mp_kv_int(pk, "id", registry_ci(res, 0, 4));
        bf_mp_kv_str(pk, "name", registry_c(res, 0, 5));
        bf_mp_kv_str(pk, "phone", registry_c(res, 0, 6));
    }
    bf_mp_kv_int(pk, "cadres", registry_ci(res, 0, 7));
    /* the active pairings a unit is the helper of, by kind */
    static const char *const lists[][2] = {{"villages", "unit_village"},
                                           {"counties", "district_county"}};
    for (int l = 0; l < 2; l++) {
        bf_mp_key(pk, lists[l][0]);
        size_t cnt = 0;
        for (int i = 1; i < n; i++)
            if (!strcmp(registry_c(res, i, 2), lists[l][1])) cnt++;
        msgpack_pack_array(pk, cnt);
        for (int i = 1; i < n; i++) {
            if (strcmp(registry_c(res, i, 2), lists[l][1]) != 0) continue;
            msgpack_pack_map(pk, 5);
            bf_mp_kv_int(pk, "pairing_id", registry_ci(res, i, 1));
            if (l == 0)
                bf_mp_kv_int(pk, "village_id", registry_ci(res, i, 3));
            else
                bf_mp_kv_str(pk, "code", registry_c(res, i, 4));
            bf_mp_kv_str(pk, "name", registry_c(res, i, 5));
            bf_mp_kv_str(pk, "starts_on", registry_c(res, i, 6));
            bf_mp_kv_str(pk, "ends_on", registry_c(res, i, 7));
        }
    }
    bf_mp_key(pk, "household_ids");
    size_t nh = 0;
    for (int i = 1; i < n; i++)
        if (!strcmp(registry_c(res, i, 2), "helper_household")) nh++;
    msgpack_pack_array(pk, nh);
    for (int i = 1; i < n; i++)
        if (!strcmp(registry_c(res, i, 2), "helper_household"))
            msgpack_pack_int64(pk, registry_ci(res, i, 3));
    PQclear(res);
    return 0;
}

int unit_list(bf_req_t *r)
{
    const char *kind = NULL, *region = NULL;
    int64_t after, limit;
    if (bf_req_enum(r, r->params, NULL, "kind", false, registry_unit_kinds, &kind) < 0) return -1;
    if (registry_code_param(r, "region_code", false, &region) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *prefix = region ? bf_arena_printf(r->arena, "%.*s%%", registry_prefix_len(region),
                                                  region)
                                : NULL;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {kind, prefix, bf_req_itoa(r, after), bf_req_itoa(r, limit + 1), sc.cadre};
    PGresult *res = bf_db_prep(r->db, "unit_list2",
                               "SELECT id, name, kind, region_code, contact_cadre_id FROM unit "
                               "WHERE ($1::text IS NULL OR kind = $1) "
                               "  AND ($2::text IS NULL OR region_code::text LIKE $2) "
                               "  AND ($5::bigint IS NULL OR "
                               "    id = (SELECT cu.unit_id FROM cadre cu WHERE cu.id = $5::bigint)) "
                               "  AND id > $3::bigint ORDER BY id LIMIT $4::int",
                               5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 5);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(res, i, "kind"));
        bf_mp_kv_str(r->out, "region_code", bf_db_str(res, i, "region_code"));
        s_kv_id_or_nil(r->out, "contact_cadre_id", res, i, "contact_cadre_id");
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

int unit_set_contact(bf_req_t *r)
{
    int64_t id, cadre_id = 0;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    int has = bf_req_int(r, r->params, NULL, "cadre_id", false, 1, INT64_MAX, &cadre_id);
    if (has < 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id), has == 0 ? bf_req_itoa(r, cadre_id) : NULL};
    PGresult *res = bf_db_prep(r->db, "unit_lock",
                               "SELECT contact_cadre_id FROM unit WHERE id = $1 FOR UPDATE", 1, p,
                               NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no unit with id %" PRId64, id);
    }
    bool had = !bf_db_null(res, 0, "contact_cadre_id");
    int64_t old = bf_db_int(res, 0, "contact_cadre_id");
    PQclear(res);
    if (has == 0) {
        const char *cp[] = {p[1]};
        res = bf_db_prep(r->db, "cadre_unit", "SELECT unit_id FROM cadre WHERE id = $1", 1, cp,
                         NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res) > 0;
        int64_t unit = found ? bf_db_int(res, 0, "unit_id") : 0;
        PQclear(res);
        if (!found) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, "cadre_id", "no cadre with id %" PRId64,
                               cadre_id);
        }
        if (unit != id) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_PRECONDITION, "cadre_id",
                               "cadre %" PRId64 " belongs to unit %" PRId64 ", not to unit %" PRId64,
                               cadre_id, unit, id);
        }
    }
    bool changed = had != (has == 0) || (had && old != cadre_id);
    if (changed) {
        res = bf_db_prep(r->db, "unit_set_contact",
                         "UPDATE unit SET contact_cadre_id = $2::bigint WHERE id = $1", 2, p, NULL,
                         NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        bf_event_t ev;
        msgpack_packer *pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 2);
        bf_mp_kv_int(pk, "id", id);
        bf_mp_key(pk, "changes");
        msgpack_pack_map(pk, 1);
        bf_mp_key(pk, "contact_cadre_id");
        msgpack_pack_map(pk, 2);
        if (had)
            bf_mp_kv_int(pk, "old", old);
        else
            bf_mp_kv_nil(pk, "old");
        if (has == 0)
            bf_mp_kv_int(pk, "new", cadre_id);
        else
            bf_mp_kv_nil(pk, "new");
        if (registry_emit(r, &ev, "unit.updated", registry_subject(r, "unit", id)) != 0) return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "id", id);
    if (has == 0)
        bf_mp_kv_int(r->out, "contact_cadre_id", cadre_id);
    else
        bf_mp_kv_nil(r->out, "contact_cadre_id");
    bf_mp_kv_bool(r->out, "changed", changed);
    return 0;
}

/* ------------------------------------------------------------ cadres */

int registry_cadre_insert(bf_req_t *r, const char *name, const char *rank, int64_t unit_id,
                          bool party, const char *phone, int64_t *id)
{
    const char *p[] = {name, rank, bf_req_itoa(r, unit_id), party ? "t" : "f", phone, r->actor};
    PGresult *res = bf_db_prep(r->db, "cadre_create",
                               "INSERT INTO cadre (name, rank, unit_id, party_member, phone, "
                               "  created_by) VALUES ($1, $2, $3, $4::boolean, $5, $6) RETURNING id",
                               6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", *id);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_str(pk, "rank", rank);
    bf_mp_kv_int(pk, "unit_id", unit_id);
    bf_mp_kv_bool(pk, "party_member", party);
    return registry_emit(r, &ev, "cadre.created", registry_subject(r, "cadre", *id));
}

int cadre_create(bf_req_t *r)
{
    const char *name, *rank, *phone = NULL;
    int64_t unit_id;
    bool party;
    if (s_name(r, &name) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "rank", true, registry_ranks, &rank) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "unit_id", true, 1, INT64_MAX, &unit_id) != 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "party_member", true, &party) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "phone", false, 32, &phone) < 0) return -1;
    if (phone && !bf_valid_phone(phone, strlen(phone)))
        return bf_req_fail(r, BF_E_INVALID, "phone", "phone must be an 11-digit mobile number");
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    int found = registry_exists(r, "unit_exists", "SELECT 1 FROM unit WHERE id = $1", unit_id);
    if (found < 0) return bf_req_db_fail(r);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "unit_id", "no unit with id %" PRId64, unit_id);
    }
    int64_t id;
    if (registry_cadre_insert(r, name, rank, unit_id, party, phone, &id) != 0) {
        bf_db_rollback(r->db);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_str(r->out, "rank", rank);
    bf_mp_kv_int(r->out, "unit_id", unit_id);
    bf_mp_kv_bool(r->out, "party_member", party);
    bf_mp_kv_str(r->out, "phone", phone);
    bf_mp_kv_int(r->out, "cap", registry_cap_for_rank(r->svc, rank));
    return 0;
}

/* One statement: the cadre (part 0), the households it is responsible for
 * (1, those the caller's scope may see; "households" counts them all, as the
 * cap does) and its teams (2). A cadre-only caller sees only itself. */
int cadre_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "cadre_get1",
        "WITH c AS (SELECT c.id, c.name, c.rank, c.unit_id, u.name AS unit_name, "
        "    c.party_member, c.phone, "
        "    (SELECT count(*) FROM pairing WHERE kind = 'cadre_household' "
        "      AND helper_id = c.id AND ended_at IS NULL) AS households "
        "  FROM cadre c JOIN unit u ON u.id = c.unit_id "
        "  WHERE c.id = $1 AND ($3::bigint IS NULL OR c.id = $3::bigint)) "
        "SELECT 0 AS part, 0::bigint AS k, c.name AS c1, c.rank AS c2, c.unit_id::text AS c3, "
        "  c.unit_name AS c4, c.party_member::text AS c5, c.phone AS c6, "
        "  c.households::text AS c7 FROM c "
        "UNION ALL SELECT 1, p.target_id, p.target_id::text, NULL, NULL, NULL, NULL, NULL, NULL "
        "FROM c JOIN pairing p ON p.kind = 'cadre_household' AND p.helper_id = c.id "
        "  AND p.ended_at IS NULL WHERE " REGISTRY_PAIRING_VISIBLE("$2", "$3") " "
        "UNION ALL SELECT 2, t.id, t.id::text, t.name, m.role, NULL, NULL, NULL, NULL "
        "FROM c JOIN team_member m ON m.cadre_id = c.id JOIN team t ON t.id = m.team_id "
        "ORDER BY part, k",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no cadre with id %" PRId64, id);
    }
    int n = PQntuples(res);
    const char *rank = registry_c(res, 0, 2);
    const char *party = registry_c(res, 0, 5);
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 11);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "name", registry_c(res, 0, 1));
    bf_mp_kv_str(pk, "rank", rank);
    bf_mp_kv_int(pk, "unit_id", registry_ci(res, 0, 3));
    bf_mp_kv_str(pk, "unit_name", registry_c(res, 0, 4));
    bf_mp_kv_bool(pk, "party_member", party && party[0] == 't');
    bf_mp_kv_str(pk, "phone", registry_c(res, 0, 6));
    bf_mp_kv_int(pk, "households", registry_ci(res, 0, 7));
    bf_mp_kv_int(pk, "cap", registry_cap_for_rank(r->svc, rank ? rank : ""));
    bf_mp_key(pk, "household_ids");
    msgpack_pack_array(pk, registry_part_count(res, 1));
    for (int i = 1; i < n; i++)
        if (bf_db_int(res, i, "part") == 1) msgpack_pack_int64(pk, registry_ci(res, i, 1));
    bf_mp_key(pk, "teams");
    msgpack_pack_array(pk, registry_part_count(res, 2));
    for (int i = 1; i < n; i++) {
        if (bf_db_int(res, i, "part") != 2) continue;
        msgpack_pack_map(pk, 3);
        bf_mp_kv_int(pk, "team_id", registry_ci(res, i, 1));
        bf_mp_kv_str(pk, "name", registry_c(res, i, 2));
        bf_mp_kv_str(pk, "role", registry_c(res, i, 3));
    }
    PQclear(res);
    return 0;
}

int cadre_list(bf_req_t *r)
{
    int64_t unit_id = 0, after, limit;
    const char *rank = NULL;
    int has_unit = bf_req_int(r, r->params, NULL, "unit_id", false, 1, INT64_MAX, &unit_id);
    if (has_unit < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "rank", false, registry_ranks, &rank) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {has_unit == 0 ? bf_req_itoa(r, unit_id) : NULL, rank,
                       bf_req_itoa(r, after), bf_req_itoa(r, limit + 1), sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "cadre_list2",
        "SELECT c.id, c.name, c.rank, c.unit_id, c.party_member, c.phone, "
        "  (SELECT count(*) FROM pairing p WHERE p.kind = 'cadre_household' "
        "    AND p.helper_id = c.id AND p.ended_at IS NULL) AS households "
        "FROM cadre c WHERE ($1::bigint IS NULL OR c.unit_id = $1) "
        "  AND ($2::text IS NULL OR c.rank = $2) AND c.id > $3::bigint "
        "  AND ($5::bigint IS NULL OR c.id = $5::bigint) "
        "ORDER BY c.id LIMIT $4::int",
        5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 8);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_str(r->out, "rank", bf_db_str(res, i, "rank"));
        bf_mp_kv_int(r->out, "unit_id", bf_db_int(res, i, "unit_id"));
        bf_mp_kv_bool(r->out, "party_member", bf_db_bool(res, i, "party_member"));
        bf_mp_kv_str(r->out, "phone", bf_db_str(res, i, "phone"));
        bf_mp_kv_int(r->out, "households", bf_db_int(res, i, "households"));
        bf_mp_kv_int(r->out, "cap", registry_cap_for_rank(r->svc, bf_db_str(res, i, "rank")));
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ teams */

static bool s_in(const int64_t *ids, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

int registry_team_insert(bf_req_t *r, const char *name, int64_t unit_id, int64_t leader_id,
                         const int64_t *members, size_t nmembers, const int64_t *villages,
                         size_t nvillages, const char *starts_on, const char *village_field,
                         int64_t *id, int64_t *pairing_ids)
{
    const char *tp[] = {name, bf_req_itoa(r, unit_id), bf_req_itoa(r, leader_id), r->actor};
    if (s_insert_named(r, "team_create",
                       "INSERT INTO team (name, unit_id, leader_id, created_by) "
                       "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING id",
                       4, tp, "team", id) != 0)
        return -1;
    registry_arr_t a;
    registry_arr_begin(&a, r->arena);
    registry_arr_int(&a, leader_id);
    for (size_t i = 0; i < nmembers; i++) registry_arr_int(&a, members[i]);
    const char *mp[] = {bf_req_itoa(r, *id), bf_req_itoa(r, leader_id), registry_arr_end(&a)};
    if (!mp[2]) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, "team_members",
                     "INSERT INTO team_member (team_id, cadre_id, role) "
                     "SELECT $1::bigint, c, CASE WHEN c = $2::bigint THEN 'leader' ELSE 'member' END "
                     "FROM unnest($3::bigint[]) AS c",
                     3, mp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *start = starts_on;
    if (!start) {
        res = bf_db_prep(r->db, "today", "SELECT current_date::text AS d", 0, NULL, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        start = bf_arena_strndup(r->arena, bf_db_str(res, 0, "d"), 10);
        PQclear(res);
        if (!start) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "id", *id);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_int(pk, "unit_id", unit_id);
    bf_mp_kv_int(pk, "leader_id", leader_id);
    bf_mp_key(pk, "member_ids");
    msgpack_pack_array(pk, nmembers);
    for (size_t i = 0; i < nmembers; i++) msgpack_pack_int64(pk, members[i]);
    bf_mp_key(pk, "village_ids");
    msgpack_pack_array(pk, nvillages);
    for (size_t i = 0; i < nvillages; i++) msgpack_pack_int64(pk, villages[i]);
    if (registry_emit(r, &ev, "team.created", registry_subject(r, "team", *id)) != 0) return -1;
    for (size_t i = 0; i < nvillages; i++) {
        int64_t pid;
        if (pairing_insert(r, village_field, "team_village", *id, villages[i], NULL, start, NULL,
                           &pid) != 0)
            return -1;
        if (pairing_ids) pairing_ids[i] = pid;
    }
    return 0;
}

int team_create(bf_req_t *r)
{
    const char *name, *starts_on = NULL;
    int64_t unit_id, leader_id;
    const msgpack_object_array *ml, *vl;
    int64_t *members, *villages;
    size_t nmembers, nvillages;
    if (s_name(r, &name) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "unit_id", true, 1, INT64_MAX, &unit_id) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "leader_id", true, 1, INT64_MAX, &leader_id) != 0)
        return -1;
    if (bf_req_list(r, r->params, NULL, "member_ids", true, 50, &ml) != 0) return -1;
    if (registry_id_list(r, ml, "member_ids", &members, &nmembers) != 0) return -1;
    if (bf_req_list(r, r->params, NULL, "village_ids", true, 50, &vl) != 0) return -1;
    if (registry_id_list(r, vl, "village_ids", &villages, &nvillages) != 0) return -1;
    if (registry_date_param(r, "starts_on", false, &starts_on) < 0) return -1;
    for (size_t i = 0; i < nmembers; i++)
        if (members[i] == leader_id)
            return bf_req_fail(r, BF_E_INVALID, bf_arena_printf(r->arena, "member_ids[%zu]", i),
                               "the leader is named once, as leader_id, not among member_ids");

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    int found = registry_exists(r, "unit_exists", "SELECT 1 FROM unit WHERE id = $1", unit_id);
    if (found < 0) return bf_req_db_fail(r);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "unit_id", "no unit with id %" PRId64, unit_id);
    }
    /* every cadre exists; the leader is a party member */
    registry_arr_t a;
    registry_arr_begin(&a, r->arena);
    registry_arr_int(&a, leader_id);
    for (size_t i = 0; i < nmembers; i++) registry_arr_int(&a, members[i]);
    const char *cp[] = {registry_arr_end(&a)};
    if (!cp[0]) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    PGresult *res = bf_db_prep(r->db, "team_cadres",
                               "SELECT id, party_member FROM cadre WHERE id = ANY($1::bigint[]) "
                               "FOR SHARE",
                               1, cp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t *have = bf_arena_alloc(r->arena, ((size_t)PQntuples(res) + 1) * sizeof *have);
    size_t nhave = 0;
    int leader_party = -1;
    for (int i = 0; have && i < PQntuples(res); i++) {
        have[nhave++] = bf_db_int(res, i, "id");
        if (bf_db_int(res, i, "id") == leader_id) leader_party = bf_db_bool(res, i, "party_member");
    }
    PQclear(res);
    if (!have) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    if (leader_party < 0) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "leader_id", "no cadre with id %" PRId64,
                           leader_id);
    }
    for (size_t i = 0; i < nmembers; i++)
        if (!s_in(have, nhave, members[i])) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND,
                               bf_arena_printf(r->arena, "member_ids[%zu]", i),
                               "no cadre with id %" PRId64, members[i]);
        }
    if (!leader_party) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "leader_id",
                           "a team's leader must be a party member (seed 000: 党员干部担任组长)");
    }
    registry_arr_begin(&a, r->arena);
    for (size_t i = 0; i < nvillages; i++) registry_arr_int(&a, villages[i]);
    const char *vp[] = {registry_arr_end(&a)};
    if (!vp[0]) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    res = bf_db_prep(r->db, "team_villages2",
                     "SELECT id, region_code FROM village WHERE id = ANY($1::bigint[])", 1, vp,
                     NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t *vhave = bf_arena_alloc(r->arena, ((size_t)PQntuples(res) + 1) * sizeof *vhave);
    int64_t *vout = bf_arena_alloc(r->arena, ((size_t)PQntuples(res) + 1) * sizeof *vout);
    size_t nvhave = 0, nvout = 0;
    for (int i = 0; vhave && vout && i < PQntuples(res); i++) {
        vhave[nvhave++] = bf_db_int(res, i, "id");
        if (!bf_req_in_region(r, bf_db_str(res, i, "region_code")))
            vout[nvout++] = bf_db_int(res, i, "id");
    }
    PQclear(res);
    if (!vhave || !vout) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    for (size_t i = 0; i < nvillages; i++) {
        const char *f = bf_arena_printf(r->arena, "village_ids[%zu]", i);
        if (!s_in(vhave, nvhave, villages[i])) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, f, "no village with id %" PRId64, villages[i]);
        }
        if (s_in(vout, nvout, villages[i])) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_PERMISSION, f,
                               "village %" PRId64 " lies outside the region the caller is "
                               "bound to", villages[i]);
        }
    }

    int64_t *pairings = bf_arena_alloc(r->arena, (nvillages + 1) * sizeof *pairings);
    if (!pairings) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    int64_t id;
    if (registry_team_insert(r, name, unit_id, leader_id, members, nmembers, villages, nvillages,
                             starts_on, "target_id", &id, pairings) != 0) {
        bf_db_rollback(r->db);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_int(r->out, "leader_id", leader_id);
    bf_mp_key(r->out, "member_ids");
    msgpack_pack_array(r->out, nmembers);
    for (size_t i = 0; i < nmembers; i++) msgpack_pack_int64(r->out, members[i]);
    bf_mp_key(r->out, "pairing_ids");
    msgpack_pack_array(r->out, nvillages);
    for (size_t i = 0; i < nvillages; i++) msgpack_pack_int64(r->out, pairings[i]);
    return 0;
}

/* SQL: team t is visible under scope parameters P (it works in a village
 * under the region) and C (a cadre-only caller: a team it is in). */
#define S_TEAM_VISIBLE(P, C)                                                                   \
    "(" P "::text IS NULL OR EXISTS (SELECT 1 FROM pairing tp JOIN village tv "                \
    "ON tv.id = tp.target_id WHERE tp.kind = 'team_village' AND tp.helper_id = t.id "          \
    "AND tp.ended_at IS NULL AND tv.region_code::text LIKE " P ")) AND (" C "::bigint IS NULL " \
    "OR EXISTS (SELECT 1 FROM team_member tm WHERE tm.team_id = t.id "                         \
    "AND tm.cadre_id = " C "::bigint))"

/* One statement: the team (part 0), its members, leader first (1), and the
 * villages it is paired with (2; under the caller's region). */
int team_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "team_get1",
        "WITH t AS (SELECT t.id, t.name, t.unit_id, t.leader_id, t.created_at FROM team t "
        "  WHERE t.id = $1 AND " S_TEAM_VISIBLE("$2", "$3") ") "
        "SELECT 0 AS part, 0 AS k1, 0::bigint AS k2, t.name AS c1, t.unit_id::text AS c2, "
        "  t.leader_id::text AS c3, " REGISTRY_TS("t.created_at") " AS c4, NULL::text AS c5, "
        "  NULL::text AS c6 FROM t "
        "UNION ALL SELECT 1, (m.role <> 'leader')::int, c.id, c.id::text, c.name, c.rank, m.role, "
        "  c.party_member::text, c.phone "
        "FROM t JOIN team_member m ON m.team_id = t.id JOIN cadre c ON c.id = m.cadre_id "
        "UNION ALL SELECT 2, 0, p.id, p.id::text, v.id::text, v.name, v.region_code::text, "
        "  p.starts_on::text, p.ends_on::text "
        "FROM t JOIN pairing p ON p.kind = 'team_village' AND p.helper_id = t.id "
        "  AND p.ended_at IS NULL JOIN village v ON v.id = p.target_id "
        "WHERE $2::text IS NULL OR v.region_code::text LIKE $2 "
        "ORDER BY part, k1, k2",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no team with id %" PRId64, id);
    }
    msgpack_packer *pk = r->out;
    int n = PQntuples(res);
    size_t nm = registry_part_count(res, 1), nv = registry_part_count(res, 2);
    msgpack_pack_map(pk, 9);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "name", registry_c(res, 0, 1));
    bf_mp_kv_int(pk, "unit_id", registry_ci(res, 0, 2));
    bf_mp_kv_int(pk, "leader_id", registry_ci(res, 0, 3));
    bf_mp_key(pk, "member_ids");
    size_t nonleaders = 0;
    for (int i = 1; i < n; i++)
        if (bf_db_int(res, i, "part") == 1 && strcmp(registry_c(res, i, 4), "leader") != 0)
            nonleaders++;
    msgpack_pack_array(pk, nonleaders);
    for (int i = 1; i < n; i++)
        if (bf_db_int(res, i, "part") == 1 && strcmp(registry_c(res, i, 4), "leader") != 0)
            msgpack_pack_int64(pk, registry_ci(res, i, 1));
    bf_mp_key(pk, "members");
    msgpack_pack_array(pk, nm);
    for (int i = 1; i < n; i++) {
        if (bf_db_int(res, i, "part") != 1) continue;
        const char *party = registry_c(res, i, 5);
        msgpack_pack_map(pk, 6);
        bf_mp_kv_int(pk, "id", registry_ci(res, i, 1));
        bf_mp_kv_str(pk, "name", registry_c(res, i, 2));
        bf_mp_kv_str(pk, "rank", registry_c(res, i, 3));
        bf_mp_kv_str(pk, "role", registry_c(res, i, 4));
        bf_mp_kv_bool(pk, "party_member", party && party[0] == 't');
        bf_mp_kv_str(pk, "phone", registry_c(res, i, 6));
    }
    bf_mp_key(pk, "village_ids");
    msgpack_pack_array(pk, nv);
    for (int i = 1; i < n; i++)
        if (bf_db_int(res, i, "part") == 2) msgpack_pack_int64(pk, registry_ci(res, i, 2));
    bf_mp_key(pk, "villages");
    msgpack_pack_array(pk, nv);
    for (int i = 1; i < n; i++) {
        if (bf_db_int(res, i, "part") != 2) continue;
        msgpack_pack_map(pk, 6);
        bf_mp_kv_int(pk, "pairing_id", registry_ci(res, i, 1));
        bf_mp_kv_int(pk, "village_id", registry_ci(res, i, 2));
        bf_mp_kv_str(pk, "name", registry_c(res, i, 3));
        bf_mp_kv_str(pk, "region_code", registry_c(res, i, 4));
        bf_mp_kv_str(pk, "starts_on", registry_c(res, i, 5));
        bf_mp_kv_str(pk, "ends_on", registry_c(res, i, 6));
    }
    bf_mp_kv_str(pk, "created_at", registry_c(res, 0, 4));
    PQclear(res);
    return 0;
}

int team_list(bf_req_t *r)
{
    int64_t unit_id = 0, after, limit;
    int has_unit = bf_req_int(r, r->params, NULL, "unit_id", false, 1, INT64_MAX, &unit_id);
    if (has_unit < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {has_unit == 0 ? bf_req_itoa(r, unit_id) : NULL, bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(
        r->db, "team_list2",
        "SELECT t.id, t.name, t.unit_id, t.leader_id, "
        "  ARRAY(SELECT m.cadre_id FROM team_member m WHERE m.team_id = t.id "
        "        AND m.role = 'member' ORDER BY m.cadre_id) AS member_ids, "
        "  ARRAY(SELECT p.target_id FROM pairing p JOIN village v ON v.id = p.target_id "
        "        WHERE p.kind = 'team_village' AND p.helper_id = t.id AND p.ended_at IS NULL "
        "          AND ($4::text IS NULL OR v.region_code::text LIKE $4) "
        "        ORDER BY p.id) AS village_ids "
        "FROM team t WHERE ($1::bigint IS NULL OR t.unit_id = $1) AND t.id > $2::bigint "
        "  AND " S_TEAM_VISIBLE("$4", "$5") " "
        "ORDER BY t.id LIMIT $3::int",
        5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 6);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "name", bf_db_str(res, i, "name"));
        bf_mp_kv_int(r->out, "unit_id", bf_db_int(res, i, "unit_id"));
        bf_mp_kv_int(r->out, "leader_id", bf_db_int(res, i, "leader_id"));
        for (int l = 0; l < 2; l++) {
            const char *col = l ? "village_ids" : "member_ids";
            bf_mp_key(r->out, col);
            /* {1,2,3}: integers, no quoting */
            const char *lit = bf_db_str(res, i, col);
            size_t cnt = 0;
            for (const char *q = lit; q && *q; q++)
                if (*q >= '0' && *q <= '9' && (q == lit || q[-1] < '0' || q[-1] > '9')) cnt++;
            msgpack_pack_array(r->out, cnt);
            for (const char *q = lit; q && *q;) {
                if (*q >= '0' && *q <= '9') {
                    char *end;
                    msgpack_pack_int64(r->out, strtoll(q, &end, 10));
                    q = end;
                } else {
                    q++;
                }
            }
        }
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
