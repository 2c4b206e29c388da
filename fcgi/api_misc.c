/* api_misc.c — GET /api/health and GET /brands/active.
 *
 * Health reports the database (a real query on this thread's connection)
 * and whether the LLM upstream answers: a GET of Ollama's /api/tags or an
 * OpenAI-compatible /models (with the bearer key, never shown), at most
 * HEALTH_PROBE_MS long and cached HEALTH_CACHE_MS per process so that
 * monitors polling every second do not hammer the upstream. The URL shown
 * has no user:password and no query. The probe cache is shared by every
 * worker thread of the process under health_lock.
 *
 * With several upstreams (PARLEY_UPSTREAMS, docs/upstreams.md) "upstream"
 * is the first by order, and "upstreams" lists each one as THIS process
 * sees it: breaker state, attempts, errors by kind, first-token latency
 * (llm_upstreams_status; every process keeps its own).
 */
#include "handlers.h"
#include "status.h"
#include "catalog.h"
#include "stats.h"
#include "util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* HEALTH_PROBE_MS: see handlers.h */
#define HEALTH_CACHE_MS 5000

/* The last probe; {health_lock}. */
static pthread_mutex_t health_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char url[512];          /* probed URL (may hold credentials: never shown) */
    int64_t at_ms;          /* mono_ms() of the probe; 0: none yet */
    int reachable;
    char error[200];
} health_probe;

/* The upstream /api/health probes: the single one, or the first by order. */
struct probe_target {
    enum llm_provider provider;
    const char *base;
    const char *key;
};

static struct probe_target health_target(const struct parley_config *cfg)
{
    struct probe_target t;
    t.provider = cfg->provider;
    t.base = cfg->provider == LLM_OPENAI ? cfg->openai_base_url : cfg->ollama_server;
    t.key = cfg->provider == LLM_OPENAI ? cfg->openai_api_key : NULL;
    size_t best = 0;
    for (size_t i = 1; i < cfg->n_up; i++)
        if (cfg->up[i].order < cfg->up[best].order)
            best = i;
    if (cfg->n_up > 0) {
        t.provider = cfg->up[best].provider;
        t.base = cfg->up[best].base_url;
        t.key = cfg->up[best].api_key;
    }
    return t;
}

/* The URL to probe for the upstream into out. */
static void health_probe_url(const struct probe_target *t, char *out, size_t len)
{
    const char *base = t->base;
    char b[480];
    str_copy(b, sizeof b, base ? base : "");
    size_t n = strcspn(b, "?#");
    b[n] = '\0';
    static const char *const tails[] = { "/api/generate", "/api/chat", "/chat/completions" };
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        size_t tl = strlen(tails[i]);
        if (n >= tl && strcmp(b + n - tl, tails[i]) == 0) {
            n -= tl;
            b[n] = '\0';
            break;
        }
    }
    while (n > 0 && b[n - 1] == '/')
        b[--n] = '\0';
    snprintf(out, len, "%s%s", b, t->provider == LLM_OPENAI ? "/models" : "/api/tags");
}

/* url without "user:password@" and without a query, for display. */
static void health_public_url(const char *url, char *out, size_t len)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *end = host + strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *p = host; p < end; p++)
        if (*p == '@')
            at = p;
    if (!at) {
        snprintf(out, len, "%.*s", (int)strcspn(url, "?#"), url);
        return;
    }
    snprintf(out, len, "%.*s%.*s", (int)(host - url), url, (int)strcspn(at + 1, "?#"), at + 1);
}

static size_t health_discard(char *data, size_t size, size_t nmemb, void *ud)
{
    (void)data;
    (void)ud;
    return size * nmemb;
}

/* One GET of url. 1 reachable (2xx), 0 not (error says why). */
static int health_probe_once(const struct parley_config *cfg, const struct probe_target *t,
                             const char *url, char *error, size_t errlen)
{
    CURL *c = curl_easy_init();
    if (!c) {
        str_copy(error, errlen, "could not initialise libcurl");
        return 0;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = NULL;
    char auth[600];
    if (t->provider == LLM_OPENAI && t->key && *t->key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", t->key);
        hdr = curl_slist_append(NULL, auth);
        memset(auth, 0, sizeof auth);
    }
    long connect_ms = cfg->connect_timeout_ms > 0 && cfg->connect_timeout_ms < HEALTH_PROBE_MS
                          ? cfg->connect_timeout_ms : HEALTH_PROBE_MS;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)HEALTH_PROBE_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, health_discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "parley-health/1");
    if (hdr)
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK) {
        /* curl's messages name host and port, never the key or userinfo */
        snprintf(error, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
        return 0;
    }
    if (code < 200 || code > 299) {
        snprintf(error, errlen, "HTTP status %ld", code);
        return 0;
    }
    error[0] = '\0';
    return 1;
}

/* Probes (or reuses a fresh probe of) the upstream. */
static int health_upstream(const struct parley_config *cfg, char *url, size_t urllen,
                           char *error, size_t errlen)
{
    struct probe_target t = health_target(cfg);
    health_probe_url(&t, url, urllen);
    pthread_mutex_lock(&health_lock);
    int64_t now = mono_ms();
    if (!health_probe.at_ms || now - health_probe.at_ms >= HEALTH_CACHE_MS ||
        strcmp(health_probe.url, url) != 0) {
        str_copy(health_probe.url, sizeof health_probe.url, url);
        health_probe.reachable = health_probe_once(cfg, &t, url, health_probe.error,
                                                   sizeof health_probe.error);
        health_probe.at_ms = mono_ms();
    }
    int ok = health_probe.reachable;
    str_copy(error, errlen, health_probe.error);
    pthread_mutex_unlock(&health_lock);
    return ok;
}

/* Each upstream as this process sees it (a new array; NULL out of memory). */
static json_t *health_upstreams(const struct parley_config *cfg)
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
        json_t *u = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:o*}",
                              "name", st[i].name,
                              "provider", st[i].provider == LLM_OPENAI ? "openai" : "ollama",
                              "url", st[i].url,
                              "breaker", st[i].breaker,
                              "consecutive_failures", st[i].consecutive_failures,
                              "requests", (json_int_t)st[i].requests,
                              "successes", (json_int_t)st[i].successes,
                              "errors", errs);
        if (u) {
            json_object_set_new(u, "first_token_ms_last", st[i].last_first_token_ms >= 0
                                ? json_integer(st[i].last_first_token_ms) : json_null());
            json_object_set_new(u, "first_token_ms_mean", st[i].mean_first_token_ms >= 0
                                ? json_integer(st[i].mean_first_token_ms) : json_null());
        }
        json_array_append_new(arr, u);
    }
    return arr;
}

int h_health(struct request *r)
{
    const struct parley_config *cfg = r->ctx->cfg;
    parley_db *db = r->ctx->db;
    /* The database: can this process read it, and write it (a read-only
     * spell is reported, not hidden behind "ok"). */
    enum db_health dbh = db_health(db);
    long long running = dbh == DB_HEALTH_UNAVAILABLE ? -1 : (long long)stats_jobs_running(db);
    if (running < 0)
        dbh = DB_HEALTH_UNAVAILABLE;
    char url[512], shown[512], error[200];
    int reachable = health_upstream(cfg, url, sizeof url, error, sizeof error);
    health_public_url(url, shown, sizeof shown);
    struct probe_target t = health_target(cfg);
    json_t *up = json_pack("{s:s, s:b, s:s}", "provider",
                           t.provider == LLM_OPENAI ? "openai" : "ollama",
                           "reachable", reachable, "url", shown);
    if (up && !reachable)
        json_object_set_new(up, "error", json_string(error));
    json_t *o = json_pack("{s:s, s:s, s:o*, s:s}",
                          "status", dbh == DB_HEALTH_OK && reachable ? "ok" : "degraded",
                          "database", db_health_name(dbh),
                          "upstream", up,
                          "auth", config_open_mode(cfg) ? "open" : "jwt");
    if (o && running >= 0)
        json_object_set_new(o, "jobs_running", json_integer(running));
    if (o)
        json_object_set_new(o, "upstreams", health_upstreams(cfg));
    return res_json(r, dbh == DB_HEALTH_OK ? 200 : 503, o);
}

int h_brands_active(struct request *r)
{
    json_t *brands = catalog_brands_active(r->ctx->db);
    if (!brands)
        return res_error_kind(r, PERR_DB, "Database error while listing brands");
    return res_json(r, 200, brands);
}
