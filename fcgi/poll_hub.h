/* poll_hub.h — this process's waiting long-poll GETs, grouped by the
 * channel their sessions follow: one ring of a channel makes one of its
 * waiters pump every session of the group in one write transaction
 * (poll_pump_items), the others only read their outbox. No time slices:
 * an idle waiter costs no CPU; bell_wake_all() ends every wait.
 * Threads: any number of request threads at once (a process-wide hub
 * under one mutex); each waiter uses its own ctx. */
#ifndef PARLEY_POLL_HUB_H
#define PARLEY_POLL_HUB_H
#include "poll_transport.h"

/* What a batch found for one waiter. */
struct poll_hub_result {
    enum poll_status status;   /* of its pump */
    int64_t next_seq;          /* the outbox's next number afterwards */
    struct poll_seen seen;     /* the session afterwards */
};

enum poll_hub_wake {
    POLL_HUB_TIMEOUT = 0,      /* until passed, or shutdown: nothing found */
    POLL_HUB_RESULT = 1,       /* a batch found something: *res */
    POLL_HUB_LOOK = 2,         /* the caller must look itself (out of memory) */
};

/* Waits, as a member of chan's group, for an event of chan until `until`
 * (monotonic ms). sid/cursor/job: the waiting GET's session, its client's
 * cursor (acknowledged by the batch) and whether it follows a job. *seen:
 * the bell value up to which the session was looked at (updated). ext_s:
 * a batch's expiry extension (poll_extension_s). */
enum poll_hub_wake poll_hub_wait(struct parley_ctx *ctx, const char *sid, int64_t cursor,
                                 int job, const char *chan, uint32_t *seen, int64_t until,
                                 int ext_s, struct poll_hub_result *res);
/* What a batch's pump of one waiter's session means for it (the rule every
 * batch applies; poll_park.c too): 1 with *res filled when the waiter must
 * wake (frames after its cursor, closed, an error, or the session moved on
 * from chan / from following a job as `job` says), 0 when it sleeps on
 * (nothing for it, or POLL_BUSY: the POST holding the session rings the
 * channel when it has saved). Any thread; no state. */
int poll_hub_judge(const char *chan, int64_t cursor, int job, const struct poll_item *it,
                   const struct poll_seen *po, struct poll_hub_result *res);
#endif
