/* test_relay.c: unit tests for bf_relay (outbox -> Redis Stream) against real
 * PostgreSQL and Redis.
 *
 * Needs BANGFU_PG_DSN and BANGFU_REDIS_URL (tests/run.sh provides both). Each
 * run uses its own schema t_relay_<pid>, service name trelay<pid> (so its own
 * advisory lock and NOTIFY channel) and stream t_relay:<pid>:events (through
 * BANGFU_RELAY_STREAM before bf_cfg_load), all removed at the end. Waiting is
 * always polling with a deadline. Checks: committed events reach the stream
 * in seq order with fields id, type, event (the exact payload), rows are
 * marked relayed, rolled-back events never appear; events added while the
 * relay runs arrive; a transaction that commits after a later one is not
 * skipped; a second relay for the same service relays nothing while the first
 * holds the lock and takes over when it stops; killing the holder's backend
 * only pauses relaying; bf_relay_stop relays what is pending before it
 * returns.
 */
#include "bf_cfg.h"
#include "bf_db.h"
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_outbox.h"
#include "bf_redis.h"
#include "bf_relay.h"
#include "bf_rpc.h"
#include "bf_test.h"

#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *s_dsn, *s_redis_url;
static char s_schema[64], s_service[32], s_stream[64];
static bf_cfg_t *s_cfg;
static bf_db_t *s_db;    /* writes events, reads the outbox */
static bf_redis_t *s_redis;
static bf_relay_t *s_relay_a, *s_relay_b;
static int s_events; /* committed so far */

/* ------------------------------------------------------------- helpers */

static long long s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_nap(void)
{
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Adds one event on db (in its open transaction); 0 or -1. */
static int s_add(bf_db_t *db, const char *subject, int n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    bf_mp_kv_int(&pk, "n", n);
    bf_mp_kv_str(&pk, "subject", subject);
    int rc = bf_outbox_add(db, s_service, "bangfu.test.relay.event", subject, "admin", sb.data,
                           sb.size, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Commits count events in one transaction. */
static int s_commit_events(int count, const char *tag)
{
    if (bf_db_begin(s_db) != 0) return -1;
    for (int i = 0; i < count; i++) {
        char subject[64];
        snprintf(subject, sizeof subject, "%s/%d", tag, s_events + i);
        if (s_add(s_db, subject, s_events + i) != 0) {
            bf_db_rollback(s_db);
            return -1;
        }
    }
    if (bf_db_commit(s_db) != 0) return -1;
    s_events += count;
    return 0;
}

static int s_rollback_events(int count)
{
    if (bf_db_begin(s_db) != 0) return -1;
    for (int i = 0; i < count; i++)
        if (s_add(s_db, "rolled/back", -1) != 0) break;
    return bf_db_rollback(s_db);
}

static long long s_xlen(void)
{
    redisReply *rep = bf_redis_cmdf(s_redis, "XLEN %s", s_stream);
    long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep) freeReplyObject(rep);
    return n;
}

static long long s_db_count(const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM outbox %s", where);
    PGresult *res = bf_db_exec(s_db, sql, 0, NULL);
    long long n = res ? bf_db_int(res, 0, "n") : -1;
    if (res) PQclear(res);
    return n;
}

static long long s_relayed_total(void)
{
    return (s_relay_a ? bf_relay_count(s_relay_a) : 0) +
           (s_relay_b ? bf_relay_count(s_relay_b) : 0);
}

/* Polls until the stream holds want entries and no row is pending. */
static int s_wait_all_relayed(long long want, int timeout_ms)
{
    long long deadline = s_mono_ms() + timeout_ms;
    while (s_mono_ms() < deadline) {
        if (s_xlen() == want && s_db_count("WHERE relayed_at IS NULL") == 0) return 0;
        s_nap();
    }
    fprintf(stderr, "  waited %d ms: stream has %lld of %lld, %lld rows pending\n", timeout_ms,
            s_xlen(), want, s_db_count("WHERE relayed_at IS NULL"));
    return -1;
}

/* Polls until counter() reaches want (the relay counts a round after marking
 * its rows, so the count may trail the table by a moment). Returns it. */
static long long s_wait_count(const bf_relay_t *r, long long want)
{
    long long deadline = s_mono_ms() + 10000;
    long long got = r ? bf_relay_count(r) : -1;
    while (r && got < want && s_mono_ms() < deadline) {
        s_nap();
        got = bf_relay_count(r);
    }
    return got;
}

static long long s_wait_total(long long want)
{
    long long deadline = s_mono_ms() + 10000;
    while (s_relayed_total() < want && s_mono_ms() < deadline) s_nap();
    return s_relayed_total();
}

/* The backend pid holding the relay's advisory lock, or -1. */
static long long s_lock_holder(void)
{
    char lock[96];
    snprintf(lock, sizeof lock, "bangfu.relay.%s", s_service);
    const char *p[] = {lock};
    PGresult *res = bf_db_exec(s_db,
                               "SELECT pid AS n FROM pg_locks WHERE locktype = 'advisory' "
                               "AND granted AND objsubid = 1 "
                               "AND classid = ((hashtext($1)::bigint >> 32) & 4294967295)::oid "
                               "AND objid = (hashtext($1)::bigint & 4294967295)::oid",
                               1, p);
    long long pid = res && PQntuples(res) == 1 ? bf_db_int(res, 0, "n") : -1;
    if (res) PQclear(res);
    return pid;
}

static int s_hexval(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

typedef struct {
    char id[40];
    char type[64];
    char *payload;
    size_t len;
} s_event_t;

/* The outbox rows in seq order (caller frees with s_free_events). */
static int s_db_events(s_event_t **out)
{
    PGresult *res = bf_db_exec(s_db,
                               "SELECT event_id::text AS id, type, encode(payload, 'hex') AS p "
                               "FROM outbox ORDER BY seq",
                               0, NULL);
    if (!res) return -1;
    int n = PQntuples(res);
    s_event_t *ev = calloc((size_t)n + 1, sizeof *ev);
    for (int i = 0; ev && i < n; i++) {
        snprintf(ev[i].id, sizeof ev[i].id, "%s", bf_db_str(res, i, "id"));
        snprintf(ev[i].type, sizeof ev[i].type, "%s", bf_db_str(res, i, "type"));
        const char *hex = bf_db_str(res, i, "p");
        ev[i].len = strlen(hex) / 2;
        ev[i].payload = malloc(ev[i].len + 1);
        for (size_t k = 0; ev[i].payload && k < ev[i].len; k++)
            ev[i].payload[k] = (char)(s_hexval(hex[2 * k]) << 4 | s_hexval(hex[2 * k + 1]));
    }
    PQclear(res);
    *out = ev;
    return ev ? n : -1;
}

static void s_free_events(s_event_t *ev, int n)
{
    for (int i = 0; ev && i < n; i++) free(ev[i].payload);
    free(ev);
}

/* Compares the stream with the outbox. in_seq_order: entry i is row i.
 * Returns the number of problems (each printed). */
static int s_compare_stream(int in_seq_order)
{
    s_event_t *ev = NULL;
    int n = s_db_events(&ev);
    if (n < 0) return 1;
    redisReply *rep = bf_redis_cmdf(s_redis, "XRANGE %s - +", s_stream);
    int problems = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || (int)rep->elements != n) {
        fprintf(stderr, "  stream has %d entries, outbox %d rows\n",
                rep && rep->type == REDIS_REPLY_ARRAY ? (int)rep->elements : -1, n);
        problems++;
    }
    for (size_t e = 0; !problems && e < rep->elements; e++) {
        redisReply *entry = rep->element[e];
        redisReply *f = entry->type == REDIS_REPLY_ARRAY && entry->elements == 2
                            ? entry->element[1]
                            : NULL;
        if (!f || f->type != REDIS_REPLY_ARRAY || f->elements != 6 ||
            strcmp(f->element[0]->str, "id") != 0 || strcmp(f->element[2]->str, "type") != 0 ||
            strcmp(f->element[4]->str, "event") != 0) {
            fprintf(stderr, "  entry %zu: fields are not id, type, event\n", e);
            problems++;
            continue;
        }
        const char *id = f->element[1]->str;
        int row = -1;
        if (in_seq_order) {
            row = (int)e;
            if (strcmp(ev[row].id, id) != 0) {
                fprintf(stderr, "  entry %zu is %s, row %d is %s (out of order)\n", e, id, row,
                        ev[row].id);
                problems++;
                continue;
            }
        } else {
            for (int i = 0; i < n; i++)
                if (strcmp(ev[i].id, id) == 0) row = i;
            if (row < 0) {
                fprintf(stderr, "  entry %zu: %s is not in the outbox\n", e, id);
                problems++;
                continue;
            }
        }
        if (strcmp(f->element[3]->str, ev[row].type) != 0 || f->element[5]->len != ev[row].len ||
            memcmp(f->element[5]->str, ev[row].payload, ev[row].len) != 0) {
            fprintf(stderr, "  entry %zu (%s): type or payload differs\n", e, id);
            problems++;
        }
        /* the payload is the CloudEvents map of that event */
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (bf_mp_check(f->element[5]->str, f->element[5]->len, BF_MP_MAX_DEPTH) != 0 ||
            msgpack_unpack_next(&u, f->element[5]->str, f->element[5]->len, &off) !=
                MSGPACK_UNPACK_SUCCESS ||
            !bf_mp_str_eq(bf_mp_get(&u.data, "id"), id) ||
            !bf_mp_str_eq(bf_mp_get(&u.data, "specversion"), "1.0")) {
            fprintf(stderr, "  entry %zu: the event is not its CloudEvents map\n", e);
            problems++;
        }
        const msgpack_object *subject = bf_mp_get(&u.data, "subject");
        if (bf_mp_str_eq(subject, "rolled/back")) {
            fprintf(stderr, "  entry %zu: a rolled-back event was relayed\n", e);
            problems++;
        }
        msgpack_unpacked_destroy(&u);
    }
    if (rep) freeReplyObject(rep);
    s_free_events(ev, n);
    return problems;
}

/* ------------------------------------------------------------- tests */

static void test_environment(void)
{
    if (!s_dsn) BF_FAIL_AT("BANGFU_PG_DSN is not set: run through tests/run.sh");
    if (!s_redis_url) BF_FAIL_AT("BANGFU_REDIS_URL is not set: run through tests/run.sh");
}

static void test_setup(void)
{
    ASSERT(s_cfg != NULL);
    ASSERT(s_db != NULL);
    ASSERT(s_redis != NULL);
    if (s_cfg) ASSERT_STR_EQ(bf_cfg_str(s_cfg, "relay.stream"), s_stream);
    ASSERT_EQ(s_xlen(), 0);
}

static void test_relays_committed_events_in_order(void)
{
    /* events committed before the relay starts, some rolled back between */
    ASSERT_EQ(s_commit_events(4, "early"), 0);
    ASSERT_EQ(s_rollback_events(3), 0);
    for (int k = 0; k < 4; k++) ASSERT_EQ(s_commit_events(5, "batch"), 0);
    ASSERT_EQ(s_rollback_events(2), 0);
    ASSERT_EQ(s_commit_events(1, "last"), 0);
    ASSERT_EQ(s_events, 25);
    ASSERT_EQ(s_db_count(""), 25); /* rolled-back ones left no row */
    ASSERT_EQ(s_db_count("WHERE relayed_at IS NULL"), 25);

    s_relay_a = bf_relay_start(s_service, s_schema, s_cfg);
    ASSERT(s_relay_a != NULL);
    if (!s_relay_a) return;
    /* relay.batch is 7 here: several rounds */
    ASSERT_EQ(s_wait_all_relayed(25, 20000), 0);
    ASSERT_EQ(s_wait_count(s_relay_a, 25), 25);
    ASSERT_EQ(s_compare_stream(1), 0);
    ASSERT_EQ(s_db_count("WHERE relayed_at IS NOT NULL"), 25);
}

static void test_live_events_arrive(void)
{
    if (!s_relay_a) return;
    for (int k = 0; k < 5; k++) ASSERT_EQ(s_commit_events(1, "live"), 0);
    ASSERT_EQ(s_rollback_events(1), 0);
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    ASSERT_EQ(s_wait_count(s_relay_a, s_events), s_events);
    ASSERT_EQ(s_compare_stream(1), 0);
}

/* Writers in the relay's own process do not NOTIFY (a NOTIFY serialises
 * commits database-wide): they wake the relay after their commit. */
static void test_writers_here_wake_the_relay_without_notify(void)
{
    if (!s_relay_a) return;
    long long deadline = s_mono_ms() + 20000;
    while (s_mono_ms() < deadline && !bf_relay_local(s_service)) s_nap();
    ASSERT(bf_relay_local(s_service) != NULL); /* A holds the lock (it relayed above) */
    ASSERT(bf_relay_local("no-such-service") == NULL);
    bf_db_t *listener = bf_db_new(s_dsn, s_schema);
    ASSERT(listener != NULL);
    if (!listener) return;
    char listen_sql[96];
    snprintf(listen_sql, sizeof listen_sql, "LISTEN bangfu_outbox_%s", s_service);
    ASSERT_EQ(bf_db_connect(listener, 3), 0);
    ASSERT_EQ(bf_db_cmd(listener, listen_sql), 0);
    long long wakes = bf_relay_wakes(s_relay_a);
    for (int k = 0; k < 3; k++) ASSERT_EQ(s_commit_events(1, "woken"), 0);
    ASSERT_EQ(s_rollback_events(1), 0);
    /* a statement outside a transaction commits on its own: woken at once */
    ASSERT_EQ(s_add(s_db, "woken/autocommit", s_events), 0);
    s_events++;
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    ASSERT_EQ(s_compare_stream(1), 0);
    ASSERT(bf_relay_wakes(s_relay_a) > wakes);
    /* no NOTIFY was sent (one would have reached the listener at commit,
     * before the relay could see the rows) */
    PGconn *c = bf_db_conn(listener);
    int notifies = 0;
    long long until = s_mono_ms() + 300;
    while (s_mono_ms() < until) {
        ASSERT(PQconsumeInput(c));
        PGnotify *n;
        while ((n = PQnotifies(c)) != NULL) {
            notifies++;
            PQfreemem(n);
        }
        s_nap();
    }
    ASSERT_EQ(notifies, 0);
    bf_db_destroy(&listener);
}

static void test_late_commit_is_not_skipped(void)
{
    if (!s_relay_a) return;
    /* T1 takes a seq first but commits after T2 */
    bf_db_t *t1 = bf_db_new(s_dsn, s_schema);
    ASSERT(t1 != NULL);
    if (!t1) return;
    ASSERT_EQ(bf_db_connect(t1, 3), 0);
    ASSERT_EQ(bf_db_begin(t1), 0);
    ASSERT_EQ(s_add(t1, "late/commit", 1000), 0);
    ASSERT_EQ(s_commit_events(1, "early-commit"), 0);
    /* T2's event is relayed while T1's is invisible */
    long long deadline = s_mono_ms() + 20000;
    while (s_mono_ms() < deadline && s_xlen() != s_events) s_nap();
    ASSERT_EQ(s_xlen(), s_events);
    ASSERT_EQ(bf_db_commit(t1), 0);
    s_events++;
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    ASSERT_EQ(s_compare_stream(0), 0); /* every row, though not in seq order now */
    ASSERT_EQ(s_wait_count(s_relay_a, s_events), s_events);
    bf_db_destroy(&t1);
}

static void test_second_relay_waits(void)
{
    if (!s_relay_a) return;
    long long holder = s_lock_holder();
    ASSERT(holder > 0);
    s_relay_b = bf_relay_start(s_service, s_schema, s_cfg);
    ASSERT(s_relay_b != NULL);
    if (!s_relay_b) return;
    long long before = bf_relay_count(s_relay_a);
    for (int k = 0; k < 3; k++) ASSERT_EQ(s_commit_events(2, "two-relays"), 0);
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    ASSERT_EQ(s_wait_count(s_relay_a, before + 6) - before, 6);
    ASSERT_EQ(bf_relay_count(s_relay_b), 0); /* B never relayed: A holds the lock */
    ASSERT_EQ(s_lock_holder(), holder);
    ASSERT_EQ(s_compare_stream(0), 0); /* no duplicates in the stream */
}

static void test_backend_killed(void)
{
    if (!s_relay_a || !s_relay_b) return;
    long long holder = s_lock_holder();
    ASSERT(holder > 0);
    char p0[32];
    snprintf(p0, sizeof p0, "%lld", holder);
    const char *p[] = {p0};
    PGresult *res = bf_db_exec(s_db, "SELECT pg_terminate_backend($1::int)", 1, p);
    ASSERT(res != NULL);
    if (res) PQclear(res);
    /* relaying only pauses: A reconnects or B takes over */
    long long before = s_relayed_total();
    for (int k = 0; k < 4; k++) ASSERT_EQ(s_commit_events(1, "after-kill"), 0);
    ASSERT_EQ(s_wait_all_relayed(s_events, 30000), 0);
    ASSERT_EQ(s_wait_total(before + 4) - before, 4);
    long long now_holder = s_lock_holder();
    ASSERT(now_holder > 0 && now_holder != holder);
    ASSERT_EQ(s_compare_stream(0), 0);
}

static void test_takeover_and_stop_flushes(void)
{
    if (!s_relay_a || !s_relay_b) return;
    /* stop both; one relay then starts alone and holds the lock */
    bf_relay_stop(&s_relay_a);
    ASSERT(s_relay_a == NULL);
    bf_relay_stop(&s_relay_a); /* NULL: safe */
    long long deadline = s_mono_ms() + 20000;
    long long before_b = bf_relay_count(s_relay_b);
    ASSERT_EQ(s_commit_events(2, "takeover"), 0);
    /* whichever held it, B is the only one left: it relays these */
    while (s_mono_ms() < deadline && bf_relay_count(s_relay_b) - before_b < 2) s_nap();
    ASSERT_EQ(bf_relay_count(s_relay_b) - before_b, 2);
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    /* commit a burst and stop at once: stop relays what is pending first */
    for (int k = 0; k < 4; k++) ASSERT_EQ(s_commit_events(5, "burst"), 0);
    bf_relay_stop(&s_relay_b);
    ASSERT(s_relay_b == NULL);
    ASSERT_EQ(s_db_count("WHERE relayed_at IS NULL"), 0);
    ASSERT_EQ(s_xlen(), s_events);
    ASSERT_EQ(s_compare_stream(0), 0);
    /* the lock goes with the relay's connection (its backend exits just
     * after the client closed it) */
    deadline = s_mono_ms() + 10000;
    while (s_mono_ms() < deadline && s_lock_holder() != -1) s_nap();
    ASSERT_EQ(s_lock_holder(), -1);
    /* a new relay picks up events committed while none ran */
    ASSERT_EQ(s_commit_events(3, "restart"), 0);
    s_relay_a = bf_relay_start(s_service, s_schema, s_cfg);
    ASSERT(s_relay_a != NULL);
    ASSERT_EQ(s_wait_all_relayed(s_events, 20000), 0);
    ASSERT_EQ(s_wait_count(s_relay_a, 3), 3);
    bf_relay_stop(&s_relay_a);
    bf_relay_stop(NULL);
    /* no relay of the service runs here now: writers NOTIFY again */
    ASSERT(bf_relay_local(s_service) == NULL);
}

/* ------------------------------------------------------------- main */

static void s_setup(void)
{
    int pid = (int)getpid();
    snprintf(s_schema, sizeof s_schema, "t_relay_%d", pid);
    snprintf(s_service, sizeof s_service, "trelay%d", pid);
    snprintf(s_stream, sizeof s_stream, "t_relay:%d:events", pid);
    unsetenv("BANGFU_CONFIG");
    setenv("BANGFU_RELAY_STREAM", s_stream, 1);
    setenv("BANGFU_RELAY_BATCH", "7", 1);
    /* no bus in a unit test: the PUB socket connects lazily and drops */
    setenv("BANGFU_BUS_XSUB", "tcp://127.0.0.1:1", 1);
    const bf_cfg_def_t *const tables[] = {bf_cfg_common, NULL};
    char err[256];
    s_cfg = bf_cfg_load(tables, NULL, err, sizeof err);
    if (!s_cfg) {
        fprintf(stderr, "  config: %s\n", err);
        return;
    }
    s_db = bf_db_new(s_dsn, s_schema);
    if (!s_db || bf_db_connect(s_db, 3) != 0 ||
        bf_db_migrate(s_db, s_schema, bf_outbox_migrations) < 1) {
        fprintf(stderr, "  database: %s\n", s_db ? bf_db_errmsg(s_db) : "out of memory");
        bf_db_destroy(&s_db);
        return;
    }
    s_redis = bf_redis_new(s_redis_url, err, sizeof err);
    if (s_redis && bf_redis_ensure(s_redis) != 0) bf_redis_destroy(&s_redis);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    bf_log_init("test_relay", BF_ERROR);
    char serr[256];
    bf_security_init("plaintext", "", "", serr, sizeof serr); /* no bus, no keys here */
    s_dsn = getenv("BANGFU_PG_DSN");
    s_redis_url = getenv("BANGFU_REDIS_URL");
    if (s_dsn && !*s_dsn) s_dsn = NULL;
    if (s_redis_url && !*s_redis_url) s_redis_url = NULL;
    RUN(environment);
    if (!s_dsn || !s_redis_url) return TEST_REPORT();
    s_setup();
    RUN(setup);
    if (s_cfg && s_db && s_redis) {
        RUN(relays_committed_events_in_order);
        RUN(live_events_arrive);
        RUN(writers_here_wake_the_relay_without_notify);
        RUN(late_commit_is_not_skipped);
        RUN(second_relay_waits);
        RUN(backend_killed);
        RUN(takeover_and_stop_flushes);
    }
    bf_relay_stop(&s_relay_a);
    bf_relay_stop(&s_relay_b);
    if (s_redis) {
        redisReply *rep = bf_redis_cmdf(s_redis, "DEL %s", s_stream);
        if (rep) freeReplyObject(rep);
    }
    if (s_db) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", s_schema);
        bf_db_cmd(s_db, sql);
    }
    bf_db_destroy(&s_db);
    bf_redis_destroy(&s_redis);
    bf_cfg_destroy(&s_cfg);
    bf_zmq_ctx_term();
    return TEST_REPORT();
}
