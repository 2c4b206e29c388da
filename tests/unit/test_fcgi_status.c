/* test_fcgi_status.c — failure kinds reach HTTP statuses through the one
 * table (fcgi/status.c), and the two SSE handlers that now only carry
 * frames (fcgi/api_send.c seed 004, fcgi/api_tickets.c seed 000) answer a
 * refusal with its kind's status and a stream with the adapter's frames,
 * dispatched in memory (memres.h) against the simulated LLM. */
#include "th.h"
#include "protohelp.h"
#include "memres.h"
#include "status.h"
#include "store.h"
#include "util.h"

#include <jansson.h>

/* One connection and bell for the whole program, like a parley.fcgi
 * process: generations run on the process's loop (proto_job_submit) and may
 * still ring the bell after a stream saw their "done". */
static struct parley_ctx shared;

TEST(table_maps_every_kind)
{
    static const struct { enum perr kind; int status; } want[] = {
        { PERR_OK, 200 }, { PERR_BAD_INPUT, 400 }, { PERR_UNAUTHORIZED, 401 },
        { PERR_FORBIDDEN, 403 }, { PERR_NOT_FOUND, 404 }, { PERR_CONFLICT, 409 },
        { PERR_GONE, 410 }, { PERR_TOO_LARGE, 413 }, { PERR_RATE_LIMITED, 429 },
        { PERR_UPSTREAM, 502 }, { PERR_DB, 500 }, { PERR_DB_READONLY, 503 }, { PERR_DB_UNAVAILABLE, 503 },
        { PERR_UNAVAILABLE, 503 }, { PERR_INTERNAL, 500 }, { PERR_BUDGET_EXHAUSTED, 429 },
        { PERR_TOO_LONG, 400 }, { PERR_QUEUE_FULL, 429 },
    };
    CHECK_INT(sizeof want / sizeof want[0], PERR_COUNT_);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_INT(http_status_of(want[i].kind), want[i].status);
    CHECK_INT(http_status_of((enum perr)PERR_COUNT_), 500);
    CHECK_INT(http_status_of((enum perr)-1), 500);
}

/* A 200 text/event-stream body's "data:" payloads, in order (new JSON
 * array); comment and id lines are skipped. */
static json_t *data_lines(const char *body)
{
    json_t *a = json_array();
    for (const char *p = body; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 6 && !strncmp(p, "data: ", 6))
            json_array_append_new(a, json_stringn(p + 6, n - 6));
        p = nl ? nl + 1 : NULL;
    }
    return a;
}

static const char *message_of(const char *body, char *buf, size_t len)
{
    json_t *o = json_loads(body, 0, NULL);
    str_copy(buf, len, json_string_value(json_object_get(o, "message")));
    json_decref(o);
    return buf;
}

static int make_conv(parley_db *db, const char *id, const char *status)
{
    struct conversation cv;
    memset(&cv, 0, sizeof cv);
    str_copy(cv.id, sizeof cv.id, id);
    str_copy(cv.kind, sizeof cv.kind, "sse");
    if (store_conv_create(db, &cv) != 0)
        return -1;
    return status ? store_conv_set_status(db, id, "", status) : 0;
}

TEST(send_refusals_by_kind)
{
    struct parley_ctx ctx = shared;
    REQUIRE(make_conv(ctx.db, "st-closed", "closed") == 0);
    char *body = NULL, m[256];
    CHECK_INT(mem_dispatch(&ctx, "POST", "/api/chat/send", "",
                           "{\"conversationId\":\"st-none\",\"content\":\"hi\"}", &body), 404);
    CHECK_STR(message_of(body, m, sizeof m), "Conversation not found");
    free(body);
    CHECK_INT(mem_dispatch(&ctx, "POST", "/api/chat/send", "",
                           "{\"conversationId\":\"st-closed\",\"content\":\"hi\"}", &body), 409);
    CHECK_STR(message_of(body, m, sizeof m), "Conversation is closed");
    free(body);
    CHECK_INT(mem_dispatch(&ctx, "POST", "/api/chat/send", "", "{\"conversationId\":\"st-closed\"}",
                           &body), 400);
    CHECK_STR(message_of(body, m, sizeof m), "Invalid data: content must be a non-empty string");
    free(body);
}

TEST(send_streams_the_adapter_frames)
{
    struct parley_ctx ctx = shared;
    REQUIRE(make_conv(ctx.db, "st-open", NULL) == 0);
    const char *content = "stream it [[fake tokens=4 token_ms=1]]";
    char *want = fake_answer(content, 4);
    REQUIRE(want != NULL);
    char *req = dump(json_pack("{s:s, s:s}", "conversationId", "st-open", "content", content));
    char *body = NULL;
    CHECK_INT(mem_dispatch(&ctx, "POST", "/api/chat/send", "", req, &body), 200);
    json_t *a = data_lines(body);
    size_t n = json_array_size(a);
    REQUIRE(n >= 2);
    char text[512] = "";
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *o = json_loads(json_string_value(json_array_get(a, i)), 0, NULL);
        const char *piece = json_string_value(json_object_get(o, "content"));
        CHECK(piece != NULL);
        if (piece && strlen(text) + strlen(piece) < sizeof text)
            strcat(text, piece);
        json_decref(o);
    }
    CHECK_STR(text, want);
    json_t *d = json_loads(json_string_value(json_array_get(a, n - 1)), 0, NULL);
    CHECK(json_is_true(json_object_get(d, "done")));
    struct message *msgs;
    int nm;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, "st-open", 10, 0, &msgs, &nm, &total) == 0);
    CHECK_INT(nm, 2);
    if (nm == 2)
        CHECK_STR(json_string_value(json_object_get(d, "messageId")), msgs[1].id);
    store_msgs_free(msgs, nm);
    json_decref(d);
    json_decref(a);
    free(body);
    free(req);
    free(want);
}

TEST(ticket_refusals_by_kind)
{
    struct parley_ctx ctx = shared;
    char *body = NULL, m[256];
    CHECK_INT(mem_dispatch(&ctx, "GET", "/api/tickets/bad%20id/ai/stream", "", NULL, &body), 400);
    CHECK_STR(message_of(body, m, sizeof m),
              "Invalid ticket id: use 1-64 letters, digits, '-', '_' or '.'");
    free(body);
    CHECK_INT(mem_dispatch(&ctx, "GET", "/api/tickets/st-t1/ai/stream", "", NULL, &body), 404);
    free(body);
    body = NULL;
    /* a stored body, then more regenerations than the rate limit allows:
     * the adapter's rate_limited kind is a 429 (no text matching) */
    REQUIRE(store_ticket_put(ctx.db, "st-t1", "my screen is blue [[fake tokens=1 token_ms=0]]") == 0);
    int last = 0;
    for (int i = 0; i <= cfg.rate_limit_per_min && last != 429; i++) {
        free(body);
        body = NULL;
        last = mem_dispatch(&ctx, "DELETE", "/api/tickets/st-t1/ai", "regenerate=1", NULL, &body);
    }
    CHECK_INT(last, 429);
    CHECK_STR(message_of(body, m, sizeof m), "Rate limit exceeded");
    free(body);
}

TEST(ticket_stream_cached_frames)
{
    struct parley_ctx ctx = shared;
    const char *tb = "cached please [[fake tokens=3 token_ms=1]]";
    REQUIRE(store_ticket_put(ctx.db, "st-t2", tb) == 0);
    char *body = NULL;
    /* the first stream generates it ... */
    CHECK_INT(mem_dispatch(&ctx, "GET", "/api/tickets/st-t2/ai/stream", "", NULL, &body), 200);
    json_t *a = data_lines(body);
    CHECK_STR(json_string_value(json_array_get(a, json_array_size(a) - 1)), "{\"type\":\"done\"}");
    json_decref(a);
    free(body);
    /* ... the next one gets the adapter's cached frames, then done */
    CHECK_INT(mem_dispatch(&ctx, "GET", "/api/tickets/st-t2/ai/stream", "", NULL, &body), 200);
    a = data_lines(body);
    CHECK_INT(json_array_size(a), 2);
    char *want_text = fake_answer(tb, 3);
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_ticket_cached(&f, want_text ? want_text : "") == 0);
    CHECK_INT(f.n, 2);
    if (f.n == 2 && json_array_size(a) == 2) {
        CHECK_STR(json_string_value(json_array_get(a, 0)), f.v[0]);
        CHECK_STR(json_string_value(json_array_get(a, 1)), f.v[1]);
    }
    json_t *o = json_loads(f.v[0], 0, NULL);
    CHECK_STR(json_string_value(json_object_get(o, "message")),
              "Resposta em cache - ticket já foi processado anteriormente");
    json_decref(o);
    frames_free(&f);
    free(want_text);
    json_decref(a);
    free(body);
}

int main(void)
{
    char err[256];
    if (test_setup("status") < 0 || config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err) < 0)
        return 1;
    if (open_ctx(&shared) < 0)
        return 1;
    RUN(table_maps_every_kind);
    RUN(send_refusals_by_kind);
    RUN(send_streams_the_adapter_frames);
    RUN(ticket_stream_cached_frames);
    RUN(ticket_refusals_by_kind);       /* last: it uses up the rate limit */
    proto_jobs_drain(5000);
    close_ctx(&shared);
    config_cleanup(&cfg);
    return th_done();
}
