/* bangfu-gateway: main, configuration, the user-administration method table,
 * start and stop (see gateway.h). */
#include "gateway.h"
#include "bf_log.h"
#include "bf_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const bf_migration_t gateway_migrations[];

static const bf_cfg_def_t s_gateway_cfg[] = {
    {"gateway.bind", BF_CFG_STR, "tcp://127.0.0.1:7105", 0, 0,
     "address the gateway's RPC ROUTER socket binds (user.* administration)"},
    {"gateway.http_bind", BF_CFG_STR, "127.0.0.1:8080", 0, 0,
     "address:port the HTTP API and console listen on (IPv4)"},
    {"gateway.http_threads", BF_CFG_INT, "4", 1, 64, "HTTP worker threads"},
    {"gateway.www_dir", BF_CFG_STR, "services/gateway/www", 0, 0,
     "directory of the console's static files"},
    {"gateway.max_body_bytes", BF_CFG_INT, "1048576", 1024, 67108864,
     "largest request body accepted (larger: 413)"},
    {"gateway.max_json_depth", BF_CFG_INT, "16", 1, 32,
     "most nested arrays/objects in a request body or JSON query value"},
    {"gateway.rpc_timeout_ms", BF_CFG_INT, "10000", 100, 600000,
     "how long an API call waits for the service (then 503)"},
    {"gateway.services", BF_CFG_STR, "registry,funds,tasks,notify,gateway", 0, 0,
     "services reachable under /v1/<service>/; each one's address is <service>.rpc"},
    {"gateway.registry_rpc", BF_CFG_STR, "", 0, 0,
     "registry RPC address (empty: $BANGFU_REGISTRY_RPC or tcp://127.0.0.1:7101)"},
    {"gateway.funds_rpc", BF_CFG_STR, "", 0, 0,
     "funds RPC address (empty: $BANGFU_FUNDS_RPC or tcp://127.0.0.1:7102)"},
    {"gateway.tasks_rpc", BF_CFG_STR, "", 0, 0,
     "tasks RPC address (empty: $BANGFU_TASKS_RPC or tcp://127.0.0.1:7103)"},
    {"gateway.notify_rpc", BF_CFG_STR, "", 0, 0,
     "notify RPC address (empty: $BANGFU_NOTIFY_RPC or tcp://127.0.0.1:7104)"},
    {"gateway.methods_ttl_s", BF_CFG_INT, "60", 1, 86400,
     "how long each service's sys.methods (and the OpenAPI document) is cached"},
    {"gateway.session_ttl_s", BF_CFG_INT, "43200", 60, 31536000,
     "a session (bearer token / cookie) lasts this long"},
    {"gateway.login_max_failures", BF_CFG_INT, "5", 1, 1000,
     "failed sign-ins of one username within login_window_s before it is refused (429)"},
    {"gateway.login_window_s", BF_CFG_INT, "900", 1, 86400,
     "window of the failed sign-in count"},
    {"gateway.scrypt_log2n", BF_CFG_INT, "15", 10, 20,
     "scrypt cost of new password hashes: N = 2^this (r=8, p=1; 15 = 32 MiB)"},
    {"gateway.cookie_secure", BF_CFG_BOOL, "false", 0, 0,
     "mark the session cookie Secure (set when served over HTTPS behind a proxy)"},
    {"gateway.admin_user", BF_CFG_STR, "admin", 0, 0,
     "bootstrap admin created at first start when there are no users (empty: none)"},
    {"gateway.admin_password_file", BF_CFG_STR, "", 0, 0,
     "its password file (empty: $BANGFU_KEYS_DIR/gateway-admin.password); "
     "written with a random password if missing"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const bf_param_t p_user_create[] = {
    {"username", BF_T_STR, BF_REQ, 64, "letters, digits, _ . @ -"},
    {"password", BF_T_STR, BF_REQ, 1024, "at least 8 bytes"},
    {"roles", BF_T_LIST, 0, 8, "role names (admin, county_operator, finance, approver, ...)"},
    {"region", BF_T_STR, 0, 12, "12-digit division code the person is bound to"},
    {"cadre_id", BF_T_INT, 0, 0, "the cadre this person is"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_user_password[] = {
    {"username", BF_T_STR, BF_REQ, 64, "whose password"},
    {"password", BF_T_STR, BF_REQ, 1024, "the new password (at least 8 bytes)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_user_disable[] = {
    {"username", BF_T_STR, BF_REQ, 64, "who"},
    {"disabled", BF_T_BOOL, 0, 0, "false enables again (default true)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_user_roles[] = {
    {"username", BF_T_STR, BF_REQ, 64, "who"},
    {"roles", BF_T_LIST, BF_REQ, 8, "the new role names"},
    {"region", BF_T_STR, 0, 12, "new region (\"\" = everywhere)"},
    {"cadre_id", BF_T_INT, 0, 0, "new cadre id (0 = none)"},
    {NULL, 0, 0, 0, NULL},
};
static const bf_param_t p_none[] = {
    {NULL, 0, 0, 0, NULL},
};

static const bf_method_t s_methods[] = {
    {"user.create", gw_user_create, true, p_user_create,
     "a person who signs in to the HTTP API and console", BF_ROLE_ADMIN},
    {"user.set_password", gw_user_set_password, true, p_user_password,
     "new password; the person's sessions end", BF_ROLE_ADMIN},
    {"user.set_roles", gw_user_set_roles, true, p_user_roles,
     "change roles, region, cadre; the person's sessions end", BF_ROLE_ADMIN},
    {"user.disable", gw_user_disable, true, p_user_disable,
     "disable (or enable) a person; a disabled one's sessions end", BF_ROLE_ADMIN},
    {"user.list", gw_user_list, false, p_none, "every person (no password hashes)",
     BF_ROLE_ADMIN},
    {NULL, NULL, false, NULL, NULL, 0},
};

int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct {
    const char *name;
    const char *env;
    const char *def;
} s_known[] = {
    {"registry", "BANGFU_REGISTRY_RPC", "tcp://127.0.0.1:7101"},
    {"funds", "BANGFU_FUNDS_RPC", "tcp://127.0.0.1:7102"},
    {"tasks", "BANGFU_TASKS_RPC", "tcp://127.0.0.1:7103"},
    {"notify", "BANGFU_NOTIFY_RPC", "tcp://127.0.0.1:7104"},
};

/* Fills g->svcs from gateway.services. */
static int s_services(gw_t *g)
{
    const char *list = bf_cfg_str(g->cfg, "gateway.services");
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n > 0) {
            if (g->nsvc >= GW_MAX_SVC || n >= sizeof g->svcs[0].name) {
                bf_log(BF_ERROR, "config: gateway.services: too many or too long names");
                return -1;
            }
            gw_svc_t *s = &g->svcs[g->nsvc++];
            memcpy(s->name, p, n);
            s->name[n] = 0;
            const char *ep = NULL;
            if (!strcmp(s->name, GW_SERVICE)) {
                ep = getenv("BANGFU_GATEWAY_RPC");
                if (!ep || !*ep) ep = bf_cfg_str(g->cfg, "gateway.bind");
            } else {
                size_t k;
                for (k = 0; k < sizeof s_known / sizeof s_known[0]; k++)
                    if (!strcmp(s_known[k].name, s->name)) break;
                if (k == sizeof s_known / sizeof s_known[0]) {
                    bf_log(BF_ERROR, "config: gateway.services: unknown service %s", s->name);
                    return -1;
                }
                char key[64];
                snprintf(key, sizeof key, "gateway.%s_rpc", s->name);
                ep = bf_cfg_str(g->cfg, key);
                if (!ep || !*ep) ep = getenv(s_known[k].env);
                if (!ep || !*ep) ep = s_known[k].def;
            }
            snprintf(s->endpoint, sizeof s->endpoint, "%s", ep);
        }
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

static void s_stop(void *svc);

static int s_start(const bf_cfg_t *cfg, bf_db_t *db, void **svc)
{
    gw_t *g = calloc(1, sizeof *g);
    if (!g) return -1;
    g->cfg = cfg;
    pthread_mutex_init(&g->lock, NULL);
    g->www_dir = bf_cfg_str(cfg, "gateway.www_dir");
    g->max_body = bf_cfg_int(cfg, "gateway.max_body_bytes");
    g->max_depth = (int)bf_cfg_int(cfg, "gateway.max_json_depth");
    g->timeout_ms = (int)bf_cfg_int(cfg, "gateway.rpc_timeout_ms");
    g->session_ttl_s = bf_cfg_int(cfg, "gateway.session_ttl_s");
    g->login_max_failures = (int)bf_cfg_int(cfg, "gateway.login_max_failures");
    g->login_window_s = bf_cfg_int(cfg, "gateway.login_window_s");
    g->methods_ttl_ms = bf_cfg_int(cfg, "gateway.methods_ttl_s") * 1000;
    g->cookie_secure = bf_cfg_bool(cfg, "gateway.cookie_secure");
    g->metrics = gw_metrics_new();
    if (!g->metrics || s_services(g) != 0 || gw_tls_init(g) != 0) goto fail;
    if (gw_bootstrap_admin(g, db) != 0) goto fail;
    if (gw_http_start(g) != 0) goto fail;
    *svc = g;
    return 0;
fail:
    s_stop(g);
    return -1;
}

static void s_stop(void *svc)
{
    gw_t *g = svc;
    if (!g) return;
    gw_http_stop(g); /* its threads end, and with them their clients */
    gw_tls_fini(g);
    for (int i = 0; i < g->nsvc; i++) free(g->svcs[i].methods);
    free(g->openapi);
    gw_metrics_free(g->metrics);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

int main(int argc, char **argv)
{
    static const bf_service_def_t def = {
        .name = GW_SERVICE,
        .version = GW_VERSION,
        .cfg_defs = s_gateway_cfg,
        .migrations = gateway_migrations,
        .methods = s_methods,
        .start = s_start,
        .stop = s_stop,
    };
    return bf_service_main(&def, argc, argv);
}
