/* test_evlog.c — event log: dense seqs (also with 4 threads appending to
 * one channel), reads after a cursor, coalescing, nested transactions,
 * compaction that keeps each channel's newest row, waits woken by the bell;
 * PostgreSQL connection strings: selection, the redacted forms, the
 * password never shown.
 *
 * The cases run on SQLite; when PARLEY_TEST_PG holds a PostgreSQL URI
 * (tests/integration/t0710-pg-evlog.sh) they
 * run again on it, with channel names and job ids of their own so a
 * database used before does not disturb them. With PARLEY_TEST_PG_SECRET_URI
 * (a URI with a password, PARLEY_TEST_PG_SECRET) and PARLEY_TEST_PG_NEWER_URI
 * (the same role on a database whose schema is newer than ours) the
 * password is looked for in every message. */
#include "th.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "bell.h"
#include "evlog.h"
#include "util.h"

#include <pthread.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dbpath[512], bellpath[512];
static const char *target;       /* what open_db opens: dbpath or the PostgreSQL URI */
static char pfx[64];             /* prefix of channel names: "" on SQLite */
static int64_t job_base;         /* job ids of this run */

/* name with this run's prefix, in buf */
#define CH(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

static parley_db *open_db(void)
{
    char err[512];
    parley_db *db = db_open(target, err, sizeof err);
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
    CH(ca, "c:a");
    CH(cb, "c:b");
    CH(codd, "c:odd");
    CHECK(db_schema_version(db) > 0);
    CHECK_INT(evlog_last_seq(db, ca), 0);
    CHECK_INT(evlog_append(db, NULL, ca, 1, "token", "he", 2), 1);
    CHECK_INT(evlog_append(db, NULL, ca, 1, "token", "llo", 3), 2);
    CHECK_INT(evlog_append(db, NULL, cb, 2, "token", "x", 1), 1);   /* per-channel seq */
    CHECK_INT(evlog_append(db, NULL, ca, 1, "done", "{}", 2), 3);
    CHECK_INT(evlog_last_seq(db, ca), 3);
    struct evlog_event *ev;
    int n = evlog_read(db, ca, 0, 100, &ev);
    REQUIRE(n == 3);
    CHECK_INT(ev[0].seq, 1);
    CHECK_STR(ev[0].data, "he");
    CHECK_STR(ev[1].data, "llo");
    CHECK_STR(ev[2].type, "done");
    CHECK_INT(ev[2].job_id, 1);
    evlog_free(ev, n);
    n = evlog_read(db, ca, 2, 100, &ev);
    CHECK_INT(n, 1);
    evlog_free(ev, n);
    n = evlog_read(db, ca, 3, 100, &ev);
    CHECK_INT(n, 0);
    evlog_free(ev, n);
    n = evlog_read(db, ca, 0, 2, &ev);     /* max respected */
    CHECK_INT(n, 2);
    evlog_free(ev, n);
    /* binary-safe text: embedded quote, backslash, newline, UTF-8 */
    const char odd[] = "caf\xc3\xa9 \"q\" \\ \n \xf0\x9f\x99\x82";
    int64_t s = evlog_append(db, NULL, codd, 0, "token", odd, sizeof odd - 1);
    CHECK(s == 1);
    n = evlog_read(db, codd, 0, 10, &ev);
    REQUIRE(n == 1);
    CHECK_INT(ev[0].data_len, sizeof odd - 1);
    CHECK(memcmp(ev[0].data, odd, sizeof odd - 1) == 0);
    CHECK_INT(ev[0].job_id, 0);
    CHECK(ev[0].created_at > 0);
    evlog_free(ev, n);
    /* bytes stay bytes: a NUL and a lone UTF-8 continuation byte */
    const char bin[] = { 'a', '\0', 'b', (char)0x80 };
    CHECK_INT(evlog_append(db, NULL, codd, 0, "token", bin, sizeof bin), 2);
    n = evlog_read(db, codd, 1, 10, &ev);
    REQUIRE(n == 1);
    CHECK_INT(ev[0].data_len, sizeof bin);
    CHECK(memcmp(ev[0].data, bin, sizeof bin) == 0);
    evlog_free(ev, n);
    db_close(db);
}

TEST(coalescing_writer)
{
    parley_db *db = open_db();
    REQUIRE(db);
    struct evlog_writer w;
    /* coalescing off: one event per token */
    CH(w0, "c:w0");
    CH(w1, "c:w1");
    evw_init(&w, db, NULL, w0, 7, 0);
    for (int i = 0; i < 5; i++)
        CHECK_INT(evw_token(&w, "t", 1), 0);
    CHECK_INT(evw_due_ms(&w), -1);
    CHECK_INT(w.events, 5);
    evw_cleanup(&w);
    /* coalescing on: a burst of tokens within the window becomes few events */
    evw_init(&w, db, NULL, w1, 7, 50);
    for (int i = 0; i < 20; i++)
        CHECK_INT(evw_token(&w, "ab", 2), 0);
    CHECK(w.events <= 2);            /* the first goes out at once, the rest wait */
    CHECK(evw_due_ms(&w) >= 0);
    sleep_ms(60);
    CHECK_INT(evw_tick(&w), 0);
    CHECK_INT(evw_due_ms(&w), -1);
    struct evlog_event *ev;
    int n = evlog_read(db, w1, 0, 100, &ev);
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
    CH(cmp, "c:cmp");
    int64_t j1 = job_base, j2 = job_base + 1;
    char sql[256];   /* the test's own numbers only */
    snprintf(sql, sizeof sql,
             "INSERT INTO jobs(id, channel, prompt_key, state, created_at, finished_at) "
             "VALUES (%lld, 'c:cmp', 'k', 'done', 0, 1000), "
             "(%lld, 'c:cmp', 'k2', 'running', 0, NULL)", (long long)j1, (long long)j2);
    REQUIRE(db_exec(db, sql) == 0);
    for (int i = 0; i < 5; i++)
        evlog_append(db, NULL, cmp, j1, "token", "x", 1);
    evlog_append(db, NULL, cmp, j1, "done", "{}", 2);
    int64_t last = evlog_last_seq(db, cmp);
    CHECK_INT(last, 6);
    /* not yet past the grace period: nothing goes */
    CHECK_INT(evlog_compact(db, 10000, 5000), 0);
    CHECK_INT(evlog_compact(db, 1000, now_ms()), 5);
    CHECK_INT(evlog_last_seq(db, cmp), 6);
    CHECK_INT(evlog_append(db, NULL, cmp, j2, "token", "y", 1), 7);   /* seq never restarts */
    /* the old "done" is no longer the newest row: it goes; the running job's stays */
    CHECK_INT(evlog_compact(db, 1000, now_ms()), 1);
    struct evlog_event *ev;
    int n = evlog_read(db, cmp, 0, 10, &ev);
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
    CH(wake, "c:wake");
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(150);
        parley_db *cdb = open_db();
        parley_bell *cb = bell_open(bellpath, err, sizeof err);
        int ok = cdb && cb && evlog_append(cdb, cb, wake, 0, "token", "hi", 2) > 0;
        db_close(cdb);
        bell_close(cb);
        _exit(ok ? 0 : 1);
    }
    int64_t t0 = mono_ms();
    struct evlog_event *ev;
    int n = evlog_wait(db, bell, wake, 0, 10, 5000, NULL, &ev);
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
    n = evlog_wait(db, bell, wake, 1, 10, 200, NULL, &ev);
    CHECK_INT(n, 0);
    CHECK(mono_ms() - t0 >= 190);
    /* stop flag ends a wait */
    volatile int stop = 1;
    CHECK_INT(evlog_wait(db, bell, wake, 1, 10, 5000, &stop, &ev), -1);
    db_close(db);
    bell_close(bell);
}

/* Transactions nest as savepoints: an inner rollback undoes its own append
 * (and the seq it took), the outer transaction goes on, seqs stay dense. */
TEST(nested_rollback_keeps_seqs_dense)
{
    parley_db *db = open_db();
    REQUIRE(db);
    CH(nest, "c:nest");
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(evlog_append_tx(db, nest, 0, "token", "a", 1), 1);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(evlog_append_tx(db, nest, 0, "token", "undone", 6), 2);
    CHECK_INT(db_rollback(db), 0);
    CHECK_INT(evlog_append_tx(db, nest, 0, "token", "b", 1), 2);
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(evlog_append_tx(db, nest, 0, "token", "c", 1), 3);
    CHECK_INT(db_commit(db), 0);
    CHECK_INT(db_commit(db), 0);
    struct evlog_event *ev;
    int n = evlog_read(db, nest, 0, 10, &ev);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(ev[0].data, "a");
        CHECK_STR(ev[1].data, "b");
        CHECK_STR(ev[2].data, "c");
        CHECK_INT(ev[2].seq, 3);
    }
    evlog_free(ev, n);
    /* an outer rollback undoes everything */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(evlog_append_tx(db, nest, 0, "token", "x", 1), 4);
    CHECK_INT(db_rollback(db), 0);
    CHECK_INT(evlog_last_seq(db, nest), 3);
    CHECK_INT(evlog_append(db, NULL, nest, 0, "token", "d", 1), 4);
    db_close(db);
}

#define CONC_THREADS 4
#define CONC_EACH 100
struct conc_arg { const char *channel; int64_t seqs[CONC_EACH]; int ok; };

static void *conc_writer(void *p)
{
    struct conc_arg *a = p;
    parley_db *db = open_db();
    if (!db)
        return NULL;
    a->ok = 1;
    for (int i = 0; i < CONC_EACH; i++) {
        char text[32];
        int len = snprintf(text, sizeof text, "%d", i);
        a->seqs[i] = evlog_append(db, NULL, a->channel, 0, "token", text, (size_t)len);
        if (a->seqs[i] <= 0)
            a->ok = 0;
    }
    db_close(db);
    return NULL;
}

/* 4 threads, a connection each, appending to one channel at once: seqs
 * 1..N, none missing, none twice, each writer's increasing. */
TEST(concurrent_appends_dense)
{
    CH(conc, "c:conc");
    struct conc_arg args[CONC_THREADS];
    pthread_t th[CONC_THREADS];
    for (int t = 0; t < CONC_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].channel = conc;
        REQUIRE(pthread_create(&th[t], NULL, conc_writer, &args[t]) == 0);
    }
    for (int t = 0; t < CONC_THREADS; t++)
        pthread_join(th[t], NULL);
    enum { N = CONC_THREADS * CONC_EACH };
    static int seen[N + 1];
    memset(seen, 0, sizeof seen);
    int bad = 0;
    for (int t = 0; t < CONC_THREADS; t++) {
        CHECK(args[t].ok);
        for (int i = 0; i < CONC_EACH; i++) {
            int64_t q = args[t].seqs[i];
            if (q < 1 || q > N || (i > 0 && q <= args[t].seqs[i - 1]))
                bad++;
            else
                seen[q]++;
        }
    }
    CHECK_INT(bad, 0);
    int missing = 0, twice = 0;
    for (int q = 1; q <= N; q++) {
        missing += seen[q] == 0;
        twice += seen[q] > 1;
    }
    CHECK_INT(missing, 0);
    CHECK_INT(twice, 0);
    parley_db *db = open_db();
    REQUIRE(db);
    CHECK_INT(evlog_last_seq(db, conc), N);
    struct evlog_event *ev;
    int n = evlog_read(db, conc, 0, N + 10, &ev);
    CHECK_INT(n, N);
    int gaps = 0;
    for (int i = 0; i < n; i++)
        gaps += ev[i].seq != i + 1;
    CHECK_INT(gaps, 0);
    evlog_free(ev, n);
    db_close(db);
}

static int has(const char *s, const char *needle) { return s && strstr(s, needle) != NULL; }

/* No server needed: which strings select PostgreSQL, the redacted forms,
 * and a failed connection's message without the password (port 1 of
 * 127.0.0.1 refuses at once). */
TEST(pg_conninfo_and_redaction)
{
    CHECK_INT(db_pg_is_conninfo("postgresql://u@h/d"), 1);
    CHECK_INT(db_pg_is_conninfo("postgres://h"), 1);
    CHECK_INT(db_pg_is_conninfo("host=127.0.0.1 dbname=x"), 1);
    CHECK_INT(db_pg_is_conninfo(" dbname = x"), 1);
    CHECK_INT(db_pg_is_conninfo("/var/lib/parley/parley.db"), 0);
    CHECK_INT(db_pg_is_conninfo("parley.db"), 0);
    CHECK_INT(db_pg_is_conninfo("mode=ro.db"), 0);     /* not a libpq keyword */
    CHECK_INT(db_pg_is_conninfo("postgresql.db"), 0);

    struct { const char *in, *out, *secret; } red[] = {
        { "postgresql://bob:hunter2@db.example:5433/parley?sslmode=require",
          "postgresql://bob:***@db.example:5433/parley?sslmode=require", "hunter2" },
        { "postgres://bob@h/d?password=pw1&sslmode=disable",
          "postgres://bob@h/d?password=***&sslmode=disable", "pw1" },
        { "postgresql://h/d", "postgresql://h/d", NULL },
        { "host=h password=s3cr3t dbname=d", "host=h password=*** dbname=d", "s3cr3t" },
        { "host=h password = 'it\\'s x' user=u", "host=h password = *** user=u", "it\\'s x" },
    };
    for (size_t i = 0; i < sizeof red / sizeof red[0]; i++) {
        char *secret = NULL;
        char *r = db_pg_redact(red[i].in, &secret);
        CHECK_STR(r, red[i].out);
        if (red[i].secret)
            CHECK_STR(secret, red[i].secret);
        free(r);
        free(secret);
    }

    const char *uris[] = { "postgresql://parley:topsecret@127.0.0.1:1/x",
                           "host=127.0.0.1 port=1 password='top secret' dbname=x" };
    for (int i = 0; i < 2; i++) {
        char err[512] = "";
        parley_db *db = db_open(uris[i], err, sizeof err);
        CHECK(db == NULL);
        db_close(db);
        printf("# nothing listening: %s\n", err);
        CHECK(has(err, "cannot connect to PostgreSQL"));
        CHECK(has(err, "***"));
        CHECK(!has(err, "topsecret") && !has(err, "top secret"));
    }
}

/* A real server, a role with a password (t0710): the password is in no
 * message — the newer schema refused, a missing database, a failing
 * statement, db_path. */
TEST(pg_password_never_shown)
{
    const char *uri = getenv("PARLEY_TEST_PG_SECRET_URI");
    const char *secret = getenv("PARLEY_TEST_PG_SECRET");
    const char *newer = getenv("PARLEY_TEST_PG_NEWER_URI");
    REQUIRE(uri && secret && *secret && newer);
    REQUIRE(has(uri, secret) && has(newer, secret));
    char err[512] = "";
    parley_db *db = db_open(uri, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    REQUIRE(db);
    CHECK(!has(db_path(db), secret) && has(db_path(db), "***"));
    CHECK_INT(db_schema_version(db), pgc_latest_version());
    CHECK_INT(evlog_append(db, NULL, "c:pw", 0, "token", "x", 1) > 0, 1);
    CHECK_INT(db_exec(db, "SELECT no_such_column FROM events"), -1);
    printf("# failed statement: %s\n", db_errmsg(db));
    CHECK(has(db_errmsg(db), "no_such_column"));
    CHECK(!has(db_errmsg(db), secret));
    CHECK_INT(db_err_kind(db), PERR_DB);
    db_close(db);

    err[0] = '\0';
    CHECK(db_open(newer, err, sizeof err) == NULL);
    printf("# newer schema: %s\n", err);
    CHECK(has(err, "database schema version 999 is newer than this Parley understands"));
    CHECK(has(err, "***") && !has(err, secret));

    char nosuch[600];
    snprintf(nosuch, sizeof nosuch, "%s_nosuch", uri);
    err[0] = '\0';
    CHECK(db_open(nosuch, err, sizeof err) == NULL);
    printf("# no such database: %s\n", err);
    CHECK(has(err, "does not exist"));
    CHECK(has(err, "***") && !has(err, secret));

}

/* PostgreSQL only: the server ends a connection's session (a restart does
 * that to every session; pg_terminate_backend here, from another
 * connection). Outside a transaction the connection is opened again: a
 * db_begin retries once, so it does not fail; a read may fail once, the
 * next one answers. A session ended inside a transaction loses that
 * transaction (its commit fails, its append is not there) and the next
 * transaction works. Fails without conn.c's revive (every later call
 * fails: "no connection to the server"). */
static int end_session_of(parley_db *victim, parley_db *killer)
{
    PGresult *r = PQexec(db_pg_conn(victim), "SELECT pg_backend_pid()");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    char pid[32] = "";
    if (ok)
        snprintf(pid, sizeof pid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!ok)
        return -1;
    const char *params[1] = { pid };
    r = PQexecParams(db_pg_conn(killer), "SELECT pg_terminate_backend($1::int)", 1, NULL, params,
                     NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    /* the backend is gone once it no longer shows in pg_stat_activity */
    for (int i = 0; ok && i < 200; i++) {
        r = PQexecParams(db_pg_conn(killer), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int",
                         1, NULL, params, NULL, NULL, 0);
        int gone = PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "0");
        PQclear(r);
        if (gone)
            return 0;
        sleep_ms(10);
    }
    return -1;
}

TEST(pg_session_ended_is_reopened)
{
    parley_db *a = open_db(), *b = open_db();
    REQUIRE(a && b);
    CH(ch, "c:revive");
    CHECK_INT(evlog_append(a, NULL, ch, 1, "token", "one", 3), 1);

    REQUIRE(end_session_of(a, b) == 0);
    CHECK_INT(db_begin(a), 0);                 /* reopened and retried */
    CHECK_INT(evlog_append_tx(a, ch, 1, "token", "two", 3), 2);
    CHECK_INT(db_commit(a), 0);

    REQUIRE(end_session_of(a, b) == 0);
    int64_t first = evlog_last_seq(a, ch);     /* may meet the ended session */
    CHECK(first == 2 || first < 0);
    CHECK_INT(evlog_last_seq(a, ch), 2);       /* reopened */

    CHECK_INT(db_begin(a), 0);
    REQUIRE(end_session_of(a, b) == 0);        /* ended inside the transaction */
    CHECK(evlog_append_tx(a, ch, 1, "token", "lost", 4) < 0);
    CHECK(db_commit(a) < 0);
    db_rollback(a);
    CHECK_INT(evlog_last_seq(b, ch), 2);       /* nothing of it was kept */
    CHECK_INT(db_begin(a), 0);
    CHECK_INT(evlog_append_tx(a, ch, 1, "token", "three", 5), 3);
    CHECK_INT(db_commit(a), 0);
    struct evlog_event *ev;
    int n = evlog_read(b, ch, 0, 10, &ev);
    REQUIRE(n == 3);
    CHECK_STR(ev[2].data, "three");
    evlog_free(ev, n);
    db_close(a);
    db_close(b);
}

static void run_cases(void)
{
    RUN(append_and_read);
    RUN(coalescing_writer);
    RUN(compaction_keeps_newest);
    RUN(wait_is_woken_across_processes);
    RUN(nested_rollback_keeps_seqs_dense);
    RUN(concurrent_appends_dense);
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/ev.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/ev.db-bell", th_tmpdir());
    target = dbpath;
    job_base = 900;
    printf("# backend: SQLite\n");
    run_cases();
    RUN(pg_conninfo_and_redaction);
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        /* names and job ids of this run only: the database may have been used before */
        target = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        job_base = now_ms() * 2;
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, channels %s*)\n", pfx);
        run_cases();
        RUN(pg_session_ended_is_reopened);
        if (getenv("PARLEY_TEST_PG_SECRET_URI"))
            RUN(pg_password_never_shown);
    }
    return th_done();
}
