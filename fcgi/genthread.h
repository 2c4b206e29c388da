/* genthread.h — run a generation in a helper thread while the request
 * thread streams it (SSE "inline" generations). The helper opens its own
 * database connection (a parley_db is one thread's), runs fn, closes. */
#ifndef PARLEY_GENTHREAD_H
#define PARLEY_GENTHREAD_H
#include <pthread.h>
#include "runner.h"

struct genthread {
    pthread_t th;
    int started;
    const struct parley_config *cfg;
    parley_bell *bell;
    int (*fn)(struct parley_ctx *ctx, void *arg);
    void *arg;
    int rc;
};

/* Starts fn(ctx, arg) in a new thread. 0 / -1 (then nothing runs). */
int genthread_start(struct genthread *g, const struct parley_config *cfg, parley_bell *bell,
                    int (*fn)(struct parley_ctx *ctx, void *arg), void *arg);
/* Waits for it (no-op if never started). Returns fn's result. */
int genthread_join(struct genthread *g);
#endif
