/* indicator.c: indicator templates, their assignment to villages, reported
 * values, and the roll-up village -> township/street -> district.
 *
 * Values are integers in the indicator's unit (fen for money, a count, 0/1 for
 * a standard met or not); a target has a direction (>=, <=, =). Each
 * assignment keeps the village's region code as the registry gave it at
 * assign time (the village's township or street), so progress.rollup sums any
 * level with one query over code prefixes and never calls the registry.
 * Percentages are integer basis points (met * 10000 / total, floored).
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_directions[] = {">=", "<=", "=", NULL};

static const char *s_indicator_cols =
    "id, code, name, unit, target, direction, vetoing, category, description, created_by, "
    "rfc3339(created_at) AS created_at";

static void s_pack_indicator(msgpack_packer *pk, const PGresult *res, int i)
{
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_col_int(&m, "id", res, i, "id");
    tm_col_str(&m, "code", res, i, "code");
    tm_col_str(&m, "name", res, i, "name");
    tm_col_str(&m, "unit", res, i, "unit");
    tm_col_int(&m, "target", res, i, "target");
    tm_col_str(&m, "direction", res, i, "direction");
    tm_col_bool(&m, "vetoing", res, i, "vetoing");
    tm_col_str(&m, "category", res, i, "category");
    tm_col_str(&m, "description", res, i, "description");
    tm_col_str(&m, "created_by", res, i, "created_by");
    tm_col_str(&m, "created_at", res, i, "created_at");
    tasks_map_end(&m, pk);
}

int indicator_define(bf_req_t *r)
{
    const char *code, *name, *unit, *direction, *category = NULL, *description = NULL;
    int64_t target;
    bool vetoing = false;
    if (tasks_text_param(r, r->params, NULL, "code", true, 64, &code) != 0) return -1;
    for (const char *c = code; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.' || *c == ':'))
            return bf_req_fail(r, BF_E_INVALID, "code",
                               "code may hold only letters, digits and _ - . :");
    }
    if (tasks_text_param(r, r->params, NULL, "name", true, TASKS_TITLE_MAX, &name) != 0)
        return -1;
    if (tasks_text_param(r, r->params, NULL, "unit", true, 32, &unit) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "target", true, INT64_MIN, INT64_MAX, &target) != 0)
        return -1;
    if (bf_req_enum(r, r->params, NULL, "direction", true, s_directions, &direction) != 0)
        return -1;
    if (bf_req_bool(r, r->params, NULL, "vetoing", false, &vetoing) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "category", false, 64, &category) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "description", false, TASKS_TEXT_MAX, &description) < 0)
        return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {code,     name,        unit,    bf_req_itoa(r, target), direction,
                       vetoing ? "true" : "false", category, description, r->actor};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO indicator (code, name, unit, target, direction, vetoing, category, "
             " description, created_by) VALUES ($1, $2, $3, $4::bigint, $5, $6::boolean, $7, $8, "
             " $9) RETURNING %s",
             s_indicator_cols);
    PGresult *res = bf_db_prep(r->db, "indicator_insert", sql, 9, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "code", "an indicator with code %s exists", code);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    s_pack_indicator(pk, res, 0);
    if (tasks_emit(r, &ev, "indicator.defined", "indicator", id) != 0) {
        PQclear(res);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    s_pack_indicator(r->out, res, 0);
    PQclear(res);
    return 0;
}

int indicator_list(bf_req_t *r)
{
    const char *category = NULL;
    int64_t after, limit;
    if (bf_req_str(r, r->params, NULL, "category", false, 64, &category) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *p[] = {category, bf_req_itoa(r, after), bf_req_itoa(r, limit + 1)};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM indicator WHERE ($1::text IS NULL OR category = $1) "
             " AND id > $2::bigint ORDER BY id LIMIT $3::int",
             s_indicator_cols);
    PGresult *res = bf_db_prep(r->db, "indicator_list", sql, 3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_indicator(r->out, res, i);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

/* Finds the indicator named by indicator_id or code: its id, code, target and
 * direction. 0 or -1. */
static int s_indicator(bf_req_t *r, int64_t *id, char code[65], int64_t *target,
                       char direction[3], bool required)
{
    int64_t iid = 0;
    const char *c = NULL;
    if (bf_req_int(r, r->params, NULL, "indicator_id", false, 1, INT64_MAX, &iid) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "code", false, 64, &c) < 0) return -1;
    if (!iid && !c) {
        if (!required) return 1;
        return bf_req_fail(r, BF_E_INVALID, "indicator_id", "give indicator_id or code");
    }
    const char *p[] = {iid ? bf_req_itoa(r, iid) : NULL, c};
    PGresult *res = bf_db_prep(r->db, "indicator_find",
                               "SELECT id, code, target, direction FROM indicator "
                               "WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR "
                               " code = $2)",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (iid)
            return bf_req_fail(r, BF_E_NOT_FOUND, "indicator_id", "no indicator with id %lld%s%s",
                               (long long)iid, c ? " and code " : "", c ? c : "");
        return bf_req_fail(r, BF_E_NOT_FOUND, "code", "no indicator with code %s", c);
    }
    *id = bf_db_int(res, 0, "id");
    snprintf(code, 65, "%s", bf_db_str(res, 0, "code"));
    *target = bf_db_int(res, 0, "target");
    snprintf(direction, 3, "%s", bf_db_str(res, 0, "direction"));
    PQclear(res);
    return 0;
}

int indicator_assign(bf_req_t *r)
{
    int64_t iid, itarget, year = 0, target;
    char code[65], direction[3];
    const msgpack_object_array *list;
    int64_t *vids;
    size_t nv;
    if (s_indicator(r, &iid, code, &itarget, direction, true) != 0) return -1;
    if (bf_req_list(r, r->params, NULL, "village_ids", true, 10000, &list) != 0) return -1;
    if (tasks_id_list(r, list, "village_ids", &vids, &nv) != 0) return -1;
    if (nv == 0)
        return bf_req_fail(r, BF_E_INVALID, "village_ids", "village_ids must not be empty");
    if (bf_req_int(r, r->params, NULL, "year", false, 2000, 2100, &year) < 0) return -1;
    if (!year && tasks_current_year(r, &year) != 0) return -1;
    target = itarget;
    if (bf_req_int(r, r->params, NULL, "target", false, INT64_MIN, INT64_MAX, &target) < 0)
        return -1;
    const char **codes = bf_arena_alloc(r->arena, sizeof *codes * nv);
    if (!codes) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    for (size_t i = 0; i < nv; i++) {
        tasks_entity_t v;
        const char *f = bf_arena_printf(r->arena, "village_ids[%zu]", i);
        if (tasks_registry_check(r, "village", vids[i], f, &v) != 0) return -1;
        if (!v.region_code[0])
            return bf_req_fail(r, BF_E_UNAVAILABLE, f, "the registry gave no region for %s", f);
        codes[i] = bf_arena_strndup(r->arena, v.region_code, 12);
        if (tasks_scope_write_code(r, codes[i], f) != 0) return -1;
    }
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    int64_t *aids = bf_arena_alloc(r->arena, sizeof *aids * nv);
    bool *fresh = bf_arena_alloc(r->arena, sizeof *fresh * nv);
    if (!aids || !fresh) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    size_t nnew = 0;
    for (size_t i = 0; i < nv; i++) {
        const char *p[] = {bf_req_itoa(r, iid), bf_req_itoa(r, vids[i]), codes[i],
                           bf_req_itoa(r, year), bf_req_itoa(r, target), r->actor};
        PGresult *res = bf_db_prep(
            r->db, "assign_insert",
            "WITH ins AS (INSERT INTO indicator_assignment (indicator_id, village_id, "
            " region_code, year, target, created_by) VALUES ($1::bigint, $2::bigint, $3, "
            " $4::int, $5::bigint, $6) ON CONFLICT (indicator_id, village_id, year) DO NOTHING "
            " RETURNING id) "
            "SELECT id, true AS fresh FROM ins UNION ALL "
            "SELECT id, false FROM indicator_assignment WHERE indicator_id = $1::bigint "
            " AND village_id = $2::bigint AND year = $4::int",
            6, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        if (PQntuples(res) == 0) { /* inserted concurrently, not yet visible: retry later */
            PQclear(res);
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_CONFLICT, "village_ids", "concurrent assignment, retry");
        }
        aids[i] = bf_db_int(res, 0, "id");
        fresh[i] = bf_db_bool(res, 0, "fresh");
        if (fresh[i]) nnew++;
        PQclear(res);
    }
    if (nnew) {
        bf_event_t ev;
        msgpack_packer *pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 5);
        bf_mp_kv_int(pk, "indicator_id", iid);
        bf_mp_kv_str(pk, "code", code);
        bf_mp_kv_int(pk, "year", year);
        bf_mp_kv_int(pk, "target", target);
        bf_mp_key(pk, "assignments");
        msgpack_pack_array(pk, nnew);
        for (size_t i = 0; i < nv; i++) {
            if (!fresh[i]) continue;
            msgpack_pack_map(pk, 3);
            bf_mp_kv_int(pk, "id", aids[i]);
            bf_mp_kv_int(pk, "village_id", vids[i]);
            bf_mp_kv_str(pk, "region_code", codes[i]);
        }
        if (tasks_emit(r, &ev, "indicator.assigned", "indicator", iid) != 0) return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "indicator_id", iid);
    bf_mp_kv_str(r->out, "code", code);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_int(r->out, "assigned", (int64_t)nnew);
    bf_mp_kv_int(r->out, "existing", (int64_t)(nv - nnew));
    bf_mp_key(r->out, "assignments");
    msgpack_pack_array(r->out, nv);
    for (size_t i = 0; i < nv; i++) {
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "id", aids[i]);
        bf_mp_kv_int(r->out, "village_id", vids[i]);
        bf_mp_kv_str(r->out, "region_code", codes[i]);
        bf_mp_kv_bool(r->out, "created", fresh[i]);
    }
    return 0;
}

static const char *s_assignment_cols =
    "a.id, a.indicator_id, i.code, i.name, i.unit, i.direction, i.vetoing, a.village_id, "
    "a.region_code, a.year, a.target, a.actual, a.met, rfc3339(a.reported_at) AS reported_at";

static void s_pack_assignment(msgpack_packer *pk, const PGresult *res, int i)
{
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_col_int(&m, "id", res, i, "id");
    tm_col_int(&m, "indicator_id", res, i, "indicator_id");
    tm_col_str(&m, "code", res, i, "code");
    tm_col_str(&m, "name", res, i, "name");
    tm_col_str(&m, "unit", res, i, "unit");
    tm_col_str(&m, "direction", res, i, "direction");
    tm_col_bool(&m, "vetoing", res, i, "vetoing");
    tm_col_int(&m, "village_id", res, i, "village_id");
    tm_col_str(&m, "region_code", res, i, "region_code");
    tm_col_int(&m, "year", res, i, "year");
    tm_col_int(&m, "target", res, i, "target");
    tm_col_int(&m, "actual", res, i, "actual");
    tm_col_bool(&m, "met", res, i, "met");
    tm_col_str(&m, "reported_at", res, i, "reported_at");
    tasks_map_end(&m, pk);
}

int indicator_report(bf_req_t *r)
{
    int64_t aid = 0, value, village = 0, year = 0;
    const char *note = NULL;
    tasks_evidence_t ev;
    if (bf_req_int(r, r->params, NULL, "assignment_id", false, 1, INT64_MAX, &aid) < 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "value", true, INT64_MIN, INT64_MAX, &value) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, TASKS_TEXT_MAX, &note) < 0) return -1;
    int has_ev = tasks_evidence_param(r, r->params, "evidence", false, &ev);
    if (has_ev < 0) return -1;
    if (!aid) {
        int64_t iid = 0, itarget;
        char code[65], direction[3];
        if (s_indicator(r, &iid, code, &itarget, direction, false) < 0) return -1;
        if (r->err.code) return -1;
        if (bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village) < 0)
            return -1;
        if (!village || !iid)
            return bf_req_fail(r, BF_E_INVALID, "assignment_id",
                               "give assignment_id, or indicator_id (or code) and village_id");
        if (bf_req_int(r, r->params, NULL, "year", false, 2000, 2100, &year) < 0) return -1;
        if (!year && tasks_current_year(r, &year) != 0) return -1;
        const char *p[] = {bf_req_itoa(r, iid), bf_req_itoa(r, village), bf_req_itoa(r, year)};
        PGresult *res = bf_db_prep(r->db, "assign_find",
                                   "SELECT id FROM indicator_assignment WHERE indicator_id = "
                                   " $1::bigint AND village_id = $2::bigint AND year = $3::int",
                                   3, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        aid = PQntuples(res) ? bf_db_int(res, 0, "id") : 0;
        PQclear(res);
        if (!aid)
            return bf_req_fail(r, BF_E_NOT_FOUND, "village_id",
                               "indicator %s is not assigned to village %lld for %lld", code,
                               (long long)village, (long long)year);
    }
    const char *now = tasks_now(r);
    if (!now) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, aid), bf_req_itoa(r, value)};
    PGresult *res = bf_db_prep(
        r->db, "assign_lock",
        "SELECT a.met AS was_met, a.region_code, CASE i.direction WHEN '>=' THEN $2::bigint >= a.target "
        " WHEN '<=' THEN $2::bigint <= a.target ELSE $2::bigint = a.target END AS met "
        "FROM indicator_assignment a JOIN indicator i ON i.id = a.indicator_id "
        "WHERE a.id = $1::bigint FOR UPDATE OF a",
        2, p, NULL, NULL);
    /* the village's region is copied on the assignment (see a.region_code) */
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "assignment_id", "no assignment with id %lld",
                           (long long)aid);
    }
    bool met = bf_db_bool(res, 0, "met"), was_met = bf_db_bool(res, 0, "was_met");
    if (tasks_scope_write_code(r, bf_db_str(res, 0, "region_code"),
                               village ? "village_id" : "assignment_id") != 0) {
        PQclear(res);
        return -1;
    }
    PQclear(res);
    int64_t evidence_id = 0;
    if (has_ev == 0 && tasks_evidence_store(r, &ev, 0, now, &evidence_id) != 0) return -1;
    const char *ip[] = {bf_req_itoa(r, aid), bf_req_itoa(r, value), met ? "true" : "false", note,
                        evidence_id ? bf_req_itoa(r, evidence_id) : NULL, r->actor, now};
    res = bf_db_prep(r->db, "report_insert",
                     "INSERT INTO indicator_report (assignment_id, value, met, note, evidence_id, "
                     " reported_by, reported_at) VALUES ($1::bigint, $2::bigint, $3::boolean, $4, "
                     " $5::bigint, $6, $7::timestamptz) RETURNING id",
                     7, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t report_id = bf_db_int(res, 0, "id");
    PQclear(res);
    const char *up[] = {ip[0], ip[1], ip[2], now};
    res = bf_db_prep(r->db, "assign_update",
                     "UPDATE indicator_assignment SET actual = $2::bigint, met = $3::boolean, "
                     " reported_at = $4::timestamptz WHERE id = $1::bigint",
                     4, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *gp[] = {bf_req_itoa(r, aid)};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM indicator_assignment a JOIN indicator i ON i.id = a.indicator_id "
             "WHERE a.id = $1::bigint",
             s_assignment_cols);
    res = bf_db_prep(r->db, "assign_get", sql, 1, gp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    bf_event_t e;
    msgpack_packer *pk = bf_event_begin(&e);
    msgpack_pack_map(pk, 12);
    bf_mp_kv_int(pk, "assignment_id", aid);
    bf_mp_kv_int(pk, "report_id", report_id);
    bf_mp_kv_int(pk, "indicator_id", bf_db_int(res, 0, "indicator_id"));
    bf_mp_kv_str(pk, "code", bf_db_str(res, 0, "code"));
    bf_mp_kv_int(pk, "village_id", bf_db_int(res, 0, "village_id"));
    bf_mp_kv_str(pk, "region_code", bf_db_str(res, 0, "region_code"));
    bf_mp_kv_int(pk, "year", bf_db_int(res, 0, "year"));
    bf_mp_kv_int(pk, "value", value);
    bf_mp_kv_int(pk, "target", bf_db_int(res, 0, "target"));
    bf_mp_kv_str(pk, "direction", bf_db_str(res, 0, "direction"));
    bf_mp_kv_bool(pk, "met", met);
    bf_mp_kv_bool(pk, "was_met", was_met);
    if (tasks_emit(r, &e, "indicator.reported", "indicator_assignment", aid) != 0) {
        PQclear(res);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    s_pack_assignment(r->out, res, 0);
    PQclear(res);
    return 0;
}

/* ---------------------------------------------------------------- roll-up */

static int s_prefix_len(const char *level)
{
    if (!strcmp(level, "province")) return 2;
    if (!strcmp(level, "city")) return 4;
    if (!strcmp(level, "county")) return 6;
    if (!strcmp(level, "township")) return 9;
    return 12;
}

static const char *s_child_level(const char *level)
{
    if (!strcmp(level, "province")) return "city";
    if (!strcmp(level, "city")) return "county";
    if (!strcmp(level, "county")) return "township";
    return "village";
}

static int s_rollup_village(bf_req_t *r, int64_t village, int64_t year, const char *code)
{
    const char *p[] = {bf_req_itoa(r, village), bf_req_itoa(r, year), code};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM indicator_assignment a JOIN indicator i ON i.id = a.indicator_id "
             "WHERE a.village_id = $1::bigint AND a.year = $2::int "
             " AND ($3::text IS NULL OR i.code = $3) ORDER BY i.code",
             s_assignment_cols);
    PGresult *res = bf_db_prep(r->db, "rollup_village", sql, 3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res), met = 0;
    if (n && !bf_req_in_region(r, bf_db_str(res, 0, "region_code"))) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "village_id",
                           "village %lld lies outside the caller's region %s", (long long)village,
                           r->region);
    }
    for (int i = 0; i < n; i++) met += bf_db_bool(res, i, "met");
    msgpack_pack_map(r->out, 8);
    bf_mp_kv_int(r->out, "village_id", village);
    bf_mp_kv_str(r->out, "level", "village");
    bf_mp_kv_str(r->out, "region_code", n ? bf_db_str(res, 0, "region_code") : NULL);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_int(r->out, "met", met);
    bf_mp_kv_int(r->out, "total", n);
    bf_mp_kv_int(r->out, "percent_bp", tasks_bp(met, n));
    bf_mp_key(r->out, "indicators");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) s_pack_assignment(r->out, res, i);
    PQclear(res);
    return 0;
}

int progress_rollup(bf_req_t *r)
{
    const char *region = NULL, *code = NULL;
    int64_t village = 0, year = 0;
    if (bf_req_str(r, r->params, NULL, "region_code", false, 12, &region) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village) < 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "code", false, 64, &code) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "year", false, 2000, 2100, &year) < 0) return -1;
    if (!year && tasks_current_year(r, &year) != 0) return -1;
    if (!region == !village)
        return bf_req_fail(r, BF_E_INVALID, "region_code", "give region_code or village_id");
    if (village) return s_rollup_village(r, village, year, code);
    if (bf_division_check(region, strlen(region)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit division code");
    /* a region-bound caller rolls up only its region or what lies under it */
    if (!bf_req_in_region(r, region))
        return bf_req_fail(r, BF_E_NOT_FOUND, "region_code",
                           "region %s lies outside the caller's region %s", region, r->region);
    const char *level = bf_division_level(region);
    if (!strcmp(level, "village"))
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "%s is a village-level code: roll up one village with village_id",
                           region);
    int plen = s_prefix_len(level);
    const char *child_level = s_child_level(level);
    int clen = s_prefix_len(child_level);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%.*s%%", plen, region);
    const char *p[] = {prefix, bf_req_itoa(r, year), code, bf_req_itoa(r, clen)};
    PGresult *res = bf_db_prep(
        r->db, "rollup_region",
        "SELECT CASE WHEN $4::int = 12 THEN a.village_id::text "
        "  ELSE rpad(left(a.region_code, $4::int), 12, '0') END AS child, "
        " count(*) AS total, count(*) FILTER (WHERE a.met) AS met, "
        " count(DISTINCT a.village_id) AS villages, min(a.region_code) AS region_code "
        "FROM indicator_assignment a JOIN indicator i ON i.id = a.indicator_id "
        "WHERE a.year = $2::int AND a.region_code LIKE $1 AND ($3::text IS NULL OR i.code = $3) "
        "GROUP BY 1 ORDER BY 1",
        4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    int64_t met = 0, total = 0, villages = 0;
    for (int i = 0; i < n; i++) {
        met += bf_db_int(res, i, "met");
        total += bf_db_int(res, i, "total");
        villages += bf_db_int(res, i, "villages");
    }
    msgpack_pack_map(r->out, 10);
    bf_mp_kv_str(r->out, "region_code", region);
    bf_mp_kv_str(r->out, "level", level);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_str(r->out, "code", code);
    bf_mp_kv_int(r->out, "met", met);
    bf_mp_kv_int(r->out, "total", total);
    bf_mp_kv_int(r->out, "percent_bp", tasks_bp(met, total));
    bf_mp_kv_int(r->out, "villages", villages);
    bf_mp_kv_str(r->out, "child_level", child_level);
    bf_mp_key(r->out, "children");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        int64_t cm = bf_db_int(res, i, "met"), ct = bf_db_int(res, i, "total");
        msgpack_pack_map(r->out, 6);
        if (clen == 12) {
            bf_mp_kv_int(r->out, "village_id", bf_db_int(res, i, "child"));
            bf_mp_kv_str(r->out, "region_code", bf_db_str(res, i, "region_code"));
        } else {
            bf_mp_kv_str(r->out, "region_code", bf_db_str(res, i, "child"));
            bf_mp_kv_str(r->out, "level", child_level);
        }
        bf_mp_kv_int(r->out, "met", cm);
        bf_mp_kv_int(r->out, "total", ct);
        bf_mp_kv_int(r->out, "percent_bp", tasks_bp(cm, ct));
        bf_mp_kv_int(r->out, "villages", bf_db_int(res, i, "villages"));
    }
    PQclear(res);
    return 0;
}
