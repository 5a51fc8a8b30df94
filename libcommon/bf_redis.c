/* bf_redis: hiredis connection with URL parsing and reconnect; see bf_redis.h. */
#include "bf_redis.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct bf_redis {
    char host[256];
    int port;
    int db;
    char *user;     /* ACL user for AUTH (NULL: "default") */
    char *password; /* NULL: no AUTH is sent */
    redisContext *ctx;
    char err[256];
    unsigned long connects; /* successful connections made so far */
};

bf_redis_t *bf_redis_new(const char *url, char *err, size_t errlen)
{
    const char *p = url;
    if (!p || strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis.url must start with redis:// (got \"%.64s\")",
                 url ? url : "");
        return NULL;
    }
    p += 8;
    bf_redis_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* [user[:password]@] or [:password@]: the userinfo ends at the last '@'
     * before the path; the password is never copied into a message */
    const char *pathp = strchr(p, '/');
    const char *at = NULL;
    for (const char *q = p; *q && (!pathp || q < pathp); q++)
        if (*q == '@') at = q;
    if (at) {
        const char *pc = memchr(p, ':', (size_t)(at - p));
        const char *uend = pc ? pc : at;
        if (!pc || pc + 1 == at) {
            snprintf(err, errlen, "redis.url: credentials need a password (user:password@)");
            free(r);
            return NULL;
        }
        r->user = uend > p ? strndup(p, (size_t)(uend - p)) : NULL;
        r->password = strndup(pc + 1, (size_t)(at - pc - 1));
        if ((uend > p && !r->user) || !r->password) {
            snprintf(err, errlen, "out of memory");
            bf_redis_destroy(&r);
            return NULL;
        }
        p = at + 1;
    }
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    const char *hend = colon ? colon : (slash ? slash : p + strlen(p));
    size_t hl = (size_t)(hend - p);
    if (hl == 0 || hl >= sizeof r->host) {
        snprintf(err, errlen, "redis.url: bad host");
        bf_redis_destroy(&r);
        return NULL;
    }
    memcpy(r->host, p, hl);
    r->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || port <= 0 || port > 65535 || (*end && *end != '/')) {
            snprintf(err, errlen, "redis.url: bad port");
            bf_redis_destroy(&r);
            return NULL;
        }
        r->port = (int)port;
    }
    if (slash) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (slash[1] && (end == slash + 1 || *end || db < 0 || db > 1000)) {
            snprintf(err, errlen, "redis.url: bad database number");
            bf_redis_destroy(&r);
            return NULL;
        }
        r->db = (int)db;
    }
    return r;
}

void bf_redis_drop(bf_redis_t *r)
{
    if (r->ctx) redisFree(r->ctx);
    r->ctx = NULL;
}

static void s_free_auth(bf_redis_t *r)
{
    free(r->user);
    if (r->password) explicit_bzero(r->password, strlen(r->password));
    free(r->password);
    r->user = r->password = NULL;
}

void bf_redis_destroy(bf_redis_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_redis_drop(*self_p);
    s_free_auth(*self_p);
    free(*self_p);
    *self_p = NULL;
}

int bf_redis_set_auth(bf_redis_t *r, const char *user, const char *password)
{
    char *u = user && *user ? strdup(user) : NULL;
    char *p = password && *password ? strdup(password) : NULL;
    if ((user && *user && !u) || (password && *password && !p)) {
        free(u);
        free(p);
        return -1;
    }
    s_free_auth(r);
    r->user = u;
    r->password = p;
    bf_redis_drop(r); /* the next call logs in with these */
    return 0;
}

const char *bf_redis_user(const bf_redis_t *r)
{
    return r->password ? (r->user ? r->user : "default") : NULL;
}

int bf_redis_ensure(bf_redis_t *r)
{
    if (r->ctx && !r->ctx->err) return 0;
    bf_redis_drop(r);
    struct timeval tv = {2, 0};
    r->ctx = redisConnectWithTimeout(r->host, r->port, tv);
    if (!r->ctx || r->ctx->err) {
        snprintf(r->err, sizeof r->err, "redis %s:%d: %s", r->host, r->port,
                 r->ctx ? r->ctx->errstr : "out of memory");
        bf_redis_drop(r);
        return -1;
    }
    struct timeval io = {10, 0};
    redisSetTimeout(r->ctx, io);
    if (r->password) {
        /* hiredis 0.14 has no AUTH helper: AUTH [user] password, on every
         * (re)connect; the reply's text never carries the password */
        const char *argv[] = {"AUTH", r->user ? r->user : r->password, r->password};
        int argc = r->user ? 3 : 2;
        redisReply *rep = redisCommandArgv(r->ctx, argc, argv, NULL);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        snprintf(r->err, sizeof r->err, "redis %s:%d: AUTH as %s refused: %s", r->host, r->port,
                 r->user ? r->user : "default",
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                       : (rep ? "unexpected reply" : r->ctx->errstr));
        if (rep) freeReplyObject(rep);
        if (!ok) {
            bf_redis_drop(r);
            return -1;
        }
        r->err[0] = 0;
    }
    if (r->db) {
        redisReply *rep = redisCommand(r->ctx, "SELECT %d", r->db);
        int ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep) freeReplyObject(rep);
        if (!ok) {
            snprintf(r->err, sizeof r->err, "redis: SELECT %d failed", r->db);
            bf_redis_drop(r);
            return -1;
        }
    }
    r->connects++;
    return 0;
}

unsigned long bf_redis_connects(const bf_redis_t *r) { return r->connects; }

static redisReply *s_done(bf_redis_t *r, void *rep)
{
    if (!rep) {
        snprintf(r->err, sizeof r->err, "redis %s:%d: %s", r->host, r->port,
                 r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        bf_redis_drop(r);
    }
    return rep;
}

redisReply *bf_redis_cmd(bf_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    if (bf_redis_ensure(r) != 0) return NULL;
    return s_done(r, redisCommandArgv(r->ctx, argc, argv, lens));
}

redisReply *bf_redis_cmdf(bf_redis_t *r, const char *fmt, ...)
{
    if (bf_redis_ensure(r) != 0) return NULL;
    va_list ap;
    va_start(ap, fmt);
    void *rep = redisvCommand(r->ctx, fmt, ap);
    va_end(ap);
    return s_done(r, rep);
}

int bf_redis_append(bf_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    if (bf_redis_ensure(r) != 0) return -1;
    if (redisAppendCommandArgv(r->ctx, argc, argv, lens) != REDIS_OK) {
        s_done(r, NULL);
        return -1;
    }
    return 0;
}

redisReply *bf_redis_read(bf_redis_t *r)
{
    if (!r->ctx) return NULL;
    void *rep = NULL;
    if (redisGetReply(r->ctx, &rep) != REDIS_OK) rep = NULL;
    return s_done(r, rep);
}

bool bf_redis_ping(bf_redis_t *r)
{
    redisReply *rep = bf_redis_cmdf(r, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep) freeReplyObject(rep);
    return ok;
}

const char *bf_redis_errmsg(const bf_redis_t *r) { return r->err; }
const char *bf_redis_host(const bf_redis_t *r) { return r->host; }
int bf_redis_port(const bf_redis_t *r) { return r->port; }
