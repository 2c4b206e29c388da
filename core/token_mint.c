/* token_mint.c — HS256 tokens with claims (token_mint.h), with libjwt as
 * auth.c verifies them. Threads: any. */
#include "token_mint.h"

#include <ctype.h>
#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int key_ok(const char *k, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)k[i]) && k[i] != '_' && k[i] != '-' && k[i] != ':' && k[i] != '.')
            return 0;
    return 1;
}

int token_claim_parse(json_t *claims, const char *arg, char *err, size_t errlen)
{
    const char *eq = arg ? strchr(arg, '=') : NULL;
    if (!eq) {
        snprintf(err, errlen, "--claim takes KEY=VALUE, not '%s'", arg ? arg : "");
        return -1;
    }
    size_t n = (size_t)(eq - arg);
    char key[80];
    if (!key_ok(arg, n)) {
        snprintf(err, errlen, "--claim: the key must be 1-64 letters, digits, '_', '-', ':' or '.', not '%.*s'",
                 (int)(n > 64 ? 64 : n), arg);
        return -1;
    }
    memcpy(key, arg, n);
    key[n] = '\0';
    if (!strcmp(key, "sub") || !strcmp(key, "iat") || !strcmp(key, "exp")) {
        snprintf(err, errlen, "--claim: %s is set by the command itself (use --sub / --ttl)", key);
        return -1;
    }
    const char *v = eq + 1;
    json_t *val = NULL;
    if (*v == '"' || *v == '[' || *v == '{' || *v == '-' || isdigit((unsigned char)*v) ||
        !strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null"))
        val = json_loads(v, JSON_DECODE_ANY, NULL);
    if (!val)
        val = json_string(v);
    if (!val || json_object_set_new(claims, key, val) < 0) {
        snprintf(err, errlen, "--claim %s: not valid UTF-8 text", key);
        return -1;
    }
    return 0;
}

char *token_mint(const char *secret, const char *sub, int64_t exp, const json_t *claims)
{
    if (!secret || !*secret || !sub || !*sub)
        return NULL;
    jwt_t *jwt = NULL;
    char *out = NULL, *extra = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (claims && json_object_size(claims) > 0) {
        extra = json_dumps(claims, JSON_COMPACT);
        if (!extra || jwt_add_grants_json(jwt, extra) != 0)
            goto done;
    }
    if (jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)time(NULL)) != 0 ||
        (exp && jwt_add_grant_int(jwt, "exp", (long)exp) != 0) ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0)
        goto done;
    out = jwt_encode_str(jwt);               /* malloc'd by libjwt: free() */
done:
    free(extra);
    jwt_free(jwt);
    return out;
}

int64_t token_duration_parse(const char *s)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0)
        return -1;
    int64_t unit = 1;
    if (*end) {
        switch (*end) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        case 'w': unit = 7 * 86400; break;
        default: return -1;
        }
        if (end[1])
            return -1;
    }
    if (v > 10LL * 366 * 86400 / unit)
        return -1;
    return (int64_t)v * unit;
}
