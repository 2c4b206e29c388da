/* storage/pg/stats.c — installation-wide counters on PostgreSQL (contracts:
 * stats.h; stats.c dispatches here when db_pg_conn(db) is not NULL).
 * Read-only statements, constant text, bound values. A counter's table that
 * this database does not have yet (another module's migration) gives -1 for
 * that counter, as a failing read does on SQLite; the job counts fail the
 * call. */
#include "storage/pg/pg.h"
#include "storage/pg/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_JOBS[] = "SELECT state, count(*) FROM jobs GROUP BY state";
/* events.data is bytea holding the "done" event's JSON text (runner.c). */
static const char SQL_RECENT[] =
    "SELECT avg((convert_from(data, 'UTF8')::jsonb ->> 'first_token_ms')::double precision), "
    "avg((convert_from(data, 'UTF8')::jsonb ->> 'processing_ms')::double precision), count(*) "
    "FROM events WHERE type = 'done' AND created_at > $1";
static const char SQL_RUNNING[] = "SELECT count(*) FROM jobs WHERE state = 'running'";

/* One bigint of a one-row query without parameters; -1 on error. */
static int64_t scalar(parley_db *db, const char *sql, const char *what)
{
    PGresult *r = db_pg_exec(db, sql, 0, NULL, NULL, NULL, 0);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        db_pg_fail(db, what, r);
    PQclear(r);
    return v;
}

int stats_pg_collect(parley_db *db, int64_t since, struct parley_stats *out)
{
    memset(out, 0, sizeof *out);
    out->poll_sessions = out->answers_cached = out->conversations = -1;
    out->anon_conversations = out->anon_messages = out->anon_poll_sessions = -1;
    PGresult *r = db_pg_exec(db, SQL_JOBS, 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_pg_fail(db, "stats: job counts", r);
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *state = PQgetvalue(r, i, 0);
        int64_t n = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        if (!strcmp(state, "running"))
            out->jobs_running = n;
        else if (!strcmp(state, "done"))
            out->jobs_done = n;
        else if (!strcmp(state, "failed"))
            out->jobs_failed = n;
    }
    PQclear(r);
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, since);
    const char *p[1] = { s };
    r = db_pg_exec(db, SQL_RECENT, 1, p, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        out->recent_first_token_ms = PQgetisnull(r, 0, 0) ? 0 : strtod(PQgetvalue(r, 0, 0), NULL);
        out->recent_generation_ms = PQgetisnull(r, 0, 1) ? 0 : strtod(PQgetvalue(r, 0, 1), NULL);
        out->recent_done = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    } else {
        db_pg_fail(db, "stats: recent generations", r);
    }
    PQclear(r);
    out->poll_sessions = scalar(db, "SELECT count(*) FROM poll_sessions", "stats: poll sessions");
    out->answers_cached = scalar(db, "SELECT count(*) FROM answers", "stats: cached answers");
    out->conversations = scalar(db, "SELECT count(*) FROM conversations", "stats: conversations");
    out->anon_conversations = scalar(db, SQL_ANON_CONVS, "stats: visitors' conversations");
    out->anon_messages = scalar(db, SQL_ANON_MSGS, "stats: visitors' messages");
    out->anon_poll_sessions = scalar(db, SQL_ANON_POLLS, "stats: visitors' poll sessions");
    return 0;
}

int64_t stats_pg_jobs_running(parley_db *db)
{
    return scalar(db, SQL_RUNNING, "stats: running jobs");
}
