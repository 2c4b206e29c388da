/* api_send.c — seed 004: POST /api/chat/send {conversationId, content}
 * answers with text/event-stream:
 *   data: {"content": "..."}                         each piece of the answer
 *   data: {"done": true, "messageId": ..., "metadata": {...}}   the end
 *   data: {"error": "...", "done": true}             a failure (mid-stream too)
 * Every data: line is one JSON object and every event is flushed on its own,
 * so the seed's reader (split on blank lines, JSON.parse each data: line)
 * never sees half an event. The user message is stored before streaming;
 * the assistant message after, by the runner, in the same transaction as
 * the job's "done". The generation runs in a helper thread (genthread.h)
 * while this thread follows the conversation's channel; if the client leaves
 * the answer is still completed and stored.
 */
#include "handlers.h"
#include "genthread.h"
#include "bell.h"
#include "jobs.h"
#include "ratelimit.h"
#include "store.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEND_SYSTEM "You are a helpful assistant."
#define SEND_HEARTBEAT_MS 15000

struct send_job {
    struct gen_request req;
    struct job_claim claim;
    char channel[120];
    struct llm_message msgs[64];
    struct message *ctxmsgs;
    int nctx;
};

static int run_send(struct parley_ctx *ctx, void *arg)
{
    struct send_job *sj = arg;
    struct gen_outcome out;
    int rc = runner_execute(ctx, &sj->req, &sj->claim, &out);
    gen_outcome_free(&out);
    return rc;
}

static int sse_data(struct request *r, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    if (!s)
        return -1;
    int rc = res_printf(r, "data: %s\n\n", s);
    free(s);
    return rc < 0 ? -1 : res_flush(r);
}

static const char *json_err_message(const struct evlog_event *ev, json_t **hold)
{
    *hold = json_loads(ev->data, 0, NULL);
    const char *m = json_string_value(json_object_get(*hold, "message"));
    return m ? m : "the answer could not be generated";
}

int h_chat_send(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const struct parley_config *cfg = ctx->cfg;
    json_t *jid = json_object_get(r->json, "conversationId");
    json_t *jc = json_object_get(r->json, "content");
    if (!json_is_string(jid) || !*json_string_value(jid))
        return res_error(r, 400, "Invalid data: conversationId must be a non-empty string");
    if (!json_is_string(jc) || !*json_string_value(jc))
        return res_error(r, 400, "Invalid data: content must be a non-empty string");
    const char *conv_id = json_string_value(jid), *content = json_string_value(jc);
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)content; *p; p++)
        chars += (*p & 0xc0) != 0x80;
    if (chars > (size_t)cfg->max_message_length)
        return res_error(r, 400, "Invalid data: content too long (%zu characters, max %d)", chars,
                         cfg->max_message_length);
    struct conversation conv;
    int g = store_conv_get(ctx->db, conv_id, r->user, &conv);
    if (g < 0)
        return res_error(r, 500, "Database error");
    if (g == 1)
        return res_error(r, 404, "Conversation not found");
    int closed = !strcmp(conv.status, "closed");
    store_conv_free(&conv);
    if (closed)
        return res_error(r, 409, "Conversation is closed");
    int ok = ratelimit_hit(ctx->db, r->peer, cfg->rate_limit_per_min, 60000, now_ms(), NULL);
    if (ok < 0)
        return res_error(r, 500, "Database error");
    if (ok == 0)
        return res_error(r, 429, "Rate limit exceeded");

    /* The user message is saved before anything streams. */
    struct message um;
    store_msg_init(&um);
    str_copy(um.conversation_id, sizeof um.conversation_id, conv_id);
    str_copy(um.role, sizeof um.role, "user");
    um.content = (char *)content;
    if (store_msg_add(ctx->db, &um) < 0)
        return res_error(r, 500, "Database error: the message was not saved");

    struct send_job *sj = calloc(1, sizeof *sj);
    if (!sj)
        return res_error(r, 500, "Out of memory");
    snprintf(sj->channel, sizeof sj->channel, "conv:%s", conv_id);
    int last = cfg->context_messages > 0 ? cfg->context_messages : 1;
    if (last > 64)
        last = 64;
    if (store_msg_context(ctx->db, conv_id, last, &sj->ctxmsgs, &sj->nctx) < 0) {
        free(sj);
        return res_error(r, 500, "Database error");
    }
    for (int i = 0; i < sj->nctx; i++) {
        sj->msgs[i].role = sj->ctxmsgs[i].role;
        sj->msgs[i].content = sj->ctxmsgs[i].content;
    }
    sj->req.channel = sj->channel;
    sj->req.prompt_key = um.id;
    sj->req.llm.messages = sj->msgs;
    sj->req.llm.n_messages = (size_t)sj->nctx;
    sj->req.llm.system = SEND_SYSTEM;
    sj->req.llm.temperature = cfg->temperature;
    sj->req.conversation_id = conv_id;

    char err[256];
    struct genthread gt;
    memset(&gt, 0, sizeof gt);
    if (runner_claim(ctx, &sj->req, &sj->claim, err, sizeof err) < 0) {
        res_error(r, 500, "Could not start the generation: %s", err);
        goto out;
    }
    if (sj->claim.owner && genthread_start(&gt, cfg, ctx->bell, run_send, sj) < 0) {
        res_error(r, 500, "Could not start the generation");
        goto out;
    }
    res_start(r, 200, "text/event-stream; charset=utf-8", NULL);
    res_flush(r);
    int64_t cursor = sj->claim.first_seq;
    int64_t last_write = mono_ms();
    int done = 0, gone = 0;
    char message_id[64] = "";
    while (!done && !gone && !parley_stopping) {
        uint32_t seen = ctx->bell ? bell_peek(ctx->bell, sj->channel) : 0;
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, sj->channel, cursor, 256, &ev);
        if (n < 0)
            break;
        for (int i = 0; i < n && !done && !gone; i++) {
            cursor = ev[i].seq;
            if (ev[i].job_id != sj->claim.job_id)
                continue;
            const char *t = ev[i].type;
            json_t *hold = NULL;
            if (!strcmp(t, "start")) {
                hold = json_loads(ev[i].data, 0, NULL);
                str_copy(message_id, sizeof message_id,
                         json_string_value(json_object_get(hold, "message_id")));
            } else if (!strcmp(t, "token")) {
                gone = sse_data(r, json_pack("{s:s%}", "content", ev[i].data, ev[i].data_len)) < 0;
            } else if (!strcmp(t, "done")) {
                hold = json_loads(ev[i].data, 0, NULL);
                json_t *meta = json_pack("{s:O?, s:f, s:O?}",
                                         "tokens_used", json_object_get(hold, "tokens"),
                                         "processing_time",
                                         json_integer_value(json_object_get(hold, "processing_ms")) / 1000.0,
                                         "model", json_object_get(hold, "model"));
                gone = sse_data(r, json_pack("{s:b, s:s, s:o}", "done", 1, "messageId", message_id,
                                             "metadata", meta ? meta : json_object())) < 0;
                done = 1;
            } else if (!strcmp(t, "error")) {
                gone = sse_data(r, json_pack("{s:s, s:b}", "error", json_err_message(&ev[i], &hold),
                                             "done", 1)) < 0;
                done = 1;
            }
            json_decref(hold);
        }
        evlog_free(ev, n);
        if (n > 0)
            last_write = mono_ms();
        if (n > 0 || done || gone)
            continue;
        /* A comment line keeps proxies from timing out while the upstream
         * thinks (FcgidIOTimeout is 40 s); the seed's reader skips it. */
        if (mono_ms() - last_write >= SEND_HEARTBEAT_MS) {
            gone = res_printf(r, ": keepalive\n\n") < 0 || res_flush(r) < 0;
            last_write = mono_ms();
        }
        struct job_info ji;
        if (jobs_get(ctx->db, sj->claim.job_id, &ji) == 0 && !strcmp(ji.state, "running") &&
            ji.lease_expires < now_ms())
            jobs_recover(ctx->db, ctx->bell, now_ms());
        if (ctx->bell)
            bell_wait(ctx->bell, sj->channel, seen, 1000);
    }
out:
    if (gt.started) {
        res_finish(r);
        genthread_join(&gt);
    }
    store_msgs_free(sj->ctxmsgs, sj->nctx);
    free(sj);
    return 0;
}
