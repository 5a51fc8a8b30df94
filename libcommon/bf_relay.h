/* bf_relay: moves committed outbox events to Redis and the bus, in order.
 *
 * One thread per service process. Only one relay per service works at a time
 * across all instances: it holds a PostgreSQL session advisory lock
 * ("bangfu.relay.<service>"); the others wait and take over if the holder's
 * connection dies. A round reads the oldest unrelayed outbox rows (seq order),
 * XADDs each to the Redis Stream (relay.stream, fields id, type, event),
 * publishes it on the bus (two frames: type, event), and only then marks the
 * rows relayed. A crash between the XADD and the mark repeats those events
 * after restart with the same id (at-least-once); a row is never skipped,
 * because rows are selected by "not yet relayed", not by a position that a
 * concurrent, later-committing transaction could fall behind. The thread
 * wakes when a writer of its own process commits an event (bf_relay_wake,
 * below), on NOTIFY from writers elsewhere (bf_outbox_add), and polls every
 * second as a fallback.
 * Redis or PostgreSQL going away only pauses it; it reconnects with backoff.
 */
#ifndef BF_RELAY_H
#define BF_RELAY_H

#include "bf_cfg.h"

typedef struct bf_relay bf_relay_t;

/* Starts the relay thread for service (whose outbox lives in schema), with
 * pg.dsn, redis.url, bus.xsub and relay.* from cfg (borrowed; must outlive
 * the relay). Returns NULL on failure. */
bf_relay_t *bf_relay_start(const char *service, const char *schema, const bf_cfg_t *cfg);

/* Asks the thread to stop, lets it relay what is pending (bounded by a few
 * seconds), joins it, frees; NULLs *self_p; safe on NULL. */
void bf_relay_stop(bf_relay_t **self_p);

/* Events relayed so far by this process (for sys.stats and tests). */
long long bf_relay_count(const bf_relay_t *r);

/* ---- Waking the relay of this process --------------------------------------
 * A transaction that sends NOTIFY takes PostgreSQL's database-wide
 * notification lock at commit and holds it through the commit's WAL flush, so
 * such transactions commit one at a time (measured here: 16 writers at half
 * the rate without it). When the relay that holds the service's lock runs in
 * the writer's own process, the writer need not NOTIFY: bf_outbox asks
 * bf_relay_local() and, if it answers, wakes that relay after the commit
 * (bf_db_after_commit + bf_relay_wake) through an eventfd. Writers in other
 * processes (a second instance) still NOTIFY. */
typedef struct bf_relay_waker bf_relay_waker_t;

/* The waker of the relay of service running in this process, if it holds the
 * service's relay lock now; NULL if none does (then NOTIFY). A waker lives as
 * long as the process, so it may be used after its relay stopped (a relay
 * started later for the service drains what was left). */
bf_relay_waker_t *bf_relay_local(const char *service);

/* Wakes the relay (for bf_db_after_commit: arg is a bf_relay_waker_t *). */
void bf_relay_wake(void *waker);

/* Times this relay was woken by a writer of its own process (tests). */
long long bf_relay_wakes(const bf_relay_t *r);

#endif
