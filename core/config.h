/* config.h — Parley's settings: defaults, then an optional file
 * (PARLEY_CONFIG, KEY=VALUE lines), then the process environment, then
 * (in parley.fcgi) FastCGI parameters such as .htaccess SetEnv values.
 * Each later source overrides the earlier ones key by key. An empty value
 * ("OLLAMA_SERVER=", as docker-compose and shell scripts pass an unset
 * variable) is never an error: from any source it means "not set", i.e.
 * the key's default (so an empty PARLEY_JWT_SECRET is open mode, as
 * before).
 *
 * Owns: the strings in struct parley_config (free with config_cleanup).
 * Threads: fill once at start, then read-only and shareable.
 * Errors name the key and the rule ("WEBSOCKET_TIMEOUT: must be an integer
 * between 1 and 86400, got 'abc'") and never echo a secret's value.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H
#include <stddef.h>
#include "llm.h"

struct parley_config {
    char *db_path;               /* PARLEY_DB (parley.db): a path, or a PostgreSQL
                                    connection string (secret: never shown) */
    char *node_prefix;           /* PARLEY_NODE_PREFIX: path prefix of this node's own
                                    files (<prefix>-ws.prom, -ws.up); NULL: PARLEY_DB,
                                    which must then be a path. Use config_node_prefix() */
    enum llm_provider provider;  /* PARLEY_PROVIDER: ollama | openai (ollama) */
    char *ollama_server;         /* OLLAMA_SERVER (http://127.0.0.1:11434) */
    char *openai_base_url;       /* OPENAI_BASE_URL (https://api.openai.com/v1) */
    char *openai_api_key;        /* OPENAI_API_KEY — secret */
    char *model;                 /* PARLEY_MODEL (llama3.2) */
    double temperature;          /* PARLEY_TEMPERATURE (0.7, 0..2) */
    char *jwt_secret;            /* PARLEY_JWT_SECRET — secret; NULL/empty: open mode */
    char *allowed_origins;       /* PARLEY_ALLOWED_ORIGINS, comma list; NULL: any */
    int jwt_require_exp;         /* PARLEY_JWT_REQUIRE_EXP (0): 1 = tokens without "exp" are
                                    refused (auth.h, AUTH_NO_EXP) */
    char *tenant_claim;          /* PARLEY_TENANT_CLAIM: the JWT claim naming the user's tenant;
                                    tickets are then per tenant (docs/tenants.md). NULL: one
                                    ticket space for everybody */
    char *admin_claim;           /* PARLEY_ADMIN_CLAIM: "name" or "name=value", the claim that
                                    may delete a ticket's answer (docs/tenants.md). NULL: any
                                    authenticated user may */
    int ws_max_connections;      /* WEBSOCKET_MAX_CONNECTIONS (100) */
    int ws_timeout_s;            /* WEBSOCKET_TIMEOUT (300) */
    int rate_limit_per_min;      /* RATE_LIMIT_MESSAGES_PER_MINUTE (30) */
    int token_budget_per_day;    /* PARLEY_TOKEN_BUDGET_PER_DAY (0 = no budget): prompt + completion
                                    tokens per user per UTC day (docs/usage.md) */
    char *anonymous;             /* PARLEY_ANONYMOUS: comma list of protocols that accept visitors
                                    without a token while a JWT secret is set (docs/anonymous.md);
                                    NULL: none */
    int max_message_length;      /* MAX_MESSAGE_LENGTH (5000) */
    int connect_timeout_ms;      /* PARLEY_CONNECT_TIMEOUT_MS (5000) */
    int first_token_timeout_ms;  /* PARLEY_FIRST_TOKEN_TIMEOUT_MS (60000) */
    int idle_timeout_ms;         /* PARLEY_IDLE_TIMEOUT_MS (30000) */
    int total_timeout_ms;        /* PARLEY_TOTAL_TIMEOUT_MS (300000) */
    int coalesce_ms;             /* PARLEY_COALESCE_MS (5; 0 = one event per token) */
    int lease_ms;                /* PARLEY_LEASE_MS (10000) */
    int poll_idle_s;             /* PARLEY_POLL_IDLE (60) */
    int poll_max_sessions;       /* PARLEY_POLL_MAX_SESSIONS (32): open long-poll sessions per user; 0 no cap */
    int event_grace_s;           /* PARLEY_EVENT_GRACE (300) */
    int context_messages;        /* PARLEY_CONTEXT_MESSAGES (10) */
    int chat_queue;              /* PARLEY_CHAT_QUEUE (5): seed 001 messages that may wait
                                    for an answer while one streams (0: refused, conflict) */
    char *openai_cache;          /* PARLEY_OPENAI_CACHE: off | deterministic | all — which
                                    /v1/chat/completions requests share a generation and may be
                                    answered from the cache (docs/openai.md); NULL: deterministic */
    int max_generations;         /* PARLEY_MAX_GENERATIONS (1024): streams one process runs at once */
    int kb_tickets;              /* PARLEY_KB_TICKETS (0): 1 = ticket answers grounded in the knowledge base */
    int kb_phoenix;              /* PARLEY_KB_PHOENIX (1): 1 = seed 003 queries grounded in the knowledge base */
    int kb_passages;             /* PARLEY_KB_PASSAGES (3): most knowledge-base passages in one prompt */
    int kb_context_bytes;        /* PARLEY_KB_CONTEXT_BYTES (4000): most bytes of passages in one prompt */
    /* seed 003 (Phoenix Channels, docs/protocol-phoenix.md) */
    char *phx_models;            /* PARLEY_PHOENIX_MODELS: comma list of models a query may name;
                                    NULL: only PARLEY_MODEL */
    double phx_temp_min;         /* PARLEY_PHOENIX_TEMP_MIN (0, 0..2) */
    double phx_temp_max;         /* PARLEY_PHOENIX_TEMP_MAX (2, 0..2) */
    int phx_max_topics;          /* PARLEY_PHOENIX_MAX_TOPICS (10): topics one socket may join */
    int phx_window_s;            /* PARLEY_PHOENIX_WINDOW (10): long-poll window, s; a session
                                    without a poll for 1.5 windows ends */
    /* several upstreams (docs/upstreams.md) */
    char *upstreams_spec;        /* PARLEY_UPSTREAMS: "name=a provider=ollama url=... [models=m1,m2]
                                    [key_env=VAR] [order=N]; name=b ..."; NULL: the single
                                    upstream of PARLEY_PROVIDER & co. */
    int upstream_attempts;       /* PARLEY_UPSTREAM_ATTEMPTS (0: one per eligible upstream) */
    int upstream_backoff_ms;     /* PARLEY_UPSTREAM_BACKOFF_MS (200) */
    int breaker_failures;        /* PARLEY_BREAKER_FAILURES (5) */
    int breaker_cooldown_ms;     /* PARLEY_BREAKER_COOLDOWN_MS (30000) */
    /* PARLEY_UPSTREAMS parsed (owned: up_buf holds every string but the
     * keys, which point into the environment) */
    struct llm_upstream up[LLM_MAX_UPSTREAMS];
    size_t n_up;
    char *up_buf;
};

/* Fills every field with its default (strings newly allocated). 0 / -1. */
int config_defaults(struct parley_config *cfg);
/* Sets one key from text, validating it; an empty or NULL value puts the
 * key back to its default. Unknown keys are an error unless they do not
 * look like Parley's (no PARLEY_ prefix and not a seed name), in which case
 * they are ignored and 1 is returned. 0 when set, -1 on error (cfg keeps
 * the old value; err names the key and the rule, never a secret). */
int config_set(struct parley_config *cfg, const char *key, const char *value,
               char *err, size_t errlen);
/* Reads KEY=VALUE lines ('#' comments, blank lines, optional quotes and
 * "export "). -1 with "path:line: message" on the first bad line. */
int config_load_file(struct parley_config *cfg, const char *path, char *err, size_t errlen);
/* Applies every known key present in the process environment (an empty
 * value: the default, see config_set). */
int config_load_env(struct parley_config *cfg, char *err, size_t errlen);
/* defaults + file named by PARLEY_CONFIG (if set) + environment. On failure
 * the struct is cleaned and left zeroed (config_cleanup stays safe). */
int config_load(struct parley_config *cfg, char *err, size_t errlen);
/* Checks what no single key can: PARLEY_NODE_PREFIX is required when
 * PARLEY_DB is a PostgreSQL connection string. config_load runs it; a
 * program that config_set()s more keys afterwards (parley.fcgi's FastCGI
 * parameters) runs it again. 0, or -1 with a message naming the setting
 * (never PARLEY_DB's value). */
int config_check(const struct parley_config *cfg, char *err, size_t errlen);
/* The path prefix of this node's own files (the bridge's <prefix>-ws.prom
 * and <prefix>-ws.up): PARLEY_NODE_PREFIX, else PARLEY_DB when it is a path.
 * NULL when PARLEY_DB is a PostgreSQL string and no prefix is set (which
 * config_check refuses). Borrowed from cfg. */
const char *config_node_prefix(const struct parley_config *cfg);
/* Frees the strings; safe after a partial init and on a zeroed struct. */
void config_cleanup(struct parley_config *cfg);
/* Fills an llm_config that borrows cfg's strings (and its upstream list
 * when PARLEY_UPSTREAMS is set). Any thread once cfg is loaded. */
void config_llm(const struct parley_config *cfg, struct llm_config *out);
/* 1 when no JWT secret is set (open development mode). */
int config_open_mode(const struct parley_config *cfg);
#endif
