/* sse-floor.c — the floor of bench/gw-latency.sh's SSE rows: a minimal
 * libfcgi responder that does what parley.fcgi does for seed 004's
 * POST /api/chat/send with Parley's part removed — it asks the upstream
 * (Ollama's /api/chat, streaming, as parley.fcgi asks it) for the message's
 * content and relays each token as one seed 004 frame, data: {"content":T}
 * (flushed on its own), then data: {"done":true,...}. No database, no
 * conversation, no history, no generation loop or thread hand-off, no
 * persistence: the request runs in the FastCGI thread that accepted it,
 * with a curl handle that thread keeps (so its upstream connection is
 * kept, as parley.fcgi's loop keeps its connections).
 *
 *   POST …/api/chat/sessions   → 201 {"id":"floor-N"} (nothing stored)
 *   POST …/api/chat/send {conversationId, content}
 *                              → 200 text/event-stream, the frames above;
 *                                an upstream failure ends with
 *                                data: {"error":…,"done":true}
 *   anything else              → 404
 * What is left is the web server, its FastCGI hop, libfcgi and one
 * upstream request from C: the least any FastCGI gateway could add on this
 * machine behind that web server.
 *
 *   sse-floor [--socket PATH [--socket-mode OCTAL]] [--threads N]
 * Takes the command lines the shipped setups give parley.fcgi (see
 * bench/rest-floor.c; bench/http-lib.sh's BENCH_FLOOR starts it exactly as
 * it starts parley.fcgi, under the name rest-floor). The upstream:
 * $OLLAMA_SERVER (the environment the setup gives parley.fcgi), the model
 * $PARLEY_MODEL or llama3.2 (parley.fcgi's default). Threads: N, default
 * 16. Runs until killed. Not part of Parley: a benchmark's yardstick.
 */
#include "floor.h"

#include <curl/curl.h>
#include <jansson.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_MAX (1 << 20)

static char upstream[512];
static const char *model = "llama3.2";
static unsigned long session_seq;    /* atomic */

/* One relay in progress: the FastCGI stream and the NDJSON line buffer. */
struct relay {
    FCGX_Request *rq;
    char line[65536];
    size_t len;
    int done, gone, tokens;
};

static void frame(struct relay *r, json_t *obj)
{
    char *t = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!t)
        return;
    if (!r->gone && (FCGX_FPrintF(r->rq->out, "data: %s\n\n", t) < 0 || FCGX_FFlush(r->rq->out) < 0))
        r->gone = 1;
    free(t);
}

/* One NDJSON line of Ollama's /api/chat stream. */
static void upstream_line(struct relay *r, const char *s, size_t n)
{
    json_t *j = json_loadb(s, n, 0, NULL);
    if (!j)
        return;
    const char *tok = json_string_value(json_object_get(json_object_get(j, "message"), "content"));
    if (tok && *tok) {
        frame(r, json_pack("{s:s}", "content", tok));
        r->tokens++;
    }
    if (json_is_true(json_object_get(j, "done")) && !r->done) {
        r->done = 1;
        frame(r, json_pack("{s:b,s:s,s:{s:i}}", "done", 1, "messageId", "floor", "metadata",
                           "tokens", r->tokens));
    }
    json_decref(j);
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
    struct relay *r = ud;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            upstream_line(r, r->line, r->len);
            r->len = 0;
        } else if (r->len < sizeof r->line) {
            r->line[r->len++] = p[i];
        }
    }
    return r->gone ? 0 : n;       /* the client left: stop reading */
}

static void answer(FCGX_Request *rq, const char *status, const char *type, const char *body)
{
    FCGX_FPrintF(rq->out, "Status: %s\r\nContent-Type: %s\r\nCache-Control: no-store\r\n\r\n%s",
                 status, type, body);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The request body (Content-Length bytes, at most BODY_MAX), parsed. */
static json_t *read_json(FCGX_Request *rq)
{
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", rq->envp);
    long n = cl ? strtol(cl, NULL, 10) : 0;
    if (n <= 0 || n > BODY_MAX)
        return NULL;
    char *b = malloc((size_t)n);
    if (!b)
        return NULL;
    int got = FCGX_GetStr(b, (int)n, rq->in);
    json_t *j = got == n ? json_loadb(b, (size_t)n, 0, NULL) : NULL;
    free(b);
    return j;
}

static void send_message(FCGX_Request *rq, CURL *curl)
{
    json_t *in = read_json(rq);
    const char *content = json_string_value(json_object_get(in, "content"));
    if (!content) {
        json_decref(in);
        answer(rq, "400 Bad Request", "application/json", "{\"error\":\"content is required\"}");
        return;
    }
    json_t *req = json_pack("{s:s,s:b,s:[{s:s,s:s}]}", "model", model, "stream", 1, "messages",
                            "role", "user", "content", content);
    json_decref(in);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        answer(rq, "500 Internal Server Error", "application/json", "{\"error\":\"out of memory\"}");
        return;
    }
    FCGX_FPrintF(rq->out, "Status: 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                          "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n");
    FCGX_FFlush(rq->out);
    struct relay *r = calloc(1, sizeof *r);
    if (!r) {
        free(body);
        return;
    }
    r->rq = rq;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, upstream);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (!r->done && !r->gone) {
        char why[160];
        snprintf(why, sizeof why, "upstream: %s (HTTP %ld)",
                 rc == CURLE_OK ? "the stream ended early" : curl_easy_strerror(rc), status);
        frame(r, json_pack("{s:s,s:b}", "error", why, "done", 1));
    }
    curl_slist_free_all(h);
    free(r);
    free(body);
}

static void *worker(void *arg)
{
    (void)arg;
    FCGX_Request rq;
    FCGX_InitRequest(&rq, listen_fd, 0);
    CURL *curl = curl_easy_init();
    if (!curl)
        return NULL;
    for (;;) {
        if (floor_accept(&rq, 1) < 0)
            break;
        const char *method = FCGX_GetParam("REQUEST_METHOD", rq.envp);
        const char *uri = FCGX_GetParam("REQUEST_URI", rq.envp);
        char p[512];
        snprintf(p, sizeof p, "%s", uri ? uri : "");
        char *q = strchr(p, '?');
        if (q)
            *q = '\0';
        if (method && !strcmp(method, "POST") && ends_with(p, "/api/chat/send")) {
            send_message(&rq, curl);
        } else if (method && !strcmp(method, "POST") && ends_with(p, "/api/chat/sessions")) {
            char b[64];
            snprintf(b, sizeof b, "{\"id\":\"floor-%lu\"}",
                     __atomic_add_fetch(&session_seq, 1, __ATOMIC_RELAXED));
            answer(&rq, "201 Created", "application/json", b);
        } else {
            answer(&rq, "404 Not Found", "application/json", "{\"error\":\"not found\"}");
        }
        FCGX_Finish_r(&rq);
    }
    curl_easy_cleanup(curl);
    return NULL;
}

int main(int argc, char **argv)
{
    struct floor_opts o = { .threads = 16 };
    floor_args(argc, argv, &o);
    const char *server = getenv("OLLAMA_SERVER");
    if (!server || !*server) {
        fprintf(stderr, "sse-floor: OLLAMA_SERVER is not set\n");
        return 1;
    }
    snprintf(upstream, sizeof upstream, "%s%sapi/chat", server,
             server[strlen(server) - 1] == '/' ? "" : "/");
    if (getenv("PARLEY_MODEL") && *getenv("PARLEY_MODEL"))
        model = getenv("PARLEY_MODEL");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || floor_listen(&o, "sse-floor") < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "sse-floor[%ld]: relaying to %s with %d threads\n", (long)getpid(), upstream,
            o.threads);
    floor_run(o.threads, 0, worker, "sse-floor");
    return 0;
}
