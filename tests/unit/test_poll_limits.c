/* test_poll_limits.c — the long-poll transport's lifetime and bounds
 * (fcgi/poll_*.c), driven through http_dispatch() with a real database and
 * doorbell:
 *   - a session never expires while its client keeps polling: a GET that
 *     waits renews the session for the time it waits (issue 8 i: a GET
 *     that began with more than half of PARLEY_POLL_IDLE left did not renew
 *     it, and the session expired under the waiting client);
 *   - frames per POST, frames waiting in a session's outbox, pings and
 *     open sessions per user are bounded, and a refused request stores
 *     nothing (issue 8 b; the HTTP side is t0520-poll-limits.sh).
 */
#include "th.h"
#include "handlers.h"
#include "memres.h"
#include "bell.h"
#include "pollsess.h"
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
    ctx.bell = bell_open(bellpath, err, sizeof err);
    RUN(a_waiting_get_renews_its_session);
    bell_close(ctx.bell);
    db_close(ctx.db);
    return th_done();
}
