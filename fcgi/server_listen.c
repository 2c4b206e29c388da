/* server_listen.c — parley.fcgi's listening socket, its kept connections
 * and accepting the next request (server.h).
 *
 * Three ways to listen (docs/fastcgi.md): the socket on fd 0 (mod_fcgid,
 * lighttpd bin-path, spawn-fcgi), --socket PATH (its own unix socket) or
 * --listen HOST:PORT. One worker at a time waits for a connection
 * (accept_lock), in poll() on the listening socket and the stop pipe, so
 * that shutdown never depends on shutting down a socket that sibling
 * processes may share (spawn-fcgi -F).
 *
 * Kept connections (FCGI_KEEP_CONN: mod_proxy_fcgi's enablereuse=on)
 * between two requests: no thread waits on one. They sit in the idle set
 * and the thread in srv_accept polls them together with the listening
 * socket, so a kept connection never pins a worker and the web server may
 * keep more of them open than there are threads. {idle_lock}; wake_pipe
 * tells the polling thread that the set grew.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/poll.h>         /* <poll.h> would find core/poll.h */
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int listen_fd = -1;
/* A unix listening socket: srv_accept accepts itself and puts the new
 * connection in the idle set until its request comes. libfcgi's own accept
 * closes a unix connection whose first bytes take more than 2 s, which a
 * web server busy with a burst (lighttpd with 2,000 long-polls arriving at
 * once) answers with a 500; a TCP one is left to libfcgi, which checks
 * FCGI_WEB_SERVER_ADDRS. */
static int own_accept;
static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;

#define MAX_IDLE 4096              /* as many as a process may park (poll_park.h) */
static pthread_mutex_t idle_lock = PTHREAD_MUTEX_INITIALIZER;
static int idle_fd[MAX_IDLE];
static int n_idle;
static int wake_pipe[2] = { -1, -1 };
static struct pollfd accept_pf[3 + MAX_IDLE];     /* {accept_lock} */

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

int srv_listen_open(const char *sock_path, const char *listen_addr, mode_t mode, int backlog,
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

int srv_listen_setup(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || pipe(wake_pipe) < 0) {
        fprintf(stderr, "parley.fcgi: setting up the listening socket: %s\n", strerror(errno));
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
        fcntl(wake_pipe[i], F_SETFL, O_NONBLOCK);
    }
    listen_fd = fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    own_accept = getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX;
    return 0;
}

int srv_listen_fd(void)
{
    return listen_fd;
}

void srv_remove_socket(const char *path, const struct stat *ino)
{
    struct stat st;
    if (path && stat(path, &st) == 0 && st.st_ino == ino->st_ino && st.st_dev == ino->st_dev)
        unlink(path);
}

void srv_idle_close_all(void)
{
    pthread_mutex_lock(&idle_lock);
    for (int i = 0; i < n_idle; i++)
        close(idle_fd[i]);
    n_idle = 0;
    pthread_mutex_unlock(&idle_lock);
}

void srv_keep_or_close(FCGX_Request *rq)
{
    int fd = rq->ipcFd;
    if (fd < 0)
        return;
    rq->ipcFd = -1;
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

/* {accept_lock} Puts a connection just accepted into the idle set (its
 * request is read once it is readable). 0, or -1 when the set is full. */
static int idle_add_new(int fd)
{
    pthread_mutex_lock(&idle_lock);
    int ok = !parley_stopping && n_idle < MAX_IDLE;
    if (ok)
        idle_fd[n_idle++] = fd;
    pthread_mutex_unlock(&idle_lock);
    return ok ? 0 : -1;
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

/* {accept_lock} Polls the listening socket, the stop and wake pipes and
 * the idle set. Returns the number of entries in accept_pf, or -1 when
 * stopping (poll failed: the process stops). */
static int poll_all(void)
{
    struct pollfd *pf = accept_pf;
    for (;;) {
        pf[0] = (struct pollfd){ listen_fd, POLLIN, 0 };
        pf[1] = (struct pollfd){ srv_stop_fd(), POLLIN, 0 };
        pf[2] = (struct pollfd){ wake_pipe[0], POLLIN, 0 };
        pthread_mutex_lock(&idle_lock);
        int npf = 3;
        for (int i = 0; i < n_idle; i++)
            pf[npf++] = (struct pollfd){ idle_fd[i], POLLIN, 0 };
        pthread_mutex_unlock(&idle_lock);
        int n = poll(pf, (nfds_t)npf, -1);
        if (n >= 0)
            return npf;
        if (errno != EINTR) {
            fprintf(stderr, "parley.fcgi: poll: %s\n", strerror(errno));
            srv_request_stop(1);
            return -1;
        }
    }
}

/* What FCGX_Accept_r's failure means: 1 try again, 0 stop (logged). */
static int accept_retry(int rc)
{
    if (rc == -EAGAIN || rc == -EWOULDBLOCK || rc == -EINTR || rc == -ECONNABORTED ||
        rc == -EPROTO || rc == -ECONNRESET)
        return 1;
    if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
        /* out of descriptors or memory for now: back off, keep serving */
        fprintf(stderr, "parley.fcgi: accept: %s (retrying)\n", strerror(-rc));
        struct timespec ts = { 0, 100 * 1000000L };
        nanosleep(&ts, NULL);
        return 1;
    }
    fprintf(stderr, "parley.fcgi: accept failed: %s\n",
            rc < 0 && rc > -4096 ? strerror(-rc) : "libfcgi error");
    srv_request_stop(1);
    return 0;
}

int srv_accept(struct worker *w)
{
    int got = -1;
    pthread_mutex_lock(&accept_lock);
    while (!parley_stopping) {
        int npf = poll_all();
        if (npf < 0)
            break;
        struct pollfd *pf = accept_pf;
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
        if (kept >= 0) {
            /* The web server's end of an idle connection is closed here:
             * handed to libfcgi, its EOF would make libfcgi accept from the
             * listening socket itself, and its accept drops a unix
             * connection whose request is not there within 2 s. */
            char c;
            ssize_t pk = recv(kept, &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (pk < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                if (idle_add_new(kept) < 0)
                    close(kept);
                continue;          /* nothing after all */
            }
            if (pk <= 0) {
                close(kept);
                continue;
            }
        }
        if (kept < 0) {
            if (pf[0].revents & (POLLERR | POLLNVAL)) {
                fprintf(stderr, "parley.fcgi: the listening socket failed\n");
                srv_request_stop(1);
                break;
            }
            if (!(pf[0].revents & POLLIN))
                continue;
            if (own_accept) {
                /* every connection waiting in the backlog at once: a
                 * burst must not fill it (a web server's connect then
                 * fails: lighttpd answers 500) */
                int fd, full = 0, stop = 0;
                while ((fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
                    if (idle_add_new(fd) < 0) {
                        full = 1;  /* the set is full: read this one's request now */
                        break;
                    }
                if (fd < 0 && !(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                                errno == ECONNABORTED || errno == EPROTO))
                    stop = !accept_retry(-errno);
                if (stop)
                    break;
                if (!full)
                    continue;      /* each is taken from the idle set when its request came */
                w->fcgx->ipcFd = fd;
                w->fcgx->keepConnection = 1;
            }
        } else {
            /* The next request on a kept connection (or its end: then
             * libfcgi closes it and tries the listening socket, which
             * says EAGAIN when nothing waits there). keepConnection keeps
             * FCGX_Accept_r's opening FCGX_Finish_r from closing it. */
            w->fcgx->ipcFd = kept;
            w->fcgx->keepConnection = 1;
        }
        /* The socket is non-blocking: when another process took the
         * connection first, accept says EAGAIN and we poll again. */
        int rc = FCGX_Accept_r(w->fcgx);
        if (rc == 0) {
            got = 0;
            break;
        }
        if (parley_stopping || !accept_retry(rc))
            break;
    }
    pthread_mutex_unlock(&accept_lock);
    return got;
}
