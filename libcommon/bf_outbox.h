/* bf_outbox: events written in the same transaction as the change.
 *
 * A handler that changes data calls bf_outbox_add() inside its transaction;
 * the event (a CloudEvents 1.0 map in msgpack) lands in the service's outbox
 * table and becomes visible to the relay (bf_relay) only if the transaction
 * commits. So an event exists if and only if its change does: nothing lost,
 * nothing invented. The event map is:
 *   {specversion:"1.0", id:<uuid v7>, source:"bangfu/<service>", type,
 *    subject, time:<RFC 3339 UTC>, datacontenttype:"application/msgpack",
 *    actor, data:{...}}
 * Event data must never hold a full personal ID number (callers mask them).
 */
#ifndef BF_OUTBOX_H
#define BF_OUTBOX_H

#include "bf_db.h"

#include <msgpack.h>
#include <stddef.h>

/* The outbox table's own migrations; services apply them before theirs. */
extern const bf_migration_t bf_outbox_migrations[];

/* Writes a new UUID v7 (time-ordered) as 36 characters plus NUL. */
void bf_uuid_v7(char out[37]);

/* Writes the current time as RFC 3339 UTC with milliseconds plus NUL. */
void bf_time_rfc3339(char out[32]);

/* Builds the event and inserts it into the outbox of db's schema. data/len is
 * one packed msgpack map (the event's data). The caller's transaction must be
 * open. event_id_out (may be NULL) receives the event id. Also signals the
 * relay (NOTIFY, delivered at commit). Returns 0 or -1 (database error). */
int bf_outbox_add(bf_db_t *db, const char *service, const char *type, const char *subject,
                  const char *actor, const char *data, size_t len, char event_id_out[37]);

/* A convenience for handlers: an event being built. bf_event_begin() returns
 * a packer for the data map (the caller packs exactly one map), and
 * bf_event_commit() adds it to the outbox and frees the buffer. */
typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
} bf_event_t;

msgpack_packer *bf_event_begin(bf_event_t *ev);
int bf_event_commit(bf_event_t *ev, bf_db_t *db, const char *service, const char *type,
                    const char *subject, const char *actor);
/* Frees without adding (on an error path). Safe after commit. */
void bf_event_discard(bf_event_t *ev);

#endif
