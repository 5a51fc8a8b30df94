/* import.c: `bangfu import households FILE.csv`: a spreadsheet of households
 * into the registry (docs/cli.md, "Importing households").
 *
 * The file is streamed (csvread: UTF-8 or GBK, libcsv), one row per person.
 * Rows with the same household_ref form one household and must be adjacent;
 * an empty household_ref continues the household above (merged cells export
 * that way). Column titles are matched by name, English or Chinese, in any
 * order. Each household becomes one row of registry household.import, sent
 * in batches; what the registry rejects (rejected[].row, .field) is mapped
 * back to the CSV line and column title of the person or household at fault,
 * and so is what is wrong in the CSV itself (an unknown route, a bad income,
 * an empty name), which never reaches the registry. The rejects report is a
 * CSV: line, household_ref, field, message.
 *
 * Memory holds the current household, the current batch and one 64-bit hash
 * per household_ref seen (to catch a household split over two places).
 * Full ID numbers never reach the screen or the report: they are masked
 * (bf_id_mask) when valid, otherwise only their length is shown, and anything
 * in a message or a household_ref that looks like an ID number is masked too.
 */
#include "bf_json.h"
#include "bf_mp.h"
#include "bf_valid.h"
#include "cli.h"
#include "csvread.h"

#include <csv.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMPORT_MAX_BATCH 5000     /* registry's REGISTRY_MAX_IMPORT_ROWS */
#define IMPORT_DEFAULT_BATCH 2000
#define IMPORT_MAX_BATCH_BYTES (4u << 20) /* well under rpc.max_msg_bytes (8 MiB) */
#define IMPORT_MAX_ROWS_PER_HOUSEHOLD 1000
#define IMPORT_DEFAULT_TIMEOUT_MS 300000

/* ---- columns ---------------------------------------------------------------- */
/* The column titles and the value aliases below are mirrored for the web
 * console's import page in services/gateway/www/import.js: change both. */

enum {
    C_REF,
    C_VILLAGE,
    C_CATEGORIES,
    C_CAUSE_MAIN,
    C_CAUSE_SECONDARY,
    C_ROUTE,
    C_INCOME_YUAN,
    C_INCOME_FEN,
    C_NAME,
    C_ID_NUMBER,
    C_RELATION,
    C_GENDER,
    C_PHONE,
    C_ADDRESS,
    C_LABOUR,
    C_DISABILITY,
    C_COUNT
};

static const struct {
    const char *name;
    const char *aliases[6];
    bool household; /* a household-level value (same on all its rows) */
} s_cols[C_COUNT] = {
    [C_REF] = {"household_ref", {"户编号", "户号", "household", NULL}, false},
    [C_VILLAGE] = {"village_id", {"村ID", "村id", "village", "村", "村名", NULL}, true},
    [C_CATEGORIES] = {"categories", {"类别", "户类别", "帮扶对象类别", "category", NULL}, true},
    [C_CAUSE_MAIN] = {"cause_main", {"主要致贫原因", "致贫原因", NULL}, true},
    [C_CAUSE_SECONDARY] = {"cause_secondary", {"次要致贫原因", "其他致贫原因", NULL}, true},
    [C_ROUTE] = {"route", {"帮扶路径", "帮扶措施", NULL}, true},
    [C_INCOME_YUAN] = {"income_yuan", {"年收入(元)", "年收入（元）", "年收入", "家庭年收入(元)",
                                       "家庭年收入（元）", NULL}, true},
    [C_INCOME_FEN] = {"income_fen", {"年收入(分)", "年收入（分）", NULL}, true},
    [C_NAME] = {"name", {"姓名", NULL}, false},
    [C_ID_NUMBER] = {"id_number", {"身份证号", "身份证号码", "公民身份号码", NULL}, false},
    [C_RELATION] = {"relation", {"与户主关系", NULL}, false},
    [C_GENDER] = {"gender", {"性别", NULL}, false},
    [C_PHONE] = {"phone", {"电话", "联系电话", "手机", "手机号", NULL}, false},
    [C_ADDRESS] = {"address", {"家庭住址", "住址", "地址", NULL}, true},
    [C_LABOUR] = {"labour", {"劳动技能", "劳动能力", NULL}, false},
    [C_DISABILITY] = {"disability", {"是否残疾", "残疾人", NULL}, false},
};

/* ---- value aliases (Chinese as people write it -> registry codes) ------------ */

typedef struct {
    const char *alias;
    const char *code;
} s_alias_t;

static const s_alias_t s_routes[] = {
    {"employment", "employment"}, {"industry", "industry"},   {"safety_net", "safety_net"},
    {"就业", "employment"},       {"就业转移", "employment"}, {"转移就业", "employment"},
    {"产业", "industry"},         {"产业帮扶", "industry"},   {"产业扶持", "industry"},
    {"兜底", "safety_net"},       {"社会救助兜底", "safety_net"}, {"社保兜底", "safety_net"},
    {"政策兜底", "safety_net"},   {NULL, NULL},
};
static const s_alias_t s_relations[] = {
    {"head", "head"},         {"spouse", "spouse"},   {"child", "child"},
    {"parent", "parent"},     {"grandchild", "grandchild"}, {"sibling", "sibling"},
    {"other", "other"},       {"户主", "head"},       {"本人", "head"},
    {"配偶", "spouse"},       {"妻子", "spouse"},     {"丈夫", "spouse"},
    {"子女", "child"},        {"儿子", "child"},      {"女儿", "child"},
    {"之子", "child"},        {"之女", "child"},      {"父母", "parent"},
    {"父亲", "parent"},       {"母亲", "parent"},     {"孙子女", "grandchild"},
    {"孙子", "grandchild"},   {"孙女", "grandchild"}, {"兄弟姐妹", "sibling"},
    {"兄弟", "sibling"},      {"姐妹", "sibling"},    {"其他", "other"},
    {NULL, NULL},
};
static const s_alias_t s_labour[] = {
    {"skilled", "skilled"},   {"ordinary", "ordinary"}, {"weak", "weak"},
    {"lost", "lost"},         {"none", "none"},         {"技能劳动力", "skilled"},
    {"普通劳动力", "ordinary"}, {"弱劳动力", "weak"},     {"弱劳力", "weak"},
    {"半劳动力", "weak"},     {"丧失劳动力", "lost"},   {"无劳动力", "none"},
    {NULL, NULL},
};
static const s_alias_t s_yesno[] = {
    {"true", "yes"}, {"false", "no"}, {"yes", "yes"}, {"no", "no"}, {"1", "yes"}, {"0", "no"},
    {"y", "yes"},    {"n", "no"},     {"是", "yes"},  {"否", "no"}, {"有", "yes"}, {"无", "no"},
    {NULL, NULL},
};
static const s_alias_t s_genders[] = {
    {"male", "male"}, {"female", "female"}, {"男", "male"}, {"女", "female"},
    {"m", "male"},    {"f", "female"},      {NULL, NULL},
};
/* Categories and causes: the registry's codes (docs/registry.md) are passed as
 * they are; these Chinese names are translated; anything else goes to the
 * registry, which rejects it with its list of codes. */
static const s_alias_t s_categories[] = {
    {"低保", "dibao"},
    {"低保户", "dibao"},
    {"低收入", "low_income"},
    {"低收入户", "low_income"},
    {"特困供养", "extreme_poverty"},
    {"特困", "extreme_poverty"},
    {"特困户", "extreme_poverty"},
    {"散居孤儿", "orphan"},
    {"孤儿", "orphan"},
    {"留守儿童", "left_behind_child"},
    {"留守老人", "left_behind_elderly"},
    {"残疾", "disabled"},
    {"残疾人", "disabled"},
    {"大病", "serious_illness"},
    {"重病", "serious_illness"},
    {"建档立卡", "registered_poor"},
    {"建档立卡贫困户", "registered_poor"},
    {"贫困户", "registered_poor"},
    {NULL, NULL},
};
static const s_alias_t s_causes[] = {
    {"因病", "illness"},
    {"疾病", "illness"},
    {"因残", "disability"},
    {"残疾", "disability"},
    {"缺劳力", "lack_of_labour"},
    {"缺劳动力", "lack_of_labour"},
    {"因学", "education"},
    {"缺技术", "lack_of_skills"},
    {"缺土地", "lack_of_land"},
    {"缺水", "lack_of_water"},
    {"因灾", "disaster"},
    {"缺资金", "lack_of_funds"},
    {"交通条件落后", "transport"},
    {"交通", "transport"},
    {"自身发展动力不足", "self_motivation"},
    {"内生动力不足", "self_motivation"},
    {"其他", "other"},
    {NULL, NULL},
};

/* The code for s[0..n) in table (English case-insensitively), or NULL. */
static const char *s_lookup(const s_alias_t *table, const char *s, size_t n)
{
    for (const s_alias_t *a = table; a->alias; a++)
        if (strlen(a->alias) == n && !strncasecmp(a->alias, s, n)) return a->code;
    return NULL;
}

/* ---- small helpers ---------------------------------------------------------- */

/* Trims ASCII blanks and U+3000 (ideographic space) from both ends. */
static void s_trim(const char **s, size_t *n)
{
    const char *p = *s;
    size_t len = *n;
    for (;;) {
        if (len && (p[0] == ' ' || p[0] == '\t' || p[0] == '\r' || p[0] == '\n')) {
            p++, len--;
        } else if (len >= 3 && !memcmp(p, "\xE3\x80\x80", 3)) {
            p += 3, len -= 3;
        } else {
            break;
        }
    }
    for (;;) {
        if (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r' ||
                    p[len - 1] == '\n')) {
            len--;
        } else if (len >= 3 && !memcmp(p + len - 3, "\xE3\x80\x80", 3)) {
            len -= 3;
        } else {
            break;
        }
    }
    *s = p;
    *n = len;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes s[0..n) into out (size outlen) with every run that looks like a
 * personal ID number (15 or more of [0-9Xx] with at least 14 digits) masked:
 * a valid 18-character number as bf_id_mask shows it, anything else as
 * "[N characters]". Bytes that are not valid UTF-8 become '?'. */
static void s_scrub(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
#define PUT(c)                                                                                 \
    do {                                                                                       \
        if (o + 1 < outlen) out[o++] = (c);                                                    \
    } while (0)
    size_t i = 0;
    while (i < n) {
        size_t j = i, digits = 0;
        while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == 'X' || s[j] == 'x')) {
            if (s[j] >= '0' && s[j] <= '9') digits++;
            j++;
        }
        if (j - i >= 15 && digits >= 14) {
            char norm[BF_ID_LEN + 1], shown[32];
            if (j - i == BF_ID_LEN && bf_id_check(s + i, BF_ID_LEN, norm) == BF_ID_OK)
                bf_id_mask(norm, shown);
            else
                snprintf(shown, sizeof shown, "[%zu characters]", j - i);
            for (const char *p = shown; *p; p++) PUT(*p);
            i = j;
            continue;
        }
        if (j > i) {
            for (; i < j; i++) PUT(s[i]);
            continue;
        }
        /* one UTF-8 character, or '?' for a bad byte */
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (len && i + len <= n && bf_valid_utf8(s + i, len) && c != 0) {
            if (o + len < outlen) {
                memcpy(out + o, s + i, len);
                o += len;
            }
            i += len;
        } else {
            PUT('?');
            i++;
        }
    }
    if (outlen) out[o < outlen ? o : outlen - 1] = '\0';
#undef PUT
}

/* How an ID number may be shown: masked if valid, else only its length. */
static void s_id_display(const char *id, size_t n, char out[32])
{
    char norm[BF_ID_LEN + 1];
    if (bf_id_check(id, n, norm) == BF_ID_OK) {
        char masked[BF_ID_LEN + 1];
        bf_id_mask(norm, masked);
        snprintf(out, 32, "%s", masked);
    } else {
        snprintf(out, 32, "%zu characters", bf_valid_utf8(id, n) ? bf_valid_utf8_chars(id, n) : n);
    }
}

/* ---- a string pool (offsets survive growth) ---------------------------------- */

#define S_NONE ((size_t)-1)

typedef struct {
    char *buf;
    size_t len, cap;
} pool_t;

static size_t s_pool_add(pool_t *p, const char *s, size_t n)
{
    if (p->len + n + 1 > p->cap) {
        size_t want = p->cap ? p->cap : 4096;
        while (want < p->len + n + 1) want *= 2;
        char *b = realloc(p->buf, want);
        if (!b) return S_NONE;
        p->buf = b;
        p->cap = want;
    }
    size_t off = p->len;
    if (n) memcpy(p->buf + off, s, n);
    p->buf[off + n] = '\0';
    p->len += n + 1;
    return off;
}

/* ---- the set of household_refs seen (64-bit FNV-1a hashes) ------------------- */

typedef struct {
    uint64_t *slots;
    size_t cap, n;
} refset_t;

static uint64_t s_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
    return h ? h : 1;
}

/* Adds h; returns 1 if it was already there, 0 if added, -1 out of memory. */
static int s_refset_add(refset_t *set, uint64_t h)
{
    if ((set->n + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1u << 14;
        uint64_t *slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < set->cap; i++) {
            if (!set->slots[i]) continue;
            size_t k = (size_t)set->slots[i] & (cap - 1);
            while (slots[k]) k = (k + 1) & (cap - 1);
            slots[k] = set->slots[i];
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    size_t k = (size_t)h & (set->cap - 1);
    while (set->slots[k]) {
        if (set->slots[k] == h) return 1;
        k = (k + 1) & (set->cap - 1);
    }
    set->slots[k] = h;
    set->n++;
    return 0;
}

/* ---- the household being read, the batch being filled ------------------------ */

typedef struct {
    long line;
    size_t name, id_number, phone; /* pool offsets, S_NONE if empty */
    size_t id_len;
    const char *relation, *gender, *labour; /* registry codes; NULL if not given */
    int disability;                         /* -1 not given, 0 no, 1 yes */
} member_t;

typedef struct {
    bool open;
    size_t ref; /* pool offset */
    size_t ref_len;
    long line;
    size_t hv[C_COUNT]; /* household-level values (pool offsets) */
    size_t hv_len[C_COUNT];
    long hv_line[C_COUNT];
    member_t *members;
    size_t nmembers, cap;
    bool rejected;
    long rej_line;
    int rej_col; /* C_* or -1 */
    char rej_msg[400];
    pool_t pool;
} household_t;

typedef struct {
    long line;
    size_t ref; /* batch pool offset */
    size_t first_member, nmembers;
    int income_col;
} batch_hh_t;

typedef struct {
    long line;
    char id_shown[32];
} batch_member_t;

typedef struct {
    msgpack_sbuffer rows;
    msgpack_packer pk;
    batch_hh_t *hh;
    size_t n, cap;
    batch_member_t *mem;
    size_t nmem, memcap;
    pool_t pool;
} batch_t;

typedef struct {
    batch_t *b;
    char id[40];   /* request id of the call in flight */
    bool answered; /* reply holds its answer */
    cli_reply_t reply;
    double sent_at;
    int attempts;
} slot_t;

#define IMPORT_MAX_PARALLEL 16
#define IMPORT_DEFAULT_PARALLEL 3

typedef struct {
    /* options */
    const char *path;
    size_t batch_size;
    csvread_enc_t enc;
    int64_t village_default; /* 0 = none */
    bool dry_run, json;
    const char *actor;
    long timeout_ms;
    const char *rejects_path;
    /* input and output */
    FILE *in;
    uint64_t file_size; /* 0 = unknown (a pipe) */
    csvread_t *csv;
    FILE *rejects;
    bool report_started; /* its header line is out */
    bool rejects_on_tty; /* the report shares the terminal with the bar */
    cli_rpc_t *rpc; /* to the registry */
    const char *endpoint;
    size_t parallel;
    /* header */
    int col[C_COUNT]; /* field index of each column, -1 if absent */
    char colname[C_COUNT][96];
    size_t nheader;
    /* state */
    household_t hh;
    batch_t *fill; /* the batch being filled */
    slot_t slots[IMPORT_MAX_PARALLEL];
    size_t head, inflight; /* oldest slot in flight, how many */
    bool gave_up;          /* a batch timed out: wait for nothing more */
    refset_t refs;
    uint64_t households, rows, accepted, rejected, sent; /* rows: data rows read */
    long last_line;
    int fatal; /* exit code when the import had to stop, else 0 */
    /* progress */
    bool tty;
    double t0, last_draw;
    bool bar_shown;
} import_t;

static volatile sig_atomic_t s_interrupted;

static void s_on_sigint(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

/* ---- progress ------------------------------------------------------------------ */

static void s_bar_clear(import_t *im)
{
    if (im->bar_shown) {
        fputs("\r\033[K", stderr);
        im->bar_shown = false;
    }
}

static void s_progress(import_t *im, bool final)
{
    double now = s_now();
    double every = im->tty ? 0.1 : 5.0;
    if (!final && now - im->last_draw < every) return;
    im->last_draw = now;
    double el = now - im->t0;
    uint64_t done = im->accepted + im->rejected;
    double rate = el > 0 ? (double)done / el : 0;
    uint64_t bytes = csvread_bytes(im->csv);
    double mib = (double)bytes / 1048576.0, total = (double)im->file_size / 1048576.0;
    int pct = im->file_size ? (int)(bytes * 100 / im->file_size) : -1;
    if (pct > 100) pct = 100; /* the file grew while read */
    if (im->tty) {
        char bar[32];
        int width = 24, fill = pct < 0 ? 0 : pct * width / 100;
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        if (pct >= 0)
            fprintf(stderr, "\r\033[K[%s] %3d%%  %.1f/%.1f MiB  %.0f households/s  %s %" PRIu64
                            "  rejected %" PRIu64,
                    bar, pct, mib, total, rate, im->dry_run ? "valid" : "accepted",
                    im->accepted, im->rejected);
        else
            fprintf(stderr, "\r\033[K%.1f MiB  %.0f households/s  %s %" PRIu64
                            "  rejected %" PRIu64,
                    mib, rate, im->dry_run ? "valid" : "accepted", im->accepted, im->rejected);
        im->bar_shown = true;
        if (final) {
            fputc('\n', stderr);
            im->bar_shown = false;
        }
    } else {
        if (pct >= 0)
            fprintf(stderr, "import: %d%% (%.1f of %.1f MiB), %" PRIu64 " %s, %" PRIu64
                            " rejected, %.0f households/s\n",
                    pct, mib, total, im->accepted, im->dry_run ? "valid" : "accepted",
                    im->rejected, rate);
        else
            fprintf(stderr, "import: %.1f MiB, %" PRIu64 " %s, %" PRIu64
                            " rejected, %.0f households/s\n",
                    mib, im->accepted, im->dry_run ? "valid" : "accepted", im->rejected, rate);
    }
    fflush(stderr);
}

/* ---- the rejects report ---------------------------------------------------------- */

/* One report line: CSV line, household_ref, field, message (each scrubbed). */
static void s_report(import_t *im, long line, const char *ref, size_t ref_len, const char *field,
                     const char *msg)
{
    char ref_s[512], field_s[256], msg_s[1024];
    s_scrub(ref, ref_len, ref_s, sizeof ref_s);
    s_scrub(field, strlen(field), field_s, sizeof field_s);
    s_scrub(msg, strlen(msg), msg_s, sizeof msg_s);
    if (im->rejects_on_tty) s_bar_clear(im);
    if (!im->report_started) { /* on stderr the header waits for the first problem */
        fprintf(im->rejects, "line,household_ref,field,message\n");
        im->report_started = true;
    }
    fprintf(im->rejects, "%ld,", line);
    csv_fwrite(im->rejects, ref_s, strlen(ref_s));
    fputc(',', im->rejects);
    csv_fwrite(im->rejects, field_s, strlen(field_s));
    fputc(',', im->rejects);
    csv_fwrite(im->rejects, msg_s, strlen(msg_s));
    fputc('\n', im->rejects);
}

/* The column title as the file spells it (or the canonical name). */
static const char *s_colname(const import_t *im, int c)
{
    if (c < 0) return "";
    if (c == C_VILLAGE && im->col[C_VILLAGE] < 0) return "--village-id";
    return im->colname[c][0] ? im->colname[c] : s_cols[c].name;
}

/* ---- reading rows into households --------------------------------------------------- */

static void s_reject(import_t *im, long line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void s_reject(import_t *im, long line, int col, const char *fmt, ...)
{
    household_t *hh = &im->hh;
    if (hh->rejected) return; /* the first error of a household is reported */
    hh->rejected = true;
    hh->rej_line = line;
    hh->rej_col = col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hh->rej_msg, sizeof hh->rej_msg, fmt, ap);
    va_end(ap);
}

/* A field of the record, trimmed; empty if the column is absent or short. */
static void s_field(const import_t *im, const csvread_record_t *rec, int c, const char **s,
                    size_t *n)
{
    int i = im->col[c];
    if (i < 0 || (size_t)i >= rec->nfields) {
        *s = "";
        *n = 0;
        return;
    }
    *s = rec->fields[i];
    *n = rec->lens[i];
    s_trim(s, n);
}

static const char *s_hv(const household_t *hh, int c)
{
    return hh->hv[c] == S_NONE ? NULL : hh->pool.buf + hh->hv[c];
}

static int s_batch_flush(import_t *im);

/* The next item of a list cell (items separated by ';', '；' or '、', each
 * trimmed, empty ones skipped) from *pos on. Returns false at the end. */
static bool s_next_item(const char *s, size_t len, size_t *pos, const char **item, size_t *ilen)
{
    while (*pos <= len) {
        size_t start = *pos, i = start, sep = 0;
        while (i < len) {
            if (s[i] == ';') {
                sep = 1;
                break;
            }
            if (i + 3 <= len &&
                (!memcmp(s + i, "\xEF\xBC\x9B", 3) || !memcmp(s + i, "\xE3\x80\x81", 3))) {
                sep = 3; /* '；' or '、' */
                break;
            }
            i++;
        }
        *pos = i + (sep ? sep : 1);
        *item = s + start;
        *ilen = i - start;
        s_trim(item, ilen);
        if (*ilen) return true;
    }
    return false;
}

static size_t s_count_items(const char *s)
{
    size_t n = 0, pos = 0, ilen, len = s ? strlen(s) : 0;
    const char *item;
    while (s && s_next_item(s, len, &pos, &item, &ilen)) n++;
    return n;
}

/* Packs the items of a list cell (aliases translated) as a msgpack array. */
static void s_pack_list(msgpack_packer *pk, const char *s, const s_alias_t *aliases)
{
    msgpack_pack_array(pk, s_count_items(s));
    size_t pos = 0, ilen, len = s ? strlen(s) : 0;
    const char *item;
    while (s && s_next_item(s, len, &pos, &item, &ilen)) {
        const char *code = s_lookup(aliases, item, ilen);
        if (code)
            bf_mp_str(pk, code);
        else
            bf_mp_strn(pk, item, ilen);
    }
}

/* Parses a non-negative integer of at most 18 digits. */
static int s_parse_int(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n && s[0] == '+') s++, n--;
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Checks the household-level values and, if all is well, packs the household
 * into the batch. */
static void s_household_finish(import_t *im)
{
    household_t *hh = &im->hh;
    if (!hh->open) return;
    hh->open = false;
    im->households++;
    const char *ref = hh->pool.buf + hh->ref;

    int64_t village_id = im->village_default, income_fen = 0;
    const char *village_ref = NULL; /* a village's name or code: the registry resolves it */
    int income_col = -1;
    const char *route = NULL, *cause_main = NULL;
    if (!hh->rejected) {
        const char *v = s_hv(hh, C_VILLAGE);
        /* digits are an internal id, unless 12 of them (a division code);
         * anything else is a name, or REGION/NAME */
        if (v && (strlen(v) == 12 || s_parse_int(v, &village_id) != 0)) {
            village_ref = v;
            village_id = 0;
        } else if (v && village_id <= 0) {
            s_reject(im, hh->hv_line[C_VILLAGE], C_VILLAGE, "village_id \"%s\" is not a positive integer", v);
        } else if (village_id <= 0) {
            s_reject(im, hh->line, C_VILLAGE, "missing village_id");
        }
    }
    if (!hh->rejected) {
        const char *c = s_hv(hh, C_CATEGORIES);
        if (!c || s_count_items(c) == 0)
            s_reject(im, hh->line, C_CATEGORIES, "missing categories (for example 低保;留守老人)");
    }
    if (!hh->rejected) {
        const char *c = s_hv(hh, C_CAUSE_MAIN);
        if (!c)
            s_reject(im, hh->line, C_CAUSE_MAIN, "missing cause_main (for example 因病)");
        else
            cause_main = s_lookup(s_causes, c, strlen(c));
        if (!cause_main) cause_main = c;
    }
    if (!hh->rejected) {
        const char *r = s_hv(hh, C_ROUTE);
        if (!r)
            s_reject(im, hh->line, C_ROUTE, "missing route (employment, industry, safety_net or 就业, 产业, 兜底)");
        else if (!(route = s_lookup(s_routes, r, strlen(r))))
            s_reject(im, hh->hv_line[C_ROUTE], C_ROUTE,
                     "unknown route \"%s\" (employment, industry, safety_net or 就业, 产业, 兜底)", r);
    }
    if (!hh->rejected) {
        const char *y = s_hv(hh, C_INCOME_YUAN), *f = s_hv(hh, C_INCOME_FEN);
        int64_t fy = 0, ff = 0;
        if (f && (s_parse_int(f, &ff) != 0)) {
            s_reject(im, hh->hv_line[C_INCOME_FEN], C_INCOME_FEN,
                     "income_fen \"%s\" is not a whole number of fen", f);
        } else if (y && (bf_money_parse_yuan(y, strlen(y), &fy) != 0 || fy < 0)) {
            s_reject(im, hh->hv_line[C_INCOME_YUAN], C_INCOME_YUAN,
                     "income \"%s\" is not an amount in yuan (digits, at most 2 decimals, "
                     "no separators: 12345.60)", y);
        } else if (f && y && ff != fy) {
            s_reject(im, hh->hv_line[C_INCOME_FEN], C_INCOME_FEN,
                     "income_fen %" PRId64 " differs from income_yuan %s", ff, y);
        } else if (!f && !y) {
            s_reject(im, hh->line, im->col[C_INCOME_YUAN] >= 0 ? C_INCOME_YUAN : C_INCOME_FEN,
                     "missing income");
        } else {
            income_fen = f ? ff : fy;
            income_col = f ? C_INCOME_FEN : C_INCOME_YUAN;
        }
    }
    if (hh->rejected) {
        im->rejected++;
        s_report(im, hh->rej_line, ref, hh->ref_len, s_colname(im, hh->rej_col), hh->rej_msg);
        return;
    }

    /* pack {village_id, categories, causes, route, income_fen, members} */
    batch_t *b = im->fill;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        batch_hh_t *p = realloc(b->hh, cap * sizeof *p);
        if (!p) goto oom;
        b->hh = p;
        b->cap = cap;
    }
    if (b->nmem + hh->nmembers > b->memcap) {
        size_t cap = b->memcap ? b->memcap : 1024;
        while (cap < b->nmem + hh->nmembers) cap *= 2;
        batch_member_t *p = realloc(b->mem, cap * sizeof *p);
        if (!p) goto oom;
        b->mem = p;
        b->memcap = cap;
    }
    batch_hh_t *bh = &b->hh[b->n];
    bh->line = hh->line;
    bh->ref = s_pool_add(&b->pool, ref, hh->ref_len);
    if (bh->ref == S_NONE) goto oom;
    bh->first_member = b->nmem;
    bh->nmembers = hh->nmembers;
    bh->income_col = income_col;
    b->n++;

    msgpack_packer *pk = &b->pk;
    const char *address = s_hv(hh, C_ADDRESS);
    msgpack_pack_map(pk, address ? 7 : 6);
    if (village_ref)
        bf_mp_kv_str(pk, "village", village_ref);
    else
        bf_mp_kv_int(pk, "village_id", village_id);
    if (address) bf_mp_kv_str(pk, "address", address);
    bf_mp_key(pk, "categories");
    s_pack_list(pk, s_hv(hh, C_CATEGORIES), s_categories);
    bf_mp_key(pk, "causes");
    msgpack_pack_map(pk, 2);
    bf_mp_kv_str(pk, "main", cause_main);
    bf_mp_key(pk, "secondary");
    s_pack_list(pk, s_hv(hh, C_CAUSE_SECONDARY), s_causes);
    bf_mp_kv_str(pk, "route", route);
    bf_mp_kv_int(pk, "income_fen", income_fen);
    bf_mp_key(pk, "members");
    msgpack_pack_array(pk, hh->nmembers);
    for (size_t i = 0; i < hh->nmembers; i++) {
        const member_t *m = &hh->members[i];
        int n = 3 + (m->gender != NULL) + (m->phone != S_NONE) + (m->labour != NULL) +
                (m->disability >= 0);
        msgpack_pack_map(pk, (size_t)n);
        bf_mp_kv_str(pk, "name", hh->pool.buf + m->name);
        bf_mp_key(pk, "id_number");
        bf_mp_strn(pk, hh->pool.buf + m->id_number, m->id_len);
        bf_mp_kv_str(pk, "relation", m->relation);
        if (m->gender) bf_mp_kv_str(pk, "gender", m->gender);
        if (m->phone != S_NONE) bf_mp_kv_str(pk, "phone", hh->pool.buf + m->phone);
        if (m->labour) bf_mp_kv_str(pk, "labour", m->labour);
        if (m->disability >= 0) bf_mp_kv_bool(pk, "disability", m->disability == 1);
        batch_member_t *bm = &b->mem[b->nmem++];
        bm->line = m->line;
        s_id_display(hh->pool.buf + m->id_number, m->id_len, bm->id_shown);
    }
    if (b->n >= im->batch_size || b->rows.size >= IMPORT_MAX_BATCH_BYTES) s_batch_flush(im);
    return;
oom:
    fprintf(stderr, "bangfu import: out of memory\n");
    im->fatal = CLI_ERR_REPLY;
}

static void s_household_begin(import_t *im, const char *ref, size_t ref_len, long line)
{
    household_t *hh = &im->hh;
    hh->pool.len = 0;
    hh->open = true;
    hh->rejected = false;
    hh->rej_col = -1;
    hh->rej_msg[0] = '\0';
    hh->line = line;
    hh->nmembers = 0;
    for (int c = 0; c < C_COUNT; c++) {
        hh->hv[c] = S_NONE;
        hh->hv_len[c] = 0;
        hh->hv_line[c] = 0;
    }
    hh->ref = s_pool_add(&hh->pool, ref, ref_len);
    hh->ref_len = ref_len;
    if (hh->ref == S_NONE) {
        hh->ref = s_pool_add(&hh->pool, "", 0);
        s_reject(im, line, -1, "out of memory");
    }
}

/* Stores a value in the household's pool; S_NONE (and the household
 * rejected) when memory runs out. */
static size_t s_keep(import_t *im, long line, const char *s, size_t n)
{
    size_t off = s_pool_add(&im->hh.pool, s, n);
    if (off == S_NONE) s_reject(im, line, -1, "out of memory");
    return off;
}

static void s_row(import_t *im, const csvread_record_t *rec)
{
    long line = rec->line;
    im->last_line = line;
    household_t *hh = &im->hh;

    /* a row of empty cells (spreadsheets export trailing ones) is no row */
    if (!rec->error) {
        bool empty = true;
        for (size_t i = 0; i < rec->nfields && empty; i++) {
            const char *s = rec->fields[i];
            size_t n = rec->lens[i];
            s_trim(&s, &n);
            if (n) empty = false;
        }
        if (empty) return;
    }
    im->rows++;

    const char *ref;
    size_t ref_len;
    s_field(im, rec, C_REF, &ref, &ref_len);
    bool same = hh->open && (ref_len == 0 || (ref_len == hh->ref_len &&
                                              !memcmp(ref, hh->pool.buf + hh->ref, ref_len)));
    if (!same) {
        s_household_finish(im);
        if (im->fatal) return;
        s_household_begin(im, ref, ref_len, line);
        if (ref_len == 0) {
            s_reject(im, line, C_REF, "missing household_ref");
        } else {
            int seen = s_refset_add(&im->refs, s_hash(ref, ref_len));
            if (seen < 0)
                s_reject(im, line, -1, "out of memory");
            else if (seen)
                s_reject(im, line, C_REF,
                         "this household_ref was used by rows further up; the rows of one "
                         "household must be adjacent");
        }
    }
    if (hh->rejected) return;
    if (rec->error) {
        s_reject(im, line, -1, "%s", rec->error);
        return;
    }
    if (rec->nfields > im->nheader) {
        for (size_t i = im->nheader; i < rec->nfields; i++) {
            const char *s = rec->fields[i];
            size_t n = rec->lens[i];
            s_trim(&s, &n);
            if (n) {
                s_reject(im, line, -1, "the row has %zu fields, the header only %zu",
                         rec->nfields, im->nheader);
                return;
            }
        }
    }
    for (int c = 0; c < C_COUNT; c++) {
        const char *s;
        size_t n;
        s_field(im, rec, c, &s, &n);
        if (!bf_valid_utf8(s, n)) {
            s_reject(im, line, c,
                     "not valid UTF-8 text (is the file GBK? try --encoding gbk)");
            return;
        }
        if (!s_cols[c].household || n == 0) continue;
        if (hh->hv[c] == S_NONE) {
            hh->hv[c] = s_keep(im, line, s, n);
            hh->hv_len[c] = n;
            hh->hv_line[c] = line;
            if (hh->rejected) return;
        } else if (n != hh->hv_len[c] || memcmp(s, hh->pool.buf + hh->hv[c], n) != 0) {
            s_reject(im, line, c, "\"%.*s\" differs from \"%s\" on line %ld of the same household",
                     (int)(n > 200 ? 200 : n), s, hh->pool.buf + hh->hv[c], hh->hv_line[c]);
            return;
        }
    }

    /* the person */
    if (hh->nmembers == IMPORT_MAX_ROWS_PER_HOUSEHOLD) {
        s_reject(im, line, -1, "more than %d rows in one household", IMPORT_MAX_ROWS_PER_HOUSEHOLD);
        return;
    }
    const char *name, *id, *rel, *gender, *phone, *labour, *disab;
    size_t name_n, id_n, rel_n, gender_n, phone_n, labour_n, disab_n;
    s_field(im, rec, C_NAME, &name, &name_n);
    s_field(im, rec, C_ID_NUMBER, &id, &id_n);
    s_field(im, rec, C_RELATION, &rel, &rel_n);
    s_field(im, rec, C_GENDER, &gender, &gender_n);
    s_field(im, rec, C_PHONE, &phone, &phone_n);
    s_field(im, rec, C_LABOUR, &labour, &labour_n);
    s_field(im, rec, C_DISABILITY, &disab, &disab_n);
    if (!name_n) {
        s_reject(im, line, C_NAME, "missing name");
        return;
    }
    if (!id_n) {
        s_reject(im, line, C_ID_NUMBER, "missing id_number");
        return;
    }
    const char *rel_code = rel_n ? s_lookup(s_relations, rel, rel_n) : NULL;
    if (!rel_code) {
        if (!rel_n)
            s_reject(im, line, C_RELATION, "missing relation");
        else
            s_reject(im, line, C_RELATION,
                     "unknown relation \"%.*s\" (head, spouse, child, parent, grandchild, "
                     "sibling, other or 户主, 配偶, 子女, 父母, 孙子女, 兄弟姐妹, 其他)",
                     (int)(rel_n > 100 ? 100 : rel_n), rel);
        return;
    }
    const char *gender_code = NULL;
    if (gender_n && !(gender_code = s_lookup(s_genders, gender, gender_n))) {
        s_reject(im, line, C_GENDER, "unknown gender \"%.*s\" (male, female or 男, 女)",
                 (int)(gender_n > 100 ? 100 : gender_n), gender);
        return;
    }
    const char *labour_code = NULL;
    if (labour_n && !(labour_code = s_lookup(s_labour, labour, labour_n))) {
        s_reject(im, line, C_LABOUR,
                 "unknown labour \"%.*s\" (skilled, ordinary, weak, lost, none or 技能劳动力, "
                 "普通劳动力, 弱劳动力, 丧失劳动力, 无劳动力)",
                 (int)(labour_n > 100 ? 100 : labour_n), labour);
        return;
    }
    const char *yn = NULL;
    if (disab_n && !(yn = s_lookup(s_yesno, disab, disab_n))) {
        s_reject(im, line, C_DISABILITY, "disability \"%.*s\" is not yes or no (是 / 否)",
                 (int)(disab_n > 100 ? 100 : disab_n), disab);
        return;
    }
    if (hh->nmembers == hh->cap) {
        size_t cap = hh->cap ? hh->cap * 2 : 16;
        member_t *p = realloc(hh->members, cap * sizeof *p);
        if (!p) {
            s_reject(im, line, -1, "out of memory");
            return;
        }
        hh->members = p;
        hh->cap = cap;
    }
    member_t *m = &hh->members[hh->nmembers];
    m->line = line;
    m->relation = rel_code;
    m->gender = gender_code;
    m->labour = labour_code;
    m->disability = yn ? !strcmp(yn, "yes") : -1;
    m->name = s_keep(im, line, name, name_n);
    m->id_number = s_keep(im, line, id, id_n);
    m->id_len = id_n;
    m->phone = phone_n ? s_keep(im, line, phone, phone_n) : S_NONE;
    if (hh->rejected) return;
    hh->nmembers++;
}

/* ---- sending a batch, reading the verdict ------------------------------------------ */

/* Maps a registry field ("members[2].id_number", "rows[5].route", "causes.main")
 * to the CSV column it came from and, for a member, that member's index. */
static int s_field_to_col(const char *field, const batch_hh_t *bh, long *member)
{
    *member = -1;
    const char *f = field;
    if (!strncmp(f, "rows[", 5)) { /* drop a "rows[N]." prefix */
        const char *dot = strchr(f, '.');
        f = dot ? dot + 1 : f + strlen(f);
    }
    if (!strncmp(f, "members[", 8)) {
        char *end;
        long i = strtol(f + 8, &end, 10);
        if (*end == ']' && i >= 0) *member = i;
        const char *dot = strchr(f, '.');
        if (!dot) return -1;
        f = dot + 1;
        if (!strcmp(f, "name")) return C_NAME;
        if (!strcmp(f, "id_number")) return C_ID_NUMBER;
        if (!strcmp(f, "relation")) return C_RELATION;
        if (!strcmp(f, "gender")) return C_GENDER;
        if (!strcmp(f, "phone")) return C_PHONE;
        if (!strcmp(f, "labour")) return C_LABOUR;
        if (!strcmp(f, "disability")) return C_DISABILITY;
        return -1;
    }
    if (!strcmp(f, "village_id") || !strcmp(f, "village")) return C_VILLAGE;
    if (!strncmp(f, "categories", 10)) return C_CATEGORIES;
    if (!strcmp(f, "causes.main")) return C_CAUSE_MAIN;
    if (!strncmp(f, "causes.secondary", 16)) return C_CAUSE_SECONDARY;
    if (!strcmp(f, "route")) return C_ROUTE;
    if (!strcmp(f, "address")) return C_ADDRESS;
    if (!strcmp(f, "income_fen")) return bh->income_col;
    return -1;
}

static void s_copy_str(const msgpack_object *o, char *out, size_t n)
{
    if (o && o->type == MSGPACK_OBJECT_STR)
        snprintf(out, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    else
        out[0] = '\0';
}

static batch_t *s_batch_new(void)
{
    batch_t *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    msgpack_sbuffer_init(&b->rows);
    msgpack_packer_init(&b->pk, &b->rows, msgpack_sbuffer_write);
    return b;
}

static void s_batch_destroy(batch_t **self_p)
{
    if (!*self_p) return;
    batch_t *b = *self_p;
    msgpack_sbuffer_destroy(&b->rows);
    free(b->hh);
    free(b->mem);
    free(b->pool.buf);
    free(b);
    *self_p = NULL;
}

static void s_batch_reset(batch_t *b)
{
    msgpack_sbuffer_clear(&b->rows);
    b->n = 0;
    b->nmem = 0;
    b->pool.len = 0;
}

/* Handles a successful household.import reply for batch b. */
static void s_batch_verdict(import_t *im, const batch_t *b, const msgpack_object *result)
{
    unsigned char *hit = calloc(b->n ? b->n : 1, 1);
    if (!hit) {
        fprintf(stderr, "bangfu import: out of memory\n");
        im->fatal = CLI_ERR_REPLY;
        return;
    }
    uint64_t distinct = 0;
    const msgpack_object *rej = bf_mp_get(result, "rejected");
    if (rej && rej->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t k = 0; k < rej->via.array.size; k++) {
            const msgpack_object *item = &rej->via.array.ptr[k];
            int64_t row = -1;
            char field[256], msg[600];
            bf_mp_int(bf_mp_get(item, "row"), &row);
            s_copy_str(bf_mp_get(item, "field"), field, sizeof field);
            s_copy_str(bf_mp_get(item, "message"), msg, sizeof msg);
            if (row < 0 || (uint64_t)row >= b->n) {
                if (im->rejects_on_tty) s_bar_clear(im);
                fprintf(stderr, "bangfu import: the registry rejected a row %" PRId64
                                " that the batch does not have (%s)\n", row, msg);
                continue;
            }
            const batch_hh_t *bh = &b->hh[row];
            long member = -1;
            int col = s_field_to_col(field, bh, &member);
            long line = bh->line;
            char full[900];
            snprintf(full, sizeof full, "%s", msg);
            if (member >= 0 && (size_t)member < bh->nmembers) {
                const batch_member_t *bm = &b->mem[bh->first_member + (size_t)member];
                line = bm->line;
                if (col == C_ID_NUMBER)
                    snprintf(full, sizeof full, "%s (ID %s)", msg, bm->id_shown);
            }
            const char *shown = col >= 0 ? s_colname(im, col) : field;
            s_report(im, line, b->pool.buf + bh->ref, strlen(b->pool.buf + bh->ref), shown, full);
            if (!hit[row]) {
                hit[row] = 1;
                distinct++;
            }
        }
    }
    int64_t accepted = -1;
    if (!bf_mp_int(bf_mp_get(result, "accepted"), &accepted) || accepted < 0)
        accepted = (int64_t)(b->n - distinct);
    if ((uint64_t)accepted + distinct != b->n) {
        if (im->rejects_on_tty) s_bar_clear(im);
        fprintf(stderr, "bangfu import: the registry accepted %" PRId64 " and rejected %" PRIu64
                        " of %zu households sent (lines %ld-%ld)\n",
                accepted, distinct, b->n, b->hh[0].line, b->hh[b->n - 1].line);
    }
    im->accepted += (uint64_t)accepted;
    im->rejected += distinct;
    free(hit);
}

/* ---- the pipeline: up to --parallel batches in flight ------------------------------
 *
 * One client (rpc.h) carries several household.import calls at once, so the registry's
 * workers import batches side by side while this process reads on. Replies
 * may come in any order; they are matched by request id and handled in the
 * order the batches were sent, so the rejects report follows the file. A
 * batch answered with `conflict` (a deadlock between two batches that share
 * a duplicate ID number, resolved by PostgreSQL aborting one transaction,
 * which therefore changed nothing) is sent again, up to IMPORT_RETRIES times.
 */

#define IMPORT_RETRIES 3

static int s_send(import_t *im, slot_t *sl)
{
    batch_t *b = sl->b;
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    bf_mp_key(&pk, "rows");
    msgpack_pack_array(&pk, b->n);
    msgpack_sbuffer_write(&params, b->rows.data, b->rows.size);
    int rc = cli_rpc_send(im->rpc, "household.import", params.data, params.size, im->actor,
                          sl->id);
    msgpack_sbuffer_destroy(&params);
    sl->sent_at = s_now();
    sl->answered = false;
    sl->attempts++;
    return rc;
}

/* Receives one reply (waiting up to wait_ms) and files it with its slot.
 * Replies nobody waits for (a batch given up on) are dropped. */
static void s_receive(import_t *im, long wait_ms)
{
    cli_reply_t r;
    if (cli_rpc_recv(im->rpc, wait_ms, &r) != 1) return;
    for (size_t k = 0; k < im->inflight; k++) {
        slot_t *sl = &im->slots[(im->head + k) % im->parallel];
        if (!sl->answered && !strcmp(r.id, sl->id)) {
            cli_reply_destroy(&sl->reply);
            sl->reply = r; /* the slot owns it now */
            sl->answered = true;
            return;
        }
    }
    cli_reply_destroy(&r);
}

/* Waits for the oldest batch in flight and handles its reply. */
static void s_settle_oldest(import_t *im)
{
    slot_t *sl = &im->slots[im->head];
    batch_t *b = sl->b;
    long first = b->hh[0].line, last = b->hh[b->n - 1].line;
    for (;;) {
        while (!sl->answered) {
            long left = (long)((sl->sent_at + (double)im->timeout_ms / 1000.0 - s_now()) * 1000.0);
            if (left <= 0) {
                s_bar_clear(im);
                fprintf(stderr, "bangfu import: the registry did not answer at %s within %ld ms; "
                                "the batch of lines %ld-%ld may or may not have been imported\n",
                        im->endpoint, im->timeout_ms, first, last);
                im->fatal = CLI_UNAVAILABLE;
                im->gave_up = true;
                goto done;
            }
            s_receive(im, left < 200 ? left : 200);
            s_progress(im, false);
        }
        if (sl->reply.ok) {
            const msgpack_object *result = sl->reply.result;
            if (result && result->type == MSGPACK_OBJECT_MAP) {
                s_batch_verdict(im, b, result);
            } else {
                s_bar_clear(im);
                fprintf(stderr, "bangfu import: household.import returned no result map\n");
                im->fatal = CLI_ERR_REPLY;
            }
            goto done;
        }
        const char *code = sl->reply.code, *message = sl->reply.message,
                   *field = sl->reply.field;
        if (!strcmp(code, "conflict") && sl->attempts <= IMPORT_RETRIES && !im->fatal) {
            if (s_send(im, sl) == 0) continue; /* rolled back entirely: safe to resend */
        }
        s_bar_clear(im);
        fprintf(stderr, "bangfu import: the registry refused the batch of lines %ld-%ld: %s: %s%s%s%s\n",
                first, last, code, message, field[0] ? " (field " : "", field, field[0] ? ")" : "");
        if (!im->fatal) im->fatal = strcmp(code, "unavailable") == 0 ? CLI_UNAVAILABLE : CLI_ERR_REPLY;
        goto done;
    }
done:
    s_batch_reset(b);
    sl->answered = false;
    sl->attempts = 0;
    cli_reply_destroy(&sl->reply);
    im->head = (im->head + 1) % im->parallel;
    im->inflight--;
    s_progress(im, false);
}

/* Hands the filled batch to the pipeline (or counts it, in a dry run). */
static int s_batch_flush(import_t *im)
{
    batch_t *b = im->fill;
    if (b->n == 0 || im->fatal) return 0;
    if (im->dry_run) {
        im->accepted += b->n;
        s_batch_reset(b);
        s_progress(im, false);
        return 0;
    }
    if (im->inflight == im->parallel) s_settle_oldest(im);
    if (im->fatal) return -1;
    slot_t *sl = &im->slots[(im->head + im->inflight) % im->parallel];
    im->fill = sl->b; /* an empty batch to fill next */
    sl->b = b;
    sl->attempts = 0;
    im->inflight++;
    im->sent += b->n;
    if (s_send(im, sl) != 0) {
        s_bar_clear(im);
        fprintf(stderr, "bangfu import: cannot send to %s: %s\n", im->endpoint,
                strerror(errno));
        im->fatal = CLI_UNAVAILABLE;
        im->gave_up = true;
        return -1;
    }
    return 0;
}

/* Waits for every batch still in flight (unless the registry stopped answering). */
static void s_drain(import_t *im)
{
    while (im->inflight > 0 && !im->gave_up) s_settle_oldest(im);
}

/* ---- the header ---------------------------------------------------------------- */

static int s_header(import_t *im, const csvread_record_t *rec)
{
    for (int c = 0; c < C_COUNT; c++) {
        im->col[c] = -1;
        im->colname[c][0] = '\0';
    }
    im->nheader = rec->nfields;
    if (rec->error) {
        fprintf(stderr, "bangfu import: %s: the header (line %ld) is malformed: %s\n", im->path,
                rec->line, rec->error);
        return -1;
    }
    for (size_t i = 0; i < rec->nfields; i++) {
        const char *s = rec->fields[i];
        size_t n = rec->lens[i];
        s_trim(&s, &n);
        if (!n) continue;
        int found = -1;
        for (int c = 0; c < C_COUNT && found < 0; c++) {
            if (strlen(s_cols[c].name) == n && !strncasecmp(s_cols[c].name, s, n)) found = c;
            for (int a = 0; found < 0 && s_cols[c].aliases[a]; a++)
                if (strlen(s_cols[c].aliases[a]) == n && !strncasecmp(s_cols[c].aliases[a], s, n))
                    found = c;
        }
        char shown[96];
        s_scrub(s, n, shown, sizeof shown);
        if (found < 0) {
            fprintf(stderr, "bangfu import: %s: column \"%s\" (field %zu) is not one the import "
                            "knows; it is ignored\n", im->path, shown, i + 1);
            continue;
        }
        if (im->col[found] >= 0) {
            fprintf(stderr, "bangfu import: %s: columns %d and %zu are both %s\n", im->path,
                    im->col[found] + 1, i + 1, s_cols[found].name);
            return -1;
        }
        im->col[found] = (int)i;
        snprintf(im->colname[found], sizeof im->colname[found], "%s", shown);
    }
    char missing[512] = "";
    size_t mlen = 0;
    for (int c = 0; c < C_COUNT; c++) {
        bool required = c == C_REF || c == C_CATEGORIES || c == C_CAUSE_MAIN || c == C_ROUTE ||
                        c == C_NAME || c == C_ID_NUMBER || c == C_RELATION ||
                        (c == C_VILLAGE && !im->village_default);
        if (required && im->col[c] < 0)
            mlen += (size_t)snprintf(missing + mlen, sizeof missing - mlen, "%s%s (%s)",
                                     mlen ? ", " : "", s_cols[c].name, s_cols[c].aliases[0]);
        if (mlen >= sizeof missing) mlen = sizeof missing - 1;
    }
    if (im->col[C_INCOME_YUAN] < 0 && im->col[C_INCOME_FEN] < 0)
        snprintf(missing + mlen, sizeof missing - mlen, "%sincome_yuan (%s) or income_fen",
                 mlen ? ", " : "", s_cols[C_INCOME_YUAN].aliases[0]);
    if (missing[0]) {
        fprintf(stderr, "bangfu import: %s: the header (line %ld) lacks: %s\n"
                        "(see `bangfu import --help` for the columns)\n",
                im->path, rec->line, missing);
        return -1;
    }
    return 0;
}

/* ---- the command ---------------------------------------------------------------- */

static void s_help(FILE *f)
{
    fprintf(f,
            "usage: bangfu import households FILE.csv [--batch N] [--parallel N]\n"
            "       (bangfu import units|cadres|teams|pairings FILE.csv: see --help there)\n"
            "           [--encoding auto|utf-8|gbk] [--village-id ID] [--dry-run]\n"
            "           [--rejects FILE] [--actor A] [--timeout MS] [--json]\n"
            "\n"
            "Imports households into the registry from a CSV file of any size (read as a\n"
            "stream), in UTF-8 (with or without BOM) or GBK/GB18030 as Chinese spreadsheet\n"
            "software saves it. One row per person; rows with the same household_ref form one\n"
            "household and must be adjacent (an empty household_ref continues the household\n"
            "above). The first row names the columns, in any order, in English or Chinese:\n"
            "\n"
            "  household_ref    户编号        your key for the household (required)\n"
            "  village_id       村ID, 村      the village: its id, its 12-digit code, its name,\n"
            "                                 or REGION/NAME (a region's code or name, '/', the\n"
            "                                 village's name); or --village-id\n"
            "  categories       类别          ';' or '、' separated: dibao 低保, low_income 低收入,\n"
            "                                 extreme_poverty 特困供养, orphan 散居孤儿,\n"
            "                                 left_behind_child 留守儿童, left_behind_elderly 留守老人,\n"
            "                                 disabled 残疾, serious_illness 大病, registered_poor 建档立卡\n"
            "  cause_main       主要致贫原因  illness 因病, disability 因残, lack_of_labour 缺劳力,\n"
            "                                 education 因学, lack_of_skills 缺技术, lack_of_land 缺土地,\n"
            "                                 lack_of_water 缺水, disaster 因灾, lack_of_funds 缺资金,\n"
            "                                 transport 交通条件落后, self_motivation 自身发展动力不足, other 其他\n"
            "  cause_secondary  次要致贫原因  ';' separated causes (optional)\n"
            "  route            帮扶路径      employment 就业, industry 产业, safety_net 兜底\n"
            "  income_yuan      年收入(元)    yearly income, e.g. 12345.60 (or income_fen 年收入(分))\n"
            "  name             姓名          the person (required on every row)\n"
            "  id_number        身份证号      18-character resident ID number\n"
            "  relation         与户主关系    head 户主, spouse 配偶, child 子女, parent 父母,\n"
            "                                 grandchild 孙子女, sibling 兄弟姐妹, other 其他\n"
            "  gender           性别          male 男, female 女 (optional)\n"
            "  phone            电话          11-digit mobile number (optional)\n"
            "  address          家庭住址      the household's address (optional)\n"
            "  labour           劳动技能      skilled 技能劳动力, ordinary 普通劳动力, weak 弱劳动力,\n"
            "                                 lost 丧失劳动力, none 无劳动力 (optional)\n"
            "  disability       是否残疾      yes 是 / no 否 (optional)\n"
            "\n"
            "Household values may stand on any of its rows; where several rows give one, they\n"
            "must agree. Unknown columns are ignored (with a warning).\n"
            "\n"
            "  --batch N        households per household.import call (1-5000, default 2000)\n"
            "  --parallel N     batches in flight at once (1-16, default 3); the registry\n"
            "                   imports them side by side\n"
            "  --encoding E     auto (default: BOM or valid UTF-8 means UTF-8, else GBK),\n"
            "                   utf-8 or gbk\n"
            "  --village-id ID  village for rows whose village_id is empty or missing\n"
            "  --dry-run        read and check the file, send nothing\n"
            "  --rejects FILE   write the rejects report there (default: stderr)\n"
            "  --actor A        who imports (default $BANGFU_ACTOR, else admin)\n"
            "  --timeout MS     wait per batch (default 300000)\n"
            "  --json           print the summary as JSON\n"
            "\n"
            "Progress goes to stderr (a bar on a terminal). The rejects report is CSV:\n"
            "line,household_ref,field,message, one line per problem, naming the CSV line and\n"
            "column; ID numbers in it are masked. The summary goes to stdout.\n"
            "Exit status: 0 all accepted, 1 some rejected (or the import stopped), 2 usage or\n"
            "unreadable file, 3 registry unavailable, 130 interrupted.\n");
}

static void s_summary(import_t *im, double seconds)
{
    double rate = seconds > 0 ? (double)(im->accepted + im->rejected) / seconds : 0;
    if (im->json) {
        printf("{\"households\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"rejected\":%" PRIu64
               ",\"rows\":%" PRIu64 ",\"lines\":%ld,\"encoding\":\"%s\",\"seconds\":%.3f,"
               "\"households_per_second\":%.0f,\"dry_run\":%s,\"complete\":%s}\n",
               im->households, im->accepted, im->rejected, im->rows, im->last_line,
               csvread_encoding(im->csv), seconds, rate, im->dry_run ? "true" : "false",
               im->fatal || s_interrupted ? "false" : "true");
    } else {
        printf("%s: %" PRIu64 " households read, %" PRIu64 " %s, %" PRIu64 " rejected (%" PRIu64
               " rows, %ld lines, %s) in %.1f s, %.0f households/s%s\n",
               im->path, im->households, im->accepted, im->dry_run ? "valid" : "accepted",
               im->rejected, im->rows, im->last_line, csvread_encoding(im->csv), seconds, rate,
               im->dry_run ? " (dry run: nothing sent)"
               : im->fatal || s_interrupted ? " (stopped before the end)" : "");
    }
    fflush(stdout);
}

static int s_parse_args(import_t *im, int argc, char **argv)
{
    if (argc < 2) {
        s_help(stderr);
        return CLI_USAGE;
    }
    if (cli_is_help(argv[1])) {
        s_help(stdout);
        return -1;
    }
    if (strcmp(argv[1], "households") != 0) {
        fprintf(stderr, "bangfu import: unknown kind %s (households, units, cadres, teams, "
                        "pairings)\n", argv[1]);
        return CLI_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            s_help(stdout);
            return -1;
        } else if (!strcmp(a, "--dry-run")) {
            im->dry_run = true;
        } else if (!strcmp(a, "--json")) {
            im->json = true;
        } else if (!strcmp(a, "--batch") && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > IMPORT_MAX_BATCH) {
                fprintf(stderr, "bangfu import: --batch must be 1..%d\n", IMPORT_MAX_BATCH);
                return CLI_USAGE;
            }
            im->batch_size = (size_t)n;
            i++;
        } else if (!strcmp(a, "--parallel") && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > IMPORT_MAX_PARALLEL) {
                fprintf(stderr, "bangfu import: --parallel must be 1..%d\n", IMPORT_MAX_PARALLEL);
                return CLI_USAGE;
            }
            im->parallel = (size_t)n;
            i++;
        } else if (!strcmp(a, "--encoding") && v) {
            if (csvread_enc_parse(v, &im->enc) != 0) {
                fprintf(stderr, "bangfu import: --encoding is auto, utf-8 or gbk\n");
                return CLI_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--village-id") && v) {
            if (s_parse_int(v, &im->village_default) != 0 || im->village_default <= 0) {
                fprintf(stderr, "bangfu import: --village-id must be a positive integer\n");
                return CLI_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--rejects") && v) {
            im->rejects_path = v;
            i++;
        } else if (!strcmp(a, "--actor") && v) {
            im->actor = v;
            i++;
        } else if (!strcmp(a, "--timeout") && v) {
            char *end;
            im->timeout_ms = strtol(v, &end, 10);
            if (*end || im->timeout_ms <= 0 || im->timeout_ms > 86400000) {
                fprintf(stderr, "bangfu import: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
            i++;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "bangfu import: unknown option %s (try --help)\n", a);
            return CLI_USAGE;
        } else if (!im->path) {
            im->path = a;
        } else {
            fprintf(stderr, "bangfu import: one file at a time (%s and %s)\n", im->path, a);
            return CLI_USAGE;
        }
    }
    if (!im->path) {
        fprintf(stderr, "usage: bangfu import households FILE.csv [options] (try --help)\n");
        return CLI_USAGE;
    }
    return 0;
}

int cli_import(int argc, char **argv)
{
    if (argc >= 2 && cli_org_kind(argv[1])) return cli_import_org(argc, argv);
    import_t im;
    memset(&im, 0, sizeof im);
    im.batch_size = IMPORT_DEFAULT_BATCH;
    im.timeout_ms = IMPORT_DEFAULT_TIMEOUT_MS;
    im.parallel = IMPORT_DEFAULT_PARALLEL;
    int exit_code = CLI_USAGE;
    for (size_t i = 0; i < IMPORT_MAX_PARALLEL; i++) cli_reply_init(&im.slots[i].reply);

    int rc = s_parse_args(&im, argc, argv);
    if (rc != 0) {
        exit_code = rc < 0 ? CLI_OK : rc;
        goto cleanup;
    }
    im.actor = cli_actor(im.actor);

    if (!strcmp(im.path, "-")) {
        im.in = stdin;
    } else if (!(im.in = fopen(im.path, "rb"))) {
        fprintf(stderr, "bangfu import: cannot open %s: %s\n", im.path, strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(fileno(im.in), &st) == 0 && S_ISREG(st.st_mode)) im.file_size = (uint64_t)st.st_size;
    char err[256];
    if (!(im.csv = csvread_new(im.in, im.enc, err, sizeof err))) {
        fprintf(stderr, "bangfu import: %s\n", err);
        goto cleanup;
    }

    csvread_record_t rec;
    rc = csvread_next(im.csv, &rec);
    if (rc <= 0) {
        fprintf(stderr, "bangfu import: %s: %s\n", im.path,
                rc == 0 ? "the file is empty (a header row is required)" : csvread_errmsg(im.csv));
        goto cleanup;
    }
    if (s_header(&im, &rec) != 0) goto cleanup;

    if (im.rejects_path) {
        if (!(im.rejects = fopen(im.rejects_path, "w"))) {
            fprintf(stderr, "bangfu import: cannot write %s: %s\n", im.rejects_path,
                    strerror(errno));
            goto cleanup;
        }
    } else {
        im.rejects = stderr;
    }
    im.tty = isatty(STDERR_FILENO);
    im.rejects_on_tty = im.rejects == stderr && im.tty;
    if (im.rejects != stderr) {
        fprintf(im.rejects, "line,household_ref,field,message\n");
        im.report_started = true;
    }

    if (!(im.fill = s_batch_new())) goto oom;
    for (size_t i = 0; i < im.parallel; i++)
        if (!(im.slots[i].b = s_batch_new())) goto oom;
    if (!im.dry_run) {
        im.endpoint = cli_endpoint("registry");
        if (!(im.rpc = cli_rpc_new("registry", im.endpoint))) {
            fprintf(stderr, "bangfu import: bad registry endpoint %s\n", im.endpoint);
            goto cleanup;
        }
        if (cli_require("bangfu import", "registry", im.endpoint, im.timeout_ms) != 0) {
            exit_code = CLI_UNAVAILABLE;
            goto cleanup;
        }
    }

    struct sigaction sa, old_int;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_sigint;
    sa.sa_flags = SA_RESTART; /* reads go on; the loop checks the flag */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);

    im.t0 = s_now();
    im.last_draw = im.t0;
    while (!im.fatal && !s_interrupted && (rc = csvread_next(im.csv, &rec)) == 1) {
        s_row(&im, &rec);
        s_progress(&im, false);
    }
    if (!im.fatal && !s_interrupted) {
        if (rc < 0) {
            s_bar_clear(&im);
            fprintf(stderr, "bangfu import: %s: %s (after line %ld)\n", im.path,
                    csvread_errmsg(im.csv), im.last_line);
            im.fatal = CLI_ERR_REPLY;
        } else {
            s_household_finish(&im);
            s_batch_flush(&im);
        }
    }
    if (s_interrupted) {
        s_bar_clear(&im);
        fprintf(stderr, "bangfu import: interrupted after line %ld; waiting for the %zu batches "
                        "in flight (Ctrl-C again quits at once)\n", im.last_line, im.inflight);
    }
    sigaction(SIGINT, &old_int, NULL); /* a second Ctrl-C ends the process */
    s_drain(&im);
    double seconds = s_now() - im.t0;
    s_progress(&im, true);
    if (s_interrupted)
        fprintf(stderr, "bangfu import: %" PRIu64 " households were sent, the rest of the file "
                        "was not\n", im.sent);
    fflush(im.rejects);
    s_summary(&im, seconds);
    exit_code = s_interrupted ? 130 : im.fatal ? im.fatal : im.rejected ? CLI_ERR_REPLY : CLI_OK;

cleanup:
    if (im.rejects && im.rejects != stderr && fclose(im.rejects) != 0) {
        fprintf(stderr, "bangfu import: writing %s failed: %s\n", im.rejects_path,
                strerror(errno));
        if (exit_code == CLI_OK) exit_code = CLI_ERR_REPLY;
    }
    cli_rpc_destroy(&im.rpc);
    csvread_destroy(&im.csv);
    if (im.in && im.in != stdin) fclose(im.in);
    s_batch_destroy(&im.fill);
    for (size_t i = 0; i < IMPORT_MAX_PARALLEL; i++) {
        s_batch_destroy(&im.slots[i].b);
        cli_reply_destroy(&im.slots[i].reply);
    }
    free(im.hh.members);
    free(im.hh.pool.buf);
    free(im.refs.slots);
    s_interrupted = 0;
    return exit_code;
oom:
    fprintf(stderr, "bangfu import: out of memory\n");
    exit_code = CLI_ERR_REPLY;
    goto cleanup;
}
