/* gen.c — the bridge's generations: at most --gen-threads run at once
 * (proto_job_run blocks a thread for the whole answer), the rest wait in a
 * FIFO. A waiting job is already claimed, so its lease is kept alive
 * (proto_job_hold, by a worker every lease/4) or viewers would fail it as
 * interrupted. Each generation thread opens its own parley_db on first use.
 * Threads: gen_submit from workers; gen_hold_waiting from a worker; the
 * generation threads themselves; gen_stop from the main thread at exit.
 */
#include "bridge.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gen_item {
    struct gen_item *next;
    struct proto_job *job;
    int64_t held_ms;            /* when its lease was last extended */
};

struct gen_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* work or stop */
    pthread_cond_t idle_cv;     /* a job ended */
    struct gen_item *head, *tail;
    int waiting, running;
    int stop;                   /* 1: take no more jobs */
    pthread_t *th;
    int nth;
    struct bridge *br;
};

static void *gen_main(void *arg)
{
    struct gen_pool *g = arg;
    struct bridge *br = g->br;
    struct parley_ctx ctx = { &br->cfg, NULL, br->bell };
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->head && !g->stop)
            pthread_cond_wait(&g->cv, &g->mu);
        if (!g->head)
            break;
        struct gen_item *it = g->head;
        g->head = it->next;
        if (!g->head)
            g->tail = NULL;
        g->waiting--;
        g->running++;
        pthread_mutex_unlock(&g->mu);
        metrics_gen_queue(-1, +1);

        char err[512];
        if (!ctx.db && !(ctx.db = db_open(br->cfg.db_path, err, sizeof err)))
            wslog("generation thread: %s", err);
        if (ctx.db) {
            /* take the lease over and extend it: the job may have waited */
            if (proto_job_hold(&ctx, it->job) < 0)
                wslog("generation on %s was failed while it waited", proto_job_channel(it->job));
            else if (proto_job_run(&ctx, it->job) < 0)
                metrics_error("generation_db");
        }
        proto_job_free(it->job);
        free(it);

        metrics_gen_queue(0, -1);
        pthread_mutex_lock(&g->mu);
        g->running--;
        pthread_cond_broadcast(&g->idle_cv);
    }
    pthread_mutex_unlock(&g->mu);
    db_close(ctx.db);
    return NULL;
}

int gen_start(struct bridge *br)
{
    struct gen_pool *g = calloc(1, sizeof *g);
    if (!g)
        return -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    pthread_cond_init(&g->idle_cv, NULL);
    g->br = br;
    g->th = calloc((size_t)br->opt.gen_threads, sizeof *g->th);
    br->gen = g;
    if (!g->th)
        return -1;
    for (int i = 0; i < br->opt.gen_threads; i++) {
        if (pthread_create(&g->th[i], NULL, gen_main, g) != 0)
            return -1;
        g->nth++;
    }
    return 0;
}

void gen_submit(struct bridge *br, struct proto_job *job)
{
    struct gen_pool *g = br->gen;
    struct gen_item *it = calloc(1, sizeof *it);
    if (!it) {
        metrics_error("out_of_memory");
        proto_job_free(job);     /* its lease expires; viewers get "interrupted" */
        return;
    }
    it->job = job;
    it->held_ms = mono_ms();
    pthread_mutex_lock(&g->mu);
    if (g->tail)
        g->tail->next = it;
    else
        g->head = it;
    g->tail = it;
    g->waiting++;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    metrics_gen_queue(+1, 0);
}

int gen_waiting(struct bridge *br)
{
    struct gen_pool *g = br->gen;
    pthread_mutex_lock(&g->mu);
    int n = g->waiting;
    pthread_mutex_unlock(&g->mu);
    return n;
}

void gen_hold_waiting(struct bridge *br, struct parley_ctx *ctx)
{
    struct gen_pool *g = br->gen;
    int64_t now = mono_ms(), every = br->cfg.lease_ms / 4;
    pthread_mutex_lock(&g->mu);
    struct gen_item **pp = &g->head, *prev = NULL;
    while (*pp) {
        struct gen_item *it = *pp;
        if (now - it->held_ms < every) {
            prev = it;
            pp = &it->next;
            continue;
        }
        if (proto_job_hold(ctx, it->job) == 0) {
            it->held_ms = now;
            prev = it;
            pp = &it->next;
            continue;
        }
        /* failed while waiting (lease lost): its viewers got the error */
        wslog("waiting generation on %s was failed by a lease check", proto_job_channel(it->job));
        *pp = it->next;
        if (g->tail == it)
            g->tail = prev;
        g->waiting--;
        metrics_gen_queue(-1, 0);
        proto_job_free(it->job);
        free(it);
    }
    pthread_mutex_unlock(&g->mu);
}

int gen_stop(struct bridge *br, int drain_s)
{
    struct gen_pool *g = br->gen;
    if (!g)
        return 0;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += drain_s;
    pthread_mutex_lock(&g->mu);
    int timed_out = 0;
    while ((g->head || g->running) && !timed_out)
        timed_out = pthread_cond_timedwait(&g->idle_cv, &g->mu, &dl) == ETIMEDOUT;
    g->stop = 1;
    /* jobs still waiting are dropped: their leases expire and viewers are
     * told "generation interrupted" (DESIGN §2.3) */
    while (g->head) {
        struct gen_item *it = g->head;
        g->head = it->next;
        proto_job_free(it->job);
        free(it);
    }
    g->tail = NULL;
    int still = g->running;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (still) {
        wslog("%d generation(s) still running after %d s; leaving them to lease recovery",
              still, drain_s);
        return -1;
    }
    for (int i = 0; i < g->nth; i++)
        pthread_join(g->th[i], NULL);
    free(g->th);
    pthread_cond_destroy(&g->cv);
    pthread_cond_destroy(&g->idle_cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
    br->gen = NULL;
    return 0;
}
