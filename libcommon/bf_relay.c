/* bf_relay: outbox -> Redis Stream + bus; see bf_relay.h. */
#include "bf_relay.h"
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
#include <time.h>
#include <zmq.h>

struct bf_relay {
    char service[64];
    char schema[64];
    const bf_cfg_t *cfg;
    pthread_t thread;
    atomic_int stop;
    atomic_llong count;
};

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

/* One round. Returns events moved (>= 0) or -1 on error. */
static int s_round(bf_relay_t *rl, bf_db_t *db, bf_redis_t *redis, void *pub)
{
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
    char maxlen[24];
    snprintf(maxlen, sizeof maxlen, "%lld", bf_cfg_int(rl->cfg, "relay.stream_maxlen"));
    int c_seq = PQfnumber(res, "seq"), c_id = PQfnumber(res, "event_id"),
        c_type = PQfnumber(res, "type"), c_payload = PQfnumber(res, "payload");
    for (int i = 0; i < n; i++) {
        const char *argv[] = {"XADD", stream, "MAXLEN", "~", maxlen, "*",
                              "id", PQgetvalue(res, i, c_id),
                              "type", PQgetvalue(res, i, c_type),
                              "event", PQgetvalue(res, i, c_payload)};
        size_t lens[12];
        for (int k = 0; k < 12; k++) lens[k] = strlen(argv[k]);
        lens[7] = (size_t)PQgetlength(res, i, c_id);
        lens[9] = (size_t)PQgetlength(res, i, c_type);
        lens[11] = (size_t)PQgetlength(res, i, c_payload);
        if (bf_redis_append(redis, 12, argv, lens) != 0) {
            bf_log(BF_WARN, "relay: redis: %s", bf_redis_errmsg(redis));
            PQclear(res);
            return -1;
        }
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        redisReply *rep = bf_redis_read(redis);
        if (!rep || rep->type != REDIS_REPLY_STRING) {
            if (!failed)
                bf_log(BF_WARN, "relay: XADD failed: %s",
                       rep && rep->type == REDIS_REPLY_ERROR ? rep->str : bf_redis_errmsg(redis));
            failed = 1;
        }
        if (rep) freeReplyObject(rep);
        if (!rep) break; /* connection gone: the rest won't come */
    }
    if (failed) {
        bf_redis_drop(redis);
        PQclear(res);
        return -1;
    }
    /* the stream has them; now the live feed, then the mark */
    size_t cap = (size_t)(unsigned)n * 21u + 3u;
    char *ids = malloc(cap);
    if (!ids) {
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
    const char *up[] = {ids};
    res = PQexecParams(conn, "UPDATE outbox SET relayed_at = now() WHERE seq = ANY($1::bigint[])",
                       1, NULL, up, NULL, NULL, 0);
    free(ids);
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

/* Waits for a NOTIFY or timeout_ms. Returns -1 if the connection broke. */
static int s_wait(bf_db_t *db, int timeout_ms)
{
    PGconn *conn = bf_db_conn(db);
    struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
    if (pfd.fd < 0) return -1;
    int rc = poll(&pfd, 1, timeout_ms);
    if (rc < 0 && errno != EINTR) return -1;
    if (!PQconsumeInput(conn)) return -1;
    PGnotify *nt;
    while ((nt = PQnotifies(conn)) != NULL) PQfreemem(nt);
    return 0;
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
    if (zmq_connect(pub, bf_cfg_str(rl->cfg, "bus.xsub")) != 0)
        bf_log(BF_ERROR, "relay: bad bus.xsub address %s", bf_cfg_str(rl->cfg, "bus.xsub"));

    char lockname[128], listen_sql[160];
    snprintf(lockname, sizeof lockname, "bangfu.relay.%s", rl->service);
    snprintf(listen_sql, sizeof listen_sql, "LISTEN bangfu_outbox_%s", rl->service);
    bool holder = false;
    long backoff = 200;
    time_t last_prune = 0;
    int flush_rounds = 0;
    while (1) {
        int stopping = atomic_load(&rl->stop);
        if (stopping && (!holder || flush_rounds > 50)) break;
        if (bf_db_is_down(db)) {
            holder = false;
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
        if (s_wait(db, 1000) != 0) holder = false;
    }
done:
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
    if (pthread_create(&rl->thread, NULL, s_main, rl) != 0) {
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
    pthread_join(rl->thread, NULL);
    free(rl);
    *self_p = NULL;
}

long long bf_relay_count(const bf_relay_t *r) { return atomic_load(&r->count); }
