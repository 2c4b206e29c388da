/* test_bell.c — the doorbell: cross-process wake-ups, timeouts, fan-out,
 * slot isolation, no syscall when nobody sleeps, file creation and refusal.
 * Every wait has a timeout, so a broken bell fails a case instead of hanging.
 * With PARLEY_TEST_PG (a PostgreSQL URI; t0760-pg-bell.sh) the cases about
 * one handle's waits (timeouts, fan-out, isolation, signals) run again on
 * the listening bell bell_open_db gives for it; its cross-node cases are in
 * test_bell_pg.c. */
#include "th.h"
#include "bell.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char err[512];
static const char *pg;           /* PARLEY_TEST_PG: the cases' bells listen there */

static const char *bell_path(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s-bell", th_tmpdir(), name);
    return p;
}

/* The bell of a case: the file <tmp>/<name>-bell, or with PARLEY_TEST_PG a
 * listening bell (bell_open_db). */
static parley_bell *open_named(const char *name)
{
    parley_bell *b = pg ? bell_open_db(pg, err, sizeof err)
                        : bell_open(bell_path(name), err, sizeof err);
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

/* Memory shared with forked children (anonymous, MAP_SHARED). */
static void *shared_alloc(size_t n)
{
    void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

/* The kernel state letter of pid ('S' = asleep), or 0. */
static char proc_state(pid_t pid)
{
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* Two channel names that land in different slots (checked by ringing). */
static void two_slots(parley_bell *b, char a[32], char c[32])
{
    snprintf(a, 32, "ticket:1");
    for (int i = 2; i < 100; i++) {
        snprintf(c, 32, "ticket:%d", i);
        uint32_t va = bell_peek(b, a), vc = bell_peek(b, c);
        bell_ring(b, a);
        if (bell_peek(b, c) == vc && bell_peek(b, a) != va)
            return;
    }
    c[0] = '\0';
}

TEST(creates_file_with_mode)
{
    const char *p = bell_path("mode");
    mode_t um = umask(0);
    umask(um);
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    struct stat st;
    REQUIRE(stat(p, &st) == 0);
    CHECK_INT(st.st_mode & 0777, 0660 & ~um);
    CHECK_INT(bell_peek(b, "ticket:1"), 0);
    bell_ring(b, "ticket:1");
    CHECK_INT(bell_peek(b, "ticket:1"), 1);
    bell_close(b);
    bell_close(NULL);
}

TEST(ring_wakes_other_process)
{
    const char *p = bell_path("fork");
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    int64_t *sh = shared_alloc(2 * sizeof *sh);   /* [0] ring time, [1] wake time */
    REQUIRE(sh != NULL);
    uint32_t seen = bell_peek(b, "conv:x");
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* its own mapping, as another FastCGI process would have */
        parley_bell *cb = bell_open(p, err, sizeof err);
        if (!cb)
            _exit(2);
        int rc = bell_wait(cb, "conv:x", seen, 5000);
        sh[1] = mono_us();
        bell_close(cb);
        _exit(rc == 1 ? 0 : 1);
    }
    /* wait until the child sleeps in the kernel, then give it a moment more */
    for (int i = 0; i < 200 && proc_state(pid) != 'S'; i++)
        sleep_ms(5);
    sleep_ms(50);
    CHECK(proc_state(pid) == 'S');
    sh[0] = mono_us();
    bell_ring(b, "conv:x");
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    int64_t lat = sh[1] - sh[0];
    printf("# cross-process wake latency: %lld us\n", (long long)lat);
    CHECK(lat >= 0 && lat < 100000);
    munmap(sh, 2 * sizeof *sh);
    bell_close(b);
}

TEST(wait_times_out)
{
    parley_bell *b = open_named("timeout");
    REQUIRE(b != NULL);
    uint32_t v = bell_peek(b, "ticket:7");
    int64_t t0 = mono_ms();
    CHECK_INT(bell_wait(b, "ticket:7", v, 200), 0);
    int64_t el = mono_ms() - t0;
    CHECK(el >= 195 && el < 2000);
    t0 = mono_ms();
    CHECK_INT(bell_wait(b, "ticket:7", v, 0), 0);       /* 0: do not sleep */
    CHECK(mono_ms() - t0 < 50);
    bell_close(b);
}

TEST(moved_before_wait_returns_at_once)
{
    parley_bell *b = open_named("moved");
    REQUIRE(b != NULL);
    uint32_t v = bell_peek(b, "ticket:8");
    bell_ring(b, "ticket:8");
    int64_t t0 = mono_ms();
    CHECK_INT(bell_wait(b, "ticket:8", v, 5000), 1);
    CHECK_INT(bell_wait(b, "ticket:8", v, -1), 1);
    CHECK(mono_ms() - t0 < 50);
    bell_close(b);
}

struct waiter {
    parley_bell *b;
    const char *channel;
    uint32_t seen;
    int timeout_ms;
    volatile int started;
    int rc;
    volatile int64_t woke_us;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->started = 1;
    w->rc = bell_wait(w->b, w->channel, w->seen, w->timeout_ms);
    w->woke_us = mono_us();
    return NULL;
}

TEST(many_waiters_all_wake)
{
    enum { N = 50 };
    parley_bell *b = open_named("many");
    REQUIRE(b != NULL);
    static struct waiter w[N];
    pthread_t t[N];
    uint32_t v = bell_peek(b, "conv:many");
    int n = 0;
    for (; n < N; n++) {
        w[n] = (struct waiter){ .b = b, .channel = "conv:many", .seen = v, .timeout_ms = 5000 };
        if (pthread_create(&t[n], NULL, waiter_main, &w[n]) != 0)
            break;
    }
    CHECK_INT(n, N);
    for (int i = 0; i < n; i++)
        while (!w[i].started)
            sleep_ms(1);
    sleep_ms(200);                      /* let them all reach the kernel */
    int64_t ring = mono_us();
    bell_ring(b, "conv:many");
    int64_t worst = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(w[i].rc, 1);
        if (w[i].woke_us - ring > worst)
            worst = w[i].woke_us - ring;
    }
    printf("# %d waiters woken, slowest after %lld us\n", n, (long long)worst);
    CHECK(worst < 1000000);
    bell_close(b);
}

TEST(other_channel_not_woken)
{
    parley_bell *b = open_named("isolate");
    REQUIRE(b != NULL);
    char a[32], c[32];
    two_slots(b, a, c);
    REQUIRE(c[0] != '\0');
    struct waiter w = { .b = b, .channel = c, .seen = bell_peek(b, c), .timeout_ms = 300 };
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, waiter_main, &w) == 0);
    sleep_ms(50);
    int64_t t0 = mono_ms();
    for (int i = 0; i < 10; i++)
        bell_ring(b, a);
    pthread_join(t, NULL);
    CHECK_INT(w.rc, 0);                 /* timed out: rings on a did not reach c */
    CHECK(mono_ms() - t0 >= 200);
    bell_close(b);
}

/* Set by a case that could not run its check here; RUN_MAY_SKIP then
 * reports "ok N - name # SKIP <why>" (TAP's skip directive) instead of a
 * plain "ok", so a check that never ran is never counted as passed. */
static const char *skip_why;
#define RUN_MAY_SKIP(fn) do { th_case_failed = 0; skip_why = NULL; fflush(stdout); fn(); \
    th_cases++; if (th_case_failed) th_failed_cases++; \
    printf("%s %d - %s%s%s\n", th_case_failed ? "not ok" : "ok", th_cases, #fn, \
           skip_why && !th_case_failed ? " # SKIP " : "", \
           skip_why && !th_case_failed ? skip_why : ""); \
    fflush(stdout); } while (0)

/* In a forked child, kills the process (SIGSYS) on any shared FUTEX_WAKE
 * (op exactly FUTEX_WAKE, i.e. without FUTEX_PRIVATE_FLAG, which is what
 * bell_ring uses and what libc's own locks never use). 0, or -1 if seccomp
 * filters are not available here. */
static int forbid_shared_futex_wake(void)
{
#if defined(__x86_64__)
    const unsigned arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    const unsigned arch = AUDIT_ARCH_AARCH64;
#else
    const unsigned arch = 0;
    return -1;
#endif
#ifdef SECCOMP_RET_KILL_PROCESS
    const unsigned kill_ret = SECCOMP_RET_KILL_PROCESS;
#else
    const unsigned kill_ret = SECCOMP_RET_KILL;
#endif
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 3),
        /* low 32 bits of args[1] (little-endian) = the futex op */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FUTEX_WAKE, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, kill_ret),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -1;
    return 0;
}

/* Forks a child that installs the filter and rings channel. Returns 0 if
 * the child rang without a shared FUTEX_WAKE, 1 if the filter killed it
 * (it made one), 77 if seccomp is unavailable, -1 on another failure. */
static int ring_in_filtered_child(const char *path, const char *channel)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        parley_bell *cb = bell_open(path, err, sizeof err);
        if (!cb)
            _exit(2);
        if (forbid_shared_futex_wake() < 0)
            _exit(77);
        bell_ring(cb, channel);
        _exit(0);                       /* _exit: no atexit hooks under the filter */
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
        return 1;
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 77))
        return WEXITSTATUS(status);
    return -1;
}

TEST(ring_without_waiters_makes_no_syscall)
{
    const char *p = bell_path("nosys");
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    uint32_t v = bell_peek(b, "conv:quiet");
    int rc = ring_in_filtered_child(p, "conv:quiet");
    if (rc == 77) {
        skip_why = "seccomp filters unavailable here, the syscall count is not observable";
        bell_close(b);
        return;
    }
    CHECK_INT(rc, 0);                   /* rang without FUTEX_WAKE */
    CHECK_INT(bell_peek(b, "conv:quiet"), v + 1);
    /* Control: with a sleeper, the same child must make the syscall (and is
     * killed for it), which shows the filter really sees bell_ring's wake. */
    struct waiter w = { .b = b, .channel = "conv:busy", .seen = bell_peek(b, "conv:busy"),
                        .timeout_ms = 5000 };
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, waiter_main, &w) == 0);
    sleep_ms(100);
    CHECK_INT(ring_in_filtered_child(p, "conv:busy"), 1);
    bell_ring(b, "conv:busy");          /* the killed child's wake never happened */
    pthread_join(t, NULL);
    CHECK_INT(w.rc, 1);
    bell_close(b);
}

/* Runs this program again ("--only-nosys": just the case above) in a child
 * where seccomp() itself fails with ENOSYS, as in a container or kernel
 * without seccomp filters. The case must then say it skipped (TAP
 * "# SKIP"), not report a plain "ok" for a check that never ran. */
TEST(no_seccomp_is_a_tap_skip)
{
    int fd[2];
    REQUIRE(pipe(fd) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f };
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
            _exit(77);
        execl("/proc/self/exe", "test_bell", "--only-nosys", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char out[4096];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(fd[0], out + n, sizeof out - 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(fd[0]);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        skip_why = "cannot install a seccomp filter to take seccomp away";
        return;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strstr(out, "\nok 1 - ring_without_waiters_makes_no_syscall # SKIP seccomp") != NULL ||
          strncmp(out, "ok 1 - ring_without_waiters_makes_no_syscall # SKIP seccomp", 59) == 0);
    if (th_case_failed)
        printf("#   its output: %s\n", out);
}

static void on_usr1(int sig) { (void)sig; }

TEST(signal_interrupts_wait)
{
    parley_bell *b = open_named("eintr");
    REQUIRE(b != NULL);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;            /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    struct waiter w = { .b = b, .channel = "conv:sig", .seen = bell_peek(b, "conv:sig"),
                        .timeout_ms = -1, .rc = 99 };
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, waiter_main, &w) == 0);
    /* a signal that lands before the thread sleeps is lost; send until done */
    for (int i = 0; i < 40 && !w.woke_us; i++) {
        sleep_ms(50);
        pthread_kill(t, SIGUSR1);
    }
    if (!w.woke_us)
        bell_ring(b, "conv:sig");      /* never leave it asleep */
    pthread_join(t, NULL);
    CHECK_INT(w.rc, -1);
    sigaction(SIGUSR1, &old, NULL);
    bell_close(b);
}

TEST(reopen_keeps_counters)
{
    const char *p = bell_path("reopen");
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    for (int i = 0; i < 5; i++)
        bell_ring(b, "conv:keep");
    parley_bell *b2 = bell_open(p, err, sizeof err);   /* a second mapping, same file */
    REQUIRE(b2 != NULL);
    CHECK_INT(bell_peek(b2, "conv:keep"), 5);
    bell_ring(b2, "conv:keep");
    CHECK_INT(bell_peek(b, "conv:keep"), 6);
    bell_close(b);
    bell_close(b2);
    b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    CHECK_INT(bell_peek(b, "conv:keep"), 6);
    bell_close(b);
}

/* A channel's slot, computed once, peeks what its name peeks: before and
 * after rings of it and of other channels, on two mappings of one file. */
TEST(peek_by_slot_is_peek_by_name)
{
    const char *p = bell_path("slot");
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    parley_bell *b2 = bell_open(p, err, sizeof err);
    REQUIRE(b2 != NULL);
    const char *names[] = { "ticket:a", "ticket:b", "poll:xyz", "conv:42", "" };
    uint32_t slots[5];
    for (int i = 0; i < 5; i++)
        slots[i] = bell_slot_of(names[i]);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 5; i++) {
            CHECK_INT(bell_peek_slot(b, slots[i]), bell_peek(b, names[i]));
            CHECK_INT(bell_peek_slot(b2, slots[i]), bell_peek(b, names[i]));
        }
        uint32_t before = bell_peek_slot(b, slots[round]);
        bell_ring(b2, names[round]);
        CHECK_INT(bell_peek_slot(b, slots[round]), before + 1);
    }
    CHECK_INT(bell_slot_of("ticket:a"), slots[0]);
    bell_close(b);
    bell_close(b2);
}

static int write_file(const char *p, const void *data, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = len ? write(fd, data, len) : 0;
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

TEST(corrupt_file_refused)
{
    char p[512];
    /* someone else's file: refused, left untouched */
    snprintf(p, sizeof p, "%s", bell_path("garbage"));
    char junk[100];
    memset(junk, 'x', sizeof junk);
    REQUIRE(write_file(p, junk, sizeof junk) == 0);
    err[0] = '\0';
    CHECK(bell_open(p, err, sizeof err) == NULL);
    printf("# %s\n", err);
    CHECK(strstr(err, "not a Parley doorbell") != NULL);
    CHECK(strstr(err, p) != NULL);
    CHECK_INT(file_size(p), 100);

    /* a doorbell from another version */
    snprintf(p, sizeof p, "%s", bell_path("version"));
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    bell_close(b);
    int fd = open(p, O_RDWR);
    REQUIRE(fd >= 0);
    uint32_t v = 999;
    CHECK(pwrite(fd, &v, sizeof v, 8) == (ssize_t)sizeof v);   /* version follows the magic */
    close(fd);
    err[0] = '\0';
    CHECK(bell_open(p, err, sizeof err) == NULL);
    printf("# %s\n", err);
    CHECK(strstr(err, "version 999") != NULL);

    /* a truncated one */
    snprintf(p, sizeof p, "%s", bell_path("short"));
    b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    bell_close(b);
    REQUIRE(truncate(p, 1000) == 0);
    err[0] = '\0';
    CHECK(bell_open(p, err, sizeof err) == NULL);
    printf("# %s\n", err);
    CHECK(strstr(err, "1000 bytes") != NULL);
    CHECK_INT(file_size(p), 1000);
}

TEST(empty_file_is_initialised)
{
    /* An empty file is a new one (say, created by a process that died before
     * initialising it): it is given a header, not refused. */
    const char *p = bell_path("empty");
    REQUIRE(write_file(p, "", 0) == 0);
    parley_bell *b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    CHECK_INT(bell_peek(b, "conv:e"), 0);
    bell_ring(b, "conv:e");
    bell_close(b);
    CHECK(file_size(p) > 1000);
    b = bell_open(p, err, sizeof err);
    REQUIRE(b != NULL);
    CHECK_INT(bell_peek(b, "conv:e"), 1);
    bell_close(b);
}

TEST(concurrent_creation)
{
    /* Processes opening a new bell at the same instant all succeed, share one
     * file, and no late initialiser wipes an early ring. */
    enum { PROCS = 8, ROUNDS = 5 };
    volatile int64_t *go = shared_alloc(sizeof *go);
    REQUIRE(go != NULL);
    for (int r = 0; r < ROUNDS; r++) {
        char p[512], name[32];
        snprintf(name, sizeof name, "race%d", r);
        snprintf(p, sizeof p, "%s", bell_path(name));
        *go = mono_us() + 50000;
        pid_t pids[PROCS];
        for (int i = 0; i < PROCS; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                while (mono_us() < *go)
                    ;
                parley_bell *cb = bell_open(p, err, sizeof err);
                if (!cb) {
                    printf("# child: %s\n", err);
                    _exit(1);
                }
                bell_ring(cb, "conv:race");
                bell_close(cb);
                _exit(0);
            }
        }
        int failed = 0;
        for (int i = 0; i < PROCS; i++) {
            int status = 0;
            if (pids[i] < 0 || waitpid(pids[i], &status, 0) != pids[i] ||
                !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                failed++;
        }
        CHECK_INT(failed, 0);
        parley_bell *b = bell_open(p, err, sizeof err);
        REQUIRE(b != NULL);
        CHECK_INT(bell_peek(b, "conv:race"), PROCS);
        bell_close(b);
    }
    munmap((void *)go, sizeof *go);
}

TEST(bad_paths_are_clear)
{
    err[0] = '\0';
    CHECK(bell_open("/nonexistent-dir/x/db-bell", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent-dir/x/db-bell") != NULL);
    err[0] = '\0';
    CHECK(bell_open("", err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--only-nosys") == 0) {
        RUN_MAY_SKIP(ring_without_waiters_makes_no_syscall);
        return th_done();
    }
    RUN(creates_file_with_mode);
    RUN(ring_wakes_other_process);
    RUN(wait_times_out);
    RUN(moved_before_wait_returns_at_once);
    RUN(many_waiters_all_wake);
    RUN(other_channel_not_woken);
    RUN_MAY_SKIP(ring_without_waiters_makes_no_syscall);
    RUN_MAY_SKIP(no_seccomp_is_a_tap_skip);
    RUN(signal_interrupts_wait);
    RUN(reopen_keeps_counters);
    RUN(peek_by_slot_is_peek_by_name);
    RUN(corrupt_file_refused);
    RUN(empty_file_is_initialised);
    RUN(concurrent_creation);
    RUN(bad_paths_are_clear);
    pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        printf("# backend: PostgreSQL (PARLEY_TEST_PG: the listening bell)\n");
        RUN(wait_times_out);
        RUN(moved_before_wait_returns_at_once);
        RUN(many_waiters_all_wake);
        RUN(other_channel_not_woken);
        RUN(signal_interrupts_wait);
    }
    return th_done();
}
