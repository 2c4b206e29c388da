/* presence.c — process presence (presence.h): the SQLite bodies, the
 * reporter thread and the upstreams' JSON. A PostgreSQL connection
 * (db_pg_conn) goes to storage/pg/presence.c. Statements are literals with
 * bound values, shared with the PostgreSQL body (presence_pg.h). */
#include "presence.h"
#include "db_sqlite.h"
#include "llm.h"
#include "storage/pg/pg.h"
#include "storage/pg/presence_pg.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char sql_put[] = SQL_PRESENCE_PUT;
static const char sql_del[] = SQL_PRESENCE_DEL;
static const char sql_purge[] = SQL_PRESENCE_PURGE;
static const char sql_list[] = SQL_PRESENCE_LIST;

static int bad_key(const char *node, const char *program, long pid)
{
    return !node || !*node || !program || !*program || pid <= 0;
}

int presence_put(parley_db *db, const char *node, const char *program, long pid,
                 const char *counts, const char *upstreams, int64_t started_at, int64_t now)
{
    if (!db || bad_key(node, program, pid))
        return -1;
    if (!counts)
        counts = "{}";
    if (!upstreams)
        upstreams = "[]";
    if (db_pg_conn(db))
        return presence_pg_put(db, node, program, pid, counts, upstreams, started_at, now);
    sqlite3_stmt *st = db_stmt(db, sql_put);
    if (!st)
        return -1;
    db_bind_text(st, 1, node);
    db_bind_text(st, 2, program);
    sqlite3_bind_int64(st, 3, pid);
    db_bind_text(st, 4, counts);
    db_bind_text(st, 5, upstreams);
    sqlite3_bind_int64(st, 6, started_at);
    sqlite3_bind_int64(st, 7, now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int presence_remove(parley_db *db, const char *node, const char *program, long pid)
{
    if (!db || bad_key(node, program, pid))
        return -1;
    if (db_pg_conn(db))
        return presence_pg_remove(db, node, program, pid);
    sqlite3_stmt *st = db_stmt(db, sql_del);
    if (!st)
        return -1;
    db_bind_text(st, 1, node);
    db_bind_text(st, 2, program);
    sqlite3_bind_int64(st, 3, pid);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int presence_purge(parley_db *db, int64_t before)
{
    if (!db)
        return -1;
    if (db_pg_conn(db))
        return presence_pg_purge(db, before);
    sqlite3_stmt *st = db_stmt(db, sql_purge);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, before);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? db_changes(db) : -1;
}

json_t *presence_row_json(const char *node, const char *program, long long pid,
                          const char *counts, const char *upstreams, long long started_at,
                          long long updated_at)
{
    json_t *c = counts ? json_loads(counts, 0, NULL) : NULL;
    json_t *u = upstreams ? json_loads(upstreams, 0, NULL) : NULL;
    if (!json_is_object(c)) {
        json_decref(c);
        c = json_object();
    }
    if (!json_is_array(u)) {
        json_decref(u);
        u = json_array();
    }
    return json_pack("{s:s, s:s, s:I, s:o, s:o, s:I, s:I}", "node", node ? node : "",
                     "program", program ? program : "", "pid", (json_int_t)pid, "counts", c,
                     "upstreams", u, "started_at", (json_int_t)started_at,
                     "updated_at", (json_int_t)updated_at);
}

int presence_list(parley_db *db, int64_t fresh_after, json_t **out)
{
    if (!db || !out)
        return -1;
    json_t *arr = json_array();
    if (!arr)
        return -1;
    if (db_pg_conn(db)) {
        if (presence_pg_list(db, fresh_after, arr) < 0) {
            json_decref(arr);
            return -1;
        }
        *out = arr;
        return 0;
    }
    sqlite3_stmt *st = db_stmt(db, sql_list);
    if (!st) {
        json_decref(arr);
        return -1;
    }
    sqlite3_bind_int64(st, 1, fresh_after);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = presence_row_json(
            (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
            sqlite3_column_int64(st, 2), (const char *)sqlite3_column_text(st, 3),
            (const char *)sqlite3_column_text(st, 4), sqlite3_column_int64(st, 5),
            sqlite3_column_int64(st, 6));
        if (!row || json_array_append_new(arr, row) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}

json_t *presence_upstreams(const struct parley_config *cfg)
{
    struct llm_config lc;
    struct llm_upstream_status st[LLM_MAX_UPSTREAMS];
    config_llm(cfg, &lc);
    size_t n = llm_upstreams_status(&lc, st, LLM_MAX_UPSTREAMS);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *errs = json_object();
        for (int k = 0; errs && k < LLM_UPERR_N; k++)
            json_object_set_new(errs, llm_up_err_name(k), json_integer(st[i].errors[k]));
        json_t *u = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:o*, s:o, s:o}",
                              "name", st[i].name,
                              "provider", st[i].provider == LLM_OPENAI ? "openai" : "ollama",
                              "url", st[i].url, "breaker", st[i].breaker,
                              "consecutive_failures", st[i].consecutive_failures,
                              "requests", (json_int_t)st[i].requests,
                              "successes", (json_int_t)st[i].successes, "errors", errs,
                              "first_token_ms_last", st[i].last_first_token_ms >= 0
                                  ? json_integer(st[i].last_first_token_ms) : json_null(),
                              "first_token_ms_mean", st[i].mean_first_token_ms >= 0
                                  ? json_integer(st[i].mean_first_token_ms) : json_null());
        if (!u || json_array_append_new(arr, u) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* ---- the reporter ---- */

struct presence {
    const struct parley_config *cfg;
    presence_counts_fn counts;
    void *ud;
    char program[32];
    char node[256];
    long pid;
    int64_t started_at;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;                  /* CLOCK_MONOTONIC */
    int stop;                           /* {mu} */
};

/* One write of the row (and the stale rows' purge). 0 / -1. */
static int report_once(struct presence *p, parley_db *db)
{
    json_t *c = p->counts ? p->counts(p->ud) : NULL;
    json_t *u = presence_upstreams(p->cfg);
    char *ct = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    char *ut = u ? json_dumps(u, JSON_COMPACT) : NULL;
    json_decref(c);
    json_decref(u);
    int64_t now = now_ms();
    int rc = presence_put(db, p->node, p->program, p->pid, ct, ut, p->started_at, now);
    free(ct);
    free(ut);
    if (rc == 0)
        presence_purge(db, now - PRESENCE_STALE_MS);
    return rc;
}

static void *reporter_main(void *arg)
{
    struct presence *p = arg;
    parley_db *db = NULL;
    int failed_logged = 0;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        pthread_mutex_unlock(&p->mu);
        char err[256];
        if (!db)
            db = db_open(p->cfg->db_path, err, sizeof err);
        int rc = db ? report_once(p, db) : -1;
        if (rc < 0 && !failed_logged) {
            fprintf(stderr, "%s: presence: cannot write this process's row (%s); the admin "
                    "page will not count its connections until it can\n", p->program,
                    db ? db_errmsg(db) : err);
            failed_logged = 1;
        } else if (rc == 0) {
            failed_logged = 0;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += PRESENCE_EVERY_MS / 1000;
        ts.tv_nsec += (long)(PRESENCE_EVERY_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&p->mu);
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&p->mu);
    if (db) {
        presence_remove(db, p->node, p->program, p->pid);
        db_close(db);
    }
    return NULL;
}

struct presence *presence_start(const struct parley_config *cfg, const char *program,
                                presence_counts_fn counts, void *ud)
{
    if (!cfg || !program || !*program)
        return NULL;
    struct presence *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cfg = cfg;
    p->counts = counts;
    p->ud = ud;
    str_copy(p->program, sizeof p->program, program);
    if (gethostname(p->node, sizeof p->node - 1) != 0 || !p->node[0])
        str_copy(p->node, sizeof p->node, "localhost");
    p->pid = (long)getpid();
    p->started_at = now_ms();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    if (pthread_create(&p->th, NULL, reporter_main, p) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    return p;
}

void presence_stop(struct presence *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
