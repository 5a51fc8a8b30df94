/* bf_test.h: the tiny unit-test framework every tests/unit/test_*.c uses.
 *
 * A test is a function `static void test_name(void)` registered with TEST(name)
 * in main() via RUN(name). Assertions print both values and file:line and mark
 * the current test failed (the test goes on, so one run shows every failure).
 * Each test prints one line, "ok - name" or "not ok - name", and the program
 * ends with "# N passed, N failed" which tests/run.sh adds up. Exit status is
 * 0 only if nothing failed. Header-only on purpose: one include, no library.
 */
#ifndef BF_TEST_H
#define BF_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int bf_test_failed_now;
static int bf_test_passed;
static int bf_test_failed;

#define BF_FAIL_AT(...)                                                        \
    do {                                                                       \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                      \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        bf_test_failed_now = 1;                                                \
    } while (0)

#define ASSERT(cond)                                                           \
    do {                                                                       \
        if (!(cond)) BF_FAIL_AT("assertion failed: %s", #cond);               \
    } while (0)

#define ASSERT_EQ(a, b)                                                        \
    do {                                                                       \
        long long bf_a_ = (long long)(a), bf_b_ = (long long)(b);              \
        if (bf_a_ != bf_b_)                                                    \
            BF_FAIL_AT("%s == %s: %lld != %lld", #a, #b, bf_a_, bf_b_);       \
    } while (0)

#define ASSERT_NE(a, b)                                                        \
    do {                                                                       \
        long long bf_a_ = (long long)(a), bf_b_ = (long long)(b);              \
        if (bf_a_ == bf_b_)                                                    \
            BF_FAIL_AT("%s != %s: both %lld", #a, #b, bf_a_);                 \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                       \
        const char *bf_a_ = (a), *bf_b_ = (b);                                 \
        if (!bf_a_ || !bf_b_ || strcmp(bf_a_, bf_b_) != 0)                     \
            BF_FAIL_AT("%s == %s: \"%s\" != \"%s\"", #a, #b,                  \
                       bf_a_ ? bf_a_ : "(null)", bf_b_ ? bf_b_ : "(null)");    \
    } while (0)

#define RUN(name)                                                              \
    do {                                                                       \
        bf_test_failed_now = 0;                                                \
        test_##name();                                                         \
        if (bf_test_failed_now) {                                              \
            bf_test_failed++;                                                  \
            printf("not ok - %s\n", #name);                                    \
        } else {                                                               \
            bf_test_passed++;                                                  \
            printf("ok - %s\n", #name);                                        \
        }                                                                      \
        fflush(stdout);                                                        \
    } while (0)

#define TEST_REPORT()                                                          \
    (printf("# %d passed, %d failed\n", bf_test_passed, bf_test_failed),       \
     bf_test_failed ? 1 : 0)

#endif
