/* bf_service: shared service main; see bf_service.h. */
#include "bf_service.h"
#include "bf_idem.h"
#include "bf_keys.h"
#include "bf_login.h"
#include "bf_log.h"
#include "bf_outbox.h"
#include "bf_relay.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile int bf_service_stopping;

static void s_on_signal(int sig)
{
    (void)sig;
    bf_service_stopping = 1;
}

static void s_usage(const bf_service_def_t *def)
{
    printf("usage: bangfu-%s [--config FILE] [--migrate-only] [--help-config] [--version]\n"
           "Runs the bangfu %s service: RPC on %s.bind, events through the outbox relay.\n"
           "Every config key can be set in FILE (default $BANGFU_CONFIG) or by its\n"
           "BANGFU_* environment variable; --help-config lists them.\n",
           def->name, def->name, def->name);
}

int bf_service_main(const bf_service_def_t *def, int argc, char **argv)
{
    const char *config_path = NULL;
    int migrate_only = 0;
    const bf_cfg_def_t *tables[] = {bf_cfg_common, def->cfg_defs, NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (!strcmp(argv[i], "--migrate-only")) {
            migrate_only = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(def);
            return 0;
        } else if (!strcmp(argv[i], "--help-config")) {
            bf_cfg_print_help(tables);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("bangfu-%s %s\n", def->name, def->version);
            return 0;
        } else {
            fprintf(stderr, "bangfu-%s: unknown argument %s (try --help)\n", def->name, argv[i]);
            return 2;
        }
    }
    char err[512];
    bf_cfg_t *cfg = bf_cfg_load(tables, config_path, err, sizeof err);
    bf_log_init(def->name, BF_INFO);
    if (!cfg) {
        bf_log(BF_ERROR, "config: %s", err);
        return 2;
    }
    bf_log_level_t lvl;
    if (bf_log_level_parse(bf_cfg_str(cfg, "log.level"), &lvl) != 0) {
        bf_log(BF_ERROR, "config: log.level must be debug, info, warn or error");
        bf_cfg_destroy(&cfg);
        return 2;
    }
    bf_log_init(def->name, lvl);
    if (bf_security_init(bf_cfg_str(cfg, "security.mode"), bf_cfg_str(cfg, "keys.dir"),
                         def->name, err, sizeof err) != 0) {
        bf_log(BF_ERROR, "security: %s", err);
        bf_cfg_destroy(&cfg);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    void *svc = NULL;
    bool started = false;
    bf_relay_t *relay = NULL;
    bf_rpc_server_t *server = NULL;
    bf_db_t *db = bf_login_db(cfg, def->name, def->name);
    if (!db) goto out;
    if (bf_db_connect(db, (int)bf_cfg_int(cfg, "pg.connect_attempts")) != 0) {
        bf_log(BF_ERROR, "cannot reach postgresql: %s", bf_db_errmsg(db));
        goto out;
    }
    if (bf_db_migrate(db, def->name, bf_outbox_migrations) < 0 ||
        bf_db_migrate(db, def->name, bf_idem_migrations) < 0 ||
        bf_db_migrate(db, def->name, def->migrations) < 0) {
        bf_log(BF_ERROR, "migrations failed: %s", bf_db_errmsg(db));
        goto out;
    }
    if (migrate_only) {
        rc = 0;
        goto out;
    }
    if (def->start) {
        if (def->start(cfg, db, &svc) != 0) {
            bf_log(BF_ERROR, "service start failed");
            goto out;
        }
        started = true;
    }
    bf_db_destroy(&db); /* workers and the relay have their own */
    char bind_key[96];
    snprintf(bind_key, sizeof bind_key, "%s.bind", def->name);
    bf_rpc_config_t rc_cfg = {
        .service = def->name,
        .version = def->version,
        .bind = bf_cfg_str(cfg, bind_key),
        .methods = def->methods,
        .cfg = cfg,
        .schema = def->name,
        .svc = svc,
        .worker_init = def->worker_init,
        .group_prologue = def->group_prologue,
    };
    server = bf_rpc_server_new(&rc_cfg);
    if (!server) goto out;
    if (bf_cfg_bool(cfg, "relay.enabled")) {
        relay = bf_relay_start(def->name, def->name, cfg);
        if (!relay) goto out;
    }
    bf_rpc_server_run(server, &bf_service_stopping);
    rc = 0;
out:
    bf_service_stopping = 1;
    bf_rpc_server_destroy(&server);
    if (started && def->stop) def->stop(svc);
    bf_relay_stop(&relay);
    bf_db_destroy(&db);
    bf_zmq_ctx_term();
    bf_log(BF_INFO, "stopped (exit %d)", rc);
    bf_cfg_destroy(&cfg);
    return rc;
}
