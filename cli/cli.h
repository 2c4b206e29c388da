/* cli.h — the `parley` command-line tool's shared pieces (docs/cli.md).
 *
 * cli/main.c holds the command table (every command's synopsis and help),
 * the dispatcher and the exit codes; each cli/cmd_*.c implements a group
 * of commands on core's functions only (no SQL here: catalog.h,
 * housekeep.h, store.h, usage.h, stats.h, kb.h, ...).
 *
 * Conventions of every command: results on stdout, errors on stderr as
 * "parley: <command>: <what>", exit status CLI_OK / CLI_FAIL / CLI_USAGE
 * (CLI_CONFIG for a bad setting), `--help` anywhere after the command
 * words prints its help on stdout and exits 0 without touching the
 * database, `--json` (list, show, usage, stats, maintain) prints one JSON
 * document on stdout instead of the table.
 * Threads: single-threaded, except `ask` (cmd_ask.c), which runs the
 * generation in a second thread with its own database handle.
 */
#ifndef PARLEY_CLI_H
#define PARLEY_CLI_H
#include <jansson.h>
#include "bell.h"
#include "config.h"
#include "db.h"

#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2
#define CLI_CONFIG 78     /* sysexits' EX_CONFIG: tools/run.sh tells it apart */

/* What a command needs before it runs (main.c opens it). */
enum cli_needs {
    CLI_NEEDS_NOTHING = 0,
    CLI_NEEDS_CONFIG = 1,         /* c->cfg loaded */
    CLI_NEEDS_DB = 2 | 1,         /* and c->db open (migrated) */
    CLI_NEEDS_BELL = 4 | 2 | 1    /* and c->bell (the doorbell of PARLEY_DB) */
};

/* The state main.c hands each command. Owned by main.c (borrowed by the
 * command for the call). */
struct cli {
    struct parley_config cfg;
    parley_db *db;                /* NULL unless CLI_NEEDS_DB */
    parley_bell *bell;            /* NULL unless CLI_NEEDS_BELL */
    const struct cli_cmd *cmd;    /* the command running */
};

/* One command of the table: "brands import" is name "brands", sub "import".
 * run gets the arguments after the command words (argc may be 0) and
 * returns the exit status. */
struct cli_cmd {
    const char *name;
    const char *sub;              /* NULL: a command without sub-commands */
    const char *args;             /* the synopsis after the command words */
    const char *summary;          /* one line for `parley --help` */
    const char *help;             /* the full text of `parley CMD [SUB] --help` */
    enum cli_needs needs;
    int (*run)(struct cli *c, int argc, char **argv);
};

/* Prints "parley: <command words>: <message>" on stderr; returns CLI_USAGE
 * after also printing the command's synopsis (cli_usage), or CLI_FAIL
 * (cli_fail). */
int cli_usage(const struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_fail(const struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option parsing for the commands: walks argv; a word that starts with
 * "--" is an option. cli_flag: *i names "--NAME" (then 1). cli_value:
 * *i names "--NAME VALUE" or "--NAME=VALUE": *value set (borrowed from
 * argv), *i advanced past it; 1, 0 when not this option, -1 when the value
 * is missing. */
int cli_flag(char **argv, int i, const char *name);
int cli_value(int argc, char **argv, int *i, const char *name, const char **value);

/* Prints v as JSON on stdout (indented, a newline after) and drops the
 * reference. CLI_OK, or CLI_FAIL when v is NULL or cannot be printed. */
int cli_print_json(json_t *v);
/* "2026-12-07T03:37:15Z" for unix milliseconds ms into buf[24] ("-" for
 * a negative ms). Returns buf. */
const char *cli_time(int64_t ms, char buf[24]);
/* Parses a whole number from lo to hi. 0 / -1. */
int cli_int(const char *s, long long lo, long long hi, long long *out);

/* The commands (cmd_*.c), in the order of the table. */
int cmd_migrate(struct cli *c, int argc, char **argv);
int cmd_ask(struct cli *c, int argc, char **argv);
int cmd_maintain(struct cli *c, int argc, char **argv);
int cmd_token(struct cli *c, int argc, char **argv);
int cmd_brands_import(struct cli *c, int argc, char **argv);
int cmd_brands_list(struct cli *c, int argc, char **argv);
int cmd_brands_disable(struct cli *c, int argc, char **argv);
int cmd_brands_enable(struct cli *c, int argc, char **argv);
int cmd_products_import(struct cli *c, int argc, char **argv);
int cmd_kb_import(struct cli *c, int argc, char **argv);
int cmd_kb_list(struct cli *c, int argc, char **argv);
int cmd_kb_remove(struct cli *c, int argc, char **argv);
int cmd_tickets_list(struct cli *c, int argc, char **argv);
int cmd_tickets_show(struct cli *c, int argc, char **argv);
int cmd_tickets_forget(struct cli *c, int argc, char **argv);
int cmd_sessions_list(struct cli *c, int argc, char **argv);
int cmd_sessions_purge(struct cli *c, int argc, char **argv);
int cmd_usage(struct cli *c, int argc, char **argv);
int cmd_budget_set(struct cli *c, int argc, char **argv);
int cmd_keys_create(struct cli *c, int argc, char **argv);    /* cmd_keys.c */
int cmd_keys_list(struct cli *c, int argc, char **argv);
int cmd_keys_revoke(struct cli *c, int argc, char **argv);
int cmd_stats(struct cli *c, int argc, char **argv);
int cmd_backup(struct cli *c, int argc, char **argv);
int cmd_db_copy(struct cli *c, int argc, char **argv);
#endif
