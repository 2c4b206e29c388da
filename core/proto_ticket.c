/* proto_ticket.c — seed 000: the helpdesk ticket protocol.
 *
 *   client: {"ticketBody": "..."}            (once per ticket)
 *   server: {"type":"cached","response":...,"message":...} then {"type":"done"}
 *        or {"type":"stream","content":...}... then {"type":"done"}
 *        or {"type":"error","message":...,"code":...}   (docs/errors.md)
 *   client: {"type":"stop"}                  stops the ticket's generation
 *   server: ... {"type":"done","stopped":true} to every viewer (docs/stop.md);
 *           a refused stop: {"type":"error","message":...,"code":...}
 * Channel "ticket:<id>"; the cache key is the ticket id + SHA-256 of the
 * body, so openers of the same ticket and body share one generation.
 * With PARLEY_TENANT_CLAIM set, <id> is the stored id of the connection's
 * tenant ("<id>~<scope>", ident_ticket_stored): the same ticket id in two
 * tenants is two tickets (channel, row, cache); a connection without a
 * tenant is refused (forbidden, WebSocket close 4403; docs/tenants.md).
 * With PARLEY_KB_TICKETS=1 the system prompt carries the knowledge-base
 * passages that match the body (proto_job_ground), and the key's digest
 * then covers that prompt too.
 */
#include "proto_impl.h"
#include "stats.h"
#include "ident.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHED_MESSAGE "Resposta em cache - ticket já foi processado anteriormente"
#define TICKET_SYSTEM "You are a helpdesk assistant. Read the support ticket and " \
    "answer the technician with the likely cause and clear steps to solve it."

/* The protocol's error frame; records the failure's kind on c. */
static int error_frame(struct proto_conn *c, struct proto_frames *out, enum perr kind,
                       const char *msg)
{
    proto_fail(c, kind, msg);
    return frames_push(out, json_pack("{s:s, s:s, s:s}", "type", "error", "message", msg, "code",
                                      perr_code(kind)));
}

#define DB_ERROR_MSG "Database error: please try again"

int proto_ticket_cached(struct proto_frames *out, const char *response)
{
    if (frames_push(out, json_pack("{s:s, s:s, s:s}", "type", "cached", "response", response,
                                   "message", CACHED_MESSAGE)) < 0)
        return -1;
    return frames_push(out, json_pack("{s:s}", "type", "done"));
}

/* The channel of c's ticket: "ticket:<stored id>" (its tenant's). */
static void ticket_channel(const struct proto_conn *c, char *chan, size_t len)
{
    char sid[IDENT_TICKET_STORED_MAX];
    if (!ident_ticket_stored(sid, sizeof sid, c->param, c->tenant_scope))
        sid[0] = '\0';                   /* not a valid id: ticket_open refused it */
    snprintf(chan, len, "ticket:%s", sid);
}

static int ticket_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                       struct proto_frames *out)
{
    if (!ident_ticket_id_valid(c->param)) {
        c->close = 1;
        c->close_code = 1008;
        str_copy(c->close_reason, sizeof c->close_reason, "invalid ticket id");
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid ticket id: " IDENT_TICKET_ID_RULE);
    }
    if (ctx->cfg->tenant_claim && *ctx->cfg->tenant_claim && !c->tenant_scope[0]) {
        char m[200];
        snprintf(m, sizeof m, "Forbidden: tickets are per tenant and the token has no %.64s "
                 "claim (PARLEY_TENANT_CLAIM)", ctx->cfg->tenant_claim);
        c->close = 1;
        c->close_code = 4403;
        str_copy(c->close_reason, sizeof c->close_reason, "Forbidden: no tenant in the token");
        return error_frame(c, out, PERR_FORBIDDEN, m);
    }
    json_int_t after = json_integer_value(json_object_get(c->state, "resume_after"));
    if (after >= 0 && json_object_get(c->state, "resume_after")) {
        char chan[200];
        ticket_channel(c, chan, sizeof chan);
        proto_follow(c, chan, 0, after);
    }
    return 0;
}

static int ticket_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                          struct proto_frames *out, struct proto_job **jobp)
{
    if (ctx->cfg->tenant_claim && *ctx->cfg->tenant_claim && !c->tenant_scope[0])
        return error_frame(c, out, PERR_FORBIDDEN,
                           "Forbidden: tickets are per tenant and the token has no tenant claim");
    if (!json_is_object(msg))
        return error_frame(c, out, PERR_BAD_INPUT,
                           "Invalid message: expected JSON {\"ticketBody\": \"...\"}");
    const char *type = proto_str(msg, "type");
    if (type && !strcmp(type, "stop")) {
        char chan[200];
        ticket_channel(c, chan, sizeof chan);
        enum perr kind;
        const char *m;
        if (proto_stop(ctx, c, chan, 0, &kind, &m) == JOBS_STOP_OK)
            return 0;               /* the done frame marked stopped follows */
        int rc = frames_push(out, json_pack("{s:s, s:s, s:s}", "type", "error", "message", m,
                                            "code", perr_code(kind)));
        return kind == PERR_DB || kind == PERR_DB_READONLY || kind == PERR_DB_UNAVAILABLE ? -1 : rc;
    }
    json_t *jb = json_object_get(msg, "ticketBody");
    if (!jb)
        return error_frame(c, out, PERR_BAD_INPUT, "Missing field ticketBody");
    if (!json_is_string(jb))
        return error_frame(c, out, PERR_BAD_INPUT, "ticketBody must be a string");
    const char *body = json_string_value(jb);
    const char *p = body;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (!*p)
        return error_frame(c, out, PERR_BAD_INPUT, "ticketBody is empty");
    size_t chars = proto_utf8_len(body);
    if (chars > (size_t)ctx->cfg->max_message_length) {
        char m[128];
        snprintf(m, sizeof m, "ticketBody too long: %zu characters (max %d)", chars,
                 ctx->cfg->max_message_length);
        return error_frame(c, out, PERR_TOO_LONG, m);
    }
    if (proto_following(c) && c->job_id)
        return error_frame(c, out, PERR_CONFLICT,
                           "This ticket is already being processed on this connection");

    struct proto_job *job = proto_job_new();
    if (!job)
        return -1;
    char stored[IDENT_TICKET_STORED_MAX];
    const char *tid = ident_ticket_stored(stored, sizeof stored, c->param, c->tenant_scope)
                      ? proto_job_keep(job, stored) : NULL;
    const char *kbody = proto_job_keep(job, body);
    if (!tid || !kbody) {
        proto_job_free(job);
        return -1;
    }
    answer_key_ticket(&job->ans, tid, kbody, job->hash);
    const char *system;
    if (proto_job_ground(ctx, job, ctx->cfg->kb_tickets, TICKET_SYSTEM, kbody, &system, NULL,
                         NULL) < 0) {
        proto_job_free(job);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }

    char *cached = NULL;
    int r = store_answer_get(ctx->db, job->ans.key, &cached, NULL, NULL);
    if (r == 0) {
        stats_cache_hit(ctx->db, job->ans.key);   /* the admin page's hit rate; best effort */
        int rc = proto_ticket_cached(out, cached);
        free(cached);
        proto_job_free(job);
        return rc;
    }
    if (r < 0) {
        proto_job_free(job);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    /* the budget: only when this would call the upstream (not attaching
     * to the ticket's running generation) */
    char why[160], chan[200];
    int64_t running = 0, rseq = 0;
    snprintf(chan, sizeof chan, "ticket:%s", tid);
    int ok = jobs_running_on(ctx->db, chan, &running, &rseq);
    if (ok >= 0)
        ok = ok == 0 ? 1 : proto_budget_ok(ctx, c, why, sizeof why);   /* 0: one runs */
    if (ok == 0) {
        proto_job_free(job);
        return error_frame(c, out, PERR_BUDGET_EXHAUSTED, why);
    }
    if (ok > 0)
        ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        proto_job_free(job);
        if (ok < 0)
            proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return ok == 0 ? error_frame(c, out, PERR_RATE_LIMITED, "Rate limit exceeded") : -1;
    }
    if (store_ticket_put(ctx->db, tid, kbody) < 0) {
        proto_job_free(job);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    snprintf(job->channel, sizeof job->channel, "ticket:%s", tid);
    job->req.channel = job->channel;
    job->req.prompt_key = job->ans.key;
    job->req.llm.prompt = kbody;
    job->req.llm.system = system;
    job->req.llm.temperature = ctx->cfg->temperature;
    job->req.cache = &job->ans;
    if (proto_start(ctx, c, job, jobp) < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    return 0;
}

static int ticket_event(struct parley_ctx *ctx, struct proto_conn *c,
                        const struct evlog_event *ev, struct proto_frames *out)
{
    (void)ctx;
    if (!strcmp(ev->type, "token"))
        return frames_push(out, proto_with_seq(c, ev, json_pack("{s:s, s:s%}", "type", "stream",
                                                             "content", ev->data, ev->data_len)));
    if (!strcmp(ev->type, "done")) {
        json_t *o = json_pack("{s:s}", "type", "done");
        if (o && proto_event_stopped(ev))
            json_object_set_new(o, "stopped", json_true());
        return frames_push(out, proto_with_seq(c, ev, o));
    }
    if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        int rc = frames_push(out, proto_with_seq(c, ev, json_pack("{s:s, s:s, s:s}", "type",
                                                                  "error", "message",
                                                                  m ? m : "error", "code",
                                                                  code)));
        free(m);
        return rc;
    }
    return 0;      /* "start" has no frame in this protocol */
}

const struct proto_ops proto_ticket_ops = { "ticket", ticket_open, ticket_message, ticket_event };
