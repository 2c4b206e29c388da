/* sse_park.c — Server-Sent Event streams that hold no thread (sse_park.h).
 *
 * A stream (struct sse) is a follow a step at a time (core/follow.h,
 * struct follow_conn). The worker steps it once; while the follow waits,
 * the request is parked on the hub as a generic waiter (poll_park.h):
 * `rung` peeks the channel's bell slot against the value the last step
 * peeked before reading, `until` is the step's wake (heartbeat, lease
 * check, database retry), and `step` runs follow_conn_step on the hub's
 * ctx, parking again on FOLLOW_WAIT. No event is lost: the bell is peeked
 * before each read, and a ring after it moves the slot past `seen`.
 */
#include "sse_park.h"
#include "bell.h"
#include "poll_park.h"

#include <stdlib.h>
#include <string.h>

struct sse {
    struct follow_conn f;
    const struct sse_ops *ops;
    void *ud;
    uint32_t slot;                 /* bell_slot_of(f.run.chan) */
};

/* The end of s: its tail and its user's data, then s. */
static void sse_end(struct sse *s, struct parley_ctx *ctx, int end)
{
    if (s->ops->on_end)
        s->ops->on_end(s->ud, ctx, end);
    if (s->ops->drop)
        s->ops->drop(s->ud);
    free(s);
}

/* ---- the hub's callbacks (poll_park.h, struct park_ops) ---- */

static int64_t sse_until(void *arg)
{
    return ((struct sse *)arg)->f.run.wake;
}

static int sse_rung(void *arg, parley_bell *bell)
{
    struct sse *s = arg;
    return bell_peek_slot(bell, s->slot) != s->f.run.seen;
}

static int sse_step(void *arg, struct parley_ctx *ctx)
{
    struct sse *s = arg;
    int end = follow_conn_step(ctx, &s->f);
    if (end == FOLLOW_WAIT)
        return 0;
    if (s->ops->on_end)
        s->ops->on_end(s->ud, ctx, end);
    return 1;                      /* the hub finishes the request, then drops */
}

static void sse_drop(void *arg)
{
    struct sse *s = arg;
    if (s->ops->drop)
        s->ops->drop(s->ud);
    free(s);
    http_streams_held(-1);
}

static const struct park_ops sse_park_ops = { sse_until, sse_rung, sse_step, sse_drop };

int sse_follow(struct request *r, struct proto_conn *c, const struct sse_ops *ops, void *ud,
               const volatile int *stop, int heartbeat_ms)
{
    struct parley_ctx *ctx = r->ctx;
    struct sse *s = calloc(1, sizeof *s);
    if (!s) {
        if (ops->on_end)
            ops->on_end(ud, ctx, FOLLOW_ERROR);
        if (ops->drop)
            ops->drop(ud);
        return 0;
    }
    s->ops = ops;
    s->ud = ud;
    if (follow_conn_begin(&s->f, ctx, c, ops->on_frame, ops->on_idle, ud, stop, heartbeat_ms) < 0) {
        sse_end(s, ctx, FOLLOW_ERROR);
        return 0;
    }
    s->slot = bell_slot_of(s->f.run.chan);
    for (;;) {
        int end = follow_conn_step(ctx, &s->f);
        if (end != FOLLOW_WAIT) {
            sse_end(s, ctx, end);
            return 0;
        }
        /* park at the first wait (counted open until its drop) */
        if (!s->f.run.retry) {
            http_streams_held(1);
            if (poll_park_waiter(r, ctx, &sse_park_ops, s))
                return 1;
            http_streams_held(-1);
        }
        follow_wait(ctx, &s->f.run);
    }
}

/* ---- the plain stream ---- */

struct plain {
    struct request *r;
    struct proto_conn c;
    int ids;
    const char *done_line;
};

static int plain_frame(void *ud, const char *frame, int64_t seq)
{
    struct plain *p = ud;
    if (p->ids && seq > 0 && res_printf(p->r, "id: %lld\n", (long long)seq) < 0)
        return -1;
    return res_printf(p->r, "data: %s\n\n", frame) < 0 || res_flush(p->r) < 0;
}

static int plain_idle(void *ud)
{
    struct plain *p = ud;
    return res_printf(p->r, ": keepalive\n\n") < 0 || res_flush(p->r) < 0;
}

static void plain_end(void *ud, struct parley_ctx *ctx, int end)
{
    struct plain *p = ud;
    (void)ctx;
    if (end == FOLLOW_OVER && p->done_line && res_printf(p->r, "%s", p->done_line) >= 0)
        res_flush(p->r);
}

static void plain_drop(void *ud)
{
    struct plain *p = ud;
    proto_conn_cleanup(&p->c);
    free(p);
}

static const struct sse_ops plain_ops = { plain_frame, plain_idle, plain_end, plain_drop };

int sse_stream(struct request *r, struct proto_conn *c, int ids, const char *done_line,
               int heartbeat_ms)
{
    struct plain *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->r = r;
    p->c = *c;
    memset(c, 0, sizeof *c);
    p->ids = ids;
    p->done_line = done_line;
    return sse_follow(r, &p->c, &plain_ops, p, &parley_stopping, heartbeat_ms);
}
