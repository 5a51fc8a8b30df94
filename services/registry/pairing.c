/* pairing.c: who helps whom (结对), the heart of the registry.
 *
 *   unit_village      unit     -> village    (Dongli: each unit 2 villages)
 *   team_village      team     -> village
 *   cadre_household   cadre    -> household  (帮扶责任人; per-rank caps, seed 001)
 *   district_county   carrier unit -> county (对口帮扶, seed 003)
 *   helper_household  social helper (unit of kind social) -> household
 *
 * Rules. Helper and target must exist with the right kinds. One active
 * pairing per (kind, helper, target). A cadre is responsible for at most the
 * cap of the cadre's rank (config registry.cap_*; 0 = no cap): the cadre's row
 * is locked (SELECT ... FOR UPDATE) before counting, so two concurrent
 * requests for the same cadre are serialised and cannot both pass. A pairing
 * is never deleted or overwritten: pairing.end records when, who, why and the
 * approval reference (seed 000: changes need the organisation department's
 * approval), and the row stays as history.
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

/* The region code a pairing's target lies in (a county's code, a village's
 * region, a household's village's region), for scope checks on writes. */
#define S_TARGET_REGION                                                                     \
    "CASE WHEN p.kind = 'district_county' THEN p.target_code::text "                        \
    "WHEN p.kind IN ('unit_village','team_village') THEN "                                  \
    "(SELECT region_code::text FROM village WHERE id = p.target_id) "                       \
    "ELSE (SELECT v.region_code::text FROM household h JOIN village v ON v.id = h.village_id " \
    "WHERE h.id = p.target_id) END AS target_region"

#define S_PAIRING_COLS                                                                      \
    "id, kind, helper_id, target_id, target_code, starts_on, ends_on, created_by, "         \
    REGISTRY_TS("created_at") " AS created_at, " REGISTRY_TS("ended_at") " AS ended_at, " \
    "ended_by, end_reason, approval_ref"

static void s_pack_pairing(msgpack_packer *pk, const PGresult *res, int i)
{
    msgpack_pack_map(pk, 14);
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "kind"));
    bf_mp_kv_int(pk, "helper_id", bf_db_int(res, i, "helper_id"));
    bf_mp_kv_int(pk, "target_id", bf_db_int(res, i, "target_id"));
    bf_mp_kv_str(pk, "target_code", bf_db_str(res, i, "target_code"));
    bf_mp_kv_str(pk, "starts_on", bf_db_str(res, i, "starts_on"));
    bf_mp_kv_str(pk, "ends_on", bf_db_str(res, i, "ends_on"));
    bf_mp_kv_bool(pk, "active", bf_db_null(res, i, "ended_at"));
    bf_mp_kv_str(pk, "created_by", bf_db_str(res, i, "created_by"));
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, i, "created_at"));
    bf_mp_kv_str(pk, "ended_at", bf_db_str(res, i, "ended_at"));
    bf_mp_kv_str(pk, "ended_by", bf_db_str(res, i, "ended_by"));
    bf_mp_kv_str(pk, "reason", bf_db_str(res, i, "end_reason"));
    bf_mp_kv_str(pk, "approval_ref", bf_db_str(res, i, "approval_ref"));
}

int pairing_insert(bf_req_t *r, const char *field, const char *kind, int64_t helper_id,
                   int64_t target_id, const char *target_code, const char *starts_on,
                   const char *ends_on, int64_t *id)
{
    const char *p[] = {kind,      bf_req_itoa(r, helper_id), bf_req_itoa(r, target_id),
                       target_code, starts_on, ends_on, r->actor};
    PGresult *res = bf_db_prep(r->db, "pairing_insert",
                               "INSERT INTO pairing (kind, helper_id, target_id, target_code, "
                               "  starts_on, ends_on, created_by) "
                               "VALUES ($1, $2, $3, $4, $5::date, $6::date, $7) RETURNING id",
                               7, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505"))
            return bf_req_fail(r, BF_E_EXISTS, field,
                               "an active %s pairing of this helper and target exists", kind);
        return bf_req_db_fail(r);
    }
    *id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "id", *id);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_int(pk, "helper_id", helper_id);
    bf_mp_kv_int(pk, "target_id", target_id);
    bf_mp_kv_str(pk, "target_code", target_code);
    bf_mp_kv_str(pk, "starts_on", starts_on);
    bf_mp_kv_str(pk, "ends_on", ends_on);
    return registry_emit(r, &ev, "pairing.created", registry_subject(r, "pairing", *id));
}

int pairing_find_active(bf_req_t *r, const char *kind, int64_t helper_id, int64_t target_id,
                        int64_t *id)
{
    const char *p[] = {kind, bf_req_itoa(r, helper_id), bf_req_itoa(r, target_id)};
    PGresult *res = bf_db_prep(r->db, "pairing_dup",
                               "SELECT id FROM pairing WHERE kind = $1 AND helper_id = $2 "
                               "  AND target_id = $3 AND ended_at IS NULL",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res) > 0;
    if (found) *id = bf_db_int(res, 0, "id");
    PQclear(res);
    return found;
}

int pairing_cap_check(bf_req_t *r, const char *field, int64_t cadre_id, const char *rank, int cap)
{
    if (cap <= 0) return 0;
    const char *p[] = {bf_req_itoa(r, cadre_id)};
    PGresult *res = bf_db_prep(r->db, "pairing_load",
                               "SELECT count(*) AS n FROM pairing WHERE kind = 'cadre_household' "
                               "  AND helper_id = $1 AND ended_at IS NULL",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t load = bf_db_int(res, 0, "n");
    PQclear(res);
    if (load >= cap)
        return bf_req_fail(r, BF_E_PRECONDITION, field,
                           "cadre %" PRId64 " (rank %s) is already responsible for %" PRId64
                           " households, the cap for the rank is %d",
                           cadre_id, rank, load, cap);
    return 0;
}

/* Runs a one-row lookup by id; returns the result (caller PQclears) or NULL
 * with the request failed. */
static PGresult *s_lookup(bf_req_t *r, const char *stmt, const char *sql, int64_t id)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, stmt, sql, 1, p, NULL, NULL);
    if (!res) bf_req_db_fail(r);
    return res;
}

/* Fails with not_found (rolling back) unless res has a row. */
static int s_need_row(bf_req_t *r, PGresult *res, const char *field, const char *what,
                      int64_t id)
{
    if (PQntuples(res) > 0) return 0;
    PQclear(res);
    bf_db_rollback(r->db);
    return bf_req_fail(r, BF_E_NOT_FOUND, field, "no %s with id %" PRId64, what, id);
}

int pairing_create(bf_req_t *r)
{
    const char *kind, *starts_on, *ends_on = NULL, *code = NULL;
    int64_t helper_id, target_id = 0;
    if (bf_req_enum(r, r->params, NULL, "kind", true, registry_pairing_kinds, &kind) != 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "helper_id", true, 1, INT64_MAX, &helper_id) != 0)
        return -1;
    int has_target = bf_req_int(r, r->params, NULL, "target_id", false, 1, INT64_MAX, &target_id);
    if (has_target < 0) return -1;
    if (registry_code_param(r, "target_code", false, &code) < 0) return -1;
    bool county = !strcmp(kind, "district_county");
    if (county) {
        /* a county is named by its code; target_id is the code's value */
        if (!code && has_target == 0) {
            code = bf_arena_printf(r->arena, "%012" PRId64, target_id);
            if (!code || strlen(code) != 12 || bf_division_check(code, 12) != 0)
                return bf_req_fail(r, BF_E_INVALID, "target_id",
                                   "for district_county, target_id is the county's 12-digit code");
        } else if (!code) {
            return bf_req_fail(r, BF_E_INVALID, "target_code",
                               "district_county needs target_code (the county's 12-digit code)");
        } else if (has_target == 0 && strtoll(code, NULL, 10) != target_id) {
            return bf_req_fail(r, BF_E_INVALID, "target_id",
                               "target_id and target_code name different counties");
        }
        target_id = strtoll(code, NULL, 10);
    } else {
        if (code)
            return bf_req_fail(r, BF_E_INVALID, "target_code",
                               "target_code is only for district_county pairings");
        if (has_target != 0)
            return bf_req_fail(r, BF_E_INVALID, "target_id", "target_id is required");
    }
    if (registry_date_param(r, "starts_on", true, &starts_on) != 0) return -1;
    if (registry_date_param(r, "ends_on", false, &ends_on) < 0) return -1;
    if (ends_on && strcmp(ends_on, starts_on) < 0)
        return bf_req_fail(r, BF_E_INVALID, "ends_on", "ends_on is before starts_on");

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    PGresult *res;
    int cap = 0;
    const char *rank = NULL;
    /* the helper */
    if (!strcmp(kind, "cadre_household")) {
        res = s_lookup(r, "pairing_lock_cadre", "SELECT rank FROM cadre WHERE id = $1 FOR UPDATE",
                       helper_id);
        if (!res) return -1;
        if (s_need_row(r, res, "helper_id", "cadre", helper_id) != 0) return -1;
        rank = bf_arena_strndup(r->arena, bf_db_str(res, 0, "rank"), 16);
        cap = registry_cap_for_rank(r->svc, rank ? rank : "");
        PQclear(res);
    } else if (!strcmp(kind, "team_village")) {
        res = s_lookup(r, "pairing_team", "SELECT 1 FROM team WHERE id = $1", helper_id);
        if (!res) return -1;
        if (s_need_row(r, res, "helper_id", "team", helper_id) != 0) return -1;
        PQclear(res);
    } else {
        res = s_lookup(r, "pairing_unit", "SELECT kind FROM unit WHERE id = $1 FOR SHARE",
                       helper_id);
        if (!res) return -1;
        bool social = !strcmp(kind, "helper_household");
        if (s_need_row(r, res, "helper_id", social ? "social helper (unit of kind social)" : "unit",
                       helper_id) != 0)
            return -1;
        bool ok = !social || !strcmp(bf_db_str(res, 0, "kind"), "social");
        PQclear(res);
        if (!ok) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, "helper_id",
                               "no social helper (unit of kind social) with id %" PRId64,
                               helper_id);
        }
    }
    /* the target */
    if (county) {
        const char *cp[] = {code};
        res = bf_db_prep(r->db, "pairing_county", "SELECT level FROM region WHERE code = $1", 1,
                         cp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        bool ok = PQntuples(res) > 0 && !strcmp(bf_db_str(res, 0, "level"), "county");
        PQclear(res);
        if (!ok) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, "target_code", "no county with code %s", code);
        }
        if (registry_region_denied(r, "target_code", code) != 0) return -1;
    } else if (!strcmp(kind, "unit_village") || !strcmp(kind, "team_village")) {
        res = s_lookup(r, "pairing_village2", "SELECT region_code FROM village WHERE id = $1",
                       target_id);
        if (!res) return -1;
        if (s_need_row(r, res, "target_id", "village", target_id) != 0) return -1;
        bool inside = bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
        PQclear(res);
        if (!inside) return registry_region_denied(r, "target_id", NULL);
    } else {
        res = s_lookup(r, "pairing_household2",
                       "SELECT h.status, v.region_code FROM household h "
                       "JOIN village v ON v.id = h.village_id WHERE h.id = $1",
                       target_id);
        if (!res) return -1;
        if (s_need_row(r, res, "target_id", "household", target_id) != 0) return -1;
        bool active = !strcmp(bf_db_str(res, 0, "status"), "active");
        bool inside = bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
        PQclear(res);
        if (!inside) return registry_region_denied(r, "target_id", NULL);
        if (!active) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_PRECONDITION, "target_id",
                               "household %" PRId64 " has exited; it takes no new pairings",
                               target_id);
        }
    }
    /* the same pairing, still active */
    int64_t other;
    int dup = pairing_find_active(r, kind, helper_id, target_id, &other);
    if (dup < 0) return -1;
    if (dup) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_EXISTS, county ? "target_code" : "target_id",
                           "this pairing is already active (pairing %" PRId64 ")", other);
    }
    /* the cadre's cap; the cadre row is locked, so this count is stable */
    if (rank && pairing_cap_check(r, "helper_id", helper_id, rank, cap) != 0) {
        bf_db_rollback(r->db);
        return -1;
    }
    int64_t id;
    if (pairing_insert(r, county ? "target_code" : "target_id", kind, helper_id, target_id,
                       county ? code : NULL, starts_on, ends_on, &id) != 0) {
        bf_db_rollback(r->db);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 8);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "kind", kind);
    bf_mp_kv_int(r->out, "helper_id", helper_id);
    bf_mp_kv_int(r->out, "target_id", target_id);
    bf_mp_kv_str(r->out, "target_code", county ? code : NULL);
    bf_mp_kv_str(r->out, "starts_on", starts_on);
    bf_mp_kv_str(r->out, "ends_on", ends_on);
    bf_mp_kv_bool(r->out, "active", true);
    return 0;
}

/* A required free-text parameter that must say something. */
static int s_text(bf_req_t *r, const char *key, size_t max, const char **out)
{
    if (bf_req_str(r, r->params, NULL, key, true, max, out) != 0) return -1;
    for (const char *p = *out; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return 0;
    return bf_req_fail(r, BF_E_INVALID, key, "%s must not be empty", key);
}

int pairing_end(bf_req_t *r)
{
    int64_t id;
    const char *reason, *approval;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (s_text(r, "reason", 1000, &reason) != 0) return -1;
    if (s_text(r, "approval_ref", 200, &approval) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    PGresult *res = s_lookup(r, "pairing_lock2",
                             "SELECT " S_PAIRING_COLS ", " S_TARGET_REGION " FROM pairing p "
                             "WHERE id = $1 FOR UPDATE OF p",
                             id);
    if (!res) return -1;
    if (s_need_row(r, res, "id", "pairing", id) != 0) return -1;
    if (!bf_req_in_region(r, bf_db_str(res, 0, "target_region"))) {
        PQclear(res);
        return registry_region_denied(r, "id", NULL);
    }
    if (!bf_db_null(res, 0, "ended_at")) {
        const char *when = bf_arena_strndup(r->arena, bf_db_str(res, 0, "ended_at"), 32);
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "id", "pairing %" PRId64 " already ended at %s",
                           id, when ? when : "?");
    }
    const char *up[] = {bf_req_itoa(r, id), r->actor, reason, approval};
    PGresult *upd = bf_db_prep(r->db, "pairing_end",
                               "UPDATE pairing SET ended_at = now(), ended_by = $2, "
                               "  end_reason = $3, approval_ref = $4 WHERE id = $1 "
                               "RETURNING " REGISTRY_TS("ended_at") " AS ended_at",
                               4, up, NULL, NULL);
    if (!upd) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    const char *ended_at = bf_arena_strndup(r->arena, bf_db_str(upd, 0, "ended_at"), 32);
    PQclear(upd);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 8);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "kind", bf_db_str(res, 0, "kind"));
    bf_mp_kv_int(pk, "helper_id", bf_db_int(res, 0, "helper_id"));
    bf_mp_kv_int(pk, "target_id", bf_db_int(res, 0, "target_id"));
    bf_mp_kv_str(pk, "target_code", bf_db_str(res, 0, "target_code"));
    bf_mp_kv_str(pk, "reason", reason);
    bf_mp_kv_str(pk, "approval_ref", approval);
    bf_mp_kv_str(pk, "ended_at", ended_at);
    PQclear(res);
    if (registry_emit(r, &ev, "pairing.ended", registry_subject(r, "pairing", id)) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_bool(r->out, "active", false);
    bf_mp_kv_str(r->out, "ended_at", ended_at);
    bf_mp_kv_str(r->out, "reason", reason);
    bf_mp_kv_str(r->out, "approval_ref", approval);
    return 0;
}

int pairing_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *gp[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(r->db, "pairing_get2",
                               "SELECT " S_PAIRING_COLS " FROM pairing p WHERE id = $1 AND "
                               REGISTRY_PAIRING_VISIBLE("$2", "$3"),
                               3, gp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no pairing with id %" PRId64, id);
    }
    s_pack_pairing(r->out, res, 0);
    PQclear(res);
    return 0;
}

int pairing_list(bf_req_t *r)
{
    int64_t helper_id = 0, target_id = 0, after, limit;
    const char *kind = NULL, *code = NULL;
    bool active = false;
    int has_helper = bf_req_int(r, r->params, NULL, "helper_id", false, 1, INT64_MAX, &helper_id);
    if (has_helper < 0) return -1;
    int has_target = bf_req_int(r, r->params, NULL, "target_id", false, 1, INT64_MAX, &target_id);
    if (has_target < 0) return -1;
    if (registry_code_param(r, "target_code", false, &code) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "kind", false, registry_pairing_kinds, &kind) < 0)
        return -1;
    int has_active = bf_req_bool(r, r->params, NULL, "active", false, &active);
    if (has_active < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    if (code && has_target != 0) {
        target_id = strtoll(code, NULL, 10);
        has_target = 0;
    }
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {has_helper == 0 ? bf_req_itoa(r, helper_id) : NULL,
                       has_target == 0 ? bf_req_itoa(r, target_id) : NULL,
                       kind,
                       has_active == 0 ? (active ? "t" : "f") : NULL,
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1),
                       sc.region,
                       sc.cadre};
    PGresult *res = bf_db_prep(r->db, "pairing_list2",
                               "SELECT " S_PAIRING_COLS " FROM pairing p "
                               "WHERE ($1::bigint IS NULL OR helper_id = $1) "
                               "  AND ($2::bigint IS NULL OR target_id = $2) "
                               "  AND ($3::text IS NULL OR kind = $3) "
                               "  AND ($4::boolean IS NULL OR (ended_at IS NULL) = $4) "
                               "  AND id > $5::bigint "
                               "  AND " REGISTRY_PAIRING_VISIBLE("$7", "$8") " "
                               "ORDER BY id LIMIT $6::int",
                               8, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_pairing(r->out, res, i);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
