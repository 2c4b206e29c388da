/* visitor.h — anonymous visitors (issue 11 item 6, docs/anonymous.md).
 *
 * With PARLEY_JWT_SECRET set, the protocols listed in PARLEY_ANONYMOUS
 * (names: ticket, chat, brand, send, phoenix — the proto.h kinds) accept
 * clients without a JWT. Such a client is a *visitor*: Parley issues it an
 * identity, a random 128-bit id, and a visitor token
 *     "v1.<32 hex id>.<64 hex HMAC-SHA256(key, "parley-visitor-v1:" id)>"
 * whose key is derived from the JWT secret, so any process or node that
 * shares the secret checks it without storing anything, and nobody without
 * the secret can forge one for a known id. The visitor's user id (the owner
 * of its conversations, sessions and jobs) is "anon:<id>". A JWT whose sub
 * starts with "anon:" is refused (auth.c), so no authenticated user can
 * take a visitor's identity, and a visitor is never an authenticated user.
 * The token travels in the cookie parley_visitor (HttpOnly, SameSite=Lax,
 * Secure over HTTPS), the X-Parley-Visitor header, or the query parameter
 * visitor= (clients that cannot keep cookies; they get the token in the
 * opening response or frame, field "visitor").
 * Threads: pure functions of their arguments (plus the system's randomness
 * in visitor_issue); thread-safe; never log a token or the secret.
 */
#ifndef PARLEY_VISITOR_H
#define PARLEY_VISITOR_H
#include <stddef.h>

#define VISITOR_PREFIX     "anon:"           /* owner of a visitor's data */
#define VISITOR_COOKIE     "parley_visitor"
#define VISITOR_QUERY      "visitor"         /* ?visitor=<token> */
#define VISITOR_TOKEN_MAX  104               /* a token's size, NUL included */
#define VISITOR_USER_MAX   40                /* "anon:" + 32 hex + NUL */
#define VISITOR_COOKIE_MAX_AGE (30 * 24 * 3600)

/* Checks a PARLEY_ANONYMOUS value: NULL or "" (no protocol) or a comma list
 * of protocol names (blanks around names ignored, case-sensitive; phoenix
 * is refused: seed 003 clients always send a token). 0 when
 * valid; -1 with a message naming PARLEY_ANONYMOUS and the bad entry in err
 * (NULL allowed). Thread-safe. */
int visitor_list_check(const char *list, char *err, size_t errlen);

/* The PARLEY_ANONYMOUS name of protocol kind (enum proto_kind value):
 * "ticket", "chat", "brand", "send", "phoenix"; NULL for another value.
 * Static storage. */
const char *visitor_kind_name(int kind);

/* 1 when list (PARLEY_ANONYMOUS, NULL = none) names protocol kind, else 0
 * (always 0 for phoenix).
 * Thread-safe. */
int visitor_allowed(const char *list, int kind);

/* 1 when list names at least one protocol, else 0. */
int visitor_any(const char *list);

/* 1 when user is a visitor's user id ("anon:..."), else 0 (NULL too). */
int visitor_is(const char *user);

/* Issues a new visitor under secret (non-empty): token into token
 * (VISITOR_TOKEN_MAX bytes) and its user id into user (VISITOR_USER_MAX
 * bytes). Returns 0, or -1 when the system's randomness or HMAC failed or a
 * buffer is too small (both then ""). Thread-safe. */
int visitor_issue(const char *secret, char *token, size_t tlen, char *user, size_t ulen);

/* Checks a visitor token under secret: 0 with its user id in user
 * (VISITOR_USER_MAX bytes), -1 when token is NULL, malformed, or its MAC
 * does not match (user then ""). Constant-time MAC comparison. */
int visitor_verify(const char *secret, const char *token, char *user, size_t ulen);

/* The value of the parley_visitor cookie in a Cookie header value
 * ("a=1; parley_visitor=v1...; b=2"), copied into out; returns out, or
 * NULL when header is NULL, has no such cookie, or it does not fit. */
const char *visitor_cookie_find(const char *header, char *out, size_t len);

/* Writes the Set-Cookie header *value* for token into out: "parley_visitor=
 * <token>; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax" and
 * "; Secure" when secure. Returns 0, or -1 when it does not fit. */
int visitor_set_cookie(char *out, size_t len, const char *token, int secure);

/* 1 when the web server says the request came over HTTPS: https_param
 * (the CGI/FastCGI HTTPS parameter) is "on"/"1", or forwarded_proto
 * (X-Forwarded-Proto, first entry) is "https"; else 0. Either may be NULL. */
int visitor_https(const char *https_param, const char *forwarded_proto);
#endif
