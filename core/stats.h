/* stats.h — installation-wide counters read from the database, for
 * /api/metrics and /api/health (what every process can see, unlike the
 * per-process numbers a front keeps itself).
 * Backend: SQLite in stats.c; another backend implements this header again.
 * Threads: uses the caller's parley_db (its thread only).
 */
#ifndef PARLEY_STATS_H
#define PARLEY_STATS_H
#include <stdint.h>
#include <jansson.h>
#include "db.h"

struct parley_stats {
    int64_t jobs_running, jobs_done, jobs_failed;   /* generations by state */
    /* Jobs done since `since` (their "done" events): how many, and the mean
     * time to first token and mean generation time, in ms (0 when none). */
    int64_t recent_done;
    double recent_first_token_ms, recent_generation_ms;
    int64_t poll_sessions;     /* open long-poll sessions; -1 could not read */
    int64_t answers_cached;    /* cached answers; -1 could not read */
    int64_t conversations;     /* conversations stored; -1 could not read */
    /* Anonymous visitors' share (owner "anon:...", core/visitor.h): their
     * conversations, the messages they sent, their open long-poll
     * sessions; -1 could not read. */
    int64_t anon_conversations, anon_messages, anon_poll_sessions;
};

/* Fills *out; `since` is a wall-clock time in ms (now_ms() - 3600000 for
 * "the last hour"). 0, or -1 when the job counts could not be read (then
 * db_err_kind tells why and *out holds zeros and -1s). A counter other than
 * the job counts that cannot be read is -1 and does not fail the call. */
/* The anonymous visitors' counters, the same SQL on SQLite and PostgreSQL
 * (owner prefix "anon:", compared exactly: LIKE ignores case in SQLite). */
#define SQL_ANON_CONVS "SELECT count(*) FROM conversations WHERE substr(owner, 1, 5) = 'anon:'"
#define SQL_ANON_MSGS  "SELECT count(*) FROM messages m JOIN conversations c ON c.id = " \
                       "m.conversation_id WHERE substr(c.owner, 1, 5) = 'anon:' AND m.role = 'user'"
#define SQL_ANON_POLLS "SELECT count(*) FROM poll_sessions WHERE substr(owner, 1, 5) = 'anon:'"

int stats_collect(parley_db *db, int64_t since, struct parley_stats *out);

/* Generations running now, or -1 on a database error. */
int64_t stats_jobs_running(parley_db *db);

/* ---- the overview (`parley stats`, GET /api/admin/overview; docs/admin.md) ---- */

/* Most users stats_overview lists under "tokens_today" (the heaviest first). */
#define STATS_TOP_USERS 100

/* stats_overview: counts, cache hit rate, generations by outcome, errors in the last hour, tokens by
 * user today, ... as a new JSON object in *out (caller owns, json_decref). Any thread with its own db
 * handle. Returns 0, or -1 with perr set.
 *
 * The object (docs/admin.md has the full description):
 *   {"at": ms now, "counts": {"tickets", "conversations", "messages", "answers_cached"},
 *    "cache": {"hits", "answers", "hit_rate" (number or null), "basis": text},
 *    "generations": {"running", "done", "stopped", "failed"},
 *    "errors_last_hour": {"since": ms, "generations_failed", "total"},
 *    "tokens_today": {"day": "YYYY-MM-DD", "users": [{"user", "prompt_tokens",
 *                     "completion_tokens", "tokens", "generations"}...]}}
 * A count that could not be read is -1 in the object (the call still
 * succeeds); a failure to read the jobs or the usage table fails the call
 * (-1, *out untouched, db_err_kind(db) tells why). Read-only: works on a
 * read-only database. Uses the caller's parley_db (its thread only). */
int stats_overview(parley_db *db, json_t **out);
/* stats_overview at a given wall clock now_ms (tests). Same contract. */
int stats_overview_at(parley_db *db, int64_t now_ms, json_t **out);

/* Most generations stats_live_generations lists (the oldest first). */
#define STATS_LIVE_MAX 200
/* A live generation's "text_tail": at most this many bytes of the end of
 * its streamed text, from at most STATS_TAIL_EVENTS "token" events. */
#define STATS_TAIL_BYTES 240
#define STATS_TAIL_EVENTS 64

/* The generations running now (jobs in state running), oldest first, at
 * most STATS_LIVE_MAX, as a new JSON array in *out (caller json_decrefs):
 *   [{"job_id", "channel", "user" (jobs.started_by; null when not
 *     recorded), "model" (from its "start" event; "" unknown), "started_at",
 *     "age_ms" (now_ms - started_at), "tokens_so_far" (its "token" events
 *     so far: each holds one or more upstream chunks written within
 *     PARLEY_COALESCE_MS, so this is the upstream's chunk count or a bit
 *     less; the upstream's own count is known when it ends),
 *     "streamed_bytes" (the text streamed so far), "lease_owner" (the
 *     process "pid:tid:random" running it), "stop_requested" (bool),
 *     "text_tail" (the end of the text streamed so far, at most
 *     STATS_TAIL_BYTES, cut on a character boundary: model output, for
 *     an admin's eyes only — show it as text)}...]
 * The upstream answering is not stored while a job runs (the caller adds
 * what its configuration tells). 0, or -1 on a database error (*out
 * untouched; db_err_kind). Read-only. Caller's parley_db (its thread). */
int stats_live_generations(parley_db *db, int64_t now_ms, json_t **out);

/* Counts one cache hit of the stored answer key (answers.hits + 1): what
 * stats_overview's cache hit rate is computed from. For the paths that
 * serve a stored answer instead of a generation (core/proto_ticket.c and
 * core/proto_phoenix.c after store_answer_get; see docs/admin.md, "Left":
 * they do not call it yet). One UPDATE, its own statement (autocommit, or
 * part of the caller's open transaction). Returns 1 counted, 0 no such
 * answer (deleted meanwhile), -1 on a database error (a read-only
 * database: the caller serves the answer anyway). Caller's parley_db. */
int stats_cache_hit(parley_db *db, const char *key);

/* Open long-poll sessions (not expired at now_ms) from the database, every
 * process's and node's: *generic those of the generic transport
 * (/api/poll/, DESIGN §3), *phoenix those of Phoenix LongPoll
 * (/socket/longpoll). 0, or -1 on a database error. */
int stats_poll_open(parley_db *db, int64_t now_ms, int64_t *generic, int64_t *phoenix);
#endif
