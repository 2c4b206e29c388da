/* proto_send.c — seed 004: POST /api/chat/send {conversationId, content},
 * answered as Server-Sent Events by fcgi/api_send.c (the transport writes
 * each frame as one "data:" line).
 *
 *   client (the request body, once): {"conversationId": "...", "content": "..."}
 *   server: {"content": "..."}                               each piece
 *           {"done": true, "messageId": ..., "metadata":
 *            {"tokens_used", "processing_time", "model"}}    the end
 *           {"error": "...", "done": true, "code": "..."}   a failure
 *                                   (code: docs/errors.md)
 *           {"done": true, "stopped": true, "messageId", "metadata":
 *            {..., "stopped": true}}                         stopped (docs/stop.md:
 *                                   POST /api/chat/sessions/{id}/stop)
 * The conversation (store.h) must exist, belong to the connection's user
 * (any in open mode, user "") and not be closed. The user message is
 * stored before anything streams; the generation runs on channel
 * "conv:<id>" (prompt key = the user message's id) with the conversation's
 * last PARLEY_CONTEXT_MESSAGES messages as context, and the runner stores
 * the assistant message in the same transaction as "done".
 * A refused request produces the error frame and sets c->err (bad input,
 * not found, closed → conflict, rate limited, database): before the stream
 * starts the transport answers that with an HTTP status instead.
 * State (c->state): "message_id", the assistant message id from the job's
 * "start" event. Runs in the thread that drives the connection (proto.h).
 */
#include "proto_impl.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEND_SYSTEM "You are a helpful assistant."
#define DB_ERROR_MSG "Database error"

/* The protocol's error frame for a refused request; records its kind on c. */
static int error_frame(struct proto_conn *c, struct proto_frames *out, enum perr kind,
                       const char *msg)
{
    proto_fail(c, kind, msg);
    return frames_push(out, json_pack("{s:s, s:b, s:s}", "error", msg, "done", 1, "code",
                                      perr_code(kind)));
}

static int send_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                       struct proto_frames *out)
{
    (void)ctx;
    (void)c;
    (void)out;
    return 0;      /* nothing is sent before the request */
}

/* Checks the request; returns the conversation id (borrowed from msg) or
 * NULL after the error frame (*rc = its result). */
static const char *valid_request(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                                 struct proto_frames *out, int *rc)
{
    json_t *jid = json_object_get(msg, "conversationId");
    json_t *jc = json_object_get(msg, "content");
    *rc = 0;
    if (!json_is_string(jid) || !*json_string_value(jid)) {
        *rc = error_frame(c, out, PERR_BAD_INPUT,
                          "Invalid data: conversationId must be a non-empty string");
        return NULL;
    }
    if (!json_is_string(jc) || !*json_string_value(jc)) {
        *rc = error_frame(c, out, PERR_BAD_INPUT, "Invalid data: content must be a non-empty string");
        return NULL;
    }
    size_t chars = proto_utf8_len(json_string_value(jc));
    if (chars > (size_t)ctx->cfg->max_message_length) {
        char m[128];
        snprintf(m, sizeof m, "Invalid data: content too long (%zu characters, max %d)", chars,
                 ctx->cfg->max_message_length);
        *rc = error_frame(c, out, PERR_TOO_LONG, m);
        return NULL;
    }
    return json_string_value(jid);
}

/* The conversation may take a message: 0 yes, else the error frame was
 * added (1 refused, -1 database error). */
static int conversation_open(struct parley_ctx *ctx, struct proto_conn *c, const char *conv_id,
                             struct proto_frames *out)
{
    struct conversation conv;
    int g = store_conv_get(ctx->db, conv_id, c->user, &conv);
    if (g < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (g == 1)
        return error_frame(c, out, PERR_NOT_FOUND, "Conversation not found") < 0 ? -1 : 1;
    int closed = !strcmp(conv.status, "closed");
    store_conv_free(&conv);
    if (closed)
        return error_frame(c, out, PERR_CONFLICT, "Conversation is closed") < 0 ? -1 : 1;
    return 0;
}

static int send_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                        struct proto_frames *out, struct proto_job **jobp)
{
    if (!json_is_object(msg))
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid data: expected a JSON object");
    if (proto_following(c) && c->job_id)
        return error_frame(c, out, PERR_CONFLICT,
                           "A response is still being generated; wait for it to finish");
    int rc;
    const char *conv_id = valid_request(ctx, c, msg, out, &rc);
    if (!conv_id)
        return rc;
    int r = conversation_open(ctx, c, conv_id, out);
    if (r != 0)
        return r < 0 ? -1 : 0;
    char why[160];
    int ok = proto_budget_ok(ctx, c, why, sizeof why);
    if (ok == 0)
        return error_frame(c, out, PERR_BUDGET_EXHAUSTED, why);
    if (ok > 0)
        ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        if (ok == 0)
            return error_frame(c, out, PERR_RATE_LIMITED, "Rate limit exceeded");
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }

    /* The user message is saved before anything streams, in ONE
     * transaction with the job's claim (one commit on the request's path
     * instead of two; the message is not kept when no generation could
     * start for it, and nobody sees it before its job exists). */
    if (db_begin(ctx->db) < 0) {
        error_frame(c, out, db_err_kind(ctx->db),
                    db_err_text(ctx->db, "Database error: the message was not saved"));
        return -1;
    }
    struct message um;
    store_msg_init(&um);
    str_copy(um.conversation_id, sizeof um.conversation_id, conv_id);
    str_copy(um.role, sizeof um.role, "user");
    um.content = (char *)proto_str(msg, "content");      /* only read */
    if (store_msg_add(ctx->db, &um) < 0) {
        error_frame(c, out, db_err_kind(ctx->db),
                    db_err_text(ctx->db, "Database error: the message was not saved"));
        db_rollback(ctx->db);
        return -1;
    }
    struct proto_job *job = proto_job_new();
    if (!job || proto_job_conversation(ctx, job, conv_id, um.id) < 0) {
        proto_job_free(job);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        db_rollback(ctx->db);
        return -1;
    }
    job->req.llm.system = SEND_SYSTEM;
    json_object_del(c->state, "message_id");
    if (proto_start(ctx, c, job, jobp) < 0) {
        error_frame(c, out, db_err_kind(ctx->db),
                    db_err_text(ctx->db, "Could not start the generation"));
        db_rollback(ctx->db);
        return -1;
    }
    if (db_commit(ctx->db) < 0) {
        /* neither the message nor the claim happened: nothing to follow */
        error_frame(c, out, db_err_kind(ctx->db),
                    db_err_text(ctx->db, "Database error: the message was not saved"));
        proto_job_free(*jobp);
        *jobp = NULL;
        proto_unfollow(c);
        return -1;
    }
    return 0;
}

static int send_event(struct parley_ctx *ctx, struct proto_conn *c,
                      const struct evlog_event *ev, struct proto_frames *out)
{
    (void)ctx;
    if (!strcmp(ev->type, "start")) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        const char *mid = proto_str(d, "message_id");
        json_object_set_new(c->state, "message_id", json_string(mid ? mid : ""));
        json_decref(d);
        return 0;                        /* no frame: the seed has no start event */
    }
    if (!strcmp(ev->type, "token"))
        return frames_push(out, proto_with_seq(c, ev, json_pack("{s:s%}", "content", ev->data,
                                                             ev->data_len)));
    if (!strcmp(ev->type, "done")) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        json_t *meta = json_pack("{s:O?, s:f, s:O?}", "tokens_used", json_object_get(d, "tokens"),
                                 "processing_time",
                                 json_integer_value(json_object_get(d, "processing_ms")) / 1000.0,
                                 "model", json_object_get(d, "model"));
        const char *mid = proto_str(c->state, "message_id");
        int stopped = json_is_true(json_object_get(d, "stopped"));
        if (meta && stopped)
            json_object_set_new(meta, "stopped", json_true());
        json_t *o = json_pack("{s:b, s:s, s:o}", "done", 1, "messageId", mid ? mid : "",
                              "metadata", meta ? meta : json_object());
        if (o && stopped)
            json_object_set_new(o, "stopped", json_true());
        json_decref(d);
        return frames_push(out, proto_with_seq(c, ev, o));
    }
    if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        int rc = frames_push(out, proto_with_seq(c, ev, json_pack("{s:s, s:b, s:s}", "error",
                                                             m ? m : "the answer could not be generated",
                                                             "done", 1, "code", code)));
        free(m);
        return rc;
    }
    return 0;
}

const struct proto_ops proto_send_ops = { "send", send_open, send_message, send_event };
