/* bf_db: PostgreSQL connection, statements, transactions, migrations. */
#include "bf_db.h"
#include "bf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BF_DB_MAX_PREPARED 512

struct bf_db {
    char *dsn;
    char *schema;
    char *user;     /* overrides the DSN's user (NULL: the DSN's) */
    char *password; /* overrides the DSN's password (NULL: the DSN's / libpq's) */
    PGconn *conn;
    bool in_tx;
    bool request_tx; /* the dispatcher's per-request transaction is open */
    bool group;      /* a commit group's transaction is open (in_tx is set too) */
    /* in a group, round trips saved (bf_db_group_begin): */
    bool release_pending; /* a finished member's RELEASE is not sent yet */
    bool sp_fresh;        /* the member's savepoint was just set, nothing ran since */
    bool handler_alias;   /* the handler's savepoint is the member's (nothing between) */
    int depth;       /* inside it: 1 while a handler's begin is a savepoint */
    void (*after_commit)(void *); /* bf_db_after_commit, for the open transaction */
    void *after_commit_arg;
    char sqlstate[6];
    char errmsg[512];
    char *prepared[BF_DB_MAX_PREPARED];
    int nprepared;
};

static void s_forget_prepared(bf_db_t *db)
{
    for (int i = 0; i < db->nprepared; i++) free(db->prepared[i]);
    db->nprepared = 0;
}

bf_db_t *bf_db_new(const char *dsn, const char *schema)
{
    bf_db_t *db = calloc(1, sizeof *db);
    if (!db) return NULL;
    db->dsn = strdup(dsn ? dsn : "");
    db->schema = schema ? strdup(schema) : NULL;
    if (!db->dsn || (schema && !db->schema)) {
        free(db->dsn);
        free(db->schema);
        free(db);
        return NULL;
    }
    return db;
}

void bf_db_destroy(bf_db_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_db_t *db = *self_p;
    if (db->conn) PQfinish(db->conn);
    s_forget_prepared(db);
    free(db->dsn);
    free(db->schema);
    free(db->user);
    if (db->password) explicit_bzero(db->password, strlen(db->password));
    free(db->password);
    free(db);
    *self_p = NULL;
}

int bf_db_set_login(bf_db_t *db, const char *user, const char *password)
{
    char *u = user && *user ? strdup(user) : NULL;
    char *p = password && *password ? strdup(password) : NULL;
    if ((user && *user && !u) || (password && *password && !p)) {
        free(u);
        free(p);
        return -1;
    }
    free(db->user);
    if (db->password) explicit_bzero(db->password, strlen(db->password));
    free(db->password);
    db->user = u;
    db->password = p;
    return 0;
}

const char *bf_db_user(const bf_db_t *db) { return db->user; }

static void s_set_err(bf_db_t *db, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", st ? st : "");
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (!m || !*m) m = db->conn ? PQerrorMessage(db->conn) : "not connected";
    snprintf(db->errmsg, sizeof db->errmsg, "%s", m);
    size_t n = strlen(db->errmsg);
    while (n && (db->errmsg[n - 1] == '\n' || db->errmsg[n - 1] == ' ')) db->errmsg[--n] = 0;
}

/* Server notices (NOTICE, WARNING) go through bf_log: libpq's default prints
 * them raw on stderr, which would break the one-JSON-object-per-line log. */
static void s_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    bf_log_level_t level = sev && strcmp(sev, "WARNING") == 0 ? BF_WARN : BF_DEBUG;
    bf_log(level, "postgresql %s: %s", sev ? sev : "notice", msg ? msg : "");
}

static int s_connect_once(bf_db_t *db)
{
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    s_forget_prepared(db);
    db->in_tx = false;
    db->request_tx = false;
    db->group = false;
    db->release_pending = db->sp_fresh = db->handler_alias = false;
    db->depth = 0;
    db->after_commit = NULL; /* the old session's transaction is gone */
    /* the DSN first, expanded (expand_dbname); a role and password set with
     * bf_db_set_login come later, so they override the DSN's */
    const char *keys[4] = {"dbname", NULL, NULL, NULL};
    const char *vals[4] = {db->dsn, NULL, NULL, NULL};
    int k = 1;
    if (db->user) {
        keys[k] = "user";
        vals[k++] = db->user;
    }
    if (db->password) {
        keys[k] = "password";
        vals[k++] = db->password;
    }
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        s_set_err(db, NULL);
        return -1;
    }
    PQsetNoticeReceiver(db->conn, s_notice, NULL);
    if (db->schema) {
        /* the schema name is ours (a service name), never user input; still
         * quote it as an identifier */
        char *ident = PQescapeIdentifier(db->conn, db->schema, strlen(db->schema));
        if (!ident) {
            s_set_err(db, NULL);
            return -1;
        }
        char sql[256];
        snprintf(sql, sizeof sql, "SET search_path TO %s, public", ident);
        PQfreemem(ident);
        PGresult *r = PQexec(db->conn, sql);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) s_set_err(db, r);
        PQclear(r);
        if (!ok) return -1;
    }
    PGresult *r = PQexec(db->conn, "SET TIME ZONE 'UTC'");
    PQclear(r);
    db->sqlstate[0] = 0;
    db->errmsg[0] = 0;
    return 0;
}

int bf_db_connect(bf_db_t *db, int attempts)
{
    long delay_ms = 100;
    for (int i = 0; i < attempts; i++) {
        if (s_connect_once(db) == 0) return 0;
        if (i + 1 < attempts) {
            bf_log(BF_WARN, "postgresql not reachable (attempt %d/%d): %s", i + 1, attempts,
                   db->errmsg);
            struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            delay_ms = delay_ms * 2 > 2000 ? 2000 : delay_ms * 2;
        }
    }
    return -1;
}

int bf_db_ensure(bf_db_t *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK) return 0;
    if (db->in_tx) return -1;
    return s_connect_once(db);
}

PGconn *bf_db_conn(bf_db_t *db) { return db->conn; }

bool bf_db_is_down(bf_db_t *db) { return !db->conn || PQstatus(db->conn) != CONNECTION_OK; }

static PGresult *s_check(bf_db_t *db, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    s_set_err(db, res);
    PQclear(res);
    return NULL;
}

static int s_cmd(bf_db_t *db, const char *sql);

/* Before a caller's statement: in a group, the previous member's RELEASE
 * goes first, and the member's savepoint is no longer fresh. */
static int s_pre(bf_db_t *db)
{
    db->sp_fresh = false;
    if (!db->release_pending) return 0;
    db->release_pending = false;
    return s_cmd(db, "RELEASE SAVEPOINT bf_request");
}

PGresult *bf_db_exec(bf_db_t *db, const char *sql, int nparams, const char *const *params)
{
    if (s_pre(db) != 0) return NULL;
    if (bf_db_ensure(db) != 0) {
        s_set_err(db, NULL);
        return NULL;
    }
    PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    return s_check(db, res);
}

PGresult *bf_db_prep(bf_db_t *db, const char *name, const char *sql, int nparams,
                     const char *const *params, const int *lengths, const int *formats)
{
    if (s_pre(db) != 0) return NULL;
    if (bf_db_ensure(db) != 0) {
        s_set_err(db, NULL);
        return NULL;
    }
    int found = 0;
    for (int i = 0; i < db->nprepared; i++) {
        if (strcmp(db->prepared[i], name) == 0) {
            found = 1;
            break;
        }
    }
    if (!found) {
        /* a statement prepared on the server must be remembered, or the next
         * call would prepare the name again and fail (42P05) */
        char *copy = db->nprepared < BF_DB_MAX_PREPARED ? strdup(name) : NULL;
        if (!copy) {
            /* table full: run it unnamed from now on (correct, just slower) */
            return s_check(db, PQexecParams(db->conn, sql, nparams, NULL, params, lengths,
                                            formats, 0));
        }
        PGresult *p = PQprepare(db->conn, name, sql, nparams, NULL);
        if (!s_check(db, p)) {
            free(copy);
            return NULL;
        }
        PQclear(p);
        db->prepared[db->nprepared++] = copy;
    }
    PGresult *res = PQexecPrepared(db->conn, name, nparams, params, lengths, formats, 0);
    return s_check(db, res);
}

int bf_db_cmd(bf_db_t *db, const char *sql)
{
    if (s_pre(db) != 0) return -1;
    return s_cmd(db, sql);
}

/* bf_db_cmd without s_pre: for the transaction machinery itself. */
static int s_cmd(bf_db_t *db, const char *sql)
{
    if (bf_db_ensure(db) != 0) {
        s_set_err(db, NULL);
        return -1;
    }
    PGresult *res = s_check(db, PQexec(db->conn, sql));
    if (!res) return -1;
    PQclear(res);
    return 0;
}

/* True if a statement failed in the open transaction and nothing rolled
 * back to a savepoint since (libpq knows without a round trip). */
static bool s_tx_failed(bf_db_t *db)
{
    return db->conn && PQtransactionStatus(db->conn) == PQTRANS_INERROR;
}

/* The transaction ended: runs the after-commit callback if it committed,
 * and forgets it either way. */
static void s_tx_ended(bf_db_t *db, bool committed)
{
    void (*fn)(void *) = db->after_commit;
    db->after_commit = NULL;
    if (committed && fn) fn(db->after_commit_arg);
}

void bf_db_after_commit(bf_db_t *db, void (*fn)(void *), void *arg)
{
    if (!fn) return;
    if (!db->conn || PQtransactionStatus(db->conn) == PQTRANS_IDLE) {
        fn(arg); /* the statement before it committed on its own */
        return;
    }
    db->after_commit = fn;
    db->after_commit_arg = arg;
}

int bf_db_begin(bf_db_t *db)
{
    if (db->request_tx) {
        /* inside the request's transaction a handler's transaction is a
         * savepoint: its rollback undoes only its own work */
        if (db->depth > 0) return 0;
        if (db->group && db->sp_fresh) {
            /* nothing ran since the member's savepoint: it serves */
            db->handler_alias = true;
            db->depth = 1;
            return 0;
        }
        if (bf_db_cmd(db, "SAVEPOINT bf_handler") != 0) return -1;
        db->depth = 1;
        return 0;
    }
    if (db->in_tx) return 0;
    if (s_cmd(db, "BEGIN") != 0) return -1;
    db->in_tx = true;
    return 0;
}

int bf_db_commit(bf_db_t *db)
{
    if (db->request_tx) {
        if (db->depth == 0) return 0;
        db->depth = 0;
        if (db->handler_alias) {
            db->handler_alias = false;
            if (!s_tx_failed(db)) return 0;
            if (!db->sqlstate[0]) snprintf(db->sqlstate, sizeof db->sqlstate, "25P02");
            return -1;
        }
        /* fails if a statement in the savepoint failed (the transaction is
         * then aborted), as a real COMMIT would have rolled back */
        return s_cmd(db, "RELEASE SAVEPOINT bf_handler");
    }
    if (!db->in_tx) return 0;
    db->in_tx = false;
    /* never reconnect here: a new session has no transaction to commit, and
     * its COMMIT would "succeed" with a warning */
    if (bf_db_is_down(db)) {
        s_tx_ended(db, false);
        s_set_err(db, NULL);
        return -1;
    }
    PGresult *res = s_check(db, PQexec(db->conn, "COMMIT"));
    if (!res) {
        s_tx_ended(db, false);
        return -1;
    }
    /* a transaction in which a statement failed ends in ROLLBACK, which the
     * server reports as a successful command */
    bool committed = strcmp(PQcmdStatus(res), "COMMIT") == 0;
    PQclear(res);
    s_tx_ended(db, committed);
    if (!committed) {
        snprintf(db->errmsg, sizeof db->errmsg,
                 "transaction rolled back: a statement in it had failed");
        if (!db->sqlstate[0]) snprintf(db->sqlstate, sizeof db->sqlstate, "25P02");
        return -1;
    }
    return 0;
}

int bf_db_rollback(bf_db_t *db)
{
    if (db->request_tx) {
        if (db->depth == 0) return 0;
        db->depth = 0;
        if (db->handler_alias) {
            db->handler_alias = false;
            s_cmd(db, "ROLLBACK TO SAVEPOINT bf_request");
            return 0;
        }
        if (s_cmd(db, "ROLLBACK TO SAVEPOINT bf_handler") != 0) return 0;
        s_cmd(db, "RELEASE SAVEPOINT bf_handler");
        return 0;
    }
    if (!db->in_tx) return 0;
    db->in_tx = false;
    s_tx_ended(db, false);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) return 0;
    PGresult *res = PQexec(db->conn, "ROLLBACK");
    PQclear(res);
    return 0;
}

bool bf_db_in_tx(const bf_db_t *db) { return db->request_tx ? db->depth > 0 : db->in_tx; }

int bf_db_request_begin(bf_db_t *db)
{
    if (db->request_tx) return -1;
    if (db->group) {
        /* one request of a commit group: its own savepoint in the group's
         * transaction, so its failure undoes only its own work; the previous
         * member's RELEASE travels in the same round trip */
        const char *sql = db->release_pending ? "RELEASE SAVEPOINT bf_request; SAVEPOINT bf_request"
                                              : "SAVEPOINT bf_request";
        db->release_pending = false;
        if (s_cmd(db, sql) != 0) return -1;
        db->sp_fresh = true;
    } else {
        if (db->in_tx) return -1;
        if (bf_db_begin(db) != 0) return -1;
    }
    db->request_tx = true;
    db->depth = 0;
    db->handler_alias = false;
    return 0;
}

/* In a group: drops the member's savepoint's work; the savepoint itself is
 * released lazily, with the next member's. */
static void s_request_undo(bf_db_t *db)
{
    db->sp_fresh = false;
    if (bf_db_is_down(db)) return;
    if (s_cmd(db, "ROLLBACK TO SAVEPOINT bf_request") == 0) db->release_pending = true;
}

int bf_db_request_commit(bf_db_t *db)
{
    if (!db->request_tx) return -1;
    db->request_tx = false;
    db->depth = 0;
    db->handler_alias = false;
    if (db->group) {
        if (!s_tx_failed(db)) {
            /* RELEASE goes with the next member's SAVEPOINT, or not at all
             * (COMMIT releases) */
            db->release_pending = true;
            db->sp_fresh = false;
            return 0;
        }
        /* a statement in it failed and nothing rolled it back: undo the
         * member's part and say so, keeping that statement's error */
        char st[6], msg[sizeof db->errmsg];
        memcpy(st, db->sqlstate, sizeof st);
        memcpy(msg, db->errmsg, sizeof msg);
        if (!st[0]) snprintf(st, sizeof st, "25P02");
        s_request_undo(db);
        memcpy(db->sqlstate, st, sizeof st);
        memcpy(db->errmsg, msg, sizeof msg);
        return -1;
    }
    return bf_db_commit(db);
}

void bf_db_request_rollback(bf_db_t *db)
{
    if (!db->request_tx) return;
    db->request_tx = false;
    db->depth = 0;
    db->handler_alias = false;
    if (db->group) {
        s_request_undo(db);
        return;
    }
    bf_db_rollback(db);
}

bool bf_db_prologue_ok(const char *prologue)
{
    return prologue && strlen(prologue) <= BF_DB_PROLOGUE_MAX && !strchr(prologue, ';');
}

int bf_db_group_begin(bf_db_t *db, long lock_timeout_ms, const char *prologue)
{
    if (db->in_tx || db->request_tx || db->group) return -1;
    if (prologue && !bf_db_prologue_ok(prologue)) return -1;
    char sql[512];
    /* the prologue runs before the members' lock timeout applies: it waits
     * for its lock as long as a lone write would */
    snprintf(sql, sizeof sql, "BEGIN; %s%sSET LOCAL lock_timeout = %ld", prologue ? prologue : "",
             prologue ? "; " : "", lock_timeout_ms > 0 ? lock_timeout_ms : 0);
    if (s_cmd(db, sql) != 0) {
        if (db->conn && PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
            PGresult *res = PQexec(db->conn, "ROLLBACK");
            PQclear(res);
        }
        return -1;
    }
    db->in_tx = true;
    db->group = true;
    db->release_pending = db->sp_fresh = db->handler_alias = false;
    return 0;
}

int bf_db_group_commit(bf_db_t *db)
{
    if (!db->group) return -1;
    db->group = false;
    db->request_tx = false;
    db->release_pending = db->sp_fresh = db->handler_alias = false;
    db->depth = 0;
    if (s_tx_failed(db)) {
        /* a statement outside every member's savepoint failed */
        char st[6];
        memcpy(st, db->sqlstate, sizeof st);
        bf_db_rollback(db);
        snprintf(db->sqlstate, sizeof db->sqlstate, "%s", st[0] ? st : "25P02");
        return -1;
    }
    /* COMMIT waits for locks too (a transaction that sent NOTIFY takes the
     * database's notification lock at commit, one committer at a time): the
     * members' short lock_timeout must not fail the whole group there. One
     * round trip: both statements in one simple query. */
    db->in_tx = false;
    if (bf_db_is_down(db)) {
        s_tx_ended(db, false);
        s_set_err(db, NULL);
        return -1;
    }
    PGresult *res = s_check(db, PQexec(db->conn, "SET LOCAL lock_timeout = 0; COMMIT"));
    bool committed = res && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (res) PQclear(res);
    s_tx_ended(db, committed);
    if (!committed && db->conn && PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(db->conn, "ROLLBACK");
        PQclear(rb);
    }
    if (!committed && res) {
        snprintf(db->errmsg, sizeof db->errmsg,
                 "transaction rolled back: a statement in it had failed");
        if (!db->sqlstate[0]) snprintf(db->sqlstate, sizeof db->sqlstate, "25P02");
    }
    return committed ? 0 : -1;
}

void bf_db_group_rollback(bf_db_t *db)
{
    if (!db->group) return;
    db->group = false;
    db->request_tx = false;
    db->release_pending = db->sp_fresh = db->handler_alias = false;
    db->depth = 0;
    bf_db_rollback(db);
}

bool bf_db_in_group(const bf_db_t *db) { return db && db->group; }

void bf_db_clear_error(bf_db_t *db)
{
    db->sqlstate[0] = 0;
    db->errmsg[0] = 0;
}

bool bf_db_in_request_tx(const bf_db_t *db) { return db->request_tx; }
const char *bf_db_sqlstate(const bf_db_t *db) { return db->sqlstate; }
const char *bf_db_errmsg(const bf_db_t *db) { return db->errmsg; }

int bf_db_migrate(bf_db_t *db, const char *schema, const bf_migration_t *list)
{
    int applied = 0;
    char sql[512];
    if (bf_db_ensure(db) != 0) return -1;
    char *ident = PQescapeIdentifier(db->conn, schema, strlen(schema));
    if (!ident) return -1;
    const char *lockp[] = {schema};
    PGresult *r = bf_db_exec(db, "SELECT pg_advisory_lock(hashtext('bangfu.migrate.' || $1))",
                             1, lockp);
    if (!r) {
        PQfreemem(ident);
        return -1;
    }
    PQclear(r);
    /* A service's role owns its schema (made by the bootstrap, docs/security.md)
     * but may not create schemas: CREATE SCHEMA IF NOT EXISTS checks that
     * right even when the schema exists, so it runs only when it is missing
     * (a superuser's development database). */
    r = bf_db_exec(db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, lockp);
    if (!r) goto fail;
    int have_schema = PQntuples(r) > 0;
    PQclear(r);
    if (!have_schema) {
        snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", ident);
        if (bf_db_cmd(db, sql) != 0) goto fail;
    }
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
             " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
             ident);
    if (bf_db_cmd(db, sql) != 0) goto fail;
    for (const bf_migration_t *m = list; m && m->name; m++) {
        snprintf(sql, sizeof sql, "SELECT 1 FROM %s.schema_migrations WHERE name = $1", ident);
        const char *p[] = {m->name};
        r = bf_db_exec(db, sql, 1, p);
        if (!r) goto fail;
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done) continue;
        if (bf_db_begin(db) != 0) goto fail;
        if (bf_db_cmd(db, m->sql) != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", db->errmsg);
            bf_db_rollback(db);
            snprintf(db->errmsg, sizeof db->errmsg, "migration %s: %s", m->name, msg);
            goto fail;
        }
        snprintf(sql, sizeof sql, "INSERT INTO %s.schema_migrations (name) VALUES ($1)", ident);
        r = bf_db_exec(db, sql, 1, p);
        if (!r) {
            bf_db_rollback(db);
            goto fail;
        }
        PQclear(r);
        if (bf_db_commit(db) != 0) goto fail;
        bf_log(BF_INFO, "applied migration %s.%s", schema, m->name);
        applied++;
    }
    r = bf_db_exec(db, "SELECT pg_advisory_unlock(hashtext('bangfu.migrate.' || $1))", 1, lockp);
    if (r) PQclear(r);
    PQfreemem(ident);
    return applied;
fail:
    {
        char keep[512];
        snprintf(keep, sizeof keep, "%s", db->errmsg);
        r = bf_db_exec(db, "SELECT pg_advisory_unlock(hashtext('bangfu.migrate.' || $1))", 1,
                       lockp);
        if (r) PQclear(r);
        snprintf(db->errmsg, sizeof db->errmsg, "%s", keep);
    }
    PQfreemem(ident);
    return -1;
}

const char *bf_db_str(const PGresult *res, int row, const char *col)
{
    int c = PQfnumber(res, col);
    if (c < 0 || row >= PQntuples(res) || PQgetisnull(res, row, c)) return NULL;
    return PQgetvalue(res, row, c);
}

int64_t bf_db_int(const PGresult *res, int row, const char *col)
{
    const char *v = bf_db_str(res, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

bool bf_db_null(const PGresult *res, int row, const char *col)
{
    return bf_db_str(res, row, col) == NULL;
}

bool bf_db_bool(const PGresult *res, int row, const char *col)
{
    const char *v = bf_db_str(res, row, col);
    return v && v[0] == 't';
}
