/* test_cli_import.c — the catalogue import behind `parley brands import`
 * and `parley products import` (core/catalog_import.c) and the brand
 * disable flag (`parley brands disable/enable`), on each backend:
 *   - a products file replaces a brand's products in one go (old ones
 *     gone, suggestions find the new ones, other brands untouched);
 *   - bad records are refused, each problem naming its record (index and
 *     id) and field, and the previous catalogue stays exactly as it was:
 *     wrong types, missing fields, unknown fields, a negative price,
 *     duplicate ids, an id that is another brand's product, a document of
 *     the wrong shape; an unknown brand is its own answer;
 *   - a brands file creates and updates brands and replaces the products of
 *     those that list them; a bad brand id refuses the whole file;
 *   - a disabled brand leaves /brands/active and catalog_brand_get (seed
 *     002's lookup), a re-import does not enable it, enable does;
 *     catalog_brands_list shows it with its counts.
 * The cases run on SQLite; when PARLEY_TEST_PG holds a PostgreSQL URI
 * (tests/integration/t0850-cli.sh) they run again on it, in a schema of
 * their own (clit_<pid>_<ms>, dropped at the end). */
#include "th.h"
#include "catalog.h"
#include "db_sqlite.h"
#include "util.h"

#include <jansson.h>
#include <string.h>
#include <unistd.h>

static char dbpath[512];
static const char *target;
static parley_db *db;

static json_t *doc(const char *text)
{
    json_error_t e;
    json_t *d = json_loads(text, JSON_DECODE_ANY, &e);
    if (!d)
        printf("# bad test JSON: %s\n", e.text);
    return d;
}

/* Imports text as brand's products; the result code, res kept for checks. */
static int import_products(const char *brand, const char *text, struct catalog_import_result *res)
{
    json_t *d = doc(text);
    int rc = catalog_import_products(db, brand, d, res);
    json_decref(d);
    return rc;
}

static int import_brands(const char *text, struct catalog_import_result *res)
{
    json_t *d = doc(text);
    int rc = catalog_import_brands(db, d, res);
    json_decref(d);
    return rc;
}

/* The ids of brand's suggestions for query, comma-separated, into buf. */
static const char *suggest_ids(const char *brand, const char *query, char *buf, size_t len)
{
    json_t *pr = NULL;
    double conf;
    buf[0] = '\0';
    if (catalog_suggest(db, brand, query, 20, &pr, &conf) < 0)
        return "error";
    size_t i;
    json_t *p;
    json_array_foreach(pr, i, p) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "%s%s", n ? "," : "", json_string_value(json_object_get(p, "id")));
    }
    json_decref(pr);
    return buf;
}

/* brand's "products" count in catalog_brands_list, -1 when absent. */
static long long product_count(const char *brand)
{
    json_t *arr = catalog_brands_list(db);
    long long n = -1;
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b)
        if (!strcmp(json_string_value(json_object_get(b, "id")), brand))
            n = json_integer_value(json_object_get(b, "products"));
    json_decref(arr);
    return n;
}

/* 1 when one of res's errors contains every one of the strings. */
static int has_error(const struct catalog_import_result *res, const char *a, const char *b)
{
    size_t i;
    json_t *e;
    json_array_foreach(res->errors, i, e) {
        const char *s = json_string_value(e);
        if (s && strstr(s, a) && (!b || strstr(s, b)))
            return 1;
    }
    return 0;
}

static void dump_errors(const struct catalog_import_result *res)
{
    size_t i;
    json_t *e;
    json_array_foreach(res->errors, i, e)
        printf("#   %s\n", json_string_value(e));
}

static const char SHOP[] =
    "{\"brands\": ["
    " {\"id\": \"ci-shop\", \"name\": \"CI Shop\", \"welcome\": \"Hello from CI Shop\","
    "  \"products\": ["
    "   {\"id\": \"ci-lap-1\", \"name\": \"Zephyr Laptop\", \"description\": \"A light laptop\","
    "    \"category\": \"Laptop\", \"price\": 1000, \"features\": [\"16GB RAM\"],"
    "    \"specifications\": {\"weight\": \"1 kg\"}, \"availability\": true},"
    "   {\"id\": \"ci-pho-1\", \"name\": \"Quartz Phone\", \"price\": 500.5}]},"
    " {\"id\": \"ci-home\", \"name\": \"CI Home\", \"products\": ["
    "   {\"id\": \"ci-sofa-1\", \"name\": \"Velvet Sofa\", \"category\": \"Furniture\", \"price\": 0}]}]}";

TEST(brands_import_creates_brands_and_products)
{
    struct catalog_import_result res;
    REQUIRE(import_brands(SHOP, &res) == CATALOG_IMPORT_OK);
    CHECK_INT(res.brands, 2);
    CHECK_INT(res.products, 3);
    CHECK(res.errors == NULL);
    catalog_import_result_free(&res);
    struct brand b;
    REQUIRE(catalog_brand_get(db, "ci-shop", &b) == 0);
    CHECK_STR(b.name, "CI Shop");
    CHECK_STR(b.welcome, "Hello from CI Shop");
    CHECK_INT(b.active, 1);
    catalog_brand_free(&b);
    char buf[256];
    CHECK_STR(suggest_ids("ci-shop", "laptop", buf, sizeof buf), "ci-lap-1");
    CHECK_STR(suggest_ids("ci-home", "sofa", buf, sizeof buf), "ci-sofa-1");
    CHECK_INT(product_count("ci-shop"), 2);
    /* again: the same catalogue, products replaced (not doubled) */
    REQUIRE(import_brands(SHOP, &res) == CATALOG_IMPORT_OK);
    CHECK_INT(res.replaced, 3);
    catalog_import_result_free(&res);
    CHECK_INT(product_count("ci-shop"), 2);
}

TEST(products_import_replaces_atomically)
{
    struct catalog_import_result res;
    REQUIRE(import_products("ci-shop",
        "[{\"id\": \"ci-tab-1\", \"name\": \"Nimbus Tablet\", \"category\": \"Tablet\", \"price\": 300},"
        " {\"id\": \"ci-tab-2\", \"name\": \"Nimbus Tablet Pro\", \"price\": 450,"
        "  \"features\": [\"Stylus\"], \"availability\": false},"
        " {\"id\": \"ci-lap-1\", \"name\": \"Zephyr Laptop 2\", \"price\": 1100}]", &res) == CATALOG_IMPORT_OK);
    CHECK_INT(res.products, 3);
    CHECK_INT(res.replaced, 2);
    catalog_import_result_free(&res);
    char buf[256];
    CHECK_STR(suggest_ids("ci-shop", "phone", buf, sizeof buf), "");          /* gone */
    CHECK_STR(suggest_ids("ci-shop", "tablet", buf, sizeof buf), "ci-tab-1"); /* pro unavailable */
    CHECK_STR(suggest_ids("ci-shop", "zephyr", buf, sizeof buf), "ci-lap-1");
    CHECK_STR(suggest_ids("ci-home", "sofa", buf, sizeof buf), "ci-sofa-1");  /* other brand kept */
    CHECK_INT(product_count("ci-shop"), 3);
    /* {"products": [...]} is accepted too, and [] empties the brand */
    REQUIRE(import_products("ci-home", "{\"products\": []}", &res) == CATALOG_IMPORT_OK);
    CHECK_INT(res.replaced, 1);
    catalog_import_result_free(&res);
    CHECK_INT(product_count("ci-home"), 0);
    REQUIRE(import_products("ci-home",
        "{\"products\": [{\"id\": \"ci-sofa-1\", \"name\": \"Velvet Sofa\", \"price\": 10}]}",
        &res) == CATALOG_IMPORT_OK);
    catalog_import_result_free(&res);
    CHECK_INT(product_count("ci-home"), 1);
}

TEST(bad_products_refused_catalogue_intact)
{
    char before[256], after[256];
    suggest_ids("ci-shop", "tablet zephyr nimbus", before, sizeof before);
    struct catalog_import_result res;
    int rc = import_products("ci-shop",
        "[{\"id\": \"ci-new-1\", \"name\": \"Fine\", \"price\": 1},"
        " {\"id\": \"ci-new-2\", \"name\": \"Bad price\", \"price\": \"cheap\"},"
        " {\"id\": \"ci-new-3\", \"price\": 3},"
        " {\"id\": \"ci-new-4\", \"name\": \"Neg\", \"price\": -5, \"colour\": \"red\"},"
        " {\"id\": \"ci-new-1\", \"name\": \"Twice\", \"price\": 1},"
        " {\"id\": \"ci-new-6\", \"name\": \"Feat\", \"price\": 1, \"features\": [\"ok\", 7],"
        "  \"specifications\": [], \"availability\": \"yes\"},"
        " 42]", &res);
    CHECK_INT(rc, CATALOG_IMPORT_INVALID);
    CHECK(json_array_size(res.errors) >= 8);
    CHECK(has_error(&res, "products[1] (ci-new-2): price", "got a string"));
    CHECK(has_error(&res, "products[2] (ci-new-3): name", "missing"));
    CHECK(has_error(&res, "products[3] (ci-new-4): price", ">= 0"));
    CHECK(has_error(&res, "products[3] (ci-new-4)", "unknown field 'colour'"));
    CHECK(has_error(&res, "products[4] (ci-new-1): id", "twice"));
    CHECK(has_error(&res, "products[5] (ci-new-6): features", "item 1"));
    CHECK(has_error(&res, "products[5] (ci-new-6): specifications", "an object"));
    CHECK(has_error(&res, "products[5] (ci-new-6): availability", "true or false"));
    CHECK(has_error(&res, "products[6]", "must be an object"));
    CHECK(!has_error(&res, "products[0] (ci-new-1): ", NULL));   /* the good record */
    if (th_failed_cases)
        dump_errors(&res);
    catalog_import_result_free(&res);
    CHECK_STR(suggest_ids("ci-shop", "tablet zephyr nimbus", after, sizeof after), before);
    CHECK_INT(product_count("ci-shop"), 3);
    /* another brand's product id: refused in the transaction, nothing kept */
    rc = import_products("ci-shop",
        "[{\"id\": \"ci-new-7\", \"name\": \"Fine\", \"price\": 1},"
        " {\"id\": \"ci-sofa-1\", \"name\": \"Stolen Sofa\", \"price\": 1}]", &res);
    CHECK_INT(rc, CATALOG_IMPORT_INVALID);
    CHECK(has_error(&res, "products[1] (ci-sofa-1): id", "brand 'ci-home'"));
    catalog_import_result_free(&res);
    CHECK_INT(product_count("ci-shop"), 3);
    CHECK_INT(product_count("ci-home"), 1);
    CHECK_STR(suggest_ids("ci-shop", "tablet zephyr nimbus", after, sizeof after), before);
    /* the wrong shape, and an unknown brand */
    CHECK_INT(import_products("ci-shop", "{\"items\": []}", &res), CATALOG_IMPORT_INVALID);
    CHECK(has_error(&res, "document", "array"));
    catalog_import_result_free(&res);
    CHECK_INT(import_products("ci-nobody", "[]", &res), CATALOG_IMPORT_NO_BRAND);
    catalog_import_result_free(&res);
    CHECK_INT(product_count("ci-shop"), 3);
}

TEST(bad_brands_refused)
{
    struct catalog_import_result res;
    int rc = import_brands(
        "{\"brands\": [{\"id\": \"ci-new\", \"name\": \"New\"},"
        " {\"id\": \"bad id/with slash\", \"name\": \"X\"},"
        " {\"id\": \"ci-shop\", \"name\": \"\", \"active\": 1},"
        " {\"id\": \"ci-new\", \"name\": \"Again\", \"products\": {}}]}", &res);
    CHECK_INT(rc, CATALOG_IMPORT_INVALID);
    CHECK(has_error(&res, "brands[1] (bad id/with slash): id", "letters"));
    CHECK(has_error(&res, "brands[2] (ci-shop): name", "empty"));
    CHECK(has_error(&res, "brands[2] (ci-shop): active", "true or false"));
    CHECK(has_error(&res, "brands[3] (ci-new): id", "twice"));
    CHECK(has_error(&res, "brands[3] (ci-new): products", "array"));
    if (th_failed_cases)
        dump_errors(&res);
    catalog_import_result_free(&res);
    struct brand b;
    CHECK_INT(catalog_brand_get(db, "ci-new", &b), 1);      /* nothing written */
    REQUIRE(catalog_brand_get(db, "ci-shop", &b) == 0);
    CHECK_STR(b.name, "CI Shop");
    catalog_brand_free(&b);
    /* a product in a brands file naming a bad field */
    rc = import_brands("[{\"id\": \"ci-new\", \"name\": \"New\", \"products\": "
                       "[{\"id\": \"p\", \"name\": \"P\", \"price\": null}]}]", &res);
    CHECK_INT(rc, CATALOG_IMPORT_INVALID);
    CHECK(has_error(&res, "brands[0] (ci-new): products[0] (p): price", "got null"));
    catalog_import_result_free(&res);
    CHECK_INT(catalog_brand_get(db, "ci-new", &b), 1);
}

/* 1 when /brands/active lists id. */
static int active_has(const char *id)
{
    json_t *arr = catalog_brands_active(db);
    int found = 0;
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b)
        found |= !strcmp(json_string_value(json_object_get(b, "brand_id")), id);
    json_decref(arr);
    return found;
}

TEST(disable_and_enable)
{
    struct brand b;
    CHECK_INT(active_has("ci-shop"), 1);
    CHECK_INT(catalog_brand_set_disabled(db, "ci-shop", 1, 1234), 0);
    CHECK_INT(active_has("ci-shop"), 0);
    CHECK_INT(active_has("ci-home"), 1);
    CHECK_INT(catalog_brand_get(db, "ci-shop", &b), 1);        /* seed 002 does not find it */
    json_t *arr = catalog_brands_list(db);
    size_t i;
    json_t *o;
    int seen = 0;
    json_array_foreach(arr, i, o)
        if (!strcmp(json_string_value(json_object_get(o, "id")), "ci-shop")) {
            seen = 1;
            CHECK(json_is_true(json_object_get(o, "disabled")));
            CHECK(json_is_false(json_object_get(o, "served")));
            CHECK(json_is_true(json_object_get(o, "active")));
            CHECK_INT(json_integer_value(json_object_get(o, "disabled_at")), 1234);
            CHECK_INT(json_integer_value(json_object_get(o, "products")), 3);
            CHECK_INT(json_integer_value(json_object_get(o, "available")), 2);
        }
    json_decref(arr);
    CHECK_INT(seen, 1);
    /* disabling again keeps the first time; a re-import does not enable it */
    CHECK_INT(catalog_brand_set_disabled(db, "ci-shop", 1, 9999), 0);
    struct catalog_import_result res;
    REQUIRE(import_brands(SHOP, &res) == CATALOG_IMPORT_OK);
    catalog_import_result_free(&res);
    CHECK_INT(active_has("ci-shop"), 0);
    /* its products can still be replaced while it is disabled */
    REQUIRE(import_products("ci-shop", "[{\"id\": \"ci-x\", \"name\": \"X\", \"price\": 1}]", &res) ==
            CATALOG_IMPORT_OK);
    catalog_import_result_free(&res);
    CHECK_INT(catalog_brand_set_disabled(db, "ci-shop", 0, 0), 0);
    CHECK_INT(active_has("ci-shop"), 1);
    REQUIRE(catalog_brand_get(db, "ci-shop", &b) == 0);
    catalog_brand_free(&b);
    CHECK_INT(catalog_brand_set_disabled(db, "ci-nobody", 1, 1), 1);
    CHECK_INT(catalog_brand_set_disabled(db, "ci-nobody", 0, 1), 1);
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
    RUN(brands_import_creates_brands_and_products);
    RUN(products_import_replaces_atomically);
    RUN(bad_products_refused_catalogue_intact);
    RUN(bad_brands_refused);
    RUN(disable_and_enable);
    db_close(db);
    db = NULL;
}

int main(void)
{
    snprintf(dbpath, sizeof dbpath, "%s/cli_import.db", th_tmpdir());
    target = dbpath;
    printf("# backend: SQLite\n");
    run_cases();
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        static char uri[1024];
        char err[512], schema[128], sql[256];
        snprintf(schema, sizeof schema, "clit_%ld_%lld", (long)getpid(), (long long)now_ms());
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
