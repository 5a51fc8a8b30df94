/* bf_idem: request keys, so a client may retry any write after a lost reply
 * or a timeout without doing it twice (docs/protocol.md, "Request keys").
 *
 * A write may carry params.request_key (1..128 bytes). The first request with
 * a key claims it (INSERT ... ON CONFLICT DO NOTHING into the service's
 * request_key table) inside the same transaction as its changes, and stores
 * its reply there before that transaction commits: so the claim, the change
 * and the stored reply exist together or not at all. A later request with the
 * same key and the same params (method, actor and params, hashed in a
 * canonical form: map keys sorted, nil = absent, request_key left out) gets the
 * stored reply without running again; with other params it gets `conflict`
 * naming request_key. Of concurrent requests with one key, one claims and the
 * others wait on its uncommitted row, then replay. A request that fails rolls
 * its claim back with everything else: errors are never replayed, a retry
 * runs afresh. Keys are kept rpc.request_key_ttl_s seconds (bf_idem_prune).
 *
 * The RPC dispatcher applies this to every write of every service
 * (bf_rpc.c); a method whose own parameter table declares request_key keeps
 * its key itself (funds, whose long operations commit in chunks).
 */
#ifndef BF_IDEM_H
#define BF_IDEM_H

#include "bf_db.h"
#include "bf_rpc.h"

#include <msgpack.h>
#include <stddef.h>

#define BF_IDEM_KEY_MAX 128
#define BF_IDEM_HASH_LEN 32

typedef struct {
    const char *key;
    unsigned char hash[BF_IDEM_HASH_LEN];
} bf_idem_t;

/* The request_key table; services apply it with the outbox's migrations. */
extern const bf_migration_t bf_idem_migrations[];

/* SHA-256 over the strings in pre (NULL-terminated, may be NULL) and o in a
 * canonical msgpack form: map keys sorted bytewise at every level, nil values
 * left out, and at the top level the key named skip (may be NULL) left out. */
void bf_idem_hash(const msgpack_object *o, const char *skip, const char *const *pre,
                  unsigned char out[BF_IDEM_HASH_LEN]);

/* Inside an open transaction, claims key for r (method, actor, params).
 * Returns 0: claimed, run the write; 1: the key was used before with the same
 * params, its stored reply has been packed into r->out (roll back and send
 * it); -1: r->err is set (conflict: used with other params; or a database
 * error). */
int bf_idem_claim(bf_req_t *r, const char *key, bf_idem_t *idem);

/* Stores the reply's result (one packed msgpack object) for the claimed key,
 * in the same transaction. 0 or -1 with r->err set. */
int bf_idem_store(bf_req_t *r, const bf_idem_t *idem, const char *result, size_t len);

/* Deletes up to limit keys older than ttl_s seconds; returns how many, or -1. */
int bf_idem_prune(bf_db_t *db, long long ttl_s, int limit);

#endif
