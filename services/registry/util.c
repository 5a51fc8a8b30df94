/* util.c: what the registry's handlers share: the code lists, parameter
 * helpers the method table cannot express (nested lists of codes, dates),
 * PostgreSQL array literals for multi-row statements, and packing helpers
 * (paging is libcommon's bf_page). Everything allocates from the request
 * arena, so no error path in a handler has anything to free here. */
#include "registry.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const registry_categories[] = {
    "dibao",             /* 低保 */
    "low_income",        /* 低收入 */
    "extreme_poverty",   /* 特困供养 */
    "orphan",            /* 散居孤儿 */
    "left_behind_child", /* 留守儿童 */
    "left_behind_elderly", /* 留守老人 */
    "disabled",          /* 残疾 */
    "serious_illness",   /* 大病 */
    "registered_poor",   /* 建档立卡 */
    NULL};
const char *const registry_causes[] = {
    "illness",        "disability", "lack_of_labour", "education", "lack_of_skills",
    "lack_of_land",   "lack_of_water", "disaster",    "lack_of_funds", "transport",
    "self_motivation", "other",     NULL};
const char *const registry_routes[] = {"employment", "industry", "safety_net", NULL};
const char *const registry_relations[] = {"head",       "spouse",  "child", "parent",
                                          "grandchild", "sibling", "other", NULL};
const char *const registry_genders[] = {"male", "female", NULL};
const char *const registry_labour[] = {"skilled", "ordinary", "weak", "lost", "none", NULL};
const char *const registry_hh_status[] = {"active", "exited", NULL};
const char *const registry_unit_kinds[] = {"department", "enterprise", "street",
                                           "party_office", "social", NULL};
const char *const registry_ranks[] = {"county", "division", "section", "general", "village",
                                      NULL};
const char *const registry_pairing_kinds[] = {"unit_village", "team_village", "cadre_household",
                                              "district_county", "helper_household", NULL};

/* ------------------------------------------------------------ strings */

void registry_sb_init(registry_sb_t *b, bf_arena_t *arena)
{
    memset(b, 0, sizeof *b);
    b->arena = arena;
}

static bool s_sb_reserve(registry_sb_t *b, size_t more)
{
    if (b->oom) return false;
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char *s = bf_arena_alloc(b->arena, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    if (b->len) memcpy(s, b->s, b->len);
    b->s = s;
    b->cap = cap;
    return true;
}

void registry_sb_add(registry_sb_t *b, const char *s, size_t n)
{
    if (!s_sb_reserve(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void registry_sb_adds(registry_sb_t *b, const char *s) { registry_sb_add(b, s, strlen(s)); }

void registry_sb_addc(registry_sb_t *b, char c) { registry_sb_add(b, &c, 1); }

void registry_sb_addi(registry_sb_t *b, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    registry_sb_add(b, buf, (size_t)n);
}

const char *registry_sb_str(registry_sb_t *b)
{
    if (b->oom) return NULL;
    if (!b->s) registry_sb_add(b, "", 0);
    if (!s_sb_reserve(b, 0)) return NULL;
    return b->s;
}

void registry_arr_begin(registry_arr_t *a, bf_arena_t *arena)
{
    registry_sb_init(&a->sb, arena);
    a->n = 0;
    registry_sb_addc(&a->sb, '{');
}

void registry_arr_str(registry_arr_t *a, const char *s)
{
    if (a->n++) registry_sb_addc(&a->sb, ',');
    if (!s) {
        registry_sb_adds(&a->sb, "NULL");
        return;
    }
    size_t n = strlen(s);
    if (!s_sb_reserve(&a->sb, 2 * n + 2)) return;
    char *w = a->sb.s + a->sb.len;
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') *w++ = '\\';
        *w++ = s[i];
    }
    *w++ = '"';
    a->sb.len = (size_t)(w - a->sb.s);
    a->sb.s[a->sb.len] = '\0';
}

void registry_arr_int(registry_arr_t *a, int64_t v)
{
    if (a->n++) registry_sb_addc(&a->sb, ',');
    registry_sb_addi(&a->sb, v);
}

const char *registry_arr_end(registry_arr_t *a)
{
    registry_sb_addc(&a->sb, '}');
    return registry_sb_str(&a->sb);
}

/* ------------------------------------------------------------ packing */

void registry_pack_text_array(msgpack_packer *pk, const char *lit)
{
    /* the array output format: elements separated by commas, quoted with
     * "..." and backslash escapes when needed; two passes (count, pack) so
     * there is no limit on the number of elements */
    const char *start = lit && *lit == '{' ? lit + 1 : "}";
    for (int pass = 0; pass < 2; pass++) {
        size_t n = 0;
        const char *p = start;
        char buf[512];
        while (*p && *p != '}') {
            size_t len = 0;
            if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1]) p++;
                    if (len < sizeof buf) buf[len++] = *p;
                    p++;
                }
                if (*p == '"') p++;
            } else {
                while (*p && *p != ',' && *p != '}') {
                    if (len < sizeof buf) buf[len++] = *p;
                    p++;
                }
            }
            if (pass == 1) bf_mp_strn(pk, buf, len);
            n++;
            if (*p == ',') p++;
        }
        if (pass == 0) msgpack_pack_array(pk, n);
    }
}

const char *registry_text_array(bf_req_t *r, const msgpack_object_array *list,
                                const char *field, size_t max_item)
{
    registry_arr_t a;
    registry_arr_begin(&a, r->arena);
    for (uint32_t i = 0; list && i < list->size; i++) {
        const msgpack_object *o = &list->ptr[i];
        if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
            o->via.str.size > max_item || !bf_valid_utf8(o->via.str.ptr, o->via.str.size)) {
            bf_req_fail(r, BF_E_INVALID, bf_arena_printf(r->arena, "%s[%u]", field, i),
                        "%s[%u] must be a non-empty string of at most %zu bytes", field, i,
                        max_item);
            return NULL;
        }
        char *s = bf_arena_strndup(r->arena, o->via.str.ptr, o->via.str.size);
        if (!s) break;
        registry_arr_str(&a, s);
    }
    const char *lit = registry_arr_end(&a);
    if (!lit) bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    return lit;
}

void registry_pack_masked_id(msgpack_packer *pk, const char *key, const char *id18)
{
    char masked[BF_ID_LEN + 1];
    bf_id_mask(id18 ? id18 : "", masked);
    bf_mp_kv_str(pk, key, masked);
}

/* ------------------------------------------------------------ params */

int registry_prefix_len(const char *code)
{
    const char *level = bf_division_level(code);
    if (!level) return 12;
    if (!strcmp(level, "province")) return 2;
    if (!strcmp(level, "city")) return 4;
    if (!strcmp(level, "county")) return 6;
    if (!strcmp(level, "township")) return 9;
    return 12;
}

int registry_code_param(bf_req_t *r, const char *key, bool required, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, key, required, 12, out);
    if (rc != 0) return rc;
    if (bf_division_check(*out, strlen(*out)) != 0)
        return bf_req_fail(r, BF_E_INVALID, key,
                           "%s must be a 12-digit statistical division code", key);
    return 0;
}

int registry_check_keys(bf_req_t *r, const msgpack_object *map, const char *prefix,
                        const char *const *allowed)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        bool known = false;
        for (const char *const *a = allowed; *a && k->type == MSGPACK_OBJECT_STR; a++) {
            if (bf_mp_str_eq(k, *a)) {
                known = true;
                break;
            }
        }
        if (known) continue;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size > 64 ||
            !bf_valid_utf8(k->via.str.ptr, k->via.str.size))
            return bf_req_fail(r, BF_E_INVALID, prefix, "%s has a key that is not a short string",
                               prefix ? prefix : "params");
        char *name = bf_arena_strndup(r->arena, k->via.str.ptr, k->via.str.size);
        const char *field = bf_req_field(r, prefix, name ? name : "?");
        return bf_req_fail(r, BF_E_INVALID, field, "unknown field %s", field);
    }
    return 0;
}

int registry_enum_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                       const char *const *choices, const char ***out, size_t *n)
{
    size_t count = list ? list->size : 0;
    const char **items = bf_arena_alloc(r->arena, (count + 1) * sizeof *items);
    if (!items) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const msgpack_object *o = &list->ptr[i];
        const char *hit = NULL;
        for (const char *const *c = choices; *c && o->type == MSGPACK_OBJECT_STR; c++) {
            if (bf_mp_str_eq(o, *c)) {
                hit = *c;
                break;
            }
        }
        const char *f = bf_arena_printf(r->arena, "%s[%zu]", field, i);
        if (!hit) {
            char list_text[320] = "";
            size_t w = 0;
            for (const char *const *c = choices; *c && w < sizeof list_text - 40; c++)
                w += (size_t)snprintf(list_text + w, sizeof list_text - w, "%s%s", w ? ", " : "",
                                      *c);
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be one of: %s", f ? f : field,
                               list_text);
        }
        for (size_t k = 0; k < i; k++)
            if (items[k] == hit)
                return bf_req_fail(r, BF_E_INVALID, f, "%s repeats %s", field, hit);
        items[i] = hit;
    }
    *out = items;
    *n = count;
    return 0;
}

int registry_id_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                     int64_t **out, size_t *n)
{
    size_t count = list ? list->size : 0;
    int64_t *ids = bf_arena_alloc(r->arena, (count + 1) * sizeof *ids);
    if (!ids) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    for (size_t i = 0; i < count; i++) {
        int64_t v;
        const char *f = bf_arena_printf(r->arena, "%s[%zu]", field, i);
        if (!bf_mp_int(&list->ptr[i], &v) || v < 1)
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be a positive integer id",
                               f ? f : field);
        for (size_t k = 0; k < i; k++)
            if (ids[k] == v)
                return bf_req_fail(r, BF_E_INVALID, f, "%s repeats id %lld", field,
                                   (long long)v);
        ids[i] = v;
    }
    *out = ids;
    *n = count;
    return 0;
}

int registry_date_param(bf_req_t *r, const char *key, bool required, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, key, required, 10, out);
    if (rc != 0) return rc;
    if (bf_valid_date(*out, strlen(*out), NULL, NULL, NULL) != 0)
        return bf_req_fail(r, BF_E_INVALID, key, "%s must be a date YYYY-MM-DD", key);
    return 0;
}

const char *registry_subject(bf_req_t *r, const char *entity, int64_t id)
{
    const char *s = bf_arena_printf(r->arena, "%s/%" PRId64, entity, id);
    return s ? s : entity;
}

int registry_exists(bf_req_t *r, const char *stmt, const char *sql, int64_t id)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, stmt, sql, 1, p, NULL, NULL);
    if (!res) return -1;
    int found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/* ------------------------------------------------------------ scope */

bool registry_cadre_only(const bf_req_t *r)
{
    return (r->roles & BF_ROLE_CADRE) &&
           !(r->roles & (BF_ROLE_ADMIN | BF_ROLE_OPERATOR | BF_ROLE_AUDITOR | BF_ROLE_SERVICE));
}

int registry_scope(bf_req_t *r, registry_scope_t *s)
{
    s->region = NULL;
    s->cadre = NULL;
    if (r->region && *r->region) {
        const char *p = bf_req_region_prefix(r);
        s->region = p ? bf_arena_printf(r->arena, "%s%%", p) : NULL;
        if (!s->region) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    if (registry_cadre_only(r)) {
        /* cadre 0 (none bound) matches no pairing: fails closed */
        s->cadre = bf_req_itoa(r, r->cadre_id > 0 ? r->cadre_id : 0);
        if (!s->cadre) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    }
    return 0;
}

int registry_region_denied(bf_req_t *r, const char *field, const char *code)
{
    if (bf_req_in_region(r, code)) return 0;
    if (bf_db_in_tx(r->db)) bf_db_rollback(r->db);
    return bf_req_fail(r, BF_E_PERMISSION, field,
                       "%s lies outside the region the caller is bound to (%s)", field,
                       r->region ? r->region : "?");
}

/* ------------------------------------------------------------ one-statement reads */

const char *registry_c(const PGresult *res, int row, int col)
{
    char name[8];
    snprintf(name, sizeof name, "c%d", col);
    return bf_db_str(res, row, name);
}

int64_t registry_ci(const PGresult *res, int row, int col)
{
    const char *v = registry_c(res, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

void registry_kv_ci(msgpack_packer *pk, const char *key, const PGresult *res, int row, int col)
{
    if (registry_c(res, row, col))
        bf_mp_kv_int(pk, key, registry_ci(res, row, col));
    else
        bf_mp_kv_nil(pk, key);
}

size_t registry_part_count(const PGresult *res, int part)
{
    size_t n = 0;
    for (int i = 0; i < PQntuples(res); i++)
        if (bf_db_int(res, i, "part") == part) n++;
    return n;
}
