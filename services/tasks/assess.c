/* assess.c: satisfaction surveys and the yearly assessment.
 *
 * assessment.run {year} scores every unit and every village that has data in
 * the year, from three components, each in basis points (0..10000):
 *   indicators  met / total of the year's indicator assignments (a unit: of
 *               the villages it helps, per the registry's unit_village pairings
 *               at run time);
 *   timeliness  tasks done on time / tasks due in the year and already due
 *               (on time = closed, with the verified submission made by the due
 *               time); a unit counts the tasks it owns and those of its teams
 *               and cadres, a village the tasks about it or its households;
 *   satisfaction the mean of the year's surveys (score 0..100, times 100).
 * score_bp = sum(weight * component) / sum(weights of the components present),
 * integer arithmetic (tasks.weight_*). The one-vote veto (一票否决): a vetoing
 * indicator not met, or a vetoing task not done on time, fails the subject
 * whatever its score. Rankings per kind: not vetoed first, then score, then
 * id; the result names the top three and the bottom three. Each run is kept.
 * The year's exits (registry exit cases that reached 销号 in the year) are
 * counted per village (its households, itself) and per unit (over the villages
 * it helps), reported with each result, and break ties of score.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int survey_record(bf_req_t *r)
{
    int64_t unit = 0, village = 0, year, score, respondents = 0;
    const char *ref = NULL;
    if (bf_req_int(r, r->params, NULL, "unit_id", false, 1, INT64_MAX, &unit) < 0 ||
        bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village) < 0)
        return -1;
    if (!unit == !village)
        return bf_req_fail(r, BF_E_INVALID, "unit_id", "give exactly one of unit_id and village_id");
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "score", true, 0, 100, &score) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "respondents", false, 1, 100000000, &respondents) < 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "ref", false, TASKS_REF_MAX, &ref) < 0) return -1;
    const char *kind = unit ? "unit" : "village";
    int64_t sid = unit ? unit : village;
    if (tasks_registry_check(r, kind, sid, unit ? "unit_id" : "village_id", NULL) != 0) return -1;
    if (tasks_scope_subject(r, kind, sid, true, unit ? "unit_id" : "village_id") != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {kind,
                       bf_req_itoa(r, sid),
                       bf_req_itoa(r, year),
                       bf_req_itoa(r, score),
                       respondents ? bf_req_itoa(r, respondents) : NULL,
                       ref,
                       r->actor};
    PGresult *res = bf_db_prep(r->db, "survey_insert",
                               "INSERT INTO survey (subject_kind, subject_id, year, score, "
                               " respondents, ref, recorded_by) VALUES ($1, $2::bigint, $3::int, "
                               " $4::int, $5::int, $6, $7) RETURNING id",
                               7, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "ref", "a survey with ref %s exists", ref);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_key(pk, "subject");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_kv_int(pk, "id", sid);
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_int(pk, "score", score);
    if (tasks_emit(r, &ev, "survey.recorded", "survey", id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_key(r->out, "subject");
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_str(r->out, "kind", kind);
    bf_mp_kv_int(r->out, "id", sid);
    bf_mp_kv_int(r->out, "year", year);
    bf_mp_kv_int(r->out, "score", score);
    if (respondents)
        bf_mp_kv_int(r->out, "respondents", respondents);
    else
        bf_mp_kv_nil(r->out, "respondents");
    return 0;
}

/* The whole computation, as one statement over the run's parameters:
 * $1 run id, $2 year, $3 zone, $4 now, $5/$6 unit/village pairs, $7..$9
 * weights, $10 pass mark, $11/$12 the year's exits (village id, village
 * itself?). */
static const char *s_run_sql =
    "WITH params AS (SELECT ($2::int || '-01-01')::date::timestamp AT TIME ZONE $3 AS y0, "
    "   (($2::int + 1) || '-01-01')::date::timestamp AT TIME ZONE $3 AS y1, "
    "   $4::timestamptz AS now), "
    "uv AS (SELECT DISTINCT * FROM unnest($5::bigint[], $6::bigint[]) AS x(unit_id, village_id)), "
    "ia AS (SELECT a.village_id, a.met, i.vetoing, i.code FROM indicator_assignment a "
    "   JOIN indicator i ON i.id = a.indicator_id WHERE a.year = $2::int), "
    "tk AS (SELECT t.id, t.village_id, t.vetoing, "
    "   CASE WHEN t.owner_kind = 'unit' THEN t.owner_id ELSE t.esc_unit_id END AS unit_id, "
    "   (t.status = 'closed' AND t.submitted_at <= t.due_at) AS on_time "
    "   FROM task t, params p WHERE t.due_at >= p.y0 AND t.due_at < p.y1 AND t.due_at < p.now), "
    "ind AS (SELECT 'village' AS kind, village_id AS id, count(*) AS total, "
    "     count(*) FILTER (WHERE met) AS met, "
    "     array_agg('indicator ' || code || ' not met') FILTER (WHERE vetoing AND NOT met) AS veto "
    "   FROM ia GROUP BY village_id "
    "   UNION ALL SELECT 'unit', uv.unit_id, count(*), count(*) FILTER (WHERE ia.met), "
    "     array_agg('indicator ' || ia.code || ' not met in village ' || ia.village_id) "
    "       FILTER (WHERE ia.vetoing AND NOT ia.met) "
    "   FROM uv JOIN ia ON ia.village_id = uv.village_id GROUP BY uv.unit_id), "
    "tim AS (SELECT 'village' AS kind, village_id AS id, count(*) AS total, "
    "     count(*) FILTER (WHERE on_time) AS on_time, "
    "     array_agg('task ' || id || ' not done on time') FILTER (WHERE vetoing AND NOT on_time) "
    "       AS veto FROM tk WHERE village_id IS NOT NULL GROUP BY village_id "
    "   UNION ALL SELECT 'unit', unit_id, count(*), count(*) FILTER (WHERE on_time), "
    "     array_agg('task ' || id || ' not done on time') FILTER (WHERE vetoing AND NOT on_time) "
    "   FROM tk WHERE unit_id IS NOT NULL GROUP BY unit_id), "
    "ex AS (SELECT village_id, count(*) FILTER (WHERE NOT v) AS hh, "
    "   count(*) FILTER (WHERE v) AS vil "
    "   FROM unnest($11::bigint[], $12::boolean[]) AS x(village_id, v) GROUP BY village_id), "
    "exs AS (SELECT 'village' AS kind, village_id AS id, hh, vil FROM ex "
    "   UNION ALL SELECT 'unit', uv.unit_id, sum(ex.hh), sum(ex.vil) "
    "   FROM uv JOIN ex ON ex.village_id = uv.village_id GROUP BY uv.unit_id), "
    "sat AS (SELECT subject_kind AS kind, subject_id AS id, count(*) AS n, sum(score) AS s "
    "   FROM survey WHERE year = $2::int GROUP BY 1, 2), "
    "subj AS (SELECT kind, id FROM ind UNION SELECT kind, id FROM tim UNION SELECT kind, id FROM sat), "
    "comp AS (SELECT s.kind, s.id, COALESCE(ind.met, 0) AS im, COALESCE(ind.total, 0) AS it, "
    "   COALESCE(tim.on_time, 0) AS ton, COALESCE(tim.total, 0) AS tt, COALESCE(sat.n, 0) AS sn, "
    "   CASE WHEN ind.total > 0 THEN ind.met * 10000 / ind.total END AS ind_bp, "
    "   CASE WHEN tim.total > 0 THEN tim.on_time * 10000 / tim.total END AS time_bp, "
    "   CASE WHEN sat.n > 0 THEN sat.s * 100 / sat.n END AS sat_bp, "
    "   COALESCE(ind.veto, '{}') || COALESCE(tim.veto, '{}') AS veto, "
    "   COALESCE(exs.hh, 0) AS exh, COALESCE(exs.vil, 0) AS exv "
    "   FROM subj s LEFT JOIN ind ON ind.kind = s.kind AND ind.id = s.id "
    "   LEFT JOIN exs ON exs.kind = s.kind AND exs.id = s.id "
    "   LEFT JOIN tim ON tim.kind = s.kind AND tim.id = s.id "
    "   LEFT JOIN sat ON sat.kind = s.kind AND sat.id = s.id), "
    "scored AS (SELECT c.*, "
    "   COALESCE((COALESCE($7::bigint * ind_bp, 0) + COALESCE($8::bigint * time_bp, 0) "
    "     + COALESCE($9::bigint * sat_bp, 0)) / NULLIF("
    "       CASE WHEN ind_bp IS NULL THEN 0 ELSE $7::bigint END "
    "     + CASE WHEN time_bp IS NULL THEN 0 ELSE $8::bigint END "
    "     + CASE WHEN sat_bp IS NULL THEN 0 ELSE $9::bigint END, 0), 0) AS score, "
    "   cardinality(veto) > 0 AS vetoed FROM comp c) "
    "INSERT INTO assessment_result (run_id, subject_kind, subject_id, indicators_met, "
    " indicators_total, tasks_on_time, tasks_total, surveys, indicators_bp, timeliness_bp, "
    " satisfaction_bp, score_bp, vetoed, veto_reasons, passed, households_exited, "
    " villages_exited, rank) "
    "SELECT $1::bigint, kind, id, im, it, ton, tt, sn, ind_bp, time_bp, sat_bp, score, vetoed, "
    " veto, NOT vetoed AND score >= $10::int, exh, exv, "
    " row_number() OVER (PARTITION BY kind ORDER BY vetoed, score DESC, exh + exv DESC, id) "
    "FROM scored";

int assessment_run(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    int64_t year;
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    /* which units help the villages that have indicators: the registry says */
    const char *yp[] = {bf_req_itoa(r, year)};
    PGresult *res = bf_db_prep(r->db, "assess_villages",
                               "SELECT DISTINCT village_id FROM indicator_assignment "
                               "WHERE year = $1::int ORDER BY 1",
                               1, yp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int nv = PQntuples(res);
    size_t cap = 16, npairs = 0;
    int64_t *pu = bf_arena_alloc(r->arena, sizeof *pu * cap);
    int64_t *pv = bf_arena_alloc(r->arena, sizeof *pv * cap);
    for (int i = 0; i < nv && pu && pv; i++) {
        int64_t vid = bf_db_int(res, i, "village_id");
        int64_t *units;
        size_t nu;
        if (tasks_registry_village_units(r, vid, "year", &units, &nu) != 0) {
            PQclear(res);
            return -1;
        }
        for (size_t k = 0; k < nu; k++) {
            if (npairs == cap) {
                int64_t *nu2 = bf_arena_alloc(r->arena, sizeof *nu2 * cap * 2);
                int64_t *nv2 = bf_arena_alloc(r->arena, sizeof *nv2 * cap * 2);
                if (!nu2 || !nv2) {
                    pu = NULL;
                    break;
                }
                memcpy(nu2, pu, sizeof *pu * cap);
                memcpy(nv2, pv, sizeof *pv * cap);
                pu = nu2;
                pv = nv2;
                cap *= 2;
            }
            pu[npairs] = units[k];
            pv[npairs++] = vid;
        }
    }
    PQclear(res);
    if (!pu || !pv) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    const char *ua = tasks_int_array(r, pu, npairs), *va = tasks_int_array(r, pv, npairs);
    if (!ua || !va) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    /* the year's exits, as the registry has them */
    int64_t *xv;
    bool *xk;
    size_t nx;
    if (tasks_registry_exits(r, year, "year", &xv, &xk, &nx) != 0) return -1;
    const char *xva = tasks_int_array(r, xv, nx);
    char *xka = bf_arena_alloc(r->arena, 2 * nx + 3);
    if (!xva || !xka) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    size_t o = 0;
    xka[o++] = '{';
    for (size_t i = 0; i < nx; i++) {
        if (i) xka[o++] = ',';
        xka[o++] = xk[i] ? 't' : 'f';
    }
    xka[o++] = '}';
    xka[o] = '\0';

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *rp[] = {bf_req_itoa(r, year), bf_req_itoa(r, ts->w_ind), bf_req_itoa(r, ts->w_time),
                        bf_req_itoa(r, ts->w_sat), bf_req_itoa(r, ts->pass_bp), r->actor, now};
    res = bf_db_prep(r->db, "assess_run_insert",
                     "INSERT INTO assessment_run (year, w_ind, w_time, w_sat, pass_bp, run_by, "
                     " run_at) VALUES ($1::int, $2::int, $3::int, $4::int, $5::int, $6, "
                     " $7::timestamptz) RETURNING id",
                     7, rp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t run = bf_db_int(res, 0, "id");
    PQclear(res);
    const char *p[] = {bf_req_itoa(r, run),
                       bf_req_itoa(r, year),
                       ts->timezone,
                       now,
                       ua,
                       va,
                       bf_req_itoa(r, ts->w_ind),
                       bf_req_itoa(r, ts->w_time),
                       bf_req_itoa(r, ts->w_sat),
                       bf_req_itoa(r, ts->pass_bp),
                       xva,
                       xka};
    res = bf_db_prep(r->db, "assess_compute", s_run_sql, 12, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *sp[] = {bf_req_itoa(r, run)};
    res = bf_db_prep(r->db, "assess_summary",
                     "SELECT subject_kind, subject_id, rank, vetoed, "
                     " count(*) OVER (PARTITION BY subject_kind) AS n "
                     "FROM assessment_result WHERE run_id = $1::bigint "
                     "ORDER BY subject_kind, rank",
                     1, sp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "run_id", run);
    bf_mp_kv_int(pk, "year", year);
    static const char *const kinds[] = {"unit", "village"};
    for (int k = 0; k < 2; k++) {
        int first = -1, n = 0;
        for (int i = 0; i < PQntuples(res); i++) {
            const char *kind = bf_db_str(res, i, "subject_kind"); /* NULL: no results */
            if (!kind || strcmp(kind, kinds[k]) != 0) continue;
            if (first < 0) first = i;
            n++;
        }
        bf_mp_key(pk, k ? "villages" : "units");
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "assessed", n);
        int top = n < 3 ? n : 3;
        bf_mp_key(pk, "top3");
        msgpack_pack_array(pk, (size_t)top);
        for (int i = 0; i < top; i++) msgpack_pack_int64(pk, bf_db_int(res, first + i, "subject_id"));
        bf_mp_key(pk, "bottom3");
        msgpack_pack_array(pk, (size_t)top);
        for (int i = 0; i < top; i++)
            msgpack_pack_int64(pk, bf_db_int(res, first + n - 1 - i, "subject_id"));
        int nveto = 0;
        for (int i = 0; i < n; i++) nveto += bf_db_bool(res, first + i, "vetoed");
        bf_mp_key(pk, "vetoed");
        msgpack_pack_array(pk, (size_t)nveto);
        for (int i = 0; i < n; i++)
            if (bf_db_bool(res, first + i, "vetoed"))
                msgpack_pack_int64(pk, bf_db_int(res, first + i, "subject_id"));
    }
    PQclear(res);
    if (tasks_emit(r, &ev, "assessment.completed", "assessment", run) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return assessment_get(r);
}

static void s_pack_result(msgpack_packer *pk, const PGresult *res, int i)
{
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_col_str(&m, "kind", res, i, "subject_kind");
    tm_col_int(&m, "id", res, i, "subject_id");
    tm_col_int(&m, "rank", res, i, "rank");
    tm_col_int(&m, "score_bp", res, i, "score_bp");
    tm_col_bool(&m, "passed", res, i, "passed");
    tm_col_bool(&m, "vetoed", res, i, "vetoed");
    tm_key(&m, "veto_reasons");
    /* joined with the unit separator (0x1f), which no reason contains */
    const char *txt = bf_db_str(res, i, "veto_text");
    size_t n = 0;
    if (txt && *txt) {
        n = 1;
        for (const char *q = txt; *q; q++) n += *q == 0x1f;
    }
    msgpack_pack_array(tm_pk(&m), n);
    for (const char *q = txt; n && q;) {
        const char *e = strchr(q, 0x1f);
        bf_mp_strn(tm_pk(&m), q, e ? (size_t)(e - q) : strlen(q));
        q = e ? e + 1 : NULL;
    }
    tm_col_int(&m, "indicators_bp", res, i, "indicators_bp");
    tm_col_int(&m, "timeliness_bp", res, i, "timeliness_bp");
    tm_col_int(&m, "satisfaction_bp", res, i, "satisfaction_bp");
    tm_key(&m, "indicators");
    msgpack_pack_map(tm_pk(&m), 2);
    bf_mp_kv_int(tm_pk(&m), "met", bf_db_int(res, i, "indicators_met"));
    bf_mp_kv_int(tm_pk(&m), "total", bf_db_int(res, i, "indicators_total"));
    tm_key(&m, "tasks");
    msgpack_pack_map(tm_pk(&m), 2);
    bf_mp_kv_int(tm_pk(&m), "on_time", bf_db_int(res, i, "tasks_on_time"));
    bf_mp_kv_int(tm_pk(&m), "total", bf_db_int(res, i, "tasks_total"));
    tm_col_int(&m, "surveys", res, i, "surveys");
    tm_key(&m, "exits");
    msgpack_pack_map(tm_pk(&m), 2);
    bf_mp_kv_int(tm_pk(&m), "households", bf_db_int(res, i, "households_exited"));
    bf_mp_kv_int(tm_pk(&m), "villages", bf_db_int(res, i, "villages_exited"));
    tasks_map_end(&m, pk);
}

int assessment_get(bf_req_t *r)
{
    int64_t year, run = 0;
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "run_id", false, 1, INT64_MAX, &run) < 0) return -1;
    const char *p[] = {bf_req_itoa(r, year), run ? bf_req_itoa(r, run) : NULL};
    /* one statement: the run with its results joined on (a run without
     * results gives one row whose result columns are NULL) */
    PGresult *res = bf_db_prep(r->db, "assess_get1",
                               "WITH hd AS (SELECT id AS h_id, w_ind, w_time, w_sat, pass_bp, "
                               "  run_by, rfc3339(run_at) AS run_at FROM assessment_run "
                               "  WHERE year = $1::int AND ($2::bigint IS NULL OR id = $2) "
                               "  ORDER BY id DESC LIMIT 1) "
                               "SELECT hd.*, x.* FROM hd LEFT JOIN LATERAL (SELECT *, "
                               "  array_to_string(veto_reasons, chr(31)) AS veto_text "
                               "  FROM assessment_result WHERE run_id = hd.h_id) x ON true "
                               "ORDER BY x.subject_kind, x.rank",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        if (run)
            return bf_req_fail(r, BF_E_NOT_FOUND, "run_id", "no assessment run %lld for %lld",
                               (long long)run, (long long)year);
        return bf_req_fail(r, BF_E_NOT_FOUND, "year", "no assessment for %lld (run it first)",
                           (long long)year);
    }
    const PGresult *hd = res;
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "run_id", bf_db_int(hd, 0, "h_id"));
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_str(pk, "run_at", bf_db_str(hd, 0, "run_at"));
    bf_mp_kv_str(pk, "run_by", bf_db_str(hd, 0, "run_by"));
    bf_mp_key(pk, "weights");
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "indicators", bf_db_int(hd, 0, "w_ind"));
    bf_mp_kv_int(pk, "timeliness", bf_db_int(hd, 0, "w_time"));
    bf_mp_kv_int(pk, "satisfaction", bf_db_int(hd, 0, "w_sat"));
    bf_mp_kv_int(pk, "pass_score_bp", bf_db_int(hd, 0, "pass_bp"));
    static const char *const kinds[] = {"unit", "village"};
    for (int k = 0; k < 2; k++) {
        int first = -1, n = 0;
        for (int i = 0; i < PQntuples(res); i++) {
            const char *kind = bf_db_str(res, i, "subject_kind"); /* NULL: no results */
            if (!kind || strcmp(kind, kinds[k]) != 0) continue;
            if (first < 0) first = i;
            n++;
        }
        bf_mp_key(pk, k ? "villages" : "units");
        msgpack_pack_map(pk, 3);
        bf_mp_key(pk, "ranking");
        msgpack_pack_array(pk, (size_t)n);
        for (int i = 0; i < n; i++) s_pack_result(pk, res, first + i);
        int top = n < 3 ? n : 3;
        bf_mp_key(pk, "top3");
        msgpack_pack_array(pk, (size_t)top);
        for (int i = 0; i < top; i++) msgpack_pack_int64(pk, bf_db_int(res, first + i, "subject_id"));
        bf_mp_key(pk, "bottom3");
        msgpack_pack_array(pk, (size_t)top);
        for (int i = 0; i < top; i++)
            msgpack_pack_int64(pk, bf_db_int(res, first + n - 1 - i, "subject_id"));
    }
    PQclear(res);
    return 0;
}
