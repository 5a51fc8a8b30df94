/* bf_outbox: CloudEvents into the outbox table; see bf_outbox.h. */
#include "bf_outbox.h"
#include "bf_mp.h"

#include <stdint.h>
#include <stdio.h>
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

    const char *params[] = {id, type, subject, sb.data};
    int lengths[] = {0, 0, 0, (int)sb.size};
    int formats[] = {0, 0, 0, 1};
    PGresult *res = bf_db_prep(db, "bf_outbox_add",
                               "INSERT INTO outbox (event_id, type, subject, payload) "
                               "VALUES ($1, $2, $3, $4)",
                               4, params, lengths, formats);
    msgpack_sbuffer_destroy(&sb);
    if (!res) return -1;
    PQclear(res);
    char chan[96];
    snprintf(chan, sizeof chan, "bangfu_outbox_%s", service);
    const char *np[] = {chan};
    res = bf_db_prep(db, "bf_outbox_notify", "SELECT pg_notify($1, '')", 1, np, NULL, NULL);
    if (!res) return -1;
    PQclear(res);
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
