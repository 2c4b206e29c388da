/* cmd_kb.c — parley kb import/list/remove (cli.h; docs/knowledge-base.md,
 * docs/cli.md). Core calls only: kb.h. */
#include "cli.h"
#include "kb.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each file in its own transaction; goes on after a refused file. */
int cmd_kb_import(struct cli *c, int argc, char **argv)
{
    if (argc == 0)
        return cli_usage(c, "FILE is missing");
    int failed = 0;
    for (int i = 0; i < argc; i++) {
        char err[512];
        int n = 0;
        if (kb_import_file(c->db, argv[i], &n, err, sizeof err) == KB_OK) {
            printf("%s: %d passage%s\n", argv[i], n, n == 1 ? "" : "s");
        } else {
            cli_fail(c, "%s", err);
            failed = 1;
        }
    }
    return failed ? CLI_FAIL : CLI_OK;
}

int cmd_kb_list(struct cli *c, int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_flag(argv, i, "--json"))
            json = 1;
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    struct kb_entry *e;
    int n;
    if (kb_list(c->db, NULL, &e, &n) != KB_OK)
        return cli_fail(c, "%s", db_err_text(c->db, "database error"));
    if (json) {
        json_t *arr = json_array();
        for (int i = 0; arr && i < n; i++)
            if (json_array_append_new(arr, json_pack("{s:I, s:s, s:i, s:I, s:s}", "id",
                                                     (json_int_t)e[i].id, "source", e[i].source,
                                                     "seq", e[i].seq, "bytes", (json_int_t)e[i].bytes,
                                                     "title", e[i].title)) < 0) {
                json_decref(arr);
                arr = NULL;
            }
        kb_entries_free(e, n);
        return cli_print_json(arr);
    }
    int files = 0;
    for (int i = 0; i < n; i++) {
        if (i == 0 || strcmp(e[i].source, e[i - 1].source) != 0)
            files++;
        printf("%lld\t%s\t%d\t%lld\t%s\n", (long long)e[i].id, e[i].source, e[i].seq,
               (long long)e[i].bytes, e[i].title);
    }
    fprintf(stderr, "parley: %d passage%s from %d file%s\n", n, n == 1 ? "" : "s", files,
            files == 1 ? "" : "s");
    kb_entries_free(e, n);
    return CLI_OK;
}

/* A number is a passage id, anything else the file name kb list shows. */
int cmd_kb_remove(struct cli *c, int argc, char **argv)
{
    if (argc != 1)
        return cli_usage(c, argc ? "one NAME or ID only" : "NAME or ID is missing");
    const char *what = argv[0];
    int digits = *what != '\0';
    for (const char *p = what; *p; p++)
        if (!isdigit((unsigned char)*p))
            digits = 0;
    int rc, n = 0;
    if (digits) {
        errno = 0;
        long long id = strtoll(what, NULL, 10);
        rc = errno ? KB_NOT_FOUND : kb_remove_id(c->db, id);
        n = rc == KB_OK;
    } else {
        rc = kb_remove_source(c->db, what, &n);
    }
    if (rc == KB_ERR)
        return cli_fail(c, "%s", db_err_text(c->db, "database error"));
    if (rc == KB_NOT_FOUND)
        return cli_fail(c, "no %s %s in the knowledge base", digits ? "passage" : "file", what);
    printf("removed %d passage%s\n", n, n == 1 ? "" : "s");
    return CLI_OK;
}
