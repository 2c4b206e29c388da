/* sse_park.h — Server-Sent Event streams that hold no thread.
 *
 * An SSE handler (seed 004's send, the AI SDK's chat and resume, seed
 * 000's ticket stream, the OpenAI-compatible stream) writes its first
 * frames and then follows its connection's channel (core/follow.h) until
 * the answer ends. Followed in the worker thread, every open stream holds
 * one of parley.fcgi's threads (16 by default) for its whole length, and
 * the 17th chat waits for the first to end. Here the follow goes on in
 * the parking hub instead (fcgi/poll_park.h, a generic waiter): the
 * worker parks the request after its first look and goes back to
 * accepting; the hub thread steps the follow (follow_conn_step) whenever
 * the channel's bell moves, a heartbeat or a lease check is due, or the
 * process stops, writes the frames to the request and finishes it when
 * the follow ends. The bytes on the wire are the same either way.
 * Where the request cannot park (mod_fcgid's one-request processes, no
 * doorbell, the park bound reached) the follow runs in the worker thread
 * as before.
 * Threads: sse_follow / sse_stream from a worker thread; the callbacks run
 * in the worker thread or in the hub thread, with that thread's ctx.
 */
#ifndef PARLEY_SSE_PARK_H
#define PARLEY_SSE_PARK_H
#include "follow.h"
#include "http.h"

struct sse_ops {
    /* follow()'s callbacks: write a frame / a keep-alive to the request;
     * non-zero when the client is gone (the follow ends, FOLLOW_LEFT). */
    int (*on_frame)(void *ud, const char *frame, int64_t seq);
    int (*on_idle)(void *ud);
    /* The follow ended (end: an enum follow_end, never FOLLOW_WAIT): write
     * the stream's tail, if any. ctx: the thread's that ran the last step
     * (the worker's or the hub's). May be NULL. */
    void (*on_end)(void *ud, struct parley_ctx *ctx, int end);
    /* Frees ud (after on_end; the request may be finished already). May
     * be NULL. */
    void (*drop)(void *ud);
};

/* Follows c for the streaming response of r (already started, its first
 * frames written), writing through ops with ud. Takes ud in every case:
 * on_end and drop run once, when the follow ended. c and stop must stay
 * valid at the same address until drop (put c inside ud).
 * 1: parked — the handler returns at once and touches neither r nor c nor
 * ud again (the hub finishes the request); 0: it ran to its end in this
 * thread (on_end and drop have run; the handler finishes as usual). */
int sse_follow(struct request *r, struct proto_conn *c, const struct sse_ops *ops, void *ud,
               const volatile int *stop, int heartbeat_ms);

/* The plain stream over sse_follow: takes *c (moved; *c is left zeroed, so
 * its cleanup is a no-op) and writes each frame as "data: <frame>\n\n"
 * (preceded by "id: <seq>\n" when ids and the frame's event is in the log),
 * ": keepalive\n\n" after heartbeat_ms of silence, and done_line (a static
 * string, NULL: none) once the answer ended (FOLLOW_OVER). Each write is
 * flushed on its own. Returns as sse_follow; -1 out of memory (nothing
 * written, *c untouched). */
int sse_stream(struct request *r, struct proto_conn *c, int ids, const char *done_line,
               int heartbeat_ms);
#endif
