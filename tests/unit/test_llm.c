/* test_llm.c — core/llm.c against the simulated upstream (tests/fake-llm)
 * and against canned bytes from a local socket for wire-format corners.
 *
 * The fake is the one tests/run.sh exports as FAKE_LLM_URL; without it this
 * program starts its own (node tests/fake-llm/server.mjs, run from the repo
 * root) and stops it at exit. Every case talks only to 127.0.0.1, sets its
 * fault knobs per request with a [[fake ...]] directive, and finishes within
 * a few seconds. Most cases run once per provider (BOTH()).
 */
#include "th.h"
#include "llm.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <curl/curl.h>
#include <jansson.h>

static char fake[256];            /* the fake's base URL, "" when there is none */
static pid_t fake_pid;

#define NEED_FAKE() REQUIRE(fake[0] != '\0')
#define BOTH(fn) \
    TEST(fn##_ollama) { fn(LLM_OLLAMA); } \
    TEST(fn##_openai) { fn(LLM_OPENAI); }

/* ---- the fake's control endpoints, over libcurl ---- */

struct text {
    char *p;
    size_t len;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    char *p = realloc(t->p, t->len + n + 1);
    if (!p)
        abort();
    memcpy(p + t->len, s, n);
    t->p = p;
    t->len += n;
    t->p[t->len] = '\0';
}

static size_t grab(char *p, size_t size, size_t n, void *ud)
{
    text_add(ud, p, size * n);
    return size * n;
}

/* method path [body] on the fake; the parsed JSON answer (new) or NULL. */
static json_t *ctl(const char *method, const char *path, json_t *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", fake, path);
    struct text out = { 0 };
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    if (payload)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, payload);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, grab);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    free(payload);
    json_t *j = NULL;
    if (rc == CURLE_OK && out.p)
        j = json_loadb(out.p, out.len, JSON_DECODE_ANY, NULL);
    if (!j)
        printf("#   %s %s failed: %s\n", method, path,
               rc ? curl_easy_strerror(rc) : out.p ? out.p : "(empty)");
    free(out.p);
    return j;
}

/* The text the fake answers to prompt with n tokens (malloc'd, "" on error). */
static char *expected(const char *prompt, int n)
{
    json_t *q = json_pack("{s:s, s:i}", "prompt", prompt, "tokens", n);
    json_t *a = ctl("POST", "/_fake/answer", q);
    json_decref(q);
    const char *t = json_string_value(json_object_get(a, "text"));
    char *s = strdup(t ? t : "");
    json_decref(a);
    return s;
}

static json_t *stats(void) { return ctl("GET", "/_fake/stats", NULL); }

/* ---- running one call ---- */

struct sink {
    struct text text;
    int pieces, ticks;
    int abort_at_piece;           /* > 0: on_token returns 1 at this piece */
    int abort_at_tick;            /* > 0: on_tick returns 1 at this tick */
};

static int sink_token(void *ud, const char *s, size_t len)
{
    struct sink *k = ud;
    if (len == 0)
        printf("#   on_token called with len 0\n");
    text_add(&k->text, s, len);
    k->pieces++;
    return k->abort_at_piece > 0 && k->pieces >= k->abort_at_piece;
}

static int sink_tick(void *ud)
{
    struct sink *k = ud;
    k->ticks++;
    return k->abort_at_tick > 0 && k->ticks >= k->abort_at_tick;
}

static const char *sink_text(const struct sink *k) { return k->text.p ? k->text.p : ""; }

static char base_ollama[300], base_openai[300];

/* A config for the fake with generous limits; cases tighten what they test. */
static struct llm_config cfg_for(enum llm_provider p)
{
    snprintf(base_ollama, sizeof base_ollama, "%s", fake);
    snprintf(base_openai, sizeof base_openai, "%s/v1", fake);
    struct llm_config c = {
        .provider = p,
        .base_url = p == LLM_OLLAMA ? base_ollama : base_openai,
        .api_key = NULL,
        .model = "fake-model",
        .connect_timeout_ms = 2000,
        .first_token_timeout_ms = 4000,
        .idle_timeout_ms = 4000,
        .total_timeout_ms = 10000,
    };
    return c;
}

static struct llm_request prompt_req(const char *prompt)
{
    struct llm_request r = { .prompt = prompt, .temperature = -1, .max_tokens = 0 };
    return r;
}

/* Streams and prints the outcome on failure so a broken case explains itself. */
static int run(const struct llm_config *cfg, const struct llm_request *req,
               struct sink *k, struct llm_result *res)
{
    struct llm_callbacks cb = { sink_token, sink_tick, 20, k };
    int rc = llm_stream(cfg, req, &cb, res);
    if (rc != 0)
        printf("#   (%s) %s\n", llm_err_name(res->kind), res->err);
    return rc;
}

static void sink_free(struct sink *k) { free(k->text.p); }

/* A word no other request carries, to find ours in the fake's stats. */
static const char *marker(void)
{
    static char m[64];
    static int n;
    snprintf(m, sizeof m, "mark-%ld-%d", (long)getpid(), ++n);
    return m;
}

/* Streams req (whose text contains mark) and returns the fake's stats as
 * they were right after it: last_body, last_path, last_headers are ours.
 * The fake keeps only the latest request, so when another client of a
 * shared fake got in between, the call is made again (a few times). */
static json_t *run_recorded(const struct llm_config *cfg, const struct llm_request *req,
                            const char *mark, struct sink *k, struct llm_result *res, int *rc)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        free(k->text.p);
        memset(k, 0, sizeof *k);
        *rc = run(cfg, req, k, res);
        json_t *st = stats();
        char *body = json_dumps(json_object_get(st, "last_body"), JSON_ENCODE_ANY);
        int ours = body && strstr(body, mark);
        free(body);
        if (ours)
            return st;
        json_decref(st);
    }
    printf("#   the fake's stats never showed the request marked %s\n", mark);
    return NULL;
}

static int contains(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

/* ---- answers ---- */

static void full_answer_prompt(enum llm_provider p)
{
    NEED_FAKE();
    const char *prompt = "[[fake tokens=9 token_ms=2]] Why is my order late?";
    char *want = expected(prompt, 9);
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), 0);
    CHECK_INT(res.kind, LLM_OK);
    CHECK(strlen(want) > 0);
    CHECK_STR(sink_text(&k), want);
    CHECK_INT(k.pieces, 9);
    CHECK_INT(res.tokens, 9);
    CHECK(res.prompt_tokens > 0);
    CHECK_INT(res.http_status, 200);
    CHECK_STR(res.model, "fake-model");
    CHECK(res.first_token_ms >= 0);
    CHECK(res.total_ms >= res.first_token_ms);
    CHECK_STR(res.err, "");
    CHECK(k.ticks >= 1);          /* at least after the tokens */
    free(want);
    sink_free(&k);
}
BOTH(full_answer_prompt)

static void full_answer_messages(enum llm_provider p)
{
    NEED_FAKE();
    char last[128];
    const char *mark = marker();
    snprintf(last, sizeof last, "And what about the refund? [[fake tokens=11 token_ms=1]] %s", mark);
    struct llm_message msgs[] = {
        { "system", "You are terse." },
        { "user", "Hello" },
        { "assistant", "Hi, how can I help?" },
        { "user", last },
    };
    char *want = expected(last, 11);
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = { .messages = msgs, .n_messages = 4, .temperature = -1 };
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    CHECK_STR(sink_text(&k), want);
    CHECK_INT(res.tokens, 11);
    CHECK_STR(json_string_value(json_object_get(st, "last_path")),
              p == LLM_OLLAMA ? "/api/chat" : "/v1/chat/completions");
    json_decref(st);
    free(want);
    sink_free(&k);
}
BOTH(full_answer_messages)

/* A long answer with every awkward word of the fake's list in it. */
static void long_answer(enum llm_provider p)
{
    NEED_FAKE();
    const char *prompt = "[[fake tokens=400 token_ms=0]] tell me everything";
    char *want = expected(prompt, 400);
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), 0);
    CHECK_STR(sink_text(&k), want);
    CHECK_INT(res.tokens, 400);
    CHECK(contains(want, "\"") && contains(want, "\\") && contains(want, "\n"));
    free(want);
    sink_free(&k);
}
BOTH(long_answer)

/* The knob `answer` streams an exact text. */
static void exact_answer(enum llm_provider p)
{
    NEED_FAKE();
    const char *prompt = "[[fake answer=\"Ça va? \\\"yes\\\" \\\\o/ 🚀\\nbye\" token_ms=0]] x";
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), 0);
    CHECK_STR(sink_text(&k), "Ça va? \"yes\" \\o/ 🚀\nbye");
    sink_free(&k);
}
BOTH(exact_answer)

/* ---- request bodies ---- */

static void body_prompt(enum llm_provider p)
{
    NEED_FAKE();
    char prompt[128];
    const char *mark = marker();
    snprintf(prompt, sizeof prompt, "[[fake tokens=3 token_ms=0]] Body check: \"café\" \\ %s", mark);
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req(prompt);
    req.system = "Answer in French.";
    req.model = "other-model:7b";
    req.temperature = 0.25;
    req.max_tokens = 77;
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    CHECK_STR(res.model, "other-model:7b");
    json_t *b = json_object_get(st, "last_body");
    REQUIRE(json_is_object(b));
    CHECK_STR(json_string_value(json_object_get(b, "model")), "other-model:7b");
    CHECK(json_is_true(json_object_get(b, "stream")));
    if (p == LLM_OLLAMA) {
        CHECK_STR(json_string_value(json_object_get(b, "prompt")), prompt);
        CHECK_STR(json_string_value(json_object_get(b, "system")), "Answer in French.");
        json_t *o = json_object_get(b, "options");
        CHECK(json_number_value(json_object_get(o, "temperature")) == 0.25);
        CHECK_INT(json_integer_value(json_object_get(o, "num_predict")), 77);
        CHECK(json_object_get(b, "messages") == NULL);
    } else {
        json_t *m = json_object_get(b, "messages");
        CHECK_INT(json_array_size(m), 2);
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "content")),
                  "Answer in French.");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 1), "role")), "user");
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, 1), "content")), prompt);
        CHECK(json_number_value(json_object_get(b, "temperature")) == 0.25);
        CHECK_INT(json_integer_value(json_object_get(b, "max_tokens")), 77);
        CHECK(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")));
    }
    json_decref(st);
    sink_free(&k);
}
BOTH(body_prompt)

/* Unset temperature and max_tokens are not sent; the config's model is. */
static void body_defaults(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    char prompt[128];
    const char *mark = marker();
    snprintf(prompt, sizeof prompt, "[[fake tokens=2 token_ms=0]] defaults %s", mark);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    json_t *b = json_object_get(st, "last_body");
    REQUIRE(json_is_object(b));
    CHECK_STR(json_string_value(json_object_get(b, "model")), "fake-model");
    CHECK(json_object_get(b, "temperature") == NULL);
    CHECK(json_object_get(b, "max_tokens") == NULL);
    CHECK(json_object_get(b, "options") == NULL);
    CHECK(json_object_get(b, "system") == NULL);
    if (p == LLM_OPENAI)
        CHECK_INT(json_array_size(json_object_get(b, "messages")), 1);
    json_decref(st);
    sink_free(&k);
}
BOTH(body_defaults)

static void body_messages(enum llm_provider p)
{
    NEED_FAKE();
    char last[128];
    const char *mark = marker();
    snprintf(last, sizeof last, "[[fake tokens=2 token_ms=0]] go on %s", mark);
    struct llm_message msgs[] = {
        { "user", "Quote: \"x\" and 日本語" },
        { "assistant", "back\\slash\nnewline" },
        { "user", last },
    };
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = { .messages = msgs, .n_messages = 3, .system = "Be kind.",
                               .temperature = 0, .max_tokens = 5 };
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    json_t *b = json_object_get(st, "last_body");
    json_t *m = json_object_get(b, "messages");
    REQUIRE(json_array_size(m) == 4);      /* the system message comes first */
    CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system");
    CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "content")), "Be kind.");
    for (int i = 0; i < 3; i++) {
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, i + 1), "role")), msgs[i].role);
        CHECK_STR(json_string_value(json_object_get(json_array_get(m, i + 1), "content")),
                  msgs[i].content);
    }
    CHECK(json_is_true(json_object_get(b, "stream")));
    CHECK(json_object_get(b, "prompt") == NULL);
    json_t *t = p == LLM_OLLAMA ? json_object_get(json_object_get(b, "options"), "temperature")
                                : json_object_get(b, "temperature");
    CHECK(json_is_number(t) && json_number_value(t) == 0);   /* 0 is a temperature */
    json_decref(st);
    sink_free(&k);

    /* a conversation that brings its own system message keeps it alone */
    mark = marker();
    snprintf(last, sizeof last, "[[fake tokens=1]] hi %s", mark);
    struct llm_message own[] = { { "system", "Mine." }, { "user", last } };
    struct llm_request req2 = { .messages = own, .n_messages = 2, .system = "Other.",
                                .temperature = -1 };
    struct sink k2 = { 0 };
    st = run_recorded(&cfg, &req2, mark, &k2, &res, &rc);
    CHECK_INT(rc, 0);
    m = json_object_get(json_object_get(st, "last_body"), "messages");
    CHECK_INT(json_array_size(m), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(m, 0), "content")), "Mine.");
    json_decref(st);
    sink_free(&k2);
}
BOTH(body_messages)

/* ---- URL forms ---- */

/* Streams with base_url and checks that the request went to want_path. */
static void check_url(enum llm_provider p, const char *base_url, int chat, const char *want_path)
{
    struct llm_config cfg = cfg_for(p);
    cfg.base_url = base_url;
    char text[128];
    const char *mark = marker();
    snprintf(text, sizeof text, "[[fake tokens=2 token_ms=0]] url %s", mark);
    struct llm_message msgs[] = { { "user", text } };
    struct llm_request req = prompt_req(text);
    if (chat) {
        req.messages = msgs;
        req.n_messages = 1;
    }
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    const char *path = json_string_value(json_object_get(st, "last_path"));
    if (rc != 0 || !path || strcmp(path, want_path) != 0) {
        printf("#   base %s (%s) reached %s, not %s\n", base_url, chat ? "chat" : "prompt",
               path ? path : "nothing", want_path);
        th_case_failed = 1;
    }
    json_decref(st);
    sink_free(&k);
}

TEST(url_forms_ollama)
{
    NEED_FAKE();
    char u[400];
    snprintf(u, sizeof u, "%s", fake);
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
    check_url(LLM_OLLAMA, u, 1, "/api/chat");
    snprintf(u, sizeof u, "%s/", fake);
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
    check_url(LLM_OLLAMA, u, 1, "/api/chat");
    snprintf(u, sizeof u, "%s/api/generate", fake);    /* as seed 000 configures it */
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
    check_url(LLM_OLLAMA, u, 1, "/api/chat");
    snprintf(u, sizeof u, "%s/api/chat", fake);
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
    check_url(LLM_OLLAMA, u, 1, "/api/chat");
    snprintf(u, sizeof u, "%s/api/", fake);
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
    /* localhost by name */
    const char *port = strrchr(fake, ':');
    REQUIRE(port != NULL);
    snprintf(u, sizeof u, "http://localhost%s/api/generate", port);
    check_url(LLM_OLLAMA, u, 0, "/api/generate");
}

TEST(url_forms_openai)
{
    NEED_FAKE();
    char u[400];
    snprintf(u, sizeof u, "%s/v1", fake);
    check_url(LLM_OPENAI, u, 0, "/v1/chat/completions");
    check_url(LLM_OPENAI, u, 1, "/v1/chat/completions");
    snprintf(u, sizeof u, "%s/v1/", fake);
    check_url(LLM_OPENAI, u, 0, "/v1/chat/completions");
    snprintf(u, sizeof u, "%s/v1/chat/completions", fake);
    check_url(LLM_OPENAI, u, 1, "/v1/chat/completions");
}

/* ---- faults ---- */

static void http_status(enum llm_provider p)
{
    NEED_FAKE();
    static const int codes[] = { 400, 404, 429, 500, 503 };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        char prompt[128], prefix[64];
        snprintf(prompt, sizeof prompt, "[[fake status=%d]] fail please", codes[i]);
        snprintf(prefix, sizeof prefix, "upstream returned HTTP %d: ", codes[i]);
        struct llm_config cfg = cfg_for(p);
        struct llm_request req = prompt_req(prompt);
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run(&cfg, &req, &k, &res), -1);
        CHECK_INT(res.kind, LLM_ERR_HTTP);
        CHECK_INT(res.http_status, codes[i]);
        /* the upstream's own message follows the prefix */
        CHECK(strncmp(res.err, prefix, strlen(prefix)) == 0);
        CHECK(strlen(res.err) > strlen(prefix) + 3);
        CHECK_INT(k.pieces, 0);
        CHECK_INT(res.first_token_ms, -1);
        sink_free(&k);
    }
}
BOTH(http_status)

/* An unknown model: the upstream's not-found message, quoted as it says it. */
static void http_404_message(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake status=404]] where is it");
    req.model = "nosuch-model";
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_HTTP);
    CHECK(contains(res.err, "nosuch-model"));
    sink_free(&k);
}
BOTH(http_404_message)

static void midstream_error(enum llm_provider p)
{
    NEED_FAKE();
    const char *prompt = "[[fake tokens=8 token_ms=1 error_after=3]] break later";
    char *want = expected(prompt, 8);
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_UPSTREAM);
    CHECK_INT(k.pieces, 3);
    CHECK(strncmp(want, sink_text(&k), k.text.len) == 0);    /* a prefix of the answer */
    CHECK(contains(res.err, "after 3 tokens"));
    CHECK(strlen(res.err) > strlen("upstream error after 3 tokens: ") + 3);
    CHECK_INT(res.http_status, 200);
    free(want);
    sink_free(&k);
}
BOTH(midstream_error)

static void malformed(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake tokens=8 token_ms=1 malformed_after=2]] garble");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_MALFORMED);
    CHECK_INT(k.pieces, 2);
    CHECK(contains(res.err, "after 2 tokens"));
    sink_free(&k);
}
BOTH(malformed)

static void dropped(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake tokens=8 token_ms=1 drop_after=3]] cut me");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_CUT);
    CHECK_INT(k.pieces, 3);
    CHECK(contains(res.err, "closed the connection"));
    CHECK(contains(res.err, "3 tokens"));
    sink_free(&k);
}
BOTH(dropped)

static void hang_idle_timeout(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    cfg.idle_timeout_ms = 300;
    struct llm_request req = prompt_req("[[fake tokens=8 token_ms=1 hang_after=2]] hang");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_TIMEOUT_IDLE);
    CHECK_INT(k.pieces, 2);
    CHECK(contains(res.err, "300 ms"));
    CHECK(res.total_ms >= 300 && res.total_ms < 2000);
    CHECK(k.ticks >= 5);          /* ticking while it waited */
    sink_free(&k);
}
BOTH(hang_idle_timeout)

static void first_token_timeout(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    cfg.first_token_timeout_ms = 250;
    struct llm_request req = prompt_req("[[fake tokens=3 first_ms=3000]] slow start");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_TIMEOUT_FIRST);
    CHECK_STR(res.err, "no first token from the upstream within 250 ms");
    CHECK_INT(k.pieces, 0);
    CHECK_INT(res.first_token_ms, -1);
    CHECK(res.total_ms >= 250 && res.total_ms < 1500);
    sink_free(&k);
}
BOTH(first_token_timeout)

static void total_timeout(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    cfg.total_timeout_ms = 300;
    struct llm_request req = prompt_req("[[fake tokens=200 token_ms=10]] a long one");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_TIMEOUT_TOTAL);
    CHECK(contains(res.err, "300 ms"));
    CHECK(k.pieces > 0 && k.pieces < 200);
    CHECK(res.total_ms >= 300 && res.total_ms < 1500);
    sink_free(&k);
}
BOTH(total_timeout)

/* A slow but steady stream stays inside limits shorter than its whole
 * length: the idle clock restarts at every token. */
static void timeouts_not_hit(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    cfg.first_token_timeout_ms = 400;
    cfg.idle_timeout_ms = 250;
    cfg.total_timeout_ms = 3000;
    const char *prompt = "[[fake tokens=8 first_ms=150 token_ms=100]] steady";
    char *want = expected(prompt, 8);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), 0);
    CHECK_STR(sink_text(&k), want);
    CHECK(res.first_token_ms >= 140);
    CHECK(res.total_ms >= 800);   /* longer than the idle limit many times over */
    free(want);
    sink_free(&k);
}
BOTH(timeouts_not_hit)

/* ---- callbacks ---- */

static void abort_on_token(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake tokens=50 token_ms=20]] stop me");
    struct sink k = { .abort_at_piece = 3 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_ABORTED);
    CHECK_INT(k.pieces, 3);
    CHECK(contains(res.err, "after 3 tokens"));
    CHECK(res.total_ms < 600);    /* the whole answer would take 1 s */
    sink_free(&k);
}
BOTH(abort_on_token)

static void ticks_while_waiting(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake tokens=2 first_ms=400 token_ms=0]] tick");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), 0);
    CHECK(res.first_token_ms >= 380);
    /* tick_ms is 20: about 20 ticks before the first token */
    CHECK(k.ticks >= 12);
    sink_free(&k);

    /* a tick that asks to stop ends the call quickly */
    req = prompt_req("[[fake tokens=2 first_ms=3000]] tick stop");
    struct sink k2 = { .abort_at_tick = 3 };
    CHECK_INT(run(&cfg, &req, &k2, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_ABORTED);
    CHECK_INT(k2.ticks, 3);
    CHECK(res.total_ms < 1000);
    sink_free(&k2);
}
BOTH(ticks_while_waiting)

/* Callbacks may be NULL. */
static void no_callbacks(enum llm_provider p)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(p);
    struct llm_request req = prompt_req("[[fake tokens=4 token_ms=0]] quiet");
    struct llm_result res;
    CHECK_INT(llm_stream(&cfg, &req, NULL, &res), 0);
    CHECK_INT(res.tokens, 4);
    struct llm_callbacks cb = { 0 };
    CHECK_INT(llm_stream(&cfg, &req, &cb, &res), 0);
    CHECK_INT(res.tokens, 4);
}
BOTH(no_callbacks)

/* ---- API keys ---- */

TEST(api_key_openai)
{
    NEED_FAKE();
    static const char key[] = "sk-test-Secret-0123456789";
    static const char wrong[] = "sk-test-Wrong-9876543210";
    char prompt[128];
    const char *mark = marker();
    snprintf(prompt, sizeof prompt, "[[fake tokens=4 token_ms=0 api_key=%s]] key %s", key, mark);
    struct llm_config cfg = cfg_for(LLM_OPENAI);
    struct llm_request req = prompt_req(prompt);
    struct llm_result res;
    struct sink k = { 0 };
    int rc;

    cfg.api_key = key;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(k.pieces, 4);
    json_t *h = json_object_get(st, "last_headers");
    CHECK_STR(json_string_value(json_object_get(h, "authorization")),
              "Bearer sk-test-Secret-0123456789");
    CHECK_STR(json_string_value(json_object_get(h, "accept")), "text/event-stream");
    CHECK_STR(json_string_value(json_object_get(h, "content-type")), "application/json");
    json_decref(st);

    cfg.api_key = wrong;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_HTTP);
    CHECK_INT(res.http_status, 401);
    CHECK(strncmp(res.err, "upstream returned HTTP 401: ", 28) == 0);
    CHECK(!contains(res.err, key) && !contains(res.err, wrong));
    CHECK(!contains(res.err, "Secret-0123") && !contains(res.err, "Wrong-9876"));
    CHECK(!contains(res.err, "Bearer"));

    cfg.api_key = NULL;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_HTTP);
    CHECK_INT(res.http_status, 401);
    CHECK(!contains(res.err, key));
    sink_free(&k);
}

/* An Ollama upstream never receives the key (it may be another service's). */
TEST(api_key_not_sent_to_ollama)
{
    NEED_FAKE();
    struct llm_config cfg = cfg_for(LLM_OLLAMA);
    cfg.api_key = "sk-test-not-for-ollama";
    char prompt[128];
    const char *mark = marker();
    snprintf(prompt, sizeof prompt, "[[fake tokens=2 token_ms=0]] no key here %s", mark);
    struct llm_request req = prompt_req(prompt);
    struct sink k = { 0 };
    struct llm_result res;
    int rc;
    json_t *st = run_recorded(&cfg, &req, mark, &k, &res, &rc);
    CHECK_INT(rc, 0);
    json_t *h = json_object_get(st, "last_headers");
    REQUIRE(json_is_object(h));
    CHECK(json_object_get(h, "authorization") == NULL);
    CHECK_STR(json_string_value(json_object_get(h, "accept")), "application/x-ndjson");
    CHECK_STR(json_string_value(json_object_get(h, "content-type")), "application/json");
    json_decref(st);
    sink_free(&k);
}

/* The key is in no message, whatever fails. */
static void api_key_never_in_errors(enum llm_provider p)
{
    NEED_FAKE();
    static const char key[] = "sk-test-Hidden-55555";
    static const char *const prompts[] = {
        "[[fake status=500]] k", "[[fake tokens=4 token_ms=0 error_after=1]] k",
        "[[fake tokens=4 token_ms=0 malformed_after=1]] k", "[[fake tokens=4 drop_after=1]] k",
    };
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
        struct llm_config cfg = cfg_for(p);
        cfg.api_key = key;
        struct llm_request req = prompt_req(prompts[i]);
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run(&cfg, &req, &k, &res), -1);
        CHECK(res.err[0] != '\0');
        CHECK(!contains(res.err, key) && !contains(res.err, "Hidden"));
        sink_free(&k);
    }
}
BOTH(api_key_never_in_errors)

/* ---- connection failures (no fake needed) ---- */

/* A port on 127.0.0.1 where nothing listens. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static void refused(enum llm_provider p)
{
    int port = closed_port();
    char url[128], where[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, p == LLM_OPENAI ? "/v1" : "");
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    struct llm_config cfg = cfg_for(p);
    cfg.base_url = url;
    cfg.api_key = "sk-test-refused-key";
    struct llm_request req = prompt_req("hello");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_CONNECT);
    CHECK(contains(res.err, where));
    CHECK(contains(res.err, "refused"));
    CHECK(!contains(res.err, "refused-key"));
    CHECK_INT(res.http_status, 0);
    CHECK_INT(res.first_token_ms, -1);
    CHECK(res.total_ms < 1000);
    sink_free(&k);
}
BOTH(refused)

/* A listener whose one-slot backlog is full: the next SYN goes unanswered,
 * so connecting hangs until the connect timeout. */
TEST(connect_timeout)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 0) == 0 &&
            getsockname(lfd, (struct sockaddr *)&a, &len) == 0);
    int filler = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(filler >= 0 && connect(filler, (struct sockaddr *)&a, sizeof a) == 0);
    char url[128], where[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    snprintf(where, sizeof where, "127.0.0.1:%d", ntohs(a.sin_port));
    struct llm_config cfg = cfg_for(LLM_OLLAMA);
    cfg.base_url = url;
    cfg.connect_timeout_ms = 300;
    struct llm_request req = prompt_req("hello");
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run(&cfg, &req, &k, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_CONNECT);
    CHECK(contains(res.err, where));
    CHECK(contains(res.err, "300 ms"));
    CHECK(res.total_ms >= 250 && res.total_ms < 1500);
    close(filler);
    close(lfd);
    sink_free(&k);
}

/* ---- configuration and request errors ---- */

TEST(config_errors)
{
    struct llm_config base = cfg_for(LLM_OLLAMA);
    base.base_url = "http://127.0.0.1:9";
    struct llm_request req = prompt_req("hello");
    struct llm_result res;
    struct {
        const char *url, *model, *prompt;
    } cases[] = {
        { NULL, "m", "hello" },
        { "", "m", "hello" },
        { "ftp://127.0.0.1/x", "m", "hello" },
        { "not a url at all", "m", "hello" },
        { "http://127.0.0.1:9", NULL, "hello" },
        { "http://127.0.0.1:9", "", "hello" },
        { "http://127.0.0.1:9", "m", NULL },
        { "http://127.0.0.1:9", "m", "bad \xC3\x28 utf-8" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct llm_config cfg = base;
        cfg.base_url = cases[i].url;
        cfg.model = cases[i].model;
        req.prompt = cases[i].prompt;
        memset(&res, 0x5a, sizeof res);         /* result must be fully written */
        CHECK_INT(llm_stream(&cfg, &req, NULL, &res), -1);
        CHECK_INT(res.kind, LLM_ERR_CONFIG);
        CHECK(res.err[0] != '\0' && strlen(res.err) < sizeof res.err);
        CHECK_INT(res.http_status, 0);
        CHECK_INT(res.tokens, 0);
        CHECK_INT(res.first_token_ms, -1);
        CHECK(res.total_ms >= 0 && res.total_ms < 1000);
        CHECK(strlen(res.model) < sizeof res.model);
    }
    /* a message without content */
    struct llm_message msgs[] = { { "user", NULL } };
    struct llm_request r2 = { .messages = msgs, .n_messages = 1, .temperature = -1 };
    struct llm_config cfg = base;
    CHECK_INT(llm_stream(&cfg, &r2, NULL, &res), -1);
    CHECK_INT(res.kind, LLM_ERR_CONFIG);
}

TEST(err_names)
{
    const char *seen[LLM_ERR_INTERNAL + 1];
    for (int i = LLM_OK; i <= LLM_ERR_INTERNAL; i++) {
        seen[i] = llm_err_name((enum llm_err)i);
        CHECK(seen[i] && strcmp(seen[i], "unknown") != 0);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(seen[i], seen[j]) != 0);
    }
    CHECK_STR(llm_err_name(LLM_ERR_CONNECT), "connect");
    CHECK_STR(llm_err_name(LLM_ERR_HTTP), "http");
    CHECK_STR(llm_err_name((enum llm_err)99), "unknown");
}

/* ---- canned bytes: wire-format corners the fake does not produce ---- */

/* Serves one connection on 127.0.0.1: reads the request (kept in req), then
 * writes resp in writes of `step` bytes `delay_ms` apart and closes. */
struct canned {
    int lfd, port;
    const char *resp;
    size_t len, step;
    int delay_ms;
    char req[65536];
    size_t reqlen;
    pthread_t th;
};

static void *canned_main(void *arg)
{
    struct canned *c = arg;
    int fd = accept(c->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t need = 0;
    for (;;) {                    /* headers, then Content-Length bytes */
        ssize_t n = recv(fd, c->req + c->reqlen, sizeof c->req - 1 - c->reqlen, 0);
        if (n <= 0)
            break;
        c->reqlen += (size_t)n;
        c->req[c->reqlen] = '\0';
        char *end = strstr(c->req, "\r\n\r\n");
        if (end && !need) {
            char *cl = strcasestr(c->req, "\r\nContent-Length:");
            need = (size_t)(end + 4 - c->req) + (cl ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (need && c->reqlen >= need)
            break;
    }
    size_t step = c->step ? c->step : c->len;
    for (size_t off = 0; off < c->len; off += step) {
        size_t n = c->len - off < step ? c->len - off : step;
        if (send(fd, c->resp + off, n, MSG_NOSIGNAL) < 0)
            break;
        if (c->delay_ms) {
            struct timespec ts = { 0, c->delay_ms * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    shutdown(fd, SHUT_WR);
    char sink[4096];              /* let the client close first */
    struct timeval tv = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (recv(fd, sink, sizeof sink, 0) > 0) {}
    close(fd);
    return NULL;
}

static int canned_start(struct canned *c, const char *resp, size_t len, size_t step, int delay_ms)
{
    memset(c, 0, sizeof *c);
    c->resp = resp;
    c->len = len;
    c->step = step;
    c->delay_ms = delay_ms;
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (c->lfd < 0 || bind(c->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(c->lfd, 4) < 0 ||
        getsockname(c->lfd, (struct sockaddr *)&a, &alen) < 0)
        return -1;
    c->port = ntohs(a.sin_port);
    return pthread_create(&c->th, NULL, canned_main, c) == 0 ? 0 : -1;
}

static void canned_stop(struct canned *c)
{
    shutdown(c->lfd, SHUT_RDWR);  /* wakes accept() if nobody came */
    pthread_join(c->th, NULL);
    close(c->lfd);
}

/* Streams from a canned response; the usual config aimed at it. */
static int run_canned(enum llm_provider p, const char *resp, size_t step, int delay_ms,
                      const char *api_key, struct sink *k, struct llm_result *res, struct canned *c)
{
    if (canned_start(c, resp, strlen(resp), step, delay_ms) < 0)
        return -2;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", c->port, p == LLM_OPENAI ? "/v1" : "");
    struct llm_config cfg = cfg_for(p);
    cfg.base_url = url;
    cfg.api_key = api_key;
    struct llm_request req = prompt_req("canned");
    int rc = run(&cfg, &req, k, res);
    canned_stop(c);
    return rc;
}

#define NDJSON_HEAD "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n"
#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"

/* NDJSON cut into 1..7-byte reads, CRLF lines, a blank line, text on done. */
TEST(canned_ollama_split_reads)
{
    static const char resp[] = NDJSON_HEAD
        "{\"model\":\"real-model:7b\",\"created_at\":\"x\",\"response\":\"Caf\\u00e9\",\"done\":false}\n"
        "{\"model\":\"real-model:7b\",\"response\":\" \\\"q\\\" \\\\ \\n\xF0\x9F\x9A\x80\",\"done\":false}\r\n"
        "\n"
        "{\"model\":\"real-model:7b\",\"response\":\"\",\"done\":false}\n"
        "{\"model\":\"real-model:7b\",\"response\":\" end\",\"done\":true,\"done_reason\":\"stop\","
        "\"eval_count\":42,\"prompt_eval_count\":17}\n";
    for (size_t step = 1; step <= 7; step += 3) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run_canned(LLM_OLLAMA, resp, step, 1, NULL, &k, &res, &c), 0);
        CHECK_STR(sink_text(&k), "Café \"q\" \\ \n🚀 end");
        CHECK_INT(k.pieces, 3);
        CHECK_INT(res.tokens, 42);
        CHECK_INT(res.prompt_tokens, 17);
        CHECK_STR(res.model, "real-model:7b");
        CHECK(contains(c.req, "POST /api/generate HTTP/1.1\r\n"));
        CHECK(!contains(c.req, "Authorization"));
        sink_free(&k);
    }
}

/* SSE cut into small reads: comments, a role-only chunk, CRLF, an event
 * whose JSON spans two data lines, a usage chunk, then [DONE]. */
TEST(canned_openai_split_reads)
{
    static const char resp[] = SSE_HEAD
        ": keep-alive\n\n"
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"finish_reason\":null}]}\n\n"
        "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
        "id: 7\n"
        "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\n"
        "data: \"delta\":{\"content\":\"lo \\u65e5\"}}]}\n\n"
        ": another comment\n"
        "data: {\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":null},"
        "\"finish_reason\":\"stop\"}]}\n\n"
        "data: {\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
        "\"completion_tokens\":2,\"total_tokens\":7}}\n\n"
        "data: [DONE]\n\n";
    for (size_t step = 1; step <= 7; step += 3) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        CHECK_INT(run_canned(LLM_OPENAI, resp, step, 1, "sk-canned-key", &k, &res, &c), 0);
        CHECK_STR(sink_text(&k), "Hello 日");
        CHECK_INT(k.pieces, 2);
        CHECK_INT(res.tokens, 2);
        CHECK_INT(res.prompt_tokens, 5);
        CHECK_STR(res.model, "gpt-x");
        CHECK(contains(c.req, "POST /v1/chat/completions HTTP/1.1\r\n"));
        CHECK(contains(c.req, "\r\nAuthorization: Bearer sk-canned-key\r\n"));
        CHECK(contains(c.req, "\r\nAccept: text/event-stream\r\n"));
        sink_free(&k);
    }
}

/* The final message without its newline still counts. */
TEST(canned_final_without_newline)
{
    struct canned c;
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run_canned(LLM_OLLAMA, NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n"
                         "{\"response\":\"b\",\"done\":true}", 0, 0, NULL, &k, &res, &c), 0);
    CHECK_STR(sink_text(&k), "ab");
    CHECK_INT(res.tokens, 2);     /* no eval_count: the pieces */
    sink_free(&k);
    struct sink k2 = { 0 };
    CHECK_INT(run_canned(LLM_OPENAI, SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
                         "data: [DONE]", 0, 0, NULL, &k2, &res, &c), 0);
    CHECK_STR(sink_text(&k2), "a");
    sink_free(&k2);
}

/* A clean close before the final message is a cut, also mid-line. */
TEST(canned_cut)
{
    static const char *const cases[][2] = {
        { NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n", "ollama" },
        { NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"do", "ollama" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n", "openai" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi", "openai" },
        { "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 500\r\n\r\n"
          "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n", "openai" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        enum llm_provider p = cases[i][1][1] == 'l' ? LLM_OLLAMA : LLM_OPENAI;
        CHECK_INT(run_canned(p, cases[i][0], 0, 0, NULL, &k, &res, &c), -1);
        CHECK_INT(res.kind, LLM_ERR_CUT);
        CHECK_STR(sink_text(&k), "a");
        CHECK(contains(res.err, "after 1 token"));
        sink_free(&k);
    }
}

TEST(canned_malformed)
{
    static const char *const cases[][2] = {
        { NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\nthis is not json\n", "ollama" },
        { NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n[1,2]\n", "ollama" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: oops\n\n", "openai" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n<html>\n\n", "openai" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        enum llm_provider p = cases[i][1][1] == 'l' ? LLM_OLLAMA : LLM_OPENAI;
        CHECK_INT(run_canned(p, cases[i][0], 0, 0, NULL, &k, &res, &c), -1);
        CHECK_INT(res.kind, LLM_ERR_MALFORMED);
        CHECK(contains(res.err, "after 1 token"));
        sink_free(&k);
    }
}

/* Mid-stream errors in the shapes servers send them. */
TEST(canned_upstream_errors)
{
    static const char *const cases[][3] = {
        { NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n{\"error\":\"out of memory\"}\n",
          "ollama", "upstream error after 1 token: out of memory" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
          "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
          "openai", "upstream error after 1 token: overloaded" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
          "event: error\ndata: {\"message\":\"context too long\"}\n\n",
          "openai", "upstream error after 1 token: context too long" },
        { SSE_HEAD "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
          "{\"error\":{\"message\":\"bare json\"}}\n",
          "openai", "upstream error after 1 token: bare json" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        enum llm_provider p = cases[i][1][1] == 'l' ? LLM_OLLAMA : LLM_OPENAI;
        CHECK_INT(run_canned(p, cases[i][0], 0, 0, NULL, &k, &res, &c), -1);
        CHECK_INT(res.kind, LLM_ERR_UPSTREAM);
        CHECK_STR(res.err, cases[i][2]);
        sink_free(&k);
    }
}

/* HTTP errors: OpenAI's shape, vLLM/FastAPI shapes, plain text, no body, and
 * a key the upstream echoes back, which is masked. */
TEST(canned_http_errors)
{
    static const char *const cases[][3] = {
        { "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
          "{\"error\":{\"message\":\"The model `x` does not exist\",\"type\":\"invalid_request_error\"}}",
          "openai", "upstream returned HTTP 404: The model `x` does not exist" },
        { "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"
          "{\"object\":\"error\",\"message\":\"bad temperature\",\"code\":400}",
          "openai", "upstream returned HTTP 400: bad temperature" },
        { "HTTP/1.1 422 Unprocessable\r\nConnection: close\r\n\r\n{\"detail\":\"field required\"}",
          "openai", "upstream returned HTTP 422: field required" },
        { "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n<html>\n<b>proxy down</b></html>\n",
          "ollama", "upstream returned HTTP 502 for /api/generate: <html> <b>proxy down</b></html>" },
        { "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n",
          "ollama", "upstream returned HTTP 503 for /api/generate with an empty body" },
        { "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n"
          "{\"error\":{\"message\":\"Incorrect API key provided: sk-canned-key-123.\"}}",
          "openai", "upstream returned HTTP 401: Incorrect API key provided: ***." },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct canned c;
        struct sink k = { 0 };
        struct llm_result res;
        enum llm_provider p = cases[i][1][1] == 'l' ? LLM_OLLAMA : LLM_OPENAI;
        CHECK_INT(run_canned(p, cases[i][0], 0, 0, "sk-canned-key-123", &k, &res, &c), -1);
        CHECK_INT(res.kind, LLM_ERR_HTTP);
        CHECK_STR(res.err, cases[i][2]);
        sink_free(&k);
    }
}

/* Messages stay valid UTF-8 (they go into JSON error events): invalid bytes
 * from the upstream, and a long message cut at the size of err. */
TEST(canned_messages_are_utf8)
{
    static const char bad[] = NDJSON_HEAD "{\"response\":\"a\",\"done\":false}\n\xff\xfe\xC3 oops\n";
    struct canned c;
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run_canned(LLM_OLLAMA, bad, 0, 0, NULL, &k, &res, &c), -1);
    CHECK_INT(res.kind, LLM_ERR_MALFORMED);
    json_t *j = json_string(res.err);
    CHECK(j != NULL);
    json_decref(j);

    char *resp = malloc(4096);
    REQUIRE(resp != NULL);
    int n = snprintf(resp, 4096, "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n{\"error\":\"x");
    for (int i = 0; i < 600; i++)
        n += snprintf(resp + n, 4096 - (size_t)n, "é");
    snprintf(resp + n, 4096 - (size_t)n, "\"}");
    for (int shift = 0; shift < 2; shift++) {   /* the cut falls on either byte */
        resp[n - 1200 - 1] = shift ? 'x' : 'y';
        CHECK_INT(run_canned(LLM_OLLAMA, resp, 0, 0, NULL, &k, &res, &c), -1);
        CHECK_INT(res.kind, LLM_ERR_HTTP);
        CHECK(strlen(res.err) > 400);
        j = json_string(res.err);
        CHECK(j != NULL);
        json_decref(j);
    }
    /* and with one byte more before the run of two-byte characters */
    memmove(resp + n - 1200 + 1, resp + n - 1200, strlen(resp + n - 1200) + 1);
    resp[n - 1200] = 'z';
    CHECK_INT(run_canned(LLM_OLLAMA, resp, 0, 0, NULL, &k, &res, &c), -1);
    j = json_string(res.err);
    CHECK(j != NULL);
    json_decref(j);
    free(resp);
    sink_free(&k);
}

/* Caps: a line over 1 MiB, an error body over 64 KiB. */
TEST(canned_caps)
{
    size_t big = 1024 * 1024 + 100;
    char *resp = malloc(big + 200);
    REQUIRE(resp != NULL);
    int n = snprintf(resp, 200, NDJSON_HEAD "{\"response\":\"");
    memset(resp + n, 'x', big);
    strcpy(resp + n + big, "\",\"done\":true}\n");
    struct canned c;
    struct sink k = { 0 };
    struct llm_result res;
    CHECK_INT(run_canned(LLM_OLLAMA, resp, 0, 0, NULL, &k, &res, &c), -1);
    CHECK_INT(res.kind, LLM_ERR_MALFORMED);
    CHECK(contains(res.err, "longer than 1048576 bytes"));

    n = snprintf(resp, 200, "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n");
    memset(resp + n, 'e', big);
    resp[n + big] = '\0';
    CHECK_INT(run_canned(LLM_OPENAI, resp, 0, 0, NULL, &k, &res, &c), -1);
    CHECK_INT(res.kind, LLM_ERR_HTTP);
    CHECK_INT(res.http_status, 500);
    CHECK(strncmp(res.err, "upstream returned HTTP 500 for /v1/chat/completions: eee", 56) == 0);
    CHECK(res.total_ms < 2000);
    free(resp);
    sink_free(&k);
}

/* ---- the fake upstream's process ---- */

static void stop_fake(void)
{
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        fake_pid = 0;
    }
}

/* Uses FAKE_LLM_URL, or starts tests/fake-llm/server.mjs on a free port. */
static void start_fake(void)
{
    const char *env = getenv("FAKE_LLM_URL");
    if (env && *env) {
        str_copy(fake, sizeof fake, env);
    } else if (access("tests/fake-llm/server.mjs", R_OK) != 0) {
        printf("# tests/fake-llm/server.mjs not found (run from the repo root): "
               "cases that need the fake upstream fail\n");
        return;
    } else {
        char pf[512], log[512];
        snprintf(pf, sizeof pf, "%s/fake-port", th_tmpdir());
        snprintf(log, sizeof log, "%s/fake-llm.log", th_tmpdir());
        fake_pid = fork();
        if (fake_pid < 0) {
            perror("fork");
            return;
        }
        if (fake_pid == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execlp("node", "node", "tests/fake-llm/server.mjs", "--port", "0",
                   "--port-file", pf, (char *)NULL);
            _exit(127);
        }
        atexit(stop_fake);
        for (int i = 0; i < 200 && !fake[0]; i++) {
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
            FILE *f = fopen(pf, "r");
            int port = 0;
            if (f) {
                if (fscanf(f, "%d", &port) == 1 && port > 0)
                    snprintf(fake, sizeof fake, "http://127.0.0.1:%d", port);
                fclose(f);
            }
            if (waitpid(fake_pid, NULL, WNOHANG) == fake_pid) {
                fake_pid = 0;
                break;
            }
        }
        if (!fake[0])
            printf("# the fake upstream did not start (see %s)\n", log);
    }
    size_t n = strlen(fake);
    while (n > 0 && fake[n - 1] == '/')
        fake[--n] = '\0';
    if (fake[0])
        printf("# fake upstream at %s\n", fake);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);     /* never through a proxy */
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    if (llm_global_init() != 0) {
        printf("Bail out! llm_global_init failed\n");
        return 1;
    }
    start_fake();

    RUN(err_names);
    RUN(config_errors);
    RUN(refused_ollama);
    RUN(refused_openai);
    RUN(connect_timeout);
    RUN(canned_ollama_split_reads);
    RUN(canned_openai_split_reads);
    RUN(canned_final_without_newline);
    RUN(canned_cut);
    RUN(canned_malformed);
    RUN(canned_upstream_errors);
    RUN(canned_http_errors);
    RUN(canned_messages_are_utf8);
    RUN(canned_caps);

    RUN(full_answer_prompt_ollama);
    RUN(full_answer_prompt_openai);
    RUN(full_answer_messages_ollama);
    RUN(full_answer_messages_openai);
    RUN(long_answer_ollama);
    RUN(long_answer_openai);
    RUN(exact_answer_ollama);
    RUN(exact_answer_openai);
    RUN(body_prompt_ollama);
    RUN(body_prompt_openai);
    RUN(body_defaults_ollama);
    RUN(body_defaults_openai);
    RUN(body_messages_ollama);
    RUN(body_messages_openai);
    RUN(url_forms_ollama);
    RUN(url_forms_openai);
    RUN(http_status_ollama);
    RUN(http_status_openai);
    RUN(http_404_message_ollama);
    RUN(http_404_message_openai);
    RUN(midstream_error_ollama);
    RUN(midstream_error_openai);
    RUN(malformed_ollama);
    RUN(malformed_openai);
    RUN(dropped_ollama);
    RUN(dropped_openai);
    RUN(hang_idle_timeout_ollama);
    RUN(hang_idle_timeout_openai);
    RUN(first_token_timeout_ollama);
    RUN(first_token_timeout_openai);
    RUN(total_timeout_ollama);
    RUN(total_timeout_openai);
    RUN(timeouts_not_hit_ollama);
    RUN(timeouts_not_hit_openai);
    RUN(abort_on_token_ollama);
    RUN(abort_on_token_openai);
    RUN(ticks_while_waiting_ollama);
    RUN(ticks_while_waiting_openai);
    RUN(no_callbacks_ollama);
    RUN(no_callbacks_openai);
    RUN(api_key_openai);
    RUN(api_key_not_sent_to_ollama);
    RUN(api_key_never_in_errors_ollama);
    RUN(api_key_never_in_errors_openai);

    stop_fake();
    return th_done();
}
