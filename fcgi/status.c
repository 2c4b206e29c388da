/* status.c — failure kind → HTTP status, once for parley.fcgi (status.h). */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

int http_status_of(enum perr kind)
{
    static const int status[PERR_COUNT_] = {
        [PERR_OK] = 200,
        [PERR_BAD_INPUT] = 400,
        [PERR_UNAUTHORIZED] = 401,
        [PERR_FORBIDDEN] = 403,
        [PERR_NOT_FOUND] = 404,
        [PERR_CONFLICT] = 409,
        [PERR_GONE] = 410,
        [PERR_TOO_LARGE] = 413,
        [PERR_RATE_LIMITED] = 429,
        [PERR_UPSTREAM] = 502,
        [PERR_DB] = 500,
        [PERR_DB_READONLY] = 503,
        [PERR_DB_UNAVAILABLE] = 503,
        [PERR_UNAVAILABLE] = 503,
        [PERR_INTERNAL] = 500,
        [PERR_BUDGET_EXHAUSTED] = 429,
        [PERR_TOO_LONG] = 400,
        [PERR_QUEUE_FULL] = 429,
    };
    if ((int)kind < 0 || kind >= PERR_COUNT_ || !status[kind])
        return 500;
    return status[kind];
}

enum perr http_kind_of(int status)
{
    switch (status) {
    case 401: return PERR_UNAUTHORIZED;
    case 403: return PERR_FORBIDDEN;
    case 404: return PERR_NOT_FOUND;
    case 409: return PERR_CONFLICT;
    case 410: return PERR_GONE;
    case 413: return PERR_TOO_LARGE;
    case 429: return PERR_RATE_LIMITED;
    case 502: return PERR_UPSTREAM;
    case 503: return PERR_UNAVAILABLE;
    }
    return status >= 400 && status < 500 ? PERR_BAD_INPUT : PERR_INTERNAL;
}

int res_error_kind(struct request *r, enum perr kind, const char *fmt, ...)
{
    char msg[1024] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    return res_error_code(r, http_status_of(kind), perr_code(kind), "%s",
                          msg[0] ? msg : perr_text(kind));
}
