/* stats.c — installation-wide counters (stats.h). Read-only statements,
 * literals prepared once per connection. A PostgreSQL connection
 * (db_pg_conn) goes to storage/pg/stats.c. */
#include "stats.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/store.h"

#include <string.h>

static int64_t scalar(parley_db *db, const char *sql)
{
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return v;
}

int stats_collect(parley_db *db, int64_t since, struct parley_stats *out)
{
    static const char sql_jobs[] = "SELECT state, count(*) FROM jobs GROUP BY state";
    static const char sql_recent[] =
        "SELECT avg(json_extract(data, '$.first_token_ms')), avg(json_extract(data, '$.processing_ms')), "
        "count(*) FROM events WHERE type = 'done' AND created_at > ?";
    if (db_pg_conn(db))
        return stats_pg_collect(db, since, out);
    memset(out, 0, sizeof *out);
    out->poll_sessions = out->answers_cached = out->conversations = -1;
    out->anon_conversations = out->anon_messages = out->anon_poll_sessions = -1;
    sqlite3_stmt *st = db_stmt(db, sql_jobs);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        int64_t n = sqlite3_column_int64(st, 1);
        if (!state)
            continue;
        if (!strcmp(state, "running"))
            out->jobs_running = n;
        else if (!strcmp(state, "done"))
            out->jobs_done = n;
        else if (!strcmp(state, "failed"))
            out->jobs_failed = n;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return -1;
    if ((st = db_stmt(db, sql_recent))) {
        sqlite3_bind_int64(st, 1, since);
        if (sqlite3_step(st) == SQLITE_ROW) {
            out->recent_first_token_ms = sqlite3_column_double(st, 0);
            out->recent_generation_ms = sqlite3_column_double(st, 1);
            out->recent_done = sqlite3_column_int64(st, 2);
        }
        sqlite3_reset(st);
    }
    out->poll_sessions = scalar(db, "SELECT count(*) FROM poll_sessions");
    out->answers_cached = scalar(db, "SELECT count(*) FROM answers");
    out->conversations = scalar(db, "SELECT count(*) FROM conversations");
    out->anon_conversations = scalar(db, SQL_ANON_CONVS);
    out->anon_messages = scalar(db, SQL_ANON_MSGS);
    out->anon_poll_sessions = scalar(db, SQL_ANON_POLLS);
    return 0;
}

int64_t stats_jobs_running(parley_db *db)
{
    if (db_pg_conn(db))
        return stats_pg_jobs_running(db);
    return scalar(db, "SELECT count(*) FROM jobs WHERE state = 'running'");
}
