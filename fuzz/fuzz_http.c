/* fuzz_http.c — parley.fcgi's router and handlers (fcgi/http.c
 * http_dispatch: Origin/CORS, body limits, JWT, query and JSON-body
 * parsing, then every route of fcgi/routes.c) fed a sequence of requests
 * (fuzz/http_harness.h's text form), separated by NUL bytes, on one fresh
 * database per input holding the seed 002 demo catalogue. Byte 0 picks
 * the configuration. */
#include "http_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fzh_ready)
        fzh_setup();
    if (size == 0)
        return 0;
    fzh_id[0] = '\0';
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &fzh_cfg[data[0] & 7]);
    fzp_sample_catalog(ctx.db);
    const uint8_t *p = data + 1, *end = data + size;
    const char *s;
    size_t n;
    while (fz_next(&p, end, 0, &s, &n))
        fzh_request(&ctx, s, n);
    fz_db_close(&ctx);
    return 0;
}
