/* lists: list results as human tables; see lists.c. */
#ifndef CLI_LISTS_H
#define CLI_LISTS_H

#include "cli.h"

#include <stdbool.h>

typedef enum { CLI_F_STR, CLI_F_INT, CLI_F_BOOL } cli_ftype_t;

typedef struct {
    const char *opt;   /* "--year" */
    const char *param; /* "year" */
    cli_ftype_t type;  /* BOOL: the option alone sends param true */
    const char *doc;
} cli_filter_t;

typedef struct {
    const char *key;    /* item key; one ending in _fen is an amount */
    const char *header; /* column title */
    bool right;         /* right-aligned (numbers) */
} cli_col_t;

typedef struct {
    const char *prog;    /* "bangfu funds sources", for messages */
    const char *usage;   /* "bangfu funds sources" */
    const char *doc;     /* what it lists, one or more lines ending in \n */
    const char *service; /* "funds" */
    const char *method;  /* "source.list" */
    const cli_filter_t *filters; /* ends with {NULL}; may be NULL */
    const cli_col_t *cols;       /* ends with {NULL}; at most 32 */
} cli_list_t;

/* Runs the list command (argv[0] is the subcommand); returns the exit code. */
int cli_list(const cli_list_t *l, int argc, char **argv);

#endif
