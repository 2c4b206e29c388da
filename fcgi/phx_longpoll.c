/* phx_longpoll.c — the Phoenix LongPoll transport at /socket/longpoll
 * (seed 003; the contract phoenix.js's LongPoll expects, as Phoenix's own
 * lib/phoenix/transports/long_poll.ex answers it). Transport only: the
 * socket (core/phx.h) and the adapter (core/proto_phoenix.c) do the rest.
 *
 *   every answer is HTTP 200, application/json; charset=utf-8, no-store,
 *   with the real status in the body:
 *   GET  without a token, or with one that is unknown, expired or another
 *        user's → a new session: {"status":410,"token":T,"messages":[]}
 *   GET  with token T (the X-Phoenix-Longpoll-Token header of newer
 *        clients, else ?token=T) → waits up to PARLEY_PHOENIX_WINDOW s for frames:
 *        {"status":200,"token":T,"messages":["<V2 frame>",...]} (each frame
 *        a JSON string) or {"status":204,"token":T,"messages":[]}
 *   POST ?token=T, application/x-ndjson: the body split on \n (\r\n), at
 *        most 100 parts handled in order (the rest ignored, as Phoenix
 *        does); a part starting with "[" is a text frame, any other part
 *        (a base64 binary frame: Parley has none) is ignored. Any other
 *        content type: the body is one frame. → {"status":200}; a gone
 *        session → {"status":410}
 *   refused connect (PARLEY_JWT_SECRET set, no valid JWT: "Authorization:
 *   Bearer", the X-Phoenix-AuthToken header of phoenix.js's authToken
 *   option, or the auth_token connect param) → {"status":403} (phoenix.js
 *   closes with 1008, no retry). phoenix.js sends X-Phoenix-AuthToken on
 *   its GETs only: a POST carrying no JWT at all acts for the owner of the
 *   session its token names (the token, unguessable and only ever given to
 *   that user, is the credential there, as in Phoenix); a JWT that is sent
 *   must be valid.
 *   the user's session cap (PARLEY_POLL_MAX_SESSIONS) or a database error →
 *   {"status":500} (phoenix.js retries with its back-off)
 *   more frames waiting than POLL_PENDING_MAX → {"status":429}, nothing
 *   handled (phoenix.js reconnects: a client that posts without polling)
 *   PUT, PATCH, DELETE → 400 with an empty body, as Phoenix.
 *   OPTIONS (after the dispatcher's Origin allow-list: a refused Origin is
 *   its 403) → 200, empty, access-control-allow-headers echoing the
 *   request's Access-Control-Request-Headers, access-control-allow-methods
 *   "get, post, options", access-control-max-age 3600, as Phoenix.
 * A session is a long-poll session of core/pollsess.h (state: phx_save;
 * outbox: frames already encoded as JSON strings), so any process serves
 * any request of it; it expires 1.5 windows after the end of its last
 * request. The token is the session id (a random UUID, 122 bits) and is
 * bound to its user: another user's token opens a new session.
 * The outbox holds the frames a POST answered (its replies) until a GET
 * takes them; a frame is deleted once a GET answered it (Phoenix keeps no
 * copy either).
 * Waiting GET: wakes up for the session's own bell ("poll:<sid>": a POST
 * rang) or a bell of one of the channels its topics follow; then looks
 * (lp_look): in ONE write transaction (poll_pump; none when nothing
 * changed) it loads the socket, pumps its topics (phx_pump), reads the
 * outbox, saves the socket, deletes the outbox frames it answers and
 * renews the session; the frames just pumped are answered from memory and
 * never stored. A POST holding the session's lease makes the look wait for
 * it (it rings when it saved). A session's next GET starts from the watch
 * its last answer left in this process (lp_cache_take) and waits at once
 * when none of those bells moved. It is parked
 * (fcgi/poll_park.h, a generic waiter of the process's hub: no thread held
 * while it waits) when the transport can keep the request; else (mod_fcgid,
 * no doorbell, the park bound) it sleeps in its thread on the doorbell's
 * "any" slot. Every look (lp_look) is the same code in both.
 * Runs in a parley.fcgi worker thread with its ctx.
 */
#include "handlers.h"
#include "poll_park.h"
#include "poll_transport.h"
#include "auth.h"
#include "bell.h"
#include "ident.h"
#include "phx.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LP_PATH "/socket/longpoll"
#define LP_BATCH 100               /* NDJSON parts a POST may carry (Phoenix's limit) */
#define LP_READ_MAX 1000           /* frames in one GET answer */
#define LP_MAX_CHANS 100           /* followed channels a GET watches */

/* Writes {"status":N[,"token":T,"messages":M]} (M a JSON array text). */
static int lp_answer(struct request *r, int status, const char *token, const char *messages)
{
    size_t cap = 128 + (token ? strlen(token) : 0) + (messages ? strlen(messages) : 0);
    char *text = malloc(cap);
    if (!text)
        return res_error(r, 500, "Out of memory");
    int n = token ? snprintf(text, cap, "{\"status\":%d,\"token\":\"%s\",\"messages\":%s}", status,
                             token, messages ? messages : "[]")
                  : snprintf(text, cap, "{\"status\":%d}", status);
    char extra[96];
    snprintf(extra, sizeof extra, "Cache-Control: no-store\r\nContent-Length: %d\r\n", n);
    int rc = res_start(r, 200, "application/json; charset=utf-8", extra);
    if (rc == 0)
        rc = res_write(r, text, (size_t)n);
    free(text);
    return rc;
}

/* The connecting user: "" in open mode; else the JWT's sub, the JWT taken
 * from an "Authorization: Bearer" header, else the X-Phoenix-AuthToken
 * header, else the auth_token connect param. 0; 1 when no JWT was sent at
 * all (user ""); -1 when the one sent is not valid. */
static int lp_claims(struct request *r, char *user, size_t len, int *admin, int64_t *budget);
static int lp_user(struct request *r, char *user, size_t len)
{
    return lp_claims(r, user, len, NULL, NULL);
}

/* lp_user, also reading the JWT's role and token_budget claims (*admin,
 * *budget: -1 none; either may be NULL) for a new session's socket. */
static int lp_claims(struct request *r, char *user, size_t len, int *admin, int64_t *budget)
{
    const struct parley_config *cfg = r->ctx->cfg;
    user[0] = '\0';
    if (admin)
        *admin = 0;
    if (budget)
        *budget = -1;
    if (config_open_mode(cfg))
        return 0;
    char qtok[AUTH_MAX_TOKEN + 2];
    const char *tok = auth_bearer(r->authorization);
    if (!tok && r->phx_auth_token && *r->phx_auth_token)
        tok = r->phx_auth_token;
    if (!tok)
        tok = req_query(r, "auth_token", qtok, sizeof qtok);
    if (!tok && r->query && (!strncmp(r->query, "auth_token=", 11) || strstr(r->query, "&auth_token=")))
        return -1;                          /* one too long to read: refused, not absent */
    if (!tok || !*tok)
        return 1;
    struct auth_claims cl;
    if (auth_verify_config(cfg, tok, 0, &cl) != AUTH_OK || strlen(cl.sub) >= len)
        return -1;
    str_copy(user, len, cl.sub);
    if (admin)
        *admin = cl.admin;
    if (budget)
        *budget = cl.token_budget;
    return 0;
}

/* The session token: the X-Phoenix-Longpoll-Token header first, else
 * ?token=. Into buf; NULL when neither is there or it does not fit. */
static const char *lp_token(struct request *r, char *buf, size_t len)
{
    if (r->phx_longpoll_token && *r->phx_longpoll_token) {
        if (strlen(r->phx_longpoll_token) >= len)
            return NULL;
        str_copy(buf, len, r->phx_longpoll_token);
        return buf;
    }
    return req_query(r, "token", buf, len);
}

/* The session's expiry after a request (1.5 windows). */
static int lp_idle_s(const struct parley_ctx *ctx)
{
    return (ctx->cfg->phx_window_s * 3 + 1) / 2;
}

/* The session named by the token (lp_token) when it exists and is user's:
 * sid copied. user NULL: any owner, copied into owner_out (128 bytes).
 * 1 yes, 0 no, -1 database error. */
static int lp_session(struct request *r, const char *user, char sid[37], char *owner_out)
{
    char tok[64];
    if (!lp_token(r, tok, sizeof tok) || strlen(tok) != 36)
        return 0;
    char owner[128];
    int64_t expires;
    enum poll_status st = poll_peek(r->ctx->db, tok, NULL, owner, sizeof owner, &expires);
    if (st == POLL_ERROR)
        return -1;
    if (st != POLL_OK || (user && strcmp(owner, user) != 0))
        return 0;
    if (owner_out)
        str_copy(owner_out, 128, owner);
    str_copy(sid, 37, tok);
    return 1;
}

/* Frames as the outbox keeps them: each a JSON string (new array of new
 * strings in *enc). 0 / -1. */
static int encode_frames(const struct proto_frames *fr, char ***enc)
{
    *enc = fr->n ? calloc((size_t)fr->n, sizeof **enc) : NULL;
    if (fr->n && !*enc)
        return -1;
    for (int i = 0; i < fr->n; i++) {
        json_t *s = json_string(fr->v[i]);
        (*enc)[i] = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        json_decref(s);
        if (!(*enc)[i])
            return -1;
    }
    return 0;
}

static void free_enc(char **enc, int n)
{
    for (int i = 0; enc && i < n; i++)
        free(enc[i]);
    free(enc);
}

/* Saves the socket and frames into the locked session (releases the lock).
 * 0 / -1. */
static int lp_store(struct parley_ctx *ctx, const char *sid, const struct phx_socket *s,
                    const struct proto_frames *fr, int ext_s)
{
    char **enc = NULL;
    char *state = phx_save(s);
    int rc = state && encode_frames(fr, &enc) == 0 &&
                     poll_save(ctx->db, sid, state, enc, fr->n, ext_s) == 0 ? 0 : -1;
    free_enc(enc, fr->n);
    free(state);
    return rc;
}

static int lp_new_session(struct request *r, const char *user)
{
    struct parley_ctx *ctx = r->ctx;
    char peer[IDENT_PEER_MAX], sid[37];
    ident_peer(peer, sizeof peer, user, r->remote_addr);
    poll_expire(ctx->db, now_ms());
    struct phx_socket s;
    phx_init(&s, user, peer, ctx->cfg->phx_max_topics);
    /* the JWT's claims, for every topic the session joins (stop, budget) */
    char sub[128];
    if (lp_claims(r, sub, sizeof sub, &s.admin, &s.token_budget) != 0 || strcmp(sub, user) != 0) {
        s.admin = 0;
        s.token_budget = -1;
    }
    char *state = phx_save(&s);
    enum poll_status st = state ? poll_open(ctx->db, LP_PATH, user, state, NULL, 0,
                                            lp_idle_s(ctx), user[0] ? ctx->cfg->poll_max_sessions : 0,
                                            sid)
                                : POLL_ERROR;
    free(state);
    phx_free(&s);
    if (st != POLL_OK)
        return lp_answer(r, 500, NULL, NULL);
    return lp_answer(r, 410, sid, "[]");
}

/* What one pump of a waiting GET saw. */
struct lp_watch {
    char chans[LP_MAX_CHANS][200];
    uint32_t seen[LP_MAX_CHANS];
    int n;
    int job;                       /* a topic follows a job: look again every lease/2 */
    char pchan[64];
    uint32_t pseen;
};

/* After a pump of s: notes the channels its topics follow in w (a set
 * that changed is noted one behind, so that the wait looks again at once:
 * an event appended between the pump's read and these peeks is not
 * missed) and whether a topic follows a job. */
static void lp_watch_note(struct parley_ctx *ctx, const struct phx_socket *s, struct lp_watch *w)
{
    const char *ch[LP_MAX_CHANS];
    int n = phx_channels(s, ch, LP_MAX_CHANS);
    int fresh = 0;
    w->job = 0;
    /* (fresh: a channel not watched before) */
    for (int i = 0; i < n; i++) {
        int known = 0;
        for (int j = 0; j < w->n && !known; j++)
            known = strcmp(w->chans[j], ch[i]) == 0;
        fresh |= !known;
    }
    for (int i = 0; i < s->n; i++)
        w->job |= proto_following(&s->topics[i]) && s->topics[i].job_id != 0;
    if (fresh || n != w->n) {
        for (int i = 0; i < n; i++) {
            str_copy(w->chans[i], sizeof w->chans[i], ch[i]);
            w->seen[i] = ctx->bell ? bell_peek(ctx->bell, ch[i]) - 1u : 0;
        }
        w->n = n;
    }
}

/* 1 when a bell the GET watches moved since its last pump. */
static int lp_rung(parley_bell *bell, const struct lp_watch *w)
{
    if (bell_peek(bell, w->pchan) != w->pseen)
        return 1;
    for (int i = 0; i < w->n; i++)
        if (bell_peek(bell, w->chans[i]) != w->seen[i])
            return 1;
    return 0;
}

/* ---- what the last answer of a session watched ----
 *
 * phoenix.js sends its next GET as soon as one is answered, and nearly
 * always nothing has happened in between: that GET's first look (lock,
 * load, pump every topic, save) finds nothing. So an answer that emptied
 * the session leaves its watch (the bells peeked before its pump, the
 * channels) here, and the session's next GET in this process takes it:
 * when none of those bells moved since, nothing was appended to any topic
 * and no POST changed the session (a POST rings the session's own bell
 * after saving), and the GET waits at once, as its own look would have
 * concluded. A bell that moved, an entry older than LP_CACHE_MS, another
 * session in the slot, or no entry at all: the GET looks as usual. Per
 * process; any thread (a mutex). */
#define LP_CACHE_SLOTS 256
#define LP_CACHE_CHANS 16
#define LP_CACHE_NAMES 1536
#define LP_CACHE_MS 2000

struct lp_cached {
    char sid[37];
    int n, job;
    int64_t at;                    /* mono ms */
    uint32_t pseen, seen[LP_CACHE_CHANS];
    char names[LP_CACHE_NAMES];    /* n NUL-terminated channel names in a row */
};
static struct lp_cached lp_cache[LP_CACHE_SLOTS];
static pthread_mutex_t lp_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static struct lp_cached *lp_cache_slot(const char *sid)
{
    uint32_t h = 2166136261u;
    for (const char *p = sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &lp_cache[h % LP_CACHE_SLOTS];
}

/* Keeps w for sid's next GET (a watch too large to keep is not). */
static void lp_cache_put(const char *sid, const struct lp_watch *w)
{
    char names[LP_CACHE_NAMES];
    size_t len = 0;
    if (w->n > LP_CACHE_CHANS)
        return;
    for (int i = 0; i < w->n; i++) {
        size_t l = strlen(w->chans[i]) + 1;
        if (l > sizeof names - len)
            return;
        memcpy(names + len, w->chans[i], l);
        len += l;
    }
    pthread_mutex_lock(&lp_cache_mu);
    struct lp_cached *e = lp_cache_slot(sid);
    str_copy(e->sid, sizeof e->sid, sid);
    e->n = w->n;
    e->job = w->job;
    e->at = mono_ms();
    e->pseen = w->pseen;
    memcpy(e->seen, w->seen, sizeof e->seen[0] * (size_t)w->n);
    memcpy(e->names, names, len);
    pthread_mutex_unlock(&lp_cache_mu);
}

/* Takes sid's kept watch into *w (its pchan already set). 1 taken; 0 none
 * (or too old). */
static int lp_cache_take(const char *sid, struct lp_watch *w)
{
    int got = 0;
    pthread_mutex_lock(&lp_cache_mu);
    struct lp_cached *e = lp_cache_slot(sid);
    if (!strcmp(e->sid, sid) && mono_ms() - e->at <= LP_CACHE_MS) {
        const char *p = e->names;
        for (int i = 0; i < e->n; i++) {
            str_copy(w->chans[i], sizeof w->chans[i], p);
            p += strlen(p) + 1;
            w->seen[i] = e->seen[i];
        }
        w->n = e->n;
        w->job = e->job;
        w->pseen = e->pseen;
        got = 1;
    }
    if (!strcmp(e->sid, sid))
        e->sid[0] = '\0';                  /* used once */
    pthread_mutex_unlock(&lp_cache_mu);
    return got;
}

/* Sleeps until a watched bell moves, `until` (mono ms) or shutdown. */
static void lp_sleep(struct parley_ctx *ctx, const struct lp_watch *w, int64_t until)
{
    for (;;) {
        int64_t left = until - mono_ms();
        if (left <= 0 || poll_stopping(ctx))
            return;
        if (!ctx->bell) {
            struct timespec ts = { 0, (left > 250 ? 250 : left) * 1000000L };
            nanosleep(&ts, NULL);
            return;
        }
        uint32_t any = bell_peek_any(ctx->bell);
        if (lp_rung(ctx->bell, w))
            return;
        if (bell_wait_any(ctx->bell, any, left > INT32_MAX ? INT32_MAX : (int)left) < 0)
            return;
    }
}

/* A waiting GET: what its looks share, in its worker thread or parked in
 * the hub (poll_park_waiter). */
struct lp_get {
    struct request *r;
    char sid[37];
    char user[128];
    struct lp_watch w;
    int64_t deadline;              /* mono ms: the window's end */
    int64_t until;                 /* mono ms: the next look even without a ring */
    int ext_s, recheck;
    int first;                     /* no look yet: the first renews the session */
};

/* Nothing to answer yet: sets g->until (the window's end, or sooner: a
 * topic that follows a job is looked at every lease/2, a session a POST
 * held in 50 ms) and returns 0; 1 when the window is over (or the process
 * stops): the GET is answered 204. */
static int lp_wait_until(struct parley_ctx *ctx, struct lp_get *g, int busy)
{
    int64_t now = mono_ms();
    if (now >= g->deadline || poll_stopping(ctx))
        return 1;
    g->until = g->deadline;
    if ((g->w.job || busy) && now + (busy ? 50 : g->recheck) < g->until)
        g->until = now + (busy ? 50 : g->recheck);
    return 0;
}

/* "[a,b]" + frames c, d (JSON strings) → "[a,b,c,d]" (new); NULL out of memory. */
static char *lp_join(const char *json, char *const *enc, int n)
{
    size_t jl = strlen(json), len = jl + 1;
    for (int i = 0; i < n; i++)
        len += strlen(enc[i]) + 1;
    char *out = malloc(len + 1), *p = out;
    if (!out)
        return NULL;
    memcpy(p, json, jl - 1);                /* without its ']' */
    p += jl - 1;
    for (int i = 0; i < n; i++) {
        if (p > out + 1 || i > 0)
            *p++ = ',';
        size_t l = strlen(enc[i]);
        memcpy(p, enc[i], l);
        p += l;
    }
    *p++ = ']';
    *p = '\0';
    return out;
}

/* One look's pump (poll_pump's fn, inside its write transaction). */
struct lp_pump_arg {
    struct parley_ctx *ctx;
    struct lp_watch *w;
    int renew;                     /* write the session even with nothing to answer */
    int renew_s;                   /* ... with this expiry */
    char *answer;                  /* out: the JSON array to answer (new), NULL nothing */
};

/* Loads the socket from state, pumps its topics and reads the outbox: the
 * outbox's frames, then the ones just pumped, become a->answer; the socket
 * is saved, the outbox frames answered are acknowledged (it->ack) and the
 * session renewed, all in poll_pump's one write. Pumped frames never touch
 * the outbox (Phoenix keeps no copy of a frame it answered either), except
 * those beyond LP_READ_MAX, which wait there for the next GET. */
static int lp_pump_fn(void *fnarg, struct poll_item *it, const char *state,
                      struct poll_update *u)
{
    struct lp_pump_arg *a = fnarg;
    struct parley_ctx *ctx = a->ctx;
    struct phx_socket s;
    if (phx_load(&s, state) < 0)
        return -1;
    struct proto_frames fr;
    frames_init(&fr);
    char *json = NULL, **enc = NULL;
    int64_t last = 0;
    int rc = -1, n = -1;
    if (phx_pump(ctx, &s, &fr) < 0)
        goto out;
    lp_watch_note(ctx, &s, a->w);
    n = poll_read(ctx->db, it->sid, 0, LP_READ_MAX, &json, &last);
    if (n < 0 || encode_frames(&fr, &enc) < 0 || !(u->state = phx_save(&s)))
        goto out;
    if (n + fr.n == 0) {
        /* nothing to answer: written only when the pump moved a cursor
         * (events that make no frame) or the session is to be renewed */
        if (!a->renew && !strcmp(u->state, state)) {
            free(u->state);
            u->state = NULL;
        }
        u->idle_s = a->renew_s;
        rc = 0;
        goto out;
    }
    it->ack = n ? last : 0;
    u->idle_s = lp_idle_s(ctx);                  /* renewed from the end of this request */
    if (n < LP_READ_MAX) {
        a->answer = lp_join(json, enc, fr.n);
    } else {
        u->frames = enc;                         /* poll_pump frees them */
        u->nframes = fr.n;
        enc = NULL;
        a->answer = json;
        json = NULL;
    }
    rc = a->answer ? 0 : -1;
out:
    free_enc(enc, fr.n);
    free(json);
    frames_free(&fr);
    phx_free(&s);
    return rc;
}

/* One look: pumps the session and answers (its frames; a new session when
 * it is gone; 500; or 204 at the deadline or shutdown) and returns 1, or
 * sets g->until and returns 0 to wait. One write transaction (poll_pump),
 * none when nothing changed. The bells are peeked BEFORE the read, so a
 * ring after it wakes the wait. */
static int lp_look(struct parley_ctx *ctx, struct lp_get *g)
{
    struct request *r = g->r;
    struct lp_watch *w = &g->w;
    if (ctx->bell) {
        w->pseen = bell_peek(ctx->bell, w->pchan);
        for (int i = 0; i < w->n; i++)
            w->seen[i] = bell_peek(ctx->bell, w->chans[i]);
    }
    int over = mono_ms() >= g->deadline || poll_stopping(ctx);
    struct lp_pump_arg a = { ctx, w, g->first || over, over ? lp_idle_s(ctx) : g->ext_s, NULL };
    struct poll_item it = { .sid = g->sid };
    g->first = 0;
    if (poll_pump(ctx->db, &it, 1, g->ext_s, lp_pump_fn, &a) < 0)
        it.status = POLL_ERROR;
    if (it.status == POLL_GONE) {
        lp_new_session(r, g->user);
        return 1;
    }
    if (it.status == POLL_ERROR) {
        free(a.answer);
        lp_answer(r, 500, NULL, NULL);
        return 1;
    }
    if (it.status == POLL_BUSY) {
        /* a POST holds the session (it rings when it has saved): what the
         * outbox holds already is answered */
        char *json = NULL;
        int64_t last = 0;
        int n = poll_read(ctx->db, g->sid, 0, LP_READ_MAX, &json, &last);
        if (n == 0) {
            free(json);
            if (!lp_wait_until(ctx, g, 1))
                return 0;
            poll_touch(ctx->db, g->sid, 0, lp_idle_s(ctx));
            lp_answer(r, 204, g->sid, "[]");
            return 1;
        }
        if (n < 0 || poll_touch(ctx->db, g->sid, last, lp_idle_s(ctx)) < 0)
            lp_answer(r, 500, NULL, NULL);
        else
            lp_answer(r, 200, g->sid, json);
        free(json);
        return 1;
    }
    if (!a.answer) {
        if (!over && !lp_wait_until(ctx, g, 0))
            return 0;
        lp_answer(r, 204, g->sid, "[]");
        return 1;
    }
    lp_answer(r, 200, g->sid, a.answer);
    free(a.answer);
    /* everything answered: the next GET may start from this watch */
    if (ctx->bell)
        lp_cache_put(g->sid, w);
    return 1;
}

/* ---- parked (poll_park.h's generic waiter) ---- */

static int64_t lp_park_until(void *arg)
{
    return ((struct lp_get *)arg)->until;
}

static int lp_park_rung(void *arg, parley_bell *bell)
{
    return lp_rung(bell, &((struct lp_get *)arg)->w);
}

static int lp_park_step(void *arg, struct parley_ctx *ctx)
{
    return lp_look(ctx, arg);
}

static void lp_park_drop(void *arg)
{
    free(arg);
}

static const struct park_ops lp_park_ops = { lp_park_until, lp_park_rung, lp_park_step,
                                             lp_park_drop };

/* When this thread has no database (it could not be opened or reached
 * when the thread started: PostgreSQL down), the request is answered
 * {"status":500}: phoenix.js closes and tries again, as for any server
 * error. The dispatcher's JSON 503 has no "status" member, and phoenix.js's
 * LongPoll throws on a status it does not know and stops polling. 1 when
 * answered. */
static int lp_no_db(struct request *r)
{
    if (r->ctx && r->ctx->db)
        return 0;
    lp_answer(r, 500, NULL, NULL);
    return 1;
}

int h_phx_lp_get(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    char user[128], sid[37];
    if (lp_no_db(r))
        return 0;
    if (lp_user(r, user, sizeof user) != 0)
        return lp_answer(r, 403, NULL, NULL);
    int have = lp_session(r, user, sid, NULL);
    if (have < 0)
        return lp_answer(r, 500, NULL, NULL);
    if (have == 0)
        return lp_new_session(r, user);

    struct lp_get *g = calloc(1, sizeof *g);
    if (!g)
        return lp_answer(r, 500, NULL, NULL);
    g->r = r;
    str_copy(g->sid, sizeof g->sid, sid);
    str_copy(g->user, sizeof g->user, user);
    g->ext_s = lp_idle_s(ctx) + ctx->cfg->phx_window_s;   /* alive while this GET waits */
    g->deadline = mono_ms() + ctx->cfg->phx_window_s * 1000;
    g->recheck = ctx->cfg->lease_ms / 2 > 1000 ? ctx->cfg->lease_ms / 2 : 1000;
    g->first = 1;
    poll_channel(g->w.pchan, sizeof g->w.pchan, sid);
    /* the session's last answer left what it watched, and none of it
     * moved since: nothing to look at yet (lp_cache_take) */
    int done = ctx->bell && lp_cache_take(sid, &g->w) && !lp_rung(ctx->bell, &g->w)
                   ? lp_wait_until(ctx, g, 0) && lp_look(ctx, g)
                   : lp_look(ctx, g);
    int parked = 0;
    while (!done) {
        /* nothing yet: park (no thread held) when the transport can,
         * else sleep here */
        if (poll_park_waiter(r, ctx, &lp_park_ops, g)) {
            parked = 1;
            break;
        }
        lp_sleep(ctx, &g->w, g->until);
        done = lp_look(ctx, g);
    }
    if (!parked)
        free(g);
    return 0;
}

/* The next NDJSON part of [*p, end) (a trailing \r dropped). 0 at the end. */
static int next_part(const char **p, const char *end, const char **s, size_t *len)
{
    if (!*p)
        return 0;                   /* the last part was taken */
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *le = nl ? nl : end;
    *s = *p;
    *len = (size_t)(le - *p);
    if (*len > 0 && (*s)[*len - 1] == '\r')
        (*len)--;
    *p = nl ? nl + 1 : NULL;        /* never a pointer past the body's end */
    return 1;
}

static int is_ndjson(const char *ct)
{
    return ct && strncasecmp(ct, "application/x-ndjson", 20) == 0 &&
           (ct[20] == '\0' || ct[20] == ';' || ct[20] == ' ');
}

int h_phx_lp_post(struct request *r)
{
    struct parley_ctx *ctx = r->ctx;
    char user[128], sid[37];
    if (lp_no_db(r))
        return 0;
    int cred = lp_user(r, user, sizeof user);
    if (cred < 0)
        return lp_answer(r, 403, NULL, NULL);
    /* no JWT at all (phoenix.js's authToken travels on GETs only): the
     * session's token is the credential, its owner the user */
    int have = lp_session(r, cred == 1 ? NULL : user, sid, cred == 1 ? user : NULL);
    if (have <= 0)
        return lp_answer(r, have < 0 ? 500 : 410, NULL, NULL);
    char *state = NULL, owner[128];
    enum poll_status st = poll_lock(ctx->db, sid, lp_idle_s(ctx), &state, owner, sizeof owner);
    if (st != POLL_OK || strcmp(owner, user) != 0) {
        if (st == POLL_OK)
            poll_unlock(ctx->db, sid);
        free(state);
        return lp_answer(r, st == POLL_GONE || st == POLL_OK ? 410 : 500, NULL, NULL);
    }
    struct phx_socket s;
    int ok = phx_load(&s, state);
    free(state);
    int pending = ok == 0 ? poll_pending(ctx->db, sid) : -1;
    if (pending < 0 || pending >= POLL_PENDING_MAX) {
        poll_unlock(ctx->db, sid);
        if (ok == 0)
            phx_free(&s);
        return lp_answer(r, pending < 0 ? 500 : 429, NULL, NULL);
    }
    struct proto_frames fr;
    frames_init(&fr);
    struct proto_job *jobs[LP_BATCH];
    int njobs = 0, rc = 0;
    const char *body = r->body ? r->body : "";
    /* what the frames write (messages, jobs, counters) and the session's
     * save: one commit (each frame's own transactions nest in it as
     * savepoints); without it (the begin failed) each writes on its own */
    int in_tx = db_begin(ctx->db) == 0;
    if (is_ndjson(r->content_type)) {
        const char *p = body, *end = body + r->body_len, *part;
        size_t len;
        for (int k = 0; k < LP_BATCH && rc == 0 && next_part(&p, end, &part, &len); k++) {
            if (len == 0 || part[0] != '[')
                continue;          /* a binary frame (base64): none in this protocol */
            struct proto_job *job = NULL;
            rc = phx_message(ctx, &s, part, len, &fr, &job);
            if (job)
                jobs[njobs++] = job;
        }
    } else if (r->body_len > 0) {
        struct proto_job *job = NULL;
        rc = phx_message(ctx, &s, body, r->body_len, &fr, &job);
        if (job)
            jobs[njobs++] = job;
    }
    /* a database failure of one frame was answered with its error frame:
     * keep what the others did */
    const char *ch[LP_MAX_CHANS];
    int nch = phx_channels(&s, ch, LP_MAX_CHANS);
    int stored = lp_store(ctx, sid, &s, &fr, lp_idle_s(ctx));
    if (in_tx) {
        /* a session that cannot be saved keeps nothing of the POST either
         * (its replies would never be read): the client sends it again */
        if (stored < 0)
            db_rollback(ctx->db);
        else if (db_commit(ctx->db) < 0)
            stored = -1;
    }
    if (stored < 0)
        poll_unlock(ctx->db, sid);
    {   /* after the commit: wake this session's GETs and its topics'
         * followers, on every node */
        char pchan[64];
        poll_channel(pchan, sizeof pchan, sid);
        evlog_ring(ctx->db, ctx->bell, pchan);
        for (int i = 0; i < nch; i++)
            evlog_ring(ctx->db, ctx->bell, ch[i]);
    }
    for (int i = 0; i < njobs; i++) {
        if (stored == 0)
            proto_job_submit(ctx, jobs[i]);   /* takes it, even when it fails */
        else
            proto_job_free(jobs[i]);
    }
    frames_free(&fr);
    phx_free(&s);
    return lp_answer(r, stored < 0 ? 500 : 200, NULL, NULL);
}

int h_phx_lp_other(struct request *r)
{
    return res_start(r, 400, NULL, "Content-Length: 0\r\n");
}

/* 1 when v may be echoed as a header value: a list of header names
 * (letters, digits, '-', '_', '.', commas, blanks), at most 400 bytes. */
static int header_list_ok(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++)
        if (n >= 400 || !(v[n] == '-' || v[n] == '_' || v[n] == '.' || v[n] == ',' ||
                          v[n] == ' ' || v[n] == '\t' || (v[n] >= '0' && v[n] <= '9') ||
                          ((v[n] | 0x20) >= 'a' && (v[n] | 0x20) <= 'z')))
            return 0;
    return 1;
}

int h_phx_lp_options(struct request *r)
{
    char extra[600];
    const char *want = r->acr_headers && header_list_ok(r->acr_headers) ? r->acr_headers : "";
    snprintf(extra, sizeof extra,
             "Access-Control-Allow-Headers: %s\r\n"
             "Access-Control-Allow-Methods: get, post, options\r\n"
             "Access-Control-Max-Age: 3600\r\n"
             "Content-Length: 0\r\n", want);
    return res_start(r, 200, NULL, extra);
}
