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
 * wakes on NOTIFY from bf_outbox_add and polls every second as a fallback.
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

#endif
