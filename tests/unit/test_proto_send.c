/* test_proto_send.c — the seed 004 adapter (core/proto_send.c) driven the
 * way fcgi/api_send.c drives it (proto_open on PROTO_SEND_PATH,
 * proto_message with the request body, proto_job_run, proto_pump) against
 * the simulated LLM: the exact frames of an answer and of a failure, the
 * user and assistant messages stored, and every refusal's failure kind
 * (c->err) with its message — what the transport turns into a status. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "proto.h"
#include "store.h"
#include "util.h"

#include <jansson.h>

/* Creates conversation id owned by owner (status "active"). 0 / -1. */
static int make_conv(parley_db *db, const char *id, const char *owner)
{
    struct conversation cv;
    memset(&cv, 0, sizeof cv);
    str_copy(cv.id, sizeof cv.id, id);
    str_copy(cv.owner, sizeof cv.owner, owner);
    str_copy(cv.kind, sizeof cv.kind, "sse");
    return store_conv_create(db, &cv) == 0 ? 0 : -1;
}

/* The request body {"conversationId": conv, "content": content}. */
static char *body(const char *conv, const char *content)
{
    return dump(json_pack("{s:s, s:s}", "conversationId", conv, "content", content));
}

/* Opens a seed 004 connection for user and sends text; *job as the
 * adapter hands it back. Returns proto_message's result. */
static int send_req(struct parley_ctx *ctx, struct proto_conn *c, const char *user,
                    const char *text, struct proto_frames *f, struct proto_job **job)
{
    char peer[160];
    snprintf(peer, sizeof peer, "user:%s", user);
    *job = NULL;
    if (proto_open(ctx, c, PROTO_SEND_PATH, user, peer, f) < 0)
        return -2;
    return send_text(ctx, c, text, f, job);
}

TEST(answer_streams_and_stores)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    REQUIRE(make_conv(ctx.db, "conv-send-1", "alice") == 0);
    const char *content = "Explique SSE [[fake tokens=6 token_ms=1]]";
    char *want = fake_answer(content, 6);
    REQUIRE(want != NULL);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    char *b = body("conv-send-1", content);
    REQUIRE(send_req(&ctx, &c, "alice", b, &f, &job) == 0);
    free(b);
    CHECK_INT(c.kind, PROTO_SEND);
    CHECK_INT(c.err, PERR_OK);
    CHECK_INT(f.n, 0);
    REQUIRE(job != NULL);
    CHECK_STR(proto_job_channel(job), "conv:conv-send-1");
    CHECK(proto_following(&c));
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "conv-send-1", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 1);                       /* the user message, before any token */
    store_msgs_free(msgs, n);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    REQUIRE(f.n >= 2);
    /* {"content": piece}... then {"done", "messageId", "metadata"} */
    size_t cap = strlen(want) + 1, len = 0;
    char *got = calloc(1, cap + 64);
    REQUIRE(got != NULL);
    for (int i = 0; i < f.n - 1; i++) {
        json_t *o = frame(&f, i);
        CHECK_INT(json_object_size(o), 1);
        const char *piece = json_string_value(json_object_get(o, "content"));
        CHECK(piece != NULL);
        if (piece && len + strlen(piece) < cap + 64) {
            memcpy(got + len, piece, strlen(piece));
            len += strlen(piece);
        }
        json_decref(o);
    }
    CHECK_STR(got, want);
    free(got);
    REQUIRE(store_msg_list(ctx.db, "conv-send-1", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 2);
    json_t *d = frame(&f, f.n - 1);
    json_t *meta = json_object_get(d, "metadata");
    if (n == 2) {
        CHECK_STR(msgs[1].role, "assistant");
        CHECK_STR(msgs[1].content, want);
        /* byte for byte as before the adapter: key order, number forms */
        json_t *w = json_pack("{s:b, s:s, s:{s:i, s:O, s:s}}", "done", 1, "messageId", msgs[1].id,
                              "metadata", "tokens_used", 6, "processing_time",
                              json_object_get(meta, "processing_time"), "model", "llama3.2");
        check_frame(&f, f.n - 1, w);
    }
    CHECK(json_is_real(json_object_get(meta, "processing_time")));
    json_decref(d);
    store_msgs_free(msgs, n);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* A refusal: proto_message's result, the kind and message on c, and the
 * protocol's error frame {"error": msg, "done": true, "code": perr_code(kind)}. */
static void check_refused(struct parley_ctx *ctx, const char *user, const char *text, int want_rc,
                          enum perr kind, const char *msg)
{
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    CHECK_INT(send_req(ctx, &c, user, text, &f, &job), want_rc);
    CHECK(job == NULL);
    CHECK_STR(perr_name(c.err), perr_name(kind));
    CHECK_STR(c.err_msg, msg);
    CHECK_INT(f.n, 1);
    check_frame(&f, 0, json_pack("{s:s, s:b, s:s}", "error", msg, "done", 1, "code",
                                 perr_code(kind)));
    CHECK(!proto_following(&c));
    proto_job_free(job);
    proto_conn_cleanup(&c);
    frames_free(&f);
}

TEST(refusals_carry_their_kind)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    REQUIRE(make_conv(ctx.db, "conv-send-2", "bob") == 0);
    REQUIRE(make_conv(ctx.db, "conv-send-closed", "bob") == 0);
    REQUIRE(store_conv_set_status(ctx.db, "conv-send-closed", "bob", "closed") == 0);
    check_refused(&ctx, "bob", "{\"content\":\"hi\"}", 0, PERR_BAD_INPUT,
                  "Invalid data: conversationId must be a non-empty string");
    check_refused(&ctx, "bob", "{\"conversationId\":\"conv-send-2\",\"content\":\"\"}", 0,
                  PERR_BAD_INPUT, "Invalid data: content must be a non-empty string");
    check_refused(&ctx, "bob", "[1]", 0, PERR_BAD_INPUT, "Invalid data: expected a JSON object");
    char *big = malloc((size_t)cfg.max_message_length + 2);
    REQUIRE(big != NULL);
    memset(big, 'x', (size_t)cfg.max_message_length + 1);
    big[cfg.max_message_length + 1] = '\0';
    char *b = body("conv-send-2", big);
    char msg[160];
    snprintf(msg, sizeof msg, "Invalid data: content too long (%d characters, max %d)",
             cfg.max_message_length + 1, cfg.max_message_length);
    check_refused(&ctx, "bob", b, 0, PERR_TOO_LONG, msg);
    free(b);
    free(big);
    b = body("no-such-conv", "hi");
    check_refused(&ctx, "bob", b, 0, PERR_NOT_FOUND, "Conversation not found");
    free(b);
    b = body("conv-send-2", "hi");                  /* another user's */
    check_refused(&ctx, "carol", b, 0, PERR_NOT_FOUND, "Conversation not found");
    free(b);
    b = body("conv-send-closed", "hi");
    check_refused(&ctx, "bob", b, 0, PERR_CONFLICT, "Conversation is closed");
    free(b);
    /* nothing refused was stored */
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "conv-send-2", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 0);
    store_msgs_free(msgs, n);
    close_ctx(&ctx);
}

TEST(rate_limit_is_rate_limited)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    REQUIRE(make_conv(ctx.db, "conv-send-rl", "dave") == 0);
    int limit = cfg.rate_limit_per_min;
    for (int i = 0; i < limit; i++) {
        struct proto_conn c;
        struct proto_frames f;
        struct proto_job *job = NULL;
        frames_init(&f);
        char *b = body("conv-send-rl", "one more [[fake tokens=1 token_ms=0]]");
        CHECK_INT(send_req(&ctx, &c, "dave", b, &f, &job), 0);
        free(b);
        CHECK_INT(c.err, PERR_OK);
        if (job)
            CHECK_INT(run_job(&ctx, job), 0);
        proto_conn_cleanup(&c);
        frames_free(&f);
    }
    char *b = body("conv-send-rl", "over the limit");
    check_refused(&ctx, "dave", b, 0, PERR_RATE_LIMITED, "Rate limit exceeded");
    free(b);
    close_ctx(&ctx);
}

TEST(upstream_error_is_an_error_frame)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    REQUIRE(make_conv(ctx.db, "conv-send-fail", "erin") == 0);
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    char *b = body("conv-send-fail", "break [[fake tokens=6 error_after=2 token_ms=1]]");
    REQUIRE(send_req(&ctx, &c, "erin", b, &f, &job) == 0);
    free(b);
    REQUIRE(job != NULL);
    run_job(&ctx, job);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    REQUIRE(f.n >= 1);
    json_t *e = frame(&f, f.n - 1);
    CHECK(json_is_string(json_object_get(e, "error")));
    CHECK(json_is_true(json_object_get(e, "done")));
    CHECK_STR(json_string_value(json_object_get(e, "code")), "upstream_error");   /* after 2 tokens */
    CHECK_INT(json_object_size(e), 3);
    json_decref(e);
    CHECK_INT(c.err, PERR_OK);      /* a failed generation is a frame, not a refusal */
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("send") < 0)
        return 1;
    RUN(answer_streams_and_stores);
    RUN(refusals_carry_their_kind);
    RUN(rate_limit_is_rate_limited);
    RUN(upstream_error_is_an_error_frame);
    config_cleanup(&cfg);
    return th_done();
}
