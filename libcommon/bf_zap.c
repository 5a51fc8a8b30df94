/* bf_zap: ZAP handler thread mapping CURVE keys to principals; see
 * bf_zap.h. */
#include "bf_zap.h"
#include "bf_log.h"
#include "bf_principals.h"
#include "bf_rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAX_DOMAINS 16
#define ZAP_FRAMES 7 /* version, request id, domain, address, identity, mechanism, key */

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char name[64];
    unsigned roles;
} s_domains[MAX_DOMAINS];
static int s_ndomains;
static void *s_sock;
static pthread_t s_thread;
static bool s_running;
static atomic_int s_stop;
static atomic_long s_refused;

/* refusal log rate limit: 5 lines a second, the rest counted */
static time_t s_log_sec;
static int s_log_count;
static long s_log_suppressed;

long bf_zap_refused(void) { return atomic_load(&s_refused); }

void bf_zap_domain(const char *domain, unsigned roles)
{
    pthread_mutex_lock(&s_lock);
    int i;
    for (i = 0; i < s_ndomains; i++)
        if (!strcmp(s_domains[i].name, domain)) break;
    if (i == s_ndomains && s_ndomains < MAX_DOMAINS) s_ndomains++;
    if (i < MAX_DOMAINS) {
        snprintf(s_domains[i].name, sizeof s_domains[i].name, "%s", domain);
        s_domains[i].roles = roles;
    }
    pthread_mutex_unlock(&s_lock);
}

static bool s_domain_roles(const char *domain, unsigned *roles)
{
    bool found = false;
    pthread_mutex_lock(&s_lock);
    for (int i = 0; i < s_ndomains; i++) {
        if (!strcmp(s_domains[i].name, domain)) {
            *roles = s_domains[i].roles;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s_lock);
    return found;
}

static void s_log_refusal(const char *domain, const char *address, const char *key,
                          const char *why)
{
    atomic_fetch_add(&s_refused, 1);
    time_t now = time(NULL);
    if (now != s_log_sec) {
        if (s_log_suppressed)
            bf_log(BF_WARN, "zap: %ld more refusals not logged", s_log_suppressed);
        s_log_sec = now;
        s_log_count = 0;
        s_log_suppressed = 0;
    }
    if (s_log_count++ >= 5) {
        s_log_suppressed++;
        return;
    }
    bf_log(BF_WARN, "zap: refused %s key %.8s... from %s on %s: %s", "CURVE", key, address, domain,
           why);
}

static void s_str(zmq_msg_t *m, char *out, size_t n)
{
    size_t len = zmq_msg_size(m);
    if (len >= n) len = n - 1;
    memcpy(out, zmq_msg_data(m), len);
    out[len] = 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e) out[i] = '?';
}

static void s_reply(const char *version, zmq_msg_t *rid, const char *code, const char *text,
                    const char *user)
{
    zmq_send(s_sock, version, strlen(version), ZMQ_SNDMORE);
    zmq_send(s_sock, zmq_msg_data(rid), zmq_msg_size(rid), ZMQ_SNDMORE);
    zmq_send(s_sock, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(s_sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(s_sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(s_sock, "", 0, 0);
}

/* Reads one request (all its frames) and answers it. */
static void s_handle(void)
{
    zmq_msg_t f[ZAP_FRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s_sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < ZAP_FRAMES) f[n++] = m;
        else zmq_msg_close(&m);
    }
    if (n < 6) {
        /* malformed: a REP socket must still answer */
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
        zmq_send(s_sock, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(s_sock, "", 0, ZMQ_SNDMORE);
        zmq_send(s_sock, "500", 3, ZMQ_SNDMORE);
        zmq_send(s_sock, "malformed request", 17, ZMQ_SNDMORE);
        zmq_send(s_sock, "", 0, ZMQ_SNDMORE);
        zmq_send(s_sock, "", 0, 0);
        return;
    }
    char version[8], domain[64], address[64], mech[16], key[BF_KEY_Z85] = "-";
    s_str(&f[0], version, sizeof version);
    s_str(&f[2], domain, sizeof domain);
    s_str(&f[3], address, sizeof address);
    s_str(&f[5], mech, sizeof mech);
    unsigned admits = 0;
    bf_principal_t p;
    if (strcmp(version, "1.0") != 0) {
        s_reply("1.0", &f[1], "500", "unsupported ZAP version", "");
    } else if (strcmp(mech, "CURVE") != 0 || n != 7 || zmq_msg_size(&f[6]) != 32) {
        s_log_refusal(domain, address, "-", "not a CURVE handshake");
        s_reply(version, &f[1], "400", "CURVE only", "");
    } else {
        zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
        if (!s_domain_roles(domain, &admits)) {
            s_log_refusal(domain, address, key, "unknown ZAP domain");
            s_reply(version, &f[1], "400", "unknown domain", "");
        } else if (bf_principals_by_key(key, &p) != 0) {
            s_log_refusal(domain, address, key, "unknown key");
            s_reply(version, &f[1], "400", "unknown key", "");
        } else if (!(p.roles & admits)) {
            char why[200];
            snprintf(why, sizeof why, "principal %s lacks the role", p.name);
            s_log_refusal(domain, address, key, why);
            s_reply(version, &f[1], "400", "not allowed here", "");
        } else {
            s_reply(version, &f[1], "200", "OK", p.name);
        }
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

static void *s_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&s_stop)) {
        zmq_pollitem_t it = {s_sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc < 0) {
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (it.revents & ZMQ_POLLIN) s_handle();
    }
    return NULL;
}

int bf_zap_start(char *err, size_t errlen)
{
    pthread_mutex_lock(&s_lock);
    int rc = 0;
    if (s_running) goto out;
    s_sock = zmq_socket(bf_zmq_ctx(), ZMQ_REP);
    int linger = 0;
    if (!s_sock || zmq_setsockopt(s_sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(s_sock, "inproc://zeromq.zap.01") != 0) {
        snprintf(err, errlen, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
        if (s_sock) zmq_close(s_sock);
        s_sock = NULL;
        rc = -1;
        goto out;
    }
    atomic_store(&s_stop, 0);
    if (pthread_create(&s_thread, NULL, s_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the ZAP thread");
        zmq_close(s_sock);
        s_sock = NULL;
        rc = -1;
        goto out;
    }
    s_running = true;
out:
    pthread_mutex_unlock(&s_lock);
    return rc;
}

void bf_zap_stop(void)
{
    pthread_mutex_lock(&s_lock);
    bool running = s_running;
    s_running = false;
    pthread_mutex_unlock(&s_lock);
    if (!running) return;
    atomic_store(&s_stop, 1);
    pthread_join(s_thread, NULL);
    zmq_close(s_sock);
    s_sock = NULL;
    pthread_mutex_lock(&s_lock);
    s_ndomains = 0;
    pthread_mutex_unlock(&s_lock);
}
