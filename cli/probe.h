/* probe: fail fast when no service answers.
 *
 * A ZeroMQ client socket connects lazily and retries forever, so a call to an
 * address where nothing listens just waits for its whole timeout (30 s for
 * `bangfu call`, minutes for an import) in silence. Before the real call the
 * CLI probes the service: a socket of its own connects to the endpoint(s)
 * with the same CURVE keys and waits, up to the connect timeout, for the
 * ZMTP handshake to succeed (ZMQ_EVENT_HANDSHAKE_SUCCEEDED on a socket
 * monitor). The handshake is done by the server's I/O thread and its ZAP
 * handler, not by its workers, so a busy service still passes at once, while
 * a dead port, a wrong address or a server that refuses our key fails within
 * the connect timeout with a hint instead of the call's long timeout.
 *
 * `bangfu events tail` subscribes with a SUB socket, whose connect never
 * fails either: it has cli_connect watch that socket's own handshake with
 * the bus the same way (a second probe socket of another type would be
 * refused by the bus's XPUB).
 *
 * The connect timeout is 1500 ms by default, $BANGFU_CONNECT_TIMEOUT_MS, or
 * the global option --connect-timeout MS (main.c), which wins.
 */
#ifndef CLI_PROBE_H
#define CLI_PROBE_H

#include <stddef.h>

#define CLI_CONNECT_TIMEOUT_DEFAULT_MS 1500

/* Sets the connect timeout from --connect-timeout (ms > 0). */
void cli_set_connect_timeout(long ms);

/* The connect timeout in ms: --connect-timeout, else a valid
 * $BANGFU_CONNECT_TIMEOUT_MS, else the default. */
long cli_connect_timeout(void);

/* Parses a connect timeout (1..600000 ms); returns it, or -1 if bad. */
long cli_parse_connect_timeout(const char *s);

/* Probes endpoint (or each of a comma-separated list) of service. Returns 0
 * once a handshake with any of them succeeded, -1 when none did within
 * timeout_ms, with why saying what was seen ("connection refused", "the
 * service refused our key", "no handshake"). */
int cli_probe(const char *service, const char *endpoint, long timeout_ms, char *why,
              size_t whylen);

/* Probes service at endpoint with the connect timeout (or cap_ms if that is
 * shorter and > 0: the command's own --timeout); when it does not
 * answer prints (as prog) what was tried and the hint to load
 * var/endpoints.env on stderr and returns CLI_UNAVAILABLE (3), else 0. */
int cli_require(const char *prog, const char *service, const char *endpoint, long cap_ms);

/* Connects sock (made and keyed by the caller, e.g. a SUB socket) to
 * endpoint and waits, up to the connect timeout, for its own handshake with
 * service. Returns 0 once it succeeded (sock stays connected); CLI_USAGE if
 * endpoint is malformed; CLI_UNAVAILABLE (3) when there was no handshake in
 * time, after printing (as prog) what was tried and the hint to load
 * var/endpoints.env, naming var as where the address comes from. */
int cli_connect(const char *prog, void *sock, const char *service, const char *endpoint,
                const char *var);

#endif
