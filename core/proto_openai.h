/* proto_openai.h — the OpenAI-compatible endpoint's protocol (issue 15
 * item 1, docs/openai.md), what its transports call besides the proto.h
 * adapter calls (proto_open with PROTO_OPENAI_PATH, proto_message with the
 * raw request body, follow()):
 *
 *   POST /v1/chat/completions   the adapter core/proto_openai.c (PROTO_OPENAI)
 *   GET  /v1/models             proto_openai_models
 *
 * Every answer the adapter makes is a complete JSON text in OpenAI's shape:
 * a refused request is one {"error": {"message", "type", "param", "code"}}
 * frame with c->err set (its HTTP status: the kind's, fcgi/status.h;
 * proto_openai_retry_after for a 429); a streamed answer is
 * "chat.completion.chunk" objects (the transport writes each as a data:
 * line and ends with data: [DONE] unless proto_openai_failed); an answer
 * without stream is one "chat.completion" object made at the end.
 * Threads: as proto.h (one thread per connection, ctx->db that thread's).
 */
#ifndef PARLEY_PROTO_OPENAI_H
#define PARLEY_PROTO_OPENAI_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "auth.h"
#include "perr.h"
#include "proto.h"

#define PROTO_OPENAI_PATH "/v1/chat/completions"

/* What PARLEY_OPENAI_CACHE allows (docs/openai.md). */
enum oai_cache_mode { OAI_CACHE_OFF = 0, OAI_CACHE_DETERMINISTIC = 1, OAI_CACHE_ALL = 2 };
/* The mode of cfg (NULL or unknown text: deterministic). Pure. */
enum oai_cache_mode proto_openai_cache_mode(const struct parley_config *cfg);

/* Authenticates an OpenAI client from its Authorization header value
 * (borrowed; NULL: none): "Bearer <Parley API key>" (openai_store.h: one
 * lookup, a revoked key is refused) or "Bearer <Parley JWT>"
 * (auth_verify_config). In open mode (no PARLEY_JWT_SECRET) anything that
 * is not a Parley key is accepted as user "". On success returns 0 with
 * *claims filled (sub = the user; admin and token_budget from a JWT, none
 * for a key). On a refusal returns 1 and *body is the 401 error body (new
 * string: type "invalid_request_error", code "invalid_api_key"); -1 on a
 * database error (*body: a 500/503 body, *kind its kind). kind may be NULL.
 * Thread: the caller's ctx->db. */
int proto_openai_auth(struct parley_ctx *ctx, const char *authorization,
                      struct auth_claims *claims, char **body, enum perr *kind);

/* The body of GET /v1/models: {"object": "list", "data": [{"id", "object":
 * "model", "created", "owned_by": "parley"}...]} for PARLEY_MODEL and every
 * model a PARLEY_UPSTREAMS entry names (in that order, each once). A new
 * object (NULL out of memory). Pure over cfg. */
json_t *proto_openai_models(const struct parley_config *cfg);
/* 1 when model is one /v1/models lists, else 0. */
int proto_openai_model_known(const struct parley_config *cfg, const char *model);

/* An error body {"error": {"message", "type", "param": null, "code"}} of
 * kind (its OpenAI type: invalid_request_error for 4xx, "requests" for a
 * rate limit, insufficient_quota for a budget, server_error for 5xx) with
 * code (NULL: null). A new string (NULL out of memory). */
char *proto_openai_error_body(enum perr kind, const char *msg, const char *code);

/* After proto_message: 1 when the request asked for a stream. */
int proto_openai_streaming(const struct proto_conn *c);
/* After a refusal with PERR_RATE_LIMITED or PERR_BUDGET_EXHAUSTED: the
 * seconds to send as Retry-After (>= 1); 0 for anything else. */
int proto_openai_retry_after(const struct proto_conn *c);
/* After proto_message: where the answer comes from, for the X-Parley-Cache
 * header: "hit" (the cache), "miss" (a new shareable generation),
 * "shared" (joined an identical running generation), "bypass" (not
 * cacheable: a generation of its own), or NULL after a refusal. */
const char *proto_openai_cache_state(const struct proto_conn *c);
/* 1 when a streamed answer failed after its first chunk (an error chunk
 * went out): the transport then ends without data: [DONE]. */
int proto_openai_failed(const struct proto_conn *c);
/* The request ends (also after a refusal: then a no-op). It no longer
 * follows its generation; when client_gone is set and nobody else follows
 * it (openai_followers), the generation is stopped (jobs_request_stop as
 * an admin; the runner aborts the upstream request and caches nothing).
 * Returns 1 when it asked the generation to stop, 0 when not, -1 on a
 * database error. Thread: the caller's ctx->db. */
int proto_openai_leave(struct parley_ctx *ctx, struct proto_conn *c, int client_gone);
/* Counts the request for /api/metrics (oai_count): endpoint
 * "chat.completions" or "models", outcome "ok", "cached", "shared",
 * "client_gone" or a failure kind's perr_name. Best effort; 0 / -1. */
int proto_openai_count(struct parley_ctx *ctx, const char *endpoint, const char *outcome);
/* The outcome word of a finished chat request (for proto_openai_count). */
const char *proto_openai_outcome(const struct proto_conn *c, int client_gone);
#endif
