/* util.c: the small pieces every funds handler shares: recipient references,
 * amounts, ids and years from params, hex, yuan text, PostgreSQL array
 * literals for bulk statements, and event emission. */
#include "funds.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A positive decimal id without sign or leading zero that fits in int64. */
static int s_id_text(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || s[0] == '0') return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return -1;
    if (n == 19 && strcmp(s, "9223372036854775807") > 0) return -1;
    return 0;
}

int funds_recipient_check(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FUNDS_RECIPIENT_MAX || !bf_valid_utf8(s, n)) return -1;
    const char *colon = strchr(s, ':');
    if (!colon) return -1;
    size_t tl = (size_t)(colon - s);
    const char *v = colon + 1;
    if (tl == 6 && !strncmp(s, "region", 6))
        return bf_division_check(v, strlen(v)) == 0 ? 0 : -1;
    if ((tl == 7 && !strncmp(s, "village", 7)) || (tl == 9 && !strncmp(s, "household", 9)) ||
        (tl == 6 && !strncmp(s, "person", 6)) || (tl == 4 && !strncmp(s, "unit", 4)))
        return s_id_text(v);
    if (tl == 7 && !strncmp(s, "program", 7)) {
        if (!*v) return -1;
        for (const char *p = v; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) return -1;
        return 0;
    }
    return -1;
}

int funds_req_recipient(bf_req_t *r, const msgpack_object *in, const char *prefix,
                        const char *key, bool required, const char **out)
{
    const char *s;
    int rc = bf_req_str(r, in, prefix, key, required, FUNDS_RECIPIENT_MAX, &s);
    if (rc != 0) return rc;
    if (funds_recipient_check(s) != 0) {
        const char *field = bf_req_field(r, prefix, key);
        return bf_req_fail(r, BF_E_INVALID, field,
                           "%s must be a recipient reference: region:<12-digit code>, "
                           "village:<id>, household:<id>, person:<id>, unit:<id> or "
                           "program:<name>",
                           field);
    }
    *out = s;
    return 0;
}

int funds_req_amount(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, int64_t min, int64_t *out)
{
    const msgpack_object *o = bf_mp_get(in, key);
    const char *field = bf_req_field(r, prefix, key);
    if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must not be negative", field);
    if (o && (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64))
        return bf_req_fail(r, BF_E_INVALID, field,
                           "%s must be an integer number of fen, not a float", field);
    int rc = bf_req_int(r, in, prefix, key, required, min, INT64_MAX, out);
    if (rc < 0 && min > 0 && o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
        o->via.u64 == 0)
        return bf_req_fail(r, BF_E_INVALID, field, "%s must be positive", field);
    return rc;
}

int funds_req_id(bf_req_t *r, const char *key, bool required, int64_t *out)
{
    return bf_req_int(r, r->params, NULL, key, required, 1, INT64_MAX, out);
}

int funds_req_year(bf_req_t *r, const char *key, bool required, int *out)
{
    int64_t y;
    int rc = bf_req_int(r, r->params, NULL, key, required, 2000, 2100, &y);
    if (rc == 0) *out = (int)y;
    return rc;
}

void funds_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[bytes[i] >> 4];
        out[2 * i + 1] = d[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static int s_nibble(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int funds_unhex(const char *s, unsigned char *out, size_t n)
{
    if (!s) return -1;
    if (s[0] == '\\' && s[1] == 'x') s += 2;
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = s_nibble(s[2 * i]), lo = s_nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

const char *funds_yuan(bf_req_t *r, int64_t fen)
{
    char buf[BF_MONEY_FMT_MAX];
    bf_money_format(fen, buf, sizeof buf);
    const char *s = bf_arena_strndup(r->arena, buf, strlen(buf));
    return s ? s : "?";
}

void funds_arr_init(funds_arr_t *a)
{
    msgpack_sbuffer_init(&a->buf);
    a->n = 0;
    msgpack_sbuffer_write(&a->buf, "{", 1);
}

static void s_sep(funds_arr_t *a)
{
    if (a->n++) msgpack_sbuffer_write(&a->buf, ",", 1);
}

void funds_arr_int(funds_arr_t *a, int64_t v, bool null)
{
    s_sep(a);
    if (null) {
        msgpack_sbuffer_write(&a->buf, "NULL", 4);
        return;
    }
    char num[24];
    int k = snprintf(num, sizeof num, "%lld", (long long)v);
    msgpack_sbuffer_write(&a->buf, num, (size_t)k);
}

void funds_arr_text(funds_arr_t *a, const char *s)
{
    s_sep(a);
    if (!s) {
        msgpack_sbuffer_write(&a->buf, "NULL", 4);
        return;
    }
    msgpack_sbuffer_write(&a->buf, "\"", 1);
    const char *run = s;
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            msgpack_sbuffer_write(&a->buf, run, (size_t)(p - run));
            msgpack_sbuffer_write(&a->buf, "\\", 1);
            run = p;
        }
    }
    msgpack_sbuffer_write(&a->buf, run, strlen(run));
    msgpack_sbuffer_write(&a->buf, "\"", 1);
}

const char *funds_arr_end(funds_arr_t *a)
{
    msgpack_sbuffer_write(&a->buf, "}", 2); /* the brace and a NUL */
    return a->buf.data;
}

void funds_arr_free(funds_arr_t *a) { msgpack_sbuffer_destroy(&a->buf); }

int funds_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject)
{
    char type[128];
    snprintf(type, sizeof type, "bangfu.funds.%s", what);
    if (bf_event_commit(ev, r->db, FUNDS_SERVICE, type, subject, r->actor) != 0)
        return bf_req_db_fail(r);
    return 0;
}

int funds_pack_json_list(bf_req_t *r, const PGresult *res, int row, const char *col)
{
    /* r->out packs into the request's result sbuffer (bf_rpc.c) */
    return bf_req_json_column(r, (msgpack_sbuffer *)r->out->data, res, row, col, col);
}
