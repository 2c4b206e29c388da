/* fuzz_jwt.c — the JWT verifier (core/auth.c: auth_verify_claims, and
 * auth_bearer on an Authorization header).
 *
 * Input byte 0 picks the mode:
 *   even  the rest is a token as a client sends it (as is, and behind
 *         "Bearer "): its shape, base64url, header and payload parsing,
 *         and the signature check all see arbitrary text;
 *   odd   the rest is "<header JSON>\n<payload JSON>", which the harness
 *         encodes (base64url) and signs with the verifier's own secret
 *         (HMAC-SHA256), so the checks after the signature (alg, crit,
 *         exp, nbf, sub, role, token_budget) see arbitrary claims.
 * Oracle besides the sanitizers: a token accepted has a non-empty subject
 * that is not an anonymous visitor's ("anon:"), and only an HS256 header
 * is ever accepted. */
#include "auth.h"
#include "fuzz.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <jansson.h>

#define SECRET "fuzz-secret-0123456789abcdef"
#define NOW 1700000000

/* base64url (no padding) of n bytes appended to out at *o (room checked by the caller). */
static void b64url(const uint8_t *in, size_t n, char *out, size_t *o)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[(*o)++] = tab[(v >> 18) & 63];
        out[(*o)++] = tab[(v >> 12) & 63];
        if (i + 1 < n) out[(*o)++] = tab[(v >> 6) & 63];
        if (i + 2 < n) out[(*o)++] = tab[v & 63];
    }
    out[*o] = '\0';
}

static void check(const char *token)
{
    char sub[128];
    int admin = -1;
    int64_t budget = -2;
    enum auth_result r = auth_verify_claims(SECRET, token, NOW, sub, sizeof sub, &admin, &budget);
    if (r == AUTH_OK && (!sub[0] || strncmp(sub, "anon:", 5) == 0)) {
        fprintf(stderr, "accepted a token with subject \"%s\"\n", sub);
        abort();
    }
    if (r == AUTH_OK && (admin < 0 || budget < -1)) {
        fprintf(stderr, "accepted a token without telling its claims\n");
        abort();
    }
    (void)auth_message(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if (!(data[0] & 1)) {
        char *tok = fz_strndup(rest, n);
        check(tok);
        char *hdr = malloc(n + 8);
        if (!hdr)
            abort();
        memcpy(hdr, "Bearer ", 7);
        memcpy(hdr + 7, tok, n + 1);
        const char *b = auth_bearer(hdr);
        if (b)
            check(b);
        free(hdr);
        free(tok);
        return 0;
    }
    const char *nl = memchr(rest, '\n', n);
    if (!nl)
        return 0;
    size_t hl = (size_t)(nl - rest), pl = n - hl - 1;
    char *tok = malloc((n + 3) * 2 + 64);
    if (!tok)
        abort();
    size_t o = 0;
    b64url((const uint8_t *)rest, hl, tok, &o);
    tok[o++] = '.';
    b64url((const uint8_t *)nl + 1, pl, tok, &o);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    if (!HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, o, mac, &ml))
        abort();
    tok[o++] = '.';
    b64url(mac, ml, tok, &o);
    check(tok);
    /* only an HS256 header may pass */
    char sub[128];
    if (auth_verify(SECRET, tok, NOW, sub, sizeof sub) == AUTH_OK) {
        json_t *h = json_loadb(rest, hl, 0, NULL);
        const char *alg = json_string_value(json_object_get(h, "alg"));
        if (!alg || strcmp(alg, "HS256") != 0) {
            fprintf(stderr, "accepted a token whose alg is %s\n", alg ? alg : "(none)");
            abort();
        }
        json_decref(h);
    }
    free(tok);
    return 0;
}
