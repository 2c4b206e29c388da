/* follow.h — the one follow loop: read a channel's events after a cursor,
 * hand them on, sleep on the doorbell when there is nothing, recover the
 * followed job when its worker died, and call an idle hook for
 * keep-alives. Every front that streams one connection uses it: the SSE
 * handlers of parley.fcgi (seed 000 ticket stream, seed 004 send, the AI
 * SDK, the OpenAI-compatible stream: a step at a time on the parking hub,
 * fcgi/sse_park.h), the CLI's `ask`, and runner_follow.
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
    FOLLOW_WAIT = 2,       /* follow_step only: nothing more now; wait (follow_run) */
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

/* ---- one step at a time: for a caller that does its own waiting ----
 *
 * follow_channel is follow_begin, then follow_step and follow_wait in
 * turn until follow_step ends. A caller that waits for many follows at
 * once (parley.fcgi's parking hub, fcgi/sse_park.h) keeps the state,
 * waits for the bell of `chan` to move past `seen` or for `wake`, and
 * then steps again, from any thread, with that thread's ctx. */
struct follow_run {
    char chan[512];            /* the channel followed */
    uint32_t seen;             /* after FOLLOW_WAIT: its bell value before the last read */
    int64_t wake;              /* after FOLLOW_WAIT: step again by then (mono ms;
                                  INT64_MAX: only when the bell moves) */
    int retry;                 /* after FOLLOW_WAIT: the database could not be
                                  reached; wake is the retry */
    /* private */
    const int64_t *job_id;
    int64_t *cursor;
    int (*on_event)(void *ud, const struct evlog_event *ev);
    int (*on_idle)(void *ud);
    void *ud;
    const volatile int *stop;
    int heartbeat_ms, check_every;
    int64_t next_check, next_idle, unrecorded, patience, db_lost_at;
};

/* Sets f up as follow_channel's loop with the same arguments (all of them
 * must stay valid until the last step; channel is copied). ctx: for the
 * configuration only. 0, or FOLLOW_ERROR (the channel name is too long). */
int follow_begin(struct follow_run *f, const struct parley_ctx *ctx, const char *channel,
                 const int64_t *job_id, int64_t *cursor,
                 int (*on_event)(void *ud, const struct evlog_event *ev),
                 int (*on_idle)(void *ud), void *ud, const volatile int *stop, int heartbeat_ms);
/* Reads and hands on everything after the cursor, runs the due idle hook
 * and lease check, and returns FOLLOW_WAIT (f->seen, f->wake set: nothing
 * more now) or how the follow ended (as follow_channel). Never sleeps.
 * ctx: the calling thread's (its database connection); the callbacks run
 * in the calling thread. */
int follow_step(struct parley_ctx *ctx, struct follow_run *f);
/* Sleeps in the calling thread until f's bell moves past f->seen or
 * f->wake (without a bell: at most 50 ms). After FOLLOW_WAIT only. */
void follow_wait(struct parley_ctx *ctx, const struct follow_run *f);

/* follow() a step at a time. */
struct follow_conn {
    struct follow_run run;     /* its seen / wake / retry after FOLLOW_WAIT */
    /* private */
    struct parley_ctx *ctx;
    struct proto_conn *c;
    int (*on_frame)(void *ud, const char *frame, int64_t seq);
    int (*on_idle)(void *ud);
    void *ud;
    int over;                  /* c followed nothing */
};
/* Sets f up as follow()'s loop with the same arguments (c, ud and stop
 * must stay valid, at the same address, until the last step). ctx: for
 * the configuration only. 0, or FOLLOW_ERROR. */
int follow_conn_begin(struct follow_conn *f, const struct parley_ctx *ctx, struct proto_conn *c,
                      int (*on_frame)(void *ud, const char *frame, int64_t seq),
                      int (*on_idle)(void *ud), void *ud, const volatile int *stop,
                      int heartbeat_ms);
/* follow_step for a connection: FOLLOW_WAIT (wait with follow_wait(ctx,
 * &f->run) or on f->run.chan / seen / wake yourself) or how follow() would
 * have ended. ctx: the calling thread's; proto_event runs with it. */
int follow_conn_step(struct parley_ctx *ctx, struct follow_conn *f);
#endif
