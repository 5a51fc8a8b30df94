/* fuzz_rpc: libFuzzer target for the RPC dispatcher (bf_rpc.h), the code
 * every request body goes through before and around a service's handler:
 * the decode gate (bf_mp_check_budget with the method's object budget), the
 * envelope (v, id, method, params, actor, auth), the caller and roles, the
 * parameter table checks, request keys, the handler and the reply.
 *
 * The input is one request body. The server is detached (no sockets, no
 * workers) with a method table covering every parameter type, a read, a
 * write and a write that keeps its own request key; the database and Redis
 * handles point at nothing that answers, so a path that needs them fails
 * the way an outage does. Security is plaintext (every role, narrowed by a
 * request's auth), so inputs reach the method table without keys. Checked on every input: no crash, leak or
 * sanitizer report; the reply is exactly one msgpack map {v: 1, id, ok,
 * result | error {code, message, field}} with a known error code, ok telling
 * which; a handler never runs for a request its parameters table refuses.
 */
#include "bf_arena.h"
#include "bf_cfg.h"
#include "bf_db.h"
#include "bf_keys.h"
#include "bf_mp.h"
#include "bf_redis.h"
#include "bf_rpc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int s_ran;

/* Reads what its table declares again through the bf_req_* getters (which
 * must agree with the dispatcher's checks) and echoes a small result. */
static int s_echo(bf_req_t *r)
{
    s_ran = 1;
    const char *name = NULL;
    int64_t n = 0;
    bool flag = false;
    const msgpack_object_array *items = NULL;
    const msgpack_object *scope = NULL;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "n", false, INT64_MIN, INT64_MAX, &n) < 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "flag", false, &flag) < 0) return -1;
    if (bf_req_list(r, r->params, NULL, "items", false, 50, &items) < 0) return -1;
    if (bf_req_map(r, r->params, NULL, "scope", false, &scope) < 0) return -1;
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_int(r->out, "n", n);
    bf_mp_kv_int(r->out, "items", items ? (int64_t)items->size : -1);
    return 0;
}

/* A write whose table declares request_key: it keeps its key itself. */
static int s_write(bf_req_t *r)
{
    s_ran = 1;
    const char *key = NULL;
    if (bf_req_str(r, r->params, NULL, "request_key", true, 128, &key) != 0) return -1;
    if (!r->actor) abort(); /* the dispatcher refuses writes without an actor */
    static const char *const kinds[] = {"a", "b", NULL};
    const char *kind;
    if (bf_req_enum(r, r->params, NULL, "kind", false, kinds, &kind) < 0) return -1;
    msgpack_pack_nil(r->out);
    return 0;
}

/* A handler that fails by itself. */
static int s_fail(bf_req_t *r)
{
    s_ran = 1;
    return bf_req_fail(r, BF_E_PRECONDITION, "x", "refused %s", r->method);
}

static const bf_param_t p_echo[] = {
    {"name", BF_T_STR, BF_REQ, 200, "a string"},
    {"n", BF_T_INT, 0, 0, "an integer"},
    {"flag", BF_T_BOOL, 0, 0, "a boolean"},
    {"items", BF_T_LIST, 0, 50, "a list"},
    {"scope", BF_T_MAP, 0, 0, "a map"},
    {"any", BF_T_ANY, 0, 0, "anything"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_write[] = {
    {"request_key", BF_T_STR, BF_REQ, 128, "key"},
    {"kind", BF_T_STR, 0, 8, "a or b"},
    {"rows", BF_T_LIST, 0, 20000, "a bulk list"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_none[] = {{NULL, 0, 0, 0, NULL}};

static const bf_method_t s_methods[] = {
    {"thing.echo", s_echo, false, p_echo, "read", BF_ROLE_READERS},
    {"thing.put", s_write, true, p_write, "write with its own key", BF_ROLE_FINANCE},
    {"thing.fail", s_fail, false, p_none, "fails", 0},
    /* a write without request_key in its table: a key in the params goes
     * through libcommon's request keys (which need the database) */
    {"thing.touch", s_fail, true, p_none, "write", BF_ROLE_OPERATOR},
    {NULL, NULL, false, NULL, NULL, 0},
};

static const char *const s_codes[] = {BF_E_INVALID,     BF_E_NOT_FOUND,  BF_E_EXISTS,
                                      BF_E_CONFLICT,    BF_E_PRECONDITION, BF_E_PERMISSION,
                                      BF_E_UNAUTHENTICATED, BF_E_EXHAUSTED, BF_E_UNAVAILABLE,
                                      BF_E_INTERNAL,    NULL};

static bf_rpc_server_t *s_server;
static bf_req_t s_req;

static void s_setup(void)
{
    /* nothing answers at these addresses: a unix socket directory that does
     * not exist, and a port nobody listens on */
    setenv("BANGFU_PG_DSN", "host=/nonexistent/bangfu-fuzz dbname=x connect_timeout=1", 1);
    setenv("BANGFU_REDIS_URL", "redis://127.0.0.1:1/0", 1);
    setenv("BANGFU_LOG_LEVEL", "error", 1);
    const bf_cfg_def_t *tables[] = {bf_cfg_common, NULL};
    char err[256];
    /* plaintext: no principal registry; the caller holds every role unless
     * the request's auth narrows them */
    if (bf_security_init("plaintext", NULL, NULL, err, sizeof err) != 0) abort();
    static bf_cfg_t *cfg;
    cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    if (!cfg) abort();
    static bf_rpc_config_t rc;
    rc = (bf_rpc_config_t){.service = "fuzz", .version = "0", .bind = "inproc://none",
                           .methods = s_methods, .cfg = cfg, .schema = "fuzz"};
    s_server = bf_rpc_server_detached(&rc);
    if (!s_server) abort();
    s_req.cfg = cfg;
    s_req.arena = bf_arena_new();
    s_req.db = bf_db_new(bf_cfg_str(cfg, "pg.dsn"), "fuzz");
    s_req.redis = bf_redis_new(bf_cfg_str(cfg, "redis.url"), err, sizeof err);
    if (!s_req.arena || !s_req.db || !s_req.redis) abort();
}

static void s_check_reply(const msgpack_sbuffer *reply)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, reply->data, reply->size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != reply->size)
        abort();
    const msgpack_object *o = &u.data;
    if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 4) abort();
    int64_t v;
    const msgpack_object *vo = bf_mp_get(o, "v"), *ok = bf_mp_get(o, "ok");
    if (!vo || !bf_mp_int(vo, &v) || v != BF_RPC_VERSION) abort();
    if (!bf_mp_get(o, "id") || !ok || ok->type != MSGPACK_OBJECT_BOOLEAN) abort();
    if (ok->via.boolean) {
        if (!bf_mp_get(o, "result")) abort();
    } else {
        const msgpack_object *e = bf_mp_get(o, "error");
        if (!e || e->type != MSGPACK_OBJECT_MAP) abort();
        const msgpack_object *code = bf_mp_get(e, "code"), *msg = bf_mp_get(e, "message");
        if (!code || code->type != MSGPACK_OBJECT_STR || !msg || msg->type != MSGPACK_OBJECT_STR)
            abort();
        bool known = false;
        for (int i = 0; s_codes[i]; i++)
            if (code->via.str.size == strlen(s_codes[i]) &&
                !memcmp(code->via.str.ptr, s_codes[i], code->via.str.size))
                known = true;
        if (!known) abort();
    }
    msgpack_unpacked_destroy(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (!s_server) s_setup();
    /* a private copy, so reads past len are caught by ASan */
    char *d = malloc(len ? len : 1);
    if (!d) return 0;
    memcpy(d, data, len);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init(&reply);
    s_ran = 0;
    bf_rpc_dispatch(s_server, &s_req, "", d, len, &reply);
    s_check_reply(&reply);
    /* a handler ran only for a well-formed msgpack map */
    if (s_ran && bf_mp_check(d, len, BF_MP_MAX_DEPTH) != 0) abort();
    msgpack_sbuffer_destroy(&reply);
    free(d);
    return 0;
}
