/* probe: fail fast when no service answers; see probe.h. */
#include "probe.h"
#include "cli.h"

#include "bf_keys.h"
#include "bf_rpc.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static long s_timeout = 0; /* 0: not set by option */

long cli_parse_connect_timeout(const char *s)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v <= 0 || v > 600000) return -1;
    return v;
}

void cli_set_connect_timeout(long ms)
{
    if (ms > 0) s_timeout = ms;
}

long cli_connect_timeout(void)
{
    if (s_timeout > 0) return s_timeout;
    long v = cli_parse_connect_timeout(getenv("BANGFU_CONNECT_TIMEOUT_MS"));
    return v > 0 ? v : CLI_CONNECT_TIMEOUT_DEFAULT_MS;
}

static long long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* reads one monitor event (two frames); returns the event id or -1 */
static int s_event(void *mon)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    int ev = -1;
    if (zmq_msg_size(&m) >= 2) {
        uint16_t e;
        memcpy(&e, zmq_msg_data(&m), sizeof e);
        ev = e;
    }
    while (zmq_msg_more(&m)) { /* the endpoint frame */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) break;
    }
    zmq_msg_close(&m);
    return ev;
}

/* Connects sock (keyed by the caller) to endpoint, or to each of a
 * comma-separated list, with a monitor attached first, and waits up to
 * timeout_ms for a handshake with any of them. 0 on a handshake; -1 with why
 * saying what was seen; -2 if an endpoint is malformed (why says which). The
 * monitor is gone on return; sock stays connected and is the caller's. */
static int s_handshake(void *sock, const char *endpoint, long timeout_ms, char *why,
                       size_t whylen)
{
    static atomic_int seq;
    int rc = -1, linger = 0;
    void *mon = NULL;
    char mon_ep[96];
    snprintf(why, whylen, "no handshake");
    snprintf(mon_ep, sizeof mon_ep, "inproc://bangfu-probe-%ld-%d", (long)getpid(),
             atomic_fetch_add(&seq, 1));
    if (zmq_socket_monitor(sock, mon_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED) != 0) {
        snprintf(why, whylen, "zmq monitor: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    mon = zmq_socket(bf_zmq_ctx(), ZMQ_PAIR);
    if (!mon || zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(mon, mon_ep) != 0) {
        snprintf(why, whylen, "zmq monitor: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    /* every endpoint of a list; any one that completes a handshake will do */
    for (const char *p = endpoint; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[512];
        if (len == 0 || len >= sizeof one) {
            snprintf(why, whylen, "malformed endpoint list");
            rc = -2;
            goto out;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (zmq_connect(sock, one) != 0) {
            snprintf(why, whylen, "bad endpoint %s: %s", one, zmq_strerror(zmq_errno()));
            rc = -2;
            goto out;
        }
        p += len + (comma ? 1 : 0);
    }
    long long deadline = s_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - s_now_ms();
        if (left <= 0) break;
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)left) <= 0) continue;
        int ev;
        while ((ev = s_event(mon)) >= 0) {
            if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                rc = 0;
                goto out;
            } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
                snprintf(why, whylen, "the service refused our key (principal %s)",
                         getenv("BANGFU_PRINCIPAL") ? getenv("BANGFU_PRINCIPAL") : "admin");
            } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                       ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
                snprintf(why, whylen, "the handshake failed (not a bangfu service there, or "
                                      "its security mode differs)");
            } else if (ev == ZMQ_EVENT_CONNECT_RETRIED && !strcmp(why, "no handshake")) {
                snprintf(why, whylen, "connection refused");
            }
        }
    }
out:
    zmq_socket_monitor(sock, NULL, 0);
    if (mon) zmq_close(mon);
    return rc;
}

int cli_probe(const char *service, const char *endpoint, long timeout_ms, char *why,
              size_t whylen)
{
    char err[512];
    int linger = 0;
    void *sock = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    if (!sock) {
        snprintf(why, whylen, "zmq: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    int rc = -1;
    if (bf_curve_client(sock, service, err, sizeof err) != 0)
        snprintf(why, whylen, "%s", err);
    else
        rc = s_handshake(sock, endpoint, timeout_ms, why, whylen) == 0 ? 0 : -1;
    zmq_close(sock);
    return rc;
}

/* Says on stderr (as prog) that service did not answer at endpoint within ms
 * and why, where the address came from (var, or the built-in default), and
 * how to load the local stack's endpoints. Returns CLI_UNAVAILABLE. */
static int s_hint(const char *prog, const char *service, const char *endpoint, const char *var,
                  long ms, const char *why)
{
    const char *set = getenv(var);
    fprintf(stderr, "%s: %s did not answer at %s within %ld ms (%s)\n", prog, service, endpoint,
            ms, why);
    if (set && *set)
        fprintf(stderr, "hint: the address comes from %s.\n", var);
    else
        fprintf(stderr, "hint: %s is the built-in default: %s is not set.\n", endpoint, var);
    fprintf(stderr,
            "hint: while the local stack runs (`make up` or `make run`), load its endpoints and\n"
            "      keys: set -a; source var/endpoints.env; set +a\n"
            "      (var/endpoints.env is written by scripts/stack.sh%s). Otherwise start the\n"
            "      service or set %s; --connect-timeout MS or BANGFU_CONNECT_TIMEOUT_MS waits "
            "longer.\n",
            access("var/endpoints.env", R_OK) == 0 ? "; there is one here" : "", var);
    return CLI_UNAVAILABLE;
}

int cli_connect(const char *prog, void *sock, const char *service, const char *endpoint,
                const char *var)
{
    long ms = cli_connect_timeout();
    char why[256];
    int rc = s_handshake(sock, endpoint, ms, why, sizeof why);
    if (rc == 0) return 0;
    if (rc == -2) {
        fprintf(stderr, "%s: %s (%s)\n", prog, why, var);
        return CLI_USAGE;
    }
    return s_hint(prog, service, endpoint, var, ms, why);
}

int cli_require(const char *prog, const char *service, const char *endpoint, long cap_ms)
{
    long ms = cli_connect_timeout();
    if (cap_ms > 0 && cap_ms < ms) ms = cap_ms;
    char why[256];
    if (cli_probe(service, endpoint, ms, why, sizeof why) == 0) return 0;
    char var[64];
    snprintf(var, sizeof var, "BANGFU_%s_RPC", service);
    for (char *p = var; *p; p++) *p = (char)toupper((unsigned char)*p);
    return s_hint(prog, service, endpoint, var, ms, why);
}
