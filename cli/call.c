/* call.c: `bangfu call <service> <method> '<json>'`, and the helpers every
 * command uses to find a service and print a reply. */
#include "cli.h"
#include "bf_json.h"
#include "bf_keys.h"
#include "money.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *service;
    const char *def;
} s_defaults[] = {
    {"registry", "tcp://127.0.0.1:7101"},
    {"funds", "tcp://127.0.0.1:7102"},
    {"tasks", "tcp://127.0.0.1:7103"},
    {"notify", "tcp://127.0.0.1:7104"},
    {"gateway", "tcp://127.0.0.1:7105"},
    {NULL, NULL},
};

const char *cli_endpoint(const char *service)
{
    for (int i = 0; s_defaults[i].service; i++) {
        if (strcmp(s_defaults[i].service, service) != 0) continue;
        char var[64];
        snprintf(var, sizeof var, "BANGFU_%s_RPC", service);
        for (char *p = var; *p; p++) *p = (char)toupper((unsigned char)*p);
        const char *v = getenv(var);
        return v && *v ? v : s_defaults[i].def;
    }
    return NULL;
}

const char *cli_actor(const char *opt)
{
    if (opt && *opt) return opt;
    const char *env = getenv("BANGFU_ACTOR");
    if (env && *env) return env;
    /* with CURVE the principal ($BANGFU_PRINCIPAL) is the actor */
    return bf_security_curve() ? NULL : "admin";
}

bool cli_is_help(const char *arg)
{
    return !strcmp(arg, "--help") || !strcmp(arg, "-h") || !strcmp(arg, "help");
}

static int s_print(bool ok, const msgpack_object *result, const msgpack_object *error,
                   const char *code, const char *message, bool pretty)
{
    int flags = pretty ? BF_JSON_PRETTY : BF_JSON_COMPACT;
    if (ok) {
        char *json = result ? bf_json_from_msgpack(result, flags) : NULL;
        printf("%s\n", json ? json : "null");
        free(json);
        return CLI_OK;
    }
    char *json = error ? bf_json_from_msgpack(error, flags) : NULL;
    if (json)
        fprintf(stderr, "%s\n", json);
    else
        fprintf(stderr, "{\"code\": \"%s\", \"message\": \"%s\"}\n", code, message);
    free(json);
    return strcmp(code, "unavailable") == 0 && !error ? CLI_UNAVAILABLE : CLI_ERR_REPLY;
}

int cli_print_reply(const bf_reply_t *reply, bool pretty)
{
    return s_print(reply->ok, reply->result, reply->error, reply->code, reply->message, pretty);
}

int cli_print_rpc_reply(const cli_reply_t *reply, bool pretty)
{
    return s_print(reply->ok, reply->result, reply->error, reply->code, reply->message, pretty);
}

int cli_call(int argc, char **argv)
{
    const char *actor = getenv("BANGFU_ACTOR");
    long timeout = 30000;
    bool yuan = false;
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bangfu call <service> <method> ['<json params>'] [--actor A] "
                   "[--timeout MS]\n"
                   "Calls one method of registry, funds, tasks or notify and prints the\n"
                   "result as JSON. Writes need an actor (--actor or $BANGFU_ACTOR), e.g.\n"
                   "  bangfu call registry village.list '{\"limit\": 5}'\n"
                   "  bangfu call registry region.put '{\"code\":\"120110000000\",\"name\":"
                   "\"东丽区\",\"level\":\"county\"}' --actor admin\n"
                   "  bangfu call registry sys.methods\n"
                   "--yuan: amounts in the params (every member whose key ends in _fen) are\n"
                   "given in yuan, as a number or a string with at most 2 decimals:\n"
                   "  bangfu call funds source.receive '{\"source_id\": 3, \"amount_fen\": "
                   "12.34, ...}' --yuan\n"
                   "sends amount_fen 1234. The result is printed as the service sends it.\n"
                   "Exit status: 0 ok, 1 error reply, 2 usage, 3 no answer (the service is\n"
                   "probed first: see --connect-timeout in `bangfu help`).\n");
            return CLI_OK;
        } else if (!strcmp(argv[i], "--actor") && i + 1 < argc) {
            actor = argv[++i];
        } else if (!strcmp(argv[i], "--yuan")) {
            yuan = true;
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = strtol(argv[++i], NULL, 10);
            if (timeout <= 0) {
                fprintf(stderr, "bangfu call: --timeout must be a positive number of ms\n");
                return CLI_USAGE;
            }
        } else if (npos < 3) {
            pos[npos++] = argv[i];
        } else {
            fprintf(stderr, "bangfu call: too many arguments (try --help)\n");
            return CLI_USAGE;
        }
    }
    if (npos < 2) {
        fprintf(stderr, "usage: bangfu call <service> <method> ['<json params>']\n");
        return CLI_USAGE;
    }
    const char *ep = cli_endpoint(pos[0]);
    if (!ep) {
        fprintf(stderr, "bangfu call: unknown service %s (registry, funds, tasks, notify)\n",
                pos[0]);
        return CLI_USAGE;
    }
    msgpack_sbuffer params;
    msgpack_sbuffer_init(&params);
    if (pos[2]) {
        char err[256];
        char *json = NULL;
        if (yuan && money_json_yuan_to_fen(pos[2], &json, err, sizeof err) != 0) {
            fprintf(stderr, "bangfu call: --yuan: %s\n", err);
            msgpack_sbuffer_destroy(&params);
            return CLI_USAGE;
        }
        const char *text = json ? json : pos[2];
        int jrc = bf_json_to_msgpack(text, strlen(text), &params, err, sizeof err);
        free(json);
        if (jrc != 0) {
            fprintf(stderr, "bangfu call: params are not valid JSON: %s\n", err);
            msgpack_sbuffer_destroy(&params);
            return CLI_USAGE;
        }
    }
    cli_rpc_t *c = cli_rpc_new(pos[0], ep);
    if (!c) {
        fprintf(stderr, "bangfu call: bad endpoint %s or no key (see docs/security.md)\n", ep);
        msgpack_sbuffer_destroy(&params);
        return CLI_USAGE;
    }
    if (cli_require("bangfu call", pos[0], ep, timeout) != 0) {
        cli_rpc_destroy(&c);
        msgpack_sbuffer_destroy(&params);
        return CLI_UNAVAILABLE;
    }
    cli_reply_t reply;
    int rc = cli_rpc_call(c, pos[1], params.data, params.size, actor, timeout, &reply);
    int exit_code;
    if (rc != 0) {
        fprintf(stderr, "bangfu call: %s did not answer at %s: %s\n", pos[0], ep, reply.message);
        exit_code = CLI_UNAVAILABLE;
    } else {
        exit_code = cli_print_rpc_reply(&reply, isatty(STDOUT_FILENO));
    }
    cli_reply_destroy(&reply);
    cli_rpc_destroy(&c);
    msgpack_sbuffer_destroy(&params);
    return exit_code;
}
