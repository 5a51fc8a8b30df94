/* fuzz_mp: libFuzzer target for the untrusted-msgpack gate (bf_mp.h).
 *
 * Properties checked on every input:
 *  - bf_mp_check_budget never reads past len and agrees with bf_mp_check;
 *  - whatever it accepts, msgpack-c unpacks as exactly one object consuming
 *    exactly len bytes, and the object count it reported is what msgpack-c
 *    built (so the budget really bounds msgpack-c's allocation);
 *  - a budget smaller than the count is refused with -3;
 *  - bf_mp_peek_str agrees with a full decode's bf_mp_get for "method".
 */
#include "bf_mp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t s_count(const msgpack_object *o)
{
    size_t n = 1;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++) n += s_count(&o->via.array.ptr[i]);
    if (o->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < o->via.map.size; i++)
            n += s_count(&o->via.map.ptr[i].key) + s_count(&o->via.map.ptr[i].val);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    /* a private copy, so reads past len are caught by ASan */
    char *d = malloc(len ? len : 1);
    if (!d) return 0;
    memcpy(d, data, len);
    size_t objects = 0;
    int rc = bf_mp_check_budget(d, len, BF_MP_MAX_DEPTH, 100000, &objects);
    int plain = bf_mp_check(d, len, BF_MP_MAX_DEPTH);
    if (rc == 0 && plain != 0) abort();
    if (rc == -2 && plain == 0) abort();
    if (rc == 0) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        if (msgpack_unpack_next(&u, d, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
            abort();
        if (s_count(&u.data) != objects) abort();
        if (objects > 1 && bf_mp_check_budget(d, len, BF_MP_MAX_DEPTH, objects - 1, NULL) != -3)
            abort();
        const char *v = NULL;
        size_t vn = 0;
        int prc = bf_mp_peek_str(d, len, "method", &v, &vn);
        const msgpack_object *m = bf_mp_get(&u.data, "method");
        /* peek reads the first "method" key; bf_mp_get also takes the first */
        if (prc == 0) {
            if (!m || m->type != MSGPACK_OBJECT_STR || m->via.str.size != vn ||
                memcmp(m->via.str.ptr, v, vn) != 0)
                abort();
        }
        msgpack_unpacked_destroy(&u);
    } else {
        const char *v;
        size_t vn;
        (void)bf_mp_peek_str(d, len, "method", &v, &vn); /* must not crash */
    }
    free(d);
    return 0;
}
