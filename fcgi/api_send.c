/* api_send.c — seed 004 over Server-Sent Events: the transport only.
 *
 *   POST /api/chat/send {conversationId, content}  →  text/event-stream
 *
 * The protocol (validation, storing the user message, the generation, the
 * frames {"content"} / {"done", "messageId", "metadata"} / {"error",
 * "done"}) is core/proto_send.c. This file hands it the request's JSON,
 * answers a refused request with the status of its failure kind
 * (fcgi/status.h), and otherwise writes every frame as one "data:" line,
 * flushed on its own, so the seed's reader (split on blank lines,
 * JSON.parse each data: line) never sees half an event; a ": keepalive"
 * comment line goes out after SEND_HEARTBEAT_MS of silence. The generation
 * runs on the process's generation loop (proto_job_submit) while the
 * stream follows the conversation's channel (core/follow.h) on the parking
 * hub, holding no thread (fcgi/sse_park.h); if the client leaves, the
 * answer is still completed and stored.
 */
#include "handlers.h"
#include "api_usage.h"
#include "follow.h"
#include "proto.h"
#include "sse_park.h"
#include "status.h"

#include <stdlib.h>
#include <string.h>

/* A comment line keeps proxies from timing out while the upstream thinks
 * (FcgidIOTimeout is 40 s); the seed's reader skips it. */
#define SEND_HEARTBEAT_MS 15000

int h_chat_send(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    struct proto_conn c;
    struct proto_frames fr;
    struct proto_job *job = NULL;
    memset(&c, 0, sizeof c);
    frames_init(&fr);
    char *text = json_dumps(r->json, JSON_COMPACT);
    int rc = text ? proto_open(ctx, &c, PROTO_SEND_PATH, r->user, r->peer, &fr) : -1;
    if (rc == 0)
        request_claims(r, NULL, &c);      /* the role and token_budget claims */
    if (rc == 0)
        rc = proto_message(ctx, &c, text, strlen(text), &fr, &job);
    free(text);
    if (!text) {
        res_error_kind(r, PERR_INTERNAL, "Out of memory");
        goto out;
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
    res_start(r, 200, "text/event-stream; charset=utf-8", NULL);
    if (res_flush(r) < 0)
        goto out;
    int gone = 0;
    for (int i = 0; i < fr.n && !gone; i++)
        gone = res_printf(r, "data: %s\n\n", fr.v[i]) < 0 || res_flush(r) < 0;
    if (!gone)
        sse_stream(r, &c, 0, NULL, SEND_HEARTBEAT_MS);   /* takes c; may park r */
out:
    proto_job_free(job);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}
