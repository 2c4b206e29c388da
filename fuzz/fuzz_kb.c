/* fuzz_kb.c — the knowledge-base importer (core/kb.c): byte 0 picks
 * Markdown or plain text and the source name, the rest is the file's
 * text, imported with kb_import_text into a fresh database; then what
 * uses the passages: kb_list, a search and the grounding of a question
 * made from the text's first bytes, kb_context, and removing the source.
 * Oracle besides the sanitizers: text refused as bad input stores nothing;
 * text accepted stores the number of passages it says. */
#include "fuzz.h"
#include "kb.h"

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
    static const char *const names[4] = { "guide.md", "notes.txt", "faq.markdown", "x" };
    int markdown = data[0] & 1;
    const char *source = names[(data[0] >> 1) & 3];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &cfg);
    char err[512];
    int np = -1;
    int rc = kb_import_text(ctx.db, source, text, len, markdown, &np, err, sizeof err);
    struct kb_entry *e = NULL;
    int n = 0;
    if (kb_list(ctx.db, source, &e, &n) < 0)
        abort();
    kb_entries_free(e, n);
    if (rc == KB_BAD_INPUT && n != 0) {
        fprintf(stderr, "refused text stored %d passages: %s\n", n, err);
        abort();
    }
    if (rc == KB_OK && n != np) {
        fprintf(stderr, "kb_import_text said %d passages, kb_list has %d\n", np, n);
        abort();
    }
    if (rc == KB_OK) {
        char *q = fz_strndup(text, len < 120 ? len : 120);
        struct kb_hits h;
        if (kb_search(ctx.db, q, 5, &h) == 0) {
            (void)kb_confidence(&h);
            int used = 0;
            free(kb_context(&h, 2000, &used));
            kb_hits_free(&h);
        }
        struct kb_grounding g;
        if (kb_ground(ctx.db, q, "You are a helpful assistant.", 3, 1500, &g) == 0)
            kb_grounding_free(&g);
        free(q);
        int removed = 0;
        kb_remove_source(ctx.db, source, &removed);
    }
    fz_db_close(&ctx);
    return 0;
}
