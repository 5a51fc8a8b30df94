/* ingest.c: from the event stream to deliveries.
 *
 * One thread reads bangfu:events through the consumer group (consumer name
 * <instance>:ingest, see notify.h), and for each event: finds the live subscriptions whose
 * type prefix and scope match, works out the recipients (the registry names
 * the responsible cadres of a household, a team's leader, a unit's contact;
 * tasks' escalation events name theirs in data.recipient), renders the
 * template, records each delivery in PostgreSQL (INSERT ... ON CONFLICT DO
 * NOTHING on a stable id, so an event seen twice is delivered once), queues
 * the new ones on their channel streams, and only then acknowledges the
 * event. A crash before the XACK leaves the event pending; it is reclaimed
 * after the visibility timeout (XAUTOCLAIM), and since it was seen before,
 * its deliveries still pending are queued again (duplicates in a stream are
 * harmless: a worker claims a delivery in PostgreSQL before sending). If the
 * registry cannot be reached the event is left pending and tried again.
 */
#include "notify.h"
#include "bf_login.h"
#include "bf_client.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PERSONS 64

typedef struct {
    notify_t *n;
    bf_db_t *db;
    bf_redis_t *rd;
    bf_client_t *registry;
    bf_client_t *tasks;
    char consumer[200];
} s_ingest_t;

/* What an event says about where it belongs. 0 = unknown. */
typedef struct {
    char region[16];
    int64_t village, unit, team, household;
    char recipient_kind[32];
    int64_t recipient_id;
    char owner_kind[32];
    int64_t owner_id;
    char subject_kind[32];
    int64_t subject_id;
    int64_t task_id;
    bool looked_up_village, looked_up_region;
    /* resolved persons (people subscriptions) */
    bool resolved;
    int npersons;
    char persons[MAX_PERSONS][48];
} s_facts_t;

typedef struct {
    int64_t sub_id, endpoint_id;
    char channel[16];
    char recipient[48];
    char *address; /* malloc'd or NULL */
    char locale[8];
} s_plan_t;

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* d_ + 32 hex of SHA-256(event id, subscription, recipient, channel). */
static void s_delivery_id(const char *event_id, int64_t sub_id, const char *recipient,
                          const char *channel, char out[NOTIFY_ID_LEN + 1])
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s\n%lld\n%s\n%s", event_id, (long long)sub_id, recipient,
                     channel);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1), md, &mdlen,
               EVP_sha256(), NULL);
    out[0] = 'd';
    out[1] = '_';
    for (int i = 0; i < 16; i++) snprintf(out + 2 + i * 2, 3, "%02x", md[i]);
    out[NOTIFY_ID_LEN] = '\0';
}

static bool s_int(const msgpack_object *o, int64_t *out)
{
    int64_t v;
    if (!o || !bf_mp_int(o, &v) || v <= 0) return false;
    *out = v;
    return true;
}

static void s_copy_str(const msgpack_object *o, char *dst, size_t n)
{
    dst[0] = '\0';
    if (o && o->type == MSGPACK_OBJECT_STR && o->via.str.size < n) {
        memcpy(dst, o->via.str.ptr, o->via.str.size);
        dst[o->via.str.size] = '\0';
    }
}

/* {kind, id} or kind_key/id_key pairs. */
static void s_kind_id(const msgpack_object *data, const char *name, char *kind, size_t kn,
                      int64_t *id)
{
    const msgpack_object *m = bf_mp_get(data, name);
    if (m && m->type == MSGPACK_OBJECT_MAP) {
        s_copy_str(bf_mp_get(m, "kind"), kind, kn);
        if (!s_int(bf_mp_get(m, "id"), id)) kind[0] = '\0';
        return;
    }
    char k1[64], k2[64];
    snprintf(k1, sizeof k1, "%s_kind", name);
    snprintf(k2, sizeof k2, "%s_id", name);
    s_copy_str(bf_mp_get(data, k1), kind, kn);
    if (!kind[0] || !s_int(bf_mp_get(data, k2), id)) {
        kind[0] = '\0';
        *id = 0;
    }
}

static void s_facts(const msgpack_object *ev, s_facts_t *f)
{
    memset(f, 0, sizeof *f);
    const msgpack_object *data = bf_mp_get(ev, "data");
    if (data && data->type == MSGPACK_OBJECT_MAP) {
        s_copy_str(bf_mp_get(data, "region_code"), f->region, sizeof f->region);
        s_int(bf_mp_get(data, "village_id"), &f->village);
        s_int(bf_mp_get(data, "unit_id"), &f->unit);
        s_int(bf_mp_get(data, "team_id"), &f->team);
        s_int(bf_mp_get(data, "household_id"), &f->household);
        s_int(bf_mp_get(data, "task_id"), &f->task_id);
        s_kind_id(data, "recipient", f->recipient_kind, sizeof f->recipient_kind,
                  &f->recipient_id);
        s_kind_id(data, "owner", f->owner_kind, sizeof f->owner_kind, &f->owner_id);
        char tk[32];
        int64_t tid = 0;
        s_kind_id(data, "target", tk, sizeof tk, &tid);
        if (!strcmp(tk, "household") && !f->household) f->household = tid;
        if (!strcmp(tk, "village") && !f->village) f->village = tid;
    }
    /* subject "village/12", "household/5", "task/9" */
    const msgpack_object *s = bf_mp_get(ev, "subject");
    char subj[96];
    s_copy_str(s, subj, sizeof subj);
    char *slash = strchr(subj, '/');
    if (slash && slash - subj < (long)sizeof f->subject_kind) {
        *slash = '\0';
        char *end;
        long long id = strtoll(slash + 1, &end, 10);
        if (*end == '\0' && id > 0) {
            snprintf(f->subject_kind, sizeof f->subject_kind, "%s", subj);
            f->subject_id = id;
            if (!strcmp(subj, "village") && !f->village) f->village = id;
            if (!strcmp(subj, "household") && !f->household) f->household = id;
            if (!strcmp(subj, "unit") && !f->unit) f->unit = id;
            if (!strcmp(subj, "team") && !f->team) f->team = id;
            if (!strcmp(subj, "task") && !f->task_id) f->task_id = id;
        }
    }
    if (!strcmp(f->owner_kind, "unit") && !f->unit) f->unit = f->owner_id;
    if (!strcmp(f->owner_kind, "team") && !f->team) f->team = f->owner_id;
}

/* Calls method {id} on a service. Returns 0 with *reply (destroy it), 1 if
 * the service answered with an error (not found, unknown method...), -1 if
 * it could not be reached. */
static int s_get(bf_client_t *c, const char *method, int64_t id, bf_reply_t *reply)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    bf_mp_kv_int(&pk, "id", id);
    int rc = bf_client_call(c, method, sb.data, sb.size, NULL, reply);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0) {
        bf_log(BF_WARN, "ingest: %s %lld: %s", method, (long long)id, reply->message);
        bf_reply_destroy(reply);
        return -1;
    }
    if (!reply->ok) {
        int transient = !strcmp(reply->code, BF_E_UNAVAILABLE);
        bf_log(transient ? BF_WARN : BF_INFO, "ingest: %s %lld: %s %s", method, (long long)id,
               reply->code, reply->message);
        bf_reply_destroy(reply);
        return transient ? -1 : 1;
    }
    return 0;
}

static void s_add_person(s_facts_t *f, const char *kind, int64_t id)
{
    if (id <= 0 || f->npersons >= MAX_PERSONS) return;
    char p[48];
    snprintf(p, sizeof p, "%s:%lld", kind, (long long)id);
    for (int i = 0; i < f->npersons; i++)
        if (!strcmp(f->persons[i], p)) return;
    snprintf(f->persons[f->npersons++], sizeof f->persons[0], "%s", p);
}

/* Cadre ids found in a registry result under any of the usual shapes. */
static void s_collect_cadres(s_facts_t *f, const msgpack_object *res, const char *const *keys)
{
    int64_t id;
    for (int k = 0; keys[k]; k++) {
        const msgpack_object *v = bf_mp_get(res, keys[k]);
        if (!v) continue;
        if (s_int(v, &id)) {
            s_add_person(f, "cadre", id);
        } else if (v->type == MSGPACK_OBJECT_MAP) {
            if (s_int(bf_mp_get(v, "id"), &id) || s_int(bf_mp_get(v, "cadre_id"), &id))
                s_add_person(f, "cadre", id);
        } else if (v->type == MSGPACK_OBJECT_ARRAY) {
            for (uint32_t i = 0; i < v->via.array.size && i < 256; i++) {
                const msgpack_object *e = &v->via.array.ptr[i];
                if (s_int(e, &id)) {
                    s_add_person(f, "cadre", id);
                } else if (e->type == MSGPACK_OBJECT_MAP) {
                    const msgpack_object *kind = bf_mp_get(e, "kind");
                    const msgpack_object *active = bf_mp_get(e, "active");
                    if (kind && kind->type == MSGPACK_OBJECT_STR &&
                        !bf_mp_str_eq(kind, "cadre_household"))
                        continue;
                    if (active && active->type == MSGPACK_OBJECT_BOOLEAN && !active->via.boolean)
                        continue;
                    if (s_int(bf_mp_get(e, "cadre_id"), &id) ||
                        s_int(bf_mp_get(e, "helper_id"), &id) || s_int(bf_mp_get(e, "id"), &id))
                        s_add_person(f, "cadre", id);
                }
            }
        }
    }
}

/* Adds the persons standing for (kind, id). Returns -1 if the registry is
 * unreachable. */
static int s_persons_of(s_ingest_t *in, s_facts_t *f, const char *kind, int64_t id)
{
    bf_reply_t rep;
    int rc;
    if (!strcmp(kind, "cadre") || !strcmp(kind, "person")) {
        s_add_person(f, kind, id);
        return 0;
    }
    if (!strcmp(kind, "team")) {
        static const char *const keys[] = {"leader_id", "leader", NULL};
        if ((rc = s_get(in->registry, "team.get", id, &rep)) != 0) return rc < 0 ? -1 : 0;
        s_collect_cadres(f, rep.result, keys);
        bf_reply_destroy(&rep);
        return 0;
    }
    if (!strcmp(kind, "unit")) {
        static const char *const keys[] = {"contact_cadre_id", "contact", NULL};
        if ((rc = s_get(in->registry, "unit.get", id, &rep)) != 0) return rc < 0 ? -1 : 0;
        s_collect_cadres(f, rep.result, keys);
        bf_reply_destroy(&rep);
        return 0;
    }
    if (!strcmp(kind, "household")) {
        static const char *const keys[] = {"responsible_cadre_ids", "responsible_cadre_id",
                                           "responsible_cadres", "responsible", "cadres",
                                           "pairings", NULL};
        if ((rc = s_get(in->registry, "household.get", id, &rep)) != 0) return rc < 0 ? -1 : 0;
        s_collect_cadres(f, rep.result, keys);
        bf_reply_destroy(&rep);
        return 0;
    }
    return 0; /* e.g. an organisation department: no person; endpoints serve it */
}

/* The persons an event concerns, resolved once per event. */
static int s_resolve(s_ingest_t *in, s_facts_t *f)
{
    if (f->resolved) return 0;
    int rc = 0;
    if (f->recipient_kind[0]) {
        rc = s_persons_of(in, f, f->recipient_kind, f->recipient_id);
    } else {
        if (!f->owner_kind[0] && f->task_id) {
            /* a task event without names: ask tasks who owns it */
            bf_reply_t rep;
            int g = s_get(in->tasks, "task.get", f->task_id, &rep);
            if (g < 0) return -1;
            if (g == 0) {
                const msgpack_object *res = rep.result;
                if (res && res->type == MSGPACK_OBJECT_MAP) {
                    s_kind_id(res, "owner", f->owner_kind, sizeof f->owner_kind, &f->owner_id);
                    char tk[32];
                    int64_t tid = 0;
                    s_kind_id(res, "target", tk, sizeof tk, &tid);
                    if (!strcmp(tk, "household") && !f->household) f->household = tid;
                }
                bf_reply_destroy(&rep);
            }
        }
        if (f->owner_kind[0]) rc = s_persons_of(in, f, f->owner_kind, f->owner_id);
        if (rc == 0 && f->npersons == 0 && f->household)
            rc = s_persons_of(in, f, "household", f->household);
        if (rc == 0 && f->npersons == 0 && f->team) rc = s_persons_of(in, f, "team", f->team);
        if (rc == 0 && f->npersons == 0 && f->unit) rc = s_persons_of(in, f, "unit", f->unit);
        if (rc == 0 && f->npersons == 0 && !strcmp(f->subject_kind, "cadre"))
            s_add_person(f, "cadre", f->subject_id);
    }
    if (rc == 0) f->resolved = true;
    return rc;
}

/* Fills the village (from the household) and the region (from the village)
 * when a region or village scope needs them. */
static int s_locate(s_ingest_t *in, s_facts_t *f, bool need_region)
{
    bf_reply_t rep;
    int rc;
    if (!f->village && f->household && !f->looked_up_village) {
        f->looked_up_village = true;
        if ((rc = s_get(in->registry, "household.get", f->household, &rep)) < 0) return -1;
        if (rc == 0) {
            s_int(bf_mp_get(rep.result, "village_id"), &f->village);
            bf_reply_destroy(&rep);
        }
    }
    if (need_region && !f->region[0] && f->village && !f->looked_up_region) {
        f->looked_up_region = true;
        if ((rc = s_get(in->registry, "village.get", f->village, &rep)) < 0) return -1;
        if (rc == 0) {
            s_copy_str(bf_mp_get(rep.result, "region_code"), f->region, sizeof f->region);
            bf_reply_destroy(&rep);
        }
    }
    return 0;
}

/* Whether a subscription's scope takes the event: 1 yes, 0 no, -1 registry
 * unreachable. For person scopes of people subscriptions the recipients are
 * filtered later instead. */
static int s_scope(s_ingest_t *in, s_facts_t *f, const char *kind, const char *value,
                   bool people)
{
    if (!kind || !strcmp(kind, "all")) return 1;
    if (!value) return 0;
    int64_t v = strtoll(value, NULL, 10);
    if (!strcmp(kind, "region")) {
        if (!f->region[0] && s_locate(in, f, true) < 0) return -1;
        return f->region[0] && !strncmp(f->region, value, strlen(value));
    }
    if (!strcmp(kind, "village")) {
        if (!f->village && s_locate(in, f, false) < 0) return -1;
        return f->village == v;
    }
    if (!strcmp(kind, "unit")) return f->unit == v;
    if (!strcmp(kind, "team")) return f->team == v;
    if (!strcmp(kind, "household")) return f->household == v;
    if (!strcmp(kind, "person")) {
        if (people) return 1;
        char p[48];
        if (!strcmp(f->recipient_kind, "cadre") || !strcmp(f->recipient_kind, "person")) {
            snprintf(p, sizeof p, "%s:%lld", f->recipient_kind, (long long)f->recipient_id);
            if (!strcmp(p, value)) return 1;
        }
        if (!strcmp(f->owner_kind, "cadre")) {
            snprintf(p, sizeof p, "cadre:%lld", (long long)f->owner_id);
            if (!strcmp(p, value)) return 1;
        }
        if (f->subject_kind[0]) {
            snprintf(p, sizeof p, "%s:%lld", f->subject_kind, (long long)f->subject_id);
            if (!strcmp(p, value)) return 1;
        }
        return 0;
    }
    return 0;
}

/* The phone of a cadre for SMS, or NULL (malloc'd). -1 in *rc if the
 * registry is unreachable. */
static char *s_phone(s_ingest_t *in, const char *person, int *rc)
{
    *rc = 0;
    if (strncmp(person, "cadre:", 6) != 0) return NULL;
    bf_reply_t rep;
    int g = s_get(in->registry, "cadre.get", strtoll(person + 6, NULL, 10), &rep);
    if (g < 0) {
        *rc = -1;
        return NULL;
    }
    if (g > 0) return NULL;
    char phone[40];
    s_copy_str(bf_mp_get(rep.result, "phone"), phone, sizeof phone);
    bf_reply_destroy(&rep);
    if (!phone[0] || strchr(phone, '*')) return NULL; /* none, or masked */
    return strdup(phone);
}

/* Parses a text[] literal of simple words ({inbox,sms}). */
static bool s_has_channel(const char *lit, const char *ch)
{
    if (!lit) return false;
    size_t n = strlen(ch);
    for (const char *p = lit; (p = strstr(p, ch)) != NULL; p += n) {
        char before = p == lit ? '{' : p[-1], after = p[n];
        if ((before == '{' || before == ',') && (after == '}' || after == ',')) return true;
    }
    return false;
}

static void s_free_plans(s_plan_t *plans, int n)
{
    for (int i = 0; i < n; i++) free(plans[i].address);
    free(plans);
}

/* Plans the deliveries of one event. Returns the number (>= 0) with
 * *out malloc'd, or -1 (transient: leave the event pending). */
static int s_plan(s_ingest_t *in, const char *type, const msgpack_object *ev, s_plan_t **out)
{
    *out = NULL;
    const char *p[] = {type};
    PGresult *res = bf_db_prep(in->db, "notify_ingest_subs",
                               "SELECT s.id, s.scope_kind, s.scope_value, s.target, s.endpoint_id, "
                               "s.channels, s.locale, e.channel AS ep_channel, e.address "
                               "FROM subscription s LEFT JOIN endpoint e ON e.id = s.endpoint_id "
                               "WHERE s.deleted_at IS NULL AND s.active "
                               "AND starts_with($1, s.type_prefix) ORDER BY s.id",
                               1, p, NULL, NULL);
    if (!res) {
        bf_log(BF_WARN, "ingest: reading subscriptions failed: %s", bf_db_errmsg(in->db));
        return -1;
    }
    int rows = PQntuples(res);
    if (rows == 0) {
        PQclear(res);
        return 0;
    }
    s_facts_t *f = malloc(sizeof *f);
    int cap = in->n->max_fanout;
    s_plan_t *plans = calloc((size_t)cap, sizeof *plans);
    int np = 0, rc = 0;
    if (!f || !plans) {
        free(f);
        free(plans);
        PQclear(res);
        return -1;
    }
    s_facts(ev, f);
    for (int i = 0; i < rows && rc == 0; i++) {
        const char *kind = bf_db_str(res, i, "scope_kind");
        const char *value = bf_db_str(res, i, "scope_value");
        bool people = !strcmp(bf_db_str(res, i, "target"), "people");
        int m = s_scope(in, f, kind, value, people);
        if (m < 0) {
            rc = -1;
            break;
        }
        if (!m) continue;
        int64_t sub_id = bf_db_int(res, i, "id");
        const char *locale = bf_db_str(res, i, "locale");
        if (!people) {
            if (np >= cap) break;
            s_plan_t *pl = &plans[np++];
            pl->sub_id = sub_id;
            pl->endpoint_id = bf_db_int(res, i, "endpoint_id");
            snprintf(pl->channel, sizeof pl->channel, "%s", bf_db_str(res, i, "ep_channel"));
            snprintf(pl->recipient, sizeof pl->recipient, "endpoint:%lld",
                     (long long)pl->endpoint_id);
            const char *addr = bf_db_str(res, i, "address");
            pl->address = addr ? strdup(addr) : NULL;
            snprintf(pl->locale, sizeof pl->locale, "%s", locale);
            continue;
        }
        if (s_resolve(in, f) < 0) {
            rc = -1;
            break;
        }
        const char *channels = bf_db_str(res, i, "channels");
        for (int k = 0; k < f->npersons && rc == 0; k++) {
            if (!strcmp(kind, "person") && value && strcmp(value, f->persons[k]) != 0) continue;
            for (int c = 0; c < 2; c++) {
                const char *ch = c == 0 ? "inbox" : "sms";
                if (!s_has_channel(channels, ch)) continue;
                char *addr = NULL;
                if (c == 1) {
                    int prc;
                    addr = s_phone(in, f->persons[k], &prc);
                    if (prc < 0) {
                        rc = -1;
                        break;
                    }
                    if (!addr) {
                        bf_log(BF_INFO, "ingest: %s has no phone number; no SMS", f->persons[k]);
                        continue;
                    }
                }
                if (np >= cap) {
                    free(addr);
                    break;
                }
                s_plan_t *pl = &plans[np++];
                pl->sub_id = sub_id;
                snprintf(pl->channel, sizeof pl->channel, "%s", ch);
                snprintf(pl->recipient, sizeof pl->recipient, "%s", f->persons[k]);
                pl->address = addr;
                snprintf(pl->locale, sizeof pl->locale, "%s", locale);
            }
        }
    }
    if (np >= cap) bf_log(BF_WARN, "ingest: an event of type %s reached notify.max_fanout", type);
    PQclear(res);
    free(f);
    if (rc < 0) {
        s_free_plans(plans, np);
        return -1;
    }
    *out = plans;
    return np;
}

typedef struct {
    const char *ids[NOTIFY_NCHANNELS][64];
    char store[NOTIFY_NCHANNELS][64][NOTIFY_ID_LEN + 1];
    int n[NOTIFY_NCHANNELS];
} s_pushes_t;

static int s_channel_index(const char *ch)
{
    for (int i = 0; notify_channels[i]; i++)
        if (!strcmp(notify_channels[i], ch)) return i;
    return -1;
}

static int s_flush(s_ingest_t *in, s_pushes_t *ps, int c)
{
    if (ps->n[c] == 0) return 0;
    int rc = notify_queue_push(in->rd, notify_channels[c], ps->ids[c], ps->n[c]);
    ps->n[c] = 0;
    return rc;
}

static int s_push(s_ingest_t *in, s_pushes_t *ps, const char *channel, const char *id)
{
    int c = s_channel_index(channel);
    if (c < 0) return 0;
    if (ps->n[c] == 64 && s_flush(in, ps, c) != 0) return -1;
    snprintf(ps->store[c][ps->n[c]], NOTIFY_ID_LEN + 1, "%s", id);
    ps->ids[c][ps->n[c]] = ps->store[c][ps->n[c]];
    ps->n[c]++;
    return 0;
}

/* Records and queues the deliveries of one event. Returns 0 (done: ack it),
 * -1 (transient: leave it pending). */
static int s_event(s_ingest_t *in, const char *stream_id, const char *payload, size_t len,
                   bool seen_before)
{
    if (bf_mp_check(payload, len, BF_MP_MAX_DEPTH) != 0) {
        bf_log(BF_WARN, "ingest: event %s is not well-formed msgpack; skipped", stream_id);
        return 0;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, payload, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        bf_log(BF_WARN, "ingest: event %s is not a map; skipped", stream_id);
        return 0;
    }
    const msgpack_object *ev = &u.data;
    char id[80], type[240];
    s_copy_str(bf_mp_get(ev, "id"), id, sizeof id);
    s_copy_str(bf_mp_get(ev, "type"), type, sizeof type);
    if (!id[0] || !type[0]) {
        msgpack_unpacked_destroy(&u);
        bf_log(BF_WARN, "ingest: event %s has no id or type; skipped", stream_id);
        return 0;
    }
    s_plan_t *plans = NULL;
    int np = s_plan(in, type, ev, &plans);
    if (np <= 0) {
        msgpack_unpacked_destroy(&u);
        free(plans);
        return np;
    }
    s_pushes_t *ps = calloc(1, sizeof *ps);
    char *subj[2] = {NULL, NULL}, *body[2] = {NULL, NULL};
    int rc = -1;
    if (!ps || bf_db_begin(in->db) != 0) goto done;
    const char *ep[] = {id, type, payload, stream_id};
    int lens[] = {0, 0, (int)len, 0};
    int fmts[] = {0, 0, 1, 0};
    PGresult *res = bf_db_prep(in->db, "notify_ingest_event",
                               "INSERT INTO event (id, type, payload, stream_id) "
                               "VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                               4, ep, lens, fmts);
    if (!res) goto fail;
    PQclear(res);
    for (int i = 0; i < np; i++) {
        s_plan_t *pl = &plans[i];
        char did[NOTIFY_ID_LEN + 1];
        s_delivery_id(id, pl->sub_id, pl->recipient, pl->channel, did);
        const char *s = NULL, *b = NULL;
        if (strcmp(pl->channel, "webhook") != 0) {
            int li = !strcmp(pl->locale, "en") ? 1 : 0;
            if (!subj[li] && notify_render(in->db, type, pl->locale, ev, &subj[li], &body[li]) != 0)
                goto fail;
            s = subj[li];
            b = body[li];
        }
        char sub[24], epid[24];
        snprintf(sub, sizeof sub, "%lld", (long long)pl->sub_id);
        snprintf(epid, sizeof epid, "%lld", (long long)pl->endpoint_id);
        const char *dp[] = {did, id, type, sub, pl->endpoint_id ? epid : NULL, pl->channel,
                            pl->recipient, pl->address, s, b};
        res = bf_db_prep(in->db, "notify_ingest_delivery",
                         "INSERT INTO delivery (id, event_id, event_type, subscription_id, "
                         "endpoint_id, channel, recipient, address, subject, body) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                         "ON CONFLICT (id) DO NOTHING RETURNING id",
                         10, dp, NULL, NULL);
        if (!res) goto fail;
        int inserted = PQntuples(res) == 1;
        PQclear(res);
        if (!inserted && seen_before) {
            /* seen before: its delivery may never have reached Redis */
            const char *sp[] = {did};
            res = bf_db_prep(in->db, "notify_ingest_state",
                             "SELECT state FROM delivery WHERE id = $1", 1, sp, NULL, NULL);
            if (!res) goto fail;
            inserted = PQntuples(res) == 1 && !strcmp(bf_db_str(res, 0, "state"), "pending");
            PQclear(res);
        }
        if (inserted && s_push(in, ps, pl->channel, did) != 0) goto fail;
    }
    if (bf_db_commit(in->db) != 0) goto fail;
    rc = 0;
    for (int c = 0; c < NOTIFY_NCHANNELS; c++)
        if (s_flush(in, ps, c) != 0) rc = -1; /* re-driven from PostgreSQL later */
    if (rc != 0) bf_log(BF_WARN, "ingest: queueing failed: %s", bf_redis_errmsg(in->rd));
    rc = 0; /* the deliveries are recorded; the re-drive queues what Redis missed */
    goto done;
fail:
    bf_log(BF_WARN, "ingest: recording deliveries of %s failed: %s", id, bf_db_errmsg(in->db));
    bf_db_rollback(in->db);
    rc = -1;
done:
    for (int i = 0; i < 2; i++) {
        free(subj[i]);
        free(body[i]);
    }
    free(ps);
    s_free_plans(plans, np);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* Processes the entries array of a stream reply ([id, [field, value...]]),
 * acknowledging each one done. Returns the number processed. */
static int s_entries(s_ingest_t *in, const redisReply *entries, bool seen_before)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY) return 0;
    notify_t *n = in->n;
    int done = 0, failed = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !e->element[0] ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len > 40)
            continue;
        const char *sid = e->element[0]->str;
        const redisReply *fields = e->element[1];
        const redisReply *payload = NULL;
        if (fields && fields->type == REDIS_REPLY_ARRAY) {
            for (size_t k = 0; k + 1 < fields->elements; k += 2) {
                const redisReply *key = fields->element[k];
                if (key && key->type == REDIS_REPLY_STRING && key->len == 5 &&
                    !memcmp(key->str, "event", 5) && fields->element[k + 1] &&
                    fields->element[k + 1]->type == REDIS_REPLY_STRING)
                    payload = fields->element[k + 1];
            }
        }
        int rc = 0;
        if (!payload) bf_log(BF_WARN, "ingest: stream entry %s has no event field", sid);
        else rc = s_event(in, sid, payload->str, payload->len, seen_before);
        if (rc != 0) {
            failed++;
            continue; /* left pending: reclaimed after the visibility timeout */
        }
        const char *ack[] = {"XACK", n->events_stream, n->group, sid};
        redisReply *r = bf_redis_cmd(in->rd, 4, ack, NULL);
        if (r) freeReplyObject(r);
        done++;
        atomic_fetch_add(&n->events_seen, 1);
    }
    notify_stat_count(n, in->rd, "events", true, done);
    notify_stat_count(n, in->rd, "events", false, failed);
    return done + failed;
}

/* Reclaims events left pending longer than the visibility timeout by a
 * consumer that died (or by this one, after a transient failure). */
static void s_autoclaim(s_ingest_t *in)
{
    notify_t *n = in->n;
    char cursor[64] = "0-0", idle[24], count[16];
    snprintf(idle, sizeof idle, "%lld", n->visibility_ms);
    snprintf(count, sizeof count, "%d", n->batch);
    for (int round = 0; round < 100 && !notify_stopping(n); round++) {
        const char *argv[] = {"XAUTOCLAIM", n->events_stream, n->group, in->consumer, idle,
                              cursor, "COUNT", count};
        redisReply *rep = bf_redis_cmd(in->rd, 8, argv, NULL);
        if (!rep) return;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 || !rep->element[0] ||
            rep->element[0]->type != REDIS_REPLY_STRING || rep->element[0]->len >= sizeof cursor) {
            if (rep->type == REDIS_REPLY_ERROR) bf_log(BF_WARN, "ingest: XAUTOCLAIM: %s", rep->str);
            freeReplyObject(rep);
            return;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        int got = s_entries(in, rep->element[1], true);
        if (got) bf_log(BF_INFO, "ingest: reclaimed %d stalled events", got);
        freeReplyObject(rep);
        if (!strcmp(cursor, "0-0")) return;
    }
}

void *notify_ingest_main(void *arg)
{
    notify_t *n = arg;
    s_ingest_t in = {.n = n};
    char err[256];
    snprintf(in.consumer, sizeof in.consumer, "%s:ingest", n->instance);
    in.db = bf_login_db(n->cfg, NOTIFY_SERVICE, NOTIFY_SERVICE);
    in.rd = bf_login_redis(n->cfg, NOTIFY_SERVICE, err, sizeof err);
    in.registry = bf_client_open("registry", n->registry_rpc, n->rpc_timeout_ms);
    in.tasks = bf_client_open("tasks", n->tasks_rpc, n->rpc_timeout_ms);
    if (!in.db || !in.rd || !in.registry || !in.tasks) {
        bf_log(BF_ERROR, "ingest: cannot start (bad registry/tasks address or out of memory)");
        goto out;
    }
    char count[16];
    snprintf(count, sizeof count, "%d", n->batch);
    int64_t last_claim = 0;
    long backoff = 100;
    while (!notify_stopping(n)) {
        if (bf_db_ensure(in.db) != 0 && bf_db_connect(in.db, 1) != 0) {
            s_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        if (notify_queue_paused(in.rd, in.db, "events")) {
            s_sleep_ms(200);
            continue;
        }
        if (notify_wall_ms() - last_claim > n->visibility_ms / 2) {
            s_autoclaim(&in);
            last_claim = notify_wall_ms();
        }
        const char *argv[] = {"XREADGROUP", "GROUP", n->group, in.consumer, "COUNT", count,
                              "BLOCK", "500", "STREAMS", n->events_stream, ">"};
        redisReply *rep = bf_redis_cmd(in.rd, 11, argv, NULL);
        if (!rep) {
            s_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            continue;
        }
        backoff = 100;
        if (rep->type == REDIS_REPLY_ERROR) {
            bf_log(BF_WARN, "ingest: XREADGROUP: %s", rep->str);
            /* the group is gone (Redis lost data, or an admin removed it):
             * re-create it from the start of what the stream holds now, so
             * events the relays send again are read (ids de-duplicate) */
            if (strstr(rep->str, "NOGROUP")) notify_queue_init_from(n, in.rd, "0");
            freeReplyObject(rep);
            s_sleep_ms(500);
            continue;
        }
        if (rep->type == REDIS_REPLY_ARRAY) {
            for (size_t s = 0; s < rep->elements; s++) {
                const redisReply *st = rep->element[s];
                if (st && st->type == REDIS_REPLY_ARRAY && st->elements == 2)
                    s_entries(&in, st->element[1], false);
            }
        }
        freeReplyObject(rep);
    }
out:
    bf_client_destroy(&in.registry);
    bf_client_destroy(&in.tasks);
    bf_db_destroy(&in.db);
    bf_redis_destroy(&in.rd);
    return NULL;
}
