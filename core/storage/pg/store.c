/* storage/pg/store.c — tickets, conversations, messages and the answer
 * cache on PostgreSQL (contracts: store.h; store.c dispatches here when
 * db_pg_conn(db) is not NULL; tables: sql/pg/002_store.sql).
 *
 * Every statement is a constant with bound values (db_pg_exec, prepared
 * once per session, text format both ways). Under READ COMMITTED two nodes' statements
 * interleave, so no decision is a read followed by a write:
 *   - a conversation is created by INSERT ... ON CONFLICT (id) DO NOTHING:
 *     a second creator of one id waits for the first's transaction on the
 *     primary key and then inserts nothing (STORE_EXISTS);
 *   - tickets and cached answers are put with INSERT ... ON CONFLICT (id /
 *     key) DO UPDATE: concurrent puts of one key queue on the row and never
 *     fail with a unique violation (which would abort the caller's
 *     transaction: the runner's final commit);
 *   - a reaction and the touch of a conversation's updated_at are single
 *     UPDATEs whose new values are computed from the row version they
 *     lock (CASE ... ELSE helpful END, GREATEST(updated_at, $2)), so a
 *     concurrent writer's change is never overwritten with a stale value.
 */
#include "storage/pg/pg.h"
#include "storage/pg/store.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_TICKET_PUT[] =
    "INSERT INTO tickets(id, body, created_at, updated_at) VALUES ($1, $2, $3, $3) "
    "ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at "
    "WHERE tickets.body <> excluded.body";
static const char SQL_TICKET_GET[] = "SELECT body FROM tickets WHERE id = $1";

static const char SQL_CONV_CREATE[] =
    "INSERT INTO conversations(id, owner, kind, ticket_id, brand_id, title, status, "
    "settings, metadata, created_at, updated_at, project_id, last_activity) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING";
#define CONV_COLS "c.id, c.owner, c.kind, c.ticket_id, c.brand_id, c.title, c.status, " \
    "c.settings, c.metadata, c.created_at, c.updated_at, " \
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), " \
    "c.project_id, coalesce(c.last_activity, 0)"
static const char SQL_CONV_GET[] =
    "SELECT " CONV_COLS " FROM conversations c WHERE c.id = $1 AND ($2::text IS NULL OR c.owner = $2)";
static const char SQL_CONV_COUNT[] =
    "SELECT count(*) FROM conversations WHERE owner = $1 AND ($2::text IS NULL OR kind = $2) "
    "AND ($3::text IS NULL OR project_id = $3)";
static const char SQL_CONV_LIST[] =
    "SELECT " CONV_COLS " FROM conversations c WHERE c.owner = $1 AND ($2::text IS NULL OR c.kind = $2) "
    "AND ($5::text IS NULL OR c.project_id = $5) ORDER BY c.updated_at DESC, c.id LIMIT $3 OFFSET $4";
static const char SQL_CONV_TOUCH[] =
    "UPDATE conversations SET last_activity = $2, metadata = coalesce($3, metadata), "
    "status = CASE WHEN status = 'closed' THEN status ELSE 'active' END WHERE id = $1";
static const char SQL_CONV_STATUS[] =
    "UPDATE conversations SET status = $3, updated_at = $4 "
    "WHERE id = $1 AND ($2::text IS NULL OR owner = $2)";
static const char SQL_CONV_DELETE[] =
    "DELETE FROM conversations WHERE id = $1 AND ($2::text IS NULL OR owner = $2)";

static const char SQL_MSG_ADD[] =
    "INSERT INTO messages(id, conversation_id, role, content, tokens, processing_ms, model, "
    "helpful, rating, metadata, created_at, queued) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/* GREATEST: a message whose transaction commits after a later one's does
 * not move the conversation's activity back (the UPDATE reads the row it
 * locked, so the newer value is seen). */
static const char SQL_MSG_TOUCH[] =
    "UPDATE conversations SET updated_at = GREATEST(updated_at, $2) WHERE id = $1";
#define MSG_COLS "id, conversation_id, role, content, tokens, processing_ms, model, " \
    "helpful, rating, metadata, created_at, queued"
static const char SQL_MSG_COUNT[] = "SELECT count(*) FROM messages WHERE conversation_id = $1";
static const char SQL_MSG_LIST[] =
    "SELECT " MSG_COLS " FROM messages WHERE conversation_id = $1 "
    "ORDER BY created_at, rowid LIMIT $2 OFFSET $3";
static const char SQL_MSG_CONTEXT[] =
    "SELECT " MSG_COLS " FROM (SELECT " MSG_COLS ", rowid FROM messages WHERE conversation_id = $1 "
    "ORDER BY created_at DESC, rowid DESC LIMIT $2) AS recent ORDER BY created_at, rowid";
/* the answered message sorts last whatever its time ($3 NULL: none) */
static const char SQL_MSG_CONTEXT_FOR[] =
    "SELECT " MSG_COLS " FROM (SELECT " MSG_COLS ", rowid, id IS NOT DISTINCT FROM $3 AS a "
    "FROM messages WHERE conversation_id = $1 AND (queued = 0 OR id IS NOT DISTINCT FROM $3) "
    "ORDER BY a DESC, created_at DESC, rowid DESC LIMIT $2) AS recent ORDER BY a, created_at, rowid";
static const char SQL_MSG_QUEUED[] =
    "SELECT (SELECT id FROM messages WHERE conversation_id = $1 AND queued = 1 "
    "ORDER BY created_at, rowid LIMIT 1), "
    "(SELECT count(*) FROM messages WHERE conversation_id = $1 AND queued = 1)";
static const char SQL_MSG_REACT[] =
    "UPDATE messages SET helpful = CASE WHEN $4::integer >= 0 THEN $4::integer ELSE helpful END, "
    "rating = CASE WHEN $5::integer > 0 THEN $5::integer ELSE rating END "
    "WHERE id = $3 AND conversation_id = $2 AND EXISTS "
    "(SELECT 1 FROM conversations c WHERE c.id = $2 AND ($1::text IS NULL OR c.owner = $1))";
static const char SQL_MSG_REACTION[] =
    "SELECT helpful, rating FROM messages WHERE id = $1 AND conversation_id = $2";

static const char SQL_ANSWER_GET[] = "SELECT response, tokens, model FROM answers WHERE key = $1";
/* SQLite's INSERT OR REPLACE: the whole row is the new one. */
static const char SQL_ANSWER_PUT[] =
    "INSERT INTO answers(key, kind, ticket_id, body_hash, query_norm, model, temperature, "
    "response, tokens, hits, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10) "
    "ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, ticket_id = excluded.ticket_id, "
    "body_hash = excluded.body_hash, query_norm = excluded.query_norm, model = excluded.model, "
    "temperature = excluded.temperature, response = excluded.response, tokens = excluded.tokens, "
    "hits = 0, created_at = excluded.created_at";
static const char SQL_ANSWER_DELETE[] = "DELETE FROM answers WHERE ticket_id = $1";
static const char SQL_ANSWER_NEWEST[] =
    "SELECT response FROM answers WHERE ticket_id = $1 ORDER BY created_at DESC LIMIT 1";

static int64_t get_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A new copy of a column, NULL for SQL NULL (and when out of memory:
 * callers check the columns that cannot be NULL). */
static char *get_dup(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

static void get_copy(char *dst, size_t len, const PGresult *r, int row, int col)
{
    str_copy(dst, len, PQgetvalue(r, row, col));
}

#define I64(buf, v) char buf[24]; snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(v))

/* ---- tickets ---- */

int store_pg_ticket_put(parley_db *db, const char *id, const char *body)
{
    I64(now, now_ms());
    const char *p[3] = { id, body ? body : "", now };
    return db_pg_command(db, SQL_TICKET_PUT, 3, p, "store: put ticket") < 0 ? STORE_ERR : STORE_OK;
}

int store_pg_ticket_get(parley_db *db, const char *id, char **body)
{
    *body = NULL;
    const char *p[1] = { id };
    PGresult *r = db_pg_run(db, SQL_TICKET_GET, 1, p, PGRES_TUPLES_OK, "store: get ticket");
    if (!r)
        return STORE_ERR;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(r) == 1) {
        *body = get_dup(r, 0, 0);
        rc = *body ? STORE_OK : STORE_ERR;
    }
    PQclear(r);
    return rc;
}

/* ---- conversations ---- */

int store_pg_conv_create(parley_db *db, struct conversation *c)
{
    I64(created, c->created_at);
    I64(updated, c->updated_at);
    I64(activity, c->last_activity);
    const char *p[13] = { c->id, c->owner, c->kind, c->ticket_id, c->brand_id,
                          c->title ? c->title : "", c->status,
                          c->settings ? c->settings : "{}", c->metadata ? c->metadata : "{}",
                          created, updated, c->project_id, activity };
    int64_t changed = db_pg_command(db, SQL_CONV_CREATE, 13, p, "store: create conversation");
    if (changed < 0)
        return STORE_ERR;
    return changed == 1 ? STORE_OK : STORE_EXISTS;
}

static int conv_from_row(const PGresult *r, int row, struct conversation *c)
{
    memset(c, 0, sizeof *c);
    get_copy(c->id, sizeof c->id, r, row, 0);
    get_copy(c->owner, sizeof c->owner, r, row, 1);
    get_copy(c->kind, sizeof c->kind, r, row, 2);
    c->ticket_id = get_dup(r, row, 3);
    c->brand_id = get_dup(r, row, 4);
    c->title = get_dup(r, row, 5);
    get_copy(c->status, sizeof c->status, r, row, 6);
    c->settings = get_dup(r, row, 7);
    c->metadata = get_dup(r, row, 8);
    c->created_at = get_i64(r, row, 9);
    c->updated_at = get_i64(r, row, 10);
    c->message_count = get_i64(r, row, 11);
    c->project_id = get_dup(r, row, 12);
    c->last_activity = get_i64(r, row, 13);
    if (!c->title || !c->settings || !c->metadata || (!c->project_id && !PQgetisnull(r, row, 12)) ||
        (!c->ticket_id && !PQgetisnull(r, row, 3)) || (!c->brand_id && !PQgetisnull(r, row, 4))) {
        store_conv_free(c);
        return -1;
    }
    return 0;
}

int store_pg_conv_get(parley_db *db, const char *id, const char *owner, struct conversation *out)
{
    memset(out, 0, sizeof *out);
    const char *p[2] = { id, owner };
    PGresult *r = db_pg_run(db, SQL_CONV_GET, 2, p, PGRES_TUPLES_OK, "store: get conversation");
    if (!r)
        return STORE_ERR;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(r) == 1)
        rc = conv_from_row(r, 0, out) < 0 ? STORE_ERR : STORE_OK;
    PQclear(r);
    return rc;
}

int store_pg_conv_list(parley_db *db, const char *owner, const char *kind, const char *project,
                       int limit, int offset, struct conversation **out, int *n, int64_t *total)
{
    *out = NULL;
    *n = 0;
    *total = 0;
    const char *pc[3] = { owner, kind, project };
    PGresult *r = db_pg_run(db, SQL_CONV_COUNT, 3, pc, PGRES_TUPLES_OK, "store: count conversations");
    if (!r)
        return STORE_ERR;
    *total = PQntuples(r) == 1 ? get_i64(r, 0, 0) : 0;
    PQclear(r);
    if (limit <= 0)
        return STORE_OK;
    I64(lim, limit);
    I64(off, offset < 0 ? 0 : offset);
    const char *p[5] = { owner, kind, lim, off, project };
    if (!(r = db_pg_run(db, SQL_CONV_LIST, 5, p, PGRES_TUPLES_OK, "store: list conversations")))
        return STORE_ERR;
    int rows = PQntuples(r);
    struct conversation *v = calloc((size_t)(rows > 0 ? rows : 1), sizeof *v);
    if (!v) {
        PQclear(r);
        return STORE_ERR;
    }
    for (int i = 0; i < rows; i++)
        if (conv_from_row(r, i, &v[i]) < 0) {
            store_convs_free(v, i);
            PQclear(r);
            return STORE_ERR;
        }
    PQclear(r);
    *out = v;
    *n = rows;
    return STORE_OK;
}

int store_pg_conv_touch(parley_db *db, const char *id, const char *metadata)
{
    I64(now, now_ms());
    const char *p[3] = { id, now, metadata };
    int64_t changed = db_pg_command(db, SQL_CONV_TOUCH, 3, p, "store: touch conversation");
    if (changed < 0)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

int store_pg_conv_set_status(parley_db *db, const char *id, const char *owner, const char *status)
{
    I64(now, now_ms());
    const char *p[4] = { id, owner, status, now };
    int64_t changed = db_pg_command(db, SQL_CONV_STATUS, 4, p, "store: set conversation status");
    if (changed < 0)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

/* One statement: the conversation and (ON DELETE CASCADE) its messages go
 * together, inside the caller's transaction if there is one. */
int store_pg_conv_delete(parley_db *db, const char *id, const char *owner)
{
    const char *p[2] = { id, owner };
    int64_t changed = db_pg_command(db, SQL_CONV_DELETE, 2, p, "store: delete conversation");
    if (changed < 0)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

/* ---- messages ---- */

int store_pg_msg_add_tx(parley_db *db, struct message *m)
{
    I64(tokens, m->tokens);
    I64(pms, m->processing_ms);
    I64(helpful, m->helpful);
    I64(rating, m->rating);
    I64(created, m->created_at);
    const char *p[12] = { m->id, m->conversation_id, m->role, m->content ? m->content : "",
                          m->tokens >= 0 ? tokens : NULL, m->processing_ms >= 0 ? pms : NULL,
                          m->model, m->helpful >= 0 ? helpful : NULL,
                          m->rating > 0 ? rating : NULL, m->metadata ? m->metadata : "{}",
                          created, m->queued ? "1" : "0" };
    if (db_pg_command(db, SQL_MSG_ADD, 12, p, "store: add message") < 0)
        return STORE_ERR;
    const char *t[2] = { m->conversation_id, created };
    return db_pg_command(db, SQL_MSG_TOUCH, 2, t, "store: touch conversation") < 0 ? STORE_ERR : STORE_OK;
}

static int msg_from_row(const PGresult *r, int row, struct message *m)
{
    store_msg_init(m);
    get_copy(m->id, sizeof m->id, r, row, 0);
    get_copy(m->conversation_id, sizeof m->conversation_id, r, row, 1);
    get_copy(m->role, sizeof m->role, r, row, 2);
    m->content = get_dup(r, row, 3);
    if (!PQgetisnull(r, row, 4))
        m->tokens = get_i64(r, row, 4);
    if (!PQgetisnull(r, row, 5))
        m->processing_ms = get_i64(r, row, 5);
    m->model = get_dup(r, row, 6);
    if (!PQgetisnull(r, row, 7))
        m->helpful = (int)get_i64(r, row, 7);
    if (!PQgetisnull(r, row, 8))
        m->rating = (int)get_i64(r, row, 8);
    m->metadata = get_dup(r, row, 9);
    m->created_at = get_i64(r, row, 10);
    m->queued = (int)get_i64(r, row, 11);
    if (!m->content || !m->metadata || (!m->model && !PQgetisnull(r, row, 6))) {
        free(m->content);
        free(m->model);
        free(m->metadata);
        return -1;
    }
    return 0;
}

/* The rows of r as messages: *out new array (store_msgs_free), *n. */
static int collect_msgs(PGresult *r, struct message **out, int *n)
{
    int rows = PQntuples(r);
    struct message *v = calloc((size_t)(rows > 0 ? rows : 1), sizeof *v);
    if (!v) {
        PQclear(r);
        return STORE_ERR;
    }
    for (int i = 0; i < rows; i++)
        if (msg_from_row(r, i, &v[i]) < 0) {
            store_msgs_free(v, i);
            PQclear(r);
            return STORE_ERR;
        }
    PQclear(r);
    *out = v;
    *n = rows;
    return STORE_OK;
}

int store_pg_msg_list(parley_db *db, const char *conv_id, int limit, int offset,
                      struct message **out, int *n, int64_t *total)
{
    *out = NULL;
    *n = 0;
    const char *pc[1] = { conv_id };
    PGresult *r = db_pg_run(db, SQL_MSG_COUNT, 1, pc, PGRES_TUPLES_OK, "store: count messages");
    if (!r)
        return STORE_ERR;
    *total = PQntuples(r) == 1 ? get_i64(r, 0, 0) : 0;
    PQclear(r);
    if (limit <= 0)
        return STORE_OK;
    I64(lim, limit);
    I64(off, offset < 0 ? 0 : offset);
    const char *p[3] = { conv_id, lim, off };
    if (!(r = db_pg_run(db, SQL_MSG_LIST, 3, p, PGRES_TUPLES_OK, "store: list messages")))
        return STORE_ERR;
    return collect_msgs(r, out, n);
}

int store_pg_msg_context(parley_db *db, const char *conv_id, int last,
                         struct message **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (last <= 0)
        return STORE_OK;
    I64(lim, last);
    const char *p[2] = { conv_id, lim };
    PGresult *r = db_pg_run(db, SQL_MSG_CONTEXT, 2, p, PGRES_TUPLES_OK, "store: message context");
    if (!r)
        return STORE_ERR;
    return collect_msgs(r, out, n);
}

int store_pg_msg_context_for(parley_db *db, const char *conv_id, const char *answering, int last,
                             struct message **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (last <= 0)
        return STORE_OK;
    I64(lim, last);
    const char *p[3] = { conv_id, lim, answering };
    PGresult *r = db_pg_run(db, SQL_MSG_CONTEXT_FOR, 3, p, PGRES_TUPLES_OK, "store: message context");
    if (!r)
        return STORE_ERR;
    return collect_msgs(r, out, n);
}

int store_pg_msg_queued(parley_db *db, const char *conv_id, char first_id[64], int64_t *count)
{
    const char *p[1] = { conv_id };
    PGresult *r = db_pg_run(db, SQL_MSG_QUEUED, 1, p, PGRES_TUPLES_OK, "store: queued messages");
    if (!r)
        return STORE_ERR;
    if (PQntuples(r) == 1) {
        if (first_id)
            get_copy(first_id, 64, r, 0, 0);
        if (count)
            *count = get_i64(r, 0, 1);
    }
    PQclear(r);
    return STORE_OK;
}

int store_pg_msg_react(parley_db *db, const char *owner, const char *conv_id,
                       const char *msg_id, int helpful, int rating)
{
    I64(h, helpful);
    I64(rt, rating);
    const char *p[5] = { owner, conv_id, msg_id, h, rt };
    int64_t changed = db_pg_command(db, SQL_MSG_REACT, 5, p, "store: react to message");
    if (changed < 0)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

int store_pg_msg_reaction_get(parley_db *db, const char *conv_id, const char *msg_id,
                              int *helpful, int *rating)
{
    const char *p[2] = { msg_id, conv_id };
    PGresult *r = db_pg_run(db, SQL_MSG_REACTION, 2, p, PGRES_TUPLES_OK, "store: read reactions");
    if (!r)
        return STORE_ERR;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(r) == 1) {
        *helpful = PQgetisnull(r, 0, 0) ? -1 : (int)get_i64(r, 0, 0);
        *rating = PQgetisnull(r, 0, 1) ? 0 : (int)get_i64(r, 0, 1);
        rc = STORE_OK;
    }
    PQclear(r);
    return rc;
}

/* ---- answer cache ---- */

int store_pg_answer_get(parley_db *db, const char *key, char **response, int64_t *tokens,
                        char **model)
{
    *response = NULL;
    if (model)
        *model = NULL;
    if (tokens)
        *tokens = -1;
    const char *p[1] = { key };
    PGresult *r = db_pg_run(db, SQL_ANSWER_GET, 1, p, PGRES_TUPLES_OK, "store: get answer");
    if (!r)
        return STORE_ERR;
    int rc = STORE_NOT_FOUND;
    if (PQntuples(r) == 1) {
        *response = get_dup(r, 0, 0);
        if (tokens && !PQgetisnull(r, 0, 1))
            *tokens = get_i64(r, 0, 1);
        if (model)
            *model = get_dup(r, 0, 2);
        rc = *response ? STORE_OK : STORE_ERR;
    }
    PQclear(r);
    return rc;
}

int store_pg_answer_put_tx(parley_db *db, const struct answer *a)
{
    char temp[40];
    snprintf(temp, sizeof temp, "%.17g", a->temperature);
    I64(tokens, a->tokens);
    I64(now, now_ms());
    const char *p[10] = { a->key, a->kind, a->ticket_id, a->body_hash, a->query_norm,
                          a->model ? a->model : "", a->temperature >= 0 ? temp : NULL,
                          a->response ? a->response : "", a->tokens >= 0 ? tokens : NULL, now };
    return db_pg_command(db, SQL_ANSWER_PUT, 10, p, "store: put answer") < 0 ? STORE_ERR : STORE_OK;
}

int store_pg_answer_delete_ticket(parley_db *db, const char *ticket_id)
{
    const char *p[1] = { ticket_id };
    int64_t changed = db_pg_command(db, SQL_ANSWER_DELETE, 1, p, "store: delete answers");
    return changed < 0 ? -1 : changed > INT32_MAX ? INT32_MAX : (int)changed;
}

int store_pg_answer_ticket_exists(parley_db *db, const char *ticket_id, char **response)
{
    if (response)
        *response = NULL;
    const char *p[1] = { ticket_id };
    PGresult *r = db_pg_run(db, SQL_ANSWER_NEWEST, 1, p, PGRES_TUPLES_OK, "store: newest answer");
    if (!r)
        return -1;
    int rc = 0;
    if (PQntuples(r) == 1) {
        rc = 1;
        if (response)
            *response = get_dup(r, 0, 0);
    }
    PQclear(r);
    return rc;
}

/* The text is libpq's copy in the result (NUL-terminated), handed to fn in
 * place and released after it returns. */
int store_pg_answer_peek(parley_db *db, const char *ticket_id, store_text_fn fn, void *ud,
                         int *fn_rc)
{
    const char *p[1] = { ticket_id };
    PGresult *r = db_pg_run(db, SQL_ANSWER_NEWEST, 1, p, PGRES_TUPLES_OK, "store: peek answer");
    if (!r)
        return STORE_ERR;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return STORE_NOT_FOUND;
    }
    int v = fn(ud, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
    if (fn_rc)
        *fn_rc = v;
    PQclear(r);
    return STORE_OK;
}
