/* template.c: the words people read, per event type and locale.
 *
 * A template is a subject (email subject, inbox title) and a body, with
 * {{path}} placeholders filled from the event: a dot path looked up in the
 * event's data first ({{title}}, {{owner.id}}), then in the envelope
 * ({{type}}, {{subject}}, {{time}}); {{a|b}} takes the first that is present.
 * A missing value renders as nothing. Lookup order for (type, locale): the
 * table, the built-in default for that type, the table's generic "*", the
 * built-in generic; each first in the wanted locale, then in zh-CN.
 */
#include "notify.h"
#include "bf_json.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *type, *locale, *subject, *body;
} s_builtin_t;

static const s_builtin_t s_builtins[] = {
    {"bangfu.tasks.task.due_soon", "zh-CN", "【帮扶提醒】任务即将到期：{{title}}",
     "您负责的任务“{{title}}”将于 {{due_local|due_at|due}} 到期，请按时完成并提交材料。\n"
     "任务编号：{{task_id|id}}\n"},
    {"bangfu.tasks.task.due_soon", "en", "Reminder: task due soon: {{title}}",
     "The task \"{{title}}\" you are responsible for is due {{due_local|due_at|due}}. Please complete it "
     "and submit the evidence in time.\nTask: {{task_id|id}}\n"},
    {"bangfu.tasks.task.overdue", "zh-CN", "【逾期提醒】任务已逾期：{{title}}",
     "任务“{{title}}”已于 {{due_local|due_at|due}} 逾期，请尽快办理并说明情况。\n"
     "任务编号：{{task_id|id}}\n"},
    {"bangfu.tasks.task.overdue", "en", "Overdue: {{title}}",
     "The task \"{{title}}\" was due {{due_local|due_at|due}} and is overdue. Please act on it now.\n"
     "Task: {{task_id|id}}\n"},
    {"bangfu.tasks.task.escalated", "zh-CN", "【督办】逾期任务已升级：{{title}}",
     "任务“{{title}}”逾期未办结（截止 {{due_local|due_at|due}}），已升级至第 {{step|level}} 级督办，"
     "请及时督促办理。\n任务编号：{{task_id|id}}\n"},
    {"bangfu.tasks.task.escalated", "en", "Escalated: {{title}}",
     "The overdue task \"{{title}}\" (due {{due_local|due_at|due}}) has been escalated to step "
     "{{step|level}}. Please see that it is done.\nTask: {{task_id|id}}\n"},
    {"*", "zh-CN", "【结对帮扶通知】{{type}}",
     "事件：{{type}}\n对象：{{subject}}\n时间：{{time}}\n编号：{{id}}\n"},
    {"*", "en", "[bangfu] {{type}}", "Event: {{type}}\nSubject: {{subject}}\nTime: {{time}}\n"
                                     "Id: {{id}}\n"},
    {NULL, NULL, NULL, NULL},
};

static const s_builtin_t *s_builtin(const char *type, const char *locale)
{
    for (const s_builtin_t *b = s_builtins; b->type; b++)
        if (!strcmp(b->type, type) && !strcmp(b->locale, locale)) return b;
    return NULL;
}

/* Looks a dot path up in a map. */
static const msgpack_object *s_path(const msgpack_object *map, const char *path, size_t len)
{
    const msgpack_object *cur = map;
    size_t i = 0;
    while (cur && i < len) {
        size_t j = i;
        while (j < len && path[j] != '.') j++;
        char key[128];
        if (j - i == 0 || j - i >= sizeof key) return NULL;
        memcpy(key, path + i, j - i);
        key[j - i] = '\0';
        cur = bf_mp_get(cur, key);
        i = j + 1;
    }
    return cur;
}

typedef struct {
    char *data;
    size_t len, cap;
    int bad;
} s_out_t;

static void s_put(s_out_t *o, const char *s, size_t n)
{
    if (o->bad) return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->cap ? o->cap * 2 : 256) + n;
        char *p = realloc(o->data, cap);
        if (!p) {
            o->bad = 1;
            return;
        }
        o->data = p;
        o->cap = cap;
    }
    memcpy(o->data + o->len, s, n);
    o->len += n;
    o->data[o->len] = '\0';
}

static void s_put_value(s_out_t *o, const msgpack_object *v)
{
    char num[64];
    switch (v->type) {
    case MSGPACK_OBJECT_STR: s_put(o, v->via.str.ptr, v->via.str.size); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof num, "%llu", (unsigned long long)v->via.u64);
        s_put(o, num, strlen(num));
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof num, "%lld", (long long)v->via.i64);
        s_put(o, num, strlen(num));
        break;
    case MSGPACK_OBJECT_BOOLEAN: s_put(o, v->via.boolean ? "true" : "false", v->via.boolean ? 4 : 5); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        snprintf(num, sizeof num, "%g", v->via.f64);
        s_put(o, num, strlen(num));
        break;
    case MSGPACK_OBJECT_NIL: break;
    default: {
        char *j = bf_json_from_msgpack(v, BF_JSON_COMPACT);
        if (j) s_put(o, j, strlen(j));
        free(j);
    }
    }
}

char *notify_template_apply(const char *tmpl, const msgpack_object *event)
{
    s_out_t o = {0};
    const msgpack_object *data = bf_mp_get(event, "data");
    const char *p = tmpl;
    s_put(&o, "", 0);
    while (*p) {
        const char *open = strstr(p, "{{");
        if (!open) {
            s_put(&o, p, strlen(p));
            break;
        }
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            s_put(&o, p, strlen(p));
            break;
        }
        s_put(&o, p, (size_t)(open - p));
        /* alternatives a|b|c, each a dot path, spaces trimmed */
        const char *a = open + 2;
        while (a < close) {
            const char *bar = memchr(a, '|', (size_t)(close - a));
            const char *end = bar ? bar : close;
            const char *s = a, *e = end;
            while (s < e && *s == ' ') s++;
            while (e > s && e[-1] == ' ') e--;
            const msgpack_object *v = NULL;
            if (e > s) {
                if (data && data->type == MSGPACK_OBJECT_MAP) v = s_path(data, s, (size_t)(e - s));
                if (!v) v = s_path(event, s, (size_t)(e - s));
            }
            if (v && v->type != MSGPACK_OBJECT_NIL) {
                s_put_value(&o, v);
                break;
            }
            a = end + 1;
        }
        p = close + 2;
    }
    if (o.bad) {
        free(o.data);
        return NULL;
    }
    return o.data;
}

/* The stored template for (type, locale), or -1 on a database error, 0 if
 * none, 1 with malloc'd copies. */
static int s_stored(bf_db_t *db, const char *type, const char *locale, char **subject,
                    char **body)
{
    const char *p[] = {type, locale};
    PGresult *res = bf_db_prep(db, "notify_template_get",
                               "SELECT subject, body FROM template WHERE type = $1 AND locale = $2",
                               2, p, NULL, NULL);
    if (!res) return -1;
    int rc = 0;
    if (PQntuples(res) == 1) {
        *subject = strdup(bf_db_str(res, 0, "subject"));
        *body = strdup(bf_db_str(res, 0, "body"));
        rc = 1;
    }
    PQclear(res);
    return rc;
}

int notify_render(bf_db_t *db, const char *type, const char *locale, const msgpack_object *event,
                  char **subject, char **body)
{
    char *st = NULL, *bt = NULL;
    const char *locales[] = {locale, strcmp(locale, "zh-CN") ? "zh-CN" : NULL};
    const char *types[] = {type, "*"};
    int found = 0;
    for (int t = 0; t < 2 && !found; t++) {
        for (int l = 0; l < 2 && !found; l++) {
            if (!locales[l]) continue;
            int rc = s_stored(db, types[t], locales[l], &st, &bt);
            if (rc < 0) return -1;
            if (rc == 1) {
                found = 1;
                break;
            }
            const s_builtin_t *b = s_builtin(types[t], locales[l]);
            if (b) {
                st = strdup(b->subject);
                bt = strdup(b->body);
                found = 1;
            }
        }
    }
    if (!st || !bt) {
        free(st);
        free(bt);
        return -1;
    }
    *subject = notify_template_apply(st, event);
    *body = notify_template_apply(bt, event);
    free(st);
    free(bt);
    if (!*subject || !*body) {
        free(*subject);
        free(*body);
        *subject = *body = NULL;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ handlers */

static const char *const s_locales[] = {"zh-CN", "en", NULL};

int template_put(bf_req_t *r)
{
    const char *type, *locale = "zh-CN", *subject, *body;
    if (bf_req_str(r, r->params, NULL, "type", true, 200, &type) != 0) return -1;
    if (!*type) return bf_req_fail(r, BF_E_INVALID, "type", "type must not be empty");
    if (bf_req_enum(r, r->params, NULL, "locale", false, s_locales, &locale) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "subject", true, 1000, &subject) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "body", true, 20000, &body) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {type, locale, subject, body, r->actor};
    PGresult *res = bf_db_prep(r->db, "notify_template_put",
                               "INSERT INTO template (type, locale, subject, body, updated_by) "
                               "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (type, locale) DO UPDATE "
                               "SET subject = EXCLUDED.subject, body = EXCLUDED.body, "
                               "updated_by = EXCLUDED.updated_by, updated_at = now()",
                               5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "type", type);
    bf_mp_kv_str(pk, "locale", locale);
    char subj[300];
    snprintf(subj, sizeof subj, "template/%s/%s", type, locale);
    if (notify_admin_record(r, &ev, "template.updated", subj) != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_str(r->out, "type", type);
    bf_mp_kv_str(r->out, "locale", locale);
    return 0;
}

int template_list(bf_req_t *r)
{
    const char *type = NULL;
    if (bf_req_str(r, r->params, NULL, "type", false, 200, &type) < 0) return -1;
    const char *p[] = {type};
    PGresult *res = bf_db_prep(r->db, "notify_template_list",
                               "SELECT type, locale, subject, body, updated_by, "
                               "to_char(updated_at AT TIME ZONE 'UTC', "
                               "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at "
                               "FROM template WHERE $1::text IS NULL OR type = $1 "
                               "ORDER BY type, locale",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    size_t nb = 0;
    for (const s_builtin_t *b = s_builtins; b->type; b++)
        if (!type || !strcmp(type, b->type)) nb++;
    msgpack_pack_array(r->out, (size_t)rows + nb);
    for (int i = 0; i < rows; i++) {
        msgpack_pack_map(r->out, 7);
        bf_mp_kv_str(r->out, "type", bf_db_str(res, i, "type"));
        bf_mp_kv_str(r->out, "locale", bf_db_str(res, i, "locale"));
        bf_mp_kv_str(r->out, "subject", bf_db_str(res, i, "subject"));
        bf_mp_kv_str(r->out, "body", bf_db_str(res, i, "body"));
        bf_mp_kv_bool(r->out, "builtin", false);
        bf_mp_kv_str(r->out, "updated_by", bf_db_str(res, i, "updated_by"));
        bf_mp_kv_str(r->out, "updated_at", bf_db_str(res, i, "updated_at"));
    }
    PQclear(res);
    for (const s_builtin_t *b = s_builtins; b->type; b++) {
        if (type && strcmp(type, b->type)) continue;
        msgpack_pack_map(r->out, 5);
        bf_mp_kv_str(r->out, "type", b->type);
        bf_mp_kv_str(r->out, "locale", b->locale);
        bf_mp_kv_str(r->out, "subject", b->subject);
        bf_mp_kv_str(r->out, "body", b->body);
        bf_mp_kv_bool(r->out, "builtin", true);
    }
    return 0;
}
