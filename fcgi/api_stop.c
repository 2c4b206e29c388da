/* api_stop.c — the REST form of stopping a generation (docs/stop.md), for
 * SSE clients (seed 000's ticket stream, seed 004's /api/chat/send) and any
 * other client that would rather not send a protocol frame:
 *
 *   POST /api/chat/sessions/{id}/stop     the conversation's generation
 *                                         (seeds 001-004: channel conv:<id>)
 *   POST /api/tickets/{id}/ai/stop        the ticket's generation (seed 000)
 *
 * 202 {"success": true, "stopped": true, "job_id": N}: recorded; the
 * generation's owner (any process, any node) aborts the upstream request
 * and every viewer gets its protocol's end frame marked stopped.
 * 404 no generation on it; 409 it has already finished; 403 started by
 * another user (and the token has no role "admin"); each with
 * {"success": false, "message"}. Transport only: the decision is core's
 * (proto_stop_channel); this file reads the role claim of the token the
 * dispatcher already verified (F_AUTH). With PARLEY_TENANT_CLAIM set a
 * ticket's stop reaches the caller's tenant's ticket only (another
 * tenant's generation on the same id is not found; docs/tenants.md).
 * Runs in a parley.fcgi worker thread on the thread's database connection.
 */
#include "handlers.h"
#include "api_usage.h"
#include "auth.h"
#include "ident.h"
#include "proto.h"
#include "status.h"

#include <stdio.h>
#include <string.h>

/* 1 when the request's token carries role "admin" (open mode: never):
 * the claims of the dispatcher's one verification. */
static int request_admin(struct request *r)
{
    if (config_open_mode(r->ctx->cfg) || !r->has_claims)
        return 0;
    return r->claims.admin && !strcmp(r->claims.sub, r->user);
}

static int stop_on(struct request *r, const char *channel)
{
    enum perr kind;
    const char *msg;
    int64_t job = 0;
    int rc = proto_stop_channel(r->ctx, channel, 0, r->user, request_admin(r), &kind, &msg, &job);
    if (rc != JOBS_STOP_OK)
        return res_error_kind(r, kind, "%s", msg);
    return res_json(r, 202, json_pack("{s:b, s:b, s:I}", "success", 1, "stopped", 1,
                                      "job_id", (json_int_t)job));
}

int h_chat_stop(struct request *r)
{
    char chan[200];
    if (!ident_name_valid(r->params[0], 63))
        return res_error_kind(r, PERR_NOT_FOUND, "%s", PROTO_STOP_NONE_MSG);
    snprintf(chan, sizeof chan, "conv:%s", r->params[0]);
    return stop_on(r, chan);
}

int h_ticket_ai_stop(struct request *r)
{
    char chan[200], stored[IDENT_TICKET_STORED_MAX];
    if (!ident_ticket_id_valid(r->params[0]))
        return res_error_kind(r, PERR_BAD_INPUT, "Invalid ticket id: " IDENT_TICKET_ID_RULE);
    /* tickets per tenant (docs/tenants.md): this tenant's ticket only */
    if (!api_ticket_stored(r, stored))
        return 0;
    snprintf(chan, sizeof chan, "ticket:%s", stored);
    return stop_on(r, chan);
}
