/* proto_openai.c — the OpenAI-compatible chat completions protocol
 * (PROTO_OPENAI, HTTP only like seed 004; contracts: proto_openai.h,
 * docs/openai.md). fcgi/api_openai.c is its transport.
 *
 *   client (the request body, once): {"model", "messages": [{"role",
 *     "content"}...], "stream", "stream_options": {"include_usage"},
 *     "temperature", "max_tokens" | "max_completion_tokens", "n"}
 *   server, stream: {"id": "chatcmpl-…", "object": "chat.completion.chunk",
 *     "created", "model", "system_fingerprint": null, "choices": [{"index":
 *     0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
 *     "finish_reason": null}]}, then one chunk per piece {"delta":
 *     {"content"}}, then {"delta": {}, "finish_reason": "stop" | "length"},
 *     then with include_usage a chunk with "choices": [] and "usage" (every
 *     chunk carries "usage": null before it).
 *   server, no stream: {"id", "object": "chat.completion", "created",
 *     "model", "choices": [{"index": 0, "message": {"role": "assistant",
 *     "content", "refusal": null}, "logprobs": null, "finish_reason"}],
 *     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}.
 *   errors: {"error": {"message", "type", "param", "code"}} (c->err set
 *     while nothing streamed; after a chunk went out, one error chunk of
 *     the same shape and proto_openai_failed).
 * Caching and single flight (PARLEY_OPENAI_CACHE): a request is shareable
 * when the mode is "all", or "deterministic" (the default) and it sets
 * temperature 0. A shareable request is keyed by the SHA-256 of its model,
 * messages, temperature and token limit: its answer may come from the
 * answers table, and identical requests while it runs share one generation
 * (channel "openai:<key>"). Any other request gets a generation of its own
 * (channel "openai:u:<uuid>"), never cached.
 * State (c->state): "id", "created", "model", "stream", "usage" (include
 * usage), "max_tokens", "cache", "follower", "role_sent", "failed",
 * "text" (no stream), "retry_after". Runs in the thread that drives the
 * connection (proto.h).
 */
#include "proto_impl.h"
#include "proto_openai.h"
#include "openai_store.h"
#include "ratelimit.h"
#include "stats.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_ERROR_MSG "Database error"
#define BAD_KEY_MSG "Incorrect API key provided. Use a Parley API key (parley keys create) " \
    "or a Parley JWT as the bearer token."
#define NO_KEY_MSG "You didn't provide an API key. You need to provide your API key in an " \
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."

enum oai_cache_mode proto_openai_cache_mode(const struct parley_config *cfg)
{
    const char *m = cfg ? cfg->openai_cache : NULL;
    if (m && !strcmp(m, "off"))
        return OAI_CACHE_OFF;
    if (m && !strcmp(m, "all"))
        return OAI_CACHE_ALL;
    return OAI_CACHE_DETERMINISTIC;
}

static const char *type_of(enum perr kind)
{
    switch (kind) {
    case PERR_RATE_LIMITED:
    case PERR_QUEUE_FULL:
        return "requests";
    case PERR_BUDGET_EXHAUSTED:
        return "insufficient_quota";
    case PERR_BAD_INPUT:
    case PERR_TOO_LONG:
    case PERR_UNAUTHORIZED:
    case PERR_FORBIDDEN:
    case PERR_NOT_FOUND:
    case PERR_CONFLICT:
    case PERR_GONE:
    case PERR_TOO_LARGE:
        return "invalid_request_error";
    default:
        return "server_error";
    }
}

/* OpenAI's error body. code NULL: null for a request the client must fix
 * (OpenAI's own habit; param names the field), Parley's code of kind
 * (docs/errors.md: database_readonly, internal, ...) for a server error. */
static json_t *error_json(enum perr kind, const char *msg, const char *code, const char *param)
{
    const char *type = type_of(kind);
    if (!code && !strcmp(type, "server_error"))
        code = perr_code(kind);
    json_t *e = json_pack("{s:s, s:s, s:o, s:o}", "message", msg && *msg ? msg : perr_text(kind),
                          "type", type, "param", param ? json_string(param) : json_null(),
                          "code", code ? json_string(code) : json_null());
    return e ? json_pack("{s:o}", "error", e) : NULL;
}

char *proto_openai_error_body(enum perr kind, const char *msg, const char *code)
{
    json_t *o = error_json(kind, msg, code, NULL);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* The refusal frame: records kind on c, pushes the error body. */
static int refuse(struct proto_conn *c, struct proto_frames *out, enum perr kind,
                  const char *msg, const char *code, const char *param)
{
    proto_fail(c, kind, msg);
    return frames_push(out, error_json(kind, msg, code, param));
}

int proto_openai_auth(struct parley_ctx *ctx, const char *authorization,
                      struct auth_claims *claims, char **body, enum perr *kind)
{
    memset(claims, 0, sizeof *claims);
    claims->token_budget = -1;
    *body = NULL;
    if (kind)
        *kind = PERR_OK;
    const char *tok = NULL;
    if (authorization && !strncasecmp(authorization, "Bearer ", 7)) {
        tok = authorization + 7;
        while (*tok == ' ')
            tok++;
        if (!*tok)
            tok = NULL;
    }
    int open = config_open_mode(ctx->cfg);
    if (tok && !strncmp(tok, OAI_KEY_TAG, strlen(OAI_KEY_TAG))) {
        int r = apikey_lookup(ctx->db, tok, claims->sub, sizeof claims->sub);
        if (r == 0)
            return 0;
        if (r < 0) {
            enum perr k = db_err_kind(ctx->db);
            if (kind)
                *kind = k;
            *body = proto_openai_error_body(k, db_err_text(ctx->db, DB_ERROR_MSG), NULL);
            return -1;
        }
        *body = proto_openai_error_body(PERR_UNAUTHORIZED, BAD_KEY_MSG, "invalid_api_key");
        if (kind)
            *kind = PERR_UNAUTHORIZED;
        return 1;
    }
    if (open)
        return 0;                         /* open mode: user "" */
    if (tok && auth_verify_config(ctx->cfg, tok, 0, claims) == AUTH_OK)
        return 0;
    memset(claims, 0, sizeof *claims);
    claims->token_budget = -1;
    *body = proto_openai_error_body(PERR_UNAUTHORIZED, tok ? BAD_KEY_MSG : NO_KEY_MSG,
                                    "invalid_api_key");
    if (kind)
        *kind = PERR_UNAUTHORIZED;
    return 1;
}

/* Calls fn for every configured model, PARLEY_MODEL first, each once. */
static int each_model(const struct parley_config *cfg, int (*fn)(void *ud, const char *m,
                                                                  size_t n), void *ud)
{
    if (cfg->model && *cfg->model && fn(ud, cfg->model, strlen(cfg->model)))
        return 1;
    for (size_t i = 0; i < cfg->n_up; i++) {
        const char *p = cfg->up[i].models;
        while (p && *p) {
            size_t n = strcspn(p, ",");
            const char *s = p;
            size_t k = n;
            while (k && (*s == ' ' || *s == '\t'))
                s++, k--;
            while (k && (s[k - 1] == ' ' || s[k - 1] == '\t'))
                k--;
            if (k && !(k == 1 && *s == '*') && fn(ud, s, k))
                return 1;
            p += n;
            if (*p == ',')
                p++;
        }
    }
    return 0;
}

static int add_model(void *ud, const char *m, size_t n)
{
    json_t *arr = ud;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *id = json_string_value(json_object_get(v, "id"));
        if (id && strlen(id) == n && !memcmp(id, m, n))
            return 0;
    }
    json_t *o = json_pack("{s:s%, s:s, s:i, s:s}", "id", m, n, "object", "model", "created",
                          0, "owned_by", "parley");
    return !o || json_array_append_new(arr, o) < 0;
}

json_t *proto_openai_models(const struct parley_config *cfg)
{
    json_t *arr = json_array();
    if (!arr || each_model(cfg, add_model, arr)) {
        json_decref(arr);
        return NULL;
    }
    return json_pack("{s:s, s:o}", "object", "list", "data", arr);
}

struct find { const char *want; int found; };
static int find_model(void *ud, const char *m, size_t n)
{
    struct find *f = ud;
    if (strlen(f->want) == n && !memcmp(f->want, m, n))
        f->found = 1;
    return f->found;
}

int proto_openai_model_known(const struct parley_config *cfg, const char *model)
{
    struct find f = { model, 0 };
    if (model && *model)
        each_model(cfg, find_model, &f);
    return f.found;
}

/* ---- chunks ---- */

static json_t *base_object(const struct proto_conn *c, const char *object)
{
    return json_pack("{s:O, s:s, s:O, s:O, s:n}", "id", json_object_get(c->state, "id"),
                     "object", object, "created", json_object_get(c->state, "created"),
                     "model", json_object_get(c->state, "model"), "system_fingerprint");
}

/* A chunk with one choice (delta stolen; finish NULL: null). */
static json_t *chunk(const struct proto_conn *c, json_t *delta, const char *finish)
{
    json_t *o = base_object(c, "chat.completion.chunk");
    json_t *ch = json_pack("[{s:i, s:o, s:n, s:o}]", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", finish ? json_string(finish) : json_null());
    if (!o || !ch) {
        json_decref(o);
        json_decref(ch);
        return NULL;
    }
    json_object_set_new(o, "choices", ch);
    if (json_is_true(json_object_get(c->state, "usage")))
        json_object_set_new(o, "usage", json_null());
    return o;
}

static json_t *usage_json(json_int_t prompt, json_int_t completion)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", prompt, "completion_tokens", completion,
                     "total_tokens", prompt + completion);
}

static int push_role(struct proto_conn *c, struct proto_frames *out)
{
    if (json_is_true(json_object_get(c->state, "role_sent")))
        return 0;
    json_object_set_new(c->state, "role_sent", json_true());
    return frames_push(out, chunk(c, json_pack("{s:s, s:s}", "role", "assistant", "content", ""),
                                  NULL));
}

/* The end of an answer: text (no stream), finish reason and usage. */
static int push_end(struct proto_conn *c, struct proto_frames *out, const char *text,
                    json_int_t prompt, json_int_t completion)
{
    json_int_t max = json_integer_value(json_object_get(c->state, "max_tokens"));
    const char *finish = max > 0 && completion >= max ? "length" : "stop";
    if (!json_is_true(json_object_get(c->state, "stream"))) {
        json_t *o = base_object(c, "chat.completion");
        json_t *ch = json_pack("[{s:i, s:{s:s, s:s, s:n}, s:n, s:s}]", "index", 0, "message",
                               "role", "assistant", "content", text ? text : "", "refusal",
                               "logprobs", "finish_reason", finish);
        if (!o || !ch) {
            json_decref(o);
            json_decref(ch);
            return -1;
        }
        json_object_set_new(o, "choices", ch);
        json_object_set_new(o, "usage", usage_json(prompt, completion));
        return frames_push(out, o);
    }
    if (push_role(c, out) < 0 || frames_push(out, chunk(c, json_object(), finish)) < 0)
        return -1;
    if (!json_is_true(json_object_get(c->state, "usage")))
        return 0;
    json_t *u = base_object(c, "chat.completion.chunk");
    if (!u)
        return -1;
    json_object_set_new(u, "choices", json_array());
    json_object_set_new(u, "usage", usage_json(prompt, completion));
    return frames_push(out, u);
}

/* ---- the request ---- */

static int openai_open(struct parley_ctx *ctx, struct proto_conn *c,
                       const struct proto_client *cl, struct proto_frames *out)
{
    (void)ctx;
    (void)c;
    (void)cl;
    (void)out;
    return 0;      /* nothing is sent before the request */
}

/* The text of a message's content: a string, or an array of {"type":
 * "text", "text"} parts (concatenated, new string in *text). NULL on
 * anything else. */
static char *content_text(json_t *content)
{
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (!json_is_array(content) || json_array_size(content) == 0)
        return NULL;
    size_t len = 0, i;
    json_t *p;
    json_array_foreach(content, i, p) {
        const char *t = proto_str(p, "type"), *s = proto_str(p, "text");
        if (!t || strcmp(t, "text") != 0 || !s)
            return NULL;
        len += strlen(s);
    }
    char *buf = malloc(len + 1);
    if (!buf)
        return NULL;
    buf[0] = '\0';
    size_t o = 0;
    json_array_foreach(content, i, p) {
        const char *s = proto_str(p, "text");
        size_t n = strlen(s);
        memcpy(buf + o, s, n);
        o += n;
    }
    buf[o] = '\0';
    return buf;
}

struct oai_req {
    const char *model;
    int stream, include_usage;
    double temperature;        /* < 0: not given */
    int max_tokens;            /* 0: not given */
};

/* Checks everything but the model's existence and fills job->msgs and rq.
 * 0 valid; 1 refused (the frame was pushed); -1 out of memory. */
static int parse_request(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                         struct proto_job *job, struct oai_req *rq, struct proto_frames *out)
{
    memset(rq, 0, sizeof *rq);
    rq->temperature = -1;
    json_t *v;
#define BAD(text, param) return refuse(c, out, PERR_BAD_INPUT, text, NULL, param) < 0 ? -1 : 1
    if (!json_is_object(msg))
        BAD("We could not parse the JSON body of your request: expected a JSON object.", NULL);
    v = json_object_get(msg, "model");
    if (!json_is_string(v) || !*json_string_value(v))
        BAD("you must provide a model parameter", "model");
    rq->model = json_string_value(v);
    v = json_object_get(msg, "stream");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        BAD("stream must be a boolean", "stream");
    rq->stream = json_is_true(v);
    v = json_object_get(msg, "stream_options");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v))
            BAD("stream_options must be an object", "stream_options");
        if (!rq->stream)
            BAD("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options");
        json_t *iu = json_object_get(v, "include_usage");
        if (iu && !json_is_boolean(iu))
            BAD("stream_options.include_usage must be a boolean", "stream_options.include_usage");
        rq->include_usage = json_is_true(iu);
    }
    v = json_object_get(msg, "n");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        BAD("Only n = 1 is supported", "n");
    v = json_object_get(msg, "temperature");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 2)
            BAD("temperature must be a number between 0 and 2", "temperature");
        rq->temperature = json_number_value(v);
    }
    const char *mt = json_object_get(msg, "max_completion_tokens") ? "max_completion_tokens"
                                                                   : "max_tokens";
    v = json_object_get(msg, mt);
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 1000000)
            BAD("max_tokens must be an integer between 1 and 1000000", mt);
        rq->max_tokens = (int)json_integer_value(v);
    }
    static const char *const unsupported[] = { "tools", "functions", "tool_choice",
                                               "function_call", "response_format", "logprobs" };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        v = json_object_get(msg, unsupported[i]);
        if (v && !json_is_null(v) && !json_is_false(v) &&
            !(json_is_array(v) && json_array_size(v) == 0)) {
            char m[120];
            snprintf(m, sizeof m, "%s is not supported by this server", unsupported[i]);
            return refuse(c, out, PERR_BAD_INPUT, m, NULL, unsupported[i]) < 0 ? -1 : 1;
        }
    }
    json_t *msgs = json_object_get(msg, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        BAD("messages must be a non-empty array", "messages");
    if (json_array_size(msgs) > PROTO_JOB_MAX_MSGS) {
        char m[120];
        snprintf(m, sizeof m, "Too many messages: %zu (at most %d)", json_array_size(msgs),
                 PROTO_JOB_MAX_MSGS);
        return refuse(c, out, PERR_BAD_INPUT, m, NULL, "messages") < 0 ? -1 : 1;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        char param[64], text[200];
        snprintf(param, sizeof param, "messages[%zu]", i);
        const char *role = proto_str(m, "role");
        const char *r = !role ? NULL
                      : !strcmp(role, "system") || !strcmp(role, "developer") ? "system"
                      : !strcmp(role, "user") ? "user"
                      : !strcmp(role, "assistant") ? "assistant" : NULL;
        if (!r) {
            snprintf(text, sizeof text, "%s.role must be one of system, developer, user, "
                     "assistant", param);
            return refuse(c, out, PERR_BAD_INPUT, text, NULL, param) < 0 ? -1 : 1;
        }
        char *t = content_text(json_object_get(m, "content"));
        if (!t) {
            snprintf(text, sizeof text, "%s.content must be a string or an array of text "
                     "parts", param);
            return refuse(c, out, PERR_BAD_INPUT, text, NULL, param) < 0 ? -1 : 1;
        }
        size_t chars = proto_utf8_len(t);
        if (chars > (size_t)ctx->cfg->max_message_length) {
            free(t);
            snprintf(text, sizeof text, "%s.content too long (%zu characters, max %d)", param,
                     chars, ctx->cfg->max_message_length);
            return refuse(c, out, PERR_TOO_LONG, text, NULL, param) < 0 ? -1 : 1;
        }
        job->msgs[i].role = r;
        job->msgs[i].content = proto_job_keep(job, t);
        free(t);
        if (!job->msgs[i].content)
            return -1;
    }
    job->req.llm.messages = job->msgs;
    job->req.llm.n_messages = json_array_size(msgs);
#undef BAD
    return 0;
}

/* The cache key of a shareable request into job->ans.key (SHA-256 of the
 * canonical model, messages, temperature, token limit). 0 / -1. */
static int request_key(struct proto_job *job, const struct oai_req *rq)
{
    json_t *ms = json_array();
    for (size_t i = 0; ms && i < job->req.llm.n_messages; i++)
        json_array_append_new(ms, json_pack("[s, s]", job->msgs[i].role, job->msgs[i].content));
    json_t *k = ms ? json_pack("{s:s, s:o, s:f, s:i}", "model", rq->model, "messages", ms,
                               "temperature", rq->temperature, "max_tokens", rq->max_tokens)
                   : NULL;
    char *s = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    if (!s)
        return -1;
    sha256_hex(s, strlen(s), job->hash);
    free(s);
    snprintf(job->ans.key, sizeof job->ans.key, "openai:%s", job->hash);
    str_copy(job->ans.kind, sizeof job->ans.kind, "query");
    return 0;
}

static void set_identity(struct proto_conn *c, const struct oai_req *rq)
{
    char u[37], id[48];
    if (uuid_v4(u) < 0)
        snprintf(u, sizeof u, "%lld", (long long)now_ms());
    size_t o = 0;
    for (const char *p = u; *p && o < 32; p++)
        if (*p != '-')
            id[o++] = *p;
    id[o] = '\0';
    char full[64];
    snprintf(full, sizeof full, "chatcmpl-%s", id);
    json_object_set_new(c->state, "id", json_string(full));
    json_object_set_new(c->state, "created", json_integer(now_ms() / 1000));
    json_object_set_new(c->state, "model", json_string(rq->model));
    json_object_set_new(c->state, "stream", json_boolean(rq->stream));
    json_object_set_new(c->state, "usage", json_boolean(rq->include_usage));
    json_object_set_new(c->state, "max_tokens", json_integer(rq->max_tokens));
}

/* A cached answer's frames (the whole text as one piece). */
static int cached_frames(struct proto_conn *c, struct proto_frames *out, const char *text,
                         int64_t tokens)
{
    if (json_is_true(json_object_get(c->state, "stream"))) {
        if (push_role(c, out) < 0)
            return -1;
        if (*text && frames_push(out, chunk(c, json_pack("{s:s}", "content", text), NULL)) < 0)
            return -1;
    }
    return push_end(c, out, text, 0, tokens > 0 ? tokens : 0);
}

/* Seconds until the next UTC midnight (a budget's reset). */
static int secs_to_midnight(void)
{
    int64_t s = now_ms() / 1000;
    int r = (int)(86400 - s % 86400);
    return r > 0 ? r : 1;
}

static int openai_message(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                          struct proto_frames *out, struct proto_job **jobp)
{
    if (proto_following(c) && c->job_id)
        return refuse(c, out, PERR_CONFLICT, "This request already has an answer", NULL, NULL);
    struct proto_job *job = proto_job_new();
    if (!job)
        return -1;
    struct oai_req rq;
    int p = parse_request(ctx, c, msg, job, &rq, out);
    if (p != 0) {
        proto_job_free(job);
        return p < 0 ? -1 : 0;
    }
    if (!proto_openai_model_known(ctx->cfg, rq.model)) {
        proto_job_free(job);
        char m[300];
        snprintf(m, sizeof m, "The model `%.200s` does not exist or you do not have access to it.",
                 rq.model);
        return refuse(c, out, PERR_NOT_FOUND, m, "model_not_found", "model");
    }
    /* the rate limit: every request is one hit of the caller */
    int64_t retry_ms = 0;
    int ok = ratelimit_hit(ctx->db, c->peer, ctx->cfg->rate_limit_per_min, 60000, now_ms(),
                           &retry_ms);
    if (ok == 0) {
        proto_job_free(job);
        json_object_set_new(c->state, "retry_after",
                            json_integer(retry_ms > 0 ? (retry_ms + 999) / 1000 : 1));
        return refuse(c, out, PERR_RATE_LIMITED, "Rate limit reached for requests",
                      "rate_limit_exceeded", NULL);
    }
    if (ok < 0) {
        proto_job_free(job);
        refuse(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG), NULL, NULL);
        return -1;
    }
    set_identity(c, &rq);
    enum oai_cache_mode mode = proto_openai_cache_mode(ctx->cfg);
    int shareable = mode == OAI_CACHE_ALL || (mode == OAI_CACHE_DETERMINISTIC &&
                                              rq.temperature == 0);
    if (shareable && request_key(job, &rq) < 0) {
        proto_job_free(job);
        return -1;
    }
    if (shareable) {
        char *cached = NULL;
        int64_t tokens = -1;
        int r = store_answer_get(ctx->db, job->ans.key, &cached, &tokens, NULL);
        if (r == 0) {
            stats_cache_hit(ctx->db, job->ans.key);    /* best effort */
            json_object_set_new(c->state, "cache", json_string("hit"));
            int rc = cached_frames(c, out, cached, tokens);
            free(cached);
            proto_job_free(job);
            return rc;
        }
        if (r < 0) {
            proto_job_free(job);
            refuse(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG), NULL, NULL);
            return -1;
        }
        snprintf(job->channel, sizeof job->channel, "openai:%s", job->hash);
        job->req.prompt_key = job->ans.key;
        job->ans.model = proto_job_keep(job, rq.model);
        job->ans.temperature = rq.temperature;
        job->req.cache = &job->ans;
    } else {
        char u[37];
        if (uuid_v4(u) < 0) {
            proto_job_free(job);
            return -1;
        }
        snprintf(job->channel, sizeof job->channel, "openai:u:%s", u);
        job->req.prompt_key = proto_job_keep(job, u);
    }
    job->req.channel = job->channel;
    /* the budget: only when this would call the upstream (not when joining
     * an identical running generation) */
    int64_t running = 0, rseq = 0;
    char why[160];
    ok = shareable ? jobs_running_on(ctx->db, job->channel, &running, &rseq) : 1;
    if (ok >= 0)
        ok = ok == 0 ? 1 : proto_budget_ok(ctx, c, why, sizeof why);
    if (ok == 0) {
        proto_job_free(job);
        json_object_set_new(c->state, "retry_after", json_integer(secs_to_midnight()));
        return refuse(c, out, PERR_BUDGET_EXHAUSTED, why, "insufficient_quota", NULL);
    }
    if (ok < 0 || !job->req.prompt_key || (shareable && !job->ans.model)) {
        proto_job_free(job);
        refuse(c, out, db_err_kind(ctx->db), db_err_text(ctx->db, DB_ERROR_MSG), NULL, NULL);
        return -1;
    }
    job->req.llm.model = proto_job_keep(job, rq.model);
    job->req.llm.temperature = rq.temperature >= 0 ? rq.temperature : ctx->cfg->temperature;
    job->req.llm.max_tokens = rq.max_tokens;
    if (!job->req.llm.model || proto_start(ctx, c, job, jobp) < 0) {
        if (!job->req.llm.model)
            proto_job_free(job);
        refuse(c, out, db_err_kind(ctx->db),
               db_err_text(ctx->db, "Could not start the generation"), NULL, NULL);
        return -1;
    }
    json_object_set_new(c->state, "cache",
                        json_string(!shareable ? "bypass" : *jobp ? "miss" : "shared"));
    char fol[37];
    if (uuid_v4(fol) == 0 && oai_follow_add(ctx->db, c->job_id, fol, now_ms()) == 0)
        json_object_set_new(c->state, "follower", json_string(fol));
    return 0;
}

static void append_text(struct proto_conn *c, const char *s, size_t n)
{
    const char *old = proto_str(c->state, "text");
    size_t ol = old ? strlen(old) : 0;
    char *buf = malloc(ol + n + 1);
    if (!buf)
        return;
    if (ol)
        memcpy(buf, old, ol);
    memcpy(buf + ol, s, n);
    buf[ol + n] = '\0';
    json_object_set_new(c->state, "text", json_stringn(buf, ol + n));
    free(buf);
}

static int openai_event(struct parley_ctx *ctx, struct proto_conn *c,
                        const struct evlog_event *ev, struct proto_frames *out)
{
    (void)ctx;
    int stream = json_is_true(json_object_get(c->state, "stream"));
    if (!strcmp(ev->type, "token")) {
        json_object_set_new(c->state, "streamed", json_true());
        if (!stream) {
            append_text(c, ev->data, ev->data_len);
            return 0;
        }
        if (push_role(c, out) < 0)
            return -1;
        return frames_push(out, chunk(c, json_pack("{s:s%}", "content", ev->data, ev->data_len),
                                      NULL));
    }
    if (!strcmp(ev->type, "done")) {
        json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
        json_int_t pt = json_integer_value(json_object_get(d, "prompt_tokens"));
        json_int_t ct = json_integer_value(json_object_get(d, "tokens"));
        json_decref(d);
        return push_end(c, out, proto_str(c->state, "text"), pt > 0 ? pt : 0, ct > 0 ? ct : 0);
    }
    if (!strcmp(ev->type, "error")) {
        const char *code;
        char *m = proto_event_error(ev, &code);
        const char *text = m ? m : "the answer could not be generated";
        enum perr kind = !strncmp(code, "upstream", 8) ? PERR_UPSTREAM : PERR_INTERNAL;
        int rc;
        if (stream && json_is_true(json_object_get(c->state, "role_sent"))) {
            json_object_set_new(c->state, "failed", json_true());
            rc = frames_push(out, error_json(kind, text, code, NULL));
        } else {
            rc = refuse(c, out, kind, text, code, NULL);
        }
        free(m);
        return rc;
    }
    return 0;      /* "start": the role chunk goes with the first piece */
}

const struct proto_ops proto_openai_ops = { "openai", openai_open, openai_message,
                                            openai_event };

/* ---- what the transports ask ---- */

int proto_openai_streaming(const struct proto_conn *c)
{
    return c->state && json_is_true(json_object_get(c->state, "stream"));
}

int proto_openai_retry_after(const struct proto_conn *c)
{
    if (c->err != PERR_RATE_LIMITED && c->err != PERR_BUDGET_EXHAUSTED)
        return 0;
    json_int_t s = json_integer_value(json_object_get(c->state, "retry_after"));
    return s > 0 ? (int)s : 1;
}

const char *proto_openai_cache_state(const struct proto_conn *c)
{
    if (c->err != PERR_OK)
        return NULL;
    return proto_str(c->state, "cache");
}

int proto_openai_failed(const struct proto_conn *c)
{
    return c->state && json_is_true(json_object_get(c->state, "failed"));
}

int proto_openai_leave(struct parley_ctx *ctx, struct proto_conn *c, int client_gone)
{
    const char *fol = c->state ? proto_str(c->state, "follower") : NULL;
    int64_t job = c->job_id;
    if (!fol || job <= 0)
        return 0;
    int left = oai_follow_remove(ctx->db, job, fol);
    json_object_del(c->state, "follower");
    if (left < 0)
        return -1;
    if (!client_gone || left > 0)
        return 0;
    struct job_info ji;
    if (jobs_get(ctx->db, job, &ji) != 0 || strcmp(ji.state, "running") != 0)
        return 0;
    int rc = jobs_request_stop(ctx->db, ctx->bell, NULL, job, "", 1, NULL);
    return rc == JOBS_STOP_OK ? 1 : rc == JOBS_STOP_ERR ? -1 : 0;
}

int proto_openai_count(struct parley_ctx *ctx, const char *endpoint, const char *outcome)
{
    return ctx->db ? oai_count(ctx->db, endpoint, outcome) : -1;
}

const char *proto_openai_outcome(const struct proto_conn *c, int client_gone)
{
    if (c->err != PERR_OK)
        return perr_name(c->err);
    if (client_gone)
        return "client_gone";
    if (proto_openai_failed(c))
        return "upstream_error";
    const char *cs = proto_str(c->state, "cache");
    return cs && !strcmp(cs, "hit") ? "cached" : cs && !strcmp(cs, "shared") ? "shared" : "ok";
}
