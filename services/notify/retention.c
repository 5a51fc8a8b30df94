/* retention.c: the retention job (docs/notify.md "Retention").
 *
 * A thread of its own wakes every notify.retention_interval_s and deletes,
 * in statements of at most notify.retention_batch rows with a short pause
 * between them (so it never holds locks or the disk for long):
 *   - deliveries in state sent or dropped last changed more than
 *     notify.retention_deliveries_days ago (never pending, sending, retry,
 *     held or dead ones: undelivered work and dead letters stay), then the
 *     events no delivery refers to any more, received as long ago;
 *   - inbox messages created more than notify.retention_inbox_days ago;
 *   - admin records older than notify.retention_admin_days;
 *   - finished endpoint tests as old as deliveries that are deleted.
 * An age of 0 keeps that kind forever. Ages are wall time (PostgreSQL's
 * now()), not the manual test clock.
 */
#include "bf_login.h"
#include "notify.h"
#include "bf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void s_nap(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs one batched DELETE until it deletes fewer than a batch (or 1000
 * batches). Returns the rows deleted or -1. */
static long s_batches(notify_t *n, bf_db_t *db, const char *name, const char *sql, int days)
{
    if (days <= 0) return 0;
    char d[16], b[16];
    snprintf(d, sizeof d, "%d", days);
    snprintf(b, sizeof b, "%d", n->retention_batch);
    const char *p[] = {d, b};
    long total = 0;
    for (int round = 0; round < 1000 && !notify_stopping(n); round++) {
        PGresult *res = bf_db_prep(db, name, sql, 2, p, NULL, NULL);
        if (!res) {
            bf_log(BF_WARN, "retention: %s: %s", name, bf_db_errmsg(db));
            return -1;
        }
        long got = strtol(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        total += got;
        if (got < n->retention_batch) break;
        s_nap(50);
    }
    return total;
}

long notify_retention_run(notify_t *n, bf_db_t *db)
{
    long d = s_batches(n, db, "notify_ret_delivery",
                       "DELETE FROM delivery WHERE id IN (SELECT id FROM delivery "
                       "WHERE state IN ('sent', 'dropped') "
                       "AND updated_at < now() - make_interval(days => $1::int) LIMIT $2::int)",
                       n->retain_deliveries_days);
    long e = s_batches(n, db, "notify_ret_event",
                       "DELETE FROM event WHERE id IN (SELECT ev.id FROM event ev "
                       "WHERE ev.received_at < now() - make_interval(days => $1::int) "
                       "AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_id = ev.id) "
                       "LIMIT $2::int)",
                       n->retain_deliveries_days);
    long i = s_batches(n, db, "notify_ret_inbox",
                       "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox "
                       "WHERE created_at < now() - make_interval(days => $1::int) LIMIT $2::int)",
                       n->retain_inbox_days);
    long a = s_batches(n, db, "notify_ret_admin",
                       "DELETE FROM admin_action WHERE id IN (SELECT id FROM admin_action "
                       "WHERE at < now() - make_interval(days => $1::int) LIMIT $2::int)",
                       n->retain_admin_days);
    long t = s_batches(n, db, "notify_ret_test",
                       "DELETE FROM endpoint_test WHERE id IN (SELECT id FROM endpoint_test "
                       "WHERE state = 'done' AND requested_at < now() - "
                       "make_interval(days => $1::int) LIMIT $2::int)",
                       n->retain_deliveries_days);
    if (d < 0 || e < 0 || i < 0 || a < 0 || t < 0) return -1;
    if (d + e + i + a > 0)
        bf_log(BF_INFO, "retention: deleted %ld deliveries, %ld events, %ld inbox messages, "
                        "%ld admin records", d, e, i, a);
    return d + e + i + a;
}

void *notify_retention_main(void *arg)
{
    notify_t *n = arg;
    bf_db_t *db = bf_login_db(n->cfg, NOTIFY_SERVICE, NOTIFY_SERVICE);
    if (!db) {
        bf_log(BF_ERROR, "retention: cannot start");
        return NULL;
    }
    /* the first pass a little after start, then every interval */
    int64_t next = notify_wall_ms() + 2000;
    while (!notify_stopping(n)) {
        if (notify_wall_ms() < next) {
            s_nap(200);
            continue;
        }
        if (bf_db_ensure(db) != 0 && bf_db_connect(db, 1) != 0) {
            next = notify_wall_ms() + 5000;
            continue;
        }
        notify_retention_run(n, db);
        next = notify_wall_ms() + n->retention_interval_s * 1000;
    }
    bf_db_destroy(&db);
    return NULL;
}
