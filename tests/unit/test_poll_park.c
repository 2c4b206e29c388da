/* test_poll_park.c — parked long-poll GETs (fcgi/poll_park.c): a waiting GET
 * that holds no thread. Requests go through http_dispatch() on a memory
 * transport that can park (struct response's release, as parley.fcgi's
 * threaded modes offer): a GET with nothing to answer returns from the
 * dispatch parked, and the process's hub thread answers it later.
 *   - many sessions on one channel and on channels of their own: every
 *     client gets every event exactly once and in order, every GET that
 *     waited was parked at once (all of them at the same time) and answered
 *     from the hub thread;
 *   - a parked GET's answer is byte for byte what a GET answered in its
 *     thread sends;
 *   - a parked GET at its deadline answers with nothing, as a waiting one;
 *   - GETs grouped by their channel: another channel's ring wakes none of
 *     them, a short deadline among long ones ends alone;
 *   - shutdown (poll_park_shutdown: bell_wake_all) answers every parked GET
 *     at once.
 * Every wait is bounded, so a broken hub fails a case instead of hanging. */
#include "th.h"
#include "handlers.h"
#include "memres.h"
#include "poll_park.h"
#include "poll_transport.h"
#include "bell.h"
#include "evlog.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static struct parley_config cfg;
static char dbpath[512], bellpath[512];
static parley_bell *g_bell;            /* the process's doorbell (the hub's too) */

/* ---- a memory transport that can park ---- */

struct pex {
    struct request r;
    struct response res;
    struct mem m;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished, released;
    pid_t finisher;                    /* the thread that finished it */
};

static struct pex *pex_of(struct response *res)
{
    return (struct pex *)((char *)res - offsetof(struct pex, res));
}

static int pex_write(struct response *res, const char *d, size_t n)
{
    return mem_write(&(struct response){ .impl = &pex_of(res)->m }, d, n);
}

static int pex_flush(struct response *res)
{
    (void)res;
    return 0;
}

static void pex_finish(struct response *res)
{
    struct pex *x = pex_of(res);
    pthread_mutex_lock(&x->mu);
    x->finished = 1;
    x->finisher = (pid_t)syscall(SYS_gettid);
    pthread_mutex_unlock(&x->mu);
}

static void pex_release(struct response *res)
{
    struct pex *x = pex_of(res);
    pthread_mutex_lock(&x->mu);
    x->released = 1;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static const struct response_ops pex_ops = { pex_write, pex_flush, pex_finish };

static int parks_total, hub_answers;   /* atomics */

/* Dispatches a request; may_park: offer parking. Returns the status; *all
 * gets the whole response (headers too; new string), *parked whether it
 * was parked. A parked request is waited for (at most 40 s: then -1). */
static int pcall(struct parley_ctx *ctx, int may_park, const char *method, const char *path,
                 const char *query, const char *json, char **all, int *parked)
{
    struct pex *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->res.ops = &pex_ops;
    x->res.impl = &x->m;
    if (may_park)
        x->res.release = pex_release;
    x->r.res = &x->res;
    x->r.ctx = ctx;
    x->r.method = method;
    x->r.path = path;
    x->r.query = query;
    x->r.content_type = json ? "application/json" : NULL;
    x->r.body = json;
    x->r.body_len = json ? strlen(json) : 0;
    x->r.remote_addr = "127.0.0.1";
    pid_t me = (pid_t)syscall(SYS_gettid);
    http_dispatch(&x->r);
    int was = x->res.parked;
    if (parked)
        *parked = was;
    if (was) {
        __atomic_add_fetch(&parks_total, 1, __ATOMIC_SEQ_CST);
        x->r.park(&x->r, x->r.park_arg);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 40;
        pthread_mutex_lock(&x->mu);
        while (!x->released)
            if (pthread_cond_timedwait(&x->cv, &x->mu, &ts) != 0)
                break;
        int ok = x->released;
        pthread_mutex_unlock(&x->mu);
        if (!ok)
            return -1;         /* still the hub's: not freed */
        if (x->finished && x->finisher != me)
            __atomic_add_fetch(&hub_answers, 1, __ATOMIC_SEQ_CST);
    }
    int status = 0;
    const char *text = x->m.buf ? x->m.buf : "";
    sscanf(text, "Status: %d", &status);
    if (!x->finished)
        status = -1;
    if (all)
        *all = strdup(text);
    free(x->m.buf);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    free(x);
    return status;
}

/* The JSON body of a whole response (new, may be NULL). */
static json_t *body_of(const char *all)
{
    const char *sep = all ? strstr(all, "\r\n\r\n") : NULL;
    return sep ? json_loads(sep + 4, JSON_DECODE_ANY, NULL) : NULL;
}

static int ctx_open(struct parley_ctx *c)
{
    char err[512];
    memset(c, 0, sizeof *c);
    c->cfg = &cfg;
    c->bell = g_bell;
    c->db = db_open(dbpath, err, sizeof err);
    if (!c->db)
        printf("# db_open: %s\n", err);
    return c->db ? 0 : -1;
}

static int open_session(struct parley_ctx *c, const char *wspath, char *sid)
{
    char body[300], *all = NULL;
    snprintf(body, sizeof body, "{\"path\": \"%s\"}", wspath);
    int st = pcall(c, 0, "POST", "/api/poll/open", NULL, body, &all, NULL);
    json_t *o = body_of(all);
    const char *s = json_string_value(json_object_get(o, "sid"));
    int ok = st == 200 && s;
    if (ok)
        str_copy(sid, 64, s);
    else
        printf("# poll/open %s: HTTP %d\n", wspath, st);
    json_decref(o);
    free(all);
    return ok ? 0 : -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The job publish() writes its tokens as (0: none); with one, parked GETs
 * take the tokens as virtual frames (fcgi/poll_replay.h). */
static int64_t pub_job;

static int publish(const char *const *chans, int nchan, int count)
{
    char err[512];
    parley_db *db = db_open(dbpath, err, sizeof err);
    int rc = db ? 0 : -1;
    unsigned seed = (unsigned)getpid();
    for (int i = 1; i <= count && rc == 0; i++)
        for (int k = 0; k < nchan && rc == 0; k++) {
            char text[32];
            int n = snprintf(text, sizeof text, "e%d", i);
            if (evlog_append(db, g_bell, chans[k], pub_job, "token", text, (size_t)n) < 0)
                rc = -1;
            seed = seed * 1103515245u + 12345u;
            int pause = (int)((seed >> 16) % 4);
            if (pause)
                sleep_ms(pause);
        }
    db_close(db);
    return rc;
}

/* ---- clients ---- */

struct client {
    pthread_t th;
    char sid[64];
    int want, got, next, errors, parked, done;
    char err[200];
};

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct parley_ctx c;
    if (ctx_open(&c) < 0) {
        cl->errors++;
        __atomic_store_n(&cl->done, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    char path[128], query[64];
    snprintf(path, sizeof path, "/api/poll/%s", cl->sid);
    long long cursor = 0;
    int64_t until = mono_ms() + 30000;
    while (cl->got < cl->want && mono_ms() < until) {
        snprintf(query, sizeof query, "cursor=%lld&wait=10", cursor);
        char *all = NULL;
        int parked = 0;
        int st = pcall(&c, 1, "GET", path, query, NULL, &all, &parked);
        json_t *o = body_of(all);
        free(all);
        json_t *msgs = json_object_get(o, "messages");
        if (st != 200 || !json_is_array(msgs)) {
            snprintf(cl->err, sizeof cl->err, "GET: HTTP %d", st);
            cl->errors++;
            json_decref(o);
            break;
        }
        cl->parked += parked;
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
        cursor = json_integer_value(json_object_get(o, "cursor"));
        json_decref(o);
    }
    if (cl->got != cl->want && !cl->err[0])
        snprintf(cl->err, sizeof cl->err, "%d of %d frames", cl->got, cl->want);
    db_close(c.db);
    __atomic_store_n(&cl->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* n clients (client i on ticket prefix<i mod ntickets>), count events per
 * channel. Returns the failed clients; *max_parked: the most parked at once
 * while they waited for the first event. */
static int run_clients(const char *prefix, int n, int ntickets, int count, int *max_parked)
{
    struct client *cl = calloc((size_t)n, sizeof *cl);
    struct parley_ctx c;
    if (!cl || ctx_open(&c) < 0)
        return n;
    for (int i = 0; i < n; i++) {
        char wspath[128];
        snprintf(wspath, sizeof wspath, "/api/websocket/chat/%s%d?after=0", prefix, i % ntickets);
        cl[i].want = count;
        cl[i].next = 1;
        if (open_session(&c, wspath, cl[i].sid) < 0)
            return n;
    }
    for (int i = 0; i < n; i++)
        pthread_create(&cl[i].th, NULL, client_main, &cl[i]);
    /* every client's second GET has nothing to answer: parked, all at once */
    *max_parked = 0;
    for (int64_t until = mono_ms() + 5000; mono_ms() < until && *max_parked < n;) {
        int k = poll_park_count();
        if (k > *max_parked)
            *max_parked = k;
        sleep_ms(5);
    }
    const char *chans[64];
    char names[64][64];
    for (int k = 0; k < ntickets && k < 64; k++) {
        snprintf(names[k], sizeof names[k], "ticket:%s%d", prefix, k);
        chans[k] = names[k];
    }
    int failed = 0;
    if (publish(chans, ntickets < 64 ? ntickets : 64, count) < 0) {
        printf("# publish failed\n");
        failed++;
    }
    int parked = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(cl[i].th, NULL);
        parked += cl[i].parked;
        if (cl[i].errors || cl[i].got != cl[i].want) {
            if (failed < 5)
                printf("# client %d (%s): %s\n", i, cl[i].sid, cl[i].err);
            failed++;
        }
    }
    printf("# %d clients, %d events each: %d GETs parked, %d at most at once\n", n, count, parked,
           *max_parked);
    db_close(c.db);
    free(cl);
    return failed;
}

/* poll_park_count() once it is n, within 5 s (the hub lets a parked GET's
 * place go just after its answer was written: a client that has its
 * answer may look a moment before that). */
static int count_when(int n)
{
    int c = poll_park_count();
    for (int64_t until = mono_ms() + 5000; c != n && mono_ms() < until; sleep_ms(5))
        c = poll_park_count();
    return c;
}

TEST(parked_gets_get_every_event_exactly_once_in_order)
{
    int before = __atomic_load_n(&hub_answers, __ATOMIC_SEQ_CST), most = 0;
    CHECK_INT(run_clients("fan", 40, 1, 60, &most), 0);
    CHECK_INT(most, 40);               /* all 40 waited parked at once */
    CHECK(__atomic_load_n(&hub_answers, __ATOMIC_SEQ_CST) - before >= 40);
    CHECK_INT(run_clients("desk", 24, 24, 20, &most), 0);
    CHECK_INT(most, 24);
    CHECK_INT(count_when(0), 0);
}

TEST(parked_gets_get_virtual_frames_exactly_once_in_order)
{
    /* one job's tokens: the hub views the replay for every parked GET
     * instead of pumping each session per event */
    int most = 0;
    pub_job = 515;
    CHECK_INT(run_clients("vfan", 40, 1, 150, &most), 0);
    CHECK_INT(most, 40);
    CHECK_INT(run_clients("vdesk", 24, 6, 80, &most), 0);
    pub_job = 0;
    CHECK_INT(count_when(0), 0);
}

/* One GET in a thread of its own (it may park). */
struct one_get {
    pthread_t th;
    const char *path;
    char q[64];
    char *all;
    int st, parked;
    int64_t took_ms;
};

static void *one_get_main(void *arg)
{
    struct one_get *a = arg;
    struct parley_ctx c;
    if (ctx_open(&c) < 0) {
        a->st = -1;
        return NULL;
    }
    int64_t t0 = mono_ms();
    a->st = pcall(&c, 1, "GET", a->path, a->q, NULL, &a->all, &a->parked);
    a->took_ms = mono_ms() - t0;
    db_close(c.db);
    return NULL;
}

/* Waits (at most 5 s) until n GETs are parked. */
static int wait_parked(int n)
{
    for (int64_t until = mono_ms() + 5000; mono_ms() < until; sleep_ms(5))
        if (poll_park_count() >= n)
            return 1;
    return 0;
}

/* A parked GET's answer and a GET answered in its thread, same cursor. */
TEST(parked_answer_is_byte_for_byte_the_same)
{
    struct parley_ctx c;
    REQUIRE(ctx_open(&c) == 0);
    char sid[64], path[128], *all = NULL;
    REQUIRE(open_session(&c, "/api/websocket/chat/same1?after=0", sid) == 0);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    REQUIRE(pcall(&c, 1, "GET", path, "cursor=0&wait=0", NULL, &all, NULL) == 200);
    json_t *o = body_of(all);
    long long cur = json_integer_value(json_object_get(o, "cursor"));
    json_decref(o);
    free(all);
    struct one_get a;
    memset(&a, 0, sizeof a);
    a.path = path;
    snprintf(a.q, sizeof a.q, "cursor=%lld&wait=10", cur);
    pthread_create(&a.th, NULL, one_get_main, &a);
    CHECK(wait_parked(1));
    const char *chans[1] = { "ticket:same1" };
    REQUIRE(publish(chans, 1, 1) == 0);   /* one event: nothing after the answer */
    pthread_join(a.th, NULL);
    CHECK_INT(a.st, 200);
    CHECK(a.parked);
    /* the same GET answered in the thread (no parking offered) */
    char *again = NULL;
    int parked = 1;
    CHECK_INT(pcall(&c, 0, "GET", path, a.q, NULL, &again, &parked), 200);
    CHECK(!parked);
    CHECK(a.all && again && strcmp(a.all, again) == 0);
    if (a.all && again && strcmp(a.all, again) != 0)
        printf("# parked:\n# %s\n# in the thread:\n# %s\n", a.all, again);
    o = body_of(a.all);
    CHECK(json_array_size(json_object_get(o, "messages")) >= 1);
    json_decref(o);
    free(a.all);
    free(again);
    db_close(c.db);
}

/* A parked GET's wait ends with nothing: the empty answer, after its wait. */
TEST(parked_get_answers_at_its_deadline)
{
    struct parley_ctx c;
    REQUIRE(ctx_open(&c) == 0);
    char sid[64], path[128], *all = NULL;
    REQUIRE(open_session(&c, "/api/websocket/chat/quiet1?after=0", sid) == 0);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    REQUIRE(pcall(&c, 1, "GET", path, "cursor=0&wait=0", NULL, &all, NULL) == 200);
    json_t *o = body_of(all);
    long long cur = json_integer_value(json_object_get(o, "cursor"));
    json_decref(o);
    free(all);
    struct one_get a;
    memset(&a, 0, sizeof a);
    a.path = path;
    snprintf(a.q, sizeof a.q, "cursor=%lld&wait=1", cur);
    pthread_create(&a.th, NULL, one_get_main, &a);
    pthread_join(a.th, NULL);
    CHECK_INT(a.st, 200);
    CHECK(a.parked);
    CHECK(a.took_ms >= 900);
    o = body_of(a.all);
    CHECK_INT(json_array_size(json_object_get(o, "messages")), 0);
    CHECK_INT(json_integer_value(json_object_get(o, "cursor")), cur);
    json_decref(o);
    free(a.all);
    db_close(c.db);
}

/* Opens a session on ticket:<ticket> and reads it once: *path its poll
 * path, returns the cursor (-1 on failure). */
static long long fresh_session(struct parley_ctx *c, const char *ticket, char *path, size_t n)
{
    char sid[64], wspath[128], *all = NULL;
    snprintf(wspath, sizeof wspath, "/api/websocket/chat/%s?after=0", ticket);
    if (open_session(c, wspath, sid) < 0)
        return -1;
    snprintf(path, n, "/api/poll/%s", sid);
    if (pcall(c, 1, "GET", path, "cursor=0&wait=0", NULL, &all, NULL) != 200) {
        free(all);
        return -1;
    }
    json_t *o = body_of(all);
    long long cur = json_integer_value(json_object_get(o, "cursor"));
    json_decref(o);
    free(all);
    return cur;
}

/* The hub looks at GETs that follow one channel as a group (one bell peek
 * per channel; a group whose bell did not move is passed over): a ring of
 * another channel wakes none of them, a short deadline among long ones
 * still ends on time, and their own channel's event reaches each. */
TEST(grouped_gets_wake_by_their_channel_and_their_deadline)
{
    struct parley_ctx c;
    REQUIRE(ctx_open(&c) == 0);
    enum { NA = 6, NB = 4 };
    static char paths[NA + NB][128];
    struct one_get a[NA + NB];
    memset(a, 0, sizeof a);
    for (int i = 0; i < NA + NB; i++) {
        long long cur = fresh_session(&c, i < NA ? "grpA" : "grpB", paths[i], sizeof paths[i]);
        REQUIRE(cur >= 0);
        a[i].path = paths[i];
        /* the first of channel A waits 1 s, the others as long as a GET may */
        snprintf(a[i].q, sizeof a[i].q, "cursor=%lld&wait=%d", cur, i == 0 ? 1 : POLL_WAIT_MAX);
    }
    for (int i = 1; i < NA + NB; i++)
        pthread_create(&a[i].th, NULL, one_get_main, &a[i]);
    REQUIRE(wait_parked(NA + NB - 1));
    pthread_create(&a[0].th, NULL, one_get_main, &a[0]);   /* joins a formed group */
    REQUIRE(wait_parked(NA + NB));
    const char *chb[1] = { "ticket:grpB" };
    REQUIRE(publish(chb, 1, 1) == 0);
    for (int i = NA; i < NA + NB; i++) {
        pthread_join(a[i].th, NULL);
        CHECK_INT(a[i].st, 200);
        json_t *o = body_of(a[i].all);
        CHECK(json_array_size(json_object_get(o, "messages")) >= 1);
        json_decref(o);
    }
    /* B's event woke none of A's; A's short wait ends alone, the long ones
     * stay parked until A's own event */
    pthread_join(a[0].th, NULL);
    CHECK_INT(a[0].st, 200);
    CHECK(a[0].took_ms >= 900);
    json_t *o = body_of(a[0].all);
    CHECK_INT(json_array_size(json_object_get(o, "messages")), 0);
    json_decref(o);
    CHECK_INT(count_when(NA - 1), NA - 1);
    const char *cha[1] = { "ticket:grpA" };
    REQUIRE(publish(cha, 1, 1) == 0);
    for (int i = 1; i < NA; i++) {
        pthread_join(a[i].th, NULL);
        CHECK_INT(a[i].st, 200);
        CHECK(a[i].took_ms < POLL_WAIT_MAX * 1000);   /* the event woke it, not its deadline */
        o = body_of(a[i].all);
        CHECK(json_array_size(json_object_get(o, "messages")) >= 1);
        json_decref(o);
    }
    for (int i = 0; i < NA + NB; i++)
        free(a[i].all);
    CHECK_INT(count_when(0), 0);
    db_close(c.db);
}

/* At exit every parked GET is answered at once (following a channel and
 * following nothing), and the hub ends. Last: it stops the doorbell. */
TEST(shutdown_answers_every_parked_get_at_once)
{
    struct parley_ctx c;
    REQUIRE(ctx_open(&c) == 0);
    enum { N = 6 };
    struct one_get a[N];
    char sids[N][64], paths[N][128];
    memset(a, 0, sizeof a);
    for (int i = 0; i < N; i++) {
        char wspath[128], *all = NULL;
        if (i < N - 1)
            snprintf(wspath, sizeof wspath, "/api/websocket/chat/bye%d?after=0", i % 2);
        else
            snprintf(wspath, sizeof wspath, "/ws/%s", "6c2b8a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5e");
        REQUIRE(open_session(&c, wspath, sids[i]) == 0);
        snprintf(paths[i], sizeof paths[i], "/api/poll/%s", sids[i]);
        REQUIRE(pcall(&c, 1, "GET", paths[i], "cursor=0&wait=0", NULL, &all, NULL) == 200);
        json_t *o = body_of(all);
        a[i].path = paths[i];
        snprintf(a[i].q, sizeof a[i].q, "cursor=%lld&wait=30",
                 json_integer_value(json_object_get(o, "cursor")));
        json_decref(o);
        free(all);
        pthread_create(&a[i].th, NULL, one_get_main, &a[i]);
    }
    CHECK(wait_parked(N));
    sleep_ms(200);
    int64_t t0 = mono_ms();
    CHECK_INT(poll_park_shutdown(5000), 0);
    CHECK(mono_ms() - t0 < 2000);
    for (int i = 0; i < N; i++) {
        pthread_join(a[i].th, NULL);
        CHECK_INT(a[i].st, 200);
        CHECK(a[i].parked);
        CHECK(a[i].took_ms < 5000);
        free(a[i].all);
    }
    CHECK_INT(count_when(0), 0);
    /* no new park after the hub ended: a GET answers in its thread */
    char *all = NULL;
    int parked = 1;
    CHECK_INT(pcall(&c, 1, "GET", paths[0], "cursor=0&wait=5", NULL, &all, &parked), 200);
    CHECK(!parked);
    free(all);
    db_close(c.db);
}

int main(void)
{
    char err[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);
    snprintf(dbpath, sizeof dbpath, "%s/pollpark.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/pollpark.db-bell", th_tmpdir());
    config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err);
    parley_db *db = db_open(dbpath, err, sizeof err);   /* migrate once */
    g_bell = bell_open(bellpath, err, sizeof err);
    if (!db || !g_bell) {
        fprintf(stderr, "db_open / bell_open: %s\n", err);
        return 2;
    }
    db_close(db);
    RUN(parked_gets_get_every_event_exactly_once_in_order);
    RUN(parked_gets_get_virtual_frames_exactly_once_in_order);
    RUN(parked_answer_is_byte_for_byte_the_same);
    RUN(parked_get_answers_at_its_deadline);
    RUN(grouped_gets_wake_by_their_channel_and_their_deadline);
    RUN(shutdown_answers_every_parked_get_at_once);
    bell_close(g_bell);
    config_cleanup(&cfg);
    return th_done();
}
