/* cli.h: the bangfu command line's commands and shared helpers. */
#ifndef CLI_H
#define CLI_H

#include "bf_client.h"
#include "probe.h"
#include "rpc.h"

#include <stdbool.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the command name */
    const char *usage;
    const char *doc;
} cli_command_t;

/* Exit codes. */
#define CLI_OK 0
#define CLI_ERR_REPLY 1
#define CLI_USAGE 2
#define CLI_UNAVAILABLE 3

/* The RPC endpoint of a service: $BANGFU_<SERVICE>_RPC or its default.
 * Returns NULL for an unknown service name. */
const char *cli_endpoint(const char *service);

/* Prints a reply (result or error) as JSON on stdout / stderr. Returns the
 * exit code it stands for. */
int cli_print_reply(const bf_reply_t *reply, bool pretty);
/* The same for a reply of the CLI's own client (rpc.h). */
int cli_print_rpc_reply(const cli_reply_t *reply, bool pretty);

/* The acting user for writes: opt if given, else $BANGFU_ACTOR, else "admin". */
const char *cli_actor(const char *opt);

/* True for "--help", "-h" and "help". */
bool cli_is_help(const char *arg);

/* The commands (argv[0] is the command name). */
int cli_call(int argc, char **argv);
int cli_health(int argc, char **argv);   /* health.c */
int cli_import(int argc, char **argv);   /* import.c */
/* orgimport.c: `bangfu import units|cadres|teams|pairings FILE.csv` */
bool cli_org_kind(const char *kind);
int cli_import_org(int argc, char **argv);
int cli_events(int argc, char **argv);   /* events.c */
int cli_coverage(int argc, char **argv); /* coverage.c */
int cli_funds(int argc, char **argv);    /* funds.c */
int cli_queues(int argc, char **argv);   /* queues.c */
int cli_keygen(int argc, char **argv);   /* keygen.c */
#endif
