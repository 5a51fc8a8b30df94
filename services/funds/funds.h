/* funds: the service that owns the money (docs/funds.md).
 *
 * Fund sources, yearly budgets per recipient, allocation of a budget across
 * many recipients, projects with staged (tranche) disbursement, batch
 * disbursement, reversals, reports and traces, all on one double-entry ledger
 * that nobody can bend:
 *
 * - Every movement of money is one row of `transfer` between two accounts, in
 *   integer fen. Rows are never updated or deleted (a trigger refuses it); a
 *   correction is a reversing transfer naming the reversed one, once.
 * - Each account has a floor (0 for sources, budgets, projects, recipients;
 *   none for the external accounts money enters from). Balances are cached in
 *   `account.balance_fen`, changed only by funds_ledger_append() in the same
 *   transaction as the transfers, checked against the floor there, and
 *   re-derived from the ledger by ledger.verify.
 * - The ledger is a hash chain: each entry stores the previous entry's hash
 *   and SHA-256(previous hash || canonical content). Appends are serialised by
 *   locking the one `ledger_head` row, so the chain order is total and every
 *   money transaction sees every earlier one committed.
 * - Every write carries a request_key (funds_idem_*): a retry with the same
 *   params replays the first result; different params are `conflict`.
 * - What transfers depend on (an account's kind, ref, floor; a tranche's
 *   request and approval) cannot be UPDATEd (triggers) and is recorded in a
 *   second hash chain, the evidence chain (evidence.c), that ledger.verify
 *   compares every row with.
 * - allocation.apply and disbursement.batch run in chunks of
 *   funds.chunk_rows, each its own transaction; their whole is held on the
 *   payer (account.held_fen) meanwhile and a retry with the same request_key
 *   resumes them (progress in allocation / batch_run).
 *
 * Lock order in a money transaction, always: the request key row, then the
 * ledger head, then entity rows (tranche, batch), then account rows (in id
 * order). Transactions that do not move money lock at most one account row.
 */
#ifndef FUNDS_H
#define FUNDS_H

#include "bf_outbox.h"
#include "bf_rpc.h"

#include <libpq-fe.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FUNDS_SERVICE "funds"
#define FUNDS_KEY_MAX 128     /* bytes of a request_key / batch_key */
#define FUNDS_RECIPIENT_MAX 128 /* bytes of a recipient reference */
#define FUNDS_MAX_RECIPIENTS 200000 /* allocation list */
#define FUNDS_MAX_LINES 20000 /* disbursement batch lines */
#define FUNDS_HASH_LEN 32
#define FUNDS_HASH_FIELDS 15
#define FUNDS_EV_FIELDS 16 /* fields of an evidence entry's hash */

/* ---- scope.c ------------------------------------------------------------ */

/* A caller bound to a region sees and changes only projects located under it
 * (and their tranches); everything else in funds is county-wide. Each returns
 * 0, or not_found (read) / permission_denied (write) naming field. */
int funds_scope_location(bf_req_t *r, const char *location, bool write, const char *field,
                         const char *what, int64_t id);
int funds_scope_project(bf_req_t *r, int64_t id, bool write, const char *field);
/* Planning, approving or disbursing tranche id (a write). */
int funds_scope_tranche(bf_req_t *r, int64_t id, const char *field);

/* ---- util.c ------------------------------------------------------------- */

/* 0 if s is a recipient reference ("region:120110000000", "village:42",
 * "household:7", "person:9", "unit:3", "program:公益岗位"), else -1. */
int funds_recipient_check(const char *s);

/* Reads a required/optional recipient reference parameter; as bf_req_str. */
int funds_req_recipient(bf_req_t *r, const msgpack_object *in, const char *prefix,
                        const char *key, bool required, const char **out);

/* Reads an amount in fen: an integer in [min, INT64_MAX]; a float, a
 * negative or an overflowing value is invalid_argument naming the field. */
int funds_req_amount(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, int64_t min, int64_t *out);

/* Reads a positive entity id. */
int funds_req_id(bf_req_t *r, const char *key, bool required, int64_t *out);

/* Reads a year 2000..2100. */
int funds_req_year(bf_req_t *r, const char *key, bool required, int *out);

/* Hex of n bytes into out (2n+1 bytes). */
void funds_hex(const unsigned char *bytes, size_t n, char *out);
/* Parses "\\x<hex>" or "<hex>" of exactly n bytes. Returns 0 or -1. */
int funds_unhex(const char *s, unsigned char *out, size_t n);

/* Formats fen as yuan ("1234.56") into the arena. */
const char *funds_yuan(bf_req_t *r, int64_t fen);

/* Gets are one statement: a list in a get's reply comes as a JSON array
 * column (json_agg of json_build_object in the reply's keys and order; NULL
 * means []) and is appended to r->out as msgpack by this. 0, or -1 with the
 * request failed (internal). */
int funds_pack_json_list(bf_req_t *r, const PGresult *res, int row, const char *col);


/* Growing PostgreSQL array literals ("{1,2,NULL}", "{\"a\",\"b\"}") built in
 * a msgpack_sbuffer (malloc'd: funds_arr_free on every path). */
typedef struct {
    msgpack_sbuffer buf;
    size_t n;
} funds_arr_t;
void funds_arr_init(funds_arr_t *a);
void funds_arr_int(funds_arr_t *a, int64_t v, bool null);
void funds_arr_text(funds_arr_t *a, const char *s); /* NULL packs NULL */
/* Closes the literal and returns it NUL-terminated (owned by a). */
const char *funds_arr_end(funds_arr_t *a);
void funds_arr_free(funds_arr_t *a);

/* weights.c: an allocation's recipients and weights from the registry's
 * region.figures, as weights_from {region_code, level?, measure} asks. 0 with
 * *names, *weights (arena) and *n >= 1, or -1 with the request failed
 * (invalid_argument / not_found naming weights_from..., failed_precondition if
 * nothing is counted, unavailable if the registry does not answer). */
int funds_weights_from(bf_req_t *r, const msgpack_object *wf, const char ***names,
                       int64_t **weights, size_t *n);

/* Emits "bangfu.funds.<what>" with subject in the open transaction. */
int funds_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject);

/* ---- idem.c: request keys ---------------------------------------------- */

typedef struct {
    const char *key;
    unsigned char params_hash[FUNDS_HASH_LEN];
} funds_idem_t;

/* Reads request_key, hashes method + actor + params (canonically: map keys
 * sorted, request_key left out), opens the transaction and claims the key.
 * Returns 0: go on (transaction open, key claimed); 1: this key was already
 * used with the same params, the first result is packed into r->out and the
 * transaction is closed; -1: error (conflict if the params differ). */
int funds_idem_begin(bf_req_t *r, funds_idem_t *idem);

/* As funds_idem_begin, for an operation applied in chunks (allocation.apply):
 * also returns 2, with no transaction open, when the key was claimed with the
 * same params by an operation that has not finished (a crash or a concurrent
 * retry): the caller continues it. */
int funds_idem_begin_resumable(bf_req_t *r, funds_idem_t *idem);

/* Stores the result packed so far in r->out with the key, then commits.
 * Returns 0 or -1. */
int funds_idem_commit(bf_req_t *r, funds_idem_t *idem);


/* ---- ledger.c ----------------------------------------------------------- */

/* The chain head, locked for the rest of the transaction. */
typedef struct {
    int64_t last_id;
    unsigned char last_hash[FUNDS_HASH_LEN];
    char now[40]; /* the entries' created_at, "YYYY-MM-DDTHH:MM:SS.ffffffZ" */
} funds_head_t;

/* One transfer to append. 0 / NULL = none for the optional fields. */
typedef struct {
    int64_t from, to, amount;
    const char *kind; /* receipt funding allocation project_funding disbursement reversal */
    int year;
    int64_t budget_id, project_id, source_id, reverses_id;
    const char *ref, *note;
    int64_t id; /* out: the id it got */
} funds_xfer_t;

/* Locks the ledger head (the transaction must be open). Returns 0 or -1. */
int funds_ledger_lock(bf_req_t *r, funds_head_t *head);

/* Appends n transfers in order (one statement), moves the cached balances of
 * every account involved, checks each account's floor and int64 overflow, and
 * advances the head. On a floor violation: failed_precondition naming field;
 * on overflow: invalid_argument naming field. Returns 0 or -1. */
int funds_ledger_append(bf_req_t *r, funds_head_t *head, funds_xfer_t *x, size_t n,
                        const char *request_key, const char *field);

/* The hash of one entry from its fields as text (NULL = SQL NULL), in the
 * order: id, from_account, to_account, amount_fen, kind, year, budget_id,
 * project_id, source_id, ref, note, request_key, reverses_id, actor,
 * created_at. */
void funds_entry_hash(const unsigned char prev[FUNDS_HASH_LEN],
                      const char *const fields[FUNDS_HASH_FIELDS],
                      unsigned char out[FUNDS_HASH_LEN]);

/* The chained hash both hash chains (ledger, evidence) use: SHA-256 over the
 * previous hash, the chain's tag and the n fields, each written as
 * "<length>:<text>," (NULL as "~,"), so no two field lists hash alike. */
void funds_chain_field(EVP_MD_CTX *ctx, const char *s);
void funds_chain_hash(EVP_MD_CTX *ctx, const char *tag, const unsigned char prev[FUNDS_HASH_LEN],
                      const char *const *fields, int n, unsigned char out[FUNDS_HASH_LEN]);

/* Walking a chain to verify it (ledger.verify, the evidence chain, points.verify):
 * the caller reads the rows page by page in id order (columns id, prev_hash and
 * hash in hex, and the hashed fields) and hands each page to funds_chain_walk,
 * which checks that ids follow on, each prev_hash is the hash before it, and
 * each hash is the fields' hash. At the first problem it stops with bad_id,
 * problem (missing | damaged | broken_link | altered) and a message naming
 * `what`; else last and running are the last entry's id and hash. */
#define FUNDS_CHAIN_MAX_FIELDS 24
typedef struct {
    const char *tag;          /* the chain's tag (funds_chain_hash) */
    const char *what;         /* "entry", "evidence entry": messages name it */
    const char *const *cols;  /* the hashed fields' columns, in hash order */
    int ncols;                /* 1..FUNDS_CHAIN_MAX_FIELDS */
    int64_t last;             /* id of the last entry found good; 0 at the start */
    unsigned char running[FUNDS_HASH_LEN]; /* its hash; zeros at the start */
    int64_t bad_id;
    const char *problem; /* NULL while none */
    const char *message;
} funds_chain_walk_t;
void funds_chain_walk(bf_req_t *r, EVP_MD_CTX *ctx, funds_chain_walk_t *w, const PGresult *res);

/* Creates an account; returns its id or 0 (request failed). */
int64_t funds_account_create(bf_req_t *r, const char *kind, const char *ref, const char *name);

/* Balance of an account (cached), -1 on error with r->err set. */
int funds_account_balance(bf_req_t *r, int64_t account, int64_t *balance);

/* Balance less what a running allocation holds on it (what may be spent). */
int funds_account_available(bf_req_t *r, int64_t account, int64_t *available);

/* Net money that came into an account: transfers in, less reversals of them. */
int funds_account_net_in(bf_req_t *r, int64_t account, int64_t *net_in);

int ledger_verify(bf_req_t *r);
int account_get(bf_req_t *r);
int transfer_get(bf_req_t *r);
int transfer_reverse(bf_req_t *r);

/* ---- evidence.c: the evidence chain (accounts, approvals) --------------- */

/* Chains every account created and every tranche approved by the open
 * transaction (evidence_pending), locking the head if there are any. Called
 * by every write just before it commits (funds_idem_commit, chunk commits).
 * Returns 0 or -1. */
int funds_evidence_flush(bf_req_t *r);

typedef struct {
    int64_t head_id, entries, bad_id;
    char head_hash[2 * FUNDS_HASH_LEN + 1];
    const char *problem, *message; /* NULL: the chain verifies */
    PGresult *diffs; /* rows (tbl, id, entry_id, col, expected, found); PQclear it */
} funds_ev_result_t;

/* Re-walks the evidence chain and compares accounts and approved tranches
 * with their chained records, in the caller's snapshot. Returns 0 (out
 * filled; out->diffs to PQclear) or -1. */
int funds_evidence_verify(bf_req_t *r, funds_ev_result_t *out);
/* Packs out->diffs as an array of {table, id, column, expected, found,
 * evidence_id}. */
void funds_evidence_pack_diffs(msgpack_packer *pk, const PGresult *diffs);

/* The published head: SHA-256 of netstrings("bangfu.funds.head.v1",
 * ledger id, ledger hash hex, evidence id, evidence hash hex), as hex. */
void funds_head_hash(int64_t ledger_id, const char *ledger_hash, int64_t ev_id,
                     const char *ev_hash, char out[2 * FUNDS_HASH_LEN + 1]);

/* ---- source.c ----------------------------------------------------------- */
int source_create(bf_req_t *r);
int source_receive(bf_req_t *r);
int source_get(bf_req_t *r);
int source_list(bf_req_t *r);

/* ---- budget.c ----------------------------------------------------------- */
int budget_create(bf_req_t *r);
int budget_fund(bf_req_t *r);
int budget_get(bf_req_t *r);
int allocation_preview(bf_req_t *r);
int allocation_apply(bf_req_t *r);

/* Largest-remainder split of amount by weights (n > 0, sum of weights W > 0
 * and <= INT64_MAX): parts[i] = floor(amount * w[i] / W), plus one fen each
 * to the `amount - sum` recipients with the largest remainders, ties broken
 * by name (bytewise ascending). The parts always sum to amount. names are
 * the recipients' references. Returns 0, or -1 if out of memory. */
int funds_split(int64_t amount, const int64_t *weights, const char *const *names, size_t n,
                int64_t weight_sum, int64_t *parts);

/* ---- project.c ---------------------------------------------------------- */
int project_create(bf_req_t *r);
int project_get(bf_req_t *r);
int tranche_plan(bf_req_t *r);
int tranche_approve(bf_req_t *r);
int tranche_disburse(bf_req_t *r);

/* ---- batch.c ------------------------------------------------------------ */
int disbursement_batch(bf_req_t *r);

/* ---- list.c ------------------------------------------------------------- */
int budget_list(bf_req_t *r);
int project_list(bf_req_t *r);

/* ---- report.c ----------------------------------------------------------- */
int report_utilisation(bf_req_t *r);
int trace_recipient(bf_req_t *r);

/* ---- points.c: the points supermarket (爱心超市) ----------------------- */
int points_rule_define(bf_req_t *r);
int points_rule_list(bf_req_t *r);
int points_earn(bf_req_t *r);
int points_approve(bf_req_t *r);
int points_reject(bf_req_t *r);
int goods_define(bf_req_t *r);
int goods_stock_in(bf_req_t *r);
int goods_list(bf_req_t *r);
int points_redeem(bf_req_t *r);
int points_reverse(bf_req_t *r);
int points_account(bf_req_t *r);
int points_statement(bf_req_t *r);
int points_verify(bf_req_t *r);

#endif
