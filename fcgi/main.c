/* main.c — parley.fcgi: the FastCGI process, its threads and the libfcgi
 * adapter that turns each FastCGI request into a struct request for
 * http_dispatch() (http.h).
 *
 * Three ways to run (docs/fastcgi.md):
 *   spawned with the listening socket on fd 0   mod_fcgid, lighttpd bin-path,
 *                                               spawn-fcgi
 *   --socket PATH [--socket-mode 0660]          its own unix socket, for
 *                                               mod_proxy_fcgi / lighttpd
 *   --listen HOST:PORT                          its own TCP socket
 *
 * Threads: N workers (--threads, PARLEY_FCGI_THREADS, default 16), each with
 * its own FCGX_Request and its own database connection (opened at its first
 * request, once the configuration is final); one doorbell shared by all.
 * One worker at a time waits for a connection (accept_lock), in poll() on
 * the listening socket and a stop pipe, so that shutdown never depends on
 * shutting down a socket that sibling processes may share (spawn-fcgi -F).
 * A signal thread takes SIGTERM/SIGINT/SIGHUP/SIGUSR1: it sets
 * parley_stopping, which ends waits for new connections and long-poll
 * holds; in-flight requests finish; then the process exits 0. A second
 * signal, or SHUTDOWN_GRACE_S seconds, ends it at once.
 *
 * Connections: a request whose stdin was read to its end is closed without
 * libfcgi's drain (shutdown, wait for the web server's close); a connection
 * the web server asks to keep (FCGI_KEEP_CONN, mod_proxy_fcgi enablereuse)
 * waits between requests in an idle set that the accepting thread polls
 * with the listening socket, so it never pins a worker thread.
 *
 * Configuration: config_load() at start (defaults < PARLEY_CONFIG file <
 * environment); the first request's FastCGI parameters (.htaccess SetEnv)
 * are applied once on top, before any handler runs.
 */
#include "http.h"
#include "config.h"
#include "bell.h"
#include "db.h"
#include "llm.h"
#include "util.h"

#include <fcgiapp.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sys/poll.h>         /* <poll.h> would find core/poll.h */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_THREADS 16
#define MAX_THREADS 512
#define DEFAULT_BACKLOG 128
#define SHUTDOWN_GRACE_S 30
#define THREADS_ENV "PARLEY_FCGI_THREADS"

/* ---- process-wide state ---- */

/* The configuration: written by main before the workers start, then once
 * more under cfg_lock by the first request (FastCGI parameters) before
 * cfg_ready is set; read-only after. */
static struct parley_config g_cfg;
static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int cfg_ready;
static int start_open_mode;             /* no JWT secret before the parameters */

/* The doorbell shared by every worker; {bell_lock}. */
static parley_bell *g_bell;
static int bell_failed_logged;
static pthread_mutex_t bell_lock = PTHREAD_MUTEX_INITIALIZER;

static int listen_fd = -1;
static int stop_pipe[2] = { -1, -1 };  /* readable once stopping */
static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;

/* Kept connections (FCGI_KEEP_CONN: mod_proxy_fcgi's enablereuse=on)
 * between two requests. No thread waits on one: they sit here and the
 * thread in accept_one polls them together with the listening socket, so a
 * kept connection never pins a worker and the web server may keep more of
 * them open than there are threads. {idle_lock}; wake_pipe tells the
 * polling thread that the set grew. */
#define MAX_IDLE 1024
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static int idle_fd[MAX_IDLE];
static int n_idle;
static int wake_pipe[2] = { -1, -1 };
static struct pollfd accept_pf[3 + MAX_IDLE];     /* {accept_lock} */

/* Worker lifetimes, for the shutdown wait; {life_lock}. */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t life_cond = PTHREAD_COND_INITIALIZER;
static int workers_alive;
static int fatal_error;                 /* stopped by an error, not a signal */

struct worker {
    pthread_t th;
    int index;
    FCGX_Request fcgx;                  /* this thread's request */
    struct parley_ctx ctx;              /* cfg, own db, shared bell */
    char db_err[256];                   /* last db_open error logged */
};

/* ---- shutdown ---- */

static void request_stop(int fatal)
{
    pthread_mutex_lock(&life_lock);
    if (fatal)
        fatal_error = 1;
    if (!parley_stopping) {
        parley_stopping = 1;
        FCGX_ShutdownPending();
        if (stop_pipe[1] >= 0) {
            ssize_t w = write(stop_pipe[1], "x", 1);
            (void)w;
        }
        /* Kept connections between requests: closed, the web server opens
         * a new one (to a sibling process, or to the next start). */
        pthread_mutex_lock(&idle_lock);
        for (int i = 0; i < n_idle; i++)
            close(idle_fd[i]);
        n_idle = 0;
        pthread_mutex_unlock(&idle_lock);
        /* Long-poll holds and SSE streams sleeping on the doorbell wake
         * now and see parley_stopping. */
        pthread_mutex_lock(&bell_lock);
        if (g_bell)
            bell_wake_all(g_bell);
        pthread_mutex_unlock(&bell_lock);
    }
    pthread_cond_broadcast(&life_cond);
    pthread_mutex_unlock(&life_lock);
}

/* Waits for the stop signals (blocked in every thread). */
static void *signal_main(void *arg)
{
    const sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        if (!parley_stopping) {
            fprintf(stderr, "parley.fcgi[%ld]: %s: stopping after the requests in progress\n",
                    (long)getpid(), strsignal(sig));
            request_stop(0);
        } else {
            fprintf(stderr, "parley.fcgi[%ld]: %s again: exiting now\n", (long)getpid(),
                    strsignal(sig));
            _exit(0);
        }
    }
    return NULL;
}

/* ---- configuration at the first request ---- */

/* Applies the request's FastCGI parameters that name Parley settings:
 * first all on a scratch copy (so a bad value changes nothing), then on
 * g_cfg. 0, or -1 with the message (key and rule, never a secret) in err. */
static int apply_params(FCGX_ParamArray envp, char *err, size_t errlen)
{
    struct parley_config scratch;
    if (config_defaults(&scratch) < 0)
        return set_err(err, errlen, "out of memory");
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        struct parley_config *cfg = pass ? &g_cfg : &scratch;
        for (char **e = envp; e && *e && rc == 0; e++) {
            const char *eq = strchr(*e, '=');
            char name[128];
            if (!eq || eq == *e || (size_t)(eq - *e) >= sizeof name)
                continue;
            memcpy(name, *e, (size_t)(eq - *e));
            name[eq - *e] = '\0';
            if (strcmp(name, THREADS_ENV) == 0)
                continue;                /* a process option: environment only */
            char msg[400];
            if (config_set(cfg, name, eq + 1, msg, sizeof msg) < 0)
                rc = set_err(err, errlen, "FastCGI parameter %s", msg);
        }
    }
    config_cleanup(&scratch);
    return rc;
}

/* Makes the configuration final with this request's parameters, once.
 * 0, or -1 (logged; the caller answers 500 and the next request retries). */
static int ensure_config(FCGX_Request *rq)
{
    if (atomic_load_explicit(&cfg_ready, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&cfg_lock);
    int rc = 0;
    if (!atomic_load_explicit(&cfg_ready, memory_order_relaxed)) {
        char err[512];
        if (apply_params(rq->envp, err, sizeof err) < 0) {
            fprintf(stderr, "parley.fcgi: configuration: %s — answering 500 until it is fixed\n",
                    err);
            rc = -1;
        } else {
            if (config_open_mode(&g_cfg))
                fprintf(stderr,
                        "parley.fcgi: WARNING: OPEN DEVELOPMENT MODE — no PARLEY_JWT_SECRET in the "
                        "environment, the PARLEY_CONFIG file or the FastCGI parameters: every "
                        "client is the same anonymous user and no token is checked\n");
            else if (start_open_mode)
                fprintf(stderr, "parley.fcgi: PARLEY_JWT_SECRET set by a FastCGI parameter: "
                                "tokens are required\n");
            atomic_store_explicit(&cfg_ready, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&cfg_lock);
    return rc;
}

/* Opens this worker's database connection and the shared doorbell if they
 * are not open yet. A database that cannot be opened leaves ctx.db NULL
 * (the dispatcher answers 503, health reports it) and is retried at the
 * next request; a doorbell that cannot be opened leaves waits to time
 * slices. */
static void ensure_storage(struct worker *w)
{
    char err[256];
    if (!w->ctx.db) {
        w->ctx.db = db_open(g_cfg.db_path, err, sizeof err);
        if (!w->ctx.db && strcmp(err, w->db_err) != 0) {
            fprintf(stderr, "parley.fcgi: database %s: %s\n", g_cfg.db_path, err);
            str_copy(w->db_err, sizeof w->db_err, err);
        } else if (w->ctx.db) {
            w->db_err[0] = '\0';
        }
    }
    if (!w->ctx.bell) {
        pthread_mutex_lock(&bell_lock);
        if (!g_bell) {
            char path[4096];
            snprintf(path, sizeof path, "%s-bell", g_cfg.db_path);
            g_bell = bell_open(path, err, sizeof err);
            if (!g_bell && !bell_failed_logged) {
                fprintf(stderr, "parley.fcgi: doorbell %s: %s (waits fall back to 1 s slices)\n",
                        path, err);
                bell_failed_logged = 1;
            }
        }
        w->ctx.bell = g_bell;
        pthread_mutex_unlock(&bell_lock);
    }
}

/* ---- the libfcgi response ---- */

static int fx_write(struct response *res, const char *data, size_t len)
{
    FCGX_Request *rq = res->impl;
    while (len > 0) {
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        if (FCGX_PutStr(data, n, rq->out) != n)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fx_flush(struct response *res)
{
    FCGX_Request *rq = res->impl;
    return FCGX_FFlush(rq->out) < 0 ? -1 : 0;
}

/* Ends the request. libfcgi's own close shuts down the sending side and
 * then waits (poll + read) until the web server has closed its end, so
 * that no unread input turns the close into a reset; when the request's
 * stdin has been read to its end (read_body) the web server sends nothing
 * more, so the socket is simply closed: three system calls and a wait for
 * the web server fewer per request. A kept connection (FCGI_KEEP_CONN)
 * is not closed at all (see keep_or_close). */
static void fx_finish(struct response *res)
{
    FCGX_Request *rq = res->impl;
    int eof = rq->in && FCGX_HasSeenEOF(rq->in);
    /* Set every time: FCGX_Free resets it only when it closes, and a kept
     * connection is not closed. */
    rq->detached = eof;                 /* 1: OS_IpcClose without the drain */
    if (!eof)
        rq->keepConnection = 0;         /* unread input (a 413): never reuse */
    FCGX_Finish_r(rq);
}

static const struct response_ops fx_ops = { fx_write, fx_flush, fx_finish };

/* ---- the libfcgi request ---- */

/* Request-scoped copies of libfcgi's strings, which die at FCGX_Finish_r
 * while r->after may still run: in an arena on serve()'s stack, or
 * malloc'd when they do not fit. */
struct req_copy {
    char arena[2048];
    size_t used;
    char *s[12];
    int n;
    char *body;
};

static const char *keep(struct req_copy *k, const char *v)
{
    if (!v)
        return NULL;
    size_t len = strlen(v) + 1;
    if (len <= sizeof k->arena - k->used) {
        char *c = k->arena + k->used;
        memcpy(c, v, len);
        k->used += len;
        return c;
    }
    if (k->n == (int)(sizeof k->s / sizeof k->s[0]))
        return NULL;
    char *c = strdup(v);
    if (c)
        k->s[k->n++] = c;
    return c;
}

static void req_copy_free(struct req_copy *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->s[i]);
    free(k->body);
}

/* The parameters serve() reads, found in one pass over libfcgi's array
 * (FCGX_GetParam would scan it once per name); the first of a name wins,
 * as with FCGX_GetParam. */
enum { P_METHOD, P_URI, P_SCRIPT, P_PATH_INFO, P_QUERY, P_CTYPE, P_AUTH, P_REDIR_AUTH,
       P_ORIGIN, P_LAST_EVENT_ID, P_ADDR, P_CLEN, P_COUNT };
static const struct {
    const char *name;
    size_t len;
} param_names[P_COUNT] = {
#define PN(s) { s, sizeof s - 1 }
    PN("REQUEST_METHOD"), PN("REQUEST_URI"), PN("SCRIPT_NAME"), PN("PATH_INFO"),
    PN("QUERY_STRING"), PN("CONTENT_TYPE"), PN("HTTP_AUTHORIZATION"),
    PN("REDIRECT_HTTP_AUTHORIZATION"), PN("HTTP_ORIGIN"), PN("HTTP_LAST_EVENT_ID"),
    PN("REMOTE_ADDR"), PN("CONTENT_LENGTH"),
#undef PN
};

static void find_params(FCGX_ParamArray env, const char *v[P_COUNT])
{
    for (int i = 0; i < P_COUNT; i++)
        v[i] = NULL;
    for (char **e = env; e && *e; e++) {
        const char *p = *e;
        for (int i = 0; i < P_COUNT; i++) {
            size_t n = param_names[i].len;
            if (!v[i] && p[0] == param_names[i].name[0] && strncmp(p, param_names[i].name, n) == 0 &&
                p[n] == '=') {
                v[i] = p + n + 1;
                break;
            }
        }
    }
}

/* Reads the body. 0 with r->body/body_len set (body_len > HTTP_MAX_BODY
 * and body NULL when it is too large: the dispatcher answers 413 without
 * reading it); -1 when CONTENT_LENGTH is malformed. */
static int read_body(FCGX_Request *rq, const char *cl, struct request *r, struct req_copy *k)
{
    size_t want = HTTP_MAX_BODY + 1;     /* no length: read to EOF, up to the cap */
    if (cl && *cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end || errno || cl[0] == '-' || cl[0] == '+' || cl[0] == ' ')
            return -1;
        if (n > HTTP_MAX_BODY) {
            r->body = NULL;
            r->body_len = n > SIZE_MAX ? SIZE_MAX : (size_t)n;
            return 0;
        }
        want = (size_t)n;
    }
    if (want == 0) {
        /* See the end of stdin (the web server sends it right after the
         * parameters; usually already in libfcgi's buffer): fx_finish can
         * then close without draining. */
        (void)FCGX_GetChar(rq->in);
        return 0;
    }
    k->body = malloc(want + 1);
    if (!k->body)
        return -1;
    size_t got = 0;
    while (got < want) {
        int n = FCGX_GetStr(k->body + got, (int)(want - got), rq->in);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == want && cl && *cl)
        (void)FCGX_GetChar(rq->in);     /* the end of stdin, as above */
    k->body[got] = '\0';
    r->body = k->body;
    r->body_len = got;                   /* > HTTP_MAX_BODY only without a length */
    return 0;
}

/* After a finished request: a connection the web server asked to keep
 * (FCGI_KEEP_CONN; libfcgi left it open) goes to the idle set, where the
 * accepting thread watches it for the next request. */
static void keep_or_close(struct worker *w)
{
    int fd = w->fcgx.ipcFd;
    if (fd < 0)
        return;
    w->fcgx.ipcFd = -1;
    pthread_mutex_lock(&idle_lock);
    int kept = !parley_stopping && n_idle < MAX_IDLE;
    if (kept)
        idle_fd[n_idle++] = fd;
    pthread_mutex_unlock(&idle_lock);
    if (!kept) {
        close(fd);
        return;
    }
    ssize_t n = write(wake_pipe[1], "x", 1);   /* non-blocking; full is fine */
    (void)n;
}

/* Takes fd out of the idle set; 0 if it was there, -1 if not (closed by a
 * shutdown meanwhile). */
static int idle_take(int fd)
{
    int rc = -1;
    pthread_mutex_lock(&idle_lock);
    for (int i = 0; i < n_idle; i++) {
        if (idle_fd[i] == fd) {
            idle_fd[i] = idle_fd[--n_idle];
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&idle_lock);
    return rc;
}

/* Serves one accepted request on worker w, then runs its after callback. */
static void serve(struct worker *w)
{
    FCGX_Request *rq = &w->fcgx;
    struct response res;
    struct request r;
    struct req_copy k;
    memset(&res, 0, sizeof res);
    memset(&r, 0, sizeof r);
    k.used = 0;
    k.n = 0;
    k.body = NULL;
    res.ops = &fx_ops;
    res.impl = rq;
    r.res = &res;
    r.ctx = &w->ctx;

    const char *pv[P_COUNT];
    find_params(rq->envp, pv);
    r.method = keep(&k, pv[P_METHOD]);
    char path[4096];
    http_path_from_cgi(pv[P_URI], pv[P_SCRIPT], pv[P_PATH_INFO], path, sizeof path);
    r.path = keep(&k, path);
    r.query = keep(&k, pv[P_QUERY]);
    r.content_type = keep(&k, pv[P_CTYPE]);
    const char *auth = pv[P_AUTH];
    if (!auth || !*auth)
        auth = pv[P_REDIR_AUTH];
    r.authorization = keep(&k, auth);
    r.origin = keep(&k, pv[P_ORIGIN]);
    r.last_event_id = keep(&k, pv[P_LAST_EVENT_ID]);
    r.remote_addr = keep(&k, pv[P_ADDR]);
    snprintf(r.peer, sizeof r.peer, "ip:%.100s",
             r.remote_addr && *r.remote_addr ? r.remote_addr : "unknown");

    if (ensure_config(rq) < 0) {
        res_error(&r, 500, "Server configuration error (see the server's error log)");
        res_finish(&r);
        keep_or_close(w);
        goto out;
    }
    ensure_storage(w);
    if (read_body(rq, pv[P_CLEN], &r, &k) < 0) {
        res_error(&r, 400, "Invalid Content-Length");
        res_finish(&r);
        keep_or_close(w);
        goto out;
    }
    http_dispatch(&r);                   /* finishes the response */
    keep_or_close(w);                    /* before after(): the next request
                                            on a kept connection must not wait */
    if (r.after)
        r.after(&r, r.after_arg);
out:
    req_copy_free(&k);
}

/* ---- workers ---- */

/* Waits for the next request on w: a new connection on the listening
 * socket, or the next request on a kept connection. 0 with one accepted,
 * -1 when stopping. */
static int accept_one(struct worker *w)
{
    int got = -1;
    pthread_mutex_lock(&accept_lock);
    while (!parley_stopping) {
        struct pollfd *pf = accept_pf;
        pf[0] = (struct pollfd){ listen_fd, POLLIN, 0 };
        pf[1] = (struct pollfd){ stop_pipe[0], POLLIN, 0 };
        pf[2] = (struct pollfd){ wake_pipe[0], POLLIN, 0 };
        pthread_mutex_lock(&idle_lock);
        int npf = 3;
        for (int i = 0; i < n_idle; i++)
            pf[npf++] = (struct pollfd){ idle_fd[i], POLLIN, 0 };
        pthread_mutex_unlock(&idle_lock);
        int n = poll(pf, (nfds_t)npf, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "parley.fcgi: poll: %s\n", strerror(errno));
            request_stop(1);
            break;
        }
        if (pf[1].revents)
            break;
        if (pf[2].revents) {
            char buf[256];          /* what is left wakes the next poll at once */
            ssize_t nr = read(wake_pipe[0], buf, sizeof buf);
            (void)nr;
        }
        int kept = -1;
        for (int i = 3; i < npf && kept < 0; i++)
            if (pf[i].revents && idle_take(pf[i].fd) == 0)
                kept = pf[i].fd;
        if (kept < 0) {
            if (pf[0].revents & (POLLERR | POLLNVAL)) {
                fprintf(stderr, "parley.fcgi: the listening socket failed\n");
                request_stop(1);
                break;
            }
            if (!(pf[0].revents & POLLIN))
                continue;
        } else {
            /* The next request on a kept connection (or its end: then
             * libfcgi closes it and tries the listening socket, which
             * says EAGAIN when nothing waits there). keepConnection keeps
             * FCGX_Accept_r's opening FCGX_Finish_r from closing it. */
            w->fcgx.ipcFd = kept;
            w->fcgx.keepConnection = 1;
        }
        /* The socket is non-blocking: when another process took the
         * connection first, accept says EAGAIN and we poll again. */
        int rc = FCGX_Accept_r(&w->fcgx);
        if (rc == 0) {
            got = 0;
            break;
        }
        if (parley_stopping)
            break;
        if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR || rc == -ECONNABORTED ||
            rc == -EPROTO || rc == -ECONNRESET)
            continue;
        if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
            /* out of descriptors or memory for now: back off, keep serving */
            fprintf(stderr, "parley.fcgi: accept: %s (retrying)\n", strerror(-rc));
            struct timespec ts = { 0, 100 * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        fprintf(stderr, "parley.fcgi: accept failed: %s\n",
                rc < 0 && rc > -4096 ? strerror(-rc) : "libfcgi error");
        request_stop(1);
        break;
    }
    pthread_mutex_unlock(&accept_lock);
    return got;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    while (!parley_stopping && accept_one(w) == 0)
        serve(w);
    FCGX_Free(&w->fcgx, 1);
    db_close(w->ctx.db);
    w->ctx.db = NULL;
    pthread_mutex_lock(&life_lock);
    workers_alive--;
    pthread_cond_broadcast(&life_cond);
    pthread_mutex_unlock(&life_lock);
    return NULL;
}

/* ---- start-up ---- */

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
            DEFAULT_THREADS, THREADS_ENV, DEFAULT_BACKLOG);
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

/* 0 if path may become our socket: absent, or a socket nobody listens on
 * (left by a crash). libfcgi unlinks whatever is there, so a live server's
 * socket or any other kind of file is refused here first. */
static int socket_path_free(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "parley.fcgi: %s exists and is not a socket: not replacing it\n", path);
        return -1;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "parley.fcgi: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    if (live) {
        fprintf(stderr, "parley.fcgi: another server is listening on %s\n", path);
        return -1;
    }
    return 0;
}

/* Opens --socket / --listen. The socket file is created under umask 077 and
 * then given mode, so it is never reachable by others in between; *ino
 * identifies it so that only our own file is removed at exit. */
static int open_listener(const char *sock_path, const char *listen_addr, mode_t mode, int backlog,
                         struct stat *ino)
{
    int fd;
    if (sock_path) {
        if (socket_path_free(sock_path) < 0)
            return -1;
        mode_t old = umask(077);
        fd = FCGX_OpenSocket(sock_path, backlog);
        umask(old);
        if (fd < 0) {
            fprintf(stderr, "parley.fcgi: cannot listen on %s: %s\n", sock_path, strerror(errno));
            return -1;
        }
        if (chmod(sock_path, mode) < 0 || stat(sock_path, ino) < 0) {
            fprintf(stderr, "parley.fcgi: chmod %s: %s\n", sock_path, strerror(errno));
            close(fd);
            return -1;
        }
    } else {
        fd = FCGX_OpenSocket(listen_addr, backlog);
        if (fd < 0) {
            fprintf(stderr, "parley.fcgi: cannot listen on %s: %s\n", listen_addr, strerror(errno));
            return -1;
        }
    }
    return fd;
}

/* Removes our socket file, if it is still ours. */
static void remove_socket(const char *path, const struct stat *ino)
{
    struct stat st;
    if (path && stat(path, &st) == 0 && st.st_ino == ino->st_ino && st.st_dev == ino->st_dev)
        unlink(path);
}

int main(int argc, char **argv)
{
    const char *sock_path = NULL, *listen_addr = NULL;
    mode_t sock_mode = 0660;
    struct stat sock_ino;
    memset(&sock_ino, 0, sizeof sock_ino);
    int threads = DEFAULT_THREADS, backlog = DEFAULT_BACKLOG;
    const char *env_threads = getenv(THREADS_ENV);
    if (env_threads && *env_threads && parse_count(env_threads, 1, MAX_THREADS, &threads) < 0) {
        fprintf(stderr, "parley.fcgi: %s must be an integer from 1 to %d\n", THREADS_ENV,
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
        case 's': sock_path = optarg; break;
        case 'l': listen_addr = optarg; break;
        case 'm': {
            long m = strtol(optarg, &end, 8);
            if (!*optarg || *end || m < 0 || m > 0777) {
                fprintf(stderr, "parley.fcgi: --socket-mode must be octal, like 0660\n");
                return 2;
            }
            sock_mode = (mode_t)m;
            break;
        }
        case 't':
            if (parse_count(optarg, 1, MAX_THREADS, &threads) < 0) {
                fprintf(stderr, "parley.fcgi: --threads must be from 1 to %d\n", MAX_THREADS);
                return 2;
            }
            break;
        case 'b':
            if (parse_count(optarg, 1, 65535, &backlog) < 0) {
                fprintf(stderr, "parley.fcgi: --backlog must be from 1 to 65535\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || (sock_path && listen_addr)) {
        usage(stderr);
        return 2;
    }

    char err[512];
    if (config_load(&g_cfg, err, sizeof err) < 0) {
        fprintf(stderr, "parley.fcgi: configuration: %s\n", err);
        return 1;
    }
    start_open_mode = config_open_mode(&g_cfg);
    if (start_open_mode)
        fprintf(stderr,
                "parley.fcgi: WARNING: no PARLEY_JWT_SECRET in the environment or the "
                "PARLEY_CONFIG file — OPEN DEVELOPMENT MODE (no token checked) unless a "
                "FastCGI parameter sets it\n");
    if (llm_global_init() != 0) {
        fprintf(stderr, "parley.fcgi: cannot initialise libcurl\n");
        return 1;
    }
    if (FCGX_Init() != 0) {
        fprintf(stderr, "parley.fcgi: cannot initialise libfcgi\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);             /* writes to a gone client return EPIPE */

    if (sock_path || listen_addr) {
        listen_fd = open_listener(sock_path, listen_addr, sock_mode, backlog, &sock_ino);
        if (listen_fd < 0)
            return 1;
    } else {
        if (FCGX_IsCGI()) {
            fprintf(stderr, "parley.fcgi: fd 0 is not a listening socket: run me from a "
                            "FastCGI server, or give --socket PATH or --listen HOST:PORT\n\n");
            usage(stderr);
            return 2;
        }
        listen_fd = 0;
    }
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 || pipe(stop_pipe) < 0) {
        fprintf(stderr, "parley.fcgi: setting up the listening socket: %s\n", strerror(errno));
        return 1;
    }
    fcntl(stop_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(stop_pipe[1], F_SETFD, FD_CLOEXEC);
    if (pipe(wake_pipe) < 0) {
        fprintf(stderr, "parley.fcgi: pipe: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(wake_pipe[i], F_SETFL, O_NONBLOCK);
    }

    /* Stop signals go to the signal thread only. */
    sigset_t stopset;
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGHUP);
    sigaddset(&stopset, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &stopset, NULL);
    pthread_t sig_th;
    if (pthread_create(&sig_th, NULL, signal_main, &stopset) != 0) {
        fprintf(stderr, "parley.fcgi: cannot start the signal thread\n");
        return 1;
    }

    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws) {
        fprintf(stderr, "parley.fcgi: out of memory\n");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1024 * 1024);
    int started = 0;
    for (int i = 0; i < threads; i++) {
        ws[i].index = i;
        ws[i].ctx.cfg = &g_cfg;
        FCGX_InitRequest(&ws[i].fcgx, listen_fd, 0);
        pthread_mutex_lock(&life_lock);
        workers_alive++;
        pthread_mutex_unlock(&life_lock);
        if (pthread_create(&ws[i].th, &attr, worker_main, &ws[i]) != 0) {
            pthread_mutex_lock(&life_lock);
            workers_alive--;
            pthread_mutex_unlock(&life_lock);
            fprintf(stderr, "parley.fcgi: could start only %d of %d threads\n", started, threads);
            break;
        }
        started++;
    }
    pthread_attr_destroy(&attr);
    if (!started)
        return 1;
    fprintf(stderr, "parley.fcgi[%ld]: serving %s with %d threads\n", (long)getpid(),
            sock_path ? sock_path : listen_addr ? listen_addr : "fd 0", started);

    /* Wait for the workers; once stopping, at most SHUTDOWN_GRACE_S. */
    pthread_mutex_lock(&life_lock);
    struct timespec deadline = { 0, 0 };
    int timed_out = 0;
    while (workers_alive > 0 && !timed_out) {
        if (!parley_stopping) {
            pthread_cond_wait(&life_cond, &life_lock);
            if (parley_stopping) {
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += SHUTDOWN_GRACE_S;
            }
        } else {
            if (deadline.tv_sec == 0) {
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += SHUTDOWN_GRACE_S;
            }
            timed_out = pthread_cond_timedwait(&life_cond, &life_lock, &deadline) == ETIMEDOUT &&
                        workers_alive > 0;
        }
    }
    int fatal = fatal_error;
    pthread_mutex_unlock(&life_lock);
    if (timed_out) {
        fprintf(stderr, "parley.fcgi[%ld]: %d request(s) still running after %d s: exiting\n",
                (long)getpid(), workers_alive, SHUTDOWN_GRACE_S);
        remove_socket(sock_path, &sock_ino);
        _exit(fatal ? 1 : 0);
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
    free(ws);
    remove_socket(sock_path, &sock_ino);
    bell_close(g_bell);
    config_cleanup(&g_cfg);
    fprintf(stderr, "parley.fcgi[%ld]: stopped\n", (long)getpid());
    return fatal ? 1 : 0;
}
