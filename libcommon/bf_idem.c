/* bf_idem: request keys for every write; see bf_idem.h. */
#include "bf_idem.h"
#include "bf_mp.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const bf_migration_t bf_idem_migrations[] = {
    {"000_request_key",
     "CREATE TABLE IF NOT EXISTS request_key (\n"
     "  key         text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 128),\n"
     "  method      text NOT NULL,\n"
     "  params_hash bytea NOT NULL,\n"
     "  actor       text NOT NULL,\n"
     "  result      bytea,\n"
     "  created_at  timestamptz NOT NULL DEFAULT now()\n"
     ");\n"
     "CREATE INDEX IF NOT EXISTS request_key_created ON request_key (created_at);\n"},
    {NULL, NULL},
};

typedef struct {
    const msgpack_object_kv *kv;
} s_kv_ref_t;

static int s_key_cmp(const void *a, const void *b)
{
    const msgpack_object *ka = &((const s_kv_ref_t *)a)->kv->key;
    const msgpack_object *kb = &((const s_kv_ref_t *)b)->kv->key;
    if (ka->type != MSGPACK_OBJECT_STR || kb->type != MSGPACK_OBJECT_STR)
        return (int)ka->type - (int)kb->type;
    size_t na = ka->via.str.size, nb = kb->via.str.size;
    int c = memcmp(ka->via.str.ptr, kb->via.str.ptr, na < nb ? na : nb);
    if (c) return c;
    return na < nb ? -1 : na > nb;
}

static void s_pack_canonical(msgpack_packer *pk, const msgpack_object *o, const char *skip)
{
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        msgpack_pack_array(pk, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++)
            s_pack_canonical(pk, &o->via.array.ptr[i], NULL);
        return;
    }
    if (o->type != MSGPACK_OBJECT_MAP) {
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            msgpack_pack_int64(pk, o->via.i64);
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            msgpack_pack_uint64(pk, o->via.u64);
        else
            msgpack_pack_object(pk, *o);
        return;
    }
    uint32_t n = o->via.map.size;
    s_kv_ref_t small[16];
    s_kv_ref_t *refs = n <= 16 ? small : malloc(n * sizeof *refs);
    if (!refs) {
        msgpack_pack_object(pk, *o); /* out of memory: still deterministic per input */
        return;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (skip && bf_mp_str_eq(&kv->key, skip)) continue;
        if (kv->val.type == MSGPACK_OBJECT_NIL) continue; /* nil = absent */
        refs[m++].kv = kv;
    }
    qsort(refs, m, sizeof *refs, s_key_cmp);
    msgpack_pack_map(pk, m);
    for (uint32_t i = 0; i < m; i++) {
        s_pack_canonical(pk, &refs[i].kv->key, NULL);
        s_pack_canonical(pk, &refs[i].kv->val, NULL);
    }
    if (refs != small) free(refs);
}

void bf_idem_hash(const msgpack_object *o, const char *skip, const char *const *pre,
                  unsigned char out[BF_IDEM_HASH_LEN])
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (const char *const *p = pre; p && *p; p++) bf_mp_str(&pk, *p);
    s_pack_canonical(&pk, o, skip);
    unsigned int len = 0;
    EVP_Digest(sb.data, sb.size, out, &len, EVP_sha256(), NULL);
    msgpack_sbuffer_destroy(&sb);
}

int bf_idem_claim(bf_req_t *r, const char *key, bf_idem_t *idem)
{
    idem->key = key;
    const char *pre[] = {r->method, r->actor ? r->actor : "", NULL};
    bf_idem_hash(r->params, "request_key", pre, idem->hash);
    const char *p[] = {key, r->method, (const char *)idem->hash, r->actor ? r->actor : ""};
    int lens[] = {0, 0, BF_IDEM_HASH_LEN, 0};
    int fmts[] = {0, 0, 1, 0};
    PGresult *res = bf_db_prep(r->db, "bf_idem_claim",
                               "INSERT INTO request_key (key, method, params_hash, actor) "
                               "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING 1",
                               4, p, lens, fmts);
    if (!res) return bf_req_db_fail(r);
    int claimed = PQntuples(res) == 1;
    PQclear(res);
    if (claimed) return 0;

    /* used (and committed) before: the same params replay its reply.
     * Binary results, so the hash and the reply come back as raw bytes. */
    const char *kp[] = {key};
    int rfmt = 1;
    PGconn *conn = bf_db_conn(r->db);
    res = PQexecParams(conn, "SELECT params_hash, result FROM request_key WHERE key = $1", 1,
                       NULL, kp, NULL, NULL, rfmt);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "database unavailable, retry later");
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_CONFLICT, "request_key",
                           "request_key %s is being used by another request; retry", key);
    }
    int same = PQgetlength(res, 0, 0) == BF_IDEM_HASH_LEN &&
               memcmp(PQgetvalue(res, 0, 0), idem->hash, BF_IDEM_HASH_LEN) == 0;
    if (!same) {
        PQclear(res);
        return bf_req_fail(r, BF_E_CONFLICT, "request_key",
                           "request_key %s was already used with different params", key);
    }
    if (PQgetisnull(res, 0, 1)) {
        PQclear(res);
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "request key without a stored result");
    }
    msgpack_sbuffer_write((msgpack_sbuffer *)r->out->data, PQgetvalue(res, 0, 1),
                          (size_t)PQgetlength(res, 0, 1));
    PQclear(res);
    return 1;
}

int bf_idem_store(bf_req_t *r, const bf_idem_t *idem, const char *result, size_t len)
{
    static const char nil = (char)0xc0; /* a handler that packed nothing replies nil */
    if (!result || len == 0) {
        result = &nil;
        len = 1;
    }
    const char *p[] = {idem->key, result};
    int lens[] = {0, (int)len};
    int fmts[] = {0, 1};
    PGresult *res = bf_db_prep(r->db, "bf_idem_store",
                               "UPDATE request_key SET result = $2 WHERE key = $1", 2, p, lens,
                               fmts);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    return 0;
}

int bf_idem_prune(bf_db_t *db, long long ttl_s, int limit)
{
    char ttl[32], lim[16];
    snprintf(ttl, sizeof ttl, "%lld", ttl_s);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[] = {ttl, lim};
    PGresult *res = bf_db_prep(db, "bf_idem_prune",
                               "DELETE FROM request_key WHERE key IN (SELECT key FROM request_key "
                               "WHERE created_at < now() - make_interval(secs => $1::bigint) "
                               "LIMIT $2::int)",
                               2, p, NULL, NULL);
    if (!res) return -1;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    return n;
}
