/* stats.h — installation-wide counters read from the database, for
 * /api/metrics and /api/health (what every process can see, unlike the
 * per-process numbers a front keeps itself).
 * Backend: SQLite in stats.c; another backend implements this header again.
 * Threads: uses the caller's parley_db (its thread only).
 */
#ifndef PARLEY_STATS_H
#define PARLEY_STATS_H
#include <stdint.h>
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
#endif
