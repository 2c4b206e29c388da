/* catalog_import.c — importing a brand catalogue or one brand's products
 * from a JSON document (contract: catalog.h, "catalogue import"; used by
 * `parley brands import` and `parley products import`, docs/cli.md).
 *
 * Two passes: every record is checked without the database (types,
 * required and unknown fields, ids), then one transaction writes
 * everything through catalog.c's storage calls (both backends), checking
 * on the way that no product id belongs to a brand the import does not
 * replace; any problem rolls it all back. No SQL here.
 * Threads: the caller's parley_db (one thread at a time); catalog_read_json
 * is any thread.
 */
#include "catalog.h"
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ERRORS 100        /* problems reported; the rest are counted */
#define MAX_ID_BYTES 128      /* a product id */

struct checker {
    json_t *errors;           /* array of strings */
    int dropped;              /* problems past MAX_ERRORS */
};

static void problem(struct checker *ck, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct checker *ck, const char *where, const char *fmt, ...)
{
    if (json_array_size(ck->errors) >= MAX_ERRORS) {
        ck->dropped++;
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[1024];
    snprintf(line, sizeof line, "%s: %s", where, msg);
    json_array_append_new(ck->errors, json_string(line));
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "something else";
}

/* "products[3] (laptop-004)" into buf: the record's index in its array and
 * its id when it has a string one (cut to 64 bytes on a character). */
static void record_name(char *buf, size_t len, const char *prefix, const char *array, size_t i,
                        const json_t *rec)
{
    const char *id = json_is_object(rec) ? json_string_value(json_object_get(rec, "id")) : NULL;
    if (id && *id)
        snprintf(buf, len, "%s%s[%zu] (%.*s)", prefix, array, i, utf8_cut(id, 64), id);
    else
        snprintf(buf, len, "%s%s[%zu]", prefix, array, i);
}

/* 1 when s is valid text for a stored field: no NUL (jansson allows it
 * in strings; json_string_value would cut there) and no control
 * characters other than tab and newlines in free text. */
static int text_ok(const json_t *v, int free_text)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) != json_string_length(v))
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 && !(free_text && (*p == '\t' || *p == '\n' || *p == '\r')))
            return 0;
    return 1;
}

/* A string field: required (must be there and non-empty) or optional. */
static void check_string(struct checker *ck, const char *where, const json_t *rec,
                         const char *field, int required, int free_text)
{
    const json_t *v = json_object_get(rec, field);
    char w[300];
    snprintf(w, sizeof w, "%s: %s", where, field);
    if (!v) {
        if (required)
            problem(ck, w, "missing (a non-empty string is required)");
        return;
    }
    if (!json_is_string(v))
        problem(ck, w, "must be a string, got %s", type_name(v));
    else if (!text_ok(v, free_text))
        problem(ck, w, "must not contain control characters%s", free_text ? " (other than tab and newlines)" : "");
    else if (required && json_string_length(v) == 0)
        problem(ck, w, "must not be empty");
}

static void check_bool(struct checker *ck, const char *where, const json_t *rec, const char *field)
{
    const json_t *v = json_object_get(rec, field);
    if (v && !json_is_boolean(v)) {
        char w[300];
        snprintf(w, sizeof w, "%s: %s", where, field);
        problem(ck, w, "must be true or false, got %s", type_name(v));
    }
}

static void check_unknown(struct checker *ck, const char *where, const json_t *rec,
                          const char *const *known)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)rec, k, v) {
        int found = 0;
        for (int i = 0; known[i]; i++)
            found |= !strcmp(k, known[i]);
        if (!found)
            problem(ck, where, "unknown field '%.*s'", utf8_cut(k, 64), k);
    }
}

/* 1 when id is 1-63 bytes of letters, digits, '-', '_', '.' (it goes into
 * the path /ws/chat/{brand_id}). */
static int brand_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 63)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static const char *const PRODUCT_FIELDS[] = {
    "id", "name", "description", "category", "price", "features", "specifications",
    "availability", NULL
};
static const char *const BRAND_FIELDS[] = {
    "id", "name", "welcome", "system_prompt", "active", "products", NULL
};

/* Checks one product record; seen collects ids over the whole document. */
static void check_product(struct checker *ck, const char *where, const json_t *p, json_t *seen)
{
    if (!json_is_object(p)) {
        problem(ck, where, "must be an object, got %s", type_name(p));
        return;
    }
    check_unknown(ck, where, p, PRODUCT_FIELDS);
    check_string(ck, where, p, "id", 1, 0);
    check_string(ck, where, p, "name", 1, 1);
    check_string(ck, where, p, "description", 0, 1);
    check_string(ck, where, p, "category", 0, 1);
    check_bool(ck, where, p, "availability");
    char w[300];
    const char *id = json_string_value(json_object_get(p, "id"));
    if (id && strlen(id) > MAX_ID_BYTES) {
        snprintf(w, sizeof w, "%s: id", where);
        problem(ck, w, "must be at most %d bytes, got %zu", MAX_ID_BYTES, strlen(id));
    } else if (id && *id) {
        if (json_object_get(seen, id)) {
            snprintf(w, sizeof w, "%s: id", where);
            problem(ck, w, "'%.*s' appears twice in the file (first at %s)", utf8_cut(id, 64), id,
                    json_string_value(json_object_get(seen, id)));
        } else {
            json_object_set_new(seen, id, json_string(where));
        }
    }
    const json_t *price = json_object_get(p, "price");
    snprintf(w, sizeof w, "%s: price", where);
    if (!price)
        problem(ck, w, "missing (a number >= 0 is required)");
    else if (!json_is_number(price))
        problem(ck, w, "must be a number >= 0, got %s", type_name(price));
    else if (!isfinite(json_number_value(price)) || json_number_value(price) < 0)
        problem(ck, w, "must be a number >= 0, got %g", json_number_value(price));
    const json_t *f = json_object_get(p, "features");
    snprintf(w, sizeof w, "%s: features", where);
    if (f && !json_is_array(f)) {
        problem(ck, w, "must be an array of strings, got %s", type_name(f));
    } else if (f) {
        size_t i;
        json_t *v;
        json_array_foreach(f, i, v)
            if (!json_is_string(v) || !text_ok(v, 1)) {
                problem(ck, w, "item %zu must be a string without control characters, got %s", i,
                        type_name(v));
                break;
            }
    }
    const json_t *s = json_object_get(p, "specifications");
    if (s && !json_is_object(s)) {
        snprintf(w, sizeof w, "%s: specifications", where);
        problem(ck, w, "must be an object, got %s", type_name(s));
    }
}

/* The array of records in doc: doc itself, or doc[key]. NULL with a
 * problem recorded otherwise. */
static const json_t *records(struct checker *ck, const json_t *doc, const char *key)
{
    if (json_is_array(doc))
        return doc;
    const json_t *a = json_is_object(doc) ? json_object_get(doc, key) : NULL;
    if (json_is_array(a)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)doc, k, v)
            if (strcmp(k, key) != 0)
                problem(ck, "document", "unknown field '%.*s' (only \"%s\")", utf8_cut(k, 64), k, key);
        return a;
    }
    problem(ck, "document", "must be an array of %s or an object {\"%s\": [...]}, got %s", key, key,
            doc ? type_name(doc) : "nothing");
    return NULL;
}

/* Writes one product record (checked) of brand_id. 0 / -1. */
static int put_product(parley_db *db, const char *brand_id, const json_t *rec)
{
    const json_t *f = json_object_get(rec, "features"), *s = json_object_get(rec, "specifications");
    char *features = f ? json_dumps(f, JSON_COMPACT) : NULL;
    char *specs = s ? json_dumps(s, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    const json_t *av = json_object_get(rec, "availability");
    struct product p = {
        .id = json_string_value(json_object_get(rec, "id")),
        .brand_id = brand_id,
        .name = json_string_value(json_object_get(rec, "name")),
        .description = json_string_value(json_object_get(rec, "description")),
        .category = json_string_value(json_object_get(rec, "category")),
        .price = json_number_value(json_object_get(rec, "price")),
        .features = features,
        .specifications = specs,
        .available = av ? json_is_true(av) : 1,
    };
    int rc = (f && !features) || (s && !specs) ? -1 : catalog_product_put(db, &p);
    free(features);
    free(specs);
    return rc;
}

/* Inside the transaction: refuses (a problem) a product id that belongs to
 * a brand whose products this import does not replace (replaced: object
 * of brand ids). 0 fine or a problem recorded, -1 database error. */
static int check_owner(parley_db *db, struct checker *ck, const char *where, const json_t *rec,
                       const char *brand_id)
{
    char owner[64];
    const char *id = json_string_value(json_object_get(rec, "id"));
    int r = catalog_product_owner(db, id, owner);
    if (r < 0)
        return -1;
    if (r == 0 && strcmp(owner, brand_id) != 0) {
        char w[300];
        snprintf(w, sizeof w, "%s: id", where);
        problem(ck, w, "'%.*s' is a product of brand '%s' (product ids are unique over all brands)",
                utf8_cut(id, 64), id, owner);
    }
    return 0;
}

static void result_reset(struct catalog_import_result *res)
{
    memset(res, 0, sizeof *res);
}

void catalog_import_result_free(struct catalog_import_result *res)
{
    if (!res)
        return;
    json_decref(res->errors);
    res->errors = NULL;
}

/* Ends a failed check pass: the problems go to res. */
static int invalid(struct checker *ck, struct catalog_import_result *res)
{
    if (ck->dropped) {
        char more[64];
        snprintf(more, sizeof more, "... and %d more problem%s", ck->dropped, ck->dropped == 1 ? "" : "s");
        json_array_append_new(ck->errors, json_string(more));
    }
    res->errors = ck->errors;
    ck->errors = NULL;
    return CATALOG_IMPORT_INVALID;
}

int catalog_import_products(parley_db *db, const char *brand_id, const json_t *doc,
                            struct catalog_import_result *res)
{
    result_reset(res);
    struct checker ck = { json_array(), 0 };
    json_t *seen = json_object();
    if (!ck.errors || !seen) {
        json_decref(ck.errors);
        json_decref(seen);
        return CATALOG_IMPORT_ERR;
    }
    const json_t *arr = records(&ck, doc, "products");
    size_t i;
    json_t *rec;
    char where[160];
    json_array_foreach(arr, i, rec) {
        record_name(where, sizeof where, "", "products", i, rec);
        check_product(&ck, where, rec, seen);
    }
    json_decref(seen);
    if (json_array_size(ck.errors) > 0)
        return invalid(&ck, res);
    int rc = CATALOG_IMPORT_ERR;
    if (db_begin(db) < 0)
        goto out;
    int e = catalog_brand_exists(db, brand_id);
    if (e != 0) {
        db_rollback(db);
        rc = e > 0 ? CATALOG_IMPORT_NO_BRAND : CATALOG_IMPORT_ERR;
        goto out;
    }
    int n = catalog_products_delete_brand(db, brand_id);
    if (n < 0)
        goto fail;
    res->replaced = n;
    json_array_foreach(arr, i, rec) {
        record_name(where, sizeof where, "", "products", i, rec);
        if (check_owner(db, &ck, where, rec, brand_id) < 0)
            goto fail;
    }
    if (json_array_size(ck.errors) > 0) {
        db_rollback(db);
        res->replaced = 0;
        return invalid(&ck, res);
    }
    json_array_foreach(arr, i, rec) {
        if (put_product(db, brand_id, rec) < 0)
            goto fail;
        res->products++;
    }
    if (db_commit(db) < 0)
        goto fail_done;
    rc = CATALOG_IMPORT_OK;
    goto out;
fail:
    db_rollback(db);
fail_done:
    res->products = res->replaced = 0;
out:
    json_decref(ck.errors);
    return rc;
}

int catalog_import_brands(parley_db *db, const json_t *doc, struct catalog_import_result *res)
{
    result_reset(res);
    struct checker ck = { json_array(), 0 };
    json_t *seen = json_object(), *brand_ids = json_object();
    if (!ck.errors || !seen || !brand_ids) {
        json_decref(ck.errors);
        json_decref(seen);
        json_decref(brand_ids);
        return CATALOG_IMPORT_ERR;
    }
    const json_t *arr = records(&ck, doc, "brands");
    size_t i, j;
    json_t *b, *p;
    char where[160], pwhere[330];
    json_array_foreach(arr, i, b) {
        record_name(where, sizeof where, "", "brands", i, b);
        if (!json_is_object(b)) {
            problem(&ck, where, "must be an object, got %s", type_name(b));
            continue;
        }
        check_unknown(&ck, where, b, BRAND_FIELDS);
        check_string(&ck, where, b, "id", 1, 0);
        check_string(&ck, where, b, "name", 1, 1);
        check_string(&ck, where, b, "welcome", 0, 1);
        check_string(&ck, where, b, "system_prompt", 0, 1);
        check_bool(&ck, where, b, "active");
        const char *id = json_string_value(json_object_get(b, "id"));
        char w[300];
        snprintf(w, sizeof w, "%s: id", where);
        if (id && *id && !brand_id_ok(id))
            problem(&ck, w, "must be 1 to 63 letters, digits, '-', '_' or '.'");
        else if (id && *id && json_object_get(brand_ids, id))
            problem(&ck, w, "'%s' appears twice in the file", id);
        else if (id && *id)
            json_object_set_new(brand_ids, id, json_true());
        const json_t *prods = json_object_get(b, "products");
        if (prods && !json_is_array(prods)) {
            snprintf(w, sizeof w, "%s: products", where);
            problem(&ck, w, "must be an array of products, got %s", type_name(prods));
            continue;
        }
        json_array_foreach(prods, j, p) {
            char sub[200];
            snprintf(sub, sizeof sub, "%s: ", where);
            record_name(pwhere, sizeof pwhere, sub, "products", j, p);
            check_product(&ck, pwhere, p, seen);
        }
    }
    json_decref(seen);
    json_decref(brand_ids);
    if (json_array_size(ck.errors) > 0)
        return invalid(&ck, res);
    int rc = CATALOG_IMPORT_ERR;
    if (db_begin(db) < 0)
        goto out;
    /* Brands first, then the old products of every brand that lists its
     * own, then the owner check and the new products: a product may move
     * between two brands of the file. */
    json_array_foreach(arr, i, b) {
        const json_t *active = json_object_get(b, "active");
        struct brand br = { .name = (char *)json_string_value(json_object_get(b, "name")),
                            .welcome = (char *)json_string_value(json_object_get(b, "welcome")),
                            .system_prompt = (char *)json_string_value(json_object_get(b, "system_prompt")),
                            .active = active ? json_is_true(active) : 1 };
        str_copy(br.id, sizeof br.id, json_string_value(json_object_get(b, "id")));
        if (catalog_brand_put(db, &br) < 0)
            goto fail;
        res->brands++;
    }
    json_array_foreach(arr, i, b) {
        if (!json_object_get(b, "products"))
            continue;
        int n = catalog_products_delete_brand(db, json_string_value(json_object_get(b, "id")));
        if (n < 0)
            goto fail;
        res->replaced += n;
    }
    json_array_foreach(arr, i, b) {
        const char *bid = json_string_value(json_object_get(b, "id"));
        record_name(where, sizeof where, "", "brands", i, b);
        json_array_foreach(json_object_get(b, "products"), j, p) {
            char sub[200];
            snprintf(sub, sizeof sub, "%s: ", where);
            record_name(pwhere, sizeof pwhere, sub, "products", j, p);
            if (check_owner(db, &ck, pwhere, p, bid) < 0)
                goto fail;
        }
    }
    if (json_array_size(ck.errors) > 0) {
        db_rollback(db);
        result_reset(res);
        return invalid(&ck, res);
    }
    json_array_foreach(arr, i, b) {
        const char *bid = json_string_value(json_object_get(b, "id"));
        json_array_foreach(json_object_get(b, "products"), j, p) {
            if (put_product(db, bid, p) < 0)
                goto fail;
            res->products++;
        }
    }
    if (db_commit(db) < 0)
        goto fail_done;
    rc = CATALOG_IMPORT_OK;
    goto out;
fail:
    db_rollback(db);
fail_done:
    res->brands = res->products = res->replaced = 0;
out:
    json_decref(ck.errors);
    return rc;
}

int catalog_read_json(const char *path, json_t **doc, char *err, size_t errlen)
{
    json_error_t je;
    *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (*doc)
        return 0;
    if (je.line <= 0)
        snprintf(err, errlen, "%s: %s", path, je.text);
    else
        snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return -1;
}
