/* poll_handlers.c — the long-poll transport's requests that change a
 * session (DESIGN §3), carrying the seed 000/001/002 protocols with exactly
 * the frames their WebSocket endpoints send (core/proto.h adapters):
 *
 *   POST   /api/poll/open   {"path": "/ws/<id>?token=..."}  → {"sid", "cursor": 0}
 *   POST   /api/poll/{sid}  one JSON frame, or several as NDJSON → 202
 *   DELETE /api/poll/{sid}  → 204
 *
 * (GET /api/poll/{sid} is poll_get.c.) Bounds, so that no client can grow
 * the database without limit (issue 8 b): at most POLL_POST_MAX_FRAMES
 * frames per POST (413), at most POLL_PENDING_MAX frames waiting in a
 * session's outbox for its client (429), pings rate-limited like messages
 * (429), at most PARLEY_POLL_MAX_SESSIONS open sessions per user (429); a
 * refused request stores nothing. A session is rate-limited as its user,
 * however its token came (ident_peer), the same bucket as on every other
 * transport. A generation a POST starts goes to this process's generation
 * loop (proto_job_submit): it holds no request thread.
 * Runs in a parley.fcgi worker thread; uses the thread's ctx.
 */
#include "handlers.h"
#include "api_usage.h"
#include "poll_transport.h"
#include "status.h"
#include "auth.h"
#include "bell.h"
#include "ident.h"
#include "proto.h"
#include "ratelimit.h"
#include "util.h"
#include "visitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the value of query parameter name (with its '=': "token=") of
 * path's query into out ("" none or too long). Returns 1 when the
 * parameter came but did not fit, else 0. */
static int path_arg(const char *path, const char *name, char *out, size_t len)
{
    out[0] = '\0';
    const char *q = strchr(path, '?');
    size_t nl = strlen(name);
    for (const char *p = q; p && *p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, nl) != 0)
            continue;
        const char *v = p + 1 + nl;
        size_t n = strcspn(v, "&#");
        if (n >= len)
            return 1;
        memcpy(out, v, n);
        out[n] = '\0';
        return 0;
    }
    return 0;
}

/* The user a poll request acts for: the dispatcher's JWT user, else a
 * token in the WebSocket path's query (seed 001 puts it there), else, when
 * PARLEY_ANONYMOUS names the path's protocol (kind), an anonymous visitor:
 * its token from the request (http_visitor) or from visitor= in path, or a
 * new one (docs/anonymous.md). *cl gets the claims of the token that
 * decided (zero, token_budget -1, for a visitor or in open mode).
 * 0 / -1 (401 written). */
static int poll_user(struct request *r, const char *path, enum proto_kind kind, char *user,
                     size_t len, struct auth_claims *cl)
{
    const struct parley_config *cfg = r->ctx->cfg;
    memset(cl, 0, sizeof *cl);
    cl->token_budget = -1;
    str_copy(user, len, r->user);
    if (config_open_mode(cfg))
        return 0;
    if (r->user[0]) {
        if (r->has_claims)
            *cl = r->claims;              /* the dispatcher's one verification */
        return 0;
    }
    char tok[AUTH_MAX_TOKEN + 2];
    int too_long = path_arg(path, "token=", tok, sizeof tok);
    if (!tok[0] && !too_long && visitor_allowed(cfg->anonymous, (int)kind)) {
        char vt[VISITOR_TOKEN_MAX];
        path_arg(path, VISITOR_QUERY "=", vt, sizeof vt);
        if (vt[0] && visitor_verify(cfg->jwt_secret, vt, user, len) == 0)
            return 0;
        if (http_visitor(r, 1) == 0) {
            str_copy(user, len, r->user);
            return 0;
        }
        return res_error(r, 500, "Could not issue a visitor identity"), -1;
    }
    enum auth_result ar = too_long ? AUTH_TOO_LONG
                                   : auth_verify_config(cfg, tok[0] ? tok : NULL, 0, cl);
    if (ar != AUTH_OK || strlen(cl->sub) >= len) {
        res_error(r, 401, "Unauthorized: %s", auth_message(ar != AUTH_OK ? ar : AUTH_NO_SUBJECT));
        return -1;
    }
    str_copy(user, len, cl->sub);
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
    char user[128], peer[IDENT_PEER_MAX];
    struct auth_claims claims;
    if (poll_user(r, path, kind, user, sizeof user, &claims) < 0)
        return 0;
    /* the user's identity, also when the token came only inside path */
    ident_peer(peer, sizeof peer, user, r->remote_addr);
    int64_t now = now_ms();
    poll_expire(ctx->db, now);
    int max = user[0] ? ctx->cfg->poll_max_sessions : 0;
    if (max > 0) {
        /* before the protocol opens anything (counted again when storing) */
        int owned = poll_owned(ctx->db, user, now);
        if (owned < 0)
            return poll_fail(r, POLL_ERROR);
        if (owned >= max)
            return poll_fail(r, POLL_FULL);
    }

    struct proto_conn c;
    struct proto_frames fr;
    frames_init(&fr);
    /* the tenant chooses the tickets (docs/tenants.md), saved with c */
    struct proto_client cl = { r->user_agent, r->remote_addr, r->client_version, NULL,
                               claims.tenant };
    int rc = proto_open_client(ctx, &c, path, user, peer, &cl, &fr);
    if (rc == 0 && claims.sub[0] && !strcmp(claims.sub, user)) {
        c.admin = claims.admin;     /* the role and token_budget claims, saved with c */
        c.has_token_budget = claims.token_budget >= 0;
        c.token_budget = claims.token_budget >= 0 ? claims.token_budget : 0;
    }
    char sid[37], *saved = NULL;
    enum poll_status st = POLL_ERROR;
    if (rc < 0 && fr.n == 0) {
        res_error_kind(r, db_err_kind(ctx->db), "%s",
                       db_err_text(ctx->db, "Could not open the session (database error)"));
        goto out;
    }
    if (!(saved = proto_conn_save(&c)) ||
        (st = poll_open(ctx->db, path, user, saved, fr.v, fr.n, ctx->cfg->poll_idle_s, max,
                        sid)) == POLL_ERROR) {
        res_error_kind(r, db_err_kind(ctx->db), "%s",
                       db_err_text(ctx->db, "Could not store the poll session"));
        goto out;
    }
    if (st != POLL_OK) {
        poll_fail(r, st);
        goto out;
    }
    json_t *body = json_pack("{s:s, s:i}", "sid", sid, "cursor", 0);
    if (body && r->visitor_new[0])      /* a new anonymous visitor: its token */
        json_object_set_new(body, "visitor", json_string(r->visitor_new));
    res_json(r, 200, body);
out:
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
    enum poll_status lr = poll_lock(ctx->db, sid, ctx->cfg->poll_idle_s, &state, owner,
                                    sizeof owner);
    if (lr != POLL_OK)
        return poll_fail(r, lr), -1;
    if (!config_open_mode(ctx->cfg) && strcmp(owner, r->user) != 0) {
        poll_unlock(ctx->db, sid);
        free(state);
        return poll_fail(r, POLL_GONE), -1;
    }
    int ok = proto_conn_load(c, state);
    free(state);
    if (ok < 0) {
        poll_unlock(ctx->db, sid);
        return res_error(r, 500, "Corrupt poll session state"), -1;
    }
    return 0;
}

/* One NDJSON line of a POST body, blanks around it trimmed. */
struct line {
    const char *s;
    size_t len;
};

/* The next non-blank line of [*p, end), advancing *p. 0 at the end. */
static int next_line(const char **p, const char *end, struct line *ln)
{
    while (*p < end) {
        const char *nl = memchr(*p, '\n', (size_t)(end - *p));
        const char *le = nl ? nl : end;
        const char *s = *p, *e = le;
        *p = le + 1;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        if (e > s) {
            ln->s = s;
            ln->len = (size_t)(e - s);
            return 1;
        }
    }
    return 0;
}

/* 1 when a frame is a ping ({"type": "ping", ...}: seeds 001 and 002). */
static int is_ping(const struct line *ln)
{
    if (!memmem(ln->s, ln->len, "ping", 4))
        return 0;
    json_t *o = json_loadb(ln->s, ln->len, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    int ping = type && strcmp(type, "ping") == 0;
    json_decref(o);
    return ping;
}

/* Counts the frames of a POST body and the pings among them, stopping
 * once past POLL_POST_MAX_FRAMES. */
static void count_frames(const struct request *r, int *frames, int *pings)
{
    const char *p = r->body, *end = r->body + r->body_len;
    struct line ln;
    *frames = *pings = 0;
    while (*frames <= POLL_POST_MAX_FRAMES && next_line(&p, end, &ln)) {
        (*frames)++;
        *pings += is_ping(&ln);
    }
}

/* The bounds a POST of nframes frames (npings pings) must fit in, checked
 * with the session locked and loaded in *c. 0 fits; -1 with the 429
 * written and the session unlocked. */
static int post_fits(struct request *r, const char *sid, const struct proto_conn *c,
                     int nframes, int npings)
{
    struct parley_ctx *ctx = r->ctx;
    int pending = poll_pending(ctx->db, sid);
    if (pending < 0) {
        poll_unlock(ctx->db, sid);
        return poll_fail(r, POLL_ERROR), -1;
    }
    if (pending + nframes > POLL_PENDING_MAX) {
        poll_unlock(ctx->db, sid);
        /* a GET waiting now (on any node) looks again: it deletes what
         * its client has received, which makes room */
        char pchan[64];
        poll_channel(pchan, sizeof pchan, sid);
        evlog_ring(ctx->db, ctx->bell, pchan);
        res_error(r, 429,
                  "Poll session outbox full: %d frames not yet received by the client, %d more "
                  "would exceed %d; receive them (GET) first", pending, nframes, POLL_PENDING_MAX);
        return -1;
    }
    if (npings > 0) {
        char key[IDENT_PEER_MAX + 8];
        snprintf(key, sizeof key, "ping:%s", c->peer);
        int64_t retry = 0;
        int ok = ratelimit_hit_n(ctx->db, key, npings, ctx->cfg->rate_limit_per_min, 60000,
                                 now_ms(), &retry);
        if (ok <= 0) {
            poll_unlock(ctx->db, sid);
            if (ok < 0)
                return poll_fail(r, POLL_ERROR), -1;
            char h[48];
            snprintf(h, sizeof h, "Retry-After: %lld\r\n", (long long)((retry + 999) / 1000));
            size_t used = strlen(r->res->extra_headers);
            if (used + strlen(h) < sizeof r->res->extra_headers)
                memcpy(r->res->extra_headers + used, h, strlen(h) + 1);
            res_error(r, 429, "Too many pings: at most %d a minute (RATE_LIMIT_MESSAGES_PER_MINUTE)",
                      ctx->cfg->rate_limit_per_min);
            return -1;
        }
    }
    return 0;
}

/* Generations a POST started, handed to the generation loop once saved. */
struct post_jobs {
    struct proto_job *v[16];
    int n;
};

static void jobs_free(struct post_jobs *pj)
{
    for (int i = 0; i < pj->n; i++)
        proto_job_free(pj->v[i]);
    pj->n = 0;
}

/* Runs every frame of the body through the protocol. 0, or -1 on a
 * database error. *accepted counts the frames handled. */
static int post_frames(struct request *r, struct proto_conn *c, struct proto_frames *fr,
                       struct post_jobs *pj, int *accepted)
{
    const char *p = r->body, *end = r->body + r->body_len;
    struct line ln;
    int rc = 0;
    *accepted = 0;
    while (rc == 0 && next_line(&p, end, &ln)) {
        struct proto_job *job = NULL;
        rc = proto_message(r->ctx, c, ln.s, ln.len, fr, &job);
        if (job) {
            if (pj->n < (int)(sizeof pj->v / sizeof pj->v[0]))
                pj->v[pj->n++] = job;
            else
                proto_job_free(job);   /* cannot happen: one generation at a time */
        }
        (*accepted)++;
        if (c->close)
            break;
    }
    return rc;
}

/* Wakes whoever waits for this session, on every node: a GET of it on
 * "poll:<sid>", the channel it follows now, and a GET waiting with the one
 * it followed before these frames. */
static void post_ring(struct parley_ctx *ctx, const char *sid, const struct proto_conn *c,
                      const char *before)
{
    char pchan[64];
    poll_channel(pchan, sizeof pchan, sid);
    evlog_ring(ctx->db, ctx->bell, pchan);
    if (proto_following(c))
        evlog_ring(ctx->db, ctx->bell, c->channel);
    if (before[0] && (!proto_following(c) || strcmp(before, c->channel) != 0))
        evlog_ring(ctx->db, ctx->bell, before);
}

int h_poll_post(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    const char *sid = r->params[0];
    if (!r->body || r->body_len == 0)
        return res_error(r, 400, "Empty body: send one JSON frame, or several as NDJSON");
    int nframes, npings;
    count_frames(r, &nframes, &npings);
    if (nframes > POLL_POST_MAX_FRAMES)
        return res_error(r, 413, "Too many frames in one POST: more than %d; send them in "
                                 "several POSTs", POLL_POST_MAX_FRAMES);
    struct proto_conn c;
    if (load_session(r, sid, &c) < 0)
        return 0;
    if (c.close) {
        poll_unlock(ctx->db, sid);
        res_error(r, 410, "Poll session closed: %s", c.close_reason);
        proto_conn_cleanup(&c);
        return 0;
    }
    if (post_fits(r, sid, &c, nframes, npings) < 0) {
        proto_conn_cleanup(&c);
        return 0;
    }
    char before[sizeof c.channel];          /* followed before these frames */
    str_copy(before, sizeof before, proto_following(&c) ? c.channel : "");
    struct proto_frames fr;
    frames_init(&fr);
    struct post_jobs pj = { .n = 0 };
    int accepted = 0;
    /* The frames' writes (messages, job claims, rate-limit hits), the
     * answers for the outbox and the session's new state: one commit
     * (db.h: the storage functions' own transactions nest as savepoints)
     * instead of one each, so a burst of POSTs holds the write lock less
     * often. Without it (it could not begin) each step commits alone. */
    int tx = db_begin(ctx->db) == 0;
    /* First the followed channel's events since the stored state, as a
     * pump would store them: a GET may have handed them to the client
     * already, as virtual frames under these very numbers (poll_replay.h),
     * so the frames this POST adds must come after them. */
    int rc = proto_following(&c) && proto_pump(ctx, &c, &fr) < 0 ? -1 : 0;
    if (rc == 0)
        rc = post_frames(r, &c, &fr, &pj, &accepted);
    char *saved = rc == 0 ? proto_conn_save(&c) : NULL;
    if (rc == 0 && saved && poll_save(ctx->db, sid, saved, fr.v, fr.n, ctx->cfg->poll_idle_s) < 0)
        rc = -1;
    if (tx && (rc < 0 || !saved))
        db_rollback(ctx->db);
    else if (tx && db_commit(ctx->db) < 0)
        rc = -1;                            /* rolled back: the lock is still ours */
    if (rc < 0 || !saved) {
        /* 503 database_readonly / _unavailable when it cannot be written
         * or reached now (read before the unlock, which writes too) */
        enum perr kind = db_err_kind(ctx->db);
        const char *why = db_err_text(ctx->db, "Database error while handling the frame");
        poll_unlock(ctx->db, sid);
        res_error_kind(r, kind, "%s", why);
        jobs_free(&pj);
    } else {
        post_ring(ctx, sid, &c, before);
        for (int i = 0; i < pj.n; i++)
            proto_job_submit(ctx, pj.v[i]);    /* takes it, even when it fails */
        pj.n = 0;
        res_json(r, 202, json_pack("{s:b, s:i}", "success", 1, "accepted", accepted));
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
    if (poll_delete(ctx->db, sid) == POLL_ERROR)
        return poll_fail(r, POLL_ERROR);
    /* wake a GET of this session waiting now (on any node): it answers
     * 410 at once */
    char pchan[64];
    poll_channel(pchan, sizeof pchan, sid);
    evlog_ring(ctx->db, ctx->bell, pchan);
    if (followed[0])
        evlog_ring(ctx->db, ctx->bell, followed);
    return res_empty(r, 204);
}
