/* memres.h — the memory transport the handler tests dispatch through: a
 * struct response whose writes go to a growing buffer, and a one-call
 * dispatcher that returns the status and the body.
 *
 * Header-only, for one test program per translation unit; needs http.h
 * (build with -Ifcgi, as the Makefile does for tests/unit). */
#ifndef PARLEY_MEMRES_H
#define PARLEY_MEMRES_H
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem {
    char *buf;                 /* all that was written, NUL-terminated */
    size_t len;
    int flushes, finishes;
};

static inline int mem_write(struct response *res, const char *d, size_t n)
{
    struct mem *m = res->impl;
    char *nb = realloc(m->buf, m->len + n + 1);
    if (!nb)
        return -1;
    memcpy(nb + m->len, d, n);
    m->buf = nb;
    m->len += n;
    m->buf[m->len] = '\0';
    return 0;
}

static inline int mem_flush(struct response *res)
{
    ((struct mem *)res->impl)->flushes++;
    return 0;
}

static inline void mem_finish(struct response *res)
{
    ((struct mem *)res->impl)->finishes++;
}

static const struct response_ops mem_ops = { mem_write, mem_flush, mem_finish };

/* Dispatches method path?query with a JSON body (or none) on ctx, runs what
 * the handler left for after the response, and returns the status; *body
 * gets what follows the headers (new string, "" when none). */
static inline int mem_dispatch(struct parley_ctx *ctx, const char *method, const char *path,
                               const char *query, const char *json, char **body)
{
    struct mem m = { NULL, 0, 0, 0 };
    struct response res;
    struct request r;
    memset(&res, 0, sizeof res);
    memset(&r, 0, sizeof r);
    res.ops = &mem_ops;
    res.impl = &m;
    r.res = &res;
    r.ctx = ctx;
    r.method = method;
    r.path = path;
    r.query = query;
    r.content_type = json ? "application/json" : NULL;
    r.body = json;
    r.body_len = json ? strlen(json) : 0;
    r.remote_addr = "127.0.0.1";
    http_dispatch(&r);
    if (r.after)
        r.after(&r, r.after_arg);
    int status = 0;
    const char *all = m.buf ? m.buf : "";
    sscanf(all, "Status: %d", &status);
    const char *sep = strstr(all, "\r\n\r\n");
    if (body)
        *body = strdup(sep ? sep + 4 : "");
    free(m.buf);
    return status;
}
#endif
