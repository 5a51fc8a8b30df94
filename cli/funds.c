/* funds.c: `bangfu funds verify`, the auditor's check of the funds ledger.
 *
 * Asks the funds service to re-walk its hash chains (ledger.verify: the
 * ledger and the evidence chain) and to re-derive every balance from the
 * ledger, prints the result as JSON, and says in one line on stderr which
 * entry or row is the first that does not match. With --export-head it
 * prints instead, only if everything verifies, one JSON line with the heads
 * to publish outside the system (docs/funds.md, "Publishing the head").
 * Exit status: 0 the ledger verifies, 1 it does not (or an error reply), 2
 * usage, 3 the service did not answer.
 */
#include "cli.h"
#include "bf_mp.h"
#include "lists.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cli_filter_t s_source_filters[] = {
    {"--kind", "kind", CLI_F_STR, "central, provincial, ..., donation, loan"},
    {NULL, NULL, CLI_F_STR, NULL},
};
static const cli_col_t s_source_cols[] = {
    {"id", "ID", true},           {"name", "NAME", false},
    {"kind", "KIND", false},      {"provider", "PROVIDER", false},
    {"received_fen", "RECEIVED", true}, {"balance_fen", "BALANCE", true},
    {NULL, NULL, false},
};
static const cli_list_t s_sources = {
    "bangfu funds sources", "bangfu funds sources",
    "Fund sources (funds source.list): name, kind, provider, received, balance.\n", "funds",
    "source.list", s_source_filters, s_source_cols};

static const cli_filter_t s_budget_filters[] = {
    {"--year", "year", CLI_F_INT, "budgets of this year"},
    {"--source-id", "source_id", CLI_F_INT, "budgets this source funded (children too)"},
    {"--parent-id", "parent_id", CLI_F_INT, "the child budgets of this budget"},
    {"--root", "root", CLI_F_BOOL, "only root budgets"},
    {"--recipient", "recipient", CLI_F_STR, "budgets of this recipient (village:42)"},
    {"--region", "region", CLI_F_STR, "budgets of regions under this 12-digit code"},
    {"--status", "status", CLI_F_STR, "open (balance > 0) or spent"},
    {NULL, NULL, CLI_F_STR, NULL},
};
static const cli_col_t s_budget_cols[] = {
    {"id", "ID", true},          {"parent_id", "PARENT", true},
    {"year", "YEAR", true},      {"recipient", "RECIPIENT", false},
    {"name", "NAME", false},     {"carrier", "CARRIER", false},
    {"balance_fen", "BALANCE", true}, {"held_fen", "HELD", true},
    {NULL, NULL, false},
};
static const cli_list_t s_budgets = {
    "bangfu funds budgets", "bangfu funds budgets",
    "Budgets (funds budget.list): recipient, year, name, carrier, balance, held.\n", "funds",
    "budget.list", s_budget_filters, s_budget_cols};

static const cli_filter_t s_project_filters[] = {
    {"--year", "year", CLI_F_INT, "projects of budgets of this year"},
    {"--budget-id", "budget_id", CLI_F_INT, "projects funded by this budget"},
    {"--source-id", "source_id", CLI_F_INT, "projects whose root budget this source funded"},
    {"--kind", "kind", CLI_F_STR, "industry, infrastructure, education, ..."},
    {"--region", "region", CLI_F_STR, "projects located under this 12-digit code"},
    {"--status", "status", CLI_F_STR, "open (balance > 0) or spent"},
    {NULL, NULL, CLI_F_STR, NULL},
};
static const cli_col_t s_project_cols[] = {
    {"id", "ID", true},
    {"budget_id", "BUDGET", true},
    {"year", "YEAR", true},
    {"name", "NAME", false},
    {"kind", "KIND", false},
    {"location", "LOCATION", false},
    {"beneficiaries", "PEOPLE", true},
    {"amount_fen", "AMOUNT", true},
    {"balance_fen", "BALANCE", true},
    {"tranches", "TRANCHES", true},
    {"tranches_disbursed", "PAID", true},
    {NULL, NULL, false},
};
static const cli_list_t s_projects = {
    "bangfu funds projects", "bangfu funds projects",
    "Projects (funds project.list): budget, year, name, kind, location, people,\n"
    "amount, balance, tranches planned and disbursed.\n",
    "funds", "project.list", s_project_filters, s_project_cols};

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bangfu funds sources|budgets|projects [filters] [--yuan] [--json] "
               "[--all]\n"
               "       bangfu funds verify [--export-head] [--timeout MS]\n"
               "sources, budgets, projects: the lists as tables (amounts in fen, or in yuan\n"
               "with --yuan); `bangfu funds sources --help` names the filters.\n"
               "verify:\n"
               "Re-walks the funds ledger's hash chain from its first entry, recomputing\n"
               "every entry's SHA-256, and re-derives every account's balance from the\n"
               "ledger. Prints the result as JSON; if an entry was altered, removed or\n"
               "re-linked, names the first one; checks every account and tranche approval\n"
               "against the evidence chain and names each row and column that differs.\n"
               "Exit 0 if the ledger verifies, 1 if not.\n"
               "--export-head: print only, if it verifies, one JSON line with the head to\n"
               "publish: {head_hash, ledger_id, ledger_hash, time, evidence_id,\n"
               "evidence_hash}.\n"
               "The service is found at $BANGFU_FUNDS_RPC (default tcp://127.0.0.1:7102).\n");
}

/* One line on stderr per kind of problem a verify result reports. */
static void s_explain(const msgpack_object *res)
{
    static const char *const chains[][2] = {{"first_bad", "ledger entry"},
                                            {"evidence_first_bad", "evidence entry"}};
    bool said = false;
    for (size_t c = 0; c < 2; c++) {
        const msgpack_object *bad = bf_mp_get(res, chains[c][0]);
        const msgpack_object *id = bad ? bf_mp_get(bad, "id") : NULL;
        const msgpack_object *msg = bad ? bf_mp_get(bad, "message") : NULL;
        int64_t n = 0;
        if (id && bf_mp_int(id, &n) && msg && msg->type == MSGPACK_OBJECT_STR) {
            fprintf(stderr, "bangfu funds: %s %lld does not verify: %.*s\n", chains[c][1],
                    (long long)n, (int)msg->via.str.size, msg->via.str.ptr);
            said = true;
        }
    }
    const msgpack_object *d = bf_mp_get(res, "differences");
    if (d && d->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < d->via.array.size; i++) {
            const msgpack_object *row = &d->via.array.ptr[i];
            const msgpack_object *t = bf_mp_get(row, "table"), *col = bf_mp_get(row, "column"),
                                 *ex = bf_mp_get(row, "expected"), *fo = bf_mp_get(row, "found");
            const msgpack_object *id = bf_mp_get(row, "id");
            int64_t n = 0;
            if (!t || t->type != MSGPACK_OBJECT_STR || !col || col->type != MSGPACK_OBJECT_STR ||
                !id || !bf_mp_int(id, &n))
                continue;
            fprintf(stderr, "bangfu funds: %.*s %lld: %.*s is %.*s, the evidence chain says %.*s\n",
                    (int)t->via.str.size, t->via.str.ptr, (long long)n, (int)col->via.str.size,
                    col->via.str.ptr,
                    fo && fo->type == MSGPACK_OBJECT_STR ? (int)fo->via.str.size : 4,
                    fo && fo->type == MSGPACK_OBJECT_STR ? fo->via.str.ptr : "null",
                    ex && ex->type == MSGPACK_OBJECT_STR ? (int)ex->via.str.size : 4,
                    ex && ex->type == MSGPACK_OBJECT_STR ? ex->via.str.ptr : "null");
            said = true;
        }
    }
    const msgpack_object *books = bf_mp_get(res, "books_ok");
    if (!said || (books && books->type == MSGPACK_OBJECT_BOOLEAN && !books->via.boolean))
        fprintf(stderr, "bangfu funds: the cached balances or holds do not match the ledger "
                        "(see bad_accounts)\n");
}

/* {"head_hash":..., "ledger_id":..., ...} from a verify result */
static void s_print_head(const msgpack_object *res)
{
    static const char *const keys[][2] = {
        {"head_hash", "published_hash"}, {"ledger_id", "head_id"},
        {"ledger_hash", "head_hash"},    {"time", "head_time"},
        {"evidence_id", "evidence_head_id"}, {"evidence_hash", "evidence_head_hash"}};
    fputc('{', stdout);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const msgpack_object *v = bf_mp_get(res, keys[i][1]);
        int64_t n;
        printf("%s\"%s\": ", i ? ", " : "", keys[i][0]);
        if (v && v->type == MSGPACK_OBJECT_STR)
            printf("\"%.*s\"", (int)v->via.str.size, v->via.str.ptr); /* hex or RFC 3339 */
        else if (v && bf_mp_int(v, &n))
            printf("%lld", (long long)n);
        else
            fputs("null", stdout);
    }
    fputs("}\n", stdout);
}

static int s_verify(long timeout, bool export_head)
{
    const char *ep = cli_endpoint("funds");
    bf_client_t *c = ep ? bf_client_open("funds", ep, (int)timeout) : NULL;
    if (!c) {
        fprintf(stderr, "bangfu funds: bad endpoint %s\n", ep ? ep : "(none)");
        return CLI_USAGE;
    }
    if (cli_require("bangfu funds", "funds", ep, timeout) != 0) {
        bf_client_destroy(&c);
        return CLI_UNAVAILABLE;
    }
    bf_reply_t reply;
    int rc = bf_client_call(c, "ledger.verify", NULL, 0, NULL, &reply);
    int code;
    if (rc != 0 && !reply.error) {
        fprintf(stderr, "bangfu funds: the funds service did not answer at %s: %s\n", ep,
                reply.message);
        code = CLI_UNAVAILABLE;
    } else {
        const msgpack_object *ok = reply.ok ? bf_mp_get(reply.result, "ok") : NULL;
        bool verified = ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
        if (export_head && reply.ok && verified) {
            s_print_head(reply.result);
            code = CLI_OK;
        } else if (export_head && reply.ok) {
            code = CLI_OK; /* the reason is told below; nothing to publish */
        } else {
            code = cli_print_reply(&reply, isatty(STDOUT_FILENO));
        }
        if (code == CLI_OK && !verified) {
            s_explain(reply.result);
            code = CLI_ERR_REPLY;
        }
    }
    bf_reply_destroy(&reply);
    bf_client_destroy(&c);
    return code;
}

int cli_funds(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "sources")) return cli_list(&s_sources, argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "budgets")) return cli_list(&s_budgets, argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "projects")) return cli_list(&s_projects, argc - 1, argv + 1);
    long timeout = 600000; /* a long ledger takes a while to re-walk */
    const char *sub = NULL;
    bool export_head = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "help")) {
            s_usage(stdout);
            return CLI_OK;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = strtol(argv[++i], NULL, 10);
            if (timeout <= 0) {
                fprintf(stderr, "bangfu funds: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
        } else if (!strcmp(argv[i], "--export-head")) {
            export_head = true;
        } else if (!sub) {
            sub = argv[i];
        } else {
            fprintf(stderr, "bangfu funds: unexpected argument %s (try --help)\n", argv[i]);
            return CLI_USAGE;
        }
    }
    if (!sub || strcmp(sub, "verify") != 0) {
        s_usage(stderr);
        return CLI_USAGE;
    }
    return s_verify(timeout, export_head);
}
