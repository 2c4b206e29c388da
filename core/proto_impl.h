/* proto_impl.h — what proto.c shares with the per-protocol adapters
 * (proto_ticket.c, proto_chat.c, proto_brand.c). Not for the transports. */
#ifndef PARLEY_PROTO_IMPL_H
#define PARLEY_PROTO_IMPL_H
#include "proto.h"

struct proto_ops {
    const char *name;
    /* Opening frames; the query's seq/after are already applied to c; cl
     * (may be NULL) is what the transport knows of the client. */
    int (*open)(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                struct proto_frames *out);
    /* msg: the parsed frame, or NULL when the text was not valid JSON
     * (then the adapter answers its protocol's error). */
    int (*message)(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                   struct proto_frames *out, struct proto_job **job);
    /* One event of the followed job (already filtered by job id). */
    int (*event)(struct parley_ctx *ctx, struct proto_conn *c,
                 const struct evlog_event *ev, struct proto_frames *out);
};
extern const struct proto_ops proto_ticket_ops, proto_chat_ops, proto_brand_ops, proto_send_ops,
    proto_phoenix_ops;
extern const struct proto_ops proto_aisdk_ops;
extern const struct proto_ops proto_openai_ops;   /* proto_openai.c */

/* Records the error an adapter answers on c (c->err, c->err_msg; the
 * message is cut to fit). Returns 0, so `return proto_fail(...)` or
 * `proto_fail(...) || error_frame(...)` read naturally. */
int proto_fail(struct proto_conn *c, enum perr kind, const char *msg);

/* The AI SDK (proto_aisdk.c): the longest UI message id, in bytes, kept in
 * the stored user message's metadata (ui_message_id); a longer one is
 * refused (400) like any other oversized client metadata. */
#define PROTO_AISDK_UI_ID_MAX 256

/* A job owns every string its gen_request points to. */
#define PROTO_JOB_MAX_MSGS 64
struct proto_job {
    struct gen_request req;
    struct job_claim claim;
    struct answer ans;                 /* cache row (req.cache points here when used) */
    char hash[65];
    char channel[200];
    char message_id[64];
    struct llm_message msgs[PROTO_JOB_MAX_MSGS];
    char *owned[2 * PROTO_JOB_MAX_MSGS + 8];
    int nowned;
    /* Called by the generation loop right after the job ended (its end
     * transaction committed), in the loop's thread with the loop's ctx,
     * unless the process is shutting down (seed 001: answer the next
     * queued message). NULL: nothing. */
    void (*on_end)(struct parley_ctx *ctx, const struct proto_job *job);
};

/* New empty job (NULL on OOM). */
struct proto_job *proto_job_new(void);
/* Copies s into memory the job owns; returns the copy (NULL on OOM). */
char *proto_job_keep(struct proto_job *job, const char *s);
/* The system prompt of job: base, or — when enabled (the adapter's
 * switch: cfg->kb_tickets for seed 000, cfg->kb_phoenix for seed 003) and
 * knowledge-base passages match question — the grounded prompt
 * (kb_ground: base, then at most cfg->kb_passages passages within
 * cfg->kb_context_bytes), whose text then also keys the answer
 * (kb_key_ground on job->ans.key, which must already be set), so an
 * answer cached without these passages is never served for it.
 * Sets *system (base itself, or a copy job owns), *rag (passages in it,
 * 0 when not grounded) and *conf (the passages' confidence, -1 when not
 * grounded); rag and conf may be NULL. Returns 0; -1 on a database error or out of memory (then
 * tell the client with db_err_kind / db_err_text). Runs in the thread
 * that owns ctx->db. */
int proto_job_ground(struct parley_ctx *ctx, struct proto_job *job, int enabled,
                     const char *base, const char *question, const char **system, int *rag,
                     double *conf);
/* Claims job->req (channel/prompt_key must be set): makes c follow the job
 * from the claim's first seq. When the caller owns it, *out = job; else the
 * job is freed and *out = NULL. 0 / -1 (claim failed: job freed). */
int proto_start(struct parley_ctx *ctx, struct proto_conn *c, struct proto_job *job,
                struct proto_job **out);
/* Prepares job to answer a conversation: the last cfg->context_messages
 * messages (at least 1, at most PROTO_JOB_MAX_MSGS) as the LLM messages,
 * channel "conv:<conv_id>", prompt_key = the user message's id, the
 * conversation to store the answer in, the configured temperature. 0 / -1. */
int proto_job_conversation(struct parley_ctx *ctx, struct proto_job *job, const char *conv_id,
                           const char *user_msg_id);
/* A client's stop request (docs/stop.md): stops the job c follows on
 * channel, or else the newest job of channel (its newest running one, or
 * its newest at all so that a finished one is told as finished), when c's
 * user started it or c->admin is set. On a refusal sets *kind and *msg (a
 * constant text or db_err_text's) and records it (proto_fail); the adapter
 * sends its own error frame. job_id > 0 names the job instead (seed 001's
 * message_id). Returns an enum jobs_stop_rc (JOBS_STOP_OK: recorded, the
 * end frame marked stopped follows through the channel). Caller's thread. */
int proto_stop(struct parley_ctx *ctx, struct proto_conn *c, const char *channel, int64_t job_id,
               enum perr *kind, const char **msg);
/* Follows channel from seq after (job_id 0 = any job). */
void proto_follow(struct proto_conn *c, const char *channel, int64_t job_id, int64_t after);
/* Follows nothing again (a start whose transaction was rolled back). */
void proto_unfollow(struct proto_conn *c);
/* Adds "seq": ev->seq to o when the connection asked for it; returns o. */
json_t *proto_with_seq(const struct proto_conn *c, const struct evlog_event *ev, json_t *o);
/* The "message" of an error event's JSON data (new string; a generic text
 * when the data is not what the runner writes); *code = the client's code
 * (docs/errors.md): the event's "code" when it is a documented one, else
 * perr_gen_code of its "kind" (jobs.c's "interrupted"), never NULL,
 * static storage. */
char *proto_event_error(const struct evlog_event *ev, const char **code);
/* 1 when ev is a "done" event of a stopped generation ("stopped": true in
 * its data, runner.c), else 0. */
int proto_event_stopped(const struct evlog_event *ev);
/* A string member of o, or NULL when absent or not a string. */
const char *proto_str(json_t *o, const char *key);
/* Counts Unicode code points of a UTF-8 string (the seeds' "characters"). */
size_t proto_utf8_len(const char *s);
/* Rate limit for this connection's peer: 1 allowed, 0 limited, -1 error. */
int proto_rate_ok(struct parley_ctx *ctx, const struct proto_conn *c);
/* Daily token budget of this connection's user (usage_budget_ok: the JWT
 * claim, the CLI's override, PARLEY_TOKEN_BUDGET_PER_DAY), checked only
 * before a request that would call the upstream: 1 allowed, 0 exhausted
 * (msg: "Daily token budget exhausted; it resets at <ISO 8601>"), -1
 * database error. Reads committed totals; the thread owning ctx->db. */
int proto_budget_ok(struct parley_ctx *ctx, const struct proto_conn *c, char *msg, size_t len);
#endif
