/* bf_zap: the process's ZAP handler (ZeroMQ RFC 27), which decides who may
 * complete a CURVE handshake with any of its server sockets.
 *
 * One thread bound to inproc://zeromq.zap.01 on bf_zmq_ctx(). For mechanism
 * CURVE it looks the client's public key up in the principals table
 * (bf_principals.h) and answers 200 with User-Id = the principal's name when
 * the principal holds one of the roles the socket's ZAP domain admits, or 400
 * otherwise (refusals are logged with the key's first 8 characters and the
 * peer address, at most 5 a second; the rest are counted). Any other
 * mechanism and any unknown domain are refused.
 *
 * Servers register their domain before binding (bf_curve_server does it):
 *   "rpc"       any known principal (the method table decides per method)
 *   "bus.xsub"  service, admin (publishers)
 *   "bus.pub"   subscriber, service, admin
 * bf_zmq_ctx_term() stops the handler before terminating the context.
 */
#ifndef BF_ZAP_H
#define BF_ZAP_H

#include <stddef.h>

/* Starts the handler once (later calls return 0). Returns 0, or -1 with a
 * message in err. */
int bf_zap_start(char *err, size_t errlen);

/* Admits principals holding any of roles (BF_ROLE_*) on domain; replaces an
 * earlier registration of the same domain. At most 16 domains. */
void bf_zap_domain(const char *domain, unsigned roles);

/* Stops the handler thread and closes its socket; safe if never started. */
void bf_zap_stop(void);

/* Refusals since start (for tests and sys.stats). */
long bf_zap_refused(void);

#endif
