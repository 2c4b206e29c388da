/* cmd_keys.c — parley keys create / list / revoke: the API keys of the
 * OpenAI-compatible endpoint (cli.h; docs/openai.md, docs/cli.md). Core
 * calls only: openai_store.h (the key is stored as its SHA-256 and shown
 * once, here). */
#include "cli.h"
#include "openai_store.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

int cmd_keys_create(struct cli *c, int argc, char **argv)
{
    const char *user = NULL, *name = NULL;
    for (int i = 0; i < argc; i++) {
        int v = cli_value(argc, argv, &i, "--user", &user);
        if (v == 0)
            v = cli_value(argc, argv, &i, "--name", &name);
        if (v < 0)
            return cli_usage(c, "option '%s' needs a value", argv[i]);
        if (v == 0)
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    if (!user || !*user)
        return cli_usage(c, "--user USER is required");
    if (strlen(user) >= 128 || (name && strlen(name) >= 128))
        return cli_usage(c, "USER and NAME must be shorter than 128 bytes");
    char key[OAI_KEY_LEN + 1], id[OAI_KEY_ID_LEN + 1];
    if (apikey_create(c->db, user, name, now_ms(), key, id) < 0)
        return cli_fail(c, "could not create the key: %s", db_errmsg(c->db));
    printf("%s\n", key);
    fprintf(stderr, "parley: key %s for user %s created; it is shown only this once\n", id,
            user);
    return CLI_OK;
}

int cmd_keys_list(struct cli *c, int argc, char **argv)
{
    const char *user = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_flag(argv, i, "--json")) {
            json = 1;
            continue;
        }
        int v = cli_value(argc, argv, &i, "--user", &user);
        if (v < 0)
            return cli_usage(c, "option '%s' needs a value", argv[i]);
        if (v == 0)
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    json_t *keys = NULL;
    if (apikey_list(c->db, user, &keys) < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (json)
        return cli_print_json(keys);
    printf("%-20s  %-16s  %-20s  %-20s  %-20s  %s\n", "ID", "PREFIX", "USER", "CREATED",
           "REVOKED", "NAME");
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k) {
        char cr[24], rv[24];
        json_t *r = json_object_get(k, "revoked_at");
        printf("%-20s  %-16s  %-20s  %-20s  %-20s  %s\n",
               json_string_value(json_object_get(k, "id")),
               json_string_value(json_object_get(k, "prefix")),
               json_string_value(json_object_get(k, "user")),
               cli_time(json_integer_value(json_object_get(k, "created_at")), cr),
               json_is_integer(r) ? cli_time(json_integer_value(r), rv) : "-",
               json_string_value(json_object_get(k, "name")));
    }
    json_decref(keys);
    return CLI_OK;
}

int cmd_keys_revoke(struct cli *c, int argc, char **argv)
{
    if (argc != 1 || argv[0][0] == '-')
        return cli_usage(c, argc ? "unexpected argument '%s'" : "the key's ID is required",
                         argc ? argv[argc > 1 ? 1 : 0] : "");
    int r = apikey_revoke(c->db, argv[0], now_ms());
    if (r < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (r == 1)
        return cli_fail(c, "no active key %s", argv[0]);
    printf("revoked %s\n", argv[0]);
    return CLI_OK;
}
