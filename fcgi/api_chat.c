/* api_chat.c — seed 001's REST endpoints over conversations (core/store.h).
 *
 *   GET    /api/chat/sessions?limit=&offset=&kind=     the user's sessions
 *   POST   /api/chat/sessions                          create one (seed 004 too)
 *   GET    /api/chat/sessions/{id}                     one session
 *   GET    /api/chat/sessions/{id}/messages?limit=&offset=   its history
 *   DELETE /api/chat/sessions/{id}[?purge=true]        close it (or delete it)
 *   POST   /api/chat/sessions/{id}/messages/{mid}/reactions   helpful / rating
 *   POST   /api/chat/export                            JSON or Markdown
 *
 * A session is a conversation owned by the JWT's sub (r->user; "" in open
 * mode). Another user's session is "not found" (404), never 403, so ids
 * cannot be probed. Times are ISO-8601 UTC with milliseconds.
 * Runs in a parley.fcgi worker thread on the thread's database connection;
 * every route is F_AUTH (and F_JSON where there is a body), so the
 * dispatcher has already checked the token and parsed the body.
 */
#include "handlers.h"
#include "ident.h"
#include "proto.h"
#include "status.h"
#include "store.h"
#include "util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_LIMIT_DEFAULT 20
#define CHAT_LIMIT_MAX 100
#define CHAT_TITLE_MAX 200          /* characters */
#define CHAT_EXPORT_MAX 100000      /* messages in one export */
/* Bytes of a session's metadata or settings JSON (compact): the bound of a
 * seed 001 message's metadata (core/proto_chat.c MAX_METADATA) and of a
 * Phoenix query's, so no client-sent object is stored bigger. */
#define CHAT_OBJECT_MAX 8192

/* ---- JSON shapes ---- */

static json_t *chat_time(int64_t ms)
{
    char buf[32];
    proto_timestamp(buf, ms, 0);
    return json_string(buf);
}

/* The JSON object stored as text, or a new empty object (new). */
static json_t *chat_object(const char *text)
{
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    if (json_is_object(o))
        return o;
    json_decref(o);
    return json_object();
}

/* Seed 001 ChatSession (new): status "idle" once nothing happened on it
 * for WEBSOCKET_TIMEOUT (store_conv_status); last_activity the later of
 * its last message and its last connection or client frame. */
static json_t *chat_session_json(const struct request *r, const struct conversation *c)
{
    int64_t last = c->last_activity > c->updated_at ? c->last_activity : c->updated_at;
    const char *status = store_conv_status(c, now_ms(), (int64_t)r->ctx->cfg->ws_timeout_s * 1000);
    return json_pack("{s:s, s:o, s:s, s:o, s:o, s:s, s:I, s:o, s:o, s:s, s:s}",
                     "session_id", c->id,
                     "project_id", c->project_id ? json_string(c->project_id) : json_null(),
                     "user_id", c->owner,
                     "started_at", chat_time(c->created_at),
                     "last_activity", chat_time(last),
                     "status", status,
                     "message_count", (json_int_t)c->message_count,
                     "settings", chat_object(c->settings),
                     "metadata", chat_object(c->metadata),
                     "kind", c->kind,
                     "title", c->title ? c->title : "");
}

/* A client's project id (seed 001's ChatSession.project_id): 1-64
 * letters, digits, '-', '_' or '.' (as the WebSocket's ?project_id=). */
#define CHAT_PROJECT_MSG "project_id must be 1-64 letters, digits, '-', '_' or '.'"
static int chat_project_valid(const char *p)
{
    return p && ident_name_valid(p, 64);
}

/* Seed 001 ChatMessage (new): the stored metadata object plus tokens_used,
 * processing_time (seconds), agent_used (the model) and attachments. */
static json_t *chat_message_json(const struct message *m)
{
    json_t *meta = chat_object(m->metadata);
    json_object_set_new(meta, "tokens_used",
                        m->tokens >= 0 ? json_integer(m->tokens) : json_null());
    json_object_set_new(meta, "processing_time",
                        m->processing_ms >= 0 ? json_real((double)m->processing_ms / 1000.0)
                                              : json_null());
    json_object_set_new(meta, "agent_used", m->model ? json_string(m->model) : json_null());
    if (!json_object_get(meta, "attachments"))
        json_object_set_new(meta, "attachments", json_array());
    if (m->queued)              /* waiting for its answer (seed 001's queue) */
        json_object_set_new(meta, "queued", json_true());
    json_t *reactions = json_pack("{s:o, s:o}",
                                  "helpful", m->helpful < 0 ? json_null() : json_boolean(m->helpful),
                                  "rating", m->rating > 0 ? json_integer(m->rating) : json_null());
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:o, s:o}",
                     "message_id", m->id,
                     "session_id", m->conversation_id,
                     "timestamp", chat_time(m->created_at),
                     "role", m->role,
                     "content", m->content ? m->content : "",
                     "metadata", meta,
                     "reactions", reactions);
}

/* ---- request helpers ---- */

/* An integer query parameter: absent → def; above clamp → clamp; not an
 * integer or below min → 400. 0, or -1 with the response written. */
static int chat_query_int(struct request *r, const char *name, int def, int min, int clamp,
                          int *out)
{
    long long n;
    if (req_query_int(r, name, def, min, LLONG_MAX, &n) < 0) {
        res_error_kind(r, PERR_BAD_INPUT, "Query parameter %s must be an integer of at least %d", name, min);
        return -1;
    }
    *out = n > clamp ? clamp : (int)n;
    return 0;
}

/* The user's session id into *c. 0 found; -1 with 404/500 written. */
static int chat_find(struct request *r, const char *id, struct conversation *c)
{
    int g = store_conv_get(r->ctx->db, id, r->user, c);
    if (g == STORE_OK)
        return 0;
    if (g == STORE_NOT_FOUND)
        res_error_kind(r, PERR_NOT_FOUND, "Session not found: %.100s", id);
    else
        res_error_kind(r, db_err_kind(r->ctx->db), "Database error while reading the session");
    return -1;
}

static size_t chat_utf8_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

/* ---- handlers ---- */

int h_sessions_list(struct request *r)
{
    int limit, offset;
    if (chat_query_int(r, "limit", CHAT_LIMIT_DEFAULT, 1, CHAT_LIMIT_MAX, &limit) < 0 ||
        chat_query_int(r, "offset", 0, 0, 1 << 30, &offset) < 0)
        return 0;
    char kbuf[16];
    const char *kind = req_query(r, "kind", kbuf, sizeof kbuf);
    if (kind && !*kind)
        kind = NULL;
    static const char *const kinds[] = { "chat", "ticket", "brand", "phoenix", "sse" };
    int known = !kind;
    for (size_t i = 0; kind && i < sizeof kinds / sizeof kinds[0]; i++)
        known |= strcmp(kind, kinds[i]) == 0;
    if (!known)
        return res_error_kind(r, PERR_BAD_INPUT, "Query parameter kind must be chat, ticket, brand, phoenix or sse");
    char pbuf[80];
    const char *project = req_query(r, "project_id", pbuf, sizeof pbuf);
    if (project && !chat_project_valid(project))
        return res_error_kind(r, PERR_BAD_INPUT, "Query parameter " CHAT_PROJECT_MSG);

    struct conversation *v = NULL;
    int n = 0;
    int64_t total = 0;
    if (store_conv_list_project(r->ctx->db, r->user, kind, project, limit, offset, &v, &n, &total) < 0)
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error while listing sessions");
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, chat_session_json(r, &v[i]));
    store_convs_free(v, n);
    return res_json(r, 200, json_pack("{s:o, s:I, s:i, s:i}", "sessions", arr,
                                      "total", (json_int_t)total, "limit", limit,
                                      "offset", offset));
}

int h_session_create(struct request *r)
{
    json_t *title = json_object_get(r->json, "title");
    json_t *settings = json_object_get(r->json, "settings");
    json_t *metadata = json_object_get(r->json, "metadata");
    json_t *kind = json_object_get(r->json, "kind");
    json_t *project = json_object_get(r->json, "project_id");
    if (project && !json_is_null(project) && !chat_project_valid(json_string_value(project)))
        return res_error_kind(r, PERR_BAD_INPUT, CHAT_PROJECT_MSG);
    if (title && !json_is_null(title) &&
        (!json_is_string(title) || chat_utf8_chars(json_string_value(title)) > CHAT_TITLE_MAX))
        return res_error_kind(r, PERR_BAD_INPUT, "title must be a string of at most %d characters", CHAT_TITLE_MAX);
    if (settings && !json_is_null(settings) && !json_is_object(settings))
        return res_error_kind(r, PERR_BAD_INPUT, "settings must be an object");
    if (metadata && !json_is_null(metadata) && !json_is_object(metadata))
        return res_error_kind(r, PERR_BAD_INPUT, "metadata must be an object");
    const char *k = json_string_value(kind);
    if (kind && !json_is_null(kind) && (!k || (strcmp(k, "chat") != 0 && strcmp(k, "sse") != 0)))
        return res_error_kind(r, PERR_BAD_INPUT, "kind must be \"chat\" or \"sse\"");

    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, r->user);
    str_copy(c.kind, sizeof c.kind, k ? k : "chat");
    c.title = (char *)json_string_value(title);          /* borrowed for the insert */
    c.settings = json_is_object(settings) ? json_dumps(settings, JSON_COMPACT) : NULL;
    c.metadata = json_is_object(metadata) ? json_dumps(metadata, JSON_COMPACT) : NULL;
    if ((json_is_object(settings) && !c.settings) || (json_is_object(metadata) && !c.metadata)) {
        free(c.settings);
        free(c.metadata);
        return res_error_kind(r, PERR_INTERNAL, "Out of memory");
    }
    const char *big = c.metadata && strlen(c.metadata) > CHAT_OBJECT_MAX ? "metadata"
                      : c.settings && strlen(c.settings) > CHAT_OBJECT_MAX ? "settings" : NULL;
    if (big) {
        free(c.settings);
        free(c.metadata);
        return res_error_kind(r, PERR_BAD_INPUT, "Session %s too large (max %d bytes)", big,
                              CHAT_OBJECT_MAX);
    }
    c.project_id = (char *)json_string_value(project);   /* borrowed for the insert */
    int rc = store_conv_create(r->ctx->db, &c);
    enum perr why = rc == STORE_ERR ? db_err_kind(r->ctx->db) : PERR_DB;
    const char *msg = rc == STORE_ERR ? db_err_text(r->ctx->db, "Database error while creating the session")
                                      : "Database error while creating the session";
    json_t *o = rc == STORE_OK ? chat_session_json(r, &c) : NULL;
    free(c.settings);
    free(c.metadata);
    if (rc != STORE_OK) {      /* STORE_EXISTS: a fresh UUID collided */
        json_decref(o);
        return res_error_kind(r, why, "%s", msg);
    }
    json_object_set_new(o, "id", json_string(c.id));      /* seed 004's conversationId */
    return res_json(r, 201, o);
}

int h_session_get(struct request *r)
{
    struct conversation c;
    if (chat_find(r, r->params[0], &c) < 0)
        return 0;
    json_t *o = chat_session_json(r, &c);
    store_conv_free(&c);
    return res_json(r, 200, o);
}

int h_session_messages(struct request *r)
{
    int limit, offset;
    if (chat_query_int(r, "limit", CHAT_LIMIT_DEFAULT, 1, CHAT_LIMIT_MAX, &limit) < 0 ||
        chat_query_int(r, "offset", 0, 0, 1 << 30, &offset) < 0)
        return 0;
    struct conversation c;
    if (chat_find(r, r->params[0], &c) < 0)
        return 0;
    store_conv_free(&c);
    struct message *v = NULL;
    int n = 0;
    int64_t total = 0;
    if (store_msg_list(r->ctx->db, r->params[0], limit, offset, &v, &n, &total) < 0)
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error while reading messages");
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, chat_message_json(&v[i]));
    store_msgs_free(v, n);
    return res_json(r, 200, json_pack("{s:s, s:o, s:I, s:i, s:i}", "session_id", r->params[0],
                                      "messages", arr, "total", (json_int_t)total,
                                      "limit", limit, "offset", offset));
}

int h_session_delete(struct request *r)
{
    const char *id = r->params[0];
    char buf[16];
    const char *purge = req_query(r, "purge", buf, sizeof buf);
    int del;
    if (!purge || !strcmp(purge, "false") || !strcmp(purge, "0") || !*purge)
        del = 0;
    else if (!strcmp(purge, "true") || !strcmp(purge, "1"))
        del = 1;
    else
        return res_error_kind(r, PERR_BAD_INPUT, "Query parameter purge must be true or false");
    int rc = del ? store_conv_delete(r->ctx->db, id, r->user)
                 : store_conv_set_status(r->ctx->db, id, r->user, "closed");
    if (rc == STORE_NOT_FOUND)
        return res_error_kind(r, PERR_NOT_FOUND, "Session not found: %.100s", id);
    if (rc != STORE_OK)
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error while %s the session",
                              del ? "deleting" : "closing");
    if (del)
        return res_empty(r, 204);
    return res_json(r, 200, json_pack("{s:b, s:s, s:s}", "success", 1, "session_id", id,
                                      "status", "closed"));
}

/* Every message of a conversation, oldest first. 0 / -1. */
static int chat_all_messages(parley_db *db, const char *id, struct message **v, int *n)
{
    int64_t total = 0;
    *v = NULL;
    *n = 0;
    if (store_msg_list(db, id, 0, 0, v, n, &total) < 0)
        return -1;
    if (total <= 0)
        return 0;
    return store_msg_list(db, id, total > CHAT_EXPORT_MAX ? CHAT_EXPORT_MAX : (int)total, 0,
                          v, n, &total);
}

/* The conversation as Markdown (new string, NULL on OOM). */
static char *chat_markdown(const struct conversation *c, const struct message *v, int n)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    char t1[32], t2[32];
    proto_timestamp(t1, c->created_at, 0);
    proto_timestamp(t2, c->updated_at, 0);
    if (c->title && *c->title)
        fprintf(f, "# %s\n\n", c->title);
    else
        fprintf(f, "# Chat session %s\n\n", c->id);
    fprintf(f, "- Session: `%s`\n", c->id);
    if (c->owner[0])
        fprintf(f, "- User: %s\n", c->owner);
    fprintf(f, "- Started: %s\n- Last activity: %s\n- Status: %s\n- Messages: %d\n",
            t1, t2, c->status, n);
    for (int i = 0; i < n; i++) {
        const struct message *m = &v[i];
        char ts[32];
        proto_timestamp(ts, m->created_at, 0);
        const char *who = !strcmp(m->role, "user") ? "User"
                        : !strcmp(m->role, "assistant") ? "Assistant" : "System";
        fprintf(f, "\n---\n\n### %s · %s\n\n%s\n", who, ts, m->content ? m->content : "");
        if (m->model || m->tokens >= 0 || m->processing_ms >= 0) {
            fputs("\n_", f);
            const char *sep = "";
            if (m->model) {
                fprintf(f, "model %s", m->model);
                sep = " · ";
            }
            if (m->tokens >= 0) {
                fprintf(f, "%s%lld tokens", sep, (long long)m->tokens);
                sep = " · ";
            }
            if (m->processing_ms >= 0)
                fprintf(f, "%s%.3f s", sep, (double)m->processing_ms / 1000.0);
            fputs("_\n", f);
        }
        if (m->helpful >= 0 || m->rating > 0) {
            fputs("\n", f);
            if (m->helpful >= 0)
                fprintf(f, "Helpful: %s. ", m->helpful ? "yes" : "no");
            if (m->rating > 0)
                fprintf(f, "Rating: %d/5.", m->rating);
            fputs("\n", f);
        }
    }
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

int h_chat_export(struct request *r)
{
    json_t *jid = json_object_get(r->json, "session_id");
    json_t *jfmt = json_object_get(r->json, "format");
    if (!json_is_string(jid) || !*json_string_value(jid))
        return res_error_kind(r, PERR_BAD_INPUT, "session_id must be a non-empty string");
    const char *fmt = jfmt && !json_is_null(jfmt) ? json_string_value(jfmt) : "json";
    int markdown = fmt && (!strcmp(fmt, "markdown") || !strcmp(fmt, "md"));
    if (!fmt || (!markdown && strcmp(fmt, "json") != 0))
        return res_error_kind(r, PERR_BAD_INPUT, "format must be \"json\" or \"markdown\"");
    const char *id = json_string_value(jid);
    struct conversation c;
    if (chat_find(r, id, &c) < 0)
        return 0;
    struct message *v = NULL;
    int n = 0;
    if (chat_all_messages(r->ctx->db, id, &v, &n) < 0) {
        store_conv_free(&c);
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error while reading messages");
    }
    int rc;
    if (!markdown) {
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(arr, chat_message_json(&v[i]));
        json_t *s = chat_session_json(r, &c);
        if (s)
            json_object_set_new(s, "message_count", json_integer(n));
        rc = res_json(r, 200, json_pack("{s:o*, s:o, s:o}", "session", s, "messages", arr,
                                        "exported_at", chat_time(now_ms())));
    } else {
        char *md = chat_markdown(&c, v, n);
        if (!md) {
            rc = res_error_kind(r, PERR_INTERNAL, "Out of memory while exporting");
        } else {
            /* The file name keeps only characters safe in a quoted header. */
            char safe[80], extra[200];
            size_t o = 0;
            for (const char *p = c.id; *p && o + 1 < sizeof safe; p++)
                safe[o++] = ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                             (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.')
                                ? *p : '_';
            safe[o] = '\0';
            size_t len = strlen(md);
            snprintf(extra, sizeof extra,
                     "Content-Disposition: attachment; filename=\"session-%s.md\"\r\n"
                     "Content-Length: %zu\r\n", safe, len);
            rc = res_start(r, 200, "text/markdown; charset=utf-8", extra);
            if (rc == 0)
                rc = res_write(r, md, len);
            free(md);
        }
    }
    store_msgs_free(v, n);
    store_conv_free(&c);
    return rc;
}

int h_message_reaction(struct request *r)
{
    const char *sid = r->params[0], *mid = r->params[1];
    json_t *jh = json_object_get(r->json, "helpful");
    json_t *jr = json_object_get(r->json, "rating");
    if (jh && !json_is_boolean(jh))
        return res_error_kind(r, PERR_BAD_INPUT, "helpful must be true or false");
    if (jr && (!json_is_integer(jr) || json_integer_value(jr) < 1 || json_integer_value(jr) > 5))
        return res_error_kind(r, PERR_BAD_INPUT, "rating must be an integer from 1 to 5");
    if (!jh && !jr)
        return res_error_kind(r, PERR_BAD_INPUT, "Give helpful (true or false), rating (1 to 5), or both");
    int helpful = jh ? json_is_true(jh) : -1;
    int rating = jr ? (int)json_integer_value(jr) : 0;
    int rc = store_msg_react(r->ctx->db, r->user, sid, mid, helpful, rating);
    if (rc == STORE_NOT_FOUND)
        return res_error_kind(r, PERR_NOT_FOUND, "Message not found: %.100s", mid);
    if (rc != STORE_OK ||
        store_msg_reaction_get(r->ctx->db, sid, mid, &helpful, &rating) != STORE_OK)
        return res_error_kind(r, db_err_kind(r->ctx->db), "Database error while saving the reaction");
    json_t *reactions = json_pack("{s:o, s:o}",
                                  "helpful", helpful < 0 ? json_null() : json_boolean(helpful),
                                  "rating", rating > 0 ? json_integer(rating) : json_null());
    return res_json(r, 200, json_pack("{s:b, s:s, s:s, s:o}", "success", 1, "session_id", sid,
                                      "message_id", mid, "reactions", reactions));
}
