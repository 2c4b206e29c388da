/* fuzz_catalog.c — the brands / products importer (core/catalog_import.c)
 * on a fresh database holding the seed 002 demo catalogue: byte 0 picks a
 * brands document (catalog_import_brands) or a products document for one
 * of the demo brands or an unknown one (catalog_import_products); the
 * rest is the JSON document (parsed as `parley brands import` reads a
 * file: any JSON value). Then a suggestion search on the result.
 * Oracle besides the sanitizers: a refused import (INVALID, NO_BRAND)
 * writes nothing: the brands list and a brand's suggestions are the same
 * before and after; INVALID always lists at least one problem. */
#include "proto_harness.h"

static char *brands_text(parley_db *db)
{
    json_t *l = catalog_brands_list(db);
    char *s = l ? json_dumps(l, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(l);
    return s;
}

static char *suggest_text(parley_db *db, const char *brand)
{
    json_t *out = NULL;
    double conf;
    if (catalog_suggest(db, brand, "laptop", 10, &out, &conf) != 0 || !out)
        return strdup("");
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(out);
    return s ? s : strdup("");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fzp_ready) {
        fz_config(&fzp_cfg);
        fzp_ready = 1;
    }
    if (size == 0)
        return 0;
    static const char *const brands[4] = { NULL, "techpro", "homestyle", "nosuch" };
    const char *brand = brands[data[0] & 3];
    json_t *doc = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!doc)
        return 0;
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &fzp_cfg);
    fzp_sample_catalog(ctx.db);
    char *b0 = brands_text(ctx.db), *s0 = suggest_text(ctx.db, "techpro");
    struct catalog_import_result res;
    memset(&res, 0, sizeof res);
    int rc = brand ? catalog_import_products(ctx.db, brand, doc, &res)
                   : catalog_import_brands(ctx.db, doc, &res);
    if (rc == CATALOG_IMPORT_INVALID && json_array_size(res.errors) == 0) {
        fprintf(stderr, "an invalid import without a problem listed\n");
        abort();
    }
    char *b1 = brands_text(ctx.db), *s1 = suggest_text(ctx.db, "techpro");
    if ((rc == CATALOG_IMPORT_INVALID || rc == CATALOG_IMPORT_NO_BRAND) &&
        (!b0 || !b1 || strcmp(b0, b1) != 0 || strcmp(s0, s1) != 0)) {
        fprintf(stderr, "a refused import (%d) changed the catalogue\n", rc);
        abort();
    }
    catalog_import_result_free(&res);
    free(b0);
    free(b1);
    free(s0);
    free(s1);
    json_decref(doc);
    fz_db_close(&ctx);
    return 0;
}
