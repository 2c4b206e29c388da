/* perr.c — names and generic texts of failure kinds (perr.h). */
#include "perr.h"

static const struct { const char *name, *text; } kinds[PERR_COUNT_] = {
    [PERR_OK]           = { "ok", "ok" },
    [PERR_BAD_INPUT]    = { "bad_input", "Invalid request" },
    [PERR_UNAUTHORIZED] = { "unauthorized", "Authentication required" },
    [PERR_FORBIDDEN]    = { "forbidden", "Forbidden" },
    [PERR_NOT_FOUND]    = { "not_found", "Not found" },
    [PERR_CONFLICT]     = { "conflict", "Conflict" },
    [PERR_GONE]         = { "gone", "Gone" },
    [PERR_TOO_LARGE]    = { "too_large", "Too large" },
    [PERR_RATE_LIMITED] = { "rate_limited", "Rate limit exceeded" },
    [PERR_UPSTREAM]     = { "upstream", "The AI upstream failed" },
    [PERR_DB]           = { "database", "Database error" },
    [PERR_DB_READONLY]  = { "database_readonly", "The database is read-only" },
    [PERR_DB_UNAVAILABLE] = { "database_unavailable", "The database is unavailable" },
    [PERR_UNAVAILABLE]  = { "unavailable", "Service unavailable" },
    [PERR_INTERNAL]     = { "internal", "Internal error" },
    [PERR_BUDGET_EXHAUSTED] = { "budget_exhausted", "Daily token budget exhausted" },
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
