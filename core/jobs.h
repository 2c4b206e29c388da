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

struct evlog_event;

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
    char started_by[128];     /* "" when not recorded */
    int stop_requested;       /* 1 once a stop was asked */
    int stopped;              /* 1 when it ended stopped */
};

#define JOB_INTERRUPTED_MSG "generation interrupted: the worker running it stopped"

/* Claims (channel, prompt_key) in one IMMEDIATE transaction: attaches to a
 * live running job, or fails an expired one (error event) and creates a new
 * job owned by this thread with a lease of lease_ms. 0 / -1 (err set).
 * Same as jobs_claim_as with user NULL (nobody can stop the job but an
 * admin). */
int jobs_claim(parley_db *db, parley_bell *bell, const char *channel,
               const char *prompt_key, int lease_ms, struct job_claim *out,
               char *err, size_t errlen);
/* jobs_claim recording who starts the job: user (borrowed; the JWT sub,
 * "" in open mode, NULL: nobody) goes into the new job's started_by, the
 * one user (besides an admin) jobs_request_stop lets stop it. Attaching to
 * a running job records nothing. 0 / -1 (err set). Caller's thread/db. */
int jobs_claim_as(parley_db *db, parley_bell *bell, const char *channel,
                  const char *prompt_key, const char *user, int lease_ms,
                  struct job_claim *out, char *err, size_t errlen);
/* ---- seed 001's queue: one answer at a time per conversation ---- */
enum jobs_turn_rc {
    JOBS_TURN_OK = 0,      /* claimed: out->owner = 1, the message is no longer queued */
    JOBS_TURN_BUSY = 1,    /* a live job runs on channel: out has it (owner 0) */
    JOBS_TURN_MOVED = 2,   /* msg_id is not the oldest queued message (any more) */
    JOBS_TURN_EMPTY = 3,   /* nothing is queued (or no such conversation) */
    JOBS_TURN_ERR = -1     /* database error (err set; db_err_kind tells which) */
};
/* Claims the next turn of conversation conv_id, whose answers go on channel
 * ("conv:<id>"), in ONE transaction (PostgreSQL: holding the conversation
 * row's lock, so two claimers of one conversation run one after the other):
 * when channel has a running job with a live lease, attaches to it
 * (JOBS_TURN_BUSY; one whose lease expired is failed first, as jobs_claim
 * does); else when msg_id is the oldest queued message of the conversation
 * (created_at, rowid), clears its queued flag, moves its created_at after
 * every unqueued message (so the history reads question, answer, question),
 * and creates a job (prompt_key = msg_id, started_by = user) owned by this
 * thread with a lease of lease_ms (JOBS_TURN_OK); else JOBS_TURN_MOVED or
 * JOBS_TURN_EMPTY and nothing changes. Returns an enum jobs_turn_rc.
 * Caller's thread and db; not inside a transaction. */
int jobs_claim_turn(parley_db *db, parley_bell *bell, const char *channel, const char *conv_id,
                    const char *msg_id, const char *user, int lease_ms, struct job_claim *out,
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
 * or 0), JOBS_EXPIRED_UNRECORDED (below) when job_id's lease expired but
 * its failure could not be written, or -1 on another database error. */
int jobs_recover_if_expired(parley_db *db, parley_bell *bell, int64_t job_id, int64_t now);
/* jobs_recover_if_expired's answer when job_id is still running, its lease
 * expired before now, and its failure could not be written (the database
 * cannot be written now: a full disk, a read-only file, a lock held for
 * longer than the busy wait, PostgreSQL refusing writes). Nothing changed;
 * the caller hands its viewers jobs_expired_event() so that they get the
 * "interrupted" error now instead of waiting for as long as the database
 * cannot be written (a later recovery writes the same event for good).
 * The owner may have been alive all along, unable to renew the lease too:
 * once the database can be written it may renew it and end the job done
 * (its answer cached); viewers that were told "interrupted" get that
 * answer by asking again. A later check of a renewed job answers 0. */
#define JOBS_EXPIRED_UNRECORDED (-2)
/* The error event recovery appends for job_id (type "error", kind
 * "interrupted", JOB_INTERRUPTED_MSG), made in memory: from_memory set, seq
 * the follower's cursor (the last seq it saw; it is not in the log). A
 * follower hands it on without moving its cursor, so nothing logged later
 * is skipped: the real error event recovery writes once the database can
 * be written again, or events of a job that starts or is adopted meanwhile
 * (proto_event keeps a connection from taking the same job's later events
 * as a new answer: proto_conn.ended_job). A new one-element array, free
 * with evlog_free(ev, 1); NULL when out of memory. Any thread. */
struct evlog_event *jobs_expired_event(int64_t job_id, int64_t cursor);
/* The running job of a channel, if any (the newest). 0 found (job_id and
 * first_seq set), 1 none, -1 error. */
int jobs_running_on(parley_db *db, const char *channel, int64_t *job_id, int64_t *first_seq);
/* ---- stopping a generation (docs/stop.md) ---- */
enum jobs_stop_rc {
    JOBS_STOP_OK = 0,        /* recorded (or already recorded): the owner aborts it */
    JOBS_STOP_NONE = 1,      /* no such job (or no job ever ran on the channel) */
    JOBS_STOP_OVER = 2,      /* the job has already ended */
    JOBS_STOP_FOREIGN = 3,   /* started by someone else, and the caller is no admin */
    JOBS_STOP_ERR = -1       /* database error (db_err_kind tells which) */
};
/* Asks job job_id (> 0), or the newest job of channel (job_id 0: its newest
 * running job, else its newest job, so a finished one answers OVER), to
 * stop: ONE statement sets stop_requested_at/by when the job is running and
 * was started by user (or admin is set); a repeated stop keeps the first
 * request. Then rings channel across processes and nodes (evlog_ring), which
 * is how the job's owner learns of it. channel NULL only with job_id > 0.
 * *job (may be NULL) gets the job addressed (0 when none). Returns an enum
 * jobs_stop_rc. Caller's thread and db; not inside a transaction. */
int jobs_request_stop(parley_db *db, parley_bell *bell, const char *channel, int64_t job_id,
                      const char *user, int admin, int64_t *job);
/* The running jobs whose lease lease_owner holds and that were asked to
 * stop: up to max ids into ids. Returns how many, or -1 on error. One
 * indexed statement (jobs_stop_pending): the generation loop runs it once
 * per check, for all its jobs. Caller's thread and db. */
int jobs_stop_pending(parley_db *db, const char *lease_owner, int64_t *ids, int max);
/* Inside the caller's transaction: marks this thread's running job done
 * because it was stopped (state 'done', stopped_at now). 0, or -1 if it no
 * longer owns it. */
int jobs_finish_stopped_tx(parley_db *db, int64_t job_id);
/* Reads a job. 0 found, 1 no such job, -1 error. */
int jobs_get(parley_db *db, int64_t job_id, struct job_info *out);
#endif
