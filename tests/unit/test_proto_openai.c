/* test_proto_openai.c — the OpenAI-compatible adapter (core/proto_openai.c)
 * driven the way fcgi/api_openai.c drives it (proto_open on
 * PROTO_OPENAI_PATH, proto_message with the raw body, proto_job_run,
 * proto_pump) against the simulated LLM: the exact chunk shapes of a
 * stream (role first, pieces, finish_reason, the usage chunk), the
 * non-streamed chat.completion, every refusal's body and failure kind, the
 * cache and single-flight rules of PARLEY_OPENAI_CACHE, authentication by
 * API key (revoked: refused) and JWT, the model list, and the follower
 * rule of a client that leaves.
 * With PARLEY_TEST_PG (a PostgreSQL URI; tests/integration/t0905-pg-openai.sh)
 * every case runs on that database instead (storage/pg/openai_store.c). */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "jobs.h"
#include "openai_store.h"
#include "proto.h"
#include "proto_openai.h"
#include "token_mint.h"
#include "util.h"

#include <jansson.h>

/* Opens an OpenAI request for user and sends body. */
static int req(struct parley_ctx *ctx, struct proto_conn *c, const char *user, const char *body,
               struct proto_frames *f, struct proto_job **job)
{
    char peer[160];
    snprintf(peer, sizeof peer, "user:%s", user);
    *job = NULL;
    frames_init(f);
    if (proto_open(ctx, c, PROTO_OPENAI_PATH, user, peer, f) < 0)
        return -2;
    return proto_message(ctx, c, body, strlen(body), f, job);
}

/* {"model": "llama3.2", "messages": [{"role": "user", "content": q}]} + extra members. */
static char *chat_body(const char *q, const char *extra)
{
    char *b = NULL;
    json_t *o = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "llama3.2", "messages", "role",
                          "user", "content", q);
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        json_object_update(o, x);
        json_decref(x);
    }
    b = dump(o);
    return b;
}

static const char *member_str(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

TEST(stream_chunks_exact)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *q = "Stream me [[fake tokens=5 token_ms=1]]";
    char *want = fake_answer(q, 5);
    REQUIRE(want != NULL);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *b = chat_body(q, "{\"stream\": true, \"stream_options\": {\"include_usage\": true}}");
    REQUIRE(req(&ctx, &c, "alice", b, &f, &job) == 0);
    free(b);
    CHECK_INT(c.kind, PROTO_OPENAI);
    CHECK_INT(c.err, PERR_OK);
    CHECK_INT(f.n, 0);                    /* nothing before the answer's first piece */
    CHECK(proto_openai_streaming(&c));
    CHECK_STR(proto_openai_cache_state(&c), "bypass");   /* no temperature 0: its own */
    REQUIRE(job != NULL);
    CHECK(!strncmp(proto_job_channel(job), "openai:u:", 9));
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    REQUIRE(f.n >= 4);
    /* first: the role with empty content */
    json_t *o = frame(&f, 0);
    const char *id = member_str(o, "id", NULL);
    REQUIRE(id != NULL);
    CHECK(!strncmp(id, "chatcmpl-", 9) && strlen(id) == 9 + 32);
    CHECK_STR(member_str(o, "object", NULL), "chat.completion.chunk");
    CHECK_STR(member_str(o, "model", NULL), "llama3.2");
    CHECK(json_integer_value(json_object_get(o, "created")) > 1700000000);
    CHECK(json_is_null(json_object_get(o, "usage")));      /* include_usage: null until the end */
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    CHECK_INT(json_array_size(json_object_get(o, "choices")), 1);
    CHECK_INT(json_integer_value(json_object_get(ch, "index")), 0);
    CHECK_STR(member_str(ch, "delta", "role"), "assistant");
    CHECK_STR(member_str(ch, "delta", "content"), "");
    CHECK(json_is_null(json_object_get(ch, "finish_reason")));
    CHECK(json_is_null(json_object_get(ch, "logprobs")));
    char sid[64];
    str_copy(sid, sizeof sid, id);
    json_decref(o);
    /* the pieces, then the finish chunk, then the usage chunk */
    char got[4096] = "";
    for (int i = 1; i < f.n - 2; i++) {
        o = frame(&f, i);
        ch = json_array_get(json_object_get(o, "choices"), 0);
        CHECK_STR(member_str(o, "id", NULL), sid);
        CHECK(json_object_get(json_object_get(ch, "delta"), "role") == NULL);
        const char *t = member_str(ch, "delta", "content");
        CHECK(t != NULL);
        if (t)
            strncat(got, t, sizeof got - strlen(got) - 1);
        CHECK(json_is_null(json_object_get(ch, "finish_reason")));
        json_decref(o);
    }
    CHECK_STR(got, want);
    o = frame(&f, f.n - 2);
    ch = json_array_get(json_object_get(o, "choices"), 0);
    CHECK_INT(json_object_size(json_object_get(ch, "delta")), 0);
    CHECK_STR(member_str(ch, "finish_reason", NULL), "stop");
    json_decref(o);
    o = frame(&f, f.n - 1);
    CHECK_INT(json_array_size(json_object_get(o, "choices")), 0);
    json_t *u = json_object_get(o, "usage");
    CHECK_INT(json_integer_value(json_object_get(u, "completion_tokens")), 5);
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) > 0);
    CHECK_INT(json_integer_value(json_object_get(u, "total_tokens")),
              json_integer_value(json_object_get(u, "completion_tokens")) +
              json_integer_value(json_object_get(u, "prompt_tokens")));
    json_decref(o);
    CHECK(!proto_openai_failed(&c));
    CHECK_STR(proto_openai_outcome(&c, 0), "ok");
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(want);
    close_ctx(&ctx);
}

TEST(no_stream_is_one_completion)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *q = "Whole answer [[fake tokens=4 token_ms=1]]";
    char *want = fake_answer(q, 4);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *b = chat_body(q, "{\"max_tokens\": 4}");
    REQUIRE(req(&ctx, &c, "alice", b, &f, &job) == 0);
    free(b);
    CHECK(!proto_openai_streaming(&c));
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    REQUIRE(f.n == 1);
    json_t *o = frame(&f, 0);
    CHECK_STR(member_str(o, "object", NULL), "chat.completion");
    CHECK(!strncmp(member_str(o, "id", NULL), "chatcmpl-", 9));
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    CHECK_STR(member_str(ch, "message", "role"), "assistant");
    CHECK_STR(member_str(ch, "message", "content"), want);
    CHECK(json_is_null(json_object_get(json_object_get(ch, "message"), "refusal")));
    CHECK_STR(member_str(ch, "finish_reason", NULL), "length");   /* 4 tokens of max 4 */
    json_t *u = json_object_get(o, "usage");
    CHECK_INT(json_integer_value(json_object_get(u, "completion_tokens")), 4);
    CHECK_INT(json_integer_value(json_object_get(u, "total_tokens")),
              4 + json_integer_value(json_object_get(u, "prompt_tokens")));
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(want);
    close_ctx(&ctx);
}

/* body is refused with kind; the single frame is OpenAI's error body with
 * type and code (NULL: null). */
static void check_refused(struct parley_ctx *ctx, const char *body, enum perr kind,
                          const char *type, const char *code)
{
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    req(ctx, &c, "bob", body, &f, &job);
    CHECK(job == NULL);
    CHECK_INT(c.err, kind);
    CHECK_INT(f.n, 1);
    json_t *o = frame(&f, 0);
    json_t *e = json_object_get(o, "error");
    CHECK_INT(json_object_size(o), 1);
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK_STR(member_str(e, "type", NULL), type);
    if (code)
        CHECK_STR(member_str(e, "code", NULL), code);
    else
        CHECK(json_is_null(json_object_get(e, "code")));
    CHECK(json_object_get(e, "param") != NULL);
    CHECK(proto_openai_cache_state(&c) == NULL);
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
}

TEST(refusals)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *ire = "invalid_request_error";
    check_refused(&ctx, "{not json", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "[1]", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
                  PERR_BAD_INPUT, ire, NULL);                                  /* no model */
    check_refused(&ctx, "{\"model\": \"llama3.2\"}", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "{\"model\": \"llama3.2\", \"messages\": []}", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "{\"model\": \"llama3.2\", \"messages\": [{\"role\": \"tool\", "
                  "\"content\": \"x\"}]}", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "{\"model\": \"llama3.2\", \"messages\": [{\"role\": \"user\", "
                  "\"content\": 5}]}", PERR_BAD_INPUT, ire, NULL);
    check_refused(&ctx, "{\"model\": \"llama3.2\", \"messages\": [{\"role\": \"user\", "
                  "\"content\": [{\"type\": \"image_url\"}]}]}", PERR_BAD_INPUT, ire, NULL);
    char *b = chat_body("x", "{\"n\": 2}");
    check_refused(&ctx, b, PERR_BAD_INPUT, ire, NULL);
    free(b);
    b = chat_body("x", "{\"temperature\": 3}");
    check_refused(&ctx, b, PERR_BAD_INPUT, ire, NULL);
    free(b);
    b = chat_body("x", "{\"stream_options\": {\"include_usage\": true}}");   /* no stream */
    check_refused(&ctx, b, PERR_BAD_INPUT, ire, NULL);
    free(b);
    b = chat_body("x", "{\"tools\": [{\"type\": \"function\"}]}");
    check_refused(&ctx, b, PERR_BAD_INPUT, ire, NULL);
    free(b);
    b = chat_body("x", "{\"model\": \"gpt-unknown\"}");
    check_refused(&ctx, b, PERR_NOT_FOUND, ire, "model_not_found");
    free(b);
    /* text parts are accepted */
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    REQUIRE(req(&ctx, &c, "bob", "{\"model\": \"llama3.2\", \"messages\": [{\"role\": "
                "\"developer\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": "
                "[{\"type\": \"text\", \"text\": \"hel\"}, {\"type\": \"text\", \"text\": "
                "\"lo [[fake tokens=1 token_ms=0]]\"}]}]}", &f, &job) == 0);
    CHECK_INT(c.err, PERR_OK);
    CHECK(job != NULL);
    run_job(&ctx, job);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(rate_limit_has_retry_after)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *b = chat_body("limited [[fake tokens=1 token_ms=0]]", NULL);
    REQUIRE(req(&ctx, &c, "rl-user", b, &f, &job) == 0);
    CHECK_INT(c.err, PERR_OK);
    run_job(&ctx, job);
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(req(&ctx, &c, "rl-user", b, &f, &job) == 0);
    CHECK_INT(c.err, PERR_RATE_LIMITED);
    CHECK(job == NULL);
    int ra = proto_openai_retry_after(&c);
    CHECK(ra >= 1 && ra <= 60);
    json_t *o = frame(&f, 0);
    CHECK_STR(member_str(o, "error", "type"), "requests");
    CHECK_STR(member_str(o, "error", "code"), "rate_limit_exceeded");
    json_decref(o);
    CHECK_STR(proto_openai_outcome(&c, 0), "rate_limited");
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(b);
    cfg.rate_limit_per_min = saved;
    close_ctx(&ctx);
}

TEST(budget_is_insufficient_quota)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved = cfg.token_budget_per_day;
    cfg.token_budget_per_day = 1;          /* one generation spends it */
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *b = chat_body("spend it [[fake tokens=2 token_ms=0]]", NULL);
    REQUIRE(req(&ctx, &c, "budget-user", b, &f, &job) == 0);
    CHECK_INT(c.err, PERR_OK);
    run_job(&ctx, job);
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(req(&ctx, &c, "budget-user", b, &f, &job) == 0);
    CHECK_INT(c.err, PERR_BUDGET_EXHAUSTED);
    CHECK(job == NULL);
    int ra = proto_openai_retry_after(&c);
    CHECK(ra >= 1 && ra <= 86400);
    json_t *o = frame(&f, 0);
    CHECK_STR(member_str(o, "error", "type"), "insufficient_quota");
    CHECK_STR(member_str(o, "error", "code"), "insufficient_quota");
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(b);
    cfg.token_budget_per_day = saved;
    close_ctx(&ctx);
}

/* Runs one request to its end; returns its cache state (static copy) and
 * the text of its answer in text (no stream). */
static const char *run_one(struct parley_ctx *ctx, const char *body, char *text, size_t tlen)
{
    static char state[16];
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    state[0] = text[0] = '\0';
    if (req(ctx, &c, "cache-user", body, &f, &job) != 0 || c.err != PERR_OK) {
        proto_conn_cleanup(&c);
        frames_free(&f);
        return "refused";
    }
    str_copy(state, sizeof state, proto_openai_cache_state(&c));
    if (job)
        run_job(ctx, job);
    pump_to_end(ctx, &c, &f);
    json_t *o = f.n ? frame(&f, f.n - 1) : NULL;
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    str_copy(text, tlen, member_str(ch, "message", "content") ? member_str(ch, "message", "content") : "");
    json_decref(o);
    proto_openai_leave(ctx, &c, 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    return state;
}

TEST(cache_rules)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char t1[2048], t2[2048], err[200];
    const char *q = "cache me [[fake tokens=3 token_ms=0]]";
    char *want = fake_answer(q, 3);
    char *det = chat_body(q, "{\"temperature\": 0}");
    char *warm = chat_body(q, "{\"temperature\": 0.7}");
    /* deterministic (the default): temperature 0 is shared and cached */
    CHECK_STR(run_one(&ctx, det, t1, sizeof t1), "miss");
    CHECK_STR(t1, want);
    CHECK_STR(run_one(&ctx, det, t2, sizeof t2), "hit");
    CHECK_STR(t2, want);
    CHECK_STR(run_one(&ctx, warm, t2, sizeof t2), "bypass");
    CHECK_STR(run_one(&ctx, warm, t2, sizeof t2), "bypass");   /* never cached */
    /* a cached stream: role, the whole text, finish */
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *sb = chat_body(q, "{\"temperature\": 0, \"stream\": true}");
    REQUIRE(req(&ctx, &c, "cache-user", sb, &f, &job) == 0);
    CHECK(job == NULL);
    CHECK_STR(proto_openai_cache_state(&c), "hit");
    CHECK_STR(proto_openai_outcome(&c, 0), "cached");
    REQUIRE(f.n == 3);
    json_t *o = frame(&f, 1);
    CHECK_STR(member_str(json_array_get(json_object_get(o, "choices"), 0), "delta", "content"),
              want);
    json_decref(o);
    o = frame(&f, 2);
    CHECK_STR(member_str(json_array_get(json_object_get(o, "choices"), 0), "finish_reason", NULL),
              "stop");
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* off: nothing shared, not even temperature 0 */
    REQUIRE(config_set(&cfg, "PARLEY_OPENAI_CACHE", "off", err, sizeof err) == 0);
    CHECK_INT(proto_openai_cache_mode(&cfg), OAI_CACHE_OFF);
    CHECK_STR(run_one(&ctx, det, t2, sizeof t2), "bypass");
    /* all: any temperature is shared and cached */
    REQUIRE(config_set(&cfg, "PARLEY_OPENAI_CACHE", "all", err, sizeof err) == 0);
    CHECK_STR(run_one(&ctx, warm, t2, sizeof t2), "miss");
    CHECK_STR(run_one(&ctx, warm, t2, sizeof t2), "hit");
    /* a setting that is none of the three is refused */
    REQUIRE(config_set(&cfg, "PARLEY_OPENAI_CACHE", "sometimes", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    REQUIRE(config_set(&cfg, "PARLEY_OPENAI_CACHE", "deterministic", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) == 0);
    free(det);
    free(warm);
    free(sb);
    free(want);
    close_ctx(&ctx);
}

TEST(single_flight_and_followers)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *q = "shared one [[fake tokens=40 token_ms=20]]";
    char *b = chat_body(q, "{\"temperature\": 0, \"stream\": true}");
    struct proto_conn c1, c2;
    struct proto_frames f1, f2;
    struct proto_job *j1, *j2;
    REQUIRE(req(&ctx, &c1, "fa", b, &f1, &j1) == 0);
    REQUIRE(req(&ctx, &c2, "fb", b, &f2, &j2) == 0);
    CHECK(j1 != NULL);
    CHECK(j2 == NULL);
    CHECK_STR(proto_openai_cache_state(&c1), "miss");
    CHECK_STR(proto_openai_cache_state(&c2), "shared");
    CHECK_INT(c1.job_id, c2.job_id);
    struct job_thread t;
    REQUIRE(job_start(&t, j1) == 0);
    /* the first client leaves: the second still follows, nothing stops */
    CHECK_INT(proto_openai_leave(&ctx, &c1, 1), 0);
    CHECK_INT(pump_to_end(&ctx, &c2, &f2), 0);
    pthread_join(t.th, NULL);
    json_t *o = frame(&f2, f2.n - 1);
    CHECK_STR(member_str(json_array_get(json_object_get(o, "choices"), 0), "finish_reason", NULL),
              "stop");
    json_decref(o);
    CHECK_INT(proto_openai_leave(&ctx, &c2, 0), 0);
    proto_conn_cleanup(&c1);
    proto_conn_cleanup(&c2);
    frames_free(&f1);
    frames_free(&f2);
    free(b);
    /* alone: leaving stops the generation (the upstream request ends early) */
    b = chat_body("alone [[fake tokens=200 token_ms=20]]", "{\"stream\": true}");
    REQUIRE(req(&ctx, &c1, "fc", b, &f1, &j1) == 0);
    REQUIRE(j1 != NULL);
    int64_t jid = c1.job_id;
    REQUIRE(job_start(&t, j1) == 0);
    sleep_ms(100);
    int64_t t0 = mono_ms();
    CHECK_INT(proto_openai_leave(&ctx, &c1, 1), 1);
    pthread_join(t.th, NULL);
    CHECK(mono_ms() - t0 < 3000);          /* 200 tokens would take 4 s */
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, jid, &ji) == 0);
    CHECK_INT(ji.stopped, 1);
    CHECK_STR(proto_openai_outcome(&c1, 1), "client_gone");
    proto_conn_cleanup(&c1);
    frames_free(&f1);
    free(b);
    close_ctx(&ctx);
}

TEST(upstream_failures)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    /* before any text: a refusal (the transport's 5xx) */
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job;
    char *b = chat_body("fail early [[fake tokens=4 error_after=0 token_ms=1]]",
                        "{\"stream\": true}");
    REQUIRE(req(&ctx, &c, "erin", b, &f, &job) == 0);
    run_job(&ctx, job);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(c.err, PERR_UPSTREAM);
    REQUIRE(f.n == 1);
    json_t *o = frame(&f, 0);
    CHECK_STR(member_str(o, "error", "type"), "server_error");
    CHECK_STR(member_str(o, "error", "code"), "upstream_unavailable");
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(b);
    /* after text in a stream: an error chunk, failed */
    b = chat_body("fail late [[fake tokens=6 error_after=2 token_ms=1]]", "{\"stream\": true}");
    REQUIRE(req(&ctx, &c, "erin", b, &f, &job) == 0);
    run_job(&ctx, job);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(c.err, PERR_OK);
    CHECK(proto_openai_failed(&c));
    CHECK_STR(proto_openai_outcome(&c, 0), "upstream_error");
    REQUIRE(f.n >= 2);
    o = frame(&f, f.n - 1);
    CHECK_STR(member_str(o, "error", "code"), "upstream_error");
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    free(b);
    close_ctx(&ctx);
}

TEST(auth_keys_and_jwt)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char err[200], key[OAI_KEY_LEN + 1], id[OAI_KEY_ID_LEN + 1], hdr[200];
    REQUIRE(config_set(&cfg, "PARLEY_JWT_SECRET", "test-secret-openai-0123456789", err,
                       sizeof err) == 0);
    REQUIRE(apikey_create(ctx.db, "kim", "laptop", now_ms(), key, id) == 0);
    CHECK(apikey_looks_like(key));
    struct auth_claims cl;
    char *body = NULL;
    enum perr kind;
    snprintf(hdr, sizeof hdr, "Bearer %s", key);
    CHECK_INT(proto_openai_auth(&ctx, hdr, &cl, &body, &kind), 0);
    CHECK_STR(cl.sub, "kim");
    /* the key is stored hashed: its text is nowhere in the list */
    json_t *keys = NULL;
    REQUIRE(apikey_list(ctx.db, "kim", &keys) == 0);
    char *listed = json_dumps(keys, 0);
    CHECK(listed && !strstr(listed, key + 14));
    char pre[OAI_KEY_PREFIX_LEN + 1];
    str_copy(pre, sizeof pre, key);
    CHECK_STR(member_str(json_array_get(keys, 0), "prefix", NULL), pre);
    free(listed);
    json_decref(keys);
    /* revoked: refused at once */
    CHECK_INT(apikey_revoke(ctx.db, id, now_ms()), 0);
    CHECK_INT(apikey_revoke(ctx.db, id, now_ms()), 1);
    CHECK_INT(proto_openai_auth(&ctx, hdr, &cl, &body, &kind), 1);
    CHECK_INT(kind, PERR_UNAUTHORIZED);
    json_t *o = body ? json_loads(body, 0, NULL) : NULL;
    CHECK_STR(member_str(o, "error", "type"), "invalid_request_error");
    CHECK_STR(member_str(o, "error", "code"), "invalid_api_key");
    json_decref(o);
    free(body);
    /* a made-up key, no header, a wrong token */
    CHECK_INT(proto_openai_auth(&ctx, "Bearer sk-parley-0000000000000000000000000000000000000000"
                                "00000000", &cl, &body, &kind), 1);
    free(body);
    CHECK_INT(proto_openai_auth(&ctx, NULL, &cl, &body, &kind), 1);
    free(body);
    CHECK_INT(proto_openai_auth(&ctx, "Bearer nonsense", &cl, &body, &kind), 1);
    free(body);
    /* a Parley JWT */
    char *tok = token_mint("test-secret-openai-0123456789", "jay", now_ms() / 1000 + 600, NULL);
    REQUIRE(tok != NULL);
    snprintf(hdr, sizeof hdr, "Bearer %s", tok);
    CHECK_INT(proto_openai_auth(&ctx, hdr, &cl, &body, &kind), 0);
    CHECK_STR(cl.sub, "jay");
    free(tok);
    REQUIRE(config_set(&cfg, "PARLEY_JWT_SECRET", "", err, sizeof err) == 0);
    /* open mode: any bearer but a bad Parley key is user "" */
    CHECK_INT(proto_openai_auth(&ctx, "Bearer whatever", &cl, &body, &kind), 0);
    CHECK_STR(cl.sub, "");
    snprintf(hdr, sizeof hdr, "Bearer %s", key);
    CHECK_INT(proto_openai_auth(&ctx, hdr, &cl, &body, &kind), 1);
    free(body);
    close_ctx(&ctx);
}

TEST(models_list)
{
    char err[200];
    REQUIRE(config_set(&cfg, "PARLEY_UPSTREAMS",
                       "name=a provider=ollama url=http://127.0.0.1:1/ models=qwen2.5,llama3.2;"
                       " name=b provider=ollama url=http://127.0.0.1:2/ models=*;"
                       " name=c provider=ollama url=http://127.0.0.1:3/ models=mistral", err,
                       sizeof err) == 0);
    json_t *o = proto_openai_models(&cfg);
    CHECK_STR(member_str(o, "object", NULL), "list");
    json_t *d = json_object_get(o, "data");
    CHECK_INT(json_array_size(d), 3);
    CHECK_STR(member_str(json_array_get(d, 0), "id", NULL), "llama3.2");
    CHECK_STR(member_str(json_array_get(d, 1), "id", NULL), "qwen2.5");
    CHECK_STR(member_str(json_array_get(d, 2), "id", NULL), "mistral");
    CHECK_STR(member_str(json_array_get(d, 0), "object", NULL), "model");
    CHECK_STR(member_str(json_array_get(d, 0), "owned_by", NULL), "parley");
    CHECK(json_is_integer(json_object_get(json_array_get(d, 0), "created")));
    json_decref(o);
    CHECK(proto_openai_model_known(&cfg, "mistral"));
    CHECK(!proto_openai_model_known(&cfg, "*"));
    CHECK(!proto_openai_model_known(&cfg, "mistra"));
    REQUIRE(config_set(&cfg, "PARLEY_UPSTREAMS", "", err, sizeof err) == 0);
    CHECK(!proto_openai_model_known(&cfg, "mistral"));
}

TEST(request_counts)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    CHECK_INT(proto_openai_count(&ctx, "models", "ok"), 0);
    CHECK_INT(proto_openai_count(&ctx, "models", "ok"), 0);
    CHECK_INT(proto_openai_count(&ctx, "chat.completions", "rate_limited"), 0);
    json_t *rows = NULL;
    REQUIRE(oai_counts(ctx.db, &rows) == 0);
    CHECK_INT(json_array_size(rows), 2);
    json_t *r0 = json_array_get(rows, 0), *r1 = json_array_get(rows, 1);
    CHECK_STR(member_str(r0, "endpoint", NULL), "chat.completions");
    CHECK_STR(member_str(r0, "outcome", NULL), "rate_limited");
    CHECK_INT(json_integer_value(json_object_get(r0, "n")), 1);
    CHECK_STR(member_str(r1, "endpoint", NULL), "models");
    CHECK_INT(json_integer_value(json_object_get(r1, "n")), 2);
    json_decref(rows);
    close_ctx(&ctx);
}

/* A server error's body carries Parley's code (docs/errors.md), never null:
 * a read-only or full database, a database error, shutting down (t0930
 * found "code": null on 503 "The database is read-only"). A request the
 * client must fix keeps OpenAI's null. */
TEST(server_errors_have_a_code)
{
    static const struct { enum perr kind; const char *code; } cases[] = {
        { PERR_DB_READONLY, "database_readonly" }, { PERR_DB_UNAVAILABLE, "database_unavailable" },
        { PERR_DB, "internal" }, { PERR_INTERNAL, "internal" }, { PERR_UNAVAILABLE, "unavailable" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *b = proto_openai_error_body(cases[i].kind, "x", NULL);
        json_t *o = b ? json_loads(b, 0, NULL) : NULL;
        CHECK_STR(member_str(o, "error", "type"), "server_error");
        CHECK_STR(member_str(o, "error", "code"), cases[i].code);
        json_decref(o);
        free(b);
    }
    char *b = proto_openai_error_body(PERR_BAD_INPUT, "x", NULL);
    json_t *o = b ? json_loads(b, 0, NULL) : NULL;
    CHECK(json_is_null(json_object_get(json_object_get(o, "error"), "code")));
    json_decref(o);
    free(b);
}

int main(void)
{
    if (test_setup("proto_openai") < 0)
        return 1;
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg)
        str_copy(dbpath, sizeof dbpath, pg);
    printf("# backend: %s\n", pg && *pg ? "PostgreSQL" : "SQLite");
    RUN(stream_chunks_exact);
    RUN(no_stream_is_one_completion);
    RUN(refusals);
    RUN(rate_limit_has_retry_after);
    RUN(budget_is_insufficient_quota);
    RUN(cache_rules);
    RUN(single_flight_and_followers);
    RUN(upstream_failures);
    RUN(auth_keys_and_jwt);
    RUN(models_list);
    RUN(request_counts);
    RUN(server_errors_have_a_code);
    config_cleanup(&cfg);
    return th_done();
}
