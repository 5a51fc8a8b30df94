/* bf_redis: a Redis connection through hiredis (0.14, the classic API).
 *
 * Parses redis://[[user]:password@]host:port[/db] URLs, connects with a
 * timeout, logs in (AUTH [user] password, on every connect, when a password
 * is known: from the URL or bf_redis_set_auth), selects the database, and reconnects on the next call after the connection broke (a
 * failed hiredis context cannot be reused: it is dropped and re-made). Every
 * reply returned is the caller's to freeReplyObject. One bf_redis_t per
 * thread.
 */
#ifndef BF_REDIS_H
#define BF_REDIS_H

#include <hiredis.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct bf_redis bf_redis_t;

/* Returns a handle for url (not yet connected), or NULL if the URL is bad
 * (message in err) or memory ran out. */
bf_redis_t *bf_redis_new(const char *url, char *err, size_t errlen);

/* Closes and frees; NULLs *self_p; safe on NULL. The password is wiped. */
void bf_redis_destroy(bf_redis_t **self_p);

/* The ACL user and password to log in with, replacing the URL's (user NULL
 * or "": Redis's "default" user; password NULL or "": no AUTH). Drops the
 * connection so the next call logs in with them. 0, or -1 if out of memory. */
int bf_redis_set_auth(bf_redis_t *r, const char *user, const char *password);

/* The user AUTH is sent as ("default" if only a password), NULL if none. */
const char *bf_redis_user(const bf_redis_t *r);

/* Connects if not connected. Returns 0 or -1 (bf_redis_errmsg says why). */
int bf_redis_ensure(bf_redis_t *r);

/* Runs one command given as argv (binary safe). Returns the reply, or NULL if
 * the connection failed (it is dropped and re-made on the next call). A reply
 * of type REDIS_REPLY_ERROR is returned as a reply. */
redisReply *bf_redis_cmd(bf_redis_t *r, int argc, const char **argv, const size_t *lens);

/* printf-style command (hiredis format: %s, %b, %d...). Same contract. */
redisReply *bf_redis_cmdf(bf_redis_t *r, const char *fmt, ...);

/* Pipelining: append commands, then read that many replies in order. */
int bf_redis_append(bf_redis_t *r, int argc, const char **argv, const size_t *lens);
redisReply *bf_redis_read(bf_redis_t *r);

/* True if PING answers PONG. */
bool bf_redis_ping(bf_redis_t *r);

/* Drops the connection (the next call reconnects). */
void bf_redis_drop(bf_redis_t *r);

/* How many times a connection was made (a change means the server may have
 * restarted since the caller last looked: the relay then checks the stream). */
unsigned long bf_redis_connects(const bf_redis_t *r);

const char *bf_redis_errmsg(const bf_redis_t *r);
const char *bf_redis_host(const bf_redis_t *r);
int bf_redis_port(const bf_redis_t *r);

#endif
