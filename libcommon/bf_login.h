/* bf_login: who a service logs in as, in PostgreSQL and in Redis.
 *
 * Each service has its own PostgreSQL role and its own Redis ACL user
 * (docs/security.md, "PostgreSQL and Redis privileges"). The config keys
 * pg.user, pg.password_file, redis.user and redis.password_file say which;
 * "{service}" in them is replaced by the service's name, so one config file
 * (or one environment) serves every service: pg.user "bangfu_{service}" is
 * bangfu_registry in the registry. The role and password override the DSN's
 * own; the Redis user and password override redis.url's. A password file holds
 * the password on its first line (a trailing newline is ignored) and is read
 * at start: rotating a password means restarting the service
 * (docs/operations.md). No password ever reaches a log line or an error.
 */
#ifndef BF_LOGIN_H
#define BF_LOGIN_H

#include "bf_cfg.h"
#include "bf_db.h"
#include "bf_redis.h"

#include <stddef.h>

/* Copies tmpl into out with every "{service}" replaced by service. Returns 0,
 * or -1 if it does not fit. */
int bf_login_expand(const char *tmpl, const char *service, char *out, size_t n);

/* A database handle (not yet connected) for service, with search_path schema,
 * logging in as pg.user with the password from pg.password_file. NULL, with
 * the reason logged naming the key, if the password file cannot be read or
 * memory ran out. */
bf_db_t *bf_login_db(const bf_cfg_t *cfg, const char *service, const char *schema);

/* A Redis handle (not yet connected) for redis.url, logging in as redis.user
 * with the password from redis.password_file when that key is set (else with
 * the URL's credentials, if any). NULL with the reason in err. */
bf_redis_t *bf_login_redis(const bf_cfg_t *cfg, const char *service, char *err, size_t errlen);

#endif
