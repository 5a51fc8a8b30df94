/* monitor.c: relapse-risk monitoring (防返贫监测, docs/tasks.md "Monitoring").
 *
 * A report about a household names a cause and the figures it rests on; the
 * rule of that cause is checked before anything is written:
 *   income_low         the household's yearly income is below
 *                      tasks.monitor_income_line_fen per person (the figures
 *                      come from the registry unless the report gives a newer
 *                      income_fen);
 *   medical_spending,  spending_fen of at least tasks.monitor_spending_fen;
 *   disaster_spending
 *   job_lost           the note says what was lost (no figure).
 * The first report opens a case and one assistance task (kind monitoring, on
 * the household, owned by its responsible cadre unless an owner is given, due
 * tasks.monitor_days later); reports while the case is open add causes to it.
 * A case closes once, with an outcome, after its task has been verified
 * (closed). Reports are append-only and cases only go from open to closed
 * (triggers in 002_monitor.sql). Events: monitor.flagged, monitor.reported,
 * monitor.closed, all with subject household/<id>.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_causes[] = {"income_low", "medical_spending", "disaster_spending",
                                       "job_lost", NULL};
static const char *const s_outcomes[] = {"risk_removed", "assisted", "relapsed", NULL};

/* A required note: tasks_text_param refuses empty and blank text. */
static int s_note(bf_req_t *r, const char **note)
{
    return tasks_text_param(r, r->params, NULL, "note", true, TASKS_TEXT_MAX, note);
}

/* The figures a cause rests on, checked against its rule. */
typedef struct {
    const char *cause;
    int64_t income, persons, spending; /* -1 = not part of this report */
} s_figures_t;

static int s_check_rule(bf_req_t *r, int64_t hh, s_figures_t *f)
{
    const tasks_t *ts = tasks_of(r);
    int64_t v;
    int has_income = bf_req_int(r, r->params, NULL, "income_fen", false, 0, INT64_MAX, &v);
    if (has_income < 0) return -1;
    int64_t income = has_income == 0 ? v : -1;
    int has_sp = bf_req_int(r, r->params, NULL, "spending_fen", false, 0, INT64_MAX, &v);
    if (has_sp < 0) return -1;
    int64_t spending = has_sp == 0 ? v : -1;
    f->income = f->persons = f->spending = -1;
    if (!strcmp(f->cause, "income_low")) {
        if (spending >= 0)
            return bf_req_fail(r, BF_E_INVALID, "spending_fen",
                               "spending_fen belongs to medical_spending or disaster_spending");
        int64_t reg_income, persons;
        if (tasks_registry_household_figures(r, hh, "household_id", &reg_income, &persons) != 0)
            return -1;
        if (income < 0) income = reg_income;
        if (persons < 1)
            return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                               "household %lld has no members in the registry", (long long)hh);
        if (income >= ts->monitor_income_line_fen * persons)
            return bf_req_fail(r, BF_E_PRECONDITION, "income_fen",
                               "yearly income %lld fen for %lld persons is not below the "
                               "monitoring line of %lld fen per person",
                               (long long)income, (long long)persons,
                               (long long)ts->monitor_income_line_fen);
        f->income = income;
        f->persons = persons;
    } else if (!strcmp(f->cause, "medical_spending") || !strcmp(f->cause, "disaster_spending")) {
        if (spending < 0)
            return bf_req_fail(r, BF_E_INVALID, "spending_fen", "spending_fen is required for %s",
                               f->cause);
        if (spending < ts->monitor_spending_fen)
            return bf_req_fail(r, BF_E_PRECONDITION, "spending_fen",
                               "spending of %lld fen is below the monitoring threshold of %lld "
                               "fen",
                               (long long)spending, (long long)ts->monitor_spending_fen);
        f->spending = spending;
        if (income >= 0) f->income = income;
    } else { /* job_lost */
        if (spending >= 0)
            return bf_req_fail(r, BF_E_INVALID, "spending_fen",
                               "spending_fen belongs to medical_spending or disaster_spending");
        if (income >= 0) f->income = income;
    }
    return 0;
}

static const char *s_opt(bf_req_t *r, int64_t v) { return v < 0 ? NULL : bf_req_itoa(r, v); }

int monitor_report(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    int64_t hh;
    s_figures_t f;
    const char *note;
    if (bf_req_int(r, r->params, NULL, "household_id", true, 1, INT64_MAX, &hh) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "cause", true, s_causes, &f.cause) != 0) return -1;
    if (s_note(r, &note) != 0) return -1;
    tasks_new_task_t t;
    memset(&t, 0, sizeof t);
    int has_owner = tasks_owner_param(r, r->params, NULL, "owner", false, 0, &t.owner, &t.copies);
    if (has_owner < 0) return -1;
    tasks_entity_t h;
    if (tasks_registry_check(r, "household", hh, "household_id", &h) != 0) return -1;
    const char *code = h.region_code[0] ? bf_arena_strndup(r->arena, h.region_code, 12) : NULL;
    if (tasks_scope_write_code(r, code, "household_id") != 0) return -1;
    if (s_check_rule(r, hh, &f) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    /* the open case, if any, locked so two reports cannot both open one */
    const char *hp[] = {bf_req_itoa(r, hh)};
    PGresult *res = bf_db_prep(r->db, "monitor_open_case",
                               "SELECT id, task_id FROM monitor_case WHERE household_id = $1::bigint "
                               "AND state = 'open' FOR UPDATE",
                               1, hp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t case_id = 0, task_id = 0;
    bool opened = false;
    if (PQntuples(res) == 1) {
        case_id = bf_db_int(res, 0, "id");
        task_id = bf_db_int(res, 0, "task_id");
    }
    PQclear(res);
    if (!case_id) {
        if (has_owner == 1) {
            int64_t *ids;
            size_t n;
            if (tasks_registry_responsible(r, hh, "household_id", &ids, &n) != 0) return -1;
            if (n == 0)
                return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                                   "household %lld has no responsible cadre (帮扶责任人); give "
                                   "owner",
                                   (long long)hh);
            t.owner.kind = "cadre";
            t.owner.id = ids[0];
            if (tasks_owner_chain(r, &t.owner, 0, "household_id", &t.copies) != 0) return -1;
        }
        const char *dp[] = {now, bf_req_itoa(r, ts->monitor_days), ts->timezone};
        res = bf_db_prep(r->db, "monitor_due",
                         "SELECT day_end((($1::timestamptz AT TIME ZONE $3)::date "
                         "+ $2::int), $3)::text AS t",
                         3, dp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        t.due = bf_arena_strndup(r->arena, bf_db_str(res, 0, "t"), strlen(bf_db_str(res, 0, "t")));
        PQclear(res);
        t.title = bf_arena_printf(r->arena, "防返贫监测: 户%lld 帮扶措施", (long long)hh);
        t.description = note;
        t.kind = "monitoring";
        t.target.kind = "household";
        t.target.id = hh;
        t.copies.village_id = h.village_id;
        t.copies.region_code = code;
        if (tasks_insert_task(r, &t, false, &task_id) != 0) return -1;
        const char *cp[] = {bf_req_itoa(r, hh), h.village_id ? bf_req_itoa(r, h.village_id) : NULL,
                            code, bf_req_itoa(r, task_id), r->actor, now};
        res = bf_db_prep(r->db, "monitor_case_insert",
                         "INSERT INTO monitor_case (household_id, village_id, region_code, task_id, "
                         " opened_by, opened_at) VALUES ($1::bigint, $2::bigint, $3, $4::bigint, "
                         " $5, $6::timestamptz) RETURNING id",
                         6, cp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        case_id = bf_db_int(res, 0, "id");
        PQclear(res);
        opened = true;
    }
    const char *rp[] = {bf_req_itoa(r, case_id), f.cause,     s_opt(r, f.income),
                        s_opt(r, f.persons),     s_opt(r, f.spending), note,
                        r->actor,                now};
    res = bf_db_prep(r->db, "monitor_report_insert",
                     "INSERT INTO monitor_report (case_id, cause, income_fen, persons, "
                     " spending_fen, note, reported_by, reported_at) VALUES ($1::bigint, $2, "
                     " $3::bigint, $4::int, $5::bigint, $6, $7, $8::timestamptz) RETURNING id",
                     8, rp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t report_id = bf_db_int(res, 0, "id");
    PQclear(res);

    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, opened ? 8 : 5);
    bf_mp_kv_int(pk, "case_id", case_id);
    bf_mp_kv_int(pk, "report_id", report_id);
    bf_mp_kv_int(pk, "household_id", hh);
    bf_mp_kv_str(pk, "cause", f.cause);
    bf_mp_kv_int(pk, "task_id", task_id);
    if (opened) {
        if (h.village_id)
            bf_mp_kv_int(pk, "village_id", h.village_id);
        else
            bf_mp_kv_nil(pk, "village_id");
        if (code)
            bf_mp_kv_str(pk, "region_code", code);
        else
            bf_mp_kv_nil(pk, "region_code");
        bf_mp_kv_str(pk, "due", t.due);
    }
    if (tasks_emit(r, &ev, opened ? "monitor.flagged" : "monitor.reported", "household", hh) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "case_id", case_id);
    bf_mp_kv_int(r->out, "report_id", report_id);
    bf_mp_kv_int(r->out, "task_id", task_id);
    bf_mp_kv_bool(r->out, "opened", opened);
    bf_mp_kv_str(r->out, "state", "open");
    return 0;
}

int monitor_close(bf_req_t *r)
{
    int64_t id;
    const char *outcome, *note;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "outcome", true, s_outcomes, &outcome) != 0) return -1;
    if (s_note(r, &note) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "monitor_close_lock",
                               "SELECT c.household_id, c.region_code, c.state, c.task_id, "
                               " t.status AS task_status FROM monitor_case c "
                               "JOIN task t ON t.id = c.task_id WHERE c.id = $1::bigint "
                               "FOR UPDATE OF c",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no monitoring case with id %lld",
                           (long long)id);
    }
    const char *code = bf_db_null(res, 0, "region_code")
                           ? NULL
                           : bf_arena_strndup(r->arena, bf_db_str(res, 0, "region_code"), 12);
    int64_t hh = bf_db_int(res, 0, "household_id"), task_id = bf_db_int(res, 0, "task_id");
    bool open = !strcmp(bf_db_str(res, 0, "state"), "open");
    const char *tstatus = bf_arena_strndup(r->arena, bf_db_str(res, 0, "task_status"),
                                           strlen(bf_db_str(res, 0, "task_status")));
    PQclear(res);
    if (tasks_scope_read_code(r, code, "id", "monitoring case", id) != 0) return -1;
    if (tasks_scope_write_code(r, code, "id") != 0) return -1;
    if (!open)
        return bf_req_fail(r, BF_E_PRECONDITION, "id", "monitoring case %lld is already closed",
                           (long long)id);
    if (strcmp(tstatus, "closed") != 0)
        return bf_req_fail(r, BF_E_PRECONDITION, "id",
                           "the assistance task %lld of case %lld is %s; it must be verified "
                           "(closed) before the case closes",
                           (long long)task_id, (long long)id, tstatus);
    const char *up[] = {bf_req_itoa(r, id), outcome, note, r->actor, now};
    res = bf_db_prep(r->db, "monitor_close",
                     "UPDATE monitor_case SET state = 'closed', outcome = $2, close_note = $3, "
                     " closed_by = $4, closed_at = $5::timestamptz WHERE id = $1::bigint",
                     5, up, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "case_id", id);
    bf_mp_kv_int(pk, "household_id", hh);
    bf_mp_kv_int(pk, "task_id", task_id);
    bf_mp_kv_str(pk, "outcome", outcome);
    if (tasks_emit(r, &ev, "monitor.closed", "household", hh) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "case_id", id);
    bf_mp_kv_str(r->out, "state", "closed");
    bf_mp_kv_str(r->out, "outcome", outcome);
    return 0;
}

#define CASE_COLS CASE_COLS_AT("$1::timestamptz")
#define CASE_COLS_AT(now)                                                                     \
    "c.id, c.household_id, c.village_id, c.region_code, c.task_id, c.state, c.outcome, "      \
    "c.close_note, c.closed_by, rfc3339(c.closed_at) AS closed_at, c.opened_by, "            \
    "rfc3339(c.opened_at) AS opened_at, t.status AS task_status, rfc3339(t.due_at) AS due, " \
    "(t.status <> 'closed' AND t.due_at < " now ") AS overdue, "                          \
    "ARRAY(SELECT DISTINCT m.cause FROM monitor_report m WHERE m.case_id = c.id "           \
    "      ORDER BY m.cause)::text AS causes "

static void s_pack_case(tasks_map_t *m, const PGresult *res, int i)
{
    tm_col_int(m, "id", res, i, "id");
    tm_col_int(m, "household_id", res, i, "household_id");
    tm_col_int(m, "village_id", res, i, "village_id");
    tm_col_str(m, "region_code", res, i, "region_code");
    tm_col_str(m, "state", res, i, "state");
    tm_col_str(m, "outcome", res, i, "outcome");
    tm_col_int(m, "task_id", res, i, "task_id");
    tm_col_str(m, "task_status", res, i, "task_status");
    tm_col_str(m, "due", res, i, "due");
    tm_col_bool(m, "overdue", res, i, "overdue");
    tm_key(m, "causes");
    /* {a,b}: cause names have no commas or quotes */
    const char *lit = bf_db_str(res, i, "causes");
    size_t n = 0;
    const char *items[8];
    size_t lens[8];
    for (const char *q = lit && *lit == '{' ? lit + 1 : ""; *q && *q != '}' && n < 8;) {
        const char *e = q;
        while (*e && *e != ',' && *e != '}') e++;
        items[n] = q;
        lens[n++] = (size_t)(e - q);
        q = *e == ',' ? e + 1 : e;
    }
    msgpack_pack_array(tm_pk(m), n);
    for (size_t k = 0; k < n; k++) {
        msgpack_pack_str(tm_pk(m), lens[k]);
        msgpack_pack_str_body(tm_pk(m), items[k], lens[k]);
    }
    tm_col_str(m, "opened_by", res, i, "opened_by");
    tm_col_str(m, "opened_at", res, i, "opened_at");
    tm_col_str(m, "closed_by", res, i, "closed_by");
    tm_col_str(m, "closed_at", res, i, "closed_at");
    tm_col_str(m, "close_note", res, i, "close_note");
}

/* monitor.get is one statement: the case, its task's status, the clock
 * (TASKS_NOW_SQL) and its reports as a JSON array in the reply's keys and
 * order, appended as msgpack (bf_json_to_msgpack); the region is checked on
 * the row. $1 system now, $2 id, $3 manual clock. */
int monitor_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    const char *sys, *manual;
    if (tasks_now_params(r, &sys, &manual) != 0) return -1;
    const char *p[] = {sys, bf_req_itoa(r, id), manual};
    PGresult *res = bf_db_prep(
        r->db, "monitor_get_full",
        "SELECT " CASE_COLS_AT(TASKS_NOW_SQL("$1", "$3")) ", "
        " (SELECT json_agg(json_build_object('id', x.id, 'cause', x.cause, "
        "   'income_fen', x.income_fen, 'persons', x.persons, 'spending_fen', x.spending_fen, "
        "   'note', x.note, 'reported_by', x.reported_by, "
        "   'reported_at', rfc3339(x.reported_at)) ORDER BY x.id)::text "
        "  FROM monitor_report x WHERE x.case_id = c.id) AS reports "
        "FROM monitor_case c JOIN task t ON t.id = c.task_id "
        "WHERE c.id = $2::bigint",
        3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no monitoring case with id %lld",
                           (long long)id);
    }
    if (tasks_scope_read_code(r, bf_db_null(res, 0, "region_code")
                                     ? NULL
                                     : bf_db_str(res, 0, "region_code"),
                              "id", "monitoring case", id) != 0) {
        PQclear(res);
        return -1;
    }
    tasks_map_t m;
    tasks_map_begin(&m);
    s_pack_case(&m, res, 0);
    int rc = tm_json_list(r, &m, "reports", res, 0, "reports");
    PQclear(res);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&m.buf);
        return -1;
    }
    tasks_map_end(&m, r->out);
    return 0;
}

int monitor_list(bf_req_t *r)
{
    static const char *const states[] = {"open", "closed", NULL};
    const char *state = NULL, *cause = NULL, *outcome = NULL, *code = NULL;
    int64_t village = 0, hh = 0, after, limit;
    bool overdue = false;
    int has_overdue;
    if (bf_req_enum(r, r->params, NULL, "state", false, states, &state) < 0 ||
        bf_req_enum(r, r->params, NULL, "cause", false, s_causes, &cause) < 0 ||
        bf_req_enum(r, r->params, NULL, "outcome", false, s_outcomes, &outcome) < 0)
        return -1;
    if ((has_overdue = bf_req_bool(r, r->params, NULL, "overdue", false, &overdue)) < 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village) < 0 ||
        bf_req_int(r, r->params, NULL, "household_id", false, 1, INT64_MAX, &hh) < 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "region_code", false, 12, &code) < 0) return -1;
    if (code && bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit division code");
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    char pbuf[13];
    if (code) bf_region_prefix(code, pbuf);
    const char *prefix = code ? pbuf : NULL;
    const char *p[] = {now,
                       state,
                       cause,
                       outcome,
                       has_overdue == 0 ? (overdue ? "true" : "false") : NULL,
                       village ? bf_req_itoa(r, village) : NULL,
                       hh ? bf_req_itoa(r, hh) : NULL,
                       prefix,
                       bf_req_region_prefix(r),
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "monitor_list",
        "SELECT " CASE_COLS "FROM monitor_case c JOIN task t ON t.id = c.task_id "
        "WHERE ($2::text IS NULL OR c.state = $2) "
        " AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM monitor_report m "
        "      WHERE m.case_id = c.id AND m.cause = $3)) "
        " AND ($4::text IS NULL OR c.outcome = $4) "
        " AND ($5::boolean IS NULL OR (t.status <> 'closed' AND t.due_at < $1::timestamptz) = $5) "
        " AND ($6::bigint IS NULL OR c.village_id = $6) "
        " AND ($7::bigint IS NULL OR c.household_id = $7) "
        " AND ($8::text IS NULL OR c.region_code LIKE $8 || '%') "
        " AND ($9::text IS NULL OR c.region_code LIKE $9 || '%') "
        " AND c.id > $10::bigint ORDER BY c.id LIMIT $11::int",
        11, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        tasks_map_t m;
        tasks_map_begin(&m);
        s_pack_case(&m, res, i);
        tasks_map_end(&m, r->out);
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

/* The length of the significant prefix of a 12-digit division code at each
 * level below it: province 2 -> city 4 -> county 6 -> township 9 -> village
 * 12. A case lies at its village's township code, so below a township the
 * rows are villages (by village_id). */
static int s_child_len(const char *code)
{
    char prefix[13];
    bf_region_prefix(code, prefix);
    size_t sig = strlen(prefix);
    return sig <= 2 ? 4 : sig <= 4 ? 6 : sig <= 6 ? 9 : 12;
}

int monitor_summary(bf_req_t *r)
{
    const char *code;
    int64_t year = 0;
    if (bf_req_str(r, r->params, NULL, "region_code", true, 12, &code) != 0) return -1;
    if (bf_division_check(code, strlen(code)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit division code");
    if (bf_req_int(r, r->params, NULL, "year", false, 2000, 2100, &year) < 0) return -1;
    const char *scope = bf_req_region_prefix(r);
    char prefix[13];
    bf_region_prefix(code, prefix);
    /* a region-bound caller may summarise its region or what lies under it */
    if (scope && strncmp(prefix, scope, strlen(scope)) != 0)
        return bf_req_fail(r, BF_E_NOT_FOUND, "region_code",
                           "region %s is outside the caller's region", code);
    const char *now = tasks_now(r);
    if (!now) return -1;
    int child = s_child_len(code);
    const char *p[] = {now, prefix, bf_req_itoa(r, child), year ? bf_req_itoa(r, year) : NULL,
                       tasks_of(r)->timezone};
    /* one row per child region (or village below a township), counted in SQL */
    PGresult *res = bf_db_prep(
        r->db, "monitor_summary",
        "WITH c AS ("
        " SELECT c.*, (t.status <> 'closed' AND t.due_at < $1::timestamptz) AS overdue, "
        "  CASE WHEN $3::int = 12 THEN c.village_id::text "
        "       ELSE rpad(left(c.region_code, $3::int), 12, '0') END AS grp "
        " FROM monitor_case c JOIN task t ON t.id = c.task_id "
        " WHERE c.region_code LIKE $2 || '%' "
        "  AND ($4::int IS NULL OR extract(year FROM c.opened_at AT TIME ZONE $5) = $4::int)), "
        "causes AS (SELECT c.grp, m.cause, count(DISTINCT c.id) AS n FROM c "
        " JOIN monitor_report m ON m.case_id = c.id GROUP BY c.grp, m.cause) "
        "SELECT grp, count(*) AS flagged, count(*) FILTER (WHERE state = 'open') AS open, "
        " count(*) FILTER (WHERE overdue) AS overdue, "
        " count(*) FILTER (WHERE state = 'closed') AS closed, "
        " count(*) FILTER (WHERE outcome = 'risk_removed') AS risk_removed, "
        " count(*) FILTER (WHERE outcome = 'assisted') AS assisted, "
        " count(*) FILTER (WHERE outcome = 'relapsed') AS relapsed, "
        " (SELECT coalesce(string_agg(cs.cause || '=' || cs.n, ',' ORDER BY cs.cause), '') "
        "  FROM causes cs WHERE cs.grp = c.grp) AS causes "
        "FROM c GROUP BY grp ORDER BY grp",
        5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    static const char *const counts[] = {"flagged",      "open",     "overdue", "closed",
                                         "risk_removed", "assisted", "relapsed", NULL};
    int64_t total[7] = {0};
    int n = PQntuples(res);
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_str(r->out, "region_code", code);
    if (year)
        bf_mp_kv_int(r->out, "year", year);
    else
        bf_mp_kv_nil(r->out, "year");
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        tasks_map_t m;
        tasks_map_begin(&m);
        if (child == 12)
            tm_int(&m, "village_id", bf_db_int(res, i, "grp"));
        else
            tm_col_str(&m, "region_code", res, i, "grp");
        for (int k = 0; counts[k]; k++) {
            int64_t v = bf_db_int(res, i, counts[k]);
            total[k] += v;
            tm_int(&m, counts[k], v);
        }
        tm_key(&m, "causes");
        const char *cs = bf_db_str(res, i, "causes");
        uint32_t nc = 0;
        for (const char *q = cs; *q; q++) nc += *q == '=';
        msgpack_pack_map(tm_pk(&m), nc);
        for (const char *q = cs; *q;) {
            const char *eq = strchr(q, '=');
            const char *end = strchr(q, ',');
            if (!end) end = q + strlen(q);
            msgpack_pack_str(tm_pk(&m), (size_t)(eq - q));
            msgpack_pack_str_body(tm_pk(&m), q, (size_t)(eq - q));
            msgpack_pack_int64(tm_pk(&m), strtoll(eq + 1, NULL, 10));
            q = *end ? end + 1 : end;
        }
        tasks_map_end(&m, r->out);
    }
    bf_mp_key(r->out, "total");
    msgpack_pack_map(r->out, 7);
    for (int k = 0; counts[k]; k++) bf_mp_kv_int(r->out, counts[k], total[k]);
    PQclear(res);
    return 0;
}
