/* bf_json.h: conversion between JSON text and msgpack.
 *
 * Services speak msgpack; people and test scripts speak JSON. This module is
 * the bridge used by the operators' CLI (`bangfu call registry household.get
 * '{"id":3}'` packs the JSON argument and prints the msgpack reply as JSON) and
 * by tests that want to write a request or compare a reply as readable text.
 * It is a display and scripting aid, not a wire format: services never parse
 * JSON, and the mapping below is lossy for the few msgpack types JSON lacks.
 *
 * JSON -> msgpack (parsed with jansson):
 *   object -> map (keys as str, in document order; duplicate keys are an
 *   error), array -> array, string -> str (a "\u0000" escape is allowed and
 *   gives a str with a NUL byte in it, so receivers must use the length),
 *   integer -> int (negative: msgpack_pack_int64, otherwise
 *   msgpack_pack_uint64), real -> float64, true/false -> bool, null -> nil.
 *   Any JSON value may be the top-level one (`3`, `"x"`, `null`).
 *   Integers must lie in [INT64_MIN, INT64_MAX]: jansson stores integers as
 *   long long and refuses larger ones ("too big integer"), so an integer in
 *   (INT64_MAX, UINT64_MAX] is an error, never silently made a float.
 *
 * msgpack -> JSON (written by this module, not by jansson, so that uint64
 * values stay exact, invalid UTF-8 is escaped byte by byte and map order and
 * duplicate keys are kept exactly):
 *   nil -> null, bool -> true/false, positive int -> its exact decimal digits
 *   (up to 18446744073709551615), negative int -> its decimal digits,
 *   float32 / float64 -> the shortest decimal that reads back to the same
 *   float32 / float64, always with a '.' or an exponent so it stays a real
 *   ("1.0", not "1"); NaN and +-Infinity have no JSON form and become null.
 *   str -> string; bytes that are not part of a well-formed UTF-8 sequence
 *   (overlong forms, surrogates, > U+10FFFF and truncated sequences included)
 *   are each written as the escape \u00XX of that byte value, so the output is
 *   always valid JSON. Reading it back gives the character U+00XX, not the
 *   original byte: for display only.
 *   bin -> a JSON string holding the bytes in standard base64 (RFC 4648, with
 *   '=' padding), with no prefix or marker: a reader cannot tell it from a str
 *   that happens to look like base64.
 *   ext -> {"ext": <type as integer>, "base64": "<data in base64>"}.
 *   array -> array; map -> object with members in msgpack order, duplicate
 *   keys kept as they are. A str key is used as it is; any other key becomes
 *   a string holding that key's compact JSON text (int 3 -> "3", nil ->
 *   "null", [1,2] -> "[1,2]", bin -> the quoted base64 text "\"AAE=\"").
 *
 * Depth: BF_JSON_MAX_DEPTH bounds how many arrays / objects / maps may be
 * nested, counting the outermost one as level 1 (so 64 nested arrays are
 * accepted, 65 refused, and a scalar has depth 0). An ext counts as a level
 * in msgpack -> JSON because it is written as an object, which keeps every
 * accepted output readable by bf_json_to_msgpack. Nothing is ever truncated
 * or replaced by null for being too deep: the conversion fails.
 *   - jansson has its own parse limit, JSON_PARSER_MAX_DEPTH in
 *     jansson_config.h (2048 in jansson 2.14); input deeper than that fails
 *     inside jansson with "maximum parsing depth reached" and a position.
 *     Input between 65 and that limit is parsed, then refused here.
 *   - msgpack-c's own unpacker (msgpack_unpack_next) refuses nesting deeper
 *     than MSGPACK_EMBED_STACK_SIZE, 32 in msgpack-c 4.0, with
 *     MSGPACK_UNPACK_NOMEM_ERROR. So bf_json_msgpack_to_file, and any service
 *     that unpacks with msgpack-c, cannot read data nested 33..64 deep even
 *     though bf_json_to_msgpack can produce it.
 *
 * The functions keep no state; they are safe to call from several threads
 * except that reals are formatted with snprintf/strtod, which honour the
 * LC_NUMERIC locale (handled: the locale's decimal point is turned into '.').
 */
#ifndef BF_JSON_H
#define BF_JSON_H

#include <msgpack.h>
#include <stddef.h>
#include <stdio.h>

/* Most arrays / objects / maps nested inside one another, both directions. */
#define BF_JSON_MAX_DEPTH 64

/* Output layout flags for bf_json_from_msgpack and bf_json_msgpack_to_file.
 * 0 gives one line with a space after ':' and ',' ({"a": 1, "b": [1, 2]}).
 * BF_JSON_COMPACT drops those spaces ({"a":1,"b":[1,2]}).
 * BF_JSON_PRETTY puts each member / element on its own line, indented by two
 * spaces per level; empty containers stay "[]" / "{}". Both may be combined
 * (indented, no space after ':'). Other bits are ignored. */
#define BF_JSON_PRETTY  0x1
#define BF_JSON_COMPACT 0x2

/* Parses the len bytes at json (need not be NUL-terminated) as exactly one
 * JSON value, optionally surrounded by whitespace; anything after it is an
 * error. Appends its msgpack encoding to out, a sbuffer the caller has
 * initialised and still owns.
 * Returns 0 on success. Returns -1 when the text is not valid JSON, has
 * trailing data, nests deeper than BF_JSON_MAX_DEPTH, has a duplicate object
 * key or an integer outside int64, or memory runs out; then out holds exactly
 * what it held before the call (its capacity may have grown) and, if err is
 * not NULL and errlen > 0, err holds a NUL-terminated message (truncated to
 * errlen). Messages from jansson carry the position:
 * "line 1, column 9: end of file expected near 'x'". */
int bf_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
                       char *err, size_t errlen);

/* Renders obj (not NULL, a well-formed msgpack_object such as one from
 * msgpack_unpack_next) as JSON text laid out as flags says, with no trailing
 * newline. Returns a malloc'd NUL-terminated string that the caller frees
 * with free(), or NULL if memory runs out or obj nests deeper than
 * BF_JSON_MAX_DEPTH (the two are not told apart: either way there is nothing
 * to show). obj is only read. */
char *bf_json_from_msgpack(const msgpack_object *obj, int flags);

/* Unpacks the len bytes at data as exactly one complete msgpack object and
 * writes its JSON (as bf_json_from_msgpack with flags) followed by '\n' to f.
 * Returns 0 on success; -1 if the bytes are empty, truncated, malformed, hold
 * more than one object or trailing bytes, nest deeper than msgpack-c or
 * BF_JSON_MAX_DEPTH allow (see above), if memory runs out, or if writing to f
 * fails. On -1 nothing has been written to f unless the write itself failed
 * part way. data is only read. */
int bf_json_msgpack_to_file(FILE *f, const char *data, size_t len, int flags);

#endif
