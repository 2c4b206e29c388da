/* ratelimit.c — sliding-window rate limit per user (see ratelimit.h).
 * SQLite: every process shares the table rate_hits; one IMMEDIATE
 * transaction per hit makes "count, then insert" atomic across processes.
 * PostgreSQL (db_pg_conn): the arguments are checked here, the bodies are
 * storage/pg/ratelimit.c's (a per-user advisory lock gives the same
 * atomicity across nodes). Runs in whichever thread owns the parley_db
 * passed in.
 */
#include "ratelimit.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/sessions.h"

#include <stdio.h>

/* Each statement is a string literal: db_stmt caches by pointer. */
static const char SQL_EXPIRE_USER[] =
    "DELETE FROM rate_hits WHERE user_id = ?1 AND at_ms <= ?2";
/* Hits stamped after now_ms count too: another process read its clock a
 * little later but took the write lock first. Leaving them out would let
 * concurrent callers overshoot the limit (the multi-process test does). */
static const char SQL_COUNT[] =
    "SELECT count(*) FROM rate_hits WHERE user_id = ?1 AND at_ms > ?2";
/* The hit whose leaving the window brings the count below the limit: the
 * oldest one when count == limit, a later one if the limit was lowered. */
static const char SQL_NTH_OLDEST[] =
    "SELECT at_ms FROM rate_hits WHERE user_id = ?1 AND at_ms > ?2 "
    "ORDER BY at_ms LIMIT 1 OFFSET ?3";
static const char SQL_INSERT[] =
    "INSERT INTO rate_hits (user_id, at_ms) VALUES (?1, ?2)";
static const char SQL_PRUNE[] =
    "DELETE FROM rate_hits WHERE at_ms <= ?1";

/* Steps a statement that returns no rows; resets it. 0 / -1. */
static int run_done(parley_db *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "parley: ratelimit: %s failed: %s\n", what, db_errmsg(db));
        return -1;
    }
    return 0;
}

/* Steps a one-row, one-integer query; resets it. 1 row (value in *out),
 * 0 no row, -1 error. */
static int run_int64(parley_db *db, sqlite3_stmt *st, const char *what, int64_t *out)
{
    int rc = sqlite3_step(st);
    int r = 0;
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        r = 1;
    } else if (rc != SQLITE_DONE) {
        fprintf(stderr, "parley: ratelimit: %s failed: %s\n", what, db_errmsg(db));
        r = -1;
    }
    sqlite3_reset(st);
    return r;
}

/* Contract (ratelimit.h), made precise:
 *  - the window is (now_ms - window_ms, now_ms], and hits stamped after
 *    now_ms (another process's clock) are counted as inside it;
 *  - limited: *retry_ms > 0 is the wait until enough hits have left the
 *    window for one more to fit (the oldest one, unless the limit was
 *    lowered below the current count); allowed: *retry_ms = 0;
 *  - user NULL is the same user as "" (open mode);
 *  - window_ms <= 0 or db NULL: -1; inside a transaction already open on
 *    db: -1 (BEGIN IMMEDIATE fails) and that transaction is left alone.
 * The user's hits that have left the window are deleted in the same
 * transaction, so a busy user's rows never pile up. */
int ratelimit_hit(parley_db *db, const char *user, int limit, int64_t window_ms,
                  int64_t now_ms, int64_t *retry_ms)
{
    return ratelimit_hit_n(db, user, 1, limit, window_ms, now_ms, retry_ms);
}

int ratelimit_hit_n(parley_db *db, const char *user, int n, int limit, int64_t window_ms,
                    int64_t now_ms, int64_t *retry_ms)
{
    if (retry_ms)
        *retry_ms = 0;
    if (limit <= 0 || n <= 0)
        return 1;
    if (!db || window_ms <= 0)
        return -1;
    if (n > limit) {                         /* never fits */
        if (retry_ms)
            *retry_ms = window_ms;
        return 0;
    }
    if (!user)
        user = "";                           /* open mode's anonymous user */
    if (db_pg_conn(db))
        return ratelimit_pg_hit_n(db, user, n, limit, window_ms, now_ms, retry_ms);
    int64_t cutoff = now_ms - window_ms;     /* window is (cutoff, now_ms] */

    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, SQL_EXPIRE_USER);
    if (!st)
        goto error;
    db_bind_text(st, 1, user);
    sqlite3_bind_int64(st, 2, cutoff);
    if (run_done(db, st, "expiring old hits") < 0)
        goto error;

    int64_t count = 0;
    if (!(st = db_stmt(db, SQL_COUNT)))
        goto error;
    db_bind_text(st, 1, user);
    sqlite3_bind_int64(st, 2, cutoff);
    if (run_int64(db, st, "counting hits", &count) < 0)
        goto error;

    if (count + n > limit) {
        int64_t leaves_at = now_ms + 1;      /* fallback: cannot happen */
        if (!(st = db_stmt(db, SQL_NTH_OLDEST)))
            goto error;
        db_bind_text(st, 1, user);
        sqlite3_bind_int64(st, 2, cutoff);
        sqlite3_bind_int64(st, 3, count + n - 1 - limit);
        int64_t at = 0;
        int got = run_int64(db, st, "finding the oldest hit", &at);
        if (got < 0)
            goto error;
        if (got > 0)
            leaves_at = at + window_ms;      /* first instant it is outside */
        if (db_commit(db) < 0)               /* keeps the expiry above */
            return -1;
        if (retry_ms)
            *retry_ms = leaves_at > now_ms ? leaves_at - now_ms : 1;
        return 0;
    }

    for (int i = 0; i < n; i++) {
        if (!(st = db_stmt(db, SQL_INSERT)))
            goto error;
        db_bind_text(st, 1, user);
        sqlite3_bind_int64(st, 2, now_ms);
        if (run_done(db, st, "recording a hit") < 0)
            goto error;
    }
    if (db_commit(db) < 0)
        return -1;
    return 1;
error:
    db_rollback(db);
    return -1;
}

int ratelimit_prune(parley_db *db, int64_t window_ms, int64_t now_ms)
{
    if (!db)
        return -1;
    if (db_pg_conn(db))
        return ratelimit_pg_prune(db, window_ms, now_ms);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, SQL_PRUNE);
    if (!st)
        goto error;
    sqlite3_bind_int64(st, 1, now_ms - window_ms);
    if (run_done(db, st, "pruning hits") < 0)
        goto error;
    int n = sqlite3_changes(db_handle(db));
    if (db_commit(db) < 0)
        return -1;
    return n;
error:
    db_rollback(db);
    return -1;
}
