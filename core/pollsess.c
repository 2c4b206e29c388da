/* pollsess.c — long-poll sessions and their outboxes (pollsess.h).
 * SQLite bodies here; on a PostgreSQL connection (db_pg_conn) each public
 * function goes to storage/pg/pollsess.c, except the loops both backends
 * share: poll_lock's wait for the lease and poll_pump's items (their
 * backend steps dispatch). */
#include "pollsess.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/sessions.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCK_MS 5000          /* a lock outlives a crashed holder this long */
#define LOCK_WAIT_MS 2000

int poll_create(parley_db *db, const char *path, const char *owner, int idle_s, char sid[37])
{
    static const char sql[] =
        "INSERT INTO poll_sessions(sid, path, owner, state, next_seq, created_at, last_seen, "
        "expires_at) VALUES (?1, ?2, ?3, '{}', 1, ?4, ?4, ?5)";
    if (uuid_v4(sid) < 0)
        return -1;
    if (db_pg_conn(db))
        return poll_pg_create(db, sid, path, owner ? owner : "", idle_s);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    int64_t now = now_ms();
    db_bind_text(st, 1, sid);
    db_bind_text(st, 2, path);
    db_bind_text(st, 3, owner ? owner : "");
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int64(st, 5, now + (int64_t)idle_s * 1000);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* SQLite: poll_lock's one attempt (as poll_pg_lock_try). 1 taken, 0 not, -1 error. */
static int lock_try(parley_db *db, const char *sid, int64_t now, int64_t lock_until,
                    char **state, char *owner, size_t ownerlen)
{
    static const char sql_lock[] =
        "UPDATE poll_sessions SET lock_owner = ?1, lock_expires = ?2 "
        "WHERE sid = ?3 AND expires_at >= ?4 AND (lock_owner IS NULL OR lock_expires < ?4) "
        "RETURNING state, owner";
    sqlite3_stmt *st = db_stmt(db, sql_lock);
    if (!st)
        return -1;
    db_bind_text(st, 1, owner_id());
    sqlite3_bind_int64(st, 2, lock_until);
    db_bind_text(st, 3, sid);
    sqlite3_bind_int64(st, 4, now);
    if (db_begin(db) < 0)      /* through the process's write gate */
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *state = db_col_strdup(st, 0);
        if (owner)
            str_copy(owner, ownerlen, (const char *)sqlite3_column_text(st, 1));
        sqlite3_step(st);
        sqlite3_reset(st);
        if (!*state || db_commit(db) < 0) {
            db_rollback(db);
            free(*state);
            *state = NULL;
            return -1;
        }
        return 1;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE || db_commit(db) < 0) {
        db_rollback(db);
        return -1;
    }
    return 0;
}

/* SQLite: why the attempt failed (as poll_pg_lock_why): POLL_GONE (an
 * expired session is deleted), POLL_BUSY, POLL_ERROR. */
static enum poll_status lock_why(parley_db *db, const char *sid, int64_t now)
{
    static const char sql_peek[] = "SELECT expires_at FROM poll_sessions WHERE sid = ?";
    sqlite3_stmt *st = db_stmt(db, sql_peek);
    if (!st)
        return POLL_ERROR;
    db_bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    int64_t expires = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return POLL_GONE;
    if (rc != SQLITE_ROW)
        return POLL_ERROR;
    if (expires < now) {
        poll_delete(db, sid);
        return POLL_GONE;
    }
    return POLL_BUSY;
}

enum poll_status poll_lock(parley_db *db, const char *sid, int idle_s, char **state,
                           char *owner, size_t ownerlen)
{
    (void)idle_s;
    *state = NULL;
    int pg = db_pg_conn(db) != NULL;
    int64_t deadline = mono_ms() + LOCK_WAIT_MS;
    for (int attempt = 0;; attempt++) {
        int64_t now = now_ms();
        int got = pg ? poll_pg_lock_try(db, sid, now, now + LOCK_MS, state, owner, ownerlen)
                     : lock_try(db, sid, now, now + LOCK_MS, state, owner, ownerlen);
        if (got < 0)
            return POLL_ERROR;
        if (got)
            return POLL_OK;
        enum poll_status why = pg ? poll_pg_lock_why(db, sid, now) : lock_why(db, sid, now);
        if (why != POLL_BUSY)
            return why;
        if (mono_ms() >= deadline)
            return POLL_BUSY;
        struct timespec ts = { 0, (attempt < 10 ? 500 : 3000) * 1000L };
        nanosleep(&ts, NULL);
    }
}

void poll_unlock(parley_db *db, const char *sid)
{
    static const char sql[] =
        "UPDATE poll_sessions SET lock_owner = NULL, lock_expires = NULL "
        "WHERE sid = ? AND lock_owner = ?";
    if (db_pg_conn(db)) {
        poll_pg_unlock(db, sid);
        return;
    }
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return;
    db_bind_text(st, 1, sid);
    db_bind_text(st, 2, owner_id());
    sqlite3_step(st);
    sqlite3_reset(st);
}

enum poll_status poll_peek_meta(parley_db *db, const char *sid, char **state, char *owner,
                                size_t ownerlen, struct poll_meta *meta)
{
    static const char sql[] =
        "SELECT s.state, s.owner, s.expires_at, s.next_seq, "
        "(SELECT min(o.seq) FROM poll_outbox o WHERE o.sid = s.sid) "
        "FROM poll_sessions s WHERE s.sid = ?";
    if (state)
        *state = NULL;
    if (db_pg_conn(db))
        return poll_pg_peek_meta(db, sid, state, owner, ownerlen, meta);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return POLL_ERROR;
    db_bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    enum poll_status r = rc == SQLITE_DONE ? POLL_GONE : POLL_ERROR;
    if (rc == SQLITE_ROW) {
        int64_t expires = sqlite3_column_int64(st, 2);
        if (expires < now_ms()) {
            r = POLL_GONE;
        } else {
            if (state)
                *state = db_col_strdup(st, 0);
            if (owner)
                str_copy(owner, ownerlen, (const char *)sqlite3_column_text(st, 1));
            if (meta) {
                meta->expires_at = expires;
                meta->next_seq = sqlite3_column_int64(st, 3);
                meta->stored = sqlite3_column_type(st, 4) == SQLITE_NULL
                                   ? 0
                                   : meta->next_seq - sqlite3_column_int64(st, 4);
            }
            r = !state || *state ? POLL_OK : POLL_ERROR;
        }
    }
    sqlite3_reset(st);
    return r;
}

enum poll_status poll_peek(parley_db *db, const char *sid, char **state, char *owner,
                           size_t ownerlen, int64_t *expires_at)
{
    struct poll_meta m;
    enum poll_status r = poll_peek_meta(db, sid, state, owner, ownerlen, &m);
    if (r == POLL_OK && expires_at)
        *expires_at = m.expires_at;
    return r;
}

int poll_pending(parley_db *db, const char *sid)
{
    static const char sql[] = "SELECT count(*) FROM poll_outbox WHERE sid = ?";
    if (db_pg_conn(db))
        return poll_pg_pending(db, sid);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

/* Counts owner's unexpired sessions. Count or -1. */
static int count_owned(parley_db *db, const char *owner, int64_t now)
{
    static const char sql[] =
        "SELECT count(*) FROM poll_sessions WHERE owner = ? AND expires_at >= ?";
    if (db_pg_conn(db))
        return poll_pg_owned(db, owner, now);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, owner);
    sqlite3_bind_int64(st, 2, now);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

int poll_owned(parley_db *db, const char *owner, int64_t now)
{
    return count_owned(db, owner ? owner : "", now);
}

int poll_touch(parley_db *db, const char *sid, int64_t ack_upto, int idle_s)
{
    static const char sql_ack[] = "DELETE FROM poll_outbox WHERE sid = ? AND seq <= ?";
    static const char sql_touch[] =
        "UPDATE poll_sessions SET last_seen = ?2, expires_at = ?3 WHERE sid = ?1";
    if (db_pg_conn(db))
        return poll_pg_touch(db, sid, ack_upto, idle_s);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st;
    int rc;
    if (ack_upto > 0) {
        if (!(st = db_stmt(db, sql_ack)))
            goto error;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, ack_upto);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto error;
    }
    if (!(st = db_stmt(db, sql_touch)))
        goto error;
    int64_t now = now_ms();
    db_bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, now + (int64_t)idle_s * 1000);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        goto error;
    return db_commit(db);
error:
    db_rollback(db);
    return -1;
}

int poll_save(parley_db *db, const char *sid, const char *state, char *const *frames,
              int nframes, int idle_s)
{
    return poll_save_ack(db, sid, state, frames, nframes, idle_s, 0);
}

int poll_save_ack(parley_db *db, const char *sid, const char *state, char *const *frames,
                  int nframes, int idle_s, int64_t ack_upto)
{
    static const char sql_ack[] = "DELETE FROM poll_outbox WHERE sid = ? AND seq <= ?";
    static const char sql_next[] = "SELECT next_seq FROM poll_sessions WHERE sid = ? AND lock_owner = ?";
    static const char sql_frame[] =
        "INSERT INTO poll_outbox(sid, seq, frame, created_at) VALUES (?, ?, ?, ?)";
    static const char sql_update[] =
        "UPDATE poll_sessions SET next_seq = ?2, state = coalesce(?3, state), version = version + 1, "
        "lock_owner = NULL, lock_expires = NULL, last_seen = ?4, expires_at = ?5 WHERE sid = ?1";
    if (db_pg_conn(db))
        return poll_pg_save_ack(db, sid, state, frames, nframes, idle_s, ack_upto);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, sql_next);
    if (!st)
        goto error;
    db_bind_text(st, 1, sid);
    db_bind_text(st, 2, owner_id());
    if (sqlite3_step(st) != SQLITE_ROW) {    /* gone, or our lock was taken over */
        sqlite3_reset(st);
        goto error;
    }
    int64_t next = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (ack_upto > 0) {
        if (!(st = db_stmt(db, sql_ack)))
            goto error;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, ack_upto);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto error;
    }
    int64_t now = now_ms();
    for (int i = 0; i < nframes; i++) {
        st = db_stmt(db, sql_frame);
        if (!st)
            goto error;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, next++);
        db_bind_text(st, 3, frames[i]);
        sqlite3_bind_int64(st, 4, now);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto error;
    }
    st = db_stmt(db, sql_update);
    if (!st)
        goto error;
    db_bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, next);
    db_bind_text(st, 3, state);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int64(st, 5, now + (int64_t)idle_s * 1000);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        goto error;
    return db_commit(db);
error:
    db_rollback(db);
    return -1;
}

int poll_read(parley_db *db, const char *sid, int64_t after, int max, char **json, int64_t *last)
{
    static const char sql[] =
        "SELECT seq, frame FROM poll_outbox WHERE sid = ? AND seq > ? ORDER BY seq LIMIT ?";
    *json = NULL;
    *last = after;
    if (db_pg_conn(db))
        return poll_pg_read(db, sid, after, max, json, last);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, max > 0 ? max : 500);
    size_t len = 1, cap = 256;
    char *buf = malloc(cap);
    int n = 0, rc;
    if (!buf) {
        sqlite3_reset(st);
        return -1;
    }
    buf[0] = '[';
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *f = (const char *)sqlite3_column_text(st, 1);
        size_t fl = (size_t)sqlite3_column_bytes(st, 1);
        if (len + fl + 3 > cap) {
            while (len + fl + 3 > cap)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = SQLITE_NOMEM;
                break;
            }
            buf = nb;
        }
        if (n)
            buf[len++] = ',';
        memcpy(buf + len, f, fl);
        len += fl;
        *last = sqlite3_column_int64(st, 0);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(buf);
        return -1;
    }
    buf[len++] = ']';
    buf[len] = '\0';
    *json = buf;
    return n;
}

int poll_ack(parley_db *db, const char *sid, int64_t upto)
{
    if (db_pg_conn(db))
        return poll_pg_ack(db, sid, upto);
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM poll_outbox WHERE sid = ? AND seq <= ?");
    if (!st)
        return -1;
    db_bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, upto);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

enum poll_status poll_delete(parley_db *db, const char *sid)
{
    if (db_pg_conn(db))
        return poll_pg_delete(db, sid);
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM poll_sessions WHERE sid = ?");
    if (!st)
        return POLL_ERROR;
    db_bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return POLL_ERROR;
    return changed ? POLL_OK : POLL_GONE;
}

int poll_expire(parley_db *db, int64_t now)
{
    static const char sql[] =
        "DELETE FROM poll_sessions WHERE sid IN "
        "(SELECT sid FROM poll_sessions WHERE expires_at < ? LIMIT 200)";
    if (db_pg_conn(db))
        return poll_pg_expire(db, now);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? changed : -1;
}

enum poll_status poll_open(parley_db *db, const char *path, const char *owner,
                           const char *state, char *const *frames, int nframes, int idle_s,
                           int max_owned, char sid[37])
{
    static const char sql[] =
        "INSERT INTO poll_sessions(sid, path, owner, state, next_seq, created_at, last_seen, "
        "expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)";
    static const char sql_frame[] =
        "INSERT INTO poll_outbox(sid, seq, frame, created_at) VALUES (?, ?, ?, ?)";
    if (uuid_v4(sid) < 0)
        return POLL_ERROR;
    if (db_pg_conn(db))
        return poll_pg_open(db, sid, path, owner ? owner : "", state ? state : "{}", frames,
                            nframes, idle_s, max_owned);
    if (db_begin(db) < 0)
        return POLL_ERROR;
    int64_t now = now_ms();
    if (max_owned > 0 && owner && *owner) {
        int n = count_owned(db, owner, now);
        if (n < 0)
            goto error;
        if (n >= max_owned) {
            db_rollback(db);
            return POLL_FULL;
        }
    }
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        goto error;
    db_bind_text(st, 1, sid);
    db_bind_text(st, 2, path);
    db_bind_text(st, 3, owner ? owner : "");
    db_bind_text(st, 4, state ? state : "{}");
    sqlite3_bind_int64(st, 5, (int64_t)nframes + 1);
    sqlite3_bind_int64(st, 6, now);
    sqlite3_bind_int64(st, 7, now + (int64_t)idle_s * 1000);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        goto error;
    for (int i = 0; i < nframes; i++) {
        if (!(st = db_stmt(db, sql_frame)))
            goto error;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, i + 1);
        db_bind_text(st, 3, frames[i]);
        sqlite3_bind_int64(st, 4, now);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto error;
    }
    return db_commit(db) == 0 ? POLL_OK : POLL_ERROR;
error:
    db_rollback(db);
    return POLL_ERROR;
}

static void update_free(struct poll_update *u)
{
    free(u->state);
    for (int i = 0; i < u->nframes; i++)
        free(u->frames[i]);
    free(u->frames);
    memset(u, 0, sizeof *u);
}

/* SQLite: writes one item's change inside the open transaction (as
 * poll_pg_pump_write). 0 / -1. */
static int pump_write(parley_db *db, const char *sid, int64_t ack, const char *state,
                      char *const *frames, int nframes, int64_t next, int idle_s, int64_t now)
{
    static const char sql_ack[] = "DELETE FROM poll_outbox WHERE sid = ? AND seq <= ?";
    static const char sql_frame[] =
        "INSERT INTO poll_outbox(sid, seq, frame, created_at) VALUES (?, ?, ?, ?)";
    static const char sql_update[] =
        "UPDATE poll_sessions SET next_seq = ?2, state = coalesce(?3, state), "
        "version = version + 1, last_seen = ?4, expires_at = ?5 WHERE sid = ?1";
    sqlite3_stmt *st;
    int rc;
    if (ack > 0) {
        if (!(st = db_stmt(db, sql_ack)))
            return -1;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, ack);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return -1;
    }
    for (int i = 0; i < nframes; i++) {
        if (!(st = db_stmt(db, sql_frame)))
            return -1;
        db_bind_text(st, 1, sid);
        sqlite3_bind_int64(st, 2, next++);
        db_bind_text(st, 3, frames[i]);
        sqlite3_bind_int64(st, 4, now);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return -1;
    }
    if (!(st = db_stmt(db, sql_update)))
        return -1;
    db_bind_text(st, 1, sid);
    sqlite3_bind_int64(st, 2, next);
    db_bind_text(st, 3, state);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int64(st, 5, now + (int64_t)idle_s * 1000);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* SQLite: reads one item's session row inside the open transaction (as
 * poll_pg_pump_get). 1 found (*state new), 0 unknown, -1 error. */
static int pump_get(parley_db *db, const char *sid, char **state, int64_t *next, char *lock,
                    size_t locklen, int64_t *lock_expires, int64_t *expires)
{
    static const char sql_get[] =
        "SELECT state, next_seq, lock_owner, lock_expires, expires_at FROM poll_sessions "
        "WHERE sid = ?";
    sqlite3_stmt *st = db_stmt(db, sql_get);
    if (!st)
        return -1;
    db_bind_text(st, 1, sid);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? 0 : -1;
    }
    *next = sqlite3_column_int64(st, 1);
    const char *l = (const char *)sqlite3_column_text(st, 2);
    str_copy(lock, locklen, l ? l : "");
    *lock_expires = sqlite3_column_int64(st, 3);
    *expires = sqlite3_column_int64(st, 4);
    *state = db_col_strdup(st, 0);
    sqlite3_reset(st);
    return *state ? 1 : -1;
}

int poll_pump(parley_db *db, struct poll_item *items, int n, int idle_s, poll_pump_fn fn,
              void *fnarg)
{
    for (int i = 0; i < n; i++) {
        items[i].status = POLL_ERROR;
        items[i].changed = 0;
        items[i].next_seq = 0;
    }
    if (n <= 0)
        return 0;
    int pg = db_pg_conn(db) != NULL;
    if (db_begin(db) < 0)
        return -1;
    /* PostgreSQL: every item's row locked first, in one order (SQLite's
     * write transaction already excludes every other writer) */
    if (pg && poll_pg_pump_lock(db, items, n) < 0)
        goto error;
    int64_t now = now_ms();
    const char *me = owner_id();
    for (int i = 0; i < n; i++) {
        struct poll_item *it = &items[i];
        char *state = NULL, lock[128];
        int64_t next = 0, lock_expires = 0, expires = 0;
        int got = pg ? poll_pg_pump_get(db, it->sid, &state, &next, lock, sizeof lock,
                                        &lock_expires, &expires)
                     : pump_get(db, it->sid, &state, &next, lock, sizeof lock,
                                &lock_expires, &expires);
        if (got < 0)
            goto error;
        if (got == 0) {
            it->status = POLL_GONE;
            continue;
        }
        it->next_seq = next;
        if (expires < now) {
            free(state);
            it->status = POLL_GONE;
            continue;
        }
        if (lock[0] && lock_expires >= now && strcmp(lock, me) != 0) {
            free(state);
            it->status = POLL_BUSY;
            continue;
        }
        struct poll_update u = { NULL, NULL, 0, 0 };
        int r = fn(fnarg, it, state, &u);
        free(state);
        if (r < 0) {
            update_free(&u);
            it->status = POLL_ERROR;
            continue;
        }
        if (u.state || u.nframes > 0) {
            int idle = u.idle_s > 0 ? u.idle_s : idle_s;
            int w = pg ? poll_pg_pump_write(db, it->sid, it->ack, u.state, u.frames, u.nframes,
                                            next, idle, now)
                       : pump_write(db, it->sid, it->ack, u.state, u.frames, u.nframes,
                                    next, idle, now);
            if (w < 0) {
                update_free(&u);
                goto error;
            }
            it->next_seq = next + u.nframes;
            it->changed = 1;
        }
        update_free(&u);
        it->status = POLL_OK;
    }
    if (db_commit(db) == 0)
        return 0;
error:
    db_rollback(db);
    for (int i = 0; i < n; i++) {
        items[i].status = POLL_ERROR;
        items[i].changed = 0;
    }
    return -1;
}
