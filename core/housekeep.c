/* housekeep.c — tickets and sessions for the administrator, online backup,
 * upkeep (contract: housekeep.h). SQLite statements here, each a literal
 * prepared once per connection (db_stmt) with bound values; on a
 * PostgreSQL connection the bodies in storage/pg/housekeep.c run instead
 * (the same rows, built into JSON by the row helpers below). Runs in the
 * thread that owns the parley_db.
 */
#include "housekeep.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/housekeep_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char SQL_TICKETS[] =
    "SELECT t.id, length(CAST(t.body AS BLOB)), t.created_at, t.updated_at, "
    "(SELECT count(*) FROM answers a WHERE a.ticket_id = t.id) "
    "FROM tickets t ORDER BY t.updated_at DESC, t.id LIMIT ?1 OFFSET ?2";
static const char SQL_TICKET[] = "SELECT id, body, created_at, updated_at FROM tickets WHERE id = ?";
static const char SQL_TICKET_ANSWERS[] =
    "SELECT key, model, tokens, hits, length(CAST(response AS BLOB)), created_at FROM answers "
    "WHERE ticket_id = ? ORDER BY created_at DESC, key";
static const char SQL_TICKET_JOBS[] =
    "SELECT id, state, created_at, finished_at, error FROM jobs WHERE channel = 'ticket:' || ?1 "
    "ORDER BY id DESC LIMIT 20";
static const char SQL_TICKET_EVENTS[] =
    "SELECT count(*) FROM events WHERE channel = 'ticket:' || ?1";
static const char SQL_SESSIONS[] =
    "SELECT c.id, c.owner, c.kind, c.title, c.status, c.created_at, c.updated_at, "
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
    "FROM conversations c WHERE c.kind IN ('chat', 'sse') AND (?1 IS NULL OR c.owner = ?1) "
    "ORDER BY c.updated_at DESC, c.id LIMIT ?2";
static const char SQL_SESSIONS_PURGE[] =
    "DELETE FROM conversations WHERE kind IN ('chat', 'sse') AND updated_at < ?2 "
    "AND (?1 IS NULL OR owner = ?1)";
static const char SQL_BACKUP[] = "VACUUM INTO ?";
static const char SQL_CHECKPOINT[] = "PRAGMA wal_checkpoint(TRUNCATE)";

/* ---- row builders shared with storage/pg/housekeep.c ---- */

json_t *hk_ticket_row(const char *id, int64_t body_bytes, int64_t created, int64_t updated,
                      int64_t answers)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I}", "id", id ? id : "", "body_bytes",
                     (json_int_t)body_bytes, "created_at", (json_int_t)created, "updated_at",
                     (json_int_t)updated, "answers", (json_int_t)answers);
}

json_t *hk_answer_row(const char *key, const char *model, int64_t tokens, int64_t hits,
                      int64_t bytes, int64_t created)
{
    return json_pack("{s:s, s:s, s:o, s:I, s:I, s:I}", "key", key ? key : "", "model",
                     model ? model : "", "tokens", tokens >= 0 ? json_integer(tokens) : json_null(),
                     "hits", (json_int_t)hits, "response_bytes", (json_int_t)bytes, "created_at",
                     (json_int_t)created);
}

json_t *hk_job_row(int64_t id, const char *state, int64_t created, int64_t finished,
                   const char *error)
{
    return json_pack("{s:I, s:s, s:I, s:o, s:o}", "id", (json_int_t)id, "state", state ? state : "",
                     "created_at", (json_int_t)created, "finished_at",
                     finished >= 0 ? json_integer(finished) : json_null(), "error",
                     error ? json_string(error) : json_null());
}

json_t *hk_session_row(const char *id, const char *user, const char *kind, const char *title,
                       const char *status, int64_t created, int64_t updated, int64_t messages)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "id", id ? id : "", "user",
                     user ? user : "", "kind", kind ? kind : "", "title", title ? title : "",
                     "status", status ? status : "", "created_at", (json_int_t)created,
                     "updated_at", (json_int_t)updated, "messages", (json_int_t)messages);
}

static int64_t col_int_or(sqlite3_stmt *st, int c, int64_t dflt)
{
    return sqlite3_column_type(st, c) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, c);
}

static const char *col_text(sqlite3_stmt *st, int c)
{
    return (const char *)sqlite3_column_text(st, c);
}

/* Appends o to arr (taking it); -1 when o is NULL or on OOM. */
static int append(json_t *arr, json_t *o)
{
    return o && json_array_append_new(arr, o) == 0 ? 0 : -1;
}

/* ---- tickets ---- */

json_t *hk_tickets_list(parley_db *db, int limit, int offset)
{
    if (limit < 1 || limit > 10000 || offset < 0)
        return NULL;
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    if (db_pg_conn(db)) {
        if (hk_pg_tickets_list(db, limit, offset, arr) == 0)
            return arr;
        json_decref(arr);
        return NULL;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_TICKETS);
    if (!st) {
        json_decref(arr);
        return NULL;
    }
    sqlite3_bind_int(st, 1, limit);
    sqlite3_bind_int(st, 2, offset);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (append(arr, hk_ticket_row(col_text(st, 0), sqlite3_column_int64(st, 1),
                                      sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                                      sqlite3_column_int64(st, 4))) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int hk_ticket_show(parley_db *db, const char *id, json_t **out)
{
    *out = NULL;
    if (db_pg_conn(db))
        return hk_pg_ticket_show(db, id, out);
    sqlite3_stmt *st = db_stmt(db, SQL_TICKET);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    json_t *t = NULL;
    if (rc == SQLITE_ROW)
        t = json_pack("{s:s, s:s, s:I, s:I}", "id", col_text(st, 0), "body",
                      col_text(st, 1) ? col_text(st, 1) : "", "created_at",
                      (json_int_t)sqlite3_column_int64(st, 2), "updated_at",
                      (json_int_t)sqlite3_column_int64(st, 3));
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 1;
    if (!t)
        return -1;
    json_t *answers = json_array(), *jobs = json_array();
    json_object_set_new(t, "answers", answers);
    json_object_set_new(t, "jobs", jobs);
    if (!answers || !jobs || !(st = db_stmt(db, SQL_TICKET_ANSWERS)))
        goto fail;
    db_bind_text(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (append(answers, hk_answer_row(col_text(st, 0), col_text(st, 1), col_int_or(st, 2, -1),
                                          sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4),
                                          sqlite3_column_int64(st, 5))) < 0)
            break;
    sqlite3_reset(st);
    if (rc != SQLITE_DONE || !(st = db_stmt(db, SQL_TICKET_JOBS)))
        goto fail;
    db_bind_text(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (append(jobs, hk_job_row(sqlite3_column_int64(st, 0), col_text(st, 1),
                                    sqlite3_column_int64(st, 2), col_int_or(st, 3, -1),
                                    col_text(st, 4))) < 0)
            break;
    sqlite3_reset(st);
    if (rc != SQLITE_DONE || !(st = db_stmt(db, SQL_TICKET_EVENTS)))
        goto fail;
    db_bind_text(st, 1, id);
    rc = sqlite3_step(st);
    int64_t events = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (events < 0 || json_object_set_new(t, "events", json_integer(events)) < 0)
        goto fail;
    *out = t;
    return 0;
fail:
    json_decref(t);
    return -1;
}

/* ---- sessions ---- */

json_t *hk_sessions_list(parley_db *db, const char *user, int limit)
{
    if (limit < 1 || limit > 10000)
        return NULL;
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    if (db_pg_conn(db)) {
        if (hk_pg_sessions_list(db, user, limit, arr) == 0)
            return arr;
        json_decref(arr);
        return NULL;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_SESSIONS);
    if (!st) {
        json_decref(arr);
        return NULL;
    }
    db_bind_text(st, 1, user);
    sqlite3_bind_int(st, 2, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (append(arr, hk_session_row(col_text(st, 0), col_text(st, 1), col_text(st, 2),
                                       col_text(st, 3), col_text(st, 4), sqlite3_column_int64(st, 5),
                                       sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7))) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int64_t hk_sessions_purge(parley_db *db, const char *user, int64_t before_ms)
{
    if (db_pg_conn(db))
        return hk_pg_sessions_purge(db, user, before_ms);
    sqlite3_stmt *st = db_stmt(db, SQL_SESSIONS_PURGE);
    if (!st)
        return -1;
    db_bind_text(st, 1, user);
    sqlite3_bind_int64(st, 2, before_ms);
    int rc = sqlite3_step(st);
    int64_t n = rc == SQLITE_DONE ? db_changes(db) : -1;
    sqlite3_reset(st);
    return n;
}

/* ---- backup and upkeep ---- */

int hk_backup(parley_db *db, const char *path)
{
    if (db_pg_conn(db))
        return HK_UNSUPPORTED;
    struct stat sb;
    if (!path || !*path)
        return HK_ERR;
    if (lstat(path, &sb) == 0 || errno != ENOENT)
        return HK_EXISTS;
    sqlite3_stmt *st = db_stmt(db, SQL_BACKUP);
    if (!st)
        return HK_ERR;
    db_bind_text(st, 1, path);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        /* the statement's message stays on the connection (db_errmsg) */
        unlink(path);
        return HK_ERR;
    }
    return HK_OK;
}

int hk_optimize(parley_db *db, char *detail, size_t detail_len)
{
    if (detail && detail_len)
        detail[0] = '\0';
    if (db_pg_conn(db))
        return hk_pg_optimize(db, detail, detail_len);
    if (db_exec(db, "PRAGMA optimize") < 0)
        return HK_ERR;
    sqlite3_stmt *st = db_stmt(db, SQL_CHECKPOINT);
    if (!st)
        return HK_ERR;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && detail)
        snprintf(detail, detail_len, "wal checkpoint: %lld of %lld pages, busy %d",
                 (long long)sqlite3_column_int64(st, 2), (long long)sqlite3_column_int64(st, 1),
                 sqlite3_column_int(st, 0));
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? HK_OK : HK_ERR;
}
