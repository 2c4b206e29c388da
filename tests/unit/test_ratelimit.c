/* test_ratelimit.c — the sliding window: limit, slide, retry time, users
 * kept apart, limit 0, pruning, and several processes sharing one file. */
#include "th.h"
#include "ratelimit.h"
#include "db_sqlite.h"

#include <sys/wait.h>
#include <unistd.h>

#define MINUTE 60000
static const int64_t T0 = 1700000000000;   /* an arbitrary wall-clock ms */

static parley_db *open_db(const char *name)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s", th_tmpdir(), name);
    parley_db *db = db_open(path, err, sizeof err);
    if (!db)
        printf("#   db_open %s: %s\n", path, err);
    return db;
}

static int64_t count_rows(parley_db *db, const char *user)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM rate_hits WHERE user_id = ?1 OR ?1 IS NULL");
    if (!st)
        return -1;
    db_bind_text(st, 1, user);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

TEST(thirty_then_limited)
{
    parley_db *db = open_db("thirty.db");
    REQUIRE(db != NULL);
    int64_t retry = -1;
    for (int i = 0; i < 30; i++)
        CHECK_INT(ratelimit_hit(db, "alice", 30, MINUTE, T0 + i * 1000, &retry), 1);
    CHECK_INT(retry, 0);
    /* the 31st, 30 s after the first: limited until the first leaves */
    CHECK_INT(ratelimit_hit(db, "alice", 30, MINUTE, T0 + 30000, &retry), 0);
    CHECK_INT(retry, 30000);
    CHECK_INT(count_rows(db, "alice"), 30);             /* nothing recorded */
    /* still limited 1 ms before the first hit leaves */
    CHECK_INT(ratelimit_hit(db, "alice", 30, MINUTE, T0 + MINUTE - 1, &retry), 0);
    CHECK_INT(retry, 1);
    CHECK_INT(ratelimit_hit(db, "alice", 30, MINUTE, T0 + MINUTE - 1, NULL), 0);
    db_close(db);
}

TEST(window_slides)
{
    parley_db *db = open_db("slide.db");
    REQUIRE(db != NULL);
    int64_t retry;
    for (int i = 0; i < 30; i++)
        REQUIRE(ratelimit_hit(db, "bob", 30, MINUTE, T0 + i * 1000, NULL) == 1);
    /* at T0 + 60 s the hit at T0 is outside (T0, T0 + 60 s]: one more fits */
    CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + MINUTE, &retry), 1);
    /* and only one: the next leaves at T0 + 1 s + 60 s */
    CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + MINUTE, &retry), 0);
    CHECK_INT(retry, 1000);
    CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + MINUTE + 500, &retry), 0);
    CHECK_INT(retry, 500);
    CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + MINUTE + 1000, &retry), 1);
    /* the user's hits older than the window were deleted on the way */
    CHECK_INT(count_rows(db, "bob"), 30);
    /* after a quiet two minutes the whole budget is back */
    for (int i = 0; i < 30; i++)
        CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + 3 * MINUTE + i, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "bob", 30, MINUTE, T0 + 3 * MINUTE + 30, &retry), 0);
    CHECK_INT(retry, MINUTE - 30);
    CHECK_INT(count_rows(db, "bob"), 30);
    db_close(db);
}

TEST(users_are_separate)
{
    parley_db *db = open_db("users.db");
    REQUIRE(db != NULL);
    for (int i = 0; i < 5; i++)
        CHECK_INT(ratelimit_hit(db, "carol", 5, MINUTE, T0 + i, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "carol", 5, MINUTE, T0 + 10, NULL), 0);
    CHECK_INT(ratelimit_hit(db, "dave", 5, MINUTE, T0 + 10, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "Carol", 5, MINUTE, T0 + 10, NULL), 1);   /* ids are exact */
    CHECK_INT(ratelimit_hit(db, "", 5, MINUTE, T0 + 10, NULL), 1);        /* open-mode user */
    CHECK_INT(ratelimit_hit(db, NULL, 5, MINUTE, T0 + 11, NULL), 1);      /* same as "" */
    CHECK_INT(count_rows(db, ""), 2);
    /* an id that looks like SQL is just an id */
    CHECK_INT(ratelimit_hit(db, "x' OR '1'='1", 5, MINUTE, T0 + 12, NULL), 1);
    CHECK_INT(count_rows(db, "carol"), 5);
    db_close(db);
}

TEST(later_stamped_hits_count)
{
    /* Another process stamped its hit 100 ms "after" ours (clocks read at
     * different moments): it is still one of the last minute's hits. */
    parley_db *db = open_db("later.db");
    REQUIRE(db != NULL);
    int64_t retry;
    CHECK_INT(ratelimit_hit(db, "gus", 1, MINUTE, T0 + 100, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "gus", 1, MINUTE, T0, &retry), 0);
    CHECK_INT(retry, MINUTE + 100);
    db_close(db);
}

TEST(limit_zero_is_unlimited)
{
    parley_db *db = open_db("zero.db");
    REQUIRE(db != NULL);
    int64_t retry = -1;
    for (int i = 0; i < 1000; i++)
        if (ratelimit_hit(db, "erin", 0, MINUTE, T0, &retry) != 1) {
            CHECK(0);
            break;
        }
    CHECK_INT(retry, 0);
    CHECK_INT(ratelimit_hit(db, "erin", -5, MINUTE, T0, NULL), 1);
    CHECK_INT(count_rows(db, "erin"), 0);               /* nothing to remember */
    db_close(db);
}

TEST(lowered_limit_retry_counts_the_excess)
{
    /* 10 hits under a limit of 10, then the limit drops to 4: a hit is
     * allowed again only when 7 of them have left, i.e. the 7th oldest. */
    parley_db *db = open_db("lowered.db");
    REQUIRE(db != NULL);
    for (int i = 0; i < 10; i++)
        REQUIRE(ratelimit_hit(db, "fay", 10, MINUTE, T0 + i * 100, NULL) == 1);
    int64_t retry;
    CHECK_INT(ratelimit_hit(db, "fay", 4, MINUTE, T0 + 1000, &retry), 0);
    CHECK_INT(retry, T0 + 600 + MINUTE - (T0 + 1000));
    CHECK_INT(ratelimit_hit(db, "fay", 4, MINUTE, T0 + 1000 + retry - 1, NULL), 0);
    CHECK_INT(ratelimit_hit(db, "fay", 4, MINUTE, T0 + 1000 + retry, NULL), 1);
    db_close(db);
}

TEST(bad_arguments)
{
    parley_db *db = open_db("args.db");
    REQUIRE(db != NULL);
    CHECK_INT(ratelimit_hit(NULL, "u", 5, MINUTE, T0, NULL), -1);
    CHECK_INT(ratelimit_hit(db, "u", 5, 0, T0, NULL), -1);
    /* inside a caller's transaction the hit is one step of it (db.h:
     * transactions nest): counted there, the caller's transaction left
     * open, and undone by the caller's rollback */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(ratelimit_hit(db, "u", 5, MINUTE, T0, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "u", 5, MINUTE, T0, NULL), 1);
    CHECK(!sqlite3_get_autocommit(db_handle(db)));
    CHECK_INT(db_rollback(db), 0);
    /* both undone: five fit under the limit of 5, the sixth does not */
    for (int i = 0; i < 5; i++)
        CHECK_INT(ratelimit_hit(db, "u", 5, MINUTE, T0, NULL), 1);
    CHECK_INT(ratelimit_hit(db, "u", 5, MINUTE, T0, NULL), 0);
    db_close(db);
}

TEST(prune_removes_only_old_hits)
{
    parley_db *db = open_db("prune.db");
    REQUIRE(db != NULL);
    ratelimit_hit(db, "g", 10, MINUTE, T0, NULL);
    ratelimit_hit(db, "h", 10, MINUTE, T0 + 10, NULL);
    ratelimit_hit(db, "i", 10, MINUTE, T0 + MINUTE, NULL);
    CHECK_INT(ratelimit_prune(db, MINUTE, T0 + MINUTE + 5), 1);     /* only g's */
    CHECK_INT(count_rows(db, NULL), 2);
    CHECK_INT(ratelimit_prune(db, MINUTE, T0 + MINUTE + 5), 0);
    CHECK_INT(ratelimit_prune(db, MINUTE, T0 + 10 * MINUTE), 2);
    CHECK_INT(count_rows(db, NULL), 0);
    db_close(db);
}

/* 4 processes x 20 hits, one user, limit 50: BEGIN IMMEDIATE must make
 * count-then-insert atomic, so exactly 50 get through. */
TEST(processes_share_one_limit)
{
    enum { PROCS = 4, HITS = 20, LIMIT = 50 };
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/procs.db", th_tmpdir());
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
                int r = ratelimit_hit(mine, "shared", LIMIT, MINUTE, T0 + p * 10 + i, NULL);
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
    CHECK_INT(count_rows(db, "shared"), LIMIT);
    db_close(db);
}

int main(void)
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
    return th_done();
}
