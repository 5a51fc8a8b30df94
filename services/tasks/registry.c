/* registry.c: owners and targets are registry ids, checked over RPC.
 *
 * Each thread that asks (every RPC worker, the scheduler thread) has its own
 * bf_client (clients are not thread-safe) and a small cache of positive
 * answers, both in thread-specific data freed by a destructor when the thread
 * exits, so no ZeroMQ socket outlives its thread and the context can end. The
 * cache holds only what the tasks service needs (docs/tasks.md, "What is
 * copied"): existence plus a cadre's unit, a team's leader and unit, a
 * household's village and a village's region code, for
 * tasks.registry_cache_ttl_s seconds (0 = no cache). Negative answers are
 * never cached, so an id created a moment ago is found at once. Result maps
 * are read by key; the list fields are read tolerantly (ints, or maps with an
 * id key) so that small shape changes in the registry do not break us.
 */
#include "tasks.h"
#include "bf_client.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_SLOTS 512
#define MAX_IDS 2000

typedef struct {
    char kind[12];
    int64_t id;
    time_t expires;
    tasks_entity_t facts;
} s_entry_t;

typedef struct {
    bf_client_t *client;
    s_entry_t cache[CACHE_SLOTS];
} s_tls_t;

static pthread_key_t s_key;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_tls_free(void *p)
{
    s_tls_t *t = p;
    if (!t) return;
    bf_client_destroy(&t->client);
    free(t);
}

static void s_make_key(void) { pthread_key_create(&s_key, s_tls_free); }

static s_tls_t *s_tls(void)
{
    pthread_once(&s_once, s_make_key);
    s_tls_t *t = pthread_getspecific(s_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        pthread_setspecific(s_key, t);
    }
    return t;
}

void tasks_registry_thread_done(void)
{
    pthread_once(&s_once, s_make_key);
    s_tls_t *t = pthread_getspecific(s_key);
    if (t) {
        pthread_setspecific(s_key, NULL);
        s_tls_free(t);
    }
}

static unsigned s_slot(const char *kind, int64_t id)
{
    unsigned h = 2166136261u;
    for (const char *p = kind; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    h ^= (unsigned)(id ^ (id >> 32));
    h *= 16777619u;
    return h % CACHE_SLOTS;
}

/* Calls the registry: method with {key: id} or {code: code}. On success
 * returns 0 with *reply to destroy. On failure returns -1 with the request
 * failed (not_found naming field, or unavailable) and nothing to destroy. */
/* Sends params (packed) to method on the thread's client. 0 with *reply (ok
 * or not) to destroy, or -1 with the request failed as unavailable. */
static int s_send(bf_req_t *r, const char *method, const msgpack_sbuffer *params,
                  const char *field, bf_reply_t *reply)
{
    const tasks_t *t = tasks_of(r);
    s_tls_t *tls = s_tls();
    if (!tls) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    if (!tls->client) {
        tls->client = bf_client_open("registry", t->registry_rpc, t->registry_timeout_ms);
        if (!tls->client)
            return bf_req_fail(r, BF_E_UNAVAILABLE, field, "cannot reach the registry at %s",
                               t->registry_rpc);
    }
    if (bf_client_call(tls->client, method, params->data, params->size, NULL, reply) != 0) {
        bf_log(BF_WARN, "registry %s: %s", method, reply->message);
        bf_reply_destroy(reply);
        /* drop the socket: whatever it queued for a dead peer goes with it */
        bf_client_destroy(&tls->client);
        return bf_req_fail(r, BF_E_UNAVAILABLE, field, "the registry did not answer %s", method);
    }
    return 0;
}

static int s_call(bf_req_t *r, const char *method, const char *key, int64_t id,
                  const char *code, const char *field, const char *what, bf_reply_t *reply)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (code) {
        msgpack_pack_map(&pk, 1);
        bf_mp_kv_str(&pk, "code", code);
    } else if (key) {
        msgpack_pack_map(&pk, 2);
        bf_mp_kv_int(&pk, key, id);
        bf_mp_kv_int(&pk, "limit", 1000);
    } else {
        msgpack_pack_map(&pk, 1);
        bf_mp_kv_int(&pk, "id", id);
    }
    int rc = s_send(r, method, &sb, field, reply);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) return -1;
    if (reply->ok) return 0;
    char code_s[32], msg[256], rfield[64];
    snprintf(code_s, sizeof code_s, "%s", reply->code);
    snprintf(msg, sizeof msg, "%s", reply->message);
    snprintf(rfield, sizeof rfield, "%s", reply->field);
    bf_reply_destroy(reply);
    if (!strcmp(code_s, BF_E_NOT_FOUND) && strcmp(rfield, "method") != 0) {
        if (code)
            return bf_req_fail(r, BF_E_NOT_FOUND, field, "the registry has no %s with code %s",
                               what, code);
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "the registry has no %s with id %lld", what,
                           (long long)id);
    }
    if (!strcmp(code_s, BF_E_INVALID) && !key)
        return bf_req_fail(r, BF_E_NOT_FOUND, field, "the registry has no %s %lld (%s)", what,
                           (long long)id, msg);
    return bf_req_fail(r, BF_E_UNAVAILABLE, field, "registry %s failed: %s: %s", method, code_s,
                       msg);
}

static int64_t s_int(const msgpack_object *map, const char *key)
{
    int64_t v = 0;
    const msgpack_object *o = bf_mp_get(map, key);
    if (!o || !bf_mp_int(o, &v)) return 0;
    return v;
}

/* Ids from a list of ints or of maps carrying one of idkeys; appended to out
 * (distinct, up to max). */
static void s_collect(const msgpack_object *list, const char *const *idkeys, int64_t *out,
                      size_t *n, size_t max)
{
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) return;
    for (uint32_t i = 0; i < list->via.array.size && *n < max; i++) {
        const msgpack_object *it = &list->via.array.ptr[i];
        int64_t v = 0;
        if (!bf_mp_int(it, &v) && it->type == MSGPACK_OBJECT_MAP) {
            for (const char *const *k = idkeys; *k && v <= 0; k++) v = s_int(it, *k);
        }
        if (v <= 0) continue;
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++) dup = out[j] == v;
        if (!dup) out[(*n)++] = v;
    }
}

static void s_facts(const char *kind, const msgpack_object *res, tasks_entity_t *f)
{
    if (!strcmp(kind, "cadre")) {
        f->unit_id = s_int(res, "unit_id");
        static const char *const keys[] = {"team_id", "id", NULL};
        int64_t ids[4];
        size_t n = 0;
        s_collect(bf_mp_get(res, "team_ids"), keys, ids, &n, 4);
        s_collect(bf_mp_get(res, "teams"), keys, ids, &n, 4);
        f->team_id = n ? ids[0] : s_int(res, "team_id");
    } else if (!strcmp(kind, "team")) {
        f->unit_id = s_int(res, "unit_id");
        f->leader_id = s_int(res, "leader_id");
    } else if (!strcmp(kind, "household")) {
        f->village_id = s_int(res, "village_id");
    }
    if (!strcmp(kind, "village") || !strcmp(kind, "household")) {
        const msgpack_object *rc = bf_mp_get(res, "region_code");
        if (rc && rc->type == MSGPACK_OBJECT_STR && rc->via.str.size == 12)
            snprintf(f->region_code, sizeof f->region_code, "%.*s", 12, rc->via.str.ptr);
    }
}

int tasks_registry_check(bf_req_t *r, const char *kind, int64_t id, const char *field,
                         tasks_entity_t *facts)
{
    const tasks_t *t = tasks_of(r);
    tasks_entity_t local;
    if (!facts) facts = &local;
    memset(facts, 0, sizeof *facts);
    facts->id = id;
    s_tls_t *tls = s_tls();
    time_t now = time(NULL);
    unsigned slot = s_slot(kind, id);
    if (tls && t->cache_ttl_s > 0) {
        s_entry_t *e = &tls->cache[slot];
        if (e->id == id && !strcmp(e->kind, kind) && e->expires > now) {
            *facts = e->facts;
            return 0;
        }
    }
    char method[32];
    snprintf(method, sizeof method, "%s.get", kind);
    bf_reply_t reply;
    if (s_call(r, method, NULL, id, NULL, field, kind, &reply) != 0) return -1;
    if (reply.result && reply.result->type == MSGPACK_OBJECT_MAP)
        s_facts(kind, reply.result, facts);
    bf_reply_destroy(&reply);
    if (tls && t->cache_ttl_s > 0) {
        s_entry_t *e = &tls->cache[slot];
        snprintf(e->kind, sizeof e->kind, "%s", kind);
        e->id = id;
        e->expires = now + t->cache_ttl_s;
        e->facts = *facts;
    }
    return 0;
}

int tasks_registry_region(bf_req_t *r, const char *code, const char *field)
{
    bf_reply_t reply;
    if (s_call(r, "region.get", NULL, 0, code, field, "region", &reply) != 0) return -1;
    bf_reply_destroy(&reply);
    return 0;
}

static int s_ids_out(bf_req_t *r, const int64_t *tmp, size_t n, int64_t **ids, size_t *count,
                     const char *field)
{
    int64_t *out = bf_arena_alloc(r->arena, sizeof *out * (n ? n : 1));
    if (!out) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    if (n) memcpy(out, tmp, sizeof *out * n);
    *ids = out;
    *count = n;
    return 0;
}

int tasks_registry_team_members(bf_req_t *r, int64_t team_id, const char *field, int64_t **ids,
                                size_t *n)
{
    bf_reply_t reply;
    if (s_call(r, "team.get", NULL, team_id, NULL, field, "team", &reply) != 0) return -1;
    static const char *const keys[] = {"cadre_id", "id", NULL};
    int64_t tmp[MAX_IDS];
    size_t k = 0;
    int64_t leader = s_int(reply.result, "leader_id");
    if (leader > 0) tmp[k++] = leader;
    s_collect(bf_mp_get(reply.result, "member_ids"), keys, tmp, &k, MAX_IDS);
    s_collect(bf_mp_get(reply.result, "members"), keys, tmp, &k, MAX_IDS);
    bf_reply_destroy(&reply);
    return s_ids_out(r, tmp, k, ids, n, field);
}

int tasks_registry_responsible(bf_req_t *r, int64_t household_id, const char *field,
                               int64_t **ids, size_t *n)
{
    bf_reply_t reply;
    if (s_call(r, "household.get", NULL, household_id, NULL, field, "household", &reply) != 0)
        return -1;
    static const char *const keys[] = {"cadre_id", "helper_id", "id", NULL};
    int64_t tmp[64];
    size_t k = 0;
    static const char *const lists[] = {"responsible_cadre_ids", "responsible_ids",
                                        "cadre_ids", "responsible", "responsible_cadres",
                                        NULL};
    for (const char *const *l = lists; *l; l++)
        s_collect(bf_mp_get(reply.result, *l), keys, tmp, &k, 64);
    bf_reply_destroy(&reply);
    return s_ids_out(r, tmp, k, ids, n, field);
}

int tasks_registry_unit_teams(bf_req_t *r, int64_t unit_id, const char *field, int64_t **ids,
                              size_t *n)
{
    bf_reply_t reply;
    static const char *const keys[] = {"id", "team_id", NULL};
    int64_t tmp[MAX_IDS];
    size_t k = 0;
    /* team.list {unit_id} pages {items, next_cursor}; 1000 teams per unit is plenty */
    if (s_call(r, "team.list", "unit_id", unit_id, NULL, field, "unit", &reply) != 0) return -1;
    const msgpack_object *items = bf_mp_get(reply.result, "items");
    if (items && items->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < items->via.array.size && k < MAX_IDS; i++) {
            const msgpack_object *it = &items->via.array.ptr[i];
            int64_t u = s_int(it, "unit_id");
            if (u && u != unit_id) continue; /* a registry that ignored the filter */
            int64_t v = s_int(it, "id");
            if (v > 0) tmp[k++] = v;
        }
    } else {
        s_collect(bf_mp_get(reply.result, "team_ids"), keys, tmp, &k, MAX_IDS);
    }
    bf_reply_destroy(&reply);
    return s_ids_out(r, tmp, k, ids, n, field);
}

int tasks_registry_village_units(bf_req_t *r, int64_t village_id, const char *field,
                                 int64_t **ids, size_t *n)
{
    bf_reply_t reply;
    if (s_call(r, "village.get", NULL, village_id, NULL, field, "village", &reply) != 0)
        return -1;
    int64_t tmp[64];
    size_t k = 0;
    const msgpack_object *h = bf_mp_get(reply.result, "helpers");
    if (h && h->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < h->via.array.size && k < 64; i++) {
            const msgpack_object *it = &h->via.array.ptr[i];
            if (!bf_mp_str_eq(bf_mp_get(it, "kind"), "unit_village")) continue;
            int64_t v = s_int(it, "helper_id");
            bool dup = false;
            for (size_t j = 0; j < k && !dup; j++) dup = tmp[j] == v;
            if (v > 0 && !dup) tmp[k++] = v;
        }
    }
    bf_reply_destroy(&reply);
    return s_ids_out(r, tmp, k, ids, n, field);
}

int tasks_registry_household_figures(bf_req_t *r, int64_t household_id, const char *field,
                                     int64_t *income_fen, int64_t *persons)
{
    bf_reply_t reply;
    if (s_call(r, "household.get", NULL, household_id, NULL, field, "household", &reply) != 0)
        return -1;
    *income_fen = s_int(reply.result, "income_fen");
    const msgpack_object *m = bf_mp_get(reply.result, "members");
    *persons = m && m->type == MSGPACK_OBJECT_ARRAY ? (int64_t)m->via.array.size : 0;
    bf_reply_destroy(&reply);
    return 0;
}

int tasks_registry_exits(bf_req_t *r, int64_t year, const char *field, int64_t **village_ids,
                         bool **is_village, size_t *n)
{
    size_t cap = 64, k = 0;
    int64_t *vids = bf_arena_alloc(r->arena, sizeof *vids * cap);
    bool *isv = bf_arena_alloc(r->arena, sizeof *isv * cap);
    char cursor[32] = "";
    for (;;) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, cursor[0] ? 4 : 3);
        bf_mp_kv_str(&pk, "state", "exited");
        bf_mp_kv_int(&pk, "year", year);
        bf_mp_kv_int(&pk, "limit", 1000);
        if (cursor[0]) bf_mp_kv_str(&pk, "cursor", cursor);
        bf_reply_t reply;
        int rc = s_send(r, "exit.list", &sb, field, &reply);
        msgpack_sbuffer_destroy(&sb);
        if (rc != 0) return -1;
        if (!reply.ok) {
            rc = bf_req_fail(r, BF_E_UNAVAILABLE, field, "registry exit.list failed: %s: %s",
                             reply.code, reply.message);
            bf_reply_destroy(&reply);
            return rc;
        }
        const msgpack_object *items = bf_mp_get(reply.result, "items");
        for (uint32_t i = 0; items && items->type == MSGPACK_OBJECT_ARRAY &&
                             i < items->via.array.size;
             i++) {
            const msgpack_object *it = &items->via.array.ptr[i];
            if (k == cap) {
                int64_t *v2 = bf_arena_alloc(r->arena, sizeof *v2 * cap * 2);
                bool *b2 = bf_arena_alloc(r->arena, sizeof *b2 * cap * 2);
                if (!v2 || !b2 || !vids || !isv) {
                    bf_reply_destroy(&reply);
                    return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
                }
                memcpy(v2, vids, sizeof *vids * cap);
                memcpy(b2, isv, sizeof *isv * cap);
                vids = v2;
                isv = b2;
                cap *= 2;
            }
            if (!vids || !isv) break;
            vids[k] = s_int(it, "village_id");
            isv[k] = bf_mp_str_eq(bf_mp_get(it, "kind"), "village");
            if (vids[k] > 0) k++;
        }
        const msgpack_object *next = bf_mp_get(reply.result, "next_cursor");
        cursor[0] = '\0';
        if (next && next->type == MSGPACK_OBJECT_STR && next->via.str.size > 0 &&
            next->via.str.size < sizeof cursor)
            snprintf(cursor, sizeof cursor, "%.*s", (int)next->via.str.size, next->via.str.ptr);
        bf_reply_destroy(&reply);
        if (!cursor[0]) break;
    }
    if (!vids || !isv) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    *village_ids = vids;
    *is_village = isv;
    *n = k;
    return 0;
}
