/* pollsess.h — long-poll sessions in SQLite (tables poll_sessions, poll_outbox),
 * so any FastCGI process can serve any request of a session.
 *
 * A session holds one protocol connection (proto_conn_save JSON) and an
 * outbox of frames numbered 1, 2, 3... A request that changes the session
 * (pumping the event log into the outbox, or handling a client frame) holds
 * a short lease lock (poll_lock ... poll_save) so two requests of one
 * session never interleave, across processes. Sessions expire after
 * idle_s without a request. Threads: uses the caller's parley_db.
 */
#ifndef PARLEY_POLLSESS_H
#define PARLEY_POLLSESS_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"

/* What a session operation found: one set of names for every function
 * below that answers more than "done / failed" (the transport maps each
 * to its HTTP status in one table: fcgi/poll_transport.c). */
enum poll_status {
    POLL_ERROR = -1,        /* database error */
    POLL_OK = 0,            /* done / found */
    POLL_GONE = 1,          /* unknown or expired */
    POLL_BUSY = 2,          /* another request holds the session's lock */
    POLL_FULL = 3,          /* the owner already has the most sessions allowed */
};

/* Creates a session; sid receives a new UUID. 0 / -1. */
int poll_create(parley_db *db, const char *path, const char *owner, int idle_s, char sid[37]);
/* Takes the session's lock (waiting up to ~2 s for another holder) and
 * returns its state (new string, may be "{}") and owner (copied).
 * POLL_OK locked; POLL_GONE unknown or expired (an expired one is deleted);
 * POLL_BUSY still locked by someone else after waiting; POLL_ERROR. */
enum poll_status poll_lock(parley_db *db, const char *sid, int idle_s, char **state,
              char *owner, size_t ownerlen);
/* Appends frames to the outbox, saves state (NULL: keep) and releases the
 * lock, in one transaction; touches the expiry. 0 / -1. */
int poll_save(parley_db *db, const char *sid, const char *state, char *const *frames,
              int nframes, int idle_s);
/* The same, and deletes the frames the client acknowledged (seq <= ack_upto;
 * 0: none) in that transaction. */
int poll_save_ack(parley_db *db, const char *sid, const char *state, char *const *frames,
                  int nframes, int idle_s, int64_t ack_upto);
/* Reads the session without locking or writing: its state (new string;
 * state NULL: not copied) and owner (copied), and when it expires (ms
 * since the epoch). POLL_OK found;
 * POLL_GONE unknown or expired; POLL_ERROR. For a request that only looks
 * whether there is anything to do before it takes the lock. */
enum poll_status poll_peek(parley_db *db, const char *sid, char **state, char *owner,
                           size_t ownerlen, int64_t *expires_at);
/* What poll_peek_meta reads besides the state. The outbox's frames are
 * always the consecutive numbers next_seq - stored .. next_seq - 1 (frames
 * are deleted only from the front, when acknowledged). */
struct poll_meta {
    int64_t expires_at;     /* ms since the epoch */
    int64_t next_seq;       /* the number the next frame gets */
    int64_t stored;         /* frames in the outbox (received or not) */
};
/* poll_peek, and the outbox's extent, in the same read. */
enum poll_status poll_peek_meta(parley_db *db, const char *sid, char **state, char *owner,
                                size_t ownerlen, struct poll_meta *meta);
/* How many frames the session's outbox holds (the client has not
 * acknowledged them, as far as any request has told). Count or -1. */
int poll_pending(parley_db *db, const char *sid);
/* How many unexpired sessions owner has open (at now, ms since the epoch).
 * Count or -1. */
int poll_owned(parley_db *db, const char *owner, int64_t now);
/* Deletes acknowledged frames (seq <= ack_upto; 0: none) and extends the
 * session's expiry by idle_s, in one transaction, without the lock. 0 / -1. */
int poll_touch(parley_db *db, const char *sid, int64_t ack_upto, int idle_s);
/* Releases the lock without changes. */
void poll_unlock(parley_db *db, const char *sid);
/* Writes the frames after cursor as a JSON array text into *json (new:
 * "[f1,f2]"), at most max frames; *last = last frame's seq (= cursor when
 * none). Returns the count or -1. */
int poll_read(parley_db *db, const char *sid, int64_t after, int max, char **json, int64_t *last);
/* Deletes frames the client acknowledged (seq <= upto). 0 / -1. */
int poll_ack(parley_db *db, const char *sid, int64_t upto);
/* Deletes the session and its outbox. POLL_OK deleted, POLL_GONE unknown,
 * POLL_ERROR. */
enum poll_status poll_delete(parley_db *db, const char *sid);
/* Deletes sessions idle past their expiry (at most 200). Returns count or -1. */
int poll_expire(parley_db *db, int64_t now);

/* Creates a session with its state and first frames in one transaction
 * (poll_create + poll_lock + poll_save in one write). When max_owned > 0
 * and owner is not "", the owner may hold at most max_owned unexpired
 * sessions: counted inside the same transaction, so concurrent opens never
 * exceed it. POLL_OK (sid set), POLL_FULL (nothing created), POLL_ERROR. */
enum poll_status poll_open(parley_db *db, const char *path, const char *owner,
                           const char *state, char *const *frames, int nframes, int idle_s,
                           int max_owned, char sid[37]);

/* ---- pumping many sessions in one write transaction ----
 *
 * poll_pump() serves a GET that has something to store, and the batch of
 * every waiting GET of a process that follows one channel: ONE BEGIN
 * IMMEDIATE for all of them. For each item it reads the session row inside
 * the transaction (so the state is never stale, whichever process wrote it
 * last), skips a session that another request holds with poll_lock (status
 * 2: a POST in progress; the caller retries), and calls fn with the stored
 * state. When fn returns a change, the frames are appended to the outbox,
 * the state saved, the expiry touched and the frames the client
 * acknowledged (seq <= ack) deleted, in that same transaction. No lease is
 * taken: the write transaction itself excludes every other writer of the
 * session for its duration. */
struct poll_item {
    const char *sid;
    int64_t ack;            /* client's cursor: frames <= ack are deleted (0: none) */
    void *arg;              /* for fn */
    /* results */
    enum poll_status status; /* POLL_OK looked (changed or not); POLL_GONE
                             * unknown or expired; POLL_BUSY locked by another
                             * request; POLL_ERROR */
    int changed;            /* state saved / frames appended */
    int64_t next_seq;       /* the outbox's next frame number afterwards */
};
/* What fn hands back: a new state (NULL: unchanged) and frames to append;
 * all malloc'ed, poll_pump frees them. */
struct poll_update {
    char *state;
    char **frames;
    int nframes;
    int idle_s;             /* the session's new expiry, from now, when written
                             * (0: poll_pump's idle_s) */
};
/* Called inside the transaction; state is the stored one (borrowed). Must
 * not begin a transaction of its own. 0, or -1 (the item gets POLL_ERROR,
 * nothing of it is written; the others go on). */
typedef int (*poll_pump_fn)(void *fnarg, struct poll_item *it, const char *state,
                            struct poll_update *out);
/* 0 committed (see each item's status); -1 the transaction failed (every
 * status POLL_ERROR, nothing written). */
int poll_pump(parley_db *db, struct poll_item *items, int n, int idle_s, poll_pump_fn fn,
              void *fnarg);
#endif
