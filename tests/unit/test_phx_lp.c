/* test_phx_lp.c — the Phoenix LongPoll transport (fcgi/phx_longpoll.c)
 * through http_dispatch() on a memory transport:
 *   - the session token from the X-Phoenix-Longpoll-Token header, before
 *     ?token=;
 *   - the JWT from X-Phoenix-AuthToken (phoenix.js's authToken option) and
 *     a POST without any JWT acting for its session's owner, while a JWT
 *     that is sent must be valid;
 *   - OPTIONS answered as Phoenix does (200, the requested headers echoed,
 *     "get, post, options", max-age 3600) under the Origin allow-list.
 * Every wait is bounded (PARLEY_PHOENIX_WINDOW=1). */
#include "th.h"
#include "handlers.h"
#include "memres.h"
#include "auth.h"
#include "bell.h"
#include "util.h"

#include <jansson.h>
#include <strings.h>
#include <time.h>

#define SECRET "test-secret-that-is-long-enough-for-hs256"

static struct parley_config cfg;
static char dbpath[512], bellpath[512];

/* What a request carries besides method and path. */
struct hdrs {
    const char *query, *ctype, *body, *auth, *origin;
    const char *lp_token, *phx_auth, *acr;
};

struct reply {
    int status;                /* HTTP status */
    char *head;                /* header block (new) */
    char *body;                /* new */
    json_t *json;              /* parsed body, NULL if not JSON */
};

static void reply_free(struct reply *rp)
{
    free(rp->head);
    free(rp->body);
    json_decref(rp->json);
    memset(rp, 0, sizeof *rp);
}

static void lp(struct parley_ctx *ctx, struct reply *rp, const char *method, const struct hdrs *h)
{
    static const struct hdrs none;
    if (!h)
        h = &none;
    memset(rp, 0, sizeof *rp);
    struct mem m = { NULL, 0, 0, 0 };
    struct response res;
    struct request r;
    memset(&res, 0, sizeof res);
    memset(&r, 0, sizeof r);
    res.ops = &mem_ops;
    res.impl = &m;
    r.res = &res;
    r.ctx = ctx;
    r.method = method;
    r.path = "/socket/longpoll";
    r.query = h->query ? h->query : "vsn=2.0.0";
    r.content_type = h->ctype;
    r.body = h->body;
    r.body_len = h->body ? strlen(h->body) : 0;
    r.authorization = h->auth;
    r.origin = h->origin;
    r.phx_longpoll_token = h->lp_token;
    r.phx_auth_token = h->phx_auth;
    r.acr_headers = h->acr;
    r.remote_addr = "127.0.0.1";
    http_dispatch(&r);
    const char *all = m.buf ? m.buf : "";
    sscanf(all, "Status: %d", &rp->status);
    const char *sep = strstr(all, "\r\n\r\n");
    rp->head = strndup(all, sep ? (size_t)(sep - all) + 2 : strlen(all));
    rp->body = strdup(sep ? sep + 4 : "");
    rp->json = json_loads(rp->body, JSON_DECODE_ANY, NULL);
    free(m.buf);
}

/* The value of header name (case-insensitive), into buf; NULL if absent. */
static const char *header(const struct reply *rp, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = rp->head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, len, "%.*s", (int)(ll - (size_t)(v - p)), v);
            return buf;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

static int bstatus(const struct reply *rp)
{
    return (int)json_integer_value(json_object_get(rp->json, "status"));
}

static const char *btoken(const struct reply *rp)
{
    return json_string_value(json_object_get(rp->json, "token"));
}

static void set_key(const char *k, const char *v)
{
    char err[256];
    config_set(&cfg, k, v, err, sizeof err);
}

static int open_ctx(struct parley_ctx *ctx)
{
    char err[512];
    ctx->cfg = &cfg;
    ctx->db = db_open(dbpath, err, sizeof err);
    ctx->bell = ctx->db ? bell_open(bellpath, err, sizeof err) : NULL;
    if (!ctx->db || !ctx->bell) {
        printf("# %s\n", err);
        db_close(ctx->db);
        return -1;
    }
    return 0;
}

static void close_ctx(struct parley_ctx *ctx)
{
    bell_close(ctx->bell);
    db_close(ctx->db);
}

/* The heartbeat reply with ref, as a GET's message. */
static int has_reply(const struct reply *rp, const char *ref)
{
    json_t *msgs = json_object_get(rp->json, "messages");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *f = json_loads(json_string_value(json_array_get(msgs, i)), 0, NULL);
        int hit = f && !strcmp(json_string_value(json_array_get(f, 1)) ? json_string_value(json_array_get(f, 1)) : "", ref) &&
                  !strcmp(json_string_value(json_array_get(f, 3)) ? json_string_value(json_array_get(f, 3)) : "", "phx_reply");
        json_decref(f);
        if (hit)
            return 1;
    }
    return 0;
}

TEST(token_from_the_header_first)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct reply rp;
    lp(&ctx, &rp, "GET", NULL);
    REQUIRE(rp.status == 200 && bstatus(&rp) == 410);
    char t[64];
    str_copy(t, sizeof t, btoken(&rp));
    reply_free(&rp);

    /* the token in the header alone: a POST reaches the session */
    struct hdrs h = { .lp_token = t, .ctype = "application/x-ndjson",
                      .body = "[null,\"hb1\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&ctx, &rp, "POST", &h);
    CHECK_INT(bstatus(&rp), 200);
    reply_free(&rp);

    /* header first: a wrong ?token= beside it does not matter */
    struct hdrs g = { .lp_token = t, .query = "vsn=2.0.0&token=00000000-0000-4000-8000-000000000000" };
    lp(&ctx, &rp, "GET", &g);
    CHECK_INT(bstatus(&rp), 200);
    CHECK_STR(btoken(&rp), t);
    CHECK(has_reply(&rp, "hb1"));
    reply_free(&rp);

    /* ?token= still works without the header */
    char q[96];
    snprintf(q, sizeof q, "vsn=2.0.0&token=%s", t);
    struct hdrs p = { .query = q, .body = "[null,\"hb2\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&ctx, &rp, "POST", &p);
    CHECK_INT(bstatus(&rp), 200);
    reply_free(&rp);
    struct hdrs g2 = { .query = q };
    lp(&ctx, &rp, "GET", &g2);
    CHECK_INT(bstatus(&rp), 200);
    CHECK(has_reply(&rp, "hb2"));
    reply_free(&rp);

    /* an unknown token in the header: a new session */
    struct hdrs u = { .lp_token = "00000000-0000-4000-8000-000000000000", .query = q };
    lp(&ctx, &rp, "GET", &u);
    CHECK_INT(bstatus(&rp), 410);
    CHECK(btoken(&rp) && strcmp(btoken(&rp), t) != 0);
    reply_free(&rp);
    close_ctx(&ctx);
}

TEST(jwt_from_x_phoenix_authtoken)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    set_key("PARLEY_JWT_SECRET", SECRET);
    char *alice = auth_make_token(SECRET, "alice", (int64_t)time(NULL) + 3600);
    char *bob = auth_make_token(SECRET, "bob", (int64_t)time(NULL) + 3600);
    REQUIRE(alice && bob);
    struct reply rp;

    /* no JWT at all on a GET: refused connect */
    lp(&ctx, &rp, "GET", NULL);
    CHECK_INT(bstatus(&rp), 403);
    reply_free(&rp);
    /* a bad one in the header: refused */
    struct hdrs bad = { .phx_auth = "not-a-jwt" };
    lp(&ctx, &rp, "GET", &bad);
    CHECK_INT(bstatus(&rp), 403);
    reply_free(&rp);
    /* alice's in the header: a new session of hers */
    struct hdrs a = { .phx_auth = alice };
    lp(&ctx, &rp, "GET", &a);
    REQUIRE(bstatus(&rp) == 410);
    char t[64];
    str_copy(t, sizeof t, btoken(&rp));
    reply_free(&rp);

    /* a POST without any JWT (phoenix.js sends the header on GETs only)
     * acts for the session's owner */
    struct hdrs p = { .lp_token = t, .body = "[\"1\",\"1\",\"proxy:s-lp-hdr\",\"phx_join\",{}]" };
    lp(&ctx, &rp, "POST", &p);
    CHECK_INT(bstatus(&rp), 200);
    reply_free(&rp);
    struct hdrs g = { .lp_token = t, .phx_auth = alice };
    lp(&ctx, &rp, "GET", &g);
    CHECK_INT(bstatus(&rp), 200);
    CHECK(has_reply(&rp, "1"));
    CHECK(rp.body && strstr(rp.body, "\\\"status\\\":\\\"ok\\\""));
    reply_free(&rp);
    /* the conversation is alice's */
    struct conversation cv;
    CHECK_INT(store_conv_get(ctx.db, "s-lp-hdr", "alice", &cv), 0);
    store_conv_free(&cv);

    /* a POST with a JWT that is not valid: refused, not the owner's */
    struct hdrs pb = { .lp_token = t, .auth = "Bearer nope", .body = "[null,\"x\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&ctx, &rp, "POST", &pb);
    CHECK_INT(bstatus(&rp), 403);
    reply_free(&rp);
    /* bob's JWT with alice's token: her session is not his */
    struct hdrs pbob = { .lp_token = t, .phx_auth = bob, .body = "[null,\"x\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&ctx, &rp, "POST", &pbob);
    CHECK_INT(bstatus(&rp), 410);
    reply_free(&rp);
    struct hdrs gbob = { .lp_token = t, .phx_auth = bob };
    lp(&ctx, &rp, "GET", &gbob);
    CHECK_INT(bstatus(&rp), 410);
    CHECK(btoken(&rp) && strcmp(btoken(&rp), t) != 0);
    reply_free(&rp);
    /* a POST without JWT and without a valid token: gone */
    struct hdrs pn = { .body = "[null,\"x\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&ctx, &rp, "POST", &pn);
    CHECK_INT(bstatus(&rp), 410);
    reply_free(&rp);

    free(alice);
    free(bob);
    set_key("PARLEY_JWT_SECRET", "");
    close_ctx(&ctx);
}

TEST(options_as_phoenix_under_the_origin_allow_list)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    set_key("PARLEY_JWT_SECRET", SECRET);      /* a preflight carries no JWT */
    set_key("PARLEY_ALLOWED_ORIGINS", "https://app.example");
    struct reply rp;
    char v[300];
    struct hdrs h = { .origin = "https://app.example",
                      .acr = "x-phoenix-authtoken, content-type" };
    lp(&ctx, &rp, "OPTIONS", &h);
    CHECK_INT(rp.status, 200);
    CHECK_STR(header(&rp, "Access-Control-Allow-Headers", v, sizeof v),
              "x-phoenix-authtoken, content-type");
    CHECK_STR(header(&rp, "Access-Control-Allow-Methods", v, sizeof v), "get, post, options");
    CHECK_STR(header(&rp, "Access-Control-Max-Age", v, sizeof v), "3600");
    CHECK_STR(header(&rp, "Access-Control-Allow-Origin", v, sizeof v), "https://app.example");
    CHECK_STR(rp.body, "");
    reply_free(&rp);

    /* nothing requested: an empty list */
    struct hdrs n = { .origin = "https://app.example" };
    lp(&ctx, &rp, "OPTIONS", &n);
    CHECK_INT(rp.status, 200);
    CHECK_STR(header(&rp, "Access-Control-Allow-Headers", v, sizeof v) ? v : "(none)", "");
    reply_free(&rp);

    /* what is not a list of header names is not echoed (no injection) */
    struct hdrs evil = { .origin = "https://app.example", .acr = "a\r\nSet-Cookie: x=1" };
    lp(&ctx, &rp, "OPTIONS", &evil);
    CHECK_INT(rp.status, 200);
    CHECK(header(&rp, "Set-Cookie", v, sizeof v) == NULL);
    CHECK_STR(header(&rp, "Access-Control-Allow-Headers", v, sizeof v) ? v : "(none)", "");
    reply_free(&rp);

    /* a refused Origin: the dispatcher's 403 */
    struct hdrs o = { .origin = "https://evil.example", .acr = "content-type" };
    lp(&ctx, &rp, "OPTIONS", &o);
    CHECK_INT(rp.status, 403);
    CHECK(header(&rp, "Access-Control-Allow-Methods", v, sizeof v) == NULL);
    reply_free(&rp);

    /* other paths keep the dispatcher's own preflight */
    struct mem m = { NULL, 0, 0, 0 };
    struct response res;
    struct request r;
    memset(&res, 0, sizeof res);
    memset(&r, 0, sizeof r);
    res.ops = &mem_ops;
    res.impl = &m;
    r.res = &res;
    r.ctx = &ctx;
    r.method = "OPTIONS";
    r.path = "/api/chat/sessions";
    r.origin = "https://app.example";
    http_dispatch(&r);
    CHECK(m.buf && strncmp(m.buf, "Status: 204", 11) == 0);
    free(m.buf);
    set_key("PARLEY_ALLOWED_ORIGINS", "");
    set_key("PARLEY_JWT_SECRET", "");
    close_ctx(&ctx);
}

/* No database in this thread (PostgreSQL down when it started): GET and
 * POST answer Phoenix's own {"status":500} in an HTTP 200, which phoenix.js
 * handles (close, retry); the dispatcher's JSON 503 has no "status" and
 * made phoenix.js's LongPoll throw and stop polling (t0931, a restart). */
TEST(no_database_is_phoenix_500)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct parley_ctx none = ctx;
    none.db = NULL;
    struct reply rp;
    lp(&none, &rp, "GET", NULL);
    CHECK_INT(rp.status, 200);
    CHECK_INT(bstatus(&rp), 500);
    reply_free(&rp);
    struct hdrs h = { .query = "vsn=2.0.0&token=00000000-0000-4000-8000-000000000000",
                      .ctype = "application/x-ndjson",
                      .body = "[null,\"hb1\",\"phoenix\",\"heartbeat\",{}]" };
    lp(&none, &rp, "POST", &h);
    CHECK_INT(rp.status, 200);
    CHECK_INT(bstatus(&rp), 500);
    reply_free(&rp);
    /* with the database, the same GET opens a session as before */
    lp(&ctx, &rp, "GET", NULL);
    CHECK_INT(bstatus(&rp), 410);
    reply_free(&rp);
    close_ctx(&ctx);
}

int main(void)
{
    char err[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);
    config_set(&cfg, "PARLEY_PHOENIX_WINDOW", "1", err, sizeof err);
    snprintf(dbpath, sizeof dbpath, "%s/phxlp.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s/phxlp.db-bell", th_tmpdir());
    config_set(&cfg, "PARLEY_DB", dbpath, err, sizeof err);
    RUN(token_from_the_header_first);
    RUN(jwt_from_x_phoenix_authtoken);
    RUN(options_as_phoenix_under_the_origin_allow_list);
    RUN(no_database_is_phoenix_500);
    config_cleanup(&cfg);
    return th_done();
}
