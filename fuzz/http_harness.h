/* http_harness.h — parley.fcgi's router (fcgi/http.c: http_dispatch with
 * the routing table of fcgi/routes.c) driven without a web server, as
 * tests/unit/memres.h does, for fuzz_http.c, fuzz_poll.c and
 * fuzz_phxlp.c.
 *
 * A request is text: "METHOD /path?query" on the first line, then header
 * lines "Name: value" (content-type, authorization, origin,
 * last-event-id, x-phoenix-longpoll-token, x-phoenix-authtoken,
 * access-control-request-headers, cookie, x-parley-visitor, https,
 * x-forwarded-proto, user-agent, x-client-version, remote-addr; and
 * script-name, path-info: the CGI variables http_path_from_cgi reads with
 * the target as REQUEST_URI) up to an empty line, then the body. Before parsing, "$JWT" becomes a valid token
 * of user alice, "$BOB" one of bob, "$ADM" an admin's, and "$ID" the last
 * id a response handed out (its "sid", "token", "id" or "session_id"), so
 * a sequence can reach what a previous request created.
 *
 * parley_stopping is set: every wait (a long-poll GET, an SSE stream)
 * ends at once, as at shutdown. Generations a request starts go to the
 * process's generation loop and fail at once (the upstream refuses).
 * Configurations: byte 0 of an input picks one of 8 (JWT secret or open
 * mode; an Origin allow-list or none; anonymous visitors or none).
 */
#ifndef PARLEY_HTTP_HARNESS_H
#define PARLEY_HTTP_HARNESS_H
#include "fuzz.h"
#include "memres.h"
#include "auth.h"
#include "proto_harness.h"

#include <jansson.h>
#include <stddef.h>
#include <strings.h>

#define FZH_SECRET "fuzz-secret-0123456789abcdef"

FZ_UNUSED static struct parley_config fzh_cfg[8];
FZ_UNUSED static int fzh_ready;
FZ_UNUSED static char *fzh_jwt, *fzh_bob, *fzh_adm;
FZ_UNUSED static char fzh_id[256];

static inline void fzh_setup(void)
{
    char err[512];
    for (int i = 0; i < 8; i++) {
        fz_config(&fzh_cfg[i]);
        if (((i & 1) && config_set(&fzh_cfg[i], "PARLEY_JWT_SECRET", FZH_SECRET, err, sizeof err) < 0) ||
            ((i & 2) && config_set(&fzh_cfg[i], "PARLEY_ALLOWED_ORIGINS", "https://ok.example",
                                   err, sizeof err) < 0) ||
            ((i & 4) && config_set(&fzh_cfg[i], "PARLEY_ANONYMOUS", "ticket,chat,brand,send",
                                   err, sizeof err) < 0))
            fz_die("config", err);
    }
    fzh_jwt = auth_make_token(FZH_SECRET, "alice", 0);
    fzh_bob = auth_make_token(FZH_SECRET, "bob", 0);
    fzh_adm = auth_make_token_role(FZH_SECRET, "root", 0, "admin");
    if (!fzh_jwt || !fzh_bob || !fzh_adm)
        fz_die("tokens", "");
    parley_stopping = 1;
    fzh_ready = 1;
}

/* text with the $ names replaced (new string). */
static inline char *fzh_subst(const char *s, size_t n)
{
    struct { const char *name; const char *val; } v[4] = {
        { "$JWT", fzh_jwt }, { "$BOB", fzh_bob }, { "$ADM", fzh_adm }, { "$ID", fzh_id } };
    size_t cap = n * 2 + 64, o = 0;
    char *out = malloc(cap);
    if (!out)
        abort();
    for (size_t i = 0; i < n;) {
        const char *val = NULL;
        size_t skip = 1;
        if (s[i] == '$')
            for (int k = 0; k < 4; k++) {
                size_t l = strlen(v[k].name);
                if (i + l <= n && memcmp(s + i, v[k].name, l) == 0) {
                    val = v[k].val;
                    skip = l;
                    break;
                }
            }
        size_t add = val ? strlen(val) : 1;
        if (o + add + 1 > cap) {
            cap = (o + add + 1) * 2;
            out = realloc(out, cap);
            if (!out)
                abort();
        }
        if (val)
            memcpy(out + o, val, add);
        else
            out[o] = s[i];
        o += add;
        i += skip;
    }
    out[o] = '\0';
    return out;
}

/* Remembers the id a response body hands out. */
static inline void fzh_capture(const char *body)
{
    json_t *o = json_loads(body, JSON_DECODE_ANY, NULL);
    static const char *const keys[] = { "sid", "token", "session_id", "id" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = json_string_value(json_object_get(o, keys[i]));
        if (v && *v) {
            snprintf(fzh_id, sizeof fzh_id, "%s", v);
            break;
        }
    }
    json_decref(o);
}

/* Dispatches one request written as text (n bytes) on ctx. Returns the
 * status (0: no response). */
static inline int fzh_request(struct parley_ctx *ctx, const char *text, size_t n)
{
    char *t = fzh_subst(text, n);       /* a NUL (none in a split input) ends it */
    char *end = t + strlen(t);
    char *nl = strchr(t, '\n');
    char *line_end = nl ? nl : end;
    *line_end = '\0';
    char *sp = strchr(t, ' ');
    const char *method = t, *path = "/";
    if (sp) {
        *sp = '\0';
        path = sp + 1;
    }
    char *q = strchr((char *)path, '?');
    const char *query = "";
    if (q) {
        *q = '\0';
        query = q + 1;
    }
    struct request r;
    struct response res;
    struct mem m = { NULL, 0, 0, 0 };
    memset(&r, 0, sizeof r);
    memset(&res, 0, sizeof res);
    res.ops = &mem_ops;
    res.impl = &m;
    r.res = &res;
    r.ctx = ctx;
    r.method = method;
    r.path = path;
    r.query = query;
    r.remote_addr = "127.0.0.1";
    const char *script_name = NULL, *path_info = NULL;
    char *p = nl ? nl + 1 : end;
    while (p < end) {
        char *e = strchr(p, '\n');
        char *le = e ? e : end;
        if (le > p && le[-1] == '\r')
            le[-1] = '\0';
        *le = '\0';
        if (!*p) {
            p = le + 1;
            break;                          /* the blank line: the body follows */
        }
        char *colon = strchr(p, ':');
        if (colon) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            static const struct { const char *name; size_t off; } hs[] = {
                { "content-type", offsetof(struct request, content_type) },
                { "authorization", offsetof(struct request, authorization) },
                { "origin", offsetof(struct request, origin) },
                { "last-event-id", offsetof(struct request, last_event_id) },
                { "x-phoenix-longpoll-token", offsetof(struct request, phx_longpoll_token) },
                { "x-phoenix-authtoken", offsetof(struct request, phx_auth_token) },
                { "access-control-request-headers", offsetof(struct request, acr_headers) },
                { "cookie", offsetof(struct request, cookie) },
                { "x-parley-visitor", offsetof(struct request, visitor_header) },
                { "https", offsetof(struct request, https) },
                { "x-forwarded-proto", offsetof(struct request, forwarded_proto) },
                { "user-agent", offsetof(struct request, user_agent) },
                { "x-client-version", offsetof(struct request, client_version) },
                { "remote-addr", offsetof(struct request, remote_addr) },
            };
            for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
                if (strcasecmp(p, hs[i].name) == 0)
                    *(const char **)(void *)((char *)&r + hs[i].off) = v;
            if (strcasecmp(p, "script-name") == 0)
                script_name = v;
            if (strcasecmp(p, "path-info") == 0)
                path_info = v;
        }
        p = le + 1;
    }
    /* the path as the FastCGI adapter finds it: REQUEST_URI (the request
     * line's target), else SCRIPT_NAME + PATH_INFO, mount prefix dropped */
    char routed[4096];
    r.path = http_path_from_cgi(path, script_name, path_info, routed, sizeof routed);
    if (p < end) {
        r.body = p;
        r.body_len = (size_t)(end - p);
    }
    http_dispatch(&r);
    if (r.after)
        r.after(&r, r.after_arg);
    int status = 0;
    const char *all = m.buf ? m.buf : "";
    sscanf(all, "Status: %d", &status);
    const char *sep = strstr(all, "\r\n\r\n");
    if (sep)
        fzh_capture(sep + 4);
    /* a JSON response is JSON (also an error's) */
    if (sep && sep[4] && memmem(all, (size_t)(sep - all), "application/json", 16)) {
        json_t *j = json_loads(sep + 4, JSON_DECODE_ANY, NULL);
        if (!j) {
            fprintf(stderr, "%s %s: a JSON response that is not JSON:\n%s\n", method, path, all);
            abort();
        }
        json_decref(j);
    }
    free(m.buf);
    free(t);
    return status;
}
#endif
