/* auth.h — HS256 JWT verification (libjwt) and the claims it carries.
 *
 * Rejected: tokens over AUTH_MAX_TOKEN bytes, malformed tokens, any alg
 * but HS256 (alg "none" included), a "crit" header parameter (RFC 7515
 * §4.1.11: we implement no extension, so any is unknown), bad signatures,
 * expired tokens (exp in the past, with 30 s leeway), tokens not yet valid
 * (nbf), tokens without exp when the policy requires one
 * (PARLEY_JWT_REQUIRE_EXP), tokens without a non-empty string "sub", and
 * tokens whose sub starts with "anon:" (an anonymous visitor's id,
 * visitor.h).
 * The fronts call auth_verify_config once per request or connection: it
 * gives every claim Parley reads (struct auth_claims).
 * Threads: stateless, thread-safe. Never logs the token or the secret.
 */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H
#include <stddef.h>
#include <stdint.h>

struct parley_config;

/* Longest token accepted, in bytes (blanks around it not counted): a
 * longer one is AUTH_TOO_LONG without being parsed. Below the 8 KB that
 * Apache (LimitRequestFieldSize 8190) and lighttpd
 * (server.max-request-field-size 8192) allow for request headers, so
 * that a too long token reaches Parley and gets its 401 (docs/configuration.md). */
#define AUTH_MAX_TOKEN 4096

enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,      /* no token given while a secret is configured */
    AUTH_MALFORMED,
    AUTH_BAD_ALG,
    AUTH_BAD_SIGNATURE,
    AUTH_EXPIRED,
    AUTH_NOT_YET_VALID,
    AUTH_NO_SUBJECT,
    AUTH_CRIT,         /* a "crit" header parameter (RFC 7515: none is understood) */
    AUTH_NO_EXP,       /* no "exp" while the policy requires one */
    AUTH_TOO_LONG      /* longer than AUTH_MAX_TOKEN bytes */
};

/* Everything a verified token says that Parley reads. */
struct auth_claims {
    char sub[128];         /* the user id ("" in open mode) */
    int admin;             /* "role": "admin" (docs/stop.md, docs/usage.md) */
    int64_t token_budget;  /* "token_budget" (docs/usage.md); -1: none */
    char tenant[128];      /* the string value of the claim PARLEY_TENANT_CLAIM names
                              (docs/tenants.md); "": no such setting, or the claim is
                              absent, not a string, empty or 128 bytes or longer */
    int ticket_admin;      /* the token satisfies PARLEY_ADMIN_CLAIM (docs/tenants.md);
                              0 when that setting is unset */
};

/* How tokens are checked: what auth_verify_config reads of the settings. */
struct auth_policy {
    const char *secret;        /* NULL or "": open mode */
    int require_exp;           /* refuse tokens without "exp" (AUTH_NO_EXP) */
    const char *tenant_claim;  /* claim read into claims->tenant; NULL: none */
    const char *admin_claim;   /* "name" (the claim must be true) or "name=value" (a
                                  string equal to value, or an array holding it);
                                  NULL: none */
};

/* The one verification every front runs: token against policy p at time
 * now (unix seconds; 0 = now). On AUTH_OK *out (may be NULL) is filled;
 * on anything else it is zeroed (token_budget -1). Open mode (no secret):
 * AUTH_OK with empty claims whatever the token. Thread-safe. */
enum auth_result auth_verify_policy(const struct auth_policy *p, const char *token, int64_t now,
                                    struct auth_claims *out);
/* auth_verify_policy with the policy of cfg (PARLEY_JWT_SECRET,
 * PARLEY_JWT_REQUIRE_EXP, PARLEY_TENANT_CLAIM, PARLEY_ADMIN_CLAIM). */
enum auth_result auth_verify_config(const struct parley_config *cfg, const char *token,
                                    int64_t now, struct auth_claims *out);
/* 1 when spec is a valid PARLEY_ADMIN_CLAIM ("name" or "name=value", the
 * name 1-64 letters, digits, '_', '-', ':' or '.', the value non-empty
 * without control characters), else 0. */
int auth_admin_claim_valid(const char *spec);

/* Verifies token against secret at time now (unix seconds; 0 = now), with
 * no exp required and no tenant or admin claim (a policy of the secret
 * only). With secret NULL or "" (open mode) every caller is user "" and
 * AUTH_OK is returned whatever the token. On AUTH_OK the subject is copied
 * to sub. The fronts use auth_verify_config. */
enum auth_result auth_verify(const char *secret, const char *token, int64_t now,
                             char *sub, size_t sublen);
/* The role claim that makes a token an admin's: {"role": "admin"} (a
 * string claim; docs/stop.md). An admin may stop any user's generation. */
#define AUTH_ROLE_ADMIN "admin"
/* auth_verify, also telling whether the token carries the admin role:
 * *admin (may be NULL) = 1 when AUTH_OK and the claim "role" is the string
 * "admin", else 0 (always 0 in open mode: nobody is an admin there, and
 * everybody is the same user ""). Thread-safe. */
enum auth_result auth_verify_role(const char *secret, const char *token, int64_t now,
                                  char *sub, size_t sublen, int *admin);
/* The claim that sets a user's daily token budget (docs/usage.md): a
 * non-negative integer, tokens per UTC day, 0 = unlimited. It comes before
 * the CLI's override and PARLEY_TOKEN_BUDGET_PER_DAY. */
#define AUTH_CLAIM_TOKEN_BUDGET "token_budget"
/* auth_verify, also reading the token_budget claim: *budget (may be NULL)
 * = its value when AUTH_OK and the claim is an integer in [0, 1e15], else
 * -1 (absent, not an integer, negative; always -1 in open mode).
 * Thread-safe. */
enum auth_result auth_verify_budget(const char *secret, const char *token, int64_t now,
                                    char *sub, size_t sublen, int64_t *budget);
/* auth_verify reading both claims at once: *admin (role "admin") and
 * *budget (token_budget, -1 when absent); either may be NULL. What the
 * fronts call for a connection, so that one verification gives the
 * connection everything its token says. */
enum auth_result auth_verify_claims(const char *secret, const char *token, int64_t now,
                                    char *sub, size_t sublen, int *admin, int64_t *budget);
/* A clear English message for a result ("token expired", ...). */
const char *auth_message(enum auth_result r);
/* Makes an HS256 token for sub expiring at exp (0: no exp). New string
 * (free()), NULL on error. For tests, tools and the demo. */
char *auth_make_token(const char *secret, const char *sub, int64_t exp);
/* The same with a "role" claim (role NULL: none). New string or NULL. */
char *auth_make_token_role(const char *secret, const char *sub, int64_t exp, const char *role);
/* Extracts the token from an "Authorization: Bearer x" header value.
 * Returns a pointer into header (borrowed) or NULL. Trailing blanks stay
 * (the pointer is into header); auth_verify ignores blanks around a token. */
const char *auth_bearer(const char *header);
#endif
