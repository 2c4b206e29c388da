/* storage/pg/usage.c — the usage module's PostgreSQL bodies (contracts:
 * usage.h; usage.c checks the arguments and dispatches here when
 * db_pg_conn(db) is not NULL).
 *
 * Counting across nodes: a charge inserts its event and adds to the user's
 * day row with INSERT ... ON CONFLICT (user_id, day) DO UPDATE SET x = x +
 * excluded.x. The update takes the row's lock and adds to the latest
 * committed value (READ COMMITTED re-reads the row after waiting), and the
 * unique key makes two first charges of a day one row: concurrent charges
 * from any number of connections add up exactly, never read-then-write.
 * The budget check only reads committed sums. Every value is bound
 * (db_pg_exec, prepared once per session). */
#include "storage/pg/pg.h"
#include "storage/pg/usage_pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char SQL_EVENT[] =
    "INSERT INTO usage_events (user_id, channel, job_id, message_id, model, upstream, outcome, "
    "prompt_tokens, completion_tokens, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
static const char SQL_DAILY[] =
    "INSERT INTO usage_daily AS d (user_id, day, prompt_tokens, completion_tokens, generations) "
    "VALUES ($1, $2, $3, $4, 1) ON CONFLICT (user_id, day) DO UPDATE SET "
    "prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = d.completion_tokens + excluded.completion_tokens, "
    "generations = d.generations + 1";
static const char SQL_DAYS[] =
    "SELECT day, prompt_tokens, completion_tokens, generations FROM usage_daily "
    "WHERE user_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day DESC LIMIT $4";
static const char SQL_BUDGET_SET[] =
    "INSERT INTO usage_budgets (user_id, tokens, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (user_id) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at";
static const char SQL_BUDGET_DEL[] = "DELETE FROM usage_budgets WHERE user_id = $1";
static const char SQL_BUDGET_GET[] = "SELECT tokens FROM usage_budgets WHERE user_id = $1";
static const char SQL_TOTALS[] =
    "SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM usage_daily";

#define I64(buf, v) char buf[24]; snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(v))

/* Runs sql; 0 when its status is want, else -1 with the failure recorded. */
static int exec_ok(parley_db *db, const char *sql, int n, const char *const *params,
                   ExecStatusType want, const char *what)
{
    PGresult *r = db_pg_run(db, sql, n, params, want, what);
    if (!r)
        return -1;
    PQclear(r);
    return 0;
}

int usage_pg_charge_tx(parley_db *db, const struct usage_charge *u, const char *user)
{
    I64(job, u->job_id);
    I64(pt, u->prompt_tokens);
    I64(ct, u->completion_tokens);
    I64(at, u->at_ms);
    I64(day, usage_day_of(u->at_ms));
    const char *ev[10] = { user, u->channel, u->job_id > 0 ? job : NULL,
                           u->message_id && *u->message_id ? u->message_id : NULL,
                           u->model ? u->model : "", u->upstream ? u->upstream : "",
                           u->outcome, pt, ct, at };
    const char *dp[4] = { user, day, pt, ct };
    if (db_begin(db) < 0)
        return -1;
    if (exec_ok(db, SQL_EVENT, 10, ev, PGRES_COMMAND_OK, "usage: recording a generation's tokens") < 0 ||
        exec_ok(db, SQL_DAILY, 4, dp, PGRES_COMMAND_OK, "usage: adding to the day's tokens") < 0) {
        db_rollback(db);
        return -1;
    }
    return db_commit(db);
}

int usage_pg_days(parley_db *db, const char *user, int64_t from, int64_t to,
                  struct usage_day *days, int max)
{
    I64(f, from);
    I64(t, to);
    I64(m, max);
    const char *p[4] = { user, f, t, m };
    PGresult *r = db_pg_exec(db, SQL_DAYS, 4, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_pg_fail(db, "usage: reading daily tokens", r);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    if (n > max)
        n = max;
    for (int i = 0; i < n; i++) {
        days[i].day = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        days[i].prompt_tokens = strtoll(PQgetvalue(r, i, 1), NULL, 10);
        days[i].completion_tokens = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        days[i].generations = strtoll(PQgetvalue(r, i, 3), NULL, 10);
    }
    PQclear(r);
    return n;
}

int usage_pg_budget_set(parley_db *db, const char *user, int64_t tokens, int64_t now_ms)
{
    I64(tok, tokens);
    I64(now, now_ms);
    const char *p[3] = { user, tok, now };
    if (tokens < 0)
        return exec_ok(db, SQL_BUDGET_DEL, 1, p, PGRES_COMMAND_OK, "usage: removing a budget");
    return exec_ok(db, SQL_BUDGET_SET, 3, p, PGRES_COMMAND_OK, "usage: setting a budget");
}

int usage_pg_budget_get(parley_db *db, const char *user, int64_t *tokens)
{
    const char *p[1] = { user };
    PGresult *r = db_pg_exec(db, SQL_BUDGET_GET, 1, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_pg_fail(db, "usage: reading a budget", r);
        PQclear(r);
        return -1;
    }
    int got = PQntuples(r) > 0;
    if (got)
        *tokens = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return got;
}

int usage_pg_totals(parley_db *db, int64_t *prompt_tokens, int64_t *completion_tokens)
{
    PGresult *r = db_pg_exec(db, SQL_TOTALS, 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        db_pg_fail(db, "usage: summing tokens", r);
        PQclear(r);
        return -1;
    }
    *prompt_tokens = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *completion_tokens = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    return 0;
}
