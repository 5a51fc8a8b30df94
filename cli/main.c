/* bangfu: the operators' and admins' command line.
 *
 *   bangfu call <service> <method> ['<json params>'] [--actor A] [--timeout MS]
 *   bangfu help
 *
 * Service endpoints come from BANGFU_<SERVICE>_RPC (var/endpoints.env holds
 * them while `make up` runs), falling back to the built-in defaults. JSON in,
 * JSON out (pretty on a terminal); the exit status is 0 for ok, 1 for an error
 * reply, 2 for bad usage, 3 when the service did not answer.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command_t s_commands[] = {
    {"call", cli_call, "call <service> <method> ['<json>'] [--actor A] [--timeout MS]",
     "call one RPC method; JSON params in, JSON result out"},
    {NULL, NULL, NULL, NULL},
};

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bangfu <command> [args]\n\ncommands:\n");
    for (const cli_command_t *c = s_commands; c->name; c++)
        fprintf(f, "  %-60s %s\n", c->usage, c->doc);
    fprintf(f, "\n`bangfu <command> --help` tells more. Endpoints come from BANGFU_<SERVICE>_RPC\n"
               "(source var/endpoints.env while `make up` runs).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "-h")) {
        s_usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const cli_command_t *c = s_commands; c->name; c++)
        if (!strcmp(c->name, argv[1])) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "bangfu: unknown command %s\n\n", argv[1]);
    s_usage(stderr);
    return 2;
}
