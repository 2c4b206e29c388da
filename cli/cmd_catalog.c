/* cmd_catalog.c — parley brands import/list/disable/enable and parley
 * products import (cli.h; docs/cli.md). Core calls only: catalog.h. */
#include "catalog.h"
#include "cli.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* Reads --json and exactly nwant positional arguments into pos. 0, or a
 * usage error's exit status. */
static int args(struct cli *c, int argc, char **argv, int allow_json, int *json, int nwant,
                const char **pos, const char *names)
{
    int n = 0;
    if (json)
        *json = 0;
    for (int i = 0; i < argc; i++) {
        if (allow_json && cli_flag(argv, i, "--json"))
            *json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage(c, "unknown option '%s'", argv[i]);
        else if (n < nwant)
            pos[n++] = argv[i];
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    if (n < nwant)
        return cli_usage(c, "%s missing", names);
    return 0;
}

/* Prints an import's refusal (every problem) or its database error. */
static int import_failed(struct cli *c, const char *file, int rc, struct catalog_import_result *res)
{
    if (rc == CATALOG_IMPORT_INVALID) {
        size_t i;
        json_t *e;
        json_array_foreach(res->errors, i, e)
            fprintf(stderr, "parley: %s: %s\n", file, json_string_value(e));
        fprintf(stderr, "parley: %s: refused (%zu problem%s): nothing was changed\n", file,
                json_array_size(res->errors), json_array_size(res->errors) == 1 ? "" : "s");
        catalog_import_result_free(res);
        return CLI_FAIL;
    }
    catalog_import_result_free(res);
    return cli_fail(c, "%s: %s (nothing was changed)", file, db_errmsg(c->db));
}

int cmd_brands_import(struct cli *c, int argc, char **argv)
{
    const char *file;
    int rc = args(c, argc, argv, 0, NULL, 1, &file, "FILE");
    if (rc)
        return rc;
    json_t *doc;
    char err[600];
    if (catalog_read_json(file, &doc, err, sizeof err) < 0)
        return cli_fail(c, "%s", err);
    struct catalog_import_result res;
    rc = catalog_import_brands(c->db, doc, &res);
    json_decref(doc);
    if (rc != CATALOG_IMPORT_OK)
        return import_failed(c, file, rc, &res);
    printf("%s: %d brand%s, %d product%s (%d replaced)\n", file, res.brands,
           res.brands == 1 ? "" : "s", res.products, res.products == 1 ? "" : "s", res.replaced);
    catalog_import_result_free(&res);
    return CLI_OK;
}

int cmd_products_import(struct cli *c, int argc, char **argv)
{
    const char *pos[2];
    int rc = args(c, argc, argv, 0, NULL, 2, pos, "BRAND and FILE");
    if (rc)
        return rc;
    json_t *doc;
    char err[600];
    if (catalog_read_json(pos[1], &doc, err, sizeof err) < 0)
        return cli_fail(c, "%s", err);
    struct catalog_import_result res;
    rc = catalog_import_products(c->db, pos[0], doc, &res);
    json_decref(doc);
    if (rc == CATALOG_IMPORT_NO_BRAND)
        return cli_fail(c, "no brand '%s' (parley brands list; parley brands import creates one)",
                        pos[0]);
    if (rc != CATALOG_IMPORT_OK)
        return import_failed(c, pos[1], rc, &res);
    printf("%s: brand %s now has %d product%s (%d before)\n", pos[1], pos[0], res.products,
           res.products == 1 ? "" : "s", res.replaced);
    catalog_import_result_free(&res);
    return CLI_OK;
}

int cmd_brands_list(struct cli *c, int argc, char **argv)
{
    int json;
    int rc = args(c, argc, argv, 1, &json, 0, NULL, "");
    if (rc)
        return rc;
    json_t *arr = catalog_brands_list(c->db);
    if (!arr)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (json)
        return cli_print_json(arr);
    printf("%-24s %-9s %-9s %s\n", "ID", "SERVED", "PRODUCTS", "NAME");
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b) {
        const char *state = json_is_true(json_object_get(b, "served")) ? "yes"
                            : json_is_true(json_object_get(b, "disabled")) ? "disabled" : "inactive";
        char prods[32];
        snprintf(prods, sizeof prods, "%lld/%lld",
                 (long long)json_integer_value(json_object_get(b, "available")),
                 (long long)json_integer_value(json_object_get(b, "products")));
        printf("%-24s %-9s %-9s %s\n", json_string_value(json_object_get(b, "id")), state, prods,
               json_string_value(json_object_get(b, "name")));
    }
    json_decref(arr);
    return CLI_OK;
}

static int set_disabled(struct cli *c, int argc, char **argv, int disabled)
{
    const char *id;
    int rc = args(c, argc, argv, 0, NULL, 1, &id, "ID");
    if (rc)
        return rc;
    int r = catalog_brand_set_disabled(c->db, id, disabled, now_ms());
    if (r < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (r > 0)
        return cli_fail(c, "no brand '%s' (parley brands list)", id);
    if (disabled) {
        printf("brand %s disabled: no longer served\n", id);
        return CLI_OK;
    }
    struct brand b;
    int g = catalog_brand_get(c->db, id, &b);
    int served = g == 0 && b.active;
    catalog_brand_free(&b);
    printf("brand %s enabled%s\n", id, g < 0 || served ? ""
           : " (its catalogue says \"active\": false: still not served)");
    return CLI_OK;
}

int cmd_brands_disable(struct cli *c, int argc, char **argv)
{
    return set_disabled(c, argc, argv, 1);
}

int cmd_brands_enable(struct cli *c, int argc, char **argv)
{
    return set_disabled(c, argc, argv, 0);
}
