/* pg-evlog.c — event-log append on PostgreSQL: Parley's evlog against a bare
 * libpq loop doing the same work on the same tables; SQLite beside it.
 *
 *   build/bench/pg-evlog URI [seconds-per-run] [repetitions]   (default 2 3)
 *
 * URI: a PostgreSQL database on 127.0.0.1 that may be written (bench/pg-evlog.sh
 * starts a private one).
 *
 * W writer processes (1, then 4), each with its own connection and its own
 * channels, append "token" events for a fixed time; appends/s is the sum.
 * Two shapes, as Parley writes in real generations:
 *
 *   1/tx    one append per transaction: evlog_append (the runner's
 *           evlog_writer in `parley ask` and the bridge's threads);
 *   8/tx    eight appends, one to each of 8 channels, in one transaction:
 *           the generation loop's flush (genloop.c flush_dirty: db_begin,
 *           runner_gen_flush_tx = evlog_append_tx per dirty stream,
 *           db_commit) with 8 streams streaming.
 *
 * Modes:
 *   parley  db_open + evlog_append / db_begin, evlog_append_tx x8, db_commit
 *           (each append one statement, prepared once per connection by
 *           db_pg_exec: a WITH that bumps the channel's row of
 *           event_channels, inserts the event with that seq and calls
 *           pg_notify);
 *   floor   the same work with minimal code: one PGconn, the same single
 *           statement prepared once (PQprepare) and run with
 *           PQexecPrepared between BEGIN and COMMIT, data as binary bytea;
 *   floor-3-statements  the same effect as three prepared statements per
 *           append (bump RETURNING the seq, INSERT, SELECT pg_notify: three
 *           round trips; Parley's append before it became one statement);
 *   sqlite  evlog_append / evlog_append_tx on a fresh SQLite file (db_open:
 *           WAL, synchronous=NORMAL), same shapes, for comparison.
 *
 * Besides appends/s (which a busy machine lowers), each run measures the CPU
 * time per append of the writers and of their PostgreSQL backends
 * (/proc/PID/schedstat; the server runs on this machine): floor / parley of
 * that is the cost ratio whatever else runs.
 *
 * Every run is checked: the writers' counts equal the rows, each channel's
 * seqs dense (max(seq) = count). Repetitions rotate the modes' order; the
 * best run of each mode and the median of the per-repetition ratios
 * parley/floor are printed. Markdown for docs/PERFORMANCE.md.
 */
#include "db_sqlite.h"
#include "evlog.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITERS 4
#define BATCH 8
#define MAX_REPS 10

enum mode { M_PARLEY, M_FLOOR, M_THREE, M_SQLITE, M_COUNT };
static const char *const mode_name[M_COUNT] = { "parley", "floor", "floor-3-statements", "sqlite" };

/* The floor's append: the statement core/storage/pg/evlog.c runs. */
static const char SQL_ONE[] =
    "WITH b AS (INSERT INTO event_channels(channel, last_seq) VALUES ($1, 1) "
    "           ON CONFLICT (channel) DO UPDATE SET last_seq = event_channels.last_seq + 1 "
    "           RETURNING last_seq), "
    "     i AS (INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "           SELECT $1, b.last_seq, $2, $3, $4, $5 FROM b RETURNING seq) "
    "SELECT i.seq, pg_notify('parley_bell', $1) FROM i";

static const char SQL_BUMP[] =
    "INSERT INTO event_channels(channel, last_seq) VALUES ($1, 1) "
    "ON CONFLICT (channel) DO UPDATE SET last_seq = event_channels.last_seq + 1 "
    "RETURNING last_seq";
static const char SQL_INSERT[] =
    "INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)";
static const char SQL_NOTIFY[] = "SELECT pg_notify('parley_bell', $1)";

struct shared {
    uint32_t ready;
    int64_t start_us, end_us;
    int64_t count[MAX_WRITERS];
    int64_t errors[MAX_WRITERS];
    int64_t cpu_ns[MAX_WRITERS];        /* CPU the writer and its backend used in the window */
};

static struct shared *sh;
static const char *pg_uri;
static long parent_pid;          /* in channel names: runs of two benches do not meet */
static char tmpdir[] = "/tmp/parley-bench-pgevlog-XXXXXX";
static const char TOKEN[] = "hello world ";

static void sleep_us(int64_t us)
{
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* CPU time a task has run, in ns (/proc/PID/schedstat's first field;
 * pid 0: this process). 0 when it cannot be read. */
static int64_t cpu_ns(int pid)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/schedstat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/schedstat");
    FILE *f = fopen(path, "r");
    long long ns = 0;
    if (f) {
        if (fscanf(f, "%lld", &ns) != 1)
            ns = 0;
        fclose(f);
    }
    return ns;
}

/* CPU of this writer plus its server backend (backend 0: none, SQLite). */
static int64_t cpu_both(int backend)
{
    return cpu_ns(0) + (backend > 0 ? cpu_ns(backend) : 0);
}

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

static void channel_name(char *buf, size_t len, int run, int w, int k)
{
    snprintf(buf, len, "bench:r%d-%ld:w%d:c%d", run, parent_pid, w, k);
}

/* Parley's path (PostgreSQL or SQLite, by target). */
static void run_parley(const char *target, int run, int w, int batch)
{
    char err[512], ch[BATCH][64];
    parley_db *db = db_open(target, err, sizeof err);
    if (!db) {
        fprintf(stderr, "pg-evlog: %s\n", err);
        _exit(2);
    }
    for (int k = 0; k < batch; k++)
        channel_name(ch[k], sizeof ch[k], run, w, k);
    int backend = db_pg_conn(db) ? PQbackendPID(db_pg_conn(db)) : 0;
    int64_t end = ready_and_wait(), n = 0, errors = 0, cpu0 = cpu_both(backend);
    while (mono_us() < end) {
        if (batch == 1) {
            if (evlog_append(db, NULL, ch[0], 1, "token", TOKEN, sizeof TOKEN - 1) > 0)
                n++;
            else
                errors++;
            continue;
        }
        int ok = db_begin(db) == 0;
        for (int k = 0; ok && k < batch; k++)
            ok = evlog_append_tx(db, ch[k], 1, "token", TOKEN, sizeof TOKEN - 1) > 0;
        if (ok && db_commit(db) == 0) {
            n += batch;
        } else {
            db_rollback(db);
            errors++;
        }
    }
    sh->cpu_ns[w] = cpu_both(backend) - cpu0;
    sh->count[w] = n;
    sh->errors[w] = errors;
    db_close(db);
    _exit(0);
}

static int cmd_ok(PGresult *r)
{
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "pg-evlog: floor: %s", PQresultErrorMessage(r));
    return ok;
}

/* The floor: the same work on a bare connection, every statement prepared
 * once: one statement per append (one 1), or three (one 0). */
static void run_floor(int run, int w, int batch, int one)
{
    char ch[BATCH][64];
    PGconn *c = PQconnectdb(pg_uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg-evlog: floor: %s", PQerrorMessage(c));
        _exit(2);
    }
    PGresult *r;
    int ok = 1;
    ok &= cmd_ok(r = PQprepare(c, "one", SQL_ONE, 5, NULL));
    PQclear(r);
    ok &= cmd_ok(r = PQprepare(c, "bump", SQL_BUMP, 1, NULL));
    PQclear(r);
    ok &= cmd_ok(r = PQprepare(c, "ins", SQL_INSERT, 6, NULL));
    PQclear(r);
    ok &= cmd_ok(r = PQprepare(c, "ntf", SQL_NOTIFY, 1, NULL));
    PQclear(r);
    if (!ok)
        _exit(2);
    for (int k = 0; k < batch; k++)
        channel_name(ch[k], sizeof ch[k], run, w, k);
    int backend = PQbackendPID(c);
    int64_t end = ready_and_wait(), n = 0, errors = 0, cpu0 = cpu_both(backend);
    while (mono_us() < end) {
        ok = cmd_ok(r = PQexec(c, "BEGIN"));
        PQclear(r);
        for (int k = 0; ok && k < batch; k++) {
            char now[24];
            snprintf(now, sizeof now, "%" PRId64, now_ms());
            if (one) {
                const char *p5[5] = { ch[k], "1", "token", TOKEN, now };
                const int len5[5] = { 0, 0, 0, (int)sizeof TOKEN - 1, 0 };
                const int fmt5[5] = { 0, 0, 0, 1, 0 };
                r = PQexecPrepared(c, "one", 5, p5, len5, fmt5, 0);
                ok = cmd_ok(r) && PQntuples(r) == 1;
                PQclear(r);
                continue;
            }
            const char *p1[1] = { ch[k] };
            r = PQexecPrepared(c, "bump", 1, p1, NULL, NULL, 0);
            ok = cmd_ok(r) && PQntuples(r) == 1;
            char seq[24];
            snprintf(seq, sizeof seq, "%s", ok ? PQgetvalue(r, 0, 0) : "0");
            PQclear(r);
            if (!ok)
                break;
            const char *p6[6] = { ch[k], seq, "1", "token", TOKEN, now };
            const int len6[6] = { 0, 0, 0, 0, (int)sizeof TOKEN - 1, 0 };
            const int fmt6[6] = { 0, 0, 0, 0, 1, 0 };
            ok = cmd_ok(r = PQexecPrepared(c, "ins", 6, p6, len6, fmt6, 0));
            PQclear(r);
            if (ok) {
                ok = cmd_ok(r = PQexecPrepared(c, "ntf", 1, p1, NULL, NULL, 0));
                PQclear(r);
            }
        }
        if (ok) {
            r = PQexec(c, "COMMIT");
            ok = cmd_ok(r) && !strcmp(PQcmdStatus(r), "COMMIT");
            PQclear(r);
        }
        if (ok) {
            n += batch;
        } else {
            PQclear(PQexec(c, "ROLLBACK"));
            errors++;
        }
    }
    sh->cpu_ns[w] = cpu_both(backend) - cpu0;
    sh->count[w] = n;
    sh->errors[w] = errors;
    PQfinish(c);
    _exit(0);
}

/* Rows of the run equal the writers' counts, seqs dense per channel. 0 / -1. */
static int verify(const char *target, int run, int writers, int batch)
{
    char err[512];
    parley_db *db = db_open(target, err, sizeof err);
    if (!db) {
        fprintf(stderr, "pg-evlog: verify: %s\n", err);
        return -1;
    }
    int bad = 0;
    for (int w = 0; w < writers; w++) {
        int64_t rows = 0;
        for (int k = 0; k < batch; k++) {
            char ch[64];
            channel_name(ch, sizeof ch, run, w, k);
            int64_t last = evlog_last_seq(db, ch);
            struct evlog_event *ev = NULL;
            int64_t cnt = 0, after = 0;
            int got;
            while ((got = evlog_read(db, ch, after, 10000, &ev)) > 0) {
                cnt += got;
                after = ev[got - 1].seq;
                evlog_free(ev, got);
            }
            if (got < 0 || last != cnt)
                bad++;
            rows += cnt;
        }
        if (rows != sh->count[w])
            bad++;
    }
    db_close(db);
    return bad ? -1 : 0;
}

/* One run; appends/s or -1; *cpu_us: CPU µs per append (writers and their
 * backends). */
static double run(enum mode m, int writers, int batch, double secs, int run_no, double *cpu_us)
{
    char path[512];
    const char *target = pg_uri;
    if (m == M_SQLITE) {
        snprintf(path, sizeof path, "%s/run%d.db", tmpdir, run_no);
        target = path;
    }
    char err[512];
    parley_db *db = db_open(target, err, sizeof err);     /* schema in place */
    if (!db) {
        fprintf(stderr, "pg-evlog: %s\n", err);
        return -1;
    }
    db_close(db);
    memset(sh, 0, sizeof *sh);
    pid_t pids[MAX_WRITERS];
    for (int w = 0; w < writers; w++) {
        fflush(stdout);
        fflush(stderr);
        pids[w] = fork();
        if (pids[w] < 0) {
            perror("fork");
            return -1;
        }
        if (pids[w] == 0) {
            if (m == M_FLOOR || m == M_THREE)
                run_floor(run_no, w, batch, m == M_FLOOR);
            run_parley(target, run_no, w, batch);
        }
    }
    int64_t deadline = mono_ms() + 15000;
    while (__atomic_load_n(&sh->ready, __ATOMIC_SEQ_CST) < (uint32_t)writers && mono_ms() < deadline)
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
    int64_t total = 0, errors = 0, cpu = 0;
    for (int w = 0; w < writers; w++) {
        total += sh->count[w];
        errors += sh->errors[w];
        cpu += sh->cpu_ns[w];
    }
    *cpu_us = total > 0 ? (double)cpu / 1000.0 / (double)total : 0;
    if (failed || errors || verify(target, run_no, writers, batch) < 0) {
        fprintf(stderr, "pg-evlog: %s x%d (%d/tx) failed: %d writers died, %lld errors, or the "
                "rows do not match the counts\n", mode_name[m], writers, batch, failed,
                (long long)errors);
        return -1;
    }
    if (m == M_SQLITE) {
        char extra[600];
        unlink(path);
        snprintf(extra, sizeof extra, "%s-wal", path);
        unlink(extra);
        snprintf(extra, sizeof extra, "%s-shm", path);
        unlink(extra);
    } else {   /* keep the tables the same size from run to run */
        PGconn *c = PQconnectdb(pg_uri);
        char pat[64];
        snprintf(pat, sizeof pat, "bench:r%d-%ld:%%", run_no, parent_pid);
        const char *p[1] = { pat };
        PQclear(PQexecParams(c, "DELETE FROM events WHERE channel LIKE $1", 1, NULL, p, NULL, NULL, 0));
        PQclear(PQexecParams(c, "DELETE FROM event_channels WHERE channel LIKE $1", 1, NULL, p,
                             NULL, NULL, 0));
        PQclear(PQexec(c, "VACUUM events, event_channels"));
        PQfinish(c);
    }
    return (double)total / secs;
}

struct series { double best[M_COUNT], eps[MAX_REPS][M_COUNT], cpu[MAX_REPS][M_COUNT]; int reps; };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_ratio(const struct series *s, enum mode a, enum mode b)
{
    double v[MAX_REPS];
    int n = 0;
    for (int r = 0; r < s->reps; r++)
        if (s->eps[r][a] > 0 && s->eps[r][b] > 0)
            v[n++] = s->eps[r][a] / s->eps[r][b];
    if (!n)
        return 0;
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Median over the repetitions of the CPU per append of mode m. */
static double median_cpu(const struct series *s, enum mode m)
{
    double v[MAX_REPS];
    int n = 0;
    for (int r = 0; r < s->reps; r++)
        if (s->cpu[r][m] > 0)
            v[n++] = s->cpu[r][m];
    if (!n)
        return 0;
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !db_pg_is_conninfo(argv[1])) {
        fprintf(stderr, "usage: pg-evlog POSTGRESQL_URI [seconds-per-run] [repetitions]\n");
        return 2;
    }
    pg_uri = argv[1];
    parent_pid = (long)getpid();
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (secs <= 0 || secs > 30)
        secs = 2.0;
    if (reps < 1 || reps > MAX_REPS)
        reps = 3;
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    const int writer_counts[] = { 1, 4 }, batches[] = { 1, BATCH };
    static struct series res[2][2];
    int rc = 0, run_no = 0;
    printf("### Event-log append on PostgreSQL vs a bare libpq loop (%.1f s per run, %d "
           "repetitions)\n\nEach run (appends/s):\n\n", secs, reps);
    for (int bi = 0; bi < 2; bi++)
        for (int wi = 0; wi < 2; wi++) {
            struct series *s = &res[bi][wi];
            s->reps = reps;
            for (int r = 0; r < reps; r++) {
                printf("- %d writer%s, %d/tx, rep %d:", writer_counts[wi],
                       writer_counts[wi] > 1 ? "s" : "", batches[bi], r + 1);
                for (int k = 0; k < M_COUNT; k++) {
                    enum mode m = (enum mode)((k + r) % M_COUNT);
                    double cpu = 0;
                    double eps = run(m, writer_counts[wi], batches[bi], secs, run_no++, &cpu);
                    s->cpu[r][m] = cpu;
                    if (eps < 0)
                        rc = 1;
                    else if (eps > s->best[m])
                        s->best[m] = eps;
                    s->eps[r][m] = eps;
                    printf(" %s %.0f (%.0f µs CPU)%s", mode_name[m], eps, cpu,
                           k + 1 < M_COUNT ? "," : "\n");
                    fflush(stdout);
                }
            }
        }
    printf("\n| writers | appends per transaction | parley appends/s | floor appends/s | "
           "parley / floor (best) | parley / floor (median) | floor-3-statements appends/s | "
           "parley / floor-3-statements (median) | SQLite evlog appends/s |\n"
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int bi = 0; bi < 2; bi++)
        for (int wi = 0; wi < 2; wi++) {
            const struct series *s = &res[bi][wi];
            double p = s->best[M_PARLEY], f = s->best[M_FLOOR];
            printf("| %d | %d | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f | %.0f |\n",
                   writer_counts[wi], batches[bi], p, f, f > 0 ? p / f : 0.0,
                   median_ratio(s, M_PARLEY, M_FLOOR), s->best[M_THREE],
                   median_ratio(s, M_PARLEY, M_THREE), s->best[M_SQLITE]);
        }
    printf("\nCPU per append (µs, median of the repetitions: the writer process plus its "
           "PostgreSQL backend, from /proc/PID/schedstat; SQLite: the writer only). Unlike "
           "appends/s, this does not depend on what else the machine runs:\n\n"
           "| writers | appends per transaction | parley | floor | floor / parley | "
           "floor-3-statements | SQLite evlog |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int bi = 0; bi < 2; bi++)
        for (int wi = 0; wi < 2; wi++) {
            const struct series *s = &res[bi][wi];
            double p = median_cpu(s, M_PARLEY), f = median_cpu(s, M_FLOOR);
            printf("| %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f |\n", writer_counts[wi],
                   batches[bi], p, f, p > 0 ? f / p : 0.0, median_cpu(s, M_THREE),
                   median_cpu(s, M_SQLITE));
        }
    rmdir(tmpdir);
    return rc;
}
