/* proto.h — the client protocols as transport-neutral adapters (DESIGN §3).
 *
 * One adapter per seed protocol that has a WebSocket endpoint:
 *   PROTO_TICKET  seed 000  /api/websocket/chat/{ticketId}   core/proto_ticket.c
 *   PROTO_CHAT    seed 001  /ws/{session_id}?token=JWT       core/proto_chat.c
 *   PROTO_BRAND   seed 002  /ws/chat/{brand_id}              core/proto_brand.c
 * and one served over plain HTTP only (Server-Sent Events, fcgi/api_send.c):
 *   PROTO_SEND    seed 004  POST /api/chat/send              core/proto_send.c
 *   PROTO_OPENAI  OpenAI    POST /v1/chat/completions        core/proto_openai.c
 *   PROTO_AISDK   AI SDK    POST /api/ai-sdk/chat            core/proto_aisdk.c
 *                           (fcgi/api_aisdk.c; docs/ai-sdk.md)
 * and one joined topic of a Phoenix socket (core/phx.h drives it):
 *   PROTO_PHOENIX seed 003  topic proxy:{session}            core/proto_phoenix.c
 * The WebSocket bridge and the long-poll transport both drive a connection
 * through the same four calls, so a frame is byte-for-byte the same on both:
 *   proto_open()     once, after the transport accepted the connection;
 *   proto_message()  for each text frame the client sends;
 *   proto_event()    for each event of the channel the connection follows
 *                    (or proto_pump() to read and format what is there);
 *   proto_job_run()  when proto_message() handed back a job this caller owns
 *                    (the transport decides where: a worker thread in the
 *                    bridge, after FCGX_Finish_r in FastCGI).
 * Frames are JSON texts (new strings, in order) collected in proto_frames.
 * A connection's whole state serialises to JSON (proto_conn_save/load) so a
 * long-poll session can be served by any FastCGI process.
 * Threads: a proto_conn is used by one thread at a time; ctx->db is that
 * thread's connection.
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "perr.h"
#include "runner.h"

enum proto_kind { PROTO_TICKET = 0, PROTO_CHAT = 1, PROTO_BRAND = 2, PROTO_SEND = 3,
                  PROTO_PHOENIX = 4, PROTO_OPENAI = 5, PROTO_AISDK = 6 };
/* The path proto_open takes for seed 004 (not a WebSocket path: proto_route
 * does not list it). */
#define PROTO_SEND_PATH "/api/chat/send"
/* Seed 003: the topics a Phoenix socket may join ("proxy:<session>"), and
 * the internal path proto_open takes for one (+ the percent-encoded
 * session; not a WebSocket path: proto_route does not list it). */
#define PROTO_PHOENIX_TOPIC "proxy:"
#define PROTO_PHOENIX_PATH "/socket/phx/"
/* The AI SDK UI message stream (core/proto_aisdk.c, HTTP only like seed
 * 004): the path proto_open takes, the id of the one text part of an
 * answer, and the line the transport sends after the last part. */
#define PROTO_AISDK_PATH "/api/ai-sdk/chat"
#define PROTO_AISDK_TEXT_ID "text-1"
#define PROTO_AISDK_DONE "[DONE]"
/* 1 when id can name an AI SDK chat (a conversation id: 1-63 letters,
 * digits, '-', '_' or '.', not only dots), else 0. Pure. */
int proto_aisdk_chat_id_valid(const char *id);

/* Frames to send, in order. Each is a complete JSON text (new). */
struct proto_frames {
    char **v;
    int n, cap;
};
void frames_init(struct proto_frames *f);
/* Appends json_dumps(o) and decrefs o (steals o). 0 / -1. */
int frames_push(struct proto_frames *f, json_t *o);
void frames_free(struct proto_frames *f);

struct proto_conn {
    enum proto_kind kind;
    char user[128];        /* JWT sub; "" in open mode */
    char peer[128];        /* rate-limit identity: "user:<sub>" or "ip:<addr>" */
    char param[160];       /* ticket id / session id / brand id, from the path */
    int admin;             /* the JWT carries role "admin" (auth_verify_role): may stop
                              anyone's generation. The transport sets it after
                              proto_open; saved and loaded with the connection */
    char tenant_scope[17]; /* the scope of the JWT's tenant (ident_tenant_scope, from
                              proto_client.tenant at proto_open_client): seed 000 reaches
                              the tickets of this scope only ("" no tenant: the unscoped
                              tickets; refused while PARLEY_TENANT_CLAIM is set).
                              Saved and loaded (docs/tenants.md) */
    int with_seq;          /* query seq=1: streamed frames carry "seq" */
    int has_token_budget;  /* the JWT carries "token_budget" (auth_token_budget): */
    int64_t token_budget;  /* its tokens per UTC day (0 unlimited), before the CLI's
                              override and PARLEY_TOKEN_BUDGET_PER_DAY (usage.h). The
                              transport sets it after proto_open; saved and loaded */

    /* What the connection follows: events of `channel` after `cursor`,
     * only those of `job_id` (0: any job). channel "" = nothing. */
    char channel[200];
    int64_t job_id;
    int64_t cursor;
    /* The job whose end this connection was handed from memory (an expired
     * lease the database could not record, jobs_expired_event): while no
     * job is followed (job_id 0), its later logged events are passed over
     * (the cursor moves) instead of being taken for the next answer. 0
     * none. Saved and loaded. */
    int64_t ended_job;

    json_t *state;         /* adapter state (owned JSON object) */

    /* Set by an adapter while it formats the followed job's end event:
     * keep following the channel (any job, from the cursor) instead of
     * stopping (seed 001: more queued messages will be answered). Read and
     * reset by proto_event; not saved. */
    int follow_next;

    /* Set by an adapter when the transport must close after sending the
     * frames it was given (e.g. seed 002 unknown brand). */
    int close;
    int close_code;        /* WebSocket close code: 1000, 1008, 4401, 4404... */
    char close_reason[120];

    /* Set by an adapter with every error it answers (the error frame, or a
     * database failure): what kind of failure (core/perr.h) and its
     * message, so a front maps it to a status or close code without
     * reading frames. PERR_OK / "" when the last proto_open or
     * proto_message call produced no error; reset by both. */
    enum perr err;
    char err_msg[200];
};

/* Which adapter serves path (which may carry a query). 0 with kind and the
 * decoded path parameter set; -1 when no protocol lives at that path. */
int proto_route(const char *path, enum proto_kind *kind, char *param, size_t plen);

/* What a transport knows of the client (seed 001's session metadata):
 * each member may be NULL or "" (unknown); borrowed for the call. */
struct proto_client {
    const char *user_agent;     /* the User-Agent request header */
    const char *ip;             /* the client's address as the web server saw it */
    const char *client_version; /* the X-Client-Version header (else the path's
                                   ?client_version=, which proto_open_client reads) */
    const char *project_id;     /* set by proto_open_client from the path's ?project_id= */
    const char *tenant;         /* the JWT's tenant claim (auth_claims.tenant; NULL or "":
                                   none), kept as its scope in proto_conn.tenant_scope */
};
/* proto_open with what the transport knows of the client (cl may be NULL).
 * The seed 001 adapter records it in the session's metadata. */
int proto_open_client(struct parley_ctx *ctx, struct proto_conn *c, const char *path,
                      const char *user, const char *peer, const struct proto_client *cl,
                      struct proto_frames *out);
/* Initialises c for path (a proto_route path, or PROTO_SEND_PATH), user (sub, "" open mode) and peer. Reads query
 * parameters seq=1 and after=N (resume from channel seq N). Produces the
 * protocol's opening frames (connected / welcome; or error and close).
 * Returns 0, or -1 on a database error (frames then hold an error). */
int proto_open(struct parley_ctx *ctx, struct proto_conn *c, const char *path,
               const char *user, const char *peer, struct proto_frames *out);

/* A generation this connection's message started and the caller owns. */
struct proto_job;
/* Seed 003: opens c as the joined Phoenix topic `topic` ("proxy:<session>")
 * with its join_ref (borrowed JSON, NULL: null), for user and peer (as
 * proto_open): the session's conversation is created at the first join
 * and must be user's. No frames are produced (core/phx.c answers the join).
 * 0 joined; 1 refused: c->err and c->err_msg say why ("unmatched topic"
 * for a topic that is not proxy:, "unauthorized" for another user's
 * session, "invalid session id", "session closed"); -1 database error
 * (c->err set). c must be cleaned up (proto_conn_cleanup) in every case.
 * Thread: the caller's ctx->db. */
int proto_phoenix_join(struct parley_ctx *ctx, struct proto_conn *c, const char *topic,
                       json_t *join_ref, const char *user, const char *peer,
                       struct proto_frames *out);
/* proto_message with the frame already parsed (msg borrowed; NULL: not
 * JSON): for a caller that parsed it itself (core/phx.c hands a topic
 * {"ref", "event", "payload"}). Same results. */
int proto_message_json(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                       struct proto_frames *out, struct proto_job **job);
/* Handles one client text frame. Immediate answers (pong, errors, cached,
 * stream_start...) go to out. When a generation must run and this caller
 * owns it, *job is set (else NULL): run it with proto_job_run (any thread,
 * with that thread's ctx) and free it. 0, or -1 on a database error. */
int proto_message(struct parley_ctx *ctx, struct proto_conn *c, const char *text,
                  size_t len, struct proto_frames *out, struct proto_job **job);
/* Formats one event of the followed channel into frames, advancing the
 * cursor. After the followed job's done/error it stops following.
 * Events of other jobs are skipped (cursor still advances). 0 / -1. */
int proto_event(struct parley_ctx *ctx, struct proto_conn *c,
                const struct evlog_event *ev, struct proto_frames *out);
/* Reads the followed channel after the cursor (no waiting) and formats
 * every event: returns how many events were read, or -1. Also recovers the
 * followed job when its owner's lease expired. */
int proto_pump(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *out);
/* 1 when the connection follows a channel. */
int proto_following(const struct proto_conn *c);

/* Runs the job to its end (runner_execute). 0 / -1. */
int proto_job_run(struct parley_ctx *ctx, struct proto_job *job);
/* Keeps a claimed job that waits to run (a transport's bounded queue of
 * generations): hands its lease to the calling thread and extends it by
 * PARLEY_LEASE_MS. Call it at least every lease/3 while the job waits, or
 * viewers recover it as interrupted. 0, or -1 when the job is no longer
 * ours (it was failed meanwhile: free it without running it). */
int proto_job_hold(struct parley_ctx *ctx, struct proto_job *job);
const char *proto_job_channel(const struct proto_job *job);
void proto_job_free(struct proto_job *job);

/* Hands a job this caller owns (from proto_message/proto_start) to this
 * process's generation loop (core/genloop.h: one thread, one curl multi, one
 * db connection, started on the first submit), which runs it to its end;
 * takes ownership of job (freed by the loop). Any thread; ctx->cfg and
 * ctx->bell must outlive the loop (process lifetime) and every submit of a
 * process uses the same configuration. ctx->db is used only to fail a job
 * that cannot be queued (it may be NULL: such a job is then left to lease
 * recovery). Returns 0, or -1 when it could not be queued (the job was then
 * failed with an error event and freed). */
int proto_job_submit(struct parley_ctx *ctx, struct proto_job *job);
/* Process shutdown: waits up to timeout_ms for submitted jobs to end, then
 * fails the rest (error event, lease released) and stops the loop. Returns
 * how many had to be failed. Call once, from the thread that ends the
 * process (a later submit starts a new loop). */
int proto_jobs_drain(int timeout_ms);

/* Seed 000: the frames of a ticket's cached answer, {"type":"cached",
 * "response","message"} then {"type":"done"} (the one place that text is
 * typed; the ticket adapter and the ticket SSE endpoint use it). 0 / -1. */
int proto_ticket_cached(struct proto_frames *out, const char *response);

/* ---- stopping a generation (docs/stop.md) ---- */
#define PROTO_STOP_NONE_MSG "No generation to stop"
#define PROTO_STOP_OVER_MSG "The generation has already finished"
#define PROTO_STOP_FOREIGN_MSG "Only the user who started the generation (or an admin) can stop it"
/* Stops the newest generation of channel ("conv:<id>", "ticket:<id>"; its
 * newest running job, else its newest job so that a finished one is told
 * as finished), or job job_id when > 0, for user (JWT sub, "" open mode)
 * who may do so when they started it or admin is set (auth_verify_role).
 * Records the stop durably and rings the channel (jobs_request_stop): the
 * owning process, on any node, aborts the upstream request and every
 * viewer gets its protocol's end frame marked stopped. Returns an enum
 * jobs_stop_rc; on anything but JOBS_STOP_OK, *kind (PERR_NOT_FOUND,
 * PERR_CONFLICT, PERR_FORBIDDEN or a database kind) and *msg (borrowed:
 * a constant, or db_err_text's) say why. *job (may be NULL) gets the job
 * addressed. For the REST stop (fcgi/api_stop.c); the adapters use the
 * same through proto_stop. Thread: the caller's ctx->db. */
int proto_stop_channel(struct parley_ctx *ctx, const char *channel, int64_t job_id,
                       const char *user, int admin, enum perr *kind, const char **msg,
                       int64_t *job);

/* Serialises / restores the whole connection (long-poll sessions).
 * save: new string. load: 0 / -1 (malformed). */
char *proto_conn_save(const struct proto_conn *c);
int proto_conn_load(struct proto_conn *c, const char *json);
/* The same as a JSON object, for a caller that nests connections in a
 * document of its own (core/phx.c): proto_conn_json returns a new
 * reference (NULL out of memory) that shares c->state; proto_conn_from_json
 * reads o (borrowed; c->state then shares o's "state" member), 0 / -1. The
 * text forms are these objects dumped / parsed. */
json_t *proto_conn_json(const struct proto_conn *c);
int proto_conn_from_json(struct proto_conn *c, json_t *o);
void proto_conn_cleanup(struct proto_conn *c);

/* GET /api/ai-sdk/chat/{id}/stream: makes c (opened on PROTO_AISDK_PATH)
 * follow the running answer of chat chat_id (c->user's conversation) from
 * the start of that answer (the job's first event), so proto_event
 * replays it whole and then follows it live. 0 following; 1 nothing to
 * resume (no such chat of this user, or no answer running: HTTP 204);
 * -1 database error (c->err set). Thread: the caller's ctx->db. */
int proto_aisdk_resume(struct parley_ctx *ctx, struct proto_conn *c, const char *chat_id);

/* ISO-8601 UTC timestamp, "2024-01-20T10:30:00.123Z" (ms) or, with
 * naive=1, the seed 002 form without zone "2024-01-20T10:30:00". */
void proto_timestamp(char out[32], int64_t ms, int naive);
#endif
