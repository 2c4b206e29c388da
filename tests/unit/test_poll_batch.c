/* test_poll_batch.c — the long-poll GET (fcgi/poll_get.c, poll_hub.c) with many waiting
 * requests at once, driven through http_dispatch() from threads (one
 * database connection each, one shared doorbell), as parley.fcgi's workers
 * run them:
 *   - many sessions on one channel, pumped together by one batch per event:
 *     every client gets every event exactly once and in order, also when a
 *     response is "lost" (the same cursor polled again gets the same frames
 *     back) and when two processes serve sessions of the channel at once;
 *   - sessions on their own channels (no batching across channels);
 *   - idle waiters do not wake up at all, and bell_wake_all() ends every
 *     waiting GET at once (shutdown, as fcgi/server_life.c's signal thread does).
 * Every wait is bounded, so a broken transport fails a case instead of
 * hanging. */
#include "th.h"
#include "handlers.h"
#include "memres.h"
#include "bell.h"
#include "db_sqlite.h"
#include "evlog.h"
#include "pollsess.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct parley_config cfg;
static char dbpath[512], bellpath[512];
/* The job publish() writes its tokens as (0: none). With a job, the
 * sessions adopt it at its first event (a pump) and take its later tokens
 * as virtual frames (fcgi/poll_replay.h): no write per delivery. */
static int64_t pub_job;

/* Dispatches one request on ctx; returns the status, *out the parsed JSON
 * body (new, may be NULL). */
static int call(struct parley_ctx *ctx, const char *method, const char *path, const char *query,
                const char *body, json_t **out)
{
    char *text = NULL;
    int status = mem_dispatch(ctx, method, path, query, body, &text);
    if (out)
        *out = text && *text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    return status;
}

static int ctx_open(struct parley_ctx *c, parley_bell *bell)
{
    char err[512];
    memset(c, 0, sizeof *c);
    c->cfg = &cfg;
    c->bell = bell;
    c->db = db_open(dbpath, err, sizeof err);
    if (!c->db)
        printf("# db_open: %s\n", err);
    return c->db ? 0 : -1;
}

/* Opens a long-poll session on ticket channel `ticket`; sid into sid[64]. */
static int open_session(struct parley_ctx *c, const char *wspath, char *sid)
{
    char body[300];
    snprintf(body, sizeof body, "{\"path\": \"%s\"}", wspath);
    json_t *o = NULL;
    int st = call(c, "POST", "/api/poll/open", NULL, body, &o);
    const char *s = json_string_value(json_object_get(o, "sid"));
    int ok = st == 200 && s;
    if (ok)
        str_copy(sid, 64, s);
    else
        printf("# poll/open %s: HTTP %d\n", wspath, st);
    json_decref(o);
    return ok ? 0 : -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- a client: polls until it has `want` stream frames ---- */

struct client {
    pthread_t th;
    parley_bell *bell;
    char sid[64];
    int want;                  /* stream frames to collect */
    int drop_every;            /* every Nth answer with frames is "lost": polled again */
    int got;                   /* frames, in order */
    int next;                  /* the number the next frame must carry */
    int errors, dropped, resent_ok;
    int done;
    char err[200];
};

/* Frames carry "e<N>": checks order and exactly-once. */
static void client_take(struct client *cl, json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!type || strcmp(type, "stream") != 0)
            continue;
        const char *content = json_string_value(json_object_get(m, "content"));
        int n = content && content[0] == 'e' ? atoi(content + 1) : -1;
        if (n != cl->next && !cl->err[0]) {
            snprintf(cl->err, sizeof cl->err, "frame %d where %d was due", n, cl->next);
            cl->errors++;
        }
        cl->next = n + 1;
        cl->got++;
    }
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct parley_ctx c;
    if (ctx_open(&c, cl->bell) < 0) {
        cl->errors++;
        cl->done = 1;
        return NULL;
    }
    char path[128], query[64];
    snprintf(path, sizeof path, "/api/poll/%s", cl->sid);
    long long cursor = 0;
    int answers = 0;
    int64_t until = mono_ms() + 20000;
    while (cl->got < cl->want && mono_ms() < until) {
        snprintf(query, sizeof query, "cursor=%lld&wait=5", cursor);
        json_t *o = NULL;
        int st = call(&c, "GET", path, query, NULL, &o);
        json_t *msgs = json_object_get(o, "messages");
        if (st != 200 || !json_is_array(msgs)) {
            if (!cl->err[0])
                snprintf(cl->err, sizeof cl->err, "GET: HTTP %d", st);
            cl->errors++;
            json_decref(o);
            break;
        }
        long long next = json_integer_value(json_object_get(o, "cursor"));
        if (json_array_size(msgs) > 0 && cl->drop_every && ++answers % cl->drop_every == 0) {
            /* the answer is lost on the way: poll again from the old cursor,
             * the same frames must come first */
            char *first = json_dumps(msgs, JSON_COMPACT);
            json_t *o2 = NULL;
            int st2 = call(&c, "GET", path, query, NULL, &o2);
            json_t *msgs2 = json_object_get(o2, "messages");
            size_t n1 = json_array_size(msgs), n2 = json_array_size(msgs2);
            int same = st2 == 200 && n2 >= n1;
            for (size_t i = 0; same && i < n1; i++)
                same = json_equal(json_array_get(msgs, i), json_array_get(msgs2, i));
            cl->dropped++;
            if (same) {
                cl->resent_ok++;
                json_decref(o);
                o = o2;
                msgs = msgs2;
                next = json_integer_value(json_object_get(o, "cursor"));
            } else {
                if (!cl->err[0])
                    snprintf(cl->err, sizeof cl->err, "resend differs: %s", first ? first : "?");
                cl->errors++;
                json_decref(o2);
            }
            free(first);
        }
        client_take(cl, msgs);
        cursor = next;
        json_decref(o);
    }
    if (cl->got != cl->want && !cl->err[0])
        snprintf(cl->err, sizeof cl->err, "%d of %d frames", cl->got, cl->want);
    db_close(c.db);
    cl->done = 1;
    return NULL;
}

/* Appends `count` token events "e1".."e<count>" to each channel, round
 * robin, with short random pauses so events land on batches in every
 * state. */
static int publish(const char *const *chans, int nchan, int count)
{
    char err[512];
    parley_db *db = db_open(dbpath, err, sizeof err);
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    int rc = db && bell ? 0 : -1;
    unsigned seed = (unsigned)getpid();
    for (int i = 1; i <= count && rc == 0; i++)
        for (int k = 0; k < nchan && rc == 0; k++) {
            char text[32];
            int n = snprintf(text, sizeof text, "e%d", i);
            if (evlog_append(db, bell, chans[k], pub_job, "token", text, (size_t)n) < 0)
                rc = -1;
            seed = seed * 1103515245u + 12345u;
            int pause = (int)((seed >> 16) % 4);
            if (pause)
                sleep_ms(pause);
        }
    bell_close(bell);
    db_close(db);
    return rc;
}

/* Runs n clients (sessions on the channels of tickets, client i on ticket
 * i mod ntickets), publishing count events per channel while they poll.
 * Returns the number of failed clients (details printed). */
static int run_clients(parley_bell *bell, const char *prefix, int n, int ntickets, int count,
                       int publish_here, int drop_every)
{
    struct client *cl = calloc((size_t)n, sizeof *cl);
    struct parley_ctx c;
    if (!cl || ctx_open(&c, bell) < 0)
        return n;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char wspath[128];
        snprintf(wspath, sizeof wspath, "/api/websocket/chat/%s%d?after=0", prefix, i % ntickets);
        cl[i].bell = bell;
        cl[i].want = count;
        cl[i].next = 1;
        cl[i].drop_every = drop_every && i % 3 == 0 ? drop_every : 0;
        if (open_session(&c, wspath, cl[i].sid) < 0)
            return n;
    }
    for (int i = 0; i < n; i++)
        pthread_create(&cl[i].th, NULL, client_main, &cl[i]);
    if (publish_here) {
        sleep_ms(100);             /* let most of them go to sleep first */
        const char *chans[64];
        char names[64][64];
        for (int k = 0; k < ntickets && k < 64; k++) {
            snprintf(names[k], sizeof names[k], "ticket:%s%d", prefix, k);
            chans[k] = names[k];
        }
        if (publish(chans, ntickets < 64 ? ntickets : 64, count) < 0) {
            printf("# publish failed\n");
            failed++;
        }
    }
    int dropped = 0, resent = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(cl[i].th, NULL);
        dropped += cl[i].dropped;
        resent += cl[i].resent_ok;
        if (cl[i].errors || cl[i].got != cl[i].want) {
            if (failed < 5)
                printf("# client %d (%s): %s\n", i, cl[i].sid, cl[i].err);
            failed++;
        }
    }
    if (drop_every && dropped == 0) {
        printf("# no response was dropped: the resend path was not exercised\n");
        failed++;
    }
    printf("# %d clients, %d events each, %d lost responses resent\n", n, count, resent);
    db_close(c.db);
    free(cl);
    return failed;
}

TEST(one_channel_many_sessions_exactly_once_in_order)
{
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    CHECK_INT(run_clients(bell, "fan", 40, 1, 60, 1, 4), 0);
    bell_close(bell);
}

TEST(own_channels_exactly_once_in_order)
{
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    CHECK_INT(run_clients(bell, "desk", 24, 24, 20, 1, 3), 0);
    bell_close(bell);
}

/* The sum of every session's save count (poll_sessions.version). */
static long long versions(void)
{
    char err[512];
    parley_db *db = db_open(dbpath, err, sizeof err);
    long long v = -1;
    sqlite3_stmt *st = db ? db_stmt(db, "SELECT coalesce(sum(version), 0) FROM poll_sessions") : NULL;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    if (st)
        sqlite3_reset(st);
    db_close(db);
    return v;
}

TEST(virtual_frames_exactly_once_in_order_without_a_write_each)
{
    /* tokens of one job: every client gets all 150 (past the 64 frames a
     * replay holds, twice), lost answers resent the same, and the sessions
     * are saved a few times each (adopting the job, every 64 frames), not
     * once per token as when each event is pumped into each outbox */
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    long long v0 = versions();
    pub_job = 4242;
    CHECK_INT(run_clients(bell, "vfan", 40, 1, 150, 1, 4), 0);
    CHECK_INT(run_clients(bell, "vdesk", 12, 4, 100, 1, 3), 0);
    pub_job = 0;
    long long saves = versions() - v0;
    printf("# %lld session saves for %d deliveries\n", saves, 40 * 150 + 12 * 100);
    CHECK(v0 >= 0 && saves < (40 * 150 + 12 * 100) / 10);
    bell_close(bell);
}

TEST(two_processes_share_a_channel)
{
    /* The child serves 16 sessions of the channel with its own connections
     * and doorbell handle, the parent 16 more, and the parent publishes. */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        char err[512];
        parley_bell *bell = bell_open(bellpath, err, sizeof err);
        int failed = bell ? run_clients(bell, "two", 16, 1, 40, 0, 5) : 1;
        fflush(stdout);
        _exit(failed ? 1 : 0);
    }
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    sleep_ms(300);                 /* the child's sessions are open and waiting */
    CHECK_INT(run_clients(bell, "two", 16, 1, 40, 1, 5), 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bell_close(bell);
}

TEST(two_processes_share_a_channel_virtual)
{
    /* as above with one job's tokens: the processes replay on their own and
     * must number the same frames the same */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        char err[512];
        pub_job = 77;
        parley_bell *bell = bell_open(bellpath, err, sizeof err);
        int failed = bell ? run_clients(bell, "vtwo", 16, 1, 100, 0, 5) : 1;
        fflush(stdout);
        _exit(failed ? 1 : 0);
    }
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    sleep_ms(300);
    pub_job = 77;
    CHECK_INT(run_clients(bell, "vtwo", 16, 1, 100, 1, 5), 0);
    pub_job = 0;
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bell_close(bell);
}

/* Collects GET answers from *cursor until `want` frames came (or 5 s):
 * appends each frame's "content" (tokens) or "type" (others) to out,
 * space separated. Returns the frames taken. */
static int collect(struct parley_ctx *c, const char *path, long long *cursor, int want,
                   char *out, size_t outlen)
{
    int got = 0;
    int64_t until = mono_ms() + 5000;
    while (got < want && mono_ms() < until) {
        char q[64];
        snprintf(q, sizeof q, "cursor=%lld&wait=2", *cursor);
        json_t *o = NULL;
        if (call(c, "GET", path, q, NULL, &o) != 200) {
            json_decref(o);
            break;
        }
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(o, "messages"), i, m) {
            const char *t = json_string_value(json_object_get(m, "content"));
            if (!t)
                t = json_string_value(json_object_get(m, "type"));
            size_t l = strlen(out);
            snprintf(out + l, outlen - l, "%s%s", l ? " " : "", t ? t : "?");
            got++;
        }
        *cursor = json_integer_value(json_object_get(o, "cursor"));
        json_decref(o);
    }
    return got;
}

TEST(a_post_comes_after_the_virtual_frames)
{
    /* the client received tokens as virtual frames; a POST's own frame (a
     * seed 000 error for a frame without ticketBody) must be numbered after
     * them and after the tokens that came since, each delivered once */
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    struct parley_ctx c;
    REQUIRE(ctx_open(&c, bell) == 0);
    char sid[64], path[128], got[512] = "";
    REQUIRE(open_session(&c, "/api/websocket/chat/vpost1?after=0", sid) == 0);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    long long cur = 0;
    collect(&c, path, &cur, 0, got, sizeof got);
    const char *chans[1] = { "ticket:vpost1" };
    pub_job = 91;
    REQUIRE(publish(chans, 1, 5) == 0);
    CHECK_INT(collect(&c, path, &cur, 5, got, sizeof got), 5);
    CHECK_STR(got, "e1 e2 e3 e4 e5");
    long long v0 = versions();
    REQUIRE(publish(chans, 1, 3) == 0);            /* e1..e3 again: 3 more tokens */
    CHECK_INT(collect(&c, path, &cur, 3, got, sizeof got), 3);
    CHECK_INT(versions() - v0, 0);                 /* delivered without a save */
    REQUIRE(publish(chans, 1, 2) == 0);            /* not fetched before the POST */
    CHECK_INT(call(&c, "POST", path, NULL, "{\"hello\": 1}", NULL), 202);
    REQUIRE(publish(chans, 1, 1) == 0);
    got[0] = '\0';
    CHECK_INT(collect(&c, path, &cur, 4, got, sizeof got), 4);
    CHECK_STR(got, "e1 e2 error e1");
    got[0] = '\0';
    CHECK_INT(collect(&c, path, &cur, 1, got, sizeof got), 0);   /* nothing twice */
    CHECK_STR(got, "");
    pub_job = 0;
    db_close(c.db);
    bell_close(bell);
}

/* A GET skips its look when the doorbell says nothing happened since the
 * last answer; a POST, a DELETE, an event or a lost answer in between must
 * still be seen at once. */
TEST(what_a_process_knows_of_a_session_is_checked)
{
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    struct parley_ctx c;
    REQUIRE(ctx_open(&c, bell) == 0);
    char sid[64], path[128], q[64];
    /* seed 001 follows nothing until a message: it waits on "poll:<sid>" */
    REQUIRE(open_session(&c, "/ws/5b2b8a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5d", sid) == 0);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    json_t *o = NULL;
    REQUIRE(call(&c, "GET", path, "cursor=0&wait=0", NULL, &o) == 200);
    long long cur = json_integer_value(json_object_get(o, "cursor"));
    CHECK(cur > 0);
    json_decref(o);
    /* known now: a POST's frame still comes at once */
    CHECK_INT(call(&c, "POST", path, NULL, "{\"type\":\"ping\"}", NULL), 202);
    snprintf(q, sizeof q, "cursor=%lld&wait=5", cur);
    int64_t t0 = mono_ms();
    REQUIRE(call(&c, "GET", path, q, NULL, &o) == 200);
    CHECK(mono_ms() - t0 < 2000);
    json_t *m0 = json_array_get(json_object_get(o, "messages"), 0);
    CHECK_STR(json_string_value(json_object_get(m0, "type")), "pong");
    long long cur2 = json_integer_value(json_object_get(o, "cursor"));
    CHECK_INT(cur2, cur + 1);
    json_decref(o);
    /* a lost answer: the old cursor again gets the pong again */
    t0 = mono_ms();
    REQUIRE(call(&c, "GET", path, q, NULL, &o) == 200);
    CHECK(mono_ms() - t0 < 2000);
    CHECK_INT(json_array_size(json_object_get(o, "messages")), 1);
    json_decref(o);
    /* nothing new: waits its time */
    snprintf(q, sizeof q, "cursor=%lld&wait=1", cur2);
    t0 = mono_ms();
    REQUIRE(call(&c, "GET", path, q, NULL, &o) == 200);
    CHECK(mono_ms() - t0 >= 900);
    CHECK_INT(json_array_size(json_object_get(o, "messages")), 0);
    json_decref(o);
    /* deleted by another process (its own doorbell handle and connection) */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        parley_bell *b2 = bell_open(bellpath, err, sizeof err);
        struct parley_ctx c2;
        int st = b2 && ctx_open(&c2, b2) == 0 ? call(&c2, "DELETE", path, NULL, NULL, NULL) : 0;
        _exit(st == 204 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    snprintf(q, sizeof q, "cursor=%lld&wait=5", cur2);
    t0 = mono_ms();
    CHECK_INT(call(&c, "GET", path, q, NULL, NULL), 410);
    CHECK(mono_ms() - t0 < 2000);
    /* a ticket session: an event between two GETs is delivered at once */
    REQUIRE(open_session(&c, "/api/websocket/chat/known1?after=0", sid) == 0);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    REQUIRE(call(&c, "GET", path, "cursor=0&wait=0", NULL, &o) == 200);
    cur = json_integer_value(json_object_get(o, "cursor"));
    json_decref(o);
    const char *chans[1] = { "ticket:known1" };
    REQUIRE(publish(chans, 1, 1) == 0);
    snprintf(q, sizeof q, "cursor=%lld&wait=5", cur);
    t0 = mono_ms();
    REQUIRE(call(&c, "GET", path, q, NULL, &o) == 200);
    CHECK(mono_ms() - t0 < 2000);
    m0 = json_array_get(json_object_get(o, "messages"), 0);
    CHECK_STR(json_string_value(json_object_get(m0, "content")), "e1");
    json_decref(o);
    db_close(c.db);
    bell_close(bell);
}

/* ---- idle waiters and shutdown ---- */

struct idler {
    pthread_t th;
    parley_bell *bell;
    char sid[64];
    pid_t tid;
    int status;
    int64_t took_ms;
    int ready;
};

static void *idler_main(void *arg)
{
    struct idler *w = arg;
    struct parley_ctx c;
    w->tid = (pid_t)syscall(SYS_gettid);
    if (ctx_open(&c, w->bell) < 0) {
        w->status = -1;
        w->ready = 1;
        return NULL;
    }
    char path[128];
    snprintf(path, sizeof path, "/api/poll/%s", w->sid);
    /* the opening frames first, then a wait with nothing to come */
    json_t *o = NULL;
    call(&c, "GET", path, "cursor=0&wait=0", NULL, &o);
    long long cursor = json_integer_value(json_object_get(o, "cursor"));
    json_decref(o);
    char query[64];
    snprintf(query, sizeof query, "cursor=%lld&wait=20", cursor);
    __atomic_store_n(&w->ready, 1, __ATOMIC_SEQ_CST);
    int64_t t0 = mono_ms();
    w->status = call(&c, "GET", path, query, NULL, NULL);
    w->took_ms = mono_ms() - t0;
    db_close(c.db);
    return NULL;
}

static long voluntary_switches(pid_t tid)
{
    char p[96], line[256];
    snprintf(p, sizeof p, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(p, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* An event arrives while a POST of the session (another process) holds its
 * lock: the waiting GET is not answered 409; it gets the frame once the
 * POST has saved and rung, as h_poll_post does. */
TEST(event_during_a_post_waits_for_it)
{
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    struct parley_ctx c;
    REQUIRE(ctx_open(&c, bell) == 0);
    struct idler w;
    memset(&w, 0, sizeof w);
    REQUIRE(open_session(&c, "/api/websocket/chat/locked1?after=0", w.sid) == 0);
    int pfd[2], gfd[2];              /* child -> parent "locked"; parent -> child "go" */
    REQUIRE(pipe(pfd) == 0 && pipe(gfd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* the "POST": lock, wait for the parent's go, hold 400 ms, save, ring */
        char e2[512], go;
        parley_db *db = db_open(dbpath, e2, sizeof e2);
        parley_bell *b2 = bell_open(bellpath, e2, sizeof e2);
        char *state = NULL;
        int ok = db && b2 && poll_lock(db, w.sid, 60, &state, NULL, 0) == 0;
        free(state);
        if (write(pfd[1], ok ? "L" : "E", 1) != 1 || read(gfd[0], &go, 1) != 1)
            _exit(2);
        sleep_ms(400);
        ok = ok && poll_save(db, w.sid, NULL, NULL, 0, 60) == 0;
        if (b2) {
            bell_ring(b2, "poll:x");
            bell_ring(b2, "ticket:locked1");
        }
        _exit(ok ? 0 : 1);
    }
    char got = 0;
    REQUIRE(read(pfd[0], &got, 1) == 1);
    CHECK(got == 'L');
    w.bell = bell;
    pthread_create(&w.th, NULL, idler_main, &w);   /* GETs with wait=20 */
    while (!__atomic_load_n(&w.ready, __ATOMIC_SEQ_CST))
        sleep_ms(5);
    sleep_ms(200);
    const char *chans[1] = { "ticket:locked1" };
    REQUIRE(publish(chans, 1, 1) == 0);            /* batch: the session is locked */
    REQUIRE(write(gfd[1], "g", 1) == 1);
    pthread_join(w.th, NULL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_INT(w.status, 200);                     /* not 409 */
    CHECK(w.took_ms >= 300 && w.took_ms < 5000);  /* after the POST's save */
    close(pfd[0]);
    close(pfd[1]);
    close(gfd[0]);
    close(gfd[1]);
    db_close(c.db);
    bell_close(bell);
}

TEST(idle_waiters_sleep_and_wake_all_ends_them)
{
    /* A handle of its own: bell_wake_all stops only this one. */
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    struct parley_ctx c;
    REQUIRE(ctx_open(&c, bell) == 0);
    enum { N = 6 };
    struct idler w[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        char wspath[128];
        if (i < N - 1)         /* following a ticket channel (the hub) */
            snprintf(wspath, sizeof wspath, "/api/websocket/chat/idle%d?after=0", i % 2);
        else                   /* following nothing: waits on its own bell */
            snprintf(wspath, sizeof wspath, "/ws/%s", "3f2b8a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
        REQUIRE(open_session(&c, wspath, w[i].sid) == 0);
        w[i].bell = bell;
        pthread_create(&w[i].th, NULL, idler_main, &w[i]);
    }
    for (int i = 0; i < N; i++)
        while (!__atomic_load_n(&w[i].ready, __ATOMIC_SEQ_CST))
            sleep_ms(5);
    sleep_ms(300);                 /* asleep now */
    long before[N];
    for (int i = 0; i < N; i++)
        before[i] = voluntary_switches(w[i].tid);
    sleep_ms(2500);                /* the old 1 s slices would wake each twice */
    for (int i = 0; i < N; i++) {
        long after = voluntary_switches(w[i].tid);
        CHECK(before[i] >= 0 && after >= 0);
        if (after - before[i] > 0)
            printf("# waiter %d woke %ld times while idle\n", i, after - before[i]);
        CHECK(after - before[i] == 0);
    }
    int64_t t0 = mono_ms();
    bell_wake_all(bell);
    CHECK(mono_ms() - t0 < 500);
    CHECK(bell_stopped(bell));
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].th, NULL);
        CHECK_INT(w[i].status, 200);
        if (w[i].took_ms > 3500 + 1000)
            printf("# waiter %d took %lld ms\n", i, (long long)w[i].took_ms);
        CHECK(w[i].took_ms < 3500 + 1000);   /* 300 + 2500 ms asleep, then at once */
    }
    /* a GET on a stopped handle answers at once too */
    char path[128];
    snprintf(path, sizeof path, "/api/poll/%s", w[0].sid);
    int64_t t1 = mono_ms();
    CHECK_INT(call(&c, "GET", path, "cursor=0&wait=20", NULL, NULL), 200);
    CHECK(mono_ms() - t1 < 1000);
    db_close(c.db);
    bell_close(bell);
}

/* What parley.fcgi's signal thread does at a stop signal (fcgi/server_life.c,
 * request_stop): parley_stopping = 1, then bell_wake_all() on the shared
 * doorbell. Waiting GETs (following a channel, and following nothing)
 * answer at once, and a GET that comes after does not wait. */
TEST(stop_signal_ends_waits_at_once)
{
    char err[512];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    struct parley_ctx c;
    REQUIRE(ctx_open(&c, bell) == 0);
    struct idler w[2];
    memset(w, 0, sizeof w);
    REQUIRE(open_session(&c, "/api/websocket/chat/stop1?after=0", w[0].sid) == 0);
    REQUIRE(open_session(&c, "/ws/4a2b8a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5c", w[1].sid) == 0);
    for (int i = 0; i < 2; i++) {
        w[i].bell = bell;
        pthread_create(&w[i].th, NULL, idler_main, &w[i]);
    }
    for (int i = 0; i < 2; i++)
        while (!__atomic_load_n(&w[i].ready, __ATOMIC_SEQ_CST))
            sleep_ms(5);
    sleep_ms(300);
    parley_stopping = 1;
    bell_wake_all(bell);
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].th, NULL);
        CHECK_INT(w[i].status, 200);
        CHECK(w[i].took_ms < 300 + 1000);
    }
    char path[128];
    snprintf(path, sizeof path, "/api/poll/%s", w[0].sid);
    int64_t t0 = mono_ms();
    CHECK_INT(call(&c, "GET", path, "cursor=0&wait=20", NULL, NULL), 200);
    CHECK(mono_ms() - t0 < 1000);
    parley_stopping = 0;
    db_close(c.db);
    bell_close(bell);
}

int main(void)
{
    char err[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);
    snprintf(dbpath, sizeof dbpath, "%s/pollbatch.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/pollbatch.db-bell", th_tmpdir());
    config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err);
    parley_db *db = db_open(dbpath, err, sizeof err);   /* migrate once */
    if (!db) {
        fprintf(stderr, "db_open: %s\n", err);
        return 2;
    }
    db_close(db);
    RUN(one_channel_many_sessions_exactly_once_in_order);
    RUN(own_channels_exactly_once_in_order);
    RUN(two_processes_share_a_channel);
    RUN(virtual_frames_exactly_once_in_order_without_a_write_each);
    RUN(two_processes_share_a_channel_virtual);
    RUN(a_post_comes_after_the_virtual_frames);
    RUN(what_a_process_knows_of_a_session_is_checked);
    RUN(event_during_a_post_waits_for_it);
    RUN(idle_waiters_sleep_and_wake_all_ends_them);
    RUN(stop_signal_ends_waits_at_once);
    return th_done();
}
