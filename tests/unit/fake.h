/* fake.h — reach the simulated LLM (tests/fake-llm/server.mjs) from C tests.
 *
 * fake_url() returns FAKE_LLM_URL (exported by tests/run.sh) or starts a
 * server of its own (node, port 0) that is killed when the test exits, so
 * a test binary also runs alone from the repository root.
 * fake_http() makes one request to the fake's control API (/_fake/...).
 * Header-only for the test programs; needs libcurl.
 */
#ifndef PARLEY_FAKE_H
#define PARLEY_FAKE_H
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t fake_pid;

static void fake_stop(void)
{
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        fake_pid = 0;
    }
}

static inline const char *fake_url(void)
{
    static char url[128];
    const char *env = getenv("FAKE_LLM_URL");
    if (env && *env)
        return env;
    if (url[0])
        return url;
    char portfile[256];
    snprintf(portfile, sizeof portfile, "/tmp/parley-fake-port-%ld", (long)getpid());
    unlink(portfile);
    fake_pid = fork();
    if (fake_pid == 0) {
        execlp("node", "node", "tests/fake-llm/server.mjs", "--port", "0",
               "--port-file", portfile, (char *)NULL);
        _exit(127);
    }
    atexit(fake_stop);
    for (int i = 0; i < 100; i++) {
        FILE *f = fopen(portfile, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0) {
            snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
            unlink(portfile);
            return url;
        }
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
    fprintf(stdout, "# could not start tests/fake-llm/server.mjs (run from the repo root)\n");
    return NULL;
}

struct fake_buf { char *p; size_t n; };

static size_t fake_write(char *d, size_t sz, size_t nm, void *ud)
{
    struct fake_buf *b = ud;
    size_t len = sz * nm;
    char *np = realloc(b->p, b->n + len + 1);
    if (!np)
        return 0;
    memcpy(np + b->n, d, len);
    b->p = np;
    b->n += len;
    b->p[b->n] = '\0';
    return len;
}

/* method "GET"/"POST", path like "/_fake/stats", body JSON or NULL.
 * Returns the HTTP status (0 on failure); *resp (new, may be NULL) the body. */
static inline long fake_http(const char *method, const char *path, const char *body, char **resp)
{
    const char *base = fake_url();
    if (resp)
        *resp = NULL;
    if (!base)
        return 0;
    char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    CURL *c = curl_easy_init();
    struct fake_buf b = { NULL, 0 };
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (resp)
        *resp = b.p;
    else
        free(b.p);
    return status;
}
/* The text the fake answers for prompt (its directives included) with
 * tokens tokens (<= 0: the fake's current default). New string or NULL. */
static inline char *fake_answer(const char *prompt, int tokens)
{
    json_t *req = tokens > 0 ? json_pack("{s:s, s:i}", "prompt", prompt, "tokens", tokens)
                             : json_pack("{s:s}", "prompt", prompt);
    char *body = json_dumps(req, JSON_COMPACT), *resp = NULL;
    json_decref(req);
    long st = fake_http("POST", "/_fake/answer", body, &resp);
    free(body);
    json_t *o = st == 200 && resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    const char *t = json_string_value(json_object_get(o, "text"));
    char *text = t ? strdup(t) : NULL;
    json_decref(o);
    return text;
}

/* GET /_fake/stats as JSON (new reference, NULL on failure). */
static inline json_t *fake_stats(void)
{
    char *resp = NULL;
    fake_http("GET", "/_fake/stats", NULL, &resp);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return o;
}

/* Requests the fake has served so far (-1 on failure). */
static inline long fake_total(void)
{
    json_t *o = fake_stats();
    long n = o ? (long)json_integer_value(json_object_get(o, "total")) : -1;
    json_decref(o);
    return n;
}
#endif
