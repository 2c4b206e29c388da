/* config.c — Parley's settings: one table of keys with their rules, and the
 * three sources that feed it (KEY=VALUE file, environment, and whatever the
 * caller passes to config_set, e.g. FastCGI parameters). See config.h.
 *
 * Owns: the strings in struct parley_config. Runs once at process start in
 * any Parley program; no state of its own, so thread-safe on distinct structs.
 * Never puts a secret's value into an error message.
 */
#include "config.h"
#include "auth.h"             /* PARLEY_ADMIN_CLAIM: auth_admin_claim_valid */
#include "storage/pg/pg.h"     /* db_pg_is_conninfo */
#include "util.h"
#include "visitor.h"        /* PARLEY_ANONYMOUS: visitor_list_check */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum key_type {
    K_INT,        /* integer in [min, max] */
    K_DOUBLE,     /* real number in [min, max] */
    K_STRING,     /* non-empty text */
    K_URL,        /* http:// or https:// URL with a host */
    K_PROVIDER,   /* ollama | openai */
    K_ORIGINS,    /* "*" or a comma list of http(s) origins */
    K_SECRET,     /* any text; empty = unset; value never shown */
    K_UPSTREAMS   /* PARLEY_UPSTREAMS: parsed into cfg->up */
};

struct key_def {
    const char *name;
    enum key_type type;
    size_t off;              /* offsetof the field in struct parley_config */
    long long min, max;      /* K_INT and K_DOUBLE */
};

#define F(field) offsetof(struct parley_config, field)

/* Every key Parley reads. Keep docs/configuration.md in step. */
static const struct key_def keys[] = {
    { "PARLEY_DB",                      K_STRING,   F(db_path),                0, 0 },
    { "PARLEY_NODE_PREFIX",             K_STRING,   F(node_prefix),            0, 0 },
    { "PARLEY_PROVIDER",                K_PROVIDER, F(provider),               0, 0 },
    { "OLLAMA_SERVER",                  K_URL,      F(ollama_server),          0, 0 },
    { "OPENAI_BASE_URL",                K_URL,      F(openai_base_url),        0, 0 },
    { "OPENAI_API_KEY",                 K_SECRET,   F(openai_api_key),         0, 0 },
    { "PARLEY_MODEL",                   K_STRING,   F(model),                  0, 0 },
    { "PARLEY_TEMPERATURE",             K_DOUBLE,   F(temperature),            0, 2 },
    { "PARLEY_JWT_SECRET",              K_SECRET,   F(jwt_secret),             0, 0 },
    { "PARLEY_ALLOWED_ORIGINS",         K_ORIGINS,  F(allowed_origins),        0, 0 },
    { "PARLEY_JWT_REQUIRE_EXP",         K_INT,      F(jwt_require_exp),        0, 1 },
    { "PARLEY_TENANT_CLAIM",            K_STRING,   F(tenant_claim),           0, 0 },
    { "PARLEY_ADMIN_CLAIM",             K_STRING,   F(admin_claim),            0, 0 },
    { "WEBSOCKET_MAX_CONNECTIONS",      K_INT,      F(ws_max_connections),     1, 100000 },
    { "WEBSOCKET_TIMEOUT",              K_INT,      F(ws_timeout_s),           1, 86400 },
    { "RATE_LIMIT_MESSAGES_PER_MINUTE", K_INT,      F(rate_limit_per_min),     0, 100000 },
    { "PARLEY_TOKEN_BUDGET_PER_DAY",    K_INT,      F(token_budget_per_day),   0, 2000000000 },
    { "PARLEY_ANONYMOUS",               K_STRING,   F(anonymous),              0, 0 },
    { "MAX_MESSAGE_LENGTH",             K_INT,      F(max_message_length),     1, 10000000 },
    { "PARLEY_CONNECT_TIMEOUT_MS",      K_INT,      F(connect_timeout_ms),     1, 600000 },
    { "PARLEY_FIRST_TOKEN_TIMEOUT_MS",  K_INT,      F(first_token_timeout_ms), 1, 3600000 },
    { "PARLEY_IDLE_TIMEOUT_MS",         K_INT,      F(idle_timeout_ms),        1, 3600000 },
    { "PARLEY_TOTAL_TIMEOUT_MS",        K_INT,      F(total_timeout_ms),       1, 86400000 },
    { "PARLEY_COALESCE_MS",             K_INT,      F(coalesce_ms),            0, 1000 },
    { "PARLEY_LEASE_MS",                K_INT,      F(lease_ms),               100, 3600000 },
    { "PARLEY_POLL_IDLE",               K_INT,      F(poll_idle_s),            1, 86400 },
    { "PARLEY_POLL_MAX_SESSIONS",       K_INT,      F(poll_max_sessions),      0, 1000000 },
    { "PARLEY_EVENT_GRACE",             K_INT,      F(event_grace_s),          0, 604800 },
    { "PARLEY_CONTEXT_MESSAGES",        K_INT,      F(context_messages),       0, 1000 },
    { "PARLEY_CHAT_QUEUE",              K_INT,      F(chat_queue),             0, 100 },
    { "PARLEY_MAX_GENERATIONS",         K_INT,      F(max_generations),        1, 100000 },
    { "PARLEY_KB_TICKETS",              K_INT,      F(kb_tickets),             0, 1 },
    { "PARLEY_KB_PHOENIX",              K_INT,      F(kb_phoenix),             0, 1 },
    { "PARLEY_KB_PASSAGES",             K_INT,      F(kb_passages),            1, 50 },
    { "PARLEY_KB_CONTEXT_BYTES",        K_INT,      F(kb_context_bytes),       200, 1000000 },
    { "PARLEY_PHOENIX_MODELS",          K_STRING,   F(phx_models),             0, 0 },
    { "PARLEY_OPENAI_CACHE",            K_STRING,   F(openai_cache),           0, 0 },
    { "PARLEY_PHOENIX_TEMP_MIN",        K_DOUBLE,   F(phx_temp_min),           0, 2 },
    { "PARLEY_PHOENIX_TEMP_MAX",        K_DOUBLE,   F(phx_temp_max),           0, 2 },
    { "PARLEY_PHOENIX_MAX_TOPICS",      K_INT,      F(phx_max_topics),         1, 100 },
    { "PARLEY_PHOENIX_WINDOW",          K_INT,      F(phx_window_s),           1, 30 },
    { "PARLEY_UPSTREAMS",               K_UPSTREAMS, F(upstreams_spec),        0, 0 },
    { "PARLEY_UPSTREAM_ATTEMPTS",       K_INT,      F(upstream_attempts),      0, 20 },
    { "PARLEY_UPSTREAM_BACKOFF_MS",     K_INT,      F(upstream_backoff_ms),    0, 60000 },
    { "PARLEY_BREAKER_FAILURES",        K_INT,      F(breaker_failures),       1, 1000 },
    { "PARLEY_BREAKER_COOLDOWN_MS",     K_INT,      F(breaker_cooldown_ms),    100, 3600000 },
};
#define NKEYS (sizeof keys / sizeof keys[0])

/* Read only when the configuration is loaded, never a setting itself. */
static const char CONFIG_FILE_KEY[] = "PARLEY_CONFIG";

static const struct key_def *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static char **str_field(struct parley_config *cfg, const struct key_def *k)
{
    return (char **)(void *)((char *)cfg + k->off);
}

static int *int_field(struct parley_config *cfg, const struct key_def *k)
{
    return (int *)(void *)((char *)cfg + k->off);
}

/* Frees a string field, first wiping it when it may hold a secret. */
static void free_str(char **p, int wipe)
{
    if (*p && wipe)
        explicit_bzero(*p, strlen(*p));
    free(*p);
    *p = NULL;
}

/* Quotes a (non-secret) bad value for an error message: at most 60 bytes,
 * control characters and non-ASCII bytes as \xNN. */
static void show_value(char *out, size_t outlen, const char *v)
{
    size_t o = 0, n = 0;
    for (; v[n] && n < 60 && o + 5 < outlen; n++) {
        unsigned char c = (unsigned char)v[n];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    }
    if (v[n] && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Replaces *field with a copy of v (NULL stays NULL). Old value freed. */
static int set_str(char **field, const char *v, int wipe, const char *key,
                   char *err, size_t errlen)
{
    char *copy = NULL;
    if (v && !(copy = strdup(v)))
        return set_err(err, errlen, "%s: out of memory", key);
    free_str(field, wipe);
    *field = copy;
    return 0;
}

/* Strict decimal integer: optional sign, digits, nothing else (no blanks). */
static int parse_int(const char *v, long long *out)
{
    if (!(isdigit((unsigned char)v[0]) ||
          ((v[0] == '-' || v[0] == '+') && isdigit((unsigned char)v[1]))))
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return -1;
    *out = n;
    return 0;
}

static int parse_double(const char *v, double *out)
{
    if (!(isdigit((unsigned char)v[0]) || v[0] == '.' ||
          ((v[0] == '-' || v[0] == '+') && (isdigit((unsigned char)v[1]) || v[1] == '.'))))
        return -1;
    if (strpbrk(v, "xXpP"))
        return -1;                           /* no hexadecimal floats */
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno == ERANGE || *end != '\0' || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

static int has_ctl_or_space(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 1;
    return 0;
}

/* Length of the "http://" / "https://" prefix of s, or 0. */
static size_t http_scheme_len(const char *s)
{
    if (strncasecmp(s, "http://", 7) == 0)
        return 7;
    if (strncasecmp(s, "https://", 8) == 0)
        return 8;
    return 0;
}

/* One origin as browsers send it: scheme://host[:port], no path. */
static int valid_origin(const char *s, size_t len)
{
    if (len == 1 && s[0] == '*')
        return 1;
    char buf[512];
    if (len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    size_t sl = http_scheme_len(buf);
    return sl && buf[sl] && buf[sl] != ':' && !strchr(buf + sl, '/') && !has_ctl_or_space(buf);
}

static int set_origins(struct parley_config *cfg, const struct key_def *k, const char *v,
                       char *err, size_t errlen)
{
    const char *rule = "must be * or a comma-separated list of origins like "
                       "https://example.com (scheme://host[:port], no path)";
    char shown[256];
    /* Copy without blanks around the items: "a, b" is "a,b". */
    size_t n = strlen(v);
    char *norm = malloc(n + 1);
    if (!norm)
        return set_err(err, errlen, "%s: out of memory", k->name);
    size_t o = 0;
    int any = 0, items = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start) {
            if (*p == '\0' && items == 0)
                break;                       /* wholly empty: any origin */
            free(norm);
            show_value(shown, sizeof shown, v);
            return set_err(err, errlen, "%s: %s; got '%s' (empty item)", k->name, rule, shown);
        }
        if (!valid_origin(start, (size_t)(end - start))) {
            free(norm);
            show_value(shown, sizeof shown, v);
            return set_err(err, errlen, "%s: %s; got '%s'", k->name, rule, shown);
        }
        if (end - start == 1 && *start == '*')
            any = 1;
        if (items++)
            norm[o++] = ',';
        memcpy(norm + o, start, (size_t)(end - start));
        o += (size_t)(end - start);
        if (*p == '\0')
            break;
        p++;                                 /* skip the comma */
    }
    norm[o] = '\0';
    if (any || items == 0) {                 /* NULL means any origin */
        free(norm);
        norm = NULL;
    }
    char **field = str_field(cfg, k);
    free_str(field, 0);
    *field = norm;
    return 0;
}

/* PARLEY_UPSTREAMS: entries separated by ';', each whitespace-separated
 * key=value fields: name (required, unique, [A-Za-z0-9_.-], at most 63),
 * provider (ollama | openai, required), url (http:// or https://,
 * required), models (comma list, or *; default *), key_env (the name of an
 * environment variable holding the OpenAI key; it must be set), order
 * (0..1000, default the entry's position). Parsed into a new buffer; cfg
 * changes only when the whole value is valid. Messages never show a URL
 * (it may hold credentials) or a key. */
static int set_upstreams(struct parley_config *cfg, const struct key_def *k, const char *v,
                         char *err, size_t errlen)
{
    struct llm_upstream up[LLM_MAX_UPSTREAMS];
    size_t n = 0;
    memset(up, 0, sizeof up);
    char *buf = strdup(v);
    char *spec = strdup(v);
    if (!buf || !spec) {
        free(buf);
        free(spec);
        return set_err(err, errlen, "%s: out of memory", k->name);
    }
    const char *rule = "see docs/upstreams.md: \"name=a provider=ollama url=http://h:11434 "
                       "[models=m1,m2] [key_env=VAR] [order=N]; name=b ...\"";
    int rc = -1;
    char *save = NULL;
    for (char *ent = strtok_r(buf, ";", &save); ent; ent = strtok_r(NULL, ";", &save)) {
        char *p = ent;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            continue;                        /* "a; ;b" or a trailing ';' */
        if (n == LLM_MAX_UPSTREAMS) {
            set_err(err, errlen, "%s: at most %d upstreams", k->name, LLM_MAX_UPSTREAMS);
            goto out;
        }
        struct llm_upstream *u = &up[n];
        u->order = (int)n;
        u->provider = (enum llm_provider)-1;
        const char *key_env = NULL;
        char *fsave = NULL;
        for (char *f = strtok_r(p, " \t\r\n", &fsave); f; f = strtok_r(NULL, " \t\r\n", &fsave)) {
            char *eq = strchr(f, '=');
            char shown[128];
            if (!eq || eq == f || !eq[1]) {
                show_value(shown, sizeof shown, strncasecmp(f, "url", 3) == 0 ? "url=..." : f);
                set_err(err, errlen, "%s: upstream %zu: expected key=value, got '%s'; %s",
                        k->name, n + 1, shown, rule);
                goto out;
            }
            *eq = '\0';
            char *val = eq + 1;
            if (strcmp(f, "name") == 0) {
                size_t l = strlen(val);
                int ok = l > 0 && l < 64;
                for (size_t i = 0; ok && i < l; i++)
                    ok = isalnum((unsigned char)val[i]) || strchr("_.-", val[i]);
                if (!ok) {
                    show_value(shown, sizeof shown, val);
                    set_err(err, errlen, "%s: upstream %zu: name must be 1-63 letters, digits, "
                            "'_', '.' or '-', got '%s'", k->name, n + 1, shown);
                    goto out;
                }
                for (size_t j = 0; j < n; j++)
                    if (strcmp(up[j].name, val) == 0) {
                        set_err(err, errlen, "%s: two upstreams are named '%s'", k->name, val);
                        goto out;
                    }
                u->name = val;
            } else if (strcmp(f, "provider") == 0) {
                if (strcasecmp(val, "ollama") == 0)
                    u->provider = LLM_OLLAMA;
                else if (strcasecmp(val, "openai") == 0)
                    u->provider = LLM_OPENAI;
                else {
                    show_value(shown, sizeof shown, val);
                    set_err(err, errlen, "%s: upstream %zu: provider must be ollama or openai, "
                            "got '%s'", k->name, n + 1, shown);
                    goto out;
                }
            } else if (strcmp(f, "url") == 0) {
                size_t sl = http_scheme_len(val);
                if (!sl || !val[sl] || val[sl] == '/' || val[sl] == ':' || has_ctl_or_space(val)) {
                    set_err(err, errlen, "%s: upstream %zu: url must start with http:// or "
                            "https:// and name a host (value not shown)", k->name, n + 1);
                    goto out;
                }
                size_t l = strlen(val);
                while (l > sl + 1 && val[l - 1] == '/')
                    val[--l] = '\0';
                u->base_url = val;
            } else if (strcmp(f, "models") == 0) {
                u->models = val;
            } else if (strcmp(f, "key_env") == 0) {
                int ok = isalpha((unsigned char)val[0]) || val[0] == '_';
                for (const char *q = val; ok && *q; q++)
                    ok = isalnum((unsigned char)*q) || *q == '_';
                if (!ok || strlen(val) > 128) {
                    show_value(shown, sizeof shown, val);
                    set_err(err, errlen, "%s: upstream %zu: key_env must be the name of an "
                            "environment variable (letters, digits, '_'), got '%s'",
                            k->name, n + 1, shown);
                    goto out;
                }
                key_env = val;
            } else if (strcmp(f, "order") == 0) {
                long long o;
                if (parse_int(val, &o) < 0 || o < 0 || o > 1000) {
                    show_value(shown, sizeof shown, val);
                    set_err(err, errlen, "%s: upstream %zu: order must be an integer between 0 "
                            "and 1000, got '%s'", k->name, n + 1, shown);
                    goto out;
                }
                u->order = (int)o;
            } else {
                show_value(shown, sizeof shown, f);
                set_err(err, errlen, "%s: upstream %zu: unknown field '%s' (name, provider, "
                        "url, models, key_env, order)", k->name, n + 1, shown);
                goto out;
            }
        }
        const char *missing = !u->name ? "name" : (int)u->provider < 0 ? "provider"
                            : !u->base_url ? "url" : NULL;
        if (missing) {
            set_err(err, errlen, "%s: upstream %zu%s%s%s: %s is required; %s", k->name, n + 1,
                    u->name ? " ('" : "", u->name ? u->name : "", u->name ? "')" : "",
                    missing, rule);
            goto out;
        }
        if (key_env) {
            if (u->provider != LLM_OPENAI) {
                set_err(err, errlen, "%s: upstream '%s': key_env is for openai upstreams "
                        "(Ollama has no keys)", k->name, u->name);
                goto out;
            }
            const char *key = getenv(key_env);
            if (!key || !*key) {
                set_err(err, errlen, "%s: upstream '%s': key_env names %s, which is not set "
                        "in the environment", k->name, u->name, key_env);
                goto out;
            }
            for (const char *q = key; *q; q++)
                if ((unsigned char)*q < 0x20 || (unsigned char)*q == 0x7f) {
                    set_err(err, errlen, "%s: upstream '%s': the key in %s contains control "
                            "characters (value not shown)", k->name, u->name, key_env);
                    goto out;
                }
            u->api_key = key;
        }
        n++;
    }
    if (n == 0) {
        set_err(err, errlen, "%s: no upstream in the value; %s", k->name, rule);
        goto out;
    }
    free_str(&cfg->upstreams_spec, 0);
    free_str(&cfg->up_buf, 0);
    cfg->upstreams_spec = spec;
    cfg->up_buf = buf;
    memcpy(cfg->up, up, sizeof up);
    cfg->n_up = n;
    return 0;
out:
    free(buf);
    free(spec);
    return rc;
}

/* Puts key k of cfg back to its default (config_defaults' value). 0 / -1. */
static int reset_key(struct parley_config *cfg, const struct key_def *k, char *err, size_t errlen)
{
    struct parley_config d;
    if (config_defaults(&d) < 0)
        return set_err(err, errlen, "%s: out of memory", k->name);
    switch (k->type) {
    case K_INT:
        *int_field(cfg, k) = *int_field(&d, k);
        break;
    case K_DOUBLE:
        *(double *)(void *)((char *)cfg + k->off) = *(double *)(void *)((char *)&d + k->off);
        break;
    case K_PROVIDER:
        cfg->provider = d.provider;
        break;
    case K_UPSTREAMS:
        free_str(&cfg->upstreams_spec, 0);
        free_str(&cfg->up_buf, 0);
        memset(cfg->up, 0, sizeof cfg->up);
        cfg->n_up = 0;
        break;
    case K_STRING:
    case K_URL:
    case K_ORIGINS:
    case K_SECRET: {
        char **field = str_field(cfg, k), **dflt = str_field(&d, k);
        free_str(field, k->type == K_SECRET);
        *field = *dflt;                      /* moved: d no longer owns it */
        *dflt = NULL;
        break;
    }
    }
    config_cleanup(&d);
    return 0;
}

int config_set(struct parley_config *cfg, const char *key, const char *value,
               char *err, size_t errlen)
{
    char shown[256];
    if (!key || !*key)
        return set_err(err, errlen, "empty setting name");
    const struct key_def *k = find_key(key);
    if (!k) {
        if (strcmp(key, CONFIG_FILE_KEY) == 0)
            return 1;                        /* only meaningful to config_load */
        if (strncmp(key, "PARLEY_", 7) == 0) {
            show_value(shown, sizeof shown, key);
            return set_err(err, errlen, "%s: unknown setting (see docs/configuration.md)", shown);
        }
        return 1;                            /* someone else's variable */
    }
    /* "KEY=" (docker-compose and shell scripts pass unset variables that
     * way) means unset: the default, never an error. */
    if (!value || !*value)
        return reset_key(cfg, k, err, errlen);
    show_value(shown, sizeof shown, value);

    switch (k->type) {
    case K_INT: {
        long long n;
        if (parse_int(value, &n) < 0 || n < k->min || n > k->max)
            return set_err(err, errlen, "%s: must be an integer between %lld and %lld, got '%s'",
                           k->name, k->min, k->max, shown);
        *int_field(cfg, k) = (int)n;
        return 0;
    }
    case K_DOUBLE: {
        double d;
        if (parse_double(value, &d) < 0 || !(d >= (double)k->min && d <= (double)k->max))
            return set_err(err, errlen, "%s: must be a number between %lld and %lld, got '%s'",
                           k->name, k->min, k->max, shown);
        *(double *)(void *)((char *)cfg + k->off) = d;
        return 0;
    }
    case K_STRING:
        if (strchr(value, '\n') || strchr(value, '\r'))
            return set_err(err, errlen, "%s: must be one line, got '%s'", k->name, shown);
        return set_str(str_field(cfg, k), value, 0, k->name, err, errlen);
    case K_URL: {
        size_t sl = http_scheme_len(value);
        if (!sl || !value[sl] || value[sl] == '/' || value[sl] == ':' || has_ctl_or_space(value))
            return set_err(err, errlen,
                           "%s: must be a URL starting with http:// or https://, got '%s'",
                           k->name, shown);
        /* "http://h:11434/" and "http://h:11434" mean the same server. */
        size_t n = strlen(value);
        while (n > sl + 1 && value[n - 1] == '/')
            n--;
        char *copy = strndup(value, n);
        if (!copy)
            return set_err(err, errlen, "%s: out of memory", k->name);
        char **field = str_field(cfg, k);
        free_str(field, 0);
        *field = copy;
        return 0;
    }
    case K_PROVIDER:
        if (strcasecmp(value, "ollama") == 0)
            cfg->provider = LLM_OLLAMA;
        else if (strcasecmp(value, "openai") == 0)
            cfg->provider = LLM_OPENAI;
        else
            return set_err(err, errlen, "%s: must be ollama or openai, got '%s'", k->name, shown);
        return 0;
    case K_ORIGINS:
        return set_origins(cfg, k, value, err, errlen);
    case K_UPSTREAMS:
        return set_upstreams(cfg, k, value, err, errlen);
    case K_SECRET:
        /* The value is never shown, not even in part. A key with a line
         * break or control character would corrupt an HTTP header. */
        for (const char *p = value; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
                return set_err(err, errlen,
                               "%s: must not contain control characters or line breaks "
                               "(value not shown)", k->name);
        return set_str(str_field(cfg, k), value, 1, k->name, err, errlen);
    }
    return set_err(err, errlen, "%s: internal error (unknown type)", k->name);
}

int config_defaults(struct parley_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->provider = LLM_OLLAMA;
    cfg->temperature = 0.7;
    cfg->ws_max_connections = 100;
    cfg->ws_timeout_s = 300;
    cfg->rate_limit_per_min = 30;
    cfg->max_message_length = 5000;
    cfg->connect_timeout_ms = 5000;
    cfg->first_token_timeout_ms = 60000;
    cfg->idle_timeout_ms = 30000;
    cfg->total_timeout_ms = 300000;
    cfg->coalesce_ms = 5;
    cfg->lease_ms = 10000;
    cfg->poll_idle_s = 60;
    cfg->poll_max_sessions = 32;
    cfg->event_grace_s = 300;
    cfg->context_messages = 10;
    cfg->chat_queue = 5;
    cfg->max_generations = 1024;
    cfg->kb_tickets = 0;
    cfg->kb_phoenix = 1;
    cfg->kb_passages = 3;
    cfg->kb_context_bytes = 4000;
    cfg->phx_temp_min = 0;
    cfg->phx_temp_max = 2;
    cfg->phx_max_topics = 10;
    cfg->phx_window_s = 10;
    cfg->upstream_attempts = 0;
    cfg->upstream_backoff_ms = 200;
    cfg->breaker_failures = 5;
    cfg->breaker_cooldown_ms = 30000;
    cfg->db_path = strdup("parley.db");
    cfg->ollama_server = strdup("http://127.0.0.1:11434");
    cfg->openai_base_url = strdup("https://api.openai.com/v1");
    cfg->model = strdup("llama3.2");
    if (!cfg->db_path || !cfg->ollama_server || !cfg->openai_base_url || !cfg->model) {
        config_cleanup(cfg);
        return -1;
    }
    return 0;
}

void config_cleanup(struct parley_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        enum key_type t = keys[i].type;
        if (t == K_STRING || t == K_URL || t == K_ORIGINS || t == K_SECRET || t == K_UPSTREAMS)
            free_str(str_field(cfg, &keys[i]), t == K_SECRET);
    }
    free_str(&cfg->up_buf, 0);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- KEY=VALUE files ---------------------------------------------------- */

static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Parses one line in place. Returns 0 with *key == NULL for a blank or
 * comment line, 0 with key/value set, or -1 with a message in err. */
static int parse_line(char *line, char **key, char **value, char *err, size_t errlen)
{
    *key = *value = NULL;
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    char *p = line;
    while (is_blank(*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    if (strncmp(p, "export", 6) == 0 && is_blank(p[6])) {
        p += 6;
        while (is_blank(*p))
            p++;
    }
    char *k = p;
    if (!(isalpha((unsigned char)*p) || *p == '_'))
        return set_err(err, errlen, "expected KEY=VALUE");
    while (isalnum((unsigned char)*p) || *p == '_')
        p++;
    char *kend = p;
    while (is_blank(*p))
        p++;
    if (*p != '=')
        return set_err(err, errlen, "expected KEY=VALUE");
    *kend = '\0';
    p++;
    while (is_blank(*p))
        p++;

    char *v = p;
    if (*p == '"' || *p == '\'') {
        char q = *p;
        char *close = strchr(p + 1, q);
        if (!close)
            return set_err(err, errlen, "%s: unterminated %s quote", k,
                           q == '"' ? "double" : "single");
        char *after = close + 1;
        while (is_blank(*after))
            after++;
        if (*after && *after != '#')
            return set_err(err, errlen, "%s: unexpected text after the closing quote", k);
        v = p + 1;
        *close = '\0';
    } else {
        /* Unquoted: a '#' after a blank starts a comment; trailing blanks go. */
        char *e = p;
        while (*e && !(*e == '#' && e > p && is_blank(e[-1])))
            e++;
        while (e > p && is_blank(e[-1]))
            e--;
        *e = '\0';
    }
    *key = k;
    *value = v;
    return 0;
}

int config_load_file(struct parley_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    char msg[512];
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char *text = line;
        if (lineno == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0)
            text += 3;                       /* UTF-8 byte order mark */
        if (strlen(text) != (size_t)(len - (text - line))) {
            rc = set_err(err, errlen, "%s:%ld: NUL byte in line", path, lineno);
            break;
        }
        char *key, *value;
        if (parse_line(text, &key, &value, msg, sizeof msg) < 0 ||
            (key && config_set(cfg, key, value, msg, sizeof msg) < 0)) {
            rc = set_err(err, errlen, "%s:%ld: %s", path, lineno, msg);
            break;
        }
    }
    if (rc == 0 && ferror(f))
        rc = set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
    if (line) {
        explicit_bzero(line, cap);           /* the file may hold secrets */
        free(line);
    }
    fclose(f);
    return rc;
}

int config_load_env(struct parley_config *cfg, char *err, size_t errlen)
{
    char msg[512];
    for (size_t i = 0; i < NKEYS; i++) {
        const char *v = getenv(keys[i].name);
        if (v && config_set(cfg, keys[i].name, v, msg, sizeof msg) < 0)
            return set_err(err, errlen, "environment: %s", msg);
    }
    return 0;
}

int config_load(struct parley_config *cfg, char *err, size_t errlen)
{
    if (config_defaults(cfg) < 0)
        return set_err(err, errlen, "out of memory");
    const char *file = getenv(CONFIG_FILE_KEY);
    if (file && *file) {
        char msg[512];
        if (config_load_file(cfg, file, msg, sizeof msg) < 0) {
            set_err(err, errlen, "%s: %s", CONFIG_FILE_KEY, msg);
            goto error;
        }
    }
    if (config_load_env(cfg, err, errlen) < 0 || config_check(cfg, err, errlen) < 0)
        goto error;
    return 0;
error:
    config_cleanup(cfg);
    return -1;
}

int config_check(const struct parley_config *cfg, char *err, size_t errlen)
{
    if (visitor_list_check(cfg->anonymous, err, errlen) < 0)
        return -1;
    if (cfg->openai_cache && strcmp(cfg->openai_cache, "off") != 0 &&
        strcmp(cfg->openai_cache, "deterministic") != 0 && strcmp(cfg->openai_cache, "all") != 0)
        return set_err(err, errlen, "PARLEY_OPENAI_CACHE: must be off, deterministic or all, "
                       "got '%.40s'", cfg->openai_cache);
    if (cfg->tenant_claim && *cfg->tenant_claim) {
        char shown[80];
        /* a claim name: what PARLEY_ADMIN_CLAIM accepts before its '=' */
        if (strchr(cfg->tenant_claim, '=') || !auth_admin_claim_valid(cfg->tenant_claim)) {
            show_value(shown, sizeof shown, cfg->tenant_claim);
            return set_err(err, errlen, "PARLEY_TENANT_CLAIM: must be a JWT claim name (1-64 "
                           "letters, digits, '_', '-', ':' or '.'), got '%s'", shown);
        }
        if (config_open_mode(cfg))
            return set_err(err, errlen, "PARLEY_TENANT_CLAIM: needs PARLEY_JWT_SECRET (the "
                           "tenant comes from the token; open mode has no tokens)");
        if (visitor_allowed(cfg->anonymous, 0 /* PROTO_TICKET */))
            return set_err(err, errlen, "PARLEY_ANONYMOUS: ticket cannot be combined with "
                           "PARLEY_TENANT_CLAIM (an anonymous visitor has no tenant)");
    }
    if (cfg->admin_claim && *cfg->admin_claim) {
        char shown[80];
        if (!auth_admin_claim_valid(cfg->admin_claim)) {
            show_value(shown, sizeof shown, cfg->admin_claim);
            return set_err(err, errlen, "PARLEY_ADMIN_CLAIM: must be a claim name, or "
                           "name=value (e.g. role=helpdesk-admin), got '%s'", shown);
        }
        if (config_open_mode(cfg))
            return set_err(err, errlen, "PARLEY_ADMIN_CLAIM: needs PARLEY_JWT_SECRET (the "
                           "claim comes from the token; open mode has no tokens)");
    }
    if (db_pg_is_conninfo(cfg->db_path) && !(cfg->node_prefix && *cfg->node_prefix))
        return set_err(err, errlen,
                       "PARLEY_NODE_PREFIX: must be set when PARLEY_DB is a PostgreSQL "
                       "connection string: the path prefix of this node's own files "
                       "(e.g. /var/lib/parley/node gives /var/lib/parley/node-ws.prom "
                       "and -ws.up), in a directory this node can write");
    return 0;
}

const char *config_node_prefix(const struct parley_config *cfg)
{
    if (cfg->node_prefix && *cfg->node_prefix)
        return cfg->node_prefix;
    return db_pg_is_conninfo(cfg->db_path) ? NULL : cfg->db_path;
}

void config_llm(const struct parley_config *cfg, struct llm_config *out)
{
    memset(out, 0, sizeof *out);
    out->provider = cfg->provider;
    if (cfg->provider == LLM_OPENAI) {
        out->base_url = cfg->openai_base_url;
        out->api_key = cfg->openai_api_key;
    } else {
        out->base_url = cfg->ollama_server;
    }
    out->model = cfg->model;
    if (cfg->n_up > 0) {
        out->upstreams = cfg->up;
        out->n_upstreams = cfg->n_up;
    }
    out->max_attempts = cfg->upstream_attempts;
    out->backoff_ms = cfg->upstream_backoff_ms;
    out->breaker_failures = cfg->breaker_failures;
    out->breaker_cooldown_ms = cfg->breaker_cooldown_ms;
    out->connect_timeout_ms = cfg->connect_timeout_ms;
    out->first_token_timeout_ms = cfg->first_token_timeout_ms;
    out->idle_timeout_ms = cfg->idle_timeout_ms;
    out->total_timeout_ms = cfg->total_timeout_ms;
}

int config_open_mode(const struct parley_config *cfg)
{
    return !cfg->jwt_secret || !*cfg->jwt_secret;
}
