/* sample_catalog.h — the demo brands of seed 002 (techpro, homestyle,
 * retired and their products) for the unit tests that chat with them:
 * share/sample-catalog.json, imported as `make run` and `parley brands
 * import` do (catalog_import_brands). The migrations no longer insert
 * them. Unit tests run from the repository root (tests/run.sh), so the
 * relative path holds; PARLEY_SAMPLE_CATALOG names another file.
 * sample_catalog_import: 0, or -1 with the reason on stderr. Threads: the
 * caller's db. */
#ifndef PARLEY_TEST_SAMPLE_CATALOG_H
#define PARLEY_TEST_SAMPLE_CATALOG_H
#include <stdio.h>
#include <stdlib.h>
#include "catalog.h"

static inline int sample_catalog_import(parley_db *db)
{
    const char *path = getenv("PARLEY_SAMPLE_CATALOG");
    if (!path || !*path)
        path = "share/sample-catalog.json";
    json_t *doc;
    char err[600];
    if (catalog_read_json(path, &doc, err, sizeof err) < 0) {
        fprintf(stderr, "sample catalogue: %s\n", err);
        return -1;
    }
    struct catalog_import_result res;
    int rc = catalog_import_brands(db, doc, &res);
    json_decref(doc);
    if (rc != CATALOG_IMPORT_OK) {
        char *e = res.errors ? json_dumps(res.errors, 0) : NULL;
        fprintf(stderr, "sample catalogue: import failed (%d): %s\n", rc,
                e ? e : db_errmsg(db));
        free(e);
    }
    catalog_import_result_free(&res);
    return rc == CATALOG_IMPORT_OK ? 0 : -1;
}
#endif
