/* runner.h — the generation runner both fronts call.
 *
 * runner_claim() joins or starts the single-flight job for a request;
 * the owner then calls runner_execute(), which streams from the upstream
 * into the channel's event log (start, token..., done | error) while
 * renewing its lease, and on success stores the answer in the cache and the
 * assistant message in the SAME transaction as the "done" event. On any
 * failure it appends one "error" event and caches nothing. Viewers (the
 * owner's own client included) follow the log with runner_follow().
 * Threads: runner_execute blocks the calling thread for the whole answer;
 * the ctx's db is used by that thread only.
 */
#ifndef PARLEY_RUNNER_H
#define PARLEY_RUNNER_H
#include <stdint.h>
#include "config.h"
#include "db.h"
#include "bell.h"
#include "evlog.h"
#include "jobs.h"
#include "llm.h"
#include "store.h"

struct parley_ctx {
    const struct parley_config *cfg;   /* borrowed, read-only */
    parley_db *db;                     /* this thread's connection */
    parley_bell *bell;                 /* may be shared */
};

struct gen_request {
    const char *channel;               /* "ticket:123", "conv:<id>" */
    const char *prompt_key;            /* single-flight key within the channel */
    struct llm_request llm;
    const struct answer *cache;        /* cache row to write on success; NULL: none */
    const char *conversation_id;       /* store the assistant message here; NULL: none */
    const char *message_id;            /* its id (NULL: generated) */
    int one_sentence;                  /* stop after the first sentence (seed 002 voice) */
};

struct gen_outcome {
    int ok;                            /* 1 done, 0 failed */
    int64_t job_id;
    char *text;                        /* the full answer on success (new) */
    int tokens;
    int64_t first_token_ms, processing_ms;
    char model[128];
    char message_id[64];
    enum llm_err kind;
    char error[512];
};
void gen_outcome_free(struct gen_outcome *o);

/* Claims the request's job. 0 / -1 (err set). See jobs_claim. */
int runner_claim(struct parley_ctx *ctx, const struct gen_request *req,
                 struct job_claim *claim, char *err, size_t errlen);
/* Runs a job claimed as owner (by this thread or another: the lease is
 * handed to this thread first, jobs_adopt) to its end. Returns 0 when the outcome was
 * recorded (done or failed, see out->ok), -1 when even the failure could not
 * be recorded (database gone; the lease then expires and others recover). */
int runner_execute(struct parley_ctx *ctx, const struct gen_request *req,
                   struct job_claim *claim, struct gen_outcome *out);
/* Fails a job claimed as owner without running it (the process is
 * stopping, or the job could not be queued): takes the lease over like
 * runner_execute, appends one "error" event {job_id, message, kind} and
 * marks the job failed in one transaction, then rings. Nothing is cached.
 * 0, or -1 when the job was no longer ours (someone else failed it) or the
 * database refused (its lease then expires and viewers recover it). */
int runner_fail(struct parley_ctx *ctx, const struct gen_request *req,
                struct job_claim *claim, const char *kind, const char *msg);
/* Claim + execute when owner. *owner says which happened. */
int runner_run(struct parley_ctx *ctx, const struct gen_request *req,
               struct job_claim *claim, int *owner, struct gen_outcome *out);

/* Follows job claim->job_id on the channel from *cursor: calls on_event for
 * each of its events (and only its own), sleeping on the doorbell between.
 * Ends after the job's "done" or "error" event (returns 0), when on_event
 * returns non-zero (returns 1), on timeout_ms without any event (returns 2;
 * < 0: none), when *stop is set (3), or on error (-1). While waiting it
 * recovers the job if its owner's lease expired, so a viewer of a job
 * whose worker died gets the "error" event instead of waiting forever.
 * *cursor is advanced past every event delivered. */
int runner_follow(struct parley_ctx *ctx, const char *channel, int64_t job_id,
                  int64_t *cursor, int timeout_ms, const volatile int *stop,
                  int (*on_event)(void *ud, const struct evlog_event *ev), void *ud);
#endif
