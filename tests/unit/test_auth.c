/* test_auth.c — HS256 verification: good tokens, every rejection reason,
 * tokens forged by hand (alg none, tampered payload, crit headers),
 * garbage, tokens over AUTH_MAX_TOKEN, the exp requirement, the tenant and
 * admin claims of a policy, open mode, the settings that make the policy,
 * and the Authorization header parser. */
#include "th.h"
#include "auth.h"
#include "config.h"

#include <time.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

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

/* "b64url(header).b64url(payload).HMAC-SHA256" signed with key, for
 * correctly signed tokens with headers libjwt would not write. New string. */
static char *forge_signed(const char *header, const char *payload, const char *key)
{
    char *unsigned_tok = forge(header, payload, "");
    if (!unsigned_tok)
        return NULL;
    size_t n = strlen(unsigned_tok) - 1;          /* without the last '.' */
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)unsigned_tok, n, mac, &maclen);
    unsigned char b64[64];
    int m = EVP_EncodeBlock(b64, mac, (int)maclen);
    while (m > 0 && b64[m - 1] == '=')
        m--;
    b64[m] = '\0';
    for (int i = 0; i < m; i++)
        b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    char *tok = malloc(n + 1 + (size_t)m + 1);
    if (tok)
        sprintf(tok, "%.*s.%s", (int)n, unsigned_tok, (const char *)b64);
    free(unsigned_tok);
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
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_TOO_LONG);
    s[1000] = '.';
    s[2000] = '.';
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_TOO_LONG);
    memset(s, '.', big);
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_TOO_LONG);
    /* binary junk */
    for (int i = 0; i < 255; i++)
        s[i] = (char)(i + 1);
    s[255] = '\0';
    CHECK_INT(auth_verify(SECRET, s, NOW, sub, sizeof sub), AUTH_MALFORMED);
    free(s);
    /* a long but legitimate subject (up to 127 bytes: what every front
     * keeps) is fine; one too long for sub[] is refused, never cut */
    char longsub[128];
    memset(longsub, 'x', sizeof longsub - 1);
    longsub[sizeof longsub - 1] = '\0';
    char *tok = auth_make_token(SECRET, longsub, 0);
    REQUIRE(tok != NULL);
    char small[64], large[512];
    CHECK_INT(auth_verify(SECRET, tok, NOW, small, sizeof small), AUTH_NO_SUBJECT);
    CHECK_INT(auth_verify(SECRET, tok, NOW, large, sizeof large), AUTH_OK);
    CHECK_STR(large, longsub);
    free(tok);
    char hugesub[300];
    memset(hugesub, 'y', sizeof hugesub - 1);
    hugesub[sizeof hugesub - 1] = '\0';
    tok = auth_make_token(SECRET, hugesub, 0);
    REQUIRE(tok != NULL);
    CHECK_INT(auth_verify(SECRET, tok, NOW, large, sizeof large), AUTH_NO_SUBJECT);
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
    for (int a = AUTH_OK; a <= AUTH_TOO_LONG; a++) {
        const char *ma = auth_message((enum auth_result)a);
        CHECK(ma && *ma);
        CHECK(strcmp(ma, "authentication failed") != 0);   /* each has its own */
        for (int b = a + 1; b <= AUTH_TOO_LONG; b++)
            CHECK(strcmp(ma, auth_message((enum auth_result)b)) != 0);
    }
    CHECK_STR(auth_message(AUTH_EXPIRED), "token expired");
}


/* RFC 7515 §4.1.11: a "crit" header names extensions the recipient must
 * understand; we understand none, so any crit is refused, even with a
 * correct signature (without this check libjwt accepts it). */
TEST(crit_header_refused)
{
    const char *pay = "{\"sub\":\"u\"}";
    char *plain = forge_signed("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", pay, SECRET);
    char *crit = forge_signed("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", pay, SECRET);
    char *crit_unknown = forge_signed("{\"alg\":\"HS256\",\"crit\":[\"x-bank\"],\"x-bank\":true}",
                                      pay, SECRET);
    char *crit_empty = forge_signed("{\"alg\":\"HS256\",\"crit\":[]}", pay, SECRET);
    char *crit_bad = forge_signed("{\"alg\":\"HS256\",\"crit\":\"b64\"}", pay, SECRET);
    char *crit_other_key = forge_signed("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", pay,
                                        "another-secret");
    REQUIRE(plain && crit && crit_unknown && crit_empty && crit_bad && crit_other_key);
    char sub[64];
    CHECK_INT(auth_verify(SECRET, plain, NOW, sub, sizeof sub), AUTH_OK);   /* the forger works */
    CHECK_INT(auth_verify(SECRET, crit, NOW, sub, sizeof sub), AUTH_CRIT);
    CHECK_STR(sub, "");
    CHECK_INT(auth_verify(SECRET, crit_unknown, NOW, sub, sizeof sub), AUTH_CRIT);
    CHECK_INT(auth_verify(SECRET, crit_empty, NOW, sub, sizeof sub), AUTH_CRIT);
    CHECK_INT(auth_verify(SECRET, crit_bad, NOW, sub, sizeof sub), AUTH_CRIT);
    CHECK_INT(auth_verify(SECRET, crit_other_key, NOW, sub, sizeof sub), AUTH_CRIT);
    CHECK(strstr(auth_message(AUTH_CRIT), "crit") != NULL);
    free(plain);
    free(crit);
    free(crit_unknown);
    free(crit_empty);
    free(crit_bad);
    free(crit_other_key);
}

/* PARLEY_JWT_REQUIRE_EXP: without it a token without exp is fine (as
 * before); with it, refused with its own reason; exp present: fine. */
TEST(require_exp_policy)
{
    struct auth_policy lax = { SECRET, 0, NULL, NULL }, strict = { SECRET, 1, NULL, NULL };
    char *noexp = auth_make_token(SECRET, "u", 0);
    char *withexp = auth_make_token(SECRET, "u", NOW + 600);
    char *expired = auth_make_token(SECRET, "u", NOW - 600);
    REQUIRE(noexp && withexp && expired);
    struct auth_claims cl;
    CHECK_INT(auth_verify_policy(&lax, noexp, NOW, &cl), AUTH_OK);
    CHECK_STR(cl.sub, "u");
    CHECK_INT(auth_verify_policy(&strict, noexp, NOW, &cl), AUTH_NO_EXP);
    CHECK_STR(cl.sub, "");
    CHECK_INT(auth_verify_policy(&strict, withexp, NOW, &cl), AUTH_OK);
    CHECK_INT(auth_verify_policy(&strict, expired, NOW, &cl), AUTH_EXPIRED);
    /* the settings make the policy */
    struct parley_config cfg;
    char err[256];
    REQUIRE(config_defaults(&cfg) == 0);
    CHECK_INT(cfg.jwt_require_exp, 0);                    /* documented default: off */
    REQUIRE(config_set(&cfg, "PARLEY_JWT_SECRET", SECRET, err, sizeof err) == 0);
    CHECK_INT(auth_verify_config(&cfg, noexp, NOW, &cl), AUTH_OK);
    REQUIRE(config_set(&cfg, "PARLEY_JWT_REQUIRE_EXP", "1", err, sizeof err) == 0);
    CHECK_INT(auth_verify_config(&cfg, noexp, NOW, &cl), AUTH_NO_EXP);
    CHECK_INT(auth_verify_config(&cfg, withexp, NOW, &cl), AUTH_OK);
    CHECK(config_set(&cfg, "PARLEY_JWT_REQUIRE_EXP", "yes", err, sizeof err) < 0);
    config_cleanup(&cfg);
    free(noexp);
    free(withexp);
    free(expired);
}

/* A valid HS256 token of exactly len bytes (a padding claim). New string. */
static char *token_of_length(size_t len)
{
    for (size_t pad = len > 200 ? (len - 200) * 3 / 4 : 1; pad < len; pad++) {
        char *claims = malloc(pad + 64);
        if (!claims)
            return NULL;
        int n = sprintf(claims, "{\"sub\":\"u\",\"pad\":\"");
        memset(claims + n, 'p', pad);
        strcpy(claims + n + pad, "\"}");
        char *tok = make(JWT_ALG_HS256, SECRET, claims);
        free(claims);
        if (!tok)
            return NULL;
        if (strlen(tok) == len)
            return tok;
        if (strlen(tok) > len) {
            free(tok);
            return NULL;
        }
        free(tok);
    }
    return NULL;
}

/* Tokens over AUTH_MAX_TOKEN bytes are refused as too long — also when
 * correctly signed — and never parsed; at the limit they are fine; blanks
 * around a token do not count. */
TEST(token_length_limit)
{
    CHECK_INT(AUTH_MAX_TOKEN, 4096);
    char *at = NULL, *over = NULL, *kb8 = NULL;
    for (size_t want = AUTH_MAX_TOKEN; !at && want > AUTH_MAX_TOKEN - 4; want--)
        at = token_of_length(want);         /* base64 steps: within 3 bytes */
    for (size_t want = AUTH_MAX_TOKEN + 1; !over && want < AUTH_MAX_TOKEN + 5; want++)
        over = token_of_length(want);
    for (size_t want = 8192; !kb8 && want > 8188; want--)
        kb8 = token_of_length(want);
    REQUIRE(at && over && kb8);
    CHECK(strlen(at) <= AUTH_MAX_TOKEN && strlen(over) > AUTH_MAX_TOKEN);
    char sub[64];
    CHECK_INT(auth_verify(SECRET, at, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_INT(auth_verify(SECRET, over, NOW, sub, sizeof sub), AUTH_TOO_LONG);
    CHECK_INT(auth_verify(SECRET, kb8, NOW, sub, sizeof sub), AUTH_TOO_LONG);
    CHECK_STR(sub, "");
    /* blanks around a token at the limit */
    char *padded = malloc(strlen(at) + 8);
    REQUIRE(padded != NULL);
    sprintf(padded, "  %s \t ", at);
    CHECK_INT(auth_verify(SECRET, padded, NOW, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "u");
    CHECK(strstr(auth_message(AUTH_TOO_LONG), "too long") != NULL);
    free(padded);
    free(at);
    free(over);
    free(kb8);
}

/* One verification gives every claim: sub, role admin, token_budget, the
 * tenant (PARLEY_TENANT_CLAIM) and the ticket admin (PARLEY_ADMIN_CLAIM). */
TEST(policy_claims)
{
    struct auth_policy p = { SECRET, 0, "org", "role=helpdesk-admin" };
    struct auth_claims cl;
    struct { const char *claims; const char *tenant; int ticket_admin; } cases[] = {
        { "{\"sub\":\"u\",\"org\":\"acme\"}", "acme", 0 },
        { "{\"sub\":\"u\",\"org\":\"acme\",\"role\":\"helpdesk-admin\"}", "acme", 1 },
        { "{\"sub\":\"u\",\"org\":\"acme\",\"role\":[\"x\",\"helpdesk-admin\"]}", "acme", 1 },
        { "{\"sub\":\"u\",\"org\":\"acme\",\"role\":\"admin\"}", "acme", 0 },
        { "{\"sub\":\"u\",\"org\":\"acme\",\"role\":[\"helpdesk\"]}", "acme", 0 },
        { "{\"sub\":\"u\"}", "", 0 },
        { "{\"sub\":\"u\",\"org\":42}", "", 0 },
        { "{\"sub\":\"u\",\"org\":\"\"}", "", 0 },
        { "{\"sub\":\"u\",\"org\":null}", "", 0 },
        { "{\"sub\":\"u\",\"org\":[\"acme\"]}", "", 0 },
        { "{\"sub\":\"u\",\"org\":{\"id\":\"acme\"}}", "", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tok = make(JWT_ALG_HS256, SECRET, cases[i].claims);
        REQUIRE(tok != NULL);
        CHECK_INT(auth_verify_policy(&p, tok, NOW, &cl), AUTH_OK);
        CHECK_STR(cl.tenant, cases[i].tenant);
        CHECK_INT(cl.ticket_admin, cases[i].ticket_admin);
        free(tok);
    }
    /* a tenant 128 bytes or longer is no tenant (never cut into another) */
    char big[200];
    snprintf(big, sizeof big, "{\"sub\":\"u\",\"org\":\"%0128d\"}", 7);
    char *tok = make(JWT_ALG_HS256, SECRET, big);
    REQUIRE(tok != NULL);
    CHECK_INT(auth_verify_policy(&p, tok, NOW, &cl), AUTH_OK);
    CHECK_STR(cl.tenant, "");
    free(tok);
    /* the other claims in the same call */
    tok = make(JWT_ALG_HS256, SECRET,
               "{\"sub\":\"boss\",\"org\":\"acme\",\"role\":\"admin\",\"token_budget\":5000}");
    REQUIRE(tok != NULL);
    CHECK_INT(auth_verify_policy(&p, tok, NOW, &cl), AUTH_OK);
    CHECK_STR(cl.sub, "boss");
    CHECK_INT(cl.admin, 1);
    CHECK_INT(cl.token_budget, 5000);
    CHECK_STR(cl.tenant, "acme");
    /* no tenant claim configured: the claim is not read */
    struct auth_policy plain = { SECRET, 0, NULL, NULL };
    CHECK_INT(auth_verify_policy(&plain, tok, NOW, &cl), AUTH_OK);
    CHECK_STR(cl.tenant, "");
    CHECK_INT(cl.ticket_admin, 0);
    free(tok);
    /* a bare claim name: the claim must be true */
    struct auth_policy bare = { SECRET, 0, "org", "ticket_admin" };
    char *yes = make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"ticket_admin\":true}");
    char *str = make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"ticket_admin\":\"true\"}");
    char *one = make(JWT_ALG_HS256, SECRET, "{\"sub\":\"u\",\"ticket_admin\":1}");
    REQUIRE(yes && str && one);
    CHECK_INT(auth_verify_policy(&bare, yes, NOW, &cl), AUTH_OK);
    CHECK_INT(cl.ticket_admin, 1);
    CHECK_INT(auth_verify_policy(&bare, str, NOW, &cl), AUTH_OK);
    CHECK_INT(cl.ticket_admin, 0);
    CHECK_INT(auth_verify_policy(&bare, one, NOW, &cl), AUTH_OK);
    CHECK_INT(cl.ticket_admin, 0);
    /* a refused token leaves no claim behind */
    CHECK_INT(auth_verify_policy(&bare, "a.b.c", NOW, &cl), AUTH_MALFORMED);
    CHECK_STR(cl.sub, "");
    CHECK_INT(cl.ticket_admin, 0);
    CHECK_INT(cl.token_budget, -1);
    /* open mode: everybody "", no claims */
    struct auth_policy open = { NULL, 1, "org", "role=x" };
    CHECK_INT(auth_verify_policy(&open, yes, NOW, &cl), AUTH_OK);
    CHECK_STR(cl.sub, "");
    CHECK_STR(cl.tenant, "");
    free(yes);
    free(str);
    free(one);
}

/* PARLEY_TENANT_CLAIM and PARLEY_ADMIN_CLAIM are checked at start. */
TEST(claim_settings_checked)
{
    CHECK(auth_admin_claim_valid("role=admin"));
    CHECK(auth_admin_claim_valid("ticket_admin"));
    CHECK(auth_admin_claim_valid("https:example.com.role=a b"));
    CHECK(!auth_admin_claim_valid(""));
    CHECK(!auth_admin_claim_valid("=admin"));
    CHECK(!auth_admin_claim_valid("role="));
    CHECK(!auth_admin_claim_valid("ro le=admin"));
    CHECK(!auth_admin_claim_valid("role=ad\nmin"));
    CHECK(!auth_admin_claim_valid(NULL));
    struct parley_config cfg;
    char err[256];
    REQUIRE(config_defaults(&cfg) == 0);
    CHECK(cfg.tenant_claim == NULL && cfg.admin_claim == NULL);
    CHECK_INT(config_check(&cfg, err, sizeof err), 0);
    /* without a secret there is no token to carry a tenant */
    REQUIRE(config_set(&cfg, "PARLEY_TENANT_CLAIM", "org", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    CHECK(strstr(err, "PARLEY_TENANT_CLAIM") && strstr(err, "PARLEY_JWT_SECRET"));
    REQUIRE(config_set(&cfg, "PARLEY_JWT_SECRET", SECRET, err, sizeof err) == 0);
    CHECK_INT(config_check(&cfg, err, sizeof err), 0);
    /* visitors have no tenant */
    REQUIRE(config_set(&cfg, "PARLEY_ANONYMOUS", "chat,ticket", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    CHECK(strstr(err, "PARLEY_ANONYMOUS") && strstr(err, "PARLEY_TENANT_CLAIM"));
    REQUIRE(config_set(&cfg, "PARLEY_ANONYMOUS", "chat", err, sizeof err) == 0);
    CHECK_INT(config_check(&cfg, err, sizeof err), 0);
    REQUIRE(config_set(&cfg, "PARLEY_TENANT_CLAIM", "o rg", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    REQUIRE(config_set(&cfg, "PARLEY_TENANT_CLAIM", "org=acme", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    REQUIRE(config_set(&cfg, "PARLEY_TENANT_CLAIM", "", err, sizeof err) == 0);   /* unset */
    CHECK_INT(config_check(&cfg, err, sizeof err), 0);
    REQUIRE(config_set(&cfg, "PARLEY_ADMIN_CLAIM", "role=", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) < 0);
    CHECK(strstr(err, "PARLEY_ADMIN_CLAIM") != NULL);
    REQUIRE(config_set(&cfg, "PARLEY_ADMIN_CLAIM", "role=helpdesk-admin", err, sizeof err) == 0);
    CHECK_INT(config_check(&cfg, err, sizeof err), 0);
    config_cleanup(&cfg);
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
    RUN(crit_header_refused);
    RUN(require_exp_policy);
    RUN(token_length_limit);
    RUN(policy_claims);
    RUN(claim_settings_checked);
    return th_done();
}
