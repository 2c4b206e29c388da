/* poll_replay.h — long-poll delivery without writes: the frames a
 * session's followed channel gives after its STORED state, formatted once
 * per process for every session at that state, and never stored.
 *
 * A session that follows a job stores its connection (core/proto.h) as of
 * its last pump, at log position P0, with its outbox's next number S. The
 * frames a pump would append next are a function of that stored state and
 * the events after P0 only (the adapters format events deterministically),
 * so they can be handed to the client without being stored: numbered S,
 * S+1, ... exactly as a pump would number them ("virtual" frames). A later
 * pump (or a POST, which pumps before it handles its frames) stores the same
 * frames under the same numbers, so a client never sees a frame twice or a
 * gap, whichever process answers it. Only "pure" events are replayed this
 * way: tokens of the followed job (and events of other jobs, which only move
 * the position), whose formatting leaves the connection's state untouched.
 * The first other event (a job's start or end, an error), a formatting that
 * changes the adapter state, or REPLAY_MAX_FRAMES frames make the entry
 * "blocked": the session then needs a real pump, which stores everything in
 * one write and gives it a new state (and so a new entry).
 *
 * Entries are keyed by the stored state WITHOUT the connection's identity
 * fields (user, peer, admin, tenant scope, token budget), which no pure
 * event's formatting reads: the viewers of one ticket share one entry, so
 * an event is read from the log and formatted once per process, not once
 * per viewer. Each entry has an id; a GET keeps the id, and an id whose
 * entry was evicted (a bounded table, least recently used first) is simply
 * not found: the GET then looks at its session again.
 * Threads: any (one process-wide table under one mutex; the log is read
 * under it with the caller's ctx->db).
 */
#ifndef PARLEY_POLL_REPLAY_H
#define PARLEY_POLL_REPLAY_H
#include <stddef.h>
#include <stdint.h>
#include "proto.h"

/* Frames one entry may hold before it blocks (a pump then stores them and
 * the state moves on): bounds the replay, the memory, and the frames a POST
 * materialises beyond POLL_PENDING_MAX. */
#define REPLAY_MAX_FRAMES 64

/* What an entry gives now. */
struct poll_view {
    uint64_t id;       /* the entry (0: none) */
    int64_t nframes;   /* virtual frames: numbered S .. S + nframes - 1 */
    int work;          /* blocked: an event follows that a pump must store */
    int at_end;        /* not blocked, and every logged event was read */
};

/* The entry for connection c (as loaded from a session's stored state; it
 * must follow a channel), created when missing, brought up to the log's
 * end. 0 with *v filled; -1 on a database or memory error (then the caller
 * pumps as before). c is not changed. */
int poll_replay_open(struct parley_ctx *ctx, const struct proto_conn *c, struct poll_view *v);

/* Entry id brought up to the log's end (when its channel's bell moved since
 * it was last read; every time without a doorbell). 1 with *v filled; 0
 * when the entry is gone (evicted: look at the session again); -1 on a
 * database error. */
int poll_replay_view(struct parley_ctx *ctx, uint64_t id, struct poll_view *v);

/* Appends entry id's frames from index `from` (0 = the frame numbered S),
 * at most max of them, to the JSON array text *buf of *len bytes (without
 * its closing ']': the caller adds it), each preceded by a ',' unless
 * *count is 0; *count is increased. *buf is realloc'ed (owned by the
 * caller). Reads what the entry holds, without reading the log. Returns
 * the number appended (0 when none from `from`), -1 when the entry is gone
 * or out of memory (*buf unchanged in length). */
int poll_replay_frames(uint64_t id, int64_t from, int max, char **buf, size_t *len, int *count);
#endif
