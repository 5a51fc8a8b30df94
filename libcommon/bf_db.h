/* bf_db: PostgreSQL access through libpq.
 *
 * One bf_db_t is one connection, owned by one thread. It connects with retry
 * and backoff, remembers which statements it has prepared (and forgets them
 * when the connection is re-made), runs statements only with parameters
 * (never spliced into SQL), keeps the last error's SQLSTATE and message, and
 * applies a service's numbered migrations once, under an advisory lock, so
 * several instances starting together never race. Every PGresult returned is
 * the caller's to PQclear.
 */
#ifndef BF_DB_H
#define BF_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct bf_db bf_db_t;

typedef struct {
    const char *name; /* "001_init": applied in array order, once */
    const char *sql;  /* one or more statements */
} bf_migration_t;

/* Returns a handle for dsn whose sessions use search_path "schema, public"
 * (schema may be NULL); does not connect yet. NULL if out of memory. */
bf_db_t *bf_db_new(const char *dsn, const char *schema);

/* Closes and frees; NULLs *self_p; safe on NULL. */
void bf_db_destroy(bf_db_t **self_p);

/* The role and password to log in with, overriding the DSN's (libpq's
 * PQconnectdbParams with expand_dbname: later keywords win). NULL or "" keeps
 * the DSN's. Takes effect at the next connect. Returns 0, or -1 if out of
 * memory. The password is wiped from memory when the handle is destroyed. */
int bf_db_set_login(bf_db_t *db, const char *user, const char *password);

/* The role set by bf_db_set_login (NULL: the DSN's). */
const char *bf_db_user(const bf_db_t *db);

/* Connects, trying up to attempts times with backoff (100 ms doubling to 2 s).
 * Returns 0, or -1 (bf_db_errmsg says why). */
int bf_db_connect(bf_db_t *db, int attempts);

/* Makes sure the connection is up, reconnecting once if it broke (and never
 * inside a transaction). Returns 0 or -1. */
int bf_db_ensure(bf_db_t *db);

/* The raw connection (NULL if never connected). Borrowed. */
PGconn *bf_db_conn(bf_db_t *db);

/* Runs sql with text parameters (NULL entries are SQL NULL). Returns a result
 * with status COMMAND_OK or TUPLES_OK (caller PQclears it), or NULL on error. */
PGresult *bf_db_exec(bf_db_t *db, const char *sql, int nparams, const char *const *params);

/* As bf_db_exec, through a statement prepared once per connection under name.
 * lengths/formats may be NULL (all text); format 1 means binary (bytea). */
PGresult *bf_db_prep(bf_db_t *db, const char *name, const char *sql, int nparams,
                     const char *const *params, const int *lengths, const int *formats);

/* Runs sql with no parameters and no result wanted. Returns 0 or -1. */
int bf_db_cmd(bf_db_t *db, const char *sql);

/* Transactions. begin/commit/rollback return 0 or -1; rollback is a no-op
 * outside a transaction. bf_db_begin_serializable uses SERIALIZABLE. */
int bf_db_begin(bf_db_t *db);
int bf_db_commit(bf_db_t *db);
int bf_db_rollback(bf_db_t *db);
bool bf_db_in_tx(const bf_db_t *db);

/* The request transaction (docs/protocol.md, request keys). The dispatcher
 * opens one transaction around a whole write so that the request key's claim,
 * the handler's changes and the stored reply commit together. Inside it a
 * handler's bf_db_begin / commit / rollback become SAVEPOINT / RELEASE /
 * ROLLBACK TO (a handler's rollback undoes only its own work), and
 * bf_db_in_tx tells whether the handler's own part is open. Statements that
 * must start a transaction (SET TRANSACTION ISOLATION) do not fit inside: the
 * methods that use them are reads, never wrapped. request_begin returns -1 if
 * a transaction is already open. */
int bf_db_request_begin(bf_db_t *db);
int bf_db_request_commit(bf_db_t *db);
void bf_db_request_rollback(bf_db_t *db);
bool bf_db_in_request_tx(const bf_db_t *db);

/* Commit groups (docs/performance.md, "Writes that share commits"). The RPC
 * worker runs several queued write requests in one transaction so that they
 * share one commit (one WAL flush). group_begin opens it (BEGIN, and
 * SET LOCAL lock_timeout so a member never waits long for a lock another
 * transaction holds: it fails with 55P03 and is run again alone after the
 * group). Inside a group, request_begin is SAVEPOINT bf_request and
 * request_commit / request_rollback release it or roll back to it, so one
 * request's failure undoes only its own work; a handler's own
 * begin / commit / rollback nest inside as before. group_commit commits the
 * lot (-1 if the COMMIT failed or the transaction had been aborted: then
 * nothing of any member was kept); group_rollback abandons it. prologue, if
 * not NULL, is one statement (no ';', at most 400 bytes) run right after BEGIN,
 * before the lock timeout applies: the lock that orders a service's writes
 * (funds: its ledger head), taken once for the whole group and waited for as
 * long as a lone write would wait. */
int bf_db_group_begin(bf_db_t *db, long lock_timeout_ms, const char *prologue);

/* Asks for fn(arg) to run once the open transaction has committed
 * (bf_db_commit, bf_db_group_commit, bf_db_request_commit outside a group),
 * in the calling thread, after the server confirmed the COMMIT; not at all
 * if it rolls back or the connection is lost. In a commit group it runs when
 * the group commits, even if only this member's savepoint was undone. With no
 * transaction open (the last statement committed on its own) fn runs at once.
 * One callback per transaction: a later call replaces an earlier one. */
void bf_db_after_commit(bf_db_t *db, void (*fn)(void *), void *arg);

/* Whether prologue is acceptable to bf_db_group_begin: not NULL, no ';', at
 * most BF_DB_PROLOGUE_MAX bytes. A server refuses to start with one that is
 * not (bf_rpc_server_new). */
#define BF_DB_PROLOGUE_MAX 400
bool bf_db_prologue_ok(const char *prologue);
int bf_db_group_commit(bf_db_t *db);
void bf_db_group_rollback(bf_db_t *db);
bool bf_db_in_group(const bf_db_t *db);

/* The last error: SQLSTATE ("" if none or a connection error), message, and
 * whether the connection itself is down. */
const char *bf_db_sqlstate(const bf_db_t *db);
const char *bf_db_errmsg(const bf_db_t *db);
bool bf_db_is_down(bf_db_t *db);
/* Forgets the last error (so a later check sees only what came after). */
void bf_db_clear_error(bf_db_t *db);

/* Applies migrations not yet recorded in <schema>.schema_migrations, each in
 * its own transaction, holding a session advisory lock named after the schema
 * for the whole run. The list ends with a {NULL, NULL} entry. Returns the
 * number applied, or -1. */
int bf_db_migrate(bf_db_t *db, const char *schema, const bf_migration_t *list);

/* Column helpers, by name: the text value (NULL if SQL NULL or no such
 * column), an int64 (0 if NULL), and whether the value is NULL. */
const char *bf_db_str(const PGresult *res, int row, const char *col);
int64_t bf_db_int(const PGresult *res, int row, const char *col);
bool bf_db_null(const PGresult *res, int row, const char *col);
bool bf_db_bool(const PGresult *res, int row, const char *col);

#endif
