/* fuzz_phx.c — the Phoenix Channels socket (core/phx.c, V2 frames) and
 * seed 003's adapter under it (core/proto_phoenix.c) fed a sequence of
 * client frames, one per line: phx_message for each (a generation it hands
 * back runs at once against an upstream that refuses the connection),
 * then phx_pump, then the socket saved and loaded again as the LongPoll
 * transport does between requests. The first byte of the input picks the
 * topic cap (PARLEY_PHOENIX_MAX_TOPICS 1..4), so the cap's paths run too.
 * One fresh database per input (fuzz.h). */
#include "proto_harness.h"
#include "phx.h"

static struct parley_config cfg;
static int ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        fz_config(&cfg);
        ready = 1;
    }
    if (size == 0)
        return 0;
    int max_topics = 1 + data[0] % 4;
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &cfg);
    fzp_convs(ctx.db);
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", max_topics);
    struct proto_frames f;
    frames_init(&f);
    const uint8_t *p = data + 1, *end = data + size;
    const char *line;
    size_t n;
    while (fz_next(&p, end, '\n', &line, &n)) {
        struct proto_job *job = NULL;
        /* a transport answers heartbeats first, without the socket */
        if (phx_heartbeat(line, n, &f) == 0)
            phx_message(&ctx, &s, line, n, &f, &job);
        if (job) {
            proto_job_run(&ctx, job);
            proto_job_free(job);
        }
        phx_pump(&ctx, &s, &f);
        const char *chans[8];
        phx_channels(&s, chans, 8);
        fzp_frames_check(&f, 1);
        frames_free(&f);
        frames_init(&f);
        char *saved = phx_save(&s);
        phx_free(&s);
        if (!saved || phx_load(&s, saved) < 0) {
            fprintf(stderr, "a saved Phoenix socket does not load again: %s\n",
                    saved ? saved : "(null)");
            abort();
        }
        free(saved);
    }
    frames_free(&f);
    phx_free(&s);
    fz_db_close(&ctx);
    return 0;
}
