/* test_genloop.c — the process's generation loop (proto_job_submit,
 * core/genloop.c) against the simulated LLM: many generations at once run
 * on ONE extra thread, and every token and "done" of every job is in its
 * channel's log, equal to what the upstream streamed, and cached; beyond
 * PARLEY_MAX_GENERATIONS jobs wait in the loop's queue with their leases
 * kept (a viewer recovering expired leases meanwhile finds none); upstream
 * failures end their own job only; a job failed by a viewer before it
 * started is dropped; proto_jobs_drain fails what is left
 * (error event, job failed, nothing cached) and a later submit starts a new
 * loop; a stream's first token is written at once, the later ones
 * coalesced; tokens read before a start is recorded (the loop sends first)
 * are logged after it, even with no coalescing. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "evlog.h"
#include "genloop.h"
#include "jobs.h"
#include "proto_impl.h"
#include "store.h"
#include "util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <time.h>

/* Claims a ticket generation through the seed 000 adapter in this thread. */
static struct proto_job *claim_ticket(struct parley_ctx *ctx, const char *ticket,
                                      const char *body)
{
    char path[128];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", ticket);
    struct proto_conn c;
    struct proto_frames fr;
    frames_init(&fr);
    if (proto_open(ctx, &c, path, "", "ip:127.0.0.1", &fr) < 0) {
        frames_free(&fr);
        proto_conn_cleanup(&c);
        return NULL;
    }
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    struct proto_job *job = NULL;
    proto_message(ctx, &c, text, strlen(text), &fr, &job);
    free(text);
    frames_free(&fr);
    proto_conn_cleanup(&c);
    return job;
}

/* Threads of this process (/proc/self/status). */
static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* What one channel's log holds for its (single) job. */
struct seen {
    int starts, tokens, dones, errors;
    char *text;                 /* tokens concatenated (new) */
    size_t len;
    char err[512];
};

/* Reads the whole channel. 0 / -1. */
static int read_channel(struct parley_ctx *ctx, const char *channel, struct seen *s)
{
    memset(s, 0, sizeof *s);
    int64_t cur = 0;
    for (;;) {
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, channel, cur, 256, &ev);
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        for (int i = 0; i < n; i++) {
            cur = ev[i].seq;
            if (!strcmp(ev[i].type, "start")) {
                s->starts++;
            } else if (!strcmp(ev[i].type, "token")) {
                s->tokens++;
                char *p = realloc(s->text, s->len + ev[i].data_len + 1);
                if (!p) {
                    evlog_free(ev, n);
                    return -1;
                }
                memcpy(p + s->len, ev[i].data, ev[i].data_len);
                s->len += ev[i].data_len;
                p[s->len] = '\0';
                s->text = p;
            } else if (!strcmp(ev[i].type, "done")) {
                s->dones++;
            } else if (!strcmp(ev[i].type, "error")) {
                s->errors++;
                str_copy(s->err, sizeof s->err, ev[i].data);
            }
        }
        evlog_free(ev, n);
    }
}

/* 1 when every channel's log ends with done or error, within ms. */
static int wait_all_ended(struct parley_ctx *ctx, char (*channels)[64], int n, int ms)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            struct seen s;
            if (read_channel(ctx, channels[i], &s) < 0 || (s.dones + s.errors) == 0)
                left++;
            free(s.text);
        }
        if (left == 0)
            return 1;
        if (mono_ms() > end)
            return 0;
        sleep_ms(50);
    }
}

#define MANY 120

TEST(many_jobs_run_on_one_thread_and_every_token_arrives)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    static char channels[MANY][64];
    static char *expect[MANY];
    static char keys[MANY][200];
    int threads_before = thread_count();
    for (int i = 0; i < MANY; i++) {
        char ticket[32], body[128];
        snprintf(ticket, sizeof ticket, "many-%d", i);
        snprintf(body, sizeof body, "ticket %d is stuck [[fake tokens=30 token_ms=20]]", i);
        struct proto_job *job = claim_ticket(&ctx, ticket, body);
        REQUIRE(job != NULL);
        str_copy(channels[i], sizeof channels[i], job->channel);
        str_copy(keys[i], sizeof keys[i], job->ans.key);
        expect[i] = fake_answer(job->req.llm.prompt, 0);
        REQUIRE(expect[i] != NULL);
        CHECK_INT(proto_job_submit(&ctx, job), 0);
    }
    /* while they stream: one loop thread, all of them running at once */
    sleep_ms(300);
    struct genloop_stats st;
    genloop_stats(&st);
    CHECK_INT(st.threads, 1);
    CHECK_INT(thread_count(), threads_before + 1);
    CHECK_INT(st.running + st.queued + (int)st.done, MANY);
    CHECK(st.running > 1);
    CHECK(wait_all_ended(&ctx, channels, MANY, 30000));
    for (int i = 0; i < MANY; i++) {
        struct seen s;
        CHECK_INT(read_channel(&ctx, channels[i], &s), 0);
        CHECK_INT(s.starts, 1);
        CHECK_INT(s.dones, 1);
        CHECK_INT(s.errors, 0);
        CHECK(s.tokens >= 1);
        CHECK_STR(s.text, expect[i]);
        char *cached = NULL;
        CHECK_INT(store_answer_get(ctx.db, keys[i], &cached, NULL, NULL), 0);
        CHECK_STR(cached, expect[i]);
        free(cached);
        free(s.text);
        free(expect[i]);
    }
    genloop_stats(&st);
    CHECK_INT(st.running, 0);
    CHECK_INT(st.queued, 0);
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

/* A stream's first token goes into the log in the loop iteration that read
 * it; the later ones still wait up to PARLEY_COALESCE_MS to share a
 * transaction. With the longest coalescing (1 s) and four tokens 150 ms
 * apart, the log holds two token events: the first token alone, the rest
 * written together when the stream ends (one event for all four before). */
TEST(the_first_token_does_not_wait_for_the_coalescing)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int old = cfg.coalesce_ms;
    cfg.coalesce_ms = 1000;
    struct proto_job *job = claim_ticket(&ctx, "first-now", "quick one [[fake tokens=4 token_ms=150]]");
    REQUIRE(job != NULL);
    char ch[64];
    str_copy(ch, sizeof ch, job->channel);
    char *expect = fake_answer(job->req.llm.prompt, 0);
    REQUIRE(expect != NULL);
    CHECK_INT(proto_job_submit(&ctx, job), 0);
    CHECK(wait_all_ended(&ctx, (char (*)[64])ch, 1, 10000));
    struct seen s;
    CHECK_INT(read_channel(&ctx, ch, &s), 0);
    CHECK_INT(s.dones, 1);
    CHECK_INT(s.tokens, 2);
    CHECK_STR(s.text, expect);
    free(s.text);
    free(expect);
    cfg.coalesce_ms = old;
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

/* The loop's order (core/genloop.c): a gen made by runner_gen_new streams
 * before its start is recorded. Tokens read meanwhile must not reach the
 * log before "start", even with no coalescing (they are written at once
 * otherwise): here the whole answer is read before runner_gen_record_start,
 * on a multi of this thread, and the log must still read start, tokens,
 * done. */
TEST(tokens_read_before_the_start_is_recorded_follow_it)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int old = cfg.coalesce_ms;
    cfg.coalesce_ms = 0;
    struct proto_job *job = claim_ticket(&ctx, "early-tokens", "early [[fake tokens=5 token_ms=1]]");
    REQUIRE(job != NULL);
    char *expect = fake_answer(job->req.llm.prompt, 0);
    REQUIRE(expect != NULL);
    struct runner_gen *g = NULL;
    REQUIRE(runner_gen_new(&ctx, &job->req, &job->claim, RUNNER_BATCH, &g) == 0);
    struct llm_stream *st = runner_gen_stream(g);
    REQUIRE(st != NULL);
    CURL *easy = llm_stream_easy(st);
    REQUIRE(easy != NULL);
    CURLM *m = curl_multi_init();
    REQUIRE(m != NULL);
    curl_multi_add_handle(m, easy);
    int running = 1, done = 0;
    int64_t end = mono_ms() + 10000;
    while (!done && mono_ms() < end) {      /* the whole answer, before any start */
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE) {
                llm_stream_transfer_done(st, msg->data.result);
                done = llm_stream_ended(st);
            }
        if (!done)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CHECK(done);
    CHECK(runner_gen_pending(g) > 0);      /* kept, not written */
    struct gen_outcome out;
    CHECK_INT(runner_gen_record_start(g, &job->claim, 0, &out), 0);
    gen_outcome_free(&out);
    REQUIRE(db_begin(ctx.db) == 0);
    CHECK_INT(runner_gen_flush_tx(g), 1);
    CHECK_INT(db_commit(ctx.db), 0);
    curl_multi_remove_handle(m, easy);
    int lrc = llm_stream_finish(st);
    CHECK_INT(runner_gen_finish(g, lrc, &out), 0);
    gen_outcome_free(&out);
    curl_multi_cleanup(m);
    /* the log: start first, then the tokens, then done */
    struct evlog_event *ev = NULL;
    int n = evlog_read(ctx.db, job->channel, job->claim.first_seq, 256, &ev);
    CHECK(n >= 3);
    if (n >= 3) {
        CHECK_STR(ev[0].type, "start");
        CHECK_STR(ev[n - 1].type, "done");
        for (int i = 1; i < n - 1; i++)
            CHECK_STR(ev[i].type, "token");
    }
    evlog_free(ev, n);
    struct seen sn;
    CHECK_INT(read_channel(&ctx, job->channel, &sn), 0);
    CHECK_STR(sn.text ? sn.text : "", expect);
    free(sn.text);
    free(expect);
    proto_job_free(job);
    cfg.coalesce_ms = old;
    close_ctx(&ctx);
}

/* A viewer in another thread fails every job whose lease expired. */
struct recoverer { volatile int stop; int recovered; };

static void *recover_main(void *arg)
{
    struct recoverer *r = arg;
    struct parley_ctx ctx;
    if (open_ctx(&ctx) < 0)
        return NULL;
    while (!r->stop) {
        int n = jobs_recover(ctx.db, ctx.bell, now_ms());
        if (n > 0)
            r->recovered += n;
        sleep_ms(cfg.lease_ms / 4);
    }
    close_ctx(&ctx);
    return NULL;
}

#define BOUNDED 24

TEST(beyond_the_bound_jobs_wait_with_their_leases_kept)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int old_max = cfg.max_generations;
    cfg.max_generations = 4;        /* read when the loop starts */
    static char channels[BOUNDED][64];
    static char *expect[BOUNDED];
    struct recoverer rec = { 0, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, recover_main, &rec) == 0);
    for (int i = 0; i < BOUNDED; i++) {
        char ticket[32], body[128];
        snprintf(ticket, sizeof ticket, "bound-%d", i);
        /* each ~250 ms: the last of 6 rounds waits ~1.25 s, three leases */
        snprintf(body, sizeof body, "bounded %d [[fake tokens=10 token_ms=25]]", i);
        struct proto_job *job = claim_ticket(&ctx, ticket, body);
        REQUIRE(job != NULL);
        str_copy(channels[i], sizeof channels[i], job->channel);
        expect[i] = fake_answer(job->req.llm.prompt, 0);
        CHECK_INT(proto_job_submit(&ctx, job), 0);
    }
    int max_running = 0, ended = 0;
    int64_t end = mono_ms() + 30000;
    while (!ended && mono_ms() < end) {
        struct genloop_stats st;
        genloop_stats(&st);
        if (st.running > max_running)
            max_running = st.running;
        ended = st.running == 0 && st.queued == 0;
        sleep_ms(20);
    }
    rec.stop = 1;
    pthread_join(th, NULL);
    CHECK(ended);
    CHECK_INT(max_running, 4);
    CHECK_INT(rec.recovered, 0);
    for (int i = 0; i < BOUNDED; i++) {
        struct seen s;
        CHECK_INT(read_channel(&ctx, channels[i], &s), 0);
        CHECK_INT(s.dones, 1);
        CHECK_INT(s.errors, 0);
        CHECK_STR(s.text, expect[i]);
        free(s.text);
        free(expect[i]);
    }
    CHECK_INT(proto_jobs_drain(1000), 0);
    cfg.max_generations = old_max;
    close_ctx(&ctx);
}

TEST(upstream_failures_end_only_their_own_job)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    static const char *bodies[] = {
        "fails midway [[fake tokens=10 token_ms=5 error_after=3]]",
        "not json [[fake tokens=10 token_ms=5 malformed_after=2]]",
        "cut off [[fake tokens=10 token_ms=5 drop_after=4]]",
        "http error [[fake status=500]]",
        "fine one [[fake tokens=8 token_ms=5]]",
    };
    static const char *kinds[] = { "upstream", "malformed", "cut", "http", NULL };
    char channels[5][64], keys[5][200];
    for (int i = 0; i < 5; i++) {
        char ticket[32];
        snprintf(ticket, sizeof ticket, "fail-%d", i);
        struct proto_job *job = claim_ticket(&ctx, ticket, bodies[i]);
        REQUIRE(job != NULL);
        str_copy(channels[i], sizeof channels[i], job->channel);
        str_copy(keys[i], sizeof keys[i], job->ans.key);
        CHECK_INT(proto_job_submit(&ctx, job), 0);
    }
    CHECK(wait_all_ended(&ctx, channels, 5, 15000));
    for (int i = 0; i < 5; i++) {
        struct seen s;
        CHECK_INT(read_channel(&ctx, channels[i], &s), 0);
        char *cached = NULL;
        int got = store_answer_get(ctx.db, keys[i], &cached, NULL, NULL);
        free(cached);
        if (kinds[i]) {
            CHECK_INT(s.errors, 1);
            CHECK_INT(s.dones, 0);
            json_t *o = json_loads(s.err, 0, NULL);
            CHECK_STR(json_string_value(json_object_get(o, "kind")), kinds[i]);
            json_decref(o);
            CHECK(got != 0);                 /* nothing cached */
        } else {
            CHECK_INT(s.dones, 1);
            CHECK_INT(s.errors, 0);
            CHECK_INT(got, 0);
        }
        free(s.text);
    }
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

TEST(a_job_failed_before_it_starts_is_dropped_the_others_run)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    /* A's owner "died": its lease expires and a viewer fails it */
    struct proto_job *a = claim_ticket(&ctx, "gone-a", "lost [[fake tokens=3 token_ms=1]]");
    REQUIRE(a != NULL);
    sleep_ms(cfg.lease_ms + 100);
    CHECK_INT(jobs_recover(ctx.db, ctx.bell, now_ms()), 1);
    struct proto_job *b = claim_ticket(&ctx, "gone-b", "kept b [[fake tokens=3 token_ms=1]]");
    struct proto_job *c = claim_ticket(&ctx, "gone-c", "kept c [[fake tokens=3 token_ms=1]]");
    REQUIRE(b != NULL && c != NULL);
    char ch[3][64];
    str_copy(ch[0], sizeof ch[0], a->channel);
    str_copy(ch[1], sizeof ch[1], b->channel);
    str_copy(ch[2], sizeof ch[2], c->channel);
    /* back to back: the loop takes them in one batch when it can */
    CHECK_INT(proto_job_submit(&ctx, a), 0);
    CHECK_INT(proto_job_submit(&ctx, b), 0);
    CHECK_INT(proto_job_submit(&ctx, c), 0);
    CHECK(wait_all_ended(&ctx, ch, 3, 10000));
    struct seen s;
    CHECK_INT(read_channel(&ctx, ch[0], &s), 0);
    CHECK_INT(s.starts, 0);        /* never started: only the recovery's error */
    CHECK_INT(s.errors, 1);
    CHECK_INT(s.dones, 0);
    free(s.text);
    for (int i = 1; i < 3; i++) {
        CHECK_INT(read_channel(&ctx, ch[i], &s), 0);
        CHECK_INT(s.starts, 1);
        CHECK_INT(s.dones, 1);
        CHECK_INT(s.errors, 0);
        free(s.text);
    }
    struct genloop_stats st;
    genloop_stats(&st);
    CHECK_INT(st.running + st.queued, 0);
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

/* A job whose owner died while nobody follows its channel (a seed 004 or
 * OpenAI stream whose client left with the process): the loop of any
 * process that runs generations fails it once its lease has run out
 * (every lease: jobs_recover), so it is not left running until a cron
 * `parley maintain`. */
TEST(a_job_nobody_follows_is_failed_after_its_lease)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    /* the loop runs (one generation of its own) */
    struct proto_job *live = claim_ticket(&ctx, "sweep-live", "live [[fake tokens=3 token_ms=1]]");
    REQUIRE(live != NULL);
    char ch[64];
    str_copy(ch, sizeof ch, live->channel);
    CHECK_INT(proto_job_submit(&ctx, live), 0);
    CHECK(wait_all_ended(&ctx, (char (*)[64])ch, 1, 10000));
    /* claimed, never run, never renewed, never followed: its owner "died" */
    struct proto_job *orphan = claim_ticket(&ctx, "sweep-orphan", "orphan [[fake tokens=3 token_ms=1]]");
    REQUIRE(orphan != NULL);
    int64_t id = orphan->claim.job_id;
    str_copy(ch, sizeof ch, orphan->channel);
    proto_job_free(orphan);
    struct job_info ji;
    int64_t end = mono_ms() + 4 * cfg.lease_ms + 2000;
    for (;;) {
        REQUIRE(jobs_get(ctx.db, id, &ji) == 0);
        if (strcmp(ji.state, "running") != 0 || mono_ms() > end)
            break;
        sleep_ms(50);
    }
    CHECK_STR(ji.state, "failed");
    struct seen s;
    CHECK_INT(read_channel(&ctx, ch, &s), 0);
    CHECK_INT(s.errors, 1);
    CHECK_INT(s.starts, 0);
    CHECK(strstr(s.err, "interrupted") != NULL);
    free(s.text);
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

#define HUNG 10

TEST(drain_fails_the_rest_cleanly_and_a_new_loop_starts_after)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int old_max = cfg.max_generations;
    cfg.max_generations = 6;        /* 6 streaming (hung), 4 waiting */
    char channels[HUNG][64], keys[HUNG][200];
    int64_t ids[HUNG];
    for (int i = 0; i < HUNG; i++) {
        char ticket[32], body[128];
        snprintf(ticket, sizeof ticket, "hung-%d", i);
        snprintf(body, sizeof body, "hangs %d [[fake tokens=10 token_ms=5 hang_after=2]]", i);
        struct proto_job *job = claim_ticket(&ctx, ticket, body);
        REQUIRE(job != NULL);
        str_copy(channels[i], sizeof channels[i], job->channel);
        str_copy(keys[i], sizeof keys[i], job->ans.key);
        ids[i] = job->claim.job_id;
        CHECK_INT(proto_job_submit(&ctx, job), 0);
    }
    sleep_ms(400);                  /* the first six got their two tokens */
    struct genloop_stats st;
    genloop_stats(&st);
    CHECK_INT(st.running, 6);
    CHECK_INT(st.queued, 4);
    CHECK_INT(proto_jobs_drain(300), HUNG);
    genloop_stats(&st);
    CHECK_INT(st.threads, 0);
    for (int i = 0; i < HUNG; i++) {
        struct seen s;
        CHECK_INT(read_channel(&ctx, channels[i], &s), 0);
        CHECK_INT(s.errors, 1);
        CHECK_INT(s.dones, 0);
        CHECK(strstr(s.err, "shutting down") != NULL);
        if (i < 6) {                /* tokens already shown stay in the log */
            CHECK_INT(s.starts, 1);
            CHECK(s.len > 0);
        } else {                    /* never started */
            CHECK_INT(s.starts, 0);
            CHECK_INT(s.tokens, 0);
        }
        struct job_info ji;
        CHECK_INT(jobs_get(ctx.db, ids[i], &ji), 0);
        CHECK_STR(ji.state, "failed");
        char *cached = NULL;
        CHECK(store_answer_get(ctx.db, keys[i], &cached, NULL, NULL) != 0);
        free(cached);
        free(s.text);
    }
    cfg.max_generations = old_max;

    /* after a drain, the next submit starts a new loop */
    struct proto_job *job = claim_ticket(&ctx, "after-drain", "again [[fake tokens=3 token_ms=1]]");
    REQUIRE(job != NULL);
    char ch[64];
    str_copy(ch, sizeof ch, job->channel);
    CHECK_INT(proto_job_submit(&ctx, job), 0);
    CHECK(wait_all_ended(&ctx, (char (*)[64])ch, 1, 10000));
    struct seen s;
    CHECK_INT(read_channel(&ctx, ch, &s), 0);
    CHECK_INT(s.dones, 1);
    free(s.text);
    CHECK_INT(proto_jobs_drain(1000), 0);
    close_ctx(&ctx);
}

int main(void)
{
    const char *url = fake_url();
    if (!url)
        return 1;
    char err[512];
    if (config_defaults(&cfg) < 0)
        return 1;
    snprintf(dbpath, sizeof dbpath, "%s/genloop.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s-bell", dbpath);
    if (config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err) < 0 ||
        config_set(&cfg, "OLLAMA_SERVER", url, err, sizeof err) < 0 ||
        config_set(&cfg, "PARLEY_LEASE_MS", "400", err, sizeof err) < 0 ||
        config_set(&cfg, "RATE_LIMIT_MESSAGES_PER_MINUTE", "0", err, sizeof err) < 0) {
        printf("# %s\n", err);
        return 1;
    }
    llm_global_init();
    RUN(many_jobs_run_on_one_thread_and_every_token_arrives);
    RUN(the_first_token_does_not_wait_for_the_coalescing);
    RUN(tokens_read_before_the_start_is_recorded_follow_it);
    RUN(beyond_the_bound_jobs_wait_with_their_leases_kept);
    RUN(upstream_failures_end_only_their_own_job);
    RUN(a_job_failed_before_it_starts_is_dropped_the_others_run);
    RUN(a_job_nobody_follows_is_failed_after_its_lease);
    RUN(drain_fails_the_rest_cleanly_and_a_new_loop_starts_after);
    config_cleanup(&cfg);
    return th_done();
}
