/* auth.c — HS256 JWT verification and creation over libjwt (see auth.h).
 *
 * libjwt checks the signature; this file decides everything libjwt 1.10
 * leaves to the caller: which algorithm is acceptable (HS256 only), the
 * exp / nbf claims, and the subject. It also reads the token's header itself
 * (OpenSSL base64, jansson JSON) so that a token that is not a JWT at all
 * is told apart from a JWT with a wrong signature — libjwt answers EINVAL
 * for both. Stateless and thread-safe; never prints a token or a secret.
 */
#include "auth.h"
#include "config.h"
#include "visitor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>

#define AUTH_LEEWAY_S   30      /* clock skew allowed on exp and nbf */

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static int is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Decodes len base64url characters (no padding) and parses them as JSON.
 * Returns a new reference, or NULL when either step fails. */
static json_t *b64url_json(const char *s, size_t len)
{
    if (len == 0 || len % 4 == 1)
        return NULL;
    size_t padded = (len + 3) / 4 * 4;
    unsigned char *in = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    json_t *js = NULL;
    if (!in || !out)
        goto done;
    for (size_t i = 0; i < len; i++)
        in[i] = (unsigned char)(s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i]);
    for (size_t i = len; i < padded; i++)
        in[i] = '=';
    in[padded] = '\0';
    /* EVP_DecodeBlock counts padding as output bytes: drop them. */
    int n = EVP_DecodeBlock(out, in, (int)padded);
    if (n < 0)
        goto done;
    n -= (int)(padded - len);
    js = json_loadb((const char *)out, (size_t)n, 0, NULL);
    if (js && !json_is_object(js)) {
        json_decref(js);
        js = NULL;
    }
done:
    free(in);
    free(out);
    return js;
}

/* Checks the token's shape: three base64url parts, a JSON object header
 * with a string "alg" (and "typ", if present, "JWT"), and a JSON object
 * payload. Sets *hs256 when the header names HS256 and *crit when the
 * header has a "crit" member (whatever its value: RFC 7515 §4.1.11 makes
 * a token whose crit names an extension the recipient does not implement
 * invalid, and a malformed crit invalid too; we implement none). */
static enum auth_result inspect(const char *tok, int *hs256, int *crit)
{
    const char *dot1 = strchr(tok, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2 || strchr(dot2 + 1, '.'))
        return AUTH_MALFORMED;
    for (const char *p = tok; *p; p++)
        if (*p != '.' && !is_b64url(*p))
            return AUTH_MALFORMED;
    json_t *hdr = b64url_json(tok, (size_t)(dot1 - tok));
    json_t *body = b64url_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    enum auth_result r = AUTH_MALFORMED;
    if (hdr && body) {
        const char *alg = json_string_value(json_object_get(hdr, "alg"));
        json_t *typ = json_object_get(hdr, "typ");
        if (alg && (!typ || (json_is_string(typ) &&
                             strcasecmp(json_string_value(typ), "JWT") == 0))) {
            *hs256 = strcmp(alg, "HS256") == 0;
            *crit = json_object_get(hdr, "crit") != NULL;
            r = AUTH_OK;
        }
    }
    json_decref(hdr);
    json_decref(body);
    return r;
}

/* Reads a numeric date claim (exp, nbf) from the verified token.
 * 1 present (value in *out), 0 absent, -1 present but not a number. */
static int numeric_claim(jwt_t *jwt, const char *name, double *out)
{
    char *text = jwt_get_grants_json(jwt, name);
    if (!text)
        return 0;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);
    int r = -1;
    if (v && json_is_number(v)) {
        *out = json_number_value(v);
        r = 1;
    }
    json_decref(v);
    return r;
}

/* 1 when the claim admin_claim ("name" or "name=value") holds in jwt. */
static int admin_claim_holds(jwt_t *jwt, const char *spec)
{
    const char *eq = strchr(spec, '=');
    size_t nlen = eq ? (size_t)(eq - spec) : strlen(spec);
    char name[65];
    if (nlen == 0 || nlen >= sizeof name)
        return 0;
    memcpy(name, spec, nlen);
    name[nlen] = '\0';
    char *text = jwt_get_grants_json(jwt, name);
    if (!text)
        return 0;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);
    int ok = 0;
    if (!eq) {
        ok = json_is_true(v);
    } else if (json_is_string(v)) {
        ok = strcmp(json_string_value(v), eq + 1) == 0;
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
            if (json_is_string(e) && strcmp(json_string_value(e), eq + 1) == 0)
                ok = 1;
    }
    json_decref(v);
    return ok;
}

int auth_admin_claim_valid(const char *spec)
{
    if (!spec)
        return 0;
    const char *eq = strchr(spec, '=');
    size_t nlen = eq ? (size_t)(eq - spec) : strlen(spec);
    if (nlen == 0 || nlen > 64)
        return 0;
    for (size_t i = 0; i < nlen; i++) {
        char c = spec[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == ':' || c == '.'))
            return 0;
    }
    if (!eq)
        return 1;
    if (!eq[1])
        return 0;
    for (const unsigned char *p = (const unsigned char *)eq + 1; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static enum auth_result verify(const struct auth_policy *p, const char *token, int64_t now,
                               struct auth_claims *out);

enum auth_result auth_verify_config(const struct parley_config *cfg, const char *token,
                                    int64_t now, struct auth_claims *out)
{
    struct auth_policy p = {
        cfg ? cfg->jwt_secret : NULL, cfg ? cfg->jwt_require_exp : 0,
        cfg && cfg->tenant_claim && *cfg->tenant_claim ? cfg->tenant_claim : NULL,
        cfg && cfg->admin_claim && *cfg->admin_claim ? cfg->admin_claim : NULL,
    };
    return verify(&p, token, now, out);
}

enum auth_result auth_verify_policy(const struct auth_policy *p, const char *token, int64_t now,
                                    struct auth_claims *out)
{
    return verify(p, token, now, out);
}

/* The old entry points: the secret's policy, the claims they return. */
static enum auth_result verify_secret(const char *secret, const char *token, int64_t now,
                                      char *sub, size_t sublen, int *admin, int64_t *budget)
{
    struct auth_policy p = { secret, 0, NULL, NULL };
    struct auth_claims cl;
    enum auth_result r = verify(&p, token, now, &cl);
    if (sub && sublen)
        sub[0] = '\0';
    if (r == AUTH_OK && sub && strlen(cl.sub) >= sublen)
        r = AUTH_NO_SUBJECT;     /* never truncated into another user's id */
    if (r == AUTH_OK && sub)
        memcpy(sub, cl.sub, strlen(cl.sub) + 1);
    if (admin)
        *admin = r == AUTH_OK ? cl.admin : 0;
    if (budget)
        *budget = r == AUTH_OK ? cl.token_budget : -1;
    return r;
}

enum auth_result auth_verify(const char *secret, const char *token, int64_t now,
                             char *sub, size_t sublen)
{
    return verify_secret(secret, token, now, sub, sublen, NULL, NULL);
}

enum auth_result auth_verify_claims(const char *secret, const char *token, int64_t now,
                                    char *sub, size_t sublen, int *admin, int64_t *budget)
{
    return verify_secret(secret, token, now, sub, sublen, admin, budget);
}

enum auth_result auth_verify_role(const char *secret, const char *token, int64_t now,
                                  char *sub, size_t sublen, int *admin)
{
    return verify_secret(secret, token, now, sub, sublen, admin, NULL);
}

enum auth_result auth_verify_budget(const char *secret, const char *token, int64_t now,
                                    char *sub, size_t sublen, int64_t *budget)
{
    return verify_secret(secret, token, now, sub, sublen, NULL, budget);
}

static enum auth_result verify(const struct auth_policy *p, const char *token, int64_t now,
                               struct auth_claims *out)
{
    struct auth_claims scratch;
    struct auth_claims *cl = out ? out : &scratch;
    memset(cl, 0, sizeof *cl);
    cl->token_budget = -1;
    const char *secret = p ? p->secret : NULL;
    if (!secret || !*secret)
        return AUTH_OK;                      /* open mode: everyone is "" */
    if (!token)
        return AUTH_MISSING;
    while (is_blank(*token))
        token++;
    size_t len = strnlen(token, AUTH_MAX_TOKEN + 1);
    while (len > 0 && len <= AUTH_MAX_TOKEN && is_blank(token[len - 1]))
        len--;
    if (len == 0)
        return AUTH_MISSING;
    if (len > AUTH_MAX_TOKEN) {
        /* blanks after a token of exactly the limit are not part of it */
        size_t n = AUTH_MAX_TOKEN;
        while (is_blank(token[n]))
            n++;
        if (token[n])
            return AUTH_TOO_LONG;
        len = AUTH_MAX_TOKEN;
        while (len > 0 && is_blank(token[len - 1]))
            len--;
    }
    if (now == 0)
        now = (int64_t)time(NULL);

    char *tok = strndup(token, len);
    if (!tok)
        return AUTH_MALFORMED;
    jwt_t *jwt = NULL;
    int hs256 = 0, crit = 0;
    enum auth_result r = inspect(tok, &hs256, &crit);
    if (r != AUTH_OK)
        goto done;
    if (!hs256) {                            /* none, HS512, RS256, ... */
        r = AUTH_BAD_ALG;
        goto done;
    }
    if (crit) {
        r = AUTH_CRIT;
        goto done;
    }
    if (jwt_decode(&jwt, tok, (const unsigned char *)secret, (int)strlen(secret)) != 0 || !jwt) {
        /* The shape is right and the header says HS256: the MAC is wrong. */
        r = AUTH_BAD_SIGNATURE;
        goto done;
    }
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) { /* never trust only our own reading */
        r = AUTH_BAD_ALG;
        goto done;
    }
    double t;
    int has = numeric_claim(jwt, "exp", &t);
    if (has < 0) {
        r = AUTH_MALFORMED;
        goto done;
    }
    if (has > 0 && (double)now >= t + AUTH_LEEWAY_S) {
        r = AUTH_EXPIRED;
        goto done;
    }
    if (has == 0 && p->require_exp) {
        r = AUTH_NO_EXP;
        goto done;
    }
    has = numeric_claim(jwt, "nbf", &t);
    if (has < 0) {
        r = AUTH_MALFORMED;
        goto done;
    }
    if (has > 0 && (double)now + AUTH_LEEWAY_S < t) {
        r = AUTH_NOT_YET_VALID;
        goto done;
    }
    errno = 0;
    const char *s = jwt_get_grant(jwt, "sub");    /* NULL unless a string */
    /* A subject that does not fit is refused, never truncated into
     * another user's id. */
    /* "anon:..." is the user id of an anonymous visitor (visitor.h): a
     * token never names one, so no user can take over a visitor's data. */
    if (!s || !*s || strlen(s) >= sizeof cl->sub || visitor_is(s)) {
        r = AUTH_NO_SUBJECT;
        goto done;
    }
    memcpy(cl->sub, s, strlen(s) + 1);
    const char *role = jwt_get_grant(jwt, "role");  /* NULL unless a string */
    cl->admin = role && !strcmp(role, AUTH_ROLE_ADMIN);
    double tb;
    if (numeric_claim(jwt, AUTH_CLAIM_TOKEN_BUDGET, &tb) > 0 && tb >= 0 && tb <= 1e15 &&
        tb == (double)(int64_t)tb)
        cl->token_budget = (int64_t)tb;      /* anything else: no claim */
    if (p->tenant_claim && *p->tenant_claim) {
        const char *tn = jwt_get_grant(jwt, p->tenant_claim);   /* NULL unless a string */
        if (tn && *tn && strlen(tn) < sizeof cl->tenant)
            memcpy(cl->tenant, tn, strlen(tn) + 1);
    }
    if (p->admin_claim && *p->admin_claim)
        cl->ticket_admin = admin_claim_holds(jwt, p->admin_claim);
    r = AUTH_OK;
done:
    if (r != AUTH_OK) {
        memset(cl, 0, sizeof *cl);
        cl->token_budget = -1;
    }
    jwt_free(jwt);
    explicit_bzero(tok, len);
    free(tok);
    return r;
}

const char *auth_message(enum auth_result r)
{
    switch (r) {
    case AUTH_OK:            return "ok";
    case AUTH_MISSING:       return "authentication required: no token given";
    case AUTH_MALFORMED:     return "malformed token";
    case AUTH_BAD_ALG:       return "token algorithm not allowed (only HS256 is accepted)";
    case AUTH_BAD_SIGNATURE: return "invalid token signature";
    case AUTH_EXPIRED:       return "token expired";
    case AUTH_NOT_YET_VALID: return "token not yet valid";
    case AUTH_NO_SUBJECT:    return "token has no valid subject (sub)";
    case AUTH_CRIT:          return "token has critical header parameters (crit) that are not supported";
    case AUTH_NO_EXP:        return "token has no expiry (exp), which PARLEY_JWT_REQUIRE_EXP requires";
    case AUTH_TOO_LONG:      return "token too long (more than 4096 bytes)";
    }
    return "authentication failed";
}

char *auth_make_token(const char *secret, const char *sub, int64_t exp)
{
    return auth_make_token_role(secret, sub, exp, NULL);
}

char *auth_make_token_role(const char *secret, const char *sub, int64_t exp, const char *role)
{
    if (!secret || !*secret || !sub || !*sub)
        return NULL;
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)time(NULL)) != 0 ||
        (exp && jwt_add_grant_int(jwt, "exp", (long)exp) != 0) ||
        (role && jwt_add_grant(jwt, "role", role) != 0) ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0)
        goto done;
    out = jwt_encode_str(jwt);               /* malloc'd by libjwt: free() */
done:
    jwt_free(jwt);
    return out;
}

const char *auth_bearer(const char *header)
{
    if (!header)
        return NULL;
    while (is_blank(*header))
        header++;
    if (strncasecmp(header, "Bearer", 6) != 0 || !is_blank(header[6]))
        return NULL;
    const char *tok = header + 6;
    while (is_blank(*tok))
        tok++;
    const char *end = tok;
    while (*end && !is_blank(*end))
        end++;
    if (end == tok)
        return NULL;
    for (const char *p = end; *p; p++)      /* one word, then only blanks */
        if (!is_blank(*p))
            return NULL;
    return tok;
}
