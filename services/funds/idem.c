/* idem.c: request keys, so a client may retry any write after a timeout.
 *
 * The key is claimed with INSERT ... ON CONFLICT DO NOTHING inside the write's
 * own transaction. Of many concurrent requests with one key, one inserts; the
 * others block on its uncommitted row, and when it commits they find the row,
 * compare the params hash and replay the stored result (or answer conflict).
 * If the first one fails, its transaction and its claim roll back, and the
 * next one proceeds as if it were first: errors are never replayed.
 *
 * The params hash covers the method, the actor and the params in a canonical
 * msgpack form (map keys sorted bytewise at every level, request_key left
 * out), so the order a client happens to write keys in does not matter: the
 * same hash as every other service's request keys (libcommon bf_idem_hash).
 * Funds keeps its own key table because its long operations commit in
 * chunks and resume by key (funds_idem_begin_resumable).
 */
#include "funds.h"
#include "bf_db.h"
#include "bf_idem.h"
#include "bf_mp.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(FUNDS_HASH_LEN == BF_IDEM_HASH_LEN, "one hash length for request keys");


int funds_idem_begin(bf_req_t *r, funds_idem_t *idem)
{
    int rc = funds_idem_begin_resumable(r, idem);
    if (rc == 2)
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "request key without a stored result");
    return rc;
}

int funds_idem_begin_resumable(bf_req_t *r, funds_idem_t *idem)
{
    if (bf_req_str(r, r->params, NULL, "request_key", true, FUNDS_KEY_MAX, &idem->key) != 0)
        return -1;
    if (!*idem->key)
        return bf_req_fail(r, BF_E_INVALID, "request_key", "request_key must not be empty");
    const char *pre[] = {r->method, r->actor ? r->actor : "", NULL};
    bf_idem_hash(r->params, "request_key", pre, idem->params_hash);

    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {idem->key, r->method, (const char *)idem->params_hash, r->actor};
    int lens[] = {0, 0, FUNDS_HASH_LEN, 0};
    int fmts[] = {0, 0, 1, 0};
    PGresult *res = bf_db_prep(r->db, "funds_idem_claim",
                               "INSERT INTO request (key, method, params_hash, actor) "
                               "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING 1",
                               4, p, lens, fmts);
    if (!res) return bf_req_db_fail(r);
    int claimed = PQntuples(res) == 1;
    PQclear(res);
    if (claimed) return 0;

    /* the key was used (and committed) before: same params -> replay */
    const char *kp[] = {idem->key};
    res = bf_db_prep(r->db, "funds_idem_read",
                     "SELECT params_hash, result FROM request WHERE key = $1", 1, kp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_CONFLICT, "request_key",
                           "request_key %s is being used by another request; retry", idem->key);
    }
    unsigned char stored[FUNDS_HASH_LEN];
    int same = funds_unhex(bf_db_str(res, 0, "params_hash"), stored, FUNDS_HASH_LEN) == 0 &&
               memcmp(stored, idem->params_hash, FUNDS_HASH_LEN) == 0;
    const char *result = bf_db_str(res, 0, "result");
    if (!same || !result) {
        PQclear(res);
        bf_db_rollback(r->db);
        if (!same)
            return bf_req_fail(r, BF_E_CONFLICT, "request_key",
                               "request_key %s was already used with different params",
                               idem->key);
        return 2; /* a chunked operation started with this key and not finished */
    }
    size_t len = 0;
    unsigned char *bytes = PQunescapeBytea((const unsigned char *)result, &len);
    PQclear(res);
    bf_db_rollback(r->db);
    if (!bytes) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    msgpack_sbuffer_write((msgpack_sbuffer *)r->out->data, (const char *)bytes, len);
    PQfreemem(bytes);
    return 1;
}

int funds_idem_commit(bf_req_t *r, funds_idem_t *idem)
{
    if (funds_evidence_flush(r) != 0) return -1;
    const msgpack_sbuffer *out = (const msgpack_sbuffer *)r->out->data;
    const char *p[] = {idem->key, out->data};
    int lens[] = {0, (int)out->size};
    int fmts[] = {0, 1};
    PGresult *res = bf_db_prep(r->db, "funds_idem_store",
                               "UPDATE request SET result = $2 WHERE key = $1", 2, p, lens, fmts);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    return 0;
}
