/* schedule.c: recurring duties and deadline templates.
 *
 * A schedule is a rule (monthly, quarterly, half-yearly, yearly; a due day and
 * a month within the period) that makes one task per period for its owner, or
 * for each team of a unit: "each work team submits a monthly report with
 * pictures and text by the 25th" (seed 001). The scheduler (scheduler.c)
 * creates occurrences tasks.schedule_horizon_days ahead, never twice for one
 * period. A timeline is the seed 001 county calendar instantiated for a year
 * and a region in one idempotent call.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_rules[] = {"monthly", "quarterly", "half_yearly", "yearly", NULL};
static const char *const s_task_kinds[] = {"duty",     "report",        "visit",
                                           "timeline", "rectification", "help_request",
                                           "plan",     "indicator",     "monitoring",
                                           "other",    NULL};

/* ---------------------------------------------------------------- periods */

int tasks_period_months(const char *rule)
{
    if (!strcmp(rule, "monthly")) return 1;
    if (!strcmp(rule, "quarterly")) return 3;
    if (!strcmp(rule, "half_yearly")) return 6;
    return 12;
}

int tasks_period_index_of_month(const char *rule, int month)
{
    return (month - 1) / tasks_period_months(rule) + 1;
}

void tasks_period_label(const char *rule, int year, int index, char *out, size_t n)
{
    if (!strcmp(rule, "monthly"))
        snprintf(out, n, "%04d-%02d", year, index);
    else if (!strcmp(rule, "quarterly"))
        snprintf(out, n, "%04d-Q%d", year, index);
    else if (!strcmp(rule, "half_yearly"))
        snprintf(out, n, "%04d-H%d", year, index);
    else
        snprintf(out, n, "%04d", year);
}

static int s_days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return d[m - 1];
}

void tasks_period_due_date(const char *rule, int year, int index, int month_in_period, int day,
                           char out[11])
{
    int month = (index - 1) * tasks_period_months(rule) + month_in_period;
    int dim = s_days_in_month(year, month);
    snprintf(out, 11, "%04d-%02d-%02d", year, month, day > dim ? dim : day);
}

void tasks_period_next(const char *rule, int *year, int *index)
{
    int per_year = 12 / tasks_period_months(rule);
    if (++*index > per_year) {
        *index = 1;
        ++*year;
    }
}

/* ---------------------------------------------------------------- schedules */

static const char *s_schedule_cols =
    "id, ref, title, description, task_kind, rule, day, month, owner_kind, owner_id, "
    "each_team_of_unit, target_kind, target_id, target_code, vetoing, active, "
    "rfc3339(starts_at) AS starts_at, rfc3339(next_due_at) AS next_due, "
    "rfc3339_local(next_due_at, $2) AS next_due_local, next_year, next_index, created_by, "
    "rfc3339(created_at) AS created_at";

static void s_pack_schedule(msgpack_packer *pk, const PGresult *res, int i)
{
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_col_int(&m, "id", res, i, "id");
    tm_col_str(&m, "ref", res, i, "ref");
    tm_col_str(&m, "title", res, i, "title");
    tm_col_str(&m, "description", res, i, "description");
    tm_col_str(&m, "kind", res, i, "task_kind");
    tm_col_str(&m, "rule", res, i, "rule");
    tm_col_int(&m, "day", res, i, "day");
    tm_col_int(&m, "month", res, i, "month");
    tm_key(&m, "owner");
    if (bf_db_null(res, i, "owner_kind")) {
        msgpack_pack_nil(tm_pk(&m));
    } else {
        msgpack_pack_map(tm_pk(&m), 2);
        bf_mp_kv_str(tm_pk(&m), "kind", bf_db_str(res, i, "owner_kind"));
        bf_mp_kv_int(tm_pk(&m), "id", bf_db_int(res, i, "owner_id"));
    }
    tm_col_int(&m, "each_team_of_unit", res, i, "each_team_of_unit");
    tm_key(&m, "target");
    if (bf_db_null(res, i, "target_kind")) {
        msgpack_pack_nil(tm_pk(&m));
    } else {
        msgpack_pack_map(tm_pk(&m), 2);
        bf_mp_kv_str(tm_pk(&m), "kind", bf_db_str(res, i, "target_kind"));
        if (bf_db_null(res, i, "target_code"))
            bf_mp_kv_int(tm_pk(&m), "id", bf_db_int(res, i, "target_id"));
        else
            bf_mp_kv_str(tm_pk(&m), "code", bf_db_str(res, i, "target_code"));
    }
    tm_col_bool(&m, "vetoing", res, i, "vetoing");
    tm_col_bool(&m, "active", res, i, "active");
    tm_col_str(&m, "starts_at", res, i, "starts_at");
    char period[16];
    tasks_period_label(bf_db_str(res, i, "rule"), (int)bf_db_int(res, i, "next_year"),
                       (int)bf_db_int(res, i, "next_index"), period, sizeof period);
    tm_str(&m, "next_period", period);
    tm_col_str(&m, "next_due", res, i, "next_due");
    tm_col_str(&m, "next_due_local", res, i, "next_due_local");
    tm_col_str(&m, "created_by", res, i, "created_by");
    tm_col_str(&m, "created_at", res, i, "created_at");
    tasks_map_end(&m, pk);
}

static int s_get(bf_req_t *r, int64_t id)
{
    const char *p[] = {bf_req_itoa(r, id), tasks_of(r)->timezone};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s, t_region_code AS scope_code FROM schedule WHERE id = $1::bigint",
             s_schedule_cols);
    PGresult *res = bf_db_prep(r->db, "schedule_get", sql, 2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no schedule with id %lld", (long long)id);
    }
    /* a region-bound caller sees the schedules whose target lies under it */
    if (tasks_scope_read_code(r, bf_db_null(res, 0, "scope_code") ? NULL
                                                                  : bf_db_str(res, 0, "scope_code"),
                              "id", "schedule", id) != 0) {
        PQclear(res);
        return -1;
    }
    s_pack_schedule(r->out, res, 0);
    PQclear(res);
    return 0;
}

int schedule_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    return s_get(r, id);
}

int schedule_list(bf_req_t *r)
{
    int64_t after, limit;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, after), tasks_of(r)->timezone, bf_req_itoa(r, limit + 1),
                       bf_req_region_prefix(r)};
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM schedule WHERE id > $1::bigint "
             " AND ($4::text IS NULL OR t_region_code LIKE $4 || '%%') ORDER BY id LIMIT $3::int",
             s_schedule_cols);
    PGresult *res = bf_db_prep(r->db, "schedule_list", sql, 4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) s_pack_schedule(r->out, res, i);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

int schedule_create(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    const char *ref = NULL, *title, *description = NULL, *kind = "report", *rule;
    const char *starts_on = NULL;
    int64_t day, month = 0, unit = 0;
    bool vetoing = false;
    tasks_owner_t owner = {NULL, 0};
    tasks_target_t target = {NULL, 0, NULL};
    tasks_copies_t chain, tcopies;
    memset(&chain, 0, sizeof chain);
    memset(&tcopies, 0, sizeof tcopies);
    if (bf_req_str(r, r->params, NULL, "ref", false, TASKS_REF_MAX, &ref) < 0) return -1;
    if (tasks_text_param(r, r->params, NULL, "title", true, TASKS_TITLE_MAX, &title) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "description", false, TASKS_TEXT_MAX, &description) < 0)
        return -1;
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_task_kinds, &kind) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "rule", true, s_rules, &rule) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "day", true, 1, 31, &day) != 0) return -1;
    int per = tasks_period_months(rule);
    if (bf_req_int(r, r->params, NULL, "month", false, 1, per, &month) < 0) return -1;
    if (month == 0) month = per;
    if (bf_req_bool(r, r->params, NULL, "vetoing", false, &vetoing) < 0) return -1;
    if (tasks_date_param(r, r->params, NULL, "starts_on", false, &starts_on) < 0) return -1;
    int has_owner = bf_mp_get(r->params, "owner") &&
                    bf_mp_get(r->params, "owner")->type != MSGPACK_OBJECT_NIL;
    if (bf_req_int(r, r->params, NULL, "each_team_of_unit", false, 1, INT64_MAX, &unit) < 0)
        return -1;
    if (has_owner == (unit > 0))
        return bf_req_fail(r, BF_E_INVALID, "owner",
                           "give exactly one of owner and each_team_of_unit");
    if (has_owner &&
        tasks_owner_param(r, r->params, NULL, "owner", true, 0, &owner, &chain) != 0)
        return -1;
    if (unit > 0 && tasks_registry_check(r, "unit", unit, "each_team_of_unit", NULL) != 0)
        return -1;
    if (tasks_target_param(r, r->params, NULL, "target", false, &target, &tcopies) < 0)
        return -1;
    if (tasks_scope_write_code(r, tcopies.region_code, "target") != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    /* the first period is the one holding starts_on (default: today, locally) */
    const char *sp[] = {now, ts->timezone, starts_on};
    PGresult *res = bf_db_prep(
        r->db, "schedule_start",
        "SELECT d::text AS d, extract(year FROM d)::int AS y, extract(month FROM d)::int AS m, "
        " (d::timestamp AT TIME ZONE $2)::text AS starts_at "
        "FROM (SELECT COALESCE($3::date, ($1::timestamptz AT TIME ZONE $2)::date) AS d) x",
        3, sp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int year = (int)bf_db_int(res, 0, "y");
    int index = tasks_period_index_of_month(rule, (int)bf_db_int(res, 0, "m"));
    const char *starts_at = bf_arena_strndup(r->arena, bf_db_str(res, 0, "starts_at"),
                                             strlen(bf_db_str(res, 0, "starts_at")));
    PQclear(res);
    char due[11];
    tasks_period_due_date(rule, year, index, (int)month, (int)day, due);

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *ip[] = {ref,
                        title,
                        description,
                        kind,
                        rule,
                        bf_req_itoa(r, day),
                        bf_req_itoa(r, month),
                        owner.kind,
                        owner.kind ? bf_req_itoa(r, owner.id) : NULL,
                        unit ? bf_req_itoa(r, unit) : NULL,
                        target.kind,
                        target.id ? bf_req_itoa(r, target.id) : NULL,
                        target.code,
                        vetoing ? "true" : "false",
                        starts_at,
                        bf_req_itoa(r, year),
                        bf_req_itoa(r, index),
                        due,
                        ts->timezone,
                        chain.esc_team_id ? bf_req_itoa(r, chain.esc_team_id) : NULL,
                        chain.esc_leader_id ? bf_req_itoa(r, chain.esc_leader_id) : NULL,
                        chain.esc_unit_id ? bf_req_itoa(r, chain.esc_unit_id) : NULL,
                        tcopies.village_id ? bf_req_itoa(r, tcopies.village_id) : NULL,
                        tcopies.region_code,
                        r->actor,
                        now};
    res = bf_db_prep(
        r->db, "schedule_insert",
        "INSERT INTO schedule (ref, title, description, task_kind, rule, day, month, owner_kind, "
        " owner_id, each_team_of_unit, target_kind, target_id, target_code, vetoing, starts_at, "
        " next_year, next_index, next_due_at, esc_team_id, esc_leader_id, esc_unit_id, "
        " t_village_id, t_region_code, created_by, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6::int, $7::int, $8, $9::bigint, $10::bigint, $11, "
        " $12::bigint, $13, $14::boolean, $15::timestamptz, $16::int, $17::int, "
        " day_end($18::date, $19), $20::bigint, $21::bigint, $22::bigint, $23::bigint, $24, $25, "
        " $26::timestamptz) RETURNING id",
        26, ip, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "ref", "a schedule with ref %s exists", ref);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_int(&m, "id", id);
    tm_str(&m, "title", title);
    tm_str(&m, "rule", rule);
    tm_int(&m, "day", day);
    tm_int(&m, "month", month);
    tm_key(&m, "owner");
    if (owner.kind) {
        msgpack_pack_map(tm_pk(&m), 2);
        bf_mp_kv_str(tm_pk(&m), "kind", owner.kind);
        bf_mp_kv_int(tm_pk(&m), "id", owner.id);
    } else {
        msgpack_pack_nil(tm_pk(&m));
    }
    if (unit) tm_int(&m, "each_team_of_unit", unit);
    char period[16];
    tasks_period_label(rule, year, index, period, sizeof period);
    tm_str(&m, "first_period", period);
    tasks_map_end(&m, pk);
    if (tasks_emit(r, &ev, "schedule.created", "schedule", id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_get(r, id);
}

/* ---------------------------------------------------------------- timelines */

typedef struct {
    const char *step;
    int month, day;
    const char *title;
} s_step_t;

/* Seed 001, the county's 2015 plan: teams in place by 5 Sep; household data to
 * the township by 15 Sep and, signed by the township head, to the county
 * office by 20 Sep; village plans and household plans done and signed by the
 * township secretary, township head and county leader by 25 Sep. */
static const s_step_t s_county_2015[] = {
    {"teams_in_place", 9, 5, "驻村帮扶工作队组建到位并进驻 (work teams in place)"},
    {"household_data_township", 9, 15,
     "贫困户底数和致贫原因汇总报乡镇 (household data to the township)"},
    {"household_data_county", 9, 20,
     "乡镇汇总数据签字后报县扶贫开发领导小组办公室 (township data to the county office)"},
    {"plans_signed", 9, 25,
     "贫困村帮扶规划和贫困户帮扶方案完成并审定签字 (village and household plans signed)"},
    {NULL, 0, 0, NULL},
};

static int s_pack_timeline(bf_req_t *r, int64_t id, bool created)
{
    const char *p[] = {bf_req_itoa(r, id), tasks_of(r)->timezone};
    PGresult *tl = bf_db_prep(r->db, "timeline_get",
                              "SELECT id, template, year, region_code FROM timeline "
                              "WHERE id = $1::bigint",
                              1, p, NULL, NULL);
    if (!tl) return bf_req_db_fail(r);
    PGresult *res = bf_db_prep(r->db, "timeline_tasks",
                               "SELECT id, timeline_step, title, status, owner_kind, owner_id, "
                               " rfc3339(due_at) AS due, rfc3339_local(due_at, $2) AS due_local "
                               "FROM task WHERE timeline_id = $1::bigint ORDER BY due_at, id",
                               2, p, NULL, NULL);
    if (!res) {
        PQclear(tl);
        return bf_req_db_fail(r);
    }
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "template", bf_db_str(tl, 0, "template"));
    bf_mp_kv_int(r->out, "year", bf_db_int(tl, 0, "year"));
    bf_mp_kv_str(r->out, "region_code", bf_db_str(tl, 0, "region_code"));
    bf_mp_kv_bool(r->out, "created", created);
    bf_mp_key(r->out, "tasks");
    int n = PQntuples(res);
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(r->out, 7);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_str(r->out, "step", bf_db_str(res, i, "timeline_step"));
        bf_mp_kv_str(r->out, "title", bf_db_str(res, i, "title"));
        bf_mp_kv_str(r->out, "status", bf_db_str(res, i, "status"));
        bf_mp_key(r->out, "owner");
        msgpack_pack_map(r->out, 2);
        bf_mp_kv_str(r->out, "kind", bf_db_str(res, i, "owner_kind"));
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "owner_id"));
        bf_mp_kv_str(r->out, "due", bf_db_str(res, i, "due"));
        bf_mp_kv_str(r->out, "due_local", bf_db_str(res, i, "due_local"));
    }
    PQclear(tl);
    PQclear(res);
    return 0;
}

static int s_find_timeline(bf_req_t *r, const char *tmpl, int64_t year, const char *code,
                           int64_t *id)
{
    const char *p[] = {tmpl, bf_req_itoa(r, year), code};
    PGresult *res = bf_db_prep(r->db, "timeline_find",
                               "SELECT id FROM timeline WHERE template = $1 AND year = $2::int "
                               " AND region_code = $3",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *id = PQntuples(res) ? bf_db_int(res, 0, "id") : 0;
    PQclear(res);
    return 0;
}

int timeline_instantiate(bf_req_t *r)
{
    static const char *const s_templates[] = {"county_2015", NULL};
    const char *tmpl, *code;
    int64_t year, existing;
    if (bf_req_enum(r, r->params, NULL, "template", true, s_templates, &tmpl) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "region_code", true, 12, &code) != 0) return -1;
    if (bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit division code");
    if (tasks_scope_write_code(r, code, "region_code") != 0) return -1;
    if (s_find_timeline(r, tmpl, year, code, &existing) != 0) return -1;
    if (existing) return s_pack_timeline(r, existing, false);

    const s_step_t *steps = s_county_2015;
    size_t nsteps = 0;
    while (steps[nsteps].step) nsteps++;
    tasks_owner_t owner;
    tasks_copies_t chain;
    memset(&chain, 0, sizeof chain);
    if (tasks_registry_region(r, code, "region_code") != 0) return -1;
    if (tasks_owner_param(r, r->params, NULL, "owner", true, 0, &owner, &chain) != 0) return -1;
    tasks_owner_t *owners = bf_arena_alloc(r->arena, sizeof *owners * nsteps);
    tasks_copies_t *chains = bf_arena_alloc(r->arena, sizeof *chains * nsteps);
    if (!owners || !chains) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    for (size_t i = 0; i < nsteps; i++) {
        owners[i] = owner;
        chains[i] = chain;
    }
    const msgpack_object *om = NULL;
    if (bf_req_map(r, r->params, NULL, "owners", false, &om) < 0) return -1;
    for (uint32_t k = 0; om && k < om->via.map.size; k++) {
        const msgpack_object *key = &om->via.map.ptr[k].key;
        size_t i = 0;
        while (i < nsteps && !bf_mp_str_eq(key, steps[i].step)) i++;
        if (i == nsteps) {
            char name[80];
            snprintf(name, sizeof name, "owners.%.*s",
                     key->type == MSGPACK_OBJECT_STR ? (int)(key->via.str.size > 64 ? 64 : key->via.str.size) : 1,
                     key->type == MSGPACK_OBJECT_STR ? key->via.str.ptr : "?");
            return bf_req_fail(r, BF_E_INVALID, name, "%s: no such step in %s", name, tmpl);
        }
        memset(&chains[i], 0, sizeof chains[i]);
        if (tasks_owner_param(r, om, "owners", steps[i].step, true, 0, &owners[i], &chains[i]) !=
            0)
            return -1;
    }
    const char *tz = tasks_of(r)->timezone;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *ip[] = {tmpl, bf_req_itoa(r, year), code, r->actor};
    PGresult *res = bf_db_prep(r->db, "timeline_insert",
                               "INSERT INTO timeline (template, year, region_code, created_by) "
                               "VALUES ($1, $2::int, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
                               4, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) { /* a concurrent call made it first */
        PQclear(res);
        bf_db_rollback(r->db);
        if (s_find_timeline(r, tmpl, year, code, &existing) != 0) return -1;
        return s_pack_timeline(r, existing, false);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    int64_t *task_ids = bf_arena_alloc(r->arena, sizeof *task_ids * nsteps);
    if (!task_ids) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    for (size_t i = 0; i < nsteps; i++) {
        char date[11];
        snprintf(date, sizeof date, "%04d-%02d-%02d", (int)year, steps[i].month, steps[i].day);
        const char *dp[] = {date, tz};
        res = bf_db_prep(r->db, "tasks_day_end", "SELECT day_end($1::date, $2)::text AS t", 2, dp,
                         NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        const char *due = bf_arena_strndup(r->arena, bf_db_str(res, 0, "t"),
                                           strlen(bf_db_str(res, 0, "t")));
        PQclear(res);
        tasks_new_task_t t;
        memset(&t, 0, sizeof t);
        t.title = steps[i].title;
        t.kind = "timeline";
        t.due = due;
        t.owner = owners[i];
        t.copies = chains[i];
        t.copies.region_code = code;
        t.target.kind = "region";
        t.target.code = code;
        t.timeline_id = id;
        t.timeline_step = steps[i].step;
        if (tasks_insert_task(r, &t, false, &task_ids[i]) != 0) return -1;
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "template", tmpl);
    bf_mp_kv_int(pk, "year", year);
    bf_mp_kv_str(pk, "region_code", code);
    bf_mp_key(pk, "task_ids");
    msgpack_pack_array(pk, nsteps);
    for (size_t i = 0; i < nsteps; i++) msgpack_pack_int64(pk, task_ids[i]);
    if (tasks_emit(r, &ev, "timeline.instantiated", "timeline", id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_timeline(r, id, true);
}
