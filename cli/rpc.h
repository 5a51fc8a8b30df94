/* rpc: the command line's RPC client, with several calls in flight.
 *
 * Speaks docs/protocol.md exactly as bf_client does (a DEALER socket sends an
 * empty delimiter frame, then the request map {v, id, method, params, actor};
 * replies are matched by id), with two differences the CLI needs:
 *   - a reply keeps its own copy of the frame's bytes. msgpack_unpack_next()
 *     does not copy strings: they point into the buffer it was given, so the
 *     buffer must live as long as the unpacked object (a reply read after its
 *     zmq_msg_t is closed shows garbage once ZeroMQ reuses the memory, which
 *     it does for frames over its 8 KiB receive batch);
 *   - sending and receiving are separate, so `bangfu import` can keep several
 *     household.import batches in flight on one socket.
 * Not thread-safe; one client per thread.
 */
#ifndef CLI_RPC_H
#define CLI_RPC_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct cli_rpc cli_rpc_t;

typedef struct {
    msgpack_unpacked msg;         /* the reply map; its strings point into buf */
    char *buf;                    /* the reply frame (owned) */
    char id[64];                  /* the reply's request id, "" if none */
    bool ok;
    const msgpack_object *result; /* when ok (may be NULL for nil) */
    const msgpack_object *error;  /* when !ok and the service answered */
    char code[32];                /* error code; "unavailable" when nobody answered */
    char message[512];
    char field[128];
} cli_reply_t;

/* A client connected (lazily, as ZeroMQ does) to endpoint, or to every
 * endpoint of a comma-separated list (requests round-robin over them, as
 * bf_client does); NULL if an endpoint is malformed or memory runs out. */
cli_rpc_t *cli_rpc_new(const char *endpoint);

/* Closes the socket, frees; NULLs *self_p; safe on NULL. */
void cli_rpc_destroy(cli_rpc_t **self_p);

/* Sends one request; params is one packed msgpack map (NULL/0: empty map),
 * actor may be NULL. id (at least 40 bytes) receives the request id.
 * Returns 0, or -1 if the socket refused it. */
int cli_rpc_send(cli_rpc_t *c, const char *method, const char *params, size_t params_len,
                 const char *actor, char *id);

/* Waits up to wait_ms for one reply. Returns 1 with *reply filled (free it
 * with cli_reply_destroy), 0 if none came, -1 if a malformed frame came
 * (dropped; *reply untouched). */
int cli_rpc_recv(cli_rpc_t *c, long wait_ms, cli_reply_t *reply);

/* Sends and waits up to timeout_ms for the reply with the same id (others
 * are dropped). Returns 0 with *reply filled, or -1 with reply->code
 * "unavailable" and reply->message saying why. Either way the caller calls
 * cli_reply_destroy. */
int cli_rpc_call(cli_rpc_t *c, const char *method, const char *params, size_t params_len,
                 const char *actor, long timeout_ms, cli_reply_t *reply);

/* An empty reply, safe to destroy. */
void cli_reply_init(cli_reply_t *reply);

/* Frees what the reply holds and empties it; safe to call twice. */
void cli_reply_destroy(cli_reply_t *reply);

#endif
