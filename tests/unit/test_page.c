/* test_page.c: unit tests for bf_page (keyset paging of list methods).
 *
 * No server and no database: a bf_req_t is put together by hand (an arena,
 * params unpacked from bytes packed here, a packer into a buffer), and query
 * results are PGresults built with libpq's PQmakeEmptyPGresult/PQsetvalue.
 *
 * The reader must take exactly the cursors a page hands out (canonical
 * non-negative int64 text) and the limits 1..1000, and refuse everything else
 * with invalid_argument naming the field. The packers must write byte for byte
 * what every list method wrote before the module existed; the reference
 * packing below is that inline code, kept verbatim.
 */
#include "bf_page.h"
#include "bf_mp.h"
#include "bf_test.h"

#include <stdlib.h>

/* ------------------------------------------------------------- helpers */

/* A request with its own arena, params and output buffer. */
typedef struct {
    bf_req_t r;
    msgpack_sbuffer in_buf; /* the unpacked params point into it */
    msgpack_unpacked params;
    msgpack_sbuffer out_buf;
    msgpack_packer out;
} s_req_t;

typedef void (*s_pack_fn)(msgpack_packer *pk);

static void s_req_init(s_req_t *q, s_pack_fn params)
{
    memset(q, 0, sizeof *q);
    msgpack_sbuffer_init(&q->in_buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &q->in_buf, msgpack_sbuffer_write);
    if (params)
        params(&pk);
    else
        msgpack_pack_map(&pk, 0);
    msgpack_unpacked_init(&q->params);
    size_t off = 0;
    int rc = msgpack_unpack_next(&q->params, q->in_buf.data, q->in_buf.size, &off);
    ASSERT_EQ(rc, MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer_init(&q->out_buf);
    msgpack_packer_init(&q->out, &q->out_buf, msgpack_sbuffer_write);
    q->r.method = "thing.list";
    q->r.params = &q->params.data;
    q->r.out = &q->out;
    q->r.arena = bf_arena_new();
    ASSERT(q->r.arena != NULL);
}

static void s_req_done(s_req_t *q)
{
    bf_arena_destroy(&q->r.arena);
    msgpack_unpacked_destroy(&q->params);
    msgpack_sbuffer_destroy(&q->in_buf);
    msgpack_sbuffer_destroy(&q->out_buf);
}

/* A query result with columns id and code and rows ids[0..n) (code is the id
 * as a 12-digit code). The caller PQclears it. */
static PGresult *s_result(const int64_t *ids, int n)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc cols[2] = {
        {.name = (char *)"id", .format = 0, .typid = 20, .typlen = 8, .atttypmod = -1},
        {.name = (char *)"code", .format = 0, .typid = 1042, .typlen = -1, .atttypmod = 16},
    };
    if (!res || !PQsetResultAttrs(res, 2, cols)) {
        BF_FAIL_AT("cannot build a PGresult");
        return res;
    }
    for (int i = 0; i < n; i++) {
        char id[24], code[24];
        snprintf(id, sizeof id, "%" PRId64, ids[i]);
        snprintf(code, sizeof code, "%012" PRId64, ids[i]);
        if (!PQsetvalue(res, i, 0, id, (int)strlen(id)) ||
            !PQsetvalue(res, i, 1, code, (int)strlen(code)))
            BF_FAIL_AT("cannot set row %d", i);
    }
    return res;
}

/* What a list method packed before bf_page: {items: [{id}...], next_cursor}. */
static void s_reference(msgpack_packer *pk, const PGresult *res, int64_t limit, const char *col)
{
    int n = PQntuples(res);
    int shown = n > limit ? (int)limit : n;
    msgpack_pack_map(pk, 2);
    bf_mp_key(pk, "items");
    msgpack_pack_array(pk, (size_t)shown);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(pk, 1);
        bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    }
    bf_mp_kv_str(pk, "next_cursor", n > limit ? bf_db_str(res, shown - 1, col) : NULL);
}

/* The same page through bf_page; returns the shown count. */
static int s_with_page(bf_req_t *r, const PGresult *res, int64_t limit, const char *col)
{
    int shown = bf_page_begin(r, res, limit);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 1);
        bf_mp_kv_int(r->out, "id", bf_db_int(res, i, "id"));
    }
    bf_page_end(r, res, limit, col);
    return shown;
}

static bool s_same_bytes(const msgpack_sbuffer *a, const msgpack_sbuffer *b)
{
    return a->size == b->size && (a->size == 0 || memcmp(a->data, b->data, a->size) == 0);
}

/* The next_cursor of a packed page: its text, "nil", or NULL if malformed. */
static const char *s_next_cursor(const msgpack_sbuffer *buf, char *text, size_t cap)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    const char *out = NULL;
    if (msgpack_unpack_next(&u, buf->data, buf->size, &off) == MSGPACK_UNPACK_SUCCESS &&
        off == buf->size) {
        const msgpack_object *nc = bf_mp_get(&u.data, "next_cursor");
        if (nc && nc->type == MSGPACK_OBJECT_NIL) {
            out = "nil";
        } else if (nc && nc->type == MSGPACK_OBJECT_STR && nc->via.str.size < cap) {
            memcpy(text, nc->via.str.ptr, nc->via.str.size);
            text[nc->via.str.size] = '\0';
            out = text;
        }
    }
    msgpack_unpacked_destroy(&u);
    return out;
}

/* ---------------------------------------------------- params to pack */

static const char *s_cursor_text;
static int64_t s_limit_value;
static void pk_cursor(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "cursor", s_cursor_text);
}
static void pk_cursor_limit(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "cursor", s_cursor_text);
    bf_mp_kv_int(pk, "limit", s_limit_value);
}
static void pk_limit(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_kv_int(pk, "limit", s_limit_value);
}
static void pk_cursor_nil(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_kv_nil(pk, "cursor");
}
static void pk_cursor_int(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_kv_int(pk, "cursor", 5);
}
static void pk_limit_str(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_kv_str(pk, "limit", "5");
}
static void pk_limit_float(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    bf_mp_key(pk, "limit");
    msgpack_pack_double(pk, 5.0);
}
static void pk_both_bad(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "cursor", "x");
    bf_mp_kv_int(pk, "limit", 0);
}

/* ---------------------------------------------------------------- tests */

static void test_defaults(void)
{
    s_req_t q;
    s_req_init(&q, NULL);
    int64_t after = -7, limit = -7;
    ASSERT_EQ(bf_page_params(&q.r, &after, &limit), 0);
    ASSERT_EQ(after, 0);
    ASSERT_EQ(limit, BF_PAGE_DEFAULT);
    ASSERT_EQ(limit, 100);
    ASSERT(q.r.err.code == NULL);
    ASSERT_EQ(q.out_buf.size, 0); /* reading params packs nothing */
    int64_t id = -7;
    ASSERT_EQ(bf_page_cursor(&q.r, &id), 1);
    ASSERT_EQ(id, -7); /* absent: untouched */
    s_req_done(&q);

    s_req_init(&q, pk_cursor_nil); /* nil counts as absent */
    ASSERT_EQ(bf_page_params(&q.r, &after, &limit), 0);
    ASSERT_EQ(after, 0);
    ASSERT_EQ(limit, 100);
    s_req_done(&q);
}

static void test_accepts(void)
{
    static const struct {
        const char *cursor;
        int64_t limit, after;
    } ok[] = {
        {"42", 7, 42},
        {"0", 1, 0},
        {"1", 1000, 1},
        {"9223372036854775807", 100, INT64_MAX},
        {"1000000000000000000", 3, 1000000000000000000LL},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        s_cursor_text = ok[i].cursor;
        s_limit_value = ok[i].limit;
        s_req_t q;
        s_req_init(&q, pk_cursor_limit);
        int64_t after = -1, limit = -1;
        ASSERT_EQ(bf_page_params(&q.r, &after, &limit), 0);
        ASSERT_EQ(after, ok[i].after);
        ASSERT_EQ(limit, ok[i].limit);
        if (q.r.err.code) BF_FAIL_AT("cursor %s: %s", ok[i].cursor, q.r.err.message);
        int64_t id = -1;
        ASSERT_EQ(bf_page_cursor(&q.r, &id), 0);
        ASSERT_EQ(id, ok[i].after);
        s_req_done(&q);
    }
}

static void test_refuses_cursor(void)
{
    static const char *const bad[] = {
        "abc", "", "-1", "+1", " 1", "1 ", "007", "00", "-0", "1x", "0x10", "1.5", "1e3",
        "9223372036854775808",  /* INT64_MAX + 1 */
        "9999999999999999999",  /* 19 digits, too large */
        "12345678901234567890", /* 20 digits */
        "４２",                 /* full-width digits */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_cursor_text = bad[i];
        s_req_t q;
        s_req_init(&q, pk_cursor);
        int64_t after, limit;
        if (bf_page_params(&q.r, &after, &limit) != -1) {
            BF_FAIL_AT("cursor \"%s\" was accepted", bad[i]);
        } else {
            ASSERT_STR_EQ(q.r.err.code, BF_E_INVALID);
            ASSERT_STR_EQ(q.r.err.field, "cursor");
            ASSERT_STR_EQ(q.r.err.message, "cursor is not one this method returned");
        }
        ASSERT_EQ(q.out_buf.size, 0);
        s_req_done(&q);
    }

    /* longer than BF_PAGE_CURSOR_MAX, and not a string: the getter's errors */
    s_cursor_text = "123456789012345678901";
    s_req_t q;
    s_req_init(&q, pk_cursor);
    int64_t id;
    ASSERT_EQ(bf_page_cursor(&q.r, &id), -1);
    ASSERT_STR_EQ(q.r.err.code, BF_E_INVALID);
    ASSERT_STR_EQ(q.r.err.field, "cursor");
    ASSERT_STR_EQ(q.r.err.message, "cursor is longer than 20 bytes");
    s_req_done(&q);

    s_req_init(&q, pk_cursor_int);
    ASSERT_EQ(bf_page_cursor(&q.r, &id), -1);
    ASSERT_STR_EQ(q.r.err.field, "cursor");
    ASSERT_STR_EQ(q.r.err.message, "cursor must be a string");
    s_req_done(&q);
}

static void test_refuses_limit(void)
{
    static const int64_t bad[] = {0, -1, 1001, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_limit_value = bad[i];
        s_req_t q;
        s_req_init(&q, pk_limit);
        int64_t after, limit;
        ASSERT_EQ(bf_page_params(&q.r, &after, &limit), -1);
        ASSERT_STR_EQ(q.r.err.code, BF_E_INVALID);
        ASSERT_STR_EQ(q.r.err.field, "limit");
        ASSERT_STR_EQ(q.r.err.message, "limit must be between 1 and 1000");
        s_req_done(&q);
    }
    s_pack_fn wrong_type[] = {pk_limit_str, pk_limit_float};
    for (size_t i = 0; i < 2; i++) {
        s_req_t q;
        s_req_init(&q, wrong_type[i]);
        int64_t after, limit;
        ASSERT_EQ(bf_page_params(&q.r, &after, &limit), -1);
        ASSERT_STR_EQ(q.r.err.field, "limit");
        s_req_done(&q);
    }
    /* both wrong: the cursor is named first, as every list method did */
    s_req_t q;
    s_req_init(&q, pk_both_bad);
    int64_t after, limit;
    ASSERT_EQ(bf_page_params(&q.r, &after, &limit), -1);
    ASSERT_STR_EQ(q.r.err.field, "cursor");
    s_req_done(&q);
}

static void test_pages_as_before(void)
{
    static const int64_t ids[] = {3, 9, 27, 81};
    /* rows fetched (LIMIT limit + 1) x page size */
    for (int rows = 0; rows <= 4; rows++) {
        for (int64_t limit = 1; limit <= 5; limit++) {
            PGresult *res = s_result(ids, rows);
            s_req_t q;
            s_req_init(&q, NULL);
            int shown = s_with_page(&q.r, res, limit, "id");
            msgpack_sbuffer ref;
            msgpack_sbuffer_init(&ref);
            msgpack_packer rpk;
            msgpack_packer_init(&rpk, &ref, msgpack_sbuffer_write);
            s_reference(&rpk, res, limit, "id");

            int want_shown = rows > limit ? (int)limit : rows;
            ASSERT_EQ(shown, want_shown);
            ASSERT_EQ(bf_page_shown(res, limit), want_shown);
            if (!s_same_bytes(&q.out_buf, &ref))
                BF_FAIL_AT("rows %d limit %lld: bytes differ from the inline packing", rows,
                           (long long)limit);
            char text[32], want[32];
            const char *next = s_next_cursor(&q.out_buf, text, sizeof text);
            if (rows > limit)
                snprintf(want, sizeof want, "%" PRId64, ids[limit - 1]);
            else
                snprintf(want, sizeof want, "nil");
            ASSERT_STR_EQ(next, want);
            msgpack_sbuffer_destroy(&ref);
            s_req_done(&q);
            PQclear(res);
        }
    }
}

static void test_key_column(void)
{
    /* region.list pages by code: the cursor is that column's text */
    static const int64_t ids[] = {110000000000, 120000000000, 130000000000};
    PGresult *res = s_result(ids, 3);
    s_req_t q;
    s_req_init(&q, NULL);
    ASSERT_EQ(s_with_page(&q.r, res, 2, "code"), 2);
    char text[32];
    ASSERT_STR_EQ(s_next_cursor(&q.out_buf, text, sizeof text), "120000000000");
    msgpack_sbuffer ref;
    msgpack_sbuffer_init(&ref);
    msgpack_packer rpk;
    msgpack_packer_init(&rpk, &ref, msgpack_sbuffer_write);
    s_reference(&rpk, res, 2, "code");
    ASSERT(s_same_bytes(&q.out_buf, &ref));
    msgpack_sbuffer_destroy(&ref);
    s_req_done(&q);
    PQclear(res);
}

static void test_end_alone(void)
{
    /* account.get ends a larger map with next_cursor: bf_page_end writes the
     * same two objects the if/else there wrote */
    static const int64_t ids[] = {50, 40, 30};
    for (int64_t limit = 2; limit <= 3; limit++) {
        PGresult *res = s_result(ids, 3);
        s_req_t q;
        s_req_init(&q, NULL);
        msgpack_pack_map(q.r.out, 1);
        bf_page_end(&q.r, res, limit, "id");
        msgpack_sbuffer ref;
        msgpack_sbuffer_init(&ref);
        msgpack_packer rpk;
        msgpack_packer_init(&rpk, &ref, msgpack_sbuffer_write);
        msgpack_pack_map(&rpk, 1);
        int n = PQntuples(res), shown = n > limit ? (int)limit : n;
        if (n > limit)
            bf_mp_kv_str(&rpk, "next_cursor", bf_db_str(res, shown - 1, "id"));
        else
            bf_mp_kv_nil(&rpk, "next_cursor");
        ASSERT(s_same_bytes(&q.out_buf, &ref));
        char text[32];
        ASSERT_STR_EQ(s_next_cursor(&q.out_buf, text, sizeof text), limit == 2 ? "40" : "nil");
        msgpack_sbuffer_destroy(&ref);
        s_req_done(&q);
        PQclear(res);
    }
}

static void test_itoa(void)
{
    s_req_t q;
    s_req_init(&q, NULL);
    ASSERT_STR_EQ(bf_req_itoa(&q.r, 0), "0");
    ASSERT_STR_EQ(bf_req_itoa(&q.r, 101), "101");
    ASSERT_STR_EQ(bf_req_itoa(&q.r, -42), "-42");
    ASSERT_STR_EQ(bf_req_itoa(&q.r, INT64_MAX), "9223372036854775807");
    ASSERT_STR_EQ(bf_req_itoa(&q.r, INT64_MIN), "-9223372036854775808");
    s_req_done(&q);
}

int main(void)
{
    RUN(defaults);
    RUN(accepts);
    RUN(refuses_cursor);
    RUN(refuses_limit);
    RUN(pages_as_before);
    RUN(key_column);
    RUN(end_alone);
    RUN(itoa);
    return TEST_REPORT();
}
