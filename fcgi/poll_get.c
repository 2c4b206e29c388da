/* poll_get.c — GET /api/poll/{sid}?cursor=N&wait=S, in named steps:
 *
 *   get_params   cursor and wait from the query
 *   get_known    what this process knows of the session (poll_cache.h):
 *                when nothing happened to it since the last answer, no look
 *   get_look     look at the session without the lock or any write (the
 *                common case: nothing new); only when there is something to
 *                store does it pump the followed channel into the outbox,
 *                save the state and acknowledge the client's cursor, all in
 *                ONE write transaction (poll_pump_one); a session that only
 *                waits is renewed and its acknowledged frames deleted
 *   get_reply    reads the outbox after the cursor and answers when there
 *                is anything (or the session closed, the wait is over, the
 *                process stops)
 *   get_sleep    sleeps until the deadline, the next look, a ring or
 *                shutdown: on the doorbell of "poll:<sid>" (frames a POST
 *                adds) when the session follows nothing, else as a member of
 *                the process's group of waiters of that channel (poll_hub.h)
 *
 * A session never expires under a client that keeps polling: each look
 * renews it for PARLEY_POLL_IDLE past the end of this GET's wait when it
 * would expire sooner (poll_extension_s), a pump or a batch does the same,
 * and a GET that skips its look does so only while the expiry it knows is
 * that far away.
 * Where the transport can park a request (the threaded modes), get_sleep
 * is not taken in the worker: the GET is parked (poll_park.h) and the
 * process's hub thread runs the same steps when it wakes (poll_get.h).
 * Runs in a parley.fcgi worker thread, or the hub thread for a parked GET;
 * uses that thread's ctx (g->ctx).
 */
#include "handlers.h"
#include "poll_cache.h"
#include "poll_get.h"
#include "poll_park.h"
#include "poll_pump.h"
#include "poll_replay.h"
#include "poll_transport.h"
#include "status.h"
#include "bell.h"
#include "jobs.h"
#include "proto.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What peek_session saw. */
struct peek {
    int work;              /* a locked pump would change the session: frames to
                            * add, or the cursor, job or channel moved */
    int following;         /* as stored: follows a channel (chan) */
    int job;               /* ... and a job in it (its lease is checked by looks) */
    int closed;
    uint64_t vid;          /* its virtual frames (poll_replay.h) when no work */
    int64_t job_id;        /* the followed job (when job) */
    struct poll_meta meta;
};

static int parse_int_param(struct request *r, const char *name, long long def, long long min,
                           long long max, long long *out)
{
    if (req_query_int(r, name, def, min, max, out) < 0) {
        res_error_kind(r, PERR_BAD_INPUT, "Query parameter %s must be an integer from %lld to %lld",
                       name, min, max);
        return -1;
    }
    return 0;
}

/* Fills g from the request. 0, or -1 with the 400 written. */
static int get_params(struct poll_get *g, struct request *r)
{
    long long cursor, wait;
    if (parse_int_param(r, "cursor", 0, 0, INT64_MAX / 2, &cursor) < 0 ||
        parse_int_param(r, "wait", POLL_WAIT_DEFAULT, 0, POLL_WAIT_MAX, &wait) < 0)
        return -1;
    struct parley_ctx *ctx = r->ctx;
    memset(g, 0, sizeof *g);
    g->r = r;
    g->ctx = ctx;
    g->sid = r->params[0];
    g->cursor = cursor;
    g->wait_s = (int)wait;
    g->deadline = mono_ms() + wait * 1000;
    g->ext_s = poll_extension_s(ctx, g->wait_s);
    g->idle_ms = (int64_t)ctx->cfg->poll_idle_s * 1000;
    /* Without a ring, look again only while following a job, this often: a
     * look is what recovers a job whose worker died (proto_pump). */
    g->recheck_ms = ctx->cfg->lease_ms / 2 > 1000 ? ctx->cfg->lease_ms / 2 : 1000;
    poll_channel(g->pchan, sizeof g->pchan, g->sid);
    g->look = 1;
    return 0;
}

/* The lease checks of followed jobs this process made lately: a job's
 * viewers need it checked every recheck interval (a worker that died), not
 * each viewer on its own. Direct-mapped, under one mutex. */
#define LIVE_SLOTS 256
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int64_t job, at; } live_jobs[LIVE_SLOTS];

/* 1 when job was found live (its lease not expired) within the last ms
 * milliseconds, by this call or an earlier one of this process; 0 when its
 * lease expired (it was failed now: its error is in the log) or the check
 * failed — then the caller looks at the session. */
static int job_live(struct parley_ctx *ctx, int64_t job, int ms)
{
    int64_t now = mono_ms();
    unsigned slot = (unsigned)((uint64_t)job % LIVE_SLOTS);
    pthread_mutex_lock(&live_lock);
    int fresh = live_jobs[slot].job == job && now - live_jobs[slot].at < ms;
    pthread_mutex_unlock(&live_lock);
    if (fresh)
        return 1;
    if (jobs_recover_if_expired(ctx->db, ctx->bell, job, now_ms()) != 0)
        return 0;
    pthread_mutex_lock(&live_lock);
    live_jobs[slot].job = job;
    live_jobs[slot].at = now;
    pthread_mutex_unlock(&live_lock);
    return 1;
}

/* A GET with virtual frames whose job's re-check came: the job's lease
 * instead of a look at the session (its frames come from the log anyway).
 * 1 done (next_look moved on), 0 the session must be looked at. */
static int recheck_job_only(struct poll_get *g)
{
    if (!g->vid || !g->job_id || !job_live(g->ctx, g->job_id, g->recheck_ms))
        return 0;
    g->looked_at = mono_ms();
    g->next_look = g->looked_at + g->recheck_ms;
    return 1;
}

/* 1 when a session expiring at `expires` must be renewed by this GET: it
 * would expire sooner than half the idle time after this GET's wait. */
static int renew_due(const struct poll_get *g, int64_t expires)
{
    int64_t wait_left = g->deadline - mono_ms();
    return expires - now_ms() < g->idle_ms / 2 + (wait_left > 0 ? wait_left : 0);
}

/* 1 when the client acknowledged frames still stored (next_seq, stored:
 * the outbox's extent): a renewal deletes them. */
static int acked_stored(const struct poll_get *g, int64_t next_seq, int64_t stored)
{
    return stored > 0 && g->cursor >= next_seq - stored;
}

/* g follows g->chan with virtual frames g->vid and the channel's bell
 * moved: views them (no database when another GET of this process read the
 * log since). Sets reread when there are frames after the cursor, look when
 * the session itself was touched (a POST or DELETE rang "poll:<sid>"), the
 * frames are blocked (an event only a pump may store) or gone. */
static void virt_check(struct poll_get *g)
{
    struct parley_ctx *ctx = g->ctx;
    if (ctx->bell && bell_peek(ctx->bell, g->pchan) != g->seen_p) {
        g->look = 1;
        return;
    }
    if (ctx->bell)
        g->seen_c = bell_peek(ctx->bell, g->chan);   /* before the view reads the log */
    struct poll_view v;
    if (poll_replay_view(ctx, g->vid, &v) <= 0 || v.work) {
        g->look = 1;
        return;
    }
    if (g->next_seq + v.nframes - 1 > g->cursor)
        g->reread = 1;
}

/* Uses what this process knows of the session, when nothing happened to
 * it since: then the GET starts without a look. A session with virtual
 * frames needs no look when only its channel moved: a view of them does. */
static void get_known(struct poll_get *g)
{
    struct parley_ctx *ctx = g->ctx;
    struct poll_known k;
    if (!ctx->bell || !poll_known_get(g->sid, &k) ||
        !(config_open_mode(ctx->cfg) || strcmp(k.owner, g->r->user) == 0))
        return;
    str_copy(g->chan, sizeof g->chan, k.chan);   /* a look peeks the right bell first */
    int chan_moved = k.following && bell_peek(ctx->bell, k.chan) != k.seen_c;
    /* (a session that follows a job but has no virtual frames known was
     * pumped by the last answer: a look finds them, so that its next
     * events need no pump) */
    int recheck = k.job && mono_ms() - k.looked_at >= g->recheck_ms;
    if (bell_peek(ctx->bell, g->pchan) != k.seen_p || (chan_moved && !k.vid) || (k.job && !k.vid) ||
        renew_due(g, k.expires) ||
        (k.stored >= POLL_TRIM_AT && acked_stored(g, k.next_seq, k.stored)))
        return;
    /* nothing happened to the session since the last answer: no look */
    g->look = 0;
    g->reread = k.last > g->cursor;
    g->following = k.following;
    g->job = k.job;
    g->seen_c = k.seen_c;
    g->seen_p = k.seen_p;
    g->expires = k.expires;
    g->looked_at = k.looked_at;
    g->next_seq = k.next_seq;
    g->stored = k.stored;
    g->vid = k.vid;
    g->job_id = k.job_id;
    g->next_look = k.job ? k.looked_at + g->recheck_ms : INT64_MAX;
    if (recheck && !recheck_job_only(g)) {
        g->look = 1;           /* the job's lease: look at the session */
        return;
    }
    if (chan_moved)
        virt_check(g);
}

/* Looks at the session without locking or writing anything: loads its
 * state and views what its followed channel gives after it (poll_replay.h:
 * virtual frames, or work for a pump) (fills *pk, g->chan and g->ci). 0, or
 * -1 with the error response written (410: unknown, expired or another
 * user's). Nothing to store is the common case of a poll, and then it costs
 * reads only: no write lock. */
static int peek_session(struct poll_get *g, struct peek *pk)
{
    struct parley_ctx *ctx = g->ctx;
    char *state = NULL, owner[128];
    enum poll_status pr = poll_peek_meta(ctx->db, g->sid, &state, owner, sizeof owner, &pk->meta);
    if (pr != POLL_OK)
        return poll_fail(g->r, pr), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, g->r->user) != 0) {
        free(state);
        return poll_fail(g->r, POLL_GONE), -1;
    }
    struct proto_conn c;
    int ok = proto_conn_load(&c, state);
    free(state);
    if (ok < 0)
        return res_error(g->r, 500, "Corrupt poll session state"), -1;
    pk->following = proto_following(&c);
    pk->job = pk->following && c.job_id != 0;
    str_copy(g->chan, sizeof g->chan, c.channel);
    pk->closed = c.close;
    g->ci.code = c.close_code;
    str_copy(g->ci.reason, sizeof g->ci.reason, c.close_reason);
    pk->work = 0;
    pk->vid = 0;
    pk->job_id = pk->job ? c.job_id : 0;
    if (pk->following) {
        struct poll_view v;
        if (poll_replay_open(ctx, &c, &v) < 0 || v.work) {
            pk->work = 1;          /* the pump stores it (or reports the error) */
        } else {
            pk->vid = v.id;
            /* every logged event read, a job followed: the recovery of a
             * job whose worker died (what proto_pump runs when the log has
             * nothing new); a job it failed has its error to store */
            if (v.at_end && c.job_id &&
                jobs_recover_if_expired(ctx->db, ctx->bell, c.job_id, now_ms()) != 0) {
                pk->work = 1;
                pk->vid = 0;
            }
        }
    }
    proto_conn_cleanup(&c);
    return 0;
}

/* Frames the outbox holds after the client's cursor, once next_seq is the
 * outbox's next number and everything up to the cursor was deleted. */
static int64_t stored_after_cursor(const struct poll_get *g, int64_t next_seq)
{
    return next_seq - 1 > g->cursor ? next_seq - 1 - g->cursor : 0;
}

/* The look (see the file comment). 0, or -1 with the response written. */
static int get_look(struct poll_get *g)
{
    struct parley_ctx *ctx = g->ctx;
    /* Peek the bells before looking at the log, so an event appended after
     * the look still wakes the wait. Only here: a wait that ends without a
     * ring keeps these values, so a ring that comes after it is not lost. */
    g->seen_p = ctx->bell ? bell_peek(ctx->bell, g->pchan) : 0;
    g->seen_c = g->chan[0] && ctx->bell ? bell_peek(ctx->bell, g->chan) : 0;
    char before[200];
    str_copy(before, sizeof before, g->chan);
    struct peek pk;
    memset(&pk, 0, sizeof pk);
    if (peek_session(g, &pk) < 0)
        return -1;
    if (pk.following && strcmp(before, g->chan) != 0) {
        /* first sight of this channel: peek its bell, then look again */
        g->seen_c = ctx->bell ? bell_peek(ctx->bell, g->chan) : 0;
        if (peek_session(g, &pk) < 0)
            return -1;
    }
    g->following = pk.following;
    g->job = pk.job;
    g->closed = pk.closed;
    g->vid = pk.work || pk.closed ? 0 : pk.vid;
    g->job_id = pk.job_id;
    g->expires = pk.meta.expires_at;
    g->next_seq = pk.meta.next_seq;
    g->stored = pk.meta.stored;
    g->looked_at = mono_ms();
    if (pk.work) {
        /* something to store: pump, save and ack in one write transaction */
        struct poll_seen po;
        int64_t next, t = now_ms();
        enum poll_status st = poll_pump_one(ctx, g->sid, g->cursor, g->ext_s, &po, &next);
        if (st != POLL_OK)
            return poll_fail(g->r, st), -1;
        g->expires = t + (int64_t)g->ext_s * 1000;
        g->following = po.following;
        g->closed = po.closed;
        g->ci = po.ci;
        str_copy(g->chan, sizeof g->chan, po.chan);
        g->job = po.job;
        g->job_id = 0;         /* not known after a pump: the next look finds it */
        g->next_seq = next;
        g->stored = stored_after_cursor(g, next);
        g->wrote = 1;
        g->vid = 0;            /* a new state: the next look finds its frames */
    } else if (!g->wrote && (renew_due(g, pk.meta.expires_at) ||
                             acked_stored(g, pk.meta.next_seq, pk.meta.stored))) {
        /* a session that only waits: keep it alive for this wait and the
         * idle time after it, and drop the frames its client received */
        int64_t t = now_ms();
        if (poll_touch(ctx->db, g->sid, g->cursor, g->ext_s) < 0)   /* 503 when it cannot be written now */
            return res_error_kind(g->r, db_err_kind(ctx->db), "%s", db_err_text(ctx->db, "Database error")), -1;
        g->expires = t + (int64_t)g->ext_s * 1000;
        if (acked_stored(g, g->next_seq, g->stored))
            g->stored = stored_after_cursor(g, g->next_seq);
        g->wrote = 1;
    }
    g->next_look = g->job || (pk.work && g->following) ? mono_ms() + g->recheck_ms : INT64_MAX;
    return 0;
}

/* Writes {"messages": [...], "cursor": last, "closed": b} (+ close_code,
 * close_reason once closed) around the frames as stored: no parse and
 * re-dump of them. Frees json. Returns 0. */
static int answer(struct request *r, char *json, int64_t last, int closed,
                  const struct poll_close *ci)
{
    char tail[64], *reason = NULL;
    if (closed) {
        /* what a WebSocket close frame would carry */
        json_t *jr = json_string(ci->reason);
        reason = jr ? json_dumps(jr, JSON_ENCODE_ANY) : NULL;
        json_decref(jr);
        snprintf(tail, sizeof tail, ",\"close_code\":%d,\"close_reason\":",
                 ci->code ? ci->code : 1000);
    }
    size_t cap = (json ? strlen(json) : 2) + (reason ? strlen(reason) : 0) + 160;
    char *text = malloc(cap);
    if (!text) {
        free(json);
        free(reason);
        return res_error(r, 500, "Out of memory");
    }
    int len = snprintf(text, cap, "{\"messages\":%s,\"cursor\":%lld,\"closed\":%s%s%s}",
                       json ? json : "[]", (long long)last, closed ? "true" : "false",
                       closed ? tail : "", closed ? (reason ? reason : "\"\"") : "");
    free(json);
    free(reason);
    res_json_text(r, 200, text, (size_t)len);
    free(text);
    return 0;
}

/* Records what this GET knew of the session for the next one (poll_cache.h). */
static void remember(const struct poll_get *g, int n, int64_t last)
{
    struct poll_known kn;
    memset(&kn, 0, sizeof kn);
    str_copy(kn.sid, sizeof kn.sid, g->sid);
    str_copy(kn.owner, sizeof kn.owner, g->r->user);
    str_copy(kn.chan, sizeof kn.chan, g->following ? g->chan : "");
    kn.following = g->following;
    kn.job = g->job;
    kn.seen_c = g->seen_c;
    kn.seen_p = g->seen_p;
    kn.last = n < POLL_MAX_FRAMES ? last : INT64_MAX;
    kn.expires = g->expires;
    kn.looked_at = g->looked_at;
    kn.next_seq = g->next_seq;
    kn.stored = g->stored;
    kn.vid = g->vid;
    kn.job_id = g->job_id;
    poll_known_put(&kn);
}

/* Appends g's virtual frames after *last (or the cursor) to *json (n
 * frames so far). 0, or -1 when they are gone (evicted: look again). */
static int add_virtual(struct poll_get *g, char **json, int *n, int64_t *last)
{
    int64_t from = (*last > g->cursor ? *last : g->cursor) + 1;
    if (from < g->next_seq || *n >= POLL_MAX_FRAMES)
        return 0;              /* stored frames come first (a full answer) */
    size_t len;
    if (!*json) {
        if (!(*json = malloc(3)))   /* "[]" and its NUL, before any frame */
            return -1;
        len = 1;
        (*json)[0] = '[';
    } else {
        len = strlen(*json) - 1;   /* without its ']' */
    }
    int k = poll_replay_frames(g->vid, from - g->next_seq, POLL_MAX_FRAMES - *n, json, &len, n);
    (*json)[len] = ']';
    (*json)[len + 1] = '\0';
    if (k < 0)
        return -1;
    if (k > 0)
        *last = from + k - 1;
    return 0;
}

/* Reads the outbox (and the virtual frames) and answers when there is
 * anything to say. 1 answered (or an error written), 0 nothing yet: sleep,
 * 2 the virtual frames are gone: look again. */
static int get_reply(struct poll_get *g)
{
    struct parley_ctx *ctx = g->ctx;
    int stop = poll_stopping(ctx);
    int64_t left = g->deadline - mono_ms();
    char *json = NULL;
    int64_t last = g->cursor;
    int n = 0;
    /* without a look or a batch's word (no ring) nothing changed: nothing to read yet */
    if (g->look || g->reread || g->closed || left <= 0 || stop) {
        /* the outbox holds nothing after the cursor when the client has
         * every stored frame and the rest are virtual */
        if (!g->vid || g->closed || g->cursor < g->next_seq - 1)
            n = poll_read(ctx->db, g->sid, g->cursor, POLL_MAX_FRAMES, &json, &last);
        if (n < 0)
            return res_error_kind(g->r, db_err_kind(ctx->db), "%s", db_err_text(ctx->db, "Database error")), 1;
        if (g->vid && !g->closed && add_virtual(g, &json, &n, &last) < 0) {
            free(json);
            g->vid = 0;
            g->look = 1;
            return 2;
        }
    }
    g->look = g->reread = 0;
    if (n > 0 || g->closed || left <= 0 || stop) {
        if (ctx->bell && !g->closed && !stop)
            remember(g, n, last);
        else
            poll_known_drop(g->sid);
        answer(g->r, json, last, g->closed, &g->ci);
        return 1;
    }
    free(json);
    return 0;
}

int64_t poll_get_until(const struct poll_get *g)
{
    return g->next_look < g->deadline ? g->next_look : g->deadline;
}

int poll_get_woken(struct poll_get *g, enum poll_get_wake wk, const struct poll_hub_result *res)
{
    if (wk == POLL_GET_RUNG) {
        g->look = 1;
    } else if (wk == POLL_GET_CHAN) {
        virt_check(g);
    } else if (wk == POLL_GET_APPLIED) {
        /* the hub ran virt_check already */
    } else if (wk == POLL_GET_BATCH) {
        if (res->status != POLL_OK)
            return poll_fail(g->r, res->status), -1;
        g->following = res->seen.following;
        g->closed = res->seen.closed;
        g->ci = res->seen.ci;
        if (!g->following || strcmp(res->seen.chan, g->chan) != 0 || res->seen.job != g->job) {
            g->look = 1;       /* the session moved on: look at it afresh */
            str_copy(g->chan, sizeof g->chan, res->seen.chan);
        } else {
            g->reread = 1;
        }
        g->next_seq = res->next_seq;
        g->stored = stored_after_cursor(g, res->next_seq);
        g->wrote = 1;
        g->vid = 0;            /* pumped: a new state */
    } else {
        g->look = mono_ms() >= g->next_look && !recheck_job_only(g);
    }
    return 0;
}

int poll_get_steps(struct poll_get *g)
{
    for (int pass = 0;; pass++) {
        if (g->look && get_look(g) < 0) {
            poll_known_drop(g->sid);   /* an error was answered */
            return 1;
        }
        if (pass >= 2)
            g->vid = 0;        /* evicted again and again: the outbox only */
        int rc = get_reply(g);
        if (rc != 2)
            return rc;
    }
}

/* Sleeps until the deadline, the next look, a ring or shutdown
 * (bell_wake_all): no time slices, so an idle waiter costs nothing. Sets
 * look / reread for what woke it. 0, or -1 with an error response written. */
static int get_sleep(struct poll_get *g)
{
    struct parley_ctx *ctx = g->ctx;
    int64_t until = poll_get_until(g);
    if (!ctx->bell) {
        /* no doorbell: degraded mode, look every 250 ms */
        int64_t ms = until - mono_ms();
        struct timespec ts = { 0, (ms > 250 ? 250 : ms > 0 ? ms : 0) * 1000000L };
        nanosleep(&ts, NULL);
        g->look = 1;
        return 0;
    }
    if (g->vid) {
        /* virtual frames: the channel's bell, then a view (no batch) */
        int64_t ms = until - mono_ms();
        int rung = ms > 0 && !poll_stopping(ctx)
                       ? bell_wait(ctx->bell, g->chan, g->seen_c,
                                   ms > INT32_MAX ? INT32_MAX : (int)ms)
                       : 0;
        return poll_get_woken(g, rung != 0 ? POLL_GET_CHAN : POLL_GET_TIMEOUT, NULL);
    }
    if (!g->following) {
        int64_t ms = until - mono_ms();
        int rung = ms > 0 && !poll_stopping(ctx)
                       ? bell_wait(ctx->bell, g->pchan, g->seen_p,
                                   ms > INT32_MAX ? INT32_MAX : (int)ms)
                       : 0;
        return poll_get_woken(g, rung != 0 ? POLL_GET_RUNG : POLL_GET_TIMEOUT, NULL);
    }
    /* with this process's other waiters of the channel: one batch pumps them all */
    struct poll_hub_result res;
    enum poll_hub_wake wk = poll_hub_wait(ctx, g->sid, g->cursor, g->job, g->chan, &g->seen_c,
                                          until, g->ext_s, &res);
    return poll_get_woken(g, wk == POLL_HUB_LOOK     ? POLL_GET_RUNG
                             : wk == POLL_HUB_RESULT ? POLL_GET_BATCH
                                                     : POLL_GET_TIMEOUT,
                          &res);
}

int h_poll_get(struct request *r)
{
    struct poll_get g;
    if (get_params(&g, r) < 0)
        return 0;
    get_known(&g);
    for (;;) {
        if (poll_get_steps(&g))
            return 0;
        /* nothing to say yet: park the GET (no thread waits for it), or
         * sleep here where parking is not offered or is full */
        if (poll_park(&g))
            return 0;
        if (get_sleep(&g) < 0)
            break;
    }
    poll_known_drop(g.sid);        /* an error was answered */
    return 0;
}
