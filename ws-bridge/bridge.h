/* bridge.h — parley-ws, the WebSocket bridge: what its files share.
 *
 * Threads (docs/ws-bridge.md draws them):
 *   service  the lws event loop (the main thread). The ONLY thread that
 *            touches a struct lws: accepts, turns client frames into tasks,
 *            writes the queued frames, one lws_write per SERVER_WRITEABLE,
 *            closes.                                             service.c
 *   workers  --workers threads, each with its own parley_db. They run a
 *            connection's tasks in order and never two of one connection
 *            at once (proto_open, proto_message, pumps), and channel pumps
 *            (one event-log read, each event formatted once per class of
 *            followers and the frame shared).                    sched.c
 *   watcher  sleeps on bell_wait_any(); finds the followed channels whose
 *            bell moved and schedules their pumps; lease checks.  sched.c
 *   genloop  the process's generation loop (core/genloop.c, started at
 *            the first job): ONE thread streams every generation with
 *            libcurl's multi interface, its own parley_db; at most
 *            --gen-threads at once, the rest wait with their leases kept.
 *            gen.c hands jobs to it (proto_job_submit).          gen.c
 *   signals  sigwait(): SIGTERM/SIGINT stop, SIGHUP reopens the log. main.c
 * Other threads never call into lws except lws_cancel_service(): they queue
 * frames on a connection and put it on the notify list (conn_notify), and
 * the service thread asks for a writable callback.
 * Every file logs with wslog() and times with bridge_now_ms() (log.h); no
 * file depends on main.c, which only parses options and runs the threads.
 */
#ifndef PARLEY_WS_BRIDGE_H
#define PARLEY_WS_BRIDGE_H
#include "visitor.h"
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <libwebsockets.h>
#include "ident.h"
#include "log.h"
#include "phx.h"
#include "proto.h"

/* ---- options (main.c) ---- */
struct bridge_opts {
    const char *host;          /* --listen HOST:PORT (127.0.0.1:8081) */
    int port;
    const char *socket_path;   /* --socket PATH: a unix socket instead */
    int workers;               /* --workers (4) */
    int gen_threads;           /* --gen-threads: most generations at once (0: PARLEY_MAX_GENERATIONS) */
    size_t max_message;        /* --max-frame BYTES (65536): a bigger client message closes 1009 */
    int ping_s;                /* --ping SECS (30): WebSocket PING after this much silence */
    const char *log_path;      /* --log FILE (stderr) */
    const char *stats_path;    /* --stats-file FILE (<PARLEY_DB>-ws.prom; "-" none) */
    int stats_every_s;         /* how often it is rewritten (5) */
    int drain_s;               /* --drain SECS (10): wait for running generations at exit */
    int out_high;              /* frames queued above which log reading pauses (64) */
    size_t out_high_bytes;     /* same in bytes (256 KiB) */
    int out_hard;              /* frames queued above which the client is closed 1008 (256) */
    size_t out_hard_bytes;     /* same in bytes (1 MiB) */
    int stall_s;               /* queued frames not written for this long: 1008 (30) */
    int event_poll;            /* --event-loop poll: lws's poll() loop instead of libev */
};

/* ---- a frame waiting to be written ----
 * A complete server->client WebSocket frame: the header (FIN + text
 * opcode, unmasked, built once) right before the text. Immutable once
 * built and reference-counted, so one frame a channel pump formatted once
 * sits in the queues of every follower whose adapter output is the same
 * (the bytes on the wire are the same for all of them), and the service
 * thread writes several queued frames with one lws_write(LWS_WRITE_RAW).
 * Each queue that holds it counts it against its bounds exactly as if it
 * were its own copy. */
#define FRAME_HDR_MAX 10
struct frame {
    int refs;                  /* atomic: the queues (and builders) holding it */
    uint32_t len;              /* text bytes */
    uint8_t hlen;              /* header bytes, right-aligned before the text */
    unsigned char buf[];       /* FRAME_HDR_MAX + len + 1 (NUL, for logs) */
};
static inline const unsigned char *frame_wire(const struct frame *f)
{
    return f->buf + FRAME_HDR_MAX - f->hlen;
}
static inline size_t frame_wire_len(const struct frame *f)
{
    return (size_t)f->hlen + f->len;
}
static inline const char *frame_text(const struct frame *f)
{
    return (const char *)f->buf + FRAME_HDR_MAX;
}

/* ---- tasks a connection's worker runs in order ---- */
enum task_kind { T_OPEN, T_MESSAGE, T_PUMP, T_CLOSE };
struct task {
    struct task *next;
    enum task_kind kind;
    size_t len;
    char text[];               /* T_MESSAGE: the client's text, NUL-terminated */
};

struct chan;
struct ustat;
struct bridge;

/* A channel a Phoenix connection follows: its place in chan->psubs. */
struct phx_follow {
    struct chan *ch;
    int idx;                           /* index in ch->psubs */
};

/* One WebSocket connection. Allocated at ESTABLISHED, freed when the last
 * reference goes (the service thread, the scheduler and the notify list
 * each hold one while they point at it). */
struct wsconn {
    struct bridge *br;
    int refs;                          /* atomic */

    /* ---- service thread only ---- */
    struct lws *wsi;                   /* NULL after CLOSED */
    struct wsconn *snext, *sprev;      /* live connections (sweep, shutdown) */
    int64_t last_active_ms;            /* last client message or frame sent */
    int64_t last_write_ms;             /* last frame written */
    unsigned char *rx;                 /* message being assembled */
    size_t rx_len, rx_cap;
    struct ustat *ustat;               /* per-user byte counter */
    char *open_path;                   /* path?query for proto_open; the T_OPEN worker frees it */
    char *open_ua;                     /* its User-Agent and X-Client-Version headers (NULL:   */
    char *open_cv;                     /* none) and address, for seed 001's session metadata; */
    char open_addr[64];                /* freed with open_path                                  */
    unsigned closing : 1;              /* a close was requested; no more tasks */
    unsigned counted : 1;              /* counts against WEBSOCKET_MAX_CONNECTIONS */

    /* ---- atomics ---- */
    int rx_paused;                     /* lws_rx_flow_control(0): tasks piled up */
    int pump_hint;                     /* a pump waits for the queue to drain */
    int gone;                          /* the wsi closed: no more pumps */

    /* ---- {mu}: out queue and close request, shared with workers ---- */
    pthread_mutex_t mu;
    struct frame **ring;               /* out queue: a ring of frames (NULL while empty long enough) */
    unsigned ring_cap, ring_head;      /* capacity (power of 2), index of the oldest */
    int out_n;                         /* frames queued */
    size_t out_bytes;                  /* their text bytes */
    int close_code;                    /* != 0: close after the queue drains */
    char close_reason[124];
    int64_t stalled_since_ms;          /* queue non-empty and not drained since */

    /* ---- {br->notify_mu} ---- */
    struct wsconn *nnext;
    int notify_pending;

    /* ---- {br->mu}: scheduling ---- */
    struct wsconn *rnext;              /* ready queue */
    struct task *task_head, *task_tail;
    int ntasks;
    unsigned queued : 1, running : 1, want_pump : 1;
    struct chan *chan;                 /* channel followed, in the registry */
    int chan_idx;                      /* index in chan->subs */
    struct phx_follow *pf;             /* Phoenix: every channel its topics follow */
    int npf, pfcap;

    /* ---- the worker running this connection (running == 1) ---- */
    struct proto_conn pc;
    /* Phoenix Channels (/socket/websocket): the socket (core/phx.h) that
     * holds one proto_conn per joined topic; NULL for the seed paths,
     * which drive pc. Set at ESTABLISHED before the first task, freed by
     * T_CLOSE. */
    struct phx_socket *phx;
    int opened;                        /* proto_open ran (pc to clean up) */
    char user[128];                    /* set by the service thread before T_OPEN */
    char tenant[128];                  /* its JWT's tenant claim (PARLEY_TENANT_CLAIM, ""
                                          none): given to proto_open_client at T_OPEN
                                          (docs/tenants.md) */
    int64_t token_budget;              /* its JWT's token_budget claim (auth_verify_claims;
                                          -1 none), given to pc at T_OPEN (docs/usage.md) */
    int admin;                         /* its JWT carries role "admin": given to pc at T_OPEN
                                          and to every Phoenix topic's (may stop others'
                                          generations, docs/stop.md) */
    char peer[IDENT_PEER_MAX];         /* rate-limit identity (ident_peer) */
    /* An anonymous visitor's token when the service thread issued a new
     * one at ESTABLISHED ("" otherwise): T_OPEN adds it to the opening
     * frame as "visitor" (docs/anonymous.md). */
    char visitor_new[VISITOR_TOKEN_MAX];
};

/* A channel some connections follow (registry, {br->mu}). */
struct chan {
    struct chan *hnext;                /* hash chain */
    struct chan *rnext;                /* ready queue of channel pumps */
    char *name;
    struct wsconn **subs;
    int nsubs, cap;
    /* Phoenix connections following it (their topics' join_refs differ,
     * so nothing is shared: each is pumped on its own, phx order) */
    struct wsconn **psubs;
    int npsubs, pcap;
    uint32_t seen;                     /* the bell value the watcher last acted on */
    uint32_t slot;                     /* bell_slot_of(name) */
    int64_t moved_ms;                  /* when the watcher last saw it move */
    unsigned queued : 1, running : 1, dirty : 1, check_lease : 1;
};

#define CHAN_BUCKETS 1024

struct bridge {
    struct bridge_opts opt;
    struct parley_config cfg;
    parley_bell *bell;
    struct lws_context *lws;
    volatile int stopping;             /* set by the signal thread */
    char up_path[4096];                /* <PARLEY_DB>-ws.up: exists while long-poll may come here */

    /* service thread */
    struct wsconn *live;               /* list of live connections */
    int nlive;                         /* in the list */
    int nopen;                         /* counted ones (limit) */
    int shutdown_started;
    int64_t shutdown_deadline_ms;
    int service_done;
    lws_sorted_usec_list_t sweep_sul;

    /* notify list: workers -> service thread */
    pthread_mutex_t notify_mu;
    struct wsconn *notify_head;

    /* scheduler, registry, watcher (sched.c) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct wsconn *rq_head, *rq_tail;
    struct chan *cq_head, *cq_tail;
    struct chan *chans[CHAN_BUCKETS];
    int nchans;
    int hold_due;                      /* a worker should hold waiting generations */
    int sched_stop;
    pthread_t *worker_th;
    int nworkers;
    pthread_t watcher_th;
    int watcher_started;

    /* generations (gen.c) */
    struct gen_pool *gen;
};

/* ---- main.c ---- */
/* The marker file br->up_path ("<PARLEY_DB>-ws.up", holding the pid):
 * created (on = 1) once the bridge serves, removed (on = 0) when it stops.
 * parley-websocket.conf sends long-poll (/api/poll/) to the bridge while
 * it exists (mod_fcgid; docs/ws-bridge.md, "Long-poll"), to parley.fcgi
 * otherwise. Service or main thread. */
void bridge_mark(struct bridge *br, int on);

/* ---- service.c ---- */
/* The request path with its query ("/a/b?x=1"), re-encoded (lws hands both
 * percent-decoded) so that a reader decodes it once, into out; the
 * "token" query argument (decoded) into token. uri_token: the method's
 * URI header (WSI_TOKEN_GET_URI, WSI_TOKEN_POST_URI...). 0 / -1 (absent,
 * too long); 1 when everything fit but the token= value did not fit in
 * token (token then ""; with toklen AUTH_MAX_TOKEN + 2 such a token is
 * AUTH_TOO_LONG). Service thread, during the request's HTTP callbacks. */
int bridge_request_path(struct lws *wsi, enum lws_token_indexes uri_token, char *out, size_t cap,
                        char *token, size_t toklen);
/* The client's address for rate limits into out: the peer, or behind a
 * local proxy (loopback peer or unix socket) the last X-Forwarded-For
 * entry. Service thread. */
void bridge_client_addr(struct lws *wsi, const struct bridge *br, char *out, size_t len);

/* ---- httpfront.c: long-poll (/api/poll/, /socket/longpoll) under mod_fcgid ---- */
struct hx;
/* Starts the dispatcher threads (own database connections, opened at the
 * first request) and opens the front's own doorbell handle. 0 / -1.
 * Main thread, before the loop runs. */
int httpfront_start(struct bridge *br);
/* 1 when path (lws's decoded URI path) is one the front serves here. */
int httpfront_serves(const char *path);
/* Service thread, LWS_CALLBACK_HTTP of a path httpfront_serves(): takes
 * the request (*slot, the connection's exchange). 0 (the answer comes
 * later), -1 hang up (a status may have been written). */
int httpfront_begin(struct lws *wsi, struct bridge *br, struct hx **slot);
/* Service thread, LWS_CALLBACK_HTTP_BODY / _BODY_COMPLETION of it. 0 / -1. */
int httpfront_body(struct hx *x, const void *in, size_t len);
int httpfront_body_done(struct lws *wsi, struct hx *x);
/* Service thread, LWS_CALLBACK_HTTP_WRITEABLE of a connection with an
 * exchange: writes the answer when it is complete. 0, -1 hang up. */
int httpfront_writeable(struct lws *wsi, struct hx **slot);
/* Service thread, LWS_CALLBACK_CLOSED_HTTP: the client left. */
void httpfront_closed(struct hx **slot);
/* Service thread, LWS_CALLBACK_EVENT_WAIT_CANCELLED: answered exchanges
 * ask for their writable callback. */
void httpfront_service(struct bridge *br);
/* Shutdown begins (any thread): waiting GETs are answered now. */
void httpfront_shutdown_begin(void);
/* Exchanges not finished yet (any thread). */
int httpfront_busy(void);
/* After the loop ended (lws context destroyed): joins the threads, ends
 * the parking hub, frees. Main thread. */
void httpfront_stop(void);

/* ---- conn.c ---- */
/* A frame of text (len bytes), one reference; NULL when out of memory. */
struct frame *frame_new(const char *text, size_t len);
void frame_ref(struct frame *f);
void frame_unref(struct frame *f);
struct wsconn *conn_new(struct bridge *br, struct lws *wsi);
void conn_ref(struct wsconn *c);
/* Drops a reference; the last frees everything (pc must be cleaned). */
void conn_unref(struct wsconn *c);
/* Moves fr's frames to the out queue (fr is left empty) and notifies the
 * service thread. Over the hard cap the queue is dropped and the
 * connection closes 1008 "slow consumer". Any thread. */
void conn_post(struct wsconn *c, struct proto_frames *fr);
/* The same without waking the loop: returns 1 when the caller must call
 * conn_wake() once it has posted its batch (channel pumps: one wake-up
 * for a thousand followers). */
int conn_post_quiet(struct wsconn *c, struct proto_frames *fr);
void conn_wake(struct bridge *br);
/* Asks the service thread to close after the queued frames (drop: at
 * once, dropping them). The first request wins. Any thread. */
void conn_request_close(struct wsconn *c, int code, const char *reason, int drop);
/* Queued frames (any thread, takes mu). */
int conn_out_count(struct wsconn *c, size_t *bytes);
/* Queues n built frames on c, taking a reference on each (the caller
 * keeps its own); bounds, close and notify as conn_post_quiet. Returns 1
 * when the caller must call conn_wake() after its batch. Any thread. */
int conn_post_shared(struct wsconn *c, struct frame *const *v, int n);
/* Puts c on the service thread's notify list and wakes the loop. */
void conn_notify(struct wsconn *c);
/* Service thread: takes up to max queued frames, in order, stopping
 * before the wire bytes would pass max_bytes (but always at least one).
 * The caller owns the references. Returns how many; *left = still queued,
 * *close_pending = a close was requested. */
int conn_take(struct wsconn *c, struct frame **out, int max, size_t max_bytes, int *left,
              int *close_pending);
/* Service thread: frees the ring of a connection whose queue is empty
 * (idle connections hold no buffers). */
void conn_trim(struct wsconn *c);

/* ---- sched.c ---- */
int sched_start(struct bridge *br);
/* Lets the workers finish their queues, then stops them and the watcher. */
void sched_stop(struct bridge *br);
/* Service thread: queues a task for c (text copied). Returns the number of
 * tasks now pending, or -1 (out of memory, or c is gone). */
int sched_task(struct wsconn *c, enum task_kind kind, const void *text, size_t len);
/* Service thread: c's out queue went below the low mark: catch up on the log. */
void sched_drained(struct wsconn *c);
/* Pending tasks of c (any thread). */
int sched_pending(struct wsconn *c);

/* ---- gen.c ---- */
int gen_start(struct bridge *br);
/* Takes the job (steals): hands it to the generation loop. */
void gen_submit(struct bridge *br, struct proto_job *job);
/* Worker: brings the generation gauges up to date (the loop holds the
 * waiting jobs' leases itself). */
void gen_hold_waiting(struct bridge *br, struct parley_ctx *ctx);
int gen_waiting(struct bridge *br);
/* Waits up to drain_s for running and waiting jobs, then fails the rest
 * (proto_jobs_drain) and stops the loop. Returns 0 (nothing runs after). */
int gen_stop(struct bridge *br, int drain_s);

/* ---- service.c ---- */
extern const struct lws_protocols bridge_protocols[];

/* ---- metrics.c ---- */
enum close_why { CW_CLIENT, CW_IDLE, CW_SLOW, CW_TOO_BIG, CW_BINARY, CW_ADAPTER, CW_SHUTDOWN,
                 CW_MAX_CONN, CW_AUTH, CW_ERROR, CW_COUNT };
enum refuse_why { RF_NOT_FOUND, RF_ORIGIN, RF_UNAUTHORIZED, RF_VERSION, RF_COUNT };
void metrics_init(void);
void metrics_cleanup(void);
void metrics_accepted(void);
/* Anonymous visitors (docs/anonymous.md): a visitor's connection opened
 * (new = 1 when its identity was issued now), a message a visitor sent.
 * Any thread (atomic counters). */
void metrics_anonymous_open(int new_visitor);
void metrics_anonymous_message(void);
void metrics_open_delta(int d);
/* Phoenix sockets among the open connections (any thread). */
void metrics_phx_open_delta(int d);
/* This process's presence counts (core/presence.h, docs/admin.md): a new
 * object {"websocket": seed-path WebSockets open, "phoenix_websocket":
 * Phoenix sockets open, "longpoll_waiting": long-poll requests being
 * answered here}. The presence reporter's thread calls it; ud unused. */
json_t *metrics_presence_counts(void *ud);
void metrics_refused(enum refuse_why w);
void metrics_closed(enum close_why w);
void metrics_received(size_t bytes);
/* n frames written together, bytes text bytes in all. */
void metrics_sent_n(struct ustat *u, int n, size_t bytes);
void metrics_error(const char *kind);
/* A long-poll request answered (httpfront.c), by its method. */
void metrics_longpoll(const char *method);
void metrics_gen_queue(int waiting_delta, int running_delta);
/* Counts a job's end once per job (done: latency histograms; error: kind). */
void metrics_job_event(const struct evlog_event *ev);
/* The per-user counter for user ("" = anonymous); never freed before exit. */
struct ustat *metrics_user(const char *user);
/* Prometheus text (new string). */
char *metrics_render(const struct bridge *br);
/* Writes the text to path atomically (path.tmp + rename). 0 / -1. */
int metrics_write_file(const struct bridge *br, const char *path);
#endif
