/* storage/pg/stats.c — installation-wide counters on PostgreSQL (contracts:
 * stats.h; stats.c dispatches here when db_pg_conn(db) is not NULL).
 * Read-only statements, constant text, bound values. A counter's table that
 * this database does not have yet (another module's migration) gives -1 for
 * that counter, as a failing read does on SQLite; the job counts fail the
 * call. */
#include "storage/pg/pg.h"
#include "storage/pg/store.h"
#include "storage/pg/stats_pg.h"

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

/* ---- the overview (stats_pg.h) ---- */

static const char SQL_OV_JOBS_PG[] = SQL_OV_JOBS;
static const char SQL_OV_FAILED_PG[] = SQL_OV_FAILED;
static const char SQL_OV_USERS_PG[] = SQL_OV_USERS;
static const char SQL_OV_TICKETS_PG[] = SQL_OV_TICKETS;
static const char SQL_OV_CONVS_PG[] = SQL_OV_CONVS;
static const char SQL_OV_MSGS_PG[] = SQL_OV_MSGS;
static const char SQL_OV_ANSWERS_PG[] = SQL_OV_ANSWERS;
static const char SQL_OV_HITS_PG[] = SQL_OV_HITS;

static int64_t num(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int stats_pg_overview(parley_db *db, int64_t since, int64_t day, struct stats_overview_raw *raw)
{
    PGresult *r = db_pg_run(db, SQL_OV_JOBS_PG, 0, NULL, PGRES_TUPLES_OK, "stats: generations by outcome");
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *o = PQgetvalue(r, i, 0);
        int64_t n = num(r, i, 1);
        if (!strcmp(o, "running"))
            raw->gen_running += n;
        else if (!strcmp(o, "done"))
            raw->gen_done += n;
        else if (!strcmp(o, "stopped"))
            raw->gen_stopped += n;
        else if (!strcmp(o, "failed"))
            raw->gen_failed += n;
    }
    PQclear(r);
    char s[24], d[24], lim[16];
    snprintf(s, sizeof s, "%" PRId64, since);
    snprintf(d, sizeof d, "%" PRId64, day);
    snprintf(lim, sizeof lim, "%d", STATS_TOP_USERS);
    const char *p1[1] = { s };
    if (!(r = db_pg_run(db, SQL_OV_FAILED_PG, 1, p1, PGRES_TUPLES_OK, "stats: failed generations")))
        return -1;
    raw->failed_since = PQntuples(r) == 1 ? num(r, 0, 0) : 0;
    PQclear(r);
    const char *p2[2] = { d, lim };
    if (!(r = db_pg_run(db, SQL_OV_USERS_PG, 2, p2, PGRES_TUPLES_OK, "stats: tokens by user")))
        return -1;
    json_t *users = json_array();
    for (int i = 0; users && i < PQntuples(r); i++) {
        json_t *row = json_pack("{s:s, s:I, s:I, s:I, s:I}", "user", PQgetvalue(r, i, 0),
                                "prompt_tokens", (json_int_t)num(r, i, 1),
                                "completion_tokens", (json_int_t)num(r, i, 2),
                                "tokens", (json_int_t)num(r, i, 3),
                                "generations", (json_int_t)num(r, i, 4));
        if (!row || json_array_append_new(users, row) < 0) {
            json_decref(users);
            users = NULL;
        }
    }
    PQclear(r);
    if (!users)
        return -1;
    raw->users = users;
    raw->tickets = scalar(db, SQL_OV_TICKETS_PG, "stats: tickets");
    raw->conversations = scalar(db, SQL_OV_CONVS_PG, "stats: conversations");
    raw->messages = scalar(db, SQL_OV_MSGS_PG, "stats: messages");
    raw->answers = scalar(db, SQL_OV_ANSWERS_PG, "stats: cached answers");
    raw->cache_hits = scalar(db, SQL_OV_HITS_PG, "stats: cache hits");
    return 0;
}

/* ---- live generations, open long-poll sessions (stats_pg.h) ---- */

/* events.data is bytea: octet_length is the text's bytes; the "start"
 * event's JSON holds the model. */
static const char SQL_LIVE_PG[] =
    "SELECT j.id, j.channel, j.started_by, j.created_at, j.lease_owner, "
    "j.stop_requested_at IS NOT NULL, "
    "(SELECT count(*) FROM events e WHERE e.channel = j.channel AND e.seq > j.first_seq "
    " AND e.job_id = j.id AND e.type = 'token'), "
    "(SELECT coalesce(sum(octet_length(e.data)), 0) FROM events e WHERE "
    " e.channel = j.channel AND e.seq > j.first_seq AND e.job_id = j.id AND e.type = 'token'), "
    "(SELECT convert_from(e.data, 'UTF8')::jsonb ->> 'model' FROM events e WHERE "
    " e.channel = j.channel AND e.seq > j.first_seq AND e.job_id = j.id AND e.type = 'start' "
    " LIMIT 1), "
    "(SELECT string_agg(convert_from(t.data, 'UTF8'), '' ORDER BY t.seq) FROM (SELECT e.data, e.seq "
    "  FROM events e WHERE e.channel = j.channel AND e.seq > j.first_seq AND e.job_id = j.id "
    "  AND e.type = 'token' ORDER BY e.seq DESC LIMIT $2) t) "
    "FROM jobs j WHERE j.state = 'running' ORDER BY j.created_at, j.id LIMIT $1";
static const char SQL_POLL_OPEN_PG[] = SQL_POLL_OPEN;

int stats_pg_live(parley_db *db, int64_t now, json_t *arr)
{
    char lim[16], tl[16];
    snprintf(lim, sizeof lim, "%d", STATS_LIVE_MAX);
    snprintf(tl, sizeof tl, "%d", STATS_TAIL_EVENTS);
    const char *p[2] = { lim, tl };
    PGresult *r = db_pg_run(db, SQL_LIVE_PG, 2, p, PGRES_TUPLES_OK, "stats: live generations");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *row = stats_live_row(num(r, i, 0), PQgetvalue(r, i, 1),
                                     PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2),
                                     num(r, i, 3), PQgetvalue(r, i, 4),
                                     !strcmp(PQgetvalue(r, i, 5), "t"), num(r, i, 6),
                                     num(r, i, 7),
                                     PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8),
                                     PQgetisnull(r, i, 9) ? NULL : PQgetvalue(r, i, 9), now);
        if (!row || json_array_append_new(arr, row) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}

int stats_pg_poll_open(parley_db *db, int64_t now, int64_t *generic, int64_t *phoenix)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, now);
    const char *p[1] = { s };
    PGresult *r = db_pg_run(db, SQL_POLL_OPEN_PG, 1, p, PGRES_TUPLES_OK, "stats: long-poll sessions");
    if (!r)
        return -1;
    int ok = PQntuples(r) == 1;
    if (ok) {
        *generic = num(r, 0, 0);
        *phoenix = num(r, 0, 1);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static const char SQL_CACHE_HIT_PG[] = SQL_CACHE_HIT;

int stats_pg_cache_hit(parley_db *db, const char *key)
{
    const char *p[1] = { key };
    int64_t n = db_pg_command(db, SQL_CACHE_HIT_PG, 1, p, "stats: cache hit");
    return n < 0 ? -1 : n > 0 ? 1 : 0;
}
