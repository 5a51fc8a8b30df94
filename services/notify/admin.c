/* admin.c: subscriptions, endpoints, the inbox and delivery look-ups.
 *
 * Every change an admin makes is a row in admin_action and an event
 * bangfu.notify.<entity>.<verb> in the same transaction (notify_admin_record).
 * Webhook secrets are returned only by endpoint.create and
 * endpoint.rotate_secret, never listed and never put in events.
 */
#include "notify.h"
#include "bf_log.h"
#include "bf_mp.h"
#include "bf_valid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const char *const s_scope_kinds[] = {"all", "region", "village", "unit", "team",
                                            "household", "person", NULL};
static const char *const s_locales[] = {"zh-CN", "en", NULL};


/* "cadre:42", "person:7": what inbox and person scopes name. */
static bool s_person_ok(const char *p)
{
    const char *colon = strchr(p, ':');
    if (!colon || colon == p || colon - p > 32 || !colon[1] || strlen(colon + 1) > 20) return false;
    for (const char *c = p; c < colon; c++)
        if (!islower((unsigned char)*c) && *c != '_') return false;
    for (const char *c = colon + 1; *c; c++)
        if (!isdigit((unsigned char)*c)) return false;
    return true;
}

static bool s_type_prefix_ok(const char *s)
{
    if (!*s) return false;
    for (const char *c = s; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '_' || *c == '-' || *c == '*'))
            return false;
    return true;
}

/* Reads and checks {kind, value}; value is normalised to text. */
static int s_scope(bf_req_t *r, const char **kind, const char **value)
{
    const msgpack_object *scope = NULL;
    *kind = "all";
    *value = NULL;
    if (bf_req_map(r, r->params, NULL, "scope", false, &scope) < 0) return -1;
    if (!scope) return 0;
    if (bf_req_enum(r, scope, "scope", "kind", true, s_scope_kinds, kind) != 0) return -1;
    if (!strcmp(*kind, "all")) return 0;
    const msgpack_object *v = bf_mp_get(scope, "value");
    int64_t iv;
    if (v && bf_mp_int(v, &iv)) {
        if (iv <= 0) return bf_req_fail(r, BF_E_INVALID, "scope.value", "scope.value must be positive");
        *value = bf_req_itoa(r, iv);
    } else if (bf_req_str(r, scope, "scope", "value", true, 64, value) != 0) {
        return -1;
    }
    const char *s = *value;
    if (!strcmp(*kind, "region")) {
        size_t n = strlen(s);
        bool digits = n >= 2 && n <= 12;
        for (size_t i = 0; i < n && digits; i++) digits = isdigit((unsigned char)s[i]);
        if (!digits)
            return bf_req_fail(r, BF_E_INVALID, "scope.value",
                               "a region scope is 2-12 digits of a division code (a prefix)");
        /* a full 12-digit code stands for everything under it */
        if (n == 12 && bf_division_check(s, 12) == 0) {
            char *t = bf_arena_strndup(r->arena, s, 12);
            size_t len = 12;
            while (len > 2 && t[len - 1] == '0') len--;
            static const size_t cuts[] = {2, 4, 6, 9, 12};
            for (size_t i = 0; i < 5; i++)
                if (cuts[i] >= len) {
                    len = cuts[i];
                    break;
                }
            t[len] = '\0';
            *value = t;
        }
    } else if (!strcmp(*kind, "person")) {
        if (!s_person_ok(s))
            return bf_req_fail(r, BF_E_INVALID, "scope.value",
                               "a person scope looks like cadre:42");
    } else {
        char *end;
        long long id = strtoll(s, &end, 10);
        if (*end || id <= 0)
            return bf_req_fail(r, BF_E_INVALID, "scope.value", "scope.value must be an id");
    }
    return 0;
}

/* channels for people subscriptions: inbox and sms. */
static const char *s_channels(bf_req_t *r, const msgpack_object_array *list)
{
    if (!list || list->size == 0)
        return bf_req_fail(r, BF_E_INVALID, "channels", "channels must name inbox and/or sms"),
               NULL;
    bool inbox = false, sms = false;
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *o = &list->ptr[i];
        if (bf_mp_str_eq(o, "inbox")) inbox = true;
        else if (bf_mp_str_eq(o, "sms")) sms = true;
        else if (bf_mp_str_eq(o, "email"))
            return bf_req_fail(r, BF_E_INVALID, "channels",
                               "the registry holds no email addresses: send email through an "
                               "email endpoint (endpoint.create channel email)"),
                   NULL;
        else
            return bf_req_fail(r, BF_E_INVALID, "channels", "channels are inbox and sms"), NULL;
    }
    return inbox && sms ? "{inbox,sms}" : inbox ? "{inbox}" : "{sms}";
}

static void s_pack_sub(msgpack_packer *pk, const PGresult *res, int i)
{
    msgpack_pack_map(pk, 11);
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, i, "name"));
    bf_mp_kv_str(pk, "type_prefix", bf_db_str(res, i, "type_prefix"));
    bf_mp_key(pk, "scope");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "kind", bf_db_str(res, i, "scope_kind"));
    bf_mp_kv_str(pk, "value", bf_db_str(res, i, "scope_value"));
    bf_mp_kv_str(pk, "target", bf_db_str(res, i, "target"));
    if (bf_db_null(res, i, "endpoint_id")) bf_mp_kv_nil(pk, "endpoint_id");
    else bf_mp_kv_int(pk, "endpoint_id", bf_db_int(res, i, "endpoint_id"));
    bf_mp_key(pk, "channels");
    const char *ch = bf_db_str(res, i, "channels");
    bool inbox = ch && strstr(ch, "inbox"), sms = ch && strstr(ch, "sms");
    msgpack_pack_array(pk, (size_t)inbox + (size_t)sms);
    if (inbox) bf_mp_str(pk, "inbox");
    if (sms) bf_mp_str(pk, "sms");
    bf_mp_kv_str(pk, "locale", bf_db_str(res, i, "locale"));
    bf_mp_kv_bool(pk, "active", bf_db_bool(res, i, "active"));
    bf_mp_kv_bool(pk, "deleted", !bf_db_null(res, i, "deleted_at"));
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, i, "created_at"));
}

#define SUB_COLS                                                                              \
    "id, name, type_prefix, scope_kind, scope_value, target, endpoint_id, channels, locale, " \
    "active, deleted_at, " TS("created_at") " AS created_at"

static int s_sub_event(bf_req_t *r, int64_t id, const char *verb)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_sub_get", "SELECT " SUB_COLS
                               " FROM subscription WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no subscription with id %lld", (long long)id);
    }
    bf_event_t ev;
    s_pack_sub(bf_event_begin(&ev), res, 0);
    PQclear(res);
    char what[64], subject[48];
    snprintf(what, sizeof what, "subscription.%s", verb);
    snprintf(subject, sizeof subject, "subscription/%lld", (long long)id);
    return notify_admin_record(r, &ev, what, subject);
}

int subscription_create(bf_req_t *r)
{
    const char *name, *prefix, *kind, *value, *locale = "zh-CN", *channels = NULL;
    int64_t endpoint_id = 0;
    const msgpack_object_array *chl = NULL;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_str(r, r->params, NULL, "type_prefix", true, 200, &prefix) != 0) return -1;
    if (!s_type_prefix_ok(prefix))
        return bf_req_fail(r, BF_E_INVALID, "type_prefix",
                           "type_prefix is an event type or its start, e.g. bangfu.tasks.");
    if (s_scope(r, &kind, &value) != 0) return -1;
    if (bf_req_int(r, r->params, NULL, "endpoint_id", false, 1, INT64_MAX, &endpoint_id) < 0)
        return -1;
    if (bf_req_list(r, r->params, NULL, "channels", false, 3, &chl) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "locale", false, s_locales, &locale) < 0) return -1;
    if ((endpoint_id != 0) == (chl != NULL))
        return bf_req_fail(r, BF_E_INVALID, endpoint_id ? "channels" : "endpoint_id",
                           "give either endpoint_id (a system) or channels (the people concerned)");
    if (chl && !(channels = s_channels(r, chl))) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    if (endpoint_id) {
        const char *ep[] = {bf_req_itoa(r, endpoint_id)};
        PGresult *res = bf_db_prep(r->db, "notify_ep_exists", "SELECT 1 FROM endpoint WHERE id = $1",
                                   1, ep, NULL, NULL);
        if (!res) return bf_req_db_fail(r);
        int found = PQntuples(res);
        PQclear(res);
        if (!found) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_NOT_FOUND, "endpoint_id", "no endpoint with id %lld",
                               (long long)endpoint_id);
        }
    }
    const char *p[] = {name, prefix, kind, value, endpoint_id ? "endpoint" : "people",
                       endpoint_id ? bf_req_itoa(r, endpoint_id) : NULL, channels ? channels : "{}",
                       locale, r->actor};
    PGresult *res = bf_db_prep(r->db, "notify_sub_create",
                               "INSERT INTO subscription (name, type_prefix, scope_kind, "
                               "scope_value, target, endpoint_id, channels, locale, created_by) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7::text[], $8, $9) RETURNING id",
                               9, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    if (s_sub_event(r, id, "created") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_int(r->out, "id", id);
    return 0;
}

int subscription_list(bf_req_t *r)
{
    int64_t ep = 0;
    bool deleted = false;
    if (bf_req_int(r, r->params, NULL, "endpoint_id", false, 1, INT64_MAX, &ep) < 0) return -1;
    if (bf_req_bool(r, r->params, NULL, "include_deleted", false, &deleted) < 0) return -1;
    const char *p[] = {ep ? bf_req_itoa(r, ep) : NULL, deleted ? "1" : "0"};
    PGresult *res = bf_db_prep(r->db, "notify_sub_list",
                               "SELECT " SUB_COLS " FROM subscription "
                               "WHERE ($1::bigint IS NULL OR endpoint_id = $1) "
                               "AND ($2 = '1' OR deleted_at IS NULL) ORDER BY id LIMIT 10000",
                               2, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    msgpack_pack_map(r->out, 1);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)rows);
    for (int i = 0; i < rows; i++) s_pack_sub(r->out, res, i);
    PQclear(res);
    return 0;
}

int subscription_update(bf_req_t *r)
{
    int64_t id;
    const char *name = NULL, *prefix = NULL, *kind = NULL, *value = NULL, *locale = NULL,
               *channels = NULL;
    const msgpack_object_array *chl = NULL;
    bool active = true, has_active = false;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "name", false, 200, &name) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "type_prefix", false, 200, &prefix) < 0) return -1;
    if (prefix && !s_type_prefix_ok(prefix))
        return bf_req_fail(r, BF_E_INVALID, "type_prefix", "bad type_prefix");
    if (bf_mp_get(r->params, "scope") && s_scope(r, &kind, &value) != 0) return -1;
    if (bf_req_list(r, r->params, NULL, "channels", false, 3, &chl) < 0) return -1;
    if (chl && !(channels = s_channels(r, chl))) return -1;
    if (bf_req_enum(r, r->params, NULL, "locale", false, s_locales, &locale) < 0) return -1;
    int rc = bf_req_bool(r, r->params, NULL, "active", false, &active);
    if (rc < 0) return -1;
    has_active = rc == 0;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id), name, prefix, kind, kind ? "1" : "0", value, channels,
                       locale, has_active ? (active ? "t" : "f") : NULL};
    PGresult *res = bf_db_prep(
        r->db, "notify_sub_update",
        "UPDATE subscription SET name = COALESCE($2, name), "
        "type_prefix = COALESCE($3, type_prefix), scope_kind = COALESCE($4, scope_kind), "
        "scope_value = CASE WHEN $5 = '1' THEN $6 ELSE scope_value END, "
        "channels = CASE WHEN $7::text IS NOT NULL AND target = 'people' THEN $7::text[] "
        "ELSE channels END, locale = COALESCE($8, locale), "
        "active = COALESCE($9::boolean, active), updated_at = now() "
        "WHERE id = $1 AND deleted_at IS NULL RETURNING target",
        9, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res);
    bool people = found && !strcmp(bf_db_str(res, 0, "target"), "people");
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no subscription with id %lld", (long long)id);
    }
    if (channels && !people) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_INVALID, "channels",
                           "channels belong to people subscriptions, not endpoint ones");
    }
    if (s_sub_event(r, id, "updated") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_int(r->out, "id", id);
    return 0;
}

int subscription_delete(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_sub_delete",
                               "UPDATE subscription SET deleted_at = now(), active = false, "
                               "updated_at = now() WHERE id = $1 AND deleted_at IS NULL "
                               "RETURNING id",
                               1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res);
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no subscription with id %lld", (long long)id);
    }
    if (s_sub_event(r, id, "deleted") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_bool(r->out, "deleted", true);
    return 0;
}

/* ------------------------------------------------------------ endpoints */

static const char *const s_ep_channels[] = {"webhook", "email", "sms", NULL};

/* A webhook URL: http(s), a host, no user info, no control characters.
 * Where it may connect is checked at send time (netguard.c). */
static int s_url(bf_req_t *r, const char *u)
{
    const char *why = NULL;
    for (const char *c = u; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return bf_req_fail(r, BF_E_INVALID, "url", "url must not contain spaces or controls");
    if (notify_url_check(u, &why) != 0) return bf_req_fail(r, BF_E_INVALID, "url", "%s", why);
    return 0;
}

static bool s_email_ok(const char *a)
{
    const char *at = strchr(a, '@');
    if (!at || at == a || !at[1] || strchr(at + 1, '@') || !strchr(at + 1, '.')) return false;
    for (const char *c = a; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == '<' || *c == '>' || *c == ',' || *c == ';' ||
            *c == '"' || *c == '\\' || *c == 0x7f)
            return false;
    return true;
}

static bool s_secret_ok(const char *s)
{
    if (strncmp(s, "whsec_", 6) != 0) return false;
    char sig[256] = "";
    /* it must decode to a key: try signing with it */
    return notify_webhook_sign(s, "msg_check", 0, "", 0, sig, sizeof sig) == 0 &&
           strlen(s + 6) >= 24;
}

static int s_address(bf_req_t *r, const char *channel, const char *address)
{
    if (!strcmp(channel, "email") && !s_email_ok(address))
        return bf_req_fail(r, BF_E_INVALID, "address", "address must be an email address");
    if (!strcmp(channel, "sms") && !bf_valid_phone(address, strlen(address)))
        return bf_req_fail(r, BF_E_INVALID, "address", "address must be a phone number");
    return 0;
}

#define EP_COLS                                                                                \
    "id, name, channel, url, address, rate_per_sec, rate_burst, status, failing_since_ms, "    \
    "disabled_reason, " TS("disabled_at") " AS disabled_at, previous_until_ms, "               \
    "(previous_secret IS NOT NULL) AS rotating, " TS("created_at") " AS created_at, "         \
    "CASE WHEN secret IS NULL THEN NULL ELSE 'sha256:' || "                                    \
    "left(encode(sha256(convert_to(secret, 'UTF8')), 'hex'), 12) END AS secret_fingerprint, "  \
    "consecutive_failures, paused_until_ms"

static void s_pack_ep(msgpack_packer *pk, const PGresult *res, int i)
{
    msgpack_pack_map(pk, 17);
    bf_mp_kv_int(pk, "id", bf_db_int(res, i, "id"));
    bf_mp_kv_str(pk, "name", bf_db_str(res, i, "name"));
    bf_mp_kv_str(pk, "channel", bf_db_str(res, i, "channel"));
    bf_mp_kv_str(pk, "url", bf_db_str(res, i, "url"));
    bf_mp_kv_str(pk, "address", bf_db_str(res, i, "address"));
    if (bf_db_null(res, i, "rate_per_sec")) bf_mp_kv_nil(pk, "rate_per_sec");
    else bf_mp_kv_int(pk, "rate_per_sec", bf_db_int(res, i, "rate_per_sec"));
    if (bf_db_null(res, i, "rate_burst")) bf_mp_kv_nil(pk, "rate_burst");
    else bf_mp_kv_int(pk, "rate_burst", bf_db_int(res, i, "rate_burst"));
    bf_mp_kv_str(pk, "status", bf_db_str(res, i, "status"));
    if (bf_db_null(res, i, "failing_since_ms")) bf_mp_kv_nil(pk, "failing_since_ms");
    else bf_mp_kv_int(pk, "failing_since_ms", bf_db_int(res, i, "failing_since_ms"));
    bf_mp_kv_str(pk, "disabled_reason", bf_db_str(res, i, "disabled_reason"));
    bf_mp_kv_str(pk, "disabled_at", bf_db_str(res, i, "disabled_at"));
    if (bf_db_bool(res, i, "rotating")) bf_mp_kv_int(pk, "previous_until_ms", bf_db_int(res, i, "previous_until_ms"));
    else bf_mp_kv_nil(pk, "previous_until_ms");
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, i, "created_at"));
    /* never the secret: whether there is one and a short fingerprint of it */
    bf_mp_kv_bool(pk, "secret_set", !bf_db_null(res, i, "secret_fingerprint"));
    bf_mp_kv_str(pk, "secret_fingerprint", bf_db_str(res, i, "secret_fingerprint"));
    bf_mp_kv_int(pk, "consecutive_failures", bf_db_int(res, i, "consecutive_failures"));
    if (bf_db_null(res, i, "paused_until_ms")) bf_mp_kv_nil(pk, "paused_until_ms");
    else bf_mp_kv_int(pk, "paused_until_ms", bf_db_int(res, i, "paused_until_ms"));
}

/* The endpoint as an event (no secret) and the admin record. */
static int s_ep_event(bf_req_t *r, int64_t id, const char *verb)
{
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_ep_get", "SELECT " EP_COLS
                               " FROM endpoint WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no endpoint with id %lld", (long long)id);
    }
    bf_event_t ev;
    s_pack_ep(bf_event_begin(&ev), res, 0);
    PQclear(res);
    char what[64], subject[48];
    snprintf(what, sizeof what, "endpoint.%s", verb);
    snprintf(subject, sizeof subject, "endpoint/%lld", (long long)id);
    return notify_admin_record(r, &ev, what, subject);
}

int endpoint_create(bf_req_t *r)
{
    const char *name, *channel = "webhook", *url = NULL, *address = NULL, *secret = NULL;
    int64_t rate = -1, burst = -1;
    if (bf_req_str(r, r->params, NULL, "name", true, 200, &name) != 0) return -1;
    if (!*name) return bf_req_fail(r, BF_E_INVALID, "name", "name must not be empty");
    if (bf_req_enum(r, r->params, NULL, "channel", false, s_ep_channels, &channel) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "url", false, 2048, &url) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "address", false, 320, &address) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "secret", false, 200, &secret) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "rate_per_sec", false, 0, 1000000, &rate) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "rate_burst", false, 1, 1000000, &burst) < 0) return -1;
    char gen[80];
    if (!strcmp(channel, "webhook")) {
        if (!url) return bf_req_fail(r, BF_E_INVALID, "url", "a webhook endpoint needs a url");
        if (s_url(r, url) != 0) return -1;
        if (address) return bf_req_fail(r, BF_E_INVALID, "address", "a webhook has no address");
        if (secret && !s_secret_ok(secret))
            return bf_req_fail(r, BF_E_INVALID, "secret",
                               "secret must be whsec_ followed by base64 of at least 18 bytes");
        if (!secret) {
            notify_secret_new(gen, sizeof gen);
            if (strlen(gen) < 20)
                return bf_req_fail(r, BF_E_INTERNAL, NULL, "no randomness for a secret");
            secret = gen;
        }
    } else {
        if (!address)
            return bf_req_fail(r, BF_E_INVALID, "address", "an %s endpoint needs an address",
                               channel);
        if (url || secret)
            return bf_req_fail(r, BF_E_INVALID, url ? "url" : "secret",
                               "only webhook endpoints have a url and a secret");
        if (s_address(r, channel, address) != 0) return -1;
    }
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {name, channel, url, address, secret, rate >= 0 ? bf_req_itoa(r, rate) : NULL,
                       burst >= 0 ? bf_req_itoa(r, burst) : NULL, r->actor};
    PGresult *res = bf_db_prep(r->db, "notify_ep_create",
                               "INSERT INTO endpoint (name, channel, url, address, secret, "
                               "rate_per_sec, rate_burst, created_by) "
                               "VALUES ($1, $2, $3, $4, $5, $6::int, $7::int, $8) RETURNING id",
                               8, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505")) {
            bf_db_rollback(r->db);
            return bf_req_fail(r, BF_E_EXISTS, "name", "an endpoint named %s exists", name);
        }
        return bf_req_db_fail(r);
    }
    int64_t id = bf_db_int(res, 0, "id");
    PQclear(res);
    if (s_ep_event(r, id, "created") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, secret ? 2 : 1);
    bf_mp_kv_int(r->out, "id", id);
    if (secret) bf_mp_kv_str(r->out, "secret", secret);
    return 0;
}

int endpoint_get(bf_req_t *r)
{
    int64_t id;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    const char *p[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_ep_get", "SELECT " EP_COLS
                               " FROM endpoint WHERE id = $1", 1, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no endpoint with id %lld", (long long)id);
    }
    s_pack_ep(r->out, res, 0);
    PQclear(res);
    return 0;
}

int endpoint_list(bf_req_t *r)
{
    PGresult *res = bf_db_prep(r->db, "notify_ep_list",
                               "SELECT " EP_COLS " FROM endpoint ORDER BY id LIMIT 10000", 0, NULL,
                               NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    msgpack_pack_map(r->out, 1);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)rows);
    for (int i = 0; i < rows; i++) s_pack_ep(r->out, res, i);
    PQclear(res);
    return 0;
}

int endpoint_update(bf_req_t *r)
{
    static const char *const statuses[] = {"active", "disabled", NULL};
    int64_t id, rate = -1, burst = -1;
    const char *url = NULL, *address = NULL, *status = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "url", false, 2048, &url) < 0) return -1;
    if (url && s_url(r, url) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "address", false, 320, &address) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "rate_per_sec", false, 0, 1000000, &rate) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "rate_burst", false, 1, 1000000, &burst) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "status", false, statuses, &status) < 0) return -1;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *gp[] = {bf_req_itoa(r, id)};
    PGresult *res = bf_db_prep(r->db, "notify_ep_lock2",
                               "SELECT channel, status FROM endpoint WHERE id = $1 FOR UPDATE", 1,
                               gp, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no endpoint with id %lld", (long long)id);
    }
    const char *channel = bf_arena_strndup(r->arena, bf_db_str(res, 0, "channel"), 16);
    bool was_disabled = !strcmp(bf_db_str(res, 0, "status"), "disabled");
    PQclear(res);
    if (url && strcmp(channel, "webhook") != 0) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_INVALID, "url", "only webhook endpoints have a url");
    }
    if (address && (!strcmp(channel, "webhook") || s_address(r, channel, address) != 0)) {
        bf_db_rollback(r->db);
        if (!r->err.code)
            bf_req_fail(r, BF_E_INVALID, "address", "a webhook endpoint has no address");
        return -1;
    }
    const char *p[] = {gp[0], url, address, rate >= 0 ? bf_req_itoa(r, rate) : NULL,
                       burst >= 0 ? bf_req_itoa(r, burst) : NULL, status};
    res = bf_db_prep(r->db, "notify_ep_update",
                     "UPDATE endpoint SET url = COALESCE($2, url), address = COALESCE($3, address), "
                     "rate_per_sec = COALESCE($4::int, rate_per_sec), "
                     "rate_burst = COALESCE($5::int, rate_burst), status = COALESCE($6, status), "
                     "failing_since_ms = CASE WHEN $6 = 'active' THEN NULL ELSE failing_since_ms END, "
                     "disabled_at = CASE WHEN $6 = 'active' THEN NULL WHEN $6 = 'disabled' AND "
                     "status = 'active' THEN now() ELSE disabled_at END, "
                     "disabled_reason = CASE WHEN $6 = 'active' THEN NULL WHEN $6 = 'disabled' "
                     "AND status = 'active' THEN 'disabled by an admin' ELSE disabled_reason END, "
                     "updated_at = now() WHERE id = $1",
                     6, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    PQclear(res);
    bool enabling = was_disabled && status && !strcmp(status, "active");
    if (s_ep_event(r, id, enabling ? "enabled" : "updated") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    long released = 0;
    if (status && !strcmp(status, "active"))
        released = notify_release_held(r->svc, r->db, r->redis, id);
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_int(r->out, "released", released > 0 ? released : 0);
    return 0;
}

int endpoint_rotate_secret(bf_req_t *r)
{
    notify_t *n = r->svc;
    int64_t id, overlap = n->rotation_overlap_s;
    const char *secret = NULL;
    if (bf_req_int(r, r->params, NULL, "id", true, 1, INT64_MAX, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "secret", false, 200, &secret) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "overlap_s", false, 0, 31536000, &overlap) < 0) return -1;
    char gen[80];
    if (secret && !s_secret_ok(secret))
        return bf_req_fail(r, BF_E_INVALID, "secret",
                           "secret must be whsec_ followed by base64 of at least 18 bytes");
    if (!secret) {
        notify_secret_new(gen, sizeof gen);
        secret = gen;
    }
    int64_t until = notify_now_ms(n) + overlap * 1000;
    if (bf_db_begin(r->db) != 0) return bf_req_db_fail(r);
    const char *p[] = {bf_req_itoa(r, id), secret, bf_req_itoa(r, until)};
    PGresult *res = bf_db_prep(r->db, "notify_ep_rotate",
                               "UPDATE endpoint SET previous_secret = secret, secret = $2, "
                               "previous_until_ms = $3::bigint, updated_at = now() "
                               "WHERE id = $1 AND channel = 'webhook' RETURNING id",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int found = PQntuples(res);
    PQclear(res);
    if (!found) {
        bf_db_rollback(r->db);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no webhook endpoint with id %lld",
                           (long long)id);
    }
    if (s_ep_event(r, id, "secret_rotated") != 0) return -1;
    if (bf_db_commit(r->db) != 0) return bf_req_db_fail(r);
    msgpack_pack_map(r->out, 3);
    bf_mp_kv_int(r->out, "id", id);
    bf_mp_kv_str(r->out, "secret", secret);
    bf_mp_kv_int(r->out, "previous_until_ms", until);
    return 0;
}

/* ---------------------------------------------------------------- inbox */

/* Inbox recipients are keyed "cadre:<id>" (ingest.c). A caller holding the
 * cadre role without admin sees and marks only its own inbox: "cadre:<its
 * cadre_id>", or its actor when that names a person. Returns 0 with *own =
 * NULL (unrestricted) or the caller's own key; -1 (failed) when a restricted
 * caller has no person of its own. */
static int s_inbox_owner(bf_req_t *r, const char **own)
{
    *own = NULL;
    if (!(r->roles & BF_ROLE_CADRE) || (r->roles & BF_ROLE_ADMIN)) return 0;
    if (r->cadre_id > 0)
        *own = bf_arena_printf(r->arena, "cadre:%lld", (long long)r->cadre_id);
    else if (r->actor && s_person_ok(r->actor))
        *own = r->actor;
    else
        return bf_req_fail(r, BF_E_PERMISSION, "person",
                           "a cadre reads only its own inbox, and this caller names no cadre");
    return 0;
}

int inbox_list(bf_req_t *r)
{
    const char *person, *cursor = NULL;
    bool unread = false;
    int64_t limit = 50;
    if (bf_req_str(r, r->params, NULL, "person", true, 128, &person) != 0) return -1;
    if (!s_person_ok(person))
        return bf_req_fail(r, BF_E_INVALID, "person", "person looks like cadre:42");
    const char *own;
    if (s_inbox_owner(r, &own) != 0) return -1;
    if (own && strcmp(own, person) != 0)
        return bf_req_fail(r, BF_E_PERMISSION, "person",
                           "a cadre reads only its own inbox (%s)", own);
    if (bf_req_bool(r, r->params, NULL, "unread", false, &unread) < 0) return -1;
    if (bf_req_str(r, r->params, NULL, "cursor", false, 64, &cursor) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, 1, 500, &limit) < 0) return -1;
    const char *c_us = NULL, *c_id = NULL;
    if (cursor) {
        const char *bar = strchr(cursor, '|');
        char *end;
        if (!bar || strtoll(cursor, &end, 10) <= 0 || end != bar || strlen(bar + 1) != NOTIFY_ID_LEN)
            return bf_req_fail(r, BF_E_INVALID, "cursor", "cursor is not one this method gave");
        c_us = bf_arena_strndup(r->arena, cursor, (size_t)(bar - cursor));
        c_id = bar + 1;
    }
    const char *p[] = {person, unread ? "1" : "0", c_us, c_id, bf_req_itoa(r, limit + 1)};
    PGresult *res = bf_db_prep(
        r->db, "notify_inbox_list",
        "SELECT id, event_id, event_type, title, body, " TS("created_at") " AS created_at, "
        TS("acked_at") " AS acked_at, acked_by, "
        "(extract(epoch FROM created_at) * 1000000)::bigint AS us FROM inbox "
        "WHERE person = $1 AND ($2 = '0' OR acked_at IS NULL) AND ($3::bigint IS NULL OR "
        "((extract(epoch FROM created_at) * 1000000)::bigint, id) < ($3::bigint, $4)) "
        "ORDER BY (extract(epoch FROM created_at) * 1000000)::bigint DESC, id DESC LIMIT $5",
        5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    int shown = rows > limit ? (int)limit : rows;
    const char *cp[] = {person};
    PGresult *cnt = bf_db_prep(r->db, "notify_inbox_unread",
                               "SELECT count(*) AS n FROM inbox WHERE person = $1 AND acked_at IS NULL",
                               1, cp, NULL, NULL);
    if (!cnt) {
        PQclear(res);
        return bf_req_db_fail(r);
    }
    msgpack_pack_map(r->out, 3);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)shown);
    for (int i = 0; i < shown; i++) {
        msgpack_pack_map(r->out, 8);
        bf_mp_kv_str(r->out, "id", bf_db_str(res, i, "id"));
        bf_mp_kv_str(r->out, "event_id", bf_db_str(res, i, "event_id"));
        bf_mp_kv_str(r->out, "type", bf_db_str(res, i, "event_type"));
        bf_mp_kv_str(r->out, "title", bf_db_str(res, i, "title"));
        bf_mp_kv_str(r->out, "body", bf_db_str(res, i, "body"));
        bf_mp_kv_str(r->out, "created_at", bf_db_str(res, i, "created_at"));
        bf_mp_kv_str(r->out, "acked_at", bf_db_str(res, i, "acked_at"));
        bf_mp_kv_str(r->out, "acked_by", bf_db_str(res, i, "acked_by"));
    }
    if (rows > limit)
        bf_mp_kv_str(r->out, "next_cursor",
                     bf_arena_printf(r->arena, "%s|%s", bf_db_str(res, shown - 1, "us"),
                                     bf_db_str(res, shown - 1, "id")));
    else
        bf_mp_kv_nil(r->out, "next_cursor");
    bf_mp_kv_int(r->out, "unread", bf_db_int(cnt, 0, "n"));
    PQclear(cnt);
    PQclear(res);
    return 0;
}

int inbox_ack(bf_req_t *r)
{
    const char *id, *person = NULL;
    if (bf_req_str(r, r->params, NULL, "id", true, 64, &id) != 0) return -1;
    if (bf_req_str(r, r->params, NULL, "person", false, 128, &person) < 0) return -1;
    const char *own;
    if (s_inbox_owner(r, &own) != 0) return -1;
    if (own && person && strcmp(own, person) != 0)
        return bf_req_fail(r, BF_E_PERMISSION, "person",
                           "a cadre marks only its own inbox (%s)", own);
    if (own) person = own; /* another's message is simply not found */
    const char *p[] = {id, person, r->actor};
    PGresult *res = bf_db_prep(r->db, "notify_inbox_ack",
                               "UPDATE inbox SET acked_at = COALESCE(acked_at, now()), "
                               "acked_by = COALESCE(acked_by, $3) "
                               "WHERE id = $1 AND ($2::text IS NULL OR person = $2) "
                               "RETURNING " TS("acked_at") " AS acked_at",
                               3, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no inbox message %s%s%s", id,
                           person ? " for " : "", person ? person : "");
    }
    msgpack_pack_map(r->out, 2);
    bf_mp_kv_str(r->out, "id", id);
    bf_mp_kv_str(r->out, "acked_at", bf_db_str(res, 0, "acked_at"));
    PQclear(res);
    return 0;
}

/* ----------------------------------------------------------- deliveries */

#define DELIVERY_COLS                                                                          \
    "id, event_id, event_type, subscription_id, endpoint_id, channel, recipient, address, "    \
    "subject, body, state, attempts, due_ms, last_error, last_status, worker, "                \
    TS("created_at") " AS created_at, " TS("updated_at") " AS updated_at, "                    \
    TS("sent_at") " AS sent_at, " TS("dead_at") " AS dead_at"

void notify_pack_delivery(msgpack_packer *pk, const PGresult *res, int i);
void notify_pack_delivery(msgpack_packer *pk, const PGresult *res, int i)
{
    msgpack_pack_map(pk, 20);
    bf_mp_kv_str(pk, "id", bf_db_str(res, i, "id"));
    bf_mp_kv_str(pk, "event_id", bf_db_str(res, i, "event_id"));
    bf_mp_kv_str(pk, "event_type", bf_db_str(res, i, "event_type"));
    bf_mp_kv_int(pk, "subscription_id", bf_db_int(res, i, "subscription_id"));
    if (bf_db_null(res, i, "endpoint_id")) bf_mp_kv_nil(pk, "endpoint_id");
    else bf_mp_kv_int(pk, "endpoint_id", bf_db_int(res, i, "endpoint_id"));
    bf_mp_kv_str(pk, "channel", bf_db_str(res, i, "channel"));
    bf_mp_kv_str(pk, "recipient", bf_db_str(res, i, "recipient"));
    bf_mp_kv_str(pk, "address", bf_db_str(res, i, "address"));
    bf_mp_kv_str(pk, "subject", bf_db_str(res, i, "subject"));
    bf_mp_kv_str(pk, "body", bf_db_str(res, i, "body"));
    bf_mp_kv_str(pk, "state", bf_db_str(res, i, "state"));
    bf_mp_kv_int(pk, "attempts", bf_db_int(res, i, "attempts"));
    if (bf_db_null(res, i, "due_ms")) bf_mp_kv_nil(pk, "due_ms");
    else bf_mp_kv_int(pk, "due_ms", bf_db_int(res, i, "due_ms"));
    bf_mp_kv_str(pk, "last_error", bf_db_str(res, i, "last_error"));
    if (bf_db_null(res, i, "last_status")) bf_mp_kv_nil(pk, "last_status");
    else bf_mp_kv_int(pk, "last_status", bf_db_int(res, i, "last_status"));
    bf_mp_kv_str(pk, "worker", bf_db_str(res, i, "worker"));
    bf_mp_kv_str(pk, "created_at", bf_db_str(res, i, "created_at"));
    bf_mp_kv_str(pk, "updated_at", bf_db_str(res, i, "updated_at"));
    bf_mp_kv_str(pk, "sent_at", bf_db_str(res, i, "sent_at"));
    bf_mp_kv_str(pk, "dead_at", bf_db_str(res, i, "dead_at"));
}

const char *notify_delivery_cols(void);
const char *notify_delivery_cols(void) { return DELIVERY_COLS; }

int delivery_get(bf_req_t *r)
{
    const char *id;
    if (bf_req_str(r, r->params, NULL, "id", true, 64, &id) != 0) return -1;
    const char *p[] = {id};
    PGresult *res = bf_db_prep(r->db, "notify_delivery_get",
                               "SELECT " DELIVERY_COLS " FROM delivery WHERE id = $1", 1, p, NULL,
                               NULL);
    if (!res) return bf_req_db_fail(r);
    if (PQntuples(res) != 1) {
        PQclear(res);
        return bf_req_fail(r, BF_E_NOT_FOUND, "id", "no delivery %s", id);
    }
    notify_pack_delivery(r->out, res, 0);
    PQclear(res);
    return 0;
}

int delivery_list(bf_req_t *r)
{
    static const char *const states[] = {"pending", "sending", "retry", "held", "sent",
                                         "dead", "dropped", NULL};
    const char *event_id = NULL, *state = NULL;
    int64_t sub = 0, ep = 0, limit = 100;
    if (bf_req_str(r, r->params, NULL, "event_id", false, 64, &event_id) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "subscription_id", false, 1, INT64_MAX, &sub) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "endpoint_id", false, 1, INT64_MAX, &ep) < 0) return -1;
    if (bf_req_enum(r, r->params, NULL, "state", false, states, &state) < 0) return -1;
    if (bf_req_int(r, r->params, NULL, "limit", false, 1, 1000, &limit) < 0) return -1;
    const char *p[] = {event_id, sub ? bf_req_itoa(r, sub) : NULL, ep ? bf_req_itoa(r, ep) : NULL, state,
                       bf_req_itoa(r, limit)};
    PGresult *res = bf_db_prep(r->db, "notify_delivery_list",
                               "SELECT " DELIVERY_COLS " FROM delivery "
                               "WHERE ($1::text IS NULL OR event_id = $1) "
                               "AND ($2::bigint IS NULL OR subscription_id = $2) "
                               "AND ($3::bigint IS NULL OR endpoint_id = $3) "
                               "AND ($4::text IS NULL OR state = $4) "
                               "ORDER BY created_at DESC, id LIMIT $5",
                               5, p, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int rows = PQntuples(res);
    msgpack_pack_map(r->out, 1);
    bf_mp_key(r->out, "items");
    msgpack_pack_array(r->out, (size_t)rows);
    for (int i = 0; i < rows; i++) notify_pack_delivery(r->out, res, i);
    PQclear(res);
    return 0;
}
