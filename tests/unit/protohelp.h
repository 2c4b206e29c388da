/* protohelp.h — what the adapter and runner tests share: a parley_ctx on
 * the test's database and doorbell, driving an adapter the way a transport
 * does (send a client message, pump until the job ends), running a job in
 * a thread with its own connection like the bridge's workers, and reading
 * frames back as JSON.
 *
 * Header-only, one test program per translation unit: the test sets
 * dbpath / bellpath / cfg before calling open_ctx(). Everything is static
 * inline so a test that uses only part of it still builds with -Werror.
 */
#ifndef PARLEY_PROTOHELP_H
#define PARLEY_PROTOHELP_H
#include "fake.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "llm.h"
#include "proto.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char dbpath[512], bellpath[600];
static struct parley_config cfg;

/* Points dbpath / bellpath at <name>.db in the test's scratch directory and
 * cfg at the simulated LLM (model llama3.2). 0, or -1 after printing a
 * failed TAP line, so main() can just return 1. */
static inline int test_setup(const char *name)
{
    char err[512];
    snprintf(dbpath, sizeof dbpath, "%s/%s.db", th_tmpdir(), name);
    snprintf(bellpath, sizeof bellpath, "%s/%s.db-bell", th_tmpdir(), name);
    llm_global_init();
    const char *url = fake_url();
    if (!url || config_defaults(&cfg) < 0 ||
        config_set(&cfg, "OLLAMA_SERVER", url, err, sizeof err) < 0 ||
        config_set(&cfg, "PARLEY_MODEL", "llama3.2", err, sizeof err) < 0) {
        printf("not ok 1 - setup: no simulated LLM or bad config\n");
        return -1;
    }
    return 0;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Opens ctx on dbpath / bellpath with cfg. 0, or -1 with the reason printed. */
static inline int open_ctx(struct parley_ctx *ctx)
{
    char err[512];
    ctx->cfg = &cfg;
    ctx->db = db_open(dbpath, err, sizeof err);
    ctx->bell = ctx->db ? bell_open(bellpath, err, sizeof err) : NULL;
    if (!ctx->db || !ctx->bell) {
        printf("# %s\n", err);
        db_close(ctx->db);
        return -1;
    }
    return 0;
}

static inline void close_ctx(struct parley_ctx *ctx)
{
    bell_close(ctx->bell);
    db_close(ctx->db);
}

/* One client message, as a transport hands it to the adapter. */
static inline int send_text(struct parley_ctx *ctx, struct proto_conn *c, const char *text,
                            struct proto_frames *f, struct proto_job **job)
{
    return proto_message(ctx, c, text, strlen(text), f, job);
}

/* Pumps until the connection stops following (its job ended), at most 15 s.
 * 0, or -1 on an error or if it still follows. */
static inline int pump_to_end(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *f)
{
    int64_t end = mono_ms() + 15000;
    while (proto_following(c) && mono_ms() < end) {
        int n = proto_pump(ctx, c, f);
        if (n < 0)
            return -1;
        if (n == 0)
            sleep_ms(3);
    }
    return proto_following(c) ? -1 : 0;
}

/* Runs job on ctx and frees it; -1 when there is no job. */
static inline int run_job(struct parley_ctx *ctx, struct proto_job *job)
{
    int rc = job ? proto_job_run(ctx, job) : -1;
    proto_job_free(job);
    return rc;
}

/* A job run in its own thread with its own database connection, like the
 * bridge's worker threads. */
struct job_thread { pthread_t th; struct proto_job *job; int rc; };

static inline void *job_main(void *ud)
{
    struct job_thread *t = ud;
    struct parley_ctx ctx;
    t->rc = -1;
    if (open_ctx(&ctx) == 0) {
        t->rc = proto_job_run(&ctx, t->job);
        close_ctx(&ctx);
    }
    proto_job_free(t->job);
    return NULL;
}

static inline int job_start(struct job_thread *t, struct proto_job *job)
{
    t->job = job;
    return pthread_create(&t->th, NULL, job_main, t);
}

/* Frame i parsed (new reference), NULL when there is none. */
static inline json_t *frame(const struct proto_frames *f, int i)
{
    return i >= 0 && i < f->n ? json_loads(f->v[i], 0, NULL) : NULL;
}

/* The frame's "type", "" when it has none. */
static inline const char *ftype(json_t *o)
{
    const char *t = json_string_value(json_object_get(o, "type"));
    return t ? t : "";
}

/* The exact text of o's JSON as frames carry it (new string); takes o. */
static inline char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(o);
    return s;
}

/* Frame i is byte for byte the JSON of want (taken). */
#define check_frame(f, i, want) do { \
    char *cf_w = dump(want); \
    CHECK((i) < (f)->n); \
    if ((i) < (f)->n) \
        CHECK_STR((f)->v[i], cf_w); \
    free(cf_w); \
} while (0)

#endif
