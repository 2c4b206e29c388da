/* auth.h — HS256 JWT verification (libjwt) and the user id it carries.
 *
 * Rejected: malformed tokens, any alg but HS256 (alg "none" included),
 * bad signatures, expired tokens (exp in the past, with 30 s leeway),
 * tokens not yet valid (nbf), and tokens without a string "sub".
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
/* A clear English message for a result ("token expired", ...). */
const char *auth_message(enum auth_result r);
/* Makes an HS256 token for sub expiring at exp (0: no exp). New string
 * (free()), NULL on error. For tests, tools and the demo. */
char *auth_make_token(const char *secret, const char *sub, int64_t exp);
/* Extracts the token from an "Authorization: Bearer x" header value.
 * Returns a pointer into header (borrowed) or NULL. Trailing blanks stay
 * (the pointer is into header); auth_verify ignores blanks around a token. */
const char *auth_bearer(const char *header);
#endif
