/* service.c — the lws protocol callback: everything the service thread
 * does (bridge.h). It is the only code that touches a struct lws.
 *
 *   HTTP GET /healthz → 200, /metrics → Prometheus text (both 404 when the
 *   request came through a proxy: they are for the host only), a WebSocket
 *   path without Upgrade → 426, anything else → 404; another method →
 *   405 with Connection: close (its body is not read).
 *   Upgrade: unknown path → 404, Origin not in PARLEY_ALLOWED_ORIGINS → 403
 *   (both before the upgrade); over WEBSOCKET_MAX_CONNECTIONS → close 1013,
 *   bad or missing JWT (when PARLEY_JWT_SECRET is set) → close 4401, both
 *   with a reason a browser can read.
 *   Frames in: assembled up to --max-frame (else 1009), binary refused
 *   (1003), handed to the connection's worker as a task; reading pauses
 *   while 32 tasks are pending.
 *   Frames out: the queued frames (prebuilt, up to 32 KiB) in one
 *   lws_write(LWS_WRITE_RAW) per SERVER_WRITEABLE; then the close the
 *   adapter or a limit asked for.
 *   Every second a sweep closes idle connections (WEBSOCKET_TIMEOUT, 1000
 *   "idle timeout") and stalled ones (1008 "slow consumer"), and drives
 *   the shutdown (1001 to everyone on SIGTERM).
 *   Phoenix Channels (/socket/websocket, phoenix.js): a refused connect is
 *   HTTP 403 before the upgrade, as Phoenix answers (bad JWT, vsn not 2.x);
 *   the "phoenix" subprotocol is answered when asked for (phoenix.js's
 *   authToken); the connection drives a phx_socket (core/phx.h) instead of
 *   one proto_conn, and a heartbeat is answered here, on the service
 *   thread, without waiting for a worker (phx_heartbeat).
 */
#include "bridge.h"
#include "auth.h"
#include "ident.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RX_PAUSE_AT 32         /* pending tasks that pause reading */
/* A WebSocket request's path with its query, re-encoded: room for a
 * ?token= of AUTH_MAX_TOKEN bytes and more (a longer one is refused with
 * 4401 "token too long", not as a path too long). */
#define BRIDGE_PATH_MAX (AUTH_MAX_TOKEN * 3 + 2048)
#define RX_RESUME_AT 8
#define SWEEP_US (1000 * LWS_US_PER_MS)
#define SHUTDOWN_GRACE_MS 3000

/* An HTTP response waiting for HTTP_WRITEABLE (body has LWS_PRE headroom). */
struct http_out {
    unsigned char *buf;
    size_t len;
    int close;          /* hang up once written (sent with Connection: close) */
};

/* Per-wsi user data lws allocates: kept to two pointers, most
 * connection state lives in struct wsconn. */
struct pss {
    struct wsconn *c;          /* WebSocket connections */
    struct http_out *h;        /* plain HTTP requests */
    struct hx *hx;             /* long-poll requests (httpfront.c) */
};

static struct bridge *br_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

/* ---- small helpers ---- */

/* Appends s to out percent-encoding everything but unreserved characters
 * (and '/' when keep_slash), so proto_route/proto_open decode it once. */
static int append_encoded(char *out, size_t cap, size_t *len, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~' ||
                    (keep_slash && *p == '/');
        if (*len + (plain ? 1 : 3) >= cap)
            return -1;
        if (plain) {
            out[(*len)++] = (char)*p;
        } else {
            out[(*len)++] = '%';
            out[(*len)++] = hex[*p >> 4];
            out[(*len)++] = hex[*p & 15];
        }
    }
    out[*len] = '\0';
    return 0;
}

int bridge_request_path(struct lws *wsi, enum lws_token_indexes uri_token, char *out, size_t cap,
                        char *token, size_t toklen)
{
    char uri[1024], frag[16384 + 1];    /* any fragment of max_http_header_data (main.c) */
    size_t len = 0;
    int token_too_long = 0;
    token[0] = '\0';
    if (lws_hdr_copy(wsi, uri, sizeof uri, uri_token) <= 0)
        return -1;
    if (append_encoded(out, cap, &len, uri, 1) < 0)
        return -1;
    for (int i = 0; lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0; i++) {
        char *eq = strchr(frag, '=');
        if (eq)
            *eq = '\0';
        if (!strcmp(frag, "token") && eq) {
            token_too_long = strlen(eq + 1) >= toklen;
            str_copy(token, toklen, token_too_long ? "" : eq + 1);
        }
        if (len + 2 >= cap)
            return -1;
        out[len++] = i ? '&' : '?';
        out[len] = '\0';
        if (append_encoded(out, cap, &len, frag, 0) < 0)
            return -1;
        if (eq) {
            if (len + 2 >= cap)
                return -1;
            out[len++] = '=';
            out[len] = '\0';
            if (append_encoded(out, cap, &len, eq + 1, 0) < 0)
                return -1;
        }
    }
    return token_too_long;
}

void bridge_client_addr(struct lws *wsi, const struct bridge *br, char *out, size_t len)
{
    char peer[64] = "", xff[256] = "";
    if (!br->opt.socket_path)
        lws_get_peer_simple(wsi, peer, sizeof peer);
    int local = br->opt.socket_path || !strcmp(peer, "127.0.0.1") || !strcmp(peer, "::1") ||
                !strncmp(peer, "::ffff:127.", 11);
    if (local && lws_hdr_copy(wsi, xff, sizeof xff, WSI_TOKEN_X_FORWARDED_FOR) > 0) {
        char *last = strrchr(xff, ',');
        last = last ? last + 1 : xff;
        while (*last == ' ')
            last++;
        size_t n = strcspn(last, " ");
        last[n] = '\0';
        if (*last) {
            str_copy(out, len, last);
            return;
        }
    }
    str_copy(out, len, peer[0] ? peer : "local");
}

/* ---- Phoenix Channels (/socket/websocket) ---- */

#define PHX_WS_PATH "/socket/websocket"
#define PHX_AUTH_PREFIX "base64url.bearer.phx."

/* 1 when path (with or without its query) is the Phoenix WebSocket path. */
static int phx_path(const char *path)
{
    size_t n = strlen(PHX_WS_PATH);
    return !strncmp(path, PHX_WS_PATH, n) && (path[n] == '\0' || path[n] == '?');
}

/* The value of connect param name ("vsn=") into out ("" when absent).
 * lws stops looking at the first argument that does not fit the buffer
 * it is given, so the buffer holds any argument a request can carry. */
static void phx_arg(struct lws *wsi, const char *name, char *out, size_t cap)
{
    char buf[4200];
    const char *v = lws_get_urlarg_by_name(wsi, name, buf, sizeof buf);
    str_copy(out, cap, v ? v : "");
}

/* Decodes base64 (standard or URL alphabet, padding optional) of s[0..len)
 * into out (NUL-terminated). 0 / -1 (not base64, or too long). */
static int b64_decode(const char *s, size_t len, char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i], v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+' || c == '-')
            v = 62;
        else if (c == '/' || c == '_')
            v = 63;
        else if (c == '=')
            break;
        else
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = '\0';
    return 0;
}

/* The token of the "base64url.bearer.phx.<base64 token>" entry of the
 * comma-separated list (changed in place) into tok: 1 found (tok "-" when
 * it is not base64: refused), 0 none. */
static int phx_bearer(char *list, char *tok, size_t cap)
{
    char *save = NULL;
    for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        size_t pl = strlen(PHX_AUTH_PREFIX);
        if (n > pl && !strncmp(p, PHX_AUTH_PREFIX, pl)) {
            if (b64_decode(p + pl, n - pl, tok, cap) < 0)
                str_copy(tok, cap, "-");
            return 1;
        }
    }
    return 0;
}

/* The JWT a Phoenix client sent, into tok (NUL-terminated; "" none), from
 * the first of: the Sec-WebSocket-Protocol entry "base64url.bearer.phx.
 * <base64 token>" (phoenix.js's authToken option, next to "phoenix"), or
 * that entry moved by the web server into X-Parley-Phoenix-Protocol
 * (parley-websocket.conf does, because lws 4.1 drops a handshake whose
 * subprotocol list is over 127 bytes, which that entry always makes it),
 * the X-Phoenix-AuthToken header, an Authorization: Bearer header, the
 * connect params auth_token and token. Service thread, during the
 * handshake. */
static void phx_token(struct lws *wsi, char *tok, size_t cap)
{
    char buf[4200];
    tok[0] = '\0';
    if (lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_PROTOCOL) > 0 && phx_bearer(buf, tok, cap))
        return;
    if (lws_hdr_custom_copy(wsi, buf, sizeof buf, "x-parley-phoenix-protocol:", 26) > 0 &&
        phx_bearer(buf, tok, cap))
        return;
    if (lws_hdr_custom_copy(wsi, buf, sizeof buf, "x-phoenix-authtoken:", 20) > 0) {
        str_copy(tok, cap, buf);
        return;
    }
    if (lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 && auth_bearer(buf)) {
        str_copy(tok, cap, auth_bearer(buf));
        return;
    }
    phx_arg(wsi, "auth_token=", tok, cap);
    if (!tok[0])
        phx_arg(wsi, "token=", tok, cap);
}

/* The Phoenix connect check: AUTH_OK with the user in user (open mode:
 * ""), the admin role and the token_budget claim (may be NULL), else why
 * the JWT was refused. */
static enum auth_result phx_connect_user(struct lws *wsi, const struct bridge *br, char *user,
                                         size_t ulen, int *admin, int64_t *budget)
{
    user[0] = '\0';
    if (config_open_mode(&br->cfg))
        return AUTH_OK;
    char tok[AUTH_MAX_TOKEN + 2];
    phx_token(wsi, tok, sizeof tok);
    struct auth_claims cl;
    enum auth_result ar = auth_verify_config(&br->cfg, tok[0] ? tok : NULL, 0, &cl);
    if (ar == AUTH_OK && strlen(cl.sub) >= ulen)
        ar = AUTH_NO_SUBJECT;
    if (ar != AUTH_OK)
        return ar;
    str_copy(user, ulen, cl.sub);
    if (admin)
        *admin = cl.admin;
    if (budget)
        *budget = cl.token_budget;
    return AUTH_OK;
}

/* 1 when the client's serializer version (vsn) is one Parley speaks: 2.x
 * (V2 JSON). phoenix.js sends vsn=2.0.0; Phoenix takes a missing vsn as
 * 1.0.0 (V1), which Parley does not speak. */
static int phx_vsn_ok(struct lws *wsi)
{
    char v[64];
    phx_arg(wsi, "vsn=", v, sizeof v);
    return v[0] == '2' && (v[1] == '\0' || v[1] == '.');
}

/* ---- plain HTTP ---- */

static int http_reply_ex(struct lws *wsi, struct pss *pss, unsigned status, const char *ctype,
                         const char *body, int close)
{
    size_t blen = strlen(body);
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, status, ctype, blen, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        (status == 405 && lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_ALLOW,
                                                       (const unsigned char *)"GET", 3, &p, end)) ||
        (close && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                               (const unsigned char *)"close", 5, &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    struct http_out *h = calloc(1, sizeof *h);
    if (!h || !(h->buf = malloc(LWS_PRE + blen + 1))) {
        free(h);
        return -1;
    }
    memcpy(h->buf + LWS_PRE, body, blen);
    h->len = blen;
    h->close = close;
    free(pss->h ? pss->h->buf : NULL);
    free(pss->h);
    pss->h = h;
    lws_callback_on_writable(wsi);
    return 0;
}

/* A reply on a connection kept alive (the next request may follow). */
static int http_reply(struct lws *wsi, struct pss *pss, unsigned status, const char *ctype,
                      const char *body)
{
    return http_reply_ex(wsi, pss, status, ctype, body, 0);
}

static void http_free(struct pss *pss)
{
    if (pss && pss->h) {
        free(pss->h->buf);
        free(pss->h);
        pss->h = NULL;
    }
}

/* 1 when the request came through a proxy: it carries one of the headers
 * a reverse proxy adds (X-Forwarded-For, X-Forwarded-Host, Forwarded, Via;
 * Apache's mod_proxy and lighttpd's mod_proxy add X-Forwarded-For). The
 * bridge's own /healthz and /metrics are for the host (a monitor on
 * loopback), never for a browser that a web server's proxied path let in. */
static int via_proxy(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR) > 0 ||
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_VIA) > 0 ||
           lws_hdr_custom_length(wsi, "x-forwarded-host:", 17) > 0 ||
           lws_hdr_custom_length(wsi, "forwarded:", 10) > 0 ||
           lws_hdr_custom_length(wsi, "x-forwarded-proto:", 18) > 0;
}

static int on_http(struct lws *wsi, struct bridge *br, struct pss *pss, const char *path)
{
    enum proto_kind kind;
    char param[160];
    if (httpfront_serves(path)) {
        if (br->stopping) {
            lws_return_http_status(wsi, 503, "server shutting down");
            return -1;
        }
        return httpfront_begin(wsi, br, &pss->hx);
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        /* only GET is served; answer and hang up rather than read a body,
         * saying so (Connection: close), or a client that keeps the
         * connection for its next request finds it closed under it */
        return http_reply_ex(wsi, pss, 405, "text/plain", "Method Not Allowed: only GET is served here\n", 1);
    }
    if ((!strcmp(path, "/healthz") || !strcmp(path, "/metrics")) && via_proxy(wsi))
        return http_reply(wsi, pss, 404, "text/plain", "Not Found\n");
    if (!strcmp(path, "/healthz"))
        return http_reply(wsi, pss, br->stopping ? 503 : 200, "text/plain",
                          br->stopping ? "stopping\n" : "ok\n");
    if (!strcmp(path, "/metrics")) {
        char *text = metrics_render(br);
        int rc = text ? http_reply(wsi, pss, 200, "text/plain; version=0.0.4; charset=utf-8", text)
                      : http_reply(wsi, pss, 500, "text/plain", "out of memory\n");
        free(text);
        return rc;
    }
    if (proto_route(path, &kind, param, sizeof param) == 0 || phx_path(path))
        return http_reply(wsi, pss, 426, "text/plain",
                          "Upgrade Required: this is a WebSocket endpoint\n");
    return http_reply(wsi, pss, 404, "text/plain", "Not Found\n");
}

static int on_http_writeable(struct lws *wsi, struct pss *pss)
{
    if (!pss || !pss->h)
        return 0;
    int n = lws_write(wsi, pss->h->buf + LWS_PRE, pss->h->len, LWS_WRITE_HTTP_FINAL);
    size_t len = pss->h->len;
    int close = pss->h->close;
    http_free(pss);
    if (n < (int)len || close)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Before the upgrade: route and Origin. >0 rejected (response written),
 * 0 go on, <0 hang up. */
static int on_confirm_upgrade(struct lws *wsi, struct bridge *br, const char *up)
{
    if (!up || strcasecmp(up, "websocket") != 0)
        return -1;
    char path[BRIDGE_PATH_MAX], token[8];
    enum proto_kind kind;
    char param[160];
    if (br->stopping) {
        lws_return_http_status(wsi, 503, "server shutting down");
        return 1;
    }
    int phx = 0;
    if (bridge_request_path(wsi, WSI_TOKEN_GET_URI, path, sizeof path, token, sizeof token) < 0 ||
        (!(phx = phx_path(path)) && proto_route(path, &kind, param, sizeof param) < 0)) {
        metrics_refused(RF_NOT_FOUND);
        lws_return_http_status(wsi, 404, "no WebSocket endpoint at this path");
        return 1;
    }
    /* An Origin that does not fit is checked as one no list names (DEL),
     * not read as none: lws_hdr_copy leaves the buffer empty when it
     * fails, and no Origin passes. */
    char origin[512] = "";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) > 0 &&
        lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        snprintf(origin, sizeof origin, "\x7f");
    if (!ident_origin_allowed(br->cfg.allowed_origins, origin)) {
        metrics_refused(RF_ORIGIN);
        lws_return_http_status(wsi, 403, "Origin not allowed");
        return 1;
    }
    if (phx) {
        /* a refused Phoenix connect is 403 on the upgrade, as Phoenix does */
        char user[128];
        if (!phx_vsn_ok(wsi)) {
            metrics_refused(RF_VERSION);
            lws_return_http_status(wsi, 403, "unsupported vsn: Parley speaks the V2 serializer (vsn=2.0.0)");
            return 1;
        }
        if (phx_connect_user(wsi, br, user, sizeof user, NULL, NULL) != AUTH_OK) {
            metrics_refused(RF_UNAUTHORIZED);
            lws_return_http_status(wsi, 403, "Forbidden");
            return 1;
        }
    }
    return 0;
}

/* ---- WebSocket ---- */

static void sweep(lws_sorted_usec_list_t *sul);

static void live_link(struct bridge *br, struct wsconn *c)
{
    c->sprev = NULL;
    c->snext = br->live;
    if (br->live)
        br->live->sprev = c;
    br->live = c;
    br->nlive++;
}

static void live_unlink(struct bridge *br, struct wsconn *c)
{
    if (c->sprev)
        c->sprev->snext = c->snext;
    else
        br->live = c->snext;
    if (c->snext)
        c->snext->sprev = c->sprev;
    c->snext = c->sprev = NULL;
    br->nlive--;
}

/* Service thread: close c with code (after its queue unless drop). */
static void close_soon(struct wsconn *c, int code, const char *reason, int drop, enum close_why why)
{
    if (c->closing)
        return;
    c->closing = 1;
    metrics_closed(why);
    conn_request_close(c, code, reason, drop);
    if (c->wsi)
        lws_callback_on_writable(c->wsi);
}

/* Service thread, at ESTABLISHED: the anonymous visitor of a connection
 * without a JWT to a protocol PARLEY_ANONYMOUS names: its token from the
 * X-Parley-Visitor header, else visitor= in path's query, else the
 * parley_visitor cookie; none or an invalid one: a new visitor, whose token
 * goes to c->visitor_new. 0 with c->user "anon:<id>", -1 when issuing
 * failed. */
static int ws_visitor(struct lws *wsi, const struct bridge *br, const char *path,
                      struct wsconn *c)
{
    char buf[4200], tok[VISITOR_TOKEN_MAX];
    c->visitor_new[0] = '\0';
    tok[0] = '\0';
    if (lws_hdr_custom_copy(wsi, buf, sizeof buf, "x-parley-visitor:", 17) > 0)
        str_copy(tok, sizeof tok, buf);
    const char *q = strchr(path, '?');
    for (const char *p = q; !tok[0] && p && *p; p = strchr(p + 1, '&'))
        if (!strncmp(p + 1, VISITOR_QUERY "=", sizeof VISITOR_QUERY)) {
            const char *v = p + 1 + sizeof VISITOR_QUERY;
            size_t n = strcspn(v, "&#");
            if (n < sizeof tok) {
                memcpy(tok, v, n);
                tok[n] = '\0';
            }
        }
    if (!tok[0] && lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_COOKIE) > 0)
        visitor_cookie_find(buf, tok, sizeof tok);
    if (tok[0] && visitor_verify(br->cfg.jwt_secret, tok, c->user, sizeof c->user) == 0)
        return 0;
    return visitor_issue(br->cfg.jwt_secret, c->visitor_new, sizeof c->visitor_new, c->user,
                         sizeof c->user);
}

static int on_established(struct lws *wsi, struct bridge *br, struct pss *pss)
{
    struct wsconn *c = conn_new(br, wsi);
    if (!c)
        return -1;
    pss->c = c;
    c->token_budget = -1;                    /* no token_budget claim until verified */
    c->last_active_ms = c->last_write_ms = bridge_now_ms();
    live_link(br, c);
    metrics_accepted();
    if (br->stopping) {
        close_soon(c, 1001, "server shutting down", 1, CW_SHUTDOWN);
        return 0;
    }
    if (br->nopen >= br->cfg.ws_max_connections) {
        close_soon(c, 1013, "too many connections", 1, CW_MAX_CONN);
        return 0;
    }
    char path[BRIDGE_PATH_MAX], token[AUTH_MAX_TOKEN + 2];
    int pr = bridge_request_path(wsi, WSI_TOKEN_GET_URI, path, sizeof path, token, sizeof token);
    if (pr < 0) {
        close_soon(c, 1008, "request path too long", 1, CW_ERROR);
        return 0;
    }
    int phx = phx_path(path);
    if (phx) {
        /* checked before the upgrade (403); checked again for the user */
        enum auth_result ar = phx_connect_user(wsi, br, c->user, sizeof c->user, &c->admin,
                                               &c->token_budget);
        if (ar != AUTH_OK) {
            char reason[120];
            snprintf(reason, sizeof reason, "Unauthorized: %s", auth_message(ar));
            close_soon(c, 4401, reason, 1, CW_AUTH);
            return 0;
        }
    } else if (!config_open_mode(&br->cfg)) {
        char auth[AUTH_MAX_TOKEN + 64] = "";
        const char *tok = token[0] ? token : NULL;
        /* a token longer than we take is refused as such, never taken for
         * a missing one */
        int too_long = pr == 1;
        if (!tok && !too_long) {
            int al = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
            if (al >= (int)sizeof auth)
                too_long = 1;
            else if (al > 0 && lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 0)
                tok = auth_bearer(auth);
        }
        enum proto_kind kind;
        char param[160];
        if (!tok && !too_long && proto_route(path, &kind, param, sizeof param) == 0 &&
            visitor_allowed(br->cfg.anonymous, (int)kind)) {
            /* an anonymous visitor (docs/anonymous.md) */
            if (ws_visitor(wsi, br, path, c) < 0) {
                close_soon(c, 1011, "could not issue a visitor identity", 1, CW_ERROR);
                return 0;
            }
            metrics_anonymous_open(c->visitor_new[0] != '\0');
            goto authed;
        }
        /* one verification gives the connection every claim */
        struct auth_claims cl;
        enum auth_result ar = too_long ? AUTH_TOO_LONG : auth_verify_config(&br->cfg, tok, 0, &cl);
        if (ar == AUTH_OK) {
            str_copy(c->user, sizeof c->user, cl.sub);
            str_copy(c->tenant, sizeof c->tenant, cl.tenant);
            c->admin = cl.admin;
            c->token_budget = cl.token_budget;
        }
        if (ar != AUTH_OK) {
            char reason[120];
            snprintf(reason, sizeof reason, "Unauthorized: %s", auth_message(ar));
            close_soon(c, 4401, reason, 1, CW_AUTH);
            return 0;
        }
    }
authed:;
    char addr[64];
    bridge_client_addr(wsi, br, addr, sizeof addr);
    ident_peer(c->peer, sizeof c->peer, c->user, addr);   /* the same key on every transport */
    c->counted = 1;
    br->nopen++;
    metrics_open_delta(+1);
    c->ustat = metrics_user(c->user);
    if (phx) {
        /* no database work to open a Phoenix socket: it starts empty and
         * its frames are ready to be taken at once */
        c->phx = malloc(sizeof *c->phx);
        if (!c->phx) {
            close_soon(c, 1011, "server out of memory", 1, CW_ERROR);
            return 0;
        }
        phx_init(c->phx, c->user, c->peer, br->cfg.phx_max_topics);
        metrics_phx_open_delta(+1);                     /* counted with c->phx set */
        c->phx->admin = c->admin;                       /* the JWT's claims, for every topic */
        c->phx->token_budget = c->token_budget;
        return 0;
    }
    c->open_path = strdup(path);
    /* what seed 001 records of the client (its session's metadata) */
    str_copy(c->open_addr, sizeof c->open_addr, addr);
    int ual = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_USER_AGENT);
    if (ual > 0 && ual <= 4096 && (c->open_ua = malloc((size_t)ual + 1)) &&
        lws_hdr_copy(wsi, c->open_ua, ual + 1, WSI_TOKEN_HTTP_USER_AGENT) < 0) {
        free(c->open_ua);
        c->open_ua = NULL;
    }
    static const char cvh[] = "x-client-version:";
    int cvl = lws_hdr_custom_length(wsi, cvh, (int)sizeof cvh - 1);
    if (cvl > 0 && cvl <= 256 && (c->open_cv = malloc((size_t)cvl + 1)) &&
        lws_hdr_custom_copy(wsi, c->open_cv, cvl + 1, cvh, (int)sizeof cvh - 1) < 0) {
        free(c->open_cv);
        c->open_cv = NULL;
    }
    if (!c->open_path || sched_task(c, T_OPEN, NULL, 0) < 0)
        close_soon(c, 1011, "server out of memory", 1, CW_ERROR);
    return 0;
}

/* Service thread: forgets the message being assembled. */
static void rx_drop(struct wsconn *c)
{
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
}

/* Service thread: refuses what the client sent by closing with code and
 * why (a static string); returns -1 for the callback to return. */
static int refuse(struct lws *wsi, struct wsconn *c, enum close_why w,
                  enum lws_close_status code, const char *why)
{
    c->closing = 1;
    metrics_closed(w);
    lws_close_reason(wsi, code, (unsigned char *)(uintptr_t)why, strlen(why));
    return -1;
}

static int on_receive(struct lws *wsi, struct bridge *br, struct wsconn *c, const void *in,
                      size_t len)
{
    if (!c || c->closing)
        return 0;
    /* a Phoenix frame over PHX_FRAME_MAX is answered by the socket
     * ("message too large") and the socket kept: it may be read whole up
     * to twice that */
    size_t max = br->opt.max_message;
    if (c->phx && max < 2 * (size_t)PHX_FRAME_MAX)
        max = 2 * (size_t)PHX_FRAME_MAX;
    if (c->rx_len + len > max) {
        rx_drop(c);
        return refuse(wsi, c, CW_TOO_BIG, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too big");
    }
    if (c->rx_len + len + 1 > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 256;
        while (cap < c->rx_len + len + 1)
            cap *= 2;
        unsigned char *n = realloc(c->rx, cap);
        if (!n)
            return -1;
        c->rx = n;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi))
        return 0;
    int binary = lws_frame_is_binary(wsi);
    size_t n = c->rx_len;
    metrics_received(n);
    if (visitor_is(c->user))
        metrics_anonymous_message();
    c->last_active_ms = bridge_now_ms();
    if (c->phx && !binary) {
        /* a heartbeat is answered now, not behind the connection's or
         * anyone's database work (the socket's state is not involved; the
         * reply may pass replies still being made, as phoenix.js allows:
         * it matches replies by ref) */
        struct proto_frames hb;
        frames_init(&hb);
        if (phx_heartbeat((const char *)c->rx, n, &hb) == 1) {
            conn_post(c, &hb);
            rx_drop(c);
            return 0;
        }
        frames_free(&hb);              /* any other frame: to the worker */
    }
    int pending = binary ? 0 : sched_task(c, T_MESSAGE, c->rx, n);
    rx_drop(c);
    if (binary)
        return refuse(wsi, c, CW_BINARY, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                      "binary messages are not supported: send JSON text");
    if (pending < 0)
        return -1;
    if (pending >= RX_PAUSE_AT && !__atomic_load_n(&c->rx_paused, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&c->rx_paused, 1, __ATOMIC_RELEASE);
        lws_rx_flow_control(wsi, 0);
    }
    return 0;
}

/* What one SERVER_WRITEABLE may write: queued frames, complete ones,
 * together (server frames are unmasked, so their bytes are the same for
 * every connection and need no per-connection framing). */
#define WRITE_MAX_FRAMES 128
#define WRITE_MAX_BYTES (32 * 1024)

/* Writes what c has queued (up to one batch) in one lws_write: the number
 * of frames written (0: none queued), or -1 when the write failed (the
 * connection is gone). *more: frames are left or a close is asked for.
 * Service thread only. */
static int write_queued(struct lws *wsi, struct bridge *br, struct wsconn *c, int *more)
{
    /* service thread only: one batch at a time */
    static unsigned char batch[WRITE_MAX_BYTES];
    struct frame *fv[WRITE_MAX_FRAMES];
    int left, close_pending;
    int n = conn_take(c, fv, WRITE_MAX_FRAMES, WRITE_MAX_BYTES, &left, &close_pending);
    *more = left || close_pending;
    if (!n)
        return 0;
    /* the frames' wire bytes (header and text), sent verbatim
     * (LWS_WRITE_RAW; lws keeps what the socket does not take and flushes
     * it before anything else) */
    unsigned char *p;
    size_t wl = 0, text = 0;
    if (n == 1) {
        p = (unsigned char *)frame_wire(fv[0]);
        wl = frame_wire_len(fv[0]);
        text = fv[0]->len;
    } else {
        p = batch;
        for (int i = 0; i < n; i++) {
            memcpy(batch + wl, frame_wire(fv[i]), frame_wire_len(fv[i]));
            wl += frame_wire_len(fv[i]);
            text += fv[i]->len;
        }
    }
    int m = lws_write(wsi, p, wl, LWS_WRITE_RAW);
    for (int i = 0; i < n; i++)
        frame_unref(fv[i]);
    if (m != (int)wl) {
        metrics_closed(CW_ERROR);
        return -1;
    }
    metrics_sent_n(c->ustat, n, text);
    c->last_active_ms = c->last_write_ms = bridge_now_ms();
    if (left <= br->opt.out_high / 4 && __atomic_load_n(&c->pump_hint, __ATOMIC_ACQUIRE))
        sched_drained(c);
    return n;
}

static int on_writeable(struct lws *wsi, struct bridge *br, struct wsconn *c)
{
    if (!c)
        return 0;
    if (lws_partial_buffered(wsi)) {
        /* lws still holds part of an earlier write: writing now would
         * interleave frames; come back when it is flushed */
        metrics_error("writeable_while_buffered");
        lws_callback_on_writable(wsi);
        return 0;
    }
    int more;
    int n = write_queued(wsi, br, c, &more);
    if (n < 0)
        return -1;
    if (n) {
        /* more frames, or the close: come back. Nothing queued: stay off
         * POLLOUT (a worker that queues more notifies the loop again) */
        if (more)
            lws_callback_on_writable(wsi);
        return 0;
    }
    pthread_mutex_lock(&c->mu);
    int code = c->close_code;
    char reason[124];
    str_copy(reason, sizeof reason, c->close_reason);
    pthread_mutex_unlock(&c->mu);
    if (!code)
        return 0;
    c->closing = 1;
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    return -1;
}

static void on_closed(struct bridge *br, struct pss *pss)
{
    struct wsconn *c = pss->c;
    if (!c)
        return;
    pss->c = NULL;
    live_unlink(br, c);
    if (c->counted) {
        br->nopen--;
        metrics_open_delta(-1);
        if (c->phx)
            metrics_phx_open_delta(-1);
    }
    if (!c->closing)
        metrics_closed(CW_CLIENT);
    c->wsi = NULL;
    rx_drop(c);
    sched_task(c, T_CLOSE, NULL, 0);
    conn_unref(c);                     /* the service thread's reference */
    if (br->shutdown_started && br->nlive == 0 && br->lws)
        lws_sul_schedule(br->lws, 0, &br->sweep_sul, sweep, 1);   /* finish now */
}

static void start_shutdown(struct bridge *br)
{
    br->shutdown_started = 1;
    br->shutdown_deadline_ms = bridge_now_ms() + SHUTDOWN_GRACE_MS;
    bridge_mark(br, 0);                /* Apache sends long-poll to parley.fcgi again */
    httpfront_shutdown_begin();        /* the waiting ones are answered now */
    wslog("stopping: closing %d connection(s) with 1001", br->nlive);
    for (struct wsconn *c = br->live; c; c = c->snext)
        close_soon(c, 1001, "server shutting down", 1, CW_SHUTDOWN);
    if (br->nlive == 0)
        lws_sul_schedule(br->lws, 0, &br->sweep_sul, sweep, 1);
}

/* A worker queued frames for c (or asked for its close): write them now
 * instead of arming POLLOUT for a writeable callback, which costs two
 * epoll_ctl calls and a trip through the event loop per delivery. Only
 * when lws holds nothing of c's back (lws_partial_buffered): a send the
 * socket does not take whole is kept by lws and flushed first, POLLOUT
 * armed by lws itself (lws 4.1's lws_issue_raw), so frames never
 * interleave. A close, frames left over, or something held back go
 * through the callback as before. Service thread only: lws allows
 * lws_write on it (not from other threads). lws_send_pipe_choked would
 * also ask the kernel (a poll() per call in lws 4.1); a full socket
 * buffer is what lws's own buffering is for. */
static void send_now(struct wsconn *c)
{
    struct lws *wsi = c->wsi;
    if (c->closing || lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi);
        return;
    }
    int more;
    int n = write_queued(wsi, c->br, c, &more);
    if (n < 0) {
        c->closing = 1;             /* the socket failed: lws closes it */
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    if (n == 0 || more)
        lws_callback_on_writable(wsi);   /* a close, or what is left */
}

/* A notified connection (the notify list's reference is dropped). */
static void notified(struct wsconn *c)
{
    if (c->wsi) {
        if (__atomic_load_n(&c->rx_paused, __ATOMIC_ACQUIRE) && sched_pending(c) <= RX_RESUME_AT) {
            __atomic_store_n(&c->rx_paused, 0, __ATOMIC_RELEASE);
            lws_rx_flow_control(c->wsi, 1);
        }
        send_now(c);
    }
    conn_unref(c);
}

/* Frames or close requests from other threads: ask for writable callbacks. */
static void on_cancelled(struct bridge *br)
{
    /* the whole list under one lock: once notify_pending is cleared a
     * worker may push c again and reuse nnext, so the links are followed
     * (into an array) first; the list's reference keeps each c alive
     * until notified() drops it */
    static struct wsconn **v;          /* service thread only */
    static size_t vcap;
    size_t n = 0, k = 0;
    pthread_mutex_lock(&br->notify_mu);
    for (struct wsconn *c = br->notify_head; c; c = c->nnext)
        n++;
    if (n > vcap) {
        size_t cap = vcap ? vcap : 256;
        while (cap < n)
            cap *= 2;
        struct wsconn **nv = realloc(v, sizeof *nv * cap);
        if (nv) {
            v = nv;
            vcap = cap;
        }
    }
    struct wsconn *list = br->notify_head;
    br->notify_head = NULL;
    if (n <= vcap) {
        for (struct wsconn *c = list; c; c = c->nnext)
            v[k++] = c;
        for (size_t i = 0; i < k; i++)
            v[i]->notify_pending = 0;
        list = NULL;
    }
    pthread_mutex_unlock(&br->notify_mu);
    for (size_t i = 0; i < k; i++)
        notified(v[i]);
    while (list) {                     /* no memory for the array: one at a time */
        struct wsconn *c = list;
        list = c->nnext;
        pthread_mutex_lock(&br->notify_mu);
        c->notify_pending = 0;
        pthread_mutex_unlock(&br->notify_mu);
        notified(c);
    }
    if (br->stopping && !br->shutdown_started)
        start_shutdown(br);
}

static void sweep(lws_sorted_usec_list_t *sul)
{
    struct bridge *br = lws_container_of(sul, struct bridge, sweep_sul);
    int64_t now = bridge_now_ms();
    int64_t idle_ms = (int64_t)br->cfg.ws_timeout_s * 1000;
    int64_t stall_ms = (int64_t)br->opt.stall_s * 1000;
    if (br->stopping && !br->shutdown_started)
        start_shutdown(br);
    for (struct wsconn *c = br->live; c; c = c->snext) {
        if (c->closing || !c->wsi)
            continue;
        pthread_mutex_lock(&c->mu);
        int64_t stalled = c->out_n ? c->stalled_since_ms : 0;
        pthread_mutex_unlock(&c->mu);
        if (!stalled)
            conn_trim(c);              /* an empty queue holds no memory */
        if (stalled && now - stalled > stall_ms) {
            close_soon(c, 1008, "slow consumer", 1, CW_SLOW);
            /* its socket is full: if the close can't go out either, drop it */
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
        } else if (idle_ms > 0 && now - c->last_active_ms > idle_ms) {
            close_soon(c, 1000, "idle timeout", 0, CW_IDLE);
        }
    }
    if (br->shutdown_started &&
        ((br->nlive == 0 && httpfront_busy() == 0) || now > br->shutdown_deadline_ms))
        br->service_done = 1;
    if (!br->service_done) {
        lws_sul_schedule(br->lws, 0, &br->sweep_sul, sweep, SWEEP_US);
    } else if (!br->opt.event_poll && br->lws) {
        /* libev: lws_service() returns only when the loop has stopped,
         * which this (first) destroy arranges; main() finishes it */
        struct lws_context *ctx = br->lws;
        br->lws = NULL;
        lws_context_destroy(ctx);
    }
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct pss *pss = user;
    struct bridge *br;
    switch (reason) {
    case LWS_CALLBACK_PROTOCOL_INIT:
        br = br_of(wsi);
        lws_sul_schedule(br->lws ? br->lws : lws_get_context(wsi), 0, &br->sweep_sul, sweep,
                         SWEEP_US);
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_http(wsi, br_of(wsi), pss, in ? (const char *)in : "/") < 0 ? -1 : 0;
    case LWS_CALLBACK_HTTP_BODY:
        return pss && pss->hx ? httpfront_body(pss->hx, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return pss && pss->hx ? httpfront_body_done(wsi, pss->hx) : 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (pss && pss->hx)
            return httpfront_writeable(wsi, &pss->hx);
        return on_http_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (pss)
            httpfront_closed(&pss->hx);
        http_free(pss);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return on_confirm_upgrade(wsi, br_of(wsi), in);
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, br_of(wsi), pss);
    case LWS_CALLBACK_RECEIVE:
        return on_receive(wsi, br_of(wsi), pss ? pss->c : NULL, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return on_writeable(wsi, br_of(wsi), pss ? pss->c : NULL);
    case LWS_CALLBACK_CLOSED:
        if (pss)
            on_closed(br_of(wsi), pss);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        on_cancelled(br_of(wsi));
        httpfront_service(br_of(wsi));
        return 0;
    default:
        return 0;
    }
}

/* "phoenix": the subprotocol phoenix.js asks for (with its authToken)
 * and must get back; lws answers it when the client lists it. The same
 * callback serves both; vhost-wide callbacks act for the first only. */
static int callback_phoenix(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                            void *in, size_t len)
{
    if (reason == LWS_CALLBACK_PROTOCOL_INIT || reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED)
        return 0;
    return callback(wsi, reason, user, in, len);
}

const struct lws_protocols bridge_protocols[] = {
    /* name, callback, per-session data, rx buffer, id, user, tx packet */
    { "parley", callback, sizeof(struct pss), 2048, 0, NULL, 65536 },
    { "phoenix", callback_phoenix, sizeof(struct pss), 2048, 0, NULL, 65536 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};
