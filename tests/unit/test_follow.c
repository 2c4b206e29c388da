/* test_follow.c — the one follow loop (core/follow.h): a channel's events
 * reach the callback in order and the loop ends at the job's end; a
 * connection's frames carry the seq of their event; the idle hook runs
 * when nothing arrives and can end the loop; a job whose worker died is
 * recovered (its "interrupted" error event ends the follow); a stop flag
 * or a stopped bell ends it; runner_follow, now a wrapper, keeps its
 * return codes. */
#include "th.h"
#include "protohelp.h"
#include "bell.h"
#include "db_sqlite.h"
#include "evlog.h"
#include "follow.h"
#include "jobs.h"
#include "proto.h"
#include "runner.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>

struct seen {
    int n, tokens, idles, quit_after_idles;
    char last[16];
    int64_t job_id;
};

static int on_ev(void *ud, const struct evlog_event *ev)
{
    struct seen *s = ud;
    if (ev->job_id != s->job_id)
        return FOLLOW_MORE;
    s->n++;
    s->tokens += !strcmp(ev->type, "token");
    str_copy(s->last, sizeof s->last, ev->type);
    return !strcmp(ev->type, "done") || !strcmp(ev->type, "error") ? FOLLOW_END : FOLLOW_MORE;
}

static int on_idle(void *ud)
{
    struct seen *s = ud;
    s->idles++;
    return s->quit_after_idles && s->idles >= s->quit_after_idles;
}

/* Writes start, three tokens and done for job on channel, from its own
 * connection, after a short pause (so the follower is already asleep). */
struct writer { const char *channel; int64_t job_id; pthread_t th; };

static void *writer_main(void *ud)
{
    struct writer *w = ud;
    struct parley_ctx ctx;
    if (open_ctx(&ctx) != 0)
        return NULL;
    sleep_ms(30);
    evlog_append(ctx.db, ctx.bell, w->channel, w->job_id, "start", "{}", 2);
    for (int i = 0; i < 3; i++) {
        evlog_append(ctx.db, ctx.bell, w->channel, w->job_id, "token", "ab", 2);
        sleep_ms(5);
    }
    evlog_append(ctx.db, ctx.bell, w->channel, w->job_id, "done", "{}", 2);
    close_ctx(&ctx);
    return NULL;
}

TEST(channel_events_in_order_until_done)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct job_claim cl;
    char err[256];
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "f:1", "k", 60000, &cl, err, sizeof err) == 0);
    /* an event of another job first: skipped by the callback, cursor moves */
    REQUIRE(evlog_append(ctx.db, ctx.bell, "f:1", cl.job_id + 1000, "token", "zz", 2) > 0);
    struct writer w = { "f:1", cl.job_id, 0 };
    REQUIRE(pthread_create(&w.th, NULL, writer_main, &w) == 0);
    struct seen s = { 0 };
    s.job_id = cl.job_id;
    int64_t cursor = cl.first_seq, job = cl.job_id;
    int r = follow_channel(&ctx, "f:1", &job, &cursor, on_ev, on_idle, &s, NULL, 0);
    pthread_join(w.th, NULL);
    CHECK_INT(r, FOLLOW_OVER);
    CHECK_INT(s.n, 5);
    CHECK_INT(s.tokens, 3);
    CHECK_STR(s.last, "done");
    CHECK_INT(s.idles, 0);          /* heartbeat 0: the hook is never called */
    CHECK_INT(cursor, evlog_last_seq(ctx.db, "f:1"));
    close_ctx(&ctx);
}

TEST(idle_hook_runs_and_can_end_it)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct seen s = { 0 };
    s.quit_after_idles = 3;
    int64_t cursor = 0, job = 0;
    int r = follow_channel(&ctx, "f:quiet", &job, &cursor, on_ev, on_idle, &s, NULL, 20);
    CHECK_INT(r, FOLLOW_LEFT);
    CHECK_INT(s.idles, 3);
    CHECK_INT(s.n, 0);
    close_ctx(&ctx);
}

TEST(expired_job_is_recovered)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct job_claim cl;
    char err[256];
    /* a worker that claimed the job and died: its lease runs out at once */
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "f:dead", "k", 1, &cl, err, sizeof err) == 0);
    struct seen s = { 0 };
    s.job_id = cl.job_id;
    int64_t cursor = cl.first_seq, job = cl.job_id;
    int r = follow_channel(&ctx, "f:dead", &job, &cursor, on_ev, NULL, &s, NULL, 0);
    CHECK_INT(r, FOLLOW_OVER);
    CHECK_STR(s.last, "error");
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    CHECK_STR(ji.error, JOB_INTERRUPTED_MSG);
    /* the one recovery function leaves live, finished and unknown jobs */
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, cl.job_id, now_ms()), 0);
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, 0, now_ms()), 0);
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, 987654, now_ms()), 0);
    struct job_claim live;
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "f:live", "k", 60000, &live, err, sizeof err) == 0);
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, live.job_id, now_ms()), 0);
    REQUIRE(jobs_get(ctx.db, live.job_id, &ji) == 0);
    CHECK_STR(ji.state, "running");
    close_ctx(&ctx);
}

TEST(stop_flag_and_stopped_bell_end_it)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct seen s = { 0 };
    volatile int stop = 1;
    int64_t cursor = 0, job = 0;
    CHECK_INT(follow_channel(&ctx, "f:stop", &job, &cursor, on_ev, NULL, &s, &stop, 0),
              FOLLOW_STOPPED);
    /* a stopped bell (SIGTERM in parley.fcgi) ends a wait without a flag */
    char err[256];
    parley_bell *b2 = bell_open(bellpath, err, sizeof err);
    REQUIRE(b2 != NULL);
    bell_wake_all(b2);
    struct parley_ctx c2 = { ctx.cfg, ctx.db, b2 };
    CHECK_INT(follow_channel(&c2, "f:stop", &job, &cursor, on_ev, NULL, &s, NULL, 0),
              FOLLOW_STOPPED);
    bell_close(b2);
    close_ctx(&ctx);
}

/* follow() on a seed 000 connection: frames and the seq of their event. */
struct got { int n; char *v[64]; int64_t seq[64]; int quit_at; };

static int on_frame(void *ud, const char *frame, int64_t seq)
{
    struct got *g = ud;
    if (g->n < 64) {
        g->v[g->n] = strdup(frame);
        g->seq[g->n] = seq;
        g->n++;
    }
    return g->quit_at && g->n >= g->quit_at;
}

static void got_free(struct got *g)
{
    for (int i = 0; i < g->n; i++)
        free(g->v[i]);
}

/* Opens a seed 000 connection on ticket id, sends body and starts its job
 * in a thread (t). 0, or -1 when any step failed. */
static int ticket_started(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *f,
                          const char *id, const char *body, struct job_thread *t)
{
    char path[128], *text = dump(json_pack("{s:s}", "ticketBody", body));
    struct proto_job *job = NULL;
    snprintf(path, sizeof path, "/api/websocket/chat/%s", id);
    frames_init(f);
    int ok = text && proto_open(ctx, c, path, "", "ip:1", f) == 0 &&
             send_text(ctx, c, text, f, &job) == 0 && job && job_start(t, job) == 0;
    free(text);
    if (!ok)
        proto_job_free(job);
    return ok ? 0 : -1;
}

TEST(connection_frames_carry_their_seq)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    struct job_thread t;
    REQUIRE(ticket_started(&ctx, &c, &f, "follow-1", "printer on fire [[fake tokens=5 token_ms=2]]",
                           &t) == 0);
    struct got g = { 0 };
    int r = follow(&ctx, &c, on_frame, NULL, &g, NULL, 0);
    pthread_join(t.th, NULL);
    CHECK_INT(r, FOLLOW_OVER);
    CHECK(!proto_following(&c));
    REQUIRE(g.n >= 2);
    CHECK_STR(g.v[g.n - 1], "{\"type\":\"done\"}");
    struct evlog_event *ev = NULL;
    int n = evlog_read(ctx.db, "ticket:follow-1", 0, 256, &ev);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(ev[i].type, "token") && strcmp(ev[i].type, "done"))
            continue;
        CHECK(k < g.n && g.seq[k] == ev[i].seq);
        k++;
    }
    CHECK_INT(k, g.n);
    evlog_free(ev, n);
    got_free(&g);
    /* following nothing: over at once */
    CHECK_INT(follow(&ctx, &c, on_frame, NULL, &g, NULL, 0), FOLLOW_OVER);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(client_gone_ends_with_left)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    struct job_thread t;
    REQUIRE(ticket_started(&ctx, &c, &f, "follow-2", "slow one [[fake tokens=6 token_ms=2]]", &t) == 0);
    struct got g = { 0 };
    g.quit_at = 2;
    CHECK_INT(follow(&ctx, &c, on_frame, NULL, &g, NULL, 0), FOLLOW_LEFT);
    CHECK_INT(g.n, 2);
    pthread_join(t.th, NULL);
    CHECK_INT(t.rc, 0);          /* the generation went on without its client */
    got_free(&g);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

static int collect_runner(void *ud, const struct evlog_event *ev)
{
    (void)ev;
    (*(int *)ud)++;
    return 0;
}

TEST(runner_follow_wrapper_codes)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct job_claim cl;
    char err[256];
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "f:rf", "k", 60000, &cl, err, sizeof err) == 0);
    int64_t cursor = cl.first_seq;
    int n = 0;
    /* nothing arrives: timeout */
    CHECK_INT(runner_follow(&ctx, "f:rf", cl.job_id, &cursor, 30, NULL, collect_runner, &n), 2);
    volatile int stop = 1;
    CHECK_INT(runner_follow(&ctx, "f:rf", cl.job_id, &cursor, -1, &stop, collect_runner, &n), 3);
    REQUIRE(evlog_append(ctx.db, ctx.bell, "f:rf", cl.job_id, "token", "x", 1) > 0);
    REQUIRE(evlog_append(ctx.db, ctx.bell, "f:rf", cl.job_id, "done", "{}", 2) > 0);
    CHECK_INT(runner_follow(&ctx, "f:rf", cl.job_id, &cursor, 2000, NULL, collect_runner, &n), 0);
    CHECK_INT(n, 2);
    close_ctx(&ctx);
}

/* The database cannot be written (PRAGMA query_only stands in for a full
 * disk or a read-only file: root ignores permission bits) when a dead
 * worker's lease runs out: the recovery cannot record the failure
 * (JOBS_EXPIRED_UNRECORDED), so a follower gets the "interrupted" error
 * from memory instead of waiting for as long as that lasts — once — and
 * its cursor stays, so the error recovery writes later is not skipped. */
static int ro_on_ev(void *ud, const struct evlog_event *ev)
{
    struct seen *s = ud;
    s->n++;
    str_copy(s->last, sizeof s->last, ev->type);
    s->tokens += ev->from_memory;          /* (counts the events from memory) */
    return !strcmp(ev->type, "error") || !strcmp(ev->type, "done") ? FOLLOW_END : FOLLOW_MORE;
}

static int ro_idle(void *ud)
{
    struct seen *s = ud;
    return ++s->idles >= 8;        /* 8 x 100 ms without the error: give up */
}

TEST(unrecorded_expiry_is_handed_on_from_memory)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct job_claim cl;
    char err[256];
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "f:ro", "k", 1, &cl, err, sizeof err) == 0);
    sleep_ms(5);
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK);
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, cl.job_id, now_ms()), JOBS_EXPIRED_UNRECORDED);
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK);
    struct seen s = { 0 };
    int64_t cursor = cl.first_seq, job = cl.job_id;
    int r = follow_channel(&ctx, "f:ro", &job, &cursor, ro_on_ev, ro_idle, &s, NULL, 100);
    CHECK_INT(r, FOLLOW_OVER);
    CHECK_STR(s.last, "error");
    CHECK_INT(s.tokens, 1);                         /* it came from memory */
    CHECK_INT(cursor, cl.first_seq);                /* the cursor stayed */
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 0", NULL, NULL, NULL) == SQLITE_OK);
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "running");                 /* nothing was written */
    /* writable again: the recovery records it, right after the cursor */
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, cl.job_id, now_ms()), 1);
    struct seen s2 = { 0 };
    r = follow_channel(&ctx, "f:ro", &job, &cursor, ro_on_ev, ro_idle, &s2, NULL, 100);
    CHECK_INT(r, FOLLOW_OVER);
    CHECK_STR(s2.last, "error");
    CHECK_INT(s2.tokens, 0);                        /* from the log this time */
    CHECK_INT(cursor, cl.first_seq + 1);
    close_ctx(&ctx);
}

/* The same through a connection (proto_pump, as the bridge and the
 * Phoenix transports pump): the error frame, the cursor unmoved, the
 * connection no longer following; the logged error later is one the
 * connection would read (seq > its cursor), not one it already passed. */
TEST(unrecorded_expiry_through_a_connection)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    char *text = dump(json_pack("{s:s}", "ticketBody", "dead worker [[fake tokens=3]]"));
    REQUIRE(text && proto_open(&ctx, &c, "/api/websocket/chat/follow-ro", "", "ip:1", &f) == 0);
    REQUIRE(send_text(&ctx, &c, text, &f, &job) == 0 && job);
    free(text);
    proto_job_free(job);                            /* its worker died before it began */
    REQUIRE(proto_following(&c) && c.job_id > 0);
    int64_t job_id = c.job_id, cursor = c.cursor;
    sleep_ms(cfg.lease_ms + 50);
    frames_free(&f);
    frames_init(&f);
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK);
    CHECK_INT(proto_pump(&ctx, &c, &f), 1);
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 0", NULL, NULL, NULL) == SQLITE_OK);
    CHECK_INT(f.n, 1);
    json_t *o = f.n ? frame(&f, 0) : NULL;
    CHECK_STR(ftype(o), "error");
    json_decref(o);
    CHECK(!proto_following(&c));
    CHECK_INT(c.cursor, cursor);                    /* nothing in the log was passed */
    CHECK_INT(c.ended_job, job_id);
    CHECK_INT(jobs_recover_if_expired(ctx.db, ctx.bell, job_id, now_ms()), 1);
    CHECK_INT(evlog_last_seq(ctx.db, "ticket:follow-ro"), cursor + 1);
    /* saved and loaded with the rest of the connection (long-poll sessions) */
    char *saved = proto_conn_save(&c);
    struct proto_conn back;
    REQUIRE(saved && proto_conn_load(&back, saved) == 0);
    CHECK_INT(back.ended_job, job_id);
    proto_conn_cleanup(&back);
    free(saved);
    frames_free(&f);
    proto_conn_cleanup(&c);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("follow") < 0)
        return 1;
    cfg.lease_ms = 200;            /* lease checks every 100 ms */
    RUN(channel_events_in_order_until_done);
    RUN(idle_hook_runs_and_can_end_it);
    RUN(expired_job_is_recovered);
    RUN(stop_flag_and_stopped_bell_end_it);
    RUN(connection_frames_carry_their_seq);
    RUN(client_gone_ends_with_left);
    RUN(runner_follow_wrapper_codes);
    RUN(unrecorded_expiry_is_handed_on_from_memory);
    RUN(unrecorded_expiry_through_a_connection);
    config_cleanup(&cfg);
    return th_done();
}
