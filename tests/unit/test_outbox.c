/* test_outbox.c: unit tests for bf_outbox (UUID v7, RFC 3339 time, events
 * written in the caller's transaction, and the batch API).
 *
 * The id and time formats need no server. The rest needs BANGFU_PG_DSN
 * (tests/run.sh starts a private PostgreSQL); without it the run fails with a
 * clear message. The outbox migrations are applied in a schema t_outbox_<pid>
 * that is dropped at the end. Checks: an event added in a rolled-back
 * transaction leaves no row and no NOTIFY; a committed one leaves exactly one
 * row whose payload is a well-formed msgpack CloudEvents map with every
 * attribute and the caller's data map, and a NOTIFY on the service's channel;
 * bf_event_begin/commit/discard; a database error gives -1; and the batch API
 * writes the same envelopes, in the order added, with array-literal escaping
 * that survives quotes, backslashes, commas and braces.
 */
#include "bf_db.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_outbox.h"
#include "bf_test.h"

#include <poll.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *s_dsn;
static char s_schema[64];
static char s_service[32];
static bf_db_t *s_db;       /* the writer, search_path = s_schema */
static bf_db_t *s_listener; /* LISTENs on the service's channel */

/* ------------------------------------------------------------- helpers */

static int s_is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Checks the textual form of a UUID v7; returns NULL or what is wrong. */
static const char *s_uuid_v7_problem(const char *u)
{
    if (!u) return "NULL";
    if (strlen(u) != 36) return "not 36 characters";
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (u[i] != '-') return "hyphen missing";
        } else if (!s_is_hex_lower(u[i])) {
            return "not lowercase hex";
        }
    }
    if (u[14] != '7') return "version nibble is not 7";
    if (!strchr("89ab", u[19])) return "variant bits are not 10";
    return NULL;
}

/* The 48-bit millisecond timestamp of a UUID v7. */
static long long s_uuid_ms(const char *u)
{
    char hex[13];
    memcpy(hex, u, 8);
    memcpy(hex + 8, u + 9, 4);
    hex[12] = '\0';
    return strtoll(hex, NULL, 16);
}

static long long s_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parses "YYYY-MM-DDTHH:MM:SS.mmmZ" into ms since the epoch; -1 if malformed. */
static long long s_rfc3339_ms(const char *s)
{
    if (!s || strlen(s) != 24 || s[10] != 'T' || s[19] != '.' || s[23] != 'Z') return -1;
    for (int i = 20; i < 23; i++)
        if (s[i] < '0' || s[i] > '9') return -1;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || end != s + 19) return -1;
    return (long long)timegm(&tm) * 1000 + atoi(s + 20);
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static long long s_count(const char *where)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM outbox %s", where ? where : "");
    PGresult *res = bf_db_exec(s_db, sql, 0, NULL);
    if (!res) {
        fprintf(stderr, "  %s: %s\n", sql, bf_db_errmsg(s_db));
        return -1;
    }
    long long n = bf_db_int(res, 0, "n");
    PQclear(res);
    return n;
}

/* Notifications waiting on the listener within timeout_ms (drains them). */
static int s_notifications(int timeout_ms)
{
    PGconn *c = bf_db_conn(s_listener);
    int got = 0;
    long long deadline = s_mono_ms() + timeout_ms;
    for (;;) {
        PQconsumeInput(c);
        PGnotify *n;
        while ((n = PQnotifies(c)) != NULL) {
            got++;
            PQfreemem(n);
        }
        long long left = deadline - s_mono_ms();
        if (got || left <= 0) break;
        struct pollfd pfd = {PQsocket(c), POLLIN, 0};
        poll(&pfd, 1, (int)left);
    }
    return got;
}

typedef struct {
    char event_id[40];
    char type[128];
    char subject[128];
    char *payload;        /* the bytes msg points into */
    msgpack_unpacked msg; /* the payload */
    int ok;
} s_row_t;

static int s_hexval(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

/* Reads outbox rows in seq order (up to max) into rows; returns how many. */
static int s_read_rows(s_row_t *rows, int max)
{
    PGresult *res = bf_db_exec(s_db,
                               "SELECT event_id::text AS event_id, type, subject, "
                               "encode(payload, 'hex') AS payload, relayed_at IS NULL AS pending "
                               "FROM outbox ORDER BY seq",
                               0, NULL);
    if (!res) return -1;
    int n = PQntuples(res);
    if (n > max) n = max;
    for (int i = 0; i < n; i++) {
        s_row_t *r = &rows[i];
        snprintf(r->event_id, sizeof r->event_id, "%s", bf_db_str(res, i, "event_id"));
        snprintf(r->type, sizeof r->type, "%s", bf_db_str(res, i, "type"));
        snprintf(r->subject, sizeof r->subject, "%s", bf_db_str(res, i, "subject"));
        const char *hex = bf_db_str(res, i, "payload");
        size_t hl = strlen(hex);
        char *bin = malloc(hl / 2 + 1);
        for (size_t k = 0; bin && k < hl / 2; k++)
            bin[k] = (char)(s_hexval(hex[2 * k]) << 4 | s_hexval(hex[2 * k + 1]));
        msgpack_unpacked_init(&r->msg);
        size_t off = 0;
        r->ok = bin && bf_mp_check(bin, hl / 2, BF_MP_MAX_DEPTH) == 0 &&
                msgpack_unpack_next(&r->msg, bin, hl / 2, &off) == MSGPACK_UNPACK_SUCCESS &&
                bf_db_bool(res, i, "pending");
        r->payload = bin; /* msgpack-c's objects point into it */
    }
    PQclear(res);
    return n;
}

static void s_free_rows(s_row_t *rows, int n)
{
    for (int i = 0; i < n; i++) {
        msgpack_unpacked_destroy(&rows[i].msg);
        free(rows[i].payload);
    }
}

/* Checks one payload is the CloudEvents map for these values. */
static void s_check_envelope(const s_row_t *row, const char *type, const char *subject,
                             const char *actor)
{
    ASSERT(row->ok);
    const msgpack_object *m = &row->msg.data;
    ASSERT_EQ(m->type, MSGPACK_OBJECT_MAP);
    if (m->type != MSGPACK_OBJECT_MAP) return;
    ASSERT_EQ(m->via.map.size, 9);
    char source[64];
    snprintf(source, sizeof source, "bangfu/%s", s_service);
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "specversion"), "1.0"));
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "id"), row->event_id));
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "source"), source));
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "type"), type));
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "subject"), subject));
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "datacontenttype"), "application/msgpack"));
    const msgpack_object *a = bf_mp_get(m, "actor");
    if (actor)
        ASSERT(bf_mp_str_eq(a, actor));
    else
        ASSERT(a && a->type == MSGPACK_OBJECT_NIL);
    const msgpack_object *t = bf_mp_get(m, "time");
    ASSERT(t && t->type == MSGPACK_OBJECT_STR);
    if (t && t->type == MSGPACK_OBJECT_STR) {
        char ts[40];
        snprintf(ts, sizeof ts, "%.*s", (int)t->via.str.size, t->via.str.ptr);
        long long ms = s_rfc3339_ms(ts);
        ASSERT(ms > 0 && llabs(ms - s_wall_ms()) < 60000);
    }
    ASSERT(s_uuid_v7_problem(row->event_id) == NULL);
    ASSERT_STR_EQ(row->type, type);
    ASSERT_STR_EQ(row->subject, subject);
    const msgpack_object *d = bf_mp_get(m, "data");
    ASSERT(d && d->type == MSGPACK_OBJECT_MAP);
}

static void s_clear_outbox(void)
{
    PGresult *res = bf_db_exec(s_db, "DELETE FROM outbox", 0, NULL);
    if (res) PQclear(res);
    s_notifications(0);
}

/* Packs the data map {name, n, nested: {ok}} used by several tests. */
static void s_pack_data(msgpack_sbuffer *sb, int n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    bf_mp_kv_str(&pk, "name", "东里村");
    bf_mp_kv_int(&pk, "n", n);
    bf_mp_key(&pk, "nested");
    msgpack_pack_map(&pk, 1);
    bf_mp_kv_bool(&pk, "ok", true);
}

static void s_check_data(const s_row_t *row, int n)
{
    const msgpack_object *d = bf_mp_get(&row->msg.data, "data");
    ASSERT(d && d->type == MSGPACK_OBJECT_MAP && d->via.map.size == 3);
    ASSERT(bf_mp_str_eq(bf_mp_get(d, "name"), "东里村"));
    int64_t v = -1;
    ASSERT(bf_mp_int(bf_mp_get(d, "n"), &v) && v == n);
    const msgpack_object *ok = bf_mp_get(bf_mp_get(d, "nested"), "ok");
    ASSERT(ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean);
}

/* ------------------------------------------------------------- tests */

static void test_uuid_v7_format(void)
{
    char u[37];
    long long before = s_wall_ms();
    bf_uuid_v7(u);
    long long after = s_wall_ms();
    const char *problem = s_uuid_v7_problem(u);
    if (problem) BF_FAIL_AT("%s: %s", u, problem);
    long long ms = s_uuid_ms(u);
    ASSERT(ms >= before && ms <= after);
    /* random bits differ between calls in the same millisecond */
    char v[37];
    bf_uuid_v7(v);
    ASSERT(strcmp(u, v) != 0);
    ASSERT(strcmp(u + 24, v + 24) != 0);
}

static void test_uuid_v7_unique_and_ordered(void)
{
    enum { N = 100000 };
    char(*ids)[37] = malloc(sizeof(*ids) * N);
    ASSERT(ids != NULL);
    if (!ids) return;
    long long prev_ms = 0;
    int backwards = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        bf_uuid_v7(ids[i]);
        if (s_uuid_v7_problem(ids[i])) bad++;
        long long ms = s_uuid_ms(ids[i]);
        if (ms < prev_ms) backwards++;
        prev_ms = ms;
    }
    ASSERT_EQ(bad, 0);
    ASSERT_EQ(backwards, 0); /* the time prefix never goes back */
    /* ordered by time: the text of a later id (in a later ms) sorts after */
    ASSERT(strncmp(ids[0], ids[N - 1], 13) <= 0);
    qsort(ids, N, sizeof ids[0], s_cmp_str);
    int dups = 0;
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0) dups++;
    ASSERT_EQ(dups, 0);
    free(ids);
}

static void test_time_rfc3339(void)
{
    char t[32];
    memset(t, 'X', sizeof t);
    long long before = s_wall_ms();
    bf_time_rfc3339(t);
    long long after = s_wall_ms();
    ASSERT_EQ(strlen(t), 24);
    long long ms = s_rfc3339_ms(t);
    ASSERT(ms >= 0);
    /* same clock, millisecond resolution, truncated */
    ASSERT(ms >= before - 1 && ms <= after);
    for (int i = 0; i < 24; i++) {
        if (i == 4 || i == 7) ASSERT(t[i] == '-');
        else if (i == 13 || i == 16) ASSERT(t[i] == ':');
        else if (i != 10 && i != 19 && i != 23) ASSERT(t[i] >= '0' && t[i] <= '9');
    }
}

static void test_environment(void)
{
    if (!s_dsn)
        BF_FAIL_AT("BANGFU_PG_DSN is not set: run the unit tests through tests/run.sh, "
                   "which starts a private PostgreSQL");
}

static void test_migrations(void)
{
    ASSERT(s_db != NULL);
    if (!s_db) return;
    int n = 0;
    for (const bf_migration_t *m = bf_outbox_migrations; m->name; m++) n++;
    ASSERT_EQ(bf_db_migrate(s_db, s_schema, bf_outbox_migrations), n);
    ASSERT_EQ(bf_db_migrate(s_db, s_schema, bf_outbox_migrations), 0);
    ASSERT_EQ(s_count(NULL), 0);
}

static void test_rollback_leaves_nothing(void)
{
    if (!s_db) return;
    s_clear_outbox();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    s_pack_data(&sb, 1);
    char id[37] = "";
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_add(s_db, s_service, "bangfu.test.thing.created", "thing/1", "admin",
                            sb.data, sb.size, id),
              0);
    ASSERT(s_uuid_v7_problem(id) == NULL);
    ASSERT_EQ(s_count(NULL), 1); /* visible inside the transaction */
    ASSERT_EQ(bf_db_rollback(s_db), 0);
    ASSERT_EQ(s_count(NULL), 0);
    ASSERT_EQ(s_notifications(200), 0); /* the NOTIFY died with the transaction */
    msgpack_sbuffer_destroy(&sb);
}

static void test_commit_writes_the_event(void)
{
    if (!s_db) return;
    s_clear_outbox();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    s_pack_data(&sb, 7);
    char id[37] = "";
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_add(s_db, s_service, "bangfu.test.thing.created", "thing/7", "cadre:42",
                            sb.data, sb.size, id),
              0);
    ASSERT_EQ(s_notifications(0), 0); /* not before the commit */
    ASSERT_EQ(bf_db_commit(s_db), 0);
    msgpack_sbuffer_destroy(&sb);
    ASSERT(s_notifications(5000) >= 1);
    s_row_t rows[2];
    int n = s_read_rows(rows, 2);
    ASSERT_EQ(n, 1);
    if (n == 1) {
        ASSERT_STR_EQ(rows[0].event_id, id);
        s_check_envelope(&rows[0], "bangfu.test.thing.created", "thing/7", "cadre:42");
        s_check_data(&rows[0], 7);
    }
    s_free_rows(rows, n > 0 ? n : 0);
}

static void test_defaults_and_order(void)
{
    if (!s_db) return;
    s_clear_outbox();
    /* no data: an empty map; no actor: nil; no event_id_out: fine */
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_add(s_db, s_service, "bangfu.test.a", "a/1", NULL, NULL, 0, NULL), 0);
    for (int i = 2; i <= 5; i++) {
        char subject[16];
        snprintf(subject, sizeof subject, "a/%d", i);
        ASSERT_EQ(bf_outbox_add(s_db, s_service, "bangfu.test.a", subject, "admin", NULL, 0,
                                NULL),
                  0);
    }
    ASSERT_EQ(bf_db_commit(s_db), 0);
    s_row_t rows[8];
    int n = s_read_rows(rows, 8);
    ASSERT_EQ(n, 5);
    for (int i = 0; i < n; i++) {
        char subject[16];
        snprintf(subject, sizeof subject, "a/%d", i + 1);
        s_check_envelope(&rows[i], "bangfu.test.a", subject, i == 0 ? NULL : "admin");
        const msgpack_object *d = bf_mp_get(&rows[i].msg.data, "data");
        ASSERT(d && d->type == MSGPACK_OBJECT_MAP && d->via.map.size == 0);
        if (i > 0) ASSERT(strcmp(rows[i - 1].event_id, rows[i].event_id) != 0);
    }
    s_free_rows(rows, n > 0 ? n : 0);
}

static void test_event_helpers(void)
{
    if (!s_db) return;
    s_clear_outbox();
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    ASSERT(pk != NULL);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_int(pk, "household_id", 123);
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_event_commit(&ev, s_db, s_service, "bangfu.test.household.created",
                              "household/123", "admin"),
              0);
    bf_event_discard(&ev); /* safe after commit */
    ASSERT_EQ(bf_db_commit(s_db), 0);
    /* discard without commit frees and adds nothing */
    pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "x", "y");
    bf_event_discard(&ev);
    bf_event_discard(&ev);
    s_row_t rows[2];
    int n = s_read_rows(rows, 2);
    ASSERT_EQ(n, 1);
    if (n == 1) {
        s_check_envelope(&rows[0], "bangfu.test.household.created", "household/123", "admin");
        const msgpack_object *d = bf_mp_get(&rows[0].msg.data, "data");
        int64_t v = 0;
        ASSERT(bf_mp_int(bf_mp_get(d, "household_id"), &v) && v == 123);
    }
    s_free_rows(rows, n > 0 ? n : 0);
}

static void test_database_error(void)
{
    if (!s_db) return;
    /* a schema without an outbox table */
    char other[80];
    snprintf(other, sizeof other, "%s_none", s_schema);
    bf_db_t *db = bf_db_new(s_dsn, other);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_connect(db, 3), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    char id[37] = "unchanged";
    ASSERT_EQ(bf_outbox_add(db, s_service, "bangfu.test.x", "x/1", "admin", NULL, 0, id), -1);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "42P01");
    ASSERT_STR_EQ(id, "unchanged"); /* no id for an event that does not exist */
    bf_db_rollback(db);
    bf_event_t ev;
    msgpack_pack_map(bf_event_begin(&ev), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_event_commit(&ev, db, s_service, "bangfu.test.x", "x/1", "admin"), -1);
    bf_db_rollback(db);
    bf_db_destroy(&db);
}

/* ---------------------------------------------------------- batches */

static void test_batch(void)
{
    if (!s_db) return;
    s_clear_outbox();
    bf_outbox_batch_t *b = bf_outbox_batch_new(s_service, "system:import");
    ASSERT(b != NULL);
    if (!b) return;
    ASSERT_EQ(bf_outbox_batch_count(b), 0);
    /* types and subjects that need escaping in an array literal */
    const char *subjects[] = {
        "plain/1", "quote\"d/2", "back\\slash/3", "comma,brace{}/4", "NULL", "", "空格 /7",
        "\\\"mixed\\\"/8",
    };
    enum { K = 8 };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < K; i++) {
        msgpack_sbuffer_clear(&sb);
        s_pack_data(&sb, i);
        char type[64];
        snprintf(type, sizeof type, "bangfu.test.batch%s", i == 4 ? "\"NULL\"" : ".item");
        ASSERT_EQ(bf_outbox_batch_add(b, type, subjects[i], sb.data, sb.size), 0);
    }
    ASSERT_EQ(bf_outbox_batch_add(b, "bangfu.test.batch.empty", "e/9", NULL, 0), 0);
    ASSERT_EQ(bf_outbox_batch_count(b), K + 1);

    /* rolled back: nothing */
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_batch_insert(b, s_db), 0);
    ASSERT_EQ(bf_outbox_batch_count(b), 0); /* emptied */
    ASSERT_EQ(s_count(NULL), K + 1);
    ASSERT_EQ(bf_db_rollback(s_db), 0);
    ASSERT_EQ(s_count(NULL), 0);
    ASSERT_EQ(s_notifications(200), 0);

    /* reused and committed: every event, in order, one NOTIFY */
    for (int i = 0; i < K; i++) {
        msgpack_sbuffer_clear(&sb);
        s_pack_data(&sb, i);
        char type[64];
        snprintf(type, sizeof type, "bangfu.test.batch%s", i == 4 ? "\"NULL\"" : ".item");
        ASSERT_EQ(bf_outbox_batch_add(b, type, subjects[i], sb.data, sb.size), 0);
    }
    ASSERT_EQ(bf_outbox_batch_add(b, "bangfu.test.batch.empty", "e/9", NULL, 0), 0);
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_batch_insert(b, s_db), 0);
    ASSERT_EQ(bf_db_commit(s_db), 0);
    ASSERT(s_notifications(5000) >= 1);
    ASSERT_EQ(s_notifications(100), 0); /* one NOTIFY per insert, not per event */
    s_row_t rows[K + 2];
    int n = s_read_rows(rows, K + 2);
    ASSERT_EQ(n, K + 1);
    for (int i = 0; i < n && i < K; i++) {
        char type[64];
        snprintf(type, sizeof type, "bangfu.test.batch%s", i == 4 ? "\"NULL\"" : ".item");
        s_check_envelope(&rows[i], type, subjects[i], "system:import");
        s_check_data(&rows[i], i);
    }
    if (n == K + 1) {
        s_check_envelope(&rows[K], "bangfu.test.batch.empty", "e/9", "system:import");
        const msgpack_object *d = bf_mp_get(&rows[K].msg.data, "data");
        ASSERT(d && d->type == MSGPACK_OBJECT_MAP && d->via.map.size == 0);
    }
    for (int i = 1; i < n; i++) ASSERT(strcmp(rows[i - 1].event_id, rows[i].event_id) != 0);
    s_free_rows(rows, n > 0 ? n : 0);
    msgpack_sbuffer_destroy(&sb);

    /* an empty batch inserts nothing and succeeds */
    ASSERT_EQ(bf_outbox_batch_insert(b, s_db), 0);
    ASSERT_EQ(s_count(NULL), K + 1);
    bf_outbox_batch_destroy(&b);
    ASSERT(b == NULL);
    bf_outbox_batch_destroy(&b);
    bf_outbox_batch_destroy(NULL);
    ASSERT_EQ(bf_outbox_batch_count(NULL), 0);
    ASSERT_EQ(bf_outbox_batch_add(NULL, "t", "s", NULL, 0), -1);
    ASSERT_EQ(bf_outbox_batch_insert(NULL, s_db), -1);
}

static void test_batch_large_and_null_actor(void)
{
    if (!s_db) return;
    s_clear_outbox();
    bf_outbox_batch_t *b = bf_outbox_batch_new(s_service, NULL);
    ASSERT(b != NULL);
    if (!b) return;
    enum { N = 3000 };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < N; i++) {
        msgpack_sbuffer_clear(&sb);
        s_pack_data(&sb, i);
        char subject[32];
        snprintf(subject, sizeof subject, "item/%d", i);
        if (bf_outbox_batch_add(b, "bangfu.test.bulk", subject, sb.data, sb.size) != 0) {
            BF_FAIL_AT("add %d failed", i);
            break;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_batch_insert(b, s_db), 0);
    ASSERT_EQ(bf_db_commit(s_db), 0);
    bf_outbox_batch_destroy(&b);
    s_row_t *rows = calloc(N + 1, sizeof *rows);
    ASSERT(rows != NULL);
    if (!rows) return;
    int n = s_read_rows(rows, N + 1);
    ASSERT_EQ(n, N);
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        char subject[32];
        snprintf(subject, sizeof subject, "item/%d", i);
        const msgpack_object *m = &rows[i].msg.data;
        const msgpack_object *a = bf_mp_get(m, "actor");
        int64_t v = -1;
        if (!rows[i].ok || strcmp(rows[i].subject, subject) != 0 ||
            !bf_mp_str_eq(bf_mp_get(m, "id"), rows[i].event_id) ||
            !bf_mp_str_eq(bf_mp_get(m, "subject"), subject) || !a ||
            a->type != MSGPACK_OBJECT_NIL ||
            !bf_mp_int(bf_mp_get(bf_mp_get(m, "data"), "n"), &v) || v != i)
            wrong++;
    }
    ASSERT_EQ(wrong, 0);
    s_free_rows(rows, n > 0 ? n : 0);
    free(rows);
    s_notifications(0);
}

static void test_batch_insert_failure_keeps_events(void)
{
    if (!s_db) return;
    s_clear_outbox();
    char other[80];
    snprintf(other, sizeof other, "%s_none", s_schema);
    bf_db_t *bad = bf_db_new(s_dsn, other);
    ASSERT(bad != NULL);
    if (!bad) return;
    bf_outbox_batch_t *b = bf_outbox_batch_new(s_service, "admin");
    ASSERT(b != NULL);
    if (!b) {
        bf_db_destroy(&bad);
        return;
    }
    ASSERT_EQ(bf_outbox_batch_add(b, "bangfu.test.retry", "r/1", NULL, 0), 0);
    ASSERT_EQ(bf_outbox_batch_add(b, "bangfu.test.retry", "r/2", NULL, 0), 0);
    ASSERT_EQ(bf_db_begin(bad), 0);
    ASSERT_EQ(bf_outbox_batch_insert(b, bad), -1); /* no outbox table there */
    ASSERT_STR_EQ(bf_db_sqlstate(bad), "42P01");
    bf_db_rollback(bad);
    ASSERT_EQ(bf_outbox_batch_count(b), 2); /* still there to retry */
    ASSERT_EQ(bf_db_begin(s_db), 0);
    ASSERT_EQ(bf_outbox_batch_insert(b, s_db), 0);
    ASSERT_EQ(bf_db_commit(s_db), 0);
    ASSERT_EQ(s_count(NULL), 2);
    bf_outbox_batch_destroy(&b);
    bf_db_destroy(&bad);
    s_notifications(0);
}

int main(void)
{
    bf_log_init("test_outbox", BF_ERROR);
    RUN(uuid_v7_format);
    RUN(uuid_v7_unique_and_ordered);
    RUN(time_rfc3339);
    s_dsn = getenv("BANGFU_PG_DSN");
    if (s_dsn && !*s_dsn) s_dsn = NULL;
    RUN(environment);
    if (!s_dsn) return TEST_REPORT();

    snprintf(s_schema, sizeof s_schema, "t_outbox_%d", (int)getpid());
    snprintf(s_service, sizeof s_service, "tob%d", (int)getpid());
    s_db = bf_db_new(s_dsn, s_schema);
    s_listener = bf_db_new(s_dsn, NULL);
    if (s_db && bf_db_connect(s_db, 3) != 0) bf_db_destroy(&s_db);
    if (s_listener && bf_db_connect(s_listener, 3) == 0) {
        char sql[96];
        snprintf(sql, sizeof sql, "LISTEN bangfu_outbox_%s", s_service);
        if (bf_db_cmd(s_listener, sql) != 0) bf_db_destroy(&s_listener);
    } else {
        bf_db_destroy(&s_listener);
    }
    if (!s_listener) bf_db_destroy(&s_db);

    RUN(migrations);
    RUN(rollback_leaves_nothing);
    RUN(commit_writes_the_event);
    RUN(defaults_and_order);
    RUN(event_helpers);
    RUN(database_error);
    RUN(batch);
    RUN(batch_large_and_null_actor);
    RUN(batch_insert_failure_keeps_events);

    if (s_db) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", s_schema);
        bf_db_cmd(s_db, sql);
    }
    bf_db_destroy(&s_db);
    bf_db_destroy(&s_listener);
    return TEST_REPORT();
}
