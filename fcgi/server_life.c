/* server_life.c — parley.fcgi's stop signals, shutdown and worker
 * lifetimes (server.h).
 *
 * A signal thread takes SIGTERM/SIGINT/SIGHUP/SIGUSR1: it sets
 * parley_stopping, which ends waits for new connections (the stop pipe
 * srv_accept polls) and long-poll holds and SSE streams (every doorbell
 * sleeper is woken); in-flight requests finish; then the process exits 0.
 * A second signal, or main's grace time, ends it at once.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int stop_pipe[2] = { -1, -1 };  /* readable once stopping */

/* Worker lifetimes, for the shutdown wait; {life_lock}. */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t life_cond = PTHREAD_COND_INITIALIZER;
static int workers_alive;
static int fatal_error;                 /* stopped by an error, not a signal */

static sigset_t stopset;

void srv_request_stop(int fatal)
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
        srv_idle_close_all();
        /* Long-poll holds and SSE streams sleeping on the doorbell wake
         * now and see parley_stopping. */
        srv_bell_wake_all();
    }
    pthread_cond_broadcast(&life_cond);
    pthread_mutex_unlock(&life_lock);
}

int srv_stop_fd(void)
{
    return stop_pipe[0];
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
            srv_request_stop(0);
        } else {
            fprintf(stderr, "parley.fcgi[%ld]: %s again: exiting now\n", (long)getpid(),
                    strsignal(sig));
            _exit(0);
        }
    }
    return NULL;
}

int srv_signals_start(void)
{
    if (pipe(stop_pipe) < 0) {
        fprintf(stderr, "parley.fcgi: pipe: %s\n", strerror(errno));
        return -1;
    }
    fcntl(stop_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(stop_pipe[1], F_SETFD, FD_CLOEXEC);
    /* Stop signals go to the signal thread only. */
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGHUP);
    sigaddset(&stopset, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &stopset, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, signal_main, &stopset) != 0) {
        fprintf(stderr, "parley.fcgi: cannot start the signal thread\n");
        return -1;
    }
    return 0;
}

void srv_worker_born(void)
{
    pthread_mutex_lock(&life_lock);
    workers_alive++;
    pthread_mutex_unlock(&life_lock);
}

void srv_worker_died(void)
{
    pthread_mutex_lock(&life_lock);
    workers_alive--;
    pthread_cond_broadcast(&life_cond);
    pthread_mutex_unlock(&life_lock);
}

int srv_wait_workers(int grace_s, int *left, int *fatal)
{
    pthread_mutex_lock(&life_lock);
    struct timespec deadline = { 0, 0 };
    int timed_out = 0;
    while (workers_alive > 0 && !timed_out) {
        if (!parley_stopping) {
            pthread_cond_wait(&life_cond, &life_lock);
            if (parley_stopping) {
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += grace_s;
            }
        } else {
            if (deadline.tv_sec == 0) {
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += grace_s;
            }
            timed_out = pthread_cond_timedwait(&life_cond, &life_lock, &deadline) == ETIMEDOUT &&
                        workers_alive > 0;
        }
    }
    *left = workers_alive;
    *fatal = fatal_error;
    pthread_mutex_unlock(&life_lock);
    return !timed_out;
}
