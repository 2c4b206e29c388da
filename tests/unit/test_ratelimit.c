/* test_ratelimit.c — the sliding window: limit, slide, retry time, users
 * kept apart, limit 0, pruning, several processes and several connections
 * sharing one limit.
 *
 * Every case runs on SQLite (a database file per case) and again on
 * PostgreSQL when PARLEY_TEST_PG holds a URI (tests/integration/
 * t0740-pg-sessions.sh), with user ids of
 * this run (prefix pfx) so a database used before does not disturb them.
 * On PostgreSQL each connection stands for a node: threads_share_one_limit
 * has 2L connections hitting one user's limit L at the same moment. */
#include "th.h"
#include "ratelimit.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#define MINUTE 60000
static const int64_t T0 = 1700000000000;   /* an arbitrary wall-clock ms */

static const char *pg_uri;      /* NULL: SQLite run */
static char pfx[64];            /* prefix of user ids: "" on SQLite */

/* user id name with this run's prefix, in buf */
#define U(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

/* SQLite: the file name in this program's directory; PostgreSQL: the URI */
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

/* Rows of user in rate_hits (every user's when user is NULL), on either
 * backend. -1 on error. */
static int64_t count_rows(parley_db *db, const char *user)
{
    if (db_pg_conn(db)) {
        const char *p[1] = { user };
        PGresult *r = PQexecParams(db_pg_conn(db),
                                   "SELECT count(*) FROM rate_hits WHERE user_id = $1 OR $1 IS NULL",
                                   1, NULL, p, NULL, NULL, 0);
        int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
        PQclear(r);
        return n;
    }
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM rate_hits WHERE user_id = ?1 OR ?1 IS NULL");
    if (!st)
        return -1;
    db_bind_text(st, 1, user);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

/* Is a transaction open on db (either backend)? */
static int in_transaction(parley_db *db)
{
    if (db_pg_conn(db))
        return PQtransactionStatus(db_pg_conn(db)) != PQTRANS_IDLE;
    return !sqlite3_get_autocommit(db_handle(db));
}

TEST(thirty_then_limited)
{
    parley_db *db = open_db("thirty.db");
    REQUIRE(db != NULL);
    U(u_alice, "alice");
    int64_t retry = -1;
    for (int i = 0; i < 30; i++)
        CHECK_INT(ratelimit_hit(db, u_alice, 30, MINUTE, T0 + i * 1000, &retry), 1);
    CHECK_INT(retry, 0);
    /* the 31st, 30 s after the first: limited until the first leaves */
    CHECK_INT(ratelimit_hit(db, u_alice, 30, MINUTE, T0 + 30000, &retry), 0);
    CHECK_INT(retry, 30000);
    CHECK_INT(count_rows(db, u_alice), 30);             /* nothing recorded */
    /* still limited 1 ms before the first hit leaves */
    CHECK_INT(ratelimit_hit(db, u_alice, 30, MINUTE, T0 + MINUTE - 1, &retry), 0);
    CHECK_INT(retry, 1);
    CHECK_INT(ratelimit_hit(db, u_alice, 30, MINUTE, T0 + MINUTE - 1, NULL), 0);
    db_close(db);
}

TEST(window_slides)
{
    parley_db *db = open_db("slide.db");
    REQUIRE(db != NULL);
    U(u_bob, "bob");
    int64_t retry;
    for (int i = 0; i < 30; i++)
        REQUIRE(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + i * 1000, NULL) == 1);
    /* at T0 + 60 s the hit at T0 is outside (T0, T0 + 60 s]: one more fits */
    CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + MINUTE, &retry), 1);
    /* and only one: the next leaves at T0 + 1 s + 60 s */
    CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + MINUTE, &retry), 0);
    CHECK_INT(retry, 1000);
    CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + MINUTE + 500, &retry), 0);
    CHECK_INT(retry, 500);
    CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + MINUTE + 1000, &retry), 1);
    /* the user's hits older than the window were deleted on the way */
    CHECK_INT(count_rows(db, u_bob), 30);
    /* after a quiet two minutes the whole budget is back */
    for (int i = 0; i < 30; i++)
        CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + 3 * MINUTE + i, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u_bob, 30, MINUTE, T0 + 3 * MINUTE + 30, &retry), 0);
    CHECK_INT(retry, MINUTE - 30);
    CHECK_INT(count_rows(db, u_bob), 30);
    db_close(db);
}

TEST(users_are_separate)
{
    parley_db *db = open_db("users.db");
    REQUIRE(db != NULL);
    U(u_carol, "carol");
    U(u_dave, "dave");
    U(u_Carol, "Carol");
    U(u_sql, "x' OR '1'='1");
    if (db_pg_conn(db)) {
        /* "" is every run's open-mode user: start it afresh */
        PGresult *r = PQexec(db_pg_conn(db), "DELETE FROM rate_hits WHERE user_id = ''");
        CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
        PQclear(r);
    }
    for (int i = 0; i < 5; i++)
        CHECK_INT(ratelimit_hit(db, u_carol, 5, MINUTE, T0 + i, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u_carol, 5, MINUTE, T0 + 10, NULL), 0);
    CHECK_INT(ratelimit_hit(db, u_dave, 5, MINUTE, T0 + 10, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u_Carol, 5, MINUTE, T0 + 10, NULL), 1);   /* ids are exact */
    CHECK_INT(ratelimit_hit(db, "", 5, MINUTE, T0 + 10, NULL), 1);        /* open-mode user */
    CHECK_INT(ratelimit_hit(db, NULL, 5, MINUTE, T0 + 11, NULL), 1);      /* same as "" */
    CHECK_INT(count_rows(db, ""), 2);
    /* an id that looks like SQL is just an id */
    CHECK_INT(ratelimit_hit(db, u_sql, 5, MINUTE, T0 + 12, NULL), 1);
    CHECK_INT(count_rows(db, u_sql), 1);
    CHECK_INT(count_rows(db, u_carol), 5);
    db_close(db);
}

TEST(later_stamped_hits_count)
{
    /* Another process stamped its hit 100 ms "after" ours (clocks read at
     * different moments): it is still one of the last minute's hits. */
    parley_db *db = open_db("later.db");
    REQUIRE(db != NULL);
    U(u_gus, "gus");
    int64_t retry;
    CHECK_INT(ratelimit_hit(db, u_gus, 1, MINUTE, T0 + 100, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u_gus, 1, MINUTE, T0, &retry), 0);
    CHECK_INT(retry, MINUTE + 100);
    db_close(db);
}

TEST(limit_zero_is_unlimited)
{
    parley_db *db = open_db("zero.db");
    REQUIRE(db != NULL);
    U(u_erin, "erin");
    int64_t retry = -1;
    for (int i = 0; i < 1000; i++)
        if (ratelimit_hit(db, u_erin, 0, MINUTE, T0, &retry) != 1) {
            CHECK(0);
            break;
        }
    CHECK_INT(retry, 0);
    CHECK_INT(ratelimit_hit(db, u_erin, -5, MINUTE, T0, NULL), 1);
    CHECK_INT(count_rows(db, u_erin), 0);               /* nothing to remember */
    db_close(db);
}

TEST(lowered_limit_retry_counts_the_excess)
{
    /* 10 hits under a limit of 10, then the limit drops to 4: a hit is
     * allowed again only when 7 of them have left, i.e. the 7th oldest. */
    parley_db *db = open_db("lowered.db");
    REQUIRE(db != NULL);
    U(u_fay, "fay");
    for (int i = 0; i < 10; i++)
        REQUIRE(ratelimit_hit(db, u_fay, 10, MINUTE, T0 + i * 100, NULL) == 1);
    int64_t retry;
    CHECK_INT(ratelimit_hit(db, u_fay, 4, MINUTE, T0 + 1000, &retry), 0);
    CHECK_INT(retry, T0 + 600 + MINUTE - (T0 + 1000));
    CHECK_INT(ratelimit_hit(db, u_fay, 4, MINUTE, T0 + 1000 + retry - 1, NULL), 0);
    CHECK_INT(ratelimit_hit(db, u_fay, 4, MINUTE, T0 + 1000 + retry, NULL), 1);
    db_close(db);
}

TEST(bad_arguments)
{
    parley_db *db = open_db("args.db");
    REQUIRE(db != NULL);
    U(u, "u");
    CHECK_INT(ratelimit_hit(NULL, u, 5, MINUTE, T0, NULL), -1);
    CHECK_INT(ratelimit_hit(db, u, 5, 0, T0, NULL), -1);
    /* inside a caller's transaction the hit is one step of it (db.h:
     * transactions nest): counted there, the caller's transaction left
     * open, and undone by the caller's rollback */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(ratelimit_hit(db, u, 5, MINUTE, T0, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u, 5, MINUTE, T0, NULL), 1);
    CHECK(in_transaction(db));
    CHECK_INT(db_rollback(db), 0);
    /* both undone: five fit under the limit of 5, the sixth does not */
    for (int i = 0; i < 5; i++)
        CHECK_INT(ratelimit_hit(db, u, 5, MINUTE, T0, NULL), 1);
    CHECK_INT(ratelimit_hit(db, u, 5, MINUTE, T0, NULL), 0);
    db_close(db);
}

TEST(prune_removes_only_old_hits)
{
    parley_db *db = open_db("prune.db");
    REQUIRE(db != NULL);
    U(g, "g");
    U(h, "h");
    U(i, "i");
    /* PostgreSQL: the database may hold older hits of earlier runs, which
     * the first prune deletes too: at least g's */
    int pg = db_pg_conn(db) != NULL;
    ratelimit_hit(db, g, 10, MINUTE, T0, NULL);
    ratelimit_hit(db, h, 10, MINUTE, T0 + 10, NULL);
    ratelimit_hit(db, i, 10, MINUTE, T0 + MINUTE, NULL);
    int n = ratelimit_prune(db, MINUTE, T0 + MINUTE + 5);      /* only g's */
    if (pg)
        CHECK(n >= 1);
    else
        CHECK_INT(n, 1);
    CHECK_INT(count_rows(db, g), 0);
    CHECK_INT(count_rows(db, h), 1);
    CHECK_INT(count_rows(db, i), 1);
    if (!pg) {
        CHECK_INT(count_rows(db, NULL), 2);
        CHECK_INT(ratelimit_prune(db, MINUTE, T0 + MINUTE + 5), 0);
    }
    n = ratelimit_prune(db, MINUTE, T0 + 10 * MINUTE);
    if (pg)
        CHECK(n >= 2);
    else
        CHECK_INT(n, 2);
    CHECK_INT(count_rows(db, h), 0);
    CHECK_INT(count_rows(db, i), 0);
    if (!pg)
        CHECK_INT(count_rows(db, NULL), 0);
    db_close(db);
}

/* 4 processes x 20 hits, one user, limit 50: BEGIN IMMEDIATE must make
 * count-then-insert atomic, so exactly 50 get through. */
TEST(processes_share_one_limit)
{
    enum { PROCS = 4, HITS = 20, LIMIT = 50 };
    char buf[512], err[512];
    const char *path = target("procs.db", buf, sizeof buf);
    U(shared, "shared");
    parley_db *db = db_open(path, err, sizeof err);      /* migrate once, then close */
    REQUIRE(db != NULL);
    db_close(db);

    int go[2];
    REQUIRE(pipe(go) == 0);
    pid_t pids[PROCS];
    int started = 0;
    fflush(stdout);
    for (int p = 0; p < PROCS; p++) {
        pid_t pid = fork();
        if (pid < 0)
            break;
        if (pid == 0) {
            close(go[1]);
            char e[512], c;
            parley_db *mine = db_open(path, e, sizeof e);
            if (read(go[0], &c, 1) < 0)                /* wait for the start */
                _exit(200);
            if (!mine)
                _exit(201);
            int allowed = 0;
            for (int i = 0; i < HITS; i++) {
                int r = ratelimit_hit(mine, shared, LIMIT, MINUTE, T0 + p * 10 + i, NULL);
                if (r < 0)
                    _exit(202);
                allowed += r;
            }
            db_close(mine);
            _exit(allowed);
        }
        pids[started++] = pid;
    }
    close(go[0]);
    close(go[1]);                                      /* EOF releases them all */
    REQUIRE(started == PROCS);
    int total = 0;
    for (int p = 0; p < started; p++) {
        int status;
        REQUIRE(waitpid(pids[p], &status, 0) == pids[p]);
        REQUIRE(WIFEXITED(status));
        int n = WEXITSTATUS(status);
        if (n > HITS) {
            printf("#   child %d failed with status %d\n", p, n);
            CHECK(0);
            continue;
        }
        total += n;
    }
    CHECK_INT(total, LIMIT);
    db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    CHECK_INT(count_rows(db, shared), LIMIT);
    db_close(db);
}

struct hit_arg {
    pthread_barrier_t *start;
    const char *target;         /* what to open */
    const char *user;
    int n, limit;
    int result;                 /* ratelimit_hit_n's answer */
};

static void *hitter(void *p)
{
    struct hit_arg *a = p;
    char err[512];
    parley_db *db = db_open(a->target, err, sizeof err);
    pthread_barrier_wait(a->start);
    a->result = db ? ratelimit_hit_n(db, a->user, a->n, a->limit, MINUTE, T0, NULL) : -2;
    if (!db)
        printf("#   db_open: %s\n", err);
    db_close(db);
    return NULL;
}

/* 2L connections (nodes, on PostgreSQL; one file on SQLite) hit one user's
 * limit L at the same moment (a barrier), 5 rounds with a fresh user each:
 * exactly L are allowed and L hits stored. Then L connections asking for 3
 * hits each (all or none) under a limit of 10: exactly 3 get theirs, 9
 * hits stored. Count-then-insert must be atomic for one user across
 * connections (BEGIN IMMEDIATE on SQLite, the advisory lock on PostgreSQL). */
TEST(threads_share_one_limit)
{
    enum { L = 8, ROUNDS = 5 };
    char buf[512], err[512];
    const char *path = target("threads.db", buf, sizeof buf);
    parley_db *db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    for (int round = 0; round < ROUNDS + 1; round++) {
        int each = round < ROUNDS ? 1 : 3;
        int limit = round < ROUNDS ? L : 10;
        char user[160];
        snprintf(user, sizeof user, "%sthreads-%d", pfx, round);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2 * L);
        pthread_t th[2 * L];
        struct hit_arg args[2 * L];
        for (int t = 0; t < 2 * L; t++) {
            args[t] = (struct hit_arg){ &start, path, user, each, limit, -3 };
            REQUIRE(pthread_create(&th[t], NULL, hitter, &args[t]) == 0);
        }
        int allowed = 0, bad = 0;
        for (int t = 0; t < 2 * L; t++) {
            pthread_join(th[t], NULL);
            if (args[t].result == 1)
                allowed++;
            else if (args[t].result != 0)
                bad++;
        }
        pthread_barrier_destroy(&start);
        CHECK_INT(bad, 0);
        CHECK_INT(allowed, limit / each);
        CHECK_INT(count_rows(db, user), limit / each * each);
        if (allowed != limit / each)
            printf("#   round %d: %d allowed\n", round, allowed);
    }
    db_close(db);
}

static void run_cases(void)
{
    RUN(thirty_then_limited);
    RUN(window_slides);
    RUN(users_are_separate);
    RUN(later_stamped_hits_count);
    RUN(limit_zero_is_unlimited);
    RUN(lowered_limit_retry_counts_the_excess);
    RUN(bad_arguments);
    RUN(prune_removes_only_old_hits);
    RUN(processes_share_one_limit);
    RUN(threads_share_one_limit);
}

int main(void)
{
    printf("# backend: SQLite\n");
    run_cases();
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        /* user ids of this run only: the database may have been used before */
        pg_uri = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, users %s*)\n", pfx);
        run_cases();
    }
    return th_done();
}
