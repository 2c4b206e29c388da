/* test_proto_brand.c — the seed 002 brand adapter (core/proto_brand.c) and
 * the catalog (core/catalog.c), driven like a transport drives them against
 * the simulated LLM: brands and FTS5 suggestions (ranking, confidence,
 * hostile query text), welcome / unknown / inactive brands, every frame's
 * exact JSON, conversations continued or created, validation of each
 * field, ping, rate limit, voice = one sentence, two connections on one
 * conversation, and a long-poll session moving process mid-stream. */
#include "th.h"
#include "protohelp.h"
#include "sample_catalog.h"
#include "fake.h"
#include "bell.h"
#include "catalog.h"
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

static json_t *fake_last_body(void)
{
    char *resp = NULL;
    fake_http("GET", "/_fake/stats", NULL, &resp);
    json_t *o = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    json_t *b = json_incref(json_object_get(o, "last_body"));
    json_decref(o);
    return b;
}

/* Sends {"type":"chat","data":{"message":..., "conversation_id":..., "voice":...}}. */
static int send_chat(struct parley_ctx *ctx, struct proto_conn *c, const char *message,
                     const char *conv, int voice, struct proto_frames *f, struct proto_job **job)
{
    json_t *o = json_pack("{s:s, s:{s:s, s:s?, s:b}}", "type", "chat", "data", "message", message,
                          "conversation_id", conv, "voice", voice);
    char *s = dump(o);
    int rc = s ? send_text(ctx, c, s, f, job) : -1;
    free(s);
    return rc;
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

static int count_convs(parley_db *db, const char *owner)
{
    struct conversation *v;
    int n;
    int64_t total = -1;
    if (store_conv_list(db, owner, "brand", 0, 0, &v, &n, &total) < 0)
        return -1;
    store_convs_free(v, n);
    return (int)total;
}

/* Checks an answer's frames from index first: chunks (exact JSON, all with
 * one conversation id, copied to cid) reassembling want, then complete
 * with the products/confidence given (steals both). Returns the index
 * after complete. */
static int check_answer(const struct proto_frames *f, int first, const char *want,
                        json_t *products, json_t *confidence, char cid[64])
{
    json_t *o = frame(f, first);
    const char *id = json_string_value(json_object_get(json_object_get(o, "data"), "conversation_id"));
    str_copy(cid, 64, id ? id : "");
    json_decref(o);
    CHECK(strlen(cid) == 36);
    char text[16384] = "";
    size_t len = 0;
    int i = first;
    for (; i < f->n; i++) {
        o = frame(f, i);
        if (strcmp(ftype(o), "chunk") != 0) {
            json_decref(o);
            break;
        }
        const char *piece = json_string_value(json_object_get(json_object_get(o, "data"), "content"));
        check_frame(f, i, json_pack("{s:s, s:{s:s, s:b, s:s, s:n, s:n}}", "type", "chunk", "data",
                                    "content", piece ? piece : "", "is_final", 0,
                                    "conversation_id", cid, "suggested_products",
                                    "confidence_score"));
        if (piece && len + strlen(piece) < sizeof text) {
            memcpy(text + len, piece, strlen(piece) + 1);
            len += strlen(piece);
        }
        json_decref(o);
    }
    CHECK(i > first);
    CHECK_STR(text, want);
    check_frame(f, i, json_pack("{s:s, s:{s:s, s:b, s:s, s:o, s:o}}", "type", "complete", "data",
                                "content", "", "is_final", 1, "conversation_id", cid,
                                "suggested_products", products, "confidence_score", confidence));
    return i + 1;
}

static void put_brand(parley_db *db, const char *id, const char *name, const char *welcome,
                      const char *prompt, int active)
{
    struct brand b;
    memset(&b, 0, sizeof b);
    str_copy(b.id, sizeof b.id, id);
    b.name = (char *)name;
    b.welcome = (char *)welcome;
    b.system_prompt = (char *)prompt;
    b.active = active;
    CHECK_INT(catalog_brand_put(db, &b), 0);
}

static void put_product(parley_db *db, const char *id, const char *brand, const char *name,
                        const char *desc, const char *cat, double price, const char *features,
                        const char *specs, int available)
{
    struct product p = { id, brand, name, desc, cat, price, features, specs, available };
    CHECK_INT(catalog_product_put(db, &p), 0);
}

/* Brands and products every test uses (idempotent). */
static void fixtures(parley_db *db)
{
    put_brand(db, "tb-shop", "TB Shop", "", "", 1);
    put_brand(db, "tb-home", "TB Home", "Hi! Ask us about your home.", "You sell furniture.", 1);
    put_brand(db, "tb-old", "TB Old", "", "", 0);
    put_product(db, "tb-laptop-1", "tb-shop", "Dell XPS 13 Plus",
                "Ultra-portable business laptop with a borderless display.", "Laptop",
                19999000.0, "[\"Intel Core i7\", \"16GB RAM\"]",
                "{\"processor\": \"Intel Core i7-1255U\", \"storage\": \"512GB SSD\"}", 1);
    put_product(db, "tb-laptop-2", "tb-shop", "Gaming Beast 17",
                "Gaming laptop with a big screen.", "Laptop", 25000000.5, "[\"RTX 4070\"]", NULL, 1);
    put_product(db, "tb-laptop-3", "tb-shop", "Old Business Laptop",
                "A business laptop we no longer sell.", "Laptop", 5000000, NULL, NULL, 0);
    put_product(db, "tb-phone-1", "tb-shop", "Pixel Phone",
                "Android phone with a great camera.", "Phone", 7000000, "[\"5G\"]", NULL, 1);
    put_product(db, "tb-sofa-1", "tb-home", "Comfy Sofa", "A sofa for business people.",
                "Furniture", 3000000, NULL, NULL, 1);
}

static const char *product_id(json_t *arr, size_t i)
{
    return json_string_value(json_object_get(json_array_get(arr, i), "id"));
}

/* ---- catalog ---- */

TEST(catalog_brands)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct brand b;
    REQUIRE(catalog_brand_get(ctx.db, "tb-home", &b) == 0);
    CHECK_STR(b.name, "TB Home");
    CHECK_STR(b.welcome, "Hi! Ask us about your home.");
    CHECK_STR(b.system_prompt, "You sell furniture.");
    CHECK_INT(b.active, 1);
    char *w = catalog_welcome(&b);
    CHECK_STR(w, "Hi! Ask us about your home.");
    free(w);
    catalog_brand_free(&b);
    CHECK_INT(catalog_brand_get(ctx.db, "tb-missing", &b), 1);
    REQUIRE(catalog_brand_get(ctx.db, "tb-old", &b) == 0);
    CHECK_INT(b.active, 0);
    catalog_brand_free(&b);
    /* bad products are refused */
    struct product p = { "tb-bad", "tb-shop", "Bad", NULL, NULL, 1, "{}", NULL, 1 };
    CHECK_INT(catalog_product_put(ctx.db, &p), -1);
    p.features = "[1, 2]";
    CHECK_INT(catalog_product_put(ctx.db, &p), -1);
    p.features = NULL;
    p.specifications = "[]";
    CHECK_INT(catalog_product_put(ctx.db, &p), -1);
    p.specifications = NULL;
    p.brand_id = "tb-nobody";
    CHECK_INT(catalog_product_put(ctx.db, &p), -1);

    /* GET /brands/active: active ones only, default welcome filled in;
     * the demo brands of sql/002 are there too */
    json_t *arr = catalog_brands_active(ctx.db);
    REQUIRE(json_is_array(arr));
    int shop = 0, home = 0, old = 0, techpro = 0, retired = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *id = json_string_value(json_object_get(v, "brand_id"));
        char *s = json_dumps(v, JSON_COMPACT);
        if (!strcmp(id, "tb-shop")) {
            shop++;
            CHECK_STR(s, "{\"brand_id\":\"tb-shop\",\"brand_name\":\"TB Shop\","
                         "\"welcome_message\":\"Welcome to TB Shop! How can I help you today?\"}");
        } else if (!strcmp(id, "tb-home")) {
            home++;
            CHECK_STR(s, "{\"brand_id\":\"tb-home\",\"brand_name\":\"TB Home\","
                         "\"welcome_message\":\"Hi! Ask us about your home.\"}");
        }
        old += !strcmp(id, "tb-old");
        techpro += !strcmp(id, "techpro");
        retired += !strcmp(id, "retired");
        free(s);
    }
    CHECK_INT(shop, 1);
    CHECK_INT(home, 1);
    CHECK_INT(old, 0);
    CHECK_INT(techpro, 1);
    CHECK_INT(retired, 0);
    json_decref(arr);
    close_ctx(&ctx);
}

TEST(catalog_suggestions)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    json_t *pr;
    double conf;
    /* "laptop" and "business" of three terms (laptop, business, work) */
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "I need a laptop for business work", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 2);         /* the unavailable laptop is left out */
    CHECK_STR(product_id(pr, 0), "tb-laptop-1");
    CHECK_STR(product_id(pr, 1), "tb-laptop-2");
    CHECK(conf > 0.669 && conf < 0.671);
    char *s = json_dumps(json_array_get(pr, 0), JSON_COMPACT);
    CHECK_STR(s, "{\"id\":\"tb-laptop-1\",\"name\":\"Dell XPS 13 Plus\","
                 "\"description\":\"Ultra-portable business laptop with a borderless display.\","
                 "\"category\":\"Laptop\",\"price\":19999000.0,"
                 "\"features\":[\"Intel Core i7\",\"16GB RAM\"],"
                 "\"specifications\":{\"processor\":\"Intel Core i7-1255U\",\"storage\":\"512GB SSD\"},"
                 "\"availability\":true}");
    free(s);
    s = json_dumps(json_array_get(pr, 1), JSON_COMPACT);
    CHECK(s && strstr(s, "\"features\":[\"RTX 4070\"],\"specifications\":{},\"availability\":true}"));
    free(s);
    json_decref(pr);
    /* plurals and case: every term matched */
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "LAPTOPS", 1, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 1);
    CHECK(conf > 0.999 && conf <= 1.0);
    json_decref(pr);
    /* nothing matches: empty, no confidence */
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "a sofa please", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    CHECK(conf < 0);
    json_decref(pr);
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "?! ... 👍🏽 — a", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    CHECK(conf < 0);
    json_decref(pr);
    /* other brands' products never come back (tb-home's sofa says business;
     * the demo brand techpro sells laptops) */
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "business laptop sofa", 10, &pr, &conf) == 0);
    size_t i;
    json_t *v;
    json_array_foreach(pr, i, v)
        CHECK(!strncmp(json_string_value(json_object_get(v, "id")), "tb-laptop-", 10));
    json_decref(pr);
    /* FTS5 syntax in the text is only words */
    static const char *hostile[] = {
        "laptop\" OR * NEAR( -x AND ^\"", "\"", "NOT AND OR NEAR", "name:laptop",
        "laptop*", "(phone) + {camera}", "laptop'; DROP TABLE products; --",
    };
    for (size_t k = 0; k < sizeof hostile / sizeof hostile[0]; k++) {
        pr = NULL;
        CHECK_INT(catalog_suggest(ctx.db, "tb-shop", hostile[k], 3, &pr, &conf), 0);
        CHECK(json_is_array(pr));
        json_decref(pr);
    }
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "laptop\" OR * NEAR(", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 2);
    CHECK(product_id(pr, 0) && !strncmp(product_id(pr, 0), "tb-laptop-", 10));
    json_decref(pr);
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", "(phone) + {camera}", 3, &pr, &conf) == 0);
    CHECK_STR(product_id(pr, 0), "tb-phone-1");
    CHECK(conf > 0.999);
    json_decref(pr);
    close_ctx(&ctx);
}

/* ---- the adapter ---- */

TEST(unknown_and_inactive_brands)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    static const struct { const char *path, *frame; } cases[] = {
        { "/ws/chat/nope", "{\"type\":\"error\",\"data\":{\"message\":\"Brand 'nope' not found or inactive\",\"code\":\"not_found\"}}" },
        { "/ws/chat/tb-old", "{\"type\":\"error\",\"data\":{\"message\":\"Brand 'tb-old' not found or inactive\",\"code\":\"not_found\"}}" },
        { "/ws/chat/retired", "{\"type\":\"error\",\"data\":{\"message\":\"Brand 'retired' not found or inactive\",\"code\":\"not_found\"}}" },
        { "/ws/chat/%FF%FE", "{\"type\":\"error\",\"data\":{\"message\":\"Brand not found or inactive\",\"code\":\"not_found\"}}" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_conn c;
        struct proto_frames f;
        frames_init(&f);
        REQUIRE(proto_open(&ctx, &c, cases[i].path, "", "ip:127.0.0.1", &f) == 0);
        CHECK_INT(c.kind, PROTO_BRAND);
        CHECK_INT(f.n, 1);
        if (f.n == 1)
            CHECK_STR(f.v[0], cases[i].frame);
        CHECK_INT(c.close, 1);
        CHECK_INT(c.close_code, 1008);
        proto_conn_cleanup(&c);
        frames_free(&f);
    }
    /* a brand switched off after the welcome */
    put_brand(ctx.db, "tb-flip", "TB Flip", "", "", 1);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-flip", "flip-user", "user:flip", &f) == 0);
    check_frame(&f, 0, json_pack("{s:s, s:{s:s, s:s, s:s}}", "type", "welcome", "data",
                                 "message", "Welcome to TB Flip! How can I help you today?",
                                 "brand_id", "tb-flip", "brand_name", "TB Flip"));
    frames_free(&f);
    put_brand(ctx.db, "tb-flip", "TB Flip", "", "", 0);
    struct proto_job *job = NULL;
    CHECK_INT(send_chat(&ctx, &c, "hello", NULL, 0, &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"data\":{\"message\":\"Brand 'tb-flip' not found or inactive\",\"code\":\"not_found\"}}");
    CHECK_INT(c.close, 1);
    CHECK_INT(c.close_code, 1008);
    CHECK_INT(count_convs(ctx.db, "flip-user"), 0);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(welcome_chat_complete)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-home", "", "ip:10.0.0.1", &f) == 0);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"welcome\",\"data\":{\"message\":\"Hi! Ask us about your home.\","
                          "\"brand_id\":\"tb-home\",\"brand_name\":\"TB Home\"}}");
    proto_conn_cleanup(&c);
    frames_free(&f);

    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "ivy", "user:ivy", &f) == 0);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"welcome\",\"data\":{\"message\":\"Welcome to TB Shop! How can I "
                          "help you today?\",\"brand_id\":\"tb-shop\",\"brand_name\":\"TB Shop\"}}");
    CHECK_INT(c.close, 0);
    frames_free(&f);
    const char *text = "I need a laptop for business work";
    char *want = fake_answer(text, 0);
    REQUIRE(want != NULL);
    json_t *products;
    double conf;
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", text, 3, &products, &conf) == 0);
    struct proto_job *job = NULL;
    /* the seed's own client sends conversation_id: null at first */
    REQUIRE(send_text(&ctx, &c, "{\"type\":\"chat\",\"data\":{\"message\":\"I need a laptop for "
                                "business work\",\"conversation_id\":null,\"voice\":false}}",
                      &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(f.n, 0);
    CHECK_INT(count_convs(ctx.db, "ivy"), 1);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char cid[64];
    CHECK_INT(check_answer(&f, 0, want, products, json_real(conf), cid), f.n);
    /* the complete frame as the front end reads it */
    json_t *last = frame(&f, f.n - 1);
    json_t *d = json_object_get(last, "data");
    CHECK_STR(json_string_value(json_object_get(d, "conversation_id")), cid);
    CHECK_INT(json_array_size(json_object_get(d, "suggested_products")), 2);
    CHECK(json_number_value(json_object_get(d, "confidence_score")) > 0.66);
    json_decref(last);
    /* the conversation and its messages */
    struct conversation conv;
    REQUIRE(store_conv_get(ctx.db, cid, "ivy", &conv) == 0);
    CHECK_STR(conv.kind, "brand");
    CHECK_STR(conv.brand_id, "tb-shop");
    store_conv_free(&conv);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, cid, 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(m[0].role, "user");
        CHECK_STR(m[0].content, text);
        CHECK_STR(m[1].role, "assistant");
        CHECK_STR(m[1].content, want);
    }
    store_msgs_free(m, n);
    /* the model got the brand's system prompt with the suggestions */
    json_t *body = fake_last_body();
    json_t *msgs = json_object_get(body, "messages");
    CHECK_INT(json_array_size(msgs), 2);        /* system, the question */
    const char *sys = json_string_value(json_object_get(json_array_get(msgs, 0), "content"));
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system");
    CHECK(sys && strstr(sys, "TB Shop"));
    CHECK(sys && strstr(sys, "Dell XPS 13 Plus (Laptop, price 19999000.00)"));
    CHECK(sys && !strstr(sys, "one sentence"));
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), text);
    json_decref(body);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(no_products_complete_is_empty_and_null)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "jack", "user:jack", &f) == 0);
    frames_free(&f);
    const char *text = "hello there [[fake tokens=4 token_ms=1]]";
    char *want = fake_answer(text, 0);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, text, NULL, 0, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    char cid[64];
    CHECK_INT(check_answer(&f, 0, want, json_array(), json_null(), cid), f.n);
    if (f.n > 0)
        CHECK(strstr(f.v[f.n - 1], "\"suggested_products\":[],\"confidence_score\":null}}") != NULL);
    free(want);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(conversation_continued_or_new)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "kate", "user:kate", &f) == 0);
    frames_free(&f);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, "first question [[fake tokens=3 token_ms=0]]", NULL, 0, &f, &job) == 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    json_t *o = frame(&f, f.n - 1);
    char cid[64];
    str_copy(cid, sizeof cid, json_string_value(json_object_get(json_object_get(o, "data"),
                                                                "conversation_id")));
    json_decref(o);
    frames_free(&f);
    /* continue it: the model sees the earlier turn */
    const char *second = "second question [[fake tokens=3 token_ms=0]]";
    REQUIRE(send_chat(&ctx, &c, second, cid, 0, &f, &job) == 0);
    CHECK_INT(run_job(&ctx, job), 0);
    json_t *body = fake_last_body();
    json_t *msgs = json_object_get(body, "messages");
    CHECK_INT(json_array_size(msgs), 4);        /* system, user, assistant, user */
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "content")),
              "first question [[fake tokens=3 token_ms=0]]");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 2), "role")), "assistant");
    CHECK_STR(json_string_value(json_object_get(json_array_get(msgs, 3), "content")), second);
    json_decref(body);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    o = frame(&f, 0);
    CHECK_STR(json_string_value(json_object_get(json_object_get(o, "data"), "conversation_id")), cid);
    json_decref(o);
    frames_free(&f);
    CHECK_INT(count_messages(ctx.db, cid), 4);
    CHECK_INT(count_convs(ctx.db, "kate"), 1);

    /* unknown id, another brand's conversation, another user's: a new one */
    struct conversation other;
    memset(&other, 0, sizeof other);
    str_copy(other.owner, sizeof other.owner, "kate");
    str_copy(other.kind, sizeof other.kind, "brand");
    other.brand_id = "tb-home";
    REQUIRE(store_conv_create(ctx.db, &other) == 0);
    const char *ids[] = { "no-such-conversation", other.id };
    for (int i = 0; i < 2; i++) {
        REQUIRE(send_chat(&ctx, &c, "again [[fake tokens=2 token_ms=0]]", ids[i], 0, &f, &job) == 0);
        CHECK_INT(run_job(&ctx, job), 0);
        CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
        o = frame(&f, 0);
        const char *got = json_string_value(json_object_get(json_object_get(o, "data"), "conversation_id"));
        CHECK(got && strcmp(got, cid) != 0 && strcmp(got, ids[i]) != 0);
        json_decref(o);
        frames_free(&f);
    }
    CHECK_INT(count_messages(ctx.db, other.id), 0);
    proto_conn_cleanup(&c);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "mallory", "user:mallory", &f) == 0);
    frames_free(&f);
    REQUIRE(send_chat(&ctx, &c, "let me in [[fake tokens=2 token_ms=0]]", cid, 0, &f, &job) == 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    o = frame(&f, 0);
    const char *got = json_string_value(json_object_get(json_object_get(o, "data"), "conversation_id"));
    CHECK(got && strcmp(got, cid) != 0);
    json_decref(o);
    CHECK_INT(count_messages(ctx.db, cid), 4);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(bad_frames_and_ping)
{
    static const struct { const char *in, *msg, *code; } cases[] = {
        { "nope", "Invalid JSON", "bad_input" },
        { "{\"type\":\"chat\",", "Invalid JSON", "bad_input" },
        { "[]", "Invalid message format: expected a JSON object", "bad_input" },
        { "{\"data\":{}}", "Missing field 'type'", "bad_input" },
        { "{\"type\":1,\"data\":{}}", "Field 'type' must be a string", "bad_input" },
        { "{\"type\":\"shout\",\"data\":{}}", "Unknown message type 'shout'", "bad_input" },
        { "{\"type\":\"chat\"}", "Missing field 'data'", "bad_input" },
        { "{\"type\":\"chat\",\"data\":\"hi\"}", "Field 'data' must be an object", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{}}", "Missing field 'data.message'", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":null}}", "Missing field 'data.message'", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":5}}", "Field 'data.message' must be a string", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\" \\n \"}}", "Field 'data.message' must not be empty", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\"hi\",\"voice\":\"yes\"}}", "Field 'data.voice' must be a boolean", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\"hi\",\"voice\":1}}", "Field 'data.voice' must be a boolean", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\"hi\",\"conversation_id\":7}}", "Field 'data.conversation_id' must be a string", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\"hi\",\"user_id\":[]}}", "Field 'data.user_id' must be a string", "bad_input" },
        { "{\"type\":\"chat\",\"data\":{\"message\":\"0123456789x\"}}", "Message too long (max 10 characters)", "too_long" },
    };
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    int saved = cfg.max_message_length;
    cfg.max_message_length = 10;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "liam", "user:liam", &f) == 0);
    frames_free(&f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_job *job = NULL;
        CHECK_INT(send_text(&ctx, &c, cases[i].in, &f, &job), 0);
        CHECK(job == NULL);
        CHECK_INT(f.n, 1);
        check_frame(&f, 0, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "data", "message",
                                     cases[i].msg, "code", cases[i].code));
        CHECK_INT(c.close, 0);
        frames_free(&f);
    }
    CHECK_INT(count_convs(ctx.db, "liam"), 0);
    /* ping -> pong with the seed's naive timestamp */
    struct proto_job *job = NULL;
    CHECK_INT(send_text(&ctx, &c, "{\"type\":\"ping\",\"data\":{}}", &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    json_t *o = frame(&f, 0);
    const char *ts = json_string_value(json_object_get(json_object_get(o, "data"), "timestamp"));
    CHECK(ts && strlen(ts) == 19 && ts[4] == '-' && ts[10] == 'T' && ts[16] == ':');
    check_frame(&f, 0, json_pack("{s:s, s:{s:s}}", "type", "pong", "data", "timestamp", ts ? ts : ""));
    json_decref(o);
    frames_free(&f);
    /* null optional fields and exactly the limit (10 characters) are fine */
    CHECK_INT(send_text(&ctx, &c, "{\"type\":\"chat\",\"data\":{\"message\":\"ãããããããããã\","
                                  "\"conversation_id\":null,\"user_id\":null,\"voice\":null}}",
                        &f, &job), 0);
    REQUIRE(job != NULL);
    CHECK_INT(f.n, 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    o = frame(&f, f.n - 1);
    CHECK_STR(ftype(o), "complete");
    json_decref(o);
    CHECK_INT(count_convs(ctx.db, "liam"), 1);
    cfg.max_message_length = saved;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(rate_limit_and_busy)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    int saved = cfg.rate_limit_per_min;
    cfg.rate_limit_per_min = 2;
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    char peer[64];
    snprintf(peer, sizeof peer, "ip:rate-%ld", (long)getpid());
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "mia", peer, &f) == 0);
    frames_free(&f);
    struct proto_job *job = NULL, *job2 = NULL;
    REQUIRE(send_chat(&ctx, &c, "one [[fake tokens=2 token_ms=0]]", NULL, 0, &f, &job) == 0);
    REQUIRE(job != NULL);
    /* a second chat while the first is being answered */
    CHECK_INT(send_chat(&ctx, &c, "too soon", NULL, 0, &f, &job2), 0);
    CHECK(job2 == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"data\":{\"message\":"
                          "\"A response is still being generated; wait for it to finish\","
                          "\"code\":\"conflict\"}}");
    frames_free(&f);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    frames_free(&f);
    REQUIRE(send_chat(&ctx, &c, "two [[fake tokens=2 token_ms=0]]", NULL, 0, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    frames_free(&f);
    CHECK_INT(count_convs(ctx.db, "mia"), 2);
    CHECK_INT(send_chat(&ctx, &c, "three", NULL, 0, &f, &job), 0);
    CHECK(job == NULL);
    CHECK_INT(f.n, 1);
    if (f.n == 1)
        CHECK_STR(f.v[0], "{\"type\":\"error\",\"data\":{\"message\":\"Rate limit exceeded\",\"code\":\"rate_limited\"}}");
    CHECK_INT(c.close, 0);
    CHECK_INT(count_convs(ctx.db, "mia"), 2);
    cfg.rate_limit_per_min = saved;
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(voice_is_one_sentence)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "noah", "user:noah", &f) == 0);
    frames_free(&f);
    const char *text = "What is your cheapest laptop? [[fake answer=\"The Dell XPS 13 Plus is "
                       "our pick. It costs 19999000. Anything else?\" token_ms=1]]";
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, text, NULL, 1, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    json_t *body = fake_last_body();
    const char *sys = json_string_value(json_object_get(
        json_array_get(json_object_get(body, "messages"), 0), "content"));
    size_t sl = sys ? strlen(sys) : 0;
    CHECK(sl > 31 && !strcmp(sys + sl - 31, "Answer in exactly one sentence."));
    json_decref(body);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    json_t *products;
    double conf;
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", text, 3, &products, &conf) == 0);
    char cid[64];
    CHECK_INT(check_answer(&f, 0, "The Dell XPS 13 Plus is our pick.", products,
                           json_real(conf), cid), f.n);
    struct message *m;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(ctx.db, cid, 10, 0, &m, &n, &total) == 0);
    CHECK_INT(n, 2);
    if (n == 2) {
        CHECK_STR(m[0].metadata, "{\"voice\":true}");
        CHECK_STR(m[1].content, "The Dell XPS 13 Plus is our pick.");
    }
    store_msgs_free(m, n);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

TEST(two_connections_one_conversation)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn a, b;
    struct proto_frames fa, fb;
    frames_init(&fa);
    frames_init(&fb);
    REQUIRE(proto_open(&ctx, &a, "/ws/chat/tb-shop", "olga", "user:olga", &fa) == 0);
    REQUIRE(proto_open(&ctx, &b, "/ws/chat/tb-shop", "olga", "user:olga", &fb) == 0);
    frames_free(&fa);
    frames_free(&fb);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &a, "hello [[fake tokens=2 token_ms=0]]", NULL, 0, &fa, &job) == 0);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &a, &fa), 0);
    json_t *o = frame(&fa, 0);
    char cid[64];
    str_copy(cid, sizeof cid, json_string_value(json_object_get(json_object_get(o, "data"),
                                                                "conversation_id")));
    json_decref(o);
    frames_free(&fa);
    /* both ask at once in the same conversation: each gets its own answer
     * and its own suggestions */
    const char *qa = "business laptop please [[fake tokens=15 token_ms=5]]";
    const char *qb = "a phone with a camera [[fake tokens=12 token_ms=6]]";
    char *wa = fake_answer(qa, 0), *wb = fake_answer(qb, 0);
    struct proto_job *ja = NULL, *jb = NULL;
    REQUIRE(send_chat(&ctx, &a, qa, cid, 0, &fa, &ja) == 0);
    REQUIRE(send_chat(&ctx, &b, qb, cid, 0, &fb, &jb) == 0);
    REQUIRE(ja != NULL && jb != NULL);
    struct job_thread ta, tb;
    REQUIRE(job_start(&ta, ja) == 0);
    REQUIRE(job_start(&tb, jb) == 0);
    int64_t end = mono_ms() + 15000;
    while ((proto_following(&a) || proto_following(&b)) && mono_ms() < end) {
        int n = proto_pump(&ctx, &a, &fa) + proto_pump(&ctx, &b, &fb);
        if (n == 0)
            sleep_ms(3);
    }
    pthread_join(ta.th, NULL);
    pthread_join(tb.th, NULL);
    CHECK_INT(ta.rc, 0);
    CHECK_INT(tb.rc, 0);
    json_t *pa, *pb;
    double ca, cb;
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", qa, 3, &pa, &ca) == 0);
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", qb, 3, &pb, &cb) == 0);
    CHECK_STR(product_id(pa, 0), "tb-laptop-1");
    CHECK_STR(product_id(pb, 0), "tb-phone-1");
    char ida[64], idb[64];
    CHECK_INT(check_answer(&fa, 0, wa, pa, json_real(ca), ida), fa.n);
    CHECK_INT(check_answer(&fb, 0, wb, pb, json_real(cb), idb), fb.n);
    CHECK_STR(ida, cid);
    CHECK_STR(idb, cid);
    CHECK_INT(count_messages(ctx.db, cid), 6);
    free(wa);
    free(wb);
    proto_conn_cleanup(&a);
    proto_conn_cleanup(&b);
    frames_free(&fa);
    frames_free(&fb);
    close_ctx(&ctx);
}

TEST(save_load_mid_stream)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "pia", "user:pia", &f) == 0);
    frames_free(&f);
    const char *text = "phone with a great camera [[fake tokens=20 token_ms=10]]";
    char *want = fake_answer(text, 0);
    json_t *products;
    double conf;
    REQUIRE(catalog_suggest(ctx.db, "tb-shop", text, 3, &products, &conf) == 0);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, text, NULL, 0, &f, &job) == 0);
    REQUIRE(job != NULL);
    struct job_thread t;
    REQUIRE(job_start(&t, job) == 0);
    for (int tries = 0; tries < 500 && f.n < 2; tries++) {
        proto_pump(&ctx, &c, &f);
        if (f.n < 2)
            sleep_ms(5);
    }
    CHECK(f.n >= 2);
    char *saved = proto_conn_save(&c);
    REQUIRE(saved != NULL);
    proto_conn_cleanup(&c);
    close_ctx(&ctx);

    struct parley_ctx ctx2;
    REQUIRE(open_ctx(&ctx2) == 0);
    struct proto_conn c2;
    REQUIRE(proto_conn_load(&c2, saved) == 0);
    free(saved);
    CHECK_INT(c2.kind, PROTO_BRAND);
    CHECK_INT(pump_to_end(&ctx2, &c2, &f), 0);
    pthread_join(t.th, NULL);
    CHECK_INT(t.rc, 0);
    char cid[64];
    CHECK_STR(product_id(products, 0), "tb-phone-1");
    CHECK_INT(check_answer(&f, 0, want, products, json_real(conf), cid), f.n);
    CHECK_INT(count_messages(ctx2.db, cid), 2);
    free(want);
    proto_conn_cleanup(&c2);
    frames_free(&f);
    close_ctx(&ctx2);
}

TEST(upstream_error_frame)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    fixtures(ctx.db);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    REQUIRE(proto_open(&ctx, &c, "/ws/chat/tb-shop", "quinn", "user:quinn", &f) == 0);
    frames_free(&f);
    struct proto_job *job = NULL;
    REQUIRE(send_chat(&ctx, &c, "break [[fake tokens=6 status=503]]", NULL, 0, &f, &job) == 0);
    REQUIRE(job != NULL);
    CHECK_INT(run_job(&ctx, job), 0);
    CHECK_INT(pump_to_end(&ctx, &c, &f), 0);
    CHECK_INT(f.n, 1);
    json_t *o = frame(&f, 0);
    const char *msg = json_string_value(json_object_get(json_object_get(o, "data"), "message"));
    CHECK(msg && strstr(msg, "503"));
    /* an HTTP error before any token: the upstream was unavailable */
    check_frame(&f, 0, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "data", "message",
                                 msg ? msg : "", "code", "upstream_unavailable"));
    json_decref(o);
    proto_conn_cleanup(&c);
    frames_free(&f);
    close_ctx(&ctx);
}

int main(void)
{
    if (test_setup("brand") < 0)
        return 1;
    /* the demo brands (techpro, homestyle, retired): the sample catalogue */
    struct parley_ctx sc;
    if (open_ctx(&sc) < 0 || sample_catalog_import(sc.db) < 0) {
        printf("not ok 1 - the sample catalogue (share/sample-catalog.json) imports\n");
        return 1;
    }
    close_ctx(&sc);
    RUN(catalog_brands);
    RUN(catalog_suggestions);
    RUN(unknown_and_inactive_brands);
    RUN(welcome_chat_complete);
    RUN(no_products_complete_is_empty_and_null);
    RUN(conversation_continued_or_new);
    RUN(bad_frames_and_ping);
    RUN(rate_limit_and_busy);
    RUN(voice_is_one_sentence);
    RUN(two_connections_one_conversation);
    RUN(save_load_mid_stream);
    RUN(upstream_error_frame);
    config_cleanup(&cfg);
    return th_done();
}
