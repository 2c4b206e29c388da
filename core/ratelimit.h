/* ratelimit.h — sliding-window rate limit per user, shared by every process
 * through SQLite (table rate_hits). One hit = one user message.
 * Threads: uses the caller's parley_db (one thread at a time). */
#ifndef PARLEY_RATELIMIT_H
#define PARLEY_RATELIMIT_H
#include <stdint.h>
#include "db.h"

/* Records a hit for user at now_ms if fewer than limit hits fall in
 * (now_ms - window_ms, now_ms]. Returns 1 allowed (hit recorded),
 * 0 limited (nothing recorded; *retry_ms, if not NULL, says when enough
 * hits leave the window), -1 on a database error or window_ms <= 0, or when
 * called inside an open transaction. limit <= 0: always 1.
 * Hits stamped after now_ms (by a process whose clock read came later but
 * committed first) count as inside the window, so concurrent callers can
 * never together exceed the limit. */
int ratelimit_hit(parley_db *db, const char *user, int limit, int64_t window_ms,
                  int64_t now_ms, int64_t *retry_ms);
/* The same for n hits at once, all or none: 1 when count + n fits in the
 * limit (n hits recorded), 0 limited (nothing recorded; n > limit never
 * fits, *retry_ms = window_ms), -1 as above. n <= 0: 1, nothing recorded. */
int ratelimit_hit_n(parley_db *db, const char *user, int n, int limit, int64_t window_ms,
                    int64_t now_ms, int64_t *retry_ms);
/* Deletes hits older than now_ms - window_ms for every user. Returns rows
 * deleted or -1. */
int ratelimit_prune(parley_db *db, int64_t window_ms, int64_t now_ms);
#endif
