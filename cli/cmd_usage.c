/* cmd_usage.c — parley usage and parley budget set (cli.h; docs/usage.md,
 * docs/cli.md). Core calls only: usage.h. */
#include "cli.h"
#include "usage.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

int cmd_usage(struct cli *c, int argc, char **argv)
{
    const char *user = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_flag(argv, i, "--json"))
            json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage(c, "unknown option '%s'", argv[i]);
        else if (!user)
            user = argv[i];
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    if (!user)
        user = "";
    int64_t now = now_ms();
    struct usage_status st;
    struct usage_day days[7];
    if (usage_status(c->db, user, c->cfg.token_budget_per_day, -1, now, &st) < 0 ||
        usage_days(c->db, user, now, 7, days) < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    char resets[32], date[16];
    usage_iso8601(st.reset_ms, resets);
    if (json) {
        json_t *d = json_array();
        for (int i = 0; d && i < 7; i++) {
            usage_date(days[i].day, date);
            json_array_append_new(d, json_pack("{s:s, s:I, s:I, s:I}", "date", date,
                                               "prompt_tokens", (json_int_t)days[i].prompt_tokens,
                                               "completion_tokens", (json_int_t)days[i].completion_tokens,
                                               "generations", (json_int_t)days[i].generations));
        }
        return cli_print_json(json_pack(
            "{s:s, s:{s:I, s:I, s:I, s:I}, s:I, s:s, s:o, s:b, s:s, s:o}", "user", user, "today",
            "tokens", (json_int_t)st.used, "prompt_tokens", (json_int_t)st.prompt_tokens,
            "completion_tokens", (json_int_t)st.completion_tokens, "generations",
            (json_int_t)st.generations, "budget", (json_int_t)st.budget, "source",
            usage_budget_source_name(st.source), "remaining",
            st.remaining >= 0 ? json_integer(st.remaining) : json_null(), "exhausted",
            st.exhausted, "resets_at", resets, "days", d));
    }
    printf("user: %s\n", user);
    printf("today: %lld tokens (%lld prompt, %lld completion) in %lld generations\n",
           (long long)st.used, (long long)st.prompt_tokens, (long long)st.completion_tokens,
           (long long)st.generations);
    if (st.budget > 0)
        printf("budget: %lld a day (%s), remaining %lld%s, resets at %s\n", (long long)st.budget,
               usage_budget_source_name(st.source), (long long)st.remaining,
               st.exhausted ? " (exhausted)" : "", resets);
    else
        printf("budget: unlimited (%s), resets at %s\n", usage_budget_source_name(st.source), resets);
    for (int i = 0; i < 7; i++) {
        usage_date(days[i].day, date);
        printf("%s %lld prompt %lld completion %lld generations\n", date,
               (long long)days[i].prompt_tokens, (long long)days[i].completion_tokens,
               (long long)days[i].generations);
    }
    return CLI_OK;
}

int cmd_budget_set(struct cli *c, int argc, char **argv)
{
    if (argc != 2)
        return cli_usage(c, "USER and TOKENS|default are required");
    const char *user = argv[0], *value = argv[1];
    int64_t tokens = -1;
    if (strcmp(value, "default") != 0) {
        long long v;
        if (value[0] < '0' || value[0] > '9' || cli_int(value, 0, 1000000000000000LL, &v) < 0) {
            fprintf(stderr, "parley: budget: TOKENS must be a whole number from 0 to 10^15 "
                            "(0: unlimited) or default, not '%s'\n", value);
            return CLI_USAGE;
        }
        tokens = v;
    }
    if (usage_budget_set(c->db, user, tokens, now_ms()) < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    if (tokens < 0)
        printf("%s: daily token budget back to the default\n", user);
    else if (tokens == 0)
        printf("%s: daily token budget unlimited\n", user);
    else
        printf("%s: daily token budget %lld tokens\n", user, (long long)tokens);
    return CLI_OK;
}
