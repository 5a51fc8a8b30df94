/* notify: the notification service (docs/notify.md).
 *
 * Reads the event stream (bangfu:events) through a Redis consumer group,
 * matches each event against subscriptions, records one delivery per
 * recipient and channel in PostgreSQL (the record of every delivery's state)
 * and queues it on a Redis Stream per channel. Delivery workers send webhooks
 * (Standard Webhooks signatures), email (SMTP), SMS (an HTTP gateway) and
 * in-app inbox messages, with retries on a Redis sorted set, reclaiming of a
 * dead worker's deliveries (XAUTOCLAIM) and a dead-letter stream. Admins see
 * and steer the queues through queues.* methods and `bangfu queues`.
 *
 * This header lists what the files share: the service state, the Redis keys,
 * the queue operations (queue.c), the channels (channel.c), templates
 * (template.c), recipient resolution (ingest.c) and the RPC handlers.
 */
#ifndef NOTIFY_H
#define NOTIFY_H

#include "bf_cfg.h"
#include "bf_outbox.h"
#include "bf_redis.h"
#include "bf_rpc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define NOTIFY_SERVICE "notify"

/* Redis keys (all under bangfu:notify:). */
#define NOTIFY_Q_PREFIX "bangfu:notify:q:"   /* + channel: a delivery stream */
#define NOTIFY_RETRY_KEY "bangfu:notify:retry" /* zset "channel|delivery id" -> due ms */
#define NOTIFY_DEAD_KEY "bangfu:notify:dead"   /* the dead-letter stream */
#define NOTIFY_PAUSED_KEY "bangfu:notify:paused" /* set of paused queue names */
#define NOTIFY_PAUSED_MARK "~restored" /* member present while the set is a good copy */
#define NOTIFY_STAT_PREFIX "bangfu:notify:stat:" /* + queue + ":" + hour: hash of counters */
#define NOTIFY_RL_PREFIX "bangfu:notify:rl:"     /* + endpoint id: token bucket */

#define NOTIFY_NCHANNELS 4
extern const char *const notify_channels[NOTIFY_NCHANNELS + 1]; /* webhook email sms inbox NULL */

#define NOTIFY_ID_LEN 34 /* "d_" + 32 hex */
#define NOTIFY_MAX_WORKERS 64
#define NOTIFY_MAX_TESTERS 16

typedef struct notify notify_t;
typedef struct notify_allow notify_allow_t; /* the webhook allow-list (netguard.c) */

struct notify {
    const bf_cfg_t *cfg;
    /* config, copied at start */
    const char *events_stream; /* relay.stream */
    const char *group;
    const char *group_start;
    int workers;
    int batch;
    long long visibility_ms;
    int max_attempts;
    long long backoff_base_ms, backoff_cap_ms;
    int rate_per_sec, rate_burst;
    long long disable_after_ms;
    const char *smtp_url, *mail_from, *sms_url;
    long long webhook_timeout_ms;
    char registry_rpc[256], tasks_rpc[256];
    int rpc_timeout_ms;
    bool manual_clock;
    long long rotation_overlap_s;
    long long redrive_interval_s;
    int max_fanout;
    /* webhook destinations (netguard.c): the operator's allow-list */
    notify_allow_t *allow;
    /* endpoint.test (tester.c): hard timeout, tester threads, most waiting */
    long long test_timeout_ms;
    int test_concurrency;
    int test_pending_max;
    /* isolation: sends in flight per endpoint in this process, and the
     * circuit breaker (consecutive failures without an answer -> paused) */
    int endpoint_concurrency;
    int breaker_failures;
    long long breaker_cooldown_ms, breaker_cooldown_cap_ms;
    pthread_mutex_t inflight_lock;
    struct {
        int64_t endpoint;
        int count;
    } inflight[NOTIFY_MAX_WORKERS];
    /* retention (retention.c): ages in days, 0 = keep forever */
    int retain_deliveries_days, retain_inbox_days, retain_admin_days;
    long long retention_interval_s;
    int retention_batch;
    /* "<hostname>:<pid>:<8 hex>", the random part drawn once at start: every
     * consumer name of this process begins with it and ":" (containers on
     * the host network share the hostname and all run as pid 1) */
    char instance[176];
    /* the clock: wall time, or a manual value set by clock.set */
    atomic_llong manual_ms;
    /* threads */
    atomic_int stop;
    pthread_t ingest_thread, sched_thread, retention_thread, worker_threads[NOTIFY_MAX_WORKERS];
    pthread_t tester_threads[NOTIFY_MAX_TESTERS];
    int nthreads_started, ntesters_started;
    bool ingest_started, sched_started, retention_started;
    atomic_llong events_seen, deliveries_sent, deliveries_failed;
};

/* main.c ------------------------------------------------------------- */

/* The service's clock in ms since the epoch: wall time, or the manual value
 * (notify.clock = manual). Retry due times, rate limits, failure windows and
 * counters use it; Redis stream ids and visibility timeouts are wall time. */
int64_t notify_now_ms(notify_t *n);
int64_t notify_wall_ms(void);
bool notify_stopping(notify_t *n);

/* Records an admin action (table admin_action) and emits the event
 * bangfu.notify.<what> in the open transaction. data is the packed event map
 * being built in ev. Returns 0 or fails the request. */
int notify_admin_record(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject);

/* queue.c ------------------------------------------------------------ */

/* Creates the consumer groups (events stream and every delivery stream) if
 * missing. Returns 0 or -1. */
int notify_queue_init(notify_t *n, bf_redis_t *rd);
/* The same with the events group starting at events_start ("0" when the group
 * vanished: Redis lost it, and every entry the stream has now is unread). */
int notify_queue_init_from(notify_t *n, bf_redis_t *rd, const char *events_start);

/* The stream key of a channel's deliveries, into buf. */
void notify_queue_key(const char *channel, char *buf, size_t len);

/* Removes consumers of the group on stream that hold nothing (no pending
 * message) and have been idle at least min_idle_ms, atomically (Lua). own:
 * only this instance's consumers (at a clean stop); else only those of other
 * instances (dead ones; a live instance's own consumers are never touched
 * while it runs). Returns the number removed or -1. */
long notify_queue_forget_consumers(notify_t *n, bf_redis_t *rd, const char *stream, bool own,
                                   long long min_idle_ms);

/* Queues delivery ids on their channel stream (pipelined). Returns 0 or -1. */
int notify_queue_push(bf_redis_t *rd, const char *channel, const char *const *ids, int n);

/* Schedules a retry at due_ms. Returns 0 or -1. */
int notify_queue_retry(bf_redis_t *rd, const char *channel, const char *id, int64_t due_ms);

/* Acknowledges and deletes a message of a delivery stream. */
int notify_queue_done(notify_t *n, bf_redis_t *rd, const char *channel, const char *msg_id);

/* Appends to the dead-letter stream. */
int notify_queue_dead(bf_redis_t *rd, const char *id, const char *channel, const char *type,
                      int attempts, const char *error);

/* Removes delivery ids from the dead-letter stream (scans it). Returns the
 * number removed or -1. */
long notify_queue_dead_remove(bf_redis_t *rd, const char *const *ids, int n);

/* Moves retries due at now_ms back to their streams (atomic, Lua). Returns
 * the number moved or -1. */
long notify_queue_move_due(bf_redis_t *rd, int64_t now_ms, int limit);

/* Counts a processed message for queue ("events", "webhook", ...): ok=true
 * for delivered, false for failed; bucketed by 10 s of the notify clock. */
void notify_stat_count(notify_t *n, bf_redis_t *rd, const char *queue, bool ok, long count);

/* Sums the counters of the last minute and hour. */
int notify_stat_sums(notify_t *n, bf_redis_t *rd, const char *queue, long long *ok_1m,
                     long long *fail_1m, long long *ok_1h, long long *fail_1h);

/* Whether a queue ("events" or a channel) is paused: the set in Redis, a
 * copy of table queue_pause rebuilt from it (through db) when missing. When
 * the copy is missing and cannot be rebuilt the answer is true. */
bool notify_queue_paused(bf_redis_t *rd, bf_db_t *db, const char *queue);

/* Rebuilds the Redis copy of the paused queues from PostgreSQL when it is
 * missing (also taking over pauses an older version kept only in Redis), or
 * always with force (at start). Returns 0 or -1. */
int notify_pause_restore(bf_db_t *db, bf_redis_t *rd, bool force);

/* Records a pause or resume in table queue_pause, inside the caller's
 * transaction, and drops the Redis copy so the next look rebuilds it after
 * the commit. *changed: whether the state changed. Returns 0, -1 (database)
 * or -2 (Redis). */
int notify_pause_set(bf_db_t *db, bf_redis_t *rd, const char *queue, bool pause,
                     const char *actor, bool *changed);

/* Token bucket for an endpoint. Returns 0 if a send may go now, else the
 * ms to wait; -1 on a Redis error (treated as allowed by callers). */
long notify_rate_take(bf_redis_t *rd, int64_t endpoint_id, int rate_per_sec, int burst,
                      int64_t now_ms);

/* The stream id's millisecond part ("1700000000000-0" -> 1700000000000). */
int64_t notify_stream_id_ms(const char *id);

/* netguard.c --------------------------------------------------------- */

struct sockaddr;

/* Parses notify.webhook_allow (comma list of CIDRs, address[:port],
 * host:port). Returns the list (empty for "" or NULL) or NULL with err. */
notify_allow_t *notify_allow_parse(const char *spec, char *err, size_t errlen);
void notify_allow_free(notify_allow_t *a);
int notify_allow_count(const notify_allow_t *a);

/* Whether an address is of a kind webhooks may not reach by default
 * (loopback, private, link-local, CGNAT, multicast, unspecified, reserved,
 * and their IPv6 embeddings). */
bool notify_addr_blocked(const struct sockaddr *sa);
/* Whether a webhook may connect to sa: not blocked, or allowed by the list. */
bool notify_allow_addr(const notify_allow_t *al, const struct sockaddr *sa);
/* Whether the list names host:port (a host-name entry). */
bool notify_allow_host(const notify_allow_t *al, const char *host, int port);

/* Checks an endpoint URL: http/https, a host, no user info. Returns 0, or
 * -1 with *why (a static message naming the problem). */
int notify_url_check(const char *url, const char **why);

/* Per-request state of the connect-time check. */
typedef struct {
    const notify_allow_t *allow;
    bool host_allowed; /* the URL's host:port is on the list by name */
    bool refused;      /* a connection was refused by the check */
} notify_guard_t;

/* Installs the check on a CURL handle for url (after curl_easy_reset):
 * CURLOPT_OPENSOCKETFUNCTION, no redirects, no proxy. Returns -1 for a URL
 * that fails notify_url_check. */
int notify_guard_setup(void *curl, notify_guard_t *g, const char *url);

/* channel.c ---------------------------------------------------------- */

typedef struct {
    int status;       /* HTTP status, SMTP code, or 0 */
    char error[512];  /* "" on success: a generic reason, never libcurl's text
                       * for webhooks ("refused: address not allowed",
                       * "timeout", "connection failed", "HTTP 500") */
    bool no_answer;   /* failed without an answer from the receiver (timeout,
                       * connection failed, refused): counts for the breaker */
} notify_result_t;

/* Signs body for webhook id and timestamp with a "whsec_<base64>" secret and
 * appends "v1,<base64 sig>" to out (space-separated if out is not empty).
 * Returns 0 or -1 (bad secret). */
int notify_webhook_sign(const char *secret, const char *msg_id, long long ts, const char *body,
                        size_t body_len, char *out, size_t out_len);

/* Makes a new "whsec_" secret of 32 random bytes into out (>= 64 bytes). */
void notify_secret_new(char *out, size_t len);

/* Posts body as JSON with the Standard Webhooks headers. secret2 may be NULL
 * (no rotation). Returns 0 on a 2xx, -1 otherwise (res says why). */
int notify_send_webhook(void *curl, const notify_allow_t *allow, const char *url,
                        const char *secret, const char *secret2, const char *msg_id, long long ts,
                        const char *body, size_t body_len, long timeout_ms, notify_result_t *res);

/* Sends a UTF-8 email through the SMTP relay. */
int notify_send_email(void *curl, const char *smtp_url, const char *from, const char *to,
                      const char *subject, const char *body, const char *msg_id,
                      long timeout_ms, notify_result_t *res);

/* Posts {to, text} to the SMS gateway. */
int notify_send_sms(void *curl, const char *gateway_url, const char *to, const char *text,
                    const char *msg_id, long timeout_ms, notify_result_t *res);

/* Base64 (standard, padded) of len bytes into a malloc'd string. */
char *notify_base64(const unsigned char *data, size_t len);

/* The webhook body: the event as JSON (datacontenttype application/json).
 * Returns a malloc'd string or NULL if the payload is not a msgpack map. */
char *notify_event_json(const char *payload, size_t len);

/* template.c --------------------------------------------------------- */

/* Renders subject and body for an event (type, locale) from the template
 * table, the built-in defaults, or the generic fallback. event is the
 * unpacked CloudEvent map. Returns 0 with malloc'd *subject and *body, or -1
 * (database error). */
int notify_render(bf_db_t *db, const char *type, const char *locale, const msgpack_object *event,
                  char **subject, char **body);

/* Substitutes {{path}} in tmpl from event (data.<path> first, then the
 * envelope). Returns a malloc'd string. */
char *notify_template_apply(const char *tmpl, const msgpack_object *event);

int template_put(bf_req_t *r);
int template_list(bf_req_t *r);

/* ingest.c / worker.c ------------------------------------------------ */

void *notify_ingest_main(void *arg);
void *notify_worker_main(void *arg);
void *notify_sched_main(void *arg);

/* retention.c -------------------------------------------------------- */

/* The retention thread: every notify.retention_interval_s deletes, in
 * batches of notify.retention_batch, sent/dropped deliveries (and events no
 * delivery refers to any more), inbox messages and admin records older than
 * their configured ages. Never an unfinished or dead delivery. */
void *notify_retention_main(void *arg);

/* One retention pass; returns the rows deleted or -1. */
long notify_retention_run(notify_t *n, bf_db_t *db);

/* Puts back into Redis every unfinished delivery that Redis does not hold
 * (after a Redis crash or a crash between PostgreSQL and Redis). Returns the
 * number re-driven or -1. */
long notify_redrive(notify_t *n, bf_db_t *db, bf_redis_t *rd);

/* Re-queues the deliveries held for an endpoint (after it is enabled).
 * Returns the number or -1. Runs its own statements (no transaction). */
long notify_release_held(notify_t *n, bf_db_t *db, bf_redis_t *rd, int64_t endpoint_id);

/* admin.c ------------------------------------------------------------ */

int subscription_create(bf_req_t *r);
int subscription_list(bf_req_t *r);
int subscription_update(bf_req_t *r);
int subscription_delete(bf_req_t *r);
int endpoint_create(bf_req_t *r);
int endpoint_get(bf_req_t *r);
int endpoint_list(bf_req_t *r);
int endpoint_update(bf_req_t *r);
int endpoint_rotate_secret(bf_req_t *r);
/* tester.c: endpoint.test records a request, tester threads send it */
int endpoint_test(bf_req_t *r);
int endpoint_test_result(bf_req_t *r);
void *notify_tester_main(void *arg);
int inbox_list(bf_req_t *r);
int inbox_ack(bf_req_t *r);
int delivery_get(bf_req_t *r);
int delivery_list(bf_req_t *r);

/* queues.c ----------------------------------------------------------- */

int queues_stats(bf_req_t *r);
int queues_dead_list(bf_req_t *r);
int queues_dead_show(bf_req_t *r);
int queues_dead_retry(bf_req_t *r);
int queues_dead_drop(bf_req_t *r);
int queues_pause(bf_req_t *r);
int queues_resume(bf_req_t *r);
int clock_set(bf_req_t *r);
int clock_get(bf_req_t *r);
int scheduler_tick(bf_req_t *r);

#endif
