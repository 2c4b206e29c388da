/* poll_pump.h — pumping followed channels into long-poll sessions'
 * outboxes (one write transaction for one session or a whole batch), with
 * exactly the frames the protocol adapters (core/proto.h) produce. */
#ifndef PARLEY_POLL_PUMP_H
#define PARLEY_POLL_PUMP_H
#include "poll_transport.h"

/* Pumps every item in ONE write transaction (poll_pump): reads each
 * session inside it, formats the events of its channel after its cursor,
 * appends the frames, saves the state, extends its expiry by ext_s and
 * deletes the frames up to items[i].ack. Sets each item's status and
 * next_seq, and seen[i] to what the session looks like afterwards (valid
 * when the status is POLL_OK). items[i].arg is used (set here). Events
 * read for one channel point are shared by the items at that point.
 * Thread: the caller's ctx->db. */
void poll_pump_items(struct parley_ctx *ctx, struct poll_item *items, struct poll_seen *seen,
                     int n, int ext_s);

/* Pumps one session (a look said there is work), acknowledging the
 * client's cursor. Waits up to ~2 s for a POST holding the session's lock.
 * Returns the item status: POLL_OK with *seen and *next (the outbox's next
 * number) filled, POLL_GONE, POLL_BUSY (still locked), POLL_ERROR. */
enum poll_status poll_pump_one(struct parley_ctx *ctx, const char *sid, int64_t cursor,
                               int ext_s, struct poll_seen *seen, int64_t *next);
#endif
