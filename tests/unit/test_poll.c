/* test_poll.c — long-poll sessions: create, lock/save with outbox frames,
 * reads after a cursor, acks, expiry, a lock held across processes, and
 * the lock-free peek/touch a waiting GET uses. */
#include "th.h"
#include "db.h"
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

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/poll.db", th_tmpdir());
    RUN(create_lock_save_read);
    RUN(expiry);
    RUN(lock_excludes_other_process);
    RUN(peek_touch_save_ack);
    return th_done();
}
