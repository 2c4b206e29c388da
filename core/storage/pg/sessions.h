/* storage/pg/sessions.h — the PostgreSQL bodies of pollsess and ratelimit
 * (storage/pg/pollsess.c, storage/pg/ratelimit.c; issue 10). Included only
 * by core/pollsess.c, core/ratelimit.c, those two files and unit tests.
 *
 * Contracts and return values: pollsess.h and ratelimit.h. pollsess.c and
 * ratelimit.c check arguments and run the loops both backends share
 * (poll_lock's wait, poll_pump's items); the functions below are the
 * backend's steps. Threads: as db.h (the connection's thread only).
 * Tables: sql/pg/003_sessions.sql. */
#ifndef PARLEY_PG_SESSIONS_H
#define PARLEY_PG_SESSIONS_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"
#include "pollsess.h"

/* ---- ratelimit (arguments already checked by ratelimit.c: db set,
 * window_ms > 0, 1 <= n <= limit, user not NULL) ---- */
int ratelimit_pg_hit_n(parley_db *db, const char *user, int n, int limit, int64_t window_ms,
                       int64_t now_ms, int64_t *retry_ms);
int ratelimit_pg_prune(parley_db *db, int64_t window_ms, int64_t now_ms);

/* ---- pollsess ---- */
int poll_pg_create(parley_db *db, const char *sid, const char *path, const char *owner,
                   int idle_s);
/* poll_lock's one attempt: takes the lease (until lock_until) if the
 * session is unexpired and unlocked (or its lease ran out). 1 taken (*state new, owner copied),
 * 0 not taken, -1 error. */
int poll_pg_lock_try(parley_db *db, const char *sid, int64_t now, int64_t lock_until,
                     char **state, char *owner, size_t ownerlen);
/* After a failed attempt: POLL_GONE (unknown, or expired: then deleted,
 * unless a request extended it meanwhile), POLL_BUSY (locked by another
 * request), POLL_ERROR. */
enum poll_status poll_pg_lock_why(parley_db *db, const char *sid, int64_t now);
void poll_pg_unlock(parley_db *db, const char *sid);
enum poll_status poll_pg_peek_meta(parley_db *db, const char *sid, char **state, char *owner,
                                   size_t ownerlen, struct poll_meta *meta);
int poll_pg_pending(parley_db *db, const char *sid);
int poll_pg_owned(parley_db *db, const char *owner, int64_t now);
int poll_pg_touch(parley_db *db, const char *sid, int64_t ack_upto, int idle_s);
int poll_pg_save_ack(parley_db *db, const char *sid, const char *state, char *const *frames,
                     int nframes, int idle_s, int64_t ack_upto);
int poll_pg_read(parley_db *db, const char *sid, int64_t after, int max, char **json,
                 int64_t *last);
int poll_pg_ack(parley_db *db, const char *sid, int64_t upto);
enum poll_status poll_pg_delete(parley_db *db, const char *sid);
int poll_pg_expire(parley_db *db, int64_t now);
enum poll_status poll_pg_open(parley_db *db, const char *sid, const char *path,
                              const char *owner, const char *state, char *const *frames,
                              int nframes, int idle_s, int max_owned);
/* poll_pump's steps, inside its transaction: lock every item's session row
 * in one order (sorted by sid, so two batches never deadlock; 0 / -1), then
 * per item read the locked row (1 found: *state new; 0 unknown; -1 error)
 * and write its change (0 / -1). */
int poll_pg_pump_lock(parley_db *db, const struct poll_item *items, int n);
int poll_pg_pump_get(parley_db *db, const char *sid, char **state, int64_t *next,
                     char *lock, size_t locklen, int64_t *lock_expires, int64_t *expires);
int poll_pg_pump_write(parley_db *db, const char *sid, int64_t ack, const char *state,
                       char *const *frames, int nframes, int64_t next, int idle_s, int64_t now);
#endif
