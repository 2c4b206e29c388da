/* test_poll.c — long-poll sessions: create, lock/save with outbox frames,
 * reads after a cursor, acks, expiry, a lock held across processes, the
 * lock-free peek/touch a waiting GET uses, poll_open, and poll_pump (many
 * sessions in one write transaction: unknown, expired and locked ones
 * skipped, no write when nothing changed, acks in the same transaction). */
#include "th.h"
#include "db_sqlite.h"
#include "pollsess.h"
#include "util.h"

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dbpath[512];

static parley_db *open_db(void)
{
    char err[512];
    parley_db *db = db_open(dbpath, err, sizeof err);
    if (!db)
        printf("# %s\n", err);
    return db;
}

TEST(create_lock_save_read)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37], owner[64];
    REQUIRE(poll_create(db, "/ws/abc", "alice", 60, sid) == 0);
    char *state = NULL;
    REQUIRE(poll_lock(db, sid, 60, &state, owner, sizeof owner) == 0);
    CHECK_STR(state, "{}");
    CHECK_STR(owner, "alice");
    free(state);
    char *frames[] = { "{\"type\":\"connected\"}", "{\"type\":\"pong\"}" };
    REQUIRE(poll_save(db, sid, "{\"k\":1}", frames, 2, 60) == 0);
    char *json;
    int64_t last;
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 2);
    CHECK_STR(json, "[{\"type\":\"connected\"},{\"type\":\"pong\"}]");
    CHECK_INT(last, 2);
    free(json);
    CHECK_INT(poll_read(db, sid, 1, 100, &json, &last), 1);
    CHECK_STR(json, "[{\"type\":\"pong\"}]");
    free(json);
    CHECK_INT(poll_read(db, sid, 2, 100, &json, &last), 0);
    CHECK_STR(json, "[]");
    CHECK_INT(last, 2);
    free(json);
    /* numbering continues; state saved; ack drops what the client has */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    CHECK_STR(state, "{\"k\":1}");
    free(state);
    char *more[] = { "{\"n\":3}" };
    REQUIRE(poll_save(db, sid, NULL, more, 1, 60) == 0);
    CHECK_INT(poll_ack(db, sid, 2), 0);
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 1);
    CHECK_STR(json, "[{\"n\":3}]");
    CHECK_INT(last, 3);
    free(json);
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    CHECK_STR(state, "{\"k\":1}");          /* NULL state kept it */
    free(state);
    poll_unlock(db, sid);
    CHECK_INT(poll_delete(db, sid), 0);
    CHECK_INT(poll_delete(db, sid), 1);
    CHECK_INT(poll_lock(db, sid, 60, &state, NULL, 0), 1);
    db_close(db);
}

TEST(expiry)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37];
    REQUIRE(poll_create(db, "/ws/x", "", 0, sid) == 0);   /* expires at once */
    struct timespec ts = { 0, 5 * 1000000L };
    nanosleep(&ts, NULL);
    char *state = NULL;
    CHECK_INT(poll_lock(db, sid, 60, &state, NULL, 0), 1);
    CHECK(state == NULL);
    REQUIRE(poll_create(db, "/ws/y", "", 0, sid) == 0);
    nanosleep(&ts, NULL);
    CHECK(poll_expire(db, now_ms()) >= 1);
    CHECK_INT(poll_delete(db, sid), 1);
    db_close(db);
}

TEST(lock_excludes_other_process)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37];
    REQUIRE(poll_create(db, "/ws/z", "", 60, sid) == 0);
    char *state = NULL;
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    free(state);
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        parley_db *cdb = open_db();
        char *s = NULL;
        int64_t t0 = mono_ms();
        int r = cdb ? poll_lock(cdb, sid, 60, &s, NULL, 0) : -1;
        int64_t waited = mono_ms() - t0;
        free(s);
        if (r == 0)
            poll_save(cdb, sid, NULL, NULL, 0, 60);
        db_close(cdb);
        char out[64];
        int n = snprintf(out, sizeof out, "%d %lld", r, (long long)waited);
        if (write(pfd[1], out, (size_t)n) < 0)
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    REQUIRE(poll_save(db, sid, NULL, NULL, 0, 60) == 0);   /* release: the child gets it */
    char buf[64] = "";
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    REQUIRE(n > 0);
    int r = -9;
    long long waited = 0;
    sscanf(buf, "%d %lld", &r, &waited);
    CHECK_INT(r, 0);
    CHECK(waited >= 250);           /* it had to wait for our save */
    db_close(db);
}

/* The read-only look of a GET, and the writes it does instead of a pump. */
TEST(peek_touch_save_ack)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37], owner[64];
    REQUIRE(poll_create(db, "/ws/p", "bob", 60, sid) == 0);
    char *state = NULL;
    int64_t expires = 0, t0 = now_ms();
    CHECK_INT(poll_peek(db, sid, &state, owner, sizeof owner, &expires), 0);
    CHECK_STR(state, "{}");
    CHECK_STR(owner, "bob");
    CHECK(expires >= t0 + 59000 && expires <= t0 + 61000);
    free(state);
    /* peek does not lock: a lock can still be taken, and peek still reads */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    free(state);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), 0);
    free(state);
    char *frames[] = { "{\"n\":1}", "{\"n\":2}", "{\"n\":3}" };
    REQUIRE(poll_save(db, sid, "{\"k\":2}", frames, 3, 60) == 0);
    /* save_ack: frames 1-2 acknowledged, one more frame, in one transaction */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    free(state);
    char *more[] = { "{\"n\":4}" };
    REQUIRE(poll_save_ack(db, sid, NULL, more, 1, 60, 2) == 0);
    char *json;
    int64_t last;
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 2);
    CHECK_STR(json, "[{\"n\":3},{\"n\":4}]");
    free(json);
    /* touch: acks frame 3, extends the expiry, takes no lock */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);  /* someone holds it */
    free(state);
    REQUIRE(poll_touch(db, sid, 3, 120) == 0);
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 1);
    CHECK_STR(json, "[{\"n\":4}]");
    free(json);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, &expires), 0);
    CHECK_STR(state, "{\"k\":2}");
    CHECK(expires >= t0 + 119000);
    free(state);
    poll_unlock(db, sid);
    /* unknown, and expired (not deleted by a peek) */
    CHECK_INT(poll_peek(db, "no-such-sid", &state, NULL, 0, NULL), 1);
    CHECK(state == NULL);
    REQUIRE(poll_create(db, "/ws/q", "", 0, sid) == 0);
    struct timespec ts = { 0, 5 * 1000000L };
    nanosleep(&ts, NULL);
    CHECK_INT(poll_peek(db, sid, &state, NULL, 0, NULL), 1);
    CHECK(state == NULL);
    CHECK_INT(poll_delete(db, sid), 0);
    db_close(db);
}

/* poll_pump's fn for the tests: appends "{\"f\":<n>}" for item->arg's
 * count, keeps the state when the count is 0; -1 for count -1. */
static int calls;
static int fake_pump(void *fnarg, struct poll_item *it, const char *state, struct poll_update *u)
{
    (void)fnarg;
    calls++;
    int want = *(int *)it->arg;
    if (want < 0)
        return -1;
    if (want == 0)
        return 0;
    u->frames = calloc((size_t)want, sizeof *u->frames);
    if (!u->frames)
        return -1;
    for (int i = 0; i < want; i++) {
        char f[32];
        snprintf(f, sizeof f, "{\"f\":%d}", i + 1);
        u->frames[u->nframes++] = strdup(f);
    }
    size_t n = strlen(state) + 16;
    u->state = malloc(n);
    snprintf(u->state, n, "{\"was\":%d}", (int)strlen(state));
    return 0;
}

static int64_t version_of(parley_db *db, const char *sid)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT version FROM poll_sessions WHERE sid = ?");
    db_bind_text(st, 1, sid);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return v;
}

TEST(open_in_one_transaction)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char sid[37], owner[64], *state = NULL;
    char *frames[] = { "{\"type\":\"connected\"}", "{\"type\":\"welcome\"}" };
    REQUIRE(poll_open(db, "/ws/o", "carol", "{\"s\":1}", frames, 2, 60, 0, sid) == 0);
    CHECK_INT(poll_peek(db, sid, &state, owner, sizeof owner, NULL), 0);
    CHECK_STR(state, "{\"s\":1}");
    CHECK_STR(owner, "carol");
    free(state);
    /* without the state: the owner and the expiry only */
    int64_t expires = 0;
    owner[0] = '\0';
    CHECK_INT(poll_peek(db, sid, NULL, owner, sizeof owner, &expires), POLL_OK);
    CHECK_STR(owner, "carol");
    CHECK(expires > now_ms());
    CHECK_INT(poll_peek(db, "00000000-0000-4000-8000-000000000000", NULL, owner, sizeof owner, NULL),
              POLL_GONE);
    char *json;
    int64_t last;
    CHECK_INT(poll_read(db, sid, 0, 100, &json, &last), 2);
    CHECK_STR(json, "[{\"type\":\"connected\"},{\"type\":\"welcome\"}]");
    CHECK_INT(last, 2);
    free(json);
    /* numbering goes on after the opening frames */
    REQUIRE(poll_lock(db, sid, 60, &state, NULL, 0) == 0);
    free(state);
    char *more[] = { "{\"n\":3}" };
    REQUIRE(poll_save(db, sid, NULL, more, 1, 60) == 0);
    CHECK_INT(poll_read(db, sid, 2, 100, &json, &last), 1);
    CHECK_INT(last, 3);
    free(json);
    db_close(db);
}

TEST(pump_many_in_one_transaction)
{
    parley_db *db = open_db();
    REQUIRE(db);
    char a[37], b[37], c[37], d[37], e[37];
    char *first[] = { "{\"o\":1}", "{\"o\":2}" };
    REQUIRE(poll_open(db, "/ws/a", "", "{}", first, 2, 60, 0, a) == 0);
    REQUIRE(poll_open(db, "/ws/b", "", "{}", NULL, 0, 60, 0, b) == 0);
    REQUIRE(poll_open(db, "/ws/c", "", "{}", NULL, 0, 60, 0, c) == 0);
    REQUIRE(poll_open(db, "/ws/d", "", "{}", NULL, 0, 0, 0, d) == 0);     /* expires at once */
    REQUIRE(poll_open(db, "/ws/e", "", "{}", NULL, 0, 60, 0, e) == 0);
    /* c is locked by another request (another process's POST) */
    pid_t pid = fork();
    if (pid == 0) {
        parley_db *cdb = open_db();
        char *s = NULL;
        int r = cdb ? poll_lock(cdb, c, 60, &s, NULL, 0) : -1;
        free(s);
        db_close(cdb);
        _exit(r == 0 ? 0 : 1);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct timespec ts = { 0, 5 * 1000000L };
    nanosleep(&ts, NULL);
    int64_t va = version_of(db, a), vb = version_of(db, b);
    int want[6] = { 2, 0, 1, 1, -1, 1 };
    struct poll_item it[6];
    memset(it, 0, sizeof it);
    const char *sids[6] = { a, b, c, d, e, "no-such-sid" };
    for (int i = 0; i < 6; i++) {
        it[i].sid = sids[i];
        it[i].arg = &want[i];
    }
    it[0].ack = 1;                 /* a's client has frame 1 */
    calls = 0;
    REQUIRE(poll_pump(db, it, 6, 60, fake_pump, NULL) == 0);
    CHECK_INT(calls, 3);           /* a, b, e: the others never reach fn */
    CHECK_INT(it[0].status, 0);
    CHECK_INT(it[0].changed, 1);
    CHECK_INT(it[0].next_seq, 5);
    CHECK_INT(it[1].status, 0);
    CHECK_INT(it[1].changed, 0);
    CHECK_INT(it[1].next_seq, 1);
    CHECK_INT(it[2].status, 2);    /* locked */
    CHECK_INT(it[3].status, 1);    /* expired */
    CHECK_INT(it[4].status, -1);   /* fn failed: nothing of it written */
    CHECK_INT(it[5].status, 1);    /* unknown */
    char *json, *state = NULL;
    int64_t last;
    CHECK_INT(poll_read(db, a, 0, 100, &json, &last), 3);   /* frame 1 acked */
    CHECK_STR(json, "[{\"o\":2},{\"f\":1},{\"f\":2}]");
    CHECK_INT(last, 4);
    free(json);
    CHECK_INT(poll_peek(db, a, &state, NULL, 0, NULL), 0);
    CHECK_STR(state, "{\"was\":2}");
    free(state);
    CHECK_INT(version_of(db, a), va + 1);
    CHECK_INT(version_of(db, b), vb);      /* unchanged: not written */
    CHECK_INT(poll_read(db, c, 0, 100, &json, &last), 0);
    free(json);
    CHECK_INT(poll_read(db, e, 0, 100, &json, &last), 0);
    free(json);
    /* the same session twice in one batch: the second sees the first's write */
    struct poll_item twice[2];
    int one = 1;
    memset(twice, 0, sizeof twice);
    twice[0].sid = twice[1].sid = b;
    twice[0].arg = twice[1].arg = &one;
    REQUIRE(poll_pump(db, twice, 2, 60, fake_pump, NULL) == 0);
    CHECK_INT(twice[0].next_seq, 2);
    CHECK_INT(twice[1].next_seq, 3);
    CHECK_INT(poll_read(db, b, 0, 100, &json, &last), 2);
    CHECK_INT(last, 2);
    free(json);
    db_close(db);
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/poll.db", th_tmpdir());
    RUN(create_lock_save_read);
    RUN(expiry);
    RUN(lock_excludes_other_process);
    RUN(peek_touch_save_ack);
    RUN(open_in_one_transaction);
    RUN(pump_many_in_one_transaction);
    return th_done();
}
