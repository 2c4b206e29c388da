/* test_tenant.c — tickets scoped to a tenant (PARLEY_TENANT_CLAIM,
 * docs/tenants.md; issue 13 item 4).
 *
 * With the setting, the same ticket id in two tenants is two tickets:
 *   - through the seed 000 adapter (what the bridge and long-poll drive),
 *     two tenants' users sending the same body get two generations (the
 *     simulated LLM's request log counts one request per tenant), two
 *     cache rows under the stored ids "<id>~<scope>" (none under "<id>"),
 *     and each tenant's second opener gets its own tenant's cached answer;
 *   - a connection without a tenant is refused: error frame code
 *     "forbidden", close 4403, also for a later message;
 *   - the scope survives proto_conn_save / load (long-poll), a malformed
 *     one is refused at load;
 *   - over REST (http_dispatch with a bearer token): GET shows each tenant
 *     its own answer under the client's id; a tenant without that ticket
 *     sees "none"; a token without the claim gets 403 on GET, DELETE,
 *     stream and stop; DELETE needs PARLEY_ADMIN_CLAIM and deletes only
 *     the caller's tenant's answer; a stop from another tenant (even an
 *     admin by role) finds no generation (404) while the generation runs;
 *   - without the setting: today's behaviour, one ticket for everybody
 *     (stored id = id, the second tenant's user gets the cached answer).
 */
#include "th.h"
#include "protohelp.h"
#include "memres.h"
#include "fake.h"
#include "auth.h"
#include "ident.h"
#include "proto_impl.h"
#include "store.h"
#include "util.h"

#include <jwt.h>
#include <unistd.h>

static const char SECRET[] = "tenant-test-secret-0123456789abcdef";
static char pfx[64];

/* A token for sub with the given extra claims (JSON object text). New. */
static char *token(const char *sub, const char *extra_json)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", sub) == 0 &&
        (!extra_json || jwt_add_grants_json(jwt, extra_json) == 0) &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

/* How many simulated-LLM requests had prompts starting with tag. */
static int fake_count(const char *tag)
{
    char *resp = NULL;
    fake_http("GET", "/_fake/requests", NULL, &resp);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    int n = 0;
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(o, "requests"), i, q) {
        const char *p = json_string_value(json_object_get(q, "prompt"));
        if (p && !strncmp(p, tag, strlen(tag)))
            n++;
    }
    json_decref(o);
    return n;
}

/* Opens a seed 000 connection on ticket for user of tenant (NULL: none),
 * as a transport does. */
static int open_ticket(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *f,
                       const char *ticket, const char *user, const char *tenant)
{
    char path[160];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", ticket);
    struct proto_client cl = { NULL, "127.0.0.1", NULL, NULL, tenant };
    return proto_open_client(ctx, c, path, user, "ip:127.0.0.1", &cl, f);
}

static int send_body(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *f,
                     const char *body, struct proto_job **job)
{
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    int rc = send_text(ctx, c, text, f, job);
    free(text);
    return rc;
}

/* Runs one opener to its end: open, send body, run the job if owned, pump
 * to the end. Returns the last frame's type ("done", "cached"...) in out. */
static int ask(struct parley_ctx *ctx, const char *ticket, const char *user, const char *tenant,
               const char *body, char *all, size_t alllen)
{
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    int rc = -1;
    if (open_ticket(ctx, &c, &f, ticket, user, tenant) < 0 || c.err != PERR_OK ||
        send_body(ctx, &c, &f, body, &job) < 0 || c.err != PERR_OK)
        goto out;
    if (job && proto_job_submit(ctx, job) < 0)
        goto out;
    if (proto_following(&c) && pump_to_end(ctx, &c, &f) < 0)
        goto out;
    all[0] = '\0';
    for (int i = 0; i < f.n; i++) {
        size_t n = strlen(all);
        snprintf(all + n, alllen - n, "%s\n", f.v[i]);
    }
    rc = 0;
out:
    frames_free(&f);
    proto_conn_cleanup(&c);
    return rc;
}

/* The stored id of ticket in tenant's scope. */
static const char *stored(char *out, const char *ticket, const char *tenant)
{
    char scope[IDENT_SCOPE_LEN + 1];
    ident_tenant_scope(tenant, scope);
    return ident_ticket_stored(out, IDENT_TICKET_STORED_MAX, ticket, scope);
}

/* The REST call: method path with a bearer token (NULL: none). Status;
 * *body the body (new). */
static int rest(struct parley_ctx *ctx, const char *method, const char *path, const char *tok,
                char **body)
{
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
    r.path = path;
    r.query = "";
    r.remote_addr = "127.0.0.1";
    char auth[4200];
    if (tok) {
        snprintf(auth, sizeof auth, "Bearer %s", tok);
        r.authorization = auth;
    }
    http_dispatch(&r);
    int status = 0;
    const char *all = m.buf ? m.buf : "";
    sscanf(all, "Status: %d", &status);
    const char *sep = strstr(all, "\r\n\r\n");
    if (body)
        *body = strdup(sep ? sep + 4 : "");
    free(m.buf);
    return status;
}

/* The generation loop keeps the bell of the first submit for the process:
 * every test uses this one. */
static parley_bell *gbell;

static int open_t(struct parley_ctx *ctx)
{
    if (open_ctx(ctx) < 0)
        return -1;
    bell_close(ctx->bell);
    ctx->bell = gbell;
    return 0;
}

static void close_t(struct parley_ctx *ctx)
{
    db_close(ctx->db);
}

static void set(const char *key, const char *value)
{
    char err[256];
    if (config_set(&cfg, key, value, err, sizeof err) < 0)
        printf("# config_set %s: %s\n", key, err);
}

TEST(scope_and_stored_ids)
{
    char a[IDENT_SCOPE_LEN + 1], b[IDENT_SCOPE_LEN + 1], none[IDENT_SCOPE_LEN + 1];
    ident_tenant_scope("acme", a);
    ident_tenant_scope("globex", b);
    ident_tenant_scope("", none);
    CHECK_INT(strlen(a), IDENT_SCOPE_LEN);
    CHECK(strcmp(a, b) != 0);
    CHECK_STR(none, "");
    CHECK(ident_scope_valid(a) && ident_scope_valid(""));
    CHECK(!ident_scope_valid("xyz") && !ident_scope_valid("0123456789ABCDEF"));
    char out[IDENT_TICKET_STORED_MAX], exp[IDENT_TICKET_STORED_MAX];
    snprintf(exp, sizeof exp, "T-1~%s", a);
    CHECK_STR(ident_ticket_stored(out, sizeof out, "T-1", a), exp);
    CHECK_STR(ident_ticket_stored(out, sizeof out, "T-1", ""), "T-1");
    /* the longest valid id fits, and its key is not cut */
    char longid[65];
    memset(longid, 'x', 64);
    longid[64] = '\0';
    REQUIRE(ident_ticket_stored(out, sizeof out, longid, a) != NULL);
    CHECK_INT(strlen(out), 81);
    struct answer ka, kb;
    char ha[65], hb[65], ob[IDENT_TICKET_STORED_MAX];
    ident_ticket_stored(ob, sizeof ob, longid, b);
    answer_key_ticket(&ka, out, "body", ha);
    answer_key_ticket(&kb, ob, "body", hb);
    CHECK(strcmp(ka.key, kb.key) != 0);
    CHECK(strstr(ka.key, out) != NULL);
}

TEST(two_tenants_two_tickets)
{
    set("PARLEY_TENANT_CLAIM", "org");
    struct parley_ctx ctx;
    REQUIRE(open_t(&ctx) == 0);
    char ticket[80], tag[96], body[160], all[16384];
    snprintf(ticket, sizeof ticket, "T-%s", pfx);
    snprintf(tag, sizeof tag, "tenant-two-%s", pfx);
    snprintf(body, sizeof body, "%s printer on fire", tag);
    REQUIRE(ask(&ctx, ticket, "alice", "acme", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"stream\"") && !strstr(all, "cached"));
    CHECK_INT(fake_count(tag), 1);
    /* the same id and body in another tenant: a generation of its own */
    REQUIRE(ask(&ctx, ticket, "bob", "globex", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"stream\"") && !strstr(all, "cached"));
    CHECK_INT(fake_count(tag), 2);
    /* each tenant's next opener: its own tenant's cached answer */
    REQUIRE(ask(&ctx, ticket, "carol", "acme", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"cached\"") != NULL);
    REQUIRE(ask(&ctx, ticket, "dave", "globex", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"cached\"") != NULL);
    CHECK_INT(fake_count(tag), 2);
    /* stored under the scoped ids only */
    char sa[IDENT_TICKET_STORED_MAX], sb[IDENT_TICKET_STORED_MAX];
    char *resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, stored(sa, ticket, "acme"), &resp), 1);
    free(resp);
    resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, stored(sb, ticket, "globex"), &resp), 1);
    free(resp);
    resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, ticket, &resp), 0);
    free(resp);
    char *tb = NULL;
    CHECK_INT(store_ticket_get(ctx.db, sa, &tb), 0);
    CHECK_STR(tb, body);
    free(tb);
    tb = NULL;
    CHECK_INT(store_ticket_get(ctx.db, ticket, &tb), 1);
    free(tb);
    char chan[120];
    snprintf(chan, sizeof chan, "ticket:%s", sa);
    CHECK(evlog_last_seq(ctx.db, chan) > 0);
    snprintf(chan, sizeof chan, "ticket:%s", ticket);
    CHECK_INT(evlog_last_seq(ctx.db, chan), 0);
    close_t(&ctx);
}

TEST(no_tenant_refused)
{
    set("PARLEY_TENANT_CLAIM", "org");
    struct parley_ctx ctx;
    REQUIRE(open_t(&ctx) == 0);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(open_ticket(&ctx, &c, &f, "T-none", "eve", NULL) == 0);
    CHECK_INT(c.err, PERR_FORBIDDEN);
    CHECK(c.close);
    CHECK_INT(c.close_code, 4403);
    REQUIRE(f.n == 1);
    json_t *e = frame(&f, 0);
    CHECK_STR(ftype(e), "error");
    CHECK_STR(json_string_value(json_object_get(e, "code")), "forbidden");
    json_decref(e);
    /* a message on it anyway (a long-poll POST): refused too, nothing run */
    struct proto_job *job = NULL;
    REQUIRE(send_body(&ctx, &c, &f, "tenant-none body", &job) == 0);
    CHECK(job == NULL);
    CHECK_INT(c.err, PERR_FORBIDDEN);
    frames_free(&f);
    proto_conn_cleanup(&c);
    close_t(&ctx);
}

TEST(scope_saved_and_loaded)
{
    set("PARLEY_TENANT_CLAIM", "org");
    struct parley_ctx ctx;
    REQUIRE(open_t(&ctx) == 0);
    struct proto_conn c, d;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(open_ticket(&ctx, &c, &f, "T-save", "alice", "acme") == 0);
    CHECK_INT(c.err, PERR_OK);
    char scope[IDENT_SCOPE_LEN + 1];
    ident_tenant_scope("acme", scope);
    CHECK_STR(c.tenant_scope, scope);
    char *saved = proto_conn_save(&c);
    REQUIRE(saved != NULL);
    REQUIRE(proto_conn_load(&d, saved) == 0);
    CHECK_STR(d.tenant_scope, scope);
    proto_conn_cleanup(&d);
    /* an older session (no tenant_scope): no tenant */
    json_t *o = json_loads(saved, 0, NULL);
    json_object_del(o, "tenant_scope");
    char *old = json_dumps(o, JSON_COMPACT);
    REQUIRE(proto_conn_load(&d, old) == 0);
    CHECK_STR(d.tenant_scope, "");
    proto_conn_cleanup(&d);
    /* a forged one is refused, never used as a path into another scope */
    json_object_set_new(o, "tenant_scope", json_string("../../etc"));
    char *bad = json_dumps(o, JSON_COMPACT);
    CHECK_INT(proto_conn_load(&d, bad), -1);
    proto_conn_cleanup(&d);
    json_decref(o);
    free(old);
    free(bad);
    free(saved);
    frames_free(&f);
    proto_conn_cleanup(&c);
    close_t(&ctx);
}

/* REST: GET, DELETE (admin claim), stream, stop, each per tenant. */
TEST(rest_per_tenant)
{
    set("PARLEY_JWT_SECRET", SECRET);
    set("PARLEY_TENANT_CLAIM", "org");
    set("PARLEY_ADMIN_CLAIM", "role=helpdesk-admin");
    struct parley_ctx ctx;
    REQUIRE(open_t(&ctx) == 0);
    char ticket[80], tag[96], body[200], all[16384], path[200];
    snprintf(ticket, sizeof ticket, "R-%s", pfx);
    snprintf(tag, sizeof tag, "tenant-rest-%s", pfx);
    snprintf(body, sizeof body, "%s screen is blue", tag);
    REQUIRE(ask(&ctx, ticket, "alice", "acme", body, all, sizeof all) == 0);
    char *ta = token("alice", "{\"org\":\"acme\"}");
    char *tb = token("bob", "{\"org\":\"globex\"}");
    char *tb_admin = token("bob-boss", "{\"org\":\"globex\",\"role\":\"helpdesk-admin\"}");
    char *ta_admin = token("alice-boss", "{\"org\":\"acme\",\"role\":\"helpdesk-admin\"}");
    char *tb_root = token("root", "{\"org\":\"globex\",\"role\":\"admin\"}");
    char *tnone = token("eve", NULL);
    char *tnum = token("eve", "{\"org\":7}");
    REQUIRE(ta && tb && tb_admin && ta_admin && tb_root && tnone && tnum);

    snprintf(path, sizeof path, "/api/tickets/%s/ai", ticket);
    char *out = NULL;
    CHECK_INT(rest(&ctx, "GET", path, ta, &out), 200);
    json_t *o = json_loads(out, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(o, "status")), "cached");
    CHECK_STR(json_string_value(json_object_get(o, "ticketId")), ticket);   /* the client's id */
    json_decref(o);
    free(out);
    CHECK_INT(rest(&ctx, "GET", path, tb, &out), 200);                     /* not globex's */
    o = json_loads(out, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(o, "status")), "none");
    json_decref(o);
    free(out);
    /* no tenant, a non-string tenant: 403 everywhere */
    char spath[200], stpath[200];
    snprintf(spath, sizeof spath, "/api/tickets/%s/ai/stream", ticket);
    snprintf(stpath, sizeof stpath, "/api/tickets/%s/ai/stop", ticket);
    const char *toks[] = { tnone, tnum };
    for (int i = 0; i < 2; i++) {
        CHECK_INT(rest(&ctx, "GET", path, toks[i], &out), 403);
        CHECK(strstr(out, "\"forbidden\"") && strstr(out, "org"));
        free(out);
        CHECK_INT(rest(&ctx, "GET", spath, toks[i], &out), 403);
        free(out);
        CHECK_INT(rest(&ctx, "POST", stpath, toks[i], &out), 403);
        free(out);
    }
    /* the stream of a cached answer: acme's */
    CHECK_INT(rest(&ctx, "GET", spath, ta, &out), 200);
    CHECK(strstr(out, "\"cached\"") != NULL);
    free(out);
    CHECK_INT(rest(&ctx, "GET", spath, tb, &out), 404);                    /* globex has none */
    free(out);
    /* DELETE: only with the admin claim, only the caller's tenant */
    CHECK_INT(rest(&ctx, "DELETE", path, ta, &out), 403);
    CHECK(strstr(out, "PARLEY_ADMIN_CLAIM") != NULL);
    free(out);
    CHECK_INT(rest(&ctx, "DELETE", path, tb_root, &out), 403);   /* role admin is not it */
    free(out);
    CHECK_INT(rest(&ctx, "DELETE", path, tb_admin, &out), 200);
    o = json_loads(out, 0, NULL);
    CHECK_INT(json_integer_value(json_object_get(o, "deleted")), 0);       /* globex had none */
    json_decref(o);
    free(out);
    CHECK_INT(rest(&ctx, "GET", path, ta, &out), 200);
    CHECK(strstr(out, "\"cached\"") != NULL);                              /* acme's is intact */
    free(out);
    CHECK_INT(rest(&ctx, "DELETE", path, tnone, &out), 403);
    free(out);
    CHECK_INT(rest(&ctx, "DELETE", path, ta_admin, &out), 200);
    o = json_loads(out, 0, NULL);
    CHECK_INT(json_integer_value(json_object_get(o, "deleted")), 1);
    json_decref(o);
    free(out);
    CHECK_INT(rest(&ctx, "GET", path, ta, &out), 200);
    CHECK(strstr(out, "\"none\"") != NULL);
    free(out);

    /* a running generation of acme: globex's stop (even by role admin)
     * finds none; acme's stops it */
    char slow[200];
    snprintf(slow, sizeof slow, "%s-slow [[fake tokens=400 token_ms=10]]", tag);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    REQUIRE(open_ticket(&ctx, &c, &f, ticket, "alice", "acme") == 0);
    REQUIRE(send_body(&ctx, &c, &f, slow, &job) == 0 && job);
    REQUIRE(proto_job_submit(&ctx, job) == 0);
    int64_t end = mono_ms() + 5000;
    while (mono_ms() < end && f.n == 0) {
        proto_pump(&ctx, &c, &f);
        sleep_ms(5);
    }
    CHECK(f.n > 0);
    CHECK_INT(rest(&ctx, "POST", stpath, tb, &out), 404);
    free(out);
    CHECK_INT(rest(&ctx, "POST", stpath, tb_root, &out), 404);
    free(out);
    CHECK_INT(rest(&ctx, "GET", path, tb, &out), 200);                     /* not running there */
    CHECK(strstr(out, "\"none\"") != NULL);
    free(out);
    CHECK_INT(rest(&ctx, "GET", path, ta, &out), 200);
    CHECK(strstr(out, "\"running\"") != NULL);
    free(out);
    CHECK_INT(rest(&ctx, "POST", stpath, ta, &out), 202);
    free(out);
    REQUIRE(pump_to_end(&ctx, &c, &f) == 0);
    CHECK_STR(f.v[f.n - 1], "{\"type\":\"done\",\"stopped\":true}");
    frames_free(&f);
    proto_conn_cleanup(&c);
    free(ta);
    free(tb);
    free(tb_admin);
    free(ta_admin);
    free(tb_root);
    free(tnone);
    free(tnum);
    close_t(&ctx);
    set("PARLEY_ADMIN_CLAIM", "");
    set("PARLEY_JWT_SECRET", "");
}

/* Without PARLEY_TENANT_CLAIM: one ticket for everybody, as before. */
TEST(tenant_unset_unchanged)
{
    set("PARLEY_TENANT_CLAIM", "");
    struct parley_ctx ctx;
    REQUIRE(open_t(&ctx) == 0);
    char ticket[80], tag[96], body[160], all[16384];
    snprintf(ticket, sizeof ticket, "U-%s", pfx);
    snprintf(tag, sizeof tag, "tenant-unset-%s", pfx);
    snprintf(body, sizeof body, "%s wifi down", tag);
    REQUIRE(ask(&ctx, ticket, "alice", "acme", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"stream\"") != NULL);
    REQUIRE(ask(&ctx, ticket, "bob", "globex", body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"cached\"") != NULL);                 /* the same ticket */
    REQUIRE(ask(&ctx, ticket, "carol", NULL, body, all, sizeof all) == 0);
    CHECK(strstr(all, "\"cached\"") != NULL);
    CHECK_INT(fake_count(tag), 1);
    char *resp = NULL;
    CHECK_INT(store_answer_ticket_exists(ctx.db, ticket, &resp), 1);
    free(resp);
    close_t(&ctx);
}

int main(void)
{
    if (test_setup("tenant") < 0)
        return 1;
    snprintf(pfx, sizeof pfx, "t%ld-%lld", (long)getpid(), (long long)now_ms());
    set("PARLEY_DB", dbpath);            /* the generation loop's own connection */
    char err[512];
    gbell = bell_open(bellpath, err, sizeof err);
    if (!gbell) {
        printf("not ok 1 - bell: %s\n", err);
        return 1;
    }
    RUN(scope_and_stored_ids);
    RUN(two_tenants_two_tickets);
    RUN(no_tenant_refused);
    RUN(scope_saved_and_loaded);
    RUN(rest_per_tenant);
    RUN(tenant_unset_unchanged);
    proto_jobs_drain(2000);
    bell_close(gbell);
    return th_done();
}
