/* bf_valid.c: field validation for untrusted input (UTF-8 text, resident ID
 * numbers, division codes, money in fen, dates, mobile numbers). Contracts are
 * in bf_valid.h. Everything is table- or arithmetic-driven and deliberately
 * locale-free: isdigit() and friends depend on the locale and take int, so
 * bytes are compared against ASCII ranges directly.
 */
#include "bf_valid.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static bool s_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool s_all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!s_is_digit(s[i]))
            return false;
    return true;
}

/* Value of n ASCII digits; the caller has checked they are digits and that
 * n is small enough (at most 4 here) not to overflow. */
static int s_digits_value(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static bool s_is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool s_real_date(int y, int m, int d)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1)
        return false;
    int max = days[m - 1] + (m == 2 && s_is_leap(y) ? 1 : 0);
    return d <= max;
}

/* Province-level prefixes of GB/T 2260 as used by both ID numbers and
 * statistical division codes, plus 71 (Taiwan), 81/82 (Hong Kong, Macao
 * residence permits) and 91 as the project requires. */
static bool s_province_ok(const char two[2])
{
    if (!s_is_digit(two[0]) || !s_is_digit(two[1]))
        return false;
    int p = (two[0] - '0') * 10 + (two[1] - '0');
    return (p >= 11 && p <= 15) || (p >= 21 && p <= 23) ||
           (p >= 31 && p <= 37) || (p >= 41 && p <= 46) ||
           (p >= 50 && p <= 54) || (p >= 61 && p <= 65) || p == 71 ||
           p == 81 || p == 82 || p == 91;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

bool bf_valid_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        /* Table 3-7: the lead byte fixes the length and narrows the range
         * of the first continuation byte; that narrowing is what excludes
         * overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2;
            lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            need = 2;
        } else if (c == 0xED) {
            need = 2;
            hi = 0x9F;
        } else if (c == 0xF0) {
            need = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3;
            hi = 0x8F;
        } else {
            return false; /* 80..C1 stray/overlong lead, F5..FF */
        }
        if (len - i - 1 < need)
            return false;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

size_t bf_valid_utf8_chars(const char *s, size_t len)
{
    if (!bf_valid_utf8(s, len))
        return SIZE_MAX;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    return n;
}

/* ---- Resident ID numbers --------------------------------------------------- */

char bf_id_check_digit(const char first17[17])
{
    static const int weights[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6,
                                    3, 7, 9, 10, 5, 8, 4, 2};
    static const char map[] = "10X98765432";
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        if (!s_is_digit(first17[i]))
            return '\0';
        sum += (first17[i] - '0') * weights[i];
    }
    return map[sum % 11];
}

int bf_id_check(const char *s, size_t len, char out[BF_ID_LEN + 1])
{
    if (out)
        out[0] = '\0';
    if (len != BF_ID_LEN)
        return BF_ID_BAD_LENGTH;
    if (!s_all_digits(s, 17) ||
        !(s_is_digit(s[17]) || s[17] == 'X' || s[17] == 'x'))
        return BF_ID_BAD_CHAR;
    int year = s_digits_value(s + 6, 4);
    if (year < 1900 || year > 2100 ||
        !s_real_date(year, s_digits_value(s + 10, 2), s_digits_value(s + 12, 2)))
        return BF_ID_BAD_DATE;
    if (!s_province_ok(s))
        return BF_ID_BAD_REGION;
    char last = s[17] == 'x' ? 'X' : s[17];
    if (bf_id_check_digit(s) != last)
        return BF_ID_BAD_CHECK;
    if (out) {
        memcpy(out, s, 17);
        out[17] = last;
        out[18] = '\0';
    }
    return BF_ID_OK;
}

const char *bf_id_strerror(int code)
{
    switch (code) {
    case BF_ID_OK:
        return "ID number is valid";
    case BF_ID_BAD_LENGTH:
        return "ID number must be exactly 18 characters";
    case BF_ID_BAD_CHAR:
        return "ID number must be 17 digits followed by a digit or X";
    case BF_ID_BAD_DATE:
        return "ID number birth date is not a real date between 1900 and 2100";
    case BF_ID_BAD_REGION:
        return "ID number region code does not start with a known province";
    case BF_ID_BAD_CHECK:
        return "ID number check digit does not match";
    default:
        return "ID number is invalid";
    }
}

void bf_id_mask(const char id18[BF_ID_LEN + 1], char out[BF_ID_LEN + 1])
{
    /* Each out[i] depends only on id18[i], so out == id18 is safe. */
    bool shaped = strnlen(id18, BF_ID_LEN + 1) == BF_ID_LEN;
    for (int i = 0; i < BF_ID_LEN; i++)
        out[i] = shaped && i < 6 ? id18[i] : '*';
    out[BF_ID_LEN] = '\0';
}

void bf_id_generate(const char region6[6], int year, int month, int day,
                    unsigned seq3, char out[BF_ID_LEN + 1])
{
    out[0] = '\0';
    if (!s_all_digits(region6, 6) || !s_province_ok(region6))
        return;
    if (year < 1900 || year > 2100 || !s_real_date(year, month, day))
        return;
    if (seq3 > 999)
        return;
    char buf[BF_ID_LEN + 1];
    memcpy(buf, region6, 6);
    /* Ranges are checked above, so this writes exactly 11 digits + NUL. */
    snprintf(buf + 6, sizeof buf - 6, "%04d%02d%02d%03u", year, month, day,
             seq3);
    buf[17] = bf_id_check_digit(buf);
    buf[18] = '\0';
    memcpy(out, buf, sizeof buf);
}

/* ---- Statistical division codes ------------------------------------------- */

int bf_division_check(const char *s, size_t len)
{
    if (len != BF_DIVISION_LEN || !s_all_digits(s, len) || !s_province_ok(s))
        return -1;
    return 0;
}

static bool s_zero_from(const char *code, size_t from)
{
    for (size_t i = from; i < BF_DIVISION_LEN; i++)
        if (code[i] != '0')
            return false;
    return true;
}

const char *bf_division_level(const char code[BF_DIVISION_LEN])
{
    if (!s_all_digits(code, BF_DIVISION_LEN))
        return NULL;
    /* Levels occupy digits 1-2, 3-4, 5-6, 7-9, 10-12 (0-based starts below). */
    if (s_zero_from(code, 2))
        return "province";
    if (s_zero_from(code, 4))
        return "city";
    if (s_zero_from(code, 6))
        return "county";
    if (s_zero_from(code, 9))
        return "township";
    return "village";
}

int bf_division_parent(const char code[BF_DIVISION_LEN],
                       char out[BF_DIVISION_LEN + 1])
{
    static const size_t starts[] = {9, 6, 4, 2}; /* village .. city */
    if (!s_all_digits(code, BF_DIVISION_LEN))
        return -1;
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        size_t from = starts[k];
        if (s_zero_from(code, from))
            continue; /* this level and below are already zero */
        char buf[BF_DIVISION_LEN + 1];
        memcpy(buf, code, BF_DIVISION_LEN);
        memset(buf + from, '0', BF_DIVISION_LEN - from);
        buf[BF_DIVISION_LEN] = '\0';
        memcpy(out, buf, sizeof buf);
        return 0;
    }
    return -1; /* digits 3-12 all zero: a province has no parent */
}

/* ---- Money --------------------------------------------------------------- */

int bf_money_add(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

int bf_money_sub(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

int bf_money_mul(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

/* mag = mag * 10 + digit, refusing to pass limit. */
static int s_mag_push(uint64_t *mag, unsigned digit, uint64_t limit)
{
    if (*mag > (limit - digit) / 10)
        return -1;
    *mag = *mag * 10 + digit;
    return 0;
}

int bf_money_parse_yuan(const char *s, size_t len, int64_t *fen)
{
    size_t i = 0;
    bool neg = false;
    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        i = 1;
    }
    /* The magnitude is accumulated unsigned so that INT64_MIN, whose
     * magnitude is INT64_MAX + 1, parses like any other amount. */
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t mag = 0;
    size_t int_start = i;
    while (i < len && s_is_digit(s[i])) {
        if (s_mag_push(&mag, (unsigned)(s[i] - '0'), limit) < 0)
            return -1;
        i++;
    }
    if (i == int_start)
        return -1; /* empty, sign only, or ".5" */
    unsigned frac[2] = {0, 0};
    if (i < len) {
        if (s[i] != '.')
            return -1;
        i++;
        size_t nfrac = 0;
        while (i < len && s_is_digit(s[i]) && nfrac < 2)
            frac[nfrac++] = (unsigned)(s[i++] - '0');
        if (nfrac == 0 || i != len)
            return -1; /* "1.", a third decimal or trailing junk */
    }
    if (s_mag_push(&mag, frac[0], limit) < 0 ||
        s_mag_push(&mag, frac[1], limit) < 0)
        return -1;
    if (neg)
        *fen = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        *fen = (int64_t)mag;
    return 0;
}

int bf_money_format(int64_t fen, char *buf, size_t n)
{
    /* -(fen + 1) + 1 is the magnitude without ever negating INT64_MIN. */
    uint64_t mag = fen < 0 ? (uint64_t)(-(fen + 1)) + 1 : (uint64_t)fen;
    char tmp[BF_MONEY_FMT_MAX];
    int w = snprintf(tmp, sizeof tmp, "%s%" PRIu64 ".%02u", fen < 0 ? "-" : "",
                     mag / 100, (unsigned)(mag % 100));
    if (w < 0 || (size_t)w >= sizeof tmp || (size_t)w >= n) {
        if (n > 0)
            buf[0] = '\0';
        return -1;
    }
    memcpy(buf, tmp, (size_t)w + 1);
    return 0;
}

/* ---- Dates and phone numbers ----------------------------------------------- */

int bf_valid_date(const char *s, size_t len, int *y, int *m, int *d)
{
    if (len != 10 || s[4] != '-' || s[7] != '-' || !s_all_digits(s, 4) ||
        !s_all_digits(s + 5, 2) || !s_all_digits(s + 8, 2))
        return -1;
    int yy = s_digits_value(s, 4);
    int mm = s_digits_value(s + 5, 2);
    int dd = s_digits_value(s + 8, 2);
    if (yy < 1 || !s_real_date(yy, mm, dd))
        return -1;
    if (y)
        *y = yy;
    if (m)
        *m = mm;
    if (d)
        *d = dd;
    return 0;
}

bool bf_valid_phone(const char *s, size_t len)
{
    return len == 11 && s_all_digits(s, len) && s[0] == '1' && s[1] >= '3' &&
           s[1] <= '9';
}
