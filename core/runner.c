/* runner.c — claim, stream into the event log, finish atomically (runner.h). */
#include "runner.h"
#include "follow.h"
#include "perr.h"
#include "usage.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gen_outcome_free(struct gen_outcome *o)
{
    if (o) {
        free(o->text);
        o->text = NULL;
    }
}

int runner_claim(struct parley_ctx *ctx, const struct gen_request *req,
                 struct job_claim *claim, char *err, size_t errlen)
{
    return jobs_claim_as(ctx->db, ctx->bell, req->channel, req->prompt_key, req->user,
                         ctx->cfg->lease_ms, claim, err, errlen);
}

/* One job in progress (runner.h): the state shared with the llm callbacks. */
struct runner_gen {
    struct parley_ctx *ctx;
    const struct gen_request *req;      /* borrowed until runner_gen_finish */
    struct evlog_writer w;
    int batch;                  /* RUNNER_BATCH: tokens wait in pend for flush_tx */
    char *pend;                 /* batch: tokens not yet in the log */
    size_t pend_len, pend_cap;
    char *text;                 /* everything received so far */
    size_t len, cap;
    int64_t job_id;
    int64_t renewed_ms;
    int lost_lease;
    int db_failed;
    int one_sentence;
    int unstarted;              /* runner_gen_new, start not recorded yet: every
                                   token waits in pend (batch), even with no
                                   coalescing, so none is logged before "start"
                                   (and later ones after them until the flush) */
    int stopped_early;          /* one_sentence reached: a success */
    int stop_requested;         /* runner_gen_stop: ends stopped */
    int64_t stop_checked_ms;    /* blocking runs (runner_execute): the last look for a stop */
    struct gen_outcome out;     /* written by begin and finish */
    struct llm_config lc;
    struct llm_callbacks cb;
    struct llm_result res;
};

/* Length of the first sentence of t[0..n) including its terminator, or 0
 * when it has not ended yet. A sentence ends at . ! ? or … followed by white
 * space (or a closing quote then space); "3.5" and "e.g." mid-word don't. */
static size_t first_sentence_end(const char *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (ch == '\n' && i > 0)
            return i;
        if (ch != '.' && ch != '!' && ch != '?')
            continue;
        size_t j = i + 1;
        while (j < n && (t[j] == '"' || t[j] == '\'' || t[j] == ')'))
            j++;
        if (j < n && (t[j] == ' ' || t[j] == '\n' || t[j] == '\t'))
            return j;
    }
    return 0;
}

static int keep_lease(struct runner_gen *rs)
{
    int lease = rs->ctx->cfg->lease_ms;
    int64_t now = mono_ms();
    if (now - rs->renewed_ms < lease / 3)
        return 0;
    if (jobs_renew(rs->ctx->db, rs->job_id, lease) < 0) {
        rs->lost_lease = 1;
        return -1;
    }
    rs->renewed_ms = now;
    return 0;
}

/* Appends n bytes to *p (growing *cap). 0 / -1 out of memory. */
static int grow_add(char **p, size_t *len, size_t *cap, const char *t, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *np = realloc(*p, ncap);
        if (!np)
            return -1;
        *p = np;
        *cap = ncap;
    }
    memcpy(*p + *len, t, n);
    *len += n;
    (*p)[*len] = '\0';
    return 0;
}

/* A blocking run (runner_execute: `parley ask`, tests) has no generation
 * loop watching for stops: it looks itself, at most every
 * RUNNER_STOP_CHECK_MS, as tokens arrive. 1 when a stop was asked. */
#define RUNNER_STOP_CHECK_MS 100
static int stop_asked(struct runner_gen *rs)
{
    if (rs->batch)
        return 0;                         /* the loop's check_stops does it */
    int64_t now = mono_ms();
    if (now - rs->stop_checked_ms < RUNNER_STOP_CHECK_MS)
        return 0;
    rs->stop_checked_ms = now;
    struct job_info ji;
    return jobs_get(rs->ctx->db, rs->job_id, &ji) == 0 && ji.stop_requested;
}

static int on_token(void *ud, const char *t, size_t n)
{
    struct runner_gen *rs = ud;
    if (rs->stopped_early)
        return 1;
    if (stop_asked(rs)) {
        rs->stop_requested = 1;           /* ends stopped with what came before */
        return 1;
    }
    if (rs->one_sentence) {
        /* look for the end of the first sentence in what we'd have */
        size_t old = rs->len;
        char tmp[4096];
        size_t take = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
        size_t scan_from = old > 4 ? old - 4 : 0;      /* a terminator may end the last piece */
        size_t have = old - scan_from;
        if (have + take < sizeof tmp) {
            if (have)
                memcpy(tmp, rs->text + scan_from, have);
            memcpy(tmp + have, t, take);
            size_t end = first_sentence_end(tmp, have + take);
            if (end > have) {
                n = end - have;       /* keep up to the terminator */
                rs->stopped_early = 1;
            } else if (end > 0 && end <= have) {
                rs->stopped_early = 1;
                return 1;
            }
        }
    }
    if (grow_add(&rs->text, &rs->len, &rs->cap, t, n) < 0)
        return -1;
    if (rs->batch && (rs->w.coalesce_ms > 0 || rs->unstarted || rs->pend_len > 0)) {
        if (grow_add(&rs->pend, &rs->pend_len, &rs->pend_cap, t, n) < 0)
            return -1;
    } else if (evw_token(&rs->w, t, n) < 0) {
        rs->db_failed = 1;
        return -1;
    }
    if (rs->stopped_early)
        return 1;             /* ends the stream; runner_gen_finish counts it a success */
    return rs->batch ? 0 : keep_lease(rs);
}

static int on_tick(void *ud)
{
    struct runner_gen *rs = ud;
    if (evw_tick(&rs->w) < 0) {
        rs->db_failed = 1;
        return -1;
    }
    return keep_lease(rs);
}

/* The tokens not yet in the log (new string or NULL), emptying the buffer. */
static char *take_rest(struct runner_gen *rs, size_t *len)
{
    if (!rs->batch || rs->pend_len == 0)
        return evw_take(&rs->w, len);
    char *s = rs->pend;
    *len = rs->pend_len;
    rs->pend = NULL;
    rs->pend_len = rs->pend_cap = 0;
    return s;
}

static char *json_text(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Charges the gen's tokens (as the upstream reported them) to the user who
 * started it, inside the caller's open transaction (docs/usage.md). 0 / -1. */
static int charge_tx(struct runner_gen *rs, const struct gen_request *req, const char *outcome,
                     const char *message_id, const char *model)
{
    struct usage_charge u = { .user = req->user, .channel = req->channel, .job_id = rs->job_id,
                              .message_id = req->conversation_id ? message_id : NULL,
                              .model = model, .upstream = rs->res.upstream, .outcome = outcome,
                              .prompt_tokens = rs->res.prompt_tokens > 0 ? rs->res.prompt_tokens : 0,
                              .completion_tokens = rs->res.tokens > 0 ? rs->res.tokens : 0,
                              .at_ms = now_ms() };
    return usage_charge_tx(rs->ctx->db, &u);
}

/* The final transaction of a job that ended with its answer (stopped 0) or
 * was stopped (stopped 1): last buffered tokens, "done" (with "stopped":
 * true when stopped), the job's end, the usage charge, the answer cache
 * (never for a stopped job: its text is partial), the assistant message
 * (marked {"stopped":true} when stopped). */
static int finish_done(struct runner_gen *rs, const struct gen_request *req,
                       struct gen_outcome *out, int stopped)
{
    parley_db *db = rs->ctx->db;
    size_t restlen;
    char *rest = take_rest(rs, &restlen);
    json_t *o = json_pack("{s:I, s:s, s:i, s:I, s:I, s:s, s:i}",
                          "job_id", (json_int_t)rs->job_id,
                          "message_id", out->message_id,
                          "tokens", out->tokens,
                          "processing_ms", (json_int_t)out->processing_ms,
                          "first_token_ms", (json_int_t)out->first_token_ms,
                          "model", out->model,
                          "prompt_tokens", rs->res.prompt_tokens);
    if (o && stopped && json_object_set_new(o, "stopped", json_true()) < 0) {
        json_decref(o);
        o = NULL;
    }
    char *done = json_text(o);
    int rc = -1;
    if (!done || db_begin(db) < 0)
        goto out;
    if (rest && evlog_append_tx(db, req->channel, rs->job_id, "token", rest, restlen) < 0)
        goto rollback;
    if (evlog_append_tx(db, req->channel, rs->job_id, "done", done, strlen(done)) < 0)
        goto rollback;
    if ((stopped ? jobs_finish_stopped_tx(db, rs->job_id) : jobs_finish_tx(db, rs->job_id, NULL)) < 0) {
        rs->lost_lease = 1;       /* someone declared us dead: keep nothing */
        goto rollback;
    }
    if (charge_tx(rs, req, stopped ? "stopped" : "done", out->message_id, out->model) < 0)
        goto rollback;
    if (req->cache && !stopped) {
        struct answer a = *req->cache;
        a.response = rs->text ? rs->text : "";
        a.tokens = out->tokens;
        if (!a.model || !*a.model)
            a.model = out->model;
        if (store_answer_put_tx(db, &a) < 0)
            goto rollback;
    }
    if (req->conversation_id) {
        struct message m;
        store_msg_init(&m);
        str_copy(m.id, sizeof m.id, out->message_id);
        str_copy(m.conversation_id, sizeof m.conversation_id, req->conversation_id);
        str_copy(m.role, sizeof m.role, "assistant");
        m.content = rs->text ? rs->text : (char *)"";
        m.tokens = out->tokens;
        m.processing_ms = out->processing_ms;
        m.model = out->model;
        if (stopped)
            m.metadata = (char *)"{\"stopped\":true}";
        if (store_msg_add_tx(db, &m) < 0)
            goto rollback;
    }
    if (db_commit(db) < 0)
        goto out;
    rc = 0;
    goto out;
rollback:
    db_rollback(db);
out:
    free(rest);
    free(done);
    return rc;
}

static int finish_failed(struct runner_gen *rs, const struct gen_request *req,
                         const char *kind, const char *msg)
{
    parley_db *db = rs->ctx->db;
    size_t restlen;
    char *rest = rs->batch ? take_rest(rs, &restlen) : NULL;
    if (rest)                   /* tokens already streamed stay in the log */
        evlog_append(db, NULL, req->channel, rs->job_id, "token", rest, restlen);
    free(rest);
    evw_flush(&rs->w);
    /* code: the client's code (perr.h, docs/errors.md): an upstream failure
     * after answer text streamed is upstream_error, before upstream_unavailable */
    char *data = json_text(json_pack("{s:I, s:s, s:s, s:s}", "job_id", (json_int_t)rs->job_id,
                                     "message", msg, "kind", kind,
                                     "code", perr_gen_code(kind, rs->len > 0)));
    if (!data || db_begin(db) < 0) {
        free(data);
        return -1;
    }
    if (evlog_append_tx(db, req->channel, rs->job_id, "error", data, strlen(data)) < 0 ||
        jobs_finish_tx(db, rs->job_id, msg) < 0 ||
        (rs->req && charge_tx(rs, req, "error", NULL, rs->out.model) < 0)) {
        db_rollback(db);
        free(data);
        return -1;
    }
    free(data);
    return db_commit(db);
}

static void gen_free(struct runner_gen *g)
{
    if (!g)
        return;
    free(g->text);
    free(g->pend);
    evw_cleanup(&g->w);
    gen_outcome_free(&g->out);
    free(g);
}

int runner_gen_new(struct parley_ctx *ctx, const struct gen_request *req,
                   const struct job_claim *claim, int flags, struct runner_gen **gen)
{
    *gen = NULL;
    struct runner_gen *rs = calloc(1, sizeof *rs);
    if (!rs)
        return -1;
    rs->out.job_id = claim->job_id;
    rs->out.first_token_ms = -1;
    if (req->message_id)
        str_copy(rs->out.message_id, sizeof rs->out.message_id, req->message_id);
    else
        uuid_v4(rs->out.message_id);
    rs->ctx = ctx;
    rs->req = req;
    rs->batch = (flags & RUNNER_BATCH) != 0;
    rs->job_id = claim->job_id;
    rs->renewed_ms = mono_ms();
    rs->one_sentence = req->one_sentence;
    rs->unstarted = 1;
    evw_init(&rs->w, ctx->db, ctx->bell, req->channel, claim->job_id, ctx->cfg->coalesce_ms);
    config_llm(ctx->cfg, &rs->lc);
    rs->cb.on_token = on_token;
    rs->cb.on_tick = rs->batch ? NULL : on_tick;
    rs->cb.ud = rs;
    int tick = ctx->cfg->coalesce_ms > 0 ? ctx->cfg->coalesce_ms : 50;
    if (tick > ctx->cfg->lease_ms / 4)
        tick = ctx->cfg->lease_ms / 4 > 0 ? ctx->cfg->lease_ms / 4 : 1;
    rs->cb.tick_ms = tick;
    *gen = rs;
    return 0;
}

int runner_gen_record_start(struct runner_gen *rs, struct job_claim *claim, int flags,
                            struct gen_outcome *out)
{
    struct parley_ctx *ctx = rs->ctx;
    const struct gen_request *req = rs->req;
    memset(out, 0, sizeof *out);
    out->job_id = claim->job_id;
    out->first_token_ms = -1;
    /* The lease names the claiming thread: take it over if that was not
     * this one. If the job is no longer ours, a viewer already failed it. */
    if (strcmp(claim->lease_owner, owner_id()) != 0 &&
        jobs_adopt(ctx->db, claim, ctx->cfg->lease_ms) < 0) {
        str_copy(out->error, sizeof out->error, JOB_INTERRUPTED_MSG);
        out->kind = LLM_ERR_ABORTED;
        return 1;
    }
    const char *model = req->llm.model ? req->llm.model : rs->lc.model;
    /* reply_to: the user message a conversation's answer replies to (its
     * prompt key), which tells seed 001 which queued message this is */
    json_t *so = json_pack("{s:I, s:s, s:s}", "job_id", (json_int_t)claim->job_id,
                           "message_id", rs->out.message_id, "model", model ? model : "");
    if (so && req->conversation_id && req->prompt_key)
        json_object_set_new(so, "reply_to", json_string(req->prompt_key));
    char *start = json_text(so);
    int64_t seq = !start ? -1
                  : (flags & RUNNER_IN_TX)
                  ? evlog_append_tx(ctx->db, req->channel, claim->job_id, "start", start, strlen(start))
                  : evlog_append(ctx->db, ctx->bell, req->channel, claim->job_id, "start",
                                 start, strlen(start));
    free(start);
    if (seq < 0) {
        str_copy(out->error, sizeof out->error, "database error: cannot record the job start");
        out->kind = LLM_ERR_INTERNAL;
        return -1;
    }
    rs->unstarted = 0;        /* tokens that came meanwhile wait in pend for the next flush */
    return 0;
}

int runner_gen_begin(struct parley_ctx *ctx, const struct gen_request *req,
                     struct job_claim *claim, int flags, struct gen_outcome *out,
                     struct runner_gen **gen)
{
    *gen = NULL;
    struct runner_gen *rs;
    if (runner_gen_new(ctx, req, claim, flags, &rs) < 0) {
        memset(out, 0, sizeof *out);
        out->job_id = claim->job_id;
        out->first_token_ms = -1;
        str_copy(out->error, sizeof out->error, "out of memory starting the generation");
        out->kind = LLM_ERR_INTERNAL;
        return -1;
    }
    int rc = runner_gen_record_start(rs, claim, flags, out);
    if (rc != 0) {
        gen_free(rs);
        return rc;
    }
    *gen = rs;
    return 0;
}

void runner_gen_discard(struct runner_gen *g)
{
    gen_free(g);
}

struct llm_stream *runner_gen_stream(struct runner_gen *g)
{
    return llm_stream_begin(&g->lc, &g->req->llm, &g->cb, &g->res);
}

const char *runner_gen_channel(const struct runner_gen *g)
{
    return g->req->channel;
}

int runner_gen_flush_tx(struct runner_gen *g)
{
    if (!g->batch || g->pend_len == 0)
        return 0;
    if (evlog_append_tx(g->ctx->db, g->req->channel, g->job_id, "token", g->pend,
                        g->pend_len) < 0)
        return -1;
    g->pend_len = 0;
    return 1;
}

size_t runner_gen_pending(const struct runner_gen *g)
{
    return g->batch ? g->pend_len : 0;
}

int runner_gen_renew_tx(struct runner_gen *g)
{
    if (g->lost_lease)
        return -1;
    return keep_lease(g);
}

int64_t runner_gen_job(const struct runner_gen *g)
{
    return g->job_id;
}

void runner_gen_stop(struct runner_gen *g)
{
    g->stop_requested = 1;
}

void runner_gen_db_failed(struct runner_gen *g)
{
    g->db_failed = 1;
}

int runner_gen_finish(struct runner_gen *g, int llm_rc, struct gen_outcome *out)
{
    struct parley_ctx *ctx = g->ctx;
    const struct gen_request *req = g->req;
    struct llm_result *res = &g->res;
    struct gen_outcome *o = &g->out;
    int ok = llm_rc == 0 && !g->db_failed && !g->lost_lease;
    if (llm_rc != 0 && g->stopped_early && res->kind == LLM_ERR_ABORTED && !g->db_failed &&
        !g->lost_lease) {
        ok = 1;               /* we stopped it at the end of the first sentence */
        res->kind = LLM_OK;
        res->err[0] = '\0';
    }
    const char *model = req->llm.model ? req->llm.model : g->lc.model;
    o->tokens = res->tokens;
    o->first_token_ms = res->first_token_ms;
    o->processing_ms = res->total_ms;
    o->kind = res->kind;
    str_copy(o->model, sizeof o->model, res->model[0] ? res->model : (model ? model : ""));

    int rc = -1;
    if (g->stop_requested && llm_rc != 0 && !g->stopped_early && !g->db_failed &&
        !g->lost_lease) {
        /* stopped by a user before the answer was complete: keep what came
         * (an answer that completed before the stop took effect is done) */
        if (finish_done(g, req, o, 1) == 0) {
            o->ok = 1;
            o->stopped = 1;
            o->kind = LLM_OK;
            o->text = g->text ? g->text : strdup("");
            g->text = NULL;
            rc = 0;
        } else if (g->lost_lease) {
            str_copy(o->error, sizeof o->error, JOB_INTERRUPTED_MSG);
            rc = 0;
        } else {
            str_copy(o->error, sizeof o->error, "database error: cannot store the stopped answer");
            rc = finish_failed(g, req, "internal", o->error);
        }
    } else if (ok) {
        if (finish_done(g, req, o, 0) == 0) {
            o->ok = 1;
            o->text = g->text ? g->text : strdup("");
            g->text = NULL;
            rc = 0;
        } else if (g->lost_lease) {
            str_copy(o->error, sizeof o->error, JOB_INTERRUPTED_MSG);
            rc = 0;   /* the recoverer already recorded the failure */
        } else {
            str_copy(o->error, sizeof o->error, "database error: cannot store the answer");
            rc = finish_failed(g, req, "internal", o->error);
        }
    } else {
        const char *kind = llm_err_name(res->kind);
        if (g->lost_lease) {
            str_copy(o->error, sizeof o->error, JOB_INTERRUPTED_MSG);
            rc = 0;
        } else {
            if (g->db_failed)
                str_copy(o->error, sizeof o->error, "database error while streaming the answer");
            else
                str_copy(o->error, sizeof o->error, res->err);
            rc = finish_failed(g, req, g->db_failed ? "internal" : kind, o->error);
        }
    }
    if (rc == 0 && ctx->bell)
        bell_ring(ctx->bell, req->channel);
    *out = *o;
    memset(o, 0, sizeof *o);      /* out owns the text now */
    gen_free(g);
    return rc;
}

int runner_execute(struct parley_ctx *ctx, const struct gen_request *req,
                   struct job_claim *claim, struct gen_outcome *out)
{
    struct runner_gen *g;
    int rc = runner_gen_begin(ctx, req, claim, 0, out, &g);
    if (rc != 0)
        return rc > 0 ? 0 : -1;
    int lrc = llm_stream(&g->lc, &req->llm, &g->cb, &g->res);
    return runner_gen_finish(g, lrc, out);
}

int runner_fail(struct parley_ctx *ctx, const struct gen_request *req,
                struct job_claim *claim, const char *kind, const char *msg)
{
    if (strcmp(claim->lease_owner, owner_id()) != 0 &&
        jobs_adopt(ctx->db, claim, ctx->cfg->lease_ms) < 0)
        return -1;
    struct runner_gen rs;
    memset(&rs, 0, sizeof rs);
    rs.ctx = ctx;
    rs.job_id = claim->job_id;
    evw_init(&rs.w, ctx->db, ctx->bell, req->channel, claim->job_id, 0);
    int rc = finish_failed(&rs, req, kind, msg);
    evw_cleanup(&rs.w);
    if (rc == 0 && ctx->bell)
        bell_ring(ctx->bell, req->channel);
    return rc;
}

int runner_run(struct parley_ctx *ctx, const struct gen_request *req,
               struct job_claim *claim, int *owner, struct gen_outcome *out)
{
    char err[256];
    memset(out, 0, sizeof *out);
    *owner = 0;
    if (runner_claim(ctx, req, claim, err, sizeof err) < 0) {
        str_copy(out->error, sizeof out->error, err);
        out->kind = LLM_ERR_INTERNAL;
        return -1;
    }
    if (!claim->owner)
        return 0;
    *owner = 1;
    return runner_execute(ctx, req, claim, out);
}

/* runner_follow on the one follow loop (core/follow.h). */
struct runner_follow_state {
    int64_t job_id;
    int (*on_event)(void *ud, const struct evlog_event *ev);
    void *ud;
    int timed_out;
};

static int runner_follow_event(void *ud, const struct evlog_event *ev)
{
    struct runner_follow_state *f = ud;
    if (ev->job_id != f->job_id)
        return FOLLOW_MORE;
    if (f->on_event(f->ud, ev))
        return FOLLOW_QUIT;
    return !strcmp(ev->type, "done") || !strcmp(ev->type, "error") ? FOLLOW_END : FOLLOW_MORE;
}

static int runner_follow_idle(void *ud)
{
    ((struct runner_follow_state *)ud)->timed_out = 1;
    return 1;
}

int runner_follow(struct parley_ctx *ctx, const char *channel, int64_t job_id,
                  int64_t *cursor, int timeout_ms, const volatile int *stop,
                  int (*on_event)(void *ud, const struct evlog_event *ev), void *ud)
{
    struct runner_follow_state f = { job_id, on_event, ud, 0 };
    int r = follow_channel(ctx, channel, &f.job_id, cursor, runner_follow_event,
                           timeout_ms >= 0 ? runner_follow_idle : NULL, &f, stop,
                           timeout_ms > 0 ? timeout_ms : timeout_ms == 0 ? 1 : 0);
    if (r == FOLLOW_LEFT)
        return f.timed_out ? 2 : 1;
    return r;
}
