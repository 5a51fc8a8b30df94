/* bangfu-bus: the event feed, one address for every subscriber.
 *
 * XSUB side (bus.xsub): each service's outbox relay connects a PUB socket here.
 * XPUB side (bus.pub): subscribers connect a SUB socket and subscribe to a
 * type prefix ("bangfu.registry." or "" for all). Every message is two frames:
 * the event type (the topic) and the msgpack CloudEvent. Subscriptions flow
 * upstream so publishers filter at the source. The bus stores nothing: the
 * durable, replayable copy of every event is the Redis Stream; see
 * docs/events.md for catching up from the stream and switching to live.
 * Both sides are CURVE servers with their own ZAP domains (docs/security.md).
 */
#include "bf_cfg.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_rpc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

static volatile int s_stop;
static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static const bf_cfg_def_t s_bus_cfg[] = {
    {"bus.xsub_bind", BF_CFG_STR, "", 0, 0,
     "address the bus binds for publishers (empty: bus.xsub)"},
    {"bus.pub_bind", BF_CFG_STR, "", 0, 0,
     "address the bus binds for subscribers (empty: bus.pub)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* Moves one whole multipart message; returns 1 if one moved, 0 if none. */
static int s_forward(void *from, void *to)
{
    int more = 1, moved = 0;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, from, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return moved;
        }
        more = zmq_msg_more(&m);
        if (zmq_msg_send(&m, to, more ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&m);
        moved = 1;
    }
    return moved;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    const bf_cfg_def_t *tables[] = {bf_cfg_common, s_bus_cfg, NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (!strcmp(argv[i], "--help-config")) {
            bf_cfg_print_help(tables);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("bangfu-bus 0.1.0\n");
            return 0;
        } else {
            printf("usage: bangfu-bus [--config FILE] [--help-config] [--version]\n"
                   "Forwards events from relays (bus.xsub) to subscribers (bus.pub).\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    char err[512];
    bf_log_init("bus", BF_INFO);
    bf_cfg_t *cfg = bf_cfg_load(tables, config_path, err, sizeof err);
    if (!cfg) {
        bf_log(BF_ERROR, "config: %s", err);
        return 2;
    }
    bf_log_level_t lvl;
    if (bf_log_level_parse(bf_cfg_str(cfg, "log.level"), &lvl) == 0) bf_log_init("bus", lvl);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (bf_security_init(bf_cfg_str(cfg, "security.mode"), bf_cfg_str(cfg, "keys.dir"), "bus",
                         err, sizeof err) != 0) {
        bf_log(BF_ERROR, "security: %s", err);
        bf_cfg_destroy(&cfg);
        return 2;
    }
    const char *xsub_ep = bf_cfg_str(cfg, "bus.xsub_bind");
    if (!*xsub_ep) xsub_ep = bf_cfg_str(cfg, "bus.xsub");
    const char *pub_ep = bf_cfg_str(cfg, "bus.pub_bind");
    if (!*pub_ep) pub_ep = bf_cfg_str(cfg, "bus.pub");

    int rc = 1;
    void *xsub = zmq_socket(bf_zmq_ctx(), ZMQ_XSUB);
    void *xpub = zmq_socket(bf_zmq_ctx(), ZMQ_XPUB);
    int linger = 0, hwm = 100000;
    if (!xsub || !xpub) goto out;
    zmq_setsockopt(xsub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(xpub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(xsub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(xpub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    /* CURVE servers (docs/security.md): only services (and admin, for
     * `bangfu health bus`) may publish; subscribers need a subscriber,
     * service or admin key */
    if (bf_curve_server(xsub, "bus.xsub", BF_ROLE_SERVICE | BF_ROLE_ADMIN, err, sizeof err) != 0 ||
        bf_curve_server(xpub, "bus.pub", BF_ROLE_SUBSCRIBER | BF_ROLE_SERVICE | BF_ROLE_ADMIN,
                        err, sizeof err) != 0) {
        bf_log(BF_ERROR, "security: %s", err);
        goto out;
    }
    if (zmq_bind(xsub, xsub_ep) != 0) {
        bf_log(BF_ERROR, "cannot bind %s: %s", xsub_ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    if (zmq_bind(xpub, pub_ep) != 0) {
        bf_log(BF_ERROR, "cannot bind %s: %s", pub_ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    bf_log(BF_INFO, "bus up: publishers -> %s, subscribers <- %s", xsub_ep, pub_ep);
    while (!s_stop) {
        zmq_pollitem_t items[2] = {{xsub, 0, ZMQ_POLLIN, 0}, {xpub, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 2, 500);
        if (n < 0) {
            if (zmq_errno() == EINTR) continue;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            for (int i = 0; i < 1000 && s_forward(xsub, xpub); i++) {
            }
        if (items[1].revents & ZMQ_POLLIN) /* subscriptions travel upstream */
            for (int i = 0; i < 1000 && s_forward(xpub, xsub); i++) {
            }
    }
    rc = 0;
out:
    if (xsub) zmq_close(xsub);
    if (xpub) zmq_close(xpub);
    bf_zmq_ctx_term();
    bf_log(BF_INFO, "bus stopped");
    bf_cfg_destroy(&cfg);
    return rc;
}
