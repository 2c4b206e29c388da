/* status.h — the ONE table from a failure kind (core/perr.h) to an HTTP
 * status, for every parley.fcgi handler. A handler that got a kind from
 * core answers with res_error_kind(); nothing in fcgi/ picks a status by
 * reading a message's text.
 * Threads: pure functions (res_error_kind writes r's response, like every
 * res_* helper: one thread per request).
 */
#ifndef PARLEY_FCGI_STATUS_H
#define PARLEY_FCGI_STATUS_H
#include "http.h"
#include "perr.h"

/* The HTTP status of kind: bad_input 400, unauthorized 401, forbidden 403,
 * not_found 404, conflict 409, gone 410, too_large 413, rate_limited 429,
 * too_long 400, budget_exhausted 429,
 * upstream 502, database_readonly and unavailable 503, database, internal
 * and anything unknown 500. PERR_OK is 200. */
int http_status_of(enum perr kind);
/* The kind of a bare HTTP status, for res_error's client code: 400, 405,
 * 415 and any other 4xx bad_input, 401 unauthorized, 403 forbidden, 404
 * not_found, 409 conflict, 410 gone, 413 too_large, 429 rate_limited, 502
 * upstream, 503 unavailable, any other status internal. */
enum perr http_kind_of(int status);

/* res_error() with the status and code of kind: {"success": false,
 * "message": msg, "code": perr_code(kind)};
 * an empty or NULL fmt sends perr_text(kind). Returns what res_error
 * returns (0, or -1 when the client is gone or the response had started). */
int res_error_kind(struct request *r, enum perr kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif
