/* lp-floor.c — the floor of bench/lp-run.sh's long-poll rows: a minimal
 * libfcgi responder that does the same delivery with Parley's part removed.
 *
 * It speaks what bench/lp-fanout.mjs's "nchan" mode speaks (Nchan's
 * long-poll, one message per answer):
 *   GET  .../sub/<ch>   the message after the one named by If-None-Match
 *                       (its Etag; none: the oldest), waiting up to 25 s
 *                       for it (then 304), with Etag and Last-Modified
 *   POST .../pub/<ch>   appends the body as the channel's next message: 202
 * Messages live in memory; no database, no doorbell, no protocol adapter,
 * one thread per request (a waiting GET holds its thread on a condition
 * variable of its channel). What is left is the web server, its FastCGI hop
 * and libfcgi: the least any FastCGI application could cost per delivery
 * behind that web server on this machine.
 *
 *   lp-floor [--socket PATH [--socket-mode OCTAL]] [--threads N]
 * Takes the command lines the shipped setups give parley.fcgi (lighttpd
 * spawns it with its socket on fd 0; parley-fcgi.service passes --socket),
 * so bench/lp-run.sh runs it in parley.fcgi's place. Threads: the most of
 * N and LP_FLOOR_THREADS (default 2,200: one per waiting viewer), 128 KiB
 * stacks. Runs until killed. Not part of Parley: a benchmark's yardstick.
 */
#include "floor.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHANNELS 1024
#define WAIT_S 25

struct channel {
    char name[64];
    char **msgs;               /* msgs[i]: message i + 1 */
    size_t n, cap;
    pthread_cond_t cv;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct channel channels[MAX_CHANNELS];
static int nchannels;

/* {lock} The channel named name (created), or NULL when the table is full. */
static struct channel *channel_get(const char *name, size_t len)
{
    if (len == 0 || len >= sizeof channels[0].name)
        return NULL;
    for (int i = 0; i < nchannels; i++)
        if (strlen(channels[i].name) == len && memcmp(channels[i].name, name, len) == 0)
            return &channels[i];
    if (nchannels == MAX_CHANNELS)
        return NULL;
    struct channel *c = &channels[nchannels++];
    memcpy(c->name, name, len);
    c->name[len] = '\0';
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    return c;
}

static void reply(FCGX_Request *rq, const char *status, const char *extra, const char *body,
                  size_t len)
{
    char h[512];           /* (libfcgi's own printf knows no %zu) */
    int hl = snprintf(h, sizeof h, "Status: %s\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n",
                      status, extra ? extra : "", len);
    FCGX_PutStr(h, hl, rq->out);
    if (len)
        FCGX_PutStr(body, (int)len, rq->out);
}

static void sub(FCGX_Request *rq, const char *name, size_t len)
{
    const char *inm = FCGX_GetParam("HTTP_IF_NONE_MATCH", rq->envp);
    size_t have = inm ? strtoull(inm[0] == '"' ? inm + 1 : inm, NULL, 10) : 0;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += WAIT_S;
    pthread_mutex_lock(&lock);
    struct channel *c = channel_get(name, len);
    if (!c) {
        pthread_mutex_unlock(&lock);
        reply(rq, "400 Bad Request", NULL, "{\"error\":\"channel\"}", 19);
        return;
    }
    int rc = 0;
    while (c->n <= have && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->cv, &lock, &until);
    if (c->n <= have) {
        pthread_mutex_unlock(&lock);
        reply(rq, "304 Not Modified", NULL, "", 0);
        return;
    }
    char *m = strdup(c->msgs[have]);
    pthread_mutex_unlock(&lock);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Etag: \"%zu\"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n",
             have + 1);
    if (m)
        reply(rq, "200 OK", hdr, m, strlen(m));
    else
        reply(rq, "500 Internal Server Error", NULL, "", 0);
    free(m);
}

static void pub(FCGX_Request *rq, const char *name, size_t len)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", rq->envp);
    long n = cl ? strtol(cl, NULL, 10) : 0;
    char *body = n > 0 && n < (1 << 20) ? malloc((size_t)n + 1) : NULL;
    if (!body || FCGX_GetStr(body, (int)n, rq->in) != n) {
        free(body);
        reply(rq, "400 Bad Request", NULL, "{\"error\":\"body\"}", 16);
        return;
    }
    body[n] = '\0';
    pthread_mutex_lock(&lock);
    struct channel *c = channel_get(name, len);
    if (c && c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        char **nm = realloc(c->msgs, cap * sizeof *nm);
        if (nm) {
            c->msgs = nm;
            c->cap = cap;
        }
    }
    int ok = c && c->n < c->cap;
    if (ok) {
        c->msgs[c->n++] = body;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&lock);
    if (!ok)
        free(body);
    reply(rq, ok ? "202 Accepted" : "503 Service Unavailable", NULL, "{}", 2);
}

static void *worker(void *arg)
{
    (void)arg;
    FCGX_Request rq;
    FCGX_InitRequest(&rq, listen_fd, 0);
    for (;;) {
        if (floor_accept(&rq, 1) < 0)
            break;
        const char *method = FCGX_GetParam("REQUEST_METHOD", rq.envp);
        const char *uri = FCGX_GetParam("REQUEST_URI", rq.envp);
        const char *q = uri ? strchr(uri, '?') : NULL;
        size_t ulen = uri ? (q ? (size_t)(q - uri) : strlen(uri)) : 0;
        const char *s = NULL;
        for (const char *p = uri; p && p + 5 <= uri + ulen; p++)
            if (p[0] == '/' && (!strncmp(p, "/sub/", 5) || !strncmp(p, "/pub/", 5)))
                s = p;
        if (!method || !s) {
            reply(&rq, "404 Not Found", NULL, "{}", 2);
        } else if (s[1] == 's' && !strcmp(method, "GET")) {
            sub(&rq, s + 5, (size_t)(uri + ulen - (s + 5)));
        } else if (s[1] == 'p' && !strcmp(method, "POST")) {
            pub(&rq, s + 5, (size_t)(uri + ulen - (s + 5)));
        } else {
            reply(&rq, "405 Method Not Allowed", NULL, "{}", 2);
        }
        FCGX_Finish_r(&rq);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct floor_opts o = { .threads = 1 };
    floor_args(argc, argv, &o);
    const char *env = getenv("LP_FLOOR_THREADS");
    int want = env ? atoi(env) : 2200;
    if (want > o.threads)
        o.threads = want;
    if (floor_listen(&o, "lp-floor") < 0)
        return 1;
    floor_run(o.threads, 128 * 1024, worker, "lp-floor");
    return 0;
}
