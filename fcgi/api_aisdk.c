/* api_aisdk.c — the AI SDK UI message stream over Server-Sent Events: the
 * transport only (docs/ai-sdk.md).
 *
 *   POST /api/ai-sdk/chat             useChat's request  →  text/event-stream
 *   GET  /api/ai-sdk/chat/{id}/stream the running answer from its start, or
 *                                     204 when none runs (useChat resume)
 *
 * The protocol (validation, the conversation, storing the user message, the
 * generation, every part) is core/proto_aisdk.c. This file hands it the
 * request, answers a refused request with the status of its failure kind
 * (fcgi/status.h), and otherwise sends the protocol's header
 * "x-vercel-ai-ui-message-stream: v1" and writes every part as one "data:"
 * line, flushed on its own, then "data: [DONE]" once the answer ended
 * (finish or error); a ": keepalive" comment line goes out after
 * AISDK_HEARTBEAT_MS of silence (the AI SDK's reader skips comments). The
 * generation runs on the process's generation loop (proto_job_submit)
 * while the stream follows the conversation's channel (core/follow.h,
 * which also fails the job when the process that owns it died: the error
 * part) on the parking hub, holding no thread (fcgi/sse_park.h); if the
 * client leaves, the answer is still completed and stored, and the resume
 * endpoint replays it from any process or node.
 * Runs in a parley.fcgi worker thread on the thread's database connection
 * until the stream parks.
 */
#include "handlers.h"
#include "api_usage.h"
#include "follow.h"
#include "proto.h"
#include "sse_park.h"
#include "status.h"

#include <stdlib.h>
#include <string.h>

/* Below FcgidIOTimeout (40 s) and the proxies' idle timeouts. */
#define AISDK_HEARTBEAT_MS 15000
#define AISDK_HEADERS "x-vercel-ai-ui-message-stream: v1\r\n"

/* Starts the stream, writes the parts already made, and hands c to the
 * stream (sse_stream: it may park r), which follows c until its answer
 * ends and closes with [DONE] (not when the client left or the process
 * stops: then the client resumes). */
static void stream(struct request *r, struct proto_conn *c, struct proto_frames *fr)
{
    res_start(r, 200, "text/event-stream; charset=utf-8", AISDK_HEADERS);
    if (res_flush(r) < 0)
        return;
    for (int i = 0; i < fr->n; i++)
        if (res_printf(r, "data: %s\n\n", fr->v[i]) < 0 || res_flush(r) < 0)
            return;
    sse_stream(r, c, 0, "data: " PROTO_AISDK_DONE "\n\n", AISDK_HEARTBEAT_MS);
}

int h_aisdk_chat(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    struct proto_conn c;
    struct proto_frames fr;
    struct proto_job *job = NULL;
    memset(&c, 0, sizeof c);
    frames_init(&fr);
    int rc = proto_open(ctx, &c, PROTO_AISDK_PATH, r->user, r->peer, &fr);
    if (rc == 0) {
        request_claims(r, NULL, &c);      /* the role and token_budget claims */
        rc = proto_message_json(ctx, &c, r->json, &fr, &job);
    }
    if (rc < 0 || c.err != PERR_OK) {
        res_error_kind(r, c.err != PERR_OK ? c.err : PERR_DB, "%s", c.err_msg);
        goto out;
    }
    if (job) {
        int s = proto_job_submit(ctx, job);   /* takes the job; on failure it was failed */
        job = NULL;
        if (s < 0) {
            res_error_kind(r, PERR_INTERNAL, "Could not start the generation");
            goto out;
        }
    }
    stream(r, &c, &fr);
out:
    proto_job_free(job);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

int h_aisdk_resume(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    struct proto_conn c;
    struct proto_frames fr;
    memset(&c, 0, sizeof c);
    frames_init(&fr);
    int rc = proto_open(ctx, &c, PROTO_AISDK_PATH, r->user, r->peer, &fr);
    if (rc == 0)
        rc = proto_aisdk_resume(ctx, &c, r->params[0]);
    if (rc < 0)
        res_error_kind(r, c.err != PERR_OK ? c.err : PERR_DB, "%s", c.err_msg);
    else if (rc == 1)
        res_empty(r, 204);
    else
        stream(r, &c, &fr);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}
