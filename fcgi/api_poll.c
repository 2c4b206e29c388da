/* api_poll.c — the generic long-poll transport (DESIGN §3), carrying the
 * seed 000/001/002 protocols with exactly the frames their WebSocket
 * endpoints send (core/proto.h adapters).
 *
 *   POST   /api/poll/open   {"path": "/ws/<id>?token=..."}  → {"sid", "cursor": 0}
 *   GET    /api/poll/{sid}?cursor=N&wait=25  → {"messages": [...], "cursor": M, "closed": b}
 *                                   (+ "close_code", "close_reason" once closed)
 *   POST   /api/poll/{sid}  one JSON frame, or several as NDJSON → 202
 *   DELETE /api/poll/{sid}  → 204
 *
 * Session state lives in SQLite (core/pollsess.h), so any process serves any
 * request. A GET first looks without the session lock or any write (the
 * common case: nothing new); only when there is something to store does it
 * pump the followed channel into the outbox, save the state and acknowledge
 * the client's cursor, all in ONE write transaction (poll_pump). With
 * nothing to send it sleeps until its deadline or a ring: on the doorbell of
 * "poll:<sid>" (frames a POST adds) when it follows nothing, else as a
 * member of the process's group of waiters of that channel (the hub below):
 * one ring of the channel makes one of them pump every session of the group
 * in one write transaction, the others only read their outbox. No time
 * slices: an idle waiter costs no CPU; shutdown ends waits through
 * bell_wake_all(), which fcgi/main.c calls at a stop signal. A generation
 * a POST starts runs in the same thread after the HTTP response is
 * finished (r->after), so the client's next poll is not held up.
 * Runs in a parley.fcgi worker thread; uses the thread's ctx.
 */
#include "handlers.h"
#include "auth.h"
#include "bell.h"
#include "pollsess.h"
#include "proto.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_WAIT_DEFAULT 25
#define POLL_WAIT_MAX 30          /* stays under FcgidIOTimeout (40 s) */
#define POLL_MAX_FRAMES 500

static void poll_channel(char *out, size_t len, const char *sid)
{
    snprintf(out, len, "poll:%s", sid);
}

/* The user a poll request acts for: the dispatcher's JWT user, else a
 * token in the WebSocket path's query (seed 001 puts it there). 0 / -1
 * (401 written). */
static int poll_user(struct request *r, const char *path, char *user, size_t len)
{
    const struct parley_config *cfg = r->ctx->cfg;
    str_copy(user, len, r->user);
    if (config_open_mode(cfg) || r->user[0])
        return 0;
    const char *q = strstr(path, "?token=");
    if (!q)
        q = strstr(path, "&token=");
    char tok[4096] = "";
    if (q) {
        q += 7;
        size_t n = strcspn(q, "&#");
        if (n < sizeof tok) {
            memcpy(tok, q, n);
            tok[n] = '\0';
        }
    }
    enum auth_result ar = auth_verify(cfg->jwt_secret, tok[0] ? tok : NULL, 0, user, len);
    if (ar != AUTH_OK) {
        res_error(r, 401, "Unauthorized: %s", auth_message(ar));
        return -1;
    }
    return 0;
}

int h_poll_open(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *path = json_string_value(json_object_get(r->json, "path"));
    if (!path)
        return res_error(r, 400, "Missing field path (a WebSocket path such as /ws/<session_id>)");
    enum proto_kind kind;
    char param[160];
    if (proto_route(path, &kind, param, sizeof param) < 0)
        return res_error(r, 404, "No protocol is served at path %.200s", path);
    char user[128];
    if (poll_user(r, path, user, sizeof user) < 0)
        return 0;
    poll_expire(ctx->db, now_ms());

    struct proto_conn c;
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_open(ctx, &c, path, user, r->peer, &fr);
    char sid[37], *saved = NULL;
    if (rc < 0 && fr.n == 0) {
        res_error(r, 500, "Could not open the session (database error)");
        goto out;
    }
    if (!(saved = proto_conn_save(&c)) ||
        poll_open(ctx->db, path, user, saved, fr.v, fr.n, ctx->cfg->poll_idle_s, sid) < 0) {
        res_error(r, 500, "Could not store the poll session");
        goto out;
    }
    res_json(r, 200, json_pack("{s:s, s:i}", "sid", sid, "cursor", 0));
out:
    free(saved);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

/* Locks and loads the session; checks its owner. 0 with *c loaded;
 * otherwise the error response is written and -1 returned. */
static int load_session(struct request *r, const char *sid, struct proto_conn *c)
{
    struct parley_ctx *ctx = r->ctx;
    char *state = NULL, owner[128];
    int lr = poll_lock(ctx->db, sid, ctx->cfg->poll_idle_s, &state, owner, sizeof owner);
    if (lr == 1)
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    if (lr == 2)
        return res_error(r, 409, "Poll session busy: another request of it is in progress"), -1;
    if (lr < 0)
        return res_error(r, 500, "Database error"), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, r->user) != 0) {
        poll_unlock(ctx->db, sid);
        free(state);
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    }
    int ok = proto_conn_load(c, state);
    free(state);
    if (ok < 0) {
        poll_unlock(ctx->db, sid);
        return res_error(r, 500, "Corrupt poll session state"), -1;
    }
    return 0;
}

struct close_info { int code; char reason[120]; };

/* ---- pumping: the followed channel into the outbox, one write transaction ---- */

/* What a pump saw of one session (after pumping it). */
struct pump_out {
    int following;
    int job;                   /* follows a job (its lease is checked by looks) */
    int closed;
    char chan[200];
    struct close_info ci;
};

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
    struct pump_out *po = it->arg;
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

/* Pumps one session (lock-free look said there is work): one write
 * transaction, which also acknowledges the client's cursor. Waits for a
 * POST holding the session's lock up to ~2 s. Returns the poll_item status
 * (0, 1 gone, 2 still locked, -1 error); po and *next filled on 0. */
static int pump_one(struct parley_ctx *ctx, const char *sid, int64_t cursor, struct pump_out *po,
                    int64_t *next)
{
    int64_t until = mono_ms() + 2000;
    for (int attempt = 0;; attempt++) {
        struct pump_ctx pc;
        memset(&pc, 0, sizeof pc);
        pc.ctx = ctx;
        struct poll_item it;
        memset(&it, 0, sizeof it);
        it.sid = sid;
        it.ack = cursor;
        it.arg = po;
        poll_pump(ctx->db, &it, 1, ctx->cfg->poll_idle_s, pump_cb, &pc);
        pump_ctx_free(&pc);
        *next = it.next_seq;
        if (it.status != 2 || mono_ms() >= until)
            return it.status;
        struct timespec ts = { 0, (attempt < 10 ? 500 : 3000) * 1000L };
        nanosleep(&ts, NULL);
    }
}

/* ---- the hub: this process's waiting GETs, grouped by followed channel ----
 *
 * One event on a channel that N waiting GETs of this process follow wakes
 * all N (one doorbell slot). The first to get here becomes the batch's
 * leader: it peeks the bell (B), then pumps EVERY registered session of the
 * channel in one write transaction (poll_pump) and records, per waiter,
 * that its session was looked at up to bell value B ("covered") and
 * whether it now has something to answer. The others wait on the group's
 * condition variable while a batch runs, then find their result, or go
 * back to sleep on the bell with seen = B (nothing for them: a neighbour
 * channel of the slot, or an event of another job).
 *
 * Why no event is lost: a waiter registers with covered = the bell value
 * it peeked before its own look, and a batch sets covered = B, peeked
 * before the batch read anything. A waiter sleeps on the bell with
 * seen = covered, so any ring after the last look of its session wakes it;
 * woken, it peeks v and needs a batch unless covered is at or after v. A
 * batch only covers waiters registered when it started (in_batch); a
 * waiter may leave the group only when no batch works on it.
 * Sessions stay in SQLite: the batch re-reads each one inside its
 * transaction, so other processes' GETs and POSTs of a session stay safe. */
struct waiter {
    struct waiter *next;
    const char *sid;           /* borrowed from the request */
    int64_t cursor;            /* the client's: acknowledged in the batch */
    int job;                   /* follows a job, as its last look saw */
    uint32_t covered;          /* bell value up to which the session was looked at */
    int in_batch;              /* a batch works on it: it may not leave */
    int has_result;            /* a batch found something to answer */
    int status;                /* poll_item status */
    int64_t next_seq;
    struct pump_out po;
};

struct group {
    struct group *next;
    char chan[200];
    struct waiter *waiters;
    int nwaiters;
    int busy;                  /* a batch runs */
    pthread_cond_t cv;         /* batch done */
};

#define HUB_BUCKETS 256
static pthread_mutex_t hub_lock = PTHREAD_MUTEX_INITIALIZER;
static struct group *hub[HUB_BUCKETS];

/* Shutdown: waits have no time slices; parley.fcgi's signal thread calls
 * bell_wake_all() on the process's doorbell right after setting
 * parley_stopping (fcgi/main.c, request_stop), which ends every wait at
 * once (stopping() below). */

static unsigned hub_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % HUB_BUCKETS;
}

/* {hub_lock} The group of chan, created when missing (NULL: out of memory). */
static struct group *group_get(const char *chan)
{
    struct group **b = &hub[hub_hash(chan)], *g;
    for (g = *b; g; g = g->next)
        if (strcmp(g->chan, chan) == 0)
            return g;
    if (!(g = calloc(1, sizeof *g)))
        return NULL;
    str_copy(g->chan, sizeof g->chan, chan);
    pthread_cond_init(&g->cv, NULL);
    g->next = *b;
    *b = g;
    return g;
}

/* {hub_lock} Takes w out of g (once no batch works on it); frees an empty g. */
static void group_leave(struct group *g, struct waiter *w)
{
    while (w->in_batch)
        pthread_cond_wait(&g->cv, &hub_lock);
    for (struct waiter **p = &g->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            g->nwaiters--;
            break;
        }
    if (g->nwaiters == 0 && !g->busy) {
        for (struct group **p = &hub[hub_hash(g->chan)]; *p; p = &(*p)->next)
            if (*p == g) {
                *p = g->next;
                break;
            }
        pthread_cond_destroy(&g->cv);
        free(g);
    }
}

/* {hub_lock, released while pumping} Pumps every waiter of g in one write
 * transaction and records the results. */
static void group_batch(struct parley_ctx *ctx, struct group *g)
{
    g->busy = 1;
    uint32_t b = bell_peek(ctx->bell, g->chan);
    int n = g->nwaiters;
    struct waiter **ws = calloc((size_t)n, sizeof *ws);
    struct poll_item *items = calloc((size_t)n, sizeof *items);
    struct pump_out *outs = calloc((size_t)n, sizeof *outs);
    if (!ws || !items || !outs) {
        /* out of memory: every waiter answers 500 */
        for (struct waiter *w = g->waiters; w; w = w->next) {
            w->has_result = 1;
            w->status = -1;
        }
        n = 0;
    }
    int i = 0;
    for (struct waiter *w = g->waiters; w && i < n; w = w->next, i++) {
        w->in_batch = 1;
        ws[i] = w;
        items[i].sid = w->sid;
        items[i].ack = w->cursor;
        items[i].arg = &outs[i];
    }
    if (n > 0) {
        pthread_mutex_unlock(&hub_lock);
        struct pump_ctx pc;
        memset(&pc, 0, sizeof pc);
        pc.ctx = ctx;
        poll_pump(ctx->db, items, n, ctx->cfg->poll_idle_s, pump_cb, &pc);
        pump_ctx_free(&pc);
        pthread_mutex_lock(&hub_lock);
    }
    for (i = 0; i < n; i++) {
        struct waiter *w = ws[i];
        const struct pump_out *po = &outs[i];
        w->in_batch = 0;
        w->covered = b;
        if (items[i].status == 2)
            continue;          /* a POST holds the session: it rings the
                                * channel when it has saved, and the next
                                * batch pumps the session */
        if (items[i].status != 0 || items[i].next_seq - 1 > w->cursor || po->closed ||
            !po->following || strcmp(po->chan, g->chan) != 0 || po->job != w->job) {
            /* something to answer, or the session moved on in a way its
             * waiter must look at (another channel, a job to watch over) */
            w->has_result = 1;
            w->status = items[i].status;
            w->next_seq = items[i].next_seq;
            w->po = *po;
        }
    }
    free(ws);
    free(items);
    free(outs);
    g->busy = 0;
    pthread_cond_broadcast(&g->cv);
}

static int stopping(struct parley_ctx *ctx)
{
    return parley_stopping || (ctx->bell && bell_stopped(ctx->bell));
}

/* Waits, as a member of chan's group, for an event of chan until `until`
 * (monotonic ms). *seen: the bell value the session was last looked at
 * (updated). Returns 1 with *w's result (status, next_seq, po) when a
 * batch found something for this session; 0 on timeout or shutdown; 2
 * when the caller must look itself (out of memory for the group). */
static int group_wait(struct parley_ctx *ctx, const char *sid, int64_t cursor, int job,
                      const char *chan, uint32_t *seen, int64_t until, struct waiter *w)
{
    memset(w, 0, sizeof *w);
    w->sid = sid;
    w->cursor = cursor;
    w->job = job;
    w->covered = *seen;
    pthread_mutex_lock(&hub_lock);
    struct group *g = group_get(chan);
    if (!g) {
        /* out of memory: wait alone, then let the caller look */
        pthread_mutex_unlock(&hub_lock);
        int64_t left = until - mono_ms();
        if (left > 0 && !stopping(ctx))
            bell_wait(ctx->bell, chan, *seen, left > INT32_MAX ? INT32_MAX : (int)left);
        return 2;
    }
    w->next = g->waiters;
    g->waiters = w;
    g->nwaiters++;
    int got = 0;
    for (;;) {
        if (w->has_result) {
            got = 1;
            break;
        }
        uint32_t covered = w->covered;
        int64_t left = until - mono_ms();
        if (left <= 0 || stopping(ctx))
            break;
        pthread_mutex_unlock(&hub_lock);
        int rung = bell_wait(ctx->bell, chan, covered, left > INT32_MAX ? INT32_MAX : (int)left);
        uint32_t v = bell_peek(ctx->bell, chan);
        pthread_mutex_lock(&hub_lock);
        if (rung == 0 || stopping(ctx))
            continue;          /* timeout or shutdown: the checks above end it */
        /* rung: covered already, being covered, or lead a batch */
        while (!w->has_result && (int32_t)(w->covered - v) < 0) {
            if (g->busy)
                pthread_cond_wait(&g->cv, &hub_lock);
            else
                group_batch(ctx, g);
        }
    }
    group_leave(g, w);
    *seen = w->covered;
    pthread_mutex_unlock(&hub_lock);
    return got;
}

/* ---- what this process knows of a session: GETs that need no look ----
 *
 * A client's next GET usually comes right after its last answer, with the
 * cursor of that answer, and nothing happened to the session meanwhile. The
 * look it would start with (read the session, parse its state, read the
 * log) then only confirms that. So after answering, a GET records here
 * what it knew of the session and the doorbell values (of the channel and
 * of "poll:<sid>") up to which the session had been looked at or pumped,
 * and the next GET skips its look when both bells still hold those values:
 * nothing was appended to the channel and no POST or DELETE touched the
 * session since (they ring "poll:<sid>"), in any process. Only while the
 * session is far from expiry (no touch due) and, when it follows a job,
 * its last look is younger than the lease re-check interval. */
#define KNOWN_SLOTS 1024
struct known {
    char sid[37];
    char owner[128];
    char chan[200];
    int following, job;
    uint32_t seen_c, seen_p;   /* looked at / pumped up to these bell values */
    int64_t last;              /* the outbox had no frame after this one */
    int64_t expires;           /* session expiry, ms since the epoch (as known) */
    int64_t looked_at;         /* mono ms of the last look */
};
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;
static struct known known[KNOWN_SLOTS];

static struct known *known_slot(const char *sid)
{
    unsigned h = 2166136261u;
    for (const char *p = sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &known[(h ^ (h >> 15)) % KNOWN_SLOTS];
}

static int known_get(const char *sid, struct known *out)
{
    pthread_mutex_lock(&known_lock);
    struct known *k = known_slot(sid);
    int hit = strcmp(k->sid, sid) == 0;
    if (hit)
        *out = *k;
    pthread_mutex_unlock(&known_lock);
    return hit;
}

static void known_put(const struct known *in)
{
    pthread_mutex_lock(&known_lock);
    *known_slot(in->sid) = *in;
    pthread_mutex_unlock(&known_lock);
}

static void known_drop(const char *sid)
{
    pthread_mutex_lock(&known_lock);
    struct known *k = known_slot(sid);
    if (strcmp(k->sid, sid) == 0)
        k->sid[0] = '\0';
    pthread_mutex_unlock(&known_lock);
}

/* What peek_session saw. */
struct peek {
    int work;              /* a locked pump would change the session: frames to
                            * add, or the cursor, job or channel moved */
    int following;         /* as stored: follows a channel (chan) */
    int job;               /* ... and a job in it (its lease is checked by looks) */
    int closed;
    int64_t expires;       /* ms since the epoch */
};

/* Looks at the session without locking or writing anything: loads its
 * state and pumps the followed channel into frames it then drops (fills
 * *pk, chan and *ci). 0, or -1 with the error response written (410:
 * unknown, expired or another user's). Nothing new is the common case of a
 * poll, and then it costs reads only: no write lock. */
static int peek_session(struct request *r, const char *sid, struct peek *pk, char *chan,
                        size_t chanlen, struct close_info *ci)
{
    struct parley_ctx *ctx = r->ctx;
    char *state = NULL, owner[128];
    int pr = poll_peek(ctx->db, sid, &state, owner, sizeof owner, &pk->expires);
    if (pr == 1)
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    if (pr < 0)
        return res_error(r, 500, "Database error"), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, r->user) != 0) {
        free(state);
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    }
    struct proto_conn c;
    int ok = proto_conn_load(&c, state);
    free(state);
    if (ok < 0)
        return res_error(r, 500, "Corrupt poll session state"), -1;
    int64_t cursor = c.cursor, job = c.job_id;
    char was[sizeof c.channel];
    str_copy(was, sizeof was, c.channel);
    pk->following = proto_following(&c);
    pk->job = pk->following && c.job_id != 0;
    str_copy(chan, chanlen, c.channel);
    pk->closed = c.close;
    ci->code = c.close_code;
    str_copy(ci->reason, sizeof ci->reason, c.close_reason);
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_pump(ctx, &c, &fr);
    pk->work = rc != 0 || fr.n > 0 || c.cursor != cursor || c.job_id != job ||
               strcmp(c.channel, was) != 0 || c.close != pk->closed;
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

static int parse_int_param(struct request *r, const char *name, long long def, long long min,
                           long long max, long long *out)
{
    char buf[32];
    const char *v = req_query(r, name, buf, sizeof buf);
    *out = def;
    if (!v)
        return 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        res_error(r, 400, "Query parameter %s must be an integer from %lld to %lld", name, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

/* Writes {"messages": [...], "cursor": last, "closed": b} (+ close_code,
 * close_reason once closed) around the frames as stored: no parse and
 * re-dump of them. Frees json. Returns 0. */
static int answer(struct request *r, char *json, int64_t last, int closed,
                  const struct close_info *ci)
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

/* Answers a pump's non-zero status. Returns 0 (response written). */
static int pump_failed(struct request *r, int status)
{
    if (status == 1)
        return res_error(r, 410, "Unknown or expired poll session");
    if (status == 2)
        return res_error(r, 409, "Poll session busy: another request of it is in progress");
    return res_error(r, 500, "Database error");
}

int h_poll_get(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    long long cursor, wait;
    if (parse_int_param(r, "cursor", 0, 0, INT64_MAX / 2, &cursor) < 0 ||
        parse_int_param(r, "wait", POLL_WAIT_DEFAULT, 0, POLL_WAIT_MAX, &wait) < 0)
        return 0;
    char pchan[64];
    poll_channel(pchan, sizeof pchan, sid);
    int64_t deadline = mono_ms() + wait * 1000;
    /* Without a ring, look again only while following a job, this often: a
     * look is what recovers a job whose worker died (proto_pump). */
    int recheck_ms = ctx->cfg->lease_ms / 2 > 1000 ? ctx->cfg->lease_ms / 2 : 1000;
    int64_t idle_ms = (int64_t)ctx->cfg->poll_idle_s * 1000, next_look = 0;
    char chan[200] = "";
    int look = 1, reread = 0, following = 0, closed = 0, wrote = 0;
    struct close_info ci = { 0, "" };
    struct peek pk;
    struct pump_out po;
    uint32_t seen_p = 0, seen_c = 0;
    int64_t expires = 0, looked_at = 0;
    memset(&pk, 0, sizeof pk);
    struct known k;
    if (ctx->bell && known_get(sid, &k) &&
        (config_open_mode(ctx->cfg) || strcmp(k.owner, r->user) == 0)) {
        str_copy(chan, sizeof chan, k.chan);   /* a look peeks the right bell first */
        if (bell_peek(ctx->bell, pchan) == k.seen_p &&
            (!k.following || bell_peek(ctx->bell, k.chan) == k.seen_c) &&
            k.expires - now_ms() > idle_ms / 2 && (!k.job || mono_ms() - k.looked_at < recheck_ms)) {
            /* nothing happened to the session since the last answer: no look */
            look = 0;
            reread = k.last > cursor;
            following = k.following;
            pk.following = k.following;
            pk.job = k.job;
            seen_c = k.seen_c;
            seen_p = k.seen_p;
            expires = k.expires;
            looked_at = k.looked_at;
            next_look = k.job ? k.looked_at + recheck_ms : INT64_MAX;
        }
    }
    for (;;) {
        if (look) {
            /* Peek the bells before looking at the log, so an event appended
             * after the look still wakes the wait below. Only here: a wait
             * that ends without a ring keeps these values, so a ring that
             * comes after it is not lost. */
            seen_p = ctx->bell ? bell_peek(ctx->bell, pchan) : 0;
            seen_c = chan[0] && ctx->bell ? bell_peek(ctx->bell, chan) : 0;
            char before[200];
            str_copy(before, sizeof before, chan);
            if (peek_session(r, sid, &pk, chan, sizeof chan, &ci) < 0) {
                known_drop(sid);
                return 0;
            }
            if (pk.following && strcmp(before, chan) != 0) {
                /* first sight of this channel: peek its bell, then look again */
                seen_c = ctx->bell ? bell_peek(ctx->bell, chan) : 0;
                if (peek_session(r, sid, &pk, chan, sizeof chan, &ci) < 0) {
                    known_drop(sid);
                    return 0;
                }
            }
            following = pk.following;
            closed = pk.closed;
            expires = pk.expires;
            looked_at = mono_ms();
            if (pk.work) {
                /* something to store: pump, save and ack in one write transaction */
                int64_t next;
                int64_t t = now_ms();
                int st = pump_one(ctx, sid, cursor, &po, &next);
                if (st != 0) {
                    known_drop(sid);
                    return pump_failed(r, st);
                }
                expires = t + idle_ms;
                following = po.following;
                closed = po.closed;
                ci = po.ci;
                str_copy(chan, sizeof chan, po.chan);
                pk.job = po.job;
                wrote = 1;
            } else if (!wrote && pk.expires - now_ms() < idle_ms / 2) {
                /* a session that only waits: keep it alive, drop acked frames */
                int64_t t = now_ms();
                if (poll_touch(ctx->db, sid, cursor, ctx->cfg->poll_idle_s) < 0)
                    return res_error(r, 500, "Database error");
                expires = t + idle_ms;
                wrote = 1;
            }
            next_look = pk.job || (pk.work && following) ? mono_ms() + recheck_ms : INT64_MAX;
        }
        int stop = stopping(ctx);
        int64_t left = deadline - mono_ms();
        char *json = NULL;
        int64_t last = cursor;
        int n = 0;
        /* without a look or a batch's word (no ring) nothing changed: nothing to read yet */
        if (look || reread || closed || left <= 0 || stop) {
            n = poll_read(ctx->db, sid, cursor, POLL_MAX_FRAMES, &json, &last);
            if (n < 0)
                return res_error(r, 500, "Database error");
        }
        look = reread = 0;
        if (n > 0 || closed || left <= 0 || stop) {
            if (ctx->bell && !closed && !stop) {
                /* for the next GET of this session (see "what this process knows") */
                struct known kn;
                memset(&kn, 0, sizeof kn);
                str_copy(kn.sid, sizeof kn.sid, sid);
                str_copy(kn.owner, sizeof kn.owner, r->user);
                str_copy(kn.chan, sizeof kn.chan, following ? chan : "");
                kn.following = following;
                kn.job = pk.job;
                kn.seen_c = seen_c;
                kn.seen_p = seen_p;
                kn.last = n < POLL_MAX_FRAMES ? last : INT64_MAX;
                kn.expires = expires;
                kn.looked_at = looked_at;
                known_put(&kn);
            } else {
                known_drop(sid);
            }
            return answer(r, json, last, closed, &ci);
        }
        free(json);
        /* Sleep until the deadline, the next look, a ring or shutdown
         * (bell_wake_all): no time slices, so an idle waiter costs nothing. */
        int64_t until = next_look < deadline ? next_look : deadline;
        if (!ctx->bell) {
            /* no doorbell: degraded mode, look every 250 ms */
            int64_t ms = until - mono_ms();
            struct timespec ts = { 0, (ms > 250 ? 250 : ms > 0 ? ms : 0) * 1000000L };
            nanosleep(&ts, NULL);
            look = 1;
            continue;
        }
        if (following) {
            /* with this process's other waiters of the channel: one batch
             * pumps them all */
            struct waiter w;
            int gw = group_wait(ctx, sid, cursor, pk.job, chan, &seen_c, until, &w);
            if (gw == 2) {
                look = 1;
            } else if (gw == 1) {
                if (w.status != 0) {
                    known_drop(sid);
                    return pump_failed(r, w.status);
                }
                following = w.po.following;
                closed = w.po.closed;
                ci = w.po.ci;
                if (!following || strcmp(w.po.chan, chan) != 0 || w.po.job != pk.job) {
                    look = 1;  /* the session moved on: look at it afresh */
                    str_copy(chan, sizeof chan, w.po.chan);
                } else {
                    reread = 1;
                }
                wrote = 1;
            } else {
                look = mono_ms() >= next_look;
            }
        } else {
            int64_t ms = until - mono_ms();
            int rung = ms > 0 && !stopping(ctx)
                           ? bell_wait(ctx->bell, pchan, seen_p, ms > INT32_MAX ? INT32_MAX : (int)ms)
                           : 0;
            look = rung != 0 || mono_ms() >= next_look;
        }
    }
}

struct poll_jobs {
    struct proto_job *v[16];
    int n;
};

static void run_jobs_after(struct request *r, void *arg)
{
    struct poll_jobs *pj = arg;
    for (int i = 0; i < pj->n; i++) {
        proto_job_run(r->ctx, pj->v[i]);
        proto_job_free(pj->v[i]);
    }
    free(pj);
}

int h_poll_post(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    if (!r->body || r->body_len == 0)
        return res_error(r, 400, "Empty body: send one JSON frame, or several as NDJSON");
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return 0;
    char before[sizeof c.channel];          /* followed before these frames */
    str_copy(before, sizeof before, proto_following(&c) ? c.channel : "");
    if (c.close) {
        poll_unlock(ctx->db, sid);
        proto_conn_cleanup(&c);
        return res_error(r, 410, "Poll session closed: %s", c.close_reason);
    }
    struct proto_frames fr;
    frames_init(&fr);
    struct poll_jobs *pj = calloc(1, sizeof *pj);
    int accepted = 0, rc = pj ? 0 : -1;
    const char *p = r->body, *end = r->body + r->body_len;
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        const char *e = le;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (e > s) {
            struct proto_job *job = NULL;
            rc = proto_message(ctx, &c, s, (size_t)(e - s), &fr, &job);
            if (job) {
                if (pj->n < 16)
                    pj->v[pj->n++] = job;
                else
                    proto_job_free(job);   /* cannot happen: one generation at a time */
            }
            accepted++;
            if (c.close)
                break;
        }
        p = le + 1;
    }
    char *saved = rc == 0 ? proto_conn_save(&c) : NULL;
    if (rc < 0 || !saved || poll_save(ctx->db, sid, saved, fr.v, fr.n, ctx->cfg->poll_idle_s) < 0) {
        poll_unlock(ctx->db, sid);
        res_error(r, 500, "Database error while handling the frame");
    } else {
        if (ctx->bell) {
            char pchan[64];
            poll_channel(pchan, sizeof pchan, sid);
            bell_ring(ctx->bell, pchan);
            if (proto_following(&c))
                bell_ring(ctx->bell, c.channel);
            /* a GET waiting with the channel it followed before */
            if (before[0] && (!proto_following(&c) || strcmp(before, c.channel) != 0))
                bell_ring(ctx->bell, before);
        }
        if (pj && pj->n) {
            r->after = run_jobs_after;
            r->after_arg = pj;
            pj = NULL;
        }
        res_json(r, 202, json_pack("{s:b, s:i}", "success", 1, "accepted", accepted));
    }
    if (pj) {
        for (int i = 0; i < pj->n; i++)
            proto_job_free(pj->v[i]);
        free(pj);
    }
    free(saved);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

int h_poll_delete(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return 0;
    char followed[sizeof c.channel];
    str_copy(followed, sizeof followed, proto_following(&c) ? c.channel : "");
    proto_conn_cleanup(&c);
    int d = poll_delete(ctx->db, sid);
    if (d < 0)
        return res_error(r, 500, "Database error");
    if (ctx->bell) {
        /* wake a GET of this session waiting now: it answers 410 at once */
        char pchan[64];
        poll_channel(pchan, sizeof pchan, sid);
        bell_ring(ctx->bell, pchan);
        if (followed[0])
            bell_ring(ctx->bell, followed);
    }
    return res_empty(r, 204);
}
