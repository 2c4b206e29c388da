/* test_usage.c — token accounting and budgets (core/usage.h): charges and
 * their rows, nothing for zero tokens, bad charges refused with nothing
 * written, a charge inside a caller's transaction going with it, UTC day
 * boundaries and the dense list of days, the reset time and its ISO 8601
 * form, budget precedence (claim > override > default, 0 = unlimited,
 * override removed), the exhausted message, totals, and concurrent charges
 * from several processes and several connections adding up exactly.
 *
 * Every case runs on SQLite (a database file per case) and again on
 * PostgreSQL when PARLEY_TEST_PG holds a URI (tests/integration/
 * t0745-pg-usage.sh), with user ids of this run (prefix pfx) so a database
 * used before does not disturb them. On PostgreSQL each connection stands
 * for a node. The runner cases (SQLite only: the charge is this module's,
 * the runner is backend-neutral) run generations against the simulated LLM
 * and check what its end charged: done, failed after tokens, failed before
 * any token (nothing). */
#include "th.h"
#include "protohelp.h"
#include "runner.h"
#include "store.h"
#include "usage.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

/* 2026-12-07T12:00:00Z */
static const int64_t NOON = 1796644800000;
static const int64_t DAY = USAGE_DAY_MS;

static const char *pg_uri;      /* NULL: SQLite run */
static char pfx[64];            /* prefix of user ids: "" on SQLite */

#define U(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

static const char *target(const char *name, char *buf, size_t len)
{
    if (pg_uri)
        return pg_uri;
    snprintf(buf, len, "%s/%s", th_tmpdir(), name);
    return buf;
}

static parley_db *open_db(const char *name)
{
    char path[512], err[512];
    const char *t = target(name, path, sizeof path);
    parley_db *db = db_open(t, err, sizeof err);
    if (!db)
        printf("#   db_open %s: %s\n", pg_uri ? "PARLEY_TEST_PG" : t, err);
    return db;
}

/* One integer from a query with one text parameter, on either backend.
 * sqlite_sql uses ?1, pg_sql $1. -1 on error. */
static int64_t q_int(parley_db *db, const char *sqlite_sql, const char *pg_sql, const char *arg)
{
    if (db_pg_conn(db)) {
        const char *p[1] = { arg };
        PGresult *r = PQexecParams(db_pg_conn(db), pg_sql, 1, NULL, p, NULL, NULL, 0);
        int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                    ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
        PQclear(r);
        return n;
    }
    sqlite3_stmt *st = db_stmt(db, sqlite_sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, arg);
    int64_t n = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
                ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

static int64_t events_of(parley_db *db, const char *user)
{
    return q_int(db, "SELECT count(*) FROM usage_events WHERE user_id = ?1",
                 "SELECT count(*) FROM usage_events WHERE user_id = $1", user);
}

static int charge(parley_db *db, const char *user, int64_t p, int64_t c, int64_t at)
{
    struct usage_charge u = { .user = user, .channel = "conv:test", .job_id = 7,
                              .message_id = "m-1", .model = "llama3", .upstream = "local",
                              .outcome = "done", .prompt_tokens = p, .completion_tokens = c,
                              .at_ms = at };
    return usage_charge_tx(db, &u);
}

TEST(charge_rows_and_today)
{
    parley_db *db = open_db("charge.db");
    REQUIRE(db);
    U(alice, "alice");
    U(bob, "bob");
    CHECK_INT(charge(db, alice, 12, 30, NOON), 0);
    struct usage_charge u = { .user = alice, .channel = "ticket:9", .outcome = "stopped",
                              .prompt_tokens = 5, .completion_tokens = 3, .at_ms = NOON + 1000 };
    CHECK_INT(usage_charge_tx(db, &u), 0);            /* no job, no message id */
    CHECK_INT(charge(db, bob, 1, 1, NOON), 0);
    struct usage_day d;
    REQUIRE(usage_today(db, alice, NOON + 5000, &d) == 0);
    CHECK_INT(d.day, NOON / DAY);
    CHECK_INT(d.prompt_tokens, 17);
    CHECK_INT(d.completion_tokens, 33);
    CHECK_INT(d.generations, 2);
    CHECK_INT(events_of(db, alice), 2);
    CHECK_INT(events_of(db, bob), 1);
    /* the stored row says what was charged */
    CHECK_INT(q_int(db, "SELECT count(*) FROM usage_events WHERE user_id = ?1 AND channel = 'conv:test' "
                        "AND job_id = 7 AND message_id = 'm-1' AND model = 'llama3' AND upstream = 'local' "
                        "AND outcome = 'done' AND prompt_tokens = 12 AND completion_tokens = 30",
                    "SELECT count(*) FROM usage_events WHERE user_id = $1 AND channel = 'conv:test' "
                        "AND job_id = 7 AND message_id = 'm-1' AND model = 'llama3' AND upstream = 'local' "
                        "AND outcome = 'done' AND prompt_tokens = 12 AND completion_tokens = 30", alice), 1);
    CHECK_INT(q_int(db, "SELECT count(*) FROM usage_events WHERE user_id = ?1 AND job_id IS NULL "
                        "AND message_id IS NULL AND outcome = 'stopped'",
                    "SELECT count(*) FROM usage_events WHERE user_id = $1 AND job_id IS NULL "
                        "AND message_id IS NULL AND outcome = 'stopped'", alice), 1);
    /* a user never charged: zeros */
    U(carol, "carol");
    REQUIRE(usage_today(db, carol, NOON, &d) == 0);
    CHECK_INT(d.prompt_tokens + d.completion_tokens + d.generations, 0);
    db_close(db);
}

TEST(zero_and_bad_charges_write_nothing)
{
    parley_db *db = open_db("bad.db");
    REQUIRE(db);
    U(u1, "zero");
    CHECK_INT(charge(db, u1, 0, 0, NOON), 0);
    CHECK_INT(events_of(db, u1), 0);
    CHECK_INT(charge(db, u1, -1, 5, NOON), -1);
    CHECK_INT(charge(db, u1, 5, -1, NOON), -1);
    struct usage_charge u = { .user = u1, .channel = "", .outcome = "done",
                              .prompt_tokens = 1, .at_ms = NOON };
    CHECK_INT(usage_charge_tx(db, &u), -1);           /* no channel */
    u.channel = NULL;
    CHECK_INT(usage_charge_tx(db, &u), -1);
    u.channel = "conv:x";
    u.outcome = "cached";
    CHECK_INT(usage_charge_tx(db, &u), -1);           /* unknown outcome */
    u.outcome = NULL;
    CHECK_INT(usage_charge_tx(db, &u), -1);
    CHECK_INT(usage_charge_tx(NULL, &u), -1);
    CHECK_INT(usage_charge_tx(db, NULL), -1);
    CHECK_INT(events_of(db, u1), 0);
    struct usage_day d;
    REQUIRE(usage_today(db, u1, NOON, &d) == 0);
    CHECK_INT(d.prompt_tokens + d.completion_tokens + d.generations, 0);
    struct usage_day days[2];
    CHECK_INT(usage_days(db, u1, NOON, 0, days), -1);
    CHECK_INT(usage_days(db, u1, NOON, USAGE_MAX_DAYS + 1, days), -1);
    CHECK_INT(usage_budget_set(db, NULL, 5, NOON), -1);
    db_close(db);
}

/* A charge made inside the caller's transaction commits or rolls back
 * with it (a generation's end and its charge are one commit). */
TEST(charge_goes_with_the_callers_transaction)
{
    parley_db *db = open_db("tx.db");
    REQUIRE(db);
    U(u1, "tx");
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(charge(db, u1, 4, 6, NOON), 0);
    CHECK_INT(db_rollback(db), 0);
    CHECK_INT(events_of(db, u1), 0);
    struct usage_day d;
    REQUIRE(usage_today(db, u1, NOON, &d) == 0);
    CHECK_INT(d.generations, 0);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(charge(db, u1, 4, 6, NOON), 0);
    CHECK_INT(db_commit(db), 0);
    REQUIRE(usage_today(db, u1, NOON, &d) == 0);
    CHECK_INT(d.prompt_tokens, 4);
    CHECK_INT(d.completion_tokens, 6);
    db_close(db);
}

TEST(days_reset_and_dates)
{
    parley_db *db = open_db("days.db");
    REQUIRE(db);
    U(u1, "days");
    int64_t midnight = (NOON / DAY) * DAY;            /* 2026-12-07T00:00:00Z */
    CHECK_INT(charge(db, u1, 1, 2, midnight - 1), 0);       /* last ms of the 6th */
    CHECK_INT(charge(db, u1, 10, 20, midnight), 0);         /* first ms of the 7th */
    CHECK_INT(charge(db, u1, 100, 200, midnight - 2 * DAY), 0);   /* the 5th */
    CHECK_INT(charge(db, u1, 1000, 1, midnight - 10 * DAY), 0);   /* outside 7 days */
    struct usage_day days[7];
    REQUIRE(usage_days(db, u1, NOON, 7, days) == 7);
    CHECK_INT(days[0].day, midnight / DAY);
    CHECK_INT(days[0].prompt_tokens, 10);
    CHECK_INT(days[1].day, midnight / DAY - 1);
    CHECK_INT(days[1].completion_tokens, 2);
    CHECK_INT(days[2].prompt_tokens, 100);
    CHECK_INT(days[3].generations, 0);
    CHECK_INT(days[6].day, midnight / DAY - 6);
    int64_t sum = 0;
    for (int i = 0; i < 7; i++)
        sum += days[i].prompt_tokens;
    CHECK_INT(sum, 111);
    CHECK_INT(usage_reset_ms(NOON), midnight + DAY);
    CHECK_INT(usage_reset_ms(midnight), midnight + DAY);
    CHECK_INT(usage_reset_ms(midnight - 1), midnight);
    CHECK_INT(usage_day_of(-1), -1);
    char iso[32], date[16];
    usage_iso8601(usage_reset_ms(NOON), iso);
    CHECK_STR(iso, "2026-12-08T00:00:00Z");
    usage_date(midnight / DAY, date);
    CHECK_STR(date, "2026-12-07");
    db_close(db);
}

TEST(budget_precedence_and_message)
{
    parley_db *db = open_db("budget.db");
    REQUIRE(db);
    U(u1, "budget");
    struct usage_status st;
    /* nothing configured: unlimited */
    REQUIRE(usage_status(db, u1, 0, -1, NOON, &st) == 0);
    CHECK_INT(st.budget, 0);
    CHECK_INT(st.remaining, -1);
    CHECK_INT(st.source, USAGE_BUDGET_NONE);
    CHECK_INT(st.reset_ms, usage_reset_ms(NOON));
    CHECK_INT(charge(db, u1, 40, 60, NOON), 0);       /* 100 used */
    /* the default */
    REQUIRE(usage_status(db, u1, 150, -1, NOON, &st) == 0);
    CHECK_INT(st.used, 100);
    CHECK_INT(st.budget, 150);
    CHECK_INT(st.remaining, 50);
    CHECK_INT(st.exhausted, 0);
    CHECK_STR(usage_budget_source_name(st.source), "default");
    char msg[160];
    CHECK_INT(usage_budget_ok(db, u1, 150, -1, NOON, msg, sizeof msg), 1);
    CHECK_INT(usage_budget_ok(db, u1, 100, -1, NOON, msg, sizeof msg), 0);   /* used == budget */
    CHECK_STR(msg, "Daily token budget exhausted; it resets at 2026-12-08T00:00:00Z");
    /* the override beats the default, both ways */
    int64_t t = -5;
    CHECK_INT(usage_budget_get(db, u1, &t), 0);
    REQUIRE(usage_budget_set(db, u1, 1000, NOON) == 0);
    CHECK_INT(usage_budget_get(db, u1, &t), 1);
    CHECK_INT(t, 1000);
    CHECK_INT(usage_budget_ok(db, u1, 100, -1, NOON, msg, sizeof msg), 1);
    CHECK_STR(msg, "");
    REQUIRE(usage_budget_set(db, u1, 50, NOON) == 0);     /* replaced */
    REQUIRE(usage_status(db, u1, 1000000, -1, NOON, &st) == 0);
    CHECK_INT(st.budget, 50);
    CHECK_INT(st.remaining, 0);
    CHECK_INT(st.exhausted, 1);
    CHECK_STR(usage_budget_source_name(st.source), "override");
    /* override 0 = unlimited even with a default */
    REQUIRE(usage_budget_set(db, u1, 0, NOON) == 0);
    CHECK_INT(usage_budget_ok(db, u1, 10, -1, NOON, msg, sizeof msg), 1);
    /* the claim beats the override */
    REQUIRE(usage_budget_set(db, u1, 10, NOON) == 0);
    CHECK_INT(usage_budget_ok(db, u1, 0, 500, NOON, msg, sizeof msg), 1);
    CHECK_INT(usage_budget_ok(db, u1, 0, -1, NOON, msg, sizeof msg), 0);
    REQUIRE(usage_status(db, u1, 0, 99, NOON, &st) == 0);
    CHECK_INT(st.exhausted, 1);
    CHECK_STR(usage_budget_source_name(st.source), "claim");
    CHECK_INT(usage_budget_ok(db, u1, 10, 0, NOON, msg, sizeof msg), 1);   /* claim 0: unlimited */
    /* removing the override: the default again */
    REQUIRE(usage_budget_set(db, u1, -1, NOON) == 0);
    CHECK_INT(usage_budget_get(db, u1, &t), 0);
    CHECK_INT(usage_budget_ok(db, u1, 101, -1, NOON, msg, sizeof msg), 1);
    /* the next day starts from zero */
    CHECK_INT(usage_budget_ok(db, u1, 100, -1, usage_reset_ms(NOON), msg, sizeof msg), 1);
    CHECK_INT(usage_budget_ok(db, u1, 100, -1, usage_reset_ms(NOON) - 1, msg, sizeof msg), 0);
    db_close(db);
}

TEST(totals_sum_every_user)
{
    parley_db *db = open_db("totals.db");
    REQUIRE(db);
    int64_t p0 = -1, c0 = -1, p1 = -1, c1 = -1;
    REQUIRE(usage_totals(db, &p0, &c0) == 0);
    U(a, "tot-a");
    U(b, "tot-b");
    CHECK_INT(charge(db, a, 3, 4, NOON), 0);
    CHECK_INT(charge(db, b, 5, 6, NOON - 3 * DAY), 0);
    REQUIRE(usage_totals(db, &p1, &c1) == 0);
    CHECK_INT(p1 - p0, 8);
    CHECK_INT(c1 - c0, 10);
    db_close(db);
}

/* PROCS processes x EACH charges of (1, 2) for one user at once: the day's
 * sums are exact. */
TEST(processes_count_exactly)
{
    enum { PROCS = 4, EACH = 25 };
    char buf[512], err[512];
    const char *path = target("procs.db", buf, sizeof buf);
    parley_db *db = db_open(path, err, sizeof err);
    REQUIRE(db);
    db_close(db);
    U(user, "procs");
    int go[2];
    REQUIRE(pipe(go) == 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(go[1]);
            char c;
            parley_db *mine = db_open(path, err, sizeof err);
            if (read(go[0], &c, 1) < 0 || !mine)
                _exit(100);
            int ok = 0;
            for (int i = 0; i < EACH; i++)
                ok += charge(mine, user, 1, 2, NOON) == 0;
            db_close(mine);
            _exit(ok);
        }
        pids[p] = pid;
    }
    close(go[0]);
    close(go[1]);
    int total = 0;
    for (int p = 0; p < PROCS; p++) {
        int status;
        REQUIRE(waitpid(pids[p], &status, 0) == pids[p]);
        REQUIRE(WIFEXITED(status));
        total += WEXITSTATUS(status);
    }
    CHECK_INT(total, PROCS * EACH);
    db = db_open(path, err, sizeof err);
    REQUIRE(db);
    struct usage_day d;
    REQUIRE(usage_today(db, user, NOON, &d) == 0);
    CHECK_INT(d.prompt_tokens, PROCS * EACH);
    CHECK_INT(d.completion_tokens, 2 * PROCS * EACH);
    CHECK_INT(d.generations, PROCS * EACH);
    CHECK_INT(events_of(db, user), PROCS * EACH);
    db_close(db);
}

struct charger {
    pthread_barrier_t *start;
    const char *target, *user;
    int each, ok;
};

static void *charger_run(void *p)
{
    struct charger *a = p;
    char err[512];
    parley_db *db = db_open(a->target, err, sizeof err);
    pthread_barrier_wait(a->start);
    for (int i = 0; db && i < a->each; i++)
        a->ok += charge(db, a->user, 3, 5, NOON + i) == 0;
    if (!db)
        printf("#   db_open: %s\n", err);
    db_close(db);
    return NULL;
}

/* T connections (nodes, on PostgreSQL) charge one user at the same moment,
 * the first charge of the day included (two first inserts must become one
 * row): every token counted exactly once. */
TEST(connections_count_exactly)
{
    enum { T = 12, EACH = 15 };
    char buf[512];
    const char *path = target("threads.db", buf, sizeof buf);
    parley_db *db = open_db("threads.db");
    REQUIRE(db);
    U(user, "threads");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, T);
    pthread_t th[T];
    struct charger args[T];
    for (int t = 0; t < T; t++) {
        args[t] = (struct charger){ &start, path, user, EACH, 0 };
        REQUIRE(pthread_create(&th[t], NULL, charger_run, &args[t]) == 0);
    }
    int ok = 0;
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ok += args[t].ok;
    }
    pthread_barrier_destroy(&start);
    CHECK_INT(ok, T * EACH);
    struct usage_day d;
    REQUIRE(usage_today(db, user, NOON, &d) == 0);
    CHECK_INT(d.prompt_tokens, 3 * T * EACH);
    CHECK_INT(d.completion_tokens, 5 * T * EACH);
    CHECK_INT(d.generations, T * EACH);
    CHECK_INT(events_of(db, user), T * EACH);
    CHECK_INT(q_int(db, "SELECT count(*) FROM usage_daily WHERE user_id = ?1",
                    "SELECT count(*) FROM usage_daily WHERE user_id = $1", user), 1);
    db_close(db);
}


/* One generation through runner_run for user on channel, the body's
 * directives driving the simulated LLM. The outcome's ok. */
static int generate(struct parley_ctx *ctx, const char *user, const char *channel,
                    const char *conv, const char *body, struct gen_outcome *out)
{
    struct gen_request req;
    memset(&req, 0, sizeof req);
    req.channel = channel;
    req.prompt_key = body;
    req.llm.prompt = body;
    req.llm.temperature = -1;
    req.user = user;
    req.conversation_id = conv;
    struct job_claim cl;
    int owner = 0;
    if (runner_run(ctx, &req, &cl, &owner, out) != 0 || !owner)
        return -1;
    return out->ok;
}

/* usage_events' one row for channel: outcome, prompt, completion, message
 * id present (1/0); -1 fields when there is no row. */
struct ev_row { char outcome[16]; int64_t prompt, completion; int has_msg; int rows; char user[64]; };
static void event_row(parley_db *db, const char *channel, struct ev_row *r)
{
    memset(r, 0, sizeof *r);
    sqlite3_stmt *st = db_stmt(db, "SELECT outcome, prompt_tokens, completion_tokens, message_id IS NOT NULL, "
                                   "user_id, (SELECT count(*) FROM usage_events WHERE channel = ?1) "
                                   "FROM usage_events WHERE channel = ?1");
    if (!st)
        return;
    db_bind_text(st, 1, channel);
    if (sqlite3_step(st) == SQLITE_ROW) {
        str_copy(r->outcome, sizeof r->outcome, (const char *)sqlite3_column_text(st, 0));
        r->prompt = sqlite3_column_int64(st, 1);
        r->completion = sqlite3_column_int64(st, 2);
        r->has_msg = sqlite3_column_int(st, 3);
        str_copy(r->user, sizeof r->user, (const char *)sqlite3_column_text(st, 4));
        r->rows = sqlite3_column_int(st, 5);
    }
    sqlite3_reset(st);
}

TEST(runner_charges_a_done_generation)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct conversation conv;
    memset(&conv, 0, sizeof conv);
    str_copy(conv.owner, sizeof conv.owner, "alice");
    REQUIRE(store_conv_create(ctx.db, &conv) == 0);
    struct gen_outcome out;
    /* five words in the prompt, 25 answer tokens */
    CHECK_INT(generate(&ctx, "alice", "conv:u1", conv.id, "Printer jam floor three [[fake tokens=25 token_ms=1]]",
                       &out), 1);
    struct ev_row r;
    event_row(ctx.db, "conv:u1", &r);
    CHECK_INT(r.rows, 1);
    CHECK_STR(r.outcome, "done");
    CHECK_STR(r.user, "alice");
    CHECK_INT(r.completion, 25);
    CHECK_INT(r.prompt, 4);                  /* the fake counts the prompt's words */
    CHECK_INT(r.has_msg, 1);                 /* the conversation's assistant message */
    printf("#   prompt tokens charged: %lld\n", (long long)r.prompt);
    struct usage_day d;
    REQUIRE(usage_today(ctx.db, "alice", now_ms(), &d) == 0);
    CHECK_INT(d.completion_tokens, 25);
    CHECK_INT(d.prompt_tokens, r.prompt);
    CHECK_INT(d.generations, 1);
    gen_outcome_free(&out);
    /* a ticket-like generation without a conversation: no message id */
    CHECK_INT(generate(&ctx, "alice", "ticket:u2", NULL, "Second question here [[fake tokens=7 token_ms=1]]",
                      &out), 1);
    event_row(ctx.db, "ticket:u2", &r);
    CHECK_INT(r.completion, 7);
    CHECK_INT(r.has_msg, 0);
    gen_outcome_free(&out);
    REQUIRE(usage_today(ctx.db, "alice", now_ms(), &d) == 0);
    CHECK_INT(d.completion_tokens, 32);
    CHECK_INT(d.generations, 2);
    db_close(ctx.db);
    bell_close(ctx.bell);
}

TEST(runner_charges_errors_after_tokens_only)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct gen_outcome out;
    CHECK_INT(generate(&ctx, "bob", "ticket:e1", NULL, "Broken [[fake tokens=20 error_after=4 token_ms=1]]", &out), 0);
    gen_outcome_free(&out);
    struct ev_row r;
    event_row(ctx.db, "ticket:e1", &r);
    CHECK_INT(r.rows, 1);
    CHECK_STR(r.outcome, "error");
    CHECK_STR(r.user, "bob");
    CHECK(r.completion >= 1 && r.completion <= 4);
    /* refused before any token: nothing charged */
    CHECK_INT(generate(&ctx, "bob", "ticket:e2", NULL, "Refused [[fake status=500]]", &out), 0);
    gen_outcome_free(&out);
    event_row(ctx.db, "ticket:e2", &r);
    CHECK_INT(r.rows, 0);
    db_close(ctx.db);
    bell_close(ctx.bell);
}

static void run_cases(void)
{
    RUN(charge_rows_and_today);
    RUN(zero_and_bad_charges_write_nothing);
    RUN(charge_goes_with_the_callers_transaction);
    RUN(days_reset_and_dates);
    RUN(budget_precedence_and_message);
    RUN(totals_sum_every_user);
    RUN(processes_count_exactly);
    RUN(connections_count_exactly);
}

int main(void)
{
    if (test_setup("usage-runner") < 0)
        return 1;
    printf("# backend: SQLite\n");
    run_cases();
    RUN(runner_charges_a_done_generation);
    RUN(runner_charges_errors_after_tokens_only);
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        pg_uri = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, users %s*)\n", pfx);
        run_cases();
    }
    config_cleanup(&cfg);
    return th_done();
}
