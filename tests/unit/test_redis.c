/* test_redis.c: unit tests for bf_redis (URL parsing, commands, pipelining,
 * reconnect) against a real Redis.
 *
 * URL parsing needs no server. The rest needs BANGFU_REDIS_URL (tests/run.sh
 * starts a private Redis and exports it); without it the run fails with a
 * clear message. Keys are prefixed t_redis:<pid>: and deleted at the end.
 * Covers: good and bad URLs (no scheme, bad host/port, credentials refused,
 * database numbers), PING, argv and printf commands, error replies returned
 * as replies, pipelining in order, binary-safe keys and values (NUL bytes),
 * the database selected from the URL (also after a reconnect), reconnect
 * after the server kills our connection (CLIENT KILL ID from a second
 * connection), and a closed port or a refused SELECT failing cleanly.
 */
#include "bf_redis.h"
#include "bf_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *s_url;
static char s_prefix[64];

/* ------------------------------------------------------------- helpers */

/* A loopback port nobody listens on (bound, then closed). */
static int s_closed_port(void)
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

static bf_redis_t *s_open(const char *url)
{
    char err[256] = "";
    bf_redis_t *r = bf_redis_new(url, err, sizeof err);
    if (!r) fprintf(stderr, "  bf_redis_new(%s): %s\n", url, err);
    return r;
}

/* The URL of the test server with another database number. */
static void s_url_db(char *buf, size_t n, int db)
{
    const char *p = s_url + strlen("redis://");
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - s_url) : strlen(s_url);
    snprintf(buf, n, "%.*s/%d", (int)hl, s_url, db);
}

static long long s_client_id(bf_redis_t *r)
{
    redisReply *rep = bf_redis_cmdf(r, "CLIENT ID");
    long long id = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep) freeReplyObject(rep);
    return id;
}

/* ------------------------------------------------------------- URL tests */

static void test_url_good(void)
{
    char err[256];
    struct {
        const char *url, *host;
        int port;
    } good[] = {
        {"redis://127.0.0.1:6379/0", "127.0.0.1", 6379},
        {"redis://localhost", "localhost", 6379},
        {"redis://cache.internal:7000", "cache.internal", 7000},
        {"redis://h/3", "h", 6379},
        {"redis://h:1/", "h", 1},
        {"redis://h:65535/15", "h", 65535},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        err[0] = '\0';
        bf_redis_t *r = bf_redis_new(good[i].url, err, sizeof err);
        if (!r) {
            BF_FAIL_AT("%s refused: %s", good[i].url, err);
            continue;
        }
        ASSERT_STR_EQ(bf_redis_host(r), good[i].host);
        ASSERT_EQ(bf_redis_port(r), good[i].port);
        bf_redis_destroy(&r);
        ASSERT(r == NULL);
    }
    bf_redis_destroy(NULL);
}

static void test_url_bad(void)
{
    char host300[400];
    snprintf(host300, sizeof host300, "redis://%0300d:6379", 7);
    struct {
        const char *url, *says;
    } bad[] = {
        {NULL, "redis://"},
        {"", "redis://"},
        {"127.0.0.1:6379", "redis://"},      /* no scheme */
        {"http://127.0.0.1:6379", "redis://"},
        {"rediss://h:6379", "redis://"},     /* TLS is not supported */
        {"redis://", "host"},
        {"redis://:6379", "host"},
        {"redis:///0", "host"},
        {host300, "host"},
        {"redis://h:", "port"},
        {"redis://h:0", "port"},
        {"redis://h:65536", "port"},
        {"redis://h:-1", "port"},
        {"redis://h:abc", "port"},
        {"redis://h:12ab", "port"},
        {"redis://h:99999999999999999999999", "port"},
        {"redis://user@h:6379/0", "password"},      /* a user needs a password */
        {"redis://user:@h:6379/0", "password"},
        {"redis://user:secret@:6379/0", "host"},
        {"redis://h:6379/x", "database"},
        {"redis://h:6379/-1", "database"},
        {"redis://h:6379/1x", "database"},
        {"redis://h:6379/1001", "database"},
        {"redis://h/0/1", "database"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        bf_redis_t *r = bf_redis_new(bad[i].url, err, sizeof err);
        if (r) {
            BF_FAIL_AT("%s accepted", bad[i].url ? bad[i].url : "(null)");
            bf_redis_destroy(&r);
            continue;
        }
        if (!strstr(err, bad[i].says))
            BF_FAIL_AT("%s: message \"%s\" does not mention %s",
                       bad[i].url ? bad[i].url : "(null)", err, bad[i].says);
    }
    /* the credentials never appear in the message */
    char err[256] = "";
    bf_redis_t *r = bf_redis_new("redis://user:hunter2@h:0", err, sizeof err);
    ASSERT(r == NULL);
    ASSERT(strstr(err, "hunter2") == NULL);
}

/* redis://[[user]:password@]host...: the user AUTH is sent as */
static void test_url_credentials(void)
{
    char err[256] = "";
    bf_redis_t *r = bf_redis_new("redis://bangfu_x:p%40ss:w@rd@h:6380/2", err, sizeof err);
    ASSERT(r != NULL);
    if (r) {
        ASSERT_STR_EQ(bf_redis_host(r), "h");
        ASSERT_EQ(bf_redis_port(r), 6380);
        ASSERT_STR_EQ(bf_redis_user(r), "bangfu_x");
        ASSERT(bf_redis_set_auth(r, "other", "pw") == 0);
        ASSERT_STR_EQ(bf_redis_user(r), "other");
        ASSERT(bf_redis_set_auth(r, NULL, NULL) == 0);
        ASSERT(bf_redis_user(r) == NULL);
        bf_redis_destroy(&r);
    }
    r = bf_redis_new("redis://:only@h", err, sizeof err);
    ASSERT(r != NULL);
    if (r) {
        ASSERT_STR_EQ(bf_redis_user(r), "default");
        bf_redis_destroy(&r);
    }
    r = bf_redis_new("redis://h:1", err, sizeof err);
    ASSERT(r != NULL && bf_redis_user(r) == NULL);
    bf_redis_destroy(&r);
}

/* against the test server (ACL users, tests/run.sh): a wrong password is
 * refused at connect, named by user, and the password is not in the message */
static void test_auth_refused(void)
{
    const char *url = getenv("BANGFU_REDIS_URL");
    if (!url) return;
    char err[256] = "";
    bf_redis_t *r = bf_redis_new(url, err, sizeof err);
    ASSERT(r != NULL);
    if (!r) return;
    bool acl = bf_redis_user(r) != NULL; /* run.sh gives the admin's URL */
    ASSERT(bf_redis_set_auth(r, "bangfu_admin", "not-the-password-x7") == 0);
    if (acl) {
        ASSERT(bf_redis_ensure(r) != 0);
        ASSERT(strstr(bf_redis_errmsg(r), "bangfu_admin") != NULL);
        ASSERT(strstr(bf_redis_errmsg(r), "not-the-password-x7") == NULL);
        ASSERT(!bf_redis_ping(r));
    }
    bf_redis_destroy(&r);
}

/* ------------------------------------------------------------- server tests */

static void test_environment(void)
{
    if (!s_url)
        BF_FAIL_AT("BANGFU_REDIS_URL is not set: run the unit tests through tests/run.sh, "
                   "which starts a private Redis");
}

static void test_ping_and_commands(void)
{
    bf_redis_t *r = s_open(s_url);
    ASSERT(r != NULL);
    if (!r) return;
    ASSERT_EQ(bf_redis_ensure(r), 0);
    ASSERT(bf_redis_ping(r));
    char key[128];
    snprintf(key, sizeof key, "%sgreeting", s_prefix);
    /* argv form (lens NULL: C strings) */
    const char *set[] = {"SET", key, "你好"};
    redisReply *rep = bf_redis_cmd(r, 3, set, NULL);
    ASSERT(rep != NULL);
    if (rep) {
        ASSERT_EQ(rep->type, REDIS_REPLY_STATUS);
        ASSERT_STR_EQ(rep->str, "OK");
        freeReplyObject(rep);
    }
    /* printf form, with %s and %d */
    rep = bf_redis_cmdf(r, "GET %s", key);
    ASSERT(rep != NULL);
    if (rep) {
        ASSERT_EQ(rep->type, REDIS_REPLY_STRING);
        ASSERT_STR_EQ(rep->str, "你好");
        freeReplyObject(rep);
    }
    rep = bf_redis_cmdf(r, "SET %s %d", key, 41);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r, "INCRBY %s %d", key, 1);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 42);
    if (rep) freeReplyObject(rep);
    /* a value with spaces through %s is one argument */
    rep = bf_redis_cmdf(r, "SET %s %s", key, "two words");
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r, "STRLEN %s", key);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 9);
    if (rep) freeReplyObject(rep);
    /* an error reply is a reply, and the connection stays up */
    rep = bf_redis_cmdf(r, "INCR %s", key);
    ASSERT(rep != NULL);
    if (rep) {
        ASSERT_EQ(rep->type, REDIS_REPLY_ERROR);
        freeReplyObject(rep);
    }
    const char *unknown[] = {"NOSUCHCOMMAND", "x"};
    rep = bf_redis_cmd(r, 2, unknown, NULL);
    ASSERT(rep && rep->type == REDIS_REPLY_ERROR);
    if (rep) freeReplyObject(rep);
    ASSERT(bf_redis_ping(r));
    bf_redis_destroy(&r);
    ASSERT(r == NULL);
}

static void test_pipelining(void)
{
    bf_redis_t *r = s_open(s_url);
    ASSERT(r != NULL);
    if (!r) return;
    char key[128];
    snprintf(key, sizeof key, "%scounter", s_prefix);
    enum { N = 200 };
    const char *incr[] = {"INCR", key};
    for (int i = 0; i < N; i++) ASSERT_EQ(bf_redis_append(r, 2, incr, NULL), 0);
    /* an error in the middle of a pipeline comes back in its place */
    const char *bad[] = {"HGET", key, "field"}; /* WRONGTYPE */
    ASSERT_EQ(bf_redis_append(r, 3, bad, NULL), 0);
    const char *get[] = {"GET", key};
    ASSERT_EQ(bf_redis_append(r, 2, get, NULL), 0);
    int in_order = 1;
    for (int i = 0; i < N; i++) {
        redisReply *rep = bf_redis_read(r);
        if (!rep || rep->type != REDIS_REPLY_INTEGER || rep->integer != i + 1) in_order = 0;
        if (rep) freeReplyObject(rep);
    }
    ASSERT(in_order);
    redisReply *rep = bf_redis_read(r);
    ASSERT(rep && rep->type == REDIS_REPLY_ERROR);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_read(r);
    ASSERT(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "200") == 0);
    if (rep) freeReplyObject(rep);
    /* the connection is in step afterwards */
    ASSERT(bf_redis_ping(r));
    bf_redis_destroy(&r);
}

static void test_binary_safe(void)
{
    bf_redis_t *r = s_open(s_url);
    ASSERT(r != NULL);
    if (!r) return;
    char key[128];
    int kl = snprintf(key, sizeof key, "%sbin", s_prefix);
    key[kl] = '\0';
    /* a key with a NUL inside, distinct from its prefix */
    char nulkey[160];
    memcpy(nulkey, key, (size_t)kl);
    memcpy(nulkey + kl, "\0tail", 5);
    size_t nulkey_len = (size_t)kl + 5;
    const char value[] = {'a', '\0', 'b', '\r', '\n', '\xff', '\0'};
    const char *set[] = {"SET", nulkey, value};
    size_t set_lens[] = {3, nulkey_len, sizeof value};
    redisReply *rep = bf_redis_cmd(r, 3, set, set_lens);
    ASSERT(rep && rep->type == REDIS_REPLY_STATUS);
    if (rep) freeReplyObject(rep);
    const char *get[] = {"GET", nulkey};
    size_t get_lens[] = {3, nulkey_len};
    rep = bf_redis_cmd(r, 2, get, get_lens);
    ASSERT(rep != NULL);
    if (rep) {
        ASSERT_EQ(rep->type, REDIS_REPLY_STRING);
        ASSERT_EQ(rep->len, sizeof value);
        ASSERT(rep->len == sizeof value && memcmp(rep->str, value, sizeof value) == 0);
        freeReplyObject(rep);
    }
    /* the key cut at its NUL is another key */
    rep = bf_redis_cmdf(r, "EXISTS %s", key);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    if (rep) freeReplyObject(rep);
    /* %b in the printf form is binary safe too */
    rep = bf_redis_cmdf(r, "SET %b %b", key, (size_t)kl, value, sizeof value);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r, "STRLEN %b", key, (size_t)kl);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == (long long)sizeof value);
    if (rep) freeReplyObject(rep);
    /* and through the pipeline */
    ASSERT_EQ(bf_redis_append(r, 2, get, get_lens), 0);
    rep = bf_redis_read(r);
    ASSERT(rep && rep->type == REDIS_REPLY_STRING && rep->len == sizeof value &&
           memcmp(rep->str, value, sizeof value) == 0);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmd(r, 2, (const char *[]){"DEL", nulkey}, (size_t[]){3, nulkey_len});
    if (rep) freeReplyObject(rep);
    bf_redis_destroy(&r);
}

static void test_database_from_url(void)
{
    char url3[256];
    s_url_db(url3, sizeof url3, 3);
    bf_redis_t *r3 = s_open(url3);
    bf_redis_t *r0 = s_open(s_url);
    ASSERT(r3 && r0);
    if (!r3 || !r0) {
        bf_redis_destroy(&r3);
        bf_redis_destroy(&r0);
        return;
    }
    char key[128];
    snprintf(key, sizeof key, "%sin_db3", s_prefix);
    redisReply *rep = bf_redis_cmdf(r3, "SET %s here", key);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r0, "EXISTS %s", key);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r3, "EXISTS %s", key);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
    if (rep) freeReplyObject(rep);
    /* after a drop and reconnect, still database 3 */
    bf_redis_drop(r3);
    bf_redis_drop(r3); /* twice is harmless */
    rep = bf_redis_cmdf(r3, "EXISTS %s", key);
    ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_cmdf(r3, "DEL %s", key);
    if (rep) freeReplyObject(rep);
    bf_redis_destroy(&r3);
    bf_redis_destroy(&r0);

    /* a database the server does not have: SELECT fails, ensure says so */
    char url999[256];
    s_url_db(url999, sizeof url999, 999);
    bf_redis_t *bad = s_open(url999);
    ASSERT(bad != NULL);
    if (bad) {
        ASSERT_EQ(bf_redis_ensure(bad), -1);
        ASSERT(strstr(bf_redis_errmsg(bad), "SELECT 999") != NULL);
        ASSERT(bf_redis_cmdf(bad, "PING") == NULL);
        ASSERT(!bf_redis_ping(bad));
        bf_redis_destroy(&bad);
    }
}

static void test_reconnect_after_kill(void)
{
    char url2[256];
    s_url_db(url2, sizeof url2, 2);
    bf_redis_t *r = s_open(url2);
    bf_redis_t *killer = s_open(s_url);
    ASSERT(r && killer);
    if (!r || !killer) {
        bf_redis_destroy(&r);
        bf_redis_destroy(&killer);
        return;
    }
    char key[128];
    snprintf(key, sizeof key, "%ssurvives", s_prefix);
    redisReply *rep = bf_redis_cmdf(r, "SET %s yes", key);
    if (rep) freeReplyObject(rep);
    for (int round = 0; round < 3; round++) {
        long long id = s_client_id(r);
        ASSERT(id > 0);
        rep = bf_redis_cmdf(killer, "CLIENT KILL ID %lld", id);
        ASSERT(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1);
        if (rep) freeReplyObject(rep);
        /* at most one call sees the broken connection; the next reconnects */
        int failures = 0;
        long long id2 = -1;
        for (int attempt = 0; attempt < 2 && id2 < 0; attempt++) {
            id2 = s_client_id(r);
            if (id2 < 0) {
                failures++;
                ASSERT(bf_redis_errmsg(r)[0] != '\0');
            }
        }
        ASSERT(failures <= 1);
        ASSERT(id2 > 0 && id2 != id);
        /* the new connection selected the URL's database again */
        rep = bf_redis_cmdf(r, "GET %s", key);
        ASSERT(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "yes") == 0);
        if (rep) freeReplyObject(rep);
    }
    /* killed between appending and reading a pipeline: read fails, no crash,
     * and the next call reconnects */
    long long id = s_client_id(r);
    const char *ping[] = {"PING"};
    ASSERT_EQ(bf_redis_append(r, 1, ping, NULL), 0);
    rep = bf_redis_cmdf(killer, "CLIENT KILL ID %lld", id);
    if (rep) freeReplyObject(rep);
    rep = bf_redis_read(r);
    /* hiredis only writes the pipeline at the read, to a closed socket */
    if (rep) freeReplyObject(rep);
    ASSERT(rep == NULL);
    ASSERT(bf_redis_read(r) == NULL); /* nothing to read: dropped, not blocking */
    ASSERT(bf_redis_ping(r));
    rep = bf_redis_cmdf(r, "DEL %s", key);
    if (rep) freeReplyObject(rep);
    bf_redis_destroy(&r);
    bf_redis_destroy(&killer);
}

static void test_closed_port(void)
{
    int port = s_closed_port();
    ASSERT(port > 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
    bf_redis_t *r = s_open(url);
    ASSERT(r != NULL);
    if (!r) return;
    ASSERT_EQ(bf_redis_ensure(r), -1);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    ASSERT(strstr(bf_redis_errmsg(r), where) != NULL);
    ASSERT(bf_redis_cmdf(r, "PING") == NULL);
    const char *ping[] = {"PING"};
    ASSERT(bf_redis_cmd(r, 1, ping, NULL) == NULL);
    ASSERT_EQ(bf_redis_append(r, 1, ping, NULL), -1);
    ASSERT(bf_redis_read(r) == NULL);
    ASSERT(!bf_redis_ping(r));
    bf_redis_drop(r);
    bf_redis_destroy(&r);
    /* an unresolvable host fails the same way */
    r = s_open("redis://no-such-host.invalid:6379");
    ASSERT(r != NULL);
    if (r) {
        ASSERT_EQ(bf_redis_ensure(r), -1);
        ASSERT(bf_redis_errmsg(r)[0] != '\0');
        bf_redis_destroy(&r);
    }
}

static void s_cleanup(void)
{
    bf_redis_t *r = s_open(s_url);
    if (!r) return;
    char pattern[96];
    snprintf(pattern, sizeof pattern, "%s*", s_prefix);
    for (int db = 0; db < 4; db++) {
        redisReply *rep = bf_redis_cmdf(r, "SELECT %d", db);
        if (rep) freeReplyObject(rep);
        rep = bf_redis_cmdf(r, "KEYS %s", pattern);
        if (rep && rep->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < rep->elements; i++) {
                redisReply *d = bf_redis_cmdf(r, "DEL %b", rep->element[i]->str,
                                              (size_t)rep->element[i]->len);
                if (d) freeReplyObject(d);
            }
        }
        if (rep) freeReplyObject(rep);
    }
    bf_redis_destroy(&r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as bf_service does: a dead peer is an error, not death */
    RUN(url_good);
    RUN(url_bad);
    RUN(url_credentials);
    s_url = getenv("BANGFU_REDIS_URL");
    if (s_url && !*s_url) s_url = NULL;
    RUN(environment);
    RUN(closed_port);
    if (!s_url) return TEST_REPORT();
    snprintf(s_prefix, sizeof s_prefix, "t_redis:%d:", (int)getpid());
    RUN(ping_and_commands);
    RUN(auth_refused);
    RUN(pipelining);
    RUN(binary_safe);
    RUN(database_from_url);
    RUN(reconnect_after_kill);
    s_cleanup();
    return TEST_REPORT();
}
