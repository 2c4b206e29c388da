/* test_runner.c — the generation runner end to end against the simulated
 * LLM: success stores answer + message atomically with "done"; upstream
 * failures give one specific error event and cache nothing; single flight
 * across processes makes one upstream call; a SIGKILLed owner is recovered
 * by a viewer in another process and its partial answer is not cached. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "bell.h"
#include "config.h"
#include "db_sqlite.h"
#include "evlog.h"
#include "jobs.h"
#include "llm.h"
#include "runner.h"
#include "store.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <sys/mman.h>

static int count_rows(parley_db *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, arg);
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

struct collect { char text[8192]; size_t len; int tokens, starts, dones, errors; char err[512]; };

static int on_collect(void *ud, const struct evlog_event *ev)
{
    struct collect *c = ud;
    if (!strcmp(ev->type, "token")) {
        c->tokens++;
        if (c->len + ev->data_len < sizeof c->text) {
            memcpy(c->text + c->len, ev->data, ev->data_len);
            c->len += ev->data_len;
            c->text[c->len] = '\0';
        }
    } else if (!strcmp(ev->type, "start")) {
        c->starts++;
    } else if (!strcmp(ev->type, "done")) {
        c->dones++;
    } else if (!strcmp(ev->type, "error")) {
        c->errors++;
        str_copy(c->err, sizeof c->err, ev->data);
    }
    return 0;
}

/* A ticket request for ticket id with body (directives in the body). */
struct treq {
    char channel[64];
    char hash[65];
    struct answer ans;
    struct gen_request req;
};

static void ticket_request(struct treq *t, const char *id, const char *body)
{
    memset(t, 0, sizeof *t);
    snprintf(t->channel, sizeof t->channel, "ticket:%s", id);
    answer_key_ticket(&t->ans, id, body, t->hash);
    t->req.channel = t->channel;
    t->req.prompt_key = t->ans.key;
    t->req.llm.prompt = body;
    t->req.llm.temperature = -1;
    t->req.cache = &t->ans;
}

TEST(success_is_stored_with_done)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct conversation conv;
    memset(&conv, 0, sizeof conv);
    str_copy(conv.owner, sizeof conv.owner, "u1");
    REQUIRE(store_conv_create(ctx.db, &conv) == 0);
    const char *body = "Printer jam on floor 3 [[fake tokens=25 token_ms=2]]";
    struct treq t;
    ticket_request(&t, "100", body);
    t.req.conversation_id = conv.id;
    char *want = fake_answer(body, 25);
    REQUIRE(want != NULL);
    struct job_claim cl;
    struct gen_outcome out;
    int owner = 0;
    REQUIRE(runner_run(&ctx, &t.req, &cl, &owner, &out) == 0);
    CHECK_INT(owner, 1);
    CHECK_INT(out.ok, 1);
    CHECK_STR(out.text, want);
    CHECK(out.tokens > 0);
    CHECK(out.model[0] != '\0');
    CHECK(out.first_token_ms >= 0);
    /* the log: start, tokens, done — reassembles to the answer */
    struct collect c;
    memset(&c, 0, sizeof c);
    int64_t cursor = cl.first_seq;
    CHECK_INT(runner_follow(&ctx, t.channel, cl.job_id, &cursor, 2000, NULL, on_collect, &c), 0);
    CHECK_INT(c.starts, 1);
    CHECK_INT(c.dones, 1);
    CHECK_INT(c.errors, 0);
    CHECK_STR(c.text, want);
    /* cache and message written */
    char *resp = NULL;
    REQUIRE(store_answer_get(ctx.db, t.ans.key, &resp, NULL, NULL) == 0);
    CHECK_STR(resp, want);
    free(resp);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, conv.id, 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(m[0].role, "assistant");
        CHECK_STR(m[0].content, want);
        CHECK_STR(m[0].id, out.message_id);
        CHECK(m[0].model != NULL);
    }
    store_msgs_free(m, n);
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "done");
    free(want);
    gen_outcome_free(&out);
    close_ctx(&ctx);
}

/* Each upstream fault: failed job, one error event naming the problem,
 * tokens already shown kept in the log, nothing cached, no message. */
TEST(failures_cache_nothing)
{
    static const struct { const char *knobs; const char *kind; const char *needle; } cases[] = {
        { "error_after=3", "upstream", "" },
        { "malformed_after=2", "malformed", "" },
        { "drop_after=2", "cut", "" },
        { "status=500", "http", "500" },
        { "hang_after=2", "timeout_idle", "" },
    };
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_idle = cfg.idle_timeout_ms;
    cfg.idle_timeout_ms = 400;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[128], id[16];
        snprintf(body, sizeof body, "fault case %zu [[fake tokens=10 token_ms=5 %s]]", i, cases[i].knobs);
        snprintf(id, sizeof id, "f%zu", i);
        struct conversation conv;
        memset(&conv, 0, sizeof conv);
        str_copy(conv.owner, sizeof conv.owner, "u2");
        REQUIRE(store_conv_create(ctx.db, &conv) == 0);
        struct treq t;
        ticket_request(&t, id, body);
        t.req.conversation_id = conv.id;
        struct job_claim cl;
        struct gen_outcome out;
        int owner;
        REQUIRE(runner_run(&ctx, &t.req, &cl, &owner, &out) == 0);
        CHECK_INT(out.ok, 0);
        CHECK_STR(llm_err_name(out.kind), cases[i].kind);
        CHECK(out.error[0] != '\0');
        CHECK(strstr(out.error, cases[i].needle) != NULL);
        printf("# %s -> %s: %s\n", cases[i].knobs, llm_err_name(out.kind), out.error);
        struct collect c;
        memset(&c, 0, sizeof c);
        int64_t cursor = cl.first_seq;
        CHECK_INT(runner_follow(&ctx, t.channel, cl.job_id, &cursor, 2000, NULL, on_collect, &c), 0);
        CHECK_INT(c.errors, 1);
        CHECK_INT(c.dones, 0);
        CHECK(strstr(c.err, cases[i].kind) != NULL);
        CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM answers WHERE ticket_id = ?", id), 0);
        CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM messages WHERE conversation_id = ?", conv.id), 0);
        struct job_info ji;
        REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
        CHECK_STR(ji.state, "failed");
        gen_outcome_free(&out);
    }
    cfg.idle_timeout_ms = saved_idle;
    close_ctx(&ctx);
}

TEST(upstream_down_is_clear)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char err[256];
    REQUIRE(config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err) == 0);
    struct treq t;
    ticket_request(&t, "down", "anyone there?");
    struct job_claim cl;
    struct gen_outcome out;
    int owner;
    REQUIRE(runner_run(&ctx, &t.req, &cl, &owner, &out) == 0);
    CHECK_INT(out.ok, 0);
    CHECK_INT(out.kind, LLM_ERR_CONNECT);
    CHECK(strstr(out.error, "127.0.0.1") != NULL);
    CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM answers WHERE ticket_id = ?", "down"), 0);
    gen_outcome_free(&out);
    REQUIRE(config_set(&cfg, "OLLAMA_SERVER", fake_url(), err, sizeof err) == 0);
    close_ctx(&ctx);
}

struct mp { int owners; int ok; int bad; };

/* Three processes ask the same ticket at once: one upstream call, and every
 * process ends up with the same text (the owner from its outcome, the
 * others by following the log). */
TEST(single_flight_one_upstream_call)
{
    struct mp *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);
    const char *body = "shared ticket [[fake tokens=20 token_ms=20]]";
    char *want = fake_answer(body, 20);
    REQUIRE(want);
    long before = fake_total();
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            struct parley_ctx ctx;
            if (open_ctx(&ctx) < 0)
                _exit(1);
            struct treq t;
            ticket_request(&t, "shared", body);
            struct job_claim cl;
            struct gen_outcome out;
            int owner;
            struct collect c;
            memset(&c, 0, sizeof c);
            /* the claim happens first; then the owner runs, the others follow */
            if (runner_claim(&ctx, &t.req, &cl, NULL, 0) < 0)
                _exit(1);
            int good;
            if (cl.owner) {
                __atomic_add_fetch(&sh->owners, 1, __ATOMIC_SEQ_CST);
                good = runner_execute(&ctx, &t.req, &cl, &out) == 0 && out.ok &&
                       !strcmp(out.text, want);
                gen_outcome_free(&out);
            } else {
                int64_t cur = cl.first_seq;
                good = runner_follow(&ctx, t.channel, cl.job_id, &cur, 5000, NULL, on_collect, &c) == 0 &&
                       c.dones == 1 && !strcmp(c.text, want);
            }
            (void)owner;
            __atomic_add_fetch(good ? &sh->ok : &sh->bad, 1, __ATOMIC_SEQ_CST);
            close_ctx(&ctx);
            _exit(0);
        }
    }
    for (int i = 0; i < 3; i++)
        waitpid(pids[i], NULL, 0);
    CHECK_INT(sh->owners, 1);
    CHECK_INT(sh->ok, 3);
    CHECK_INT(sh->bad, 0);
    CHECK_INT(fake_total() - before, 1);
    free(want);
    munmap(sh, sizeof *sh);
}

TEST(killed_owner_mid_stream)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_lease = cfg.lease_ms;
    cfg.lease_ms = 400;
    const char *body = "long answer [[fake tokens=200 token_ms=30]]";
    struct treq t;
    ticket_request(&t, "killme", body);
    pid_t pid = fork();
    if (pid == 0) {
        struct parley_ctx cctx;
        if (open_ctx(&cctx) < 0)
            _exit(1);
        struct job_claim cl;
        struct gen_outcome out;
        int owner;
        runner_run(&cctx, &t.req, &cl, &owner, &out);
        _exit(0);
    }
    /* wait until the child's job streams, then kill it */
    int64_t job = 0, first = 0;
    for (int i = 0; i < 200 && !job; i++) {
        sleep_ms(10);
        sqlite3_stmt *st = db_stmt(ctx.db, "SELECT id, first_seq FROM jobs WHERE channel = ? "
                                           "AND state = 'running'");
        db_bind_text(st, 1, t.channel);
        if (sqlite3_step(st) == SQLITE_ROW) {
            job = sqlite3_column_int64(st, 0);
            first = sqlite3_column_int64(st, 1);
        }
        sqlite3_reset(st);
    }
    REQUIRE(job > 0);
    sleep_ms(200);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    struct collect c;
    memset(&c, 0, sizeof c);
    int64_t cursor = first;
    CHECK_INT(runner_follow(&ctx, t.channel, job, &cursor, 5000, NULL, on_collect, &c), 0);
    CHECK(c.tokens >= 2);
    CHECK_INT(c.errors, 1);
    CHECK(strstr(c.err, "interrupted") != NULL);
    CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM answers WHERE ticket_id = ?", "killme"), 0);
    /* asking again runs a fresh job to completion and caches it */
    struct treq t2;
    ticket_request(&t2, "killme", "long answer [[fake tokens=5 token_ms=1]]");
    struct job_claim cl;
    struct gen_outcome out;
    int owner;
    REQUIRE(runner_run(&ctx, &t2.req, &cl, &owner, &out) == 0);
    CHECK_INT(out.ok, 1);
    CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM answers WHERE ticket_id = ?", "killme"), 1);
    gen_outcome_free(&out);
    cfg.lease_ms = saved_lease;
    close_ctx(&ctx);
}

TEST(coalescing_keeps_text)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved = cfg.coalesce_ms;
    cfg.coalesce_ms = 30;
    const char *body = "burst [[fake tokens=150 token_ms=0]]";
    char *want = fake_answer(body, 150);
    REQUIRE(want);
    struct treq t;
    ticket_request(&t, "burst", body);
    struct job_claim cl;
    struct gen_outcome out;
    int owner;
    REQUIRE(runner_run(&ctx, &t.req, &cl, &owner, &out) == 0);
    CHECK_INT(out.ok, 1);
    struct collect c;
    memset(&c, 0, sizeof c);
    int64_t cursor = cl.first_seq;
    CHECK_INT(runner_follow(&ctx, t.channel, cl.job_id, &cursor, 2000, NULL, on_collect, &c), 0);
    CHECK_STR(c.text, want);
    CHECK(c.tokens < 150);      /* coalesced into fewer events */
    printf("# 150 tokens in a burst -> %d token events\n", c.tokens);
    free(want);
    gen_outcome_free(&out);
    cfg.coalesce_ms = saved;
    close_ctx(&ctx);
}

struct exec_arg { struct treq *t; struct job_claim *cl; struct gen_outcome out; int rc; };

static void *exec_thread(void *p)
{
    struct exec_arg *a = p;
    struct parley_ctx ctx;
    a->rc = -1;
    if (open_ctx(&ctx) == 0) {
        a->rc = runner_execute(&ctx, &a->t->req, a->cl, &a->out);
        close_ctx(&ctx);
    }
    return NULL;
}

/* Claimed by one thread, run by another (the CLI, SSE helper threads and
 * the bridge's workers do this): the lease moves with it and the job ends
 * done, not "interrupted" a lease later. */
TEST(claim_here_run_there)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct treq t;
    ticket_request(&t, "handoff", "hand off [[fake tokens=8 token_ms=5]]");
    struct job_claim cl;
    REQUIRE(runner_claim(&ctx, &t.req, &cl, NULL, 0) == 0);
    REQUIRE(cl.owner);
    struct exec_arg a = { &t, &cl, { 0 }, -1 };
    pthread_t th;
    int64_t t0 = mono_ms();
    REQUIRE(pthread_create(&th, NULL, exec_thread, &a) == 0);
    pthread_join(th, NULL);
    CHECK_INT(a.rc, 0);
    CHECK_INT(a.out.ok, 1);
    CHECK(mono_ms() - t0 < 3000);
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "done");
    CHECK_INT(count_rows(ctx.db, "SELECT count(*) FROM answers WHERE ticket_id = ?", "handoff"), 1);
    gen_outcome_free(&a.out);
    close_ctx(&ctx);
}

TEST(one_sentence_stops_early)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *body = "voice [[fake answer=\"Sure thing. The XPS costs 1999. Anything else?\" token_ms=1]]";
    struct treq t;
    ticket_request(&t, "voice", body);
    t.req.one_sentence = 1;
    struct job_claim cl;
    struct gen_outcome out;
    int owner;
    REQUIRE(runner_run(&ctx, &t.req, &cl, &owner, &out) == 0);
    CHECK_INT(out.ok, 1);
    CHECK_STR(out.text, "Sure thing.");
    struct collect c;
    memset(&c, 0, sizeof c);
    int64_t cursor = cl.first_seq;
    CHECK_INT(runner_follow(&ctx, t.channel, cl.job_id, &cursor, 2000, NULL, on_collect, &c), 0);
    CHECK_STR(c.text, "Sure thing.");
    CHECK_INT(c.dones, 1);
    gen_outcome_free(&out);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("runner") < 0)
        return 1;
    RUN(success_is_stored_with_done);
    RUN(failures_cache_nothing);
    RUN(upstream_down_is_clear);
    RUN(single_flight_one_upstream_call);
    RUN(killed_owner_mid_stream);
    RUN(coalescing_keeps_text);
    RUN(one_sentence_stops_early);
    RUN(claim_here_run_there);
    config_cleanup(&cfg);
    return th_done();
}
