/* task.c: tasks and their life, evidence, owners and targets.
 *
 * open -> in_progress -> submitted -> closed (verified, 销号), or
 * submitted -> rejected (with a reason) -> in_progress again. Every other move
 * is failed_precondition naming the current status. The reviewer (verify,
 * reject) is never the owner: actor "cadre:42" cannot close a task owned by
 * cadre 42, by a team cadre 42 belongs to, or by cadre 42's unit. Each move is
 * a history row and an event in the same transaction.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const s_owner_kinds[] = {"unit", "team", "cadre", NULL};
static const char *const s_target_kinds[] = {"village", "household", "project", "unit",
                                             "team",    "cadre",     "region",  NULL};
static const char *const s_task_kinds[] = {"duty",     "report",        "visit",
                                           "timeline", "rectification", "help_request",
                                           "plan",     "indicator",     "monitoring",
                                           "other",    NULL};
static const char *const s_statuses[] = {"open", "in_progress", "submitted", "rejected",
                                         "closed", NULL};

/* ------------------------------------------------------- owners and targets */

int tasks_owner_chain(bf_req_t *r, const tasks_owner_t *o, int64_t team_id, const char *field,
                      tasks_copies_t *c)
{
    tasks_entity_t f;
    if (tasks_registry_check(r, o->kind, o->id, field, &f) != 0) return -1;
    if (!c) return 0;
    if (!strcmp(o->kind, "unit")) {
        c->esc_unit_id = o->id;
    } else if (!strcmp(o->kind, "team")) {
        c->esc_team_id = o->id;
        c->esc_leader_id = f.leader_id;
        c->esc_unit_id = f.unit_id;
    } else {
        c->esc_unit_id = f.unit_id;
        int64_t team = team_id > 0 ? team_id : f.team_id;
        if (team > 0) {
            tasks_entity_t tf;
            if (tasks_registry_check(r, "team", team, team_id > 0 ? "team_id" : field, &tf) != 0)
                return -1;
            c->esc_team_id = team;
            c->esc_leader_id = tf.leader_id;
        }
    }
    return 0;
}

int tasks_owner_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                      const char *key, bool required, int64_t team_id, tasks_owner_t *o,
                      tasks_copies_t *c)
{
    const msgpack_object *m;
    int rc = bf_req_map(r, in, prefix, key, required, &m);
    if (rc != 0) return rc;
    const char *f = bf_req_field(r, prefix, key);
    static const char *const keys[] = {"kind", "id", NULL};
    if (tasks_check_keys(r, m, f, keys) != 0) return -1;
    if (bf_req_enum(r, m, f, "kind", true, s_owner_kinds, &o->kind) != 0) return -1;
    if (bf_req_int(r, m, f, "id", true, 1, INT64_MAX, &o->id) != 0) return -1;
    return tasks_owner_chain(r, o, team_id, bf_req_field(r, f, "id"), c) == 0 ? 0 : -1;
}

int tasks_target_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                       const char *key, bool required, tasks_target_t *t, tasks_copies_t *c)
{
    const msgpack_object *m;
    int rc = bf_req_map(r, in, prefix, key, required, &m);
    if (rc != 0) return rc;
    const char *f = bf_req_field(r, prefix, key);
    static const char *const keys[] = {"kind", "id", "code", NULL};
    if (tasks_check_keys(r, m, f, keys) != 0) return -1;
    if (bf_req_enum(r, m, f, "kind", true, s_target_kinds, &t->kind) != 0) return -1;
    t->id = 0;
    t->code = NULL;
    if (!strcmp(t->kind, "region")) {
        if (bf_req_str(r, m, f, "code", true, 12, &t->code) != 0) return -1;
        const char *cf = bf_req_field(r, f, "code");
        if (bf_division_check(t->code, strlen(t->code)) != 0)
            return bf_req_fail(r, BF_E_INVALID, cf, "%s must be a 12-digit division code", cf);
        if (bf_mp_get(m, "id"))
            return bf_req_fail(r, BF_E_INVALID, bf_req_field(r, f, "id"),
                               "a region target is named by its code, not an id");
        if (tasks_registry_region(r, t->code, cf) != 0) return -1;
        if (c) c->region_code = t->code;
        return 0;
    }
    if (bf_mp_get(m, "code"))
        return bf_req_fail(r, BF_E_INVALID, bf_req_field(r, f, "code"),
                           "only a region target has a code");
    if (bf_req_int(r, m, f, "id", true, 1, INT64_MAX, &t->id) != 0) return -1;
    const char *idf = bf_req_field(r, f, "id");
    if (!strcmp(t->kind, "project")) return 0; /* funds owns projects: not checked */
    tasks_entity_t e;
    if (tasks_registry_check(r, t->kind, t->id, idf, &e) != 0) return -1;
    if (!c) return 0;
    if (!strcmp(t->kind, "village")) {
        c->village_id = t->id;
        if (e.region_code[0]) c->region_code = bf_arena_strndup(r->arena, e.region_code, 12);
    } else if (!strcmp(t->kind, "household") && e.village_id > 0) {
        c->village_id = e.village_id;
        if (!e.region_code[0]) { /* an older registry: ask the village */
            if (tasks_registry_check(r, "village", e.village_id, idf, &e) != 0) return -1;
        }
        if (e.region_code[0]) c->region_code = bf_arena_strndup(r->arena, e.region_code, 12);
    }
    return 0;
}

/* ---------------------------------------------------------------- insert */

static const char *s_id_or_null(bf_req_t *r, int64_t v) { return v > 0 ? bf_req_itoa(r, v) : NULL; }

int tasks_insert_task(bf_req_t *r, const tasks_new_task_t *t, bool on_conflict_skip,
                      int64_t *id)
{
    const tasks_t *ts = tasks_of(r);
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *delay0 = ts->nsteps ? bf_req_itoa(r, ts->step_delay_s[0]) : NULL;
    const char *p[] = {t->ref,
                       t->title,
                       t->description,
                       t->kind ? t->kind : "duty",
                       t->owner.kind,
                       bf_req_itoa(r, t->owner.id),
                       t->target.kind,
                       s_id_or_null(r, t->target.id),
                       t->target.code,
                       s_id_or_null(r, t->copies.village_id),
                       t->copies.region_code,
                       s_id_or_null(r, t->copies.esc_team_id),
                       s_id_or_null(r, t->copies.esc_leader_id),
                       s_id_or_null(r, t->copies.esc_unit_id),
                       t->due,
                       t->vetoing ? "true" : "false",
                       s_id_or_null(r, t->schedule_id),
                       t->period,
                       s_id_or_null(r, t->timeline_id),
                       t->timeline_step,
                       s_id_or_null(r, t->problem_id),
                       s_id_or_null(r, t->plan_id),
                       delay0,
                       r->actor ? r->actor : "system:scheduler",
                       now,
                       ts->timezone};
    static const char *cols =
        "INSERT INTO task (ref, title, description, kind, owner_kind, owner_id, target_kind, "
        " target_id, target_code, village_id, region_code, esc_team_id, esc_leader_id, "
        " esc_unit_id, due_at, vetoing, schedule_id, period, timeline_id, timeline_step, "
        " problem_id, plan_id, esc_next_at, created_by, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6::bigint, $7, $8::bigint, $9, $10::bigint, $11, "
        " $12::bigint, $13::bigint, $14::bigint, $15::timestamptz, $16::boolean, $17::bigint, "
        " $18, $19::bigint, $20, $21::bigint, $22::bigint, "
        " $15::timestamptz + make_interval(secs => $23::bigint), $24, $25::timestamptz, "
        " $25::timestamptz) ";
    static const char *ret =
        "RETURNING id, rfc3339(due_at) AS due, rfc3339_local(due_at, $26) AS due_local";
    char sql[2048];
    snprintf(sql, sizeof sql, "%s%s%s", cols, on_conflict_skip ? "ON CONFLICT DO NOTHING " : "",
             ret);
    PGresult *res = bf_db_prep(r->db, on_conflict_skip ? "task_insert_skip" : "task_insert",
                               sql, 26, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505") && t->ref) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "ref", "a task with ref %s exists", t->ref);
        }
        return bf_req_db_fail(r);
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        *id = 0;
        return 0;
    }
    *id = bf_db_int(res, 0, "id");
    const char *idp[] = {bf_req_itoa(r, *id), r->actor ? r->actor : "system:scheduler", now};
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_int(&m, "id", *id);
    tm_str(&m, "title", t->title);
    tm_str(&m, "kind", t->kind ? t->kind : "duty");
    tm_key(&m, "owner");
    msgpack_pack_map(tm_pk(&m), 2);
    bf_mp_kv_str(tm_pk(&m), "kind", t->owner.kind);
    bf_mp_kv_int(tm_pk(&m), "id", t->owner.id);
    tm_key(&m, "target");
    if (t->target.kind) {
        msgpack_pack_map(tm_pk(&m), 2);
        bf_mp_kv_str(tm_pk(&m), "kind", t->target.kind);
        if (t->target.code)
            bf_mp_kv_str(tm_pk(&m), "code", t->target.code);
        else
            bf_mp_kv_int(tm_pk(&m), "id", t->target.id);
    } else {
        msgpack_pack_nil(tm_pk(&m));
    }
    tm_col_str(&m, "due", res, 0, "due");
    tm_col_str(&m, "due_local", res, 0, "due_local");
    tm_bool(&m, "vetoing", t->vetoing);
    if (t->schedule_id) {
        tm_int(&m, "schedule_id", t->schedule_id);
        tm_str(&m, "period", t->period);
    }
    if (t->timeline_id) {
        tm_int(&m, "timeline_id", t->timeline_id);
        tm_str(&m, "timeline_step", t->timeline_step);
    }
    if (t->problem_id) tm_int(&m, "problem_id", t->problem_id);
    if (t->plan_id) tm_int(&m, "plan_id", t->plan_id);
    if (t->copies.village_id) tm_int(&m, "village_id", t->copies.village_id);
    tasks_map_end(&m, pk);
    PQclear(res);
    res = bf_db_prep(r->db, "task_history_created",
                     "INSERT INTO task_history (task_id, from_status, to_status, actor, at) "
                     "VALUES ($1::bigint, NULL, 'open', $2, $3::timestamptz)",
                     3, idp, NULL, NULL);
    if (!res) {
        bf_event_discard(&ev);
        return bf_req_db_fail(r);
    }
    PQclear(res);
    return tasks_emit(r, &ev, "task.created", "task", *id);
}

/* ---------------------------------------------------------------- packing */

static void s_pack_ref(msgpack_packer *pk, const PGresult *res, int row, const char *kcol,
                       const char *icol, const char *ccol)
{
    const char *kind = bf_db_str(res, row, kcol);
    if (!kind) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", kind);
    if (ccol && !bf_db_null(res, row, ccol))
        bf_mp_kv_str(pk, "code", bf_db_str(res, row, ccol));
    else
        bf_mp_kv_int(pk, "id", bf_db_int(res, row, icol));
}

static void s_task_fields(tasks_map_t *m, const PGresult *res, int row)
{
    tm_col_int(m, "id", res, row, "id");
    tm_col_str(m, "title", res, row, "title");
    tm_key(m, "owner");
    s_pack_ref(tm_pk(m), res, row, "owner_kind", "owner_id", NULL);
    tm_key(m, "target");
    s_pack_ref(tm_pk(m), res, row, "target_kind", "target_id", "target_code");
    tm_col_str(m, "due", res, row, "due");
    tm_col_str(m, "due_local", res, row, "due_local");
}

static void s_task_all_fields(tasks_map_t *m, const PGresult *res, int row)
{
    s_task_fields(m, res, row);
    tm_col_str(m, "ref", res, row, "ref");
    tm_col_str(m, "description", res, row, "description");
    tm_col_str(m, "kind", res, row, "kind");
    tm_col_str(m, "status", res, row, "status");
    tm_col_bool(m, "overdue", res, row, "overdue");
    tm_col_bool(m, "vetoing", res, row, "vetoing");
    tm_col_int(m, "village_id", res, row, "village_id");
    tm_col_str(m, "region_code", res, row, "region_code");
    tm_col_int(m, "schedule_id", res, row, "schedule_id");
    tm_col_str(m, "period", res, row, "period");
    tm_col_int(m, "timeline_id", res, row, "timeline_id");
    tm_col_str(m, "timeline_step", res, row, "timeline_step");
    tm_col_int(m, "problem_id", res, row, "problem_id");
    tm_col_int(m, "plan_id", res, row, "plan_id");
    tm_col_int(m, "submissions", res, row, "submissions");
    tm_col_str(m, "reject_reason", res, row, "reject_reason");
    tm_col_str(m, "created_at", res, row, "created_at");
    tm_col_str(m, "submitted_at", res, row, "submitted_at");
    tm_col_str(m, "closed_at", res, row, "closed_at");
    tm_col_str(m, "closed_by", res, row, "closed_by");
    tm_col_int(m, "escalation_steps", res, row, "escalation_steps");
}

void tasks_pack_task(msgpack_packer *pk, const PGresult *res, int row)
{
    tasks_map_t m;
    tasks_map_begin(&m);
    s_task_all_fields(&m, res, row);
    tasks_map_end(&m, pk);
}

void tasks_pack_task_event(msgpack_packer *pk, const PGresult *res, int row, int extra)
{
    /* the fields the notification service needs, recipient added by the caller */
    msgpack_pack_map(pk, (size_t)(8 + extra));
    bf_mp_kv_int(pk, "task_id", bf_db_int(res, row, "id"));
    bf_mp_kv_str(pk, "title", bf_db_str(res, row, "title"));
    bf_mp_kv_str(pk, "kind", bf_db_str(res, row, "kind"));
    bf_mp_kv_str(pk, "status", bf_db_str(res, row, "status"));
    bf_mp_key(pk, "owner");
    s_pack_ref(pk, res, row, "owner_kind", "owner_id", NULL);
    bf_mp_key(pk, "target");
    s_pack_ref(pk, res, row, "target_kind", "target_id", "target_code");
    bf_mp_kv_str(pk, "due", bf_db_str(res, row, "due"));
    bf_mp_kv_str(pk, "due_local", bf_db_str(res, row, "due_local"));
}

/* Packs the whole task (with history, escalations, evidence) into r->out. */
/* The statement behind task.get and every write's reply: the task row, its
 * history, escalations and evidence (attachments nested) in ONE statement,
 * the lists as JSON arrays built in the order and with the keys of the reply
 * (bf_json_to_msgpack appends them as msgpack, as exit.get does). The clock is
 * part of it too (TASKS_NOW_SQL). $1 system now, $2 time zone, $3 id,
 * $4 manual clock. */
#define S_TASK_FULL_SQL                                                                        \
    "SELECT " TASKS_TASK_COLS_AT(TASKS_NOW_SQL("$1", "$4")) ", "                               \
    " (SELECT json_agg(json_build_object('from', h.from_status, 'to', h.to_status, "           \
    "   'actor', h.actor, 'note', h.note, 'at', rfc3339(h.at)) ORDER BY h.id)::text "          \
    "  FROM task_history h WHERE h.task_id = t.id) AS history, "                              \
    " (SELECT json_agg(json_build_object('step', x.step, 'level', x.level, 'recipient', "      \
    "   json_build_object('kind', x.recipient_kind, 'id', x.recipient_id), "                   \
    "   'at', rfc3339(x.at)) ORDER BY x.step)::text "                                          \
    "  FROM task_escalation x WHERE x.task_id = t.id) AS escalations, "                       \
    " (SELECT json_agg(json_build_object('id', e.id, 'text', e.text, "                         \
    "   'submitted_by', e.submitted_by, 'submitted_at', rfc3339(e.submitted_at), "             \
    "   'attachments', COALESCE((SELECT json_agg(json_build_object('id', a.id, "               \
    "     'name', a.name, 'content_type', a.content_type, 'size', a.size, "                    \
    "     'sha256', a.sha256, 'has_data', a.data IS NOT NULL) ORDER BY a.id) "                 \
    "     FROM attachment a WHERE a.evidence_id = e.id), '[]'::json)) ORDER BY e.id)::text "   \
    "  FROM evidence e WHERE e.task_id = t.id) AS evidence "                                  \
    "FROM task t WHERE t.id = $3::bigint"

/* Packs the full task into r->out. With read_field set (task.get) the
 * caller's scope is checked on the row read (tasks_scope_task's rule, out of
 * scope is not_found naming read_field), so the read stays one statement. */
static int s_pack_full(bf_req_t *r, int64_t id, const char *read_field)
{
    const char *sys, *manual;
    if (tasks_now_params(r, &sys, &manual) != 0) return -1;
    const char *p[] = {sys, tasks_of(r)->timezone, bf_req_itoa(r, id), manual};
    PGresult *res = bf_db_prep(r->db, "task_get_full", S_TASK_FULL_SQL, 4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || (read_field && !tasks_scope_task_row(r, res, 0))) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, read_field ? read_field : "id",
                           "no task with id %lld", (long long)id);
    }
    tasks_map_t m;
    tasks_map_begin(&m);
    s_task_all_fields(&m, res, 0);
    int rc = 0;
    if (tm_json_list(r, &m, "history", res, 0, "history") != 0 ||
        tm_json_list(r, &m, "escalations", res, 0, "escalations") != 0 ||
        tm_json_list(r, &m, "evidence", res, 0, "evidence") != 0)
        rc = -1;
    PQclear(res);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&m.buf);
        return -1;
    }
    tasks_map_end(&m, r->out);
    return 0;
}

/* ---------------------------------------------------------------- evidence */

/* An entry ending in '*' allows every type with that prefix
 * ("application/vnd.openxmlformats-officedocument.*": .docx, .xlsx, .pptx). */
static bool s_type_allowed(const tasks_t *t, const char *ct)
{
    for (int i = 0; i < t->ntypes; i++) {
        size_t n = strlen(t->types[i]);
        if (n && t->types[i][n - 1] == '*') {
            if (!strncasecmp(t->types[i], ct, n - 1)) return true;
        } else if (!strcasecmp(t->types[i], ct)) {
            return true;
        }
    }
    return false;
}

int tasks_evidence_param(bf_req_t *r, const msgpack_object *in, const char *key, bool required,
                         tasks_evidence_t *ev)
{
    const tasks_t *ts = tasks_of(r);
    const msgpack_object *m;
    memset(ev, 0, sizeof *ev);
    int rc = bf_req_map(r, in, NULL, key, required, &m);
    if (rc != 0) return rc;
    static const char *const keys[] = {"text", "attachments", NULL};
    if (tasks_check_keys(r, m, key, keys) != 0) return -1;
    if (bf_req_str(r, m, key, "text", false, TASKS_TEXT_MAX, &ev->text) < 0) return -1;
    if (ev->text && !*ev->text) ev->text = NULL;
    const msgpack_object_array *list = NULL;
    const char *lf = bf_req_field(r, key, "attachments");
    if (bf_req_list(r, m, key, "attachments", false, (size_t)ts->evidence_max_files, &list) < 0)
        return -1;
    if (!ev->text && (!list || list->size == 0))
        return bf_req_fail(r, BF_E_INVALID, key, "%s needs text or at least one attachment", key);
    if (!list) return 0;
    ev->att = bf_arena_alloc(r->arena, sizeof *ev->att * (list->size ? list->size : 1));
    if (!ev->att) return bf_req_fail(r, BF_E_EXHAUSTED, lf, "out of memory");
    static const char *const akeys[] = {"name", "content_type", "size", "sha256", "data", NULL};
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *a = &list->ptr[i];
        const char *af = bf_arena_printf(r->arena, "%s[%u]", lf, i);
        tasks_attachment_t *at = &ev->att[i];
        if (a->type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, af, "%s must be a map", af);
        if (tasks_check_keys(r, a, af, akeys) != 0) return -1;
        if (tasks_text_param(r, a, af, "name", true, 255, &at->name) != 0) return -1;
        if (bf_req_str(r, a, af, "content_type", true, 96, &at->content_type) != 0) return -1;
        if (!s_type_allowed(ts, at->content_type)) {
            const char *f = bf_req_field(r, af, "content_type");
            return bf_req_fail(r, BF_E_INVALID, f,
                               "%s: type %s is not allowed (tasks.evidence_types)", f,
                               at->content_type);
        }
        const char *sf = bf_req_field(r, af, "size");
        if (bf_req_int(r, a, af, "size", true, 0, INT64_MAX, &at->size) != 0) return -1;
        if (at->size > ts->evidence_max_bytes)
            return bf_req_fail(r, BF_E_INVALID, sf,
                               "%s: %lld bytes is over the limit of %lld bytes per submission",
                               sf, (long long)at->size, (long long)ts->evidence_max_bytes);
        ev->total_bytes += at->size;
        if (ev->total_bytes > ts->evidence_max_bytes)
            return bf_req_fail(r, BF_E_INVALID, sf,
                               "%s: the attachments total %lld bytes, over the limit of %lld "
                               "bytes per submission",
                               sf, (long long)ev->total_bytes, (long long)ts->evidence_max_bytes);
        const char *sha;
        const char *hf = bf_req_field(r, af, "sha256");
        if (bf_req_str(r, a, af, "sha256", true, 64, &sha) != 0) return -1;
        if (strlen(sha) != 64)
            return bf_req_fail(r, BF_E_INVALID, hf, "%s must be 64 hex digits", hf);
        for (int k = 0; k < 64; k++) {
            if (!isxdigit((unsigned char)sha[k]))
                return bf_req_fail(r, BF_E_INVALID, hf, "%s must be 64 hex digits", hf);
            at->sha256[k] = (char)tolower((unsigned char)sha[k]);
        }
        at->sha256[64] = '\0';
        const msgpack_object *d = bf_mp_get(a, "data");
        if (d && d->type != MSGPACK_OBJECT_NIL) {
            const char *df = bf_req_field(r, af, "data");
            if (d->type != MSGPACK_OBJECT_BIN)
                return bf_req_fail(r, BF_E_INVALID, df, "%s must be binary (msgpack bin)", df);
            at->data = d->via.bin.size ? d->via.bin.ptr : "";
            at->data_len = d->via.bin.size;
            if ((int64_t)at->data_len != at->size)
                return bf_req_fail(r, BF_E_INVALID, sf, "%s says %lld bytes but data has %zu",
                                   sf, (long long)at->size, at->data_len);
            unsigned char md[EVP_MAX_MD_SIZE];
            unsigned int mdlen = 0;
            if (EVP_Digest(at->data, at->data_len, md, &mdlen, EVP_sha256(), NULL) != 1)
                return bf_req_fail(r, BF_E_INTERNAL, df, "cannot hash the data");
            char hex[65];
            for (unsigned k = 0; k < mdlen && k < 32; k++) snprintf(hex + 2 * k, 3, "%02x", md[k]);
            if (memcmp(hex, at->sha256, 64) != 0)
                return bf_req_fail(r, BF_E_INVALID, hf,
                                   "%s does not match the SHA-256 of the data sent", hf);
        }
        ev->n++;
    }
    return 0;
}

int tasks_evidence_store(bf_req_t *r, const tasks_evidence_t *ev, int64_t task_id,
                         const char *now, int64_t *evidence_id)
{
    const tasks_t *ts = tasks_of(r);
    if (task_id && ev->n > 0 && (ts->evidence_task_max_files > 0 || ts->evidence_task_max_bytes > 0)) {
        /* the quota per task: what its earlier submissions hold plus this
         * one (the caller holds the task's row lock, so two submissions
         * cannot both pass on the same figures) */
        const char *qp[] = {bf_req_itoa(r, task_id)};
        PGresult *q = bf_db_prep(r->db, "evidence_task_usage",
                                 "SELECT count(a.id) AS files, coalesce(sum(a.size), 0) AS bytes "
                                 "FROM evidence e JOIN attachment a ON a.evidence_id = e.id "
                                 "WHERE e.task_id = $1::bigint",
                                 1, qp, NULL, NULL);
        if (!q) return bf_req_db_fail(r);
        int64_t files = bf_db_int(q, 0, "files"), bytes = bf_db_int(q, 0, "bytes");
        PQclear(q);
        const char *f = "evidence.attachments";
        if (ts->evidence_task_max_files > 0 &&
            files + (int64_t)ev->n > ts->evidence_task_max_files) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXHAUSTED, f,
                               "%s: task %lld holds %lld attachments; %zu more is over the quota "
                               "of %lld per task (tasks.evidence_task_max_files)",
                               f, (long long)task_id, (long long)files, ev->n,
                               (long long)ts->evidence_task_max_files);
        }
        if (ts->evidence_task_max_bytes > 0 && bytes + ev->total_bytes > ts->evidence_task_max_bytes) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXHAUSTED, f,
                               "%s: task %lld holds %lld bytes of attachments; %lld more is over "
                               "the quota of %lld bytes per task (tasks.evidence_task_max_bytes)",
                               f, (long long)task_id, (long long)bytes, (long long)ev->total_bytes,
                               (long long)ts->evidence_task_max_bytes);
        }
    }
    const char *p[] = {task_id ? bf_req_itoa(r, task_id) : NULL, ev->text,
                       r->actor ? r->actor : "system", now};
    PGresult *res = bf_db_prep(r->db, "evidence_insert",
                               "INSERT INTO evidence (task_id, text, submitted_by, submitted_at) "
                               "VALUES ($1::bigint, $2, $3, $4::timestamptz) RETURNING id",
                               4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *evidence_id = bf_db_int(res, 0, "id");
    PQclear(res);
    for (size_t i = 0; i < ev->n; i++) {
        const tasks_attachment_t *a = &ev->att[i];
        const char *ap[] = {bf_req_itoa(r, *evidence_id), a->name, a->content_type,
                            bf_req_itoa(r, a->size), a->sha256, a->data};
        int lens[] = {0, 0, 0, 0, 0, (int)a->data_len};
        int fmts[] = {0, 0, 0, 0, 0, 1};
        res = bf_db_prep(r->db, "attachment_insert",
                         "INSERT INTO attachment (evidence_id, name, content_type, size, sha256, "
                         " data) VALUES ($1::bigint, $2, $3, $4::bigint, $5, $6::bytea)",
                         6, ap, lens, fmts);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    return 0;
}

/* ---------------------------------------------------------------- handlers */

int task_create(bf_req_t *r)
{
    tasks_new_task_t t;
    memset(&t, 0, sizeof t);
    int64_t team_id = 0, plan_id = 0;
    if (bf_req_str(r, r->params, NULL, "ref", false, TASKS_REF_MAX, &t.ref) < 0) return -1;
    if (tasks_text_param(r, r->params, NULL, "title", true, TASKS_TITLE_MAX, &t.title) != 0)
        return -1;
    if (bf_req_str(r, r->params, NULL, "description", false, TASKS_TEXT_MAX, &t.description) < 0)
        return -1;
    t.kind = "duty";
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_task_kinds, &t.kind) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "team_id", false, 1, INT64_MAX, &team_id) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "plan_id", false, 1, INT64_MAX, &plan_id) < 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "vetoing", false, &t.vetoing) < 0) return -1;
    if (tasks_due_param(r, r->params, NULL, "due", true, &t.due) != 0) return -1;
    if (tasks_owner_param(r, r->params, NULL, "owner", true, team_id, &t.owner, &t.copies) != 0)
        return -1;
    if (tasks_target_param(r, r->params, NULL, "target", false, &t.target, &t.copies) < 0)
        return -1;
    if (tasks_scope_write_code(r, t.copies.region_code, "target") != 0) return -1;
    if (plan_id) {
        const char *pp[] = {bf_req_itoa(r, plan_id)};
        PGresult *res = bf_db_prep(r->db, "task_plan_exists",
                                   "SELECT 1 FROM plan WHERE id = $1::bigint", 1, pp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res);
        PQclear(res);
        if (!found)
            return bf_req_fail(r, BF_E_NOT_FOUND, "plan_id", "no plan with id %lld",
                               (long long)plan_id);
        t.plan_id = plan_id;
    }
    int64_t id;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (tasks_insert_task(r, &t, false, &id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_full(r, id, NULL);
}

int task_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    return s_pack_full(r, id, "id");
}

int task_list(bf_req_t *r)
{
    const msgpack_object *m;
    const char *owner_kind = NULL, *target_kind = NULL, *target_code = NULL, *status = NULL;
    const char *kind = NULL, *due_from = NULL, *due_to = NULL;
    int64_t owner_id = 0, target_id = 0, schedule_id = 0, problem_id = 0, village_id = 0;
    int64_t timeline_id = 0, after, limit;
    bool overdue = false, has_overdue = false;
    if (bf_req_map(r, r->params, NULL, "owner", false, &m) == 0) {
        static const char *const keys[] = {"kind", "id", NULL};
        if (tasks_check_keys(r, m, "owner", keys) != 0) return -1;
        if (bf_req_enum(r, m, "owner", "kind", true, s_owner_kinds, &owner_kind) != 0) return -1;
        if (bf_req_int(r, m, "owner", "id", true, 1, INT64_MAX, &owner_id) != 0) return -1;
    } else if (r->err.code) {
        return -1;
    }
    if (bf_req_map(r, r->params, NULL, "target", false, &m) == 0) {
        static const char *const keys[] = {"kind", "id", "code", NULL};
        if (tasks_check_keys(r, m, "target", keys) != 0) return -1;
        if (bf_req_enum(r, m, "target", "kind", true, s_target_kinds, &target_kind) != 0)
            return -1;
        if (bf_req_int(r, m, "target", "id", false, 1, INT64_MAX, &target_id) < 0) return -1;
        if (bf_req_str(r, m, "target", "code", false, 12, &target_code) < 0) return -1;
    } else if (r->err.code) {
        return -1;
    }
    if (bf_req_enum(r, r->params, NULL, "status", false, s_statuses, &status) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_task_kinds, &kind) < 0) return -1;
    int rc = bf_req_bool(r, r->params, NULL, "overdue", false, &overdue);
    if (rc < 0) return -1;
    has_overdue = rc == 0;
    if (tasks_from_param(r, r->params, NULL, "due_from", false, &due_from) < 0) return -1;
    if (tasks_due_param(r, r->params, NULL, "due_to", false, &due_to) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "schedule_id", false, 1, INT64_MAX, &schedule_id) < 0 ||
        bf_req_int(r, r->params, NULL, "problem_id", false, 1, INT64_MAX, &problem_id) < 0 ||
        bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village_id) < 0 ||
        bf_req_int(r, r->params, NULL, "timeline_id", false, 1, INT64_MAX, &timeline_id) < 0)
        return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *p[] = {now,
                       tasks_of(r)->timezone,
                       owner_kind,
                       s_id_or_null(r, owner_id),
                       target_kind,
                       s_id_or_null(r, target_id),
                       target_code,
                       status,
                       has_overdue ? (overdue ? "true" : "false") : NULL,
                       due_from,
                       due_to,
                       kind,
                       s_id_or_null(r, schedule_id),
                       s_id_or_null(r, problem_id),
                       s_id_or_null(r, village_id),
                       s_id_or_null(r, timeline_id),
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1),
                       bf_req_region_prefix(r),
                       tasks_scope_cadre_param(r)};
    char sql[4096];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM task t WHERE ($3::text IS NULL OR t.owner_kind = $3) "
             " AND ($4::bigint IS NULL OR t.owner_id = $4) "
             " AND ($5::text IS NULL OR t.target_kind = $5) "
             " AND ($6::bigint IS NULL OR t.target_id = $6) "
             " AND ($7::text IS NULL OR t.target_code = $7) "
             " AND ($8::text IS NULL OR t.status = $8) "
             " AND ($9::boolean IS NULL OR "
             "      (t.status <> 'closed' AND t.due_at < $1::timestamptz) = $9) "
             " AND ($10::timestamptz IS NULL OR t.due_at >= $10) "
             " AND ($11::timestamptz IS NULL OR t.due_at <= $11) "
             " AND ($12::text IS NULL OR t.kind = $12) "
             " AND ($13::bigint IS NULL OR t.schedule_id = $13) "
             " AND ($14::bigint IS NULL OR t.problem_id = $14) "
             " AND ($15::bigint IS NULL OR t.village_id = $15) "
             " AND ($16::bigint IS NULL OR t.timeline_id = $16) "
             " AND ($19::text IS NULL OR t.region_code LIKE $19 || '%%') "
             " AND ($20::bigint IS NULL OR (t.owner_kind = 'cadre' AND t.owner_id = $20)) "
             " AND t.id > $17::bigint ORDER BY t.id LIMIT $18::int",
             TASKS_TASK_COLS);
    PGresult *res = bf_db_prep(r->db, "task_list", sql, 20, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) tasks_pack_task(r->out, res, i);
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}

/* ---------------------------------------------------------------- moves */

/* Is the actor the owner (or, for a cadre actor, a member of the owning team
 * or unit)? 1 yes, 0 no, -1 request failed (registry unreachable). */
static int s_actor_is_owner(bf_req_t *r, const char *okind, int64_t oid)
{
    const char *a = r->actor;
    const char *colon = a ? strchr(a, ':') : NULL;
    if (!colon) return 0;
    size_t kl = (size_t)(colon - a);
    char *end;
    long long aid = strtoll(colon + 1, &end, 10);
    if (*end || aid <= 0) return 0;
    char akind[16];
    if (kl >= sizeof akind) return 0;
    memcpy(akind, a, kl);
    akind[kl] = '\0';
    if (!strcmp(akind, okind) && aid == oid) return 1;
    if (strcmp(akind, "cadre") != 0) return 0;
    if (!strcmp(okind, "team")) {
        int64_t *ids;
        size_t n;
        if (tasks_registry_team_members(r, oid, "id", &ids, &n) != 0) return -1;
        for (size_t i = 0; i < n; i++)
            if (ids[i] == aid) return 1;
        return 0;
    }
    if (!strcmp(okind, "unit")) {
        tasks_entity_t f;
        if (tasks_registry_check(r, "cadre", aid, "actor", &f) != 0) {
            if (r->err.code && !strcmp(r->err.code, BF_E_NOT_FOUND)) {
                memset(&r->err, 0, sizeof r->err); /* an unknown cadre owns nothing */
                return 0;
            }
            return -1;
        }
        return f.unit_id == oid;
    }
    return 0;
}

typedef struct {
    const char *verb;            /* event verb: started, submitted, verified, rejected */
    const char *const *from;     /* allowed current statuses */
    const char *to;
    bool reviewer;               /* the actor must not be the owner */
} s_move_t;

/* Fails the request with failed_precondition naming the current status. */
static int s_refuse(bf_req_t *r, const s_move_t *mv, int64_t id, const char *status)
{
    char list[96] = "";
    size_t n = 0;
    for (const char *const *f = mv->from; *f; f++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? " or " : "", *f);
    return bf_req_fail(r, BF_E_PRECONDITION, "status",
                       "task %lld is %s; it can be %s only when %s", (long long)id, status,
                       mv->verb, list);
}

static bool s_from_ok(const s_move_t *mv, const char *status)
{
    for (const char *const *f = mv->from; *f; f++)
        if (!strcmp(*f, status)) return true;
    return false;
}

static int s_move(bf_req_t *r, const s_move_t *mv, const char *note,
                  const tasks_evidence_t *ev)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (tasks_scope_task(r, id, true, "id") != 0) return -1;
    const char *ids = bf_req_itoa(r, id);
    const char *p1[] = {ids};
    PGresult *res = bf_db_prep(r->db, "task_owner",
                               "SELECT owner_kind, owner_id, status FROM task "
                               "WHERE id = $1::bigint",
                               1, p1, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no task with id %lld", (long long)id);
    }
    char okind[16], status[16];
    snprintf(okind, sizeof okind, "%s", bf_db_str(res, 0, "owner_kind"));
    snprintf(status, sizeof status, "%s", bf_db_str(res, 0, "status"));
    int64_t oid = bf_db_int(res, 0, "owner_id");
    PQclear(res);
    if (!s_from_ok(mv, status)) return s_refuse(r, mv, id, status);
    if (mv->reviewer) {
        /* before taking the row lock: this may ask the registry */
        int own = s_actor_is_owner(r, okind, oid);
        if (own < 0) return -1;
        if (own)
            return bf_req_fail(r, BF_E_PERMISSION, "actor",
                               "%s owns task %lld (%s:%lld) and cannot review it: the closer is "
                               "never the owner",
                               r->actor, (long long)id, okind, (long long)oid);
    }
    const char *now = tasks_now(r);
    if (!now) return -1;

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    res = bf_db_prep(r->db, "task_lock",
                     "SELECT status, problem_id FROM task WHERE id = $1::bigint FOR UPDATE", 1,
                     p1, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    snprintf(status, sizeof status, "%s", bf_db_str(res, 0, "status"));
    int64_t problem_id = bf_db_int(res, 0, "problem_id");
    PQclear(res);
    if (!s_from_ok(mv, status)) { /* moved by someone else meanwhile */
        bf_db_rollback(r->db);
        return s_refuse(r, mv, id, status);
    }
    int64_t evidence_id = 0;
    if (ev && tasks_evidence_store(r, ev, id, now, &evidence_id) != 0) return -1;
    const char *p2[] = {ids, mv->to, now, r->actor, note};
    res = bf_db_prep(
        r->db, "task_move",
        "UPDATE task SET status = $2, updated_at = $3::timestamptz, "
        " started_at = CASE WHEN $2 = 'in_progress' AND started_at IS NULL "
        "   THEN $3::timestamptz ELSE started_at END, "
        " submitted_at = CASE WHEN $2 = 'submitted' THEN $3::timestamptz ELSE submitted_at END, "
        " submissions = submissions + CASE WHEN $2 = 'submitted' THEN 1 ELSE 0 END, "
        " reject_reason = CASE WHEN $2 = 'rejected' THEN $5 ELSE reject_reason END, "
        " closed_at = CASE WHEN $2 = 'closed' THEN $3::timestamptz ELSE closed_at END, "
        " closed_by = CASE WHEN $2 = 'closed' THEN $4 ELSE closed_by END "
        "WHERE id = $1::bigint",
        5, p2, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *p3[] = {ids, status, mv->to, r->actor, note, now};
    res = bf_db_prep(r->db, "task_history_move",
                     "INSERT INTO task_history (task_id, from_status, to_status, actor, note, at) "
                     "VALUES ($1::bigint, $2, $3, $4, $5, $6::timestamptz)",
                     6, p3, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    const char *p4[] = {now, tasks_of(r)->timezone, ids};
    char sql[2048];
    snprintf(sql, sizeof sql, "SELECT %s FROM task t WHERE t.id = $3::bigint", TASKS_TASK_COLS);
    res = bf_db_prep(r->db, "task_get", sql, 3, p4, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    bf_event_t e;
    msgpack_packer *pk = bf_event_begin(&e);
    int extra = 2 + (note ? 1 : 0) + (evidence_id ? 2 : 0) + (problem_id ? 1 : 0);
    tasks_pack_task_event(pk, res, 0, extra);
    bf_mp_kv_str(pk, "from", status);
    bf_mp_kv_str(pk, "actor", r->actor);
    if (note) bf_mp_kv_str(pk, !strcmp(mv->to, "rejected") ? "reason" : "note", note);
    if (evidence_id) {
        bf_mp_kv_int(pk, "evidence_id", evidence_id);
        bf_mp_kv_int(pk, "attachments", (int64_t)ev->n);
    }
    if (problem_id) bf_mp_kv_int(pk, "problem_id", problem_id);
    PQclear(res);
    char what[48];
    snprintf(what, sizeof what, "task.%s", mv->verb);
    if (tasks_emit(r, &e, what, "task", id) != 0) return -1;
    if (problem_id && !strcmp(mv->to, "closed") && tasks_problem_maybe_close(r, problem_id) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_full(r, id, NULL);
}

int task_start(bf_req_t *r)
{
    static const char *const from[] = {"open", "rejected", NULL};
    static const s_move_t mv = {"started", from, "in_progress", false};
    return s_move(r, &mv, NULL, NULL);
}

int task_submit(bf_req_t *r)
{
    static const char *const from[] = {"in_progress", NULL};
    static const s_move_t mv = {"submitted", from, "submitted", false};
    tasks_evidence_t ev;
    if (tasks_evidence_param(r, r->params, "evidence", true, &ev) != 0) return -1;
    return s_move(r, &mv, NULL, &ev);
}

int task_verify(bf_req_t *r)
{
    static const char *const from[] = {"submitted", NULL};
    static const s_move_t mv = {"verified", from, "closed", true};
    const char *note = NULL;
    if (bf_req_str(r, r->params, NULL, "note", false, TASKS_TEXT_MAX, &note) < 0) return -1;
    return s_move(r, &mv, note, NULL);
}

int task_reject(bf_req_t *r)
{
    static const char *const from[] = {"submitted", NULL};
    static const s_move_t mv = {"rejected", from, "rejected", true};
    const char *reason;
    if (tasks_text_param(r, r->params, NULL, "reason", true, TASKS_TEXT_MAX, &reason) != 0)
        return -1;
    return s_move(r, &mv, reason, NULL);
}

static int s_nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return 0;
}

int attachment_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    /* one statement: the attachment with its task's scope columns (an
     * attachment is seen by those who see its task; evidence of a monitoring
     * report has no task, so only unscoped callers see it) */
    PGresult *res = bf_db_prep(r->db, "attachment_get1",
                               "SELECT a.id::text AS id, a.evidence_id::text AS evidence_id, "
                               " e.task_id::text AS task_id, a.name, a.content_type, "
                               " a.size::text AS size, a.sha256::text AS sha256, "
                               " encode(a.data, 'hex') AS data_hex, "
                               " t.region_code, t.owner_kind, t.owner_id "
                               "FROM attachment a JOIN evidence e ON e.id = a.evidence_id "
                               "LEFT JOIN task t ON t.id = e.task_id "
                               "WHERE a.id = $1::bigint",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0 || !tasks_scope_task_row(r, res, 0)) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no attachment with id %lld", (long long)id);
    }
    tasks_map_t m;
    tasks_map_begin(&m);
    tm_int(&m, "id", id);
    tm_col_int(&m, "evidence_id", res, 0, "evidence_id");
    tm_col_int(&m, "task_id", res, 0, "task_id");
    tm_col_str(&m, "name", res, 0, "name");
    tm_col_str(&m, "content_type", res, 0, "content_type");
    tm_col_int(&m, "size", res, 0, "size");
    tm_col_str(&m, "sha256", res, 0, "sha256");
    tm_key(&m, "data");
    const char *hex = bf_db_str(res, 0, "data_hex");
    if (!hex) {
        msgpack_pack_nil(tm_pk(&m));
    } else {
        size_t hl = strlen(hex) / 2;
        msgpack_pack_bin(tm_pk(&m), hl);
        /* decode in small chunks straight into the packer */
        char chunk[4096];
        for (size_t i = 0; i < hl;) {
            size_t k = 0;
            for (; k < sizeof chunk && i < hl; k++, i++)
                chunk[k] = (char)((s_nibble(hex[2 * i]) << 4) | s_nibble(hex[2 * i + 1]));
            msgpack_pack_bin_body(tm_pk(&m), chunk, k);
        }
    }
    tasks_map_end(&m, r->out);
    PQclear(res);
    return 0;
}
