/* test_json.c: unit tests for bf_json (JSON text <-> msgpack).
 *
 * Checks round trips (nested objects with Chinese text, int64/uint64 limits,
 * reals, null/bool, empty containers), that bad JSON and trailing data are
 * refused with a positioned message, that msgpack with invalid UTF-8, bin and
 * ext still gives valid JSON, that map order survives both ways, and that
 * nesting beyond BF_JSON_MAX_DEPTH is refused rather than truncated.
 */
#include "bf_json.h"
#include "bf_test.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

/* ------------------------------------------------------------- helpers */

/* Unpacks the whole sbuffer as one object into *unpacked (caller destroys). */
static int s_unpack_all(const msgpack_sbuffer *sbuf, msgpack_unpacked *unpacked)
{
    size_t offset = 0;
    if (msgpack_unpack_next(unpacked, sbuf->data, sbuf->size, &offset) !=
        MSGPACK_UNPACK_SUCCESS)
        return -1;
    return offset == sbuf->size ? 0 : -1;
}

/* JSON text -> msgpack -> JSON text with flags; caller frees. */
static char *s_round_trip(const char *json, int flags)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    char *out = NULL;
    if (bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err) == 0) {
        msgpack_unpacked unpacked;
        msgpack_unpacked_init(&unpacked);
        if (s_unpack_all(&sbuf, &unpacked) == 0)
            out = bf_json_from_msgpack(&unpacked.data, flags);
        msgpack_unpacked_destroy(&unpacked);
    } else {
        fprintf(stderr, "  unexpected parse error: %s\n", err);
    }
    msgpack_sbuffer_destroy(&sbuf);
    return out;
}

/* Looks key up in a map (by key, never by position); NULL if absent. */
static const msgpack_object *s_map_get(const msgpack_object *map,
                                       const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t len = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
            memcmp(k->via.str.ptr, key, len) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static int s_str_is(const msgpack_object *obj, const char *want)
{
    return obj && obj->type == MSGPACK_OBJECT_STR &&
           obj->via.str.size == strlen(want) &&
           memcmp(obj->via.str.ptr, want, obj->via.str.size) == 0;
}

/* True if text is one valid JSON value to jansson (which rejects invalid
 * UTF-8 and bad escapes). */
static int s_valid_json(const char *text)
{
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!root) {
        fprintf(stderr, "  jansson: %s\n", jerr.text);
        return 0;
    }
    json_decref(root);
    return 1;
}

/* `levels` arrays nested in one another, around the number 1. */
static char *s_nested_arrays(int levels)
{
    char *text = malloc((size_t)levels * 2 + 2);
    if (!text) return NULL;
    memset(text, '[', (size_t)levels);
    text[levels] = '1';
    memset(text + levels + 1, ']', (size_t)levels);
    text[2 * levels + 1] = '\0';
    return text;
}

/* --------------------------------------------------------------- tests */

static void test_round_trip_nested_chinese(void)
{
    const char *json =
        "{\"户主\":\"王小明\",\"household\":{\"id\":3,\"members\":[\"李雷\","
        "\"韩梅梅\"],\"address\":{\"city\":\"北京市\",\"street\":\"长安街 1 号\"}},"
        "\"tags\":[],\"extra\":{},\"ok\":true,\"closed\":false,\"note\":null,"
        "\"score\":-2.5}";
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    ASSERT_EQ(bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err),
              0);

    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    const msgpack_object *root = &unpacked.data;
    ASSERT(s_str_is(s_map_get(root, "户主"), "王小明"));
    const msgpack_object *household = s_map_get(root, "household");
    ASSERT(household && household->type == MSGPACK_OBJECT_MAP);
    if (household) {
        const msgpack_object *id = s_map_get(household, "id");
        ASSERT(id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
        if (id) ASSERT_EQ(id->via.u64, 3);
        const msgpack_object *address = s_map_get(household, "address");
        ASSERT(address && s_str_is(s_map_get(address, "city"), "北京市"));
    }
    const msgpack_object *score = s_map_get(root, "score");
    ASSERT(score && score->type == MSGPACK_OBJECT_FLOAT64);
    if (score) ASSERT(score->via.f64 == -2.5);

    char *back = bf_json_from_msgpack(root, BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, json);

    /* ...and the JSON we wrote packs to the same bytes again. */
    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    ASSERT_EQ(bf_json_to_msgpack(back, strlen(back), &again, err, sizeof err),
              0);
    ASSERT_EQ(again.size, sbuf.size);
    ASSERT(again.size == sbuf.size &&
           memcmp(again.data, sbuf.data, sbuf.size) == 0);

    free(back);
    msgpack_sbuffer_destroy(&again);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_integer_limits(void)
{
    const char *json = "[-9223372036854775808,9223372036854775807,0,-1]";
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    ASSERT_EQ(bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err),
              0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    const msgpack_object *array = &unpacked.data;
    ASSERT_EQ(array->type, MSGPACK_OBJECT_ARRAY);
    if (array->type == MSGPACK_OBJECT_ARRAY && array->via.array.size == 4) {
        const msgpack_object *v = array->via.array.ptr;
        ASSERT_EQ(v[0].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
        ASSERT(v[0].via.i64 == INT64_MIN);
        ASSERT_EQ(v[1].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        ASSERT(v[1].via.u64 == (uint64_t)INT64_MAX);
        ASSERT_EQ(v[2].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        ASSERT_EQ(v[3].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    } else {
        ASSERT(!"expected an array of 4");
    }
    char *back = bf_json_from_msgpack(array, BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, json);
    free(back);
    msgpack_unpacked_destroy(&unpacked);

    /* msgpack -> JSON keeps UINT64_MAX and INT64_MIN exact. */
    msgpack_sbuffer_clear(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    back = bf_json_from_msgpack(&unpacked.data, 0);
    ASSERT_STR_EQ(back, "[18446744073709551615, -9223372036854775808]");
    free(back);
    msgpack_unpacked_destroy(&unpacked);

    /* JSON -> msgpack cannot go above INT64_MAX (jansson's json_int_t):
     * refused with a message, not rounded into a float. */
    msgpack_sbuffer_clear(&sbuf);
    const char *big = "[18446744073709551615]";
    ASSERT_EQ(bf_json_to_msgpack(big, strlen(big), &sbuf, err, sizeof err),
              -1);
    ASSERT(strstr(err, "too big integer") != NULL);
    ASSERT(strstr(err, "column") != NULL);
    ASSERT_EQ(sbuf.size, 0);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_reals(void)
{
    char *back = s_round_trip("[1.5,-0.0,1e300,0.1,1.0,-2.5e-7,3]",
                              BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, "[1.5,-0.0,1e+300,0.1,1.0,-2.5e-07,3]");
    free(back);

    /* float32 is printed at float precision; NaN / Inf have no JSON form. */
    msgpack_object items[4];
    items[0].type = MSGPACK_OBJECT_FLOAT32;
    items[0].via.f64 = (double)0.1f;
    items[1].type = MSGPACK_OBJECT_FLOAT64;
    items[1].via.f64 = 0.1;
    items[2].type = MSGPACK_OBJECT_FLOAT64;
    items[2].via.f64 = strtod("nan", NULL);
    items[3].type = MSGPACK_OBJECT_FLOAT64;
    items[3].via.f64 = -strtod("inf", NULL);
    msgpack_object array = {.type = MSGPACK_OBJECT_ARRAY};
    array.via.array.size = 4;
    array.via.array.ptr = items;
    back = bf_json_from_msgpack(&array, BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, "[0.1,0.1,null,null]");
    free(back);

    /* A real packed from JSON stays float64 with the exact value. */
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256];
    ASSERT_EQ(bf_json_to_msgpack("0.1", 3, &sbuf, err, sizeof err), 0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    ASSERT_EQ(unpacked.data.type, MSGPACK_OBJECT_FLOAT64);
    ASSERT(unpacked.data.via.f64 == 0.1);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_null_bool_empty(void)
{
    const char *json = "[null,true,false,[],{},\"\"]";
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    ASSERT_EQ(bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err),
              0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    const msgpack_object *array = &unpacked.data;
    if (array->type == MSGPACK_OBJECT_ARRAY && array->via.array.size == 6) {
        const msgpack_object *v = array->via.array.ptr;
        ASSERT_EQ(v[0].type, MSGPACK_OBJECT_NIL);
        ASSERT_EQ(v[1].type, MSGPACK_OBJECT_BOOLEAN);
        ASSERT(v[1].via.boolean);
        ASSERT_EQ(v[2].type, MSGPACK_OBJECT_BOOLEAN);
        ASSERT(!v[2].via.boolean);
        ASSERT_EQ(v[3].type, MSGPACK_OBJECT_ARRAY);
        ASSERT_EQ(v[3].via.array.size, 0);
        ASSERT_EQ(v[4].type, MSGPACK_OBJECT_MAP);
        ASSERT_EQ(v[4].via.map.size, 0);
        ASSERT_EQ(v[5].type, MSGPACK_OBJECT_STR);
        ASSERT_EQ(v[5].via.str.size, 0);
    } else {
        ASSERT(!"expected an array of 6");
    }
    char *back = bf_json_from_msgpack(array, BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, json);
    free(back);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);

    /* Bare scalars are accepted as the top-level value. */
    back = s_round_trip("  null\n", 0);
    ASSERT_STR_EQ(back, "null");
    free(back);
    back = s_round_trip("\"a\\u0000b\"", 0);
    ASSERT_STR_EQ(back, "\"a\\u0000b\"");
    free(back);
}

static void test_layout_flags(void)
{
    const char *json = "{\"a\":1,\"b\":[1,{}],\"c\":{\"d\":[]}}";
    char *text = s_round_trip(json, 0);
    ASSERT_STR_EQ(text, "{\"a\": 1, \"b\": [1, {}], \"c\": {\"d\": []}}");
    free(text);
    text = s_round_trip(json, BF_JSON_PRETTY);
    ASSERT_STR_EQ(text, "{\n"
                        "  \"a\": 1,\n"
                        "  \"b\": [\n"
                        "    1,\n"
                        "    {}\n"
                        "  ],\n"
                        "  \"c\": {\n"
                        "    \"d\": []\n"
                        "  }\n"
                        "}");
    free(text);
    text = s_round_trip(json, BF_JSON_PRETTY | BF_JSON_COMPACT);
    ASSERT_STR_EQ(text, "{\n  \"a\":1,\n  \"b\":[\n    1,\n    {}\n  ],\n"
                        "  \"c\":{\n    \"d\":[]\n  }\n}");
    free(text);
}

static void test_invalid_json_has_position(void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_sbuffer_write(&sbuf, "x", 1); /* earlier content must survive */
    char err[256] = "";

    const char *bad = "{\"id\": 3,}";
    ASSERT_EQ(bf_json_to_msgpack(bad, strlen(bad), &sbuf, err, sizeof err),
              -1);
    ASSERT(strstr(err, "line 1, column 10") != NULL);
    if (!strstr(err, "line 1, column 10")) fprintf(stderr, "  err: %s\n", err);

    const char *second_line = "{\"id\": 3,\n \"name\" \"x\"}";
    err[0] = '\0';
    ASSERT_EQ(bf_json_to_msgpack(second_line, strlen(second_line), &sbuf, err,
                                 sizeof err),
              -1);
    ASSERT(strncmp(err, "line 2, column ", 15) == 0);

    const char *empty = "";
    ASSERT_EQ(bf_json_to_msgpack(empty, 0, &sbuf, err, sizeof err), -1);
    ASSERT(err[0] != '\0');

    const char *dup = "{\"id\":1,\"id\":2}";
    ASSERT_EQ(bf_json_to_msgpack(dup, strlen(dup), &sbuf, err, sizeof err),
              -1);
    ASSERT(strstr(err, "duplicate") != NULL);

    /* A short err buffer is truncated, not overrun; NULL err is allowed. */
    char tiny[8];
    ASSERT_EQ(bf_json_to_msgpack(bad, strlen(bad), &sbuf, tiny, sizeof tiny),
              -1);
    ASSERT_EQ(strlen(tiny), sizeof tiny - 1);
    ASSERT_EQ(bf_json_to_msgpack(bad, strlen(bad), &sbuf, NULL, 0), -1);

    ASSERT_EQ(sbuf.size, 1);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_trailing_garbage_rejected(void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    const char *cases[] = {"{\"id\":3} x", "{\"id\":3}{}", "1 2", "[1]]",
                           "true false"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        ASSERT_EQ(bf_json_to_msgpack(cases[i], strlen(cases[i]), &sbuf, err,
                                     sizeof err),
                  -1);
        ASSERT(strstr(err, "column") != NULL);
    }
    ASSERT_EQ(sbuf.size, 0);

    /* Trailing whitespace is fine; so is a length that stops before junk. */
    const char *spaced = "{\"id\":3} \n\t ";
    ASSERT_EQ(bf_json_to_msgpack(spaced, strlen(spaced), &sbuf, err,
                                 sizeof err),
              0);
    msgpack_sbuffer_clear(&sbuf);
    ASSERT_EQ(bf_json_to_msgpack("{}junk", 2, &sbuf, err, sizeof err), 0);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_invalid_utf8_is_escaped(void)
{
    /* ab, lone 0xFF, truncated 2-byte lead, '(', surrogate ED A0 80,
     * overlong C0 AF, then valid é and 中, a quote, a tab and byte 0x01. */
    static const char bytes[] = "ab\xff\xc3(\xed\xa0\x80\xc0\xaf"
                                "\xc3\xa9\xe4\xb8\xad\"\t\x01";
    msgpack_object str = {.type = MSGPACK_OBJECT_STR};
    str.via.str.size = sizeof bytes - 1;
    str.via.str.ptr = bytes;
    char *text = bf_json_from_msgpack(&str, 0);
    ASSERT_STR_EQ(text, "\"ab\\u00ff\\u00c3(\\u00ed\\u00a0\\u0080\\u00c0"
                        "\\u00afé中\\\"\\t\\u0001\"");
    ASSERT(text && s_valid_json(text));
    free(text);

    /* Truncated 4-byte sequence at the very end of the string. */
    static const char cut[] = "x\xf0\x9f\x98";
    str.via.str.size = sizeof cut - 1;
    str.via.str.ptr = cut;
    text = bf_json_from_msgpack(&str, 0);
    ASSERT_STR_EQ(text, "\"x\\u00f0\\u009f\\u0098\"");
    ASSERT(text && s_valid_json(text));
    free(text);

    /* The same bytes as a map key. */
    msgpack_object_kv kv;
    kv.key = str;
    kv.val.type = MSGPACK_OBJECT_NIL;
    msgpack_object map = {.type = MSGPACK_OBJECT_MAP};
    map.via.map.size = 1;
    map.via.map.ptr = &kv;
    text = bf_json_from_msgpack(&map, BF_JSON_COMPACT);
    ASSERT_STR_EQ(text, "{\"x\\u00f0\\u009f\\u0098\":null}");
    ASSERT(text && s_valid_json(text));
    free(text);
}

static void test_bin_and_ext(void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 6);
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\x00\x01\xff", 3);
    msgpack_pack_bin(&pk, 1);
    msgpack_pack_bin_body(&pk, "M", 1);
    msgpack_pack_bin(&pk, 2);
    msgpack_pack_bin_body(&pk, "Ma", 2);
    msgpack_pack_bin(&pk, 0);
    msgpack_pack_ext(&pk, 3, 5);
    msgpack_pack_ext_body(&pk, "abc", 3);
    msgpack_pack_ext(&pk, 0, -1);

    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    char *text = bf_json_from_msgpack(&unpacked.data, BF_JSON_COMPACT);
    ASSERT_STR_EQ(text, "[\"AAH/\",\"TQ==\",\"TWE=\",\"\","
                        "{\"ext\":5,\"base64\":\"YWJj\"},"
                        "{\"ext\":-1,\"base64\":\"\"}]");
    ASSERT(text && s_valid_json(text));
    free(text);

    text = bf_json_from_msgpack(&unpacked.data.via.array.ptr[4],
                                BF_JSON_PRETTY);
    ASSERT_STR_EQ(text, "{\n  \"ext\": 5,\n  \"base64\": \"YWJj\"\n}");
    free(text);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_order_preserved(void)
{
    const char *json = "{\"z\":1,\"a\":2,\"m\":3,\"b\":{\"y\":0,\"c\":0}}";
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    ASSERT_EQ(bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err),
              0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    /* Position is exactly what is under test here. */
    const msgpack_object *map = &unpacked.data;
    const char *want[] = {"z", "a", "m", "b"};
    ASSERT_EQ(map->type, MSGPACK_OBJECT_MAP);
    if (map->type == MSGPACK_OBJECT_MAP && map->via.map.size == 4)
        for (uint32_t i = 0; i < 4; i++)
            ASSERT(s_str_is(&map->via.map.ptr[i].key, want[i]));
    char *text = bf_json_from_msgpack(map, BF_JSON_COMPACT);
    ASSERT_STR_EQ(text, json);
    free(text);
    msgpack_unpacked_destroy(&unpacked);

    /* Non-str keys become their JSON text; order and duplicates kept. */
    msgpack_sbuffer_clear(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "b", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_int(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_int(&pk, 3);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_int(&pk, 4);
    msgpack_pack_str_with_body(&pk, "b", 1);
    msgpack_pack_int(&pk, 5);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_int(&pk, 6);
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    text = bf_json_from_msgpack(&unpacked.data, 0);
    ASSERT_STR_EQ(text, "{\"b\": 1, \"7\": 2, \"null\": 3, "
                        "\"[1,\\\"x\\\"]\": 4, \"b\": 5, \"1.5\": 6}");
    ASSERT(text && s_valid_json(text));
    free(text);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);
}

static void test_too_deep_refused(void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";

    /* JSON -> msgpack: 64 levels pass, 65 are refused. */
    char *ok = s_nested_arrays(BF_JSON_MAX_DEPTH);
    ASSERT_EQ(bf_json_to_msgpack(ok, strlen(ok), &sbuf, err, sizeof err), 0);
    free(ok);
    size_t size_ok = sbuf.size;
    char *deep = s_nested_arrays(BF_JSON_MAX_DEPTH + 1);
    ASSERT_EQ(bf_json_to_msgpack(deep, strlen(deep), &sbuf, err, sizeof err),
              -1);
    ASSERT(strstr(err, "nesting deeper than 64") != NULL);
    ASSERT_EQ(sbuf.size, size_ok);
    free(deep);
    const char *deep_object =
        "{\"a\":"
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{}"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}";
    ASSERT_EQ(bf_json_to_msgpack(deep_object, strlen(deep_object), &sbuf, err,
                                 sizeof err),
              -1);
    /* Beyond jansson's own limit: its error, with a position. */
    char *very_deep = s_nested_arrays(5000);
    ASSERT_EQ(bf_json_to_msgpack(very_deep, strlen(very_deep), &sbuf, err,
                                 sizeof err),
              -1);
    ASSERT(strstr(err, "column") != NULL);
    free(very_deep);
    msgpack_sbuffer_destroy(&sbuf);

    /* msgpack -> JSON: a chain of one-element arrays, built by hand because
     * msgpack-c's unpacker stops at 32 levels. */
    enum { CHAIN = BF_JSON_MAX_DEPTH + 2 };
    msgpack_object chain[CHAIN];
    for (int i = 0; i < CHAIN - 1; i++) {
        chain[i].type = MSGPACK_OBJECT_ARRAY;
        chain[i].via.array.size = 1;
        chain[i].via.array.ptr = &chain[i + 1];
    }
    chain[CHAIN - 1].type = MSGPACK_OBJECT_NIL;
    /* chain[k] holds CHAIN-1-k arrays. */
    char *text = bf_json_from_msgpack(&chain[CHAIN - 1 - BF_JSON_MAX_DEPTH],
                                      BF_JSON_PRETTY);
    ASSERT(text != NULL);
    free(text);
    text = bf_json_from_msgpack(&chain[CHAIN - 2 - BF_JSON_MAX_DEPTH], 0);
    ASSERT(text == NULL);
    free(text);

    /* An ext is written as an object, so it counts as a level too. */
    chain[CHAIN - 1].type = MSGPACK_OBJECT_EXT;
    chain[CHAIN - 1].via.ext.type = 1;
    chain[CHAIN - 1].via.ext.size = 0;
    chain[CHAIN - 1].via.ext.ptr = "";
    text = bf_json_from_msgpack(&chain[CHAIN - BF_JSON_MAX_DEPTH], 0);
    ASSERT(text != NULL);
    free(text);
    text = bf_json_from_msgpack(&chain[CHAIN - 1 - BF_JSON_MAX_DEPTH], 0);
    ASSERT(text == NULL);
    free(text);

    /* A map key is inside its map: a deep key counts like a deep value. */
    msgpack_object_kv kv;
    kv.key = chain[CHAIN - BF_JSON_MAX_DEPTH]; /* 63 arrays + the ext */
    kv.val.type = MSGPACK_OBJECT_NIL;
    msgpack_object map = {.type = MSGPACK_OBJECT_MAP};
    map.via.map.size = 1;
    map.via.map.ptr = &kv;
    text = bf_json_from_msgpack(&map, 0);
    ASSERT(text == NULL);
    free(text);
}

static void test_msgpack_to_file(void)
{
    char *printed = NULL;
    size_t printed_len = 0;
    FILE *f = open_memstream(&printed, &printed_len);
    ASSERT(f != NULL);
    if (!f) return;

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256] = "";
    const char *json = "{\"household\":{\"id\":3,\"name\":\"张三\"}}";
    ASSERT_EQ(bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err),
              0);
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, sbuf.size,
                                      BF_JSON_COMPACT),
              0);
    /* Truncated, empty, two objects, trailing byte, malformed: all -1 and
     * nothing printed. */
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, sbuf.size - 1, 0), -1);
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, 0, 0), -1);
    msgpack_sbuffer_write(&sbuf, "\xc0", 1); /* a second object: nil */
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, sbuf.size, 0), -1);
    ASSERT_EQ(bf_json_msgpack_to_file(f, "\xc1", 1, 0), -1); /* never used */
    ASSERT_EQ(bf_json_msgpack_to_file(f, "\xc0", 1, 0), 0);

    /* msgpack-c's unpacker refuses more than 32 levels (documented). */
    msgpack_sbuffer_clear(&sbuf);
    char *deep = s_nested_arrays(33);
    ASSERT_EQ(bf_json_to_msgpack(deep, strlen(deep), &sbuf, err, sizeof err),
              0);
    free(deep);
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, sbuf.size, 0), -1);
    msgpack_sbuffer_clear(&sbuf);
    deep = s_nested_arrays(32);
    ASSERT_EQ(bf_json_to_msgpack(deep, strlen(deep), &sbuf, err, sizeof err),
              0);
    ASSERT_EQ(bf_json_msgpack_to_file(f, sbuf.data, sbuf.size,
                                      BF_JSON_COMPACT),
              0);

    ASSERT_EQ(fclose(f), 0);
    size_t want_len = strlen(json) + strlen(deep) + strlen("null") + 3;
    char *want = malloc(want_len + 1);
    if (want) {
        snprintf(want, want_len + 1, "%s\nnull\n%s\n", json, deep);
        ASSERT_STR_EQ(printed, want);
    }
    free(want);
    free(deep);
    free(printed);
    msgpack_sbuffer_destroy(&sbuf);
}

/* Fault injection: every jansson allocation in turn fails; each must give
 * -1 with a message and leak nothing (ASan's leak check watches). */
static long s_allocs_left;

static void *s_failing_malloc(size_t size)
{
    if (s_allocs_left-- <= 0) return NULL;
    return malloc(size);
}

static void test_parse_survives_allocation_failure(void)
{
    const char *json = "{\"户主\":\"王小明\",\"members\":[1,2.5,\"x\",{\"k\":null}],"
                       "\"big\":\"0123456789012345678901234567890123456789\"}";
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    char err[256];
    int succeeded = 0;
    for (long budget = 0; budget < 1000 && !succeeded; budget++) {
        s_allocs_left = budget;
        json_set_alloc_funcs(s_failing_malloc, free);
        err[0] = '\0';
        int rc = bf_json_to_msgpack(json, strlen(json), &sbuf, err, sizeof err);
        json_set_alloc_funcs(malloc, free);
        if (rc == 0) {
            succeeded = 1;
        } else {
            ASSERT_EQ(rc, -1);
            ASSERT(err[0] != '\0');
            ASSERT_EQ(sbuf.size, 0);
        }
    }
    ASSERT(succeeded);
    char *back = NULL;
    msgpack_unpacked unpacked;
    msgpack_unpacked_init(&unpacked);
    ASSERT_EQ(s_unpack_all(&sbuf, &unpacked), 0);
    back = bf_json_from_msgpack(&unpacked.data, BF_JSON_COMPACT);
    ASSERT_STR_EQ(back, json);
    free(back);
    msgpack_unpacked_destroy(&unpacked);
    msgpack_sbuffer_destroy(&sbuf);
}

int main(void)
{
    RUN(round_trip_nested_chinese);
    RUN(integer_limits);
    RUN(reals);
    RUN(null_bool_empty);
    RUN(layout_flags);
    RUN(invalid_json_has_position);
    RUN(trailing_garbage_rejected);
    RUN(invalid_utf8_is_escaped);
    RUN(bin_and_ext);
    RUN(order_preserved);
    RUN(too_deep_refused);
    RUN(msgpack_to_file);
    RUN(parse_survives_allocation_failure);
    return TEST_REPORT();
}
