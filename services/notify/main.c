/* bangfu-notify: main, configuration, the method table, the clock, and the
 * threads (see notify.h). */
#include "notify.h"
#include "bf_login.h"
#include "bf_json.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

extern const bf_migration_t notify_migrations[];

const char *const notify_channels[NOTIFY_NCHANNELS + 1] = {"webhook", "email", "sms", "inbox",
                                                           NULL};

static const bf_cfg_def_t s_notify_cfg[] = {
    {"notify.bind", BF_CFG_STR, "tcp://127.0.0.1:7104", 0, 0,
     "address the notify service's RPC ROUTER socket binds"},
    {"notify.group", BF_CFG_STR, "notify", 0, 0,
     "consumer group name on the event stream and the delivery streams"},
    {"notify.group_start", BF_CFG_STR, "$", 0, 0,
     "where a new group starts on the event stream: $ (new events only) or 0 (all)"},
    {"notify.workers", BF_CFG_INT, "4", 1, NOTIFY_MAX_WORKERS, "delivery worker threads"},
    {"notify.batch", BF_CFG_INT, "100", 1, 10000, "events / deliveries read per round"},
    {"notify.visibility_ms", BF_CFG_INT, "30000", 500, 86400000,
     "a delivery unacknowledged this long is reclaimed by another worker (XAUTOCLAIM)"},
    {"notify.max_attempts", BF_CFG_INT, "6", 1, 100,
     "attempts before a delivery goes to the dead-letter stream"},
    {"notify.backoff_base_ms", BF_CFG_INT, "2000", 1, 86400000,
     "delay after the first failure; doubles per attempt, with jitter (delay/2..delay)"},
    {"notify.backoff_cap_ms", BF_CFG_INT, "900000", 1, 604800000, "longest retry delay"},
    {"notify.rate_per_sec", BF_CFG_INT, "20", 0, 1000000,
     "default sends per second per endpoint (0 = no limit); an endpoint may set its own"},
    {"notify.rate_burst", BF_CFG_INT, "40", 1, 1000000, "default token bucket size per endpoint"},
    {"notify.disable_after_ms", BF_CFG_INT, "86400000", 1000, 31536000000LL,
     "an endpoint failing continuously this long is disabled (its deliveries held)"},
    {"notify.smtp_url", BF_CFG_STR, "smtp://127.0.0.1:25", 0, 0,
     "SMTP relay for email (smtp:// or smtps://)"},
    {"notify.mail_from", BF_CFG_STR, "bangfu@localhost", 0, 0, "From: address of email"},
    {"notify.sms_url", BF_CFG_STR, "", 0, 0,
     "SMS gateway URL (POST JSON {to, text}); empty = SMS deliveries fail with an error"},
    {"notify.webhook_timeout_ms", BF_CFG_INT, "10000", 100, 600000,
     "a webhook (or SMTP / SMS call) must answer within this; keep below visibility_ms"},
    {"notify.registry_rpc", BF_CFG_STR, "", 0, 0,
     "registry RPC address (empty: $BANGFU_REGISTRY_RPC or tcp://127.0.0.1:7101)"},
    {"notify.tasks_rpc", BF_CFG_STR, "", 0, 0,
     "tasks RPC address (empty: $BANGFU_TASKS_RPC or tcp://127.0.0.1:7103)"},
    {"notify.rpc_timeout_ms", BF_CFG_INT, "5000", 100, 600000,
     "timeout of calls to the registry and tasks"},
    {"notify.clock", BF_CFG_STR, "system", 0, 0,
     "system, or manual (tests: clock.set and scheduler.tick move time)"},
    {"notify.rotation_overlap_s", BF_CFG_INT, "86400", 0, 31536000,
     "after endpoint.rotate_secret, how long the old secret still signs too"},
    {"notify.redrive_interval_s", BF_CFG_INT, "300", 0, 86400,
     "how often unfinished deliveries missing from Redis are re-queued (0 = at start only)"},
    {"notify.max_fanout", BF_CFG_INT, "1000", 1, 1000000,
     "most deliveries one event may produce"},
    {"notify.webhook_allow", BF_CFG_STR, "", 0, 0,
     "webhook destinations allowed although loopback/private/link-local/CGNAT/multicast: "
     "comma list of CIDRs, address[:port] or host:port (empty = none)"},
    {"notify.test_timeout_ms", BF_CFG_INT, "3000", 100, 3000,
     "hard timeout of one endpoint.test call (at most 3 s)"},
    {"notify.test_concurrency", BF_CFG_INT, "2", 1, NOTIFY_MAX_TESTERS,
     "tester threads: endpoint tests sent at once (endpoint.test itself only records one)"},
    {"notify.test_pending_max", BF_CFG_INT, "100", 1, 100000,
     "endpoint tests waiting at most; endpoint.test beyond that gets resource_exhausted"},
    {"notify.endpoint_concurrency", BF_CFG_INT, "2", 1, NOTIFY_MAX_WORKERS,
     "sends to one endpoint in flight at once per notify process; more wait (not an attempt)"},
    {"notify.breaker_failures", BF_CFG_INT, "5", 1, 1000,
     "consecutive failures without an answer (timeout, connection) that pause an endpoint"},
    {"notify.breaker_cooldown_ms", BF_CFG_INT, "30000", 100, 86400000,
     "first pause of a tripped endpoint; doubles on each further trip"},
    {"notify.breaker_cooldown_cap_ms", BF_CFG_INT, "1800000", 100, 604800000,
     "longest pause of a tripped endpoint"},
    {"notify.retention_deliveries_days", BF_CFG_INT, "90", 0, 36500,
     "sent and dropped deliveries older than this are deleted (0 = keep forever)"},
    {"notify.retention_inbox_days", BF_CFG_INT, "180", 0, 36500,
     "inbox messages older than this are deleted (0 = keep forever)"},
    {"notify.retention_admin_days", BF_CFG_INT, "730", 0, 36500,
     "admin action records older than this are deleted (0 = keep forever)"},
    {"notify.retention_interval_s", BF_CFG_INT, "3600", 1, 604800,
     "how often the retention job runs"},
    {"notify.retention_batch", BF_CFG_INT, "1000", 1, 100000,
     "rows deleted per statement by the retention job (it pauses between batches)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* ---------------------------------------------------------------- params */

static const bf_param_t p_sub_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "a name for people"},
    {"type_prefix", BF_T_STR, BF_REQ, 200, "event type prefix, e.g. bangfu.tasks.task."},
    {"scope", BF_T_MAP, 0, 0, "{kind: all|region|village|unit|team|household|person, value}"},
    {"endpoint_id", BF_T_INT, 0, 0, "deliver each event to this endpoint"},
    {"channels", BF_T_LIST, 0, 3, "or deliver to the people concerned: inbox, sms, email"},
    {"locale", BF_T_STR, 0, 8, "zh-CN (default) or en"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_sub_list[] = {
    {"endpoint_id", BF_T_INT, 0, 0, "only subscriptions of this endpoint"},
    {"include_deleted", BF_T_BOOL, 0, 0, "also deleted ones"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_sub_update[] = {
    {"id", BF_T_INT, BF_REQ, 0, "subscription id"},
    {"name", BF_T_STR, 0, 200, "new name"},
    {"type_prefix", BF_T_STR, 0, 200, "new type prefix"},
    {"scope", BF_T_MAP, 0, 0, "new scope"},
    {"channels", BF_T_LIST, 0, 3, "new channels (people subscriptions)"},
    {"locale", BF_T_STR, 0, 8, "zh-CN or en"},
    {"active", BF_T_BOOL, 0, 0, "false pauses it"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_id[] = {
    {"id", BF_T_INT, BF_REQ, 0, "id"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_test_result[] = {
    {"id", BF_T_STR, BF_REQ, 64, "test_id from endpoint.test"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_ep_create[] = {
    {"name", BF_T_STR, BF_REQ, 200, "unique name"},
    {"channel", BF_T_STR, 0, 16, "webhook (default), email or sms"},
    {"url", BF_T_STR, 0, 2048, "webhook: http:// or https:// URL"},
    {"address", BF_T_STR, 0, 320, "email: address; sms: phone number"},
    {"secret", BF_T_STR, 0, 200, "webhook: whsec_<base64> (default: generated)"},
    {"rate_per_sec", BF_T_INT, 0, 0, "sends per second (0 = no limit; default notify.rate_per_sec)"},
    {"rate_burst", BF_T_INT, 0, 0, "token bucket size (default notify.rate_burst)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_ep_update[] = {
    {"id", BF_T_INT, BF_REQ, 0, "endpoint id"},
    {"url", BF_T_STR, 0, 2048, "new URL"},
    {"address", BF_T_STR, 0, 320, "new address"},
    {"rate_per_sec", BF_T_INT, 0, 0, "new rate"},
    {"rate_burst", BF_T_INT, 0, 0, "new burst"},
    {"status", BF_T_STR, 0, 16, "active (re-enables and releases held deliveries) or disabled"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_ep_rotate[] = {
    {"id", BF_T_INT, BF_REQ, 0, "endpoint id"},
    {"secret", BF_T_STR, 0, 200, "the new whsec_ secret (default: generated)"},
    {"overlap_s", BF_T_INT, 0, 0, "seconds the old secret also signs (default notify.rotation_overlap_s)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_inbox_list[] = {
    {"person", BF_T_STR, BF_REQ, 128, "whose inbox, e.g. cadre:42"},
    {"unread", BF_T_BOOL, 0, 0, "only messages not acknowledged"},
    {"cursor", BF_T_STR, 0, 64, "from next_cursor"},
    {"limit", BF_T_INT, 0, 0, "1..500 (default 50)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_inbox_ack[] = {
    {"id", BF_T_STR, BF_REQ, 64, "message id"},
    {"person", BF_T_STR, 0, 128, "whose message (checked if given)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_tpl_put[] = {
    {"type", BF_T_STR, BF_REQ, 200, "event type, or * for the generic fallback"},
    {"locale", BF_T_STR, 0, 8, "zh-CN (default) or en"},
    {"subject", BF_T_STR, BF_REQ, 1000, "subject / title with {{field}} placeholders"},
    {"body", BF_T_STR, BF_REQ, 20000, "body with {{field}} placeholders"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_tpl_list[] = {
    {"type", BF_T_STR, 0, 200, "only this type"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_delivery_get[] = {
    {"id", BF_T_STR, BF_REQ, 64, "delivery id"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_delivery_list[] = {
    {"event_id", BF_T_STR, 0, 64, "deliveries of this event"},
    {"subscription_id", BF_T_INT, 0, 0, "of this subscription"},
    {"endpoint_id", BF_T_INT, 0, 0, "to this endpoint"},
    {"state", BF_T_STR, 0, 16, "in this state"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_none[] = {
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_dead_list[] = {
    {"channel", BF_T_STR, 0, 16, "only this channel"},
    {"endpoint_id", BF_T_INT, 0, 0, "only this endpoint"},
    {"type_prefix", BF_T_STR, 0, 200, "only events of this type prefix"},
    {"cursor", BF_T_STR, 0, 128, "from next_cursor"},
    {"limit", BF_T_INT, 0, 0, "1..1000 (default 100)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_dead_act[] = {
    {"id", BF_T_STR, 0, 64, "one delivery"},
    {"ids", BF_T_LIST, 0, 1000, "several deliveries"},
    {"filter", BF_T_MAP, 0, 0, "{channel?, endpoint_id?, type_prefix?}: every matching one"},
    {"all", BF_T_BOOL, 0, 0, "every dead delivery"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_queue[] = {
    {"queue", BF_T_STR, BF_REQ, 16, "events, webhook, email, sms or inbox"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_clock_set[] = {
    {"ms", BF_T_INT, 0, 0, "milliseconds since the epoch"},
    {"advance_ms", BF_T_INT, 0, 0, "or move the clock forward by this much"},
    {NULL, 0, 0, 0, NULL},
};

/* Who may call what (docs/security.md, "Roles and region scoping"). Staff reads:
 * every reading role but cadre, whose reads are limited to its own tasks,
 * inbox and households. */
#define R_STAFF (BF_ROLE_READERS & ~BF_ROLE_CADRE)

static const bf_method_t s_methods[] = {
    {"subscription.create", subscription_create, true, p_sub_create,
     "subscribe an endpoint, or the people concerned, to events of a type prefix and scope", BF_ROLE_ADMIN},
    {"subscription.list", subscription_list, false, p_sub_list, "subscriptions", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"subscription.update", subscription_update, true, p_sub_update, "change a subscription", BF_ROLE_ADMIN},
    {"subscription.delete", subscription_delete, true, p_id, "delete a subscription", BF_ROLE_ADMIN},
    {"endpoint.create", endpoint_create, true, p_ep_create,
     "a webhook URL (with its signing secret), an email address or an SMS number", BF_ROLE_ADMIN},
    {"endpoint.get", endpoint_get, false, p_id, "one endpoint (no secret)", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"endpoint.list", endpoint_list, false, p_none, "endpoints (no secrets)", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"endpoint.update", endpoint_update, BF_WRITE_SOLO, p_ep_update,
     "change an endpoint; status active re-enables it and releases held deliveries", BF_ROLE_ADMIN},
    {"endpoint.rotate_secret", endpoint_rotate_secret, true, p_ep_rotate,
     "new signing secret; the old one also signs during the overlap", BF_ROLE_ADMIN},
    {"endpoint.test", endpoint_test, BF_WRITE_SOLO, p_id,
     "queue a test event for an endpoint; returns test_id (see endpoint.test_result)", BF_ROLE_ADMIN},
    {"endpoint.test_result", endpoint_test_result, false, p_test_result,
     "the outcome of an endpoint test: pending, running, or done with ok/status/error",
     BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"inbox.list", inbox_list, false, p_inbox_list,
     "a person's in-app messages, newest first (a cadre: only its own)", BF_ROLE_READERS},
    {"inbox.ack", inbox_ack, true, p_inbox_ack, "mark a message read (a cadre: only its own)",
     BF_ROLE_READERS},
    {"template.put", template_put, true, p_tpl_put, "set the template of an event type and locale", BF_ROLE_ADMIN},
    {"template.list", template_list, false, p_tpl_list, "templates (stored and built-in)", R_STAFF},
    {"delivery.get", delivery_get, false, p_delivery_get, "one delivery and its state", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"delivery.list", delivery_list, false, p_delivery_list, "deliveries, newest first", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"queues.stats", queues_stats, false, p_none,
     "every queue: depth, pending, oldest age, consumers, delivered/failed 1m/1h, retry, dead", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"queues.dead.list", queues_dead_list, false, p_dead_list, "dead-lettered deliveries", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"queues.dead.show", queues_dead_show, false, p_delivery_get, "one dead delivery in full", BF_ROLE_ADMIN | BF_ROLE_AUDITOR},
    {"queues.dead.retry", queues_dead_retry, BF_WRITE_SOLO, p_dead_act,
     "re-queue dead deliveries (one, several, a filter, or all) with fresh attempts", BF_ROLE_ADMIN},
    {"queues.dead.drop", queues_dead_drop, BF_WRITE_SOLO, p_dead_act,
     "drop dead deliveries (kept in the record as dropped)", BF_ROLE_ADMIN},
    {"queues.pause", queues_pause, BF_WRITE_SOLO, p_queue, "stop taking from a queue", BF_ROLE_ADMIN},
    {"queues.resume", queues_resume, BF_WRITE_SOLO, p_queue, "take from a paused queue again", BF_ROLE_ADMIN},
    {"clock.set", clock_set, BF_WRITE_SOLO, p_clock_set, "manual clock only: set or advance the clock", BF_ROLE_ADMIN},
    {"clock.get", clock_get, false, p_none, "the service's clock", BF_ROLE_READERS},
    {"scheduler.tick", scheduler_tick, BF_WRITE_SOLO, p_none,
     "manual clock only: move due retries to their queues now", BF_ROLE_ADMIN},
    {NULL, NULL, false, NULL, NULL, 0},
};

/* ------------------------------------------------------------ clock etc. */

int64_t notify_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t notify_now_ms(notify_t *n)
{
    if (n && n->manual_clock) return atomic_load(&n->manual_ms);
    return notify_wall_ms();
}

bool notify_stopping(notify_t *n) { return bf_service_stopping || atomic_load(&n->stop); }

/* Keys whose values never reach the admin record. */
static bool s_secret_key(const msgpack_object *k)
{
    static const char *const keys[] = {"secret", "previous_secret", "password", "token", NULL};
    for (int i = 0; keys[i]; i++)
        if (bf_mp_str_eq(k, keys[i])) return true;
    return false;
}

/* The parameters as JSON for admin_action.detail, with every secret value
 * replaced by "[redacted]" (top level: notify's methods take secrets only
 * there). Returns a malloc'd string or NULL. */
static char *s_redacted_detail(const msgpack_object *params)
{
    if (!params || params->type != MSGPACK_OBJECT_MAP) return NULL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const msgpack_object_map *m = &params->via.map;
    msgpack_pack_map(&pk, m->size);
    for (uint32_t i = 0; i < m->size; i++) {
        bf_mp_obj(&pk, &m->ptr[i].key);
        if (s_secret_key(&m->ptr[i].key) && m->ptr[i].val.type != MSGPACK_OBJECT_NIL)
            bf_mp_str(&pk, "[redacted]");
        else
            bf_mp_obj(&pk, &m->ptr[i].val);
    }
    char *json = NULL;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS)
        json = bf_json_from_msgpack(&u.data, BF_JSON_COMPACT);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return json;
}

int notify_admin_record(bf_req_t *r, bf_event_t *ev, const char *what, const char *subject)
{
    char *detail = s_redacted_detail(r->params);
    const char *p[] = {r->actor, r->method, r->id, detail ? detail : "{}"};
    PGresult *res = bf_db_prep(r->db, "notify_admin_record",
                               "INSERT INTO admin_action (actor, method, request_id, detail) "
                               "VALUES ($1, $2, $3, $4)",
                               4, p, NULL, NULL);
    free(detail);
    if (!res) {
        bf_event_discard(ev);
        return bf_req_db_fail(r);
    }
    PQclear(res);
    char type[160];
    snprintf(type, sizeof type, "bangfu.notify.%s", what);
    if (bf_event_commit(ev, r->db, NOTIFY_SERVICE, type, subject, r->actor) != 0)
        return bf_req_db_fail(r);
    return 0;
}

/* -------------------------------------------------------------- threads */

static void s_resolve_rpc(const bf_cfg_t *cfg, const char *key, const char *env,
                          const char *def, char *out, size_t len)
{
    const char *v = bf_cfg_str(cfg, key);
    if (!v || !*v) v = getenv(env);
    if (!v || !*v) v = def;
    snprintf(out, len, "%s", v);
}

static void s_stop(void *svc);

/* "<hostname>:<pid>:<8 hex>": the prefix of every consumer name of this
 * process. The random part is drawn once per start, so instances that share
 * a hostname and a pid (containers on the host network, each pid 1) or a
 * restarted one never share a consumer name. */
static void s_instance_id(char *buf, size_t len)
{
    char host[128];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        /* no entropy yet (early boot): time and pid still differ per start */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
                     ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&ts;
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        rnd = (uint32_t)x;
    }
    snprintf(buf, len, "%s:%d:%08x", host, (int)getpid(), (unsigned)rnd);
}

/* At a clean stop, after every thread has ended: removes this instance's
 * consumers that hold nothing from every group, so they do not linger in
 * `consumers` until the scheduler of another instance forgets them. One still
 * holding messages is kept: another instance reclaims those (XAUTOCLAIM). */
static void s_forget_own_consumers(notify_t *n)
{
    char err[256];
    bf_redis_t *rd = bf_login_redis(n->cfg, NOTIFY_SERVICE, err, sizeof err);
    if (!rd) {
        bf_log(BF_WARN, "notify: consumers not removed at stop: %s", err);
        return;
    }
    long total = 0;
    long r = notify_queue_forget_consumers(n, rd, n->events_stream, true, 0);
    if (r > 0) total += r;
    for (int c = 0; notify_channels[c]; c++) {
        char key[96];
        notify_queue_key(notify_channels[c], key, sizeof key);
        r = notify_queue_forget_consumers(n, rd, key, true, 0);
        if (r > 0) total += r;
    }
    bf_redis_destroy(&rd);
    bf_log(BF_INFO, "notify: instance %s stopped, %ld consumers removed", n->instance, total);
}

static int s_start(const bf_cfg_t *cfg, bf_db_t *db, void **svc)
{
    notify_t *n = calloc(1, sizeof *n);
    if (!n) return -1;
    n->cfg = cfg;
    n->events_stream = bf_cfg_str(cfg, "relay.stream");
    n->group = bf_cfg_str(cfg, "notify.group");
    n->group_start = bf_cfg_str(cfg, "notify.group_start");
    n->workers = (int)bf_cfg_int(cfg, "notify.workers");
    n->batch = (int)bf_cfg_int(cfg, "notify.batch");
    n->visibility_ms = bf_cfg_int(cfg, "notify.visibility_ms");
    n->max_attempts = (int)bf_cfg_int(cfg, "notify.max_attempts");
    n->backoff_base_ms = bf_cfg_int(cfg, "notify.backoff_base_ms");
    n->backoff_cap_ms = bf_cfg_int(cfg, "notify.backoff_cap_ms");
    n->rate_per_sec = (int)bf_cfg_int(cfg, "notify.rate_per_sec");
    n->rate_burst = (int)bf_cfg_int(cfg, "notify.rate_burst");
    n->disable_after_ms = bf_cfg_int(cfg, "notify.disable_after_ms");
    n->smtp_url = bf_cfg_str(cfg, "notify.smtp_url");
    n->mail_from = bf_cfg_str(cfg, "notify.mail_from");
    n->sms_url = bf_cfg_str(cfg, "notify.sms_url");
    n->webhook_timeout_ms = bf_cfg_int(cfg, "notify.webhook_timeout_ms");
    n->rpc_timeout_ms = (int)bf_cfg_int(cfg, "notify.rpc_timeout_ms");
    n->rotation_overlap_s = bf_cfg_int(cfg, "notify.rotation_overlap_s");
    n->redrive_interval_s = bf_cfg_int(cfg, "notify.redrive_interval_s");
    n->max_fanout = (int)bf_cfg_int(cfg, "notify.max_fanout");
    n->test_timeout_ms = bf_cfg_int(cfg, "notify.test_timeout_ms");
    n->test_concurrency = (int)bf_cfg_int(cfg, "notify.test_concurrency");
    n->endpoint_concurrency = (int)bf_cfg_int(cfg, "notify.endpoint_concurrency");
    n->breaker_failures = (int)bf_cfg_int(cfg, "notify.breaker_failures");
    n->breaker_cooldown_ms = bf_cfg_int(cfg, "notify.breaker_cooldown_ms");
    n->breaker_cooldown_cap_ms = bf_cfg_int(cfg, "notify.breaker_cooldown_cap_ms");
    n->retain_deliveries_days = (int)bf_cfg_int(cfg, "notify.retention_deliveries_days");
    n->retain_inbox_days = (int)bf_cfg_int(cfg, "notify.retention_inbox_days");
    n->retain_admin_days = (int)bf_cfg_int(cfg, "notify.retention_admin_days");
    n->retention_interval_s = bf_cfg_int(cfg, "notify.retention_interval_s");
    n->retention_batch = (int)bf_cfg_int(cfg, "notify.retention_batch");
    n->test_pending_max = (int)bf_cfg_int(cfg, "notify.test_pending_max");
    {
        char aerr[256];
        n->allow = notify_allow_parse(bf_cfg_str(cfg, "notify.webhook_allow"), aerr, sizeof aerr);
        if (!n->allow) {
            bf_log(BF_ERROR, "config: %s", aerr);
            free(n);
            return -1;
        }
    }
    s_resolve_rpc(cfg, "notify.registry_rpc", "BANGFU_REGISTRY_RPC", "tcp://127.0.0.1:7101",
                  n->registry_rpc, sizeof n->registry_rpc);
    s_resolve_rpc(cfg, "notify.tasks_rpc", "BANGFU_TASKS_RPC", "tcp://127.0.0.1:7103",
                  n->tasks_rpc, sizeof n->tasks_rpc);
    const char *clock = bf_cfg_str(cfg, "notify.clock");
    if (!strcmp(clock, "manual")) {
        n->manual_clock = true;
    } else if (strcmp(clock, "system") != 0) {
        bf_log(BF_ERROR, "config: notify.clock must be system or manual");
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    if (strcmp(n->group_start, "$") != 0 && strcmp(n->group_start, "0") != 0) {
        bf_log(BF_ERROR, "config: notify.group_start must be $ or 0");
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    if (n->webhook_timeout_ms >= n->visibility_ms) {
        bf_log(BF_ERROR, "config: notify.webhook_timeout_ms must be below notify.visibility_ms");
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    atomic_store(&n->manual_ms, notify_wall_ms());
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        bf_log(BF_ERROR, "libcurl failed to initialise");
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    s_instance_id(n->instance, sizeof n->instance);

    /* the groups exist before any thread reads */
    char err[256];
    bf_redis_t *rd = bf_login_redis(cfg, NOTIFY_SERVICE, err, sizeof err);
    if (!rd) {
        bf_log(BF_ERROR, "redis: %s", err);
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    int rc = notify_queue_init(n, rd);
    /* the paused queues come from PostgreSQL, whatever Redis remembers */
    if (rc == 0 && notify_pause_restore(db, rd, true) != 0) {
        bf_log(BF_ERROR, "notify: cannot restore the paused queues from PostgreSQL: %s",
               bf_redis_errmsg(rd));
        rc = -1;
    }
    bf_redis_destroy(&rd);
    if (rc != 0) {
        notify_allow_free(n->allow);
        free(n);
        return -1;
    }
    pthread_mutex_init(&n->inflight_lock, NULL);
    if (pthread_create(&n->sched_thread, NULL, notify_sched_main, n) != 0) goto fail;
    n->sched_started = true;
    if (pthread_create(&n->ingest_thread, NULL, notify_ingest_main, n) != 0) goto fail;
    n->ingest_started = true;
    if (pthread_create(&n->retention_thread, NULL, notify_retention_main, n) != 0) goto fail;
    n->retention_started = true;
    for (int i = 0; i < n->test_concurrency; i++) {
        if (pthread_create(&n->tester_threads[i], NULL, notify_tester_main, n) != 0) goto fail;
        n->ntesters_started++;
    }
    for (int i = 0; i < n->workers; i++) {
        if (pthread_create(&n->worker_threads[i], NULL, notify_worker_main, n) != 0) goto fail;
        n->nthreads_started++;
    }
    bf_log(BF_INFO, "notify: instance %s, %d delivery workers, clock %s, registry %s, "
           "%d webhook allow-list entries",
           n->instance, n->workers, n->manual_clock ? "manual" : "system", n->registry_rpc,
           notify_allow_count(n->allow));
    *svc = n;
    return 0;
fail:
    bf_log(BF_ERROR, "notify: cannot start threads");
    s_stop(n);
    return -1;
}

static void s_stop(void *svc)
{
    notify_t *n = svc;
    if (!n) return;
    atomic_store(&n->stop, 1);
    if (n->ingest_started) pthread_join(n->ingest_thread, NULL);
    for (int i = 0; i < n->nthreads_started; i++) pthread_join(n->worker_threads[i], NULL);
    if (n->sched_started) pthread_join(n->sched_thread, NULL);
    if (n->retention_started) pthread_join(n->retention_thread, NULL);
    for (int i = 0; i < n->ntesters_started; i++) pthread_join(n->tester_threads[i], NULL);
    if (n->ingest_started || n->nthreads_started > 0) s_forget_own_consumers(n);
    pthread_mutex_destroy(&n->inflight_lock);
    notify_allow_free(n->allow);
    free(n);
}

int main(int argc, char **argv)
{
    static const bf_service_def_t def = {
        .name = NOTIFY_SERVICE,
        .version = "0.1.0",
        .cfg_defs = s_notify_cfg,
        .migrations = notify_migrations,
        .methods = s_methods,
        .start = s_start,
        .stop = s_stop,
    };
    return bf_service_main(&def, argc, argv);
}
