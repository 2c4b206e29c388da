/* fcgi-stream.c — a tiny FastCGI app that proves a web server configuration
 * streams: it stands in for parley.fcgi behind the shipped apache-conf/
 * snippets, so the integration tests (tests/integration/) validate those
 * snippets independently of the real application.
 *
 *   fcgi-stream                       accept on fd 0 (spawned by mod_fcgid,
 *                                     lighttpd bin-path or spawn-fcgi)
 *   fcgi-stream --socket PATH         listen on a unix socket (external server)
 *   fcgi-stream --listen [HOST]:PORT  listen on TCP
 *   [--socket-mode MODE]              chmod of the unix socket (octal)
 *   [--threads N]                     N accept threads (default 1)
 *
 * Answers (the path is the end of REQUEST_URI, whatever prefix routed it):
 *   GET  .../stream[?n=5&ms=200]   text/event-stream: n events, ms apart,
 *                                  FCGX_FFlush after each; every event is
 *                                  "id: i" + "data: {"i":i,"sent_ms":t}" where
 *                                  t is ms since the request arrived
 *   ANY  .../params                application/json: the FastCGI parameters and
 *                                  process environment a Parley deployment
 *                                  depends on (REQUEST_URI, SCRIPT_NAME,
 *                                  PATH_INFO, HTTP_AUTHORIZATION, PARLEY_DB…)
 *   anything else                  404
 *
 * Threads: each worker thread owns one FCGX_Request; accept is serialised
 * with a mutex as in libfcgi's threaded example. SIGTERM (how mod_fcgid,
 * lighttpd and the test harness stop it) exits at once: nothing to save.
 */
#include <errno.h>
#include <fcgiapp.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int listen_fd;                                   /* 0 = inherited */
static pthread_mutex_t accept_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* The integer value of query parameter `name` in `query`, or `def` when it
 * is absent or not a number in [lo, hi]. */
static long query_long(const char *query, const char *name, long def, long lo, long hi)
{
    size_t n = strlen(name);
    const char *p = query;
    while (p && *p) {
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            char *end;
            long v = strtol(p + n + 1, &end, 10);
            return (end != p + n + 1 && (*end == '&' || *end == '\0') && v >= lo && v <= hi) ? v : def;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return def;
}

/* Copies REQUEST_URI's path (no query) into buf. */
static void request_path(FCGX_Request *rq, char *buf, size_t len)
{
    const char *uri = FCGX_GetParam("REQUEST_URI", rq->envp);
    size_t n;
    if (!uri)
        uri = "";
    n = strcspn(uri, "?");
    if (n >= len)
        n = len - 1;
    memcpy(buf, uri, n);
    buf[n] = '\0';
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void serve_stream(FCGX_Request *rq, long long t0)
{
    const char *q = FCGX_GetParam("QUERY_STRING", rq->envp);
    long n = query_long(q, "n", 5, 1, 1000), ms = query_long(q, "ms", 200, 0, 60000);
    FCGX_FPrintF(rq->out, "Status: 200 OK\r\nContent-Type: text/event-stream\r\n"
                          "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n");
    for (long i = 1; i <= n; i++) {
        if (i > 1)
            sleep_ms(ms);
        FCGX_FPrintF(rq->out, "id: %ld\ndata: {\"i\":%ld,\"sent_ms\":%lld}\n\n", i, i, now_ms() - t0);
        if (FCGX_FFlush(rq->out) < 0)
            return;                                    /* the client left */
    }
}

static void serve_params(FCGX_Request *rq)
{
    static const char *params[] = { "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_NAME", "PATH_INFO",
                                    "QUERY_STRING", "HTTP_AUTHORIZATION", "HTTP_HOST",
                                    "CONTENT_TYPE", "REMOTE_ADDR", "PARLEY_DB", "OLLAMA_SERVER",
                                    "PARLEY_CONFIG" };
    static const char *envs[] = { "PARLEY_DB", "OLLAMA_SERVER", "PARLEY_CONFIG" };
    json_t *p = json_object(), *e = json_object(), *root;
    char *text;
    for (size_t i = 0; i < sizeof params / sizeof *params; i++) {
        const char *v = FCGX_GetParam(params[i], rq->envp);
        json_object_set_new(p, params[i], v ? json_string(v) : json_null());
    }
    for (size_t i = 0; i < sizeof envs / sizeof *envs; i++) {
        const char *v = getenv(envs[i]);
        json_object_set_new(e, envs[i], v ? json_string(v) : json_null());
    }
    root = json_pack("{s:o, s:o, s:i}", "params", p, "env", e, "pid", (int)getpid());
    text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    FCGX_FPrintF(rq->out, "Status: 200 OK\r\nContent-Type: application/json\r\n\r\n%s\n",
                 text ? text : "{}");
    free(text);
    json_decref(root);
}

static void *worker(void *arg)
{
    FCGX_Request rq;
    (void)arg;
    if (FCGX_InitRequest(&rq, listen_fd, 0) != 0)
        return NULL;
    for (;;) {
        char path[1024];
        int rc;
        long long t0;
        pthread_mutex_lock(&accept_lock);
        rc = FCGX_Accept_r(&rq);
        pthread_mutex_unlock(&accept_lock);
        if (rc < 0)
            break;
        t0 = now_ms();
        request_path(&rq, path, sizeof path);
        if (ends_with(path, "/stream"))
            serve_stream(&rq, t0);
        else if (ends_with(path, "/params"))
            serve_params(&rq);
        else
            FCGX_FPrintF(rq.out, "Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n"
                                 "fcgi-stream: no such path: %s\n", path);
        FCGX_Finish_r(&rq);
    }
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: fcgi-stream [--socket PATH [--socket-mode MODE] | --listen [HOST]:PORT]"
                    " [--threads N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *bind_to = NULL, *mode = NULL;
    int threads = 1;
    pthread_t tids[64];

    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--socket") == 0 || strcmp(argv[i], "--listen") == 0) && i + 1 < argc)
            bind_to = argv[++i];
        else if (strcmp(argv[i], "--socket-mode") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else
            return usage();
    }
    if (threads < 1 || threads > 64)
        return usage();
    signal(SIGTERM, on_term);              /* before FCGX_Init, which keeps a set handler */
    signal(SIGPIPE, SIG_IGN);
    if (FCGX_Init() != 0) {
        fprintf(stderr, "fcgi-stream: FCGX_Init failed\n");
        return 1;
    }
    if (bind_to) {
        /* FCGX_OpenSocket takes "/path" for unix sockets and "[host]:port" for TCP. */
        listen_fd = FCGX_OpenSocket(bind_to, 128);
        if (listen_fd < 0) {
            fprintf(stderr, "fcgi-stream: cannot listen on %s: %s\n", bind_to, strerror(errno));
            return 1;
        }
        if (mode && bind_to[0] == '/' && chmod(bind_to, (mode_t)strtol(mode, NULL, 8)) != 0) {
            fprintf(stderr, "fcgi-stream: chmod %s: %s\n", bind_to, strerror(errno));
            return 1;
        }
    }
    for (int i = 1; i < threads; i++)
        if (pthread_create(&tids[i], NULL, worker, NULL) != 0)
            return 1;
    worker(NULL);
    return 0;
}
