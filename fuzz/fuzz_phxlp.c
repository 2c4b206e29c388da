/* fuzz_phxlp.c — the Phoenix LongPoll transport's NDJSON batches
 * (fcgi/phx_longpoll.c: POST /socket/longpoll, application/x-ndjson, up
 * to 100 V2 frames per body, then core/phx.c and seed 003's adapter),
 * through the router. Input: byte 0 picks JWT or open mode and whether
 * the body is sent as NDJSON or as one frame; then NUL-separated POST
 * bodies, each followed by a GET that reads the session's frames. The
 * session is opened first (GET without a token: status 410 and a token).
 * One fresh database per input. */
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
    const char *ctype = (data[0] & 2) ? "application/json" : "application/x-ndjson";
    const char *open = "GET /socket/longpoll?vsn=2.0.0\nx-phoenix-authtoken: $JWT\n\n";
    fzh_request(&ctx, open, strlen(open));
    const uint8_t *p = data + 1, *end = data + size;
    const char *s;
    size_t n;
    while (fzh_id[0] && fz_next(&p, end, 0, &s, &n)) {
        char *head = malloc(n + 300);
        int hl = snprintf(head, 300, "POST /socket/longpoll?vsn=2.0.0&token=$ID\n"
                                     "content-type: %s\n\n", ctype);
        memcpy(head + hl, s, n);
        fzh_request(&ctx, head, (size_t)hl + n);
        const char *get = "GET /socket/longpoll?vsn=2.0.0&token=$ID\n"
                          "x-phoenix-authtoken: $JWT\n\n";
        fzh_request(&ctx, get, strlen(get));
        free(head);
    }
    fz_db_close(&ctx);
    return 0;
}
