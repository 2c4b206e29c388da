/* test_bell_pg.c — the doorbell across nodes (issue 10): bell_open_db picks
 * the file bell for a path and the listening bell for a PostgreSQL string;
 * the listening bell's counters (bell_open_local, bell_open_handle) keep
 * bell.h's semantics.
 *
 * With PARLEY_TEST_PG (a PostgreSQL URI; tests/integration/t0760-pg-bell.sh,
 *), against that server:
 *   - a commit on another connection (this process, no local ring; and
 *     another process) wakes a follower sleeping in bell_wait / bell_wait_any
 *     on the listening bell, and the follower then reads the event;
 *   - a rolled-back append wakes nobody (strictly: the slot does not move
 *     and the sleeper times out), a committed one right after does;
 *   - the listener's connection killed (pg_terminate_backend of the pid
 *     found by application_name) while new connections are refused, an
 *     append committed during the outage: once connections are allowed the
 *     listener is back (a new pid), the follower is woken and reads that
 *     event, and a later append is delivered by NOTIFY again;
 *   - bell_wake_all stops and joins the listener (its backend leaves
 *     pg_stat_activity), quickly; a second handle shares the listener and
 *     its wake_all does not stop it; closed after the opener's handle, it
 *     still gets the rings, and its close stops the listener.
 * Channel names carry this run's pid so a used database does not disturb
 * them. Every wait has a timeout: a lost wake-up fails, never hangs. */
#include "th.h"
#include "bell.h"
#include "db.h"
#include "evlog.h"
#include "storage/pg/notify.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *pg;           /* PARLEY_TEST_PG */
static char pfx[48];             /* "b<pid>:" */

#define CH(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0)
        ;
}

struct follower {
    pthread_t th;
    parley_bell *b;
    const char *channel;       /* NULL: the any slot */
    uint32_t seen;
    int timeout_ms;
    int rc;
    int64_t woke_us;           /* mono_us() when the wait returned */
    int started;
};

static void *follower_main(void *arg)
{
    struct follower *f = arg;
    __atomic_store_n(&f->started, 1, __ATOMIC_SEQ_CST);
    f->rc = f->channel ? bell_wait(f->b, f->channel, f->seen, f->timeout_ms)
                       : bell_wait_any(f->b, f->seen, f->timeout_ms);
    __atomic_store_n(&f->woke_us, mono_us(), __ATOMIC_SEQ_CST);
    return NULL;
}

/* Starts a follower that peeked now; returns once it is (nearly) asleep. */
static void follow(struct follower *f, parley_bell *b, const char *channel, int timeout_ms)
{
    memset(f, 0, sizeof *f);
    f->b = b;
    f->channel = channel;
    f->timeout_ms = timeout_ms;
    f->seen = channel ? bell_peek(b, channel) : bell_peek_any(b);
    pthread_create(&f->th, NULL, follower_main, f);
    while (!__atomic_load_n(&f->started, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    sleep_ms(30);
}

static parley_db *open_pg(void)
{
    char err[512];
    parley_db *db = db_open(pg, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    return db;
}

static parley_bell *open_pg_bell(void)
{
    char err[512];
    parley_bell *b = bell_open_db(pg, err, sizeof err);
    if (!b)
        printf("# bell_open_db: %s\n", err);
    return b;
}

/* One text value of a query run on db (constant SQL, params as text), in
 * out; 0, or -1. */
static int query1(parley_db *db, const char *sql, int n, const char *const *params,
                  char *out, size_t outlen)
{
    PGresult *r = PQexecParams(db_pg_conn(db), sql, n, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        str_copy(out, outlen, PQgetvalue(r, 0, 0));
    else
        printf("# query failed: %s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

/* The backend pids of this process's listeners (application_name
 * parley-bell/<pid>), as "pid,pid" in out ("" when none). 0 / -1. */
static int listener_pids(parley_db *db, char *out, size_t outlen)
{
    char app[64];
    snprintf(app, sizeof app, PGN_APPNAME_PREFIX "%ld", (long)getpid());
    const char *params[1] = { app };
    return query1(db, "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') "
                      "FROM pg_stat_activity WHERE application_name = $1",
                  1, params, out, outlen);
}

/* Waits up to ms for listener_pids to differ from (want_differ) or equal
 * (!want_differ) ref; the last value in out. 0 when it did. */
static int await_pids(parley_db *db, const char *ref, int want_differ, int ms,
                      char *out, size_t outlen)
{
    for (int64_t t0 = mono_ms(); mono_ms() - t0 < ms; sleep_ms(10)) {
        if (listener_pids(db, out, outlen) < 0)
            return -1;
        if ((strcmp(out, ref) != 0) == want_differ)
            return 0;
    }
    return -1;
}

static int64_t append(parley_db *db, const char *channel, const char *data)
{
    return evlog_append(db, NULL, channel, 0, "token", data, strlen(data));   /* no local ring */
}

/* ---- without a server ---------------------------------------------------- */

TEST(open_db_picks_the_kind)
{
    char err[512] = "", p[512], f[520];
    snprintf(p, sizeof p, "%s/node.db", th_tmpdir());
    parley_bell *b = bell_open_db(p, err, sizeof err);
    REQUIRE(b);
    struct stat st;
    snprintf(f, sizeof f, "%s-bell", p);
    CHECK(stat(f, &st) == 0);                           /* the file bell */
    uint32_t v = bell_peek(b, "c");
    parley_bell *b2 = bell_open(f, err, sizeof err);    /* the same file: shared */
    REQUIRE(b2);
    bell_ring(b2, "c");
    CHECK(bell_peek(b, "c") != v);
    bell_close(b2);
    bell_close(b);
    CHECK(bell_open_db("", err, sizeof err) == NULL);
    CHECK(strstr(err, "PARLEY_DB") != NULL);
    CHECK(bell_open_db(NULL, err, sizeof err) == NULL);
    /* a PostgreSQL string: the listening bell, which must LISTEN first;
     * nothing listens on port 1, and the password is in no message */
    int64_t t0 = mono_ms();
    err[0] = '\0';
    CHECK(bell_open_db("postgresql://u:Tb3llSecr3t@127.0.0.1:1/x", err, sizeof err) == NULL);
    printf("# %s\n", err);
    CHECK(strstr(err, "Tb3llSecr3t") == NULL);
    CHECK(strstr(err, "***") != NULL);
    CHECK(strstr(err, "LISTEN") != NULL);
    err[0] = '\0';
    CHECK(bell_open_db("host=127.0.0.1 port=1 password=Tb3llSecr3t dbname=x", err,
                       sizeof err) == NULL);
    CHECK(strstr(err, "Tb3llSecr3t") == NULL && err[0]);
    CHECK(mono_ms() - t0 < 10000);
}

TEST(local_bell_keeps_the_semantics)
{
    char err[256];
    parley_bell *b = bell_open_local(err, sizeof err);
    REQUIRE(b);
    uint32_t v = bell_peek(b, "x"), va = bell_peek_any(b);
    CHECK_INT(bell_wait(b, "x", v, 30), 0);            /* timeout */
    bell_ring(b, "x");
    CHECK(bell_peek(b, "x") != v && bell_peek_any(b) != va);
    CHECK_INT(bell_wait(b, "x", v, 1000), 1);          /* moved before */
    /* a second handle shares the counters; its stop is its own */
    parley_bell *h = bell_open_handle(b, err, sizeof err);
    REQUIRE(h);
    struct follower f;
    follow(&f, b, "y", 3000);
    bell_ring(h, "y");
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 1);
    follow(&f, h, NULL, 3000);
    bell_wake_all(h);
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, -1);
    CHECK_INT(bell_stopped(h), 1);
    CHECK_INT(bell_stopped(b), 0);
    /* ring_all moves every slot and any */
    v = bell_peek(b, "z");
    va = bell_peek_any(b);
    bell_ring_all(b);
    CHECK(bell_peek(b, "z") != v && bell_peek_any(b) != va);
    bell_close(b);                                      /* any order */
    CHECK(bell_peek(h, "z") != v);                      /* still mapped */
    bell_close(h);
}

/* ---- against PostgreSQL ---------------------------------------------------- */

TEST(commit_on_another_connection_wakes_follower)
{
    parley_bell *y = open_pg_bell();
    parley_db *x = open_pg(), *ydb = open_pg();
    REQUIRE(y && x && ydb);
    CH(ch, "wake");
    int64_t before = evlog_last_seq(ydb, ch);
    struct follower f, fa;
    follow(&f, y, ch, 5000);
    follow(&fa, y, NULL, 5000);
    int64_t t0 = mono_us();
    int64_t seq = append(x, ch, "across");
    CHECK(seq > before);
    pthread_join(f.th, NULL);
    pthread_join(fa.th, NULL);
    CHECK_INT(f.rc, 1);
    CHECK_INT(fa.rc, 1);
    printf("# commit -> follower running: %lld us\n", (long long)(f.woke_us - t0));
    CHECK(f.woke_us - t0 < 2000000);
    /* woken, the follower reads it on its own connection */
    struct evlog_event *ev;
    int n = evlog_read(ydb, ch, before, 10, &ev);
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(ev[0].data, "across");
    evlog_free(ev, n);
    db_close(x);
    db_close(ydb);
    bell_close(y);
}

TEST(commit_in_another_process_wakes_follower)
{
    parley_bell *y = open_pg_bell();
    REQUIRE(y);
    CH(ch, "proc");
    struct follower f;
    follow(&f, y, ch, 8000);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        parley_db *db = open_pg();
        int ok = db && append(db, ch, "from another node") > 0;
        db_close(db);
        _exit(ok ? 0 : 1);
    }
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 1);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bell_close(y);
}

TEST(rolled_back_append_wakes_nobody)
{
    parley_bell *y = open_pg_bell();
    parley_db *x = open_pg();
    REQUIRE(y && x);
    CH(ch, "rollback");
    struct follower f;
    follow(&f, y, ch, 1000);
    uint32_t v = f.seen;
    REQUIRE(db_begin(x) == 0);
    CHECK(evlog_append_tx(x, ch, 0, "token", "never", 5) > 0);
    CHECK(evlog_append_tx(x, ch, 0, "token", "never", 5) > 0);
    CHECK_INT(db_rollback(x), 0);
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 0);                                 /* timed out: nobody rang */
    CHECK(bell_peek(y, ch) == v);
    /* the control: the same append committed wakes it */
    follow(&f, y, ch, 5000);
    REQUIRE(db_begin(x) == 0);
    CHECK(evlog_append_tx(x, ch, 0, "token", "once", 4) > 0);
    CHECK(evlog_append_tx(x, ch, 0, "token", "twice", 5) > 0);
    CHECK_INT(db_commit(x), 0);
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 1);
    db_close(x);
    bell_close(y);
}

/* ALTER DATABASE <db's database> ALLOW_CONNECTIONS <on>, run from a
 * connection to the database "postgres" (the same string, dbname
 * overridden: a database cannot refuse connections while one runs the
 * statement in it). 0 / -1. */
static int allow_connections(parley_db *db, int on)
{
    char name[256], sql[600];
    if (query1(db, "SELECT current_database()", 0, NULL, name, sizeof name) < 0)
        return -1;
    const char *const keys[] = { "dbname", "dbname", NULL };
    const char *const vals[] = { pg, "postgres", NULL };
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        printf("# connecting to the database postgres failed\n");
        PQfinish(c);
        return -1;
    }
    char *id = PQescapeIdentifier(c, name, strlen(name));
    if (!id) {
        PQfinish(c);
        return -1;
    }
    snprintf(sql, sizeof sql, "ALTER DATABASE %s ALLOW_CONNECTIONS %s", id, on ? "true" : "false");
    PQfreemem(id);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        printf("# %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

TEST(killed_listener_reconnects_and_followers_reread)
{
    parley_bell *y = open_pg_bell();
    parley_db *x = open_pg(), *ydb = open_pg();
    REQUIRE(y && x && ydb);
    CH(ch, "outage");
    char pids[256], now[256];
    REQUIRE(listener_pids(x, pids, sizeof pids) == 0);
    printf("# listener backend: %s\n", pids);
    REQUIRE(pids[0] && !strchr(pids, ','));
    int64_t cursor = evlog_last_seq(ydb, ch);
    struct follower f;
    follow(&f, y, ch, 15000);
    /* no new connection while the listener is away, so the append below
     * falls into the outage: only the re-read after the reconnection can
     * show it to the follower */
    REQUIRE(allow_connections(x, 0) == 0);
    const char *params[1] = { pids };
    CHECK(query1(x, "SELECT pg_terminate_backend($1::int)::text", 1, params, now,
                 sizeof now) == 0 && !strcmp(now, "true"));
    int gone = await_pids(x, "", 0, 5000, now, sizeof now) == 0;
    CHECK(gone);
    int64_t seq = append(x, ch, "during the outage");
    CHECK(seq > cursor);
    sleep_ms(300);                 /* the listener retries meanwhile, refused */
    int early = __atomic_load_n(&f.woke_us, __ATOMIC_SEQ_CST) != 0;
    CHECK_INT(early, 0);           /* the notification went nowhere */
    int64_t t0 = mono_ms();
    CHECK_INT(allow_connections(x, 1), 0);
    pthread_join(f.th, NULL);
    printf("# follower woken %lld ms after connections were allowed again\n",
           (long long)(mono_ms() - t0));
    CHECK_INT(f.rc, 1);
    CHECK(await_pids(x, "", 1, 5000, now, sizeof now) == 0 && strcmp(now, pids) != 0);
    printf("# listener backend now: %s\n", now);
    struct evlog_event *ev;
    int n = evlog_read(ydb, ch, cursor, 10, &ev);       /* the follower's re-read */
    CHECK_INT(n, 1);
    if (n == 1)
        CHECK_STR(ev[0].data, "during the outage");
    evlog_free(ev, n);
    /* and the next append is delivered by NOTIFY again */
    follow(&f, y, ch, 5000);
    CHECK(append(x, ch, "after") > 0);
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 1);
    allow_connections(x, 1);       /* in case a check above failed early */
    db_close(x);
    db_close(ydb);
    bell_close(y);
}

TEST(wake_all_joins_the_listener)
{
    parley_bell *y = open_pg_bell();
    parley_db *x = open_pg();
    REQUIRE(y && x);
    char pids[256], now[256];
    REQUIRE(listener_pids(x, pids, sizeof pids) == 0 && pids[0]);
    /* a second handle (as the bridge's long-poll front has): its wake_all
     * stops its waits, not the listener */
    char err[256];
    parley_bell *h = bell_open_handle(y, err, sizeof err);
    REQUIRE(h);
    CH(ch, "shutdown");
    struct follower fh, f1, f2;
    follow(&fh, h, ch, 5000);
    bell_wake_all(h);
    pthread_join(fh.th, NULL);
    CHECK_INT(fh.rc, -1);
    follow(&f1, y, ch, 5000);
    CHECK(append(x, ch, "still delivered") > 0);
    pthread_join(f1.th, NULL);
    CHECK_INT(f1.rc, 1);
    /* wake_all on the opening handle: sleepers leave, the listener is
     * joined and its backend goes */
    follow(&f1, y, ch, 10000);
    follow(&f2, y, NULL, -1);
    int64_t t0 = mono_ms();
    bell_wake_all(y);
    int64_t took = mono_ms() - t0;
    printf("# bell_wake_all took %lld ms\n", (long long)took);
    CHECK(took < 500);
    pthread_join(f1.th, NULL);
    pthread_join(f2.th, NULL);
    CHECK_INT(f1.rc, -1);
    CHECK_INT(f2.rc, -1);
    CHECK(await_pids(x, "", 0, 3000, now, sizeof now) == 0);
    bell_wake_all(y);                                   /* twice: no harm */
    bell_ring(y, ch);                                   /* rings and peeks still work */
    bell_close(y);
    bell_close(h);
    db_close(x);
}

/* The opener's handle closed first: the listener keeps ringing the second
 * handle (it rings through a handle of its own), and the last close stops
 * it. */
TEST(second_handle_outlives_the_opener)
{
    parley_bell *y = open_pg_bell();
    parley_db *x = open_pg();
    REQUIRE(y && x);
    char err[256], now[256];
    parley_bell *h = bell_open_handle(y, err, sizeof err);
    REQUIRE(h);
    bell_close(y);
    CH(ch, "outlives");
    struct follower f;
    follow(&f, h, ch, 5000);
    CHECK(append(x, ch, "to the second handle") > 0);
    pthread_join(f.th, NULL);
    CHECK_INT(f.rc, 1);
    CHECK(listener_pids(x, now, sizeof now) == 0 && now[0]);
    bell_close(h);                                      /* the last: the listener goes */
    CHECK(await_pids(x, "", 0, 3000, now, sizeof now) == 0);
    db_close(x);
}

int main(void)
{
    snprintf(pfx, sizeof pfx, "b%ld:", (long)getpid());
    printf("# without a server\n");
    RUN(open_db_picks_the_kind);
    RUN(local_bell_keeps_the_semantics);
    pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, channels %s*)\n", pfx);
        RUN(commit_on_another_connection_wakes_follower);
        RUN(commit_in_another_process_wakes_follower);
        RUN(rolled_back_append_wakes_nobody);
        RUN(killed_listener_reconnects_and_followers_reread);
        RUN(wake_all_joins_the_listener);
        RUN(second_handle_outlives_the_opener);
    }
    return th_done();
}
