/* bangfu-gateway: the HTTP API and the web console (docs/http.md,
 * docs/console.md).
 *
 * A bangfu service (bf_service_main: config, logging, migrations of schema
 * `gateway`, an RPC table for user administration) that also serves HTTP with
 * libmicrohttpd on gateway.http_bind. People sign in with a username and
 * password (scrypt); each API call is forwarded to a service over its RPC
 * acting for the signed-in person (bf_client_call_as with actor
 * "user:<name>" and auth {roles, region, cadre_id} from the user row).
 *
 * Modules: main.c (config, methods, start/stop, bootstrap admin), auth.c
 * (password hashing, users, sessions, the user.* methods), upstream.c
 * (per-thread clients and database, the sys.methods cache, OpenAPI), http.c
 * (routing, JSON <-> msgpack, static files), metrics.c (Prometheus text).
 */
#ifndef GATEWAY_H
#define GATEWAY_H

#include "bf_cfg.h"
#include "bf_client.h"
#include "bf_db.h"
#include "bf_rpc.h"

#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define GW_SERVICE "gateway"
#define GW_VERSION "0.1.0"
#define GW_MAX_SVC 8
#define GW_MAX_PARAMS 64
#define GW_TOKEN_HEX 64 /* a bearer token: 32 random bytes as hex */

typedef struct gw gw_t;

typedef struct {
    char name[32];
    char endpoint[512];
    /* sys.methods cache: the packed result, guarded by gw.lock */
    char *methods;
    size_t methods_len;
    int64_t fetched_ms;
} gw_svc_t;

/* What the gateway knows about one method from sys.methods. */
typedef struct {
    bool found;
    bool writes;
    int nparams;
    struct {
        char name[64];
        char type[12]; /* string integer boolean map list any (sys.methods) */
    } params[GW_MAX_PARAMS];
} gw_minfo_t;

/* The signed-in person. */
typedef struct {
    char username[65];
    char roles[256];   /* comma-separated role names */
    char region[13];   /* "" = everywhere */
    int64_t cadre_id;  /* 0 = none */
} gw_user_t;

typedef struct gw_metrics gw_metrics_t;

struct gw {
    const bf_cfg_t *cfg;
    struct MHD_Daemon *httpd;
    const char *www_dir;
    int64_t max_body;
    int max_depth;
    int timeout_ms;
    int64_t session_ttl_s;
    int login_max_failures;
    int64_t login_window_s;
    int64_t methods_ttl_ms;
    bool cookie_secure;
    int nsvc;
    gw_svc_t svcs[GW_MAX_SVC];
    pthread_key_t tls_key;
    bool tls_ready;
    pthread_mutex_t lock; /* methods caches and the OpenAPI cache */
    char *openapi;
    int64_t openapi_at;
    gw_metrics_t *metrics;
};

int64_t gw_now_ms(void);

/* upstream.c */
int gw_tls_init(gw_t *g);
void gw_tls_fini(gw_t *g);
gw_svc_t *gw_svc_find(gw_t *g, const char *name);
/* This thread's client for a service (created on first use); NULL if OOM. */
bf_client_t *gw_client(gw_t *g, gw_svc_t *s);
/* This thread's database connection, connected; NULL if down. */
bf_db_t *gw_db(gw_t *g);
/* Fills *out for svc/method from the sys.methods cache, fetching it when
 * missing, older than gateway.methods_ttl_s, or (refresh_on_miss) when the
 * method is not in it and the cache is older than 2 s. */
void gw_method_info(gw_t *g, gw_svc_t *s, const char *method, bool refresh_on_miss,
                    gw_minfo_t *out);
/* The OpenAPI 3.0 document (malloc'd JSON text), or NULL if OOM. */
char *gw_openapi(gw_t *g);

/* auth.c */
/* Hashes password into out ("scrypt$<log2 N>$<r>$<p>$<salt hex>$<hash hex>").
 * Returns 0 or -1. */
int gw_password_hash(const char *password, int log2n, char *out, size_t outlen);
/* True if password matches the stored hash (constant-time compare). */
bool gw_password_verify(const char *password, const char *stored);
/* The SHA-256 of a token as 64 hex digits. */
void gw_token_sha256(const char *token, char out[65]);
/* A new random token (64 hex digits). Returns 0 or -1. */
int gw_token_new(char out[GW_TOKEN_HEX + 1]);
/* Creates the bootstrap admin if there are no users (start hook). */
int gw_bootstrap_admin(gw_t *g, bf_db_t *db);
/* Sign-in: on success returns 0 with token and *user filled; else -1 with
 * err set (unauthenticated, resource_exhausted, invalid_argument,
 * unavailable). */
int gw_login(gw_t *g, bf_db_t *db, const char *username, const char *password,
             const char *peer, char token[GW_TOKEN_HEX + 1], int64_t *expires_s,
             gw_user_t *user, bf_err_t *err);
/* Looks a token up: 0 with *user filled, 1 if unknown/expired/disabled,
 * -1 if the database is down. */
int gw_session_user(bf_db_t *db, const char *token, gw_user_t *user);
int gw_session_delete(bf_db_t *db, const char *token);
/* user.* RPC handlers */
int gw_user_create(bf_req_t *r);
int gw_user_set_password(bf_req_t *r);
int gw_user_list(bf_req_t *r);
int gw_user_disable(bf_req_t *r);
int gw_user_set_roles(bf_req_t *r);

/* http.c */
int gw_http_start(gw_t *g);
void gw_http_stop(gw_t *g);

/* metrics.c */
gw_metrics_t *gw_metrics_new(void);
void gw_metrics_free(gw_metrics_t *m);
/* One HTTP request: service ("" for non-API paths), method, status, seconds. */
void gw_metrics_request(gw_metrics_t *m, const char *svc, const char *method, int status,
                        double seconds);
/* An upstream call that failed with unavailable/internal. */
void gw_metrics_upstream_error(gw_metrics_t *m, const char *svc, const char *code);
/* The Prometheus text, including per-service sys.stats and notify
 * queues.stats fetched now. malloc'd; NULL if OOM. */
char *gw_metrics_render(gw_t *g);

#endif
