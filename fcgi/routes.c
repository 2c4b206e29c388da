/* routes.c — parley.fcgi's routing table: every URL it serves, its handler
 * and the checks the dispatcher (http.c) makes before the handler runs.
 * Read-only data shared by all threads.
 *
 * Authentication (DESIGN §8: JWT on REST, WebSocket and long-poll): every
 * route that touches a user's or a ticket's data is F_AUTH (without a
 * configured PARLEY_JWT_SECRET everyone is user "" and nothing is asked).
 * POST /api/poll/open is F_USER: its token may instead travel inside the
 * WebSocket path it opens ("/ws/<id>?token=…", seed 001), which the handler
 * checks; a session's later requests carry the token themselves (header or
 * ?token=) and must be its opener's. Health and the brand list are public.
 */
#include "handlers.h"

const struct route http_routes[] = {
    /* misc */
    { "GET",    "/api/health",                      h_health,           F_NODB },
    { "GET",    "/brands/active",                   h_brands_active,    0 },
    /* the OpenAPI description of these routes (api_openapi.c, docs/openapi.yaml) */
    { "GET",    "/api/openapi.json",                h_openapi,          F_NODB },
    { "GET",    "/api/metrics",                     h_metrics,          F_AUTH },
    /* the caller's tokens and daily budget (api_usage.c, docs/usage.md);
     * ?user= for a token with role "admin" */
    { "GET",    "/api/usage",                       h_usage,            F_AUTH },

    /* the admin page's data (api_admin.c, docs/admin.md): a token with role
     * "admin" only (401 without a token, 403 with another) */
    { "GET",    "/api/admin/overview",              h_admin_overview,   F_AUTH },
    { "GET",    "/api/admin/generations",           h_admin_generations, F_AUTH },
    { "POST",   "/api/admin/generations/{id}/stop", h_admin_stop,       F_AUTH },
    { "GET",    "/api/admin/connections",           h_admin_connections, F_AUTH },

    /* seed 001 chat REST (conversations of the JWT's sub, or of an anonymous
     * visitor's id when PARLEY_ANONYMOUS names chat, or send: a seed 004
     * visitor creates and reads its conversation here; docs/anonymous.md) */
    { "GET",    "/api/chat/sessions",               h_sessions_list,    F_AUTH | F_ANON_CHAT | F_ANON_SEND },
    { "POST",   "/api/chat/sessions",               h_session_create,   F_AUTH | F_ANON_CHAT | F_ANON_SEND | F_JSON },
    { "GET",    "/api/chat/sessions/{id}",          h_session_get,      F_AUTH | F_ANON_CHAT | F_ANON_SEND },
    { "DELETE", "/api/chat/sessions/{id}",          h_session_delete,   F_AUTH | F_ANON_CHAT },
    { "GET",    "/api/chat/sessions/{id}/messages", h_session_messages, F_AUTH | F_ANON_CHAT | F_ANON_SEND },
    { "POST",   "/api/chat/sessions/{id}/messages/{mid}/reactions",
                                                    h_message_reaction, F_AUTH | F_ANON_CHAT | F_JSON },
    { "POST",   "/api/chat/export",                 h_chat_export,      F_AUTH | F_ANON_CHAT | F_JSON },
    /* stop a generation (api_stop.c, docs/stop.md): any protocol's
     * conversation, or a ticket; the starter or an admin (role claim) */
    { "POST",   "/api/chat/sessions/{id}/stop",     h_chat_stop,        F_AUTH | F_VISITOR },
    { "POST",   "/api/tickets/{id}/ai/stop",        h_ticket_ai_stop,   F_AUTH | F_ANON_TICKET },

    /* seed 004 SSE */
    { "POST",   "/api/chat/send",                   h_chat_send,        F_AUTH | F_ANON_SEND | F_JSON | F_STREAM },

    /* the AI SDK UI message stream (api_aisdk.c, docs/ai-sdk.md); visitors
     * when PARLEY_ANONYMOUS names send (its chats are SSE conversations) */
    { "POST",   "/api/ai-sdk/chat",                 h_aisdk_chat,       F_AUTH | F_ANON_SEND | F_JSON | F_STREAM },
    { "GET",    "/api/ai-sdk/chat/{id}/stream",     h_aisdk_resume,     F_AUTH | F_ANON_SEND | F_STREAM },
    /* the OpenAI-compatible API (api_openai.c, docs/openai.md): the handlers
     * authenticate themselves (a Parley API key or JWT as the bearer) and
     * answer in OpenAI's error shape, so no F_AUTH / F_JSON */
    { "POST",   "/v1/chat/completions",             h_openai_chat,      F_STREAM },
    { "GET",    "/v1/models",                       h_openai_models,    0 },

    /* seed 000 tickets: REST + SSE */
    { "GET",    "/api/tickets/{id}/ai",             h_ticket_ai_get,    F_AUTH | F_ANON_TICKET },
    { "DELETE", "/api/tickets/{id}/ai",             h_ticket_ai_delete, F_AUTH | F_ANON_TICKET },
    { "GET",    "/api/tickets/{id}/ai/stream",      h_ticket_ai_stream, F_AUTH | F_ANON_TICKET | F_STREAM },

    /* generic long-poll transport (DESIGN §3); POST /{sid} takes a raw
     * body: one JSON frame or NDJSON */
    { "POST",   "/api/poll/open",                   h_poll_open,        F_USER | F_JSON },
    { "GET",    "/api/poll/{sid}",                  h_poll_get,         F_AUTH | F_VISITOR },
    { "POST",   "/api/poll/{sid}",                  h_poll_post,        F_AUTH | F_VISITOR },
    { "DELETE", "/api/poll/{sid}",                  h_poll_delete,      F_AUTH | F_VISITOR },

    /* seed 003, Phoenix LongPoll (phx_longpoll.c): the handler checks the
     * JWT itself (Bearer or the auth_token connect param) because ?token=
     * is the long-poll session's token there, not a JWT; F_NODB: without a
     * database they answer in Phoenix's own envelope ({"status":500}, which
     * phoenix.js understands), not with the dispatcher's 503 */
    { "GET",    "/socket/longpoll",                 h_phx_lp_get,       F_NODB },
    { "POST",   "/socket/longpoll",                 h_phx_lp_post,      F_NODB },
    { "PUT",    "/socket/longpoll",                 h_phx_lp_other,     0 },
    { "PATCH",  "/socket/longpoll",                 h_phx_lp_other,     0 },
    { "DELETE", "/socket/longpoll",                 h_phx_lp_other,     0 },
    { "OPTIONS", "/socket/longpoll",                h_phx_lp_options,   F_NODB },
};

const size_t http_nroutes = sizeof http_routes / sizeof http_routes[0];
