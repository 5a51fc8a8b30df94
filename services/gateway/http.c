/* gateway http: the libmicrohttpd server (docs/http.md).
 *
 * Routes: /healthz, /metrics, /v1/openapi.json, /v1/session (POST sign in,
 * GET who am I, DELETE sign out), /v1/{service}/{method} (POST JSON body or,
 * for methods that do not write, GET with query parameters), and the
 * console's static files from gateway.www_dir. Request bodies are bounded
 * (gateway.max_body_bytes, 413) and so is JSON nesting
 * (gateway.max_json_depth). Every API call is made acting for the signed-in
 * person; cookie-authenticated writes need the X-Bangfu-CSRF header, which a
 * cross-site form cannot send.
 */
#include "gateway.h"
#include "bf_json.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GW_COOKIE "bf_session"
#define GW_CSRF_HEADER "X-Bangfu-CSRF"
#define GW_MAX_QUERY_ARGS 64

typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
    struct timespec start;
    char svc[32];
    char method[100];
    int status;
} gw_conn_t;

/* ------------------------------------------------------------ responses */

static int s_status_of(const char *code)
{
    if (!code) return 200;
    if (!strcmp(code, BF_E_INVALID)) return 400;
    if (!strcmp(code, BF_E_UNAUTHENTICATED)) return 401;
    if (!strcmp(code, BF_E_PERMISSION)) return 403;
    if (!strcmp(code, BF_E_NOT_FOUND)) return 404;
    if (!strcmp(code, BF_E_EXISTS) || !strcmp(code, BF_E_CONFLICT) ||
        !strcmp(code, BF_E_PRECONDITION))
        return 409;
    if (!strcmp(code, BF_E_EXHAUSTED)) return 429;
    if (!strcmp(code, BF_E_UNAVAILABLE)) return 503;
    return 500;
}

static void s_common_headers(struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

/* Queues text (malloc'd; taken over) with status and content type. */
static enum MHD_Result s_send(struct MHD_Connection *c, gw_conn_t *cc, int status, char *text,
                              const char *ctype, const char *set_cookie)
{
    if (!text) {
        status = 500;
        text = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\","
                      "\"field\":null}}");
        if (!text) return MHD_NO;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    s_common_headers(r);
    if (set_cookie) MHD_add_response_header(r, "Set-Cookie", set_cookie);
    if (status == 405) MHD_add_response_header(r, "Allow", "POST");
    cc->status = status;
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_error_status(struct MHD_Connection *c, gw_conn_t *cc, int status,
                                      const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result s_error_status(struct MHD_Connection *c, gw_conn_t *cc, int status,
                                      const char *code, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:s, s:s, s:s?}}", "error", "code", code, "message", msg, "field",
                          field && *field ? field : NULL);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s_send(c, cc, status, text, "application/json; charset=utf-8", NULL);
}

#define s_error(c, cc, code, field, ...)                                                   \
    s_error_status(c, cc, s_status_of(code), code, field, __VA_ARGS__)

static enum MHD_Result s_json(struct MHD_Connection *c, gw_conn_t *cc, int status, json_t *j,
                              const char *set_cookie)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s_send(c, cc, status, text, "application/json; charset=utf-8", set_cookie);
}

/* --------------------------------------------------------- JSON checks */

/* Depth of the deepest nesting of arrays/objects in JSON text (strings
 * skipped), or INT32_MAX past the limit. */
static int s_json_depth(const char *s, size_t n, int limit)
{
    int depth = 0, max = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\') i++;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') {
            if (++depth > max) max = depth;
            if (max > limit) return INT32_MAX;
        } else if (ch == '}' || ch == ']')
            depth--;
    }
    return max;
}

/* ----------------------------------------------------------------- auth */

static const char *s_peer(struct MHD_Connection *c, char *buf, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    buf[0] = 0;
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, buf,
                  (socklen_t)n);
    return buf;
}

/* The bearer token from Authorization or the cookie. *cookie tells which. */
static const char *s_token(struct MHD_Connection *c, bool *cookie)
{
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    *cookie = false;
    if (a && !strncasecmp(a, "Bearer ", 7)) {
        a += 7;
        while (*a == ' ') a++;
        return a;
    }
    const char *k = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, GW_COOKIE);
    if (k && *k) {
        *cookie = true;
        return k;
    }
    return NULL;
}

/* Authenticates the request: 0 with *u filled, or -1 with a response
 * queued in *rc. */
static int s_authenticate(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc, bool writes_http,
                          gw_user_t *u, enum MHD_Result *rc)
{
    bool cookie;
    const char *tok = s_token(c, &cookie);
    if (!tok) {
        *rc = s_error(c, cc, BF_E_UNAUTHENTICATED, "Authorization",
                      "sign in first (POST /v1/session), then send Authorization: Bearer <token>");
        return -1;
    }
    if (cookie && writes_http) {
        const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, GW_CSRF_HEADER);
        if (!h || strcmp(h, "1") != 0) {
            *rc = s_error(c, cc, BF_E_PERMISSION, GW_CSRF_HEADER,
                          "a cookie-authenticated write needs the header " GW_CSRF_HEADER ": 1");
            return -1;
        }
    }
    bf_db_t *db = gw_db(g);
    int r = db ? gw_session_user(db, tok, u) : -1;
    if (r < 0) {
        *rc = s_error(c, cc, BF_E_UNAVAILABLE, NULL, "the user database is not reachable");
        return -1;
    }
    if (r > 0) {
        *rc = s_error(c, cc, BF_E_UNAUTHENTICATED, "Authorization",
                      "the session is unknown or has expired; sign in again");
        return -1;
    }
    return 0;
}

/* {roles: [...], region, cadre_id} of the person, packed. */
static void s_pack_auth(msgpack_packer *pk, const gw_user_t *u)
{
    int n = 1 + (u->region[0] != 0) + (u->cadre_id > 0);
    msgpack_pack_map(pk, (size_t)n);
    bf_mp_key(pk, "roles");
    size_t cnt = 0;
    for (const char *q = u->roles; *q;) {
        size_t l = strcspn(q, ",");
        if (l) cnt++;
        q += l;
        if (*q) q++;
    }
    msgpack_pack_array(pk, cnt);
    for (const char *q = u->roles; *q;) {
        size_t l = strcspn(q, ",");
        if (l) bf_mp_strn(pk, q, l);
        q += l;
        if (*q) q++;
    }
    if (u->region[0]) bf_mp_kv_str(pk, "region", u->region);
    if (u->cadre_id > 0) bf_mp_kv_int(pk, "cadre_id", u->cadre_id);
}

static json_t *s_user_json(const gw_user_t *u)
{
    json_t *roles = json_array();
    for (const char *q = u->roles; *q;) {
        size_t l = strcspn(q, ",");
        if (l) json_array_append_new(roles, json_stringn(q, l));
        q += l;
        if (*q) q++;
    }
    json_t *j = json_pack("{s:s, s:o}", "username", u->username, "roles", roles);
    json_object_set_new(j, "region", u->region[0] ? json_string(u->region) : json_null());
    json_object_set_new(j, "cadre_id", u->cadre_id > 0 ? json_integer(u->cadre_id) : json_null());
    return j;
}

/* ------------------------------------------------------------- session */

static enum MHD_Result s_session(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc,
                                 const char *method)
{
    snprintf(cc->svc, sizeof cc->svc, "session");
    snprintf(cc->method, sizeof cc->method, "%s", method);
    char cookie[256];
    if (!strcmp(method, "POST")) {
        if (cc->len == 0)
            return s_error(c, cc, BF_E_INVALID, "body", "send {\"username\", \"password\"}");
        json_error_t je;
        json_t *j = json_loadb(cc->body, cc->len, JSON_REJECT_DUPLICATES, &je);
        if (!j || !json_is_object(j)) {
            json_decref(j);
            return s_error(c, cc, BF_E_INVALID, "body", "body must be a JSON object");
        }
        const char *user = json_string_value(json_object_get(j, "username"));
        const char *pw = json_string_value(json_object_get(j, "password"));
        if (!user || !pw) {
            json_decref(j);
            return s_error(c, cc, BF_E_INVALID, !user ? "username" : "password",
                           "username and password are required strings");
        }
        bf_db_t *db = gw_db(g);
        if (!db) {
            json_decref(j);
            return s_error(c, cc, BF_E_UNAVAILABLE, NULL, "the user database is not reachable");
        }
        char token[GW_TOKEN_HEX + 1], peer[64];
        int64_t exp = 0;
        gw_user_t u;
        bf_err_t err = {0};
        int rc = gw_login(g, db, user, pw, s_peer(c, peer, sizeof peer), token, &exp, &u, &err);
        json_decref(j);
        if (rc != 0) return s_error(c, cc, err.code, err.field, "%s", err.message);
        snprintf(cookie, sizeof cookie,
                 GW_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld%s", token,
                 (long long)g->session_ttl_s, g->cookie_secure ? "; Secure" : "");
        json_t *out = json_pack("{s:s, s:I, s:o}", "token", token, "expires_at", (json_int_t)exp,
                                "user", s_user_json(&u));
        return s_json(c, cc, 200, out, cookie);
    }
    gw_user_t u;
    enum MHD_Result rc;
    if (!strcmp(method, "GET")) {
        if (s_authenticate(g, c, cc, false, &u, &rc) != 0) return rc;
        return s_json(c, cc, 200, json_pack("{s:o}", "user", s_user_json(&u)), NULL);
    }
    if (!strcmp(method, "DELETE")) {
        if (s_authenticate(g, c, cc, true, &u, &rc) != 0) return rc;
        bool is_cookie;
        const char *tok = s_token(c, &is_cookie);
        bf_db_t *db = gw_db(g);
        if (!db || gw_session_delete(db, tok) != 0)
            return s_error(c, cc, BF_E_UNAVAILABLE, NULL, "the user database is not reachable");
        snprintf(cookie, sizeof cookie, GW_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
        return s_json(c, cc, 200, json_pack("{s:b}", "signed_out", 1), cookie);
    }
    return s_error_status(c, cc, 405, BF_E_INVALID, "method", "use POST, GET or DELETE");
}

/* ------------------------------------------------------------- API call */

typedef struct {
    const gw_minfo_t *mi;
    int n;
    const char *keys[GW_MAX_QUERY_ARGS];
    const char *vals[GW_MAX_QUERY_ARGS];
    bool overflow;
} gw_query_t;

static enum MHD_Result s_collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    gw_query_t *q = cls;
    if (q->n >= GW_MAX_QUERY_ARGS) {
        q->overflow = true;
        return MHD_NO;
    }
    q->keys[q->n] = key;
    q->vals[q->n] = value ? value : "";
    q->n++;
    return MHD_YES;
}

/* Packs the query arguments as a params map, typed by the method's table.
 * Returns 0, or -1 with an error response queued in *rc. */
static int s_query_params(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc,
                          const gw_minfo_t *mi, msgpack_sbuffer *sb, enum MHD_Result *rc)
{
    gw_query_t q = {.mi = mi};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, s_collect_arg, &q);
    if (q.overflow) {
        *rc = s_error(c, cc, BF_E_INVALID, "query", "at most %d query parameters",
                      GW_MAX_QUERY_ARGS);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)q.n);
    for (int i = 0; i < q.n; i++) {
        for (int j = 0; j < i; j++)
            if (!strcmp(q.keys[i], q.keys[j])) {
                *rc = s_error(c, cc, BF_E_INVALID, q.keys[i], "%s: given more than once",
                              q.keys[i]);
                return -1;
            }
        const char *type = "string";
        for (int k = 0; k < mi->nparams; k++)
            if (!strcmp(mi->params[k].name, q.keys[i])) type = mi->params[k].type;
        bf_mp_str(&pk, q.keys[i]);
        const char *v = q.vals[i];
        if (!strcmp(type, "integer")) {
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || errno) {
                *rc = s_error(c, cc, BF_E_INVALID, q.keys[i], "%s must be an integer",
                              q.keys[i]);
                return -1;
            }
            msgpack_pack_int64(&pk, x);
        } else if (!strcmp(type, "boolean")) {
            if (!strcmp(v, "true") || !strcmp(v, "1")) msgpack_pack_true(&pk);
            else if (!strcmp(v, "false") || !strcmp(v, "0")) msgpack_pack_false(&pk);
            else {
                *rc = s_error(c, cc, BF_E_INVALID, q.keys[i], "%s must be true or false",
                              q.keys[i]);
                return -1;
            }
        } else if (!strcmp(type, "map") || !strcmp(type, "list") || !strcmp(type, "any")) {
            char err[256];
            if (s_json_depth(v, strlen(v), g->max_depth) > g->max_depth) {
                *rc = s_error(c, cc, BF_E_INVALID, q.keys[i], "%s nests deeper than %d",
                              q.keys[i], g->max_depth);
                return -1;
            }
            if (bf_json_to_msgpack(v, strlen(v), sb, err, sizeof err) != 0) {
                *rc = s_error(c, cc, BF_E_INVALID, q.keys[i], "%s: not JSON: %s", q.keys[i],
                              err);
                return -1;
            }
        } else {
            bf_mp_str(&pk, v);
        }
    }
    return 0;
}

static bool s_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '.'))
            return false;
    return true;
}

static enum MHD_Result s_api(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc,
                             const char *http_method, const char *svc_name, const char *method)
{
    bool is_get = !strcmp(http_method, "GET");
    if (!is_get && strcmp(http_method, "POST") != 0)
        return s_error_status(c, cc, 405, BF_E_INVALID, "method",
                              "use POST (or GET for methods that do not write)");
    gw_svc_t *s = gw_svc_find(g, svc_name);
    if (!s) return s_error(c, cc, BF_E_NOT_FOUND, "service", "no service %s", svc_name);
    snprintf(cc->svc, sizeof cc->svc, "%s", s->name);
    if (!s_name_ok(method, 96))
        return s_error(c, cc, BF_E_NOT_FOUND, "method", "no method %s", method);
    gw_user_t u;
    enum MHD_Result rc;
    if (s_authenticate(g, c, cc, !is_get, &u, &rc) != 0) return rc;
    gw_minfo_t *mi = malloc(sizeof *mi);
    if (!mi) return s_error(c, cc, BF_E_INTERNAL, NULL, "out of memory");
    gw_method_info(g, s, method, true, mi);
    snprintf(cc->method, sizeof cc->method, "%s", mi->found ? method : "_unknown");
    if (is_get && mi->writes) {
        free(mi);
        return s_error_status(c, cc, 405, BF_E_INVALID, "method", "%s writes: use POST",
                              method);
    }
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    if (is_get) {
        /* a method not known here (service down, no such method) gets its
         * arguments as strings; the service then says what is wrong */
        if (s_query_params(g, c, cc, mi, &params, &rc) != 0) {
            free(mi);
            msgpack_sbuffer_destroy(&params);
            return rc;
        }
    } else if (cc->len > 0) {
        char err[256];
        size_t i = 0;
        while (i < cc->len && (cc->body[i] == ' ' || cc->body[i] == '\n' ||
                               cc->body[i] == '\r' || cc->body[i] == '\t'))
            i++;
        if (i == cc->len || cc->body[i] != '{') {
            free(mi);
            msgpack_sbuffer_destroy(&params);
            return s_error(c, cc, BF_E_INVALID, "body", "the body must be a JSON object of params");
        }
        if (s_json_depth(cc->body, cc->len, g->max_depth) > g->max_depth) {
            free(mi);
            msgpack_sbuffer_destroy(&params);
            return s_error(c, cc, BF_E_INVALID, "body", "the body nests deeper than %d",
                           g->max_depth);
        }
        if (bf_json_to_msgpack(cc->body, cc->len, &params, err, sizeof err) != 0) {
            free(mi);
            msgpack_sbuffer_destroy(&params);
            return s_error(c, cc, BF_E_INVALID, "body", "the body is not valid JSON: %s", err);
        }
    }
    free(mi);
    msgpack_sbuffer auth;
    msgpack_sbuffer_init(&auth);
    msgpack_packer apk;
    msgpack_packer_init(&apk, &auth, msgpack_sbuffer_write);
    s_pack_auth(&apk, &u);
    char actor[80];
    snprintf(actor, sizeof actor, "user:%s", u.username);
    bf_client_t *cl = gw_client(g, s);
    bf_reply_t rep;
    int r = cl ? bf_client_call_as(cl, method, params.size ? params.data : NULL, params.size,
                                   actor, auth.data, auth.size, &rep)
               : -1;
    msgpack_sbuffer_destroy(&params);
    msgpack_sbuffer_destroy(&auth);
    if (!cl) return s_error(c, cc, BF_E_INTERNAL, NULL, "out of memory");
    if (r != 0) {
        gw_metrics_upstream_error(g->metrics, s->name, rep.code[0] ? rep.code : BF_E_UNAVAILABLE);
        enum MHD_Result out =
            s_error(c, cc, rep.code[0] ? rep.code : BF_E_UNAVAILABLE, NULL,
                    "%s did not answer: %s", s->name, rep.message);
        bf_reply_destroy(&rep);
        return out;
    }
    if (!rep.ok) {
        if (!strcmp(rep.code, BF_E_UNAVAILABLE) || !strcmp(rep.code, BF_E_INTERNAL))
            gw_metrics_upstream_error(g->metrics, s->name, rep.code);
        enum MHD_Result out = s_error(c, cc, rep.code[0] ? rep.code : BF_E_INTERNAL, rep.field,
                                      "%s", rep.message);
        bf_reply_destroy(&rep);
        return out;
    }
    char *res = bf_json_from_msgpack(rep.result, BF_JSON_COMPACT);
    bf_reply_destroy(&rep);
    if (!res) return s_error(c, cc, BF_E_INTERNAL, NULL, "the result cannot be shown as JSON");
    size_t n = strlen(res);
    char *text = malloc(n + 12);
    if (text) {
        memcpy(text, "{\"result\":", 10);
        memcpy(text + 10, res, n);
        memcpy(text + 10 + n, "}", 2);
    }
    free(res);
    return s_send(c, cc, 200, text, "application/json; charset=utf-8", NULL);
}

/* --------------------------------------------------------- static files */

static const char *s_mime(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".json")) return "application/json; charset=utf-8";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    return NULL;
}

static enum MHD_Result s_static(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc,
                                const char *url)
{
    snprintf(cc->svc, sizeof cc->svc, "static");
    const char *name = url + 1;
    if (!*name) name = "index.html";
    /* one plain file name: no directories, no dot files, nothing to escape */
    bool ok = strlen(name) < 64 && name[0] != '.';
    for (const char *p = name; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
             *p == '.';
    const char *mime = ok ? s_mime(name) : NULL;
    if (!mime) return s_error(c, cc, BF_E_NOT_FOUND, "path", "no such page");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g->www_dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return s_error(c, cc, BF_E_NOT_FOUND, "path", "no such page");
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!r) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", mime);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    s_common_headers(r);
    cc->status = 200;
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---------------------------------------------------------------- route */

static enum MHD_Result s_route(gw_t *g, struct MHD_Connection *c, gw_conn_t *cc,
                               const char *url, const char *method)
{
    if (cc->too_big)
        return s_error_status(c, cc, 413, BF_E_EXHAUSTED, "body",
                              "the request body is larger than %lld bytes",
                              (long long)g->max_body);
    if (!strcmp(url, "/healthz")) {
        snprintf(cc->svc, sizeof cc->svc, "healthz");
        bf_db_t *db = gw_db(g);
        bool ok = false;
        if (db) {
            PGresult *res = bf_db_exec(db, "SELECT 1", 0, NULL);
            if (res) {
                ok = true;
                PQclear(res);
            }
        }
        return s_json(c, cc, ok ? 200 : 503,
                      json_pack("{s:s, s:s, s:s}", "status", ok ? "ok" : "degraded", "service",
                                GW_SERVICE, "db", ok ? "ok" : "down"),
                      NULL);
    }
    if (!strcmp(url, "/metrics")) {
        snprintf(cc->svc, sizeof cc->svc, "metrics");
        return s_send(c, cc, 200, gw_metrics_render(g), "text/plain; version=0.0.4", NULL);
    }
    if (!strcmp(url, "/v1/openapi.json")) {
        snprintf(cc->svc, sizeof cc->svc, "openapi");
        return s_send(c, cc, 200, gw_openapi(g), "application/json; charset=utf-8", NULL);
    }
    if (!strcmp(url, "/v1/session")) return s_session(g, c, cc, method);
    if (!strncmp(url, "/v1/", 4)) {
        const char *rest = url + 4;
        const char *slash = strchr(rest, '/');
        char svc[32];
        if (!slash || (size_t)(slash - rest) >= sizeof svc || strchr(slash + 1, '/'))
            return s_error(c, cc, BF_E_NOT_FOUND, "path", "use /v1/{service}/{method}");
        memcpy(svc, rest, (size_t)(slash - rest));
        svc[slash - rest] = 0;
        return s_api(g, c, cc, method, svc, slash + 1);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return s_error_status(c, cc, 405, BF_E_INVALID, "method", "static pages: GET only");
    return s_static(g, c, cc, url);
}

static enum MHD_Result s_handler(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    gw_t *g = cls;
    gw_conn_t *cc = *con_cls;
    if (!cc) {
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &cc->start);
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > (unsigned long long)g->max_body) {
            cc->too_big = true;
            return s_route(g, c, cc, url, method); /* answers 413 at once */
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cc->too_big) {
            if (cc->len + *upload_size > (size_t)g->max_body) {
                cc->too_big = true;
                free(cc->body);
                cc->body = NULL;
                cc->len = cc->cap = 0;
            } else {
                if (cc->len + *upload_size + 1 > cc->cap) {
                    size_t cap = cc->cap ? cc->cap : 4096;
                    while (cap < cc->len + *upload_size + 1) cap *= 2;
                    char *nb = realloc(cc->body, cap);
                    if (!nb) return MHD_NO;
                    cc->body = nb;
                    cc->cap = cap;
                }
                memcpy(cc->body + cc->len, upload, *upload_size);
                cc->len += *upload_size;
                cc->body[cc->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cc->status) return MHD_YES; /* already answered (413) */
    return s_route(g, c, cc, url, method);
}

static void s_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    gw_t *g = cls;
    gw_conn_t *cc = *con_cls;
    if (!cc) return;
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double secs = (double)(end.tv_sec - cc->start.tv_sec) +
                  (double)(end.tv_nsec - cc->start.tv_nsec) / 1e9;
    gw_metrics_request(g->metrics, cc->svc, cc->method, cc->status, secs);
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = 0;
    bf_log(BF_WARN, "http: %s", buf);
}

int gw_http_start(gw_t *g)
{
    const char *bind = bf_cfg_str(g->cfg, "gateway.http_bind");
    const char *colon = strrchr(bind, ':');
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    char host[64];
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (!colon || (size_t)(colon - bind) >= sizeof host || port <= 0 || port > 65535) {
        bf_log(BF_ERROR, "config: gateway.http_bind must be address:port (IPv4)");
        return -1;
    }
    memcpy(host, bind, (size_t)(colon - bind));
    host[colon - bind] = 0;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        bf_log(BF_ERROR, "config: gateway.http_bind: %s is not an IPv4 address", host);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    g->httpd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
        s_handler, g, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)bf_cfg_int(g->cfg, "gateway.http_threads"), MHD_OPTION_NOTIFY_COMPLETED,
        s_completed, g, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, g,
        MHD_OPTION_END);
    if (!g->httpd) {
        bf_log(BF_ERROR, "gateway: cannot serve HTTP on %s: %s", bind, strerror(errno));
        return -1;
    }
    bf_log(BF_INFO, "gateway: HTTP API and console on http://%s/", bind);
    return 0;
}

void gw_http_stop(gw_t *g)
{
    if (g->httpd) MHD_stop_daemon(g->httpd);
    g->httpd = NULL;
}
