/* bf_valid.h: validation of the untrusted fields a pairing-assistance platform
 * takes in (household names and notes, resident ID numbers, statistical
 * division codes, amounts of money, dates, mobile numbers).
 *
 * Every check here is pure: no allocation, no locale, no clock, no global
 * state, so any thread may call any function at any time. Inputs that come
 * from outside (a ZeroMQ frame, a msgpack string, a CSV cell) are taken as a
 * pointer plus an explicit length and are never assumed to be NUL-terminated;
 * a NULL pointer is accepted only with length 0. Parameters typed as fixed
 * arrays (`const char code[12]`) are values this module has already
 * validated, and their contracts say what happens if they are not.
 *
 * Money is always an int64_t count of fen (1 yuan = 100 fen), never a double:
 * arithmetic is checked for overflow and formatting is exact.
 *
 * Resident ID numbers are personal data. Nothing here logs, and no error
 * message contains the number; use bf_id_mask() before an ID reaches a log
 * line, a screen or an export that does not need the full number.
 *
 * Unless a contract says otherwise, an int function returns 0 on success and
 * -1 on failure, and leaves its output parameters untouched on failure.
 */
#ifndef BF_VALID_H
#define BF_VALID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- UTF-8 text --------------------------------------------------------- */

/* True if s[0..len) is well-formed UTF-8 in the strict sense of Unicode
 * Table 3-7: no overlong encodings (so "\xc0\xaf" is rejected), no UTF-16
 * surrogates U+D800..U+DFFF, nothing above U+10FFFF, no truncated or stray
 * continuation bytes. NUL bytes are also rejected, because the text will end
 * up in C strings and in PostgreSQL, which refuse or truncate at them.
 * The empty string is valid. */
bool bf_valid_utf8(const char *s, size_t len);

/* The number of code points in s[0..len), for limits stated in characters
 * ("a household name is at most 20 characters"); one CJK character counts as
 * one. Returns SIZE_MAX if bf_valid_utf8(s, len) is false, so that a check
 * `bf_valid_utf8_chars(s, len) <= max` also rejects malformed text. */
size_t bf_valid_utf8_chars(const char *s, size_t len);

/* ---- Resident ID numbers (GB 11643-1999, 18 characters) ----------------- */

#define BF_ID_LEN 18 /* characters; buffers are BF_ID_LEN + 1 with the NUL */

/* Results of bf_id_check(): 0 for a valid number, else one of these. */
#define BF_ID_OK 0
#define BF_ID_BAD_LENGTH (-1) /* not exactly 18 bytes */
#define BF_ID_BAD_CHAR (-2)   /* non-digit in 1-17, or 18th not digit/X/x */
#define BF_ID_BAD_DATE (-3)   /* 7-14 not a real YYYYMMDD in 1900..2100 */
#define BF_ID_BAD_REGION (-4) /* first two digits not a province-level code */
#define BF_ID_BAD_CHECK (-5)  /* ISO 7064 MOD 11-2 check digit mismatch */

/* Validates s[0..len) as an 18-character resident ID number. Checks run in
 * the order length, characters, birth date, region, check digit, and the
 * first failure is returned (BF_ID_BAD_* above); 0 means valid. The birth
 * date (positions 7-14) must be a real Gregorian date with year 1900..2100;
 * it is not compared against today. The region check covers the province
 * prefix only (11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81, 82, 91),
 * not whether the six-digit county code exists. A trailing 'x' is accepted.
 * If out is not NULL it receives, on success, the normalised number
 * (trailing 'X' upper-case) NUL-terminated, and on failure the empty string,
 * so a failed check never leaves a usable number behind. */
int bf_id_check(const char *s, size_t len, char out[BF_ID_LEN + 1]);

/* A static English message for a bf_id_check() result, suitable for showing
 * to the person who typed the number. It never contains the number itself;
 * the message for BF_ID_BAD_CHECK does not say which digit was expected
 * either (this function sees only the code). Unknown codes get a generic
 * message; never returns NULL. */
const char *bf_id_strerror(int code);

/* The check digit ('0'..'9' or 'X') for the first 17 characters of an ID
 * number, per ISO 7064 MOD 11-2 (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2,
 * remainder 0..10 -> "10X98765432"). first17 need not be NUL-terminated.
 * Returns '\0' if any of the 17 characters is not an ASCII digit. */
char bf_id_check_digit(const char first17[17]);

/* Writes into out the masked form of an ID for display and logs: the first
 * 6 characters (the region of registration) and 12 asterisks, NUL-terminated,
 * e.g. 11010519491231002X -> 110105************. Nothing else is shown: the
 * birth date (7-14), the sequence whose last digit (17) gives the gender, and
 * the check character would each let one rebuild or narrow the number
 * (docs/security.md). id18 should be a number normalised by bf_id_check(). If
 * it is not a NUL-terminated string of exactly 18 characters, out gets 18
 * asterisks: masking fails closed rather than echoing whatever was passed.
 * out may equal id18. */
void bf_id_mask(const char id18[BF_ID_LEN + 1], char out[BF_ID_LEN + 1]);

/* Builds a valid ID number for tests and demo data (never for real people):
 * region6 (six digits, not NUL-terminated), the birth date, seq3 printed as
 * three digits (0..999), then the check digit, NUL-terminated into out. The
 * result passes bf_id_check() whenever the arguments do: region6 all digits
 * with a province prefix as listed at bf_id_check(), year 1900..2100, a real
 * calendar date, seq3 <= 999. Otherwise out is set to the empty string. */
void bf_id_generate(const char region6[6], int year, int month, int day,
                    unsigned seq3, char out[BF_ID_LEN + 1]);

/* ---- Statistical division codes (统计用区划代码, 12 digits) ------------ */

#define BF_DIVISION_LEN 12

/* 0 if s[0..len) is exactly 12 ASCII digits whose first two are a
 * province-level prefix (the list at bf_id_check()); -1 otherwise. Whether
 * the code exists in the published table is not checked. */
int bf_division_check(const char *s, size_t len);

/* The level of a division code, as a static string, decided by its trailing
 * zeros: "province" (digits 3-12 zero), "city" (5-12 zero), "county" (7-12
 * zero), "township" (10-12 zero), otherwise "village". code need not be
 * NUL-terminated. Returns NULL if the 12 characters are not all ASCII digits
 * (run bf_division_check() first). */
const char *bf_division_level(const char code[BF_DIVISION_LEN]);

/* Writes into out the parent of code, NUL-terminated: the code with its
 * lowest non-zero level zeroed (village -> township -> county -> city ->
 * province). A county directly under a province (digits 3-4 zero) gets the
 * province as parent. Returns -1 (out untouched) if code is a province or
 * its 12 characters are not all ASCII digits. */
int bf_division_parent(const char code[BF_DIVISION_LEN],
                       char out[BF_DIVISION_LEN + 1]);

/* ---- Money in fen ------------------------------------------------------- */

/* Longest bf_money_format() output plus the NUL: "-92233720368547758.08". */
#define BF_MONEY_FMT_MAX 22

/* *out = a + b; -1 on overflow (out untouched). */
int bf_money_add(int64_t a, int64_t b, int64_t *out);

/* *out = a - b; -1 on overflow (out untouched). */
int bf_money_sub(int64_t a, int64_t b, int64_t *out);

/* *out = a * b, for an amount in fen times a count (households, months);
 * -1 on overflow (out untouched). */
int bf_money_mul(int64_t a, int64_t b, int64_t *out);

/* Parses an amount in yuan from s[0..len) into fen. Grammar, nothing else:
 *   [+-] digit+ [ '.' digit [digit] ]
 * so "1234", "+1234.5", "1234.56", "-3.20", "007.1" are accepted and "",
 * " 1", "1 ", "1.", ".5", "1.234", "1e3", "1,000", "--1" are rejected, as is
 * any amount outside int64_t fen (the full range, INT64_MIN included).
 * "-0" and "-0.00" give 0. */
int bf_money_parse_yuan(const char *s, size_t len, int64_t *fen);

/* Writes fen as yuan with exactly two decimals and no grouping into buf of
 * size n, NUL-terminated: 123456 -> "1234.56", -5 -> "-0.05", 0 -> "0.00";
 * INT64_MIN is handled. The output parses back to the same value with
 * bf_money_parse_yuan(). Returns -1 if n is too small (BF_MONEY_FMT_MAX
 * always suffices), leaving buf as "" when n > 0. */
int bf_money_format(int64_t fen, char *buf, size_t n);

/* ---- Dates and phone numbers -------------------------------------------- */

/* 0 if s[0..len) is exactly "YYYY-MM-DD" (ten bytes, ASCII digits) naming a
 * real proleptic Gregorian date with year 0001..9999; the parts are then
 * stored through y, m, d, any of which may be NULL. -1 otherwise. */
int bf_valid_date(const char *s, size_t len, int *y, int *m, int *d);

/* True if s[0..len) is a mainland mobile number as stored: exactly 11 ASCII
 * digits, the first '1', the second '3'..'9'. No "+86", spaces or dashes:
 * strip those before calling, if a form allows them. */
bool bf_valid_phone(const char *s, size_t len);

#endif
