/* poll_park.c — parked long-poll GETs and the hub thread that answers them
 * (poll_park.h).
 *
 * State {pk_lock}: the list of parked GETs (struct parked), how many are
 * reserved (nparked: parked or about to be, or being worked on by the hub),
 * and the hub's flags. Two threads, started at the first park:
 *
 *   watcher  peeks the doorbell's "any" slot, tells the hub to scan (kick),
 *            then sleeps in bell_wait_any past that value: so every ring
 *            after a scan began wakes the hub again. With nothing parked it
 *            sleeps on watch_cv instead (no wake-ups for other processes'
 *            rings).
 *   hub      sleeps on hub_cv until kicked or the nearest deadline (a
 *            parked GET's wait end or next look), then scans (only the GETs
 *            parked since the last scan when a new park was all that kicked
 *            it; every parked GET after a ring or a deadline, those that
 *            follow a channel by their channel's group: one bell peek per
 *            channel, no walk of a group whose bell and deadlines say
 *            nothing can be due): a GET whose
 *            deadline came (or every GET, once stopping) or whose session
 *            bell ("poll:<sid>") moved is ready; a GET following a channel
 *            whose bell moved joins that channel's batch. The batch works as
 *            poll_hub.c's: peek the channel's bell (B), pump every parked
 *            session of the channel in ONE write transaction
 *            (poll_pump_items), and each GET is covered up to B (seen_c);
 *            poll_hub_judge says which of them must wake. Ready GETs run
 *            poll_get_steps with the lock released; one that answered is
 *            finished and freed, the others are parked again.
 *
 * Generic waiters (poll_park_waiter; struct parked with ops set, g unused
 * but g.r): the scan asks their rung callback (or sees their until pass)
 * and moves them to ready; the hub runs their step, which answers (then
 * finished and dropped) or parks them again. They are never batched.
 *
 * No event is lost: a GET parks with the bell values it peeked before its
 * last look (as a waiting thread sleeps on them), and every ring after the
 * hub's scan started moves the "any" slot past what the watcher peeked
 * before kicking that scan. A newly parked GET kicks the hub itself.
 */
#include "poll_park.h"
#include "poll_pump.h"
#include "bell.h"
#include "db.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define PARK_MAX 4096
#define PARK_MIN 16

struct chgroup;

struct parked {
    struct parked *next, *prev;    /* the list or its group's {pk_lock}, or a work
                                    * list of the hub */
    struct chgroup *grp;           /* listed in this channel's group {pk_lock} */
    struct poll_get g;             /* a long-poll GET's; of a generic waiter only g.r */
    const struct park_ops *ops;    /* a generic waiter's (NULL: a long-poll GET) */
    void *arg;
    int64_t until;                 /* mono ms: poll_get_until(&g) when parked */
    int in_fresh;                  /* on `fresh`, not `list` */
    enum poll_get_wake wk;         /* what woke it (hub thread) */
    struct poll_hub_result res;
};

/* The parked GETs that follow one channel {pk_lock}: a full scan peeks the
 * channel's bell once for all of them, and skips them without a look when
 * the bell still says what every one of them has seen and none of their
 * deadlines can have come (min_until: at most the least until of the
 * members; exact after a walk). */
struct chgroup {
    struct chgroup *hnext;         /* the bucket's chain */
    struct chgroup *next, *prev;   /* every group (groups) */
    struct parked *head;           /* the members */
    int n;                         /* members */
    int nsame;                     /* members whose seen_c == seen */
    uint32_t seen;
    uint32_t slot;                 /* bell_slot_of(chan) */
    int64_t min_until;
    char chan[sizeof ((struct poll_get *)0)->chan];
};

#define GROUP_BUCKETS 1024

static pthread_mutex_t pk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hub_cv;      /* CLOCK_MONOTONIC: kick, or a deadline */
static pthread_cond_t watch_cv = PTHREAD_COND_INITIALIZER;    /* something parked / closing */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;     /* the hub ended */
static struct parked *list;        /* parked, waiting: the GETs that follow no
                                    * channel, generic waiters (the others are
                                    * in their channel's group) */
static struct chgroup *groups;     /* every channel group */
static struct chgroup *group_tab[GROUP_BUCKETS];
static int nlisted;                /* on the list */
static int nparked;                /* reserved: listed, being parked or worked on */
static int kick;                   /* scan now */
static int ring;                   /* ... every parked GET: a bell rang (the
                                    * watcher), or closing; else only the
                                    * fresh ones (a kick of park_start) */
static struct parked *fresh;       /* parked since the last scan (not on list) */
static int64_t next_until = INT64_MAX;   /* mono ms: no parked GET's until is
                                    * sooner (may be sooner than the real
                                    * least: a full scan recomputes it) */
static int running;                /* hub and watcher threads started */
static int closing;                /* poll_park_shutdown: answer all, then end */
static int hub_ended;
static int park_max = -1;
static pthread_t hub_th, watch_th;
static struct parley_ctx hub_ctx;  /* cfg, bell: the workers'; db: the hub's own */

int poll_park_max(void)
{
    pthread_mutex_lock(&pk_lock);
    if (park_max < 0) {
        struct rlimit rl;
        long m = PARK_MAX;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (long)(rl.rlim_cur / 2) < m)
            m = (long)(rl.rlim_cur / 2);
        park_max = m < PARK_MIN ? PARK_MIN : (int)m;
    }
    int m = park_max;
    pthread_mutex_unlock(&pk_lock);
    return m;
}

int poll_park_count(void)
{
    pthread_mutex_lock(&pk_lock);
    int n = nparked;
    pthread_mutex_unlock(&pk_lock);
    return n;
}

static unsigned group_hash(const char *s)
{
    unsigned h = 2166136261u;      /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % GROUP_BUCKETS;
}

/* {pk_lock} The group of channel chan, made when missing (NULL: out of
 * memory). */
static struct chgroup *group_get(const char *chan)
{
    unsigned h = group_hash(chan);
    struct chgroup *c;
    for (c = group_tab[h]; c; c = c->hnext)
        if (strcmp(c->chan, chan) == 0)
            return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->chan, sizeof c->chan, "%s", chan);
    c->slot = bell_slot_of(c->chan);
    c->min_until = INT64_MAX;
    c->hnext = group_tab[h];
    group_tab[h] = c;
    c->next = groups;
    if (groups)
        groups->prev = c;
    groups = c;
    return c;
}

/* {pk_lock} Frees the empty group c. */
static void group_free(struct chgroup *c)
{
    struct chgroup **pp = &group_tab[group_hash(c->chan)];
    while (*pp != c)
        pp = &(*pp)->hnext;
    *pp = c->hnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        groups = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* {pk_lock} Puts p on the list (a GET following a channel: in its group);
 * a new one (wake) on `fresh`, and wakes the hub to scan it and the watcher
 * to watch the doorbell. */
static void list_add(struct parked *p, int wake)
{
    p->until = p->ops ? p->ops->until(p->arg) : poll_get_until(&p->g);
    if (p->until < next_until)
        next_until = p->until;
    struct chgroup *c = NULL;
    if (!wake && !p->ops && p->g.following && p->g.chan[0])
        c = group_get(p->g.chan);  /* NULL: on the list, looked at one by one */
    struct parked **head = c ? &c->head : wake ? &fresh : &list;
    p->grp = c;
    p->in_fresh = wake;            /* new: the next scan looks at it */
    p->prev = NULL;
    p->next = *head;
    if (*head)
        (*head)->prev = p;
    *head = p;
    nlisted++;
    if (c) {
        if (c->n++ == 0) {
            c->seen = p->g.seen_c;
            c->nsame = 0;
        }
        if (p->g.seen_c == c->seen)
            c->nsame++;
        if (p->until < c->min_until)
            c->min_until = p->until;
    }
    if (wake) {
        kick = 1;
        pthread_cond_signal(&hub_cv);
    }
    pthread_cond_signal(&watch_cv);
}

/* {pk_lock} Takes p off the list (or its group; an emptied group is
 * freed). */
static void list_del(struct parked *p)
{
    struct chgroup *c = p->grp;
    if (p->prev)
        p->prev->next = p->next;
    else if (c)
        c->head = p->next;
    else if (p->in_fresh)
        fresh = p->next;
    else
        list = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
    p->grp = NULL;
    nlisted--;
    if (c) {
        if (p->g.seen_c == c->seen)
            c->nsame--;
        if (--c->n == 0)
            group_free(c);
    }
}

/* Ends a parked GET that answered: finishes the exchange (a kept
 * connection goes back to the idle set), frees it. Hub thread. */
static void park_finish(struct parked *p)
{
    struct request *r = p->g.r;
    res_finish(r);
    r->res->release(r->res);
    if (p->ops)
        p->ops->drop(p->arg);
    free(p);
    pthread_mutex_lock(&pk_lock);
    nparked--;
    pthread_mutex_unlock(&pk_lock);
}

/* What the transport calls once the worker gave the request up: from now
 * on the hub owns it (see http.h, struct request, park). */
static void park_start(struct request *r, void *arg)
{
    struct parked *p = arg;
    r->ctx = &hub_ctx;
    if (!p->ops)
        p->g.ctx = &hub_ctx;
    pthread_mutex_lock(&pk_lock);
    list_add(p, 1);
    pthread_mutex_unlock(&pk_lock);
}

/* ---- the watcher ---- */

static void *watch_main(void *arg)
{
    (void)arg;
    parley_bell *b = hub_ctx.bell;
    uint32_t v = bell_peek_any(b);
    pthread_mutex_lock(&pk_lock);
    for (;;) {
        kick = ring = 1;           /* scan after v was peeked */
        pthread_cond_signal(&hub_cv);
        while (nlisted == 0 && !closing)
            pthread_cond_wait(&watch_cv, &pk_lock);
        if (closing)
            break;
        pthread_mutex_unlock(&pk_lock);
        int rc = bell_wait_any(b, v, -1);
        v = bell_peek_any(b);
        pthread_mutex_lock(&pk_lock);
        if (rc < 0 && bell_stopped(b)) {
            kick = ring = 1;       /* shutdown: the hub answers everything */
            pthread_cond_signal(&hub_cv);
            break;
        }
    }
    pthread_mutex_unlock(&pk_lock);
    return NULL;
}

/* ---- the hub ---- */

static int chan_cmp(const void *a, const void *b)
{
    const struct parked *x = *(struct parked *const *)a, *y = *(struct parked *const *)b;
    return strcmp(x->g.chan, y->g.chan);
}

/* Pumps the n parked GETs of one channel (ps[0..n-1]) in one write
 * transaction, as poll_hub.c's batch does; those that must wake go to
 * *ready, the others to *back. Hub thread, no lock held. */
static void batch(struct parked **ps, int n, struct parked **ready, struct parked **back)
{
    /* GETs with virtual frames (poll_replay.h) view them, no database
     * (after the first view of the channel's new events); only those whose
     * frames are blocked (an event a pump must store) or whose session was
     * touched join the pump below */
    int m = 0;
    for (int i = 0; i < n; i++) {
        struct parked *p = ps[i];
        if (p->g.vid) {
            poll_get_woken(&p->g, POLL_GET_CHAN, NULL);
            if (!p->g.look) {
                p->wk = POLL_GET_APPLIED;
                p->next = *ready;
                *ready = p;
                continue;
            }
            p->g.look = 0;     /* the pump below looks at it in the batch */
            p->g.vid = 0;
        }
        ps[m++] = p;
    }
    if (m == 0)
        return;
    n = m;
    uint32_t b = bell_peek(hub_ctx.bell, ps[0]->g.chan);
    struct poll_item *items = calloc((size_t)n, sizeof *items);
    struct poll_seen *outs = calloc((size_t)n, sizeof *outs);
    int ext_s = 0;
    if (items && outs) {
        for (int i = 0; i < n; i++) {
            items[i].sid = ps[i]->g.sid;
            items[i].ack = ps[i]->g.cursor;
            if (ps[i]->g.ext_s > ext_s)
                ext_s = ps[i]->g.ext_s;
        }
        poll_pump_items(&hub_ctx, items, outs, n, ext_s);
    }
    for (int i = 0; i < n; i++) {
        struct parked *p = ps[i];
        int wake;
        if (!items || !outs) {
            /* out of memory: every GET of the batch answers 500 */
            memset(&p->res, 0, sizeof p->res);
            p->res.status = POLL_ERROR;
            wake = 1;
        } else {
            p->g.seen_c = b;
            wake = poll_hub_judge(p->g.chan, p->g.cursor, p->g.job, &items[i], &outs[i], &p->res);
        }
        p->wk = POLL_GET_BATCH;
        struct parked **to = wake ? ready : back;
        p->next = *to;
        *to = p;
    }
    free(items);
    free(outs);
}

/* {pk_lock} What a scan does with p: 0 leave it parked, 1 ready (p->wk
 * set: its deadline, stop, its session bell, a waiter's rung), 2 its
 * followed channel's bell moved past p->g.seen_c (to a batch). b: that
 * bell's value when the caller peeked it, else NULL. */
static int judge(struct parked *p, int stop, int64_t now, const uint32_t *b)
{
    if (stop || now >= p->until) {
        p->wk = POLL_GET_TIMEOUT;
        return 1;
    }
    if (p->ops)
        return p->ops->rung(p->arg, hub_ctx.bell) ? 1 : 0;
    if (!p->g.following) {
        if (bell_peek(hub_ctx.bell, p->g.pchan) == p->g.seen_p)
            return 0;
        p->wk = POLL_GET_RUNG;
        return 1;
    }
    uint32_t v = b ? *b : bell_peek(hub_ctx.bell, p->g.chan);
    return v != p->g.seen_c ? 2 : 0;
}

/* {pk_lock} Acts on judge()'s verdict v for p: ready ones off the list to
 * *ready, moved ones to mv (NULL when out of memory: then they look at
 * their session instead), a fresh one left parked onto the list. 1 when p
 * stays where it is. */
static int place(struct parked *p, int v, struct parked **ready, struct parked **mv, int *nm)
{
    if (v == 2 && !mv) {
        p->wk = POLL_GET_RUNG;
        v = 1;
    }
    if (v == 0 && !p->in_fresh)
        return 1;
    list_del(p);
    if (v == 1) {
        p->next = *ready;
        *ready = p;
    } else if (v == 2) {
        mv[(*nm)++] = p;
    } else {
        list_add(p, 0);            /* parked: on the list (next_until kept) */
    }
    return 0;
}

/* {pk_lock} Takes the GETs that must be worked on off the list: ready ones
 * (deadline, stop, session bell) to *ready, GETs of channels whose bell
 * moved into *moved (array of *nmoved; NULL when out of memory: then they
 * are treated as rung, which looks at the session). The fresh GETs (parked
 * since the last scan) always; when full (a ring, a deadline, closing;
 * next_until recomputed) also the list and every channel group: a group is
 * passed over after one look at its bell when all its members have seen
 * that value and none of their deadlines came. A new park alone needs no
 * look at the thousands parked before it. */
static void scan(int full, struct parked **ready, struct parked ***moved, int *nmoved)
{
    int stop = closing || poll_stopping(&hub_ctx);
    int64_t now = mono_ms();
    struct parked **mv = calloc((size_t)(nlisted > 0 ? nlisted : 1), sizeof *mv);
    int nm = 0;
    struct parked *p, *next;
    for (p = fresh; p; p = next) {
        next = p->next;
        place(p, judge(p, stop, now, NULL), ready, mv, &nm);
    }
    if (full) {
        next_until = INT64_MAX;
        for (p = list; p; p = next) {
            next = p->next;
            if (place(p, judge(p, stop, now, NULL), ready, mv, &nm) && p->until < next_until)
                next_until = p->until;
        }
        struct chgroup *c, *cn;
        for (c = groups; c; c = cn) {
            cn = c->next;          /* c is freed when its last member leaves */
            uint32_t b = bell_peek_slot(hub_ctx.bell, c->slot);
            if (!stop && now < c->min_until && c->nsame == c->n && b == c->seen) {
                if (c->min_until < next_until)
                    next_until = c->min_until;
                continue;
            }
            int64_t mu = INT64_MAX;
            int kept = 0;
            for (p = c->head; p; p = next) {
                next = p->next;
                if (place(p, judge(p, stop, now, &b), ready, mv, &nm)) {
                    kept++;
                    if (p->until < mu)
                        mu = p->until;
                }
            }
            if (kept) {            /* each has seen b, or it would have moved */
                c->seen = b;
                c->nsame = c->n;
                c->min_until = mu;
                if (mu < next_until)
                    next_until = mu;
            }
        }
    }
    *moved = mv;
    *nmoved = nm;
}

/* {pk_lock} Sleeps until kicked or the nearest deadline of a parked GET. */
static void hub_sleep(void)
{
    while (!kick && !(closing && nparked == 0)) {
        int64_t until = next_until;
        if (until == INT64_MAX) {
            pthread_cond_wait(&hub_cv, &pk_lock);
            continue;
        }
        if (until <= mono_ms())
            return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ms = until - mono_ms();
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&hub_cv, &pk_lock, &ts);
        if (until <= mono_ms())
            return;
    }
}

static void *hub_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pk_lock);
    for (;;) {
        if (closing && nparked == 0)
            break;
        hub_sleep();
        int full = ring || closing || poll_stopping(&hub_ctx) || mono_ms() >= next_until;
        kick = ring = 0;
        struct parked *ready = NULL, *back = NULL, **moved = NULL;
        int nmoved = 0;
        scan(full, &ready, &moved, &nmoved);
        pthread_mutex_unlock(&pk_lock);

        /* the batches: one per channel whose bell moved */
        if (nmoved > 1)
            qsort(moved, (size_t)nmoved, sizeof *moved, chan_cmp);
        for (int i = 0; i < nmoved;) {
            int j = i + 1;
            while (j < nmoved && strcmp(moved[j]->g.chan, moved[i]->g.chan) == 0)
                j++;
            batch(moved + i, j - i, &ready, &back);
            i = j;
        }
        free(moved);
        /* the steps of every GET that woke */
        struct parked *p, *next;
        for (p = ready; p; p = next) {
            next = p->next;
            int done = p->ops ? p->ops->step(p->arg, &hub_ctx) != 0
                              : poll_get_woken(&p->g, p->wk, &p->res) < 0 || poll_get_steps(&p->g);
            if (done) {
                park_finish(p);
            } else {
                p->next = back;
                back = p;
            }
        }
        pthread_mutex_lock(&pk_lock);
        /* parked again: a ring since the scan moved the "any" slot past
         * what the watcher peeked before it, so the watcher kicks again */
        for (p = back; p; p = next) {
            next = p->next;
            list_add(p, 0);
        }
        if (back && (closing || poll_stopping(&hub_ctx)))
            kick = ring = 1;
    }
    hub_ended = 1;
    pthread_cond_broadcast(&done_cv);
    pthread_mutex_unlock(&pk_lock);
    return NULL;
}

/* {pk_lock} Starts the hub and the watcher with their own database
 * connection (ctx: a worker's, for the configuration and the doorbell).
 * 0, or -1 (logged; nothing started). */
static int hub_start(const struct parley_ctx *ctx)
{
    char err[256];
    hub_ctx.cfg = ctx->cfg;
    hub_ctx.bell = ctx->bell;
    hub_ctx.db = db_open(ctx->cfg->db_path, err, sizeof err);
    if (!hub_ctx.db) {
        /* err names the database (a PostgreSQL string with its password
         * hidden); PARLEY_DB itself may hold a password */
        fprintf(stderr, "parley.fcgi: long-poll hub: %s (waiting GETs keep their threads)\n", err);
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hub_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    int ok = pthread_create(&hub_th, &attr, hub_main, NULL) == 0;
    if (ok && pthread_create(&watch_th, &attr, watch_main, NULL) != 0) {
        closing = 1;               /* the hub ends at once: nothing is parked */
        pthread_cond_signal(&hub_cv);
        pthread_mutex_unlock(&pk_lock);
        pthread_join(hub_th, NULL);
        pthread_mutex_lock(&pk_lock);
        closing = 0;
        hub_ended = 0;
        ok = 0;
    }
    pthread_attr_destroy(&attr);
    if (!ok) {
        fprintf(stderr, "parley.fcgi: long-poll hub: cannot start its threads (waiting GETs "
                        "keep their threads)\n");
        pthread_cond_destroy(&hub_cv);
        db_close(hub_ctx.db);
        hub_ctx.db = NULL;
        return -1;
    }
    running = 1;
    return 0;
}

/* Reserves a place for a request of ctx's worker to park (starting the hub
 * at the first): a new zeroed struct parked, or NULL (not parked). */
static struct parked *park_reserve(struct request *r, struct parley_ctx *ctx)
{
    if (!r->res->release || !ctx->bell || poll_stopping(ctx))
        return NULL;
    int max = poll_park_max();
    pthread_mutex_lock(&pk_lock);
    static int start_failed;
    if (closing || nparked >= max || start_failed || (!running && hub_start(ctx) < 0)) {
        if (!running && !closing)
            start_failed = 1;      /* logged once; threads wait as before */
        pthread_mutex_unlock(&pk_lock);
        return NULL;
    }
    nparked++;
    pthread_mutex_unlock(&pk_lock);
    struct parked *p = calloc(1, sizeof *p);
    if (!p) {
        pthread_mutex_lock(&pk_lock);
        nparked--;
        pthread_mutex_unlock(&pk_lock);
    }
    return p;
}

int poll_park(struct poll_get *g)
{
    struct parked *p = park_reserve(g->r, g->ctx);
    if (!p)
        return 0;
    p->g = *g;
    http_park(g->r, park_start, p);
    return 1;
}

int poll_park_waiter(struct request *r, struct parley_ctx *ctx, const struct park_ops *ops,
                     void *arg)
{
    struct parked *p = park_reserve(r, ctx);
    if (!p)
        return 0;
    p->g.r = r;
    p->ops = ops;
    p->arg = arg;
    http_park(r, park_start, p);
    return 1;
}

int poll_park_shutdown(int grace_ms)
{
    pthread_mutex_lock(&pk_lock);
    if (!running) {
        pthread_mutex_unlock(&pk_lock);
        return 0;
    }
    pthread_mutex_unlock(&pk_lock);
    bell_wake_all(hub_ctx.bell);   /* every parked GET answers at once */
    pthread_mutex_lock(&pk_lock);
    closing = 1;
    kick = ring = 1;
    pthread_cond_signal(&hub_cv);
    pthread_cond_broadcast(&watch_cv);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += grace_ms / 1000;
    ts.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (!hub_ended)
        if (pthread_cond_timedwait(&done_cv, &pk_lock, &ts) != 0)
            break;
    int left = nparked;
    int ended = hub_ended;
    pthread_mutex_unlock(&pk_lock);
    if (!ended)
        return left > 0 ? left : 1;
    pthread_join(hub_th, NULL);
    pthread_join(watch_th, NULL);
    db_close(hub_ctx.db);
    hub_ctx.db = NULL;
    pthread_cond_destroy(&hub_cv);
    running = 0;
    return 0;
}
