/* cmd_ask.c — parley ask (cli.h; docs/cli.md): one generation through the
 * runner, followed from the event log like any viewer. The generation runs
 * in a second thread with its own database handle while the main thread
 * follows the channel. Core calls only: runner.h, store.h, evlog.h. */
#include "cli.h"
#include "evlog.h"
#include "runner.h"
#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int cmd_ask(struct cli *c, int argc, char **argv)
{
    const char *ticket = NULL, *prompt = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-t")) {
            if (i + 1 >= argc)
                return cli_usage(c, "-t needs a TICKET_ID");
            ticket = argv[++i];
        } else if (!prompt) {
            prompt = argv[i];
        } else {
            return cli_usage(c, "one PROMPT only (quote it)");
        }
    }
    if (!prompt)
        return cli_usage(c, "PROMPT is missing");
    struct parley_config *cfg = &c->cfg;
    parley_db *db = c->db;
    struct ask a;
    memset(&a, 0, sizeof a);
    a.cfg = cfg;
    a.bell = c->bell;
    char channel[256], hash[65];
    struct answer ans;
    char *norm = NULL;
    if (ticket) {
        snprintf(channel, sizeof channel, "ticket:%s", ticket);
        answer_key_ticket(&ans, ticket, prompt, hash);
        if (store_ticket_put(db, ticket, prompt) < 0)
            return cli_fail(c, "%s", db_errmsg(db));
    } else {
        norm = answer_key_query(&ans, prompt, cfg->model, cfg->temperature);
        if (!norm)
            return CLI_FAIL;
        snprintf(channel, sizeof channel, "query:%s", ans.key + 6);
    }
    char *cached = NULL;
    if (store_answer_get(db, ans.key, &cached, NULL, NULL) == 0) {
        printf("%s\n", cached);
        fprintf(stderr, "parley: (cached answer)\n");
        free(cached);
        free(norm);
        return CLI_OK;
    }
    a.req.channel = channel;
    a.req.prompt_key = ans.key;
    a.req.llm.prompt = prompt;
    a.req.llm.temperature = cfg->temperature;
    a.req.cache = &ans;
    char err[512];
    struct parley_ctx ctx = { cfg, db, c->bell };
    if (runner_claim(&ctx, &a.req, &a.claim, err, sizeof err) < 0) {
        free(norm);
        return cli_fail(c, "%s", err);
    }
    pthread_t th;
    int own = a.claim.owner;
    if (own && pthread_create(&th, NULL, ask_thread, &a) != 0) {
        free(norm);
        return CLI_FAIL;
    }
    int64_t cursor = a.claim.first_seq;
    int r = runner_follow(&ctx, channel, a.claim.job_id, &cursor, cfg->total_timeout_ms, NULL,
                          print_event, NULL);
    if (own)
        pthread_join(th, NULL);
    int ok = r == 0 && (!own || a.out.ok);
    gen_outcome_free(&a.out);
    free(norm);
    return ok ? CLI_OK : CLI_FAIL;
}
