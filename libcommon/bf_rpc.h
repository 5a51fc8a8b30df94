/* bf_rpc: the RPC server every bangfu service runs (docs/protocol.md).
 *
 * Wire contract. A service binds one ZeroMQ ROUTER socket. The last frame of a
 * request is a msgpack map {v:1, id, method, params, actor}; every frame before
 * it is routing and is echoed back unchanged in front of the reply, so REQ
 * clients (empty delimiter) and DEALER clients both work. The reply is
 * {v:1, id, ok:true, result} or {v:1, id, ok:false, error:{code, message,
 * field}}. Frames larger than rpc.max_msg_bytes are refused by the socket
 * (ZMQ_MAXMSGSIZE).
 *
 * Methods are data: a service describes each one in a bf_method_t table (name,
 * handler, whether it writes, its parameters with type / required / bounds),
 * as Redis keeps its command table. One dispatcher checks the envelope and
 * every declared parameter before any handler runs: an unknown method, an
 * unknown parameter, a wrong type, a missing field, an over-long string or
 * list all get a typed error naming the field, and the handler never sees
 * them. Handlers therefore only check what the table cannot express (ranges,
 * formats, nested maps, cross-field rules).
 *
 * Concurrency. The main thread owns the ROUTER socket and hands each request
 * to the worker thread (of rpc.workers) that has been free longest, over an
 * inproc ROUTER the workers say READY to; it reads the socket only while a
 * worker is free (back-pressure), so a slow request never delays another
 * while a worker is idle. Replies that cannot be routed to their client are
 * counted (sys.stats unroutable_replies). Each worker has its own PostgreSQL
 * connection, Redis connection and request arena, so handlers never share
 * mutable state except through the database.
 *
 * Commit groups. When write requests are queued (every worker was busy), the
 * front hands up to rpc.group_max of them at once to one worker, which runs
 * them in one transaction, each in its own savepoint (bf_db_group_begin), and
 * sends every reply only after the one COMMIT returned: they share a WAL
 * flush. A member that fails rolls back to its savepoint only; one that waits
 * for a lock longer than rpc.group_lock_timeout_ms (or meets a deadlock or a
 * serialization failure) is rolled back and run again alone after the
 * group's commit. If the COMMIT fails, every member is answered
 * `unavailable` (nothing was kept; retry with the request key). Reads, sys.*,
 * methods whose table declares request_key (they keep their own) and methods
 * marked solo never join a group; a write that arrives while a worker is
 * free runs alone, as before. On stop (SIGTERM), the server
 * stops taking requests, lets in-flight ones finish (rpc.drain_ms), then
 * returns.
 */
#ifndef BF_RPC_H
#define BF_RPC_H

#include "bf_arena.h"
#include "bf_cfg.h"
#include "bf_db.h"
#include "bf_redis.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

/* Error codes: the only ones a reply ever carries. */
#define BF_E_INVALID "invalid_argument"
#define BF_E_NOT_FOUND "not_found"
#define BF_E_EXISTS "already_exists"
#define BF_E_CONFLICT "conflict"
#define BF_E_PRECONDITION "failed_precondition"
#define BF_E_PERMISSION "permission_denied"
#define BF_E_UNAUTHENTICATED "unauthenticated"
#define BF_E_EXHAUSTED "resource_exhausted"
#define BF_E_UNAVAILABLE "unavailable"
#define BF_E_INTERNAL "internal"

#define BF_RPC_VERSION 1
#define BF_RPC_MAX_ID 128    /* bytes of a request id */
#define BF_RPC_MAX_ACTOR 128 /* bytes of an actor */
#define BF_RPC_MAX_FRAMES 16 /* routing frames + body */

typedef struct {
    const char *code; /* one of BF_E_* ; NULL = no error */
    char message[512];
    char field[128]; /* "" = none (nil on the wire) */
} bf_err_t;

/* Parameter types of the method table. */
typedef enum {
    BF_T_STR,
    BF_T_INT, /* integer; a float is refused */
    BF_T_BOOL,
    BF_T_MAP,
    BF_T_LIST,
    BF_T_ANY,
} bf_type_t;

#define BF_REQ 1u /* required */

typedef struct {
    const char *name; /* NULL ends the list */
    bf_type_t type;
    unsigned flags; /* BF_REQ */
    int64_t max;    /* STR: max bytes (0 = rpc.max_string_bytes); LIST: max items
                       (0 = rpc.max_list); INT: unused */
    const char *doc;
} bf_param_t;

typedef struct bf_req bf_req_t;
typedef int (*bf_handler_fn)(bf_req_t *r);

/* Roles (docs/security.md). A principal holds a set of roles; each method
 * names the roles that may call it, and the dispatcher checks them before the
 * parameters, as Redis checks ACLs before a command runs. admin may call
 * every method. */
#define BF_ROLE_ADMIN (1u << 0)
#define BF_ROLE_OPERATOR (1u << 1) /* "county_operator": registry and tasks writes in its region */
#define BF_ROLE_FINANCE (1u << 2)  /* funds writes */
#define BF_ROLE_APPROVER (1u << 3) /* tranche approval */
#define BF_ROLE_AUDITOR (1u << 4)  /* reads; reveal with a reason */
#define BF_ROLE_CADRE (1u << 5)    /* own tasks, own inbox, own households read */
#define BF_ROLE_SERVICE (1u << 6)  /* other bangfu services */
#define BF_ROLE_SUBSCRIBER (1u << 7) /* events only */
#define BF_ROLE_ALL 0xffu
/* Every role that may read ordinary data (not subscriber). */
#define BF_ROLE_READERS                                                                  \
    (BF_ROLE_ADMIN | BF_ROLE_OPERATOR | BF_ROLE_FINANCE | BF_ROLE_APPROVER |          \
     BF_ROLE_AUDITOR | BF_ROLE_CADRE | BF_ROLE_SERVICE)

/* "county_operator" for BF_ROLE_OPERATOR, ...; NULL for anything but one bit. */
const char *bf_role_name(unsigned bit);
/* The bit of a role name, 0 if unknown. */
unsigned bf_role_parse(const char *name);
/* Writes the names of the roles in mask, comma-separated, into buf. */
void bf_role_list(unsigned mask, char *buf, size_t n);

typedef struct {
    const char *name; /* "household.create"; NULL ends the table */
    bf_handler_fn fn;
    unsigned char writes; /* false: a read; true: a write, which needs an actor and may
                             emit events; BF_WRITE_SOLO: a write that never shares a
                             commit group (bulk work) */
    const bf_param_t *params;
    const char *doc;
    unsigned roles;   /* BF_ROLE_* that may call it; admin always may (0 = admin only) */
} bf_method_t;

/* The `writes` value of a write that never joins a commit group: bulk work
 * (imports), admin operations (clock, scheduler ticks, assessments), and
 * writes with effects outside PostgreSQL after their commit (Redis queues,
 * HTTP), which must not be reported done before the group's commit. */
#define BF_WRITE_SOLO 2
/* The `writes` value of a write that keeps its own request key (its table
 * declares request_key, as every funds write does) and still shares commit
 * groups. Such a service sets group_prologue (bf_rpc_config_t) to the lock
 * that orders its writes, and a handler with more work than fits a group
 * asks to run alone (bf_req_alone). */
#define BF_WRITE_GROUP_KEYED 3

/* What a handler gets. It packs its result with r->out (exactly one object)
 * and returns 0, or fills r->err (bf_req_fail) and returns -1. Anything
 * allocated with r->arena dies with the request. If the handler returns with a
 * transaction still open it is rolled back. */
struct bf_req {
    const char *id;     /* request id, or NULL */
    const char *method;
    const char *actor;  /* who acts; always set for writes */
    const msgpack_object *params; /* a map (an empty one if absent) */
    msgpack_packer *out;
    bf_err_t err;
    bf_arena_t *arena;
    bf_db_t *db;
    bf_redis_t *redis;
    const bf_cfg_t *cfg;
    void *svc; /* the service's shared state (read-only or internally locked) */
    int worker; /* worker index */
    /* Who calls (docs/security.md), set by the dispatcher before a handler
     * runs. The actor above is the principal's name, or the person a gateway
     * acts for. */
    const char *principal; /* the authenticated principal ("" if none) */
    unsigned roles;        /* the caller's BF_ROLE_* */
    const char *region;    /* division code the caller is bound to; NULL = everywhere */
    int64_t cadre_id;      /* the cadre a cadre principal is; 0 = none */
    const char *peer;      /* the peer's IP address (ZMQ Peer-Address), "" if unknown */
    bool alone;            /* set by bf_req_alone: run again outside the commit group */
};

/* Inside a commit group, asks that this request be run again alone after the
 * group has committed (bulk work that would hold every other member's reply,
 * or that commits in chunks of its own): returns -1, and whatever the handler
 * did is rolled back and nothing is answered for this run. Outside a group it
 * does nothing and returns 0, so a handler calls it first:
 * `if (big && bf_req_alone(r) != 0) return -1;` */
int bf_req_alone(bf_req_t *r);

/* True if s (n bytes) has the actor syntax, which principal names share:
 * "admin", "cadre:42", "system:scheduler", "finance.zhang". */
bool bf_rpc_actor_ok(const char *s, size_t n);

/* True if the caller holds any of roles, or is admin. */
bool bf_req_has_role(const bf_req_t *r, unsigned roles);
/* True if the caller is bound to no region, or code (a 12-digit division
 * code) lies under its region. */
bool bf_req_in_region(const bf_req_t *r, const char *code);
/* The significant prefix of a 12-digit division code, for SQL `LIKE p || '%'`:
 * "12" for a province 120000000000, "1201" city, "120110" county,
 * "120110005" township, all 12 digits for a village. Written into out[13]. */
void bf_region_prefix(const char *code, char out[13]);
/* The caller's region prefix (bf_region_prefix of r->region) in the arena, or
 * NULL when the caller is bound to no region. */
const char *bf_req_region_prefix(bf_req_t *r);

/* Sets r->err and returns -1, so handlers can `return bf_req_fail(...)`.
 * field may be NULL. */
int bf_req_fail(bf_req_t *r, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Maps the last database error to an RPC error and returns -1: connection
 * lost -> unavailable; unique violation -> already_exists; serialization
 * failure / deadlock -> conflict; foreign key -> not_found; anything else ->
 * internal (details logged, not sent). */
int bf_req_db_fail(bf_req_t *r);

/* Typed parameter access for handlers, after the dispatcher's schema check.
 * `in` is the map to read (r->params or a nested map); `prefix` names that map
 * for error fields ("members[2]" makes field "members[2].id_number"); NULL for
 * top level. Strings are copied NUL-terminated into the arena, checked for
 * valid UTF-8 and no NUL bytes and max bytes (0 = rpc.max_string_bytes).
 * Each returns 0, 1 if absent and not required (out untouched), or -1 with
 * r->err set. */
int bf_req_str(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, size_t max, const char **out);
int bf_req_int(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, int64_t min, int64_t max, int64_t *out);
int bf_req_bool(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, bool *out);
int bf_req_list(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, size_t max, const msgpack_object_array **out);
int bf_req_map(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
               bool required, const msgpack_object **out);
/* A string that must be one of a NULL-terminated list of choices. */
int bf_req_enum(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                bool required, const char *const *choices, const char **out);
/* Builds a field name "prefix.key" or "key" in the arena. */
const char *bf_req_field(bf_req_t *r, const char *prefix, const char *key);
/* The decimal text of v in the arena ("-12", "42"), for $n parameters of a
 * statement; NULL if out of memory (which binds as SQL NULL). */
const char *bf_req_itoa(bf_req_t *r, int64_t v);
/* Appends column col of res's row as msgpack to out (the request's result
 * sbuffer, r->out->data, or a map being built), for a list or object a
 * statement built as JSON (json_agg, json_build_object): a NULL column is an
 * empty array. Returns 0, or -1 with r->err internal naming field, when the
 * database's JSON does not convert (deeper than bf_json allows). */
int bf_req_json_column(bf_req_t *r, msgpack_sbuffer *out, const PGresult *res, int row,
                       const char *col, const char *field);

/* Server. */
typedef struct bf_rpc_server bf_rpc_server_t;

typedef struct {
    const char *service;  /* "registry" */
    const char *version;  /* "0.1.0" */
    const char *bind;     /* "tcp://127.0.0.1:7101" */
    const bf_method_t *methods;
    const bf_cfg_t *cfg;  /* rpc.*, pg.dsn, redis.url */
    const char *schema;   /* the service's PostgreSQL schema (search_path) */
    void *svc;            /* handed to handlers as r->svc */
    /* Optional: called by every worker after its connections exist and before
     * its first request; return -1 to refuse to start. */
    int (*worker_init)(bf_req_t *ctx);
    /* Optional: one SQL statement each commit group runs first, before its
     * members' short lock timeout applies (bf_db_group_begin): the lock that
     * orders the service's writes, so that a group takes it once and waits
     * for it as a lone write would (funds: its ledger head). */
    const char *group_prologue;
} bf_rpc_config_t;

/* Binds and starts the workers. Returns NULL with a message logged on failure
 * (e.g. the address is in use). */
bf_rpc_server_t *bf_rpc_server_new(const bf_rpc_config_t *cfg);

/* Serves until *stop becomes non-zero (set by a signal handler), then drains
 * in-flight requests and stops the workers. Returns 0. */
int bf_rpc_server_run(bf_rpc_server_t *s, volatile int *stop);

/* Frees; NULLs *self_p; safe on NULL. */
void bf_rpc_server_destroy(bf_rpc_server_t **self_p);

/* For fuzzing and tests: a server with the method table and limits of cfg
 * but no sockets and no workers (free with bf_rpc_server_destroy), and one
 * request body run through the dispatcher exactly as a worker runs it (the
 * decode gate, envelope, caller and roles, parameter checks, request keys,
 * the handler, the reply), the reply appended to reply. r is a request
 * context the caller set up as a worker does (arena, db, redis, cfg, svc);
 * its arena is reset afterwards. */
bf_rpc_server_t *bf_rpc_server_detached(const bf_rpc_config_t *cfg);
void bf_rpc_dispatch(bf_rpc_server_t *s, bf_req_t *r, const char *principal, const char *data,
                     size_t len, msgpack_sbuffer *reply);

/* The one shared ZeroMQ context of the process (created on first use). */
void *bf_zmq_ctx(void);
void bf_zmq_ctx_term(void);

#endif
