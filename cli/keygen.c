/* keygen.c: `bangfu keygen`, which makes CURVE key pairs and keeps the
 * principals file (docs/security.md, docs/cli.md).
 *
 *   bangfu keygen NAME [--dir DIR] [--roles r1,r2] [--region CODE]
 *                 [--act-for | --no-act-for] [--cadre-id N]
 *   bangfu keygen --deployment DIR
 *
 * The key pair <DIR>/NAME.key (0600) and NAME.pub are made once and kept
 * afterwards; the principal's section of <DIR>/principals.conf is added or
 * replaced (options not given keep the values of an existing section), the
 * rest of the file (other sections, comments) is kept as it is. The file is
 * written to a temporary file and renamed, under an flock, so services that
 * re-read it never see half of it. --deployment makes the standard set,
 * idempotently: registry, funds, tasks, notify, bus (service), gateway
 * (service, act_for) and admin (admin).
 */
#include "cli.h"
#include "bf_keys.h"
#include "bf_rpc.h"
#include "bf_valid.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *name;
    char roles[256];   /* "" = not given */
    char region[16];
    int act_for;       /* -1 not given, 0, 1 */
    long long cadre_id; /* -1 not given, 0 = none */
} s_spec_t;

/* The whole file in a NUL-terminated buffer (empty if missing); NULL on a
 * read error. */
static char *s_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? calloc(1, 1) : NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1024 > cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (buf) buf[n] = 0;
    fclose(f);
    return buf;
}

/* Trims spaces at both ends in place. */
static char *s_trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = 0;
    return s;
}

/* If line is a section header "[x]", copies x to out and returns 1. */
static int s_header(const char *line, char *out, size_t n)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", line);
    char *t = s_trim(tmp);
    size_t len = strlen(t);
    if (len < 2 || t[0] != '[' || t[len - 1] != ']') return 0;
    t[len - 1] = 0;
    snprintf(out, n, "%s", s_trim(t + 1));
    return 1;
}

/* Fills what the spec does not give from the existing section's lines. */
static void s_inherit(s_spec_t *sp, const char *section_text)
{
    char *copy = strdup(section_text);
    if (!copy) return;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq || line[0] == ';' || line[0] == '#') continue;
        *eq = 0;
        char *k = s_trim(line), *v = s_trim(eq + 1);
        char *semi = strstr(v, " ;");
        if (semi) *semi = 0;
        v = s_trim(v);
        if (!strcmp(k, "roles") && !sp->roles[0]) snprintf(sp->roles, sizeof sp->roles, "%s", v);
        else if (!strcmp(k, "region") && !sp->region[0])
            snprintf(sp->region, sizeof sp->region, "%s", v);
        else if (!strcmp(k, "act_for") && sp->act_for < 0)
            sp->act_for = !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1");
        else if (!strcmp(k, "cadre_id") && sp->cadre_id < 0)
            sp->cadre_id = atoll(v);
    }
    free(copy);
}

/* Adds or replaces the principal's section in text; returns a new buffer. */
static char *s_update(const char *text, s_spec_t *sp, const char *pub)
{
    size_t tl = strlen(text);
    /* find [name] ... up to the next header */
    const char *start = NULL, *end = NULL, *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[512], sec[256];
        snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
        if (s_header(line, sec, sizeof sec)) {
            if (start && !end) end = p;
            if (!start && !strcmp(sec, sp->name)) start = p;
        }
        p += len + (nl ? 1 : 0);
    }
    if (start && !end) end = text + tl;
    if (start) {
        char *old = strndup(start, (size_t)(end - start));
        if (old) s_inherit(sp, old);
        free(old);
    }
    char section[1024];
    int n = snprintf(section, sizeof section, "[%s]\nkey = %s\nroles = %s\n", sp->name, pub,
                     sp->roles);
    if (sp->region[0])
        n += snprintf(section + n, sizeof section - (size_t)n, "region = %s\n", sp->region);
    if (sp->act_for > 0) n += snprintf(section + n, sizeof section - (size_t)n, "act_for = true\n");
    if (sp->cadre_id > 0)
        n += snprintf(section + n, sizeof section - (size_t)n, "cadre_id = %lld\n", sp->cadre_id);
    snprintf(section + n, sizeof section - (size_t)n, "\n");
    size_t sl = strlen(section);
    char *out = malloc(tl + sl + 512);
    if (!out) return NULL;
    if (start) {
        size_t a = (size_t)(start - text);
        memcpy(out, text, a);
        memcpy(out + a, section, sl);
        strcpy(out + a + sl, end);
    } else {
        const char *head = tl ? "" :
            "# bangfu principals (docs/security.md): one section per principal.\n"
            "# key = public CURVE key (Z85); roles = comma list; region = 12-digit\n"
            "# division code (optional); act_for = may name another actor and pass\n"
            "# auth; cadre_id = the cadre this principal is (optional).\n"
            "# Kept by `bangfu keygen`; re-read by the services when it changes.\n\n";
        strcpy(out, head);
        strcat(out, text);
        if (tl && text[tl - 1] != '\n') strcat(out, "\n");
        strcat(out, section);
    }
    return out;
}

static int s_write_atomic(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    if (close(fd) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int s_check_spec(const s_spec_t *sp)
{
    if (!bf_keys_name_ok(sp->name)) {
        fprintf(stderr, "bangfu keygen: bad name %s (like admin, cadre:42, finance.zhang)\n",
                sp->name);
        return -1;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", sp->roles);
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (!bf_role_parse(t)) {
            fprintf(stderr, "bangfu keygen: unknown role %s (admin, county_operator, finance, "
                            "approver, auditor, cadre, service, subscriber)\n", t);
            return -1;
        }
    }
    if (sp->region[0] && bf_division_check(sp->region, strlen(sp->region)) != 0) {
        fprintf(stderr, "bangfu keygen: --region must be a 12-digit division code\n");
        return -1;
    }
    return 0;
}

/* Makes (or keeps) the pair and writes the principal's section. */
static int s_one(const char *dir, s_spec_t *sp)
{
    if (s_check_spec(sp) != 0) return CLI_USAGE;
    char pub[BF_KEY_Z85], err[512];
    bool created = false;
    if (bf_keys_generate(dir, sp->name, pub, &created, err, sizeof err) != 0) {
        fprintf(stderr, "bangfu keygen: %s\n", err);
        return CLI_ERR_REPLY;
    }
    char path[4200], lock[4200];
    snprintf(path, sizeof path, "%s/principals.conf", dir);
    snprintf(lock, sizeof lock, "%s/.principals.lock", dir);
    int lfd = open(lock, O_RDWR | O_CREAT, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
        fprintf(stderr, "bangfu keygen: cannot lock %s: %s\n", lock, strerror(errno));
        if (lfd >= 0) close(lfd);
        return CLI_ERR_REPLY;
    }
    int rc = CLI_OK;
    char *text = s_slurp(path);
    char *out = text ? s_update(text, sp, pub) : NULL;
    if (!out || !sp->roles[0]) {
        fprintf(stderr, "bangfu keygen: %s\n",
                !text ? "cannot read principals.conf"
                      : !out ? "out of memory" : "a new principal needs --roles");
        rc = !text || !out ? CLI_ERR_REPLY : CLI_USAGE;
    } else if (s_write_atomic(path, out) != 0) {
        fprintf(stderr, "bangfu keygen: cannot write %s: %s\n", path, strerror(errno));
        rc = CLI_ERR_REPLY;
    } else {
        printf("%s %s %s\n", sp->name, pub, created ? "created" : "kept");
    }
    free(text);
    free(out);
    flock(lfd, LOCK_UN);
    close(lfd);
    return rc;
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: bangfu keygen NAME [--dir DIR] [--roles r1,r2] [--region CODE]\n"
            "                     [--act-for | --no-act-for] [--cadre-id N]\n"
            "       bangfu keygen --deployment DIR\n"
            "Makes the CURVE key pair DIR/NAME.key (0600) and DIR/NAME.pub (kept if it\n"
            "exists) and adds or replaces [NAME] in DIR/principals.conf; options not given\n"
            "keep an existing section's values. DIR defaults to $BANGFU_KEYS_DIR.\n"
            "--deployment makes the standard principals: registry, funds, tasks, notify,\n"
            "bus (service), gateway (service, act_for), admin (admin).\n"
            "Roles: admin, county_operator, finance, approver, auditor, cadre, service,\n"
            "subscriber. Running services pick changes up within a second.\n");
}

int cli_keygen(int argc, char **argv)
{
    s_spec_t sp = {.act_for = -1, .cadre_id = -1};
    const char *dir = getenv("BANGFU_KEYS_DIR");
    const char *deployment = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            s_usage(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--dir") && v) {
            dir = v;
            i++;
        } else if (!strcmp(a, "--deployment") && v) {
            deployment = v;
            i++;
        } else if (!strcmp(a, "--roles") && v) {
            snprintf(sp.roles, sizeof sp.roles, "%s", v);
            i++;
        } else if (!strcmp(a, "--region") && v) {
            snprintf(sp.region, sizeof sp.region, "%s", v);
            i++;
        } else if (!strcmp(a, "--act-for")) {
            sp.act_for = 1;
        } else if (!strcmp(a, "--no-act-for")) {
            sp.act_for = 0;
        } else if (!strcmp(a, "--cadre-id") && v) {
            char *end = NULL;
            sp.cadre_id = strtoll(v, &end, 10);
            if (!end || *end || sp.cadre_id <= 0) {
                fprintf(stderr, "bangfu keygen: --cadre-id must be a positive integer\n");
                return CLI_USAGE;
            }
            i++;
        } else if (a[0] != '-' && !sp.name) {
            sp.name = a;
        } else {
            fprintf(stderr, "bangfu keygen: unexpected argument %s\n", a);
            s_usage(stderr);
            return CLI_USAGE;
        }
    }
    if (deployment) {
        if (sp.name) {
            fprintf(stderr, "bangfu keygen: --deployment takes no NAME\n");
            return CLI_USAGE;
        }
        static const struct {
            const char *name, *roles;
            int act_for;
        } std[] = {{"registry", "service", 0}, {"funds", "service", 0},
                   {"tasks", "service", 0},    {"notify", "service", 0},
                   {"bus", "service", 0},      {"gateway", "service", 1},
                   {"admin", "admin", 0},      {NULL, NULL, 0}};
        for (int i = 0; std[i].name; i++) {
            s_spec_t d = {.name = std[i].name, .act_for = std[i].act_for, .cadre_id = 0};
            snprintf(d.roles, sizeof d.roles, "%s", std[i].roles);
            int rc = s_one(deployment, &d);
            if (rc != CLI_OK) return rc;
        }
        return CLI_OK;
    }
    if (!sp.name) {
        s_usage(stderr);
        return CLI_USAGE;
    }
    if (!dir || !*dir) {
        fprintf(stderr, "bangfu keygen: give --dir DIR or set BANGFU_KEYS_DIR\n");
        return CLI_USAGE;
    }
    return s_one(dir, &sp);
}
