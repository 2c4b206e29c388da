/* test_poll_limits.c — the long-poll transport's lifetime and bounds
 * (fcgi/poll_*.c), driven through http_dispatch() with a real database and
 * doorbell:
 *   - a session never expires while its client keeps polling: a GET that
 *     waits renews the session for the time it waits (issue 8 i: a GET
 *     that began with more than half of PARLEY_POLL_IDLE left did not renew
 *     it, and the session expired under the waiting client);
 *   - frames per POST, frames waiting in a session's outbox, pings and
 *     open sessions per user are bounded, and a refused request stores
 *     nothing (issue 8 b; the HTTP side is t0520-poll-limits.sh);
 *   - a session opened with its token only inside its path is rate-limited
 *     as its user, not as its address (issue 8 c).
 */
#include "th.h"
#include "sample_catalog.h"
#include "handlers.h"
#include "memres.h"
#include "auth.h"
#include "bell.h"
#include "ident.h"
#include "pollsess.h"
#include "ratelimit.h"
#include "util.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

static struct parley_config cfg;
static char dbpath[512], bellpath[512];
static struct parley_ctx ctx;

static int call(const char *method, const char *path, const char *query, const char *body,
                json_t **out)
{
    char *text = NULL;
    int status = mem_dispatch(&ctx, method, path, query, body, &text);
    if (out)
        *out = text && *text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    return status;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int open_session(const char *wspath, char *sid)
{
    char body[300];
    snprintf(body, sizeof body, "{\"path\": \"%s\"}", wspath);
    json_t *o = NULL;
    int st = call("POST", "/api/poll/open", NULL, body, &o);
    const char *s = json_string_value(json_object_get(o, "sid"));
    if (st == 200 && s)
        str_copy(sid, 64, s);
    json_decref(o);
    return st;
}

/* GET with cursor and wait; returns the status, *cursor the answer's. */
static int get(const char *sid, long long *cursor, int wait, int *nframes)
{
    char path[128], q[64];
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    snprintf(q, sizeof q, "cursor=%lld&wait=%d", *cursor, wait);
    json_t *o = NULL;
    int st = call("GET", path, q, NULL, &o);
    if (st == 200) {
        *cursor = json_integer_value(json_object_get(o, "cursor"));
        if (nframes)
            *nframes = (int)json_array_size(json_object_get(o, "messages"));
    }
    json_decref(o);
    return st;
}

TEST(a_waiting_get_renews_its_session)
{
    cfg.poll_idle_s = 2;
    char sid[64];
    REQUIRE(open_session("/ws/chat/homestyle", sid) == 200);
    long long cursor = 0;
    CHECK_INT(get(sid, &cursor, 0, NULL), 200);
    /* more than half of the idle time left: the old code renewed nothing,
     * then waited 2 s, past the session's expiry */
    sleep_ms(900);
    CHECK_INT(get(sid, &cursor, 2, NULL), 200);
    /* the client polls again at once: its session must still be there */
    CHECK_INT(get(sid, &cursor, 0, NULL), 200);
    CHECK_INT(get(sid, &cursor, 2, NULL), 200);
    CHECK_INT(get(sid, &cursor, 2, NULL), 200);
    CHECK_INT(get(sid, &cursor, 0, NULL), 200);
    cfg.poll_idle_s = 60;
}

#define SECRET "poll-limits-test-secret"

static void set(const char *key, const char *value)
{
    char err[256];
    if (config_set(&cfg, key, value, err, sizeof err) < 0)
        printf("# config_set %s: %s\n", key, err);
}

/* "token=<JWT of sub>" for a query. */
static const char *token_q(const char *sub, char *buf, size_t len)
{
    char *t = auth_make_token(SECRET, sub, (int64_t)time(NULL) + 3600);
    snprintf(buf, len, "token=%s", t ? t : "");
    free(t);
    return buf;
}

/* POST /api/poll/open as sub (token in the query); sid into sid[64]. */
static int open_as(const char *sub, const char *wspath, char *sid)
{
    char body[1200], q[1024];
    snprintf(body, sizeof body, "{\"path\": \"%s\"}", wspath);
    json_t *o = NULL;
    int st = call("POST", "/api/poll/open", sub ? token_q(sub, q, sizeof q) : NULL, body, &o);
    const char *s = json_string_value(json_object_get(o, "sid"));
    if (st == 200 && s)
        str_copy(sid, 64, s);
    json_decref(o);
    return st;
}

/* A request of sub's session sid: method, query extra ("" or "cursor=..&"),
 * body; returns the status, *out the JSON (new, may be NULL). */
static int session_call(const char *sub, const char *method, const char *sid, const char *extra,
                        const char *body, json_t **out)
{
    char path[128], q[1200], tq[1024];
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    snprintf(q, sizeof q, "%s%s", extra, token_q(sub, tq, sizeof tq));
    return call(method, path, q, body, out);
}

/* n NDJSON lines of frame (new string). */
static char *lines(int n, const char *frame)
{
    size_t fl = strlen(frame);
    char *b = malloc((fl + 1) * (size_t)n + 1), *p = b;
    for (int i = 0; b && i < n; i++) {
        memcpy(p, frame, fl);
        p += fl;
        *p++ = '\n';
    }
    if (b)
        *p = '\0';
    return b;
}

TEST(sessions_per_user_are_capped)
{
    set("PARLEY_JWT_SECRET", SECRET);
    set("PARLEY_POLL_MAX_SESSIONS", "3");
    char sid[4][64], other[64];
    for (int i = 0; i < 3; i++)
        CHECK_INT(open_as("cap-alice", "/ws/chat/homestyle", sid[i]), 200);
    json_t *o = NULL;
    char body[] = "{\"path\": \"/ws/chat/homestyle\"}", q[1024];
    CHECK_INT(call("POST", "/api/poll/open", token_q("cap-alice", q, sizeof q), body, &o), 429);
    const char *m = json_string_value(json_object_get(o, "message"));
    CHECK(m && strstr(m, "sessions") != NULL);
    json_decref(o);
    CHECK_INT(open_as("cap-bob", "/ws/chat/homestyle", other), 200);      /* another user */
    CHECK_INT(session_call("cap-alice", "DELETE", sid[0], "", NULL, NULL), 204);
    CHECK_INT(open_as("cap-alice", "/ws/chat/homestyle", sid[3]), 200);   /* room again */
    set("PARLEY_POLL_MAX_SESSIONS", "0");                                 /* no cap */
    CHECK_INT(open_as("cap-alice", "/ws/chat/homestyle", sid[0]), 200);
    set("PARLEY_POLL_MAX_SESSIONS", "");
    set("PARLEY_JWT_SECRET", "");
}

TEST(post_bounds_store_nothing_refused)
{
    char sid[64];
    REQUIRE(open_session("/ws/chat/homestyle", sid) == 200);
    char path[128];
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    long long cursor = 0;
    int w = 0;
    CHECK_INT(get(sid, &cursor, 0, &w), 200);                 /* the welcome */
    char *b = lines(257, "{\"type\":\"nope\"}");
    CHECK_INT(call("POST", path, NULL, b, NULL), 413);
    free(b);
    long long c0 = 0;
    int n = -1;
    CHECK_INT(get(sid, &c0, 0, &n), 200);
    CHECK_INT(n, w);                                           /* nothing stored */
    b = lines(200, "{\"type\":\"nope\"}");
    CHECK_INT(call("POST", path, NULL, b, NULL), 202);
    free(b);
    b = lines(256 - 200 - w + 1, "{\"type\":\"nope\"}");
    CHECK_INT(call("POST", path, NULL, b, NULL), 429);        /* outbox full */
    c0 = 0;
    CHECK_INT(get(sid, &c0, 0, &n), 200);
    CHECK_INT(n, w + 200);                                     /* nothing of it stored */
    CHECK_INT(get(sid, &c0, 0, &n), 200);                      /* received: acknowledged */
    CHECK_INT(n, 0);
    CHECK_INT(call("POST", path, NULL, b, NULL), 202);        /* room again */
    free(b);
}

TEST(pings_are_rate_limited)
{
    set("RATE_LIMIT_MESSAGES_PER_MINUTE", "3");
    char sid[64], path[128];
    REQUIRE(open_session("/ws/chat/homestyle", sid) == 200);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    char *two = lines(2, "{\"type\":\"ping\",\"data\":{}}");
    CHECK_INT(call("POST", path, NULL, two, NULL), 202);
    CHECK_INT(call("POST", path, NULL, two, NULL), 429);      /* 4 > 3: all or none */
    CHECK_INT(call("POST", path, NULL, "{\"type\":\"ping\",\"data\":{}}", NULL), 202);
    CHECK_INT(call("POST", path, NULL, "{\"type\":\"ping\",\"data\":{}}", NULL), 429);
    free(two);
    set("RATE_LIMIT_MESSAGES_PER_MINUTE", "");
}

TEST(a_token_in_the_path_is_limited_as_its_user)
{
    set("PARLEY_JWT_SECRET", SECRET);
    set("RATE_LIMIT_MESSAGES_PER_MINUTE", "2");
    char peer[IDENT_PEER_MAX];
    ident_peer(peer, sizeof peer, "path-carol", "127.0.0.1");
    for (int i = 0; i < 2; i++)      /* carol's messages elsewhere (WebSocket, SSE) */
        CHECK_INT(ratelimit_hit(ctx.db, peer, 2, 60000, now_ms(), NULL), 1);
    char tok[1024], wspath[1200], sid[64];
    token_q("path-carol", tok, sizeof tok);
    snprintf(wspath, sizeof wspath, "/ws/pathconv-%lld?%s", (long long)now_ms(), tok);
    REQUIRE(open_as(NULL, wspath, sid) == 200);                /* no token but in path */
    const char *msg = "{\"type\":\"message\",\"content\":\"hi\",\"metadata\":{},"
                      "\"timestamp\":\"2024-01-20T10:30:00Z\"}";
    CHECK_INT(session_call("path-carol", "POST", sid, "", msg, NULL), 202);
    json_t *o = NULL;
    CHECK_INT(session_call("path-carol", "GET", sid, "cursor=0&wait=0&", NULL, &o), 200);
    json_t *m, *msgs = json_object_get(o, "messages");
    size_t i;
    int limited = 0;
    json_array_foreach(msgs, i, m) {
        const char *t = json_string_value(json_object_get(m, "type"));
        const char *text = json_string_value(json_object_get(m, "message"));
        if (t && !strcmp(t, "error") && text && !strcmp(text, "Rate limit exceeded"))
            limited = 1;
    }
    CHECK(limited);
    if (!limited) {
        char *d = json_dumps(o, 0);
        printf("# frames: %.600s\n", d ? d : "?");
        free(d);
    }
    json_decref(o);
    set("RATE_LIMIT_MESSAGES_PER_MINUTE", "");
    set("PARLEY_JWT_SECRET", "");
}

int main(void)
{
    char err[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);
    snprintf(dbpath, sizeof dbpath, "%s/polllimits.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/polllimits.db-bell", th_tmpdir());
    config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err);
    ctx.cfg = &cfg;
    ctx.db = db_open(dbpath, err, sizeof err);
    if (!ctx.db) {
        fprintf(stderr, "db_open: %s\n", err);
        return 2;
    }
    if (sample_catalog_import(ctx.db) < 0)       /* the demo brand homestyle */
        return 2;
    ctx.bell = bell_open(bellpath, err, sizeof err);
    RUN(a_waiting_get_renews_its_session);
    RUN(sessions_per_user_are_capped);
    RUN(post_bounds_store_nothing_refused);
    RUN(pings_are_rate_limited);
    RUN(a_token_in_the_path_is_limited_as_its_user);
    bell_close(ctx.bell);
    db_close(ctx.db);
    return th_done();
}
