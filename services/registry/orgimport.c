/* orgimport.c: bulk imports of who helps (unit.import, cadre.import,
 * team.import, pairing.import) and village.resolve.
 *
 * The shape is household.import's: a call carries up to
 * REGISTRY_MAX_ORG_IMPORT_ROWS rows; each row is checked and written on its
 * own, inside one transaction, under a savepoint, so a bad row is rolled back
 * alone and reported ({row, field, code, message}) while the good rows are
 * committed together. Rows name things as an operator knows them: a unit by
 * its name, a cadre by name within its unit, a team by name, a village by
 * name or division code (registry_village_ref). Every import is idempotent on
 * natural keys: a unit or team of the same name, a cadre of the same name in
 * the same unit, an active pairing of the same kind, helper and target is
 * reported as existing (its id in ids) and nothing is written, so a re-run of
 * the same file creates nothing twice. A created row goes through the same
 * insert as the single create method (registry_unit_insert,
 * registry_cadre_insert, registry_team_insert, pairing_insert), so it is
 * written and announced (unit.created, cadre.created, team.created,
 * pairing.created) exactly as that method does.
 *
 * Pairings apply the per-rank caps row by row: the cadre's row is locked
 * before counting its active households, so rows earlier in the same call
 * count, and concurrent imports for the same cadre are serialised.
 */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id;      /* created or existing; 0 if rejected */
    bool existing;   /* the row was already there */
    const char *code, *field, *message; /* why rejected */
} oi_out_t;

typedef int (*oi_row_fn)(bf_req_t *r, const msgpack_object *row, oi_out_t *out);

static int s_oom(bf_req_t *r) { return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory"); }

/* A database error inside a row: the conditions that concern the row alone
 * (a duplicate, a bad value, a missing reference, a concurrent change) fail
 * it with a row-level code; anything else fails the request. */
static int s_row_db_fail(bf_req_t *r)
{
    const char *st = bf_db_sqlstate(r->db);
    if (!strncmp(st, "22", 2))
        return bf_req_fail(r, BF_E_INVALID, NULL, "a value is out of range or malformed");
    return bf_req_db_fail(r);
}

/* True if the request must stop (not a row's fault). */
static bool s_fatal(const char *code)
{
    return !strcmp(code, BF_E_UNAVAILABLE) || !strcmp(code, BF_E_INTERNAL) ||
           !strcmp(code, BF_E_EXHAUSTED);
}

/* An optional string; empty counts as absent. 0, 1 (absent) or -1. */
static int s_opt(bf_req_t *r, const msgpack_object *o, const char *key, size_t max,
                 const char **out)
{
    const char *s = NULL;
    int rc = bf_req_str(r, o, NULL, key, false, max, &s);
    if (rc != 0) return rc;
    if (!*s) return 1;
    *out = s;
    return 0;
}

/* A required non-empty string. */
static int s_req(bf_req_t *r, const msgpack_object *o, const char *key, size_t max,
                 const char **out)
{
    if (bf_req_str(r, o, NULL, key, true, max, out) != 0) return -1;
    if (!**out) return bf_req_fail(r, BF_E_INVALID, key, "%s must not be empty", key);
    return 0;
}

/* A yes/no cell: a boolean or one of true/false, yes/no, 1/0, 是/否. */
static int s_flag(bf_req_t *r, const msgpack_object *o, const char *key, bool *out)
{
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (!bf_mp_str_eq(k, key)) continue;
        const msgpack_object *v = &o->via.map.ptr[i].val;
        if (v->type == MSGPACK_OBJECT_BOOLEAN) {
            *out = v->via.boolean;
            return 0;
        }
        if (v->type == MSGPACK_OBJECT_STR) {
            static const char *const yes[] = {"true", "yes", "y", "1", "是", "t", NULL};
            static const char *const no[] = {"false", "no", "n", "0", "否", "f", NULL};
            for (int j = 0; yes[j]; j++)
                if (bf_mp_str_eq(v, yes[j])) return *out = true, 0;
            for (int j = 0; no[j]; j++)
                if (bf_mp_str_eq(v, no[j])) return *out = false, 0;
        }
        return bf_req_fail(r, BF_E_INVALID, key, "%s must be yes or no (true/false, 是/否)",
                           key);
    }
    return bf_req_fail(r, BF_E_INVALID, key, "%s is required", key);
}

/* A list of names: a msgpack list of strings, or one string separated by
 * ';', '；', '、' or '|'. Items are trimmed; empty items are skipped. */
static int s_items(bf_req_t *r, const msgpack_object *o, const char *key, size_t max,
                   const char ***items, size_t *n)
{
    *items = NULL;
    *n = 0;
    const msgpack_object *v = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++)
        if (bf_mp_str_eq(&o->via.map.ptr[i].key, key)) v = &o->via.map.ptr[i].val;
    if (!v || v->type == MSGPACK_OBJECT_NIL) return 0;
    const char **out = bf_arena_alloc(r->arena, (max + 1) * sizeof *out);
    if (!out) return s_oom(r);
    if (v->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            const msgpack_object *e = &v->via.array.ptr[i];
            const char *f = bf_arena_printf(r->arena, "%s[%u]", key, i);
            if (e->type != MSGPACK_OBJECT_STR || e->via.str.size == 0 ||
                e->via.str.size > 200 || !bf_valid_utf8(e->via.str.ptr, e->via.str.size))
                return bf_req_fail(r, BF_E_INVALID, f, "%s must be a non-empty string", f);
            if (*n >= max)
                return bf_req_fail(r, BF_E_INVALID, key, "%s names more than %zu items", key,
                                   max);
            out[(*n)++] = bf_arena_strndup(r->arena, e->via.str.ptr, e->via.str.size);
        }
        *items = out;
        return 0;
    }
    const char *s;
    if (bf_req_str(r, o, NULL, key, false, 4000, &s) != 0) return -1;
    const char *p = s;
    while (*p) {
        const char *end = p;
        size_t seplen = 0;
        while (*end) {
            if (*end == ';' || *end == '|') { seplen = 1; break; }
            if (!strncmp(end, "；", strlen("；"))) { seplen = strlen("；"); break; }
            if (!strncmp(end, "、", strlen("、"))) { seplen = strlen("、"); break; }
            end++;
        }
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if (b > a) {
            if (*n >= max)
                return bf_req_fail(r, BF_E_INVALID, key, "%s names more than %zu items", key,
                                   max);
            out[(*n)++] = bf_arena_strndup(r->arena, a, (size_t)(b - a));
        }
        p = *end ? end + seplen : end;
    }
    *items = out;
    return 0;
}

/* ------------------------------------------------------------ villages */

static bool s_digits(const char *s, size_t n)
{
    if (!n) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

int registry_village_ref(bf_req_t *r, const char *field, const char *ref, int64_t *id)
{
    while (*ref == ' ') ref++;
    size_t len = strlen(ref);
    while (len && ref[len - 1] == ' ') len--;
    if (!len) return bf_req_fail(r, BF_E_INVALID, field, "%s must name a village", field);
    const char *slash = memchr(ref, '/', len);
    const char *region_code = NULL, *region_name = NULL, *code = NULL, *name = NULL;
    const char *rest = ref;
    size_t restlen = len;
    if (slash) {
        size_t plen = (size_t)(slash - ref);
        rest = slash + 1;
        restlen = len - plen - 1;
        if (!plen || !restlen)
            return bf_req_fail(r, BF_E_INVALID, field,
                               "%s: write REGION/VILLAGE (a region code or name, a slash, "
                               "the village's name or code)",
                               field);
        if (plen == 12 && s_digits(ref, 12)) {
            if (bf_division_check(ref, 12) != 0)
                return bf_req_fail(r, BF_E_INVALID, field,
                                   "%s: the region before / is not a valid division code", field);
            char *rc = bf_arena_strndup(r->arena, ref, 12);
            if (!rc) return s_oom(r);
            rc[registry_prefix_len(rc)] = '\0';
            region_code = bf_arena_printf(r->arena, "%s%%", rc);
        } else {
            region_name = bf_arena_strndup(r->arena, ref, plen);
        }
    }
    if (restlen == 12 && s_digits(rest, 12))
        code = bf_arena_strndup(r->arena, rest, 12);
    else
        name = bf_arena_strndup(r->arena, rest, restlen);
    if ((!code && !name) || (slash && !region_code && !region_name)) return s_oom(r);
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {code, name, region_code, region_name, sc.region};
    PGresult *res = bf_db_prep(
        r->db, "village_ref",
        "SELECT v.id, v.name, v.region_code, v.code FROM village v "
        "WHERE ($1::text IS NULL OR v.code = $1) AND ($2::text IS NULL OR v.name = $2) "
        "  AND ($3::text IS NULL OR v.region_code::text LIKE $3) "
        "  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM region g WHERE g.name = $4 "
        "    AND v.region_code::text LIKE left(g.code, CASE g.level WHEN 'province' THEN 2 "
        "      WHEN 'city' THEN 4 WHEN 'county' THEN 6 WHEN 'township' THEN 9 ELSE 12 END) "
        "      || '%')) "
        "  AND ($5::text IS NULL OR v.region_code::text LIKE $5) "
        "ORDER BY v.id LIMIT 6",
        5, p, NULL, NULL);
    if (!res) return s_row_db_fail(r);
    int n = PQntuples(res);
    if (n == 1) {
        *id = bf_db_int(res, 0, "id");
        PQclear(res);
        return 0;
    }
    const char *shown = bf_arena_strndup(r->arena, ref, len);
    if (n == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "no village %s \"%s\"%s",
                           code ? "with code" : "named", shown ? shown : "",
                           sc.region ? " under the caller's region" : "");
    }
    registry_sb_t sb;
    registry_sb_init(&sb, r->arena);
    for (int i = 0; i < n && i < 5; i++) {
        if (i) registry_sb_adds(&sb, ", ");
        registry_sb_adds(&sb, "id ");
        registry_sb_addi(&sb, bf_db_int(res, i, "id"));
        registry_sb_adds(&sb, " in ");
        registry_sb_adds(&sb, bf_db_str(res, i, "region_code"));
    }
    if (n > 5) registry_sb_adds(&sb, ", ...");
    PQclear(res);
    const char *list = registry_sb_str(&sb);
    return bf_req_fail(r, BF_E_CONFLICT, field,
                       "ambiguous: %s villages are named \"%s\" (%s); write REGION_CODE/NAME "
                       "or the village's code",
                       n > 5 ? "more than 5" : bf_req_itoa(r, n), shown ? shown : "",
                       list ? list : "");
}

int village_resolve(bf_req_t *r)
{
    const char *ref;
    if (bf_req_str(r, r->params, NULL, "ref", true, 400, &ref) != 0) return -1;
    int64_t id;
    if (registry_village_ref(r, "ref", ref, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "village_resolved",
                               "SELECT v.id, v.name, v.region_code, v.code, v.status, "
                               "  g.name AS region_name FROM village v "
                               "LEFT JOIN region g ON g.code = v.region_code WHERE v.id = $1",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "ref", "the village is gone");
    }
    msgpack_pack_map(r->out, 6);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "name", bf_db_str(res, 0, "name"));
    bf_mp_kv_str(r->out, "region_code", bf_db_str(res, 0, "region_code"));
    bf_mp_kv_str(r->out, "region_name", bf_db_str(res, 0, "region_name"));
    bf_mp_kv_str(r->out, "code", bf_db_str(res, 0, "code"));
    bf_mp_kv_str(r->out, "status", bf_db_str(res, 0, "status"));
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ the driver */

static int s_run(bf_req_t *r, oi_row_fn fn)
{
    const msgpack_object_array *list;
    if (bf_req_list(r, r->params, NULL, "rows", true, REGISTRY_MAX_ORG_IMPORT_ROWS, &list) != 0)
        return -1;
    size_t n = list->size;
    oi_out_t *outs = bf_arena_alloc(r->arena, (n + 1) * sizeof *outs);
    if (!outs) return s_oom(r);
    memset(outs, 0, (n + 1) * sizeof *outs);
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    for (size_t i = 0; i < n; i++) {
        oi_out_t *o = &outs[i];
        const msgpack_object *row = &list->ptr[i];
        int rc;
        if (row->type != MSGPACK_OBJECT_MAP) {
            rc = bf_req_fail(r, BF_E_INVALID, NULL, "a row must be a map");
        } else {
            if (bf_db_cmd(r->db, "SAVEPOINT oi_row") != 0) return bf_req_db_fail(r);
            rc = fn(r, row, o);
            if (rc == 0) {
                if (bf_db_cmd(r->db, "RELEASE SAVEPOINT oi_row") != 0) return bf_req_db_fail(r);
                continue;
            }
            if (!r->err.code) bf_req_fail(r, BF_E_INTERNAL, NULL, "row failed without saying why");
            if (s_fatal(r->err.code)) {
                bf_db_rollback(r->db);
                return -1;
            }
            if (bf_db_cmd(r->db, "ROLLBACK TO SAVEPOINT oi_row") != 0 ||
                bf_db_cmd(r->db, "RELEASE SAVEPOINT oi_row") != 0) {
                memset(&r->err, 0, sizeof r->err);
                return bf_req_db_fail(r);
            }
        }
        o->id = 0;
        o->existing = false;
        o->code = r->err.code;
        o->field = r->err.field[0]
                       ? bf_arena_strndup(r->arena, r->err.field, strlen(r->err.field))
                       : NULL;
        o->message = bf_arena_strndup(r->arena, r->err.message, strlen(r->err.message));
        memset(&r->err, 0, sizeof r->err);
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);

    size_t created = 0, existing = 0, rejected = 0;
    for (size_t i = 0; i < n; i++) {
        if (outs[i].code)
            rejected++;
        else if (outs[i].existing)
            existing++;
        else
            created++;
    }
    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 5);
    bf_mp_kv_int(pk, "accepted", (int64_t)created);
    bf_mp_kv_int(pk, "existing", (int64_t)existing);
    bf_mp_key(pk, "existing_rows");
    msgpack_pack_array(pk, existing);
    for (size_t i = 0; i < n; i++)
        if (!outs[i].code && outs[i].existing) msgpack_pack_int64(pk, (int64_t)i);
    bf_mp_key(pk, "rejected");
    msgpack_pack_array(pk, rejected);
    for (size_t i = 0; i < n; i++) {
        if (!outs[i].code) continue;
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "row", (int64_t)i);
        bf_mp_kv_str(pk, "field", outs[i].field);
        bf_mp_kv_str(pk, "code", outs[i].code);
        bf_mp_kv_str(pk, "message", outs[i].message);
    }
    bf_mp_key(pk, "ids");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        if (outs[i].code)
            msgpack_pack_nil(pk);
        else
            msgpack_pack_int64(pk, outs[i].id);
    }
    return 0;
}

/* Runs a lookup; NULL with the request failed. */
static PGresult *s_q(bf_req_t *r, const char *stmt, const char *sql, int np, const char **p)
{
    PGresult *res = bf_db_prep(r->db, stmt, sql, np, p, NULL, NULL);
    if (!res) s_row_db_fail(r);
    return res;
}

/* A unit by name; lock: "" or " FOR SHARE" / " FOR UPDATE" baked into stmt.
 * 0 (id, kind), or -1 with not_found on field. */
static int s_unit_by_name(bf_req_t *r, const char *field, const char *name, bool update,
                          int64_t *id, const char **kind)
{
    const char *p[] = {name};
    PGresult *res = update ? s_q(r, "oi_unit_upd", "SELECT id, kind FROM unit WHERE name = $1 "
                                                   "FOR UPDATE", 1, p)
                           : s_q(r, "oi_unit_shr", "SELECT id, kind FROM unit WHERE name = $1 "
                                                   "FOR SHARE", 1, p);
    if (!res) return -1;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "no unit named \"%s\"", name);
    }
    *id = bf_db_int(res, 0, "id");
    if (kind) *kind = bf_arena_strndup(r->arena, bf_db_str(res, 0, "kind"), 32);
    PQclear(res);
    return 0;
}

/* A cadre by "name" within unit_id, or by "UNIT/NAME". 0, or -1 (not found,
 * ambiguous). *party and *rank if asked. */
static int s_cadre_ref(bf_req_t *r, const char *field, const char *ref, int64_t unit_id,
                       bool lock, int64_t *id, bool *party, const char **rank)
{
    const char *slash = strchr(ref, '/');
    const char *name = ref;
    if (slash) {
        const char *uname = bf_arena_strndup(r->arena, ref, (size_t)(slash - ref));
        if (!uname) return s_oom(r);
        if (s_unit_by_name(r, field, uname, false, &unit_id, NULL) != 0) return -1;
        name = slash + 1;
    }
    if (unit_id <= 0)
        return bf_req_fail(r, BF_E_INVALID, field, "%s: name the cadre's unit (UNIT/NAME)", field);
    const char *p[] = {bf_req_itoa(r, unit_id), name};
    PGresult *res = lock ? s_q(r, "oi_cadre_upd",
                               "SELECT id, party_member, rank FROM cadre WHERE unit_id = $1 "
                               "AND name = $2 ORDER BY id FOR UPDATE",
                               2, p)
                         : s_q(r, "oi_cadre_shr",
                               "SELECT id, party_member, rank FROM cadre WHERE unit_id = $1 "
                               "AND name = $2 ORDER BY id FOR SHARE",
                               2, p);
    if (!res) return -1;
    int n = PQntuples(res);
    if (n != 1) {
        int64_t a = n > 1 ? bf_db_int(res, 0, "id") : 0, b = n > 1 ? bf_db_int(res, 1, "id") : 0;
        PQclear(res);
        if (n == 0)
            return bf_req_fail(r, BF_E_NOT_FOUND, field, "no cadre named \"%s\" in unit %" PRId64,
                               name, unit_id);
        return bf_req_fail(r, BF_E_CONFLICT, field,
                           "ambiguous: %d cadres are named \"%s\" in unit %" PRId64
                           " (ids %" PRId64 ", %" PRId64 "%s)",
                           n, name, unit_id, a, b, n > 2 ? ", ..." : "");
    }
    *id = bf_db_int(res, 0, "id");
    if (party) *party = bf_db_bool(res, 0, "party_member");
    if (rank) *rank = bf_arena_strndup(r->arena, bf_db_str(res, 0, "rank"), 16);
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ units */

static const char *const s_unit_keys[] = {"name", "kind", "region_code", NULL};

static int s_unit_row(bf_req_t *r, const msgpack_object *o, oi_out_t *out)
{
    const char *name, *kind, *region = NULL;
    if (registry_check_keys(r, o, NULL, s_unit_keys) != 0) return -1;
    if (s_req(r, o, "name", 200, &name) != 0) return -1;
    if (bf_req_enum(r, o, NULL, "kind", true, registry_unit_kinds, &kind) != 0) return -1;
    if (s_opt(r, o, "region_code", 12, &region) < 0) return -1;
    if (region && bf_division_check(region, strlen(region)) != 0)
        return bf_req_fail(r, BF_E_INVALID, "region_code",
                           "region_code must be a 12-digit statistical division code");
    if (region && !bf_req_in_region(r, region))
        return bf_req_fail(r, BF_E_PERMISSION, "region_code",
                           "region_code lies outside the region the caller is bound to");
    const char *np[] = {name};
    PGresult *res = s_q(r, "oi_unit_find", "SELECT id, kind FROM unit WHERE name = $1", 1, np);
    if (!res) return -1;
    if (PQntuples(res) > 0) {
        out->id = bf_db_int(res, 0, "id");
        bool same = !strcmp(bf_db_str(res, 0, "kind"), kind);
        PQclear(res);
        if (!same)
            return bf_req_fail(r, BF_E_EXISTS, "kind",
                               "unit \"%s\" exists (id %" PRId64 ") with another kind", name,
                               out->id);
        out->existing = true;
        return 0;
    }
    PQclear(res);
    return registry_unit_insert(r, name, kind, region, &out->id);
}

int unit_import(bf_req_t *r) { return s_run(r, s_unit_row); }

/* ------------------------------------------------------------ cadres */

static const char *const s_cadre_keys[] = {"name", "rank", "unit", "party_member", "phone", NULL};

static int s_cadre_row(bf_req_t *r, const msgpack_object *o, oi_out_t *out)
{
    const char *name, *rank, *unit, *phone = NULL;
    bool party = false;
    if (registry_check_keys(r, o, NULL, s_cadre_keys) != 0) return -1;
    if (s_req(r, o, "name", 200, &name) != 0) return -1;
    if (strchr(name, '/'))
        return bf_req_fail(r, BF_E_INVALID, "name", "name must not contain '/'");
    if (bf_req_enum(r, o, NULL, "rank", true, registry_ranks, &rank) != 0) return -1;
    if (s_req(r, o, "unit", 200, &unit) != 0) return -1;
    if (s_flag(r, o, "party_member", &party) != 0) return -1;
    if (s_opt(r, o, "phone", 32, &phone) < 0) return -1;
    if (phone && !bf_valid_phone(phone, strlen(phone)))
        return bf_req_fail(r, BF_E_INVALID, "phone", "phone must be an 11-digit mobile number");
    int64_t unit_id;
    /* the unit's row is locked: two imports of the same cadre serialise */
    if (s_unit_by_name(r, "unit", unit, true, &unit_id, NULL) != 0) return -1;
    const char *fp[] = {bf_req_itoa(r, unit_id), name};
    PGresult *res = s_q(r, "oi_cadre_find",
                        "SELECT id, rank FROM cadre WHERE unit_id = $1 AND name = $2 ORDER BY id",
                        2, fp);
    if (!res) return -1;
    if (PQntuples(res) > 0) {
        out->id = bf_db_int(res, 0, "id");
        bool same = !strcmp(bf_db_str(res, 0, "rank"), rank);
        PQclear(res);
        if (!same)
            return bf_req_fail(r, BF_E_EXISTS, "rank",
                               "cadre \"%s\" of unit \"%s\" exists (id %" PRId64
                               ") with another rank",
                               name, unit, out->id);
        out->existing = true;
        return 0;
    }
    PQclear(res);
    return registry_cadre_insert(r, name, rank, unit_id, party, phone, &out->id);
}

int cadre_import(bf_req_t *r) { return s_run(r, s_cadre_row); }

/* ------------------------------------------------------------ pairings */

static const char *s_today(bf_req_t *r)
{
    PGresult *res = bf_db_prep(r->db, "today", "SELECT current_date::text AS d", 0, NULL, NULL,
                               NULL);
    if (!res) {
        s_row_db_fail(r);
        return NULL;
    }
    const char *d = bf_arena_strndup(r->arena, bf_db_str(res, 0, "d"), 10);
    PQclear(res);
    if (!d) s_oom(r);
    return d;
}

static int s_date(bf_req_t *r, const msgpack_object *o, const char *key, const char **out)
{
    int rc = s_opt(r, o, key, 10, out);
    if (rc != 0) return rc;
    if (bf_valid_date(*out, strlen(*out), NULL, NULL, NULL) != 0)
        return bf_req_fail(r, BF_E_INVALID, key, "%s must be a date YYYY-MM-DD", key);
    return 0;
}

/* A village's region, with the scope check (field names the row's cell). */
static int s_village_inside(bf_req_t *r, const char *field, int64_t vid)
{
    const char *p[] = {bf_req_itoa(r, vid)};
    PGresult *res = s_q(r, "oi_village_region", "SELECT region_code FROM village WHERE id = $1",
                        1, p);
    if (!res) return -1;
    bool inside = PQntuples(res) > 0 && bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
    PQclear(res);
    if (!inside)
        return bf_req_fail(r, BF_E_PERMISSION, field,
                           "%s lies outside the region the caller is bound to", field);
    return 0;
}

/* A household: its head's ID number (never echoed) or its id. */
static int s_household_ref(bf_req_t *r, const char *field, const char *ref, int64_t *id)
{
    size_t n = strlen(ref);
    PGresult *res;
    if (n == BF_ID_LEN || n == BF_ID_LEN + 1) {
        char idn[BF_ID_LEN + 1];
        int rc = bf_id_check(ref, n, idn);
        if (rc != BF_ID_OK)
            return bf_req_fail(r, BF_E_INVALID, field, "%s: %s", field, bf_id_strerror(rc));
        const char *p[] = {idn};
        res = bf_db_prep(r->db, "oi_hh_by_head",
                         "SELECT h.id, h.status, v.region_code FROM person p "
                         "JOIN household h ON h.id = p.household_id "
                         "JOIN village v ON v.id = h.village_id "
                         "WHERE p.id_number = $1 AND p.relation = 'head'",
                         1, p, NULL, NULL);
        if (!res) return bf_req_db_fail(r); /* no row text: the message is generic */
        if (PQntuples(res) == 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_NOT_FOUND, field,
                               "no household has a head with this ID number");
        }
    } else {
        if (!s_digits(ref, n) || n > 15)
            return bf_req_fail(r, BF_E_INVALID, field,
                               "%s: a household is named by its head's ID number or its id",
                               field);
        const char *p[] = {ref};
        res = s_q(r, "oi_hh_by_id",
                  "SELECT h.id, h.status, v.region_code FROM household h "
                  "JOIN village v ON v.id = h.village_id WHERE h.id = $1::bigint",
                  1, p);
        if (!res) return -1;
        if (PQntuples(res) == 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_NOT_FOUND, field, "no household with id %s", ref);
        }
    }
    *id = bf_db_int(res, 0, "id");
    bool active = !strcmp(bf_db_str(res, 0, "status"), "active");
    bool inside = bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
    PQclear(res);
    if (!inside)
        return bf_req_fail(r, BF_E_PERMISSION, field,
                           "%s lies outside the region the caller is bound to", field);
    if (!active)
        return bf_req_fail(r, BF_E_PRECONDITION, field,
                           "household %" PRId64 " has exited; it takes no new pairings", *id);
    return 0;
}

static const char *const s_pairing_keys[] = {"kind",   "helper",    "helper_unit", "target",
                                             "starts_on", "ends_on", NULL};

static int s_pairing_row(bf_req_t *r, const msgpack_object *o, oi_out_t *out)
{
    const char *kind, *helper, *hunit = NULL, *target, *starts_on = NULL, *ends_on = NULL;
    if (registry_check_keys(r, o, NULL, s_pairing_keys) != 0) return -1;
    if (bf_req_enum(r, o, NULL, "kind", true, registry_pairing_kinds, &kind) != 0) return -1;
    if (s_req(r, o, "helper", 400, &helper) != 0) return -1;
    if (s_opt(r, o, "helper_unit", 200, &hunit) < 0) return -1;
    if (s_req(r, o, "target", 400, &target) != 0) return -1;
    if (s_date(r, o, "starts_on", &starts_on) < 0) return -1;
    if (s_date(r, o, "ends_on", &ends_on) < 0) return -1;
    if (!starts_on && !(starts_on = s_today(r))) return -1;
    if (ends_on && strcmp(ends_on, starts_on) < 0)
        return bf_req_fail(r, BF_E_INVALID, "ends_on", "ends_on is before starts_on");

    /* the helper */
    int64_t helper_id = 0;
    int cap = 0;
    const char *rank = NULL;
    if (!strcmp(kind, "cadre_household")) {
        int64_t unit_id = 0;
        if (hunit && s_unit_by_name(r, "helper_unit", hunit, false, &unit_id, NULL) != 0)
            return -1;
        if (!hunit && !strchr(helper, '/'))
            return bf_req_fail(r, BF_E_INVALID, "helper_unit",
                               "a cadre is named with its unit: helper_unit, or UNIT/NAME");
        if (s_cadre_ref(r, "helper", helper, unit_id, true, &helper_id, NULL, &rank) != 0)
            return -1;
        cap = registry_cap_for_rank(r->svc, rank ? rank : "");
    } else if (!strcmp(kind, "team_village")) {
        const char *p[] = {helper};
        PGresult *res = s_q(r, "oi_team_find", "SELECT id FROM team WHERE name = $1 FOR SHARE",
                            1, p);
        if (!res) return -1;
        if (PQntuples(res) == 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_NOT_FOUND, "helper", "no team named \"%s\"", helper);
        }
        helper_id = bf_db_int(res, 0, "id");
        PQclear(res);
    } else {
        const char *ukind = NULL;
        if (s_unit_by_name(r, "helper", helper, true, &helper_id, &ukind) != 0) return -1;
        if (!strcmp(kind, "helper_household") && (!ukind || strcmp(ukind, "social") != 0))
            return bf_req_fail(r, BF_E_NOT_FOUND, "helper",
                               "\"%s\" is not a social helper (unit of kind social)", helper);
    }

    /* the target */
    int64_t target_id = 0;
    const char *code = NULL;
    if (!strcmp(kind, "district_county")) {
        if (strlen(target) != 12 || bf_division_check(target, 12) != 0)
            return bf_req_fail(r, BF_E_INVALID, "target",
                               "for district_county, target is the county's 12-digit code");
        const char *cp[] = {target};
        PGresult *res = s_q(r, "pairing_county", "SELECT level FROM region WHERE code = $1", 1,
                            cp);
        if (!res) return -1;
        bool ok = PQntuples(res) > 0 && !strcmp(bf_db_str(res, 0, "level"), "county");
        PQclear(res);
        if (!ok) return bf_req_fail(r, BF_E_NOT_FOUND, "target", "no county with code %s", target);
        if (!bf_req_in_region(r, target))
            return bf_req_fail(r, BF_E_PERMISSION, "target",
                               "target lies outside the region the caller is bound to");
        code = target;
        target_id = strtoll(target, NULL, 10);
    } else if (!strcmp(kind, "unit_village") || !strcmp(kind, "team_village")) {
        if (registry_village_ref(r, "target", target, &target_id) != 0) return -1;
        if (s_village_inside(r, "target", target_id) != 0) return -1;
    } else {
        if (s_household_ref(r, "target", target, &target_id) != 0) return -1;
    }

    /* already there: idempotent */
    int dup = pairing_find_active(r, kind, helper_id, target_id, &out->id);
    if (dup < 0) return -1;
    if (dup) {
        out->existing = true;
        return 0;
    }
    /* the cap, counted under the cadre's lock: earlier rows of this call count */
    if (rank && pairing_cap_check(r, "helper", helper_id, rank, cap) != 0) return -1;
    return pairing_insert(r, "target", kind, helper_id, target_id, code, starts_on, ends_on,
                          &out->id);
}

int pairing_import(bf_req_t *r) { return s_run(r, s_pairing_row); }

/* ------------------------------------------------------------ teams */

static const char *const s_team_keys[] = {"name",     "unit",      "leader", "members",
                                          "villages", "starts_on", NULL};

static int s_team_row(bf_req_t *r, const msgpack_object *o, oi_out_t *out)
{
    const char *name, *unit, *leader, *starts_on = NULL;
    const char **members, **villages;
    size_t nmembers, nvillages;
    if (registry_check_keys(r, o, NULL, s_team_keys) != 0) return -1;
    if (s_req(r, o, "name", 200, &name) != 0) return -1;
    if (s_req(r, o, "unit", 200, &unit) != 0) return -1;
    if (s_req(r, o, "leader", 400, &leader) != 0) return -1;
    if (s_items(r, o, "members", 50, &members, &nmembers) != 0) return -1;
    if (s_items(r, o, "villages", 50, &villages, &nvillages) != 0) return -1;
    if (s_date(r, o, "starts_on", &starts_on) < 0) return -1;

    /* a team of this name: nothing to do */
    const char *np[] = {name};
    PGresult *res = s_q(r, "oi_team_exists", "SELECT id FROM team WHERE name = $1", 1, np);
    if (!res) return -1;
    if (PQntuples(res) > 0) {
        out->id = bf_db_int(res, 0, "id");
        out->existing = true;
        PQclear(res);
        return 0;
    }
    PQclear(res);

    int64_t unit_id, leader_id;
    bool party = false;
    if (s_unit_by_name(r, "unit", unit, false, &unit_id, NULL) != 0) return -1;
    if (s_cadre_ref(r, "leader", leader, unit_id, false, &leader_id, &party, NULL) != 0) return -1;
    if (!party)
        return bf_req_fail(r, BF_E_PRECONDITION, "leader",
                           "a team's leader must be a party member (seed 000: 党员干部担任组长)");
    int64_t *mids = bf_arena_alloc(r->arena, (nmembers + 1) * sizeof *mids);
    int64_t *vids = bf_arena_alloc(r->arena, (nvillages + 1) * sizeof *vids);
    if (!mids || !vids) return s_oom(r);
    for (size_t i = 0; i < nmembers; i++) {
        const char *f = bf_arena_printf(r->arena, "members[%zu]", i);
        if (s_cadre_ref(r, f ? f : "members", members[i], unit_id, false, &mids[i], NULL,
                        NULL) != 0)
            return -1;
        if (mids[i] == leader_id)
            return bf_req_fail(r, BF_E_INVALID, f,
                               "the leader is named once, as leader, not among members");
        for (size_t k = 0; k < i; k++)
            if (mids[k] == mids[i])
                return bf_req_fail(r, BF_E_INVALID, f, "%s repeats members[%zu]", f, k);
    }
    for (size_t i = 0; i < nvillages; i++) {
        const char *f = bf_arena_printf(r->arena, "villages[%zu]", i);
        if (registry_village_ref(r, f ? f : "villages", villages[i], &vids[i]) != 0) return -1;
        if (s_village_inside(r, f ? f : "villages", vids[i]) != 0) return -1;
        for (size_t k = 0; k < i; k++)
            if (vids[k] == vids[i])
                return bf_req_fail(r, BF_E_INVALID, f, "%s repeats villages[%zu]", f, k);
    }
    return registry_team_insert(r, name, unit_id, leader_id, mids, nmembers, vids, nvillages,
                                starts_on, "villages", &out->id, NULL);
}

int team_import(bf_req_t *r) { return s_run(r, s_team_row); }
