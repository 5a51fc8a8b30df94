/* money: amounts in yuan (元) for people, in fen (分) for the services.
 *
 * Every amount the services take or give is an integer number of fen. The
 * CLI's --yuan lets people type and read yuan instead: "12.34" is 1234 fen.
 * Parsing is exact, on the digits (no floating point anywhere): an optional
 * sign, digits, and at most two decimals after a '.'; nothing else (no
 * blanks, no thousands separators, no exponent). Pure functions, no I/O;
 * tests/unit/test_money.c covers them.
 */
#ifndef CLI_MONEY_H
#define CLI_MONEY_H

#include <stddef.h>
#include <stdint.h>

/* Parses yuan text ("12", "12.3", "12.34", "-0.05", ".5", "+1") into fen.
 * Returns 0 with *fen set, or -1 with err saying why ("more than 2 decimals",
 * "not an amount", "too large"); *fen untouched on error. */
int money_parse_yuan(const char *s, int64_t *fen, char *err, size_t errlen);

/* The same for text of length len (not NUL-terminated). */
int money_parse_yuan_n(const char *s, size_t len, int64_t *fen, char *err, size_t errlen);

/* Writes fen as yuan with exactly two decimals ("12.34", "-0.05", "0.00");
 * exact for every int64 including INT64_MIN. Returns out. n >= 24 suffices. */
char *money_format_yuan(int64_t fen, char *out, size_t n);

/* --yuan for JSON params: returns a copy of json (malloc'd, *out) where the
 * value of every member whose key ends in "_fen" is read as yuan (a JSON
 * number such as 12.34, or a string such as "12.34") and written as the
 * integer number of fen. Other text is copied byte for byte. Returns 0, or
 * -1 with err naming the key and why (the JSON itself is checked later by
 * the JSON parser; only what this scan needs is checked here). */
int money_json_yuan_to_fen(const char *json, char **out, char *err, size_t errlen);

/* True if key (of length len) ends in "_fen": an amount in fen. */
int money_is_fen_key(const char *key, size_t len);

#endif
