/* parley.c — the command-line tool: set up, inspect and exercise a Parley
 * database with the same core the servers use.
 *
 *   parley migrate                 create or migrate PARLEY_DB, print its version
 *   parley ask [-t TICKET] PROMPT  generate an answer through the runner,
 *                                  streaming it from the event log to stdout
 *   parley maintain                recover dead jobs, compact events, prune rate hits
 *   parley token SUB [SECONDS]     print an HS256 JWT for SUB (PARLEY_JWT_SECRET)
 *   parley kb import FILE...       import Markdown / text files into the knowledge base
 *   parley kb list                 list the knowledge base's passages
 *   parley kb remove NAME|ID       remove a file's passages, or one passage
 *   parley db copy --from F --to URI   copy a SQLite database into PostgreSQL
 *   parley usage [USER]            a user's tokens today, budget, last 7 days
 *   parley budget set USER TOKENS|default   a user's daily token budget override
 *
 * Configuration comes from the environment and PARLEY_CONFIG (config.h).
 * Single process; the generation runs in a second thread while the main
 * thread follows the channel like any other viewer would.
 */
#include "auth.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "evlog.h"
#include "ident.h"
#include "jobs.h"
#include "kb.h"
#include "llm.h"
#include "ratelimit.h"
#include "runner.h"
#include "storage/copy.h"
#include "store.h"
#include "usage.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The synopsis (README.md's "Command-line tool" section lists the same
 * lines; tests/integration/t0525-cli-readme.sh compares them). */
static const char usage_text[] =
    "usage: parley migrate\n"
    "       parley ask [-t TICKET_ID] PROMPT\n"
    "       parley maintain\n"
    "       parley token SUB [SECONDS]\n"
    "       parley kb import FILE...\n"
    "       parley kb list\n"
    "       parley kb remove NAME|ID\n"
    "       parley db copy --from SQLITE_FILE --to POSTGRESQL_URI [--replace]\n"
    "       parley usage [USER]\n"
    "       parley budget set USER TOKENS|default\n"
    "       parley --help\n";

static int usage(void)
{
    fputs(usage_text, stderr);
    return 2;
}

/* parley --help: the synopsis and what each command does, on stdout. */
static int help(void)
{
    fputs(usage_text, stdout);
    fputs("\n"
          "  migrate    create the database (PARLEY_DB) or bring its schema up to date\n"
          "  ask        answer PROMPT through the configured LLM, streaming it to stdout\n"
          "             (-t: as the body of ticket TICKET_ID); a cached answer is reused\n"
          "  maintain   recover jobs whose lease expired, compact the event log\n"
          "             (PARLEY_EVENT_GRACE), prune old rate-limit hits\n"
          "  token      print a JWT for user SUB signed with PARLEY_JWT_SECRET, valid\n"
          "             SECONDS (default 3600; 0: no expiry)\n"
          "  kb import  cut each Markdown (.md) or text FILE into passages and store them in\n"
          "             the knowledge base; a file of the same name is replaced\n"
          "  kb list    print the passages: ID, file name, position, bytes, title\n"
          "  kb remove  remove every passage of file NAME, or passage ID (a number)\n"
          "             (docs/knowledge-base.md)\n"
          "  db copy    copy every table of the SQLite database SQLITE_FILE that the\n"
          "             PostgreSQL database POSTGRESQL_URI also has, in one transaction,\n"
          "             then print the row counts of both (any difference: nothing is\n"
          "             copied, exit 1). The target must hold no row in those tables;\n"
          "             --replace deletes its rows there first (docs/postgres.md)\n"
          "  usage      USER's tokens (default: open mode's user \"\") today and the last 7\n"
          "             UTC days, the daily budget, what remains and when it resets\n"
          "  budget set USER's daily token budget override: TOKENS per UTC day (0:\n"
          "             unlimited), or default (PARLEY_TOKEN_BUDGET_PER_DAY again;\n"
          "             a token_budget JWT claim still comes first; docs/usage.md)\n"
          "Settings come from the environment or PARLEY_CONFIG (docs/configuration.md).\n"
          "Exit status: 0 ok, 1 failure, 2 usage, 78 configuration error.\n", stdout);
    return 0;
}

/* parley usage [USER]: today's tokens, the budget and the last 7 days. */
static int cmd_usage(const struct parley_config *cfg, parley_db *db, const char *user)
{
    int64_t now = now_ms();
    struct usage_status st;
    struct usage_day days[7];
    if (usage_status(db, user, cfg->token_budget_per_day, -1, now, &st) < 0 ||
        usage_days(db, user, now, 7, days) < 0) {
        fprintf(stderr, "parley: usage: %s\n", db_errmsg(db));
        return 1;
    }
    char resets[32], date[16];
    usage_iso8601(st.reset_ms, resets);
    printf("user: %s\n", user);
    printf("today: %lld tokens (%lld prompt, %lld completion) in %lld generations\n",
           (long long)st.used, (long long)st.prompt_tokens, (long long)st.completion_tokens,
           (long long)st.generations);
    if (st.budget > 0)
        printf("budget: %lld a day (%s), remaining %lld%s, resets at %s\n", (long long)st.budget,
               usage_budget_source_name(st.source), (long long)st.remaining,
               st.exhausted ? " (exhausted)" : "", resets);
    else
        printf("budget: unlimited (%s), resets at %s\n", usage_budget_source_name(st.source), resets);
    for (int i = 0; i < 7; i++) {
        usage_date(days[i].day, date);
        printf("%s %lld prompt %lld completion %lld generations\n", date,
               (long long)days[i].prompt_tokens, (long long)days[i].completion_tokens,
               (long long)days[i].generations);
    }
    return 0;
}

/* parley budget set USER TOKENS|default */
static int cmd_budget(parley_db *db, const char *user, const char *value)
{
    int64_t tokens = -1;
    if (strcmp(value, "default") != 0) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!isdigit((unsigned char)value[0]) || errno || !end || *end || v < 0 || v > 1000000000000000LL) {
            fprintf(stderr, "parley: budget: TOKENS must be a whole number from 0 to 10^15 "
                            "(0: unlimited) or default, not '%s'\n", value);
            return 2;
        }
        tokens = v;
    }
    if (usage_budget_set(db, user, tokens, now_ms()) < 0) {
        fprintf(stderr, "parley: budget: %s\n", db_errmsg(db));
        return 1;
    }
    if (tokens < 0)
        printf("%s: daily token budget back to the default\n", user);
    else if (tokens == 0)
        printf("%s: daily token budget unlimited\n", user);
    else
        printf("%s: daily token budget %lld tokens\n", user, (long long)tokens);
    return 0;
}

/* Exit status for a configuration error (sysexits' EX_CONFIG): tools/run.sh
 * tells it apart from a database failure. */
#define EXIT_CONFIG 78

struct ask {
    struct parley_config *cfg;
    parley_bell *bell;          /* main's, shared (bell.h: any thread) */
    struct gen_request req;
    struct job_claim claim;
    struct gen_outcome out;
    int rc;
};

static void *ask_thread(void *arg)
{
    struct ask *a = arg;
    char err[512];
    struct parley_ctx ctx = { a->cfg, db_open(a->cfg->db_path, err, sizeof err), a->bell };
    a->rc = -1;
    if (ctx.db)
        a->rc = runner_execute(&ctx, &a->req, &a->claim, &a->out);
    else
        fprintf(stderr, "parley: %s\n", err);
    db_close(ctx.db);
    return NULL;
}

static int print_event(void *ud, const struct evlog_event *ev)
{
    (void)ud;
    if (!strcmp(ev->type, "token")) {
        fwrite(ev->data, 1, ev->data_len, stdout);
        fflush(stdout);
    } else if (!strcmp(ev->type, "error")) {
        json_t *o = json_loads(ev->data, 0, NULL);
        fprintf(stderr, "\nparley: error: %s\n",
                o && json_string_value(json_object_get(o, "message"))
                    ? json_string_value(json_object_get(o, "message")) : ev->data);
        json_decref(o);
    } else if (!strcmp(ev->type, "done")) {
        fprintf(stderr, "\nparley: done %s\n", ev->data);
    }
    return 0;
}

static int cmd_ask(struct parley_config *cfg, parley_db *db, parley_bell *bell,
                   const char *ticket, const char *prompt)
{
    struct ask a;
    memset(&a, 0, sizeof a);
    a.cfg = cfg;
    a.bell = bell;
    char channel[256], hash[65];
    struct answer ans;
    char *norm = NULL;
    if (ticket) {
        snprintf(channel, sizeof channel, "ticket:%s", ticket);
        answer_key_ticket(&ans, ticket, prompt, hash);
        if (store_ticket_put(db, ticket, prompt) < 0)
            return 1;
    } else {
        norm = answer_key_query(&ans, prompt, cfg->model, cfg->temperature);
        if (!norm)
            return 1;
        snprintf(channel, sizeof channel, "query:%s", ans.key + 6);
    }
    char *cached = NULL;
    if (store_answer_get(db, ans.key, &cached, NULL, NULL) == 0) {
        printf("%s\n", cached);
        fprintf(stderr, "parley: (cached answer)\n");
        free(cached);
        free(norm);
        return 0;
    }
    a.req.channel = channel;
    a.req.prompt_key = ans.key;
    a.req.llm.prompt = prompt;
    a.req.llm.temperature = cfg->temperature;
    a.req.cache = &ans;
    char err[512];
    struct parley_ctx ctx = { cfg, db, bell };
    if (runner_claim(&ctx, &a.req, &a.claim, err, sizeof err) < 0) {
        fprintf(stderr, "parley: %s\n", err);
        free(norm);
        return 1;
    }
    pthread_t th;
    int own = a.claim.owner;
    if (own && pthread_create(&th, NULL, ask_thread, &a) != 0) {
        free(norm);
        return 1;
    }
    int64_t cursor = a.claim.first_seq;
    int r = runner_follow(&ctx, channel, a.claim.job_id, &cursor, cfg->total_timeout_ms, NULL,
                          print_event, NULL);
    if (own)
        pthread_join(th, NULL);
    int ok = r == 0 && (!own || a.out.ok);
    gen_outcome_free(&a.out);
    free(norm);
    return ok ? 0 : 1;
}

/* parley kb import FILE...: each file in its own transaction; goes on
 * after a refused file. 0 when every file was imported. */
static int kb_import(parley_db *db, int nfiles, char **files)
{
    int failed = 0;
    for (int i = 0; i < nfiles; i++) {
        char err[512];
        int n = 0;
        int rc = kb_import_file(db, files[i], &n, err, sizeof err);
        if (rc == KB_OK) {
            printf("%s: %d passage%s\n", files[i], n, n == 1 ? "" : "s");
        } else {
            fprintf(stderr, "parley: kb import: %s\n", err);
            failed = 1;
        }
    }
    return failed;
}

static int kb_print_list(parley_db *db)
{
    struct kb_entry *e;
    int n;
    if (kb_list(db, NULL, &e, &n) != KB_OK) {
        fprintf(stderr, "parley: kb list: %s\n", db_err_text(db, "database error"));
        return 1;
    }
    int files = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || strcmp(e[i].source, e[i - 1].source) != 0)
            files++;
        printf("%lld\t%s\t%d\t%lld\t%s\n", (long long)e[i].id, e[i].source, e[i].seq,
               (long long)e[i].bytes, e[i].title);
    }
    fprintf(stderr, "parley: %d passage%s from %d file%s\n", n, n == 1 ? "" : "s", files,
            files == 1 ? "" : "s");
    kb_entries_free(e, n);
    return 0;
}

/* parley kb remove NAME|ID: a number is a passage id, anything else the
 * file name kb list shows. */
static int kb_remove(parley_db *db, const char *what)
{
    int digits = *what != '\0';
    for (const char *p = what; *p; p++)
        if (!isdigit((unsigned char)*p))
            digits = 0;
    int rc, n = 0;
    if (digits) {
        errno = 0;
        long long id = strtoll(what, NULL, 10);
        rc = errno ? KB_NOT_FOUND : kb_remove_id(db, id);
        n = rc == KB_OK;
    } else {
        rc = kb_remove_source(db, what, &n);
    }
    if (rc == KB_ERR) {
        fprintf(stderr, "parley: kb remove: %s\n", db_err_text(db, "database error"));
        return 1;
    }
    if (rc == KB_NOT_FOUND) {
        fprintf(stderr, "parley: kb remove: no %s %s in the knowledge base\n",
                digits ? "passage" : "file", what);
        return 1;
    }
    printf("removed %d passage%s\n", n, n == 1 ? "" : "s");
    return 0;
}

/* parley db copy --from FILE --to URI [--replace]: the per-table counts on
 * stdout; 1 on failure, 2 on a usage error. Needs no configuration. */
static int cmd_db(int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    unsigned flags = 0;
    if (argc < 3 || strcmp(argv[2], "copy") != 0)
        return usage();
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--from") && i + 1 < argc)
            from = argv[++i];
        else if (!strcmp(argv[i], "--to") && i + 1 < argc)
            to = argv[++i];
        else if (!strcmp(argv[i], "--replace"))
            flags |= COPY_REPLACE;
        else
            return usage();
    }
    if (!from || !to)
        return usage();
    struct copy_result res;
    char err[1024];
    int rc = copy_run(from, to, flags, &res, err, sizeof err);
    if (res.ntables > 0) {
        printf("%-24s %12s %12s\n", "table", "sqlite", "postgresql");
        for (int k = 0; k < res.ntables; k++) {
            const struct copy_table *t = &res.tables[k];
            if (!t->copied)
                continue;
            printf("%-24s %12lld %12lld%s\n", t->name, (long long)t->source_rows,
                   (long long)t->target_rows,
                   t->source_rows == t->target_rows ? "" : "  MISMATCH");
        }
        for (int k = 0; k < res.ntables; k++) {
            const struct copy_table *t = &res.tables[k];
            if (!t->copied && t->source_rows != 0)
                fprintf(stderr, "parley: db copy: %s (%lld rows) is not in the target: "
                        "not copied\n", t->name, (long long)t->source_rows);
            else if (t->skipped_cols)
                fprintf(stderr, "parley: db copy: %s: column(s) %s not in the target: "
                        "not copied\n", t->name, t->skipped_cols);
        }
    }
    if (rc == COPY_OK) {
        int n = 0;
        for (int k = 0; k < res.ntables; k++)
            n += res.tables[k].copied;
        printf("copied %lld rows in %d tables from %s to %s\n", (long long)res.rows, n, from,
               res.target);
    } else {
        fprintf(stderr, "parley: db copy: %s\n", err);
    }
    copy_result_free(&res);
    return rc == COPY_OK ? 0 : 1;
}

/* parley kb SUB ...: 2 on a usage error. */
static int cmd_kb(parley_db *db, int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[2], "import"))
        return kb_import(db, argc - 3, argv + 3);
    if (argc == 3 && !strcmp(argv[2], "list"))
        return kb_print_list(db);
    if (argc == 4 && !strcmp(argv[2], "remove"))
        return kb_remove(db, argv[3]);
    return usage();
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return help();
    if (!strcmp(argv[1], "db"))
        return cmd_db(argc, argv);
    struct parley_config cfg;
    char err[512];
    if (config_load(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "parley: configuration: %s\n", err);
        config_cleanup(&cfg);
        return EXIT_CONFIG;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "token")) {
        if (argc < 3)
            return usage();
        if (config_open_mode(&cfg)) {
            fprintf(stderr, "parley: PARLEY_JWT_SECRET is not set (open mode needs no token)\n");
            config_cleanup(&cfg);
            return 1;
        }
        long secs = argc > 3 ? strtol(argv[3], NULL, 10) : 3600;
        char *tok = auth_make_token(cfg.jwt_secret, argv[2], secs > 0 ? now_ms() / 1000 + secs : 0);
        if (tok)
            printf("%s\n", tok);
        free(tok);
        config_cleanup(&cfg);
        return tok ? 0 : 1;
    }
    if (llm_global_init() != 0) {
        fprintf(stderr, "parley: cannot initialise libcurl\n");
        return 1;
    }
    parley_db *db = db_open(cfg.db_path, err, sizeof err);
    if (!db) {
        fprintf(stderr, "parley: %s\n", err);
        config_cleanup(&cfg);
        return 1;
    }
    parley_bell *bell = bell_open_db(cfg.db_path, err, sizeof err);
    int rc = 0;
    if (!bell) {
        fprintf(stderr, "parley: %s\n", err);
        rc = 1;
    } else if (!strcmp(cmd, "migrate")) {
        printf("%s: schema version %d\n", db_path(db), db_schema_version(db));   /* redacted */
    } else if (!strcmp(cmd, "maintain")) {
        int rec = jobs_recover(db, bell, now_ms());
        int cmp = evlog_compact(db, (int64_t)cfg.event_grace_s * 1000, now_ms());
        int pr = ratelimit_prune(db, 60000, now_ms());
        printf("recovered %d jobs, compacted %d events, pruned %d rate hits\n", rec, cmp, pr);
        rc = rec < 0 || cmp < 0 || pr < 0;
    } else if (!strcmp(cmd, "kb")) {
        rc = cmd_kb(db, argc, argv);
    } else if (!strcmp(cmd, "usage")) {
        rc = argc > 3 ? usage() : cmd_usage(&cfg, db, argc > 2 ? argv[2] : "");
    } else if (!strcmp(cmd, "budget")) {
        rc = argc != 5 || strcmp(argv[2], "set") ? usage() : cmd_budget(db, argv[3], argv[4]);
    } else if (!strcmp(cmd, "ask")) {
        const char *ticket = NULL;
        int i = 2;
        if (i + 1 < argc && !strcmp(argv[i], "-t")) {
            ticket = argv[i + 1];
            i += 2;
        }
        if (i >= argc)
            rc = usage();
        else
            rc = cmd_ask(&cfg, db, bell, ticket, argv[i]);
    } else {
        rc = usage();
    }
    bell_close(bell);
    db_close(db);
    config_cleanup(&cfg);
    return rc;
}
