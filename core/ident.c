/* ident.c — origins, ids, rate-limit identities, bell path (ident.h). */
#include "ident.h"
#include "util.h"
#include "visitor.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

int ident_origin_allowed(const char *list, const char *origin)
{
    if (!origin || !*origin || !list)
        return 1;
    const char *lp = list;
    while (blank(*lp) || *lp == ',')
        lp++;
    if (!*lp)
        return 1;                       /* only blanks and commas: no list */
    size_t ol = strlen(origin);
    while (ol > 0 && (origin[ol - 1] == '/' || blank(origin[ol - 1])))
        ol--;
    while (ol > 0 && blank(*origin)) {
        origin++;
        ol--;
    }
    for (const char *p = list; *p;) {
        while (blank(*p) || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (blank(t[-1]) || t[-1] == '/'))
            t--;
        size_t n = (size_t)(t - p);
        if ((n == 1 && *p == '*') || (n > 0 && n == ol && strncasecmp(p, origin, ol) == 0))
            return 1;
        p = e;
    }
    return 0;
}

int ident_name_valid(const char *id, size_t max_len)
{
    if (!id)
        return 0;
    size_t n = strlen(id);
    if (n == 0 || n > max_len)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

int ident_ticket_id_valid(const char *id)
{
    return ident_name_valid(id, 64);
}

void ident_tenant_scope(const char *tenant, char *out)
{
    out[0] = '\0';
    if (!tenant || !*tenant)
        return;
    char hex[65];
    sha256_hex(tenant, strlen(tenant), hex);
    memcpy(out, hex, IDENT_SCOPE_LEN);
    out[IDENT_SCOPE_LEN] = '\0';
}

int ident_scope_valid(const char *s)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0)
        return 1;
    if (n != IDENT_SCOPE_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

char *ident_ticket_stored(char *out, size_t outlen, const char *id, const char *scope)
{
    int n = scope && *scope ? snprintf(out, outlen, "%s~%s", id, scope)
                            : snprintf(out, outlen, "%s", id);
    return n >= 0 && (size_t)n < outlen ? out : NULL;
}

char *ident_peer(char *out, size_t outlen, const char *user, const char *addr)
{
    if (!out || outlen == 0)
        return out;
    if (user && *user && !visitor_is(user)) {   /* visitors: by address */
        size_t n = strlen(user);
        if (n <= 100) {
            snprintf(out, outlen, "user:%s", user);
        } else {
            char hex[65];
            sha256_hex(user, n, hex);
            snprintf(out, outlen, "user:sha256:%s", hex);
        }
    } else {
        snprintf(out, outlen, "ip:%.100s", addr && *addr ? addr : "?");
    }
    return out;
}

int ident_bell_path(const char *db_path, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s-bell", db_path ? db_path : "");
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen)
            out[0] = '\0';
        return -1;
    }
    return 0;
}
