/* llm.c — streams one answer from an LLM upstream over libcurl (see llm.h).
 *
 * Ollama speaks NDJSON (/api/generate, /api/chat), OpenAI-compatible servers
 * speak server-sent events (/v1/chat/completions, data: [DONE]). Each
 * llm_stream() call owns one easy handle driven by a private multi handle in
 * the calling thread, so it can enforce its own first-token, idle and total
 * timeouts and call on_tick while it waits. Nothing is shared between calls:
 * any thread may stream once llm_global_init() has run.
 *
 * The wire is parsed incrementally in the write callback: bytes become lines
 * (at most LINE_MAX_BYTES each), lines become NDJSON objects or SSE events,
 * and every non-empty piece of answer text goes to on_token as it arrives.
 */
#include "llm.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#define LINE_MAX_BYTES    (1024 * 1024)   /* one NDJSON line or SSE event */
#define ERRBODY_MAX_BYTES (64 * 1024)     /* body of a non-2xx response */
#define DEFAULT_TICK_MS   50
#define EXCERPT_BYTES     80              /* of a bad line, in messages */

/* "%d token%s" arguments: 1 token, 2 tokens. */
#define TOKENS(n) (n), (n) == 1 ? "" : "s"

/* A growable byte buffer, NUL-terminated when non-empty. */
struct buf {
    char *p;
    size_t len, cap;
};

/* Appends n bytes unless the result would exceed limit.
 * 0 on success, 1 over the limit (nothing appended), -1 out of memory. */
static int buf_add(struct buf *b, const char *s, size_t n, size_t limit)
{
    if (n > limit || b->len > limit - n)
        return 1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

struct ureg;
static void reg_first_token(struct ureg *r, int64_t ms);

/* The state of one llm_stream() call. Touched only by the calling thread
 * (the write callback runs inside curl_multi_perform in that thread). */
struct call {
    const struct llm_config *cfg;
    const struct llm_callbacks *cb;
    struct llm_result *res;
    CURL *easy;
    char where[300];          /* "host:port" of the upstream, for messages */
    char path[256];           /* request path, for messages */
    int64_t t0;               /* call start, mono_ms */
    int64_t ta;               /* start of the current attempt, mono_ms */
    struct ureg *reg;         /* the current upstream's registry entry, or NULL */
    int retry_after_ms;       /* the response's Retry-After, -1 none */
    int64_t last_token;       /* mono_ms of the latest token */
    int status;               /* HTTP status once the body starts, else 0 */
    int error_body;           /* non-2xx: the body is collected, not parsed */
    int at_eof;               /* the transfer ended cleanly; flushing leftovers */
    struct buf line;          /* the current, incomplete line */
    struct buf data;          /* SSE: data of the current event */
    int has_data;             /* SSE: the current event has a data field */
    char event[32];           /* SSE: event name of the current event */
    struct buf errbody;       /* non-2xx body, at most ERRBODY_MAX_BYTES */
    int pieces;               /* non-empty text pieces delivered */
    int up_tokens;            /* the upstream's own count, -1 if untold */
    int new_tokens;           /* tokens since the last on_tick */
    int final;                /* the final message was seen */
    int failed;               /* res->kind and res->err are set */
    void (*notify)(void *ud); /* after each read (llm_stream_set_notify) */
    void *notify_ud;
};

/* Records the first failure of the call; later ones are ignored. */
static void fail(struct call *c, enum llm_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct call *c, enum llm_err kind, const char *fmt, ...)
{
    if (c->failed)
        return;
    c->failed = 1;
    c->res->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->res->err, sizeof c->res->err, fmt, ap);
    va_end(ap);
}

/* Copies at most max bytes of s into out as printable text for a message:
 * control bytes become spaces, a cut never splits a UTF-8 sequence, and
 * "..." marks a cut. */
static void excerpt(char *out, size_t outlen, const char *s, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    if (n + 4 > outlen)
        n = outlen > 4 ? outlen - 4 : 0;
    if (n < len)
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;                  /* back off to the start of a sequence */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[o++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    if (n < len && o + 3 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Finds the human-readable message in an error value as the various
 * servers send it: "text", {"error": "text"}, {"error": {"message": ...}},
 * {"message": ...}, {"detail": ...}. Returns it (borrowed) or NULL. */
static const char *error_message(json_t *v)
{
    if (json_is_string(v))
        return json_string_length(v) ? json_string_value(v) : NULL;
    if (!json_is_object(v))
        return NULL;
    static const char *const keys[] = { "error", "message", "detail", "msg" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *m = error_message(json_object_get(v, keys[i]));
        if (m)
            return m;
    }
    return NULL;
}

/* Reports an error object received inside a 2xx stream. */
static void fail_upstream(struct call *c, json_t *errv)
{
    const char *m = error_message(errv);
    char *dump = NULL;
    if (!m)
        m = dump = json_dumps(errv, JSON_COMPACT | JSON_ENCODE_ANY);
    fail(c, LLM_ERR_UPSTREAM, "upstream error after %d token%s: %s", TOKENS(c->pieces),
         m ? m : "(no message)");
    free(dump);
}

static void fail_malformed(struct call *c, const char *what, const char *s, size_t len)
{
    if (c->at_eof) {
        /* Unparseable leftovers after the connection closed: the stream was
         * cut in the middle of a message rather than garbled. */
        fail(c, LLM_ERR_CUT, "the upstream closed the connection in the middle of a "
             "message, after %d token%s", TOKENS(c->pieces));
        return;
    }
    char ex[EXCERPT_BYTES + 8];
    excerpt(ex, sizeof ex, s, len, EXCERPT_BYTES);
    fail(c, LLM_ERR_MALFORMED, "upstream sent %s after %d token%s: \"%s\"", what, TOKENS(c->pieces), ex);
}

/* One piece of answer text: timing, counting, on_token. */
static void deliver(struct call *c, const char *text, size_t len)
{
    if (len == 0)
        return;
    int64_t now = mono_ms();
    if (c->res->first_token_ms < 0) {
        c->res->first_token_ms = now - c->t0;
        reg_first_token(c->reg, now - c->ta);
    }
    c->last_token = now;
    c->pieces++;
    c->new_tokens = 1;
    const struct llm_callbacks *cb = c->cb;
    if (cb && cb->on_token && cb->on_token(cb->ud, text, len) != 0)
        fail(c, LLM_ERR_ABORTED, "the answer was stopped by the caller after %d token%s",
             TOKENS(c->pieces));
}

static void note_model(struct call *c, json_t *obj)
{
    json_t *m = json_object_get(obj, "model");
    if (json_is_string(m) && json_string_length(m) > 0)
        str_copy(c->res->model, sizeof c->res->model, json_string_value(m));
}

/* Parses a JSON object of at most LINE_MAX_BYTES; NULL if it is not one. */
static json_t *parse_object(const char *s, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(s, len, JSON_ALLOW_NUL, &je);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ---- Ollama: one JSON object per line ---- */

static void ollama_line(struct call *c, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i == len)
        return;                   /* blank line: nothing to say */
    json_t *j = parse_object(s, len);
    if (!j) {
        fail_malformed(c, "a line that is not a JSON object", s, len);
        return;
    }
    json_t *e = json_object_get(j, "error");
    if (e && !json_is_null(e)) {
        fail_upstream(c, e);
        json_decref(j);
        return;
    }
    note_model(c, j);
    json_t *text = json_object_get(j, "response");                 /* /api/generate */
    if (!json_is_string(text))
        text = json_object_get(json_object_get(j, "message"), "content");  /* /api/chat */
    if (json_is_string(text))
        deliver(c, json_string_value(text), json_string_length(text));
    if (!c->failed && json_is_true(json_object_get(j, "done"))) {
        json_t *n = json_object_get(j, "eval_count");
        if (json_is_integer(n))
            c->up_tokens = (int)json_integer_value(n);
        n = json_object_get(j, "prompt_eval_count");
        if (json_is_integer(n))
            c->res->prompt_tokens = (int)json_integer_value(n);
        c->final = 1;
    }
    json_decref(j);
}

/* ---- OpenAI: server-sent events whose data are JSON chunks ---- */

static void sse_dispatch(struct call *c)
{
    if (!c->has_data) {
        c->event[0] = '\0';
        return;
    }
    const char *d = c->data.p ? c->data.p : "";
    size_t len = c->data.len;
    if (len == 6 && memcmp(d, "[DONE]", 6) == 0) {
        c->final = 1;
    } else {
        json_t *j = parse_object(d, len);
        if (!j) {
            fail_malformed(c, "an event whose data is not a JSON object", d, len);
        } else {
            json_t *e = json_object_get(j, "error");
            if (e && !json_is_null(e)) {
                fail_upstream(c, e);
            } else if (strcmp(c->event, "error") == 0) {
                fail_upstream(c, j);
            } else {
                note_model(c, j);
                json_t *u = json_object_get(j, "usage");
                if (json_is_object(u)) {
                    json_t *n = json_object_get(u, "completion_tokens");
                    if (json_is_integer(n))
                        c->up_tokens = (int)json_integer_value(n);
                    n = json_object_get(u, "prompt_tokens");
                    if (json_is_integer(n))
                        c->res->prompt_tokens = (int)json_integer_value(n);
                }
                json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
                json_t *text = json_object_get(json_object_get(ch, "delta"), "content");
                if (!json_is_string(text))
                    text = json_object_get(ch, "text");    /* legacy completions */
                if (json_is_string(text))
                    deliver(c, json_string_value(text), json_string_length(text));
            }
            json_decref(j);
        }
    }
    c->data.len = 0;
    c->has_data = 0;
    c->event[0] = '\0';
}

static void sse_line(struct call *c, const char *s, size_t len)
{
    if (len == 0) {
        sse_dispatch(c);
        return;
    }
    if (s[0] == ':')
        return;                   /* comment, keep-alive */
    const char *colon = memchr(s, ':', len);
    size_t flen = colon ? (size_t)(colon - s) : len;
    const char *v = colon ? colon + 1 : s + len;
    size_t vlen = (size_t)(s + len - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        int r = 0;
        if (c->has_data)
            r = buf_add(&c->data, "\n", 1, LINE_MAX_BYTES);
        if (r == 0)
            r = buf_add(&c->data, v, vlen, LINE_MAX_BYTES);
        if (r > 0)
            fail(c, LLM_ERR_MALFORMED, "upstream sent an event larger than %d bytes",
                 LINE_MAX_BYTES);
        else if (r < 0)
            fail(c, LLM_ERR_INTERNAL, "out of memory reading the upstream's stream");
        c->has_data = 1;
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        size_t n = vlen < sizeof c->event - 1 ? vlen : sizeof c->event - 1;
        memcpy(c->event, v, n);
        c->event[n] = '\0';
    } else if ((flen == 2 && memcmp(s, "id", 2) == 0) ||
               (flen == 5 && memcmp(s, "retry", 5) == 0)) {
        /* not used by a single answer */
    } else if (s[0] == '{') {
        /* A bare JSON object instead of an event: an error some servers
         * send without the data: prefix, or garbage. */
        json_t *j = parse_object(s, len);
        json_t *e = j ? json_object_get(j, "error") : NULL;
        if (e && !json_is_null(e))
            fail_upstream(c, e);
        else
            fail_malformed(c, "a line that is not server-sent events", s, len);
        json_decref(j);
    } else {
        fail_malformed(c, "a line that is not server-sent events", s, len);
    }
}

static void process_line(struct call *c, const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (c->cfg->provider == LLM_OPENAI)
        sse_line(c, s, len);
    else
        ollama_line(c, s, len);
}

/* libcurl write callback: collects an error body, or cuts the stream into
 * lines and parses each. Returns 0 (abort the transfer) once the call has
 * failed or a buffer would exceed its cap. */
static size_t write_body(struct call *c, char *ptr, size_t size, size_t nmemb);

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct call *c = ud;
    size_t r = write_body(c, ptr, size, nmemb);
    if (c->notify)
        c->notify(c->notify_ud);
    return r;
}

static size_t write_body(struct call *c, char *ptr, size_t size, size_t nmemb)
{
    size_t n = size * nmemb;
    if (c->failed)
        return 0;
    if (c->final)
        return n;                 /* trailing bytes after the final message */
    if (!c->status) {
        long code = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
        c->status = (int)code;
        c->error_body = code < 200 || code > 299;
    }
    if (c->error_body) {
        size_t room = ERRBODY_MAX_BYTES - c->errbody.len;
        int r = buf_add(&c->errbody, ptr, n < room ? n : room, ERRBODY_MAX_BYTES);
        if (r < 0)
            fail(c, LLM_ERR_INTERNAL, "out of memory reading the upstream's error");
        return (r == 0 && n <= room) ? n : 0;    /* enough read: stop */
    }
    const char *p = ptr, *end = ptr + n;
    while (p < end && !c->failed && !c->final) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = (size_t)((nl ? nl : end) - p);
        if (nl && c->line.len == 0 && chunk <= LINE_MAX_BYTES) {
            process_line(c, p, chunk);           /* whole line in this read */
        } else {
            int r = buf_add(&c->line, p, chunk, LINE_MAX_BYTES);
            if (r > 0)
                fail(c, LLM_ERR_MALFORMED, "upstream sent a line longer than %d bytes "
                     "after %d token%s", LINE_MAX_BYTES, TOKENS(c->pieces));
            else if (r < 0)
                fail(c, LLM_ERR_INTERNAL, "out of memory reading the upstream's stream");
            else if (nl) {
                process_line(c, c->line.p, c->line.len);
                c->line.len = 0;
            }
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    return c->failed ? 0 : n;
}

/* ---- the end of a transfer ---- */

static void http_error(struct call *c)
{
    const char *body = c->errbody.p ? c->errbody.p : "";
    size_t len = c->errbody.len;
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    const char *m = j ? error_message(j) : NULL;
    if (m) {
        fail(c, LLM_ERR_HTTP, "upstream returned HTTP %d: %s", c->status, m);
    } else {
        size_t i = 0;
        while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
            i++;
        while (len > i && (body[len - 1] == ' ' || body[len - 1] == '\t' ||
                           body[len - 1] == '\r' || body[len - 1] == '\n'))
            len--;
        if (i == len) {
            fail(c, LLM_ERR_HTTP, "upstream returned HTTP %d for %s with an empty body",
                 c->status, c->path);
        } else {
            char ex[200];
            excerpt(ex, sizeof ex, body + i, len - i, 160);
            fail(c, LLM_ERR_HTTP, "upstream returned HTTP %d for %s: %s", c->status, c->path, ex);
        }
    }
    json_decref(j);
}

/* Classifies the end of the transfer (curl's result code) into the call's
 * outcome, unless the write callback already decided it. */
static void transfer_done(struct call *c, CURLcode code, const char *curlerr)
{
    if (c->failed || c->final)
        return;
    if (!c->status) {
        long st = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &st);
        c->status = (int)st;
        if (st && (st < 200 || st > 299))
            c->error_body = 1;    /* an error with no body at all */
    }
    if (c->error_body) {
        http_error(c);
        return;
    }
    long oserr = 0;
    curl_off_t connected = 0;
    switch (code) {
    case CURLE_OK:
        /* Leftovers: a last line without its newline, an event without its
         * blank line. Whatever they hold counts; garbage counts as a cut. */
        c->at_eof = 1;
        if (c->line.len > 0) {
            process_line(c, c->line.p, c->line.len);
            c->line.len = 0;
        }
        if (!c->failed && !c->final && c->cfg->provider == LLM_OPENAI)
            sse_dispatch(c);
        if (!c->failed && !c->final)
            fail(c, LLM_ERR_CUT, "the upstream closed the connection before the final "
                 "message, after %d token%s", TOKENS(c->pieces));
        return;
    case CURLE_COULDNT_RESOLVE_HOST:
        fail(c, LLM_ERR_CONNECT, "cannot resolve the upstream host of %s", c->where);
        return;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(c->easy, CURLINFO_OS_ERRNO, &oserr);
        fail(c, LLM_ERR_CONNECT, "cannot connect to the upstream at %s: %s", c->where,
             oserr ? strerror((int)oserr) : "connection failed");
        return;
    case CURLE_OPERATION_TIMEDOUT:
        /* Only the connect timeout is given to curl; the rest are ours. */
        curl_easy_getinfo(c->easy, CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0) {
            fail(c, LLM_ERR_CONNECT, "could not connect to the upstream at %s within %d ms",
                 c->where, c->cfg->connect_timeout_ms);
            return;
        }
        break;
    case CURLE_GOT_NOTHING:
        fail(c, LLM_ERR_CUT, "the upstream at %s closed the connection without answering",
             c->where);
        return;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        if (c->status) {
            fail(c, LLM_ERR_CUT, "the upstream closed the connection before the final "
                 "message, after %d token%s", TOKENS(c->pieces));
            return;
        }
        break;
    case CURLE_OUT_OF_MEMORY:
        fail(c, LLM_ERR_INTERNAL, "out of memory talking to the upstream");
        return;
    default:
        break;
    }
    if (c->status)
        fail(c, LLM_ERR_CUT, "the stream from %s broke after %d token%s: %s", c->where,
             TOKENS(c->pieces), curlerr[0] ? curlerr : curl_easy_strerror(code));
    else
        fail(c, LLM_ERR_CONNECT, "request to the upstream at %s failed: %s", c->where,
             curlerr[0] ? curlerr : curl_easy_strerror(code));
}

/* Our own deadlines. Returns 1 when one has passed (and the call failed). */
static int check_timeouts(struct call *c, int64_t now)
{
    const struct llm_config *cfg = c->cfg;
    if (cfg->first_token_timeout_ms > 0 && c->res->first_token_ms < 0 && !c->error_body &&
        now - c->ta >= cfg->first_token_timeout_ms) {
        curl_off_t connected = 0;
        curl_easy_getinfo(c->easy, CURLINFO_CONNECT_TIME_T, &connected);
        fail(c, LLM_ERR_TIMEOUT_FIRST, "no first token from the upstream within %d ms%s",
             cfg->first_token_timeout_ms, connected ? "" : " (still connecting)");
        return 1;
    }
    if (cfg->idle_timeout_ms > 0 && c->res->first_token_ms >= 0 &&
        now - c->last_token >= cfg->idle_timeout_ms) {
        fail(c, LLM_ERR_TIMEOUT_IDLE, "no new token from the upstream within the idle "
             "limit of %d ms, after %d token%s", cfg->idle_timeout_ms, TOKENS(c->pieces));
        return 1;
    }
    if (cfg->total_timeout_ms > 0 && now - c->t0 >= cfg->total_timeout_ms) {
        fail(c, LLM_ERR_TIMEOUT_TOTAL, "the answer did not finish within the total limit "
             "of %d ms (%d token%s so far)", cfg->total_timeout_ms, TOKENS(c->pieces));
        return 1;
    }
    return 0;
}

/* Milliseconds until the nearest of our deadlines or the next tick. */
static int next_wait(const struct call *c, int64_t now, int64_t next_tick)
{
    const struct llm_config *cfg = c->cfg;
    int64_t at = next_tick;
    if (cfg->first_token_timeout_ms > 0 && c->res->first_token_ms < 0 && !c->error_body &&
        c->ta + cfg->first_token_timeout_ms < at)
        at = c->ta + cfg->first_token_timeout_ms;
    if (cfg->idle_timeout_ms > 0 && c->res->first_token_ms >= 0 &&
        c->last_token + cfg->idle_timeout_ms < at)
        at = c->last_token + cfg->idle_timeout_ms;
    if (cfg->total_timeout_ms > 0 && c->t0 + cfg->total_timeout_ms < at)
        at = c->t0 + cfg->total_timeout_ms;
    int64_t w = at - now;
    return w < 0 ? 0 : w > 1000 ? 1000 : (int)w;
}

/* ---- the request ---- */

static int ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* Sets u's path to the endpoint for this provider and request, from a base
 * URL or a full endpoint URL, and fills c->where and c->path. */
static int prepare_url(struct call *c, CURLU *u, int chat)
{
    const struct llm_config *cfg = c->cfg;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    int rc = -1;
    if (curl_url_set(u, CURLUPART_URL, cfg->base_url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        /* the URL itself is not repeated: it may hold credentials */
        fail(c, LLM_ERR_CONFIG, "the upstream URL is not a valid http:// or https:// URL");
        goto out;
    }
    snprintf(c->where, sizeof c->where, "%s:%s", host, port);
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        fail(c, LLM_ERR_INTERNAL, "cannot read the upstream URL's path");
        goto out;
    }
    size_t len = strlen(path);
    while (len > 0 && path[len - 1] == '/')
        len--;
    const char *tail;
    if (cfg->provider == LLM_OPENAI) {
        tail = ends_with(path, len, "/chat/completions") ? "" : "/chat/completions";
    } else {
        static const char *const full[] = { "/api/generate", "/api/chat", "/api" };
        for (size_t i = 0; i < sizeof full / sizeof full[0]; i++)
            if (ends_with(path, len, full[i])) {
                len -= strlen(full[i]);
                break;
            }
        while (len > 0 && path[len - 1] == '/')
            len--;
        tail = chat ? "/api/chat" : "/api/generate";
    }
    int n = snprintf(c->path, sizeof c->path, "%.*s%s", (int)len, path, tail);
    if (n < 0 || (size_t)n >= sizeof c->path) {
        fail(c, LLM_ERR_CONFIG, "the upstream URL's path is too long");
        goto out;
    }
    if (curl_url_set(u, CURLUPART_PATH, c->path, 0) != CURLUE_OK) {
        fail(c, LLM_ERR_CONFIG, "the upstream URL's path is not valid");
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    return rc;
}

/* Appends {"role", "content"}; -1 when a field is missing or not UTF-8. */
static int add_message(json_t *arr, const char *role, const char *content)
{
    if (!role || !content)
        return -1;
    json_t *r = json_string(role), *t = json_string(content);
    if (!r || !t) {
        json_decref(r);
        json_decref(t);
        return -1;
    }
    return json_array_append_new(arr, json_pack("{s:o, s:o}", "role", r, "content", t));
}

/* Builds the JSON request body (new reference), or NULL with the call failed. */
static json_t *build_body(struct call *c, const struct llm_request *req, const char *model,
                          enum llm_provider provider)
{
    int openai = provider == LLM_OPENAI;
    json_t *b = json_object();
    json_t *msgs = NULL;
    int bad = !b || json_object_set_new(b, "model", json_string(model)) != 0;
    if (!bad && (req->n_messages > 0 || openai)) {
        msgs = json_array();
        bad = !msgs;
        /* system first, unless the conversation brings its own */
        if (!bad && req->system && req->system[0] &&
            !(req->n_messages > 0 && req->messages[0].role &&
              strcmp(req->messages[0].role, "system") == 0))
            bad = add_message(msgs, "system", req->system) != 0;
        for (size_t i = 0; !bad && i < req->n_messages; i++)
            bad = add_message(msgs, req->messages[i].role, req->messages[i].content) != 0;
        if (!bad && req->n_messages == 0)
            bad = add_message(msgs, "user", req->prompt) != 0;
        if (!bad)
            bad = json_object_set(b, "messages", msgs) != 0;
    } else if (!bad) {
        bad = json_object_set_new(b, "prompt", json_string(req->prompt)) != 0;
        if (!bad && req->system && req->system[0])
            bad = json_object_set_new(b, "system", json_string(req->system)) != 0;
    }
    if (!bad)
        bad = json_object_set_new(b, "stream", json_true()) != 0;
    if (!bad && openai) {
        bad = json_object_set_new(b, "stream_options",
                                  json_pack("{s:b}", "include_usage", 1)) != 0;
        if (!bad && req->temperature >= 0)
            bad = json_object_set_new(b, "temperature", json_real(req->temperature)) != 0;
        if (!bad && req->max_tokens > 0)
            bad = json_object_set_new(b, "max_tokens", json_integer(req->max_tokens)) != 0;
    } else if (!bad && (req->temperature >= 0 || req->max_tokens > 0)) {
        json_t *o = json_object();
        bad = !o;
        if (!bad && req->temperature >= 0)
            bad = json_object_set_new(o, "temperature", json_real(req->temperature)) != 0;
        if (!bad && req->max_tokens > 0)
            bad = json_object_set_new(o, "num_predict", json_integer(req->max_tokens)) != 0;
        if (json_object_set_new(b, "options", o) != 0)
            bad = 1;
    }
    json_decref(msgs);
    if (bad) {
        json_decref(b);
        fail(c, LLM_ERR_CONFIG, "the request has a message without role or content, "
             "or text that is not valid UTF-8");
        return NULL;
    }
    return b;
}

/* Makes s valid UTF-8 in place, so that a message can go into JSON: a
 * sequence cut by truncation at the end is dropped, any other invalid byte
 * becomes '?'. */
static void utf8_clean(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        unsigned char b = *p;
        size_t n = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3
                 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        unsigned char lo = 0x80, hi = 0xBF;        /* allowed second byte */
        if (b == 0xE0) lo = 0xA0;                  /* no overlong forms */
        else if (b == 0xED) hi = 0x9F;             /* no surrogates */
        else if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F;             /* <= U+10FFFF */
        size_t i = 1;
        while (n > 1 && i < n && p[i] && p[i] >= (i == 1 ? lo : 0x80) &&
               p[i] <= (i == 1 ? hi : 0xBF))
            i++;
        if (n > 1 && i < n && !p[i]) {             /* cut short by the end */
            *p = '\0';
            return;
        }
        if (n == 0 || i < n) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

/* Replaces every occurrence of secret in s with "***" (in place). */
static void scrub(char *s, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    if (n < 4)
        return;                   /* too short to tell from ordinary text */
    char *p;
    while ((p = strstr(s, secret)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + n, strlen(p + n) + 1);
    }
}

/* ---- upstreams: the per-process registry (breakers, counters) ----
 *
 * One entry per distinct (name, base URL), created the first time a config
 * names it and kept for the life of the process. Every field is read and
 * written under reg_mu (the genloop thread, FastCGI worker threads and the
 * health/metrics handlers all come here). */

enum brk { BRK_CLOSED = 0, BRK_OPEN, BRK_HALF };
#define REG_MAX 256

struct ureg {
    char name[64];
    char base[512];           /* the configured base URL (may hold credentials: never shown) */
    char url[256];            /* shown */
    enum llm_provider provider;
    enum brk state;
    int fails;                /* consecutive breaker failures */
    int64_t opened_at;        /* mono_ms */
    int probing;              /* half-open: the probe is out */
    int64_t not_before;       /* Retry-After: not asked before this mono_ms */
    long long requests, successes, errors[LLM_UPERR_N];
    int64_t last_ft;          /* ms, -1 none */
    double ft_sum;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ureg *reg_tab[REG_MAX];
static int reg_n;

void llm_safe_url(const char *base_url, char *out, size_t outlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    if (u && base_url && curl_url_set(u, CURLUPART_URL, base_url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK) {
        snprintf(out, outlen, "%s://%s:%s%s", scheme, host, port,
                 strcmp(path, "/") == 0 ? "" : path);
    } else {
        snprintf(out, outlen, "(invalid URL)");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
}

/* The entry of (name, base), created when new. NULL when the table is
 * full or out of memory (the upstream then has no breaker). reg_mu NOT held. */
static struct ureg *reg_get(const char *name, const char *base, enum llm_provider provider)
{
    char url[256];
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < reg_n; i++)
        if (strcmp(reg_tab[i]->name, name) == 0 && strcmp(reg_tab[i]->base, base) == 0) {
            struct ureg *r = reg_tab[i];
            pthread_mutex_unlock(&reg_mu);
            return r;
        }
    pthread_mutex_unlock(&reg_mu);
    llm_safe_url(base, url, sizeof url);       /* curl work outside the lock */
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < reg_n; i++)             /* added meanwhile? */
        if (strcmp(reg_tab[i]->name, name) == 0 && strcmp(reg_tab[i]->base, base) == 0) {
            struct ureg *r = reg_tab[i];
            pthread_mutex_unlock(&reg_mu);
            return r;
        }
    struct ureg *r = NULL;
    if (reg_n < REG_MAX && (r = calloc(1, sizeof *r)) != NULL) {
        str_copy(r->name, sizeof r->name, name);
        str_copy(r->base, sizeof r->base, base);
        str_copy(r->url, sizeof r->url, url);
        r->provider = provider;
        r->last_ft = -1;
        reg_tab[reg_n++] = r;
    }
    pthread_mutex_unlock(&reg_mu);
    return r;
}

void llm_upstreams_reset(void)
{
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < reg_n; i++) {
        explicit_bzero(reg_tab[i]->base, sizeof reg_tab[i]->base);
        free(reg_tab[i]);
        reg_tab[i] = NULL;
    }
    reg_n = 0;
    pthread_mutex_unlock(&reg_mu);
}

/* A first token came from r after ms: the upstream works. */
static void reg_first_token(struct ureg *r, int64_t ms)
{
    if (!r)
        return;
    pthread_mutex_lock(&reg_mu);
    r->successes++;
    r->last_ft = ms;
    r->ft_sum += (double)ms;
    r->state = BRK_CLOSED;
    r->fails = 0;
    r->probing = 0;
    pthread_mutex_unlock(&reg_mu);
}

static int up_err_class(enum llm_err kind, int status)
{
    switch (kind) {
    case LLM_ERR_CONNECT:       return LLM_UPERR_CONNECT;
    case LLM_ERR_TIMEOUT_FIRST: return LLM_UPERR_TIMEOUT;
    case LLM_ERR_HTTP:
        return status == 429 ? LLM_UPERR_HTTP_429 : status >= 500 ? LLM_UPERR_HTTP_5XX
             : LLM_UPERR_HTTP_4XX;
    case LLM_ERR_CUT:           return LLM_UPERR_CUT;
    default:                    return LLM_UPERR_OTHER;
    }
}

/* An attempt on r ended in failure. breaker: the failure counts against
 * the upstream (it failed before the first token in a way that says the
 * upstream is unwell); retry_after_ms >= 0: its Retry-After. counted: 0 for
 * failures that are not the upstream's (the caller aborted). */
static void reg_failure(struct ureg *r, enum llm_err kind, int status, int breaker,
                        int retry_after_ms, int threshold, int64_t now)
{
    if (!r)
        return;
    pthread_mutex_lock(&reg_mu);
    if (kind != LLM_ERR_ABORTED && kind != LLM_ERR_INTERNAL && kind != LLM_ERR_CONFIG)
        r->errors[up_err_class(kind, status)]++;
    if (retry_after_ms >= 0 && now + retry_after_ms > r->not_before)
        r->not_before = now + retry_after_ms;
    if (breaker) {
        r->fails++;
        if (r->state == BRK_HALF || (r->state == BRK_CLOSED && r->fails >= threshold)) {
            r->state = BRK_OPEN;
            r->opened_at = now;
        }
        r->probing = 0;
    } else if (r->probing) {
        r->probing = 0;
        if (kind == LLM_ERR_HTTP)          /* it answered: it is alive */
            r->state = BRK_CLOSED, r->fails = 0;
    }
    pthread_mutex_unlock(&reg_mu);
}

static const char *brk_name(enum brk b)
{
    return b == BRK_OPEN ? "open" : b == BRK_HALF ? "half-open" : "closed";
}

const char *llm_up_err_name(int kind)
{
    static const char *const n[LLM_UPERR_N] = { "connect", "timeout", "http_429", "http_5xx",
                                                "http_4xx", "cut", "other" };
    return kind >= 0 && kind < LLM_UPERR_N ? n[kind] : "unknown";
}

/* ---- the upstreams of one config ---- */

/* The i-th upstream of cfg as a struct llm_upstream (the single one when
 * the config lists none). The name is written to name. */
static struct llm_upstream upstream_at(const struct llm_config *cfg, size_t i, char *name,
                                       size_t namelen)
{
    struct llm_upstream u;
    if (cfg->n_upstreams == 0) {
        memset(&u, 0, sizeof u);
        u.provider = cfg->provider;
        u.base_url = cfg->base_url;
        u.api_key = cfg->api_key;
        str_copy(name, namelen, "default");
    } else {
        u = cfg->upstreams[i];
        if (u.name && u.name[0])
            str_copy(name, namelen, u.name);
        else
            snprintf(name, namelen, "upstream%zu", i + 1);
    }
    u.name = name;
    return u;
}

static size_t upstream_count(const struct llm_config *cfg)
{
    size_t n = cfg->n_upstreams;
    return n == 0 ? 1 : n > LLM_MAX_UPSTREAMS ? LLM_MAX_UPSTREAMS : n;
}

size_t llm_upstreams_status(const struct llm_config *cfg, struct llm_upstream_status *out,
                            size_t max)
{
    size_t n = 0;
    if (!cfg)
        return 0;
    for (size_t i = 0; i < upstream_count(cfg) && n < max; i++) {
        char name[64];
        struct llm_upstream u = upstream_at(cfg, i, name, sizeof name);
        struct llm_upstream_status *o = &out[n++];
        memset(o, 0, sizeof *o);
        str_copy(o->name, sizeof o->name, name);
        o->provider = u.provider;
        o->breaker = "closed";
        o->last_first_token_ms = o->mean_first_token_ms = -1;
        struct ureg *r = reg_get(name, u.base_url ? u.base_url : "", u.provider);
        if (!r) {
            llm_safe_url(u.base_url, o->url, sizeof o->url);
            continue;
        }
        pthread_mutex_lock(&reg_mu);
        str_copy(o->url, sizeof o->url, r->url);
        o->breaker = brk_name(r->state);
        o->consecutive_failures = r->fails;
        o->requests = r->requests;
        o->successes = r->successes;
        memcpy(o->errors, r->errors, sizeof o->errors);
        o->last_first_token_ms = r->last_ft;
        if (r->successes > 0)
            o->mean_first_token_ms = (int64_t)(r->ft_sum / (double)r->successes + 0.5);
        pthread_mutex_unlock(&reg_mu);
    }
    return n;
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void prom_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f), fputc(*s, f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void prom_ids(FILE *f, const char *metric, const struct llm_upstream_status *u)
{
    fprintf(f, "%s{upstream=\"", metric);
    prom_label(f, u->name);
    fputs("\",url=\"", f);
    prom_label(f, u->url);
    fputc('"', f);
}

char *llm_upstreams_prom(const struct llm_config *cfg, const char *prefix)
{
    struct llm_upstream_status st[LLM_MAX_UPSTREAMS];
    size_t n = llm_upstreams_status(cfg, st, LLM_MAX_UPSTREAMS);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    char m[128];
    static const char *const states[] = { "closed", "open", "half-open" };
    snprintf(m, sizeof m, "%s_upstream_breaker_state", prefix);
    fprintf(f, "# HELP %s Circuit breaker of each upstream in this process (1: its state).\n"
               "# TYPE %s gauge\n", m, m);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            prom_ids(f, m, &st[i]);
            fprintf(f, ",state=\"%s\"} %d\n", states[k], strcmp(st[i].breaker, states[k]) == 0);
        }
    snprintf(m, sizeof m, "%s_upstream_consecutive_failures", prefix);
    fprintf(f, "# HELP %s Failures in a row of each upstream (this process).\n"
               "# TYPE %s gauge\n", m, m);
    for (size_t i = 0; i < n; i++) {
        prom_ids(f, m, &st[i]);
        fprintf(f, "} %d\n", st[i].consecutive_failures);
    }
    snprintf(m, sizeof m, "%s_upstream_requests_total", prefix);
    fprintf(f, "# HELP %s Requests (attempts) sent to each upstream by this process.\n"
               "# TYPE %s counter\n", m, m);
    for (size_t i = 0; i < n; i++) {
        prom_ids(f, m, &st[i]);
        fprintf(f, "} %lld\n", st[i].requests);
    }
    snprintf(m, sizeof m, "%s_upstream_successes_total", prefix);
    fprintf(f, "# HELP %s Attempts that got a first token.\n# TYPE %s counter\n", m, m);
    for (size_t i = 0; i < n; i++) {
        prom_ids(f, m, &st[i]);
        fprintf(f, "} %lld\n", st[i].successes);
    }
    snprintf(m, sizeof m, "%s_upstream_errors_total", prefix);
    fprintf(f, "# HELP %s Failed attempts by kind.\n# TYPE %s counter\n", m, m);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < LLM_UPERR_N; k++) {
            prom_ids(f, m, &st[i]);
            fprintf(f, ",kind=\"%s\"} %lld\n", llm_up_err_name(k), st[i].errors[k]);
        }
    snprintf(m, sizeof m, "%s_upstream_first_token_seconds", prefix);
    fprintf(f, "# HELP %s Time to first token of each upstream: the last and the mean.\n"
               "# TYPE %s gauge\n", m, m);
    for (size_t i = 0; i < n; i++) {
        if (st[i].last_first_token_ms < 0)
            continue;
        prom_ids(f, m, &st[i]);
        fprintf(f, ",stat=\"last\"} %.3f\n", (double)st[i].last_first_token_ms / 1000.0);
        prom_ids(f, m, &st[i]);
        fprintf(f, ",stat=\"mean\"} %.3f\n", (double)st[i].mean_first_token_ms / 1000.0);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* 1 when the comma list models names model (or is empty / "*"). Ollama's
 * "name" and "name:latest" are the same model. */
static int serves_model(const char *models, const char *model)
{
    if (!models || !models[0])
        return 1;
    size_t ml = strlen(model);
    int m_tagged = strchr(model, ':') != NULL;
    const char *p = models;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *st = p;
        while (*p && *p != ',')
            p++;
        const char *en = p;
        while (en > st && en[-1] == ' ')
            en--;
        size_t n = (size_t)(en - st);
        if (n == 0)
            continue;
        if (n == 1 && st[0] == '*')
            return 1;
        if (n == ml && memcmp(st, model, n) == 0)
            return 1;
        int i_tagged = memchr(st, ':', n) != NULL;
        if (!m_tagged && i_tagged && n == ml + 7 && memcmp(st, model, ml) == 0 &&
            memcmp(st + ml, ":latest", 7) == 0)
            return 1;
        if (m_tagged && !i_tagged && ml == n + 7 && memcmp(model, st, n) == 0 &&
            memcmp(model + n, ":latest", 7) == 0)
            return 1;
    }
    return 0;
}

/* One answer in progress (llm.h). The call's state plus what the request
 * owns until llm_stream_finish. */
struct cand {
    struct llm_upstream u;    /* name points at .name */
    char name[64];
    struct ureg *reg;
};

struct llm_stream {
    struct call c;
    const struct llm_config *user;   /* the caller's config (borrowed) */
    struct llm_config cur;           /* the current upstream's view; c.cfg points here */
    struct cand cand[LLM_MAX_UPSTREAMS];
    int ncand;
    int at;                   /* index of the current / next candidate */
    int next;                 /* where the next pick starts */
    int max_attempts;
    char *payload[2];         /* request body per provider (LLM_OLLAMA, LLM_OPENAI) */
    int chat;                 /* messages (Ollama /api/chat) rather than a prompt */
    CURLU *u;
    struct curl_slist *hdrs;
    char curlerr[CURL_ERROR_SIZE];
    int ready;                /* the easy handle is set up: a multi may drive it */
    int tick;                 /* ms between on_tick calls */
    int64_t last_tick;
    CURLM *multi;             /* llm_stream_set_multi: retries possible */
    int in_multi;             /* the easy handle is in multi (as far as we added it) */
    int64_t retry_at;         /* > 0: waiting to start the next attempt then */
    char tried[160];          /* names of the upstreams tried, for the final message */
};

int llm_global_init(void)
{
    json_object_seed(0);          /* jansson's hash seed, before any thread */
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

/* libcurl header callback: notes Retry-After (seconds or an HTTP date). */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct call *c = ud;
    size_t len = size * nmemb;
    if (len >= 5 && strncasecmp(p, "HTTP/", 5) == 0) {
        c->retry_after_ms = -1;           /* a new response (after a 1xx) */
        return len;
    }
    if (len > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        char v[128];
        size_t i = 12, n = 0;
        while (i < len && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (i < len && p[i] != '\r' && p[i] != '\n' && n + 1 < sizeof v)
            v[n++] = p[i++];
        v[n] = '\0';
        int digits = n > 0;
        for (size_t k = 0; k < n; k++)
            if (v[k] < '0' || v[k] > '9')
                digits = 0;
        if (digits) {
            long long sec = n > 6 ? 86400 : atoll(v);
            c->retry_after_ms = (int)(sec > 86400 ? 86400000 : sec * 1000);
        } else if (n > 0) {
            time_t t = curl_getdate(v, NULL);
            if (t != (time_t)-1) {
                long long d = ((long long)t - (long long)time(NULL)) * 1000;
                c->retry_after_ms = d < 0 ? 0 : d > 86400000 ? 86400000 : (int)d;
            }
        }
    }
    return len;
}

/* Chooses the candidate for the next attempt, from s->next on in rotation:
 * the first whose breaker is closed (or open past its cool-down: it becomes
 * the probe) and that is not inside its Retry-After. When none is, the
 * first in rotation anyway (a lone or all-failing set still gets asked),
 * with *wait_until its Retry-After end. Returns the index. */
static int pick(struct llm_stream *s, int64_t now, int64_t *wait_until)
{
    int cool = s->user->breaker_cooldown_ms > 0 ? s->user->breaker_cooldown_ms : 30000;
    *wait_until = 0;
    pthread_mutex_lock(&reg_mu);
    for (int k = 0; k < s->ncand; k++) {
        int i = (s->next + k) % s->ncand;
        struct ureg *r = s->cand[i].reg;
        if (!r) {
            pthread_mutex_unlock(&reg_mu);
            return i;
        }
        if (now < r->not_before)
            continue;
        if (r->state == BRK_CLOSED) {
            pthread_mutex_unlock(&reg_mu);
            return i;
        }
        if (!r->probing && now - r->opened_at >= cool) {
            r->state = BRK_HALF;              /* this request is the probe */
            r->probing = 1;
            pthread_mutex_unlock(&reg_mu);
            return i;
        }
    }
    int i = s->next % s->ncand;
    struct ureg *r = s->cand[i].reg;
    if (r && r->not_before > now)
        *wait_until = r->not_before;
    pthread_mutex_unlock(&reg_mu);
    return i;
}

/* Resets the per-attempt parse state of the call. */
static void reset_call(struct call *c)
{
    c->status = 0;
    c->error_body = 0;
    c->at_eof = 0;
    c->line.len = 0;
    c->data.len = 0;
    c->has_data = 0;
    c->event[0] = '\0';
    c->errbody.len = 0;
    c->up_tokens = -1;
    c->new_tokens = 0;
    c->final = 0;
    c->failed = 0;
    c->retry_after_ms = -1;
    c->where[0] = '\0';
    c->path[0] = '\0';
    c->res->kind = LLM_OK;
    c->res->err[0] = '\0';
    c->res->http_status = 0;
    c->res->prompt_tokens = 0;
}

/* Points the easy handle at candidate s->at: URL, headers, body. 0, or -1
 * with the call failed. */
static int setup_attempt(struct llm_stream *s, int64_t now)
{
    struct call *c = &s->c;
    struct cand *cd = &s->cand[s->at];
    reset_call(c);
    c->ta = now;
    c->reg = cd->reg;
    s->cur.provider = cd->u.provider;
    s->cur.base_url = cd->u.base_url;
    s->cur.api_key = cd->u.api_key;
    s->c.res->attempts++;
    str_copy(c->res->upstream, sizeof c->res->upstream, cd->name);
    if (cd->reg) {
        pthread_mutex_lock(&reg_mu);
        str_copy(c->res->upstream_url, sizeof c->res->upstream_url, cd->reg->url);
        cd->reg->requests++;
        pthread_mutex_unlock(&reg_mu);
    } else {
        llm_safe_url(cd->u.base_url, c->res->upstream_url, sizeof c->res->upstream_url);
    }
    size_t tl = strlen(s->tried);
    if (tl + strlen(cd->name) + 3 < sizeof s->tried)
        snprintf(s->tried + tl, sizeof s->tried - tl, "%s%s", tl ? ", " : "", cd->name);

    curl_url_cleanup(s->u);
    curl_slist_free_all(s->hdrs);
    s->hdrs = NULL;
    s->curlerr[0] = '\0';
    if (!(s->u = curl_url())) {
        fail(c, LLM_ERR_INTERNAL, "cannot set up libcurl (out of memory?)");
        return -1;
    }
    if (prepare_url(c, s->u, s->chat) < 0)
        return -1;
    const char *payload = s->payload[cd->u.provider == LLM_OPENAI];
    struct curl_slist *h;
    h = s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (h)
        h = s->hdrs = curl_slist_append(s->hdrs, cd->u.provider == LLM_OPENAI
                                        ? "Accept: text/event-stream"
                                        : "Accept: application/x-ndjson");
    if (h)
        h = s->hdrs = curl_slist_append(s->hdrs, "Expect:");     /* no 100-continue wait */
    if (h && cd->u.provider == LLM_OPENAI && cd->u.api_key && cd->u.api_key[0]) {
        size_t n = strlen(cd->u.api_key) + 32;
        char *auth = malloc(n);
        if (auth) {
            snprintf(auth, n, "Authorization: Bearer %s", cd->u.api_key);
            h = s->hdrs = curl_slist_append(s->hdrs, auth);
            explicit_bzero(auth, n);
            free(auth);
        } else {
            h = NULL;
        }
    }
    if (!h || !payload) {
        fail(c, LLM_ERR_INTERNAL, "cannot build the request (out of memory?)");
        return -1;
    }
    CURL *e = c->easy;
    CURLcode sc = CURLE_OK;
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_CURLU, s->u);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_POSTFIELDS, payload);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs);
    if (sc) {
        fail(c, LLM_ERR_INTERNAL, "cannot set up the libcurl transfer: %s",
             curl_easy_strerror(sc));
        return -1;
    }
    return 0;
}

/* Whether the call's failure may be retried on another upstream: nothing
 * reached the caller yet and the failure says the upstream (not the
 * request) is at fault. */
static int retriable(const struct call *c)
{
    if (c->pieces > 0 || c->res->first_token_ms >= 0)
        return 0;
    switch (c->res->kind) {
    case LLM_ERR_CONNECT:
    case LLM_ERR_TIMEOUT_FIRST:
    case LLM_ERR_CUT:
        return 1;
    case LLM_ERR_HTTP:
        return c->status == 429 || c->status >= 500;
    default:
        return 0;
    }
}

/* Starts the attempt the stream waits for: set up, into the multi. */
static void launch(struct llm_stream *s, int64_t now)
{
    s->retry_at = 0;
    if (setup_attempt(s, now) < 0)
        return;
    if (s->multi && !s->in_multi) {
        if (curl_multi_add_handle(s->multi, s->c.easy) != CURLM_OK) {
            fail(&s->c, LLM_ERR_INTERNAL, "cannot add the upstream request to the multi handle");
            return;
        }
        s->in_multi = 1;
    }
}

/* After an attempt failed: records it, and when it may be retried (and
 * there is a multi to drive it, attempts and time left), schedules the next
 * attempt instead of ending the stream. */
static void after_failure(struct llm_stream *s, int64_t now)
{
    struct call *c = &s->c;
    const struct llm_config *uc = s->user;
    int retry = retriable(c);
    int threshold = uc->breaker_failures > 0 ? uc->breaker_failures : 5;
    reg_failure(c->reg, c->res->kind, c->status, retry, c->retry_after_ms, threshold, now);
    if (!retry || !s->multi || c->res->attempts >= s->max_attempts)
        return;
    s->next = (s->at + 1) % s->ncand;
    int64_t wait_until;
    int i = pick(s, now, &wait_until);
    int k = c->res->attempts;                      /* retries so far + 1 */
    int64_t delay = 0;
    if (uc->backoff_ms > 0) {
        delay = (int64_t)uc->backoff_ms << (k - 1 < 10 ? k - 1 : 10);
        if (delay > 5000)
            delay = 5000;
    }
    int64_t at = now + delay;
    if (wait_until > at)
        at = wait_until;
    if (uc->total_timeout_ms > 0 && at >= c->t0 + uc->total_timeout_ms) {
        /* no time left for another attempt: the failure stands, but the
         * probe slot we may have taken must not stay taken */
        if (s->cand[i].reg) {
            pthread_mutex_lock(&reg_mu);
            if (s->cand[i].reg->state == BRK_HALF && s->cand[i].reg->probing)
                s->cand[i].reg->probing = 0;
            pthread_mutex_unlock(&reg_mu);
        }
        char more[200];
        snprintf(more, sizeof more, " (no time left for a retry within %d ms)",
                 uc->total_timeout_ms);
        size_t l = strlen(c->res->err);
        if (l + strlen(more) < sizeof c->res->err)
            memcpy(c->res->err + l, more, strlen(more) + 1);
        return;
    }
    if (s->in_multi) {
        curl_multi_remove_handle(s->multi, c->easy);
        s->in_multi = 0;
    }
    s->at = i;
    s->next = (i + 1) % s->ncand;
    c->failed = 0;                                 /* the stream goes on */
    s->retry_at = at > now ? at : now;
    if (at <= now)
        launch(s, now);
}

struct llm_stream *llm_stream_begin(const struct llm_config *cfg, const struct llm_request *req,
                                    const struct llm_callbacks *cb, struct llm_result *result)
{
    memset(result, 0, sizeof *result);
    result->kind = LLM_OK;
    result->first_token_ms = -1;
    struct llm_stream *s = calloc(1, sizeof *s);
    if (!s) {
        result->kind = LLM_ERR_INTERNAL;
        str_copy(result->err, sizeof result->err, "out of memory starting the upstream request");
        return NULL;
    }
    struct call *c = &s->c;
    s->user = cfg;
    if (cfg)
        s->cur = *cfg;
    c->cfg = &s->cur;
    c->cb = cb;
    c->res = result;
    c->t0 = c->ta = mono_ms();
    c->up_tokens = -1;
    c->retry_after_ms = -1;
    s->tick = cb && cb->tick_ms > 0 ? cb->tick_ms : DEFAULT_TICK_MS;
    s->last_tick = c->t0;

    const char *model = req && req->model && req->model[0] ? req->model
                        : cfg && cfg->model ? cfg->model : "";
    if (!cfg || !req) {
        fail(c, LLM_ERR_CONFIG, "no upstream configuration or request");
        return s;
    }
    if (!model[0]) {
        fail(c, LLM_ERR_CONFIG, "no model is configured for the upstream");
        return s;
    }
    if (req->n_messages == 0 && !req->prompt) {
        fail(c, LLM_ERR_CONFIG, "the request has neither a prompt nor messages");
        return s;
    }
    str_copy(result->model, sizeof result->model, model);

    /* the eligible upstreams, by order (stable) */
    for (size_t i = 0; i < upstream_count(cfg); i++) {
        struct cand cd;
        memset(&cd, 0, sizeof cd);
        cd.u = upstream_at(cfg, i, cd.name, sizeof cd.name);
        if (cfg->n_upstreams > 0 && !serves_model(cd.u.models, model))
            continue;
        if (!cd.u.base_url || !cd.u.base_url[0]) {
            fail(c, LLM_ERR_CONFIG, "no upstream URL is configured%s%s",
                 cfg->n_upstreams ? " for upstream " : "", cfg->n_upstreams ? cd.name : "");
            return s;
        }
        if (cd.u.provider != LLM_OLLAMA && cd.u.provider != LLM_OPENAI) {
            fail(c, LLM_ERR_CONFIG, "unknown upstream provider %d", (int)cd.u.provider);
            return s;
        }
        int j = s->ncand++;
        while (j > 0 && s->cand[j - 1].u.order > cd.u.order) {
            s->cand[j] = s->cand[j - 1];
            s->cand[j].u.name = s->cand[j].name;
            j--;
        }
        s->cand[j] = cd;
        s->cand[j].u.name = s->cand[j].name;
    }
    if (s->ncand == 0) {
        fail(c, LLM_ERR_CONFIG, "no configured upstream serves the model \"%.100s\"", model);
        return s;
    }
    for (int i = 0; i < s->ncand; i++)
        s->cand[i].reg = reg_get(s->cand[i].name, s->cand[i].u.base_url,
                                 s->cand[i].u.provider);
    s->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : s->ncand;

    /* the request body for each provider among the candidates */
    s->chat = req->n_messages > 0;
    for (int i = 0; i < s->ncand; i++) {
        int pv = s->cand[i].u.provider == LLM_OPENAI;
        if (s->payload[pv])
            continue;
        json_t *body = build_body(c, req, model, s->cand[i].u.provider);
        if (!body)
            return s;
        s->payload[pv] = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!s->payload[pv]) {
            fail(c, LLM_ERR_INTERNAL, "cannot encode the request (out of memory?)");
            return s;
        }
    }

    c->easy = curl_easy_init();
    if (!c->easy) {
        fail(c, LLM_ERR_INTERNAL, "cannot set up libcurl (out of memory?)");
        return s;
    }
    CURL *e = c->easy;
    CURLcode sc = CURLE_OK;
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_POST, 1L);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_USERAGENT, "parley");
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curlerr);
    if (!sc) sc = curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!sc && cfg->connect_timeout_ms > 0)
        sc = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout_ms);
    if (sc) {
        fail(c, LLM_ERR_INTERNAL, "cannot set up the libcurl transfer: %s",
             curl_easy_strerror(sc));
        return s;
    }
    int64_t wait_until;
    s->at = pick(s, c->t0, &wait_until);       /* a first attempt never waits */
    s->next = (s->at + 1) % s->ncand;
    if (setup_attempt(s, c->t0) < 0)
        return s;
    s->ready = 1;
    return s;
}

void *llm_stream_easy(struct llm_stream *s)
{
    return s && s->ready && !s->c.failed && !s->retry_at ? s->c.easy : NULL;
}

void llm_stream_set_notify(struct llm_stream *s, void (*fn)(void *ud), void *ud)
{
    s->c.notify = fn;
    s->c.notify_ud = ud;
}

void llm_stream_set_multi(struct llm_stream *s, void *multi)
{
    if (!s)
        return;
    s->multi = multi;
    s->in_multi = multi != NULL;   /* the caller adds the handle next */
}

void llm_stream_transfer_done(struct llm_stream *s, int code)
{
    if (s->retry_at)
        return;                           /* not ours: a stale message */
    transfer_done(&s->c, (CURLcode)code, s->curlerr);
    if (!s->c.failed && !s->c.final)     /* cannot happen: transfer_done decides */
        fail(&s->c, LLM_ERR_INTERNAL, "the transfer ended without a result");
    if (s->c.failed)
        after_failure(s, mono_ms());
}

int llm_stream_ended(const struct llm_stream *s)
{
    return s->c.failed || s->c.final;
}

int llm_stream_poll(struct llm_stream *s, int64_t now)
{
    struct call *c = &s->c;
    if (c->failed || c->final)
        return 1;
    if (c->new_tokens || now - s->last_tick >= s->tick) {
        c->new_tokens = 0;
        s->last_tick = now;
        const struct llm_callbacks *cb = c->cb;
        if (cb && cb->on_tick && cb->on_tick(cb->ud) != 0) {
            fail(c, LLM_ERR_ABORTED, "the answer was stopped by the caller after %d "
                 "token%s", TOKENS(c->pieces));
            return 1;
        }
        now = mono_ms();
    }
    if (s->retry_at) {
        const struct llm_config *uc = s->user;
        if (uc->total_timeout_ms > 0 && now - c->t0 >= uc->total_timeout_ms) {
            fail(c, LLM_ERR_TIMEOUT_TOTAL, "the answer did not finish within the total limit "
                 "of %d ms (waiting to retry)", uc->total_timeout_ms);
            return 1;
        }
        if (now >= s->retry_at)
            launch(s, now);
        return c->failed || c->final;
    }
    if (check_timeouts(c, now)) {
        after_failure(s, now);
        return c->failed || c->final;
    }
    return 0;
}

int llm_stream_wait_ms(const struct llm_stream *s, int64_t now)
{
    int w = next_wait(&s->c, now, s->last_tick + s->tick);
    if (s->retry_at) {
        int64_t r = s->retry_at - now;
        if (r < w)
            w = r < 0 ? 0 : (int)r;
    }
    return w;
}

void llm_stream_abort(struct llm_stream *s, const char *why)
{
    fail(&s->c, LLM_ERR_ABORTED, "%s", why && *why ? why : "the answer was stopped");
}

int llm_stream_finish(struct llm_stream *s)
{
    if (!s)
        return -1;
    struct call *c = &s->c;
    struct llm_result *result = c->res;
    if (c->easy && !c->status && !s->retry_at && s->ready) {
        long st = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &st);
        c->status = (int)st;
    }
    if (c->failed && result->attempts > 0 && c->reg && result->first_token_ms < 0 &&
        (c->res->kind == LLM_ERR_ABORTED || c->res->kind == LLM_ERR_TIMEOUT_TOTAL)) {
        /* ended by the caller or the total limit with no verdict on the
         * upstream: let another request probe it */
        pthread_mutex_lock(&reg_mu);
        c->reg->probing = 0;
        pthread_mutex_unlock(&reg_mu);
    }
    result->http_status = c->status;
    result->tokens = c->up_tokens >= 0 ? c->up_tokens : c->pieces;
    result->total_ms = mono_ms() - c->t0;
    if (c->failed && result->attempts > 1) {
        char more[256];
        snprintf(more, sizeof more, " (after %d attempts: %s)", result->attempts, s->tried);
        size_t l = strlen(result->err);
        if (l + strlen(more) < sizeof result->err)
            memcpy(result->err + l, more, strlen(more) + 1);
    }
    for (int i = 0; i < s->ncand; i++)
        scrub(result->err, s->cand[i].u.api_key);
    if (s->user)
        scrub(result->err, s->user->api_key);
    utf8_clean(result->err);
    utf8_clean(result->model);
    int rc = c->failed ? -1 : 0;
    if (s->in_multi && s->multi && c->easy)
        curl_multi_remove_handle(s->multi, c->easy);
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(s->hdrs);
    curl_url_cleanup(s->u);
    free(s->payload[0]);
    free(s->payload[1]);
    buf_free(&c->line);
    buf_free(&c->data);
    buf_free(&c->errbody);
    free(s);
    return rc;
}

int llm_stream(const struct llm_config *cfg, const struct llm_request *req,
               const struct llm_callbacks *cb, struct llm_result *result)
{
    struct llm_stream *s = llm_stream_begin(cfg, req, cb, result);
    if (!s)
        return -1;
    struct call *c = &s->c;
    CURLM *multi = NULL;
    if (!s->ready || c->failed)
        return llm_stream_finish(s);
    multi = curl_multi_init();
    if (!multi || curl_multi_add_handle(multi, c->easy) != CURLM_OK) {
        fail(c, LLM_ERR_INTERNAL, "cannot set up the libcurl transfer (out of memory?)");
        curl_multi_cleanup(multi);
        return llm_stream_finish(s);
    }
    s->multi = multi;
    s->in_multi = 1;
    for (;;) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc != CURLM_OK) {
            fail(c, LLM_ERR_INTERNAL, "libcurl failed: %s", curl_multi_strerror(mc));
            break;
        }
        CURLMsg *msg;
        int left, done = 0;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE) {
                done = 1;
                llm_stream_transfer_done(s, msg->data.result);
                break;            /* the handle may have been removed and re-added */
            }
        if (c->failed || c->final)
            break;
        if (!running && !done && s->in_multi && !s->retry_at) {
            /* cannot happen without a DONE message */
            fail(c, LLM_ERR_INTERNAL, "the transfer ended without a result");
            break;
        }
        int64_t now = mono_ms();
        if (llm_stream_poll(s, now))
            break;
        if (done)
            continue;             /* a new attempt: perform it at once */
        mc = curl_multi_poll(multi, NULL, 0, llm_stream_wait_ms(s, mono_ms()), NULL);
        if (mc != CURLM_OK) {
            fail(c, LLM_ERR_INTERNAL, "libcurl failed: %s", curl_multi_strerror(mc));
            break;
        }
    }
    if (s->in_multi)
        curl_multi_remove_handle(multi, c->easy);
    s->in_multi = 0;
    s->multi = NULL;
    curl_multi_cleanup(multi);
    return llm_stream_finish(s);
}

const char *llm_err_name(enum llm_err kind)
{
    switch (kind) {
    case LLM_OK:                return "ok";
    case LLM_ERR_CONFIG:        return "config";
    case LLM_ERR_CONNECT:       return "connect";
    case LLM_ERR_HTTP:          return "http";
    case LLM_ERR_UPSTREAM:      return "upstream";
    case LLM_ERR_MALFORMED:     return "malformed";
    case LLM_ERR_TIMEOUT_FIRST: return "timeout_first";
    case LLM_ERR_TIMEOUT_IDLE:  return "timeout_idle";
    case LLM_ERR_TIMEOUT_TOTAL: return "timeout_total";
    case LLM_ERR_CUT:           return "cut";
    case LLM_ERR_ABORTED:       return "aborted";
    case LLM_ERR_INTERNAL:      return "internal";
    }
    return "unknown";
}
