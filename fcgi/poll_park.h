/* poll_park.h — parked long-poll GETs: a waiting GET that holds no thread.
 *
 * In parley.fcgi's threaded modes a GET with nothing to answer yet is not
 * slept on in its worker thread: the worker parks it (the FastCGI request
 * and its struct request/response stay open, owned by this module) and goes
 * back to accepting. ONE hub thread per process answers every parked GET:
 * it sleeps on the doorbell (a watcher thread in bell_wait_any) and on the
 * nearest deadline; when a parked GET's bell moved it runs the steps a
 * worker would have run (poll_get.h: one batch pumps every parked session
 * of a channel in one write transaction, as poll_hub.c does for waiting
 * threads), so the answer is byte for byte the same, then finishes the
 * request from the hub thread (a kept connection goes back to the idle
 * set as after any request) and frees it. At its deadline a GET answers as
 * a waiting one does; at shutdown (bell_wake_all) every parked GET is
 * answered at once. A client that left shows up as a failed write.
 *
 * Bound: at most poll_park_max() GETs are parked per process; beyond it a
 * GET waits in its thread as before. A transport that cannot park (no
 * r->res->release: mod_fcgid's one-request processes, see fcgx_adapter.c)
 * and a process without a doorbell wait in their threads as well.
 * Other waiting GETs (the Phoenix LongPoll's, which watch several
 * channels) park through the same hub as generic waiters (poll_park_waiter):
 * the hub checks their bells with their own callback on every scan and runs
 * their own step when one moved or their deadline came; the same bound and
 * shutdown apply.
 * Threads: poll_park / poll_park_waiter from any worker thread; the hub and
 * watcher threads are started at the first park; poll_park_shutdown from
 * main at exit.
 */
#ifndef PARLEY_POLL_PARK_H
#define PARLEY_POLL_PARK_H
#include "poll_get.h"

/* Parks g (about to sleep, nothing to answer) when its transport can keep
 * the request (g->r->res->release), the process has a doorbell, is not
 * stopping and has fewer than poll_park_max() parked: copies g, starts the
 * hub at the first park (its own database connection) and calls
 * http_park(); the GET is registered with the hub once the transport gave
 * the request up. 1 parked (the handler returns at once), 0 not (g
 * unchanged: sleep in the thread). Worker thread. */
int poll_park(struct poll_get *g);
/* A generic parked waiter (poll_park_waiter). Every callback gets the
 * waiter's arg and runs in the hub thread. */
struct park_ops {
    /* The next time (mono ms) the waiter must be looked at even if no bell
     * moved (its deadline, or an earlier re-look). Under the hub's lock:
     * no blocking, no database. */
    int64_t (*until)(void *arg);
    /* 1 when a bell the waiter watches moved since its last step (bell_peek
     * only: under the hub's lock, no database), else 0. */
    int (*rung)(void *arg, parley_bell *bell);
    /* A watched bell moved, its `until` came, or the process is stopping
     * (poll_stopping(ctx)): looks, and either writes the complete answer to
     * its request and returns 1 (the hub then finishes the exchange, calls
     * drop and frees nothing else), or returns 0 to be parked again (peek
     * the bells again before looking, as a waiting thread does). ctx is the
     * hub's (its own database connection); the request's r->ctx is that
     * too. */
    int (*step)(void *arg, struct parley_ctx *ctx);
    /* Frees arg (after the exchange was finished and released). */
    void (*drop)(void *arg);
};

/* Parks request r (a handler's last step: it returns at once when 1) as a
 * generic waiter: the same conditions as poll_park (the transport can keep
 * the request, the process has a doorbell, is not stopping, the bound).
 * ctx: the worker's (for the configuration and the doorbell at the hub's
 * start). arg belongs to the hub from 1 on (ops->drop frees it); 0: not
 * parked, arg still the caller's (wait in the thread). Worker thread. */
int poll_park_waiter(struct request *r, struct parley_ctx *ctx, const struct park_ops *ops,
                     void *arg);

/* GETs parked now, and the most that may be (min(4096, half the soft
 * RLIMIT_NOFILE), at least 16). Any thread. */
int poll_park_count(void);
int poll_park_max(void);
/* At exit, after the workers ended (no new park can come): stops the
 * process's doorbell (bell_wake_all: every parked GET is answered at once
 * with what it has, as at SIGTERM), waits up to grace_ms for the hub to
 * finish them, then ends its threads and closes its database connection.
 * Returns the number still parked (0: all answered; then everything is
 * freed). Without a hub started: 0 at once. Main thread. */
int poll_park_shutdown(int grace_ms);
#endif
