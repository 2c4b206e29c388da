/* llm.h — streaming from an LLM upstream over libcurl.
 *
 * Speaks Ollama (/api/generate and /api/chat, NDJSON) and OpenAI-compatible
 * servers (/v1/chat/completions with stream:true, SSE, data: [DONE]).
 * One call streams one answer in the calling thread (a private curl multi
 * loop) and enforces four timeouts: connect, time to first token, idle gap
 * between tokens, and total. Every failure ends the call with -1, a kind
 * and a specific message in result->err; no secret (API key) ever appears
 * in a message. Thread-safe: call llm_global_init() once per process first.
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

struct llm_config {
    enum llm_provider provider;
    const char *base_url;     /* Ollama: "http://h:11434" (trailing slash or not) or
                                 the full ".../api/generate" or ".../api/chat" URL:
                                 /api/chat is used for messages, /api/generate for
                                 a prompt. OpenAI: "http://h:8000/v1" (appends
                                 /chat/completions) or ".../v1/chat/completions". */
    const char *api_key;      /* OpenAI bearer key, may be NULL; never sent to Ollama */
    const char *model;        /* default model when the request names none */
    /* Limits in ms; <= 0: none (connect: libcurl's default). first_token counts
     * from the call's start, idle from the latest token, total from the start. */
    int connect_timeout_ms;
    int first_token_timeout_ms;
    int idle_timeout_ms;
    int total_timeout_ms;
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

/* Short stable name of a kind ("connect", "http", ...), for logs/metrics. */
const char *llm_err_name(enum llm_err kind);
#endif
