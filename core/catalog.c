/* catalog.c — seed 002 brands, products and FTS5 product suggestions
 * (see catalog.h). Runs in whichever thread owns the parley_db it is given.
 * Every statement is a literal prepared once per connection (db_stmt) with
 * bound parameters; the FTS5 MATCH expression is built by terms.h from
 * quoted words of letters and digits only, never from the user's raw text.
 * Arguments are checked and JSON is built here for both backends; on a
 * PostgreSQL connection (db_pg_conn) the statements are
 * storage/pg/catalog.c's. */
#include "catalog.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/kb.h"
#include "terms.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_BRAND_GET[] =
    "SELECT id, name, welcome, system_prompt, active FROM brands WHERE id = ? "
    "AND disabled_at IS NULL";
static const char SQL_BRAND_PUT[] =
    "INSERT INTO brands(id, name, welcome, system_prompt, active, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE SET name = excluded.name, "
    "welcome = excluded.welcome, system_prompt = excluded.system_prompt, "
    "active = excluded.active";
static const char SQL_BRANDS_ACTIVE[] =
    "SELECT id, name, welcome FROM brands WHERE active = 1 AND disabled_at IS NULL "
    "ORDER BY name, id";
static const char SQL_BRANDS_LIST[] =
    "SELECT b.id, b.name, b.active, b.disabled_at, b.created_at, "
    "(SELECT count(*) FROM products p WHERE p.brand_id = b.id), "
    "(SELECT count(*) FROM products p WHERE p.brand_id = b.id AND p.availability = 1) "
    "FROM brands b ORDER BY b.id";
static const char SQL_BRAND_DISABLE[] =
    "UPDATE brands SET disabled_at = coalesce(disabled_at, ?2) WHERE id = ?1";
static const char SQL_BRAND_ENABLE[] =
    "UPDATE brands SET disabled_at = NULL WHERE id = ?1";
static const char SQL_BRAND_EXISTS[] = "SELECT 1 FROM brands WHERE id = ?";
static const char SQL_PRODUCT_OWNER[] = "SELECT brand_id FROM products WHERE id = ?";
static const char SQL_PRODUCTS_DELETE_BRAND[] = "DELETE FROM products WHERE brand_id = ?";
static const char SQL_PRODUCT_PUT[] =
    "INSERT INTO products(id, brand_id, name, description, category, price, features, "
    "specifications, availability) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
    "ON CONFLICT(id) DO UPDATE SET brand_id = excluded.brand_id, name = excluded.name, "
    "description = excluded.description, category = excluded.category, "
    "price = excluded.price, features = excluded.features, "
    "specifications = excluded.specifications, availability = excluded.availability";
/* bm25 weights follow the columns: name, description, category, features. */
static const char SQL_SUGGEST[] =
    "SELECT p.pk, p.id, p.name, p.description, p.category, p.price, p.features, "
    "p.specifications, p.availability FROM products_fts "
    "JOIN products p ON p.pk = products_fts.rowid "
    "WHERE products_fts MATCH ?1 AND p.brand_id = ?2 AND p.availability = 1 "
    "ORDER BY bm25(products_fts, 4.0, 1.0, 2.0, 1.0), p.pk LIMIT ?3";
static const char SQL_TERM_HITS[] =
    "SELECT 1 FROM products_fts WHERE products_fts MATCH ?1 AND rowid = ?2";

/* ---- brands ---- */

void catalog_brand_free(struct brand *b)
{
    if (!b)
        return;
    free(b->name);
    free(b->welcome);
    free(b->system_prompt);
    b->name = b->welcome = b->system_prompt = NULL;
}

int catalog_brand_get(parley_db *db, const char *id, struct brand *out)
{
    memset(out, 0, sizeof *out);
    if (!id || strlen(id) >= sizeof out->id)
        return 1;
    if (db_pg_conn(db))
        return catalog_pg_brand_get(db, id, out);
    sqlite3_stmt *st = db_stmt(db, SQL_BRAND_GET);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    int rc = sqlite3_step(st), r = rc == SQLITE_DONE ? 1 : -1;
    if (rc == SQLITE_ROW) {
        str_copy(out->id, sizeof out->id, (const char *)sqlite3_column_text(st, 0));
        out->name = db_col_strdup(st, 1);
        out->welcome = db_col_strdup(st, 2);
        out->system_prompt = db_col_strdup(st, 3);
        out->active = sqlite3_column_int(st, 4) != 0;
        r = 0;
        if (!out->name || !out->welcome || !out->system_prompt) {
            catalog_brand_free(out);
            r = -1;
        }
    }
    sqlite3_reset(st);
    return r;
}

int catalog_brand_put(parley_db *db, const struct brand *b)
{
    if (!b->id[0] || !b->name || !*b->name)
        return -1;
    if (db_pg_conn(db))
        return catalog_pg_brand_put(db, b, now_ms());
    sqlite3_stmt *st = db_stmt(db, SQL_BRAND_PUT);
    if (!st)
        return -1;
    db_bind_text(st, 1, b->id);
    db_bind_text(st, 2, b->name);
    db_bind_text(st, 3, b->welcome ? b->welcome : "");
    db_bind_text(st, 4, b->system_prompt ? b->system_prompt : "");
    sqlite3_bind_int(st, 5, b->active ? 1 : 0);
    sqlite3_bind_int64(st, 6, now_ms());
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static char *welcome_of(const char *name, const char *welcome)
{
    if (welcome && *welcome)
        return strdup(welcome);
    const char *n = name ? name : "";
    size_t len = strlen(n) + 64;
    char *s = malloc(len);
    if (s)
        snprintf(s, len, "Welcome to %s! How can I help you today?", n);
    return s;
}

char *catalog_welcome(const struct brand *b)
{
    return welcome_of(b->name, b->welcome);
}

/* Appends one {"brand_id", "brand_name", "welcome_message"} to arr. 0 / -1. */
static int add_active(json_t *arr, const char *id, const char *name, const char *welcome)
{
    char *w = welcome_of(name, welcome);
    json_t *o = w ? json_pack("{s:s, s:s, s:s}", "brand_id", id ? id : "",
                              "brand_name", name ? name : "", "welcome_message", w) : NULL;
    free(w);
    return o && json_array_append_new(arr, o) == 0 ? 0 : -1;
}

json_t *catalog_brands_active(parley_db *db)
{
    if (db_pg_conn(db)) {
        json_t *arr = json_array();
        if (arr && catalog_pg_brands_active(db, arr, add_active) == 0)
            return arr;
        json_decref(arr);
        return NULL;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_BRANDS_ACTIVE);
    json_t *arr = json_array();
    if (!st || !arr) {
        json_decref(arr);
        return NULL;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (add_active(arr, (const char *)sqlite3_column_text(st, 0),
                       (const char *)sqlite3_column_text(st, 1),
                       (const char *)sqlite3_column_text(st, 2)) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* One row of catalog_brands_list (both backends' columns as values). */
json_t *catalog_brand_row_json(const char *id, const char *name, int active, int64_t disabled_at,
                               int64_t created_at, int64_t products, int64_t available)
{
    return json_pack("{s:s, s:s, s:b, s:b, s:o, s:b, s:I, s:I, s:I}", "id", id ? id : "",
                     "name", name ? name : "", "active", active, "disabled", disabled_at >= 0,
                     "disabled_at", disabled_at >= 0 ? json_integer(disabled_at) : json_null(),
                     "served", active && disabled_at < 0, "products", (json_int_t)products,
                     "available", (json_int_t)available, "created_at", (json_int_t)created_at);
}

json_t *catalog_brands_list(parley_db *db)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    if (db_pg_conn(db)) {
        if (catalog_pg_brands_list(db, arr) == 0)
            return arr;
        json_decref(arr);
        return NULL;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_BRANDS_LIST);
    if (!st) {
        json_decref(arr);
        return NULL;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = catalog_brand_row_json(
            (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
            sqlite3_column_int(st, 2) != 0,
            sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3),
            sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 5), sqlite3_column_int64(st, 6));
        if (!o || json_array_append_new(arr, o) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

int catalog_brand_set_disabled(parley_db *db, const char *id, int disabled, int64_t now)
{
    if (!id || !*id)
        return 1;
    if (db_pg_conn(db)) {
        int64_t n = catalog_pg_brand_set_disabled(db, id, disabled, now);
        return n < 0 ? -1 : n == 0;
    }
    sqlite3_stmt *st = db_stmt(db, disabled ? SQL_BRAND_DISABLE : SQL_BRAND_ENABLE);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    if (disabled)
        sqlite3_bind_int64(st, 2, now);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_DONE ? db_changes(db) : -1;
    sqlite3_reset(st);
    return n < 0 ? -1 : n == 0;
}

int catalog_brand_exists(parley_db *db, const char *brand_id)
{
    if (db_pg_conn(db))
        return catalog_pg_brand_exists(db, brand_id);
    sqlite3_stmt *st = db_stmt(db, SQL_BRAND_EXISTS);
    if (!st)
        return -1;
    db_bind_text(st, 1, brand_id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

int catalog_product_owner(parley_db *db, const char *product_id, char brand[64])
{
    brand[0] = '\0';
    if (db_pg_conn(db))
        return catalog_pg_product_owner(db, product_id, brand);
    sqlite3_stmt *st = db_stmt(db, SQL_PRODUCT_OWNER);
    if (!st)
        return -1;
    db_bind_text(st, 1, product_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        str_copy(brand, 64, (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
}

int catalog_products_delete_brand(parley_db *db, const char *brand_id)
{
    if (db_pg_conn(db)) {
        int64_t n = catalog_pg_products_delete_brand(db, brand_id);
        return n < 0 ? -1 : (int)n;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_PRODUCTS_DELETE_BRAND);
    if (!st)
        return -1;
    db_bind_text(st, 1, brand_id);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_DONE ? db_changes(db) : -1;
    sqlite3_reset(st);
    return n;
}

/* ---- products ---- */

/* 1 when text is a JSON array of strings. */
static int is_string_array(const char *text)
{
    json_t *a = json_loads(text, JSON_DECODE_ANY, NULL);
    int ok = json_is_array(a);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
        if (!json_is_string(v))
            ok = 0;
    json_decref(a);
    return ok;
}

static int is_object(const char *text)
{
    json_t *o = json_loads(text, JSON_DECODE_ANY, NULL);
    int ok = json_is_object(o);
    json_decref(o);
    return ok;
}

int catalog_product_put(parley_db *db, const struct product *p)
{
    const char *features = p->features ? p->features : "[]";
    const char *specs = p->specifications ? p->specifications : "{}";
    if (!p->id || !*p->id || !p->brand_id || !p->name || !*p->name || !isfinite(p->price) ||
        !is_string_array(features) || !is_object(specs))
        return -1;
    if (db_pg_conn(db)) {
        struct product q = *p;
        q.description = p->description ? p->description : "";
        q.category = p->category ? p->category : "";
        q.features = features;
        q.specifications = specs;
        return catalog_pg_product_put(db, &q);
    }
    sqlite3_stmt *st = db_stmt(db, SQL_PRODUCT_PUT);
    if (!st)
        return -1;
    db_bind_text(st, 1, p->id);
    db_bind_text(st, 2, p->brand_id);
    db_bind_text(st, 3, p->name);
    db_bind_text(st, 4, p->description ? p->description : "");
    db_bind_text(st, 5, p->category ? p->category : "");
    sqlite3_bind_double(st, 6, p->price);
    db_bind_text(st, 7, features);
    db_bind_text(st, 8, specs);
    sqlite3_bind_int(st, 9, p->available ? 1 : 0);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- suggestions ---- */

_Static_assert(CATALOG_MAX_TERMS <= TERMS_MAX, "a struct terms holds CATALOG_MAX_TERMS");

static json_t *json_text_or(const char *text, json_t *(*fallback)(void), int want_array)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (want_array ? json_is_array(v) : json_is_object(v))
        return v;
    json_decref(v);
    return fallback();
}

/* A seed 002 product object from its columns (id, name, description,
 * category, price, features, specifications, availability; NULL = empty)
 * and its price as a number. */
static json_t *product_json_of(const char *const c[8], double price)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:f, s:o, s:o, s:b}",
                     "id", c[0] ? c[0] : "", "name", c[1] ? c[1] : "",
                     "description", c[2] ? c[2] : "", "category", c[3] ? c[3] : "",
                     "price", price,
                     "features", json_text_or(c[5], json_array, 1),
                     "specifications", json_text_or(c[6], json_object, 0),
                     "availability", c[7] && strcmp(c[7], "0") != 0);
}

static json_t *product_json(sqlite3_stmt *st)
{
    const char *c[8] = { NULL };
    for (int i = 0; i < 7; i++)              /* not the price (column 5): a number */
        if (i != 4)
            c[i] = (const char *)sqlite3_column_text(st, i + 1);
    c[7] = sqlite3_column_int(st, 8) ? "1" : "0";
    return product_json_of(c, sqlite3_column_double(st, 5));
}

/* storage/pg/catalog.c's rows: every column as text. */
static json_t *product_json_text(const char *const cols[8])
{
    return product_json_of(cols, strtod(cols[4], NULL));
}

int catalog_suggest(parley_db *db, const char *brand_id, const char *query, int limit,
                    json_t **products, double *confidence)
{
    *products = NULL;
    *confidence = -1;
    json_t *arr = json_array();
    if (!arr)
        return -1;
    struct terms t;
    terms_split(query, TERMS_PREFIX | TERMS_STEM, CATALOG_MAX_TERMS, &t);
    if (t.n == 0 || limit <= 0) {
        *products = arr;
        return 0;
    }
    if (db_pg_conn(db)) {
        int hits = 0;
        if (catalog_pg_suggest(db, brand_id, &t, limit, arr, &hits, product_json_text) < 0) {
            json_decref(arr);
            return -1;
        }
        if (json_array_size(arr) > 0)
            *confidence = round(100.0 * (hits > 0 ? hits : 1) / t.n) / 100.0;
        *products = arr;
        return 0;
    }
    char expr[TERMS_EXPR_SIZE];
    sqlite3_stmt *st = terms_or(&t, expr, sizeof expr) == 0 ? db_stmt(db, SQL_SUGGEST) : NULL;
    if (!st) {
        json_decref(arr);
        return -1;
    }
    db_bind_text(st, 1, expr);
    db_bind_text(st, 2, brand_id);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_int64 top = -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (top < 0)
            top = sqlite3_column_int64(st, 0);
        json_t *p = product_json(st);
        if (!p || json_array_append_new(arr, p) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return -1;
    }
    if (top >= 0) {
        int hits = terms_hits(db, SQL_TERM_HITS, &t, top);
        if (hits < 0) {
            json_decref(arr);
            return -1;
        }
        if (hits == 0)
            hits = 1;           /* it matched the OR of them: at least one */
        *confidence = round(100.0 * hits / t.n) / 100.0;
    }
    *products = arr;
    return 0;
}
