/* test_evlog.c — event log: dense seqs, reads after a cursor, coalescing,
 * compaction that keeps each channel's newest row, waits woken by the bell. */
#include "th.h"
#include "db_sqlite.h"
#include "bell.h"
#include "evlog.h"
#include "util.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dbpath[512], bellpath[512];

static parley_db *open_db(void)
{
    char err[512];
    parley_db *db = db_open(dbpath, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    return db;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

TEST(append_and_read)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CHECK_INT(evlog_last_seq(db, "c:a"), 0);
    CHECK_INT(evlog_append(db, NULL, "c:a", 1, "token", "he", 2), 1);
    CHECK_INT(evlog_append(db, NULL, "c:a", 1, "token", "llo", 3), 2);
    CHECK_INT(evlog_append(db, NULL, "c:b", 2, "token", "x", 1), 1);   /* per-channel seq */
    CHECK_INT(evlog_append(db, NULL, "c:a", 1, "done", "{}", 2), 3);
    struct evlog_event *ev;
    int n = evlog_read(db, "c:a", 0, 100, &ev);
    REQUIRE(n == 3);
    CHECK_INT(ev[0].seq, 1);
    CHECK_STR(ev[0].data, "he");
    CHECK_STR(ev[1].data, "llo");
    CHECK_STR(ev[2].type, "done");
    CHECK_INT(ev[2].job_id, 1);
    evlog_free(ev, n);
    n = evlog_read(db, "c:a", 2, 100, &ev);
    CHECK_INT(n, 1);
    evlog_free(ev, n);
    n = evlog_read(db, "c:a", 3, 100, &ev);
    CHECK_INT(n, 0);
    evlog_free(ev, n);
    n = evlog_read(db, "c:a", 0, 2, &ev);     /* max respected */
    CHECK_INT(n, 2);
    evlog_free(ev, n);
    /* binary-safe text: embedded quote, backslash, newline, UTF-8 */
    const char odd[] = "caf\xc3\xa9 \"q\" \\ \n \xf0\x9f\x99\x82";
    int64_t s = evlog_append(db, NULL, "c:odd", 0, "token", odd, sizeof odd - 1);
    CHECK(s == 1);
    n = evlog_read(db, "c:odd", 0, 10, &ev);
    REQUIRE(n == 1);
    CHECK_INT(ev[0].data_len, sizeof odd - 1);
    CHECK(memcmp(ev[0].data, odd, sizeof odd - 1) == 0);
    CHECK_INT(ev[0].job_id, 0);
    evlog_free(ev, n);
    db_close(db);
}

TEST(coalescing_writer)
{
    parley_db *db = open_db();
    REQUIRE(db);
    struct evlog_writer w;
    /* coalescing off: one event per token */
    evw_init(&w, db, NULL, "c:w0", 7, 0);
    for (int i = 0; i < 5; i++)
        CHECK_INT(evw_token(&w, "t", 1), 0);
    CHECK_INT(evw_due_ms(&w), -1);
    CHECK_INT(w.events, 5);
    evw_cleanup(&w);
    /* coalescing on: a burst of tokens within the window becomes few events */
    evw_init(&w, db, NULL, "c:w1", 7, 50);
    for (int i = 0; i < 20; i++)
        CHECK_INT(evw_token(&w, "ab", 2), 0);
    CHECK(w.events <= 2);            /* the first goes out at once, the rest wait */
    CHECK(evw_due_ms(&w) >= 0);
    sleep_ms(60);
    CHECK_INT(evw_tick(&w), 0);
    CHECK_INT(evw_due_ms(&w), -1);
    struct evlog_event *ev;
    int n = evlog_read(db, "c:w1", 0, 100, &ev);
    REQUIRE(n >= 1);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += ev[i].data_len;
    CHECK_INT(total, 40);            /* nothing lost, nothing doubled */
    CHECK(n <= 3);
    evlog_free(ev, n);
    /* evw_take hands over the buffer without appending */
    CHECK_INT(evw_token(&w, "zz", 2), 0);
    size_t len = 0;
    char *rest = evw_take(&w, &len);
    CHECK(rest != NULL && len == 2 && !strcmp(rest, "zz"));
    free(rest);
    CHECK_INT(evw_due_ms(&w), -1);
    evw_cleanup(&w);
    db_close(db);
}

TEST(compaction_keeps_newest)
{
    parley_db *db = open_db();
    REQUIRE(db);
    REQUIRE(db_exec(db, "INSERT INTO jobs(id, channel, prompt_key, state, created_at, finished_at) "
                        "VALUES (900, 'c:cmp', 'k', 'done', 0, 1000), "
                        "(901, 'c:cmp', 'k2', 'running', 0, NULL)") == 0);
    for (int i = 0; i < 5; i++)
        evlog_append(db, NULL, "c:cmp", 900, "token", "x", 1);
    evlog_append(db, NULL, "c:cmp", 900, "done", "{}", 2);
    int64_t last = evlog_last_seq(db, "c:cmp");
    CHECK_INT(last, 6);
    /* not yet past the grace period: nothing goes */
    CHECK_INT(evlog_compact(db, 10000, 5000), 0);
    CHECK_INT(evlog_compact(db, 1000, now_ms()), 5);
    CHECK_INT(evlog_last_seq(db, "c:cmp"), 6);
    CHECK_INT(evlog_append(db, NULL, "c:cmp", 901, "token", "y", 1), 7);   /* seq never restarts */
    /* the old "done" is no longer the newest row: it goes; the running job's stays */
    CHECK_INT(evlog_compact(db, 1000, now_ms()), 1);
    struct evlog_event *ev;
    int n = evlog_read(db, "c:cmp", 0, 10, &ev);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_INT(ev[0].seq, 7);
    evlog_free(ev, n);
    db_close(db);
}

TEST(wait_is_woken_across_processes)
{
    char err[256];
    parley_bell *bell = bell_open(bellpath, err, sizeof err);
    REQUIRE(bell);
    parley_db *db = open_db();
    REQUIRE(db);
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(150);
        parley_db *cdb = open_db();
        parley_bell *cb = bell_open(bellpath, err, sizeof err);
        int ok = cdb && cb && evlog_append(cdb, cb, "c:wake", 0, "token", "hi", 2) > 0;
        db_close(cdb);
        bell_close(cb);
        _exit(ok ? 0 : 1);
    }
    int64_t t0 = mono_ms();
    struct evlog_event *ev;
    int n = evlog_wait(db, bell, "c:wake", 0, 10, 5000, NULL, &ev);
    int64_t took = mono_ms() - t0;
    CHECK_INT(n, 1);
    CHECK(took < 2000);
    if (n > 0)
        CHECK_STR(ev[0].data, "hi");
    evlog_free(ev, n);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* timeout with nothing new */
    t0 = mono_ms();
    n = evlog_wait(db, bell, "c:wake", 1, 10, 200, NULL, &ev);
    CHECK_INT(n, 0);
    CHECK(mono_ms() - t0 >= 190);
    /* stop flag ends a wait */
    volatile int stop = 1;
    CHECK_INT(evlog_wait(db, bell, "c:wake", 1, 10, 5000, &stop, &ev), -1);
    db_close(db);
    bell_close(bell);
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/ev.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/ev.db-bell", th_tmpdir());
    RUN(append_and_read);
    RUN(coalescing_writer);
    RUN(compaction_keeps_newest);
    RUN(wait_is_woken_across_processes);
    return th_done();
}
