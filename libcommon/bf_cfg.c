/* bf_cfg: table-driven configuration; see bf_cfg.h. */
#include "bf_cfg.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const bf_cfg_def_t bf_cfg_common[] = {
    {"log.level", BF_CFG_STR, "info", 0, 0, "debug | info | warn | error"},
    {"pg.dsn", BF_CFG_STR, "postgresql://bangfu@127.0.0.1:5432/bangfu", 0, 0,
     "libpq connection URI of the PostgreSQL database"},
    {"pg.user", BF_CFG_STR, "bangfu_{service}", 0, 0,
     "PostgreSQL role the service logs in as, overriding the DSN's user ({service}: the "
     "service's name; empty: the DSN's)"},
    {"pg.password_file", BF_CFG_STR, "", 0, 0,
     "file holding that role's password ({service} replaced); empty: the DSN's, "
     "PGPASSWORD or ~/.pgpass"},
    {"pg.connect_attempts", BF_CFG_INT, "30", 1, 100000,
     "connection attempts at start (backoff 100 ms doubling to 2 s)"},
    {"redis.url", BF_CFG_STR, "redis://127.0.0.1:6379/0", 0, 0,
     "Redis URL redis://[[user]:password@]host:port[/db]"},
    {"redis.user", BF_CFG_STR, "bangfu_{service}", 0, 0,
     "Redis ACL user the service logs in as ({service} replaced); used with "
     "redis.password_file"},
    {"redis.password_file", BF_CFG_STR, "", 0, 0,
     "file holding that user's password ({service} replaced); empty: the URL's "
     "credentials, or none"},
    {"redis.memory_alert_pct", BF_CFG_INT, "80", 1, 100,
     "sys.health sets redis_memory.alert when used_memory exceeds this % of maxmemory"},
    {"bus.xsub", BF_CFG_STR, "tcp://127.0.0.1:7100", 0, 0,
     "the bus's XSUB address: relays connect here to publish events"},
    {"bus.pub", BF_CFG_STR, "tcp://127.0.0.1:7099", 0, 0,
     "the bus's XPUB address: subscribers connect here"},
    {"rpc.workers", BF_CFG_INT, "4", 1, 256,
     "worker threads per service, each with its own database connection"},
    {"rpc.max_msg_bytes", BF_CFG_INT, "8388608", 1024, 1073741824,
     "largest request frame accepted (ZMQ_MAXMSGSIZE); larger ones are refused"},
    {"rpc.max_string_bytes", BF_CFG_INT, "65536", 16, 16777216,
     "longest string accepted in any request parameter"},
    {"rpc.max_list", BF_CFG_INT, "10000", 1, 10000000,
     "longest list accepted in a request parameter unless a method says more"},
    {"rpc.max_objects", BF_CFG_INT, "2000000", 4096, 100000000,
     "most msgpack objects (about 24 bytes each once decoded) all requests being handled "
     "at once may hold; each method's own budget follows from its parameter table"},
    {"rpc.request_key_ttl_s", BF_CFG_INT, "604800", 60, 315360000,
     "how long a write's request_key is remembered (a retry within it replays the reply)"},
    {"rpc.group_max", BF_CFG_INT, "16", 1, 256,
     "most queued write requests one worker commits together in one transaction (1 = every "
     "write commits alone)"},
    {"rpc.group_lock_timeout_ms", BF_CFG_INT, "50", 1, 60000,
     "in a commit group, how long a request waits for a lock before it is set aside and run "
     "again alone after the group's commit"},
    {"rpc.drain_ms", BF_CFG_INT, "10000", 0, 600000,
     "on SIGTERM, how long to wait for in-flight requests"},
    {"relay.enabled", BF_CFG_BOOL, "true", 0, 0,
     "run the outbox relay in this process (one instance relays at a time)"},
    {"relay.batch", BF_CFG_INT, "500", 1, 100000, "events moved per relay round"},
    {"relay.stream", BF_CFG_STR, "bangfu:events", 0, 0, "the Redis Stream of events"},
    {"relay.stream_keep_s", BF_CFG_INT, "86400", 0, 315360000,
     "the stream keeps at least this many seconds of events for readers without a "
     "consumer group; older entries are trimmed once every group has read them"},
    {"relay.resend_window_s", BF_CFG_INT, "604800", 0, 315360000,
     "when Redis has lost events it had accepted, those relayed within this window are "
     "sent again from the outbox (a new, empty Redis is filled with this much history)"},
    {"relay.trim_interval_s", BF_CFG_INT, "60", 1, 86400,
     "how often the relay trims the stream by consumer lag (never past an unread entry)"},
    {"relay.retain_days", BF_CFG_INT, "30", 0, 36500,
     "relayed outbox rows older than this are pruned (0 = keep forever)"},
    {"security.mode", BF_CFG_STR, "curve", 0, 0,
     "curve (CURVE + ZAP on every socket) | plaintext (no authentication; debugging only)"},
    {"keys.dir", BF_CFG_STR, "/etc/bangfu/keys", 0, 0,
     "directory of CURVE key pairs (<name>.key, <name>.pub) and principals.conf"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct {
    const bf_cfg_def_t *def;
    char *value;
    long long ival;
    bool bval;
} bf_cfg_entry_t;

struct bf_cfg {
    bf_cfg_entry_t *entries;
    size_t n;
    char err[256];
    const bf_cfg_def_t *const *tables;
};

void bf_cfg_env_name(const char *key, char *buf, size_t n)
{
    size_t j = 0;
    const char *prefix = "BANGFU_";
    for (const char *p = prefix; *p && j + 1 < n; p++) buf[j++] = *p;
    for (const char *p = key; *p && j + 1 < n; p++)
        buf[j++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    if (n) buf[j < n ? j : n - 1] = '\0';
}

static bf_cfg_entry_t *s_find(const bf_cfg_t *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->n; i++)
        if (strcmp(cfg->entries[i].def->key, key) == 0) return &cfg->entries[i];
    return NULL;
}

static int s_set(bf_cfg_t *cfg, bf_cfg_entry_t *e, const char *value, const char *origin)
{
    char *copy = strdup(value);
    if (!copy) {
        snprintf(cfg->err, sizeof cfg->err, "%s: out of memory", e->def->key);
        return -1;
    }
    if (e->def->type == BF_CFG_INT) {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0' || v < e->def->min || v > e->def->max) {
            snprintf(cfg->err, sizeof cfg->err,
                     "%s (from %s): \"%.64s\" is not an integer in [%lld, %lld]",
                     e->def->key, origin, value, e->def->min, e->def->max);
            free(copy);
            return -1;
        }
        e->ival = v;
    } else if (e->def->type == BF_CFG_BOOL) {
        if (!strcasecmp(value, "true") || !strcmp(value, "1") || !strcasecmp(value, "yes") ||
            !strcasecmp(value, "on")) {
            e->bval = true;
        } else if (!strcasecmp(value, "false") || !strcmp(value, "0") ||
                   !strcasecmp(value, "no") || !strcasecmp(value, "off")) {
            e->bval = false;
        } else {
            snprintf(cfg->err, sizeof cfg->err, "%s (from %s): \"%.64s\" is not a boolean",
                     e->def->key, origin, value);
            free(copy);
            return -1;
        }
    }
    free(e->value);
    e->value = copy;
    return 0;
}

static bool s_owns_section(const bf_cfg_t *cfg, const char *section)
{
    size_t sl = strlen(section);
    for (size_t i = 0; i < cfg->n; i++) {
        const char *k = cfg->entries[i].def->key;
        if (strncmp(k, section, sl) == 0 && k[sl] == '.') return true;
    }
    return false;
}

/* libinih reads lines into a fixed buffer (INI_MAX_LINE, 200 bytes in
 * Debian's build). Feed it through a reader that notices a line cut short, so
 * an over-long line is reported as such, not as a puzzling syntax error. */
typedef struct {
    FILE *f;
    int line;
    int too_long_line; /* first over-long line, or 0 */
} bf_cfg_reader_t;

static char *s_reader(char *str, int num, void *stream)
{
    bf_cfg_reader_t *rd = stream;
    if (!fgets(str, num, rd->f)) return NULL;
    rd->line++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(rd->f)) {
        if (!rd->too_long_line) rd->too_long_line = rd->line;
        int c;
        while ((c = fgetc(rd->f)) != EOF && c != '\n') {
        }
        str[0] = '\0'; /* skip the line; the load fails below */
    }
    return str;
}

static int s_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    bf_cfg_t *cfg = user;
    if (!s_owns_section(cfg, section)) return 1; /* another service's section */
    char key[256];
    snprintf(key, sizeof key, "%s.%s", section, name);
    bf_cfg_entry_t *e = s_find(cfg, key);
    if (!e) {
        snprintf(cfg->err, sizeof cfg->err, "unknown config key %s", key);
        return 0;
    }
    return s_set(cfg, e, value, "file") == 0;
}

bf_cfg_t *bf_cfg_load(const bf_cfg_def_t *const *tables, const char *path, char *err,
                      size_t errlen)
{
    bf_cfg_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) goto oom;
    cfg->tables = tables;
    size_t total = 0;
    for (size_t t = 0; tables[t]; t++)
        for (const bf_cfg_def_t *d = tables[t]; d->key; d++) total++;
    cfg->entries = calloc(total ? total : 1, sizeof *cfg->entries);
    if (!cfg->entries) goto oom;
    for (size_t t = 0; tables[t]; t++) {
        for (const bf_cfg_def_t *d = tables[t]; d->key; d++) {
            if (s_find(cfg, d->key)) continue; /* the first table wins */
            bf_cfg_entry_t *e = &cfg->entries[cfg->n++];
            e->def = d;
            if (s_set(cfg, e, d->def, "default") != 0) goto fail;
        }
    }
    if (!path) path = getenv("BANGFU_CONFIG");
    if (path && *path) {
        bf_cfg_reader_t rd = {fopen(path, "r"), 0, 0};
        if (!rd.f) {
            snprintf(cfg->err, sizeof cfg->err, "cannot open config file %s", path);
            goto fail;
        }
        int rc = ini_parse_stream(s_reader, &rd, s_ini_handler, cfg);
        fclose(rd.f);
        if (rd.too_long_line && (rc == 0 || rc > rd.too_long_line)) {
            snprintf(cfg->err, sizeof cfg->err,
                     "%s line %d: longer than %d bytes (the INI parser's limit)", path,
                     rd.too_long_line, INI_MAX_LINE - 1);
            goto fail;
        } else if (rc > 0) {
            char tmp[300];
            snprintf(tmp, sizeof tmp, "%s line %d: %s", path, rc,
                     cfg->err[0] ? cfg->err : "syntax error");
            snprintf(cfg->err, sizeof cfg->err, "%s", tmp);
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->n; i++) {
        char var[160];
        bf_cfg_env_name(cfg->entries[i].def->key, var, sizeof var);
        const char *v = getenv(var);
        if (v && s_set(cfg, &cfg->entries[i], v, var) != 0) goto fail;
    }
    return cfg;
oom:
    snprintf(err, errlen, "out of memory loading config");
    if (cfg) free(cfg->entries);
    free(cfg);
    return NULL;
fail:
    snprintf(err, errlen, "%s", cfg->err);
    bf_cfg_destroy(&cfg);
    return NULL;
}

void bf_cfg_destroy(bf_cfg_t **self_p)
{
    if (!self_p || !*self_p) return;
    bf_cfg_t *cfg = *self_p;
    for (size_t i = 0; i < cfg->n; i++) free(cfg->entries[i].value);
    free(cfg->entries);
    free(cfg);
    *self_p = NULL;
}

static const bf_cfg_entry_t *s_get(const bf_cfg_t *cfg, const char *key, bf_cfg_type_t type)
{
    const bf_cfg_entry_t *e = s_find(cfg, key);
    if (!e || e->def->type != type) {
        fprintf(stderr, "bf_cfg: key %s not declared with that type\n", key);
        abort();
    }
    return e;
}

const char *bf_cfg_str(const bf_cfg_t *cfg, const char *key)
{
    return s_get(cfg, key, BF_CFG_STR)->value;
}

long long bf_cfg_int(const bf_cfg_t *cfg, const char *key)
{
    return s_get(cfg, key, BF_CFG_INT)->ival;
}

bool bf_cfg_bool(const bf_cfg_t *cfg, const char *key)
{
    return s_get(cfg, key, BF_CFG_BOOL)->bval;
}

void bf_cfg_print_help(const bf_cfg_def_t *const *tables)
{
    /* INI-shaped, so the output is also a commented config template:
     * [section], then per key its doc, variable and default, commented out */
    char section[64] = "";
    for (size_t t = 0; tables[t]; t++) {
        for (const bf_cfg_def_t *d = tables[t]; d->key; d++) {
            const char *dot = strchr(d->key, '.');
            size_t sl = dot ? (size_t)(dot - d->key) : 0;
            if (sl >= sizeof section) sl = sizeof section - 1;
            if (strncmp(section, d->key, sl) != 0 || section[sl] != '\0') {
                memcpy(section, d->key, sl);
                section[sl] = '\0';
                printf("\n[%s]\n", section);
            }
            char var[160];
            bf_cfg_env_name(d->key, var, sizeof var);
            printf("# %s\n#   env %s", d->doc, var);
            if (d->type == BF_CFG_INT) printf(", integer %lld..%lld", d->min, d->max);
            if (d->type == BF_CFG_BOOL) printf(", true/false");
            printf("\n;%s = %s\n", dot ? dot + 1 : d->key, d->def);
        }
    }
}
