/* test_db.c: unit tests for bf_db against a real PostgreSQL.
 *
 * Needs BANGFU_PG_DSN (tests/run.sh starts a private server and exports it);
 * without it the run fails with a clear message rather than passing vacuously.
 * Everything happens in schemas named t_db_<pid>... that are dropped at the
 * end, so runs never see each other's tables. Covers: lazy connect and the
 * session settings (search_path, UTC), a refused connection, parameters with
 * SQL NULL and binary bytea, prepared statement reuse (and more statements
 * than the per-connection cache holds), errors giving NULL with the right
 * SQLSTATE, transactions (rollback undoes, commit keeps, a commit that could
 * not commit says so), migrations (applied once, a failing one rolled back
 * and named, the advisory lock released, two threads racing apply each
 * migration exactly once), reconnection after the server kills the backend
 * (with the prepared-statement cache reset), and the column helpers by name.
 */
#include "bf_db.h"
#include "bf_log.h"
#include "bf_test.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *s_dsn;
static char s_schema[64];     /* plain tables */
static char s_mig_schema[64]; /* migrations */
static char s_race_schema[64];
static bf_db_t *s_admin; /* search_path public only; for checks and kills */

/* ------------------------------------------------------------- helpers */

/* Runs a query expected to return one row with column n; -1 on error. */
static long long s_scalar(bf_db_t *db, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = bf_db_exec(db, sql, nparams, params);
    if (!res) {
        fprintf(stderr, "  query failed: %s: %s\n", sql, bf_db_errmsg(db));
        return -1;
    }
    long long v = PQntuples(res) == 1 ? (long long)bf_db_int(res, 0, "n") : -1;
    PQclear(res);
    return v;
}

static long long s_backend_pid(bf_db_t *db)
{
    return s_scalar(db, "SELECT pg_backend_pid() AS n", 0, NULL);
}

static long long s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kills pid's backend from the admin connection and waits until it is gone. */
static int s_kill_backend(long long pid)
{
    char p[32];
    snprintf(p, sizeof p, "%lld", pid);
    const char *params[] = {p};
    if (s_scalar(s_admin, "SELECT count(*) AS n FROM pg_terminate_backend($1::int) t WHERE t",
                 1, params) != 1)
        return -1;
    long long deadline = s_now_ms() + 10000;
    while (s_now_ms() < deadline) {
        if (s_scalar(s_admin, "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1::int",
                     1, params) == 0)
            return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static bf_db_t *s_connect(const char *schema)
{
    bf_db_t *db = bf_db_new(s_dsn, schema);
    if (!db) return NULL;
    if (bf_db_connect(db, 3) != 0) {
        fprintf(stderr, "  cannot connect: %s\n", bf_db_errmsg(db));
        bf_db_destroy(&db);
    }
    return db;
}

/* ------------------------------------------------------------- tests */

static void test_environment(void)
{
    if (!s_dsn)
        BF_FAIL_AT("BANGFU_PG_DSN is not set: run the unit tests through tests/run.sh, "
                   "which starts a private PostgreSQL");
}

static void test_admin_connection(void)
{
    if (!s_admin) BF_FAIL_AT("cannot connect to BANGFU_PG_DSN=%s", s_dsn);
}

static void test_connect(void)
{
    bf_db_t *db = bf_db_new(s_dsn, s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT(bf_db_conn(db) == NULL); /* bf_db_new does not connect */
    ASSERT(bf_db_is_down(db));
    ASSERT_EQ(bf_db_connect(db, 1), 0);
    ASSERT(bf_db_conn(db) != NULL);
    ASSERT(!bf_db_is_down(db));
    ASSERT(!bf_db_in_tx(db));
    PGresult *res = bf_db_exec(db, "SELECT current_setting('search_path') AS sp, "
                                   "current_setting('TimeZone') AS tz", 0, NULL);
    ASSERT(res != NULL);
    if (res) {
        char want[128];
        snprintf(want, sizeof want, "%s, public", s_schema);
        ASSERT_STR_EQ(bf_db_str(res, 0, "sp"), want);
        ASSERT_STR_EQ(bf_db_str(res, 0, "tz"), "UTC");
        PQclear(res);
    }
    ASSERT_EQ(bf_db_ensure(db), 0); /* already up: nothing to do */
    bf_db_destroy(&db);
    ASSERT(db == NULL);
    bf_db_destroy(&db);
    bf_db_destroy(NULL);

    /* a statement on a handle never connected connects lazily */
    db = bf_db_new(s_dsn, NULL);
    ASSERT(db != NULL);
    if (db) {
        ASSERT_EQ(s_scalar(db, "SELECT 41 + 1 AS n", 0, NULL), 42);
        bf_db_destroy(&db);
    }
}

static void test_connect_refused(void)
{
    /* port 1: nobody listens there, the connection is refused at once */
    bf_db_t *db = bf_db_new("postgresql://bangfu@127.0.0.1:1/bangfu?connect_timeout=2", NULL);
    ASSERT(db != NULL);
    if (!db) return;
    long long t0 = s_now_ms();
    ASSERT_EQ(bf_db_connect(db, 2), -1);
    long long el = s_now_ms() - t0;
    ASSERT(el >= 90); /* one backoff of 100 ms between the two attempts */
    ASSERT(bf_db_errmsg(db)[0] != '\0');
    ASSERT(bf_db_is_down(db));
    ASSERT(bf_db_exec(db, "SELECT 1", 0, NULL) == NULL);
    ASSERT_EQ(bf_db_cmd(db, "SELECT 1"), -1);
    ASSERT(bf_db_prep(db, "x", "SELECT 1", 0, NULL, NULL, NULL) == NULL);
    ASSERT(bf_db_errmsg(db)[0] != '\0');
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, NULL), -1);
    bf_db_destroy(&db);
}

static void test_params_and_nulls(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE people (id int PRIMARY KEY, name text, "
                            "active bool, amount bigint, photo bytea)"),
              0);
    const char *p1[] = {"1", "张三", "true", "9223372036854775807"};
    PGresult *res = bf_db_prep(db, "people_add",
                               "INSERT INTO people (id, name, active, amount) "
                               "VALUES ($1, $2, $3, $4) RETURNING id",
                               4, p1, NULL, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_EQ(PQresultStatus(res), PGRES_TUPLES_OK);
        ASSERT_EQ(bf_db_int(res, 0, "id"), 1);
        PQclear(res);
    }
    /* NULL parameters are SQL NULL (not the string "NULL", not "") */
    const char *p2[] = {"2", NULL, NULL, NULL};
    res = bf_db_prep(db, "people_add", "INSERT INTO people (id, name, active, amount) "
                                       "VALUES ($1, $2, $3, $4) RETURNING id",
                     4, p2, NULL, NULL);
    ASSERT(res != NULL);
    if (res) PQclear(res);
    res = bf_db_exec(db, "SELECT id, name, active, amount, name IS NULL AS name_null "
                         "FROM people ORDER BY id", 0, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_EQ(PQntuples(res), 2);
        ASSERT_STR_EQ(bf_db_str(res, 0, "name"), "张三");
        ASSERT(bf_db_bool(res, 0, "active"));
        ASSERT(bf_db_int(res, 0, "amount") == INT64_MAX);
        ASSERT(!bf_db_null(res, 0, "name"));
        ASSERT(bf_db_null(res, 1, "name"));
        ASSERT(bf_db_str(res, 1, "name") == NULL);
        ASSERT(bf_db_bool(res, 1, "name_null"));
        ASSERT(!bf_db_bool(res, 1, "active")); /* NULL is not true */
        ASSERT_EQ(bf_db_int(res, 1, "amount"), 0); /* NULL reads as 0 */
        /* no such column / row */
        ASSERT(bf_db_str(res, 0, "nosuch") == NULL);
        ASSERT(bf_db_null(res, 0, "nosuch"));
        ASSERT(bf_db_str(res, 2, "name") == NULL);
        ASSERT_EQ(bf_db_int(res, 5, "id"), 0);
        PQclear(res);
    }
    /* parameters are never spliced: SQL in a value is just text */
    const char *p3[] = {"3", "x'); DROP TABLE people; --"};
    res = bf_db_exec(db, "INSERT INTO people (id, name) VALUES ($1, $2)", 2, p3);
    ASSERT(res != NULL);
    if (res) PQclear(res);
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM people", 0, NULL), 3);

    /* binary parameters (bytea with NUL bytes) through lengths/formats */
    const char photo[] = {'\x89', 'P', 'N', 'G', '\0', '\0', '\xff', 'x'};
    const char *p4[] = {"1", photo};
    int lens[] = {0, (int)sizeof photo};
    int fmts[] = {0, 1};
    res = bf_db_prep(db, "people_photo", "UPDATE people SET photo = $2 WHERE id = $1", 2, p4,
                     lens, fmts);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_STR_EQ(PQcmdTuples(res), "1");
        PQclear(res);
    }
    ASSERT_EQ(s_scalar(db, "SELECT octet_length(photo) AS n FROM people WHERE id = 1", 0,
                       NULL),
              sizeof photo);
    res = bf_db_exec(db, "SELECT encode(photo, 'hex') AS h FROM people WHERE id = 1", 0, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_STR_EQ(bf_db_str(res, 0, "h"), "89504e470000ff78");
        PQclear(res);
    }
    bf_db_destroy(&db);
}

static void test_prepared_reuse(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    for (int i = 0; i < 5; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *p[] = {v};
        PGresult *res = bf_db_prep(db, "twice", "SELECT $1::int * 2 AS n", 1, p, NULL, NULL);
        ASSERT(res != NULL);
        if (!res) {
            fprintf(stderr, "  call %d: %s\n", i, bf_db_errmsg(db));
            break;
        }
        ASSERT_EQ(bf_db_int(res, 0, "n"), i * 2);
        PQclear(res);
    }
    /* prepared once on this connection, not once per call */
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM pg_prepared_statements "
                           "WHERE name = 'twice'", 0, NULL),
              1);
    /* a statement that fails to prepare is not remembered: the same name
     * with correct SQL works afterwards */
    PGresult *res = bf_db_prep(db, "typo_then_fixed", "SELEC 1 AS n", 0, NULL, NULL, NULL);
    ASSERT(res == NULL);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "42601");
    res = bf_db_prep(db, "typo_then_fixed", "SELECT 1 AS n", 0, NULL, NULL, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_EQ(bf_db_int(res, 0, "n"), 1);
        PQclear(res);
    }
    bf_db_destroy(&db);
}

static void test_many_prepared_statements(void)
{
    /* more distinct statements than the connection's cache holds (512): each
     * must keep working when called again, cached or not */
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    enum { N = 530 };
    int bad = 0;
    for (int round = 0; round < 2 && !bad; round++) {
        for (int i = 0; i < N; i++) {
            char name[32], sql[64];
            snprintf(name, sizeof name, "many_%d", i);
            snprintf(sql, sizeof sql, "SELECT %d AS n", i);
            PGresult *res = bf_db_prep(db, name, sql, 0, NULL, NULL, NULL);
            if (!res || bf_db_int(res, 0, "n") != i) {
                BF_FAIL_AT("round %d statement %d: %s", round, i,
                           res ? "wrong value" : bf_db_errmsg(db));
                bad = 1;
                if (res) PQclear(res);
                break;
            }
            PQclear(res);
        }
    }
    bf_db_destroy(&db);
}

static void test_errors_and_sqlstate(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE codes (code text PRIMARY KEY)"), 0);
    const char *p[] = {"110101"};
    PGresult *res = bf_db_prep(db, "code_add", "INSERT INTO codes VALUES ($1)", 1, p, NULL,
                               NULL);
    ASSERT(res != NULL);
    if (res) PQclear(res);
    res = bf_db_prep(db, "code_add", "INSERT INTO codes VALUES ($1)", 1, p, NULL, NULL);
    ASSERT(res == NULL);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "23505");
    ASSERT(strstr(bf_db_errmsg(db), "duplicate key") != NULL);
    /* the message has no trailing newline */
    size_t n = strlen(bf_db_errmsg(db));
    ASSERT(n > 0 && bf_db_errmsg(db)[n - 1] != '\n');
    ASSERT(!bf_db_is_down(db)); /* a statement error is not a connection error */
    /* through exec and cmd too */
    res = bf_db_exec(db, "INSERT INTO codes VALUES ($1)", 1, p);
    ASSERT(res == NULL);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "23505");
    ASSERT_EQ(bf_db_cmd(db, "SELECT * FROM no_such_table"), -1);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "42P01");
    const char *bad[] = {"not a number"};
    res = bf_db_exec(db, "SELECT $1::int AS n", 1, bad);
    ASSERT(res == NULL);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "22P02");
    /* and the connection keeps working */
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM codes", 0, NULL), 1);
    bf_db_destroy(&db);
}

static void test_transactions(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE ledger (id int PRIMARY KEY)"), 0);
    /* rollback undoes */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT(bf_db_in_tx(db));
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO ledger VALUES (1)"), 0);
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM ledger", 0, NULL), 1);
    /* invisible to another session before commit */
    char count_sql[128];
    snprintf(count_sql, sizeof count_sql, "SELECT count(*) AS n FROM %s.ledger", s_schema);
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 0);
    ASSERT_EQ(bf_db_rollback(db), 0);
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM ledger", 0, NULL), 0);
    /* commit keeps */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_begin(db), 0); /* already in one: no nesting, no error */
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO ledger VALUES (2)"), 0);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 1);
    /* outside a transaction both are no-ops */
    ASSERT_EQ(bf_db_rollback(db), 0);
    ASSERT_EQ(bf_db_commit(db), 0);
    /* an error inside a transaction: the commit cannot commit and must say so */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO ledger VALUES (3)"), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO ledger VALUES (2)"), -1); /* duplicate */
    ASSERT_STR_EQ(bf_db_sqlstate(db), "23505");
    ASSERT_EQ(bf_db_commit(db), -1);
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 1); /* row 3 is not there */
    /* and the connection is usable afterwards */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO ledger VALUES (4)"), 0);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 2);
    bf_db_destroy(&db);
}

static void s_count_call(void *arg) { (*(int *)arg)++; }

static void test_after_commit(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE after_commit (id int PRIMARY KEY)"), 0);
    int calls = 0;
    /* no transaction open: the statement before committed, so at once */
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(calls, 1);
    /* after a COMMIT, once; a later registration replaces an earlier one */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO after_commit VALUES (1)"), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(calls, 1);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT_EQ(calls, 2);
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT_EQ(calls, 2); /* forgotten with its transaction */
    /* not after a rollback, nor when COMMIT ends in ROLLBACK */
    ASSERT_EQ(bf_db_begin(db), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(bf_db_rollback(db), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO after_commit VALUES (1)"), -1);
    ASSERT_EQ(bf_db_commit(db), -1);
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT_EQ(calls, 2);
    /* a request's handler commits a savepoint: the call waits for the real
     * commit; in a group, for the group's */
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(bf_db_commit(db), 0);
    ASSERT_EQ(calls, 2);
    ASSERT_EQ(bf_db_request_commit(db), 0);
    ASSERT_EQ(calls, 3);
    ASSERT_EQ(bf_db_group_begin(db, 50, NULL), 0);
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO after_commit VALUES (2)"), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    ASSERT_EQ(bf_db_request_commit(db), 0);
    ASSERT_EQ(calls, 3);
    ASSERT_EQ(bf_db_group_commit(db), 0);
    ASSERT_EQ(calls, 4);
    ASSERT_EQ(bf_db_group_begin(db, 50, NULL), 0);
    bf_db_after_commit(db, s_count_call, &calls);
    bf_db_group_rollback(db);
    ASSERT_EQ(calls, 4);
    bf_db_destroy(&db);
}

static void test_commit_group(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE grouped (id int PRIMARY KEY)"), 0);
    char count_sql[128];
    snprintf(count_sql, sizeof count_sql, "SELECT count(*) AS n FROM %s.grouped", s_schema);
    ASSERT_EQ(bf_db_group_begin(db, 50, NULL), 0);
    ASSERT(bf_db_in_group(db));
    ASSERT_EQ(bf_db_group_begin(db, 50, NULL), -1); /* no nesting */
    /* member 1 commits its part */
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (1)"), 0);
    ASSERT_EQ(bf_db_request_commit(db), 0);
    /* member 2 fails in its handler's own transaction: only its work goes */
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT(bf_db_in_tx(db));
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (2)"), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (1)"), -1); /* duplicate */
    ASSERT_EQ(bf_db_rollback(db), 0);
    bf_db_request_rollback(db);
    /* member 3 fails with no handler transaction: its commit says so and
     * undoes it, leaving the group usable */
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (3)"), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (1)"), -1);
    ASSERT_EQ(bf_db_request_commit(db), -1);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "23505");
    /* member 4 */
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (4)"), 0);
    ASSERT_EQ(bf_db_request_commit(db), 0);
    /* nothing visible to others before the one commit */
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 0);
    ASSERT_EQ(bf_db_group_commit(db), 0);
    ASSERT(!bf_db_in_group(db));
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 2); /* 1 and 4 */
    /* the lock timeout holds inside the group only */
    ASSERT_EQ(bf_db_begin(s_admin), 0);
    char lock_sql[160];
    snprintf(lock_sql, sizeof lock_sql, "SELECT id AS n FROM %s.grouped WHERE id = 1 FOR UPDATE",
             s_schema);
    ASSERT_EQ(s_scalar(s_admin, lock_sql, 0, NULL), 1);
    ASSERT_EQ(bf_db_group_begin(db, 20, NULL), 0);
    ASSERT_EQ(bf_db_request_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "UPDATE grouped SET id = 11 WHERE id = 1"), -1);
    ASSERT_STR_EQ(bf_db_sqlstate(db), "55P03");
    bf_db_request_rollback(db);
    bf_db_group_rollback(db);
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(bf_db_rollback(s_admin), 0);
    /* a prologue runs first, in the group's transaction: its lock is held
     * until the group ends; one with a ';' is refused and opens nothing */
    ASSERT_EQ(bf_db_group_begin(db, 50, "SELECT 1; DROP TABLE grouped"), -1);
    ASSERT(!bf_db_in_tx(db));
    char prologue[128], nowait[160];
    snprintf(prologue, sizeof prologue, "SELECT id FROM %s.grouped WHERE id = 4 FOR UPDATE",
             s_schema);
    snprintf(nowait, sizeof nowait, "SELECT id FROM %s.grouped WHERE id = 4 FOR UPDATE NOWAIT",
             s_schema);
    ASSERT_EQ(bf_db_group_begin(db, 50, prologue), 0);
    ASSERT_EQ(bf_db_begin(s_admin), 0);
    ASSERT_EQ(bf_db_cmd(s_admin, nowait), -1);
    ASSERT_STR_EQ(bf_db_sqlstate(s_admin), "55P03");
    ASSERT_EQ(bf_db_rollback(s_admin), 0);
    ASSERT_EQ(bf_db_group_commit(db), 0);
    ASSERT_EQ(bf_db_cmd(s_admin, nowait), 0); /* released with the group */
    /* a group with a failed statement outside any member cannot commit */
    ASSERT_EQ(bf_db_group_begin(db, 50, NULL), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO grouped VALUES (4)"), -1);
    ASSERT_EQ(bf_db_group_commit(db), -1);
    ASSERT_EQ(s_scalar(s_admin, count_sql, 0, NULL), 2);
    bf_db_destroy(&db);
}

static void test_connection_lost_inside_transaction(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    ASSERT_EQ(bf_db_cmd(db, "CREATE TABLE lost (id int)"), 0);
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO lost VALUES (1)"), 0);
    ASSERT_EQ(s_kill_backend(s_backend_pid(db)), 0);
    /* the next statement fails, and no reconnect happens inside the transaction */
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO lost VALUES (2)"), -1);
    ASSERT(bf_db_is_down(db));
    ASSERT_EQ(bf_db_ensure(db), -1);
    ASSERT(bf_db_exec(db, "SELECT 1", 0, NULL) == NULL);
    /* the commit must not report success for a transaction that died */
    ASSERT_EQ(bf_db_commit(db), -1);
    ASSERT(!bf_db_in_tx(db));
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.lost", s_schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 0);
    /* outside the transaction, the next call reconnects */
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM lost", 0, NULL), 0);
    ASSERT(!bf_db_is_down(db));

    /* the same with rollback: a no-op that leaves the handle usable */
    ASSERT_EQ(bf_db_begin(db), 0);
    ASSERT_EQ(s_kill_backend(s_backend_pid(db)), 0);
    ASSERT_EQ(bf_db_cmd(db, "INSERT INTO lost VALUES (3)"), -1);
    ASSERT_EQ(bf_db_rollback(db), 0);
    ASSERT(!bf_db_in_tx(db));
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM lost", 0, NULL), 0);
    bf_db_destroy(&db);
}

static void test_reconnect_resets_prepared(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    const char *p[] = {"20"};
    PGresult *res = bf_db_prep(db, "plus_one", "SELECT $1::int + 1 AS n", 1, p, NULL, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT_EQ(bf_db_int(res, 0, "n"), 21);
        PQclear(res);
    }
    long long pid = s_backend_pid(db);
    ASSERT(pid > 0);
    ASSERT_EQ(s_kill_backend(pid), 0);
    /* the first statement after the kill fails and marks the connection down */
    res = bf_db_prep(db, "plus_one", "SELECT $1::int + 1 AS n", 1, p, NULL, NULL);
    ASSERT(res == NULL);
    if (res) PQclear(res);
    ASSERT(bf_db_is_down(db));
    ASSERT(bf_db_errmsg(db)[0] != '\0');
    /* ensure reconnects (a new backend, the session settings again) */
    ASSERT_EQ(bf_db_ensure(db), 0);
    ASSERT(!bf_db_is_down(db));
    long long pid2 = s_backend_pid(db);
    ASSERT(pid2 > 0 && pid2 != pid);
    res = bf_db_exec(db, "SELECT current_setting('search_path') AS sp", 0, NULL);
    ASSERT(res != NULL);
    if (res) {
        ASSERT(strncmp(bf_db_str(res, 0, "sp") ? bf_db_str(res, 0, "sp") : "", s_schema,
                       strlen(s_schema)) == 0);
        PQclear(res);
    }
    /* the statement cache was reset: the name is prepared again on the new
     * connection instead of failing with "prepared statement does not exist" */
    res = bf_db_prep(db, "plus_one", "SELECT $1::int + 1 AS n", 1, p, NULL, NULL);
    ASSERT(res != NULL);
    if (!res) fprintf(stderr, "  %s\n", bf_db_errmsg(db));
    if (res) {
        ASSERT_EQ(bf_db_int(res, 0, "n"), 21);
        PQclear(res);
    }

    /* without an explicit ensure: the statement after the failing one
     * reconnects by itself */
    ASSERT_EQ(s_kill_backend(pid2), 0);
    res = bf_db_prep(db, "plus_one", "SELECT $1::int + 1 AS n", 1, p, NULL, NULL);
    ASSERT(res == NULL);
    res = bf_db_prep(db, "plus_one", "SELECT $1::int + 1 AS n", 1, p, NULL, NULL);
    ASSERT(res != NULL);
    if (res) PQclear(res);
    bf_db_destroy(&db);
}

static void test_column_helpers(void)
{
    bf_db_t *db = s_connect(NULL);
    ASSERT(db != NULL);
    if (!db) return;
    PGresult *res = bf_db_exec(db,
                               "SELECT 'x'::text AS s, ''::text AS empty, NULL::text AS nothing, "
                               "'-9223372036854775808'::bigint AS min, 42 AS n, "
                               "true AS yes, false AS no, NULL::bool AS unknown",
                               0, NULL);
    ASSERT(res != NULL);
    if (!res) {
        bf_db_destroy(&db);
        return;
    }
    ASSERT_STR_EQ(bf_db_str(res, 0, "s"), "x");
    ASSERT_STR_EQ(bf_db_str(res, 0, "empty"), ""); /* empty is not NULL */
    ASSERT(!bf_db_null(res, 0, "empty"));
    ASSERT(bf_db_null(res, 0, "nothing"));
    ASSERT(bf_db_int(res, 0, "min") == INT64_MIN);
    ASSERT_EQ(bf_db_int(res, 0, "n"), 42);
    ASSERT(bf_db_bool(res, 0, "yes"));
    ASSERT(!bf_db_bool(res, 0, "no"));
    ASSERT(!bf_db_bool(res, 0, "unknown"));
    ASSERT(bf_db_null(res, 0, "unknown"));
    /* column lookup is by name, whatever the position */
    PGresult *res2 = bf_db_exec(db, "SELECT 1 AS b, 2 AS a", 0, NULL);
    ASSERT(res2 != NULL);
    if (res2) {
        ASSERT_EQ(bf_db_int(res2, 0, "a"), 2);
        ASSERT_EQ(bf_db_int(res2, 0, "b"), 1);
        PQclear(res2);
    }
    PQclear(res);
    bf_db_destroy(&db);
}

/* Runs fn(db) with stderr in a temp file; returns what was written (caller
 * frees) or NULL. */
static char *s_capture_stderr(void (*fn)(bf_db_t *), bf_db_t *db)
{
    fflush(stderr);
    FILE *f = tmpfile();
    if (!f) return NULL;
    int saved = dup(STDERR_FILENO);
    dup2(fileno(f), STDERR_FILENO);
    fn(db);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fileno(f), 0, SEEK_END);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    ssize_t n = buf ? pread(fileno(f), buf, (size_t)size, 0) : -1;
    fclose(f);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void s_make_notices(bf_db_t *db)
{
    bf_log_init("test_db", BF_DEBUG);
    bf_db_cmd(db, "DROP TABLE IF EXISTS no_such_table_for_notice"); /* NOTICE */
    bf_db_cmd(db, "ROLLBACK"); /* WARNING: there is no transaction in progress */
    bf_log_init("test_db", BF_ERROR);
}

static void test_notices_are_json_log_lines(void)
{
    bf_db_t *db = s_connect(s_schema);
    ASSERT(db != NULL);
    if (!db) return;
    char *out = s_capture_stderr(s_make_notices, db);
    ASSERT(out != NULL);
    if (!out) {
        bf_db_destroy(&db);
        return;
    }
    int lines = 0, notice = 0, warning = 0;
    for (char *p = out; *p;) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_error_t jerr;
        json_t *o = json_loadb(p, len, 0, &jerr);
        if (!o || !json_is_object(o)) {
            BF_FAIL_AT("not a JSON log line: %.*s", (int)len, p);
        } else {
            const char *msg = json_string_value(json_object_get(o, "msg"));
            const char *lvl = json_string_value(json_object_get(o, "level"));
            if (msg && strstr(msg, "no_such_table_for_notice")) notice++;
            if (msg && strstr(msg, "no transaction in progress") && lvl &&
                strcmp(lvl, "warn") == 0)
                warning++;
        }
        json_decref(o);
        lines++;
        if (!nl) break;
        p = nl + 1;
    }
    ASSERT(lines >= 2);
    ASSERT_EQ(notice, 1);
    ASSERT_EQ(warning, 1);
    free(out);
    bf_db_destroy(&db);
}

/* ---------------------------------------------------------- migrations */

static int s_lock_is_free(const char *schema)
{
    const char *p[] = {schema};
    long long got = s_scalar(s_admin,
                             "SELECT pg_try_advisory_lock(hashtext('bangfu.migrate.' || $1))::int "
                             "AS n",
                             1, p);
    if (got == 1)
        s_scalar(s_admin,
                 "SELECT pg_advisory_unlock(hashtext('bangfu.migrate.' || $1))::int AS n", 1, p);
    return got == 1;
}

static void test_migrations_once(void)
{
    bf_db_t *db = s_connect(s_mig_schema);
    ASSERT(db != NULL);
    if (!db) return;
    const bf_migration_t v1[] = {
        {"001_init", "CREATE TABLE village (id int PRIMARY KEY, name text NOT NULL);\n"
                     "CREATE TABLE town (id int PRIMARY KEY);"},
        {"002_seed", "INSERT INTO village VALUES (1, '东里'), (2, '西庄');"},
        {NULL, NULL},
    };
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, v1), 2);
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, v1), 0); /* applied once */
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM village", 0, NULL), 2);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.schema_migrations", s_mig_schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 2);
    ASSERT(s_lock_is_free(s_mig_schema));
    /* a later release adds one: only that one runs */
    const bf_migration_t v2[] = {
        v1[0],
        v1[1],
        {"003_more", "INSERT INTO village VALUES (3, '南沟');"},
        {NULL, NULL},
    };
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, v2), 1);
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, v2), 0);
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM village", 0, NULL), 3);
    /* an empty list and a NULL list apply nothing */
    const bf_migration_t none[] = {{NULL, NULL}};
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, none), 0);
    ASSERT_EQ(bf_db_migrate(db, s_mig_schema, NULL), 0);
    /* a second connection sees them as applied */
    bf_db_t *other = s_connect(s_mig_schema);
    ASSERT(other != NULL);
    if (other) {
        ASSERT_EQ(bf_db_migrate(other, s_mig_schema, v2), 0);
        bf_db_destroy(&other);
    }
    bf_db_destroy(&db);
}

static void test_failing_migration(void)
{
    char schema[80];
    snprintf(schema, sizeof schema, "%s_fail", s_mig_schema);
    bf_db_t *db = s_connect(schema);
    ASSERT(db != NULL);
    if (!db) return;
    const bf_migration_t bad[] = {
        {"001_ok", "CREATE TABLE a (x int);"},
        {"002_broken", "CREATE TABLE b (x int);\nINSERT INTO a VALUES (1);\nSELECT 1/0;"},
        {"003_never", "CREATE TABLE c (x int);"},
        {NULL, NULL},
    };
    ASSERT_EQ(bf_db_migrate(db, schema, bad), -1);
    ASSERT(strstr(bf_db_errmsg(db), "002_broken") != NULL);
    ASSERT(strstr(bf_db_errmsg(db), "division by zero") != NULL);
    ASSERT(!bf_db_in_tx(db));
    ASSERT(s_lock_is_free(schema)); /* released on failure too */
    /* 001 stays applied; 002 left nothing behind; 003 never ran */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.schema_migrations", schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 1);
    const char *p[] = {schema};
    ASSERT_EQ(s_scalar(s_admin, "SELECT count(*) AS n FROM information_schema.tables "
                                "WHERE table_schema = $1 AND table_name IN ('b', 'c')",
                       1, p),
              0);
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM a", 0, NULL), 0);
    /* fixed in the next release: 002 and 003 apply */
    const bf_migration_t fixed[] = {
        bad[0],
        {"002_broken", "CREATE TABLE b (x int);\nINSERT INTO a VALUES (1);"},
        bad[2],
        {NULL, NULL},
    };
    ASSERT_EQ(bf_db_migrate(db, schema, fixed), 2);
    ASSERT_EQ(s_scalar(db, "SELECT count(*) AS n FROM a", 0, NULL), 1);
    bf_db_destroy(&db);
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", schema);
    ASSERT_EQ(bf_db_cmd(s_admin, sql), 0);
}

typedef struct {
    pthread_barrier_t *start;
    int applied;
    char err[256];
} s_race_t;

static const bf_migration_t s_race_list[] = {
    {"001_log", "CREATE TABLE runs (step int NOT NULL, backend int NOT NULL "
                "DEFAULT pg_backend_pid());"},
    {"002_slow", "INSERT INTO runs (step) VALUES (2); SELECT pg_sleep(0.2);"},
    {"003_more", "INSERT INTO runs (step) VALUES (3);"},
    {"004_last", "INSERT INTO runs (step) VALUES (4); SELECT pg_sleep(0.05);"},
    {NULL, NULL},
};

static void *s_race_main(void *arg)
{
    s_race_t *r = arg;
    bf_db_t *db = bf_db_new(s_dsn, s_race_schema);
    if (!db || bf_db_connect(db, 3) != 0) {
        r->applied = -2;
        pthread_barrier_wait(r->start);
        bf_db_destroy(&db);
        return NULL;
    }
    pthread_barrier_wait(r->start);
    r->applied = bf_db_migrate(db, s_race_schema, s_race_list);
    if (r->applied < 0) snprintf(r->err, sizeof r->err, "%s", bf_db_errmsg(db));
    bf_db_destroy(&db);
    return NULL;
}

static void test_concurrent_migrate(void)
{
    enum { T = 4 };
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, T);
    s_race_t r[T];
    pthread_t th[T];
    memset(r, 0, sizeof r);
    for (int i = 0; i < T; i++) {
        r[i].start = &start;
        pthread_create(&th[i], NULL, s_race_main, &r[i]);
    }
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        if (r[i].applied < 0) BF_FAIL_AT("thread %d: migrate gave %d: %s", i, r[i].applied,
                                         r[i].err);
        else total += r[i].applied;
    }
    pthread_barrier_destroy(&start);
    ASSERT_EQ(total, 4); /* each migration applied by exactly one thread */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.runs", s_race_schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 3);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT step) AS n FROM %s.runs", s_race_schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s.schema_migrations", s_race_schema);
    ASSERT_EQ(s_scalar(s_admin, sql, 0, NULL), 4);
    ASSERT(s_lock_is_free(s_race_schema));
}

/* ------------------------------------------------------------- main */

static void s_drop_schemas(void)
{
    const char *names[] = {s_schema, s_mig_schema, s_race_schema};
    for (int i = 0; i < 3; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", names[i]);
        if (bf_db_cmd(s_admin, sql) != 0)
            fprintf(stderr, "  cleanup: %s: %s\n", sql, bf_db_errmsg(s_admin));
    }
}

int main(void)
{
    bf_log_init("test_db", BF_ERROR); /* keep migration/connect chatter out */
    s_dsn = getenv("BANGFU_PG_DSN");
    if (s_dsn && !*s_dsn) s_dsn = NULL;
    RUN(environment);
    if (!s_dsn) return TEST_REPORT();

    int pid = (int)getpid();
    snprintf(s_schema, sizeof s_schema, "t_db_%d", pid);
    snprintf(s_mig_schema, sizeof s_mig_schema, "t_db_%d_mig", pid);
    snprintf(s_race_schema, sizeof s_race_schema, "t_db_%d_race", pid);
    s_admin = s_connect(NULL);
    RUN(admin_connection);
    if (!s_admin) return TEST_REPORT();
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", s_schema);
    if (bf_db_cmd(s_admin, sql) != 0) fprintf(stderr, "  %s\n", bf_db_errmsg(s_admin));

    RUN(connect);
    RUN(connect_refused);
    RUN(params_and_nulls);
    RUN(prepared_reuse);
    RUN(many_prepared_statements);
    RUN(errors_and_sqlstate);
    RUN(transactions);
    RUN(after_commit);
    RUN(commit_group);
    RUN(connection_lost_inside_transaction);
    RUN(reconnect_resets_prepared);
    RUN(column_helpers);
    RUN(notices_are_json_log_lines);
    RUN(migrations_once);
    RUN(failing_migration);
    RUN(concurrent_migrate);

    s_drop_schemas();
    bf_db_destroy(&s_admin);
    return TEST_REPORT();
}
