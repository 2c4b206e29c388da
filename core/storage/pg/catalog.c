/* storage/pg/catalog.c — the catalog's PostgreSQL bodies (contracts:
 * catalog.h; catalog.c checks arguments, builds the JSON and dispatches
 * here when db_pg_conn(db) is not NULL).
 *
 * Writes are single statements that decide on the unique keys: a brand or
 * product put is INSERT ... ON CONFLICT (id) DO UPDATE, so puts of one id
 * on two nodes at once both succeed and leave one row (the later commit's
 * values), never a unique violation; a product of an unknown brand is
 * refused by the foreign key. Suggestions: the products' generated
 * tsvector (fts, sql/pg/004_catalog_kb.sql) matched against the OR of the
 * terms' tsqueries, ranked by ts_rank_cd (name A, category B, description
 * and features C: bm25's 4 : 2 : 1 : 1), ties by pk as on SQLite. Every
 * value is bound (db_pg_exec: text format, each statement prepared once per session). */
#include "storage/pg/pg.h"
#include "storage/pg/kb.h"
#include "catalog.h"
#include "terms.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_BRAND_GET[] =
    "SELECT id, name, welcome, system_prompt, active FROM brands WHERE id = $1 "
    "AND disabled_at IS NULL";
static const char SQL_BRAND_PUT[] =
    "INSERT INTO brands(id, name, welcome, system_prompt, active, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
    "welcome = excluded.welcome, system_prompt = excluded.system_prompt, "
    "active = excluded.active";
/* byte order of names, as SQLite's BINARY collation */
static const char SQL_BRANDS_ACTIVE[] =
    "SELECT id, name, welcome FROM brands WHERE active = 1 AND disabled_at IS NULL "
    "ORDER BY name COLLATE \"C\", id COLLATE \"C\"";
static const char SQL_BRANDS_LIST[] =
    "SELECT b.id, b.name, b.active, coalesce(b.disabled_at, -1), b.created_at, "
    "(SELECT count(*) FROM products p WHERE p.brand_id = b.id), "
    "(SELECT count(*) FROM products p WHERE p.brand_id = b.id AND p.availability = 1) "
    "FROM brands b ORDER BY b.id COLLATE \"C\"";
static const char SQL_BRAND_DISABLE[] =
    "UPDATE brands SET disabled_at = coalesce(disabled_at, $2::bigint) WHERE id = $1";
static const char SQL_BRAND_ENABLE[] = "UPDATE brands SET disabled_at = NULL WHERE id = $1";
static const char SQL_BRAND_EXISTS[] = "SELECT 1 FROM brands WHERE id = $1";
static const char SQL_PRODUCT_OWNER[] = "SELECT brand_id FROM products WHERE id = $1";
static const char SQL_PRODUCTS_DELETE_BRAND[] = "DELETE FROM products WHERE brand_id = $1";
static const char SQL_PRODUCT_PUT[] =
    "INSERT INTO products(id, brand_id, name, description, category, price, features, "
    "specifications, availability) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
    "ON CONFLICT (id) DO UPDATE SET brand_id = excluded.brand_id, name = excluded.name, "
    "description = excluded.description, category = excluded.category, "
    "price = excluded.price, features = excluded.features, "
    "specifications = excluded.specifications, availability = excluded.availability";
/* $1: terms_words' list; the rank's weights are {D, C, B, A}. The
 * per-term hit count is taken for the returned rows only. */
static const char SQL_SUGGEST[] =
    "WITH t AS (SELECT parley_term_query('simple', w) AS q "
    "           FROM unnest(string_to_array($1, ' ')) AS w), "
    "     q AS (SELECT parley_tsquery_or(t.q) AS q FROM t) "
    "SELECT s.id, s.name, s.description, s.category, s.price, s.features, s.specifications, "
    "       s.availability, (SELECT count(*) FROM t WHERE t.q IS NOT NULL AND s.fts @@ t.q) "
    "FROM (SELECT p.pk, p.id, p.name, p.description, p.category, p.price, p.features, "
    "             p.specifications, p.availability, p.fts, "
    "             ts_rank_cd('{0, 0.25, 0.5, 1}', p.fts, q.q) AS score "
    "      FROM products p, q WHERE p.fts @@ q.q AND p.brand_id = $2 AND p.availability = 1 "
    "      ORDER BY score DESC, p.pk LIMIT $3) s "
    "ORDER BY s.score DESC, s.pk";

int catalog_pg_brand_get(parley_db *db, const char *id, struct brand *out)
{
    const char *params[1] = { id };
    PGresult *r = db_pg_run(db, SQL_BRAND_GET, 1, params, PGRES_TUPLES_OK, "catalog: brand get");
    if (!r)
        return -1;
    int rc = 1;
    if (PQntuples(r) == 1) {
        str_copy(out->id, sizeof out->id, PQgetvalue(r, 0, 0));
        out->name = strdup(PQgetvalue(r, 0, 1));
        out->welcome = strdup(PQgetvalue(r, 0, 2));
        out->system_prompt = strdup(PQgetvalue(r, 0, 3));
        out->active = strcmp(PQgetvalue(r, 0, 4), "0") != 0;
        rc = 0;
        if (!out->name || !out->welcome || !out->system_prompt) {
            catalog_brand_free(out);
            rc = -1;
        }
    }
    PQclear(r);
    return rc;
}

int catalog_pg_brand_put(parley_db *db, const struct brand *b, int64_t now)
{
    char nows[24];
    snprintf(nows, sizeof nows, "%" PRId64, now);
    const char *params[6] = { b->id, b->name, b->welcome ? b->welcome : "",
                              b->system_prompt ? b->system_prompt : "", b->active ? "1" : "0",
                              nows };
    PGresult *r = db_pg_run(db, SQL_BRAND_PUT, 6, params, PGRES_COMMAND_OK, "catalog: brand put");
    PQclear(r);
    return r ? 0 : -1;
}

int catalog_pg_brands_active(parley_db *db, json_t *arr,
                             int (*add)(json_t *arr, const char *id, const char *name,
                                        const char *welcome))
{
    PGresult *r = db_pg_run(db, SQL_BRANDS_ACTIVE, 0, NULL, PGRES_TUPLES_OK, "catalog: active brands");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++)
        rc = add(arr, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return rc;
}

int catalog_pg_brands_list(parley_db *db, json_t *arr)
{
    PGresult *r = db_pg_run(db, SQL_BRANDS_LIST, 0, NULL, PGRES_TUPLES_OK, "catalog: brands list");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *o = catalog_brand_row_json(
            PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), strcmp(PQgetvalue(r, i, 2), "0") != 0,
            strtoll(PQgetvalue(r, i, 3), NULL, 10), strtoll(PQgetvalue(r, i, 4), NULL, 10),
            strtoll(PQgetvalue(r, i, 5), NULL, 10), strtoll(PQgetvalue(r, i, 6), NULL, 10));
        if (!o || json_array_append_new(arr, o) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}

int64_t catalog_pg_brand_set_disabled(parley_db *db, const char *id, int disabled, int64_t now)
{
    char nows[24];
    snprintf(nows, sizeof nows, "%" PRId64, now);
    const char *params[2] = { id, nows };
    return db_pg_command(db, disabled ? SQL_BRAND_DISABLE : SQL_BRAND_ENABLE, disabled ? 2 : 1,
                         params, disabled ? "catalog: brand disable" : "catalog: brand enable");
}

int catalog_pg_brand_exists(parley_db *db, const char *id)
{
    const char *params[1] = { id };
    PGresult *r = db_pg_run(db, SQL_BRAND_EXISTS, 1, params, PGRES_TUPLES_OK, "catalog: brand exists");
    if (!r)
        return -1;
    int rc = PQntuples(r) > 0 ? 0 : 1;
    PQclear(r);
    return rc;
}

int catalog_pg_product_owner(parley_db *db, const char *product_id, char brand[64])
{
    const char *params[1] = { product_id };
    PGresult *r = db_pg_run(db, SQL_PRODUCT_OWNER, 1, params, PGRES_TUPLES_OK, "catalog: product owner");
    if (!r)
        return -1;
    int rc = 1;
    if (PQntuples(r) > 0) {
        str_copy(brand, 64, PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

int64_t catalog_pg_products_delete_brand(parley_db *db, const char *brand_id)
{
    const char *params[1] = { brand_id };
    return db_pg_command(db, SQL_PRODUCTS_DELETE_BRAND, 1, params, "catalog: products delete");
}

int catalog_pg_product_put(parley_db *db, const struct product *p)
{
    char price[40];
    snprintf(price, sizeof price, "%.17g", p->price);
    const char *params[9] = { p->id, p->brand_id, p->name, p->description, p->category, price,
                              p->features, p->specifications, p->available ? "1" : "0" };
    PGresult *r = db_pg_run(db, SQL_PRODUCT_PUT, 9, params, PGRES_COMMAND_OK, "catalog: product put");
    PQclear(r);
    return r ? 0 : -1;
}

int catalog_pg_suggest(parley_db *db, const char *brand_id, const struct terms *t, int limit,
                       json_t *arr, int *top_hits,
                       json_t *(*product_json)(const char *const cols[8]))
{
    *top_hits = 0;
    char words[TERMS_EXPR_SIZE], lim[16];
    if (terms_words(t, words, sizeof words) < 0)
        return -1;
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[3] = { words, brand_id, lim };
    PGresult *r = db_pg_run(db, SQL_SUGGEST, 3, params, PGRES_TUPLES_OK, "catalog: suggest");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        const char *cols[8];
        for (int c = 0; c < 8; c++)
            cols[c] = PQgetvalue(r, i, c);
        json_t *o = product_json(cols);
        if (!o || json_array_append_new(arr, o) < 0)
            rc = -1;
        if (i == 0)
            *top_hits = atoi(PQgetvalue(r, 0, 8));
    }
    PQclear(r);
    return rc;
}
