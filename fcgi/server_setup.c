/* server_setup.c — parley.fcgi's configuration, database connections and
 * doorbell (server.h).
 *
 * Configuration: config_load() at start (defaults < PARLEY_CONFIG file <
 * environment); the first request's FastCGI parameters (.htaccess SetEnv)
 * are applied once on top, before any handler runs. Each worker opens its
 * own database connection at its first request, once the configuration is
 * final; one doorbell is shared by all (bell_open_db: the <PARLEY_DB>-bell
 * file, or on PostgreSQL this process's one LISTEN connection).
 */
#include "server.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "handlers.h"
#include "presence.h"
#include "util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* The configuration: written by main before the workers start, then once
 * more under cfg_lock by the first request (FastCGI parameters) before
 * cfg_ready is set; read-only after. */
static struct parley_config g_cfg;
static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int cfg_ready;
static int start_open_mode;             /* no JWT secret before the parameters */

/* The doorbell shared by every worker; {bell_lock}. */
static parley_bell *g_bell;
static int bell_failed_logged;
/* This process's presence reporter (core/presence.h: its row of open
 * connections for the admin page), started with the first worker's
 * storage, once the configuration is final; {bell_lock}. */
static struct presence *g_presence;
static pthread_mutex_t bell_lock = PTHREAD_MUTEX_INITIALIZER;

struct parley_config *srv_config(void)
{
    return &g_cfg;
}

int srv_config_load(char *err, size_t errlen)
{
    if (config_load(&g_cfg, err, errlen) < 0)
        return -1;
    start_open_mode = config_open_mode(&g_cfg);
    if (start_open_mode)
        fprintf(stderr,
                "parley.fcgi: WARNING: no PARLEY_JWT_SECRET in the environment or the "
                "PARLEY_CONFIG file — OPEN DEVELOPMENT MODE (no token checked) unless a "
                "FastCGI parameter sets it\n");
    return 0;
}

/* Applies the request's FastCGI parameters that name Parley settings:
 * first all on a scratch copy (so a bad value changes nothing), then on
 * g_cfg. 0, or -1 with the message (key and rule, never a secret) in err. */
static int apply_params(FCGX_ParamArray envp, char *err, size_t errlen)
{
    struct parley_config scratch;
    if (config_defaults(&scratch) < 0)
        return set_err(err, errlen, "out of memory");
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        struct parley_config *cfg = pass ? &g_cfg : &scratch;
        for (char **e = envp; e && *e && rc == 0; e++) {
            const char *eq = strchr(*e, '=');
            char name[128];
            if (!eq || eq == *e || (size_t)(eq - *e) >= sizeof name)
                continue;
            memcpy(name, *e, (size_t)(eq - *e));
            name[eq - *e] = '\0';
            if (strcmp(name, SRV_THREADS_ENV) == 0)
                continue;                /* a process option: environment only */
            char msg[400];
            if (config_set(cfg, name, eq + 1, msg, sizeof msg) < 0)
                rc = set_err(err, errlen, "FastCGI parameter %s", msg);
        }
    }
    if (rc == 0 && config_check(&g_cfg, err, errlen) < 0)
        rc = -1;                         /* e.g. PARLEY_DB made a PostgreSQL string */
    config_cleanup(&scratch);
    return rc;
}

int srv_ensure_config(FCGX_Request *rq)
{
    if (atomic_load_explicit(&cfg_ready, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&cfg_lock);
    int rc = 0;
    if (!atomic_load_explicit(&cfg_ready, memory_order_relaxed)) {
        char err[512];
        if (apply_params(rq->envp, err, sizeof err) < 0) {
            fprintf(stderr, "parley.fcgi: configuration: %s — answering 500 until it is fixed\n",
                    err);
            rc = -1;
        } else {
            if (config_open_mode(&g_cfg))
                fprintf(stderr,
                        "parley.fcgi: WARNING: OPEN DEVELOPMENT MODE — no PARLEY_JWT_SECRET in the "
                        "environment, the PARLEY_CONFIG file or the FastCGI parameters: every "
                        "client is the same anonymous user and no token is checked\n");
            else if (start_open_mode)
                fprintf(stderr, "parley.fcgi: PARLEY_JWT_SECRET set by a FastCGI parameter: "
                                "tokens are required\n");
            atomic_store_explicit(&cfg_ready, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&cfg_lock);
    return rc;
}

void srv_ensure_storage(struct worker *w)
{
    char err[256];
    if (!w->ctx.db) {
        w->ctx.db = db_open(g_cfg.db_path, err, sizeof err);
        if (!w->ctx.db && strcmp(err, w->db_err) != 0) {
            /* err names the database (a PostgreSQL string redacted): PARLEY_DB
             * itself may hold a password */
            fprintf(stderr, "parley.fcgi: database: %s\n", err);
            str_copy(w->db_err, sizeof w->db_err, err);
        } else if (w->ctx.db) {
            w->db_err[0] = '\0';
        }
    }
    if (!w->ctx.bell) {
        pthread_mutex_lock(&bell_lock);
        if (!g_bell) {
            g_bell = bell_open_db(g_cfg.db_path, err, sizeof err);
            if (!g_bell && !bell_failed_logged) {
                fprintf(stderr, "parley.fcgi: doorbell: %s (waits fall back to 1 s slices)\n",
                        err);
                bell_failed_logged = 1;
            }
        }
        w->ctx.bell = g_bell;
        if (!g_presence)
            g_presence = presence_start(&g_cfg, "parley.fcgi", admin_fcgi_counts, NULL);
        pthread_mutex_unlock(&bell_lock);
    }
}

void srv_bell_wake_all(void)
{
    pthread_mutex_lock(&bell_lock);
    if (g_bell)
        bell_wake_all(g_bell);
    pthread_mutex_unlock(&bell_lock);
}

void srv_setup_cleanup(void)
{
    pthread_mutex_lock(&bell_lock);
    bell_close(g_bell);
    g_bell = NULL;
    struct presence *p = g_presence;
    g_presence = NULL;
    pthread_mutex_unlock(&bell_lock);
    presence_stop(p);                    /* deletes this process's row */
    config_cleanup(&g_cfg);
}
