/* storage/pg/ratelimit.c — the rate limit's PostgreSQL bodies (contract:
 * ratelimit.h; ratelimit.c checks the arguments and dispatches here when
 * db_pg_conn(db) is not NULL).
 *
 * One count per user across every node: a hit's transaction first takes a
 * transaction-level advisory lock keyed by the user (RATE_LOCK_NS,
 * hashtext(user_id)) in a statement of its own, then expires, counts and
 * inserts. Under READ COMMITTED each later statement reads a snapshot taken
 * after the lock was granted, so it sees every hit committed by the
 * previous holder: callers for one user on any number of connections count
 * and insert one after the other, exactly as SQLite's BEGIN IMMEDIATE made
 * them. Other users do not wait (two users whose ids hash alike only
 * queue behind each other). The lock goes with the outermost transaction
 * (db_begin nests: inside a caller's transaction it is held until that
 * one ends). The sliding window needs one row per hit (rate_hits mirrors
 * SQLite's table), so there is no per-user row to upsert or lock: the
 * advisory lock is that row. Every value is bound (db_pg_exec, prepared once per session). */
#include "storage/pg/pg.h"
#include "storage/pg/sessions.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* The first key of the per-user lock ("prlr"); the second is the user id's
 * hash. pollsess's per-owner lock uses another first key. */
#define RATE_LOCK_NS "1886546034"

static const char SQL_LOCK[] =
    "SELECT pg_advisory_xact_lock(" RATE_LOCK_NS ", hashtext($1))";
static const char SQL_EXPIRE_USER[] =
    "DELETE FROM rate_hits WHERE user_id = $1 AND at_ms <= $2";
/* hits stamped after now_ms count too (ratelimit.c says why) */
static const char SQL_COUNT[] =
    "SELECT count(*) FROM rate_hits WHERE user_id = $1 AND at_ms > $2";
static const char SQL_NTH_OLDEST[] =
    "SELECT at_ms FROM rate_hits WHERE user_id = $1 AND at_ms > $2 "
    "ORDER BY at_ms LIMIT 1 OFFSET $3";
static const char SQL_INSERT[] =
    "INSERT INTO rate_hits (user_id, at_ms) SELECT $1, $2 FROM generate_series(1, $3)";
static const char SQL_PRUNE[] =
    "DELETE FROM rate_hits WHERE at_ms <= $1";

#define I64(buf, v) char buf[24]; snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(v))

/* A query's first row's first column: 1 found (*out), 0 no row, -1 error. */
static int exec_i64(parley_db *db, const char *sql, int n, const char *const *params,
                    const char *what, int64_t *out)
{
    PGresult *r = db_pg_run(db, sql, n, params, PGRES_TUPLES_OK, what);
    if (!r)
        return -1;
    int got = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0);
    if (got)
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return got;
}

int ratelimit_pg_hit_n(parley_db *db, const char *user, int n, int limit, int64_t window_ms,
                       int64_t now_ms, int64_t *retry_ms)
{
    I64(cutoff, now_ms - window_ms);          /* the window is (cutoff, now_ms] */
    const char *uc[2] = { user, cutoff };
    if (db_begin(db) < 0)
        return -1;
    /* the lock in a statement of its own: the next statements' snapshots
     * are taken once it is held */
    PGresult *r = db_pg_run(db, SQL_LOCK, 1, uc, PGRES_TUPLES_OK, "ratelimit: user lock");
    if (!r)
        goto error;
    PQclear(r);
    if (!(r = db_pg_run(db, SQL_EXPIRE_USER, 2, uc, PGRES_COMMAND_OK, "ratelimit: expiring old hits")))
        goto error;
    PQclear(r);
    int64_t count = 0;
    if (exec_i64(db, SQL_COUNT, 2, uc, "ratelimit: counting hits", &count) != 1)
        goto error;
    if (count + n > limit) {
        int64_t leaves_at = now_ms + 1;      /* fallback: cannot happen */
        I64(offset, count + n - 1 - limit);
        const char *p3[3] = { user, cutoff, offset };
        int64_t at = 0;
        int got = exec_i64(db, SQL_NTH_OLDEST, 3, p3, "ratelimit: finding the oldest hit", &at);
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
    I64(nows, now_ms);
    I64(ns, n);
    const char *ins[3] = { user, nows, ns };
    if (!(r = db_pg_run(db, SQL_INSERT, 3, ins, PGRES_COMMAND_OK, "ratelimit: recording a hit")))
        goto error;
    PQclear(r);
    if (db_commit(db) < 0)
        return -1;
    return 1;
error:
    db_rollback(db);
    return -1;
}

int ratelimit_pg_prune(parley_db *db, int64_t window_ms, int64_t now_ms)
{
    I64(cutoff, now_ms - window_ms);
    const char *p[1] = { cutoff };
    PGresult *r = db_pg_run(db, SQL_PRUNE, 1, p, PGRES_COMMAND_OK, "ratelimit: pruning hits");
    if (!r)
        return -1;
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    return n;
}
