/* test_protodocs.c — the protocol reference pages checked against the real
 * adapters, so the pages fail the build when they drift:
 *
 *   docs/protocol-000.md       seed 000 tickets (core/proto_ticket.c)
 *   docs/protocol-001.md       seed 001 chat sessions (core/proto_chat.c)
 *   docs/protocol-002.md       seed 002 brands  (core/proto_brand.c)
 *   docs/protocol-phoenix.md   seed 003 Phoenix Channels (core/phx.c,
 *                              core/proto_phoenix.c)
 *   docs/protocol-longpoll.md  the long-poll transport (fcgi/poll_*.c)
 *
 * A page marks its examples with the fence's info string: ```json client
 * (a frame the client sends), ```json server (a frame the server sends);
 * the long-poll page ```json open-request / open-response, ```ndjson
 * post-request, ```json post-response / poll-response / error-response.
 * Every client block is fed, as written, to the adapter (or the handlers,
 * through http_dispatch as parley.fcgi runs them); scenarios (cached
 * answers, seq=1, bad input, too long, busy, rate limit, budget, upstream
 * failures, stops by the starter and by another user, closed sessions;
 * seed 003 also a database that fails at a join and while pumping)
 * make the adapter send every kind of frame it has. A frame's kind is its
 * "type", its members (seed 002: and those of its "data") and an error's
 * code. The kinds the adapter sent must be exactly the kinds of the
 * page's server blocks (seed 003: a frame is a V2 array [join_ref, ref,
 * topic, event, payload]; its kind is the event and the payload's
 * members, for phx_reply also the status, the response's members and its
 * "reason"/"code", for "error" pushes the payload's "error" and "code",
 * for "stream_error" its "code" — its "error" is the upstream's message):
 * a frame the page does not show, or one it shows
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
#include "phx.h"
#include "store.h"
#include "db_sqlite.h"

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

/* ---- seed 003: Phoenix Channels ---- */

/* A V2 frame's kind (see the top of the file); "" when text is not an
 * array of 5 with a string event. */
static void phx_kind_of(const char *text, char *out, size_t len)
{
    json_t *a = json_loads(text, 0, NULL);
    const char *event = json_string_value(json_array_get(a, 3));
    json_t *p = json_array_get(a, 4);
    out[0] = '\0';
    if (json_is_array(a) && json_array_size(a) == 5 && event) {
        char keys[512], extra[700] = "";
        keys_of(p, keys, sizeof keys);
        if (!strcmp(event, "phx_reply")) {
            json_t *r = json_object_get(p, "response");
            const char *st = json_string_value(json_object_get(p, "status"));
            const char *reason = json_string_value(json_object_get(r, "reason"));
            const char *code = json_string_value(json_object_get(r, "code"));
            char rkeys[512];
            keys_of(r, rkeys, sizeof rkeys);
            snprintf(extra, sizeof extra, " status=%s response=%s%s%s%s%s", st ? st : "-", rkeys,
                     reason ? " reason=" : "", reason ? reason : "", code ? " code=" : "",
                     code ? code : "");
        } else if (!strcmp(event, "error") || !strcmp(event, "stream_error")) {
            /* stream_error's "error" is the upstream's message, not a
             * code: only its "code" is part of the kind */
            const char *e = !strcmp(event, "error") ? json_string_value(json_object_get(p, "error"))
                                                    : "(message)";
            const char *code = json_string_value(json_object_get(p, "code"));
            snprintf(extra, sizeof extra, " error=%s code=%s", e ? e : "-", code ? code : "-");
        }
        snprintf(out, len, "event=%s keys=%s%s", event, keys, extra);
    }
    json_decref(a);
}

static void phx_take(struct proto_frames *f, struct strs *seen)
{
    for (int i = 0; i < f->n; i++) {
        char k[1400];
        phx_kind_of(f->v[i], k, sizeof k);
        if (!k[0])
            printf("#   a frame that is not a V2 array: %s\n", f->v[i]);
        strs_add(seen, k[0] ? k : "(not a V2 array)");
    }
    frames_free(f);
    frames_init(f);
}

/* Pumps s until no topic follows a job (15 s at most). 0 / -1. */
static int phx_pump_to_end(struct phx_socket *s, struct proto_frames *f)
{
    int64_t end = mono_ms() + 15000;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < s->n; i++)
            busy |= proto_following(&s->topics[i]);
        if (!busy)
            return 0;
        if (mono_ms() > end || phx_pump(&ctx, s, f) < 0)
            return -1;
        sleep_ms(3);
    }
}

/* Sends text on s; runs the job it starts (this thread) and pumps to its
 * end; records every frame. 0, or -1 when the socket failed. */
static int phx_exchange(struct phx_socket *s, const char *text, struct strs *seen)
{
    struct proto_frames f;
    struct proto_job *job = NULL;
    frames_init(&f);
    int rc = phx_message(&ctx, s, text, strlen(text), &f, &job);
    if (job)
        run_job(&ctx, job);
    if (rc == 0)
        rc = phx_pump_to_end(s, &f);
    phx_take(&f, seen);
    return rc;
}

/* A push on topic (join_ref "1", ref "7"): event with payload (JSON text). */
static int phx_push(struct phx_socket *s, const char *topic, const char *event,
                    const char *payload, struct strs *seen)
{
    char *text = malloc(strlen(topic) + strlen(event) + strlen(payload) + 64);
    sprintf(text, "[\"1\",\"7\",\"%s\",\"%s\",%s]", topic, event, payload);
    int rc = phx_exchange(s, text, seen);
    free(text);
    return rc;
}

static int phx_join_topic(struct phx_socket *s, const char *topic, struct strs *seen)
{
    return phx_push(s, topic, "phx_join", "{}", seen);
}

TEST(phoenix_page)
{
    const char *page = "docs/protocol-phoenix.md";
    struct strs clients = { 0 }, blocks = { 0 }, shown = { 0 }, seen = { 0 };
    REQUIRE(page_blocks(page, "client", &clients) == 0 && clients.n > 0);
    REQUIRE(page_blocks(page, "server", &blocks) == 0 && blocks.n > 0);
    for (int i = 0; i < blocks.n; i++) {
        char k[1400];
        phx_kind_of(blocks.v[i], k, sizeof k);
        if (!k[0])
            printf("#   %s: a ```json server block is not a V2 frame:\n%s", page, blocks.v[i]);
        CHECK(k[0] != '\0');
        strs_add(&shown, k);
    }
    struct phx_socket s;
    char topic[80], text[300];
    int id = getpid();

    /* every documented client frame, in the page's order and as written,
     * on a new socket each round: the answers, then the cached answers */
    for (int round = 0; round < 2; round++) {
        phx_init(&s, "alice", "user:alice", 10);
        for (int i = 0; i < clients.n; i++) {
            json_t *a = json_loads(clients.v[i], 0, NULL);
            if (!json_is_array(a))
                printf("#   %s: a ```json client block is not a V2 frame:\n%s", page, clients.v[i]);
            CHECK(json_is_array(a));
            json_decref(a);
            CHECK(phx_exchange(&s, clients.v[i], &seen) == 0);
        }
        phx_free(&s);
    }

    /* joins refused: another user's session, an invalid id, a closed
     * session, one topic too many; an unmatched topic, a push to a topic
     * not joined; malformed and too large frames */
    phx_init(&s, "alice", "user:alice", 1);
    snprintf(topic, sizeof topic, "proxy:docs-own-%d", id);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_join_topic(&s, "proxy:docs-second", &seen) == 0);
    CHECK_INT(s.n, 1);
    phx_free(&s);
    phx_init(&s, "bob", "user:bob", 10);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_join_topic(&s, "proxy:bad id", &seen) == 0);
    CHECK(phx_join_topic(&s, "room:lobby", &seen) == 0);
    CHECK(phx_push(&s, "proxy:never-joined", "ping", "{}", &seen) == 0);
    CHECK(phx_exchange(&s, "[\"1\",\"8\",\"proxy:x\",\"ping\"]", &seen) == 0);
    {
        size_t n = PHX_FRAME_MAX + 64;
        char *big = malloc(n + 64);
        int k = sprintf(big, "[null,\"9\",\"proxy:x\",\"ping\",{\"pad\":\"");
        memset(big + k, 'a', n);
        strcpy(big + k + n, "\"}]");
        CHECK(phx_exchange(&s, big, &seen) == 0);
        free(big);
    }
    phx_free(&s);
    phx_init(&s, "alice", "user:alice", 10);
    snprintf(topic, sizeof topic, "proxy:docs-closed-%d", id);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_push(&s, topic, "phx_leave", "{}", &seen) == 0);
    CHECK(store_conv_set_status(ctx.db, topic + 6, "alice", "closed") == 0);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK_INT(s.n, 0);

    /* every refusal of a push; a stop with nothing to stop */
    snprintf(topic, sizeof topic, "proxy:docs-bad-%d", id);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_push(&s, topic, "stop", "{}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "\"text\"", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"hi\",\"model\":\"no-such-model\"}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"hi\",\"temperature\":99}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"hi\",\"metadata\":\"x\"}", &seen) == 0);
    CHECK(phx_push(&s, topic, "shout", "{}", &seen) == 0);
    {
        char *longtext = malloc((size_t)cfg.max_message_length + 64);
        memset(longtext, 'a', (size_t)cfg.max_message_length + 1);
        longtext[cfg.max_message_length + 1] = '\0';
        json_t *lo = json_pack("{s:s}", "query", longtext);
        char *lt = json_dumps(lo, JSON_COMPACT);
        CHECK(phx_push(&s, topic, "query", lt, &seen) == 0);
        free(lt);
        json_decref(lo);
        free(longtext);
    }
    /* busy: a second query while the first answer is generated */
    {
        struct proto_frames f;
        struct proto_job *job = NULL, *job2 = NULL;
        frames_init(&f);
        snprintf(text, sizeof text, "[\"1\",\"10\",\"%s\",\"query\",{\"query\":\"busy one\"}]", topic);
        CHECK(phx_message(&ctx, &s, text, strlen(text), &f, &job) == 0);
        CHECK(phx_message(&ctx, &s, text, strlen(text), &f, &job2) == 0);
        CHECK(job && !job2);
        phx_take(&f, &seen);
        run_job(&ctx, job);
        CHECK(phx_pump_to_end(&s, &f) == 0);
        phx_take(&f, &seen);
    }
    /* the upstream fails, in both modes */
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"fail q [[fake error_after=0]]\"}", &seen) == 0);
    CHECK(phx_push(&s, topic, "stream_query", "{\"query\":\"fail s [[fake error_after=0]]\"}",
                   &seen) == 0);
    /* a stop after the answers: already finished */
    CHECK(phx_push(&s, topic, "stop", "{}", &seen) == 0);
    phx_free(&s);

    /* the rate limit (one generation a minute), the daily budget (a
     * token_budget claim of 1 token) */
    int limit = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 1;
    phx_init(&s, "rl3", "user:rl3", 10);
    snprintf(topic, sizeof topic, "proxy:docs-rl-%d", id);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"rate 1\"}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"rate 2\"}", &seen) == 0);
    phx_free(&s);
    cfg.rate_limit_per_min = limit;
    phx_init(&s, "poor3", "user:poor3", 10);
    s.token_budget = 1;
    snprintf(topic, sizeof topic, "proxy:docs-budget-%d", id);
    CHECK(phx_join_topic(&s, topic, &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"spend 1\"}", &seen) == 0);
    CHECK(phx_push(&s, topic, "query", "{\"query\":\"spend 2\"}", &seen) == 0);
    phx_free(&s);

    /* stops that work: stream_complete stopped, response stopped */
    const char *modes[] = { "stream_query", "query" };
    for (int m = 0; m < 2; m++) {
        struct proto_frames f;
        struct proto_job *job = NULL, *none = NULL;
        frames_init(&f);
        phx_init(&s, "alice", "user:alice", 10);
        snprintf(topic, sizeof topic, "proxy:docs-stop-%d-%d", id, m);
        CHECK(phx_join_topic(&s, topic, &seen) == 0);
        snprintf(text, sizeof text,
                 "[\"1\",\"11\",\"%s\",\"%s\",{\"query\":\"long [[fake tokens=300 token_ms=20]]\"}]",
                 topic, modes[m]);
        CHECK(phx_message(&ctx, &s, text, strlen(text), &f, &job) == 0);
        REQUIRE(job);
        /* the generation loop watches for stops (proto_job_run does not) */
        CHECK(proto_job_submit(&ctx, job) == 0);
        sleep_ms(100);
        snprintf(text, sizeof text, "[\"1\",\"12\",\"%s\",\"stop\",{}]", topic);
        CHECK(phx_message(&ctx, &s, text, strlen(text), &f, &none) == 0);
        CHECK(none == NULL);
        CHECK(phx_pump_to_end(&s, &f) == 0);
        phx_take(&f, &seen);
        phx_free(&s);
    }

    /* the database fails: a join (the conversations cannot be read) gets
     * "join failed"; a topic whose channel cannot be read while pumping
     * (the event log renamed away, as in test_phx) gets phx_error */
    {
        sqlite3 *h = db_handle(ctx.db);
        REQUIRE(h);
        struct proto_frames f;
        struct proto_job *job = NULL;
        frames_init(&f);
        phx_init(&s, "alice", "user:alice", 10);
        snprintf(topic, sizeof topic, "proxy:docs-dbfail-%d", id);
        REQUIRE(sqlite3_exec(h, "ALTER TABLE conversations RENAME TO conversations_away", NULL,
                             NULL, NULL) == SQLITE_OK);
        CHECK(phx_join_topic(&s, topic, &seen) == -1);
        REQUIRE(sqlite3_exec(h, "ALTER TABLE conversations_away RENAME TO conversations", NULL,
                             NULL, NULL) == SQLITE_OK);
        CHECK(phx_join_topic(&s, topic, &seen) == 0);
        snprintf(text, sizeof text,
                 "[\"1\",\"13\",\"%s\",\"stream_query\",{\"query\":\"crash [[fake tokens=4 token_ms=1]]\"}]",
                 topic);
        CHECK(phx_message(&ctx, &s, text, strlen(text), &f, &job) == 0);
        REQUIRE(job);
        phx_take(&f, &seen);
        REQUIRE(sqlite3_exec(h, "ALTER TABLE events RENAME TO events_away", NULL, NULL, NULL) ==
                SQLITE_OK);
        CHECK(phx_pump(&ctx, &s, &f) >= 0);
        CHECK_INT(s.n, 0);
        phx_take(&f, &seen);
        REQUIRE(sqlite3_exec(h, "ALTER TABLE events_away RENAME TO events", NULL, NULL, NULL) ==
                SQLITE_OK);
        CHECK(run_job(&ctx, job) == 0);
        phx_free(&s);
    }

    CHECK(compare_kinds(page, &shown, &seen) == 0);
    strs_free(&clients);
    strs_free(&blocks);
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
    RUN(phoenix_page);
    RUN(longpoll_page);
    proto_jobs_drain(5000);
    close_ctx(&ctx);
    config_cleanup(&cfg);
    return th_done();
}
