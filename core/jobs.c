/* jobs.c — single-flight job claims, leases and recovery (see jobs.h).
 * Each public function that touches storage dispatches on the backend: a
 * PostgreSQL connection (db_pg_conn) goes to storage/pg/jobs.c. */
#include "jobs.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "evlog.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_FIND_RUNNING[] =
    "SELECT id, lease_expires, first_seq FROM jobs "
    "WHERE channel = ? AND prompt_key = ? AND state = 'running'";
static const char SQL_INSERT[] =
    "INSERT INTO jobs(channel, prompt_key, state, lease_owner, lease_expires, first_seq, created_at, "
    "started_by) VALUES (?, ?, 'running', ?, ?, ?, ?, ?) RETURNING id";
static const char SQL_RENEW[] =
    "UPDATE jobs SET lease_expires = ? WHERE id = ? AND state = 'running' AND lease_owner = ?";
static const char SQL_FINISH[] =
    "UPDATE jobs SET state = ?, error = ?, finished_at = ?, lease_expires = NULL "
    "WHERE id = ? AND state = 'running' AND lease_owner = ?";
/* lease_expires < now again: the sweep read the job as expired before its
 * transaction began, and its owner may have renewed the lease since. */
static const char SQL_FAIL_EXPIRED[] =
    "UPDATE jobs SET state = 'failed', error = ?1, finished_at = ?2, lease_expires = NULL "
    "WHERE id = ?3 AND state = 'running' AND lease_expires < ?2 RETURNING channel";
static const char SQL_EXPIRED[] =
    "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < ? LIMIT 64";
static const char SQL_GET[] =
    "SELECT state, lease_expires, first_seq, error, coalesce(started_by, ''), "
    "stop_requested_at IS NOT NULL, stopped_at IS NOT NULL FROM jobs WHERE id = ?";
/* Stopping (docs/stop.md). */
static const char SQL_STOP_PICK[] =
    "SELECT id FROM jobs WHERE channel = ? ORDER BY state = 'running' DESC, id DESC LIMIT 1";
static const char SQL_STOP_MARK[] =
    "UPDATE jobs SET stop_requested_at = coalesce(stop_requested_at, ?1), "
    "stop_requested_by = coalesce(stop_requested_by, ?2) "
    "WHERE id = ?3 AND state = 'running' AND (?4 = 1 OR started_by = ?2) RETURNING channel";
static const char SQL_STOP_PENDING[] =
    "SELECT id FROM jobs WHERE lease_owner = ? AND state = 'running' "
    "AND stop_requested_at IS NOT NULL LIMIT 256";
static const char SQL_FINISH_STOPPED[] =
    "UPDATE jobs SET state = 'done', stopped_at = ?1, finished_at = ?1, lease_expires = NULL "
    "WHERE id = ?2 AND state = 'running' AND lease_owner = ?3";

/* The JSON data of an "error" event. New string. */
static char *error_event_data(int64_t job_id, const char *kind, const char *msg)
{
    json_t *o = json_pack("{s:I, s:s, s:s}", "job_id", (json_int_t)job_id,
                          "message", msg, "kind", kind);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Inside a transaction: fails job_id (if still running and its lease
 * expired before now) and appends its error event. Copies the channel into chan for the caller's ring.
 * Returns 1 if failed now, 0 if it was no longer running, -1 on error. */
static int fail_expired_tx(parley_db *db, int64_t job_id, int64_t now,
                           char *chan, size_t chanlen)
{
    sqlite3_stmt *st = db_stmt(db, SQL_FAIL_EXPIRED);
    if (!st)
        return -1;
    db_bind_text(st, 1, JOB_INTERRUPTED_MSG);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, job_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? 0 : -1;
    }
    str_copy(chan, chanlen, (const char *)sqlite3_column_text(st, 0));
    sqlite3_step(st);
    sqlite3_reset(st);
    char *data = error_event_data(job_id, "interrupted", JOB_INTERRUPTED_MSG);
    if (!data)
        return -1;
    int64_t seq = evlog_append_tx(db, chan, job_id, "error", data, strlen(data));
    free(data);
    return seq < 0 ? -1 : 1;
}

int jobs_claim(parley_db *db, parley_bell *bell, const char *channel,
               const char *prompt_key, int lease_ms, struct job_claim *out,
               char *err, size_t errlen)
{
    return jobs_claim_as(db, bell, channel, prompt_key, NULL, lease_ms, out, err, errlen);
}

int jobs_claim_as(parley_db *db, parley_bell *bell, const char *channel,
                  const char *prompt_key, const char *user, int lease_ms,
                  struct job_claim *out, char *err, size_t errlen)
{
    if (db_pg_conn(db))
        return jobs_pg_claim(db, bell, channel, prompt_key, user, lease_ms, out, err, errlen);
    memset(out, 0, sizeof *out);
    int rang = 0;
    /* A generation must be able to write until it ends: none starts while
     * the database is read-only (db_err_kind tells the caller so). */
    if (db_can_write(db) < 0)
        return set_err(err, errlen, "cannot claim job on %s: %s", channel, db_errmsg(db));
    if (db_begin(db) < 0)
        return set_err(err, errlen, "database busy or unavailable: %s", db_errmsg(db));
    int64_t now = now_ms();
    sqlite3_stmt *st = db_stmt(db, SQL_FIND_RUNNING);
    if (!st)
        goto error;
    db_bind_text(st, 1, channel);
    db_bind_text(st, 2, prompt_key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int64_t expires = sqlite3_column_int64(st, 1);
        int64_t first = sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
        if (expires >= now) {
            out->job_id = id;
            out->owner = 0;
            out->first_seq = first;
            return db_commit(db) < 0 ? set_err(err, errlen, "commit failed") : 0;
        }
        char chan[512];
        if (fail_expired_tx(db, id, now, chan, sizeof chan) < 0)
            goto error;
        rang = 1;
    } else {
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto error;
    }
    int64_t first = evlog_last_seq(db, channel);
    if (first < 0)
        goto error;
    st = db_stmt(db, SQL_INSERT);
    if (!st)
        goto error;
    db_bind_text(st, 1, channel);
    db_bind_text(st, 2, prompt_key);
    db_bind_text(st, 3, owner_id());
    sqlite3_bind_int64(st, 4, now + lease_ms);
    sqlite3_bind_int64(st, 5, first);
    sqlite3_bind_int64(st, 6, now);
    db_bind_text(st, 7, user);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        goto error;
    }
    out->job_id = sqlite3_column_int64(st, 0);
    out->owner = 1;
    str_copy(out->lease_owner, sizeof out->lease_owner, owner_id());
    out->first_seq = first;
    sqlite3_reset(st);
    if (db_commit(db) < 0)
        return set_err(err, errlen, "commit failed: %s", db_errmsg(db));
    if (rang && bell)
        db_ring_at_end(db, bell, channel);
    return 0;
error:
    set_err(err, errlen, "cannot claim job on %s: %s", channel, db_errmsg(db));
    db_rollback(db);
    return -1;
}

int jobs_claim_turn(parley_db *db, parley_bell *bell, const char *channel, const char *conv_id,
                    const char *msg_id, const char *user, int lease_ms, struct job_claim *out,
                    char *err, size_t errlen)
{
    static const char running[] =
        "SELECT id, lease_expires, first_seq FROM jobs WHERE channel = ? AND state = 'running' "
        "ORDER BY id DESC LIMIT 1";
    static const char oldest[] =
        "SELECT id FROM messages WHERE conversation_id = ? AND queued = 1 "
        "ORDER BY created_at, rowid LIMIT 1";
    static const char take[] =
        "UPDATE messages SET queued = 0, created_at = max(?2, (SELECT coalesce(max(created_at), 0) + 1 "
        "FROM messages WHERE conversation_id = ?3 AND queued = 0)) WHERE id = ?1 AND queued = 1";
    if (db_pg_conn(db))
        return jobs_pg_claim_turn(db, bell, channel, conv_id, msg_id, user, lease_ms, out, err,
                                  errlen);
    memset(out, 0, sizeof *out);
    int rang = 0, rc = JOBS_TURN_ERR;
    if (db_can_write(db) < 0)
        return set_err(err, errlen, "cannot claim a turn on %s: %s", channel, db_errmsg(db));
    if (db_begin(db) < 0)
        return set_err(err, errlen, "database busy or unavailable: %s", db_errmsg(db));
    int64_t now = now_ms();
    for (int i = 0; i < 64; i++) {             /* fail expired ones until a live one or none */
        sqlite3_stmt *st = db_stmt(db, running);
        if (!st)
            goto error;
        db_bind_text(st, 1, channel);
        int s = sqlite3_step(st);
        if (s != SQLITE_ROW) {
            sqlite3_reset(st);
            if (s != SQLITE_DONE)
                goto error;
            break;
        }
        int64_t id = sqlite3_column_int64(st, 0);
        int64_t expires = sqlite3_column_int64(st, 1);
        int64_t first = sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
        if (expires >= now) {
            out->job_id = id;
            out->first_seq = first;
            rc = JOBS_TURN_BUSY;
            goto commit;
        }
        char chan[512];
        if (fail_expired_tx(db, id, now, chan, sizeof chan) < 0)
            goto error;
        rang = 1;
    }
    sqlite3_stmt *st = db_stmt(db, oldest);
    if (!st)
        goto error;
    db_bind_text(st, 1, conv_id);
    int s = sqlite3_step(st);
    char first_id[64] = "";
    if (s == SQLITE_ROW)
        str_copy(first_id, sizeof first_id, (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    if (s != SQLITE_ROW && s != SQLITE_DONE)
        goto error;
    if (!first_id[0] || strcmp(first_id, msg_id) != 0) {
        rc = first_id[0] ? JOBS_TURN_MOVED : JOBS_TURN_EMPTY;
        goto commit;
    }
    if (!(st = db_stmt(db, take)))
        goto error;
    db_bind_text(st, 1, msg_id);
    sqlite3_bind_int64(st, 2, now);
    db_bind_text(st, 3, conv_id);
    if (sqlite3_step(st) != SQLITE_DONE) {
        sqlite3_reset(st);
        goto error;
    }
    sqlite3_reset(st);
    int64_t first = evlog_last_seq(db, channel);
    if (first < 0 || !(st = db_stmt(db, SQL_INSERT)))
        goto error;
    db_bind_text(st, 1, channel);
    db_bind_text(st, 2, msg_id);
    db_bind_text(st, 3, owner_id());
    sqlite3_bind_int64(st, 4, now + lease_ms);
    sqlite3_bind_int64(st, 5, first);
    sqlite3_bind_int64(st, 6, now);
    db_bind_text(st, 7, user);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        goto error;
    }
    out->job_id = sqlite3_column_int64(st, 0);
    out->owner = 1;
    out->first_seq = first;
    str_copy(out->lease_owner, sizeof out->lease_owner, owner_id());
    sqlite3_reset(st);
    rc = JOBS_TURN_OK;
commit:
    if (db_commit(db) < 0)
        return set_err(err, errlen, "commit failed: %s", db_errmsg(db));
    if (rang && bell)
        db_ring_at_end(db, bell, channel);
    return rc;
error:
    set_err(err, errlen, "cannot claim a turn on %s: %s", channel, db_errmsg(db));
    db_rollback(db);
    return JOBS_TURN_ERR;
}

int jobs_adopt(parley_db *db, struct job_claim *claim, int lease_ms)
{
    if (db_pg_conn(db))
        return jobs_pg_adopt(db, claim, lease_ms);
    static const char sql[] =
        "UPDATE jobs SET lease_owner = ?1, lease_expires = ?2 "
        "WHERE id = ?3 AND state = 'running' AND lease_owner = ?4";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, owner_id());
    sqlite3_bind_int64(st, 2, now_ms() + lease_ms);
    sqlite3_bind_int64(st, 3, claim->job_id);
    db_bind_text(st, 4, claim->lease_owner);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE || changed != 1)
        return -1;
    str_copy(claim->lease_owner, sizeof claim->lease_owner, owner_id());
    return 0;
}

int jobs_renew(parley_db *db, int64_t job_id, int lease_ms)
{
    if (db_pg_conn(db))
        return jobs_pg_renew(db, job_id, lease_ms);
    sqlite3_stmt *st = db_stmt(db, SQL_RENEW);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now_ms() + lease_ms);
    sqlite3_bind_int64(st, 2, job_id);
    db_bind_text(st, 3, owner_id());
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    return rc == SQLITE_DONE && changed == 1 ? 0 : -1;
}

int jobs_finish_tx(parley_db *db, int64_t job_id, const char *error)
{
    if (db_pg_conn(db))
        return jobs_pg_finish_tx(db, job_id, error);
    sqlite3_stmt *st = db_stmt(db, SQL_FINISH);
    if (!st)
        return -1;
    db_bind_text(st, 1, error ? "failed" : "done");
    db_bind_text(st, 2, error);
    sqlite3_bind_int64(st, 3, now_ms());
    sqlite3_bind_int64(st, 4, job_id);
    db_bind_text(st, 5, owner_id());
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    return rc == SQLITE_DONE && changed == 1 ? 0 : -1;
}

int jobs_recover(parley_db *db, parley_bell *bell, int64_t now)
{
    int pg = db_pg_conn(db) != NULL;
    int64_t ids[64];
    int n = 0;
    if (pg) {
        n = jobs_pg_expired(db, now, ids, 64);
        if (n < 0)
            return -1;
    } else {
        sqlite3_stmt *st = db_stmt(db, SQL_EXPIRED);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, now);
        while (n < 64 && sqlite3_step(st) == SQLITE_ROW)
            ids[n++] = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    /* each one in its own transaction, on either backend: a job renewed
     * meanwhile is left alone (the fail re-checks the lease) */
    int done = 0;
    for (int i = 0; i < n; i++) {
        char chan[512];
        if (db_begin(db) < 0)
            return -1;
        int r = pg ? jobs_pg_fail_expired_tx(db, ids[i], now, chan, sizeof chan)
                   : fail_expired_tx(db, ids[i], now, chan, sizeof chan);
        if (r < 0) {
            db_rollback(db);
            return -1;
        }
        if (db_commit(db) < 0)
            return -1;
        if (r == 1) {
            done++;
            if (bell)
                bell_ring(bell, chan);
        }
    }
    return done;
}

int jobs_recover_if_expired(parley_db *db, parley_bell *bell, int64_t job_id, int64_t now)
{
    if (job_id <= 0)
        return 0;
    struct job_info ji;
    int g = jobs_get(db, job_id, &ji);
    if (g != 0)
        return g < 0 ? -1 : 0;
    if (strcmp(ji.state, "running") != 0 || ji.lease_expires >= now)
        return 0;
    int r = jobs_recover(db, bell, now);
    if (r >= 0)
        return r;
    /* could it not be failed, or did something else fail? */
    if (jobs_get(db, job_id, &ji) == 0 && strcmp(ji.state, "running") == 0 &&
        ji.lease_expires < now)
        return JOBS_EXPIRED_UNRECORDED;
    return -1;
}

struct evlog_event *jobs_expired_event(int64_t job_id, int64_t cursor)
{
    struct evlog_event *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->seq = cursor;
    ev->from_memory = 1;
    ev->job_id = job_id;
    ev->created_at = now_ms();
    ev->type = strdup("error");
    ev->data = error_event_data(job_id, "interrupted", JOB_INTERRUPTED_MSG);
    if (!ev->type || !ev->data) {
        evlog_free(ev, 1);
        return NULL;
    }
    ev->data_len = strlen(ev->data);
    return ev;
}

int jobs_running_on(parley_db *db, const char *channel, int64_t *job_id, int64_t *first_seq)
{
    if (db_pg_conn(db))
        return jobs_pg_running_on(db, channel, job_id, first_seq);
    static const char sql[] =
        "SELECT id, first_seq FROM jobs WHERE channel = ? AND state = 'running' "
        "ORDER BY id DESC LIMIT 1";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, channel);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *job_id = sqlite3_column_int64(st, 0);
        *first_seq = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

int jobs_get(parley_db *db, int64_t job_id, struct job_info *out)
{
    if (db_pg_conn(db))
        return jobs_pg_get(db, job_id, out);
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = db_stmt(db, SQL_GET);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->id = job_id;
        str_copy(out->state, sizeof out->state, (const char *)sqlite3_column_text(st, 0));
        out->lease_expires = sqlite3_column_int64(st, 1);
        out->first_seq = sqlite3_column_int64(st, 2);
        str_copy(out->error, sizeof out->error, (const char *)sqlite3_column_text(st, 3));
        str_copy(out->started_by, sizeof out->started_by,
                 (const char *)sqlite3_column_text(st, 4));
        out->stop_requested = sqlite3_column_int(st, 5);
        out->stopped = sqlite3_column_int(st, 6);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

/* ---- stopping ---- */

static int stop_pick(parley_db *db, const char *channel, int64_t *job)
{
    if (db_pg_conn(db))
        return jobs_pg_stop_pick(db, channel, job);
    sqlite3_stmt *st = db_stmt(db, SQL_STOP_PICK);
    if (!st)
        return -1;
    db_bind_text(st, 1, channel);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *job = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

static int stop_mark(parley_db *db, int64_t job_id, const char *user, int admin, int64_t now,
                     char *chan, size_t chanlen)
{
    if (db_pg_conn(db))
        return jobs_pg_stop_mark(db, job_id, user, admin, now, chan, chanlen);
    sqlite3_stmt *st = db_stmt(db, SQL_STOP_MARK);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now);
    db_bind_text(st, 2, user ? user : "");
    sqlite3_bind_int64(st, 3, job_id);
    sqlite3_bind_int(st, 4, admin ? 1 : 0);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        str_copy(chan, chanlen, (const char *)sqlite3_column_text(st, 0));
        sqlite3_step(st);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int jobs_request_stop(parley_db *db, parley_bell *bell, const char *channel, int64_t job_id,
                      const char *user, int admin, int64_t *job)
{
    if (job)
        *job = 0;
    if (job_id <= 0) {
        if (!channel)
            return JOBS_STOP_NONE;
        int p = stop_pick(db, channel, &job_id);
        if (p != 0)
            return p < 0 ? JOBS_STOP_ERR : JOBS_STOP_NONE;
    }
    if (job)
        *job = job_id;
    if (db_can_write(db) < 0)
        return JOBS_STOP_ERR;
    char chan[512];
    int m = stop_mark(db, job_id, user, admin, now_ms(), chan, sizeof chan);
    if (m < 0)
        return JOBS_STOP_ERR;
    if (m == 1) {
        /* the owner sleeps on no channel of its own: the ring reaches its
         * generation loop (every process of the machine, or every node
         * through NOTIFY) and it reads jobs_stop_pending */
        evlog_ring(db, bell, chan);
        return JOBS_STOP_OK;
    }
    /* not recorded: say why (a read for the answer only; nothing is
     * decided on it) */
    struct job_info ji;
    int g = jobs_get(db, job_id, &ji);
    if (g < 0)
        return JOBS_STOP_ERR;
    if (g == 1)
        return JOBS_STOP_NONE;
    if (strcmp(ji.state, "running") != 0)
        return JOBS_STOP_OVER;
    return JOBS_STOP_FOREIGN;
}

int jobs_stop_pending(parley_db *db, const char *lease_owner, int64_t *ids, int max)
{
    if (db_pg_conn(db))
        return jobs_pg_stop_pending(db, lease_owner, ids, max);
    sqlite3_stmt *st = db_stmt(db, SQL_STOP_PENDING);
    if (!st)
        return -1;
    db_bind_text(st, 1, lease_owner);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (n < max)
            ids[n++] = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? n : -1;
}

int jobs_finish_stopped_tx(parley_db *db, int64_t job_id)
{
    if (db_pg_conn(db))
        return jobs_pg_finish_stopped_tx(db, job_id);
    sqlite3_stmt *st = db_stmt(db, SQL_FINISH_STOPPED);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now_ms());
    sqlite3_bind_int64(st, 2, job_id);
    db_bind_text(st, 3, owner_id());
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    return rc == SQLITE_DONE && changed == 1 ? 0 : -1;
}
