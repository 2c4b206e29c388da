/* test_codes.c — protocol errors as data (docs/errors.md, issue 11 item 5).
 *
 * The table in docs/errors.md is the contract: every failure kind
 * (perr_code) and every generation error kind (perr_gen_code: each
 * llm_err_name, "interrupted", "internal", before and after text
 * streamed) must map to a code listed there, and every code listed there
 * must be one core answers — so the docs and the code cannot drift. Then
 * seed 000's error frames carry the right code for a too-long ticket, bad
 * JSON, a rate-limited question, an upstream failure before and after
 * text (the simulated LLM's failure knobs) and a worker interrupted; and
 * REST's bare statuses map to their codes (http_kind_of).
 */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "llm.h"
#include "perr.h"
#include "proto.h"
#include "proto_impl.h"
#include "status.h"

#include <jansson.h>

#define MAX_DOC_CODES 64

static char doc_codes[MAX_DOC_CODES][40];
static int n_doc_codes;

/* Reads the codes of docs/errors.md's table "| Code | Meaning | ..." (the
 * first column of each row after that header, in backquotes). The file is
 * found from this source's path, so the test runs from any directory.
 * 0, or -1 when the file or the table is missing. */
static int read_doc_codes(void)
{
    char path[1024];
    const char *src = __FILE__;     /* ".../tests/unit/test_codes.c" */
    const char *cut = strstr(src, "tests/unit/test_codes.c");
    snprintf(path, sizeof path, "%.*sdocs/errors.md", cut ? (int)(cut - src) : 0, src);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("# cannot open %s\n", path);
        return -1;
    }
    char line[4096];
    int in_table = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "| Code | Meaning |", 18)) {
            in_table = 1;
            continue;
        }
        if (!in_table)
            continue;
        if (line[0] != '|')
            break;                          /* the table ended */
        if (!strncmp(line, "|---", 4))
            continue;
        char *a = strchr(line, '`'), *b = a ? strchr(a + 1, '`') : NULL;
        if (!a || !b || b - a - 1 >= (long)sizeof doc_codes[0] || n_doc_codes >= MAX_DOC_CODES)
            continue;
        snprintf(doc_codes[n_doc_codes++], sizeof doc_codes[0], "%.*s", (int)(b - a - 1), a + 1);
    }
    fclose(f);
    return n_doc_codes > 0 ? 0 : -1;
}

static int documented(const char *code)
{
    for (int i = 0; code && i < n_doc_codes; i++)
        if (!strcmp(doc_codes[i], code))
            return 1;
    return 0;
}

#define CHECK_DOCUMENTED(code, what) do { const char *th_c = (code); \
    if (!documented(th_c)) { th_case_failed = 1; \
        printf("#   %s:%d: %s maps to \"%s\", not in docs/errors.md's table\n", __FILE__, \
               __LINE__, (what), th_c ? th_c : "(null)"); } } while (0)

TEST(docs_table_lists_every_code)
{
    REQUIRE(read_doc_codes() == 0);
    /* every failure kind */
    for (int k = PERR_OK + 1; k < PERR_COUNT_; k++)
        CHECK_DOCUMENTED(perr_code((enum perr)k), perr_name((enum perr)k));
    CHECK_DOCUMENTED(perr_code((enum perr)PERR_COUNT_), "an unknown kind");
    /* every generation error kind, before and after text streamed */
    for (int streamed = 0; streamed <= 1; streamed++) {
        for (int k = LLM_OK; k <= LLM_ERR_INTERNAL; k++)
            CHECK_DOCUMENTED(perr_gen_code(llm_err_name((enum llm_err)k), streamed),
                             llm_err_name((enum llm_err)k));
        CHECK_DOCUMENTED(perr_gen_code("interrupted", streamed), "interrupted");
        CHECK_DOCUMENTED(perr_gen_code("internal", streamed), "internal");
        CHECK_DOCUMENTED(perr_gen_code("no-such-kind", streamed), "an unknown kind");
        CHECK_DOCUMENTED(perr_gen_code(NULL, streamed), "no kind");
    }
    /* every documented code is one core answers (no stale rows), and the
     * ones the issue names are there */
    for (int i = 0; i < n_doc_codes; i++) {
        if (!perr_code_known(doc_codes[i])) {
            th_case_failed = 1;
            printf("#   docs/errors.md lists \"%s\", which core never answers\n", doc_codes[i]);
        }
    }
    static const char *const named[] = {
        "rate_limited", "too_long", "budget_exhausted", "upstream_unavailable", "upstream_error",
        "interrupted", "unauthorized", "forbidden", "not_found", "conflict", "bad_input",
        "database_unavailable", "database_readonly", "unavailable", "internal",
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        CHECK_DOCUMENTED(named[i], "the issue's list");
    CHECK(!documented("stopped"));            /* a stop is not an error (docs/stop.md) */
}

TEST(mapping)
{
    CHECK_STR(perr_code(PERR_TOO_LONG), "too_long");
    CHECK_STR(perr_code(PERR_TOO_LARGE), "too_large");
    CHECK_STR(perr_code(PERR_RATE_LIMITED), "rate_limited");
    CHECK_STR(perr_code(PERR_BUDGET_EXHAUSTED), "budget_exhausted");
    CHECK_STR(perr_code(PERR_DB), "internal");
    CHECK_STR(perr_code(PERR_DB_UNAVAILABLE), "database_unavailable");
    CHECK_STR(perr_code((enum perr)-1), "internal");
    /* before the first token: the upstream was unavailable */
    static const char *const before[] = { "config", "connect", "http", "timeout_first", "upstream",
                                          "cut", "malformed" };
    for (size_t i = 0; i < sizeof before / sizeof before[0]; i++)
        CHECK_STR(perr_gen_code(before[i], 0), "upstream_unavailable");
    /* after text: the answer broke */
    static const char *const after[] = { "upstream", "cut", "timeout_idle", "timeout_total",
                                         "malformed", "http" };
    for (size_t i = 0; i < sizeof after / sizeof after[0]; i++)
        CHECK_STR(perr_gen_code(after[i], 1), "upstream_error");
    CHECK_STR(perr_gen_code("interrupted", 1), "interrupted");
    CHECK_STR(perr_gen_code("aborted", 0), "internal");
    CHECK_STR(perr_gen_code("internal", 1), "internal");
    CHECK(perr_code_known("stopped") == NULL);
    CHECK(perr_code_known(NULL) == NULL);
    CHECK_STR(perr_code_known("too_long"), "too_long");
    /* REST's bare statuses (res_error) */
    CHECK_STR(perr_code(http_kind_of(400)), "bad_input");
    CHECK_STR(perr_code(http_kind_of(405)), "bad_input");
    CHECK_STR(perr_code(http_kind_of(415)), "bad_input");
    CHECK_STR(perr_code(http_kind_of(401)), "unauthorized");
    CHECK_STR(perr_code(http_kind_of(403)), "forbidden");
    CHECK_STR(perr_code(http_kind_of(404)), "not_found");
    CHECK_STR(perr_code(http_kind_of(409)), "conflict");
    CHECK_STR(perr_code(http_kind_of(410)), "gone");
    CHECK_STR(perr_code(http_kind_of(413)), "too_large");
    CHECK_STR(perr_code(http_kind_of(429)), "rate_limited");
    CHECK_STR(perr_code(http_kind_of(503)), "unavailable");
    CHECK_STR(perr_code(http_kind_of(500)), "internal");
    /* a kind's status and its code agree both ways where one status is one kind */
    static const enum perr one[] = { PERR_UNAUTHORIZED, PERR_FORBIDDEN, PERR_NOT_FOUND,
                                     PERR_CONFLICT, PERR_GONE, PERR_TOO_LARGE,
                                     PERR_RATE_LIMITED };
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++)
        CHECK_INT(http_kind_of(http_status_of(one[i])), one[i]);
}

/* Opens a seed 000 connection on ticket id for user. 0 / -1. */
static int open_ticket(struct parley_ctx *ctx, struct proto_conn *c, const char *id,
                       const char *user, struct proto_frames *f)
{
    char path[200], peer[100];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", id);
    snprintf(peer, sizeof peer, "user:%s", user);
    return proto_open(ctx, c, path, user, peer, f);
}

/* The only frame in f is seed 000's error with code. */
static void check_error_code(struct proto_frames *f, const char *code)
{
    CHECK_INT(f->n, 1);
    json_t *o = frame(f, f->n - 1);
    CHECK_STR(ftype(o), "error");
    CHECK(json_is_string(json_object_get(o, "message")));
    CHECK_STR(json_string_value(json_object_get(o, "code")), code);
    json_decref(o);
}

TEST(ticket_refusals_carry_codes)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_len = cfg.max_message_length, saved_rate = cfg.rate_limit_per_min;
    cfg.max_message_length = 10;
    cfg.rate_limit_per_min = 1;
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    REQUIRE(open_ticket(&ctx, &c, "CODES-1", "ana", &f) == 0);
    frames_free(&f);
    /* bad JSON */
    CHECK_INT(send_text(&ctx, &c, "{\"ticketBody\":", &f, &job), 0);
    check_error_code(&f, "bad_input");
    CHECK_STR(perr_name(c.err), "bad_input");
    frames_free(&f);
    /* too long: 11 characters (Unicode code points, not bytes) */
    CHECK_INT(send_text(&ctx, &c, "{\"ticketBody\":\"0123456789\\u00e9\"}", &f, &job), 0);
    CHECK(job == NULL);
    check_error_code(&f, "too_long");
    CHECK_STR(perr_name(c.err), "too_long");
    frames_free(&f);
    /* exactly the limit is not too long: answered (the rate limit's one) */
    CHECK_INT(send_text(&ctx, &c, "{\"ticketBody\":\"0123456789\"}", &f, &job), 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    job = NULL;
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    /* the second question of the minute from the same peer */
    REQUIRE(open_ticket(&ctx, &c, "CODES-2", "ana", &f) == 0);
    frames_free(&f);
    CHECK_INT(send_text(&ctx, &c, "{\"ticketBody\":\"another\"}", &f, &job), 0);
    CHECK(job == NULL);
    check_error_code(&f, "rate_limited");
    /* a stop with nothing to stop */
    frames_free(&f);
    CHECK_INT(send_text(&ctx, &c, "{\"type\":\"stop\"}", &f, &job), 0);
    check_error_code(&f, "not_found");
    proto_conn_cleanup(&c);
    frames_free(&f);
    cfg.max_message_length = saved_len;
    cfg.rate_limit_per_min = saved_rate;
    close_ctx(&ctx);
}

/* Asks ticket id with body, runs the generation, returns the last frame. */
static json_t *ask_ticket(struct parley_ctx *ctx, const char *id, const char *body)
{
    struct proto_conn c;
    struct proto_frames f;
    struct proto_job *job = NULL;
    json_t *last = NULL;
    frames_init(&f);
    if (open_ticket(ctx, &c, id, "bea", &f) == 0) {
        frames_free(&f);
        char *msg = dump(json_pack("{s:s}", "ticketBody", body));
        if (msg && send_text(ctx, &c, msg, &f, &job) == 0 && job) {
            run_job(ctx, job);
            if (pump_to_end(ctx, &c, &f) == 0 && f.n > 0)
                last = frame(&f, f.n - 1);
        }
        free(msg);
    }
    proto_conn_cleanup(&c);
    frames_free(&f);
    return last;
}

TEST(generation_failures_carry_codes)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    int saved_rate = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 0;
    /* an HTTP error before any token */
    json_t *e = ask_ticket(&ctx, "CODES-3", "down [[fake status=503]]");
    REQUIRE(e != NULL);
    CHECK_STR(ftype(e), "error");
    CHECK_STR(json_string_value(json_object_get(e, "code")), "upstream_unavailable");
    json_decref(e);
    /* an error after two tokens */
    e = ask_ticket(&ctx, "CODES-4", "broken [[fake tokens=6 error_after=2 token_ms=1]]");
    REQUIRE(e != NULL);
    CHECK_STR(ftype(e), "error");
    CHECK_STR(json_string_value(json_object_get(e, "code")), "upstream_error");
    json_decref(e);
    cfg.rate_limit_per_min = saved_rate;

    /* the recoverer's "interrupted" event (jobs.c writes no code): mapped
     * from its kind */
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(open_ticket(&ctx, &c, "CODES-5", "bea", &f) == 0);
    frames_free(&f);
    char type[] = "error";
    char data[] = "{\"job_id\":7,\"message\":\"the generation was interrupted\","
                  "\"kind\":\"interrupted\"}";
    struct evlog_event ev = { 1, 7, type, data, sizeof data - 1, 0, 0 };
    CHECK_INT(proto_ticket_ops.event(&ctx, &c, &ev, &f), 0);
    check_error_code(&f, "interrupted");
    frames_free(&f);
    /* a code stored in the event wins over its kind; an unknown one does not */
    char data2[] = "{\"message\":\"m\",\"kind\":\"cut\",\"code\":\"upstream_error\"}";
    struct evlog_event ev2 = { 2, 7, type, data2, sizeof data2 - 1, 0, 0 };
    CHECK_INT(proto_ticket_ops.event(&ctx, &c, &ev2, &f), 0);
    check_error_code(&f, "upstream_error");
    frames_free(&f);
    char data3[] = "{\"message\":\"m\",\"kind\":\"connect\",\"code\":\"made_up\"}";
    struct evlog_event ev3 = { 3, 7, type, data3, sizeof data3 - 1, 0, 0 };
    CHECK_INT(proto_ticket_ops.event(&ctx, &c, &ev3, &f), 0);
    check_error_code(&f, "upstream_unavailable");
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("codes") < 0)
        return 1;
    RUN(docs_table_lists_every_code);
    RUN(mapping);
    RUN(ticket_refusals_carry_codes);
    RUN(generation_failures_carry_codes);
    config_cleanup(&cfg);
    return th_done();
}
