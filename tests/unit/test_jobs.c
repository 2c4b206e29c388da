/* test_jobs.c — single flight, leases and recovery, with several processes
 * on one database: no SQLITE_BUSY reaches a caller, no seq is duplicated or
 * skipped, exactly one owner per job, and a SIGKILLed owner is recovered.
 *
 * The backend-neutral cases (run_cases) run on SQLite and again on
 * PostgreSQL when PARLEY_TEST_PG holds a URI (tests/integration/
 * t0720-pg-jobs.sh), with channel names of
 * their own so a database used before does not disturb them; among them,
 * CLAIM_THREADS threads with a connection each claiming one (channel, key)
 * at once get exactly one owner. The multi-process case reads SQLite
 * tables directly and runs on SQLite only. */
#include "th.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "bell.h"
#include "evlog.h"
#include "jobs.h"
#include "runner.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROCS 4
#define CHANNELS 10
#define TOKENS 30
#define HOT_EACH 400

static char dbpath[512], bellpath[512];
static const char *target;       /* what open_db opens: dbpath or the PostgreSQL URI */
static char pfx[64];             /* prefix of channel names: "" on SQLite */

/* name with this run's prefix, in buf */
#define CH(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

struct shared {                /* MAP_SHARED between parent and children */
    int owners;
    int errors;
    int follow_ok;
    int follow_bad;
    int claimed;               /* barrier: children done claiming */
};
static struct shared *sh;

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static parley_db *open_db(void)
{
    char err[512];
    parley_db *db = db_open(target, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    return db;
}

/* Ends claim's job from this thread (adopting its lease first when another
 * thread holds it), so it does not linger as running with a live lease. */
static int finish_job(parley_db *db, struct job_claim *claim)
{
    if (jobs_adopt(db, claim, 5000) < 0 || db_begin(db) < 0)
        return -1;
    if (jobs_finish_tx(db, claim->job_id, NULL) < 0) {
        db_rollback(db);
        return -1;
    }
    return db_commit(db);
}

TEST(claim_in_one_process)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(t1, "t:1");
    struct job_claim a, b, c;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, t1, "k", 5000, &a, err, sizeof err) == 0);
    CHECK_INT(a.owner, 1);
    REQUIRE(jobs_claim(db, NULL, t1, "k", 5000, &b, err, sizeof err) == 0);
    CHECK_INT(b.owner, 0);                 /* second viewer attaches */
    CHECK_INT(b.job_id, a.job_id);
    REQUIRE(jobs_claim(db, NULL, t1, "other", 5000, &c, err, sizeof err) == 0);
    CHECK_INT(c.owner, 1);                 /* another prompt is another job */
    CHECK(c.job_id != a.job_id);
    CHECK_INT(jobs_renew(db, a.job_id, 5000), 0);
    int64_t run_id = 0, run_first = -1;
    CHECK_INT(jobs_running_on(db, t1, &run_id, &run_first), 0);
    CHECK_INT(run_id, c.job_id);            /* the newest running job of the channel */
    CHECK_INT(run_first, 0);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_finish_tx(db, a.job_id, NULL), 0);
    CHECK_INT(jobs_finish_tx(db, a.job_id, NULL), -1);   /* not running any more */
    REQUIRE(db_commit(db) == 0);
    CHECK_INT(jobs_renew(db, a.job_id, 5000), -1);
    struct job_info ji;
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "done");
    CHECK_INT(jobs_get(db, INT64_MAX - 7, &ji), 1);
    /* a running job is not finished twice, nor by another owner */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_finish_tx(db, c.job_id, "upstream broke"), 0);
    REQUIRE(db_commit(db) == 0);
    REQUIRE(jobs_get(db, c.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    CHECK_STR(ji.error, "upstream broke");
    CHECK_INT(ji.lease_expires, 0);
    CHECK_INT(jobs_running_on(db, t1, &run_id, &run_first), 1);   /* none running */
    /* after it finished, the same prompt starts a new job */
    REQUIRE(jobs_claim(db, NULL, t1, "k", 5000, &b, err, sizeof err) == 0);
    CHECK_INT(b.owner, 1);
    CHECK(b.job_id != a.job_id);
    CHECK_INT(finish_job(db, &b), 0);
    db_close(db);
}

struct follow { char *text; int tokens; };
static int on_follow(void *ud, const struct evlog_event *ev)
{
    struct follow *ff = ud;
    if (!strcmp(ev->type, "token")) {
        strcat(ff->text, ev->data);
        ff->tokens++;
    }
    return 0;
}

struct seen { int tokens; int error; char msg[256]; };
static int on_seen(void *ud, const struct evlog_event *ev)
{
    struct seen *ss = ud;
    if (!strcmp(ev->type, "token"))
        ss->tokens++;
    if (!strcmp(ev->type, "error")) {
        ss->error = 1;
        str_copy(ss->msg, sizeof ss->msg, ev->data);
    }
    return 0;
}

/* Child: for each channel claim; the owner streams TOKENS events and "done",
 * the others follow and check they saw exactly the owner's text. */
static int child_single_flight(int idx)
{
    char err[256];
    parley_db *db = open_db();
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    if (!db || !bell)
        return 1;
    struct parley_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.lease_ms = 5000;
    struct parley_ctx ctx = { &cfg, db, bell };
    /* phase 1: every process claims every channel while all jobs run */
    struct job_claim claims[CHANNELS];
    int got[CHANNELS];
    for (int c = 0; c < CHANNELS; c++) {
        char chan[32];
        snprintf(chan, sizeof chan, "mp:%d", (c + idx) % CHANNELS);
        got[c] = jobs_claim(db, bell, chan, "prompt", 5000, &claims[c], err, sizeof err) == 0;
        if (!got[c])
            __atomic_add_fetch(&sh->errors, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_add_fetch(&sh->claimed, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&sh->claimed, __ATOMIC_SEQ_CST) < PROCS)
        sleep_ms(1);
    /* phase 2: owners stream, the others follow */
    for (int c = 0; c < CHANNELS; c++) {
        char chan[32];
        snprintf(chan, sizeof chan, "mp:%d", (c + idx) % CHANNELS);
        struct job_claim cl = claims[c];
        if (!got[c])
            continue;
        if (cl.owner) {
            __atomic_add_fetch(&sh->owners, 1, __ATOMIC_SEQ_CST);
            for (int t = 0; t < TOKENS; t++) {
                char tok[16];
                int n = snprintf(tok, sizeof tok, "%d.", t);
                if (evlog_append(db, bell, chan, cl.job_id, "token", tok, (size_t)n) < 0)
                    __atomic_add_fetch(&sh->errors, 1, __ATOMIC_SEQ_CST);
            }
            if (db_begin(db) < 0 ||
                evlog_append_tx(db, chan, cl.job_id, "done", "{}", 2) < 0 ||
                jobs_finish_tx(db, cl.job_id, NULL) < 0 || db_commit(db) < 0) {
                db_rollback(db);
                __atomic_add_fetch(&sh->errors, 1, __ATOMIC_SEQ_CST);
            }
            bell_ring(bell, chan);
        } else {
            char text[512] = "", want[512] = "";
            for (int t = 0; t < TOKENS; t++) {
                char tok[16];
                snprintf(tok, sizeof tok, "%d.", t);
                strcat(want, tok);
            }
            struct follow f = { text, 0 };
            int64_t cursor = cl.first_seq;
            int r = runner_follow(&ctx, chan, cl.job_id, &cursor, 10000, NULL, on_follow, &f);
            if (r == 0 && !strcmp(text, want))
                __atomic_add_fetch(&sh->follow_ok, 1, __ATOMIC_SEQ_CST);
            else
                __atomic_add_fetch(&sh->follow_bad, 1, __ATOMIC_SEQ_CST);
        }
    }
    /* then everyone hammers one hot channel */
    for (int i = 0; i < HOT_EACH; i++) {
        char tok[32];
        int n = snprintf(tok, sizeof tok, "%d/%d", idx, i);
        if (evlog_append(db, bell, "hot", 0, "token", tok, (size_t)n) < 0)
            __atomic_add_fetch(&sh->errors, 1, __ATOMIC_SEQ_CST);
    }
    db_close(db);
    bell_close(bell);
    return 0;
}

TEST(multi_process_single_flight)
{
    memset(sh, 0, sizeof *sh);
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(child_single_flight(i));
    }
    for (int i = 0; i < PROCS; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_INT(sh->errors, 0);
    CHECK_INT(sh->owners, CHANNELS);
    CHECK_INT(sh->follow_bad, 0);
    CHECK_INT(sh->follow_ok + sh->owners, PROCS * CHANNELS);
    parley_db *db = open_db();
    REQUIRE(db);
    /* every channel: one job, seqs dense 1..TOKENS+1 */
    sqlite3_stmt *st = db_stmt(db, "SELECT channel, count(*), min(seq), max(seq), "
                                   "count(DISTINCT job_id) FROM events WHERE channel LIKE 'mp:%' "
                                   "GROUP BY channel");
    REQUIRE(st);
    int chans = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        chans++;
        CHECK_INT(sqlite3_column_int(st, 1), TOKENS + 1);
        CHECK_INT(sqlite3_column_int(st, 2), 1);
        CHECK_INT(sqlite3_column_int(st, 3), TOKENS + 1);
        CHECK_INT(sqlite3_column_int(st, 4), 1);
    }
    sqlite3_reset(st);
    CHECK_INT(chans, CHANNELS);
    st = db_stmt(db, "SELECT count(*), count(DISTINCT channel) FROM jobs WHERE channel LIKE 'mp:%'");
    REQUIRE(st && sqlite3_step(st) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(st, 0), CHANNELS);
    CHECK_INT(sqlite3_column_int(st, 1), CHANNELS);
    sqlite3_reset(st);
    /* the hot channel: PROCS*HOT_EACH rows, seq exactly 1..N, every token once */
    st = db_stmt(db, "SELECT count(*), min(seq), max(seq), count(DISTINCT data) FROM events "
                     "WHERE channel = 'hot'");
    REQUIRE(st && sqlite3_step(st) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(st, 0), PROCS * HOT_EACH);
    CHECK_INT(sqlite3_column_int(st, 1), 1);
    CHECK_INT(sqlite3_column_int(st, 2), PROCS * HOT_EACH);
    CHECK_INT(sqlite3_column_int(st, 3), PROCS * HOT_EACH);
    sqlite3_reset(st);
    db_close(db);
}

/* The owner is SIGKILLed mid-stream: a viewer in another process gets the
 * "interrupted" error once the lease runs out, nothing is cached, and the
 * next claim runs the job again. */
TEST(killed_owner_is_recovered)
{
    CH(kill1, "kill:1");
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        char err[256];
        parley_db *db = open_db();
        parley_bell *bell = bell_open(bellpath, err, sizeof err);
        struct job_claim cl;
        if (!db || !bell || jobs_claim(db, bell, kill1, "p", 400, &cl, err, sizeof err) < 0 ||
            !cl.owner)
            _exit(1);
        if (write(pfd[1], &cl, sizeof cl) != (ssize_t)sizeof cl)
            _exit(1);
        for (int i = 0;; i++) {         /* streams until killed */
            evlog_append(db, bell, kill1, cl.job_id, "token", "x", 1);
            jobs_renew(db, cl.job_id, 400);
            sleep_ms(20);
        }
    }
    close(pfd[1]);
    struct job_claim cl;
    REQUIRE(read(pfd[0], &cl, sizeof cl) == (ssize_t)sizeof cl);
    close(pfd[0]);
    sleep_ms(150);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);

    char err[256];
    parley_db *db = open_db();
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(db && bell);
    struct parley_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.lease_ms = 400;
    struct parley_ctx ctx = { &cfg, db, bell };
    struct seen s = { 0, 0, "" };
    int64_t cursor = cl.first_seq;
    int64_t t0 = mono_ms();
    int r = runner_follow(&ctx, kill1, cl.job_id, &cursor, 5000, NULL, on_seen, &s);
    CHECK_INT(r, 0);
    CHECK(s.tokens >= 2);
    CHECK_INT(s.error, 1);
    CHECK(strstr(s.msg, "interrupted") != NULL);
    CHECK(mono_ms() - t0 < 3000);
    struct job_info ji;
    REQUIRE(jobs_get(db, cl.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    if (!db_pg_conn(db)) {              /* answers: SQLite only so far (store.h) */
        sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM answers");
        REQUIRE(st && sqlite3_step(st) == SQLITE_ROW);
        CHECK_INT(sqlite3_column_int(st, 0), 0);
        sqlite3_reset(st);
    }
    /* recovery is done once: a second sweep does not fail it again (other
     * runs' expired jobs on a shared database may be swept, so count this
     * job's error events) */
    CHECK(jobs_recover(db, bell, now_ms()) >= 0);
    struct evlog_event *ev;
    int n = evlog_read(db, kill1, cl.first_seq, 1000, &ev);
    int errors = 0;
    for (int i = 0; i < n; i++)
        errors += !strcmp(ev[i].type, "error");
    evlog_free(ev, n);
    CHECK_INT(errors, 1);
    struct job_claim again;
    REQUIRE(jobs_claim(db, bell, kill1, "p", 400, &again, err, sizeof err) == 0);
    CHECK_INT(again.owner, 1);
    CHECK(again.job_id != cl.job_id);
    CHECK(again.first_seq > cl.first_seq);
    db_close(db);
    bell_close(bell);
}

TEST(expired_lease_taken_over_by_claim)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(e1, "exp:1");
    struct job_claim a, b;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, e1, "k", 1, &a, err, sizeof err) == 0);
    sleep_ms(20);
    REQUIRE(jobs_claim(db, NULL, e1, "k", 5000, &b, err, sizeof err) == 0);
    CHECK_INT(b.owner, 1);
    CHECK(b.job_id != a.job_id);
    struct job_info ji;
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    CHECK(strstr(ji.error, "interrupted") != NULL);
    /* the old owner can no longer finish or renew */
    CHECK_INT(jobs_renew(db, a.job_id, 5000), -1);
    struct evlog_event *ev;
    int n = evlog_read(db, e1, 0, 10, &ev);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(ev[0].type, "error");
    evlog_free(ev, n);
    CHECK_INT(finish_job(db, &b), 0);
    db_close(db);
}

/* A claim made inside the caller's transaction (proto_send.c: the user
 * message and its job in one commit) that fails an expired job rings the
 * channel when the OUTER transaction ends, not at its own nested commit:
 * a viewer woken before the commit could not see the error event yet and
 * would get no other ring. Fails when jobs_claim_as rings at once. */
TEST(claim_inside_a_transaction_rings_at_its_end)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char err[256];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    CH(c1, "nested:1");
    CH(c2, "nested:2");
    struct job_claim a, b;
    REQUIRE(jobs_claim(db, NULL, c1, "k", 1, &a, err, sizeof err) == 0);
    sleep_ms(20);
    uint32_t before = bell_peek(bell, c1);
    REQUIRE(db_begin(db) == 0);
    REQUIRE(jobs_claim(db, bell, c1, "k", 5000, &b, err, sizeof err) == 0);
    CHECK_INT(b.owner, 1);
    CHECK(bell_peek(bell, c1) == before);          /* not yet: nothing is committed */
    REQUIRE(db_commit(db) == 0);
    CHECK(bell_peek(bell, c1) != before);          /* the outer commit rang it */
    struct job_info ji;
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    CHECK_INT(finish_job(db, &b), 0);

    /* rolled back: the ring still comes (a ring for nothing costs a read),
     * and neither the failure nor the new job happened */
    struct job_claim x, y;
    REQUIRE(jobs_claim(db, NULL, c2, "k", 1, &x, err, sizeof err) == 0);
    sleep_ms(20);
    before = bell_peek(bell, c2);
    REQUIRE(db_begin(db) == 0);
    REQUIRE(jobs_claim(db, bell, c2, "k", 5000, &y, err, sizeof err) == 0);
    CHECK(bell_peek(bell, c2) == before);
    REQUIRE(db_rollback(db) == 0);
    CHECK(bell_peek(bell, c2) != before);
    REQUIRE(jobs_get(db, x.job_id, &ji) == 0);
    CHECK_STR(ji.state, "running");
    CHECK(jobs_get(db, y.job_id, &ji) != 0);       /* never inserted */

    /* outside a transaction the ring is made at once, as before */
    sleep_ms(20);
    struct job_claim z;
    before = bell_peek(bell, c2);
    REQUIRE(jobs_claim(db, bell, c2, "k", 5000, &z, err, sizeof err) == 0);
    CHECK(bell_peek(bell, c2) != before);
    CHECK_INT(finish_job(db, &z), 0);
    bell_close(bell);
    db_close(db);
}

/* ---- claimers on several connections at once (both backends) ---- */

#define CLAIM_THREADS 8
#define CLAIM_ROUNDS 5
struct claim_arg {
    const char *channel, *key;
    int lease_ms;
    pthread_barrier_t *start;
    struct job_claim claim;
    int ok;
    char err[256];
};

static void *claimer(void *p)
{
    struct claim_arg *a = p;
    parley_db *db = open_db();
    pthread_barrier_wait(a->start);          /* every connection open: claim at once */
    if (db)
        a->ok = jobs_claim(db, NULL, a->channel, a->key, a->lease_ms, &a->claim,
                           a->err, sizeof a->err) == 0;
    db_close(db);
    return NULL;
}

/* CLAIM_THREADS claimers of one (channel, key) at once; returns how many
 * became owners, *ok how many claims succeeded, *same how many got the
 * owner's job id. */
static int claim_at_once(const char *channel, const char *key, int *ok, int *same,
                         struct job_claim *owner)
{
    struct claim_arg args[CLAIM_THREADS];
    pthread_t th[CLAIM_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CLAIM_THREADS);
    for (int t = 0; t < CLAIM_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].channel = channel;
        args[t].key = key;
        args[t].lease_ms = 5000;
        args[t].start = &start;
        if (pthread_create(&th[t], NULL, claimer, &args[t]) != 0)
            abort();
    }
    for (int t = 0; t < CLAIM_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    int owners = 0;
    *ok = *same = 0;
    memset(owner, 0, sizeof *owner);
    for (int t = 0; t < CLAIM_THREADS; t++) {
        if (!args[t].ok) {
            printf("# claim failed: %s\n", args[t].err);
            continue;
        }
        (*ok)++;
        if (args[t].claim.owner) {
            owners++;
            *owner = args[t].claim;
        }
    }
    for (int t = 0; t < CLAIM_THREADS; t++)
        if (args[t].ok && args[t].claim.job_id == owner->job_id)
            (*same)++;
    return owners;
}

/* CLAIM_THREADS threads, a connection each, claim one (channel, key) at
 * the same moment, CLAIM_ROUNDS times: exactly one owner, every other
 * claimer attached to the owner's job, one running job in the table. */
TEST(concurrent_claims_one_owner)
{
    parley_db *db = open_db();
    REQUIRE(db);
    for (int round = 0; round < CLAIM_ROUNDS; round++) {
        char chan[160];
        snprintf(chan, sizeof chan, "%sconc:%d", pfx, round);
        int ok, same;
        struct job_claim own;
        int owners = claim_at_once(chan, "k", &ok, &same, &own);
        int64_t job = own.job_id;
        CHECK_INT(ok, CLAIM_THREADS);
        CHECK_INT(owners, 1);
        CHECK_INT(same, CLAIM_THREADS);
        int64_t run_id = 0, first = 0;
        CHECK_INT(jobs_running_on(db, chan, &run_id, &first), 0);
        CHECK_INT(run_id, job);
        if (owners >= 1)
            CHECK_INT(finish_job(db, &own), 0);
    }
    db_close(db);
}

/* A running job whose lease expired, claimed by CLAIM_THREADS at once: it
 * is failed once (one "error" event), exactly one claimer owns the new job
 * and the others attach to it. */
TEST(concurrent_claims_of_expired_job)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(chan, "conc:expired");
    struct job_claim old;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, chan, "k", 1, &old, err, sizeof err) == 0);
    REQUIRE(old.owner == 1);
    sleep_ms(20);
    int ok, same;
    struct job_claim own;
    int owners = claim_at_once(chan, "k", &ok, &same, &own);
    int64_t job = own.job_id;
    CHECK_INT(ok, CLAIM_THREADS);
    CHECK_INT(owners, 1);
    CHECK_INT(same, CLAIM_THREADS);
    CHECK(job != old.job_id);
    struct job_info ji;
    REQUIRE(jobs_get(db, old.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    struct evlog_event *ev;
    int n = evlog_read(db, chan, 0, 100, &ev);
    int errors = 0;
    for (int i = 0; i < n; i++)
        errors += !strcmp(ev[i].type, "error") && ev[i].job_id == old.job_id;
    CHECK_INT(n, 1);
    CHECK_INT(errors, 1);
    evlog_free(ev, n);
    if (owners >= 1)
        CHECK_INT(finish_job(db, &own), 0);
    db_close(db);
}

struct recover_arg { int64_t now; pthread_barrier_t *start; int failed; };
static void *recoverer(void *p)
{
    struct recover_arg *a = p;
    parley_db *db = open_db();
    pthread_barrier_wait(a->start);
    a->failed = db ? jobs_recover(db, NULL, a->now) : -1;
    db_close(db);
    return NULL;
}

/* Leases: a renewed lease is not recovered; an expired one is failed by
 * exactly one of several recoveries running at once (the others see it no
 * longer running), with one error event; its owner can then neither renew
 * nor finish it. jobs_recover_if_expired does nothing for a live job. */
TEST(lease_renewal_and_recovery_race)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(chan, "lease:1");
    struct job_claim a;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, chan, "k", 1, &a, err, sizeof err) == 0);
    sleep_ms(20);
    /* expired but not yet failed: its owner may still renew it */
    CHECK_INT(jobs_renew(db, a.job_id, 5000), 0);
    CHECK_INT(jobs_recover_if_expired(db, NULL, a.job_id, now_ms()), 0);
    CHECK_INT(jobs_recover(db, NULL, now_ms()), 0);
    struct job_info ji;
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "running");
    /* let it run out, then recover from several connections at once */
    CHECK_INT(jobs_renew(db, a.job_id, 1), 0);
    sleep_ms(20);
    enum { R = 4 };
    struct recover_arg args[R];
    pthread_t th[R];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, R);
    int64_t now = now_ms();
    for (int t = 0; t < R; t++) {
        args[t].now = now;
        args[t].start = &start;
        args[t].failed = -2;
        REQUIRE(pthread_create(&th[t], NULL, recoverer, &args[t]) == 0);
    }
    for (int t = 0; t < R; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    /* other expired jobs (another run's, on a shared database) may be failed
     * too; this job is failed by exactly one, once */
    int errs = 0;
    for (int t = 0; t < R; t++)
        errs += args[t].failed < 0;
    CHECK_INT(errs, 0);
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    CHECK(strstr(ji.error, "interrupted") != NULL);
    struct evlog_event *ev;
    int n = evlog_read(db, chan, 0, 100, &ev);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(ev[0].type, "error");
        CHECK_INT(ev[0].job_id, a.job_id);
    }
    evlog_free(ev, n);
    CHECK_INT(jobs_renew(db, a.job_id, 5000), -1);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_finish_tx(db, a.job_id, NULL), -1);
    REQUIRE(db_commit(db) == 0);
    CHECK_INT(jobs_recover_if_expired(db, NULL, a.job_id, now_ms()), 0);   /* over */
    db_close(db);
}

struct sweep_arg { int64_t now; int failed; int done; };
static void *sweeper(void *p)
{
    struct sweep_arg *a = p;
    parley_db *db = open_db();
    a->failed = db ? jobs_recover(db, NULL, a->now) : -1;
    db_close(db);
    __atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A recovery that read a job as expired while its owner was renewing the
 * lease (the renewal's transaction still open) must not fail it once the
 * renewal committed: the failing UPDATE re-checks lease_expires < now. */
TEST(renewal_racing_recovery_keeps_job)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(chan, "lease:race");
    struct job_claim a;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, chan, "k", 1, &a, err, sizeof err) == 0);
    sleep_ms(20);
    int64_t now = now_ms();              /* the job's lease expired before this */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_renew(db, a.job_id, 60000), 0);   /* not committed yet */
    struct sweep_arg arg = { now, -2, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, sweeper, &arg) == 0);
    sleep_ms(300);                       /* the sweep has read the old lease and waits */
    CHECK_INT(__atomic_load_n(&arg.done, __ATOMIC_SEQ_CST), 0);
    CHECK_INT(db_commit(db), 0);
    pthread_join(th, NULL);
    CHECK(arg.failed >= 0);
    struct job_info ji;
    REQUIRE(jobs_get(db, a.job_id, &ji) == 0);
    CHECK_STR(ji.state, "running");
    CHECK_INT(jobs_renew(db, a.job_id, 5000), 0);
    struct evlog_event *ev;
    int n = evlog_read(db, chan, 0, 10, &ev);
    CHECK_INT(n, 0);                     /* no error event */
    evlog_free(ev, n);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_finish_tx(db, a.job_id, NULL), 0);
    REQUIRE(db_commit(db) == 0);
    db_close(db);
}

struct adopt_arg { parley_db *db; struct job_claim *claim; int renew_before, adopt, renew_after; };
static void *adopter(void *p)
{
    struct adopt_arg *a = p;
    a->renew_before = jobs_renew(a->db, a->claim->job_id, 5000);   /* not this thread's lease */
    a->adopt = jobs_adopt(a->db, a->claim, 5000);
    a->renew_after = jobs_renew(a->db, a->claim->job_id, 5000);
    return NULL;
}

/* jobs_adopt hands the lease to another thread: before it, that thread
 * cannot renew; after it, it can and the claiming thread cannot. */
TEST(adopt_moves_the_lease)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(chan, "adopt:1");
    struct job_claim a;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, chan, "k", 5000, &a, err, sizeof err) == 0);
    char before[64];
    str_copy(before, sizeof before, a.lease_owner);
    struct adopt_arg arg = { db, &a, 0, 0, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, adopter, &arg) == 0);
    pthread_join(th, NULL);
    CHECK_INT(arg.renew_before, -1);
    CHECK_INT(arg.adopt, 0);
    CHECK_INT(arg.renew_after, 0);
    CHECK(strcmp(a.lease_owner, before) != 0);
    CHECK_INT(jobs_renew(db, a.job_id, 5000), -1);      /* no longer ours */
    struct job_claim stale = a;
    str_copy(stale.lease_owner, sizeof stale.lease_owner, before);
    CHECK_INT(jobs_adopt(db, &stale, 5000), -1);        /* the old owner cannot take it back */
    CHECK_INT(finish_job(db, &a), 0);
    db_close(db);
}

static void run_cases(void)
{
    RUN(claim_in_one_process);
    RUN(expired_lease_taken_over_by_claim);
    RUN(claim_inside_a_transaction_rings_at_its_end);
    RUN(concurrent_claims_one_owner);
    RUN(concurrent_claims_of_expired_job);
    RUN(lease_renewal_and_recovery_race);
    RUN(renewal_racing_recovery_keeps_job);
    RUN(adopt_moves_the_lease);
    RUN(killed_owner_is_recovered);
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/jobs.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/jobs.db-bell", th_tmpdir());
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        return 2;
    target = dbpath;
    printf("# backend: SQLite\n");
    run_cases();
    RUN(multi_process_single_flight);
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        /* names of this run only: the database may have been used before */
        target = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, channels %s*)\n", pfx);
        run_cases();
    }
    return th_done();
}
