/* evlog.h — the per-channel event log (table events) and its writer.
 *
 * A channel ("ticket:123", "conv:<uuid>", ...) has a dense, increasing seq.
 * Appending rings the doorbell for the channel after commit; readers read
 * after a cursor and, with nothing new, sleep on the doorbell (never a fixed
 * sleep-poll). Event types used by the runner:
 *   "start"  data: JSON {"job_id", "message_id"?, "model"}
 *   "token"  data: the raw text of one or more coalesced tokens
 *   "done"   data: JSON {"job_id", "message_id"?, "tokens", "processing_ms",
 *                         "model", "first_token_ms"}
 *   "error"  data: JSON {"job_id", "message", "kind"}
 * Threads: every function uses the caller's parley_db (one thread at a time);
 * a parley_bell may be shared.
 */
#ifndef PARLEY_EVLOG_H
#define PARLEY_EVLOG_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"
#include "bell.h"

struct evlog_event {
    int64_t seq;
    int64_t job_id;        /* 0 when none */
    char *type;            /* owned by the array */
    char *data;            /* owned by the array */
    size_t data_len;
    int64_t created_at;
    int from_memory;       /* 1: made in memory, not in the log (jobs_expired_event):
                              seq is the follower's cursor, which it does not move */
};

/* Appends one event in its own BEGIN IMMEDIATE transaction and rings the
 * bell (bell may be NULL). Returns the new seq (> 0) or -1. */
int64_t evlog_append(parley_db *db, parley_bell *bell, const char *channel,
                     int64_t job_id, const char *type, const char *data, size_t len);
/* The same inside the caller's open transaction: no commit, no ring; the
 * caller rings after its commit. Returns the new seq or -1. */
int64_t evlog_append_tx(parley_db *db, const char *channel, int64_t job_id,
                        const char *type, const char *data, size_t len);

/* Wakes the followers of channel on every node for a change that is not
 * an event append (a long-poll session's state: a frame POSTed, a session
 * deleted): bell_ring on this process's bell (may be NULL) and, on
 * PostgreSQL, a NOTIFY on db (delivered to every node's listener when db's
 * open transaction commits, at once when none is open). An append needs no
 * call: its NOTIFY is part of it. Errors are logged and otherwise ignored
 * (followers also wake at their timeouts). Threads: db's thread. */
void evlog_ring(parley_db *db, parley_bell *bell, const char *channel);

/* Highest seq of the channel (0 when it has none). -1 on error. */
int64_t evlog_last_seq(parley_db *db, const char *channel);

/* Reads up to max events with seq > after, oldest first, into a new array
 * (*out, free with evlog_free). Returns the count (0 none) or -1. */
int evlog_read(parley_db *db, const char *channel, int64_t after, int max,
               struct evlog_event **out);
void evlog_free(struct evlog_event *ev, int n);

/* Like evlog_read, but when nothing is there sleeps on the doorbell until
 * something is appended or timeout_ms passes (< 0: no limit). Returns the
 * count, 0 on timeout, -1 on error or when *stop becomes non-zero
 * (stop may be NULL; it is checked at least every 250 ms). */
int evlog_wait(parley_db *db, parley_bell *bell, const char *channel, int64_t after,
               int max, int timeout_ms, const volatile int *stop,
               struct evlog_event **out);

/* Deletes events of jobs finished more than grace_ms ago, always keeping
 * each channel's newest event so its seq never restarts. Returns rows
 * deleted or -1. */
int evlog_compact(parley_db *db, int64_t grace_ms, int64_t now);

/* A coalescing token writer for one job. Tokens arriving within
 * coalesce_ms of the first buffered one go into one "token" event;
 * coalesce_ms 0 appends every token as its own event. */
struct evlog_writer {
    parley_db *db;
    parley_bell *bell;
    const char *channel;   /* borrowed */
    int64_t job_id;
    int coalesce_ms;
    char *buf;
    size_t len, cap;
    int64_t first_us;      /* when the oldest buffered token arrived */
    int64_t flushed_us;    /* when the last token event was appended (0: never) */
    int64_t events;        /* token events appended */
    int64_t last_seq;
};
void evw_init(struct evlog_writer *w, parley_db *db, parley_bell *bell,
              const char *channel, int64_t job_id, int coalesce_ms);
/* Adds a token: appends now, or buffers it. 0 / -1 (database error). */
int evw_token(struct evlog_writer *w, const char *text, size_t len);
/* Appends what is buffered, if anything. 0 / -1. */
int evw_flush(struct evlog_writer *w);
/* Flushes when the oldest buffered token is coalesce_ms old. 0 / -1. */
int evw_tick(struct evlog_writer *w);
/* Milliseconds until evw_tick must run, or -1 when nothing is buffered. */
int evw_due_ms(const struct evlog_writer *w);
/* Takes the buffered text without appending it (new string or NULL); used
 * to put the last tokens into the same transaction as "done". */
char *evw_take(struct evlog_writer *w, size_t *len);
void evw_cleanup(struct evlog_writer *w);
#endif
