/* test_rpc.c: unit tests for bf_rpc (server, dispatcher, typed getters) and
 * bf_client, with an in-process server on a free loopback port.
 *
 * Needs BANGFU_PG_DSN and BANGFU_REDIS_URL (tests/run.sh provides both): the
 * workers connect to both and sys.health reports them. Config comes from
 * bf_cfg_load with BANGFU_RPC_* set in the environment (3 workers, 64-byte
 * strings, 5-item lists, 64 KiB frames). The server loop runs in a thread
 * with a stop flag; a small method table has a read method echoing its
 * params, a write method, one failing with bf_req_fail, one returning -1
 * without an error, one leaving a transaction open, one raising SQLSTATEs for
 * bf_req_db_fail, one reading nested maps with the typed getters, and a slow
 * one for draining. Covers every envelope and parameter check the dispatcher
 * documents (docs/protocol.md), garbage frames, REQ and plain DEALER routing,
 * frame limits, sys.health / sys.methods / sys.stats, concurrent clients,
 * start-up failures, and a stop that drains in-flight requests and then takes
 * no more.
 */
#include "bf_cfg.h"
#include "bf_client.h"
#include "bf_db.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_rpc.h"
#include "bf_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char *s_dsn, *s_redis_url;
static char s_schema[64];
static char s_endpoint[64];
static volatile int s_stop2;
static bf_cfg_t *s_cfg;
static bf_rpc_server_t *s_server;
static volatile int s_stop;
static pthread_t s_server_thread;
static int s_server_running;
static int s_run_rc = -1;
static bf_client_t *s_client;
static bf_db_t *s_admin;

static int s_svc_state;
static atomic_int s_worker_inits;
static atomic_int s_slow_started;
static atomic_int s_slow_finished;

/* ------------------------------------------------------------- handlers */

static int h_echo(bf_req_t *r)
{
    bf_mp_obj(r->out, r->params);
    return 0;
}

static int h_context(bf_req_t *r)
{
    msgpack_pack_map(r->out, 5);
    bf_mp_kv_bool(r->out, "svc_ok", r->svc == &s_svc_state);
    bf_mp_kv_int(r->out, "worker", r->worker);
    bf_mp_kv_str(r->out, "id", r->id);
    bf_mp_kv_str(r->out, "method", r->method);
    bf_mp_kv_str(r->out, "actor", r->actor);
    return 0;
}

static int h_write(bf_req_t *r)
{
    const char *body;
    if (bf_req_str(r, r->params, NULL, "body", true, 0, &body) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {body, r->actor};
    PGresult *res = bf_db_prep(r->db, "t_note_add",
                               "INSERT INTO notes (body, actor) VALUES ($1, $2) RETURNING id", 2,
                               p, NULL, NULL);
    if (!res) return bf_req_db_fail(r); /* the dispatcher rolls back */
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "actor", r->actor);
    return 0;
}

static int h_fail(bf_req_t *r)
{
    /* a partial result, then a failure: the reply must carry only the error */
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "partial", 1);
    return bf_req_fail(r, BF_E_CONFLICT, "thing", "it failed %d times", 7);
}

static int h_silent(bf_req_t *r)
{
    (void)r;
    return -1; /* no r->err: the dispatcher must say internal */
}

static int h_open_tx(bf_req_t *r)
{
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {"left open", r->actor};
    PGresult *res = bf_db_exec(r->db, "INSERT INTO notes (body, actor) VALUES ($1, $2)", 2, p);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_bool(r->out, "committed", true); /* a lie: never committed */
    return 0;
}

static int h_raise(bf_req_t *r)
{
    const char *code;
    if (bf_req_str(r, r->params, NULL, "sqlstate", true, 5, &code) != 0) return -1;
    const char *p[] = {code};
    PGresult *res = bf_db_prep(r->db, "t_raise", "SELECT t_raise($1)", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    msgpack_pack_nil(r->out);
    return 0;
}

static int h_slow(bf_req_t *r)
{
    int64_t ms = 400;
    if (bf_req_int(r, r->params, NULL, "ms", false, 1, 5000, &ms) < 0) return -1;
    atomic_store(&s_slow_started, 1);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    bf_mp_str(r->out, "done");
    atomic_store(&s_slow_finished, 1);
    return 0;
}

static const char *const s_roles[] = {"head", "spouse", "child", NULL};

/* Reads {member: {name, age, head, role, tags}, members: [{id_number}...]}. */
static int h_getters(bf_req_t *r)
{
    const msgpack_object *m = NULL;
    const char *name = NULL, *role = "none";
    int64_t age = -1;
    bool head = false;
    const msgpack_object_array *tags = NULL, *members = NULL;
    if (bf_req_map(r, r->params, NULL, "member", true, &m) != 0) return -1;
    if (bf_req_str(r, m, "member", "name", true, 8, &name) != 0) return -1;
    if (bf_req_int(r, m, "member", "age", true, 0, 150, &age) != 0) return -1;
    int head_rc = bf_req_bool(r, m, "member", "head", false, &head);
    if (head_rc < 0) return -1;
    if (bf_req_enum(r, m, "member", "role", false, s_roles, &role) < 0) return -1;
    int tags_rc = bf_req_list(r, m, "member", "tags", false, 2, &tags);
    if (tags_rc < 0) return -1;
    int mem_rc = bf_req_list(r, r->params, NULL, "members", false, 0, &members);
    if (mem_rc < 0) return -1;
    const char *last_id = NULL;
    for (uint32_t i = 0; mem_rc == 0 && i < members->size; i++) {
        const char *prefix = bf_arena_printf(r->arena, "members[%u]", i);
        if (members->ptr[i].type != MSGPACK_OBJECT_MAP)
            return bf_req_fail(r, BF_E_INVALID, prefix, "%s must be a map", prefix);
        if (bf_req_str(r, &members->ptr[i], prefix, "id_number", true, 18, &last_id) != 0)
            return -1;
    }
    msgpack_pack_map(r->out, 7);
    bf_mp_kv_str(r->out, "name", name);
    bf_mp_kv_int(r->out, "age", age);
    if (head_rc == 1)
        bf_mp_kv_nil(r->out, "head"); /* absent */
    else
        bf_mp_kv_bool(r->out, "head", head);
    bf_mp_kv_str(r->out, "role", role);
    bf_mp_kv_int(r->out, "tags", tags_rc == 0 ? (int64_t)tags->size : -1);
    bf_mp_kv_int(r->out, "members", mem_rc == 0 ? (int64_t)members->size : -1);
    bf_mp_kv_str(r->out, "last_id", last_id);
    /* the field helper */
    if (strcmp(bf_req_field(r, NULL, "k"), "k") != 0 ||
        strcmp(bf_req_field(r, "", "k"), "k") != 0 ||
        strcmp(bf_req_field(r, "a[1]", "k"), "a[1].k") != 0)
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "bf_req_field is wrong");
    return 0;
}

static const bf_param_t p_echo[] = {
    {"s", BF_T_STR, 0, 10, "a string of at most 10 bytes"},
    {"i", BF_T_INT, 0, 0, "an integer"},
    {"b", BF_T_BOOL, 0, 0, "a boolean"},
    {"m", BF_T_MAP, 0, 0, "a map"},
    {"l", BF_T_LIST, 0, 3, "a list of at most 3"},
    {"d", BF_T_STR, 0, 0, "a string of the default limit"},
    {"dl", BF_T_LIST, 0, 0, "a list of the default limit"},
    {"a", BF_T_ANY, 0, 0, "anything"},
    {"need", BF_T_STR, BF_REQ, 0, "required"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_write[] = {
    {"body", BF_T_STR, BF_REQ, 0, "the note"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_raise[] = {
    {"sqlstate", BF_T_STR, BF_REQ, 5, "the SQLSTATE to raise"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_slow[] = {
    {"ms", BF_T_INT, 0, 0, "how long (default 400)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_getters[] = {
    {"member", BF_T_MAP, BF_REQ, 0, "one member"},
    {"members", BF_T_LIST, 0, 0, "more members"},
    {NULL, 0, 0, 0, NULL},
};

static const bf_method_t s_methods[] = {
    {"test.echo", h_echo, false, p_echo, "echoes its params", BF_ROLE_READERS},
    {"test.context", h_context, false, NULL, "what the handler sees", BF_ROLE_READERS},
    {"test.write", h_write, true, p_write, "adds a note", BF_ROLE_ADMIN},
    {"test.fail", h_fail, false, NULL, "fails with conflict", BF_ROLE_READERS},
    {"test.silent", h_silent, false, NULL, "fails without saying why", BF_ROLE_READERS},
    {"test.open_tx", h_open_tx, true, NULL, "leaves a transaction open", BF_ROLE_ADMIN},
    {"test.raise", h_raise, false, p_raise, "raises a SQLSTATE", BF_ROLE_READERS},
    {"test.slow", h_slow, false, p_slow, "takes ms milliseconds", BF_ROLE_READERS},
    {"test.getters", h_getters, false, p_getters, "typed getters on nested maps", BF_ROLE_READERS},
    {NULL, NULL, false, NULL, NULL, 0},
};

static int s_worker_init(bf_req_t *ctx)
{
    if (!ctx->db || !ctx->redis || !ctx->arena || !ctx->cfg || ctx->svc != &s_svc_state)
        return -1;
    atomic_fetch_add(&s_worker_inits, 1);
    return 0;
}

static int s_worker_init_refuses(bf_req_t *ctx)
{
    (void)ctx;
    return -1;
}

/* ------------------------------------------------------------- helpers */

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static long long s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A msgpack buffer being built. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} s_mp_t;

static msgpack_packer *s_mp_new(s_mp_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    return &b->pk;
}

static void s_mp_free(s_mp_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

/* Calls method with params (a packed map, or NULL). Returns bf_client_call's rc. */
static int s_call(const char *method, const s_mp_t *params, const char *actor, bf_reply_t *rep)
{
    return bf_client_call(s_client, method, params ? params->sb.data : NULL,
                          params ? params->sb.size : 0, actor, rep);
}

static void s_expect_error(int line, int rc, const bf_reply_t *rep, const char *code,
                           const char *field, const char *msg_part)
{
    if (rc != 0) {
        fprintf(stderr, "  %s:%d: call failed: %s %s\n", __FILE__, line, rep->code,
                rep->message);
        bf_test_failed_now = 1;
        return;
    }
    if (rep->ok) {
        fprintf(stderr, "  %s:%d: expected error %s, got ok\n", __FILE__, line, code);
        bf_test_failed_now = 1;
        return;
    }
    if (strcmp(rep->code, code) != 0 || strcmp(rep->field, field ? field : "") != 0 ||
        (msg_part && !strstr(rep->message, msg_part))) {
        fprintf(stderr, "  %s:%d: expected %s field \"%s\" (\"%s\"), got %s field \"%s\": %s\n",
                __FILE__, line, code, field ? field : "", msg_part ? msg_part : "", rep->code,
                rep->field, rep->message);
        bf_test_failed_now = 1;
    }
    /* field nil on the wire when there is none */
    const msgpack_object *f = bf_mp_get(rep->error, "field");
    if (!field && (!f || f->type != MSGPACK_OBJECT_NIL)) {
        fprintf(stderr, "  %s:%d: field should be nil\n", __FILE__, line);
        bf_test_failed_now = 1;
    }
    /* an error reply has no result */
    if (bf_mp_get(&rep->msg.data, "result")) {
        fprintf(stderr, "  %s:%d: an error reply carries a result\n", __FILE__, line);
        bf_test_failed_now = 1;
    }
}

#define EXPECT_ERROR(rc, rep, code, field, msg_part)                                   \
    s_expect_error(__LINE__, (rc), (rep), (code), (field), (msg_part))

static void s_expect_ok(int line, int rc, const bf_reply_t *rep)
{
    if (rc != 0 || !rep->ok) {
        fprintf(stderr, "  %s:%d: expected ok, got rc %d %s field \"%s\": %s\n", __FILE__, line,
                rc, rep->code, rep->field, rep->message);
        bf_test_failed_now = 1;
    }
}

#define EXPECT_OK(rc, rep) s_expect_ok(__LINE__, (rc), (rep))

/* Calls test.echo with params {need: "x"} plus one more key packed by fn. */
static int s_echo_with(void (*fn)(msgpack_packer *), bf_reply_t *rep)
{
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "need", "x");
    fn(pk);
    int rc = s_call("test.echo", &p, NULL, rep);
    s_mp_free(&p);
    return rc;
}

/* Sends a raw body built by fn; the reply's id object is checked by callers. */
static int s_raw(const s_mp_t *body, bf_reply_t *rep)
{
    return bf_client_call_raw(s_client, body->sb.data, body->sb.size, rep);
}

static const msgpack_object *s_reply_id(const bf_reply_t *rep)
{
    return bf_mp_get(&rep->msg.data, "id");
}

/* ------------------------------------------------------------- server */

static void *s_server_main(void *arg)
{
    (void)arg;
    s_run_rc = bf_rpc_server_run(s_server, &s_stop);
    return NULL;
}

static bf_rpc_config_t s_rpc_config(const char *bind)
{
    bf_rpc_config_t c = {
        .service = "rpctest",
        .version = "9.8.7",
        .bind = bind,
        .methods = s_methods,
        .cfg = s_cfg,
        .schema = s_schema,
        .svc = &s_svc_state,
        .worker_init = s_worker_init,
    };
    return c;
}

/* ------------------------------------------------------------- tests */

static void test_environment(void)
{
    if (!s_dsn) BF_FAIL_AT("BANGFU_PG_DSN is not set: run through tests/run.sh");
    if (!s_redis_url) BF_FAIL_AT("BANGFU_REDIS_URL is not set: run through tests/run.sh");
}

static void test_server_starts(void)
{
    ASSERT(s_cfg != NULL);
    ASSERT(s_server != NULL);
    ASSERT(s_server_running);
    ASSERT(s_client != NULL);
    ASSERT_EQ(atomic_load(&s_worker_inits), 3); /* rpc.workers from the environment */
}

static void test_start_failures(void)
{
    /* the address is taken (by our own server) */
    bf_rpc_config_t c = s_rpc_config(s_endpoint);
    bf_rpc_server_t *s = bf_rpc_server_new(&c);
    ASSERT(s == NULL);
    bf_rpc_server_destroy(&s);
    /* a malformed address */
    c = s_rpc_config("tcp://not an address");
    s = bf_rpc_server_new(&c);
    ASSERT(s == NULL);
    /* a worker that refuses to start */
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", s_free_port());
    c = s_rpc_config(ep);
    c.worker_init = s_worker_init_refuses;
    s = bf_rpc_server_new(&c);
    ASSERT(s == NULL);
    bf_rpc_server_destroy(&s);
    /* a group prologue bf_db_group_begin would refuse (every group would
     * fall back to solo): refused at start, the well-formed one accepted */
    c = s_rpc_config(ep);
    c.group_prologue = "SELECT 1; SELECT 2";
    s = bf_rpc_server_new(&c);
    ASSERT(s == NULL);
    bf_rpc_server_destroy(&s);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", s_free_port());
    c = s_rpc_config(ep);
    c.group_prologue = "SELECT 1";
    s = bf_rpc_server_new(&c);
    ASSERT(s != NULL);
    bf_rpc_server_destroy(&s);
    bf_rpc_server_destroy(NULL);
}

static void test_echo_and_context(void)
{
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 4);
    bf_mp_kv_str(pk, "need", "x");
    bf_mp_kv_str(pk, "s", "村委会"); /* 9 bytes: within 10 */
    bf_mp_kv_int(pk, "i", INT64_MIN);
    bf_mp_key(pk, "l");
    msgpack_pack_array(pk, 3);
    for (int k = 0; k < 3; k++) msgpack_pack_int(pk, k);
    bf_reply_t rep;
    int rc = s_call("test.echo", &p, NULL, &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        ASSERT(rep.result && rep.result->type == MSGPACK_OBJECT_MAP);
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "s"), "村委会"));
        int64_t v = 0;
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "i"), &v) && v == INT64_MIN);
        const msgpack_object *v1 = bf_mp_get(&rep.msg.data, "v");
        ASSERT(v1 && bf_mp_int(v1, &v) && v == 1);
        ASSERT_STR_EQ(rep.code, "");
    }
    bf_reply_destroy(&rep);
    s_mp_free(&p);

    /* what a handler sees: id, method, actor, svc */
    rc = s_call("test.context", NULL, "cadre:42", &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        const msgpack_object *ok = bf_mp_get(rep.result, "svc_ok");
        ASSERT(ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean);
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "method"), "test.context"));
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "actor"), "cadre:42"));
        /* the handler saw the id the reply echoes */
        const msgpack_object *hid = bf_mp_get(rep.result, "id");
        const msgpack_object *rid = s_reply_id(&rep);
        ASSERT(hid && rid && hid->type == MSGPACK_OBJECT_STR && rid->type == MSGPACK_OBJECT_STR &&
               hid->via.str.size == rid->via.str.size &&
               memcmp(hid->via.str.ptr, rid->via.str.ptr, hid->via.str.size) == 0);
        int64_t w = -1;
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "worker"), &w) && w >= 0 && w < 3);
    }
    bf_reply_destroy(&rep);
    /* no actor on a read: nil */
    rc = s_call("test.context", NULL, NULL, &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        const msgpack_object *a = bf_mp_get(rep.result, "actor");
        ASSERT(a && a->type == MSGPACK_OBJECT_NIL);
    }
    bf_reply_destroy(&rep);
}

/* A reply bigger than ZeroMQ's receive batch (8 KiB): the decoded strings
 * must still be intact after bf_client_call returns (they point into the
 * reply's own copy of the frame, not into a closed zmq message). */
static void test_large_reply_stays_valid(void)
{
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "need", "x");
    bf_mp_key(pk, "a");
    msgpack_pack_map(pk, 1000);
    char key[16], val[64];
    for (int k = 0; k < 1000; k++) {
        snprintf(key, sizeof key, "k%04d", k);
        snprintf(val, sizeof val, "value-%04d-%s", k, "abcdefghijklmnopqrstuvwxyz0123456789");
        bf_mp_kv_str(pk, key, val);
    }
    bf_reply_t rep;
    int rc = s_call("test.echo", &p, NULL, &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        /* scribble over freed memory patterns: allocate and fill some buffers */
        for (int k = 0; k < 64; k++) {
            char *junk = malloc(16384);
            if (junk) {
                memset(junk, 'Z', 16384);
                free(junk);
            }
        }
        const msgpack_object *a = bf_mp_get(rep.result, "a");
        ASSERT(a && a->type == MSGPACK_OBJECT_MAP && a->via.map.size == 1000);
        int bad = 0;
        for (int k = 0; a && k < 1000; k++) {
            snprintf(key, sizeof key, "k%04d", k);
            snprintf(val, sizeof val, "value-%04d-%s", k, "abcdefghijklmnopqrstuvwxyz0123456789");
            if (!bf_mp_str_eq(bf_mp_get(a, key), val)) bad++;
        }
        ASSERT_EQ(bad, 0);
    }
    bf_reply_destroy(&rep);
    s_mp_free(&p);
}

/* --- the envelope --- */

static void test_envelope_checks(void)
{
    bf_reply_t rep;
    s_mp_t b;
    msgpack_packer *pk;

    /* missing v */
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "id", "r1");
    bf_mp_kv_str(pk, "method", "test.context");
    int rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "v", "required");
    ASSERT(bf_mp_str_eq(s_reply_id(&rep), "r1")); /* the id is still echoed */
    bf_reply_destroy(&rep);
    s_mp_free(&b);

    /* wrong v: 2, "1", 1.0, -1 */
    for (int k = 0; k < 4; k++) {
        pk = s_mp_new(&b);
        msgpack_pack_map(pk, 3);
        bf_mp_kv_str(pk, "id", "r2");
        bf_mp_key(pk, "v");
        if (k == 0) msgpack_pack_int(pk, 2);
        if (k == 1) bf_mp_str(pk, "1");
        if (k == 2) msgpack_pack_double(pk, 1.0);
        if (k == 3) msgpack_pack_int(pk, -1);
        bf_mp_kv_str(pk, "method", "test.context");
        rc = s_raw(&b, &rep);
        EXPECT_ERROR(rc, &rep, BF_E_INVALID, "v", "version");
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }

    /* not a map: an array, a string, an integer; the reply id is nil */
    for (int k = 0; k < 3; k++) {
        pk = s_mp_new(&b);
        if (k == 0) {
            msgpack_pack_array(pk, 2);
            msgpack_pack_int(pk, 1);
            bf_mp_str(pk, "test.context");
        }
        if (k == 1) bf_mp_str(pk, "{\"v\":1}");
        if (k == 2) msgpack_pack_int(pk, 1);
        rc = s_raw(&b, &rep);
        EXPECT_ERROR(rc, &rep, BF_E_INVALID, NULL, "map");
        const msgpack_object *id = s_reply_id(&rep);
        ASSERT(id && id->type == MSGPACK_OBJECT_NIL);
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }

    /* method: missing, empty, not a string, too long, invalid UTF-8 */
    for (int k = 0; k < 5; k++) {
        pk = s_mp_new(&b);
        msgpack_pack_map(pk, k == 0 ? 1 : 2);
        bf_mp_kv_int(pk, "v", 1);
        if (k == 1) bf_mp_kv_str(pk, "method", "");
        if (k == 2) bf_mp_kv_int(pk, "method", 5);
        if (k == 3) {
            char longm[80];
            memset(longm, 'm', 65);
            longm[65] = '\0';
            bf_mp_kv_str(pk, "method", longm);
        }
        if (k == 4) {
            bf_mp_key(pk, "method");
            bf_mp_strn(pk, "test.\xff", 6);
        }
        rc = s_raw(&b, &rep);
        EXPECT_ERROR(rc, &rep, BF_E_INVALID, "method", NULL);
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }

    /* unknown method: not_found naming the method */
    rc = s_call("test.nosuch", NULL, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_NOT_FOUND, "method", "test.nosuch");
    bf_reply_destroy(&rep);

    /* params not a map */
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    bf_mp_key(pk, "params");
    msgpack_pack_array(pk, 0);
    rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "params", NULL);
    bf_reply_destroy(&rep);
    s_mp_free(&b);

    /* params nil or absent: an empty map */
    for (int k = 0; k < 2; k++) {
        pk = s_mp_new(&b);
        msgpack_pack_map(pk, k ? 3 : 2);
        bf_mp_kv_int(pk, "v", 1);
        bf_mp_kv_str(pk, "method", "test.echo");
        if (k) bf_mp_kv_nil(pk, "params");
        rc = s_raw(&b, &rep);
        /* test.echo requires need: the check ran against an empty map */
        EXPECT_ERROR(rc, &rep, BF_E_INVALID, "need", "required");
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }

    /* id: too long, not a string, invalid UTF-8 -> field id, reply id nil */
    for (int k = 0; k < 3; k++) {
        pk = s_mp_new(&b);
        msgpack_pack_map(pk, 3);
        bf_mp_kv_int(pk, "v", 1);
        bf_mp_kv_str(pk, "method", "test.context");
        bf_mp_key(pk, "id");
        if (k == 0) {
            char longid[200];
            memset(longid, 'i', 129);
            bf_mp_strn(pk, longid, 129);
        }
        if (k == 1) msgpack_pack_int(pk, 12345);
        if (k == 2) bf_mp_strn(pk, "\xc3\x28", 2);
        rc = s_raw(&b, &rep);
        EXPECT_ERROR(rc, &rep, BF_E_INVALID, "id", NULL);
        const msgpack_object *id = s_reply_id(&rep);
        ASSERT(id && id->type == MSGPACK_OBJECT_NIL);
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }
    /* an id of exactly 128 bytes is fine and echoed */
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    char id128[129];
    memset(id128, 'k', 128);
    id128[128] = '\0';
    bf_mp_kv_str(pk, "id", id128);
    rc = s_raw(&b, &rep);
    EXPECT_OK(rc, &rep);
    ASSERT(bf_mp_str_eq(s_reply_id(&rep), id128));
    bf_reply_destroy(&rep);
    s_mp_free(&b);

    /* unknown envelope key refused; auth must be a map */
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    bf_mp_kv_str(pk, "token", "x");
    rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, NULL, "unknown envelope key");
    bf_reply_destroy(&rep);
    s_mp_free(&b);
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    bf_mp_kv_str(pk, "auth", "reserved");
    rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "auth", "auth must be a map");
    bf_reply_destroy(&rep);
    s_mp_free(&b);
    pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    bf_mp_key(pk, "auth");
    msgpack_pack_map(pk, 1);
    bf_mp_key(pk, "roles");
    msgpack_pack_array(pk, 1);
    msgpack_pack_str_with_body(pk, "wizard", 6);
    rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "auth.roles", "unknown role wizard");
    bf_reply_destroy(&rep);
    s_mp_free(&b);
}

static void test_actor_checks(void)
{
    bf_reply_t rep;
    const char *bad[] = {"", "Admin", "cadre:", ":42", "cadre:4 2", "cadre:42:1", "cadre;42",
                         "管理员", "cadre:\xff", "9admin"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = s_call("test.context", NULL, bad[k], &rep);
        if (rc != 0 || rep.ok || strcmp(rep.code, BF_E_INVALID) != 0 ||
            strcmp(rep.field, "actor") != 0)
            BF_FAIL_AT("actor \"%s\": %s %s %s", bad[k], rep.ok ? "ok" : rep.code, rep.field,
                       rep.message);
        bf_reply_destroy(&rep);
    }
    char longactor[200];
    memset(longactor, 'a', 129);
    longactor[129] = '\0';
    int rc = s_call("test.context", NULL, longactor, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "actor", NULL);
    bf_reply_destroy(&rep);
    longactor[128] = '\0'; /* 128 bytes: the limit */
    rc = s_call("test.context", NULL, longactor, &rep);
    EXPECT_OK(rc, &rep);
    bf_reply_destroy(&rep);
    const char *good[] = {"admin", "cadre:42", "system:scheduler", "a-b_c:X.y@z-9_",
                          "finance.zhang", "op2.county-7:x"};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        rc = s_call("test.context", NULL, good[k], &rep);
        EXPECT_OK(rc, &rep);
        if (rc == 0 && rep.ok) ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "actor"), good[k]));
        bf_reply_destroy(&rep);
    }
    /* an actor of the wrong type */
    s_mp_t b;
    msgpack_packer *pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "method", "test.context");
    bf_mp_kv_int(pk, "actor", 42);
    rc = s_raw(&b, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "actor", NULL);
    bf_reply_destroy(&rep);
    s_mp_free(&b);
}

static void test_write_needs_actor(void)
{
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "body", "first note");
    bf_reply_t rep;
    int rc = s_call("test.write", &p, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_UNAUTHENTICATED, "actor", "actor");
    bf_reply_destroy(&rep);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.notes WHERE body = 'first note'",
             s_schema);
    PGresult *res = bf_db_exec(s_admin, sql, 0, NULL);
    ASSERT(res && bf_db_int(res, 0, "n") == 0);
    if (res) PQclear(res);
    /* with an actor it runs and commits */
    rc = s_call("test.write", &p, "cadre:7", &rep);
    EXPECT_OK(rc, &rep);
    int64_t id = 0;
    if (rc == 0 && rep.ok) {
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "id"), &id) && id > 0);
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "actor"), "cadre:7"));
    }
    bf_reply_destroy(&rep);
    res = bf_db_exec(s_admin, sql, 0, NULL);
    ASSERT(res && bf_db_int(res, 0, "n") == 1);
    if (res) PQclear(res);
    /* the same body again: unique violation -> already_exists, nothing kept */
    rc = s_call("test.write", &p, "cadre:7", &rep);
    EXPECT_ERROR(rc, &rep, BF_E_EXISTS, NULL, NULL);
    bf_reply_destroy(&rep);
    s_mp_free(&p);
    /* the worker's connection is usable after that (the transaction was
     * rolled back): several writes in a row all succeed */
    for (int k = 0; k < 6; k++) {
        pk = s_mp_new(&p);
        msgpack_pack_map(pk, 1);
        char body[32];
        snprintf(body, sizeof body, "note %d", k);
        bf_mp_kv_str(pk, "body", body);
        rc = s_call("test.write", &p, "admin", &rep);
        EXPECT_OK(rc, &rep);
        bf_reply_destroy(&rep);
        s_mp_free(&p);
    }
}

/* --- parameters --- */

static void pk_unknown(msgpack_packer *pk) { bf_mp_kv_int(pk, "zzz", 1); }
static void pk_s_int(msgpack_packer *pk) { bf_mp_kv_int(pk, "s", 1); }
static void pk_s_long(msgpack_packer *pk) { bf_mp_kv_str(pk, "s", "ééééé!"); } /* 11 bytes */
static void pk_s_10(msgpack_packer *pk) { bf_mp_kv_str(pk, "s", "ééééé"); }    /* 10 bytes */
static void pk_s_utf8(msgpack_packer *pk)
{
    bf_mp_key(pk, "s");
    bf_mp_strn(pk, "ab\xe6\x89", 4);
}
static void pk_s_nul(msgpack_packer *pk)
{
    bf_mp_key(pk, "s");
    bf_mp_strn(pk, "a\0b", 3);
}
static void pk_s_bin(msgpack_packer *pk)
{
    bf_mp_key(pk, "s");
    msgpack_pack_bin(pk, 2);
    msgpack_pack_bin_body(pk, "ab", 2);
}
static void pk_s_nil(msgpack_packer *pk) { bf_mp_kv_nil(pk, "s"); }
static void pk_i_float(msgpack_packer *pk)
{
    bf_mp_key(pk, "i");
    msgpack_pack_double(pk, 3.0);
}
static void pk_i_float32(msgpack_packer *pk)
{
    bf_mp_key(pk, "i");
    msgpack_pack_float(pk, 3.0f);
}
static void pk_i_str(msgpack_packer *pk) { bf_mp_kv_str(pk, "i", "3"); }
static void pk_i_bool(msgpack_packer *pk) { bf_mp_kv_bool(pk, "i", true); }
static void pk_i_huge(msgpack_packer *pk)
{
    bf_mp_key(pk, "i");
    msgpack_pack_uint64(pk, UINT64_MAX);
}
static void pk_i_max(msgpack_packer *pk) { bf_mp_kv_int(pk, "i", INT64_MAX); }
static void pk_b_int(msgpack_packer *pk) { bf_mp_kv_int(pk, "b", 1); }
static void pk_m_list(msgpack_packer *pk)
{
    bf_mp_key(pk, "m");
    msgpack_pack_array(pk, 0);
}
static void pk_l_map(msgpack_packer *pk)
{
    bf_mp_key(pk, "l");
    msgpack_pack_map(pk, 0);
}
static void pk_l_4(msgpack_packer *pk)
{
    bf_mp_key(pk, "l");
    msgpack_pack_array(pk, 4);
    for (int k = 0; k < 4; k++) msgpack_pack_int(pk, k);
}
static void pk_d_65(msgpack_packer *pk) /* rpc.max_string_bytes is 64 here */
{
    char s[65];
    memset(s, 'd', sizeof s);
    bf_mp_key(pk, "d");
    bf_mp_strn(pk, s, sizeof s);
}
static void pk_d_64(msgpack_packer *pk)
{
    char s[64];
    memset(s, 'd', sizeof s);
    bf_mp_key(pk, "d");
    bf_mp_strn(pk, s, sizeof s);
}
static void pk_dl_6(msgpack_packer *pk) /* rpc.max_list is 5 here */
{
    bf_mp_key(pk, "dl");
    msgpack_pack_array(pk, 6);
    for (int k = 0; k < 6; k++) msgpack_pack_nil(pk);
}
static void pk_deep_string(msgpack_packer *pk)
{
    char s[65];
    memset(s, 'x', sizeof s);
    bf_mp_key(pk, "m");
    msgpack_pack_map(pk, 1);
    bf_mp_key(pk, "inner");
    msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1);
    bf_mp_strn(pk, s, sizeof s);
}
static void pk_deep_key(msgpack_packer *pk)
{
    char s[65];
    memset(s, 'k', sizeof s);
    bf_mp_key(pk, "a");
    msgpack_pack_map(pk, 1);
    bf_mp_strn(pk, s, sizeof s); /* a map key is a string too */
    msgpack_pack_int(pk, 1);
}
static void pk_deep_list(msgpack_packer *pk)
{
    bf_mp_key(pk, "a");
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 6);
    for (int k = 0; k < 6; k++) msgpack_pack_int(pk, k);
}
static void pk_key_int(msgpack_packer *pk)
{
    msgpack_pack_int(pk, 7);
    msgpack_pack_int(pk, 7);
}
static void pk_key_long(msgpack_packer *pk)
{
    char k[65];
    memset(k, 'q', sizeof k);
    bf_mp_strn(pk, k, sizeof k);
    msgpack_pack_int(pk, 1);
}
static void pk_any_nested(msgpack_packer *pk)
{
    bf_mp_key(pk, "a");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "ok", "short");
    bf_mp_key(pk, "list");
    msgpack_pack_array(pk, 5);
    for (int k = 0; k < 5; k++) msgpack_pack_double(pk, k / 2.0);
}

static void test_param_checks(void)
{
    static const struct {
        void (*fn)(msgpack_packer *);
        const char *code, *field, *msg;
    } cases[] = {
        {pk_unknown, BF_E_INVALID, "zzz", "unknown parameter zzz"},
        {pk_s_int, BF_E_INVALID, "s", "must be a string"},
        {pk_s_long, BF_E_INVALID, "s", "longer than 10 bytes"},
        {pk_s_utf8, BF_E_INVALID, "s", "UTF-8"},
        {pk_s_nul, BF_E_INVALID, "s", "UTF-8"},
        {pk_s_bin, BF_E_INVALID, "s", "must be a string"},
        {pk_i_float, BF_E_INVALID, "i", "not a float"},
        {pk_i_float32, BF_E_INVALID, "i", "not a float"},
        {pk_i_str, BF_E_INVALID, "i", "must be an integer"},
        {pk_i_bool, BF_E_INVALID, "i", "must be an integer"},
        {pk_i_huge, BF_E_INVALID, "i", "overflows"},
        {pk_b_int, BF_E_INVALID, "b", "true or false"},
        {pk_m_list, BF_E_INVALID, "m", "must be a map"},
        {pk_l_map, BF_E_INVALID, "l", "must be a list"},
        {pk_l_4, BF_E_INVALID, "l", "more than 3 items"},
        {pk_d_65, BF_E_INVALID, "d", "longer than 64 bytes"},
        {pk_dl_6, BF_E_INVALID, "dl", "more than 5 items"},
        {pk_deep_string, BF_E_INVALID, "m", "too long"},
        {pk_deep_key, BF_E_INVALID, "a", "too long"},
        {pk_deep_list, BF_E_INVALID, "a", "too long"},
        {pk_key_int, BF_E_INVALID, "params", NULL},
        {pk_key_long, BF_E_INVALID, "params", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bf_reply_t rep;
        int rc = s_echo_with(cases[k].fn, &rep);
        if (rc != 0 || rep.ok || strcmp(rep.code, cases[k].code) != 0 ||
            strcmp(rep.field, cases[k].field) != 0 ||
            (cases[k].msg && !strstr(rep.message, cases[k].msg)))
            BF_FAIL_AT("case %zu (%s): got %s field \"%s\": %s", k, cases[k].field,
                       rep.ok ? "ok" : rep.code, rep.field, rep.message);
        bf_reply_destroy(&rep);
    }
    /* accepted at the limits, and nil for an optional parameter is absent */
    void (*good[])(msgpack_packer *) = {pk_s_10, pk_i_max, pk_d_64, pk_s_nil, pk_any_nested};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        bf_reply_t rep;
        int rc = s_echo_with(good[k], &rep);
        if (rc != 0 || !rep.ok) BF_FAIL_AT("good case %zu refused: %s %s %s", k, rep.code,
                                           rep.field, rep.message);
        bf_reply_destroy(&rep);
    }
    /* required: missing, and nil */
    bf_reply_t rep;
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "s", "x");
    int rc = s_call("test.echo", &p, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "need", "need is required");
    bf_reply_destroy(&rep);
    s_mp_free(&p);
    pk = s_mp_new(&p);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_nil(pk, "need");
    rc = s_call("test.echo", &p, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "need", "required");
    bf_reply_destroy(&rep);
    s_mp_free(&p);
    /* a method without declared params refuses any */
    pk = s_mp_new(&p);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_int(pk, "x", 1);
    rc = s_call("test.context", &p, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "x", "unknown parameter");
    bf_reply_destroy(&rep);
    s_mp_free(&p);
}

/* --- handler outcomes --- */

static void test_handler_failures(void)
{
    bf_reply_t rep;
    int rc = s_call("test.fail", NULL, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_CONFLICT, "thing", "it failed 7 times");
    ASSERT_STR_EQ(rep.message, "it failed 7 times");
    bf_reply_destroy(&rep);

    rc = s_call("test.silent", NULL, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INTERNAL, NULL, NULL);
    bf_reply_destroy(&rep);

    /* a transaction left open is rolled back, and the reply does not claim
     * a success that was thrown away */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.notes WHERE body = 'left open'",
             s_schema);
    rc = s_call("test.open_tx", NULL, "admin", &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INTERNAL, NULL, NULL);
    bf_reply_destroy(&rep);
    PGresult *res = bf_db_exec(s_admin, sql, 0, NULL);
    ASSERT(res && bf_db_int(res, 0, "n") == 0);
    if (res) PQclear(res);
    /* and that worker is not stuck in the transaction: every worker still
     * writes (more calls than workers) */
    for (int k = 0; k < 6; k++) {
        s_mp_t p;
        msgpack_packer *pk = s_mp_new(&p);
        msgpack_pack_map(pk, 1);
        char body[32];
        snprintf(body, sizeof body, "after open tx %d", k);
        bf_mp_kv_str(pk, "body", body);
        rc = s_call("test.write", &p, "admin", &rep);
        EXPECT_OK(rc, &rep);
        bf_reply_destroy(&rep);
        s_mp_free(&p);
    }
    res = bf_db_exec(s_admin, sql, 0, NULL);
    ASSERT(res && bf_db_int(res, 0, "n") == 0);
    if (res) PQclear(res);
}

static void test_db_error_mapping(void)
{
    static const struct {
        const char *sqlstate, *code;
    } cases[] = {
        {"23505", BF_E_EXISTS},   {"23503", BF_E_NOT_FOUND}, {"40001", BF_E_CONFLICT},
        {"40P01", BF_E_CONFLICT}, {"55P03", BF_E_CONFLICT},  {"57014", BF_E_UNAVAILABLE},
        {"42P01", BF_E_INTERNAL}, {"XX000", BF_E_INTERNAL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        s_mp_t p;
        msgpack_packer *pk = s_mp_new(&p);
        msgpack_pack_map(pk, 1);
        bf_mp_kv_str(pk, "sqlstate", cases[k].sqlstate);
        bf_reply_t rep;
        int rc = s_call("test.raise", &p, NULL, &rep);
        if (rc != 0 || rep.ok || strcmp(rep.code, cases[k].code) != 0)
            BF_FAIL_AT("SQLSTATE %s: got %s (%s), want %s", cases[k].sqlstate,
                       rep.ok ? "ok" : rep.code, rep.message, cases[k].code);
        /* database details never reach the client */
        if (strstr(rep.message, "raised") || strstr(rep.message, cases[k].sqlstate))
            BF_FAIL_AT("SQLSTATE %s: the message leaks details: %s", cases[k].sqlstate,
                       rep.message);
        bf_reply_destroy(&rep);
        s_mp_free(&p);
    }
}

/* --- typed getters --- */

typedef struct {
    const char *name;
    int age_kind; /* 0 absent, 1 int, 2 float, 3 string, 4 huge, 5 out of range */
    int head_kind; /* 0 absent, 1 true, 2 nil, 3 int */
    const char *role; /* NULL absent */
    int tags;         /* -1 absent, -2 not a list, else count */
    int members;      /* -1 absent, else count; member 1 lacks id_number if 100+ */
    int name_kind;    /* 0 str, 1 invalid UTF-8, 2 NUL inside, 3 int, 4 absent */
    int member_kind;  /* 0 map, 1 list */
} s_getter_case_t;

static int s_getters_call(const s_getter_case_t *c, bf_reply_t *rep)
{
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, c->members >= 0 ? 2 : 1);
    bf_mp_key(pk, "member");
    if (c->member_kind == 1) {
        msgpack_pack_array(pk, 0);
    } else {
        int n = (c->name_kind != 4) + (c->age_kind != 0) + (c->head_kind != 0) +
                (c->role != NULL) + (c->tags != -1);
        msgpack_pack_map(pk, (size_t)n);
        if (c->name_kind != 4) {
            bf_mp_key(pk, "name");
            if (c->name_kind == 0) bf_mp_str(pk, c->name);
            if (c->name_kind == 1) bf_mp_strn(pk, "\xed\xa0\x80", 3);
            if (c->name_kind == 2) bf_mp_strn(pk, "a\0b", 3);
            if (c->name_kind == 3) msgpack_pack_int(pk, 5);
        }
        if (c->age_kind) {
            bf_mp_key(pk, "age");
            if (c->age_kind == 1) msgpack_pack_int(pk, 40);
            if (c->age_kind == 2) msgpack_pack_double(pk, 40.0);
            if (c->age_kind == 3) bf_mp_str(pk, "40");
            if (c->age_kind == 4) msgpack_pack_uint64(pk, UINT64_MAX);
            if (c->age_kind == 5) msgpack_pack_int(pk, 151);
        }
        if (c->head_kind) {
            bf_mp_key(pk, "head");
            if (c->head_kind == 1) msgpack_pack_true(pk);
            if (c->head_kind == 2) msgpack_pack_nil(pk);
            if (c->head_kind == 3) msgpack_pack_int(pk, 1);
        }
        if (c->role) bf_mp_kv_str(pk, "role", c->role);
        if (c->tags != -1) {
            bf_mp_key(pk, "tags");
            if (c->tags == -2) {
                bf_mp_str(pk, "a,b");
            } else {
                msgpack_pack_array(pk, (size_t)c->tags);
                for (int k = 0; k < c->tags; k++) bf_mp_str(pk, "t");
            }
        }
    }
    if (c->members >= 0) {
        int count = c->members % 100;
        bf_mp_key(pk, "members");
        msgpack_pack_array(pk, (size_t)count);
        for (int k = 0; k < count; k++) {
            if (c->members >= 100 && k == 1) {
                msgpack_pack_map(pk, 1);
                bf_mp_kv_str(pk, "name", "no id");
            } else {
                msgpack_pack_map(pk, 1);
                bf_mp_kv_str(pk, "id_number", "11010519491231002X");
            }
        }
    }
    int rc = s_call("test.getters", &p, NULL, rep);
    s_mp_free(&p);
    return rc;
}

static void test_typed_getters(void)
{
    bf_reply_t rep;
    /* all present */
    s_getter_case_t all = {"王五", 1, 1, "spouse", 2, 3, 0, 0};
    int rc = s_getters_call(&all, &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "name"), "王五"));
        int64_t v = 0;
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "age"), &v) && v == 40);
        const msgpack_object *h = bf_mp_get(rep.result, "head");
        ASSERT(h && h->type == MSGPACK_OBJECT_BOOLEAN && h->via.boolean);
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "role"), "spouse"));
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "tags"), &v) && v == 2);
        ASSERT(bf_mp_int(bf_mp_get(rep.result, "members"), &v) && v == 3);
        ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "last_id"), "11010519491231002X"));
    }
    bf_reply_destroy(&rep);
    /* optional ones absent, or nil (= absent): out untouched, rc 1 */
    for (int head_kind = 0; head_kind <= 2; head_kind += 2) {
        s_getter_case_t opt = {"李", 1, head_kind, NULL, -1, -1, 0, 0};
        rc = s_getters_call(&opt, &rep);
        EXPECT_OK(rc, &rep);
        if (rc == 0 && rep.ok) {
            const msgpack_object *h = bf_mp_get(rep.result, "head");
            ASSERT(h && h->type == MSGPACK_OBJECT_NIL);
            ASSERT(bf_mp_str_eq(bf_mp_get(rep.result, "role"), "none"));
            int64_t v = 0;
            ASSERT(bf_mp_int(bf_mp_get(rep.result, "tags"), &v) && v == -1);
            ASSERT(bf_mp_int(bf_mp_get(rep.result, "members"), &v) && v == -1);
        }
        bf_reply_destroy(&rep);
    }
    /* errors name the nested field with its prefix */
    static const struct {
        s_getter_case_t c;
        const char *field, *msg;
    } errs[] = {
        {{"x", 1, 0, NULL, -1, -1, 4, 0}, "member.name", "member.name is required"},
        {{"x", 1, 0, NULL, -1, -1, 3, 0}, "member.name", "must be a string"},
        {{"x", 1, 0, NULL, -1, -1, 1, 0}, "member.name", "UTF-8"},
        {{"x", 1, 0, NULL, -1, -1, 2, 0}, "member.name", "UTF-8"},
        {{"王五王", 1, 0, NULL, -1, -1, 0, 0}, "member.name", "longer than 8 bytes"},
        {{"x", 0, 0, NULL, -1, -1, 0, 0}, "member.age", "required"},
        {{"x", 2, 0, NULL, -1, -1, 0, 0}, "member.age", "not a float"},
        {{"x", 3, 0, NULL, -1, -1, 0, 0}, "member.age", "must be an integer"},
        {{"x", 4, 0, NULL, -1, -1, 0, 0}, "member.age", "overflows"},
        {{"x", 5, 0, NULL, -1, -1, 0, 0}, "member.age", "between 0 and 150"},
        {{"x", 1, 3, NULL, -1, -1, 0, 0}, "member.head", "true or false"},
        {{"x", 1, 0, "uncle", -1, -1, 0, 0}, "member.role", "head, spouse, child"},
        {{"x", 1, 0, "HEAD", -1, -1, 0, 0}, "member.role", "one of"},
        {{"x", 1, 0, NULL, 3, -1, 0, 0}, "member.tags", "more than 2 items"},
        {{"x", 1, 0, NULL, -2, -1, 0, 0}, "member.tags", "must be a list"},
        {{"x", 1, 0, NULL, -1, 103, 0, 0}, "members[1].id_number", "members[1].id_number is required"},
        {{"x", 1, 0, NULL, -1, -1, 0, 1}, "member", "must be a map"},
    };
    for (size_t k = 0; k < sizeof errs / sizeof errs[0]; k++) {
        rc = s_getters_call(&errs[k].c, &rep);
        if (rc != 0 || rep.ok || strcmp(rep.code, BF_E_INVALID) != 0 ||
            strcmp(rep.field, errs[k].field) != 0 || !strstr(rep.message, errs[k].msg))
            BF_FAIL_AT("getter case %zu: got %s field \"%s\": %s (want %s \"%s\")", k,
                       rep.ok ? "ok" : rep.code, rep.field, rep.message, errs[k].field,
                       errs[k].msg);
        bf_reply_destroy(&rep);
    }
    /* member missing entirely: the dispatcher's own check (field member) */
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 0);
    rc = s_call("test.getters", &p, NULL, &rep);
    EXPECT_ERROR(rc, &rep, BF_E_INVALID, "member", "required");
    bf_reply_destroy(&rep);
    s_mp_free(&p);
}

/* --- garbage frames --- */

static void test_garbage_frames(void)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *what;
    } garbage[] = {
        {"\xc1", 1, "0xc1"},
        {"", 0, "an empty frame"},
        {"\x83\xa1v\x01", 4, "a truncated map"},
        {"\x81\xa1v\x01\x00", 5, "a map with a trailing byte"},
        {"\xdd\xff\xff\xff\xff", 5, "array32 of 2^32-1 in 5 bytes"},
        {"\xdf\xff\xff\xff\xff\x01", 6, "map32 of 2^32-1"},
        {"GET / HTTP/1.1\r\n\r\n", 18, "HTTP"},
        {"{\"v\":1,\"method\":\"sys.health\"}", 29, "JSON"},
    };
    for (size_t k = 0; k < sizeof garbage / sizeof garbage[0]; k++) {
        bf_reply_t rep;
        int rc = bf_client_call_raw(s_client, garbage[k].bytes, garbage[k].len, &rep);
        if (rc != 0 || rep.ok || strcmp(rep.code, BF_E_INVALID) != 0) {
            BF_FAIL_AT("%s: got rc %d %s: %s", garbage[k].what, rc, rep.ok ? "ok" : rep.code,
                       rep.message);
        } else {
            const msgpack_object *id = s_reply_id(&rep);
            if (!id || id->type != MSGPACK_OBJECT_NIL) BF_FAIL_AT("%s: reply id not nil",
                                                                 garbage[k].what);
        }
        bf_reply_destroy(&rep);
    }
    /* nested deeper than BF_MP_MAX_DEPTH (32) containers, counting the
     * envelope: refused as malformed (not a decoder failure); 32 are decoded */
    for (int total = 30; total <= 34; total++) {
        s_mp_t b;
        msgpack_packer *pk = s_mp_new(&b);
        msgpack_pack_map(pk, 3);
        bf_mp_kv_int(pk, "v", 1);
        bf_mp_kv_str(pk, "method", "test.echo");
        bf_mp_key(pk, "params");
        msgpack_pack_map(pk, 2);
        bf_mp_kv_str(pk, "need", "x");
        bf_mp_key(pk, "a");
        /* envelope + params + (total - 3) arrays of one + one empty array */
        for (int k = 0; k < total - 3; k++) msgpack_pack_array(pk, 1);
        msgpack_pack_array(pk, 0);
        bf_reply_t rep;
        int rc = s_raw(&b, &rep);
        if (total <= BF_MP_MAX_DEPTH) {
            EXPECT_OK(rc, &rep);
        } else {
            EXPECT_ERROR(rc, &rep, BF_E_INVALID, NULL, "well-formed");
        }
        bf_reply_destroy(&rep);
        s_mp_free(&b);
    }
    /* the server survived all of it */
    bf_reply_t rep;
    int rc = s_call("sys.health", NULL, NULL, &rep);
    EXPECT_OK(rc, &rep);
    bf_reply_destroy(&rep);
}

/* Sends frames on a raw socket and returns the last frame of the reply
 * (malloc'd, *len set), or NULL on timeout. */
static char *s_zmq_roundtrip(void *sock, const char *const *frames, const size_t *lens, int n,
                             int timeout_ms, size_t *len, int *nframes_out)
{
    for (int k = 0; k < n; k++)
        if (zmq_send(sock, frames[k], lens[k], k + 1 < n ? ZMQ_SNDMORE : 0) < 0) return NULL;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
    char *last = NULL;
    int more = 1, count = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        count++;
        more = zmq_msg_more(&m);
        free(last);
        *len = zmq_msg_size(&m);
        last = malloc(*len + 1);
        if (last) memcpy(last, zmq_msg_data(&m), *len);
        zmq_msg_close(&m);
    }
    if (nframes_out) *nframes_out = count;
    return last;
}

static int s_reply_ok(const char *data, size_t len, const char *want_id)
{
    if (!data || bf_mp_check(data, len, BF_MP_MAX_DEPTH) != 0) return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ok = msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS;
    if (ok) {
        const msgpack_object *okv = bf_mp_get(&u.data, "ok");
        ok = okv && okv->type == MSGPACK_OBJECT_BOOLEAN && okv->via.boolean &&
             bf_mp_str_eq(bf_mp_get(&u.data, "id"), want_id);
    }
    msgpack_unpacked_destroy(&u);
    return ok;
}

static void test_routing_frames(void)
{
    s_mp_t b;
    msgpack_packer *pk = s_mp_new(&b);
    msgpack_pack_map(pk, 3);
    bf_mp_kv_int(pk, "v", 1);
    bf_mp_kv_str(pk, "id", "route-1");
    bf_mp_kv_str(pk, "method", "sys.health");
    int linger = 0;

    /* REQ: adds the empty delimiter itself */
    void *req = zmq_socket(bf_zmq_ctx(), ZMQ_REQ);
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(req, s_endpoint);
    const char *f1[] = {b.sb.data};
    size_t l1[] = {b.sb.size};
    size_t len = 0;
    int nf = 0;
    char *r = s_zmq_roundtrip(req, f1, l1, 1, 5000, &len, &nf);
    ASSERT(s_reply_ok(r, len, "route-1"));
    ASSERT_EQ(nf, 1); /* REQ strips the delimiter */
    free(r);
    zmq_close(req);

    void *dealer = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(dealer, s_endpoint);
    /* DEALER without a delimiter: the body alone, the reply alone */
    r = s_zmq_roundtrip(dealer, f1, l1, 1, 5000, &len, &nf);
    ASSERT(s_reply_ok(r, len, "route-1"));
    ASSERT_EQ(nf, 1);
    free(r);
    /* extra routing frames are echoed in front, unchanged */
    const char *f3[] = {"hop-a", "hop-b", "", b.sb.data};
    size_t l3[] = {5, 5, 0, b.sb.size};
    r = s_zmq_roundtrip(dealer, f3, l3, 4, 5000, &len, &nf);
    ASSERT(s_reply_ok(r, len, "route-1"));
    ASSERT_EQ(nf, 4);
    free(r);
    /* more routing frames than BF_RPC_MAX_FRAMES: dropped without a reply */
    const char *many[BF_RPC_MAX_FRAMES + 2];
    size_t many_l[BF_RPC_MAX_FRAMES + 2];
    for (int k = 0; k < BF_RPC_MAX_FRAMES + 1; k++) {
        many[k] = "x";
        many_l[k] = 1;
    }
    many[BF_RPC_MAX_FRAMES + 1] = b.sb.data;
    many_l[BF_RPC_MAX_FRAMES + 1] = b.sb.size;
    r = s_zmq_roundtrip(dealer, many, many_l, BF_RPC_MAX_FRAMES + 2, 500, &len, &nf);
    ASSERT(r == NULL);
    free(r);
    /* the socket still works afterwards */
    r = s_zmq_roundtrip(dealer, f1, l1, 1, 5000, &len, &nf);
    ASSERT(s_reply_ok(r, len, "route-1"));
    free(r);
    zmq_close(dealer);
    s_mp_free(&b);
}

static void test_frame_size_limit(void)
{
    /* rpc.max_msg_bytes is 65536 here: a bigger frame gets no reply */
    bf_client_t *c = bf_client_new(s_endpoint, 700);
    ASSERT(c != NULL);
    if (!c) return;
    size_t n = 70000;
    char *big = malloc(n);
    ASSERT(big != NULL);
    if (!big) {
        bf_client_destroy(&c);
        return;
    }
    memset(big, 'z', n);
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "need", "x");
    bf_mp_key(pk, "a");
    bf_mp_strn(pk, big, n);
    bf_reply_t rep;
    int rc = bf_client_call(c, "test.echo", p.sb.data, p.sb.size, NULL, &rep);
    ASSERT_EQ(rc, -1);
    ASSERT_STR_EQ(rep.code, BF_E_UNAVAILABLE);
    bf_reply_destroy(&rep);
    s_mp_free(&p);
    free(big);
    bf_client_destroy(&c);
    /* a new connection is served normally */
    c = bf_client_new(s_endpoint, 5000);
    ASSERT(c != NULL);
    if (!c) return;
    rc = bf_client_call(c, "sys.health", NULL, 0, NULL, &rep);
    EXPECT_OK(rc, &rep);
    bf_reply_destroy(&rep);
    bf_client_destroy(&c);
}

/* --- sys.* --- */

static void test_sys_health(void)
{
    bf_reply_t rep;
    int rc = s_call("sys.health", NULL, NULL, &rep);
    EXPECT_OK(rc, &rep);
    if (rc == 0 && rep.ok) {
        const msgpack_object *res = rep.result;
        ASSERT(bf_mp_str_eq(bf_mp_get(res, "status"), "ok"));
        ASSERT(bf_mp_str_eq(bf_mp_get(res, "service"), "rpctest"));
        ASSERT(bf_mp_str_eq(bf_mp_get(res, "version"), "9.8.7"));
        ASSERT(bf_mp_str_eq(bf_mp_get(res, "db"), "ok"));
        ASSERT(bf_mp_str_eq(bf_mp_get(res, "redis"), "ok"));
        int64_t up = -1;
        ASSERT(bf_mp_int(bf_mp_get(res, "uptime_s"), &up) && up >= 0 && up < 3600);
        ASSERT_EQ(res->via.map.size, 7);
        /* tests/run.sh's Redis has a maxmemory: used, max, pct, alert */
        const msgpack_object *mem = bf_mp_get(res, "redis_memory");
        int64_t used = -1, max = -1;
        ASSERT(mem && mem->type == MSGPACK_OBJECT_MAP);
        ASSERT(bf_mp_int(bf_mp_get(mem, "used"), &used) && used > 0);
        ASSERT(bf_mp_int(bf_mp_get(mem, "max"), &max) && max > 0);
    }
    bf_reply_destroy(&rep);
}

static void test_sys_methods(void)
{
    bf_reply_t rep;
    int rc = s_call("sys.methods", NULL, NULL, &rep);
    EXPECT_OK(rc, &rep);
    if (rc != 0 || !rep.ok || !rep.result || rep.result->type != MSGPACK_OBJECT_ARRAY) {
        bf_reply_destroy(&rep);
        BF_FAIL_AT("sys.methods did not return a list");
        return;
    }
    const msgpack_object_array *a = &rep.result->via.array;
    size_t nmethods = sizeof s_methods / sizeof s_methods[0] - 1;
    ASSERT_EQ(a->size, nmethods + 3);
    int seen_sys = 0, seen_echo = 0, seen_write = 0;
    for (uint32_t k = 0; k < a->size; k++) {
        const msgpack_object *m = &a->ptr[k];
        const msgpack_object *name = bf_mp_get(m, "name");
        const msgpack_object *writes = bf_mp_get(m, "writes");
        const msgpack_object *params = bf_mp_get(m, "params");
        ASSERT(name && name->type == MSGPACK_OBJECT_STR);
        ASSERT(writes && writes->type == MSGPACK_OBJECT_BOOLEAN);
        ASSERT(params && params->type == MSGPACK_OBJECT_ARRAY);
        ASSERT(bf_mp_get(m, "doc") != NULL);
        if (bf_mp_str_eq(name, "sys.health") || bf_mp_str_eq(name, "sys.methods") ||
            bf_mp_str_eq(name, "sys.stats"))
            seen_sys++;
        if (bf_mp_str_eq(name, "test.write")) {
            seen_write = writes && writes->type == MSGPACK_OBJECT_BOOLEAN && writes->via.boolean;
        }
        if (bf_mp_str_eq(name, "test.echo") && params && params->type == MSGPACK_OBJECT_ARRAY) {
            seen_echo = 1;
            ASSERT_EQ(params->via.array.size, 9);
            const msgpack_object *s = &params->via.array.ptr[0];
            ASSERT(bf_mp_str_eq(bf_mp_get(s, "name"), "s"));
            ASSERT(bf_mp_str_eq(bf_mp_get(s, "type"), "string"));
            int64_t max = 0;
            ASSERT(bf_mp_int(bf_mp_get(s, "max"), &max) && max == 10);
            const msgpack_object *req = bf_mp_get(s, "required");
            ASSERT(req && req->type == MSGPACK_OBJECT_BOOLEAN && !req->via.boolean);
            const msgpack_object *need = &params->via.array.ptr[8];
            ASSERT(bf_mp_str_eq(bf_mp_get(need, "name"), "need"));
            req = bf_mp_get(need, "required");
            ASSERT(req && req->type == MSGPACK_OBJECT_BOOLEAN && req->via.boolean);
            const char *types[] = {"string", "integer", "boolean", "map", "list", "string",
                                   "list", "any", "string"};
            for (int t = 0; t < 9; t++)
                ASSERT(bf_mp_str_eq(bf_mp_get(&params->via.array.ptr[t], "type"), types[t]));
        }
    }
    ASSERT_EQ(seen_sys, 3);
    ASSERT(seen_echo);
    ASSERT(seen_write);
    bf_reply_destroy(&rep);
}

/* Reads sys.stats: total calls/failures/bad_frames and one method's counts. */
static int s_stats(const char *method, int64_t *calls, int64_t *failures, int64_t *bad,
                   int64_t *m_calls, int64_t *m_failures)
{
    bf_reply_t rep;
    int rc = s_call("sys.stats", NULL, NULL, &rep);
    int ok = rc == 0 && rep.ok && bf_mp_int(bf_mp_get(rep.result, "calls"), calls) &&
             bf_mp_int(bf_mp_get(rep.result, "failures"), failures) &&
             bf_mp_int(bf_mp_get(rep.result, "bad_frames"), bad) &&
             bf_mp_str_eq(bf_mp_get(rep.result, "service"), "rpctest");
    const msgpack_object *methods = bf_mp_get(rep.result, "methods");
    const msgpack_object *m = bf_mp_get(methods, method);
    *m_calls = *m_failures = 0;
    if (m) {
        bf_mp_int(bf_mp_get(m, "calls"), m_calls);
        bf_mp_int(bf_mp_get(m, "failures"), m_failures);
    }
    if (methods && methods->type == MSGPACK_OBJECT_MAP) {
        /* only methods that were called are listed */
        for (uint32_t k = 0; k < methods->via.map.size; k++) {
            int64_t c = 0;
            if (!bf_mp_int(bf_mp_get(&methods->via.map.ptr[k].val, "calls"), &c) || c <= 0)
                ok = 0;
        }
    } else {
        ok = 0;
    }
    bf_reply_destroy(&rep);
    return ok ? 0 : -1;
}

static void test_sys_stats(void)
{
    int64_t c0, f0, b0, mc0, mf0, c1, f1, b1, mc1, mf1;
    ASSERT_EQ(s_stats("test.fail", &c0, &f0, &b0, &mc0, &mf0), 0);
    bf_reply_t rep;
    for (int k = 0; k < 2; k++) {
        s_call("test.fail", NULL, NULL, &rep);
        bf_reply_destroy(&rep);
    }
    s_call("test.context", NULL, NULL, &rep);
    bf_reply_destroy(&rep);
    bf_client_call_raw(s_client, "\xc1", 1, &rep);
    bf_reply_destroy(&rep);
    ASSERT_EQ(s_stats("test.fail", &c1, &f1, &b1, &mc1, &mf1), 0);
    /* the first stats call, 2 failures, 1 success, 1 bad frame */
    ASSERT_EQ(c1 - c0, 5);
    ASSERT_EQ(f1 - f0, 3);
    ASSERT_EQ(b1 - b0, 1);
    ASSERT_EQ(mc1 - mc0, 2);
    ASSERT_EQ(mf1 - mf0, 2);
    int64_t cc, cf;
    ASSERT_EQ(s_stats("test.context", &c1, &f1, &b1, &cc, &cf), 0);
    ASSERT(cc >= 1);
    ASSERT(cf <= cc);
    ASSERT_EQ(s_stats("test.nosuch", &c1, &f1, &b1, &cc, &cf), 0);
    ASSERT_EQ(cc, 0);
}

/* --- concurrency and stop --- */

typedef struct {
    int ok;
    int done;
} s_worker_result_t;

static void *s_client_thread(void *arg)
{
    s_worker_result_t *res = arg;
    bf_client_t *c = bf_client_new(s_endpoint, 10000);
    if (!c) return NULL;
    for (int k = 0; k < 40; k++) {
        s_mp_t p;
        msgpack_packer *pk = s_mp_new(&p);
        msgpack_pack_map(pk, 2);
        bf_mp_kv_str(pk, "need", "x");
        bf_mp_kv_int(pk, "i", k);
        bf_reply_t rep;
        int rc = bf_client_call(c, "test.echo", p.sb.data, p.sb.size, NULL, &rep);
        int64_t v = -1;
        if (rc == 0 && rep.ok && bf_mp_int(bf_mp_get(rep.result, "i"), &v) && v == k) res->ok++;
        res->done++;
        bf_reply_destroy(&rep);
        s_mp_free(&p);
    }
    bf_client_destroy(&c);
    return NULL;
}

static void test_concurrent_clients(void)
{
    enum { T = 6 };
    pthread_t th[T];
    s_worker_result_t res[T];
    memset(res, 0, sizeof res);
    for (int k = 0; k < T; k++) pthread_create(&th[k], NULL, s_client_thread, &res[k]);
    for (int k = 0; k < T; k++) {
        pthread_join(th[k], NULL);
        ASSERT_EQ(res[k].ok, 40);
    }
}

static void test_client_timeout_and_late_reply(void)
{
    bf_client_t *c = bf_client_new(s_endpoint, 1000);
    ASSERT(c != NULL);
    if (!c) return;
    atomic_store(&s_slow_finished, 0);
    s_mp_t p;
    msgpack_packer *pk = s_mp_new(&p);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_int(pk, "ms", 1600);
    bf_reply_t rep;
    long long t0 = s_mono_ms();
    int rc = bf_client_call(c, "test.slow", p.sb.data, p.sb.size, NULL, &rep);
    long long el = s_mono_ms() - t0;
    s_mp_free(&p);
    ASSERT_EQ(rc, -1);
    ASSERT_STR_EQ(rep.code, BF_E_UNAVAILABLE);
    ASSERT(strstr(rep.message, "timeout") != NULL);
    ASSERT(el >= 990 && el < 3000); /* it was the timeout, not an early return */
    bf_reply_destroy(&rep);
    /* wait (polling, bounded) until the abandoned call's reply is on its way */
    long long deadline = s_mono_ms() + 10000;
    while (!atomic_load(&s_slow_finished) && s_mono_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ASSERT(atomic_load(&s_slow_finished));
    /* the late reply reaches the socket before this call's own: it must be
     * recognised by its id and dropped */
    pk = s_mp_new(&p);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "need", "x");
    bf_mp_kv_int(pk, "i", 99);
    rc = bf_client_call(c, "test.echo", p.sb.data, p.sb.size, NULL, &rep);
    EXPECT_OK(rc, &rep);
    int64_t v = -1;
    if (rc == 0 && rep.ok)
        ASSERT(rep.result && rep.result->type == MSGPACK_OBJECT_MAP &&
               bf_mp_int(bf_mp_get(rep.result, "i"), &v) && v == 99);
    bf_reply_destroy(&rep);
    s_mp_free(&p);
    bf_client_destroy(&c);
    ASSERT(c == NULL);
    bf_client_destroy(&c);
    /* a malformed endpoint: NULL, no crash */
    ASSERT(bf_client_new("not-an-endpoint", 100) == NULL);
}

static void *s_serve_second(void *arg)
{
    bf_rpc_server_run((bf_rpc_server_t *)arg, &s_stop2);
    return NULL;
}

static unsigned long long s_calls_of(const char *ep)
{
    bf_client_t *c = bf_client_new(ep, 5000);
    unsigned long long calls = 0;
    bf_reply_t rep;
    if (c && bf_client_call(c, "sys.stats", NULL, 0, NULL, &rep) == 0 && rep.ok) {
        int64_t v = 0;
        if (bf_mp_int(bf_mp_get(rep.result, "calls"), &v)) calls = (unsigned long long)v;
    }
    if (c) bf_reply_destroy(&rep);
    bf_client_destroy(&c);
    return calls;
}

/* A client given two endpoints spreads its requests over both instances. */
static void test_client_reaches_several_instances(void)
{
    char ep2[64], both[160];
    snprintf(ep2, sizeof ep2, "tcp://127.0.0.1:%d", s_free_port());
    bf_rpc_config_t c2 = s_rpc_config(ep2);
    bf_rpc_server_t *second = bf_rpc_server_new(&c2);
    ASSERT(second != NULL);
    if (!second) return;
    s_stop2 = 0;
    pthread_t th;
    pthread_create(&th, NULL, s_serve_second, second);
    unsigned long long before1 = s_calls_of(s_endpoint), before2 = s_calls_of(ep2);
    snprintf(both, sizeof both, "%s,%s", s_endpoint, ep2);
    bf_client_t *c = bf_client_new(both, 5000);
    ASSERT(c != NULL);
    int ok = 0;
    for (int i = 0; c && i < 40; i++) {
        bf_reply_t rep;
        if (bf_client_call(c, "sys.health", NULL, 0, NULL, &rep) == 0 && rep.ok) ok++;
        bf_reply_destroy(&rep);
    }
    bf_client_destroy(&c);
    ASSERT_EQ(ok, 40);
    /* each saw some (minus the one sys.stats call each before) */
    unsigned long long d1 = s_calls_of(s_endpoint) - before1 - 1;
    unsigned long long d2 = s_calls_of(ep2) - before2 - 1;
    ASSERT_EQ(d1 + d2, 40);
    ASSERT(d1 >= 5 && d2 >= 5);
    /* malformed lists are refused */
    ASSERT(bf_client_new("tcp://127.0.0.1:1,,tcp://127.0.0.1:2", 100) == NULL);
    ASSERT(bf_client_new("", 100) == NULL);
    s_stop2 = 1;
    pthread_join(th, NULL);
    bf_rpc_server_destroy(&second);
}

static void *s_slow_caller(void *arg)
{
    int *ok = arg;
    bf_client_t *c = bf_client_new(s_endpoint, 10000);
    if (!c) return NULL;
    bf_reply_t rep;
    int rc = bf_client_call(c, "test.slow", NULL, 0, NULL, &rep);
    *ok = rc == 0 && rep.ok && bf_mp_str_eq(rep.result, "done");
    bf_reply_destroy(&rep);
    bf_client_destroy(&c);
    return NULL;
}

static void test_stop_drains(void)
{
    if (!s_server_running) {
        BF_FAIL_AT("no server running");
        return;
    }
    atomic_store(&s_slow_started, 0);
    int slow_ok = 0;
    pthread_t th;
    pthread_create(&th, NULL, s_slow_caller, &slow_ok);
    long long deadline = s_mono_ms() + 10000;
    while (!atomic_load(&s_slow_started) && s_mono_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ASSERT(atomic_load(&s_slow_started));
    /* stop while the slow request is in flight */
    long long t0 = s_mono_ms();
    s_stop = 1;
    pthread_join(th, NULL);
    ASSERT(slow_ok); /* the in-flight request finished and its reply went out */
    pthread_join(s_server_thread, NULL);
    s_server_running = 0;
    long long el = s_mono_ms() - t0;
    ASSERT_EQ(s_run_rc, 0);
    ASSERT(el < 5000); /* returned once drained, not at rpc.drain_ms */
    /* no more requests are taken */
    bf_client_t *c = bf_client_new(s_endpoint, 300);
    ASSERT(c != NULL);
    if (c) {
        bf_reply_t rep;
        int rc = bf_client_call(c, "sys.health", NULL, 0, NULL, &rep);
        ASSERT_EQ(rc, -1);
        bf_reply_destroy(&rep);
        bf_client_destroy(&c);
    }
}

/* ------------------------------------------------------------- main */

static int s_setup(void)
{
    unsetenv("BANGFU_CONFIG");
    setenv("BANGFU_RPC_WORKERS", "3", 1);
    setenv("BANGFU_RPC_MAX_STRING_BYTES", "64", 1);
    setenv("BANGFU_RPC_MAX_LIST", "5", 1);
    setenv("BANGFU_RPC_MAX_MSG_BYTES", "65536", 1);
    setenv("BANGFU_RPC_DRAIN_MS", "8000", 1);
    const bf_cfg_def_t *const tables[] = {bf_cfg_common, NULL};
    char err[256];
    s_cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    if (!s_cfg) {
        fprintf(stderr, "  config: %s\n", err);
        return -1;
    }
    s_admin = bf_db_new(s_dsn, NULL);
    if (!s_admin || bf_db_connect(s_admin, 3) != 0) return -1;
    char sql[1024];
    snprintf(sql, sizeof sql,
             "CREATE SCHEMA %s;"
             "CREATE TABLE %s.notes (id serial PRIMARY KEY, body text NOT NULL UNIQUE, "
             "  actor text NOT NULL);"
             "CREATE FUNCTION %s.t_raise(code text) RETURNS void LANGUAGE plpgsql AS "
             "$$BEGIN RAISE EXCEPTION 'raised %%', code USING ERRCODE = code; END$$;",
             s_schema, s_schema, s_schema);
    if (bf_db_cmd(s_admin, sql) != 0) {
        fprintf(stderr, "  %s\n", bf_db_errmsg(s_admin));
        return -1;
    }
    int port = s_free_port();
    snprintf(s_endpoint, sizeof s_endpoint, "tcp://127.0.0.1:%d", port);
    bf_rpc_config_t c = s_rpc_config(s_endpoint);
    s_server = bf_rpc_server_new(&c);
    if (!s_server) return -1;
    if (pthread_create(&s_server_thread, NULL, s_server_main, NULL) != 0) return -1;
    s_server_running = 1;
    s_client = bf_client_new(s_endpoint, 5000);
    return s_client ? 0 : -1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    bf_log_init("test_rpc", BF_ERROR); /* expected internal errors are logged */
    /* the dispatcher's envelope checks, without keys; CURVE is test_keys.c's */
    char serr[256];
    bf_security_init("plaintext", "", "", serr, sizeof serr);
    s_dsn = getenv("BANGFU_PG_DSN");
    s_redis_url = getenv("BANGFU_REDIS_URL");
    if (s_dsn && !*s_dsn) s_dsn = NULL;
    if (s_redis_url && !*s_redis_url) s_redis_url = NULL;
    RUN(environment);
    if (!s_dsn || !s_redis_url) return TEST_REPORT();
    snprintf(s_schema, sizeof s_schema, "t_rpc_%d", (int)getpid());
    s_setup();
    RUN(server_starts);
    if (s_server_running && s_client) {
        RUN(start_failures);
        RUN(echo_and_context);
        RUN(large_reply_stays_valid);
        RUN(envelope_checks);
        RUN(actor_checks);
        RUN(write_needs_actor);
        RUN(param_checks);
        RUN(handler_failures);
        RUN(db_error_mapping);
        RUN(typed_getters);
        RUN(garbage_frames);
        RUN(routing_frames);
        RUN(frame_size_limit);
        RUN(sys_health);
        RUN(sys_methods);
        RUN(sys_stats);
        RUN(concurrent_clients);
        RUN(client_timeout_and_late_reply);
        RUN(client_reaches_several_instances);
        RUN(stop_drains);
    }
    if (s_server_running) {
        s_stop = 1;
        pthread_join(s_server_thread, NULL);
    }
    bf_client_destroy(&s_client);
    bf_rpc_server_destroy(&s_server);
    if (s_admin) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", s_schema);
        bf_db_cmd(s_admin, sql);
    }
    bf_db_destroy(&s_admin);
    bf_cfg_destroy(&s_cfg);
    bf_zmq_ctx_term();
    return TEST_REPORT();
}
