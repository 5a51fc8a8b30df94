/* money: yuan text <-> integer fen, exactly; see money.h. */
#include "money.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int money_is_fen_key(const char *key, size_t len)
{
    return len >= 4 && memcmp(key + len - 4, "_fen", 4) == 0;
}

int money_parse_yuan_n(const char *s, size_t len, int64_t *fen, char *err, size_t errlen)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    /* |value| in fen as an unsigned number: INT64_MIN fen is representable */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t yuan = 0, frac = 0;
    size_t int_digits = 0, frac_digits = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, int_digits++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (yuan > (UINT64_MAX - d) / 10) {
            snprintf(err, errlen, "too large");
            return -1;
        }
        yuan = yuan * 10 + d;
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, frac_digits++)
            if (frac_digits < 2) frac = frac * 10 + (uint64_t)(s[i] - '0');
        if (frac_digits > 2) {
            snprintf(err, errlen, "more than 2 decimals (fen are the smallest unit)");
            return -1;
        }
        if (frac_digits == 1) frac *= 10;
    }
    if (i != len || int_digits + frac_digits == 0) {
        snprintf(err, errlen, "not an amount in yuan (digits, at most 2 decimals: 12.34)");
        return -1;
    }
    if (yuan > (limit - frac) / 100) {
        snprintf(err, errlen, "too large");
        return -1;
    }
    uint64_t abs = yuan * 100 + frac;
    *fen = neg ? (int64_t)(0 - abs) : (int64_t)abs; /* two's complement: exact for INT64_MIN */
    return 0;
}

int money_parse_yuan(const char *s, int64_t *fen, char *err, size_t errlen)
{
    return money_parse_yuan_n(s, s ? strlen(s) : 0, fen, err, errlen);
}

char *money_format_yuan(int64_t fen, char *out, size_t n)
{
    uint64_t abs = fen < 0 ? 0 - (uint64_t)fen : (uint64_t)fen;
    snprintf(out, n, "%s%llu.%02u", fen < 0 ? "-" : "", (unsigned long long)(abs / 100),
             (unsigned)(abs % 100));
    return out;
}

/* a growable output buffer */
typedef struct {
    char *p;
    size_t len, cap;
} s_buf_t;

static int s_put(s_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* the end of the JSON string starting at the quote s[i]; len if unterminated */
static size_t s_string_end(const char *s, size_t i, size_t len)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len) i++;
        else if (s[i] == '"') return i + 1;
    }
    return len;
}

static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int money_json_yuan_to_fen(const char *json, char **out, char *err, size_t errlen)
{
    s_buf_t b = {NULL, 0, 0};
    size_t len = strlen(json), i = 0;
    *out = NULL;
    if (s_put(&b, "", 0) != 0) goto oom;
    while (i < len) {
        if (json[i] != '"') {
            if (s_put(&b, json + i, 1) != 0) goto oom;
            i++;
            continue;
        }
        size_t end = s_string_end(json, i, len);
        if (s_put(&b, json + i, end - i) != 0) goto oom;
        /* a key: a string followed by ':' */
        size_t j = end;
        while (j < len && s_space(json[j])) j++;
        const char *key = json + i + 1;
        size_t klen = end - i >= 2 ? end - i - 2 : 0;
        bool fen_key = klen > 0 && j < len && json[j] == ':' && money_is_fen_key(key, klen);
        i = end;
        if (!fen_key) continue;
        for (j++; j < len && s_space(json[j]); j++) {}
        if (s_put(&b, json + i, j - i) != 0) goto oom; /* the colon and blanks */
        const char *v;
        size_t vlen, next;
        if (j < len && json[j] == '"') {
            next = s_string_end(json, j, len);
            v = json + j + 1;
            vlen = next > j + 1 && json[next - 1] == '"' ? next - j - 2 : next - j - 1;
        } else {
            next = j;
            while (next < len && (strchr("+-.0123456789eE", json[next]) != NULL)) next++;
            v = json + j;
            vlen = next - j;
        }
        if (vlen == 0 && (j >= len || json[j] != '"')) {
            /* null, an object, ...: not an amount; the service will say so */
            i = j;
            continue;
        }
        int64_t fen;
        char why[128];
        if (money_parse_yuan_n(v, vlen, &fen, why, sizeof why) != 0) {
            snprintf(err, errlen, "%.*s: \"%.*s\" is %s", (int)klen, key, (int)vlen, v, why);
            goto bad;
        }
        char num[32];
        int k = snprintf(num, sizeof num, "%lld", (long long)fen);
        if (s_put(&b, num, (size_t)k) != 0) goto oom;
        i = next;
    }
    *out = b.p;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
bad:
    free(b.p);
    return -1;
}
