/* follow.h — the one follow loop: read a channel's events after a cursor,
 * hand them on, sleep on the doorbell when there is nothing, recover the
 * followed job when its worker died, and call an idle hook for
 * keep-alives. Every front that streams one connection from one thread
 * uses it: the two SSE handlers of parley.fcgi (seed 000 ticket stream,
 * seed 004 send), the CLI's `ask`, and runner_follow.
 *
 * Waiting costs no wake-ups: the loop sleeps in bell_wait() until the
 * channel rings, the lease check is due (every lease_ms / 2, and only while
 * a job is followed) or the idle hook is due (heartbeat_ms after the last
 * event). A stop flag is noticed when the bell is stopped (bell_wake_all,
 * as parley.fcgi does at SIGTERM) or at the next of those wake-ups; a
 * ctx without a bell (tests) polls every 50 ms.
 * Threads: runs in the calling thread on ctx->db (that thread's
 * connection); the callbacks run in that thread.
 */
#ifndef PARLEY_FOLLOW_H
#define PARLEY_FOLLOW_H
#include <stdint.h>
#include "evlog.h"
#include "proto.h"
#include "runner.h"

/* What a follow loop returns. */
enum follow_end {
    FOLLOW_ERROR = -1,     /* the database failed */
    FOLLOW_OVER = 0,       /* what was followed ended (its done / error) */
    FOLLOW_LEFT = 1,       /* a callback asked to stop (the client left) */
    FOLLOW_STOPPED = 3,    /* *stop was set or the bell was stopped */
};

/* on_event's answers. */
#define FOLLOW_MORE 0      /* keep following */
#define FOLLOW_END 1       /* what was followed is over: return FOLLOW_OVER */
#define FOLLOW_QUIT 2      /* stop now: return FOLLOW_LEFT */

/* Follows channel from *cursor: calls on_event(ud, ev) for every event
 * after it, oldest first (the callback filters and formats; *cursor is
 * advanced past each event after its call), until on_event answers
 * FOLLOW_END or FOLLOW_QUIT. *job_id (read at every lease check; 0: no job
 * known yet) is the job whose lease is checked while nothing arrives;
 * when its lease ran out and the database cannot record that
 * (JOBS_EXPIRED_UNRECORDED), on_event gets jobs_expired_event() once per
 * job, from memory (from_memory set, seq *cursor, which stays).
 * on_idle(ud), if not NULL, is called after heartbeat_ms (> 0) without an
 * event, and again every heartbeat_ms; non-zero from it ends the loop with
 * FOLLOW_LEFT. A read that fails because the database cannot be reached
 * (PERR_DB_UNAVAILABLE: PostgreSQL restarting) is tried again every 200 ms,
 * heartbeats going on, for three leases (at least 5 s); after that a
 * viewer of a job gets an "error" event from memory with code
 * database_unavailable (then FOLLOW_OVER), one of no job FOLLOW_ERROR;
 * any other failed read is FOLLOW_ERROR at once. stop may be NULL. Returns an enum follow_end. channel is
 * copied; job_id and cursor must stay valid during the call. */
int follow_channel(struct parley_ctx *ctx, const char *channel, const int64_t *job_id,
                   int64_t *cursor, int (*on_event)(void *ud, const struct evlog_event *ev),
                   int (*on_idle)(void *ud), void *ud, const volatile int *stop,
                   int heartbeat_ms);

/* Follows what connection c follows (proto_following) until it stops
 * following (its job's done or error): every event goes through
 * proto_event, and each frame it makes is handed to on_frame(ud, frame,
 * seq) with the seq of the event it came from (0 for one from memory,
 * which is not in the log; frame is borrowed for the call). Non-zero from on_frame or on_idle ends with FOLLOW_LEFT (the
 * event's cursor has advanced; the generation goes on). Returns an enum
 * follow_end: FOLLOW_OVER at once when c follows nothing. */
int follow(struct parley_ctx *ctx, struct proto_conn *c,
           int (*on_frame)(void *ud, const char *frame, int64_t seq), int (*on_idle)(void *ud),
           void *ud, const volatile int *stop, int heartbeat_ms);
#endif
