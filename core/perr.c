/* perr.c — names, generic texts and client codes of failure kinds (perr.h). */
#include "perr.h"

#include <string.h>

static const struct { const char *name, *text, *code; } kinds[PERR_COUNT_] = {
    [PERR_OK]           = { "ok", "ok", "internal" },
    [PERR_BAD_INPUT]    = { "bad_input", "Invalid request", "bad_input" },
    [PERR_UNAUTHORIZED] = { "unauthorized", "Authentication required", "unauthorized" },
    [PERR_FORBIDDEN]    = { "forbidden", "Forbidden", "forbidden" },
    [PERR_NOT_FOUND]    = { "not_found", "Not found", "not_found" },
    [PERR_CONFLICT]     = { "conflict", "Conflict", "conflict" },
    [PERR_GONE]         = { "gone", "Gone", "gone" },
    [PERR_TOO_LARGE]    = { "too_large", "Too large", "too_large" },
    [PERR_RATE_LIMITED] = { "rate_limited", "Rate limit exceeded", "rate_limited" },
    [PERR_UPSTREAM]     = { "upstream", "The AI upstream failed", "upstream_error" },
    [PERR_DB]           = { "database", "Database error", "internal" },
    [PERR_DB_READONLY]  = { "database_readonly", "The database is read-only", "database_readonly" },
    [PERR_DB_UNAVAILABLE] = { "database_unavailable", "The database is unavailable", "database_unavailable" },
    [PERR_UNAVAILABLE]  = { "unavailable", "Service unavailable", "unavailable" },
    [PERR_INTERNAL]     = { "internal", "Internal error", "internal" },
    [PERR_BUDGET_EXHAUSTED] = { "budget_exhausted", "Daily token budget exhausted", "budget_exhausted" },
    [PERR_TOO_LONG]     = { "too_long", "Message too long", "too_long" },
    [PERR_QUEUE_FULL]   = { "queue_full", "Too many messages waiting for an answer", "queue_full" },
};

/* Every code perr_code and perr_gen_code can answer (docs/errors.md). */
static const char *const codes[] = {
    "bad_input", "unauthorized", "forbidden", "not_found", "conflict", "gone", "too_large",
    "too_long", "queue_full", "rate_limited", "budget_exhausted", "upstream_unavailable", "upstream_error",
    "interrupted", "database_readonly", "database_unavailable", "unavailable", "internal",
};

const char *perr_name(enum perr kind)
{
    if ((int)kind < 0 || kind >= PERR_COUNT_)
        kind = PERR_INTERNAL;
    return kinds[kind].name;
}

const char *perr_text(enum perr kind)
{
    if ((int)kind < 0 || kind >= PERR_COUNT_)
        kind = PERR_INTERNAL;
    return kinds[kind].text;
}

const char *perr_code(enum perr kind)
{
    if ((int)kind < 0 || kind >= PERR_COUNT_)
        kind = PERR_INTERNAL;
    return kinds[kind].code;
}

const char *perr_gen_code(const char *kind, int streamed)
{
    /* llm_err_name values (llm.h) that mean the upstream failed */
    static const char *const upstream[] = {
        "config", "connect", "http", "upstream", "malformed", "timeout_first",
        "timeout_idle", "timeout_total", "cut",
    };
    if (!kind)
        return "internal";
    if (!strcmp(kind, "interrupted"))
        return "interrupted";
    for (size_t i = 0; i < sizeof upstream / sizeof upstream[0]; i++)
        if (!strcmp(kind, upstream[i]))
            return streamed ? "upstream_error" : "upstream_unavailable";
    return "internal";        /* "internal", "aborted", unknown */
}

const char *perr_code_known(const char *code)
{
    for (size_t i = 0; code && i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(code, codes[i]))
            return codes[i];
    return NULL;
}
