/* genloop.c — this process's generation loop: proto_job_submit and
 * proto_jobs_drain (proto.h), genloop_stats (genloop.h).
 *
 * One thread per process runs every generation the process owns, so a
 * running generation holds no thread, request or FastCGI slot of its own:
 *   - its own parley_db connection (opened when the loop starts);
 *   - one curl multi driven with curl_multi_socket_action on an epoll set
 *     (sockets registered by CURLMOPT_SOCKETFUNCTION, curl's timer by
 *     CURLMOPT_TIMERFUNCTION), plus an eventfd that submitters write to;
 *   - jobs that can start together send their upstream requests first,
 *     then begin in ONE transaction (lease adoptions and "start" events)
 *     while the requests are in flight, before any token is read;
 *   - each job is a runner_gen in RUNNER_BATCH mode + its llm_stream: the
 *     write callback (inside socket_action, on this thread) hands tokens to
 *     the gen, and every coalesce_ms the tokens of EVERY stream that got
 *     some go into the log in ONE transaction, then each channel is rung;
 *   - every TICK_MS: the streams' timeouts (first token, idle, total); every
 *     lease/6: one transaction renews the leases of all running and
 *     waiting jobs; every lease: jobs_recover fails the jobs (of any
 *     process or node) whose lease ran out — a job whose process died
 *     while nobody follows its channel (a seed 004 or OpenAI stream whose
 *     client left with it) is not left running until a cron `parley
 *     maintain` (one indexed read when there is none);
 *   - at most cfg->max_generations (PARLEY_MAX_GENERATIONS) streams at once;
 *     the rest wait in a FIFO with their leases held by this thread.
 *   - stops (docs/stop.md): a stop request is a column on the job plus a
 *     doorbell ring of its channel (jobs_request_stop, from any process or
 *     node). Every STOP_CHECK_MS while streams run, the loop compares the
 *     doorbell slot of each running stream's channel with what it saw (a
 *     memory read each; its own rings after a token flush are accounted
 *     for) and only when one moved runs ONE query for the whole process
 *     (jobs_stop_pending: its running jobs asked to stop); each one found
 *     is aborted at once (runner_gen_stop, llm_stream_abort, removed from
 *     the multi in the same iteration: the upstream sees its connection
 *     closed) and ends stopped;
 * A stream that ends (final message, failure, timeout, lost lease, stop) is
 * finished by runner_gen_finish (done + cache + message in one
 * transaction, or one error event) and its job freed.
 *
 * Shared with other threads (under G.mu): the inbox of submitted jobs and
 * the counters. Everything else belongs to the loop thread.
 */
#include "genloop.h"
#include "proto_impl.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100                /* timeouts of every stream checked this often */
#define STOP_CHECK_MS 20           /* doorbell slots of running streams compared this often */
#define STOP_MSG "stopped by the user"
#define SHUTDOWN_MSG "generation interrupted: the server is shutting down"

struct entry {
    struct entry *next;            /* inbox / waiting FIFO */
    struct proto_job *job;         /* owned */
    struct runner_gen *gen;        /* while running */
    struct llm_stream *st;         /* while running */
    CURL *easy;                    /* st's handle while it is in the multi */
    int idx;                       /* in L.run while running */
    int dirty;                     /* on L.dirty */
    int flushed;                   /* some of its tokens are in the log */
    int wrote;                     /* flush_dirty: appended in this batch */
    int ending;                    /* on L.ending */
    int64_t held_ms;               /* waiting: lease last extended (0: never by us) */
    uint32_t bell_seen;            /* running: its channel's doorbell slot at the last check */
    uint32_t bell_slot;            /* bell_slot_of(its channel) */
    char owner_before[64];         /* lease owner before a batch begin (restored on rollback) */
};

/* Shared state (G.mu). */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* the loop stopped */
    int started;                   /* a loop thread exists */
    int stop;                      /* drain asked: finish by stop_at, then fail the rest */
    int64_t stop_at;               /* mono_ms */
    int stopped;                   /* the loop thread has ended */
    int failed_at_stop;
    struct entry *in_head, *in_tail;
    int efd;
    pthread_t th;
    const struct parley_config *cfg;
    parley_bell *bell;
    int queued, running;
    long long ended;
} G = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0,
        NULL, NULL, -1, 0, NULL, NULL, 0, 0, 0 };

/* The loop thread's own state. */
static struct {
    struct parley_ctx ctx;
    CURLM *multi;
    int ep;
    int64_t timer_at;              /* curl's timer (mono_ms), -1 none */
    struct entry **run;            /* running streams */
    int nrun, caprun;
    struct entry *wait_head, *wait_tail;   /* waiting for a stream slot */
    int nwait;
    struct entry **dirty;          /* got bytes since the last flush */
    int ndirty, capdirty;
    int64_t dirty_since;           /* mono_ms of the oldest dirty */
    int flush_now;                 /* a dirty stream has never flushed: its
                                    * first token does not wait coalesce_ms */
    struct entry **ending;         /* ended: to finish */
    int nending, capending;
    struct entry **batch;          /* starting together */
    int capbatch;
    int max;
    int64_t last_tick, last_renew;
    int64_t last_sweep;            /* mono_ms of the last jobs_recover */
    int64_t last_stop_check;       /* mono_ms */
    int stop_check;                /* check for stops at the next chance (a stream started) */
} L;

static int push(struct entry ***v, int *n, int *cap, struct entry *e)
{
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        struct entry **nv = realloc(*v, sizeof *nv * (size_t)nc);
        if (!nv)
            return -1;
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = e;
    return 0;
}

static void counters(int dq, int dr, int dended)
{
    pthread_mutex_lock(&G.mu);
    G.queued += dq;
    G.running += dr;
    G.ended += dended;
    pthread_mutex_unlock(&G.mu);
}

/* ---- curl's sockets and timer on our epoll set ---- */

static int on_socket(CURL *e, curl_socket_t s, int what, void *up, void *sp)
{
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(L.ep, EPOLL_CTL_DEL, s, NULL);
        return 0;
    }
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = s;
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (epoll_ctl(L.ep, EPOLL_CTL_MOD, s, &ev) < 0 && errno == ENOENT)
        epoll_ctl(L.ep, EPOLL_CTL_ADD, s, &ev);
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *up)
{
    L.timer_at = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

/* ---- one entry ---- */

static void mark_dirty(void *ud)
{
    struct entry *e = ud;
    if (e->dirty || e->ending)
        return;
    if (push(&L.dirty, &L.ndirty, &L.capdirty, e) < 0)
        return;                    /* tokens wait for the next dirty mark or the end */
    if (L.ndirty == 1)
        L.dirty_since = mono_ms();
    e->dirty = 1;
    if (!e->flushed)
        L.flush_now = 1;           /* the first token: time to first token is
                                    * what a user waits for; later ones wait
                                    * up to coalesce_ms to share a transaction */
}

static void mark_ending(struct entry *e)
{
    if (e->ending)
        return;
    if (push(&L.ending, &L.nending, &L.capending, e) < 0) {
        /* out of memory: it is found again at the next tick (stream ended) */
        return;
    }
    e->ending = 1;
}

static void free_entry(struct entry *e)
{
    proto_job_free(e->job);
    free(e);
}

/* Fails a job we hold that never started (queue full, shutdown). */
static void fail_unstarted(struct parley_ctx *ctx, struct entry *e, const char *msg)
{
    if (runner_fail(ctx, &e->job->req, &e->job->claim, "internal", msg) < 0)
        fprintf(stderr, "parley: could not record the failure of a generation on %s: "
                "its lease expires and viewers recover it\n", e->job->channel);
    free_entry(e);
}

/* Starts the upstream request of e, whose gen exists (runner_gen_new):
 * into L.run and the multi (a stream that fails in setup is marked ending,
 * and ends after its start is recorded). 0, or -1 out of memory (e is
 * still the caller's, its gen discarded and NULL). */
static int launch_entry(struct entry *e)
{
    e->st = runner_gen_stream(e->gen);
    e->idx = L.nrun;
    if (push(&L.run, &L.nrun, &L.caprun, e) < 0) {
        if (e->st) {
            llm_stream_abort(e->st, "out of memory starting the generation");
            llm_stream_finish(e->st);
        }
        e->st = NULL;
        runner_gen_discard(e->gen);
        e->gen = NULL;
        return -1;
    }
    counters(0, 1, 0);
    /* a stop asked before the stream started rang before we looked */
    e->bell_slot = bell_slot_of(runner_gen_channel(e->gen));
    if (L.ctx.bell)
        e->bell_seen = bell_peek_slot(L.ctx.bell, e->bell_slot);
    L.stop_check = 1;
    CURL *easy = e->st ? llm_stream_easy(e->st) : NULL;
    if (easy) {
        llm_stream_set_notify(e->st, mark_dirty, e);
        llm_stream_set_multi(e->st, L.multi);      /* retries re-add the same handle */
        curl_easy_setopt(easy, CURLOPT_PRIVATE, (void *)e);
        if (curl_multi_add_handle(L.multi, easy) == CURLM_OK) {
            e->easy = easy;
        } else {
            llm_stream_abort(e->st, "cannot add the upstream request to the generation loop");
            mark_ending(e);
        }
    } else {
        mark_ending(e);            /* failed in setup (config) or out of memory */
    }
    return 0;
}

/* Takes a running entry out of L.run (swap-remove) and frees it. */
static void run_remove(struct entry *e)
{
    struct entry *last = L.run[L.nrun - 1];
    L.run[e->idx] = last;
    last->idx = e->idx;
    L.nrun--;
    free_entry(e);
    counters(0, -1, 1);
}

/* Takes p out of the array v[0..*n) if it is there. */
static void unlist(struct entry **v, int *n, struct entry *p)
{
    for (int i = 0; i < *n; i++)
        if (v[i] == p) {
            v[i] = v[--*n];
            return;
        }
}

/* Drops a launched entry whose start could not be recorded (the job is no
 * longer ours, or the database failed): its upstream request is aborted
 * and nothing is written (a job no longer ours already has its error; one
 * the database failed is recovered when its lease runs out, as before). */
static void drop_launched(struct entry *e)
{
    if (e->easy)
        curl_multi_remove_handle(L.multi, e->easy);
    e->easy = NULL;
    if (e->st) {
        llm_stream_abort(e->st, JOB_INTERRUPTED_MSG);
        llm_stream_finish(e->st);
    }
    e->st = NULL;
    if (e->dirty)
        unlist(L.dirty, &L.ndirty, e);
    if (e->ending)
        unlist(L.ending, &L.nending, e);
    runner_gen_discard(e->gen);
    e->gen = NULL;
    run_remove(e);
}

/* After e's start was committed: rings its channel (our own ring is no
 * news for the stop check, as after a token flush). */
static void ring_started(struct entry *e)
{
    if (!L.ctx.bell)
        return;
    uint32_t before = bell_peek_slot(L.ctx.bell, e->bell_slot);
    bell_ring(L.ctx.bell, runner_gen_channel(e->gen));
    if (before == e->bell_seen)
        e->bell_seen = before + 1;
}

/* Records the starts of the launched batch[0..n) (NULL members skipped) in
 * ONE transaction (lease adoptions and start events), then rings each
 * channel; a job no longer ours is dropped. 0, or -1 when the transaction
 * failed: nothing of it happened (leases restored), the caller records
 * them one by one. */
static int record_batch(struct entry **batch, int n)
{
    parley_db *db = L.ctx.db;
    if (db_begin(db) < 0)
        return -1;
    int ok = 1;
    int *mine = calloc((size_t)n, sizeof *mine);
    if (!mine) {
        db_rollback(db);
        return -1;
    }
    for (int i = 0; i < n && ok; i++) {
        struct entry *e = batch[i];
        if (!e)
            continue;
        struct gen_outcome out;
        str_copy(e->owner_before, sizeof e->owner_before, e->job->claim.lease_owner);
        int rc = runner_gen_record_start(e->gen, &e->job->claim, RUNNER_IN_TX, &out);
        gen_outcome_free(&out);
        if (rc < 0)
            ok = 0;
        mine[i] = rc == 0;
    }
    if (!ok || db_commit(db) < 0) {
        db_rollback(db);
        for (int i = 0; i < n; i++)
            if (batch[i])
                str_copy(batch[i]->job->claim.lease_owner,
                         sizeof batch[i]->job->claim.lease_owner, batch[i]->owner_before);
        free(mine);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct entry *e = batch[i];
        if (!e)
            continue;
        if (mine[i])
            ring_started(e);
        else
            drop_launched(e);      /* no longer ours: a viewer failed it */
    }
    free(mine);
    return 0;
}

/* Starts batch[0..n): every upstream request goes out FIRST (the upstream
 * needs tens of ms for its first token: nothing the client waits for), then
 * the starts are recorded while the requests are in flight — before any
 * token is read, since tokens are read only by this thread's later
 * socket_action calls, and flushed by flush_dirty after that. */
static void start_entries(struct entry **batch, int n)
{
    int launched = 0;
    for (int i = 0; i < n; i++) {
        struct entry *e = batch[i];
        if (runner_gen_new(&L.ctx, &e->job->req, &e->job->claim, RUNNER_BATCH, &e->gen) < 0 ||
            launch_entry(e) < 0) {
            fail_unstarted(&L.ctx, e, "out of memory starting the generation");
            counters(0, 0, 1);
            batch[i] = NULL;
            continue;
        }
        launched++;
    }
    if (launched == 0)
        return;
    int running;
    curl_multi_socket_action(L.multi, CURL_SOCKET_TIMEOUT, 0, &running);   /* send them now */
    if (launched > 1 && record_batch(batch, n) == 0)
        return;
    for (int i = 0; i < n; i++) {
        struct entry *e = batch[i];
        if (!e)
            continue;
        struct gen_outcome out;
        int rc = runner_gen_record_start(e->gen, &e->job->claim, 0, &out);   /* rings */
        if (rc < 0)
            fprintf(stderr, "parley: generation on %s: %s\n", e->job->channel, out.error);
        gen_outcome_free(&out);
        if (rc != 0)
            drop_launched(e);
        else if (L.ctx.bell)
            e->bell_seen = bell_peek_slot(L.ctx.bell, e->bell_slot);   /* our own ring */
    }
}

/* After e's job ended (recorded): its on_end hook, unless the process is
 * shutting down. */
static void end_hook(struct entry *e)
{
    if (!e->job->on_end)
        return;
    pthread_mutex_lock(&G.mu);
    int stopping = G.stop;
    pthread_mutex_unlock(&G.mu);
    if (!stopping)
        e->job->on_end(&L.ctx, e->job);    /* may submit the next job */
}

/* Ends a running entry: out of the multi, finish stream and job, free. */
static void end_entry(struct entry *e)
{
    if (e->easy)
        curl_multi_remove_handle(L.multi, e->easy);
    e->easy = NULL;
    int lrc = llm_stream_finish(e->st);
    struct gen_outcome out;
    int recorded = runner_gen_finish(e->gen, lrc, &out) == 0;
    if (!recorded)
        fprintf(stderr, "parley: generation on %s: could not record its end: %s\n",
                e->job->channel, out.error);
    gen_outcome_free(&out);
    if (recorded)
        end_hook(e);
    run_remove(e);
}

/* ---- batches ---- */

/* Writes the tokens of every dirty stream in one transaction, then rings
 * each channel. A failed transaction fails those streams (their tokens are
 * lost, so a complete answer cannot be claimed). */
static void flush_dirty(void)
{
    L.flush_now = 0;
    if (L.ndirty == 0)
        return;
    parley_db *db = L.ctx.db;
    int any = 0;
    for (int i = 0; i < L.ndirty && !any; i++)
        any = runner_gen_pending(L.dirty[i]->gen) > 0;
    /* nothing to append (the bytes read were no token yet): no
     * transaction, no ring; the stream is marked again at its next read */
    int ok = !any || db_begin(db) == 0;
    for (int i = 0; any && ok && i < L.ndirty; i++) {
        int rc = runner_gen_flush_tx(L.dirty[i]->gen);
        L.dirty[i]->wrote = rc > 0;
        if (rc < 0)
            ok = 0;
    }
    if (any && ok && db_commit(db) < 0)
        ok = 0;
    if (!ok) {
        db_rollback(db);
        fprintf(stderr, "parley: generation loop: cannot write tokens: %s\n", db_errmsg(db));
    }
    for (int i = 0; i < L.ndirty; i++) {
        struct entry *e = L.dirty[i];
        e->dirty = 0;
        if (ok) {
            if (!e->wrote)
                continue;
            e->wrote = 0;
            e->flushed = 1;
            if (L.ctx.bell) {
                /* our own ring is no news for the stop check: the slot may
                 * skip our increment only if someone else rang too */
                const char *ch = runner_gen_channel(e->gen);
                uint32_t before = bell_peek_slot(L.ctx.bell, e->bell_slot);
                bell_ring(L.ctx.bell, ch);
                if (before == e->bell_seen)
                    e->bell_seen = before + 1;
            }
        } else {
            runner_gen_db_failed(e->gen);
            llm_stream_abort(e->st, "database error while streaming the answer");
            mark_ending(e);
        }
    }
    L.ndirty = 0;
}

/* Aborts the running streams whose jobs were asked to stop (see the top of
 * the file): a memory compare per stream every STOP_CHECK_MS, one query for
 * all of them only when a slot moved. */
static void end_hook(struct entry *e);

/* A waiting job (no stream slot yet, PARLEY_MAX_GENERATIONS) asked to stop:
 * it never streams; begun and ended stopped at once (start and "done"
 * marked stopped, no text), off the waiting list. */
static void stop_waiting(struct entry *e)
{
    struct gen_outcome out;
    int rc = runner_gen_begin(&L.ctx, &e->job->req, &e->job->claim, 0, &out, &e->gen);
    gen_outcome_free(&out);
    if (rc == 0) {
        runner_gen_stop(e->gen);
        if (runner_gen_finish(e->gen, -1, &out) < 0)
            fprintf(stderr, "parley: generation on %s: could not record its stop: %s\n",
                    e->job->channel, out.error);
        else
            end_hook(e);
        gen_outcome_free(&out);
    }
    free_entry(e);
}

static void check_stops(int64_t now)
{
    if ((L.nrun == 0 && L.nwait == 0) ||
        (!L.stop_check && now - L.last_stop_check < STOP_CHECK_MS))
        return;
    L.last_stop_check = now;
    int moved = L.stop_check || !L.ctx.bell;
    L.stop_check = 0;
    for (int i = 0; i < L.nrun && L.ctx.bell; i++) {
        struct entry *e = L.run[i];
        uint32_t v = bell_peek_slot(L.ctx.bell, e->bell_slot);
        if (v != e->bell_seen) {
            e->bell_seen = v;
            moved = 1;
        }
    }
    for (struct entry *e = L.wait_head; e && L.ctx.bell; e = e->next) {
        uint32_t v = bell_peek(L.ctx.bell, e->job->channel);
        if (v != e->bell_seen) {
            e->bell_seen = v;
            moved = 1;
        }
    }
    if (!moved)
        return;
    int64_t ids[256];
    int n = jobs_stop_pending(L.ctx.db, owner_id(), ids, 256);
    if (n < 0) {
        L.stop_check = 1;          /* try again at the next check */
        return;
    }
    for (int k = 0; k < n; k++)
        for (int i = 0; i < L.nrun; i++) {
            struct entry *e = L.run[i];
            if (runner_gen_job(e->gen) != ids[k] || e->ending)
                continue;
            runner_gen_stop(e->gen);
            llm_stream_abort(e->st, STOP_MSG);
            mark_ending(e);
        }
    /* waiting ones whose lease the loop holds (the others are not ours yet) */
    for (int k = 0; k < n; k++)
        for (struct entry **pp = &L.wait_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
            struct entry *e = *pp;
            if (e->job->claim.job_id != ids[k] || e->held_ms <= 0)
                continue;
            *pp = e->next;
            if (L.wait_tail == e)
                L.wait_tail = prev;
            L.nwait--;
            counters(-1, 0, 1);
            stop_waiting(e);
            break;
        }
}

/* Moves ended streams out of the dirty list (their tokens go into the
 * final transaction), to the ending list. */
static void collect_ended(void)
{
    int k = 0;
    for (int i = 0; i < L.ndirty; i++) {
        struct entry *e = L.dirty[i];
        if (e->ending || llm_stream_ended(e->st)) {
            e->dirty = 0;
            mark_ending(e);
        } else {
            L.dirty[k++] = e;
        }
    }
    L.ndirty = k;
}

/* Extends the leases of every running and waiting job, in one transaction. */
static void renew_all(int64_t now)
{
    parley_db *db = L.ctx.db;
    if (L.nrun == 0 && L.nwait == 0)
        return;
    int in_tx = db_begin(db) == 0;
    for (int i = 0; i < L.nrun; i++) {
        struct entry *e = L.run[i];
        if (!e->ending && runner_gen_renew_tx(e->gen) < 0) {
            llm_stream_abort(e->st, JOB_INTERRUPTED_MSG);
            mark_ending(e);
        }
    }
    int64_t every = L.ctx.cfg->lease_ms / 4;
    struct entry **pp = &L.wait_head, *prev = NULL;
    while (*pp) {
        struct entry *e = *pp;
        if (e->held_ms && now - e->held_ms < every) {
            prev = e;
            pp = &e->next;
            continue;
        }
        if (proto_job_hold(&L.ctx, e->job) == 0) {
            e->held_ms = now;
            prev = e;
            pp = &e->next;
            continue;
        }
        /* failed while it waited (lease lost): its viewers got the error */
        *pp = e->next;
        if (L.wait_tail == e)
            L.wait_tail = prev;
        L.nwait--;
        counters(-1, 0, 1);
        free_entry(e);
    }
    if (in_tx && db_commit(db) < 0)
        db_rollback(db);
}

/* ---- the loop ---- */

static void take_inbox(void)
{
    uint64_t v;
    while (read(G.efd, &v, sizeof v) > 0)
        ;
    pthread_mutex_lock(&G.mu);
    struct entry *h = G.in_head;
    struct entry *t = G.in_tail;
    G.in_head = G.in_tail = NULL;
    pthread_mutex_unlock(&G.mu);
    if (!h)
        return;
    if (L.wait_tail)
        L.wait_tail->next = h;
    else
        L.wait_head = h;
    L.wait_tail = t;
    for (struct entry *e = h; e; e = e->next)
        L.nwait++;
}

static void start_waiting(int64_t now)
{
    int n = 0;
    while (L.wait_head && L.nrun + n < L.max) {
        struct entry *e = L.wait_head;
        L.wait_head = e->next;
        if (!L.wait_head)
            L.wait_tail = NULL;
        e->next = NULL;
        L.nwait--;
        counters(-1, 0, 0);
        if (push(&L.batch, &n, &L.capbatch, e) < 0) {
            start_entries(&e, 1);
            continue;
        }
    }
    if (n > 0)
        start_entries(L.batch, n);
    /* the ones that stay: hold their leases now (the claiming thread's
     * lease would otherwise run out; it is renewed with the others after) */
    for (struct entry *e = L.wait_head; e; e = e->next)
        if (!e->held_ms) {
            if (proto_job_hold(&L.ctx, e->job) == 0)
                e->held_ms = now;
            else
                e->held_ms = -1;   /* failed meanwhile: dropped at the next renewal */
        }
}

static int wait_timeout(int64_t now)
{
    int64_t at = L.last_tick + TICK_MS;
    if (L.timer_at >= 0 && L.timer_at < at)
        at = L.timer_at;
    if (L.ndirty > 0) {
        int64_t f = L.flush_now ? now
                                : L.dirty_since + (L.ctx.cfg->coalesce_ms > 0 ? L.ctx.cfg->coalesce_ms : 0);
        if (f < at)
            at = f;
    }
    if (L.nending > 0)
        return 0;
    if (L.nrun > 0 && L.last_stop_check + STOP_CHECK_MS < at)
        at = L.last_stop_check + STOP_CHECK_MS;
    int64_t w = at - now;
    return w < 0 ? 0 : w > TICK_MS ? TICK_MS : (int)w;
}

static void read_done(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(L.multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct entry *e = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&e);
        if (!e)
            continue;
        llm_stream_transfer_done(e->st, msg->data.result);
        if (llm_stream_ended(e->st))   /* else a retry on another upstream */
            mark_ending(e);
    }
}

static void finish_ending(void)
{
    /* ending entries may still be on the dirty list: take them off first */
    collect_ended();
    for (int i = 0; i < L.nending; i++)
        end_entry(L.ending[i]);
    L.nending = 0;
}

/* Fails everything left at the end of a drain. Returns how many. */
static int fail_rest(void)
{
    int n = 0;
    for (int i = 0; i < L.nrun; i++) {
        struct entry *e = L.run[i];
        if (!e->ending) {
            llm_stream_abort(e->st, SHUTDOWN_MSG);
            mark_ending(e);
            n++;
        }
    }
    finish_ending();
    take_inbox();
    while (L.wait_head) {
        struct entry *e = L.wait_head;
        L.wait_head = e->next;
        L.nwait--;
        counters(-1, 0, 1);
        fail_unstarted(&L.ctx, e, SHUTDOWN_MSG);
        n++;
    }
    L.wait_tail = NULL;
    return n;
}

static void *loop_main(void *arg)
{
    struct epoll_event evs[256];
    int failed = 0;
    for (;;) {
        int64_t now = mono_ms();
        int n = epoll_wait(L.ep, evs, 256, wait_timeout(now));
        int running = 0;
        int inbox = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == G.efd) {
                inbox = 1;
                continue;
            }
            int fl = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                     (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                     (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
            curl_multi_socket_action(L.multi, evs[i].data.fd, fl, &running);
        }
        now = mono_ms();
        /* new jobs' upstream requests go out before this iteration's
         * database work (token flushes, ends, renewals): the first token
         * their clients wait for starts with them */
        if (inbox) {
            take_inbox();
            inbox = 0;
            start_waiting(now);
            now = mono_ms();
        }
        if (L.timer_at >= 0 && now >= L.timer_at) {
            L.timer_at = -1;
            curl_multi_socket_action(L.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        read_done();
        now = mono_ms();
        check_stops(now);
        if (now - L.last_tick >= TICK_MS) {
            L.last_tick = now;
            for (int i = 0; i < L.nrun; i++)
                if (!L.run[i]->ending && llm_stream_poll(L.run[i]->st, now))
                    mark_ending(L.run[i]);
            int every = L.ctx.cfg->lease_ms / 6 > 0 ? L.ctx.cfg->lease_ms / 6 : 1;
            if (now - L.last_renew >= every) {
                L.last_renew = now;
                renew_all(now);
            }
            if (now - L.last_sweep >= (L.ctx.cfg->lease_ms > 0 ? L.ctx.cfg->lease_ms : 1)) {
                L.last_sweep = now;
                /* a database error (its transaction is rolled back):
                 * tried again at the next sweep */
                (void)jobs_recover(L.ctx.db, L.ctx.bell, now_ms());
            }
        }
        collect_ended();
        if (L.ndirty > 0 && (L.flush_now || now - L.dirty_since >= L.ctx.cfg->coalesce_ms))
            flush_dirty();
        finish_ending();
        if (inbox)
            take_inbox();
        start_waiting(now);

        pthread_mutex_lock(&G.mu);
        int stop = G.stop;
        int64_t stop_at = G.stop_at;
        int inbox_empty = G.in_head == NULL;
        pthread_mutex_unlock(&G.mu);
        if (stop && ((L.nrun == 0 && L.nwait == 0 && inbox_empty) || mono_ms() >= stop_at)) {
            flush_dirty();
            failed = fail_rest();
            break;
        }
    }
    pthread_mutex_lock(&G.mu);
    G.failed_at_stop = failed;
    G.stopped = 1;
    pthread_cond_broadcast(&G.cv);
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

/* Raises the soft open-files limit to the hard one: every stream holds a
 * socket, and a bridge also holds its clients'. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Starts the loop (G.mu held). 0 / -1 (err set). */
static int loop_start(const struct parley_config *cfg, parley_bell *bell, char *err, size_t errlen)
{
    memset(&L, 0, sizeof L);
    L.ep = -1;
    L.timer_at = -1;
    L.ctx.cfg = cfg;
    L.ctx.bell = bell;
    L.max = cfg->max_generations > 0 ? cfg->max_generations : 1024;
    L.ctx.db = db_open(cfg->db_path, err, errlen);
    if (!L.ctx.db)
        return -1;
    raise_nofile();
    G.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    L.multi = curl_multi_init();
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = G.efd;
    if (G.efd < 0 || L.ep < 0 || !L.multi || epoll_ctl(L.ep, EPOLL_CTL_ADD, G.efd, &ev) < 0) {
        snprintf(err, errlen, "cannot set up the generation loop: %s", strerror(errno));
        goto fail;
    }
    curl_multi_setopt(L.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(L.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    L.last_tick = L.last_renew = L.last_sweep = mono_ms();
    G.cfg = cfg;
    G.bell = bell;
    G.stop = 0;
    G.stopped = 0;
    G.failed_at_stop = 0;
    if (pthread_create(&G.th, NULL, loop_main, NULL) != 0) {
        snprintf(err, errlen, "cannot start the generation loop thread");
        goto fail;
    }
    G.started = 1;
    return 0;
fail:
    if (L.multi)
        curl_multi_cleanup(L.multi);
    if (L.ep >= 0)
        close(L.ep);
    if (G.efd >= 0)
        close(G.efd);
    G.efd = -1;
    db_close(L.ctx.db);
    memset(&L, 0, sizeof L);
    return -1;
}

/* After the thread ended: frees what the loop owned (G.mu not held). */
static void loop_cleanup(void)
{
    curl_multi_cleanup(L.multi);
    close(L.ep);
    db_close(L.ctx.db);
    free(L.run);
    free(L.dirty);
    free(L.ending);
    free(L.batch);
    memset(&L, 0, sizeof L);
}

int proto_job_submit(struct parley_ctx *ctx, struct proto_job *job)
{
    if (!job)
        return -1;
    struct entry *e = calloc(1, sizeof *e);
    char err[512] = "out of memory";
    pthread_mutex_lock(&G.mu);
    int ok = e && !G.stop;
    if (ok && !G.started && loop_start(ctx->cfg, ctx->bell, err, sizeof err) < 0) {
        fprintf(stderr, "parley: %s\n", err);
        ok = 0;
    }
    if (ok) {
        e->job = job;
        if (G.in_tail)
            G.in_tail->next = e;
        else
            G.in_head = e;
        G.in_tail = e;
        G.queued++;
        uint64_t one = 1;
        if (write(G.efd, &one, sizeof one) < 0) {
            /* the counter is full only if the loop is gone; it reads it each wake */
        }
    }
    pthread_mutex_unlock(&G.mu);
    if (ok)
        return 0;
    free(e);
    const char *msg = G.stop ? SHUTDOWN_MSG : "the generation could not be started";
    if (!ctx->db)
        fprintf(stderr, "parley: a generation on %s could not be queued: its lease expires "
                "and viewers recover it\n", job->channel);
    else if (runner_fail(ctx, &job->req, &job->claim, "internal", msg) < 0)
        fprintf(stderr, "parley: could not record the failure of a generation on %s\n",
                job->channel);
    proto_job_free(job);
    return -1;
}

int proto_jobs_drain(int timeout_ms)
{
    pthread_mutex_lock(&G.mu);
    if (!G.started) {
        pthread_mutex_unlock(&G.mu);
        return 0;
    }
    G.stop = 1;
    G.stop_at = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    uint64_t one = 1;
    if (write(G.efd, &one, sizeof one) < 0) {
        /* the loop also wakes on its tick */
    }
    while (!G.stopped)
        pthread_cond_wait(&G.cv, &G.mu);
    pthread_t th = G.th;
    int failed = G.failed_at_stop;
    pthread_mutex_unlock(&G.mu);
    pthread_join(th, NULL);
    loop_cleanup();
    pthread_mutex_lock(&G.mu);
    close(G.efd);
    G.efd = -1;
    G.started = 0;
    G.stop = 0;
    G.stopped = 0;
    G.queued = G.running = 0;
    pthread_mutex_unlock(&G.mu);
    return failed;
}

void genloop_stats(struct genloop_stats *out)
{
    pthread_mutex_lock(&G.mu);
    out->queued = G.queued;
    out->running = G.running;
    out->done = G.ended;
    out->threads = G.started && !G.stopped ? 1 : 0;
    pthread_mutex_unlock(&G.mu);
}
