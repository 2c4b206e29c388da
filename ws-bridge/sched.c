/* sched.c — the bridge's workers, the registry of followed channels and
 * the watcher that wakes them (bridge.h).
 *
 * Connections are actors: each has a FIFO of tasks, and a connection is on
 * the ready queue at most once and run by at most one worker at a time
 * (queued/running flags under br->mu), so its proto_conn never sees two
 * threads. A channel pump also takes "running" on every follower it feeds,
 * so it obeys the same rule; a follower that is busy is marked want_pump
 * and catches up from its own cursor when its task ends.
 *
 * Flow control: log events are read for a connection only while fewer than
 * --out-high frames wait for its socket; a slow reader's cursor simply lags
 * (the log keeps the events) and its pump resumes when the service thread
 * drains the queue (sched_drained). Nothing is dropped and memory stays
 * bounded. Frames that are not from the log (replies) are bounded by the
 * hard cap in conn_post.
 *
 * Lock order: br->mu, then c->mu, then the gen pool's and notify_mu.
 */
#include "bridge.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define READ_BATCH 256

struct share_set;
struct worker {
    struct bridge *br;
    struct parley_ctx ctx;
    pthread_t th;
    struct share_set *sets;            /* chan_pump: READ_BATCH of them */
};

static struct worker *workers;

/* ---- registry (br->mu held) ---- */

static unsigned name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % CHAN_BUCKETS;
}

static struct chan *chan_get(struct bridge *br, const char *name)
{
    unsigned b = name_hash(name);
    for (struct chan *ch = br->chans[b]; ch; ch = ch->hnext)
        if (!strcmp(ch->name, name))
            return ch;
    struct chan *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->name = strdup(name))) {
        free(ch);
        return NULL;
    }
    ch->slot = bell_slot_of(name);
    ch->seen = br->bell ? bell_peek_slot(br->bell, ch->slot) : 0;
    ch->moved_ms = mono_ms();
    ch->hnext = br->chans[b];
    br->chans[b] = ch;
    br->nchans++;
    return ch;
}

static void chan_maybe_free(struct bridge *br, struct chan *ch)
{
    if (ch->nsubs || ch->npsubs || ch->queued || ch->running)
        return;
    for (struct chan **pp = &br->chans[name_hash(ch->name)]; *pp; pp = &(*pp)->hnext)
        if (*pp == ch) {
            *pp = ch->hnext;
            break;
        }
    br->nchans--;
    free(ch->subs);
    free(ch->psubs);
    free(ch->name);
    free(ch);
}

static void chan_remove(struct bridge *br, struct wsconn *c)
{
    struct chan *ch = c->chan;
    if (!ch)
        return;
    int i = c->chan_idx;
    ch->subs[i] = ch->subs[--ch->nsubs];
    ch->subs[i]->chan_idx = i;
    c->chan = NULL;
    c->chan_idx = -1;
    conn_unref(c);                      /* the registry's reference (never the last) */
    chan_maybe_free(br, ch);
}

static int chan_add(struct bridge *br, struct wsconn *c, const char *name)
{
    struct chan *ch = chan_get(br, name);
    if (!ch)
        return -1;
    if (ch->nsubs == ch->cap) {
        int cap = ch->cap ? ch->cap * 2 : 4;
        struct wsconn **n = realloc(ch->subs, sizeof *n * (size_t)cap);
        if (!n) {
            chan_maybe_free(br, ch);
            return -1;
        }
        ch->subs = n;
        ch->cap = cap;
    }
    conn_ref(c);
    c->chan = ch;
    c->chan_idx = ch->nsubs;
    ch->subs[ch->nsubs++] = c;
    return 0;
}

/* ---- Phoenix connections: one registration per followed channel ---- */

/* Drops c's i-th registration (br->mu held). */
static void pchan_remove(struct bridge *br, struct wsconn *c, int i)
{
    struct chan *ch = c->pf[i].ch;
    int idx = c->pf[i].idx;
    ch->psubs[idx] = ch->psubs[--ch->npsubs];
    if (idx < ch->npsubs) {
        struct wsconn *m = ch->psubs[idx];      /* moved: fix its index */
        for (int k = 0; k < m->npf; k++)
            if (m->pf[k].ch == ch) {
                m->pf[k].idx = idx;
                break;
            }
    }
    c->pf[i] = c->pf[--c->npf];
    conn_unref(c);                      /* the registry's reference (never the last) */
    chan_maybe_free(br, ch);
}

static int pchan_add(struct bridge *br, struct wsconn *c, const char *name)
{
    if (c->npf == c->pfcap) {
        int cap = c->pfcap ? c->pfcap * 2 : 4;
        struct phx_follow *n = realloc(c->pf, sizeof *n * (size_t)cap);
        if (!n)
            return -1;
        c->pf = n;
        c->pfcap = cap;
    }
    struct chan *ch = chan_get(br, name);
    if (!ch)
        return -1;
    if (ch->npsubs == ch->pcap) {
        int cap = ch->pcap ? ch->pcap * 2 : 4;
        struct wsconn **n = realloc(ch->psubs, sizeof *n * (size_t)cap);
        if (!n) {
            chan_maybe_free(br, ch);
            return -1;
        }
        ch->psubs = n;
        ch->pcap = cap;
    }
    conn_ref(c);
    c->pf[c->npf].ch = ch;
    c->pf[c->npf].idx = ch->npsubs;
    c->npf++;
    ch->psubs[ch->npsubs++] = c;
    return 0;
}

/* Makes c's registrations match phx_channels() of its socket (br->mu
 * held; the caller runs c, so the socket does not change meanwhile). */
static void phx_sync_locked(struct bridge *br, struct wsconn *c)
{
    const char *want[PHX_TOPICS_MAX];
    int gone = __atomic_load_n(&c->gone, __ATOMIC_ACQUIRE);
    int n = !gone && c->phx ? phx_channels(c->phx, want, PHX_TOPICS_MAX) : 0;
    for (int i = c->npf - 1; i >= 0; i--) {
        int keep = 0;
        for (int j = 0; j < n && !keep; j++)
            keep = !strcmp(want[j], c->pf[i].ch->name);
        if (!keep)
            pchan_remove(br, c, i);
    }
    for (int j = 0; j < n; j++) {
        int have = 0;
        for (int i = 0; i < c->npf && !have; i++)
            have = !strcmp(want[j], c->pf[i].ch->name);
        if (!have && pchan_add(br, c, want[j]) < 0)
            metrics_error("out_of_memory");
    }
}

/* Makes the registry match what c's proto_conn follows (br->mu held; the
 * caller runs c). */
static void follow_sync_locked(struct bridge *br, struct wsconn *c)
{
    if (c->phx || c->npf) {
        phx_sync_locked(br, c);
        return;
    }
    int gone = __atomic_load_n(&c->gone, __ATOMIC_ACQUIRE);
    const char *want = !gone && c->opened && proto_following(&c->pc) ? c->pc.channel : NULL;
    if (c->chan && (!want || strcmp(c->chan->name, want) != 0))
        chan_remove(br, c);
    if (want && !c->chan && chan_add(br, c, want) < 0)
        metrics_error("out_of_memory");
}

static void follow_sync(struct bridge *br, struct wsconn *c)
{
    pthread_mutex_lock(&br->mu);
    follow_sync_locked(br, c);
    pthread_mutex_unlock(&br->mu);
}

/* ---- queues (br->mu held) ---- */

static void enqueue_conn(struct bridge *br, struct wsconn *c)
{
    if (c->queued || c->running)
        return;
    c->queued = 1;
    conn_ref(c);
    c->rnext = NULL;
    if (br->rq_tail)
        br->rq_tail->rnext = c;
    else
        br->rq_head = c;
    br->rq_tail = c;
    pthread_cond_signal(&br->cv);
}

static void enqueue_chan(struct bridge *br, struct chan *ch)
{
    if (ch->running) {
        ch->dirty = 1;
        return;
    }
    if (ch->queued)
        return;
    ch->queued = 1;
    ch->rnext = NULL;
    if (br->cq_tail)
        br->cq_tail->rnext = ch;
    else
        br->cq_head = ch;
    br->cq_tail = ch;
    pthread_cond_signal(&br->cv);
}

static int has_room(struct bridge *br, struct wsconn *c, int *room)
{
    size_t bytes;
    int n = conn_out_count(c, &bytes);
    if (room)
        *room = br->opt.out_high - n;
    return n < br->opt.out_high && bytes < br->opt.out_high_bytes;
}

/* c has events to catch up on (br->mu held): a pump task of its own, from
 * its own cursor, so lagging readers catch up independently (pipelined)
 * while the channel pump keeps serving the ones that keep up. */
static void catch_up_locked(struct bridge *br, struct wsconn *c)
{
    enqueue_conn(br, c);
}

/* After a worker ran c (br->mu held): registry, then requeue if needed. */
static void finish_run_locked(struct bridge *br, struct wsconn *c)
{
    follow_sync_locked(br, c);
    c->running = 0;
    int gone = __atomic_load_n(&c->gone, __ATOMIC_ACQUIRE);
    if (c->ntasks) {
        enqueue_conn(br, c);
    } else if (c->want_pump && !gone) {
        /* the hint first: the service thread reads it after each pop, so
         * either it sees the hint or we see the room it made */
        __atomic_store_n(&c->pump_hint, 1, __ATOMIC_SEQ_CST);
        if (has_room(br, c, NULL))
            catch_up_locked(br, c);
    }
}

/* ---- service-thread entry points ---- */

int sched_task(struct wsconn *c, enum task_kind kind, const void *text, size_t len)
{
    struct bridge *br = c->br;
    struct task *t = malloc(sizeof *t + len + 1);
    if (!t)
        return -1;
    t->next = NULL;
    t->kind = kind;
    t->len = len;
    if (len)
        memcpy(t->text, text, len);
    t->text[len] = '\0';
    pthread_mutex_lock(&br->mu);
    if (kind == T_CLOSE)
        __atomic_store_n(&c->gone, 1, __ATOMIC_RELEASE);
    if (c->task_tail)
        c->task_tail->next = t;
    else
        c->task_head = t;
    c->task_tail = t;
    int n = ++c->ntasks;
    enqueue_conn(br, c);
    pthread_mutex_unlock(&br->mu);
    return n;
}

int sched_pending(struct wsconn *c)
{
    pthread_mutex_lock(&c->br->mu);
    int n = c->ntasks;
    pthread_mutex_unlock(&c->br->mu);
    return n;
}

void sched_drained(struct wsconn *c)
{
    struct bridge *br = c->br;
    pthread_mutex_lock(&br->mu);
    __atomic_store_n(&c->pump_hint, 0, __ATOMIC_RELEASE);
    if (c->want_pump && !__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE))
        catch_up_locked(br, c);
    pthread_mutex_unlock(&br->mu);
}

/* ---- running a connection ---- */

static void post(struct wsconn *c, struct proto_frames *fr)
{
    if (__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE))
        frames_free(fr);               /* nobody to send to */
    else
        conn_post(c, fr);
}

/* Marks c (run by us) as wanting a pump once its queue drains; the end of
 * the run (finish_run_locked) arranges it. */
static void want_more(struct bridge *br, struct wsconn *c)
{
    pthread_mutex_lock(&br->mu);
    c->want_pump = 1;
    pthread_mutex_unlock(&br->mu);
}

/* Fails the followed job when its owner's lease expired (the owner died):
 * its viewers then get the error event instead of waiting forever.
 * Returns jobs_recover_if_expired's answer (JOBS_EXPIRED_UNRECORDED: the
 * caller hands the error on from memory). */
static int lease_check(struct worker *w, int64_t job_id)
{
    return jobs_recover_if_expired(w->ctx.db, w->ctx.bell, job_id, now_ms());
}

static void note_events(const struct evlog_event *ev, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(ev[i].type, "done") || !strcmp(ev[i].type, "error"))
            metrics_job_event(&ev[i]);
}

/* Formats events for c, at most *room of those after its cursor.
 * Returns 1 when it stopped for lack of room. */
static int feed(struct worker *w, struct proto_conn *pc, const struct evlog_event *ev, int n,
                int *room, struct proto_frames *fr)
{
    for (int i = 0; i < n && proto_following(pc); i++) {
        if (ev[i].seq <= pc->cursor)
            continue;
        if (*room <= 0)
            return 1;
        if (proto_event(&w->ctx, pc, &ev[i], fr) < 0)
            metrics_error("format");
        (*room)--;
    }
    return 0;
}

/* ---- formatting once for many followers ----
 *
 * What proto_event() makes of an event depends only on the connection's
 * adapter (kind), with_seq, the followed job (job_id), the channel, the
 * adapter state (pc.state) and the event itself (the adapters read the
 * channel's log at most, which is append-only): never on the user, peer
 * or path. So a channel pump formats an event once for each class of
 * followers with equal (kind, with_seq, job_id, state) -- on the first
 * follower of the class, the representative -- and gives the others the
 * same frames (references to one immutable buffer), moving their
 * proto_conn on exactly as proto_event() would: cursor to the event's
 * seq, job_id adopted, following stopped after the job's end. This holds
 * only when the representative's own state and close request did not
 * change in that call (json_equal against a copy taken before); when they
 * did (e.g. seed 001 learning the message id of a new job), every member
 * of the class formats the event for itself, as before. */

#define SHARE_MAX 4                    /* classes per event formatted once; more: per connection */

struct share {
    json_t *before;                    /* the state it was formatted for (a copy) */
    enum proto_kind kind;
    int with_seq;
    int64_t job_id;                    /* before the event */
    int64_t job_after;
    int stopped;                       /* the event ended the followed job */
    int ok;                            /* the frames may be shared */
    int nf;
    struct frame **fv;                 /* the frames (one reference each) */
};

struct share_set {                     /* per event of a batch */
    struct share s[SHARE_MAX];
    int n;
};

/* A worker's growable vector of frame references. */
struct fvec {
    struct frame **v;
    int n, cap;
};

static int fvec_push(struct fvec *fv, struct frame *f)
{
    if (fv->n == fv->cap) {
        int cap = fv->cap ? fv->cap * 2 : 64;
        struct frame **n = realloc(fv->v, sizeof *n * (size_t)cap);
        if (!n)
            return -1;
        fv->v = n;
        fv->cap = cap;
    }
    frame_ref(f);
    fv->v[fv->n++] = f;
    return 0;
}

static void fvec_clear(struct fvec *fv)
{
    for (int i = 0; i < fv->n; i++)
        frame_unref(fv->v[i]);
    fv->n = 0;
}

static void share_sets_clear(struct share_set *sets, int n)
{
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < sets[i].n; j++) {
            struct share *g = &sets[i].s[j];
            json_decref(g->before);
            for (int k = 0; k < g->nf; k++)
                frame_unref(g->fv[k]);
            free(g->fv);
        }
        sets[i].n = 0;
    }
}

/* Builds frames of fr's texts (frees fr); the new frames go to *fv (one
 * reference each, *nf of them) when fv is given, and onto out. */
static void frames_build(struct proto_frames *fr, struct frame ***fv, int *nf, struct fvec *out)
{
    struct frame **v = NULL;
    int n = 0;
    if (fv && fr->n > 0 && !(v = malloc(sizeof *v * (size_t)fr->n)))
        metrics_error("out_of_memory");
    for (int i = 0; i < fr->n; i++) {
        struct frame *f = frame_new(fr->v[i], strlen(fr->v[i]));
        if (!f || fvec_push(out, f) < 0) {
            metrics_error("out_of_memory");
            frame_unref(f);
            continue;
        }
        if (v)
            v[n++] = f;                /* keeps the creator's reference */
        else
            frame_unref(f);
    }
    frames_free(fr);
    if (fv) {
        *fv = v;
        *nf = n;
    }
}

/* PARLEY_WS_VERIFY_SHARED=1 (tests): every shared delivery is checked
 * against what proto_event() makes for that connection itself, on a copy;
 * a difference is a broken assumption above and aborts, loudly. */
static int verify_shared;

static void verify_share(struct worker *w, const struct proto_conn *pc,
                         const struct evlog_event *ev, const struct share *g)
{
    struct proto_conn tmp = *pc;
    tmp.state = pc->state ? json_deep_copy(pc->state) : NULL;
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_event(&w->ctx, &tmp, ev, &fr);
    int same = rc >= 0 && fr.n == g->nf && tmp.cursor == ev->seq && tmp.job_id == g->job_after &&
               (!proto_following(&tmp)) == g->stopped && json_equal(tmp.state, pc->state);
    for (int k = 0; same && k < fr.n; k++)
        same = strlen(fr.v[k]) == g->fv[k]->len && !strcmp(fr.v[k], frame_text(g->fv[k]));
    if (!same) {
        wslog("shared frame of seq %lld differs from the connection's own: %s vs %s",
              (long long)ev->seq, fr.n ? fr.v[0] : "(none)", g->nf ? frame_text(g->fv[0]) : "(none)");
        abort();
    }
    frames_free(&fr);
    json_decref(tmp.state);
}

static void frame_add_visitor(struct proto_frames *fr, const char *token);

/* A new anonymous visitor's token goes on the first frame c is sent
 * (docs/anonymous.md): at open when the protocol says something then (seed
 * 001 connected, seed 002 welcome), else on its first answer frame (seed
 * 000 says nothing before it). Then it is forgotten. */
static void give_visitor(struct wsconn *c, struct proto_frames *fr)
{
    if (c->visitor_new[0] && fr->n > 0) {
        frame_add_visitor(fr, c->visitor_new);
        c->visitor_new[0] = '\0';
    }
}

/* feed() for a channel pump: formats events for c, sharing the frames of
 * its class (sets: one per event of ev). Returns 1 when it stopped for
 * lack of room. A connection whose visitor token is still to be given
 * formats its own frames until then. */
static int feed_shared(struct worker *w, struct wsconn *c, const struct evlog_event *ev, int n,
                       int *room, struct share_set *sets, struct fvec *out)
{
    struct proto_conn *pc = &c->pc;
    for (int i = 0; i < n && proto_following(pc); i++) {
        if (ev[i].seq <= pc->cursor)
            continue;
        if (*room <= 0)
            return 1;
        (*room)--;
        struct share_set *ss = &sets[i];
        struct share *g = NULL;
        if (c->visitor_new[0]) {            /* its own frames, the token on the first */
            struct proto_frames own;
            frames_init(&own);
            if (proto_event(&w->ctx, pc, &ev[i], &own) < 0)
                metrics_error("format");
            give_visitor(c, &own);
            frames_build(&own, NULL, NULL, out);
            continue;
        }
        for (int j = 0; j < ss->n && !g; j++) {
            struct share *s = &ss->s[j];
            if (s->kind == pc->kind && s->with_seq == pc->with_seq && s->job_id == pc->job_id &&
                json_equal(s->before, pc->state))
                g = s;
        }
        if (g && g->ok) {
            if (verify_shared)
                verify_share(w, pc, &ev[i], g);
            pc->cursor = ev[i].seq;
            pc->job_id = g->job_after;
            if (g->stopped)
                pc->channel[0] = '\0';
            for (int k = 0; k < g->nf; k++)
                if (fvec_push(out, g->fv[k]) < 0)
                    metrics_error("out_of_memory");
            continue;
        }
        /* format for c itself; as a new class's representative if there
         * is room for one */
        json_t *before = !g && ss->n < SHARE_MAX && pc->state ? json_deep_copy(pc->state) : NULL;
        int64_t job_before = pc->job_id;
        int close_before = pc->close;
        struct proto_frames fr;
        frames_init(&fr);
        int rc = proto_event(&w->ctx, pc, &ev[i], &fr);
        int made = fr.n;
        if (rc < 0)
            metrics_error("format");
        if (!before) {
            frames_build(&fr, NULL, NULL, out);
            continue;
        }
        g = &ss->s[ss->n++];
        memset(g, 0, sizeof *g);
        g->before = before;
        g->kind = pc->kind;
        g->with_seq = pc->with_seq;
        g->job_id = job_before;
        g->job_after = pc->job_id;
        g->stopped = !proto_following(pc);
        g->ok = rc >= 0 && pc->close == close_before && pc->cursor == ev[i].seq &&
                json_equal(before, pc->state);
        frames_build(&fr, &g->fv, &g->nf, out);
        if (g->nf != made)
            g->ok = 0;                 /* out of memory: the others format their own */
    }
    return 0;
}

/* Catches pc (c's, or one topic of c's Phoenix socket) up on its channel
 * from its own cursor (c is run by us). Returns 1 when it stopped for lack
 * of room in c's queue (c then wants a pump once it drains), -1 when the
 * channel could not be read (a database error), else 0. */
static int pc_pump(struct worker *w, struct wsconn *c, struct proto_conn *pc)
{
    struct bridge *br = w->br;
    while (proto_following(pc) && !__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE)) {
        int room;
        if (!has_room(br, c, &room)) {
            want_more(br, c);
            return 1;
        }
        int max = room < READ_BATCH ? room : READ_BATCH;
        struct evlog_event *ev = NULL;
        int n = evlog_read(w->ctx.db, pc->channel, pc->cursor, max, &ev);
        if (n < 0) {
            metrics_error("db");
            return -1;
        }
        if (n == 0) {
            if (pc->job_id && lease_check(w, pc->job_id) == JOBS_EXPIRED_UNRECORDED) {
                /* the lease ran out and the database cannot be written:
                 * the error recovery would have appended, from memory
                 * (not through feed: its seq is the cursor, which stays) */
                struct evlog_event *xe = jobs_expired_event(pc->job_id, pc->cursor);
                if (!xe)
                    return -1;
                struct proto_frames fr;
                frames_init(&fr);
                if (proto_event(&w->ctx, pc, xe, &fr) < 0)
                    metrics_error("format");
                evlog_free(xe, 1);
                if (!c->phx)
                    give_visitor(c, &fr);
                post(c, &fr);
            }
            return 0;
        }
        note_events(ev, n);
        struct proto_frames fr;
        frames_init(&fr);
        int left = max;
        int full = feed(w, pc, ev, n, &left, &fr);
        evlog_free(ev, n);
        if (!c->phx)
            give_visitor(c, &fr);
        post(c, &fr);
        if (full) {
            want_more(br, c);
            return 1;
        }
        if (n < max)
            return 0;
    }
    return 0;
}

/* Catches c up on what it follows (c is run by us): its channel, or every
 * joined topic of its Phoenix socket in turn. What phx_pump() does, read
 * in batches bounded by the room in c's queue, so a reader that lags
 * behind several streams is flow-controlled like any other. */
static void conn_pump(struct worker *w, struct wsconn *c)
{
    struct bridge *br = w->br;
    pthread_mutex_lock(&br->mu);
    c->want_pump = 0;
    pthread_mutex_unlock(&br->mu);
    if (c->phx) {
        int crashed = 0;
        for (int i = 0; i < c->phx->n; i++) {
            int r = pc_pump(w, c, &c->phx->topics[i]);
            if (r > 0)
                break;
            if (r < 0) {
                /* a seed connection just tries again at the next ring; a
                 * Phoenix topic crashes as Phoenix's would (phx_error):
                 * the client rejoins it and the rejoin replays the answer */
                struct proto_frames fr;
                frames_init(&fr);
                phx_topic_crashed(c->phx, i--, &fr);
                post(c, &fr);
                crashed = 1;
            }
        }
        if (crashed)
            follow_sync(br, c);        /* no longer follows the crashed topics */
        return;
    }
    if (c->opened)
        pc_pump(w, c, &c->pc);
}

static void close_if_asked(struct wsconn *c)
{
    if (c->opened && c->pc.close) {
        metrics_closed(CW_ADAPTER);
        conn_request_close(c, c->pc.close_code ? c->pc.close_code : 1000, c->pc.close_reason, 0);
    }
}

/* A task of a Phoenix connection: its socket (core/phx.h) answers the
 * frames; the bridge only carries them, submits the jobs and follows the
 * channels the topics follow. */
static void run_phx_task(struct worker *w, struct wsconn *c, struct task *t)
{
    struct bridge *br = w->br;
    struct proto_frames fr;
    frames_init(&fr);
    switch (t ? t->kind : T_PUMP) {
    case T_OPEN:                       /* nothing to do: phx_init ran at ESTABLISHED */
        break;
    case T_MESSAGE: {
        struct proto_job *job = NULL;
        if (phx_message(&w->ctx, c->phx, t->text, t->len, &fr, &job) < 0)
            metrics_error("db");
        post(c, &fr);
        if (job)
            gen_submit(br, job);
        follow_sync(br, c);            /* before the pump: no ring is missed */
        conn_pump(w, c);
        break;
    }
    case T_PUMP:
        conn_pump(w, c);
        break;
    case T_CLOSE:
        pthread_mutex_lock(&br->mu);
        follow_sync_locked(br, c);     /* gone: leaves every channel */
        pthread_mutex_unlock(&br->mu);
        phx_free(c->phx);
        break;
    }
}

/* Adds "visitor": token to the first of frames (a JSON object), so that a
 * client that cannot keep cookies learns its new visitor token
 * (docs/anonymous.md). Left as it is when that frame is not an object. */
static void frame_add_visitor(struct proto_frames *fr, const char *token)
{
    json_t *o = json_loads(fr->v[0], 0, NULL);
    char *s = NULL;
    if (json_is_object(o) && json_object_set_new(o, "visitor", json_string(token)) == 0 &&
        (s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)))) {
        free(fr->v[0]);
        fr->v[0] = s;
    }
    json_decref(o);
}

static void run_task(struct worker *w, struct wsconn *c, struct task *t)
{
    struct bridge *br = w->br;
    if (c->phx) {
        run_phx_task(w, c, t);
        return;
    }
    struct proto_frames fr;
    frames_init(&fr);
    switch (t ? t->kind : T_PUMP) {
    case T_OPEN: {
        char *path = c->open_path;
        c->open_path = NULL;
        struct proto_client cl = { c->open_ua, c->open_addr, c->open_cv, NULL,
                                   c->tenant };          /* the tenant's tickets */
        if (proto_open_client(&w->ctx, &c->pc, path, c->user, c->peer, &cl, &fr) < 0)
            metrics_error(fr.n ? "open" : "db");
        free(c->open_ua);
        free(c->open_cv);
        c->open_ua = c->open_cv = NULL;
        c->pc.has_token_budget = c->token_budget >= 0;   /* the JWT's claim (docs/usage.md) */
        c->pc.token_budget = c->token_budget >= 0 ? c->token_budget : 0;
        c->pc.admin = c->admin;                          /* the role claim (docs/stop.md) */
        free(path);
        give_visitor(c, &fr);                /* a new anonymous visitor: its token */
        c->opened = 1;
        post(c, &fr);
        if (c->pc.close) {
            close_if_asked(c);
            break;
        }
        follow_sync(br, c);
        conn_pump(w, c);
        break;
    }
    case T_MESSAGE: {
        if (!c->opened || c->pc.close)
            break;                     /* refused at open, or closing */
        struct proto_job *job = NULL;
        if (proto_message(&w->ctx, &c->pc, t->text, t->len, &fr, &job) < 0)
            metrics_error("db");
        give_visitor(c, &fr);                /* seed 000: a cached answer, an error */
        post(c, &fr);
        if (job)
            gen_submit(br, job);
        close_if_asked(c);
        follow_sync(br, c);
        conn_pump(w, c);
        break;
    }
    case T_PUMP:
        conn_pump(w, c);
        break;
    case T_CLOSE:
        pthread_mutex_lock(&br->mu);
        follow_sync_locked(br, c);     /* gone: leaves its channel */
        pthread_mutex_unlock(&br->mu);
        if (c->opened) {
            proto_conn_cleanup(&c->pc);
            c->opened = 0;
        }
        break;
    }
}

/* ---- channel pumps ---- */

static void chan_pump(struct worker *w, struct chan *ch)
{
    struct bridge *br = w->br;
    pthread_mutex_lock(&br->mu);
    int check = ch->check_lease;
    ch->check_lease = 0;
    int cap = ch->nsubs > 0 ? ch->nsubs : 0, k = 0;
    struct wsconn **batch = cap ? malloc(sizeof *batch * (size_t)(unsigned)cap) : NULL;
    int *room = cap ? malloc(sizeof *room * (size_t)(unsigned)cap) : NULL;
    if (cap && (!batch || !room)) {
        for (int i = 0; i < ch->nsubs; i++)
            ch->subs[i]->want_pump = 1;
        cap = 0;
    }
    for (int i = 0; i < ch->npsubs; i++) {
        /* Phoenix followers: each pumps its own topics (conn_pump) */
        struct wsconn *c = ch->psubs[i];
        if (__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE))
            continue;
        c->want_pump = 1;
        if (c->running || c->queued)
            continue;                  /* its current task ends with a pump */
        __atomic_store_n(&c->pump_hint, 1, __ATOMIC_SEQ_CST);   /* see finish_run_locked */
        if (has_room(br, c, NULL))
            enqueue_conn(br, c);
    }
    for (int i = 0; i < cap; i++) {
        struct wsconn *c = ch->subs[i];
        if (__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE))
            continue;
        if (c->running || c->queued) {
            c->want_pump = 1;          /* its current task ends with a pump */
            continue;
        }
        int r;
        __atomic_store_n(&c->pump_hint, 1, __ATOMIC_SEQ_CST);   /* see finish_run_locked */
        if (!has_room(br, c, &r)) {
            c->want_pump = 1;
            continue;
        }
        c->running = 1;
        c->want_pump = 0;              /* served from its own cursor now */
        __atomic_store_n(&c->pump_hint, 0, __ATOMIC_RELEASE);
        conn_ref(c);
        room[k] = r;
        batch[k++] = c;
    }
    pthread_mutex_unlock(&br->mu);

    int64_t cur = INT64_MAX;
    for (int j = 0; j < k; j++)
        if (proto_following(&batch[j]->pc) && !strcmp(batch[j]->pc.channel, ch->name) &&
            batch[j]->pc.cursor < cur)
            cur = batch[j]->pc.cursor;
    int *full = k > 0 ? calloc((size_t)(unsigned)k, sizeof *full) : NULL;
    struct fvec out = { NULL, 0, 0 };
    if (k && !w->sets && !(w->sets = calloc(READ_BATCH, sizeof *w->sets))) {
        free(full);                    /* no memory: each catches up on its own */
        full = NULL;
    }
    while (k && full && cur != INT64_MAX) {
        struct evlog_event *ev = NULL;
        int n = evlog_read(w->ctx.db, ch->name, cur, READ_BATCH, &ev);
        if (n < 0) {
            metrics_error("db");
            break;
        }
        if (n == 0) {
            for (int j = 0; check && j < k; j++)
                if (batch[j]->pc.job_id) {
                    if (lease_check(w, batch[j]->pc.job_id) == JOBS_EXPIRED_UNRECORDED)
                        for (int i = 0; i < k; i++)
                            full[i] = 1;    /* each gets the error in pc_pump */
                    break;
                }
            break;
        }
        note_events(ev, n);
        /* wake the loop at the first frame (it starts writing at once),
         * then at most once more at the end of the batch */
        int woke = 0, wake = 0;
        for (int j = 0; j < k; j++) {
            struct wsconn *c = batch[j];
            if (full[j] || strcmp(c->pc.channel, ch->name) != 0)
                continue;
            full[j] = feed_shared(w, c, ev, n, &room[j], w->sets, &out);
            int must = !__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE) &&
                       conn_post_shared(c, out.v, out.n);
            fvec_clear(&out);
            if (must) {
                if (!woke)
                    conn_wake(br);
                else
                    wake = 1;
                woke = 1;
            }
        }
        if (wake)
            conn_wake(br);
        share_sets_clear(w->sets, n);
        cur = ev[n - 1].seq;
        evlog_free(ev, n);
        int all_full = 1;
        for (int j = 0; j < k && all_full; j++)
            all_full = full[j];
        if (n < READ_BATCH || all_full)
            break;
    }
    pthread_mutex_lock(&br->mu);
    for (int j = 0; j < k; j++) {
        if (!full || full[j])
            batch[j]->want_pump = 1;
        finish_run_locked(br, batch[j]);
    }
    pthread_mutex_unlock(&br->mu);
    for (int j = 0; j < k; j++)
        conn_unref(batch[j]);
    free(out.v);
    free(full);
    free(batch);
    free(room);
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bridge *br = w->br;
    pthread_mutex_lock(&br->mu);
    for (;;) {
        if (br->cq_head) {
            struct chan *ch = br->cq_head;
            br->cq_head = ch->rnext;
            if (!br->cq_head)
                br->cq_tail = NULL;
            ch->queued = 0;
            ch->running = 1;
            pthread_mutex_unlock(&br->mu);
            chan_pump(w, ch);
            pthread_mutex_lock(&br->mu);
            ch->running = 0;
            if (ch->dirty) {
                ch->dirty = 0;
                enqueue_chan(br, ch);
            } else {
                chan_maybe_free(br, ch);
            }
            continue;
        }
        if (br->rq_head) {
            struct wsconn *c = br->rq_head;
            br->rq_head = c->rnext;
            if (!br->rq_head)
                br->rq_tail = NULL;
            c->queued = 0;
            c->running = 1;
            struct task *t = c->task_head;
            if (t) {
                c->task_head = t->next;
                if (!c->task_head)
                    c->task_tail = NULL;
                c->ntasks--;
            }
            int resume = __atomic_load_n(&c->rx_paused, __ATOMIC_ACQUIRE) && c->ntasks <= 8;
            pthread_mutex_unlock(&br->mu);
            if (t || !__atomic_load_n(&c->gone, __ATOMIC_ACQUIRE))
                run_task(w, c, t);
            free(t);
            if (resume)
                conn_notify(c);
            pthread_mutex_lock(&br->mu);
            finish_run_locked(br, c);
            pthread_mutex_unlock(&br->mu);
            conn_unref(c);             /* the ready queue's reference */
            pthread_mutex_lock(&br->mu);
            continue;
        }
        if (br->hold_due) {
            br->hold_due = 0;
            pthread_mutex_unlock(&br->mu);
            gen_hold_waiting(br, &w->ctx);
            pthread_mutex_lock(&br->mu);
            continue;
        }
        if (br->sched_stop)
            break;
        pthread_cond_wait(&br->cv, &br->mu);
    }
    pthread_mutex_unlock(&br->mu);
    return NULL;
}

/* ---- watcher ---- */

static void *watcher_main(void *arg)
{
    struct bridge *br = arg;
    int lease = br->cfg.lease_ms;
    int64_t next_hold = mono_ms() + lease / 4;
    int64_t next_stats = mono_ms();
    const char *stats = br->opt.stats_path;
    for (;;) {
        uint32_t any = bell_peek_any(br->bell);
        int64_t now = mono_ms();
        pthread_mutex_lock(&br->mu);
        if (br->sched_stop) {
            pthread_mutex_unlock(&br->mu);
            break;
        }
        for (int b = 0; b < CHAN_BUCKETS; b++)
            for (struct chan *ch = br->chans[b]; ch; ch = ch->hnext) {
                uint32_t v = bell_peek_slot(br->bell, ch->slot);
                if (v != ch->seen) {
                    ch->seen = v;
                    ch->moved_ms = now;
                    enqueue_chan(br, ch);
                } else if ((ch->nsubs || ch->npsubs) && now - ch->moved_ms > lease / 2) {
                    ch->moved_ms = now;        /* quiet: is its job's owner alive? */
                    ch->check_lease = 1;
                    enqueue_chan(br, ch);
                }
            }
        if (now >= next_hold) {
            next_hold = now + lease / 4;
            if (gen_waiting(br) > 0) {
                br->hold_due = 1;
                pthread_cond_signal(&br->cv);
            }
        }
        pthread_mutex_unlock(&br->mu);
        if (stats && now >= next_stats) {
            next_stats = now + (int64_t)br->opt.stats_every_s * 1000;
            if (metrics_write_file(br, stats) < 0)
                metrics_error("stats_file");
        }
        int wait = 250;
        if (next_hold - now < wait)
            wait = next_hold - now > 1 ? (int)(next_hold - now) : 1;
        bell_wait_any(br->bell, any, wait);
    }
    return NULL;
}

/* ---- start / stop ---- */

int sched_start(struct bridge *br)
{
    char err[512];
    const char *v = getenv("PARLEY_WS_VERIFY_SHARED");
    verify_shared = v && *v && strcmp(v, "0") != 0;
    workers = calloc((size_t)br->opt.workers, sizeof *workers);
    br->worker_th = NULL;
    if (!workers)
        return -1;
    for (int i = 0; i < br->opt.workers; i++) {
        struct worker *w = &workers[i];
        w->br = br;
        w->ctx.cfg = &br->cfg;
        w->ctx.bell = br->bell;
        w->ctx.db = db_open(br->cfg.db_path, err, sizeof err);
        if (!w->ctx.db) {
            wslog("worker: %s", err);
            return -1;
        }
    }
    for (int i = 0; i < br->opt.workers; i++) {
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0)
            return -1;
        br->nworkers++;
    }
    if (pthread_create(&br->watcher_th, NULL, watcher_main, br) != 0)
        return -1;
    br->watcher_started = 1;
    return 0;
}

void sched_stop(struct bridge *br)
{
    pthread_mutex_lock(&br->mu);
    br->sched_stop = 1;
    pthread_cond_broadcast(&br->cv);
    pthread_mutex_unlock(&br->mu);
    if (br->watcher_started)
        pthread_join(br->watcher_th, NULL);
    for (int i = 0; i < br->nworkers; i++)
        pthread_join(workers[i].th, NULL);
    for (int i = 0; workers && i < br->opt.workers; i++) {
        db_close(workers[i].ctx.db);
        free(workers[i].sets);
    }
    free(workers);
    workers = NULL;
    /* every connection has left its channel by now (T_CLOSE ran) */
    for (int b = 0; b < CHAN_BUCKETS; b++)
        while (br->chans[b]) {
            struct chan *ch = br->chans[b];
            br->chans[b] = ch->hnext;
            for (int i = 0; i < ch->nsubs; i++)
                conn_unref(ch->subs[i]);
            for (int i = 0; i < ch->npsubs; i++)
                conn_unref(ch->psubs[i]);
            free(ch->subs);
            free(ch->psubs);
            free(ch->name);
            free(ch);
        }
}
