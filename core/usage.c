/* usage.c — token accounting and daily budgets (usage.h).
 * SQLite: one transaction (or savepoint inside the caller's) inserts the
 * event and upserts the day's sums; BEGIN IMMEDIATE orders writers of every
 * process, and the upsert adds to the stored row, so no charge is lost.
 * PostgreSQL (db_pg_conn): the arguments are checked here, the bodies are
 * storage/pg/usage.c's (the same upsert: ON CONFLICT DO UPDATE adds under
 * the row's lock across nodes). Runs in whichever thread owns the parley_db
 * passed in. */
#include "usage.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/usage_pg.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Each statement is a string literal: db_stmt caches by pointer. */
static const char SQL_EVENT[] =
    "INSERT INTO usage_events (user_id, channel, job_id, message_id, model, upstream, outcome, "
    "prompt_tokens, completion_tokens, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
static const char SQL_DAILY[] =
    "INSERT INTO usage_daily (user_id, day, prompt_tokens, completion_tokens, generations) "
    "VALUES (?1, ?2, ?3, ?4, 1) ON CONFLICT (user_id, day) DO UPDATE SET "
    "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "generations = generations + 1";
static const char SQL_DAYS[] =
    "SELECT day, prompt_tokens, completion_tokens, generations FROM usage_daily "
    "WHERE user_id = ?1 AND day BETWEEN ?2 AND ?3 ORDER BY day DESC LIMIT ?4";
static const char SQL_BUDGET_SET[] =
    "INSERT INTO usage_budgets (user_id, tokens, updated_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (user_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at";
static const char SQL_BUDGET_DEL[] = "DELETE FROM usage_budgets WHERE user_id = ?1";
static const char SQL_BUDGET_GET[] = "SELECT tokens FROM usage_budgets WHERE user_id = ?1";
static const char SQL_TOTALS[] =
    "SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM usage_daily";

int64_t usage_day_of(int64_t ms)
{
    int64_t d = ms / USAGE_DAY_MS;
    if (ms % USAGE_DAY_MS < 0)
        d--;
    return d;
}

int64_t usage_reset_ms(int64_t ms)
{
    return (usage_day_of(ms) + 1) * USAGE_DAY_MS;
}

void usage_iso8601(int64_t ms, char out[32])
{
    time_t secs = (time_t)(usage_day_of(ms) * 86400 + (ms - usage_day_of(ms) * USAGE_DAY_MS) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void usage_date(int64_t day, char out[16])
{
    time_t secs = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

const char *usage_budget_source_name(enum usage_budget_source s)
{
    switch (s) {
    case USAGE_BUDGET_DEFAULT:  return "default";
    case USAGE_BUDGET_OVERRIDE: return "override";
    case USAGE_BUDGET_CLAIM:    return "claim";
    case USAGE_BUDGET_NONE:     break;
    }
    return "none";
}

static int valid_outcome(const char *o)
{
    return o && (!strcmp(o, "done") || !strcmp(o, "stopped") || !strcmp(o, "error"));
}

/* Steps a statement that returns no rows; resets it. 0 / -1. */
static int run_done(parley_db *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "parley: usage: %s failed: %s\n", what, db_errmsg(db));
        return -1;
    }
    return 0;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

int usage_charge_tx(parley_db *db, const struct usage_charge *u)
{
    if (!db || !u || !u->channel || !*u->channel || u->prompt_tokens < 0 ||
        u->completion_tokens < 0 || !valid_outcome(u->outcome))
        return -1;
    if (u->prompt_tokens == 0 && u->completion_tokens == 0)
        return 0;
    const char *user = nz(u->user);
    if (db_pg_conn(db))
        return usage_pg_charge_tx(db, u, user);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, SQL_EVENT);
    if (!st)
        goto error;
    db_bind_text(st, 1, user);
    db_bind_text(st, 2, u->channel);
    if (u->job_id > 0)
        sqlite3_bind_int64(st, 3, u->job_id);
    if (u->message_id && *u->message_id)
        db_bind_text(st, 4, u->message_id);
    db_bind_text(st, 5, nz(u->model));
    db_bind_text(st, 6, nz(u->upstream));
    db_bind_text(st, 7, u->outcome);
    sqlite3_bind_int64(st, 8, u->prompt_tokens);
    sqlite3_bind_int64(st, 9, u->completion_tokens);
    sqlite3_bind_int64(st, 10, u->at_ms);
    if (run_done(db, st, "recording a generation's tokens") < 0)
        goto error;
    if (!(st = db_stmt(db, SQL_DAILY)))
        goto error;
    db_bind_text(st, 1, user);
    sqlite3_bind_int64(st, 2, usage_day_of(u->at_ms));
    sqlite3_bind_int64(st, 3, u->prompt_tokens);
    sqlite3_bind_int64(st, 4, u->completion_tokens);
    if (run_done(db, st, "adding to the day's tokens") < 0)
        goto error;
    return db_commit(db);
error:
    db_rollback(db);
    return -1;
}

/* Rows of usage_daily for user with day in [from, to], newest first (at
 * most max): count or -1. */
static int read_days(parley_db *db, const char *user, int64_t from, int64_t to,
                     struct usage_day *days, int max)
{
    if (db_pg_conn(db))
        return usage_pg_days(db, user, from, to, days, max);
    sqlite3_stmt *st = db_stmt(db, SQL_DAYS);
    if (!st)
        return -1;
    db_bind_text(st, 1, user);
    sqlite3_bind_int64(st, 2, from);
    sqlite3_bind_int64(st, 3, to);
    sqlite3_bind_int(st, 4, max);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
        days[n].day = sqlite3_column_int64(st, 0);
        days[n].prompt_tokens = sqlite3_column_int64(st, 1);
        days[n].completion_tokens = sqlite3_column_int64(st, 2);
        days[n].generations = sqlite3_column_int64(st, 3);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "parley: usage: reading daily tokens failed: %s\n", db_errmsg(db));
        return -1;
    }
    return n;
}

int usage_today(parley_db *db, const char *user, int64_t now_ms, struct usage_day *out)
{
    return usage_days(db, user, now_ms, 1, out) == 1 ? 0 : -1;
}

int usage_days(parley_db *db, const char *user, int64_t now_ms, int ndays,
               struct usage_day *days)
{
    if (!db || !days || ndays < 1 || ndays > USAGE_MAX_DAYS)
        return -1;
    user = nz(user);
    int64_t today = usage_day_of(now_ms);
    struct usage_day got[USAGE_MAX_DAYS];
    int n = read_days(db, user, today - ndays + 1, today, got, ndays);
    if (n < 0)
        return -1;
    int j = 0;
    for (int i = 0; i < ndays; i++) {       /* dense, newest first */
        int64_t d = today - i;
        if (j < n && got[j].day == d) {
            days[i] = got[j++];
        } else {
            memset(&days[i], 0, sizeof days[i]);
            days[i].day = d;
        }
    }
    return ndays;
}

int usage_budget_set(parley_db *db, const char *user, int64_t tokens, int64_t now_ms)
{
    if (!db || !user)
        return -1;
    if (db_pg_conn(db))
        return usage_pg_budget_set(db, user, tokens, now_ms);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, tokens < 0 ? SQL_BUDGET_DEL : SQL_BUDGET_SET);
    if (!st)
        goto error;
    db_bind_text(st, 1, user);
    if (tokens >= 0) {
        sqlite3_bind_int64(st, 2, tokens);
        sqlite3_bind_int64(st, 3, now_ms);
    }
    if (run_done(db, st, "setting a budget") < 0)
        goto error;
    return db_commit(db);
error:
    db_rollback(db);
    return -1;
}

int usage_budget_get(parley_db *db, const char *user, int64_t *tokens)
{
    if (!db || !tokens)
        return -1;
    user = nz(user);
    if (db_pg_conn(db))
        return usage_pg_budget_get(db, user, tokens);
    sqlite3_stmt *st = db_stmt(db, SQL_BUDGET_GET);
    if (!st)
        return -1;
    db_bind_text(st, 1, user);
    int rc = sqlite3_step(st), r = 0;
    if (rc == SQLITE_ROW) {
        *tokens = sqlite3_column_int64(st, 0);
        r = 1;
    } else if (rc != SQLITE_DONE) {
        fprintf(stderr, "parley: usage: reading a budget failed: %s\n", db_errmsg(db));
        r = -1;
    }
    sqlite3_reset(st);
    return r;
}

int usage_status(parley_db *db, const char *user, int64_t default_budget,
                 int64_t claim_budget, int64_t now_ms, struct usage_status *st)
{
    if (!db || !st)
        return -1;
    memset(st, 0, sizeof *st);
    user = nz(user);
    struct usage_day today;
    if (usage_today(db, user, now_ms, &today) < 0)
        return -1;
    st->prompt_tokens = today.prompt_tokens;
    st->completion_tokens = today.completion_tokens;
    st->generations = today.generations;
    st->used = today.prompt_tokens + today.completion_tokens;
    st->reset_ms = usage_reset_ms(now_ms);
    int64_t over = 0;
    int got = claim_budget >= 0 ? 0 : usage_budget_get(db, user, &over);
    if (got < 0)
        return -1;
    if (claim_budget >= 0) {
        st->budget = claim_budget;
        st->source = USAGE_BUDGET_CLAIM;
    } else if (got > 0) {
        st->budget = over;
        st->source = USAGE_BUDGET_OVERRIDE;
    } else if (default_budget > 0) {
        st->budget = default_budget;
        st->source = USAGE_BUDGET_DEFAULT;
    }
    if (st->budget > 0) {
        st->remaining = st->budget > st->used ? st->budget - st->used : 0;
        st->exhausted = st->used >= st->budget;
    } else {
        st->remaining = -1;
    }
    return 0;
}

int usage_budget_ok(parley_db *db, const char *user, int64_t default_budget,
                    int64_t claim_budget, int64_t now_ms, char *msg, size_t msglen)
{
    if (msg && msglen)
        msg[0] = '\0';
    if (!db)
        return -1;
    if (claim_budget == 0)          /* the token says unlimited: nothing to read */
        return 1;
    if (claim_budget < 0) {
        /* no budget for this user (no override, no default): today's
         * usage need not be read (a request's one read, not three) */
        int64_t over = 0;
        int got = usage_budget_get(db, nz(user), &over);
        if (got < 0)
            return -1;
        if ((got > 0 ? over : default_budget) <= 0)
            return 1;
    }
    struct usage_status st;
    if (usage_status(db, user, default_budget, claim_budget, now_ms, &st) < 0)
        return -1;
    if (!st.exhausted)
        return 1;
    if (msg && msglen) {
        char at[32];
        usage_iso8601(st.reset_ms, at);
        snprintf(msg, msglen, "%s; it resets at %s", USAGE_EXHAUSTED_MSG, at);
    }
    return 0;
}

int usage_totals(parley_db *db, int64_t *prompt_tokens, int64_t *completion_tokens)
{
    if (!db || !prompt_tokens || !completion_tokens)
        return -1;
    if (db_pg_conn(db))
        return usage_pg_totals(db, prompt_tokens, completion_tokens);
    sqlite3_stmt *st = db_stmt(db, SQL_TOTALS);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *prompt_tokens = sqlite3_column_int64(st, 0);
        *completion_tokens = sqlite3_column_int64(st, 1);
    } else {
        fprintf(stderr, "parley: usage: summing tokens failed: %s\n", db_errmsg(db));
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : -1;
}
