/* floor.h — what the benchmarks' FastCGI floors (rest-floor.c, lp-floor.c,
 * sse-floor.c) share: the command line the shipped setups give
 * parley.fcgi, the listening socket, and the worker threads. Header-only
 * (each floor is one program built from one file); not part of Parley.
 *
 *   floor_args    --socket PATH, --socket-mode OCTAL (default 0660) and
 *                 --threads N (default: *threads as given) from argv; other
 *                 arguments are left to the caller.
 *   floor_listen  FCGX_Init (SIGTERM then ends the process at once), then
 *                 the socket: --socket's path (made anew, chmod to its
 *                 mode) or, without one, fd 0 as lighttpd and mod_fcgid
 *                 pass it. 0, or -1 with a message on stderr.
 *   floor_accept  FCGX_Accept_r on the listening socket, serialized by one
 *                 mutex of the process unless locked is 0 (every thread
 *                 in accept at once, which Linux allows); its result.
 *   floor_run     threads - 1 detached threads and the calling one run
 *                 worker(NULL) (stack: 0 for the default); returns when the
 *                 calling thread's worker does.
 * floor_accept: any worker thread; the others: the main thread, before
 * any worker runs. */
#ifndef PARLEY_BENCH_FLOOR_H
#define PARLEY_BENCH_FLOOR_H

#include <fcgiapp.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int listen_fd;                /* what FCGX_InitRequest listens on */

struct floor_opts {
    const char *sock;                /* NULL: fd 0 */
    int mode;
    int threads;
};

static void floor_args(int argc, char **argv, struct floor_opts *o)
{
    if (!o->mode)
        o->mode = 0660;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc)
            o->sock = argv[++i];
        else if (!strcmp(argv[i], "--socket-mode") && i + 1 < argc)
            o->mode = (int)strtol(argv[++i], NULL, 8);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            o->threads = atoi(argv[++i]);
    }
    if (o->threads < 1)
        o->threads = 1;
}

static int floor_listen(const struct floor_opts *o, const char *name)
{
    if (FCGX_Init() != 0) {
        fprintf(stderr, "%s: FCGX_Init failed\n", name);
        return -1;
    }
    /* libfcgi's SIGTERM handler only marks a shutdown that the next
     * request would see: a web server or benchmark stopping us would wait */
    signal(SIGTERM, SIG_DFL);
    if (o->sock) {
        unlink(o->sock);
        listen_fd = FCGX_OpenSocket(o->sock, 4096);
        if (listen_fd < 0 || chmod(o->sock, (mode_t)o->mode) < 0) {
            fprintf(stderr, "%s: cannot listen on %s\n", name, o->sock);
            return -1;
        }
    }
    return 0;
}

static int floor_accept(FCGX_Request *rq, int locked)
{
    static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;
    if (locked)
        pthread_mutex_lock(&accept_lock);
    int rc = FCGX_Accept_r(rq);
    if (locked)
        pthread_mutex_unlock(&accept_lock);
    return rc;
}

static void floor_run(int threads, size_t stack, void *(*worker)(void *), const char *name)
{
    pthread_attr_t at;
    pthread_attr_init(&at);
    if (stack)
        pthread_attr_setstacksize(&at, stack);
    for (int i = 1; i < threads; i++) {
        pthread_t th;
        if (pthread_create(&th, &at, worker, NULL) != 0) {
            fprintf(stderr, "%s: %d threads started of %d\n", name, i, threads);
            break;
        }
        pthread_detach(th);
    }
    pthread_attr_destroy(&at);
    worker(NULL);
}

#endif
