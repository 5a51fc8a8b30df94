/* orgimport.c: `bangfu import units|cadres|teams|pairings FILE.csv`: who
 * helps, from a spreadsheet (docs/cli.md, "Importing units, cadres, teams
 * and pairings").
 *
 * One CSV row is one row of the registry's unit.import, cadre.import,
 * team.import or pairing.import; column titles (English or Chinese, any
 * order) become the row's keys, empty cells are left out. Rows are sent in
 * batches (at most 1000, the registry's limit); what the registry rejects
 * ({row, field, code, message}) is reported with the CSV line and the
 * column's title, as a CSV (line,field,code,message) on stderr or in
 * --rejects FILE. The registry is idempotent on natural keys, so running the
 * same file again creates nothing twice: it reports those rows as existing.
 * Cell values are never printed (a pairing's target may be an ID number).
 */
#include "bf_mp.h"
#include "bf_valid.h"
#include "cli.h"
#include "csvread.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORG_MAX_BATCH 1000 /* registry's REGISTRY_MAX_ORG_IMPORT_ROWS */
#define ORG_DEFAULT_BATCH 500
#define ORG_MAX_COLS 8

typedef struct {
    const char *key;
    bool required;
    const char *aliases[6];
} org_col_t;

typedef struct {
    const char *kind;   /* units */
    const char *method; /* unit.import */
    org_col_t cols[ORG_MAX_COLS];
} org_kind_t;

static const org_kind_t s_kinds[] = {
    {"units",
     "unit.import",
     {{"name", true, {"名称", "单位", "单位名称", NULL}},
      {"kind", true, {"类型", "单位类型", NULL}},
      {"region_code", false, {"区划代码", "地区代码", "region", NULL}},
      {NULL, false, {NULL}}}},
    {"cadres",
     "cadre.import",
     {{"name", true, {"姓名", "名字", NULL}},
      {"rank", true, {"职级", "级别", NULL}},
      {"unit", true, {"单位", "所在单位", "派出单位", NULL}},
      {"party_member", true, {"党员", "是否党员", NULL}},
      {"phone", false, {"电话", "手机", "联系电话", NULL}},
      {NULL, false, {NULL}}}},
    {"teams",
     "team.import",
     {{"name", true, {"队名", "工作队", "名称", NULL}},
      {"unit", true, {"单位", "派出单位", NULL}},
      {"leader", true, {"队长", "组长", NULL}},
      {"members", false, {"队员", "成员", NULL}},
      {"villages", false, {"村", "驻村", "帮扶村", NULL}},
      {"starts_on", false, {"开始日期", NULL}},
      {NULL, false, {NULL}}}},
    {"pairings",
     "pairing.import",
     {{"kind", true, {"类型", "结对类型", NULL}},
      {"helper", true, {"帮扶方", "帮扶人", "帮扶单位", NULL}},
      {"helper_unit", false, {"帮扶人单位", "所在单位", NULL}},
      {"target", true, {"帮扶对象", "对象", NULL}},
      {"starts_on", false, {"开始日期", NULL}},
      {"ends_on", false, {"结束日期", NULL}},
      {NULL, false, {NULL}}}},
    {NULL, NULL, {{NULL, false, {NULL}}}},
};

bool cli_org_kind(const char *kind)
{
    for (const org_kind_t *k = s_kinds; k->kind; k++)
        if (!strcmp(k->kind, kind)) return true;
    return false;
}

typedef struct {
    const org_kind_t *k;
    int colmap[CSVREAD_MAX_FIELDS]; /* CSV column -> index in k->cols, or -1 */
    const char *titles[ORG_MAX_COLS]; /* the file's title of each column, or NULL */
    char titlebuf[ORG_MAX_COLS][128];
    FILE *rejects;
    bool dry_run;
    const char *actor;
    long timeout_ms;
    cli_rpc_t *rpc;
    /* the batch being filled */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    long lines[ORG_MAX_BATCH];
    size_t n, batch;
    /* totals */
    uint64_t rows, created, existing, rejected;
    int fatal;
} org_t;

static void s_help(FILE *f)
{
    fprintf(f,
            "usage: bangfu import units|cadres|teams|pairings FILE.csv [--batch N]\n"
            "           [--encoding auto|utf-8|gbk] [--rejects FILE] [--dry-run]\n"
            "           [--actor A] [--timeout MS]\n"
            "\n"
            "One row per unit, cadre, team or pairing; things are named as you know them\n"
            "(a unit by name, a cadre by name within its unit or as UNIT/NAME, a village by\n"
            "name, 12-digit code or REGION/NAME). Running the same file again creates\n"
            "nothing twice: rows already there are counted as existing. Columns (English or\n"
            "Chinese, any order; * required):\n"
            "\n"
            "  units     name* 名称, kind* 类型 (department|enterprise|street|party_office|social),\n"
            "            region_code 区划代码\n"
            "  cadres    name* 姓名, rank* 职级 (county|division|section|general|village),\n"
            "            unit* 单位, party_member* 党员 (是/否, yes/no), phone 电话\n"
            "  teams     name* 队名, unit* 单位, leader* 队长 (a party member), members 队员\n"
            "            (';' or '、' separated), villages 村 (';' separated), starts_on 开始日期\n"
            "  pairings  kind* 类型 (unit_village|team_village|cadre_household|district_county|\n"
            "            helper_household), helper* 帮扶方 (unit, team or cadre name),\n"
            "            helper_unit 帮扶人单位 (a cadre's unit), target* 帮扶对象 (a village; a\n"
            "            county's code; a household's head's ID number or the household's id),\n"
            "            starts_on 开始日期 (default today), ends_on 结束日期\n"
            "\n"
            "Pairings of a cadre stop at the cap of the cadre's rank, row by row. Rejected\n"
            "rows are reported as CSV (line,field,code,message) on stderr or in --rejects.\n"
            "Exit status: 0 all rows in (created or existing), 1 some rejected, 2 usage,\n"
            "3 registry unavailable.\n");
}

static void s_reject(org_t *o, long line, const char *field, const char *code, const char *msg)
{
    o->rejected++;
    fprintf(o->rejects, "%ld,", line);
    const char *vals[] = {field ? field : "", code, msg};
    for (int i = 0; i < 3; i++) {
        fputc('"', o->rejects);
        for (const char *p = vals[i]; *p; p++) {
            if (*p == '"') fputc('"', o->rejects);
            fputc(*p, o->rejects);
        }
        fputc('"', o->rejects);
        fputc(i < 2 ? ',' : '\n', o->rejects);
    }
}

/* The CSV title of a field the registry named ("members[2]" -> the members
 * column's title). */
static const char *s_title(const org_t *o, const char *field, char *buf, size_t n)
{
    if (!field || !*field) return field;
    size_t len = strcspn(field, "[.");
    for (int c = 0; c < ORG_MAX_COLS && o->k->cols[c].key; c++)
        if (strlen(o->k->cols[c].key) == len && !strncmp(o->k->cols[c].key, field, len) &&
            o->titles[c]) {
            snprintf(buf, n, "%s%s", o->titles[c], field + len);
            return buf;
        }
    return field;
}

static const msgpack_object *s_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (bf_mp_str_eq(&map->via.map.ptr[i].key, key)) return &map->via.map.ptr[i].val;
    return NULL;
}

static void s_copy(const msgpack_object *v, char *out, size_t n)
{
    out[0] = '\0';
    if (v && v->type == MSGPACK_OBJECT_STR)
        snprintf(out, n, "%.*s", (int)v->via.str.size, v->via.str.ptr);
}

static int64_t s_int(const msgpack_object *v)
{
    if (!v) return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return (int64_t)v->via.u64;
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return v->via.i64;
    return 0;
}

static void s_flush(org_t *o)
{
    if (!o->n || o->fatal) return;
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    bf_mp_key(&pk, "rows");
    msgpack_pack_array(&pk, o->n);
    msgpack_sbuffer_write(&params, o->sb.data, o->sb.size);
    cli_reply_t reply;
    cli_reply_init(&reply);
    int rc = cli_rpc_call(o->rpc, o->k->method, params.data, params.size, o->actor,
                          o->timeout_ms, &reply);
    msgpack_sbuffer_destroy(&params);
    if (rc != 0 || !reply.ok) {
        fprintf(stderr, "bangfu import: %s for lines %ld-%ld: %s: %s%s%s%s\n", o->k->method,
                o->lines[0], o->lines[o->n - 1], reply.code, reply.message,
                reply.field[0] ? " (field " : "", reply.field, reply.field[0] ? ")" : "");
        o->fatal = rc != 0 || !strcmp(reply.code, "unavailable") ? CLI_UNAVAILABLE : CLI_ERR_REPLY;
        cli_reply_destroy(&reply);
        return;
    }
    o->created += (uint64_t)s_int(s_get(reply.result, "accepted"));
    o->existing += (uint64_t)s_int(s_get(reply.result, "existing"));
    const msgpack_object *rj = s_get(reply.result, "rejected");
    if (rj && rj->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < rj->via.array.size; i++) {
            const msgpack_object *e = &rj->via.array.ptr[i];
            int64_t row = s_int(s_get(e, "row"));
            char field[128], code[32], msg[1024], title[256];
            s_copy(s_get(e, "field"), field, sizeof field);
            s_copy(s_get(e, "code"), code, sizeof code);
            s_copy(s_get(e, "message"), msg, sizeof msg);
            long line = row >= 0 && (size_t)row < o->n ? o->lines[row] : 0;
            s_reject(o, line, s_title(o, field, title, sizeof title), code, msg);
        }
    }
    cli_reply_destroy(&reply);
    o->n = 0;
    msgpack_sbuffer_clear(&o->sb);
}

static int s_header(org_t *o, const csvread_record_t *rec)
{
    for (size_t i = 0; i < CSVREAD_MAX_FIELDS; i++) o->colmap[i] = -1;
    for (size_t i = 0; i < rec->nfields; i++) {
        o->colmap[i] = -1;
        const char *t = rec->fields[i];
        size_t tl = rec->lens[i];
        while (tl && (*t == ' ' || *t == '\t')) t++, tl--;
        while (tl && (t[tl - 1] == ' ' || t[tl - 1] == '\t')) tl--;
        if (!tl) continue;
        for (int c = 0; c < ORG_MAX_COLS && o->k->cols[c].key; c++) {
            const org_col_t *col = &o->k->cols[c];
            bool hit = strlen(col->key) == tl && !strncmp(col->key, t, tl);
            for (int a = 0; !hit && col->aliases[a]; a++)
                hit = strlen(col->aliases[a]) == tl && !strncmp(col->aliases[a], t, tl);
            if (!hit) continue;
            if (o->titles[c]) {
                fprintf(stderr, "bangfu import: column %s appears twice\n", col->key);
                return CLI_USAGE;
            }
            o->colmap[i] = c;
            snprintf(o->titlebuf[c], sizeof o->titlebuf[c], "%.*s", (int)tl, t);
            o->titles[c] = o->titlebuf[c];
        }
        if (o->colmap[i] < 0) {
            fprintf(stderr, "bangfu import: unknown column \"%.*s\" for %s (bangfu import %s "
                            "--help lists them)\n",
                    (int)tl, t, o->k->kind, o->k->kind);
            return CLI_USAGE;
        }
    }
    for (int c = 0; c < ORG_MAX_COLS && o->k->cols[c].key; c++)
        if (o->k->cols[c].required && !o->titles[c]) {
            fprintf(stderr, "bangfu import: the file has no %s column (required for %s)\n",
                    o->k->cols[c].key, o->k->kind);
            return CLI_USAGE;
        }
    return 0;
}

static void s_row(org_t *o, const csvread_record_t *rec)
{
    o->rows++;
    if (rec->error) {
        s_reject(o, rec->line, "", "invalid_argument", rec->error);
        return;
    }
    size_t cells = 0;
    for (size_t i = 0; i < rec->nfields && i < CSVREAD_MAX_FIELDS; i++) {
        if (i >= (size_t)CSVREAD_MAX_FIELDS || o->colmap[i] < 0) {
            if (rec->lens[i]) {
                s_reject(o, rec->line, "", "invalid_argument", "a cell outside the named columns");
                return;
            }
            continue;
        }
        if (!bf_valid_utf8(rec->fields[i], rec->lens[i])) {
            s_reject(o, rec->line, o->k->cols[o->colmap[i]].key, "invalid_argument",
                     "not valid text in the file's encoding");
            return;
        }
        if (rec->lens[i]) cells++;
    }
    if (!cells) return; /* an empty row */
    msgpack_pack_map(&o->pk, cells);
    for (size_t i = 0; i < rec->nfields; i++) {
        if (o->colmap[i] < 0 || !rec->lens[i]) continue;
        bf_mp_key(&o->pk, o->k->cols[o->colmap[i]].key);
        msgpack_pack_str(&o->pk, rec->lens[i]);
        msgpack_pack_str_body(&o->pk, rec->fields[i], rec->lens[i]);
    }
    o->lines[o->n++] = rec->line;
    if (o->n == o->batch) {
        if (o->dry_run) {
            o->n = 0;
            msgpack_sbuffer_clear(&o->sb);
        } else {
            s_flush(o);
        }
    }
}

int cli_import_org(int argc, char **argv)
{
    org_t o;
    memset(&o, 0, sizeof o);
    for (const org_kind_t *k = s_kinds; k->kind; k++)
        if (!strcmp(k->kind, argv[1])) o.k = k;
    o.batch = ORG_DEFAULT_BATCH;
    o.timeout_ms = 120000;
    const char *path = NULL, *rejects_path = NULL;
    csvread_enc_t enc = CSVREAD_AUTO;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            s_help(stdout);
            return CLI_OK;
        } else if (!strcmp(a, "--dry-run")) {
            o.dry_run = true;
        } else if (!strcmp(a, "--batch") && v) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > ORG_MAX_BATCH) {
                fprintf(stderr, "bangfu import: --batch must be 1..%d\n", ORG_MAX_BATCH);
                return CLI_USAGE;
            }
            o.batch = (size_t)n;
            i++;
        } else if (!strcmp(a, "--timeout") && v) {
            char *end;
            o.timeout_ms = strtol(v, &end, 10);
            if (*end || o.timeout_ms < 1) {
                fprintf(stderr, "bangfu import: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--encoding") && v) {
            if (csvread_enc_parse(v, &enc) != 0) {
                fprintf(stderr, "bangfu import: --encoding must be auto, utf-8 or gbk\n");
                return CLI_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--rejects") && v) {
            rejects_path = v;
            i++;
        } else if (!strcmp(a, "--actor") && v) {
            o.actor = v;
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "bangfu import: unknown option %s\n", a);
            s_help(stderr);
            return CLI_USAGE;
        } else if (!path) {
            path = a;
        } else {
            fprintf(stderr, "bangfu import: one file at a time\n");
            return CLI_USAGE;
        }
    }
    if (!path) {
        s_help(stderr);
        return CLI_USAGE;
    }
    o.actor = cli_actor(o.actor);
    int exit_code = CLI_USAGE;
    FILE *in = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    csvread_t *csv = NULL;
    msgpack_sbuffer_init(&o.sb);
    msgpack_packer_init(&o.pk, &o.sb, msgpack_sbuffer_write);
    if (!in) {
        fprintf(stderr, "bangfu import: cannot open %s: %s\n", path, strerror(errno));
        goto done;
    }
    char err[256];
    if (!(csv = csvread_new(in, enc, err, sizeof err))) {
        fprintf(stderr, "bangfu import: %s\n", err);
        goto done;
    }
    csvread_record_t rec;
    int rc = csvread_next(csv, &rec);
    if (rc <= 0) {
        fprintf(stderr, "bangfu import: %s: %s\n", path,
                rc == 0 ? "the file is empty (a header row is required)" : csvread_errmsg(csv));
        goto done;
    }
    if (s_header(&o, &rec) != 0) goto done;
    o.rejects = rejects_path ? fopen(rejects_path, "w") : stderr;
    if (!o.rejects) {
        fprintf(stderr, "bangfu import: cannot write %s: %s\n", rejects_path, strerror(errno));
        goto done;
    }
    fprintf(o.rejects, "line,field,code,message\n");
    if (!o.dry_run) {
        const char *ep = cli_endpoint("registry");
        if (!(o.rpc = cli_rpc_new("registry", ep))) {
            fprintf(stderr, "bangfu import: bad registry endpoint %s\n", ep);
            goto done;
        }
    }
    while (!o.fatal && (rc = csvread_next(csv, &rec)) == 1) s_row(&o, &rec);
    if (!o.fatal && rc < 0) {
        fprintf(stderr, "bangfu import: %s: %s\n", path, csvread_errmsg(csv));
        o.fatal = CLI_ERR_REPLY;
    }
    if (!o.dry_run) s_flush(&o);
    fprintf(stderr,
            "bangfu import %s: %" PRIu64 " rows: %" PRIu64 " created, %" PRIu64
            " existing, %" PRIu64 " rejected%s\n",
            o.k->kind, o.rows, o.created, o.existing, o.rejected,
            o.dry_run ? " (dry run: nothing sent)" : o.fatal ? " (stopped early)" : "");
    exit_code = o.fatal ? o.fatal : o.rejected ? CLI_ERR_REPLY : CLI_OK;
done:
    if (o.rejects && o.rejects != stderr && fclose(o.rejects) != 0 && exit_code == CLI_OK)
        exit_code = CLI_ERR_REPLY;
    cli_rpc_destroy(&o.rpc);
    csvread_destroy(&csv);
    if (in && in != stdin) fclose(in);
    msgpack_sbuffer_destroy(&o.sb);
    return exit_code;
}
