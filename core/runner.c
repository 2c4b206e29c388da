/* runner.c — claim, stream into the event log, finish atomically (runner.h). */
#include "runner.h"
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
    return jobs_claim(ctx->db, ctx->bell, req->channel, req->prompt_key,
                      ctx->cfg->lease_ms, claim, err, errlen);
}

/* State shared with the llm callbacks while one job streams. */
struct run_state {
    struct parley_ctx *ctx;
    struct evlog_writer w;
    char *text;                 /* everything received so far */
    size_t len, cap;
    int64_t job_id;
    int64_t renewed_ms;
    int lost_lease;
    int db_failed;
    int one_sentence;
    int stopped_early;          /* one_sentence reached: a success */
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

static int keep_lease(struct run_state *rs)
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

static int on_token(void *ud, const char *t, size_t n)
{
    struct run_state *rs = ud;
    if (rs->stopped_early)
        return 1;
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
    if (rs->len + n + 1 > rs->cap) {
        size_t ncap = rs->cap ? rs->cap * 2 : 1024;
        while (ncap < rs->len + n + 1)
            ncap *= 2;
        char *p = realloc(rs->text, ncap);
        if (!p)
            return -1;
        rs->text = p;
        rs->cap = ncap;
    }
    memcpy(rs->text + rs->len, t, n);
    rs->len += n;
    rs->text[rs->len] = '\0';
    if (evw_token(&rs->w, t, n) < 0) {
        rs->db_failed = 1;
        return -1;
    }
    if (rs->stopped_early)
        return 1;             /* ends the stream; runner_execute counts it a success */
    return keep_lease(rs);
}

static int on_tick(void *ud)
{
    struct run_state *rs = ud;
    if (evw_tick(&rs->w) < 0) {
        rs->db_failed = 1;
        return -1;
    }
    return keep_lease(rs);
}

static char *json_text(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* The final transaction of a successful job: last buffered tokens, "done",
 * job state, answer cache, assistant message. */
static int finish_ok(struct run_state *rs, const struct gen_request *req, struct gen_outcome *out)
{
    parley_db *db = rs->ctx->db;
    size_t restlen;
    char *rest = evw_take(&rs->w, &restlen);
    char *done = json_text(json_pack("{s:I, s:s, s:i, s:I, s:I, s:s}",
                                     "job_id", (json_int_t)rs->job_id,
                                     "message_id", out->message_id,
                                     "tokens", out->tokens,
                                     "processing_ms", (json_int_t)out->processing_ms,
                                     "first_token_ms", (json_int_t)out->first_token_ms,
                                     "model", out->model));
    int rc = -1;
    if (!done || db_begin(db) < 0)
        goto out;
    if (rest && evlog_append_tx(db, req->channel, rs->job_id, "token", rest, restlen) < 0)
        goto rollback;
    if (evlog_append_tx(db, req->channel, rs->job_id, "done", done, strlen(done)) < 0)
        goto rollback;
    if (jobs_finish_tx(db, rs->job_id, NULL) < 0) {
        rs->lost_lease = 1;       /* someone declared us dead: keep nothing */
        goto rollback;
    }
    if (req->cache) {
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

static int finish_failed(struct run_state *rs, const struct gen_request *req,
                         const char *kind, const char *msg)
{
    parley_db *db = rs->ctx->db;
    evw_flush(&rs->w);          /* tokens already shown stay in the log */
    char *data = json_text(json_pack("{s:I, s:s, s:s}", "job_id", (json_int_t)rs->job_id,
                                     "message", msg, "kind", kind));
    if (!data || db_begin(db) < 0) {
        free(data);
        return -1;
    }
    if (evlog_append_tx(db, req->channel, rs->job_id, "error", data, strlen(data)) < 0 ||
        jobs_finish_tx(db, rs->job_id, msg) < 0) {
        db_rollback(db);
        free(data);
        return -1;
    }
    free(data);
    return db_commit(db);
}

int runner_execute(struct parley_ctx *ctx, const struct gen_request *req,
                   struct job_claim *claim, struct gen_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->job_id = claim->job_id;
    out->first_token_ms = -1;
    /* The lease names the claiming thread: take it over if that was not
     * this one. If the job is no longer ours, a viewer already failed it. */
    if (strcmp(claim->lease_owner, owner_id()) != 0 &&
        jobs_adopt(ctx->db, claim, ctx->cfg->lease_ms) < 0) {
        str_copy(out->error, sizeof out->error, JOB_INTERRUPTED_MSG);
        out->kind = LLM_ERR_ABORTED;
        return 0;
    }
    if (req->message_id)
        str_copy(out->message_id, sizeof out->message_id, req->message_id);
    else
        uuid_v4(out->message_id);

    struct run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.ctx = ctx;
    rs.job_id = claim->job_id;
    rs.renewed_ms = mono_ms();
    rs.one_sentence = req->one_sentence;
    evw_init(&rs.w, ctx->db, ctx->bell, req->channel, claim->job_id, ctx->cfg->coalesce_ms);

    struct llm_config lc;
    config_llm(ctx->cfg, &lc);
    const char *model = req->llm.model ? req->llm.model : lc.model;
    char *start = json_text(json_pack("{s:I, s:s, s:s}", "job_id", (json_int_t)claim->job_id,
                                      "message_id", out->message_id, "model", model ? model : ""));
    int rc = -1;
    if (!start || evlog_append(ctx->db, ctx->bell, req->channel, claim->job_id, "start",
                               start, strlen(start)) < 0) {
        free(start);
        str_copy(out->error, sizeof out->error, "database error: cannot record the job start");
        out->kind = LLM_ERR_INTERNAL;
        evw_cleanup(&rs.w);
        return -1;
    }
    free(start);

    struct llm_callbacks cb = { on_token, on_tick, 0, &rs };
    int tick = ctx->cfg->coalesce_ms > 0 ? ctx->cfg->coalesce_ms : 50;
    if (tick > ctx->cfg->lease_ms / 4)
        tick = ctx->cfg->lease_ms / 4 > 0 ? ctx->cfg->lease_ms / 4 : 1;
    cb.tick_ms = tick;
    struct llm_result res;
    int ok = llm_stream(&lc, &req->llm, &cb, &res) == 0;
    if (!ok && rs.stopped_early && res.kind == LLM_ERR_ABORTED) {
        ok = 1;               /* we stopped it at the end of the first sentence */
        res.kind = LLM_OK;
        res.err[0] = '\0';
    }

    out->tokens = res.tokens;
    out->first_token_ms = res.first_token_ms;
    out->processing_ms = res.total_ms;
    out->kind = res.kind;
    str_copy(out->model, sizeof out->model, res.model[0] ? res.model : (model ? model : ""));

    if (ok) {
        if (finish_ok(&rs, req, out) == 0) {
            out->ok = 1;
            out->text = rs.text ? rs.text : strdup("");
            rs.text = NULL;
            rc = 0;
        } else if (rs.lost_lease) {
            str_copy(out->error, sizeof out->error, JOB_INTERRUPTED_MSG);
            rc = 0;   /* the recoverer already recorded the failure */
        } else {
            str_copy(out->error, sizeof out->error, "database error: cannot store the answer");
            rc = finish_failed(&rs, req, "internal", out->error);
        }
    } else {
        const char *kind = llm_err_name(res.kind);
        if (rs.lost_lease) {
            str_copy(out->error, sizeof out->error, JOB_INTERRUPTED_MSG);
            rc = 0;
        } else {
            if (rs.db_failed)
                str_copy(out->error, sizeof out->error, "database error while streaming the answer");
            else
                str_copy(out->error, sizeof out->error, res.err);
            rc = finish_failed(&rs, req, rs.db_failed ? "internal" : kind, out->error);
        }
    }
    if (rc == 0 && ctx->bell)
        bell_ring(ctx->bell, req->channel);
    free(rs.text);
    evw_cleanup(&rs.w);
    return rc;
}

int runner_fail(struct parley_ctx *ctx, const struct gen_request *req,
                struct job_claim *claim, const char *kind, const char *msg)
{
    if (strcmp(claim->lease_owner, owner_id()) != 0 &&
        jobs_adopt(ctx->db, claim, ctx->cfg->lease_ms) < 0)
        return -1;
    struct run_state rs;
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

int runner_follow(struct parley_ctx *ctx, const char *channel, int64_t job_id,
                  int64_t *cursor, int timeout_ms, const volatile int *stop,
                  int (*on_event)(void *ud, const struct evlog_event *ev), void *ud)
{
    int64_t last_event = mono_ms();
    int64_t last_check = last_event;
    int check_every = ctx->cfg->lease_ms / 2 > 100 ? ctx->cfg->lease_ms / 2 : 100;
    for (;;) {
        int slice = check_every;
        if (timeout_ms >= 0) {
            int64_t left = last_event + timeout_ms - mono_ms();
            if (left <= 0)
                return 2;
            if (left < slice)
                slice = (int)left;
        }
        struct evlog_event *ev = NULL;
        int n = evlog_wait(ctx->db, ctx->bell, channel, *cursor, 256, slice, stop, &ev);
        if (n < 0)
            return stop && *stop ? 3 : -1;
        int end = 0, r = 0;
        for (int i = 0; i < n && !end && !r; i++) {
            *cursor = ev[i].seq;
            if (ev[i].job_id != job_id)
                continue;
            r = on_event(ud, &ev[i]);
            if (!strcmp(ev[i].type, "done") || !strcmp(ev[i].type, "error"))
                end = 1;
        }
        evlog_free(ev, n);
        if (r)
            return 1;
        if (end)
            return 0;
        int64_t now = mono_ms();
        if (n > 0)
            last_event = now;
        if (now - last_check >= check_every) {
            last_check = now;
            struct job_info ji;
            if (jobs_get(ctx->db, job_id, &ji) == 0 && !strcmp(ji.state, "running") &&
                ji.lease_expires < now_ms())
                jobs_recover(ctx->db, ctx->bell, now_ms());
        }
    }
}
