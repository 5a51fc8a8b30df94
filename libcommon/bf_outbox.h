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
 * relay: if it runs in this process and holds the service's relay lock, by
 * waking it once the transaction commits (bf_db_after_commit), else by a
 * NOTIFY in the same statement (delivered at commit; bf_relay.h says why the
 * first is preferred). Returns 0 or -1 (database error). */
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

/* ---- Many events in one statement ----------------------------------------
 * A bulk write (an import of thousands of households) emits one event per
 * entity. Inserting them one by one costs a round trip each; a batch collects
 * the events in memory (each gets its id and time when added, so the envelope
 * is exactly what bf_outbox_add would write) and bf_outbox_batch_insert puts
 * them all into the outbox with one INSERT ... SELECT FROM unnest(...), in the
 * order they were added, plus one NOTIFY. Use it inside the transaction that
 * makes the changes, like bf_outbox_add. Not thread-safe: one batch per
 * request. */
typedef struct bf_outbox_batch bf_outbox_batch_t;

/* A new empty batch for events of service acting as actor (both copied;
 * actor may be NULL). NULL if out of memory. */
bf_outbox_batch_t *bf_outbox_batch_new(const char *service, const char *actor);

/* Frees the batch and any events not inserted; NULLs *self_p; safe on NULL. */
void bf_outbox_batch_destroy(bf_outbox_batch_t **self_p);

/* Adds one event: type, subject and data/len (one packed msgpack map, or
 * NULL/0 for an empty map) are copied. Returns 0, -1 if type or subject is
 * NULL (nothing added), or -1 if out of memory (the batch is then unusable:
 * every later add and insert fails). */
int bf_outbox_batch_add(bf_outbox_batch_t *b, const char *type, const char *subject,
                        const char *data, size_t len);

/* Events added and not yet inserted. */
size_t bf_outbox_batch_count(const bf_outbox_batch_t *b);

/* Inserts every added event into the outbox of db's schema in the caller's
 * open transaction with one statement, signals the relay once, and empties
 * the batch (so it can be reused). An empty batch does nothing. Returns 0, or
 * -1 (database error, or the batch ran out of memory earlier). */
int bf_outbox_batch_insert(bf_outbox_batch_t *b, bf_db_t *db);

#endif
