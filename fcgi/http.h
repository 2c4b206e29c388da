/* http.h — parley.fcgi's request/response model and router, free of
 * libfcgi types so the dispatcher runs in unit tests without a web server.
 *
 * A transport (fcgi/main.c for FastCGI, tests for memory) fills a struct
 * request and a struct response with write/flush/finish callbacks, then calls
 * http_dispatch(). The routing table (fcgi/routes.c) lists
 * {method, pattern, handler, flags}; the dispatcher enforces the flags before
 * any handler runs: CORS/Origin, body size, JWT (F_AUTH), JSON body (F_JSON).
 * Handlers return after writing a complete response (res_json/res_error or a
 * stream they end themselves). Threads: one request per thread at a time.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "runner.h"

#define HTTP_MAX_BODY (1024 * 1024)
#define HTTP_MAX_PARAMS 4

struct response;
struct response_ops {
    /* Writes len bytes; -1 when the client is gone. */
    int (*write)(struct response *res, const char *data, size_t len);
    /* Pushes buffered bytes to the web server now; -1 when the client is gone. */
    int (*flush)(struct response *res);
    /* Ends the HTTP exchange (FCGX_Finish_r); the thread may keep working. */
    void (*finish)(struct response *res);
};

struct response {
    const struct response_ops *ops;
    void *impl;                /* transport's own state */
    int status;                /* set by res_start */
    int started;               /* headers sent */
    int finished;
    int gone;                  /* a write failed: the client left */
    char extra_headers[1024];  /* added by the dispatcher (CORS) */
};

struct request {
    const char *method;        /* "GET" ... */
    const char *path;          /* decoded path, no query */
    const char *query;         /* raw query string ("" if none) */
    const char *body;          /* request body (may be NULL when empty) */
    size_t body_len;
    const char *content_type, *authorization, *origin, *last_event_id, *remote_addr;
    /* Filled by the dispatcher: */
    const char *params[HTTP_MAX_PARAMS];   /* {captures} of the pattern, decoded */
    int nparams;
    json_t *json;              /* parsed body when the route has F_JSON (borrowed) */
    char user[128];            /* JWT sub ("" in open mode) */
    char peer[128];            /* "user:<sub>" or "ip:<remote_addr>" (rate limits) */
    struct parley_ctx *ctx;    /* this thread's db + shared bell + config */
    struct response *res;
    /* Set by a handler that wants work done after the response is finished
     * (long-poll generations): called by the transport after finish. */
    void (*after)(struct request *r, void *arg);
    void *after_arg;
};

enum route_flags {
    F_AUTH = 1,                /* JWT required when a secret is configured */
    F_JSON = 2,                /* body must be a JSON object */
    F_STREAM = 4,              /* streams: the dispatcher adds no Content-Length */
};

typedef int (*http_handler)(struct request *r);
struct route {
    const char *method;
    const char *pattern;       /* "/api/tickets/{id}/ai"; {x} captures one segment */
    http_handler handler;
    int flags;
};

/* Set when the process is shutting down (SIGTERM): long waits end early.
 * Defined in http.c. */
extern volatile int parley_stopping;

/* Runs the request through the table. Always produces a response. */
void http_dispatch(struct request *r);

/* Query parameter value (decoded into buf), NULL when absent. */
const char *req_query(const struct request *r, const char *name, char *buf, size_t buflen);

/* Response helpers. res_start sends the status line and headers
 * ("Content-Type" given, plus Cache-Control: no-cache and
 * X-Accel-Buffering: no for streams, plus the dispatcher's extra headers;
 * extra may add more lines, each ending in \r\n). */
int res_start(struct request *r, int status, const char *content_type, const char *extra);
int res_write(struct request *r, const char *data, size_t len);
int res_printf(struct request *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int res_flush(struct request *r);
/* A whole JSON response (steals body). */
int res_json(struct request *r, int status, json_t *body);
/* {"success": false, "message": msg} with status. */
int res_error(struct request *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 204/202 with no body. */
int res_empty(struct request *r, int status);
void res_finish(struct request *r);
#endif
