/* follow.c — the one follow loop (follow.h). */
#include "follow.h"
#include "bell.h"
#include "db.h"
#include "jobs.h"
#include "perr.h"
#include "util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_BELL_SLICE_MS 50
/* A read that failed because the database cannot be reached (PostgreSQL
 * restarting) is tried again every DB_RETRY_MS, for at most
 * DB_PATIENCE_LEASES leases (at least DB_PATIENCE_MIN_MS): a restart that
 * is over costs the viewer nothing. */
#define DB_RETRY_MS 200
#define DB_PATIENCE_LEASES 3
#define DB_PATIENCE_MIN_MS 5000

static int stopped(parley_bell *bell, const volatile int *stop)
{
    return (stop && *stop) || (bell && bell_stopped(bell));
}

/* The "error" event, made in memory (from_memory, seq cursor), that tells
 * a viewer of job_id the database failed it (kind's code and text). A new
 * one-element array (evlog_free(ev, 1)), NULL when out of memory. */
static struct evlog_event *db_error_event(int64_t job_id, int64_t cursor, enum perr kind)
{
    struct evlog_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->seq = cursor;
    ev->from_memory = 1;
    ev->job_id = job_id;
    ev->created_at = now_ms();
    ev->type = strdup("error");
    json_t *o = json_pack("{s:I, s:s, s:s, s:s}", "job_id", (json_int_t)job_id, "message",
                          perr_text(kind), "kind", "database", "code", perr_code(kind));
    ev->data = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!ev->type || !ev->data) {
        evlog_free(ev, 1);
        return NULL;
    }
    ev->data_len = strlen(ev->data);
    return ev;
}

int follow_begin(struct follow_run *f, const struct parley_ctx *ctx, const char *channel,
                 const int64_t *job_id, int64_t *cursor,
                 int (*on_event)(void *ud, const struct evlog_event *ev),
                 int (*on_idle)(void *ud), void *ud, const volatile int *stop, int heartbeat_ms)
{
    memset(f, 0, sizeof *f);
    if (strlen(channel) >= sizeof f->chan)
        return FOLLOW_ERROR;
    str_copy(f->chan, sizeof f->chan, channel);
    f->job_id = job_id;
    f->cursor = cursor;
    f->on_event = on_event;
    f->on_idle = on_idle;
    f->ud = ud;
    f->stop = stop;
    f->heartbeat_ms = heartbeat_ms;
    f->check_every = ctx->cfg->lease_ms / 2 > 100 ? ctx->cfg->lease_ms / 2 : 100;
    int64_t now = mono_ms();
    f->next_check = now + f->check_every;
    f->next_idle = heartbeat_ms > 0 ? now + heartbeat_ms : INT64_MAX;
    f->patience = (int64_t)ctx->cfg->lease_ms * DB_PATIENCE_LEASES;
    if (f->patience < DB_PATIENCE_MIN_MS)
        f->patience = DB_PATIENCE_MIN_MS;
    f->wake = INT64_MAX;
    return 0;
}

int follow_step(struct parley_ctx *ctx, struct follow_run *f)
{
    for (;;) {
        if (stopped(ctx->bell, f->stop))
            return FOLLOW_STOPPED;
        /* Peek before reading: a ring after the read moves the slot past
         * seen, so a wait past it cannot miss it. */
        f->seen = ctx->bell ? bell_peek(ctx->bell, f->chan) : 0;
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, f->chan, *f->cursor, 256, &ev);
        int64_t now;
        if (n < 0) {
            /* The database cannot be reached now: try again (the
             * connection is revived at the next statement), with the
             * heartbeats going on, until the patience runs out; then a
             * viewer of a job gets the database's error as its end. */
            enum perr kind = db_err_kind(ctx->db);
            if (kind != PERR_DB_UNAVAILABLE)
                return FOLLOW_ERROR;
            now = mono_ms();
            if (!f->db_lost_at)
                f->db_lost_at = now;
            if (now - f->db_lost_at >= f->patience) {
                if (*f->job_id <= 0)
                    return FOLLOW_ERROR;
                struct evlog_event *xe = db_error_event(*f->job_id, *f->cursor, kind);
                if (!xe)
                    return FOLLOW_ERROR;
                int xr = f->on_event(f->ud, xe);
                evlog_free(xe, 1);
                return xr == FOLLOW_END ? FOLLOW_OVER : xr == FOLLOW_MORE ? FOLLOW_ERROR : FOLLOW_LEFT;
            }
            if (f->heartbeat_ms > 0 && now >= f->next_idle) {
                if (f->on_idle && f->on_idle(f->ud))
                    return FOLLOW_LEFT;
                f->next_idle = now + f->heartbeat_ms;
            }
            f->wake = now + DB_RETRY_MS;   /* a ring only makes the retry sooner */
            f->retry = 1;
            return FOLLOW_WAIT;
        }
        f->db_lost_at = 0;
        f->retry = 0;
        int r = FOLLOW_MORE;
        for (int i = 0; i < n && r == FOLLOW_MORE; i++) {
            r = f->on_event(f->ud, &ev[i]);
            if (*f->cursor < ev[i].seq)
                *f->cursor = ev[i].seq;
        }
        evlog_free(ev, n);
        if (r == FOLLOW_END)
            return FOLLOW_OVER;
        if (r != FOLLOW_MORE)
            return FOLLOW_LEFT;
        now = mono_ms();
        if (n > 0) {
            if (f->heartbeat_ms > 0)
                f->next_idle = now + f->heartbeat_ms;
            continue;
        }
        if (now >= f->next_idle) {
            if (f->on_idle && f->on_idle(f->ud))
                return FOLLOW_LEFT;
            f->next_idle = now + f->heartbeat_ms;
        }
        if (*f->job_id > 0 && now >= f->next_check) {
            f->next_check = now + f->check_every;
            /* (a failed check is tried again at the next one) */
            int rr = jobs_recover_if_expired(ctx->db, ctx->bell, *f->job_id, now_ms());
            if (rr > 0)
                continue;         /* its error event is in the log now */
            if (rr == JOBS_EXPIRED_UNRECORDED && *f->job_id != f->unrecorded) {
                /* its lease ran out and the database cannot be written:
                 * the error recovery would append, from memory, once */
                f->unrecorded = *f->job_id;
                struct evlog_event *xe = jobs_expired_event(*f->job_id, *f->cursor);
                if (!xe)
                    return FOLLOW_ERROR;
                int xr = f->on_event(f->ud, xe);
                evlog_free(xe, 1);
                if (xr == FOLLOW_END)
                    return FOLLOW_OVER;
                if (xr != FOLLOW_MORE)
                    return FOLLOW_LEFT;
                continue;
            }
        }
        /* Wait until the channel rings or the next due check: the lease
         * only while a job is followed, the idle hook only when set. */
        f->wake = f->next_idle;
        if (*f->job_id > 0 && f->next_check < f->wake)
            f->wake = f->next_check;
        return FOLLOW_WAIT;
    }
}

void follow_wait(struct parley_ctx *ctx, const struct follow_run *f)
{
    int timeout = -1;
    if (f->wake != INT64_MAX) {
        int64_t left = f->wake - mono_ms();
        timeout = left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
    }
    if (!ctx->bell || f->retry) {
        int ms = f->retry || (timeout >= 0 && timeout < NO_BELL_SLICE_MS) ? timeout : NO_BELL_SLICE_MS;
        struct timespec ts = { 0, (long)ms * 1000000L };
        nanosleep(&ts, NULL);
        return;
    }
    if (timeout != 0)
        bell_wait(ctx->bell, f->chan, f->seen, timeout);
}

int follow_channel(struct parley_ctx *ctx, const char *channel, const int64_t *job_id,
                   int64_t *cursor, int (*on_event)(void *ud, const struct evlog_event *ev),
                   int (*on_idle)(void *ud), void *ud, const volatile int *stop,
                   int heartbeat_ms)
{
    struct follow_run f;
    if (follow_begin(&f, ctx, channel, job_id, cursor, on_event, on_idle, ud, stop,
                     heartbeat_ms) < 0)
        return FOLLOW_ERROR;
    for (;;) {
        int r = follow_step(ctx, &f);
        if (r != FOLLOW_WAIT)
            return r;
        follow_wait(ctx, &f);
    }
}

/* follow(): a connection's events become its protocol's frames. */
static int conn_event(void *ud, const struct evlog_event *ev)
{
    struct follow_conn *f = ud;
    struct proto_frames fr;
    frames_init(&fr);
    proto_event(f->ctx, f->c, ev, &fr);   /* a frame it could not build is skipped */
    int quit = 0;
    /* an event from memory is not in the log: its frames carry no seq
     * (0: SSE writes no id line), a resume must not start after it */
    for (int k = 0; k < fr.n && !quit; k++)
        quit = f->on_frame(f->ud, fr.v[k], ev->from_memory ? 0 : ev->seq) != 0;
    frames_free(&fr);
    if (quit)
        return FOLLOW_QUIT;
    return proto_following(f->c) ? FOLLOW_MORE : FOLLOW_END;
}

static int conn_idle(void *ud)
{
    struct follow_conn *f = ud;
    return f->on_idle(f->ud);
}

int follow_conn_begin(struct follow_conn *f, const struct parley_ctx *ctx, struct proto_conn *c,
                      int (*on_frame)(void *ud, const char *frame, int64_t seq),
                      int (*on_idle)(void *ud), void *ud, const volatile int *stop,
                      int heartbeat_ms)
{
    memset(f, 0, sizeof *f);
    f->c = c;
    f->on_frame = on_frame;
    f->on_idle = on_idle;
    f->ud = ud;
    f->over = !proto_following(c);
    if (f->over)
        return 0;
    return follow_begin(&f->run, ctx, c->channel, &c->job_id, &c->cursor, conn_event,
                        on_idle ? conn_idle : NULL, f, stop, heartbeat_ms);
}

int follow_conn_step(struct parley_ctx *ctx, struct follow_conn *f)
{
    if (f->over)
        return FOLLOW_OVER;
    f->ctx = ctx;
    return follow_step(ctx, &f->run);
}

int follow(struct parley_ctx *ctx, struct proto_conn *c,
           int (*on_frame)(void *ud, const char *frame, int64_t seq), int (*on_idle)(void *ud),
           void *ud, const volatile int *stop, int heartbeat_ms)
{
    struct follow_conn f;
    if (follow_conn_begin(&f, ctx, c, on_frame, on_idle, ud, stop, heartbeat_ms) < 0)
        return FOLLOW_ERROR;
    for (;;) {
        int r = follow_conn_step(ctx, &f);
        if (r != FOLLOW_WAIT)
            return r;
        follow_wait(ctx, &f.run);
    }
}
