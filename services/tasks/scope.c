/* scope: what a caller may see and change in the tasks service
 * (docs/security.md, "Roles and region scoping").
 *
 * Two limits apply on top of the method table's roles:
 * - region: a caller bound to a division code (r->region) sees only tasks and
 *   problems whose copied region_code lies under it, and creates work only for
 *   targets under it;
 * - cadre: a caller whose only reading role is cadre sees, starts and submits
 *   only the tasks it owns (owner {kind: cadre, id: its cadre id}).
 * Reads of something out of scope answer not_found (existence is not leaked);
 * writes answer permission_denied naming the field.
 */
#include "tasks.h"

#include "bf_db.h"

#include <stdlib.h>
#include <string.h>

bool tasks_scope_cadre_only(const bf_req_t *r)
{
    return (r->roles & BF_ROLE_READERS) == BF_ROLE_CADRE;
}

int64_t tasks_scope_cadre_id(const bf_req_t *r)
{
    if (r->cadre_id > 0) return r->cadre_id;
    if (r->actor && !strncmp(r->actor, "cadre:", 6)) {
        char *end;
        long long id = strtoll(r->actor + 6, &end, 10);
        if (!*end && id > 0) return id;
    }
    return 0;
}

const char *tasks_scope_cadre_param(bf_req_t *r)
{
    if (!tasks_scope_cadre_only(r)) return NULL;
    /* a cadre caller without a cadre id owns nothing: 0 matches no task */
    return bf_req_itoa(r, tasks_scope_cadre_id(r));
}

int tasks_scope_write_code(bf_req_t *r, const char *code, const char *field)
{
    if (!r->region || !*r->region) return 0;
    if (code && bf_req_in_region(r, code)) return 0;
    if (!code)
        return bf_req_fail(r, BF_E_PERMISSION, field,
                           "the caller is bound to region %s: %s must name a village, "
                           "household or region under it",
                           r->region, field);
    return bf_req_fail(r, BF_E_PERMISSION, field,
                       "%s lies in region %.12s, outside the caller's region %s", field, code,
                       r->region);
}

int tasks_scope_read_code(bf_req_t *r, const char *code, const char *field, const char *what,
                          int64_t id)
{
    if (!r->region || !*r->region) return 0;
    if (code && *code && bf_req_in_region(r, code)) return 0;
    return bf_req_fail(r, BF_E_NOT_FOUND, field, "no %s with id %lld", what, (long long)id);
}

/* Why the caller may not act on the task in row of res (which holds
 * region_code, owner_kind and owner_id), or NULL if it may. */
static const char *s_task_denied(const bf_req_t *r, const PGresult *res, int row)
{
    if (r->region && *r->region) {
        const char *code =
            bf_db_null(res, row, "region_code") ? NULL : bf_db_str(res, row, "region_code");
        if (!code || !bf_req_in_region(r, code)) return "it lies outside the caller's region";
    }
    if (tasks_scope_cadre_only(r)) {
        int64_t me = tasks_scope_cadre_id(r);
        const char *kind = bf_db_str(res, row, "owner_kind"); /* NULL: no such task */
        if (me <= 0 || !kind || strcmp(kind, "cadre") != 0 ||
            bf_db_int(res, row, "owner_id") != me)
            return "a cadre may act only on the tasks it owns";
    }
    return NULL;
}

bool tasks_scope_task_row(const bf_req_t *r, const PGresult *res, int row)
{
    return s_task_denied(r, res, row) == NULL;
}

int tasks_scope_task(bf_req_t *r, int64_t id, bool write, const char *field)
{
    bool regional = r->region && *r->region;
    bool cadre = tasks_scope_cadre_only(r);
    if (!regional && !cadre) return 0;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "task_scope",
                               "SELECT region_code, owner_kind, owner_id FROM task "
                               "WHERE id = $1::bigint",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "no task with id %lld", (long long)id);
    }
    const char *why = s_task_denied(r, res, 0);
    PQclear(res);
    if (!why) return 0;
    if (!write)
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "no task with id %lld", (long long)id);
    return bf_req_fail(r, BF_E_PERMISSION, field, "task %lld: %s", (long long)id, why);
}

int tasks_scope_subject(bf_req_t *r, const char *kind, int64_t id, bool write,
                        const char *field)
{
    if (!r->region || !*r->region) return 0;
    const char *code = NULL;
    if (!strcmp(kind, "village") || !strcmp(kind, "household")) {
        tasks_entity_t e;
        if (tasks_registry_check(r, kind, id, field, &e) != 0) return -1;
        if (e.region_code[0]) code = bf_arena_strndup(r->arena, e.region_code, 12);
    }
    /* units (and anything else without a place) lie in no region */
    if (code && bf_req_in_region(r, code)) return 0;
    if (write)
        return bf_req_fail(r, BF_E_PERMISSION, field,
                           "%s %lld lies outside the caller's region %s", kind, (long long)id,
                           r->region);
    return bf_req_fail(r, BF_E_NOT_FOUND, field, "no %s %lld in the caller's region %s", kind,
                       (long long)id, r->region);
}
