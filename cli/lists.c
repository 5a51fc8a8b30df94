/* lists.c: list results as human tables (table.c), shared by the list
 * commands (`bangfu funds sources|budgets|projects`).
 *
 * A list command names its RPC method, its filter options (each mapped to a
 * param) and its columns (each a key of the items); cli_list() parses the
 * options, pages through the method (`cursor`/`limit`, docs/protocol.md),
 * and prints the items as an aligned table (CJK double width counted), or,
 * with --json, the service's raw result. Amount columns (keys ending in
 * _fen) are shown in fen, or with --yuan in yuan with two decimals. Columns
 * read by key with types checked: a missing value shows as "-".
 */
#include "lists.h"

#include "bf_json.h"
#include "bf_mp.h"
#include "money.h"
#include "table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void s_cell(const msgpack_object *item, const cli_col_t *col, bool yuan, char *out,
                   size_t n)
{
    const msgpack_object *v = bf_mp_get(item, col->key);
    int64_t i;
    if (!v || v->type == MSGPACK_OBJECT_NIL) {
        snprintf(out, n, "-");
    } else if (v->type == MSGPACK_OBJECT_STR) {
        snprintf(out, n, "%.*s", (int)v->via.str.size, v->via.str.ptr);
    } else if (v->type == MSGPACK_OBJECT_BOOLEAN) {
        snprintf(out, n, "%s", v->via.boolean ? "yes" : "no");
    } else if (bf_mp_int(v, &i)) {
        if (yuan && money_is_fen_key(col->key, strlen(col->key)))
            money_format_yuan(i, out, n);
        else
            snprintf(out, n, "%lld", (long long)i);
    } else {
        char *json = bf_json_from_msgpack(v, BF_JSON_COMPACT);
        snprintf(out, n, "%s", json ? json : "?");
        free(json);
    }
}

static void s_usage(const cli_list_t *l, FILE *f)
{
    fprintf(f, "usage: %s", l->usage);
    for (const cli_filter_t *o = l->filters; o && o->opt; o++)
        fprintf(f, " [%s%s]", o->opt, o->type == CLI_F_BOOL ? "" : " V");
    fprintf(f, " [--limit N] [--cursor C] [--all] [--yuan] [--json] [--timeout MS]\n%s", l->doc);
    for (const cli_filter_t *o = l->filters; o && o->opt; o++)
        fprintf(f, "  %-16s %s\n", o->opt, o->doc);
    fprintf(f, "  --limit N        items per page (1..1000, default 100)\n"
               "  --cursor C       the page after C (the next_cursor a page ended with)\n"
               "  --all            every page, not only the first\n"
               "  --yuan           amounts in yuan (12.34) instead of fen (1234)\n"
               "  --json           the service's result as it is (one page)\n"
               "Exit status: 0 ok, 1 error reply, 2 usage, 3 no answer.\n");
}

static int s_int_arg(const char *s, int64_t *v)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || !*s || *end) return -1;
    *v = x;
    return 0;
}

int cli_list(const cli_list_t *l, int argc, char **argv)
{
    const char *vals[32] = {NULL};
    const char *cursor = NULL;
    int64_t limit = 100;
    long timeout = 30000;
    bool json = false, yuan = false, all = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const cli_filter_t *f = NULL;
        int k = 0;
        for (const cli_filter_t *o = l->filters; o && o->opt; o++, k++)
            if (!strcmp(o->opt, a)) {
                f = o;
                break;
            }
        if (cli_is_help(a)) {
            s_usage(l, stdout);
            return CLI_OK;
        } else if (f && f->type == CLI_F_BOOL) {
            vals[k] = "true";
        } else if (f && v) {
            int64_t x;
            if (f->type == CLI_F_INT && s_int_arg(v, &x) != 0) {
                fprintf(stderr, "%s: %s must be an integer, not %s\n", l->prog, a, v);
                return CLI_USAGE;
            }
            vals[k] = v;
            i++;
        } else if (!strcmp(a, "--limit") && v) {
            if (s_int_arg(v, &limit) != 0 || limit < 1 || limit > 1000) {
                fprintf(stderr, "%s: --limit must be 1..1000\n", l->prog);
                return CLI_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--cursor") && v) {
            cursor = argv[++i];
        } else if (!strcmp(a, "--timeout") && v) {
            int64_t x;
            if (s_int_arg(v, &x) != 0 || x <= 0 || x > 86400000) {
                fprintf(stderr, "%s: --timeout must be a positive number of ms\n", l->prog);
                return CLI_USAGE;
            }
            timeout = (long)x;
            i++;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--yuan")) {
            yuan = true;
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else {
            fprintf(stderr, "%s: unexpected %s (try --help)\n", l->prog, a);
            return CLI_USAGE;
        }
    }
    if (json && all) {
        fprintf(stderr, "%s: --json prints one page as the service sends it; use --cursor, "
                        "not --all\n", l->prog);
        return CLI_USAGE;
    }
    const char *ep = cli_endpoint(l->service);
    cli_rpc_t *c = ep ? cli_rpc_new(l->service, ep) : NULL;
    if (!c) {
        fprintf(stderr, "%s: bad %s endpoint %s or no key\n", l->prog, l->service, ep ? ep : "");
        return CLI_USAGE;
    }
    if (cli_require(l->prog, l->service, ep, timeout) != 0) {
        cli_rpc_destroy(&c);
        return CLI_UNAVAILABLE;
    }
    int ncols = 0;
    const char *headers[32];
    char hbuf[32][64];
    while (l->cols[ncols].key && ncols < 32) {
        const cli_col_t *col = &l->cols[ncols];
        if (money_is_fen_key(col->key, strlen(col->key)))
            snprintf(hbuf[ncols], sizeof hbuf[ncols], "%s %s", col->header, yuan ? "元" : "分");
        else
            snprintf(hbuf[ncols], sizeof hbuf[ncols], "%s", col->header);
        headers[ncols] = hbuf[ncols];
        ncols++;
    }
    table_t *t = json ? NULL : table_new(ncols, headers);
    if (!json && !t) {
        cli_rpc_destroy(&c);
        fprintf(stderr, "%s: out of memory\n", l->prog);
        return CLI_ERR_REPLY;
    }
    for (int k = 0; k < ncols; k++)
        if (l->cols[k].right) table_align_right(t, k);

    int code = CLI_OK;
    char next[64] = "";
    if (cursor) snprintf(next, sizeof next, "%s", cursor);
    for (int page = 0;; page++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        int np = 1 + (next[0] ? 1 : 0);
        for (int k = 0; l->filters && l->filters[k].opt; k++) np += vals[k] != NULL;
        msgpack_pack_map(&pk, (size_t)np);
        bf_mp_kv_int(&pk, "limit", limit);
        if (next[0]) bf_mp_kv_str(&pk, "cursor", next);
        for (int k = 0; l->filters && l->filters[k].opt; k++) {
            if (!vals[k]) continue;
            const cli_filter_t *f = &l->filters[k];
            int64_t x = 0;
            if (f->type == CLI_F_INT && s_int_arg(vals[k], &x) == 0)
                bf_mp_kv_int(&pk, f->param, x);
            else if (f->type == CLI_F_BOOL)
                bf_mp_kv_bool(&pk, f->param, true);
            else
                bf_mp_kv_str(&pk, f->param, vals[k]);
        }
        cli_reply_t reply;
        int rc = cli_rpc_call(c, l->method, sb.data, sb.size, NULL, timeout, &reply);
        msgpack_sbuffer_destroy(&sb);
        if (rc != 0) {
            fprintf(stderr, "%s: %s did not answer at %s: %s\n", l->prog, l->service, ep,
                    reply.message);
            code = CLI_UNAVAILABLE;
        } else if (!reply.ok || json) {
            code = cli_print_rpc_reply(&reply, json && isatty(STDOUT_FILENO));
        }
        const msgpack_object *items = reply.ok ? bf_mp_get(reply.result, "items") : NULL;
        const msgpack_object *nc = reply.ok ? bf_mp_get(reply.result, "next_cursor") : NULL;
        next[0] = '\0';
        if (nc && nc->type == MSGPACK_OBJECT_STR)
            snprintf(next, sizeof next, "%.*s", (int)nc->via.str.size, nc->via.str.ptr);
        if (rc == 0 && reply.ok && !json) {
            for (uint32_t r = 0; items && items->type == MSGPACK_OBJECT_ARRAY &&
                                 r < items->via.array.size;
                 r++) {
                char cells[32][512];
                const char *row[32];
                for (int k = 0; k < ncols; k++) {
                    s_cell(&items->via.array.ptr[r], &l->cols[k], yuan, cells[k], sizeof cells[k]);
                    row[k] = cells[k];
                }
                if (table_add(t, row) != 0) {
                    code = CLI_ERR_REPLY;
                    break;
                }
            }
        }
        cli_reply_destroy(&reply);
        if (code != CLI_OK || json || !all || !next[0]) break;
    }
    if (t && code == CLI_OK) {
        table_print(t, stdout);
        if (next[0])
            fprintf(stderr, "%s: %zu shown; more with --cursor %s (or --all)\n", l->prog,
                    table_rows(t), next);
    }
    table_destroy(&t);
    cli_rpc_destroy(&c);
    return code;
}
