/* api_openai.c — the OpenAI-compatible API: the transport only
 * (docs/openai.md).
 *
 *   POST /v1/chat/completions  one JSON body, or with "stream": true
 *                              Server-Sent Events ending in data: [DONE]
 *   GET  /v1/models            the configured models
 *
 * The protocol (authentication, validation, caching and single flight, the
 * generation, every chunk and error body) is core/proto_openai.c. This file
 * hands it the Authorization header and the raw body and writes what it
 * makes: a refusal as the JSON error body with the status of its failure
 * kind (fcgi/status.h) and Retry-After for a 429; a stream's chunks as one
 * "data:" line each, flushed on its own. The response headers of a stream
 * wait for its first chunk, so an upstream that fails before any text
 * still gets a 5xx with the error body — unless STREAM_HEARTBEAT_MS pass
 * first: then the headers (200) and a ": keepalive" comment go out, and a
 * later failure is an error chunk. A stream that failed once its headers
 * were sent ends after the error chunk, without data: [DONE]. Every 200 carries
 * X-Parley-Cache: hit | miss | shared | bypass. An answer without stream
 * is written once it ended. When a streaming client leaves, the request
 * stops following its generation, which is stopped when nobody else
 * follows it (proto_openai_leave). While it follows the generation (with
 * "stream" or not) the request holds no thread: it waits on the parking
 * hub (fcgi/sse_park.h), which writes its chunks and its end.
 */
#include "handlers.h"
#include "sse_park.h"
#include "proto.h"
#include "proto_openai.h"
#include "status.h"
#include "ident.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_HEARTBEAT_MS 15000

/* The status line's extra headers: X-Parley-Cache and/or Retry-After. */
static void add_header(struct request *r, const char *name, const char *value)
{
    char *h = r->res->extra_headers;
    size_t used = strlen(h);
    snprintf(h + used, sizeof r->res->extra_headers - used, "%s: %s\r\n", name, value);
}

static void json_error(struct request *r, enum perr kind, const char *body)
{
    if (body)
        res_json_text(r, http_status_of(kind), body, strlen(body));
    else
        res_error_kind(r, kind, "%s", perr_text(kind));
}

/* Authenticates; 0 with r->user/r->peer set and claims, else answered. */
static int authenticate(struct request *r, struct auth_claims *cl, const char *endpoint)
{
    char *body = NULL;
    enum perr kind = PERR_OK;
    int a = proto_openai_auth(r->ctx, r->authorization, cl, &body, &kind);
    if (a == 0) {
        str_copy(r->user, sizeof r->user, cl->sub);
        ident_peer(r->peer, sizeof r->peer, r->user, r->remote_addr);
        return 0;
    }
    if (kind == PERR_UNAUTHORIZED)
        add_header(r, "WWW-Authenticate", "Bearer");
    json_error(r, kind, body);
    free(body);
    proto_openai_count(r->ctx, endpoint, perr_name(kind));
    return -1;
}

int h_openai_models(struct request *r)
{
    struct auth_claims cl;
    if (authenticate(r, &cl, "models") < 0)
        return 0;
    json_t *o = proto_openai_models(r->ctx->cfg);
    proto_openai_count(r->ctx, "models", o ? "ok" : "internal");
    return res_json(r, 200, o);
}

/* One chat request from its first frames to its end: on the heap, since
 * a followed one outlives the handler (sse_follow may park it). */
struct stream {
    struct request *r;
    struct proto_conn *c;        /* &conn */
    struct proto_conn conn;
    int stream, started, gone;
    char *held;                  /* no stream: the last frame; stream: a refusal */
};

static int start_stream(struct stream *s)
{
    const char *cs = proto_openai_cache_state(s->c);
    if (cs)
        add_header(s->r, "X-Parley-Cache", cs);
    s->started = 1;
    return res_start(s->r, 200, "text/event-stream; charset=utf-8", NULL) < 0 ||
           res_flush(s->r) < 0;
}

static int on_frame(void *ud, const char *frame, int64_t seq)
{
    struct stream *s = ud;
    (void)seq;
    if (!s->stream || (!s->started && s->c->err != PERR_OK)) {
        free(s->held);
        s->held = strdup(frame);
        return 0;
    }
    if (!s->started && start_stream(s))
        return s->gone = 1;
    if (res_printf(s->r, "data: %s\n\n", frame) < 0 || res_flush(s->r) < 0)
        return s->gone = 1;
    return 0;
}

static int on_idle(void *ud)
{
    struct stream *s = ud;
    if (!s->stream)
        return 0;
    if (!s->started && start_stream(s))
        return s->gone = 1;
    if (res_printf(s->r, ": keepalive\n\n") < 0 || res_flush(s->r) < 0)
        return s->gone = 1;
    return 0;
}

/* sse_follow's end (ud: the struct stream): the stream's tail, or the
 * whole answer / the refusal when no header went out yet; then the
 * client's leave and the request's count. ctx: the thread's that ran the
 * follow's last step. */
static void on_end(void *ud, struct parley_ctx *ctx, int end)
{
    struct stream *s = ud;
    struct request *r = s->r;
    struct proto_conn *c = s->c;
    if (s->gone || end == FOLLOW_LEFT) {
        s->gone = 1;
    } else if (s->started) {
        if (!proto_openai_failed(c) && c->err == PERR_OK && end == FOLLOW_OVER)
            s->gone = res_printf(r, "data: [DONE]\n\n") < 0 || res_flush(r) < 0;
    } else if (c->err != PERR_OK && s->held) {
        json_error(r, c->err, s->held);         /* failed before any chunk */
    } else if (end != FOLLOW_OVER || !s->held) {
        enum perr kind = end == FOLLOW_STOPPED ? PERR_UNAVAILABLE
                       : end == FOLLOW_ERROR ? PERR_DB : PERR_INTERNAL;
        char *b = proto_openai_error_body(kind, perr_text(kind), NULL);
        json_error(r, kind, b);
        free(b);
    } else {
        const char *cs = proto_openai_cache_state(c);   /* the whole answer, no stream */
        if (cs)
            add_header(r, "X-Parley-Cache", cs);
        res_json_text(r, 200, s->held, strlen(s->held));
    }
    proto_openai_leave(ctx, c, s->gone);
    proto_openai_count(ctx, "chat.completions", proto_openai_outcome(c, s->gone));
}

static void stream_free(void *ud)
{
    struct stream *s = ud;
    free(s->held);
    proto_conn_cleanup(&s->conn);
    free(s);
}

static const struct sse_ops stream_ops = { on_frame, on_idle, on_end, stream_free };

int h_openai_chat(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    struct auth_claims cl;
    if (authenticate(r, &cl, "chat.completions") < 0)
        return 0;
    struct stream *s = calloc(1, sizeof *s);
    if (!s) {
        char *b = proto_openai_error_body(PERR_INTERNAL, "Out of memory", NULL);
        json_error(r, PERR_INTERNAL, b);
        free(b);
        return 0;
    }
    s->r = r;
    s->c = &s->conn;
    struct proto_conn *c = s->c;
    struct proto_frames fr;
    struct proto_job *job = NULL;
    frames_init(&fr);
    int rc = proto_open(ctx, c, PROTO_OPENAI_PATH, r->user, r->peer, &fr);
    if (rc == 0) {
        c->admin = cl.admin;
        if (cl.token_budget >= 0) {
            c->has_token_budget = 1;
            c->token_budget = cl.token_budget;
        }
        rc = proto_message(ctx, c, r->body ? r->body : "", r->body ? r->body_len : 0, &fr,
                           &job);
    }
    s->stream = proto_openai_streaming(c);
    if (rc < 0 || c->err != PERR_OK) {
        enum perr kind = c->err != PERR_OK ? c->err : PERR_DB;
        int ra = proto_openai_retry_after(c);
        if (ra > 0) {
            char v[24];
            snprintf(v, sizeof v, "%d", ra);
            add_header(r, "Retry-After", v);
        }
        json_error(r, kind, fr.n > 0 ? fr.v[0] : NULL);
        goto out;
    }
    if (job) {
        int sub = proto_job_submit(ctx, job);   /* takes the job; on failure it was failed */
        job = NULL;
        if (sub < 0) {
            char *b = proto_openai_error_body(PERR_INTERNAL, "Could not start the generation",
                                              NULL);
            json_error(r, PERR_INTERNAL, b);
            free(b);
            goto out;
        }
    }
    for (int i = 0; i < fr.n && !s->gone; i++)
        on_frame(s, fr.v[i], 0);
    frames_free(&fr);
    if (!s->gone && proto_following(c)) {
        sse_follow(r, c, &stream_ops, s, &parley_stopping, STREAM_HEARTBEAT_MS);   /* takes s */
    } else {
        on_end(s, ctx, FOLLOW_OVER);
        stream_free(s);
    }
    return 0;
out:
    proto_openai_count(ctx, "chat.completions", proto_openai_outcome(c, s->gone));
    proto_job_free(job);
    frames_free(&fr);
    stream_free(s);
    return 0;
}
