/* test_valid.c: unit tests for libcommon/bf_valid (UTF-8, resident ID numbers,
 * division codes, money, dates, phone numbers).
 *
 * Inputs that the module takes with an explicit length are copied into heap
 * buffers of exactly that length (s_exact), so under AddressSanitizer any read
 * past the stated length is reported instead of silently hitting a NUL.
 * Randomised tests use a fixed-seed PRNG so failures reproduce.
 */
#include "bf_test.h"
#include "bf_valid.h"

#include <stdint.h>
#include <stdlib.h>

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t s_rng_state = 0x9e3779b97f4a7c15u;

/* splitmix64: small, good enough, and reproducible across platforms. */
static uint64_t s_rand(void)
{
    uint64_t z = (s_rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static unsigned s_rand_below(unsigned n)
{
    return (unsigned)(s_rand() % n);
}

/* A heap copy of exactly len bytes (no NUL), so overreads trip ASan. The
 * copies are kept in a small ring and freed at the end of the run. */
#define EXACT_RING 64
static char *s_exact_ring[EXACT_RING];
static unsigned s_exact_next;

static const char *s_exact(const char *s, size_t len)
{
    unsigned slot = s_exact_next++ % EXACT_RING;
    free(s_exact_ring[slot]);
    s_exact_ring[slot] = malloc(len ? len : 1);
    if (!s_exact_ring[slot]) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (len)
        memcpy(s_exact_ring[slot], s, len);
    return s_exact_ring[slot];
}

static void s_exact_free_all(void)
{
    for (unsigned i = 0; i < EXACT_RING; i++) {
        free(s_exact_ring[i]);
        s_exact_ring[i] = NULL;
    }
}

/* Wrappers taking C string literals, checked at their exact length. */
static bool s_utf8(const char *lit, size_t len)
{
    return bf_valid_utf8(s_exact(lit, len), len);
}

static int s_id(const char *lit, char out[BF_ID_LEN + 1])
{
    size_t len = strlen(lit);
    return bf_id_check(s_exact(lit, len), len, out);
}

static int s_parse(const char *lit, int64_t *fen)
{
    size_t len = strlen(lit);
    return bf_money_parse_yuan(s_exact(lit, len), len, fen);
}

/* An ID from 17 given characters with the correct check digit appended, so
 * a test can make exactly one thing wrong (date, region) and nothing else. */
static void s_with_check(const char first17[17], char out[BF_ID_LEN + 1])
{
    memcpy(out, first17, 17);
    out[17] = bf_id_check_digit(first17);
    out[18] = '\0';
}

/* Reference UTF-8 decoder written differently from the module's: decode by
 * bit pattern first, then reject overlongs, surrogates and > U+10FFFF. */
static bool s_ref_utf8(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        uint32_t cp, min;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

static const int s_provinces[] = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32,
                                  33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
                                  46, 50, 51, 52, 53, 54, 61, 62, 63, 64,
                                  65, 71, 81, 82, 91};
#define N_PROVINCES (sizeof s_provinces / sizeof s_provinces[0])

static bool s_is_province(int p)
{
    for (size_t i = 0; i < N_PROVINCES; i++)
        if (s_provinces[i] == p)
            return true;
    return false;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

static void test_utf8_valid(void)
{
    ASSERT(bf_valid_utf8(NULL, 0));
    ASSERT(s_utf8("", 0));
    ASSERT(s_utf8("hello", 5));
    /* 帮扶 对象 王秀英 */
    const char *zh = "\xe5\xb8\xae\xe6\x89\xb6 \xe5\xaf\xb9\xe8\xb1\xa1 "
                     "\xe7\x8e\x8b\xe7\xa7\x80\xe8\x8b\xb1";
    ASSERT(s_utf8(zh, strlen(zh)));
    ASSERT(s_utf8("\xc2\x80", 2));          /* U+0080, smallest 2-byte */
    ASSERT(s_utf8("\xe0\xa0\x80", 3));      /* U+0800, smallest 3-byte */
    ASSERT(s_utf8("\xed\x9f\xbf", 3));      /* U+D7FF, just below surrogates */
    ASSERT(s_utf8("\xee\x80\x80", 3));      /* U+E000, just above */
    ASSERT(s_utf8("\xef\xbf\xbf", 3));      /* U+FFFF */
    ASSERT(s_utf8("\xf0\x90\x80\x80", 4));  /* U+10000 */
    ASSERT(s_utf8("\xf0\x9f\x98\x80", 4));  /* emoji */
    ASSERT(s_utf8("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF, the last */
    ASSERT(s_utf8("\xef\xbb\xbf" "abc", 6)); /* BOM is a valid character */
    /* Only len bytes count: a valid prefix of a longer buffer is valid. */
    ASSERT(s_utf8("ab\xe5\xb8\xae", 2));
}

static void test_utf8_invalid(void)
{
    ASSERT(!s_utf8("\xc0\xaf", 2));             /* overlong '/' */
    ASSERT(!s_utf8("\xc1\xbf", 2));             /* overlong U+007F */
    ASSERT(!s_utf8("\xc0\x80", 2));             /* overlong NUL (Java style) */
    ASSERT(!s_utf8("\xe0\x80\xaf", 3));         /* overlong 3-byte */
    ASSERT(!s_utf8("\xe0\x9f\xbf", 3));         /* overlong U+07FF */
    ASSERT(!s_utf8("\xf0\x80\x80\xaf", 4));     /* overlong 4-byte */
    ASSERT(!s_utf8("\xf0\x8f\xbf\xbf", 4));     /* overlong U+FFFF */
    ASSERT(!s_utf8("\xed\xa0\x80", 3));         /* U+D800 surrogate */
    ASSERT(!s_utf8("\xed\xbf\xbf", 3));         /* U+DFFF surrogate */
    ASSERT(!s_utf8("\xed\xa0\xbd\xed\xb8\x80", 6)); /* CESU-8 pair */
    ASSERT(!s_utf8("\xf4\x90\x80\x80", 4));     /* U+110000 */
    ASSERT(!s_utf8("\xf5\x80\x80\x80", 4));
    ASSERT(!s_utf8("\xf8\x88\x80\x80\x80", 5)); /* old 5-byte form */
    ASSERT(!s_utf8("\xfe", 1));
    ASSERT(!s_utf8("\xff", 1));
    ASSERT(!s_utf8("\x80", 1));                 /* stray continuation */
    ASSERT(!s_utf8("a\xbf" "b", 3));
    ASSERT(!s_utf8("\xe5\xb8", 2));             /* truncated 帮 */
    ASSERT(!s_utf8("\xe5\xb8\xae\xe6\x89", 5)); /* truncated at the end */
    ASSERT(!s_utf8("\xe5\xb8\xae", 2));         /* cut by len, not by NUL */
    ASSERT(!s_utf8("\xf0\x9f\x98", 3));
    ASSERT(!s_utf8("\xc2", 1));
    ASSERT(!s_utf8("\xe5" "a\xae", 3));         /* lead then ASCII */
    ASSERT(!s_utf8("ab\0cd", 5));               /* embedded NUL */
    ASSERT(!s_utf8("\0", 1));
    ASSERT(!s_utf8("\xe5\xb8\xae\0", 4));       /* trailing NUL counted */
}

/* Every 1-, 2- and 3-byte input, and random 4- and 5-byte ones, agree with
 * an independently written decoder. */
static void test_utf8_matches_reference(void)
{
    unsigned char b[5];
    long mismatches = 0;
    for (unsigned x = 0; x < 0x100; x++) {
        b[0] = (unsigned char)x;
        if (bf_valid_utf8((const char *)b, 1) != s_ref_utf8(b, 1))
            mismatches++;
    }
    for (unsigned x = 0; x < 0x10000; x++) {
        b[0] = (unsigned char)(x >> 8), b[1] = (unsigned char)x;
        if (bf_valid_utf8((const char *)b, 2) != s_ref_utf8(b, 2))
            mismatches++;
    }
    for (unsigned x = 0; x < 0x1000000; x++) {
        b[0] = (unsigned char)(x >> 16), b[1] = (unsigned char)(x >> 8);
        b[2] = (unsigned char)x;
        if (bf_valid_utf8((const char *)b, 3) != s_ref_utf8(b, 3))
            mismatches++;
    }
    for (int n = 0; n < 2000000; n++) {
        uint64_t r = s_rand();
        size_t len = 4 + (r & 1);
        b[0] = (unsigned char)(0xF0 | ((r >> 1) & 0x0F)); /* F0..FF lead */
        for (size_t k = 1; k < 5; k++) /* mostly continuation bytes */
            b[k] = (unsigned char)((r >> (8 * k)) & 0x3F) |
                   (((r >> (40 + k)) & 7) ? 0x80 : 0x00);
        if (bf_valid_utf8((const char *)b, len) != s_ref_utf8(b, len))
            mismatches++;
    }
    ASSERT_EQ(mismatches, 0);
}

static void test_utf8_chars(void)
{
    ASSERT_EQ(bf_valid_utf8_chars(NULL, 0), 0);
    ASSERT_EQ(bf_valid_utf8_chars(s_exact("abc", 3), 3), 3);
    /* 帮扶abc: two CJK characters of three bytes each plus three ASCII. */
    ASSERT_EQ(bf_valid_utf8_chars(s_exact("\xe5\xb8\xae\xe6\x89\xb6" "abc", 9), 9),
              5);
    ASSERT_EQ(bf_valid_utf8_chars(s_exact("\xf0\x9f\x98\x80", 4), 4), 1);
    ASSERT_EQ(bf_valid_utf8_chars(s_exact("\xc2\xa5" "100", 5), 5), 4); /* ¥100 */
    /* Malformed text is "too long" for any limit. */
    ASSERT(bf_valid_utf8_chars(s_exact("\xc0\xaf", 2), 2) == SIZE_MAX);
    ASSERT(bf_valid_utf8_chars(s_exact("ab\0", 3), 3) == SIZE_MAX);
    ASSERT(bf_valid_utf8_chars(s_exact("\xe5\xb8", 2), 2) == SIZE_MAX);
}

/* ---- Resident ID numbers ------------------------------------------------------ */

static void test_id_valid(void)
{
    char out[BF_ID_LEN + 1];
    ASSERT_EQ(s_id("11010519491231002X", out), BF_ID_OK);
    ASSERT_STR_EQ(out, "11010519491231002X");
    ASSERT_EQ(s_id("11010519491231002x", out), BF_ID_OK);
    ASSERT_STR_EQ(out, "11010519491231002X"); /* normalised */
    ASSERT_EQ(s_id("110101198001010010", out), BF_ID_OK);
    ASSERT_STR_EQ(out, "110101198001010010");
    ASSERT_EQ(s_id("11010519491231002X", NULL), BF_ID_OK); /* out optional */

    /* One number per check character, computed outside this code base, so a
     * wrong entry in the remainder table cannot hide behind itself. */
    static const char *vectors[] = {
        "653517190902144280", "119455204907029991", "320763204203104292",
        "651542199310029313", "515627208608106234", "822961192610196545",
        "657474191702094856", "113943192309140607", "111934203107067758",
        "821271209509198089", "44247120011102074X",
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        int rc = s_id(vectors[i], out);
        if (rc != BF_ID_OK)
            BF_FAIL_AT("vector %zu rejected: %s", i, bf_id_strerror(rc));
        ASSERT_EQ(bf_id_check_digit(vectors[i]), vectors[i][17]);
    }

    char id[BF_ID_LEN + 1];
    s_with_check("44030420000229123", id); /* 2000 is a leap year */
    ASSERT_EQ(s_id(id, out), BF_ID_OK);
    s_with_check("65010219000101123", id); /* lowest year */
    ASSERT_EQ(s_id(id, out), BF_ID_OK);
    s_with_check("91000021001231123", id); /* highest year, prefix 91 */
    ASSERT_EQ(s_id(id, out), BF_ID_OK);
    s_with_check("81000019991231000", id); /* Hong Kong residence permit */
    ASSERT_EQ(s_id(id, out), BF_ID_OK);
}

static void test_id_invalid(void)
{
    char out[BF_ID_LEN + 1];
    char id[BF_ID_LEN + 1];

    /* Wrong check digit, and out left empty. */
    memcpy(out, "stale", 6);
    ASSERT_EQ(s_id("110105194912310021", out), BF_ID_BAD_CHECK);
    ASSERT_STR_EQ(out, "");
    ASSERT_EQ(s_id("110101198001010011", out), BF_ID_BAD_CHECK);
    ASSERT_EQ(s_id("11010119800101001X", out), BF_ID_BAD_CHECK);

    /* Bad dates, each with a correct check digit so only the date is wrong. */
    s_with_check("11010519900230002", id); /* Feb 30 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    ASSERT_STR_EQ(out, "");
    s_with_check("11010519901301002", id); /* month 13 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010519900001002", id); /* month 0 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010519900100002", id); /* day 0 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010519900431002", id); /* Apr 31 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010519000229002", id); /* 1900 is not a leap year */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010518991231002", id); /* before 1900 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);
    s_with_check("11010521010101002", id); /* after 2100 */
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_DATE);

    /* Bad regions, again with correct check digits. */
    s_with_check("00010519491231002", id);
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_REGION);
    s_with_check("16010519491231002", id);
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_REGION);
    s_with_check("99010519491231002", id);
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_REGION);
    s_with_check("72010519491231002", id);
    ASSERT_EQ(s_id(id, out), BF_ID_BAD_REGION);

    /* Lengths: 17, 19, 15 (old first-generation cards), 0. */
    ASSERT_EQ(s_id("11010519491231002", out), BF_ID_BAD_LENGTH);
    ASSERT_EQ(s_id("11010519491231002X0", out), BF_ID_BAD_LENGTH);
    ASSERT_EQ(s_id("110105491231002", out), BF_ID_BAD_LENGTH);
    ASSERT_EQ(bf_id_check(NULL, 0, out), BF_ID_BAD_LENGTH);
    ASSERT_STR_EQ(out, "");

    /* Characters. */
    ASSERT_EQ(s_id("1101051949123A002X", out), BF_ID_BAD_CHAR);
    ASSERT_EQ(s_id("11010519491231002Y", out), BF_ID_BAD_CHAR);
    ASSERT_EQ(s_id("1101051949123100X2", out), BF_ID_BAD_CHAR); /* X not last */
    ASSERT_EQ(s_id(" 1010519491231002X", out), BF_ID_BAD_CHAR);
    ASSERT_EQ(s_id("11010519491231002 ", out), BF_ID_BAD_CHAR);
    ASSERT_EQ(s_id("\xef\xbc\x91" "101051949123100", out), BF_ID_BAD_CHAR); /* fullwidth 1 */
    ASSERT_EQ(bf_id_check(s_exact("1101051949\0" "231002X", 18), 18, out),
              BF_ID_BAD_CHAR);
}

static void test_id_strerror(void)
{
    const int codes[] = {BF_ID_OK, BF_ID_BAD_LENGTH, BF_ID_BAD_CHAR,
                         BF_ID_BAD_DATE, BF_ID_BAD_REGION, BF_ID_BAD_CHECK};
    const size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        const char *msg = bf_id_strerror(codes[i]);
        ASSERT(msg != NULL && msg[0] != '\0');
        ASSERT(strstr(msg, "11010519491231002") == NULL);
        for (size_t j = 0; j < i; j++)
            ASSERT(strcmp(msg, bf_id_strerror(codes[j])) != 0);
    }
    ASSERT(strstr(bf_id_strerror(BF_ID_BAD_CHECK), "check digit") != NULL);
    ASSERT(bf_id_strerror(-99) != NULL);
    ASSERT(bf_id_strerror(42) != NULL);
}

static void test_id_check_digit(void)
{
    ASSERT_EQ(bf_id_check_digit(s_exact("11010519491231002", 17)), 'X');
    ASSERT_EQ(bf_id_check_digit(s_exact("11010119800101001", 17)), '0');
    ASSERT_EQ(bf_id_check_digit(s_exact("44030419900307123", 17)), 'X');
    ASSERT_EQ(bf_id_check_digit(s_exact("1101051949123100a", 17)), '\0');
    ASSERT_EQ(bf_id_check_digit(s_exact("X1010519491231002", 17)), '\0');

    /* For any 17 digits exactly one of the 11 possible last characters
     * passes, and every remainder (hence every check character) occurs. */
    const char *alphabet = "0123456789X";
    bool seen[11] = {false};
    for (int n = 0; n < 5000; n++) {
        char id[BF_ID_LEN + 1];
        for (int i = 0; i < 17; i++)
            id[i] = (char)('0' + s_rand_below(10));
        char want = bf_id_check_digit(id);
        const char *pos = want ? strchr(alphabet, want) : NULL;
        ASSERT(pos != NULL);
        if (pos)
            seen[pos - alphabet] = true;
        int passing = 0;
        for (int k = 0; k < 11; k++) {
            id[17] = alphabet[k];
            char norm[BF_ID_LEN + 1];
            int rc = bf_id_check(id, 18, norm);
            if (rc == BF_ID_OK)
                passing++;
            /* Random digits are mostly bad dates/regions; never a bad char. */
            ASSERT_NE(rc, BF_ID_BAD_CHAR);
        }
        ASSERT(passing <= 1);
    }
    for (int k = 0; k < 11; k++)
        ASSERT(seen[k]);
}

static void test_id_mask(void)
{
    char out[BF_ID_LEN + 1];
    bf_id_mask("11010519491231002X", out);
    ASSERT_STR_EQ(out, "110105************");
    bf_id_mask("110101198001010010", out);
    ASSERT_STR_EQ(out, "110101************");

    char inplace[BF_ID_LEN + 1] = "11010519491231002X";
    bf_id_mask(inplace, inplace);
    ASSERT_STR_EQ(inplace, "110105************");

    /* Fails closed on anything that is not 18 characters. */
    char short_id[BF_ID_LEN + 1] = "1101051949";
    bf_id_mask(short_id, out);
    ASSERT_STR_EQ(out, "******************");
    char empty[BF_ID_LEN + 1] = "";
    bf_id_mask(empty, out);
    ASSERT_STR_EQ(out, "******************");
    char unterminated[BF_ID_LEN + 1];
    memset(unterminated, '7', sizeof unterminated);
    bf_id_mask(unterminated, out);
    ASSERT_STR_EQ(out, "******************");
}

static void test_id_generate(void)
{
    char out[BF_ID_LEN + 1];
    bf_id_generate("110105", 1949, 12, 31, 2, out);
    ASSERT_STR_EQ(out, "11010519491231002X");
    bf_id_generate("110101", 1980, 1, 1, 1, out);
    ASSERT_STR_EQ(out, "110101198001010010");

    for (int n = 0; n < 20000; n++) {
        char region[7];
        int p = s_provinces[s_rand_below(N_PROVINCES)];
        snprintf(region, sizeof region, "%02d%04u", p, s_rand_below(10000));
        int year = 1900 + (int)s_rand_below(201);
        int month = 1 + (int)s_rand_below(12);
        int day = 1 + (int)s_rand_below(31);
        unsigned seq = s_rand_below(1000);
        bool real = !(day > 30 && (month == 4 || month == 6 || month == 9 ||
                                   month == 11)) &&
                    !(month == 2 &&
                      day > ((year % 4 == 0 && year % 100 != 0) ||
                                     year % 400 == 0
                                 ? 29
                                 : 28));
        bf_id_generate(region, year, month, day, seq, out);
        if (!real) {
            ASSERT_STR_EQ(out, "");
            continue;
        }
        char norm[BF_ID_LEN + 1];
        int rc = bf_id_check(s_exact(out, strlen(out)), strlen(out), norm);
        if (rc != BF_ID_OK)
            BF_FAIL_AT("generated %s: %s", out, bf_id_strerror(rc));
        ASSERT_EQ(strlen(out), 18);
        ASSERT(memcmp(out, region, 6) == 0);
        char tail[48];
        snprintf(tail, sizeof tail, "%04d%02d%02d%03u", year, month, day, seq);
        ASSERT(memcmp(out + 6, tail, 11) == 0);
    }

    /* Arguments that cannot make a valid number give "". */
    bf_id_generate("990105", 1990, 1, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("11a105", 1990, 1, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1899, 1, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 2101, 1, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1990, 2, 30, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1990, 13, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1990, 0, 1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1990, 1, -1, 1, out);
    ASSERT_STR_EQ(out, "");
    bf_id_generate("110105", 1990, 1, 1, 1000, out);
    ASSERT_STR_EQ(out, "");
}

/* ---- Division codes ----------------------------------------------------------- */

static bool s_div_ok(const char *lit)
{
    size_t len = strlen(lit);
    return bf_division_check(s_exact(lit, len), len) == 0;
}

static void test_division_check(void)
{
    ASSERT(s_div_ok("110000000000"));
    ASSERT(s_div_ok("110105001001"));
    ASSERT(s_div_ok("654326100201"));
    ASSERT(s_div_ok("820000000000"));
    ASSERT(!s_div_ok("11010500100"));   /* 11 digits */
    ASSERT(!s_div_ok("1101050010010")); /* 13 digits */
    ASSERT(!s_div_ok(""));
    ASSERT(!s_div_ok("11010500100a"));
    ASSERT(!s_div_ok("-10105001001"));
    ASSERT(!s_div_ok("000000000000"));
    ASSERT(!s_div_ok("990000000000"));
    ASSERT(!s_div_ok("160105001001"));
    ASSERT_EQ(bf_division_check(NULL, 0), -1);

    /* Every two-digit prefix: accepted exactly when it is in the list. */
    for (int p = 0; p < 100; p++) {
        char code[13];
        snprintf(code, sizeof code, "%02d0000000000", p);
        ASSERT_EQ(s_div_ok(code), s_is_province(p));
    }
}

static void test_division_level(void)
{
    ASSERT_STR_EQ(bf_division_level(s_exact("110000000000", 12)), "province");
    ASSERT_STR_EQ(bf_division_level(s_exact("110100000000", 12)), "city");
    ASSERT_STR_EQ(bf_division_level(s_exact("110105000000", 12)), "county");
    ASSERT_STR_EQ(bf_division_level(s_exact("110105001000", 12)), "township");
    ASSERT_STR_EQ(bf_division_level(s_exact("110105001001", 12)), "village");
    ASSERT_STR_EQ(bf_division_level(s_exact("110105100000", 12)), "township");
    ASSERT_STR_EQ(bf_division_level(s_exact("110105000001", 12)), "village");
    ASSERT_STR_EQ(bf_division_level(s_exact("429004000000", 12)), "county");
    ASSERT_STR_EQ(bf_division_level(s_exact("110001000000", 12)), "county");
    ASSERT(bf_division_level(s_exact("11010500100x", 12)) == NULL);
}

static void test_division_parent(void)
{
    char out[13];
    ASSERT_EQ(bf_division_parent(s_exact("110105001001", 12), out), 0);
    ASSERT_STR_EQ(out, "110105001000");
    ASSERT_EQ(bf_division_parent(s_exact("110105001000", 12), out), 0);
    ASSERT_STR_EQ(out, "110105000000");
    ASSERT_EQ(bf_division_parent(s_exact("110105000000", 12), out), 0);
    ASSERT_STR_EQ(out, "110100000000");
    ASSERT_EQ(bf_division_parent(s_exact("110100000000", 12), out), 0);
    ASSERT_STR_EQ(out, "110000000000");
    memcpy(out, "untouched", 10);
    ASSERT_EQ(bf_division_parent(s_exact("110000000000", 12), out), -1);
    ASSERT_STR_EQ(out, "untouched");
    ASSERT_EQ(bf_division_parent(s_exact("1101050010x1", 12), out), -1);

    /* Zeros inside a level do not end it: 100 is a township number. */
    ASSERT_EQ(bf_division_parent(s_exact("110105100000", 12), out), 0);
    ASSERT_STR_EQ(out, "110105000000");
    /* A county directly under a province. */
    ASSERT_EQ(bf_division_parent(s_exact("110001000000", 12), out), 0);
    ASSERT_STR_EQ(out, "110000000000");

    /* Walking up from any village reaches the province in at most 4 steps,
     * and every step is a valid code at a higher level. */
    for (int n = 0; n < 2000; n++) {
        char code[13];
        snprintf(code, sizeof code, "%02d%02u%02u%03u%03u",
                 s_provinces[s_rand_below(N_PROVINCES)], s_rand_below(100),
                 s_rand_below(100), s_rand_below(1000), s_rand_below(1000));
        int steps = 0;
        while (bf_division_parent(code, out) == 0) {
            ASSERT_EQ(bf_division_check(out, 12), 0);
            ASSERT(strcmp(out, code) < 0);
            memcpy(code, out, sizeof code);
            if (++steps > 4)
                break;
        }
        ASSERT(steps <= 4);
        ASSERT_STR_EQ(bf_division_level(code), "province");
    }
}

/* ---- Money ---------------------------------------------------------------------- */

static void test_money_arith(void)
{
    int64_t r = 7;
    ASSERT_EQ(bf_money_add(150, 250, &r), 0);
    ASSERT_EQ(r, 400);
    ASSERT_EQ(bf_money_add(INT64_MAX, 0, &r), 0);
    ASSERT_EQ(r, INT64_MAX);
    r = 7;
    ASSERT_EQ(bf_money_add(INT64_MAX, 1, &r), -1);
    ASSERT_EQ(r, 7); /* untouched */
    ASSERT_EQ(bf_money_add(INT64_MIN, -1, &r), -1);
    ASSERT_EQ(bf_money_add(INT64_MAX, INT64_MIN, &r), 0);
    ASSERT_EQ(r, -1);

    ASSERT_EQ(bf_money_sub(100, 250, &r), 0);
    ASSERT_EQ(r, -150);
    r = 7;
    ASSERT_EQ(bf_money_sub(INT64_MIN, 1, &r), -1);
    ASSERT_EQ(bf_money_sub(0, INT64_MIN, &r), -1);
    ASSERT_EQ(bf_money_sub(INT64_MAX, -1, &r), -1);
    ASSERT_EQ(r, 7);

    ASSERT_EQ(bf_money_mul(150000, 12, &r), 0); /* 1500 yuan x 12 months */
    ASSERT_EQ(r, 1800000);
    ASSERT_EQ(bf_money_mul(-5, 3, &r), 0);
    ASSERT_EQ(r, -15);
    r = 7;
    ASSERT_EQ(bf_money_mul(INT64_MAX, 2, &r), -1);
    ASSERT_EQ(bf_money_mul(INT64_MIN, -1, &r), -1);
    ASSERT_EQ(bf_money_mul(INT64_MAX / 2 + 1, 2, &r), -1);
    ASSERT_EQ(bf_money_mul((int64_t)1 << 32, (int64_t)1 << 31, &r), -1);
    ASSERT_EQ(r, 7);
    ASSERT_EQ(bf_money_mul(INT64_MAX, 1, &r), 0);
    ASSERT_EQ(r, INT64_MAX);
    ASSERT_EQ(bf_money_mul(INT64_MIN, 1, &r), 0);
    ASSERT_EQ(r, INT64_MIN);
}

static void test_money_parse(void)
{
    int64_t f = 0;
    ASSERT_EQ(s_parse("1234", &f), 0);
    ASSERT_EQ(f, 123400);
    ASSERT_EQ(s_parse("1234.5", &f), 0);
    ASSERT_EQ(f, 123450);
    ASSERT_EQ(s_parse("1234.56", &f), 0);
    ASSERT_EQ(f, 123456);
    ASSERT_EQ(s_parse("-3.20", &f), 0);
    ASSERT_EQ(f, -320);
    ASSERT_EQ(s_parse("+7.05", &f), 0);
    ASSERT_EQ(f, 705);
    ASSERT_EQ(s_parse("0.01", &f), 0);
    ASSERT_EQ(f, 1);
    ASSERT_EQ(s_parse("-0.05", &f), 0);
    ASSERT_EQ(f, -5);
    ASSERT_EQ(s_parse("-0", &f), 0);
    ASSERT_EQ(f, 0);
    ASSERT_EQ(s_parse("007.1", &f), 0);
    ASSERT_EQ(f, 710);
    ASSERT_EQ(s_parse("92233720368547758.07", &f), 0);
    ASSERT_EQ(f, INT64_MAX);
    ASSERT_EQ(s_parse("-92233720368547758.08", &f), 0);
    ASSERT(f == INT64_MIN);
    ASSERT_EQ(s_parse("00000000000000000000000000000092233720368547758.07", &f), 0);
    ASSERT_EQ(f, INT64_MAX);

    static const char *bad[] = {
        "", "+", "-", ".", "1.", ".5", "-.5", "1.234", "1.2.3", " 1", "1 ",
        "1 .5", "1e3", "1E3", "0x10", "1,000", "1_000", "--1", "+-1", "-+1",
        "++1", "1-", "1.-5", "1.+5", "inf", "nan", "\xef\xbc\x91",
        "92233720368547758.08",    /* INT64_MAX + 1 */
        "-92233720368547758.09",   /* INT64_MIN - 1 */
        "92233720368547759",       /* overflows only after scaling by 100 */
        "99999999999999999999999", /* overflows while reading digits */
        "184467440737095516.16",   /* 2^64 fen: wraps to 0 if unchecked */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = 42;
        if (s_parse(bad[i], &f) != -1)
            BF_FAIL_AT("accepted \"%s\"", bad[i]);
        if (f != 42)
            BF_FAIL_AT("\"%s\" wrote the output on failure", bad[i]);
    }
    f = 42;
    ASSERT_EQ(bf_money_parse_yuan(NULL, 0, &f), -1);
    ASSERT_EQ(bf_money_parse_yuan(s_exact("1\0" "2", 3), 3, &f), -1);
    /* Only len bytes are read: "12.345" cut at 5 is "12.34". */
    ASSERT_EQ(bf_money_parse_yuan(s_exact("12.345", 5), 5, &f), 0);
    ASSERT_EQ(f, 1234);
}

static void test_money_format(void)
{
    char buf[BF_MONEY_FMT_MAX];
    ASSERT_EQ(bf_money_format(123456, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "1234.56");
    ASSERT_EQ(bf_money_format(-5, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "-0.05");
    ASSERT_EQ(bf_money_format(0, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "0.00");
    ASSERT_EQ(bf_money_format(-320, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "-3.20");
    ASSERT_EQ(bf_money_format(100, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "1.00");
    ASSERT_EQ(bf_money_format(INT64_MAX, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "92233720368547758.07");
    ASSERT_EQ(bf_money_format(INT64_MIN, buf, sizeof buf), 0);
    ASSERT_STR_EQ(buf, "-92233720368547758.08");
    ASSERT_EQ(strlen(buf) + 1, BF_MONEY_FMT_MAX);

    /* Too small: -1 and an empty string, never a truncated amount. */
    char small[8];
    ASSERT_EQ(bf_money_format(123456, small, 8), 0); /* "1234.56" fits */
    ASSERT_STR_EQ(small, "1234.56");
    ASSERT_EQ(bf_money_format(1234567, small, 8), -1);
    ASSERT_STR_EQ(small, "");
    ASSERT_EQ(bf_money_format(INT64_MIN, buf, BF_MONEY_FMT_MAX - 1), -1);
    ASSERT_STR_EQ(buf, "");
    small[0] = 'z';
    ASSERT_EQ(bf_money_format(1, small, 0), -1);
    ASSERT_EQ(small[0], 'z');
}

static void test_money_round_trip(void)
{
    static const int64_t fixed[] = {0, 1, -1, 99, -99, 100, -100, 123456,
                                    INT64_MAX, INT64_MIN, INT64_MAX - 1,
                                    INT64_MIN + 1};
    char buf[BF_MONEY_FMT_MAX];
    int64_t back;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        ASSERT_EQ(bf_money_format(fixed[i], buf, sizeof buf), 0);
        ASSERT_EQ(s_parse(buf, &back), 0);
        ASSERT(back == fixed[i]);
    }
    for (int n = 0; n < 100000; n++) {
        uint64_t r = s_rand();
        /* Half full-range, half amounts of everyday size. */
        int64_t v = (n & 1) ? (int64_t)r : (int64_t)(r % 20000001) - 10000000;
        back = ~v;
        if (bf_money_format(v, buf, sizeof buf) != 0 || s_parse(buf, &back) != 0 ||
            back != v)
            BF_FAIL_AT("round trip of %" PRId64 " via \"%s\" gave %" PRId64, v,
                       buf, back);
    }
    /* Text in canonical form comes back unchanged. */
    static const char *canon[] = {"0.00", "-0.05", "1234.56", "-3.20",
                                  "10000.00"};
    for (size_t i = 0; i < sizeof canon / sizeof canon[0]; i++) {
        ASSERT_EQ(s_parse(canon[i], &back), 0);
        ASSERT_EQ(bf_money_format(back, buf, sizeof buf), 0);
        ASSERT_STR_EQ(buf, canon[i]);
    }
}

/* ---- Dates and phone numbers -------------------------------------------------------- */

static int s_date(const char *lit, int *y, int *m, int *d)
{
    size_t len = strlen(lit);
    return bf_valid_date(s_exact(lit, len), len, y, m, d);
}

static void test_valid_date(void)
{
    int y = 0, m = 0, d = 0;
    ASSERT_EQ(s_date("2024-02-29", &y, &m, &d), 0);
    ASSERT_EQ(y, 2024);
    ASSERT_EQ(m, 2);
    ASSERT_EQ(d, 29);
    ASSERT_EQ(s_date("2000-02-29", &y, &m, &d), 0);
    ASSERT_EQ(s_date("0001-01-01", &y, &m, &d), 0);
    ASSERT_EQ(s_date("9999-12-31", &y, &m, &d), 0);
    ASSERT_EQ(s_date("2023-04-30", NULL, NULL, NULL), 0);
    ASSERT_EQ(s_date("2023-01-31", NULL, &m, NULL), 0);
    ASSERT_EQ(m, 1);

    static const char *bad[] = {
        "2023-02-29", "1900-02-29", "2024-02-30", "2024-13-01", "2024-00-10",
        "2024-01-00", "2024-04-31", "2024-01-32", "0000-01-01", "2024-1-01",
        "2024-01-1",  "24-01-01",   "2024/01/01", "2024-01-01 ", " 2024-01-01",
        "2024-01-01T00:00", "+024-01-01", "-024-01-01", "2024-0a-01", "",
        "20240101",   "2024--1-01", "2024-01-+1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        y = m = d = -7;
        if (s_date(bad[i], &y, &m, &d) != -1)
            BF_FAIL_AT("accepted \"%s\"", bad[i]);
        if (y != -7 || m != -7 || d != -7)
            BF_FAIL_AT("\"%s\" wrote outputs on failure", bad[i]);
    }
    ASSERT_EQ(bf_valid_date(NULL, 0, &y, &m, &d), -1);
    ASSERT_EQ(bf_valid_date(s_exact("2024-01-01", 10), 9, &y, &m, &d), -1);
}

static bool s_phone(const char *lit)
{
    size_t len = strlen(lit);
    return bf_valid_phone(s_exact(lit, len), len);
}

static void test_valid_phone(void)
{
    ASSERT(s_phone("13800138000"));
    ASSERT(s_phone("19912345678"));
    ASSERT(s_phone("15000000000"));
    ASSERT(!s_phone("12345678901")); /* second digit 2 */
    ASSERT(!s_phone("10000000000"));
    ASSERT(!s_phone("23800138000")); /* does not start with 1 */
    ASSERT(!s_phone("1380013800"));  /* 10 digits */
    ASSERT(!s_phone("138001380000")); /* 12 digits */
    ASSERT(!s_phone("1380013800a"));
    ASSERT(!s_phone("+8613800138000"));
    ASSERT(!s_phone("138 0013 8000"));
    ASSERT(!s_phone("138-00138000"));
    ASSERT(!s_phone(""));
    ASSERT(!bf_valid_phone(NULL, 0));
    ASSERT(!bf_valid_phone(s_exact("1380013800\0", 11), 11));
}

int main(void)
{
    RUN(utf8_valid);
    RUN(utf8_invalid);
    RUN(utf8_matches_reference);
    RUN(utf8_chars);
    RUN(id_valid);
    RUN(id_invalid);
    RUN(id_strerror);
    RUN(id_check_digit);
    RUN(id_mask);
    RUN(id_generate);
    RUN(division_check);
    RUN(division_level);
    RUN(division_parent);
    RUN(money_arith);
    RUN(money_parse);
    RUN(money_format);
    RUN(money_round_trip);
    RUN(valid_date);
    RUN(valid_phone);
    s_exact_free_all();
    return TEST_REPORT();
}
