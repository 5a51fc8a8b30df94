/* bf_keys: key files, identity, security mode, CURVE socket setup; see
 * bf_keys.h. */
#include "bf_keys.h"
#include "bf_log.h"
#include "bf_rpc.h"
#include "bf_zap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

static bool s_curve = true;
static char s_dir[4096];
static char s_identity[BF_KEY_NAME_MAX + 1];

bool bf_security_curve(void) { return s_curve; }
const char *bf_keys_dir(void) { return s_dir; }
const char *bf_keys_identity(void) { return s_identity; }

bool bf_keys_name_ok(const char *name)
{
    return name && bf_rpc_actor_ok(name, strlen(name));
}

int bf_security_init(const char *mode, const char *keys_dir, const char *identity, char *err,
                     size_t errlen)
{
    if (!mode || !*mode || !strcmp(mode, "curve")) {
        s_curve = true;
    } else if (!strcmp(mode, "plaintext")) {
        s_curve = false;
    } else {
        snprintf(err, errlen, "security.mode must be curve or plaintext, not %s", mode);
        return -1;
    }
    snprintf(s_dir, sizeof s_dir, "%s", keys_dir ? keys_dir : "");
    snprintf(s_identity, sizeof s_identity, "%s", identity ? identity : "");
    if (!s_curve) {
        bf_log(BF_WARN, "security.mode=plaintext: no authentication, every caller holds every "
                        "role and the envelope's actor is trusted; for debugging only");
        return 0;
    }
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "security.mode=curve but this libzmq has no CURVE support");
        return -1;
    }
    if (!*s_dir) {
        snprintf(err, errlen, "keys.dir (BANGFU_KEYS_DIR) is not set");
        return -1;
    }
    if (!bf_keys_name_ok(s_identity)) {
        snprintf(err, errlen, "identity %s is not a valid principal name", s_identity);
        return -1;
    }
    char pub[BF_KEY_Z85], sec[BF_KEY_Z85];
    int rc = bf_keys_read(s_dir, s_identity, pub, sec, err, errlen);
    memset(sec, 0, sizeof sec);
    return rc;
}

int bf_security_init_env(const char *def_identity, char *err, size_t errlen)
{
    const char *mode = getenv("BANGFU_SECURITY_MODE");
    const char *dir = getenv("BANGFU_KEYS_DIR");
    const char *id = getenv("BANGFU_PRINCIPAL");
    return bf_security_init(mode, dir ? dir : "", id && *id ? id : def_identity, err, errlen);
}

/* Reads "<field> = <Z85>" from a small key file. */
static int s_read_field(const char *path, const char *field, char out[BF_KEY_Z85], char *err,
                        size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[256];
    int found = 0;
    size_t flen = strlen(field);
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (strncmp(p, field, flen) != 0) continue;
        p += flen;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '=') continue;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        size_t n = strcspn(p, " \t\r\n");
        uint8_t bin[32];
        if (n != 40) break;
        memcpy(out, p, 40);
        out[40] = 0;
        if (!zmq_z85_decode(bin, out)) break;
        found = 1;
    }
    fclose(f);
    if (!found) {
        snprintf(err, errlen, "%s has no valid \"%s = <40 Z85 characters>\" line", path, field);
        return -1;
    }
    return 0;
}

int bf_keys_read(const char *dir, const char *name, char pub[BF_KEY_Z85], char sec[BF_KEY_Z85],
                 char *err, size_t errlen)
{
    if (!bf_keys_name_ok(name)) {
        snprintf(err, errlen, "bad key name %s", name ? name : "(null)");
        return -1;
    }
    char path[4400];
    if (!sec) {
        snprintf(path, sizeof path, "%s/%s.pub", dir, name);
        return s_read_field(path, "public", pub, err, errlen);
    }
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (s_read_field(path, "public", pub, err, errlen) != 0) return -1;
    return s_read_field(path, "secret", sec, err, errlen);
}

/* Writes text to path atomically (temp file + rename) with mode. */
static int s_write_file(const char *path, const char *text, mode_t mode, char *err,
                        size_t errlen)
{
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int ok = w == (ssize_t)n && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    if (close(fd) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int bf_keys_generate(const char *dir, const char *name, char pub[BF_KEY_Z85], bool *created,
                     char *err, size_t errlen)
{
    *created = false;
    if (!bf_keys_name_ok(name)) {
        snprintf(err, errlen, "bad principal name %s (like admin, cadre:42, finance.zhang)",
                 name ? name : "(null)");
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", dir, strerror(errno));
        return -1;
    }
    char sec[BF_KEY_Z85], e2[256];
    if (bf_keys_read(dir, name, pub, sec, e2, sizeof e2) == 0) {
        memset(sec, 0, sizeof sec);
        /* keep the pair; make sure the .pub matches it */
        char path[4400], text[128], old[BF_KEY_Z85];
        snprintf(path, sizeof path, "%s/%s.pub", dir, name);
        if (s_read_field(path, "public", old, e2, sizeof e2) == 0 && !strcmp(old, pub)) return 0;
        snprintf(text, sizeof text, "public = %s\n", pub);
        return s_write_file(path, text, 0644, err, errlen);
    }
    if (zmq_curve_keypair(pub, sec) != 0) {
        snprintf(err, errlen, "zmq_curve_keypair failed: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    char path[4400], text[256];
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    snprintf(text, sizeof text,
             "# bangfu CURVE key pair of %s: keep secret (mode 0600)\npublic = %s\nsecret = %s\n",
             name, pub, sec);
    int rc = s_write_file(path, text, 0600, err, errlen);
    memset(sec, 0, sizeof sec);
    memset(text, 0, sizeof text);
    if (rc != 0) return -1;
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    snprintf(text, sizeof text, "public = %s\n", pub);
    if (s_write_file(path, text, 0644, err, errlen) != 0) return -1;
    *created = true;
    return 0;
}

int bf_curve_client_as(void *sock, const char *server_name, const char *identity, char *err,
                       size_t errlen)
{
    if (!s_curve) return 0;
    char spub[BF_KEY_Z85], pub[BF_KEY_Z85], sec[BF_KEY_Z85];
    if (bf_keys_read(s_dir, server_name, spub, NULL, err, errlen) != 0) return -1;
    if (bf_keys_read(s_dir, identity, pub, sec, err, errlen) != 0) return -1;
    int rc = 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spub, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0) {
        snprintf(err, errlen, "cannot set CURVE client keys: %s", zmq_strerror(zmq_errno()));
        rc = -1;
    }
    memset(sec, 0, sizeof sec);
    return rc;
}

int bf_curve_client(void *sock, const char *server_name, char *err, size_t errlen)
{
    return bf_curve_client_as(sock, server_name, s_identity, err, errlen);
}

int bf_curve_server(void *sock, const char *domain, unsigned roles, char *err, size_t errlen)
{
    if (!s_curve) return 0;
    char pub[BF_KEY_Z85], sec[BF_KEY_Z85];
    if (bf_keys_read(s_dir, s_identity, pub, sec, err, errlen) != 0) return -1;
    if (bf_zap_start(err, errlen) != 0) {
        memset(sec, 0, sizeof sec);
        return -1;
    }
    bf_zap_domain(domain, roles);
    int one = 1, rc = 0;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)) != 0) {
        snprintf(err, errlen, "cannot make a CURVE server: %s", zmq_strerror(zmq_errno()));
        rc = -1;
    }
    memset(sec, 0, sizeof sec);
    return rc;
}
