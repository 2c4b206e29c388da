/* test_catalog.c — the catalog (core/catalog.c) on each backend: brands
 * (get, put as insert or replace, the active list with default welcomes,
 * the demo brands of share/sample-catalog.json, imported by each run as
 * `make run` does: sample_catalog.h), products (put, refused input, an
 * unknown brand), suggestions (which products match, best first, plurals
 * and prefixes, confidence, other brands and unavailable products left
 * out, hostile syntax only words), and 8 connections putting one brand and
 * one product at the same moment (every put succeeds, one row each).
 *
 * The cases run on SQLite; when PARLEY_TEST_PG holds a PostgreSQL URI
 * (tests/integration/t0750-pg-kb.sh) they
 * run again on it, in a schema of their own (catt_<pid>_<ms>, through the
 * URI's options=-csearch_path; dropped at the end). test_proto_brand
 * covers the seed 002 adapter on SQLite. */
#include "th.h"
#include "catalog.h"
#include "sample_catalog.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <unistd.h>

static char dbpath[512];
static const char *target;
static parley_db *db;

static void put_brand(const char *id, const char *name, const char *welcome, int active)
{
    struct brand b = { .name = (char *)name, .welcome = (char *)welcome, .system_prompt = "",
                       .active = active };
    str_copy(b.id, sizeof b.id, id);
    CHECK_INT(catalog_brand_put(db, &b), 0);
}

static void put_product(const char *id, const char *brand, const char *name, const char *desc,
                        const char *cat, double price, const char *features, int available)
{
    struct product p = { id, brand, name, desc, cat, price, features, NULL, available };
    CHECK_INT(catalog_product_put(db, &p), 0);
}

static const char *product_id(json_t *arr, size_t i)
{
    return json_string_value(json_object_get(json_array_get(arr, i), "id"));
}

TEST(brands)
{
    put_brand("cb-shop", "CB Shop", "", 1);
    put_brand("cb-home", "CB Home", "Hi! Ask us about your home.", 1);
    put_brand("cb-old", "CB Old", "", 0);
    struct brand b;
    REQUIRE(catalog_brand_get(db, "cb-home", &b) == 0);
    CHECK_STR(b.name, "CB Home");
    CHECK_STR(b.welcome, "Hi! Ask us about your home.");
    CHECK_STR(b.system_prompt, "");
    CHECK_INT(b.active, 1);
    catalog_brand_free(&b);
    CHECK_INT(catalog_brand_get(db, "cb-missing", &b), 1);
    /* a put replaces name, texts and the active flag */
    put_brand("cb-old", "CB Older", "Gone.", 1);
    put_brand("cb-old", "CB Oldest", "", 0);
    REQUIRE(catalog_brand_get(db, "cb-old", &b) == 0);
    CHECK_STR(b.name, "CB Oldest");
    CHECK_STR(b.welcome, "");
    CHECK_INT(b.active, 0);
    catalog_brand_free(&b);
    struct brand bad = { .name = "" };
    str_copy(bad.id, sizeof bad.id, "cb-bad");
    CHECK_INT(catalog_brand_put(db, &bad), -1);

    /* active ones by name (byte order: "CB Home" < "CB Shop" < "HomeStyle
     * Living" < "TechPro Solutions"), the default welcome filled in, the
     * demo brands of the sample catalogue there, inactive ones not */
    json_t *arr = catalog_brands_active(db);
    REQUIRE(json_is_array(arr));
    char *s = json_dumps(arr, JSON_COMPACT);
    CHECK_STR(s, "[{\"brand_id\":\"cb-home\",\"brand_name\":\"CB Home\","
                 "\"welcome_message\":\"Hi! Ask us about your home.\"},"
                 "{\"brand_id\":\"cb-shop\",\"brand_name\":\"CB Shop\","
                 "\"welcome_message\":\"Welcome to CB Shop! How can I help you today?\"},"
                 "{\"brand_id\":\"homestyle\",\"brand_name\":\"HomeStyle Living\","
                 "\"welcome_message\":\"Hi! Looking for something for your home? Ask away.\"},"
                 "{\"brand_id\":\"techpro\",\"brand_name\":\"TechPro Solutions\","
                 "\"welcome_message\":\"Welcome to TechPro Solutions! How can I help you today?\"}]");
    free(s);
    json_decref(arr);
}

TEST(products_and_suggestions)
{
    put_product("cb-laptop-1", "cb-shop", "Dell XPS 13 Plus",
                "Ultra-portable business laptop with a borderless display.", "Laptop", 19999000.0,
                "[\"Intel Core i7\", \"16GB RAM\"]", 1);
    put_product("cb-laptop-2", "cb-shop", "Gaming Beast 17", "Gaming laptop with a big screen.",
                "Laptop", 25000000.5, "[\"RTX 4070\"]", 1);
    put_product("cb-laptop-3", "cb-shop", "Old Business Laptop",
                "A business laptop we no longer sell.", "Laptop", 5000000, NULL, 0);
    put_product("cb-phone-1", "cb-shop", "Pixel Phone", "Android phone with a great camera.",
                "Phone", 7000000, "[\"5G\"]", 1);
    put_product("cb-sofa-1", "cb-home", "Comfy Sofa", "A sofa for business people.",
                "Furniture", 3000000, NULL, 1);
    /* refused: bad JSON, an unknown brand; nothing stored */
    struct product p = { "cb-bad", "cb-shop", "Bad", NULL, NULL, 1, "{}", NULL, 1 };
    CHECK_INT(catalog_product_put(db, &p), -1);
    p.features = NULL;
    p.specifications = "[]";
    CHECK_INT(catalog_product_put(db, &p), -1);
    p.specifications = NULL;
    p.brand_id = "cb-nobody";
    CHECK_INT(catalog_product_put(db, &p), -1);

    json_t *pr;
    double conf;
    /* laptop and business of three terms (laptop, business, work) */
    REQUIRE(catalog_suggest(db, "cb-shop", "I need a laptop for business work", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 2);          /* the unavailable laptop is left out */
    CHECK_STR(product_id(pr, 0), "cb-laptop-1");
    CHECK_STR(product_id(pr, 1), "cb-laptop-2");
    CHECK(conf > 0.669 && conf < 0.671);
    char *s = json_dumps(json_array_get(pr, 1), JSON_COMPACT);
    CHECK_STR(s, "{\"id\":\"cb-laptop-2\",\"name\":\"Gaming Beast 17\","
                 "\"description\":\"Gaming laptop with a big screen.\",\"category\":\"Laptop\","
                 "\"price\":25000000.5,\"features\":[\"RTX 4070\"],\"specifications\":{},"
                 "\"availability\":true}");
    free(s);
    json_decref(pr);
    /* the name weighs most: "gaming" in a name and a text beats nothing */
    REQUIRE(catalog_suggest(db, "cb-shop", "gaming", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 1);
    CHECK_STR(product_id(pr, 0), "cb-laptop-2");
    json_decref(pr);
    /* plurals and prefixes: "LAPTOPS" is laptop*, "cam" too short for a
     * prefix, "camer" finds camera */
    REQUIRE(catalog_suggest(db, "cb-shop", "LAPTOPS", 1, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 1);
    CHECK(conf > 0.999 && conf <= 1.0);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "cb-shop", "cam", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "cb-shop", "camer", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 1);
    CHECK_STR(product_id(pr, 0), "cb-phone-1");
    json_decref(pr);
    /* nothing matches: empty, no confidence */
    REQUIRE(catalog_suggest(db, "cb-shop", "a sofa please", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    CHECK(conf < 0);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "cb-shop", "?! ... \xf0\x9f\x91\x8d \xe2\x80\x94 a", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    CHECK(conf < 0);
    json_decref(pr);
    /* other brands' products never come back */
    REQUIRE(catalog_suggest(db, "cb-shop", "business laptop sofa", 10, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 2);
    size_t i;
    json_t *v;
    json_array_foreach(pr, i, v)
        CHECK(!strncmp(json_string_value(json_object_get(v, "id")), "cb-laptop-", 10));
    json_decref(pr);
    /* search syntax of either backend in the text is only words */
    static const char *hostile[] = {
        "laptop\" OR * NEAR( -x AND ^\"", "\"", "NOT AND OR NEAR", "name:laptop", "laptop*",
        "(phone) + {camera}", "laptop'; DROP TABLE products; --", "laptop & !phone | (x",
        "laptop:* <-> phone:A", "'''", "\\\\x", "lap\xe1\x9a\x80top", "\xcc\x81\xcc\x81 phone",
    };
    for (size_t k = 0; k < sizeof hostile / sizeof hostile[0]; k++) {
        pr = NULL;
        CHECK_INT(catalog_suggest(db, "cb-shop", hostile[k], 3, &pr, &conf), 0);
        CHECK(json_is_array(pr));
        json_decref(pr);
    }
    REQUIRE(catalog_suggest(db, "cb-shop", "(phone) + {camera}", 3, &pr, &conf) == 0);
    CHECK_STR(product_id(pr, 0), "cb-phone-1");
    CHECK(conf > 0.999);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "cb-shop", "laptop & !phone | (x", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 3);          /* laptop OR phone: the two laptops, the phone */
    json_decref(pr);
    /* a product moved to another brand by a put */
    put_product("cb-sofa-1", "cb-shop", "Comfy Sofa", "A sofa for business people.",
                "Furniture", 3000000, NULL, 1);
    REQUIRE(catalog_suggest(db, "cb-shop", "sofa", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 1);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "cb-home", "sofa", 3, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 0);
    json_decref(pr);
}

/* The demo products of the migrations are searchable on both. */
TEST(demo_suggestions)
{
    json_t *pr;
    double conf;
    REQUIRE(catalog_suggest(db, "techpro", "gaming laptop", 3, &pr, &conf) == 0);
    REQUIRE(json_array_size(pr) >= 1);
    CHECK_STR(product_id(pr, 0), "laptop-003");
    CHECK(conf > 0.999);
    json_decref(pr);
    REQUIRE(catalog_suggest(db, "techpro", "phone with a good camera", 5, &pr, &conf) == 0);
    CHECK_INT(json_array_size(pr), 2);          /* the Pixel 7a is not available */
    json_decref(pr);
}

/* 8 connections put one brand and one product id at the same moment, 4
 * rounds: every put succeeds (no unique violation on PostgreSQL: INSERT
 * ... ON CONFLICT DO UPDATE), one row each, holding one putter's values. */
#define PUTTERS 8
struct putter { int no, round, rc; pthread_barrier_t *start; };

static void *putter_main(void *p)
{
    struct putter *a = p;
    char err[512], name[64], pid[32];
    parley_db *mine = db_open(target, err, sizeof err);
    snprintf(name, sizeof name, "Racer %d of round %d", a->no, a->round);
    snprintf(pid, sizeof pid, "cb-race-%d", a->round);
    struct brand b = { .name = name, .welcome = "", .system_prompt = "", .active = 1 };
    snprintf(b.id, sizeof b.id, "cb-race-%d", a->round);
    struct product pr = { pid, b.id, name, "racing product", "Race", a->no, NULL, NULL, 1 };
    pthread_barrier_wait(a->start);
    a->rc = mine ? catalog_brand_put(mine, &b) : -1;
    if (a->rc == 0)
        a->rc = catalog_product_put(mine, &pr);
    db_close(mine);
    return NULL;
}

TEST(concurrent_puts_one_row)
{
    for (int round = 0; round < 4; round++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, PUTTERS);
        struct putter a[PUTTERS];
        pthread_t th[PUTTERS];
        for (int i = 0; i < PUTTERS; i++) {
            a[i] = (struct putter){ .no = i, .round = round, .rc = -9, .start = &start };
            REQUIRE(pthread_create(&th[i], NULL, putter_main, &a[i]) == 0);
        }
        for (int i = 0; i < PUTTERS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        for (int i = 0; i < PUTTERS; i++)
            CHECK_INT(a[i].rc, 0);
        char id[32];
        snprintf(id, sizeof id, "cb-race-%d", round);
        struct brand b;
        REQUIRE(catalog_brand_get(db, id, &b) == 0);
        CHECK(!strncmp(b.name, "Racer ", 6));
        catalog_brand_free(&b);
        json_t *pr;
        double conf;
        REQUIRE(catalog_suggest(db, id, "racing", 10, &pr, &conf) == 0);
        CHECK_INT(json_array_size(pr), 1);      /* one product row */
        json_decref(pr);
    }
}

static void run_cases(void)
{
    char err[512];
    db = db_open(target, err, sizeof err);
    if (!db) {
        printf("not ok %d - open: %s\n", ++th_cases, err);
        th_failed_cases++;
        return;
    }
    if (sample_catalog_import(db) < 0) {
        printf("not ok %d - the sample catalogue (share/sample-catalog.json) imports\n", ++th_cases);
        th_failed_cases++;
    }
    RUN(brands);
    RUN(products_and_suggestions);
    RUN(demo_suggestions);
    RUN(concurrent_puts_one_row);
    db_close(db);
    db = NULL;
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/catalog.db", th_tmpdir());
    target = dbpath;
    printf("# backend: SQLite\n");
    run_cases();
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        static char uri[1024];
        char err[512], schema[128], sql[256];
        snprintf(schema, sizeof schema, "catt_%ld_%lld", (long)getpid(), (long long)now_ms());
        parley_db *d = db_open(pg, err, sizeof err);
        snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);     /* our own name */
        if (!d || db_exec(d, sql) < 0) {
            printf("not ok %d - PostgreSQL schema for this run: %s\n", ++th_cases,
                   d ? db_errmsg(d) : err);
            th_failed_cases++;
        } else {
            snprintf(uri, sizeof uri, "%s%soptions=-csearch_path%%3D%s", pg,
                     strchr(pg, '?') ? "&" : "?", schema);
            target = uri;
            printf("# backend: PostgreSQL (PARLEY_TEST_PG, schema %s)\n", schema);
            run_cases();
            snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
            if (!getenv("PARLEY_TEST_PG_KEEP") && db_exec(d, sql) < 0)
                printf("# could not drop schema %s\n", schema);
        }
        db_close(d);
    }
    return th_done();
}
