/* server.h — parley.fcgi's process, in four parts (main.c drives them):
 *
 *   server_setup.c   the configuration (final at the first request, with its
 *                    FastCGI parameters), each worker's database connection
 *                    and the doorbell all workers share
 *   server_life.c    stop signals, shutdown, worker lifetimes
 *   server_listen.c  the listening socket, kept connections between requests
 *                    (FCGI_KEEP_CONN) and accepting the next request
 *   fcgx_adapter.c   the libfcgi adapter: one FastCGI request into a struct
 *                    request for http_dispatch() (http.h), and the response
 *
 * Threads: N workers (struct worker), one at a time in srv_accept(); a
 * signal thread; main() waits for the workers. With more than one worker,
 * a waiting long-poll GET is parked (fcgi/poll_park.h): its FastCGI
 * request leaves the worker (which takes a fresh one) and the process's
 * long-poll hub thread answers and finishes it. Process-wide state lives in
 * the file that owns it, behind the functions below.
 */
#ifndef PARLEY_FCGI_SERVER_H
#define PARLEY_FCGI_SERVER_H
#include <fcgiapp.h>
#include <pthread.h>
#include <sys/stat.h>
#include "http.h"

#define SRV_THREADS_ENV "PARLEY_FCGI_THREADS"

struct worker {
    pthread_t th;
    int index;
    FCGX_Request *fcgx;                 /* this thread's request (a parked
                                           one is handed over: see srv_serve) */
    FCGX_Request *spare;                /* the next one, ready for a park */
    struct parley_ctx ctx;              /* cfg, own db, shared bell */
    char db_err[256];                   /* last db_open error logged */
};

/* ---- server_setup.c ---- */

/* The process's configuration (written by main before the workers start,
 * then once by srv_ensure_config; read-only after). Never NULL. */
struct parley_config *srv_config(void);
/* config_load() into srv_config(), noting whether it starts in open mode.
 * 0, or -1 with the message in err. Call once, before the workers. */
int srv_config_load(char *err, size_t errlen);
/* Makes the configuration final with this request's FastCGI parameters,
 * once (any thread). 0, or -1 (logged; the caller answers 500 and the next
 * request retries). */
int srv_ensure_config(FCGX_Request *rq);
/* Opens w's database connection and the shared doorbell when they are not
 * open yet (w's thread). A database that cannot be opened leaves ctx.db
 * NULL (the dispatcher answers 503) and is retried at the next request; a
 * doorbell that cannot be opened leaves waits to time slices. */
void srv_ensure_storage(struct worker *w);
/* Wakes every doorbell sleeper of the process (shutdown). Any thread. */
void srv_bell_wake_all(void);
/* At exit, after the workers: closes the doorbell, frees the configuration. */
void srv_setup_cleanup(void);

/* ---- server_life.c ---- */

/* Blocks the stop signals in this (and every later) thread and starts the
 * signal thread. 0 / -1. Call before starting the workers. */
int srv_signals_start(void);
/* Starts stopping: sets parley_stopping, wakes srv_accept, closes idle kept
 * connections, wakes every doorbell sleeper. fatal: an error, not a
 * signal (the exit status becomes 1). Any thread; idempotent. */
void srv_request_stop(int fatal);
/* The read end of a pipe that becomes readable once stopping. */
int srv_stop_fd(void);
/* Worker lifetime accounting (srv_wait_workers waits for them). */
void srv_worker_born(void);
void srv_worker_died(void);
/* Waits until every worker ended; once stopping, at most grace_s seconds.
 * Returns 1 when they did, 0 when time ran out (*left: how many still run).
 * *fatal: stopped by an error. */
int srv_wait_workers(int grace_s, int *left, int *fatal);

/* ---- server_listen.c ---- */

/* Opens --socket PATH (mode, created under umask 077; *ino identifies it)
 * or --listen HOST:PORT. The fd, or -1 (logged). */
int srv_listen_open(const char *sock_path, const char *listen_addr, mode_t mode, int backlog,
                    struct stat *ino);
/* Serves fd (the listening socket): non-blocking, plus the pipes the
 * accepting thread polls. 0, or -1 (logged). */
int srv_listen_setup(int fd);
/* The listening socket (for FCGX_InitRequest). */
int srv_listen_fd(void);
/* Waits for w's next request: a new connection or the next request on a
 * kept one. 0 with one accepted, -1 when stopping. */
int srv_accept(struct worker *w);
/* After a finished request (rq: a worker's or a parked one's, any
 * thread): a connection the web server asked to keep goes to the idle
 * set, else it is closed. */
void srv_keep_or_close(FCGX_Request *rq);
/* Closes every idle kept connection (shutdown). */
void srv_idle_close_all(void);
/* Removes our socket file, if it is still ours (*ino). */
void srv_remove_socket(const char *path, const struct stat *ino);

/* ---- fcgx_adapter.c ---- */

/* Whether requests may be parked (a waiting long-poll GET holds no
 * thread): main sets it when the process runs more than one worker (not
 * under mod_fcgid, which runs one request per process: see
 * docs/fastcgi.md). Set before the workers start. */
void srv_set_parking(int on);
/* Serves w's accepted request through http_dispatch(), then runs its
 * after callback. A request the handler parked is handed over instead:
 * w->fcgx becomes w->spare (a fresh request) and the handler's park
 * callback owns the old one (released by fx_release: finish, keep or
 * close, free). w's thread. */
void srv_serve(struct worker *w);
#endif
