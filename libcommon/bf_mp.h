/* bf_mp: safe reading and convenient writing of msgpack.
 *
 * Untrusted bytes are first walked by bf_mp_check(), which verifies that they
 * are exactly one well-formed msgpack object, no deeper than a limit, and that
 * every container's declared count fits in the bytes that remain (each element
 * needs at least one byte). Only then are they handed to msgpack-c's unpacker,
 * so a 20-byte frame that declares a 4-billion-element array cannot make the
 * unpacker allocate gigabytes. Maps are always read by key, with the type of
 * the value checked by the caller (never by position).
 */
#ifndef BF_MP_H
#define BF_MP_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BF_MP_MAX_DEPTH 32

/* Returns 0 if data[0..len) is exactly one msgpack object whose containers
 * nest at most max_depth deep (the outermost container counts as 1),
 * -2 if malformed, truncated, followed by trailing bytes, or too deep. */
int bf_mp_check(const char *data, size_t len, int max_depth);

/* The same, and counts the objects (every scalar, container, key and value is
 * one; msgpack-c's unpacker spends about 24 bytes on each): returns -3 as soon
 * as there are more than max_objects, before anything is allocated, so a
 * frame of 8 million nils cannot cost 200 MB. *objects (may be NULL) gets the
 * count walked. */
int bf_mp_check_budget(const char *data, size_t len, int max_depth, size_t max_objects,
                       size_t *objects);

/* Finds, without decoding, the string value of key in a top-level map:
 * 0 with *val pointing into data (not NUL-terminated) and *val_len, or -1 if
 * data is not a map, has no such key, the value is not a string, or the
 * bytes are malformed. Used to learn a request's method before deciding how
 * many objects it may decode to. */
int bf_mp_peek_str(const char *data, size_t len, const char *key, const char **val,
                   size_t *val_len);

/* Looks key up in a map. Returns the value, or NULL if obj is not a map or has
 * no such key. A key present with a nil value is returned (type NIL). */
const msgpack_object *bf_mp_get(const msgpack_object *map, const char *key);

/* True if o is a str equal to s. */
bool bf_mp_str_eq(const msgpack_object *o, const char *s);

/* True if o is a non-negative or negative integer; *out gets its value
 * (false for a positive integer above INT64_MAX). */
bool bf_mp_int(const msgpack_object *o, int64_t *out);

/* Writers: a str from a C string (NULL packs nil), and key/value pairs for
 * building maps. */
void bf_mp_str(msgpack_packer *pk, const char *s);
void bf_mp_strn(msgpack_packer *pk, const char *s, size_t n);
void bf_mp_kv_str(msgpack_packer *pk, const char *key, const char *val);
void bf_mp_kv_int(msgpack_packer *pk, const char *key, int64_t val);
void bf_mp_kv_bool(msgpack_packer *pk, const char *key, bool val);
void bf_mp_kv_nil(msgpack_packer *pk, const char *key);
/* Packs the key only; the caller packs the value next. */
void bf_mp_key(msgpack_packer *pk, const char *key);
/* Packs an object as it is (deep copy through the packer). */
void bf_mp_obj(msgpack_packer *pk, const msgpack_object *o);

#endif
