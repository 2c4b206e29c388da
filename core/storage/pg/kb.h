/* storage/pg/kb.h — the PostgreSQL bodies of the catalog (catalog.h) and
 * the knowledge base (kb.h), issue 10. Private to core: included by
 * catalog.c and kb.c, which dispatch here when db_pg_conn(db) is not NULL,
 * by storage/pg/catalog.c and storage/pg/kb.c, and by unit tests.
 *
 * Schema: sql/pg/004_catalog_kb.sql (brands, products, kb_passages as in
 * SQLite; each searched table has a generated tsvector column fts with a
 * GIN index instead of an FTS5 table). Search terms come from terms.h
 * (terms_words: letters and digits only), bound as one parameter; SQL
 * turns each into a tsquery (parley_term_query), never user text.
 * Threads: the connection's thread (db.h). Every value is bound
 * (PQexecParams); failures are recorded with db_pg_fail (db_errmsg,
 * db_err_kind) and logged.
 */
#ifndef PARLEY_STORAGE_PG_KB_H
#define PARLEY_STORAGE_PG_KB_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "db.h"

struct brand;
struct product;
struct terms;
struct kb_entry;
struct kb_hits;

/* ---- catalog (storage/pg/catalog.c; contracts and return values: catalog.h) ---- */

/* Reads brand id into out (out->id already checked to fit). 0 / 1 / -1. */
int catalog_pg_brand_get(parley_db *db, const char *id, struct brand *out);
/* INSERT ... ON CONFLICT (id) DO UPDATE (arguments checked by catalog.c). 0 / -1. */
int catalog_pg_brand_put(parley_db *db, const struct brand *b, int64_t now);
/* The active brands, rows of {id, name, welcome} by name then id (byte
 * order, as SQLite), appended to arr by add (catalog.c builds the JSON).
 * 0 / -1. */
int catalog_pg_brands_active(parley_db *db, json_t *arr,
                             int (*add)(json_t *arr, const char *id, const char *name,
                                        const char *welcome));
/* Every brand by id (byte order), each row appended to arr as
 * catalog_brand_row_json builds it. 0 / -1. */
int catalog_pg_brands_list(parley_db *db, json_t *arr);
/* catalog.c's row builder for catalog_brands_list (disabled_at -1: NULL):
 * a new object, NULL on OOM. */
json_t *catalog_brand_row_json(const char *id, const char *name, int active, int64_t disabled_at,
                               int64_t created_at, int64_t products, int64_t available);
/* UPDATE of brands.disabled_at (catalog_brand_set_disabled): rows matched
 * (0: no such brand), -1 error. */
int64_t catalog_pg_brand_set_disabled(parley_db *db, const char *id, int disabled, int64_t now);
/* catalog_brand_exists, catalog_product_owner, catalog_products_delete_brand
 * (catalog.h; same return values). */
int catalog_pg_brand_exists(parley_db *db, const char *id);
int catalog_pg_product_owner(parley_db *db, const char *product_id, char brand[64]);
int64_t catalog_pg_products_delete_brand(parley_db *db, const char *brand_id);
/* INSERT ... ON CONFLICT (id) DO UPDATE of a product whose fields catalog.c
 * checked and defaulted. 0 / -1 (an unknown brand is a foreign-key error). */
int catalog_pg_product_put(parley_db *db, const struct product *p);
/* The suggestion query of catalog_suggest for t (t->n > 0, limit > 0):
 * products appended to arr best first by row (product_json builds each
 * from its columns: id, name, description, category, price, features,
 * specifications, availability); *top_hits: how many of t's terms the
 * first product matches (0 when none matched). 0 / -1. */
int catalog_pg_suggest(parley_db *db, const char *brand_id, const struct terms *t, int limit,
                       json_t *arr, int *top_hits,
                       json_t *(*product_json)(const char *const cols[8]));

/* ---- knowledge base (storage/pg/kb.c; contracts: kb.h) ---- */

/* One passage cut by kb.c (title and text NUL-terminated UTF-8). */
struct kb_cut_passage {
    char *title, *text;
};
/* Inside the caller's transaction: waits for the source's transaction-level
 * advisory lock (imports and removals of one source on any node run one
 * after the other), deletes the source's passages and inserts v[0..n) as
 * seq 1..n. 0 / -1. */
int kb_pg_replace_tx(parley_db *db, const char *source, const struct kb_cut_passage *v, int n,
                     int64_t now);
/* kb_list's query (source NULL = all), byte order of source as SQLite.
 * KB_OK / KB_ERR. */
int kb_pg_list(parley_db *db, const char *source, struct kb_entry **out, int *n);
/* Inside the caller's transaction: deletes the source's passages under the
 * same advisory lock; rows deleted or -1. */
int kb_pg_delete_source_tx(parley_db *db, const char *source);
/* Inside the caller's transaction: deletes passage id; rows deleted (0 / 1)
 * or -1. */
int kb_pg_delete_id_tx(parley_db *db, int64_t id);
/* kb_search's query for t (t->n > 0, 1 <= limit <= KB_MAX_HITS): fills
 * out->v / out->n (out->v allocated by the caller for limit hits, out->n
 * 0) with hits best first by ts_rank_cd (title weighs twice the text);
 * bm25 gets the rank negated (lower = better, as FTS5's bm25), and
 * terms_matched the number of t's terms the passage matches. KB_OK /
 * KB_ERR (hits already filled are left for the caller to free). */
int kb_pg_search(parley_db *db, const struct terms *t, int limit, struct kb_hits *out);
#endif
