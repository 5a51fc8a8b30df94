/* bangfu: the operators' and admins' command line.
 *
 *   bangfu call <service> <method> ['<json params>'] [--actor A] [--timeout MS]
 *   bangfu import households FILE.csv [--batch N] [--encoding auto|utf-8|gbk] ...
 *   bangfu import units|cadres|teams|pairings FILE.csv [--rejects FILE] ...
 *   bangfu events tail [type-prefix] [--from STREAM_ID] [--json]
 *   bangfu coverage [--region CODE] [--json]
 *   bangfu help
 *
 * Every command but keygen authenticates as $BANGFU_PRINCIPAL (default
 * admin) with its key pair in $BANGFU_KEYS_DIR (docs/security.md), unless
 * BANGFU_SECURITY_MODE=plaintext.
 * Service endpoints come from BANGFU_<SERVICE>_RPC (var/endpoints.env holds
 * them while `make up` runs), falling back to the built-in defaults. JSON in,
 * JSON out (pretty on a terminal); the exit status is 0 for ok, 1 for an error
 * reply, 2 for bad usage, 3 when the service did not answer.
 */
#include "cli.h"
#include "bf_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command_t s_commands[] = {
    {"call", cli_call, "call <service> <method> ['<json>'] [--yuan] [--actor A]",
     "call one RPC method; JSON params in, JSON result out"},
    {"import", cli_import, "import households|units|cadres|teams|pairings FILE.csv [...]",
     "households, or who helps, from a CSV file (UTF-8 or GBK)"},
    {"events", cli_events, "events tail [TYPE_PREFIX] [--from STREAM_ID] [--json]",
     "events live; --from replays the stream first"},
    {"coverage", cli_coverage, "coverage [--region CODE] [--json]",
     "gaps in coverage (registry coverage.report)"},
    {"health", cli_health, "health [service ...] [--strict] [--timeout MS]",
     "asks every service (and the bus) at once: up/down, latency; exit 0 when all answer"},
    {"funds", cli_funds, "funds sources|budgets|projects [filters] [--yuan] [--json]",
     "fund sources, budgets, projects as tables (amounts in yuan with --yuan)"},
    {"funds", cli_funds, "funds verify [--timeout MS]",
     "re-walk the funds ledger's hash chain; exit 1 naming the first bad entry"},
    {"queues", cli_queues, "queues [--watch [SEC]] [--json] | dead list|show|retry|drop | pause|resume",
     "notify's queues: depth, pending, age, rates, retries, dead letters"},
    {"keygen", cli_keygen, "keygen NAME [--roles r1,r2] [--region CODE] [--act-for] | --deployment DIR",
     "CURVE key pairs and principals.conf (docs/security.md)"},
    {NULL, NULL, NULL, NULL},
};

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bangfu <command> [args]\n\ncommands:\n");
    for (const cli_command_t *c = s_commands; c->name; c++)
        fprintf(f, "  %-60s %s\n", c->usage, c->doc);
    fprintf(f, "\nglobal options (anywhere on the line):\n"
               "  --connect-timeout MS   give up after MS (default %d, or\n"
               "                         $BANGFU_CONNECT_TIMEOUT_MS) when no service answers\n"
               "\n`bangfu <command> --help` tells more. Endpoints come from BANGFU_<SERVICE>_RPC\n"
               "(set -a; source var/endpoints.env; set +a while `make up` runs).\n"
               "Exit status: 0 ok, 1 error reply, 2 usage, 3 no service answered.\n",
            CLI_CONNECT_TIMEOUT_DEFAULT_MS);
}

/* Takes the global option --connect-timeout MS (anywhere on the line) out
 * of argv. Returns the new argc, or -1 after a message for a bad value. */
static int s_global_options(int argc, char **argv)
{
    int out = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        if (!strcmp(a, "--connect-timeout")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "bangfu: --connect-timeout needs a number of ms\n");
                return -1;
            }
            v = argv[++i];
        } else if (!strncmp(a, "--connect-timeout=", 18)) {
            v = a + 18;
        } else {
            argv[out++] = argv[i];
            continue;
        }
        long ms = cli_parse_connect_timeout(v);
        if (ms < 0) {
            fprintf(stderr, "bangfu: --connect-timeout must be 1..600000 ms, not %s\n", v);
            return -1;
        }
        cli_set_connect_timeout(ms);
    }
    argv[out] = NULL;
    return out;
}

int main(int argc, char **argv)
{
    if ((argc = s_global_options(argc, argv)) < 0) return CLI_USAGE;
    if (getenv("BANGFU_CONNECT_TIMEOUT_MS") && *getenv("BANGFU_CONNECT_TIMEOUT_MS") &&
        cli_parse_connect_timeout(getenv("BANGFU_CONNECT_TIMEOUT_MS")) < 0) {
        fprintf(stderr, "bangfu: BANGFU_CONNECT_TIMEOUT_MS must be 1..600000 ms\n");
        return CLI_USAGE;
    }
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        s_usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const cli_command_t *c = s_commands; c->name; c++) {
        if (strcmp(c->name, argv[1]) != 0) continue;
        /* who we are: $BANGFU_PRINCIPAL's key pair in $BANGFU_KEYS_DIR (keygen
         * makes keys and needs none; --help needs none either) */
        bool help = false;
        for (int i = 2; i < argc; i++) help = help || !strcmp(argv[i], "--help") ||
                                               !strcmp(argv[i], "-h") ||
                                               (i == 2 && !strcmp(argv[i], "help"));
        if (c->fn != cli_keygen && !help) {
            char err[512];
            if (bf_security_init_env("admin", err, sizeof err) != 0) {
                fprintf(stderr, "bangfu: security: %s (see docs/security.md)\n", err);
                return CLI_USAGE;
            }
        }
        return c->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "bangfu: unknown command %s\n\n", argv[1]);
    s_usage(stderr);
    return 2;
}
