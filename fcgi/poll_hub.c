/* poll_hub.c — this process's waiting GETs, grouped by followed channel
 * (poll_hub.h).
 *
 * One event on a channel that N waiting GETs of this process follow wakes
 * all N (one doorbell slot). The first to get here becomes the batch's
 * leader: it peeks the bell (B), then pumps EVERY registered session of the
 * channel in one write transaction (poll_pump_items) and records, per
 * waiter, that its session was looked at up to bell value B ("covered")
 * and whether it now has something to answer. The others wait on the
 * group's condition variable while a batch runs, then find their result,
 * or go back to sleep on the bell with seen = B (nothing for them: a
 * neighbour channel of the slot, or an event of another job).
 *
 * Why no event is lost: a waiter registers with covered = the bell value
 * it peeked before its own look, and a batch sets covered = B, peeked
 * before the batch read anything. A waiter sleeps on the bell with
 * seen = covered, so any ring after the last look of its session wakes it;
 * woken, it peeks v and needs a batch unless covered is at or after v. A
 * batch only covers waiters registered when it started (in_batch); a
 * waiter may leave the group only when no batch works on it.
 * Sessions stay in SQLite: the batch re-reads each one inside its
 * transaction, so other processes' GETs and POSTs of a session stay safe.
 *
 * Shutdown: waits have no time slices; parley.fcgi's signal thread calls
 * bell_wake_all() on the process's doorbell right after setting
 * parley_stopping (fcgi/fcgi_life.c, request_stop), which ends every wait
 * at once (poll_stopping). */
#include "poll_hub.h"
#include "poll_pump.h"
#include "bell.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct waiter {
    struct waiter *next;
    const char *sid;           /* borrowed from the request */
    int64_t cursor;            /* the client's: acknowledged in the batch */
    int job;                   /* follows a job, as its last look saw */
    int ext_s;                 /* expiry extension its GET asks for */
    uint32_t covered;          /* bell value up to which the session was looked at */
    int in_batch;              /* a batch works on it: it may not leave */
    int has_result;            /* a batch found something to answer */
    struct poll_hub_result res;
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

int poll_hub_judge(const char *chan, int64_t cursor, int job, const struct poll_item *it,
                   const struct poll_seen *po, struct poll_hub_result *res)
{
    if (it->status == POLL_BUSY)
        return 0;              /* a POST holds the session: it rings the
                                * channel when it has saved, and the next
                                * batch pumps the session */
    if (it->status != POLL_OK || it->next_seq - 1 > cursor || po->closed ||
        !po->following || strcmp(po->chan, chan) != 0 || po->job != job) {
        /* something to answer, or the session moved on in a way its
         * waiter must look at (another channel, a job to watch over) */
        res->status = it->status;
        res->next_seq = it->next_seq;
        res->seen = *po;
        return 1;
    }
    return 0;
}

/* {hub_lock} Records what the batch found for w (covered up to bell b). */
static void batch_record(const struct group *g, struct waiter *w, const struct poll_item *it,
                         const struct poll_seen *po, uint32_t b)
{
    w->in_batch = 0;
    w->covered = b;
    if (poll_hub_judge(g->chan, w->cursor, w->job, it, po, &w->res))
        w->has_result = 1;
}

/* {hub_lock, released while pumping} Pumps every waiter of g in one write
 * transaction and records the results. */
static void group_batch(struct parley_ctx *ctx, struct group *g)
{
    g->busy = 1;
    uint32_t b = bell_peek(ctx->bell, g->chan);
    int n = g->nwaiters, ext_s = 0;
    struct waiter **ws = calloc((size_t)n, sizeof *ws);
    struct poll_item *items = calloc((size_t)n, sizeof *items);
    struct poll_seen *outs = calloc((size_t)n, sizeof *outs);
    if (!ws || !items || !outs) {
        /* out of memory: every waiter answers 500 */
        for (struct waiter *w = g->waiters; w; w = w->next) {
            w->has_result = 1;
            w->res.status = POLL_ERROR;
        }
        n = 0;
    }
    int i = 0;
    for (struct waiter *w = g->waiters; w && i < n; w = w->next, i++) {
        w->in_batch = 1;
        ws[i] = w;
        items[i].sid = w->sid;
        items[i].ack = w->cursor;
        if (w->ext_s > ext_s)
            ext_s = w->ext_s;
    }
    if (n > 0) {
        pthread_mutex_unlock(&hub_lock);
        poll_pump_items(ctx, items, outs, n, ext_s);
        pthread_mutex_lock(&hub_lock);
    }
    for (i = 0; i < n; i++)
        batch_record(g, ws[i], &items[i], &outs[i], b);
    free(ws);
    free(items);
    free(outs);
    g->busy = 0;
    pthread_cond_broadcast(&g->cv);
}

enum poll_hub_wake poll_hub_wait(struct parley_ctx *ctx, const char *sid, int64_t cursor,
                                 int job, const char *chan, uint32_t *seen, int64_t until,
                                 int ext_s, struct poll_hub_result *res)
{
    struct waiter w;
    memset(&w, 0, sizeof w);
    w.sid = sid;
    w.cursor = cursor;
    w.job = job;
    w.ext_s = ext_s;
    w.covered = *seen;
    pthread_mutex_lock(&hub_lock);
    struct group *g = group_get(chan);
    if (!g) {
        /* out of memory: wait alone, then let the caller look */
        pthread_mutex_unlock(&hub_lock);
        int64_t left = until - mono_ms();
        if (left > 0 && !poll_stopping(ctx))
            bell_wait(ctx->bell, chan, *seen, left > INT32_MAX ? INT32_MAX : (int)left);
        return POLL_HUB_LOOK;
    }
    w.next = g->waiters;
    g->waiters = &w;
    g->nwaiters++;
    enum poll_hub_wake got = POLL_HUB_TIMEOUT;
    for (;;) {
        if (w.has_result) {
            got = POLL_HUB_RESULT;
            break;
        }
        uint32_t covered = w.covered;
        int64_t left = until - mono_ms();
        if (left <= 0 || poll_stopping(ctx))
            break;
        pthread_mutex_unlock(&hub_lock);
        int rung = bell_wait(ctx->bell, chan, covered, left > INT32_MAX ? INT32_MAX : (int)left);
        uint32_t v = bell_peek(ctx->bell, chan);
        pthread_mutex_lock(&hub_lock);
        if (rung == 0 || poll_stopping(ctx))
            continue;          /* timeout or shutdown: the checks above end it */
        /* rung: covered already, being covered, or lead a batch */
        while (!w.has_result && (int32_t)(w.covered - v) < 0) {
            if (g->busy)
                pthread_cond_wait(&g->cv, &hub_lock);
            else
                group_batch(ctx, g);
        }
    }
    group_leave(g, &w);
    *seen = w.covered;
    pthread_mutex_unlock(&hub_lock);
    if (got == POLL_HUB_RESULT)
        *res = w.res;
    return got;
}
