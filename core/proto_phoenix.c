/* proto_phoenix.c — seed 003 (NeuralBridge over Phoenix Channels): one
 * joined topic "proxy:{session}" of a Phoenix socket (core/phx.h holds the
 * socket: framing, heartbeat, join, leave). Every frame is a complete
 * Phoenix V2 array [join_ref, ref, topic, event, payload]; the topic and
 * its join_ref are in c->state ("topic", "join_ref").
 *
 *   client pushes (payload)                         server pushes
 *   query {query, model?, temperature?, metadata?}  response {response, metadata:{source,
 *                                                    confidence_score, processing_time_ms,
 *                                                    rag_context_used, model_used}, timestamp}
 *   stream_query {same}                             stream_start {query, timestamp},
 *                                                    stream_token {token}..., stream_complete {}
 *                                                    | stream_error {error, code}
 *   get_history                                     history {messages:[{role, content, timestamp}]}
 *   ping                                            pong {timestamp}
 *   stop {}                                         (stops the session's generation:
 *                                                    docs/stop.md) stream_complete
 *                                                    {stopped: true} | response with
 *                                                    metadata.stopped: true
 *   anything refused                                error {error, message, code}
 * Each push is also answered with a phx_reply to its ref: status "ok" with
 * {} when it was taken, "error" with {error, message, code} when refused (the
 * error event carries the same), so phoenix.js's push.receive() fires.
 *
 * The session is a conversation (store.h, kind "phoenix", created at the
 * first join, owned by the JWT's sub): another user's session is refused
 * at join ("unauthorized"). A query is answered from the answer cache when
 * the same normalised query, model and temperature were answered before
 * (source "cache": both messages are stored at once), else one job runs on
 * channel "conv:<session>" with prompt key = the cache key, so identical
 * queries of one session share one upstream call (single flight, also
 * across sockets joined to the same topic), and the runner caches the
 * answer with "done". The prompt is the query alone (no conversation
 * context): that is what makes a cached answer right for the next asker.
 * A join while a generation runs on the session follows it as a stream
 * (stream_start with its question, the tokens so far, the rest); a join
 * after the session's latest answer failed replays it the same way, to its
 * stream_error, so a client that was away when it failed is told (a query
 * ends that replay at once instead of being refused as busy).
 * Knowledge base (PARLEY_KB_PHOENIX, default on; docs/knowledge-base.md):
 * the passages matching the query go into the system prompt
 * (proto_job_ground: kb_ground),
 * the cache / single-flight key's digest then covers that prompt
 * (kb_key_ground), rag_context_used is how many passages went in and
 * confidence_score kb_confidence (null when nothing matched).
 * State (c->state, beside proto.c's "resume_after"): topic, join_ref;
 * mode ("query" | "stream") of the followed job, query, t0 (ms), model,
 * text (the answer so far, query mode), rag (passages in its prompt),
 * conf (its confidence; absent when nothing matched).
 * Runs in the thread that drives the connection (proto.h).
 */
#include "proto_impl.h"
#include "stats.h"
#include "ident.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PHX_SYSTEM "You are NeuralBridge, a helpful assistant. Answer accurately and concisely."
#define MAX_METADATA 8192          /* bytes of a query's metadata JSON */
#define HISTORY_MAX 500            /* messages get_history returns at most (the newest) */
#define DB_ERROR_MSG "Database error: please try again"

/* ---- frames ---- */

/* [join_ref, ref, topic, event, payload] of this topic; steals ref and
 * payload (ref NULL: null). */
static json_t *v2(const struct proto_conn *c, json_t *ref, const char *event, json_t *payload)
{
    json_t *jr = json_object_get(c->state, "join_ref");
    return json_pack("[O, o, s, s, o]", jr ? jr : json_null(), ref ? ref : json_null(),
                     proto_str(c->state, "topic") ? proto_str(c->state, "topic") : "", event,
                     payload ? payload : json_object());
}

static int push(struct proto_conn *c, struct proto_frames *out, const char *event, json_t *payload)
{
    return frames_push(out, v2(c, NULL, event, payload));
}

static int reply(struct proto_conn *c, struct proto_frames *out, json_t *ref, const char *status,
                 json_t *response)
{
    return frames_push(out, v2(c, json_incref(ref), "phx_reply",
                               json_pack("{s:s, s:o}", "status", status, "response",
                                         response ? response : json_object())));
}

/* The error payload {error: reason, message, code} (code: docs/errors.md). */
static json_t *error_payload(const char *reason, const char *msg, const char *code)
{
    return json_pack("{s:s, s:s, s:s}", "error", reason, "message", msg, "code", code);
}

/* A refused push: the error event and the error reply; records the kind. */
static int refuse(struct proto_conn *c, struct proto_frames *out, json_t *ref, enum perr kind,
                  const char *reason, const char *msg)
{
    proto_fail(c, kind, msg);
    if (push(c, out, "error", error_payload(reason, msg, perr_code(kind))) < 0)
        return -1;
    return reply(c, out, ref, "error", error_payload(reason, msg, perr_code(kind)));
}

static int db_refuse(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *out,
                     json_t *ref)
{
    refuse(c, out, ref, db_err_kind(ctx->db), "processing_failed",
           db_err_text(ctx->db, DB_ERROR_MSG));
    return -1;
}

static void stamp(char ts[32])
{
    proto_timestamp(ts, now_ms(), 0);
}

/* ---- join (open) ---- */

/* The question of the answer being generated on session conv: on_query
 * stores the user message before it starts the job, and the answer is
 * stored only when it is done, so it is the session's newest message when
 * that is a user message. *q: a new string, or NULL when the newest
 * message is not a user's (nothing known). 0, or -1 on a database error. */
static int running_query(struct parley_ctx *ctx, const char *conv, char **q)
{
    struct message *m = NULL;
    int n = 0;
    int64_t total = 0;
    *q = NULL;
    if (store_msg_list(ctx->db, conv, 1, 0, &m, &n, &total) < 0)
        return -1;
    if (total > 1) {
        store_msgs_free(m, n);
        m = NULL;
        n = 0;
        if (store_msg_list(ctx->db, conv, 1, (int)(total - 1), &m, &n, &total) < 0)
            return -1;
    }
    if (n == 1 && !strcmp(m[0].role, "user") && m[0].content)
        *q = strdup(m[0].content);       /* out of memory: NULL, nothing known */
    store_msgs_free(m, n);
    return 0;
}

/* The session's latest answer when it failed: its question is the
 * session's newest message (a finished or stopped answer is stored after
 * it) and the channel's last event is the error of a failed job. *job and
 * *first (the job's first_seq) set when found. 1 found, 0 not, -1 on a
 * database error. */
static int failed_answer(struct parley_ctx *ctx, const char *conv, const char *chan,
                         int64_t *job, int64_t *first)
{
    char *q = NULL;
    if (running_query(ctx, conv, &q) < 0)
        return -1;
    if (!q)
        return 0;
    free(q);
    int64_t last = evlog_last_seq(ctx->db, chan);
    if (last <= 0)
        return last < 0 ? -1 : 0;
    struct evlog_event *ev = NULL;
    int n = evlog_read(ctx->db, chan, last - 1, 1, &ev);
    if (n < 0)
        return -1;
    int found = 0;
    if (n == 1 && !strcmp(ev[0].type, "error") && ev[0].job_id > 0) {
        struct job_info ji;
        int r = jobs_get(ctx->db, ev[0].job_id, &ji);
        if (r < 0) {
            evlog_free(ev, n);
            return -1;
        }
        if (r == 0 && !strcmp(ji.state, "failed")) {
            *job = ev[0].job_id;
            *first = ji.first_seq;
            found = 1;
        }
    }
    evlog_free(ev, n);
    return found;
}

static int phx_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                    struct proto_frames *out)
{
    (void)out;
    if (!ident_name_valid(c->param, sizeof ((struct conversation *)0)->id - 1))
        return proto_fail(c, PERR_BAD_INPUT, "invalid session id");
    struct conversation conv;
    int r = store_conv_get(ctx->db, c->param, NULL, &conv);
    if (r == STORE_NOT_FOUND) {
        memset(&conv, 0, sizeof conv);
        str_copy(conv.id, sizeof conv.id, c->param);
        str_copy(conv.owner, sizeof conv.owner, c->user);
        str_copy(conv.kind, sizeof conv.kind, "phoenix");
        r = store_conv_create(ctx->db, &conv);
        if (r == STORE_EXISTS)        /* created meanwhile: whose is it? */
            r = store_conv_get(ctx->db, c->param, NULL, &conv);
        else if (r == STORE_OK)
            r = store_conv_get(ctx->db, c->param, NULL, &conv);
    }
    if (r == STORE_ERR) {
        proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (r != STORE_OK)
        return proto_fail(c, PERR_NOT_FOUND, "unauthorized");
    int mine = strcmp(conv.owner, c->user) == 0;
    int closed = strcmp(conv.status, "closed") == 0;
    store_conv_free(&conv);
    if (!mine)
        return proto_fail(c, PERR_FORBIDDEN, "unauthorized");
    if (closed)
        return proto_fail(c, PERR_CONFLICT, "session closed");

    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", c->param);
    int64_t job_id, first_seq;
    r = jobs_running_on(ctx->db, chan, &job_id, &first_seq);
    if (r < 0) {
        proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    /* a job whose worker is gone (its lease ran out, nobody recorded it:
     * say the database could not be written then) is failed now, not
     * followed: a rejoin would replay a dead answer and refuse the next
     * query as "busy" */
    if (r == 0 && jobs_recover_if_expired(ctx->db, ctx->bell, job_id, now_ms()) > 0)
        r = 1;
    int replay = 0;
    if (r == 1) {
        /* nothing runs: when the latest answer failed (its worker died
         * while this client was away, an upstream error...), the join
         * follows it from its start as it would have while it ran, so the
         * client gets its stream_error instead of nothing; a query ends
         * the replay at once (on_query) */
        int f = failed_answer(ctx, c->param, chan, &job_id, &first_seq);
        if (f < 0) {
            proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
            return -1;
        }
        if (f == 1) {
            r = 0;
            replay = 1;
        }
    }
    if (r == 0) {
        /* an answer is being generated: follow it as a stream, its
         * stream_start carrying the question it answers */
        char *q = NULL;
        if (running_query(ctx, c->param, &q) < 0) {
            proto_fail(c, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
            return -1;
        }
        proto_follow(c, chan, job_id, first_seq);
        json_object_set_new(c->state, "mode", json_string("stream"));
        json_object_set_new(c->state, "query", json_string(q ? q : ""));
        json_object_set_new(c->state, "t0", json_integer(now_ms()));
        if (replay)
            json_object_set_new(c->state, "replay", json_true());
        free(q);
    }
    return 0;
}

int proto_phoenix_join(struct parley_ctx *ctx, struct proto_conn *c, const char *topic,
                       json_t *join_ref, const char *user, const char *peer,
                       struct proto_frames *out)
{
    size_t tl = strlen(PROTO_PHOENIX_TOPIC);
    memset(c, 0, sizeof *c);
    if (strncmp(topic, PROTO_PHOENIX_TOPIC, tl) != 0)
        return proto_fail(c, PERR_NOT_FOUND, "unmatched topic"), 1;
    /* letters, digits, - _ . only: safe in the path, channel names and logs */
    if (!ident_name_valid(topic + tl, sizeof ((struct conversation *)0)->id - 1))
        return proto_fail(c, PERR_BAD_INPUT, "invalid session id"), 1;
    char path[128];
    snprintf(path, sizeof path, "%s%s", PROTO_PHOENIX_PATH, topic + tl);
    int rc = proto_open(ctx, c, path, user, peer, out);
    if (rc < 0 && c->err == PERR_OK)
        proto_fail(c, PERR_INTERNAL, "could not join");
    if (c->state) {
        json_object_set_new(c->state, "topic", json_string(topic));
        json_object_set(c->state, "join_ref", join_ref ? join_ref : json_null());
    }
    if (rc < 0)
        return -1;
    return c->err == PERR_OK ? 0 : 1;
}

/* ---- events of the followed job ---- */

/* The response's metadata; conf < 0: confidence_score null (no passage
 * matched). */
static json_t *meta(const char *source, int64_t ms, const char *model, int rag, double conf)
{
    return json_pack("{s:s, s:o, s:I, s:i, s:s}", "source", source, "confidence_score",
                     conf < 0 ? json_null() : json_real(conf), "processing_time_ms",
                     (json_int_t)(ms < 0 ? 0 : ms), "rag_context_used", rag,
                     "model_used", model ? model : "");
}

static int phx_event(struct parley_ctx *ctx, struct proto_conn *c, const struct evlog_event *ev,
                     struct proto_frames *out)
{
    (void)ctx;
    const char *mode = proto_str(c->state, "mode");
    int stream = !mode || strcmp(mode, "query") != 0;
    char ts[32];
    if (!strcmp(ev->type, "start")) {
        if (!stream)
            return 0;
        stamp(ts);
        const char *q = proto_str(c->state, "query");
        return push(c, out, "stream_start", json_pack("{s:s, s:s}", "query", q ? q : "",
                                                       "timestamp", ts));
    }
    if (!strcmp(ev->type, "token")) {
        if (stream)
            return push(c, out, "stream_token", json_pack("{s:s%}", "token", ev->data,
                                                          ev->data_len));
        const char *had = proto_str(c->state, "text");
        size_t hl = had ? strlen(had) : 0;
        char *t = malloc(hl + ev->data_len + 1);
        if (!t)
            return -1;
        memcpy(t, had ? had : "", hl);
        memcpy(t + hl, ev->data, ev->data_len);
        t[hl + ev->data_len] = '\0';
        json_t *js = json_stringn(t, hl + ev->data_len);
        free(t);
        return js ? json_object_set_new(c->state, "text", js) : -1;
    }
    if (!strcmp(ev->type, "done")) {
        int stopped = proto_event_stopped(ev);
        if (stream)
            return push(c, out, "stream_complete",
                        stopped ? json_pack("{s:b}", "stopped", 1) : json_object());
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        const char *model = proto_str(d, "model");
        if (!model || !*model)
            model = proto_str(c->state, "model");
        int64_t t0 = json_integer_value(json_object_get(c->state, "t0"));
        const char *text = proto_str(c->state, "text");
        json_t *jc = json_object_get(c->state, "conf");
        int rag = (int)json_integer_value(json_object_get(c->state, "rag"));
        stamp(ts);
        json_t *md = meta("llm", now_ms() - t0, model, rag,
                          json_is_number(jc) ? json_number_value(jc) : -1);
        if (md && stopped)
            json_object_set_new(md, "stopped", json_true());
        int rc = push(c, out, "response",
                      json_pack("{s:s, s:o, s:s}", "response", text ? text : "", "metadata",
                                md, "timestamp", ts));
        json_decref(d);
        json_object_del(c->state, "text");
        return rc;
    }
    if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        const char *msg = m ? m : "the answer could not be generated";
        int rc = stream ? push(c, out, "stream_error",
                               json_pack("{s:s, s:s}", "error", msg, "code", code))
                        : push(c, out, "error", error_payload("processing_failed", msg, code));
        free(m);
        json_object_del(c->state, "text");
        return rc;
    }
    return 0;
}

/* ---- client pushes ---- */

/* 1 when model may be asked for: PARLEY_MODEL, or a name of
 * PARLEY_PHOENIX_MODELS (comma list, blanks around names ignored). */
static int model_allowed(const struct parley_config *cfg, const char *model)
{
    if (cfg->model && strcmp(model, cfg->model) == 0)
        return 1;
    const char *p = cfg->phx_models;
    size_t ml = strlen(model);
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t e = n;
        while (e > 0 && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        if (e == ml && e > 0 && strncmp(p, model, ml) == 0)
            return 1;
        p += n;
    }
    return 0;
}

/* A validated query push. */
struct query {
    const char *text;
    const char *model;
    double temperature;
    char *metadata;            /* new JSON text or NULL */
};

/* Checks a query payload into q. 0, or 1 after the refusal was sent (rc
 * in *rc). */
static int valid_query(struct parley_ctx *ctx, struct proto_conn *c, json_t *ref, json_t *p,
                       struct query *q, struct proto_frames *out, int *rc)
{
    const struct parley_config *cfg = ctx->cfg;
    char m[200];
    memset(q, 0, sizeof *q);
    json_t *jq = json_object_get(p, "query");
    if (!json_is_string(jq) || str_blank(json_string_value(jq)) ||
        strlen(json_string_value(jq)) != json_string_length(jq)) {
        *rc = refuse(c, out, ref, PERR_BAD_INPUT, "invalid_query",
                     "\"query\" must be a non-empty string");
        return 1;
    }
    q->text = json_string_value(jq);
    size_t chars = proto_utf8_len(q->text);
    if (chars > (size_t)cfg->max_message_length) {
        snprintf(m, sizeof m, "Query too long: %zu characters (max %d)", chars,
                 cfg->max_message_length);
        *rc = refuse(c, out, ref, PERR_TOO_LONG, "query_too_long", m);
        return 1;
    }
    json_t *jm = json_object_get(p, "model");
    q->model = cfg->model;
    if (jm && !json_is_null(jm)) {
        const char *mn = json_string_value(jm);
        if (!mn || !*mn || strlen(mn) > 100 || !model_allowed(cfg, mn)) {
            const char *shown = mn ? mn : "not a string";
            snprintf(m, sizeof m, "Model not available: %.*s (PARLEY_PHOENIX_MODELS)",
                     utf8_cut(shown, 100), shown);
            *rc = refuse(c, out, ref, PERR_BAD_INPUT, "invalid_model", m);
            return 1;
        }
        q->model = mn;
    }
    json_t *jt = json_object_get(p, "temperature");
    q->temperature = cfg->temperature;
    if (jt && !json_is_null(jt)) {
        double t = json_number_value(jt);
        if (!json_is_number(jt) || !isfinite(t) || t < cfg->phx_temp_min || t > cfg->phx_temp_max) {
            snprintf(m, sizeof m, "\"temperature\" must be a number from %g to %g",
                     cfg->phx_temp_min, cfg->phx_temp_max);
            *rc = refuse(c, out, ref, PERR_BAD_INPUT, "invalid_temperature", m);
            return 1;
        }
        q->temperature = t;
    }
    json_t *jd = json_object_get(p, "metadata");
    if (jd && !json_is_null(jd)) {
        char *md = json_is_object(jd) ? json_dumps(jd, JSON_COMPACT) : NULL;
        if (!md || strlen(md) > MAX_METADATA) {
            free(md);
            snprintf(m, sizeof m, "\"metadata\" must be an object of at most %d bytes",
                     MAX_METADATA);
            *rc = refuse(c, out, ref, PERR_BAD_INPUT, "invalid_metadata", m);
            return 1;
        }
        q->metadata = md;
    }
    return 0;
}

/* Stores one message of the session. 0 / -1. */
static int add_msg(struct parley_ctx *ctx, const char *conv, const char *role, const char *text,
                   const char *metadata, const char *model, int64_t tokens, int64_t ms)
{
    struct message msg;
    store_msg_init(&msg);
    str_copy(msg.conversation_id, sizeof msg.conversation_id, conv);
    str_copy(msg.role, sizeof msg.role, role);
    msg.content = (char *)text;          /* only read */
    msg.metadata = (char *)metadata;
    msg.model = (char *)model;
    msg.tokens = tokens;
    msg.processing_ms = ms;
    return store_msg_add(ctx->db, &msg) < 0 ? -1 : 0;
}

/* query / stream_query. */
static int on_query(struct parley_ctx *ctx, struct proto_conn *c, json_t *ref, json_t *p,
                    int stream, struct proto_frames *out, struct proto_job **jobp)
{
    int64_t t0 = now_ms();
    int rc = 0;
    struct query q;
    if (valid_query(ctx, c, ref, p, &q, out, &rc))
        return rc;
    if (proto_following(c) && c->job_id && json_is_true(json_object_get(c->state, "replay"))) {
        c->channel[0] = '\0';             /* the replay of a failed answer ends here */
        c->job_id = 0;
    }
    json_object_del(c->state, "replay");
    if (proto_following(c) && c->job_id) {
        free(q.metadata);
        return refuse(c, out, ref, PERR_CONFLICT, "busy",
                      "A response is still being generated; wait for it to finish");
    }
    int ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        free(q.metadata);
        return ok < 0 ? db_refuse(ctx, c, out, ref)
                      : refuse(c, out, ref, PERR_RATE_LIMITED, "rate_limited", "Rate limit exceeded");
    }
    struct proto_job *job = proto_job_new();
    char *norm = job ? answer_key_query(&job->ans, q.text, q.model, q.temperature) : NULL;
    const char *knorm = norm ? proto_job_keep(job, norm) : NULL;
    const char *kquery = job ? proto_job_keep(job, q.text) : NULL;
    const char *kmodel = job ? proto_job_keep(job, q.model) : NULL;
    const char *kconv = job ? proto_job_keep(job, c->param) : NULL;
    free(norm);
    if (!knorm || !kquery || !kmodel || !kconv) {
        proto_job_free(job);
        free(q.metadata);
        refuse(c, out, ref, PERR_INTERNAL, "processing_failed", "Out of memory");
        return -1;
    }
    job->ans.query_norm = knorm;
    job->ans.model = kmodel;
    const char *system;
    int rag;
    double conf;
    /* PHX_SYSTEM, or grounded in the knowledge base (PARLEY_KB_PHOENIX) */
    if (proto_job_ground(ctx, job, ctx->cfg->kb_phoenix, PHX_SYSTEM, kquery, &system, &rag,
                         &conf) < 0) {
        proto_job_free(job);
        free(q.metadata);
        return db_refuse(ctx, c, out, ref);
    }

    /* the user message first: history shows the question either way */
    int stored = add_msg(ctx, c->param, "user", q.text, q.metadata, NULL, -1, -1);
    free(q.metadata);
    if (stored < 0) {
        proto_job_free(job);
        return db_refuse(ctx, c, out, ref);
    }
    char *cached = NULL, *cmodel = NULL;
    int64_t ctokens = -1;
    int r = store_answer_get(ctx->db, job->ans.key, &cached, &ctokens, &cmodel);
    if (r == STORE_ERR) {
        proto_job_free(job);
        return db_refuse(ctx, c, out, ref);
    }
    if (r == STORE_OK) {
        stats_cache_hit(ctx->db, job->ans.key);   /* the admin page's hit rate; best effort */
        const char *model = cmodel && *cmodel ? cmodel : kmodel;
        int64_t ms = now_ms() - t0;
        char ts[32];
        stamp(ts);
        if (add_msg(ctx, c->param, "assistant", cached, "{\"source\":\"cache\"}", model, ctokens,
                    ms) < 0) {
            free(cached);
            free(cmodel);
            proto_job_free(job);
            return db_refuse(ctx, c, out, ref);
        }
        if (reply(c, out, ref, "ok", NULL) < 0)
            rc = -1;
        else if (stream)
            rc = push(c, out, "stream_start", json_pack("{s:s, s:s}", "query", q.text,
                                                        "timestamp", ts)) < 0 ||
                 push(c, out, "stream_token", json_pack("{s:s}", "token", cached)) < 0 ||
                 push(c, out, "stream_complete", json_object()) < 0 ? -1 : 0;
        else
            rc = push(c, out, "response", json_pack("{s:s, s:o, s:s}", "response", cached,
                                                    "metadata", meta("cache", ms, model, rag, conf),
                                                    "timestamp", ts));
        free(cached);
        free(cmodel);
        proto_job_free(job);
        return rc;
    }

    char why[160];                         /* not cached: the upstream would answer */
    int bok = proto_budget_ok(ctx, c, why, sizeof why);
    if (bok <= 0) {
        proto_job_free(job);
        return bok < 0 ? db_refuse(ctx, c, out, ref)
                       : refuse(c, out, ref, PERR_BUDGET_EXHAUSTED, "budget_exhausted", why);
    }
    snprintf(job->channel, sizeof job->channel, "conv:%s", c->param);
    job->req.channel = job->channel;
    job->req.prompt_key = job->ans.key;
    job->req.conversation_id = kconv;
    job->req.llm.prompt = kquery;
    job->req.llm.system = system;
    job->req.llm.model = kmodel;
    job->req.llm.temperature = q.temperature;
    job->req.cache = &job->ans;
    if (proto_start(ctx, c, job, jobp) < 0)
        return db_refuse(ctx, c, out, ref);
    json_object_set_new(c->state, "mode", json_string(stream ? "stream" : "query"));
    json_object_set_new(c->state, "query", json_string(kquery ? q.text : ""));
    json_object_set_new(c->state, "model", json_string(q.model));
    json_object_set_new(c->state, "t0", json_integer(t0));
    json_object_set_new(c->state, "rag", json_integer(rag));
    if (conf >= 0)
        json_object_set_new(c->state, "conf", json_real(conf));
    else
        json_object_del(c->state, "conf");
    json_object_del(c->state, "text");
    return reply(c, out, ref, "ok", NULL);
}

static int on_history(struct parley_ctx *ctx, struct proto_conn *c, json_t *ref,
                      struct proto_frames *out)
{
    struct message *m = NULL;
    int n = 0;
    int64_t total = 0;
    if (store_msg_list(ctx->db, c->param, HISTORY_MAX, 0, &m, &n, &total) < 0)
        return db_refuse(ctx, c, out, ref);
    if (total > HISTORY_MAX) {          /* the newest HISTORY_MAX */
        store_msgs_free(m, n);
        m = NULL;
        if (store_msg_list(ctx->db, c->param, HISTORY_MAX, (int)(total - HISTORY_MAX), &m, &n,
                           &total) < 0)
            return db_refuse(ctx, c, out, ref);
    }
    json_t *arr = json_array();
    for (int i = 0; i < n && arr; i++) {
        char ts[32];
        proto_timestamp(ts, m[i].created_at, 0);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "role", m[i].role, "content",
                                             m[i].content ? m[i].content : "", "timestamp", ts));
    }
    store_msgs_free(m, n);
    if (!arr)
        return -1;
    if (reply(c, out, ref, "ok", NULL) < 0)
        return -1;
    return push(c, out, "history", json_pack("{s:o}", "messages", arr));
}

/* msg: {"ref": ..., "event": "...", "payload": ...} as core/phx.c builds it. */
static int phx_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                       struct proto_frames *out, struct proto_job **jobp)
{
    json_t *ref = json_object_get(msg, "ref");
    const char *event = proto_str(msg, "event");
    json_t *p = json_object_get(msg, "payload");
    if (!event)
        return refuse(c, out, ref, PERR_BAD_INPUT, "invalid_message", "Not a Phoenix push");
    if (!strcmp(event, "ping")) {
        char ts[32];
        stamp(ts);
        if (reply(c, out, ref, "ok", NULL) < 0)
            return -1;
        return push(c, out, "pong", json_pack("{s:s}", "timestamp", ts));
    }
    if (!strcmp(event, "get_history"))
        return on_history(ctx, c, ref, out);
    if (!strcmp(event, "stop")) {
        char chan[200];
        snprintf(chan, sizeof chan, "conv:%s", c->param);
        enum perr kind;
        const char *m;
        int rc = proto_stop(ctx, c, chan, 0, &kind, &m);
        if (rc == JOBS_STOP_OK)
            return reply(c, out, ref, "ok", NULL);
        const char *reason = rc == JOBS_STOP_NONE ? "not_running"
                           : rc == JOBS_STOP_OVER ? "already_finished"
                           : rc == JOBS_STOP_FOREIGN ? "forbidden" : "processing_failed";
        if (push(c, out, "error", error_payload(reason, m, perr_code(kind))) < 0 ||
            reply(c, out, ref, "error", error_payload(reason, m, perr_code(kind))) < 0)
            return -1;
        return rc == JOBS_STOP_ERR ? -1 : 0;
    }
    int stream = !strcmp(event, "stream_query");
    if (stream || !strcmp(event, "query")) {
        if (!json_is_object(p))
            return refuse(c, out, ref, PERR_BAD_INPUT, "invalid_payload",
                          "The payload must be an object {\"query\": \"...\"}");
        return on_query(ctx, c, ref, p, stream, out, jobp);
    }
    char m[160];
    snprintf(m, sizeof m, "Unknown event \"%.*s\"", utf8_cut(event, 60), event);
    return refuse(c, out, ref, PERR_BAD_INPUT, "unknown_event", m);
}

const struct proto_ops proto_phoenix_ops = { "phoenix", phx_open, phx_message, phx_event };
