/* bench_rpc: the cost of the bangfu RPC stack against raw ZeroMQ.
 *
 * Baseline: a REQ client and a REP echo thread over tcp loopback, one
 * round trip at a time. Then the same client pattern through bf_client to a
 * bf_rpc server (ROUTER, inproc hop to a worker, envelope check, method table,
 * reply packing) calling a trivial method. Both in this process, same machine
 * state; the ratio is what the stack costs. Also the bounds check that runs
 * before every decode (bf_mp_check) against msgpack-c's unpack alone.
 * Run pinned for stable figures: taskset -c 0 build/bench/bench_rpc
 */
#include "bf_cfg.h"
#include "bf_client.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_rpc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static volatile int s_stop;

static void *s_echo(void *arg)
{
    void *rep = zmq_socket(bf_zmq_ctx(), ZMQ_REP);
    zmq_bind(rep, (const char *)arg);
    int timeout = 200;
    zmq_setsockopt(rep, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    char buf[4096];
    while (!s_stop) {
        int n = zmq_recv(rep, buf, sizeof buf, 0);
        if (n < 0) continue;
        zmq_send(rep, buf, (size_t)(n > (int)sizeof buf ? (int)sizeof buf : n), 0);
    }
    zmq_close(rep);
    return NULL;
}

static int m_echo(bf_req_t *r)
{
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_bool(r->out, "pong", true);
    return 0;
}

static bf_rpc_server_t *s_server;
static volatile int s_serve_stop;
static void *s_serve(void *arg)
{
    (void)arg;
    bf_rpc_server_run(s_server, &s_serve_stop);
    return NULL;
}

static const bf_method_t s_methods[] = {
    {"bench.echo", m_echo, false, NULL, "echo", BF_ROLE_ALL},
    {NULL, NULL, false, NULL, NULL, 0},
};

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    bf_log_init("bench", BF_ERROR); /* no database needed here */
    /* the dispatcher against raw baselines, without CURVE (no keys here; the
     * handshake is once per connection, the per-message cost is encryption) */
    char serr[256];
    bf_security_init("plaintext", "", "", serr, sizeof serr);
    /* baseline: raw REQ/REP */
    const char *raw_ep = "tcp://127.0.0.1:47811";
    pthread_t th;
    pthread_create(&th, NULL, s_echo, (void *)raw_ep);
    void *req = zmq_socket(bf_zmq_ctx(), ZMQ_REQ);
    zmq_connect(req, raw_ep);
    const char msg[] = "\x84\xa1v\x01\xa2id\xa1x\xa6method\xaa" "bench.echo\xa6params\x80";
    char buf[256];
    for (int i = 0; i < 1000; i++) { /* warm up */
        zmq_send(req, msg, sizeof msg - 1, 0);
        zmq_recv(req, buf, sizeof buf, 0);
    }
    double t0 = s_now();
    for (int i = 0; i < n; i++) {
        zmq_send(req, msg, sizeof msg - 1, 0);
        zmq_recv(req, buf, sizeof buf, 0);
    }
    double raw = (s_now() - t0) / n * 1e6;
    zmq_close(req);
    s_stop = 1;
    pthread_join(th, NULL);

    /* bangfu: bf_client -> bf_rpc server */
    setenv("BANGFU_RPC_WORKERS", "1", 1);
    const bf_cfg_def_t *tables[] = {bf_cfg_common, NULL};
    char err[256];
    bf_cfg_t *cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    bf_rpc_config_t rc = {.service = "bench", .version = "0", .bind = "tcp://127.0.0.1:47812",
                          .methods = s_methods, .cfg = cfg, .schema = NULL};
    bf_rpc_server_t *srv = bf_rpc_server_new(&rc);
    if (!srv) return 1;
    s_server = srv;
    pthread_t st;
    pthread_create(&st, NULL, s_serve, NULL);
    bf_client_t *c = bf_client_new("tcp://127.0.0.1:47812", 5000);
    bf_reply_t reply;
    for (int i = 0; i < 1000; i++) {
        bf_client_call(c, "bench.echo", NULL, 0, NULL, &reply);
        bf_reply_destroy(&reply);
    }
    t0 = s_now();
    int failures = 0;
    for (int i = 0; i < n; i++) {
        if (bf_client_call(c, "bench.echo", NULL, 0, NULL, &reply) != 0 || !reply.ok) failures++;
        bf_reply_destroy(&reply);
    }
    double ours = (s_now() - t0) / n * 1e6;
    bf_client_destroy(&c);
    s_serve_stop = 1;
    pthread_join(st, NULL);
    bf_rpc_server_destroy(&srv);

    /* bounds check + unpack vs unpack alone, on a typical household.create */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    bf_mp_kv_int(&pk, "village_id", 42);
    bf_mp_key(&pk, "categories");
    msgpack_pack_array(&pk, 2);
    bf_mp_str(&pk, "dibao");
    bf_mp_str(&pk, "left_behind_elderly");
    bf_mp_kv_str(&pk, "route", "employment");
    bf_mp_kv_int(&pk, "income_fen", 1234500);
    bf_mp_key(&pk, "members");
    msgpack_pack_array(&pk, 4);
    for (int k = 0; k < 4; k++) {
        msgpack_pack_map(&pk, 3);
        bf_mp_kv_str(&pk, "name", "张三丰");
        bf_mp_kv_str(&pk, "id_number", "11010519491231002X");
        bf_mp_kv_str(&pk, "relation", k ? "child" : "head");
    }
    int m = n * 10;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    t0 = s_now();
    for (int i = 0; i < m; i++) {
        size_t off = 0;
        msgpack_unpack_next(&u, sb.data, sb.size, &off);
    }
    double unpack = (s_now() - t0) / m * 1e9;
    t0 = s_now();
    for (int i = 0; i < m; i++) {
        size_t off = 0;
        if (bf_mp_check(sb.data, sb.size, BF_MP_MAX_DEPTH) == 0)
            msgpack_unpack_next(&u, sb.data, sb.size, &off);
    }
    double checked = (s_now() - t0) / m * 1e9;
    size_t req_size = sb.size;
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);

    printf("rpc round trip: raw REQ/REP %.1f us, bangfu RPC %.1f us, ratio %.2fx (%d calls, %d failed)\n",
           raw, ours, ours / raw, n, failures);
    printf("decode %zu-byte request: unpack %.0f ns, bounds check + unpack %.0f ns, ratio %.2fx\n",
           req_size, unpack, checked, checked / unpack);
    bf_cfg_destroy(&cfg);
    bf_zmq_ctx_term();
    return failures ? 1 : 0;
}
