/* bf_client: a synchronous RPC client for bangfu services.
 *
 * Used by the CLI and by services that ask another service (tasks asks the
 * registry whether an id exists). A DEALER socket sends an empty delimiter
 * frame and the request map, so the server sees what a REQ client would send,
 * but a timeout does not wedge the socket: a late reply to an abandoned
 * request is recognised by its id and dropped. Not thread-safe: one client per
 * thread.
 */
#ifndef BF_CLIENT_H
#define BF_CLIENT_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct bf_client bf_client_t;

typedef struct {
    msgpack_unpacked msg;           /* with buf, owns everything below */
    char *buf;                      /* the reply frame: decoded strings point into it */
    bool ok;
    const msgpack_object *result;   /* when ok */
    const msgpack_object *error;    /* when !ok: {code, message, field} */
    char code[32];                  /* error code, or "" */
    char message[512];
    char field[128];
} bf_reply_t;

/* Connects (lazily, as ZeroMQ does) to endpoint, or to each of a
 * comma-separated list of endpoints ("tcp://a:7101,tcp://b:7101"): requests
 * are then spread over the instances that are connected (a DEALER socket
 * round-robins), which is how a client reaches several instances of a
 * service. NULL if out of memory or an endpoint is malformed or empty.
 *
 * The socket authenticates with CURVE (docs/security.md) unless
 * security.mode=plaintext: server_name ("registry", "bus") names the server's
 * public key <keys.dir>/<server_name>.pub, and the process identity (a
 * service's own name; the CLI's $BANGFU_PRINCIPAL) its own key pair. NULL
 * (logged) if a key file is missing. */
bf_client_t *bf_client_open(const char *server_name, const char *endpoint, int timeout_ms);

/* The same as identity (a key pair name in keys.dir) instead of the process
 * identity (bf_keys_identity()). */
bf_client_t *bf_client_open_as(const char *server_name, const char *identity,
                               const char *endpoint, int timeout_ms);

/* A client WITHOUT authentication, whatever the security mode: only for a
 * server in security.mode=plaintext and for tests of refused handshakes. */
bf_client_t *bf_client_new(const char *endpoint, int timeout_ms);
void bf_client_destroy(bf_client_t **self_p);

/* Sends {v:1, id, method, params, actor} where params is one packed msgpack
 * map (NULL/0 = empty map) and actor may be NULL. Waits up to the timeout.
 * Returns 0 with *reply filled (free it with bf_reply_destroy), or -1 on
 * timeout or a malformed reply (reply->code is "unavailable" or "internal"
 * and reply->message says why; still call bf_reply_destroy). */
int bf_client_call(bf_client_t *c, const char *method, const char *params, size_t params_len,
                   const char *actor, bf_reply_t *reply);

/* The same, for a principal that acts for others (the gateway): auth is one
 * packed msgpack map {roles: [str], region: str, cadre_id: int} describing the
 * person named by actor (docs/security.md); NULL/0 = none. */
int bf_client_call_as(bf_client_t *c, const char *method, const char *params,
                      size_t params_len, const char *actor, const char *auth, size_t auth_len,
                      bf_reply_t *reply);

/* Sends a raw frame as the request body (for tests of malformed input). */
int bf_client_call_raw(bf_client_t *c, const char *body, size_t len, bf_reply_t *reply);

void bf_reply_destroy(bf_reply_t *reply);

#endif
