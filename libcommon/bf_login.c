/* bf_login: per-service PostgreSQL role and Redis user from config; see bf_login.h. */
#include "bf_login.h"
#include "bf_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define S_MAX_SECRET 1024

int bf_login_expand(const char *tmpl, const char *service, char *out, size_t n)
{
    static const char tag[] = "{service}";
    const size_t tl = sizeof tag - 1;
    size_t o = 0;
    if (!n) return -1;
    for (const char *p = tmpl ? tmpl : ""; *p;) {
        const char *add = p;
        size_t len = 1;
        if (strncmp(p, tag, tl) == 0) {
            add = service ? service : "";
            len = strlen(add);
            p += tl;
        } else {
            p++;
        }
        if (o + len >= n) return -1;
        memcpy(out + o, add, len);
        o += len;
    }
    out[o] = 0;
    return 0;
}

/* Reads the first line of the file named by key (after expansion) into buf.
 * Returns 1 with a password, 0 if the key is empty, -1 with err set. */
static int s_read_secret(const bf_cfg_t *cfg, const char *key, const char *service, char *buf,
                         size_t n, char *err, size_t errlen)
{
    char path[1024];
    buf[0] = 0;
    if (bf_login_expand(bf_cfg_str(cfg, key), service, path, sizeof path) != 0) {
        snprintf(err, errlen, "%s: path too long", key);
        return -1;
    }
    if (!path[0]) return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read %s: %s", key, path, strerror(errno));
        return -1;
    }
    size_t got = fread(buf, 1, n - 1, f);
    int too_long = got == n - 1 && fgetc(f) != EOF;
    fclose(f);
    buf[got] = 0;
    char *nl = strpbrk(buf, "\r\n");
    if (nl) *nl = 0;
    if (too_long || !buf[0]) {
        explicit_bzero(buf, n);
        snprintf(err, errlen, "%s: %s is %s", key, path,
                 too_long ? "longer than 1023 bytes" : "empty");
        return -1;
    }
    return 1;
}

bf_db_t *bf_login_db(const bf_cfg_t *cfg, const char *service, const char *schema)
{
    char user[128], pw[S_MAX_SECRET], err[1200];
    if (bf_login_expand(bf_cfg_str(cfg, "pg.user"), service, user, sizeof user) != 0) {
        bf_log(BF_ERROR, "pg.user: longer than %zu bytes", sizeof user - 1);
        return NULL;
    }
    if (s_read_secret(cfg, "pg.password_file", service, pw, sizeof pw, err, sizeof err) < 0) {
        bf_log(BF_ERROR, "%s", err);
        return NULL;
    }
    bf_db_t *db = bf_db_new(bf_cfg_str(cfg, "pg.dsn"), schema);
    if (db && bf_db_set_login(db, user, pw) != 0) bf_db_destroy(&db);
    explicit_bzero(pw, sizeof pw);
    if (!db) bf_log(BF_ERROR, "postgresql: out of memory");
    return db;
}

bf_redis_t *bf_login_redis(const bf_cfg_t *cfg, const char *service, char *err, size_t errlen)
{
    char user[128], pw[S_MAX_SECRET];
    bf_redis_t *r = bf_redis_new(bf_cfg_str(cfg, "redis.url"), err, errlen);
    if (!r) return NULL;
    int have = s_read_secret(cfg, "redis.password_file", service, pw, sizeof pw, err, errlen);
    if (have < 0) {
        bf_redis_destroy(&r);
        return NULL;
    }
    if (have > 0) {
        if (bf_login_expand(bf_cfg_str(cfg, "redis.user"), service, user, sizeof user) != 0) {
            snprintf(err, errlen, "redis.user: longer than %zu bytes", sizeof user - 1);
            bf_redis_destroy(&r);
        } else if (bf_redis_set_auth(r, user, pw) != 0) {
            snprintf(err, errlen, "out of memory");
            bf_redis_destroy(&r);
        }
    }
    explicit_bzero(pw, sizeof pw);
    return r;
}
