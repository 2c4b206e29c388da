/* storage/pg/stats_pg.h — what the backends read for stats_overview
 * (stats.h). Included only by core/stats.c, storage/pg/stats.c and unit
 * tests. stats.c reads SQLite itself and calls stats_pg_overview on a
 * PostgreSQL handle; both fill the same struct and stats.c builds the JSON.
 * Threads: as db.h (the connection's thread only). */
#ifndef PARLEY_PG_STATS_H
#define PARLEY_PG_STATS_H
#include <stdint.h>
#include <jansson.h>
#include "stats.h"

/* The overview's statements, the same text on SQLite and PostgreSQL (each
 * module keeps its own static copy: statements are cached by address). */
#define SQL_OV_JOBS "SELECT CASE WHEN state = 'done' AND stopped_at IS NOT NULL THEN 'stopped' " \
                    "ELSE state END, count(*) FROM jobs GROUP BY 1"
#define SQL_OV_FAILED "SELECT count(*) FROM jobs WHERE state = 'failed' AND finished_at > $1"
#define SQL_OV_USERS "SELECT user_id, prompt_tokens, completion_tokens, " \
                     "prompt_tokens + completion_tokens AS total, generations FROM usage_daily " \
                     "WHERE day = $1 ORDER BY total DESC, user_id LIMIT $2"
#define SQL_OV_TICKETS "SELECT count(*) FROM tickets"
#define SQL_OV_CONVS "SELECT count(*) FROM conversations"
#define SQL_OV_MSGS "SELECT count(*) FROM messages"
#define SQL_OV_ANSWERS "SELECT count(*) FROM answers"
#define SQL_OV_HITS "SELECT coalesce(sum(hits), 0) FROM answers"

/* Counts are -1 when their table could not be read. */
struct stats_overview_raw {
    int64_t tickets, conversations, messages, answers;
    int64_t cache_hits;                 /* sum of answers.hits */
    int64_t gen_running, gen_done, gen_stopped, gen_failed;   /* jobs by outcome */
    int64_t failed_since;               /* jobs failed after `since` */
    json_t *users;                      /* new array of {user, prompt_tokens, completion_tokens,
                                           tokens, generations} for the day; NULL on error */
};

/* Fills *raw (users: new array, the caller json_decrefs it) for jobs failed
 * after since and usage of UTC day `day` (days since 1970). 0, or -1 when
 * the jobs or the usage could not be read (db_err_kind set; raw->users
 * NULL). */
int stats_pg_overview(parley_db *db, int64_t since, int64_t day, struct stats_overview_raw *raw);

/* One element of stats_live_generations' array (stats.c): new object,
 * NULL out of memory; strings borrowed (user NULL: null). */
json_t *stats_live_row(int64_t id, const char *channel, const char *user, int64_t started,
                       const char *owner, int stop, int64_t tokens, int64_t bytes,
                       const char *model, const char *tail, int64_t now);
/* The running jobs (stats_live_generations) into arr (append). 0 / -1. */
int stats_pg_live(parley_db *db, int64_t now, json_t *arr);
int stats_pg_poll_open(parley_db *db, int64_t now, int64_t *generic, int64_t *phoenix);

int stats_pg_cache_hit(parley_db *db, const char *key);
#define SQL_CACHE_HIT "UPDATE answers SET hits = hits + 1 WHERE key = $1"

/* Same text on both backends. */
#define SQL_POLL_OPEN "SELECT coalesce(sum(CASE WHEN path = '/socket/longpoll' THEN 0 ELSE 1 END), 0), " \
    "coalesce(sum(CASE WHEN path = '/socket/longpoll' THEN 1 ELSE 0 END), 0) " \
    "FROM poll_sessions WHERE expires_at > $1"
#endif
