/* bf_service: the main() every bangfu service shares.
 *
 * Parses the command line (--config FILE, --migrate-only, --help,
 * --help-config, --version), loads configuration (bf_cfg_common plus the
 * service's table), starts JSON logging, connects to PostgreSQL with retry,
 * applies the outbox's and the service's migrations under an advisory lock,
 * calls the service's start hook (schedulers, caches), starts the outbox
 * relay, serves RPC until SIGTERM or SIGINT, then stops in order: no new
 * requests, in-flight ones finished, the service's stop hook, the relay's
 * last flush, exit 0. The signal handler only sets a flag.
 */
#ifndef BF_SERVICE_H
#define BF_SERVICE_H

#include "bf_cfg.h"
#include "bf_db.h"
#include "bf_rpc.h"

typedef struct bf_service bf_service_t;

typedef struct {
    const char *name;    /* "registry": schema, log name, bind key <name>.bind */
    const char *version;
    const bf_cfg_def_t *cfg_defs;   /* the service's own keys; must include "<name>.bind" */
    const bf_migration_t *migrations;
    const bf_method_t *methods;
    /* Optional hooks. start runs after migrations, with cfg loaded and a
     * database connection (db) the hook may use and keep only for the call;
     * it returns the shared state handed to handlers as r->svc (NULL is fine)
     * through *svc, and 0, or -1 to abort start. stop runs after the RPC
     * server stopped. */
    int (*start)(const bf_cfg_t *cfg, bf_db_t *db, void **svc);
    void (*stop)(void *svc);
    int (*worker_init)(bf_req_t *ctx);
    /* Optional: the statement every commit group runs first (bf_rpc_config_t) */
    const char *group_prologue;
} bf_service_def_t;

/* Runs the service; returns the process exit code. */
int bf_service_main(const bf_service_def_t *def, int argc, char **argv);

/* Non-zero once SIGTERM/SIGINT arrived (for service threads' loops). */
extern volatile int bf_service_stopping;

#endif
