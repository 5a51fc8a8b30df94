/* queue.c: the Redis side of notify's queues (see notify.h, docs/notify.md).
 *
 * One Redis Stream per channel holds the deliveries to do (field d = the
 * delivery id; the delivery itself lives in PostgreSQL). A message is
 * acknowledged and deleted (XACK + XDEL) once its delivery succeeded, was
 * rescheduled or was given up, so a stream holds exactly the work not yet
 * done: its length is the queue's depth, and the re-drive can tell what Redis
 * still holds. Retries wait in one sorted set scored by due time (the notify
 * clock) and are moved back by a Lua script, atomically. Every reply is
 * checked for type before use: Redis replies are untrusted in shape.
 */
#include "notify.h"
#include "bf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void notify_queue_key(const char *channel, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", NOTIFY_Q_PREFIX, channel);
}

static int s_group_create(bf_redis_t *rd, const char *stream, const char *group, const char *start)
{
    const char *argv[] = {"XGROUP", "CREATE", stream, group, start, "MKSTREAM"};
    redisReply *rep = bf_redis_cmd(rd, 6, argv, NULL);
    if (!rep) {
        bf_log(BF_ERROR, "redis: %s", bf_redis_errmsg(rd));
        return -1;
    }
    int rc = 0;
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "BUSYGROUP", 9) != 0) {
        bf_log(BF_ERROR, "redis: XGROUP CREATE %s: %s", stream, rep->str);
        rc = -1;
    }
    freeReplyObject(rep);
    return rc;
}

int notify_queue_init(notify_t *n, bf_redis_t *rd)
{
    return notify_queue_init_from(n, rd, n->group_start);
}

int notify_queue_init_from(notify_t *n, bf_redis_t *rd, const char *events_start)
{
    if (s_group_create(rd, n->events_stream, n->group, events_start) != 0) return -1;
    for (int i = 0; notify_channels[i]; i++) {
        char key[96];
        notify_queue_key(notify_channels[i], key, sizeof key);
        if (s_group_create(rd, key, n->group, "0") != 0) return -1;
    }
    return 0;
}

/* XINFO CONSUMERS and XGROUP DELCONSUMER in one script, so a consumer that
 * reads between the look and the removal cannot lose its pending list. */
static const char *s_forget_lua =
    "local info = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])\n"
    "if type(info) ~= 'table' or info.err then return 0 end\n"
    "local prefix, own, min_idle = ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])\n"
    "local n = 0\n"
    "for _, c in ipairs(info) do\n"
    "  local f = {}\n"
    "  for i = 1, #c - 1, 2 do f[c[i]] = c[i + 1] end\n"
    "  local name = f['name']\n"
    "  if type(name) == 'string' then\n"
    "    local mine = string.sub(name, 1, #prefix) == prefix\n"
    "    if mine == own and tonumber(f['pending']) == 0 and tonumber(f['idle']) >= min_idle "
    "then\n"
    "      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

long notify_queue_forget_consumers(notify_t *n, bf_redis_t *rd, const char *stream, bool own,
                                   long long min_idle_ms)
{
    char prefix[sizeof n->instance + 1], idle[24];
    snprintf(prefix, sizeof prefix, "%s:", n->instance);
    snprintf(idle, sizeof idle, "%lld", min_idle_ms);
    const char *argv[] = {"EVAL", s_forget_lua, "1", stream, n->group, prefix, own ? "1" : "0",
                          idle};
    redisReply *rep = bf_redis_cmd(rd, 8, argv, NULL);
    long removed = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER) removed = (long)rep->integer;
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        bf_log(BF_WARN, "forgetting consumers of %s: %s", stream, rep->str);
    if (rep) freeReplyObject(rep);
    return removed;
}

int notify_queue_push(bf_redis_t *rd, const char *channel, const char *const *ids, int n)
{
    char key[96];
    notify_queue_key(channel, key, sizeof key);
    for (int i = 0; i < n; i++) {
        const char *argv[] = {"XADD", key, "*", "d", ids[i]};
        if (bf_redis_append(rd, 5, argv, NULL) != 0) return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        redisReply *rep = bf_redis_read(rd);
        if (!rep) return -1;
        if (rep->type != REDIS_REPLY_STRING) rc = -1;
        freeReplyObject(rep);
    }
    return rc;
}

int notify_queue_retry(bf_redis_t *rd, const char *channel, const char *id, int64_t due_ms)
{
    char member[128], score[32];
    snprintf(member, sizeof member, "%s|%s", channel, id);
    snprintf(score, sizeof score, "%lld", (long long)due_ms);
    const char *argv[] = {"ZADD", NOTIFY_RETRY_KEY, score, member};
    redisReply *rep = bf_redis_cmd(rd, 4, argv, NULL);
    int ok = rep && rep->type == REDIS_REPLY_INTEGER;
    if (rep) freeReplyObject(rep);
    return ok ? 0 : -1;
}

int notify_queue_done(notify_t *n, bf_redis_t *rd, const char *channel, const char *msg_id)
{
    char key[96];
    notify_queue_key(channel, key, sizeof key);
    const char *ack[] = {"XACK", key, n->group, msg_id};
    const char *del[] = {"XDEL", key, msg_id};
    if (bf_redis_append(rd, 4, ack, NULL) != 0 || bf_redis_append(rd, 3, del, NULL) != 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        redisReply *rep = bf_redis_read(rd);
        if (!rep) return -1;
        if (rep->type != REDIS_REPLY_INTEGER) rc = -1;
        freeReplyObject(rep);
    }
    return rc;
}

int notify_queue_dead(bf_redis_t *rd, const char *id, const char *channel, const char *type,
                      int attempts, const char *error)
{
    char att[16], at[24];
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(at, sizeof at, "%lld", (long long)notify_wall_ms());
    const char *argv[] = {"XADD", NOTIFY_DEAD_KEY, "MAXLEN", "~", "1000000", "*",
                          "d", id, "channel", channel, "type", type ? type : "",
                          "attempts", att, "error", error ? error : "", "at", at};
    redisReply *rep = bf_redis_cmd(rd, 18, argv, NULL);
    int ok = rep && rep->type == REDIS_REPLY_STRING;
    if (rep) freeReplyObject(rep);
    return ok ? 0 : -1;
}

/* The value of field name in a stream entry's flat field array, or NULL. */
static const redisReply *s_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k && k->type == REDIS_REPLY_STRING && strlen(name) == k->len &&
            memcmp(k->str, name, k->len) == 0) {
            const redisReply *v = fields->element[i + 1];
            return v && v->type == REDIS_REPLY_STRING ? v : NULL;
        }
    }
    return NULL;
}

long notify_queue_dead_remove(bf_redis_t *rd, const char *const *ids, int n)
{
    if (n <= 0) return 0;
    char start[64] = "-";
    long removed = 0;
    for (int round = 0; round < 10000; round++) {
        const char *argv[] = {"XRANGE", NOTIFY_DEAD_KEY, start, "+", "COUNT", "1000"};
        redisReply *rep = bf_redis_cmd(rd, 6, argv, NULL);
        if (!rep) return -1;
        if (rep->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(rep);
            return -1;
        }
        size_t got = rep->elements;
        for (size_t i = 0; i < got; i++) {
            const redisReply *e = rep->element[i];
            if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            const redisReply *d = s_field(e->element[1], "d");
            if (d) {
                for (int k = 0; k < n; k++) {
                    if (strlen(ids[k]) == d->len && memcmp(ids[k], d->str, d->len) == 0) {
                        const char *del[] = {"XDEL", NOTIFY_DEAD_KEY, e->element[0]->str};
                        redisReply *x = bf_redis_cmd(rd, 3, del, NULL);
                        if (x && x->type == REDIS_REPLY_INTEGER) removed += (long)x->integer;
                        if (x) freeReplyObject(x);
                        break;
                    }
                }
            }
            if (i + 1 == got && e->element[0]->len < sizeof start - 2)
                snprintf(start, sizeof start, "(%s", e->element[0]->str);
        }
        freeReplyObject(rep);
        if (got < 1000) break;
    }
    return removed;
}

static const char *s_move_lua =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, "
    "tonumber(ARGV[2]))\n"
    "for _, m in ipairs(due) do\n"
    "  local sep = string.find(m, '|', 1, true)\n"
    "  if sep then\n"
    "    redis.call('XADD', ARGV[3] .. string.sub(m, 1, sep - 1), '*', 'd', "
    "string.sub(m, sep + 1))\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[1], m)\n"
    "end\n"
    "return #due\n";

long notify_queue_move_due(bf_redis_t *rd, int64_t now_ms, int limit)
{
    char now[32], lim[16];
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    snprintf(lim, sizeof lim, "%d", limit);
    const char *argv[] = {"EVAL", s_move_lua, "1", NOTIFY_RETRY_KEY, now, lim, NOTIFY_Q_PREFIX};
    redisReply *rep = bf_redis_cmd(rd, 7, argv, NULL);
    long moved = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER) moved = (long)rep->integer;
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        bf_log(BF_WARN, "retry mover: %s", rep->str);
    if (rep) freeReplyObject(rep);
    return moved;
}

/* ---------------------------------------------------------------- stats */

#define STAT_BUCKET_MS 10000LL
#define STAT_HOUR_MS 3600000LL

void notify_stat_count(notify_t *n, bf_redis_t *rd, const char *queue, bool ok, long count)
{
    if (count <= 0) return;
    int64_t now = notify_now_ms(n);
    char key[128], field[32], by[24];
    snprintf(key, sizeof key, "%s%s:%lld", NOTIFY_STAT_PREFIX, queue,
             (long long)(now / STAT_HOUR_MS));
    snprintf(field, sizeof field, "%c%lld", ok ? 'd' : 'f', (long long)(now / STAT_BUCKET_MS));
    snprintf(by, sizeof by, "%ld", count);
    const char *inc[] = {"HINCRBY", key, field, by};
    const char *exp[] = {"EXPIRE", key, "10800"};
    if (bf_redis_append(rd, 4, inc, NULL) != 0 || bf_redis_append(rd, 3, exp, NULL) != 0) return;
    for (int i = 0; i < 2; i++) {
        redisReply *rep = bf_redis_read(rd);
        if (!rep) return;
        freeReplyObject(rep);
    }
}

int notify_stat_sums(notify_t *n, bf_redis_t *rd, const char *queue, long long *ok_1m,
                     long long *fail_1m, long long *ok_1h, long long *fail_1h)
{
    *ok_1m = *fail_1m = *ok_1h = *fail_1h = 0;
    int64_t now = notify_now_ms(n);
    long long hour = now / STAT_HOUR_MS, bucket = now / STAT_BUCKET_MS;
    for (long long h = hour - 1; h <= hour; h++) {
        char key[128];
        snprintf(key, sizeof key, "%s%s:%lld", NOTIFY_STAT_PREFIX, queue, h);
        const char *argv[] = {"HGETALL", key};
        redisReply *rep = bf_redis_cmd(rd, 2, argv, NULL);
        if (!rep) return -1;
        if (rep->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i + 1 < rep->elements; i += 2) {
                const redisReply *k = rep->element[i], *v = rep->element[i + 1];
                if (!k || !v || k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                    k->len < 2 || k->len > 24 || v->len > 24)
                    continue;
                char kb[32], vb[32];
                memcpy(kb, k->str, k->len);
                kb[k->len] = '\0';
                memcpy(vb, v->str, v->len);
                vb[v->len] = '\0';
                long long b = strtoll(kb + 1, NULL, 10), c = strtoll(vb, NULL, 10);
                if (b > bucket) continue;
                bool okk = kb[0] == 'd';
                if (b > bucket - 6) *(okk ? ok_1m : fail_1m) += c;
                if (b > bucket - 360) *(okk ? ok_1h : fail_1h) += c;
            }
        }
        freeReplyObject(rep);
    }
    return 0;
}

/* The paused set in Redis is a copy of table queue_pause. It always holds
 * the member NOTIFY_PAUSED_MARK, so a set without it is a copy that was lost
 * (Redis restarted without its data, flushed) or dropped by queues.pause /
 * queues.resume: it is then rebuilt from PostgreSQL. Rebuilds and changes
 * take the same transaction-scoped advisory lock, so a rebuild never writes
 * a state older than a committed change. */
#define S_PAUSE_LOCK "SELECT pg_advisory_xact_lock(hashtext('bangfu.notify.queue_pause'))"

int notify_pause_restore(bf_db_t *db, bf_redis_t *rd, bool force)
{
    if (!db || !rd) return -1;
    bool own = !bf_db_in_tx(db);
    if (own && bf_db_begin(db) != 0) return -1;
    PGresult *res = bf_db_exec(db, S_PAUSE_LOCK, 0, NULL);
    if (!res) goto fail;
    PQclear(res);
    /* a set without the mark but with members comes from a version that
     * kept pauses only in Redis: those pauses are taken over */
    const char *chk[] = {"SMISMEMBER", NOTIFY_PAUSED_KEY, NOTIFY_PAUSED_MARK};
    redisReply *rep = bf_redis_cmd(rd, 3, chk, NULL);
    if (!rep) goto fail;
    bool marked = rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
                  rep->element[0]->type == REDIS_REPLY_INTEGER && rep->element[0]->integer == 1;
    freeReplyObject(rep);
    if (marked && !force) { /* another thread rebuilt it meanwhile */
        if (own && bf_db_commit(db) != 0) goto fail;
        return 0;
    }
    const char *mem[] = {"SMEMBERS", NOTIFY_PAUSED_KEY};
    rep = marked ? NULL : bf_redis_cmd(rd, 2, mem, NULL);
    if (!rep && !marked) goto fail;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < rep->elements; i++) {
            const redisReply *e = rep->element[i];
            if (!e || e->type != REDIS_REPLY_STRING || e->len > 32) continue;
            char q[40];
            memcpy(q, e->str, e->len);
            q[e->len] = 0;
            const char *p[] = {q};
            PGresult *ins = bf_db_exec(db,
                "INSERT INTO queue_pause (queue, paused_by) "
                "SELECT $1, 'redis (taken over)' WHERE $1 IN ('events','webhook','email','sms','inbox') "
                "ON CONFLICT (queue) DO NOTHING", 1, p);
            if (!ins) {
                freeReplyObject(rep);
                goto fail;
            }
            PQclear(ins);
        }
    }
    if (rep) freeReplyObject(rep);
    res = bf_db_exec(db, "SELECT queue FROM queue_pause ORDER BY queue", 0, NULL);
    if (!res) goto fail;
    int n = PQntuples(res);
    /* replaced in one step (a script: the notify user has no MULTI) */
    const char *argv[5 + 8];
    argv[0] = "EVAL";
    argv[1] = "redis.call('DEL', KEYS[1]) return redis.call('SADD', KEYS[1], unpack(ARGV))";
    argv[2] = "1";
    argv[3] = NOTIFY_PAUSED_KEY;
    argv[4] = NOTIFY_PAUSED_MARK;
    int argc = 5;
    for (int i = 0; i < n && argc < 13; i++) argv[argc++] = bf_db_str(res, i, "queue");
    rep = bf_redis_cmd(rd, argc, argv, NULL);
    bool ok = rep && rep->type == REDIS_REPLY_INTEGER;
    if (rep) freeReplyObject(rep);
    PQclear(res);
    if (!ok) goto fail;
    if (own && bf_db_commit(db) != 0) return -1;
    bf_log(BF_INFO, "notify: paused queues restored from PostgreSQL (%d paused)", n);
    return 0;
fail:
    if (own) bf_db_rollback(db);
    return -1;
}

int notify_pause_set(bf_db_t *db, bf_redis_t *rd, const char *queue, bool pause,
                     const char *actor, bool *changed)
{
    PGresult *res = bf_db_exec(db, S_PAUSE_LOCK, 0, NULL);
    if (!res) return -1;
    PQclear(res);
    const char *p[] = {queue, actor ? actor : ""};
    res = pause ? bf_db_exec(db, "INSERT INTO queue_pause (queue, paused_by) VALUES ($1, $2) "
                                 "ON CONFLICT (queue) DO NOTHING", 2, p)
                : bf_db_exec(db, "DELETE FROM queue_pause WHERE queue = $1", 1, p);
    if (!res) return -1;
    *changed = atoi(PQcmdTuples(res)) > 0;
    PQclear(res);
    /* the copy goes: the next look (any thread) rebuilds it, waiting for
     * this transaction's lock, so it sees this change once committed */
    const char *del[] = {"DEL", NOTIFY_PAUSED_KEY};
    redisReply *rep = bf_redis_cmd(rd, 2, del, NULL);
    bool ok = rep && rep->type == REDIS_REPLY_INTEGER;
    if (rep) freeReplyObject(rep);
    return ok ? 0 : -2;
}

bool notify_queue_paused(bf_redis_t *rd, bf_db_t *db, const char *queue)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        const char *argv[] = {"SMISMEMBER", NOTIFY_PAUSED_KEY, queue, NOTIFY_PAUSED_MARK};
        redisReply *rep = bf_redis_cmd(rd, 4, argv, NULL);
        if (!rep) return false; /* Redis down: nothing can be taken anyway */
        bool shaped = rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                      rep->element[0]->type == REDIS_REPLY_INTEGER &&
                      rep->element[1]->type == REDIS_REPLY_INTEGER;
        bool paused = shaped && rep->element[0]->integer == 1;
        bool marked = shaped && rep->element[1]->integer == 1;
        freeReplyObject(rep);
        if (marked) return paused;
        if (notify_pause_restore(db, rd, false) != 0) break;
    }
    /* the copy is lost and PostgreSQL cannot say: paused until it can */
    return true;
}

/* A token bucket per endpoint; time is the notify clock, passed in, so a
 * manual clock drives it in tests. */
static const char *s_bucket_lua =
    "local rate = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local now = tonumber(ARGV[3])\n"
    "local v = redis.call('HMGET', KEYS[1], 't', 'ts')\n"
    "local tokens = tonumber(v[1])\n"
    "local ts = tonumber(v[2])\n"
    "if tokens == nil or ts == nil then tokens = burst; ts = now end\n"
    "if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000); ts = now end\n"
    "local wait = 0\n"
    "if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) "
    "end\n"
    "redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))\n"
    "redis.call('PEXPIRE', KEYS[1], 86400000)\n"
    "return wait\n";

long notify_rate_take(bf_redis_t *rd, int64_t endpoint_id, int rate_per_sec, int burst,
                      int64_t now_ms)
{
    if (rate_per_sec <= 0) return 0;
    char key[64], rate[16], b[16], now[32];
    snprintf(key, sizeof key, "%s%lld", NOTIFY_RL_PREFIX, (long long)endpoint_id);
    snprintf(rate, sizeof rate, "%d", rate_per_sec);
    snprintf(b, sizeof b, "%d", burst < 1 ? 1 : burst);
    snprintf(now, sizeof now, "%lld", (long long)now_ms);
    const char *argv[] = {"EVAL", s_bucket_lua, "1", key, rate, b, now};
    redisReply *rep = bf_redis_cmd(rd, 7, argv, NULL);
    long wait = -1;
    if (rep && rep->type == REDIS_REPLY_INTEGER) wait = (long)rep->integer;
    else if (rep && rep->type == REDIS_REPLY_ERROR) bf_log(BF_WARN, "rate limit: %s", rep->str);
    if (rep) freeReplyObject(rep);
    return wait;
}

int64_t notify_stream_id_ms(const char *id)
{
    if (!id) return 0;
    int64_t v = 0;
    for (int i = 0; id[i] >= '0' && id[i] <= '9' && i < 19; i++) v = v * 10 + (id[i] - '0');
    return v;
}
