/* funds.c: `bangfu funds verify`, the auditor's check of the funds ledger.
 *
 * Asks the funds service to re-walk its hash chain (ledger.verify) and to
 * re-derive every balance from the ledger, prints the result as JSON, and
 * says in one line on stderr which entry is the first that does not match.
 * Exit status: 0 the ledger verifies, 1 it does not (or an error reply), 2
 * usage, 3 the service did not answer.
 */
#include "cli.h"
#include "bf_mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void s_usage(FILE *f)
{
    fprintf(f, "usage: bangfu funds verify [--timeout MS]\n"
               "Re-walks the funds ledger's hash chain from its first entry, recomputing\n"
               "every entry's SHA-256, and re-derives every account's balance from the\n"
               "ledger. Prints the result as JSON; if an entry was altered, removed or\n"
               "re-linked, names the first one. Exit 0 if the ledger verifies, 1 if not.\n"
               "The service is found at $BANGFU_FUNDS_RPC (default tcp://127.0.0.1:7102).\n");
}

static int s_verify(long timeout)
{
    const char *ep = cli_endpoint("funds");
    bf_client_t *c = ep ? bf_client_open("funds", ep, (int)timeout) : NULL;
    if (!c) {
        fprintf(stderr, "bangfu funds: bad endpoint %s\n", ep ? ep : "(none)");
        return CLI_USAGE;
    }
    bf_reply_t reply;
    int rc = bf_client_call(c, "ledger.verify", NULL, 0, NULL, &reply);
    int code;
    if (rc != 0 && !reply.error) {
        fprintf(stderr, "bangfu funds: the funds service did not answer at %s: %s\n", ep,
                reply.message);
        code = CLI_UNAVAILABLE;
    } else {
        code = cli_print_reply(&reply, isatty(STDOUT_FILENO));
        const msgpack_object *ok = reply.ok ? bf_mp_get(reply.result, "ok") : NULL;
        if (code == CLI_OK && !(ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean)) {
            const msgpack_object *bad = bf_mp_get(reply.result, "first_bad");
            const msgpack_object *id = bad ? bf_mp_get(bad, "id") : NULL;
            const msgpack_object *msg = bad ? bf_mp_get(bad, "message") : NULL;
            int64_t n = 0;
            if (id && bf_mp_int(id, &n) && msg && msg->type == MSGPACK_OBJECT_STR)
                fprintf(stderr, "bangfu funds: ledger entry %lld does not verify: %.*s\n",
                        (long long)n, (int)msg->via.str.size, msg->via.str.ptr);
            else
                fprintf(stderr, "bangfu funds: the hash chain verifies, but the cached "
                                "balances do not match the ledger (see bad_accounts)\n");
            code = CLI_ERR_REPLY;
        }
    }
    bf_reply_destroy(&reply);
    bf_client_destroy(&c);
    return code;
}

int cli_funds(int argc, char **argv)
{
    long timeout = 600000; /* a long ledger takes a while to re-walk */
    const char *sub = NULL;
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
    return s_verify(timeout);
}
