/* registry: the service that owns who helps whom (docs/registry.md).
 *
 * Regions, villages, households and their members (persons), helper units,
 * cadres, work teams and pairings, with the rules of the seed documents:
 * per-rank caps on households per cadre, full coverage of poor households by
 * a responsible cadre, pairing changes as recorded and approved events. Each
 * group of methods lives in its own file; this header lists the handlers that
 * main.c puts in the method table, the code lists every file checks against,
 * and the small helpers they share (util.c).
 */
#ifndef REGISTRY_H
#define REGISTRY_H

#include "bf_arena.h"
#include "bf_cfg.h"
#include "bf_outbox.h"
#include "bf_db.h"
#include "bf_rpc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REGISTRY_SERVICE "registry"

/* Lists returned inline in a result (coverage.report) are cut at this length;
 * their totals are always exact. */
#define REGISTRY_REPORT_ITEMS 100
/* Members of one household, rows of one household.import call. */
#define REGISTRY_MAX_MEMBERS 30
#define REGISTRY_MAX_IMPORT_ROWS 5000
/* Rows of one unit/cadre/team/pairing.import call (orgimport.c). */
#define REGISTRY_MAX_ORG_IMPORT_ROWS 1000

/* SQL for a timestamptz column as RFC 3339 UTC ("2024-05-01T08:00:00Z"). */
#define REGISTRY_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* Read-only after start; shared by every worker. */
typedef struct {
    int cap_county, cap_division, cap_section, cap_general, cap_village; /* 0 = no cap */
    /* the exit procedure (exit.c) */
    int exit_notice_days;              /* public notice length */
    int64_t exit_income_line_fen;      /* yearly income per person a household needs */
    int exit_incidence_permille;       /* a village exits below this incidence */
    int exit_incidence_west_permille;  /* ... in the western provinces */
    const char *exit_west_provinces;   /* their 2-digit codes, comma-separated */
} registry_t;

/* The cap of households per cadre for a rank (0 = none). */
int registry_cap_for_rank(const registry_t *reg, const char *rank);

/* Emits an event of type "bangfu.registry.<what>" in the open transaction;
 * data is the packed event being built. Returns 0 or fails the request. */
int registry_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject);

/* ---- code lists (NULL-terminated; documented in docs/registry.md) ------- */
extern const char *const registry_categories[];  /* household categories 低保 ... */
extern const char *const registry_causes[];      /* causes of poverty 致贫原因 */
extern const char *const registry_routes[];      /* employment | industry | safety_net */
extern const char *const registry_relations[];   /* head | spouse | ... */
extern const char *const registry_genders[];     /* male | female */
extern const char *const registry_labour[];      /* skilled | ordinary | weak | lost | none */
extern const char *const registry_hh_status[];   /* active | exited */
extern const char *const registry_unit_kinds[];  /* department | enterprise | ... */
extern const char *const registry_ranks[];       /* county | division | ... */
extern const char *const registry_pairing_kinds[];

/* ---- util.c -------------------------------------------------------------- */

/* A string growing in the request arena (never freed piecewise). On out of
 * memory it stops growing and oom is set; registry_sb_str then returns NULL. */
typedef struct {
    bf_arena_t *arena;
    char *s;
    size_t len, cap;
    bool oom;
} registry_sb_t;

void registry_sb_init(registry_sb_t *b, bf_arena_t *arena);
void registry_sb_add(registry_sb_t *b, const char *s, size_t n);
void registry_sb_adds(registry_sb_t *b, const char *s);
void registry_sb_addc(registry_sb_t *b, char c);
void registry_sb_addi(registry_sb_t *b, int64_t v);
const char *registry_sb_str(registry_sb_t *b);

/* A PostgreSQL array literal ({"a","b",NULL}) being built, for passing many
 * values as one $n parameter to unnest(). Elements are always quoted, so any
 * text is safe; NULL pointers become SQL NULL. */
typedef struct {
    registry_sb_t sb;
    size_t n;
} registry_arr_t;

void registry_arr_begin(registry_arr_t *a, bf_arena_t *arena);
void registry_arr_str(registry_arr_t *a, const char *s);
void registry_arr_int(registry_arr_t *a, int64_t v);
/* Closes the literal; returns it (arena) or NULL on out of memory. */
const char *registry_arr_end(registry_arr_t *a);

/* Packs a text[] value as PostgreSQL prints it ({a,b,"c d"}) as a list of
 * strings. */
void registry_pack_text_array(msgpack_packer *pk, const char *lit);

/* Builds a text[] literal from a msgpack list of non-empty strings of at most
 * max_item bytes; fails the request naming "field[i]" otherwise. */
const char *registry_text_array(bf_req_t *r, const msgpack_object_array *list,
                                const char *field, size_t max_item);

/* The code prefix shared by a region and everything under it (2 for a
 * province ... 12 for a village). code must be 12 digits. */
int registry_prefix_len(const char *code);

/* Reads an optional 12-digit division code parameter; 0, 1 (absent) or -1. */
int registry_code_param(bf_req_t *r, const char *key, bool required, const char **out);

/* Fails with invalid_argument naming "prefix.key" if map has a key that is
 * not in allowed (NULL-terminated). Returns 0 or -1. */
int registry_check_keys(bf_req_t *r, const msgpack_object *map, const char *prefix,
                        const char *const *allowed);

/* A list of distinct strings, each one of choices; field names the list.
 * *out gets the items (arena), *n their count. Returns 0 or -1. */
int registry_enum_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                       const char *const *choices, const char ***out, size_t *n);

/* A list of distinct positive integers; *out (arena) and *n. Returns 0 or -1. */
int registry_id_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                     int64_t **out, size_t *n);

/* An optional date parameter YYYY-MM-DD. 0, 1 (absent) or -1. */
int registry_date_param(bf_req_t *r, const char *key, bool required, const char **out);

/* "entity/123" in the arena. */
const char *registry_subject(bf_req_t *r, const char *entity, int64_t id);

/* Packs the 18-character ID number masked (110105************: the region
 * of registration only, see bf_id_mask). */
void registry_pack_masked_id(msgpack_packer *pk, const char *key, const char *id18);

/* True if the row exists: runs sql (one $1 = id) under stmt. -1 on db error. */
int registry_exists(bf_req_t *r, const char *stmt, const char *sql, int64_t id);

/* ---- scope (docs/registry.md#scoping) -------------------------------------
 * A caller bound to a region (r->region) sees and changes only what lies
 * under it; a caller that is a cadre only (cadre role without admin,
 * county_operator, auditor or service) reads only the households it is the
 * active responsible cadre of, and its own cadre record. Reads pass the two
 * values below as statement parameters (NULL = no restriction), so a hidden
 * entity is simply not found; writes check with registry_region_denied. */
typedef struct {
    const char *region; /* LIKE pattern of the caller's region ("120110%"), or NULL */
    const char *cadre;  /* the cadre id (text) a cadre-only caller is, or NULL */
} registry_scope_t;

/* True if the caller holds the cadre role and none of admin, county_operator,
 * auditor, service. */
bool registry_cadre_only(const bf_req_t *r);
/* Fills s from the caller; 0, or -1 with the request failed (out of memory). */
int registry_scope(bf_req_t *r, registry_scope_t *s);
/* 0 if code (a 12-digit division code, NULL = none) lies under the caller's
 * region; else rolls back an open transaction and fails with
 * permission_denied naming field. */
int registry_region_denied(bf_req_t *r, const char *field, const char *code);

/* SQL: household hid (column or $n) in village region vrc is visible under
 * scope parameters $P (region pattern) and $C (cadre id). */
#define REGISTRY_HH_VISIBLE(hid, vrc, P, C)                                                        "(" P "::text IS NULL OR " vrc "::text LIKE " P ") AND (" C "::bigint IS NULL OR EXISTS "      "(SELECT 1 FROM pairing sp WHERE sp.kind = 'cadre_household' AND sp.helper_id = " C            "::bigint AND sp.target_id = " hid " AND sp.ended_at IS NULL))"

/* SQL: pairing p is visible under scope parameters P and C: its target (a
 * village, a household's village, or a county's code) lies under the region,
 * and for a cadre-only caller it is one of the cadre's own pairings. */
#define REGISTRY_PAIRING_VISIBLE(P, C)                                                         \
    "(" P "::text IS NULL OR (p.kind = 'district_county' AND p.target_code::text LIKE " P ") " \
    "OR (p.kind IN ('unit_village','team_village') AND EXISTS (SELECT 1 FROM village pv "      \
    "WHERE pv.id = p.target_id AND pv.region_code::text LIKE " P ")) "                          \
    "OR (p.kind IN ('cadre_household','helper_household') AND EXISTS (SELECT 1 FROM household " \
    "ph JOIN village pv ON pv.id = ph.village_id WHERE ph.id = p.target_id "                   \
    "AND pv.region_code::text LIKE " P "))) AND (" C "::bigint IS NULL OR "                     \
    "(p.kind = 'cadre_household' AND p.helper_id = " C "::bigint))"

/* ---- one-statement reads ----------------------------------------------------
 * A get reads its entity and every list in it with ONE statement: UNION ALL
 * of parts, each row a "part" number (0 = the entity itself, then one number
 * per list), sort keys, and generic text columns c1, c2, ... (docs/registry.md).
 * These read column cN of a row. */
const char *registry_c(const PGresult *res, int row, int col);
int64_t registry_ci(const PGresult *res, int row, int col); /* 0 if NULL */
/* key: cN as an integer, or nil if NULL. */
void registry_kv_ci(msgpack_packer *pk, const char *key, const PGresult *res, int row, int col);
/* Rows of res whose column "part" is part. */
size_t registry_part_count(const PGresult *res, int part);

/* region.c */
int region_put(bf_req_t *r);
int region_get(bf_req_t *r);
int region_list(bf_req_t *r);
int region_figures(bf_req_t *r);

/* village.c */
int village_create(bf_req_t *r);
int village_get(bf_req_t *r);
int village_list(bf_req_t *r);

/* household.c */
int household_create(bf_req_t *r);
int household_get(bf_req_t *r);
int household_reveal(bf_req_t *r);
int household_update(bf_req_t *r);
int household_list(bf_req_t *r);
int household_import(bf_req_t *r);
int household_add_member(bf_req_t *r);
int household_remove_member(bf_req_t *r);

/* org.c: helper units, cadres, work teams */
int unit_create(bf_req_t *r);
int unit_get(bf_req_t *r);
int unit_list(bf_req_t *r);
int unit_set_contact(bf_req_t *r);
int cadre_create(bf_req_t *r);
int cadre_get(bf_req_t *r);
int cadre_list(bf_req_t *r);
int team_create(bf_req_t *r);
int team_get(bf_req_t *r);
int team_list(bf_req_t *r);
/* The one INSERT of each entity and its created event, shared by the create
 * methods and the imports (orgimport.c). Each runs in the caller's open
 * transaction, checks no parameter's shape (the caller has: names non-empty,
 * kind and rank from their code lists, codes and phones valid, the region
 * under the caller's scope) and never rolls back, so an import can undo the
 * row alone under its savepoint and an RPC handler rolls back itself.
 * Returns 0 with *id, or -1 with the request failed (a database error as
 * bf_req_db_fail reports it, or as below).
 *
 * registry_unit_insert: checks that region (NULL = none) exists (not_found
 * on region_code) and that no unit has the name (already_exists on name);
 * emits unit.created. */
int registry_unit_insert(bf_req_t *r, const char *name, const char *kind, const char *region,
                         int64_t *id);
/* registry_cadre_insert: unit_id must name an existing unit (the caller
 * looked it up); phone may be NULL. Emits cadre.created. */
int registry_cadre_insert(bf_req_t *r, const char *name, const char *rank, int64_t unit_id,
                          bool party, const char *phone, int64_t *id);
/* registry_team_insert: the caller has checked that the unit and every cadre
 * exist, that the leader is a party member and not among the members, and
 * that the villages exist, lie in the caller's scope and are distinct. Checks
 * that no team has the name (already_exists on name); inserts the team and
 * its members (leader first), emits team.created, then pairs the team with
 * each village (team_village from starts_on, NULL = today; a duplicate
 * pairing fails naming village_field). pairing_ids (NULL = not wanted) gets
 * one id per village. */
int registry_team_insert(bf_req_t *r, const char *name, int64_t unit_id, int64_t leader_id,
                         const int64_t *members, size_t nmembers, const int64_t *villages,
                         size_t nvillages, const char *starts_on, const char *village_field,
                         int64_t *id, int64_t *pairing_ids);

/* pairing.c */
int pairing_create(bf_req_t *r);
int pairing_end(bf_req_t *r);
int pairing_get(bf_req_t *r);
int pairing_list(bf_req_t *r);
/* Inserts one pairing in the open transaction after every check passed, and
 * emits pairing.created; *id gets the new id. The one pairing INSERT: used by
 * pairing.create, registry_team_insert and pairing.import. An active pairing
 * of the same kind, helper and target fails with already_exists naming
 * field; never rolls back (the caller does, or its savepoint). 0 or -1. */
int pairing_insert(bf_req_t *r, const char *field, const char *kind, int64_t helper_id,
                   int64_t target_id, const char *target_code, const char *starts_on,
                   const char *ends_on, int64_t *id);
/* The active pairing of kind, helper and target: 1 with *id, 0 if there is
 * none, -1 with the request failed. pairing.create refuses it, pairing.import
 * reports the row as existing. */
int pairing_find_active(bf_req_t *r, const char *kind, int64_t helper_id, int64_t target_id,
                        int64_t *id);
/* The per-rank cap (seed 001): fails with failed_precondition naming field if
 * cadre cadre_id, of rank, is already responsible for cap (0 = no cap) active
 * households. The caller holds the cadre's row lock (FOR UPDATE), so the count
 * is stable until it commits. 0 or -1; never rolls back. */
int pairing_cap_check(bf_req_t *r, const char *field, int64_t cadre_id, const char *rank, int cap);

/* exit.c: the exit procedure (退出); the kind comes from the method's name */
int exit_review(bf_req_t *r);
int exit_verify(bf_req_t *r);
int exit_object(bf_req_t *r);
int exit_resolve(bf_req_t *r);
int exit_approve(bf_req_t *r);
int exit_reject(bf_req_t *r);
int exit_get(bf_req_t *r);
int exit_list(bf_req_t *r);

/* orgimport.c: bulk imports by natural keys, and village references */
int unit_import(bf_req_t *r);
int cadre_import(bf_req_t *r);
int team_import(bf_req_t *r);
int pairing_import(bf_req_t *r);
int village_resolve(bf_req_t *r);
/* Resolves a village reference: its 12-digit code, its name, or either after
 * "REGION/" (a region's 12-digit code or exact name), among the villages the
 * caller's scope may see. 0 with *id, or -1 with the request failed naming
 * field: not_found, conflict (ambiguous: the candidates are listed) or
 * invalid_argument. */
int registry_village_ref(bf_req_t *r, const char *field, const char *ref, int64_t *id);

/* coverage.c */
int coverage_report(bf_req_t *r);

#endif
