/* poll_transport.h — what the files of the generic long-poll transport
 * (DESIGN §3) share:
 *
 *   poll_handlers.c  POST /api/poll/open, POST and DELETE /api/poll/{sid}
 *   poll_get.c       GET /api/poll/{sid}, in named steps
 *   poll_pump.c      pumping a followed channel into sessions' outboxes
 *   poll_hub.c       this process's waiting GETs, grouped by channel
 *   poll_park.c      parked GETs (no thread waits) and the hub thread
 *                    that answers them, in the threaded modes
 *   poll_cache.c     what this process knows of a session (GETs with no look)
 *   poll_replay.c    virtual frames: a job's tokens handed out from the
 *                    session's stored state, formatted once per process,
 *                    never written per delivery
 *   poll_transport.c the pieces below
 *
 * Session state lives in SQLite (core/pollsess.h), so any process serves
 * any request of a session. Runs in parley.fcgi worker threads; each uses
 * its thread's ctx.
 */
#ifndef PARLEY_POLL_TRANSPORT_H
#define PARLEY_POLL_TRANSPORT_H
#include <stddef.h>
#include <stdint.h>
#include "http.h"
#include "pollsess.h"

#define POLL_WAIT_DEFAULT 25      /* s a GET waits without ?wait= */
#define POLL_WAIT_MAX 30          /* stays under FcgidIOTimeout (40 s) */
#define POLL_MAX_FRAMES 500       /* frames in one GET answer */
/* Frames one POST may carry (413 beyond), and frames a session's outbox
 * may hold that its client has not acknowledged (429 beyond): the bound of
 * a WebSocket connection's queue in parley-ws (bridge.h, out_hard), so a
 * client gets as much room on either transport. */
#define POLL_POST_MAX_FRAMES 256
#define POLL_PENDING_MAX 256
/* A GET that may skip its look (poll_cache.h) looks anyway when its client
 * acknowledged at least this many frames still stored, so they are deleted
 * before they count against POLL_PENDING_MAX. */
#define POLL_TRIM_AT 64

/* How a session was closed, as a WebSocket close frame would say it. */
struct poll_close {
    int code;
    char reason[120];
};

/* What a pump (or a batch of them) saw of one session afterwards. */
struct poll_seen {
    int following;             /* follows a channel: chan */
    int job;                   /* ... and a job in it (its lease is checked by looks) */
    int closed;
    char chan[200];
    struct poll_close ci;
};

/* The doorbell channel of a session itself ("poll:<sid>"): POST and DELETE
 * ring it, a GET that follows nothing waits on it. */
void poll_channel(char *out, size_t len, const char *sid);

/* 1 when the process is stopping (parley_stopping, or the doorbell was
 * woken for shutdown by bell_wake_all): waits end at once. */
int poll_stopping(const struct parley_ctx *ctx);

/* Writes the error response for a session operation's status, the one
 * table of them: POLL_GONE 410, POLL_BUSY 409, POLL_FULL 429, POLL_ERROR
 * (and anything else) 500. Returns 0 (the response is written). */
int poll_fail(struct request *r, enum poll_status st);

/* The session's expiry extension for a request that may wait up to
 * wait_s: PARLEY_POLL_IDLE counts from the end of the client's last
 * request, so a GET that waits renews the session for its wait too. */
int poll_extension_s(const struct parley_ctx *ctx, int wait_s);
#endif
