/* test_bell_any.c — the "any" slot: every ring of any channel wakes a
 * sleeper in bell_wait_any, across processes; no ring, no wake. */
#include "th.h"
#include "bell.h"
#include "util.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char path[512];

TEST(any_ring_wakes_any_waiter)
{
    char err[256];
    parley_bell *b = bell_open(path, err, sizeof err);
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
    return th_done();
}
