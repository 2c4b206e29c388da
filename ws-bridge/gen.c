/* gen.c — the bridge's generations: handed to the process's generation
 * loop (proto_job_submit, core/genloop.c), which streams all of them on ONE
 * thread with libcurl's multi interface. At most --gen-threads stream at
 * once (default: PARLEY_MAX_GENERATIONS, 1024; the option's name is older
 * than the loop: no thread runs a generation); beyond that, jobs wait in the
 * loop's FIFO and the loop keeps their leases. The metrics gauges
 * (generations waiting / running) follow the loop's counters.
 * Threads: gen_submit from workers; gen_waiting from the watcher;
 * gen_hold_waiting from a worker; gen_start / gen_stop from the main thread.
 */
#include "bridge.h"
#include "genloop.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* What the gauges were last told (deltas go to metrics_gen_queue). */
static pthread_mutex_t sync_mu = PTHREAD_MUTEX_INITIALIZER;
static int told_waiting, told_running;

static void sync_metrics(void)
{
    struct genloop_stats st;
    genloop_stats(&st);
    pthread_mutex_lock(&sync_mu);
    int dw = st.queued - told_waiting, dr = st.running - told_running;
    told_waiting = st.queued;
    told_running = st.running;
    pthread_mutex_unlock(&sync_mu);
    if (dw || dr)
        metrics_gen_queue(dw, dr);
}

int gen_start(struct bridge *br)
{
    /* read by the loop when it starts, at the first submit */
    if (br->opt.gen_threads > 0)
        br->cfg.max_generations = br->opt.gen_threads;
    return 0;
}

void gen_submit(struct bridge *br, struct proto_job *job)
{
    /* no db: a job that cannot be queued is then left to lease recovery */
    struct parley_ctx ctx = { &br->cfg, NULL, br->bell };
    if (proto_job_submit(&ctx, job) < 0)
        metrics_error("generation_queue");
    sync_metrics();
}

int gen_waiting(struct bridge *br)
{
    sync_metrics();
    struct genloop_stats st;
    genloop_stats(&st);
    /* the watcher asks every lease/4: while anything runs, keep asking so
     * the gauges follow (the loop itself holds the waiting jobs' leases) */
    return st.queued + st.running;
}

void gen_hold_waiting(struct bridge *br, struct parley_ctx *ctx)
{
    sync_metrics();
}

int gen_stop(struct bridge *br, int drain_s)
{
    int failed = proto_jobs_drain(drain_s * 1000);
    if (failed > 0)
        wslog("%d generation(s) still running after %d s were failed (the bridge is stopping)",
              failed, drain_s);
    sync_metrics();
    return 0;
}
