/* bf_rpc: ROUTER front, inproc ROUTER back with a queue of free workers (the
 * load-balancing, "LRU" pattern), worker threads, one dispatcher that checks
 * the envelope and the method table before any handler runs. A worker says
 * READY when it starts and, implicitly, with every reply; the front reads a
 * client request only while a worker is free and hands it to the one free
 * longest, so no request waits behind another's slow one while a worker is
 * idle, and a busy server leaves requests in ZeroMQ's queues (back-pressure).
 * See bf_rpc.h for the contract and docs/protocol.md for the wire format. */
#include "bf_rpc.h"
#include "bf_idem.h"
#include "bf_json.h"
#include "bf_keys.h"
#include "bf_login.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_principals.h"
#include "bf_zap.h"
#include "bf_valid.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

/* ---------------------------------------------------------------- context */

static void *s_ctx;
static pthread_mutex_t s_ctx_lock = PTHREAD_MUTEX_INITIALIZER;

void *bf_zmq_ctx(void)
{
    pthread_mutex_lock(&s_ctx_lock);
    if (!s_ctx) s_ctx = zmq_ctx_new();
    void *c = s_ctx;
    pthread_mutex_unlock(&s_ctx_lock);
    return c;
}

void bf_zmq_ctx_term(void)
{
    bf_zap_stop(); /* its socket must close before the context can end */
    pthread_mutex_lock(&s_ctx_lock);
    if (s_ctx) zmq_ctx_term(s_ctx);
    s_ctx = NULL;
    pthread_mutex_unlock(&s_ctx_lock);
}

/* ---------------------------------------------------------------- errors */

int bf_req_fail(bf_req_t *r, const char *code, const char *field, const char *fmt, ...)
{
    r->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err.message, sizeof r->err.message, fmt, ap);
    va_end(ap);
    snprintf(r->err.field, sizeof r->err.field, "%s", field ? field : "");
    return -1;
}

int bf_req_alone(bf_req_t *r)
{
    if (!r->db || !bf_db_in_group(r->db)) return 0;
    r->alone = true;
    return -1;
}

int bf_req_db_fail(bf_req_t *r)
{
    const char *st = bf_db_sqlstate(r->db);
    if (bf_db_is_down(r->db) || strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0)
        return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "database unavailable, retry later");
    if (strcmp(st, "23505") == 0)
        return bf_req_fail(r, BF_E_EXISTS, NULL, "already exists");
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
        return bf_req_fail(r, BF_E_CONFLICT, NULL, "concurrent change, retry");
    if (strcmp(st, "23503") == 0)
        return bf_req_fail(r, BF_E_NOT_FOUND, NULL, "a referenced entity does not exist");
    if (strcmp(st, "57014") == 0)
        return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "statement timed out, retry later");
    bf_log(BF_ERROR, "database error in %s: [%s] %s", r->method ? r->method : "?", st,
           bf_db_errmsg(r->db));
    return bf_req_fail(r, BF_E_INTERNAL, NULL, "internal error");
}

/* ---------------------------------------------------------------- roles */

static const char *const s_role_names[] = {"admin",   "county_operator", "finance",
                                           "approver", "auditor",         "cadre",
                                           "service",  "subscriber"};

const char *bf_role_name(unsigned bit)
{
    for (unsigned i = 0; i < sizeof s_role_names / sizeof *s_role_names; i++)
        if (bit == (1u << i)) return s_role_names[i];
    return NULL;
}

unsigned bf_role_parse(const char *name)
{
    for (unsigned i = 0; name && i < sizeof s_role_names / sizeof *s_role_names; i++)
        if (!strcmp(name, s_role_names[i])) return 1u << i;
    return 0;
}

void bf_role_list(unsigned mask, char *buf, size_t n)
{
    size_t used = 0;
    if (n) buf[0] = 0;
    for (unsigned i = 0; i < sizeof s_role_names / sizeof *s_role_names && used < n; i++) {
        if (!(mask & (1u << i))) continue;
        int w = snprintf(buf + used, n - used, "%s%s", used ? ", " : "", s_role_names[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

bool bf_req_has_role(const bf_req_t *r, unsigned roles)
{
    return (r->roles & (roles | BF_ROLE_ADMIN)) != 0;
}

void bf_region_prefix(const char *code, char out[13])
{
    size_t n = code ? strnlen(code, 12) : 0;
    size_t keep = n;
    if (n == 12) {
        if (memcmp(code + 9, "000", 3) != 0) keep = 12;
        else if (memcmp(code + 6, "000", 3) != 0) keep = 9;
        else if (memcmp(code + 4, "00", 2) != 0) keep = 6;
        else if (memcmp(code + 2, "00", 2) != 0) keep = 4;
        else keep = 2;
    }
    memcpy(out, code ? code : "", keep);
    out[keep] = 0;
}

bool bf_req_in_region(const bf_req_t *r, const char *code)
{
    if (!r->region || !*r->region) return true;
    if (!code) return false;
    char p[13];
    bf_region_prefix(r->region, p);
    return strncmp(code, p, strlen(p)) == 0;
}

const char *bf_req_region_prefix(bf_req_t *r)
{
    if (!r->region || !*r->region) return NULL;
    char p[13];
    bf_region_prefix(r->region, p);
    return bf_arena_strndup(r->arena, p, strlen(p));
}

/* ---------------------------------------------------------------- params */

const char *bf_req_field(bf_req_t *r, const char *prefix, const char *key)
{
    if (!prefix || !*prefix) return key;
    const char *f = bf_arena_printf(r->arena, "%s.%s", prefix, key);
    return f ? f : key;
}

const char *bf_req_itoa(bf_req_t *r, int64_t v)
{
    return bf_arena_printf(r->arena, "%" PRId64, v);
}

int bf_req_json_column(bf_req_t *r, msgpack_sbuffer *out, const PGresult *res, int row,
                       const char *col, const char *field)
{
    const char *js = bf_db_str(res, row, col);
    if (!js) js = "[]";
    char err[128];
    if (bf_json_to_msgpack(js, strlen(js), out, err, sizeof err) != 0)
        return bf_req_fail(r, BF_E_INTERNAL, field, "%s: %s", field, err);
    return 0;
}

/* Finds key in `in`; NIL counts as absent. */
static const msgpack_object *s_param(const msgpack_object *in, const char *key)
{
    const msgpack_object *o = bf_mp_get(in, key);
    if (o && o->type == MSGPACK_OBJECT_NIL) return NULL;
    return o;
}

static long long s_max_string(const bf_req_t *r)
{
    return r->cfg ? bf_cfg_int(r->cfg, "rpc.max_string_bytes") : 65536;
}

static long long s_max_list(const bf_req_t *r)
{
    return r->cfg ? bf_cfg_int(r->cfg, "rpc.max_list") : 10000;
}

int bf_req_str(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, size_t max, const char **out)
{
    const msgpack_object *o = s_param(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (!o) {
        if (required) return bf_req_fail(r, BF_E_INVALID, field, "%s is required", field);
        return 1;
    }
    if (o->type != MSGPACK_OBJECT_STR)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be a string", field);
    if (max == 0) max = (size_t)s_max_string(r);
    if (o->via.str.size > max)
        return bf_req_fail(r, BF_E_INVALID, field, "%s is longer than %zu bytes", field, max);
    if (!bf_valid_utf8(o->via.str.ptr, o->via.str.size))
        return bf_req_fail(r, BF_E_INVALID, field, "%s is not valid UTF-8 text", field);
    char *s = bf_arena_strndup(r->arena, o->via.str.ptr, o->via.str.size);
    if (!s) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    *out = s;
    return 0;
}

int bf_req_int(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, int64_t min, int64_t max, int64_t *out)
{
    const msgpack_object *o = s_param(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (!o) {
        if (required) return bf_req_fail(r, BF_E_INVALID, field, "%s is required", field);
        return 1;
    }
    int64_t v;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be an integer, not a float", field);
    if (!bf_mp_int(o, &v)) {
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return bf_req_fail(r, BF_E_INVALID, field, "%s overflows a 64-bit integer", field);
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be an integer", field);
    }
    if (v < min || v > max)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be between %lld and %lld", field,
                           (long long)min, (long long)max);
    *out = v;
    return 0;
}

int bf_req_bool(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, bool *out)
{
    const msgpack_object *o = s_param(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (!o) {
        if (required) return bf_req_fail(r, BF_E_INVALID, field, "%s is required", field);
        return 1;
    }
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be true or false", field);
    *out = o->via.boolean;
    return 0;
}

int bf_req_list(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, size_t max, const msgpack_object_array **out)
{
    const msgpack_object *o = s_param(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (!o) {
        if (required) return bf_req_fail(r, BF_E_INVALID, field, "%s is required", field);
        return 1;
    }
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be a list", field);
    if (max == 0) max = (size_t)s_max_list(r);
    if (o->via.array.size > max)
        return bf_req_fail(r, BF_E_INVALID, field, "%s has more than %zu items", field, max);
    *out = &o->via.array;
    return 0;
}

int bf_req_map(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, const msgpack_object **out)
{
    const msgpack_object *o = s_param(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (!o) {
        if (required) return bf_req_fail(r, BF_E_INVALID, field, "%s is required", field);
        return 1;
    }
    if (o->type != MSGPACK_OBJECT_MAP)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be a map", field);
    *out = o;
    return 0;
}

int bf_req_enum(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, const char *const *choices, const char **out)
{
    const char *s;
    int rc = bf_req_str(r, in, prefix, key, required, 64, &s);
    if (rc != 0) return rc;
    for (const char *const *c = choices; *c; c++) {
        if (strcmp(*c, s) == 0) {
            *out = *c;
            return 0;
        }
    }
    char list[256] = "";
    size_t n = 0;
    for (const char *const *c = choices; *c && n < sizeof list - 40; c++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *c);
    const char *field = bf_req_field(r, prefix, key);
    return bf_req_fail(r, BF_E_INVALID, field, "%s must be one of: %s", field, list);
}

/* ---------------------------------------------------------------- server */

typedef struct bf_worker {
    struct bf_rpc_server *server;
    int index;
    pthread_t thread;
    bool started;
    int outstanding;           /* front thread's view: requests out to it, not answered */
    bool queued;               /* front thread's view: in the free queue */
} bf_worker_t;

/* A request read from the front, on its way to a worker: its frames (client
 * routing, body) and the header the front puts in front of them. */
typedef struct {
    zmq_msg_t f[BF_RPC_MAX_FRAMES];
    int n;                     /* frames held (0: slot empty) */
    char hdr[BF_KEY_NAME_MAX + 96];
    int hn;
    bool groupable;
} s_inreq_t;

/* A worker's routing id on the back socket: "w" and its index as 4 bytes. */
#define S_WID_LEN 5
static void s_wid(int index, unsigned char out[S_WID_LEN])
{
    out[0] = 'w';
    for (int i = 0; i < 4; i++) out[1 + i] = (unsigned char)((unsigned)index >> (24 - 8 * i));
}

/* The single frame a worker sends when it is free without a reply. */
#define S_READY "\x01READY"
#define S_READY_LEN 6

struct bf_rpc_server {
    bf_rpc_config_t cfg;
    void *front;
    void *back;
    char back_ep[64];
    bf_worker_t *workers;
    int nworkers;
    atomic_int workers_stop;
    atomic_int workers_ready;
    atomic_int workers_failed;
    atomic_long inflight;
    int *free_q;               /* ring of free worker indexes (front thread only) */
    int free_head, free_count;
    atomic_ullong unroutable;  /* replies the front could not deliver */
    time_t started;
    size_t nmethods;
    atomic_ullong *calls;
    atomic_ullong *failures;
    atomic_ullong total_calls;
    atomic_ullong total_failures;
    atomic_ullong bad_frames;
    atomic_ullong replays;      /* writes answered from a stored request_key reply */
    bool *groupable;            /* per method: may share a commit group */
    int group_max;              /* rpc.group_max */
    long group_lock_ms;         /* rpc.group_lock_timeout_ms */
    s_inreq_t **gq;             /* group_max slots for gathering (front thread) */
    bool pending;               /* gq[0] holds a request read but not yet sent */
    atomic_ullong groups;       /* commit groups committed */
    atomic_ullong grouped;      /* requests that shared a commit group */
    atomic_ullong group_retries; /* members set aside and run again alone */
    atomic_ullong group_failures; /* groups whose COMMIT failed */
    atomic_llong last_prune;    /* when request keys were last pruned (unix s) */
    size_t *budgets;            /* per method: most msgpack objects a request may hold */
    size_t sys_budget;          /* for sys.* and unknown methods */
    size_t max_objects;         /* rpc.max_objects: all requests being decoded at once */
    atomic_size_t objects_in_use;
};

/* The object budget of a method, from its parameter table: a base for the
 * envelope and scalars, 1,024 per map parameter, and per list item 128
 * objects (a record with nested members), or 8 for bulk lists of more than
 * 10,000 items (recipients, lines, ids: small maps or scalars); never more
 * than rpc.max_objects. */
static size_t s_budget_for(const bf_method_t *m, size_t max_list, size_t cap)
{
    size_t b = 1024;
    for (const bf_param_t *p = m->params; p && p->name; p++) {
        if (p->type == BF_T_MAP || p->type == BF_T_ANY) b += 1024;
        if (p->type == BF_T_LIST) {
            size_t items = p->max ? (size_t)p->max : max_list;
            b += items * (items > 10000 ? 8 : 128);
        }
        if (b > cap) return cap;
    }
    return b;
}

static bool s_declares(const bf_method_t *m, const char *name)
{
    for (const bf_param_t *p = m->params; p && p->name; p++)
        if (!strcmp(p->name, name)) return true;
    return false;
}

/* Forgets request keys older than rpc.request_key_ttl_s, a batch at a time,
 * at most once a minute per process (whichever worker comes first). */
static void s_maybe_prune(struct bf_rpc_server *s, bf_req_t *r)
{
    long long now = (long long)time(NULL);
    long long last = atomic_load(&s->last_prune);
    if (now - last < 60 || !atomic_compare_exchange_strong(&s->last_prune, &last, now)) return;
    if (bf_db_in_tx(r->db) || bf_db_in_request_tx(r->db)) return;
    int n = bf_idem_prune(r->db, bf_cfg_int(r->cfg, "rpc.request_key_ttl_s"), 10000);
    if (n > 0) bf_log(BF_INFO, "forgot %d request keys older than the retention", n);
}

static size_t s_method_budget(const struct bf_rpc_server *s, const char *data, size_t len)
{
    const char *name;
    size_t n;
    if (bf_mp_peek_str(data, len, "method", &name, &n) == 0) {
        for (size_t i = 0; i < s->nmethods; i++) {
            const char *mn = s->cfg.methods[i].name;
            if (strlen(mn) == n && memcmp(mn, name, n) == 0) return s->budgets[i];
        }
    }
    return s->sys_budget;
}

static const char *s_type_name(bf_type_t t)
{
    switch (t) {
    case BF_T_STR: return "string";
    case BF_T_INT: return "integer";
    case BF_T_BOOL: return "boolean";
    case BF_T_MAP: return "map";
    case BF_T_LIST: return "list";
    default: return "any";
    }
}

/* Checks one declared parameter's value against its declaration. */
static int s_check_param(bf_req_t *r, const bf_param_t *p, const msgpack_object *v)
{
    switch (p->type) {
    case BF_T_STR: {
        if (v->type != MSGPACK_OBJECT_STR)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be a string", p->name);
        size_t max = p->max ? (size_t)p->max : (size_t)s_max_string(r);
        if (v->via.str.size > max)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s is longer than %zu bytes",
                               p->name, max);
        if (!bf_valid_utf8(v->via.str.ptr, v->via.str.size))
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s is not valid UTF-8 text", p->name);
        return 0;
    }
    case BF_T_INT: {
        int64_t x;
        if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be an integer, not a float",
                               p->name);
        if (!bf_mp_int(v, &x)) {
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                return bf_req_fail(r, BF_E_INVALID, p->name, "%s overflows a 64-bit integer",
                                   p->name);
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be an integer", p->name);
        }
        return 0;
    }
    case BF_T_BOOL:
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be true or false", p->name);
        return 0;
    case BF_T_MAP:
        if (v->type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be a map", p->name);
        return 0;
    case BF_T_LIST: {
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s must be a list", p->name);
        size_t max = p->max ? (size_t)p->max : (size_t)s_max_list(r);
        if (v->via.array.size > max)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s has more than %zu items", p->name,
                               max);
        return 0;
    }
    default: return 0;
    }
}

/* Every string anywhere in the params is bounded by rpc.max_string_bytes,
 * and nested lists (not the top-level ones, which the table bounds) by
 * rpc.max_list. */
static int s_check_deep(bf_req_t *r, const msgpack_object *o, const char *top, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        if (o->via.str.size > (size_t)s_max_string(r))
            return bf_req_fail(r, BF_E_INVALID, top, "a string in %s is too long", top);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        if (depth > 0 && o->via.array.size > (size_t)s_max_list(r))
            return bf_req_fail(r, BF_E_INVALID, top, "a list in %s is too long", top);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (s_check_deep(r, &o->via.array.ptr[i], top, depth + 1)) return -1;
        return 0;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (s_check_deep(r, &o->via.map.ptr[i].key, top, depth + 1)) return -1;
            if (s_check_deep(r, &o->via.map.ptr[i].val, top, depth + 1)) return -1;
        }
        return 0;
    default: return 0;
    }
}

static int s_check_params(bf_req_t *r, const bf_method_t *m)
{
    const msgpack_object *params = r->params;
    for (uint32_t i = 0; i < params->via.map.size; i++) {
        const msgpack_object *k = &params->via.map.ptr[i].key;
        const msgpack_object *v = &params->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size > 64 ||
            !bf_valid_utf8(k->via.str.ptr, k->via.str.size))
            return bf_req_fail(r, BF_E_INVALID, "params", "parameter names must be short strings");
        const bf_param_t *decl = NULL;
        for (const bf_param_t *p = m->params; p && p->name; p++) {
            if (strlen(p->name) == k->via.str.size &&
                memcmp(p->name, k->via.str.ptr, k->via.str.size) == 0) {
                decl = p;
                break;
            }
        }
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)k->via.str.size, k->via.str.ptr);
        if (!decl && m->writes && strcmp(name, "request_key") == 0) {
            /* every write takes a request key (bf_idem.h) */
            if (v->type == MSGPACK_OBJECT_NIL) continue;
            if (v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 ||
                v->via.str.size > BF_IDEM_KEY_MAX ||
                !bf_valid_utf8(v->via.str.ptr, v->via.str.size))
                return bf_req_fail(r, BF_E_INVALID, "request_key",
                                   "request_key must be a string of 1 to %d bytes",
                                   BF_IDEM_KEY_MAX);
            continue;
        }
        if (!decl)
            return bf_req_fail(r, BF_E_INVALID, name, "unknown parameter %s for %s", name,
                               m->name);
        if (v->type == MSGPACK_OBJECT_NIL) continue; /* nil = absent */
        if (s_check_param(r, decl, v) != 0) return -1;
        if (s_check_deep(r, v, decl->name, 0) != 0) return -1;
    }
    for (const bf_param_t *p = m->params; p && p->name; p++) {
        if (!(p->flags & BF_REQ)) continue;
        const msgpack_object *v = bf_mp_get(params, p->name);
        if (!v || v->type == MSGPACK_OBJECT_NIL)
            return bf_req_fail(r, BF_E_INVALID, p->name, "%s is required", p->name);
    }
    return 0;
}

/* An actor (and a principal name) looks like "admin", "cadre:42",
 * "system:scheduler", "finance.zhang": a lower-case first part that starts
 * with a letter (letters, digits, _ - .), then optionally ':' and a tag. */
bool bf_rpc_actor_ok(const char *s, size_t n)
{
    if (n == 0 || n > BF_RPC_MAX_ACTOR) return false;
    if (!(s[0] >= 'a' && s[0] <= 'z')) return false;
    size_t i = 0;
    while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
                     s[i] == '_' || s[i] == '-' || s[i] == '.'))
        i++;
    if (i == n) return true;
    if (s[i] != ':' || i + 1 == n) return false;
    for (i++; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '@'))
            return false;
    }
    return true;
}

/* The envelope's auth map {roles: [str], region: str, cadre_id: int}: who the
 * actor is, as a principal that acts for others (a gateway) vouches. Parsed
 * into *a; the caller decides whether it may be honoured. */
typedef struct {
    bool present, have_roles, have_cadre;
    unsigned roles;
    const char *region; /* NULL = not given */
    int64_t cadre_id;
} s_auth_t;

static int s_parse_auth(bf_req_t *r, const msgpack_object *ao, s_auth_t *a)
{
    memset(a, 0, sizeof *a);
    if (!ao || ao->type == MSGPACK_OBJECT_NIL) return 0;
    if (ao->type != MSGPACK_OBJECT_MAP)
        return bf_req_fail(r, BF_E_INVALID, "auth", "auth must be a map");
    a->present = true;
    for (uint32_t i = 0; i < ao->via.map.size; i++) {
        const msgpack_object *k = &ao->via.map.ptr[i].key;
        const msgpack_object *v = &ao->via.map.ptr[i].val;
        if (bf_mp_str_eq(k, "roles")) {
            if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > 16)
                return bf_req_fail(r, BF_E_INVALID, "auth.roles",
                                   "auth.roles must be a list of role names");
            a->have_roles = true;
            for (uint32_t j = 0; j < v->via.array.size; j++) {
                const msgpack_object *e = &v->via.array.ptr[j];
                char name[32];
                if (e->type != MSGPACK_OBJECT_STR || e->via.str.size >= sizeof name)
                    return bf_req_fail(r, BF_E_INVALID, "auth.roles",
                                       "auth.roles must be a list of role names");
                memcpy(name, e->via.str.ptr, e->via.str.size);
                name[e->via.str.size] = 0;
                unsigned bit = bf_role_parse(name);
                if (!bit)
                    return bf_req_fail(r, BF_E_INVALID, "auth.roles", "unknown role %s", name);
                a->roles |= bit;
            }
        } else if (bf_mp_str_eq(k, "region")) {
            if (v->type == MSGPACK_OBJECT_NIL) continue;
            if (v->type != MSGPACK_OBJECT_STR ||
                bf_division_check(v->via.str.ptr, v->via.str.size) != 0)
                return bf_req_fail(r, BF_E_INVALID, "auth.region",
                                   "auth.region must be a 12-digit division code");
            a->region = bf_arena_strndup(r->arena, v->via.str.ptr, v->via.str.size);
        } else if (bf_mp_str_eq(k, "cadre_id")) {
            int64_t id;
            if (!bf_mp_int(v, &id) || id < 0)
                return bf_req_fail(r, BF_E_INVALID, "auth.cadre_id",
                                   "auth.cadre_id must be a positive integer");
            a->cadre_id = id;
            a->have_cadre = true;
        } else {
            return bf_req_fail(r, BF_E_INVALID, "auth",
                               "unknown auth key (allowed: roles, region, cadre_id)");
        }
    }
    return 0;
}

/* Sets who calls (docs/security.md). In curve mode the caller is the
 * principal the ZAP handler authenticated (its name arrives from the front in
 * the header frame); the envelope's actor may only be absent or that name,
 * unless the principal may act for others: then actor names the person and
 * auth describes them, narrowed by what the principal itself holds (never
 * admin or service unless it holds them; a region within its own). In
 * plaintext mode every caller holds every role and actor/auth are trusted as
 * sent (debugging only). */
static int s_apply_caller(bf_req_t *r, const char *principal, const msgpack_object *ao)
{
    s_auth_t a;
    if (s_parse_auth(r, ao, &a) != 0) return -1;
    if (!bf_security_curve()) {
        if (a.have_roles) r->roles = a.roles;
        if (a.region) r->region = a.region;
        if (a.have_cadre) r->cadre_id = a.cadre_id;
        return 0;
    }
    bf_principal_t p;
    if (!principal || !*principal || bf_principals_by_name(principal, &p) != 0)
        return bf_req_fail(r, BF_E_UNAUTHENTICATED, NULL,
                           "the connection's principal %s is not (or no longer) known",
                           principal && *principal ? principal : "(none)");
    r->principal = bf_arena_strndup(r->arena, p.name, strlen(p.name));
    r->roles = p.roles;
    r->region = p.region[0] ? bf_arena_strndup(r->arena, p.region, strlen(p.region)) : NULL;
    r->cadre_id = p.cadre_id;
    if (!r->principal) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    if (!p.act_for) {
        if (r->actor && strcmp(r->actor, p.name) != 0)
            return bf_req_fail(r, BF_E_PERMISSION, "actor",
                               "principal %s may not act as %s (actor must be absent or %s)",
                               p.name, r->actor, p.name);
        if (a.present)
            return bf_req_fail(r, BF_E_PERMISSION, "auth",
                               "principal %s may not pass auth (it does not act for others)",
                               p.name);
        r->actor = r->principal;
        return 0;
    }
    if (!r->actor) r->actor = r->principal;
    if (a.have_roles) {
        unsigned reserved = (BF_ROLE_ADMIN | BF_ROLE_SERVICE) & a.roles & ~p.roles;
        if (reserved) {
            char names[64];
            bf_role_list(reserved, names, sizeof names);
            return bf_req_fail(r, BF_E_PERMISSION, "auth",
                               "principal %s may not grant %s to the actor it acts for", p.name,
                               names);
        }
        r->roles = a.roles;
    }
    if (a.region) {
        if (!bf_req_in_region(r, a.region))
            return bf_req_fail(r, BF_E_PERMISSION, "auth",
                               "auth.region %s is outside principal %s's region %s", a.region,
                               p.name, r->region);
        r->region = a.region;
    }
    if (a.have_cadre) r->cadre_id = a.cadre_id;
    return 0;
}

/* ------------------------------------------------ built-in sys.* methods */

/* Redis's used_memory and maxmemory (INFO memory), for the maxmemory alert
 * (docs/operations.md). Returns 0, or -1 if Redis did not answer. */
static int s_redis_memory(bf_redis_t *redis, long long *used, long long *max)
{
    redisReply *rep = bf_redis_cmdf(redis, "INFO memory");
    int ok = rep && rep->type == REDIS_REPLY_STRING;
    *used = *max = -1;
    if (ok) {
        for (const char *p = rep->str; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
            if (!strncmp(p, "used_memory:", 12)) *used = strtoll(p + 12, NULL, 10);
            else if (!strncmp(p, "maxmemory:", 10)) *max = strtoll(p + 10, NULL, 10);
        }
        ok = *used >= 0 && *max >= 0;
    }
    if (rep) freeReplyObject(rep);
    return ok ? 0 : -1;
}

static int s_sys_health(bf_req_t *r, struct bf_rpc_server *s)
{
    bool db_ok = false, redis_ok = false;
    if (bf_db_ensure(r->db) == 0) {
        PGresult *res = bf_db_exec(r->db, "SELECT 1", 0, NULL);
        if (res) {
            db_ok = true;
            PQclear(res);
        }
    }
    if (r->redis) redis_ok = bf_redis_ping(r->redis);
    long long used = -1, max = -1;
    bool mem = redis_ok && s_redis_memory(r->redis, &used, &max) == 0;
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_str(r->out, "status", db_ok && redis_ok ? "ok" : "degraded");
    bf_mp_kv_str(r->out, "service", s->cfg.service);
    bf_mp_kv_str(r->out, "version", s->cfg.version);
    bf_mp_kv_int(r->out, "uptime_s", (int64_t)(time(NULL) - s->started));
    bf_mp_kv_str(r->out, "db", db_ok ? "ok" : "down");
    bf_mp_kv_str(r->out, "redis", redis_ok ? "ok" : "down");
    /* redis_memory: {used, max (0: no limit), pct, alert} or nil if unknown */
    bf_mp_key(r->out, "redis_memory");
    if (!mem) {
        msgpack_pack_nil(r->out);
    } else {
        long long pct = max > 0 ? used * 100 / max : 0;
        msgpack_pack_map(r->out, 4);
        bf_mp_kv_int(r->out, "used", used);
        bf_mp_kv_int(r->out, "max", max);
        bf_mp_kv_int(r->out, "pct", pct);
        /* no maxmemory is itself a reason to alert: Redis would grow until
         * the host runs out (docs/operations.md) */
        bf_mp_kv_bool(r->out, "alert",
                      max == 0 || pct >= bf_cfg_int(s->cfg.cfg, "redis.memory_alert_pct"));
    }
    return 0;
}

/* roles: the method's BF_ROLE_* (admin is always added: it may call every
 * method), listed by name. */
static void s_pack_method(msgpack_packer *pk, const char *name, bool writes,
                          const bf_param_t *params, const char *doc, unsigned roles)
{
    msgpack_pack_map(pk, 5);
    bf_mp_kv_str(pk, "name", name);
    bf_mp_kv_bool(pk, "writes", writes);
    bf_mp_kv_str(pk, "doc", doc ? doc : "");
    roles |= BF_ROLE_ADMIN;
    bf_mp_key(pk, "roles");
    msgpack_pack_array(pk, (size_t)__builtin_popcount(roles));
    for (unsigned bit = 1; bit && bit <= roles; bit <<= 1)
        if (roles & bit) bf_mp_str(pk, bf_role_name(bit));
    bf_mp_key(pk, "params");
    size_t n = 0;
    for (const bf_param_t *p = params; p && p->name; p++) n++;
    msgpack_pack_array(pk, n);
    for (const bf_param_t *p = params; p && p->name; p++) {
        msgpack_pack_map(pk, 5);
        bf_mp_kv_str(pk, "name", p->name);
        bf_mp_kv_str(pk, "type", s_type_name(p->type));
        bf_mp_kv_bool(pk, "required", p->flags & BF_REQ);
        bf_mp_kv_int(pk, "max", p->max);
        bf_mp_kv_str(pk, "doc", p->doc ? p->doc : "");
    }
}

static int s_sys_methods(bf_req_t *r, struct bf_rpc_server *s)
{
    msgpack_pack_array(r->out, s->nmethods + 3);
    s_pack_method(r->out, "sys.health", false, NULL,
                  "status, service, version, uptime_s, db, redis, redis_memory", BF_ROLE_ALL);
    s_pack_method(r->out, "sys.methods", false, NULL, "this list", BF_ROLE_READERS);
    s_pack_method(r->out, "sys.stats", false, NULL, "request counters per method",
                  BF_ROLE_READERS);
    for (size_t i = 0; i < s->nmethods; i++) {
        const bf_method_t *m = &s->cfg.methods[i];
        s_pack_method(r->out, m->name, m->writes, m->params, m->doc, m->roles);
    }
    return 0;
}

static int s_sys_stats(bf_req_t *r, struct bf_rpc_server *s)
{
    msgpack_pack_map(r->out, 13);
    bf_mp_kv_str(r->out, "service", s->cfg.service);
    bf_mp_kv_int(r->out, "workers", s->nworkers);
    bf_mp_kv_int(r->out, "commit_groups", (int64_t)atomic_load(&s->groups));
    bf_mp_kv_int(r->out, "grouped_requests", (int64_t)atomic_load(&s->grouped));
    bf_mp_kv_int(r->out, "group_retries", (int64_t)atomic_load(&s->group_retries));
    bf_mp_kv_int(r->out, "group_commit_failures", (int64_t)atomic_load(&s->group_failures));
    bf_mp_kv_int(r->out, "unroutable_replies", (int64_t)atomic_load(&s->unroutable));
    bf_mp_kv_int(r->out, "uptime_s", (int64_t)(time(NULL) - s->started));
    bf_mp_kv_int(r->out, "replays", (int64_t)atomic_load(&s->replays));
    bf_mp_kv_int(r->out, "calls", (int64_t)atomic_load(&s->total_calls));
    bf_mp_kv_int(r->out, "failures", (int64_t)atomic_load(&s->total_failures));
    bf_mp_kv_int(r->out, "bad_frames", (int64_t)atomic_load(&s->bad_frames));
    bf_mp_key(r->out, "methods");
    size_t used = 0;
    for (size_t i = 0; i < s->nmethods; i++)
        if (atomic_load(&s->calls[i])) used++;
    msgpack_pack_map(r->out, used);
    for (size_t i = 0; i < s->nmethods; i++) {
        unsigned long long c = atomic_load(&s->calls[i]);
        if (!c) continue;
        bf_mp_key(r->out, s->cfg.methods[i].name);
        msgpack_pack_map(r->out, 2);
        bf_mp_kv_int(r->out, "calls", (int64_t)c);
        bf_mp_kv_int(r->out, "failures", (int64_t)atomic_load(&s->failures[i]));
    }
    return 0;
}

/* ------------------------------------------------------------ dispatcher */

static void s_pack_reply(msgpack_packer *pk, const char *id, const bf_err_t *err,
                         const msgpack_sbuffer *result)
{
    msgpack_pack_map(pk, 4);
    bf_mp_kv_int(pk, "v", BF_RPC_VERSION);
    bf_mp_kv_str(pk, "id", id);
    bf_mp_kv_bool(pk, "ok", err->code == NULL);
    if (err->code == NULL) {
        bf_mp_key(pk, "result");
        if (result && result->size)
            msgpack_sbuffer_write(pk->data, result->data, result->size);
        else
            msgpack_pack_nil(pk);
        return;
    }
    bf_mp_key(pk, "error");
    msgpack_pack_map(pk, 3);
    bf_mp_kv_str(pk, "code", err->code);
    bf_mp_kv_str(pk, "message", err->message);
    bf_mp_kv_str(pk, "field", err->field[0] ? err->field : NULL);
}

static msgpack_object s_empty_map = {.type = MSGPACK_OBJECT_MAP};

/* True if the method named n (len bytes) may share a commit group. */
static bool s_groupable_name(const struct bf_rpc_server *s, const char *n, size_t len)
{
    for (size_t i = 0; s->groupable && i < s->nmethods; i++) {
        const char *mn = s->cfg.methods[i].name;
        if (strlen(mn) == len && memcmp(mn, n, len) == 0) return s->groupable[i];
    }
    return false;
}

/* SQLSTATEs after which a member of a commit group is run again alone: a
 * lock wait over the group's lock_timeout, a deadlock, a serialization
 * failure. Its savepoint was rolled back, so nothing of it was kept. */
static bool s_retry_alone(const char *st)
{
    return !strcmp(st, "55P03") || !strcmp(st, "40P01") || !strcmp(st, "40001");
}

/* Decodes and runs one request body; packs the reply into reply_pk. Returns
 * 0, or 1 inside a commit group when the request must be run again alone
 * after the group (nothing was kept of it and no reply was packed). */
static int s_dispatch(struct bf_rpc_server *s, bf_req_t *r, const char *principal,
                      const char *peer, const char *data, size_t len, msgpack_packer *reply_pk)
{
    int again = 0;
    bool group = bf_db_in_group(r->db);
    msgpack_sbuffer result;
    msgpack_sbuffer_init(&result);
    msgpack_packer rpk;
    msgpack_packer_init(&rpk, &result, msgpack_sbuffer_write);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    long method_index = -1;
    size_t objects_held = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    r->id = NULL;
    r->method = NULL;
    r->actor = NULL;
    r->params = &s_empty_map;
    r->out = &rpk;
    /* s_apply_caller sets these from the principal; in plaintext mode every
     * caller holds every role */
    r->principal = "";
    r->roles = bf_security_curve() ? 0 : BF_ROLE_ALL;
    r->region = NULL;
    r->cadre_id = 0;
    r->peer = peer ? peer : "";
    memset(&r->err, 0, sizeof r->err);

    /* Bound what msgpack-c will allocate before it allocates anything: the
     * method (peeked without decoding) gives the request's object budget, and
     * all requests being decoded at once share rpc.max_objects. */
    size_t budget = s_method_budget(s, data, len), objects = 0;
    int crc = bf_mp_check_budget(data, len, BF_MP_MAX_DEPTH, budget, &objects);
    if (crc == -3) {
        atomic_fetch_add(&s->bad_frames, 1);
        bf_req_fail(r, BF_E_EXHAUSTED, NULL,
                    "the request holds more than %zu msgpack objects, the most its method "
                    "accepts", budget);
        goto reply;
    }
    if (crc != 0) {
        atomic_fetch_add(&s->bad_frames, 1);
        bf_req_fail(r, BF_E_INVALID, NULL, "the request is not one well-formed msgpack object");
        goto reply;
    }
    if (atomic_fetch_add(&s->objects_in_use, objects) + objects > s->max_objects &&
        objects > 4096) {
        objects_held = objects;
        bf_req_fail(r, BF_E_UNAVAILABLE, NULL,
                    "the service is busy decoding other large requests; retry");
        goto reply;
    }
    objects_held = objects;
    size_t off = 0;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS) {
        atomic_fetch_add(&s->bad_frames, 1);
        bf_req_fail(r, BF_E_EXHAUSTED, NULL, "the request could not be decoded");
        goto reply;
    }
    const msgpack_object *root = &u.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        atomic_fetch_add(&s->bad_frames, 1);
        bf_req_fail(r, BF_E_INVALID, NULL, "the request must be a msgpack map");
        goto reply;
    }
    const msgpack_object *id = bf_mp_get(root, "id");
    if (id && id->type == MSGPACK_OBJECT_STR && id->via.str.size <= BF_RPC_MAX_ID &&
        bf_valid_utf8(id->via.str.ptr, id->via.str.size)) {
        r->id = bf_arena_strndup(r->arena, id->via.str.ptr, id->via.str.size);
        bf_log_set_request(r->id);
    } else if (id && id->type != MSGPACK_OBJECT_NIL) {
        bf_req_fail(r, BF_E_INVALID, "id", "id must be a string of at most %d bytes",
                    BF_RPC_MAX_ID);
        goto reply;
    }
    int64_t v;
    const msgpack_object *vo = bf_mp_get(root, "v");
    if (!vo) {
        bf_req_fail(r, BF_E_INVALID, "v", "v (protocol version) is required");
        goto reply;
    }
    if (!bf_mp_int(vo, &v) || v != BF_RPC_VERSION) {
        bf_req_fail(r, BF_E_INVALID, "v", "unsupported protocol version; this server speaks v=%d",
                    BF_RPC_VERSION);
        goto reply;
    }
    const msgpack_object *mo = bf_mp_get(root, "method");
    if (!mo || mo->type != MSGPACK_OBJECT_STR || mo->via.str.size == 0 ||
        mo->via.str.size > 64 || !bf_valid_utf8(mo->via.str.ptr, mo->via.str.size)) {
        bf_req_fail(r, BF_E_INVALID, "method", "method must be a non-empty string");
        goto reply;
    }
    r->method = bf_arena_strndup(r->arena, mo->via.str.ptr, mo->via.str.size);
    const msgpack_object *po = bf_mp_get(root, "params");
    if (po && po->type == MSGPACK_OBJECT_MAP) {
        r->params = po;
    } else if (po && po->type != MSGPACK_OBJECT_NIL) {
        bf_req_fail(r, BF_E_INVALID, "params", "params must be a map");
        goto reply;
    }
    const msgpack_object *ao = bf_mp_get(root, "actor");
    if (ao && ao->type != MSGPACK_OBJECT_NIL) {
        if (ao->type != MSGPACK_OBJECT_STR || !bf_rpc_actor_ok(ao->via.str.ptr, ao->via.str.size)) {
            bf_req_fail(r, BF_E_INVALID, "actor",
                        "actor must look like \"admin\" or \"cadre:42\" (at most %d bytes)",
                        BF_RPC_MAX_ACTOR);
            goto reply;
        }
        r->actor = bf_arena_strndup(r->arena, ao->via.str.ptr, ao->via.str.size);
    }
    if (group && !s_groupable_name(s, mo->via.str.ptr, mo->via.str.size)) {
        /* the front groups by the method it peeked; whatever else came is
         * run alone, outside the group's transaction */
        again = 1;
        goto reply;
    }
    if (s_apply_caller(r, principal, bf_mp_get(root, "auth")) != 0) goto reply;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        if (!(bf_mp_str_eq(k, "v") || bf_mp_str_eq(k, "id") || bf_mp_str_eq(k, "method") ||
              bf_mp_str_eq(k, "params") || bf_mp_str_eq(k, "actor") || bf_mp_str_eq(k, "auth"))) {
            bf_req_fail(r, BF_E_INVALID, NULL,
                        "unknown envelope key (allowed: v, id, method, params, actor)");
            goto reply;
        }
    }

    if (strcmp(r->method, "sys.health") == 0) {
        s_sys_health(r, s);
        goto reply;
    }
    /* sys.health answers everyone; the other sys.* methods describe the
     * service and need a reading role (a subscriber only takes events) */
    if ((strcmp(r->method, "sys.methods") == 0 || strcmp(r->method, "sys.stats") == 0) &&
        !bf_req_has_role(r, BF_ROLE_READERS)) {
        char need[160], held[160];
        bf_role_list(BF_ROLE_READERS, need, sizeof need);
        bf_role_list(r->roles, held, sizeof held);
        bf_req_fail(r, BF_E_PERMISSION, "method",
                    "%s needs one of the roles: %s (the caller holds: %s)", r->method, need,
                    held[0] ? held : "none");
        goto reply;
    }
    if (strcmp(r->method, "sys.methods") == 0) {
        s_sys_methods(r, s);
        goto reply;
    }
    if (strcmp(r->method, "sys.stats") == 0) {
        s_sys_stats(r, s);
        goto reply;
    }
    const bf_method_t *m = NULL;
    for (size_t i = 0; i < s->nmethods; i++) {
        if (strcmp(s->cfg.methods[i].name, r->method) == 0) {
            m = &s->cfg.methods[i];
            method_index = (long)i;
            break;
        }
    }
    if (!m) {
        bf_req_fail(r, BF_E_NOT_FOUND, "method", "unknown method %s (see sys.methods)",
                    r->method);
        goto reply;
    }
    if (!bf_req_has_role(r, m->roles)) {
        char need[160], held[160];
        bf_role_list(m->roles | BF_ROLE_ADMIN, need, sizeof need);
        bf_role_list(r->roles, held, sizeof held);
        bf_req_fail(r, BF_E_PERMISSION, "method",
                    "%s needs one of the roles: %s (the caller holds: %s)", m->name, need,
                    held[0] ? held : "none");
        goto reply;
    }
    if (m->writes && !r->actor) {
        bf_req_fail(r, BF_E_UNAUTHENTICATED, "actor",
                    "%s changes data: the request must name its actor", m->name);
        goto reply;
    }
    if (s_check_params(r, m) != 0) goto reply;
    /* a write with a request key runs inside one request transaction that
     * also claims the key and stores the reply (bf_idem.h); a method whose
     * table declares request_key keeps its key itself */
    const char *rkey = NULL;
    bf_idem_t idem;
    if (m->writes && !s_declares(m, "request_key")) {
        const msgpack_object *ko = s_param(r->params, "request_key");
        if (ko) rkey = bf_arena_strndup(r->arena, ko->via.str.ptr, ko->via.str.size);
    }
    /* in a commit group every write has its own savepoint, keyed or not */
    bool wrapped = rkey || (group && m->writes);
    if (group) bf_db_clear_error(r->db);
    if (wrapped) {
        if (bf_db_ensure(r->db) != 0 || bf_db_request_begin(r->db) != 0) {
            bf_req_db_fail(r);
            goto reply;
        }
        int irc = rkey ? bf_idem_claim(r, rkey, &idem) : 0;
        if (irc != 0) {
            bf_db_request_rollback(r->db);
            if (irc == 1) atomic_fetch_add(&s->replays, 1);
            if (group && irc < 0 && s_retry_alone(bf_db_sqlstate(r->db))) again = 1;
            goto reply;
        }
    }
    r->alone = false;
    int hrc = m->fn(r);
    if (group && r->alone) {
        /* the handler asked to run outside the group: undo what it did */
        if (bf_db_in_tx(r->db)) bf_db_rollback(r->db);
        if (wrapped) bf_db_request_rollback(r->db);
        r->err.code = NULL;
        again = 1;
        goto reply;
    }
    if (hrc != 0 && !r->err.code)
        bf_req_fail(r, BF_E_INTERNAL, NULL, "handler failed without saying why");
    if (bf_db_in_tx(r->db)) {
        if (!r->err.code) {
            bf_log(BF_ERROR, "%s returned with an open transaction", m->name);
            /* its changes are rolled back: the reply must not claim success */
            bf_req_fail(r, BF_E_INTERNAL, NULL, "internal error");
        }
        bf_db_rollback(r->db);
    }
    if (wrapped) {
        if (r->err.code) {
            bf_db_request_rollback(r->db);
        } else if ((rkey && bf_idem_store(r, &idem, result.data, result.size) != 0) ||
                   bf_db_request_commit(r->db) != 0) {
            if (!r->err.code) bf_req_db_fail(r);
            bf_db_request_rollback(r->db);
        }
        if (group && r->err.code && s_retry_alone(bf_db_sqlstate(r->db))) again = 1;
    }
    s_maybe_prune(s, r);

reply:
    if (again) {
        /* no reply and no counting: the request runs again alone */
        bf_log_set_request(NULL);
        msgpack_unpacked_destroy(&u);
        msgpack_sbuffer_destroy(&result);
        if (objects_held) atomic_fetch_sub(&s->objects_in_use, objects_held);
        return 1;
    }
    if (r->err.code) {
        /* a failed handler may have packed part of a result: drop it */
        msgpack_sbuffer_clear(&result);
    }
    s_pack_reply(reply_pk, r->id, &r->err, &result);
    atomic_fetch_add(&s->total_calls, 1);
    if (r->err.code) atomic_fetch_add(&s->total_failures, 1);
    if (method_index >= 0) {
        atomic_fetch_add(&s->calls[method_index], 1);
        if (r->err.code) atomic_fetch_add(&s->failures[method_index], 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    if (r->err.code && strcmp(r->err.code, BF_E_INTERNAL) == 0)
        bf_log(BF_ERROR, "%s failed: %s", r->method ? r->method : "?", r->err.message);
    else
        bf_log(BF_DEBUG, "%s %s in %ld us", r->method ? r->method : "?",
               r->err.code ? r->err.code : "ok", us);
    bf_log_set_request(NULL);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&result);
    if (objects_held) atomic_fetch_sub(&s->objects_in_use, objects_held);
    return 0;
}

/* Splits the header frame "principal\npeer[\nN]" the front puts before each
 * request; N, on the first request of a commit group only, is the group's
 * size (0 when absent). */
static void s_split_header(zmq_msg_t *h, char *principal, size_t pn, char *peer, size_t rn,
                           int *group)
{
    const char *d = zmq_msg_data(h);
    size_t n = zmq_msg_size(h);
    *group = 0;
    const char *nl = memchr(d, '\n', n);
    size_t a = nl ? (size_t)(nl - d) : n;
    snprintf(principal, pn, "%.*s", (int)(a < pn ? a : pn - 1), d);
    if (nl) {
        const char *p = nl + 1;
        size_t rest = n - a - 1;
        const char *nl2 = memchr(p, '\n', rest);
        size_t b = nl2 ? (size_t)(nl2 - p) : rest;
        snprintf(peer, rn, "%.*s", (int)(b < rn ? b : rn - 1), p);
        if (nl2) {
            int g = 0;
            for (const char *q = nl2 + 1; q < d + n && *q >= '0' && *q <= '9' && g < 100000; q++)
                g = g * 10 + (*q - '0');
            *group = g;
        }
    }
}

/* One request as a worker holds it: the frames from the back socket (the
 * front's header, the client's routing frames, the body) and its reply. */
typedef struct {
    zmq_msg_t f[BF_RPC_MAX_FRAMES];
    int n;
    bool bad;                  /* too many or too few frames: dropped, no reply */
    int group;                 /* the header's group size (first member only) */
    int again;                 /* to be run again alone after the group */
    char principal[BF_KEY_NAME_MAX + 1];
    char peer[64];
    msgpack_sbuffer reply;
} s_member_t;

/* Receives one request (all its frames) into m. Returns 0, or -1 if no
 * message could be received. */
static int s_member_recv(struct bf_rpc_server *s, void *sock, s_member_t *m)
{
    int more = 1, overflow = 0;
    m->n = 0;
    m->group = 0;
    m->again = 0;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, sock, 0) < 0) {
            zmq_msg_close(&tmp);
            if (m->n == 0) return -1;
            break;
        }
        more = zmq_msg_more(&tmp);
        if (m->n < BF_RPC_MAX_FRAMES) {
            m->f[m->n++] = tmp;
        } else {
            overflow = 1;
            zmq_msg_close(&tmp);
        }
    }
    /* header + identity + body at least (the front drops longer ones) */
    m->bad = overflow || m->n < 3;
    if (m->bad) {
        atomic_fetch_add(&s->bad_frames, 1);
        bf_log(BF_WARN, "dropped a request with %s frames", overflow ? "too many" : "too few");
        return 0;
    }
    s_split_header(&m->f[0], m->principal, sizeof m->principal, m->peer, sizeof m->peer,
                   &m->group);
    return 0;
}

/* Runs m through the dispatcher into m->reply; returns s_dispatch's result. */
static int s_member_run(struct bf_rpc_server *s, bf_req_t *r, s_member_t *m)
{
    msgpack_sbuffer_clear(&m->reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->reply, msgpack_sbuffer_write);
    zmq_msg_t *body = &m->f[m->n - 1];
    int rc = s_dispatch(s, r, m->principal, m->peer, zmq_msg_data(body), zmq_msg_size(body), &pk);
    bf_arena_reset(r->arena);
    return rc;
}

/* Sends m's reply (its routing frames, then the body), or READY for a
 * dropped request, so the front counts one answer per request; closes its
 * frames. */
static void s_member_answer(void *sock, s_member_t *m)
{
    if (m->bad) {
        zmq_send(sock, S_READY, S_READY_LEN, 0);
    } else {
        for (int i = 1; i < m->n - 1; i++) zmq_msg_send(&m->f[i], sock, ZMQ_SNDMORE);
        zmq_send(sock, m->reply.data, m->reply.size, 0);
    }
    for (int i = 0; i < m->n; i++) zmq_msg_close(&m->f[i]);
    m->n = 0;
}

/* The group's COMMIT failed: nothing of any member was kept, so each
 * answer, whatever it said, becomes `unavailable` (a retry with the same
 * request key runs it afresh). */
static void s_member_unavailable(struct bf_rpc_server *s, s_member_t *m)
{
    zmq_msg_t *body = &m->f[m->n - 1];
    const char *idp = NULL;
    size_t idn = 0;
    char id[BF_RPC_MAX_ID + 1] = "";
    if (bf_mp_peek_str(zmq_msg_data(body), zmq_msg_size(body), "id", &idp, &idn) == 0 &&
        idn <= BF_RPC_MAX_ID && bf_valid_utf8(idp, idn)) {
        memcpy(id, idp, idn);
        id[idn] = 0;
    }
    bf_err_t err = {.code = BF_E_UNAVAILABLE};
    snprintf(err.message, sizeof err.message,
             "the database did not commit this request (nothing was kept); retry");
    msgpack_sbuffer_clear(&m->reply);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &m->reply, msgpack_sbuffer_write);
    s_pack_reply(&pk, idn ? id : NULL, &err, NULL);
    atomic_fetch_add(&s->total_failures, 1);
}

/* Runs a commit group of k members (docs in bf_rpc.h) and answers each. */
static void s_run_group(struct bf_rpc_server *s, bf_req_t *r, void *sock, s_member_t *m, int k)
{
    if (bf_db_ensure(r->db) != 0 ||
        bf_db_group_begin(r->db, s->group_lock_ms, s->cfg.group_prologue) != 0) {
        /* no group transaction: each runs alone, as without groups */
        for (int i = 0; i < k; i++) {
            if (!m[i].bad) s_member_run(s, r, &m[i]);
            s_member_answer(sock, &m[i]);
        }
        return;
    }
    int ran = 0;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < k; i++) {
        if (m[i].bad) continue;
        m[i].again = s_member_run(s, r, &m[i]);
        if (!m[i].again) ran++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    bool committed = bf_db_group_commit(r->db) == 0;
    clock_gettime(CLOCK_MONOTONIC, &t2);
    bf_log(BF_DEBUG, "commit group of %d: members %ld us, commit %ld us", k,
           (long)((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000),
           (long)((t2.tv_sec - t1.tv_sec) * 1000000L + (t2.tv_nsec - t1.tv_nsec) / 1000));
    if (committed) {
        atomic_fetch_add(&s->groups, 1);
        atomic_fetch_add(&s->grouped, (unsigned long long)ran);
    } else {
        atomic_fetch_add(&s->group_failures, 1);
        bf_log(BF_WARN, "a commit group of %d requests failed to commit: %s", k,
               bf_db_errmsg(r->db));
    }
    for (int i = 0; i < k; i++) {
        if (m[i].bad || !m[i].again) {
            if (!committed && !m[i].bad) s_member_unavailable(s, &m[i]);
            s_member_answer(sock, &m[i]);
        }
    }
    /* the set-aside ones, alone, now that the group's locks are gone */
    for (int i = 0; i < k; i++) {
        if (m[i].bad || !m[i].again) continue;
        atomic_fetch_add(&s->group_retries, 1);
        s_member_run(s, r, &m[i]);
        s_member_answer(sock, &m[i]);
    }
}

static void *s_worker_main(void *arg)
{
    bf_worker_t *w = arg;
    struct bf_rpc_server *s = w->server;
    void *sock = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    int linger = 0;
    bf_req_t r;
    memset(&r, 0, sizeof r);
    r.cfg = s->cfg.cfg;
    r.svc = s->cfg.svc;
    r.worker = w->index;
    r.arena = bf_arena_new();
    r.db = bf_login_db(s->cfg.cfg, s->cfg.service, s->cfg.schema);
    char err[256];
    r.redis = bf_login_redis(s->cfg.cfg, s->cfg.service, err, sizeof err);
    int gmax = s->group_max > 0 ? s->group_max : 1;
    s_member_t *m = calloc((size_t)gmax, sizeof *m);
    for (int i = 0; m && i < gmax; i++) msgpack_sbuffer_init(&m[i].reply);
    int ok = sock && r.arena && r.db && r.redis && m;
    if (ok) {
        unsigned char wid[S_WID_LEN];
        s_wid(w->index, wid);
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(sock, ZMQ_ROUTING_ID, wid, sizeof wid);
        ok = zmq_connect(sock, s->back_ep) == 0;
    }
    if (ok) {
        if (bf_db_connect(r.db, 1) != 0)
            bf_log(BF_WARN, "worker %d: database not reachable yet: %s", w->index,
                   bf_db_errmsg(r.db));
        if (s->cfg.worker_init && s->cfg.worker_init(&r) != 0) ok = 0;
    }
    if (!ok) {
        bf_log(BF_ERROR, "worker %d failed to start", w->index);
        atomic_fetch_add(&s->workers_failed, 1);
        goto done;
    }
    atomic_fetch_add(&s->workers_ready, 1);
    zmq_send(sock, S_READY, S_READY_LEN, 0); /* free: the front may send work */

    while (!atomic_load(&s->workers_stop)) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, 200);
        if (rc < 0) {
            if (zmq_errno() == EINTR) continue;
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (!(item.revents & ZMQ_POLLIN)) continue;
        if (s_member_recv(s, sock, &m[0]) != 0) continue;
        /* the rest of a group was sent right behind its first member */
        int k = 1, g = m[0].bad ? 1 : m[0].group;
        if (g > gmax) g = gmax;
        while (k < g) {
            zmq_pollitem_t next = {sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&next, 1, 1000) <= 0 || s_member_recv(s, sock, &m[k]) != 0) break;
            k++;
        }
        if (k == 1) {
            if (!m[0].bad) s_member_run(s, &r, &m[0]);
            s_member_answer(sock, &m[0]);
        } else {
            s_run_group(s, &r, sock, m, k);
        }
    }
done:
    for (int i = 0; m && i < gmax; i++) {
        for (int j = 0; j < m[i].n; j++) zmq_msg_close(&m[i].f[j]);
        msgpack_sbuffer_destroy(&m[i].reply);
    }
    free(m);
    if (sock) zmq_close(sock);
    bf_arena_destroy(&r.arena);
    bf_db_destroy(&r.db);
    bf_redis_destroy(&r.redis);
    return NULL;
}

/* The server's state without sockets or workers. */
static struct bf_rpc_server *s_server_alloc(const bf_rpc_config_t *cfg)
{
    if (cfg->group_prologue && !bf_db_prologue_ok(cfg->group_prologue)) {
        /* else every group would fail to begin and fall back to solo */
        bf_log(BF_ERROR, "group_prologue must be one statement of at most %d bytes, no ';'",
               BF_DB_PROLOGUE_MAX);
        return NULL;
    }
    struct bf_rpc_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cfg = *cfg;
    s->started = time(NULL);
    for (const bf_method_t *m = cfg->methods; m && m->name; m++) s->nmethods++;
    s->calls = calloc(s->nmethods + 1, sizeof *s->calls);
    s->failures = calloc(s->nmethods + 1, sizeof *s->failures);
    s->budgets = calloc(s->nmethods + 1, sizeof *s->budgets);
    s->max_objects = (size_t)bf_cfg_int(cfg->cfg, "rpc.max_objects");
    s->sys_budget = 1024;
    for (size_t i = 0; s->budgets && i < s->nmethods; i++)
        s->budgets[i] = s_budget_for(&cfg->methods[i], (size_t)bf_cfg_int(cfg->cfg, "rpc.max_list"),
                                     s->max_objects);
    /* writes share commit groups unless bulk (solo) or keeping their own
     * request keys (their handlers commit in chunks) */
    s->groupable = calloc(s->nmethods + 1, sizeof *s->groupable);
    for (size_t i = 0; s->groupable && i < s->nmethods; i++) {
        const bf_method_t *m = &cfg->methods[i];
        s->groupable[i] = m->writes == BF_WRITE_GROUP_KEYED ||
                          (m->writes && m->writes != BF_WRITE_SOLO && !s_declares(m, "request_key"));
    }
    s->group_max = (int)bf_cfg_int(cfg->cfg, "rpc.group_max");
    s->group_lock_ms = (long)bf_cfg_int(cfg->cfg, "rpc.group_lock_timeout_ms");
    if (s->group_max < 1) s->group_max = 1;
    if (!s->calls || !s->failures || !s->budgets || !s->groupable) bf_rpc_server_destroy(&s);
    return s;
}

bf_rpc_server_t *bf_rpc_server_detached(const bf_rpc_config_t *cfg)
{
    return s_server_alloc(cfg);
}

void bf_rpc_dispatch(bf_rpc_server_t *s, bf_req_t *r, const char *principal, const char *data,
                     size_t len, msgpack_sbuffer *reply)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, reply, msgpack_sbuffer_write);
    s_dispatch(s, r, principal ? principal : "", "", data, len, &pk);
    bf_arena_reset(r->arena);
}

bf_rpc_server_t *bf_rpc_server_new(const bf_rpc_config_t *cfg)
{
    struct bf_rpc_server *s = s_server_alloc(cfg);
    if (!s) return NULL;
    s->nworkers = (int)bf_cfg_int(cfg->cfg, "rpc.workers");
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    s->free_q = calloc((size_t)s->nworkers, sizeof *s->free_q);
    s->gq = calloc((size_t)s->group_max, sizeof *s->gq);
    if (!s->workers || !s->free_q || !s->gq) goto fail;
    for (int i = 0; i < s->group_max; i++)
        if (!(s->gq[i] = calloc(1, sizeof **s->gq))) goto fail;
    snprintf(s->back_ep, sizeof s->back_ep, "inproc://bf-workers-%p", (void *)s);

    s->front = zmq_socket(bf_zmq_ctx(), ZMQ_ROUTER);
    s->back = zmq_socket(bf_zmq_ctx(), ZMQ_ROUTER);
    if (!s->front || !s->back) goto fail;
    int64_t maxmsg = bf_cfg_int(cfg->cfg, "rpc.max_msg_bytes");
    /* ZMQ_MAXMSGSIZE applies to the frame on the wire; CURVE wraps each one
     * in a MESSAGE command (name, nonce, MAC, flags: 33 bytes), so allow that
     * much more and rpc.max_msg_bytes keeps meaning the request's size */
    if (bf_security_curve()) maxmsg += 64;
    int linger = 0, one = 1;
    zmq_setsockopt(s->front, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->front, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->front, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    /* a reply to a client that is gone (or whose queue is full) fails
     * visibly instead of vanishing: it is counted (sys.stats) and dropped */
    zmq_setsockopt(s->front, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->back, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->back, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    char kerr[512];
    if (bf_curve_server(s->front, "rpc", BF_ROLE_ALL, kerr, sizeof kerr) != 0) {
        bf_log(BF_ERROR, "%s: %s", cfg->bind, kerr);
        goto fail;
    }
    if (zmq_bind(s->front, cfg->bind) != 0) {
        bf_log(BF_ERROR, "cannot bind %s: %s", cfg->bind, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_bind(s->back, s->back_ep) != 0) goto fail;
    for (int i = 0; i < s->nworkers; i++) {
        s->workers[i].server = s;
        s->workers[i].index = i;
        if (pthread_create(&s->workers[i].thread, NULL, s_worker_main, &s->workers[i]) != 0)
            goto fail;
        s->workers[i].started = true;
    }
    while (atomic_load(&s->workers_ready) + atomic_load(&s->workers_failed) < s->nworkers) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->workers_failed)) goto fail;
    bf_log(BF_INFO, "%s %s serving RPC on %s with %d workers, commit groups of up to %d",
           cfg->service, cfg->version, cfg->bind, s->nworkers, s->group_max);
    return s;
fail:
    bf_rpc_server_destroy(&s);
    return NULL;
}

static int s_worker_of(const struct bf_rpc_server *s, zmq_msg_t *id)
{
    if (zmq_msg_size(id) != S_WID_LEN) return -1;
    const unsigned char *b = zmq_msg_data(id);
    if (b[0] != 'w') return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | b[1 + i];
    return v < (unsigned)s->nworkers ? (int)v : -1;
}

static void s_free_push(struct bf_rpc_server *s, int w)
{
    if (s->workers[w].queued) return;
    s->workers[w].queued = true;
    s->free_q[(s->free_head + s->free_count) % s->nworkers] = w;
    s->free_count++;
}

/* Takes one message from the back socket: a worker's READY (it joins the
 * free queue) or its reply (routed to the client through the front; the
 * worker is free again). Returns 1 if a message was taken, 0 if none. */
static int s_from_back(struct bf_rpc_server *s)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, s->back, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return 0;
    }
    int w = s_worker_of(s, &id);
    int more = zmq_msg_more(&id);
    zmq_msg_close(&id);
    if (!more) return 1;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->back, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 1;
    }
    more = zmq_msg_more(&m);
    bool ready = !more && zmq_msg_size(&m) == S_READY_LEN &&
                 memcmp(zmq_msg_data(&m), S_READY, S_READY_LEN) == 0;
    bool delivered = true;
    if (!ready) {
        /* a reply: client routing frames then the body, sent on as they come;
         * the first frame names the client, so a failure shows on it */
        for (;;) {
            if (delivered && zmq_msg_send(&m, s->front, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
                delivered = false;
                zmq_msg_close(&m);
            } else if (!delivered) {
                zmq_msg_close(&m);
            }
            if (!more) break;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s->back, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
        }
        if (!delivered) {
            atomic_fetch_add(&s->unroutable, 1);
            bf_log(BF_WARN, "a reply could not be routed: its client is gone or not reading");
        }
    } else {
        zmq_msg_close(&m);
    }
    if (w >= 0) {
        /* a reply, or READY after a dropped request, answers one request it
         * had; with none left it is free */
        if (s->workers[w].outstanding > 0) {
            s->workers[w].outstanding--;
            atomic_fetch_sub(&s->inflight, 1);
        }
        if (s->workers[w].outstanding == 0) s_free_push(s, w);
    }
    return 1;
}

static void s_inreq_close(s_inreq_t *q)
{
    for (int i = 0; i < q->n; i++) zmq_msg_close(&q->f[i]);
    q->n = 0;
}

/* Reads one request from the ROUTER front into q, with its header
 * "principal\npeer": ZMQ_CURVE's User-Id (the principal the ZAP handler
 * named) and the peer's Peer-Address are metadata of the frames received
 * here, and metadata does not survive the inproc hop to a worker. Requests
 * with more than BF_RPC_MAX_FRAMES - 1 frames are dropped here. Returns 1 if
 * one was read, 0 if none was waiting, -1 if one was dropped. */
static int s_read_request(struct bf_rpc_server *s, s_inreq_t *q)
{
    int more = 1, overflow = 0;
    q->n = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->front, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            if (q->n == 0) return 0;
            break;
        }
        more = zmq_msg_more(&m);
        if (q->n < BF_RPC_MAX_FRAMES - 1) q->f[q->n++] = m;
        else {
            overflow = 1;
            zmq_msg_close(&m);
        }
    }
    if (overflow || q->n < 2) {
        s_inreq_close(q);
        atomic_fetch_add(&s->bad_frames, 1);
        bf_log(BF_WARN, "dropped a request with %s frames", overflow ? "too many" : "too few");
        return -1;
    }
    zmq_msg_t *body = &q->f[q->n - 1];
    const char *user = zmq_msg_gets(body, "User-Id");
    const char *addr = zmq_msg_gets(body, "Peer-Address");
    q->hn = snprintf(q->hdr, sizeof q->hdr - 16, "%s\n%s", user ? user : "", addr ? addr : "");
    if (q->hn < 0 || (size_t)q->hn >= sizeof q->hdr - 16) q->hn = (int)sizeof q->hdr - 17;
    q->groupable = false;
    const char *name;
    size_t nl;
    if (s->group_max > 1 &&
        bf_mp_peek_str(zmq_msg_data(body), zmq_msg_size(body), "method", &name, &nl) == 0)
        q->groupable = s_groupable_name(s, name, nl);
    return 1;
}

/* Sends q to worker w; group > 1 on the first member of a commit group
 * (its size goes into the header). Empties q. */
static void s_send_to_worker(struct bf_rpc_server *s, int w, s_inreq_t *q, int group)
{
    unsigned char wid[S_WID_LEN];
    s_wid(w, wid);
    if (zmq_send(s->back, wid, sizeof wid, ZMQ_SNDMORE) < 0) {
        /* cannot happen while the worker runs: say so, drop the request */
        bf_log(BF_ERROR, "worker %d unreachable: %s", w, zmq_strerror(zmq_errno()));
        s_inreq_close(q);
        return;
    }
    int hn = q->hn;
    if (group > 1) hn += snprintf(q->hdr + hn, sizeof q->hdr - (size_t)hn, "\n%d", group);
    s->workers[w].outstanding++;
    atomic_fetch_add(&s->inflight, 1);
    zmq_send(s->back, q->hdr, (size_t)hn, ZMQ_SNDMORE);
    for (int i = 0; i < q->n; i++)
        if (zmq_msg_send(&q->f[i], s->back, i + 1 < q->n ? ZMQ_SNDMORE : 0) < 0)
            zmq_msg_close(&q->f[i]);
    q->n = 0;
}

/* Moves work from the ROUTER front to the worker free longest: one request,
 * or, when it is a groupable write and more groupable writes are already
 * queued, up to rpc.group_max of them as one commit group. A request read
 * while gathering that may not join is kept (s->pending) for the next free
 * worker. Call only while a worker is free. Returns 1 if work moved, 0 if
 * none was waiting, -1 if a request was dropped (no worker used). */
static int s_forward_request(struct bf_rpc_server *s)
{
    if (!s->pending) {
        int rc = s_read_request(s, s->gq[0]);
        if (rc <= 0) return rc;
    }
    s->pending = false;
    int k = 1, held = -1;
    if (s->gq[0]->groupable) {
        for (int tries = 0; k < s->group_max && tries < 2 * s->group_max; tries++) {
            int rc = s_read_request(s, s->gq[k]);
            if (rc == 0) break;
            if (rc < 0) continue;
            if (!s->gq[k]->groupable) {
                held = k;
                break;
            }
            k++;
        }
    }
    int w = s->free_q[s->free_head];
    s->free_head = (s->free_head + 1) % s->nworkers;
    s->free_count--;
    s->workers[w].queued = false;
    for (int i = 0; i < k; i++) s_send_to_worker(s, w, s->gq[i], i == 0 ? k : 0);
    if (s->workers[w].outstanding == 0) s_free_push(s, w); /* nothing reached it */
    if (held >= 0) {
        s_inreq_t *t = s->gq[0];
        s->gq[0] = s->gq[held];
        s->gq[held] = t;
        s->pending = true;
    }
    return 1;
}

int bf_rpc_server_run(bf_rpc_server_t *s, volatile int *stop)
{
    struct timespec drain_start = {0, 0};
    long drain_ms = (long)bf_cfg_int(s->cfg.cfg, "rpc.drain_ms");
    for (;;) {
        bool stopping = *stop != 0;
        if (stopping && drain_start.tv_sec == 0) {
            clock_gettime(CLOCK_MONOTONIC, &drain_start);
            bf_log(BF_INFO, "stopping: no new requests, %ld in flight",
                   atomic_load(&s->inflight));
        }
        if (stopping) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - drain_start.tv_sec) * 1000L +
                      (now.tv_nsec - drain_start.tv_nsec) / 1000000L;
            if ((atomic_load(&s->inflight) <= 0 && !s->pending) || el > drain_ms) break;
        }
        /* a request already read is answered even while stopping */
        if (s->pending && s->free_count > 0) s_forward_request(s);
        /* the front is read only while a worker is free: back-pressure */
        bool take = !stopping && s->free_count > 0 && !s->pending;
        zmq_pollitem_t items[2] = {{s->back, 0, ZMQ_POLLIN, 0}, {s->front, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, take ? 2 : 1, 100);
        if (rc < 0) {
            if (zmq_errno() == ETERM) break;
            continue; /* EINTR: the signal flag is checked above */
        }
        if (items[0].revents & ZMQ_POLLIN) {
            while (s_from_back(s) > 0) {
            }
        }
        if (take && (items[1].revents & ZMQ_POLLIN)) {
            for (int i = 0; i < 64 && s->free_count > 0; i++)
                if (s_forward_request(s) == 0) break;
        }
    }
    atomic_store(&s->workers_stop, 1);
    for (int i = 0; i < s->nworkers; i++) {
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
        s->workers[i].started = false;
    }
    /* flush replies the workers sent while we were joining them */
    while (s_from_back(s) > 0) {
    }
    bf_log(BF_INFO, "rpc server stopped");
    return 0;
}

void bf_rpc_server_destroy(bf_rpc_server_t **self_p)
{
    if (!self_p || !*self_p) return;
    struct bf_rpc_server *s = *self_p;
    atomic_store(&s->workers_stop, 1);
    for (int i = 0; s->workers && i < s->nworkers; i++)
        if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    if (s->front) zmq_close(s->front);
    if (s->back) zmq_close(s->back);
    for (int i = 0; s->gq && i < s->group_max; i++) {
        if (s->gq[i]) s_inreq_close(s->gq[i]);
        free(s->gq[i]);
    }
    free(s->gq);
    free(s->groupable);
    free(s->workers);
    free(s->free_q);
    free(s->calls);
    free(s->failures);
    free(s->budgets);
    free(s);
    *self_p = NULL;
}
