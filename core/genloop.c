/* genloop.c — proto_job_submit / proto_jobs_drain (proto.h, genloop.h).
 * Interim implementation: one detached thread with its own db per job. */
#include "genloop.h"
#include "proto_impl.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int running;
static long long ended;

struct one {
    const struct parley_config *cfg;
    parley_bell *bell;
    struct proto_job *job;
};

static void *one_main(void *arg)
{
    struct one *o = arg;
    char err[512];
    struct parley_ctx ctx = { o->cfg, db_open(o->cfg->db_path, err, sizeof err), o->bell };
    if (!ctx.db)
        fprintf(stderr, "parley: generation: %s\n", err);
    else
        proto_job_run(&ctx, o->job);
    db_close(ctx.db);
    proto_job_free(o->job);
    free(o);
    pthread_mutex_lock(&mu);
    running--;
    ended++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int proto_job_submit(struct parley_ctx *ctx, struct proto_job *job)
{
    struct one *o = calloc(1, sizeof *o);
    pthread_t th;
    pthread_attr_t at;
    if (o) {
        o->cfg = ctx->cfg;
        o->bell = ctx->bell;
        o->job = job;
        pthread_mutex_lock(&mu);
        running++;
        pthread_mutex_unlock(&mu);
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, one_main, o);
        pthread_attr_destroy(&at);
        if (rc == 0)
            return 0;
        pthread_mutex_lock(&mu);
        running--;
        pthread_mutex_unlock(&mu);
        free(o);
    }
    runner_fail(ctx, &job->req, &job->claim, "internal", "the generation could not be started");
    proto_job_free(job);
    return -1;
}

int proto_jobs_drain(int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mu);
    while (running > 0)
        if (pthread_cond_timedwait(&cv, &mu, &dl) == ETIMEDOUT)
            break;
    int left = running;
    pthread_mutex_unlock(&mu);
    return left;
}

void genloop_stats(struct genloop_stats *out)
{
    pthread_mutex_lock(&mu);
    out->queued = 0;
    out->running = running;
    out->done = ended;
    out->threads = running;
    pthread_mutex_unlock(&mu);
}
