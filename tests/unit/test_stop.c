/* test_stop.c — stopping a generation (docs/stop.md, issue 11 item 1).
 *
 * jobs level: a stop is recorded only on a running job, by the user who
 * started it or an admin (foreign: refused, nothing recorded), a repeated
 * stop keeps the first request, jobs_stop_pending lists the owner's stopped
 * jobs only, a finished job answers "over", an unknown one "none".
 * Through the adapters and this process's generation loop, with the
 * simulated LLM's request log as the witness:
 *   - seed 001: {"type":"stop"} mid-stream closes the upstream connection
 *     within 100 ms of the stop (the fake's closed_by_client and times),
 *     the follower gets stream_end with metadata.stopped, the partial text
 *     is the stored assistant message with metadata {"stopped":true}; a
 *     stop with an unknown message_id and a stop of the finished one are
 *     refused;
 *   - seed 000: a second viewer (another user) attached to the same
 *     generation cannot stop it (forbidden), the starter can; both get
 *     {"type":"done","stopped":true}; nothing is cached: the next open with
 *     the same body claims a new job and the fake sees a new request;
 *   - seed 003 (Phoenix): the stop event is answered phx_reply ok and the
 *     stream ends with stream_complete {"stopped":true}; a second stop:
 *     already_finished;
 *   - seed 002: {"type":"stop","data":{}} ends with complete data.stopped.
 * The jobs cases and the seed 001 / 000 cases run on SQLite and again on
 * PostgreSQL when PARLEY_TEST_PG holds a URI (t0810-stop-pg.sh).
 */
#include "th.h"
#include "sample_catalog.h"
#include "protohelp.h"
#include "fake.h"
#include "auth.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "evlog.h"
#include "jobs.h"
#include "stats.h"
#include "proto_impl.h"
#include "store.h"
#include "util.h"

#include <time.h>
#include <unistd.h>

static const char *target;       /* dbpath or the PostgreSQL URI */
static char pfx[64];             /* prefix of names: unique per run */

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* One doorbell per backend run: the generation loop keeps the bell of the
 * first submit until proto_jobs_drain (proto.h). */
static parley_bell *run_bell;

static int open_target(struct parley_ctx *ctx)
{
    char err[512] = "no doorbell";
    ctx->cfg = &cfg;
    ctx->bell = run_bell;
    ctx->db = run_bell ? db_open(target, err, sizeof err) : NULL;
    if (!ctx->db) {
        printf("# open: %s\n", err);
        return -1;
    }
    return 0;
}

static void close_target(struct parley_ctx *ctx)
{
    db_close(ctx->db);
}

/* The fake's log entry whose prompt starts with tag (new reference). */
static json_t *fake_request(const char *tag)
{
    char *resp = NULL;
    fake_http("GET", "/_fake/requests", NULL, &resp);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    json_t *found = NULL;
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(o, "requests"), i, q) {
        const char *p = json_string_value(json_object_get(q, "prompt"));
        if (p && !strncmp(p, tag, strlen(tag)))
            found = q;               /* the newest */
    }
    json_incref(found);
    json_decref(o);
    return found;
}

/* How many log entries have prompts starting with tag. */
static int fake_count(const char *tag)
{
    char *resp = NULL;
    fake_http("GET", "/_fake/requests", NULL, &resp);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    int n = 0;
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(o, "requests"), i, q) {
        const char *p = json_string_value(json_object_get(q, "prompt"));
        if (p && !strncmp(p, tag, strlen(tag)))
            n++;
    }
    json_decref(o);
    return n;
}

/* Waits until the fake closed tag's request (ended_at set), at most ms. */
static json_t *fake_wait_ended(const char *tag, int ms)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        json_t *q = fake_request(tag);
        if (q && json_is_number(json_object_get(q, "ended_at")))
            return q;
        json_decref(q);
        if (mono_ms() > end)
            return NULL;
        sleep_ms(5);
    }
}

/* Pumps c until at least n frames of type `type` arrived (at most 10 s). */
static int pump_until(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *f,
                      const char *type, int n)
{
    int64_t end = mono_ms() + 10000;
    while (mono_ms() < end) {
        int got = 0;
        for (int i = 0; i < f->n; i++)
            if (strstr(f->v[i], type))
                got++;
        if (got >= n)
            return 0;
        if (proto_pump(ctx, c, f) < 0)
            return -1;
        sleep_ms(5);
    }
    return -1;
}

/* ---- jobs level ---- */

TEST(jobs_stop_rules)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char ch[128], err[256];
    snprintf(ch, sizeof ch, "%sstop:rules", pfx);
    struct job_claim cl;
    REQUIRE(jobs_claim_as(ctx.db, ctx.bell, ch, "k", "alice", 60000, &cl, err, sizeof err) == 0);
    CHECK_INT(cl.owner, 1);
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.started_by, "alice");
    CHECK_INT(ji.stop_requested, 0);

    int64_t job = 0;
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "bob", 0, &job), JOBS_STOP_FOREIGN);
    CHECK_INT(job, cl.job_id);
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_INT(ji.stop_requested, 0);           /* a refused stop records nothing */
    int64_t ids[8];
    CHECK_INT(jobs_stop_pending(ctx.db, owner_id(), ids, 8), 0);

    uint32_t before = bell_peek(ctx.bell, ch);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "alice", 0, &job), JOBS_STOP_OK);
    CHECK(bell_peek(ctx.bell, ch) != before);  /* the owner's wake-up */
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, NULL, cl.job_id, "bob", 1, NULL), JOBS_STOP_OK);
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_INT(ji.stop_requested, 1);
    CHECK_STR(ji.state, "running");
    CHECK_INT(jobs_stop_pending(ctx.db, owner_id(), ids, 8), 1);
    CHECK_INT(ids[0], cl.job_id);
    CHECK_INT(jobs_stop_pending(ctx.db, "someone-else", ids, 8), 0);

    REQUIRE(db_begin(ctx.db) == 0);
    CHECK_INT(jobs_finish_stopped_tx(ctx.db, cl.job_id), 0);
    REQUIRE(db_commit(ctx.db) == 0);
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "done");
    CHECK_INT(ji.stopped, 1);
    CHECK_INT(jobs_stop_pending(ctx.db, owner_id(), ids, 8), 0);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "alice", 0, NULL), JOBS_STOP_OVER);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "bob", 1, NULL), JOBS_STOP_OVER);
    char none[128];
    snprintf(none, sizeof none, "%sstop:never", pfx);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, none, 0, "alice", 0, NULL), JOBS_STOP_NONE);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, NULL, (int64_t)1 << 50, "alice", 1, NULL),
              JOBS_STOP_NONE);
    /* a job claimed without a user: only an admin */
    snprintf(ch, sizeof ch, "%sstop:nobody", pfx);
    REQUIRE(jobs_claim(ctx.db, ctx.bell, ch, "k", 60000, &cl, err, sizeof err) == 0);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "", 0, NULL), JOBS_STOP_FOREIGN);
    CHECK_INT(jobs_request_stop(ctx.db, ctx.bell, ch, 0, "root", 1, NULL), JOBS_STOP_OK);
    REQUIRE(db_begin(ctx.db) == 0);
    CHECK_INT(jobs_finish_stopped_tx(ctx.db, cl.job_id), 0);
    REQUIRE(db_commit(ctx.db) == 0);
    close_target(&ctx);
}

/* ---- seed 001 through the generation loop ---- */

TEST(chat_stop_aborts_upstream_and_keeps_partial)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char path[160], tag[96], content[200];
    snprintf(path, sizeof path, "/ws/%schat1", pfx);
    for (char *p = path + 4; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf(tag, sizeof tag, "stopme-chat-%s", pfx);
    snprintf(content, sizeof content, "%s [[fake tokens=400 token_ms=10]]", tag);

    struct proto_conn c, v;
    struct proto_frames f, fv;
    frames_init(&f);
    frames_init(&fv);
    REQUIRE(proto_open(&ctx, &c, path, "alice", "user:alice", &f) == 0);
    json_t *m = json_pack("{s:s, s:s}", "type", "message", "content", content);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    struct proto_job *job = NULL;
    REQUIRE(send_text(&ctx, &c, text, &f, &job) == 0);
    free(text);
    REQUIRE(job);
    char mid[64];
    str_copy(mid, sizeof mid, proto_str(c.state, "message_id"));
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    REQUIRE(pump_until(&ctx, &c, &f, "stream_chunk", 5) == 0);

    /* another connection of the same user (the stop button in another tab) */
    REQUIRE(proto_open(&ctx, &v, path, "alice", "user:alice", &fv) == 0);
    struct proto_job *none = NULL;
    REQUIRE(send_text(&ctx, &v, "{\"type\":\"stop\",\"message_id\":\"not-this-one\"}", &fv,
                      &none) == 0);
    CHECK(!none);
    CHECK_INT(v.err, PERR_NOT_FOUND);
    int nbefore = fv.n;
    char stop[160];
    snprintf(stop, sizeof stop, "{\"type\":\"stop\",\"message_id\":\"%s\"}", mid);
    double t_stop = wall_ms();
    REQUIRE(send_text(&ctx, &v, stop, &fv, &none) == 0);
    CHECK_INT(v.err, PERR_OK);
    CHECK_INT(fv.n, nbefore);                  /* no frame: the end frame follows */

    json_t *q = fake_wait_ended(tag, 3000);
    REQUIRE(q);
    CHECK(json_is_true(json_object_get(q, "closed_by_client")));
    double closed = json_number_value(json_object_get(q, "ended_at"));
    printf("# upstream closed %.1f ms after the stop\n", closed - t_stop);
    CHECK(closed - t_stop < 100.0);
    CHECK(closed - t_stop > -1.0);
    json_decref(q);

    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    json_t *last = frame(&f, f.n - 1);
    CHECK_STR(ftype(last), "stream_end");
    CHECK_STR(json_string_value(json_object_get(last, "message_id")), mid);
    CHECK(json_is_true(json_object_get(json_object_get(last, "metadata"), "stopped")));
    json_decref(last);
    /* the text the client saw */
    size_t cap = 1 << 16, len = 0;
    char *seen = calloc(1, cap);
    for (int i = 0; i < f.n; i++) {
        json_t *o = frame(&f, i);
        if (!strcmp(ftype(o), "stream_chunk")) {
            const char *t = json_string_value(json_object_get(o, "content"));
            size_t tl = strlen(t);
            if (len + tl + 1 < cap) {
                memcpy(seen + len, t, tl);
                len += tl;
            }
        }
        json_decref(o);
    }
    CHECK(len > 0);
    /* stored as the assistant message, marked stopped */
    struct message *ms = NULL;
    int n = 0;
    REQUIRE(store_msg_context(ctx.db, path + 4, 10, &ms, &n) == 0);
    REQUIRE(n == 2);
    CHECK_STR(ms[1].role, "assistant");
    CHECK_STR(ms[1].id, mid);
    CHECK_STR(ms[1].content, seen);
    CHECK(ms[1].metadata && strstr(ms[1].metadata, "\"stopped\":true"));
    store_msgs_free(ms, n);
    free(seen);

    /* a stop of the finished generation is refused */
    frames_free(&fv);
    frames_init(&fv);
    REQUIRE(send_text(&ctx, &v, "{\"type\":\"stop\"}", &fv, &none) == 0);
    CHECK_INT(v.err, PERR_CONFLICT);
    json_t *e = frame(&fv, 0);
    CHECK_STR(ftype(e), "error");
    CHECK_STR(json_string_value(json_object_get(e, "message")), PROTO_STOP_OVER_MSG);
    json_decref(e);
    frames_free(&f);
    frames_free(&fv);
    proto_conn_cleanup(&c);
    proto_conn_cleanup(&v);
    close_target(&ctx);
}

/* ---- seed 000: a viewer of another user, nothing cached ---- */

static struct proto_job *ticket_open_send(struct parley_ctx *ctx, struct proto_conn *c,
                                          struct proto_frames *f, const char *ticket,
                                          const char *user, const char *body)
{
    char path[160];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", ticket);
    if (proto_open(ctx, c, path, user, "ip:127.0.0.1", f) < 0)
        return NULL;
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    struct proto_job *job = NULL;
    send_text(ctx, c, text, f, &job);
    free(text);
    return job;
}

/* PARLEY_MAX_GENERATIONS=1: a second ticket's job waits for a stream slot
 * in the generation loop; a stop ends it at once (done marked stopped, no
 * upstream request ever made) while the first one keeps streaming. */
TEST(stop_of_a_waiting_generation)
{
    proto_jobs_drain(2000);              /* the next submit starts a loop with max 1 */
    int saved = cfg.max_generations;
    cfg.max_generations = 1;
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char t1[96], t2[96], b1[200], b2[200];
    snprintf(t1, sizeof t1, "%swait1", pfx);
    snprintf(t2, sizeof t2, "%swait2", pfx);
    for (char *p = t1; *p; p++)
        if (*p == ':')
            *p = '-';
    for (char *p = t2; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf(b1, sizeof b1, "runs-%s [[fake tokens=60 token_ms=20]]", pfx);
    snprintf(b2, sizeof b2, "waits-%s [[fake tokens=5 token_ms=1]]", pfx);
    struct proto_conn c1, c2;
    struct proto_frames f1, f2;
    frames_init(&f1);
    frames_init(&f2);
    struct proto_job *j1 = ticket_open_send(&ctx, &c1, &f1, t1, "alice", b1);
    struct proto_job *j2 = ticket_open_send(&ctx, &c2, &f2, t2, "alice", b2);
    REQUIRE(j1 && j2);
    REQUIRE(proto_job_submit(&ctx, j1) == 0);
    REQUIRE(pump_until(&ctx, &c1, &f1, "\"stream\"", 2) == 0);
    REQUIRE(proto_job_submit(&ctx, j2) == 0);
    sleep_ms(300);                       /* the loop took it and holds its lease */
    char chan[200];
    snprintf(chan, sizeof chan, "ticket:%s", t2);
    enum perr kind;
    const char *msg;
    CHECK_INT(proto_stop_channel(&ctx, chan, 0, "alice", 0, &kind, &msg, NULL), JOBS_STOP_OK);
    REQUIRE(pump_to_end(&ctx, &c2, &f2) == 0);
    CHECK_INT(f2.n, 1);
    if (f2.n == 1)
        CHECK_STR(f2.v[0], "{\"type\":\"done\",\"stopped\":true}");
    CHECK(proto_following(&c1));          /* the first one still streams */
    char tag[120];
    snprintf(tag, sizeof tag, "waits-%s", pfx);
    CHECK_INT(fake_count(tag), 0);        /* never reached the upstream */
    /* not cached: the same body again generates */
    char *resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, t2, &resp), 0);
    free(resp);
    REQUIRE(pump_to_end(&ctx, &c1, &f1) == 0);
    proto_jobs_drain(5000);
    cfg.max_generations = saved;
    proto_conn_cleanup(&c1);
    proto_conn_cleanup(&c2);
    frames_free(&f1);
    frames_free(&f2);
    close_target(&ctx);
}

/* A blocking run (runner_execute, as `parley ask` runs a generation)
 * notices a stop itself: the upstream request is closed, done marked
 * stopped, nothing cached. */
TEST(stop_of_a_blocking_run)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char t[96], b[200], tag[120];
    snprintf(t, sizeof t, "%sblock", pfx);
    for (char *p = t; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf(tag, sizeof tag, "blocking-%s", pfx);
    snprintf(b, sizeof b, "%s [[fake tokens=300 token_ms=10]]", tag);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = ticket_open_send(&ctx, &c, &f, t, "bob", b);
    REQUIRE(job);
    struct job_thread th;
    REQUIRE(job_start(&th, job) == 0);   /* proto_job_run on its own thread */
    REQUIRE(pump_until(&ctx, &c, &f, "\"stream\"", 3) == 0);
    char chan[200];
    snprintf(chan, sizeof chan, "ticket:%s", t);
    enum perr kind;
    const char *msg;
    double t_stop = wall_ms();
    CHECK_INT(proto_stop_channel(&ctx, chan, 0, "bob", 0, &kind, &msg, NULL), JOBS_STOP_OK);
    json_t *q = fake_wait_ended(tag, 3000);
    REQUIRE(q);
    CHECK(json_is_true(json_object_get(q, "closed_by_client")));
    double closed = json_number_value(json_object_get(q, "ended_at"));
    printf("# blocking run: upstream closed %.1f ms after the stop\n", closed - t_stop);
    CHECK(closed - t_stop < 1000.0);
    json_decref(q);
    pthread_join(th.th, NULL);
    CHECK_INT(th.rc, 0);
    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    CHECK_STR(f.v[f.n - 1], "{\"type\":\"done\",\"stopped\":true}");
    char *resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, t, &resp), 0);
    free(resp);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_target(&ctx);
}

/* Not a stop: a ticket answered from the cache counts a hit for the admin
 * page's hit rate (stats_cache_hit, docs/admin.md); a generation does not. */
TEST(cache_hit_counted)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char t[96], b[200];
    snprintf(t, sizeof t, "%shits", pfx);
    for (char *p = t; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf(b, sizeof b, "hits-%s [[fake tokens=3 token_ms=0]]", pfx);
    json_t *before = NULL, *mid = NULL, *after = NULL;
    REQUIRE(stats_overview(ctx.db, &before) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = ticket_open_send(&ctx, &c, &f, t, "carol", b);
    REQUIRE(job);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(stats_overview(ctx.db, &mid) == 0);
    struct proto_job *again = ticket_open_send(&ctx, &c, &f, t, "dave", b);
    CHECK(again == NULL);
    CHECK(f.n >= 1 && strstr(f.v[0], "\"cached\""));
    REQUIRE(stats_overview(ctx.db, &after) == 0);
    json_int_t h0 = json_integer_value(json_object_get(json_object_get(before, "cache"), "hits"));
    json_int_t h1 = json_integer_value(json_object_get(json_object_get(mid, "cache"), "hits"));
    json_int_t h2 = json_integer_value(json_object_get(json_object_get(after, "cache"), "hits"));
    CHECK_INT(h1 - h0, 0);
    CHECK_INT(h2 - h1, 1);
    json_decref(before);
    json_decref(mid);
    json_decref(after);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_target(&ctx);
}

TEST(ticket_stop_foreign_refused_and_not_cached)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    char ticket[96], tag[96], body[200];
    snprintf(ticket, sizeof ticket, "T-%s", pfx);
    for (char *p = ticket; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf(tag, sizeof tag, "stopme-ticket-%s", pfx);
    snprintf(body, sizeof body, "%s [[fake tokens=400 token_ms=10]]", tag);
    struct proto_conn a, b;
    struct proto_frames fa, fb;
    frames_init(&fa);
    frames_init(&fb);
    struct proto_job *job = ticket_open_send(&ctx, &a, &fa, ticket, "alice", body);
    REQUIRE(job);
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    REQUIRE(pump_until(&ctx, &a, &fa, "\"stream\"", 3) == 0);
    /* bob opens the same ticket and body: he watches alice's generation */
    struct proto_job *bj = ticket_open_send(&ctx, &b, &fb, ticket, "bob", body);
    CHECK(!bj);
    CHECK(proto_following(&b));
    struct proto_job *none = NULL;
    int nb = fb.n;
    REQUIRE(send_text(&ctx, &b, "{\"type\":\"stop\"}", &fb, &none) == 0);
    CHECK_INT(b.err, PERR_FORBIDDEN);
    json_t *e = frame(&fb, nb);
    CHECK_STR(ftype(e), "error");
    CHECK_STR(json_string_value(json_object_get(e, "message")), PROTO_STOP_FOREIGN_MSG);
    json_decref(e);
    CHECK_INT(fake_count(tag), 1);
    json_t *q = fake_request(tag);
    CHECK(q && json_is_null(json_object_get(q, "ended_at")));   /* still streaming */
    json_decref(q);

    double t_stop = wall_ms();
    REQUIRE(send_text(&ctx, &a, "{\"type\":\"stop\"}", &fa, &none) == 0);
    CHECK_INT(a.err, PERR_OK);
    q = fake_wait_ended(tag, 3000);
    REQUIRE(q);
    CHECK(json_is_true(json_object_get(q, "closed_by_client")));
    CHECK(json_number_value(json_object_get(q, "ended_at")) - t_stop < 100.0);
    json_decref(q);
    REQUIRE(pump_to_end(&ctx, &a, &fa) == 0);
    REQUIRE(pump_to_end(&ctx, &b, &fb) == 0);
    CHECK_STR(fa.v[fa.n - 1], "{\"type\":\"done\",\"stopped\":true}");
    CHECK_STR(fb.v[fb.n - 1], "{\"type\":\"done\",\"stopped\":true}");

    /* not cached: the same ticket and body runs again upstream */
    struct answer key;
    char hash[65];
    answer_key_ticket(&key, ticket, body, hash);
    char *cached = NULL;
    CHECK_INT(store_answer_get(ctx.db, key.key, &cached, NULL, NULL), 1);
    free(cached);
    struct proto_conn a2;
    struct proto_frames fa2;
    frames_init(&fa2);
    struct proto_job *again = ticket_open_send(&ctx, &a2, &fa2, ticket, "alice", body);
    REQUIRE(again);                            /* a new generation, owned */
    CHECK(again->claim.job_id != a.job_id);
    REQUIRE(proto_job_submit(&ctx, again) == 0);
    REQUIRE(pump_until(&ctx, &a2, &fa2, "\"stream\"", 1) == 0);
    CHECK_INT(fake_count(tag), 2);
    for (int i = 0; i < fa2.n; i++)
        CHECK(!strstr(fa2.v[i], "cached"));
    REQUIRE(send_text(&ctx, &a2, "{\"type\":\"stop\"}", &fa2, &none) == 0);
    REQUIRE(pump_to_end(&ctx, &a2, &fa2) == 0);
    frames_free(&fa);
    frames_free(&fb);
    frames_free(&fa2);
    proto_conn_cleanup(&a);
    proto_conn_cleanup(&b);
    proto_conn_cleanup(&a2);
    close_target(&ctx);
}

/* ---- seed 003 and seed 002 adapters (SQLite) ---- */

TEST(phoenix_stop_event)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_phoenix_join(&ctx, &c, "proxy:stop-phx", NULL, "alice", "user:alice", &f) == 0);
    json_t *push = json_pack("{s:s, s:s, s:{s:s}}", "ref", "1", "event", "stream_query",
                             "payload", "query", "stopme-phx [[fake tokens=400 token_ms=10]]");
    struct proto_job *job = NULL;
    REQUIRE(proto_message_json(&ctx, &c, push, &f, &job) == 0);
    json_decref(push);
    REQUIRE(job);
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    REQUIRE(pump_until(&ctx, &c, &f, "stream_token", 3) == 0);
    push = json_pack("{s:s, s:s, s:{}}", "ref", "2", "event", "stop", "payload");
    int n0 = f.n;
    REQUIRE(proto_message_json(&ctx, &c, push, &f, &job) == 0);
    CHECK(!job);
    CHECK_STR(f.v[n0], "[null,\"2\",\"proxy:stop-phx\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    CHECK_STR(f.v[f.n - 1], "[null,null,\"proxy:stop-phx\",\"stream_complete\",{\"stopped\":true}]");
    json_t *q = fake_wait_ended("stopme-phx", 2000);
    CHECK(q && json_is_true(json_object_get(q, "closed_by_client")));
    json_decref(q);
    n0 = f.n;
    REQUIRE(proto_message_json(&ctx, &c, push, &f, &job) == 0);
    json_decref(push);
    CHECK_INT(c.err, PERR_CONFLICT);
    CHECK(n0 + 2 == f.n && strstr(f.v[n0], "already_finished") &&
          strstr(f.v[n0 + 1], "\"status\":\"error\""));
    frames_free(&f);
    proto_conn_cleanup(&c);
    close_target(&ctx);
}

TEST(brand_stop_frame)
{
    struct parley_ctx ctx;
    REQUIRE(open_target(&ctx) == 0);
    REQUIRE(sample_catalog_import(ctx.db) == 0);       /* the demo brand techpro */
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/techpro", "alice", "user:alice", &f) == 0);
    struct proto_job *job = NULL;
    /* nothing to stop yet */
    REQUIRE(send_text(&ctx, &c, "{\"type\":\"stop\",\"data\":{}}", &f, &job) == 0);
    CHECK_INT(c.err, PERR_NOT_FOUND);
    REQUIRE(send_text(&ctx, &c, "{\"type\":\"chat\",\"data\":{\"message\":"
                      "\"stopme-brand laptops [[fake tokens=400 token_ms=10]]\"}}", &f, &job) == 0);
    REQUIRE(job);
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    REQUIRE(pump_until(&ctx, &c, &f, "\"chunk\"", 3) == 0);
    REQUIRE(send_text(&ctx, &c, "{\"type\":\"stop\",\"data\":{}}", &f, &job) == 0);
    CHECK_INT(c.err, PERR_OK);
    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    json_t *last = frame(&f, f.n - 1);
    CHECK_STR(ftype(last), "complete");
    CHECK(json_is_true(json_object_get(json_object_get(last, "data"), "stopped")));
    CHECK(json_is_true(json_object_get(json_object_get(last, "data"), "is_final")));
    json_decref(last);
    json_t *q = fake_wait_ended("stopme-brand", 2000);
    CHECK(q && json_is_true(json_object_get(q, "closed_by_client")));
    json_decref(q);
    frames_free(&f);
    proto_conn_cleanup(&c);
    close_target(&ctx);
}

TEST(admin_role_claim)
{
    char *tok = auth_make_token_role("s3cret", "root", 0, "admin");
    char *plain = auth_make_token("s3cret", "joe", 0);
    char *other = auth_make_token_role("s3cret", "eve", 0, "administrator");
    REQUIRE(tok && plain && other);
    char sub[64];
    int admin = -1;
    CHECK_INT(auth_verify_role("s3cret", tok, 0, sub, sizeof sub, &admin), AUTH_OK);
    CHECK_INT(admin, 1);
    CHECK_STR(sub, "root");
    CHECK_INT(auth_verify_role("s3cret", plain, 0, sub, sizeof sub, &admin), AUTH_OK);
    CHECK_INT(admin, 0);
    CHECK_INT(auth_verify_role("s3cret", other, 0, sub, sizeof sub, &admin), AUTH_OK);
    CHECK_INT(admin, 0);
    CHECK(auth_verify_role("wrong", tok, 0, sub, sizeof sub, &admin) != AUTH_OK);
    CHECK_INT(admin, 0);
    free(tok);
    free(plain);
    free(other);
}

static void run_backend_cases(void)
{
    RUN(jobs_stop_rules);
    RUN(chat_stop_aborts_upstream_and_keeps_partial);
    RUN(ticket_stop_foreign_refused_and_not_cached);
    RUN(stop_of_a_waiting_generation);
}

int main(void)
{
    if (test_setup("stop") < 0)
        return 1;
    char err[512];
    target = dbpath;
    snprintf(pfx, sizeof pfx, "s%ld-%lld-", (long)getpid(), (long long)now_ms());
    if (config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err) < 0)
        return 1;
    printf("# backend: SQLite\n");
    run_bell = bell_open_db(dbpath, err, sizeof err);
    run_backend_cases();
    RUN(stop_of_a_blocking_run);
    RUN(cache_hit_counted);
    RUN(phoenix_stop_event);
    RUN(brand_stop_frame);
    RUN(admin_role_claim);
    proto_jobs_drain(2000);
    bell_close(run_bell);
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        target = pg;
        if (config_set(&cfg, "PARLEY_DB", pg, err, sizeof err) < 0)
            return 1;
        snprintf(pfx, sizeof pfx, "p%ld-%lld-", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, names %s*)\n", pfx);
        run_bell = bell_open_db(pg, err, sizeof err);
        run_backend_cases();
        proto_jobs_drain(2000);
        bell_close(run_bell);
    }
    return th_done();
}
