/* bench_bell.c — doorbell wake latency and the cost of idle sleepers.
 *
 *   build/bench/bench_bell [rounds-scale]     (default 1; 0.2 for a quick look)
 *
 * Latency: S sleepers (threads spread over several forked processes, each
 * process with its own mapping of the bell file) wait on one channel; the
 * ringer (the parent process) stores mono_us() in shared memory and rings;
 * every sleeper records (wake time - ring time). Repeated for a number of
 * rounds; p50/p99/max over all samples. Before each ring the ringer waits
 * until every sleeper has read the counter, then lets them settle into the
 * kernel, so each sample is a real sleep -> wake. Sleepers go back to
 * sleep at once after waking (no work in between), the worst case for
 * contention with the ringer. "bell_ring call" is how long the ringer's own
 * FUTEX_WAKE took: the kernel wakes every sleeper inside that call.
 *
 * Idle cost: 1000 sleepers asleep for 2 s; each process measures its own
 * CPU time (CLOCK_PROCESS_CPUTIME_ID, all threads) across the window. For
 * comparison the same 1000 threads sleep-polling every 50 ms.
 *
 * Also: the cost of bell_ring() when nobody sleeps (the common case for a
 * writer appending tokens nobody is waiting for yet), and when a process
 * follows every channel through bell_wait_any() (the WebSocket bridge).
 *
 * Prints Markdown tables for docs/PERFORMANCE.md.
 */
#include "bell.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLEEPERS 1000
#define MAX_ROUNDS   400
#define MAX_PROCS    8
#define CHANNEL      "conv:bench"

/* Shared by the ringer and every sleeper process (MAP_SHARED | ANONYMOUS). */
struct shared {
    int64_t ring_us[MAX_ROUNDS];        /* written by the ringer before it rings */
    int64_t ring_call_us[MAX_ROUNDS];   /* how long bell_ring() itself took */
    uint32_t ready[MAX_ROUNDS];         /* sleepers that peeked, per round (atomic) */
    uint32_t done[MAX_ROUNDS];          /* sleepers that woke, per round (atomic) */
    uint32_t bad;                       /* waits that returned other than 1 (atomic) */
    uint32_t measured;                  /* idle: processes that stored cpu_ns */
    uint32_t stop;                      /* any-slot sleeper: leave (atomic) */
    uint32_t any_wakes;                 /* any-slot sleeper: wake-ups seen */
    int64_t cpu_ns[MAX_PROCS];          /* idle: CPU used across the window */
    int64_t lat_us[MAX_ROUNDS * MAX_SLEEPERS];
};

static struct shared *sh;
static const char *bell_file;
static char err[512];

static void sleep_us(int64_t us)
{
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static uint32_t load32(uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void inc32(uint32_t *p) { __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST); }

/* Waits until *p reaches want; 0, or -1 after timeout_ms. */
static int await32(uint32_t *p, uint32_t want, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    while (load32(p) < want) {
        if (mono_ms() > end)
            return -1;
        sleep_us(200);
    }
    return 0;
}

/* ---- sleepers ---------------------------------------------------------- */

enum mode { MODE_LATENCY, MODE_IDLE, MODE_POLL };

struct sleeper {
    parley_bell *b;
    int index;                          /* 0..S-1, column in lat_us */
    int sleepers, rounds;
    enum mode mode;
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    if (s->mode == MODE_LATENCY) {
        for (int r = 0; r < s->rounds; r++) {
            uint32_t v = bell_peek(s->b, CHANNEL);
            inc32(&sh->ready[r]);
            int rc = bell_wait(s->b, CHANNEL, v, 10000);
            int64_t now = mono_us();
            if (rc != 1)
                inc32(&sh->bad);
            sh->lat_us[(size_t)r * (size_t)s->sleepers + (size_t)s->index] =
                now - __atomic_load_n(&sh->ring_us[r], __ATOMIC_ACQUIRE);
            inc32(&sh->done[r]);
        }
    } else if (s->mode == MODE_IDLE) {
        uint32_t v = bell_peek(s->b, CHANNEL);
        inc32(&sh->ready[0]);
        while (bell_wait(s->b, CHANNEL, v, 30000) != 1)
            ;                           /* timed out or interrupted: sleep again */
    } else {                            /* the fixed sleep-poll we do not do */
        uint32_t v = bell_peek(s->b, CHANNEL);
        inc32(&sh->ready[0]);
        while (bell_peek(s->b, CHANNEL) == v)
            sleep_us(50000);
    }
    return NULL;
}

/* One sleeper process: threads first..first+count-1. Never returns. */
static void sleeper_process(int proc, int first, int count, int sleepers, int rounds,
                            enum mode mode, int idle_ms)
{
    parley_bell *b = bell_open(bell_file, err, sizeof err);
    if (!b) {
        fprintf(stderr, "bench_bell: %s\n", err);
        _exit(2);
    }
    struct sleeper *s = calloc((size_t)count, sizeof *s);
    pthread_t *t = calloc((size_t)count, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    int started = 0;
    for (int i = 0; s && t && i < count; i++, started++) {
        s[i] = (struct sleeper){ b, first + i, sleepers, rounds, mode };
        if (pthread_create(&t[i], &attr, sleeper_main, &s[i]) != 0) {
            fprintf(stderr, "bench_bell: pthread_create failed at %d\n", first + i);
            break;
        }
    }
    if (mode != MODE_LATENCY) {
        /* wait for every sleeper of every process, let them settle, measure */
        await32(&sh->ready[0], (uint32_t)sleepers, 20000);
        sleep_us(100000);
        struct timespec c0, c1;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        sleep_us((int64_t)idle_ms * 1000);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        sh->cpu_ns[proc] = (int64_t)(c1.tv_sec - c0.tv_sec) * 1000000000 +
                           (c1.tv_nsec - c0.tv_nsec);
        inc32(&sh->measured);
    }
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    bell_close(b);
    _exit(started == count ? 0 : 1);
}

/* Forks procs processes holding sleepers threads between them. */
static int spawn(pid_t *pids, int procs, int sleepers, int rounds, enum mode mode, int idle_ms)
{
    int first = 0;
    for (int p = 0; p < procs; p++) {
        int count = sleepers / procs + (p < sleepers % procs);
        fflush(stdout);
        pids[p] = fork();
        if (pids[p] < 0) {
            perror("fork");
            return -1;
        }
        if (pids[p] == 0)
            sleeper_process(p, first, count, sleepers, rounds, mode, idle_ms);
        first += count;
    }
    return 0;
}

static int reap(pid_t *pids, int procs)
{
    int failed = 0;
    for (int p = 0; p < procs; p++) {
        int status = 0;
        if (pids[p] > 0 && (waitpid(pids[p], &status, 0) != pids[p] ||
                            !WIFEXITED(status) || WEXITSTATUS(status) != 0))
            failed++;
    }
    return failed ? -1 : 0;
}

/* ---- latency ----------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(const int64_t *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

static int latency(parley_bell *b, int sleepers, int procs, int rounds, int settle_ms)
{
    pid_t pids[MAX_PROCS];
    memset(sh, 0, sizeof *sh);
    if (spawn(pids, procs, sleepers, rounds, MODE_LATENCY, 0) < 0)
        return -1;
    int ok = 1;
    int64_t t0 = mono_ms();
    for (int r = 0; r < rounds && ok; r++) {
        if (await32(&sh->ready[r], (uint32_t)sleepers, 20000) < 0) {
            fprintf(stderr, "bench_bell: sleepers not ready in round %d\n", r);
            ok = 0;
            break;
        }
        sleep_us((int64_t)settle_ms * 1000);
        int64_t before = mono_us();
        __atomic_store_n(&sh->ring_us[r], before, __ATOMIC_RELEASE);
        bell_ring(b, CHANNEL);
        sh->ring_call_us[r] = mono_us() - before;
        if (await32(&sh->done[r], (uint32_t)sleepers, 20000) < 0) {
            fprintf(stderr, "bench_bell: sleepers did not wake in round %d\n", r);
            ok = 0;
        }
    }
    if (!ok) {
        for (int p = 0; p < procs; p++)
            kill(pids[p], SIGKILL);
        reap(pids, procs);
        return -1;
    }
    int64_t el = mono_ms() - t0;
    if (reap(pids, procs) < 0)
        return -1;
    size_t n = (size_t)rounds * (size_t)sleepers;
    qsort(sh->lat_us, n, sizeof sh->lat_us[0], cmp_i64);
    qsort(sh->ring_call_us, (size_t)rounds, sizeof sh->ring_call_us[0], cmp_i64);
    printf("| %4d | %d | %3d | %6zu | %7.3f | %7.3f | %7.3f | %7.3f | %u | %4.1f |\n",
           sleepers, procs, rounds, n, pct(sh->lat_us, n, 0.50) / 1000.0,
           pct(sh->lat_us, n, 0.99) / 1000.0, sh->lat_us[n - 1] / 1000.0,
           pct(sh->ring_call_us, (size_t)rounds, 0.50) / 1000.0,
           load32(&sh->bad), el / 1000.0);
    fflush(stdout);
    return 0;
}

/* ---- idle cost --------------------------------------------------------- */

static int idle(parley_bell *b, int sleepers, int procs, enum mode mode, int idle_ms,
                const char *label)
{
    pid_t pids[MAX_PROCS];
    memset(sh, 0, sizeof *sh);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_CHILDREN, &ru0);
    if (spawn(pids, procs, sleepers, 1, mode, idle_ms) < 0)
        return -1;
    int rc = await32(&sh->measured, (uint32_t)procs, idle_ms + 30000);
    bell_ring(b, CHANNEL);              /* release them all */
    if (reap(pids, procs) < 0 || rc < 0) {
        fprintf(stderr, "bench_bell: idle run failed\n");
        return -1;
    }
    getrusage(RUSAGE_CHILDREN, &ru1);
    int64_t cpu = 0;
    for (int p = 0; p < procs; p++)
        cpu += sh->cpu_ns[p];
    double life = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec +
                           ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000.0 +
                  (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec +
                           ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1000.0;
    printf("| %-28s | %4d | %d | %4.1f | %8.3f | %6.3f %% | %7.1f |\n", label, sleepers, procs,
           idle_ms / 1000.0, cpu / 1e6, cpu / 1e7 / (idle_ms / 1000.0), life);
    fflush(stdout);
    return 0;
}

/* ---- ring cost ---------------------------------------------------------- */

static void ring_cost(parley_bell *b)
{
    const int n = 5000000;
    int64_t t0 = mono_us();
    for (int i = 0; i < n; i++)
        bell_ring(b, "conv:nobody-listens");
    int64_t t1 = mono_us();
    uint32_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += bell_peek(b, "conv:nobody-listens");
    int64_t t2 = mono_us();
    printf("| bell_ring, no sleeper on the slot | %.1f ns |\n", (double)(t1 - t0) * 1000.0 / n);
    printf("| bell_peek                          | %.1f ns |\n", (double)(t2 - t1) * 1000.0 / n);
    if (sum == 1)                       /* keep the loop */
        printf("\n");
}

/* The cost of bell_ring() while another process follows every channel by
 * sleeping in bell_wait_any() (as the WebSocket bridge does): each ring
 * then also makes a FUTEX_WAKE on the shared "any" slot. */
static void ring_cost_any_sleeper(parley_bell *b)
{
    const int n = 200000;
    sh->stop = 0;
    sh->any_wakes = 0;
    sh->ready[0] = 0;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        parley_bell *cb = bell_open(bell_file, err, sizeof err);
        if (!cb)
            _exit(2);
        inc32(&sh->ready[0]);
        while (!load32(&sh->stop)) {
            uint32_t v = bell_peek_any(cb);
            if (!load32(&sh->stop) && bell_wait_any(cb, v, 1000) == 1)
                inc32(&sh->any_wakes);
        }
        bell_close(cb);
        _exit(0);
    }
    await32(&sh->ready[0], 1, 5000);
    sleep_us(50000);
    int64_t t0 = mono_us();
    for (int i = 0; i < n; i++)
        bell_ring(b, "conv:nobody-listens");
    int64_t t1 = mono_us();
    __atomic_store_n(&sh->stop, 1, __ATOMIC_SEQ_CST);
    bell_ring(b, "conv:nobody-listens");
    waitpid(pid, NULL, 0);
    printf("| bell_ring, no sleeper on the slot, a process in bell_wait_any | %.1f ns "
           "(%u wake-ups of that process for %d rings) |\n",
           (double)(t1 - t0) * 1000.0 / n, load32(&sh->any_wakes), n);
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    if (scale <= 0 || scale > 2)
        scale = 1.0;
    char dir[] = "/tmp/parley-bench-bell-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    static char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/db-bell", dir);
    bell_file = path;
    parley_bell *b = bell_open(path, err, sizeof err);
    if (!b) {
        fprintf(stderr, "bench_bell: %s\n", err);
        return 1;
    }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    int rc = 0;
    printf("### Wake latency (ring -> sleeper running), ms\n\n");
    printf("| sleepers | procs | rounds | samples | p50 | p99 | max | bell_ring call, p50 "
           "| bad waits | run s |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
    struct { int sleepers, procs, rounds, settle_ms; } cases[] = {
        { 1, 1, 200, 5 }, { 100, 4, 60, 20 }, { 1000, 4, 20, 50 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rounds = (int)(cases[i].rounds * scale);
        if (rounds < 3)
            rounds = 3;
        if (latency(b, cases[i].sleepers, cases[i].procs, rounds, cases[i].settle_ms) < 0)
            rc = 1;
    }
    printf("\n### Idle sleepers' CPU over the window (all threads of all sleeper processes)\n\n");
    printf("| how they wait | sleepers | procs | window s | CPU ms in window | of one core | "
           "CPU ms whole life |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    fflush(stdout);
    if (idle(b, 1000, 4, MODE_IDLE, 2000, "bell_wait (futex)") < 0)
        rc = 1;
    if (idle(b, 1000, 4, MODE_POLL, 2000, "sleep-poll every 50 ms (ref)") < 0)
        rc = 1;
    printf("\n### Cost of the fast paths\n\n| operation | per call |\n|---|---:|\n");
    ring_cost(b);
    ring_cost_any_sleeper(b);
    bell_close(b);
    unlink(path);
    rmdir(dir);
    return rc;
}
