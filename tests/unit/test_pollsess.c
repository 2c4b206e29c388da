/* test_pollsess.c — long-poll sessions (pollsess.h) on either backend, and
 * what must hold when two nodes serve two requests of one session at once.
 *
 * The cases run on SQLite and again on PostgreSQL when PARLEY_TEST_PG holds
 * a URI (tests/integration/t0740-pg-sessions.sh, with
 *); owners carry this run's prefix (pfx) and
 * sessions have fresh UUIDs, so a database used before does not disturb
 * them. A thread with its own connection stands for a node; a barrier
 * starts them together:
 *   - the session lock: 8 connections each lock, increment the state's
 *     counter and save a frame: the counter ends at 8, frames 1..8 once
 *     each, in order (one holder at a time, no lost update);
 *   - poll_pump: 8 connections pump one session (and, in the other order,
 *     a second one) until 60 events are delivered: no pump fails, each
 *     event is in the outbox once and in order (no double delivery; two
 *     batches locking two sessions in opposite orders do not deadlock);
 *   - poll_open's per-owner cap: 8 opens at once under a cap of 3: 3 open;
 *   - a sweep (poll_expire) that read a session as expired while a touch
 *     extending it was uncommitted leaves it in place;
 *   - a lease that ran out, taken over while its old holder saves: the
 *     taker's lock is never wiped by the old holder's save. */
#include "th.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "pollsess.h"
#include "util.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

static char dbpath[512];
static const char *target;      /* what open_db opens: dbpath or the PostgreSQL URI */
static char pfx[64];            /* prefix of owners: "" on SQLite */

#define OWNER(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static parley_db *open_db(void)
{
    char err[512];
    parley_db *db = db_open(target, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    return db;
}

/* Runs a constant statement on either backend (test set-up only; sid is a
 * UUID this test made). 0 / -1. */
static int run_sql(parley_db *db, const char *fmt, const char *sid)
{
    char sql[512];
    snprintf(sql, sizeof sql, fmt, sid);
    return db_exec(db, sql);
}

/* The session's lock_owner into buf ("" when none). 0 / -1. */
static int lock_owner_of(parley_db *db, const char *sid, char *buf, size_t len)
{
    buf[0] = '\0';
    if (db_pg_conn(db)) {
        const char *p[1] = { sid };
        PGresult *r = PQexecParams(db_pg_conn(db),
                                   "SELECT coalesce(lock_owner, '') FROM poll_sessions WHERE sid = $1",
                                   1, NULL, p, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        if (ok)
            str_copy(buf, len, PQgetvalue(r, 0, 0));
        PQclear(r);
        return ok ? 0 : -1;
    }
    sqlite3_stmt *st = db_stmt(db, "SELECT coalesce(lock_owner, '') FROM poll_sessions WHERE sid = ?");
    if (!st)
        return -1;
    db_bind_text(st, 1, sid);
    int ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        str_copy(buf, len, (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return ok ? 0 : -1;
}

/* "[f1,f2,...]" for frames "\"<tag><i>\"", i = from..to. New string. */
static char *expected_json(const char *tag, int from, int to)
{
    size_t cap = 16 + (size_t)(to - from + 1) * 24;
    char *s = malloc(cap);
    size_t at = 0;
    s[at++] = '[';
    for (int i = from; i <= to; i++)
        at += (size_t)snprintf(s + at, cap - at, "%s\"%s%d\"", i > from ? "," : "", tag, i);
    s[at++] = ']';
    s[at] = '\0';
    return s;
}

/* poll_pump's fn for sessions that must not be found */
static int never_pump(void *fnarg, struct poll_item *it, const char *state, struct poll_update *u)
{
    (void)fnarg, (void)it, (void)state, (void)u;
    return -1;
}

TEST(lock_save_read_ack_touch)
{
    parley_db *db = open_db();
    REQUIRE(db);
    OWNER(alice, "alice");
    char sid[37], owner[128], *state = NULL, *json = NULL;
    int64_t last;
    REQUIRE(poll_create(db, "/ws/a", alice, 60, sid) == 0);
    REQUIRE(poll_lock(db, sid, 60, &state, owner, sizeof owner) == POLL_OK);
    CHECK_STR(state, "{}");
    CHECK_STR(owner, alice);
    free(state);
    char *frames[] = { "\"m1\"", "\"m2\"", "\"m3\"" };
    REQUIRE(poll_save(db, sid, "{\"k\":1}", frames, 3, 60) == 0);
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 3);
    CHECK_STR(json, "[\"m1\",\"m2\",\"m3\"]");
    CHECK_INT(last, 3);
    free(json);
    CHECK_INT(poll_read(db, sid, 1, 1, &json, &last), 1);
    CHECK_STR(json, "[\"m2\"]");
    CHECK_INT(last, 2);
    free(json);
    CHECK_INT(poll_read(db, sid, 3, 100, &json, &last), 0);
    CHECK_STR(json, "[]");
    CHECK_INT(last, 3);
    free(json);
    struct poll_meta m;
    CHECK_INT(poll_peek_meta(db, sid, &state, owner, sizeof owner, &m), POLL_OK);
    CHECK_STR(state, "{\"k\":1}");
    free(state);
    CHECK_INT(m.next_seq, 4);
    CHECK_INT(m.stored, 3);
    CHECK(m.expires_at > now_ms());
    /* save_ack: acknowledged frames go in the same write */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == POLL_OK);
    CHECK_STR(state, "{\"k\":1}");
    free(state);
    char *more[] = { "\"m4\"" };
    REQUIRE(poll_save_ack(db, sid, NULL, more, 1, 60, 2) == 0);
    CHECK_INT(poll_pending(db, sid), 2);
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 2);
    CHECK_STR(json, "[\"m3\",\"m4\"]");
    free(json);
    /* while it is locked: touch needs no lock; a save for an unknown
     * session fails */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == POLL_OK);
    free(state);
    int64_t t0 = mono_ms();
    CHECK_INT(poll_save(db, "no-such-sid", NULL, NULL, 0, 60), -1);
    CHECK_INT(poll_touch(db, sid, 3, 120), 0);
    CHECK_INT(poll_pending(db, sid), 1);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, &m.expires_at), POLL_OK);
    free(state);
    CHECK(m.expires_at > now_ms() + 100000);
    poll_unlock(db, sid);
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == POLL_OK);     /* free again */
    free(state);
    CHECK(mono_ms() - t0 < 1000);
    CHECK_INT(poll_ack(db, sid, 4), 0);
    CHECK_INT(poll_pending(db, sid), 0);
    poll_unlock(db, sid);
    CHECK_INT(poll_owned(db, alice, now_ms()), 1);
    CHECK_INT(poll_delete(db, sid), POLL_OK);
    CHECK_INT(poll_delete(db, sid), POLL_GONE);
    CHECK_INT(poll_lock(db, sid, 60, &state, NULL, 0), POLL_GONE);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), POLL_GONE);
    CHECK_INT(poll_owned(db, alice, now_ms()), 0);
    /* a value that looks like SQL is only a value */
    CHECK_INT(poll_peek(db, "x' OR '1'='1", &state, NULL, 0, NULL), POLL_GONE);
    /* a client's sid that is not UTF-8 names no session (no database error) */
    const char *bad = "\xff\xfe-not-utf8";
    CHECK_INT(poll_peek(db, bad, &state, NULL, 0, NULL), POLL_GONE);
    CHECK_INT(poll_lock(db, bad, 60, &state, NULL, 0), POLL_GONE);
    CHECK_INT(poll_read(db, bad, 0, 10, &json, &last), 0);
    CHECK_STR(json, "[]");
    free(json);
    CHECK_INT(poll_pending(db, bad), 0);
    CHECK_INT(poll_ack(db, bad, 3), 0);
    CHECK_INT(poll_save(db, bad, NULL, NULL, 0, 60), -1);
    CHECK_INT(poll_delete(db, bad), POLL_GONE);
    struct poll_item bit = { .sid = bad };
    CHECK_INT(poll_pump(db, &bit, 1, 60, never_pump, NULL), 0);
    CHECK_INT(bit.status, POLL_GONE);
    db_close(db);
}

TEST(expiry_and_open)
{
    parley_db *db = open_db();
    REQUIRE(db);
    OWNER(bob, "bob");
    char sid[37], sid2[37], *state = NULL, *json = NULL;
    int64_t last;
    REQUIRE(poll_create(db, "/ws/x", bob, 0, sid) == 0);     /* expires at once */
    sleep_ms(5);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), POLL_GONE);
    CHECK_INT(poll_lock(db, sid, 60, &state, NULL, 0), POLL_GONE);   /* and deleted */
    CHECK_INT(poll_delete(db, sid), POLL_GONE);
    REQUIRE(poll_create(db, "/ws/y", bob, 0, sid) == 0);
    sleep_ms(5);
    CHECK(poll_expire(db, now_ms()) >= 1);
    CHECK_INT(poll_delete(db, sid), POLL_GONE);
    /* poll_open: state and first frames in one write; the owner's cap */
    char *frames[] = { "\"o1\"", "\"o2\"" };
    REQUIRE(poll_open(db, "/ws/o", bob, "{\"s\":1}", frames, 2, 60, 2, sid) == POLL_OK);
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 2);
    CHECK_STR(json, "[\"o1\",\"o2\"]");
    free(json);
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == POLL_OK);
    CHECK_STR(state, "{\"s\":1}");
    free(state);
    char *more[] = { "\"o3\"" };
    REQUIRE(poll_save(db, sid, NULL, more, 1, 60) == 0);
    CHECK_INT(poll_read(db, sid, 2, 100, &json, &last), 1);
    CHECK_INT(last, 3);
    free(json);
    REQUIRE(poll_open(db, "/ws/o", bob, NULL, NULL, 0, 60, 2, sid2) == POLL_OK);
    CHECK_INT(poll_open(db, "/ws/o", bob, NULL, NULL, 0, 60, 2, sid2), POLL_FULL);
    CHECK_INT(poll_owned(db, bob, now_ms()), 2);
    CHECK_INT(poll_open(db, "/ws/o", "", NULL, NULL, 0, 60, 2, sid2), POLL_OK);  /* no owner: no cap */
    CHECK_INT(poll_delete(db, sid2), POLL_OK);
    /* deleting a session deletes its outbox */
    CHECK_INT(poll_delete(db, sid), POLL_OK);
    CHECK_INT(poll_pending(db, sid), 0);
    db_close(db);
}

/* poll_pump's fn: state {"c":N}; appends the events N+1 .. N+step (at most
 * arg's total) as frames "\"e<i>\"" and saves {"c":new}. */
struct pump_job { int total, step, calls; };
static int count_pump(void *fnarg, struct poll_item *it, const char *state, struct poll_update *u)
{
    struct pump_job *j = it->arg ? it->arg : fnarg;
    j->calls++;
    int c = -1;
    if (sscanf(state, "{\"c\":%d}", &c) != 1)
        c = 0;
    int upto = c + j->step < j->total ? c + j->step : j->total;
    if (upto <= c)
        return 0;
    u->frames = calloc((size_t)(upto - c), sizeof *u->frames);
    if (!u->frames)
        return -1;
    for (int i = c + 1; i <= upto; i++) {
        char f[32];
        snprintf(f, sizeof f, "\"e%d\"", i);
        u->frames[u->nframes++] = strdup(f);
    }
    u->state = malloc(32);
    snprintf(u->state, 32, "{\"c\":%d}", upto);
    sleep_ms(1);                     /* hold the session a little: widen the race */
    return 0;
}

TEST(pump_statuses)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char a[37], b[37], gone[37], locked[37], *state, *json;
    int64_t last;
    char *first[] = { "\"e1\"" };
    REQUIRE(poll_open(db, "/ws/a", "", "{\"c\":1}", first, 1, 60, 0, a) == POLL_OK);
    REQUIRE(poll_open(db, "/ws/b", "", "{\"c\":5}", NULL, 0, 60, 0, b) == POLL_OK);
    REQUIRE(poll_open(db, "/ws/g", "", "{}", NULL, 0, 0, 0, gone) == POLL_OK);   /* expires at once */
    REQUIRE(poll_open(db, "/ws/l", "", "{}", NULL, 0, 60, 0, locked) == POLL_OK);
    sleep_ms(5);
    /* held by another owner (a thread is one) */
    REQUIRE(run_sql(db, "UPDATE poll_sessions SET lock_owner = 'elsewhere', "
                        "lock_expires = 9000000000000 WHERE sid = '%s'", locked) == 0);
    struct pump_job j = { 3, 10, 0 };
    struct poll_item it[5] = {
        { .sid = a, .ack = 1 }, { .sid = b }, { .sid = gone }, { .sid = locked },
        { .sid = "no-such-sid" },
    };
    REQUIRE(poll_pump(db, it, 5, 60, count_pump, &j) == 0);
    CHECK_INT(it[0].status, POLL_OK);
    CHECK_INT(it[0].changed, 1);
    CHECK_INT(it[0].next_seq, 4);
    CHECK_INT(it[1].status, POLL_OK);
    CHECK_INT(it[1].changed, 0);            /* c = 5 >= total: nothing to add */
    CHECK_INT(it[1].next_seq, 1);
    CHECK_INT(it[2].status, POLL_GONE);
    CHECK_INT(it[3].status, POLL_BUSY);
    CHECK_INT(it[4].status, POLL_GONE);
    CHECK_INT(j.calls, 2);
    CHECK_INT(poll_read(db, a, 0, 100, &json, &last), 2);   /* e1 acknowledged, e2 e3 added */
    CHECK_STR(json, "[\"e2\",\"e3\"]");
    free(json);
    CHECK_INT(poll_peek(db, a, &state, NULL, 0, NULL), POLL_OK);
    CHECK_STR(state, "{\"c\":3}");
    free(state);
    poll_delete(db, a);
    poll_delete(db, b);
    poll_delete(db, locked);
    db_close(db);
}

/* ---- two nodes serving one session at once ---- */

#define NODES 8

struct lock_arg {
    pthread_barrier_t *start;
    const char *sid;
    int result;                 /* 0 locked and saved; else the failing status */
};

static void *locker(void *p)
{
    struct lock_arg *a = p;
    parley_db *db = open_db();
    pthread_barrier_wait(a->start);
    a->result = -10;
    char *state = NULL;
    enum poll_status st = db ? poll_lock(db, a->sid, 60, &state, NULL, 0) : POLL_ERROR;
    if (st == POLL_OK) {
        int n = -1;
        if (sscanf(state, "{\"n\":%d}", &n) != 1)
            n = 0;
        char ns[32], f[32];
        snprintf(ns, sizeof ns, "{\"n\":%d}", n + 1);
        snprintf(f, sizeof f, "\"n%d\"", n + 1);
        char *frames[] = { f };
        sleep_ms(1);
        a->result = poll_save(db, a->sid, ns, frames, 1, 60);
    } else {
        a->result = (int)st;
    }
    free(state);
    db_close(db);
    return NULL;
}

/* 8 connections lock one session at once, each increments the state's
 * counter and saves one frame: one holder at a time (the others wait for
 * the lock), so the counter ends at 8 and the frames are n1..n8 in order.
 * 3 rounds. */
TEST(concurrent_locks_one_holder)
{
    parley_db *db = open_db();
    REQUIRE(db);
    for (int round = 0; round < 3; round++) {
        char sid[37], *state = NULL, *json = NULL;
        int64_t last;
        REQUIRE(poll_open(db, "/ws/c", "", "{\"n\":0}", NULL, 0, 60, 0, sid) == POLL_OK);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, NODES);
        pthread_t th[NODES];
        struct lock_arg args[NODES];
        for (int t = 0; t < NODES; t++) {
            args[t] = (struct lock_arg){ &start, sid, -20 };
            REQUIRE(pthread_create(&th[t], NULL, locker, &args[t]) == 0);
        }
        int bad = 0;
        for (int t = 0; t < NODES; t++) {
            pthread_join(th[t], NULL);
            if (args[t].result != 0) {
                printf("#   round %d node %d: %d\n", round, t, args[t].result);
                bad++;
            }
        }
        pthread_barrier_destroy(&start);
        CHECK_INT(bad, 0);
        CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), POLL_OK);
        CHECK_STR(state, "{\"n\":8}");
        free(state);
        char *want = expected_json("n", 1, NODES);
        CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), NODES);
        CHECK_STR(json, want);
        free(want);
        free(json);
        poll_delete(db, sid);
    }
    db_close(db);
}

#define EVENTS 60

struct pump_arg {
    pthread_barrier_t *start;
    const char *a, *b;          /* the two sessions, in this node's order */
    int errors, busy, pumps;
};

static void *pumper(void *p)
{
    struct pump_arg *a = p;
    parley_db *db = open_db();
    pthread_barrier_wait(a->start);
    if (!db) {
        a->errors++;
        return NULL;
    }
    struct pump_job j = { EVENTS, 3, 0 };
    /* pump both until the last pump changed neither (every event delivered) */
    for (int i = 0; i < 200; i++) {
        struct poll_item it[2] = { { .sid = a->a, .arg = &j }, { .sid = a->b, .arg = &j } };
        int r = poll_pump(db, it, 2, 60, count_pump, NULL);
        a->pumps++;
        if (r < 0 || it[0].status == POLL_ERROR || it[1].status == POLL_ERROR) {
            printf("#   pump failed: %s\n", db_errmsg(db));
            a->errors++;
            break;
        }
        if (it[0].status == POLL_BUSY || it[1].status == POLL_BUSY)
            a->busy++;
        if (!it[0].changed && !it[1].changed && it[0].status == POLL_OK && it[1].status == POLL_OK)
            break;
    }
    db_close(db);
    return NULL;
}

/* 8 connections pump the same two sessions at once (half of them list the
 * sessions in the other order) until all 60 events are in both outboxes:
 * no pump fails (no duplicate frame number, no deadlock), and each outbox
 * holds e1..e60 exactly once, in order — no event delivered twice. */
TEST(concurrent_pumps_deliver_once)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char s1[37], s2[37], *json = NULL, *state = NULL;
    int64_t last;
    REQUIRE(poll_open(db, "/ws/p1", "", "{\"c\":0}", NULL, 0, 60, 0, s1) == POLL_OK);
    REQUIRE(poll_open(db, "/ws/p2", "", "{\"c\":0}", NULL, 0, 60, 0, s2) == POLL_OK);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NODES);
    pthread_t th[NODES];
    struct pump_arg args[NODES];
    for (int t = 0; t < NODES; t++) {
        args[t] = (struct pump_arg){ &start, t % 2 ? s2 : s1, t % 2 ? s1 : s2, 0, 0, 0 };
        REQUIRE(pthread_create(&th[t], NULL, pumper, &args[t]) == 0);
    }
    int errors = 0, busy = 0, pumps = 0;
    for (int t = 0; t < NODES; t++) {
        pthread_join(th[t], NULL);
        errors += args[t].errors;
        busy += args[t].busy;
        pumps += args[t].pumps;
    }
    pthread_barrier_destroy(&start);
    printf("#   %d pumps\n", pumps);
    CHECK_INT(errors, 0);
    CHECK_INT(busy, 0);
    char *want = expected_json("e", 1, EVENTS);
    const char *sids[2] = { s1, s2 };
    for (int k = 0; k < 2; k++) {
        CHECK_INT(poll_read(db, sids[k], 0, 1000, &json, &last), EVENTS);
        CHECK_STR(json, want);
        CHECK_INT(last, EVENTS);
        free(json);
        struct poll_meta m;
        CHECK_INT(poll_peek_meta(db, sids[k], &state, NULL, 0, &m), POLL_OK);
        CHECK_STR(state, "{\"c\":60}");
        CHECK_INT(m.next_seq, EVENTS + 1);
        free(state);
        poll_delete(db, sids[k]);
    }
    free(want);
    db_close(db);
}

struct open_arg {
    pthread_barrier_t *start;
    const char *owner;
    enum poll_status result;
};

static void *opener(void *p)
{
    struct open_arg *a = p;
    parley_db *db = open_db();
    pthread_barrier_wait(a->start);
    char sid[37];
    a->result = db ? poll_open(db, "/ws/cap", a->owner, NULL, NULL, 0, 60, 3, sid) : POLL_ERROR;
    db_close(db);
    return NULL;
}

/* 8 connections open a session for one owner at once under a cap of 3:
 * exactly 3 open, 5 are refused, the owner has 3. */
TEST(concurrent_opens_respect_cap)
{
    parley_db *db = open_db();
    REQUIRE(db);
    OWNER(owner, "capped");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NODES);
    pthread_t th[NODES];
    struct open_arg args[NODES];
    for (int t = 0; t < NODES; t++) {
        args[t] = (struct open_arg){ &start, owner, -5 };
        REQUIRE(pthread_create(&th[t], NULL, opener, &args[t]) == 0);
    }
    int ok = 0, full = 0;
    for (int t = 0; t < NODES; t++) {
        pthread_join(th[t], NULL);
        ok += args[t].result == POLL_OK;
        full += args[t].result == POLL_FULL;
    }
    pthread_barrier_destroy(&start);
    CHECK_INT(ok, 3);
    CHECK_INT(full, NODES - 3);
    CHECK_INT(poll_owned(db, owner, now_ms()), 3);
    db_close(db);
}

struct sweep_arg { int64_t now; int result; int done; };
static void *sweeper(void *p)
{
    struct sweep_arg *a = p;
    parley_db *db = open_db();
    a->result = db ? poll_expire(db, a->now) : -2;
    db_close(db);
    __atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A sweep that read a session as expired while a touch extending it was
 * not yet committed must leave it once the touch commits: the delete
 * re-checks expires_at on the row it reaches. */
TEST(expire_racing_touch_keeps_session)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37], *state = NULL;
    REQUIRE(poll_create(db, "/ws/t", "", 0, sid) == 0);     /* expires at once */
    sleep_ms(5);
    int64_t now = now_ms();
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(poll_touch(db, sid, 0, 60), 0);               /* not committed yet */
    struct sweep_arg arg = { now, -3, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, sweeper, &arg) == 0);
    sleep_ms(300);                   /* the sweep has read the old expiry and waits */
    CHECK_INT(__atomic_load_n(&arg.done, __ATOMIC_SEQ_CST), 0);
    CHECK_INT(db_commit(db), 0);
    pthread_join(th, NULL);
    CHECK(arg.result >= 0);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), POLL_OK);
    free(state);
    CHECK_INT(poll_delete(db, sid), POLL_OK);
    db_close(db);
}

struct take_arg {
    pthread_barrier_t *start;
    const char *sid;
    enum poll_status result;
    char me[64];                /* the taker's owner_id */
};

static void *taker(void *p)
{
    struct take_arg *a = p;
    parley_db *db = open_db();
    str_copy(a->me, sizeof a->me, owner_id());
    pthread_barrier_wait(a->start);
    char *state = NULL;
    a->result = db ? poll_lock(db, a->sid, 60, &state, NULL, 0) : POLL_ERROR;
    free(state);
    db_close(db);
    return NULL;
}

/* The lock's lease ran out (a holder that stalled), another node takes it
 * over while the old holder saves. Either the save came first (then the
 * taker may lock after it) or the takeover did (then the save fails); a
 * taker that got the lock still holds it afterwards — the old holder's
 * save never wipes it. 40 rounds. */
TEST(takeover_racing_save)
{
    parley_db *db = open_db();
    REQUIRE(db);
    int saved = 0, taken = 0;
    for (int round = 0; round < 40; round++) {
        char sid[37], *state = NULL;
        REQUIRE(poll_create(db, "/ws/k", "", 60, sid) == 0);
        REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == POLL_OK);
        free(state);
        REQUIRE(run_sql(db, "UPDATE poll_sessions SET lock_expires = 1 WHERE sid = '%s'", sid) == 0);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        struct take_arg arg = { &start, sid, -5, "" };
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, taker, &arg) == 0);
        pthread_barrier_wait(&start);
        char *frames[] = { "\"late\"" };
        int s = poll_save(db, sid, "{\"old\":1}", frames, 1, 60);
        pthread_join(th, NULL);
        pthread_barrier_destroy(&start);
        char holder[64];
        CHECK_INT(lock_owner_of(db, sid, holder, sizeof holder), 0);
        if (arg.result == POLL_OK) {
            taken++;
            if (strcmp(holder, arg.me) != 0) {
                printf("#   round %d: taker locked, but lock_owner is '%s' (save %d)\n",
                       round, holder, s);
                CHECK(0);
            }
        } else {
            CHECK_INT(arg.result, POLL_BUSY);      /* cannot be: the lease ran out */
        }
        saved += s == 0;
        poll_delete(db, sid);
    }
    printf("#   saves that won: %d, takeovers: %d\n", saved, taken);
    db_close(db);
}

static void run_cases(void)
{
    RUN(lock_save_read_ack_touch);
    RUN(expiry_and_open);
    RUN(pump_statuses);
    RUN(concurrent_locks_one_holder);
    RUN(concurrent_pumps_deliver_once);
    RUN(concurrent_opens_respect_cap);
    RUN(expire_racing_touch_keeps_session);
    RUN(takeover_racing_save);
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/pollsess.db", th_tmpdir());
    target = dbpath;
    printf("# backend: SQLite\n");
    run_cases();
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        /* owners of this run only: the database may have been used before */
        target = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, owners %s*)\n", pfx);
        run_cases();
    }
    return th_done();
}
