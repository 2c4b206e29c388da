/* test_phx.c — the Phoenix socket (core/phx.c) and the seed 003 adapter
 * (core/proto_phoenix.c) driven as a transport drives them (phx_message,
 * proto_job_run, phx_pump) against the simulated LLM: V2 framing byte for
 * byte, heartbeat, join / leave / duplicate join / unmatched topic /
 * another user's session, malformed and oversized frames, query (llm then
 * cache), stream_query, get_history, ping, refusals, two topics on one
 * socket, save / load between frames, the LongPoll rejoin after a stale
 * leave replaying a running stream with its question, and answers grounded in the
 * knowledge base (rag_context_used, confidence_score, the passages in the
 * upstream request, grounded cache keys). */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "db_sqlite.h"
#include "jobs.h"
#include "kb.h"
#include "phx.h"
#include "store.h"
#include "util.h"

#include <jansson.h>

/* Sends one frame; returns phx_message's result; *job as handed back. */
static int in(struct parley_ctx *ctx, struct phx_socket *s, const char *text,
              struct proto_frames *f, struct proto_job **job)
{
    struct proto_job *dummy = NULL;
    int rc = phx_message(ctx, s, text, strlen(text), f, job ? job : &dummy);
    if (!job)
        proto_job_free(dummy);
    return rc;
}

/* Pumps until no topic follows a job any more (15 s at most). 0 / -1. */
static int pump_all(struct parley_ctx *ctx, struct phx_socket *s, struct proto_frames *f)
{
    int64_t end = mono_ms() + 15000;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < s->n; i++)
            busy |= proto_following(&s->topics[i]);
        if (!busy)
            return 0;
        if (mono_ms() > end || phx_pump(ctx, s, f) < 0)
            return -1;
        sleep_ms(3);
    }
}

/* Element i of frame k (borrowed from *hold, which the caller frees). */
static json_t *el(const struct proto_frames *f, int k, int i, json_t **hold)
{
    json_decref(*hold);
    *hold = frame(f, k);
    return json_array_get(*hold, (size_t)i);
}

/* The event (element 3) of frame k, "" when none. */
static const char *ev_of(const struct proto_frames *f, int k, json_t **hold)
{
    const char *e = json_string_value(el(f, k, 3, hold));
    return e ? e : "";
}

TEST(heartbeat_join_leave_framing)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &s, "[null,\"1\",\"phoenix\",\"heartbeat\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[null,\"1\",\"phoenix\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);

    REQUIRE(in(&ctx, &s, "[\"2\",\"2\",\"proxy:s-frame\",\"phx_join\",{\"user_id\":\"u\"}]", &f,
               NULL) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[\"2\",\"2\",\"proxy:s-frame\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    CHECK_INT(s.n, 1);
    frames_free(&f);

    /* a session is a conversation of kind phoenix owned by the joiner */
    struct conversation cv;
    REQUIRE(store_conv_get(ctx.db, "s-frame", "alice", &cv) == 0);
    CHECK_STR(cv.kind, "phoenix");
    store_conv_free(&cv);

    /* ping: reply to its ref, then pong with the join_ref */
    REQUIRE(in(&ctx, &s, "[\"2\",\"3\",\"proxy:s-frame\",\"ping\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[\"2\",\"3\",\"proxy:s-frame\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    json_t *h = NULL;
    CHECK_STR(ev_of(&f, 1, &h), "pong");
    CHECK_STR(json_string_value(el(&f, 1, 0, &h)), "2");
    CHECK(json_is_null(el(&f, 1, 1, &h)));
    CHECK(json_string_value(json_object_get(el(&f, 1, 4, &h), "timestamp")) != NULL);
    frames_free(&f);

    /* duplicate join: the old join closes first */
    REQUIRE(in(&ctx, &s, "[\"4\",\"4\",\"proxy:s-frame\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[\"2\",\"2\",\"proxy:s-frame\",\"phx_close\",{}]");
    CHECK_STR(f.v[1], "[\"4\",\"4\",\"proxy:s-frame\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    CHECK_INT(s.n, 1);
    frames_free(&f);

    /* a push with the stale join_ref is ignored */
    REQUIRE(in(&ctx, &s, "[\"2\",\"5\",\"proxy:s-frame\",\"ping\",{}]", &f, NULL) == 0);
    CHECK_INT(f.n, 0);

    /* leave: reply ok, then phx_close; the topic is gone */
    REQUIRE(in(&ctx, &s, "[\"4\",\"6\",\"proxy:s-frame\",\"phx_leave\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[\"4\",\"6\",\"proxy:s-frame\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    CHECK_STR(f.v[1], "[\"4\",\"4\",\"proxy:s-frame\",\"phx_close\",{}]");
    CHECK_INT(s.n, 0);
    frames_free(&f);

    /* an event of a topic not joined, and a join of a topic nobody serves */
    REQUIRE(in(&ctx, &s, "[\"4\",\"7\",\"proxy:s-frame\",\"ping\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &s, "[\"8\",\"8\",\"room:lobby\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[null,\"7\",\"proxy:s-frame\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"unmatched topic\",\"code\":\"not_found\"}}]");
    CHECK_STR(f.v[1], "[null,\"8\",\"room:lobby\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"unmatched topic\",\"code\":\"not_found\"}}]");
    frames_free(&f);

    /* leaving a topic never joined is fine */
    REQUIRE(in(&ctx, &s, "[\"9\",\"9\",\"proxy:other\",\"phx_leave\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[\"9\",\"9\",\"proxy:other\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

TEST(another_users_session_is_refused)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket a, b;
    phx_init(&a, "alice", "user:alice", 10);
    phx_init(&b, "bob", "user:bob", 10);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &a, "[\"1\",\"1\",\"proxy:s-alice\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    REQUIRE(in(&ctx, &b, "[\"1\",\"1\",\"proxy:s-alice\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[\"1\",\"1\",\"proxy:s-alice\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"unauthorized\",\"code\":\"forbidden\"}}]");
    CHECK_INT(b.n, 0);
    frames_free(&f);
    /* an invalid session id */
    REQUIRE(in(&ctx, &b, "[\"2\",\"2\",\"proxy:a b\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 1);
    CHECK(strstr(f.v[0], "\"reason\":\"invalid session id\"") != NULL);
    frames_free(&f);
    /* the topic cap */
    struct phx_socket c;
    phx_init(&c, "carol", "user:carol", 1);
    REQUIRE(in(&ctx, &c, "[\"1\",\"1\",\"proxy:c1\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &c, "[\"2\",\"2\",\"proxy:c2\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[1], "[\"2\",\"2\",\"proxy:c2\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"too many channels joined\",\"code\":\"conflict\"}}]");
    frames_free(&f);
    phx_free(&a);
    phx_free(&b);
    phx_free(&c);
    close_ctx(&ctx);
}

TEST(malformed_frames_are_dropped_or_answered)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-bad\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    CHECK_INT(in(&ctx, &s, "not json", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "{\"topic\":\"phoenix\"}", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"2\",\"proxy:s-bad\"", &f, NULL), 0);
    CHECK_INT(f.n, 0);                     /* nothing to answer to */
    CHECK_INT(in(&ctx, &s, "[\"1\",\"3\",\"proxy:s-bad\",\"ping\"]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"4\",\"proxy:s-bad\",5,{}]", &f, NULL), 0);
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[\"1\",\"3\",\"proxy:s-bad\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"malformed message\",\"code\":\"bad_input\"}}]");
    CHECK(strstr(f.v[1], "\"4\",\"proxy:s-bad\",\"phx_reply\"") != NULL);
    frames_free(&f);
    /* oversized */
    size_t big = PHX_FRAME_MAX + 100;
    char *t = malloc(big + 64);
    REQUIRE(t != NULL);
    int o = snprintf(t, 64, "[\"1\",\"5\",\"proxy:s-bad\",\"query\",{\"query\":\"");
    memset(t + o, 'a', big);
    strcpy(t + o + big, "\"}]");
    CHECK_INT(in(&ctx, &s, t, &f, NULL), 0);
    free(t);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[\"1\",\"5\",\"proxy:s-bad\",\"phx_reply\",{\"status\":\"error\",\"response\":{\"reason\":\"message too large\",\"code\":\"too_large\"}}]");
    frames_free(&f);
    /* the socket is unharmed */
    REQUIRE(in(&ctx, &s, "[\"1\",\"6\",\"proxy:s-bad\",\"ping\",{}]", &f, NULL) == 0);
    CHECK_INT(f.n, 2);
    CHECK_INT(s.n, 1);
    frames_free(&f);
    phx_free(&s);
    close_ctx(&ctx);
}

/* A frame that is JSON but for a NUL in a string (the \u0000 escape,
 * which Parley refuses everywhere): answered with bad_input like any
 * malformed frame when its ref and topic can be read (it was dropped
 * unanswered, so a client's push only timed out); never run, nothing
 * stored. A NUL inside the topic or ref leaves nothing to answer to: a
 * reply must name them exactly. A raw NUL byte is not JSON at all. */
TEST(nul_in_a_frame_is_answered_bad_input)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-nul\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    const char *bad = "{\"status\":\"error\",\"response\":{\"reason\":\"malformed message\",\"code\":\"bad_input\"}}]";
    struct proto_job *job = NULL;
    CHECK_INT(in(&ctx, &s, "[\"1\",\"2\",\"proxy:s-nul\",\"query\",{\"query\":\"a\\u0000b [[fake tokens=1]]\"}]", &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"3\",\"proxy:s-nul\",\"query\",{\"query\":\"x\",\"metadata\":{\"k\":\"\\u0000\"}}]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"4\",\"proxy:s-nul\",\"que\\u0000ry\",{}]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"5\",\"proxy:s-nul\",\"phx_join\",{\"user_id\":\"\\u0000\"}]", &f, NULL), 0);
    REQUIRE(f.n == 4);
    char want[256];
    for (int i = 0; i < 4; i++) {
        snprintf(want, sizeof want, "[\"1\",\"%d\",\"proxy:s-nul\",\"phx_reply\",%s", i + 2, bad);
        CHECK_STR(f.v[i], want);
    }
    frames_free(&f);
    /* the topic or the ref holds the NUL: nothing to answer to; a NUL in
     * an object key is not JSON even to jansson's JSON_ALLOW_NUL: dropped */
    CHECK_INT(in(&ctx, &s, "[\"1\",\"6\",\"proxy:s-nul\\u0000x\",\"phx_join\",{}]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"7\\u0000\",\"proxy:s-nul\",\"query\",{}]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[null,\"h\\u0000\",\"phoenix\",\"heartbeat\",{}]", &f, NULL), 0);
    CHECK_INT(in(&ctx, &s, "[\"1\",\"9\",\"proxy:s-nul\",\"query\",{\"query\":\"x\",\"metadata\":{\"k\\u0000\":1}}]", &f, NULL), 0);
    CHECK_INT(f.n, 0);
    /* nothing stored, the socket unharmed: still one topic, it answers */
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "s-nul", 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 0);
    store_msgs_free(m, n);
    CHECK_INT(s.n, 1);
    REQUIRE(in(&ctx, &s, "[\"1\",\"10\",\"proxy:s-nul\",\"ping\",{}]", &f, NULL) == 0);
    CHECK_INT(f.n, 2);
    frames_free(&f);
    phx_free(&s);
    close_ctx(&ctx);
}

TEST(query_then_cache_stream_history)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    json_t *h = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-q\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    const char *q = "[\"1\",\"2\",\"proxy:s-q\",\"query\",{\"query\":\"What is  JWT? [[fake tokens=5 token_ms=1]]\",\"temperature\":0.5,\"metadata\":{\"context_type\":\"programming\"}}]";
    REQUIRE(in(&ctx, &s, q, &f, &job) == 0);
    REQUIRE(job != NULL);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[\"1\",\"2\",\"proxy:s-q\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    REQUIRE(f.n == 1);                     /* one response, no stream events */
    CHECK_STR(ev_of(&f, 0, &h), "response");
    json_t *p = el(&f, 0, 4, &h);
    const char *answer1 = json_string_value(json_object_get(p, "response"));
    REQUIRE(answer1 && *answer1);
    char *a1 = strdup(answer1);
    json_t *md = json_object_get(p, "metadata");
    CHECK_STR(json_string_value(json_object_get(md, "source")), "llm");
    CHECK(json_is_null(json_object_get(md, "confidence_score")));
    CHECK_INT(json_integer_value(json_object_get(md, "rag_context_used")), 0);
    CHECK(json_is_integer(json_object_get(md, "processing_time_ms")));
    CHECK_STR(json_string_value(json_object_get(md, "model_used")), "llama3.2");
    CHECK(json_string_value(json_object_get(p, "timestamp")) != NULL);
    CHECK_STR(json_string_value(el(&f, 0, 0, &h)), "1");
    frames_free(&f);

    /* the same query again, normalised differently: from the cache, no job */
    const char *q2 = "[\"1\",\"3\",\"proxy:s-q\",\"query\",{\"query\":\"  what IS jwt? [[fake tokens=5 token_ms=1]] \",\"temperature\":0.5}]";
    REQUIRE(in(&ctx, &s, q2, &f, &job) == 0);
    CHECK(job == NULL);
    REQUIRE(f.n == 2);
    CHECK_STR(ev_of(&f, 1, &h), "response");
    p = el(&f, 1, 4, &h);
    CHECK_STR(json_string_value(json_object_get(p, "response")), a1);
    CHECK_STR(json_string_value(json_object_get(json_object_get(p, "metadata"), "source")), "cache");
    frames_free(&f);

    /* another temperature is another question */
    const char *q3 = "[\"1\",\"4\",\"proxy:s-q\",\"stream_query\",{\"query\":\"what is jwt? [[fake tokens=5 token_ms=1]]\",\"temperature\":0.6}]";
    REQUIRE(in(&ctx, &s, q3, &f, &job) == 0);
    REQUIRE(job != NULL);
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    REQUIRE(f.n >= 3);
    CHECK_STR(ev_of(&f, 0, &h), "stream_start");
    CHECK_STR(json_string_value(json_object_get(el(&f, 0, 4, &h), "query")),
              "what is jwt? [[fake tokens=5 token_ms=1]]");
    char got[4096] = "";
    for (int i = 1; i < f.n - 1; i++) {
        CHECK_STR(ev_of(&f, i, &h), "stream_token");
        const char *tok = json_string_value(json_object_get(el(&f, i, 4, &h), "token"));
        if (tok && strlen(got) + strlen(tok) < sizeof got)
            strcat(got, tok);
    }
    CHECK(strlen(got) > 0);
    CHECK_STR(ev_of(&f, f.n - 1, &h), "stream_complete");
    CHECK_STR(f.v[f.n - 1], "[\"1\",null,\"proxy:s-q\",\"stream_complete\",{}]");
    frames_free(&f);

    /* history: the three questions and three answers, oldest first */
    REQUIRE(in(&ctx, &s, "[\"1\",\"5\",\"proxy:s-q\",\"get_history\",{}]", &f, NULL) == 0);
    REQUIRE(f.n == 2);
    CHECK_STR(ev_of(&f, 1, &h), "history");
    json_t *msgs = json_object_get(el(&f, 1, 4, &h), "messages");
    REQUIRE(json_array_size(msgs) == 6);
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "assistant");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 3), "content")), a1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 5), "content")), got);
    CHECK(json_string_value(json_object_get(json_array_get(msgs, 0), "timestamp")) != NULL);
    frames_free(&f);
    free(a1);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

TEST(refusals)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-ref\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    static const struct { const char *frame, *code; } cases[] = {
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{}]", "invalid_query" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{\"query\":\"  \"}]", "invalid_query" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",\"text\"]", "invalid_payload" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{\"query\":\"x\",\"model\":\"gpt-4\"}]", "invalid_model" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{\"query\":\"x\",\"temperature\":3}]", "invalid_temperature" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{\"query\":\"x\",\"temperature\":\"hot\"}]", "invalid_temperature" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"query\",{\"query\":\"x\",\"metadata\":[1]}]", "invalid_metadata" },
        { "[\"1\",\"2\",\"proxy:s-ref\",\"dance\",{}]", "unknown_event" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_job *job = NULL;
        CHECK_INT(in(&ctx, &s, cases[i].frame, &f, &job), 0);
        CHECK(job == NULL);
        REQUIRE(f.n == 2);
        CHECK_STR(ev_of(&f, 0, &h), "error");
        CHECK_STR(json_string_value(json_object_get(el(&f, 0, 4, &h), "error")), cases[i].code);
        CHECK(json_string_value(json_object_get(el(&f, 0, 4, &h), "message")) != NULL);
        CHECK(strstr(f.v[1], "\"phx_reply\",{\"status\":\"error\"") != NULL);
        CHECK_INT(s.topics[0].err, PERR_BAD_INPUT);
        frames_free(&f);
    }
    /* an allowed model */
    char err[200];
    REQUIRE(config_set(&cfg, "PARLEY_PHOENIX_MODELS", "gpt-4, llama3.2", err, sizeof err) == 0);
    struct proto_job *job = NULL;
    CHECK_INT(in(&ctx, &s, "[\"1\",\"3\",\"proxy:s-ref\",\"query\",{\"query\":\"hello [[fake tokens=2 token_ms=1]]\",\"model\":\"gpt-4\"}]", &f, &job), 0);
    CHECK(job != NULL);
    frames_free(&f);
    /* busy while it runs */
    struct proto_job *j2 = NULL;
    CHECK_INT(in(&ctx, &s, "[\"1\",\"4\",\"proxy:s-ref\",\"query\",{\"query\":\"other\"}]", &f, &j2), 0);
    CHECK(j2 == NULL);
    REQUIRE(f.n == 2);
    CHECK_STR(json_string_value(json_object_get(el(&f, 0, 4, &h), "error")), "busy");
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(json_string_value(json_object_get(json_object_get(el(&f, 0, 4, &h), "metadata"),
                                                "model_used")), "gpt-4");
    frames_free(&f);
    config_set(&cfg, "PARLEY_PHOENIX_MODELS", "", err, sizeof err);
    /* an upstream failure: error {error: processing_failed} */
    CHECK_INT(in(&ctx, &s, "[\"1\",\"5\",\"proxy:s-ref\",\"query\",{\"query\":\"boom [[fake tokens=5 error_after=2]]\"}]", &f, &job), 0);
    REQUIRE(job != NULL);
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(ev_of(&f, 0, &h), "error");
    CHECK_STR(json_string_value(json_object_get(el(&f, 0, 4, &h), "error")), "processing_failed");
    frames_free(&f);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

TEST(two_topics_and_save_load)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-a\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &s, "[\"2\",\"2\",\"proxy:s-b\",\"phx_join\",{}]", &f, NULL) == 0);
    CHECK_INT(s.n, 2);
    frames_free(&f);
    struct proto_job *ja = NULL, *jb = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"3\",\"proxy:s-a\",\"stream_query\",{\"query\":\"topic a [[fake tokens=4 token_ms=1]]\"}]", &f, &ja) == 0);
    REQUIRE(in(&ctx, &s, "[\"2\",\"4\",\"proxy:s-b\",\"query\",{\"query\":\"topic b [[fake tokens=4 token_ms=1]]\"}]", &f, &jb) == 0);
    REQUIRE(ja && jb);
    frames_free(&f);
    const char *ch[4];
    REQUIRE(phx_channels(&s, ch, 4) == 2);
    CHECK_STR(ch[0], "conv:s-a");
    CHECK_STR(ch[1], "conv:s-b");

    /* saved and loaded between every step, as a long-poll session is */
    char *saved = phx_save(&s);
    REQUIRE(saved != NULL);
    phx_free(&s);
    CHECK_INT(phx_load(&s, "{\"user\":1}"), -1);
    REQUIRE(phx_load(&s, saved) == 0);
    /* the text round-trips byte for byte, and each topic's part of it is
     * what proto_conn_save writes for that topic alone */
    char *again = phx_save(&s);
    REQUIRE(again != NULL);
    CHECK_STR(again, saved);
    json_t *doc = json_loads(again, 0, NULL);
    REQUIRE(doc != NULL);
    for (int i = 0; i < s.n; i++) {
        char *one = proto_conn_save(&s.topics[i]);
        char *part = json_dumps(json_array_get(json_object_get(doc, "topics"), (size_t)i), JSON_COMPACT);
        REQUIRE(one && part);
        CHECK_STR(part, one);
        free(one);
        free(part);
    }
    json_decref(doc);
    free(again);
    free(saved);
    CHECK_INT(s.n, 2);
    CHECK_STR(s.user, "alice");
    CHECK_INT(run_job(&ctx, ja), 0);
    CHECK_INT(run_job(&ctx, jb), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    int starts = 0, completes = 0, responses = 0;
    for (int i = 0; i < f.n; i++) {
        char e[32], topic[64];
        str_copy(e, sizeof e, ev_of(&f, i, &h));
        const char *t = json_string_value(el(&f, i, 2, &h));
        str_copy(topic, sizeof topic, t ? t : "");
        if (!strcmp(e, "stream_start") || !strcmp(e, "stream_complete") || !strcmp(e, "stream_token"))
            CHECK_STR(topic, "proxy:s-a");
        if (!strcmp(e, "response")) {
            CHECK_STR(topic, "proxy:s-b");
            CHECK_STR(json_string_value(el(&f, i, 0, &h)), "2");
        }
        starts += !strcmp(e, "stream_start");
        completes += !strcmp(e, "stream_complete");
        responses += !strcmp(e, "response");
    }
    CHECK_INT(starts, 1);
    CHECK_INT(completes, 1);
    CHECK_INT(responses, 1);
    CHECK_INT(phx_channels(&s, ch, 4), 0);
    frames_free(&f);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

/* A topic whose channel cannot be read crashes as a Phoenix channel does:
 * phx_error with its join_ref, the topic dropped, the other topic still
 * joined; once the database reads again, a rejoin follows the running
 * answer from its start. */
TEST(crashed_topic_gets_phx_error)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:crash-a\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &s, "[\"2\",\"2\",\"proxy:crash-b\",\"phx_join\",{}]", &f, NULL) == 0);
    struct proto_job *job = NULL;
    REQUIRE(in(&ctx, &s, "[\"1\",\"3\",\"proxy:crash-a\",\"stream_query\",{\"query\":\"crash [[fake tokens=4 token_ms=1]]\"}]", &f, &job) == 0);
    REQUIRE(job != NULL);
    frames_free(&f);
    /* the event log cannot be read */
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "ALTER TABLE events RENAME TO events_away", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(phx_pump(&ctx, &s, &f) >= 0);          /* the socket goes on */
    int errors = 0;
    for (int i = 0; i < f.n; i++) {
        if (strcmp(ev_of(&f, i, &h), "phx_error") != 0)
            continue;
        errors++;
        CHECK_STR(json_string_value(el(&f, i, 2, &h)), "proxy:crash-a");
        CHECK_STR(json_string_value(el(&f, i, 0, &h)), "1");
        CHECK_STR(json_string_value(el(&f, i, 1, &h)), "1");
    }
    CHECK_INT(errors, 1);
    CHECK_INT(s.n, 1);                            /* crash-b is still joined */
    frames_free(&f);
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "ALTER TABLE events_away RENAME TO events", NULL, NULL, NULL) == SQLITE_OK);
    /* the client rejoins: it follows the answer again */
    REQUIRE(in(&ctx, &s, "[\"4\",\"4\",\"proxy:crash-a\",\"phx_join\",{}]", &f, NULL) == 0);
    CHECK_INT(s.n, 2);
    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &s, &f) == 0);
    int starts = 0, completes = 0;
    for (int i = 0; i < f.n; i++) {
        starts += !strcmp(ev_of(&f, i, &h), "stream_start");
        completes += !strcmp(ev_of(&f, i, &h), "stream_complete");
    }
    CHECK_INT(starts, 1);
    CHECK_INT(completes, 1);
    frames_free(&f);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

/* The stream cut of t0610 (phoenix.test.mjs "drop"), frame for frame as
 * phoenix.js sends them: a stream_query over one socket (the WebSocket,
 * join_ref 10); the WebSocket is lost, phoenix.js pushes join 15 into a new
 * WebSocket that never answers, falls back to LongPoll (a new socket,
 * saved and loaded between POSTs as phx_longpoll.c does) and, after the
 * join's timeout, sends phx_leave with the stale join_ref 15 (ref 16) and
 * then phx_join 17. While the generation still runs, the rejoined topic
 * follows it from its start: stream_start with the question it answers,
 * every token, stream_complete. */
TEST(rejoin_after_stale_leave_replays_running_stream)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket ws, lp;
    phx_init(&ws, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    struct proto_job *job = NULL;
    const char *query = "drop test [[fake tokens=6 token_ms=1]]";
    REQUIRE(in(&ctx, &ws, "[\"10\",\"10\",\"proxy:s-drop\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &ws, "[\"10\",\"11\",\"proxy:s-drop\",\"stream_query\",{\"query\":\"drop test [[fake tokens=6 token_ms=1]]\"}]", &f, &job) == 0);
    REQUIRE(job != NULL);                 /* claimed: running, not run yet */
    frames_free(&f);
    phx_free(&ws);                        /* the WebSocket is gone */

    /* LongPoll: a new socket; each POST loads, handles, saves */
    phx_init(&lp, "alice", "user:alice", 10);
    char *saved = phx_save(&lp);
    REQUIRE(saved != NULL);
    phx_free(&lp);
    const char *posts[] = {
        "[\"15\",\"16\",\"proxy:s-drop\",\"phx_leave\",{}]",
        "[\"17\",\"17\",\"proxy:s-drop\",\"phx_join\",{}]",
    };
    for (int k = 0; k < 2; k++) {
        REQUIRE(phx_load(&lp, saved) == 0);
        free(saved);
        REQUIRE(in(&ctx, &lp, posts[k], &f, NULL) == 0);
        saved = phx_save(&lp);
        REQUIRE(saved != NULL);
        phx_free(&lp);
    }
    REQUIRE(f.n == 2);
    CHECK_STR(f.v[0], "[\"15\",\"16\",\"proxy:s-drop\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    CHECK_STR(f.v[1], "[\"17\",\"17\",\"proxy:s-drop\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);
    REQUIRE(phx_load(&lp, saved) == 0);
    free(saved);
    const char *ch[2];
    REQUIRE(phx_channels(&lp, ch, 2) == 1);   /* the rejoined topic follows the job */
    CHECK_STR(ch[0], "conv:s-drop");
    CHECK(lp.topics[0].job_id != 0);

    CHECK_INT(run_job(&ctx, job), 0);
    REQUIRE(pump_all(&ctx, &lp, &f) == 0);
    REQUIRE(f.n >= 3);
    CHECK_STR(ev_of(&f, 0, &h), "stream_start");
    CHECK_STR(json_string_value(el(&f, 0, 0, &h)), "17");
    CHECK_STR(json_string_value(json_object_get(el(&f, 0, 4, &h), "query")), query);
    int tokens = 0;
    for (int i = 1; i < f.n - 1; i++) {
        CHECK_STR(ev_of(&f, i, &h), "stream_token");
        tokens++;
    }
    CHECK(tokens >= 1);
    CHECK_STR(f.v[f.n - 1], "[\"17\",null,\"proxy:s-drop\",\"stream_complete\",{}]");
    frames_free(&f);

    /* a join after the answer is stored follows nothing */
    REQUIRE(in(&ctx, &lp, "[\"18\",\"18\",\"proxy:s-drop\",\"phx_join\",{}]", &f, NULL) == 0);
    CHECK_INT(phx_channels(&lp, ch, 2), 0);
    frames_free(&f);
    json_decref(h);
    phx_free(&lp);
    close_ctx(&ctx);
}

/* A rejoin after the worker of the topic's answer died (its lease ran out
 * and nobody recorded it: say the database could not be written then)
 * fails that job, hands on its error, and follows nothing: it neither
 * replays a dead answer as running nor refuses the next query as "busy"
 * (t0930: after a full disk, the same question on a rejoined Phoenix topic
 * got "conflict"). */
TEST(rejoin_after_dead_worker_follows_nothing)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket ws, s2;
    phx_init(&ws, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    int lease = cfg.lease_ms;
    cfg.lease_ms = 50;
    REQUIRE(in(&ctx, &ws, "[\"1\",\"1\",\"proxy:s-dead\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &ws, "[\"1\",\"2\",\"proxy:s-dead\",\"stream_query\",{\"query\":\"dead worker [[fake tokens=3]]\"}]", &f, &job) == 0);
    cfg.lease_ms = lease;
    REQUIRE(job != NULL);                 /* claimed: running, never run */
    proto_job_free(job);                  /* its worker died */
    phx_free(&ws);
    frames_free(&f);
    int64_t dead = 0, first = 0;
    REQUIRE(jobs_running_on(ctx.db, "conv:s-dead", &dead, &first) == 0);
    sleep_ms(120);
    phx_init(&s2, "alice", "user:alice", 10);
    REQUIRE(in(&ctx, &s2, "[\"3\",\"3\",\"proxy:s-dead\",\"phx_join\",{}]", &f, NULL) == 0);
    /* told: the failed answer's stream_error (rejoin_after_the_answer_failed_gets_its_error) */
    REQUIRE(pump_all(&ctx, &s2, &f) == 0);
    CHECK(f.n >= 2 && strstr(f.v[f.n - 1], "\"stream_error\"") && strstr(f.v[f.n - 1], "\"interrupted\""));
    const char *ch[2];
    CHECK_INT(phx_channels(&s2, ch, 2), 0);    /* then follows nothing */
    struct job_info ji;
    REQUIRE(jobs_get(ctx.db, dead, &ji) == 0);
    CHECK_STR(ji.state, "failed");
    frames_free(&f);
    job = NULL;
    CHECK_INT(in(&ctx, &s2, "[\"3\",\"4\",\"proxy:s-dead\",\"stream_query\",{\"query\":\"dead worker [[fake tokens=3]]\"}]", &f, &job), 0);
    CHECK(job != NULL);                   /* a new generation, not "busy" */
    if (job)
        CHECK_INT(run_job(&ctx, job), 0);
    frames_free(&f);
    phx_free(&s2);
    close_ctx(&ctx);
}

/* A join the database cannot record now (read-only, a full disk:
 * PRAGMA query_only stands in, root ignores permission bits) is refused
 * with database_readonly and its message, not "join failed" / internal
 * (t0930's full disk: "join: join failed", code internal). */
/* A rejoin after the topic's answer failed while the client was away (its
 * worker died; a viewer's lease recovery failed it before the client came
 * back: t0940's bridge SIGKILLed under a Phoenix WebSocket client) is told:
 * the join follows the failed answer, so the client gets its stream_error
 * (code interrupted) instead of nothing, then follows nothing. */
TEST(rejoin_after_the_answer_failed_gets_its_error)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket ws, s2;
    phx_init(&ws, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    struct proto_job *job = NULL;
    int lease = cfg.lease_ms;
    cfg.lease_ms = 50;
    REQUIRE(in(&ctx, &ws, "[\"1\",\"1\",\"proxy:s-away\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(in(&ctx, &ws, "[\"1\",\"2\",\"proxy:s-away\",\"stream_query\",{\"query\":\"away [[fake tokens=3]]\"}]", &f, &job) == 0);
    cfg.lease_ms = lease;
    REQUIRE(job != NULL);
    proto_job_free(job);                  /* its worker died */
    phx_free(&ws);                        /* and the client's connection with it */
    frames_free(&f);
    sleep_ms(120);
    REQUIRE(jobs_recover(ctx.db, ctx.bell, now_ms()) == 1);   /* another viewer's recovery */
    phx_init(&s2, "alice", "user:alice", 10);
    REQUIRE(in(&ctx, &s2, "[\"3\",\"3\",\"proxy:s-away\",\"phx_join\",{}]", &f, NULL) == 0);
    REQUIRE(pump_all(&ctx, &s2, &f) == 0);
    int errors = 0;
    for (int i = 0; i < f.n; i++)
        if (!strcmp(ev_of(&f, i, &h), "stream_error")) {
            errors++;
            CHECK_STR(json_string_value(json_object_get(el(&f, i, 4, &h), "code")), "interrupted");
        }
    CHECK_INT(errors, 1);
    const char *ch[2];
    CHECK_INT(phx_channels(&s2, ch, 2), 0);    /* then follows nothing */
    frames_free(&f);
    /* the next query is a new generation, not "busy" */
    job = NULL;
    CHECK_INT(in(&ctx, &s2, "[\"3\",\"4\",\"proxy:s-away\",\"stream_query\",{\"query\":\"away [[fake tokens=3]]\"}]", &f, &job), 0);
    CHECK(job != NULL);
    if (job)
        CHECK_INT(run_job(&ctx, job), 0);
    frames_free(&f);
    /* a join after that answer is stored follows nothing */
    REQUIRE(in(&ctx, &s2, "[\"5\",\"5\",\"proxy:s-away\",\"phx_join\",{}]", &f, NULL) == 0);
    CHECK_INT(phx_channels(&s2, ch, 2), 0);
    frames_free(&f);
    json_decref(h);
    phx_free(&s2);
    close_ctx(&ctx);
}

TEST(join_refused_when_the_database_cannot_be_written)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    json_t *h = NULL;
    REQUIRE(sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK);
    int rc = in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-ro-join\",\"phx_join\",{}]", &f, NULL);
    sqlite3_exec(db_handle(ctx.db), "PRAGMA query_only = 0", NULL, NULL, NULL);
    CHECK_INT(rc, -1);                      /* a database failure, with its reply */
    REQUIRE(f.n == 1);
    CHECK_STR(ev_of(&f, 0, &h), "phx_reply");
    json_t *p = el(&f, 0, 4, &h);
    CHECK_STR(json_string_value(json_object_get(p, "status")), "error");
    CHECK_STR(json_string_value(json_object_get(json_object_get(p, "response"), "code")), "database_readonly");
    CHECK_INT(s.n, 0);
    frames_free(&f);
    json_decref(h);
    phx_free(&s);
    close_ctx(&ctx);
}

/* The system text of the simulated LLM's last request (new string, NULL
 * when it had none). */
static char *last_system(void)
{
    json_t *o = fake_stats();
    const char *sys = json_string_value(json_object_get(json_object_get(o, "last_body"), "system"));
    char *r = sys ? strdup(sys) : NULL;
    json_decref(o);
    return r;
}

/* Sends a query push (ref) on topic proxy:s-kb (join_ref "1"), runs its job
 * if one starts, and returns the response event's payload (new reference,
 * NULL when there was none). */
static json_t *kb_ask(struct parley_ctx *ctx, struct phx_socket *s, const char *ref,
                      const char *query)
{
    json_t *fr = json_pack("[s, s, s, s, {s:s}]", "1", ref, "proxy:s-kb", "query", "query", query);
    char *text = json_dumps(fr, JSON_COMPACT);
    json_decref(fr);
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    int rc = text ? in(ctx, s, text, &f, &job) : -1;
    free(text);
    if (rc == 0 && job)
        rc = run_job(ctx, job);
    if (rc == 0)
        rc = pump_all(ctx, s, &f);
    json_t *h = NULL, *resp = NULL;
    for (int i = 0; rc == 0 && i < f.n; i++)
        if (!strcmp(ev_of(&f, i, &h), "response"))
            resp = json_incref(el(&f, i, 4, &h));
    json_decref(h);
    frames_free(&f);
    return resp;
}

static json_t *md_of(json_t *resp, const char *key)
{
    return json_object_get(json_object_get(resp, "metadata"), key);
}

TEST(knowledge_base_grounding)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char err[256];
    int n;
    const char *art = "# Fuser error E52\nError E52 means the fuser unit overheated: "
                      "switch the printer off for ten minutes.\n\n# Paper jam\nOpen tray 2.\n";
    REQUIRE(kb_import_text(ctx.db, "printers.md", art, strlen(art), 1, &n, err, sizeof err) == KB_OK);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-kb\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    CHECK_INT(cfg.kb_phoenix, 1);            /* on by default */

    /* a matching query: the passage is in the upstream's system prompt */
    const char *q = "fuser error E52 on the printer [[fake tokens=4 token_ms=0]]";
    long total0 = fake_total();
    json_t *r = kb_ask(&ctx, &s, "2", q);
    REQUIRE(r != NULL);
    CHECK_INT(fake_total(), total0 + 1);
    CHECK_STR(json_string_value(md_of(r, "source")), "llm");
    CHECK_INT(json_integer_value(md_of(r, "rag_context_used")), 1);
    double conf = json_number_value(md_of(r, "confidence_score"));
    CHECK(json_is_real(md_of(r, "confidence_score")) && conf > 0 && conf <= 1);
    char *sys = last_system();
    CHECK(sys && strstr(sys, "[1] Fuser error E52 (printers.md)\nError E52 means the fuser unit"));
    CHECK(sys && strstr(sys, "You are NeuralBridge"));
    CHECK(sys && !strstr(sys, "Paper jam"));
    free(sys);
    json_decref(r);

    /* again: from the cache, with the same grounding reported */
    r = kb_ask(&ctx, &s, "3", q);
    REQUIRE(r != NULL);
    CHECK_STR(json_string_value(md_of(r, "source")), "cache");
    CHECK_INT(json_integer_value(md_of(r, "rag_context_used")), 1);
    CHECK(json_number_value(md_of(r, "confidence_score")) == conf);
    json_decref(r);

    /* a query that matches nothing: 0, null, the plain system prompt */
    r = kb_ask(&ctx, &s, "4", "coffee machine leaks water [[fake tokens=3 token_ms=0]]");
    REQUIRE(r != NULL);
    CHECK_INT(json_integer_value(md_of(r, "rag_context_used")), 0);
    CHECK(json_is_null(md_of(r, "confidence_score")));
    sys = last_system();
    CHECK(sys && !strstr(sys, "[1]") && !strstr(sys, "E52"));
    free(sys);
    json_decref(r);

    /* switched off: the plain prompt under the ungrounded key... */
    const char *q2 = "printer fuser E52 again [[fake tokens=3 token_ms=0]]";
    cfg.kb_phoenix = 0;
    r = kb_ask(&ctx, &s, "5", q2);
    REQUIRE(r != NULL);
    CHECK_STR(json_string_value(md_of(r, "source")), "llm");
    CHECK_INT(json_integer_value(md_of(r, "rag_context_used")), 0);
    CHECK(json_is_null(md_of(r, "confidence_score")));
    sys = last_system();
    CHECK(sys && !strstr(sys, "E52"));
    free(sys);
    json_decref(r);
    /* ...so switched on, that ungrounded cached answer is not served */
    cfg.kb_phoenix = 1;
    r = kb_ask(&ctx, &s, "6", q2);
    REQUIRE(r != NULL);
    CHECK_STR(json_string_value(md_of(r, "source")), "llm");
    CHECK_INT(json_integer_value(md_of(r, "rag_context_used")), 1);
    json_decref(r);

    /* a changed article changes the prompt, hence the key: a new answer */
    const char *art2 = "# Fuser error E52\nError E52: call the technician.\n";
    REQUIRE(kb_import_text(ctx.db, "printers.md", art2, strlen(art2), 1, &n, err, sizeof err) == KB_OK);
    r = kb_ask(&ctx, &s, "7", q);
    REQUIRE(r != NULL);
    CHECK_STR(json_string_value(md_of(r, "source")), "llm");
    sys = last_system();
    CHECK(sys && strstr(sys, "call the technician"));
    free(sys);
    json_decref(r);
    REQUIRE(kb_remove_source(ctx.db, "printers.md", NULL) == KB_OK);
    phx_free(&s);
    close_ctx(&ctx);
}

/* The socket's JWT claims (the admin role, the token_budget claim) reach
 * every topic it joins, and survive a LongPoll save / load between
 * requests; a state saved before they existed loads without them. */
TEST(socket_claims_reach_every_topic)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct phx_socket s;
    phx_init(&s, "root", "user:root", 10);
    CHECK_INT(s.admin, 0);
    CHECK_INT(s.token_budget, -1);
    s.admin = 1;
    s.token_budget = 500;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(in(&ctx, &s, "[\"1\",\"1\",\"proxy:s-claims\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    REQUIRE(s.n == 1);
    CHECK_INT(s.topics[0].admin, 1);
    CHECK_INT(s.topics[0].has_token_budget, 1);
    CHECK_INT(s.topics[0].token_budget, 500);
    char *saved = phx_save(&s);
    REQUIRE(saved);
    phx_free(&s);
    REQUIRE(phx_load(&s, saved) == 0);
    free(saved);
    CHECK_INT(s.admin, 1);
    CHECK_INT(s.token_budget, 500);
    REQUIRE(in(&ctx, &s, "[\"2\",\"2\",\"proxy:s-claims2\",\"phx_join\",{}]", &f, NULL) == 0);
    frames_free(&f);
    REQUIRE(s.n == 2);
    CHECK_INT(s.topics[1].admin, 1);
    CHECK_INT(s.topics[1].token_budget, 500);
    phx_free(&s);
    /* an older state, without the claims: none */
    REQUIRE(phx_load(&s, "{\"user\":\"bob\",\"peer\":\"user:bob\",\"max_topics\":3,\"topics\":[]}") == 0);
    CHECK_INT(s.admin, 0);
    CHECK_INT(s.token_budget, -1);
    phx_free(&s);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("phx") < 0)
        return 1;
    RUN(heartbeat_join_leave_framing);
    RUN(socket_claims_reach_every_topic);
    RUN(another_users_session_is_refused);
    RUN(malformed_frames_are_dropped_or_answered);
    RUN(nul_in_a_frame_is_answered_bad_input);
    RUN(query_then_cache_stream_history);
    RUN(refusals);
    RUN(two_topics_and_save_load);
    RUN(crashed_topic_gets_phx_error);
    RUN(rejoin_after_stale_leave_replays_running_stream);
    RUN(rejoin_after_dead_worker_follows_nothing);
    RUN(rejoin_after_the_answer_failed_gets_its_error);
    RUN(join_refused_when_the_database_cannot_be_written);
    RUN(knowledge_base_grounding);
    config_cleanup(&cfg);
    return th_done();
}
