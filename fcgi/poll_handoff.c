/* poll_handoff.c — a waiting long-poll GET handed to the WebSocket bridge
 * (poll_handoff.h). */
#include "poll_handoff.h"
#include "bell.h"
#include "poll_transport.h"

#include <stdio.h>
#include <string.h>

/* Printable ASCII without blanks: what a Location header may carry as is. */
static int header_safe(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return 0;
    return 1;
}

int poll_handoff_location(const char *prefix, const char *path, const char *query, char *out,
                          size_t outlen)
{
    if (!prefix || prefix[0] != '/' || strpbrk(prefix, "?#") || !header_safe(prefix) || !path ||
        path[0] != '/' || !header_safe(path) || (query && !header_safe(query)))
        return -1;
    size_t plen = strlen(prefix);
    if (prefix[plen - 1] == '/')        /* "/parley-ws/" + "/api/..." */
        plen--;
    int n = snprintf(out, outlen, "%.*s%s%s%s", (int)plen, prefix, path,
                     query && *query ? "?" : "", query && *query ? query : "");
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int poll_handoff(struct poll_get *g)
{
    struct request *r = g->r;
    struct parley_ctx *ctx = g->ctx;
    if (!ctx->cfg->poll_handoff || !ctx->bell || poll_stopping(ctx))
        return 0;
    int age = bell_beacon_age_ms(ctx->bell);
    if (age < 0 || age > POLL_HANDOFF_BEACON_MS)
        return 0;
    char loc[4096], hdr[4200];
    if (poll_handoff_location(ctx->cfg->poll_handoff, r->path, r->query, loc, sizeof loc) < 0) {
        static int told;
        if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED) &&
            poll_handoff_location(ctx->cfg->poll_handoff, "/", NULL, loc, sizeof loc) < 0)
            fprintf(stderr, "parley.fcgi: PARLEY_POLL_HANDOFF must be a URL path such as "
                            "/parley-ws (no query, no blanks); long-poll GETs wait here\n");
        return 0;
    }
    snprintf(hdr, sizeof hdr, "Location: %s\r\n", loc);
    /* 200 + a local Location: the web server's internal redirect (mod_fcgid,
     * as mod_cgi), not a redirect the browser sees */
    res_start(r, 200, NULL, hdr);
    return 1;
}
