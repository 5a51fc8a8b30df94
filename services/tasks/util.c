/* util.c: helpers every tasks file shares: events, the clock's now, parameter
 * readers for due times, dates, id lists and nested maps, counted maps. */
#include "tasks.h"
#include "bf_db.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tasks_emit(bf_req_t *r, bf_event_t *ev, const char *what, const char *entity, int64_t id)
{
    char type[128], subject[96];
    snprintf(type, sizeof type, "bangfu.tasks.%s", what);
    snprintf(subject, sizeof subject, "%s/%lld", entity, (long long)id);
    if (bf_event_commit(ev, r->db, TASKS_SERVICE, type, subject,
                        r->actor ? r->actor : "system:scheduler") != 0)
        return bf_req_db_fail(r);
    return 0;
}

static const char *s_system_now(bf_req_t *r)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    return bf_arena_printf(r->arena, "%04d-%02d-%02d %02d:%02d:%02d.%06ld+00",
                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                           tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000L);
}

const char *tasks_now(bf_req_t *r)
{
    const tasks_t *t = tasks_of(r);
    if (!t->manual_clock) {
        const char *s = s_system_now(r);
        if (!s) bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
        return s;
    }
    PGresult *res = bf_db_prep(r->db, "tasks_clock_now", "SELECT now_at FROM clock WHERE id = 1",
                               0, NULL, NULL, NULL);
    if (!res) {
        bf_req_db_fail(r);
        return NULL;
    }
    const char *v = PQntuples(res) ? bf_db_str(res, 0, "now_at") : NULL;
    const char *out = v ? bf_arena_strndup(r->arena, v, strlen(v)) : s_system_now(r);
    PQclear(res);
    if (!out) bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    return out;
}

int tasks_now_params(bf_req_t *r, const char **sys, const char **manual)
{
    *sys = s_system_now(r);
    *manual = tasks_of(r)->manual_clock ? "t" : "f";
    if (!*sys) return bf_req_fail(r, BF_E_EXHAUSTED, NULL, "out of memory");
    return 0;
}

int tasks_check_keys(bf_req_t *r, const msgpack_object *map, const char *prefix,
                     const char *const *allowed)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = bf_mp_str_eq(k, *a);
        if (!ok) {
            const char *name = k->type == MSGPACK_OBJECT_STR
                                   ? bf_arena_strndup(r->arena, k->via.str.ptr,
                                                      k->via.str.size > 64 ? 64 : k->via.str.size)
                                   : "?";
            const char *f = bf_req_field(r, prefix, name ? name : "?");
            return bf_req_fail(r, BF_E_INVALID, f, "unknown key %s", f);
        }
    }
    return 0;
}

int tasks_text_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, size_t max, const char **out)
{
    const char *s;
    int rc = bf_req_str(r, in, prefix, key, required, max, &s);
    if (rc != 0) return rc;
    const char *q = s;
    for (;;) {
        if (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
            q++;
        else if (!strncmp(q, "\xe3\x80\x80", 3)) /* U+3000 ideographic space */
            q += 3;
        else
            break;
    }
    if (!*q) {
        const char *f = bf_req_field(r, prefix, key);
        return bf_req_fail(r, BF_E_INVALID, f, "%s must not be empty or blank", f);
    }
    *out = s;
    return 0;
}

int tasks_date_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                     const char *key, bool required, const char **out)
{
    const char *s;
    int rc = bf_req_str(r, in, prefix, key, required, 10, &s);
    if (rc != 0) return rc;
    if (bf_valid_date(s, strlen(s), NULL, NULL, NULL) != 0) {
        const char *f = bf_req_field(r, prefix, key);
        return bf_req_fail(r, BF_E_INVALID, f, "%s must be a date YYYY-MM-DD", f);
    }
    *out = s;
    return 0;
}

/* YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM) */
static bool s_rfc3339_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 20 || n > 35) return false;
    if (bf_valid_date(s, 10, NULL, NULL, NULL) != 0) return false;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return false;
    for (int i = 11; i < 19; i++) {
        if (i == 13 || i == 16) {
            if (s[i] != ':') return false;
        } else if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    int hh = (s[11] - '0') * 10 + (s[12] - '0');
    int mm = (s[14] - '0') * 10 + (s[15] - '0');
    int ss = (s[17] - '0') * 10 + (s[18] - '0');
    if (hh > 23 || mm > 59 || ss > 59) return false;
    size_t i = 19;
    if (s[i] == '.') {
        size_t d = 0;
        for (i++; isdigit((unsigned char)s[i]); i++) d++;
        if (d == 0 || d > 6) return false;
    }
    if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0') return true;
    if ((s[i] == '+' || s[i] == '-') && n - i == 6 && isdigit((unsigned char)s[i + 1]) &&
        isdigit((unsigned char)s[i + 2]) && s[i + 3] == ':' && isdigit((unsigned char)s[i + 4]) &&
        isdigit((unsigned char)s[i + 5])) {
        int oh = (s[i + 1] - '0') * 10 + (s[i + 2] - '0');
        int om = (s[i + 4] - '0') * 10 + (s[i + 5] - '0');
        return oh <= 14 && om <= 59;
    }
    return false;
}

static int s_time_param(bf_req_t *r, const msgpack_object *in, const char *prefix,
                        const char *key, bool required, bool day_start, const char **out)
{
    const char *s;
    int rc = bf_req_str(r, in, prefix, key, required, 40, &s);
    if (rc != 0) return rc;
    const char *f = bf_req_field(r, prefix, key);
    PGresult *res;
    if (strlen(s) == 10) {
        if (bf_valid_date(s, 10, NULL, NULL, NULL) != 0)
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be a date YYYY-MM-DD or RFC 3339", f);
        const char *p[] = {s, tasks_of(r)->timezone};
        if (day_start)
            res = bf_db_prep(r->db, "tasks_day_start",
                             "SELECT ($1::date::timestamp AT TIME ZONE $2)::text AS t", 2, p,
                             NULL, NULL);
        else
            res = bf_db_prep(r->db, "tasks_day_end", "SELECT day_end($1::date, $2)::text AS t",
                             2, p, NULL, NULL);
    } else {
        if (!s_rfc3339_ok(s))
            return bf_req_fail(r, BF_E_INVALID, f,
                               "%s must be a date YYYY-MM-DD or an RFC 3339 time with zone", f);
        const char *p[] = {s};
        res = bf_db_prep(r->db, "tasks_ts_parse", "SELECT $1::timestamptz::text AS t", 1, p, NULL,
                         NULL);
    }
    if (!res) {
        if (!strncmp(bf_db_sqlstate(r->db), "22", 2))
            return bf_req_fail(r, BF_E_INVALID, f, "%s is not a valid time", f);
        return bf_req_db_fail(r);
    }
    const char *v = bf_db_str(res, 0, "t");
    *out = v ? bf_arena_strndup(r->arena, v, strlen(v)) : NULL;
    PQclear(res);
    if (!*out) return bf_req_fail(r, BF_E_EXHAUSTED, f, "out of memory");
    return 0;
}

int tasks_due_param(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                    bool required, const char **out)
{
    return s_time_param(r, in, prefix, key, required, false, out);
}

int tasks_from_param(bf_req_t *r, const msgpack_object *in, const char *prefix, const char *key,
                     bool required, const char **out)
{
    return s_time_param(r, in, prefix, key, required, true, out);
}

int tasks_current_year(bf_req_t *r, int64_t *year)
{
    const char *now = tasks_now(r);
    if (!now) return -1;
    const char *p[] = {now, tasks_of(r)->timezone};
    PGresult *res = bf_db_prep(r->db, "tasks_year_of",
                               "SELECT extract(year FROM $1::timestamptz AT TIME ZONE $2)::int AS y",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    *year = bf_db_int(res, 0, "y");
    PQclear(res);
    return 0;
}

int tasks_id_list(bf_req_t *r, const msgpack_object_array *list, const char *field,
                  int64_t **out, size_t *n)
{
    int64_t *ids = bf_arena_alloc(r->arena, sizeof *ids * (list->size ? list->size : 1));
    if (!ids) return bf_req_fail(r, BF_E_EXHAUSTED, field, "out of memory");
    size_t k = 0;
    for (uint32_t i = 0; i < list->size; i++) {
        int64_t v;
        if (!bf_mp_int(&list->ptr[i], &v) || v <= 0) {
            const char *f = bf_arena_printf(r->arena, "%s[%u]", field, i);
            return bf_req_fail(r, BF_E_INVALID, f, "%s must be a positive integer id", f);
        }
        for (size_t j = 0; j < k; j++) {
            if (ids[j] == v) {
                const char *f = bf_arena_printf(r->arena, "%s[%u]", field, i);
                return bf_req_fail(r, BF_E_INVALID, f, "%s repeats id %lld", f, (long long)v);
            }
        }
        ids[k++] = v;
    }
    *out = ids;
    *n = k;
    return 0;
}

const char *tasks_int_array(bf_req_t *r, const int64_t *v, size_t n)
{
    size_t cap = 3 + n * 21;
    char *buf = bf_arena_alloc(r->arena, cap);
    if (!buf) return NULL;
    size_t len = 0;
    buf[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? "," : "", (long long)v[i]);
    buf[len++] = '}';
    buf[len] = '\0';
    return buf;
}

int64_t tasks_parse_duration(const char *s)
{
    if (!s || !isdigit((unsigned char)*s)) return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (v < 0 || v > 100000000LL) return -1;
    int64_t mult;
    if (!strcmp(end, "h")) mult = 3600;
    else if (!strcmp(end, "d")) mult = 86400;
    else if (!strcmp(end, "m")) mult = 60;
    else if (!strcmp(end, "s")) mult = 1;
    else return -1;
    return (int64_t)v * mult;
}

int64_t tasks_bp(int64_t met, int64_t total)
{
    if (total <= 0) return 0;
    return met * 10000 / total;
}

/* ---------------------------------------------------------------- maps */

void tasks_map_begin(tasks_map_t *m)
{
    msgpack_sbuffer_init(&m->buf);
    msgpack_packer_init(&m->pk, &m->buf, msgpack_sbuffer_write);
    m->n = 0;
}

void tasks_map_end(tasks_map_t *m, msgpack_packer *out)
{
    msgpack_pack_map(out, m->n);
    if (m->buf.size) msgpack_sbuffer_write(out->data, m->buf.data, m->buf.size);
    msgpack_sbuffer_destroy(&m->buf);
    memset(&m->buf, 0, sizeof m->buf);
}

void tm_key(tasks_map_t *m, const char *key)
{
    m->n++;
    bf_mp_key(&m->pk, key);
}

void tm_str(tasks_map_t *m, const char *key, const char *val)
{
    m->n++;
    bf_mp_kv_str(&m->pk, key, val);
}

void tm_int(tasks_map_t *m, const char *key, int64_t val)
{
    m->n++;
    bf_mp_kv_int(&m->pk, key, val);
}

void tm_bool(tasks_map_t *m, const char *key, bool val)
{
    m->n++;
    bf_mp_kv_bool(&m->pk, key, val);
}

void tm_col_str(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col)
{
    tm_str(m, key, bf_db_str(res, row, col));
}

void tm_col_int(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col)
{
    if (bf_db_null(res, row, col)) {
        m->n++;
        bf_mp_kv_nil(&m->pk, key);
    } else {
        tm_int(m, key, bf_db_int(res, row, col));
    }
}

void tm_col_bool(tasks_map_t *m, const char *key, const PGresult *res, int row, const char *col)
{
    tm_bool(m, key, bf_db_bool(res, row, col));
}

int tm_json_list(bf_req_t *r, tasks_map_t *m, const char *key, const PGresult *res, int row,
                 const char *col)
{
    tm_key(m, key);
    return bf_req_json_column(r, &m->buf, res, row, col, key);
}
