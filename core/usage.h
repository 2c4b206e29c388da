/* usage.h — token accounting and daily budgets per user (issue 11 item 3,
 * docs/usage.md). A storage module: SQLite body in usage.c, PostgreSQL body
 * in storage/pg/usage.c (dispatch on db_pg_conn), tables sql/006_usage.sql
 * and sql/pg/006_usage.sql.
 *
 * What is stored: one usage_events row per generation that used tokens
 * (user, channel, job, assistant message id when there is one, model,
 * upstream, outcome, prompt and completion tokens as the upstream reported
 * them, time), the per-user per-UTC-day sums (usage_daily, kept in the same
 * transaction by an upsert: concurrent charges from any number of processes
 * or nodes add up exactly), and per-user budget overrides (usage_budgets,
 * set by `parley budget set`).
 *
 * Budgets: a user's budget for a UTC day is, first found: the JWT claim
 * "token_budget" of the request (a non-negative integer), the CLI's
 * override, PARLEY_TOKEN_BUDGET_PER_DAY. 0 at any level means unlimited.
 * Tokens counted = prompt + completion. The check reads committed totals
 * only: generations still running are not counted until they end, so a
 * user can overshoot the budget by what the generations already running
 * use (documented in docs/usage.md).
 *
 * Days: a day is the number of whole days since 1970-01-01 UTC
 * (floor(ms / 86400000)); the budget resets at the next UTC midnight.
 * Threads: every function uses the caller's parley_db (one thread at a
 * time, db.h); usage_day_of, usage_reset_ms and usage_iso8601 are pure and
 * safe from any thread. Nothing returned is owned by the callee unless said.
 */
#ifndef PARLEY_USAGE_H
#define PARLEY_USAGE_H
#include <stdint.h>
#include "db.h"

#define USAGE_DAY_MS 86400000LL
/* The message every protocol sends when a user's daily budget is spent
 * (followed by "; it resets at <ISO 8601>"). */
#define USAGE_EXHAUSTED_MSG "Daily token budget exhausted"
/* Most days usage_days reports at once. */
#define USAGE_MAX_DAYS 366

/* One generation's usage, all strings borrowed. */
struct usage_charge {
    const char *user;          /* who started it: JWT sub, "" open mode; NULL = "" */
    const char *channel;       /* "ticket:..", "conv:..": required, non-empty */
    int64_t job_id;            /* 0: none */
    const char *message_id;    /* assistant message id, NULL/"" when none */
    const char *model;         /* NULL = "" */
    const char *upstream;      /* the upstream that answered, NULL = "" */
    const char *outcome;       /* "done", "stopped" or "error" */
    int64_t prompt_tokens;     /* >= 0 */
    int64_t completion_tokens; /* >= 0 */
    int64_t at_ms;             /* wall clock of the end; its UTC day is charged */
};

/* Records u: one usage_events row and the user's usage_daily row for u's
 * day increased by both counts and one generation. Runs in its own
 * transaction, or as a savepoint inside the caller's open one (db_begin
 * nests), so a generation's end and its charge commit together. A charge
 * with 0 prompt and 0 completion tokens records nothing and returns 0.
 * Returns 0 recorded (or nothing to record), -1 on bad arguments (channel
 * missing, a negative count, an unknown outcome; nothing written) or a
 * database error (rolled back to before the call). */
int usage_charge_tx(parley_db *db, const struct usage_charge *u);

/* One user's sums for one UTC day. */
struct usage_day {
    int64_t day;               /* days since 1970-01-01 */
    int64_t prompt_tokens, completion_tokens, generations;
};

/* The user's (NULL = "") sums for the UTC day of now_ms into *out (zeros
 * when nothing was charged). 0 / -1 database error. */
int usage_today(parley_db *db, const char *user, int64_t now_ms, struct usage_day *out);

/* The user's sums for the ndays UTC days ending with now_ms's day, newest
 * first, into days[0..ndays) (caller's array; every day present, zeros
 * where nothing was charged). 1 <= ndays <= USAGE_MAX_DAYS. Returns ndays,
 * or -1 on bad arguments or a database error. */
int usage_days(parley_db *db, const char *user, int64_t now_ms, int ndays,
               struct usage_day *days);

/* Sets the user's budget override to tokens per UTC day (0 = unlimited),
 * or removes it when tokens < 0 (the default applies again). user must be
 * non-empty unless it is "" on purpose (open mode's user): NULL is -1.
 * Returns 0, or -1 on a bad argument or a database error. */
int usage_budget_set(parley_db *db, const char *user, int64_t tokens, int64_t now_ms);
/* The user's override: 1 with *tokens set, 0 none, -1 database error. */
int usage_budget_get(parley_db *db, const char *user, int64_t *tokens);

/* Where a user's budget came from. */
enum usage_budget_source { USAGE_BUDGET_NONE = 0, USAGE_BUDGET_DEFAULT, USAGE_BUDGET_OVERRIDE,
                           USAGE_BUDGET_CLAIM };
/* "none", "default", "override", "claim". Never NULL. */
const char *usage_budget_source_name(enum usage_budget_source s);

/* A user's standing for the UTC day of now_ms. */
struct usage_status {
    int64_t used;              /* prompt + completion tokens charged today */
    int64_t prompt_tokens, completion_tokens, generations;
    int64_t budget;            /* tokens per day, 0 = unlimited */
    int64_t remaining;         /* budget - used, never below 0; -1 when unlimited */
    int64_t reset_ms;          /* the next UTC midnight after now_ms */
    enum usage_budget_source source;
    int exhausted;             /* budget > 0 and used >= budget */
};
/* Fills *st for user: claim_budget (>= 0 from the JWT claim, < 0 none)
 * first, then the override, then default_budget (<= 0 none). Reads
 * committed totals only (no lock, no write). 0 / -1 database error. */
int usage_status(parley_db *db, const char *user, int64_t default_budget,
                 int64_t claim_budget, int64_t now_ms, struct usage_status *st);
/* Before an upstream call: 1 the user may start a generation, 0 the budget
 * is exhausted (msg gets USAGE_EXHAUSTED_MSG "; it resets at <ISO 8601>"),
 * -1 database error. A claim of 0 (unlimited) answers 1 without touching
 * the database; otherwise the override and today's row are read. msg (may be NULL) has msglen bytes. */
int usage_budget_ok(parley_db *db, const char *user, int64_t default_budget,
                    int64_t claim_budget, int64_t now_ms, char *msg, size_t msglen);

/* Every user's tokens ever charged, for the metrics counter
 * parley_tokens_total. 0 / -1. */
int usage_totals(parley_db *db, int64_t *prompt_tokens, int64_t *completion_tokens);

/* floor(ms / USAGE_DAY_MS), also for times before 1970. */
int64_t usage_day_of(int64_t ms);
/* The first instant of the UTC day after ms's (the budget's reset). */
int64_t usage_reset_ms(int64_t ms);
/* ms as "YYYY-MM-DDTHH:MM:SSZ" (UTC, ISO 8601) into out. */
void usage_iso8601(int64_t ms, char out[32]);
/* day (days since 1970-01-01) as "YYYY-MM-DD" into out. */
void usage_date(int64_t day, char out[16]);
#endif
