/* http.h — parley.fcgi's request/response model and router, free of
 * libfcgi types so the dispatcher runs in unit tests without a web server.
 *
 * A transport (fcgi/fcgx_adapter.c for FastCGI, tests for memory) fills a struct
 * request and a struct response with write/flush/finish callbacks, then calls
 * http_dispatch(). The routing table (fcgi/routes.c) lists
 * {method, pattern, handler, flags}; the dispatcher enforces the flags before
 * any handler runs: CORS/Origin, body size, JWT (F_AUTH), JSON body (F_JSON).
 * Handlers return after writing a complete response (res_json/res_error or a
 * stream they end themselves). Threads: one request per thread at a time;
 * the dispatcher and helpers keep no state of their own (parley_stopping
 * aside), so any number of threads may dispatch at once.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H
#include "auth.h"
#include "visitor.h"
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "runner.h"

#define HTTP_MAX_BODY (1024 * 1024)
#define HTTP_MAX_PARAMS 4
#define HTTP_PARAM_BUF 512     /* all decoded {captures} of one request, NULs included */

struct response;
struct response_ops {
    /* Writes len bytes; -1 when the client is gone. */
    int (*write)(struct response *res, const char *data, size_t len);
    /* Pushes buffered bytes to the web server now; -1 when the client is gone. */
    int (*flush)(struct response *res);
    /* Ends the HTTP exchange (FCGX_Finish_r); the thread may keep working. */
    void (*finish)(struct response *res);
};

/* One HTTP response. The helpers below are the only writers; a transport
 * zeroes it and sets ops and impl. */
struct response {
    const struct response_ops *ops;
    void *impl;                /* transport's own state */
    int status;                /* set by res_start */
    int started;               /* headers sent */
    int finished;
    int gone;                  /* a write failed: the client left */
    char extra_headers[1024];  /* added by the dispatcher (CORS) */
    /* Parking (a waiting long-poll GET answered later by another thread,
     * fcgi/poll_park.h). release: set by a transport that can keep the
     * exchange open after http_dispatch returned (NULL: it cannot); called
     * once by whoever owns a parked exchange, after res_finish, to free the
     * transport's state (r, r->res and the request's strings die).
     * parked: set by the handler that parked its request (http_park). */
    void (*release)(struct response *res);
    int parked;
};

/* One request. The transport owns every string and keeps them alive until
 * r->after (if any) has returned; NULL strings mean "not sent". */
struct request {
    const char *method;        /* "GET" ... */
    const char *path;          /* the URL path as the client sent it (still
                                  percent-encoded), no query, mount prefix
                                  removed (http_path_from_cgi) */
    const char *query;         /* raw query string ("" if none) */
    const char *body;          /* request body (may be NULL when empty) */
    size_t body_len;           /* > HTTP_MAX_BODY with body NULL: declared
                                  size of a body the transport did not read */
    const char *content_type, *authorization, *origin, *last_event_id, *remote_addr;
    /* Phoenix LongPoll (phx_longpoll.c): X-Phoenix-Longpoll-Token (the
     * session token of newer clients), X-Phoenix-AuthToken (the JWT of
     * phoenix.js's authToken option); and a CORS preflight's
     * Access-Control-Request-Headers. */
    const char *phx_longpoll_token, *phx_auth_token, *acr_headers;
    /* Anonymous visitors (core/visitor.h, docs/anonymous.md): the Cookie
     * header, the X-Parley-Visitor header, the HTTPS parameter and the
     * X-Forwarded-Proto header (NULL: absent). */
    const char *cookie, *visitor_header, *https, *forwarded_proto;
    /* Seed 001's session metadata: the User-Agent and X-Client-Version
     * headers (NULL: absent). */
    const char *user_agent, *client_version;
    /* The token of a visitor http_visitor issued for this request ("" none):
     * a handler may put it in its response body (field "visitor"). */
    char visitor_new[VISITOR_TOKEN_MAX];
    /* Filled by the dispatcher: */
    const char *params[HTTP_MAX_PARAMS];   /* {captures} of the pattern, percent-
                                  decoded, non-empty, valid UTF-8, never
                                  containing '/' or NUL (point into param_buf) */
    int nparams;
    char param_buf[HTTP_PARAM_BUF];
    int route_flags;           /* flags of the matched route */
    json_t *json;              /* parsed body when the route has F_JSON (borrowed;
                                  released when http_dispatch returns, so an
                                  after callback that needs it takes a ref) */
    char user[128];            /* JWT sub ("" in open mode or without a token) */
    struct auth_claims claims; /* every claim of the token the dispatcher verified
                                  (auth_verify_config, once per request): sub, the
                                  admin role, token_budget, the tenant, the ticket
                                  admin claim; zero (token_budget -1) without one */
    int has_claims;            /* claims come from a verified token */
    char peer[128];            /* rate-limit identity, ident_peer() (core/ident.h):
                                  "user:<sub>" or "ip:<remote_addr>"; the
                                  transport may preset "ip:..." */
    struct parley_ctx *ctx;    /* this thread's db + shared bell + config */
    struct response *res;
    /* Set by a handler that wants work done after the response is finished
     * (no handler needs it now: generations go to proto_job_submit):
     * called by the transport after http_dispatch returned (the response is
     * finished by then), in the same thread, with r and r->ctx still valid. */
    void (*after)(struct request *r, void *arg);
    void *after_arg;
    /* Set by http_park(): called by the transport once http_dispatch
     * returned and the worker gave the exchange up (r, r->res and every
     * string stay valid until r->res->release; r->ctx is the worker's and
     * must no longer be used: the callee sets its own). The callee owns
     * the exchange from then on: it answers, calls res_finish and then
     * r->res->release(r->res). */
    void (*park)(struct request *r, void *arg);
    void *park_arg;
};

enum route_flags {
    F_AUTH = 1,                /* JWT required when a secret is configured:
                                  "Authorization: Bearer" or ?token= → r->user */
    F_JSON = 2,                /* body must be a JSON object (Content-Type
                                  application/json or +json, UTF-8) → r->json */
    F_STREAM = 4,              /* streams: the dispatcher adds no Content-Length;
                                  res_start adds Cache-Control: no-cache and
                                  X-Accel-Buffering: no; HEAD is refused */
    F_USER = 8,                /* JWT optional: a token, if given, must be valid
                                  (else 401) and sets r->user; none leaves "" */
    F_NODB = 16,
    /* Anonymous visitors (docs/anonymous.md), only while PARLEY_JWT_SECRET
     * is set and no token came: F_VISITOR accepts a visitor's token (cookie,
     * X-Parley-Visitor or ?visitor=) in place of the JWT when any protocol
     * is anonymous (what it reaches is the visitor's own: poll sessions,
     * generations); F_ANON_<KIND> also issues a new visitor when none came,
     * if PARLEY_ANONYMOUS names that protocol. */
    F_VISITOR = 32,
    F_ANON_TICKET = 64,
    F_ANON_CHAT = 128,
    F_ANON_SEND = 256,               /* the handler copes with r->ctx->db == NULL
                                  (else the dispatcher answers 503) */
};

/* A handler writes one complete response through the res_* helpers and
 * returns 0, or -1 when that failed (the client left); the dispatcher only
 * sends a 500 when a handler returned without starting a response. */
typedef int (*http_handler)(struct request *r);
struct route {
    const char *method;        /* "OPTIONS": the route answers its path's
                                  preflight itself (after the Origin check)
                                  instead of the dispatcher's generic one */
    const char *pattern;       /* "/api/tickets/{id}/ai"; {x} captures one segment */
    http_handler handler;
    int flags;
};

/* Set when the process is shutting down (SIGTERM): long waits end early.
 * Defined in http.c. */
extern volatile int parley_stopping;

/* The routing table (fcgi/routes.c), in match order. */
extern const struct route http_routes[];
extern const size_t http_nroutes;

/* Runs the request through the table and finishes the response: always
 * produces exactly one (404, 405, 403, 413, 401, 415, 400, 503 or the
 * handler's). The caller then runs r->after, if set. */
void http_dispatch(struct request *r);
/* Streaming responses (F_STREAM routes: SSE) whose handler runs now in
 * this process, for its presence row (core/presence.h, docs/admin.md).
 * Any thread (an atomic counter). */
int http_streams_open(void);
/* A streaming response that outlives its handler (parked on the hub,
 * fcgi/sse_park.h) still counts as open: +1 when it parks, -1 when it
 * ends. Any thread. */
void http_streams_held(int delta);

/* The routing path of a FastCGI/CGI request, into out (percent-encoded):
 * REQUEST_URI's path when it holds a route (its first segment, "api" or
 * "brands"), else SCRIPT_NAME + PATH_INFO (decoded by the server; '%' is
 * re-encoded); anything before the first such segment is the mount prefix
 * and is dropped ("/parley/parley.fcgi/api/health" → "/api/health"). Any
 * argument may be NULL. Returns out ("/" when nothing fits). */
const char *http_path_from_cgi(const char *request_uri, const char *script_name,
                               const char *path_info, char *out, size_t outlen);

/* Query parameter value (percent- and '+'-decoded into buf), NULL when
 * absent, when it does not fit in buf, or when it decodes to a NUL byte. */
/* The request's anonymous visitor (core/visitor.h): the token from the
 * X-Parley-Visitor header, else the query parameter visitor=, else the
 * parley_visitor cookie, checked against PARLEY_JWT_SECRET. 0 with r->user
 * its user id ("anon:<id>") and r->peer its address's rate-limit key; when
 * none (or an invalid one) came and issue is 1, a new visitor is issued:
 * r->visitor_new holds its token and the response gets Set-Cookie
 * (HttpOnly, SameSite=Lax, Secure over HTTPS) and X-Parley-Visitor. -1 when
 * there is no visitor (issue 0) or issuing failed; r->user is then "".
 * Worker thread of the request; no allocation. */
int http_visitor(struct request *r, int issue);
const char *req_query(const struct request *r, const char *name, char *buf, size_t buflen);
/* The request's JWT: the Authorization bearer, else the query parameter
 * token= (decoded into buf). NULL when neither came; *too_long (may be
 * NULL) is then set to 1 when a token= parameter came that does not fit
 * in buf (give buf AUTH_MAX_TOKEN + 2 bytes: such a token is AUTH_TOO_LONG). */
const char *http_request_token(const struct request *r, char *buf, size_t buflen, int *too_long);
/* Integer query parameter name: 0 when absent (*out = def), 1 when it is a
 * decimal integer within [min, max] (*out set), -1 when it is not (a sign
 * '+', blanks, trailing characters, out of range, too long: *out = def).
 * Writes no response: the caller says what it expected. */
int req_query_int(const struct request *r, const char *name, long long def, long long min,
                  long long max, long long *out);

/* Response helpers; each returns 0, or -1 when the client is gone (or the
 * response is already finished / res_start was already called).
 * res_start sends the CGI status line ("Status: 200 OK") and headers
 * ("Content-Type" given, plus Cache-Control: no-cache and
 * X-Accel-Buffering: no for streams, plus the dispatcher's extra headers;
 * extra may add more lines, each ending in \r\n). Body writes of a HEAD
 * request are dropped. */
int res_start(struct request *r, int status, const char *content_type, const char *extra);
int res_write(struct request *r, const char *data, size_t len);
int res_printf(struct request *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int res_flush(struct request *r);
/* A whole JSON response (steals body; NULL body → 500). Adds Content-Length
 * except on F_STREAM routes. */
int res_json(struct request *r, int status, json_t *body);
/* A whole JSON response from text already rendered (len bytes, not
 * copied, not checked): the same headers as res_json. */
int res_json_text(struct request *r, int status, const char *text, size_t len);
/* {"success": false, "message": msg, "code": code} with status; invalid
 * UTF-8 in msg is replaced, 5xx are logged to stderr. code is the
 * documented client code (docs/errors.md) of status's kind
 * (http_kind_of, status.h). -1 when the response had started. */
int res_error(struct request *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* res_error with an explicit client code (a perr_code / perr_gen_code
 * string, static storage); res_error_kind's way. Same returns. */
int res_error_code(struct request *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 204/202 with no body. */
int res_empty(struct request *r, int status);
/* Parks r instead of answering it now (a handler's last step; only when
 * r->res->release is set): the dispatcher does not finish the response,
 * and the transport calls fn(r, arg) once the worker gave the exchange up
 * (see struct request, park). Returns 0. */
int http_park(struct request *r, void (*fn)(struct request *r, void *arg), void *arg);
/* Ends the exchange (ops->finish) once; sends a 500 first if nothing was
 * started. The thread may keep working; later writes return -1. */
void res_finish(struct request *r);
#endif
