/* api_admin.c — the admin page's JSON endpoints (docs/admin.md), for a
 * token whose claims hold role "admin" (struct auth_claims.admin):
 *
 *   GET  /api/admin/overview                 everything the page shows, one
 *        request: {"stats": stats_overview, "generations": [...],
 *        "connections": {...}, "upstreams": {"this_process": [...]}}
 *   GET  /api/admin/generations              {"generations": [...]} running now
 *   POST /api/admin/generations/{id}/stop    stops job {id} (as the REST stop,
 *        docs/stop.md): 202 {"success", "stopped", "job_id"}; 404 / 409
 *   GET  /api/admin/connections              open connections by transport
 *
 * Refusals: no token 401 (the dispatcher, F_AUTH, which verifies the
 * token once and keeps its claims in r->claims); a token without role
 * "admin" 403; open mode (no PARLEY_JWT_SECRET: nobody is an admin) 403.
 * Where the numbers come from: the database (core/stats.h: counts, jobs,
 * usage, long-poll sessions) and the processes' presence rows
 * (core/presence.h: each parley.fcgi and parley-ws process writes its open
 * connections and its view of the upstreams every 2 s). Transport only.
 * Runs in a parley.fcgi worker thread on the thread's database connection.
 */
#include "handlers.h"
#include "llm.h"
#include "poll_park.h"
#include "presence.h"
#include "proto.h"
#include "stats.h"
#include "status.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* 0 when the request's token carries role "admin"; else the refusal was
 * sent (403) and the handler returns. F_AUTH already answered 401 to a
 * request without a valid token; its claims are the dispatcher's one
 * verification (r->claims). */
static int refuse_unless_admin(struct request *r)
{
    if (config_open_mode(r->ctx->cfg)) {
        res_error_kind(r, PERR_FORBIDDEN, "The admin endpoints need PARLEY_JWT_SECRET and a token "
                                          "with role \"admin\" (open mode has no admin)");
        return -1;
    }
    if (!r->has_claims || !r->claims.admin || strcmp(r->claims.sub, r->user) != 0) {
        res_error_kind(r, PERR_FORBIDDEN, "Only a token with role \"admin\" may use the admin endpoints");
        return -1;
    }
    return 0;
}

static int db_failed(struct request *r)
{
    return res_error_kind(r, db_err_kind(r->ctx->db), "%s", db_err_text(r->ctx->db, "Database error"));
}

/* The running generations with "upstream": the configuration's one
 * upstream when it names one (every process of an installation reads the
 * same configuration), else null: with several, which one answers is
 * known to the owning process only (and recorded in usage when it ends). */
static json_t *generations(struct request *r, int64_t now)
{
    json_t *arr = NULL;
    if (stats_live_generations(r->ctx->db, now, &arr) < 0)
        return NULL;
    struct llm_config lc;
    struct llm_upstream_status st[LLM_MAX_UPSTREAMS];
    config_llm(r->ctx->cfg, &lc);
    size_t n = llm_upstreams_status(&lc, st, LLM_MAX_UPSTREAMS);
    size_t i;
    json_t *g;
    json_array_foreach(arr, i, g)
        json_object_set_new(g, "upstream", n == 1 ? json_string(st[0].name) : json_null());
    return arr;
}

/* Adds every integer of counts to the same key of totals. */
static void add_counts(json_t *totals, json_t *counts)
{
    const char *k;
    json_t *v;
    json_object_foreach(counts, k, v) {
        if (!json_is_integer(v))
            continue;
        json_int_t have = json_integer_value(json_object_get(totals, k));
        json_object_set_new(totals, k, json_integer(have + json_integer_value(v)));
    }
}

/* {"totals": {transport: n}, "longpoll_sessions": {"generic", "phoenix"},
 *  "processes": [presence rows], "stale_after_ms"}; NULL on a database error. */
static json_t *connections(struct request *r, int64_t now)
{
    json_t *rows = NULL;
    int64_t lp = 0, plp = 0;
    if (presence_list(r->ctx->db, now - PRESENCE_STALE_MS, &rows) < 0)
        return NULL;
    if (stats_poll_open(r->ctx->db, now, &lp, &plp) < 0) {
        json_decref(rows);
        return NULL;
    }
    json_t *totals = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i}", "websocket", 0,
                               "phoenix_websocket", 0, "sse", 0, "longpoll_waiting", 0,
                               "longpoll", 0, "phoenix_longpoll", 0);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
        add_counts(totals, json_object_get(row, "counts"));
    /* a long-poll client is its session (the database's), whichever
     * process its next request reaches; waiting requests are the rows' */
    json_object_set_new(totals, "longpoll", json_integer(lp));
    json_object_set_new(totals, "phoenix_longpoll", json_integer(plp));
    return json_pack("{s:o, s:{s:I, s:I}, s:o, s:i}", "totals", totals, "longpoll_sessions",
                     "generic", (json_int_t)lp, "phoenix", (json_int_t)plp, "processes", rows,
                     "stale_after_ms", PRESENCE_STALE_MS);
}

int h_admin_overview(struct request *r)
{
    if (refuse_unless_admin(r) < 0)
        return 0;
    int64_t now = now_ms();
    json_t *stats = NULL;
    if (stats_overview_at(r->ctx->db, now, &stats) < 0)
        return db_failed(r);
    json_t *gens = generations(r, now);
    json_t *conns = gens ? connections(r, now) : NULL;
    if (!gens || !conns) {
        json_decref(stats);
        json_decref(gens);
        return db_failed(r);
    }
    json_t *ups = presence_upstreams(r->ctx->cfg);
    json_t *o = json_pack("{s:I, s:o, s:o, s:o, s:{s:o}}", "at", (json_int_t)now, "stats", stats,
                          "generations", gens, "connections", conns, "upstreams",
                          "this_process", ups ? ups : json_array());
    if (!o)
        return res_error_kind(r, PERR_INTERNAL, "Out of memory");
    return res_json(r, 200, o);
}

int h_admin_generations(struct request *r)
{
    if (refuse_unless_admin(r) < 0)
        return 0;
    int64_t now = now_ms();
    json_t *gens = generations(r, now);
    if (!gens)
        return db_failed(r);
    return res_json(r, 200, json_pack("{s:I, s:o}", "at", (json_int_t)now, "generations", gens));
}

int h_admin_connections(struct request *r)
{
    if (refuse_unless_admin(r) < 0)
        return 0;
    int64_t now = now_ms();
    json_t *c = connections(r, now);
    if (!c)
        return db_failed(r);
    json_object_set_new(c, "at", json_integer(now));
    return res_json(r, 200, c);
}

int h_admin_stop(struct request *r)
{
    if (refuse_unless_admin(r) < 0)
        return 0;
    const char *id = r->params[0];
    size_t n = strspn(id, "0123456789");
    long long job = n && !id[n] && n <= 18 ? strtoll(id, NULL, 10) : 0;
    if (job <= 0)
        return res_error_kind(r, PERR_BAD_INPUT, "The job id must be a positive integer");
    enum perr kind;
    const char *msg;
    int64_t addressed = 0;
    int rc = proto_stop_channel(r->ctx, NULL, job, r->user, 1, &kind, &msg, &addressed);
    if (rc != JOBS_STOP_OK)
        return res_error_kind(r, kind, "%s", msg);
    return res_json(r, 202, json_pack("{s:b, s:b, s:I}", "success", 1, "stopped", 1,
                                      "job_id", (json_int_t)addressed));
}

json_t *admin_fcgi_counts(void *ud)
{
    (void)ud;
    return json_pack("{s:i, s:i}", "sse", http_streams_open(), "longpoll_waiting",
                     poll_park_count());
}
