/* bf_mp: msgpack bounds check and helpers; see bf_mp.h. */
#include "bf_mp.h"

#include <string.h>

/* Reads a big-endian unsigned of n bytes at p. */
static uint64_t s_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Walks one object at *pos; returns 0, -2 (malformed) or -3 (more objects
 * than *budget allows; *budget counts down, one per object). */
static int s_walk(const unsigned char *d, size_t len, size_t *pos, int depth, int max_depth,
                  size_t *budget)
{
    if (depth > max_depth) return -2;
    if (*budget == 0) return -3;
    (*budget)--;
    if (*pos >= len) return -2;
    unsigned char t = d[(*pos)++];
    size_t rem = len - *pos;
    uint64_t count = 0; /* elements (array) or pairs (map) */
    int is_map = 0, is_container = 0;
    uint64_t skip = 0;  /* payload bytes to skip */

#define NEED(n)                                                                \
    do {                                                                       \
        if (rem < (size_t)(n)) return -2;                                      \
    } while (0)

    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) {
        return 0; /* fixint, nil, bool */
    } else if (t >= 0x80 && t <= 0x8f) {
        count = t & 0x0f; is_map = 1; is_container = 1;
    } else if (t >= 0x90 && t <= 0x9f) {
        count = t & 0x0f; is_container = 1;
    } else if (t >= 0xa0 && t <= 0xbf) {
        skip = t & 0x1f;
    } else {
        switch (t) {
        case 0xc4: NEED(1); skip = s_be(d + *pos, 1); *pos += 1; break;          /* bin8 */
        case 0xc5: NEED(2); skip = s_be(d + *pos, 2); *pos += 2; break;          /* bin16 */
        case 0xc6: NEED(4); skip = s_be(d + *pos, 4); *pos += 4; break;          /* bin32 */
        case 0xc7: NEED(2); skip = s_be(d + *pos, 1) + 1; *pos += 1; break;      /* ext8 */
        case 0xc8: NEED(3); skip = s_be(d + *pos, 2) + 1; *pos += 2; break;      /* ext16 */
        case 0xc9: NEED(5); skip = s_be(d + *pos, 4) + 1; *pos += 4; break;      /* ext32 */
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: skip = 1; break;
        case 0xcd: skip = 2; break;
        case 0xce: skip = 4; break;
        case 0xcf: skip = 8; break;
        case 0xd0: skip = 1; break;
        case 0xd1: skip = 2; break;
        case 0xd2: skip = 4; break;
        case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;  /* fixext1 */
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xd9: NEED(1); skip = s_be(d + *pos, 1); *pos += 1; break;          /* str8 */
        case 0xda: NEED(2); skip = s_be(d + *pos, 2); *pos += 2; break;
        case 0xdb: NEED(4); skip = s_be(d + *pos, 4); *pos += 4; break;
        case 0xdc: NEED(2); count = s_be(d + *pos, 2); *pos += 2; is_container = 1; break;
        case 0xdd: NEED(4); count = s_be(d + *pos, 4); *pos += 4; is_container = 1; break;
        case 0xde: NEED(2); count = s_be(d + *pos, 2); *pos += 2; is_container = 1; is_map = 1; break;
        case 0xdf: NEED(4); count = s_be(d + *pos, 4); *pos += 4; is_container = 1; is_map = 1; break;
        default: return -2; /* 0xc1 never used */
        }
    }
#undef NEED
    rem = len - *pos;
    if (!is_container) {
        if (skip > rem) return -2;
        *pos += (size_t)skip;
        return 0;
    }
    /* max_depth counts containers, the outermost being 1, as msgpack-c's
     * unpacker does (it refuses a 33rd level even when that one is empty) */
    if (depth >= max_depth) return -2;
    uint64_t elems = is_map ? count * 2 : count;
    if (elems > rem) return -2; /* each element takes at least one byte */
    for (uint64_t i = 0; i < elems; i++) {
        int rc = s_walk(d, len, pos, depth + 1, max_depth, budget);
        if (rc != 0) return rc;
    }
    return 0;
}

int bf_mp_check(const char *data, size_t len, int max_depth)
{
    int rc = bf_mp_check_budget(data, len, max_depth, SIZE_MAX, NULL);
    return rc == 0 ? 0 : -2;
}

int bf_mp_check_budget(const char *data, size_t len, int max_depth, size_t max_objects,
                       size_t *objects)
{
    size_t pos = 0, budget = max_objects;
    if (objects) *objects = 0;
    if (!data || len == 0) return -2;
    int rc = s_walk((const unsigned char *)data, len, &pos, 0, max_depth, &budget);
    if (objects) *objects = max_objects - budget;
    if (rc != 0) return rc;
    return pos == len ? 0 : -2;
}

int bf_mp_peek_str(const char *data, size_t len, const char *key, const char **val,
                   size_t *val_len)
{
    const unsigned char *d = (const unsigned char *)data;
    size_t pos = 0;
    if (!data || len == 0) return -1;
    unsigned char t = d[pos++];
    uint64_t pairs;
    if (t >= 0x80 && t <= 0x8f) {
        pairs = t & 0x0f;
    } else if (t == 0xde && len >= 3) {
        pairs = s_be(d + 1, 2);
        pos = 3;
    } else if (t == 0xdf && len >= 5) {
        pairs = s_be(d + 1, 4);
        pos = 5;
    } else {
        return -1;
    }
    size_t kl = strlen(key);
    for (uint64_t i = 0; i < pairs; i++) {
        size_t kstart = pos, budget = 1;
        if (s_walk(d, len, &pos, 0, 1, &budget) != 0) return -1; /* a key: one scalar */
        const unsigned char *kp = d + kstart;
        size_t klen = 0, hdr = 0;
        if (*kp >= 0xa0 && *kp <= 0xbf) {
            klen = *kp & 0x1f;
            hdr = 1;
        } else if (*kp == 0xd9) {
            klen = kp[1];
            hdr = 2;
        }
        bool match = hdr && klen == kl && memcmp(kp + hdr, key, kl) == 0;
        size_t vstart = pos;
        budget = SIZE_MAX;
        if (s_walk(d, len, &pos, 0, BF_MP_MAX_DEPTH, &budget) != 0) return -1;
        if (!match) continue;
        const unsigned char *vp = d + vstart;
        if (*vp >= 0xa0 && *vp <= 0xbf) {
            *val = (const char *)vp + 1;
            *val_len = *vp & 0x1f;
        } else if (*vp == 0xd9) {
            *val = (const char *)vp + 2;
            *val_len = vp[1];
        } else if (*vp == 0xda) {
            *val = (const char *)vp + 3;
            *val_len = (size_t)s_be(vp + 1, 2);
        } else {
            return -1;
        }
        return 0;
    }
    return -1;
}

const msgpack_object *bf_mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl &&
            memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool bf_mp_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

bool bf_mp_int(const msgpack_object *o, int64_t *out)
{
    if (!o) return false;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

void bf_mp_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void bf_mp_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        msgpack_pack_nil(pk);
        return;
    }
    bf_mp_strn(pk, s, strlen(s));
}

void bf_mp_key(msgpack_packer *pk, const char *key) { bf_mp_str(pk, key); }

void bf_mp_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
    bf_mp_str(pk, key);
    bf_mp_str(pk, val);
}

void bf_mp_kv_int(msgpack_packer *pk, const char *key, int64_t val)
{
    bf_mp_str(pk, key);
    msgpack_pack_int64(pk, val);
}

void bf_mp_kv_bool(msgpack_packer *pk, const char *key, bool val)
{
    bf_mp_str(pk, key);
    if (val)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void bf_mp_kv_nil(msgpack_packer *pk, const char *key)
{
    bf_mp_str(pk, key);
    msgpack_pack_nil(pk);
}

void bf_mp_obj(msgpack_packer *pk, const msgpack_object *o) { msgpack_pack_object(pk, *o); }
