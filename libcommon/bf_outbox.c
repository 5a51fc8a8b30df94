/* bf_outbox: CloudEvents into the outbox table; see bf_outbox.h. */
#include "bf_outbox.h"
#include "bf_relay.h"
#include "bf_mp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

const bf_migration_t bf_outbox_migrations[] = {
    {"000_outbox",
     "CREATE TABLE outbox (\n"
     "  seq        bigserial PRIMARY KEY,\n"
     "  event_id   uuid NOT NULL UNIQUE,\n"
     "  type       text NOT NULL,\n"
     "  subject    text NOT NULL,\n"
     "  payload    bytea NOT NULL,\n"
     "  created_at timestamptz NOT NULL DEFAULT now(),\n"
     "  relayed_at timestamptz\n"
     ");\n"
     "CREATE INDEX outbox_pending ON outbox (seq) WHERE relayed_at IS NULL;\n"},
    /* the stream entry id each event got, so a relay can tell which relayed
     * events a Redis that lost data no longer has, and send them again */
    {"000_outbox_stream_id",
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS stream text;\n"
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS stream_id text;\n"
     "CREATE INDEX IF NOT EXISTS outbox_relayed ON outbox (seq DESC) "
     "WHERE relayed_at IS NOT NULL;\n"},
    {NULL, NULL},
};

void bf_uuid_v7(char out[37])
{
    unsigned char b[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)(ts.tv_nsec / 1000000);
    size_t got = 0;
    while (got < 10) {
        ssize_t n = getrandom(b + 6 + got, 10 - got, 0);
        if (n > 0) got += (size_t)n;
    }
    for (int i = 0; i < 6; i++) b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void bf_time_rfc3339(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000000L);
}

int bf_outbox_add(bf_db_t *db, const char *service, const char *type, const char *subject,
                  const char *actor, const char *data, size_t len, char event_id_out[37])
{
    char id[37], when[32], source[96];
    bf_uuid_v7(id);
    bf_time_rfc3339(when);
    snprintf(source, sizeof source, "bangfu/%s", service);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    bf_mp_kv_str(&pk, "specversion", "1.0");
    bf_mp_kv_str(&pk, "id", id);
    bf_mp_kv_str(&pk, "source", source);
    bf_mp_kv_str(&pk, "type", type);
    bf_mp_kv_str(&pk, "subject", subject);
    bf_mp_kv_str(&pk, "time", when);
    bf_mp_kv_str(&pk, "datacontenttype", "application/msgpack");
    bf_mp_kv_str(&pk, "actor", actor);
    bf_mp_key(&pk, "data");
    if (data && len)
        msgpack_sbuffer_write(&sb, data, len);
    else
        msgpack_pack_map(&pk, 0);

    char chan[96];
    snprintf(chan, sizeof chan, "bangfu_outbox_%s", service);
    const char *params[] = {id, type, subject, sb.data, chan};
    int lengths[] = {0, 0, 0, (int)sb.size, 0};
    int formats[] = {0, 0, 0, 1, 0};
    /* the relay is ours: woken after the commit (bf_relay.h); else the row
     * and the relay's wake-up (delivered at commit) in one round trip: a
     * data-modifying WITH runs whether or not it is read */
#define ADD_SQL "INSERT INTO outbox (event_id, type, subject, payload) VALUES ($1, $2, $3, $4)"
    bf_relay_waker_t *waker = bf_relay_local(service);
    PGresult *res = waker ? bf_db_prep(db, "bf_outbox_add", ADD_SQL, 4, params, lengths, formats)
                          : bf_db_prep(db, "bf_outbox_add_notify",
                                       "WITH ins AS (" ADD_SQL ") SELECT pg_notify($5, '')", 5,
                                       params, lengths, formats);
#undef ADD_SQL
    msgpack_sbuffer_destroy(&sb);
    if (!res) return -1;
    PQclear(res);
    if (waker) bf_db_after_commit(db, bf_relay_wake, waker);
    if (event_id_out) memcpy(event_id_out, id, 37);
    return 0;
}

msgpack_packer *bf_event_begin(bf_event_t *ev)
{
    msgpack_sbuffer_init(&ev->buf);
    msgpack_packer_init(&ev->pk, &ev->buf, msgpack_sbuffer_write);
    return &ev->pk;
}

int bf_event_commit(bf_event_t *ev, bf_db_t *db, const char *service, const char *type,
                    const char *subject, const char *actor)
{
    int rc = bf_outbox_add(db, service, type, subject, actor, ev->buf.data, ev->buf.size, NULL);
    bf_event_discard(ev);
    return rc;
}

void bf_event_discard(bf_event_t *ev)
{
    msgpack_sbuffer_destroy(&ev->buf);
    memset(&ev->buf, 0, sizeof ev->buf);
}

/* ---------------------------------------------------------------- batches */

/* A growing NUL-terminated text buffer (PostgreSQL array literals). */
typedef struct {
    char *s;
    size_t len, cap;
} s_text_t;

static int s_text_add(s_text_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->s, cap);
        if (!p) return -1;
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
    return 0;
}

/* Appends s as one quoted element of an array literal ("a\"b"). */
static int s_text_elem(s_text_t *t, const char *s, bool first)
{
    if (!first && s_text_add(t, ",", 1) != 0) return -1;
    if (s_text_add(t, "\"", 1) != 0) return -1;
    for (const char *p = s; *p; p++) {
        if ((*p == '"' || *p == '\\') && s_text_add(t, "\\", 1) != 0) return -1;
        if (s_text_add(t, p, 1) != 0) return -1;
    }
    return s_text_add(t, "\"", 1);
}

struct bf_outbox_batch {
    char *service;
    char *actor;
    msgpack_sbuffer payloads; /* the packed events, back to back */
    s_text_t ids, types, subjects, offsets, lengths; /* array literals, open */
    size_t count;
    bool failed;
};

static void s_batch_clear(bf_outbox_batch_t *b)
{
    msgpack_sbuffer_clear(&b->payloads);
    b->ids.len = b->types.len = b->subjects.len = b->offsets.len = b->lengths.len = 0;
    b->count = 0;
}

bf_outbox_batch_t *bf_outbox_batch_new(const char *service, const char *actor)
{
    bf_outbox_batch_t *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->service = strdup(service ? service : "");
    b->actor = actor ? strdup(actor) : NULL;
    msgpack_sbuffer_init(&b->payloads);
    if (!b->service || (actor && !b->actor)) bf_outbox_batch_destroy(&b);
    return b;
}

void bf_outbox_batch_destroy(bf_outbox_batch_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_outbox_batch_t *b = *self_p;
    free(b->service);
    free(b->actor);
    msgpack_sbuffer_destroy(&b->payloads);
    free(b->ids.s);
    free(b->types.s);
    free(b->subjects.s);
    free(b->offsets.s);
    free(b->lengths.s);
    free(b);
    *self_p = NULL;
}

size_t bf_outbox_batch_count(const bf_outbox_batch_t *b) { return b ? b->count : 0; }

int bf_outbox_batch_add(bf_outbox_batch_t *b, const char *type, const char *subject,
                        const char *data, size_t len)
{
    if (!b || b->failed || !type || !subject) return -1; /* both are NOT NULL columns */
    char id[37], when[32], source[96], num[24];
    bf_uuid_v7(id);
    bf_time_rfc3339(when);
    snprintf(source, sizeof source, "bangfu/%s", b->service);
    size_t start = b->payloads.size;
    /* the same envelope as bf_outbox_add */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->payloads, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    bf_mp_kv_str(&pk, "specversion", "1.0");
    bf_mp_kv_str(&pk, "id", id);
    bf_mp_kv_str(&pk, "source", source);
    bf_mp_kv_str(&pk, "type", type);
    bf_mp_kv_str(&pk, "subject", subject);
    bf_mp_kv_str(&pk, "time", when);
    bf_mp_kv_str(&pk, "datacontenttype", "application/msgpack");
    bf_mp_kv_str(&pk, "actor", b->actor);
    bf_mp_key(&pk, "data");
    if (data && len)
        msgpack_sbuffer_write(&b->payloads, data, len);
    else
        msgpack_pack_map(&pk, 0);
    size_t plen = b->payloads.size - start;
    if (b->payloads.size > (size_t)INT32_MAX) {
        b->failed = true; /* offsets are int4 in SQL */
        return -1;
    }
    bool first = b->count == 0;
    int rc = s_text_elem(&b->ids, id, first);
    rc |= s_text_elem(&b->types, type, first);
    rc |= s_text_elem(&b->subjects, subject, first);
    snprintf(num, sizeof num, "%s%zu", first ? "" : ",", start + 1); /* 1-based */
    rc |= s_text_add(&b->offsets, num, strlen(num));
    snprintf(num, sizeof num, "%s%zu", first ? "" : ",", plen);
    rc |= s_text_add(&b->lengths, num, strlen(num));
    if (rc != 0) {
        b->failed = true;
        return -1;
    }
    b->count++;
    return 0;
}

/* The literal "{...}" of an open element list, in a new malloc'd string. */
static char *s_close(const s_text_t *t)
{
    char *s = malloc(t->len + 3);
    if (!s) return NULL;
    s[0] = '{';
    if (t->len) memcpy(s + 1, t->s, t->len);
    s[t->len + 1] = '}';
    s[t->len + 2] = '\0';
    return s;
}

int bf_outbox_batch_insert(bf_outbox_batch_t *b, bf_db_t *db)
{
    if (!b || b->failed) return -1;
    if (b->count == 0) return 0;
    int rc = -1;
    char *ids = s_close(&b->ids), *types = s_close(&b->types);
    char *subjects = s_close(&b->subjects), *offsets = s_close(&b->offsets);
    char *lengths = s_close(&b->lengths);
    if (!ids || !types || !subjects || !offsets || !lengths) goto cleanup;
    /* the rows and the relay's wake-up in one round trip, or the wake-up
     * after the commit (as bf_outbox_add) */
    char chan[96];
    snprintf(chan, sizeof chan, "bangfu_outbox_%s", b->service);
    const char *params[] = {ids, types, subjects, b->payloads.data, offsets, lengths, chan};
    int plens[] = {0, 0, 0, (int)b->payloads.size, 0, 0, 0};
    int formats[] = {0, 0, 0, 1, 0, 0, 0};
#define BATCH_SQL                                                                     \
    "INSERT INTO outbox (event_id, type, subject, payload) "                          \
    "SELECT e.id, e.type, e.subject, substring($4::bytea FROM e.off FOR e.len) "      \
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $5::int[], $6::int[]) "          \
    "  WITH ORDINALITY AS e(id, type, subject, off, len, n) ORDER BY e.n"
    bf_relay_waker_t *waker = bf_relay_local(b->service);
    PGresult *res =
        waker ? bf_db_prep(db, "bf_outbox_batch_insert", BATCH_SQL, 6, params, plens, formats)
              : bf_db_prep(db, "bf_outbox_batch_insert_notify",
                           "WITH ins AS (" BATCH_SQL ") SELECT pg_notify($7, '')", 7, params,
                           plens, formats);
#undef BATCH_SQL
    if (!res) goto cleanup;
    PQclear(res);
    if (waker) bf_db_after_commit(db, bf_relay_wake, waker);
    s_batch_clear(b);
    rc = 0;
cleanup:
    free(ids);
    free(types);
    free(subjects);
    free(offsets);
    free(lengths);
    return rc;
}
