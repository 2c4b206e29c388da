/* token_mint.h — HS256 tokens with any claims, as an administrator mints
 * them (`parley token --sub USER --ttl 1h --claim role=admin`, docs/cli.md).
 * The servers verify them with auth.h (auth_verify_claims), which reads
 * "sub", "exp", "nbf", "role" ("admin") and "token_budget".
 * Threads: any (no shared state). */
#ifndef PARLEY_TOKEN_MINT_H
#define PARLEY_TOKEN_MINT_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Parses one --claim argument "KEY=VALUE" into claims (an object the
 * caller owns): VALUE is taken as JSON when it is a number, true, false,
 * null, or starts with '"', '[' or '{' and parses; any other text is a
 * string ("role=admin" gives "admin", "token_budget=5000" the number
 * 5000). KEY must be 1-64 letters, digits, '_', '-', ':' or '.', and not
 * one the minter sets (sub, iat, exp). 0, or -1 with a message in err. */
int token_claim_parse(json_t *claims, const char *arg, char *err, size_t errlen);

/* The token for sub (non-empty) signed with secret (non-empty), issued
 * now (iat), expiring at exp (unix seconds; 0: no "exp"), with every
 * member of claims (may be NULL) added. New string (free()), NULL on
 * error or with an empty secret or sub. */
char *token_mint(const char *secret, const char *sub, int64_t exp, const json_t *claims);

/* Parses a duration: a whole number followed by s, m, h, d or w (no unit:
 * seconds), at most ten years; "0" is 0. Seconds, or -1 when malformed. */
int64_t token_duration_parse(const char *s);
#endif
