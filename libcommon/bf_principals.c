/* bf_principals: the principals file, parsed and cached; see
 * bf_principals.h. */
#include "bf_principals.h"
#include "bf_log.h"
#include "bf_rpc.h"
#include "bf_valid.h"

#include <errno.h>
#include <ini.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#define MAX_PRINCIPALS 100000

typedef struct {
    bf_principal_t *v;
    int n, cap;
    bool *bad;          /* per entry */
    char (*why)[160];   /* per entry: why it is bad */
    const char *path;
} s_parse_t;

static int s_find(s_parse_t *p, const char *name)
{
    for (int i = p->n - 1; i >= 0; i--)
        if (!strcmp(p->v[i].name, name)) return i;
    return -1;
}

static void s_mark(s_parse_t *p, int i, const char *fmt, const char *arg)
{
    if (p->bad[i]) return;
    p->bad[i] = true;
    snprintf(p->why[i], sizeof p->why[i], fmt, arg);
}

static bool s_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1")) *out = true;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0")) *out = false;
    else return false;
    return true;
}

static int s_handler(void *user, const char *section, const char *name, const char *value)
{
    s_parse_t *p = user;
    if (!section || !*section) {
        bf_log(BF_WARN, "principals: %s: key %s outside a [principal] section ignored", p->path,
               name ? name : "?");
        return 1;
    }
    int i = s_find(p, section);
    if (i < 0) {
        if (p->n >= MAX_PRINCIPALS) return 1;
        if (p->n == p->cap) {
            int cap = p->cap ? p->cap * 2 : 32;
            bf_principal_t *v = realloc(p->v, (size_t)cap * sizeof *v);
            if (!v) return 0;
            p->v = v;
            bool *bad = realloc(p->bad, (size_t)cap * sizeof *bad);
            if (!bad) return 0;
            p->bad = bad;
            char(*why)[160] = realloc(p->why, (size_t)cap * sizeof *why);
            if (!why) return 0;
            p->why = why;
            p->cap = cap;
        }
        i = p->n++;
        memset(&p->v[i], 0, sizeof p->v[i]);
        p->bad[i] = false;
        p->why[i][0] = 0;
        snprintf(p->v[i].name, sizeof p->v[i].name, "%s", section);
        if (strlen(section) > BF_KEY_NAME_MAX || !bf_keys_name_ok(section))
            s_mark(p, i, "bad principal name%s", "");
    }
    bf_principal_t *e = &p->v[i];
    if (!name) return 1; /* a section header alone (INI_CALL_HANDLER_ON_NEW_SECTION) */
    if (!strcmp(name, "key")) {
        uint8_t bin[32];
        if (e->key[0]) s_mark(p, i, "key given twice%s", "");
        if (strlen(value) != 40 || !zmq_z85_decode(bin, value))
            s_mark(p, i, "key must be 40 Z85 characters%s", "");
        else
            snprintf(e->key, sizeof e->key, "%s", value);
    } else if (!strcmp(name, "roles")) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", value);
        char *save = NULL;
        for (char *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
            unsigned bit = bf_role_parse(t);
            if (!bit) s_mark(p, i, "unknown role %s", t);
            e->roles |= bit;
        }
    } else if (!strcmp(name, "region")) {
        if (*value && bf_division_check(value, strlen(value)) != 0)
            s_mark(p, i, "region %s is not a 12-digit division code", value);
        else
            snprintf(e->region, sizeof e->region, "%s", value);
    } else if (!strcmp(name, "act_for")) {
        if (!s_bool(value, &e->act_for)) s_mark(p, i, "act_for must be true or false, not %s", value);
    } else if (!strcmp(name, "cadre_id")) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (*value && (errno || !end || *end || v <= 0))
            s_mark(p, i, "cadre_id must be a positive integer, not %s", value);
        else
            e->cadre_id = *value ? v : 0;
    } else {
        s_mark(p, i, "unknown key %s (key, roles, region, act_for, cadre_id)", name);
    }
    return 1;
}

int bf_principals_parse(const char *path, bf_principal_t **out)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    s_parse_t p = {.path = path};
    int rc = ini_parse_file(f, s_handler, &p);
    fclose(f);
    if (rc < 0) {
        free(p.v);
        free(p.bad);
        free(p.why);
        return -1;
    }
    if (rc > 0) bf_log(BF_WARN, "principals: %s: syntax error on line %d ignored", path, rc);
    /* a key may belong to one principal only: later duplicates are bad */
    for (int i = 0; i < p.n; i++) {
        if (!p.bad[i] && !p.v[i].key[0]) s_mark(&p, i, "no key%s", "");
        for (int j = 0; j < i && !p.bad[i]; j++)
            if (!p.bad[j] && !strcmp(p.v[i].key, p.v[j].key))
                s_mark(&p, i, "same key as %s", p.v[j].name);
    }
    int n = 0;
    for (int i = 0; i < p.n; i++) {
        if (p.bad[i]) {
            bf_log(BF_WARN, "principals: %s: [%s] skipped: %s", path, p.v[i].name, p.why[i]);
            continue;
        }
        p.v[n++] = p.v[i];
    }
    free(p.bad);
    free(p.why);
    if (n == 0) {
        free(p.v);
        p.v = NULL;
    }
    *out = p.v;
    return n;
}

/* ------------------------------------------------------ the cached table */

static pthread_rwlock_t s_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t s_reload_lock = PTHREAD_MUTEX_INITIALIZER;
static bf_principal_t *s_tab;
static int s_n;
static struct stat s_st; /* of the file last loaded */
static bool s_loaded;
static struct timespec s_checked;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Re-reads the file if it changed; force skips the once-a-second limit. */
static void s_refresh(bool force)
{
    pthread_mutex_lock(&s_reload_lock);
    double now = s_now();
    double last = (double)s_checked.tv_sec + (double)s_checked.tv_nsec / 1e9;
    if (s_loaded && !force && now - last < 1.0) {
        pthread_mutex_unlock(&s_reload_lock);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &s_checked);
    char path[4400];
    snprintf(path, sizeof path, "%s/principals.conf", bf_keys_dir());
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!s_loaded || s_n) bf_log(BF_WARN, "principals: cannot read %s: %s", path, strerror(errno));
        memset(&st, 0, sizeof st);
    }
    if (s_loaded && st.st_ino == s_st.st_ino && st.st_size == s_st.st_size &&
        st.st_mtim.tv_sec == s_st.st_mtim.tv_sec && st.st_mtim.tv_nsec == s_st.st_mtim.tv_nsec &&
        st.st_ctim.tv_sec == s_st.st_ctim.tv_sec && st.st_ctim.tv_nsec == s_st.st_ctim.tv_nsec) {
        pthread_mutex_unlock(&s_reload_lock);
        return;
    }
    bf_principal_t *tab = NULL;
    int n = st.st_ino ? bf_principals_parse(path, &tab) : 0;
    if (n < 0) n = 0;
    pthread_rwlock_wrlock(&s_lock);
    bf_principal_t *old = s_tab;
    s_tab = tab;
    s_n = n;
    s_st = st;
    s_loaded = true;
    pthread_rwlock_unlock(&s_lock);
    free(old);
    bf_log(BF_INFO, "principals: %d loaded from %s", n, path);
    pthread_mutex_unlock(&s_reload_lock);
}

static int s_lookup(bool by_key, const char *what, bf_principal_t *out)
{
    int found = -1;
    pthread_rwlock_rdlock(&s_lock);
    for (int i = 0; i < s_n; i++) {
        if (!strcmp(by_key ? s_tab[i].key : s_tab[i].name, what)) {
            *out = s_tab[i];
            found = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&s_lock);
    return found;
}

int bf_principals_by_key(const char *key, bf_principal_t *out)
{
    if (!key) return -1;
    s_refresh(false);
    if (s_lookup(true, key, out) == 0) return 0;
    s_refresh(true); /* an unknown key: perhaps just added */
    return s_lookup(true, key, out);
}

int bf_principals_by_name(const char *name, bf_principal_t *out)
{
    if (!name) return -1;
    s_refresh(false);
    return s_lookup(false, name, out);
}

void bf_principals_reset(void)
{
    pthread_mutex_lock(&s_reload_lock);
    pthread_rwlock_wrlock(&s_lock);
    free(s_tab);
    s_tab = NULL;
    s_n = 0;
    s_loaded = false;
    pthread_rwlock_unlock(&s_lock);
    pthread_mutex_unlock(&s_reload_lock);
}
