/* perr.h — what kind of failure happened, from core up to every front.
 *
 * Core functions that can fail for more than one reason report a kind
 * (enum perr) with their message; each front maps the kind to its own
 * answer in one table: parley.fcgi to an HTTP status (fcgi/status.c),
 * parley-ws to a WebSocket close code where it closes. Nothing above core
 * chooses a status by reading a message's text.
 * Threads: pure functions, no state.
 */
#ifndef PARLEY_PERR_H
#define PARLEY_PERR_H
#include <stddef.h>

enum perr {
    PERR_OK = 0,
    PERR_BAD_INPUT,      /* malformed or invalid request data (400) */
    PERR_UNAUTHORIZED,   /* no valid credentials (401) */
    PERR_FORBIDDEN,      /* credentials valid, access refused (403) */
    PERR_NOT_FOUND,      /* no such ticket / conversation / session (404) */
    PERR_CONFLICT,       /* the state forbids it: closed, busy, exists (409) */
    PERR_GONE,           /* existed, expired or closed for good (410) */
    PERR_TOO_LARGE,      /* a body, a frame or a batch over its limit (413) */
    PERR_RATE_LIMITED,   /* over a per-user or per-peer limit (429) */
    PERR_UPSTREAM,       /* the LLM upstream failed (502) */
    PERR_DB,             /* the database failed (500) */
    PERR_DB_READONLY,    /* the database cannot be written now (503) */
    PERR_DB_UNAVAILABLE, /* the database cannot be reached now (503) */
    PERR_UNAVAILABLE,    /* shutting down, overloaded, not configured (503) */
    PERR_INTERNAL,       /* out of memory, a bug (500) */
    PERR_BUDGET_EXHAUSTED, /* the user's daily token budget is spent (429, usage.h) */
    PERR_TOO_LONG,       /* a message's text over MAX_MESSAGE_LENGTH characters (400) */
    PERR_QUEUE_FULL,     /* seed 001: PARLEY_CHAT_QUEUE messages already wait for an answer (429) */
    PERR_COUNT_
};

/* Short stable name ("bad_input", "rate_limited", ...) for logs, metrics and
 * JSON "kind" members. Never NULL ("internal" for an unknown value). */
const char *perr_name(enum perr kind);
/* A generic sentence for the kind, for when no better message exists.
 * Never NULL; static storage. */
const char *perr_text(enum perr kind);

/* The stable machine-readable code every protocol's error frame carries
 * beside its message ("code"), documented in docs/errors.md — the one
 * table front ends read. perr_code: the code of a failure kind ("internal"
 * for PERR_OK or an unknown value). perr_gen_code: the code of a
 * generation's error event from its "kind" (runner.c / jobs.c write an
 * llm_err_name, "internal" or "interrupted") and whether answer text had
 * already streamed: an upstream failure before any text is
 * "upstream_unavailable", after text "upstream_error"; "interrupted" stays
 * itself; anything else (NULL too) is "internal". perr_code_known: the
 * static copy of code when it is one of the documented codes, else NULL
 * (for a code read back from stored data). All never-freed static strings;
 * pure functions, any thread. */
const char *perr_code(enum perr kind);
const char *perr_gen_code(const char *kind, int streamed);
const char *perr_code_known(const char *code);
#endif
