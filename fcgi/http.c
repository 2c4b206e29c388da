/* http.c — parley.fcgi's dispatcher and response helpers (http.h).
 *
 * http_dispatch() matches the request against the table in routes.c and
 * enforces each route's flags before its handler runs, in this order:
 * path (404) → Origin allow-list (403) → OPTIONS preflight (204, unless
 * the path has an "OPTIONS" route: then that handler answers) → method
 * (405) → body size (413) → JWT (401) → JSON body (415, 400) → database
 * (503). Every error is {"success": false, "message": ...}. CORS headers
 * go on every response, errors included, so browsers can read them.
 * Runs in whichever thread carries the request; no state of its own but
 * parley_stopping (written by server_life.c's signal thread).
 */
#include "http.h"
#include "auth.h"
#include "ident.h"
#include "proto.h"
#include "status.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

volatile int parley_stopping;

#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Last-Event-ID, X-Parley-Visitor"
#define CORS_MAX_AGE 600

/* ---- small text helpers ---- */

static const char *status_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static int utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

static int utf8_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_seq(p);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* Replaces every byte that is not part of valid UTF-8 with '?', in place,
 * so the text can go into a JSON string. */
static void utf8_scrub(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p;) {
        int n = utf8_seq(p);
        if (n) {
            p += n;
        } else {
            *p++ = '?';
        }
    }
}

static int pct_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes n bytes of s into out (NUL-terminated). plus: '+' is a
 * space (query strings). Returns the decoded length, or -1 for a bad escape
 * or when out is too small. */
static long pct_decode(const char *s, size_t n, char *out, size_t outlen, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= n)
                return -1;
            if ((h = pct_hexval(s[i + 1])) < 0 || (l = pct_hexval(s[i + 2])) < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    if (outlen == 0)
        return -1;
    out[o] = '\0';
    return (long)o;
}

/* ---- response helpers ---- */

static int req_is_head(const struct request *r)
{
    return r->method && strcmp(r->method, "HEAD") == 0;
}

static int raw_write(struct request *r, const char *data, size_t len)
{
    struct response *res = r->res;
    if (res->finished || res->gone)
        return -1;
    if (len == 0)
        return 0;
    if (res->ops->write(res, data, len) < 0) {
        res->gone = 1;
        return -1;
    }
    return 0;
}

static int raw_puts(struct request *r, const char *s)
{
    return raw_write(r, s, strlen(s));
}

int res_start(struct request *r, int status, const char *content_type, const char *extra)
{
    struct response *res = r->res;
    if (res->started || res->finished)
        return -1;
    res->started = 1;
    res->status = status;
    char line[160];
    int n = snprintf(line, sizeof line, "Status: %d %s\r\n", status, status_reason(status));
    int rc = raw_write(r, line, (size_t)n);
    if (content_type && *content_type) {
        rc |= raw_puts(r, "Content-Type: ");
        rc |= raw_puts(r, content_type);
        rc |= raw_puts(r, "\r\n");
    }
    if (r->route_flags & F_STREAM)
        rc |= raw_puts(r, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    rc |= raw_puts(r, res->extra_headers);
    if (extra)
        rc |= raw_puts(r, extra);
    rc |= raw_puts(r, "\r\n");
    return rc ? -1 : 0;
}

int res_write(struct request *r, const char *data, size_t len)
{
    if (!r->res->started || r->res->finished)
        return -1;
    if (req_is_head(r))
        return r->res->gone ? -1 : 0;
    return raw_write(r, data, len);
}

int res_printf(struct request *r, const char *fmt, ...)
{
    char small[1024], *buf = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= sizeof small) {
        buf = malloc((size_t)n + 1);
        if (!buf)
            return -1;
        va_start(ap, fmt);
        vsnprintf(buf, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    int rc = res_write(r, buf, (size_t)n);
    if (buf != small)
        free(buf);
    return rc;
}

int res_flush(struct request *r)
{
    struct response *res = r->res;
    if (res->finished || res->gone)
        return -1;
    if (res->ops->flush && res->ops->flush(res) < 0) {
        res->gone = 1;
        return -1;
    }
    return 0;
}

int res_json(struct request *r, int status, json_t *body)
{
    if (r->res->started) {
        json_decref(body);
        return -1;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(body);
    if (!text) {
        fprintf(stderr, "parley.fcgi: %s %s: could not build the JSON response (status %d)\n",
                r->method ? r->method : "?", r->path ? r->path : "?", status);
        static const char oom[] =
            "{\"success\":false,\"message\":\"Internal error: could not build the response\"}";
        if (res_start(r, 500, "application/json", NULL) < 0)
            return -1;
        return res_write(r, oom, sizeof oom - 1);
    }
    int rc = res_json_text(r, status, text, strlen(text));
    free(text);
    return rc;
}

int res_json_text(struct request *r, int status, const char *text, size_t len)
{
    if (r->res->started)
        return -1;
    char extra[64] = "";
    if (!(r->route_flags & F_STREAM))
        snprintf(extra, sizeof extra, "Content-Length: %zu\r\n", len);
    int rc = res_start(r, status, "application/json", extra);
    if (rc == 0)
        rc = res_write(r, text, len);
    return rc;
}

static int send_error(struct request *r, int status, const char *code, char *msg)
{
    utf8_scrub(msg);
    if (status >= 500 || r->res->started)
        fprintf(stderr, "parley.fcgi: %d %s %s: %s%s\n", status, r->method ? r->method : "?",
                r->path ? r->path : "?", msg,
                r->res->started ? " (after the response started; not sent)" : "");
    if (r->res->started)
        return -1;
    return res_json(r, status, json_pack("{s:b, s:s, s:s}", "success", 0, "message", msg,
                                         "code", code));
}

int res_error(struct request *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_error(r, status, perr_code(http_kind_of(status)), msg);
}

int res_error_code(struct request *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return send_error(r, status, code ? code : perr_code(http_kind_of(status)), msg);
}

int res_empty(struct request *r, int status)
{
    return res_start(r, status, NULL, status == 204 || status == 304 ? NULL : "Content-Length: 0\r\n");
}

int http_park(struct request *r, void (*fn)(struct request *r, void *arg), void *arg)
{
    r->res->parked = 1;
    r->park = fn;
    r->park_arg = arg;
    return 0;
}

void res_finish(struct request *r)
{
    struct response *res = r->res;
    if (res->finished)
        return;
    if (!res->started)
        res_error(r, 500, "Internal error: no response was produced");
    res->finished = 1;
    if (res->ops->finish)
        res->ops->finish(res);
}

/* ---- query strings and paths ---- */

const char *req_query(const struct request *r, const char *name, char *buf, size_t buflen)
{
    const char *q = r->query;
    if (!q || !buflen)
        return NULL;
    size_t nlen = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq ? eq : end;
        char key[128];
        long klen = pct_decode(q, (size_t)(kend - q), key, sizeof key, 1);
        if (klen == (long)nlen && memcmp(key, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : end;
            long vlen = pct_decode(v, (size_t)(end - v), buf, buflen, 1);
            if (vlen < 0 || strlen(buf) != (size_t)vlen)
                return NULL;
            return buf;
        }
        q = amp ? amp + 1 : end;
    }
    return NULL;
}

/* 1 when the query has a parameter called name (whatever its value). */
static int req_query_present(const struct request *r, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *q = r->query; q && *q;) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq ? eq : end;
        char key[128];
        long klen = pct_decode(q, (size_t)(kend - q), key, sizeof key, 1);
        if (klen == (long)nlen && memcmp(key, name, nlen) == 0)
            return 1;
        q = amp ? amp + 1 : end;
    }
    return 0;
}

const char *http_request_token(const struct request *r, char *buf, size_t buflen, int *too_long)
{
    if (too_long)
        *too_long = 0;
    const char *tok = auth_bearer(r->authorization);
    if (tok)
        return tok;
    tok = req_query(r, "token", buf, buflen);
    if (!tok && too_long && req_query_present(r, "token"))
        *too_long = 1;
    return tok;
}

int req_query_int(const struct request *r, const char *name, long long def, long long min,
                  long long max, long long *out)
{
    char buf[32];
    const char *v = req_query(r, name, buf, sizeof buf);
    *out = def;
    if (!v)
        return 0;
    if (!*v || *v == '+' || *v == ' ' || *v == '\t')
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end || errno == ERANGE || n < min || n > max)
        return -1;
    *out = n;
    return 1;
}

/* 1 if the segment starting at s (after a '/') is the first literal
 * segment of some route ("api", "brands"). */
static int is_route_root(const char *s)
{
    size_t n = strcspn(s, "/");
    for (size_t i = 0; i < http_nroutes; i++) {
        const char *p = http_routes[i].pattern + 1;
        size_t pn = strcspn(p, "/");
        if (pn == n && p[0] != '{' && strncmp(p, s, n) == 0)
            return 1;
    }
    return 0;
}

/* Pointer to the first "/<root>" segment of path, NULL if none. */
static const char *find_route_root(const char *path)
{
    for (const char *p = path; p && *p; p = strchr(p + 1, '/'))
        if (*p == '/' && is_route_root(p + 1))
            return p;
    return NULL;
}

const char *http_path_from_cgi(const char *request_uri, const char *script_name,
                               const char *path_info, char *out, size_t outlen)
{
    char uri[4096], cgi[4096];         /* not zero-filled: 8 KB per request */
    uri[0] = cgi[0] = '\0';
    if (request_uri && *request_uri) {
        const char *u = request_uri;
        if (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0) {
            u = strstr(u, "//") + 2;             /* absolute-form: skip the authority */
            u += strcspn(u, "/?#");
        }
        size_t n = strcspn(u, "?#");
        if (n < sizeof uri) {
            memcpy(uri, u, n);
            uri[n] = '\0';
        }
    }
    /* SCRIPT_NAME and PATH_INFO come decoded: re-encode '%' so that the
     * dispatcher's decoding gives them back unchanged. */
    size_t o = 0;
    for (int part = 0; part < 2; part++) {
        const char *s = part ? path_info : script_name;
        for (; s && *s && o + 4 < sizeof cgi; s++) {
            if (*s == '%') {
                memcpy(cgi + o, "%25", 3);
                o += 3;
            } else {
                cgi[o++] = *s;
            }
        }
    }
    cgi[o] = '\0';
    const char *pick = find_route_root(uri);
    if (!pick)
        pick = find_route_root(cgi);
    if (!pick)
        pick = uri[0] == '/' ? uri : cgi[0] == '/' ? cgi : "/";
    str_copy(out, outlen, pick);
    return out;
}

/* ---- routing ---- */

struct captures {
    size_t off[HTTP_MAX_PARAMS];       /* where each capture starts in buf */
    int n;
    char buf[HTTP_PARAM_BUF];
};

/* Matches path against pattern segment by segment. Literal segments
 * compare decoded; {x} takes one non-empty segment, decoded, which must be
 * valid UTF-8 without '/' or NUL. 1 on a match (cap filled), else 0. */
static int route_match(const char *pat, const char *path, struct captures *cap)
{
    size_t used = 0;
    cap->n = 0;
    for (;;) {
        if (*pat != '/' || *path != '/')
            return 0;
        pat++;
        path++;
        size_t pn = strcspn(pat, "/"), sn = strcspn(path, "/");
        int is_cap = pn >= 2 && pat[0] == '{' && pat[pn - 1] == '}';
        if (is_cap) {
            if (sn == 0 || cap->n == HTTP_MAX_PARAMS)
                return 0;
            char *dst = cap->buf + used;
            long dn = pct_decode(path, sn, dst, sizeof cap->buf - used, 0);
            if (dn <= 0 || strlen(dst) != (size_t)dn || strchr(dst, '/') || !utf8_valid(dst))
                return 0;
            cap->off[cap->n++] = used;
            used += (size_t)dn + 1;
        } else {
            char seg[256];
            long dn = pct_decode(path, sn, seg, sizeof seg, 0);
            if (dn != (long)pn || memcmp(seg, pat, pn) != 0)
                return 0;
        }
        pat += pn;
        path += sn;
        if (!*pat || !*path)
            return !*pat && !*path;
    }
}

static void hdr_append(char *dst, size_t len, const char *s)
{
    size_t n = strlen(dst);
    if (n < len)
        snprintf(dst + n, len - n, "%s", s);
}

/* Adds method to a ", "-separated list unless present. */
static void add_method(char *list, size_t len, const char *m)
{
    size_t ml = strlen(m);
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n == ml && strncmp(p, m, ml) == 0)
            return;
        p += n;
        while (*p == ',' || *p == ' ')
            p++;
    }
    if (*list)
        hdr_append(list, len, ", ");
    hdr_append(list, len, m);
}

/* 1 for application/json, application/<x>+json, with at most a UTF-8 charset. */
static int json_media_type(const char *ct)
{
    if (!ct)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    int ok = (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
             (n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
              strncasecmp(ct + n - 5, "+json", 5) == 0);
    if (!ok)
        return 0;
    for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
        const char *a = p + 1;
        while (*a == ' ' || *a == '\t')
            a++;
        if (strncasecmp(a, "charset=", 8) == 0) {
            a += 8;
            if (*a == '"')
                a++;
            if (strncasecmp(a, "utf-8", 5) != 0 && strncasecmp(a, "utf8", 4) != 0)
                return 0;
        }
    }
    return 1;
}

/* The path for messages: truncated, printable. */
static void dispatch_shown_path(const struct request *r, char *out, size_t len)
{
    snprintf(out, len, "%.200s%s", r->path, strlen(r->path) > 200 ? "..." : "");
}

int http_visitor(struct request *r, int issue)
{
    const struct parley_config *cfg = r->ctx ? r->ctx->cfg : NULL;
    r->user[0] = '\0';
    if (!cfg || config_open_mode(cfg))
        return -1;
    char tok[VISITOR_TOKEN_MAX + 8];
    const char *t = r->visitor_header && *r->visitor_header ? r->visitor_header : NULL;
    if (!t)
        t = req_query(r, VISITOR_QUERY, tok, sizeof tok);
    if (!t)
        t = visitor_cookie_find(r->cookie, tok, sizeof tok);
    if (!(t && visitor_verify(cfg->jwt_secret, t, r->user, sizeof r->user) == 0)) {
        char cookie[256], h[420];
        if (!issue || visitor_issue(cfg->jwt_secret, r->visitor_new, sizeof r->visitor_new,
                                    r->user, sizeof r->user) < 0 ||
            visitor_set_cookie(cookie, sizeof cookie, r->visitor_new,
                               visitor_https(r->https, r->forwarded_proto)) < 0) {
            r->user[0] = r->visitor_new[0] = '\0';
            return -1;
        }
        snprintf(h, sizeof h, "Set-Cookie: %s\r\nX-Parley-Visitor: %s\r\n", cookie,
                 r->visitor_new);
        hdr_append(r->res->extra_headers, sizeof r->res->extra_headers, h);
    }
    ident_peer(r->peer, sizeof r->peer, r->user, r->remote_addr);   /* by address */
    return 0;
}

/* 1 when one of the protocols whose visitors a route's F_ANON_* flags
 * admit is listed in PARLEY_ANONYMOUS (a seed 004 visitor creates and reads
 * its conversation through the seed 001 REST routes, flagged for both). */
static int dispatch_anon_allowed(const char *anonymous, int flags)
{
    return ((flags & F_ANON_TICKET) && visitor_allowed(anonymous, PROTO_TICKET)) ||
           ((flags & F_ANON_CHAT) && visitor_allowed(anonymous, PROTO_CHAT)) ||
           ((flags & F_ANON_SEND) && visitor_allowed(anonymous, PROTO_SEND));
}

/* Sets up r->user from a token (or a visitor's, F_VISITOR / F_ANON_*).
 * Returns 0, or -1 with the 401 written. */
static int dispatch_auth(struct request *r, int flags)
{
    const struct parley_config *cfg = r->ctx ? r->ctx->cfg : NULL;
    if (!cfg || config_open_mode(cfg))
        return 0;                                /* open mode: user "" */
    char qtok[AUTH_MAX_TOKEN + 2];
    int too_long = 0;
    const char *tok = http_request_token(r, qtok, sizeof qtok, &too_long);
    if (!tok && !too_long && !(flags & F_AUTH))
        return 0;
    if (!tok && !too_long) {
        if ((flags & F_VISITOR) && visitor_any(cfg->anonymous) && http_visitor(r, 0) == 0)
            return 0;
        if (dispatch_anon_allowed(cfg->anonymous, flags) && http_visitor(r, 1) == 0)
            return 0;
    }
    /* one verification gives the request every claim (struct auth_claims) */
    enum auth_result ar = too_long ? AUTH_TOO_LONG : auth_verify_config(cfg, tok, 0, &r->claims);
    if (ar == AUTH_OK) {
        str_copy(r->user, sizeof r->user, r->claims.sub);
        r->has_claims = 1;
        return 0;
    }
    r->user[0] = '\0';
    hdr_append(r->res->extra_headers, sizeof r->res->extra_headers,
           ar == AUTH_MISSING ? "WWW-Authenticate: Bearer\r\n"
                              : "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
    res_error(r, 401, "Unauthorized: %s", auth_message(ar));
    return -1;
}

static void dispatch_preflight(struct request *r, const char *allow)
{
    char extra[512];
    snprintf(extra, sizeof extra,
             "Allow: %s\r\n"
             "Access-Control-Allow-Methods: %s\r\n"
             "Access-Control-Allow-Headers: " CORS_ALLOW_HEADERS "\r\n"
             "Access-Control-Max-Age: %d\r\n",
             allow, allow, CORS_MAX_AGE);
    res_start(r, 204, NULL, extra);
}

/* F_STREAM handlers running now (http_streams_open). */
static int streams_open;

int http_streams_open(void)
{
    return __atomic_load_n(&streams_open, __ATOMIC_RELAXED);
}

void http_streams_held(int delta)
{
    __atomic_add_fetch(&streams_open, delta, __ATOMIC_RELAXED);
}

void http_dispatch(struct request *r)
{
    struct response *res = r->res;
    const struct parley_config *cfg = r->ctx ? r->ctx->cfg : NULL;
    char shown[220];

    r->nparams = 0;
    r->route_flags = 0;
    r->json = NULL;
    r->user[0] = '\0';
    memset(&r->claims, 0, sizeof r->claims);
    r->claims.token_budget = -1;
    r->has_claims = 0;
    r->visitor_new[0] = '\0';
    if (!r->method || !*r->method)
        r->method = "GET";
    if (!r->path || !*r->path)
        r->path = "/";
    if (!r->query)
        r->query = "";
    if (!r->peer[0])
        ident_peer(r->peer, sizeof r->peer, NULL, r->remote_addr);
    dispatch_shown_path(r, shown, sizeof shown);

    /* CORS: every response says it varies by Origin; an allowed origin is
     * echoed so that browsers let the page read the response. */
    const char *origin = r->origin && *r->origin ? r->origin : NULL;
    int origin_ok = ident_origin_allowed(cfg ? cfg->allowed_origins : NULL, origin);
    res->extra_headers[0] = '\0';
    hdr_append(res->extra_headers, sizeof res->extra_headers, "Vary: Origin\r\nX-Content-Type-Options: nosniff\r\n");
    if (origin && origin_ok && strlen(origin) < 300 && !strpbrk(origin, "\r\n")) {
        char h[480];
        snprintf(h, sizeof h, "Access-Control-Allow-Origin: %s\r\n"
                 "Access-Control-Expose-Headers: Content-Disposition, Retry-After, X-Parley-Visitor\r\n", origin);
        hdr_append(res->extra_headers, sizeof res->extra_headers, h);
    }

    /* Route lookup: the first route whose path and method match; the
     * methods of every route whose path matches make the Allow list. */
    int head = strcmp(r->method, "HEAD") == 0;
    const struct route *hit = NULL;
    int path_matched = 0;
    char allow[128] = "";
    struct captures cap, hitcap;
    for (size_t i = 0; i < http_nroutes; i++) {
        const struct route *rt = &http_routes[i];
        if (!route_match(rt->pattern, r->path, &cap))
            continue;
        path_matched = 1;
        add_method(allow, sizeof allow, rt->method);
        if (strcmp(rt->method, "GET") == 0 && !(rt->flags & F_STREAM))
            add_method(allow, sizeof allow, "HEAD");
        if (!hit && (strcmp(rt->method, r->method) == 0 ||
                     (head && strcmp(rt->method, "GET") == 0 && !(rt->flags & F_STREAM)))) {
            hit = rt;
            hitcap = cap;
        }
    }
    if (path_matched)
        add_method(allow, sizeof allow, "OPTIONS");

    if (!path_matched) {
        res_error(r, 404, "Not found: %.16s %s", r->method, shown);
        goto done;
    }
    if (!origin_ok) {
        res_error(r, 403, "Origin %.200s is not allowed (PARLEY_ALLOWED_ORIGINS)", origin);
        goto done;
    }
    if (strcmp(r->method, "OPTIONS") == 0 && !hit) {
        dispatch_preflight(r, allow);
        goto done;
    }
    if (!hit) {
        char h[160];
        snprintf(h, sizeof h, "Allow: %s\r\n", allow);
        hdr_append(res->extra_headers, sizeof res->extra_headers, h);
        res_error(r, 405, "Method %.16s not allowed on %s (allowed: %s)", r->method, shown, allow);
        goto done;
    }

    r->route_flags = hit->flags;
    r->nparams = hitcap.n;
    memcpy(r->param_buf, hitcap.buf, sizeof r->param_buf);
    for (int i = 0; i < hitcap.n; i++)
        r->params[i] = r->param_buf + hitcap.off[i];

    if (r->body_len > HTTP_MAX_BODY) {
        res_error(r, 413, "Request body too large: %zu bytes (at most %d)", r->body_len,
                  HTTP_MAX_BODY);
        goto done;
    }
    if ((hit->flags & (F_AUTH | F_USER)) && dispatch_auth(r, hit->flags) < 0)
        goto done;
    if (r->user[0])
        ident_peer(r->peer, sizeof r->peer, r->user, r->remote_addr);

    if (hit->flags & F_JSON) {
        if (!json_media_type(r->content_type)) {
            char ct[80];
            snprintf(ct, sizeof ct, "%.60s", r->content_type ? r->content_type : "none");
            res_error(r, 415, "Unsupported Content-Type (%s): send the body as application/json", ct);
            goto done;
        }
        json_error_t je;
        r->json = json_loadb(r->body ? r->body : "", r->body ? r->body_len : 0, 0, &je);
        if (!r->json) {
            res_error(r, 400, "Invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
            goto done;
        }
        if (!json_is_object(r->json)) {
            res_error(r, 400, "Invalid JSON: the body must be a JSON object");
            goto done;
        }
    }
    if (!(hit->flags & F_NODB) && (!r->ctx || !r->ctx->db)) {
        res_error_kind(r, PERR_DB_UNAVAILABLE, "Database unavailable (see the server's error log)");
        goto done;
    }

    if (hit->flags & F_STREAM)
        __atomic_add_fetch(&streams_open, 1, __ATOMIC_RELAXED);
    hit->handler(r);
    if (hit->flags & F_STREAM)
        __atomic_sub_fetch(&streams_open, 1, __ATOMIC_RELAXED);
    if (!res->started && !res->parked)
        res_error(r, 500, "Internal error: the handler sent no response");
done:
    if (!res->parked)
        res_finish(r);
    json_decref(r->json);
    r->json = NULL;
}
