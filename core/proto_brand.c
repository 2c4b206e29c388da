/* proto_brand.c — seed 002: the multi-brand chatbot, WS /ws/chat/{brand_id}.
 *
 *   server, first:  {"type":"welcome","data":{"message","brand_id","brand_name"}}
 *                   or, for an unknown or inactive brand,
 *                   {"type":"error","data":{"message":"Brand 'x' not found or inactive",
 *                    "code":"not_found"}}
 *                   and the connection closes (1008)
 *   client:         {"type":"chat","data":{"message","conversation_id"?,"user_id"?,"voice"?}}
 *                   {"type":"ping","data":{}}  ->  {"type":"pong","data":{"timestamp"}}
 *   server:         {"type":"chunk","data":{"content","is_final":false,"conversation_id",
 *                    "suggested_products":null,"confidence_score":null}}...
 *                   {"type":"complete","data":{"content":"","is_final":true,
 *                    "conversation_id","suggested_products":[...],"confidence_score"}}
 *                   {"type":"error","data":{"message","code"}} (code: docs/errors.md)
 *   client:         {"type":"stop","data":{"conversation_id"?}}: stops the
 *                   answer being generated (this connection's, or the
 *                   named conversation's); every viewer gets "complete"
 *                   with "data.stopped": true (docs/stop.md)
 * A chat continues data.conversation_id when it is a conversation of this
 * brand owned by c->user, else starts a new one (kind 'brand'); chunks tell
 * the client its id. The user message is stored, product suggestions are
 * computed from it at once (catalog_suggest) and kept in c->state for the
 * "complete" frame, and one job runs on channel "conv:<conversation id>"
 * with the brand's system prompt, the suggested products and the
 * conversation's last messages. voice: true asks for one sentence and makes
 * the runner stop at the end of the first one.
 * State (c->state): "suggested_products" (array) and "confidence_score"
 * (number or null) of the message being answered. ?after=N is ignored: the
 * protocol has no way to name a conversation when connecting.
 * Runs in the thread that drives the connection (proto.h).
 */
#include "proto_impl.h"
#include "catalog.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUGGESTIONS 3
#define DB_ERROR_MSG "Database error: please try again"
#define VOICE_RULE "Answer in exactly one sentence."

/* The protocol's error frame; records the failure's kind on c (c NULL:
 * a generation's error event, not a failure of the client's request). */
static int error_frame_code(struct proto_frames *out, const char *msg, const char *code)
{
    return frames_push(out, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "data", "message",
                                      msg, "code", code));
}

static int error_frame(struct proto_conn *c, struct proto_frames *out, enum perr kind,
                       const char *msg)
{
    if (c)
        proto_fail(c, kind, msg);
    return error_frame_code(out, msg, perr_code(kind));
}

static void close_with(struct proto_conn *c, int code, const char *reason)
{
    c->close = 1;
    c->close_code = code;
    str_copy(c->close_reason, sizeof c->close_reason, reason);
}

/* Loads c's brand. 0 active (b filled: catalog_brand_free it); 1 unknown
 * or inactive: the error frame was added and the connection is to close;
 * -1 database error (error frame added). */
static int brand_load(struct parley_ctx *ctx, struct proto_conn *c, struct brand *b,
                      struct proto_frames *out)
{
    int r = catalog_brand_get(ctx->db, c->param, b);
    if (r < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (r == 0 && b->active)
        return 0;
    catalog_brand_free(b);
    char m[160];
    json_t *shown = json_string(c->param);     /* NULL: the path held bytes that are not UTF-8 */
    if (shown)
        snprintf(m, sizeof m, "Brand '%.*s' not found or inactive", utf8_cut(c->param, 64), c->param);
    else
        str_copy(m, sizeof m, "Brand not found or inactive");
    json_decref(shown);
    close_with(c, 1008, "brand not found or inactive");
    return error_frame(c, out, PERR_NOT_FOUND, m) < 0 ? -1 : 1;
}

static int brand_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                       struct proto_frames *out)
{
    struct brand b;
    int r = brand_load(ctx, c, &b, out);
    if (r < 0)
        close_with(c, 1011, "database error");
    if (r != 0)
        return r < 0 ? -1 : 0;
    char *welcome = catalog_welcome(&b);
    int rc = frames_push(out, welcome ? json_pack("{s:s, s:{s:s, s:s, s:s}}", "type", "welcome",
                                                  "data", "message", welcome, "brand_id", b.id,
                                                  "brand_name", b.name) : NULL);
    free(welcome);
    catalog_brand_free(&b);
    return rc;
}

/* ---- events ---- */

static const char *conversation_of(const struct proto_conn *c)
{
    return strncmp(c->channel, "conv:", 5) ? c->channel : c->channel + 5;
}

static int brand_event(struct parley_ctx *ctx, struct proto_conn *c,
                       const struct evlog_event *ev, struct proto_frames *out)
{
    (void)ctx;
    json_t *o;
    if (!strcmp(ev->type, "token")) {
        o = json_pack("{s:s, s:{s:s%, s:b, s:s, s:n, s:n}}", "type", "chunk", "data",
                      "content", ev->data, ev->data_len, "is_final", 0,
                      "conversation_id", conversation_of(c),
                      "suggested_products", "confidence_score");
    } else if (!strcmp(ev->type, "done")) {
        json_t *products = json_object_get(c->state, "suggested_products");
        json_t *conf = json_object_get(c->state, "confidence_score");
        o = json_pack("{s:s, s:{s:s, s:b, s:s, s:o, s:o}}", "type", "complete", "data",
                      "content", "", "is_final", 1, "conversation_id", conversation_of(c),
                      "suggested_products", json_is_array(products) ? json_incref(products) : json_array(),
                      "confidence_score", json_is_number(conf) ? json_incref(conf) : json_null());
        if (o && proto_event_stopped(ev))
            json_object_set_new(json_object_get(o, "data"), "stopped", json_true());
    } else if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        int rc = error_frame_code(out, m ? m : "the answer could not be generated", code);
        free(m);
        return rc;
    } else {
        return 0;         /* "start" has no frame in this protocol */
    }
    return frames_push(out, proto_with_seq(c, ev, o));
}

/* ---- client messages ---- */

struct chat_req {
    const char *text;
    const char *conversation_id;   /* NULL: none */
    const char *user_id;           /* NULL: none */
    int voice;
};

/* Validates a "chat" frame's data into r; else adds the error frame and
 * returns 1 (or -1 when even that failed). */
static int parse_chat(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg, struct chat_req *r,
                      struct proto_frames *out)
{
    memset(r, 0, sizeof *r);
    json_t *d = json_object_get(msg, "data");
    if (!d)
        return error_frame(c, out, PERR_BAD_INPUT, "Missing field 'data'") < 0 ? -1 : 1;
    if (!json_is_object(d))
        return error_frame(c, out, PERR_BAD_INPUT, "Field 'data' must be an object") < 0 ? -1 : 1;
    const char *err = NULL;
    enum perr kind = PERR_BAD_INPUT;
    char buf[128];
    json_t *jm = json_object_get(d, "message");
    json_t *jc = json_object_get(d, "conversation_id");
    json_t *ju = json_object_get(d, "user_id");
    json_t *jv = json_object_get(d, "voice");
    r->text = json_string_value(jm);
    if (!jm || json_is_null(jm))
        err = "Missing field 'data.message'";
    else if (!r->text)
        err = "Field 'data.message' must be a string";
    else if (strlen(r->text) != json_string_length(jm))
        err = "Field 'data.message' contains a NUL character";
    else if (str_blank(r->text))
        err = "Field 'data.message' must not be empty";
    else if (proto_utf8_len(r->text) > (size_t)ctx->cfg->max_message_length) {
        snprintf(buf, sizeof buf, "Message too long (max %d characters)",
                 ctx->cfg->max_message_length);
        err = buf;
        kind = PERR_TOO_LONG;
    } else if (jc && !json_is_null(jc) && !json_is_string(jc))
        err = "Field 'data.conversation_id' must be a string";
    else if (ju && !json_is_null(ju) && !json_is_string(ju))
        err = "Field 'data.user_id' must be a string";
    else if (ju && json_is_string(ju) && json_string_length(ju) > 128)
        err = "Field 'data.user_id' is too long (max 128 bytes)";
    else if (jv && !json_is_null(jv) && !json_is_boolean(jv))
        err = "Field 'data.voice' must be a boolean";
    if (err)
        return error_frame(c, out, kind, err) < 0 ? -1 : 1;
    r->conversation_id = json_string_value(jc);
    r->user_id = json_string_value(ju);
    r->voice = json_is_true(jv);
    return 0;
}

/* The conversation to answer in: r->conversation_id when it is one of this
 * brand's, owned by c->user and not closed; else a new one. 0 / -1. */
static int pick_conversation(struct parley_ctx *ctx, struct proto_conn *c,
                             const struct chat_req *r, char id[64])
{
    struct conversation conv;
    if (r->conversation_id && *r->conversation_id && strlen(r->conversation_id) < 64) {
        int g = store_conv_get(ctx->db, r->conversation_id, c->user, &conv);
        if (g < 0)
            return -1;
        int ours = g == 0 && !strcmp(conv.kind, "brand") && conv.brand_id &&
                   !strcmp(conv.brand_id, c->param) && strcmp(conv.status, "closed") != 0;
        if (g == 0)
            store_conv_free(&conv);
        if (ours) {
            str_copy(id, 64, r->conversation_id);
            return 0;
        }
    }
    memset(&conv, 0, sizeof conv);
    str_copy(conv.owner, sizeof conv.owner, c->user);
    str_copy(conv.kind, sizeof conv.kind, "brand");
    conv.brand_id = c->param;             /* only read */
    if (store_conv_create(ctx->db, &conv) != 0)
        return -1;
    str_copy(id, 64, conv.id);
    return 0;
}

/* The system prompt: the brand's own (or a default), the suggested
 * products, and the one-sentence rule for voice (new string). */
static char *system_prompt(const struct brand *b, json_t *products, int voice)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    if (b->system_prompt && *b->system_prompt)
        fputs(b->system_prompt, f);
    else
        fprintf(f, "You are the customer assistant of %s. Help customers choose among its "
                   "products and answer their questions briefly and accurately, in the "
                   "customer's language. Never invent products or prices.", b->name);
    if (json_array_size(products) > 0) {
        fputs("\n\nProducts that may match the customer's message:", f);
        size_t i;
        json_t *p;
        json_array_foreach(products, i, p) {
            const char *name = proto_str(p, "name"), *cat = proto_str(p, "category");
            const char *desc = proto_str(p, "description");
            desc = desc ? desc : "";
            fprintf(f, "\n- %s (%s, price %.2f): %.*s", name ? name : "", cat ? cat : "",
                    json_number_value(json_object_get(p, "price")), utf8_cut(desc, 200), desc);
        }
    }
    if (voice)
        fputs("\n\n" VOICE_RULE, f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Stores the user message, computes suggestions and starts the answer. */
static int start_answer(struct parley_ctx *ctx, struct proto_conn *c, const struct brand *b,
                        const struct chat_req *r, struct proto_frames *out,
                        struct proto_job **jobp)
{
    char cid[64];
    if (pick_conversation(ctx, c, r, cid) < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    json_t *mj = json_object();
    if (r->user_id)
        json_object_set_new(mj, "user_id", json_string(r->user_id));
    if (r->voice)
        json_object_set_new(mj, "voice", json_true());
    char *meta = mj ? json_dumps(mj, JSON_COMPACT) : NULL;
    json_decref(mj);
    struct message um;
    store_msg_init(&um);
    str_copy(um.conversation_id, sizeof um.conversation_id, cid);
    str_copy(um.role, sizeof um.role, "user");
    um.content = (char *)r->text;         /* only read */
    um.metadata = meta;
    int stored = meta ? store_msg_add(ctx->db, &um) : -1;
    free(meta);
    if (stored < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }

    json_t *products = NULL;
    double confidence = -1;
    struct proto_job *job = proto_job_new();
    char *sys = NULL;
    if (!job || catalog_suggest(ctx->db, c->param, r->text, SUGGESTIONS, &products, &confidence) < 0 ||
        proto_job_conversation(ctx, job, cid, um.id) < 0)
        goto fail;
    sys = system_prompt(b, products, r->voice);
    job->req.llm.system = sys ? proto_job_keep(job, sys) : NULL;
    if (!job->req.llm.system)
        goto fail;
    job->req.one_sentence = r->voice;
    free(sys);
    if (proto_start(ctx, c, job, jobp) < 0) {
        json_decref(products);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    json_object_set_new(c->state, "suggested_products", products);
    json_object_set_new(c->state, "confidence_score",
                        confidence >= 0 ? json_real(confidence) : json_null());
    return 0;
fail:
    free(sys);
    json_decref(products);
    proto_job_free(job);
    error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
    return -1;
}

static int brand_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                         struct proto_frames *out, struct proto_job **jobp)
{
    if (!msg)
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid JSON");
    if (!json_is_object(msg))
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: expected a JSON object");
    json_t *jt = json_object_get(msg, "type");
    if (!jt)
        return error_frame(c, out, PERR_BAD_INPUT, "Missing field 'type'");
    const char *type = json_string_value(jt);
    if (!type)
        return error_frame(c, out, PERR_BAD_INPUT, "Field 'type' must be a string");
    if (!strcmp(type, "ping")) {
        char ts[32];
        proto_timestamp(ts, now_ms(), 1);
        return frames_push(out, json_pack("{s:s, s:{s:s}}", "type", "pong", "data",
                                          "timestamp", ts));
    }
    if (!strcmp(type, "stop")) {
        json_t *d = json_object_get(msg, "data");
        if (d && !json_is_object(d))
            return error_frame(c, out, PERR_BAD_INPUT, "Field 'data' must be an object");
        json_t *jc = json_object_get(d, "conversation_id");
        if (jc && !json_is_null(jc) && !json_is_string(jc))
            return error_frame(c, out, PERR_BAD_INPUT, "Field 'conversation_id' must be a string");
        char chan[200];
        const char *cid = json_string_value(jc);
        const char *last = proto_str(c->state, "last_channel");
        if (cid && *cid)
            snprintf(chan, sizeof chan, "conv:%s", cid);
        else if (last)
            str_copy(chan, sizeof chan, last);
        else
            return error_frame(c, out, PERR_NOT_FOUND, PROTO_STOP_NONE_MSG);
        enum perr kind;
        const char *m;
        int rc = proto_stop(ctx, c, chan, 0, &kind, &m);
        if (rc == JOBS_STOP_OK)
            return 0;               /* "complete" marked stopped follows */
        if (error_frame_code(out, m, perr_code(kind)) < 0)
            return -1;
        return rc == JOBS_STOP_ERR ? -1 : 0;
    }
    if (strcmp(type, "chat") != 0) {
        char m[128];
        snprintf(m, sizeof m, "Unknown message type '%.*s'", utf8_cut(type, 40), type);
        return error_frame(c, out, PERR_BAD_INPUT, m);
    }
    struct chat_req r;
    int v = parse_chat(ctx, c, msg, &r, out);
    if (v != 0)
        return v < 0 ? -1 : 0;
    if (proto_following(c) && c->job_id)
        return error_frame(c, out, PERR_CONFLICT, "A response is still being generated; wait for it to finish");
    struct brand b;
    v = brand_load(ctx, c, &b, out);      /* deactivated since the welcome? */
    if (v != 0)
        return v < 0 ? -1 : 0;
    char why[160];
    int ok = proto_budget_ok(ctx, c, why, sizeof why);
    if (ok == 0) {
        catalog_brand_free(&b);
        return error_frame(c, out, PERR_BUDGET_EXHAUSTED, why);
    }
    if (ok > 0)
        ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        catalog_brand_free(&b);
        if (ok < 0) {
            error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
            return -1;
        }
        return error_frame(c, out, PERR_RATE_LIMITED, "Rate limit exceeded");
    }
    int rc = start_answer(ctx, c, &b, &r, out, jobp);
    catalog_brand_free(&b);
    return rc;
}

const struct proto_ops proto_brand_ops = { "brand", brand_open, brand_message, brand_event };
