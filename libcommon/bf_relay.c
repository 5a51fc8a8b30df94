/* bf_relay: outbox -> Redis Stream + bus; see bf_relay.h. */
#include "bf_relay.h"
#include "bf_keys.h"
#include "bf_login.h"
#include "bf_db.h"
#include "bf_log.h"
#include "bf_redis.h"
#include "bf_rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* A relay's in-process wake-up (bf_relay.h). Slots are claimed by relays and
 * never freed, and their eventfds never closed, so a writer holding a waker
 * can always write to it. */
struct bf_relay_waker {
    char service[64]; /* under s_wakers_mu */
    int efd;          /* made when the slot is first claimed (made) */
    bool made;
    bool claimed;     /* by a running relay (under s_wakers_mu) */
    atomic_bool holder; /* that relay holds the service's lock */
};

#define WAKERS_MAX 16
static bf_relay_waker_t s_wakers[WAKERS_MAX];
static pthread_mutex_t s_wakers_mu = PTHREAD_MUTEX_INITIALIZER;

struct bf_relay {
    char service[64];
    char schema[64];
    const bf_cfg_t *cfg;
    pthread_t thread;
    atomic_int stop;
    atomic_llong count;
    atomic_llong wakes;
    unsigned long checked_connects; /* the Redis connection last checked */
    bf_relay_waker_t *waker; /* NULL if every slot is taken (NOTIFY only) */
};

/* A free slot for service, its eventfd drained; NULL if none is left. */
static bf_relay_waker_t *s_waker_claim(const char *service)
{
    bf_relay_waker_t *w = NULL;
    pthread_mutex_lock(&s_wakers_mu);
    for (int i = 0; i < WAKERS_MAX && !w; i++) {
        bf_relay_waker_t *c = &s_wakers[i];
        if (c->claimed) continue;
        if (!c->made) {
            if ((c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) continue;
            c->made = true;
        }
        uint64_t v;
        while (read(c->efd, &v, sizeof v) == (ssize_t)sizeof v)
            ;
        snprintf(c->service, sizeof c->service, "%s", service);
        atomic_store(&c->holder, false);
        c->claimed = true;
        w = c;
    }
    pthread_mutex_unlock(&s_wakers_mu);
    return w;
}

static void s_waker_release(bf_relay_waker_t *w)
{
    if (!w) return;
    pthread_mutex_lock(&s_wakers_mu);
    atomic_store(&w->holder, false);
    w->claimed = false;
    pthread_mutex_unlock(&s_wakers_mu);
}

static void s_waker_hold(bf_relay_waker_t *w, bool holds)
{
    if (w) atomic_store(&w->holder, holds);
}

bf_relay_waker_t *bf_relay_local(const char *service)
{
    bf_relay_waker_t *w = NULL;
    if (!service) return NULL;
    pthread_mutex_lock(&s_wakers_mu);
    for (int i = 0; i < WAKERS_MAX && !w; i++)
        if (s_wakers[i].claimed && atomic_load(&s_wakers[i].holder) &&
            !strcmp(s_wakers[i].service, service))
            w = &s_wakers[i];
    pthread_mutex_unlock(&s_wakers_mu);
    return w;
}

void bf_relay_wake(void *waker)
{
    bf_relay_waker_t *w = waker;
    uint64_t one = 1;
    if (w && write(w->efd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is full, the relay is woken anyway */
    }
}

long long bf_relay_wakes(const bf_relay_t *r) { return atomic_load(&r->wakes); }

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t s_be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | (unsigned char)p[i];
    return v;
}

/* A stream entry id "ms-seq" as two numbers; false if malformed. */
static bool s_sid(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end;
    errno = 0;
    *ms = strtoull(s, &end, 10);
    if (errno || end == s || *end != '-') return false;
    const char *q = end + 1;
    *seq = strtoull(q, &end, 10);
    return !errno && end != q && *end == '\0';
}

static int s_sid_cmp(const char *a, const char *b)
{
    uint64_t am = 0, as = 0, bm = 0, bs = 0;
    s_sid(a, &am, &as);
    s_sid(b, &bm, &bs);
    if (am != bm) return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

/* Redis may lose the end of the stream: restarted without its AOF, or with
 * the last second of it lost (appendfsync everysec). After every new Redis
 * connection, before relaying more, this checks that the newest events this
 * relay marked relayed are still in the stream, walking back from the newest
 * until one is found (Redis persists in order: if a later entry survived, the
 * earlier ones did). Entries at or below the stream's max-deleted-entry-id
 * were trimmed on purpose and end the walk too. Every missing event is marked
 * unrelayed again, so the next rounds send it again with its own event id
 * (consumers de-duplicate by id). Returns how many, or -1 (try again later). */
static int s_recheck_stream(bf_relay_t *rl, bf_db_t *db, bf_redis_t *redis)
{
    const char *stream = bf_cfg_str(rl->cfg, "relay.stream");
    char max_deleted[48] = "0-0";
    bool exists = true;
    const char *xi[] = {"XINFO", "STREAM", stream};
    redisReply *rep = bf_redis_cmd(redis, 3, xi, NULL);
    if (!rep) return -1;
    if (rep->type == REDIS_REPLY_ERROR) {
        exists = false; /* "no such key": the whole stream is gone */
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < rep->elements; i += 2) {
            redisReply *k = rep->element[i], *v = rep->element[i + 1];
            if (k->type == REDIS_REPLY_STRING && !strcmp(k->str, "max-deleted-entry-id") &&
                v->type == REDIS_REPLY_STRING && v->len < sizeof max_deleted)
                snprintf(max_deleted, sizeof max_deleted, "%s", v->str);
        }
    }
    freeReplyObject(rep);

    PGconn *conn = bf_db_conn(db);
    int requeued = 0;
    char before[24] = "9223372036854775807";
    for (;;) {
        /* only what this relay sent to this stream (another stream, in an
         * earlier configuration or a test, is not this one's to check) */
        char window[24];
        snprintf(window, sizeof window, "%lld", bf_cfg_int(rl->cfg, "relay.resend_window_s"));
        const char *p[] = {before, stream, window};
        PGresult *res = PQexecParams(conn,
                                     "SELECT seq::text AS seq, stream_id FROM outbox "
                                     "WHERE relayed_at IS NOT NULL AND stream = $2 "
                                     "AND relayed_at > now() - make_interval(secs => $3::bigint) "
                                     "AND seq < $1::bigint ORDER BY seq DESC LIMIT 200",
                                     3, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            bf_log(BF_WARN, "relay: reading relayed events failed: %s", PQerrorMessage(conn));
            PQclear(res);
            return -1;
        }
        int n = PQntuples(res);
        if (n == 0) {
            PQclear(res);
            break;
        }
        if (exists) {
            for (int i = 0; i < n; i++) {
                const char *sid = PQgetvalue(res, i, 1);
                const char *argv[] = {"XRANGE", stream, sid, sid, "COUNT", "1"};
                if (bf_redis_append(redis, 6, argv, NULL) != 0) {
                    PQclear(res);
                    return -1;
                }
            }
        }
        /* the missing ones, newest first, until one is present (or trimmed) */
        size_t cap = (size_t)(unsigned)n * 21u + 3u, len = 0;
        char *lost = malloc(cap);
        int nlost = 0, found = 0, broken = 0;
        if (lost) lost[len++] = '{';
        for (int i = 0; i < n; i++) {
            bool present = false;
            if (exists) {
                redisReply *x = bf_redis_read(redis);
                if (!x) {
                    broken = 1;
                    break;
                }
                present = x->type == REDIS_REPLY_ARRAY && x->elements > 0;
                freeReplyObject(x);
            }
            if (found) continue; /* drain the remaining replies */
            if (present || s_sid_cmp(PQgetvalue(res, i, 1), max_deleted) <= 0) {
                found = 1;
                continue;
            }
            if (lost)
                len += (size_t)snprintf(lost + len, cap - len, "%s%s", nlost ? "," : "",
                                        PQgetvalue(res, i, 0));
            nlost++;
        }
        snprintf(before, sizeof before, "%s", PQgetvalue(res, n - 1, 0));
        PQclear(res);
        if (broken || !lost) {
            free(lost);
            return -1;
        }
        lost[len++] = '}';
        lost[len] = '\0';
        if (nlost) {
            const char *up[] = {lost};
            res = PQexecParams(conn,
                               "UPDATE outbox SET relayed_at = NULL, stream = NULL, stream_id = NULL "
                               "WHERE seq = ANY($1::bigint[])",
                               1, NULL, up, NULL, NULL, 0);
            int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            if (!ok) {
                free(lost);
                return -1;
            }
            requeued += nlost;
        }
        free(lost);
        if (found) break;
    }
    if (requeued)
        bf_log(BF_WARN,
               "relay: redis no longer has %d %s event(s) it had accepted (restarted without "
               "its AOF?); sending them again from the outbox",
               requeued, rl->service);
    return requeued;
}

/* One round. Returns events moved (>= 0) or -1 on error. */
static int s_round(bf_relay_t *rl, bf_db_t *db, bf_redis_t *redis, void *pub)
{
    /* a new Redis connection: the server may have restarted and lost
     * entries; check before adding more */
    if (bf_redis_ensure(redis) != 0) {
        bf_log(BF_WARN, "relay: redis: %s", bf_redis_errmsg(redis));
        return -1;
    }
    if (bf_redis_connects(redis) != rl->checked_connects) {
        if (s_recheck_stream(rl, db, redis) < 0) {
            bf_redis_drop(redis);
            return -1;
        }
        rl->checked_connects = bf_redis_connects(redis);
    }
    char limit[24];
    snprintf(limit, sizeof limit, "%lld", bf_cfg_int(rl->cfg, "relay.batch"));
    const char *p[] = {limit};
    PGconn *conn = bf_db_conn(db);
    PGresult *res = PQexecParams(conn,
                                 "SELECT seq, event_id::text AS event_id, type, payload "
                                 "FROM outbox WHERE relayed_at IS NULL ORDER BY seq LIMIT $1",
                                 1, NULL, p, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        bf_log(BF_WARN, "relay: reading the outbox failed: %s", PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    int n = PQntuples(res);
    if (n <= 0) {
        PQclear(res);
        return 0;
    }
    const char *stream = bf_cfg_str(rl->cfg, "relay.stream");
    int c_seq = PQfnumber(res, "seq"), c_id = PQfnumber(res, "event_id"),
        c_type = PQfnumber(res, "type"), c_payload = PQfnumber(res, "payload");
    for (int i = 0; i < n; i++) {
        /* no MAXLEN: a length cap would drop entries a consumer group has
         * not read; s_trim trims by consumer lag instead */
        const char *argv[] = {"XADD", stream, "*",
                              "id", PQgetvalue(res, i, c_id),
                              "type", PQgetvalue(res, i, c_type),
                              "event", PQgetvalue(res, i, c_payload)};
        size_t lens[9];
        for (int k = 0; k < 9; k++) lens[k] = strlen(argv[k]);
        lens[4] = (size_t)PQgetlength(res, i, c_id);
        lens[6] = (size_t)PQgetlength(res, i, c_type);
        lens[8] = (size_t)PQgetlength(res, i, c_payload);
        if (bf_redis_append(redis, 9, argv, lens) != 0) {
            bf_log(BF_WARN, "relay: redis: %s", bf_redis_errmsg(redis));
            PQclear(res);
            return -1;
        }
    }
    /* the stream ids, as a text[] literal (ids are digits and '-') */
    size_t scap = (size_t)(unsigned)n * 44u + 3u, slen = 0;
    char *sids = malloc(scap);
    int failed = sids == NULL;
    if (sids) sids[slen++] = '{';
    for (int i = 0; i < n; i++) {
        redisReply *rep = bf_redis_read(redis);
        if (!rep || rep->type != REDIS_REPLY_STRING) {
            if (!failed)
                bf_log(BF_WARN, "relay: XADD failed: %s",
                       rep && rep->type == REDIS_REPLY_ERROR ? rep->str : bf_redis_errmsg(redis));
            failed = 1;
        } else if (sids && rep->len < 42) {
            slen += (size_t)snprintf(sids + slen, scap - slen, "%s%.*s", i ? "," : "",
                                     (int)rep->len, rep->str);
        }
        if (rep) freeReplyObject(rep);
        if (!rep) break; /* connection gone: the rest won't come */
    }
    if (failed) {
        free(sids);
        bf_redis_drop(redis);
        PQclear(res);
        return -1;
    }
    sids[slen++] = '}';
    sids[slen] = '\0';
    /* the stream has them; now the live feed, then the mark */
    size_t cap = (size_t)(unsigned)n * 21u + 3u;
    char *ids = malloc(cap);
    if (!ids) {
        free(sids);
        PQclear(res);
        return -1;
    }
    size_t len = 0;
    ids[len++] = '{';
    for (int i = 0; i < n; i++) {
        zmq_send(pub, PQgetvalue(res, i, c_type), (size_t)PQgetlength(res, i, c_type),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(pub, PQgetvalue(res, i, c_payload), (size_t)PQgetlength(res, i, c_payload),
                 ZMQ_DONTWAIT);
        len += (size_t)snprintf(ids + len, cap - len, "%s%llu", i ? "," : "",
                                (unsigned long long)s_be64(PQgetvalue(res, i, c_seq)));
    }
    ids[len++] = '}';
    ids[len] = '\0';
    PQclear(res);
    const char *up[] = {ids, sids, stream};
    res = PQexecParams(conn,
                       "UPDATE outbox o SET relayed_at = now(), stream = $3, stream_id = u.sid "
                       "FROM unnest($1::bigint[], $2::text[]) AS u(seq, sid) WHERE o.seq = u.seq",
                       3, NULL, up, NULL, NULL, 0);
    free(ids);
    free(sids);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) bf_log(BF_WARN, "relay: marking relayed failed: %s", PQerrorMessage(conn));
    PQclear(res);
    if (!ok) return -1;
    atomic_fetch_add(&rl->count, n);
    return n;
}

static void s_prune(bf_relay_t *rl, bf_db_t *db)
{
    long long days = bf_cfg_int(rl->cfg, "relay.retain_days");
    if (days <= 0) return;
    char d[24];
    snprintf(d, sizeof d, "%lld", days);
    const char *p[] = {d};
    PGresult *res = bf_db_exec(db,
                               "DELETE FROM outbox WHERE relayed_at IS NOT NULL AND "
                               "relayed_at < now() - make_interval(days => $1::int)",
                               1, p);
    if (res) PQclear(res);
}

/* Trims the stream by consumer lag, never past an entry a consumer group
 * has not read and acknowledged: the threshold is, over every group, its
 * oldest pending entry, or its last-delivered id when nothing is pending; and
 * never newer than relay.stream_keep_s seconds ago, so readers without a
 * group (bangfu events tail, catch-up by id) find recent history. The trim is
 * exact (a round every relay.trim_interval_s costs what it removes). Returns
 * entries trimmed, or -1. */
static long long s_trim(bf_relay_t *rl, bf_redis_t *redis)
{
    const char *stream = bf_cfg_str(rl->cfg, "relay.stream");
    long long keep_s = bf_cfg_int(rl->cfg, "relay.stream_keep_s");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t keep_ms = (uint64_t)now.tv_sec * 1000u - (uint64_t)keep_s * 1000u;
    uint64_t min_ms = keep_ms, min_seq = 0;
    const char *gi[] = {"XINFO", "GROUPS", stream};
    redisReply *rep = bf_redis_cmd(redis, 3, gi, NULL);
    if (!rep) return -1;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return 0; /* no stream yet */
    }
    for (size_t g = 0; g < rep->elements; g++) {
        redisReply *grp = rep->element[g];
        if (grp->type != REDIS_REPLY_ARRAY) continue;
        const char *name = NULL, *last = NULL;
        long long pending = 0;
        for (size_t i = 0; i + 1 < grp->elements; i += 2) {
            redisReply *k = grp->element[i], *v = grp->element[i + 1];
            if (k->type != REDIS_REPLY_STRING) continue;
            if (!strcmp(k->str, "name") && v->type == REDIS_REPLY_STRING) name = v->str;
            if (!strcmp(k->str, "last-delivered-id") && v->type == REDIS_REPLY_STRING)
                last = v->str;
            if (!strcmp(k->str, "pending") && v->type == REDIS_REPLY_INTEGER)
                pending = v->integer;
        }
        if (!name || !last) continue;
        char oldest[48];
        snprintf(oldest, sizeof oldest, "%s", last);
        if (pending > 0) {
            const char *pa[] = {"XPENDING", stream, name};
            redisReply *pr = bf_redis_cmd(redis, 3, pa, NULL);
            if (!pr) {
                freeReplyObject(rep);
                return -1;
            }
            if (pr->type == REDIS_REPLY_ARRAY && pr->elements >= 2 &&
                pr->element[1]->type == REDIS_REPLY_STRING)
                snprintf(oldest, sizeof oldest, "%s", pr->element[1]->str);
            freeReplyObject(pr);
        }
        uint64_t ms, seq;
        if (!s_sid(oldest, &ms, &seq)) continue;
        if (ms < min_ms || (ms == min_ms && seq < min_seq)) {
            min_ms = ms;
            min_seq = seq;
        }
    }
    freeReplyObject(rep);
    char minid[48];
    snprintf(minid, sizeof minid, "%llu-%llu", (unsigned long long)min_ms,
             (unsigned long long)min_seq);
    const char *ta[] = {"XTRIM", stream, "MINID", minid};
    rep = bf_redis_cmd(redis, 4, ta, NULL);
    if (!rep) return -1;
    long long n = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    freeReplyObject(rep);
    return n;
}

/* Waits for a writer of this process (the waker's eventfd), a NOTIFY, or
 * timeout_ms. Returns 1 if woken, 0 on timeout, -1 if the connection broke.
 * A NOTIFY that arrived while the last round's statements ran is already in
 * libpq's queue, not on the socket: it is taken first, or poll() would sleep
 * the whole timeout on an event that is waiting (the commit -> bus p99 was
 * the 1 s fallback poll before this check). */
static int s_wait(bf_relay_t *rl, bf_db_t *db, int timeout_ms)
{
    PGconn *conn = bf_db_conn(db);
    struct pollfd pfd[2] = {{PQsocket(conn), POLLIN, 0},
                            {rl->waker ? rl->waker->efd : -1, POLLIN, 0}};
    if (pfd[0].fd < 0) return -1;
    if (!PQconsumeInput(conn)) return -1;
    PGnotify *queued = PQnotifies(conn);
    if (queued) {
        do PQfreemem(queued);
        while ((queued = PQnotifies(conn)) != NULL);
        return 1;
    }
    int rc = poll(pfd, 2, timeout_ms);
    if (rc < 0 && errno != EINTR) return -1;
    if (pfd[1].fd >= 0 && (pfd[1].revents & POLLIN)) {
        uint64_t v;
        if (read(pfd[1].fd, &v, sizeof v) == (ssize_t)sizeof v) atomic_fetch_add(&rl->wakes, 1);
    }
    if (!PQconsumeInput(conn)) return -1;
    PGnotify *nt;
    while ((nt = PQnotifies(conn)) != NULL) PQfreemem(nt);
    return rc > 0;
}

static void *s_main(void *arg)
{
    bf_relay_t *rl = arg;
    char err[256];
    bf_db_t *db = bf_login_db(rl->cfg, rl->service, rl->schema);
    bf_redis_t *redis = bf_login_redis(rl->cfg, rl->service, err, sizeof err);
    void *pub = zmq_socket(bf_zmq_ctx(), ZMQ_PUB);
    if (!db || !redis || !pub) {
        bf_log(BF_ERROR, "relay: cannot start: %s", redis ? "out of memory" : err);
        goto done;
    }
    int linger = 500, hwm = 100000;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    char kerr[512];
    if (bf_curve_client(pub, "bus", kerr, sizeof kerr) != 0)
        bf_log(BF_ERROR, "relay: no key to publish on the bus: %s", kerr);
    else if (zmq_connect(pub, bf_cfg_str(rl->cfg, "bus.xsub")) != 0)
        bf_log(BF_ERROR, "relay: bad bus.xsub address %s", bf_cfg_str(rl->cfg, "bus.xsub"));

    char lockname[128], listen_sql[160];
    snprintf(lockname, sizeof lockname, "bangfu.relay.%s", rl->service);
    snprintf(listen_sql, sizeof listen_sql, "LISTEN bangfu_outbox_%s", rl->service);
    bool holder = false;
    long backoff = 200;
    time_t last_prune = 0, last_trim = 0;
    int flush_rounds = 0;
    while (1) {
        int stopping = atomic_load(&rl->stop);
        if (stopping && (!holder || flush_rounds > 50)) break;
        if (bf_db_is_down(db)) {
            holder = false;
            s_waker_hold(rl->waker, false);
            if (bf_db_connect(db, 1) != 0) {
                if (stopping) break;
                s_sleep_ms(backoff);
                backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
                continue;
            }
        }
        if (!holder) {
            if (stopping) break;
            const char *p[] = {lockname};
            PGresult *res = bf_db_exec(db, "SELECT pg_try_advisory_lock(hashtext($1)) AS ok", 1, p);
            if (res && bf_db_bool(res, 0, "ok")) {
                holder = true;
                if (bf_db_cmd(db, listen_sql) != 0) holder = false;
                else bf_log(BF_INFO, "relay: this instance relays %s events", rl->service);
                /* from now on writers of this process wake it, not NOTIFY:
                 * the round that follows sees what they committed before */
                s_waker_hold(rl->waker, holder);
            }
            if (res) PQclear(res);
            if (!holder) {
                s_sleep_ms(1000);
                continue;
            }
        }
        int n = s_round(rl, db, redis, pub);
        if (n < 0) {
            if (stopping) flush_rounds += 10;
            s_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        backoff = 200;
        if (stopping) {
            flush_rounds++;
            if (n == 0) break;
            continue;
        }
        if (n >= bf_cfg_int(rl->cfg, "relay.batch")) continue;
        if (time(NULL) - last_prune > 600) {
            s_prune(rl, db);
            last_prune = time(NULL);
        }
        if (time(NULL) - last_trim >= bf_cfg_int(rl->cfg, "relay.trim_interval_s")) {
            long long t = s_trim(rl, redis);
            if (t > 0) bf_log(BF_DEBUG, "relay: trimmed %lld read stream entries", t);
            last_trim = time(NULL);
        }
        int woken = s_wait(rl, db, 1000);
        if (woken < 0) {
            holder = false;
            s_waker_hold(rl->waker, false);
        } else if (woken == 0 && !bf_redis_ping(redis)) {
            /* idle: notice a Redis restart (the next round then checks the
             * stream) even when no new event comes */
            bf_redis_drop(redis);
        }
    }
done:
    s_waker_hold(rl->waker, false);
    if (pub) zmq_close(pub);
    bf_db_destroy(&db);
    bf_redis_destroy(&redis);
    return NULL;
}

bf_relay_t *bf_relay_start(const char *service, const char *schema, const bf_cfg_t *cfg)
{
    bf_relay_t *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    snprintf(rl->service, sizeof rl->service, "%s", service);
    snprintf(rl->schema, sizeof rl->schema, "%s", schema);
    rl->cfg = cfg;
    rl->waker = s_waker_claim(service);
    if (pthread_create(&rl->thread, NULL, s_main, rl) != 0) {
        s_waker_release(rl->waker);
        free(rl);
        return NULL;
    }
    return rl;
}

void bf_relay_stop(bf_relay_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_relay_t *rl = *self_p;
    atomic_store(&rl->stop, 1);
    if (rl->waker) bf_relay_wake(rl->waker); /* out of its wait at once */
    pthread_join(rl->thread, NULL);
    s_waker_release(rl->waker);
    free(rl);
    *self_p = NULL;
}

long long bf_relay_count(const bf_relay_t *r) { return atomic_load(&r->count); }
