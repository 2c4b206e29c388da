/* httpfront.c — the bridge carries Parley's HTTP front for long-poll.
 *
 * Under mod_fcgid a waiting long-poll GET would hold a whole parley.fcgi
 * process; parley.fcgi hands such a GET here instead (fcgi/poll_handoff.h:
 * a CGI local redirect that Apache proxies to the bridge), and the bridge,
 * whose event loop holds thousands of idle sockets at no cost, runs it
 * through the very same HTTP front parley.fcgi runs (fcgi/http.h: router,
 * F_AUTH, CORS, the long-poll handlers and their parking hub,
 * fcgi/poll_park.h). So an answer here is byte for byte parley.fcgi's; only
 * the carrier differs: lws HTTP instead of FastCGI. Only the long-poll
 * paths (/api/poll/... and Phoenix's /socket/longpoll) are served;
 * everything else stays 404 here.
 *
 * An exchange (struct hx) goes:
 *   service thread  LWS_CALLBACK_HTTP: method, path, headers copied;
 *                   HTTP_BODY: body collected (up to the front's limit);
 *                   then queued for a dispatcher.
 *   dispatcher      (HF_THREADS threads, each with its own database
 *                   connection) http_dispatch(): a POST answers at once, a
 *                   GET with nothing to say yet parks (res->release is set)
 *                   and the hub thread of poll_park.c answers it later.
 *   any thread      response writes collect in the exchange's buffer
 *                   (CGI header block + body); res_finish puts it on the
 *                   ready list and wakes the loop (lws_cancel_service).
 *   service thread  EVENT_WAIT_CANCELLED: asks a writable callback for each
 *                   ready exchange; HTTP_WRITEABLE turns the CGI header
 *                   block into an HTTP response and writes the body in
 *                   pieces; the connection stays open for the next request.
 * A client that leaves (CLOSED_HTTP) marks its exchange gone: the front's
 * next write fails, which is how a parked GET learns it (as on FastCGI).
 * Each of the three holders (the lws connection, the front, the ready list)
 * has a reference; the last one frees.
 * At shutdown the parked GETs are answered at once (their own doorbell
 * handle is stopped, as at SIGTERM in parley.fcgi) and written before the
 * loop ends.
 */
#include "bridge.h"
#include "bell.h"
#include "http.h"
#include "ident.h"
#include "poll_park.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HF_THREADS 4
#define HF_OUT_MAX (64u << 20)         /* a response larger than this is dropped */
#define HF_CHUNK 32768                 /* body bytes per lws_write */
#define HF_HOLD_S 120                  /* a connection waiting for its answer longer is dropped */

struct hx {
    struct request r;
    struct response res;
    int refs;                          /* atomic */
    struct hx *qnext;                  /* dispatch queue or ready list */

    /* ---- service thread ---- */
    struct lws *wsi;                   /* NULL once lws closed the connection */
    int hdr_sent, close_after;
    int queued;                        /* handed to the dispatchers (or answered) */
    int discard;                       /* a body that is not read: dropped as it comes */
    size_t body_at, body_end;          /* body's place in out, written up to body_at */

    /* ---- request data (owned) ---- */
    char *strs[12];
    int nstrs;
    char *body;
    size_t blen, bcap, want;           /* collected, allocated, Content-Length */

    /* ---- {mu}: the response ---- */
    pthread_mutex_t mu;
    char *out;
    size_t olen, ocap;
    int gone, done;
};

static struct {
    struct bridge *br;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hx *q_head, *q_tail;        /* to dispatch */
    struct hx *ready;                  /* finished, to write ({mu}) */
    int stop;
    int busy;                          /* exchanges alive (atomic) */
    pthread_t th[HF_THREADS];
    struct parley_ctx ctx[HF_THREADS];
    int nth;
    parley_bell *bell;                 /* own handle: stopping it stops only long-poll */
} H;

static void hx_unref(struct hx *x)
{
    if (__atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (int i = 0; i < x->nstrs; i++)
        free(x->strs[i]);
    free(x->body);
    free(x->out);
    pthread_mutex_destroy(&x->mu);
    free(x);
    __atomic_sub_fetch(&H.busy, 1, __ATOMIC_RELAXED);
}

/* ---- response ops (any thread) ---- */

static struct hx *hx_of(struct response *res)
{
    return (struct hx *)((char *)res - offsetof(struct hx, res));
}

static int hf_write(struct response *res, const char *data, size_t len)
{
    struct hx *x = hx_of(res);
    int rc = 0;
    pthread_mutex_lock(&x->mu);
    if (x->gone || x->done || len > HF_OUT_MAX - x->olen) {
        rc = -1;
    } else if (len) {
        if (x->olen + len > x->ocap) {
            size_t cap = x->ocap ? x->ocap : 1024;
            while (cap < x->olen + len)
                cap *= 2;
            char *n = realloc(x->out, cap);
            if (!n) {
                rc = -1;
                goto out;
            }
            x->out = n;
            x->ocap = cap;
        }
        memcpy(x->out + x->olen, data, len);
        x->olen += len;
    }
out:
    pthread_mutex_unlock(&x->mu);
    return rc;
}

static int hf_flush(struct response *res)
{
    struct hx *x = hx_of(res);
    return __atomic_load_n(&x->gone, __ATOMIC_ACQUIRE) ? -1 : 0;
}

/* The response is complete: hand it to the service thread. */
static void hf_finish(struct response *res)
{
    struct hx *x = hx_of(res);
    pthread_mutex_lock(&x->mu);
    x->done = 1;
    pthread_mutex_unlock(&x->mu);
    __atomic_add_fetch(&x->refs, 1, __ATOMIC_RELAXED);      /* the ready list's */
    pthread_mutex_lock(&H.mu);
    x->qnext = H.ready;
    H.ready = x;
    pthread_mutex_unlock(&H.mu);
    struct lws_context *lc = __atomic_load_n(&H.br->lws, __ATOMIC_ACQUIRE);
    if (lc)
        lws_cancel_service(lc);
}

/* A parked exchange's new owner is done with it (http.h). */
static void hf_release(struct response *res)
{
    hx_unref(hx_of(res));
}

static const struct response_ops hf_ops = { hf_write, hf_flush, hf_finish };

/* ---- dispatchers ---- */

static void *dispatch_main(void *arg)
{
    struct parley_ctx *ctx = arg;
    pthread_mutex_lock(&H.mu);
    for (;;) {
        while (!H.q_head && !H.stop)
            pthread_cond_wait(&H.cv, &H.mu);
        if (!H.q_head)
            break;
        struct hx *x = H.q_head;
        H.q_head = x->qnext;
        if (!H.q_head)
            H.q_tail = NULL;
        pthread_mutex_unlock(&H.mu);
        if (!ctx->db) {
            char err[256];
            ctx->db = db_open(ctx->cfg->db_path, err, sizeof err);
            if (!ctx->db)
                wslog("long-poll: cannot open the database: %s", err);
        }
        x->r.ctx = ctx;
        http_dispatch(&x->r);            /* finishes the response, or parks it */
        if (x->res.parked) {
            x->r.park(&x->r, x->r.park_arg);    /* owns the front's reference now */
        } else {
            if (x->r.after)
                x->r.after(&x->r, x->r.after_arg);
            hx_unref(x);
        }
        pthread_mutex_lock(&H.mu);
    }
    pthread_mutex_unlock(&H.mu);
    return NULL;
}

/* Service thread: hands x to a dispatcher. The connection is kept while
 * the answer takes (a parked GET: up to its wait), not longer. */
static void queue(struct lws *wsi, struct hx *x)
{
    x->queued = 1;
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, HF_HOLD_S);
    pthread_mutex_lock(&H.mu);
    x->qnext = NULL;
    if (H.q_tail)
        H.q_tail->qnext = x;
    else
        H.q_head = x;
    H.q_tail = x;
    pthread_cond_signal(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

int httpfront_start(struct bridge *br)
{
    char err[512] = "";
    H.br = br;
    pthread_mutex_init(&H.mu, NULL);
    pthread_cond_init(&H.cv, NULL);
    /* the bridge's doorbell (and, on PostgreSQL, its one LISTEN
     * connection), through a handle of its own */
    if (!(H.bell = bell_open_handle(br->bell, err, sizeof err))) {
        wslog("long-poll: no doorbell: %s", err);
        return -1;
    }
    for (int i = 0; i < HF_THREADS; i++) {
        H.ctx[i].cfg = &br->cfg;
        H.ctx[i].bell = H.bell;
        if (pthread_create(&H.th[i], NULL, dispatch_main, &H.ctx[i]) != 0)
            return -1;
        H.nth++;
    }
    return 0;
}

int httpfront_serves(const char *path)
{
    return !strncmp(path, "/api/poll/", 10) || !strcmp(path, "/socket/longpoll");
}

/* ---- service thread ---- */

static const char *keep(struct hx *x, const char *s)
{
    if (!s || x->nstrs == (int)(sizeof x->strs / sizeof x->strs[0]))
        return NULL;
    char *c = strdup(s);
    if (c)
        x->strs[x->nstrs++] = c;
    return c;
}

/* A header's value, copied into the exchange; NULL when absent. */
static const char *header(struct hx *x, struct lws *wsi, enum lws_token_indexes tok)
{
    int n = lws_hdr_total_length(wsi, tok);
    if (n <= 0)
        return NULL;
    char *buf = malloc((size_t)n + 1);
    if (!buf)
        return NULL;
    const char *v = NULL;
    if (lws_hdr_copy(wsi, buf, n + 1, tok) >= 0)
        v = keep(x, buf);
    free(buf);
    return v;
}

/* A header lws has no token for (name lower case, with its colon),
 * copied into the exchange; NULL when absent or absurdly long. */
static const char *custom_header(struct hx *x, struct lws *wsi, const char *name)
{
    int nl = (int)strlen(name), n = lws_hdr_custom_length(wsi, name, nl);
    if (n <= 0 || n > 8192)
        return NULL;
    char *buf = malloc((size_t)n + 1);
    if (!buf)
        return NULL;
    const char *v = lws_hdr_custom_copy(wsi, buf, n + 1, name, nl) >= 0 ? keep(x, buf) : NULL;
    free(buf);
    return v;
}

static const struct {
    int meth;
    const char *name;
    enum lws_token_indexes tok;
} methods[] = {
    { LWSHUMETH_GET, "GET", WSI_TOKEN_GET_URI },
    { LWSHUMETH_POST, "POST", WSI_TOKEN_POST_URI },
    { LWSHUMETH_OPTIONS, "OPTIONS", WSI_TOKEN_OPTIONS_URI },
    { LWSHUMETH_PUT, "PUT", WSI_TOKEN_PUT_URI },
    { LWSHUMETH_PATCH, "PATCH", WSI_TOKEN_PATCH_URI },
    { LWSHUMETH_DELETE, "DELETE", WSI_TOKEN_DELETE_URI },
    { LWSHUMETH_HEAD, "HEAD", WSI_TOKEN_HEAD_URI },
};

int httpfront_begin(struct lws *wsi, struct bridge *br, struct hx **slot)
{
    char *uri;
    int ulen, m = lws_http_get_uri_and_method(wsi, &uri, &ulen), mi = -1;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i].meth == m)
            mi = (int)i;
    if (mi < 0) {
        lws_return_http_status(wsi, 405, "method not served here");
        return -1;
    }
    struct hx *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    pthread_mutex_init(&x->mu, NULL);
    x->refs = 2;                         /* the connection's and the front's */
    __atomic_add_fetch(&H.busy, 1, __ATOMIC_RELAXED);
    x->wsi = wsi;
    x->res.ops = &hf_ops;
    x->res.release = hf_release;         /* a waiting GET may park */
    x->r.res = &x->res;
    /* room for a ?token= longer than AUTH_MAX_TOKEN: the dispatcher then
     * answers 401 "token too long" (not 414) */
    char pq[AUTH_MAX_TOKEN * 3 + 2048], tok[8], addr[64];
    if (bridge_request_path(wsi, methods[mi].tok, pq, sizeof pq, tok, sizeof tok) < 0) {
        free(x);
        __atomic_sub_fetch(&H.busy, 1, __ATOMIC_RELAXED);
        lws_return_http_status(wsi, 414, "request path too long");
        return -1;
    }
    char *q = strchr(pq, '?');
    if (q)
        *q++ = '\0';
    x->r.method = methods[mi].name;
    x->r.path = keep(x, pq);
    x->r.query = keep(x, q ? q : "");
    x->r.content_type = header(x, wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    x->r.authorization = header(x, wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    x->r.origin = header(x, wsi, WSI_TOKEN_ORIGIN);
    x->r.acr_headers = header(x, wsi, WSI_TOKEN_HTTP_AC_REQUEST_HEADERS);
    x->r.phx_longpoll_token = custom_header(x, wsi, "x-phoenix-longpoll-token:");
    x->r.phx_auth_token = custom_header(x, wsi, "x-phoenix-authtoken:");
    x->r.cookie = header(x, wsi, WSI_TOKEN_HTTP_COOKIE);          /* anonymous visitors */
    x->r.visitor_header = custom_header(x, wsi, "x-parley-visitor:");
    x->r.forwarded_proto = custom_header(x, wsi, "x-forwarded-proto:");
    x->r.user_agent = header(x, wsi, WSI_TOKEN_HTTP_USER_AGENT);   /* seed 001 metadata */
    x->r.client_version = custom_header(x, wsi, "x-client-version:");
    bridge_client_addr(wsi, br, addr, sizeof addr);
    x->r.remote_addr = keep(x, addr);
    ident_peer(x->r.peer, sizeof x->r.peer, NULL, x->r.remote_addr);
    *slot = x;

    char cl[32] = "";
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 && cl[0]) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end || cl[0] < '0' || cl[0] > '9') {
            x->close_after = x->discard = x->queued = 1;
            res_error(&x->r, 400, "Invalid Content-Length");
            res_finish(&x->r);
            hx_unref(x);                 /* the front's */
            return 0;
        }
        if (n > HTTP_MAX_BODY) {         /* the dispatcher answers 413 unread */
            x->close_after = x->discard = 1;
            x->r.body_len = (size_t)n;
            queue(wsi, x);
            return 0;
        }
        x->want = (size_t)n;
    }
    if (x->want == 0)
        queue(wsi, x);
    /* else the body follows: HTTP_BODY, then HTTP_BODY_COMPLETION */
    return 0;
}

int httpfront_body(struct hx *x, const void *in, size_t len)
{
    if (!x)
        return -1;
    if (x->discard)
        return 0;
    if (len > x->want - x->blen)         /* more than declared */
        return -1;
    if (!x->body) {
        x->body = malloc(x->want + 1);
        if (!x->body)
            return -1;
    }
    memcpy(x->body + x->blen, in, len);
    x->blen += len;
    return 0;
}

int httpfront_body_done(struct lws *wsi, struct hx *x)
{
    if (!x)
        return -1;
    if (x->queued)                       /* discarded: answered already */
        return 0;
    if (x->body)
        x->body[x->blen] = '\0';
    x->r.body = x->body;
    x->r.body_len = x->blen;
    queue(wsi, x);
    return 0;
}

void httpfront_service(struct bridge *br)
{
    (void)br;
    pthread_mutex_lock(&H.mu);
    struct hx *list = H.ready;
    H.ready = NULL;
    pthread_mutex_unlock(&H.mu);
    while (list) {
        struct hx *x = list;
        list = x->qnext;
        if (x->wsi)
            lws_callback_on_writable(x->wsi);
        hx_unref(x);                     /* the ready list's */
    }
}

/* The CGI header block at the start of out → HTTP headers. -1 malformed. */
static int write_headers(struct lws *wsi, struct hx *x)
{
    char *end = memmem(x->out, x->olen, "\r\n\r\n", 4);
    if (!end)
        return -1;
    x->body_at = (size_t)(end - x->out) + 4;
    x->body_end = x->olen;
    unsigned char buf[LWS_PRE + 4096], *start = buf + LWS_PRE, *p = start,
                                        *lim = buf + sizeof buf - 1;
    int status = 0;
    const char *line = x->out;
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon)
            return -1;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        if (nlen == 6 && !strncasecmp(line, "Status", 6)) {
            status = atoi(v);
        } else if (!(nlen == 14 && !strncasecmp(line, "Content-Length", 14))) {
            char name[64];
            if (nlen + 2 > sizeof name)
                return -1;
            for (size_t i = 0; i < nlen; i++)
                name[i] = (char)(line[i] >= 'A' && line[i] <= 'Z' ? line[i] + 32 : line[i]);
            name[nlen] = ':';
            name[nlen + 1] = '\0';
            if (status <= 0)
                return -1;                /* Status comes first (res_start) */
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                            (const unsigned char *)v, (int)(eol - v), &p, lim))
                return -1;
        }
        if (status > 0 && p == start &&
            lws_add_http_header_status(wsi, (unsigned)status, &p, lim))
            return -1;
        line = eol + 2;
    }
    if (status <= 0 || p == start)
        return -1;
    if (lws_add_http_header_content_length(wsi, x->body_end - x->body_at, &p, lim) ||
        lws_finalize_write_http_header(wsi, start, &p, lim))
        return -1;
    return 0;
}

int httpfront_writeable(struct lws *wsi, struct hx **slot)
{
    struct hx *x = *slot;
    pthread_mutex_lock(&x->mu);
    int done = x->done;
    pthread_mutex_unlock(&x->mu);
    if (!done)
        return 0;                        /* a spurious callback: still being answered */
    if (!x->hdr_sent) {
        x->hdr_sent = 1;
        if (write_headers(wsi, x) < 0) {
            wslog("long-poll: malformed response from the HTTP front; closing");
            return -1;
        }
    }
    if (x->body_at < x->body_end) {
        unsigned char buf[LWS_PRE + HF_CHUNK];
        size_t n = x->body_end - x->body_at;
        if (n > HF_CHUNK)
            n = HF_CHUNK;
        memcpy(buf + LWS_PRE, x->out + x->body_at, n);
        x->body_at += n;
        int last = x->body_at == x->body_end;
        if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) <
            (int)n)
            return -1;
        if (!last) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    int close_after = x->close_after;
    metrics_longpoll(x->r.method);
    x->wsi = NULL;
    *slot = NULL;
    hx_unref(x);                         /* the connection's */
    if (close_after)
        return -1;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

void httpfront_closed(struct hx **slot)
{
    struct hx *x = *slot;
    if (!x)
        return;
    *slot = NULL;
    x->wsi = NULL;
    pthread_mutex_lock(&x->mu);
    x->gone = 1;
    pthread_mutex_unlock(&x->mu);
    if (!x->queued)
        hx_unref(x);                     /* the front's: it never got it */
    hx_unref(x);                         /* the connection's */
}

void httpfront_shutdown_begin(void)
{
    parley_stopping = 1;                 /* the front's handlers end their waits */
    if (H.bell)
        bell_wake_all(H.bell);           /* parked GETs are answered now */
}

int httpfront_busy(void)
{
    return __atomic_load_n(&H.busy, __ATOMIC_RELAXED);
}

void httpfront_stop(void)
{
    httpfront_shutdown_begin();
    pthread_mutex_lock(&H.mu);
    H.stop = 1;
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
    for (int i = 0; i < H.nth; i++)
        pthread_join(H.th[i], NULL);
    H.nth = 0;
    int left = poll_park_shutdown(1000);
    if (left)
        wslog("long-poll: %d waiting request(s) not answered at exit", left);
    /* answered after the loop ended: nobody writes them; free what is left */
    httpfront_service(H.br);
    for (int i = 0; i < HF_THREADS; i++) {
        db_close(H.ctx[i].db);
        H.ctx[i].db = NULL;
    }
    if (!left) {
        bell_close(H.bell);
        H.bell = NULL;
    }
}
