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
 * Also the claims helpers of the other handlers (api_usage.h): a
 * connection's claims (request_claims) and a ticket's stored id for the
 * request's tenant (api_ticket_stored).
 * Runs in a parley.fcgi worker thread on the thread's database connection.
 */
#include "handlers.h"
#include "api_usage.h"
#include "auth.h"
#include "ident.h"
#include "status.h"
#include "usage.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

void request_claims(struct request *r, const char *token, struct proto_conn *c)
{
    const struct parley_config *cfg = r->ctx->cfg;
    struct auth_claims cl;
    if (config_open_mode(cfg))
        return;
    if (!token || !*token) {
        if (!r->has_claims)               /* no token, or a visitor */
            return;
        cl = r->claims;                   /* the dispatcher's one verification */
    } else if (auth_verify_config(cfg, token, 0, &cl) != AUTH_OK) {
        return;
    }
    if (strcmp(cl.sub, c->user) != 0)
        return;
    c->admin = cl.admin;                  /* may stop others' generations (docs/stop.md) */
    if (cl.token_budget >= 0) {
        c->has_token_budget = 1;
        c->token_budget = cl.token_budget;
    }
}

const char *api_ticket_stored(struct request *r, char *out)
{
    const struct parley_config *cfg = r->ctx->cfg;
    char scope[IDENT_SCOPE_LEN + 1] = "";
    if (cfg->tenant_claim && *cfg->tenant_claim) {
        if (!r->has_claims || !r->claims.tenant[0]) {
            res_error_kind(r, PERR_FORBIDDEN, "Forbidden: tickets are per tenant and the token "
                           "has no %.64s claim (PARLEY_TENANT_CLAIM)", cfg->tenant_claim);
            return NULL;
        }
        ident_tenant_scope(r->claims.tenant, scope);
    }
    if (!ident_ticket_stored(out, IDENT_TICKET_STORED_MAX, r->params[0], scope)) {
        res_error_kind(r, PERR_BAD_INPUT, "Invalid ticket id: " IDENT_TICKET_ID_RULE);
        return NULL;
    }
    return out;
}

int h_usage(struct request *r)
{
    const struct parley_config *cfg = r->ctx->cfg;
    char other[128];
    /* the claims of the token the dispatcher verified (none: a visitor,
     * open mode) */
    int ok = !config_open_mode(cfg) && r->has_claims && !strcmp(r->claims.sub, r->user);
    int admin = ok && r->claims.admin;
    int64_t claim = ok ? r->claims.token_budget : -1;
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
