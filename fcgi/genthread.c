/* genthread.c — a generation in a helper thread with its own db (genthread.h). */
#include "genthread.h"

#include <stdio.h>
#include <string.h>

static void *genthread_main(void *arg)
{
    struct genthread *g = arg;
    char err[512];
    struct parley_ctx ctx = { g->cfg, db_open(g->cfg->db_path, err, sizeof err), g->bell };
    if (!ctx.db) {
        fprintf(stderr, "parley: generation thread: %s\n", err);
        g->rc = -1;
        return NULL;
    }
    g->rc = g->fn(&ctx, g->arg);
    db_close(ctx.db);
    return NULL;
}

int genthread_start(struct genthread *g, const struct parley_config *cfg, parley_bell *bell,
                    int (*fn)(struct parley_ctx *ctx, void *arg), void *arg)
{
    memset(g, 0, sizeof *g);
    g->cfg = cfg;
    g->bell = bell;
    g->fn = fn;
    g->arg = arg;
    if (pthread_create(&g->th, NULL, genthread_main, g) != 0)
        return -1;
    g->started = 1;
    return 0;
}

int genthread_join(struct genthread *g)
{
    if (!g->started)
        return 0;
    pthread_join(g->th, NULL);
    g->started = 0;
    return g->rc;
}
