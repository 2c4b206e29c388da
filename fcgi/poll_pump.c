/* poll_pump.c — the followed channel into the outbox, one write
 * transaction for one session or a batch (poll_pump.h). */
#include "poll_pump.h"
#include "evlog.h"
#include "proto.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Events read for a batch, shared by sessions at the same point of the
 * same channel (one evlog_read for a whole fan-out). */
#define EV_CACHE 8
struct pump_ctx {
    struct parley_ctx *ctx;
    struct { char chan[200]; int64_t after; struct evlog_event *ev; int n; } cache[EV_CACHE];
    int ncache;
};

static void pump_ctx_free(struct pump_ctx *pc)
{
    for (int i = 0; i < pc->ncache; i++)
        evlog_free(pc->cache[i].ev, pc->cache[i].n);
    pc->ncache = 0;
}

/* The events of chan after `after` (borrowed from the cache, or new in
 * *own when the cache is full). Count or -1. */
static int pump_events(struct pump_ctx *pc, const char *chan, int64_t after,
                       struct evlog_event **ev, struct evlog_event **own)
{
    *own = NULL;
    for (int i = 0; i < pc->ncache; i++)
        if (pc->cache[i].after == after && strcmp(pc->cache[i].chan, chan) == 0) {
            *ev = pc->cache[i].ev;
            return pc->cache[i].n;
        }
    int n = evlog_read(pc->ctx->db, chan, after, 256, ev);
    if (n < 0)
        return -1;
    if (pc->ncache < EV_CACHE) {
        str_copy(pc->cache[pc->ncache].chan, sizeof pc->cache[0].chan, chan);
        pc->cache[pc->ncache].after = after;
        pc->cache[pc->ncache].ev = *ev;
        pc->cache[pc->ncache].n = n;
        pc->ncache++;
    } else {
        *own = *ev;
    }
    return n;
}

/* poll_pump_fn: proto_pump without the lease check (that one writes in a
 * transaction of its own; looks do it), inside poll_pump's transaction. */
static int pump_cb(void *fnarg, struct poll_item *it, const char *state, struct poll_update *u)
{
    struct pump_ctx *pc = fnarg;
    struct poll_seen *po = it->arg;
    struct proto_conn c;
    if (proto_conn_load(&c, state) < 0)
        return -1;
    int64_t cursor = c.cursor, job = c.job_id;
    int was_closed = c.close;
    char was[sizeof c.channel];
    str_copy(was, sizeof was, c.channel);
    struct proto_frames fr;
    frames_init(&fr);
    int rc = 0;
    if (proto_following(&c)) {
        struct evlog_event *ev = NULL, *own = NULL;
        int n = pump_events(pc, c.channel, c.cursor, &ev, &own);
        if (n < 0)
            rc = -1;
        for (int i = 0; i < n && rc == 0 && proto_following(&c); i++)
            rc = proto_event(pc->ctx, &c, &ev[i], &fr);
        if (own)
            evlog_free(own, n);
    }
    if (rc == 0 && (fr.n > 0 || c.cursor != cursor || c.job_id != job ||
                    strcmp(c.channel, was) != 0 || c.close != was_closed)) {
        if (!(u->state = proto_conn_save(&c)))
            rc = -1;
        u->frames = fr.v;              /* handed over: poll_pump frees them */
        u->nframes = fr.n;
        frames_init(&fr);
    }
    po->following = proto_following(&c);
    po->job = po->following && c.job_id != 0;
    po->closed = c.close;
    str_copy(po->chan, sizeof po->chan, c.channel);
    po->ci.code = c.close_code;
    str_copy(po->ci.reason, sizeof po->ci.reason, c.close_reason);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return rc;
}

void poll_pump_items(struct parley_ctx *ctx, struct poll_item *items, struct poll_seen *seen,
                     int n, int ext_s)
{
    struct pump_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.ctx = ctx;
    for (int i = 0; i < n; i++)
        items[i].arg = &seen[i];
    poll_pump(ctx->db, items, n, ext_s, pump_cb, &pc);
    pump_ctx_free(&pc);
}

enum poll_status poll_pump_one(struct parley_ctx *ctx, const char *sid, int64_t cursor,
                               int ext_s, struct poll_seen *seen, int64_t *next)
{
    int64_t until = mono_ms() + 2000;
    for (int attempt = 0;; attempt++) {
        struct poll_item it;
        memset(&it, 0, sizeof it);
        it.sid = sid;
        it.ack = cursor;
        poll_pump_items(ctx, &it, seen, 1, ext_s);
        *next = it.next_seq;
        if (it.status != POLL_BUSY || mono_ms() >= until)
            return it.status;
        struct timespec ts = { 0, (attempt < 10 ? 500 : 3000) * 1000L };
        nanosleep(&ts, NULL);
    }
}
