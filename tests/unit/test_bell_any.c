/* test_bell_any.c — the "any" slot: every ring of any channel wakes a
 * sleeper in bell_wait_any, across processes; no ring, no wake.
 * With PARLEY_TEST_PG (t0760-pg-bell.sh) it runs again on a listening bell,
 * where the other process rings by committing an event-log append (its
 * NOTIFY) on its own connection. */
#include "th.h"
#include "bell.h"
#include "db.h"
#include "evlog.h"
#include "util.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char path[512];
static const char *pg;           /* PARLEY_TEST_PG, or NULL: the file bell */

TEST(any_ring_wakes_any_waiter)
{
    char err[256];
    parley_bell *b = pg ? bell_open_db(pg, err, sizeof err) : bell_open(path, err, sizeof err);
    if (!b)
        printf("# %s\n", err);
    REQUIRE(b);
    uint32_t seen = bell_peek_any(b);
    CHECK_INT(bell_wait_any(b, seen, 50), 0);          /* nothing rang */
    bell_ring(b, "chan:a");
    CHECK(bell_peek_any(b) != seen);
    CHECK_INT(bell_wait_any(b, seen, 50), 1);          /* already moved */
    seen = bell_peek_any(b);
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec ts = { 0, 100 * 1000000L };
        nanosleep(&ts, NULL);
        if (pg) {                       /* another node: a commit on its own connection */
            char ch[64];
            snprintf(ch, sizeof ch, "any%ld:some:other:channel", (long)getppid());
            parley_db *db = db_open(pg, err, sizeof err);
            int ok = db && evlog_append(db, NULL, ch, 0, "token", "x", 1) > 0;
            db_close(db);
            _exit(ok ? 0 : 1);
        }
        parley_bell *cb = bell_open(path, err, sizeof err);
        if (cb)
            bell_ring(cb, "some:other:channel");
        bell_close(cb);
        _exit(cb ? 0 : 1);
    }
    int64_t t0 = mono_ms();
    CHECK_INT(bell_wait_any(b, seen, 3000), 1);
    CHECK(mono_ms() - t0 < 2000);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bell_close(b);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/any.db-bell", th_tmpdir());
    RUN(any_ring_wakes_any_waiter);
    pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        printf("# backend: PostgreSQL (PARLEY_TEST_PG: a listening bell)\n");
        RUN(any_ring_wakes_any_waiter);
    }
    return th_done();
}
