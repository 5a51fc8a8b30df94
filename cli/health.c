/* health.c: `bangfu health [service ...]`, is each part of the stack alive?
 *
 * For registry, funds, tasks and notify it calls sys.health at
 * BANGFU_<SERVICE>_RPC and prints the answer. For the bus, which has no RPC,
 * it proves that the bus forwards: a SUB socket subscribes to a unique topic
 * at bus.pub and an XPUB socket connected to bus.xsub (where the relays
 * publish) must see that subscription arrive through the bus. Nothing is
 * published, so subscribers never see the probe. bus.pub and bus.xsub come
 * from the config (BANGFU_BUS_PUB, BANGFU_BUS_XSUB, or $BANGFU_CONFIG).
 *
 * All services are asked at once, each in its own thread, so the command
 * takes as long as the slowest answer (at most the timeout), not their sum.
 * It prints a table: service, state (up, down, degraded, error), latency,
 * and the service's answer or what went wrong.
 *
 * Exit status: 0 when every named service answered (with --strict: and
 * reported status "ok", i.e. its PostgreSQL and Redis are up), 1 when one
 * answered but is degraded under --strict, 2 for bad usage, 3 when one did not
 * answer. Containers use it as their health check (docker/docker-compose.yml).
 */
#include "cli.h"
#include "bf_cfg.h"
#include "bf_json.h"
#include "bf_keys.h"
#include "bf_mp.h"
#include "bf_rpc.h"

#include "table.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char *const s_all[] = {"bus", "registry", "funds", "tasks", "notify", NULL};

static long long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 0 when the bus carried our subscription from bus.pub to bus.xsub in time. */
static int s_bus_probe(long timeout_ms, char *msg, size_t msglen)
{
    const bf_cfg_def_t *tables[] = {bf_cfg_common, NULL};
    char err[256];
    bf_cfg_t *cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    if (!cfg) {
        snprintf(msg, msglen, "config: %s", err);
        return -1;
    }
    const char *pub_ep = bf_cfg_str(cfg, "bus.pub");
    const char *xsub_ep = bf_cfg_str(cfg, "bus.xsub");
    char topic[96];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(topic, sizeof topic, "bangfu-health-probe.%ld.%ld.%ld", (long)getpid(),
             (long)ts.tv_sec, (long)ts.tv_nsec);
    size_t tlen = strlen(topic);

    int rc = -1, linger = 0;
    void *sub = zmq_socket(bf_zmq_ctx(), ZMQ_SUB);
    void *xpub = zmq_socket(bf_zmq_ctx(), ZMQ_XPUB);
    if (!sub || !xpub) {
        snprintf(msg, msglen, "zmq: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(xpub, ZMQ_LINGER, &linger, sizeof linger);
    if (bf_curve_client(sub, "bus", msg, msglen) != 0 ||
        bf_curve_client(xpub, "bus", msg, msglen) != 0)
        goto out;
    if (zmq_connect(xpub, xsub_ep) != 0) {
        snprintf(msg, msglen, "bad bus.xsub address %s: %s", xsub_ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    if (zmq_connect(sub, pub_ep) != 0) {
        snprintf(msg, msglen, "bad bus.pub address %s: %s", pub_ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, topic, tlen);
    long long deadline = s_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - s_now_ms();
        if (left <= 0) break;
        zmq_pollitem_t it = {xpub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left > 100 ? 100 : (long)left) < 0) continue;
        if (!(it.revents & ZMQ_POLLIN)) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, xpub, ZMQ_DONTWAIT) >= 0) {
            const char *d = zmq_msg_data(&m);
            size_t n = zmq_msg_size(&m);
            if (n == tlen + 1 && d[0] == 1 && memcmp(d + 1, topic, tlen) == 0) rc = 0;
        }
        zmq_msg_close(&m);
        if (rc == 0) break;
    }
    if (rc == 0)
        snprintf(msg, msglen, "{\"status\":\"ok\",\"service\":\"bus\",\"pub\":\"%s\",\"xsub\":\"%s\"}",
                 pub_ep, xsub_ep);
    else
        snprintf(msg, msglen, "no forwarding seen within %ld ms (bus.pub %s, bus.xsub %s)",
                 timeout_ms, pub_ep, xsub_ep);
out:
    if (sub) zmq_close(sub);
    if (xpub) zmq_close(xpub);
    bf_cfg_destroy(&cfg);
    return rc;
}

/* One service's check, run in its own thread so that all are asked at once:
 * the whole command takes as long as the slowest answer (or the timeout),
 * not their sum. */
typedef struct {
    const char *service;
    long timeout_ms;
    bool strict;
    int code;          /* exit code it stands for */
    const char *state; /* up, down, degraded, error */
    long long ms;      /* latency */
    char detail[1024];
} s_check_t;

static void *s_check(void *arg)
{
    s_check_t *k = arg;
    long long t0 = s_now_ms();
    char msg[1024];
    if (!strcmp(k->service, "bus")) {
        bool up = s_bus_probe(k->timeout_ms, msg, sizeof msg) == 0;
        k->ms = s_now_ms() - t0;
        k->state = up ? "up" : "down";
        k->code = up ? CLI_OK : CLI_UNAVAILABLE;
        snprintf(k->detail, sizeof k->detail, "%s", msg);
        return NULL;
    }
    const char *ep = cli_endpoint(k->service);
    bf_client_t *c = bf_client_open(k->service, ep, (int)k->timeout_ms);
    if (!c) {
        k->state = "error";
        k->code = CLI_USAGE;
        snprintf(k->detail, sizeof k->detail, "bad endpoint %s or no key", ep);
        return NULL;
    }
    bf_reply_t reply;
    if (bf_client_call(c, "sys.health", NULL, 0, NULL, &reply) != 0 && !reply.error) {
        k->state = "down";
        k->code = CLI_UNAVAILABLE;
        snprintf(k->detail, sizeof k->detail, "no answer at %s: %s", ep, reply.message);
    } else if (!reply.ok) {
        k->state = "error";
        k->code = CLI_ERR_REPLY;
        snprintf(k->detail, sizeof k->detail, "%s: %s", reply.code, reply.message);
    } else {
        const msgpack_object *st = reply.result ? bf_mp_get(reply.result, "status") : NULL;
        bool ok = st && bf_mp_str_eq(st, "ok");
        char *json = reply.result ? bf_json_from_msgpack(reply.result, BF_JSON_COMPACT) : NULL;
        k->state = ok ? "up" : "degraded";
        snprintf(k->detail, sizeof k->detail, "%s", json ? json : "null");
        free(json);
        k->code = ok || !k->strict ? CLI_OK : CLI_ERR_REPLY;
    }
    k->ms = s_now_ms() - t0;
    bf_reply_destroy(&reply);
    bf_client_destroy(&c);
    return NULL;
}

int cli_health(int argc, char **argv)
{
    long timeout = 3000;
    bool strict = false;
    const char *names[16];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bangfu health [service ...] [--strict] [--timeout MS]\n"
                   "Asks each service (default: bus registry funds tasks notify) whether it is\n"
                   "alive: sys.health over RPC for the four services, a subscription sent\n"
                   "through the bus for the bus. One line per service.\n"
                   "Exit status: 0 all answered (--strict: and their PostgreSQL and Redis are\n"
                   "up), 1 an error or, with --strict, a degraded service, 2 usage, 3 one did\n"
                   "not answer within the timeout (default 3000 ms).\n");
            return CLI_OK;
        } else if (!strcmp(argv[i], "--strict")) {
            strict = true;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = strtol(argv[++i], NULL, 10);
            if (timeout <= 0) {
                fprintf(stderr, "bangfu health: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
        } else if (argv[i][0] == '-' || n == (int)(sizeof names / sizeof names[0])) {
            fprintf(stderr, "bangfu health: unexpected %s (try --help)\n", argv[i]);
            return CLI_USAGE;
        } else {
            names[n++] = argv[i];
        }
    }
    if (n == 0)
        for (; s_all[n]; n++) names[n] = s_all[n];
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], "bus") != 0 && !cli_endpoint(names[i])) {
            fprintf(stderr,
                    "bangfu health: unknown service %s (bus, registry, funds, tasks, notify)\n",
                    names[i]);
            return CLI_USAGE;
        }
    }
    s_check_t checks[16];
    pthread_t threads[16];
    bool started[16] = {false};
    for (int i = 0; i < n; i++) {
        checks[i] = (s_check_t){.service = names[i], .timeout_ms = timeout, .strict = strict};
        started[i] = pthread_create(&threads[i], NULL, s_check, &checks[i]) == 0;
        if (!started[i]) s_check(&checks[i]); /* no thread: ask it here */
    }
    for (int i = 0; i < n; i++)
        if (started[i]) pthread_join(threads[i], NULL);
    int worst = CLI_OK;
    table_t *t = table_new(4, (const char *[]){"SERVICE", "STATE", "LATENCY", "DETAIL"});
    if (t) table_align_right(t, 2);
    for (int i = 0; i < n; i++) {
        char ms[32];
        if (checks[i].code == CLI_UNAVAILABLE)
            snprintf(ms, sizeof ms, ">%ld ms", timeout);
        else
            snprintf(ms, sizeof ms, "%lld ms", checks[i].ms);
        if (!t || table_add(t, (const char *[]){checks[i].service, checks[i].state, ms,
                                                checks[i].detail}) != 0)
            printf("%-9s %-9s %9s  %s\n", checks[i].service, checks[i].state, ms,
                   checks[i].detail);
        if (checks[i].code > worst) worst = checks[i].code;
    }
    table_print(t, stdout);
    table_destroy(&t);
    return worst;
}
