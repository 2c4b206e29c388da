/* genloop.h — this process's generation loop (proto_job_submit).
 *
 * See proto.h for the public calls (proto_job_submit, proto_jobs_drain).
 * This header only exposes what tests need to observe the loop.
 */
#ifndef PARLEY_GENLOOP_H
#define PARLEY_GENLOOP_H

struct genloop_stats {
    int queued;        /* submitted, waiting for a stream slot */
    int running;       /* streaming now */
    long long done;    /* ended (done or failed) since the loop started */
    int threads;       /* loop threads alive (0 or 1) */
};
/* Snapshot of the loop's counters. Any thread. */
void genloop_stats(struct genloop_stats *out);
#endif
