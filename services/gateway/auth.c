/* gateway auth: password hashing (scrypt from OpenSSL 3), the bootstrap
 * admin, sign-in with a per-username failure limit, sessions stored as the
 * SHA-256 of their bearer token, and the user.* administration methods.
 *
 * Why scrypt: it is memory-hard like argon2, and OpenSSL 3 (already linked
 * by every bangfu binary) provides it as EVP_PBE_scrypt, so the gateway needs
 * no extra library. Each hash records its own parameters, so raising
 * gateway.scrypt_log2n affects new passwords and old hashes still verify.
 */
#include "gateway.h"
#include "bf_log.h"
#include "bf_mp.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SALT_LEN 16
#define HASH_LEN 32
#define MIN_PASSWORD 8
#define MAX_PASSWORD 1024

static void s_hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int s_unhex(const char *in, size_t hexlen, unsigned char *out, size_t n)
{
    if (hexlen != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = in[2 * i + j];
            int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (x < 0) return -1;
            v = v * 16 + x;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static int s_random(void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom((char *)buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int s_scrypt(const char *pw, const unsigned char *salt, uint64_t n, uint64_t r,
                    uint64_t p, unsigned char *out)
{
    uint64_t maxmem = 130 * n * r * p + (1u << 20);
    return EVP_PBE_scrypt(pw, strlen(pw), salt, SALT_LEN, n, r, p, maxmem, out, HASH_LEN) == 1
               ? 0
               : -1;
}

int gw_password_hash(const char *password, int log2n, char *out, size_t outlen)
{
    unsigned char salt[SALT_LEN], hash[HASH_LEN];
    if (s_random(salt, sizeof salt) != 0) return -1;
    if (s_scrypt(password, salt, (uint64_t)1 << log2n, 8, 1, hash) != 0) return -1;
    char sh[2 * SALT_LEN + 1], hh[2 * HASH_LEN + 1];
    s_hex(salt, SALT_LEN, sh);
    s_hex(hash, HASH_LEN, hh);
    OPENSSL_cleanse(hash, sizeof hash);
    int n = snprintf(out, outlen, "scrypt$%d$8$1$%s$%s", log2n, sh, hh);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

bool gw_password_verify(const char *password, const char *stored)
{
    int log2n, r, p, off = 0;
    if (!stored || sscanf(stored, "scrypt$%d$%d$%d$%n", &log2n, &r, &p, &off) != 3 || off == 0)
        return false;
    if (log2n < 10 || log2n > 20 || r < 1 || r > 32 || p < 1 || p > 4) return false;
    const char *salt_hex = stored + off;
    const char *dollar = strchr(salt_hex, '$');
    if (!dollar) return false;
    unsigned char salt[SALT_LEN], want[HASH_LEN], got[HASH_LEN];
    if (s_unhex(salt_hex, (size_t)(dollar - salt_hex), salt, SALT_LEN) != 0 ||
        s_unhex(dollar + 1, strlen(dollar + 1), want, HASH_LEN) != 0)
        return false;
    if (s_scrypt(password, salt, (uint64_t)1 << log2n, (uint64_t)r, (uint64_t)p, got) != 0)
        return false;
    bool ok = CRYPTO_memcmp(got, want, HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return ok;
}

void gw_token_sha256(const char *token, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), d);
    s_hex(d, sizeof d, out);
}

int gw_token_new(char out[GW_TOKEN_HEX + 1])
{
    unsigned char b[GW_TOKEN_HEX / 2];
    if (s_random(b, sizeof b) != 0) return -1;
    s_hex(b, sizeof b, out);
    OPENSSL_cleanse(b, sizeof b);
    return 0;
}

static bool s_username_ok(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = u[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '@' || c == '-'))
            return false;
    }
    return true;
}

/* ------------------------------------------------------ bootstrap admin */

/* Reads the first line of path into buf (without the newline). 0, 1 if the
 * file does not exist, -1 on another error. */
static int s_read_secret(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 1 : -1;
    if (!fgets(buf, (int)n, f)) buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

int gw_bootstrap_admin(gw_t *g, bf_db_t *db)
{
    const char *name = bf_cfg_str(g->cfg, "gateway.admin_user");
    if (!*name) return 0;
    if (!s_username_ok(name)) {
        bf_log(BF_ERROR, "config: gateway.admin_user is not a valid username");
        return -1;
    }
    PGresult *res = bf_db_exec(db, "SELECT count(*) AS n FROM \"user\"", 0, NULL);
    if (!res) {
        bf_log(BF_ERROR, "gateway: cannot count users: %s", bf_db_errmsg(db));
        return -1;
    }
    int64_t n = bf_db_int(res, 0, "n");
    PQclear(res);
    if (n > 0) return 0;
    char path[1024];
    const char *file = bf_cfg_str(g->cfg, "gateway.admin_password_file");
    const char *keys = getenv("BANGFU_KEYS_DIR");
    if (*file) {
        snprintf(path, sizeof path, "%s", file);
    } else if (keys && *keys) {
        snprintf(path, sizeof path, "%s/gateway-admin.password", keys);
    } else {
        bf_log(BF_WARN, "gateway: no users and no gateway.admin_password_file or "
                        "BANGFU_KEYS_DIR: create people with the user.create method");
        return 0;
    }
    char pw[MAX_PASSWORD + 2];
    int rc = s_read_secret(path, pw, sizeof pw);
    if (rc < 0) {
        bf_log(BF_ERROR, "gateway: cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (rc == 1) { /* no file: a random password, written for the operator */
        char tok[GW_TOKEN_HEX + 1];
        if (gw_token_new(tok) != 0) return -1;
        snprintf(pw, sizeof pw, "%.24s", tok);
        OPENSSL_cleanse(tok, sizeof tok);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
            bf_log(BF_ERROR, "gateway: cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        size_t len = strlen(pw);
        bool ok = write(fd, pw, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
        close(fd);
        if (!ok) {
            bf_log(BF_ERROR, "gateway: cannot write %s", path);
            unlink(path);
            return -1;
        }
    }
    if (strlen(pw) < MIN_PASSWORD) {
        bf_log(BF_ERROR, "gateway: the password in %s is shorter than %d bytes", path,
               MIN_PASSWORD);
        OPENSSL_cleanse(pw, sizeof pw);
        return -1;
    }
    char hash[256];
    rc = gw_password_hash(pw, (int)bf_cfg_int(g->cfg, "gateway.scrypt_log2n"), hash,
                          sizeof hash);
    OPENSSL_cleanse(pw, sizeof pw);
    if (rc != 0) return -1;
    const char *p[] = {name, hash};
    res = bf_db_exec(db,
                     "INSERT INTO \"user\" (username, password_hash, roles, created_by) "
                     "VALUES ($1, $2, '{admin}', 'gateway:bootstrap') ON CONFLICT DO NOTHING",
                     2, p);
    if (!res) {
        bf_log(BF_ERROR, "gateway: cannot create the bootstrap admin: %s", bf_db_errmsg(db));
        return -1;
    }
    PQclear(res);
    bf_log(BF_INFO, "gateway: bootstrap admin %s created; its password is in %s", name, path);
    return 0;
}

/* --------------------------------------------------------------- sign-in */

static void s_fail(bf_err_t *err, const char *code, const char *field, const char *msg)
{
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s", msg);
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
}

static void s_fill_user(const PGresult *res, gw_user_t *u)
{
    snprintf(u->username, sizeof u->username, "%s", bf_db_str(res, 0, "username"));
    const char *roles = bf_db_str(res, 0, "roles");
    snprintf(u->roles, sizeof u->roles, "%s", roles ? roles : "");
    const char *region = bf_db_str(res, 0, "region");
    snprintf(u->region, sizeof u->region, "%s", region ? region : "");
    u->cadre_id = bf_db_int(res, 0, "cadre_id");
}

/* A fixed hash to verify against when the username is unknown, so that a
 * wrong username takes as long as a wrong password. */
static const char *s_dummy_hash(gw_t *g)
{
    static char h[256];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    if (!h[0] &&
        gw_password_hash("no such user", (int)bf_cfg_int(g->cfg, "gateway.scrypt_log2n"), h,
                         sizeof h) != 0)
        h[0] = 0;
    pthread_mutex_unlock(&mu);
    return h;
}

int gw_login(gw_t *g, bf_db_t *db, const char *username, const char *password,
             const char *peer, char token[GW_TOKEN_HEX + 1], int64_t *expires_s,
             gw_user_t *user, bf_err_t *err)
{
    if (!s_username_ok(username)) {
        s_fail(err, BF_E_INVALID, "username", "username: 1 to 64 letters, digits, _ . @ -");
        return -1;
    }
    size_t plen = strlen(password);
    if (plen == 0 || plen > MAX_PASSWORD) {
        s_fail(err, BF_E_INVALID, "password", "password: 1 to 1024 bytes");
        return -1;
    }
    char window[32];
    snprintf(window, sizeof window, "%lld", (long long)g->login_window_s);
    const char *p[] = {username, window};
    PGresult *res = bf_db_prep(
        db, "gw_login_get",
        "SELECT username, password_hash, array_to_string(roles, ',') AS roles, region, "
        "cadre_id, disabled, failed_logins, "
        "(failed_since IS NOT NULL AND failed_since > now() - make_interval(secs => $2::int)) "
        "AS in_window, "
        "ceil(extract(epoch FROM failed_since + make_interval(secs => $2::int) - now()))::bigint "
        "AS retry_s FROM \"user\" WHERE username = $1",
        2, p, NULL, NULL);
    if (!res) {
        s_fail(err, BF_E_UNAVAILABLE, NULL, "the user database is not reachable");
        return -1;
    }
    bool found = PQntuples(res) == 1;
    if (found && bf_db_bool(res, 0, "in_window") &&
        bf_db_int(res, 0, "failed_logins") >= g->login_max_failures) {
        char msg[160];
        snprintf(msg, sizeof msg, "too many failed sign-ins for this username; try again in %lld s",
                 (long long)bf_db_int(res, 0, "retry_s"));
        PQclear(res);
        s_fail(err, BF_E_EXHAUSTED, "username", msg);
        return -1;
    }
    bool ok = gw_password_verify(password, found ? bf_db_str(res, 0, "password_hash")
                                                 : s_dummy_hash(g));
    if (!found || !ok) {
        PQclear(res);
        if (found) {
            PGresult *u = bf_db_prep(
                db, "gw_login_failed",
                "UPDATE \"user\" SET "
                "failed_logins = CASE WHEN failed_since > now() - make_interval(secs => $2::int) "
                "THEN failed_logins + 1 ELSE 1 END, "
                "failed_since = CASE WHEN failed_since > now() - make_interval(secs => $2::int) "
                "THEN failed_since ELSE now() END WHERE username = $1",
                2, p, NULL, NULL);
            if (u) PQclear(u);
        }
        bf_log(BF_INFO, "gateway: failed sign-in for %s from %s", username, peer);
        s_fail(err, BF_E_UNAUTHENTICATED, "password", "wrong username or password");
        return -1;
    }
    if (bf_db_bool(res, 0, "disabled")) {
        PQclear(res);
        s_fail(err, BF_E_UNAUTHENTICATED, "username", "this account is disabled");
        return -1;
    }
    memset(user, 0, sizeof *user);
    s_fill_user(res, user);
    PQclear(res);
    char hash[65], ttl[32];
    if (gw_token_new(token) != 0) {
        s_fail(err, BF_E_INTERNAL, NULL, "no randomness for a token");
        return -1;
    }
    gw_token_sha256(token, hash);
    snprintf(ttl, sizeof ttl, "%lld", (long long)g->session_ttl_s);
    const char *q[] = {hash, username, ttl, peer};
    res = bf_db_prep(db, "gw_login_ok",
                     "WITH s AS (INSERT INTO session (token_sha256, username, expires_at, peer) "
                     "VALUES ($1, $2, now() + make_interval(secs => $3::int), $4) "
                     "RETURNING expires_at), "
                     "u AS (UPDATE \"user\" SET failed_logins = 0, failed_since = NULL, "
                     "last_login_at = now() WHERE username = $2), "
                     "d AS (DELETE FROM session WHERE expires_at < now()) "
                     "SELECT extract(epoch FROM expires_at)::bigint AS exp FROM s",
                     4, q, NULL, NULL);
    if (!res) {
        s_fail(err, BF_E_UNAVAILABLE, NULL, "the user database is not reachable");
        return -1;
    }
    *expires_s = bf_db_int(res, 0, "exp");
    PQclear(res);
    bf_log(BF_INFO, "gateway: %s signed in from %s", username, peer);
    return 0;
}

int gw_session_user(bf_db_t *db, const char *token, gw_user_t *user)
{
    size_t n = strlen(token);
    if (n != GW_TOKEN_HEX) return 1;
    char hash[65];
    gw_token_sha256(token, hash);
    const char *p[] = {hash};
    PGresult *res = bf_db_prep(
        db, "gw_session_user",
        "SELECT u.username, array_to_string(u.roles, ',') AS roles, u.region, u.cadre_id "
        "FROM session s JOIN \"user\" u USING (username) "
        "WHERE s.token_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled",
        1, p, NULL, NULL);
    if (!res) return -1;
    int rc = 1;
    if (PQntuples(res) == 1) {
        memset(user, 0, sizeof *user);
        s_fill_user(res, user);
        rc = 0;
    }
    PQclear(res);
    return rc;
}

int gw_session_delete(bf_db_t *db, const char *token)
{
    char hash[65];
    gw_token_sha256(token, hash);
    const char *p[] = {hash};
    PGresult *res = bf_db_prep(db, "gw_session_delete",
                               "DELETE FROM session WHERE token_sha256 = $1", 1, p, NULL, NULL);
    if (!res) return -1;
    PQclear(res);
    return 0;
}

/* ------------------------------------------------------- user.* methods */

/* Reads roles (a list of role names) into a PostgreSQL array literal. */
static int s_roles_param(bf_req_t *r, bool required, const char **out)
{
    const msgpack_object_array *list = NULL;
    int rc = bf_req_list(r, r->params, NULL, "roles", required, 8, &list);
    if (rc != 0) {
        if (rc == 1) *out = "{}";
        return rc < 0 ? -1 : 0;
    }
    char buf[512];
    size_t len = 0;
    buf[len++] = '{';
    for (uint32_t i = 0; i < list->size; i++) {
        const msgpack_object *e = &list->ptr[i];
        char name[32];
        if (e->type != MSGPACK_OBJECT_STR || e->via.str.size == 0 ||
            e->via.str.size >= sizeof name)
            return bf_req_fail(r, BF_E_INVALID, "roles", "roles[%u] must be a role name", i);
        memcpy(name, e->via.str.ptr, e->via.str.size);
        name[e->via.str.size] = 0;
        if (!bf_role_parse(name))
            return bf_req_fail(r, BF_E_INVALID, "roles", "roles[%u]: unknown role %s", i, name);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? "," : "", name);
    }
    snprintf(buf + len, sizeof buf - len, "}");
    *out = bf_arena_strndup(r->arena, buf, strlen(buf));
    return *out ? 0 : bf_req_fail(r, BF_E_INTERNAL, NULL, "out of memory");
}

static int s_username_param(bf_req_t *r, const char **out)
{
    if (bf_req_str(r, r->params, NULL, "username", true, 64, out) != 0) return -1;
    if (!s_username_ok(*out))
        return bf_req_fail(r, BF_E_INVALID, "username",
                           "username: 1 to 64 letters, digits, _ . @ -");
    return 0;
}

static int s_password_param(bf_req_t *r, gw_t *g, char *hash, size_t n)
{
    const char *pw;
    if (bf_req_str(r, r->params, NULL, "password", true, MAX_PASSWORD, &pw) != 0) return -1;
    if (strlen(pw) < MIN_PASSWORD)
        return bf_req_fail(r, BF_E_INVALID, "password", "password: at least %d bytes",
                           MIN_PASSWORD);
    if (gw_password_hash(pw, (int)bf_cfg_int(g->cfg, "gateway.scrypt_log2n"), hash, n) != 0)
        return bf_req_fail(r, BF_E_INTERNAL, NULL, "cannot hash the password");
    return 0;
}

static int s_region_param(bf_req_t *r, const char **out)
{
    int rc = bf_req_str(r, r->params, NULL, "region", false, 12, out);
    if (rc != 0) return rc;
    if (**out == 0) {
        *out = NULL;
        return 0;
    }
    size_t n = strlen(*out);
    bool digits = n == 12;
    for (size_t i = 0; digits && i < n; i++) digits = (*out)[i] >= '0' && (*out)[i] <= '9';
    if (!digits)
        return bf_req_fail(r, BF_E_INVALID, "region", "region: a 12-digit division code");
    return 0;
}

static int s_one_row(bf_req_t *r, PGresult *res, const char *username)
{
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    PQclear(res);
    if (n == 0) return bf_req_fail(r, BF_E_NOT_FOUND, "username", "no user %s", username);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_str(r->out, "username", username);
    return 0;
}

int gw_user_create(bf_req_t *r)
{
    gw_t *g = r->svc;
    const char *username, *roles, *region = NULL;
    int64_t cadre = 0;
    char hash[256];
    if (s_username_param(r, &username) != 0 || s_roles_param(r, false, &roles) != 0 ||
        s_region_param(r, &region) < 0 ||
        bf_req_int(r, r->params, NULL, "cadre_id", false, 1, INT64_MAX, &cadre) < 0 ||
        s_password_param(r, g, hash, sizeof hash) != 0)
        return -1;
    const char *p[] = {username, hash, roles, region, cadre ? bf_req_itoa(r, cadre) : NULL,
                       r->actor};
    PGresult *res = bf_db_prep(r->db, "gw_user_create",
                               "INSERT INTO \"user\" (username, password_hash, roles, region, "
                               "cadre_id, created_by, updated_by) "
                               "VALUES ($1, $2, $3::text[], $4, $5::bigint, $6, $6)",
                               6, p, NULL, NULL);
    if (!res) {
        if (!strcmp(bf_db_sqlstate(r->db), "23505"))
            return bf_req_fail(r, BF_E_EXISTS, "username", "user %s already exists", username);
        return bf_req_db_fail(r);
    }
    PQclear(res);
    bf_log(BF_INFO, "gateway: %s created user %s (roles %s)", r->actor, username, roles);
    msgpack_pack_map(r->out, 1);
    bf_mp_kv_str(r->out, "username", username);
    return 0;
}

int gw_user_set_password(bf_req_t *r)
{
    gw_t *g = r->svc;
    const char *username;
    char hash[256];
    if (s_username_param(r, &username) != 0 || s_password_param(r, g, hash, sizeof hash) != 0)
        return -1;
    const char *p[] = {username, hash, r->actor};
    PGresult *res = bf_db_prep(r->db, "gw_user_set_password",
                               "WITH u AS (UPDATE \"user\" SET password_hash = $2, "
                               "failed_logins = 0, failed_since = NULL, updated_by = $3, "
                               "updated_at = now() WHERE username = $1 RETURNING username), "
                               "d AS (DELETE FROM session WHERE username IN (SELECT username "
                               "FROM u)) SELECT username FROM u",
                               3, p, NULL, NULL);
    bf_log(BF_INFO, "gateway: %s set the password of %s", r->actor, username);
    return s_one_row(r, res, username);
}

int gw_user_set_roles(bf_req_t *r)
{
    const char *username, *roles, *region = NULL;
    int64_t cadre = 0;
    if (s_username_param(r, &username) != 0 || s_roles_param(r, true, &roles) != 0 ||
        s_region_param(r, &region) < 0 ||
        bf_req_int(r, r->params, NULL, "cadre_id", false, 0, INT64_MAX, &cadre) < 0)
        return -1;
    const char *p[] = {username, roles, region, cadre ? bf_req_itoa(r, cadre) : NULL, r->actor};
    PGresult *res = bf_db_prep(r->db, "gw_user_set_roles",
                               "WITH u AS (UPDATE \"user\" SET roles = $2::text[], region = $3, "
                               "cadre_id = $4::bigint, updated_by = $5, updated_at = now() "
                               "WHERE username = $1 RETURNING username), "
                               "d AS (DELETE FROM session WHERE username IN (SELECT username "
                               "FROM u)) SELECT username FROM u",
                               5, p, NULL, NULL);
    bf_log(BF_INFO, "gateway: %s set the roles of %s to %s", r->actor, username, roles);
    return s_one_row(r, res, username);
}

int gw_user_disable(bf_req_t *r)
{
    const char *username;
    bool disabled = true;
    if (s_username_param(r, &username) != 0 ||
        bf_req_bool(r, r->params, NULL, "disabled", false, &disabled) < 0)
        return -1;
    const char *p[] = {username, disabled ? "true" : "false", r->actor};
    PGresult *res = bf_db_prep(r->db, "gw_user_disable",
                               "WITH u AS (UPDATE \"user\" SET disabled = $2::boolean, "
                               "updated_by = $3, updated_at = now() WHERE username = $1 "
                               "RETURNING username), "
                               "d AS (DELETE FROM session WHERE $2::boolean AND username IN "
                               "(SELECT username FROM u)) SELECT username FROM u",
                               3, p, NULL, NULL);
    bf_log(BF_INFO, "gateway: %s %s user %s", r->actor, disabled ? "disabled" : "enabled",
           username);
    return s_one_row(r, res, username);
}

int gw_user_list(bf_req_t *r)
{
    PGresult *res = bf_db_prep(
        r->db, "gw_user_list",
        "SELECT username, array_to_string(roles, ',') AS roles, region, cadre_id, disabled, "
        "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, "
        "to_char(last_login_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS "
        "last_login_at FROM \"user\" ORDER BY username",
        0, NULL, NULL, NULL);
    if (!res) return bf_req_db_fail(r);
    int n = PQntuples(res);
    msgpack_pack_array(r->out, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(r->out, 7);
        bf_mp_kv_str(r->out, "username", bf_db_str(res, i, "username"));
        bf_mp_key(r->out, "roles");
        const char *roles = bf_db_str(res, i, "roles");
        size_t cnt = 0;
        for (const char *q = roles; q && *q;) {
            size_t l = strcspn(q, ",");
            if (l) cnt++;
            q += l;
            if (*q) q++;
        }
        msgpack_pack_array(r->out, cnt);
        for (const char *q = roles; q && *q;) {
            size_t l = strcspn(q, ",");
            if (l) bf_mp_strn(r->out, q, l);
            q += l;
            if (*q) q++;
        }
        bf_mp_kv_str(r->out, "region", bf_db_str(res, i, "region"));
        if (bf_db_null(res, i, "cadre_id")) bf_mp_kv_nil(r->out, "cadre_id");
        else bf_mp_kv_int(r->out, "cadre_id", bf_db_int(res, i, "cadre_id"));
        bf_mp_kv_bool(r->out, "disabled", bf_db_bool(res, i, "disabled"));
        bf_mp_kv_str(r->out, "created_at", bf_db_str(res, i, "created_at"));
        bf_mp_kv_str(r->out, "last_login_at", bf_db_str(res, i, "last_login_at"));
    }
    PQclear(res);
    return 0;
}
