/* test_protodocs.c — the protocol reference pages checked against the real
 * adapters, so the pages fail the build when they drift:
 *
 *   docs/protocol-000.md       seed 000 tickets (core/proto_ticket.c)
 *   docs/protocol-001.md       seed 001 chat sessions (core/proto_chat.c)
 *   docs/protocol-002.md       seed 002 brands  (core/proto_brand.c)
 *   docs/protocol-longpoll.md  the long-poll transport (fcgi/poll_*.c)
 *
 * A page marks its examples with the fence's info string: ```json client
 * (a frame the client sends), ```json server (a frame the server sends);
 * the long-poll page ```json open-request / open-response, ```ndjson
 * post-request, ```json post-response / poll-response / error-response.
 * Every client block is fed, as written, to the adapter (or the handlers,
 * through http_dispatch as parley.fcgi runs them); scenarios (cached
 * answers, seq=1, bad input, too long, busy, rate limit, budget, upstream
 * failures, stops by the starter and by another user, closed sessions)
 * make the adapter send every kind of frame it has. A frame's kind is its
 * "type", its members (seed 002: and those of its "data") and an error's
 * code. The kinds the adapter sent must be exactly the kinds of the
 * page's server blocks: a frame the page does not show, or one it shows
 * that the adapter no longer sends, fails the case with the kind named.
 * Runs from the repository root (tests/run.sh), against the simulated LLM
 * (fake.h); one scratch SQLite database.
 */
#include "th.h"
#include "protohelp.h"
#include "memres.h"
#include "handlers.h"
#include "catalog.h"
#include "proto.h"

#include <jansson.h>
#include <unistd.h>

/* ---- the pages ---- */

struct strs {
    char **v;
    int n, cap;
};

static void strs_add(struct strs *s, const char *text)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], text))
            return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v);
    }
    s->v[s->n++] = strdup(text);
}

static int strs_has(const struct strs *s, const char *text)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], text))
            return 1;
    return 0;
}

static void strs_free(struct strs *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* The text of every block of page whose fence reads "```<lang> <tag>"
 * (lang json or ndjson), in order, into out (blocks are kept whole, not
 * deduplicated). -1 when the page cannot be read. */
static int page_blocks(const char *page, const char *tag, struct strs *out)
{
    FILE *f = fopen(page, "r");
    if (!f) {
        printf("#   cannot read %s (run from the repository root)\n", page);
        return -1;
    }
    char line[4096], *block = NULL;
    size_t blen = 0;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        if (!in) {
            char lang[16], t[48];
            if (sscanf(line, "```%15s %47s", lang, t) == 2 && !strcmp(t, tag) &&
                (!strcmp(lang, "json") || !strcmp(lang, "ndjson"))) {
                in = 1;
                blen = 0;
                block = calloc(1, 1);
            }
            continue;
        }
        if (!strncmp(line, "```", 3)) {
            in = 0;
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 16;
                out->v = realloc(out->v, (size_t)out->cap * sizeof *out->v);
            }
            out->v[out->n++] = block;
            block = NULL;
            continue;
        }
        size_t l = strlen(line);
        block = realloc(block, blen + l + 1);
        memcpy(block + blen, line, l + 1);
        blen += l;
    }
    free(block);
    fclose(f);
    return 0;
}

/* "k1,k2,..." — the sorted member names of o (into buf). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void keys_of(json_t *o, char *buf, size_t len)
{
    const char *k[64];
    size_t n = 0;
    const char *key;
    json_t *v;
    buf[0] = '\0';
    if (!json_is_object(o))
        return;
    json_object_foreach(o, key, v) {
        (void)v;
        if (n < 64)
            k[n++] = key;
    }
    qsort(k, n, sizeof k[0], cmp_str);
    size_t used = 0;
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? "," : "", k[i]);
}

/* A frame's kind: type, members, error code (with_data: and the members
 * and code of its "data", seed 002). "" when text is not a JSON object. */
static void kind_of(const char *text, int with_data, char *out, size_t len)
{
    json_t *o = json_loads(text, 0, NULL);
    out[0] = '\0';
    if (json_is_object(o)) {
        char keys[512], dkeys[512] = "";
        keys_of(o, keys, sizeof keys);
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *code = json_string_value(json_object_get(o, "code"));
        json_t *d = json_object_get(o, "data");
        if (with_data && json_is_object(d)) {
            keys_of(d, dkeys, sizeof dkeys);
            if (!code)
                code = json_string_value(json_object_get(d, "code"));
        }
        snprintf(out, len, "type=%s keys=%s%s%s%s%s", type ? type : "-", keys,
                 dkeys[0] ? " data=" : "", dkeys, code ? " code=" : "", code ? code : "");
    }
    json_decref(o);
}

/* Compares the kinds a page shows with those observed; prints each one
 * only on one side. 0 when they are the same. */
static int compare_kinds(const char *page, const struct strs *shown, const struct strs *seen)
{
    int bad = 0;
    for (int i = 0; i < shown->n; i++)
        if (!strs_has(seen, shown->v[i])) {
            printf("#   %s shows a frame the server never sent: %s\n", page, shown->v[i]);
            bad = 1;
        }
    for (int i = 0; i < seen->n; i++)
        if (!strs_has(shown, seen->v[i])) {
            printf("#   the server sent a frame %s does not show: %s\n", page, seen->v[i]);
            bad = 1;
        }
    return bad ? -1 : 0;
}

/* ---- driving an adapter ---- */

static struct parley_ctx ctx;

/* Records the kinds of f's frames into seen (and clears f). */
static void take(struct proto_frames *f, int with_data, struct strs *seen)
{
    for (int i = 0; i < f->n; i++) {
        char k[1200];
        kind_of(f->v[i], with_data, k, sizeof k);
        if (!k[0])
            printf("#   a frame that is not a JSON object: %s\n", f->v[i]);
        strs_add(seen, k[0] ? k : "(not an object)");
    }
    frames_free(f);
    frames_init(f);
}

/* Sends text on c; runs the job it starts (this thread) and pumps to its
 * end; records every frame. 0, or -1 when the adapter failed. */
static int exchange(struct proto_conn *c, const char *text, int with_data, struct strs *seen)
{
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    int rc = send_text(&ctx, c, text, &f, &job);
    if (job)
        run_job(&ctx, job);
    if (rc == 0 && proto_following(c))
        rc = pump_to_end(&ctx, c, &f);
    take(&f, with_data, seen);
    return rc;
}

/* Opens c on path for user; records the opening frames. */
static int open_conn(struct proto_conn *c, const char *path, const char *user, int with_data,
                     struct strs *seen)
{
    struct proto_frames f;
    char peer[160];
    frames_init(&f);
    snprintf(peer, sizeof peer, "user:%s", user);
    int rc = proto_open(&ctx, c, path, user, peer, &f);
    take(&f, with_data, seen);
    return rc;
}

/* The documented client frame whose "type" is type (NULL: the one without
 * a type); NULL when the page has none. */
static const char *client_frame(const struct strs *clients, const char *type)
{
    for (int i = 0; i < clients->n; i++) {
        json_t *o = json_loads(clients->v[i], 0, NULL);
        const char *t = json_string_value(json_object_get(o, "type"));
        int match = type ? (t && !strcmp(t, type)) : !t;
        json_decref(o);
        if (match)
            return clients->v[i];
    }
    return NULL;
}

/* The page's server kinds; every block must be a JSON object. */
static int shown_kinds(const char *page, const char *tag, int with_data, struct strs *shown)
{
    struct strs blocks = { 0 };
    if (page_blocks(page, tag, &blocks) < 0)
        return -1;
    int rc = blocks.n > 0 ? 0 : -1;
    for (int i = 0; i < blocks.n; i++) {
        char k[1200];
        kind_of(blocks.v[i], with_data, k, sizeof k);
        if (!k[0]) {
            printf("#   %s: a ```json %s block is not a JSON object:\n%s", page, tag, blocks.v[i]);
            rc = -1;
        }
        strs_add(shown, k);
    }
    strs_free(&blocks);
    return rc;
}

/* A ticket body (the documented one with text appended). */
static char *ticket_body(const char *doc_frame, const char *extra)
{
    json_t *o = json_loads(doc_frame, 0, NULL);
    const char *b = json_string_value(json_object_get(o, "ticketBody"));
    char *text = NULL;
    if (b) {
        size_t n = strlen(b) + strlen(extra) + 2;
        char *body = malloc(n);
        snprintf(body, n, "%s %s", b, extra);
        json_object_set_new(o, "ticketBody", json_string(body));
        free(body);
        text = json_dumps(o, JSON_COMPACT);
    }
    json_decref(o);
    return text;
}

/* ---- seed 000 ---- */

TEST(tickets_page)
{
    const char *page = "docs/protocol-000.md";
    struct strs clients = { 0 }, shown = { 0 }, seen = { 0 };
    REQUIRE(page_blocks(page, "client", &clients) == 0 && clients.n > 0);
    REQUIRE(shown_kinds(page, "server", 0, &shown) == 0);
    const char *body = client_frame(&clients, NULL);
    const char *stop = client_frame(&clients, "stop");
    REQUIRE(body && stop);
    char path[200];
    struct proto_conn c;
    int id = getpid();

    /* every documented client frame, as written, twice on the same ticket
     * (a new connection each time): the answer, then the cached answer;
     * the stop: nothing to stop, then already finished */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < clients.n; i++) {
            snprintf(path, sizeof path, "/api/websocket/chat/DOC-%d-%d", id, i);
            CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
            CHECK(exchange(&c, clients.v[i], 0, &seen) == 0);
            proto_conn_cleanup(&c);
        }

    /* seq=1 */
    snprintf(path, sizeof path, "/api/websocket/chat/SEQ-%d?seq=1", id);
    char *b = ticket_body(body, "(seq)");
    CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
    CHECK(exchange(&c, b, 0, &seen) == 0);
    proto_conn_cleanup(&c);
    free(b);

    /* bad input: not JSON, an invalid ticket id (sent at open), too long */
    snprintf(path, sizeof path, "/api/websocket/chat/BAD-%d", id);
    CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
    CHECK(exchange(&c, "not json", 0, &seen) == 0);
    char *longtext = malloc((size_t)cfg.max_message_length + 64);
    memset(longtext, 'a', (size_t)cfg.max_message_length + 1);
    longtext[cfg.max_message_length + 1] = '\0';
    json_t *lo = json_pack("{s:s}", "ticketBody", longtext);
    char *ltext = json_dumps(lo, JSON_COMPACT);
    CHECK(exchange(&c, ltext, 0, &seen) == 0);
    free(ltext);
    json_decref(lo);
    free(longtext);
    proto_conn_cleanup(&c);
    CHECK(open_conn(&c, "/api/websocket/chat/bad%20id", "alice", 0, &seen) == 0);
    CHECK(c.close);
    proto_conn_cleanup(&c);
    /* tickets per tenant (PARLEY_TENANT_CLAIM) and a connection without one */
    char err[256];
    CHECK(config_set(&cfg, "PARLEY_TENANT_CLAIM", "tenant", err, sizeof err) == 0);
    snprintf(path, sizeof path, "/api/websocket/chat/TENANT-%d", id);
    CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
    CHECK(c.close);
    proto_conn_cleanup(&c);
    CHECK(config_set(&cfg, "PARLEY_TENANT_CLAIM", "", err, sizeof err) == 0);

    /* busy: a second body while the first answer is generated */
    {
        struct proto_frames f;
        struct proto_job *job = NULL, *job2 = NULL;
        frames_init(&f);
        snprintf(path, sizeof path, "/api/websocket/chat/BUSY-%d", id);
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        b = ticket_body(body, "(busy)");
        CHECK(send_text(&ctx, &c, b, &f, &job) == 0);
        CHECK(send_text(&ctx, &c, b, &f, &job2) == 0);
        CHECK(job2 == NULL);
        take(&f, 0, &seen);
        run_job(&ctx, job);
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 0, &seen);
        proto_conn_cleanup(&c);
        free(b);
    }

    /* the upstream fails before any text, and after some */
    const char *fails[] = { "[[fake error_after=0]]", "[[fake tokens=6 error_after=2]]" };
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/api/websocket/chat/UP-%d-%d", id, i);
        b = ticket_body(body, fails[i]);
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        CHECK(exchange(&c, b, 0, &seen) == 0);
        proto_conn_cleanup(&c);
        free(b);
    }

    /* the rate limit (one generation a minute for this user), then the
     * daily budget (a token_budget claim of 1 token) */
    int limit = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/api/websocket/chat/RL-%d-%d", id, i);
        b = ticket_body(body, i ? "(rate 2)" : "(rate 1)");
        CHECK(open_conn(&c, path, "rl", 0, &seen) == 0);
        CHECK(exchange(&c, b, 0, &seen) == 0);
        proto_conn_cleanup(&c);
        free(b);
    }
    cfg.rate_limit_per_min = limit;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/api/websocket/chat/BUDGET-%d-%d", id, i);
        b = ticket_body(body, i ? "(budget 2)" : "(budget 1)");
        CHECK(open_conn(&c, path, "poor", 0, &seen) == 0);
        c.has_token_budget = 1;
        c.token_budget = 1;
        CHECK(exchange(&c, b, 0, &seen) == 0);
        proto_conn_cleanup(&c);
        free(b);
    }

    /* stops: another user's refused, the starter's ends with done stopped */
    {
        struct proto_conn bob;
        struct proto_frames f;
        struct proto_job *job = NULL;
        frames_init(&f);
        snprintf(path, sizeof path, "/api/websocket/chat/STOP-%d", id);
        b = ticket_body(body, "[[fake tokens=300 token_ms=20]]");
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        CHECK(send_text(&ctx, &c, b, &f, &job) == 0);
        REQUIRE(job);
        /* the generation loop watches for stops (proto_job_run does not) */
        CHECK(proto_job_submit(&ctx, job) == 0);
        sleep_ms(100);
        CHECK(open_conn(&bob, path, "bob", 0, &seen) == 0);
        CHECK(exchange(&bob, stop, 0, &seen) == 0);
        proto_conn_cleanup(&bob);
        CHECK(send_text(&ctx, &c, stop, &f, &job) == 0);
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 0, &seen);
        proto_conn_cleanup(&c);
        free(b);
    }

    CHECK(compare_kinds(page, &shown, &seen) == 0);
    strs_free(&clients);
    strs_free(&shown);
    strs_free(&seen);
}

/* ---- seed 001 ---- */

/* A "message" frame: the documented one with content replaced (and
 * "stream" kept as documented). New string. */
static char *chat_message(const char *doc_frame, const char *content)
{
    json_t *o = json_loads(doc_frame, 0, NULL);
    char *text = NULL;
    if (json_is_object(o)) {
        json_object_set_new(o, "content", json_string(content));
        text = json_dumps(o, JSON_COMPACT);
    }
    json_decref(o);
    return text;
}

TEST(chat_page)
{
    const char *page = "docs/protocol-001.md";
    struct strs clients = { 0 }, shown = { 0 }, seen = { 0 };
    REQUIRE(page_blocks(page, "client", &clients) == 0 && clients.n > 0);
    REQUIRE(shown_kinds(page, "server", 0, &shown) == 0);
    const char *msg = client_frame(&clients, "message");
    REQUIRE(msg);
    char path[200], text[240];
    struct proto_conn c;
    int id = getpid();

    /* every documented client frame, as written, each on a new session:
     * connected, then the answer (streamed, or one frame for "stream":
     * false), the pong, the stops with nothing to stop */
    for (int i = 0; i < clients.n; i++) {
        snprintf(path, sizeof path, "/ws/doc-%d-%d", id, i);
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        CHECK(exchange(&c, clients.v[i], 0, &seen) == 0);
        proto_conn_cleanup(&c);
    }

    /* bad input: not JSON, too long; an invalid session id (sent at open);
     * another user's session (Session not found, at open) */
    snprintf(path, sizeof path, "/ws/bad-%d", id);
    CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
    CHECK(exchange(&c, "not json", 0, &seen) == 0);
    char *longtext = malloc((size_t)cfg.max_message_length + 64);
    memset(longtext, 'a', (size_t)cfg.max_message_length + 1);
    longtext[cfg.max_message_length + 1] = '\0';
    char *lt = chat_message(msg, longtext);
    CHECK(exchange(&c, lt, 0, &seen) == 0);
    free(lt);
    free(longtext);
    proto_conn_cleanup(&c);
    CHECK(open_conn(&c, "/ws/bad%20id", "alice", 0, &seen) == 0);
    CHECK(c.close);
    proto_conn_cleanup(&c);
    snprintf(path, sizeof path, "/ws/bad-%d", id);
    CHECK(open_conn(&c, path, "mallory", 0, &seen) == 0);
    CHECK(c.close && c.close_code == 4404);
    proto_conn_cleanup(&c);

    /* the queue: with PARLEY_CHAT_QUEUE=1, one message waits, the next is
     * queue_full; then both answers come, in order */
    {
        int saved = cfg.chat_queue;
        cfg.chat_queue = 1;
        struct proto_frames f;
        struct proto_job *job = NULL, *none = NULL;
        frames_init(&f);
        snprintf(path, sizeof path, "/ws/queue-%d", id);
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        for (int i = 0; i < 3; i++) {
            snprintf(text, sizeof text, "queued %d [[fake tokens=4 token_ms=1]]", i);
            char *m = chat_message(msg, text);
            CHECK(send_text(&ctx, &c, m, &f, i ? &none : &job) == 0);
            free(m);
        }
        take(&f, 0, &seen);
        REQUIRE(job);
        CHECK(proto_job_submit(&ctx, job) == 0);    /* the loop starts the next one */
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 0, &seen);
        proto_conn_cleanup(&c);
        cfg.chat_queue = saved;
    }

    /* the upstream fails before any text */
    snprintf(path, sizeof path, "/ws/up-%d", id);
    CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
    char *up = chat_message(msg, "fails [[fake error_after=0]]");
    CHECK(exchange(&c, up, 0, &seen) == 0);
    free(up);
    proto_conn_cleanup(&c);

    /* the rate limit (one generation a minute), then the daily budget */
    int limit = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    snprintf(path, sizeof path, "/ws/rl-%d", id);
    CHECK(open_conn(&c, path, "rl1", 0, &seen) == 0);
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof text, "rate %d [[fake tokens=3 token_ms=1]]", i);
        char *m = chat_message(msg, text);
        CHECK(exchange(&c, m, 0, &seen) == 0);
        free(m);
    }
    proto_conn_cleanup(&c);
    cfg.rate_limit_per_min = limit;
    snprintf(path, sizeof path, "/ws/budget-%d", id);
    CHECK(open_conn(&c, path, "poor1", 0, &seen) == 0);
    c.has_token_budget = 1;
    c.token_budget = 1;
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof text, "budget %d [[fake tokens=3 token_ms=1]]", i);
        char *m = chat_message(msg, text);
        CHECK(exchange(&c, m, 0, &seen) == 0);
        free(m);
    }
    proto_conn_cleanup(&c);

    /* a stop that works: stream_end marked stopped */
    {
        struct proto_frames f;
        struct proto_job *job = NULL;
        frames_init(&f);
        snprintf(path, sizeof path, "/ws/stop-%d", id);
        CHECK(open_conn(&c, path, "alice", 0, &seen) == 0);
        char *m = chat_message(msg, "stop me [[fake tokens=300 token_ms=20]]");
        CHECK(send_text(&ctx, &c, m, &f, &job) == 0);
        free(m);
        REQUIRE(job);
        CHECK(proto_job_submit(&ctx, job) == 0);
        sleep_ms(100);
        CHECK(send_text(&ctx, &c, "{\"type\":\"stop\"}", &f, &job) == 0);
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 0, &seen);
        proto_conn_cleanup(&c);
    }

    CHECK(compare_kinds(page, &shown, &seen) == 0);
    strs_free(&clients);
    strs_free(&shown);
    strs_free(&seen);
}

/* ---- seed 002 ---- */

#define BRAND "docs-brand"

static int brand_setup(void)
{
    struct brand b = { .name = "Docs Brand", .welcome = "", .system_prompt = "", .active = 1 };
    str_copy(b.id, sizeof b.id, BRAND);
    struct product p = { .id = "docs-laptop-1", .brand_id = BRAND, .name = "Business Laptop 13",
                         .description = "A light laptop for business work", .category = "Laptop",
                         .price = 999.0, .features = "[\"16GB RAM\"]",
                         .specifications = "{\"memory\": \"16GB\"}", .available = 1 };
    return catalog_brand_put(ctx.db, &b) == 0 && catalog_product_put(ctx.db, &p) == 0 ? 0 : -1;
}

/* A chat frame: the documented one with message (and conversation_id). */
static char *chat_frame(const char *doc_frame, const char *message, const char *conv)
{
    json_t *o = json_loads(doc_frame, 0, NULL);
    json_t *d = json_object_get(o, "data");
    char *text = NULL;
    if (json_is_object(d)) {
        json_object_set_new(d, "message", json_string(message));
        json_object_set_new(d, "conversation_id", conv ? json_string(conv) : json_null());
        text = json_dumps(o, JSON_COMPACT);
    }
    json_decref(o);
    return text;
}

TEST(brands_page)
{
    const char *page = "docs/protocol-002.md";
    struct strs clients = { 0 }, shown = { 0 }, seen = { 0 };
    REQUIRE(brand_setup() == 0);
    REQUIRE(page_blocks(page, "client", &clients) == 0 && clients.n > 0);
    REQUIRE(shown_kinds(page, "server", 1, &shown) == 0);
    const char *chat = client_frame(&clients, "chat");
    const char *stop = client_frame(&clients, "stop");
    REQUIRE(chat && stop);
    const char *path = "/ws/chat/" BRAND;
    struct proto_conn c;
    char *t;

    /* every documented client frame as written, on a new connection each;
     * then again (a stop after the answers: still nothing of its own) */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < clients.n; i++) {
            CHECK(open_conn(&c, path, "alice", 1, &seen) == 0);
            CHECK(exchange(&c, clients.v[i], 1, &seen) == 0);
            proto_conn_cleanup(&c);
        }

    /* an unknown brand; bad input; too long */
    CHECK(open_conn(&c, "/ws/chat/no-such-brand", "alice", 1, &seen) == 0);
    CHECK(c.close);
    proto_conn_cleanup(&c);
    CHECK(open_conn(&c, path, "alice", 1, &seen) == 0);
    CHECK(exchange(&c, "{not json", 1, &seen) == 0);
    CHECK(exchange(&c, "{\"type\": \"chat\", \"data\": {}}", 1, &seen) == 0);
    char *longtext = malloc((size_t)cfg.max_message_length + 64);
    memset(longtext, 'a', (size_t)cfg.max_message_length + 1);
    longtext[cfg.max_message_length + 1] = '\0';
    t = chat_frame(chat, longtext, NULL);
    CHECK(exchange(&c, t, 1, &seen) == 0);
    free(t);
    free(longtext);
    proto_conn_cleanup(&c);

    /* busy */
    {
        struct proto_frames f;
        struct proto_job *job = NULL, *job2 = NULL;
        frames_init(&f);
        CHECK(open_conn(&c, path, "alice", 1, &seen) == 0);
        t = chat_frame(chat, "A laptop please", NULL);
        CHECK(send_text(&ctx, &c, t, &f, &job) == 0);
        CHECK(send_text(&ctx, &c, t, &f, &job2) == 0);
        CHECK(job2 == NULL);
        take(&f, 1, &seen);
        run_job(&ctx, job);
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 1, &seen);
        proto_conn_cleanup(&c);
        free(t);
    }

    /* upstream failures */
    const char *fails[] = { "Laptop? [[fake error_after=0]]", "Laptop? [[fake tokens=6 error_after=2]]" };
    for (int i = 0; i < 2; i++) {
        CHECK(open_conn(&c, path, "alice", 1, &seen) == 0);
        t = chat_frame(chat, fails[i], NULL);
        CHECK(exchange(&c, t, 1, &seen) == 0);
        proto_conn_cleanup(&c);
        free(t);
    }

    /* rate limit, budget */
    int limit = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    CHECK(open_conn(&c, path, "rl2", 1, &seen) == 0);
    t = chat_frame(chat, "first", NULL);
    CHECK(exchange(&c, t, 1, &seen) == 0);
    CHECK(exchange(&c, t, 1, &seen) == 0);
    free(t);
    proto_conn_cleanup(&c);
    cfg.rate_limit_per_min = limit;
    CHECK(open_conn(&c, path, "poor2", 1, &seen) == 0);
    c.has_token_budget = 1;
    c.token_budget = 1;
    t = chat_frame(chat, "spend", NULL);
    CHECK(exchange(&c, t, 1, &seen) == 0);
    CHECK(exchange(&c, t, 1, &seen) == 0);
    free(t);
    proto_conn_cleanup(&c);

    /* stops: another user's (naming the conversation) refused; the
     * starter's ends with complete stopped; again: already finished */
    {
        struct proto_conn bob;
        struct proto_frames f;
        struct proto_job *job = NULL;
        frames_init(&f);
        CHECK(open_conn(&c, path, "alice", 1, &seen) == 0);
        t = chat_frame(chat, "A long one [[fake tokens=300 token_ms=20]]", NULL);
        CHECK(send_text(&ctx, &c, t, &f, &job) == 0);
        free(t);
        REQUIRE(job);
        char conv[200];
        str_copy(conv, sizeof conv, strncmp(c.channel, "conv:", 5) ? c.channel : c.channel + 5);
        CHECK(proto_job_submit(&ctx, job) == 0);
        sleep_ms(100);
        json_t *so = json_loads(stop, 0, NULL);
        json_object_set_new(so, "data", json_pack("{s:s}", "conversation_id", conv));
        char *named = json_dumps(so, JSON_COMPACT);
        json_decref(so);
        CHECK(open_conn(&bob, path, "bob", 1, &seen) == 0);
        CHECK(exchange(&bob, named, 1, &seen) == 0);
        proto_conn_cleanup(&bob);
        CHECK(send_text(&ctx, &c, stop, &f, &job) == 0);
        CHECK(pump_to_end(&ctx, &c, &f) == 0);
        take(&f, 1, &seen);
        CHECK(exchange(&c, stop, 1, &seen) == 0);
        free(named);
        proto_conn_cleanup(&c);
    }

    CHECK(compare_kinds(page, &shown, &seen) == 0);
    strs_free(&clients);
    strs_free(&shown);
    strs_free(&seen);
}

/* ---- the long-poll transport ---- */

/* One request through the dispatcher; *out the parsed body (new or NULL). */
static int call(const char *method, const char *path, const char *query, const char *body,
                json_t **out)
{
    char *text = NULL;
    int status = mem_dispatch(&ctx, method, path, query, body, &text);
    *out = text && *text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return status;
}

static void record(struct strs *seen, const char *what, json_t *o)
{
    char keys[512], k[700];
    keys_of(o, keys, sizeof keys);
    const char *code = json_string_value(json_object_get(o, "code"));
    snprintf(k, sizeof k, "%s keys=%s%s%s", what, keys, code ? " code=" : "", code ? code : "");
    strs_add(seen, k);
}

static int shown_http(const char *page, const char *tag, struct strs *shown)
{
    struct strs blocks = { 0 };
    if (page_blocks(page, tag, &blocks) < 0 || blocks.n == 0) {
        printf("#   %s has no ```json %s block\n", page, tag);
        strs_free(&blocks);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < blocks.n; i++) {
        json_t *o = json_loads(blocks.v[i], 0, NULL);
        if (!json_is_object(o)) {
            printf("#   %s: a ```json %s block is not a JSON object\n", page, tag);
            rc = -1;
        }
        record(shown, tag, o);
        json_decref(o);
    }
    strs_free(&blocks);
    return rc;
}

/* Polls sid until a frame of type "done"/"error" or closed; records each
 * answer; 0 when that happened within 20 s. */
static int poll_to_end(const char *sid, struct strs *seen)
{
    char path[120], query[64];
    long long cursor = 0;
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    for (int i = 0; i < 40; i++) {
        json_t *o = NULL;
        snprintf(query, sizeof query, "cursor=%lld&wait=1", cursor);
        int st = call("GET", path, query, NULL, &o);
        if (st != 200) {
            printf("#   GET %s: %d\n", path, st);
            json_decref(o);
            return -1;
        }
        record(seen, "poll-response", o);
        cursor = json_integer_value(json_object_get(o, "cursor"));
        int end = json_is_true(json_object_get(o, "closed"));
        size_t j;
        json_t *m;
        json_array_foreach(json_object_get(o, "messages"), j, m) {
            const char *t = json_string_value(json_object_get(m, "type"));
            end |= t && (!strcmp(t, "done") || !strcmp(t, "error"));
        }
        json_decref(o);
        if (end)
            return 0;
    }
    return -1;
}

TEST(longpoll_page)
{
    const char *page = "docs/protocol-longpoll.md";
    struct strs opens = { 0 }, posts = { 0 }, postr = { 0 }, shown = { 0 }, seen = { 0 };
    REQUIRE(page_blocks(page, "open-request", &opens) == 0 && opens.n > 0);
    REQUIRE(page_blocks(page, "post-request", &posts) == 0 && posts.n > 0);
    REQUIRE(page_blocks(page, "post-response", &postr) == 0 && postr.n == posts.n);
    REQUIRE(shown_http(page, "open-response", &shown) == 0);
    REQUIRE(shown_http(page, "post-response", &shown) == 0);
    REQUIRE(shown_http(page, "poll-response", &shown) == 0);
    REQUIRE(shown_http(page, "error-response", &shown) == 0);
    json_t *o = NULL;
    char sid[64] = "", path[120];

    /* each documented open, then each documented NDJSON batch on it; the
     * documented "accepted" must be what the transport answers */
    for (int i = 0; i < opens.n; i++) {
        CHECK_INT(call("POST", "/api/poll/open", NULL, opens.v[i], &o), 200);
        record(&seen, "open-response", o);
        str_copy(sid, sizeof sid, json_string_value(json_object_get(o, "sid")) ?
                                      json_string_value(json_object_get(o, "sid")) : "");
        json_decref(o);
        REQUIRE(sid[0]);
        snprintf(path, sizeof path, "/api/poll/%s", sid);
        for (int j = 0; j < posts.n; j++) {
            json_t *want = json_loads(postr.v[j], 0, NULL);
            CHECK_INT(call("POST", path, NULL, posts.v[j], &o), 202);
            record(&seen, "post-response", o);
            CHECK_INT(json_integer_value(json_object_get(o, "accepted")),
                      json_integer_value(json_object_get(want, "accepted")));
            json_decref(o);
            json_decref(want);
            CHECK(poll_to_end(sid, &seen) == 0);
        }
        CHECK_INT(call("DELETE", path, NULL, NULL, &o), 204);
        json_decref(o);
        /* gone */
        CHECK_INT(call("GET", path, "cursor=0&wait=0", NULL, &o), 410);
        record(&seen, "error-response", o);
        json_decref(o);
    }

    /* a session the protocol closes: an invalid ticket id */
    CHECK_INT(call("POST", "/api/poll/open", NULL, "{\"path\": \"/api/websocket/chat/bad%20id\"}", &o), 200);
    str_copy(sid, sizeof sid, json_string_value(json_object_get(o, "sid")) ?
                                  json_string_value(json_object_get(o, "sid")) : "");
    json_decref(o);
    CHECK(poll_to_end(sid, &seen) == 0);

    /* the transport's refusals */
    CHECK_INT(call("POST", "/api/poll/open", NULL, "{\"path\": \"/nowhere\"}", &o), 404);
    record(&seen, "error-response", o);
    json_decref(o);
    CHECK_INT(call("POST", "/api/poll/open", NULL, opens.v[0], &o), 200);
    str_copy(sid, sizeof sid, json_string_value(json_object_get(o, "sid")) ?
                                  json_string_value(json_object_get(o, "sid")) : "");
    json_decref(o);
    snprintf(path, sizeof path, "/api/poll/%s", sid);
    CHECK_INT(call("POST", path, NULL, "", &o), 400);
    record(&seen, "error-response", o);
    json_decref(o);
    size_t cap = 300 * 20;
    char *many = malloc(cap), *p = many;
    for (int i = 0; i < 257; i++)
        p += sprintf(p, "{\"type\":\"x\"}\n");
    CHECK_INT(call("POST", path, NULL, many, &o), 413);
    record(&seen, "error-response", o);
    json_decref(o);
    free(many);
    int limit = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    CHECK_INT(call("POST", path, NULL, "{\"type\":\"ping\"}\n{\"type\":\"ping\"}\n", &o), 429);
    record(&seen, "error-response", o);
    json_decref(o);
    cfg.rate_limit_per_min = limit;
    CHECK_INT(call("DELETE", path, NULL, NULL, &o), 204);
    json_decref(o);

    CHECK(compare_kinds(page, &shown, &seen) == 0);
    strs_free(&opens);
    strs_free(&posts);
    strs_free(&postr);
    strs_free(&shown);
    strs_free(&seen);
}

int main(void)
{
    if (test_setup("protodocs") < 0)
        return 1;
    char err[512];
    /* the generation loop (the stops, the long-poll POSTs) opens PARLEY_DB */
    if (config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err) < 0) {
        printf("not ok 1 - PARLEY_DB: %s\n", err);
        return 1;
    }
    if (open_ctx(&ctx) < 0) {
        printf("not ok 1 - open the database\n");
        return 1;
    }
    RUN(tickets_page);
    RUN(chat_page);
    RUN(brands_page);
    RUN(longpoll_page);
    proto_jobs_drain(5000);
    close_ctx(&ctx);
    config_cleanup(&cfg);
    return th_done();
}
