/* llm.h — streaming from an LLM upstream over libcurl.
 *
 * Speaks Ollama (/api/generate and /api/chat, NDJSON) and OpenAI-compatible
 * servers (/v1/chat/completions with stream:true, SSE, data: [DONE]).
 * One call streams one answer in the calling thread (a private curl multi
 * loop) and enforces four timeouts: connect, time to first token, idle gap
 * between tokens, and total. Every failure ends the call with -1, a kind
 * and a specific message in result->err; no secret (API key) ever appears
 * in a message. Thread-safe: call llm_global_init() once per process first.
 *
 * Upstreams (docs/upstreams.md): a config may list several upstreams. A
 * request goes to the first eligible one (serving the model, breaker not
 * open, not inside its Retry-After) by order; a failure BEFORE the first
 * token (connect, first-token timeout, HTTP 429 or 5xx, a connection
 * closed before any token) is retried on the next eligible upstream after
 * a backoff, within max_attempts and the total timeout. Once a token went
 * to on_token a failure is reported, never retried. Each upstream has a
 * circuit breaker and counters kept per process (a registry in llm.c,
 * under a mutex: any thread).
 */
#ifndef PARLEY_LLM_H
#define PARLEY_LLM_H
#include <stddef.h>
#include <stdint.h>

enum llm_provider { LLM_OLLAMA = 0, LLM_OPENAI = 1 };

enum llm_err {
    LLM_OK = 0,
    LLM_ERR_CONFIG,         /* no/invalid upstream URL or model; a request with
                               no prompt/messages or text that is not UTF-8 */
    LLM_ERR_CONNECT,        /* refused, DNS, connect timeout */
    LLM_ERR_HTTP,           /* non-2xx status; message from its {"error":...} body */
    LLM_ERR_UPSTREAM,       /* an error object in the middle of the stream */
    LLM_ERR_MALFORMED,      /* a line that is not the wire format */
    LLM_ERR_TIMEOUT_FIRST,  /* no first token within first_token_timeout_ms */
    LLM_ERR_TIMEOUT_IDLE,   /* gap between tokens over idle_timeout_ms */
    LLM_ERR_TIMEOUT_TOTAL,  /* whole answer over total_timeout_ms */
    LLM_ERR_CUT,            /* connection closed before the final message */
    LLM_ERR_ABORTED,        /* a callback asked to stop */
    LLM_ERR_INTERNAL        /* out of memory, curl setup failure */
};

/* One upstream of a multi-upstream config. Strings are borrowed. */
struct llm_upstream {
    const char *name;         /* label in logs, /api/health, metrics (no secret);
                                 NULL or "": "upstream<i>" */
    enum llm_provider provider;
    const char *base_url;     /* as llm_config.base_url */
    const char *api_key;      /* OpenAI bearer key, may be NULL; never shown */
    const char *models;       /* comma list of the models it may serve;
                                 NULL, "" or "*": any model */
    int order;                /* lower is tried first; ties keep list order */
};

#define LLM_MAX_UPSTREAMS 16

struct llm_config {
    /* The single upstream, used when n_upstreams == 0 (its name is
     * "default", it serves any model). */
    enum llm_provider provider;
    const char *base_url;     /* Ollama: "http://h:11434" (trailing slash or not) or
                                 the full ".../api/generate" or ".../api/chat" URL:
                                 /api/chat is used for messages, /api/generate for
                                 a prompt. OpenAI: "http://h:8000/v1" (appends
                                 /chat/completions) or ".../v1/chat/completions". */
    const char *api_key;      /* OpenAI bearer key, may be NULL; never sent to Ollama */
    const char *model;        /* default model when the request names none */
    /* Limits in ms; <= 0: none (connect: libcurl's default). first_token counts
     * from the start of each attempt, idle from the latest token, total from
     * the call's start (all attempts and waits included). */
    int connect_timeout_ms;
    int first_token_timeout_ms;
    int idle_timeout_ms;
    int total_timeout_ms;
    /* Several upstreams (borrowed array, at most LLM_MAX_UPSTREAMS); when
     * n_upstreams > 0 provider/base_url/api_key above are not used. */
    const struct llm_upstream *upstreams;
    size_t n_upstreams;
    int max_attempts;         /* <= 0: one attempt per eligible upstream; else at
                                 most this many, cycling through them */
    int backoff_ms;           /* wait before retry k (k >= 1): backoff_ms << (k-1),
                                 at most 5000; <= 0: none. A Retry-After from the
                                 upstream tried next is waited for too */
    int breaker_failures;     /* consecutive failures that open a breaker; <= 0: 5 */
    int breaker_cooldown_ms;  /* open -> one probe after this; <= 0: 30000 */
};

struct llm_message { const char *role; const char *content; };

struct llm_request {
    /* Multi-turn: messages (Ollama /api/chat, OpenAI messages); a system
     * text is put first unless messages[0] is already a system message.
     * When n_messages == 0, prompt (+ optional system) is sent: Ollama
     * /api/generate, OpenAI as one user message (+ system message).
     * All strings are borrowed for the call and must be UTF-8. */
    const struct llm_message *messages;
    size_t n_messages;
    const char *prompt;
    const char *system;
    const char *model;        /* NULL: the config's model */
    double temperature;       /* < 0: not sent */
    int max_tokens;           /* <= 0: not sent */
};

struct llm_callbacks {
    /* Each piece of answer text as it arrives (len > 0, not NUL-terminated).
     * Return 0 to go on, non-zero to abort (LLM_ERR_ABORTED). */
    int (*on_token)(void *ud, const char *text, size_t len);
    /* Called at least every tick_ms while streaming (and after each read that
     * brought tokens) so the caller can flush buffers or renew a lease.
     * Non-zero aborts (LLM_ERR_ABORTED). May be NULL. Both run in the
     * calling thread. */
    int (*on_tick)(void *ud);
    int tick_ms;              /* <= 0: 50 */
    void *ud;
};

struct llm_result {
    enum llm_err kind;
    int http_status;          /* 0 when no response */
    int tokens;               /* upstream's count (eval_count / usage), else chunks */
    int prompt_tokens;        /* when the upstream tells, else 0 */
    char model[128];          /* model the upstream says answered (else the one asked) */
    int64_t first_token_ms;   /* from call start; -1 if none */
    int64_t total_ms;
    char err[512];            /* specific, human-readable, secret-free */
    char upstream[64];        /* name of the upstream of the last attempt ("" none) */
    char upstream_url[256];   /* its URL without credentials, query or fragment */
    int attempts;             /* upstream requests made (0: none was possible) */
};

/* Once per process, before threads: curl_global_init. */
int llm_global_init(void);

/* Streams one answer. 0 on success (final message seen: Ollama done:true,
 * OpenAI data: [DONE]), -1 on failure with result->kind and result->err set;
 * text already given to on_token is then a partial answer. result is always
 * fully written, also on failure (tokens so far, timings, status). cb may be
 * NULL. Blocks the calling thread for at most about total_timeout_ms. */
int llm_stream(const struct llm_config *cfg, const struct llm_request *req,
               const struct llm_callbacks *cb, struct llm_result *result);

/* ---- the same, without blocking: one stream driven by a caller's curl multi ----
 *
 * llm_stream() above is llm_stream_begin + a private multi loop +
 * llm_stream_finish. An event loop driving many answers on one thread
 * (core/genloop.c) uses the pieces:
 *   s = llm_stream_begin(cfg, req, cb, &res);     builds the request and parser
 *   e = llm_stream_easy(s);   NULL: it already failed (finish it); else add e
 *                             to the loop's multi (CURLOPT_PRIVATE is free)
 *   ... the multi reads: on_token runs inside curl_multi_socket_action /
 *       perform on the loop's thread; the notify function after each read;
 *   llm_stream_transfer_done(s, code)  when the multi reports CURLMSG_DONE;
 *   llm_stream_poll(s, now)   every so often: on_tick and the four timeouts;
 *   llm_stream_ended(s)       1 once it succeeded or failed: remove e from
 *                             the multi, then llm_stream_finish(s).
 * cfg, cb and result are borrowed until llm_stream_finish; req only during
 * llm_stream_begin. A stream is used by one thread at a time. */
struct llm_stream;
/* Starts one answer (no I/O yet). Returns a new stream, also when the
 * request is already known to fail (config errors: llm_stream_easy is then
 * NULL and llm_stream_ended 1); NULL only out of memory (result then says
 * so). result is reset here and fully written by llm_stream_finish. */
struct llm_stream *llm_stream_begin(const struct llm_config *cfg, const struct llm_request *req,
                                    const struct llm_callbacks *cb, struct llm_result *result);
/* The stream's CURL easy handle (borrowed) to add to a multi, or NULL when
 * it already failed. */
void *llm_stream_easy(struct llm_stream *s);
/* fn(ud) runs after each piece of the response body was processed (in the
 * thread driving the multi), so a loop can notice tokens and the end. */
void llm_stream_set_notify(struct llm_stream *s, void (*fn)(void *ud), void *ud);
/* The multi reported the transfer done with this CURLcode. */
void llm_stream_transfer_done(struct llm_stream *s, int curl_code);
/* Calls on_tick when due (tick_ms, or tokens arrived) and checks the
 * first-token, idle and total timeouts at now (mono_ms). 1 when the stream
 * has ended (success or failure), else 0. */
int llm_stream_poll(struct llm_stream *s, int64_t now);
/* Milliseconds until llm_stream_poll must run again (0..1000). */
int llm_stream_wait_ms(const struct llm_stream *s, int64_t now);
/* 1 once the final message was seen or the stream failed. */
int llm_stream_ended(const struct llm_stream *s);
/* Fails the stream now with LLM_ERR_ABORTED and message why (no-op when it
 * already ended). The caller then removes it from its multi and finishes. */
void llm_stream_abort(struct llm_stream *s, const char *why);
/* Ends the stream: writes the whole result, frees everything (the easy
 * handle too: remove it from any multi first). Returns 0 when the answer
 * was complete, -1 on failure (result->kind, result->err). s may be NULL
 * (returns -1: llm_stream_begin ran out of memory). */
int llm_stream_finish(struct llm_stream *s);

/* The same stream, told which multi drives its easy handle, so that a
 * failure before the first token can be retried: llm_stream_transfer_done
 * and llm_stream_poll then remove the handle from that multi and add it
 * again (the same CURL pointer, CURLOPT_PRIVATE kept) for the next attempt.
 * Without it a multi-driven stream makes one attempt only. Call before the
 * handle is added; multi is borrowed until llm_stream_finish. Caller's
 * thread (the one driving the multi). */
void llm_stream_set_multi(struct llm_stream *s, void *multi);

/* Short stable name of a kind ("connect", "http", ...), for logs/metrics. */
const char *llm_err_name(enum llm_err kind);

/* ---- upstream state, per process (health and metrics) ---- */

/* Error classes counted per upstream. */
enum llm_up_err {
    LLM_UPERR_CONNECT = 0,    /* refused, DNS, connect timeout */
    LLM_UPERR_TIMEOUT,        /* no first token in time */
    LLM_UPERR_HTTP_429,
    LLM_UPERR_HTTP_5XX,
    LLM_UPERR_HTTP_4XX,       /* other 4xx: the request is bad; not retried */
    LLM_UPERR_CUT,            /* closed before the final message */
    LLM_UPERR_OTHER,          /* malformed, an error in the stream, idle/total timeout */
    LLM_UPERR_N
};
/* "connect", "timeout", "http_429", "http_5xx", "http_4xx", "cut", "other". */
const char *llm_up_err_name(int kind);

struct llm_upstream_status {
    char name[64];
    char url[256];            /* no credentials, query or fragment */
    enum llm_provider provider;
    const char *breaker;      /* "closed" | "open" | "half-open" (static string) */
    int consecutive_failures;
    long long requests;       /* attempts sent to it */
    long long successes;      /* attempts that got a first token */
    long long errors[LLM_UPERR_N];
    int64_t last_first_token_ms;   /* of its latest success; -1 none */
    int64_t mean_first_token_ms;   /* over its successes; -1 none */
};

/* The state of each upstream cfg names (its single one, or each of
 * cfg->upstreams in list order), at most max, into out. An upstream no
 * request went to yet shows as closed with zero counts. Returns how many
 * were written. Any thread (the registry is under a mutex). */
size_t llm_upstreams_status(const struct llm_config *cfg, struct llm_upstream_status *out,
                            size_t max);
/* Prometheus text for the upstreams cfg names, as this process sees them:
 * <prefix>_upstream_breaker_state{upstream,url,state} (1 for the current
 * state, 0 for the two others), _upstream_consecutive_failures,
 * _upstream_requests_total, _upstream_successes_total,
 * _upstream_errors_total{...,kind}, _upstream_first_token_seconds{...,stat=
 * "last"|"mean"} (only once it answered). prefix: "parley" (FastCGI) or
 * "parley_ws" (the bridge), so that merged texts never repeat a family.
 * Returns a new string (the caller frees it) or NULL out of memory. Any thread. */
char *llm_upstreams_prom(const struct llm_config *cfg, const char *prefix);
/* Forgets every upstream's breaker and counters (tests). Any thread, but
 * only while no stream is between llm_stream_begin and llm_stream_finish
 * (a running stream points at its upstream's entry). */
void llm_upstreams_reset(void);
/* Writes base_url without userinfo, query or fragment ("scheme://host:port/path")
 * into out; "(invalid URL)" when it does not parse. Any thread. */
void llm_safe_url(const char *base_url, char *out, size_t outlen);
#endif
