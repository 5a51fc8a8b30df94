/* gateway metrics: Prometheus text at /metrics.
 *
 * Kept in memory, under one mutex: HTTP requests counted by service, method
 * and status code (methods the gateway does not know are counted as
 * "_unknown", so the label set stays bounded), a latency histogram per
 * service, and failed upstream calls (unavailable / internal) per service.
 * On each scrape the gateway also asks every service for sys.stats and
 * notify for queues.stats, and reports those figures.
 */
#include "gateway.h"
#include "bf_mp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GW_MAX_SERIES 2048
#define GW_NBUCKETS 11

static const double s_bounds[GW_NBUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,    2.5,   5,    10};

typedef struct {
    char svc[32];
    char method[100];
    int status;
    unsigned long long count;
} gw_series_t;

typedef struct {
    char svc[32];
    unsigned long long buckets[GW_NBUCKETS]; /* non-cumulative; summed at render */
    unsigned long long count;
    double sum;
} gw_hist_t;

typedef struct {
    char svc[32];
    char code[32];
    unsigned long long count;
} gw_uperr_t;

struct gw_metrics {
    pthread_mutex_t mu;
    gw_series_t series[GW_MAX_SERIES];
    int nseries;
    unsigned long long dropped; /* requests past GW_MAX_SERIES series */
    gw_hist_t hist[32];
    int nhist;
    gw_uperr_t uperr[64];
    int nuperr;
};

gw_metrics_t *gw_metrics_new(void)
{
    gw_metrics_t *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void gw_metrics_free(gw_metrics_t *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void gw_metrics_request(gw_metrics_t *m, const char *svc, const char *method, int status,
                        double seconds)
{
    if (!svc[0]) svc = "other";
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->nseries; i++)
        if (m->series[i].status == status && !strcmp(m->series[i].svc, svc) &&
            !strcmp(m->series[i].method, method))
            break;
    if (i == m->nseries && m->nseries < GW_MAX_SERIES) {
        snprintf(m->series[i].svc, sizeof m->series[i].svc, "%s", svc);
        snprintf(m->series[i].method, sizeof m->series[i].method, "%s", method);
        m->series[i].status = status;
        m->nseries++;
    }
    if (i < m->nseries) m->series[i].count++;
    else m->dropped++;
    for (i = 0; i < m->nhist; i++)
        if (!strcmp(m->hist[i].svc, svc)) break;
    if (i == m->nhist && m->nhist < (int)(sizeof m->hist / sizeof m->hist[0])) {
        snprintf(m->hist[i].svc, sizeof m->hist[i].svc, "%s", svc);
        m->nhist++;
    }
    if (i < m->nhist) {
        gw_hist_t *h = &m->hist[i];
        for (int b = 0; b < GW_NBUCKETS; b++)
            if (seconds <= s_bounds[b]) {
                h->buckets[b]++;
                break;
            }
        h->count++;
        h->sum += seconds;
    }
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_upstream_error(gw_metrics_t *m, const char *svc, const char *code)
{
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->nuperr; i++)
        if (!strcmp(m->uperr[i].svc, svc) && !strcmp(m->uperr[i].code, code)) break;
    if (i == m->nuperr && m->nuperr < (int)(sizeof m->uperr / sizeof m->uperr[0])) {
        snprintf(m->uperr[i].svc, sizeof m->uperr[i].svc, "%s", svc);
        snprintf(m->uperr[i].code, sizeof m->uperr[i].code, "%s", code);
        m->nuperr++;
    }
    if (i < m->nuperr) m->uperr[i].count++;
    pthread_mutex_unlock(&m->mu);
}

/* ------------------------------------------------------------- render */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} gw_out_t;

static void s_printf(gw_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(gw_out_t *o, const char *fmt, ...)
{
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *nb = realloc(o->buf, cap);
        if (!nb) {
            o->oom = true;
            return;
        }
        o->buf = nb;
        o->cap = cap;
    }
}

/* A label value: only [A-Za-z0-9_.:-] kept, anything else becomes '_'. */
static const char *s_label(const char *in, size_t n, char *out, size_t outlen)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen; i++) {
        char c = in[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        out[j++] = ok ? c : '_';
    }
    out[j] = 0;
    return out;
}

static int64_t s_int(const msgpack_object *map, const char *key, bool *ok)
{
    int64_t v = 0;
    const msgpack_object *o = bf_mp_get(map, key);
    *ok = o && bf_mp_int(o, &v);
    return v;
}

/* One call with a client of its own and a short timeout, so that a service
 * that is down costs a scrape at most 2 s. 0 with *rep filled (ok or not;
 * destroy it), -1 if there was no answer (nothing to destroy). */
static int s_scrape_call(gw_t *g, gw_svc_t *s, const char *method, bf_reply_t *rep)
{
    bf_client_t *c = bf_client_open(s->name, s->endpoint, g->timeout_ms < 2000 ? g->timeout_ms : 2000);
    if (!c) return -1;
    int rc = bf_client_call(c, method, NULL, 0, "gateway", rep);
    if (rc != 0) bf_reply_destroy(rep);
    bf_client_destroy(&c);
    return rc;
}

static void s_service_stats(gw_t *g, gw_out_t *o)
{
    s_printf(o, "# HELP bangfu_service_up 1 if the service answered sys.stats on this scrape\n"
                "# TYPE bangfu_service_up gauge\n");
    bf_reply_t reps[GW_MAX_SVC];
    bool have[GW_MAX_SVC] = {0};
    for (int i = 0; i < g->nsvc; i++) {
        bool answered = s_scrape_call(g, &g->svcs[i], "sys.stats", &reps[i]) == 0;
        have[i] = answered && reps[i].ok && reps[i].result->type == MSGPACK_OBJECT_MAP;
        if (answered && !have[i]) bf_reply_destroy(&reps[i]);
        s_printf(o, "bangfu_service_up{service=\"%s\"} %d\n", g->svcs[i].name, have[i] ? 1 : 0);
    }
    static const char *const fig[][3] = {
        {"calls", "bangfu_service_calls_total", "counter"},
        {"failures", "bangfu_service_failures_total", "counter"},
        {"bad_frames", "bangfu_service_bad_frames_total", "counter"},
        {"uptime_s", "bangfu_service_uptime_seconds", "gauge"},
    };
    for (size_t f = 0; f < sizeof fig / sizeof fig[0]; f++) {
        s_printf(o, "# HELP %s sys.stats %s of each service\n# TYPE %s %s\n", fig[f][1],
                 fig[f][0], fig[f][1], fig[f][2]);
        for (int i = 0; i < g->nsvc; i++) {
            if (!have[i]) continue;
            bool ok;
            int64_t v = s_int(reps[i].result, fig[f][0], &ok);
            if (ok) s_printf(o, "%s{service=\"%s\"} %lld\n", fig[f][1], g->svcs[i].name,
                             (long long)v);
        }
    }
    s_printf(o, "# HELP bangfu_service_method_calls_total sys.stats calls per method\n"
                "# TYPE bangfu_service_method_calls_total counter\n"
                "# HELP bangfu_service_method_failures_total sys.stats failures per method\n"
                "# TYPE bangfu_service_method_failures_total counter\n");
    for (int i = 0; i < g->nsvc; i++) {
        if (!have[i]) continue;
        const msgpack_object *ms = bf_mp_get(reps[i].result, "methods");
        if (!ms || ms->type != MSGPACK_OBJECT_MAP) continue;
        for (uint32_t k = 0; k < ms->via.map.size; k++) {
            const msgpack_object *key = &ms->via.map.ptr[k].key;
            if (key->type != MSGPACK_OBJECT_STR) continue;
            char name[128];
            s_label(key->via.str.ptr, key->via.str.size, name, sizeof name);
            bool ok1, ok2;
            int64_t calls = s_int(&ms->via.map.ptr[k].val, "calls", &ok1);
            int64_t fails = s_int(&ms->via.map.ptr[k].val, "failures", &ok2);
            if (ok1)
                s_printf(o, "bangfu_service_method_calls_total{service=\"%s\",method=\"%s\"} %lld\n",
                         g->svcs[i].name, name, (long long)calls);
            if (ok2)
                s_printf(o,
                         "bangfu_service_method_failures_total{service=\"%s\",method=\"%s\"} "
                         "%lld\n",
                         g->svcs[i].name, name, (long long)fails);
        }
    }
    for (int i = 0; i < g->nsvc; i++)
        if (have[i]) bf_reply_destroy(&reps[i]);
}

static void s_queue_stats(gw_t *g, gw_out_t *o)
{
    gw_svc_t *s = gw_svc_find(g, "notify");
    if (!s) return;
    bf_reply_t rep;
    bool answered = s_scrape_call(g, s, "queues.stats", &rep) == 0;
    if (!answered || !rep.ok) {
        if (answered) bf_reply_destroy(&rep);
        s_printf(o, "# HELP bangfu_notify_queues_up 1 if notify answered queues.stats\n"
                    "# TYPE bangfu_notify_queues_up gauge\nbangfu_notify_queues_up 0\n");
        return;
    }
    s_printf(o, "# HELP bangfu_notify_queues_up 1 if notify answered queues.stats\n"
                "# TYPE bangfu_notify_queues_up gauge\nbangfu_notify_queues_up 1\n");
    static const char *const fig[][3] = {
        {"length", "bangfu_notify_queue_length", "messages in the queue's stream (its depth)"},
        {"pending", "bangfu_notify_queue_pending", "read but not yet acknowledged"},
        {"lag", "bangfu_notify_queue_lag", "entries not yet read by the group"},
        {"oldest_age_ms", "bangfu_notify_queue_oldest_age_ms", "age of the oldest entry"},
        {"consumers", "bangfu_notify_queue_consumers", "readers of the queue"},
        {"delivered_1m", "bangfu_notify_queue_delivered_1m", "delivered in the last minute"},
        {"failed_1m", "bangfu_notify_queue_failed_1m", "failed in the last minute"},
        {"retry", "bangfu_notify_queue_retry", "deliveries waiting for a retry"},
        {"dead", "bangfu_notify_queue_dead", "dead-lettered deliveries"},
    };
    const msgpack_object *qs = bf_mp_get(rep.result, "queues");
    for (size_t f = 0; f < sizeof fig / sizeof fig[0]; f++) {
        s_printf(o, "# HELP %s %s\n# TYPE %s gauge\n", fig[f][1], fig[f][2], fig[f][1]);
        for (uint32_t i = 0; qs && qs->type == MSGPACK_OBJECT_ARRAY && i < qs->via.array.size;
             i++) {
            const msgpack_object *q = &qs->via.array.ptr[i];
            const msgpack_object *name = bf_mp_get(q, "name");
            if (!name || name->type != MSGPACK_OBJECT_STR) continue;
            char lname[64];
            s_label(name->via.str.ptr, name->via.str.size, lname, sizeof lname);
            bool ok;
            int64_t v = s_int(q, fig[f][0], &ok);
            if (ok) s_printf(o, "%s{queue=\"%s\"} %lld\n", fig[f][1], lname, (long long)v);
        }
    }
    s_printf(o, "# HELP bangfu_notify_queue_paused 1 if the queue is paused\n"
                "# TYPE bangfu_notify_queue_paused gauge\n");
    for (uint32_t i = 0; qs && qs->type == MSGPACK_OBJECT_ARRAY && i < qs->via.array.size; i++) {
        const msgpack_object *q = &qs->via.array.ptr[i];
        const msgpack_object *name = bf_mp_get(q, "name");
        const msgpack_object *p = bf_mp_get(q, "paused");
        if (!name || name->type != MSGPACK_OBJECT_STR || !p || p->type != MSGPACK_OBJECT_BOOLEAN)
            continue;
        char lname[64];
        s_printf(o, "bangfu_notify_queue_paused{queue=\"%s\"} %d\n",
                 s_label(name->via.str.ptr, name->via.str.size, lname, sizeof lname),
                 p->via.boolean ? 1 : 0);
    }
    bool ok;
    int64_t v = s_int(bf_mp_get(rep.result, "retry"), "size", &ok);
    if (ok)
        s_printf(o, "# HELP bangfu_notify_retry_size deliveries in the retry set\n"
                    "# TYPE bangfu_notify_retry_size gauge\nbangfu_notify_retry_size %lld\n",
                 (long long)v);
    v = s_int(bf_mp_get(rep.result, "dead"), "size", &ok);
    if (ok)
        s_printf(o, "# HELP bangfu_notify_dead_size entries in the dead-letter stream\n"
                    "# TYPE bangfu_notify_dead_size gauge\nbangfu_notify_dead_size %lld\n",
                 (long long)v);
    bf_reply_destroy(&rep);
}

char *gw_metrics_render(gw_t *g)
{
    gw_out_t o = {.buf = malloc(16384), .cap = 16384};
    if (!o.buf) return NULL;
    o.buf[0] = 0;
    gw_metrics_t *m = g->metrics;
    pthread_mutex_lock(&m->mu);
    s_printf(&o, "# HELP bangfu_gateway_requests_total HTTP requests by service, method and "
                 "status code\n# TYPE bangfu_gateway_requests_total counter\n");
    for (int i = 0; i < m->nseries; i++)
        s_printf(&o, "bangfu_gateway_requests_total{service=\"%s\",method=\"%s\",code=\"%d\"} %llu\n",
                 m->series[i].svc, m->series[i].method, m->series[i].status,
                 m->series[i].count);
    s_printf(&o, "# HELP bangfu_gateway_requests_unlabelled_total requests past the series "
                 "limit\n# TYPE bangfu_gateway_requests_unlabelled_total counter\n"
                 "bangfu_gateway_requests_unlabelled_total %llu\n",
             m->dropped);
    s_printf(&o, "# HELP bangfu_gateway_request_seconds HTTP request latency by service\n"
                 "# TYPE bangfu_gateway_request_seconds histogram\n");
    for (int i = 0; i < m->nhist; i++) {
        gw_hist_t *h = &m->hist[i];
        unsigned long long cum = 0;
        for (int b = 0; b < GW_NBUCKETS; b++) {
            cum += h->buckets[b];
            s_printf(&o, "bangfu_gateway_request_seconds_bucket{service=\"%s\",le=\"%g\"} %llu\n",
                     h->svc, s_bounds[b], cum);
        }
        s_printf(&o, "bangfu_gateway_request_seconds_bucket{service=\"%s\",le=\"+Inf\"} %llu\n",
                 h->svc, h->count);
        s_printf(&o, "bangfu_gateway_request_seconds_sum{service=\"%s\"} %.6f\n", h->svc, h->sum);
        s_printf(&o, "bangfu_gateway_request_seconds_count{service=\"%s\"} %llu\n", h->svc,
                 h->count);
    }
    s_printf(&o, "# HELP bangfu_gateway_upstream_errors_total calls a service did not answer "
                 "(unavailable) or failed (internal)\n"
                 "# TYPE bangfu_gateway_upstream_errors_total counter\n");
    for (int i = 0; i < m->nuperr; i++)
        s_printf(&o, "bangfu_gateway_upstream_errors_total{service=\"%s\",code=\"%s\"} %llu\n",
                 m->uperr[i].svc, m->uperr[i].code, m->uperr[i].count);
    pthread_mutex_unlock(&m->mu);
    s_service_stats(g, &o);
    s_queue_stats(g, &o);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}
