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

int follow_channel(struct parley_ctx *ctx, const char *channel, const int64_t *job_id,
                   int64_t *cursor, int (*on_event)(void *ud, const struct evlog_event *ev),
                   int (*on_idle)(void *ud), void *ud, const volatile int *stop,
                   int heartbeat_ms)
{
    char chan[512];
    if (strlen(channel) >= sizeof chan)
        return FOLLOW_ERROR;
    str_copy(chan, sizeof chan, channel);
    int check_every = ctx->cfg->lease_ms / 2 > 100 ? ctx->cfg->lease_ms / 2 : 100;
    int64_t now = mono_ms();
    int64_t next_check = now + check_every;
    int64_t next_idle = heartbeat_ms > 0 ? now + heartbeat_ms : INT64_MAX;
    int64_t unrecorded = 0;   /* the job whose expiry was handed on from memory */
    int64_t patience = (int64_t)ctx->cfg->lease_ms * DB_PATIENCE_LEASES;
    if (patience < DB_PATIENCE_MIN_MS)
        patience = DB_PATIENCE_MIN_MS;
    int64_t db_lost_at = 0;   /* the first of the reads failing now (mono_ms) */
    for (;;) {
        if (stopped(ctx->bell, stop))
            return FOLLOW_STOPPED;
        /* Peek before reading: a ring after the read moves the slot past
         * seen, so the wait below cannot miss it. */
        uint32_t seen = ctx->bell ? bell_peek(ctx->bell, chan) : 0;
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, chan, *cursor, 256, &ev);
        if (n < 0) {
            /* The database cannot be reached now: try again (the
             * connection is revived at the next statement), with the
             * heartbeats going on, until the patience runs out; then a
             * viewer of a job gets the database's error as its end. */
            enum perr kind = db_err_kind(ctx->db);
            if (kind != PERR_DB_UNAVAILABLE)
                return FOLLOW_ERROR;
            now = mono_ms();
            if (!db_lost_at)
                db_lost_at = now;
            if (now - db_lost_at >= patience) {
                if (*job_id <= 0)
                    return FOLLOW_ERROR;
                struct evlog_event *xe = db_error_event(*job_id, *cursor, kind);
                if (!xe)
                    return FOLLOW_ERROR;
                int xr = on_event(ud, xe);
                evlog_free(xe, 1);
                return xr == FOLLOW_END ? FOLLOW_OVER : xr == FOLLOW_MORE ? FOLLOW_ERROR : FOLLOW_LEFT;
            }
            if (heartbeat_ms > 0 && now >= next_idle) {
                if (on_idle && on_idle(ud))
                    return FOLLOW_LEFT;
                next_idle = now + heartbeat_ms;
            }
            struct timespec ts = { 0, DB_RETRY_MS * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        db_lost_at = 0;
        int r = FOLLOW_MORE;
        for (int i = 0; i < n && r == FOLLOW_MORE; i++) {
            r = on_event(ud, &ev[i]);
            if (*cursor < ev[i].seq)
                *cursor = ev[i].seq;
        }
        evlog_free(ev, n);
        if (r == FOLLOW_END)
            return FOLLOW_OVER;
        if (r != FOLLOW_MORE)
            return FOLLOW_LEFT;
        now = mono_ms();
        if (n > 0) {
            if (heartbeat_ms > 0)
                next_idle = now + heartbeat_ms;
            continue;
        }
        if (now >= next_idle) {
            if (on_idle && on_idle(ud))
                return FOLLOW_LEFT;
            next_idle = now + heartbeat_ms;
        }
        if (*job_id > 0 && now >= next_check) {
            next_check = now + check_every;
            /* (a failed check is tried again at the next one) */
            int rr = jobs_recover_if_expired(ctx->db, ctx->bell, *job_id, now_ms());
            if (rr > 0)
                continue;         /* its error event is in the log now */
            if (rr == JOBS_EXPIRED_UNRECORDED && *job_id != unrecorded) {
                /* its lease ran out and the database cannot be written:
                 * the error recovery would append, from memory, once */
                unrecorded = *job_id;
                struct evlog_event *xe = jobs_expired_event(*job_id, *cursor);
                if (!xe)
                    return FOLLOW_ERROR;
                int xr = on_event(ud, xe);
                evlog_free(xe, 1);
                if (xr == FOLLOW_END)
                    return FOLLOW_OVER;
                if (xr != FOLLOW_MORE)
                    return FOLLOW_LEFT;
                continue;
            }
        }
        /* Sleep until the channel rings or the next due check: the lease
         * only while a job is followed, the idle hook only when set. */
        int64_t wake = next_idle;
        if (*job_id > 0 && next_check < wake)
            wake = next_check;
        int timeout = -1;
        if (wake != INT64_MAX) {
            int64_t left = wake - mono_ms();
            timeout = left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
        }
        if (!ctx->bell) {
            int ms = timeout >= 0 && timeout < NO_BELL_SLICE_MS ? timeout : NO_BELL_SLICE_MS;
            struct timespec ts = { 0, (long)ms * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        bell_wait(ctx->bell, chan, seen, timeout);
    }
}

/* follow(): a connection's events become its protocol's frames. */
struct conn_follow {
    struct parley_ctx *ctx;
    struct proto_conn *c;
    int (*on_frame)(void *ud, const char *frame, int64_t seq);
    int (*on_idle)(void *ud);
    void *ud;
};

static int conn_event(void *ud, const struct evlog_event *ev)
{
    struct conn_follow *f = ud;
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
    struct conn_follow *f = ud;
    return f->on_idle(f->ud);
}

int follow(struct parley_ctx *ctx, struct proto_conn *c,
           int (*on_frame)(void *ud, const char *frame, int64_t seq), int (*on_idle)(void *ud),
           void *ud, const volatile int *stop, int heartbeat_ms)
{
    if (!proto_following(c))
        return FOLLOW_OVER;
    struct conn_follow f = { ctx, c, on_frame, on_idle, ud };
    return follow_channel(ctx, c->channel, &c->job_id, &c->cursor, conn_event,
                          on_idle ? conn_idle : NULL, &f, stop, heartbeat_ms);
}
