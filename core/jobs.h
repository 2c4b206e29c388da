/* jobs.h — generations with single flight and leases (table jobs).
 *
 * A job generates one answer on one channel for one prompt key. At most one
 * job per (channel, prompt_key) is 'running' at a time: the partial unique
 * index jobs_single_flight makes this hold across every process. The owner
 * holds a lease (lease_owner = owner_id(), lease_expires) and renews it while
 * it streams; a running job whose lease expired belongs to a dead or stuck
 * worker and is failed (an "error" event tells its viewers), never left
 * hanging. Threads: uses the caller's parley_db.
 */
#ifndef PARLEY_JOBS_H
#define PARLEY_JOBS_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"
#include "bell.h"

struct job_claim {
    int64_t job_id;
    int owner;            /* 1: the caller must run it; 0: attached to a running one */
    int64_t first_seq;    /* channel seq before the job's first event: follow from here */
    char lease_owner[64]; /* owner_id() of the thread holding the lease (owner only) */
};

struct job_info {
    int64_t id;
    char state[16];       /* running | done | failed */
    int64_t lease_expires;
    int64_t first_seq;
    char error[512];
};

#define JOB_INTERRUPTED_MSG "generation interrupted: the worker running it stopped"

/* Claims (channel, prompt_key) in one IMMEDIATE transaction: attaches to a
 * live running job, or fails an expired one (error event) and creates a new
 * job owned by this thread with a lease of lease_ms. 0 / -1 (err set). */
int jobs_claim(parley_db *db, parley_bell *bell, const char *channel,
               const char *prompt_key, int lease_ms, struct job_claim *out,
               char *err, size_t errlen);
/* Hands the lease of claim's job to the calling thread (owner_id() is per
 * thread, and renew/finish check it) and extends it by lease_ms; updates
 * claim->lease_owner. Needed when the claiming thread is not the one that
 * runs or holds the job (a worker pool, a helper thread). 0, or -1 when the
 * job is no longer running under claim's owner (its lease expired and a
 * viewer failed it) or on error. */
int jobs_adopt(parley_db *db, struct job_claim *claim, int lease_ms);
/* Extends the lease of a job this thread owns. 0, or -1 when the lease was
 * lost (the job was failed by someone else) or on error. */
int jobs_renew(parley_db *db, int64_t job_id, int lease_ms);
/* Inside the caller's transaction: marks this thread's running job done
 * (error NULL) or failed (error set). 0, or -1 if it no longer owns it. */
int jobs_finish_tx(parley_db *db, int64_t job_id, const char *error);
/* Fails every running job whose lease expired before now, appending an
 * error event to each one's channel and ringing. Returns how many, or -1. */
int jobs_recover(parley_db *db, parley_bell *bell, int64_t now);
/* The one recovery a follower runs while it waits: when job_id (> 0) is
 * still running and its lease expired before now, fails every running job
 * whose lease expired (jobs_recover: error event, ring), so viewers of a job
 * whose worker died get its "error" event instead of waiting forever.
 * Returns how many jobs were failed (0 when job_id is live, over, unknown
 * or 0), or -1 on a database error. */
int jobs_recover_if_expired(parley_db *db, parley_bell *bell, int64_t job_id, int64_t now);
/* The running job of a channel, if any (the newest). 0 found (job_id and
 * first_seq set), 1 none, -1 error. */
int jobs_running_on(parley_db *db, const char *channel, int64_t *job_id, int64_t *first_seq);
/* Reads a job. 0 found, 1 no such job, -1 error. */
int jobs_get(parley_db *db, int64_t job_id, struct job_info *out);
#endif
