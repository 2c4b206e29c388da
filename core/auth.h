/* auth.h — HS256 JWT verification (libjwt) and the user id it carries.
 *
 * Rejected: malformed tokens, any alg but HS256 (alg "none" included),
 * bad signatures, expired tokens (exp in the past, with 30 s leeway),
 * tokens not yet valid (nbf), tokens without a string "sub", and tokens
 * whose sub starts with "anon:" (an anonymous visitor's id, visitor.h).
 * Threads: stateless, thread-safe. Never logs the token or the secret.
 */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H
#include <stddef.h>
#include <stdint.h>

enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,      /* no token given while a secret is configured */
    AUTH_MALFORMED,
    AUTH_BAD_ALG,
    AUTH_BAD_SIGNATURE,
    AUTH_EXPIRED,
    AUTH_NOT_YET_VALID,
    AUTH_NO_SUBJECT
};

/* Verifies token against secret at time now (unix seconds; 0 = now).
 * With secret NULL or "" (open mode) every caller is user "" and AUTH_OK is
 * returned whatever the token. On AUTH_OK the subject is copied to sub. */
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
