/* catalog.h — seed 002 brands and their products (tables brands, products,
 * products_fts), and product suggestions by full-text search.
 *
 * PostgreSQL (storage/pg/catalog.c, sql/pg/004_catalog_kb.sql): the same
 * tables, a generated tsvector with a GIN index for products_fts, ranked by
 * ts_rank_cd with the same column weights; puts are INSERT ... ON CONFLICT.
 *
 * Used by the brand adapter (core/proto_brand.c) and by parley.fcgi for
 * GET /brands/active. Every statement is a literal prepared once per
 * connection with bound parameters; user text never becomes SQL or FTS5
 * syntax (catalog_suggest quotes each word itself).
 * Threads: uses the caller's parley_db (one thread at a time).
 * Return values: 0 success/found, 1 not found, -1 database error or invalid
 * argument, unless a function says otherwise.
 */
#ifndef PARLEY_CATALOG_H
#define PARLEY_CATALOG_H
#include <stddef.h>
#include <jansson.h>
#include "db.h"

struct brand {
    char id[64];
    char *name;            /* new strings in catalog_brand_get; borrowed in put */
    char *welcome;         /* "" = the default welcome */
    char *system_prompt;   /* "" = the default system prompt */
    int active;            /* 1 / 0 */
};
/* Frees the strings of a brand filled by catalog_brand_get; accepts NULL. */
void catalog_brand_free(struct brand *b);

/* Reads brand id (active or not; check b->active). 0 / 1 / -1. */
int catalog_brand_get(parley_db *db, const char *id, struct brand *out);
/* Inserts the brand or replaces its name, texts and active flag.
 * NULL strings are stored as "". 0 / -1. */
int catalog_brand_put(parley_db *db, const struct brand *b);
/* The welcome text of b: its own, or "Welcome to <name>! How can I help
 * you today?" (new string, NULL on OOM). */
char *catalog_welcome(const struct brand *b);
/* Active brands by name as a new JSON array of
 * {"brand_id", "brand_name", "welcome_message"} (GET /brands/active);
 * NULL on error. */
json_t *catalog_brands_active(parley_db *db);

struct product {
    const char *id;                /* unique over all brands */
    const char *brand_id;
    const char *name;
    const char *description;       /* NULL = "" */
    const char *category;          /* NULL = "" */
    double price;
    const char *features;          /* JSON array of strings as text; NULL = "[]" */
    const char *specifications;    /* JSON object as text; NULL = "{}" */
    int available;                 /* 1 / 0 */
};
/* Inserts the product or replaces every field of the one with that id
 * (products_fts follows through triggers). -1 also when features or
 * specifications are not the JSON they must be, or the brand is unknown. */
int catalog_product_put(parley_db *db, const struct product *p);

/* Suggests up to limit available products of brand_id for a customer's
 * text: each word of query (letters and digits; common words, one-letter
 * words and duplicates dropped, at most CATALOG_MAX_TERMS) becomes a quoted
 * FTS5 term (terms.h: a prefix query from 4 bytes, ASCII plurals stemmed),
 * OR-ed, ranked by bm25 (name counts most). *products: a new
 * JSON array of seed 002 product objects {"id", "name", "description",
 * "category", "price", "features", "specifications", "availability"},
 * best first, possibly empty. *confidence: the fraction of the query's
 * terms the best product matches, in (0, 1], rounded to 2 decimals; -1
 * when no product matched. 0, or -1 on error (*products NULL). */
#define CATALOG_MAX_TERMS 16
int catalog_suggest(parley_db *db, const char *brand_id, const char *query, int limit,
                    json_t **products, double *confidence);
#endif
