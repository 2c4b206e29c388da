/* test_auth.c — HS256 verification: good tokens, every rejection reason,
 * tokens forged by hand (alg none, tampered payload), garbage, open mode,
 * and the Authorization header parser. */
#include "th.h"
#include "auth.h"

#include <time.h>

#include <jwt.h>
#include <openssl/evp.h>

static const char SECRET[] = "test-secret-0123456789abcdef0123";
static const int64_t NOW = 1700000000;

/* base64url without padding, via OpenSSL. New string (free()). */
static char *b64url(const char *data)
{
    size_t len = strlen(data);
    unsigned char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    int n = EVP_EncodeBlock(out, (const unsigned char *)data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return (char *)out;
}

/* "b64url(header).b64url(payload).sig" — for tokens libjwt would not make. */
static char *forge(const char *header, const char *payload, const char *sig)
{
    char *h = b64url(header), *p = b64url(payload);
    char *tok = NULL;
    if (h && p && (tok = malloc(strlen(h) + strlen(p) + strlen(sig) + 3)))
        sprintf(tok, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return tok;
}

/* A token signed by libjwt with alg and key, with the given claims (JSON). */
static char *make(jwt_alg_t alg, const char *key, const char *claims_json)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grants_json(jwt, claims_json) == 0 &&
        jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

TEST(valid_token_gives_subject)
{
    char *tok = auth_make_token(SECRET, "alice", NOW + 3600);
    REQUIRE(tok != NULL);
    char sub[64] = "junk";
    CHECK_INT(auth_verify(SECRET, tok, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "alice");
    /* now = 0 means the real clock: a token expiring in an hour is fine */
    char *tok2 = auth_make_token(SECRET, "bob", (int64_t)time(NULL) + 3600);
    REQUIRE(tok2 != NULL);
    CHECK_INT(auth_verify(SECRET, tok2, 0, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "bob");
    /* without exp the token does not expire */
    char *tok3 = auth_make_token(SECRET, "carol", 0);
    REQUIRE(tok3 != NULL);
    CHECK_INT(auth_verify(SECRET, tok3, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "carol");
    /* sub is optional for the caller */
    CHECK_INT(auth_verify(SECRET, tok3, NOW, NULL, 0), AUTH_OK);
    free(tok);
    free(tok2);
    free(tok3);
}

TEST(make_token_refuses_bad_input)
{
    CHECK(auth_make_token(NULL, "a", 0) == NULL);
    CHECK(auth_make_token("", "a", 0) == NULL);
    CHECK(auth_make_token(SECRET, NULL, 0) == NULL);
    CHECK(auth_make_token(SECRET, "", 0) == NULL);
}

TEST(expiry_with_leeway)
{
    char sub[64];
    char *gone = auth_make_token(SECRET, "u", NOW - 60);
    char *edge = auth_make_token(SECRET, "u", NOW - 29);   /* within 30 s leeway */
    char *just = auth_make_token(SECRET, "u", NOW - 30);
    REQUIRE(gone && edge && just);
    CHECK_INT(auth_verify(SECRET, gone, NOW, sub, sizeof sub), AUTH_EXPIRED);
    CHECK_STR(sub, "");                                     /* cleared on failure */
    CHECK_INT(auth_verify(SECRET, edge, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_INT(auth_verify(SECRET, just, NOW, sub, sizeof sub), AUTH_EXPIRED);
    free(gone);
    free(edge);
    free(just);
}

/* One data-driven case: a token built somehow, and what verify says. */
struct vcase {
    const char *name;
    char *token;               /* owned */
    enum auth_result want;
};

TEST(rejections_table)
{
    char nbf_future[128], nbf_edge[128], nbf_past[128], exp_real[128];
    snprintf(nbf_future, sizeof nbf_future, "{\"sub\":\"u\",\"nbf\":%lld}", (long long)NOW + 3600);
    snprintf(nbf_edge, sizeof nbf_edge, "{\"sub\":\"u\",\"nbf\":%lld}", (long long)NOW + 20);
    snprintf(nbf_past, sizeof nbf_past, "{\"sub\":\"u\",\"nbf\":%lld}", (long long)NOW - 10);
    snprintf(exp_real, sizeof exp_real, "{\"sub\":\"u\",\"exp\":%lld.5}", (long long)NOW - 100);

    /* A good token whose payload is swapped for another user's. */
    char *good = auth_make_token(SECRET, "alice", NOW + 3600);
    REQUIRE(good != NULL);
    char *tampered = NULL, *flipped = strdup(good), *nosig = NULL;
    {
        char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
        char *evil = b64url("{\"sub\":\"admin\",\"exp\":1800000000}");
        REQUIRE(evil && flipped);
        tampered = malloc(strlen(good) + strlen(evil) + 1);
        REQUIRE(tampered != NULL);
        sprintf(tampered, "%.*s.%s%s", (int)(dot1 - good), good, evil, dot2);
        free(evil);
        /* change one signature character (keep it base64url) */
        size_t last = strlen(flipped) - 2;
        flipped[last] = flipped[last] == 'A' ? 'B' : 'A';
        nosig = strndup(good, (size_t)(dot2 - good) + 1);      /* "h.p." */
    }

    struct vcase cases[] = {
        { "valid", make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\"}"), AUTH_OK },
        { "other secret", auth_make_token("another-secret", "alice", NOW + 3600),
          AUTH_BAD_SIGNATURE },
        { "tampered payload", tampered, AUTH_BAD_SIGNATURE },
        { "flipped signature char", flipped, AUTH_BAD_SIGNATURE },
        { "empty signature", nosig, AUTH_BAD_SIGNATURE },
        { "alg none", forge("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"u\"}", ""),
          AUTH_BAD_ALG },
        { "alg none, with a sig", forge("{\"alg\":\"none\"}", "{\"sub\":\"u\"}", "abcd"),
          AUTH_BAD_ALG },
        { "alg None", forge("{\"alg\":\"None\"}", "{\"sub\":\"u\"}", ""), AUTH_BAD_ALG },
        { "HS512 same secret", make(JWT_ALG_HS512, SECRET, "{\"sub\":\"u\"}"), AUTH_BAD_ALG },
        { "HS384 same secret", make(JWT_ALG_HS384, SECRET, "{\"sub\":\"u\"}"), AUTH_BAD_ALG },
        { "RS256 header", forge("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"sub\":\"u\"}",
                                "c2lnbmF0dXJl"), AUTH_BAD_ALG },
        { "nbf in the future", make(JWT_ALG_HS256, SECRET, nbf_future), AUTH_NOT_YET_VALID },
        { "nbf within leeway", make(JWT_ALG_HS256, SECRET, nbf_edge), AUTH_OK },
        { "nbf in the past", make(JWT_ALG_HS256, SECRET, nbf_past), AUTH_OK },
        { "fractional exp", make(JWT_ALG_HS256, SECRET, exp_real), AUTH_EXPIRED },
        { "exp as string", make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"exp\":\"soon\"}"),
          AUTH_MALFORMED },
        { "nbf as bool", make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"nbf\":true}"),
          AUTH_MALFORMED },
        { "missing sub", make(JWT_ALG_HS256, SECRET, "{\"name\":\"u\"}"), AUTH_NO_SUBJECT },
        { "numeric sub", make(JWT_ALG_HS256, SECRET, "{\"sub\":42}"), AUTH_NO_SUBJECT },
        { "empty sub", make(JWT_ALG_HS256, SECRET, "{\"sub\":\"\"}"), AUTH_NO_SUBJECT },
        { "null sub", make(JWT_ALG_HS256, SECRET, "{\"sub\":null}"), AUTH_NO_SUBJECT },
        { "object sub", make(JWT_ALG_HS256, SECRET, "{\"sub\":{\"id\":1}}"), AUTH_NO_SUBJECT },
        { "header not JSON", forge("{alg:HS256}", "{\"sub\":\"u\"}", "abcd"), AUTH_MALFORMED },
        { "header is an array", forge("[\"HS256\"]", "{\"sub\":\"u\"}", "abcd"), AUTH_MALFORMED },
        { "header without alg", forge("{\"typ\":\"JWT\"}", "{\"sub\":\"u\"}", "abcd"),
          AUTH_MALFORMED },
        { "alg not a string", forge("{\"alg\":256}", "{\"sub\":\"u\"}", "abcd"), AUTH_MALFORMED },
        { "typ not JWT", forge("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", "{\"sub\":\"u\"}", "abcd"),
          AUTH_MALFORMED },
        { "payload not JSON", forge("{\"alg\":\"HS256\"}", "sub=u", "abcd"), AUTH_MALFORMED },
        { "payload a string", forge("{\"alg\":\"HS256\"}", "\"u\"", "abcd"), AUTH_MALFORMED },
        { "payload with NUL escape", forge("{\"alg\":\"HS256\"}", "{\"sub\":\"a\\u0000b\"}",
                                           "abcd"), AUTH_MALFORMED },
        { "empty", strdup(""), AUTH_MISSING },
        { "blanks", strdup("   \t "), AUTH_MISSING },
        { "dot", strdup("."), AUTH_MALFORMED },
        { "two dots", strdup(".."), AUTH_MALFORMED },
        { "a.b", strdup("a.b"), AUTH_MALFORMED },
        { "a.b.c", strdup("a.b.c"), AUTH_MALFORMED },
        { "a.b.c.d", strdup("a.b.c.d"), AUTH_MALFORMED },
        { "padding", strdup("eyJhbGciOiJIUzI1NiJ9.e30=.abcd"), AUTH_MALFORMED },
        { "standard base64 chars", strdup("eyJhbGciOiJIUzI1NiJ9.e30+.abcd"), AUTH_MALFORMED },
        { "inner blank", strdup("eyJhbGciOiJIUzI1NiJ9 .e30.abcd"), AUTH_MALFORMED },
        { "Bearer prefix left on", strdup("Bearer x.y.z"), AUTH_MALFORMED },
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].token) {
            th_case_failed = 1;
            printf("#   %s: could not build the token\n", cases[i].name);
            continue;
        }
        char sub[64];
        enum auth_result r = auth_verify(SECRET, cases[i].token, NOW, sub, sizeof sub);
        if (r != cases[i].want) {
            th_case_failed = 1;
            printf("#   %s: got %d (%s), expected %d (%s)\n", cases[i].name, r, auth_message(r),
                   cases[i].want, auth_message(cases[i].want));
        }
        if (r != AUTH_OK && sub[0]) {
            th_case_failed = 1;
            printf("#   %s: sub not cleared\n", cases[i].name);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(cases[i].token);
    free(good);
}

/* libjwt itself must refuse an unsigned token when a key is given. */
TEST(libjwt_refuses_alg_none_with_a_key)
{
    char *none = forge("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"u\"}", "");
    REQUIRE(none != NULL);
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, none, (const unsigned char *)SECRET, (int)strlen(SECRET));
    CHECK(rc != 0);
    CHECK(jwt == NULL);
    jwt_free(jwt);
    free(none);
}

TEST(garbage_and_huge_tokens)
{
    char sub[64];
    CHECK_INT(auth_verify(SECRET, NULL, NOW, sub, sizeof sub), AUTH_MISSING);
    /* very long: a megabyte of base64url-looking text, and of dots */
    size_t big = 1 << 20;
    char *s = malloc(big + 1);
    REQUIRE(s != NULL);
    memset(s, 'A', big);
    s[big] = '\0';
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_MALFORMED);
    s[1000] = '.';
    s[2000] = '.';
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_MALFORMED);
    memset(s, '.', big);
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_MALFORMED);
    /* binary junk */
    for (int i = 0; i < 255; i++)
        s[i] = (char)(i + 1);
    s[255] = '\0';
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_MALFORMED);
    free(s);
    /* a long but legitimate subject is fine; one too long for sub[] is refused */
    char longsub[300];
    memset(longsub, 'x', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = '\0';
    char *tok = auth_make_token(SECRET, longsub, 0);
    REQUIRE(tok != NULL);
    char small[64], large[512];
    CHECK_INT(auth_verify(SECRET, tok, NOW, small, sizeof small), AUTH_NO_SUBJECT);
    CHECK_INT(auth_verify(SECRET, tok, NOW, large, sizeof large), AUTH_OK);
    CHECK_STR(large, longsub);
    free(tok);
}

TEST(open_mode_accepts_everyone_as_empty_user)
{
    char sub[64] = "junk";
    CHECK_INT(auth_verify(NULL, NULL, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "");
    strcpy(sub, "junk");
    CHECK_INT(auth_verify("", "garbage", NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "");
    char *tok = auth_make_token(SECRET, "alice", NOW + 60);
    CHECK_INT(auth_verify("", tok, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "");
    free(tok);
}

struct bcase {
    const char *header;
    const char *want;          /* NULL: no token */
};

TEST(bearer_header)
{
    static const struct bcase cases[] = {
        { "Bearer abc.def.ghi", "abc.def.ghi" },
        { "bearer abc", "abc" },
        { "BEARER abc", "abc" },
        { "  Bearer    abc", "abc" },
        { "\tBearer\tabc", "abc" },
        { "Bearer abc   ", "abc   " },       /* trailing blanks: auth_verify skips them */
        { "Bearer", NULL },
        { "Bearer ", NULL },
        { "Bearer    ", NULL },
        { "Bearerabc", NULL },
        { "Basic dXNlcjpwYXNz", NULL },
        { "Bearer a b", NULL },
        { "Token abc", NULL },
        { "", NULL },
        { NULL, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = auth_bearer(cases[i].header);
        int ok = cases[i].want ? got && strcmp(got, cases[i].want) == 0 : got == NULL;
        if (!ok) {
            th_case_failed = 1;
            printf("#   auth_bearer(\"%s\") = \"%s\", expected \"%s\"\n",
                   cases[i].header ? cases[i].header : "(null)", got ? got : "(null)",
                   cases[i].want ? cases[i].want : "(null)");
        }
        /* a borrowed pointer into the header */
        if (got && !(got >= cases[i].header &&
                     got < cases[i].header + strlen(cases[i].header))) {
            th_case_failed = 1;
            printf("#   auth_bearer(\"%s\") does not point into the header\n", cases[i].header);
        }
    }
    /* a header with blanks around the token verifies */
    char *tok = auth_make_token(SECRET, "dave", NOW + 60);
    REQUIRE(tok != NULL);
    char hdr[1024], sub[64];
    snprintf(hdr, sizeof hdr, "  bearer  %s \t", tok);
    const char *t = auth_bearer(hdr);
    REQUIRE(t != NULL);
    CHECK_INT(auth_verify(SECRET, t, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "dave");
    free(tok);
}

TEST(messages_are_distinct)
{
    for (int a = AUTH_OK; a <= AUTH_NO_SUBJECT; a++) {
        const char *ma = auth_message((enum auth_result)a);
        CHECK(ma && *ma);
        for (int b = a + 1; b <= AUTH_NO_SUBJECT; b++)
            CHECK(strcmp(ma, auth_message((enum auth_result)b)) != 0);
    }
    CHECK_STR(auth_message(AUTH_EXPIRED), "token expired");
}

int main(void)
{
    RUN(valid_token_gives_subject);
    RUN(make_token_refuses_bad_input);
    RUN(expiry_with_leeway);
    RUN(rejections_table);
    RUN(libjwt_refuses_alg_none_with_a_key);
    RUN(garbage_and_huge_tokens);
    RUN(open_mode_accepts_everyone_as_empty_user);
    RUN(bearer_header);
    RUN(messages_are_distinct);
    return th_done();
}
