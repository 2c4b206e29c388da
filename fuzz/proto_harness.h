/* proto_harness.h — drives one protocol adapter (core/proto.h) with a
 * sequence of client frames, the way a transport does, for the adapter
 * harnesses (fuzz_ticket.c, fuzz_chat.c, fuzz_brand.c, fuzz_send.c).
 *
 * Input: the first line is appended to the adapter's path (the path
 * parameter and query: "T-1?seq=1&after=3"); every following line is one
 * client text frame. For each frame: proto_message; a generation it hands
 * back is run at once (its upstream refuses the connection: an error
 * event); then the followed channel is pumped; then the connection is
 * saved and loaded again, as a long-poll session is between requests. A
 * connection the adapter closes ends the sequence. One fresh database per
 * input (fuzz.h).
 */
#ifndef PARLEY_PROTO_HARNESS_H
#define PARLEY_PROTO_HARNESS_H
#include "fuzz.h"
#include "catalog.h"
#include "proto.h"
#include "store.h"
#include "util.h"

FZ_UNUSED static struct parley_config fzp_cfg;
FZ_UNUSED static int fzp_ready;

/* The seed 002 demo brands in the template database (share/, read from the
 * repository root, where make fuzz and make test run). */
static inline void fzp_sample_catalog(parley_db *db)
{
    json_t *doc;
    char err[600];
    struct catalog_import_result res;
    if (catalog_read_json("share/sample-catalog.json", &doc, err, sizeof err) < 0)
        fz_die("sample catalogue", err);
    int rc = catalog_import_brands(db, doc, &res);
    json_decref(doc);
    catalog_import_result_free(&res);
    if (rc != CATALOG_IMPORT_OK)
        fz_die("sample catalogue", "import refused");
}

/* Conversations some frames can name: conv-1 of alice (the harness's
 * user) and conv-2 of bob (someone else's), seed 004's kind; s-bob, a
 * chat session of bob's; p-bob, a Phoenix session of bob's. */
static inline void fzp_convs(parley_db *db)
{
    static const char *const v[4][3] = { { "conv-1", "alice", "sse" }, { "conv-2", "bob", "sse" },
                                         { "s-bob", "bob", "chat" }, { "p-bob", "bob", "phoenix" } };
    for (int i = 0; i < 4; i++) {
        struct conversation cv;
        memset(&cv, 0, sizeof cv);
        str_copy(cv.id, sizeof cv.id, v[i][0]);
        str_copy(cv.owner, sizeof cv.owner, v[i][1]);
        str_copy(cv.kind, sizeof cv.kind, v[i][2]);
        if (store_conv_create(db, &cv) != 0)
            fz_die("conversation", v[i][0]);
    }
}

/* Every frame an adapter produces is one JSON text (a transport sends it
 * as is): dies otherwise. array: a Phoenix V2 frame, a JSON array of 5. */
static inline void fzp_frames_check(const struct proto_frames *f, int array)
{
    for (int i = 0; i < f->n; i++) {
        json_t *o = f->v[i] ? json_loads(f->v[i], JSON_DECODE_ANY, NULL) : NULL;
        if (!o || (array ? !(json_is_array(o) && json_array_size(o) == 5) : !json_is_object(o))) {
            fprintf(stderr, "frame %d is not a %s: %s\n", i,
                    array ? "V2 array" : "JSON object", f->v[i] ? f->v[i] : "(null)");
            abort();
        }
        json_decref(o);
    }
}

static inline void fzp_frames_clear(struct proto_frames *f)
{
    fzp_frames_check(f, 0);
    frames_free(f);
    frames_init(f);
}

/* Runs the sequence in data on an adapter reached at base + first line. */
static inline int fzp_run(const char *base, const uint8_t *data, size_t size)
{
    if (!fzp_ready) {
        fz_config(&fzp_cfg);
        fzp_ready = 1;
    }
    struct parley_ctx ctx;
    fz_db_fresh(&ctx, &fzp_cfg);
    if (!strcmp(base, "/ws/chat/"))
        fzp_sample_catalog(ctx.db);
    fzp_convs(ctx.db);
    const uint8_t *p = data, *end = data + size;
    const char *s;
    size_t n;
    char path[600];
    if (!fz_next(&p, end, '\n', &s, &n))
        n = 0;
    char *tail = fz_strndup(n ? s : "", n);
    if (strlen(tail) != n) {                /* a NUL in the path: no transport passes one */
        free(tail);
        fz_db_close(&ctx);
        return 0;
    }
    /* seed 004 and the AI SDK stream have one path: the first line is then
     * ignored */
    int one_path = !strcmp(base, PROTO_SEND_PATH) || !strcmp(base, PROTO_AISDK_PATH);
    snprintf(path, sizeof path, "%s%s", base, one_path ? "" : tail);
    free(tail);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    int rc = proto_open(&ctx, &c, path, "alice", "user:alice", &f);
    fzp_frames_clear(&f);
    while (rc == 0 && !c.close && fz_next(&p, end, '\n', &s, &n)) {
        struct proto_job *job = NULL;
        proto_message(&ctx, &c, s, n, &f, &job);
        if (job) {
            proto_job_run(&ctx, job);
            proto_job_free(job);
        }
        proto_pump(&ctx, &c, &f);
        fzp_frames_clear(&f);
        if (c.kind == PROTO_SEND || c.kind == PROTO_AISDK)
            continue;                       /* HTTP only: never saved */
        char *saved = proto_conn_save(&c);
        proto_conn_cleanup(&c);
        if (!saved || proto_conn_load(&c, saved) < 0) {
            fprintf(stderr, "a saved connection does not load again: %s\n",
                    saved ? saved : "(null)");
            abort();
        }
        free(saved);
    }
    frames_free(&f);
    proto_conn_cleanup(&c);
    fz_db_close(&ctx);
    return 0;
}
#endif
