/* handlers.h — every route handler of parley.fcgi, by file. routes.c holds
 * the table that maps methods and paths to them. */
#ifndef PARLEY_HANDLERS_H
#define PARLEY_HANDLERS_H
#include "http.h"

/* api_misc.c */
#define HEALTH_PROBE_MS 2000                 /* upstream probe limit of /api/health */
int h_health(struct request *r);             /* GET /api/health */
int h_brands_active(struct request *r);      /* GET /brands/active */

/* api_openapi.c */
int h_openapi(struct request *r);            /* GET /api/openapi.json (docs/openapi.yaml as JSON) */

/* api_metrics.c */
int h_metrics(struct request *r);            /* GET /api/metrics (Prometheus text) */

/* api_chat.c — seed 001 REST */
int h_sessions_list(struct request *r);      /* GET /api/chat/sessions */
int h_session_create(struct request *r);     /* POST /api/chat/sessions (seed 004 too) */
int h_session_get(struct request *r);        /* GET /api/chat/sessions/{id} */
int h_session_messages(struct request *r);   /* GET /api/chat/sessions/{id}/messages */
int h_session_delete(struct request *r);     /* DELETE /api/chat/sessions/{id} */
int h_chat_export(struct request *r);        /* POST /api/chat/export */
int h_message_reaction(struct request *r);   /* POST /api/chat/sessions/{id}/messages/{mid}/reactions */

/* api_send.c — seed 004 */
int h_chat_send(struct request *r);          /* POST /api/chat/send (SSE) */

/* api_aisdk.c — the AI SDK UI message stream (docs/ai-sdk.md) */
int h_aisdk_chat(struct request *r);         /* POST /api/ai-sdk/chat (SSE) */
int h_aisdk_resume(struct request *r);       /* GET /api/ai-sdk/chat/{id}/stream (SSE or 204) */

/* api_openai.c — the OpenAI-compatible API (docs/openai.md) */
int h_openai_chat(struct request *r);        /* POST /v1/chat/completions (JSON or SSE) */
int h_openai_models(struct request *r);      /* GET /v1/models */

/* api_tickets.c — seed 000 REST + SSE */
int h_ticket_ai_get(struct request *r);      /* GET /api/tickets/{id}/ai */
int h_ticket_ai_delete(struct request *r);   /* DELETE /api/tickets/{id}/ai */
int h_ticket_ai_stream(struct request *r);   /* GET /api/tickets/{id}/ai/stream (SSE) */

/* api_stop.c — stopping a generation (docs/stop.md) */
int h_chat_stop(struct request *r);          /* POST /api/chat/sessions/{id}/stop */
int h_ticket_ai_stop(struct request *r);     /* POST /api/tickets/{id}/ai/stop */

/* token accounting (api_usage.c, docs/usage.md) */
int h_usage(struct request *r);              /* GET /api/usage */

/* api_admin.c — the admin page's endpoints (docs/admin.md); role "admin" */
int h_admin_overview(struct request *r);     /* GET /api/admin/overview */
int h_admin_generations(struct request *r);  /* GET /api/admin/generations */
int h_admin_stop(struct request *r);         /* POST /api/admin/generations/{id}/stop */
int h_admin_connections(struct request *r);  /* GET /api/admin/connections */
/* This process's open connections for its presence row (core/presence.h):
 * a new object {"sse": SSE streams, "longpoll_waiting": parked long-poll
 * GETs}. The reporter thread calls it; ud unused. */
json_t *admin_fcgi_counts(void *ud);

/* generic long-poll transport (DESIGN §3; poll_transport.h lists its files) */
int h_poll_open(struct request *r);          /* POST /api/poll/open (poll_handlers.c) */
int h_poll_get(struct request *r);           /* GET /api/poll/{sid} (poll_get.c) */
int h_poll_post(struct request *r);          /* POST /api/poll/{sid} (poll_handlers.c) */
int h_poll_delete(struct request *r);        /* DELETE /api/poll/{sid} (poll_handlers.c) */

/* seed 003: the Phoenix LongPoll transport (phx_longpoll.c) */
int h_phx_lp_get(struct request *r);         /* GET /socket/longpoll */
int h_phx_lp_post(struct request *r);        /* POST /socket/longpoll */
int h_phx_lp_other(struct request *r);       /* PUT, PATCH, DELETE /socket/longpoll: 400 */
int h_phx_lp_options(struct request *r);     /* OPTIONS /socket/longpoll: Phoenix's preflight */
#endif
