/* visitor.c — anonymous visitors' identities and the PARLEY_ANONYMOUS
 * list (visitor.h). */
#include "visitor.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define ID_HEX   32                     /* 128 random bits */
#define MAC_HEX  64
#define TOKEN_LEN (3 + ID_HEX + 1 + MAC_HEX)

static const char *const kind_names[] = {
    [PROTO_TICKET] = "ticket", [PROTO_CHAT] = "chat", [PROTO_BRAND] = "brand",
    [PROTO_SEND] = "send", [PROTO_PHOENIX] = "phoenix",
};
#define NKINDS ((int)(sizeof kind_names / sizeof kind_names[0]))

const char *visitor_kind_name(int kind)
{
    return kind >= 0 && kind < NKINDS ? kind_names[kind] : NULL;
}

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

/* Calls fn(name, n, arg) for each entry of list (trimmed); stops at the
 * first non-zero return and returns it. */
static int each_entry(const char *list, int (*fn)(const char *, size_t, void *), void *arg)
{
    for (const char *p = list ? list : ""; *p;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && blank(*a))
            a++;
        while (b > a && blank(b[-1]))
            b--;
        int r = fn(a, (size_t)(b - a), arg);
        if (r)
            return r;
        p = *e ? e + 1 : e;
    }
    return 0;
}

static int name_kind(const char *s, size_t n)
{
    for (int k = 0; k < NKINDS; k++)
        if (strlen(kind_names[k]) == n && !strncmp(kind_names[k], s, n))
            return k;
    return -1;
}

struct check { char *err; size_t errlen; };

static int check_one(const char *s, size_t n, void *arg)
{
    struct check *ck = arg;
    if (n == 0)
        return set_err(ck->err, ck->errlen, "PARLEY_ANONYMOUS: empty protocol name in the list "
                       "(use a comma list of ticket, chat, brand, send)");
    if (name_kind(s, n) < 0)
        return set_err(ck->err, ck->errlen, "PARLEY_ANONYMOUS: unknown protocol '%.*s' (use a "
                       "comma list of ticket, chat, brand, send, phoenix)",
                       (int)(n > 60 ? 60 : n), s);
    if (name_kind(s, n) == PROTO_PHOENIX)
        return set_err(ck->err, ck->errlen, "PARLEY_ANONYMOUS: phoenix (seed 003) has no "
                       "anonymous visitors: its clients send a token (docs/anonymous.md)");
    return 0;
}

int visitor_list_check(const char *list, char *err, size_t errlen)
{
    if (!list || !*list)
        return 0;
    struct check ck = { err, errlen };
    return each_entry(list, check_one, &ck) ? -1 : 0;
}

static int match_one(const char *s, size_t n, void *arg)
{
    return name_kind(s, n) == *(int *)arg;
}

int visitor_allowed(const char *list, int kind)
{
    if (!list || kind < 0 || kind >= NKINDS || kind == PROTO_PHOENIX)
        return 0;
    return each_entry(list, match_one, &kind) > 0;
}

static int any_one(const char *s, size_t n, void *arg)
{
    (void)arg;
    return name_kind(s, n) >= 0;
}

int visitor_any(const char *list)
{
    return list && each_entry(list, any_one, NULL) > 0;
}

int visitor_is(const char *user)
{
    return user && !strncmp(user, VISITOR_PREFIX, strlen(VISITOR_PREFIX));
}

static void hexify(const unsigned char *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The MAC of id (ID_HEX hex chars) under secret, as MAC_HEX hex chars. */
static int mac_hex(const char *secret, const char *id, char out[MAC_HEX + 1])
{
    char msg[64];
    int mlen = snprintf(msg, sizeof msg, "parley-visitor-v1:%.*s", ID_HEX, id);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg,
              (size_t)mlen, md, &mdlen) || mdlen != MAC_HEX / 2)
        return -1;
    hexify(md, mdlen, out);
    return 0;
}

int visitor_issue(const char *secret, char *token, size_t tlen, char *user, size_t ulen)
{
    if (token && tlen)
        token[0] = '\0';
    if (user && ulen)
        user[0] = '\0';
    if (!secret || !*secret || !token || tlen <= TOKEN_LEN || !user ||
        ulen <= strlen(VISITOR_PREFIX) + ID_HEX)
        return -1;
    unsigned char b[ID_HEX / 2];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return -1;
    char id[ID_HEX + 1], mac[MAC_HEX + 1];
    hexify(b, sizeof b, id);
    if (mac_hex(secret, id, mac) < 0)
        return -1;
    snprintf(token, tlen, "v1.%s.%s", id, mac);
    snprintf(user, ulen, VISITOR_PREFIX "%s", id);
    return 0;
}

static int all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int visitor_verify(const char *secret, const char *token, char *user, size_t ulen)
{
    if (user && ulen)
        user[0] = '\0';
    if (!secret || !*secret || !token || !user || ulen <= strlen(VISITOR_PREFIX) + ID_HEX)
        return -1;
    if (strlen(token) != TOKEN_LEN || strncmp(token, "v1.", 3) != 0 || token[3 + ID_HEX] != '.' ||
        !all_hex(token + 3, ID_HEX) || !all_hex(token + 4 + ID_HEX, MAC_HEX))
        return -1;
    char mac[MAC_HEX + 1];
    if (mac_hex(secret, token + 3, mac) < 0 ||
        CRYPTO_memcmp(mac, token + 4 + ID_HEX, MAC_HEX) != 0)
        return -1;
    snprintf(user, ulen, VISITOR_PREFIX "%.*s", ID_HEX, token + 3);
    return 0;
}

const char *visitor_cookie_find(const char *header, char *out, size_t len)
{
    if (!header || !out || !len)
        return NULL;
    size_t nl = strlen(VISITOR_COOKIE);
    for (const char *p = header; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *e = strchr(p, ';');
        if (!e)
            e = p + strlen(p);
        if ((size_t)(e - p) > nl && !strncmp(p, VISITOR_COOKIE, nl) && p[nl] == '=') {
            const char *v = p + nl + 1, *ve = e;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
                v++;
                ve--;
            }
            if ((size_t)(ve - v) >= len)
                return NULL;
            memcpy(out, v, (size_t)(ve - v));
            out[ve - v] = '\0';
            return out;
        }
        p = e;
    }
    return NULL;
}

int visitor_set_cookie(char *out, size_t len, const char *token, int secure)
{
    int n = snprintf(out, len, VISITOR_COOKIE "=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax%s",
                     token ? token : "", VISITOR_COOKIE_MAX_AGE, secure ? "; Secure" : "");
    if (n < 0 || (size_t)n >= len) {
        if (len)
            out[0] = '\0';
        return -1;
    }
    return 0;
}

int visitor_https(const char *https_param, const char *forwarded_proto)
{
    if (https_param && (!strcasecmp(https_param, "on") || !strcmp(https_param, "1")))
        return 1;
    if (forwarded_proto) {
        while (blank(*forwarded_proto))
            forwarded_proto++;
        size_t n = strcspn(forwarded_proto, ", \t");
        if (n == 5 && !strncasecmp(forwarded_proto, "https", 5))
            return 1;
    }
    return 0;
}
