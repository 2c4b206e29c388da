/* poll_cache.h — what this process knows of a long-poll session: GETs
 * that need no look.
 *
 * A client's next GET usually comes right after its last answer, with the
 * cursor of that answer, and nothing happened to the session meanwhile. The
 * look it would start with (read the session, parse its state, read the
 * log) then only confirms that. So after answering, a GET records here
 * what it knew of the session and the doorbell values (of the channel and
 * of "poll:<sid>") up to which the session had been looked at or pumped,
 * and the next GET skips its look when both bells still hold those values:
 * nothing was appended to the channel and no POST or DELETE touched the
 * session since (they ring "poll:<sid>"), in any process (poll_get.c
 * decides, with the session's expiry and its job's re-check interval).
 * Threads: a fixed process-wide table under one mutex; entries are copied
 * in and out. */
#ifndef PARLEY_POLL_CACHE_H
#define PARLEY_POLL_CACHE_H
#include <stdint.h>

struct poll_known {
    char sid[37];
    char owner[128];
    char chan[200];
    int following, job;
    int64_t job_id;            /* the followed job, when known */
    uint32_t seen_c, seen_p;   /* looked at / pumped up to these bell values */
    int64_t last;              /* the outbox had no frame after this one */
    int64_t expires;           /* session expiry, ms since the epoch (as known) */
    int64_t looked_at;         /* mono ms of the last look */
    int64_t next_seq, stored;  /* the outbox's extent (poll_meta), as known */
    uint64_t vid;              /* its virtual frames (poll_replay.h), 0: none */
};

/* 1 with *out a copy of what is known of sid; 0 when nothing is. */
int poll_known_get(const char *sid, struct poll_known *out);
/* Records *in (copied), replacing whatever shared its slot. */
void poll_known_put(const struct poll_known *in);
/* Forgets sid (a no-op when another session holds its slot). */
void poll_known_drop(const char *sid);
#endif
