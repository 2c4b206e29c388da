/* runner.h — the generation runner both fronts call.
 *
 * runner_claim() joins or starts the single-flight job for a request;
 * the owner then calls runner_execute(), which streams from the upstream
 * into the channel's event log (start, token..., done | error) while
 * renewing its lease, and on success stores the answer in the cache and the
 * assistant message in the SAME transaction as the "done" event. On any
 * failure it appends one "error" event and caches nothing. Viewers (the
 * owner's own client included) follow the log with runner_follow().
 * Threads: runner_execute blocks the calling thread for the whole answer
 * (the fronts use proto_job_submit instead: core/genloop.c runs every
 * generation of the process on one thread); the ctx's db is used by that
 * thread only.
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
    const char *user;                  /* who asks (JWT sub, "" open mode; NULL: nobody):
                                          recorded as the job's starter, who may stop it */
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
    int stopped;                       /* 1: ended by a stop request (ok is 1, text partial) */
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
/* ---- the same, one step at a time (an event loop runs many at once) ----
 * runner_execute() is runner_gen_begin + llm_stream() (blocking) +
 * runner_gen_finish. core/genloop.c instead drives runner_gen_stream()'s
 * llm_stream on its curl multi with RUNNER_BATCH: tokens then wait in the
 * gen until the loop writes every gen's tokens in one transaction
 * (runner_gen_flush_tx), and the loop renews leases (runner_gen_renew_tx).
 * A runner_gen is used by one thread at a time, with ctx->db of that
 * thread; ctx, req and claim are borrowed until runner_gen_finish. */
struct runner_gen;
#define RUNNER_BATCH 1
#define RUNNER_IN_TX 2   /* begin: inside the caller's open transaction */
/* Takes the lease over (jobs_adopt when another thread claimed it), picks
 * the message id and appends "start": in its own transaction and rings, or
 * with RUNNER_IN_TX inside the caller's open transaction (the caller rings
 * the channel after its commit; if it rolls back instead, it must restore
 * claim->lease_owner, which the adoption changed, and runner_gen_discard
 * the gen). 0 with *gen
 * set (new); 1 when the job is no longer ours (a viewer failed it: out says
 * so, nothing to do); -1 on a database error (out says so; the lease
 * expires and viewers recover). out is fully written on 1 / -1. */
int runner_gen_begin(struct parley_ctx *ctx, const struct gen_request *req,
                     struct job_claim *claim, int flags, struct gen_outcome *out,
                     struct runner_gen **gen);
/* runner_gen_begin in two parts, for a caller that sends the upstream
 * request before it writes anything (core/genloop.c: the upstream needs
 * tens of ms for its first token; the start is written meanwhile, before
 * any token is read). runner_gen_new: the gen, with its message id, its
 * config and callbacks; no database. 0 with *gen set (new), -1 out of
 * memory. claim is read only. */
int runner_gen_new(struct parley_ctx *ctx, const struct gen_request *req,
                   const struct job_claim *claim, int flags, struct runner_gen **gen);
/* runner_gen_begin's database part for a gen of runner_gen_new: the lease
 * adoption and the "start" event (flags: RUNNER_IN_TX as there). 0; 1 no
 * longer ours; -1 database error (out written on 1 / -1; on 0 out is
 * zeroed with its job id). The gen stays the caller's in every case
 * (runner_gen_discard it when not 0, after stopping its stream). */
int runner_gen_record_start(struct runner_gen *g, struct job_claim *claim, int flags,
                            struct gen_outcome *out);
/* Frees a gen that never streamed, without touching the database (its
 * begin transaction was rolled back). */
void runner_gen_discard(struct runner_gen *g);
/* The upstream stream for this gen (llm_stream_begin with the gen's config
 * and callbacks; new, NULL out of memory). The caller drives it, then calls
 * llm_stream_finish and passes its result to runner_gen_finish. */
struct llm_stream *runner_gen_stream(struct runner_gen *g);
/* The gen's channel (borrowed from its request). */
const char *runner_gen_channel(const struct runner_gen *g);
/* RUNNER_BATCH: appends the tokens received since the last flush as one
 * "token" event inside the caller's open transaction (the caller rings the
 * channel after its commit). 1 appended, 0 nothing to append, -1 error
 * (then runner_gen_db_failed and stop the stream). */
int runner_gen_flush_tx(struct runner_gen *g);
/* RUNNER_BATCH: bytes of tokens waiting for runner_gen_flush_tx (0: none).
 * The loop's thread. */
size_t runner_gen_pending(const struct runner_gen *g);
/* Renews the lease when a third of it has passed (may run inside the
 * caller's transaction). 0, or -1 when the lease was lost (stop the
 * stream: the job was failed by someone else) or on error. */
int runner_gen_renew_tx(struct runner_gen *g);
/* The gen's job id. */
int64_t runner_gen_job(const struct runner_gen *g);
/* Marks the gen as stopped by a stop request (docs/stop.md): the caller
 * then aborts its stream (llm_stream_abort) and finishes it; then
 * runner_gen_finish records a stopped end instead of a failure: the tokens
 * so far, one "done" event with "stopped": true, the job done and stopped,
 * the partial text as the conversation's assistant message with metadata
 * {"stopped": true} (when the request has a conversation), and never the
 * answer cache. The gen's thread only. */
void runner_gen_stop(struct runner_gen *g);
/* Records that tokens of this gen could not be written (a batch
 * transaction failed): it ends as failed ("internal"), nothing cached. */
void runner_gen_db_failed(struct runner_gen *g);
/* Ends the job after its stream ended (llm_rc: llm_stream_finish's result):
 * success stores answer + message with "done" in one transaction; any
 * failure appends one "error" event; a gen stopped by runner_gen_stop ends
 * stopped (see there; out->ok = out->stopped = 1, out->text the partial
 * text). Rings the channel. Frees g. Returns like runner_execute; out is
 * fully written (out->text new on success or stop). */
int runner_gen_finish(struct runner_gen *g, int llm_rc, struct gen_outcome *out);

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
