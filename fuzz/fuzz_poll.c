/* fuzz_poll.c — the long-poll transport's NDJSON batches
 * (fcgi/poll_handlers.c: POST /api/poll/{sid}, one frame or several as
 * NDJSON, and what the adapters do with them), through the router.
 * Input: byte 0 picks JWT or open mode; the first line is the WebSocket
 * path the session opens (POST /api/poll/open {"path": ...}: "/ws/s1",
 * "/api/websocket/chat/T-1", "/ws/chat/techpro"...); then NUL-separated
 * POST bodies, each followed by a GET of the session (wait=0) that reads
 * and acknowledges its outbox. One fresh database per input. */
#include "http_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fzh_ready)
        fzh_setup();
    if (size == 0)
        return 0;
    fzh_id[0] = '\0';
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &fzh_cfg[data[0] & 1]);
    fzp_sample_catalog(ctx.db);
    const uint8_t *p = data + 1, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    size_t pl = nl ? (size_t)(nl - p) : (size_t)(end - p);
    char *wspath = fz_strndup((const char *)p, pl);
    p = nl ? nl + 1 : end;
    json_t *o = json_pack("{s:s}", "path", wspath);
    char *ob = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    free(wspath);
    if (ob) {
        size_t bl = strlen(ob) + 200;
        char *req = malloc(bl);
        snprintf(req, bl, "POST /api/poll/open\nauthorization: Bearer $JWT\n"
                          "content-type: application/json\n\n%s", ob);
        int st = fzh_request(&ctx, req, strlen(req));
        free(req);
        free(ob);
        const char *s;
        size_t n;
        int cursor = 0;
        while (st == 200 && fz_next(&p, end, 0, &s, &n)) {
            char *head = malloc(n + 200);
            int hl = snprintf(head, 200, "POST /api/poll/$ID\nauthorization: Bearer $JWT\n"
                                         "content-type: application/x-ndjson\n\n");
            memcpy(head + hl, s, n);
            fzh_request(&ctx, head, (size_t)hl + n);
            char get[200];
            snprintf(get, sizeof get, "GET /api/poll/$ID?wait=0&cursor=%d\n"
                                      "authorization: Bearer $JWT\n\n", cursor++);
            fzh_request(&ctx, get, strlen(get));
            free(head);
        }
    }
    fz_db_close(&ctx);
    return 0;
}
