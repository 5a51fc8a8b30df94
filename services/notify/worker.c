/* worker.c: delivery workers, the retry scheduler and the re-drive.
 *
 * A worker reads the channel streams through the consumer group (consumer
 * <instance>:w<i>, the instance being host:pid:random, see notify.h), and
 * for each message claims its delivery in PostgreSQL (state pending, or
 * retry that is due, or sending whose lease ran out -> sending, attempts + 1,
 * lease = the visibility timeout, worker = the consumer name). A delivery
 * that cannot be claimed is finished or held by someone else, so the message
 * is a duplicate and is dropped. After the attempt the state is written
 * first (sent / retry at a due time / dead) and only then is the message
 * acknowledged and deleted, so a crash repeats an attempt but never loses
 * one. Messages a dead worker held are reclaimed with XAUTOCLAIM after the
 * visibility timeout.
 *
 * The scheduler thread moves due retries from the sorted set back to their
 * streams, re-drives from PostgreSQL what Redis does not hold (at start and
 * every notify.redrive_interval_s) and forgets consumers of other instances
 * that died long ago (its own go when it stops, main.c).
 */
#include "notify.h"
#include "bf_login.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    notify_t *n;
    int index;
    bf_db_t *db;
    bf_redis_t *rd;
    CURL *curl;
    char consumer[200];
} s_worker_t;

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t s_backoff(notify_t *n, int attempts)
{
    int64_t d = n->backoff_base_ms;
    for (int i = 1; i < attempts && d < n->backoff_cap_ms; i++) d *= 2;
    if (d > n->backoff_cap_ms) d = n->backoff_cap_ms;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (uint32_t)rand();
    int64_t half = d / 2;
    return half + (half > 0 ? (int64_t)(rnd % (uint64_t)(d - half + 1)) : d);
}

static int s_ack(s_worker_t *w, const char *channel, const char *msg_id)
{
    return notify_queue_done(w->n, w->rd, channel, msg_id);
}

/* Records an endpoint failure; disables it (with its event) when it has been
 * failing for longer than notify.disable_after_ms. A failure without an
 * answer (timeout, no connection, refused) counts for the circuit breaker:
 * notify.breaker_failures of them in a row pause the endpoint's deliveries
 * for notify.breaker_cooldown_ms, doubled on each further trip (up to
 * notify.breaker_cooldown_cap_ms); after the pause deliveries try again
 * (half open, within the concurrency cap) and a further failure trips it
 * again; failures of sends already in flight when it tripped do not extend
 * the pause. An answer of any kind resets the count. */
static void s_endpoint_failed(s_worker_t *w, int64_t ep, const char *error, bool no_answer)
{
    notify_t *n = w->n;
    int64_t now = notify_now_ms(n);
    char id[24], since[24];
    snprintf(id, sizeof id, "%lld", (long long)ep);
    if (bf_db_begin(w->db) != 0) return;
    const char *p[] = {id};
    PGresult *res = bf_db_prep(w->db, "notify_ep_lock",
                               "SELECT name, status, failing_since_ms FROM endpoint "
                               "WHERE id = $1 FOR UPDATE",
                               1, p, NULL, NULL);
    if (!res || PQntuples(res) != 1) {
        if (res) PQclear(res);
        bf_db_rollback(w->db);
        return;
    }
    int64_t fs = bf_db_null(res, 0, "failing_since_ms") ? now : bf_db_int(res, 0, "failing_since_ms");
    bool disable = !strcmp(bf_db_str(res, 0, "status"), "active") && now - fs >= n->disable_after_ms;
    char name[256];
    snprintf(name, sizeof name, "%s", bf_db_str(res, 0, "name"));
    PQclear(res);
    snprintf(since, sizeof since, "%lld", (long long)fs);
    const char *up[] = {id, since, disable ? "1" : "0", error};
    res = bf_db_prep(w->db, "notify_ep_failed",
                     "UPDATE endpoint SET failing_since_ms = $2::bigint, updated_at = now(), "
                     "status = CASE WHEN $3 = '1' THEN 'disabled' ELSE status END, "
                     "disabled_at = CASE WHEN $3 = '1' THEN now() ELSE disabled_at END, "
                     "disabled_reason = CASE WHEN $3 = '1' THEN $4 ELSE disabled_reason END "
                     "WHERE id = $1",
                     4, up, NULL, NULL);
    if (!res) {
        bf_db_rollback(w->db);
        return;
    }
    PQclear(res);
    {
        char thr[16], cool[24], cap[24], nows[24];
        snprintf(thr, sizeof thr, "%d", n->breaker_failures);
        snprintf(cool, sizeof cool, "%lld", n->breaker_cooldown_ms);
        snprintf(cap, sizeof cap, "%lld", n->breaker_cooldown_cap_ms);
        snprintf(nows, sizeof nows, "%lld", (long long)now);
        const char *bp[] = {id, no_answer ? "1" : "0", thr, cool, cap, nows};
        res = bf_db_prep(
            w->db, "notify_ep_breaker",
            "UPDATE endpoint SET "
            "consecutive_failures = CASE WHEN $2 = '1' THEN consecutive_failures + 1 ELSE 0 END, "
            "breaker_trips = CASE WHEN $2 = '1' AND consecutive_failures + 1 >= $3::int "
            "  AND (paused_until_ms IS NULL OR paused_until_ms <= $6::bigint) "
            "  THEN breaker_trips + 1 ELSE breaker_trips END, "
            "paused_until_ms = CASE WHEN $2 = '1' AND consecutive_failures + 1 >= $3::int "
            "  AND (paused_until_ms IS NULL OR paused_until_ms <= $6::bigint) "
            "  THEN $6::bigint + LEAST($5::bigint, $4::bigint * power(2, LEAST(breaker_trips, 30))::bigint) "
            "  ELSE paused_until_ms END "
            "WHERE id = $1 RETURNING paused_until_ms, consecutive_failures",
            6, bp, NULL, NULL);
        if (!res) {
            bf_db_rollback(w->db);
            return;
        }
        if (PQntuples(res) == 1 && no_answer &&
            bf_db_int(res, 0, "consecutive_failures") >= n->breaker_failures)
            bf_log(BF_WARN, "endpoint %lld: %lld failures in a row without an answer; its "
                            "deliveries pause until %lld (notify clock)",
                   (long long)ep, (long long)bf_db_int(res, 0, "consecutive_failures"),
                   (long long)bf_db_int(res, 0, "paused_until_ms"));
        PQclear(res);
    }
    if (disable) {
        bf_event_t ev;
        msgpack_packer *pk = bf_event_begin(&ev);
        msgpack_pack_map(pk, 5);
        bf_mp_kv_int(pk, "endpoint_id", ep);
        bf_mp_kv_str(pk, "name", name);
        bf_mp_kv_str(pk, "reason", error);
        bf_mp_kv_int(pk, "failing_since_ms", fs);
        bf_mp_kv_int(pk, "window_ms", n->disable_after_ms);
        char subject[48];
        snprintf(subject, sizeof subject, "endpoint/%lld", (long long)ep);
        if (bf_event_commit(&ev, w->db, NOTIFY_SERVICE, "bangfu.notify.endpoint.disabled",
                            subject, "system:notify") != 0) {
            bf_db_rollback(w->db);
            return;
        }
        bf_log(BF_WARN, "endpoint %lld disabled: failing for longer than %lld ms", (long long)ep,
               n->disable_after_ms);
    }
    if (bf_db_commit(w->db) != 0) bf_db_rollback(w->db);
}

static void s_endpoint_ok(s_worker_t *w, int64_t ep)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)ep);
    const char *p[] = {id};
    PGresult *res = bf_db_prep(w->db, "notify_ep_ok",
                               "UPDATE endpoint SET failing_since_ms = NULL, "
                               "consecutive_failures = 0, breaker_trips = 0, "
                               "paused_until_ms = NULL "
                               "WHERE id = $1 AND (failing_since_ms IS NOT NULL OR "
                               "consecutive_failures <> 0 OR paused_until_ms IS NOT NULL)",
                               1, p, NULL, NULL);
    if (res) PQclear(res);
}

/* Sets the state after an attempt. Returns 0 or -1. */
static int s_set_state(s_worker_t *w, const char *id, const char *state, int64_t due_ms,
                       const char *error, int status, bool undo_attempt)
{
    char due[24], st[16];
    snprintf(due, sizeof due, "%lld", (long long)due_ms);
    snprintf(st, sizeof st, "%d", status);
    const char *p[] = {id, state, due_ms ? due : NULL, error, status ? st : NULL,
                       undo_attempt ? "1" : "0"};
    PGresult *res = bf_db_prep(
        w->db, "notify_set_state",
        "UPDATE delivery SET state = $2, due_ms = $3::bigint, "
        "last_error = CASE WHEN $2 = 'sent' THEN NULL ELSE COALESCE($4, last_error) END, "
        "last_status = COALESCE($5::int, last_status), lease_until = NULL, "
        "attempts = attempts - $6::int, updated_at = now(), "
        "sent_at = CASE WHEN $2 = 'sent' THEN now() ELSE sent_at END, "
        "dead_at = CASE WHEN $2 = 'dead' THEN now() ELSE dead_at END "
        "WHERE id = $1 AND state = 'sending'",
        6, p, NULL, NULL);
    if (!res) return -1;
    PQclear(res);
    return 0;
}

#define DEAD_LETTERED "bangfu.notify.delivery.dead_lettered"

/* The last attempt failed: state dead and the event
 * bangfu.notify.delivery.dead_lettered through the outbox, in one
 * transaction (none for a delivery of that event itself, so a dead-lettered
 * notice to a dead endpoint does not beget another). */
static int s_dead(s_worker_t *w, const PGresult *res, const char *did, const char *channel,
                  const char *type, int attempts, const notify_result_t *out)
{
    bool emit = strcmp(type, DEAD_LETTERED) != 0;
    if (emit && bf_db_begin(w->db) != 0) return -1;
    if (s_set_state(w, did, "dead", 0, out->error, out->status, false) != 0) {
        if (emit) bf_db_rollback(w->db);
        return -1;
    }
    if (!emit) return 0;
    bf_event_t ev;
    msgpack_packer *pk = bf_event_begin(&ev);
    msgpack_pack_map(pk, 9);
    bf_mp_kv_str(pk, "delivery_id", did);
    bf_mp_kv_str(pk, "event_id", bf_db_str(res, 0, "event_id"));
    bf_mp_kv_str(pk, "event_type", type);
    bf_mp_kv_str(pk, "channel", channel);
    bf_mp_kv_int(pk, "subscription_id", bf_db_int(res, 0, "subscription_id"));
    if (bf_db_null(res, 0, "endpoint_id")) bf_mp_kv_nil(pk, "endpoint_id");
    else bf_mp_kv_int(pk, "endpoint_id", bf_db_int(res, 0, "endpoint_id"));
    bf_mp_kv_str(pk, "recipient", bf_db_str(res, 0, "recipient"));
    bf_mp_kv_int(pk, "attempts", attempts);
    bf_mp_kv_str(pk, "error", out->error);
    char subject[64];
    snprintf(subject, sizeof subject, "delivery/%s", did);
    if (bf_event_commit(&ev, w->db, NOTIFY_SERVICE, DEAD_LETTERED, subject, "system:notify") != 0 ||
        bf_db_commit(w->db) != 0) {
        bf_db_rollback(w->db);
        return -1;
    }
    return 0;
}

/* One message of a delivery stream. */
static void s_process(s_worker_t *w, const char *channel, const char *msg_id, const char *did)
{
    notify_t *n = w->n;
    if (!did || strlen(did) != NOTIFY_ID_LEN) {
        bf_log(BF_WARN, "worker: message %s on %s has no delivery id; dropped", msg_id, channel);
        s_ack(w, channel, msg_id);
        return;
    }
    int64_t now = notify_now_ms(n);
    char nows[24], vis[24];
    snprintf(nows, sizeof nows, "%lld", (long long)now);
    snprintf(vis, sizeof vis, "%lld", n->visibility_ms);
    const char *p[] = {did, nows, vis, w->consumer};
    PGresult *res = bf_db_prep(
        w->db, "notify_claim",
        "WITH c AS (UPDATE delivery SET state = 'sending', attempts = attempts + 1, "
        "lease_until = now() + make_interval(secs => $3::bigint / 1000.0), updated_at = now(), "
        "worker = $4 "
        "WHERE id = $1 AND (state = 'pending' OR (state = 'retry' AND due_ms <= $2::bigint) OR "
        "(state = 'sending' AND lease_until < now())) RETURNING *) "
        "SELECT c.id, c.event_id, c.event_type, c.channel, c.recipient, c.address, c.subject, "
        "c.body, c.attempts, c.endpoint_id, e.url, e.secret, e.previous_secret, "
        "e.previous_until_ms, e.rate_per_sec, e.rate_burst, e.status AS ep_status, "
        "e.paused_until_ms, c.subscription_id, ev.payload "
        "FROM c JOIN event ev ON ev.id = c.event_id LEFT JOIN endpoint e ON e.id = c.endpoint_id",
        4, p, NULL, NULL);
    if (!res) {
        bf_log(BF_WARN, "worker: claiming %s failed: %s", did, bf_db_errmsg(w->db));
        return; /* left pending: retried or reclaimed */
    }
    if (PQntuples(res) != 1) {
        /* finished, held, not yet due, or leased by a worker. A lease still
         * running may belong to a worker that died after its claim: this
         * message must then stay pending, to be reclaimed once the lease is
         * over (it is acknowledged then, whatever became of the delivery). */
        PQclear(res);
        const char *sp[] = {did};
        res = bf_db_prep(w->db, "notify_claim_why",
                         "SELECT state = 'sending' AND lease_until >= now() AS leased "
                         "FROM delivery WHERE id = $1",
                         1, sp, NULL, NULL);
        bool leased = !res || (PQntuples(res) == 1 && bf_db_bool(res, 0, "leased"));
        if (res) PQclear(res);
        if (!leased) s_ack(w, channel, msg_id);
        return;
    }
    int attempts = (int)bf_db_int(res, 0, "attempts");
    int64_t ep = bf_db_int(res, 0, "endpoint_id");
    const char *type = bf_db_str(res, 0, "event_type");
    notify_result_t out = {0, "", false};
    int rc = -1;
    if (ep && !strcmp(bf_db_str(res, 0, "ep_status"), "disabled")) {
        if (s_set_state(w, did, "held", 0, "endpoint disabled", 0, true) == 0)
            s_ack(w, channel, msg_id);
        PQclear(res);
        return;
    }
    if (ep && !bf_db_null(res, 0, "paused_until_ms") && bf_db_int(res, 0, "paused_until_ms") > now) {
        /* the endpoint's circuit is open: wait for the end of its pause,
         * not an attempt */
        int64_t due = bf_db_int(res, 0, "paused_until_ms");
        if (s_set_state(w, did, "retry", due, "paused: endpoint circuit open", 0, true) == 0 &&
            notify_queue_retry(w->rd, channel, did, due) == 0)
            s_ack(w, channel, msg_id);
        PQclear(res);
        return;
    }
    if (ep) {
        int rate = bf_db_null(res, 0, "rate_per_sec") ? n->rate_per_sec
                                                      : (int)bf_db_int(res, 0, "rate_per_sec");
        int burst = bf_db_null(res, 0, "rate_burst") ? n->rate_burst
                                                     : (int)bf_db_int(res, 0, "rate_burst");
        long wait = notify_rate_take(w->rd, ep, rate, burst, now);
        if (wait > 0) {
            /* not an attempt: back in line when a token is there */
            if (s_set_state(w, did, "retry", now + wait, NULL, 0, true) == 0 &&
                notify_queue_retry(w->rd, channel, did, now + wait) == 0)
                s_ack(w, channel, msg_id);
            PQclear(res);
            return;
        }
    }
    if (!strcmp(channel, "webhook")) {
        size_t plen = 0;
        unsigned char *payload =
            PQunescapeBytea((const unsigned char *)bf_db_str(res, 0, "payload"), &plen);
        char *body = payload ? notify_event_json((const char *)payload, plen) : NULL;
        if (payload) PQfreemem(payload);
        const char *prev = NULL;
        if (!bf_db_null(res, 0, "previous_secret") &&
            bf_db_int(res, 0, "previous_until_ms") > now)
            prev = bf_db_str(res, 0, "previous_secret");
        if (!body) {
            snprintf(out.error, sizeof out.error, "the event payload is not a msgpack map");
        } else {
            rc = notify_send_webhook(w->curl, n->allow, bf_db_str(res, 0, "url"),
                                     bf_db_str(res, 0, "secret"), prev, did,
                                     (long long)(notify_wall_ms() / 1000), body, strlen(body),
                                     (long)n->webhook_timeout_ms, &out);
        }
        free(body);
    } else if (!strcmp(channel, "email")) {
        rc = notify_send_email(w->curl, n->smtp_url, n->mail_from, bf_db_str(res, 0, "address"),
                               bf_db_str(res, 0, "subject"), bf_db_str(res, 0, "body"), did,
                               (long)n->webhook_timeout_ms, &out);
    } else if (!strcmp(channel, "sms")) {
        rc = notify_send_sms(w->curl, n->sms_url, bf_db_str(res, 0, "address"),
                             bf_db_str(res, 0, "body"), did, (long)n->webhook_timeout_ms, &out);
    } else if (!strcmp(channel, "inbox")) {
        const char *ip[] = {did, bf_db_str(res, 0, "recipient"), bf_db_str(res, 0, "event_id"),
                            type, bf_db_str(res, 0, "subject"), bf_db_str(res, 0, "body")};
        PGresult *ir = bf_db_prep(w->db, "notify_inbox_put",
                                  "INSERT INTO inbox (id, person, event_id, event_type, title, "
                                  "body) VALUES ($1, $2, $3, $4, COALESCE($5, ''), "
                                  "COALESCE($6, '')) ON CONFLICT (id) DO NOTHING",
                                  6, ip, NULL, NULL);
        if (ir) {
            PQclear(ir);
            rc = 0;
        } else {
            snprintf(out.error, sizeof out.error, "inbox: %s", bf_db_errmsg(w->db));
        }
    } else {
        snprintf(out.error, sizeof out.error, "unknown channel %s", channel);
    }

    if (rc == 0) {
        if (s_set_state(w, did, "sent", 0, NULL, out.status, false) != 0) {
            PQclear(res);
            return; /* the lease runs out and it is tried again: at-least-once */
        }
        if (ep) s_endpoint_ok(w, ep);
        atomic_fetch_add(&n->deliveries_sent, 1);
        notify_stat_count(n, w->rd, channel, true, 1);
        s_ack(w, channel, msg_id);
        PQclear(res);
        return;
    }
    atomic_fetch_add(&n->deliveries_failed, 1);
    notify_stat_count(n, w->rd, channel, false, 1);
    bf_log(BF_INFO, "delivery %s (%s) attempt %d failed: %s", did, channel, attempts, out.error);
    if (attempts >= n->max_attempts) {
        if (s_dead(w, res, did, channel, type, attempts, &out) == 0 &&
            notify_queue_dead(w->rd, did, channel, type, attempts, out.error) == 0)
            s_ack(w, channel, msg_id);
    } else {
        int64_t due = now + s_backoff(n, attempts);
        if (s_set_state(w, did, "retry", due, out.error, out.status, false) == 0 &&
            notify_queue_retry(w->rd, channel, did, due) == 0)
            s_ack(w, channel, msg_id);
    }
    if (ep) s_endpoint_failed(w, ep, out.error, out.no_answer);
    PQclear(res);
}

/* Per-endpoint concurrency (notify.endpoint_concurrency, per process): a
 * slot in n->inflight for each send in flight. Returns false when the
 * endpoint has all its slots taken. */
static bool s_slot_take(notify_t *n, int64_t ep)
{
    bool ok = false;
    int free_i = -1;
    pthread_mutex_lock(&n->inflight_lock);
    for (int i = 0; i < NOTIFY_MAX_WORKERS; i++) {
        if (n->inflight[i].count > 0 && n->inflight[i].endpoint == ep) {
            if (n->inflight[i].count < n->endpoint_concurrency) {
                n->inflight[i].count++;
                ok = true;
            }
            free_i = -2;
            break;
        }
        if (n->inflight[i].count == 0 && free_i == -1) free_i = i;
    }
    if (free_i >= 0) {
        n->inflight[free_i].endpoint = ep;
        n->inflight[free_i].count = 1;
        ok = true;
    }
    pthread_mutex_unlock(&n->inflight_lock);
    return ok;
}

static void s_slot_release(notify_t *n, int64_t ep)
{
    pthread_mutex_lock(&n->inflight_lock);
    for (int i = 0; i < NOTIFY_MAX_WORKERS; i++)
        if (n->inflight[i].count > 0 && n->inflight[i].endpoint == ep) {
            n->inflight[i].count--;
            break;
        }
    pthread_mutex_unlock(&n->inflight_lock);
}

/* The endpoint a delivery goes to (0 for people deliveries or unknown). */
static int64_t s_endpoint_of(s_worker_t *w, const char *did)
{
    const char *p[] = {did};
    PGresult *res = bf_db_prep(w->db, "notify_delivery_ep",
                               "SELECT endpoint_id FROM delivery WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return 0;
    int64_t ep = PQntuples(res) == 1 && !bf_db_null(res, 0, "endpoint_id")
                     ? bf_db_int(res, 0, "endpoint_id") : 0;
    PQclear(res);
    return ep;
}

/* One message, within its endpoint's concurrency cap: a delivery whose
 * endpoint has every slot in flight goes back to the end of its stream (a
 * copy first, then ack+delete: a crash in between leaves a harmless
 * duplicate), so this worker moves on to other endpoints' work instead of
 * queueing behind a slow one. Returns true if it was put back. */
static bool s_process_capped(s_worker_t *w, const char *channel, const char *msg_id,
                             const char *did)
{
    int64_t ep = 0;
    if (strcmp(channel, "inbox") != 0 && strlen(did) == NOTIFY_ID_LEN) ep = s_endpoint_of(w, did);
    if (ep && !s_slot_take(w->n, ep)) {
        if (notify_queue_push(w->rd, channel, &did, 1) == 0) s_ack(w, channel, msg_id);
        return true;
    }
    s_process(w, channel, msg_id, did);
    if (ep) s_slot_release(w->n, ep);
    return false;
}

/* Entries of one stream reply for a channel. */
static void s_entries(s_worker_t *w, const char *channel, const redisReply *entries)
{
    bool put_back = false;
    if (!entries || entries->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < entries->elements && !notify_stopping(w->n); i++) {
        const redisReply *e = entries->element[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !e->element[0] ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len > 40)
            continue;
        const redisReply *f = e->element[1];
        char did[NOTIFY_ID_LEN + 2] = "";
        if (f && f->type == REDIS_REPLY_ARRAY) {
            for (size_t k = 0; k + 1 < f->elements; k += 2) {
                const redisReply *key = f->element[k], *val = f->element[k + 1];
                if (key && val && key->type == REDIS_REPLY_STRING &&
                    val->type == REDIS_REPLY_STRING && key->len == 1 && key->str[0] == 'd' &&
                    val->len <= NOTIFY_ID_LEN)
                    snprintf(did, sizeof did, "%s", val->str);
            }
        }
        put_back |= s_process_capped(w, channel, e->element[0]->str, did);
    }
    /* only capped work in hand: do not spin on it */
    if (put_back) s_sleep_ms(20);
}

/* A queue paused while this worker was blocked reading it: the messages go
 * back to the end of the stream (copy first, then ack+delete the original;
 * a crash in between leaves a harmless duplicate). */
static void s_give_back(s_worker_t *w, const char *channel, const redisReply *entries)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY) return;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !e->element[0] ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const redisReply *f = e->element[1];
        for (size_t k = 0; f && f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2) {
            const redisReply *key = f->element[k], *val = f->element[k + 1];
            if (key && val && key->type == REDIS_REPLY_STRING && val->type == REDIS_REPLY_STRING &&
                key->len == 1 && key->str[0] == 'd' && val->len == NOTIFY_ID_LEN) {
                const char *id = val->str;
                if (notify_queue_push(w->rd, channel, &id, 1) == 0)
                    s_ack(w, channel, e->element[0]->str);
            }
        }
    }
}

static const char *s_channel_of_key(const redisReply *key)
{
    size_t pl = strlen(NOTIFY_Q_PREFIX);
    if (!key || key->type != REDIS_REPLY_STRING || key->len <= pl) return NULL;
    for (int i = 0; notify_channels[i]; i++)
        if (key->len - pl == strlen(notify_channels[i]) &&
            !memcmp(key->str + pl, notify_channels[i], key->len - pl))
            return notify_channels[i];
    return NULL;
}

static void s_autoclaim(s_worker_t *w, const char *channel)
{
    notify_t *n = w->n;
    char key[96], cursor[64] = "0-0", idle[24];
    notify_queue_key(channel, key, sizeof key);
    snprintf(idle, sizeof idle, "%lld", n->visibility_ms);
    for (int round = 0; round < 50 && !notify_stopping(n); round++) {
        const char *argv[] = {"XAUTOCLAIM", key, n->group, w->consumer, idle, cursor,
                              "COUNT", "20"};
        redisReply *rep = bf_redis_cmd(w->rd, 8, argv, NULL);
        if (!rep) return;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 || !rep->element[0] ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof cursor) {
            freeReplyObject(rep);
            return;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        const redisReply *entries = rep->element[1];
        if (entries && entries->type == REDIS_REPLY_ARRAY && entries->elements)
            bf_log(BF_INFO, "worker: reclaimed %zu stalled %s deliveries", entries->elements,
                   channel);
        s_entries(w, channel, entries);
        freeReplyObject(rep);
        if (!strcmp(cursor, "0-0")) return;
    }
}

void *notify_worker_main(void *arg)
{
    notify_t *n = arg;
    static atomic_int next_index;
    s_worker_t w = {.n = n, .index = atomic_fetch_add(&next_index, 1)};
    char err[256];
    snprintf(w.consumer, sizeof w.consumer, "%s:w%d", n->instance, w.index);
    w.db = bf_login_db(n->cfg, NOTIFY_SERVICE, NOTIFY_SERVICE);
    w.rd = bf_login_redis(n->cfg, NOTIFY_SERVICE, err, sizeof err);
    w.curl = curl_easy_init();
    if (!w.db || !w.rd || !w.curl) {
        bf_log(BF_ERROR, "worker %d: cannot start", w.index);
        goto out;
    }
    /* stagger the reclaim rounds of the workers */
    int64_t last_claim = notify_wall_ms() - (int64_t)w.index * (n->visibility_ms / 8);
    long backoff = 100;
    while (!notify_stopping(n)) {
        if (bf_db_ensure(w.db) != 0 && bf_db_connect(w.db, 1) != 0) {
            s_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        /* the channels not paused */
        const char *live[NOTIFY_NCHANNELS];
        char keys[NOTIFY_NCHANNELS][96];
        int nlive = 0;
        for (int i = 0; notify_channels[i]; i++) {
            if (notify_queue_paused(w.rd, w.db, notify_channels[i])) continue;
            live[nlive] = notify_channels[i];
            notify_queue_key(notify_channels[i], keys[nlive], sizeof keys[nlive]);
            nlive++;
        }
        if (nlive == 0) {
            s_sleep_ms(200);
            continue;
        }
        if (notify_wall_ms() - last_claim > n->visibility_ms / 2) {
            for (int i = 0; i < nlive; i++) s_autoclaim(&w, live[i]);
            last_claim = notify_wall_ms();
        }
        const char *argv[9 + 2 * NOTIFY_NCHANNELS] = {"XREADGROUP", "GROUP", n->group,
                                                      w.consumer, "COUNT", "8", "BLOCK", "500",
                                                      "STREAMS"};
        int argc = 9;
        for (int i = 0; i < nlive; i++) argv[argc++] = keys[i];
        for (int i = 0; i < nlive; i++) argv[argc++] = ">";
        redisReply *rep = bf_redis_cmd(w.rd, argc, argv, NULL);
        if (!rep) {
            s_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        backoff = 100;
        if (rep->type == REDIS_REPLY_ERROR) {
            bf_log(BF_WARN, "worker: XREADGROUP: %s", rep->str);
            /* Redis lost its data: re-create every group from the start of
             * what each stream holds now (the events group too: "$" here would
             * skip the events the relays are sending again) */
            if (strstr(rep->str, "NOGROUP")) notify_queue_init_from(n, w.rd, "0");
            freeReplyObject(rep);
            s_sleep_ms(500);
            continue;
        }
        if (rep->type == REDIS_REPLY_ARRAY) {
            for (size_t s = 0; s < rep->elements; s++) {
                const redisReply *st = rep->element[s];
                if (!st || st->type != REDIS_REPLY_ARRAY || st->elements != 2) continue;
                const char *ch = s_channel_of_key(st->element[0]);
                if (!ch) continue;
                if (notify_queue_paused(w.rd, w.db, ch)) s_give_back(&w, ch, st->element[1]);
                else s_entries(&w, ch, st->element[1]);
            }
        }
        freeReplyObject(rep);
    }
out:
    if (w.curl) curl_easy_cleanup(w.curl);
    bf_db_destroy(&w.db);
    bf_redis_destroy(&w.rd);
    return NULL;
}

/* ------------------------------------------------------------ re-drive */

/* A set of delivery ids (open addressing), for "does Redis hold it". */
typedef struct {
    char **slots;
    size_t cap, count;
} s_set_t;

static uint64_t s_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int s_set_add(s_set_t *s, const char *str, size_t n)
{
    if ((s->count + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slots[i]) continue;
            size_t j = s_hash(s->slots[i], strlen(s->slots[i])) & (cap - 1);
            while (slots[j]) j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    size_t j = s_hash(str, n) & (s->cap - 1);
    while (s->slots[j]) {
        if (strlen(s->slots[j]) == n && !memcmp(s->slots[j], str, n)) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = strndup(str, n);
    if (!s->slots[j]) return -1;
    s->count++;
    return 0;
}

static bool s_set_has(const s_set_t *s, const char *str)
{
    if (!s->cap) return false;
    size_t n = strlen(str), j = s_hash(str, n) & (s->cap - 1);
    while (s->slots[j]) {
        if (!strcmp(s->slots[j], str)) return true;
        j = (j + 1) & (s->cap - 1);
    }
    return false;
}

static void s_set_free(s_set_t *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->slots[i]);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

/* Adds every delivery id Redis holds: the retry set, then each stream. */
static int s_redis_holds(bf_redis_t *rd, s_set_t *set)
{
    long long off = 0;
    for (int round = 0; round < 100000; round++) {
        char a[24], b[24];
        snprintf(a, sizeof a, "%lld", off);
        snprintf(b, sizeof b, "%lld", off + 999);
        const char *argv[] = {"ZRANGE", NOTIFY_RETRY_KEY, a, b};
        redisReply *rep = bf_redis_cmd(rd, 4, argv, NULL);
        if (!rep || rep->type != REDIS_REPLY_ARRAY) {
            if (rep) freeReplyObject(rep);
            return -1;
        }
        size_t got = rep->elements;
        for (size_t i = 0; i < got; i++) {
            const redisReply *m = rep->element[i];
            if (!m || m->type != REDIS_REPLY_STRING) continue;
            const char *bar = memchr(m->str, '|', m->len);
            if (bar && s_set_add(set, bar + 1, m->len - (size_t)(bar + 1 - m->str)) != 0) {
                freeReplyObject(rep);
                return -1;
            }
        }
        freeReplyObject(rep);
        if (got < 1000) break;
        off += 1000;
    }
    for (int c = 0; notify_channels[c]; c++) {
        char key[96], start[64] = "-";
        notify_queue_key(notify_channels[c], key, sizeof key);
        for (int round = 0; round < 100000; round++) {
            const char *argv[] = {"XRANGE", key, start, "+", "COUNT", "1000"};
            redisReply *rep = bf_redis_cmd(rd, 6, argv, NULL);
            if (!rep || rep->type != REDIS_REPLY_ARRAY) {
                if (rep) freeReplyObject(rep);
                return -1;
            }
            size_t got = rep->elements;
            for (size_t i = 0; i < got; i++) {
                const redisReply *e = rep->element[i];
                if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                    e->element[0]->type != REDIS_REPLY_STRING)
                    continue;
                const redisReply *f = e->element[1];
                for (size_t k = 0; f && f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements;
                     k += 2) {
                    const redisReply *kk = f->element[k], *v = f->element[k + 1];
                    if (kk && v && kk->type == REDIS_REPLY_STRING &&
                        v->type == REDIS_REPLY_STRING && kk->len == 1 && kk->str[0] == 'd' &&
                        s_set_add(set, v->str, v->len) != 0) {
                        freeReplyObject(rep);
                        return -1;
                    }
                }
                if (i + 1 == got && e->element[0]->len < sizeof start - 2)
                    snprintf(start, sizeof start, "(%s", e->element[0]->str);
            }
            freeReplyObject(rep);
            if (got < 1000) break;
        }
    }
    return 0;
}

static long s_redrive(notify_t *n, bf_db_t *db, bf_redis_t *rd, long min_age_ms)
{
    (void)n;
    s_set_t set = {0};
    if (s_redis_holds(rd, &set) != 0) {
        s_set_free(&set);
        return -1;
    }
    long count = 0;
    char after[NOTIFY_ID_LEN + 1] = "", age[24];
    snprintf(age, sizeof age, "%ld", min_age_ms);
    for (int page = 0; page < 100000; page++) {
        const char *p[] = {after, age};
        PGresult *res = bf_db_prep(
            db, "notify_redrive",
            "SELECT id, channel, state, due_ms FROM delivery "
            "WHERE (state IN ('pending', 'retry') OR (state = 'sending' AND lease_until < now())) "
            "AND id > $1 AND updated_at < now() - make_interval(secs => $2::bigint / 1000.0) "
            "ORDER BY id LIMIT 1000",
            2, p, NULL, NULL);
        if (!res) {
            s_set_free(&set);
            return -1;
        }
        int rows = PQntuples(res);
        for (int i = 0; i < rows; i++) {
            const char *id = bf_db_str(res, i, "id");
            const char *ch = bf_db_str(res, i, "channel");
            if (!s_set_has(&set, id)) {
                int rc;
                if (!strcmp(bf_db_str(res, i, "state"), "retry"))
                    rc = notify_queue_retry(rd, ch, id, bf_db_int(res, i, "due_ms"));
                else
                    rc = notify_queue_push(rd, ch, &id, 1);
                if (rc == 0) count++;
            }
            if (i + 1 == rows) snprintf(after, sizeof after, "%s", id);
        }
        PQclear(res);
        if (rows < 1000) break;
    }
    s_set_free(&set);
    if (count) bf_log(BF_INFO, "re-drive: %ld unfinished deliveries put back into Redis", count);
    return count;
}

long notify_redrive(notify_t *n, bf_db_t *db, bf_redis_t *rd) { return s_redrive(n, db, rd, 0); }

long notify_release_held(notify_t *n, bf_db_t *db, bf_redis_t *rd, int64_t endpoint_id)
{
    (void)n;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)endpoint_id);
    const char *p[] = {id};
    PGresult *res = bf_db_prep(db, "notify_release_held",
                               "UPDATE delivery SET state = 'pending', updated_at = now() "
                               "WHERE endpoint_id = $1 AND state = 'held' RETURNING id, channel",
                               1, p, NULL, NULL);
    if (!res) return -1;
    long count = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *did = bf_db_str(res, i, "id");
        if (notify_queue_push(rd, bf_db_str(res, i, "channel"), &did, 1) == 0) count++;
    }
    PQclear(res);
    return count;
}

void *notify_sched_main(void *arg)
{
    notify_t *n = arg;
    char err[256];
    bf_db_t *db = bf_login_db(n->cfg, NOTIFY_SERVICE, NOTIFY_SERVICE);
    bf_redis_t *rd = bf_login_redis(n->cfg, NOTIFY_SERVICE, err, sizeof err);
    if (!db || !rd) {
        bf_log(BF_ERROR, "scheduler: cannot start");
        goto out;
    }
    bool redriven = false;
    int64_t last_redrive = notify_wall_ms(), last_forget = 0;
    while (!notify_stopping(n)) {
        if (bf_db_ensure(db) != 0 && bf_db_connect(db, 1) != 0) {
            s_sleep_ms(1000);
            continue;
        }
        if (!redriven) {
            redriven = s_redrive(n, db, rd, 0) >= 0;
            last_redrive = notify_wall_ms();
        } else if (n->redrive_interval_s > 0 &&
                   notify_wall_ms() - last_redrive > n->redrive_interval_s * 1000) {
            /* only rows untouched for a while: fresh ones are on their way */
            s_redrive(n, db, rd, (long)(n->visibility_ms > 10000 ? n->visibility_ms : 10000));
            last_redrive = notify_wall_ms();
        }
        long moved;
        int rounds = 0;
        while ((moved = notify_queue_move_due(rd, notify_now_ms(n), 1000)) >= 1000 && rounds++ < 100)
            ;
        if (notify_wall_ms() - last_forget > 60000) {
            /* consumers of dead instances that hold nothing, idle for ten
             * visibility timeouts, so `consumers` stays truthful */
            long long idle = 10 * n->visibility_ms;
            notify_queue_forget_consumers(n, rd, n->events_stream, false, idle);
            for (int c = 0; notify_channels[c]; c++) {
                char key[96];
                notify_queue_key(notify_channels[c], key, sizeof key);
                notify_queue_forget_consumers(n, rd, key, false, idle);
            }
            last_forget = notify_wall_ms();
        }
        s_sleep_ms(100);
    }
out:
    bf_db_destroy(&db);
    bf_redis_destroy(&rd);
    return NULL;
}
