/* test_proto_chat.c — the seed 001 chat adapter (core/proto_chat.c) driven
 * like a transport drives it (proto_open, proto_message, proto_job_run,
 * proto_pump) against the simulated LLM: every frame's exact JSON and
 * order, storage before/after, the context window, foreign and closed
 * sessions, validation, rate limit, reconnects that follow a running
 * answer, and a long-poll session moving to "another process" mid-stream. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "evlog.h"
#include "llm.h"
#include "proto.h"
#include "runner.h"
#include "store.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>

/* A client "message" frame (new string). */
static char *chat_msg(const char *content)
{
    json_t *o = json_pack("{s:s, s:s, s:{}, s:s}", "type", "message", "content", content,
                          "metadata", "timestamp", "2024-01-20T10:30:00.000Z");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static int send_chat(struct parley_ctx *ctx, struct proto_conn *c, const char *content,
                     struct proto_frames *f, struct proto_job **job)
{
    char *m = chat_msg(content);
    int rc = send_text(ctx, c, m, f, job);
    free(m);
    return rc;
}

static int is_iso_ms(const char *ts)
{
    /* 2024-01-20T10:30:00.123Z */
    if (!ts || strlen(ts) != 24)
        return 0;
    for (int i = 0; i < 24; i++) {
        char ch = ts[i];
        int digit = ch >= '0' && ch <= '9';
        switch (i) {
        case 4: case 7: if (ch != '-') return 0; break;
        case 10: if (ch != 'T') return 0; break;
        case 13: case 16: if (ch != ':') return 0; break;
        case 19: if (ch != '.') return 0; break;
        case 23: if (ch != 'Z') return 0; break;
        default: if (!digit) return 0;
        }
    }
    return 1;
}

static int count_messages(parley_db *db, const char *conv)
{
    struct message *m;
    int n;
    int64_t total = -1;
    if (store_msg_list(db, conv, 0, 0, &m, &n, &total) < 0)
        return -1;
    store_msgs_free(m, n);
    return (int)total;
}

/* Checks a complete answer's frames from index first: stream_start,
 * chunks reassembling want, stream_end; all with one message id (copied
 * to mid). Returns the index after stream_end. */
static int check_stream(const struct proto_frames *f, int first, const char *want, int tokens,
                        char mid[64])
{
    json_t *s = frame(f, first);
    CHECK_STR(ftype(s), "stream_start");
    const char *id = json_string_value(json_object_get(s, "message_id"));
    str_copy(mid, 64, id ? id : "");
    CHECK(strlen(mid) == 36);
    check_frame(f, first, json_pack("{s:s, s:s}", "type", "stream_start", "message_id", mid));
    json_decref(s);
    char text[16384] = "";
    size_t len = 0;
    int i = first + 1;
    for (; i < f->n; i++) {
        json_t *o = frame(f, i);
        if (strcmp(ftype(o) ? ftype(o) : "", "stream_chunk") != 0) {
            json_decref(o);
            break;
        }
        const char *piece = json_string_value(json_object_get(o, "content"));
        check_frame(f, i, json_pack("{s:s, s:s, s:s}", "type", "stream_chunk",
                                    "content", piece ? piece : "", "message_id", mid));
        if (piece && len + strlen(piece) < sizeof text) {
            memcpy(text + len, piece, strlen(piece) + 1);
            len += strlen(piece);
        }
        json_decref(o);
    }
    CHECK_STR(text, want);
    json_t *e = frame(f, i);
    CHECK_STR(ftype(e), "stream_end");
    json_t *md = json_object_get(e, "metadata");
    double secs = json_number_value(json_object_get(md, "processing_time"));
    CHECK(json_is_real(json_object_get(md, "processing_time")));
    CHECK(secs >= 0 && secs < 15);
    check_frame(f, i, json_pack("{s:s, s:s, s:{s:i, s:f, s:s, s:s}}", "type", "stream_end",
                                "message_id", mid, "metadata", "tokens_used", tokens,
                                "processing_time", secs, "agent_used", "llama3.2",
                                "model", "llama3.2"));
    json_decref(e);
    return i + 1;
}

/* ---- tests ---- */

TEST(connected_creates_session)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-connect?token=abc", "alice", "user:alice", &f) == 0);
    CHECK_INT(c.kind, PROTO_CHAT);
    CHECK_INT(f.n, 1);
    json_t *o = frame(&f, 0);
    const char *ts = json_string_value(json_object_get(o, "timestamp"));
    CHECK(is_iso_ms(ts));
    check_frame(&f, 0, json_pack("{s:s, s:s, s:s, s:s}", "type", "connected",
                                 "session_id", "sess-connect", "user_id", "alice",
                                 "timestamp", ts ? ts : ""));
    json_decref(o);
    CHECK_INT(c.close, 0);
    CHECK(!proto_following(&c));
    struct conversation conv;
    REQUIRE(store_conv_get(ctx.db, "sess-connect", "alice", &conv) == 0);
    CHECK_STR(conv.kind, "chat");
    CHECK_STR(conv.owner, "alice");
    CHECK_STR(conv.status, "active");
    store_conv_free(&conv);
    /* the same user comes back: same session, no error */
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-connect", "alice", "user:alice", &f) == 0);
    CHECK_INT(f.n, 1);
    o = frame(&f, 0);
    CHECK_STR(ftype(o), "connected");
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(message_streams_and_stores)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-stream", "alice", "user:alice-stream", &f) == 0);
    frames_free(&f);
    const char *content = "Olá, como está o tempo? [[fake tokens=8 token_ms=1]]";
    char *want = fake_answer(content, 8);
    REQUIRE(want != NULL);
    json_t *m = json_pack("{s:s, s:s, s:{s:s}, s:s}", "type", "message", "content", content,
                          "metadata", "client", "test", "timestamp", "2024-01-20T10:30:00Z");
    char *text = dump(m);
    struct proto_job *job = NULL;
    REQUIRE(send_text(&ctx, &c, text, &f, &job) == 0);
    free(text);
    REQUIRE(job != NULL);
    CHECK_INT(f.n, 0);
    CHECK(proto_following(&c));
    CHECK_STR(proto_job_channel(job), "conv:sess-stream");
    /* the user message is stored before the answer starts */
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "sess-stream", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(msgs[0].role, "user");
        CHECK_STR(msgs[0].content, content);
        CHECK_STR(msgs[0].metadata, "{\"client\":\"test\"}");
    }
    store_msgs_free(msgs, n);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char mid[64];
    int end = check_stream(&f, 0, want, 8, mid);
    CHECK_INT(end, f.n);
    /* ...and the assistant message after, with the streamed id */
    REQUIRE(store_msg_list(ctx.db, "sess-stream", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(msgs[0].role, "user");
        CHECK_STR(msgs[1].role, "assistant");
        CHECK_STR(msgs[1].content, want);
        CHECK_STR(msgs[1].id, mid);
        CHECK_INT(msgs[1].tokens, 8);
        CHECK_STR(msgs[1].model, "llama3.2");
    }
    store_msgs_free(msgs, n);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(context_is_last_ten_messages)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-context", "alice", "user:alice-ctx", &f) == 0);
    frames_free(&f);
    for (int i = 0; i < 12; i++) {
        struct message m;
        char content[32];
        store_msg_init(&m);
        snprintf(content, sizeof content, "old-%d", i);
        str_copy(m.conversation_id, sizeof m.conversation_id, "sess-context");
        str_copy(m.role, sizeof m.role, i % 2 ? "assistant" : "user");
        m.content = content;
        REQUIRE(store_msg_add(ctx.db, &m) == 0);
    }
    char content[128];
    snprintf(content, sizeof content, "newest question ctx-%ld [[fake tokens=3 token_ms=0]]",
             (long)getpid());
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, content, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    json_t *st = fake_stats();
    json_t *msgs = json_object_get(json_object_get(st, "last_body"), "messages");
    CHECK_INT(json_array_size(msgs), 10);
    for (size_t i = 0; i < json_array_size(msgs) && i < 9; i++) {
        char want[32];
        snprintf(want, sizeof want, "old-%zu", i + 3);
        json_t *m = json_array_get(msgs, i);
        CHECK_STR(json_string_value(json_object_get(m, "content")), want);
        CHECK_STR(json_string_value(json_object_get(m, "role")), (i + 3) % 2 ? "assistant" : "user");
    }
    json_t *last = json_array_get(msgs, 9);
    CHECK_STR(json_string_value(json_object_get(last, "role")), "user");
    CHECK_STR(json_string_value(json_object_get(last, "content")), content);
    json_decref(st);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(count_messages(ctx.db, "sess-context"), 14);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(foreign_and_closed_sessions_refused)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/alice-private", "alice", "user:alice", &f) == 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* bob may not even learn that it exists */
    REQUIRE(proto_open(&ctx, &c, "/ws/alice-private?token=bob", "bob", "user:bob", &f) == 0);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Session not found\",\"code\":\"not_found\"}");
    CHECK_INT(c.close, 1);
    CHECK_INT(c.close_code, 4404);
    CHECK(!proto_following(&c));
    proto_conn_cleanup(&c);
    frames_free(&f);
    struct conversation conv;
    REQUIRE(store_conv_get(ctx.db, "alice-private", NULL, &conv) == 0);
    CHECK_STR(conv.owner, "alice");
    store_conv_free(&conv);
    /* a session deleted or closed after the connection opened */
    REQUIRE(proto_open(&ctx, &c, "/ws/alice-private", "alice", "user:alice", &f) == 0);
    frames_free(&f);
    REQUIRE(store_conv_set_status(ctx.db, "alice-private", "alice", "closed") == 0);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, "still there?", &f, &job) == 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Session is closed\",\"code\":\"conflict\"}");
    CHECK_INT(c.close, 1);
    CHECK_INT(c.close_code, 4410);
    CHECK_INT(count_messages(ctx.db, "alice-private"), 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* opening a closed session */
    REQUIRE(proto_open(&ctx, &c, "/ws/alice-private", "alice", "user:alice", &f) == 0);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Session is closed\",\"code\":\"conflict\"}");
    CHECK_INT(c.close_code, 4410);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* an id that cannot be a session */
    REQUIRE(proto_open(&ctx, &c, "/ws/bad%20id", "alice", "user:alice", &f) == 0);
    CHECK_INT(f.n, 1);
    CHECK_INT(c.close, 1);
    CHECK_INT(c.close_code, 1008);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(bad_frames_and_ping)
{
    static const struct { const char *in, *out; } cases[] = {
        { "not json", "{\"type\":\"error\",\"message\":\"Invalid message format: not valid JSON\",\"code\":\"bad_input\"}" },
        { "[1,2]", "{\"type\":\"error\",\"message\":\"Invalid message format: expected a JSON object\",\"code\":\"bad_input\"}" },
        { "\"message\"", "{\"type\":\"error\",\"message\":\"Invalid message format: not valid JSON\",\"code\":\"bad_input\"}" },
        { "{}", "{\"type\":\"error\",\"message\":\"Invalid message format: missing \\\"type\\\"\",\"code\":\"bad_input\"}" },
        { "{\"type\":5}", "{\"type\":\"error\",\"message\":\"Invalid message format: \\\"type\\\" must be a string\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"typing\"}", "{\"type\":\"error\",\"message\":\"Unknown message type 'typing'\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\"}", "{\"type\":\"error\",\"message\":\"Invalid message format: missing \\\"content\\\"\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":null}", "{\"type\":\"error\",\"message\":\"Invalid message format: missing \\\"content\\\"\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":42}", "{\"type\":\"error\",\"message\":\"Invalid message format: \\\"content\\\" must be a string\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":\"a\\u0000b\"}", "{\"type\":\"error\",\"message\":\"Invalid message format: not valid JSON\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":\" \\n\\t \"}", "{\"type\":\"error\",\"message\":\"Message content is empty\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":\"hi\",\"metadata\":\"x\"}", "{\"type\":\"error\",\"message\":\"Invalid message format: \\\"metadata\\\" must be an object\",\"code\":\"bad_input\"}" },
        { "{\"type\":\"message\",\"content\":\"hi\",\"content\":\"twice\"}", "{\"type\":\"error\",\"message\":\"Invalid message format: not valid JSON\",\"code\":\"bad_input\"}" },
        /* 11 characters (22 bytes) with a limit of 10 */
        { "{\"type\":\"message\",\"content\":\"ããããããããããã\"}", "{\"type\":\"error\",\"message\":\"Message too long (max 10 characters)\",\"code\":\"too_long\"}" },
    };
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved = cfg.max_message_length;
    cfg.max_message_length = 10;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-bad", "carol", "user:carol-bad", &f) == 0);
    frames_free(&f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_job *job = NULL;
        CHECK_INT(send_text(&ctx, &c, cases[i].in, &f, &job), 0);
        CHECK(job == NULL);
        CHECK_INT(f.n, 1);
        if (f.n == 1)
            CHECK_STR(f.v[0], cases[i].out);
        CHECK_INT(c.close, 0);
        frames_free(&f);
    }
    CHECK_INT(count_messages(ctx.db, "sess-bad"), 0);
    /* ping -> pong */
    struct proto_job *job = NULL;
    CHECK_INT(send_text(&ctx, &c, "{\"type\":\"ping\"}", &f, &job), 0);
    CHECK(job == NULL);
    json_t *o = frame(&f, 0);
    const char *ts = json_string_value(json_object_get(o, "timestamp"));
    CHECK(is_iso_ms(ts));
    check_frame(&f, 0, json_pack("{s:s, s:s}", "type", "pong", "timestamp", ts ? ts : ""));
    CHECK_INT(f.n, 1);
    json_decref(o);
    frames_free(&f);
    /* exactly the limit in characters (20 bytes) is fine */
    CHECK_INT(send_chat(&ctx, &c, "ãããããããããã", &f, &job), 0);
    CHECK(job != NULL);
    CHECK_INT(f.n, 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    o = frame(&f, f.n - 1);
    CHECK_STR(ftype(o), "stream_end");
    json_decref(o);
    CHECK_INT(count_messages(ctx.db, "sess-bad"), 2);
    cfg.max_message_length = saved;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(rate_limit_31st_message)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 30;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    char peer[64];
    snprintf(peer, sizeof peer, "user:rate-%ld", (long)getpid());
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-rate", "dave", peer, &f) == 0);
    frames_free(&f);
    int started = 0;
    for (int i = 0; i < 30; i++) {
        char content[64];
        snprintf(content, sizeof content, "question %d [[fake tokens=1 token_ms=0]]", i);
        struct proto_job *job = NULL;
        if (send_chat(&ctx, &c, content, &f, &job) != 0 || !job)
            break;
        started++;
        run_job(&ctx, job);
        pump_to_end(&ctx, &c, &f);
        frames_free(&f);
    }
    CHECK_INT(started, 30);
    CHECK_INT(count_messages(ctx.db, "sess-rate"), 60);
    struct proto_job *job = NULL;
    CHECK_INT(send_chat(&ctx, &c, "one too many", &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Rate limit exceeded\",\"code\":\"rate_limited\"}");
    CHECK_INT(c.close, 0);
    CHECK_INT(count_messages(ctx.db, "sess-rate"), 60);
    cfg.rate_limit_per_min = saved;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* PARLEY_CHAT_QUEUE=0: a message during an answer is refused (conflict),
 * as before the queue existed. */
TEST(one_generation_per_connection)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_queue = cfg.chat_queue;
    cfg.chat_queue = 0;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-busy", "erin", "user:erin", &f) == 0);
    frames_free(&f);
    struct proto_job *job = NULL, *job2 = NULL;
    REQUIRE(send_chat(&ctx, &c, "first [[fake tokens=3 token_ms=0]]", &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(send_chat(&ctx, &c, "second", &f, &job2), 0);
    CHECK(job2 == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":"
                          "\"A response is still being generated; wait for it to finish\","
                          "\"code\":\"conflict\"}");
    CHECK_INT(count_messages(ctx.db, "sess-busy"), 1);
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    frames_free(&f);
    /* once it ended, the next message is welcome */
    CHECK_INT(send_chat(&ctx, &c, "third [[fake tokens=2 token_ms=0]]", &f, &job2), 0);
    REQUIRE(job2 != NULL);
    CHECK_INT(run_job(&ctx, job2), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(count_messages(ctx.db, "sess-busy"), 4);
    cfg.chat_queue = saved_queue;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* The chunks of frames [from, to) of f that carry message id mid,
 * concatenated (new string). */
static char *chunks_of(const struct proto_frames *f, int from, int to, const char *mid)
{
    size_t cap = 1 << 16, len = 0;
    char *s = calloc(1, cap);
    for (int i = from; s && i < to; i++) {
        json_t *o = frame(f, i);
        const char *m = json_string_value(json_object_get(o, "message_id"));
        const char *t = json_string_value(json_object_get(o, "content"));
        if (!strcmp(ftype(o), "stream_chunk") && m && !strcmp(m, mid) && t &&
            len + strlen(t) + 1 < cap) {
            memcpy(s + len, t, strlen(t));
            len += strlen(t);
        }
        json_decref(o);
    }
    return s;
}

/* Messages sent while an answer streams wait their turn (sql 008) and are
 * answered in order, each with its own context; beyond PARLEY_CHAT_QUEUE,
 * queue_full. The generation loop's end hook starts each next answer. */
TEST(queued_messages_answered_in_order)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_queue = cfg.chat_queue;
    cfg.chat_queue = 2;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-queue", "quinn", "user:quinn", &f) == 0);
    frames_free(&f);
    const char *q1 = "one [[fake tokens=6 token_ms=15]]", *q2 = "two [[fake tokens=3 token_ms=0]]",
               *q3 = "three [[fake tokens=2 token_ms=0]]";
    struct proto_job *job = NULL, *none = NULL;
    REQUIRE(send_chat(&ctx, &c, q1, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(send_chat(&ctx, &c, q2, &f, &none), 0);
    CHECK(none == NULL);
    CHECK_INT(f.n, 0);                          /* queued: no frame, no error */
    json_t *m3 = json_pack("{s:s, s:s, s:b}", "type", "message", "content", q3, "stream", 0);
    char *t3 = dump(m3);
    CHECK_INT(send_text(&ctx, &c, t3, &f, &none), 0);
    free(t3);
    CHECK(none == NULL);
    CHECK_INT(f.n, 0);
    CHECK_INT(send_chat(&ctx, &c, "four", &f, &none), 0);
    CHECK(none == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Too many messages waiting for an "
                          "answer (max 2); wait for one to finish\",\"code\":\"queue_full\"}");
    CHECK_INT(c.err, PERR_QUEUE_FULL);
    frames_free(&f);
    CHECK_INT(count_messages(ctx.db, "sess-queue"), 3);     /* "four" was not stored */
    char first[64];
    int64_t queued = 0;
    REQUIRE(store_msg_queued(ctx.db, "sess-queue", first, &queued) == 0);
    CHECK_INT(queued, 2);

    /* the first answer runs on the generation loop; the rest follow */
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char *a1 = fake_answer(q1, 6), *a2 = fake_answer(q2, 3), *a3 = fake_answer(q3, 2);
    /* stream_start A1, chunks, stream_end A1, stream_start A2, chunks,
     * stream_end A2, then A3 as one frame (sent "stream": false) */
    int i = 0, ends = 0;
    char mid1[64] = "", mid2[64] = "";
    json_t *o = frame(&f, 0);
    CHECK_STR(ftype(o), "stream_start");
    str_copy(mid1, sizeof mid1, json_string_value(json_object_get(o, "message_id")));
    json_decref(o);
    for (i = 0; i < f.n && ends < 2; i++) {
        o = frame(&f, i);
        if (!strcmp(ftype(o), "stream_end"))
            ends++;
        if (!strcmp(ftype(o), "stream_start") && ends == 1)
            str_copy(mid2, sizeof mid2, json_string_value(json_object_get(o, "message_id")));
        json_decref(o);
    }
    CHECK_INT(ends, 2);
    CHECK(mid1[0] && mid2[0] && strcmp(mid1, mid2) != 0);
    char *s1 = chunks_of(&f, 0, i, mid1), *s2 = chunks_of(&f, 0, i, mid2);
    CHECK_STR(s1, a1);
    CHECK_STR(s2, a2);
    free(s1);
    free(s2);
    CHECK_INT(f.n, i + 1);                      /* then exactly the one answer frame */
    o = frame(&f, f.n - 1);
    CHECK(o && !json_object_get(o, "type"));
    CHECK(json_is_false(json_object_get(o, "stream")));
    CHECK_STR(json_string_value(json_object_get(o, "content")), a3);
    json_decref(o);
    /* the history reads question, answer, question, answer; nothing queued */
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "sess-queue", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 6);
    const char *want[6] = { q1, a1, q2, a2, q3, a3 };
    for (int k = 0; k < n && k < 6; k++) {
        CHECK_STR(msgs[k].role, k % 2 ? "assistant" : "user");
        CHECK_STR(msgs[k].content, want[k]);
        CHECK_INT(msgs[k].queued, 0);
    }
    store_msgs_free(msgs, n);
    CHECK_INT(proto_jobs_drain(5000), 0);
    free(a1);
    free(a2);
    free(a3);
    cfg.chat_queue = saved_queue;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* A message left queued by a process that died before answering it is
 * answered when a client connects to the session. */
TEST(stalled_queue_answered_on_connect)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-stalled", "stella", "user:stella", &f) == 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    const char *q = "left behind [[fake tokens=3 token_ms=0]]";
    struct message um;
    store_msg_init(&um);
    str_copy(um.conversation_id, sizeof um.conversation_id, "sess-stalled");
    str_copy(um.role, sizeof um.role, "user");
    um.content = (char *)q;
    um.queued = 1;
    REQUIRE(store_msg_add(ctx.db, &um) == 0);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-stalled", "stella", "user:stella", &f) == 0);
    CHECK(proto_following(&c));
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char *a = fake_answer(q, 3);
    {
        json_t *e = frame(&f, f.n - 1);
        CHECK_STR(ftype(e), "stream_end");
        json_decref(e);
    }
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "sess-stalled", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_INT(msgs[0].queued, 0);
        CHECK_STR(msgs[1].content, a);
    }
    store_msgs_free(msgs, n);
    free(a);
    CHECK_INT(proto_jobs_drain(5000), 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* Seed 001's ChatSession: metadata from the connection, project_id from
 * the path, status active -> idle after WEBSOCKET_TIMEOUT -> active. */
TEST(session_metadata_project_and_status)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_client cl = { "Mozilla/5.0 (test)", "203.0.113.7", NULL, NULL, NULL };
    REQUIRE(proto_open_client(&ctx, &c, "/ws/sess-meta?project_id=65a1f0c2e4b0a1b2c3d4e5f6&client_version=2.1.0",
                              "mia", "user:mia", &cl, &f) == 0);
    CHECK_INT(c.close, 0);
    struct conversation conv;
    REQUIRE(store_conv_get(ctx.db, "sess-meta", "mia", &conv) == 0);
    CHECK_STR(conv.project_id ? conv.project_id : "", "65a1f0c2e4b0a1b2c3d4e5f6");
    json_t *md = json_loads(conv.metadata, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(md, "user_agent")), "Mozilla/5.0 (test)");
    CHECK_STR(json_string_value(json_object_get(md, "ip_address")), "203.0.113.7");
    CHECK_STR(json_string_value(json_object_get(md, "client_version")), "2.1.0");
    json_decref(md);
    int64_t now = now_ms();
    CHECK(conv.last_activity >= now - 5000 && conv.last_activity <= now);
    CHECK_STR(store_conv_status(&conv, now, 300000), "active");
    CHECK_STR(store_conv_status(&conv, now + 300001, 300000), "idle");
    store_conv_free(&conv);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* a later connection with a header version and no address keeps the
     * address it had and does not move the project */
    struct proto_client cl2 = { NULL, NULL, "3.0", NULL, NULL };
    REQUIRE(proto_open_client(&ctx, &c, "/ws/sess-meta?project_id=other", "mia", "user:mia", &cl2, &f) == 0);
    REQUIRE(store_conv_get(ctx.db, "sess-meta", "mia", &conv) == 0);
    CHECK_STR(conv.project_id ? conv.project_id : "", "65a1f0c2e4b0a1b2c3d4e5f6");
    md = json_loads(conv.metadata, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(md, "ip_address")), "203.0.113.7");
    CHECK_STR(json_string_value(json_object_get(md, "client_version")), "3.0");
    json_decref(md);
    store_conv_free(&conv);
    /* idle, then active again on the next frame or connection */
    REQUIRE(store_conv_set_status(ctx.db, "sess-meta", "mia", "idle") == 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-meta", "mia", "user:mia", &f) == 0);
    REQUIRE(store_conv_get(ctx.db, "sess-meta", "mia", &conv) == 0);
    CHECK_STR(store_conv_status(&conv, now_ms(), 300000), "active");
    store_conv_free(&conv);
    /* closed stays closed: its connection is refused */
    REQUIRE(store_conv_set_status(ctx.db, "sess-meta", "mia", "closed") == 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-meta", "mia", "user:mia", &f) == 0);
    CHECK_INT(c.close_code, 4410);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* a bad project id is refused before anything is created */
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-badproj?project_id=a%20b", "mia", "user:mia", &f) == 0);
    CHECK_INT(c.close_code, 1008);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":\"Invalid project_id: use 1-64 letters, "
                          "digits, '-', '_' or '.'\",\"code\":\"bad_input\"}");
    CHECK_INT(store_conv_get(ctx.db, "sess-badproj", NULL, &conv), 1);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* Concatenated content of every stream_chunk in f (new string), and
 * whether each carried message id mid. */
static char *chunk_text(const struct proto_frames *f, const char *mid, int *all_ids)
{
    size_t cap = 16384, len = 0;
    char *s = calloc(1, cap);
    *all_ids = 1;
    for (int i = 0; s && i < f->n; i++) {
        json_t *o = frame(f, i);
        if (!strcmp(ftype(o) ? ftype(o) : "", "stream_chunk")) {
            const char *p = json_string_value(json_object_get(o, "content"));
            const char *id = json_string_value(json_object_get(o, "message_id"));
            if (!id || strcmp(id, mid) != 0)
                *all_ids = 0;
            if (p && len + strlen(p) < cap) {
                memcpy(s + len, p, strlen(p) + 1);
                len += strlen(p);
            }
        }
        json_decref(o);
    }
    return s;
}

TEST(reconnect_follows_running_answer)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn a, b, r;
    struct proto_frames fa, fb, fr;
    frames_init(&fa);
    frames_init(&fb);
    frames_init(&fr);
    REQUIRE(proto_open(&ctx, &a, "/ws/sess-reconnect", "frank", "user:frank", &fa) == 0);
    frames_free(&fa);
    const char *content = "tell me a long story [[fake tokens=30 token_ms=15]]";
    char *want = fake_answer(content, 30);
    REQUIRE(want != NULL);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &a, content, &fa, &job) == 0);
    REQUIRE(job != NULL);
    struct job_thread t;
    REQUIRE(job_start(&t, job) == 0);
    /* wait until a few tokens are in the log */
    struct evlog_event *ev = NULL;
    int n = 0, tokens = 0;
    int64_t second_token = 0;
    for (int tries = 0; tries < 500 && tokens < 3; tries++) {
        evlog_free(ev, n);
        n = evlog_read(ctx.db, "conv:sess-reconnect", 0, 256, &ev);
        tokens = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(ev[i].type, "token") && ++tokens == 2)
                second_token = ev[i].seq;
        if (tokens < 3)
            sleep_ms(5);
    }
    CHECK(tokens >= 3);
    /* the text after the second token event: what a client resuming there misses */
    size_t skip = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(ev[i].type, "token") && ev[i].seq <= second_token)
            skip += ev[i].data_len;
    evlog_free(ev, n);

    /* b: the same user reconnects without a cursor -> the whole answer */
    REQUIRE(proto_open(&ctx, &b, "/ws/sess-reconnect", "frank", "user:frank", &fb) == 0);
    json_t *o = frame(&fb, 0);
    CHECK_STR(ftype(o), "connected");
    json_decref(o);
    CHECK(proto_following(&b));
    /* r: reconnects with ?after= the second token's seq -> only the rest */
    char path[128];
    snprintf(path, sizeof path, "/ws/sess-reconnect?token=x&after=%lld", (long long)second_token);
    REQUIRE(proto_open(&ctx, &r, path, "frank", "user:frank", &fr) == 0);
    CHECK(proto_following(&r));
    CHECK_INT(pump_to_end(&ctx, &a, &fa), 0);
    CHECK_INT(pump_to_end(&ctx, &b, &fb), 0);
    CHECK_INT(pump_to_end(&ctx, &r, &fr), 0);
    pthread_join(t.th, NULL);
    CHECK_INT(t.rc, 0);

    char mid[64];
    CHECK_INT(check_stream(&fa, 0, want, 30, mid), fa.n);
    char mid_b[64];
    CHECK_INT(check_stream(&fb, 1, want, 30, mid_b), fb.n);
    CHECK_STR(mid_b, mid);
    /* r starts mid-answer: chunks still carry the message id */
    o = frame(&fr, 1);
    CHECK_STR(ftype(o), "stream_chunk");
    json_decref(o);
    int ids = 0;
    char *rest = chunk_text(&fr, mid, &ids);
    CHECK(ids);
    CHECK(skip > 0 && skip < strlen(want));
    CHECK_STR(rest, want + (skip < strlen(want) ? skip : 0));
    free(rest);
    o = frame(&fr, fr.n - 1);
    CHECK_STR(ftype(o), "stream_end");
    CHECK_STR(json_string_value(json_object_get(o, "message_id")), mid);
    json_decref(o);
    free(want);
    proto_conn_cleanup(&a);
    proto_conn_cleanup(&b);
    proto_conn_cleanup(&r);
    frames_free(&fa);
    frames_free(&fb);
    frames_free(&fr);
    close_ctx(&ctx);
}

/* Two jobs running on one session (a second answer started by another
 * connection): a reconnect follows the NEWEST, the same rule as the ticket
 * REST and SSE endpoints (jobs_running_on); it used to follow the oldest. */
TEST(reconnect_follows_newest_running_job)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn a, b;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &a, "/ws/sess-two-jobs", "gina", "user:gina", &f) == 0);
    proto_conn_cleanup(&a);
    frames_free(&f);
    struct job_claim c1, c2;
    char err[256];
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "conv:sess-two-jobs", "m1", 60000, &c1, err, sizeof err) == 0);
    REQUIRE(jobs_claim(ctx.db, ctx.bell, "conv:sess-two-jobs", "m2", 60000, &c2, err, sizeof err) == 0);
    REQUIRE(c1.owner && c2.owner && c2.job_id > c1.job_id);
    REQUIRE(proto_open(&ctx, &b, "/ws/sess-two-jobs", "gina", "user:gina", &f) == 0);
    CHECK(proto_following(&b));
    CHECK_INT(b.job_id, c2.job_id);
    int64_t job = 0, first = 0;
    CHECK_INT(jobs_running_on(ctx.db, "conv:sess-two-jobs", &job, &first), 0);
    CHECK_INT(job, b.job_id);
    proto_conn_cleanup(&b);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(save_load_mid_stream)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-poll?seq=1", "gina", "user:gina", &f) == 0);
    frames_free(&f);
    const char *content = "long-poll me [[fake tokens=25 token_ms=10]]";
    char *want = fake_answer(content, 25);
    REQUIRE(want != NULL);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, content, &f, &job) == 0);
    REQUIRE(job != NULL);
    struct job_thread t;
    REQUIRE(job_start(&t, job) == 0);
    /* the first poll request sees the start and a few chunks */
    for (int tries = 0; tries < 500 && f.n < 3; tries++) {
        proto_pump(&ctx, &c, &f);
        if (f.n < 3)
            sleep_ms(5);
    }
    CHECK(f.n >= 3);
    char *saved = proto_conn_save(&c);
    REQUIRE(saved != NULL);
    proto_conn_cleanup(&c);
    close_ctx(&ctx);

    /* the next one is served by "another process": new connection to the db */
    struct parley_ctx ctx2;
    REQUIRE(open_ctx(&ctx2) == 0);
    struct proto_conn c2;
    REQUIRE(proto_conn_load(&c2, saved) == 0);
    free(saved);
    CHECK(proto_following(&c2));
    CHECK_INT(pump_to_end(&ctx2, &c2, &f), 0);
    pthread_join(t.th, NULL);
    CHECK_INT(t.rc, 0);
    json_t *o = frame(&f, 0);
    const char *mid = json_string_value(json_object_get(o, "message_id"));
    CHECK_STR(ftype(o), "stream_start");
    int ids = 0;
    char *text = chunk_text(&f, mid ? mid : "", &ids);
    CHECK(ids);
    CHECK_STR(text, want);
    free(text);
    /* seq=1: every streamed frame carries its increasing seq */
    json_int_t prev = 0;
    for (int i = 0; i < f.n; i++) {
        json_t *fi = frame(&f, i);
        json_t *s = json_object_get(fi, "seq");
        CHECK(json_is_integer(s));
        CHECK(json_integer_value(s) > prev);
        prev = json_integer_value(s);
        json_decref(fi);
    }
    json_t *e = frame(&f, f.n - 1);
    CHECK_STR(ftype(e), "stream_end");
    CHECK_STR(json_string_value(json_object_get(e, "message_id")), mid ? mid : "?");
    json_decref(e);
    json_decref(o);
    CHECK_INT(count_messages(ctx2.db, "sess-poll"), 2);
    free(want);
    proto_conn_cleanup(&c2);
    frames_free(&f);
    close_ctx(&ctx2);
}

TEST(upstream_error_is_an_error_frame)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-fail", "hank", "user:hank", &f) == 0);
    frames_free(&f);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, "break [[fake tokens=6 error_after=2 token_ms=1]]", &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    json_t *s = frame(&f, 0);
    CHECK_STR(ftype(s), "stream_start");
    const char *mid = json_string_value(json_object_get(s, "message_id"));
    json_t *e = frame(&f, f.n - 1);
    const char *msg = json_string_value(json_object_get(e, "message"));
    CHECK(msg && strstr(msg, "error was encountered"));
    /* the upstream failed after 2 tokens had streamed */
    check_frame(&f, f.n - 1, json_pack("{s:s, s:s, s:s, s:s}", "type", "error",
                                       "message", msg ? msg : "", "message_id", mid ? mid : "",
                                       "code", "upstream_error"));
    CHECK(f.n >= 3);      /* start, the tokens shown before the failure, error */
    json_decref(s);
    json_decref(e);
    /* no assistant message for a failed answer */
    CHECK_INT(count_messages(ctx.db, "sess-fail"), 1);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

/* A message with "stream": false gets one frame, the seed's
 * process_message result {message_id, content, stream:false, chunks,
 * metadata}, and no stream_start/chunk/end; the answer is stored under
 * that message id. A "stream" that is not a boolean is refused. */
TEST(stream_false_one_answer_frame)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/sess-nostream", "alice", "user:alice-nostream", &f) == 0);
    frames_free(&f);
    const char *content = "all at once [[fake tokens=60 token_ms=0]]";
    char *want = fake_answer(content, 60);
    REQUIRE(want != NULL);
    struct proto_job *job = NULL;
    CHECK_INT(send_text(&ctx, &c, "{\"type\":\"message\",\"content\":\"x\",\"stream\":\"no\"}",
                        &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"message\":"
                          "\"Invalid message format: \\\"stream\\\" must be true or false\","
                          "\"code\":\"bad_input\"}");
    frames_free(&f);
    json_t *m = json_pack("{s:s, s:s, s:b}", "type", "message", "content", content, "stream", 0);
    char *text = dump(m);
    REQUIRE(send_text(&ctx, &c, text, &f, &job) == 0);
    free(text);
    REQUIRE(job != NULL);
    CHECK_INT(f.n, 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(f.n, 1);
    json_t *o = frame(&f, 0);
    const char *mid = json_string_value(json_object_get(o, "message_id"));
    CHECK(mid && strlen(mid) == 36);
    json_t *md = json_object_get(o, "metadata");
    double secs = json_number_value(json_object_get(md, "processing_time"));
    /* the seed's chunk_response: groups of 50 words joined by one space */
    json_t *chunks = json_array();
    const char *p = want;
    char group[8192];
    size_t gl = 0;
    int words = 0;
    while (*p) {
        p += strspn(p, " \t\n");
        size_t w = strcspn(p, " \t\n");
        if (!w)
            break;
        if (gl)
            group[gl++] = ' ';
        memcpy(group + gl, p, w);
        gl += w;
        p += w;
        if (++words == 50) {
            json_array_append_new(chunks, json_stringn(group, gl));
            gl = 0;
            words = 0;
        }
    }
    if (words)
        json_array_append_new(chunks, json_stringn(group, gl));
    CHECK(json_array_size(chunks) == 2);
    check_frame(&f, 0, json_pack("{s:s, s:s, s:b, s:o, s:{s:i, s:f, s:s, s:s}}",
                                 "message_id", mid ? mid : "", "content", want, "stream", 0,
                                 "chunks", chunks, "metadata", "tokens_used", 60,
                                 "processing_time", secs, "agent_used", "llama3.2",
                                 "model", "llama3.2"));
    struct message *msgs;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "sess-nostream", 10, 0, &msgs, &n, &total) == 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(msgs[1].role, "assistant");
        CHECK_STR(msgs[1].id, mid ? mid : "");
        CHECK_STR(msgs[1].content, want);
    }
    store_msgs_free(msgs, n);
    json_decref(o);
    frames_free(&f);
    /* the next message, without "stream", streams again */
    CHECK_INT(send_chat(&ctx, &c, "again [[fake tokens=3 token_ms=0]]", &f, &job), 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char *want2 = fake_answer("again [[fake tokens=3 token_ms=0]]", 3);
    char mid2[64];
    CHECK_INT(check_stream(&f, 0, want2, 3, mid2), f.n);
    free(want2);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("chat") < 0)
        return 1;
    char err[512];
    /* the generation loop (queued answers) opens its own connection */
    if (config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err) < 0) {
        printf("not ok 1 - setup: %s\n", err);
        return 1;
    }
    RUN(connected_creates_session);
    RUN(message_streams_and_stores);
    RUN(context_is_last_ten_messages);
    RUN(foreign_and_closed_sessions_refused);
    RUN(bad_frames_and_ping);
    RUN(rate_limit_31st_message);
    RUN(one_generation_per_connection);
    RUN(queued_messages_answered_in_order);
    RUN(stalled_queue_answered_on_connect);
    RUN(session_metadata_project_and_status);
    RUN(reconnect_follows_running_answer);
    RUN(reconnect_follows_newest_running_job);
    RUN(save_load_mid_stream);
    RUN(upstream_error_is_an_error_frame);
    RUN(stream_false_one_answer_frame);
    /* the queue's and the session's storage on PostgreSQL (t0846) */
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        proto_jobs_drain(5000);
        str_copy(dbpath, sizeof dbpath, pg);
        if (config_set(&cfg, "PARLEY_DB", pg, err, sizeof err) < 0) {
            printf("not ok - PARLEY_TEST_PG: %s\n", err);
            return 1;
        }
        printf("# backend: PostgreSQL (PARLEY_TEST_PG)\n");
        RUN(connected_creates_session);
        RUN(message_streams_and_stores);
        RUN(one_generation_per_connection);
        RUN(queued_messages_answered_in_order);
        RUN(stalled_queue_answered_on_connect);
        RUN(session_metadata_project_and_status);
    }
    config_cleanup(&cfg);
    return th_done();
}
