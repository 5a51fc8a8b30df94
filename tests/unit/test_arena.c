/* test_arena.c: unit tests for bf_arena (the per-request bump allocator).
 *
 * Checks the header's contract: every allocation is aligned for any type and
 * zeroed (also when the memory is reused after a reset, where the previous
 * request left its bytes), allocations larger than a chunk work and stay
 * intact, strndup/printf copy exactly, reset forgets everything and the arena
 * keeps working, and destroy is idempotent and NULLs the caller's pointer.
 * Run under valgrind/ASan, these tests also prove that nothing leaks and no
 * allocation overlaps another.
 */
#include "bf_arena.h"
#include "bf_test.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* ------------------------------------------------------------- helpers */

static int s_aligned(const void *p)
{
    return ((uintptr_t)p % alignof(max_align_t)) == 0;
}

static int s_all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------- tests */

static void test_new_and_destroy(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    bf_arena_destroy(&a);
    ASSERT(a == NULL);
    bf_arena_destroy(&a); /* idempotent */
    ASSERT(a == NULL);
    bf_arena_destroy(NULL); /* safe on NULL */
}

static void test_alignment_of_every_size(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    /* odd sizes shift the bump pointer; every result must still be aligned */
    for (size_t size = 0; size < 300; size++) {
        void *p = bf_arena_alloc(a, size);
        ASSERT(p != NULL);
        if (!p) break;
        if (!s_aligned(p)) {
            BF_FAIL_AT("allocation of %zu bytes at %p is not aligned to %zu", size, p,
                       alignof(max_align_t));
            break;
        }
    }
    /* and for strings and printf */
    for (int i = 0; i < 200; i++) {
        char *s = bf_arena_strndup(a, "abcdefg", (size_t)(i % 7));
        char *f = bf_arena_printf(a, "%*d", i % 13, i);
        ASSERT(s && s_aligned(s));
        ASSERT(f && s_aligned(f));
    }
    bf_arena_destroy(&a);
}

static void test_zeroed_and_disjoint(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    enum { N = 2000 };
    unsigned char *blocks[N];
    size_t sizes[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = (size_t)(1 + (i * 37) % 97);
        blocks[i] = bf_arena_alloc(a, sizes[i]);
        ASSERT(blocks[i] != NULL);
        if (!blocks[i]) return;
        if (!s_all_zero(blocks[i], sizes[i])) BF_FAIL_AT("block %d is not zeroed", i);
        memset(blocks[i], (unsigned char)(i % 250 + 1), sizes[i]);
    }
    /* no later allocation overwrote an earlier one (they would if they overlap) */
    for (int i = 0; i < N; i++) {
        for (size_t k = 0; k < sizes[i]; k++) {
            if (blocks[i][k] != (unsigned char)(i % 250 + 1)) {
                BF_FAIL_AT("block %d byte %zu was overwritten", i, k);
                break;
            }
        }
    }
    bf_arena_destroy(&a);
}

static void test_zeroed_after_reset(void)
{
    /* reset hands the same bytes out again: they must be zeroed again */
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    unsigned char *p = bf_arena_alloc(a, 4096);
    ASSERT(p != NULL);
    if (!p) return;
    memset(p, 0xAB, 4096);
    bf_arena_reset(a);
    unsigned char *q = bf_arena_alloc(a, 4096);
    ASSERT(q != NULL);
    ASSERT(q == p); /* the kept chunk is reused from its start */
    ASSERT(q && s_all_zero(q, 4096));
    bf_arena_destroy(&a);
}

static void test_big_allocations(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    unsigned char *small1 = bf_arena_alloc(a, 10);
    ASSERT(small1 != NULL);
    if (!small1) return;
    memset(small1, 0x11, 10);
    /* far bigger than the 16 KiB chunk, twice, and one exactly around it */
    size_t bigs[] = {100000, 16 * 1024, 16 * 1024 + 1, 1u << 20};
    unsigned char *bp[4];
    for (int i = 0; i < 4; i++) {
        bp[i] = bf_arena_alloc(a, bigs[i]);
        ASSERT(bp[i] != NULL);
        if (!bp[i]) return;
        ASSERT(s_aligned(bp[i]));
        ASSERT(s_all_zero(bp[i], bigs[i]));
        memset(bp[i], 0x20 + i, bigs[i]);
    }
    unsigned char *small2 = bf_arena_alloc(a, 10);
    ASSERT(small2 != NULL);
    if (!small2) return;
    ASSERT(s_all_zero(small2, 10));
    memset(small2, 0x33, 10);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(bp[i][0], 0x20 + i);
        ASSERT_EQ(bp[i][bigs[i] - 1], 0x20 + i);
    }
    ASSERT_EQ(small1[0], 0x11);
    ASSERT_EQ(small1[9], 0x11);
    /* a big allocation that cannot be satisfied is refused, not wrapped */
    ASSERT(bf_arena_alloc(a, SIZE_MAX) == NULL);
    ASSERT(bf_arena_alloc(a, SIZE_MAX - 8) == NULL);
    ASSERT(bf_arena_strndup(a, "x", SIZE_MAX) == NULL);
    /* and the arena is still usable */
    char *s = bf_arena_strndup(a, "still fine", 10);
    ASSERT_STR_EQ(s, "still fine");

    /* reset frees the big chunks and keeps working, many times over */
    for (int round = 0; round < 50; round++) {
        bf_arena_reset(a);
        unsigned char *p = bf_arena_alloc(a, 50000);
        ASSERT(p != NULL);
        if (!p) break;
        ASSERT(s_all_zero(p, 50000));
        memset(p, 0xEE, 50000);
        char *t = bf_arena_printf(a, "round %d", round);
        char want[32];
        snprintf(want, sizeof want, "round %d", round);
        ASSERT_STR_EQ(t, want);
    }
    bf_arena_destroy(&a);
    ASSERT(a == NULL);
}

static void test_strndup(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    /* copies exactly len bytes, even from a buffer with no NUL after them */
    const char src[5] = {'h', 'e', 'l', 'l', 'o'};
    char *s = bf_arena_strndup(a, src, 5);
    ASSERT_STR_EQ(s, "hello");
    s = bf_arena_strndup(a, "hello world", 5);
    ASSERT_STR_EQ(s, "hello");
    ASSERT(s && s[5] == '\0');
    /* len 0 gives "" (s may even be NULL then: nothing is read) */
    s = bf_arena_strndup(a, "abc", 0);
    ASSERT_STR_EQ(s, "");
    /* UTF-8 bytes are copied as bytes */
    s = bf_arena_strndup(a, "扶贫村", strlen("扶贫村"));
    ASSERT_STR_EQ(s, "扶贫村");
    /* embedded NUL: the bytes after it are still copied */
    const char nul[4] = {'a', '\0', 'b', 'c'};
    s = bf_arena_strndup(a, nul, 4);
    ASSERT(s != NULL);
    ASSERT(s && memcmp(s, nul, 4) == 0 && s[4] == '\0');
    /* a string longer than a chunk */
    size_t big = 40000;
    char *src2 = malloc(big);
    ASSERT(src2 != NULL);
    if (src2) {
        memset(src2, 'z', big);
        s = bf_arena_strndup(a, src2, big);
        ASSERT(s != NULL);
        ASSERT(s && s[0] == 'z' && s[big - 1] == 'z' && s[big] == '\0');
        ASSERT_EQ(s ? strlen(s) : 0, big);
        free(src2);
    }
    bf_arena_destroy(&a);
}

static void test_printf(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    char *s = bf_arena_printf(a, "%s.%s[%d]", "members", "id", 2);
    ASSERT_STR_EQ(s, "members.id[2]");
    s = bf_arena_printf(a, "%s", "");
    ASSERT_STR_EQ(s, "");
    s = bf_arena_printf(a, "%lld", (long long)INT64_MIN);
    ASSERT_STR_EQ(s, "-9223372036854775808");
    /* longer than a chunk: the length is measured first, nothing truncated */
    s = bf_arena_printf(a, "%30000d|", 7);
    ASSERT(s != NULL);
    ASSERT_EQ(s ? strlen(s) : 0, 30001);
    ASSERT(s && s[29999] == '7' && s[30000] == '|');
    /* an earlier result survives later ones */
    char *first = bf_arena_printf(a, "first %d", 1);
    for (int i = 0; i < 1000; i++) (void)bf_arena_printf(a, "filler %d", i);
    ASSERT_STR_EQ(first, "first 1");
    bf_arena_destroy(&a);
}

static void test_reset_keeps_working(void)
{
    bf_arena_t *a = bf_arena_new();
    ASSERT(a != NULL);
    if (!a) return;
    for (int round = 0; round < 100; round++) {
        /* spill over several chunks each round */
        char *keep = NULL;
        for (int i = 0; i < 500; i++) {
            char *s = bf_arena_printf(a, "req %d item %d", round, i);
            ASSERT(s != NULL);
            if (!s) return;
            if (i == 0) keep = s;
            (void)bf_arena_alloc(a, 100);
        }
        char want[64];
        snprintf(want, sizeof want, "req %d item 0", round);
        ASSERT_STR_EQ(keep, want);
        bf_arena_reset(a);
    }
    /* reset of a fresh arena and double reset are harmless */
    bf_arena_reset(a);
    bf_arena_reset(a);
    char *s = bf_arena_strndup(a, "end", 3);
    ASSERT_STR_EQ(s, "end");
    bf_arena_destroy(&a);
}

int main(void)
{
    RUN(new_and_destroy);
    RUN(alignment_of_every_size);
    RUN(zeroed_and_disjoint);
    RUN(zeroed_after_reset);
    RUN(big_allocations);
    RUN(strndup);
    RUN(printf);
    RUN(reset_keeps_working);
    return TEST_REPORT();
}
