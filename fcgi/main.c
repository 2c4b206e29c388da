/* main.c — parley.fcgi: options, start-up order, shutdown. The parts it
 * drives are in server.h (configuration and storage, signals and
 * lifetimes, the listener, the libfcgi adapter).
 *
 * Three ways to run (docs/fastcgi.md):
 *   spawned with the listening socket on fd 0   mod_fcgid, lighttpd bin-path,
 *                                               spawn-fcgi
 *   --socket PATH [--socket-mode 0660]          its own unix socket, for
 *                                               mod_proxy_fcgi / lighttpd
 *   --listen HOST:PORT                          its own TCP socket
 *
 * Threads: N workers (--threads, PARLEY_FCGI_THREADS, default 16), each with
 * its own FCGX_Request and its own database connection; the signal thread;
 * the generation loop (core/proto.h, proto_job_submit) once a generation
 * runs; with more than one worker, the long-poll hub (fcgi/poll_park.h:
 * two threads answering parked long-poll GETs) once a GET waits. At a
 * stop signal in-flight requests finish (at most
 * SHUTDOWN_GRACE_S), then running generations get what is left of that
 * time to end (proto_jobs_drain fails the rest: their viewers get an
 * error, not a lease to wait out), then the process exits 0.
 */
#include "server.h"
#include "poll_park.h"
#include "config.h"
#include "db.h"
#include "llm.h"
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_THREADS 16
#define MAX_THREADS 512
#define DEFAULT_BACKLOG 128
#define SHUTDOWN_GRACE_S 30
#define JOBS_DRAIN_MIN_MS 1000     /* generations get at least this at shutdown */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    while (!parley_stopping && srv_accept(w) == 0)
        srv_serve(w);
    FCGX_Free(w->fcgx, 1);
    free(w->fcgx);
    free(w->spare);
    w->fcgx = w->spare = NULL;
    db_close(w->ctx.db);
    w->ctx.db = NULL;
    srv_worker_died();
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: parley.fcgi [options]\n"
            "  (no option)          serve the listening socket on fd 0, as spawned by\n"
            "                       mod_fcgid, lighttpd (bin-path) or spawn-fcgi\n"
            "  --socket PATH        listen on a unix socket (mod_proxy_fcgi, lighttpd)\n"
            "  --socket-mode MODE   its permissions, octal (default 0660)\n"
            "  --listen HOST:PORT   listen on TCP instead (e.g. 127.0.0.1:9000)\n"
            "  --threads N          worker threads (default %d; env %s)\n"
            "  --backlog N          listen backlog (default %d)\n"
            "  --help               this text\n"
            "Settings come from PARLEY_CONFIG, the environment and FastCGI parameters:\n"
            "see docs/configuration.md and docs/fastcgi.md.\n",
            DEFAULT_THREADS, SRV_THREADS_ENV, DEFAULT_BACKLOG);
}

static int parse_count(const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

struct options {
    const char *sock_path, *listen_addr;
    mode_t sock_mode;
    int threads, backlog;
};

/* Parses the command line and PARLEY_FCGI_THREADS. 0 to run; otherwise
 * the exit status (usage printed). */
static int parse_options(int argc, char **argv, struct options *o)
{
    o->sock_path = o->listen_addr = NULL;
    o->sock_mode = 0660;
    o->threads = DEFAULT_THREADS;
    o->backlog = DEFAULT_BACKLOG;
    const char *env_threads = getenv(SRV_THREADS_ENV);
    if (env_threads && *env_threads && parse_count(env_threads, 1, MAX_THREADS, &o->threads) < 0) {
        fprintf(stderr, "parley.fcgi: %s must be an integer from 1 to %d\n", SRV_THREADS_ENV,
                MAX_THREADS);
        return 2;
    }
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "socket-mode", required_argument, NULL, 'm' },
        { "listen", required_argument, NULL, 'l' },
        { "threads", required_argument, NULL, 't' },
        { "backlog", required_argument, NULL, 'b' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 's': o->sock_path = optarg; break;
        case 'l': o->listen_addr = optarg; break;
        case 'm': {
            long m = strtol(optarg, &end, 8);
            if (!*optarg || *end || m < 0 || m > 0777) {
                fprintf(stderr, "parley.fcgi: --socket-mode must be octal, like 0660\n");
                return 2;
            }
            o->sock_mode = (mode_t)m;
            break;
        }
        case 't':
            if (parse_count(optarg, 1, MAX_THREADS, &o->threads) < 0) {
                fprintf(stderr, "parley.fcgi: --threads must be from 1 to %d\n", MAX_THREADS);
                return 2;
            }
            break;
        case 'b':
            if (parse_count(optarg, 1, 65535, &o->backlog) < 0) {
                fprintf(stderr, "parley.fcgi: --backlog must be from 1 to 65535\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (o->sock_path && o->listen_addr)) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Starts the workers; the number started (0: none could). */
static int start_workers(struct worker *ws, int threads)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    int started = 0;
    for (int i = 0; i < threads; i++) {
        ws[i].index = i;
        ws[i].ctx.cfg = srv_config();
        ws[i].fcgx = malloc(sizeof *ws[i].fcgx);
        if (!ws[i].fcgx) {
            fprintf(stderr, "parley.fcgi: out of memory: started %d of %d threads\n", started,
                    threads);
            break;
        }
        FCGX_InitRequest(ws[i].fcgx, srv_listen_fd(), 0);
        srv_worker_born();
        if (pthread_create(&ws[i].th, &attr, worker_main, &ws[i]) != 0) {
            srv_worker_died();
            free(ws[i].fcgx);
            ws[i].fcgx = NULL;
            fprintf(stderr, "parley.fcgi: could start only %d of %d threads\n", started, threads);
            break;
        }
        started++;
    }
    pthread_attr_destroy(&attr);
    return started;
}

int main(int argc, char **argv)
{
    struct options o;
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    struct stat sock_ino;
    memset(&sock_ino, 0, sizeof sock_ino);

    char err[512];
    if (srv_config_load(err, sizeof err) < 0) {
        fprintf(stderr, "parley.fcgi: configuration: %s\n", err);
        return 1;
    }
    if (llm_global_init() != 0) {
        fprintf(stderr, "parley.fcgi: cannot initialise libcurl\n");
        return 1;
    }
    if (FCGX_Init() != 0) {
        fprintf(stderr, "parley.fcgi: cannot initialise libfcgi\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);             /* writes to a gone client return EPIPE */

    int fd = 0;
    if (o.sock_path || o.listen_addr) {
        fd = srv_listen_open(o.sock_path, o.listen_addr, o.sock_mode, o.backlog, &sock_ino);
        if (fd < 0)
            return 1;
    } else if (FCGX_IsCGI()) {
        fprintf(stderr, "parley.fcgi: fd 0 is not a listening socket: run me from a "
                        "FastCGI server, or give --socket PATH or --listen HOST:PORT\n\n");
        usage(stderr);
        return 2;
    }
    if (srv_listen_setup(fd) < 0 || srv_signals_start() < 0)
        return 1;

    /* One worker: a waiting long-poll GET holds it (mod_fcgid, which sends a
     * process one request at a time, gains nothing from parking it). */
    srv_set_parking(o.threads > 1);
    struct worker *ws = calloc((size_t)o.threads, sizeof *ws);
    if (!ws) {
        fprintf(stderr, "parley.fcgi: out of memory\n");
        return 1;
    }
    int started = start_workers(ws, o.threads);
    if (!started)
        return 1;
    fprintf(stderr, "parley.fcgi[%ld]: serving %s with %d threads\n", (long)getpid(),
            o.sock_path ? o.sock_path : o.listen_addr ? o.listen_addr : "fd 0", started);

    /* Wait for the workers; once stopping, at most SHUTDOWN_GRACE_S. */
    int64_t stop_began = 0, left = 0;
    int fatal = 0, nleft = 0;
    int all = srv_wait_workers(SHUTDOWN_GRACE_S, &nleft, &fatal);
    stop_began = mono_ms();
    if (!all) {
        fprintf(stderr, "parley.fcgi[%ld]: %d request(s) still running after %d s: exiting\n",
                (long)getpid(), nleft, SHUTDOWN_GRACE_S);
        proto_jobs_drain(JOBS_DRAIN_MIN_MS);
        srv_remove_socket(o.sock_path, &sock_ino);
        _exit(fatal ? 1 : 0);
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
    free(ws);
    /* parked long-poll GETs were answered at the stop signal (the doorbell
     * woke the hub); end the hub */
    left = (int64_t)SHUTDOWN_GRACE_S * 1000 - (mono_ms() - stop_began);
    int parked = poll_park_shutdown(left > 1000 ? (int)left : 1000);
    if (parked > 0) {
        fprintf(stderr, "parley.fcgi[%ld]: %d parked long-poll request(s) still open: exiting\n",
                (long)getpid(), parked);
        proto_jobs_drain(JOBS_DRAIN_MIN_MS);
        srv_remove_socket(o.sock_path, &sock_ino);
        _exit(fatal ? 1 : 0);
    }
    left = (int64_t)SHUTDOWN_GRACE_S * 1000 - (mono_ms() - stop_began);
    int failed = proto_jobs_drain(left > JOBS_DRAIN_MIN_MS ? (int)left : JOBS_DRAIN_MIN_MS);
    if (failed > 0)
        fprintf(stderr, "parley.fcgi[%ld]: %d generation(s) did not end in time: failed\n",
                (long)getpid(), failed);
    srv_remove_socket(o.sock_path, &sock_ino);
    srv_setup_cleanup();
    fprintf(stderr, "parley.fcgi[%ld]: stopped\n", (long)getpid());
    return fatal ? 1 : 0;
}
