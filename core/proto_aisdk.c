/* proto_aisdk.c — the Vercel AI SDK's UI message stream (protocol "v1", as
 * the `ai` package 6.0.x reads it: docs/ai-sdk.md), served over plain HTTP
 * by fcgi/api_aisdk.c, which writes each frame as one "data:" line and
 * PROTO_AISDK_DONE after the last.
 *
 *   POST /api/ai-sdk/chat   what useChat's DefaultChatTransport sends:
 *     {"id": chat id, "messages": [UI messages], "trigger":
 *      "submit-message" | "regenerate-message", "messageId": ...}
 *   GET /api/ai-sdk/chat/{id}/stream   the running answer again, from its
 *     start (proto_aisdk_resume)
 *
 * The parts (one frame each) of an answer, from the job's events:
 *   "start" event  {"type":"start","messageId":<stored assistant message id>}
 *                  {"type":"start-step"}
 *                  {"type":"text-start","id":PROTO_AISDK_TEXT_ID}
 *   "token"        {"type":"text-delta","id":PROTO_AISDK_TEXT_ID,"delta":...}
 *   "done"         {"type":"text-end","id":...} {"type":"finish-step"}
 *                  {"type":"finish","finishReason":"stop"}
 *                  (a stopped generation: "finishReason":"other",
 *                   "messageMetadata":{"stopped":true})
 *   "error"        {"type":"error","errorText":...}
 *
 * The chat id is a Parley conversation of kind "sse" with metadata
 * {"client":"ai-sdk"} (created by the first POST, owned by the connection's
 * user; another user's id is "not found"). Only the last UI message of the
 * request is read (submit-message: it must be a user message with text
 * parts, stored before anything streams); the model's context is Parley's
 * stored history of the conversation (proto_job_conversation), not the
 * client's copy. regenerate-message answers the conversation's last stored
 * user message again. One answer at a time per chat: a POST while one runs
 * is a conflict. The answer runs on channel "conv:<id>" like seed 004's, so
 * the REST stop of /api/chat/sessions/{id}/stop reaches it.
 * State (c->state): "text_open" while a text part is open.
 * Runs in the thread that drives the connection (proto.h).
 */
#include "proto_impl.h"
#include "ident.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AISDK_SYSTEM "You are a helpful assistant."
#define AISDK_META "{\"client\":\"ai-sdk\"}"
#define DB_ERROR_MSG "Database error"
/* How far back regenerate-message looks for the last user message. */
#define AISDK_REGEN_SCAN 64

/* A refused request: records its kind and message on c (the transport
 * answers it with an HTTP status) and adds the protocol's error part. */
static int refuse(struct proto_conn *c, struct proto_frames *out, enum perr kind, const char *msg)
{
    proto_fail(c, kind, msg);
    return frames_push(out, json_pack("{s:s, s:s}", "type", "error", "errorText", msg));
}

static int refuse_db(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *out,
                     const char *msg)
{
    refuse(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, msg));
    return -1;
}

static int aisdk_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                      struct proto_frames *out)
{
    (void)ctx;
    (void)c;
    (void)cl;
    (void)out;
    return 0;      /* nothing is sent before the request */
}

int proto_aisdk_chat_id_valid(const char *id)
{
    /* "." and ".." cannot travel as the resume URL's path segment */
    return ident_name_valid(id, 63) && strspn(id, ".") != strlen(id);
}

/* The text of a UI message: its "text" parts joined (other parts are not
 * read). New string ("" when it has none), NULL on OOM. */
static char *ui_message_text(json_t *m)
{
    json_t *parts = json_object_get(m, "parts");
    size_t n = 0;
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p) {
        const char *t = proto_str(p, "text");
        if (t && !strcmp(proto_str(p, "type") ? proto_str(p, "type") : "", "text"))
            n += strlen(t);
    }
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    json_array_foreach(parts, i, p) {
        const char *t = proto_str(p, "text");
        if (t && !strcmp(proto_str(p, "type") ? proto_str(p, "type") : "", "text")) {
            memcpy(s + o, t, strlen(t));
            o += strlen(t);
        }
    }
    s[o] = '\0';
    return s;
}

/* The conversation of chat id for c's user: created (kind "sse", metadata
 * AISDK_META) when it does not exist yet. 0 usable; else the refusal was
 * added (1 refused, -1 database error). */
static int chat_conversation(struct parley_ctx *ctx, struct proto_conn *c, const char *id,
                             struct proto_frames *out)
{
    struct conversation conv;
    int g = store_conv_get(ctx->db, id, c->user, &conv);
    if (g == 1) {
        struct conversation nc;
        memset(&nc, 0, sizeof nc);
        str_copy(nc.id, sizeof nc.id, id);
        str_copy(nc.owner, sizeof nc.owner, c->user);
        str_copy(nc.kind, sizeof nc.kind, "sse");
        nc.metadata = AISDK_META;
        int cr = store_conv_create(ctx->db, &nc);
        if (cr == STORE_ERR)
            return refuse_db(ctx, c, out, "Database error: the chat was not created");
        g = store_conv_get(ctx->db, id, c->user, &conv);   /* ours, or another user's */
    }
    if (g < 0)
        return refuse_db(ctx, c, out, DB_ERROR_MSG);
    if (g == 1)
        return refuse(c, out, PERR_NOT_FOUND, "Chat not found") < 0 ? -1 : 1;
    int closed = !strcmp(conv.status, "closed");
    store_conv_free(&conv);
    if (closed)
        return refuse(c, out, PERR_CONFLICT, "Chat is closed") < 0 ? -1 : 1;
    return 0;
}

/* regenerate-message: the id of the conversation's last stored user
 * message into id. 0 found, 1 none, -1 database error. */
static int last_user_message(struct parley_ctx *ctx, const char *conv_id, char id[64])
{
    struct message *m = NULL;
    int n = 0;
    if (store_msg_context(ctx->db, conv_id, AISDK_REGEN_SCAN, &m, &n) < 0)
        return -1;
    int found = 1;
    for (int i = n - 1; i >= 0 && found; i--)
        if (!strcmp(m[i].role, "user")) {
            str_copy(id, 64, m[i].id);
            found = 0;
        }
    store_msgs_free(m, n);
    return found;
}

/* Checks the request's shape; 0 with *id, *trigger and *last (borrowed
 * from msg; *last is NULL for regenerate-message) set, else 1 after the
 * refusal. */
static int valid_request(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                         struct proto_frames *out, const char **id, int *regen, json_t **last,
                         int *rc)
{
    (void)ctx;
    *rc = 0;
    *id = proto_str(msg, "id");
    if (!*id || !proto_aisdk_chat_id_valid(*id)) {
        *rc = refuse(c, out, PERR_BAD_INPUT,
                     "Invalid data: id must be 1-63 letters, digits, '-', '_' or '.'");
        return 1;
    }
    json_t *jt = json_object_get(msg, "trigger");
    const char *t = json_string_value(jt);
    if (!jt || json_is_null(jt) || (t && !strcmp(t, "submit-message")))
        *regen = 0;
    else if (t && !strcmp(t, "regenerate-message"))
        *regen = 1;
    else {
        *rc = refuse(c, out, PERR_BAD_INPUT,
                     "Invalid data: trigger must be \"submit-message\" or \"regenerate-message\"");
        return 1;
    }
    json_t *msgs = json_object_get(msg, "messages");
    if (!json_is_array(msgs)) {
        *rc = refuse(c, out, PERR_BAD_INPUT, "Invalid data: messages must be an array of UI messages");
        return 1;
    }
    *last = NULL;
    if (*regen)
        return 0;
    json_t *m = json_array_get(msgs, json_array_size(msgs) ? json_array_size(msgs) - 1 : 0);
    const char *role = proto_str(m, "role");
    if (!json_is_object(m) || !role || strcmp(role, "user") != 0 ||
        !json_is_array(json_object_get(m, "parts"))) {
        *rc = refuse(c, out, PERR_BAD_INPUT,
                     "Invalid data: the last message must be a user message with parts");
        return 1;
    }
    /* its id becomes the stored message's metadata: bounded like any
     * client-given metadata, checked before anything is stored */
    const char *uid = proto_str(m, "id");
    if (uid && strlen(uid) > PROTO_AISDK_UI_ID_MAX) {
        char e[96];
        snprintf(e, sizeof e, "Invalid data: a message id must be at most %d bytes",
                 PROTO_AISDK_UI_ID_MAX);
        *rc = refuse(c, out, PERR_BAD_INPUT, e);
        return 1;
    }
    *last = m;
    return 0;
}

/* Stores the user message text of UI message m into conversation conv_id
 * (its UI id in the metadata); um->id is set. 0, 1 refused, -1 db error. */
static int store_user_message(struct parley_ctx *ctx, struct proto_conn *c, const char *conv_id,
                              json_t *m, struct message *um, struct proto_frames *out)
{
    char *text = ui_message_text(m);
    if (!text) {
        refuse(c, out, PERR_INTERNAL, "Out of memory");
        return -1;
    }
    if (!*text) {
        free(text);
        return refuse(c, out, PERR_BAD_INPUT,
                      "Invalid data: the last message has no text part") < 0 ? -1 : 1;
    }
    size_t chars = proto_utf8_len(text);
    if (chars > (size_t)ctx->cfg->max_message_length) {
        char e[128];
        snprintf(e, sizeof e, "Invalid data: message too long (%zu characters, max %d)", chars,
                 ctx->cfg->max_message_length);
        free(text);
        return refuse(c, out, PERR_TOO_LONG, e) < 0 ? -1 : 1;
    }
    json_t *meta = json_object();
    const char *uid = proto_str(m, "id");
    if (meta && uid && *uid)
        json_object_set_new(meta, "ui_message_id", json_string(uid));
    char *mt = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    store_msg_init(um);
    str_copy(um->conversation_id, sizeof um->conversation_id, conv_id);
    str_copy(um->role, sizeof um->role, "user");
    um->content = text;
    um->metadata = mt;
    int rc = store_msg_add(ctx->db, um);
    um->content = NULL;
    um->metadata = NULL;
    free(text);
    free(mt);
    if (rc < 0)
        return refuse_db(ctx, c, out, "Database error: the message was not saved");
    return 0;
}

static int aisdk_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                         struct proto_frames *out, struct proto_job **jobp)
{
    if (!json_is_object(msg))
        return refuse(c, out, PERR_BAD_INPUT, "Invalid data: expected a JSON object");
    if (proto_following(c) && c->job_id)
        return refuse(c, out, PERR_CONFLICT,
                      "A response is still being generated; wait for it to finish");
    const char *id;
    int regen, rc;
    json_t *last;
    if (valid_request(ctx, c, msg, out, &id, &regen, &last, &rc))
        return rc;
    int r = chat_conversation(ctx, c, id, out);
    if (r != 0)
        return r < 0 ? -1 : 0;
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", id);
    int64_t running = 0, first = 0;
    int ro = jobs_running_on(ctx->db, chan, &running, &first);
    if (ro < 0)
        return refuse_db(ctx, c, out, DB_ERROR_MSG);
    if (ro == 0)
        return refuse(c, out, PERR_CONFLICT,
                      "A response is still being generated; wait for it to finish or stop it");
    char answering[64] = "";
    if (regen) {
        int f = last_user_message(ctx, id, answering);
        if (f < 0)
            return refuse_db(ctx, c, out, DB_ERROR_MSG);
        if (f == 1)
            return refuse(c, out, PERR_BAD_INPUT, "Nothing to regenerate: the chat has no user message");
    }
    char why[160];
    int ok = proto_budget_ok(ctx, c, why, sizeof why);
    if (ok == 0)
        return refuse(c, out, PERR_BUDGET_EXHAUSTED, why);
    if (ok > 0)
        ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        if (ok == 0)
            return refuse(c, out, PERR_RATE_LIMITED, "Rate limit exceeded");
        return refuse_db(ctx, c, out, DB_ERROR_MSG);
    }
    if (!regen) {
        struct message um;
        int s = store_user_message(ctx, c, id, last, &um, out);
        if (s != 0)
            return s < 0 ? -1 : 0;
        str_copy(answering, sizeof answering, um.id);
    }
    struct proto_job *job = proto_job_new();
    if (!job || proto_job_conversation(ctx, job, id, answering) < 0) {
        proto_job_free(job);
        return refuse_db(ctx, c, out, DB_ERROR_MSG);
    }
    job->req.llm.system = AISDK_SYSTEM;
    json_object_del(c->state, "text_open");
    if (proto_start(ctx, c, job, jobp) < 0)
        return refuse_db(ctx, c, out, "Could not start the generation");
    return 0;
}

int proto_aisdk_resume(struct parley_ctx *ctx, struct proto_conn *c, const char *chat_id)
{
    c->err = PERR_OK;
    c->err_msg[0] = '\0';
    if (!proto_aisdk_chat_id_valid(chat_id))
        return 1;
    struct conversation conv;
    int g = store_conv_get(ctx->db, chat_id, c->user, &conv);
    if (g < 0) {
        proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (g == 1)
        return 1;                 /* a new chat, or another user's: nothing runs for you */
    store_conv_free(&conv);
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", chat_id);
    int64_t job = 0, first = 0;
    int r = jobs_running_on(ctx->db, chan, &job, &first);
    if (r < 0) {
        proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (r == 1)
        return 1;
    json_object_del(c->state, "text_open");
    proto_follow(c, chan, job, first);
    return 0;
}

static int push_type(struct proto_frames *out, const char *type)
{
    return frames_push(out, json_pack("{s:s}", "type", type));
}

static int aisdk_event(struct parley_ctx *ctx, struct proto_conn *c,
                       const struct evlog_event *ev, struct proto_frames *out)
{
    (void)ctx;
    int open = json_is_true(json_object_get(c->state, "text_open"));
    if (!strcmp(ev->type, "start")) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        const char *mid = proto_str(d, "message_id");
        int rc = frames_push(out, json_pack("{s:s, s:s}", "type", "start", "messageId",
                                            mid ? mid : ""));
        json_decref(d);
        if (rc == 0)
            rc = push_type(out, "start-step");
        if (rc == 0)
            rc = frames_push(out, json_pack("{s:s, s:s}", "type", "text-start", "id",
                                            PROTO_AISDK_TEXT_ID));
        json_object_set_new(c->state, "text_open", json_true());
        return rc;
    }
    if (!strcmp(ev->type, "token")) {
        int rc = 0;
        if (!open) {              /* no start seen (not what the runner writes) */
            rc = frames_push(out, json_pack("{s:s, s:s}", "type", "text-start", "id",
                                            PROTO_AISDK_TEXT_ID));
            json_object_set_new(c->state, "text_open", json_true());
        }
        if (rc == 0)
            rc = frames_push(out, json_pack("{s:s, s:s, s:s%}", "type", "text-delta", "id",
                                            PROTO_AISDK_TEXT_ID, "delta", ev->data,
                                            ev->data_len));
        return rc;
    }
    if (!strcmp(ev->type, "done")) {
        int rc = 0;
        if (open)
            rc = frames_push(out, json_pack("{s:s, s:s}", "type", "text-end", "id",
                                            PROTO_AISDK_TEXT_ID));
        json_object_del(c->state, "text_open");
        if (rc == 0)
            rc = push_type(out, "finish-step");
        if (rc == 0)
            rc = frames_push(out, proto_event_stopped(ev)
                             ? json_pack("{s:s, s:s, s:{s:b}}", "type", "finish", "finishReason",
                                         "other", "messageMetadata", "stopped", 1)
                             : json_pack("{s:s, s:s}", "type", "finish", "finishReason", "stop"));
        return rc;
    }
    if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        json_object_del(c->state, "text_open");
        int rc = frames_push(out, json_pack("{s:s, s:s}", "type", "error", "errorText",
                                            m ? m : "the answer could not be generated"));
        free(m);
        return rc;
    }
    return 0;
}

const struct proto_ops proto_aisdk_ops = { "aisdk", aisdk_open, aisdk_message, aisdk_event };
