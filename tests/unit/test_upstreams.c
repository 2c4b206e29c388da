/* test_upstreams.c — several upstreams (core/llm.c, docs/upstreams.md):
 * failover before the first token, Retry-After, no failover after it, 4xx
 * not retried, the circuit breaker, the multi-driven path, usage numbers,
 * and PARLEY_UPSTREAMS in core/config.c.
 *
 * Starts its own three simulated LLMs (node tests/fake-llm/server.mjs, run
 * from the repository root) and sets their knobs per instance with
 * POST /_fake/config, so "the first upstream answers 429" holds for that
 * instance only; each one's request log (GET /_fake/requests) is the
 * witness of what was asked where. Every case is bounded (a few seconds).
 */
#include "th.h"
#include "config.h"
#include "llm.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#define NFAKE 3
static char fake[NFAKE][128];       /* base URLs */
static pid_t fake_pid[NFAKE];
static char refused[128];           /* a port nothing listens on */

static void stop_fakes(void)
{
    for (int i = 0; i < NFAKE; i++)
        if (fake_pid[i] > 0) {
            kill(fake_pid[i], SIGTERM);
            waitpid(fake_pid[i], NULL, 0);
            fake_pid[i] = 0;
        }
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Starts fake i; its URL in fake[i] ("" when it could not start). */
static void start_fake(int i)
{
    char portfile[320];
    snprintf(portfile, sizeof portfile, "%s/port%d", th_tmpdir(), i);
    fake_pid[i] = fork();
    if (fake_pid[i] == 0) {
        execlp("node", "node", "tests/fake-llm/server.mjs", "--port", "0", "--port-file",
               portfile, (char *)NULL);
        _exit(127);
    }
    for (int t = 0; t < 200; t++) {
        FILE *f = fopen(portfile, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0) {
            snprintf(fake[i], sizeof fake[i], "http://127.0.0.1:%d", port);
            return;
        }
        sleep_ms(50);
    }
    printf("# could not start fake %d (run from the repository root)\n", i);
}

/* A port that refuses connections: bound, then closed. */
static void find_refused(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &al) == 0)
        snprintf(refused, sizeof refused, "http://127.0.0.1:%d", ntohs(a.sin_port));
    if (s >= 0)
        close(s);
}

/* ---- the fakes' control API ---- */

struct text {
    char *p;
    size_t len;
};

static size_t grab(char *p, size_t size, size_t n, void *ud)
{
    struct text *t = ud;
    char *q = realloc(t->p, t->len + size * n + 1);
    if (!q)
        return 0;
    memcpy(q + t->len, p, size * n);
    t->p = q;
    t->len += size * n;
    t->p[t->len] = '\0';
    return size * n;
}

/* method path [body JSON text] on fake i; the parsed answer (new) or NULL. */
static json_t *ctl(int i, const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", fake[i], path);
    struct text out = { 0 };
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "{}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, grab);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    json_t *j = rc == CURLE_OK && out.p ? json_loadb(out.p, out.len, 0, NULL) : NULL;
    if (!j)
        printf("#   %s %s on fake %d failed\n", method, path, i);
    free(out.p);
    return j;
}

static void knobs(int i, const char *json)
{
    json_decref(ctl(i, "POST", "/_fake/reset", NULL));
    if (json)
        json_decref(ctl(i, "POST", "/_fake/config", json));
}

/* The request log of fake i (new array reference). */
static json_t *requests(int i)
{
    json_t *j = ctl(i, "GET", "/_fake/requests", NULL);
    json_t *r = json_incref(json_object_get(j, "requests"));
    json_decref(j);
    return r ? r : json_array();
}

static int nrequests(int i)
{
    json_t *r = requests(i);
    int n = (int)json_array_size(r);
    json_decref(r);
    return n;
}

static double req_num(json_t *reqs, size_t k, const char *field)
{
    return json_number_value(json_object_get(json_array_get(reqs, k), field));
}

/* ---- one call ---- */

struct sink {
    struct text text;
    int pieces;
};

static int on_token(void *ud, const char *s, size_t len)
{
    struct sink *k = ud;
    grab((char *)s, 1, len, &k->text);
    k->pieces++;
    return 0;
}

static const char *txt(const struct sink *k) { return k->text.p ? k->text.p : ""; }

static struct llm_config base_cfg(const struct llm_upstream *ups, size_t n)
{
    struct llm_config c = {
        .model = "fake-model",
        .connect_timeout_ms = 1000,
        .first_token_timeout_ms = 3000,
        .idle_timeout_ms = 3000,
        .total_timeout_ms = 8000,
        .upstreams = ups,
        .n_upstreams = n,
        .backoff_ms = 20,
        .breaker_failures = 5,
        .breaker_cooldown_ms = 30000,
    };
    return c;
}

static int run(const struct llm_config *cfg, const char *prompt, struct sink *k,
               struct llm_result *res)
{
    free(k->text.p);                  /* the previous call's text */
    memset(k, 0, sizeof *k);
    struct llm_request req = { .prompt = prompt, .temperature = -1 };
    struct llm_callbacks cb = { on_token, NULL, 20, k };
    int rc = llm_stream(cfg, &req, &cb, res);
    if (rc != 0)
        printf("#   (%s) %s [upstream %s, %d attempt(s)]\n", llm_err_name(res->kind), res->err,
               res->upstream, res->attempts);
    return rc;
}

static const struct llm_upstream_status *status_of(const struct llm_config *cfg,
                                                   const char *name,
                                                   struct llm_upstream_status *buf)
{
    size_t n = llm_upstreams_status(cfg, buf, LLM_MAX_UPSTREAMS);
    for (size_t i = 0; i < n; i++)
        if (strcmp(buf[i].name, name) == 0)
            return &buf[i];
    return NULL;
}

#define NEED_FAKES() REQUIRE(fake[0][0] && fake[1][0] && fake[2][0] && refused[0])

/* ---- failover ---- */

/* The first upstream answers 429 with Retry-After: 1; the answer comes
 * from the second, once, and the first is not asked again before its
 * Retry-After has passed. Ollama first, OpenAI second: providers mix. */
TEST(failover_from_429_honours_retry_after)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(0, "{\"status\": 429, \"retry_after\": \"1\"}");
    knobs(1, "{\"token_ms\": 1}");
    char b1[160];
    snprintf(b1, sizeof b1, "%s/v1", fake[1]);
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0], .order = 1 },
        { .name = "b", .provider = LLM_OPENAI, .base_url = b1, .order = 2 },
    };
    struct llm_config cfg = base_cfg(ups, 2);
    struct sink k = { 0 };
    struct llm_result res;
    const char *prompt = "[[fake answer=\"One answer only\"]] hello";
    CHECK_INT(run(&cfg, prompt, &k, &res), 0);
    CHECK_STR(txt(&k), "One answer only");       /* once: no duplicated text */
    CHECK_STR(res.upstream, "b");
    CHECK_INT(res.attempts, 2);
    CHECK(strstr(res.upstream_url, fake[1] + 7) != NULL);
    CHECK_INT(res.tokens, 3);                     /* OpenAI usage.completion_tokens */
    CHECK(res.prompt_tokens > 0);                 /* usage.prompt_tokens */
    json_t *ra = requests(0), *rb = requests(1);
    CHECK_INT(json_array_size(ra), 1);
    CHECK_INT(json_array_size(rb), 1);
    CHECK_INT(req_num(ra, 0, "status"), 429);
    CHECK_INT(req_num(rb, 0, "status"), 200);
    CHECK(req_num(rb, 0, "started_at") >= req_num(ra, 0, "ended_at") - 1);
    json_decref(ra);
    json_decref(rb);
    /* the OpenAI request asked for usage */
    json_t *st = ctl(1, "GET", "/_fake/stats", NULL);
    CHECK(json_is_true(json_object_get(json_object_get(json_object_get(st, "last_body"),
                                                       "stream_options"), "include_usage")));
    json_decref(st);

    /* within a's Retry-After: straight to b, a not asked */
    knobs(0, NULL);                               /* a would answer now, but said 1 s */
    CHECK_INT(run(&cfg, prompt, &k, &res), 0);
    CHECK_STR(res.upstream, "b");
    CHECK_INT(res.attempts, 1);
    CHECK_INT(nrequests(0), 0);
    /* after it: a again (one failure does not open its breaker) */
    sleep_ms(1100);
    CHECK_INT(run(&cfg, prompt, &k, &res), 0);
    CHECK_STR(res.upstream, "a");
    CHECK_STR(txt(&k), "One answer only");
    CHECK_INT(res.tokens, 3);                     /* Ollama eval_count */
    CHECK(res.prompt_tokens > 0);                 /* Ollama prompt_eval_count */
    CHECK_INT(nrequests(0), 1);
    free(k.text.p);
}

/* Lets fake i answer normally again after ms (the retry then succeeds). */
struct later { int i, ms; };
static void *reset_later(void *arg)
{
    struct later *l = arg;
    sleep_ms(l->ms);
    knobs(l->i, NULL);
    return NULL;
}

/* One upstream that answers 429 with Retry-After (seconds, then an HTTP
 * date): the retry on the same upstream waits for it. */
TEST(retry_on_one_upstream_waits_for_retry_after)
{
    NEED_FAKES();
    for (int form = 0; form < 2; form++) {
        llm_upstreams_reset();
        char knob[160];
        if (form == 0) {
            snprintf(knob, sizeof knob, "{\"status\": 429, \"retry_after\": \"1\"}");
        } else {
            char date[64];
            time_t t = time(NULL) + 2;
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
            snprintf(knob, sizeof knob, "{\"status\": 503, \"retry_after\": \"%s\"}", date);
        }
        knobs(2, knob);
        char b2[160];
        snprintf(b2, sizeof b2, "%s/v1", fake[2]);
        struct llm_upstream ups[] = {
            { .name = "only", .provider = form ? LLM_OPENAI : LLM_OLLAMA,
              .base_url = form ? b2 : fake[2] },
        };
        struct llm_config cfg = base_cfg(ups, 1);
        cfg.max_attempts = 2;
        pthread_t th;
        struct later l = { 2, 300 };
        pthread_create(&th, NULL, reset_later, &l);
        struct sink k = { 0 };
        struct llm_result res;
        int64_t t0 = mono_ms();
        CHECK_INT(run(&cfg, "[[fake tokens=4 token_ms=1]] again", &k, &res), 0);
        int64_t took = mono_ms() - t0;
        pthread_join(th, NULL);
        CHECK_INT(res.attempts, 2);
        CHECK_INT(k.pieces, 4);
        CHECK(took >= 950);                       /* Retry-After honoured */
        CHECK(took < 4000);
        if (took < 950 || took >= 4000)
            printf("#   form %d took %lld ms\n", form, (long long)took);
        json_t *r = requests(2);
        CHECK_INT(json_array_size(r), 1);         /* the log was reset after the 429 */
        json_decref(r);
        free(k.text.p);
    }
}

/* A refused connection, then a first-token timeout: each goes on to the
 * next upstream. */
TEST(failover_from_refused_and_from_first_token_timeout)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(1, "{\"token_ms\": 1, \"tokens\": 3}");
    knobs(2, "{\"first_ms\": 3000}");
    struct llm_upstream ups[] = {
        { .name = "dead", .provider = LLM_OLLAMA, .base_url = refused },
        { .name = "slow", .provider = LLM_OLLAMA, .base_url = fake[2] },
        { .name = "good", .provider = LLM_OLLAMA, .base_url = fake[1] },
    };
    struct llm_config cfg = base_cfg(ups, 3);
    cfg.first_token_timeout_ms = 300;
    struct sink k = { 0 };
    struct llm_result res;
    int64_t t0 = mono_ms();
    CHECK_INT(run(&cfg, "refused then slow", &k, &res), 0);
    CHECK(mono_ms() - t0 < 2500);
    CHECK_STR(res.upstream, "good");
    CHECK_INT(res.attempts, 3);
    CHECK_INT(k.pieces, 3);
    struct llm_upstream_status sb[LLM_MAX_UPSTREAMS];
    const struct llm_upstream_status *s = status_of(&cfg, "dead", sb);
    REQUIRE(s);
    CHECK_INT(s->errors[LLM_UPERR_CONNECT], 1);
    CHECK_INT(s->requests, 1);
    s = status_of(&cfg, "slow", sb);
    REQUIRE(s);
    CHECK_INT(s->errors[LLM_UPERR_TIMEOUT], 1);
    s = status_of(&cfg, "good", sb);
    REQUIRE(s);
    CHECK_INT(s->successes, 1);
    CHECK(s->last_first_token_ms >= 0);
    CHECK(s->mean_first_token_ms >= 0);
    CHECK_STR(s->breaker, "closed");
    free(k.text.p);
}

/* Tokens reached the caller, then the stream broke: the error is
 * reported, the other upstream is never asked. Ollama cut, OpenAI error. */
TEST(no_failover_after_the_first_token)
{
    NEED_FAKES();
    for (int pv = 0; pv < 2; pv++) {
        llm_upstreams_reset();
        knobs(0, pv ? "{\"error_after\": 2, \"token_ms\": 1}" : "{\"drop_after\": 2, \"token_ms\": 1}");
        knobs(1, NULL);
        char b0[160];
        snprintf(b0, sizeof b0, "%s/v1", fake[0]);
        struct llm_upstream ups[] = {
            { .name = "a", .provider = pv ? LLM_OPENAI : LLM_OLLAMA, .base_url = pv ? b0 : fake[0] },
            { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1] },
        };
        struct llm_config cfg = base_cfg(ups, 2);
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run(&cfg, "[[fake tokens=6]] break after two", &k, &res), -1);
        CHECK_INT(res.kind, pv ? LLM_ERR_UPSTREAM : LLM_ERR_CUT);
        CHECK_INT(k.pieces, 2);
        CHECK_INT(res.attempts, 1);
        CHECK_STR(res.upstream, "a");
        CHECK_INT(nrequests(1), 0);               /* b never called */
        struct llm_upstream_status sb[LLM_MAX_UPSTREAMS];
        const struct llm_upstream_status *s = status_of(&cfg, "a", sb);
        REQUIRE(s);
        CHECK_INT(s->errors[pv ? LLM_UPERR_OTHER : LLM_UPERR_CUT], 1);
        CHECK_INT(s->consecutive_failures, 0);    /* it answered: no breaker failure */
        free(k.text.p);
    }
}

/* 4xx other than 429: the request is bad, not retried. */
TEST(client_errors_are_not_retried)
{
    NEED_FAKES();
    int codes[] = { 400, 404 };
    for (int c = 0; c < 2; c++) {
        llm_upstreams_reset();
        char knob[64];
        snprintf(knob, sizeof knob, "{\"status\": %d}", codes[c]);
        knobs(0, knob);
        knobs(1, NULL);
        struct llm_upstream ups[] = {
            { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0] },
            { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1] },
        };
        struct llm_config cfg = base_cfg(ups, 2);
        cfg.max_attempts = 5;
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run(&cfg, "bad request", &k, &res), -1);
        CHECK_INT(res.kind, LLM_ERR_HTTP);
        CHECK_INT(res.http_status, codes[c]);
        CHECK_INT(res.attempts, 1);
        CHECK_INT(nrequests(0), 1);
        CHECK_INT(nrequests(1), 0);
        free(k.text.p);
    }
    /* and 5xx everywhere: bounded attempts, the last error reported */
    llm_upstreams_reset();
    knobs(0, "{\"status\": 500}");
    knobs(1, "{\"status\": 503}");
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0] },
        { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1] },
    };
    struct llm_config cfg = base_cfg(ups, 2);
    cfg.max_attempts = 3;
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, "all down", &k, &res), -1);
    CHECK_INT(res.attempts, 3);
    CHECK_INT(nrequests(0) + nrequests(1), 3);
    CHECK(strstr(res.err, "after 3 attempts: a, b, a") != NULL);
    free(k.text.p);
}

/* Two consecutive failures open a's breaker: requests skip it; after the
 * cool-down one probe goes through (fails: open again), then after the
 * next cool-down a probe succeeds and closes it. */
TEST(breaker_opens_skips_and_probes_back)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(0, "{\"status\": 503}");
    knobs(1, "{\"token_ms\": 1, \"tokens\": 2}");
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0] },
        { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1] },
    };
    struct llm_config cfg = base_cfg(ups, 2);
    cfg.breaker_failures = 2;
    cfg.breaker_cooldown_ms = 400;
    struct sink k = { 0 };
    struct llm_result res;
    struct llm_upstream_status sb[LLM_MAX_UPSTREAMS];
    for (int i = 0; i < 2; i++) {
        CHECK_INT(run(&cfg, "trip", &k, &res), 0);
        CHECK_INT(res.attempts, 2);
        CHECK_STR(res.upstream, "b");
    }
    const struct llm_upstream_status *s = status_of(&cfg, "a", sb);
    REQUIRE(s);
    CHECK_STR(s->breaker, "open");
    CHECK_INT(s->consecutive_failures, 2);
    CHECK_INT(s->errors[LLM_UPERR_HTTP_5XX], 2);
    /* open: skipped */
    CHECK_INT(run(&cfg, "skip", &k, &res), 0);
    CHECK_INT(res.attempts, 1);
    CHECK_STR(res.upstream, "b");
    CHECK_INT(nrequests(0), 2);
    /* cool-down over: one probe, which fails -> open again */
    sleep_ms(450);
    CHECK_INT(run(&cfg, "probe fails", &k, &res), 0);
    CHECK_INT(res.attempts, 2);
    CHECK_INT(nrequests(0), 3);
    s = status_of(&cfg, "a", sb);
    REQUIRE(s);
    CHECK_STR(s->breaker, "open");
    CHECK_INT(run(&cfg, "skip again", &k, &res), 0);
    CHECK_INT(nrequests(0), 3);
    /* a recovers; after the cool-down the probe succeeds and closes it */
    json_decref(ctl(0, "POST", "/_fake/config", "{\"status\": null}"));
    sleep_ms(450);
    CHECK_INT(run(&cfg, "probe works", &k, &res), 0);
    CHECK_STR(res.upstream, "a");
    CHECK_INT(res.attempts, 1);
    s = status_of(&cfg, "a", sb);
    REQUIRE(s);
    CHECK_STR(s->breaker, "closed");
    CHECK_INT(s->consecutive_failures, 0);
    CHECK_INT(run(&cfg, "closed", &k, &res), 0);
    CHECK_STR(res.upstream, "a");
    free(k.text.p);
}

/* A lone upstream's breaker never refuses a request (nothing else is
 * eligible), so the single-upstream behaviour stays as it was. */
TEST(lone_upstream_is_asked_even_when_open)
{
    NEED_FAKES();
    llm_upstreams_reset();
    struct llm_config cfg = base_cfg(NULL, 0);
    cfg.provider = LLM_OLLAMA;
    cfg.base_url = refused;
    cfg.breaker_failures = 1;
    struct sink k = { 0 };
    struct llm_result res;
    for (int i = 0; i < 3; i++) {
        CHECK_INT(run(&cfg, "x", &k, &res), -1);
        CHECK_INT(res.kind, LLM_ERR_CONNECT);
        CHECK_INT(res.attempts, 1);
        CHECK_STR(res.upstream, "default");
    }
    struct llm_upstream_status sb[LLM_MAX_UPSTREAMS];
    const struct llm_upstream_status *s = status_of(&cfg, "default", sb);
    REQUIRE(s);
    CHECK_STR(s->breaker, "open");
    CHECK_INT(s->requests, 3);
    free(k.text.p);
}

/* Only upstreams serving the model are asked; none: a config error. */
TEST(models_pick_the_eligible_upstreams)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(0, NULL);
    knobs(1, NULL);
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0], .models = "llama3.2, qwen2.5:0.5b" },
        { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1], .models = "fake-model" },
    };
    struct llm_config cfg = base_cfg(ups, 2);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, "[[fake tokens=1]] m", &k, &res), 0);
    CHECK_STR(res.upstream, "b");
    cfg.model = "llama3.2:latest";                 /* "llama3.2" is the same model */
    CHECK_INT(run(&cfg, "[[fake tokens=1]] m", &k, &res), 0);
    CHECK_STR(res.upstream, "a");
    cfg.model = "gpt-5";
    CHECK_INT(run(&cfg, "m", &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_CONFIG);
    CHECK(strstr(res.err, "gpt-5") != NULL);
    CHECK_INT(res.attempts, 0);
    free(k.text.p);
}

/* The multi-driven path (as core/genloop.c drives it): with
 * llm_stream_set_multi the stream retries on the same easy handle; the
 * PRIVATE pointer survives. */
static int drive(struct llm_stream *s, CURLM *m, int use_multi)
{
    CURL *e = llm_stream_easy(s);
    if (!e)
        return llm_stream_finish(s);
    if (use_multi)
        llm_stream_set_multi(s, m);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)s);
    curl_multi_add_handle(m, e);
    int64_t deadline = mono_ms() + 8000;
    while (!llm_stream_ended(s) && mono_ms() < deadline) {
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct llm_stream *p = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            if (p != s)
                printf("#   CURLINFO_PRIVATE lost\n");
            llm_stream_transfer_done(s, msg->data.result);
            break;
        }
        if (llm_stream_poll(s, mono_ms()))
            break;
        curl_multi_poll(m, NULL, 0, llm_stream_wait_ms(s, mono_ms()), NULL);
    }
    curl_multi_remove_handle(m, e);
    return llm_stream_finish(s);
}

TEST(multi_driven_stream_fails_over)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(0, "{\"status\": 429}");
    knobs(1, "{\"token_ms\": 1, \"tokens\": 4}");
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0] },
        { .name = "b", .provider = LLM_OLLAMA, .base_url = fake[1] },
    };
    struct llm_config cfg = base_cfg(ups, 2);
    CURLM *m = curl_multi_init();
    struct sink k = { 0 };
    memset(&k, 0, sizeof k);
    struct llm_request req = { .prompt = "multi", .temperature = -1 };
    struct llm_callbacks cb = { on_token, NULL, 20, &k };
    struct llm_result res;
    struct llm_stream *s = llm_stream_begin(&cfg, &req, &cb, &res);
    REQUIRE(s);
    CHECK_INT(drive(s, m, 1), 0);
    CHECK_INT(res.attempts, 2);
    CHECK_STR(res.upstream, "b");
    CHECK_INT(k.pieces, 4);
    /* without llm_stream_set_multi: one attempt, as before */
    free(k.text.p);
    memset(&k, 0, sizeof k);
    s = llm_stream_begin(&cfg, &req, &cb, &res);
    REQUIRE(s);
    CHECK_INT(drive(s, m, 0), -1);
    CHECK_INT(res.attempts, 1);
    CHECK_INT(res.http_status, 429);
    curl_multi_cleanup(m);
    free(k.text.p);
}

/* The total limit bounds retries: a long Retry-After is not waited for. */
TEST(retries_stay_within_the_total_timeout)
{
    NEED_FAKES();
    llm_upstreams_reset();
    knobs(0, "{\"status\": 429, \"retry_after\": \"30\"}");
    struct llm_upstream ups[] = {
        { .name = "a", .provider = LLM_OLLAMA, .base_url = fake[0] },
    };
    struct llm_config cfg = base_cfg(ups, 1);
    cfg.max_attempts = 3;
    cfg.total_timeout_ms = 1500;
    struct sink k = { 0 };
    struct llm_result res;
    int64_t t0 = mono_ms();
    CHECK_INT(run(&cfg, "x", &k, &res), -1);
    CHECK(mono_ms() - t0 < 1000);
    CHECK_INT(res.kind, LLM_ERR_HTTP);
    CHECK_INT(res.http_status, 429);
    CHECK(strstr(res.err, "no time left") != NULL);
    free(k.text.p);
}

/* ---- what is shown ---- */

TEST(urls_and_keys_are_never_shown)
{
    char out[256];
    llm_safe_url("https://user:s3cretpw@example.com:8443/v1?key=zzz#f", out, sizeof out);
    CHECK_STR(out, "https://example.com:8443/v1");
    llm_upstreams_reset();
    struct llm_upstream ups[] = {
        { .name = "cloud", .provider = LLM_OPENAI, .base_url = "http://u:pw-123456@127.0.0.1:9/v1",
          .api_key = "sk-verysecretkey" },
    };
    struct llm_config cfg = base_cfg(ups, 1);
    char *prom = llm_upstreams_prom(&cfg, "parley");
    REQUIRE(prom);
    CHECK(strstr(prom, "parley_upstream_breaker_state{upstream=\"cloud\",url=\"http://127.0.0.1:9/v1\",state=\"closed\"} 1") != NULL);
    CHECK(strstr(prom, "pw-123456") == NULL);
    CHECK(strstr(prom, "verysecret") == NULL);
    free(prom);
}

/* ---- PARLEY_UPSTREAMS ---- */

TEST(config_parses_upstreams)
{
    struct parley_config c;
    char err[512];
    REQUIRE(config_defaults(&c) == 0);
    setenv("UPFAIL_TEST_KEY", "sk-from-env-1234", 1);
    CHECK_INT(config_set(&c, "PARLEY_UPSTREAMS",
                         "name=local provider=ollama url=http://127.0.0.1:11434/ models=llama3.2,qwen2.5 order=2;"
                         " name=cloud provider=openai url=https://api.example.com/v1 key_env=UPFAIL_TEST_KEY"
                         " order=1 ;", err, sizeof err), 0);
    CHECK_INT(c.n_up, 2);
    CHECK_STR(c.up[0].name, "local");
    CHECK_STR(c.up[0].base_url, "http://127.0.0.1:11434");
    CHECK_STR(c.up[0].models, "llama3.2,qwen2.5");
    CHECK_INT(c.up[0].order, 2);
    CHECK(c.up[0].api_key == NULL);
    CHECK_INT(c.up[1].provider, LLM_OPENAI);
    CHECK_STR(c.up[1].api_key, "sk-from-env-1234");
    CHECK_INT(config_set(&c, "PARLEY_UPSTREAM_ATTEMPTS", "4", err, sizeof err), 0);
    CHECK_INT(config_set(&c, "PARLEY_BREAKER_FAILURES", "3", err, sizeof err), 0);
    struct llm_config l;
    config_llm(&c, &l);
    CHECK_INT(l.n_upstreams, 2);
    CHECK(l.upstreams == c.up);
    CHECK_INT(l.max_attempts, 4);
    CHECK_INT(l.breaker_failures, 3);
    CHECK_INT(l.breaker_cooldown_ms, 30000);
    CHECK_INT(l.backoff_ms, 200);
    /* empty: back to the single upstream */
    CHECK_INT(config_set(&c, "PARLEY_UPSTREAMS", "", err, sizeof err), 0);
    CHECK_INT(c.n_up, 0);
    config_llm(&c, &l);
    CHECK_INT(l.n_upstreams, 0);
    CHECK(l.base_url == c.ollama_server);
    config_cleanup(&c);
    unsetenv("UPFAIL_TEST_KEY");
}

TEST(config_refuses_bad_upstreams)
{
    static const struct { const char *v, *msg; } bad[] = {
        { "name=a provider=ollama", "url is required" },
        { "provider=ollama url=http://h", "name is required" },
        { "name=a url=http://h", "provider is required" },
        { "name=a provider=claude url=http://h", "provider must be ollama or openai" },
        { "name=a provider=ollama url=ftp://secret@h", "url must start with http" },
        { "name=a provider=ollama url=http://h; name=a provider=ollama url=http://g", "two upstreams are named 'a'" },
        { "name=a provider=ollama url=http://h order=x", "order must be an integer" },
        { "name=a provider=ollama url=http://h colour=red", "unknown field 'colour'" },
        { "name=a provider=openai url=http://h key_env=UPFAIL_UNSET_VAR", "UPFAIL_UNSET_VAR, which is not set" },
        { "name=a provider=ollama url=http://h key_env=OPENAI_API_KEY", "key_env is for openai" },
        { "name=a provider=openai url=http://h key_env=sk-1234", "key_env must be the name" },
        { "name=a/b provider=ollama url=http://h", "name must be" },
        { " ; ;", "no upstream" },
        { "name=a provider=ollama url", "expected key=value" },
    };
    struct parley_config c;
    char err[512];
    REQUIRE(config_defaults(&c) == 0);
    unsetenv("UPFAIL_UNSET_VAR");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = config_set(&c, "PARLEY_UPSTREAMS", bad[i].v, err, sizeof err);
        CHECK_INT(rc, -1);
        if (!strstr(err, bad[i].msg) || strncmp(err, "PARLEY_UPSTREAMS: ", 18) != 0)
            printf("#   '%s' -> '%s' (wanted '%s')\n", bad[i].v, err, bad[i].msg);
        CHECK(strstr(err, bad[i].msg) != NULL);
        CHECK(strncmp(err, "PARLEY_UPSTREAMS: ", 18) == 0);
        CHECK(strstr(err, "secret") == NULL);
        CHECK_INT(c.n_up, 0);                     /* nothing half-set */
    }
    CHECK_INT(config_set(&c, "PARLEY_BREAKER_FAILURES", "0", err, sizeof err), -1);
    CHECK(strstr(err, "PARLEY_BREAKER_FAILURES") != NULL);
    CHECK_INT(config_set(&c, "PARLEY_UPSTREAM_ATTEMPTS", "-1", err, sizeof err), -1);
    config_cleanup(&c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (llm_global_init() < 0)
        return 2;
    for (int i = 0; i < NFAKE; i++)
        start_fake(i);
    atexit(stop_fakes);
    find_refused();
    RUN(failover_from_429_honours_retry_after);
    RUN(retry_on_one_upstream_waits_for_retry_after);
    RUN(failover_from_refused_and_from_first_token_timeout);
    RUN(no_failover_after_the_first_token);
    RUN(client_errors_are_not_retried);
    RUN(breaker_opens_skips_and_probes_back);
    RUN(lone_upstream_is_asked_even_when_open);
    RUN(models_pick_the_eligible_upstreams);
    RUN(multi_driven_stream_fails_over);
    RUN(retries_stay_within_the_total_timeout);
    RUN(urls_and_keys_are_never_shown);
    RUN(config_parses_upstreams);
    RUN(config_refuses_bad_upstreams);
    llm_upstreams_reset();
    return th_done();
}
