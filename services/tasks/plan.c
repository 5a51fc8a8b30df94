/* plan.c: plans and their sign-off.
 *
 * A 3-year plan and yearly plans per unit or village, and a one-household-
 * one-policy plan (一户一策) per household, each with measures (what, by whom,
 * by when, cost). draft -> submitted -> signed: the last of the configured
 * signers (tasks.plan_signers; seed 001: township secretary, township head,
 * county leader) makes it signed; each signature is a recorded act (who,
 * which role, when); one role signs once, one actor signs one role. A signed
 * plan changes only through plan.revise: a new revision row, back to draft,
 * the old one kept and pointing at its successor.
 */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_kinds[] = {"three_year", "yearly", "household", NULL};
static const char *const s_subject_kinds[] = {"unit", "village", "household", NULL};
static const char *const s_statuses[] = {"draft", "submitted", "signed", NULL};

typedef struct {
    const char *what, *due;
    tasks_owner_t owner;
    int64_t cost_fen; /* -1 = none */
} s_measure_t;

/* Reads and checks the measures list (owners against the registry). */
static int s_measures(bf_req_t *r, s_measure_t **out, size_t *n)
{
    const msgpack_object_array *list = NULL;
    *out = NULL;
    *n = 0;
    if (bf_req_list(r, r->params, NULL, "measures", false, 200, &list) < 0) return -1;
    if (!list) return 1;
    s_measure_t *ms = bf_arena_alloc(r->arena, sizeof *ms * (list->size ? list->size : 1));
    if (!ms) return bf_req_fail(r, BF_E_EXHAUSTED, "measures", "out of memory");
    static const char *const keys[] = {"what", "owner", "due", "cost_fen", NULL};
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *m = &list->ptr[i];
        const char *f = bf_arena_printf(r->arena, "measures[%u]", i);
        if (m->type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be a map", f);
        if (tasks_check_keys(r, m, f, keys) != 0) return -1;
        s_measure_t *x = &ms[i];
        memset(x, 0, sizeof *x);
        x->cost_fen = -1;
        if (tasks_text_param(r, m, f, "what", true, 2000, &x->what) != 0) return -1;
        if (tasks_date_param(r, m, f, "due", false, &x->due) < 0) return -1;
        if (bf_req_int(r, m, f, "cost_fen", false, 0, INT64_MAX, &x->cost_fen) < 0) return -1;
        if (tasks_owner_param(r, m, f, "owner", false, 0, &x->owner, NULL) < 0) return -1;
    }
    *out = ms;
    *n = list->size;
    return 0;
}

static int s_insert_measures(bf_req_t *r, int64_t plan_id, const s_measure_t *ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p[] = {bf_req_itoa(r, plan_id),
                           bf_req_itoa(r, (int64_t)i + 1),
                           ms[i].what,
                           ms[i].owner.kind,
                           ms[i].owner.kind ? bf_req_itoa(r, ms[i].owner.id) : NULL,
                           ms[i].due,
                           ms[i].cost_fen >= 0 ? bf_req_itoa(r, ms[i].cost_fen) : NULL};
        PGresult *res = bf_db_prep(r->db, "plan_measure_insert",
                                   "INSERT INTO plan_measure (plan_id, seq, what, owner_kind, "
                                   " owner_id, due_on, cost_fen) VALUES ($1::bigint, $2::int, "
                                   " $3, $4, $5::bigint, $6::date, $7::bigint)",
                                   7, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    return 0;
}

/* The configured signers as a PostgreSQL text array literal (arena). */
static const char *s_signers_array(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    size_t cap = 3;
    for (int k = 0; k < ts->nsigners; k++) cap += 2 * strlen(ts->signers[k]) + 3;
    char *out = bf_arena_alloc(r->arena, cap), *o = out;
    if (!out) return NULL;
    *o++ = '{';
    for (int k = 0; k < ts->nsigners; k++) {
        if (k) *o++ = ',';
        *o++ = '"';
        for (const char *c = ts->signers[k]; *c; c++) {
            if (*c == '"' || *c == '\\') *o++ = '\\';
            *o++ = *c;
        }
        *o++ = '"';
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

/* Packs plan id with measures, signatures, missing signers (the configured
 * signers, in their order, that have not signed) and revisions, read in ONE
 * statement whose lists are JSON arrays in the reply's keys and order
 * (tm_json_list). With read_field set (plan.get) the region scope is checked
 * on the plan's subject (s_plan_scope's rule, over the registry, not SQL). */
static int s_pack_plan_scoped(bf_req_t *r, int64_t id, const char *read_field)
{
    const char *signers = s_signers_array(r);
    if (!signers) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    const char *p[] = {bf_req_itoa(r, id), signers};
    PGresult *pl = bf_db_prep(
        r->db, "plan_get_full",
        "SELECT p.id, p.root_id, p.revision, p.kind, p.subject_kind, p.subject_id, p.title, "
        " p.year_from, p.year_to, p.status, p.revise_reason, p.superseded_by, p.created_by, "
        " rfc3339(p.created_at) AS created_at, rfc3339(p.submitted_at) AS submitted_at, "
        " rfc3339(p.signed_at) AS signed_at, "
        " (SELECT json_agg(json_build_object('seq', x.seq, 'what', x.what, 'owner', "
        "    CASE WHEN x.owner_kind IS NULL THEN NULL ELSE json_build_object('kind', "
        "      x.owner_kind, 'id', COALESCE(x.owner_id, 0)) END, "
        "    'due', x.due_on::text, 'cost_fen', x.cost_fen) ORDER BY x.seq)::text "
        "  FROM plan_measure x WHERE x.plan_id = p.id) AS measures, "
        " (SELECT json_agg(json_build_object('role', g.role, 'actor', g.actor, 'note', g.note, "
        "    'signed_at', rfc3339(g.signed_at)) ORDER BY g.seq)::text "
        "  FROM plan_signature g WHERE g.plan_id = p.id) AS signatures, "
        " (SELECT json_agg(u.role ORDER BY u.k)::text "
        "  FROM unnest($2::text[]) WITH ORDINALITY u(role, k) WHERE NOT EXISTS ( "
        "    SELECT 1 FROM plan_signature g WHERE g.plan_id = p.id AND g.role = u.role)) "
        "  AS missing_signers, "
        " (SELECT json_agg(json_build_object('id', v.id, 'revision', v.revision, "
        "    'status', v.status) ORDER BY v.revision)::text "
        "  FROM plan v WHERE v.root_id = p.root_id) AS revisions "
        "FROM plan p WHERE p.id = $1::bigint",
        2, p, NULL, NULL);
    if (!pl) return bf_req_db_fail(r);
    if (PQntuples(pl) == 0) {
        PQclear(pl);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no plan with id %lld", (long long)id);
    }
    if (read_field && r->region && *r->region) {
        char kind[16];
        snprintf(kind, sizeof kind, "%s", bf_db_str(pl, 0, "subject_kind"));
        if (tasks_scope_subject(r, kind, bf_db_int(pl, 0, "subject_id"), false, read_field) !=
            0) {
            PQclear(pl);
            if (strcmp(r->err.code, BF_E_NOT_FOUND) != 0) return -1;
            memset(&r->err, 0, sizeof r->err);
            return bf_req_fail(r, BF_E_NOT_FOUND, read_field, "no plan with id %lld",
                               (long long)id);
        }
    }
    tasks_map_t m;
    tasks_map_begin(&m);
    msgpack_packer *pk = tm_pk(&m);
    tm_int(&m, "id", id);
    tm_col_int(&m, "root_id", pl, 0, "root_id");
    tm_col_int(&m, "revision", pl, 0, "revision");
    tm_col_str(&m, "kind", pl, 0, "kind");
    tm_key(&m, "subject");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", bf_db_str(pl, 0, "subject_kind"));
    bf_mp_kv_int(pk, "id", bf_db_int(pl, 0, "subject_id"));
    tm_col_str(&m, "title", pl, 0, "title");
    tm_col_int(&m, "year_from", pl, 0, "year_from");
    tm_col_int(&m, "year_to", pl, 0, "year_to");
    tm_col_str(&m, "status", pl, 0, "status");
    tm_bool(&m, "current", bf_db_null(pl, 0, "superseded_by"));
    tm_col_int(&m, "superseded_by", pl, 0, "superseded_by");
    tm_col_str(&m, "revise_reason", pl, 0, "revise_reason");
    tm_col_str(&m, "created_by", pl, 0, "created_by");
    tm_col_str(&m, "created_at", pl, 0, "created_at");
    tm_col_str(&m, "submitted_at", pl, 0, "submitted_at");
    tm_col_str(&m, "signed_at", pl, 0, "signed_at");
    int rc = 0;
    if (tm_json_list(r, &m, "measures", pl, 0, "measures") != 0 ||
        tm_json_list(r, &m, "signatures", pl, 0, "signatures") != 0 ||
        tm_json_list(r, &m, "missing_signers", pl, 0, "missing_signers") != 0 ||
        tm_json_list(r, &m, "revisions", pl, 0, "revisions") != 0)
        rc = -1;
    PQclear(pl);
    if (rc != 0) {
        msgpack_sbuffer_destroy(&m.buf);
        return -1;
    }
    tasks_map_end(&m, r->out);
    return 0;
}

/* Packs plan id (the writes' reply). */
static int s_pack_plan(bf_req_t *r, int64_t id) { return s_pack_plan_scoped(r, id, NULL); }

/* Region scoping of an existing plan: its subject must lie under a
 * region-bound caller's region (tasks_scope_subject). An unknown plan passes,
 * for the caller to answer not_found. 0 or -1. */
static int s_plan_scope(bf_req_t *r, int64_t id, bool write)
{
    if (!r->region || !*r->region) return 0;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "plan_subject",
                               "SELECT subject_kind, subject_id FROM plan WHERE id = $1::bigint",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    char kind[16];
    snprintf(kind, sizeof kind, "%s", bf_db_str(res, 0, "subject_kind"));
    int64_t sid = bf_db_int(res, 0, "subject_id");
    PQclear(res);
    if (tasks_scope_subject(r, kind, sid, write, "id") == 0) return 0;
    if (!write && !strcmp(r->err.code, BF_E_NOT_FOUND)) {
        memset(&r->err, 0, sizeof r->err);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no plan with id %lld", (long long)id);
    }
    return -1;
}

int plan_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    return s_pack_plan_scoped(r, id, "id");
}

int plan_create(bf_req_t *r)
{
    const char *kind, *title, *skind;
    int64_t year, sid;
    const msgpack_object *subject;
    if (bf_req_enum(r, r->params, NULL, "kind", true, s_kinds, &kind) != 0) return -1;
    if (tasks_text_param(r, r->params, NULL, "title", true, TASKS_TITLE_MAX, &title) != 0)
        return -1;
    if (bf_req_int(r, r->params, NULL, "year", true, 2000, 2100, &year) != 0) return -1;
    if (bf_req_map(r, r->params, NULL, "subject", true, &subject) != 0) return -1;
    static const char *const keys[] = {"kind", "id", NULL};
    if (tasks_check_keys(r, subject, "subject", keys) != 0) return -1;
    if (bf_req_enum(r, subject, "subject", "kind", true, s_subject_kinds, &skind) != 0) return -1;
    if (bf_req_int(r, subject, "subject", "id", true, 1, INT64_MAX, &sid) != 0) return -1;
    if (!strcmp(kind, "household") != !strcmp(skind, "household"))
        return bf_req_fail(r, BF_E_INVALID, "subject.kind",
                           "a household plan (一户一策) is for a household; three_year and yearly "
                           "plans are for a unit or a village");
    s_measure_t *ms;
    size_t nms;
    if (s_measures(r, &ms, &nms) < 0) return -1;
    if (tasks_registry_check(r, skind, sid, "subject.id", NULL) != 0) return -1;
    if (tasks_scope_subject(r, skind, sid, true, "subject") != 0) return -1;
    int64_t year_to = !strcmp(kind, "three_year") ? year + 2 : year;

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {kind, skind, bf_req_itoa(r, sid), title, bf_req_itoa(r, year),
                       bf_req_itoa(r, year_to), r->actor};
    PGresult *res = bf_db_prep(
        r->db, "plan_insert",
        "INSERT INTO plan (id, root_id, revision, kind, subject_kind, subject_id, title, "
        " year_from, year_to, created_by) "
        "SELECT n, n, 1, $1, $2, $3::bigint, $4, $5::int, $6::int, $7 "
        "FROM (SELECT nextval(pg_get_serial_sequence('plan', 'id')) AS n) s RETURNING id",
        7, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "subject",
                               "a %s plan for %s %lld from %lld exists (change it with "
                               "plan.revise)",
                               kind, skind, (long long)sid, (long long)year);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    if (s_insert_measures(r, id, ms, nms) != 0) return -1;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 7);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "kind", kind);
    bf_mp_key(pk, "subject");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", skind);
    bf_mp_kv_int(pk, "id", sid);
    bf_mp_kv_str(pk, "title", title);
    bf_mp_kv_int(pk, "year_from", year);
    bf_mp_kv_int(pk, "year_to", year_to);
    bf_mp_kv_int(pk, "measures", (int64_t)nms);
    if (tasks_emit(r, &ev, "plan.created", "plan", id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_plan(r, id);
}

/* Locks plan id in the open transaction; fills status and whether it is the
 * current revision. 0, or -1 with the request failed (not_found). */
static int s_lock(bf_req_t *r, int64_t id, char status[16], bool *current, int64_t *root,
                  int *revision)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "plan_lock",
                               "SELECT status, superseded_by IS NULL AS current, root_id, "
                               " revision FROM plan WHERE id = $1::bigint FOR UPDATE",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no plan with id %lld", (long long)id);
    }
    snprintf(status, 16, "%s", bf_db_str(res, 0, "status"));
    *current = bf_db_bool(res, 0, "current");
    if (root) *root = bf_db_int(res, 0, "root_id");
    if (revision) *revision = (int)bf_db_int(res, 0, "revision");
    PQclear(res);
    return 0;
}

int plan_submit(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (s_plan_scope(r, id, true) != 0) return -1;
    const char *now = tasks_now(r);
    if (!now) return -1;
    char status[16];
    bool current;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_lock(r, id, status, &current, NULL, NULL) != 0) return -1;
    if (strcmp(status, "draft") != 0) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "status",
                           "plan %lld is %s; only a draft can be submitted", (long long)id,
                           status);
    }
    const char *p[] = {bf_req_itoa(r, id), r->actor, now};
    PGresult *res = bf_db_prep(r->db, "plan_submit",
                               "UPDATE plan SET status = 'submitted', submitted_by = $2, "
                               " submitted_at = $3::timestamptz WHERE id = $1::bigint",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_key(pk, "signers_needed");
    const tasks_t *ts = tasks_of(r);
    msgpack_pack_array(pk, (size_t)ts->nsigners);
    for (int k = 0; k < ts->nsigners; k++) bf_mp_str(pk, ts->signers[k]);
    if (tasks_emit(r, &ev, "plan.submitted", "plan", id) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_plan(r, id);
}

int plan_sign(bf_req_t *r)
{
    const tasks_t *ts = tasks_of(r);
    int64_t id;
    const char *role, *note = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (s_plan_scope(r, id, true) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "role", true, 48, &role) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "note", false, TASKS_TEXT_MAX, &note) < 0) return -1;
    bool known = false;
    for (int k = 0; k < ts->nsigners && !known; k++) known = !strcmp(ts->signers[k], role);
    if (!known) {
        char list[400] = "";
        size_t n = 0;
        for (int k = 0; k < ts->nsigners; k++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", k ? ", " : "",
                                  ts->signers[k]);
        return bf_req_fail(r, BF_E_INVALID, "role", "role must be one of: %s", list);
    }
    const char *now = tasks_now(r);
    if (!now) return -1;
    char status[16];
    bool current;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_lock(r, id, status, &current, NULL, NULL) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), role, r->actor};
    PGresult *res = bf_db_prep(r->db, "plan_sig_find",
                               "SELECT role, actor FROM plan_signature WHERE plan_id = $1::bigint "
                               " AND (role = $2 OR actor = $3)",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    for (int i = 0; i < PQntuples(res); i++) {
        if (!strcmp(bf_db_str(res, i, "role"), role)) {
            char who[BF_RPC_MAX_ACTOR + 1];
            snprintf(who, sizeof who, "%s", bf_db_str(res, i, "actor"));
            PQclear(res);
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "role", "plan %lld is already signed as %s (by %s)",
                               (long long)id, role, who);
        }
    }
    if (PQntuples(res) > 0) {
        char other[64];
        snprintf(other, sizeof other, "%s", bf_db_str(res, 0, "role"));
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "actor",
                           "%s already signed plan %lld as %s; each role is a different person",
                           r->actor, (long long)id, other);
    }
    PQclear(res);
    if (strcmp(status, "submitted") != 0) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "status",
                           "plan %lld is %s; only a submitted plan is signed", (long long)id,
                           status);
    }
    const char *ip[] = {bf_req_itoa(r, id), role, r->actor, note, now};
    res = bf_db_prep(r->db, "plan_sig_insert",
                     "INSERT INTO plan_signature (plan_id, role, actor, note, signed_at) "
                     "VALUES ($1::bigint, $2, $3, $4, $5::timestamptz)",
                     5, ip, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    res = bf_db_prep(r->db, "plan_sig_roles",
                     "SELECT role FROM plan_signature WHERE plan_id = $1::bigint", 1, ip, NULL,
                     NULL);
    if (!res) return bf_req_db_fail(r);
    int have = 0;
    bool has[TASKS_MAX_SIGNERS] = {false};
    for (int k = 0; k < ts->nsigners; k++) {
        for (int i = 0; i < PQntuples(res) && !has[k]; i++)
            has[k] = !strcmp(bf_db_str(res, i, "role"), ts->signers[k]);
        if (has[k]) have++;
    }
    PQclear(res);
    bool complete = have == ts->nsigners;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_str(pk, "role", role);
    bf_mp_kv_str(pk, "signer", r->actor);
    bf_mp_kv_bool(pk, "complete", complete);
    bf_mp_key(pk, "missing");
    msgpack_pack_array(pk, (size_t)(ts->nsigners - have));
    for (int k = 0; k < ts->nsigners; k++)
        if (!has[k]) bf_mp_str(pk, ts->signers[k]);
    if (tasks_emit(r, &ev, "plan.signature_added", "plan", id) != 0) return -1;
    if (complete) {
        const char *sp[] = {bf_req_itoa(r, id), now};
        res = bf_db_prep(r->db, "plan_signed",
                         "UPDATE plan SET status = 'signed', signed_at = $2::timestamptz "
                         "WHERE id = $1::bigint",
                         2, sp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 2);
        bf_mp_kv_int(pk, "id", id);
        bf_mp_key(pk, "roles");
        msgpack_pack_array(pk, (size_t)ts->nsigners);
        for (int k = 0; k < ts->nsigners; k++) bf_mp_str(pk, ts->signers[k]);
        if (tasks_emit(r, &ev, "plan.signed", "plan", id) != 0) return -1;
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_plan(r, id);
}

int plan_revise(bf_req_t *r)
{
    int64_t id;
    const char *reason, *title = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (s_plan_scope(r, id, true) != 0) return -1;
    if (tasks_text_param(r, r->params, NULL, "reason", true, TASKS_TEXT_MAX, &reason) != 0)
        return -1;
    if (tasks_text_param(r, r->params, NULL, "title", false, TASKS_TITLE_MAX, &title) < 0)
        return -1;
    s_measure_t *ms;
    size_t nms;
    int has_measures = s_measures(r, &ms, &nms);
    if (has_measures < 0) return -1;
    char status[16];
    bool current;
    int64_t root;
    int revision;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_lock(r, id, status, &current, &root, &revision) != 0) return -1;
    if (!current) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "id",
                           "plan %lld is an old revision; revise the current one", (long long)id);
    }
    if (strcmp(status, "signed") != 0) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "status",
                           "plan %lld is %s; only a signed plan is revised", (long long)id,
                           status);
    }
    const char *p[] = {bf_req_itoa(r, id), title, reason, r->actor};
    PGresult *res = bf_db_prep(
        r->db, "plan_revise",
        "INSERT INTO plan (root_id, revision, kind, subject_kind, subject_id, title, year_from, "
        " year_to, revise_reason, created_by) "
        "SELECT root_id, revision + 1, kind, subject_kind, subject_id, COALESCE($2, title), "
        " year_from, year_to, $3, $4 FROM plan WHERE id = $1::bigint RETURNING id",
        4, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t nid = bf_db_int(res, 0, "id");
    PQclear(res);
    const char *up[] = {bf_req_itoa(r, id), bf_req_itoa(r, nid)};
    res = bf_db_prep(r->db, "plan_supersede",
                     "UPDATE plan SET superseded_by = $2::bigint WHERE id = $1::bigint", 2, up,
                     NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    if (has_measures == 0) {
        if (s_insert_measures(r, nid, ms, nms) != 0) return -1;
    } else {
        res = bf_db_prep(r->db, "plan_copy_measures",
                         "INSERT INTO plan_measure (plan_id, seq, what, owner_kind, owner_id, "
                         " due_on, cost_fen) SELECT $2::bigint, seq, what, owner_kind, owner_id, "
                         " due_on, cost_fen FROM plan_measure WHERE plan_id = $1::bigint",
                         2, up, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "id", nid);
    bf_mp_kv_int(pk, "previous_id", id);
    bf_mp_kv_int(pk, "root_id", root);
    bf_mp_kv_int(pk, "revision", revision + 1);
    bf_mp_kv_str(pk, "reason", reason);
    if (tasks_emit(r, &ev, "plan.revised", "plan", nid) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return s_pack_plan(r, nid);
}

int plan_list(bf_req_t *r)
{
    const msgpack_object *subject = NULL;
    const char *skind = NULL, *kind = NULL, *status = NULL;
    int64_t sid = 0, after, limit;
    bool current = true;
    if (bf_req_map(r, r->params, NULL, "subject", false, &subject) < 0) return -1;
    if (subject) {
        static const char *const keys[] = {"kind", "id", NULL};
        if (tasks_check_keys(r, subject, "subject", keys) != 0) return -1;
        if (bf_req_enum(r, subject, "subject", "kind", true, s_subject_kinds, &skind) != 0)
            return -1;
        if (bf_req_int(r, subject, "subject", "id", true, 1, INT64_MAX, &sid) != 0) return -1;
    }
    /* plans carry no region: a region-bound caller lists one subject under it */
    if (r->region && *r->region) {
        if (!subject)
            return bf_req_fail(r, BF_E_PERMISSION, "subject",
                               "the caller is bound to region %s: name a village or household "
                               "under it as subject",
                               r->region);
        if (tasks_scope_subject(r, skind, sid, true, "subject") != 0) return -1;
    }
    if (bf_req_enum(r, r->params, NULL, "kind", false, s_kinds, &kind) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, s_statuses, &status) < 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "current", false, &current) < 0) return -1;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    const char *p[] = {skind,
                       sid ? bf_req_itoa(r, sid) : NULL,
                       kind,
                       status,
                       current ? "true" : "false",
                       bf_req_itoa(r, after),
                       bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "plan_list",
        "SELECT id, root_id, revision, kind, subject_kind, subject_id, title, year_from, "
        " year_to, status, superseded_by FROM plan "
        "WHERE ($1::text IS NULL OR subject_kind = $1) AND ($2::bigint IS NULL OR subject_id = $2)"
        " AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR status = $4) "
        " AND (NOT $5::boolean OR superseded_by IS NULL) AND id > $6::bigint "
        "ORDER BY id LIMIT $7::int",
        7, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 10);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
        bf_mp_kv_int(r->out, "root_id", bf_db_int(res, i, "root_id"));
        bf_mp_kv_int(r->out, "revision", bf_db_int(res, i, "revision"));
        bf_mp_kv_str(r->out, "kind", bf_db_str(res, i, "kind"));
        bf_mp_key(r->out, "subject");
        msgpack_pack_map(r->out, 2);
        bf_mp_kv_str(r->out, "kind", bf_db_str(res, i, "subject_kind"));
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "subject_id"));
        bf_mp_kv_str(r->out, "title", bf_db_str(res, i, "title"));
        bf_mp_kv_int(r->out, "year_from", bf_db_int(res, i, "year_from"));
        bf_mp_kv_int(r->out, "year_to", bf_db_int(res, i, "year_to"));
        bf_mp_kv_str(r->out, "status", bf_db_str(res, i, "status"));
        bf_mp_kv_bool(r->out, "current", bf_db_null(res, i, "superseded_by"));
    }
    bf_page_end(r, res, limit, "id");
    PQclear(res);
    return 0;
}
