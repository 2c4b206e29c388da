/* stats.c — installation-wide counters (stats.h). Read-only statements,
 * literals prepared once per connection. A PostgreSQL connection
 * (db_pg_conn) goes to storage/pg/stats.c. */
#include "stats.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/store.h"
#include "storage/pg/stats_pg.h"
#include "usage.h"
#include "util.h"

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

/* ---- the overview ---- */

static const char sql_ov_jobs[] = SQL_OV_JOBS;
static const char sql_ov_failed[] = SQL_OV_FAILED;
static const char sql_ov_users[] = SQL_OV_USERS;
static const char sql_ov_tickets[] = SQL_OV_TICKETS;
static const char sql_ov_convs[] = SQL_OV_CONVS;
static const char sql_ov_msgs[] = SQL_OV_MSGS;
static const char sql_ov_answers[] = SQL_OV_ANSWERS;
static const char sql_ov_hits[] = SQL_OV_HITS;

/* Adds one outcome's count to raw. */
static void ov_outcome(struct stats_overview_raw *raw, const char *o, int64_t n)
{
    if (!strcmp(o, "running"))
        raw->gen_running += n;
    else if (!strcmp(o, "done"))
        raw->gen_done += n;
    else if (!strcmp(o, "stopped"))
        raw->gen_stopped += n;
    else if (!strcmp(o, "failed"))
        raw->gen_failed += n;
}

static int overview_sqlite(parley_db *db, int64_t since, int64_t day, struct stats_overview_raw *raw)
{
    sqlite3_stmt *st = db_stmt(db, sql_ov_jobs);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *o = (const char *)sqlite3_column_text(st, 0);
        if (o)
            ov_outcome(raw, o, sqlite3_column_int64(st, 1));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return -1;
    if (!(st = db_stmt(db, sql_ov_failed)))
        return -1;
    sqlite3_bind_int64(st, 1, since);
    rc = sqlite3_step(st);
    raw->failed_since = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return -1;
    if (!(st = db_stmt(db, sql_ov_users)))
        return -1;
    sqlite3_bind_int64(st, 1, day);
    sqlite3_bind_int(st, 2, STATS_TOP_USERS);
    json_t *users = json_array();
    while (users && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *u = (const char *)sqlite3_column_text(st, 0);
        json_t *row = json_pack("{s:s, s:I, s:I, s:I, s:I}", "user", u ? u : "",
                                "prompt_tokens", (json_int_t)sqlite3_column_int64(st, 1),
                                "completion_tokens", (json_int_t)sqlite3_column_int64(st, 2),
                                "tokens", (json_int_t)sqlite3_column_int64(st, 3),
                                "generations", (json_int_t)sqlite3_column_int64(st, 4));
        if (!row || json_array_append_new(users, row) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (!users || rc != SQLITE_DONE) {
        json_decref(users);
        return -1;
    }
    raw->users = users;
    raw->tickets = scalar(db, sql_ov_tickets);
    raw->conversations = scalar(db, sql_ov_convs);
    raw->messages = scalar(db, sql_ov_msgs);
    raw->answers = scalar(db, sql_ov_answers);
    raw->cache_hits = scalar(db, sql_ov_hits);
    return 0;
}

/* What "cache.hit_rate" is computed from (docs/admin.md). */
#define CACHE_BASIS "answers.hits (times a stored answer was served instead of a generation) " \
                    "over answers.hits + answers stored (each stored answer was generated once); " \
                    "answers deleted since are not counted"

int stats_overview_at(parley_db *db, int64_t now, json_t **out)
{
    struct stats_overview_raw raw;
    memset(&raw, 0, sizeof raw);
    raw.tickets = raw.conversations = raw.messages = raw.answers = raw.cache_hits = -1;
    int64_t since = now - 3600 * 1000, day = usage_day_of(now);
    int rc = db_pg_conn(db) ? stats_pg_overview(db, since, day, &raw) : overview_sqlite(db, since, day, &raw);
    if (rc < 0)
        return -1;
    char date[16];
    usage_date(day, date);
    json_t *rate = json_null();
    if (raw.cache_hits >= 0 && raw.answers >= 0 && raw.cache_hits + raw.answers > 0)
        rate = json_real((double)raw.cache_hits / (double)(raw.cache_hits + raw.answers));
    json_t *o = json_pack(
        "{s:I, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:o, s:s}, s:{s:I, s:I, s:I, s:I},"
        " s:{s:I, s:I, s:I}, s:{s:s, s:o}}",
        "at", (json_int_t)now,
        "counts", "tickets", (json_int_t)raw.tickets, "conversations", (json_int_t)raw.conversations,
        "messages", (json_int_t)raw.messages, "answers_cached", (json_int_t)raw.answers,
        "cache", "hits", (json_int_t)raw.cache_hits, "answers", (json_int_t)raw.answers,
        "hit_rate", rate, "basis", CACHE_BASIS,
        "generations", "running", (json_int_t)raw.gen_running, "done", (json_int_t)raw.gen_done,
        "stopped", (json_int_t)raw.gen_stopped, "failed", (json_int_t)raw.gen_failed,
        "errors_last_hour", "since", (json_int_t)since, "generations_failed",
        (json_int_t)raw.failed_since, "total", (json_int_t)raw.failed_since,
        "tokens_today", "day", date, "users", raw.users);
    if (!o)
        return -1;
    *out = o;
    return 0;
}

int stats_overview(parley_db *db, json_t **out)
{
    return stats_overview_at(db, now_ms(), out);
}

/* ---- live generations, open long-poll sessions ---- */

/* A running job's events are those of its channel after first_seq with its
 * job id (the primary key's range). */
static const char sql_live[] =
    "SELECT j.id, j.channel, j.started_by, j.created_at, j.lease_owner, "
    "j.stop_requested_at IS NOT NULL, "
    "(SELECT count(*) FROM events e WHERE e.channel = j.channel AND e.seq > j.first_seq "
    " AND e.job_id = j.id AND e.type = 'token'), "
    "(SELECT coalesce(sum(length(CAST(e.data AS BLOB))), 0) FROM events e WHERE "
    " e.channel = j.channel AND e.seq > j.first_seq AND e.job_id = j.id AND e.type = 'token'), "
    "(SELECT json_extract(e.data, '$.model') FROM events e WHERE e.channel = j.channel AND "
    " e.seq > j.first_seq AND e.job_id = j.id AND e.type = 'start' AND json_valid(e.data) LIMIT 1), "
    "(SELECT group_concat(t.data, '') FROM (SELECT data FROM (SELECT e.data, e.seq FROM events e "
    "  WHERE e.channel = j.channel AND e.seq > j.first_seq AND e.job_id = j.id AND e.type = 'token' "
    "  ORDER BY e.seq DESC LIMIT ?2) ORDER BY seq) t) "
    "FROM jobs j WHERE j.state = 'running' ORDER BY j.created_at, j.id LIMIT ?1";
static const char sql_poll_open[] = SQL_POLL_OPEN;

json_t *stats_live_row(int64_t id, const char *channel, const char *user, int64_t started,
                       const char *owner, int stop, int64_t tokens, int64_t bytes,
                       const char *model, const char *tail, int64_t now)
{
    /* the last STATS_TAIL_BYTES of the text, starting on a character */
    const char *t = tail ? tail : "";
    size_t n = strlen(t);
    if (n > STATS_TAIL_BYTES)
        t += n - STATS_TAIL_BYTES;
    while ((*t & 0xC0) == 0x80)
        t++;
    return json_pack("{s:I, s:s, s:o, s:s, s:I, s:I, s:I, s:I, s:s, s:b, s:s}",
                     "job_id", (json_int_t)id, "channel", channel ? channel : "",
                     "user", user ? json_string(user) : json_null(),
                     "model", model ? model : "", "started_at", (json_int_t)started,
                     "age_ms", (json_int_t)(now - started), "tokens_so_far", (json_int_t)tokens,
                     "streamed_bytes", (json_int_t)bytes, "lease_owner", owner ? owner : "",
                     "stop_requested", stop, "text_tail", t);
}

int stats_live_generations(parley_db *db, int64_t now, json_t **out)
{
    json_t *arr = json_array();
    if (!arr)
        return -1;
    if (db_pg_conn(db)) {
        if (stats_pg_live(db, now, arr) < 0) {
            json_decref(arr);
            return -1;
        }
        *out = arr;
        return 0;
    }
    sqlite3_stmt *st = db_stmt(db, sql_live);
    if (!st) {
        json_decref(arr);
        return -1;
    }
    sqlite3_bind_int(st, 1, STATS_LIVE_MAX);
    sqlite3_bind_int(st, 2, STATS_TAIL_EVENTS);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = stats_live_row(
            sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
            (const char *)sqlite3_column_text(st, 2), sqlite3_column_int64(st, 3),
            (const char *)sqlite3_column_text(st, 4), sqlite3_column_int(st, 5),
            sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7),
            (const char *)sqlite3_column_text(st, 8), (const char *)sqlite3_column_text(st, 9), now);
        if (!row || json_array_append_new(arr, row) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}

int stats_poll_open(parley_db *db, int64_t now, int64_t *generic, int64_t *phoenix)
{
    if (db_pg_conn(db))
        return stats_pg_poll_open(db, now, generic, phoenix);
    sqlite3_stmt *st = db_stmt(db, sql_poll_open);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *generic = sqlite3_column_int64(st, 0);
        *phoenix = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static const char sql_cache_hit[] = SQL_CACHE_HIT;

int stats_cache_hit(parley_db *db, const char *key)
{
    if (!db || !key)
        return -1;
    if (db_pg_conn(db))
        return stats_pg_cache_hit(db, key);
    sqlite3_stmt *st = db_stmt(db, sql_cache_hit);
    if (!st)
        return -1;
    db_bind_text(st, 1, key);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return -1;
    return db_changes(db) > 0 ? 1 : 0;
}
