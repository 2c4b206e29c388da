/* cmd_stats.c — parley stats (cli.h; docs/cli.md): the overview of
 * stats_overview (core/stats.h, docs/admin.md) as a table, or --json as
 * is. Core calls only: stats.h. */
#include "cli.h"
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints o's members as "prefix.key value" lines, objects flattened, an
 * array of objects one line per item. */
static void print_flat(const char *prefix, json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v)) {
            print_flat(name, v);
        } else if (json_is_array(v)) {
            size_t i;
            json_t *x;
            if (json_array_size(v) == 0)
                printf("%-40s (none)\n", name);
            json_array_foreach(v, i, x) {
                char *s = json_dumps(x, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
                printf("%-40s %s\n", i == 0 ? name : "", s ? s : "?");
                free(s);
            }
        } else {
            char *s = json_dumps(v, JSON_ENCODE_ANY);
            printf("%-40s %s\n", name, s ? s : "?");
            free(s);
        }
    }
}

int cmd_stats(struct cli *c, int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_flag(argv, i, "--json"))
            json = 1;
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    json_t *o = NULL;
    if (stats_overview(c->db, &o) < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (json)
        return cli_print_json(o);
    print_flat("", o);
    json_decref(o);
    return CLI_OK;
}
