/* main.c — `parley`, the command-line tool: the command table (synopsis,
 * summary and help of every command), the dispatcher, the shared helpers
 * of cli.h. The commands themselves are in cli/cmd_*.c; docs/cli.md
 * describes them all.
 *
 * Configuration comes from the environment and PARLEY_CONFIG (config.h),
 * as for the servers. `parley --help`, `parley CMD --help` and `parley CMD
 * SUB --help` read no configuration and touch no database.
 * Single-threaded (but see cmd_ask.c).
 */
#include "cli.h"
#include "llm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct cli_cmd commands[] = {
    { "migrate", NULL, "",
      "create the database (PARLEY_DB) or bring its schema up to date",
      "Creates the database named by PARLEY_DB (a SQLite file, or a PostgreSQL\n"
      "connection string) or applies the migrations it lacks, then prints its\n"
      "name and schema version. Every program does the same when it opens the\n"
      "database; run it once after an upgrade to see that it worked.\n",
      CLI_NEEDS_DB, cmd_migrate },
    { "ask", NULL, "[-t TICKET_ID] PROMPT",
      "answer PROMPT through the configured LLM, streaming it to stdout",
      "Answers PROMPT through the configured upstream (docs/configuration.md),\n"
      "streaming the text to stdout as the servers' clients would see it.\n"
      "  -t TICKET_ID   ask it as the body of seed 000 ticket TICKET_ID (stored)\n"
      "A cached answer is printed at once (said on stderr).\n",
      CLI_NEEDS_BELL, cmd_ask },
    { "maintain", NULL, "[--json]",
      "recover dead jobs, compact the event log, prune, optimize (run it from cron)",
      "Upkeep, safe while the servers run; run it from cron (every few minutes\n"
      "to every hour):\n"
      "  - fails running jobs whose lease expired (their viewers get the error);\n"
      "  - compacts the event log (events of jobs finished more than\n"
      "    PARLEY_EVENT_GRACE seconds ago);\n"
      "  - prunes rate-limit hits older than a minute and expired long-poll sessions;\n"
      "  - SQLite: PRAGMA optimize and a TRUNCATE checkpoint of the WAL;\n"
      "    PostgreSQL: ANALYZE.\n"
      "  --json   print the counts as one JSON object\n",
      CLI_NEEDS_BELL, cmd_maintain },
    { "token", NULL, "--sub USER [--ttl DURATION] [--claim KEY=VALUE]...",
      "print a JWT for USER signed with PARLEY_JWT_SECRET",
      "Prints an HS256 token that the servers accept (signed with\n"
      "PARLEY_JWT_SECRET, which must be set).\n"
      "  --sub USER          the user id (the token's \"sub\"); required\n"
      "  --ttl DURATION      lifetime: a number with s, m, h, d or w (1h, 30d;\n"
      "                      no unit: seconds); default 1h; 0: no expiry\n"
      "  --claim KEY=VALUE   one more claim (repeatable): role=admin (the admin\n"
      "                      role), token_budget=50000 (a daily budget); VALUE is\n"
      "                      JSON when it is a number, true, false, null or quoted\n"
      "                      JSON, else a string\n"
      "The older form `parley token USER [SECONDS]` still works.\n",
      CLI_NEEDS_CONFIG, cmd_token },
    { "brands", "import", "FILE",
      "import a brand catalogue (brands and their products) from a JSON file",
      "Imports the brands of FILE, a JSON document\n"
      "  {\"brands\": [{\"id\", \"name\", \"welcome\"?, \"system_prompt\"?, \"active\"?,\n"
      "               \"products\"?: [PRODUCT...]}...]}\n"
      "(share/sample-catalog.json is an example; PRODUCT: see `parley products\n"
      "import --help`). Every record is checked first and every problem is\n"
      "printed with its record and field; any problem refuses the whole file\n"
      "and nothing changes (exit 1). Otherwise, in one transaction, each brand\n"
      "is created or updated (a disabled brand stays disabled) and the products\n"
      "of each brand that lists \"products\" are replaced by the file's.\n",
      CLI_NEEDS_DB, cmd_brands_import },
    { "brands", "list", "[--json]",
      "list the brands: served or not, products",
      "Lists every brand: id, whether it is served (active in the catalogue and\n"
      "not disabled: what GET /brands/active and seed 002 see), its products\n"
      "(available / all) and name.\n"
      "  --json   one JSON array of {id, name, active, disabled, disabled_at,\n"
      "           served, products, available, created_at}\n",
      CLI_NEEDS_DB, cmd_brands_list },
    { "brands", "disable", "ID",
      "stop serving brand ID (GET /brands/active, seed 002) without deleting it",
      "Disables brand ID: it leaves GET /brands/active and seed 002 refuses it\n"
      "(\"Brand 'ID' not found or inactive\"), at once for every process and node.\n"
      "Its catalogue is kept; importing it again does not enable it. Unknown ID:\n"
      "exit 1.\n",
      CLI_NEEDS_DB, cmd_brands_disable },
    { "brands", "enable", "ID",
      "serve brand ID again after brands disable",
      "Enables brand ID again (undoes `parley brands disable ID`). A brand whose\n"
      "catalogue says \"active\": false stays unserved. Unknown ID: exit 1.\n",
      CLI_NEEDS_DB, cmd_brands_enable },
    { "products", "import", "BRAND FILE",
      "replace brand BRAND's products with FILE's (seed 002 product objects)",
      "Replaces every product of brand BRAND with those of FILE, a JSON array (or\n"
      "{\"products\": [...]}) of seed 002 product objects:\n"
      "  {\"id\": text (unique over all brands), \"name\": text,\n"
      "   \"description\"?: text, \"category\"?: text, \"price\": number >= 0,\n"
      "   \"features\"?: [text...], \"specifications\"?: {...},\n"
      "   \"availability\"?: true|false (default true)}\n"
      "Every record is checked first; each problem is printed as\n"
      "  products[INDEX] (ID): FIELD: what is wrong\n"
      "and any problem refuses the whole file: the previous catalogue stays as\n"
      "it was (exit 1). The replacement is one transaction: clients see the old\n"
      "products or the new ones, never a mix. Unknown BRAND: exit 1.\n",
      CLI_NEEDS_DB, cmd_products_import },
    { "kb", "import", "FILE...",
      "import Markdown / text files into the knowledge base",
      "Cuts each Markdown (.md) or text FILE into passages and stores them in\n"
      "the knowledge base (docs/knowledge-base.md); a file of the same name is\n"
      "replaced. Each file is its own transaction; a refused file is reported\n"
      "and the others go on (exit 1 if any was refused).\n",
      CLI_NEEDS_DB, cmd_kb_import },
    { "kb", "list", "[--json]",
      "list the knowledge base's passages",
      "Prints the knowledge base's passages: id, file name, position, bytes,\n"
      "title (a count on stderr).\n"
      "  --json   one JSON array of {id, source, seq, bytes, title}\n",
      CLI_NEEDS_DB, cmd_kb_list },
    { "kb", "remove", "NAME|ID",
      "remove a file's passages, or one passage",
      "Removes every passage of file NAME (as `kb list` shows it), or the\n"
      "passage ID (a number). Nothing matched: exit 1.\n",
      CLI_NEEDS_DB, cmd_kb_remove },
    { "tickets", "list", "[--limit N] [--offset N] [--json]",
      "list seed 000 tickets, the most recently updated first",
      "Lists seed 000 tickets, the most recently updated first: id, updated at,\n"
      "body size, cached answers.\n"
      "  --limit N    at most N (1-10000, default 50)\n"
      "  --offset N   skip the first N\n"
      "  --json       one JSON array of {id, body_bytes, created_at, updated_at, answers}\n",
      CLI_NEEDS_DB, cmd_tickets_list },
    { "tickets", "show", "ID [--json]",
      "show ticket ID: body, cached answers, generations",
      "Shows ticket ID: its body, its cached answers (model, tokens, hits), its\n"
      "generations (jobs of channel ticket:ID, newest first) and how many\n"
      "events its channel holds. Unknown ID: exit 1.\n"
      "  --json   one JSON object {id, body, created_at, updated_at, answers,\n"
      "           jobs, events}\n",
      CLI_NEEDS_DB, cmd_tickets_show },
    { "tickets", "forget", "ID",
      "delete ticket ID's cached answers (as DELETE /api/tickets/ID/ai)",
      "Deletes every cached answer of ticket ID, as DELETE /api/tickets/ID/ai\n"
      "does: the next request for it asks the upstream again. The ticket and its\n"
      "event log stay. Prints how many answers were deleted (0 is not an error).\n",
      CLI_NEEDS_DB, cmd_tickets_forget },
    { "sessions", "list", "[--user USER] [--limit N] [--json]",
      "list seed 001 / 004 conversations, the most recently active first",
      "Lists seed 001 chat sessions and seed 004 conversations (kinds chat and\n"
      "sse), the most recently active first: id, user, kind, last activity,\n"
      "messages, title.\n"
      "  --user USER   only USER's (the JWT sub; \"\" is open mode's user)\n"
      "  --limit N     at most N (1-10000, default 50)\n"
      "  --json        one JSON array of {id, user, kind, title, status,\n"
      "                created_at, updated_at, messages}\n",
      CLI_NEEDS_DB, cmd_sessions_list },
    { "sessions", "purge", "--older-than AGE [--user USER]",
      "delete seed 001 / 004 conversations idle for longer than AGE",
      "Deletes the seed 001 / 004 conversations (kinds chat and sse) whose last\n"
      "activity is older than AGE (a number with s, m, h, d or w: 30d), with\n"
      "their messages, in one statement; prints how many.\n"
      "  --older-than AGE   required\n"
      "  --user USER        only USER's\n",
      CLI_NEEDS_DB, cmd_sessions_purge },
    { "usage", NULL, "[USER] [--json]",
      "USER's tokens today and the last 7 UTC days, budget, what remains",
      "USER's tokens (default: open mode's user \"\") today and the last 7 UTC\n"
      "days, the daily budget and its source, what remains and when it resets\n"
      "(docs/usage.md).\n"
      "  --json   one JSON object {user, today: {...}, budget, source, remaining,\n"
      "           exhausted, resets_at, days: [...]}\n",
      CLI_NEEDS_DB, cmd_usage },
    { "budget", "set", "USER TOKENS|default",
      "set USER's daily token budget override",
      "Sets USER's daily token budget override: TOKENS per UTC day (0:\n"
      "unlimited), or default (PARLEY_TOKEN_BUDGET_PER_DAY again; a\n"
      "token_budget JWT claim still comes first; docs/usage.md).\n",
      CLI_NEEDS_DB, cmd_budget_set },
    { "keys", "create", "--user USER [--name NAME]",
      "create an API key for USER (the OpenAI-compatible endpoint)",
      "Creates an API key for USER for /v1/chat/completions and /v1/models\n"
      "(docs/openai.md) and prints it on stdout, once: only its SHA-256 and its\n"
      "first characters are stored. NAME is a label shown by keys list.\n",
      CLI_NEEDS_DB, cmd_keys_create },
    { "keys", "list", "[--user USER] [--json]",
      "list API keys (id, prefix, user, created, revoked, name)",
      "Lists the API keys of USER (default: everybody's), oldest first: id,\n"
      "the key's first characters, user, when created and revoked, name.\n"
      "  --json   [{id, user, name, prefix, created_at, revoked_at}] (ms; null\n"
      "           while active)\n",
      CLI_NEEDS_DB, cmd_keys_list },
    { "keys", "revoke", "ID",
      "revoke an API key: refused at its next request",
      "Revokes the API key ID (from keys list): every later request with it is\n"
      "answered 401. Exit 1 when no active key has that id.\n",
      CLI_NEEDS_DB, cmd_keys_revoke },
    { "stats", NULL, "[--json]",
      "counts, cache hit rate, generations by outcome, errors, tokens by user today",
      "Prints the overview the admin page shows (docs/admin.md): counts, the\n"
      "answer cache's hit rate, generations by outcome, errors in the last hour\n"
      "and tokens by user today.\n"
      "  --json   the overview object as is\n",
      CLI_NEEDS_DB, cmd_stats },
    { "backup", NULL, "FILE",
      "online backup of a SQLite database into the new FILE",
      "Copies the SQLite database into FILE while the servers keep running\n"
      "(VACUUM INTO: a consistent snapshot, compacted). FILE must not exist.\n"
      "Restore: stop the servers, put FILE in place of PARLEY_DB (remove the old\n"
      "-wal and -shm files), start them.\n"
      "PostgreSQL: not done here; it prints the pg_dump command to use and\n"
      "exits 1.\n",
      CLI_NEEDS_DB, cmd_backup },
    { "db", "copy", "--from SQLITE_FILE --to POSTGRESQL_URI [--replace]",
      "copy a SQLite database into PostgreSQL",
      "Copies every table of the SQLite database SQLITE_FILE that the PostgreSQL\n"
      "database POSTGRESQL_URI also has, in one transaction, then prints the row\n"
      "counts of both (any difference: nothing is copied, exit 1). The target\n"
      "must hold no row in those tables; --replace deletes its rows there first\n"
      "(docs/postgres.md). Needs no configuration.\n",
      CLI_NEEDS_NOTHING, cmd_db_copy },
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

/* ---- helpers of cli.h ---- */

static void say(const struct cli *c, const char *fmt, va_list ap)
{
    fputs("parley: ", stderr);
    if (c && c->cmd)
        fprintf(stderr, "%s%s%s: ", c->cmd->name, c->cmd->sub ? " " : "", c->cmd->sub ? c->cmd->sub : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void synopsis(FILE *f, const struct cli_cmd *k, const char *lead)
{
    fprintf(f, "%sparley %s%s%s%s%s\n", lead, k->name, k->sub ? " " : "", k->sub ? k->sub : "",
            *k->args ? " " : "", k->args);
}

int cli_usage(const struct cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(c, fmt, ap);
    va_end(ap);
    if (c && c->cmd) {
        synopsis(stderr, c->cmd, "usage: ");
        fprintf(stderr, "(parley %s%s%s --help tells more)\n", c->cmd->name, c->cmd->sub ? " " : "",
                c->cmd->sub ? c->cmd->sub : "");
    }
    return CLI_USAGE;
}

int cli_fail(const struct cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(c, fmt, ap);
    va_end(ap);
    return CLI_FAIL;
}

int cli_flag(char **argv, int i, const char *name)
{
    return !strcmp(argv[i], name);
}

int cli_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (!strncmp(a, name, n) && a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (strcmp(a, name) != 0)
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

int cli_print_json(json_t *v)
{
    if (!v)
        return CLI_FAIL;
    int rc = json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) == 0 ? CLI_OK : CLI_FAIL;
    fputc('\n', stdout);
    json_decref(v);
    return rc;
}

const char *cli_time(int64_t ms, char buf[24])
{
    if (ms < 0) {
        strcpy(buf, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int cli_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9')))
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* ---- help ---- */

static int help_all(FILE *f)
{
    fputs("usage:\n", f);
    for (int k = 0; k < NCOMMANDS; k++)
        synopsis(f, &commands[k], "       ");
    fputs("       parley --help\n\n", f);
    for (int k = 0; k < NCOMMANDS; k++) {
        char words[32];
        snprintf(words, sizeof words, "%s%s%s", commands[k].name, commands[k].sub ? " " : "",
                 commands[k].sub ? commands[k].sub : "");
        fprintf(f, "  %-16s %s\n", words, commands[k].summary);
    }
    fputs("\n`parley COMMAND --help` (`parley COMMAND SUBCOMMAND --help`) tells more;\n"
          "docs/cli.md describes every command.\n"
          "Settings come from the environment or PARLEY_CONFIG (docs/configuration.md).\n"
          "Output: results on stdout, errors on stderr; --json where a script wants it.\n"
          "Exit status: 0 ok, 1 failure, 2 usage, 78 configuration error.\n", f);
    return CLI_OK;
}

static int help_one(const struct cli_cmd *k)
{
    synopsis(stdout, k, "usage: ");
    fputc('\n', stdout);
    fputs(k->help, stdout);
    fputs("Exit status: 0 ok, 1 failure, 2 usage, 78 configuration error.\n", stdout);
    return CLI_OK;
}

/* The sub-commands of group name, on f. */
static void group_synopsis(FILE *f, const char *name)
{
    for (int k = 0; k < NCOMMANDS; k++)
        if (!strcmp(commands[k].name, name))
            synopsis(f, &commands[k], "       ");
}

static int has_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

/* ---- dispatch ---- */

static int run(const struct cli_cmd *k, int argc, char **argv)
{
    struct cli c;
    memset(&c, 0, sizeof c);
    c.cmd = k;
    if (k->needs == CLI_NEEDS_NOTHING)
        return k->run(&c, argc, argv);
    char err[512];
    if (config_load(&c.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "parley: configuration: %s\n", err);
        config_cleanup(&c.cfg);
        return CLI_CONFIG;
    }
    int rc = CLI_FAIL;
    if ((k->needs & 2) && llm_global_init() != 0) {
        fprintf(stderr, "parley: cannot initialise libcurl\n");
        goto out;
    }
    if (k->needs & 2) {
        c.db = db_open(c.cfg.db_path, err, sizeof err);
        if (!c.db) {
            fprintf(stderr, "parley: %s\n", err);
            goto out;
        }
    }
    if (k->needs & 4) {
        c.bell = bell_open_db(c.cfg.db_path, err, sizeof err);
        if (!c.bell) {
            fprintf(stderr, "parley: %s\n", err);
            goto out;
        }
    }
    rc = k->run(&c, argc, argv);
out:
    bell_close(c.bell);
    db_close(c.db);
    config_cleanup(&c.cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("parley: which command?\n", stderr);
        help_all(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help"))
        return help_all(stdout);
    int group = 0;
    for (int k = 0; k < NCOMMANDS; k++) {
        const struct cli_cmd *cmd = &commands[k];
        if (strcmp(cmd->name, name) != 0)
            continue;
        if (!cmd->sub) {
            if (has_help(argc - 2, argv + 2))
                return help_one(cmd);
            return run(cmd, argc - 2, argv + 2);
        }
        group = 1;
        if (argc >= 3 && !strcmp(cmd->sub, argv[2])) {
            if (has_help(argc - 3, argv + 3))
                return help_one(cmd);
            return run(cmd, argc - 3, argv + 3);
        }
    }
    if (group) {
        int help = argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"));
        FILE *f = help ? stdout : stderr;
        if (!help)
            fprintf(stderr, argc >= 3 ? "parley: %s: unknown sub-command '%s'\n"
                                      : "parley: %s: which one?\n", name, argc >= 3 ? argv[2] : "");
        fprintf(f, "usage:\n");
        group_synopsis(f, name);
        fprintf(f, "(parley %s SUBCOMMAND --help tells more)\n", name);
        return help ? CLI_OK : CLI_USAGE;
    }
    fprintf(stderr, "parley: unknown command '%s' (parley --help lists them)\n", name);
    return CLI_USAGE;
}
