/* queues.c: what admins see and do with the queues, and the manual clock.
 *
 * queues.stats reads every queue (the event stream and each delivery stream)
 * from Redis: length, the group's pending count, the age of the oldest
 * message not yet done, consumers, delivered / failed in the last minute and
 * hour (10-second buckets of the notify clock), plus the retry set, the
 * dead-letter stream and PostgreSQL's count of unfinished deliveries per
 * state. queues.dead.* work on PostgreSQL's dead deliveries (the record) and
 * keep the dead-letter stream in step; pause/resume write table queue_pause
 * (the truth) and drop its Redis copy, which every instance reads and
 * rebuilds from PostgreSQL when missing (queue.c).
 */
#include "notify.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void notify_pack_delivery(msgpack_packer *pk, const PGresult *res, int i);
const char *notify_delivery_cols(void);

static const char *const s_queues[] = {"events", "webhook", "email", "sms", "inbox", NULL};

static long long s_int_reply(bf_redis_t *rd, int argc, const char **argv)
{
    redisReply *rep = bf_redis_cmd(rd, argc, argv, NULL);
    long long v = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER) v = rep->integer;
    if (rep) freeReplyObject(rep);
    return v;
}

typedef struct {
    long long length, pending, consumers, lag, oldest_age_ms;
    char last_id[64];
} s_qinfo_t;

/* Reads one stream's figures for our group. Returns 0 or -1 (Redis down). */
static int s_qinfo(notify_t *n, bf_redis_t *rd, const char *stream, s_qinfo_t *q)
{
    memset(q, 0, sizeof *q);
    q->lag = -1;
    q->oldest_age_ms = -1;
    const char *xlen[] = {"XLEN", stream};
    q->length = s_int_reply(rd, 2, xlen);
    if (q->length < 0) return -1;
    const char *groups[] = {"XINFO", "GROUPS", stream};
    redisReply *rep = bf_redis_cmd(rd, 3, groups, NULL);
    if (!rep) return -1;
    if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *g = rep->element[i];
            if (!g || g->type != REDIS_REPLY_ARRAY) continue;
            bool ours = false;
            long long consumers = 0, pending = 0, lag = -1;
            char last[64] = "";
            for (size_t k = 0; k + 1 < g->elements; k += 2) {
                const redisReply *key = g->element[k], *v = g->element[k + 1];
                if (!key || !v || key->type != REDIS_REPLY_STRING) continue;
                if (!strcmp(key->str, "name") && v->type == REDIS_REPLY_STRING)
                    ours = !strcmp(v->str, n->group);
                else if (!strcmp(key->str, "consumers") && v->type == REDIS_REPLY_INTEGER)
                    consumers = v->integer;
                else if (!strcmp(key->str, "pending") && v->type == REDIS_REPLY_INTEGER)
                    pending = v->integer;
                else if (!strcmp(key->str, "lag") && v->type == REDIS_REPLY_INTEGER)
                    lag = v->integer;
                else if (!strcmp(key->str, "last-delivered-id") && v->type == REDIS_REPLY_STRING &&
                         v->len < sizeof last)
                    snprintf(last, sizeof last, "%s", v->str);
            }
            if (ours) {
                q->consumers = consumers;
                q->pending = pending;
                q->lag = lag;
                snprintf(q->last_id, sizeof q->last_id, "%s", last);
            }
        }
    }
    freeReplyObject(rep);
    /* the oldest message not done: the oldest pending one, else the first
     * one not yet delivered to the group */
    char oldest[64] = "";
    const char *xp[] = {"XPENDING", stream, n->group};
    rep = bf_redis_cmd(rd, 3, xp, NULL);
    if (!rep) return -1;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 && rep->element[1] &&
        rep->element[1]->type == REDIS_REPLY_STRING && rep->element[1]->len < sizeof oldest)
        snprintf(oldest, sizeof oldest, "%s", rep->element[1]->str);
    freeReplyObject(rep);
    if (!oldest[0]) {
        char start[80];
        snprintf(start, sizeof start, "(%s", q->last_id[0] ? q->last_id : "0-0");
        const char *xr[] = {"XRANGE", stream, start, "+", "COUNT", "1"};
        rep = bf_redis_cmd(rd, 6, xr, NULL);
        if (!rep) return -1;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0] &&
            rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2 &&
            rep->element[0]->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[0]->element[0]->len < sizeof oldest)
            snprintf(oldest, sizeof oldest, "%s", rep->element[0]->element[0]->str);
        freeReplyObject(rep);
    }
    if (oldest[0]) {
        long long age = notify_wall_ms() - notify_stream_id_ms(oldest);
        q->oldest_age_ms = age < 0 ? 0 : age;
    }
    return 0;
}

int queues_stats(bf_req_t *r)
{
    notify_t *n = r->svc;
    /* PostgreSQL: unfinished and dead deliveries per channel and state */
    PGresult *res = bf_db_prep(r->db, "notify_stats_states",
                               "SELECT channel, state, count(*) AS n FROM delivery "
                               "WHERE state IN ('pending','sending','retry','held','dead') "
                               "GROUP BY channel, state",
                               0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    s_qinfo_t qi[6];
    long long sums[6][4];
    bool paused[6];
    for (int i = 0; s_queues[i]; i++) {
        char key[96];
        const char *stream = key;
        if (i == 0) stream = n->events_stream;
        else notify_queue_key(s_queues[i], key, sizeof key);
        if (s_qinfo(n, r->redis, stream, &qi[i]) != 0 ||
            notify_stat_sums(n, r->redis, s_queues[i], &sums[i][0], &sums[i][1], &sums[i][2],
                             &sums[i][3]) != 0) {
            PQclear(res);
            return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "redis: %s", bf_redis_errmsg(r->redis));
        }
        paused[i] = notify_queue_paused(r->redis, r->db, s_queues[i]);
    }
    const char *zc[] = {"ZCARD", NOTIFY_RETRY_KEY};
    const char *dl[] = {"XLEN", NOTIFY_DEAD_KEY};
    long long retry = s_int_reply(r->redis, 2, zc), dead = s_int_reply(r->redis, 2, dl);
    long long next_due = -1;
    const char *zf[] = {"ZRANGE", NOTIFY_RETRY_KEY, "0", "0", "WITHSCORES"};
    redisReply *rep = bf_redis_cmd(r->redis, 5, zf, NULL);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[1] &&
        rep->element[1]->type == REDIS_REPLY_STRING && rep->element[1]->len < 32)
        next_due = strtoll(rep->element[1]->str, NULL, 10);
    if (rep) freeReplyObject(rep);

    msgpack_packer *pk = r->out;
    msgpack_pack_map(pk, 6);
    bf_mp_kv_int(pk, "now_ms", notify_now_ms(n));
    bf_mp_kv_str(pk, "clock", n->manual_clock ? "manual" : "system");
    bf_mp_key(pk, "queues");
    msgpack_pack_array(pk, 5);
    for (int i = 0; s_queues[i]; i++) {
        char key[96];
        if (i == 0) snprintf(key, sizeof key, "%s", n->events_stream);
        else notify_queue_key(s_queues[i], key, sizeof key);
        msgpack_pack_map(pk, i == 0 ? 13 : 17);
        bf_mp_kv_str(pk, "name", s_queues[i]);
        bf_mp_kv_str(pk, "stream", key);
        bf_mp_kv_int(pk, "length", qi[i].length);
        bf_mp_kv_int(pk, "pending", qi[i].pending);
        if (qi[i].lag >= 0) bf_mp_kv_int(pk, "lag", qi[i].lag);
        else bf_mp_kv_nil(pk, "lag");
        if (qi[i].oldest_age_ms >= 0) bf_mp_kv_int(pk, "oldest_age_ms", qi[i].oldest_age_ms);
        else bf_mp_kv_nil(pk, "oldest_age_ms");
        bf_mp_kv_int(pk, "consumers", qi[i].consumers);
        bf_mp_kv_int(pk, "delivered_1m", sums[i][0]);
        bf_mp_kv_int(pk, "failed_1m", sums[i][1]);
        bf_mp_kv_int(pk, "delivered_1h", sums[i][2]);
        bf_mp_kv_int(pk, "failed_1h", sums[i][3]);
        bf_mp_kv_bool(pk, "paused", paused[i]);
        bf_mp_kv_str(pk, "group", n->group);
        if (i > 0) {
            long long st[5] = {0, 0, 0, 0, 0};
            static const char *const names[] = {"pending", "sending", "retry", "held", "dead"};
            for (int row = 0; row < PQntuples(res); row++) {
                if (strcmp(bf_db_str(res, row, "channel"), s_queues[i]) != 0) continue;
                for (int k = 0; k < 5; k++)
                    if (!strcmp(bf_db_str(res, row, "state"), names[k]))
                        st[k] = bf_db_int(res, row, "n");
            }
            bf_mp_kv_int(pk, "retry", st[2]);
            bf_mp_kv_int(pk, "dead", st[4]);
            bf_mp_kv_int(pk, "held", st[3]);
            bf_mp_kv_int(pk, "unfinished", st[0] + st[1] + st[2] + st[3]);
        }
    }
    bf_mp_key(pk, "retry");
    msgpack_pack_map(pk, 3);
    bf_mp_kv_str(pk, "key", NOTIFY_RETRY_KEY);
    bf_mp_kv_int(pk, "size", retry);
    if (next_due >= 0) bf_mp_kv_int(pk, "next_due_ms", next_due);
    else bf_mp_kv_nil(pk, "next_due_ms");
    bf_mp_key(pk, "dead");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "stream", NOTIFY_DEAD_KEY);
    bf_mp_kv_int(pk, "size", dead);
    bf_mp_key(pk, "process");
    msgpack_pack_map(pk, 5);
    bf_mp_kv_str(pk, "instance", n->instance);
    bf_mp_kv_int(pk, "events_seen", atomic_load(&n->events_seen));
    bf_mp_kv_int(pk, "deliveries_sent", atomic_load(&n->deliveries_sent));
    bf_mp_kv_int(pk, "deliveries_failed", atomic_load(&n->deliveries_failed));
    bf_mp_kv_int(pk, "workers", n->workers);
    PQclear(res);
    return 0;
}

/* ----------------------------------------------------------- dead letters */

static const char *const s_channel_names[] = {"webhook", "email", "sms", "inbox", NULL};

static bool s_id_ok(const char *s)
{
    if (strlen(s) != NOTIFY_ID_LEN || s[0] != 'd' || s[1] != '_') return false;
    for (int i = 2; i < NOTIFY_ID_LEN; i++)
        if (!isxdigit((unsigned char)s[i])) return false;
    return true;
}

int queues_dead_list(bf_req_t *r)
{
    const char *channel = NULL, *prefix = NULL, *cursor = NULL;
    int64_t ep = 0, limit = 100;
    if (bf_req_enum(r, r->params, NULL, "channel", false, s_channel_names, &channel) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "endpoint_id", false, 1, INT64_MAX, &ep) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "type_prefix", false, 200, &prefix) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "cursor", false, 128, &cursor) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, 1, 1000, &limit) < 0) return -1;
    const char *c_us = NULL, *c_id = NULL;
    if (cursor) {
        const char *bar = strchr(cursor, '|');
        char *end;
        if (!bar || strtoll(cursor, &end, 10) <= 0 || end != bar || !s_id_ok(bar + 1))
            return bf_req_fail(r, BF_E_INVALID, "cursor", "cursor is not one this method gave");
        c_us = bf_arena_strndup(r->arena, cursor, (size_t)(bar - cursor));
        c_id = bar + 1;
    }
    const char *p[] = {channel, ep ? bf_req_itoa(r, ep) : NULL,
                       prefix, c_us, c_id, bf_req_itoa(r, limit + 1)};
    char *sql = bf_arena_printf(
        r->arena,
        "SELECT %s, (extract(epoch FROM dead_at) * 1000000)::bigint AS us FROM delivery "
        "WHERE state = 'dead' AND ($1::text IS NULL OR channel = $1) "
        "AND ($2::bigint IS NULL OR endpoint_id = $2) "
        "AND ($3::text IS NULL OR starts_with(event_type, $3)) "
        "AND ($4::bigint IS NULL OR ((extract(epoch FROM dead_at) * 1000000)::bigint, id) < "
        "($4::bigint, $5)) "
        "ORDER BY (extract(epoch FROM dead_at) * 1000000)::bigint DESC, id DESC LIMIT $6",
        notify_delivery_cols());
    PGresult *res = bf_db_prep(r->db, "notify_dead_list", sql, 6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res), shown = rows > limit ? (int)limit : rows;
    msgpack_pack_map(r->out, 2);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)shown);
    for (int i = 0; i < shown; i++) notify_pack_delivery(r->out, res, i);
    if (rows > limit)
        bf_mp_kv_str(r->out, "next_cursor",
                     bf_arena_printf(r->arena, "%s|%s", bf_db_str(res, shown - 1, "us"),
                                     bf_db_str(res, shown - 1, "id")));
    else
        bf_mp_kv_nil(r->out, "next_cursor");
    PQclear(res);
    return 0;
}

int queues_dead_show(bf_req_t *r)
{
    const char *id;
    if (bf_req_str(r, r->params, NULL, "id", true, 64, &id) != 0) return -1;
    char *sql = bf_arena_printf(r->arena,
                                "SELECT %s, (SELECT payload FROM event e WHERE e.id = d.event_id) "
                                "AS payload FROM delivery d WHERE id = $1 AND state = 'dead'",
                                notify_delivery_cols());
    const char *p[] = {id};
    PGresult *res = bf_db_prep(r->db, "notify_dead_show", sql, 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no dead delivery %s", id);
    }
    size_t plen = 0;
    unsigned char *payload =
        PQunescapeBytea((const unsigned char *)bf_db_str(res, 0, "payload"), &plen);
    msgpack_pack_map(r->out, 2);
    bf_mp_key(r->out, "delivery");
    notify_pack_delivery(r->out, res, 0);
    bf_mp_key(r->out, "event");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (payload && bf_mp_check((const char *)payload, plen, BF_MP_MAX_DEPTH) == 0 &&
        msgpack_unpack_next(&u, (const char *)payload, plen, &off) == MSGPACK_UNPACK_SUCCESS)
        bf_mp_obj(r->out, &u.data);
    else
        msgpack_pack_nil(r->out);
    msgpack_unpacked_destroy(&u);
    if (payload) PQfreemem(payload);
    PQclear(res);
    return 0;
}

/* The selector of dead.retry / dead.drop: exactly one of id, ids, filter,
 * all. Fills the SQL parameters ($1 id, $2 ids[], $3 channel, $4 endpoint,
 * $5 type prefix, $6 all) and a description for the event. */
static int s_selector(bf_req_t *r, const char **p, const char **what)
{
    const char *id = NULL;
    const msgpack_object_array *ids = NULL;
    const msgpack_object *filter = NULL;
    bool all = false;
    if (bf_req_str(r, r->params, NULL, "id", false, 64, &id) < 0) return -1;
    if (bf_req_list(r, r->params, NULL, "ids", false, 1000, &ids) < 0) return -1;
    if (bf_req_map(r, r->params, NULL, "filter", false, &filter) < 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "all", false, &all) < 0) return -1;
    int given = (id != NULL) + (ids != NULL) + (filter != NULL) + (all ? 1 : 0);
    if (given != 1)
        return bf_req_fail(r, BF_E_INVALID, NULL, "give exactly one of id, ids, filter, all:true");
    for (int i = 0; i < 6; i++) p[i] = NULL;
    if (id) {
        if (!s_id_ok(id)) return bf_req_fail(r, BF_E_INVALID, "id", "not a delivery id");
        p[0] = id;
        *what = "id";
    } else if (ids) {
        size_t cap = (size_t)ids->size * (NOTIFY_ID_LEN + 1) + 3;
        char *lit = bf_arena_alloc(r->arena, cap);
        size_t len = 0;
        lit[len++] = '{';
        for (uint32_t i = 0; i < ids->size; i++) {
            const msgpack_object *o = &ids->ptr[i];
            char one[NOTIFY_ID_LEN + 1];
            if (o->type != MSGPACK_OBJECT_STR || o->via.str.size != NOTIFY_ID_LEN)
                return bf_req_fail(r, BF_E_INVALID, bf_arena_printf(r->arena, "ids[%u]", i),
                                   "not a delivery id");
            memcpy(one, o->via.str.ptr, NOTIFY_ID_LEN);
            one[NOTIFY_ID_LEN] = '\0';
            if (!s_id_ok(one))
                return bf_req_fail(r, BF_E_INVALID, bf_arena_printf(r->arena, "ids[%u]", i),
                                   "not a delivery id");
            if (i) lit[len++] = ',';
            memcpy(lit + len, one, NOTIFY_ID_LEN);
            len += NOTIFY_ID_LEN;
        }
        lit[len++] = '}';
        lit[len] = '\0';
        p[1] = lit;
        *what = "ids";
    } else if (filter) {
        const char *channel = NULL, *prefix = NULL;
        int64_t ep = 0;
        if (bf_req_enum(r, filter, "filter", "channel", false, s_channel_names, &channel) < 0)
            return -1;
        if (bf_req_int(r, filter, "filter", "endpoint_id", false, 1, INT64_MAX, &ep) < 0) return -1;
        if (bf_req_str(r, filter, "filter", "type_prefix", false, 200, &prefix) < 0) return -1;
        if (!channel && !ep && !prefix)
            return bf_req_fail(r, BF_E_INVALID, "filter",
                               "a filter names channel, endpoint_id or type_prefix (or use all)");
        p[2] = channel;
        p[3] = ep ? bf_req_itoa(r, ep) : NULL;
        p[4] = prefix;
        *what = "filter";
    } else {
        if (!all) return bf_req_fail(r, BF_E_INVALID, "all", "all must be true");
        p[5] = "1";
        *what = "all";
    }
    return 0;
}

#define DEAD_WHERE                                                                           \
    "state = 'dead' AND (($1::text IS NOT NULL AND id = $1) OR "                             \
    "($2::text[] IS NOT NULL AND id = ANY($2::text[])) OR "                                  \
    "(($3::text IS NOT NULL OR $4::bigint IS NOT NULL OR $5::text IS NOT NULL) AND "         \
    "($3::text IS NULL OR channel = $3) AND ($4::bigint IS NULL OR endpoint_id = $4) AND "   \
    "($5::text IS NULL OR starts_with(event_type, $5))) OR $6 = '1')"

static int s_dead_act(bf_req_t *r, bool retry)
{
    notify_t *n = r->svc;
    const char *p[6], *what = NULL;
    if (s_selector(r, p, &what) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    PGresult *res = retry
        ? bf_db_prep(r->db, "notify_dead_retry",
                     "UPDATE delivery SET state = 'pending', attempts = 0, due_ms = NULL, "
                     "dead_at = NULL, lease_until = NULL, updated_at = now() WHERE " DEAD_WHERE
                     " RETURNING id, channel",
                     6, p, NULL, NULL)
        : bf_db_prep(r->db, "notify_dead_drop",
                     "UPDATE delivery SET state = 'dropped', updated_at = now() WHERE " DEAD_WHERE
                     " RETURNING id, channel",
                     6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    if (rows == 0 && p[0]) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no dead delivery %s", p[0]);
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    int shown = rows > 100 ? 100 : rows;
    msgpack_pack_map(pk, 3);
    bf_mp_kv_str(pk, "selector", what);
    bf_mp_kv_int(pk, "count", rows);
    bf_mp_key(pk, "ids");
    msgpack_pack_array(pk, (size_t)shown);
    for (int i = 0; i < shown; i++) bf_mp_str(pk, bf_db_str(res, i, "id"));
    if (notify_admin_record(r, &ev, retry ? "dead.retried" : "dead.dropped", "queue/dead") != 0) {
        PQclear(res);
        return -1;
    }
    if (bf_db_commit(r->db) != 0) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    /* PostgreSQL holds the truth now; Redis follows (the re-drive mends a
     * failure here) */
    const char **ids = bf_arena_alloc(r->arena, sizeof *ids * (size_t)(rows ? rows : 1));
    for (int i = 0; i < rows; i++) ids[i] = bf_db_str(res, i, "id");
    notify_queue_dead_remove(r->redis, ids, rows);
    if (retry) {
        for (int i = 0; i < rows; i++)
            notify_queue_push(r->redis, bf_db_str(res, i, "channel"), &ids[i], 1);
    }
    (void)n;
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "count", rows);
    bf_mp_key(r->out, "ids");
    msgpack_pack_array(r->out, (size_t)shown);
    for (int i = 0; i < shown; i++) bf_mp_str(r->out, ids[i]);
    PQclear(res);
    return 0;
}

int queues_dead_retry(bf_req_t *r) { return s_dead_act(r, true); }
int queues_dead_drop(bf_req_t *r) { return s_dead_act(r, false); }

/* ---------------------------------------------------------- pause/resume */

static int s_pause(bf_req_t *r, bool pause)
{
    const char *queue;
    if (bf_req_enum(r, r->params, NULL, "queue", true, s_queues, &queue) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    bool changed = false;
    int rc = notify_pause_set(r->db, r->redis, queue, pause, r->actor, &changed);
    if (rc == -1) return bf_req_db_fail(r);
    if (rc == -2) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "redis is not reachable");
    }
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "queue", queue);
    bf_mp_kv_bool(pk, "changed", changed);
    char subject[48];
    snprintf(subject, sizeof subject, "queue/%s", queue);
    if (notify_admin_record(r, &ev, pause ? "queue.paused" : "queue.resumed", subject) != 0)
        return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_str(r->out, "queue", queue);
    bf_mp_kv_bool(r->out, "paused", pause);
    bf_mp_kv_bool(r->out, "changed", changed);
    return 0;
}

int queues_pause(bf_req_t *r) { return s_pause(r, true); }
int queues_resume(bf_req_t *r) { return s_pause(r, false); }

/* ---------------------------------------------------------------- clock */

int clock_get(bf_req_t *r)
{
    notify_t *n = r->svc;
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_str(r->out, "mode", n->manual_clock ? "manual" : "system");
    bf_mp_kv_int(r->out, "now_ms", notify_now_ms(n));
    return 0;
}

int clock_set(bf_req_t *r)
{
    notify_t *n = r->svc;
    int64_t ms = 0, adv = 0;
    if (!n->manual_clock)
        return bf_req_fail(r, BF_E_PRECONDITION, NULL,
                           "the clock is the system's (notify.clock = system)");
    int has_ms = bf_req_int(r, r->params, NULL, "ms", false, 0, INT64_MAX / 2, &ms);
    int has_adv = bf_req_int(r, r->params, NULL, "advance_ms", false, 0, INT64_MAX / 4, &adv);
    if (has_ms < 0 || has_adv < 0) return -1;
    if ((has_ms == 0) == (has_adv == 0))
        return bf_req_fail(r, BF_E_INVALID, NULL, "give exactly one of ms and advance_ms");
    int64_t now = has_ms == 0 ? ms : atomic_fetch_add(&n->manual_ms, adv) + adv;
    if (has_ms == 0) atomic_store(&n->manual_ms, ms);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_int(r->out, "now_ms", now);
    return 0;
}

int scheduler_tick(bf_req_t *r)
{
    notify_t *n = r->svc;
    if (!n->manual_clock)
        return bf_req_fail(r, BF_E_PRECONDITION, NULL,
                           "scheduler.tick is for the manual clock (notify.clock = manual)");
    long moved = notify_queue_move_due(r->redis, notify_now_ms(n), 100000);
    if (moved < 0) return bf_req_fail(r, BF_E_UNAVAILABLE, NULL, "redis is not reachable");
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "moved", moved);
    bf_mp_kv_int(r->out, "now_ms", notify_now_ms(n));
    return 0;
}
