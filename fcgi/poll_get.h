/* poll_get.h — one long-poll GET in progress (poll_get.c), as the steps
 * of h_poll_get and the parking hub (poll_park.c) share it.
 *
 * A GET runs look → reply → sleep until it answers. In a worker thread
 * that may park (http.h, struct response's release: the threaded modes),
 * the sleep is not taken in the thread: the GET is copied to the heap and
 * parked (poll_park.h), and the hub thread wakes it, runs the same steps
 * (poll_get_woken, poll_get_steps) and writes the same bytes.
 * Threads: a struct poll_get is used by one thread at a time (the worker,
 * then the hub).
 */
#ifndef PARLEY_POLL_GET_H
#define PARLEY_POLL_GET_H
#include "poll_hub.h"

/* One GET in progress. */
struct poll_get {
    struct request *r;
    struct parley_ctx *ctx;
    const char *sid;
    int64_t cursor;            /* the client's: frames up to it were received */
    int wait_s;
    int64_t deadline;          /* mono ms */
    int ext_s;                 /* a renewal's extension (poll_extension_s) */
    int64_t idle_ms;           /* PARLEY_POLL_IDLE */
    int recheck_ms;            /* how often a session that follows a job is looked at */
    char pchan[64];            /* "poll:<sid>" */
    char chan[200];            /* the channel the session follows ("" none) */

    int look;                  /* look at the session before reading the outbox */
    int reread;                /* a batch or the cache says: frames after the cursor */
    int wrote;                 /* renewed by this GET already */
    int64_t next_look;         /* mono ms: look again without a ring (job leases) */

    int following, job, closed;
    int64_t job_id;            /* the followed job (when job; 0 not known) */
    struct poll_close ci;
    uint32_t seen_p, seen_c;   /* bell values the session was looked at up to */
    int64_t expires;           /* ms since the epoch, as last seen */
    int64_t looked_at;         /* mono ms of the last look */
    int64_t next_seq, stored;  /* the outbox's extent, as last seen */
    uint64_t vid;              /* the session's virtual frames (poll_replay.h) from its
                                * stored state, numbered next_seq on; 0: none known */
};

/* What ended a sleep, for poll_get_woken. */
enum poll_get_wake {
    POLL_GET_TIMEOUT = 0,      /* the deadline or the next look came, or shutdown */
    POLL_GET_RUNG = 1,         /* the session's own bell ("poll:<sid>") moved */
    POLL_GET_BATCH = 2,        /* a batch of the followed channel found *res */
    POLL_GET_CHAN = 3,         /* the followed channel's bell moved (g->vid set):
                                * view the virtual frames, look when they are blocked */
    POLL_GET_APPLIED = 4,      /* the hub applied POLL_GET_CHAN already */
};

/* Applies what ended g's sleep (exactly as the blocking wait does): sets
 * look / reread and what a batch saw. 0, or -1 with the error response
 * written (a batch's failed pump). */
int poll_get_woken(struct poll_get *g, enum poll_get_wake wk, const struct poll_hub_result *res);
/* The steps after a wake: looks when due, then reads and answers when
 * there is anything to say (or the wait is over, the process stops). 1
 * answered (or an error response written), 0 nothing yet: sleep again. */
int poll_get_steps(struct poll_get *g);
/* When g would sleep now: until when (mono ms: its deadline, or its next
 * look when sooner). */
int64_t poll_get_until(const struct poll_get *g);
#endif
