/* pg-bell.c — the doorbell's wake across nodes: commit -> follower running.
 *
 *   build/bench/pg-bell URI [rounds] [followers]     (default 200 100)
 *   build/bench/pg-bell - [rounds] [followers]       SQLite only
 *
 * URI: a PostgreSQL database on 127.0.0.1 that may be written (a private
 * one: `. tests/integration/lib.sh; it_init; it_postgres` gives $PG_URL, or
 * `DB=postgres make run`). Sets for itself.
 * Bounded: every wait has a timeout, a round whose followers do not all
 * wake within 5 s ends the run with an error.
 *
 * Node B: one listening bell (bell_open_db(URI): its own LISTEN connection
 * and listener thread) and F follower threads sleeping in bell_wait on one
 * channel. Node A: another connection (a writer that never rings a bell
 * itself) appends one event and commits: db_begin, evlog_append_tx (which
 * queues the NOTIFY), t0, db_commit. The followers are woken only through
 * PostgreSQL: NOTIFY -> B's listener socket -> bell_ring -> FUTEX_WAKE.
 * Each follower records when it runs again; latency = that - t0. Before
 * each commit the writer waits until every follower has peeked the bell,
 * then 2 ms more so they sleep in the kernel. Figures: p50/p99/max over
 * all F x rounds samples, and p50/p99 of each round's last follower.
 *
 * For comparison the same program and shape on SQLite: the file bell
 * (<db>-bell), followers on one mapping, the writer's own mapping rings
 * after its commit (as evlog_append does).
 *
 * Prints one line per figure.
 */
#include "bell.h"
#include "db.h"
#include "evlog.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS    1000
#define MAX_FOLLOWERS 1000
#define WAIT_MS       5000

static int rounds = 200, nfollow = 100;
static parley_bell *fbell;               /* node B's bell */
static char channel[64];
static int64_t t0_us[MAX_ROUNDS];        /* written before the commit (atomic) */
static int64_t *woke_us;                 /* [round * nfollow + i] */
static uint32_t ready[MAX_ROUNDS], done[MAX_ROUNDS], bad;
static int stop;

static void sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000L };
    nanosleep(&ts, NULL);
}

static void *follower_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    for (int r = 0; r < rounds && !__atomic_load_n(&stop, __ATOMIC_SEQ_CST); r++) {
        uint32_t seen = bell_peek(fbell, channel);
        __atomic_add_fetch(&ready[r], 1, __ATOMIC_SEQ_CST);
        int rc = bell_wait(fbell, channel, seen, WAIT_MS);
        woke_us[(size_t)r * (size_t)nfollow + (size_t)i] = mono_us();
        if (rc != 1)
            __atomic_add_fetch(&bad, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&done[r], 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(const int64_t *v, size_t n, double p)
{
    size_t k = (size_t)(p * (double)(n - 1) + 0.5);
    return v[k < n ? k : n - 1];
}

/* Waits until *ctr reaches want, at most ms. 0 / -1. */
static int await(uint32_t *ctr, uint32_t want, int ms)
{
    for (int64_t t = mono_ms(); __atomic_load_n(ctr, __ATOMIC_SEQ_CST) < want; sleep_us(100))
        if (mono_ms() - t > ms)
            return -1;
    return 0;
}

/* One run: spec is the database, a PostgreSQL URI (pgspec) or a SQLite
 * path. 0 / -1. */
static int run(const char *label, const char *spec, int pgspec)
{
    char err[512];
    memset(ready, 0, sizeof ready);
    memset(done, 0, sizeof done);
    bad = 0;
    stop = 0;
    snprintf(channel, sizeof channel, "bench:bell:%ld", (long)getpid());
    fbell = bell_open_db(spec, err, sizeof err);
    parley_db *wdb = db_open(spec, err, sizeof err);
    parley_bell *wbell = NULL;                 /* SQLite: the writer's own mapping */
    if (!pgspec)
        wbell = bell_open_db(spec, err, sizeof err);
    if (!fbell || !wdb || (!pgspec && !wbell)) {
        fprintf(stderr, "pg-bell: %s: %s\n", label, err);
        bell_close(fbell);
        bell_close(wbell);
        db_close(wdb);
        return -1;
    }
    woke_us = calloc((size_t)rounds * (size_t)nfollow, sizeof *woke_us);
    pthread_t *th = calloc((size_t)nfollow, sizeof *th);
    int started = 0, rc = 0;
    for (; th && woke_us && started < nfollow; started++)
        if (pthread_create(&th[started], NULL, follower_main, (void *)(intptr_t)started) != 0)
            break;
    if (started < nfollow) {
        fprintf(stderr, "pg-bell: cannot start %d followers\n", nfollow);
        rc = -1;
    }
    int64_t commit_sum = 0;
    for (int r = 0; rc == 0 && r < rounds; r++) {
        if (await(&ready[r], (uint32_t)nfollow, WAIT_MS) < 0) {
            fprintf(stderr, "pg-bell: %s: round %d: followers not ready\n", label, r);
            rc = -1;
            break;
        }
        sleep_us(2000);                        /* into the kernel */
        if (db_begin(wdb) < 0 ||
            evlog_append_tx(wdb, channel, 0, "token", "x", 1) < 0) {
            fprintf(stderr, "pg-bell: %s: append failed: %s\n", label, db_errmsg(wdb));
            db_rollback(wdb);
            rc = -1;
            break;
        }
        int64_t t0 = mono_us();
        __atomic_store_n(&t0_us[r], t0, __ATOMIC_SEQ_CST);
        if (db_commit(wdb) < 0) {
            fprintf(stderr, "pg-bell: %s: commit failed: %s\n", label, db_errmsg(wdb));
            rc = -1;
            break;
        }
        commit_sum += mono_us() - t0;
        if (wbell)
            bell_ring(wbell, channel);         /* SQLite: evlog_append's ring */
        if (await(&done[r], (uint32_t)nfollow, WAIT_MS) < 0) {
            fprintf(stderr, "pg-bell: %s: round %d: not every follower woke in %d ms\n",
                    label, r, WAIT_MS);
            rc = -1;
            break;
        }
    }
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    bell_wake_all(fbell);                      /* followers left in a wait: out */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc == 0 && bad)
        fprintf(stderr, "pg-bell: %s: %u waits ended other than woken\n", label, bad);
    if (rc == 0) {
        size_t n = (size_t)rounds * (size_t)nfollow;
        int64_t *lat = malloc(n * sizeof *lat), *last = malloc((size_t)rounds * sizeof *last);
        if (lat && last) {
            for (int r = 0; r < rounds; r++) {
                last[r] = 0;
                for (int i = 0; i < nfollow; i++) {
                    int64_t l = woke_us[(size_t)r * (size_t)nfollow + (size_t)i] - t0_us[r];
                    lat[(size_t)r * (size_t)nfollow + (size_t)i] = l;
                    if (l > last[r])
                        last[r] = l;
                }
            }
            qsort(lat, n, sizeof *lat, cmp64);
            qsort(last, (size_t)rounds, sizeof *last, cmp64);
            printf("%s: %d followers x %d rounds: commit -> follower running, p50: %lld us\n",
                   label, nfollow, rounds, (long long)pct(lat, n, 0.50));
            printf("%s: %d followers x %d rounds: commit -> follower running, p99: %lld us\n",
                   label, nfollow, rounds, (long long)pct(lat, n, 0.99));
            printf("%s: %d followers x %d rounds: commit -> follower running, max: %lld us\n",
                   label, nfollow, rounds, (long long)lat[n - 1]);
            printf("%s: %d followers x %d rounds: commit -> last follower of the round, p50: %lld us\n",
                   label, nfollow, rounds, (long long)pct(last, (size_t)rounds, 0.50));
            printf("%s: %d followers x %d rounds: commit -> last follower of the round, p99: %lld us\n",
                   label, nfollow, rounds, (long long)pct(last, (size_t)rounds, 0.99));
            printf("%s: commit call (db_commit), mean: %lld us\n", label,
                   (long long)(commit_sum / rounds));
        } else {
            rc = -1;
        }
        free(lat);
        free(last);
    }
    free(th);
    free(woke_us);
    woke_us = NULL;
    db_close(wdb);
    bell_close(wbell);
    bell_close(fbell);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: pg-bell URI|- [rounds] [followers]\n");
        return 2;
    }
    if (argc > 2)
        rounds = atoi(argv[2]);
    if (argc > 3)
        nfollow = atoi(argv[3]);
    if (rounds < 1 || rounds > MAX_ROUNDS || nfollow < 1 || nfollow > MAX_FOLLOWERS) {
        fprintf(stderr, "pg-bell: rounds 1..%d, followers 1..%d\n", MAX_ROUNDS, MAX_FOLLOWERS);
        return 2;
    }
    char dir[] = "/tmp/pg-bell-XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/bench.db", dir);
    int rc = 0;
    if (strcmp(argv[1], "-") != 0 && run("postgresql listening bell (NOTIFY)", argv[1], 1) < 0)
        rc = 1;
    if (run("sqlite file bell", path, 0) < 0)
        rc = 1;
    char f[96];
    const char *suffix[] = { "", "-wal", "-shm", "-bell" };
    for (int i = 0; i < 4; i++) {
        snprintf(f, sizeof f, "%s%s", path, suffix[i]);
        unlink(f);
    }
    rmdir(dir);
    return rc;
}
