/* fuzz_v1chat.c — the OpenAI-compatible endpoint (core/proto_openai.c,
 * POST /v1/chat/completions) as its transport drives it, request after
 * request on one database:
 *
 *   the first line of the input is the Authorization header's value
 *   (proto_openai_auth: a Parley API key, a JWT or, in open mode, anything);
 *   every following line is one request body.
 *
 * For each body: authentication, proto_open at PROTO_OPENAI_PATH as the
 * authenticated user, proto_message with the body, the generation it hands
 * back run at once (its upstream refuses: an error), the channel pumped,
 * then what fcgi/api_openai.c asks afterwards (streaming, Retry-After,
 * cache state, failed, outcome) and proto_openai_leave — with the client
 * gone on every other request, so that the stop path runs too. Every frame
 * must be one JSON object and every error body too (fuzz/proto_harness.h
 * checks frames). The harness's configuration is open mode (no JWT
 * secret), so text that is not a key is accepted as user "" and the bodies
 * are reached; one real key exists for user "alice", and a key-shaped text
 * is looked up. One fresh database per input. */
#include "proto_harness.h"
#include "openai_store.h"
#include "proto_openai.h"

static void v1_check_json_object(const char *what, const char *text)
{
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    if (!o || !json_is_object(o)) {
        fprintf(stderr, "%s is not a JSON object: %s\n", what, text ? text : "(null)");
        abort();
    }
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fzp_ready) {
        fz_config(&fzp_cfg);
        fzp_ready = 1;
    }
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &fzp_cfg);
    char key[OAI_KEY_LEN + 1], kid[OAI_KEY_ID_LEN + 1];
    if (apikey_create(ctx.db, "alice", "fuzz", 1, key, kid) != 0)
        fz_die("apikey_create", "");
    const uint8_t *p = data, *end = data + size;
    const char *s;
    size_t n;
    if (!fz_next(&p, end, '\n', &s, &n))
        n = 0;
    char *authz = fz_strndup(n ? s : "", n);
    if (strlen(authz) != n) {               /* a NUL in a header: no web server passes one */
        free(authz);
        fz_db_close(&ctx);
        return 0;
    }
    int nreq = 0;
    while (fz_next(&p, end, '\n', &s, &n)) {
        struct auth_claims cl;
        char *body = NULL;
        enum perr kind = PERR_OK;
        int a = proto_openai_auth(&ctx, authz[0] ? authz : NULL, &cl, &body, &kind);
        if (a != 0) {
            v1_check_json_object("an authentication error body", body);
            free(body);
            proto_openai_count(&ctx, "chat.completions", perr_name(kind));
            continue;
        }
        struct proto_conn c;
        struct proto_frames f;
        struct proto_job *job = NULL;
        memset(&c, 0, sizeof c);
        frames_init(&f);
        int rc = proto_open(&ctx, &c, PROTO_OPENAI_PATH, cl.sub, "fuzz-peer", &f);
        if (rc == 0) {
            c.admin = cl.admin;
            rc = proto_message(&ctx, &c, s, n, &f, &job);
        }
        (void)proto_openai_streaming(&c);
        int ra = proto_openai_retry_after(&c);
        if (ra < 0) {
            fprintf(stderr, "negative Retry-After %d\n", ra);
            abort();
        }
        (void)proto_openai_cache_state(&c);
        if (job) {
            proto_job_run(&ctx, job);
            proto_job_free(job);
        }
        proto_pump(&ctx, &c, &f);
        fzp_frames_clear(&f);
        (void)proto_openai_failed(&c);
        int gone = nreq++ & 1;
        proto_openai_leave(&ctx, &c, gone);   /* after a refusal: a no-op */
        proto_openai_count(&ctx, "chat.completions", proto_openai_outcome(&c, gone));
        frames_free(&f);
        proto_conn_cleanup(&c);
    }
    free(authz);
    fz_db_close(&ctx);
    return 0;
}
