/* api_tickets.c — seed 000 over REST and Server-Sent Events.
 *
 *   GET    /api/tickets/{id}/ai         does an AI session exist for the ticket?
 *                                       (the rendered JSON of a cached answer
 *                                       is kept per thread, checked against
 *                                       the stored text at every request)
 *   DELETE /api/tickets/{id}/ai         invalidate the cached answer
 *                                       (?regenerate=1: and generate it again)
 *   GET    /api/tickets/{id}/ai/stream  the ticket's stream as SSE: "id:" = the
 *                                       channel seq, data = the seed 000 frame;
 *                                       resumes from Last-Event-ID or ?after=N
 * With PARLEY_TENANT_CLAIM set, {id} is the caller's tenant's ticket: its
 * stored id "<id>~<scope>" (api_ticket_stored; docs/tenants.md) names the
 * channel, the tickets row and the cache, and bodies still show {id}; a
 * token without a tenant gets 403. With PARLEY_ADMIN_CLAIM set, DELETE
 * needs a token with that claim (403 otherwise).
 * The SSE stream and the WebSocket/long-poll endpoints share one channel
 * ("ticket:<id>") and one generation (core/proto_ticket.c makes the frames,
 * core/follow.h follows the channel). Failures map to statuses by their
 * kind (fcgi/status.h). Runs in a parley.fcgi worker thread; a generation
 * it starts runs on the process's generation loop (proto_job_submit).
 */
#include "handlers.h"
#include "api_usage.h"
#include "sse_park.h"
#include "ident.h"
#include "jobs.h"
#include "proto.h"
#include "status.h"
#include "store.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSE_HEARTBEAT_MS 15000       /* well inside FcgidIOTimeout (40 s) */

#define CHECK_ID(r) do { if (!ident_ticket_id_valid((r)->params[0])) \
    return res_error_kind((r), PERR_BAD_INPUT, "Invalid ticket id: " IDENT_TICKET_ID_RULE); } while (0)

/* ---- GET /api/tickets/{id}/ai: the rendered answer, kept per thread ----
 *
 * For a ticket with a cached answer the response is a pure function of the
 * ticket id and the answer's text: {"ticketId", "exists": true, "status":
 * "cached", "response": text} (a running job does not change it). So each
 * worker thread keeps the JSON it last rendered for a few tickets together
 * with the answer text it was rendered from, and every request still reads
 * the answer row (one indexed SELECT, the text read in place) and compares
 * the text byte for byte before it serves the kept JSON. Nothing can be
 * stale: a DELETE, a regenerated answer or a write by another process or
 * thread changes what the SELECT returns, and the next request renders
 * again. What the kept JSON saves is the jansson work (UTF-8 validation of
 * the text, escaping it, the allocations) and the job lookup.
 *
 * With SQLite, the SELECT itself is skipped while the ticket's answer
 * version has not moved (db.h, db_answer_version: a counter in the
 * machine's doorbell file that every Parley process advances right after
 * committing a change to the ticket's cached answers, before it answers
 * its own caller). The slot remembers the version peeked BEFORE the read
 * that confirmed its text, so a change committed during that read moves
 * the version past it. A write made behind Parley's back (the sqlite3
 * shell) does not move it: a slot is trusted without a read for at most
 * ANSWER_TRUST_MS. With PostgreSQL every request reads (another node's
 * change would reach this one's doorbell only later). */

#define ANSWER_SLOTS 16              /* tickets kept per thread */
#define ANSWER_MAX_KEEP (256 * 1024) /* larger answers are rendered every time */
#define ANSWER_TRUST_MS 1000         /* the longest a slot is served without a read */

struct answer_slot {
    char id[IDENT_TICKET_STORED_MAX];  /* the stored id (the tenant's ticket) */
    char *text;                      /* the answer text it was rendered from */
    size_t text_len;
    char *json;                      /* the rendered body */
    size_t json_len;
    uint64_t ver;                    /* the answer version before the last read */
    int ver_ok;                      /* ver is one (SQLite, doorbell mapped) */
    int64_t read_ms;                 /* mono_ms() of that read */
};

static pthread_key_t answer_key;
static pthread_once_t answer_once = PTHREAD_ONCE_INIT;
static int answer_key_ok;

static void answer_slots_free(void *p)
{
    struct answer_slot *s = p;
    for (int i = 0; s && i < ANSWER_SLOTS; i++) {
        free(s[i].text);
        free(s[i].json);
    }
    free(s);
}

static void answer_key_init(void)
{
    answer_key_ok = pthread_key_create(&answer_key, answer_slots_free) == 0;
}

/* This thread's slot for ticket id (FNV-1a, direct-mapped), NULL when
 * there is no memory for the table. */
static struct answer_slot *answer_slot(const char *id)
{
    pthread_once(&answer_once, answer_key_init);
    if (!answer_key_ok)
        return NULL;
    struct answer_slot *s = pthread_getspecific(answer_key);
    if (!s) {
        s = calloc(ANSWER_SLOTS, sizeof *s);
        if (!s || pthread_setspecific(answer_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s[h % ANSWER_SLOTS];
}

/* Renders the answer exactly as before the cache existed: jansson, which
 * also refuses text that is not valid UTF-8 (then NULL → 500). */
static char *answer_render(const char *id, const char *text, size_t len)
{
    json_t *t = json_stringn(text, len);
    json_t *o = t ? json_pack("{s:s, s:b, s:s, s:o}", "ticketId", id, "exists", 1, "status",
                              "cached", "response", t)
                  : NULL;
    char *out = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    return out;
}

/* What answer_check decided while the answer row was held. */
struct answer_pick {
    const char *id;                  /* the stored id: the slot's key */
    const char *shown;               /* the client's id: what the body says */
    const char *json;                /* the body to send: a slot's, or `own` */
    size_t json_len;
    char *own;                       /* rendered now and not kept: freed after */
    int bad_utf8;                    /* the stored text is not valid UTF-8 */
    uint64_t ver;                    /* the answer version peeked before the read */
    int ver_ok;
};

/* The slot now holds the answer as read after version p->ver was peeked. */
static void answer_slot_confirm(struct answer_slot *slot, const struct answer_pick *p)
{
    slot->ver = p->ver;
    slot->ver_ok = p->ver_ok;
    slot->read_ms = mono_ms();
}

/* store_text_fn for store_answer_peek: with the answer's text read in
 * place, picks this thread's kept JSON when it was rendered from the same
 * text, else renders it (and keeps it when it fits). Writes nothing: the
 * response goes out after the row is released. */
static int answer_check(void *ud, const char *text, size_t len)
{
    struct answer_pick *p = ud;
    struct answer_slot *slot = answer_slot(p->id);
    if (slot && slot->json && slot->text_len == len && strcmp(slot->id, p->id) == 0 &&
        memcmp(slot->text, text, len) == 0) {
        p->json = slot->json;
        p->json_len = slot->json_len;
        answer_slot_confirm(slot, p);
        return 0;
    }
    char *json = answer_render(p->shown, text, len);
    if (!json) {
        p->bad_utf8 = 1;
        return 0;
    }
    size_t json_len = strlen(json);
    p->json = json;
    p->json_len = json_len;
    if (slot && len <= ANSWER_MAX_KEEP) {
        char *keep_text = malloc(len + 1);
        if (keep_text) {
            memcpy(keep_text, text, len);
            keep_text[len] = '\0';
            free(slot->text);
            free(slot->json);
            str_copy(slot->id, sizeof slot->id, p->id);
            slot->text = keep_text;
            slot->text_len = len;
            slot->json = json;
            slot->json_len = json_len;
            answer_slot_confirm(slot, p);
            return 0;
        }
    }
    p->own = json;
    return 0;
}

/* Serves the cached answer of the ticket stored as id (shown as shown): 1
 * when there is one (the response is written; *rc is what the write
 * returned), 0 when the ticket has none (nothing written), -1 on a
 * database error (nothing written). */
static int answer_serve(struct request *r, const char *id, const char *shown, int *rc)
{
    struct answer_pick p = { .id = id, .shown = shown };
    p.ver_ok = db_answer_version(r->ctx->db, id, &p.ver);
    if (p.ver_ok) {
        /* nothing changed since this thread last read the answer */
        struct answer_slot *slot = answer_slot(id);
        if (slot && slot->json && slot->ver_ok && slot->ver == p.ver &&
            strcmp(slot->id, id) == 0 && mono_ms() - slot->read_ms < ANSWER_TRUST_MS) {
            *rc = res_json_text(r, 200, slot->json, slot->json_len);
            return 1;
        }
    }
    int found = store_answer_peek(r->ctx->db, id, answer_check, &p, NULL);
    if (found == STORE_NOT_FOUND)
        return 0;
    if (found != STORE_OK)
        return -1;
    if (p.bad_utf8)
        *rc = res_error_kind(r, PERR_INTERNAL, "Could not build the response (the stored answer is not valid UTF-8)");
    else
        *rc = res_json_text(r, 200, p.json, p.json_len);
    free(p.own);
    return 1;
}

int h_ticket_ai_get(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    CHECK_ID(r);
    const char *id = r->params[0];
    char stored[IDENT_TICKET_STORED_MAX];
    if (!api_ticket_stored(r, stored))
        return 0;
    int rc = 0;
    int cached = answer_serve(r, stored, id, &rc);
    if (cached < 0)
        return res_error_kind(r, PERR_DB, NULL);
    if (cached)
        return rc;
    /* No cached answer: is a generation running? */
    char chan[120];
    snprintf(chan, sizeof chan, "ticket:%s", stored);
    int64_t job = 0, first = 0;
    int running = jobs_running_on(ctx->db, chan, &job, &first);
    if (running < 0)
        return res_error_kind(r, PERR_DB, NULL);
    json_t *o = json_pack("{s:s, s:b, s:s, s:n}", "ticketId", id, "exists", running == 0,
                          "status", running == 0 ? "running" : "none", "response");
    return res_json(r, 200, o);
}

/* Opens a seed 000 connection on the ticket and sends it the body, as a
 * WebSocket client would. *job is set when this caller must run it. A
 * refusal is in c->err (its error frame in fr). 0 / -1. */
static int ticket_send_body(struct request *r, struct proto_conn *c, const char *after,
                            const char *body, struct proto_frames *fr, struct proto_job **job)
{
    char path[160];
    snprintf(path, sizeof path, "/api/websocket/chat/%s%s", r->params[0], after ? after : "");
    *job = NULL;
    /* the tenant chooses the ticket (docs/tenants.md) */
    struct proto_client cl = { r->user_agent, r->remote_addr, r->client_version, NULL,
                               r->has_claims ? r->claims.tenant : NULL };
    if (proto_open_client(r->ctx, c, path, r->user, r->peer, &cl, fr) < 0)
        return -1;
    request_claims(r, NULL, c);           /* the role and token_budget claims */
    if (!body || c->err != PERR_OK)
        return 0;
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    int rc = text ? proto_message(r->ctx, c, text, strlen(text), fr, job) : -1;
    free(text);
    return rc;
}

/* Answers c's refusal (or a database error) with its kind's status. */
static int proto_refused(struct request *r, const struct proto_conn *c)
{
    return res_error_kind(r, c->err != PERR_OK ? c->err : PERR_DB, "%s", c->err_msg);
}

int h_ticket_ai_delete(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    CHECK_ID(r);
    const char *id = r->params[0];
    const char *admin_claim = ctx->cfg->admin_claim;
    if (admin_claim && *admin_claim && !(r->has_claims && r->claims.ticket_admin))
        return res_error_kind(r, PERR_FORBIDDEN, "Forbidden: deleting a ticket's answer needs "
                              "the %.100s claim (PARLEY_ADMIN_CLAIM)", admin_claim);
    char stored[IDENT_TICKET_STORED_MAX];
    if (!api_ticket_stored(r, stored))
        return 0;
    char buf[16];
    const char *regen = req_query(r, "regenerate", buf, sizeof buf);
    int again = regen && (!strcmp(regen, "1") || !strcmp(regen, "true"));
    int n = store_answer_delete_ticket(ctx->db, stored);
    if (n < 0)
        return res_error_kind(r, PERR_DB, NULL);
    if (!again)
        return res_json(r, 200, json_pack("{s:b, s:s, s:i}", "success", 1, "ticketId", id,
                                          "deleted", n));
    char *body = NULL;
    int g = store_ticket_get(ctx->db, stored, &body);
    if (g < 0)
        return res_error_kind(r, PERR_DB, NULL);
    if (g == 1)
        return res_error_kind(r, PERR_CONFLICT, "Ticket %s has no stored body to regenerate from", id);
    struct proto_conn c;
    struct proto_frames fr;
    struct proto_job *job = NULL;
    frames_init(&fr);
    int rc = ticket_send_body(r, &c, NULL, body, &fr, &job);
    free(body);
    if (rc < 0 || c.err != PERR_OK) {
        proto_refused(r, &c);
        proto_job_free(job);
    } else if (job && proto_job_submit(ctx, job) < 0) {   /* takes the job */
        res_error_kind(r, PERR_INTERNAL, "Could not start the generation");
    } else {
        res_json(r, 202, json_pack("{s:b, s:s, s:i, s:b}", "success", 1, "ticketId", id,
                                   "deleted", n, "regenerating", 1));
    }
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

int h_ticket_ai_stream(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    CHECK_ID(r);
    const char *id = r->params[0];
    char chan[120], buf[32], after_q[48] = "", stored[IDENT_TICKET_STORED_MAX];
    if (!api_ticket_stored(r, stored))
        return 0;
    snprintf(chan, sizeof chan, "ticket:%s", stored);

    /* Resume point: Last-Event-ID (EventSource reconnects), else ?after=N. */
    const char *from = r->last_event_id && *r->last_event_id ? r->last_event_id
                                                              : req_query(r, "after", buf, sizeof buf);
    long long after = -1;
    if (from) {
        char *end;
        after = strtoll(from, &end, 10);
        if (!*from || *end || after < 0)
            return res_error_kind(r, PERR_BAD_INPUT,
                                  "Last-Event-ID / after must be a non-negative integer");
        snprintf(after_q, sizeof after_q, "?after=%lld", after);
    }

    struct proto_conn c;
    struct proto_frames fr;
    struct proto_job *job = NULL;
    memset(&c, 0, sizeof c);
    frames_init(&fr);
    int64_t running = 0, first = 0;
    char *cached = NULL, *body = NULL;

    if (after >= 0) {
        /* A resume with nothing after it and nothing running: the stream is
         * over; 204 tells EventSource to stop reconnecting. */
        int jr = jobs_running_on(ctx->db, chan, &running, &first);
        int64_t last = evlog_last_seq(ctx->db, chan);
        if (jr < 0 || last < 0)
            return res_error_kind(r, PERR_DB, NULL);
        if (jr == 1 && last <= after)
            return res_empty(r, 204);
    } else {
        int jr = jobs_running_on(ctx->db, chan, &running, &first);
        if (jr < 0)
            return res_error_kind(r, PERR_DB, NULL);
        if (jr == 0) {
            snprintf(after_q, sizeof after_q, "?after=%lld", (long long)first);
        } else {
            int cr = store_answer_ticket_exists(ctx->db, stored, &cached);
            int br = cr == 0 ? store_ticket_get(ctx->db, stored, &body) : 1;
            if (cr < 0 || br < 0) {
                free(cached);
                free(body);
                return res_error_kind(r, PERR_DB, NULL);
            }
            if (cr == 0 && br == 1)
                return res_error_kind(r, PERR_NOT_FOUND,
                                      "No AI session for ticket %s: send its ticketBody over "
                                      "the WebSocket or long-poll first", id);
        }
    }
    if (ticket_send_body(r, &c, after_q[0] ? after_q : NULL, cached ? NULL : body, &fr, &job) < 0 ||
        c.err != PERR_OK) {
        proto_refused(r, &c);
        goto out;
    }
    if (cached) {
        /* No generation running: the cached answer, then done (seed 000). */
        frames_free(&fr);
        if (proto_ticket_cached(&fr, cached) < 0) {
            res_error_kind(r, PERR_INTERNAL, "Out of memory");
            goto out;
        }
        res_start(r, 200, "text/event-stream; charset=utf-8", NULL);
        for (int i = 0; i < fr.n; i++)
            if (res_printf(r, "data: %s\n\n", fr.v[i]) < 0 || res_flush(r) < 0)
                break;
        goto out;
    }
    if (job) {
        int s = proto_job_submit(ctx, job);   /* takes the job */
        job = NULL;
        if (s < 0) {
            res_error_kind(r, PERR_INTERNAL, "Could not start the generation");
            goto out;
        }
    }
    res_start(r, 200, "text/event-stream; charset=utf-8", NULL);
    if (res_printf(r, "retry: 2000\n\n") < 0 || res_flush(r) < 0)
        goto out;
    sse_stream(r, &c, 1, NULL, SSE_HEARTBEAT_MS);   /* takes c; may park r */
out:
    proto_job_free(job);
    free(cached);
    free(body);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}
