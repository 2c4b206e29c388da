/* test_bell_wake.c — bell_wake_all(), the shutdown of a process's waits:
 * it wakes every thread sleeping on the handle (channel slots and the "any"
 * slot) at once, later waits on it return -1 at once, another handle of
 * the same file (another process) is not stopped, and a thread that enters
 * bell_wait just as wake_all runs is never left asleep (repeated races).
 * Every wait has a timeout, so a lost wake-up fails a case, not hangs it.
 * With PARLEY_TEST_PG (t0760-pg-bell.sh) the cases run again on listening
 * bells (bell_open_db): "another process" is another listening bell, and
 * each race round opens (and wake_all stops and joins) a listener. */
#include "th.h"
#include "bell.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static char path[512];
static const char *pg;           /* PARLEY_TEST_PG, or NULL: the file bell */

static parley_bell *open_bell(char *err, size_t errlen)
{
    parley_bell *b = pg ? bell_open_db(pg, err, errlen) : bell_open(path, err, errlen);
    if (!b)
        printf("# %s\n", err);
    return b;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

struct sleeper {
    pthread_t th;
    parley_bell *b;
    const char *channel;       /* NULL: the any slot */
    int timeout_ms;
    int rc;
    int64_t took_ms;
    int started;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    uint32_t seen = s->channel ? bell_peek(s->b, s->channel) : bell_peek_any(s->b);
    __atomic_store_n(&s->started, 1, __ATOMIC_SEQ_CST);
    int64_t t0 = mono_ms();
    s->rc = s->channel ? bell_wait(s->b, s->channel, seen, s->timeout_ms)
                       : bell_wait_any(s->b, seen, s->timeout_ms);
    s->took_ms = mono_ms() - t0;
    return NULL;
}

TEST(wakes_every_sleeper_and_stays_stopped)
{
    char err[512];
    parley_bell *b = open_bell(err, sizeof err);
    parley_bell *other = open_bell(err, sizeof err);   /* "another process" */
    REQUIRE(b && other);
    CHECK_INT(bell_stopped(b), 0);
    enum { N = 8 };
    static const char *chans[N] = { "ticket:1", "ticket:2", "ticket:1", "conv:x", "poll:abc",
                                    "ticket:3", NULL, NULL };
    struct sleeper s[N];
    memset(s, 0, sizeof s);
    for (int i = 0; i < N; i++) {
        s[i].b = b;
        s[i].channel = chans[i];
        s[i].timeout_ms = i == N - 1 ? -1 : 10000;   /* one without any timeout */
        pthread_create(&s[i].th, NULL, sleeper_main, &s[i]);
    }
    /* one sleeper of the other handle, on a slot that is woken */
    struct sleeper o = { .b = other, .channel = "ticket:1", .timeout_ms = 1500 };
    pthread_create(&o.th, NULL, sleeper_main, &o);
    for (int i = 0; i < N; i++)
        while (!__atomic_load_n(&s[i].started, __ATOMIC_SEQ_CST))
            sleep_ms(1);
    sleep_ms(200);
    int64_t t0 = mono_ms();
    bell_wake_all(b);
    CHECK(mono_ms() - t0 < 300);
    for (int i = 0; i < N; i++) {
        pthread_join(s[i].th, NULL);
        CHECK_INT(s[i].rc, -1);
        CHECK(s[i].took_ms < 200 + 1000);
    }
    CHECK_INT(bell_stopped(b), 1);
    /* later waits return at once, with or without a timeout */
    int64_t t1 = mono_ms();
    CHECK_INT(bell_wait(b, "ticket:9", bell_peek(b, "ticket:9"), 5000), -1);
    CHECK_INT(bell_wait_any(b, bell_peek_any(b), -1), -1);
    CHECK(mono_ms() - t1 < 100);
    /* rings still work on a stopped handle; the other handle is not stopped:
     * its sleeper saw at most a spurious wake-up (1) or its timeout (0) */
    bell_ring(b, "ticket:5");
    pthread_join(o.th, NULL);
    CHECK(o.rc == 0 || o.rc == 1);
    CHECK_INT(bell_stopped(other), 0);
    uint32_t v = bell_peek(other, "ticket:7");
    CHECK_INT(bell_wait(other, "ticket:7", v, 50), 0);
    bell_close(other);
    bell_close(b);
}

/* A thread entering bell_wait while bell_wake_all runs: many rounds, each
 * with a fresh handle; the wait must end long before its 5 s timeout. */
struct racer {
    parley_bell *b;
    int rc;
    int64_t took_ms;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    int64_t t0 = mono_ms();
    r->rc = bell_wait(r->b, "race", bell_peek(r->b, "race"), 5000);
    r->took_ms = mono_ms() - t0;
    return NULL;
}

TEST(no_sleeper_left_behind_in_a_race)
{
    char err[512];
    int slow = 0, bad = 0;
    for (int round = 0; round < 200; round++) {
        parley_bell *b = open_bell(err, sizeof err);
        REQUIRE(b);
        struct racer r[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
            r[i].b = b;
            pthread_create(&th[i], NULL, racer_main, &r[i]);
        }
        if (round % 4)
            sleep_ms(round % 3);       /* sometimes before they sleep, sometimes after */
        bell_wake_all(b);
        for (int i = 0; i < 3; i++) {
            pthread_join(th[i], NULL);
            if (r[i].rc != -1)
                bad++;
            if (r[i].took_ms > 1000)
                slow++;
        }
        bell_close(b);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(slow, 0);
}

int main(void)
{
    snprintf(path, sizeof path, "%s/wake-bell", th_tmpdir());
    RUN(wakes_every_sleeper_and_stays_stopped);
    RUN(no_sleeper_left_behind_in_a_race);
    pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        printf("# backend: PostgreSQL (PARLEY_TEST_PG: listening bells)\n");
        RUN(wakes_every_sleeper_and_stays_stopped);
        RUN(no_sleeper_left_behind_in_a_race);
    }
    return th_done();
}
