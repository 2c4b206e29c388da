/* storage/pg/pollsess.c — long-poll sessions' PostgreSQL bodies (contracts:
 * pollsess.h, steps: storage/pg/sessions.h; pollsess.c dispatches here when
 * db_pg_conn(db) is not NULL).
 *
 * Any node serves any request of a session, so two requests of one session
 * may run at once on two nodes. Under READ COMMITTED, where SQLite's
 * BEGIN IMMEDIATE ran them one at a time, every decision rests on the
 * session's row lock, never on a read followed by a write:
 *   - poll_lock's lease is one UPDATE ... WHERE <unexpired and unlocked, or
 *     the lease ran out> RETURNING: of two takers, the second waits for the
 *     first's row lock, re-checks the condition on the new row and takes
 *     nothing (one holder);
 *   - poll_save_ack reads next_seq with SELECT ... FOR NO KEY UPDATE (and
 *     lock_owner = me): nobody can take the lease over, or number frames,
 *     between that read and the save's UPDATE;
 *   - poll_pump locks every item's row (FOR NO KEY UPDATE, in sid order so
 *     two batches never deadlock) before it reads a state: a pump on
 *     another node waits, then reads the state this one saved, so an event
 *     pumped once is never appended twice, and frame numbers come from the
 *     locked next_seq ((sid, seq) is the primary key besides);
 *   - touch and ack lock the session row before they delete outbox rows,
 *     like every writer here: row locks are always taken session first;
 *   - poll_expire and poll_lock's clean-up delete a session only if it is
 *     still expired when its row is reached (the WHERE is re-checked on the
 *     newest row), so a session a request extended meanwhile stays;
 *   - poll_open's per-owner cap counts under a transaction-level advisory
 *     lock keyed by the owner (POLL_OWNER_NS, hashtext(owner)), taken in a
 *     statement of its own before the count: opens for one owner on any
 *     node count one after the other.
 * Every value is bound (db_pg_exec: text format, each statement prepared once per session). */
#include "storage/pg/pg.h"
#include "storage/pg/sessions.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first key of the per-owner lock ("prow"); ratelimit uses another. */
#define POLL_OWNER_NS "1886547831"

static const char SQL_CREATE[] =
    "INSERT INTO poll_sessions(sid, path, owner, state, next_seq, created_at, last_seen, "
    "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)";
static const char SQL_FRAME[] =
    "INSERT INTO poll_outbox(sid, seq, frame, created_at) VALUES ($1, $2, $3, $4)";
static const char SQL_LOCK[] =
    "UPDATE poll_sessions SET lock_owner = $1, lock_expires = $2 "
    "WHERE sid = $3 AND expires_at >= $4 AND (lock_owner IS NULL OR lock_expires < $4) "
    "RETURNING state, owner";
static const char SQL_EXPIRES[] = "SELECT expires_at FROM poll_sessions WHERE sid = $1";
static const char SQL_DELETE_EXPIRED_ONE[] =
    "DELETE FROM poll_sessions WHERE sid = $1 AND expires_at < $2";
static const char SQL_UNLOCK[] =
    "UPDATE poll_sessions SET lock_owner = NULL, lock_expires = NULL "
    "WHERE sid = $1 AND lock_owner = $2";
static const char SQL_PEEK[] =
    "SELECT s.state, s.owner, s.expires_at, s.next_seq, "
    "(SELECT min(o.seq) FROM poll_outbox o WHERE o.sid = s.sid) "
    "FROM poll_sessions s WHERE s.sid = $1";
static const char SQL_PENDING[] = "SELECT count(*) FROM poll_outbox WHERE sid = $1";
static const char SQL_OWNED[] =
    "SELECT count(*) FROM poll_sessions WHERE owner = $1 AND expires_at >= $2";
static const char SQL_OWNER_LOCK[] =
    "SELECT pg_advisory_xact_lock(" POLL_OWNER_NS ", hashtext($1))";
static const char SQL_ROW_LOCK[] =
    "SELECT 1 FROM poll_sessions WHERE sid = $1 FOR NO KEY UPDATE";
static const char SQL_ACK[] = "DELETE FROM poll_outbox WHERE sid = $1 AND seq <= $2";
static const char SQL_TOUCH[] =
    "UPDATE poll_sessions SET last_seen = $2, expires_at = $3 WHERE sid = $1";
static const char SQL_NEXT_MINE[] =
    "SELECT next_seq FROM poll_sessions WHERE sid = $1 AND lock_owner = $2 FOR NO KEY UPDATE";
static const char SQL_SAVE[] =
    "UPDATE poll_sessions SET next_seq = $2, state = coalesce($3, state), version = version + 1, "
    "lock_owner = NULL, lock_expires = NULL, last_seen = $4, expires_at = $5 WHERE sid = $1";
static const char SQL_READ[] =
    "SELECT seq, frame FROM poll_outbox WHERE sid = $1 AND seq > $2 ORDER BY seq LIMIT $3";
static const char SQL_DELETE[] = "DELETE FROM poll_sessions WHERE sid = $1";
/* expires_at < $1 again outside the subquery: it is re-checked on the
 * newest row, so a session extended after the subquery read it stays */
static const char SQL_EXPIRE[] =
    "DELETE FROM poll_sessions WHERE sid IN "
    "(SELECT sid FROM poll_sessions WHERE expires_at < $1 LIMIT 200) AND expires_at < $1";
static const char SQL_PUMP_GET[] =
    "SELECT state, next_seq, lock_owner, coalesce(lock_expires, 0), expires_at "
    "FROM poll_sessions WHERE sid = $1 FOR NO KEY UPDATE";
static const char SQL_PUMP_SAVE[] =
    "UPDATE poll_sessions SET next_seq = $2, state = coalesce($3, state), "
    "version = version + 1, last_seen = $4, expires_at = $5 WHERE sid = $1";

#define I64(buf, v) char buf[24]; snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(v))

/* A one-number query: 1 found (*out), 0 no row, -1 error. */
static int exec_i64(parley_db *db, const char *sql, int n, const char *const *params,
                    const char *what, int64_t *out)
{
    PGresult *r = db_pg_run(db, sql, n, params, PGRES_TUPLES_OK, what);
    if (!r)
        return -1;
    int got = PQntuples(r) > 0;
    if (got)
        *out = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return got;
}

/* 0 when sid cannot name a session: not UTF-8 (the sids are UUIDs this
 * module makes, and PostgreSQL refuses such text with an error). A
 * client's garbage is then "unknown", as on SQLite, not a database error. */
static int can_name(const char *sid)
{
    size_t n = strlen(sid);
    long cp;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_decode((const unsigned char *)sid + i, n - i, &cp);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Appends frames numbered from next, inside the caller's transaction. 0 / -1. */
static int insert_frames(parley_db *db, const char *sid, char *const *frames, int nframes,
                         int64_t next, int64_t now)
{
    I64(nows, now);
    for (int i = 0; i < nframes; i++) {
        I64(seq, next + i);
        const char *p[4] = { sid, seq, frames[i], nows };
        if (db_pg_command(db, SQL_FRAME, 4, p, "poll: storing a frame") < 0)
            return -1;
    }
    return 0;
}

/* Locks the session row (in the caller's transaction). 0 / -1. */
static int row_lock(parley_db *db, const char *sid)
{
    const char *p[1] = { sid };
    PGresult *r = db_pg_run(db, SQL_ROW_LOCK, 1, p, PGRES_TUPLES_OK, "poll: session lock");
    if (!r)
        return -1;
    PQclear(r);
    return 0;
}

/* Deletes acknowledged frames (seq <= upto; nothing when upto <= 0). 0 / -1. */
static int delete_acked(parley_db *db, const char *sid, int64_t upto)
{
    if (upto <= 0)
        return 0;
    I64(u, upto);
    const char *p[2] = { sid, u };
    return db_pg_command(db, SQL_ACK, 2, p, "poll: deleting acknowledged frames") < 0 ? -1 : 0;
}

int poll_pg_create(parley_db *db, const char *sid, const char *path, const char *owner,
                   int idle_s)
{
    return poll_pg_open(db, sid, path, owner, "{}", NULL, 0, idle_s, 0) == POLL_OK ? 0 : -1;
}

int poll_pg_lock_try(parley_db *db, const char *sid, int64_t now, int64_t lock_until,
                     char **state, char *owner, size_t ownerlen)
{
    if (!can_name(sid))
        return 0;
    I64(until, lock_until);
    I64(nows, now);
    const char *p[4] = { owner_id(), until, sid, nows };
    PGresult *r = db_pg_run(db, SQL_LOCK, 4, p, PGRES_TUPLES_OK, "poll: taking the session lock");
    if (!r)
        return -1;
    int got = PQntuples(r) == 1;
    if (got) {
        *state = strdup(PQgetvalue(r, 0, 0));
        if (owner)
            str_copy(owner, ownerlen, PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    if (got && !*state)
        return -1;      /* the lease is taken: poll_lock's caller gets an error, it runs out */
    return got;
}

enum poll_status poll_pg_lock_why(parley_db *db, const char *sid, int64_t now)
{
    if (!can_name(sid))
        return POLL_GONE;
    const char *p[1] = { sid };
    int64_t expires = 0;
    int got = exec_i64(db, SQL_EXPIRES, 1, p, "poll: reading the session", &expires);
    if (got < 0)
        return POLL_ERROR;
    if (got == 0)
        return POLL_GONE;
    if (expires >= now)
        return POLL_BUSY;
    I64(nows, now);
    const char *d[2] = { sid, nows };
    /* only while still expired: a request on another node may have extended it */
    int n = db_pg_command(db, SQL_DELETE_EXPIRED_ONE, 2, d, "poll: deleting an expired session");
    if (n < 0)
        return POLL_ERROR;
    return n > 0 ? POLL_GONE : POLL_BUSY;     /* extended meanwhile: look again */
}

void poll_pg_unlock(parley_db *db, const char *sid)
{
    if (!can_name(sid))
        return;
    const char *p[2] = { sid, owner_id() };
    db_pg_command(db, SQL_UNLOCK, 2, p, "poll: releasing the session lock");
}

enum poll_status poll_pg_peek_meta(parley_db *db, const char *sid, char **state, char *owner,
                                   size_t ownerlen, struct poll_meta *meta)
{
    if (!can_name(sid))
        return POLL_GONE;
    const char *p[1] = { sid };
    PGresult *r = db_pg_run(db, SQL_PEEK, 1, p, PGRES_TUPLES_OK, "poll: reading the session");
    if (!r)
        return POLL_ERROR;
    enum poll_status st = POLL_GONE;
    if (PQntuples(r) == 1) {
        int64_t expires = col_i64(r, 0, 2);
        if (expires >= now_ms()) {
            if (state)
                *state = strdup(PQgetvalue(r, 0, 0));
            if (owner)
                str_copy(owner, ownerlen, PQgetvalue(r, 0, 1));
            if (meta) {
                meta->expires_at = expires;
                meta->next_seq = col_i64(r, 0, 3);
                meta->stored = PQgetisnull(r, 0, 4) ? 0 : meta->next_seq - col_i64(r, 0, 4);
            }
            st = !state || *state ? POLL_OK : POLL_ERROR;
        }
    }
    PQclear(r);
    return st;
}

int poll_pg_pending(parley_db *db, const char *sid)
{
    if (!can_name(sid))
        return 0;
    const char *p[1] = { sid };
    int64_t n = 0;
    return exec_i64(db, SQL_PENDING, 1, p, "poll: counting frames", &n) == 1 ? (int)n : -1;
}

int poll_pg_owned(parley_db *db, const char *owner, int64_t now)
{
    I64(nows, now);
    const char *p[2] = { owner, nows };
    int64_t n = 0;
    return exec_i64(db, SQL_OWNED, 2, p, "poll: counting sessions", &n) == 1 ? (int)n : -1;
}

int poll_pg_touch(parley_db *db, const char *sid, int64_t ack_upto, int idle_s)
{
    if (!can_name(sid))
        return 0;                     /* as SQLite: touching nothing is no error */
    int64_t now = now_ms();
    I64(nows, now);
    I64(exp, now + (int64_t)idle_s * 1000);
    const char *p[3] = { sid, nows, exp };
    if (db_begin(db) < 0)
        return -1;
    /* the session row first (the UPDATE locks it), then its outbox */
    if (db_pg_command(db, SQL_TOUCH, 3, p, "poll: touching the session") < 0 ||
        delete_acked(db, sid, ack_upto) < 0) {
        db_rollback(db);
        return -1;
    }
    return db_commit(db);
}

int poll_pg_save_ack(parley_db *db, const char *sid, const char *state, char *const *frames,
                     int nframes, int idle_s, int64_t ack_upto)
{
    if (!can_name(sid) || db_begin(db) < 0)
        return -1;
    const char *p[2] = { sid, owner_id() };
    int64_t next = 0;
    /* locked: the lease cannot be taken over, nor frames numbered, until
     * this transaction ends */
    int got = exec_i64(db, SQL_NEXT_MINE, 2, p, "poll: reading the locked session", &next);
    if (got != 1)                     /* gone, or our lease was taken over */
        goto error;
    if (delete_acked(db, sid, ack_upto) < 0)
        goto error;
    int64_t now = now_ms();
    if (insert_frames(db, sid, frames, nframes, next, now) < 0)
        goto error;
    I64(nexts, next + nframes);
    I64(nows, now);
    I64(exp, now + (int64_t)idle_s * 1000);
    const char *u[5] = { sid, nexts, state, nows, exp };
    if (db_pg_command(db, SQL_SAVE, 5, u, "poll: saving the session") < 0)
        goto error;
    return db_commit(db);
error:
    db_rollback(db);
    return -1;
}

int poll_pg_read(parley_db *db, const char *sid, int64_t after, int max, char **json,
                 int64_t *last)
{
    if (!can_name(sid)) {
        *json = strdup("[]");
        return *json ? 0 : -1;
    }
    I64(afters, after);
    I64(lim, max > 0 ? max : 500);
    const char *p[3] = { sid, afters, lim };
    PGresult *r = db_pg_run(db, SQL_READ, 3, p, PGRES_TUPLES_OK, "poll: reading frames");
    if (!r)
        return -1;
    int n = PQntuples(r);
    size_t len = 2;
    for (int i = 0; i < n; i++)
        len += (size_t)PQgetlength(r, i, 1) + 1;
    char *buf = malloc(len + 1);
    if (!buf) {
        PQclear(r);
        return -1;
    }
    size_t at = 0;
    buf[at++] = '[';
    for (int i = 0; i < n; i++) {
        size_t fl = (size_t)PQgetlength(r, i, 1);
        if (i)
            buf[at++] = ',';
        memcpy(buf + at, PQgetvalue(r, i, 1), fl);
        at += fl;
        *last = col_i64(r, i, 0);
    }
    buf[at++] = ']';
    buf[at] = '\0';
    PQclear(r);
    *json = buf;
    return n;
}

int poll_pg_ack(parley_db *db, const char *sid, int64_t upto)
{
    if (!can_name(sid))
        return 0;
    if (db_begin(db) < 0)
        return -1;
    /* the session row first, as every writer of its outbox */
    if (row_lock(db, sid) < 0 || delete_acked(db, sid, upto) < 0) {
        db_rollback(db);
        return -1;
    }
    return db_commit(db);
}

enum poll_status poll_pg_delete(parley_db *db, const char *sid)
{
    if (!can_name(sid))
        return POLL_GONE;
    const char *p[1] = { sid };
    int n = db_pg_command(db, SQL_DELETE, 1, p, "poll: deleting a session");
    return n < 0 ? POLL_ERROR : n ? POLL_OK : POLL_GONE;
}

int poll_pg_expire(parley_db *db, int64_t now)
{
    I64(nows, now);
    const char *p[1] = { nows };
    return db_pg_command(db, SQL_EXPIRE, 1, p, "poll: deleting expired sessions");
}

enum poll_status poll_pg_open(parley_db *db, const char *sid, const char *path,
                              const char *owner, const char *state, char *const *frames,
                              int nframes, int idle_s, int max_owned)
{
    if (db_begin(db) < 0)
        return POLL_ERROR;
    int64_t now = now_ms();
    if (max_owned > 0 && *owner) {
        const char *o[1] = { owner };
        PGresult *r = db_pg_run(db, SQL_OWNER_LOCK, 1, o, PGRES_TUPLES_OK, "poll: owner lock");
        if (!r)
            goto error;
        PQclear(r);
        /* a statement of its own after the lock: its snapshot holds every
         * session the previous holder committed */
        int n = poll_pg_owned(db, owner, now);
        if (n < 0)
            goto error;
        if (n >= max_owned) {
            db_rollback(db);
            return POLL_FULL;
        }
    }
    I64(nexts, (int64_t)nframes + 1);
    I64(nows, now);
    I64(exp, now + (int64_t)idle_s * 1000);
    const char *p[7] = { sid, path, owner, state, nexts, nows, exp };
    if (db_pg_command(db, SQL_CREATE, 7, p, "poll: creating a session") < 0 ||
        insert_frames(db, sid, frames, nframes, 1, now) < 0)
        goto error;
    return db_commit(db) == 0 ? POLL_OK : POLL_ERROR;
error:
    db_rollback(db);
    return POLL_ERROR;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int poll_pg_pump_lock(parley_db *db, const struct poll_item *items, int n)
{
    const char **sids = malloc((size_t)n * sizeof *sids);
    if (!sids)
        return -1;
    for (int i = 0; i < n; i++)
        sids[i] = items[i].sid;
    qsort(sids, (size_t)n, sizeof *sids, cmp_str);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        if ((i == 0 || strcmp(sids[i], sids[i - 1]) != 0) && can_name(sids[i]))
            rc = row_lock(db, sids[i]);
    free(sids);
    return rc;
}

int poll_pg_pump_get(parley_db *db, const char *sid, char **state, int64_t *next,
                     char *lock, size_t locklen, int64_t *lock_expires, int64_t *expires)
{
    if (!can_name(sid))
        return 0;
    const char *p[1] = { sid };
    PGresult *r = db_pg_run(db, SQL_PUMP_GET, 1, p, PGRES_TUPLES_OK, "poll: reading the session");
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return 0;
    }
    *next = col_i64(r, 0, 1);
    str_copy(lock, locklen, PQgetisnull(r, 0, 2) ? "" : PQgetvalue(r, 0, 2));
    *lock_expires = col_i64(r, 0, 3);
    *expires = col_i64(r, 0, 4);
    *state = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return *state ? 1 : -1;
}

int poll_pg_pump_write(parley_db *db, const char *sid, int64_t ack, const char *state,
                       char *const *frames, int nframes, int64_t next, int idle_s, int64_t now)
{
    if (delete_acked(db, sid, ack) < 0 || insert_frames(db, sid, frames, nframes, next, now) < 0)
        return -1;
    I64(nexts, next + nframes);
    I64(nows, now);
    I64(exp, now + (int64_t)idle_s * 1000);
    const char *u[5] = { sid, nexts, state, nows, exp };
    return db_pg_command(db, SQL_PUMP_SAVE, 5, u, "poll: saving the session") < 0 ? -1 : 0;
}
