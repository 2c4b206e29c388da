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

/* Reads brand id (active or not; check b->active). A brand an
 * administrator disabled (catalog_brand_set_disabled) is not found: 1, as
 * for an unknown id (seed 002 then refuses it "not found or inactive").
 * 0 / 1 / -1. */
int catalog_brand_get(parley_db *db, const char *id, struct brand *out);
/* Inserts the brand or replaces its name, texts and active flag.
 * NULL strings are stored as "". 0 / -1. */
int catalog_brand_put(parley_db *db, const struct brand *b);
/* The welcome text of b: its own, or "Welcome to <name>! How can I help
 * you today?" (new string, NULL on OOM). */
char *catalog_welcome(const struct brand *b);
/* Active brands by name as a new JSON array of
 * {"brand_id", "brand_name", "welcome_message"} (GET /brands/active);
 * disabled brands are left out. NULL on error. */
json_t *catalog_brands_active(parley_db *db);

/* Every brand, disabled ones included, by id (byte order), as a new JSON
 * array (caller owns, json_decref) of {"id", "name", "active" (the
 * catalogue's flag), "disabled", "disabled_at" (ms or null), "served"
 * (active and not disabled: what /brands/active and seed 002 see),
 * "products", "available" (counts), "created_at"} (parley brands list).
 * NULL on error. */
json_t *catalog_brands_list(parley_db *db);
/* Disables (disabled != 0: disabled_at = now, kept when it already is) or
 * enables brand id (parley brands disable/enable). Its catalogue is kept;
 * a later import does not enable it again. 0 done, 1 no such brand,
 * -1 database error. */
int catalog_brand_set_disabled(parley_db *db, const char *id, int disabled, int64_t now);

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

/* ---- catalogue import (core/catalog_import.c; parley brands import,
 * parley products import; docs/cli.md) ----
 *
 * A brands document is {"brands": [BRAND...]} (or the array alone); a
 * BRAND is {"id", "name", "welcome"?, "system_prompt"?, "active"?,
 * "products"?: [PRODUCT...]}. A products document is [PRODUCT...] (or
 * {"products": [...]}); a PRODUCT is a seed 002 product object {"id",
 * "name", "description"?, "category"?, "price", "features"?,
 * "specifications"?, "availability"?}. Every record is checked first
 * (types, required fields, unknown fields, a brand id of 1-63 letters,
 * digits, '-', '_', '.', product ids unique in the file and not another
 * brand's); any bad record refuses the whole import and nothing is
 * written. Then ONE transaction: brands are inserted or updated (their
 * disabled flag untouched), and the products of every brand that lists
 * "products" (of BRAND for a products document) are replaced by the
 * file's: the old ones deleted, the new ones inserted. Readers see the
 * old catalogue or the new one, never a mix. */
enum catalog_import_rc {
    CATALOG_IMPORT_ERR = -1,      /* database error (db_errmsg), or out of memory */
    CATALOG_IMPORT_OK = 0,
    CATALOG_IMPORT_NO_BRAND = 1,  /* products import: no such brand */
    CATALOG_IMPORT_INVALID = 2    /* bad records: res->errors, nothing written */
};
struct catalog_import_result {
    int brands;        /* brands inserted or updated */
    int products;      /* products written */
    int replaced;      /* products deleted before (the previous catalogue of those brands) */
    json_t *errors;    /* INVALID: a new array of strings, one per problem,
                        * each naming the record (its index and id) and the field:
                        * "products[3] (laptop-004): price: must be a number >= 0, got a string";
                        * NULL otherwise */
};
/* Frees res->errors (accepts a zeroed result). */
void catalog_import_result_free(struct catalog_import_result *res);
/* Reads the JSON document at path into *doc (new, json_decref). 0, or -1
 * with a message naming the file (and the line and column of a syntax
 * error) in err. Any thread. */
int catalog_read_json(const char *path, json_t **doc, char *err, size_t errlen);
/* Imports a brands document (above). *res filled (zero it first or not:
 * it is reset). CATALOG_IMPORT_OK / _INVALID / _ERR. */
int catalog_import_brands(parley_db *db, const json_t *doc, struct catalog_import_result *res);
/* Replaces brand_id's products with a products document's (above).
 * CATALOG_IMPORT_OK / _NO_BRAND (a disabled brand is found: its catalogue
 * can be prepared before it is enabled) / _INVALID / _ERR. */
int catalog_import_products(parley_db *db, const char *brand_id, const json_t *doc,
                            struct catalog_import_result *res);
/* Low-level steps of the import, inside the caller's transaction (both
 * backends): the brand a product id belongs to (0 found into
 * brand[64], 1 none, -1 error); deleting every product of brand_id (count
 * or -1); whether brand_id exists, disabled or not (0 yes, 1 no, -1 error). */
int catalog_product_owner(parley_db *db, const char *product_id, char brand[64]);
int catalog_products_delete_brand(parley_db *db, const char *brand_id);
int catalog_brand_exists(parley_db *db, const char *brand_id);
#endif
