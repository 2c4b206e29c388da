/* api_poll.c — the generic long-poll transport (DESIGN §3), carrying the
 * seed 000/001/002 protocols with exactly the frames their WebSocket
 * endpoints send (core/proto.h adapters).
 *
 *   POST   /api/poll/open   {"path": "/ws/<id>?token=..."}  → {"sid", "cursor": 0}
 *   GET    /api/poll/{sid}?cursor=N&wait=25  → {"messages": [...], "cursor": M, "closed": b}
 *                                   (+ "close_code", "close_reason" once closed)
 *   POST   /api/poll/{sid}  one JSON frame, or several as NDJSON → 202
 *   DELETE /api/poll/{sid}  → 204
 *
 * Session state lives in SQLite (core/pollsess.h), so any process serves any
 * request. A GET first looks without the session lock or any write (the
 * common case: nothing new); only when there is something to store does it
 * lock, pump the followed channel into the outbox and save, acknowledging
 * the client's cursor in the same transaction. With nothing to send it sleeps
 * on the doorbell of the channel the session follows (or of "poll:<sid>" for
 * frames a POST adds), never on a timer: its 1 s slices (to notice shutdown)
 * touch no database. A generation a POST starts runs in the same thread after the HTTP
 * response is finished (r->after), so the client's next poll is not held up.
 * Runs in a parley.fcgi worker thread; uses the thread's ctx.
 */
#include "handlers.h"
#include "auth.h"
#include "bell.h"
#include "pollsess.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLL_WAIT_DEFAULT 25
#define POLL_WAIT_MAX 30          /* stays under FcgidIOTimeout (40 s) */
#define POLL_MAX_FRAMES 500

static void poll_channel(char *out, size_t len, const char *sid)
{
    snprintf(out, len, "poll:%s", sid);
}

/* The user a poll request acts for: the dispatcher's JWT user, else a
 * token in the WebSocket path's query (seed 001 puts it there). 0 / -1
 * (401 written). */
static int poll_user(struct request *r, const char *path, char *user, size_t len)
{
    const struct parley_config *cfg = r->ctx->cfg;
    str_copy(user, len, r->user);
    if (config_open_mode(cfg) || r->user[0])
        return 0;
    const char *q = strstr(path, "?token=");
    if (!q)
        q = strstr(path, "&token=");
    char tok[4096] = "";
    if (q) {
        q += 7;
        size_t n = strcspn(q, "&#");
        if (n < sizeof tok) {
            memcpy(tok, q, n);
            tok[n] = '\0';
        }
    }
    enum auth_result ar = auth_verify(cfg->jwt_secret, tok[0] ? tok : NULL, 0, user, len);
    if (ar != AUTH_OK) {
        res_error(r, 401, "Unauthorized: %s", auth_message(ar));
        return -1;
    }
    return 0;
}

int h_poll_open(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *path = json_string_value(json_object_get(r->json, "path"));
    if (!path)
        return res_error(r, 400, "Missing field path (a WebSocket path such as /ws/<session_id>)");
    enum proto_kind kind;
    char param[160];
    if (proto_route(path, &kind, param, sizeof param) < 0)
        return res_error(r, 404, "No protocol is served at path %.200s", path);
    char user[128];
    if (poll_user(r, path, user, sizeof user) < 0)
        return 0;
    poll_expire(ctx->db, now_ms());

    struct proto_conn c;
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_open(ctx, &c, path, user, r->peer, &fr);
    char sid[37], owner[128], *state = NULL, *saved = NULL;
    if (rc < 0 && fr.n == 0) {
        res_error(r, 500, "Could not open the session (database error)");
        goto out;
    }
    if (poll_create(ctx->db, path, user, ctx->cfg->poll_idle_s, sid) < 0 ||
        poll_lock(ctx->db, sid, ctx->cfg->poll_idle_s, &state, owner, sizeof owner) != 0 ||
        !(saved = proto_conn_save(&c)) ||
        poll_save(ctx->db, sid, saved, fr.v, fr.n, ctx->cfg->poll_idle_s) < 0) {
        res_error(r, 500, "Could not store the poll session");
        goto out;
    }
    res_json(r, 200, json_pack("{s:s, s:i}", "sid", sid, "cursor", 0));
out:
    free(state);
    free(saved);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

/* Locks and loads the session; checks its owner. 0 with *c loaded;
 * otherwise the error response is written and -1 returned. */
static int load_session(struct request *r, const char *sid, struct proto_conn *c)
{
    struct parley_ctx *ctx = r->ctx;
    char *state = NULL, owner[128];
    int lr = poll_lock(ctx->db, sid, ctx->cfg->poll_idle_s, &state, owner, sizeof owner);
    if (lr == 1)
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    if (lr == 2)
        return res_error(r, 409, "Poll session busy: another request of it is in progress"), -1;
    if (lr < 0)
        return res_error(r, 500, "Database error"), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, r->user) != 0) {
        poll_unlock(ctx->db, sid);
        free(state);
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    }
    int ok = proto_conn_load(c, state);
    free(state);
    if (ok < 0) {
        poll_unlock(ctx->db, sid);
        return res_error(r, 500, "Corrupt poll session state"), -1;
    }
    return 0;
}

struct close_info { int code; char reason[120]; };

/* Pumps the followed channel into the outbox (under the session lock), and
 * deletes the frames the client acknowledged (seq <= ack) in the same
 * transaction. Returns closed (0/1), or -1 with the error response written. */
static int pump(struct request *r, const char *sid, int64_t ack, int *following, char *chan,
                size_t chanlen, struct close_info *ci)
{
    struct parley_ctx *ctx = r->ctx;
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return -1;
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_pump(ctx, &c, &fr);
    char *saved = proto_conn_save(&c);
    if (rc < 0 || !saved ||
        poll_save_ack(ctx->db, sid, saved, fr.v, fr.n, ctx->cfg->poll_idle_s, ack) < 0) {
        poll_unlock(ctx->db, sid);
        res_error(r, 500, "Database error");
        rc = -1;
    } else {
        rc = 0;
    }
    *following = proto_following(&c);
    str_copy(chan, chanlen, c.channel);
    int closed = c.close;
    ci->code = c.close_code;
    str_copy(ci->reason, sizeof ci->reason, c.close_reason);
    free(saved);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return rc < 0 ? -1 : closed;
}

/* What peek_session saw. */
struct peek {
    int work;              /* a locked pump would change the session: frames to
                            * add, or the cursor, job or channel moved */
    int following;         /* as stored: follows a channel (chan) */
    int job;               /* ... and a job in it (its lease is checked by looks) */
    int closed;
    int64_t expires;       /* ms since the epoch */
};

/* Looks at the session without locking or writing anything: loads its
 * state and pumps the followed channel into frames it then drops (fills
 * *pk, chan and *ci). 0, or -1 with the error response written (410:
 * unknown, expired or another user's). Nothing new is the common case of a
 * poll, and then it costs reads only: no write lock. */
static int peek_session(struct request *r, const char *sid, struct peek *pk, char *chan,
                        size_t chanlen, struct close_info *ci)
{
    struct parley_ctx *ctx = r->ctx;
    char *state = NULL, owner[128];
    int pr = poll_peek(ctx->db, sid, &state, owner, sizeof owner, &pk->expires);
    if (pr == 1)
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    if (pr < 0)
        return res_error(r, 500, "Database error"), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, r->user) != 0) {
        free(state);
        return res_error(r, 410, "Unknown or expired poll session"), -1;
    }
    struct proto_conn c;
    int ok = proto_conn_load(&c, state);
    free(state);
    if (ok < 0)
        return res_error(r, 500, "Corrupt poll session state"), -1;
    int64_t cursor = c.cursor, job = c.job_id;
    char was[sizeof c.channel];
    str_copy(was, sizeof was, c.channel);
    pk->following = proto_following(&c);
    pk->job = pk->following && c.job_id != 0;
    str_copy(chan, chanlen, c.channel);
    pk->closed = c.close;
    ci->code = c.close_code;
    str_copy(ci->reason, sizeof ci->reason, c.close_reason);
    struct proto_frames fr;
    frames_init(&fr);
    int rc = proto_pump(ctx, &c, &fr);
    pk->work = rc != 0 || fr.n > 0 || c.cursor != cursor || c.job_id != job ||
               strcmp(c.channel, was) != 0 || c.close != pk->closed;
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

static int parse_int_param(struct request *r, const char *name, long long def, long long min,
                           long long max, long long *out)
{
    char buf[32];
    const char *v = req_query(r, name, buf, sizeof buf);
    *out = def;
    if (!v)
        return 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        res_error(r, 400, "Query parameter %s must be an integer from %lld to %lld", name, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

int h_poll_get(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    long long cursor, wait;
    if (parse_int_param(r, "cursor", 0, 0, INT64_MAX / 2, &cursor) < 0 ||
        parse_int_param(r, "wait", POLL_WAIT_DEFAULT, 0, POLL_WAIT_MAX, &wait) < 0)
        return 0;
    char pchan[64];
    poll_channel(pchan, sizeof pchan, sid);
    int64_t deadline = mono_ms() + wait * 1000;
    /* Without a ring, look again only while following a job, this often: a
     * look is what recovers a job whose worker died (proto_pump). */
    int recheck_ms = ctx->cfg->lease_ms / 2 > 1000 ? ctx->cfg->lease_ms / 2 : 1000;
    int64_t idle_ms = (int64_t)ctx->cfg->poll_idle_s * 1000, next_look = 0;
    char chan[200] = "";
    int look = 1, following = 0, closed = 0, wrote = 0;
    struct close_info ci = { 0, "" };
    struct peek pk;
    uint32_t seen_p = 0, seen_c = 0;
    for (;;) {
        if (look) {
            /* Peek the bells before looking at the log, so an event appended
             * after the look still wakes the wait below. Only here: a wait
             * that ends without a ring keeps these values, so a ring that
             * comes after it is not lost. */
            seen_p = ctx->bell ? bell_peek(ctx->bell, pchan) : 0;
            seen_c = chan[0] && ctx->bell ? bell_peek(ctx->bell, chan) : 0;
            char known[200];
            str_copy(known, sizeof known, chan);
            if (peek_session(r, sid, &pk, chan, sizeof chan, &ci) < 0)
                return 0;
            if (pk.following && strcmp(known, chan) != 0) {
                /* first sight of this channel: peek its bell, then look again */
                seen_c = ctx->bell ? bell_peek(ctx->bell, chan) : 0;
                if (peek_session(r, sid, &pk, chan, sizeof chan, &ci) < 0)
                    return 0;
            }
            following = pk.following;
            closed = pk.closed;
            if (pk.work) {
                /* something to store: lock, pump, save and ack, one request at a time */
                closed = pump(r, sid, cursor, &following, chan, sizeof chan, &ci);
                if (closed < 0)
                    return 0;
                wrote = 1;
            } else if (!wrote && pk.expires - now_ms() < idle_ms / 2) {
                /* a session that only waits: keep it alive, drop acked frames */
                if (poll_touch(ctx->db, sid, cursor, ctx->cfg->poll_idle_s) < 0)
                    return res_error(r, 500, "Database error");
                wrote = 1;
            }
            next_look = pk.job || (pk.work && following) ? mono_ms() + recheck_ms : INT64_MAX;
        }
        int64_t left = deadline - mono_ms();
        char *json = NULL;
        int64_t last = cursor;
        int n = 0;
        /* without a look (no ring) nothing changed: nothing to read yet */
        if (look || closed || left <= 0 || parley_stopping) {
            n = poll_read(ctx->db, sid, cursor, POLL_MAX_FRAMES, &json, &last);
            if (n < 0)
                return res_error(r, 500, "Database error");
        }
        if (n > 0 || closed || left <= 0 || parley_stopping) {
            json_t *msgs = json ? json_loads(json, 0, NULL) : NULL;
            free(json);
            json_t *o = json_pack("{s:o, s:I, s:b}", "messages", msgs ? msgs : json_array(),
                                  "cursor", (json_int_t)last, "closed", closed);
            if (closed && o) {
                /* what a WebSocket close frame would carry */
                json_object_set_new(o, "close_code", json_integer(ci.code ? ci.code : 1000));
                json_object_set_new(o, "close_reason", json_string(ci.reason));
            }
            return res_json(r, 200, o);
        }
        free(json);
        int slice = left > 1000 ? 1000 : (int)left;
        if (!ctx->bell) {
            look = 1;
            continue;
        }
        /* Slices of at most 1 s, to notice parley_stopping; a slice that
         * ends without a ring touches no database. */
        int rung = following ? bell_wait(ctx->bell, chan, seen_c, slice)
                             : bell_wait(ctx->bell, pchan, seen_p, slice);
        look = rung != 0 || mono_ms() >= next_look;
    }
}

struct poll_jobs {
    struct proto_job *v[16];
    int n;
};

static void run_jobs_after(struct request *r, void *arg)
{
    struct poll_jobs *pj = arg;
    for (int i = 0; i < pj->n; i++) {
        proto_job_run(r->ctx, pj->v[i]);
        proto_job_free(pj->v[i]);
    }
    free(pj);
}

int h_poll_post(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    if (!r->body || r->body_len == 0)
        return res_error(r, 400, "Empty body: send one JSON frame, or several as NDJSON");
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return 0;
    if (c.close) {
        poll_unlock(ctx->db, sid);
        proto_conn_cleanup(&c);
        return res_error(r, 410, "Poll session closed: %s", c.close_reason);
    }
    struct proto_frames fr;
    frames_init(&fr);
    struct poll_jobs *pj = calloc(1, sizeof *pj);
    int accepted = 0, rc = pj ? 0 : -1;
    const char *p = r->body, *end = r->body + r->body_len;
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        const char *e = le;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (e > s) {
            struct proto_job *job = NULL;
            rc = proto_message(ctx, &c, s, (size_t)(e - s), &fr, &job);
            if (job) {
                if (pj->n < 16)
                    pj->v[pj->n++] = job;
                else
                    proto_job_free(job);   /* cannot happen: one generation at a time */
            }
            accepted++;
            if (c.close)
                break;
        }
        p = le + 1;
    }
    char *saved = rc == 0 ? proto_conn_save(&c) : NULL;
    if (rc < 0 || !saved || poll_save(ctx->db, sid, saved, fr.v, fr.n, ctx->cfg->poll_idle_s) < 0) {
        poll_unlock(ctx->db, sid);
        res_error(r, 500, "Database error while handling the frame");
    } else {
        if (ctx->bell) {
            char pchan[64];
            poll_channel(pchan, sizeof pchan, sid);
            bell_ring(ctx->bell, pchan);
            if (proto_following(&c))
                bell_ring(ctx->bell, c.channel);
        }
        if (pj && pj->n) {
            r->after = run_jobs_after;
            r->after_arg = pj;
            pj = NULL;
        }
        res_json(r, 202, json_pack("{s:b, s:i}", "success", 1, "accepted", accepted));
    }
    if (pj) {
        for (int i = 0; i < pj->n; i++)
            proto_job_free(pj->v[i]);
        free(pj);
    }
    free(saved);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return 0;
}

int h_poll_delete(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return 0;
    char followed[sizeof c.channel];
    str_copy(followed, sizeof followed, proto_following(&c) ? c.channel : "");
    proto_conn_cleanup(&c);
    int d = poll_delete(ctx->db, sid);
    if (d < 0)
        return res_error(r, 500, "Database error");
    if (ctx->bell) {
        /* wake a GET of this session waiting now: it answers 410 at once */
        char pchan[64];
        poll_channel(pchan, sizeof pchan, sid);
        bell_ring(ctx->bell, pchan);
        if (followed[0])
            bell_ring(ctx->bell, followed);
    }
    return res_empty(r, 204);
}
