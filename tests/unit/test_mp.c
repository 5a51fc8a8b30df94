/* test_mp.c: unit tests for bf_mp (the bounds check for untrusted msgpack and
 * the map/str/int helpers and writers).
 *
 * bf_mp_check must accept every msgpack format (packed by msgpack-c, and the
 * wide headers msgpack-c never picks for small sizes, written by hand), and
 * refuse: every truncation of a valid buffer, trailing bytes, the unused byte
 * 0xc1, containers and strings whose declared size does not fit the bytes
 * left, and nesting beyond the limit (the limit counts containers, so that
 * whatever passes at BF_MP_MAX_DEPTH also fits msgpack-c's own 32-level
 * unpacker). A fuzz loop (fixed seed, override with BF_TEST_SEED) feeds random
 * bytes and random mutations of valid buffers: nothing may crash, whatever the
 * check accepts must unpack with msgpack-c consuming exactly len bytes, and
 * whatever msgpack-c decodes whole within the depth limit must be accepted.
 */
#include "bf_mp.h"
#include "bf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* 0 if data[0..len) unpacks as exactly one object (msgpack-c's view). */
static int s_unpacks_whole(const char *data, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = msgpack_unpack_next(&u, data, len, &off);
    msgpack_unpacked_destroy(&u);
    return rc == MSGPACK_UNPACK_SUCCESS && off == len ? 0 : -1;
}

/* Containers nested in o (a scalar is 0, [] is 1, [[1]] is 2). */
static int s_depth(const msgpack_object *o)
{
    int d = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int c = s_depth(&o->via.array.ptr[i]);
            if (c > d) d = c;
        }
        return d + 1;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            int c = s_depth(&o->via.map.ptr[i].key);
            if (c > d) d = c;
            c = s_depth(&o->via.map.ptr[i].val);
            if (c > d) d = c;
        }
        return d + 1;
    }
    return 0;
}

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} s_buf_t;

static void s_buf_init(s_buf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void s_buf_reset(s_buf_t *b)
{
    msgpack_sbuffer_clear(&b->sb);
}

static void s_buf_destroy(s_buf_t *b)
{
    msgpack_sbuffer_destroy(&b->sb);
}

/* Expects the buffer to pass the check and to unpack whole. */
#define EXPECT_VALID(data, len, what)                                                  \
    do {                                                                               \
        if (bf_mp_check((data), (len), BF_MP_MAX_DEPTH) != 0)                          \
            BF_FAIL_AT("%s: refused by bf_mp_check (%zu bytes)", (what), (size_t)(len)); \
        if (s_unpacks_whole((data), (len)) != 0)                                       \
            BF_FAIL_AT("%s: msgpack-c cannot unpack it", (what));                      \
    } while (0)

#define EXPECT_MALFORMED(data, len, what)                                              \
    do {                                                                               \
        int rc_ = bf_mp_check((data), (len), BF_MP_MAX_DEPTH);                         \
        if (rc_ != -2) BF_FAIL_AT("%s: bf_mp_check gave %d, want -2", (what), rc_);    \
    } while (0)

/* ------------------------------------------------------------- fixtures */

static char *s_filled(size_t n, char c)
{
    char *p = malloc(n ? n : 1);
    if (p) memset(p, c, n);
    return p;
}

/* Packs one object of every format, each kind into its own buffer, calling
 * fn on each. */
static void s_each_format(void (*fn)(const char *data, size_t len, const char *what))
{
    s_buf_t b;
    s_buf_init(&b);
    char *big = s_filled(70000, 'q');
    if (!big) return;
#define ONE(what, packing)                                                     \
    do {                                                                       \
        s_buf_reset(&b);                                                       \
        packing;                                                               \
        fn(b.sb.data, b.sb.size, what);                                        \
    } while (0)
    msgpack_packer *pk = &b.pk;
    ONE("nil", msgpack_pack_nil(pk));
    ONE("true", msgpack_pack_true(pk));
    ONE("false", msgpack_pack_false(pk));
    ONE("positive fixint", msgpack_pack_uint8(pk, 5));
    ONE("uint8", msgpack_pack_uint8(pk, 200));
    ONE("uint16", msgpack_pack_uint16(pk, 60000));
    ONE("uint32", msgpack_pack_uint32(pk, 4000000000u));
    ONE("uint64", msgpack_pack_uint64(pk, UINT64_MAX));
    ONE("negative fixint", msgpack_pack_int8(pk, -3));
    ONE("int8", msgpack_pack_int8(pk, -100));
    ONE("int16", msgpack_pack_int16(pk, -30000));
    ONE("int32", msgpack_pack_int32(pk, -2000000000));
    ONE("int64", msgpack_pack_int64(pk, INT64_MIN));
    ONE("float32", msgpack_pack_float(pk, 1.5f));
    ONE("float64", msgpack_pack_double(pk, -0.1));
    ONE("float64 nan", msgpack_pack_double(pk, NAN));
    ONE("fixstr empty", msgpack_pack_str(pk, 0));
    ONE("fixstr", (msgpack_pack_str(pk, 3), msgpack_pack_str_body(pk, "abc", 3)));
    ONE("str8", (msgpack_pack_str(pk, 200), msgpack_pack_str_body(pk, big, 200)));
    ONE("str16", (msgpack_pack_str(pk, 1000), msgpack_pack_str_body(pk, big, 1000)));
    ONE("str32", (msgpack_pack_str(pk, 70000), msgpack_pack_str_body(pk, big, 70000)));
    ONE("bin8 empty", msgpack_pack_bin(pk, 0));
    ONE("bin8", (msgpack_pack_bin(pk, 10), msgpack_pack_bin_body(pk, big, 10)));
    ONE("bin16", (msgpack_pack_bin(pk, 300), msgpack_pack_bin_body(pk, big, 300)));
    ONE("bin32", (msgpack_pack_bin(pk, 70000), msgpack_pack_bin_body(pk, big, 70000)));
    ONE("fixext1", (msgpack_pack_ext(pk, 1, 7), msgpack_pack_ext_body(pk, big, 1)));
    ONE("fixext2", (msgpack_pack_ext(pk, 2, 7), msgpack_pack_ext_body(pk, big, 2)));
    ONE("fixext4", (msgpack_pack_ext(pk, 4, -1), msgpack_pack_ext_body(pk, big, 4)));
    ONE("fixext8", (msgpack_pack_ext(pk, 8, 7), msgpack_pack_ext_body(pk, big, 8)));
    ONE("fixext16", (msgpack_pack_ext(pk, 16, 7), msgpack_pack_ext_body(pk, big, 16)));
    ONE("ext8 empty", msgpack_pack_ext(pk, 0, 7));
    ONE("ext8", (msgpack_pack_ext(pk, 3, 7), msgpack_pack_ext_body(pk, big, 3)));
    ONE("ext16", (msgpack_pack_ext(pk, 300, 7), msgpack_pack_ext_body(pk, big, 300)));
    ONE("ext32", (msgpack_pack_ext(pk, 70000, 7), msgpack_pack_ext_body(pk, big, 70000)));
    ONE("fixarray empty", msgpack_pack_array(pk, 0));
    ONE("fixarray", (msgpack_pack_array(pk, 2), msgpack_pack_nil(pk), msgpack_pack_true(pk)));
    ONE("array16", do {
        msgpack_pack_array(pk, 20);
        for (int i = 0; i < 20; i++) msgpack_pack_int(pk, i);
    } while (0));
    ONE("array32", do {
        msgpack_pack_array(pk, 70000);
        for (int i = 0; i < 70000; i++) msgpack_pack_nil(pk);
    } while (0));
    ONE("fixmap empty", msgpack_pack_map(pk, 0));
    ONE("fixmap", (msgpack_pack_map(pk, 1), bf_mp_kv_int(pk, "k", 1)));
    ONE("map16", do {
        msgpack_pack_map(pk, 20);
        for (int i = 0; i < 20; i++) {
            msgpack_pack_int(pk, i);
            msgpack_pack_str(pk, 1);
            msgpack_pack_str_body(pk, "v", 1);
        }
    } while (0));
    ONE("map32", do {
        msgpack_pack_map(pk, 70000);
        for (int i = 0; i < 70000; i++) {
            msgpack_pack_int(pk, i);
            msgpack_pack_false(pk);
        }
    } while (0));
    ONE("nested", do {
        msgpack_pack_map(pk, 3);
        bf_mp_kv_str(pk, "name", "扶贫村");
        bf_mp_key(pk, "list");
        msgpack_pack_array(pk, 3);
        msgpack_pack_double(pk, 2.5);
        msgpack_pack_bin(pk, 2);
        msgpack_pack_bin_body(pk, "\0\1", 2);
        msgpack_pack_map(pk, 1);
        msgpack_pack_array(pk, 0);
        msgpack_pack_ext(pk, 1, 3);
        msgpack_pack_ext_body(pk, "x", 1);
        bf_mp_kv_nil(pk, "none");
    } while (0));
#undef ONE
    free(big);
    s_buf_destroy(&b);
}

/* Hand-written encodings msgpack-c's packer never picks (wide headers for
 * small sizes), all valid. */
static const struct {
    const char *what;
    const char *bytes;
    size_t len;
} s_wide[] = {
    {"uint64 small", "\xcf\0\0\0\0\0\0\0\x01", 9},
    {"int64 positive", "\xd3\0\0\0\0\0\0\0\x01", 9},
    {"str8 short", "\xd9\x01z", 3},
    {"str16 short", "\xda\0\x01z", 4},
    {"str32 short", "\xdb\0\0\0\x01z", 6},
    {"bin16 empty", "\xc5\0\0", 3},
    {"bin32 short", "\xc6\0\0\0\x02" "ab", 7},
    {"ext16 short", "\xc8\0\x01\x05z", 5},
    {"ext32 empty", "\xc9\0\0\0\0\x05", 6},
    {"array16 one", "\xdc\0\x01\xc0", 4},
    {"array32 one", "\xdd\0\0\0\x01\xc0", 6},
    {"array32 empty", "\xdd\0\0\0\0", 5},
    {"map16 one", "\xde\0\x01\x01\x02", 5},
    {"map32 one", "\xdf\0\0\0\x01\x01\x02", 7},
    {"map with non-str key", "\x81\x92\x01\x02\xc3", 5},
};

/* ------------------------------------------------------------- tests */

static void s_expect_valid(const char *data, size_t len, const char *what)
{
    EXPECT_VALID(data, len, what);
}

static void test_accepts_every_type(void)
{
    s_each_format(s_expect_valid);
    for (size_t i = 0; i < sizeof s_wide / sizeof s_wide[0]; i++)
        EXPECT_VALID(s_wide[i].bytes, s_wide[i].len, s_wide[i].what);
    /* every single byte: accepted alone iff it is a whole object by itself */
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        int complete = c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3 ||
                       c == 0x80 || c == 0x90 || c == 0xa0;
        int rc = bf_mp_check(&b, 1, BF_MP_MAX_DEPTH);
        if (complete && rc != 0) BF_FAIL_AT("byte 0x%02x alone refused", c);
        if (!complete && rc != -2) BF_FAIL_AT("byte 0x%02x alone gave %d", c, rc);
    }
}

static void s_expect_every_cut_refused(const char *data, size_t len, const char *what)
{
    /* a big buffer: every cut near the start, the end and a stride between */
    for (size_t cut = 0; cut < len; cut++) {
        if (len > 4096 && cut > 300 && cut < len - 300 && cut % 997) continue;
        int rc = bf_mp_check(data, cut, BF_MP_MAX_DEPTH);
        if (rc != -2) {
            BF_FAIL_AT("%s cut to %zu of %zu bytes: bf_mp_check gave %d", what, cut, len, rc);
            return;
        }
    }
}

static void test_truncation_at_every_cut(void)
{
    s_each_format(s_expect_every_cut_refused);
    for (size_t i = 0; i < sizeof s_wide / sizeof s_wide[0]; i++)
        s_expect_every_cut_refused(s_wide[i].bytes, s_wide[i].len, s_wide[i].what);
    ASSERT_EQ(bf_mp_check(NULL, 0, BF_MP_MAX_DEPTH), -2);
    ASSERT_EQ(bf_mp_check("", 0, BF_MP_MAX_DEPTH), -2);
    ASSERT_EQ(bf_mp_check(NULL, 5, BF_MP_MAX_DEPTH), -2);
}

static void s_expect_trailing_refused(const char *data, size_t len, const char *what)
{
    char *two = malloc(len * 2 + 1);
    if (!two) return;
    memcpy(two, data, len);
    two[len] = '\0'; /* one trailing byte (a fixint 0) */
    EXPECT_MALFORMED(two, len + 1, what);
    memcpy(two + len, data, len); /* two objects back to back */
    EXPECT_MALFORMED(two, len * 2, what);
    free(two);
}

static void test_trailing_bytes(void)
{
    s_each_format(s_expect_trailing_refused);
    EXPECT_MALFORMED("\x01\x02", 2, "two fixints");
    EXPECT_MALFORMED("\x90\x90", 2, "two empty arrays");
    EXPECT_MALFORMED("\xc0\xc1", 2, "nil then 0xc1");
}

static void test_never_used_byte(void)
{
    EXPECT_MALFORMED("\xc1", 1, "0xc1");
    EXPECT_MALFORMED("\x91\xc1", 2, "0xc1 in an array");
    EXPECT_MALFORMED("\x81\xc1\x01", 3, "0xc1 as a key");
    EXPECT_MALFORMED("\x81\x01\xc1", 3, "0xc1 as a value");
    EXPECT_MALFORMED("\x93\x01\x02\xc1", 4, "0xc1 last in an array");
}

static void test_lying_headers(void)
{
    /* containers whose count cannot fit in the bytes left */
    EXPECT_MALFORMED("\xdd\xff\xff\xff\xff", 5, "array32 of 2^32-1 in 5 bytes");
    EXPECT_MALFORMED("\xdd\xff\xff\xff\xff\xc0\xc0", 7, "array32 of 2^32-1 in 7 bytes");
    EXPECT_MALFORMED("\xdf\xff\xff\xff\xff", 5, "map32 of 2^32-1 pairs");
    EXPECT_MALFORMED("\xdf\x80\x00\x00\x00\x01\x01", 7, "map32 whose pair count doubles past 2^32");
    EXPECT_MALFORMED("\xdc\xff\xff", 3, "array16 of 65535 in 3 bytes");
    EXPECT_MALFORMED("\xde\x00\x03\x01\x02\x03\x04", 7, "map16 of 3 pairs with 2");
    EXPECT_MALFORMED("\xde\x00\x02\x01\x02\x03", 6, "map16 of 2 pairs missing a value");
    EXPECT_MALFORMED("\x82\x01\x02\x03", 4, "fixmap of 2 pairs missing a value");
    EXPECT_MALFORMED("\x93\x01\x02", 3, "fixarray of 3 with 2");
    /* counts that fit bytewise but whose elements need more */
    EXPECT_MALFORMED("\x92\xcd\x01\x02", 4, "array of 2, first element eats the rest");
    EXPECT_MALFORMED("\x92\xd9\x05" "ab\x01", 6, "str8 in an array claiming 5 bytes");
    /* strings, bins, exts claiming more than there is */
    EXPECT_MALFORMED("\xdb\xff\xff\xff\xff" "abc", 8, "str32 of 4 GiB");
    EXPECT_MALFORMED("\xc6\xff\xff\xff\xff" "abc", 8, "bin32 of 4 GiB");
    EXPECT_MALFORMED("\xc9\xff\xff\xff\xff\x01" "abc", 9, "ext32 of 4 GiB");
    EXPECT_MALFORMED("\xc9\x00\x00\x00\x00", 5, "ext32 without its type byte");
    EXPECT_MALFORMED("\xc7\x00", 2, "ext8 without its type byte");
    EXPECT_MALFORMED("\xc8\x00\x01\x05", 4, "ext16 of 1 without its byte");
    EXPECT_MALFORMED("\xd8\x01" "0123456789abcd", 16, "fixext16 one short");
    EXPECT_MALFORMED("\xcb\0\0\0\0\0\0\0", 8, "float64 one short");
    /* the check never allocates: a small frame declaring a huge container is
     * refused fast (this loop would take minutes if it walked 4G elements) */
    for (int i = 0; i < 100000; i++)
        if (bf_mp_check("\xdd\xff\xff\xff\xff\xc0", 6, BF_MP_MAX_DEPTH) != -2) break;
}

/* n nested one-element arrays around inner (a scalar byte, or 0x90 = []). */
static size_t s_nest(char *buf, int n, unsigned char inner, unsigned char wrapper)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        buf[len++] = (char)wrapper;
        if (wrapper == 0x81) buf[len++] = '\x01'; /* fixmap: the key, then the value */
    }
    buf[len++] = (char)inner;
    return len;
}

static void test_depth_limit(void)
{
    char buf[400];
    const unsigned char wrappers[] = {0x91, 0x81};
    for (int w = 0; w < 2; w++) {
        unsigned char wr = wrappers[w];
        /* exactly BF_MP_MAX_DEPTH containers: accepted and unpackable */
        size_t len = s_nest(buf, BF_MP_MAX_DEPTH, 0x01, wr);
        EXPECT_VALID(buf, len, "BF_MP_MAX_DEPTH containers around a scalar");
        len = s_nest(buf, BF_MP_MAX_DEPTH - 1, 0x90, wr);
        EXPECT_VALID(buf, len, "BF_MP_MAX_DEPTH containers, the innermost empty");
        /* one more: refused, whether the innermost one is empty or not */
        len = s_nest(buf, BF_MP_MAX_DEPTH + 1, 0x01, wr);
        EXPECT_MALFORMED(buf, len, "BF_MP_MAX_DEPTH+1 containers around a scalar");
        len = s_nest(buf, BF_MP_MAX_DEPTH, 0x90, wr);
        EXPECT_MALFORMED(buf, len, "BF_MP_MAX_DEPTH+1 containers, the innermost empty");
        len = s_nest(buf, BF_MP_MAX_DEPTH, 0x80, wr);
        EXPECT_MALFORMED(buf, len, "BF_MP_MAX_DEPTH+1 containers, the innermost an empty map");
        len = s_nest(buf, 150, 0x01, wr);
        EXPECT_MALFORMED(buf, len, "150 containers");
    }
    /* the limit argument: max_depth containers, counting the outermost */
    for (int md = 0; md <= 5; md++) {
        size_t len = s_nest(buf, md, 0x01, 0x91);
        ASSERT_EQ(bf_mp_check(buf, len, md), 0);
        len = s_nest(buf, md + 1, 0x01, 0x91);
        ASSERT_EQ(bf_mp_check(buf, len, md), -2);
        if (md > 0) {
            len = s_nest(buf, md - 1, 0x90, 0x91);
            ASSERT_EQ(bf_mp_check(buf, len, md), 0);
        }
        len = s_nest(buf, md, 0x90, 0x91);
        ASSERT_EQ(bf_mp_check(buf, len, md), -2);
    }
    ASSERT_EQ(bf_mp_check("\x05", 1, 0), 0);
    ASSERT_EQ(bf_mp_check("\x90", 1, 0), -2);
    /* depth counts nesting, not width: many siblings at depth 1 are fine */
    char wide[70];
    wide[0] = '\xdc';
    wide[1] = 0;
    wide[2] = 64;
    for (int i = 0; i < 64; i++) wide[3 + i] = '\x90';
    ASSERT_EQ(bf_mp_check(wide, 67, 2), 0);
    ASSERT_EQ(bf_mp_check(wide, 67, 1), -2);
    /* depth inside map keys counts too */
    ASSERT_EQ(bf_mp_check("\x81\x91\x91\x01\x02", 5, 3), 0);
    ASSERT_EQ(bf_mp_check("\x81\x91\x91\x01\x02", 5, 2), -2);
}

static void test_get(void)
{
    s_buf_t b;
    s_buf_init(&b);
    msgpack_packer *pk = &b.pk;
    msgpack_pack_map(pk, 8);
    bf_mp_kv_str(pk, "name", "李");
    bf_mp_kv_int(pk, "n", -7);
    bf_mp_kv_nil(pk, "gone");
    msgpack_pack_int(pk, 1); /* an integer key 1 */
    msgpack_pack_str(pk, 3);
    msgpack_pack_str_body(pk, "int", 3);
    bf_mp_kv_str(pk, "dup", "first");
    bf_mp_kv_str(pk, "dup", "second");
    bf_mp_strn(pk, "a\0b", 3); /* a key with a NUL inside */
    msgpack_pack_true(pk);
    bf_mp_kv_bool(pk, "", false); /* the empty key */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    ASSERT_EQ(msgpack_unpack_next(&u, b.sb.data, b.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *m = &u.data;
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "name"), "李"));
    int64_t v = 0;
    ASSERT(bf_mp_int(bf_mp_get(m, "n"), &v));
    ASSERT_EQ(v, -7);
    const msgpack_object *gone = bf_mp_get(m, "gone");
    ASSERT(gone != NULL);
    ASSERT(gone && gone->type == MSGPACK_OBJECT_NIL);
    ASSERT(bf_mp_get(m, "missing") == NULL);
    ASSERT(bf_mp_get(m, "1") == NULL); /* an integer key is not the string "1" */
    ASSERT(bf_mp_get(m, "nam") == NULL);
    ASSERT(bf_mp_get(m, "names") == NULL);
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "dup"), "first"));
    ASSERT(bf_mp_get(m, "a") == NULL); /* "a\0b" is not "a" */
    const msgpack_object *empty = bf_mp_get(m, "");
    ASSERT(empty && empty->type == MSGPACK_OBJECT_BOOLEAN && !empty->via.boolean);
    /* not a map, or no map */
    ASSERT(bf_mp_get(bf_mp_get(m, "name"), "name") == NULL);
    ASSERT(bf_mp_get(NULL, "name") == NULL);
    msgpack_unpacked_destroy(&u);
    s_buf_destroy(&b);
}

static void test_str_eq(void)
{
    msgpack_object s = {.type = MSGPACK_OBJECT_STR};
    s.via.str.ptr = "abc";
    s.via.str.size = 3;
    ASSERT(bf_mp_str_eq(&s, "abc"));
    ASSERT(!bf_mp_str_eq(&s, "ab"));
    ASSERT(!bf_mp_str_eq(&s, "abcd"));
    ASSERT(!bf_mp_str_eq(&s, "abd"));
    ASSERT(!bf_mp_str_eq(NULL, "abc"));
    s.via.str.size = 0;
    ASSERT(bf_mp_str_eq(&s, ""));
    /* a bin with the same bytes is not a str */
    msgpack_object bin = {.type = MSGPACK_OBJECT_BIN};
    bin.via.bin.ptr = "abc";
    bin.via.bin.size = 3;
    ASSERT(!bf_mp_str_eq(&bin, "abc"));
    msgpack_object n = {.type = MSGPACK_OBJECT_NIL};
    ASSERT(!bf_mp_str_eq(&n, ""));
    /* not NUL-terminated on the wire: only size bytes are compared */
    msgpack_object w = {.type = MSGPACK_OBJECT_STR};
    w.via.str.ptr = "abcdef";
    w.via.str.size = 3;
    ASSERT(bf_mp_str_eq(&w, "abc"));
    ASSERT(!bf_mp_str_eq(&w, "abcdef"));
}

/* Packs one int via the packer, unpacks, and runs bf_mp_int. */
static bool s_int_roundtrip(bool is_unsigned, uint64_t u, int64_t i, int64_t *out)
{
    s_buf_t b;
    s_buf_init(&b);
    if (is_unsigned)
        msgpack_pack_uint64(&b.pk, u);
    else
        msgpack_pack_int64(&b.pk, i);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    bool ok = false;
    if (msgpack_unpack_next(&up, b.sb.data, b.sb.size, &off) == MSGPACK_UNPACK_SUCCESS)
        ok = bf_mp_int(&up.data, out);
    msgpack_unpacked_destroy(&up);
    s_buf_destroy(&b);
    return ok;
}

static void test_int(void)
{
    int64_t v = 0;
    ASSERT(s_int_roundtrip(false, 0, 0, &v));
    ASSERT_EQ(v, 0);
    ASSERT(s_int_roundtrip(false, 0, INT64_MAX, &v));
    ASSERT(v == INT64_MAX);
    ASSERT(s_int_roundtrip(true, (uint64_t)INT64_MAX, 0, &v));
    ASSERT(v == INT64_MAX);
    ASSERT(!s_int_roundtrip(true, (uint64_t)INT64_MAX + 1, 0, &v));
    ASSERT(!s_int_roundtrip(true, UINT64_MAX, 0, &v));
    ASSERT(s_int_roundtrip(false, 0, -1, &v));
    ASSERT_EQ(v, -1);
    ASSERT(s_int_roundtrip(false, 0, INT64_MIN, &v));
    ASSERT(v == INT64_MIN);
    ASSERT(s_int_roundtrip(false, 0, -129, &v));
    ASSERT_EQ(v, -129);
    /* hand-made: int64 encoding of a positive value */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    ASSERT_EQ(msgpack_unpack_next(&up, "\xd3\0\0\0\0\0\0\0\x2a", 9, &off),
              MSGPACK_UNPACK_SUCCESS);
    ASSERT(bf_mp_int(&up.data, &v));
    ASSERT_EQ(v, 42);
    msgpack_unpacked_destroy(&up);
    /* not integers */
    msgpack_object f = {.type = MSGPACK_OBJECT_FLOAT64};
    f.via.f64 = 1.0;
    ASSERT(!bf_mp_int(&f, &v));
    msgpack_object f32 = {.type = MSGPACK_OBJECT_FLOAT32};
    f32.via.f64 = 2.0;
    ASSERT(!bf_mp_int(&f32, &v));
    msgpack_object s = {.type = MSGPACK_OBJECT_STR};
    s.via.str.ptr = "1";
    s.via.str.size = 1;
    ASSERT(!bf_mp_int(&s, &v));
    msgpack_object bo = {.type = MSGPACK_OBJECT_BOOLEAN};
    bo.via.boolean = true;
    ASSERT(!bf_mp_int(&bo, &v));
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    ASSERT(!bf_mp_int(&nil, &v));
    ASSERT(!bf_mp_int(NULL, &v));
}

static void test_writers(void)
{
    s_buf_t b;
    s_buf_init(&b);
    msgpack_packer *pk = &b.pk;
    msgpack_pack_map(pk, 7);
    bf_mp_kv_str(pk, "s", "值");
    bf_mp_kv_str(pk, "null_str", NULL); /* NULL packs nil */
    bf_mp_kv_int(pk, "max", INT64_MAX);
    bf_mp_kv_int(pk, "min", INT64_MIN);
    bf_mp_kv_bool(pk, "yes", true);
    bf_mp_kv_nil(pk, "nil");
    bf_mp_key(pk, "raw");
    bf_mp_strn(pk, "x\0y", 3);
    ASSERT_EQ(bf_mp_check(b.sb.data, b.sb.size, BF_MP_MAX_DEPTH), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    ASSERT_EQ(msgpack_unpack_next(&u, b.sb.data, b.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
    ASSERT_EQ(off, b.sb.size);
    const msgpack_object *m = &u.data;
    ASSERT_EQ(m->type, MSGPACK_OBJECT_MAP);
    ASSERT_EQ(m->via.map.size, 7);
    ASSERT(bf_mp_str_eq(bf_mp_get(m, "s"), "值"));
    const msgpack_object *o = bf_mp_get(m, "null_str");
    ASSERT(o && o->type == MSGPACK_OBJECT_NIL);
    int64_t v = 0;
    ASSERT(bf_mp_int(bf_mp_get(m, "max"), &v) && v == INT64_MAX);
    ASSERT(bf_mp_int(bf_mp_get(m, "min"), &v) && v == INT64_MIN);
    o = bf_mp_get(m, "yes");
    ASSERT(o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean);
    o = bf_mp_get(m, "nil");
    ASSERT(o && o->type == MSGPACK_OBJECT_NIL);
    o = bf_mp_get(m, "raw");
    ASSERT(o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == 3 &&
           memcmp(o->via.str.ptr, "x\0y", 3) == 0);

    /* bf_mp_obj re-packs an object to the same bytes (msgpack-c's packer
     * picks the shortest forms, as it did for the original) */
    s_buf_t copy;
    s_buf_init(&copy);
    bf_mp_obj(&copy.pk, m);
    ASSERT_EQ(copy.sb.size, b.sb.size);
    ASSERT(copy.sb.size == b.sb.size && memcmp(copy.sb.data, b.sb.data, b.sb.size) == 0);
    s_buf_destroy(&copy);
    msgpack_unpacked_destroy(&u);
    s_buf_destroy(&b);
}

/* ------------------------------------------------------------- fuzz */

static uint64_t s_rng;

static uint64_t s_rand(void)
{
    /* xorshift64*: deterministic for a seed, good enough for fuzzing */
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 2685821657736338717ULL;
}

static size_t s_rand_below(size_t n)
{
    return n ? (size_t)(s_rand() % n) : 0;
}

/* Packs a random object of at most `depth` more levels. */
static void s_pack_random(msgpack_packer *pk, int depth)
{
    static const char text[] = "abc扶贫\x01\"xyz0123456789";
    size_t kind = s_rand_below(depth > 0 ? 14 : 10);
    switch (kind) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: s_rand() & 1 ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case 2: msgpack_pack_uint64(pk, s_rand() >> s_rand_below(64)); break;
    case 3: msgpack_pack_int64(pk, -(int64_t)(s_rand() >> (1 + s_rand_below(63)))); break;
    case 4: msgpack_pack_double(pk, (double)s_rand() / 7.0); break;
    case 5: msgpack_pack_float(pk, (float)s_rand_below(1000) / 3.0f); break;
    case 6: {
        size_t n = s_rand_below(sizeof text);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, text, n);
        break;
    }
    case 7: {
        size_t n = s_rand_below(40);
        msgpack_pack_bin(pk, n);
        msgpack_pack_bin_body(pk, text, n < sizeof text ? n : sizeof text);
        if (n >= sizeof text) msgpack_pack_bin_body(pk, text, n - sizeof text);
        break;
    }
    case 8: {
        static const size_t sizes[] = {0, 1, 2, 3, 4, 8, 16, 17};
        size_t n = sizes[s_rand_below(8)];
        msgpack_pack_ext(pk, n, (int8_t)s_rand_below(256));
        msgpack_pack_ext_body(pk, text, n);
        break;
    }
    case 9: msgpack_pack_int(pk, (int)s_rand_below(300) - 150); break;
    case 10:
    case 11: {
        size_t n = s_rand_below(6);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) s_pack_random(pk, depth - 1);
        break;
    }
    default: {
        size_t n = s_rand_below(5);
        msgpack_pack_map(pk, n);
        for (size_t i = 0; i < n; i++) {
            if (s_rand() & 3)
                bf_mp_str(pk, "key");
            else
                s_pack_random(pk, depth - 1);
            s_pack_random(pk, depth - 1);
        }
        break;
    }
    }
}

static int s_fuzz_fail;

/* The two properties, on one buffer. */
static void s_fuzz_one(const char *data, size_t len)
{
    int rc = bf_mp_check(data, len, BF_MP_MAX_DEPTH);
    if (rc != 0 && rc != -2 && s_fuzz_fail++ < 5) BF_FAIL_AT("bf_mp_check returned %d", rc);
    /* Unchecked bytes with an array32/map32 header can make msgpack-c try to
     * allocate gigabytes (what bf_mp_check exists to prevent; ASan aborts on
     * it): the reverse property is only checked without those headers. */
    if (rc != 0 && (memchr(data, 0xdd, len) || memchr(data, 0xdf, len))) return;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int urc = msgpack_unpack_next(&u, data, len, &off);
    if (rc == 0 && (urc != MSGPACK_UNPACK_SUCCESS || off != len)) {
        if (s_fuzz_fail++ < 5)
            BF_FAIL_AT("accepted %zu bytes that msgpack-c unpacks with %d, using %zu", len, urc,
                       off);
    }
    if (rc != 0 && urc == MSGPACK_UNPACK_SUCCESS && off == len &&
        s_depth(&u.data) <= BF_MP_MAX_DEPTH) {
        if (s_fuzz_fail++ < 5) {
            BF_FAIL_AT("refused %zu well-formed bytes (depth %d)", len, s_depth(&u.data));
            fprintf(stderr, "   ");
            for (size_t i = 0; i < len && i < 40; i++)
                fprintf(stderr, " %02x", (unsigned char)data[i]);
            fputc('\n', stderr);
        }
    }
    msgpack_unpacked_destroy(&u);
}

static void test_fuzz(void)
{
    const char *seed_env = getenv("BF_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 20240601u;
    s_rng = seed ? seed : 1;
    s_fuzz_fail = 0;
    char buf[512];

    /* random bytes, biased towards the interesting type bytes */
    for (int iter = 0; iter < 300000; iter++) {
        size_t len = s_rand_below(48);
        for (size_t i = 0; i < len; i++) {
            uint64_t r = s_rand();
            buf[i] = (char)((r & 3) == 0 ? 0xc0 + (r >> 8) % 0x20 : r >> 16);
        }
        s_fuzz_one(buf, len);
    }

    /* random mutations of random valid buffers */
    s_buf_t b;
    s_buf_init(&b);
    char *m = malloc(1 << 16);
    ASSERT(m != NULL);
    for (int iter = 0; m && iter < 20000; iter++) {
        s_buf_reset(&b);
        s_pack_random(&b.pk, 1 + (int)s_rand_below(5));
        if (b.sb.size > (1 << 15)) continue;
        s_fuzz_one(b.sb.data, b.sb.size);
        if (bf_mp_check(b.sb.data, b.sb.size, BF_MP_MAX_DEPTH) != 0 && s_fuzz_fail++ < 5)
            BF_FAIL_AT("a packed random object was refused");
        for (int k = 0; k < 12; k++) {
            size_t len = b.sb.size;
            memcpy(m, b.sb.data, len);
            int edits = 1 + (int)s_rand_below(3);
            for (int e = 0; e < edits; e++) {
                size_t at = s_rand_below(len ? len : 1);
                switch (s_rand_below(6)) {
                case 0: /* flip a bit */
                    if (len) m[at] ^= (char)(1u << s_rand_below(8));
                    break;
                case 1: /* random byte */
                    if (len) m[at] = (char)s_rand();
                    break;
                case 2: /* a size byte to 0xff (lying lengths) */
                    if (len) m[at] = '\xff';
                    break;
                case 3: /* truncate */
                    len = at;
                    break;
                case 4: /* insert a byte */
                    if (len + 1 < (1 << 16)) {
                        memmove(m + at + 1, m + at, len - at);
                        m[at] = (char)s_rand();
                        len++;
                    }
                    break;
                default: /* delete a byte */
                    if (len) {
                        memmove(m + at, m + at + 1, len - at - 1);
                        len--;
                    }
                }
            }
            s_fuzz_one(m, len);
        }
    }
    free(m);
    s_buf_destroy(&b);

    /* deep random nesting around the limit */
    for (int iter = 0; iter < 2000; iter++) {
        int n = BF_MP_MAX_DEPTH - 3 + (int)s_rand_below(7);
        size_t len = 0;
        for (int i = 0; i < n && len < sizeof buf - 4; i++) {
            switch (s_rand_below(3)) {
            case 0: buf[len++] = '\x91'; break;
            case 1: buf[len++] = '\x81'; buf[len++] = '\xa0'; break; /* {"": ...} */
            default: buf[len++] = '\xdc'; buf[len++] = 0; buf[len++] = 1;
            }
        }
        buf[len++] = (s_rand() & 1) ? '\x90' : '\x80';
        s_fuzz_one(buf, len);
    }
    if (s_fuzz_fail) fprintf(stderr, "  (seed %llu, %d failures)\n", (unsigned long long)seed,
                             s_fuzz_fail);
}

/* The object budget: counted before anything is decoded; the count is the
 * number of objects msgpack-c would make. */
static void test_object_budget(void)
{
    size_t n = 0;
    /* {"a": [nil, nil, nil], "b": 1} = map, 2 keys, array, 3 nils, 1 = 8 */
    const char buf[] = "\x82\xa1" "a" "\x93\xc0\xc0\xc0\xa1" "b" "\x01";
    size_t len = sizeof buf - 1;
    ASSERT(bf_mp_check_budget(buf, len, BF_MP_MAX_DEPTH, 8, &n) == 0);
    ASSERT(n == 8);
    ASSERT(bf_mp_check_budget(buf, len, BF_MP_MAX_DEPTH, 7, &n) == -3);
    ASSERT(bf_mp_check_budget(buf, len, BF_MP_MAX_DEPTH, 1000, NULL) == 0);
    ASSERT(bf_mp_check_budget(buf, len - 1, BF_MP_MAX_DEPTH, 1000, NULL) == -2);
    /* a million nils in an array: refused at the budget, having walked only
     * the budget's worth */
    size_t big = 1000000;
    char *nils = malloc(big + 5);
    ASSERT(nils != NULL);
    if (!nils) return;
    nils[0] = (char)0xdd;
    nils[1] = 0x00;
    nils[2] = 0x0f;
    nils[3] = 0x42;
    nils[4] = 0x40; /* 1,000,000 */
    memset(nils + 5, 0xc0, big);
    ASSERT(bf_mp_check_budget(nils, big + 5, BF_MP_MAX_DEPTH, 4096, &n) == -3);
    ASSERT(n == 4096);
    ASSERT(bf_mp_check_budget(nils, big + 5, BF_MP_MAX_DEPTH, big + 1, &n) == 0);
    ASSERT(n == big + 1);
    ASSERT(bf_mp_check(nils, big + 5, BF_MP_MAX_DEPTH) == 0);
    free(nils);
}

static void test_peek_str(void)
{
    const char *v = NULL;
    size_t n = 0;
    /* {"v": 1, "params": {"method": "x"}, "method": "household.get"} */
    const char buf[] = "\x83\xa1v\x01\xa6params\x81\xa6method\xa1x"
                       "\xa6method\xad" "household.get";
    size_t len = sizeof buf - 1;
    ASSERT(bf_mp_peek_str(buf, len, "method", &v, &n) == 0);
    ASSERT(n == 13 && memcmp(v, "household.get", 13) == 0);
    ASSERT(bf_mp_peek_str(buf, len, "id", &v, &n) == -1);
    ASSERT(bf_mp_peek_str(buf, len, "v", &v, &n) == -1); /* not a string */
    ASSERT(bf_mp_peek_str(buf, len - 3, "method", &v, &n) == -1); /* truncated */
    ASSERT(bf_mp_peek_str("\x91\xa1x", 3, "x", &v, &n) == -1);  /* not a map */
    ASSERT(bf_mp_peek_str("", 0, "x", &v, &n) == -1);
}

int main(void)
{
    RUN(accepts_every_type);
    RUN(truncation_at_every_cut);
    RUN(trailing_bytes);
    RUN(never_used_byte);
    RUN(lying_headers);
    RUN(depth_limit);
    RUN(get);
    RUN(str_eq);
    RUN(int);
    RUN(writers);
    RUN(fuzz);
    RUN(object_budget);
    RUN(peek_str);
    return TEST_REPORT();
}
