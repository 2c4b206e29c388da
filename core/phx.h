/* phx.h — a Phoenix Channels socket (V2 JSON serializer), transport-neutral:
 * the socket layer of seed 003 that every Phoenix transport (LongPoll in
 * fcgi/phx_longpoll.c, WebSocket in the bridge) drives the same way.
 *
 * A frame is a JSON array [join_ref, ref, topic, event, payload]. The
 * socket answers itself:
 *   heartbeat on topic "phoenix"      → phx_reply ok {}
 *   phx_join  proxy:{session}         → phx_reply ok {} (the topic joins: one
 *                                       PROTO_PHOENIX proto_conn), or error
 *                                       {reason}: "unauthorized" (another
 *                                       user's session), "too many channels
 *                                       joined", "invalid session id",
 *                                       "session closed"; joining a topic
 *                                       already joined closes the old join
 *                                       first (phx_close with its join_ref)
 *   phx_join  any other topic         → phx_reply error {reason:"unmatched topic"}
 *   phx_leave                         → phx_reply ok {}, then phx_close
 *   a topic whose channel cannot be read (database error while pumping)
 *                                     → phx_error, the topic dropped (a
 *                                       crashed channel: the client rejoins)
 *   any event of a topic not joined   → phx_reply error {reason:"unmatched topic"}
 *   an event with a stale join_ref    → ignored (phoenix.js drops such replies too)
 *   a malformed frame (not JSON, not an array of 5, topic or event not a
 *   string, over PHX_FRAME_MAX bytes) → dropped; when its ref and topic can
 *                                       be read, phx_reply error {reason:
 *                                       "malformed message"} or "message too
 *                                       large". Phoenix closes the whole
 *                                       socket instead; Parley keeps it (one
 *                                       bad line of an NDJSON POST must not
 *                                       end the others).
 * Other events of a joined topic go to its adapter (core/proto_phoenix.c).
 * The socket's whole state saves to JSON (phx_save / phx_load), so a
 * LongPoll session lives in the database and any process serves it.
 * Threads: a phx_socket is used by one thread at a time; ctx->db is that
 * thread's connection.
 */
#ifndef PARLEY_PHX_H
#define PARLEY_PHX_H
#include <stddef.h>
#include "proto.h"

#define PHX_FRAME_MAX 65536        /* bytes of one client frame */
#define PHX_TOPICS_MAX 100         /* hard cap of PARLEY_PHOENIX_MAX_TOPICS */

struct phx_socket {
    char user[128];                /* JWT sub ("" open mode) */
    char peer[128];                /* rate-limit identity (ident_peer) */
    int max_topics;                /* PARLEY_PHOENIX_MAX_TOPICS */
    int admin;                     /* the JWT's role is "admin" (docs/stop.md); 0 after phx_init */
    int64_t token_budget;          /* the JWT's token_budget claim, -1 none (docs/usage.md);
                                      both given to every topic at its join */
    int n, cap;                    /* joined topics; room in topics */
    struct proto_conn *topics;     /* owned array (phx_free) */
};

/* Initialises an empty socket for user and peer (copied). max_topics is
 * clamped to 1..PHX_TOPICS_MAX. No database work. */
void phx_init(struct phx_socket *s, const char *user, const char *peer, int max_topics);
/* Frees every topic's state; s is empty afterwards. */
void phx_free(struct phx_socket *s);

/* Handles one client frame (text[0..len), need not be NUL-terminated):
 * answers to out (new frames, in order). When the frame started a
 * generation this caller owns, *job is set (hand it to proto_job_submit),
 * else NULL. Returns 0, or -1 on a database failure (frames then hold the
 * protocol's error; the socket stays usable). */
int phx_message(struct parley_ctx *ctx, struct phx_socket *s, const char *text, size_t len,
                struct proto_frames *out, struct proto_job **job);

/* Answers a heartbeat without the socket: when text[0..len) is a
 * well-formed heartbeat frame ([join_ref, ref, "phoenix", "heartbeat",
 * payload], as phx_message takes it), appends its reply to out (the same
 * frame phx_message makes for it) and returns 1; returns 0 for any other
 * frame (out untouched: hand it to phx_message), -1 out of memory. Reads
 * no socket state and no database, so a transport may call it on any
 * thread before queueing the frame: a heartbeat is then not answered
 * behind database work (phoenix.js falls back to LongPoll when its first
 * heartbeat is not answered within longPollFallbackMs). */
int phx_heartbeat(const char *text, size_t len, struct proto_frames *out);

/* Reads every joined topic's followed channel after its cursor (no
 * waiting) and formats the events (proto_pump per topic; a followed job
 * whose owner's lease expired is recovered). A topic whose channel cannot
 * be read (a database error) crashes as a Phoenix channel does
 * (phx_topic_crashed); the others go on. Returns the number of events
 * read, or -1 when out of memory. */
int phx_pump(struct parley_ctx *ctx, struct phx_socket *s, struct proto_frames *out);
/* Topic i crashed (its channel could not be read): answers
 * [join_ref, join_ref, topic, "phx_error", {}] as Phoenix does for a
 * crashed channel process — phoenix.js then rejoins it after its back-off,
 * and the rejoin follows (and replays) a running answer — and drops the
 * topic from s (indexes after i move down by one). 0 / -1 (out of memory;
 * the topic is dropped all the same). For transports that pump topics
 * themselves (the bridge). */
int phx_topic_crashed(struct phx_socket *s, int i, struct proto_frames *out);

/* The channels the socket's topics follow now (for a transport that waits
 * on their doorbells): up to max pointers into s (valid until s changes),
 * each channel once. Returns how many. */
int phx_channels(const struct phx_socket *s, const char **chans, int max);

/* The socket as JSON text (new string, NULL out of memory) / restores it:
 * 0, or -1 when the text is not a saved socket (s is then empty). */
char *phx_save(const struct phx_socket *s);
int phx_load(struct phx_socket *s, const char *json);
#endif
