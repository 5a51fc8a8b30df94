/* bf_json.c: JSON text <-> msgpack, for the CLI and tests (see bf_json.h).
 *
 * JSON is parsed with jansson and the tree walked into a msgpack_packer.
 * The other way JSON is written by hand into a growing buffer rather than
 * through a jansson tree: jansson cannot hold a uint64 above INT64_MAX, will
 * not take a string with invalid UTF-8, and would merge duplicate map keys,
 * and each of those would have to be silently altered to fit.
 */
#include "bf_json.h"

#include <inttypes.h>
#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- errors */

static void s_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --------------------------------------------------------- JSON -> msgpack */

/* depth: how many arrays / objects enclose value. */
static int s_pack_value(msgpack_packer *pk, json_t *value, int depth,
                        char *err, size_t errlen)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: {
        if (depth + 1 > BF_JSON_MAX_DEPTH) goto too_deep;
        size_t size = json_object_size(value);
        if (size > UINT32_MAX) goto too_big;
        if (msgpack_pack_map(pk, size) != 0) goto nomem;
        /* jansson (>= 2.8) iterates objects in insertion order, i.e. in
         * document order, which is the order we want on the wire. */
        for (void *it = json_object_iter(value); it;
             it = json_object_iter_next(value, it)) {
            const char *key = json_object_iter_key(it);
            size_t key_len = json_object_iter_key_len(it);
            if (msgpack_pack_str(pk, key_len) != 0 ||
                msgpack_pack_str_body(pk, key, key_len) != 0)
                goto nomem;
            if (s_pack_value(pk, json_object_iter_value(it), depth + 1, err,
                             errlen) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        if (depth + 1 > BF_JSON_MAX_DEPTH) goto too_deep;
        size_t size = json_array_size(value);
        if (size > UINT32_MAX) goto too_big;
        if (msgpack_pack_array(pk, size) != 0) goto nomem;
        for (size_t i = 0; i < size; i++)
            if (s_pack_value(pk, json_array_get(value, i), depth + 1, err,
                             errlen) != 0)
                return -1;
        return 0;
    }
    case JSON_STRING: {
        size_t len = json_string_length(value);
        if (len > UINT32_MAX) goto too_big;
        if (msgpack_pack_str(pk, len) != 0 ||
            msgpack_pack_str_body(pk, json_string_value(value), len) != 0)
            goto nomem;
        return 0;
    }
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(value);
        int rc = n < 0 ? msgpack_pack_int64(pk, (int64_t)n)
                       : msgpack_pack_uint64(pk, (uint64_t)n);
        if (rc != 0) goto nomem;
        return 0;
    }
    case JSON_REAL:
        if (msgpack_pack_double(pk, json_real_value(value)) != 0) goto nomem;
        return 0;
    case JSON_TRUE:
        if (msgpack_pack_true(pk) != 0) goto nomem;
        return 0;
    case JSON_FALSE:
        if (msgpack_pack_false(pk) != 0) goto nomem;
        return 0;
    case JSON_NULL:
        if (msgpack_pack_nil(pk) != 0) goto nomem;
        return 0;
    }
    s_set_err(err, errlen, "unknown JSON type %d", (int)json_typeof(value));
    return -1;

too_deep:
    s_set_err(err, errlen, "nesting deeper than %d levels", BF_JSON_MAX_DEPTH);
    return -1;
too_big:
    s_set_err(err, errlen, "array, object or string too large for msgpack");
    return -1;
nomem:
    s_set_err(err, errlen, "out of memory");
    return -1;
}

int bf_json_to_msgpack(const char *json, size_t len, msgpack_sbuffer *out,
                       char *err, size_t errlen)
{
    if (!json || !out) {
        s_set_err(err, errlen, "bf_json_to_msgpack: NULL argument");
        return -1;
    }
    /* DECODE_ANY: a request argument may be a bare scalar. No
     * DISABLE_EOF_CHECK: trailing data after the value must be an error. */
    json_error_t jerr;
    json_t *root = json_loadb(json, len,
                              JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
                                  JSON_ALLOW_NUL,
                              &jerr);
    if (!root) {
        s_set_err(err, errlen, "line %d, column %d: %s", jerr.line,
                  jerr.column, jerr.text);
        return -1;
    }
    size_t start = out->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    int rc = s_pack_value(&pk, root, 0, err, errlen);
    if (rc != 0) out->size = start; /* drop the partial encoding */
    json_decref(root);
    return rc;
}

/* --------------------------------------------------------- msgpack -> JSON */

typedef struct {
    char *data;
    size_t size;     /* bytes written, not counting the NUL */
    size_t capacity; /* bytes allocated */
    int flags;
} s_text_t;

static int s_reserve(s_text_t *text, size_t more)
{
    if (more > SIZE_MAX - text->size - 1) return -1;
    size_t need = text->size + more + 1;
    if (need <= text->capacity) return 0;
    size_t capacity = text->capacity ? text->capacity : 64;
    while (capacity < need)
        capacity = capacity > SIZE_MAX / 2 ? need : capacity * 2;
    char *data = realloc(text->data, capacity);
    if (!data) return -1;
    text->data = data;
    text->capacity = capacity;
    return 0;
}

static int s_put(s_text_t *text, const char *bytes, size_t len)
{
    if (len == 0) return 0; /* bytes may be NULL (an empty msgpack str) */
    if (s_reserve(text, len) != 0) return -1;
    memcpy(text->data + text->size, bytes, len);
    text->size += len;
    text->data[text->size] = '\0';
    return 0;
}

static int s_puts(s_text_t *text, const char *cstr)
{
    return s_put(text, cstr, strlen(cstr));
}

/* In pretty mode: a newline and the indentation of nesting level `level`. */
static int s_newline(s_text_t *text, int level)
{
    if (!(text->flags & BF_JSON_PRETTY)) return 0;
    if (s_reserve(text, 1 + 2 * (size_t)level) != 0) return -1;
    text->data[text->size++] = '\n';
    memset(text->data + text->size, ' ', 2 * (size_t)level);
    text->size += 2 * (size_t)level;
    text->data[text->size] = '\0';
    return 0;
}

/* Between elements/members: "," then a newline (pretty), nothing (compact)
 * or a space (default). */
static int s_comma(s_text_t *text, int level)
{
    if (s_puts(text, ",") != 0) return -1;
    if (text->flags & BF_JSON_PRETTY) return s_newline(text, level);
    if (text->flags & BF_JSON_COMPACT) return 0;
    return s_puts(text, " ");
}

static int s_colon(s_text_t *text)
{
    return s_puts(text, (text->flags & BF_JSON_COMPACT) ? ":" : ": ");
}

/* Length of the well-formed UTF-8 sequence at p (1..4), 0 if none starts
 * there. Follows the Unicode table of well-formed byte sequences (no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static size_t s_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
#define CONT(i) (n > (i) && (p[i] & 0xC0) == 0x80)
#define IN(i, lo, hi) (n > (i) && p[i] >= (lo) && p[i] <= (hi))
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return CONT(1) ? 2 : 0;
    if (c == 0xE0) return IN(1, 0xA0, 0xBF) && CONT(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        return CONT(1) && CONT(2) ? 3 : 0;
    if (c == 0xED) return IN(1, 0x80, 0x9F) && CONT(2) ? 3 : 0;
    if (c == 0xF0) return IN(1, 0x90, 0xBF) && CONT(2) && CONT(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3)
        return CONT(1) && CONT(2) && CONT(3) ? 4 : 0;
    if (c == 0xF4) return IN(1, 0x80, 0x8F) && CONT(2) && CONT(3) ? 4 : 0;
    return 0;
#undef CONT
#undef IN
}

static int s_put_string(s_text_t *text, const char *bytes, size_t len)
{
    const unsigned char *p = (const unsigned char *)bytes;
    if (len == 0) return s_puts(text, "\"\""); /* bytes may be NULL */
    if (s_puts(text, "\"") != 0) return -1;
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    size_t i = 0;
    while (i < len) {
        size_t seq = s_utf8_len(p + i, len - i);
        if (seq > 1 || (seq == 1 && p[i] >= 0x20 && p[i] != '"' &&
                        p[i] != '\\')) {
            i += seq;
            continue;
        }
        if (s_put(text, bytes + run, i - run) != 0) return -1;
        char hex[8];
        const char *escape = hex;
        switch (p[i]) {
        case '"': escape = "\\\""; break;
        case '\\': escape = "\\\\"; break;
        case '\b': escape = "\\b"; break;
        case '\f': escape = "\\f"; break;
        case '\n': escape = "\\n"; break;
        case '\r': escape = "\\r"; break;
        case '\t': escape = "\\t"; break;
        default: /* other control byte, or a byte of invalid UTF-8 */
            snprintf(hex, sizeof hex, "\\u%04x", (unsigned)p[i]);
        }
        if (s_puts(text, escape) != 0) return -1;
        i++;
        run = i;
    }
    if (s_put(text, bytes + run, len - run) != 0) return -1;
    return s_puts(text, "\"");
}

static int s_put_base64(s_text_t *text, const char *bytes, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)bytes;
    if (len / 3 > (SIZE_MAX - 3) / 4) return -1;
    if (s_reserve(text, 4 * ((len + 2) / 3) + 2) != 0) return -1;
    char *o = text->data + text->size;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63];
        *o++ = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63];
        *o++ = '=';
    }
    *o++ = '"';
    text->size = (size_t)(o - text->data);
    text->data[text->size] = '\0';
    return 0;
}

/* Shortest "%.Ng" that reads back to the same value, kept a JSON real. */
static int s_put_real(s_text_t *text, double value, int is_float32)
{
    if (!isfinite(value)) return s_puts(text, "null");
    char buf[40];
    if (is_float32) {
        float f = (float)value;
        if (!isfinite(f)) return s_puts(text, "null");
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
            if (strtof(buf, NULL) == f) break;
        }
    } else {
        for (int digits = 15; digits <= 17; digits++) {
            snprintf(buf, sizeof buf, "%.*g", digits, value);
            if (strtod(buf, NULL) == value) break;
        }
    }
    /* printf writes the locale's decimal point; JSON wants '.'. */
    const char *point = localeconv()->decimal_point;
    if (point && point[0] && strcmp(point, ".") != 0) {
        char *at = strstr(buf, point);
        if (at) {
            size_t plen = strlen(point);
            *at = '.';
            memmove(at + 1, at + plen, strlen(at + plen) + 1);
        }
    }
    if (!strpbrk(buf, ".eE")) strcat(buf, ".0");
    return s_puts(text, buf);
}

static int s_put_value(s_text_t *text, const msgpack_object *obj, int depth);

/* A map key: a str as it is; anything else as a string holding its compact
 * JSON text. depth is the level of the map the key belongs to. */
static int s_put_key(s_text_t *text, const msgpack_object *key, int depth)
{
    if (key->type == MSGPACK_OBJECT_STR)
        return s_put_string(text, key->via.str.ptr, key->via.str.size);
    s_text_t key_text = {NULL, 0, 0, BF_JSON_COMPACT};
    int rc = s_put_value(&key_text, key, depth);
    if (rc == 0) rc = s_put_string(text, key_text.data, key_text.size);
    free(key_text.data);
    return rc;
}

/* depth: how many arrays / objects enclose obj (and the level it indents
 * its members at, plus one). */
static int s_put_value(s_text_t *text, const msgpack_object *obj, int depth)
{
    char buf[32];
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return s_puts(text, "null");
    case MSGPACK_OBJECT_BOOLEAN:
        return s_puts(text, obj->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(buf, sizeof buf, "%" PRIu64, obj->via.u64);
        return s_puts(text, buf);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(buf, sizeof buf, "%" PRId64, obj->via.i64);
        return s_puts(text, buf);
    case MSGPACK_OBJECT_FLOAT32:
        return s_put_real(text, obj->via.f64, 1);
    case MSGPACK_OBJECT_FLOAT64:
        return s_put_real(text, obj->via.f64, 0);
    case MSGPACK_OBJECT_STR:
        return s_put_string(text, obj->via.str.ptr, obj->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return s_put_base64(text, obj->via.bin.ptr, obj->via.bin.size);
    case MSGPACK_OBJECT_EXT:
        if (depth + 1 > BF_JSON_MAX_DEPTH) return -1;
        snprintf(buf, sizeof buf, "%d", (int)obj->via.ext.type);
        if (s_puts(text, "{") != 0 || s_newline(text, depth + 1) != 0 ||
            s_puts(text, "\"ext\"") != 0 || s_colon(text) != 0 ||
            s_puts(text, buf) != 0 || s_comma(text, depth + 1) != 0 ||
            s_puts(text, "\"base64\"") != 0 || s_colon(text) != 0 ||
            s_put_base64(text, obj->via.ext.ptr, obj->via.ext.size) != 0 ||
            s_newline(text, depth) != 0 || s_puts(text, "}") != 0)
            return -1;
        return 0;
    case MSGPACK_OBJECT_ARRAY: {
        if (depth + 1 > BF_JSON_MAX_DEPTH) return -1;
        const msgpack_object_array *array = &obj->via.array;
        if (s_puts(text, "[") != 0) return -1;
        if (array->size == 0) return s_puts(text, "]");
        for (uint32_t i = 0; i < array->size; i++) {
            int rc = i == 0 ? s_newline(text, depth + 1)
                            : s_comma(text, depth + 1);
            if (rc != 0 || s_put_value(text, &array->ptr[i], depth + 1) != 0)
                return -1;
        }
        if (s_newline(text, depth) != 0) return -1;
        return s_puts(text, "]");
    }
    case MSGPACK_OBJECT_MAP: {
        if (depth + 1 > BF_JSON_MAX_DEPTH) return -1;
        const msgpack_object_map *map = &obj->via.map;
        if (s_puts(text, "{") != 0) return -1;
        if (map->size == 0) return s_puts(text, "}");
        for (uint32_t i = 0; i < map->size; i++) {
            int rc = i == 0 ? s_newline(text, depth + 1)
                            : s_comma(text, depth + 1);
            if (rc != 0 || s_put_key(text, &map->ptr[i].key, depth + 1) != 0 ||
                s_colon(text) != 0 ||
                s_put_value(text, &map->ptr[i].val, depth + 1) != 0)
                return -1;
        }
        if (s_newline(text, depth) != 0) return -1;
        return s_puts(text, "}");
    }
    }
    return -1; /* a type this msgpack-c does not define */
}

char *bf_json_from_msgpack(const msgpack_object *obj, int flags)
{
    if (!obj) return NULL;
    s_text_t text = {NULL, 0, 0, flags};
    if (s_reserve(&text, 0) != 0 || s_put_value(&text, obj, 0) != 0) {
        free(text.data);
        return NULL;
    }
    return text.data;
}

int bf_json_msgpack_to_file(FILE *f, const char *data, size_t len, int flags)
{
    if (!f || !data || len == 0) return -1;
    int rc = -1;
    char *json = NULL;
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    size_t offset = 0;
    if (msgpack_unpack_next(&unpacked, data, len, &offset) !=
            MSGPACK_UNPACK_SUCCESS ||
        offset != len)
        goto cleanup;
    json = bf_json_from_msgpack(&unpacked.data, flags);
    if (!json) goto cleanup;
    if (fputs(json, f) == EOF || fputc('\n', f) == EOF) goto cleanup;
    rc = 0;
cleanup:
    free(json);
    msgpack_unpacked_destroy(&unpacked);
    return rc;
}
