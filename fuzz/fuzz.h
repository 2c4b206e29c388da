/* fuzz.h — what Parley's fuzz harnesses (fuzz/fuzz_<name>.c) share: a
 * scratch SQLite database per input (a copy of one migrated template in a
 * private temporary directory), a configuration whose LLM is an unused
 * loopback port (so a generation that runs fails at once with "connection
 * refused" and never reaches a real upstream), and helpers that cut an
 * input into frames or into byte splits.
 *
 * Each harness is one translation unit: this header, then its
 * LLVMFuzzerTestOneInput. It is linked two ways:
 *   make fuzz   with clang -fsanitize=fuzzer (libFuzzer's main), and
 *   make test   with fuzz/replay.c's main(), which runs every file of
 *               fuzz/regressions/<name>/ and fuzz/corpus/<name>/ through it
 *               under the suite's own compiler and SANITIZE flags.
 * Everything here is static (one harness per program). Not thread-safe:
 * libFuzzer calls the harness from one thread.
 */
#ifndef PARLEY_FUZZ_H
#define PARLEY_FUZZ_H
#include "bell.h"
#include "config.h"
#include "db.h"
#include "llm.h"
#include "runner.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_UNUSED __attribute__((unused))
FZ_UNUSED static char fz_dir[256];
FZ_UNUSED static char fz_dbpath[512], fz_bellpath[600], fz_tmplpath[512];
FZ_UNUSED static char *fz_tmpl;           /* the migrated template database's bytes */
FZ_UNUSED static size_t fz_tmpl_len;
FZ_UNUSED static int fz_port_fd = -1;     /* a bound, never listening socket: its port refuses */
FZ_UNUSED static char fz_llm_url[64];

static inline void fz_die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz setup: %s: %s\n", what, err ? err : "");
    abort();
}

/* Removes the scratch files (atexit). Only what this process created. */
static inline void fz_cleanup(void)
{
    if (!fz_dir[0])
        return;
    DIR *d = opendir(fz_dir);
    struct dirent *e;
    char p[800];
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", fz_dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(fz_dir);
}

/* The private scratch directory (created once). */
static inline const char *fz_tmpdir(void)
{
    if (!fz_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(fz_dir, sizeof fz_dir, "%s/parley-fuzz-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(fz_dir))
            fz_die("mkdtemp", fz_dir);
        atexit(fz_cleanup);
    }
    return fz_dir;
}

/* An URL on 127.0.0.1 at a port bound by this process and never listened
 * on: connecting is refused at once. */
static inline const char *fz_dead_url(void)
{
    if (fz_port_fd < 0) {
        struct sockaddr_in a;
        socklen_t al = sizeof a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fz_port_fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fz_port_fd < 0 || bind(fz_port_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(fz_port_fd, (struct sockaddr *)&a, &al) < 0)
            fz_die("bind 127.0.0.1:0", "");
        snprintf(fz_llm_url, sizeof fz_llm_url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    }
    return fz_llm_url;
}

/* A configuration for harnesses: defaults, the LLM at fz_dead_url(), one
 * upstream attempt, no backoff. Dies on failure (a harness bug). */
static inline void fz_config(struct parley_config *cfg)
{
    char err[512];
    llm_global_init();
    if (config_defaults(cfg) < 0 ||
        config_set(cfg, "OLLAMA_SERVER", fz_dead_url(), err, sizeof err) < 0 ||
        config_set(cfg, "PARLEY_MODEL", "llama3.2", err, sizeof err) < 0 ||
        config_set(cfg, "PARLEY_UPSTREAM_BACKOFF_MS", "0", err, sizeof err) < 0 ||
        config_set(cfg, "PARLEY_CONNECT_TIMEOUT_MS", "200", err, sizeof err) < 0 ||
        config_set(cfg, "PARLEY_TOTAL_TIMEOUT_MS", "2000", err, sizeof err) < 0)
        fz_die("config", err);
}

static inline void fz_unlink_db(void)
{
    char p[700];
    unlink(fz_dbpath);
    snprintf(p, sizeof p, "%s-wal", fz_dbpath);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", fz_dbpath);
    unlink(p);
}

/* A fresh database for one input: the template (migrated once) copied to
 * the scratch path and opened. ctx->db is set; ctx->bell is the one
 * doorbell of the process (opened once). Close with fz_db_close. */
static inline void fz_db_fresh(struct parley_ctx *ctx, const struct parley_config *cfg)
{
    char err[512];
    static parley_bell *bell;
    if (!fz_tmpl) {
        snprintf(fz_tmplpath, sizeof fz_tmplpath, "%s/template.db", fz_tmpdir());
        snprintf(fz_dbpath, sizeof fz_dbpath, "%s/work.db", fz_tmpdir());
        snprintf(fz_bellpath, sizeof fz_bellpath, "%s/work.db-bell", fz_tmpdir());
        parley_db *t = db_open(fz_tmplpath, err, sizeof err);
        if (!t)
            fz_die("db_open template", err);
        db_close(t);
        FILE *f = fopen(fz_tmplpath, "rb");
        if (!f)
            fz_die("read template", fz_tmplpath);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        fz_tmpl = malloc((size_t)n);
        if (!fz_tmpl || fread(fz_tmpl, 1, (size_t)n, f) != (size_t)n)
            fz_die("read template", fz_tmplpath);
        fz_tmpl_len = (size_t)n;
        fclose(f);
        bell = bell_open(fz_bellpath, err, sizeof err);
        if (!bell)
            fz_die("bell_open", err);
    }
    fz_unlink_db();
    FILE *f = fopen(fz_dbpath, "wb");
    if (!f || fwrite(fz_tmpl, 1, fz_tmpl_len, f) != fz_tmpl_len || fclose(f) != 0)
        fz_die("write scratch database", fz_dbpath);
    ctx->cfg = cfg;
    ctx->bell = bell;
    ctx->db = db_open(fz_dbpath, err, sizeof err);
    if (!ctx->db)
        fz_die("db_open", err);
}

static inline void fz_db_close(struct parley_ctx *ctx)
{
    db_close(ctx->db);
    ctx->db = NULL;
}

/* Cuts [*p, end) at the next sep byte: the piece is [*s, *s + *len), *p
 * moves past the separator. 0 when nothing is left. */
static inline int fz_next(const uint8_t **p, const uint8_t *end, uint8_t sep, const char **s,
                   size_t *len)
{
    if (*p >= end)
        return 0;
    const uint8_t *q = memchr(*p, sep, (size_t)(end - *p));
    const uint8_t *e = q ? q : end;
    *s = (const char *)*p;
    *len = (size_t)(e - *p);
    *p = q ? q + 1 : end;
    return 1;
}

/* A NUL-terminated copy of n bytes (new; dies out of memory). */
static inline char *fz_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        abort();
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
#endif
