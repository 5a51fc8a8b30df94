/* scope: region scoping in the funds service (docs/security.md, "Roles and
 * region scoping").
 *
 * Of the funds entities only a project carries a place: its `location`
 * (12-digit division code). A caller bound to a region (r->region) sees and
 * changes only projects located under it, and the tranches they pay. Sources,
 * budgets, allocations, batches, accounts and reports are county-wide: a
 * budget-paid tranche has no place, so a region-bound caller may not plan,
 * approve or disburse it. Reads out of scope answer not_found, writes
 * permission_denied naming the field.
 */
#include "funds.h"

#include "bf_db.h"

#include <string.h>

int funds_scope_location(bf_req_t *r, const char *location, bool write, const char *field,
                         const char *what, int64_t id)
{
    if (!r->region || !*r->region) return 0;
    if (location && *location && bf_req_in_region(r, location)) return 0;
    if (!write) return bf_req_fail(r, BF_E_NOT_FOUND, field, "no %s %lld", what, (long long)id);
    if (!location || !*location)
        return bf_req_fail(r, BF_E_PERMISSION, field,
                           "%s %lld is county-wide (it has no location); the caller is bound "
                           "to region %s",
                           what, (long long)id, r->region);
    if (id <= 0) /* a new one */
        return bf_req_fail(r, BF_E_PERMISSION, field, "%s %s lies outside the caller's region %s",
                           field, location, r->region);
    return bf_req_fail(r, BF_E_PERMISSION, field,
                       "%s %lld is located in %s, outside the caller's region %s", what,
                       (long long)id, location, r->region);
}

/* Looks up the location of a project (kind "project") or of the project
 * paying a tranche (kind "tranche"); absent rows pass (the handler answers
 * not_found in its own words). */
static int s_scope_row(bf_req_t *r, const char *kind, int64_t id, bool write, const char *field)
{
    if (!r->region || !*r->region) return 0;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res =
        !strcmp(kind, "project")
            ? bf_db_prep(r->db, "funds_scope_project",
                         "SELECT location FROM project WHERE id = $1", 1, p, NULL, NULL)
            : bf_db_prep(r->db, "funds_scope_tranche",
                         "SELECT j.location FROM tranche t LEFT JOIN project j "
                         "ON j.id = t.project_id WHERE t.id = $1",
                         1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    const char *loc = bf_db_null(res, 0, "location")
                          ? NULL
                          : bf_arena_strndup(r->arena, bf_db_str(res, 0, "location"), 12);
    PQclear(res);
    return funds_scope_location(r, loc, write, field, kind, id);
}

int funds_scope_project(bf_req_t *r, int64_t id, bool write, const char *field)
{
    return s_scope_row(r, "project", id, write, field);
}

int funds_scope_tranche(bf_req_t *r, int64_t id, const char *field)
{
    return s_scope_row(r, "tranche", id, true, field);
}
