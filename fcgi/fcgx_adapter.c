/* fcgx_adapter.c — the libfcgi adapter (server.h): turns the FastCGI
 * request a worker accepted into a struct request for http_dispatch()
 * (http.h), with response ops that write to libfcgi's stream.
 *
 * Connections: a request whose stdin was read to its end is closed without
 * libfcgi's drain (shutdown, wait for the web server's close); a connection
 * the web server asks to keep (FCGI_KEEP_CONN) goes to the idle set
 * (server_listen.c) before the request's after callback runs.
 *
 * Parking (http.h; more than one worker): each exchange lives on the heap;
 * a handler that parks its request (a waiting long-poll GET,
 * fcgi/poll_park.h) keeps it open after http_dispatch returns. The worker
 * then hands its FCGX_Request over with the exchange and takes its spare
 * one (allocated beforehand, so a park never fails here); libfcgi's
 * streams point at their FCGX_Request, which therefore never moves. The
 * new owner finishes it from its own thread and calls fx_release.
 */
#include "server.h"
#include "ident.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the response ---- */

static int fx_write(struct response *res, const char *data, size_t len)
{
    FCGX_Request *rq = res->impl;
    while (len > 0) {
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        if (FCGX_PutStr(data, n, rq->out) != n)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fx_flush(struct response *res)
{
    FCGX_Request *rq = res->impl;
    return FCGX_FFlush(rq->out) < 0 ? -1 : 0;
}

/* Ends the request. libfcgi's own close shuts down the sending side and
 * then waits (poll + read) until the web server has closed its end, so
 * that no unread input turns the close into a reset; when the request's
 * stdin has been read to its end (read_body) the web server sends nothing
 * more, so the socket is simply closed: three system calls and a wait for
 * the web server fewer per request. A kept connection (FCGI_KEEP_CONN)
 * is not closed at all (see srv_keep_or_close). */
static void fx_finish(struct response *res)
{
    FCGX_Request *rq = res->impl;
    int eof = rq->in && FCGX_HasSeenEOF(rq->in);
    /* Set every time: FCGX_Free resets it only when it closes, and a kept
     * connection is not closed. */
    rq->detached = eof;                 /* 1: OS_IpcClose without the drain */
    if (!eof)
        rq->keepConnection = 0;         /* unread input (a 413): never reuse */
    FCGX_Finish_r(rq);
}

static const struct response_ops fx_ops = { fx_write, fx_flush, fx_finish };

/* ---- the request ---- */

/* Request-scoped copies of libfcgi's strings, which die at FCGX_Finish_r
 * while r->after may still run (or a parked request waits): in an arena
 * in the exchange, or malloc'd when they do not fit. */
struct req_copy {
    char arena[2048];
    size_t used;
    char *s[16];
    int n;
    char *body;
};

static const char *keep(struct req_copy *k, const char *v)
{
    if (!v)
        return NULL;
    size_t len = strlen(v) + 1;
    if (len <= sizeof k->arena - k->used) {
        char *c = k->arena + k->used;
        memcpy(c, v, len);
        k->used += len;
        return c;
    }
    if (k->n == (int)(sizeof k->s / sizeof k->s[0]))
        return NULL;
    char *c = strdup(v);
    if (c)
        k->s[k->n++] = c;
    return c;
}

static void req_copy_free(struct req_copy *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->s[i]);
    free(k->body);
}

/* The parameters srv_serve() reads, found in one pass over libfcgi's array
 * (FCGX_GetParam would scan it once per name); the first of a name wins,
 * as with FCGX_GetParam. */
enum { P_METHOD, P_URI, P_SCRIPT, P_PATH_INFO, P_QUERY, P_CTYPE, P_AUTH, P_REDIR_AUTH,
       P_ORIGIN, P_LAST_EVENT_ID, P_ADDR, P_CLEN, P_PHX_LP_TOKEN, P_PHX_AUTH, P_ACR_HEADERS,
       P_COOKIE, P_VISITOR, P_HTTPS, P_FWD_PROTO, P_UA, P_CLIENT_VERSION, P_COUNT };
static const struct {
    const char *name;
    size_t len;
} param_names[P_COUNT] = {
#define PN(s) { s, sizeof s - 1 }
    PN("REQUEST_METHOD"), PN("REQUEST_URI"), PN("SCRIPT_NAME"), PN("PATH_INFO"),
    PN("QUERY_STRING"), PN("CONTENT_TYPE"), PN("HTTP_AUTHORIZATION"),
    PN("REDIRECT_HTTP_AUTHORIZATION"), PN("HTTP_ORIGIN"), PN("HTTP_LAST_EVENT_ID"),
    PN("REMOTE_ADDR"), PN("CONTENT_LENGTH"), PN("HTTP_X_PHOENIX_LONGPOLL_TOKEN"),
    PN("HTTP_X_PHOENIX_AUTHTOKEN"), PN("HTTP_ACCESS_CONTROL_REQUEST_HEADERS"),
    PN("HTTP_COOKIE"), PN("HTTP_X_PARLEY_VISITOR"), PN("HTTPS"), PN("HTTP_X_FORWARDED_PROTO"),
    PN("HTTP_USER_AGENT"), PN("HTTP_X_CLIENT_VERSION"),
#undef PN
};

static void find_params(FCGX_ParamArray env, const char *v[P_COUNT])
{
    for (int i = 0; i < P_COUNT; i++)
        v[i] = NULL;
    for (char **e = env; e && *e; e++) {
        const char *p = *e;
        for (int i = 0; i < P_COUNT; i++) {
            size_t n = param_names[i].len;
            if (!v[i] && p[0] == param_names[i].name[0] && strncmp(p, param_names[i].name, n) == 0 &&
                p[n] == '=') {
                v[i] = p + n + 1;
                break;
            }
        }
    }
}

/* Reads the body. 0 with r->body/body_len set (body_len > HTTP_MAX_BODY
 * and body NULL when it is too large: the dispatcher answers 413 without
 * reading it); -1 when CONTENT_LENGTH is malformed. */
static int read_body(FCGX_Request *rq, const char *cl, struct request *r, struct req_copy *k)
{
    size_t want = HTTP_MAX_BODY + 1;     /* no length: read to EOF, up to the cap */
    if (cl && *cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end || errno || cl[0] == '-' || cl[0] == '+' || cl[0] == ' ')
            return -1;
        if (n > HTTP_MAX_BODY) {
            r->body = NULL;
            r->body_len = n > SIZE_MAX ? SIZE_MAX : (size_t)n;
            return 0;
        }
        want = (size_t)n;
    }
    if (want == 0) {
        /* See the end of stdin (the web server sends it right after the
         * parameters; usually already in libfcgi's buffer): fx_finish can
         * then close without draining. */
        (void)FCGX_GetChar(rq->in);
        return 0;
    }
    k->body = malloc(want + 1);
    if (!k->body)
        return -1;
    size_t got = 0;
    while (got < want) {
        int n = FCGX_GetStr(k->body + got, (int)(want - got), rq->in);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got == want && cl && *cl)
        (void)FCGX_GetChar(rq->in);     /* the end of stdin, as above */
    k->body[got] = '\0';
    r->body = k->body;
    r->body_len = got;                   /* > HTTP_MAX_BODY only without a length */
    return 0;
}

/* Fills r from the request's parameters (copied into k). */
static void request_from_params(FCGX_Request *rq, struct request *r, struct req_copy *k,
                                const char *pv[P_COUNT])
{
    find_params(rq->envp, pv);
    r->method = keep(k, pv[P_METHOD]);
    char path[4096];
    http_path_from_cgi(pv[P_URI], pv[P_SCRIPT], pv[P_PATH_INFO], path, sizeof path);
    r->path = keep(k, path);
    r->query = keep(k, pv[P_QUERY]);
    r->content_type = keep(k, pv[P_CTYPE]);
    const char *auth = pv[P_AUTH];
    if (!auth || !*auth)
        auth = pv[P_REDIR_AUTH];
    r->authorization = keep(k, auth);
    r->origin = keep(k, pv[P_ORIGIN]);
    r->last_event_id = keep(k, pv[P_LAST_EVENT_ID]);
    r->remote_addr = keep(k, pv[P_ADDR]);
    r->phx_longpoll_token = keep(k, pv[P_PHX_LP_TOKEN]);
    r->phx_auth_token = keep(k, pv[P_PHX_AUTH]);
    r->acr_headers = keep(k, pv[P_ACR_HEADERS]);
    r->cookie = keep(k, pv[P_COOKIE]);             /* anonymous visitors */
    r->visitor_header = keep(k, pv[P_VISITOR]);
    r->https = keep(k, pv[P_HTTPS]);
    r->forwarded_proto = keep(k, pv[P_FWD_PROTO]);
    r->user_agent = keep(k, pv[P_UA]);             /* seed 001 session metadata */
    r->client_version = keep(k, pv[P_CLIENT_VERSION]);
    ident_peer(r->peer, sizeof r->peer, NULL, r->remote_addr);
}

/* One exchange: the request, its response and their copies, on the heap
 * so that a parked one outlives srv_serve. */
struct exchange {
    struct request r;
    struct response res;
    struct req_copy k;
    FCGX_Request *rq;          /* a parked one's own (the worker took a fresh one) */
};

static int parking;            /* srv_set_parking; read-only once workers run */

void srv_set_parking(int on)
{
    parking = on;
}

/* The release of a parked exchange (http.h), after res_finish: a kept
 * connection goes to the idle set, everything is freed. Any thread. */
static void fx_release(struct response *res)
{
    struct exchange *x = (struct exchange *)((char *)res - offsetof(struct exchange, res));
    srv_keep_or_close(x->rq);
    FCGX_Free(x->rq, 1);
    free(x->rq);
    req_copy_free(&x->k);
    free(x);
}

void srv_serve(struct worker *w)
{
    FCGX_Request *rq = w->fcgx;
    struct exchange *x = malloc(sizeof *x);
    if (!x) {
        /* out of memory: no answer can be built; close the connection */
        rq->keepConnection = 0;
        FCGX_Finish_r(rq);
        return;
    }
    struct response *res = &x->res;
    struct request *r = &x->r;
    struct req_copy *k = &x->k;
    memset(res, 0, sizeof *res);
    memset(r, 0, sizeof *r);
    k->used = 0;
    k->n = 0;
    k->body = NULL;
    x->rq = NULL;
    res->ops = &fx_ops;
    res->impl = rq;
    r->res = res;
    r->ctx = &w->ctx;
    if (parking && !w->spare)
        w->spare = malloc(sizeof *w->spare);
    if (parking && w->spare)
        res->release = fx_release;       /* a waiting long-poll GET may park */

    const char *pv[P_COUNT];
    request_from_params(rq, r, k, pv);
    if (srv_ensure_config(rq) < 0) {
        res_error(r, 500, "Server configuration error (see the server's error log)");
        res_finish(r);
        srv_keep_or_close(rq);
        goto out;
    }
    srv_ensure_storage(w);
    if (read_body(rq, pv[P_CLEN], r, k) < 0) {
        res_error(r, 400, "Invalid Content-Length");
        res_finish(r);
        srv_keep_or_close(rq);
        goto out;
    }
    http_dispatch(r);                    /* finishes the response, or parks it */
    if (res->parked) {
        /* hand the request over: the worker takes the spare one */
        x->rq = rq;
        w->fcgx = w->spare;
        w->spare = NULL;
        FCGX_InitRequest(w->fcgx, srv_listen_fd(), 0);
        r->park(r, r->park_arg);         /* owns x from now on */
        return;
    }
    srv_keep_or_close(rq);               /* before after(): the next request
                                            on a kept connection must not wait */
    if (r->after)
        r->after(r, r->after_arg);
out:
    req_copy_free(k);
    free(x);
}
