/* test_proto_aisdk.c — the AI SDK UI message stream adapter
 * (core/proto_aisdk.c) driven the way fcgi/api_aisdk.c drives it
 * (proto_open on PROTO_AISDK_PATH, proto_message_json with useChat's
 * request body, proto_job_run, proto_pump; proto_aisdk_resume for the
 * resume endpoint) against the simulated LLM: the exact parts of an answer,
 * of a failure and of a refusal, three turns with the stored history as
 * context, regenerate-message, resume from the start of the running
 * answer (nothing running: 1, the 204), and a stopped answer's finish. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "proto_impl.h"
#include "store.h"
#include "util.h"

#include <jansson.h>

/* useChat's request: {"id", "messages": [... {"id", "role": "user",
 * "parts": [{"type": "text", "text"}]}], "trigger", "messageId"}. */
static json_t *chat_body(const char *id, const char *text, const char *trigger)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s, s:s, s:[{s:s, s:s}]}", "id", "m-old", "role",
                                          "assistant", "parts", "type", "text", "text",
                                          "an earlier answer the server does not read"));
    if (text)
        json_array_append_new(msgs, json_pack("{s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "id",
                                              "m-user", "role", "user", "parts", "type",
                                              "step-start", "foo", "bar", "type", "text",
                                              "text", text));
    return json_pack("{s:s, s:o, s:s, s:n}", "id", id, "messages", msgs, "trigger", trigger,
                     "messageId");
}

/* Opens a connection for user and hands it body (taken). */
static int post(struct parley_ctx *ctx, struct proto_conn *c, const char *user, json_t *body,
                struct proto_frames *f, struct proto_job **job)
{
    char peer[160];
    snprintf(peer, sizeof peer, "user:%s", user);
    *job = NULL;
    if (proto_open(ctx, c, PROTO_AISDK_PATH, user, peer, f) < 0) {
        json_decref(body);
        return -2;
    }
    int rc = proto_message_json(ctx, c, body, f, job);
    json_decref(body);
    return rc;
}

/* The parts of one whole answer in f from index from: start{messageId},
 * start-step, text-start, text-delta... (joined == want), text-end,
 * finish-step, finish{finishReason: "stop"}. */
static void check_answer(const struct proto_frames *f, int from, const char *message_id,
                         const char *want)
{
    REQUIRE(f->n - from >= 6);
    check_frame(f, from, json_pack("{s:s, s:s}", "type", "start", "messageId", message_id));
    check_frame(f, from + 1, json_pack("{s:s}", "type", "start-step"));
    check_frame(f, from + 2, json_pack("{s:s, s:s}", "type", "text-start", "id", "text-1"));
    size_t len = 0, cap = strlen(want) + 256;
    char *got = calloc(1, cap);
    REQUIRE(got != NULL);
    for (int i = from + 3; i < f->n - 3; i++) {
        json_t *o = frame(f, i);
        CHECK_STR(ftype(o), "text-delta");
        CHECK_STR(json_string_value(json_object_get(o, "id")), "text-1");
        CHECK_INT(json_object_size(o), 3);
        const char *d = json_string_value(json_object_get(o, "delta"));
        CHECK(d != NULL);
        if (d && len + strlen(d) < cap) {
            memcpy(got + len, d, strlen(d));
            len += strlen(d);
        }
        json_decref(o);
    }
    CHECK_STR(got, want);
    free(got);
    check_frame(f, f->n - 3, json_pack("{s:s, s:s}", "type", "text-end", "id", "text-1"));
    check_frame(f, f->n - 2, json_pack("{s:s}", "type", "finish-step"));
    check_frame(f, f->n - 1, json_pack("{s:s, s:s}", "type", "finish", "finishReason", "stop"));
}

/* One turn: POSTs text on chat id for user, runs the job, pumps to the
 * end and checks the parts against the fake's answer. *nctx gets how many
 * LLM messages the job was given. Returns 0 when the turn streamed. */
static int turn(struct parley_ctx *ctx, const char *id, const char *user, const char *text,
                const char *trigger, const char *prompt, int *nctx)
{
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    int rc = post(ctx, &c, user, chat_body(id, text, trigger), &f, &job);
    CHECK_INT(rc, 0);
    CHECK_INT(c.err, PERR_OK);
    CHECK_INT(f.n, 0);
    CHECK(job != NULL);
    if (!job) {
        proto_conn_cleanup(&c);
        return -1;
    }
    char chan[200];
    snprintf(chan, sizeof chan, "conv:%s", id);
    CHECK_STR(proto_job_channel(job), chan);
    *nctx = (int)job->req.llm.n_messages;
    CHECK_INT(run_job(ctx, job), 0);
    CHECK_INT(pump_to_end(ctx, &c, &f), 0);
    char *want = fake_answer(prompt, 5);
    struct message *m;
    int n;
    int64_t total;
    int got = store_msg_list(ctx->db, id, 100, 0, &m, &n, &total) == 0;
    CHECK(got && n >= 1 && want);
    if (got && n >= 1 && want) {
        CHECK_STR(m[n - 1].role, "assistant");
        CHECK_STR(m[n - 1].content, want);
        check_answer(&f, 0, m[n - 1].id, want);
    }
    if (got)
        store_msgs_free(m, n);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    return 0;
}

TEST(three_turns_with_stored_history)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *q[3] = { "first question [[fake tokens=5 token_ms=1]]",
                         "second question [[fake tokens=5 token_ms=1]]",
                         "third question [[fake tokens=5 token_ms=1]]" };
    int nctx[3] = { 0, 0, 0 };
    for (int i = 0; i < 3; i++)
        CHECK_INT(turn(&ctx, "aisdk-chat-1", "alice", q[i], "submit-message", q[i], &nctx[i]), 0);
    /* the context is the stored history: 1, 3, 5 messages */
    CHECK_INT(nctx[0], 1);
    CHECK_INT(nctx[1], 3);
    CHECK_INT(nctx[2], 5);
    struct conversation cv;
    REQUIRE(store_conv_get(ctx.db, "aisdk-chat-1", "alice", &cv) == 0);
    CHECK_STR(cv.kind, "sse");
    json_t *meta = json_loads(cv.metadata, 0, NULL);
    CHECK_STR(proto_str(meta, "client"), "ai-sdk");
    json_decref(meta);
    CHECK_INT(cv.message_count, 6);
    store_conv_free(&cv);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "aisdk-chat-1", 10, 0, &m, &n, &total) == 0);
    REQUIRE(n == 6);
    CHECK_STR(m[0].role, "user");
    CHECK_STR(m[0].content, q[0]);          /* the text parts only */
    json_t *um = json_loads(m[0].metadata, 0, NULL);
    CHECK_STR(proto_str(um, "ui_message_id"), "m-user");
    json_decref(um);
    store_msgs_free(m, n);
    close_ctx(&ctx);
}

TEST(regenerate_answers_the_last_user_message_again)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    const char *q = "regenerate me [[fake tokens=5 token_ms=1]]";
    int nctx = 0;
    CHECK_INT(turn(&ctx, "aisdk-regen", "bob", q, "submit-message", q, &nctx), 0);
    CHECK_INT(turn(&ctx, "aisdk-regen", "bob", NULL, "regenerate-message", q, &nctx), 0);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "aisdk-regen", 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 3);                        /* the question is not stored twice */
    if (n == 3) {
        CHECK_STR(m[0].role, "user");
        CHECK_STR(m[1].role, "assistant");
        CHECK_STR(m[2].role, "assistant");
        CHECK_STR(m[1].content, m[2].content);
    }
    store_msgs_free(m, n);
    close_ctx(&ctx);
}

/* A refusal: proto_message's result 0, no job, the kind and message on c
 * and the protocol's error part {"type": "error", "errorText": msg}. */
static void check_refused(struct parley_ctx *ctx, const char *user, json_t *body, enum perr kind,
                          const char *msg)
{
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    CHECK_INT(post(ctx, &c, user, body, &f, &job), 0);
    CHECK(job == NULL);
    CHECK_STR(perr_name(c.err), perr_name(kind));
    CHECK_STR(c.err_msg, msg);
    CHECK_INT(f.n, 1);
    check_frame(&f, 0, json_pack("{s:s, s:s}", "type", "error", "errorText", msg));
    CHECK(!proto_following(&c));
    proto_job_free(job);
    proto_conn_cleanup(&c);
    frames_free(&f);
}

TEST(refusals_carry_their_kind)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    check_refused(&ctx, "carol", json_pack("[i]", 1), PERR_BAD_INPUT,
                  "Invalid data: expected a JSON object");
    const char *bad_id = "Invalid data: id must be 1-63 letters, digits, '-', '_' or '.'";
    check_refused(&ctx, "carol", chat_body("a/b", "hi", "submit-message"), PERR_BAD_INPUT, bad_id);
    check_refused(&ctx, "carol", chat_body("..", "hi", "submit-message"), PERR_BAD_INPUT, bad_id);
    check_refused(&ctx, "carol", json_pack("{s:[]}", "messages"), PERR_BAD_INPUT, bad_id);
    check_refused(&ctx, "carol", chat_body("aisdk-ref", "hi", "resume-stream"), PERR_BAD_INPUT,
                  "Invalid data: trigger must be \"submit-message\" or \"regenerate-message\"");
    check_refused(&ctx, "carol", json_pack("{s:s, s:{}}", "id", "aisdk-ref", "messages"),
                  PERR_BAD_INPUT, "Invalid data: messages must be an array of UI messages");
    const char *last = "Invalid data: the last message must be a user message with parts";
    check_refused(&ctx, "carol", chat_body("aisdk-ref", NULL, "submit-message"), PERR_BAD_INPUT,
                  last);
    check_refused(&ctx, "carol", json_pack("{s:s, s:[]}", "id", "aisdk-ref", "messages"),
                  PERR_BAD_INPUT, last);
    check_refused(&ctx, "carol",
                  json_pack("{s:s, s:[{s:s, s:[{s:s, s:s}]}]}", "id", "aisdk-ref", "messages",
                            "role", "user", "parts", "type", "file", "url", "x"),
                  PERR_BAD_INPUT, "Invalid data: the last message has no text part");
    char *big = malloc((size_t)cfg.max_message_length + 2);
    REQUIRE(big != NULL);
    memset(big, 'x', (size_t)cfg.max_message_length + 1);
    big[cfg.max_message_length + 1] = '\0';
    char msg[160];
    snprintf(msg, sizeof msg, "Invalid data: message too long (%d characters, max %d)",
             cfg.max_message_length + 1, cfg.max_message_length);
    check_refused(&ctx, "carol", chat_body("aisdk-ref", big, "submit-message"), PERR_TOO_LONG, msg);
    free(big);
    check_refused(&ctx, "carol", chat_body("aisdk-ref", NULL, "regenerate-message"),
                  PERR_BAD_INPUT, "Nothing to regenerate: the chat has no user message");
    /* another user's chat id */
    int nctx;
    const char *q = "mine [[fake tokens=5 token_ms=1]]";
    CHECK_INT(turn(&ctx, "aisdk-dave", "dave", q, "submit-message", q, &nctx), 0);
    check_refused(&ctx, "carol", chat_body("aisdk-dave", "hi", "submit-message"), PERR_NOT_FOUND,
                  "Chat not found");
    REQUIRE(store_conv_set_status(ctx.db, "aisdk-dave", "dave", "closed") == 0);
    check_refused(&ctx, "dave", chat_body("aisdk-dave", "hi", "submit-message"), PERR_CONFLICT,
                  "Chat is closed");
    /* nothing refused was stored */
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "aisdk-ref", 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 0);
    store_msgs_free(m, n);
    REQUIRE(store_msg_list(ctx.db, "aisdk-dave", 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 2);
    store_msgs_free(m, n);
    close_ctx(&ctx);
}

/* The last UI message's id is kept in the stored message's metadata
 * (ui_message_id): it is bounded (PROTO_AISDK_UI_ID_MAX bytes) like every
 * other client-given metadata, so a 900 KB id under the 1 MB body limit is
 * refused before anything (the chat included) is stored. */
static json_t *chat_body_uid(const char *id, const char *uid, const char *text)
{
    return json_pack("{s:s, s:[{s:s, s:s, s:[{s:s, s:s}]}], s:s}", "id", id, "messages", "id", uid,
                     "role", "user", "parts", "type", "text", "text", text, "trigger",
                     "submit-message");
}

TEST(ui_message_id_is_bounded)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char msg[160];
    snprintf(msg, sizeof msg, "Invalid data: a message id must be at most %d bytes",
             PROTO_AISDK_UI_ID_MAX);
    size_t sizes[2] = { PROTO_AISDK_UI_ID_MAX + 1, 900 * 1024 };
    for (int i = 0; i < 2; i++) {
        char *uid = malloc(sizes[i] + 1);
        REQUIRE(uid != NULL);
        memset(uid, 'u', sizes[i]);
        uid[sizes[i]] = '\0';
        check_refused(&ctx, "fay", chat_body_uid("aisdk-uid", uid, "hi"), PERR_BAD_INPUT, msg);
        free(uid);
    }
    struct conversation cv;
    CHECK_INT(store_conv_get(ctx.db, "aisdk-uid", NULL, &cv), STORE_NOT_FOUND);
    /* at the bound: taken, the id kept whole */
    char uid[PROTO_AISDK_UI_ID_MAX + 1];
    memset(uid, 'v', PROTO_AISDK_UI_ID_MAX);
    uid[PROTO_AISDK_UI_ID_MAX] = '\0';
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    CHECK_INT(post(&ctx, &c, "fay", chat_body_uid("aisdk-uid", uid, "bound [[fake tokens=2 token_ms=1]]"),
                   &f, &job), 0);
    CHECK_INT(c.err, PERR_OK);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "aisdk-uid", 10, 0, &m, &n, &total) == 0);
    REQUIRE(n == 2);
    json_t *um = json_loads(m[0].metadata, 0, NULL);
    CHECK_STR(proto_str(um, "ui_message_id"), uid);
    json_decref(um);
    store_msgs_free(m, n);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(resume_replays_the_running_answer_from_its_start)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c, r, none;
    struct proto_frames f, fr, fn;
    struct proto_job *job = NULL;
    frames_init(&f);
    frames_init(&fr);
    frames_init(&fn);
    /* nothing to resume: an unknown chat, an impossible id */
    REQUIRE(proto_open(&ctx, &none, PROTO_AISDK_PATH, "erin", "user:erin", &fn) == 0);
    CHECK_INT(proto_aisdk_resume(&ctx, &none, "aisdk-resume"), 1);
    CHECK_INT(proto_aisdk_resume(&ctx, &none, ".."), 1);
    CHECK(!proto_following(&none));
    const char *q = "resume me [[fake tokens=12 token_ms=25]]";
    REQUIRE(post(&ctx, &c, "erin", chat_body("aisdk-resume", q, "submit-message"), &f, &job) == 0);
    REQUIRE(job != NULL);
    /* a second POST while the answer runs: a conflict, nothing stored */
    check_refused(&ctx, "erin", chat_body("aisdk-resume", "again", "submit-message"),
                  PERR_CONFLICT,
                  "A response is still being generated; wait for it to finish or stop it");
    /* another user has nothing to resume there */
    struct proto_conn o;
    struct proto_frames fo;
    frames_init(&fo);
    REQUIRE(proto_open(&ctx, &o, PROTO_AISDK_PATH, "frank", "user:frank", &fo) == 0);
    CHECK_INT(proto_aisdk_resume(&ctx, &o, "aisdk-resume"), 1);
    proto_conn_cleanup(&o);
    frames_free(&fo);
    struct job_thread t;
    REQUIRE(job_start(&t, job) == 0);
    /* the first reader gets part of the answer, then "reloads" */
    int64_t end = mono_ms() + 10000;
    while (f.n < 6 && mono_ms() < end) {
        REQUIRE(proto_pump(&ctx, &c, &f) >= 0);
        sleep_ms(3);
    }
    CHECK(f.n >= 6 && f.n < 15);            /* mid-answer */
    REQUIRE(proto_open(&ctx, &r, PROTO_AISDK_PATH, "erin", "user:erin", &fr) == 0);
    CHECK_INT(proto_aisdk_resume(&ctx, &r, "aisdk-resume"), 0);
    CHECK(proto_following(&r));
    CHECK_INT(pump_to_end(&ctx, &r, &fr), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    pthread_join(t.th, NULL);
    CHECK_INT(t.rc, 0);
    /* the resumed stream is the whole answer, part for part */
    CHECK_INT(fr.n, f.n);
    for (int i = 0; i < f.n && i < fr.n; i++)
        CHECK_STR(fr.v[i], f.v[i]);
    char *want = fake_answer(q, 12);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "aisdk-resume", 10, 0, &m, &n, &total) == 0);
    REQUIRE(n == 2 && want);
    check_answer(&fr, 0, m[1].id, want);
    store_msgs_free(m, n);
    free(want);
    /* over: nothing to resume any more */
    CHECK_INT(proto_aisdk_resume(&ctx, &none, "aisdk-resume"), 1);
    proto_conn_cleanup(&c);
    proto_conn_cleanup(&r);
    proto_conn_cleanup(&none);
    frames_free(&fn);
    frames_free(&fr);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(upstream_error_is_the_error_part)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    const char *q = "break [[fake tokens=6 error_after=2 token_ms=1]]";
    REQUIRE(post(&ctx, &c, "gina", chat_body("aisdk-fail", q, "submit-message"), &f, &job) == 0);
    REQUIRE(job != NULL);
    run_job(&ctx, job);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    REQUIRE(f.n >= 4);
    json_t *s = frame(&f, 0);
    CHECK_STR(ftype(s), "start");
    json_decref(s);
    json_t *e = frame(&f, f.n - 1);
    CHECK_STR(ftype(e), "error");
    CHECK(json_is_string(json_object_get(e, "errorText")));
    CHECK_INT(json_object_size(e), 2);
    json_decref(e);
    for (int i = 0; i < f.n - 1; i++) {     /* no finish after the error */
        json_t *o = frame(&f, i);
        CHECK(strcmp(ftype(o), "finish") != 0);
        json_decref(o);
    }
    CHECK_INT(c.err, PERR_OK);      /* a failed generation is a part, not a refusal */
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(stopped_answer_ends_with_finish_other_stopped)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    const char *q = "stop me [[fake tokens=300 token_ms=10]]";
    REQUIRE(post(&ctx, &c, "hank", chat_body("aisdk-stop", q, "submit-message"), &f, &job) == 0);
    REQUIRE(job != NULL);
    struct job_thread t;
    REQUIRE(job_start(&t, job) == 0);
    int64_t end = mono_ms() + 10000;
    while (f.n < 6 && mono_ms() < end) {
        REQUIRE(proto_pump(&ctx, &c, &f) >= 0);
        sleep_ms(3);
    }
    enum perr kind;
    const char *msg;
    CHECK_INT(proto_stop_channel(&ctx, "conv:aisdk-stop", 0, "hank", 0, &kind, &msg, NULL),
              JOBS_STOP_OK);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    pthread_join(t.th, NULL);
    REQUIRE(f.n >= 6);
    check_frame(&f, f.n - 3, json_pack("{s:s, s:s}", "type", "text-end", "id", "text-1"));
    check_frame(&f, f.n - 2, json_pack("{s:s}", "type", "finish-step"));
    check_frame(&f, f.n - 1, json_pack("{s:s, s:s, s:{s:b}}", "type", "finish", "finishReason",
                                       "other", "messageMetadata", "stopped", 1));
    CHECK(f.n < 300);                       /* stopped before the end */
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("aisdk") < 0)
        return 1;
    RUN(three_turns_with_stored_history);
    RUN(regenerate_answers_the_last_user_message_again);
    RUN(refusals_carry_their_kind);
    RUN(ui_message_id_is_bounded);
    RUN(resume_replays_the_running_answer_from_its_start);
    RUN(upstream_error_is_the_error_part);
    RUN(stopped_answer_ends_with_finish_other_stopped);
    config_cleanup(&cfg);
    return th_done();
}
