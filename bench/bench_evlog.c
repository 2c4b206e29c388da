/* bench_evlog.c — event-log append throughput against a bare SQLite loop.
 *
 *   build/bench/bench_evlog [seconds-per-run] [repetitions]   (default 2 3)
 *
 * W writer processes (1, then 4) append to the events table at once, each
 * to its own channel (one job each), for a fixed time; events/s is the sum.
 * Every run starts from a fresh database made by db_open() (schema applied,
 * WAL, synchronous=NORMAL). Three ways to write one row per transaction:
 *
 *   parley     evlog_append(db, bell, ...) — BEGIN IMMEDIATE, SELECT max(seq)+1,
 *              INSERT ... VALUES, COMMIT, then bell_ring
 *              (nobody sleeps on the bell here). No coalescing.
 *   bare       the peer: BEGIN IMMEDIATE / INSERT INTO events VALUES (...) /
 *              COMMIT, three statements prepared once, seq counted in the
 *              writer's memory, on the same kind of connection Parley uses
 *              (db_open's handle: same PRAGMAs, same busy handler), so the
 *              difference is only what evlog_append does per event.
 *   bare-own   the same loop on a connection the program opens itself with
 *              the same PRAGMAs and stock sqlite3_busy_timeout(): what a
 *              plain SQLite program gets (reference only).
 *
 * Ratio = parley / bare. Repetitions rotate the order of the modes; both the
 * ratio of the best runs and the median of the per-repetition ratios are
 * printed (the machine may be shared: noise only lowers a run, and the
 * paired ratio compares runs made seconds apart).
 *
 * Then a breakdown with one writer: bare loops whose INSERT finds seq in the
 * table as evlog_append must (INSERT ... SELECT max(seq)+1 with and without
 * RETURNING, or a SELECT max(seq) followed by a plain INSERT), to show
 * which part of evlog_append costs what.
 * Prints Markdown for docs/PERFORMANCE.md.
 */
#include "bell.h"
#include "db_sqlite.h"
#include "evlog.h"
#include "ident.h"
#include "util.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITERS 8

enum mode {
    MODE_PARLEY, MODE_BARE, MODE_BARE_OWN, MODE_COUNT,
    /* the breakdown: bare loops whose INSERT does what evlog_append does */
    MODE_SQL_EVLOG = MODE_COUNT, MODE_SQL_NORET, MODE_SQL_TWO, MODE_ALL
};
static const char *const mode_name[MODE_ALL] = {
    "parley", "bare", "bare-own", "sql-evlog", "sql-noret", "sql-two"
};

static const char SQL_INSERT[] =
    "INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "VALUES (?1, ?6, ?2, ?3, ?4, ?5)";
/* The statement core/evlog.c used when this benchmark was written. */
static const char SQL_INSERT_SELECT_RET[] =
    "INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM events WHERE channel = ?1 "
    "RETURNING seq";
static const char SQL_INSERT_SELECT[] =
    "INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5 FROM events WHERE channel = ?1";
static const char SQL_MAX[] = "SELECT coalesce(max(seq), 0) FROM events WHERE channel = ?1";

/* Shared between the parent and the writer processes. */
struct shared {
    uint32_t ready;                     /* writers set up (atomic) */
    int64_t start_us, end_us;           /* the run's window, set by the parent */
    int64_t count[MAX_WRITERS];         /* events appended in the window */
    int64_t errors[MAX_WRITERS];
};

static struct shared *sh;
static const char TOKEN[] = "hello world ";   /* a typical coalesced token */

static void sleep_us(int64_t us)
{
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Waits for the parent's start signal, then returns the end of the window. */
static int64_t ready_and_wait(void)
{
    __atomic_add_fetch(&sh->ready, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&sh->start_us, __ATOMIC_ACQUIRE) == 0)
        sleep_us(100);
    int64_t start = __atomic_load_n(&sh->start_us, __ATOMIC_ACQUIRE);
    while (mono_us() < start)
        ;
    return __atomic_load_n(&sh->end_us, __ATOMIC_ACQUIRE);
}

static void run_parley(const char *path, int w)
{
    char err[512] = "doorbell path too long", bpath[600], channel[32];
    parley_db *db = db_open(path, err, sizeof err);
    parley_bell *bell = db && ident_bell_path(path, bpath, sizeof bpath) == 0
                        ? bell_open(bpath, err, sizeof err) : NULL;
    if (!db || !bell) {
        fprintf(stderr, "bench_evlog: %s\n", err);
        _exit(2);
    }
    snprintf(channel, sizeof channel, "conv:bench-%d", w);
    int64_t end = ready_and_wait(), n = 0, errors = 0;
    while (mono_us() < end) {
        if (evlog_append(db, bell, channel, 1, "token", TOKEN, sizeof TOKEN - 1) > 0)
            n++;
        else
            errors++;
    }
    sh->count[w] = n;
    sh->errors[w] = errors;
    bell_close(bell);
    db_close(db);
    _exit(0);
}

static int step_reset(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

/* The bare loop; mode picks the connection and, for the breakdown, an
 * INSERT that finds seq in the table the way evlog_append has to. */
static void run_bare(const char *path, int w, enum mode mode)
{
    const int own = mode == MODE_BARE_OWN;
    const char *sql = mode == MODE_SQL_EVLOG ? SQL_INSERT_SELECT_RET
                    : mode == MODE_SQL_NORET ? SQL_INSERT_SELECT : SQL_INSERT;
    char err[512], channel[32];
    parley_db *db = NULL;
    sqlite3 *h = NULL;
    if (own) {
        if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
                SQLITE_OK ||
            sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                            "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;",
                         NULL, NULL, NULL) != SQLITE_OK) {
            fprintf(stderr, "bench_evlog: %s\n", h ? sqlite3_errmsg(h) : "open failed");
            _exit(2);
        }
        sqlite3_busy_timeout(h, 30000);
    } else {
        db = db_open(path, err, sizeof err);
        if (!db) {
            fprintf(stderr, "bench_evlog: %s\n", err);
            _exit(2);
        }
        h = db_handle(db);
    }
    sqlite3_stmt *begin = NULL, *ins = NULL, *commit = NULL, *max = NULL;
    if (sqlite3_prepare_v2(h, "BEGIN IMMEDIATE", -1, &begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, sql, -1, &ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, SQL_MAX, -1, &max, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(h, "COMMIT", -1, &commit, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_evlog: prepare: %s\n", sqlite3_errmsg(h));
        _exit(2);
    }
    snprintf(channel, sizeof channel, "conv:bench-%d", w);
    int64_t end = ready_and_wait(), n = 0, errors = 0, seq = 0;
    while (mono_us() < end) {
        if (step_reset(begin) < 0) {
            errors++;
            continue;
        }
        int64_t next = seq + 1;
        if (mode == MODE_SQL_TWO) {     /* read max(seq), then a plain INSERT */
            sqlite3_bind_text(max, 1, channel, -1, SQLITE_STATIC);
            next = sqlite3_step(max) == SQLITE_ROW ? sqlite3_column_int64(max, 0) + 1 : -1;
            sqlite3_reset(max);
        }
        sqlite3_bind_text(ins, 1, channel, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 2, 1);
        sqlite3_bind_text(ins, 3, "token", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, TOKEN, (int)sizeof TOKEN - 1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 5, now_ms());
        sqlite3_bind_int64(ins, 6, next);
        if (next < 0 || step_reset(ins) < 0 || step_reset(commit) < 0) {
            errors++;
            sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
            continue;
        }
        seq++;
        n++;
    }
    sh->count[w] = n;
    sh->errors[w] = errors;
    sqlite3_finalize(begin);
    sqlite3_finalize(ins);
    sqlite3_finalize(commit);
    sqlite3_finalize(max);
    if (own)
        sqlite3_close(h);
    db_close(db);
    _exit(0);
}

/* Checks that the table holds exactly what the writers counted, each
 * channel with seq 1..n. Returns 0 / -1. */
static int verify(const char *path, int writers)
{
    char err[512];
    parley_db *db = db_open(path, err, sizeof err);
    if (!db)
        return -1;
    int ok = 1;
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*), coalesce(max(seq), 0) FROM events "
                                   "WHERE channel = ?");
    for (int w = 0; st && w < writers; w++) {
        char channel[32];
        snprintf(channel, sizeof channel, "conv:bench-%d", w);
        sqlite3_reset(st);
        db_bind_text(st, 1, channel);
        if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int64(st, 0) != sh->count[w] ||
            sqlite3_column_int64(st, 1) != sh->count[w])
            ok = 0;
    }
    if (st)
        sqlite3_reset(st);
    db_close(db);
    return st && ok ? 0 : -1;
}

/* One run: fresh database, writers processes, secs seconds. Events/s or -1. */
static double run(const char *dir, enum mode mode, int writers, double secs, int seq_no)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/run%d.db", dir, seq_no);
    parley_db *db = db_open(path, err, sizeof err);    /* applies the schema */
    if (!db) {
        fprintf(stderr, "bench_evlog: %s\n", err);
        return -1;
    }
    db_close(db);
    memset(sh, 0, sizeof *sh);
    pid_t pids[MAX_WRITERS];
    for (int w = 0; w < writers; w++) {
        fflush(stdout);
        pids[w] = fork();
        if (pids[w] < 0) {
            perror("fork");
            return -1;
        }
        if (pids[w] == 0) {
            if (mode == MODE_PARLEY)
                run_parley(path, w);
            run_bare(path, w, mode);
        }
    }
    int64_t deadline = mono_ms() + 10000;
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < (uint32_t)writers &&
           mono_ms() < deadline)
        sleep_us(500);
    int64_t start = mono_us() + 20000;
    __atomic_store_n(&sh->end_us, start + (int64_t)(secs * 1e6), __ATOMIC_RELEASE);
    __atomic_store_n(&sh->start_us, start, __ATOMIC_RELEASE);
    int failed = 0;
    for (int w = 0; w < writers; w++) {
        int status = 0;
        if (waitpid(pids[w], &status, 0) != pids[w] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            failed++;
    }
    int64_t total = 0, errors = 0;
    for (int w = 0; w < writers; w++) {
        total += sh->count[w];
        errors += sh->errors[w];
    }
    if (failed || errors || verify(path, writers) < 0) {
        fprintf(stderr, "bench_evlog: %s x%d failed (%d writers died, %lld errors, "
                "or the table does not match the counts)\n",
                mode_name[mode], writers, failed, (long long)errors);
        return -1;
    }
    char extra[600];
    unlink(path);
    snprintf(extra, sizeof extra, "%s-wal", path);
    unlink(extra);
    snprintf(extra, sizeof extra, "%s-shm", path);
    unlink(extra);
    if (ident_bell_path(path, extra, sizeof extra) == 0)
        unlink(extra);
    return (double)total / secs;
}

#define MAX_REPS 10

/* Events/s of every run of a series, and the best of each mode. */
struct series_result {
    double best[MODE_ALL];
    double eps[MAX_REPS][MODE_ALL];
    int reps;
};

/* Runs every mode in modes[] reps times (rotating who goes first, so no
 * mode always runs on a warmer or quieter machine) with the given writers. */
static int series(const char *dir, const enum mode *modes, int nmodes, int writers,
                  double secs, int reps, struct series_result *res, int *seq_no)
{
    int rc = 0;
    memset(res, 0, sizeof *res);
    res->reps = reps;
    for (int r = 0; r < reps; r++) {
        printf("- %d writer%s, rep %d:", writers, writers > 1 ? "s" : "", r + 1);
        fflush(stdout);
        for (int k = 0; k < nmodes; k++) {
            enum mode m = modes[(k + r) % nmodes];
            double eps = run(dir, m, writers, secs, (*seq_no)++);
            if (eps < 0)
                rc = -1;
            else if (eps > res->best[m])
                res->best[m] = eps;
            res->eps[r][m] = eps;
            printf(" %s %.0f%s", mode_name[m], eps, k + 1 < nmodes ? "," : "\n");
            fflush(stdout);
        }
    }
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over the repetitions of eps[a] / eps[b] measured in the same
 * repetition (a paired ratio: both ran within seconds of each other). */
static double median_ratio(const struct series_result *res, enum mode a, enum mode b)
{
    double v[MAX_REPS];
    int n = 0;
    for (int r = 0; r < res->reps; r++)
        if (res->eps[r][a] > 0 && res->eps[r][b] > 0)
            v[n++] = res->eps[r][a] / res->eps[r][b];
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (secs <= 0 || secs > 30)
        secs = 2.0;
    if (reps < 1 || reps > MAX_REPS)
        reps = 3;
    char dir[] = "/tmp/parley-bench-evlog-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    const int writer_counts[] = { 1, 4 };
    static struct series_result res[2], brk;
    int rc = 0, seq_no = 0;
    const enum mode main_modes[] = { MODE_PARLEY, MODE_BARE, MODE_BARE_OWN };
    printf("### Event-log append, one event per transaction (%.1f s per run, best of %d)\n\n",
           secs, reps);
    printf("Each run (events/s):\n\n");
    for (int wi = 0; wi < 2; wi++)
        if (series(dir, main_modes, 3, writer_counts[wi], secs, reps, &res[wi], &seq_no) < 0)
            rc = 1;
    printf("\nBest of the repetitions, and the median of the per-repetition ratios:\n\n");
    printf("| writers | parley ev/s | bare ev/s | parley / bare (best) | parley / bare "
           "(median) | bare-own ev/s (stock busy_timeout) | parley / bare-own (median) |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int wi = 0; wi < 2; wi++) {
        const double *best = res[wi].best;
        double p = best[MODE_PARLEY], b = best[MODE_BARE], o = best[MODE_BARE_OWN];
        printf("| %d | %.0f | %.0f | %.1f %% | %.1f %% | %.0f | %.1f %% |\n", writer_counts[wi],
               p, b, b > 0 ? 100.0 * p / b : 0.0,
               100.0 * median_ratio(&res[wi], MODE_PARLEY, MODE_BARE), o,
               100.0 * median_ratio(&res[wi], MODE_PARLEY, MODE_BARE_OWN));
    }

    const enum mode brk_modes[] = { MODE_BARE, MODE_SQL_TWO, MODE_SQL_NORET, MODE_SQL_EVLOG,
                                    MODE_PARLEY };
    const char *const brk_what[MODE_ALL] = {
        [MODE_PARLEY] = "evlog_append() itself",
        [MODE_BARE] = "INSERT ... VALUES, seq counted in memory (the peer)",
        [MODE_SQL_TWO] = "SELECT max(seq) then INSERT ... VALUES",
        [MODE_SQL_NORET] = "INSERT ... SELECT max(seq)+1 FROM events",
        [MODE_SQL_EVLOG] = "INSERT ... SELECT max(seq)+1 FROM events RETURNING seq",
    };
    double bsecs = secs / 2;
    printf("\n### Where the time goes: 1 writer, bare loops doing what evlog_append does "
           "(%.1f s per run, best of %d)\n\n", bsecs, reps);
    if (series(dir, brk_modes, 5, 1, bsecs, reps, &brk, &seq_no) < 0)
        rc = 1;
    printf("\n| loop (BEGIN IMMEDIATE; ...; COMMIT) | best ev/s | of bare (median) |\n"
           "|---|---:|---:|\n");
    for (int k = 0; k < 5; k++) {
        enum mode m = brk_modes[k];
        printf("| %s | %.0f | %.1f %% |\n", brk_what[m], brk.best[m],
               100.0 * median_ratio(&brk, m, MODE_BARE));
    }
    rmdir(dir);
    return rc;
}
