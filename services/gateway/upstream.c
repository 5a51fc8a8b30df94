/* gateway upstream: each HTTP thread's RPC clients and database connection
 * (a pthread key whose destructor releases them when the thread ends), the
 * cache of each service's sys.methods, and the OpenAPI document built from
 * it. */
#include "gateway.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bf_client_t *clients[GW_MAX_SVC];
    bf_db_t *db;
} gw_tls_t;

static void s_tls_free(void *p)
{
    gw_tls_t *t = p;
    if (!t) return;
    for (int i = 0; i < GW_MAX_SVC; i++) bf_client_destroy(&t->clients[i]);
    bf_db_destroy(&t->db);
    free(t);
}

int gw_tls_init(gw_t *g)
{
    if (pthread_key_create(&g->tls_key, s_tls_free) != 0) return -1;
    g->tls_ready = true;
    return 0;
}

void gw_tls_fini(gw_t *g)
{
    if (!g->tls_ready) return;
    s_tls_free(pthread_getspecific(g->tls_key)); /* this thread's, if any */
    pthread_setspecific(g->tls_key, NULL);
    pthread_key_delete(g->tls_key);
    g->tls_ready = false;
}

static gw_tls_t *s_tls(gw_t *g)
{
    gw_tls_t *t = pthread_getspecific(g->tls_key);
    if (t) return t;
    t = calloc(1, sizeof *t);
    if (t && pthread_setspecific(g->tls_key, t) != 0) {
        free(t);
        t = NULL;
    }
    return t;
}

gw_svc_t *gw_svc_find(gw_t *g, const char *name)
{
    for (int i = 0; i < g->nsvc; i++)
        if (!strcmp(g->svcs[i].name, name)) return &g->svcs[i];
    return NULL;
}

bf_client_t *gw_client(gw_t *g, gw_svc_t *s)
{
    gw_tls_t *t = s_tls(g);
    if (!t) return NULL;
    int i = (int)(s - g->svcs);
    /* CURVE (docs/security.md): as the process identity, the `gateway`
     * principal, which may act for others; plain sockets in plaintext mode */
    if (!t->clients[i]) t->clients[i] = bf_client_open(s->name, s->endpoint, g->timeout_ms);
    return t->clients[i];
}

bf_db_t *gw_db(gw_t *g)
{
    gw_tls_t *t = s_tls(g);
    if (!t) return NULL;
    if (!t->db) {
        t->db = bf_db_new(bf_cfg_str(g->cfg, "pg.dsn"), GW_SERVICE);
        if (!t->db) return NULL;
        if (bf_db_connect(t->db, 1) != 0) {
            bf_log(BF_WARN, "gateway: database: %s", bf_db_errmsg(t->db));
            bf_db_destroy(&t->db);
            return NULL;
        }
        return t->db;
    }
    return bf_db_ensure(t->db) == 0 ? t->db : NULL;
}

/* ------------------------------------------------------- methods cache */

/* Fetches s's sys.methods into the cache. 0 or -1. */
static int s_fetch(gw_t *g, gw_svc_t *s)
{
    bf_client_t *c = gw_client(g, s);
    if (!c) return -1;
    bf_reply_t rep;
    int rc = bf_client_call(c, "sys.methods", NULL, 0, "gateway", &rep);
    if (rc != 0 || !rep.ok || rep.result->type != MSGPACK_OBJECT_ARRAY) {
        bf_reply_destroy(&rep);
        return -1;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bf_mp_obj(&pk, rep.result);
    bf_reply_destroy(&rep);
    pthread_mutex_lock(&g->lock);
    free(s->methods);
    s->methods = sb.data; /* the sbuffer's malloc'd bytes, now the cache's */
    s->methods_len = sb.size;
    s->fetched_ms = gw_now_ms();
    pthread_mutex_unlock(&g->lock);
    return 0;
}

/* Under g->lock: fills out from the cached list. */
static void s_lookup(gw_svc_t *s, const char *method, gw_minfo_t *out)
{
    memset(out, 0, sizeof *out);
    if (!s->methods) return;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, s->methods, s->methods_len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < u.data.via.array.size; i++) {
            const msgpack_object *m = &u.data.via.array.ptr[i];
            if (!bf_mp_str_eq(bf_mp_get(m, "name"), method)) continue;
            out->found = true;
            const msgpack_object *w = bf_mp_get(m, "writes");
            out->writes = w && w->type == MSGPACK_OBJECT_BOOLEAN && w->via.boolean;
            const msgpack_object *ps = bf_mp_get(m, "params");
            if (!ps || ps->type != MSGPACK_OBJECT_ARRAY) break;
            for (uint32_t j = 0; j < ps->via.array.size && out->nparams < GW_MAX_PARAMS; j++) {
                const msgpack_object *n = bf_mp_get(&ps->via.array.ptr[j], "name");
                const msgpack_object *t = bf_mp_get(&ps->via.array.ptr[j], "type");
                if (!n || n->type != MSGPACK_OBJECT_STR || !t || t->type != MSGPACK_OBJECT_STR ||
                    n->via.str.size >= sizeof out->params[0].name ||
                    t->via.str.size >= sizeof out->params[0].type)
                    continue;
                int k = out->nparams++;
                memcpy(out->params[k].name, n->via.str.ptr, n->via.str.size);
                out->params[k].name[n->via.str.size] = 0;
                memcpy(out->params[k].type, t->via.str.ptr, t->via.str.size);
                out->params[k].type[t->via.str.size] = 0;
            }
            break;
        }
    }
    msgpack_unpacked_destroy(&u);
}

void gw_method_info(gw_t *g, gw_svc_t *s, const char *method, bool refresh_on_miss,
                    gw_minfo_t *out)
{
    int64_t now = gw_now_ms();
    pthread_mutex_lock(&g->lock);
    bool stale = !s->methods || now - s->fetched_ms > g->methods_ttl_ms;
    if (!stale) s_lookup(s, method, out);
    bool refetch = stale || (!out->found && refresh_on_miss && now - s->fetched_ms > 2000);
    pthread_mutex_unlock(&g->lock);
    if (!refetch) return;
    s_fetch(g, s); /* on failure the old list (if any) stays */
    pthread_mutex_lock(&g->lock);
    s_lookup(s, method, out);
    pthread_mutex_unlock(&g->lock);
}

/* -------------------------------------------------------------- OpenAPI */

static json_t *s_str(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR) return json_string("");
    return json_stringn(o->via.str.ptr, o->via.str.size);
}

static json_t *s_schema(const msgpack_object *p)
{
    const msgpack_object *t = bf_mp_get(p, "type");
    const msgpack_object *mx = bf_mp_get(p, "max");
    int64_t max = 0;
    if (mx) bf_mp_int(mx, &max);
    json_t *sc = json_object();
    if (bf_mp_str_eq(t, "string")) {
        json_object_set_new(sc, "type", json_string("string"));
        if (max > 0) json_object_set_new(sc, "maxLength", json_integer(max));
    } else if (bf_mp_str_eq(t, "integer")) {
        json_object_set_new(sc, "type", json_string("integer"));
        json_object_set_new(sc, "format", json_string("int64"));
    } else if (bf_mp_str_eq(t, "boolean")) {
        json_object_set_new(sc, "type", json_string("boolean"));
    } else if (bf_mp_str_eq(t, "map")) {
        json_object_set_new(sc, "type", json_string("object"));
    } else if (bf_mp_str_eq(t, "list")) {
        json_object_set_new(sc, "type", json_string("array"));
        json_object_set_new(sc, "items", json_object());
        if (max > 0) json_object_set_new(sc, "maxItems", json_integer(max));
    }
    /* any: the empty schema */
    json_t *doc = s_str(bf_mp_get(p, "doc"));
    json_object_set_new(sc, "description", doc);
    return sc;
}

static json_t *s_error_responses(bool writes)
{
    static const char *const codes[][2] = {
        {"400", "invalid_argument"},
        {"401", "unauthenticated: no or expired session"},
        {"403", "permission_denied: the person's roles or region do not allow it"},
        {"404", "not_found"},
        {"409", "already_exists, conflict or failed_precondition"},
        {"413", "request body too large"},
        {"429", "resource_exhausted"},
        {"500", "internal"},
        {"503", "unavailable: the service did not answer"},
    };
    json_t *r = json_object();
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (!writes && !strcmp(codes[i][0], "413")) continue;
        json_object_set_new(
            r, codes[i][0],
            json_pack("{s:s, s:{s:{s:{s:s}}}}", "description", codes[i][1], "content",
                      "application/json", "schema", "$ref", "#/components/schemas/Error"));
    }
    return r;
}

static json_t *s_ok_response(const char *what)
{
    return json_pack("{s:s, s:{s:{s:{s:s, s:{s:{}}}}}}", "description", what, "content",
                     "application/json", "schema", "type", "object", "properties", "result");
}

/* Adds the paths of one service from its sys.methods list. */
static void s_service_paths(json_t *paths, const char *svc, const msgpack_object *list)
{
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *m = &list->via.array.ptr[i];
        const msgpack_object *name = bf_mp_get(m, "name");
        if (!name || name->type != MSGPACK_OBJECT_STR) continue;
        char mname[128];
        snprintf(mname, sizeof mname, "%.*s", (int)name->via.str.size, name->via.str.ptr);
        const msgpack_object *w = bf_mp_get(m, "writes");
        bool writes = w && w->type == MSGPACK_OBJECT_BOOLEAN && w->via.boolean;
        char roles[256] = "";
        const msgpack_object *ro = bf_mp_get(m, "roles");
        if (ro && ro->type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t j = 0; j < ro->via.array.size; j++) {
                const msgpack_object *e = &ro->via.array.ptr[j];
                if (e->type != MSGPACK_OBJECT_STR) continue;
                size_t l = strlen(roles);
                snprintf(roles + l, sizeof roles - l, "%s%.*s", l ? ", " : "",
                         (int)e->via.str.size, e->via.str.ptr);
            }
        const msgpack_object *doc = bf_mp_get(m, "doc");
        char desc[1024];
        snprintf(desc, sizeof desc, "%.*s\n\nRoles: %s.%s",
                 doc && doc->type == MSGPACK_OBJECT_STR ? (int)doc->via.str.size : 0,
                 doc && doc->type == MSGPACK_OBJECT_STR ? doc->via.str.ptr : "",
                 roles[0] ? roles : "admin",
                 writes ? " Writes: POST only (GET answers 405)." : " Reads: GET or POST.");
        json_t *props = json_object(), *req = json_array(), *qparams = json_array();
        const msgpack_object *ps = bf_mp_get(m, "params");
        if (ps && ps->type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t j = 0; j < ps->via.array.size; j++) {
                const msgpack_object *p = &ps->via.array.ptr[j];
                const msgpack_object *pn = bf_mp_get(p, "name");
                if (!pn || pn->type != MSGPACK_OBJECT_STR) continue;
                char pname[64];
                snprintf(pname, sizeof pname, "%.*s", (int)pn->via.str.size, pn->via.str.ptr);
                const msgpack_object *rq = bf_mp_get(p, "required");
                bool required = rq && rq->type == MSGPACK_OBJECT_BOOLEAN && rq->via.boolean;
                json_object_set_new(props, pname, s_schema(p));
                if (required) json_array_append_new(req, json_string(pname));
                if (!writes) {
                    const msgpack_object *t = bf_mp_get(p, "type");
                    bool scalar = bf_mp_str_eq(t, "string") || bf_mp_str_eq(t, "integer") ||
                                  bf_mp_str_eq(t, "boolean");
                    json_t *qp = json_pack("{s:s, s:s, s:b}", "name", pname, "in", "query",
                                           "required", required);
                    json_t *sc = s_schema(p);
                    json_object_set(qp, "description", json_object_get(sc, "description"));
                    if (scalar) {
                        json_object_set_new(qp, "schema", sc);
                    } else { /* a JSON text in the query string */
                        json_object_set_new(
                            qp, "content",
                            json_pack("{s:{s:o}}", "application/json", "schema", sc));
                    }
                    json_array_append_new(qparams, qp);
                }
            }
        json_t *body_schema = json_pack("{s:s, s:o, s:b}", "type", "object", "properties", props,
                                        "additionalProperties", 0);
        if (json_array_size(req) > 0) json_object_set(body_schema, "required", req);
        char path[192], opid[192];
        snprintf(path, sizeof path, "/v1/%s/%s", svc, mname);
        json_t *item = json_object();
        snprintf(opid, sizeof opid, "%s.%s", svc, mname);
        json_t *post = json_pack("{s:s, s:s, s:s, s:[s], s:{s:b, s:{s:{s:O}}}, s:o}", "operationId",
                                 opid, "summary", "", "description", desc, "tags", svc, "requestBody", "required",
                                 json_array_size(req) > 0, "content", "application/json",
                                 "schema", body_schema, "responses", s_error_responses(true));
        json_object_set_new(post, "summary", s_str(doc));
        json_object_set_new(json_object_get(post, "responses"), "200", s_ok_response("the result"));
        json_object_set_new(item, "post", post);
        if (!writes) {
            snprintf(opid, sizeof opid, "%s.%s.get", svc, mname);
            json_t *get = json_pack("{s:s, s:s, s:[s], s:O, s:o}", "operationId", opid,
                                    "description", desc, "tags", svc, "parameters", qparams,
                                    "responses", s_error_responses(false));
            json_object_set_new(get, "summary", s_str(doc));
            json_object_set_new(json_object_get(get, "responses"), "200",
                                s_ok_response("the result"));
            json_object_set_new(item, "get", get);
        }
        json_decref(qparams);
        json_decref(req);
        json_decref(body_schema);
        json_object_set_new(paths, path, item);
    }
}

static json_t *s_fixed_paths(void)
{
    json_t *paths = json_object();
    json_t *login_body = json_pack(
        "{s:b, s:{s:{s:{s:s, s:[s,s], s:{s:{s:s, s:i}, s:{s:s, s:i}}}}}}", "required", 1,
        "content", "application/json", "schema", "type", "object", "required", "username",
        "password", "properties", "username", "type", "string", "maxLength", 64, "password",
        "type", "string", "maxLength", 1024);
    json_t *session_ok = json_pack(
        "{s:s, s:{s:{s:{s:s, s:{s:{s:s}, s:{s:s, s:s}, s:{s:s}}}}}}", "description",
        "signed in: the bearer token (also set as the HttpOnly cookie bf_session)", "content",
        "application/json", "schema", "type", "object", "properties", "token", "type", "string",
        "expires_at", "type", "integer", "format", "int64", "user", "type", "object");
    json_t *post = json_pack("{s:s, s:s, s:[s], s:[], s:o, s:o}", "operationId", "session.create",
                             "summary", "sign in", "tags", "session", "security", "requestBody",
                             login_body, "responses", s_error_responses(true));
    json_object_set_new(json_object_get(post, "responses"), "200", session_ok);
    json_t *get = json_pack("{s:s, s:s, s:[s], s:o}", "operationId", "session.get", "summary",
                            "who is signed in", "tags", "session", "responses",
                            s_error_responses(false));
    json_object_set_new(json_object_get(get, "responses"), "200", s_ok_response("the person"));
    json_t *del = json_pack("{s:s, s:s, s:[s], s:o}", "operationId", "session.delete", "summary",
                            "sign out", "tags", "session", "responses", s_error_responses(false));
    json_object_set_new(json_object_get(del, "responses"), "200", s_ok_response("signed out"));
    json_object_set_new(paths, "/v1/session", json_pack("{s:o, s:o, s:o}", "post", post, "get",
                                                        get, "delete", del));
    json_object_set_new(
        paths, "/healthz",
        json_pack("{s:{s:s, s:s, s:[], s:{s:{s:s}, s:{s:s}}}}", "get", "operationId", "healthz",
                  "summary", "liveness: the gateway and its database", "security", "responses",
                  "200", "description", "ok", "503", "description", "database down"));
    json_object_set_new(
        paths, "/metrics",
        json_pack("{s:{s:s, s:s, s:[], s:{s:{s:s, s:{s:{s:{s:s}}}}}}}", "get", "operationId",
                  "metrics", "summary", "Prometheus text format", "security", "responses", "200",
                  "description", "metrics", "content", "text/plain", "schema", "type",
                  "string"));
    json_object_set_new(
        paths, "/v1/openapi.json",
        json_pack("{s:{s:s, s:s, s:[], s:{s:{s:s}}}}", "get", "operationId", "openapi",
                  "summary", "this document", "security", "responses", "200", "description",
                  "the OpenAPI 3.0 document"));
    return paths;
}

char *gw_openapi(gw_t *g)
{
    int64_t now = gw_now_ms();
    pthread_mutex_lock(&g->lock);
    if (g->openapi && now - g->openapi_at < g->methods_ttl_ms) {
        char *copy = strdup(g->openapi);
        pthread_mutex_unlock(&g->lock);
        return copy;
    }
    pthread_mutex_unlock(&g->lock);

    bool complete = true;
    for (int i = 0; i < g->nsvc; i++) {
        gw_minfo_t mi;
        gw_method_info(g, &g->svcs[i], "sys.health", false, &mi); /* fetches if stale */
        if (!mi.found) complete = false;
    }
    json_t *doc = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:[{s:s}], s:{s:{s:{s:s, s:s}, s:{s:s, s:s, s:s}}, "
        "s:{s:{s:s, s:[s], s:{s:{s:s, s:[s,s], s:{s:{s:s}, s:{s:s}, s:{s:s}}}}}}}, "
        "s:[{s:[]}, {s:[]}]}",
        "openapi", "3.0.3", "info", "title", "bangfu HTTP API", "version", GW_VERSION,
        "description",
        "Every bangfu service method under /v1/{service}/{method}: POST with a JSON body of "
        "params, or GET with query parameters for methods that do not write. Results come as "
        "{\"result\": ...}; errors as {\"error\": {code, message, field}}. Sign in with POST "
        "/v1/session. Generated from each service's sys.methods.",
        "servers", "url", "/", "components", "securitySchemes", "bearer", "type", "http",
        "scheme", "bearer", "cookie", "type", "apiKey", "in", "cookie", "name", "bf_session",
        "schemas", "Error", "type", "object", "required", "error", "properties", "error",
        "type", "object", "required", "code", "message", "properties", "code", "type",
        "string", "message", "type", "string", "field", "type", "string", "security",
        "bearer", "cookie");
    if (!doc) return NULL;
    /* "field": {type: string, nullable: true} (OpenAPI 3.0 has no "null" type) */
    static const char *const path[] = {"components", "schemas", "Error", "properties",
                                       "error", "properties", "field"};
    json_t *field = doc;
    for (size_t i = 0; field && i < sizeof path / sizeof path[0]; i++)
        field = json_object_get(field, path[i]);
    if (field) {
        json_object_set_new(field, "type", json_string("string"));
        json_object_set_new(field, "nullable", json_true());
    }
    json_t *paths = s_fixed_paths();
    json_t *tags = json_array();
    json_array_append_new(tags, json_pack("{s:s, s:s}", "name", "session", "description",
                                          "sign in and out"));
    pthread_mutex_lock(&g->lock);
    for (int i = 0; i < g->nsvc; i++) {
        gw_svc_t *s = &g->svcs[i];
        if (!s->methods) continue;
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, s->methods, s->methods_len, NULL) ==
                MSGPACK_UNPACK_SUCCESS &&
            u.data.type == MSGPACK_OBJECT_ARRAY) {
            s_service_paths(paths, s->name, &u.data);
            json_array_append_new(tags, json_pack("{s:s, s:s}", "name", s->name, "description",
                                                  "the service's RPC methods"));
        }
        msgpack_unpacked_destroy(&u);
    }
    pthread_mutex_unlock(&g->lock);
    json_object_set_new(doc, "paths", paths);
    json_object_set_new(doc, "tags", tags);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text && complete) {
        pthread_mutex_lock(&g->lock);
        free(g->openapi);
        g->openapi = strdup(text);
        g->openapi_at = gw_now_ms();
        pthread_mutex_unlock(&g->lock);
    }
    return text;
}
