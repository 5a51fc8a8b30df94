/* scheduler.c: the clock and the scheduler pass.
 *
 * One function, s_tick, is the whole periodic work, as Redis keeps its cron in
 * one place: (1) recurring schedules whose next period is due within
 * tasks.schedule_horizon_days get that period's occurrence(s); (2) tasks due
 * within tasks.due_soon get their one reminder; (3) tasks past due and not
 * closed are marked overdue; (4) overdue tasks walk the escalation ladder, one
 * step each time due + tasks.escalation_steps[k] has passed. With the system
 * clock a thread (own database connection) runs it every tasks.tick_seconds;
 * with the manual clock only scheduler.tick runs it, synchronously, at the
 * time clock.set put in the clock table, so tests never sleep.
 *
 * Exactly once, however many instances tick at the same moment: schedules are
 * taken one at a time with FOR UPDATE SKIP LOCKED and occurrences carry
 * UNIQUE(schedule_id, period, owner); reminders and overdue marks are
 * "UPDATE ... WHERE due_soon_at IS NULL" on rows claimed with SKIP LOCKED; an
 * escalation step is a row with PRIMARY KEY(task_id, step) inserted with
 * ON CONFLICT DO NOTHING, and its event is emitted only when the row was new,
 * in the same transaction.
 */
#include "tasks.h"
#include "bf_login.h"
#include "bf_db.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCHED_ACTOR "system:scheduler"
#define MAX_PERIODS_PER_TICK 120

typedef struct {
    int64_t schedules, created, due_soon, overdue, escalated, errors;
    /* ids named in the result, up to TASKS_TICK_ITEMS each */
    int64_t *created_ids, *due_soon_ids, *overdue_ids, *esc_ids, *esc_steps;
    size_t n_created, n_due_soon, n_overdue, n_esc;
} s_tick_t;

static void s_note(int64_t *arr, size_t *n, int64_t v)
{
    if (arr && *n < TASKS_TICK_ITEMS) arr[(*n)++] = v;
}

/* ---------------------------------------------------------------- schedules */

/* Inserts the occurrence of one period for one owner; 0 (created or already
 * there) or -1. */
static int s_occurrence(bf_req_t *r, const PGresult *s, const tasks_owner_t *owner,
                        const tasks_copies_t *chain, const char *period, const char *due,
                        s_tick_t *out)
{
    tasks_new_task_t t;
    memset(&t, 0, sizeof t);
    t.title = bf_arena_printf(r->arena, "%s (%s)", bf_db_str(s, 0, "title"), period);
    t.description = bf_db_str(s, 0, "description");
    t.kind = bf_db_str(s, 0, "task_kind");
    t.due = due;
    t.owner = *owner;
    t.target.kind = bf_db_str(s, 0, "target_kind");
    t.target.id = bf_db_int(s, 0, "target_id");
    t.target.code = bf_db_str(s, 0, "target_code");
    t.copies = *chain;
    t.copies.village_id = bf_db_int(s, 0, "t_village_id");
    t.copies.region_code = bf_db_str(s, 0, "t_region_code");
    t.vetoing = bf_db_bool(s, 0, "vetoing");
    t.schedule_id = bf_db_int(s, 0, "id");
    t.period = period;
    int64_t id;
    if (tasks_insert_task(r, &t, true, &id) != 0) return -1;
    if (id) {
        out->created++;
        s_note(out->created_ids, &out->n_created, id);
    }
    return 0;
}

/* Works one locked schedule: every period due within the horizon. */
static int s_work_schedule(bf_req_t *r, const PGresult *s, const char *now, s_tick_t *out)
{
    const tasks_t *ts = tasks_of(r);
    const char *rule = bf_db_str(s, 0, "rule");
    int year = (int)bf_db_int(s, 0, "next_year"), index = (int)bf_db_int(s, 0, "next_index");
    int day = (int)bf_db_int(s, 0, "day"), month = (int)bf_db_int(s, 0, "month");
    int64_t sid = bf_db_int(s, 0, "id");
    tasks_owner_t single = {bf_db_str(s, 0, "owner_kind"), bf_db_int(s, 0, "owner_id")};
    tasks_copies_t single_chain = {0};
    single_chain.esc_team_id = bf_db_int(s, 0, "esc_team_id");
    single_chain.esc_leader_id = bf_db_int(s, 0, "esc_leader_id");
    single_chain.esc_unit_id = bf_db_int(s, 0, "esc_unit_id");
    int64_t unit = bf_db_int(s, 0, "each_team_of_unit");
    /* each team of a unit: asked once per pass (the registry decides who) */
    int64_t *teams = NULL;
    tasks_copies_t *chains = NULL;
    size_t nteams = 0;
    if (unit > 0) {
        if (tasks_registry_unit_teams(r, unit, "each_team_of_unit", &teams, &nteams) != 0)
            return -1;
        chains = bf_arena_alloc(r->arena, sizeof *chains * (nteams ? nteams : 1));
        if (!chains) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
        for (size_t i = 0; i < nteams; i++) {
            tasks_owner_t o = {"team", teams[i]};
            if (tasks_owner_chain(r, &o, 0, "each_team_of_unit", &chains[i]) != 0) return -1;
        }
    }
    const char *starts_at = bf_db_str(s, 0, "starts_at");
    for (int k = 0; k < MAX_PERIODS_PER_TICK; k++) {
        char date[11], period[16];
        tasks_period_due_date(rule, year, index, month, day, date);
        tasks_period_label(rule, year, index, period, sizeof period);
        const char *p[] = {date, ts->timezone, now, bf_req_itoa(r, ts->horizon_days), starts_at};
        PGresult *res = bf_db_prep(
            r->db, "sched_period",
            "SELECT day_end($1::date, $2)::text AS due, "
            " day_end($1::date, $2) <= $3::timestamptz + make_interval(days => $4::int) AS within,"
            " day_end($1::date, $2) >= $5::timestamptz AS started",
            5, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        bool within = bf_db_bool(res, 0, "within"), started = bf_db_bool(res, 0, "started");
        const char *due = bf_arena_strndup(r->arena, bf_db_str(res, 0, "due"),
                                           strlen(bf_db_str(res, 0, "due")));
        PQclear(res);
        if (!within) break;
        if (started) {
            if (unit > 0) {
                for (size_t i = 0; i < nteams; i++) {
                    tasks_owner_t o = {"team", teams[i]};
                    if (s_occurrence(r, s, &o, &chains[i], period, due, out) != 0) return -1;
                }
            } else if (s_occurrence(r, s, &single, &single_chain, period, due, out) != 0) {
                return -1;
            }
        }
        tasks_period_next(rule, &year, &index);
    }
    char date[11];
    tasks_period_due_date(rule, year, index, month, day, date);
    const char *up[] = {bf_req_itoa(r, sid), bf_req_itoa(r, year), bf_req_itoa(r, index), date,
                        ts->timezone};
    PGresult *res = bf_db_prep(r->db, "sched_advance",
                               "UPDATE schedule SET next_year = $2::int, next_index = $3::int, "
                               " next_due_at = day_end($4::date, $5) WHERE id = $1::bigint",
                               5, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    out->schedules++;
    return 0;
}

static int s_schedules(bf_req_t *r, const char *now, s_tick_t *out)
{
    const tasks_t *ts = tasks_of(r);
    int64_t last = 0;
    for (;;) {
        if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        const char *p[] = {now, bf_req_itoa(r, ts->horizon_days), bf_req_itoa(r, last)};
        PGresult *s = bf_db_prep(
            r->db, "sched_claim",
            "SELECT id, rule, day, month, owner_kind, owner_id, each_team_of_unit, target_kind, "
            " target_id, target_code, t_village_id, t_region_code, esc_team_id, esc_leader_id, "
            " esc_unit_id, title, description, task_kind, vetoing, next_year, next_index, "
            " starts_at::text AS starts_at "
            "FROM schedule WHERE active AND id > $3::bigint "
            " AND next_due_at <= $1::timestamptz + make_interval(days => $2::int) "
            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            3, p, NULL, NULL);
        if (!s) return bf_req_db_fail(r);
        if (PQntuples(s) == 0) {
            PQclear(s);
            bf_db_rollback(r->db);
            return 0;
        }
        last = bf_db_int(s, 0, "id");
        int rc = s_work_schedule(r, s, now, out);
        PQclear(s);
        if (rc != 0) {
            bf_db_rollback(r->db);
            if (r->err.code && (!strcmp(r->err.code, BF_E_UNAVAILABLE) ||
                                !strcmp(r->err.code, BF_E_NOT_FOUND)) &&
                !bf_db_is_down(r->db)) {
                /* the registry could not say who: try this schedule next pass */
                bf_log(BF_WARN, "schedule %lld skipped this pass: %s", (long long)last,
                       r->err.message);
                memset(&r->err, 0, sizeof r->err);
                out->errors++;
                continue;
            }
            return -1;
        }
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    }
}

/* ---------------------------------------------------------------- reminders */

/* Emits one scheduler event for row i of res with the owner as recipient. */
static int s_emit_to_owner(bf_req_t *r, const PGresult *res, int i, const char *what,
                           const char *extra_key, const char *extra_val)
{
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    tasks_pack_task_event(pk, res, i, extra_key ? 2 : 1);
    bf_mp_key(pk, "recipient");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "owner_kind"));
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "owner_id"));
    if (extra_key) bf_mp_kv_str(pk, extra_key, extra_val);
    return tasks_emit(r, &ev, what, "task", bf_db_int(res, i, "id"));
}

/* Claims up to a batch of tasks with sql (which marks them) and emits what
 * for each; repeats while full batches come back. */
static int s_mark_batch(bf_req_t *r, const char *stmt, const char *sql, const char *now,
                        const char *what, int64_t *count, int64_t *ids, size_t *nids)
{
    const tasks_t *ts = tasks_of(r);
    for (;;) {
        if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        const char *p[] = {now, ts->timezone, bf_req_itoa(r, ts->batch),
                           bf_req_itoa(r, ts->due_soon_s)};
        PGresult *res = bf_db_prep(r->db, stmt, sql, 4, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            const char *lead = NULL;
            if (!strcmp(what, "task.due_soon")) lead = bf_cfg_str(ts->cfg, "tasks.due_soon");
            if (s_emit_to_owner(r, res, i, what, lead ? "lead" : NULL, lead) != 0) {
                PQclear(res);
                return -1;
            }
            (*count)++;
            s_note(ids, nids, bf_db_int(res, i, "id"));
        }
        PQclear(res);
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
        if (n < ts->batch) return 0;
    }
}

static int s_due_soon(bf_req_t *r, const char *now, s_tick_t *out)
{
    char sql[3072];
    snprintf(sql, sizeof sql,
             "WITH c AS (SELECT id FROM task WHERE status <> 'closed' AND due_soon_at IS NULL "
             "  AND due_at > $1::timestamptz "
             "  AND due_at <= $1::timestamptz + make_interval(secs => $4::bigint) "
             "  ORDER BY due_at LIMIT $3::int FOR UPDATE SKIP LOCKED) "
             "UPDATE task t SET due_soon_at = $1::timestamptz FROM c "
             "WHERE t.id = c.id AND t.due_soon_at IS NULL RETURNING %s",
             TASKS_TASK_COLS);
    return s_mark_batch(r, "sched_due_soon", sql, now, "task.due_soon", &out->due_soon,
                        out->due_soon_ids, &out->n_due_soon);
}

static int s_overdue(bf_req_t *r, const char *now, s_tick_t *out)
{
    char sql[3072];
    /* $4 is unused here but keeps the parameter list of s_mark_batch */
    snprintf(sql, sizeof sql,
             "WITH c AS (SELECT id FROM task WHERE status <> 'closed' AND overdue_at IS NULL "
             "  AND due_at < $1::timestamptz AND $4::bigint IS NOT NULL "
             "  ORDER BY due_at LIMIT $3::int FOR UPDATE SKIP LOCKED) "
             "UPDATE task t SET overdue_at = $1::timestamptz FROM c "
             "WHERE t.id = c.id AND t.overdue_at IS NULL RETURNING %s",
             TASKS_TASK_COLS);
    return s_mark_batch(r, "sched_overdue", sql, now, "task.overdue", &out->overdue,
                        out->overdue_ids, &out->n_overdue);
}

/* ---------------------------------------------------------------- escalation */

static const char *const s_levels[] = {"owner", "team_leader", "helper_unit", "org_department",
                                       NULL};

/* The recipient of a level for task row i; a level that cannot be resolved
 * (no team leader known, the leader is the owner, ...) passes to the next one
 * up; org_department always resolves. *resolved names the level used. */
static void s_recipient(const tasks_t *ts, const PGresult *res, int i, const char *level,
                        const char **kind, int64_t *id, const char **resolved)
{
    const char *okind = bf_db_str(res, i, "owner_kind");
    int64_t oid = bf_db_int(res, i, "owner_id");
    int start = 0;
    while (s_levels[start] && strcmp(s_levels[start], level) != 0) start++;
    for (int l = start; s_levels[l]; l++) {
        *resolved = s_levels[l];
        if (l == 0) {
            *kind = okind;
            *id = oid;
            return;
        }
        if (l == 1) {
            int64_t leader = bf_db_int(res, i, "esc_leader_id");
            if (leader > 0 && !(!strcmp(okind, "cadre") && oid == leader)) {
                *kind = "cadre";
                *id = leader;
                return;
            }
            continue;
        }
        if (l == 2) {
            int64_t unit = bf_db_int(res, i, "esc_unit_id");
            if (unit > 0 && !(!strcmp(okind, "unit") && oid == unit)) {
                *kind = "unit";
                *id = unit;
                return;
            }
            continue;
        }
        break;
    }
    *resolved = "org_department";
    *kind = "org_department";
    *id = ts->org_department_id;
}

static int s_escalate(bf_req_t *r, const char *now, s_tick_t *out)
{
    const tasks_t *ts = tasks_of(r);
    if (ts->nsteps == 0) return 0;
    char sql[3072];
    snprintf(sql, sizeof sql,
             "SELECT %s, t.esc_next_step, "
             " (extract(epoch FROM ($1::timestamptz - t.due_at)) * 1000000)::bigint AS late_us "
             "FROM task t WHERE t.status <> 'closed' AND t.esc_next_at IS NOT NULL "
             " AND t.esc_next_at < $1::timestamptz "
             "ORDER BY t.esc_next_at LIMIT $3::int FOR UPDATE SKIP LOCKED",
             TASKS_TASK_COLS);
    for (;;) {
        if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        const char *p[] = {now, ts->timezone, bf_req_itoa(r, ts->batch)};
        PGresult *res = bf_db_prep(r->db, "sched_esc_claim", sql, 3, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            int64_t id = bf_db_int(res, i, "id");
            int64_t late_us = bf_db_int(res, i, "late_us");
            int step = (int)bf_db_int(res, i, "esc_next_step");
            for (; step < ts->nsteps && late_us > ts->step_delay_s[step] * 1000000; step++) {
                const char *kind, *resolved;
                int64_t rid;
                s_recipient(ts, res, i, ts->step_level[step], &kind, &rid, &resolved);
                const char *ep[] = {bf_req_itoa(r, id), bf_req_itoa(r, step), ts->step_level[step],
                                    kind, bf_req_itoa(r, rid), now};
                PGresult *ins = bf_db_prep(
                    r->db, "sched_esc_insert",
                    "INSERT INTO task_escalation (task_id, step, level, recipient_kind, "
                    " recipient_id, at) VALUES ($1::bigint, $2::int, $3, $4, $5::bigint, "
                    " $6::timestamptz) ON CONFLICT DO NOTHING RETURNING step",
                    6, ep, NULL, NULL);
                if (!ins) {
                    PQclear(res);
                    return bf_req_db_fail(r);
                }
                int inserted = PQntuples(ins);
                PQclear(ins);
                if (!inserted) continue; /* another instance did this step */
                bf_event_t ev;
                msgpack_packer *pk = bf_event_begin(&ev);
                tasks_pack_task_event(pk, res, i, 6);
                bf_mp_kv_int(pk, "step", step);
                bf_mp_kv_str(pk, "level", ts->step_level[step]);
                bf_mp_kv_str(pk, "resolved_level", resolved);
                bf_mp_kv_int(pk, "delay_s", ts->step_delay_s[step]);
                bf_mp_key(pk, "recipient");
                msgpack_pack_map(pk, 2);
                bf_mp_kv_str(pk, "kind", kind);
                bf_mp_kv_int(pk, "id", rid);
                bf_mp_kv_int(pk, "steps_total", ts->nsteps);
                if (tasks_emit(r, &ev, "task.escalated", "task", id) != 0) {
                    PQclear(res);
                    return -1;
                }
                out->escalated++;
                if (out->esc_ids && out->n_esc < TASKS_TICK_ITEMS) {
                    out->esc_ids[out->n_esc] = id;
                    out->esc_steps[out->n_esc++] = step;
                }
            }
            const char *up[] = {bf_req_itoa(r, id), bf_req_itoa(r, step),
                                step < ts->nsteps ? bf_req_itoa(r, ts->step_delay_s[step]) : NULL};
            PGresult *u = bf_db_prep(r->db, "sched_esc_advance",
                                     "UPDATE task SET esc_next_step = $2::int, "
                                     " esc_next_at = due_at + make_interval(secs => $3::bigint) "
                                     "WHERE id = $1::bigint",
                                     3, up, NULL, NULL);
            if (!u) {
                PQclear(res);
                return bf_req_db_fail(r);
            }
            PQclear(u);
        }
        PQclear(res);
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
        if (n < ts->batch) return 0;
    }
}

/* ---------------------------------------------------------------- the pass */

static int s_tick(bf_req_t *r, const char *now, s_tick_t *out)
{
    if (s_schedules(r, now, out) != 0) return -1;
    if (s_due_soon(r, now, out) != 0) return -1;
    if (s_overdue(r, now, out) != 0) return -1;
    return s_escalate(r, now, out);
}

static void s_pack_ids(msgpack_packer *pk, const char *key, const int64_t *ids, size_t n)
{
    bf_mp_key(pk, key);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) msgpack_pack_int64(pk, ids[i]);
}

int scheduler_tick(bf_req_t *r)
{
    s_tick_t out;
    memset(&out, 0, sizeof out);
    size_t sz = sizeof(int64_t) * TASKS_TICK_ITEMS;
    out.created_ids = bf_arena_alloc(r->arena, sz);
    out.due_soon_ids = bf_arena_alloc(r->arena, sz);
    out.overdue_ids = bf_arena_alloc(r->arena, sz);
    out.esc_ids = bf_arena_alloc(r->arena, sz);
    out.esc_steps = bf_arena_alloc(r->arena, sz);
    if (!out.created_ids || !out.due_soon_ids || !out.overdue_ids || !out.esc_ids ||
        !out.esc_steps)
        return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    const char *now = tasks_now(r);
    if (!now) return -1;
    /* the work is the scheduler's, whoever asked for the pass */
    const char *caller = r->actor;
    r->actor = SCHED_ACTOR;
    int rc = s_tick(r, now, &out);
    r->actor = caller;
    if (rc != 0) return -1;
    const char *p[] = {now, tasks_of(r)->timezone};
    PGresult *res = bf_db_prep(r->db, "sched_now_fmt",
                               "SELECT rfc3339($1::timestamptz) AS now, "
                               " rfc3339_local($1::timestamptz, $2) AS now_local",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 9);
    bf_mp_kv_str(pk, "now", bf_db_str(res, 0, "now"));
    bf_mp_kv_str(pk, "now_local", bf_db_str(res, 0, "now_local"));
    PQclear(res);
    bf_mp_kv_int(pk, "schedules", out.schedules);
    bf_mp_kv_int(pk, "created", out.created);
    bf_mp_kv_int(pk, "due_soon", out.due_soon);
    bf_mp_kv_int(pk, "overdue", out.overdue);
    bf_mp_kv_int(pk, "escalated", out.escalated);
    bf_mp_kv_int(pk, "errors", out.errors);
    bf_mp_key(pk, "items");
    msgpack_pack_map(pk, 4);
    s_pack_ids(pk, "created", out.created_ids, out.n_created);
    s_pack_ids(pk, "due_soon", out.due_soon_ids, out.n_due_soon);
    s_pack_ids(pk, "overdue", out.overdue_ids, out.n_overdue);
    bf_mp_key(pk, "escalated");
    msgpack_pack_array(pk, out.n_esc);
    for (size_t i = 0; i < out.n_esc; i++) {
        msgpack_pack_map(pk, 2);
        bf_mp_kv_int(pk, "task_id", out.esc_ids[i]);
        bf_mp_kv_int(pk, "step", out.esc_steps[i]);
    }
    return 0;
}

/* ---------------------------------------------------------------- clock */

/* One statement: the clock (TASKS_NOW_SQL) formatted in UTC and the zone. */
static int s_pack_clock(bf_req_t *r)
{
    const char *sys, *manual;
    if (tasks_now_params(r, &sys, &manual) != 0) return -1;
    const tasks_t *ts = tasks_of(r);
    const char *p[] = {sys, ts->timezone, manual};
    PGresult *res = bf_db_prep(r->db, "clock_fmt1",
                               "SELECT rfc3339(n.at) AS now, rfc3339_local(n.at, $2) AS now_local, "
                               " (SELECT set_by FROM clock WHERE id = 1) AS set_by "
                               "FROM (SELECT " TASKS_NOW_SQL("$1", "$3") " AS at) n",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_str(r->out, "now", bf_db_str(res, 0, "now"));
    bf_mp_kv_str(r->out, "now_local", bf_db_str(res, 0, "now_local"));
    bf_mp_kv_str(r->out, "timezone", ts->timezone);
    bf_mp_kv_str(r->out, "mode", ts->manual_clock ? "manual" : "system");
    bf_mp_kv_str(r->out, "set_by", ts->manual_clock ? bf_db_str(res, 0, "set_by") : NULL);
    PQclear(res);
    return 0;
}

int clock_get(bf_req_t *r) { return s_pack_clock(r); }

int clock_set(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    if (!ts->manual_clock)
        return bf_req_fail(r, BF_E_PERMISSION, NULL,
                           "clock.set works only when tasks.clock = manual (tests); this service "
                           "follows the system clock");
    const char *s, *now;
    if (bf_req_str(r, r->params, NULL, "now", true, 40, &s) != 0) return -1;
    if (strlen(s) == 10)
        return bf_req_fail(r, BF_E_INVALID, "now", "now must be an RFC 3339 time with zone");
    if (tasks_due_param(r, r->params, NULL, "now", true, &now) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {now, r->actor};
    PGresult *res = bf_db_prep(r->db, "clock_set",
                               "UPDATE clock SET now_at = $1::timestamptz, set_by = $2, "
                               " set_at = now() WHERE id = 1 RETURNING rfc3339(now_at) AS now",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "now", bf_db_str(res, 0, "now"));
    PQclear(res);
    if (tasks_emit(r, &ev, "clock.set", "clock", 1) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_clock(r);
}

/* ---------------------------------------------------------------- thread */

static void *s_thread(void *arg)
{
    tasks_t *ts = arg;
    bf_req_t r;
    memset(&r, 0, sizeof r);
    r.cfg = ts->cfg;
    r.svc = ts;
    r.worker = -1;
    r.method = "scheduler";
    r.actor = SCHED_ACTOR;
    r.arena = bf_arena_new();
    r.db = bf_login_db(ts->cfg, TASKS_SERVICE, TASKS_SERVICE);
    msgpack_sbuffer scratch;
    msgpack_sbuffer_init(&scratch);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &scratch, msgpack_sbuffer_write);
    r.out = &pk;
    if (!r.arena || !r.db) {
        bf_log(BF_ERROR, "scheduler: out of memory");
        goto done;
    }
    bf_log(BF_INFO, "scheduler: ticking every %d s", ts->tick_seconds);
    while (!ts->sched_stop && !bf_service_stopping) {
        s_tick_t out;
        memset(&out, 0, sizeof out);
        memset(&r.err, 0, sizeof r.err);
        const char *now = tasks_now(&r);
        if (now && s_tick(&r, now, &out) == 0) {
            if (out.created || out.due_soon || out.overdue || out.escalated)
                bf_log(BF_INFO,
                       "scheduler: %lld created, %lld due soon, %lld overdue, %lld escalated",
                       (long long)out.created, (long long)out.due_soon, (long long)out.overdue,
                       (long long)out.escalated);
        } else {
            bf_db_rollback(r.db);
            bf_log(BF_WARN, "scheduler pass failed: %s", r.err.message);
        }
        bf_arena_reset(r.arena);
        msgpack_sbuffer_clear(&scratch);
        /* sleep in short slices so SIGTERM is noticed within 200 ms */
        for (int i = 0; i < ts->tick_seconds * 5 && !ts->sched_stop && !bf_service_stopping;
             i++) {
            struct timespec sl = {0, 200000000L};
            nanosleep(&sl, NULL);
        }
    }
done:
    msgpack_sbuffer_destroy(&scratch);
    bf_arena_destroy(&r.arena);
    bf_db_destroy(&r.db);
    tasks_registry_thread_done();
    return NULL;
}

int tasks_scheduler_start(tasks_t *t)
{
    t->sched_stop = 0;
    if (pthread_create(&t->sched_thread, NULL, s_thread, t) != 0) {
        bf_log(BF_ERROR, "scheduler: cannot start its thread");
        return -1;
    }
    t->sched_started = true;
    return 0;
}

void tasks_scheduler_stop(tasks_t *t)
{
    if (!t->sched_started) return;
    t->sched_stop = 1;
    pthread_join(t->sched_thread, NULL);
    t->sched_started = false;
}
