/* test_http.c — parley.fcgi's dispatcher and seed 001 REST handlers, driven
 * through http_dispatch() with a memory-backed response: no web server.
 * Routing, captures, 404/405/OPTIONS/CORS/403/413/415/400/401/503, HEAD,
 * the CGI path rules, query decoding, health, brands, and every seed 001
 * endpoint (owner isolation included) against a temporary database.
 *
 * The Makefile links unit tests with build/libparley-fcgi.a (the app
 * without main.c, the process) and the core library.
 */
#include "th.h"
#include "sample_catalog.h"
#include "handlers.h"
#include "memres.h"
#include "auth.h"
#include "catalog.h"
#include "store.h"
#include "util.h"

#include <time.h>
#include <unistd.h>

#define SECRET "test-secret-that-is-long-enough-for-hs256"
#define ALG_NONE "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9."

static struct parley_config cfg;
static struct parley_ctx ctx;
static parley_db *test_db;

/* ---- the memory transport: memres.h ---- */

struct opts {
    const char *query, *ctype, *body, *auth, *origin;
    size_t body_len;           /* 0: strlen(body) */
};

struct reply {
    int status;
    char *head;                /* header block (new) */
    const char *body;          /* into mem.buf */
    json_t *json;              /* parsed body, NULL if not JSON */
    struct mem m;
    int finishes;
};

static void reply_free(struct reply *rp)
{
    free(rp->head);
    free(rp->m.buf);
    json_decref(rp->json);
    memset(rp, 0, sizeof *rp);
}

/* Dispatches method path with o and parses what was written into rp. */
static void run(struct reply *rp, const char *method, const char *path, const struct opts *o)
{
    static const struct opts none;
    if (!o)
        o = &none;
    memset(rp, 0, sizeof *rp);
    struct response res;
    struct request r;
    memset(&res, 0, sizeof res);
    memset(&r, 0, sizeof r);
    res.ops = &mem_ops;
    res.impl = &rp->m;
    r.res = &res;
    r.ctx = &ctx;
    r.method = method;
    r.path = path;
    r.query = o->query;
    r.content_type = o->ctype ? o->ctype : o->body ? "application/json" : NULL;
    r.body = o->body;
    r.body_len = o->body_len ? o->body_len : o->body ? strlen(o->body) : 0;
    r.authorization = o->auth;
    r.origin = o->origin;
    r.remote_addr = "127.0.0.1";
    http_dispatch(&r);
    if (r.after)
        r.after(&r, r.after_arg);
    rp->finishes = rp->m.finishes;
    const char *all = rp->m.buf ? rp->m.buf : "";
    const char *sep = strstr(all, "\r\n\r\n");
    size_t hl = sep ? (size_t)(sep - all) + 2 : strlen(all);
    rp->head = strndup(all, hl);
    rp->body = sep ? sep + 4 : "";
    sscanf(all, "Status: %d", &rp->status);
    rp->json = json_loads(rp->body, JSON_DECODE_ANY, NULL);
}

/* The value of header name (case-insensitive), into buf; NULL if absent. */
static const char *header(const struct reply *rp, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = rp->head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl + 1 && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
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

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const char *message(const struct reply *rp)
{
    return jstr(rp->json, "message");
}

/* Authorization header value for sub (static buffer per call site use). */
static char *bearer_for(const char *sub, char *buf, size_t len)
{
    char *t = auth_make_token(SECRET, sub, (int64_t)time(NULL) + 3600);
    snprintf(buf, len, "Bearer %s", t ? t : "");
    free(t);
    return buf;
}

static void set_secret(const char *secret)
{
    char err[256];
    config_set(&cfg, "PARLEY_JWT_SECRET", secret ? secret : "", err, sizeof err);
}

static void set_origins(const char *list)
{
    char err[256];
    config_set(&cfg, "PARLEY_ALLOWED_ORIGINS", list ? list : "", err, sizeof err);
}

/* Creates a session for the user behind auth; its id into id[64]. */
static int create_session(const char *auth, const char *body, char *id)
{
    struct reply rp;
    struct opts o = { .auth = auth, .body = body ? body : "{}" };
    run(&rp, "POST", "/api/chat/sessions", &o);
    int ok = rp.status == 201 && jstr(rp.json, "session_id");
    if (ok)
        str_copy(id, 64, jstr(rp.json, "session_id"));
    reply_free(&rp);
    return ok ? 0 : -1;
}

/* ---- routing and the dispatcher's checks ---- */

TEST(unknown_path_is_404_with_method_and_path)
{
    struct reply rp;
    run(&rp, "GET", "/x", NULL);
    CHECK_INT(rp.status, 404);
    CHECK_STR(rp.body, "{\"success\":false,\"message\":\"Not found: GET /x\",\"code\":\"not_found\"}");
    CHECK_INT(rp.finishes, 1);
    reply_free(&rp);
    run(&rp, "GET", "/api/chat/sessions/", NULL);        /* empty capture */
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    run(&rp, "GET", "/api/health/extra", NULL);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
}

TEST(wrong_method_is_405_with_allow)
{
    struct reply rp;
    char h[200];
    run(&rp, "PUT", "/api/chat/sessions", NULL);
    CHECK_INT(rp.status, 405);
    CHECK_STR(header(&rp, "Allow", h, sizeof h), "GET, HEAD, POST, OPTIONS");
    CHECK(jstr(rp.json, "message") && strstr(message(&rp), "PUT"));
    CHECK(json_is_false(json_object_get(rp.json, "success")));
    reply_free(&rp);
    run(&rp, "POST", "/api/tickets/1/ai/stream", NULL);
    CHECK_INT(rp.status, 405);
    CHECK_STR(header(&rp, "Allow", h, sizeof h), "GET, OPTIONS");
    reply_free(&rp);
}

TEST(options_preflight_from_the_table)
{
    set_secret(SECRET);                        /* a preflight carries no token */
    set_origins("https://app.example");
    struct reply rp;
    struct opts o = { .origin = "https://app.example" };
    char h[200];
    run(&rp, "OPTIONS", "/api/chat/sessions/abc", &o);
    CHECK_INT(rp.status, 204);
    CHECK_STR(header(&rp, "Access-Control-Allow-Methods", h, sizeof h),
              "GET, HEAD, DELETE, OPTIONS");
    CHECK_STR(header(&rp, "Access-Control-Allow-Headers", h, sizeof h),
              "Authorization, Content-Type, Last-Event-ID, X-Parley-Visitor");
    CHECK_STR(header(&rp, "Access-Control-Allow-Origin", h, sizeof h), "https://app.example");
    CHECK(header(&rp, "Access-Control-Max-Age", h, sizeof h) != NULL);
    CHECK_STR(rp.body, "");
    reply_free(&rp);
    run(&rp, "OPTIONS", "/nothing/here", &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    o.origin = "https://evil.example";
    run(&rp, "OPTIONS", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 403);
    reply_free(&rp);
    set_origins(NULL);
    set_secret(NULL);
}

TEST(cors_headers_and_origin_allow_list)
{
    struct reply rp;
    char h[200];
    set_origins("https://a.example, https://b.example:8443");
    struct opts o = { .origin = "https://b.example:8443" };
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 200);
    CHECK_STR(header(&rp, "Access-Control-Allow-Origin", h, sizeof h), "https://b.example:8443");
    CHECK_STR(header(&rp, "Vary", h, sizeof h), "Origin");
    reply_free(&rp);

    o.origin = "https://evil.example";
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 403);
    CHECK_STR(message(&rp), "Origin https://evil.example is not allowed (PARLEY_ALLOWED_ORIGINS)");
    CHECK(header(&rp, "Access-Control-Allow-Origin", h, sizeof h) == NULL);
    reply_free(&rp);

    run(&rp, "GET", "/api/chat/sessions", NULL);    /* no Origin: not a browser */
    CHECK_INT(rp.status, 200);
    CHECK(header(&rp, "Access-Control-Allow-Origin", h, sizeof h) == NULL);
    CHECK_STR(header(&rp, "Vary", h, sizeof h), "Origin");
    reply_free(&rp);

    set_origins(NULL);                               /* any origin */
    o.origin = "https://whoever.example";
    run(&rp, "GET", "/api/nope", &o);                /* errors carry CORS too */
    CHECK_INT(rp.status, 404);
    CHECK_STR(header(&rp, "Access-Control-Allow-Origin", h, sizeof h), "https://whoever.example");
    reply_free(&rp);
}

TEST(body_over_the_cap_is_413)
{
    struct reply rp;
    struct opts o = { .body_len = HTTP_MAX_BODY + 1, .ctype = "application/json" };
    run(&rp, "POST", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 413);
    CHECK(message(&rp) && strstr(message(&rp), "too large"));
    reply_free(&rp);
    /* a raw-body route too */
    run(&rp, "POST", "/api/poll/some-sid", &o);
    CHECK_INT(rp.status, 413);
    reply_free(&rp);
}

TEST(json_routes_want_json)
{
    struct reply rp;
    struct opts o = { .body = "{\"title\":\"t\"}", .ctype = "text/plain" };
    run(&rp, "POST", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 415);
    CHECK(message(&rp) && strstr(message(&rp), "application/json"));
    reply_free(&rp);
    o.ctype = "application/json; charset=latin1";
    run(&rp, "POST", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 415);
    reply_free(&rp);
    o.ctype = NULL;
    o.body = NULL;
    o.body_len = 0;
    run(&rp, "POST", "/api/chat/export", &o);          /* no body, no type */
    CHECK_INT(rp.status, 415);
    reply_free(&rp);

    static const char *const good[] = { "application/json", "Application/JSON; charset=UTF-8",
                                        "application/json;charset=\"utf-8\"",
                                        "application/vnd.api+json" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct opts g = { .body = "{}", .ctype = good[i] };
        run(&rp, "POST", "/api/chat/sessions", &g);
        CHECK_INT(rp.status, 201);
        reply_free(&rp);
    }

    struct opts bad = { .body = "{\"title\": " };
    run(&rp, "POST", "/api/chat/sessions", &bad);
    CHECK_INT(rp.status, 400);
    CHECK(message(&rp) && strncmp(message(&rp), "Invalid JSON: ", 14) == 0);
    reply_free(&rp);
    bad.body = "[1, 2]";
    run(&rp, "POST", "/api/chat/sessions", &bad);
    CHECK_INT(rp.status, 400);
    CHECK_STR(message(&rp), "Invalid JSON: the body must be a JSON object");
    reply_free(&rp);
    bad.body = "{\"a\":\"\xff\"}";                        /* not UTF-8 */
    run(&rp, "POST", "/api/chat/sessions", &bad);
    CHECK_INT(rp.status, 400);
    CHECK(rp.json != NULL);                               /* the error is valid JSON */
    reply_free(&rp);
}

TEST(jwt_is_checked_on_auth_routes)
{
    set_secret(SECRET);
    struct reply rp;
    char h[300];
    run(&rp, "GET", "/api/chat/sessions", NULL);
    CHECK_INT(rp.status, 401);
    CHECK_STR(message(&rp), "Unauthorized: authentication required: no token given");
    CHECK(header(&rp, "WWW-Authenticate", h, sizeof h) != NULL);
    reply_free(&rp);

    struct {
        const char *name;
        char *token;
    } bad[] = {
        { "expired", auth_make_token(SECRET, "alice", (int64_t)time(NULL) - 3600) },
        { "bad signature", auth_make_token("another-secret-entirely-0123456789", "alice", 0) },
        { "alg none", strdup(ALG_NONE) },
        { "garbage", strdup("not.a.token") },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char auth[2048];
        snprintf(auth, sizeof auth, "Bearer %s", bad[i].token);
        struct opts o = { .auth = auth };
        run(&rp, "GET", "/api/chat/sessions", &o);
        CHECK_INT(rp.status, 401);
        CHECK(message(&rp) && strncmp(message(&rp), "Unauthorized: ", 14) == 0);
        CHECK(strstr(rp.m.buf, bad[i].token) == NULL);   /* never echoed */
        if (rp.status != 401)
            printf("#   case %s\n", bad[i].name);
        reply_free(&rp);
        free(bad[i].token);
    }
    char *exp = auth_make_token(SECRET, "alice", (int64_t)time(NULL) - 3600);
    char auth[2048];
    snprintf(auth, sizeof auth, "Bearer %s", exp);
    struct opts o = { .auth = auth };
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK(message(&rp) && strstr(message(&rp), auth_message(AUTH_EXPIRED)));
    reply_free(&rp);
    free(exp);

    /* good: header, or ?token= (EventSource cannot set headers) */
    o.auth = bearer_for("alice", auth, sizeof auth);
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 200);
    reply_free(&rp);
    char *tok = auth_make_token(SECRET, "alice", 0), q[2048];
    snprintf(q, sizeof q, "limit=5&token=%s", tok);
    struct opts oq = { .query = q };
    run(&rp, "GET", "/api/chat/sessions", &oq);
    CHECK_INT(rp.status, 200);
    reply_free(&rp);
    free(tok);

    /* public routes need none; a bad token on the optional-auth route is a 401 */
    run(&rp, "GET", "/api/health", NULL);
    CHECK(rp.status == 200 || rp.status == 503);
    reply_free(&rp);
    struct opts po = { .auth = "Bearer " ALG_NONE, .body = "{\"path\":\"/ws/x\"}" };
    run(&rp, "POST", "/api/poll/open", &po);
    CHECK_INT(rp.status, 401);
    reply_free(&rp);
    set_secret(NULL);
}

TEST(captures_are_decoded_and_checked)
{
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.id, sizeof c.id, "a b+é");
    REQUIRE(store_conv_create(test_db, &c) == 0);
    struct reply rp;
    run(&rp, "GET", "/api/chat/sessions/a%20b+%C3%A9", NULL);
    CHECK_INT(rp.status, 200);
    CHECK_STR(jstr(rp.json, "session_id"), "a b+é");
    reply_free(&rp);
    run(&rp, "GET", "/api/%63hat/sessions/a%20b+%c3%a9", NULL);   /* literals decode too */
    CHECK_INT(rp.status, 200);
    reply_free(&rp);
    static const char *const bad[] = { "/api/chat/sessions/x%2Fy", "/api/chat/sessions/x%00y",
                                       "/api/chat/sessions/%FF", "/api/chat/sessions/%zz",
                                       "/api/chat/sessions/abc%2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        run(&rp, "GET", bad[i], NULL);
        CHECK_INT(rp.status, 404);
        CHECK(rp.json != NULL && message(&rp) && strncmp(message(&rp), "Not found: GET ", 15) == 0);
        reply_free(&rp);
    }
    /* a foreign capture never reaches SQL as anything but a value */
    run(&rp, "GET", "/api/chat/sessions/1'%20OR%20'1'='1", NULL);
    CHECK_INT(rp.status, 404);
    CHECK(message(&rp) && strncmp(message(&rp), "Session not found", 17) == 0);
    reply_free(&rp);
}

TEST(head_and_stream_headers)
{
    struct reply rp;
    char h[100];
    run(&rp, "HEAD", "/api/chat/sessions", NULL);
    CHECK_INT(rp.status, 200);
    CHECK_STR(rp.body, "");
    CHECK(header(&rp, "Content-Length", h, sizeof h) != NULL);
    reply_free(&rp);
    run(&rp, "HEAD", "/api/tickets/1/ai/stream", NULL);
    CHECK_INT(rp.status, 405);
    reply_free(&rp);
    /* an error on a streaming route still gets the streaming headers */
    struct opts o = { .body = "{}" };
    run(&rp, "POST", "/api/chat/send", &o);
    CHECK_INT(rp.status, 400);
    CHECK_STR(header(&rp, "Cache-Control", h, sizeof h), "no-cache");
    CHECK_STR(header(&rp, "X-Accel-Buffering", h, sizeof h), "no");
    CHECK(header(&rp, "Content-Length", h, sizeof h) == NULL);
    reply_free(&rp);
    run(&rp, "GET", "/api/chat/sessions", NULL);          /* not a stream */
    CHECK(header(&rp, "X-Accel-Buffering", h, sizeof h) == NULL);
    CHECK_STR(header(&rp, "Content-Type", h, sizeof h), "application/json");
    reply_free(&rp);
}

TEST(no_database_is_503_but_health_answers)
{
    parley_db *keep = ctx.db;
    ctx.db = NULL;
    struct reply rp;
    run(&rp, "GET", "/api/chat/sessions", NULL);
    CHECK_INT(rp.status, 503);
    reply_free(&rp);
    run(&rp, "GET", "/api/health", NULL);
    CHECK_INT(rp.status, 503);
    CHECK_STR(jstr(rp.json, "status"), "degraded");
    CHECK_STR(jstr(rp.json, "database"), "unavailable");
    reply_free(&rp);
    ctx.db = keep;
}

TEST(routes_reach_ticket_and_poll_handlers)
{
    struct reply rp;
    run(&rp, "GET", "/api/tickets/bad%20id/ai", NULL);    /* their own id check */
    CHECK_INT(rp.status, 400);
    reply_free(&rp);
    run(&rp, "GET", "/api/poll/unknown-sid", NULL);
    CHECK_INT(rp.status, 410);
    reply_free(&rp);
    run(&rp, "DELETE", "/api/poll/unknown-sid", NULL);
    CHECK_INT(rp.status, 410);
    reply_free(&rp);
}

/* ---- helpers: paths and queries ---- */

TEST(cgi_paths)
{
    static const struct {
        const char *uri, *script, *info, *want;
    } cases[] = {
        { "/api/health", NULL, NULL, "/api/health" },
        { "/api/health?x=1", "/api/health", NULL, "/api/health" },
        { NULL, "/api/health", NULL, "/api/health" },                  /* cgi-fcgi */
        { NULL, "/api", "/chat/sessions", "/api/chat/sessions" },     /* lighttpd prefix */
        { "/parley/api/chat/sessions?limit=1", "/parley/parley.fcgi", "/api/chat/sessions",
          "/api/chat/sessions" },                                      /* mod_fcgid rewrite */
        { "/parley/api/x", "/parley/parley.fcgi", NULL, "/api/x" },    /* rewrite, no PATH_INFO */
        { "/chat/s", "/api/chat/sessions", NULL, "/api/chat/sessions" },   /* rewritten URL */
        { NULL, "/p/parley.fcgi", "/brands/active", "/brands/active" },
        { "/api/chat/sessions/a%2Fb", "/api/chat/sessions/a/b", NULL, "/api/chat/sessions/a%2Fb" },
        { NULL, "/api/chat/sessions/100%", NULL, "/api/chat/sessions/100%25" },
        { "http://h.example/api/health", NULL, NULL, "/api/health" },
        { "/elsewhere", NULL, NULL, "/elsewhere" },
        { NULL, NULL, NULL, "/" },
        { "/apiary/api/health", NULL, NULL, "/api/health" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        http_path_from_cgi(cases[i].uri, cases[i].script, cases[i].info, out, sizeof out);
        CHECK_STR(out, cases[i].want);
    }
}

TEST(query_parameters)
{
    struct request r;
    memset(&r, 0, sizeof r);
    r.query = "a=1&b=x%20y+z&empty=&flag&t%6fken=abc&nul=%00&long=0123456789";
    char buf[8];
    CHECK_STR(req_query(&r, "a", buf, sizeof buf), "1");
    CHECK_STR(req_query(&r, "b", buf, sizeof buf), "x y z");
    CHECK_STR(req_query(&r, "empty", buf, sizeof buf), "");
    CHECK_STR(req_query(&r, "flag", buf, sizeof buf), "");
    CHECK_STR(req_query(&r, "token", buf, sizeof buf), "abc");
    CHECK(req_query(&r, "nul", buf, sizeof buf) == NULL);
    CHECK(req_query(&r, "long", buf, sizeof buf) == NULL);    /* does not fit */
    CHECK(req_query(&r, "missing", buf, sizeof buf) == NULL);
    r.query = NULL;
    CHECK(req_query(&r, "a", buf, sizeof buf) == NULL);
}

TEST(query_integers)
{
    struct request r;
    memset(&r, 0, sizeof r);
    r.query = "n=42&neg=-3&plus=%2B5&blank=%205&tail=5x&big=99999999999999999999&empty=";
    long long v = 0;
    CHECK_INT(req_query_int(&r, "n", 7, 0, 100, &v), 1);
    CHECK_INT(v, 42);
    CHECK_INT(req_query_int(&r, "missing", 7, 0, 100, &v), 0);
    CHECK_INT(v, 7);
    CHECK_INT(req_query_int(&r, "neg", 7, -5, 100, &v), 1);
    CHECK_INT(v, -3);
    CHECK_INT(req_query_int(&r, "neg", 7, 0, 100, &v), -1);     /* below min */
    CHECK_INT(v, 7);
    CHECK_INT(req_query_int(&r, "n", 7, 0, 41, &v), -1);        /* above max */
    CHECK_INT(req_query_int(&r, "plus", 7, 0, 100, &v), -1);
    CHECK_INT(req_query_int(&r, "blank", 7, 0, 100, &v), -1);
    CHECK_INT(req_query_int(&r, "tail", 7, 0, 100, &v), -1);
    CHECK_INT(req_query_int(&r, "big", 7, 0, 100, &v), -1);     /* beyond long long */
    CHECK_INT(req_query_int(&r, "empty", 7, 0, 100, &v), -1);
}

/* ---- misc handlers ---- */

TEST(health_reports_database_and_upstream_without_credentials)
{
    char err[256];
    REQUIRE(config_set(&cfg, "OLLAMA_SERVER", "http://user:pw@127.0.0.1:9/api/generate?k=s3cr3t",
                       err, sizeof err) == 0);
    struct reply rp;
    run(&rp, "GET", "/api/health", NULL);
    CHECK_INT(rp.status, 200);
    CHECK_STR(jstr(rp.json, "database"), "ok");
    CHECK_STR(jstr(rp.json, "status"), "degraded");
    json_t *up = json_object_get(rp.json, "upstream");
    CHECK_STR(jstr(up, "provider"), "ollama");
    CHECK_STR(jstr(up, "url"), "http://127.0.0.1:9/api/tags");
    CHECK(json_is_false(json_object_get(up, "reachable")));
    CHECK(strstr(rp.body, "pw") == NULL && strstr(rp.body, "s3cr3t") == NULL);
    reply_free(&rp);

    /* openai: the key is sent, never shown */
    REQUIRE(config_set(&cfg, "PARLEY_PROVIDER", "openai", err, sizeof err) == 0);
    REQUIRE(config_set(&cfg, "OPENAI_BASE_URL", "http://127.0.0.1:9/v1/chat/completions", err,
                       sizeof err) == 0);
    REQUIRE(config_set(&cfg, "OPENAI_API_KEY", "sk-do-not-show", err, sizeof err) == 0);
    run(&rp, "GET", "/api/health", NULL);
    up = json_object_get(rp.json, "upstream");
    CHECK_STR(jstr(up, "provider"), "openai");
    CHECK_STR(jstr(up, "url"), "http://127.0.0.1:9/v1/models");
    CHECK(strstr(rp.body, "sk-do-not-show") == NULL);
    reply_free(&rp);
    config_set(&cfg, "PARLEY_PROVIDER", "ollama", err, sizeof err);
    config_set(&cfg, "OPENAI_API_KEY", "", err, sizeof err);

    const char *fake = getenv("FAKE_LLM_URL");
    if (fake && *fake && config_set(&cfg, "OLLAMA_SERVER", fake, err, sizeof err) == 0) {
        int64_t t0 = mono_ms();
        run(&rp, "GET", "/api/health", NULL);
        CHECK_INT(rp.status, 200);
        CHECK_STR(jstr(rp.json, "status"), "ok");
        CHECK(json_is_true(json_object_get(json_object_get(rp.json, "upstream"), "reachable")));
        reply_free(&rp);
        run(&rp, "GET", "/api/health", NULL);             /* cached: no second probe */
        CHECK(json_is_true(json_object_get(json_object_get(rp.json, "upstream"), "reachable")));
        reply_free(&rp);
        CHECK(mono_ms() - t0 < 2 * HEALTH_PROBE_MS);
    } else {
        printf("# FAKE_LLM_URL not set: reachable upstream not tested\n");
    }
}

TEST(brands_active_lists_the_catalog)
{
    struct reply rp;
    run(&rp, "GET", "/brands/active", NULL);
    CHECK_INT(rp.status, 200);
    CHECK(json_is_array(rp.json));
    int found = 0;
    size_t i;
    json_t *b;
    json_array_foreach(rp.json, i, b)
        found |= jstr(b, "brand_id") && !strcmp(jstr(b, "brand_id"), "techpro");
    CHECK(found);
    reply_free(&rp);
}

TEST(metrics_combine_database_and_bridge)
{
    struct reply rp;
    char path[1024];
    /* an admin's token (role "admin", docs/admin.md): /api/metrics is theirs */
    set_secret(SECRET);
    char *t = auth_make_token_role(SECRET, "ops", (int64_t)time(NULL) + 3600, "admin");
    REQUIRE(t);
    char admin[2048];
    snprintf(admin, sizeof admin, "Bearer %s", t);
    free(t);
    struct opts ao = { .auth = admin };
    snprintf(path, sizeof path, "%s-ws.prom", cfg.db_path);
    unlink(path);
    run(&rp, "GET", "/api/metrics", &ao);
    CHECK_INT(rp.status, 200);
    CHECK(strstr(rp.body, "parley_jobs{state=\"running\"} ") != NULL);
    CHECK(strstr(rp.body, "# TYPE parley_poll_sessions gauge") != NULL);
    CHECK(strstr(rp.body, "parley_ws_up 0") != NULL);
    reply_free(&rp);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("# TYPE parley_ws_connections gauge\nparley_ws_connections 7\n", f);
    fclose(f);
    run(&rp, "GET", "/api/metrics", &ao);
    CHECK(strstr(rp.body, "parley_ws_up 1") != NULL);
    CHECK(strstr(rp.body, "parley_ws_connections 7") != NULL);
    reply_free(&rp);
    unlink(path);
    /* no token: 401; a user's token without the admin role: 403 */
    run(&rp, "GET", "/api/metrics", NULL);
    CHECK_INT(rp.status, 401);
    reply_free(&rp);
    char user[2048];
    struct opts uo = { .auth = bearer_for("alice", user, sizeof user) };
    run(&rp, "GET", "/api/metrics", &uo);
    CHECK_INT(rp.status, 403);
    CHECK(rp.body && strstr(rp.body, "\"code\":\"forbidden\"") != NULL);
    CHECK(rp.body && !strstr(rp.body, "parley_jobs"));
    reply_free(&rp);
    /* open mode has no admin: 403, as the admin endpoints */
    set_secret(NULL);
    run(&rp, "GET", "/api/metrics", NULL);
    CHECK_INT(rp.status, 403);
    CHECK(rp.body && !strstr(rp.body, "parley_jobs"));
    reply_free(&rp);
}

/* ---- seed 001 sessions ---- */

TEST(create_session_shapes)
{
    set_secret(SECRET);
    char auth[2048];
    bearer_for("carol", auth, sizeof auth);
    struct reply rp;
    struct opts o = { .auth = auth, .body =
        "{\"title\":\"Printer\",\"settings\":{\"language\":\"pt\"},"
        "\"metadata\":{\"client_version\":\"1.2\"},\"kind\":\"sse\"}" };
    run(&rp, "POST", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 201);
    CHECK_STR(jstr(rp.json, "user_id"), "carol");
    CHECK_STR(jstr(rp.json, "title"), "Printer");
    CHECK_STR(jstr(rp.json, "kind"), "sse");
    CHECK_STR(jstr(rp.json, "status"), "active");
    CHECK_INT(json_integer_value(json_object_get(rp.json, "message_count")), 0);
    CHECK_STR(jstr(json_object_get(rp.json, "settings"), "language"), "pt");
    CHECK_STR(jstr(json_object_get(rp.json, "metadata"), "client_version"), "1.2");
    CHECK(jstr(rp.json, "id") && jstr(rp.json, "session_id") &&
          !strcmp(jstr(rp.json, "id"), jstr(rp.json, "session_id")));
    const char *ts = jstr(rp.json, "started_at");
    CHECK(ts && strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z');
    reply_free(&rp);

    static const char *const bad[] = { "{\"title\":5}", "{\"kind\":\"ticket\"}",
                                       "{\"settings\":[1]}", "{\"metadata\":\"x\"}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct opts b = { .auth = auth, .body = bad[i] };
        run(&rp, "POST", "/api/chat/sessions", &b);
        CHECK_INT(rp.status, 400);
        reply_free(&rp);
    }
    set_secret(NULL);
}

TEST(list_sessions_paginates_and_filters)
{
    set_secret(SECRET);
    char auth[2048], id[64];
    bearer_for("dave", auth, sizeof auth);
    for (int i = 0; i < 3; i++) {
        struct timespec ms2 = { 0, 2000000 };             /* distinct activity times */
        nanosleep(&ms2, NULL);
        REQUIRE(create_session(auth, i == 2 ? "{\"kind\":\"sse\"}" : "{}", id) == 0);
    }
    struct reply rp;
    struct opts o = { .auth = auth };
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(rp.status, 200);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "total")), 3);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "limit")), 20);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "offset")), 0);
    CHECK_INT(json_array_size(json_object_get(rp.json, "sessions")), 3);
    CHECK_STR(jstr(json_array_get(json_object_get(rp.json, "sessions"), 0), "session_id"), id);
    reply_free(&rp);

    o.query = "limit=1&offset=1";
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(json_array_size(json_object_get(rp.json, "sessions")), 1);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "total")), 3);
    reply_free(&rp);
    o.query = "limit=1000";
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "limit")), 100);
    reply_free(&rp);
    o.query = "kind=sse";
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "total")), 1);
    reply_free(&rp);
    static const char *const bad[] = { "limit=abc", "limit=0", "limit=-1", "offset=-5",
                                       "offset=1x", "kind=bogus", "limit=" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.query = bad[i];
        run(&rp, "GET", "/api/chat/sessions", &o);
        CHECK_INT(rp.status, 400);
        reply_free(&rp);
    }
    set_secret(NULL);
}

/* Adds a user and an assistant message to conversation id. */
static void add_messages(const char *id, char *assistant_id)
{
    struct message m;
    store_msg_init(&m);
    str_copy(m.conversation_id, sizeof m.conversation_id, id);
    str_copy(m.role, sizeof m.role, "user");
    m.content = "Why is the printer on fire?";
    m.created_at = now_ms() - 1000;
    store_msg_add(test_db, &m);
    store_msg_init(&m);
    str_copy(m.conversation_id, sizeof m.conversation_id, id);
    str_copy(m.role, sizeof m.role, "assistant");
    m.content = "Unplug it first.";
    m.tokens = 42;
    m.processing_ms = 1234;
    m.model = "llama3.2";
    store_msg_add(test_db, &m);
    str_copy(assistant_id, 64, m.id);
}

TEST(session_messages_oldest_first)
{
    set_secret(SECRET);
    char auth[2048], id[64], aid[64], path[200];
    bearer_for("erin", auth, sizeof auth);
    REQUIRE(create_session(auth, NULL, id) == 0);
    add_messages(id, aid);
    struct reply rp;
    struct opts o = { .auth = auth };
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages", id);
    run(&rp, "GET", path, &o);
    CHECK_INT(rp.status, 200);
    json_t *msgs = json_object_get(rp.json, "messages");
    CHECK_INT(json_array_size(msgs), 2);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "total")), 2);
    json_t *u = json_array_get(msgs, 0), *a = json_array_get(msgs, 1);
    CHECK_STR(jstr(u, "role"), "user");
    CHECK_STR(jstr(u, "session_id"), id);
    CHECK(json_is_null(json_object_get(json_object_get(u, "metadata"), "tokens_used")));
    CHECK_STR(jstr(a, "message_id"), aid);
    CHECK_STR(jstr(a, "content"), "Unplug it first.");
    json_t *meta = json_object_get(a, "metadata");
    CHECK_INT(json_integer_value(json_object_get(meta, "tokens_used")), 42);
    CHECK(json_real_value(json_object_get(meta, "processing_time")) > 1.233 &&
          json_real_value(json_object_get(meta, "processing_time")) < 1.235);
    CHECK_STR(jstr(meta, "agent_used"), "llama3.2");
    CHECK(json_is_array(json_object_get(meta, "attachments")));
    json_t *re = json_object_get(a, "reactions");
    CHECK(json_is_null(json_object_get(re, "helpful")) && json_is_null(json_object_get(re, "rating")));
    CHECK(jstr(a, "timestamp") != NULL);
    reply_free(&rp);
    o.query = "limit=1&offset=1";
    run(&rp, "GET", path, &o);
    CHECK_INT(json_array_size(json_object_get(rp.json, "messages")), 1);
    CHECK_STR(jstr(json_array_get(json_object_get(rp.json, "messages"), 0), "role"), "assistant");
    reply_free(&rp);

    snprintf(path, sizeof path, "/api/chat/sessions/%s", id);
    o.query = NULL;
    run(&rp, "GET", path, &o);
    CHECK_INT(rp.status, 200);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "message_count")), 2);
    reply_free(&rp);
    set_secret(NULL);
}

TEST(another_users_session_is_404_everywhere)
{
    set_secret(SECRET);
    char alice[2048], bob[2048], id[64], aid[64], path[300], body[300];
    bearer_for("alice", alice, sizeof alice);
    bearer_for("bob", bob, sizeof bob);
    REQUIRE(create_session(bob, "{\"title\":\"bob's\"}", id) == 0);
    add_messages(id, aid);
    struct reply rp;
    struct opts o = { .auth = alice };

    snprintf(path, sizeof path, "/api/chat/sessions/%s", id);
    run(&rp, "GET", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    run(&rp, "DELETE", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    o.query = "purge=true";
    run(&rp, "DELETE", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    o.query = NULL;
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages", id);
    run(&rp, "GET", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    snprintf(body, sizeof body, "{\"session_id\":\"%s\"}", id);
    o.body = body;
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages/%s/reactions", id, aid);
    o.body = "{\"helpful\":false}";
    run(&rp, "POST", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    o.body = NULL;
    run(&rp, "GET", "/api/chat/sessions", &o);
    CHECK_INT(json_integer_value(json_object_get(rp.json, "total")), 0);
    reply_free(&rp);

    /* bob still has it, untouched */
    struct opts ob = { .auth = bob };
    snprintf(path, sizeof path, "/api/chat/sessions/%s", id);
    run(&rp, "GET", path, &ob);
    CHECK_INT(rp.status, 200);
    CHECK_STR(jstr(rp.json, "status"), "active");
    reply_free(&rp);
    set_secret(NULL);
}

TEST(delete_closes_or_purges)
{
    set_secret(SECRET);
    char auth[2048], id[64], aid[64], path[300];
    bearer_for("frank", auth, sizeof auth);
    REQUIRE(create_session(auth, NULL, id) == 0);
    add_messages(id, aid);
    struct reply rp;
    struct opts o = { .auth = auth };
    snprintf(path, sizeof path, "/api/chat/sessions/%s", id);
    run(&rp, "DELETE", path, &o);
    CHECK_INT(rp.status, 200);
    CHECK(json_is_true(json_object_get(rp.json, "success")));
    CHECK_STR(jstr(rp.json, "session_id"), id);
    CHECK_STR(jstr(rp.json, "status"), "closed");
    reply_free(&rp);
    run(&rp, "GET", path, &o);
    CHECK_STR(jstr(rp.json, "status"), "closed");
    CHECK_INT(json_integer_value(json_object_get(rp.json, "message_count")), 2);  /* kept */
    reply_free(&rp);
    o.query = "purge=maybe";
    run(&rp, "DELETE", path, &o);
    CHECK_INT(rp.status, 400);
    reply_free(&rp);
    o.query = "purge=true";
    run(&rp, "DELETE", path, &o);
    CHECK_INT(rp.status, 204);
    CHECK_STR(rp.body, "");
    reply_free(&rp);
    o.query = NULL;
    run(&rp, "GET", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    set_secret(NULL);
}

TEST(export_json_and_markdown)
{
    set_secret(SECRET);
    char auth[2048], id[64], aid[64], body[300], h[300];
    bearer_for("gina", auth, sizeof auth);
    REQUIRE(create_session(auth, "{\"title\":\"Fire drill\"}", id) == 0);
    add_messages(id, aid);
    struct reply rp;
    snprintf(body, sizeof body, "{\"session_id\":\"%s\",\"format\":\"json\"}", id);
    struct opts o = { .auth = auth, .body = body };
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 200);
    CHECK_STR(jstr(json_object_get(rp.json, "session"), "session_id"), id);
    CHECK_INT(json_array_size(json_object_get(rp.json, "messages")), 2);
    CHECK(jstr(rp.json, "exported_at") != NULL);
    reply_free(&rp);

    snprintf(body, sizeof body, "{\"session_id\":\"%s\",\"format\":\"markdown\"}", id);
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 200);
    CHECK_STR(header(&rp, "Content-Type", h, sizeof h), "text/markdown; charset=utf-8");
    char want[200];
    snprintf(want, sizeof want, "attachment; filename=\"session-%s.md\"", id);
    CHECK_STR(header(&rp, "Content-Disposition", h, sizeof h), want);
    CHECK(strncmp(rp.body, "# Fire drill\n", 13) == 0);
    CHECK(strstr(rp.body, "Why is the printer on fire?") && strstr(rp.body, "Unplug it first."));
    CHECK(strstr(rp.body, "### Assistant") && strstr(rp.body, "42 tokens"));
    CHECK(header(&rp, "Content-Length", h, sizeof h) && (size_t)atol(h) == strlen(rp.body));
    reply_free(&rp);

    snprintf(body, sizeof body, "{\"session_id\":\"%s\",\"format\":\"xml\"}", id);
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 400);
    reply_free(&rp);
    o.body = "{\"format\":\"json\"}";
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 400);
    reply_free(&rp);
    o.body = "{\"session_id\":\"no-such-session\"}";
    run(&rp, "POST", "/api/chat/export", &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);
    set_secret(NULL);
}

TEST(reactions_validate_and_persist)
{
    set_secret(SECRET);
    char auth[2048], id[64], aid[64], path[300];
    bearer_for("hank", auth, sizeof auth);
    REQUIRE(create_session(auth, NULL, id) == 0);
    add_messages(id, aid);
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages/%s/reactions", id, aid);
    struct reply rp;
    struct opts o = { .auth = auth, .body = "{\"helpful\":true}" };
    run(&rp, "POST", path, &o);
    CHECK_INT(rp.status, 200);
    json_t *re = json_object_get(rp.json, "reactions");
    CHECK(json_is_true(json_object_get(re, "helpful")));
    CHECK(json_is_null(json_object_get(re, "rating")));
    reply_free(&rp);
    o.body = "{\"rating\":4}";
    run(&rp, "POST", path, &o);
    re = json_object_get(rp.json, "reactions");
    CHECK(json_is_true(json_object_get(re, "helpful")));        /* kept */
    CHECK_INT(json_integer_value(json_object_get(re, "rating")), 4);
    reply_free(&rp);

    static const char *const bad[] = { "{\"rating\":6}", "{\"rating\":0}", "{\"rating\":\"4\"}",
                                       "{\"rating\":4.5}", "{\"helpful\":\"yes\"}", "{}",
                                       "{\"helpful\":null}" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.body = bad[i];
        run(&rp, "POST", path, &o);
        CHECK_INT(rp.status, 400);
        reply_free(&rp);
    }
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages/no-such-message/reactions", id);
    o.body = "{\"rating\":1}";
    run(&rp, "POST", path, &o);
    CHECK_INT(rp.status, 404);
    reply_free(&rp);

    /* the history shows the reaction */
    snprintf(path, sizeof path, "/api/chat/sessions/%s/messages", id);
    struct opts g = { .auth = auth };
    run(&rp, "GET", path, &g);
    re = json_object_get(json_array_get(json_object_get(rp.json, "messages"), 1), "reactions");
    CHECK_INT(json_integer_value(json_object_get(re, "rating")), 4);
    reply_free(&rp);
    set_secret(NULL);
}

TEST(open_mode_user_is_empty)
{
    set_secret(NULL);
    char id[64];
    REQUIRE(create_session(NULL, NULL, id) == 0);
    struct reply rp;
    char path[200];
    snprintf(path, sizeof path, "/api/chat/sessions/%s", id);
    run(&rp, "GET", path, NULL);
    CHECK_INT(rp.status, 200);
    CHECK_STR(jstr(rp.json, "user_id"), "");
    reply_free(&rp);
}

int main(void)
{
    char err[512], path[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    snprintf(path, sizeof path, "%s/http.db", th_tmpdir());
    test_db = db_open(path, err, sizeof err);
    if (!test_db) {
        fprintf(stderr, "db_open: %s\n", err);
        return 2;
    }
    if (sample_catalog_import(test_db) < 0)      /* the demo brands (GET /brands/active) */
        return 2;
    snprintf(path, sizeof path, "%s/http.db-bell", th_tmpdir());
    ctx.cfg = &cfg;
    ctx.db = test_db;
    ctx.bell = bell_open(path, err, sizeof err);
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);

    RUN(unknown_path_is_404_with_method_and_path);
    RUN(wrong_method_is_405_with_allow);
    RUN(options_preflight_from_the_table);
    RUN(cors_headers_and_origin_allow_list);
    RUN(body_over_the_cap_is_413);
    RUN(json_routes_want_json);
    RUN(jwt_is_checked_on_auth_routes);
    RUN(captures_are_decoded_and_checked);
    RUN(head_and_stream_headers);
    RUN(no_database_is_503_but_health_answers);
    RUN(routes_reach_ticket_and_poll_handlers);
    RUN(cgi_paths);
    RUN(query_parameters);
    RUN(query_integers);
    RUN(health_reports_database_and_upstream_without_credentials);
    RUN(brands_active_lists_the_catalog);
    RUN(create_session_shapes);
    RUN(list_sessions_paginates_and_filters);
    RUN(session_messages_oldest_first);
    RUN(another_users_session_is_404_everywhere);
    RUN(delete_closes_or_purges);
    RUN(export_json_and_markdown);
    RUN(reactions_validate_and_persist);
    RUN(open_mode_user_is_empty);
    RUN(metrics_combine_database_and_bridge);

    bell_close(ctx.bell);
    db_close(test_db);
    config_cleanup(&cfg);
    return th_done();
}
