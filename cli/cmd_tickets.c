/* cmd_tickets.c — parley tickets list/show/forget and parley sessions
 * list/purge (cli.h; docs/cli.md). Core calls only: housekeep.h,
 * store.h (tickets forget is what DELETE /api/tickets/{id}/ai does:
 * store_answer_delete_ticket), token_mint.h (durations). */
#include "cli.h"
#include "housekeep.h"
#include "store.h"
#include "token_mint.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

static long long jint(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* --limit N into *limit (1..10000). 1 taken, 0 not this option, or a
 * usage error's status (negative: -CLI_USAGE). */
static int limit_opt(struct cli *c, int argc, char **argv, int *i, const char *name, long long lo,
                     long long hi, long long *out)
{
    const char *v;
    int r = cli_value(argc, argv, i, name, &v);
    if (r == 0)
        return 0;
    if (r < 0 || cli_int(v, lo, hi, out) < 0)
        return -cli_usage(c, "%s takes a whole number from %lld to %lld", name, lo, hi);
    return 1;
}

int cmd_tickets_list(struct cli *c, int argc, char **argv)
{
    long long limit = 50, offset = 0;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        int r = limit_opt(c, argc, argv, &i, "--limit", 1, 10000, &limit);
        if (r == 0)
            r = limit_opt(c, argc, argv, &i, "--offset", 0, 2000000000, &offset);
        if (r < 0)
            return -r;
        if (r == 0) {
            if (cli_flag(argv, i, "--json"))
                json = 1;
            else
                return cli_usage(c, "unexpected argument '%s'", argv[i]);
        }
    }
    json_t *arr = hk_tickets_list(c->db, (int)limit, (int)offset);
    if (!arr)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (json)
        return cli_print_json(arr);
    printf("%-36s %-20s %10s %7s\n", "ID", "UPDATED", "BODY", "ANSWERS");
    size_t i;
    json_t *t;
    char at[24];
    json_array_foreach(arr, i, t)
        printf("%-36s %-20s %10lld %7lld\n", jstr(t, "id"), cli_time(jint(t, "updated_at"), at),
               jint(t, "body_bytes"), jint(t, "answers"));
    json_decref(arr);
    return CLI_OK;
}

/* One ID and maybe --json. */
static int id_args(struct cli *c, int argc, char **argv, int allow_json, const char **id, int *json)
{
    *id = NULL;
    *json = 0;
    for (int i = 0; i < argc; i++) {
        if (allow_json && cli_flag(argv, i, "--json"))
            *json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage(c, "unknown option '%s'", argv[i]);
        else if (!*id)
            *id = argv[i];
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    return *id ? 0 : cli_usage(c, "ID is missing");
}

int cmd_tickets_show(struct cli *c, int argc, char **argv)
{
    const char *id;
    int json, rc = id_args(c, argc, argv, 1, &id, &json);
    if (rc)
        return rc;
    json_t *t;
    int r = hk_ticket_show(c->db, id, &t);
    if (r < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (r > 0)
        return cli_fail(c, "no ticket '%s'", id);
    if (json)
        return cli_print_json(t);
    char a[24], b[24];
    printf("ticket %s\ncreated %s, updated %s, %lld events in its channel\n", jstr(t, "id"),
           cli_time(jint(t, "created_at"), a), cli_time(jint(t, "updated_at"), b), jint(t, "events"));
    printf("body:\n%s\n", jstr(t, "body"));
    size_t i;
    json_t *x;
    printf("cached answers: %zu\n", json_array_size(json_object_get(t, "answers")));
    json_array_foreach(json_object_get(t, "answers"), i, x) {
        json_t *tok = json_object_get(x, "tokens");
        char tokens[24];
        if (json_is_integer(tok))
            snprintf(tokens, sizeof tokens, "%lld", (long long)json_integer_value(tok));
        else
            strcpy(tokens, "?");
        printf("  %s  model %s, %lld bytes, %s tokens, %lld hits, %s\n", jstr(x, "key"),
               jstr(x, "model"), jint(x, "response_bytes"), tokens, jint(x, "hits"),
               cli_time(jint(x, "created_at"), a));
    }
    printf("generations: %zu\n", json_array_size(json_object_get(t, "jobs")));
    json_array_foreach(json_object_get(t, "jobs"), i, x) {
        json_t *fin = json_object_get(x, "finished_at");
        printf("  job %lld %s, started %s%s%s%s%s\n", jint(x, "id"), jstr(x, "state"),
               cli_time(jint(x, "created_at"), a), json_is_integer(fin) ? ", ended " : "",
               json_is_integer(fin) ? cli_time(json_integer_value(fin), b) : "",
               json_is_string(json_object_get(x, "error")) ? ": " : "", jstr(x, "error"));
    }
    json_decref(t);
    return CLI_OK;
}

int cmd_tickets_forget(struct cli *c, int argc, char **argv)
{
    const char *id;
    int json, rc = id_args(c, argc, argv, 0, &id, &json);
    if (rc)
        return rc;
    int n = store_answer_delete_ticket(c->db, id);
    if (n < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    printf("ticket %s: %d cached answer%s deleted\n", id, n, n == 1 ? "" : "s");
    return CLI_OK;
}

int cmd_sessions_list(struct cli *c, int argc, char **argv)
{
    long long limit = 50;
    const char *user = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        int r = limit_opt(c, argc, argv, &i, "--limit", 1, 10000, &limit);
        if (r < 0)
            return -r;
        if (r > 0)
            continue;
        r = cli_value(argc, argv, &i, "--user", &user);
        if (r < 0)
            return cli_usage(c, "--user needs a value");
        if (r > 0)
            continue;
        if (cli_flag(argv, i, "--json"))
            json = 1;
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    json_t *arr = hk_sessions_list(c->db, user, (int)limit);
    if (!arr)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (json)
        return cli_print_json(arr);
    printf("%-36s %-16s %-5s %-20s %8s %s\n", "ID", "USER", "KIND", "ACTIVE", "MESSAGES", "TITLE");
    size_t i;
    json_t *s;
    char at[24];
    json_array_foreach(arr, i, s)
        printf("%-36s %-16s %-5s %-20s %8lld %s\n", jstr(s, "id"), jstr(s, "user"), jstr(s, "kind"),
               cli_time(jint(s, "updated_at"), at), jint(s, "messages"), jstr(s, "title"));
    json_decref(arr);
    return CLI_OK;
}

int cmd_sessions_purge(struct cli *c, int argc, char **argv)
{
    const char *age = NULL, *user = NULL;
    for (int i = 0; i < argc; i++) {
        int r = cli_value(argc, argv, &i, "--older-than", &age);
        if (r == 0)
            r = cli_value(argc, argv, &i, "--user", &user);
        if (r < 0)
            return cli_usage(c, "%s needs a value", argv[i]);
        if (r == 0)
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    if (!age)
        return cli_usage(c, "--older-than AGE is required (e.g. 30d)");
    int64_t secs = token_duration_parse(age);
    if (secs < 0)
        return cli_usage(c, "--older-than: '%s' is not a duration (a number with s, m, h, d or w: 30d)",
                         age);
    int64_t n = hk_sessions_purge(c->db, user, now_ms() - secs * 1000);
    if (n < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    printf("deleted %lld conversation%s idle for more than %s%s%s\n", (long long)n,
           n == 1 ? "" : "s", age, user ? " of user " : "", user ? user : "");
    return CLI_OK;
}
