/* coverage.c: `bangfu coverage [--region CODE] [--json]`: the full-coverage
 * report (全覆盖) of registry coverage.report, for people.
 *
 * The reply is read by key with every type checked, so a field the registry
 * adds later is ignored and one it drops shows as "?", never a crash:
 *   {region_code, list_limit,
 *    households: {total, uncovered, items: [{id, village_id, village_name, head_name}]},
 *    cadres_over_cap: {count, items: [{id, name, rank, unit_id, households, cap}]},
 *    villages: {total, without_helper, items: [{id, name, region_code, category}]}}
 */
#include "bf_json.h"
#include "bf_mp.h"
#include "cli.h"
#include "table.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_DEFAULT_SHOW 10

static void s_help(FILE *f)
{
    fprintf(f,
            "usage: bangfu coverage [--region CODE] [--show N] [--json] [--timeout MS]\n"
            "\n"
            "Asks the registry (coverage.report) where assistance does not reach:\n"
            "  households without an active responsible cadre (帮扶责任人),\n"
            "  cadres responsible for more households than their rank's cap,\n"
            "  villages without a helper unit or work team,\n"
            "with exact counts and the first items of each list.\n"
            "\n"
            "  --region CODE  only this region (12-digit division code) and below\n"
            "  --show N       items listed per section (default 10; the registry sends at\n"
            "                 most its list_limit)\n"
            "  --json         print the registry's whole result as JSON\n"
            "Exit status: 0 ok, 1 error reply, 2 usage, 3 registry unavailable.\n");
}

static int64_t s_int(const msgpack_object *map, const char *key)
{
    int64_t v;
    return bf_mp_int(bf_mp_get(map, key), &v) ? v : -1;
}

/* Writes a str value (or "?") into out. */
static const char *s_str(const msgpack_object *map, const char *key, char *out, size_t n)
{
    const msgpack_object *o = bf_mp_get(map, key);
    if (o && o->type == MSGPACK_OBJECT_STR)
        snprintf(out, n, "%.*s", (int)o->via.str.size, o->via.str.ptr);
    else
        snprintf(out, n, "?");
    return out;
}

static void s_num(char *out, size_t n, int64_t v)
{
    if (v < 0)
        snprintf(out, n, "?");
    else
        snprintf(out, n, "%" PRId64, v);
}

static const msgpack_object_array *s_items(const msgpack_object *section)
{
    const msgpack_object *it = bf_mp_get(section, "items");
    return it && it->type == MSGPACK_OBJECT_ARRAY ? &it->via.array : NULL;
}

/* "  ... and N more" when the list shown is shorter than the count. */
static void s_more(int64_t count, size_t shown)
{
    if (count > (int64_t)shown) printf("    ... and %" PRId64 " more\n", count - (int64_t)shown);
}

static void s_print(const msgpack_object *res, long show)
{
    char a[256], b[256], c[64], n1[32], n2[32];
    const msgpack_object *region = bf_mp_get(res, "region_code");
    if (region && region->type == MSGPACK_OBJECT_STR)
        printf("Coverage of region %.*s\n\n", (int)region->via.str.size, region->via.str.ptr);
    else
        printf("Coverage of all regions\n\n");

    const msgpack_object *hh = bf_mp_get(res, "households");
    int64_t uncovered = s_int(hh, "uncovered");
    s_num(n1, sizeof n1, uncovered);
    s_num(n2, sizeof n2, s_int(hh, "total"));
    printf("Households without a responsible cadre: %s of %s\n", n1, n2);
    const msgpack_object_array *items = s_items(hh);
    size_t shown = 0;
    for (uint32_t i = 0; items && i < items->size && (long)i < show; i++, shown++) {
        const msgpack_object *h = &items->ptr[i];
        s_num(n1, sizeof n1, s_int(h, "id"));
        s_num(n2, sizeof n2, s_int(h, "village_id"));
        printf("    household %-8s head ", n1);
        table_fput_padded(stdout, s_str(h, "head_name", a, sizeof a), 12);
        printf(" village %s (%s)\n", s_str(h, "village_name", b, sizeof b), n2);
    }
    s_more(uncovered, shown);

    const msgpack_object *cadres = bf_mp_get(res, "cadres_over_cap");
    int64_t over = s_int(cadres, "count");
    s_num(n1, sizeof n1, over);
    printf("\nCadres over their cap: %s\n", n1);
    items = s_items(cadres);
    shown = 0;
    for (uint32_t i = 0; items && i < items->size && (long)i < show; i++, shown++) {
        const msgpack_object *k = &items->ptr[i];
        s_num(n1, sizeof n1, s_int(k, "id"));
        printf("    cadre %-8s ", n1);
        table_fput_padded(stdout, s_str(k, "name", a, sizeof a), 12);
        printf(" rank %-9s %" PRId64 " households, cap %" PRId64 "\n", s_str(k, "rank", c, sizeof c),
               s_int(k, "households"), s_int(k, "cap"));
    }
    s_more(over, shown);

    const msgpack_object *villages = bf_mp_get(res, "villages");
    int64_t unhelped = s_int(villages, "without_helper");
    s_num(n1, sizeof n1, unhelped);
    s_num(n2, sizeof n2, s_int(villages, "total"));
    printf("\nVillages without a helper unit or team: %s of %s\n", n1, n2);
    items = s_items(villages);
    shown = 0;
    for (uint32_t i = 0; items && i < items->size && (long)i < show; i++, shown++) {
        const msgpack_object *v = &items->ptr[i];
        s_num(n1, sizeof n1, s_int(v, "id"));
        printf("    village %-8s ", n1);
        table_fput_padded(stdout, s_str(v, "name", a, sizeof a), 16);
        printf(" %s %s\n", s_str(v, "region_code", b, sizeof b), s_str(v, "category", c, sizeof c));
    }
    s_more(unhelped, shown);
}

int cli_coverage(int argc, char **argv)
{
    const char *region = NULL;
    bool json = false;
    long show = S_DEFAULT_SHOW, timeout = 60000;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            s_help(stdout);
            return CLI_OK;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--region") && i + 1 < argc) {
            region = argv[++i];
        } else if (!strcmp(argv[i], "--show") && i + 1 < argc) {
            char *end;
            show = strtol(argv[++i], &end, 10);
            if (*end || show < 0) {
                fprintf(stderr, "bangfu coverage: --show wants a number >= 0\n");
                return CLI_USAGE;
            }
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            char *end;
            timeout = strtol(argv[++i], &end, 10);
            if (*end || timeout <= 0 || timeout > 86400000) {
                fprintf(stderr, "bangfu coverage: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
        } else {
            fprintf(stderr, "bangfu coverage: unknown argument %s (try --help)\n", argv[i]);
            return CLI_USAGE;
        }
    }
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, region ? 1 : 0);
    if (region) bf_mp_kv_str(&pk, "region_code", region);

    const char *ep = cli_endpoint("registry");
    cli_rpc_t *c = cli_rpc_new("registry", ep);
    if (!c) {
        fprintf(stderr, "bangfu coverage: bad registry endpoint %s\n", ep);
        msgpack_sbuffer_destroy(&params);
        return CLI_USAGE;
    }
    if (cli_require("bangfu coverage", "registry", ep, timeout) != 0) {
        cli_rpc_destroy(&c);
        msgpack_sbuffer_destroy(&params);
        return CLI_UNAVAILABLE;
    }
    cli_reply_t reply;
    int rc = cli_rpc_call(c, "coverage.report", params.data, params.size, NULL, timeout, &reply);
    int exit_code;
    if (rc != 0) {
        fprintf(stderr, "bangfu coverage: the registry did not answer at %s: %s\n", ep,
                reply.message);
        exit_code = CLI_UNAVAILABLE;
    } else if (!reply.ok || json) {
        exit_code = cli_print_rpc_reply(&reply, json && isatty(STDOUT_FILENO));
    } else if (!reply.result || reply.result->type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "bangfu coverage: coverage.report returned no result map\n");
        exit_code = CLI_ERR_REPLY;
    } else {
        s_print(reply.result, show);
        exit_code = CLI_OK;
    }
    cli_reply_destroy(&reply);
    cli_rpc_destroy(&c);
    msgpack_sbuffer_destroy(&params);
    return exit_code;
}
