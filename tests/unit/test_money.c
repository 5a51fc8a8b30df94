/* test_money.c: unit tests for cli/money (the CLI's --yuan: yuan text to
 * integer fen and back, exactly, and the rewriting of *_fen members of JSON
 * params). The module lives in cli/; its source is included here, as
 * test_csvread.c does. */
#include "bf_test.h"

#include "../../cli/money.c"

#include <stdlib.h>

static int64_t s_ok(const char *s)
{
    int64_t fen = -777;
    char err[128] = "";
    if (money_parse_yuan(s, &fen, err, sizeof err) != 0) BF_FAIL_AT("\"%s\" refused: %s", s, err);
    return fen;
}

/* returns the error text of a refused amount ("" if it was accepted) */
static const char *s_bad(const char *s)
{
    static char err[128];
    int64_t fen = 4242;
    err[0] = '\0';
    if (money_parse_yuan(s, &fen, err, sizeof err) == 0) {
        BF_FAIL_AT("\"%s\" accepted as %lld", s, (long long)fen);
        return "";
    }
    if (fen != 4242) BF_FAIL_AT("\"%s\": *fen changed on error", s);
    return err;
}

static void test_parse_whole_and_decimals(void)
{
    ASSERT_EQ(s_ok("12.34"), 1234);
    ASSERT_EQ(s_ok("12.3"), 1230);
    ASSERT_EQ(s_ok("12."), 1200);
    ASSERT_EQ(s_ok("12"), 1200);
    ASSERT_EQ(s_ok("0"), 0);
    ASSERT_EQ(s_ok("0.01"), 1);
    ASSERT_EQ(s_ok(".5"), 50);
    ASSERT_EQ(s_ok("007.05"), 705);
    ASSERT_EQ(s_ok("-0.05"), -5);
    ASSERT_EQ(s_ok("+3.10"), 310);
    /* no float rounding: 0.29 * 100 is 28.999999999999996 in binary */
    ASSERT_EQ(s_ok("0.29"), 29);
    ASSERT_EQ(s_ok("1.15"), 115);
    ASSERT_EQ(s_ok("4035225266123964.16"), 403522526612396416LL);
}

static void test_parse_limits_are_exact(void)
{
    ASSERT_EQ(s_ok("92233720368547758.07"), INT64_MAX);
    ASSERT_EQ(s_ok("-92233720368547758.08"), INT64_MIN);
    ASSERT(strstr(s_bad("92233720368547758.08"), "too large"));
    ASSERT(strstr(s_bad("-92233720368547758.09"), "too large"));
    ASSERT(strstr(s_bad("99999999999999999999999"), "too large"));
}

static void test_parse_refuses_bad_text(void)
{
    ASSERT(strstr(s_bad("12.345"), "more than 2 decimals"));
    ASSERT(strstr(s_bad("0.001"), "more than 2 decimals"));
    ASSERT(strstr(s_bad(""), "not an amount"));
    ASSERT(strstr(s_bad("."), "not an amount"));
    ASSERT(strstr(s_bad("-"), "not an amount"));
    ASSERT(strstr(s_bad("abc"), "not an amount"));
    ASSERT(strstr(s_bad("1,234.00"), "not an amount"));
    ASSERT(strstr(s_bad(" 12"), "not an amount"));
    ASSERT(strstr(s_bad("12 "), "not an amount"));
    ASSERT(strstr(s_bad("1e3"), "not an amount"));
    ASSERT(strstr(s_bad("1.2.3"), "not an amount"));
    ASSERT(strstr(s_bad("--1"), "not an amount"));
    ASSERT(strstr(s_bad("12元"), "not an amount"));
    ASSERT(strstr(s_bad("１２"), "not an amount")); /* fullwidth digits */
    int64_t fen;
    char err[64];
    ASSERT_EQ(money_parse_yuan(NULL, &fen, err, sizeof err), -1);
    ASSERT_EQ(money_parse_yuan_n("12.34xyz", 4, &fen, err, sizeof err), 0);
    ASSERT_EQ(fen, 1230);
}

static void test_format_round_trips(void)
{
    char buf[32];
    ASSERT_STR_EQ(money_format_yuan(1234, buf, sizeof buf), "12.34");
    ASSERT_STR_EQ(money_format_yuan(5, buf, sizeof buf), "0.05");
    ASSERT_STR_EQ(money_format_yuan(-5, buf, sizeof buf), "-0.05");
    ASSERT_STR_EQ(money_format_yuan(0, buf, sizeof buf), "0.00");
    ASSERT_STR_EQ(money_format_yuan(100, buf, sizeof buf), "1.00");
    ASSERT_STR_EQ(money_format_yuan(INT64_MAX, buf, sizeof buf), "92233720368547758.07");
    ASSERT_STR_EQ(money_format_yuan(INT64_MIN, buf, sizeof buf), "-92233720368547758.08");
    const int64_t vals[] = {0, 1, -1, 99, 100, 101, 123456789, -987654321, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        int64_t back = 0;
        char err[64];
        money_format_yuan(vals[i], buf, sizeof buf);
        ASSERT_EQ(money_parse_yuan(buf, &back, err, sizeof err), 0);
        ASSERT_EQ(back, vals[i]);
    }
}

static char *s_json(const char *in, int want_rc, char *err, size_t errlen)
{
    char *out = NULL;
    int rc = money_json_yuan_to_fen(in, &out, err, errlen);
    if (rc != want_rc) BF_FAIL_AT("%s: rc %d (%s)", in, rc, err);
    if (rc != 0 && out) BF_FAIL_AT("%s: out set on error", in);
    return out;
}

static void test_json_fen_members_read_as_yuan(void)
{
    char err[256] = "";
    char *o = s_json("{\"amount_fen\": 12.34, \"year\": 2024}", 0, err, sizeof err);
    ASSERT_STR_EQ(o, "{\"amount_fen\": 1234, \"year\": 2024}");
    free(o);
    o = s_json("{\"funding\":[{\"source_id\":3,\"amount_fen\":\"1500.5\"},"
               "{\"source_id\":4,\"amount_fen\":7}],\"name\":\"x_fen\"}",
               0, err, sizeof err);
    ASSERT_STR_EQ(o, "{\"funding\":[{\"source_id\":3,\"amount_fen\":150050},"
                     "{\"source_id\":4,\"amount_fen\":700}],\"name\":\"x_fen\"}");
    free(o);
    /* a string value ending in _fen is not a key; escaped quotes do not end a string */
    o = s_json("{\"note\": \"say \\\"a_fen\\\": 1.5\", \"b\": \"c_fen\"}", 0, err, sizeof err);
    ASSERT_STR_EQ(o, "{\"note\": \"say \\\"a_fen\\\": 1.5\", \"b\": \"c_fen\"}");
    free(o);
    o = s_json("{\"amount_fen\": null}", 0, err, sizeof err);
    ASSERT_STR_EQ(o, "{\"amount_fen\": null}");
    free(o);
    o = s_json("{\"amount_fen\":-0.5}", 0, err, sizeof err);
    ASSERT_STR_EQ(o, "{\"amount_fen\":-50}");
    free(o);
}

static void test_json_bad_amount_names_the_key(void)
{
    char err[256] = "";
    ASSERT(s_json("{\"amount_fen\": 12.345}", -1, err, sizeof err) == NULL);
    ASSERT(strstr(err, "amount_fen") && strstr(err, "12.345") && strstr(err, "more than 2 decimals"));
    ASSERT(s_json("{\"x\": 1, \"floor_fen\": \"ten\"}", -1, err, sizeof err) == NULL);
    ASSERT(strstr(err, "floor_fen") && strstr(err, "not an amount"));
    ASSERT(s_json("{\"amount_fen\": 1e5}", -1, err, sizeof err) == NULL);
}

int main(void)
{
    RUN(parse_whole_and_decimals);
    RUN(parse_limits_are_exact);
    RUN(parse_refuses_bad_text);
    RUN(format_round_trips);
    RUN(json_fen_members_read_as_yuan);
    RUN(json_bad_amount_names_the_key);
    return TEST_REPORT();
}
