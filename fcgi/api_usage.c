/* api_usage.c — GET /api/usage (docs/usage.md) and the token_budget claim
 * for the fronts of parley.fcgi.
 *
 *   GET /api/usage[?days=N][&user=SUB]
 *   200 {"user", "date", "prompt_tokens", "completion_tokens", "tokens",
 *        "generations", "budget" (null: unlimited), "budget_source",
 *        "remaining" (null: unlimited), "exhausted", "resets_at",
 *        "days": [{"date", "prompt_tokens", "completion_tokens", "tokens",
 *                  "generations"}...] newest first, N days (default 7, 1-366)}
 *   ?user= another user's: only for a token with role "admin" (403
 *   otherwise); the budget shown for another user leaves out a claim (only
 *   that user's own token carries it).
 * Transport only: the numbers and the budget rules are core's (usage.h).
 * Runs in a parley.fcgi worker thread on the thread's database connection.
 */
#include "handlers.h"
#include "api_usage.h"
#include "auth.h"
#include "status.h"
#include "usage.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* The request's token: the Authorization header's, else ?token=. */
static const char *request_token(struct request *r, char *buf, size_t len)
{
    const char *tok = auth_bearer(r->authorization);
    return tok ? tok : req_query(r, "token", buf, len);
}

void request_claims(struct request *r, const char *token, struct proto_conn *c)
{
    const struct parley_config *cfg = r->ctx->cfg;
    char buf[4096], sub[128];
    int64_t budget = -1;
    int admin = 0;
    if (config_open_mode(cfg))
        return;
    if (!token || !*token)
        token = request_token(r, buf, sizeof buf);
    if (!token ||
        auth_verify_claims(cfg->jwt_secret, token, 0, sub, sizeof sub, &admin, &budget) != AUTH_OK ||
        strcmp(sub, c->user) != 0)
        return;
    c->admin = admin;                     /* may stop others' generations (docs/stop.md) */
    if (budget >= 0) {
        c->has_token_budget = 1;
        c->token_budget = budget;
    }
}

int h_usage(struct request *r)
{
    const struct parley_config *cfg = r->ctx->cfg;
    char buf[4096], sub[128], other[128];
    int admin = 0;
    int64_t claim = -1;
    const char *tok = request_token(r, buf, sizeof buf);
    if (!config_open_mode(cfg) && tok) {
        if (auth_verify_role(cfg->jwt_secret, tok, 0, sub, sizeof sub, &admin) != AUTH_OK ||
            strcmp(sub, r->user) != 0)
            admin = 0;
        else if (auth_verify_budget(cfg->jwt_secret, tok, 0, sub, sizeof sub, &claim) != AUTH_OK)
            claim = -1;
    }
    const char *user = r->user;
    const char *asked = req_query(r, "user", other, sizeof other);
    if (asked && strcmp(asked, r->user) != 0) {
        if (!admin)
            return res_error_kind(r, PERR_FORBIDDEN, "Only an admin (role claim) may read another user's usage");
        user = asked;
        claim = -1;                          /* that user's own token is not here */
    }
    long long ndays = 7;
    if (req_query_int(r, "days", 7, 1, USAGE_MAX_DAYS, &ndays) < 0)
        return res_error_kind(r, PERR_BAD_INPUT, "days must be an integer from 1 to %d", USAGE_MAX_DAYS);
    int64_t now = now_ms();
    struct usage_status st;
    static __thread struct usage_day days[USAGE_MAX_DAYS];
    if (usage_status(r->ctx->db, user, cfg->token_budget_per_day, claim, now, &st) < 0 ||
        usage_days(r->ctx->db, user, now, (int)ndays, days) < 0)
        return res_error_kind(r, db_err_kind(r->ctx->db), "%s",
                              db_err_text(r->ctx->db, "Database error"));
    json_t *list = json_array();
    for (int i = 0; list && i < (int)ndays; i++) {
        char date[16];
        usage_date(days[i].day, date);
        json_array_append_new(list, json_pack("{s:s, s:I, s:I, s:I, s:I}", "date", date,
                                              "prompt_tokens", (json_int_t)days[i].prompt_tokens,
                                              "completion_tokens", (json_int_t)days[i].completion_tokens,
                                              "tokens", (json_int_t)(days[i].prompt_tokens +
                                                                     days[i].completion_tokens),
                                              "generations", (json_int_t)days[i].generations));
    }
    char today[16], resets[32];
    usage_date(usage_day_of(now), today);
    usage_iso8601(st.reset_ms, resets);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:o, s:s, s:o, s:b, s:s, s:o}",
                          "user", user, "date", today,
                          "prompt_tokens", (json_int_t)st.prompt_tokens,
                          "completion_tokens", (json_int_t)st.completion_tokens,
                          "tokens", (json_int_t)st.used,
                          "generations", (json_int_t)st.generations,
                          "budget", st.budget > 0 ? json_integer(st.budget) : json_null(),
                          "budget_source", usage_budget_source_name(st.source),
                          "remaining", st.remaining >= 0 ? json_integer(st.remaining) : json_null(),
                          "exhausted", st.exhausted, "resets_at", resets,
                          "days", list ? list : json_array());
    if (!o)
        return res_error_kind(r, PERR_INTERNAL, "Out of memory");
    return res_json(r, 200, o);
}
