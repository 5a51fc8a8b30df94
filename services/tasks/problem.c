/* problem.c: rectification ledgers (问题清单、任务清单、责任清单) and help requests.
 *
 * A problem sits on one ledger: rectification (found by an inspection, 明查暗访,
 * or reported directly) or one of the three village ledgers of seed 004:
 * difficulty (困难群众), livelihood (民生诉求), stability (社会稳定). It has the
 * tasks that fix it (each with an owner and a due time) and the people
 * responsible (cadre ids). It is closed (销号) when the last of its tasks is
 * verified, never by hand. A household's help request (seed 002, 求助直通车)
 * becomes a livelihood problem with one task for the household's responsible
 * cadre, due within tasks.help_request_due_hours.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_ledgers[] = {"rectification", "difficulty", "livelihood", "stability",
                                        NULL};
static const char *const s_inspection_kinds[] = {"inspection", "unannounced", "supervision",
                                                 "self_check", NULL};
static const char *const s_channels[] = {"wechat", "phone", "card", "visit", "other", NULL};

#define MAX_RESPONSIBLE 50
#define MAX_PROBLEM_TASKS 50

typedef struct {
    const char *ref, *title, *description, *ledger, *due, *region_code, *channel, *source;
    int64_t village_id, household_id, unit_id;
    int64_t *responsible;
    size_t nresp;
    tasks_new_task_t *tasks;
    size_t ntasks;
} s_problem_t;

/* The end of the day `days` days after the clock's today, as timestamptz text. */
static const char *s_default_due(bf_req_t *r, const char *now, int days)
{
    const char *p[] = {now, tasks_of(r)->timezone, bf_req_itoa(r, days)};
    PGresult *res = bf_db_prep(r->db, "problem_default_due",
                               "SELECT day_end(($1::timestamptz AT TIME ZONE $2)::date + $3::int, "
                               " $2)::text AS t",
                               3, p, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return NULL;
    }
    const char *v = bf_arena_strndup(r->arena, bf_db_str(res, 0, "t"),
                                     strlen(bf_db_str(res, 0, "t")));
    PQclear(res);
    return v;
}

/* Reads one problem from map m (prefix names it in errors), checks every id
 * against the registry and prepares its tasks. */
static int s_parse(bf_req_t *r, const msgpack_object *m, const char *prefix, const char *now,
                   const char *task_kind, s_problem_t *pb)
{
    if (tasks_text_param(r, m, prefix, "title", true, TASKS_TITLE_MAX, &pb->title) != 0)
        return -1;
    if (bf_req_str(r, m, prefix, "description", false, TASKS_TEXT_MAX, &pb->description) < 0)
        return -1;
    if (prefix && bf_req_str(r, m, prefix, "ref", false, TASKS_REF_MAX, &pb->ref) < 0) return -1;
    pb->ledger = "rectification";
    if (bf_req_enum(r, m, prefix, "ledger", false, s_ledgers, &pb->ledger) < 0) return -1;
    if (bf_req_int(r, m, prefix, "village_id", false, 1, INT64_MAX, &pb->village_id) < 0 ||
        bf_req_int(r, m, prefix, "household_id", false, 1, INT64_MAX, &pb->household_id) < 0 ||
        bf_req_int(r, m, prefix, "unit_id", false, 1, INT64_MAX, &pb->unit_id) < 0)
        return -1;
    if (tasks_due_param(r, m, prefix, "due", false, &pb->due) < 0) return -1;
    const msgpack_object_array *resp = NULL, *tlist = NULL;
    const char *rf = bf_req_field(r, prefix, "responsible");
    if (bf_req_list(r, m, prefix, "responsible", false, MAX_RESPONSIBLE, &resp) < 0) return -1;
    if (resp && tasks_id_list(r, resp, rf, &pb->responsible, &pb->nresp) != 0) return -1;
    if (bf_req_list(r, m, prefix, "tasks", false, MAX_PROBLEM_TASKS, &tlist) < 0) return -1;
    if (!pb->due && !(pb->due = s_default_due(r, now, tasks_of(r)->problem_due_days))) return -1;

    /* registry: where, whose, who answers */
    tasks_copies_t where;
    memset(&where, 0, sizeof where);
    if (pb->household_id) {
        tasks_entity_t h;
        const char *f = bf_req_field(r, prefix, "household_id");
        if (tasks_registry_check(r, "household", pb->household_id, f, &h) != 0) return -1;
        if (pb->village_id && h.village_id && h.village_id != pb->village_id)
            return bf_req_fail(r, BF_E_INVALID, f, "household %lld is in village %lld, not %lld",
                               (long long)pb->household_id, (long long)h.village_id,
                               (long long)pb->village_id);
        if (h.village_id) pb->village_id = h.village_id;
        if (h.region_code[0]) pb->region_code = bf_arena_strndup(r->arena, h.region_code, 12);
    }
    if (pb->village_id && !pb->region_code) {
        tasks_entity_t v;
        const char *f = bf_req_field(r, prefix, "village_id");
        if (tasks_registry_check(r, "village", pb->village_id, f, &v) != 0) return -1;
        if (v.region_code[0]) pb->region_code = bf_arena_strndup(r->arena, v.region_code, 12);
    }
    if (pb->unit_id &&
        tasks_registry_check(r, "unit", pb->unit_id, bf_req_field(r, prefix, "unit_id"), NULL) !=
            0)
        return -1;
    for (size_t i = 0; i < pb->nresp; i++) {
        const char *f = bf_arena_printf(r->arena, "%s[%zu]", rf, i);
        if (tasks_registry_check(r, "cadre", pb->responsible[i], f, NULL) != 0) return -1;
    }
    /* a caller bound to a region opens problems only under it */
    if (tasks_scope_write_code(r, pb->region_code,
                               bf_req_field(r, prefix, pb->household_id ? "household_id"
                                                                        : "village_id")) != 0)
        return -1;
    where.village_id = pb->village_id;
    where.region_code = pb->region_code;
    tasks_target_t target = {NULL, 0, NULL};
    if (pb->household_id) {
        target.kind = "household";
        target.id = pb->household_id;
    } else if (pb->village_id) {
        target.kind = "village";
        target.id = pb->village_id;
    }
    size_t nt = tlist && tlist->size ? tlist->size : 1;
    pb->tasks = bf_arena_alloc(r->arena, sizeof *pb->tasks * nt);
    if (!pb->tasks) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    const char *default_title = bf_arena_printf(r->arena, "整改: %s", pb->title);
    if (!tlist || tlist->size == 0) {
        tasks_new_task_t *t = &pb->tasks[0];
        memset(t, 0, sizeof *t);
        if (pb->nresp) {
            t->owner.kind = "cadre";
            t->owner.id = pb->responsible[0];
        } else if (pb->unit_id) {
            t->owner.kind = "unit";
            t->owner.id = pb->unit_id;
        } else {
            return bf_req_fail(r, BF_E_INVALID, rf,
                               "a problem needs a responsible person, a responsible unit or "
                               "tasks with owners");
        }
        if (tasks_owner_chain(r, &t->owner, 0, rf, &t->copies) != 0) return -1;
        t->title = default_title;
        t->due = pb->due;
    } else {
        static const char *const keys[] = {"title", "owner", "due", "team_id", NULL};
        const char *tf = bf_req_field(r, prefix, "tasks");
        for (uint32_t i = 0; i < tlist->size; i++) {
            const msgpack_object *tm = &tlist->ptr[i];
            const char *f = bf_arena_printf(r->arena, "%s[%u]", tf, i);
            tasks_new_task_t *t = &pb->tasks[i];
            memset(t, 0, sizeof *t);
            if (tm->type != MSGPACK_OBJECT_MAP)
                return bf_req_fail(r, BF_E_INVALID, f, "%s must be a map", f);
            if (tasks_check_keys(r, tm, f, keys) != 0) return -1;
            t->title = default_title;
            if (tasks_text_param(r, tm, f, "title", false, TASKS_TITLE_MAX, &t->title) < 0)
                return -1;
            int64_t team_id = 0;
            if (bf_req_int(r, tm, f, "team_id", false, 1, INT64_MAX, &team_id) < 0) return -1;
            if (tasks_owner_param(r, tm, f, "owner", true, team_id, &t->owner, &t->copies) != 0)
                return -1;
            t->due = pb->due;
            if (tasks_due_param(r, tm, f, "due", false, &t->due) < 0) return -1;
        }
    }
    pb->ntasks = nt;
    for (size_t i = 0; i < nt; i++) {
        tasks_new_task_t *t = &pb->tasks[i];
        t->kind = task_kind;
        t->target = target;
        t->copies.village_id = where.village_id;
        t->copies.region_code = where.region_code;
    }
    return 0;
}

/* Inserts a parsed problem with its responsible people and tasks in the open
 * transaction, emitting problem.opened and task.created. */
static int s_insert(bf_req_t *r, s_problem_t *pb, int64_t inspection_id, const char *now,
                    int64_t *pid, int64_t *task_ids)
{
    const char *tz = tasks_of(r)->timezone;
    const char *p[] = {pb->ref,
                       inspection_id ? bf_req_itoa(r, inspection_id) : NULL,
                       pb->ledger,
                       pb->source ? pb->source : (inspection_id ? "inspection" : "direct"),
                       pb->title,
                       pb->description,
                       pb->village_id ? bf_req_itoa(r, pb->village_id) : NULL,
                       pb->household_id ? bf_req_itoa(r, pb->household_id) : NULL,
                       pb->unit_id ? bf_req_itoa(r, pb->unit_id) : NULL,
                       pb->region_code,
                       pb->channel,
                       pb->due,
                       r->actor,
                       now,
                       tz};
    PGresult *res = bf_db_prep(
        r->db, "problem_insert",
        "INSERT INTO problem (ref, inspection_id, ledger, source, title, description, "
        " village_id, household_id, unit_id, region_code, channel, due_at, created_by, "
        " created_at) VALUES ($1, $2::bigint, $3, $4, $5, $6, $7::bigint, $8::bigint, "
        " $9::bigint, $10, $11, $12::timestamptz, $13, $14::timestamptz) "
        "RETURNING id, rfc3339(due_at) AS due, rfc3339_local(due_at, $15) AS due_local",
        15, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505") && pb->ref) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "ref", "a problem with ref %s exists", pb->ref);
        }
        return bf_req_db_fail(r);
    }
    *pid = bf_db_int(res, 0, "id");
    char due[40], due_local[40];
    snprintf(due, sizeof due, "%s", bf_db_str(res, 0, "due"));
    snprintf(due_local, sizeof due_local, "%s", bf_db_str(res, 0, "due_local"));
    PQclear(res);
    for (size_t i = 0; i < pb->nresp; i++) {
        const char *rp[] = {bf_req_itoa(r, *pid), bf_req_itoa(r, pb->responsible[i])};
        res = bf_db_prep(r->db, "problem_resp_insert",
                         "INSERT INTO problem_responsible (problem_id, cadre_id) "
                         "VALUES ($1::bigint, $2::bigint)",
                         2, rp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    for (size_t i = 0; i < pb->ntasks; i++) {
        pb->tasks[i].problem_id = *pid;
        if (tasks_insert_task(r, &pb->tasks[i], false, &task_ids[i]) != 0) return -1;
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_int(&m, "id", *pid);
    tm_str(&m, "ledger", pb->ledger);
    tm_str(&m, "title", pb->title);
    if (inspection_id) tm_int(&m, "inspection_id", inspection_id);
    if (pb->village_id) tm_int(&m, "village_id", pb->village_id);
    if (pb->household_id) tm_int(&m, "household_id", pb->household_id);
    if (pb->unit_id) tm_int(&m, "unit_id", pb->unit_id);
    if (pb->region_code) tm_str(&m, "region_code", pb->region_code);
    tm_key(&m, "responsible");
    msgpack_pack_array(tm_pk(&m), pb->nresp);
    for (size_t i = 0; i < pb->nresp; i++) msgpack_pack_int64(tm_pk(&m), pb->responsible[i]);
    tm_key(&m, "task_ids");
    msgpack_pack_array(tm_pk(&m), pb->ntasks);
    for (size_t i = 0; i < pb->ntasks; i++) msgpack_pack_int64(tm_pk(&m), task_ids[i]);
    tm_str(&m, "due", due);
    tm_str(&m, "due_local", due_local);
    tasks_map_end(&m, pk);
    return tasks_emit(r, &ev, "problem.opened", "problem", *pid);
}

/* Packs problem id with its tasks in ONE statement: the problem's columns
 * (prefixed p_, repeated on each row) with its tasks joined on, each row a
 * task for tasks_pack_task; the clock is part of it (TASKS_NOW_SQL) and the
 * region is checked on the row. $1 system now, $2 time zone, $3 id,
 * $4 manual clock. */
#define S_NOW TASKS_NOW_SQL("$1", "$4")
static int s_pack_problem(bf_req_t *r, int64_t id)
{
    const char *sys, *manual;
    if (tasks_now_params(r, &sys, &manual) != 0) return -1;
    const char *p[] = {sys, tasks_of(r)->timezone, bf_req_itoa(r, id), manual};
    PGresult *pr = bf_db_prep(
        r->db, "problem_get1",
        "SELECT p.id AS p_id, p.ref AS p_ref, p.inspection_id AS p_inspection_id, "
        " p.ledger AS p_ledger, p.source AS p_source, p.title AS p_title, "
        " p.description AS p_description, p.village_id AS p_village_id, "
        " p.household_id AS p_household_id, p.unit_id AS p_unit_id, "
        " p.region_code AS p_region_code, p.channel AS p_channel, p.status AS p_status, "
        " (p.status = 'open' AND p.due_at < " S_NOW ") AS p_overdue, "
        " rfc3339(p.due_at) AS p_due, rfc3339_local(p.due_at, $2) AS p_due_local, "
        " rfc3339(p.closed_at) AS p_closed_at, p.created_by AS p_created_by, "
        " rfc3339(p.created_at) AS p_created_at, "
        " ARRAY(SELECT cadre_id FROM problem_responsible WHERE problem_id = p.id "
        "       ORDER BY cadre_id)::text AS p_responsible, x.* "
        "FROM problem p LEFT JOIN LATERAL (SELECT " TASKS_TASK_COLS_AT(S_NOW) " "
        "  FROM task t WHERE t.problem_id = p.id) x ON true "
        "WHERE p.id = $3::bigint ORDER BY x.id",
        4, p, NULL, NULL);
    if (!pr) return bf_req_db_fail(r);
    if (PQntuples(pr) == 0) {
        PQclear(pr);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no problem with id %lld", (long long)id);
    }
    if (tasks_scope_read_code(r, bf_db_null(pr, 0, "p_region_code")
                                     ? NULL
                                     : bf_db_str(pr, 0, "p_region_code"),
                              "id", "problem", id) != 0) {
        PQclear(pr);
        return -1;
    }
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_col_int(&m, "id", pr, 0, "p_id");
    tm_col_str(&m, "ref", pr, 0, "p_ref");
    tm_col_int(&m, "inspection_id", pr, 0, "p_inspection_id");
    tm_col_str(&m, "ledger", pr, 0, "p_ledger");
    tm_col_str(&m, "source", pr, 0, "p_source");
    tm_col_str(&m, "title", pr, 0, "p_title");
    tm_col_str(&m, "description", pr, 0, "p_description");
    tm_col_int(&m, "village_id", pr, 0, "p_village_id");
    tm_col_int(&m, "household_id", pr, 0, "p_household_id");
    tm_col_int(&m, "unit_id", pr, 0, "p_unit_id");
    tm_col_str(&m, "region_code", pr, 0, "p_region_code");
    tm_col_str(&m, "channel", pr, 0, "p_channel");
    tm_col_str(&m, "status", pr, 0, "p_status");
    tm_col_bool(&m, "overdue", pr, 0, "p_overdue");
    tm_col_str(&m, "due", pr, 0, "p_due");
    tm_col_str(&m, "due_local", pr, 0, "p_due_local");
    tm_col_str(&m, "closed_at", pr, 0, "p_closed_at");
    tm_col_str(&m, "created_by", pr, 0, "p_created_by");
    tm_col_str(&m, "created_at", pr, 0, "p_created_at");
    tm_key(&m, "responsible");
    /* {1,2,3} */
    const char *lit = bf_db_str(pr, 0, "p_responsible");
    int64_t ids[MAX_RESPONSIBLE];
    size_t n = 0;
    for (const char *q = lit ? lit + 1 : ""; *q && *q != '}' && n < MAX_RESPONSIBLE;) {
        char *end;
        ids[n++] = strtoll(q, &end, 10);
        q = *end == ',' ? end + 1 : end;
    }
    msgpack_pack_array(tm_pk(&m), n);
    for (size_t i = 0; i < n; i++) msgpack_pack_int64(tm_pk(&m), ids[i]);
    tm_key(&m, "tasks");
    int nt = bf_db_null(pr, 0, "id") ? 0 : PQntuples(pr); /* no tasks: one row, NULLs */
    msgpack_pack_array(tm_pk(&m), (size_t)nt);
    for (int i = 0; i < nt; i++) tasks_pack_task(tm_pk(&m), pr, i);
    tasks_map_end(&m, r->out);
    PQclear(pr);
    return 0;
}

int problem_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    return s_pack_problem(r, id);
}

int problem_open(bf_req_t *r)
{
    const char *now = tasks_now(r);
    if (!now) return -1;
    const msgpack_object *insp = NULL;
    const msgpack_object_array *list = NULL;
    if (bf_req_map(r, r->params, NULL, "inspection", false, &insp) < 0) return -1;
    if (bf_req_list(r, r->params, NULL, "problems", false, 500, &list) < 0) return -1;
    if (!insp && !list) {
        /* one problem, its fields at the top level */
        s_problem_t pb;
        memset(&pb, 0, sizeof pb);
        if (bf_req_str(r, r->params, NULL, "ref", false, TASKS_REF_MAX, &pb.ref) < 0) return -1;
        if (s_parse(r, r->params, NULL, now, "rectification", &pb) != 0) return -1;
        int64_t *tids = bf_arena_alloc(r->arena, sizeof *tids * pb.ntasks);
        if (!tids) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
        int64_t pid;
        if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
        if (s_insert(r, &pb, 0, now, &pid, tids) != 0) return -1;
        if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
        return s_pack_problem(r, pid);
    }
    if (!insp || !list)
        return bf_req_fail(r, BF_E_INVALID, insp ? "problems" : "inspection",
                           "bulk mode needs both inspection and problems");
    static const char *const single[] = {"ref",     "title",       "description", "ledger",
                                         "village_id", "household_id", "unit_id",  "responsible",
                                         "due",     "tasks",       NULL};
    for (const char *const *k = single; *k; k++)
        if (bf_mp_get(r->params, *k))
            return bf_req_fail(r, BF_E_INVALID, *k,
                               "%s belongs inside each of problems[] in bulk mode", *k);
    if (list->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "problems", "problems must not be empty");
    static const char *const ikeys[] = {"title", "held_on", "kind", "ref", "region_code", NULL};
    if (tasks_check_keys(r, insp, "inspection", ikeys) != 0) return -1;
    const char *ititle, *held_on = NULL, *ikind = "inspection", *iref = NULL, *icode = NULL;
    if (tasks_text_param(r, insp, "inspection", "title", true, TASKS_TITLE_MAX, &ititle) != 0)
        return -1;
    if (tasks_date_param(r, insp, "inspection", "held_on", false, &held_on) < 0) return -1;
    if (bf_req_enum(r, insp, "inspection", "kind", false, s_inspection_kinds, &ikind) < 0)
        return -1;
    if (bf_req_str(r, insp, "inspection", "ref", false, TASKS_REF_MAX, &iref) < 0) return -1;
    if (bf_req_str(r, insp, "inspection", "region_code", false, 12, &icode) < 0) return -1;
    if (icode && bf_division_check(icode, strlen(icode)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "inspection.region_code",
                           "inspection.region_code must be a 12-digit division code");
    s_problem_t *pbs = bf_arena_alloc(r->arena, sizeof *pbs * list->size);
    if (!pbs) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    static const char *const pkeys[] = {"ref",        "title",        "description",
                                        "ledger",     "village_id",   "household_id",
                                        "unit_id",    "responsible",  "due",
                                        "tasks",      NULL};
    for (uint32_t i = 0; i < list->size; i++) {
        const char *f = bf_arena_printf(r->arena, "problems[%u]", i);
        const msgpack_object *m = &list->ptr[i];
        if (m->type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be a map", f);
        if (tasks_check_keys(r, m, f, pkeys) != 0) return -1;
        memset(&pbs[i], 0, sizeof pbs[i]);
        if (s_parse(r, m, f, now, "rectification", &pbs[i]) != 0) return -1;
    }
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *ip[] = {iref, ititle, ikind, held_on, icode, r->actor, now, tasks_of(r)->timezone};
    PGresult *res = bf_db_prep(
        r->db, "inspection_insert",
        "INSERT INTO inspection (ref, title, kind, held_on, region_code, created_by, created_at) "
        "VALUES ($1, $2, $3, COALESCE($4::date, ($7::timestamptz AT TIME ZONE $8)::date), $5, "
        " $6, $7::timestamptz) RETURNING id, held_on::text AS held_on",
        8, ip, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "inspection.ref",
                               "an inspection with ref %s exists", iref ? iref : "");
        }
        return bf_req_db_fail(r);
    }
    int64_t iid = bf_db_int(res, 0, "id");
    char held[11];
    snprintf(held, sizeof held, "%s", bf_db_str(res, 0, "held_on"));
    PQclear(res);
    int64_t *pids = bf_arena_alloc(r->arena, sizeof *pids * list->size);
    int64_t **tids = bf_arena_alloc(r->arena, sizeof *tids * list->size);
    if (!pids || !tids) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    for (uint32_t i = 0; i < list->size; i++) {
        tids[i] = bf_arena_alloc(r->arena, sizeof **tids * pbs[i].ntasks);
        if (!tids[i]) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
        if (s_insert(r, &pbs[i], iid, now, &pids[i], tids[i]) != 0) {
            if (r->err.code && !strcmp(r->err.field, "ref"))
                snprintf(r->err.field, sizeof r->err.field, "problems[%u].ref", i);
            return -1;
        }
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "id", iid);
    bf_mp_kv_str(pk, "title", ititle);
    bf_mp_kv_str(pk, "kind", ikind);
    bf_mp_kv_str(pk, "held_on", held);
    bf_mp_kv_str(pk, "region_code", icode);
    bf_mp_key(pk, "problem_ids");
    msgpack_pack_array(pk, list->size);
    for (uint32_t i = 0; i < list->size; i++) msgpack_pack_int64(pk, pids[i]);
    if (tasks_emit(r, &ev, "inspection.recorded", "inspection", iid) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_key(r->out, "inspection");
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_int(r->out, "id", iid);
    bf_mp_kv_str(r->out, "title", ititle);
    bf_mp_kv_str(r->out, "kind", ikind);
    bf_mp_kv_str(r->out, "held_on", held);
    bf_mp_kv_str(r->out, "region_code", icode);
    bf_mp_key(r->out, "problems");
    msgpack_pack_array(r->out, list->size);
    for (uint32_t i = 0; i < list->size; i++) {
        msgpack_pack_map(r->out, 3);
        bf_mp_kv_int(r->out, "id", pids[i]);
        bf_mp_kv_str(r->out, "title", pbs[i].title);
        bf_mp_key(r->out, "task_ids");
        msgpack_pack_array(r->out, pbs[i].ntasks);
        for (size_t k = 0; k < pbs[i].ntasks; k++) msgpack_pack_int64(r->out, tids[i][k]);
    }
    return 0;
}

int tasks_problem_maybe_close(bf_req_t *r, int64_t problem_id)
{
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *p[] = {bf_req_itoa(r, problem_id), now};
    PGresult *res = bf_db_prep(
        r->db, "problem_close",
        "UPDATE problem SET status = 'closed', closed_at = $2::timestamptz "
        "WHERE id = $1::bigint AND status = 'open' AND NOT EXISTS "
        " (SELECT 1 FROM task WHERE problem_id = $1::bigint AND status <> 'closed') "
        "RETURNING ledger, title, village_id, (due_at < $2::timestamptz) AS late, "
        " rfc3339(closed_at) AS closed_at",
        2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "id", problem_id);
    bf_mp_kv_str(pk, "ledger", bf_db_str(res, 0, "ledger"));
    bf_mp_kv_str(pk, "title", bf_db_str(res, 0, "title"));
    if (bf_db_null(res, 0, "village_id"))
        bf_mp_kv_nil(pk, "village_id");
    else
        bf_mp_kv_int(pk, "village_id", bf_db_int(res, 0, "village_id"));
    bf_mp_kv_bool(pk, "late", bf_db_bool(res, 0, "late"));
    bf_mp_kv_str(pk, "closed_at", bf_db_str(res, 0, "closed_at"));
    PQclear(res);
    return tasks_emit(r, &ev, "problem.closed", "problem", problem_id);
}

int problem_list(bf_req_t *r)
{
    const char *ledger = NULL, *status = NULL;
    static const char *const statuses[] = {"open", "closed", NULL};
    int64_t village = 0, unit = 0, cadre = 0, insp = 0, after, limit;
    bool overdue = false;
    int has_overdue;
    if (bf_req_enum(r, r->params, NULL, "ledger", false, s_ledgers, &ledger) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, statuses, &status) < 0) return -1;
    if ((has_overdue = bf_req_bool(r, r->params, NULL, "overdue", false, &overdue)) < 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village) < 0 ||
        bf_req_int(r, r->params, NULL, "unit_id", false, 1, INT64_MAX, &unit) < 0 ||
        bf_req_int(r, r->params, NULL, "cadre_id", false, 1, INT64_MAX, &cadre) < 0 ||
        bf_req_int(r, r->params, NULL, "inspection_id", false, 1, INT64_MAX, &insp) < 0)
        return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *p[] = {now,
                       tasks_of(r)->timezone,
                       ledger,
                       status,
                       has_overdue == 0 ? (overdue ? "true" : "false") : NULL,
                       village ? bf_req_itoa(r, village) : NULL,
                       unit ? bf_req_itoa(r, unit) : NULL,
                       cadre ? bf_req_itoa(r, cadre) : NULL,
                       insp ? bf_req_itoa(r, insp) : NULL,
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1),
                       bf_req_region_prefix(r)};
    PGresult *res = bf_db_prep(
        r->db, "problem_list",
        "SELECT p.id, p.ledger, p.title, p.status, p.village_id, p.household_id, p.unit_id, "
        " p.inspection_id, (p.status = 'open' AND p.due_at < $1::timestamptz) AS overdue, "
        " rfc3339(p.due_at) AS due, rfc3339_local(p.due_at, $2) AS due_local, "
        " (SELECT count(*) FROM task t WHERE t.problem_id = p.id) AS tasks, "
        " (SELECT count(*) FROM task t WHERE t.problem_id = p.id AND t.status = 'closed') "
        "   AS tasks_closed "
        "FROM problem p WHERE ($3::text IS NULL OR p.ledger = $3) "
        " AND ($4::text IS NULL OR p.status = $4) "
        " AND ($5::boolean IS NULL OR (p.status = 'open' AND p.due_at < $1::timestamptz) = $5) "
        " AND ($6::bigint IS NULL OR p.village_id = $6) "
        " AND ($7::bigint IS NULL OR p.unit_id = $7) "
        " AND ($8::bigint IS NULL OR EXISTS (SELECT 1 FROM problem_responsible pr "
        "      WHERE pr.problem_id = p.id AND pr.cadre_id = $8)) "
        " AND ($9::bigint IS NULL OR p.inspection_id = $9) "
        " AND ($12::text IS NULL OR p.region_code LIKE $12 || '%') "
        " AND p.id > $10::bigint ORDER BY p.id LIMIT $11::int",
        12, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        tasks_map_t m;
        tasks_map_begin(&m);
        tm_col_int(&m, "id", res, i, "id");
        tm_col_str(&m, "ledger", res, i, "ledger");
        tm_col_str(&m, "title", res, i, "title");
        tm_col_str(&m, "status", res, i, "status");
        tm_col_bool(&m, "overdue", res, i, "overdue");
        tm_col_int(&m, "village_id", res, i, "village_id");
        tm_col_int(&m, "household_id", res, i, "household_id");
        tm_col_int(&m, "unit_id", res, i, "unit_id");
        tm_col_int(&m, "inspection_id", res, i, "inspection_id");
        tm_col_str(&m, "due", res, i, "due");
        tm_col_str(&m, "due_local", res, i, "due_local");
        tm_col_int(&m, "tasks", res, i, "tasks");
        tm_col_int(&m, "tasks_closed", res, i, "tasks_closed");
        tasks_map_end(&m, r->out);
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

int ledger_summary(bf_req_t *r)
{
    static const char *const bys[] = {"village", "unit", "person", NULL};
    const char *by, *ledger = NULL;
    int64_t insp = 0, limit = 1000;
    if (bf_req_enum(r, r->params, NULL, "by", true, bys, &by) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "ledger", false, s_ledgers, &ledger) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "inspection_id", false, 1, INT64_MAX, &insp) < 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, 1, 10000, &limit) < 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *region = bf_req_region_prefix(r); /* a region-bound caller counts its own */
    const char *p[] = {now, ledger, insp ? bf_req_itoa(r, insp) : NULL, bf_req_itoa(r, limit), by,
                       region};
    /* the key column per grouping; the three counts are disjoint */
    PGresult *res = bf_db_prep(
        r->db, "ledger_summary",
        "WITH f AS (SELECT p.*, (p.status = 'open' AND p.due_at < $1::timestamptz) AS late "
        "  FROM problem p WHERE ($2::text IS NULL OR p.ledger = $2) "
        "  AND ($3::bigint IS NULL OR p.inspection_id = $3) "
        "  AND ($6::text IS NULL OR p.region_code LIKE $6 || '%')), "
        "k AS (SELECT f.*, CASE $5 WHEN 'village' THEN f.village_id WHEN 'unit' THEN f.unit_id "
        "  END AS key FROM f WHERE $5 <> 'person' "
        "  UNION ALL SELECT f.*, pr.cadre_id FROM f JOIN problem_responsible pr "
        "  ON pr.problem_id = f.id WHERE $5 = 'person') "
        "SELECT key, count(*) FILTER (WHERE status = 'open' AND NOT late) AS open, "
        " count(*) FILTER (WHERE late) AS overdue, "
        " count(*) FILTER (WHERE status = 'closed') AS closed, count(*) AS total "
        "FROM k WHERE key IS NOT NULL GROUP BY key ORDER BY key LIMIT $4::int",
        6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    const char *tp[] = {now, ledger, p[2], region};
    PGresult *tot = bf_db_prep(
        r->db, "ledger_totals",
        "SELECT count(*) FILTER (WHERE status = 'open' AND due_at >= $1::timestamptz) AS open, "
        " count(*) FILTER (WHERE status = 'open' AND due_at < $1::timestamptz) AS overdue, "
        " count(*) FILTER (WHERE status = 'closed') AS closed, count(*) AS total "
        "FROM problem WHERE ($2::text IS NULL OR ledger = $2) "
        " AND ($3::bigint IS NULL OR inspection_id = $3) "
        " AND ($4::text IS NULL OR region_code LIKE $4 || '%')",
        4, tp, NULL, NULL);
    if (!tot) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    int n = PQntuples(res);
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_str(r->out, "by", by);
    bf_mp_kv_str(r->out, "ledger", ledger);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)n);
    const char *key = !strcmp(by, "village") ? "village_id"
                      : !strcmp(by, "unit")  ? "unit_id"
                                             : "cadre_id";
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(r->out, 5);
        bf_mp_kv_int(r->out, key, bf_db_int(res, i, "key"));
        bf_mp_kv_int(r->out, "open", bf_db_int(res, i, "open"));
        bf_mp_kv_int(r->out, "overdue", bf_db_int(res, i, "overdue"));
        bf_mp_kv_int(r->out, "closed", bf_db_int(res, i, "closed"));
        bf_mp_kv_int(r->out, "total", bf_db_int(res, i, "total"));
    }
    bf_mp_key(r->out, "totals");
    msgpack_pack_map(r->out, 4);
    bf_mp_kv_int(r->out, "open", bf_db_int(tot, 0, "open"));
    bf_mp_kv_int(r->out, "overdue", bf_db_int(tot, 0, "overdue"));
    bf_mp_kv_int(r->out, "closed", bf_db_int(tot, 0, "closed"));
    bf_mp_kv_int(r->out, "total", bf_db_int(tot, 0, "total"));
    PQclear(res);
    PQclear(tot);
    return 0;
}

/* The first bytes of s, at most max, cut at a UTF-8 character boundary. */
static const char *s_head(bf_req_t *r, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) return s;
    n = max;
    while (n && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return bf_arena_printf(r->arena, "%.*s…", (int)n, s);
}

int help_request_create(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    int64_t hh;
    const char *text, *channel = "wechat", *ref = NULL, *due = NULL;
    if (bf_req_str(r, r->params, NULL, "ref", false, TASKS_REF_MAX, &ref) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "household_id", true, 1, INT64_MAX, &hh) != 0) return -1;
    if (tasks_text_param(r, r->params, NULL, "text", true, TASKS_TEXT_MAX, &text) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "channel", false, s_channels, &channel) < 0) return -1;
    if (tasks_due_param(r, r->params, NULL, "due", false, &due) < 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    tasks_entity_t h;
    if (tasks_registry_check(r, "household", hh, "household_id", &h) != 0) return -1;
    s_problem_t pb;
    memset(&pb, 0, sizeof pb);
    pb.ref = ref;
    pb.ledger = "livelihood";
    pb.source = "help_request";
    pb.channel = channel;
    pb.title = bf_arena_printf(r->arena, "求助: %s", s_head(r, text, 120));
    pb.description = text;
    pb.household_id = hh;
    pb.village_id = h.village_id;
    pb.region_code = h.region_code[0] ? bf_arena_strndup(r->arena, h.region_code, 12) : NULL;
    if (tasks_scope_write_code(r, pb.region_code, "household_id") != 0) return -1;
    tasks_new_task_t t;
    memset(&t, 0, sizeof t);
    int rc = tasks_owner_param(r, r->params, NULL, "owner", false, 0, &t.owner, &t.copies);
    if (rc < 0) return -1;
    if (rc == 1) {
        int64_t *ids;
        size_t n;
        if (tasks_registry_responsible(r, hh, "household_id", &ids, &n) != 0) return -1;
        if (n == 0)
            return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                               "household %lld has no responsible cadre (帮扶责任人); give owner",
                               (long long)hh);
        t.owner.kind = "cadre";
        t.owner.id = ids[0];
        if (tasks_owner_chain(r, &t.owner, 0, "household_id", &t.copies) != 0) return -1;
    }
    if (!strcmp(t.owner.kind, "cadre")) {
        pb.responsible = &t.owner.id;
        pb.nresp = 1;
    } else if (!strcmp(t.owner.kind, "unit")) {
        pb.unit_id = t.owner.id;
    }
    if (!due) {
        const char *dp[] = {now, bf_req_itoa(r, ts->help_due_hours)};
        PGresult *res = bf_db_prep(r->db, "help_default_due",
                                   "SELECT ($1::timestamptz + make_interval(hours => $2::int))"
                                   "::text AS t",
                                   2, dp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        due = bf_arena_strndup(r->arena, bf_db_str(res, 0, "t"), strlen(bf_db_str(res, 0, "t")));
        PQclear(res);
    }
    pb.due = due;
    t.title = bf_arena_printf(r->arena, "答复求助: %s", s_head(r, text, 120));
    t.description = text;
    t.kind = "help_request";
    t.due = due;
    t.target.kind = "household";
    t.target.id = hh;
    t.copies.village_id = pb.village_id;
    t.copies.region_code = pb.region_code;
    pb.tasks = &t;
    pb.ntasks = 1;
    int64_t pid, tid;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_insert(r, &pb, 0, now, &pid, &tid) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "problem_id", pid);
    bf_mp_kv_int(pk, "task_id", tid);
    bf_mp_kv_int(pk, "household_id", hh);
    bf_mp_kv_int(pk, "village_id", pb.village_id);
    bf_mp_kv_str(pk, "channel", channel);
    bf_mp_key(pk, "owner");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", t.owner.kind);
    bf_mp_kv_int(pk, "id", t.owner.id);
    if (tasks_emit(r, &ev, "help_request.created", "problem", pid) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_problem(r, pid);
}
