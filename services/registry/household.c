/* household.c: households (户) and their members (人), the registered poor
 * and low-income households of the seeds, with their categories, causes of
 * poverty and assistance route.
 *
 * A member's resident ID number is personal data: it is validated (GB 11643
 * check digit), stored in full once (person.id_number is unique: one person,
 * one household), masked in every result unless the caller asks to reveal it,
 * and every reveal is recorded in id_reveal in the same transaction. No event
 * and no log line ever carries a full number.
 *
 * household.create and household.import share one path: each row is parsed
 * and validated on its own (s_parse_household), then s_store checks the rows
 * against the database and each other and writes all the good ones with
 * multi-row statements (unnest of array parameters) and one multi-row outbox
 * insert, so an import of thousands of households costs a handful of round
 * trips. A person inserted by a concurrent request between the check and the
 * insert is caught by ON CONFLICT DO NOTHING: that row is taken out again and
 * rejected, the rest of the batch still lands.
 */
#include "registry.h"
#include "bf_db.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_page.h"
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    char id_number[BF_ID_LEN + 1]; /* normalised (upper-case X) */
    const char *relation, *gender, *phone, *labour;
    char birth_date[11];
    bool disability;
    int64_t person_id;
} hh_member_t;

typedef struct {
    int64_t village_id;
    const char *village_ref; /* "village": a name or code, resolved in s_store */
    const char **categories;
    size_t ncategories;
    const char *cause_main;
    const char **secondary;
    size_t nsecondary;
    const char *route;
    int64_t income_fen;
    const char *address, *phone;
    hh_member_t *members;
    size_t nmembers;
    /* outcome of s_store: the new id, or why the row was rejected */
    int64_t id;
    const char *err_code, *err_field, *err_message;
} hh_row_t;

static const char *const s_household_keys[] = {"village_id", "village", "categories", "causes",
                                               "route",      "income_fen", "address", "phone",
                                               "members",    NULL};
/* household.create's params: a household, and the request key every write
 * takes (bf_idem.h), which the dispatcher has checked */
static const char *const s_create_keys[] = {"village_id", "village", "categories", "causes",
                                            "route",      "income_fen", "address", "phone",
                                            "members",    "request_key", NULL};
static const char *const s_member_keys[] = {"name",       "id_number", "relation", "gender",
                                            "phone",      "disability", "labour",  NULL};
static const char *const s_cause_keys[] = {"main", "secondary", NULL};

/* ------------------------------------------------------------ parsing */

/* Sorts codes into the order of their list, so stored arrays are canonical
 * and an update can tell whether anything changed. */
static void s_sort_codes(const char **items, size_t n, const char *const *choices)
{
    for (size_t i = 1; i < n; i++) {
        const char *x = items[i];
        size_t xi = 0;
        while (choices[xi] && choices[xi] != x) xi++;
        size_t j = i;
        while (j > 0) {
            size_t yi = 0;
            while (choices[yi] && choices[yi] != items[j - 1]) yi++;
            if (yi <= xi) break;
            items[j] = items[j - 1];
            j--;
        }
        items[j] = x;
    }
}

static int s_phone(bf_req_t *r, const msgpack_object *in, const char *prefix, const char **out)
{
    int rc = bf_req_str(r, in, prefix, "phone", false, 32, out);
    if (rc != 0) return rc;
    if (**out && !bf_valid_phone(*out, strlen(*out))) {
        const char *f = bf_req_field(r, prefix, "phone");
        return bf_req_fail(r, BF_E_INVALID, f, "%s must be an 11-digit mobile number", f);
    }
    return 0;
}

static int s_parse_member(bf_req_t *r, const msgpack_object *o, const char *prefix,
                          hh_member_t *m)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return bf_req_fail(r, BF_E_INVALID, prefix, "%s must be a map", prefix);
    if (registry_check_keys(r, o, prefix, s_member_keys) != 0) return -1;
    if (bf_req_str(r, o, prefix, "name", true, 200, &m->name) != 0) return -1;
    if (!*m->name) {
        const char *f = bf_req_field(r, prefix, "name");
        return bf_req_fail(r, BF_E_INVALID, f, "%s must not be empty", f);
    }
    const char *idn;
    if (bf_req_str(r, o, prefix, "id_number", true, 64, &idn) != 0) return -1;
    int rc = bf_id_check(idn, strlen(idn), m->id_number);
    if (rc != BF_ID_OK) {
        const char *f = bf_req_field(r, prefix, "id_number");
        return bf_req_fail(r, BF_E_INVALID, f, "%s: %s", f, bf_id_strerror(rc));
    }
    if (bf_req_enum(r, o, prefix, "relation", true, registry_relations, &m->relation) != 0)
        return -1;
    /* GB 11643: the 17th digit is odd for men, even for women */
    const char *by_id = ((m->id_number[16] - '0') % 2) ? "male" : "female";
    m->gender = by_id;
    const char *given = NULL;
    if (bf_req_enum(r, o, prefix, "gender", false, registry_genders, &given) < 0) return -1;
    if (given && strcmp(given, by_id) != 0) {
        const char *f = bf_req_field(r, prefix, "gender");
        return bf_req_fail(r, BF_E_INVALID, f, "%s does not match the ID number", f);
    }
    m->phone = NULL;
    if (s_phone(r, o, prefix, &m->phone) < 0) return -1;
    if (m->phone && !*m->phone) m->phone = NULL;
    m->disability = false;
    if (bf_req_bool(r, o, prefix, "disability", false, &m->disability) < 0) return -1;
    m->labour = NULL;
    if (bf_req_enum(r, o, prefix, "labour", false, registry_labour, &m->labour) < 0) return -1;
    snprintf(m->birth_date, sizeof m->birth_date, "%.4s-%.2s-%.2s", m->id_number + 6,
             m->id_number + 10, m->id_number + 12);
    return 0;
}

static int s_parse_causes(bf_req_t *r, const msgpack_object *in, hh_row_t *h)
{
    const msgpack_object *c;
    if (bf_req_map(r, in, NULL, "causes", true, &c) != 0) return -1;
    if (registry_check_keys(r, c, "causes", s_cause_keys) != 0) return -1;
    if (bf_req_enum(r, c, "causes", "main", true, registry_causes, &h->cause_main) != 0)
        return -1;
    const msgpack_object_array *sec = NULL;
    if (bf_req_list(r, c, "causes", "secondary", false, 12, &sec) < 0) return -1;
    if (registry_enum_list(r, sec, "causes.secondary", registry_causes, &h->secondary,
                           &h->nsecondary) != 0)
        return -1;
    for (size_t i = 0; i < h->nsecondary; i++)
        if (h->secondary[i] == h->cause_main)
            return bf_req_fail(r, BF_E_INVALID,
                               bf_arena_printf(r->arena, "causes.secondary[%zu]", i),
                               "causes.secondary repeats the main cause");
    s_sort_codes(h->secondary, h->nsecondary, registry_causes);
    return 0;
}

/* Validates one household (a household.create params map or one import
 * row); error fields are relative to the map ("members[2].id_number"). */
static int s_parse_household(bf_req_t *r, const msgpack_object *o, hh_row_t *h)
{
    memset(h, 0, sizeof *h);
    if (o->type != MSGPACK_OBJECT_MAP)
        return bf_req_fail(r, BF_E_INVALID, NULL, "a household must be a map");
    if (registry_check_keys(r, o, NULL, o == r->params ? s_create_keys : s_household_keys) != 0)
        return -1;
    int has_vid = bf_req_int(r, o, NULL, "village_id", false, 1, INT64_MAX, &h->village_id);
    if (has_vid < 0) return -1;
    int has_ref = bf_req_str(r, o, NULL, "village", false, 400, &h->village_ref);
    if (has_ref < 0) return -1;
    if (has_vid == 0 && has_ref == 0)
        return bf_req_fail(r, BF_E_INVALID, "village",
                           "name the village once: village_id or village, not both");
    if (has_vid != 0 && has_ref != 0)
        return bf_req_fail(r, BF_E_INVALID, "village_id",
                           "village_id (or village: its name or division code) is required");
    const msgpack_object_array *cats;
    if (bf_req_list(r, o, NULL, "categories", true, 9, &cats) != 0) return -1;
    if (cats->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "categories",
                           "categories must name at least one category");
    if (registry_enum_list(r, cats, "categories", registry_categories, &h->categories,
                           &h->ncategories) != 0)
        return -1;
    s_sort_codes(h->categories, h->ncategories, registry_categories);
    if (s_parse_causes(r, o, h) != 0) return -1;
    if (bf_req_enum(r, o, NULL, "route", true, registry_routes, &h->route) != 0) return -1;
    if (bf_req_int(r, o, NULL, "income_fen", true, 0, INT64_MAX, &h->income_fen) != 0) return -1;
    if (bf_req_str(r, o, NULL, "address", false, 500, &h->address) < 0) return -1;
    if (h->address && !*h->address) h->address = NULL;
    if (s_phone(r, o, NULL, &h->phone) < 0) return -1;
    if (h->phone && !*h->phone) h->phone = NULL;
    const msgpack_object_array *ml;
    if (bf_req_list(r, o, NULL, "members", true, REGISTRY_MAX_MEMBERS, &ml) != 0) return -1;
    if (ml->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "members", "a household has at least one member");
    h->members = bf_arena_alloc(r->arena, ml->size * sizeof *h->members);
    if (!h->members) return bf_req_fail(r, BF_E_EXHAUSTED, "members", "out of memory");
    h->nmembers = ml->size;
    long head = -1;
    for (uint32_t i = 0; i < ml->size; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "members[%u]", i);
        const char *pf = bf_arena_strndup(r->arena, prefix, strlen(prefix));
        if (s_parse_member(r, &ml->ptr[i], pf ? pf : "members", &h->members[i]) != 0) return -1;
        if (!strcmp(h->members[i].relation, "head")) {
            if (head >= 0)
                return bf_req_fail(r, BF_E_INVALID, bf_req_field(r, pf, "relation"),
                                   "a household has exactly one head (members[%ld] is one)",
                                   head);
            head = i;
        }
    }
    if (head < 0)
        return bf_req_fail(r, BF_E_INVALID, "members",
                           "exactly one member must have relation \"head\"");
    return 0;
}

/* ------------------------------------------------------------ storing */

/* ID numbers seen so far: owner -1 = already in the database, else the row
 * that claimed it. Open addressing; lives in the arena. */
typedef struct {
    const char *key;
    long owner;
    int64_t hid; /* owner -1: the household the person is registered in */
} s_slot_t;

typedef struct {
    s_slot_t *slots;
    size_t mask;
} s_idset_t;

static int s_idset_init(bf_arena_t *a, s_idset_t *set, size_t n)
{
    size_t cap = 64;
    while (cap < 2 * n + 1) cap *= 2;
    set->slots = bf_arena_alloc(a, cap * sizeof *set->slots);
    set->mask = cap - 1;
    return set->slots ? 0 : -1;
}

static s_slot_t *s_idset_slot(s_idset_t *set, const char *key)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < BF_ID_LEN && key[i]; i++) h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    size_t i = (size_t)h & set->mask;
    while (set->slots[i].key && strcmp(set->slots[i].key, key) != 0) i = (i + 1) & set->mask;
    return &set->slots[i];
}

static void s_reject(bf_req_t *r, hh_row_t *h, const char *code, const char *field,
                     const char *message)
{
    h->err_code = code;
    h->err_field = field;
    h->err_message = message ? message : "rejected";
    (void)r;
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static bool s_has_id(const int64_t *sorted, size_t n, int64_t id)
{
    return bsearch(&id, sorted, n, sizeof id, s_cmp_i64) != NULL;
}

/* Reads an id column of res into a sorted arena array. */
static int64_t *s_ids_of(bf_req_t *r, PGresult *res, const char *col, size_t *n)
{
    *n = (size_t)PQntuples(res);
    int64_t *ids = bf_arena_alloc(r->arena, (*n + 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i < *n; i++) ids[i] = bf_db_int(res, (int)i, col);
    qsort(ids, *n, sizeof *ids, s_cmp_i64);
    return ids;
}

/* Packs a row as the household.created event data (and create's result). */
static void s_pack_created(msgpack_packer *pk, const hh_row_t *h)
{
    msgpack_pack_map(pk, 8);
    bf_mp_kv_int(pk, "id", h->id);
    bf_mp_kv_int(pk, "village_id", h->village_id);
    bf_mp_key(pk, "categories");
    msgpack_pack_array(pk, h->ncategories);
    for (size_t i = 0; i < h->ncategories; i++) bf_mp_str(pk, h->categories[i]);
    bf_mp_key(pk, "causes");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "main", h->cause_main);
    bf_mp_key(pk, "secondary");
    msgpack_pack_array(pk, h->nsecondary);
    for (size_t i = 0; i < h->nsecondary; i++) bf_mp_str(pk, h->secondary[i]);
    bf_mp_kv_str(pk, "route", h->route);
    bf_mp_kv_int(pk, "income_fen", h->income_fen);
    bf_mp_kv_str(pk, "status", "active");
    bf_mp_key(pk, "members");
    msgpack_pack_array(pk, h->nmembers);
    for (size_t j = 0; j < h->nmembers; j++) {
        const hh_member_t *m = &h->members[j];
        msgpack_pack_map(pk, 4);
        bf_mp_kv_int(pk, "id", m->person_id);
        bf_mp_kv_str(pk, "name", m->name);
        bf_mp_kv_str(pk, "relation", m->relation);
        registry_pack_masked_id(pk, "id_number", m->id_number);
    }
}

/* Comma-joined codes (codes never contain commas) for string_to_array. */
static const char *s_join(bf_req_t *r, const char **items, size_t n)
{
    registry_sb_t sb;
    registry_sb_init(&sb, r->arena);
    for (size_t i = 0; i < n; i++) {
        if (i) registry_sb_addc(&sb, ',');
        registry_sb_adds(&sb, items[i]);
    }
    return registry_sb_str(&sb);
}

/* Fetches n new ids from a sequence. */
static int64_t *s_new_ids(bf_req_t *r, const char *stmt, const char *sql, size_t n)
{
    const char *p[] = {bf_req_itoa(r, (int64_t)n)};
    PGresult *res = bf_db_prep(r->db, stmt, sql, 1, p, NULL, NULL);
    if (!res) return NULL;
    int64_t *ids = NULL;
    if ((size_t)PQntuples(res) == n) {
        ids = bf_arena_alloc(r->arena, (n + 1) * sizeof *ids);
        for (size_t i = 0; ids && i < n; i++) ids[i] = bf_db_int(res, (int)i, "id");
    }
    PQclear(res);
    return ids;
}

static int s_oom(bf_req_t *r) { return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory"); }

/* bf_req_db_fail for statements that carry persons' data: PostgreSQL's
 * message for an unexpected error may quote the failing row (an ID number),
 * so it is not logged here; the well-known conditions map as usual. */
static int s_person_db_fail(bf_req_t *r)
{
    const char *st = bf_db_sqlstate(r->db);
    if (bf_db_is_down(r->db) || !strncmp(st, "08", 2) || !strcmp(st, "57P01") ||
        !strcmp(st, "23505") || !strcmp(st, "40001") || !strcmp(st, "40P01") ||
        !strcmp(st, "55P03") || !strcmp(st, "57014") || !strcmp(st, "23503"))
        return bf_req_db_fail(r);
    bf_log(BF_ERROR, "database error [%s] writing persons in %s (message withheld: it may "
                     "quote personal data)",
           st, r->method ? r->method : "?");
    return bf_req_fail(r, BF_E_INTERNAL, NULL, "internal error");
}

/* Checks the rows that passed s_parse_household against the database and
 * each other, and inserts the good ones with their events, in the caller's
 * open transaction. Sets each row's id or err_*. Returns 0, or -1 with the
 * request failed (a database error: nothing of the batch may be kept). */
static int s_store(bf_req_t *r, hh_row_t *rows, size_t n, bool import)
{
    size_t pending = 0, persons = 0;
    for (size_t i = 0; i < n; i++)
        if (!rows[i].err_code) {
            pending++;
            persons += rows[i].nmembers;
        }
    if (!pending) return 0;

    /* 0. villages named by name or code; each distinct name is looked up once
     * (a file usually names a handful of villages over thousands of rows) */
    for (size_t i = 0; i < n; i++) {
        if (rows[i].err_code || rows[i].village_id) continue;
        size_t same = i;
        for (size_t j = 0; j < i && same == i; j++)
            if (rows[j].village_ref && !strcmp(rows[j].village_ref, rows[i].village_ref) &&
                (rows[j].village_id || (rows[j].err_field && !strcmp(rows[j].err_field, "village"))))
                same = j;
        if (same < i) {
            if (rows[same].village_id)
                rows[i].village_id = rows[same].village_id;
            else
                s_reject(r, &rows[i], rows[same].err_code, "village", rows[same].err_message);
            continue;
        }
        if (registry_village_ref(r, "village", rows[i].village_ref, &rows[i].village_id) == 0)
            continue;
        const char *code = r->err.code;
        if (!strcmp(code, BF_E_UNAVAILABLE) || !strcmp(code, BF_E_INTERNAL) ||
            !strcmp(code, BF_E_EXHAUSTED)) {
            bf_db_rollback(r->db);
            return -1;
        }
        s_reject(r, &rows[i], code, "village",
                 bf_arena_strndup(r->arena, r->err.message, strlen(r->err.message)));
        memset(&r->err, 0, sizeof r->err);
        rows[i].village_id = 0;
    }
    pending = 0;
    for (size_t i = 0; i < n; i++)
        if (!rows[i].err_code) pending++;
    if (!pending) return 0;

    /* 1. villages exist */
    registry_arr_t arr;
    registry_arr_begin(&arr, r->arena);
    for (size_t i = 0; i < n; i++)
        if (!rows[i].err_code) registry_arr_int(&arr, rows[i].village_id);
    const char *vp[] = {registry_arr_end(&arr)};
    if (!vp[0]) return s_oom(r);
    PGresult *res = bf_db_prep(r->db, "hh_villages2",
                               "SELECT id, region_code FROM village WHERE id = ANY($1::bigint[])",
                               1, vp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    size_t nvillages;
    int64_t *villages = s_ids_of(r, res, "id", &nvillages);
    /* villages outside the caller's region (sorted like villages) */
    int64_t *outside = bf_arena_alloc(r->arena, ((size_t)PQntuples(res) + 1) * sizeof *outside);
    size_t noutside = 0;
    for (int k = 0; outside && k < PQntuples(res); k++)
        if (!bf_req_in_region(r, bf_db_str(res, k, "region_code")))
            outside[noutside++] = bf_db_int(res, k, "id");
    PQclear(res);
    if (!villages || !outside) return s_oom(r);
    qsort(outside, noutside, sizeof *outside, s_cmp_i64);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].err_code) continue;
        if (!s_has_id(villages, nvillages, rows[i].village_id))
            s_reject(r, &rows[i], BF_E_NOT_FOUND, "village_id",
                     bf_arena_printf(r->arena, "no village with id %" PRId64,
                                     rows[i].village_id));
        else if (s_has_id(outside, noutside, rows[i].village_id))
            s_reject(r, &rows[i], BF_E_PERMISSION, "village_id",
                     "village_id lies outside the region the caller is bound to");
    }

    /* 2. persons already registered (in any household) */
    s_idset_t seen;
    if (s_idset_init(r->arena, &seen, persons) != 0) return s_oom(r);
    registry_arr_begin(&arr, r->arena);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; !rows[i].err_code && j < rows[i].nmembers; j++)
            registry_arr_str(&arr, rows[i].members[j].id_number);
    const char *ip[] = {registry_arr_end(&arr)};
    if (!ip[0]) return s_oom(r);
    res = bf_db_prep(r->db, "hh_known_ids",
                     "SELECT id_number, household_id FROM person "
                     "WHERE id_number = ANY($1::char(18)[])", 1, ip,
                     NULL, NULL);
    if (!res) return s_person_db_fail(r);
    for (int k = 0; k < PQntuples(res); k++) {
        char *key = bf_arena_strndup(r->arena, PQgetvalue(res, k, 0), BF_ID_LEN);
        if (!key) {
            PQclear(res);
            return s_oom(r);
        }
        s_slot_t *s = s_idset_slot(&seen, key);
        s->key = key;
        s->owner = -1;
        s->hid = bf_db_int(res, k, "household_id");
    }
    PQclear(res);

    /* 3. each person once: the first row (in order) that can land claims it */
    pending = persons = 0;
    for (size_t i = 0; i < n; i++) {
        hh_row_t *h = &rows[i];
        if (h->err_code) continue;
        for (size_t j = 0; j < h->nmembers && !h->err_code; j++) {
            const char *key = h->members[j].id_number;
            const char *field = bf_arena_printf(r->arena, "members[%zu].id_number", j);
            s_slot_t *s = s_idset_slot(&seen, key);
            if (s->key && s->owner < 0) {
                /* every member already in that one household: a re-run */
                int64_t hid = s->hid;
                bool same = true;
                for (size_t k = 0; k < h->nmembers && same; k++) {
                    s_slot_t *o = s_idset_slot(&seen, h->members[k].id_number);
                    same = o->key && o->owner < 0 && o->hid == hid;
                }
                s_reject(r, h, BF_E_EXISTS, field,
                         same ? bf_arena_printf(r->arena,
                                                "already imported: this household is registered "
                                                "as household %" PRId64,
                                                hid)
                              : "this person is already registered in another household");
                break;
            }
            if (s->key) {
                s_reject(r, h, BF_E_EXISTS, field,
                         import ? bf_arena_printf(r->arena,
                                                  "this person is already in row %ld of this import",
                                                  s->owner)
                                : "this person is already registered in another household");
                break;
            }
            for (size_t k = 0; k < j; k++)
                if (!strcmp(h->members[k].id_number, key)) {
                    s_reject(r, h, BF_E_EXISTS, field,
                             bf_arena_printf(r->arena,
                                             "this person is listed twice in the household "
                                             "(also members[%zu])",
                                             k));
                    break;
                }
        }
        if (h->err_code) continue;
        for (size_t j = 0; j < h->nmembers; j++) {
            s_slot_t *s = s_idset_slot(&seen, h->members[j].id_number);
            s->key = h->members[j].id_number;
            s->owner = (long)i;
        }
        pending++;
        persons += h->nmembers;
    }
    if (!pending) return 0;

    /* 4. ids up front, so persons can point at their household in one go */
    int64_t *hids = s_new_ids(r, "hh_new_ids",
                              "SELECT nextval('household_id_seq') AS id "
                              "FROM generate_series(1, $1::int)",
                              pending);
    int64_t *pids = hids ? s_new_ids(r, "person_new_ids",
                                     "SELECT nextval('person_id_seq') AS id "
                                     "FROM generate_series(1, $1::int)",
                                     persons)
                         : NULL;
    if (!hids || !pids) return bf_db_sqlstate(r->db)[0] ? bf_req_db_fail(r) : s_oom(r);

    /* 5. households, one statement */
    registry_arr_t a_id, a_vid, a_cat, a_cm, a_cs, a_route, a_inc, a_addr, a_phone;
    registry_arr_begin(&a_id, r->arena);
    registry_arr_begin(&a_vid, r->arena);
    registry_arr_begin(&a_cat, r->arena);
    registry_arr_begin(&a_cm, r->arena);
    registry_arr_begin(&a_cs, r->arena);
    registry_arr_begin(&a_route, r->arena);
    registry_arr_begin(&a_inc, r->arena);
    registry_arr_begin(&a_addr, r->arena);
    registry_arr_begin(&a_phone, r->arena);
    size_t hk = 0, pk = 0;
    for (size_t i = 0; i < n; i++) {
        hh_row_t *h = &rows[i];
        if (h->err_code) continue;
        h->id = hids[hk++];
        for (size_t j = 0; j < h->nmembers; j++) h->members[j].person_id = pids[pk++];
        registry_arr_int(&a_id, h->id);
        registry_arr_int(&a_vid, h->village_id);
        registry_arr_str(&a_cat, s_join(r, h->categories, h->ncategories));
        registry_arr_str(&a_cm, h->cause_main);
        registry_arr_str(&a_cs, s_join(r, h->secondary, h->nsecondary));
        registry_arr_str(&a_route, h->route);
        registry_arr_int(&a_inc, h->income_fen);
        registry_arr_str(&a_addr, h->address);
        registry_arr_str(&a_phone, h->phone);
    }
    const char *hp[] = {registry_arr_end(&a_id),    registry_arr_end(&a_vid),
                        registry_arr_end(&a_cat),   registry_arr_end(&a_cm),
                        registry_arr_end(&a_cs),    registry_arr_end(&a_route),
                        registry_arr_end(&a_inc),   registry_arr_end(&a_addr),
                        registry_arr_end(&a_phone), r->actor};
    for (int k = 0; k < 9; k++)
        if (!hp[k]) return s_oom(r);
    res = bf_db_prep(
        r->db, "hh_insert",
        "INSERT INTO household (id, village_id, categories, cause_main, cause_secondary, route, "
        "  income_fen, address, phone, created_by) "
        "SELECT u.id, u.vid, string_to_array(u.cats, ','), u.cm, "
        "  COALESCE(string_to_array(NULLIF(u.cs, ''), ','), '{}'), u.route, u.inc, u.addr, "
        "  u.phone, $10 "
        "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], "
        "  $7::bigint[], $8::text[], $9::text[]) AS u(id, vid, cats, cm, cs, route, inc, addr, "
        "  phone)",
        10, hp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);

    /* 6. persons, one statement, in ID-number order so that two concurrent
     * imports take the unique-index locks in the same order (no deadlock) */
    registry_arr_t m_id, m_hid, m_name, m_idn, m_rel, m_gender, m_birth, m_dis, m_lab, m_phone;
    registry_arr_begin(&m_id, r->arena);
    registry_arr_begin(&m_hid, r->arena);
    registry_arr_begin(&m_name, r->arena);
    registry_arr_begin(&m_idn, r->arena);
    registry_arr_begin(&m_rel, r->arena);
    registry_arr_begin(&m_gender, r->arena);
    registry_arr_begin(&m_birth, r->arena);
    registry_arr_begin(&m_dis, r->arena);
    registry_arr_begin(&m_lab, r->arena);
    registry_arr_begin(&m_phone, r->arena);
    for (size_t i = 0; i < n; i++) {
        hh_row_t *h = &rows[i];
        if (h->err_code) continue;
        for (size_t j = 0; j < h->nmembers; j++) {
            hh_member_t *m = &h->members[j];
            registry_arr_int(&m_id, m->person_id);
            registry_arr_int(&m_hid, h->id);
            registry_arr_str(&m_name, m->name);
            registry_arr_str(&m_idn, m->id_number);
            registry_arr_str(&m_rel, m->relation);
            registry_arr_str(&m_gender, m->gender);
            registry_arr_str(&m_birth, m->birth_date);
            registry_arr_str(&m_dis, m->disability ? "t" : "f");
            registry_arr_str(&m_lab, m->labour);
            registry_arr_str(&m_phone, m->phone);
        }
    }
    const char *mp[] = {registry_arr_end(&m_id),     registry_arr_end(&m_hid),
                        registry_arr_end(&m_name),   registry_arr_end(&m_idn),
                        registry_arr_end(&m_rel),    registry_arr_end(&m_gender),
                        registry_arr_end(&m_birth),  registry_arr_end(&m_dis),
                        registry_arr_end(&m_lab),    registry_arr_end(&m_phone)};
    for (int k = 0; k < 10; k++)
        if (!mp[k]) return s_oom(r);
    res = bf_db_prep(
        r->db, "person_insert",
        "INSERT INTO person (id, household_id, name, id_number, relation, gender, birth_date, "
        "  disability, labour, phone) "
        "SELECT u.id, u.hid, u.name, u.idn, u.rel, u.gender, u.birth, u.dis, u.lab, u.phone "
        "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], "
        "  $7::date[], $8::boolean[], $9::text[], $10::text[]) "
        "  AS u(id, hid, name, idn, rel, gender, birth, dis, lab, phone) "
        "ORDER BY u.idn "
        "ON CONFLICT (id_number) DO NOTHING RETURNING id",
        10, mp, NULL, NULL);
    if (!res) return s_person_db_fail(r);
    if ((size_t)PQntuples(res) != persons) {
        /* someone registered some of these persons after step 2: take
         * those households out again and reject them */
        size_t ninserted;
        int64_t *inserted = s_ids_of(r, res, "id", &ninserted);
        PQclear(res);
        if (!inserted) return s_oom(r);
        registry_arr_begin(&arr, r->arena);
        for (size_t i = 0; i < n; i++) {
            hh_row_t *h = &rows[i];
            if (h->err_code) continue;
            for (size_t j = 0; j < h->nmembers; j++) {
                if (s_has_id(inserted, ninserted, h->members[j].person_id)) continue;
                s_reject(r, h, BF_E_EXISTS,
                         bf_arena_printf(r->arena, "members[%zu].id_number", j),
                         "this person was registered in another household at the same time");
                registry_arr_int(&arr, h->id);
                h->id = 0;
                break;
            }
        }
        const char *dp[] = {registry_arr_end(&arr)};
        if (!dp[0]) return s_oom(r);
        res = bf_db_prep(r->db, "person_unwind",
                         "DELETE FROM person WHERE household_id = ANY($1::bigint[])", 1, dp,
                         NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        PQclear(res);
        res = bf_db_prep(r->db, "hh_unwind", "DELETE FROM household WHERE id = ANY($1::bigint[])",
                         1, dp, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
    }
    PQclear(res);

    /* 7. one household.created per household, one statement */
    bf_outbox_batch_t *batch = bf_outbox_batch_new(REGISTRY_SERVICE, r->actor);
    if (!batch) return s_oom(r);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer ep;
    msgpack_packer_init(&ep, &sb, msgpack_sbuffer_write);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (rows[i].err_code) continue;
        msgpack_sbuffer_clear(&sb);
        s_pack_created(&ep, &rows[i]);
        rc = bf_outbox_batch_add(batch, "bangfu.registry.household.created",
                                 registry_subject(r, "household", rows[i].id), sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        bf_outbox_batch_destroy(&batch);
        return s_oom(r);
    }
    rc = bf_outbox_batch_insert(batch, r->db);
    bf_outbox_batch_destroy(&batch);
    if (rc != 0) return bf_req_db_fail(r);
    return 0;
}

/* ------------------------------------------------------------ create / import */

int household_create(bf_req_t *r)
{
    hh_row_t row;
    if (s_parse_household(r, r->params, &row) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_store(r, &row, 1, false) != 0) return -1;
    if (row.err_code) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, row.err_code, row.err_field, "%s", row.err_message);
    }
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    s_pack_created(r->out, &row);
    return 0;
}

int household_import(bf_req_t *r)
{
    const msgpack_object_array *list;
    if (bf_req_list(r, r->params, NULL, "rows", true, REGISTRY_MAX_IMPORT_ROWS, &list) != 0)
        return -1;
    size_t n = list->size;
    hh_row_t *rows = bf_arena_alloc(r->arena, (n + 1) * sizeof *rows);
    if (!rows) return s_oom(r);
    for (size_t i = 0; i < n; i++) {
        if (s_parse_household(r, &list->ptr[i], &rows[i]) == 0) continue;
        if (!strcmp(r->err.code, BF_E_EXHAUSTED)) return -1;
        rows[i].err_code = r->err.code;
        rows[i].err_field =
            r->err.field[0] ? bf_arena_strndup(r->arena, r->err.field, strlen(r->err.field))
                            : NULL;
        rows[i].err_message = bf_arena_strndup(r->arena, r->err.message, strlen(r->err.message));
        memset(&r->err, 0, sizeof r->err);
    }
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (s_store(r, rows, n, true) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);

    size_t accepted = 0;
    for (size_t i = 0; i < n; i++)
        if (!rows[i].err_code) accepted++;
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "accepted", (int64_t)accepted);
    bf_mp_key(r->out, "rejected");
    msgpack_pack_array(r->out, n - accepted);
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].err_code) continue;
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "row", (int64_t)i);
        bf_mp_kv_str(r->out, "field", rows[i].err_field);
        bf_mp_kv_str(r->out, "code", rows[i].err_code);
        bf_mp_kv_str(r->out, "message", rows[i].err_message);
    }
    bf_mp_key(r->out, "ids");
    msgpack_pack_array(r->out, n);
    for (size_t i = 0; i < n; i++) {
        if (rows[i].err_code)
            msgpack_pack_nil(r->out);
        else
            msgpack_pack_int64(r->out, rows[i].id);
    }
    return 0;
}

/* ------------------------------------------------------------ reads */

static void s_pack_causes(msgpack_packer *pk, const PGresult *res, int row)
{
    bf_mp_key(pk, "causes");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "main", bf_db_str(res, row, "cause_main"));
    bf_mp_key(pk, "secondary");
    registry_pack_text_array(pk, bf_db_str(res, row, "cause_secondary"));
}

static void s_pack_member(msgpack_packer *pk, const PGresult *res, int row, bool reveal)
{
    msgpack_pack_map(pk, 8);
    bf_mp_kv_int(pk, "id", bf_db_int(res, row, "id"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, row, "name"));
    if (reveal)
        bf_mp_kv_str(pk, "id_number", bf_db_str(res, row, "id_number"));
    else
        registry_pack_masked_id(pk, "id_number", bf_db_str(res, row, "id_number"));
    bf_mp_kv_str(pk, "relation", bf_db_str(res, row, "relation"));
    bf_mp_kv_str(pk, "gender", bf_db_str(res, row, "gender"));
    bf_mp_kv_str(pk, "phone", bf_db_str(res, row, "phone"));
    bf_mp_kv_bool(pk, "disability", bf_db_bool(res, row, "disability"));
    bf_mp_kv_str(pk, "labour", bf_db_str(res, row, "labour"));
}

/* No birth_date: the ID number's digits 7-14 are never shown unrevealed. */
#define S_MEMBER_COLS \
    "id, household_id, name, id_number, relation, gender, phone, disability, labour"

/* household.get and household.reveal read a household in ONE statement: the
 * household row (part 0), its members (1, head first), its active responsible
 * cadres (2) and social helpers (3), as rows of generic text columns c1..c13
 * sorted by (part, k1, k2). $1 id, $2 region pattern, $3 cadre id (scope). */
static const char *const s_hh_get_sql =
    "WITH h AS (SELECT h.id, h.village_id, v.name AS village_name, v.region_code, "
    "    h.categories, h.cause_main, h.cause_secondary, h.route, h.income_fen, h.address, "
    "    h.phone, h.status, h.created_at, h.updated_at "
    "  FROM household h JOIN village v ON v.id = h.village_id "
    "  WHERE h.id = $1 AND " REGISTRY_HH_VISIBLE("h.id", "v.region_code", "$2", "$3") ") "
    "SELECT 0 AS part, 0 AS k1, 0::bigint AS k2, h.village_id::text AS c1, "
    "  h.village_name AS c2, h.region_code::text AS c3, h.categories::text AS c4, "
    "  h.cause_main AS c5, h.cause_secondary::text AS c6, h.route AS c7, "
    "  h.income_fen::text AS c8, h.address AS c9, h.phone AS c10, h.status AS c11, "
    "  " REGISTRY_TS("h.created_at") " AS c12, " REGISTRY_TS("h.updated_at") " AS c13 FROM h "
    "UNION ALL SELECT 1, (p.relation <> 'head')::int, p.id, p.id::text, p.name, "
    "  p.id_number::text, p.relation, p.gender, p.phone, p.disability::text, p.labour, "
    "  NULL, NULL, NULL, NULL, NULL "
    "  FROM h JOIN person p ON p.household_id = h.id "
    "UNION ALL SELECT 2, 0, pr.id, pr.id::text, c.id::text, c.name, c.rank, c.unit_id::text, "
    "  c.phone, pr.starts_on::text, pr.ends_on::text, NULL, NULL, NULL, NULL, NULL "
    "  FROM h JOIN pairing pr ON pr.kind = 'cadre_household' AND pr.target_id = h.id "
    "    AND pr.ended_at IS NULL JOIN cadre c ON c.id = pr.helper_id "
    "UNION ALL SELECT 3, 0, pr.id, pr.id::text, u.id::text, u.name, u.contact_cadre_id::text, "
    "  pr.starts_on::text, pr.ends_on::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "  FROM h JOIN pairing pr ON pr.kind = 'helper_household' AND pr.target_id = h.id "
    "    AND pr.ended_at IS NULL JOIN unit u ON u.id = pr.helper_id "
    "ORDER BY part, k1, k2";

#define s_c registry_c
#define s_ci registry_ci
#define s_kv_ci registry_kv_ci

/* Packs the result of s_hh_get_sql (row 0 is the household). */
static void s_pack_household(msgpack_packer *pk, const PGresult *res, int64_t id, bool reveal)
{
    int n = PQntuples(res), count[4] = {0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        int64_t part = bf_db_int(res, i, "part");
        if (part >= 0 && part < 4) count[part]++;
    }
    msgpack_pack_map(pk, 18);
    bf_mp_kv_int(pk, "id", id);
    bf_mp_kv_int(pk, "village_id", s_ci(res, 0, 1));
    bf_mp_kv_str(pk, "village_name", s_c(res, 0, 2));
    bf_mp_kv_str(pk, "region_code", s_c(res, 0, 3));
    bf_mp_key(pk, "categories");
    registry_pack_text_array(pk, s_c(res, 0, 4));
    bf_mp_key(pk, "causes");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "main", s_c(res, 0, 5));
    bf_mp_key(pk, "secondary");
    registry_pack_text_array(pk, s_c(res, 0, 6));
    bf_mp_kv_str(pk, "route", s_c(res, 0, 7));
    bf_mp_kv_int(pk, "income_fen", s_ci(res, 0, 8));
    bf_mp_kv_str(pk, "address", s_c(res, 0, 9));
    bf_mp_kv_str(pk, "phone", s_c(res, 0, 10));
    bf_mp_kv_str(pk, "status", s_c(res, 0, 11));
    bf_mp_kv_str(pk, "created_at", s_c(res, 0, 12));
    bf_mp_kv_str(pk, "updated_at", s_c(res, 0, 13));
    bf_mp_kv_bool(pk, "id_numbers_revealed", reveal);
    bf_mp_key(pk, "members");
    msgpack_pack_array(pk, (size_t)count[1]);
    for (int i = 0; i < n; i++) {
        if (bf_db_int(res, i, "part") != 1) continue;
        msgpack_pack_map(pk, 8);
        bf_mp_kv_int(pk, "id", s_ci(res, i, 1));
        bf_mp_kv_str(pk, "name", s_c(res, i, 2));
        if (reveal)
            bf_mp_kv_str(pk, "id_number", s_c(res, i, 3));
        else
            registry_pack_masked_id(pk, "id_number", s_c(res, i, 3));
        bf_mp_kv_str(pk, "relation", s_c(res, i, 4));
        bf_mp_kv_str(pk, "gender", s_c(res, i, 5));
        bf_mp_kv_str(pk, "phone", s_c(res, i, 6));
        const char *dis = s_c(res, i, 7);
        bf_mp_kv_bool(pk, "disability", dis && dis[0] == 't');
        bf_mp_kv_str(pk, "labour", s_c(res, i, 8));
    }
    bf_mp_key(pk, "responsible_cadre_ids");
    msgpack_pack_array(pk, (size_t)count[2]);
    for (int i = 0; i < n; i++)
        if (bf_db_int(res, i, "part") == 2) msgpack_pack_int64(pk, s_ci(res, i, 2));
    bf_mp_key(pk, "responsible");
    msgpack_pack_array(pk, (size_t)count[2]);
    for (int i = 0; i < n; i++) {
        if (bf_db_int(res, i, "part") != 2) continue;
        msgpack_pack_map(pk, 8);
        bf_mp_kv_int(pk, "pairing_id", s_ci(res, i, 1));
        bf_mp_kv_int(pk, "cadre_id", s_ci(res, i, 2));
        bf_mp_kv_str(pk, "name", s_c(res, i, 3));
        bf_mp_kv_str(pk, "rank", s_c(res, i, 4));
        bf_mp_kv_int(pk, "unit_id", s_ci(res, i, 5));
        bf_mp_kv_str(pk, "phone", s_c(res, i, 6));
        bf_mp_kv_str(pk, "starts_on", s_c(res, i, 7));
        bf_mp_kv_str(pk, "ends_on", s_c(res, i, 8));
    }
    bf_mp_key(pk, "helpers");
    msgpack_pack_array(pk, (size_t)count[3]);
    for (int i = 0; i < n; i++) {
        if (bf_db_int(res, i, "part") != 3) continue;
        msgpack_pack_map(pk, 6);
        bf_mp_kv_int(pk, "pairing_id", s_ci(res, i, 1));
        bf_mp_kv_int(pk, "unit_id", s_ci(res, i, 2));
        bf_mp_kv_str(pk, "name", s_c(res, i, 3));
        s_kv_ci(pk, "contact_cadre_id", res, i, 4);
        bf_mp_kv_str(pk, "starts_on", s_c(res, i, 5));
        bf_mp_kv_str(pk, "ends_on", s_c(res, i, 6));
    }
}

/* household.get: one statement, masked, scoped (a household the caller may
 * not see is not found). Full numbers only through household.reveal. */
int household_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    const msgpack_object *rv = bf_mp_get(r->params, "reveal");
    if (rv && rv->type != MSGPACK_OBJECT_NIL)
        return bf_req_fail(r, BF_E_INVALID, "reveal",
                           "household.get never reveals ID numbers: call household.reveal "
                           "{id, reason} (auditor role; every reveal is recorded)");
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id), sc.region, sc.cadre};
    PGresult *res = bf_db_prep(r->db, "hh_get1", s_hh_get_sql, 3, p, NULL, NULL);
    if (!res) return s_person_db_fail(r);
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no household with id %" PRId64, id);
    }
    s_pack_household(r->out, res, id, false);
    PQclear(res);
    return 0;
}

/* household.reveal: the full ID numbers of a household's members, for an
 * auditor with a reason. In one transaction: the household is read, one
 * id_reveal row per member records principal, actor, reason, peer, request
 * and time, one person.revealed event per member (no number in it) is
 * written, and only after the commit is the answer packed. */
int household_reveal(bf_req_t *r)
{
    int64_t id;
    const char *reason;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "reason", true, 1000, &reason) != 0) return -1;
    if (!reason[strspn(reason, " \t\r\n")])
        return bf_req_fail(r, BF_E_INVALID, "reason",
                           "reason must say why the ID numbers are needed");
    if (!r->actor)
        return bf_req_fail(r, BF_E_UNAUTHENTICATED, "actor",
                           "revealing ID numbers is recorded: the request must name its actor");
    const char *principal = r->principal && *r->principal ? r->principal : r->actor;
    const char *peer = r->peer && *r->peer ? r->peer : NULL;
    PGresult *res = NULL, *rv = NULL;
    bf_outbox_batch_t *batch = NULL;
    int rc = -1;
    const char *p[] = {bf_req_itoa(r, id), NULL, NULL};
    if (bf_db_begin(r->db) != 0) {
        bf_req_db_fail(r);
        goto cleanup;
    }
    res = bf_db_prep(r->db, "hh_get1", s_hh_get_sql, 3, p, NULL, NULL);
    if (!res) {
        s_person_db_fail(r);
        goto cleanup;
    }
    if (PQntuples(res) == 0 || bf_db_int(res, 0, "part") != 0) {
        bf_db_rollback(r->db);
        bf_req_fail(r, BF_E_NOT_FOUND, "id", "no household with id %" PRId64, id);
        goto cleanup;
    }
    if (registry_region_denied(r, "id", s_c(res, 0, 3)) != 0) goto cleanup;
    const char *rp[] = {p[0], r->actor, r->id, r->method, principal, reason, peer};
    rv = bf_db_prep(r->db, "hh_reveal2",
                    "INSERT INTO id_reveal (person_id, actor, request_id, method, principal, "
                    "  reason, peer) "
                    "SELECT id, $2, $3, $4, $5, $6, $7 FROM person WHERE household_id = $1 "
                    "ORDER BY id RETURNING person_id",
                    7, rp, NULL, NULL);
    if (!rv) {
        bf_req_db_fail(r);
        goto cleanup;
    }
    batch = bf_outbox_batch_new(REGISTRY_SERVICE, r->actor);
    if (!batch) {
        s_oom(r);
        goto cleanup;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer ep;
    msgpack_packer_init(&ep, &sb, msgpack_sbuffer_write);
    int erc = 0;
    for (int i = 0; i < PQntuples(rv) && erc == 0; i++) {
        int64_t pid = bf_db_int(rv, i, "person_id");
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&ep, 4);
        bf_mp_kv_int(&ep, "person_id", pid);
        bf_mp_kv_int(&ep, "household_id", id);
        bf_mp_kv_str(&ep, "actor", r->actor);
        bf_mp_kv_str(&ep, "principal", principal);
        erc = bf_outbox_batch_add(batch, "bangfu.registry.person.revealed",
                                  registry_subject(r, "person", pid), sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    if (erc != 0) {
        s_oom(r);
        goto cleanup;
    }
    if (bf_outbox_batch_insert(batch, r->db) != 0 || bf_db_commit(r->db) != 0) {
        bf_req_db_fail(r);
        goto cleanup;
    }
    s_pack_household(r->out, res, id, true);
    rc = 0;
cleanup:
    bf_outbox_batch_destroy(&batch);
    PQclear(res);
    PQclear(rv);
    return rc;
}

/* household.list: optional filters joined into the WHERE clause; each
 * combination of filters is its own prepared statement, so each gets a plan
 * that uses the right index. */
int household_list(bf_req_t *r)
{
    int64_t village_id = 0, after, limit;
    const char *region = NULL, *route = NULL, *category = NULL, *status = NULL;
    bool uncovered = false, has_uncovered = false;
    if (bf_req_int(r, r->params, NULL, "village_id", false, 1, INT64_MAX, &village_id) < 0)
        return -1;
    if (registry_code_param(r, "region_code", false, &region) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "route", false, registry_routes, &route) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "category", false, registry_categories, &category) < 0)
        return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, registry_hh_status, &status) < 0)
        return -1;
    int u = bf_req_bool(r, r->params, NULL, "uncovered", false, &uncovered);
    if (u < 0) return -1;
    has_uncovered = u == 0;
    if (bf_page_params(r, &after, &limit) != 0) return -1;
    registry_scope_t sc;
    if (registry_scope(r, &sc) != 0) return -1;

    const char *params[12];
    int np = 0;
    unsigned mask = 0;
    registry_sb_t sql;
    registry_sb_init(&sql, r->arena);
    registry_sb_adds(&sql,
                     "SELECT h.id, h.village_id, h.categories, h.cause_main, h.cause_secondary, "
                     "  h.route, h.income_fen, h.status, "
                     "  EXISTS (SELECT 1 FROM pairing p WHERE p.kind = 'cadre_household' "
                     "    AND p.target_id = h.id AND p.ended_at IS NULL) AS covered "
                     "FROM household h ");
    if (region || sc.region) registry_sb_adds(&sql, "JOIN village v ON v.id = h.village_id ");
    params[np++] = bf_req_itoa(r, after);
    registry_sb_adds(&sql, "WHERE h.id > $1::bigint ");
#define S_FILTER(bit, cond, value)                                       \
    do {                                                                 \
        mask |= (bit);                                                   \
        params[np++] = (value);                                          \
        registry_sb_adds(&sql, "AND ");                                  \
        registry_sb_add(&sql, cond, strlen(cond));                       \
        registry_sb_addi(&sql, np);                                      \
        registry_sb_adds(&sql, " ");                                     \
    } while (0)
    if (village_id) S_FILTER(1u, "h.village_id = $", bf_req_itoa(r, village_id));
    if (region)
        S_FILTER(2u, "v.region_code::text LIKE $",
                 bf_arena_printf(r->arena, "%.*s%%", registry_prefix_len(region), region));
    if (route) S_FILTER(4u, "h.route = $", route);
    if (category) S_FILTER(8u, "h.categories @> ARRAY[$", category);
    if (category) registry_sb_adds(&sql, "::text] ");
    if (status) S_FILTER(16u, "h.status = $", status);
    /* the caller's scope: its region, or (a cadre) its own households */
    if (sc.region) S_FILTER(128u, "v.region_code::text LIKE $", sc.region);
    if (sc.cadre) {
        S_FILTER(256u,
                 "EXISTS (SELECT 1 FROM pairing sp WHERE sp.kind = 'cadre_household' "
                 "AND sp.target_id = h.id AND sp.ended_at IS NULL AND sp.helper_id = $",
                 sc.cadre);
        registry_sb_adds(&sql, "::bigint) ");
    }
#undef S_FILTER
    if (has_uncovered) {
        mask |= uncovered ? 32u : 64u;
        registry_sb_adds(&sql, uncovered ? "AND NOT " : "AND ");
        registry_sb_adds(&sql, "EXISTS (SELECT 1 FROM pairing p WHERE p.kind = 'cadre_household' "
                               "AND p.target_id = h.id AND p.ended_at IS NULL) ");
    }
    params[np++] = bf_req_itoa(r, limit + 1);
    registry_sb_adds(&sql, "ORDER BY h.id LIMIT $");
    registry_sb_addi(&sql, np);
    registry_sb_adds(&sql, "::int");
    const char *text = registry_sb_str(&sql);
    const char *stmt = bf_arena_printf(r->arena, "hh_list_%x", mask);
    if (!text || !stmt) return s_oom(r);
    PGresult *res = bf_db_prep(r->db, stmt, text, np, params, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int shown = bf_page_shown(res, limit);
    registry_arr_t ids;
    registry_arr_begin(&ids, r->arena);
    for (int i = 0; i < shown; i++) registry_arr_int(&ids, bf_db_int(res, i, "id"));
    const char *mp[] = {registry_arr_end(&ids)};
    PGresult *mem = mp[0] ? bf_db_prep(r->db, "hh_list_members",
                                       "SELECT " S_MEMBER_COLS " FROM person "
                                       "WHERE household_id = ANY($1::bigint[]) "
                                       "ORDER BY household_id, (relation = 'head') DESC, id",
                                       1, mp, NULL, NULL)
                          : NULL;
    if (!mem) {
        PQclear(res);
        return mp[0] ? bf_req_db_fail(r) : s_oom(r);
    }
    msgpack_packer *pk = r->out;
    bf_page_begin(r, res, limit);
    int mrow = 0, nmem = PQntuples(mem);
    for (int i = 0; i < shown; i++) {
        int64_t hid = bf_db_int(res, i, "id");
        msgpack_pack_map(pk, 9);
        bf_mp_kv_int(pk, "id", hid);
        bf_mp_kv_int(pk, "village_id", bf_db_int(res, i, "village_id"));
        bf_mp_key(pk, "categories");
        registry_pack_text_array(pk, bf_db_str(res, i, "categories"));
        s_pack_causes(pk, res, i);
        bf_mp_kv_str(pk, "route", bf_db_str(res, i, "route"));
        bf_mp_kv_int(pk, "income_fen", bf_db_int(res, i, "income_fen"));
        bf_mp_kv_str(pk, "status", bf_db_str(res, i, "status"));
        bf_mp_kv_bool(pk, "covered", bf_db_bool(res, i, "covered"));
        while (mrow < nmem && bf_db_int(mem, mrow, "household_id") < hid) mrow++;
        int first = mrow;
        while (mrow < nmem && bf_db_int(mem, mrow, "household_id") == hid) mrow++;
        bf_mp_key(pk, "members");
        msgpack_pack_array(pk, (size_t)(mrow - first));
        for (int k = first; k < mrow; k++) s_pack_member(pk, mem, k, false);
    }
    bf_page_end(r, res, limit, "id");
    PQclear(mem);
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------------ update */

/* Packs {old, new} for a text[] of codes, given PostgreSQL's text and ours. */
static void s_pack_change_codes(msgpack_packer *pk, const char *key, const char *old_lit,
                                const char **items, size_t n)
{
    bf_mp_key(pk, key);
    msgpack_pack_map(pk, 2);
    bf_mp_key(pk, "old");
    registry_pack_text_array(pk, old_lit);
    bf_mp_key(pk, "new");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) bf_mp_str(pk, items[i]);
}

/* "{a,b}" as PostgreSQL prints a text[] of codes. */
static const char *s_codes_lit(bf_req_t *r, const char **items, size_t n)
{
    registry_sb_t sb;
    registry_sb_init(&sb, r->arena);
    registry_sb_addc(&sb, '{');
    for (size_t i = 0; i < n; i++) {
        if (i) registry_sb_addc(&sb, ',');
        registry_sb_adds(&sb, items[i]);
    }
    registry_sb_addc(&sb, '}');
    return registry_sb_str(&sb);
}

static bool s_same(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static void s_pack_change_str(msgpack_packer *pk, const char *key, const char *old_v,
                              const char *new_v)
{
    bf_mp_key(pk, key);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "old", old_v);
    bf_mp_kv_str(pk, "new", new_v);
}

int household_update(bf_req_t *r)
{
    int64_t id, income = 0;
    hh_row_t nw;
    memset(&nw, 0, sizeof nw);
    const char *route = NULL, *address = NULL, *phone = NULL, *status = NULL;
    const msgpack_object_array *cats = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    int has_cats = bf_req_list(r, r->params, NULL, "categories", false, 9, &cats);
    if (has_cats < 0) return -1;
    if (has_cats == 0) {
        if (cats->size == 0)
            return bf_req_fail(r, BF_E_INVALID, "categories",
                               "categories must name at least one category");
        if (registry_enum_list(r, cats, "categories", registry_categories, &nw.categories,
                               &nw.ncategories) != 0)
            return -1;
        s_sort_codes(nw.categories, nw.ncategories, registry_categories);
    }
    bool has_causes = bf_mp_get(r->params, "causes") &&
                      bf_mp_get(r->params, "causes")->type != MSGPACK_OBJECT_NIL;
    if (has_causes && s_parse_causes(r, r->params, &nw) != 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "route", false, registry_routes, &route) < 0) return -1;
    int has_income = bf_req_int(r, r->params, NULL, "income_fen", false, 0, INT64_MAX, &income);
    if (has_income < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "address", false, 500, &address) < 0) return -1;
    if (s_phone(r, r->params, NULL, &phone) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, registry_hh_status, &status) < 0)
        return -1;
    /* a household leaves the register by the exit procedure (exit.c); only
     * an admin may correct the status directly */
    if (status && !bf_req_has_role(r, 0))
        return bf_req_fail(r, BF_E_PERMISSION, "status",
                           "status changes by the exit procedure (household.exit_review, "
                           "exit_verify, exit_approve); only admin may correct it directly");
    if (has_cats != 0 && !has_causes && !route && has_income != 0 && !address && !phone &&
        !status)
        return bf_req_fail(r, BF_E_INVALID, NULL,
                           "nothing to update: give at least one of categories, causes, route, "
                           "income_fen, address, phone, status");

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *old = bf_db_prep(r->db, "hh_lock2",
                               "SELECT h.categories, h.cause_main, h.cause_secondary, h.route, "
                               "  h.income_fen, h.address, h.phone, h.status, v.region_code "
                               "FROM household h JOIN village v ON v.id = h.village_id "
                               "WHERE h.id = $1 FOR UPDATE OF h",
                               1, p, NULL, NULL);
    if (!old) return bf_req_db_fail(r);
    if (PQntuples(old) == 0) {
        PQclear(old);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no household with id %" PRId64, id);
    }
    if (!bf_req_in_region(r, bf_db_str(old, 0, "region_code"))) {
        PQclear(old);
        return registry_region_denied(r, "id", NULL);
    }
    const char *o_cats = bf_db_str(old, 0, "categories"), *o_cm = bf_db_str(old, 0, "cause_main");
    const char *o_cs = bf_db_str(old, 0, "cause_secondary"), *o_route = bf_db_str(old, 0, "route");
    const char *o_inc = bf_db_str(old, 0, "income_fen"), *o_addr = bf_db_str(old, 0, "address");
    const char *o_phone = bf_db_str(old, 0, "phone"), *o_status = bf_db_str(old, 0, "status");

    /* the new values: given ones, else the old ones; "" clears address/phone */
    const char *n_cats = has_cats == 0 ? s_codes_lit(r, nw.categories, nw.ncategories) : o_cats;
    const char *n_cm = has_causes ? nw.cause_main : o_cm;
    const char *n_cs = has_causes ? s_codes_lit(r, nw.secondary, nw.nsecondary) : o_cs;
    const char *n_route = route ? route : o_route;
    const char *n_inc = has_income == 0 ? bf_req_itoa(r, income) : o_inc;
    const char *n_addr = address ? (*address ? address : NULL) : o_addr;
    const char *n_phone = phone ? (*phone ? phone : NULL) : o_phone;
    const char *n_status = status ? status : o_status;
    if (!n_cats || !n_cs || !n_inc) {
        PQclear(old);
        return s_oom(r);
    }
    bool c_cats = !s_same(n_cats, o_cats);
    bool c_causes = !s_same(n_cm, o_cm) || !s_same(n_cs, o_cs);
    bool c_route = !s_same(n_route, o_route), c_inc = !s_same(n_inc, o_inc);
    bool c_addr = !s_same(n_addr, o_addr), c_phone = !s_same(n_phone, o_phone);
    bool c_status = !s_same(n_status, o_status);
    size_t nchanged = (size_t)c_cats + c_causes + c_route + c_inc + c_addr + c_phone + c_status;

    if (nchanged) {
        const char *up[] = {p[0], n_cats, n_cm, n_cs, n_route, n_inc, n_addr, n_phone, n_status,
                            r->actor};
        PGresult *res = bf_db_prep(
            r->db, "hh_update",
            "UPDATE household SET categories = $2::text[], cause_main = $3, "
            "  cause_secondary = $4::text[], route = $5, income_fen = $6::bigint, address = $7, "
            "  phone = $8, status = $9, updated_by = $10, updated_at = now() WHERE id = $1",
            10, up, NULL, NULL);
        if (!res) {
            PQclear(old);
            return bf_req_db_fail(r);
        }
        PQclear(res);
        bf_event_t ev;
        msgpack_packer *pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 2);
        bf_mp_kv_int(pk, "id", id);
        bf_mp_key(pk, "changes");
        msgpack_pack_map(pk, nchanged);
        if (c_cats) s_pack_change_codes(pk, "categories", o_cats, nw.categories, nw.ncategories);
        if (c_causes) {
            bf_mp_key(pk, "causes");
            msgpack_pack_map(pk, 2);
            bf_mp_key(pk, "old");
            msgpack_pack_map(pk, 2);
            bf_mp_kv_str(pk, "main", o_cm);
            bf_mp_key(pk, "secondary");
            registry_pack_text_array(pk, o_cs);
            bf_mp_key(pk, "new");
            msgpack_pack_map(pk, 2);
            bf_mp_kv_str(pk, "main", n_cm);
            bf_mp_key(pk, "secondary");
            registry_pack_text_array(pk, n_cs);
        }
        if (c_route) s_pack_change_str(pk, "route", o_route, n_route);
        if (c_inc) {
            bf_mp_key(pk, "income_fen");
            msgpack_pack_map(pk, 2);
            bf_mp_kv_int(pk, "old", strtoll(o_inc, NULL, 10));
            bf_mp_kv_int(pk, "new", strtoll(n_inc, NULL, 10));
        }
        if (c_addr) s_pack_change_str(pk, "address", o_addr, n_addr);
        if (c_phone) s_pack_change_str(pk, "phone", o_phone, n_phone);
        if (c_status) s_pack_change_str(pk, "status", o_status, n_status);
        if (registry_emit(r, &ev, "household.updated", registry_subject(r, "household", id)) !=
            0) {
            PQclear(old);
            return -1;
        }
    }
    PQclear(old);
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_key(r->out, "changed");
    msgpack_pack_array(r->out, nchanged);
    if (c_cats) bf_mp_str(r->out, "categories");
    if (c_causes) bf_mp_str(r->out, "causes");
    if (c_route) bf_mp_str(r->out, "route");
    if (c_inc) bf_mp_str(r->out, "income_fen");
    if (c_addr) bf_mp_str(r->out, "address");
    if (c_phone) bf_mp_str(r->out, "phone");
    if (c_status) bf_mp_str(r->out, "status");
    return 0;
}

/* ------------------------------------------------------------ members */

int household_add_member(bf_req_t *r)
{
    int64_t hid;
    const msgpack_object *mo;
    hh_member_t m;
    memset(&m, 0, sizeof m);
    if (bf_req_int(r, r->params, NULL, "household_id", true, 1, INT64_MAX, &hid) != 0) return -1;
    if (bf_req_map(r, r->params, NULL, "member", true, &mo) != 0) return -1;
    if (s_parse_member(r, mo, "member", &m) != 0) return -1;
    if (!strcmp(m.relation, "head"))
        return bf_req_fail(r, BF_E_PRECONDITION, "member.relation",
                           "the household already has its head");
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, hid)};
    PGresult *res = bf_db_prep(r->db, "hh_lock_count2",
                               "SELECT (SELECT count(*) FROM person WHERE household_id = h.id) AS n, "
                               "  v.region_code FROM household h "
                               "JOIN village v ON v.id = h.village_id WHERE h.id = $1 FOR UPDATE OF h",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res) > 0;
    int64_t count = found ? bf_db_int(res, 0, "n") : 0;
    bool inside = found && bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "household_id", "no household with id %" PRId64,
                           hid);
    }
    if (!inside) return registry_region_denied(r, "household_id", NULL);
    if (count >= REGISTRY_MAX_MEMBERS) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "household_id",
                           "a household has at most %d members", REGISTRY_MAX_MEMBERS);
    }
    const char *ip[] = {p[0], m.name, m.id_number, m.relation, m.gender, m.birth_date,
                        m.disability ? "t" : "f", m.labour, m.phone};
    res = bf_db_prep(r->db, "person_add",
                     "INSERT INTO person (household_id, name, id_number, relation, gender, "
                     "  birth_date, disability, labour, phone) "
                     "VALUES ($1, $2, $3, $4, $5, $6::date, $7::boolean, $8, $9) "
                     "ON CONFLICT (id_number) DO NOTHING RETURNING id",
                     9, ip, NULL, NULL);
    if (!res) return s_person_db_fail(r);
    if (PQntuples(res) == 0) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_EXISTS, "member.id_number",
                           "this person is already registered in a household");
    }
    int64_t pid = bf_db_int(res, 0, "id");
    PQclear(res);
    res = bf_db_prep(r->db, "hh_touch",
                     "UPDATE household SET updated_at = now(), updated_by = $2 WHERE id = $1", 2,
                     (const char *[]){p[0], r->actor}, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "household_id", hid);
    bf_mp_kv_int(pk, "person_id", pid);
    bf_mp_kv_str(pk, "relation", m.relation);
    registry_pack_masked_id(pk, "id_number", m.id_number);
    if (registry_emit(r, &ev, "household.member_added", registry_subject(r, "household", hid)) !=
        0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "household_id", hid);
    bf_mp_kv_int(r->out, "person_id", pid);
    return 0;
}

/* A member leaves (moved away, married out, died): the person's row moves to
 * person_removed with who, when and why, so the history stays and the ID
 * number may be registered in another household. The head stays: change the
 * head by adding the new member first (a later version may add a method to
 * hand over the head role). */
int household_remove_member(bf_req_t *r)
{
    int64_t hid, pid;
    const char *reason;
    if (bf_req_int(r, r->params, NULL, "household_id", true, 1, INT64_MAX, &hid) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "person_id", true, 1, INT64_MAX, &pid) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "reason", true, 1000, &reason) != 0) return -1;
    if (!reason[strspn(reason, " \t\r\n")])
        return bf_req_fail(r, BF_E_INVALID, "reason", "reason must not be empty");
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, hid), bf_req_itoa(r, pid), r->actor, reason};
    PGresult *res = bf_db_prep(r->db, "hh_lock_only2",
                               "SELECT v.region_code FROM household h "
                               "JOIN village v ON v.id = h.village_id WHERE h.id = $1 "
                               "FOR UPDATE OF h",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res) > 0;
    bool inside = found && bf_req_in_region(r, bf_db_str(res, 0, "region_code"));
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "household_id", "no household with id %" PRId64,
                           hid);
    }
    if (!inside) return registry_region_denied(r, "household_id", NULL);
    res = bf_db_prep(r->db, "person_relation",
                     "SELECT relation FROM person WHERE id = $2 AND household_id = $1", 2, p,
                     NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    const char *rel = PQntuples(res) ? bf_db_str(res, 0, "relation") : NULL;
    rel = rel ? bf_arena_strndup(r->arena, rel, strlen(rel)) : NULL;
    found = PQntuples(res) > 0;
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "person_id",
                           "household %" PRId64 " has no member with id %" PRId64, hid, pid);
    }
    if (!rel) return s_oom(r);
    if (!strcmp(rel, "head")) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_PRECONDITION, "person_id",
                           "the head of the household cannot be removed");
    }
    res = bf_db_prep(r->db, "person_remove",
                     "WITH gone AS (DELETE FROM person WHERE id = $2 AND household_id = $1 "
                     "  RETURNING *) "
                     "INSERT INTO person_removed (id, household_id, name, id_number, relation, "
                     "  gender, birth_date, disability, labour, phone, created_at, removed_by, "
                     "  reason) "
                     "SELECT id, household_id, name, id_number, relation, gender, birth_date, "
                     "  disability, labour, phone, created_at, $3, $4 FROM gone",
                     4, p, NULL, NULL);
    if (!res) return s_person_db_fail(r);
    PQclear(res);
    res = bf_db_prep(r->db, "hh_touch",
                     "UPDATE household SET updated_at = now(), updated_by = $2 WHERE id = $1", 2,
                     (const char *[]){p[0], r->actor}, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "household_id", hid);
    bf_mp_kv_int(pk, "person_id", pid);
    bf_mp_kv_str(pk, "relation", rel);
    bf_mp_kv_str(pk, "reason", reason);
    if (registry_emit(r, &ev, "household.member_removed",
                      registry_subject(r, "household", hid)) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "household_id", hid);
    bf_mp_kv_int(r->out, "person_id", pid);
    bf_mp_kv_bool(r->out, "removed", true);
    return 0;
}
