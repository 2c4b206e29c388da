/* proto_chat.c — seed 001: chat sessions, WS /ws/{session_id}?token=JWT.
 *
 *   server, first:  {"type":"connected","session_id","user_id","timestamp"}
 *   client:         {"type":"message","content":"...","metadata":{},"timestamp":...}
 *                   {"type":"ping"}  ->  {"type":"pong","timestamp"}
 *   server:         {"type":"stream_start","message_id"}
 *                   {"type":"stream_chunk","content","message_id"}...
 *                   {"type":"stream_end","message_id","metadata":{"tokens_used",
 *                    "processing_time","agent_used","model"}}
 *                   {"type":"error","message","code"[,"message_id"]}
 *                   (code: docs/errors.md)
 *   client:         {"type":"message",...,"stream":false}: no stream_*
 *                   frames for that answer but, at its end, the seed's
 *                   process_message result as it is (no "type"):
 *                   {"message_id","content","stream":false,"chunks":[the
 *                    words in groups of 50],"metadata":{as stream_end}}
 *                   (state "unstreamed_job": that answer's job id)
 *   client:         {"type":"stop"[,"message_id"]}: stops the session's
 *                   generation (the one with that assistant message id);
 *                   every viewer gets stream_end with "metadata.stopped":
 *                   true, the partial answer is stored with metadata
 *                   {"stopped": true} (docs/stop.md); a refused stop is
 *                   {"type":"error","message","code"[,"message_id"]}
 * The session is a conversation (store.h; created as kind 'chat' on first
 * use) owned by the JWT's sub: another user's session is "Session not
 * found" and the connection closes with 4404; a closed one closes with
 * 4410. Each user message is stored, then one job runs on channel
 * "conv:<session id>" (prompt key = the user message's id) with the
 * session's last PARLEY_CONTEXT_MESSAGES messages as context; the runner
 * stores the assistant message in the same transaction as "done".
 * A client that (re)connects while a generation runs follows it from its
 * start, or from ?after=N.
 * State (c->state, beside proto.c's "resume_after"): "message_id" and
 * "message_job", the assistant message id of the job being streamed, so
 * every chunk carries it, also after a resume or a save/load.
 * Runs in the thread that drives the connection (proto.h).
 */
#include "proto_impl.h"
#include "ident.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLOSE_NOT_FOUND 4404
#define CLOSE_CLOSED 4410
#define CLOSE_DB_ERROR 1011
#define MAX_METADATA 8192          /* bytes of a client message's metadata JSON */
#define DB_ERROR_MSG "Database error: please try again"

/* The protocol's error frame; records the failure's kind on c (c NULL:
 * a generation's error event, not a failure of the client's request). */
static int error_frame(struct proto_conn *c, struct proto_frames *out, enum perr kind,
                       const char *msg)
{
    if (c)
        proto_fail(c, kind, msg);
    return frames_push(out, json_pack("{s:s, s:s, s:s}", "type", "error", "message", msg, "code",
                                      perr_code(kind)));
}

static void close_with(struct proto_conn *c, int code, const char *reason)
{
    c->close = 1;
    c->close_code = code;
    str_copy(c->close_reason, sizeof c->close_reason, reason);
}

/* Session ids become conversation ids (at most 63 bytes): letters, digits
 * and - _ . only, so they are safe in channel names and logs. */
static int valid_session_id(const char *id)
{
    return ident_name_valid(id, sizeof ((struct conversation *)0)->id - 1);
}

/* Loads the session for c (creating it when create is set and it does not
 * exist). 0 usable (conv filled: store_conv_free it); 1 refused: an error
 * frame was added and the connection is to close; -1 database error (an
 * error frame was added). */
static int session_load(struct parley_ctx *ctx, struct proto_conn *c, int create,
                        const struct proto_client *cl, struct conversation *conv,
                        struct proto_frames *out)
{
    int r = store_conv_get(ctx->db, c->param, NULL, conv);
    if (r == 1 && create) {
        memset(conv, 0, sizeof *conv);
        str_copy(conv->id, sizeof conv->id, c->param);
        str_copy(conv->owner, sizeof conv->owner, c->user);
        str_copy(conv->kind, sizeof conv->kind, "chat");
        conv->project_id = cl && cl->project_id && *cl->project_id ? (char *)cl->project_id : NULL;
        r = store_conv_create(ctx->db, conv);
        conv->project_id = NULL;                     /* was borrowed */
        if (r == 2)        /* someone created it meanwhile: whose is it? */
            r = store_conv_get(ctx->db, c->param, NULL, conv);
    }
    if (r < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (r == 1 || strcmp(conv->owner, c->user) != 0) {
        store_conv_free(conv);
        close_with(c, CLOSE_NOT_FOUND, "session not found");
        return error_frame(c, out, PERR_NOT_FOUND, "Session not found") < 0 ? -1 : 1;
    }
    if (!strcmp(conv->status, "closed")) {
        store_conv_free(conv);
        close_with(c, CLOSE_CLOSED, "session closed");
        return error_frame(c, out, PERR_CONFLICT, "Session is closed") < 0 ? -1 : 1;
    }
    return 0;
}

/* ---- session activity and metadata (seed 001's ChatSession) ---- */

/* A client's project id: 1-64 letters, digits, '-', '_' or '.' (a
 * MongoDB ObjectId's 24 hex digits fit). */
static int valid_project_id(const char *p)
{
    return ident_name_valid(p, 64);
}

/* The session's metadata (old: its JSON text) with what the transport
 * knows of this connection: user_agent, ip_address, client_version, each
 * kept from before when unknown now and "" when never known (new string;
 * NULL out of memory). */
static char *client_metadata(const char *old, const struct proto_client *cl)
{
    json_t *m = old ? json_loads(old, 0, NULL) : NULL;
    if (!json_is_object(m)) {
        json_decref(m);
        m = json_object();
    }
    const char *keys[3] = { "user_agent", "ip_address", "client_version" };
    const char *vals[3] = { cl ? cl->user_agent : NULL, cl ? cl->ip : NULL,
                            cl ? cl->client_version : NULL };
    const size_t caps[3] = { 512, 64, 128 };
    for (int i = 0; m && i < 3; i++) {
        if (vals[i] && *vals[i])
            json_object_set_new(m, keys[i], json_stringn(vals[i], utf8_cut(vals[i], caps[i])));
        else if (!json_is_string(json_object_get(m, keys[i])))
            json_object_set_new(m, keys[i], json_string(""));
    }
    char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    return s;
}

/* Records activity on c's session (status back to active, last_activity
 * now): always when force, else at most every TOUCH_EVERY_MS per
 * connection. A failure is only logged: activity is bookkeeping, never a
 * reason to refuse the client. */
#define TOUCH_EVERY_MS 30000
static void touch(struct parley_ctx *ctx, struct proto_conn *c, int force)
{
    int64_t now = now_ms();
    json_t *t = json_object_get(c->state, "touched_at");
    if (!force && json_is_integer(t) && now - json_integer_value(t) < TOUCH_EVERY_MS &&
        now >= json_integer_value(t))
        return;
    if (store_conv_touch(ctx->db, c->param, NULL) < 0)
        fprintf(stderr, "parley: session %s: cannot record its activity: %s\n", c->param,
                db_err_text(ctx->db, "database error"));
    else
        json_object_set_new(c->state, "touched_at", json_integer(now));
}

/* ---- the queue: one answer at a time, in order (sql 008) ---- */

static void chat_on_end(struct parley_ctx *ctx, const struct proto_job *ended);
static const char *preferred_model(struct proto_job *job, const char *settings);

/* The job answering queued message msg_id of conv (NULL on failure). */
static struct proto_job *turn_job(struct parley_ctx *ctx, const struct conversation *conv,
                                  const char *msg_id)
{
    struct proto_job *job = proto_job_new();
    if (!job || proto_job_conversation(ctx, job, conv->id, msg_id) < 0 ||
        uuid_v4(job->message_id) < 0) {
        proto_job_free(job);
        return NULL;
    }
    job->req.message_id = job->message_id;
    job->req.llm.model = preferred_model(job, conv->settings);
    job->req.user = proto_job_keep(job, conv->owner);
    job->on_end = chat_on_end;
    return job;
}

enum { NEXT_NONE = 0, NEXT_BUSY = 1, NEXT_OWNED = 2 };
/* Starts the answer to conv's oldest queued message unless an answer runs:
 * NEXT_OWNED with *jobp (claimed; the caller submits it), NEXT_BUSY with
 * *running / *first (the running job and where it starts), NEXT_NONE when
 * nothing is queued, -1 on a database error. */
static int chat_next(struct parley_ctx *ctx, const struct conversation *conv,
                     struct proto_job **jobp, int64_t *running, int64_t *first)
{
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", conv->id);
    *jobp = NULL;
    for (int tries = 0; tries < 8; tries++) {
        int r = jobs_running_on(ctx->db, chan, running, first);   /* cheap: no context read */
        if (r < 0)
            return -1;
        if (r == 0)
            return NEXT_BUSY;
        char next[64];
        if (store_msg_queued(ctx->db, conv->id, next, NULL) < 0)
            return -1;
        if (!next[0])
            return NEXT_NONE;
        struct proto_job *job = turn_job(ctx, conv, next);
        if (!job)
            return -1;
        char err[256];
        int rc = jobs_claim_turn(ctx->db, ctx->bell, chan, conv->id, next, conv->owner,
                                 ctx->cfg->lease_ms, &job->claim, err, sizeof err);
        if (rc == JOBS_TURN_OK) {
            *jobp = job;
            return NEXT_OWNED;
        }
        *running = job->claim.job_id;
        *first = job->claim.first_seq;
        proto_job_free(job);
        if (rc == JOBS_TURN_BUSY)
            return NEXT_BUSY;
        if (rc == JOBS_TURN_EMPTY)
            return NEXT_NONE;
        if (rc < 0) {
            fprintf(stderr, "parley: %s\n", err);
            return -1;
        }
        /* JOBS_TURN_MOVED: someone took it meanwhile; read the queue again */
    }
    return NEXT_NONE;
}

/* Starts the next answer of session id (when none runs and one is queued)
 * and hands it to this process's generation loop. For the loop's end hook
 * and for connections that notice a stalled queue; c (may be NULL) then
 * follows the new job. 0, or -1 on a database error. */
static int chat_kick(struct parley_ctx *ctx, struct proto_conn *c, const char *id)
{
    struct conversation conv;
    int g = store_conv_get(ctx->db, id, NULL, &conv);
    if (g != 0)
        return g < 0 ? -1 : 0;
    int rc = 0;
    if (strcmp(conv.status, "closed") != 0) {
        struct proto_job *job = NULL;
        int64_t rj = 0, rf = 0;
        int r = chat_next(ctx, &conv, &job, &rj, &rf);
        if (r == NEXT_OWNED) {
            if (c && !proto_following(c))
                proto_follow(c, job->channel, job->claim.job_id, job->claim.first_seq);
            proto_job_submit(ctx, job);       /* takes it, even when it fails */
        }
        rc = r < 0 ? -1 : 0;
    }
    store_conv_free(&conv);
    return rc;
}

/* proto_job.on_end of every seed 001 answer: the next queued message. */
static void chat_on_end(struct parley_ctx *ctx, const struct proto_job *ended)
{
    if (ended->req.conversation_id && chat_kick(ctx, NULL, ended->req.conversation_id) < 0)
        fprintf(stderr, "parley: session %s: cannot start its next queued message: %s\n",
                ended->req.conversation_id, db_err_text(ctx->db, "database error"));
}

/* Appends id to the string array `key` of c's state, keeping at most max
 * (the oldest go first). */
static void state_list_add(struct proto_conn *c, const char *key, const char *id, size_t max)
{
    json_t *a = json_object_get(c->state, key);
    if (!json_is_array(a)) {
        a = json_array();
        json_object_set_new(c->state, key, a);
    }
    json_array_append_new(a, json_string(id));
    while (json_array_size(a) > max)
        json_array_remove(a, 0);
}

/* Removes id from the string array `key` of c's state: 1 when it was there. */
static int state_list_take(struct proto_conn *c, const char *key, const char *id)
{
    json_t *a = json_object_get(c->state, key);
    for (size_t i = 0; id && i < json_array_size(a); i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v && !strcmp(v, id)) {
            json_array_remove(a, i);
            if (!json_array_size(a))
                json_object_del(c->state, key);
            return 1;
        }
    }
    return 0;
}

static int chat_open(struct parley_ctx *ctx, struct proto_conn *c, const struct proto_client *cl,
                     struct proto_frames *out)
{
    if (!valid_session_id(c->param)) {
        close_with(c, 1008, "invalid session id");
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid session id: use 1-63 letters, digits, '-', '_' or '.'");
    }
    if (cl && cl->project_id && !valid_project_id(cl->project_id)) {
        close_with(c, 1008, "invalid project id");
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid project_id: use 1-64 letters, digits, '-', '_' or '.'");
    }
    struct conversation conv;
    int r = session_load(ctx, c, 1, cl, &conv, out);
    if (r < 0)
        close_with(c, CLOSE_DB_ERROR, "database error");
    if (r != 0)
        return r < 0 ? -1 : 0;
    /* a (re)connection: the session is active again, with this client's metadata */
    char *meta = client_metadata(conv.metadata, cl);
    if (meta && store_conv_touch(ctx->db, c->param, meta) == 0)
        json_object_set_new(c->state, "touched_at", json_integer(now_ms()));
    free(meta);
    store_conv_free(&conv);

    char ts[32];
    proto_timestamp(ts, now_ms(), 0);
    if (frames_push(out, json_pack("{s:s, s:s, s:s, s:s}", "type", "connected",
                                   "session_id", c->param, "user_id", c->user,
                                   "timestamp", ts)) < 0)
        return -1;

    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", c->param);
    json_t *ra = json_object_get(c->state, "resume_after");
    json_int_t after = json_is_integer(ra) ? json_integer_value(ra) : -1;
    if (after >= 0) {
        proto_follow(c, chan, 0, after);      /* the client says where it was */
        return 0;
    }
    int64_t job_id, first_seq;
    r = jobs_running_on(ctx->db, chan, &job_id, &first_seq);   /* the newest, as everywhere */
    if (r < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (r == 0) {
        proto_follow(c, chan, job_id, first_seq);   /* a reconnect: the answer so far */
        return 0;
    }
    /* nothing runs: messages queued before a crash are answered now */
    int64_t queued = 0;
    if (store_msg_queued(ctx->db, c->param, NULL, &queued) == 0 && queued > 0 &&
        chat_kick(ctx, c, c->param) < 0)
        fprintf(stderr, "parley: session %s: cannot start its queued messages\n", c->param);
    return 0;
}

/* ---- the assistant message id of a job ---- */

static char *data_message_id(const struct evlog_event *ev)
{
    json_t *o = json_loadb(ev->data, ev->data_len, 0, NULL);
    const char *m = proto_str(o, "message_id");
    char *s = m && *m ? strdup(m) : NULL;
    json_decref(o);
    return s;
}

/* Reads the message id from the job's "start" event (new string or NULL). */
static char *start_event_message_id(struct parley_ctx *ctx, const char *channel, int64_t job_id)
{
    struct job_info ji;
    if (jobs_get(ctx->db, job_id, &ji) != 0)
        return NULL;
    struct evlog_event *ev = NULL;
    int n = evlog_read(ctx->db, channel, ji.first_seq, 64, &ev);
    char *mid = NULL;
    for (int i = 0; i < n && !mid; i++)
        if (ev[i].job_id == job_id && !strcmp(ev[i].type, "start"))
            mid = data_message_id(&ev[i]);
    evlog_free(ev, n);
    return mid;
}

/* The assistant message id of ev's job (borrowed from c->state; NULL when
 * it cannot be known, e.g. the start event was compacted away). */
static const char *message_id_of(struct parley_ctx *ctx, struct proto_conn *c,
                                 const struct evlog_event *ev)
{
    json_t *jid = json_object_get(c->state, "message_id");
    if (json_is_string(jid) &&
        json_integer_value(json_object_get(c->state, "message_job")) == ev->job_id)
        return json_string_value(jid);
    char *mid = NULL;
    if (!strcmp(ev->type, "start") || !strcmp(ev->type, "done"))
        mid = data_message_id(ev);
    if (!mid && ev->job_id > 0)
        mid = start_event_message_id(ctx, c->channel, ev->job_id);
    if (!mid)
        return NULL;
    json_object_set_new(c->state, "message_id", json_string(mid));
    json_object_set_new(c->state, "message_job", json_integer(ev->job_id));
    free(mid);
    return proto_str(c->state, "message_id");
}

/* ---- "stream": false: one answer frame ---- */

/* 1 when ev's job answers a message sent with "stream": false. */
static int unstreamed(const struct proto_conn *c, const struct evlog_event *ev)
{
    json_t *j = json_object_get(c->state, "unstreamed_job");
    return ev->job_id > 0 && json_is_integer(j) && json_integer_value(j) == ev->job_id;
}

/* The whole text of job_id on channel: its token events concatenated
 * (new string, "" when it has none; NULL on a database error or OOM). */
static char *job_text(struct parley_ctx *ctx, const char *channel, int64_t job_id)
{
    struct job_info ji;
    if (jobs_get(ctx->db, job_id, &ji) != 0)
        return NULL;
    size_t len = 0, cap = 256;
    char *text = malloc(cap);
    if (!text)
        return NULL;
    text[0] = '\0';
    int64_t after = ji.first_seq;
    for (int over = 0; !over;) {
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, channel, after, 256, &ev);
        if (n < 0) {
            free(text);
            return NULL;
        }
        if (n == 0)
            over = 1;
        for (int i = 0; i < n && !over; i++) {
            after = ev[i].seq;
            if (ev[i].job_id != job_id)
                continue;
            if (!strcmp(ev[i].type, "done") || !strcmp(ev[i].type, "error")) {
                over = 1;
            } else if (!strcmp(ev[i].type, "token")) {
                if (len + ev[i].data_len + 1 > cap) {
                    while (len + ev[i].data_len + 1 > cap)
                        cap *= 2;
                    char *t = realloc(text, cap);
                    if (!t) {
                        evlog_free(ev, n);
                        free(text);
                        return NULL;
                    }
                    text = t;
                }
                memcpy(text + len, ev[i].data, ev[i].data_len);
                len += ev[i].data_len;
                text[len] = '\0';
            }
        }
        evlog_free(ev, n);
    }
    return text;
}

/* The seed's chunk_response: content's words (split on white space) in
 * groups of 50, each group joined by one space (new array; NULL on OOM). */
static json_t *word_chunks(const char *content)
{
    static const char ws[] = " \t\n\r\f\v";
    json_t *a = json_array();
    char *buf = malloc(strlen(content) + 1);
    const char *p = content;
    while (a && buf) {
        size_t len = 0;
        int words = 0;
        for (; words < 50; words++) {
            p += strspn(p, ws);
            if (!*p)
                break;
            size_t w = strcspn(p, ws);
            if (len)
                buf[len++] = ' ';
            memcpy(buf + len, p, w);
            len += w;
            p += w;
        }
        if (!words)
            break;
        if (json_array_append_new(a, json_stringn(buf, len)) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    if (!buf) {
        json_decref(a);
        a = NULL;
    }
    free(buf);
    return a;
}

/* The start event of a queued message's answer: which of this
 * connection's messages it answers ("reply_to", runner.c) — no longer
 * waited for; answered with one frame when it was sent "stream": false. */
static void chat_started(struct proto_conn *c, const struct evlog_event *ev)
{
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    const char *to = proto_str(d, "reply_to");
    if (to) {
        state_list_take(c, "waiting", to);
        if (state_list_take(c, "unstreamed", to))
            json_object_set_new(c->state, "unstreamed_job", json_integer(ev->job_id));
    }
    json_decref(d);
}

/* At the end of an answer: keep following the session while this
 * connection waits for more answers or messages are queued (c->follow_next,
 * proto_event), and start the next one if its owner could not (a worker
 * that died; normally the generation loop's end hook already did). */
static int chat_ended(struct parley_ctx *ctx, struct proto_conn *c)
{
    int64_t queued = 0;
    if (store_msg_queued(ctx->db, c->param, NULL, &queued) < 0)
        return -1;
    if (queued > 0 || json_array_size(json_object_get(c->state, "waiting")) > 0)
        c->follow_next = 1;
    if (queued > 0 && chat_kick(ctx, NULL, c->param) < 0)
        return -1;
    return 0;
}

static int chat_event(struct parley_ctx *ctx, struct proto_conn *c,
                      const struct evlog_event *ev, struct proto_frames *out)
{
    if (!strcmp(ev->type, "start"))
        chat_started(c, ev);
    const char *mid = message_id_of(ctx, c, ev);
    json_t *jm = mid ? json_string(mid) : json_null();
    json_t *o = NULL;
    int quiet = unstreamed(c, ev);
    if (quiet && (!strcmp(ev->type, "start") || !strcmp(ev->type, "token"))) {
        json_decref(jm);              /* "stream": false: only the answer frame */
        return 0;
    }
    if (!strcmp(ev->type, "start")) {
        o = json_pack("{s:s, s:o}", "type", "stream_start", "message_id", jm);
    } else if (!strcmp(ev->type, "token")) {
        o = json_pack("{s:s, s:s%, s:o}", "type", "stream_chunk",
                      "content", ev->data, ev->data_len, "message_id", jm);
    } else if (!strcmp(ev->type, "done")) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        const char *model = proto_str(d, "model");
        json_int_t ms = json_integer_value(json_object_get(d, "processing_ms"));
        o = json_pack("{s:s, s:o, s:{s:I, s:f, s:s, s:s}}", "type", "stream_end",
                      "message_id", jm, "metadata",
                      "tokens_used", json_integer_value(json_object_get(d, "tokens")),
                      "processing_time", (double)ms / 1000.0,
                      "agent_used", model ? model : "", "model", model ? model : "");
        if (o && json_is_true(json_object_get(d, "stopped")))
            json_object_set_new(json_object_get(o, "metadata"), "stopped", json_true());
        json_decref(d);
        if (o && quiet) {
            /* the seed's process_message result, sent as it is */
            char *text = job_text(ctx, c->channel, ev->job_id);
            json_t *chunks = text ? word_chunks(text) : NULL;
            json_t *a = text && chunks
                ? json_pack("{s:O, s:s, s:b, s:o, s:O}", "message_id", json_object_get(o, "message_id"),
                            "content", text, "stream", 0, "chunks", chunks,
                            "metadata", json_object_get(o, "metadata"))
                : NULL;
            free(text);
            json_decref(o);
            if (!a)
                return -1;
            o = a;
        }
    } else if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        o = json_pack("{s:s, s:s, s:o, s:s}", "type", "error", "message",
                      m ? m : "the answer could not be generated", "message_id", jm, "code", code);
        free(m);
    } else {
        json_decref(jm);
        return 0;
    }
    if (frames_push(out, proto_with_seq(c, ev, o)) < 0)
        return -1;
    if ((!strcmp(ev->type, "done") || !strcmp(ev->type, "error")) && chat_ended(ctx, c) < 0)
        fprintf(stderr, "parley: session %s: cannot read its queue: %s\n", c->param,
                db_err_text(ctx->db, "database error"));
    return 0;
}

/* ---- stop ---- */

static int chat_stop(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                     struct proto_frames *out)
{
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", c->param);
    json_t *jm = json_object_get(msg, "message_id");
    if (jm && !json_is_null(jm) && !json_is_string(jm))
        return error_frame(c, out, PERR_BAD_INPUT,
                           "Invalid message format: \"message_id\" must be a string");
    const char *want = json_string_value(jm);
    int64_t job_id = 0;
    if (want && *want) {
        /* the message this connection streams (or streamed last) ... */
        const char *mine = proto_str(c->state, "message_id");
        if (mine && !strcmp(mine, want))
            job_id = json_integer_value(json_object_get(c->state, "message_job"));
        if (job_id <= 0) {
            /* ... or the one the session's running generation streams */
            int64_t rj, first;
            int r = jobs_running_on(ctx->db, chan, &rj, &first);
            if (r < 0) {
                error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
                return -1;
            }
            char *mid = r == 0 ? start_event_message_id(ctx, chan, rj) : NULL;
            if (mid && !strcmp(mid, want))
                job_id = rj;
            free(mid);
        }
        if (job_id <= 0)
            return frames_push(out, json_pack("{s:s, s:s, s:s, s:s}", "type", "error", "message",
                                              PROTO_STOP_NONE_MSG, "message_id", want, "code",
                                              perr_code(PERR_NOT_FOUND))) < 0
                   ? -1 : proto_fail(c, PERR_NOT_FOUND, PROTO_STOP_NONE_MSG);
    }
    enum perr kind;
    const char *m;
    int rc = proto_stop(ctx, c, chan, job_id, &kind, &m);
    if (rc == JOBS_STOP_OK)
        return 0;                   /* stream_end marked stopped follows */
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "message", m, "code",
                          perr_code(kind));
    if (o && want)
        json_object_set_new(o, "message_id", json_string(want));
    if (frames_push(out, o) < 0)
        return -1;
    return rc == JOBS_STOP_ERR ? -1 : 0;
}

/* ---- client messages ---- */

/* The session's preferred model (settings.model_preference), kept by job. */
static const char *preferred_model(struct proto_job *job, const char *settings)
{
    json_t *s = settings ? json_loads(settings, 0, NULL) : NULL;
    const char *m = proto_str(s, "model_preference");
    const char *kept = m && *m && strlen(m) < 128 ? proto_job_keep(job, m) : NULL;
    json_decref(s);
    return kept;
}

/* Validates a "message" frame; returns the content or NULL after adding
 * the error frame (*rc = its result). *meta: new metadata JSON text or NULL. */
static const char *valid_content(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg, char **meta,
                                 struct proto_frames *out, int *rc)
{
    char m[160];
    *meta = NULL;
    json_t *jc = json_object_get(msg, "content");
    const char *content = json_string_value(jc);
    if (!jc || json_is_null(jc)) {
        *rc = error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: missing \"content\"");
        return NULL;
    }
    if (!content) {
        *rc = error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: \"content\" must be a string");
        return NULL;
    }
    if (strlen(content) != json_string_length(jc)) {
        *rc = error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: \"content\" contains a NUL character");
        return NULL;
    }
    if (str_blank(content)) {
        *rc = error_frame(c, out, PERR_BAD_INPUT, "Message content is empty");
        return NULL;
    }
    if (proto_utf8_len(content) > (size_t)ctx->cfg->max_message_length) {
        snprintf(m, sizeof m, "Message too long (max %d characters)", ctx->cfg->max_message_length);
        *rc = error_frame(c, out, PERR_TOO_LONG, m);
        return NULL;
    }
    json_t *jm = json_object_get(msg, "metadata");
    if (jm && !json_is_null(jm)) {
        if (!json_is_object(jm)) {
            *rc = error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: \"metadata\" must be an object");
            return NULL;
        }
        *meta = json_dumps(jm, JSON_COMPACT);
        if (!*meta) {
            *rc = -1;
            return NULL;
        }
        if (strlen(*meta) > MAX_METADATA) {
            free(*meta);
            *meta = NULL;
            snprintf(m, sizeof m, "Message metadata too large (max %d bytes)", MAX_METADATA);
            *rc = error_frame(c, out, PERR_BAD_INPUT, m);
            return NULL;
        }
    }
    return content;
}

/* Stores the user message as queued and starts the session's next answer
 * when none runs (that is this message's unless older ones wait); the
 * connection follows the running answer and, through chat_ended, the
 * following ones until its own has started. */
static int queue_answer(struct parley_ctx *ctx, struct proto_conn *c, const char *content,
                        const char *meta, int unstreamed, const struct conversation *conv,
                        struct proto_frames *out, struct proto_job **jobp)
{
    struct message um;
    store_msg_init(&um);
    str_copy(um.conversation_id, sizeof um.conversation_id, conv->id);
    str_copy(um.role, sizeof um.role, "user");
    um.content = (char *)content;         /* only read */
    um.metadata = (char *)meta;
    um.queued = 1;
    if (store_msg_add(ctx->db, &um) < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    size_t keep = (size_t)ctx->cfg->chat_queue + 2;
    state_list_add(c, "waiting", um.id, keep);
    if (unstreamed)
        state_list_add(c, "unstreamed", um.id, keep);
    struct proto_job *job = NULL;
    int64_t rj = 0, rf = 0;
    int r = chat_next(ctx, conv, &job, &rj, &rf);
    if (r < 0) {
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    /* a connection already following the session keeps its place (the
     * end of what it follows leads on, chat_ended); else it follows now */
    if (r == NEXT_OWNED) {
        if (!proto_following(c)) {
            proto_follow(c, job->channel, job->claim.job_id, job->claim.first_seq);
            /* its chunks carry this id from the first one on */
            json_object_set_new(c->state, "message_id", json_string(job->message_id));
            json_object_set_new(c->state, "message_job", json_integer(job->claim.job_id));
        }
        *jobp = job;
    } else if (r == NEXT_BUSY && !proto_following(c)) {
        char chan[200];
        snprintf(chan, sizeof chan, "conv:%s", conv->id);
        proto_follow(c, chan, rj, rf);
    }
    return 0;
}

static int chat_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                        struct proto_frames *out, struct proto_job **jobp)
{
    if (!msg)
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: not valid JSON");
    if (!json_is_object(msg))
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: expected a JSON object");
    json_t *jt = json_object_get(msg, "type");
    if (!jt)
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: missing \"type\"");
    const char *type = json_string_value(jt);
    if (!type)
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: \"type\" must be a string");
    touch(ctx, c, 0);                          /* any frame is activity */
    if (!strcmp(type, "ping")) {
        char ts[32];
        proto_timestamp(ts, now_ms(), 0);
        return frames_push(out, json_pack("{s:s, s:s}", "type", "pong", "timestamp", ts));
    }
    if (!strcmp(type, "stop"))
        return chat_stop(ctx, c, msg, out);
    if (strcmp(type, "message") != 0) {
        char m[128];
        snprintf(m, sizeof m, "Unknown message type '%.*s'", utf8_cut(type, 40), type);
        return error_frame(c, out, PERR_BAD_INPUT, m);
    }

    json_t *js = json_object_get(msg, "stream");
    if (js && !json_is_null(js) && !json_is_boolean(js))
        return error_frame(c, out, PERR_BAD_INPUT, "Invalid message format: \"stream\" must be true or false");
    int rc = 0;
    char *meta = NULL;
    const char *content = valid_content(ctx, c, msg, &meta, out, &rc);
    if (!content)
        return rc;
    struct conversation conv;
    int r = session_load(ctx, c, 0, NULL, &conv, out);   /* deleted or closed since open? */
    if (r != 0) {
        free(meta);
        return r < 0 ? -1 : 0;
    }
    char why[160];
    int ok = proto_budget_ok(ctx, c, why, sizeof why);
    if (ok == 0) {
        free(meta);
        store_conv_free(&conv);
        return error_frame(c, out, PERR_BUDGET_EXHAUSTED, why);
    }
    if (ok > 0)
        ok = proto_rate_ok(ctx, c);
    if (ok <= 0) {
        free(meta);
        store_conv_free(&conv);
        if (ok < 0) {
            error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
            return -1;
        }
        return error_frame(c, out, PERR_RATE_LIMITED, "Rate limit exceeded");
    }
    /* while an answer streams the message waits its turn, up to
     * PARLEY_CHAT_QUEUE of them (0: refused as before the queue existed) */
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", conv.id);
    int64_t rj, rf, queued = 0;
    int running = jobs_running_on(ctx->db, chan, &rj, &rf);
    if (running < 0 || store_msg_queued(ctx->db, conv.id, NULL, &queued) < 0) {
        free(meta);
        store_conv_free(&conv);
        error_frame(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG));
        return -1;
    }
    if (running == 0 && ctx->cfg->chat_queue == 0) {
        free(meta);
        store_conv_free(&conv);
        return error_frame(c, out, PERR_CONFLICT, "A response is still being generated; wait for it to finish");
    }
    if (running == 0 && queued >= ctx->cfg->chat_queue) {
        free(meta);
        store_conv_free(&conv);
        char m[160];
        snprintf(m, sizeof m, "Too many messages waiting for an answer (max %d); wait for one to finish",
                 ctx->cfg->chat_queue);
        return error_frame(c, out, PERR_QUEUE_FULL, m);
    }
    rc = queue_answer(ctx, c, content, meta, json_is_false(js), &conv, out, jobp);
    free(meta);
    store_conv_free(&conv);
    return rc;
}

const struct proto_ops proto_chat_ops = { "chat", chat_open, chat_message, chat_event };
