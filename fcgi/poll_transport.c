/* poll_transport.c — the long-poll transport's shared pieces
 * (poll_transport.h). Pure functions; any thread. */
#include "poll_transport.h"
#include "status.h"
#include "bell.h"

#include <stdio.h>

void poll_channel(char *out, size_t len, const char *sid)
{
    snprintf(out, len, "poll:%s", sid);
}

int poll_stopping(const struct parley_ctx *ctx)
{
    return parley_stopping || (ctx->bell && bell_stopped(ctx->bell));
}

int poll_fail(struct request *r, enum poll_status st)
{
    switch (st) {
    case POLL_GONE:
        return res_error(r, 410, "Unknown or expired poll session");
    case POLL_BUSY:
        return res_error(r, 409, "Poll session busy: another request of it is in progress");
    case POLL_FULL:
        return res_error(r, 429,
                         "Too many open poll sessions for this user (at most %d, "
                         "PARLEY_POLL_MAX_SESSIONS): close one with DELETE /api/poll/{sid}",
                         r->ctx->cfg->poll_max_sessions);
    case POLL_OK:
    case POLL_ERROR:
    default:   /* 503 when the database cannot be written or reached now */
        return res_error_kind(r, db_err_kind(r->ctx->db), "%s", db_err_text(r->ctx->db, "Database error"));
    }
}

int poll_extension_s(const struct parley_ctx *ctx, int wait_s)
{
    return ctx->cfg->poll_idle_s + (wait_s > 0 ? wait_s : 0);
}
