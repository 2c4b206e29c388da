/* llm_harness.h — the upstream stream parsers of core/llm.c (Ollama
 * NDJSON, OpenAI server-sent events) fed a response body in arbitrary
 * byte splits, for fuzz_ollama.c and fuzz_openai.c.
 *
 * core/llm.c is compiled into the harness (its parser is static: the
 * write callback write_body, then transfer_done at the end of the
 * transfer, exactly as libcurl drives them), so no socket is opened.
 * Input: byte 0 picks the HTTP status (mostly 200; some 4xx/5xx, whose
 * body is collected as an error), byte 1 how many split lengths follow
 * (0..15), then those lengths (1..256 bytes each); the rest is the body,
 * written piece by piece (the last piece holds what the lengths leave).
 * Oracle besides the sanitizers: the outcome (tokens delivered, final,
 * failed, error kind and message, counts, model) must not depend on the
 * splits: the same body written in one piece must give the same. */
#ifndef PARLEY_LLM_HARNESS_H
#define PARLEY_LLM_HARNESS_H
#include "llm.c"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fzl_outcome {
    struct buf text;           /* every token delivered, concatenated */
    int ntok, failed, final, kind, up_tokens, prompt_tokens;
    char err[512], model[128];
};

static int fzl_on_token(void *ud, const char *t, size_t n)
{
    struct fzl_outcome *o = ud;
    o->ntok++;
    if (buf_add(&o->text, t, n, (size_t)1 << 30) != 0)
        abort();
    return 0;
}

/* Runs one transfer of body cut into pieces[0..npieces) (lengths; the last
 * piece is the rest). */
static void fzl_transfer(enum llm_provider prov, int status, const char *body, size_t len,
                         const size_t *pieces, size_t npieces, struct fzl_outcome *o)
{
    struct llm_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.provider = prov;
    struct llm_callbacks cb = { fzl_on_token, NULL, 0, o };
    struct llm_result res;
    memset(&res, 0, sizeof res);
    res.first_token_ms = -1;
    struct call c;
    memset(&c, 0, sizeof c);
    c.cfg = &cfg;
    c.cb = &cb;
    c.res = &res;
    c.retry_after_ms = -1;
    c.up_tokens = -1;
    c.status = status;                  /* what curl would report at the first write */
    c.error_body = status < 200 || status > 299;
    snprintf(c.where, sizeof c.where, "127.0.0.1:1");
    snprintf(c.path, sizeof c.path, "%s", prov == LLM_OPENAI ? "/v1/chat/completions" : "/api/chat");
    size_t off = 0, i = 0;
    int aborted = 0;
    while (off < len) {
        size_t n = i < npieces ? pieces[i++] : len - off;
        if (n > len - off)
            n = len - off;
        /* curl hands the callback a writable buffer it owns: a copy, so
         * a read past the piece is caught by ASan */
        char *piece = malloc(n ? n : 1);
        if (!piece)
            abort();
        memcpy(piece, body + off, n);
        size_t r = write_body(&c, piece, 1, n);
        free(piece);
        off += n;
        if (r != n) {                   /* curl aborts the transfer: CURLE_WRITE_ERROR */
            aborted = 1;
            break;
        }
    }
    transfer_done(&c, aborted ? CURLE_WRITE_ERROR : CURLE_OK, "");
    o->failed = c.failed;
    o->final = c.final;
    o->kind = (int)res.kind;
    o->up_tokens = c.up_tokens;
    o->prompt_tokens = res.prompt_tokens;
    snprintf(o->err, sizeof o->err, "%s", res.err);
    snprintf(o->model, sizeof o->model, "%s", res.model);
    buf_free(&c.line);
    buf_free(&c.data);
    buf_free(&c.errbody);
}

static int fzl_same(const struct fzl_outcome *a, const struct fzl_outcome *b)
{
    return a->text.len == b->text.len &&
           (a->text.len == 0 || memcmp(a->text.p, b->text.p, a->text.len) == 0) &&
           a->failed == b->failed && a->final == b->final && a->kind == b->kind &&
           a->up_tokens == b->up_tokens && a->prompt_tokens == b->prompt_tokens &&
           strcmp(a->err, b->err) == 0 && strcmp(a->model, b->model) == 0;
}

static int fzl_run(enum llm_provider prov, const uint8_t *data, size_t size)
{
    static const int statuses[8] = { 200, 200, 200, 200, 200, 429, 500, 404 };
    if (size < 2)
        return 0;
    int status = statuses[data[0] % 8];
    size_t npieces = data[1] % 16, pieces[16];
    if (size < 2 + npieces)
        return 0;
    for (size_t i = 0; i < npieces; i++)
        pieces[i] = (size_t)data[2 + i] + 1;
    const char *body = (const char *)data + 2 + npieces;
    size_t len = size - 2 - npieces;
    struct fzl_outcome split, whole;
    memset(&split, 0, sizeof split);
    memset(&whole, 0, sizeof whole);
    fzl_transfer(prov, status, body, len, pieces, npieces, &split);
    fzl_transfer(prov, status, body, len, NULL, 0, &whole);
    if (!fzl_same(&split, &whole)) {
        fprintf(stderr, "the outcome depends on how the body is split:\n"
                "  split: %d tokens (%zu bytes), failed %d final %d kind %d: %s\n"
                "  whole: %d tokens (%zu bytes), failed %d final %d kind %d: %s\n",
                split.ntok, split.text.len, split.failed, split.final, split.kind, split.err,
                whole.ntok, whole.text.len, whole.failed, whole.final, whole.kind, whole.err);
        abort();
    }
    buf_free(&split.text);
    buf_free(&whole.text);
    return 0;
}
#endif
