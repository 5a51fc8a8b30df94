/* test_keys: key files (bf_keys), the principals file (bf_principals) and the
 * ZAP handler (bf_zap) with real CURVE sockets over loopback TCP: a known key
 * is admitted and named by User-Id, an unknown key and a key without the
 * domain's role get nothing, a principal added to the file is admitted
 * without a restart. No database needed. */
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_principals.h"
#include "bf_rpc.h"
#include "bf_test.h"
#include "bf_zap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static char s_dir[256];

static void s_write(const char *name, const char *text)
{
    char path[512], tmp[520];
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

static void test_generate_and_read(void)
{
    char pub[BF_KEY_Z85], pub2[BF_KEY_Z85], sec[BF_KEY_Z85], err[256];
    bool created = false;
    ASSERT_EQ(bf_keys_generate(s_dir, "alice", pub, &created, err, sizeof err), 0);
    ASSERT(created);
    ASSERT_EQ(strlen(pub), 40);
    ASSERT_EQ(bf_keys_generate(s_dir, "alice", pub2, &created, err, sizeof err), 0);
    ASSERT(!created);
    ASSERT_STR_EQ(pub, pub2);
    ASSERT_EQ(bf_keys_read(s_dir, "alice", pub2, sec, err, sizeof err), 0);
    ASSERT_STR_EQ(pub, pub2);
    ASSERT_EQ(strlen(sec), 40);
    ASSERT_EQ(bf_keys_read(s_dir, "alice", pub2, NULL, err, sizeof err), 0);
    ASSERT_STR_EQ(pub, pub2);
    char path[512];
    snprintf(path, sizeof path, "%s/alice.key", s_dir);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    ASSERT_EQ(bf_keys_read(s_dir, "nobody", pub2, sec, err, sizeof err), -1);
    ASSERT(strstr(err, "nobody.key") != NULL);
    ASSERT_EQ(bf_keys_generate(s_dir, "../evil", pub, &created, err, sizeof err), -1);
    ASSERT_EQ(bf_keys_generate(s_dir, "Bad", pub, &created, err, sizeof err), -1);
}

static void test_names(void)
{
    const char *good[] = {"admin", "cadre:42", "finance.zhang", "system:scheduler", "gw2"};
    const char *bad[] = {"", "Admin", "9x", ".x", "a/b", "a b", "x:", "管理员"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) ASSERT(bf_keys_name_ok(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (bf_keys_name_ok(bad[i])) BF_FAIL_AT("name %s accepted", bad[i]);
}

static char s_alice[BF_KEY_Z85], s_bob[BF_KEY_Z85], s_svc[BF_KEY_Z85], s_carol[BF_KEY_Z85];

static void s_principals_file(bool with_carol)
{
    char text[4096];
    snprintf(text, sizeof text,
             "; test principals\n"
             "[alice]\nkey = %s\nroles = admin\n\n"
             "[bob]\nkey = %s\nroles = subscriber, auditor\nregion = 120110000000\n"
             "cadre_id = 7\nact_for = yes\n\n"
             "[svc]\nkey = %s\nroles = service\n\n"
             "[dup]\nkey = %s\nroles = admin\n\n"
             "[badrole]\nkey = 0000000000000000000000000000000000000000\nroles = root\n\n"
             "[badregion]\nkey = 1111111111111111111111111111111111111111\nroles = admin\n"
             "region = 12\n\n"
             "[nokey]\nroles = admin\n\n"
             "[Bad Name]\nkey = 2222222222222222222222222222222222222222\nroles = admin\n\n"
             "[shortkey]\nkey = abc\nroles = admin\n\n"
             "%s%s%s",
             s_alice, s_bob, s_svc, s_alice, with_carol ? "[carol]\nkey = " : "",
             with_carol ? s_carol : "", with_carol ? "\nroles = auditor\n" : "");
    s_write("principals.conf", text);
}

static void test_principals_parse(void)
{
    char err[256];
    bool c;
    ASSERT_EQ(bf_keys_generate(s_dir, "alice", s_alice, &c, err, sizeof err), 0);
    ASSERT_EQ(bf_keys_generate(s_dir, "bob", s_bob, &c, err, sizeof err), 0);
    ASSERT_EQ(bf_keys_generate(s_dir, "svc", s_svc, &c, err, sizeof err), 0);
    ASSERT_EQ(bf_keys_generate(s_dir, "carol", s_carol, &c, err, sizeof err), 0);
    s_principals_file(false);
    char path[512];
    snprintf(path, sizeof path, "%s/principals.conf", s_dir);
    bf_principal_t *v = NULL;
    int n = bf_principals_parse(path, &v);
    ASSERT_EQ(n, 3); /* alice, bob, svc; the rest are skipped */
    if (n == 3) {
        ASSERT_STR_EQ(v[0].name, "alice");
        ASSERT_EQ(v[0].roles, BF_ROLE_ADMIN);
        ASSERT_STR_EQ(v[1].name, "bob");
        ASSERT_EQ(v[1].roles, BF_ROLE_SUBSCRIBER | BF_ROLE_AUDITOR);
        ASSERT_STR_EQ(v[1].region, "120110000000");
        ASSERT_EQ(v[1].cadre_id, 7);
        ASSERT(v[1].act_for);
        ASSERT(!v[0].act_for);
        ASSERT_STR_EQ(v[2].key, s_svc);
    }
    free(v);
    ASSERT_EQ(bf_principals_parse("/nonexistent/principals.conf", &v), -1);
}

static void test_principals_lookup_and_reload(void)
{
    bf_principal_t p;
    ASSERT_EQ(bf_principals_by_key(s_bob, &p), 0);
    ASSERT_STR_EQ(p.name, "bob");
    ASSERT_EQ(bf_principals_by_name("svc", &p), 0);
    ASSERT_STR_EQ(p.key, s_svc);
    ASSERT_EQ(bf_principals_by_key(s_carol, &p), -1);
    s_principals_file(true);
    /* an unknown key re-reads at once: no wait, no restart */
    ASSERT_EQ(bf_principals_by_key(s_carol, &p), 0);
    ASSERT_STR_EQ(p.name, "carol");
}

static char s_endpoint[128];

/* A CURVE ROUTER on a loopback port; returns the socket. */
static void *s_server(const char *domain, unsigned roles)
{
    void *s = zmq_socket(bf_zmq_ctx(), ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    char err[256];
    if (bf_curve_server(s, domain, roles, err, sizeof err) != 0) {
        BF_FAIL_AT("bf_curve_server: %s", err);
        zmq_close(s);
        return NULL;
    }
    zmq_bind(s, "tcp://127.0.0.1:*");
    size_t n = sizeof s_endpoint;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, s_endpoint, &n);
    return s;
}

/* Sends "hi" as identity to the server; returns 1 if it arrived (and copies
 * its User-Id), 0 if nothing arrived within wait_ms. */
static int s_try(void *server, const char *identity, int wait_ms, char *user, size_t un)
{
    void *c = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &linger, sizeof linger);
    char err[256];
    if (identity) {
        if (bf_curve_client_as(c, "svc", identity, err, sizeof err) != 0)
            BF_FAIL_AT("client keys: %s", err);
    } else {
        /* a stranger: a fresh pair no principal has */
        char pub[41], sec[41], spub[41];
        zmq_curve_keypair(pub, sec);
        bf_keys_read(s_dir, "svc", spub, NULL, err, sizeof err);
        zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, spub, 40);
        zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, pub, 40);
        zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, sec, 40);
    }
    zmq_connect(c, s_endpoint);
    zmq_send(c, "hi", 2, ZMQ_DONTWAIT);
    int got = 0;
    zmq_pollitem_t it = {server, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, wait_ms) > 0) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        zmq_msg_recv(&id, server, 0);
        zmq_msg_recv(&body, server, 0);
        const char *u = zmq_msg_gets(&body, "User-Id");
        snprintf(user, un, "%s", u ? u : "");
        got = 1;
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
    zmq_close(c);
    return got;
}

static void test_zap_curve_end_to_end(void)
{
    char err[256];
    ASSERT_EQ(bf_security_init("curve", s_dir, "svc", err, sizeof err), 0);
    void *rpc = s_server("rpc", BF_ROLE_ALL);
    if (!rpc) return;
    char user[160];
    ASSERT_EQ(s_try(rpc, "alice", 3000, user, sizeof user), 1);
    ASSERT_STR_EQ(user, "alice");
    ASSERT_EQ(s_try(rpc, "bob", 3000, user, sizeof user), 1);
    ASSERT_STR_EQ(user, "bob");
    long refused = bf_zap_refused();
    ASSERT_EQ(s_try(rpc, NULL, 500, user, sizeof user), 0);
    ASSERT(bf_zap_refused() > refused);
    zmq_close(rpc);

    /* a domain admitting subscribers only: admin alice is refused there */
    void *subs = s_server("test.subs", BF_ROLE_SUBSCRIBER);
    if (!subs) return;
    ASSERT_EQ(s_try(subs, "alice", 500, user, sizeof user), 0);
    ASSERT_EQ(s_try(subs, "bob", 3000, user, sizeof user), 1);
    zmq_close(subs);
}

static void test_plaintext_mode_makes_plain_sockets(void)
{
    char err[256];
    ASSERT_EQ(bf_security_init("plaintext", "", "", err, sizeof err), 0);
    ASSERT(!bf_security_curve());
    void *s = zmq_socket(bf_zmq_ctx(), ZMQ_DEALER);
    ASSERT_EQ(bf_curve_client(s, "svc", err, sizeof err), 0);
    int mech = -1;
    size_t n = sizeof mech;
    zmq_getsockopt(s, ZMQ_MECHANISM, &mech, &n);
    ASSERT_EQ(mech, ZMQ_NULL);
    zmq_close(s);
    ASSERT_EQ(bf_security_init("bogus", "", "", err, sizeof err), -1);
    ASSERT(strstr(err, "security.mode") != NULL);
    ASSERT_EQ(bf_security_init("curve", s_dir, "nobody", err, sizeof err), -1);
    ASSERT(strstr(err, "nobody.key") != NULL);
}

int main(void)
{
    bf_log_init("test_keys", BF_ERROR);
    snprintf(s_dir, sizeof s_dir, "%s/keys-XXXXXX",
             getenv("BANGFU_TEST_TMP") ? getenv("BANGFU_TEST_TMP") : "/tmp");
    if (!mkdtemp(s_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(generate_and_read);
    RUN(names);
    RUN(principals_parse);
    char err[256];
    bf_security_init("plaintext", s_dir, "svc", err, sizeof err); /* sets keys.dir */
    RUN(principals_lookup_and_reload);
    RUN(zap_curve_end_to_end);
    RUN(plaintext_mode_makes_plain_sockets);
    bf_zmq_ctx_term(); /* stops the ZAP thread first: must not hang */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", s_dir);
    return TEST_REPORT();
}
