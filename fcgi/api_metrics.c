/* api_metrics.c — GET /api/metrics: Prometheus text for the whole
 * installation, combined from what every process can see:
 *   - the database (jobs by state, generation latency of recent jobs from
 *     their "done" events, open poll sessions, cached answers, the
 *     OpenAI-compatible API's requests by endpoint and outcome);
 *   - the WebSocket bridge's own numbers, which parley-ws rewrites every
 *     5 s to <PARLEY_DB>-ws.prom (its --stats-file), appended verbatim
 *     (parley_ws_up 0 when the file is missing or older than 30 s).
 * Per-process request counters are not reported: under mod_fcgid a request
 * can reach any of several processes, so they would not add up. The one
 * exception is the upstreams' breakers and counters (parley_upstream_*),
 * which only exist per process: they are the answering process's, and the
 * bridge's own come with its numbers as parley_ws_upstream_*.
 * Needs an admin (docs/admin.md): a token whose claims hold role "admin",
 * the rule of the /api/admin/ endpoints. No token or a bad one: 401 (the dispatcher,
 * F_AUTH); a valid token without the role: 403; open mode (no
 * PARLEY_JWT_SECRET: nobody is an admin): 403, as the admin endpoints.
 * The numbers are an installation's activity (counts, latencies, upstream
 * health), for its operators, not for every user of the API.
 */
#include "handlers.h"
#include "openai_store.h"
#include "stats.h"
#include "usage.h"
#include "status.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define WS_STATS_MAX_AGE_S 30
#define WS_STATS_MAX_BYTES (256 * 1024)

/* 0 when the request's token carries role "admin" (as api_admin.c); else
 * the 403 was written and the handler returns. F_AUTH already answered 401
 * to a request without a valid token. */
static int metrics_refuse_unless_admin(struct request *r)
{
    if (config_open_mode(r->ctx->cfg)) {
        res_error_kind(r, PERR_FORBIDDEN, "/api/metrics needs PARLEY_JWT_SECRET and a token with "
                                          "role \"admin\" (open mode has no admin)");
        return -1;
    }
    if (!r->has_claims || !r->claims.admin || strcmp(r->claims.sub, r->user) != 0) {
        res_error_kind(r, PERR_FORBIDDEN, "Only a token with role \"admin\" may read /api/metrics");
        return -1;
    }
    return 0;
}

int h_metrics(struct request *r)
{
    if (metrics_refuse_unless_admin(r) < 0)
        return 0;
    struct parley_stats st;
    if (stats_collect(r->ctx->db, now_ms() - 3600 * 1000, &st) < 0)
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error");
    int64_t running = st.jobs_running, done = st.jobs_done, failed = st.jobs_failed;
    double ttft = st.recent_first_token_ms, total = st.recent_generation_ms;
    int64_t recent = st.recent_done;
    int64_t polls = st.poll_sessions, answers = st.answers_cached, convs = st.conversations;

    res_start(r, 200, "text/plain; version=0.0.4; charset=utf-8", NULL);
    res_printf(r,
               "# HELP parley_jobs Generations by state (database).\n"
               "# TYPE parley_jobs gauge\n"
               "parley_jobs{state=\"running\"} %lld\n"
               "parley_jobs{state=\"done\"} %lld\n"
               "parley_jobs{state=\"failed\"} %lld\n"
               "# HELP parley_generation_first_token_seconds Mean time to first token, jobs done in the last hour.\n"
               "# TYPE parley_generation_first_token_seconds gauge\n"
               "parley_generation_first_token_seconds %.6f\n"
               "# HELP parley_generation_seconds Mean generation time, jobs done in the last hour.\n"
               "# TYPE parley_generation_seconds gauge\n"
               "parley_generation_seconds %.6f\n"
               "# HELP parley_generations_last_hour Jobs done in the last hour.\n"
               "# TYPE parley_generations_last_hour gauge\n"
               "parley_generations_last_hour %lld\n"
               "# HELP parley_poll_sessions Open long-poll sessions.\n"
               "# TYPE parley_poll_sessions gauge\n"
               "parley_poll_sessions %lld\n"
               "# HELP parley_answers_cached Cached answers.\n"
               "# TYPE parley_answers_cached gauge\n"
               "parley_answers_cached %lld\n"
               "# HELP parley_conversations Conversations stored.\n"
               "# TYPE parley_conversations gauge\n"
               "parley_conversations %lld\n",
               (long long)running, (long long)done, (long long)failed, ttft / 1000.0,
               total / 1000.0, (long long)recent, (long long)polls, (long long)answers,
               (long long)convs);

    /* Anonymous visitors (docs/anonymous.md), from the database: what they
     * stored, whichever process or bridge served them. */
    res_printf(r,
               "# HELP parley_anonymous_conversations Conversations of anonymous visitors (owner anon:).\n"
               "# TYPE parley_anonymous_conversations gauge\n"
               "parley_anonymous_conversations %lld\n"
               "# HELP parley_anonymous_messages_total Messages anonymous visitors sent (stored).\n"
               "# TYPE parley_anonymous_messages_total counter\n"
               "parley_anonymous_messages_total %lld\n"
               "# HELP parley_anonymous_poll_sessions Open long-poll sessions of anonymous visitors.\n"
               "# TYPE parley_anonymous_poll_sessions gauge\n"
               "parley_anonymous_poll_sessions %lld\n",
               (long long)st.anon_conversations, (long long)st.anon_messages,
               (long long)st.anon_poll_sessions);

    /* Tokens charged to users (docs/usage.md), from the database: every
     * generation's, whichever process or node ran it. */
    int64_t tp = 0, tc = 0;
    if (usage_totals(r->ctx->db, &tp, &tc) == 0)
        res_printf(r,
                   "# HELP parley_tokens_total Tokens charged to users, as the upstreams reported them.\n"
                   "# TYPE parley_tokens_total counter\n"
                   "parley_tokens_total{kind=\"prompt\"} %lld\n"
                   "parley_tokens_total{kind=\"completion\"} %lld\n",
                   (long long)tp, (long long)tc);

    /* The OpenAI-compatible API's requests by endpoint and outcome
     * (docs/openai.md), from the database: every process's and node's. */
    json_t *oc = NULL;
    if (oai_counts(r->ctx->db, &oc) == 0) {
        res_printf(r, "# HELP parley_openai_requests_total Requests of the OpenAI-compatible API by endpoint and outcome.\n"
                      "# TYPE parley_openai_requests_total counter\n");
        size_t i;
        json_t *row;
        json_array_foreach(oc, i, row)
            res_printf(r, "parley_openai_requests_total{endpoint=\"%s\",outcome=\"%s\"} %lld\n",
                       json_string_value(json_object_get(row, "endpoint")),
                       json_string_value(json_object_get(row, "outcome")),
                       (long long)json_integer_value(json_object_get(row, "n")));
        json_decref(oc);
    }

    /* The upstreams as this process sees them (docs/upstreams.md). */
    struct llm_config lc;
    config_llm(r->ctx->cfg, &lc);
    char *ups = llm_upstreams_prom(&lc, "parley");
    if (ups)
        res_write(r, ups, strlen(ups));
    free(ups);

    /* The bridge's numbers, if it is running next to us. */
    char path[1024];
    const char *node = config_node_prefix(r->ctx->cfg);   /* NULL: refused at load */
    int named = node && (size_t)snprintf(path, sizeof path, "%s-ws.prom", node) < sizeof path;
    struct stat sb;
    int fresh = named && stat(path, &sb) == 0 && time(NULL) - sb.st_mtime <= WS_STATS_MAX_AGE_S &&
                sb.st_size > 0 && sb.st_size <= WS_STATS_MAX_BYTES;
    res_printf(r, "# HELP parley_ws_up 1 when the WebSocket bridge's numbers are fresh.\n"
                  "# TYPE parley_ws_up gauge\nparley_ws_up %d\n", fresh);
    FILE *f = fresh ? fopen(path, "r") : NULL;
    if (f) {
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            if (res_write(r, buf, n) < 0)
                break;
        fclose(f);
    }
    return 0;
}
