/* bf_cfg: typed configuration from a commented INI file and the environment.
 *
 * Config is a table of typed entries with defaults and bounds, as in Redis's
 * config.c. A service passes the tables it uses (bf_cfg_common plus its own);
 * values come, in rising priority, from the table default, the file
 * (configs/bangfu.conf, parsed with Debian's libinih), and the environment:
 * key "pg.dsn" is overridden by BANGFU_PG_DSN, "registry.bind" by
 * BANGFU_REGISTRY_BIND. Every value is checked at load (integer syntax and
 * bounds, booleans), so a bad config stops the service at start with a clear
 * message instead of misbehaving later. In the file, a key inside a section
 * that one of the tables owns must be known (typos are errors); sections owned
 * by other services are skipped, so one file serves every service.
 */
#ifndef BF_CFG_H
#define BF_CFG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { BF_CFG_STR, BF_CFG_INT, BF_CFG_BOOL } bf_cfg_type_t;

typedef struct {
    const char *key; /* "section.name"; NULL ends a table */
    bf_cfg_type_t type;
    const char *def; /* default, as text */
    long long min, max; /* bounds for BF_CFG_INT */
    const char *doc; /* one line, shown by --help-config */
} bf_cfg_def_t;

typedef struct bf_cfg bf_cfg_t;

/* Keys every service reads: log, PostgreSQL, Redis, bus, RPC limits, relay. */
extern const bf_cfg_def_t bf_cfg_common[];

/* Loads tables (a NULL-terminated array of tables) from defaults, the file at
 * path (NULL: $BANGFU_CONFIG if set, else no file) and the environment.
 * Returns the config, or NULL with a message in err naming the key. */
bf_cfg_t *bf_cfg_load(const bf_cfg_def_t *const *tables, const char *path,
                      char *err, size_t errlen);

/* Frees the config; NULLs *self_p; safe on NULL. */
void bf_cfg_destroy(bf_cfg_t **self_p);

/* Typed getters. The key must be in one of the loaded tables (a programming
 * error otherwise: the process aborts with a message). Strings are borrowed
 * from the config and live as long as it does. */
const char *bf_cfg_str(const bf_cfg_t *cfg, const char *key);
long long bf_cfg_int(const bf_cfg_t *cfg, const char *key);
bool bf_cfg_bool(const bf_cfg_t *cfg, const char *key);

/* The environment variable name for a key ("pg.dsn" -> "BANGFU_PG_DSN")
 * written into buf. */
void bf_cfg_env_name(const char *key, char *buf, size_t n);

/* Prints every key of the tables as a commented INI template: [section],
 * then per key its doc, variable, bounds and default (commented out). */
void bf_cfg_print_help(const bf_cfg_def_t *const *tables);

#endif
