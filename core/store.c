/* store.c — tickets, conversations, messages, answer cache (see store.h).
 * Every statement is a literal prepared once per connection with bound
 * parameters; nothing is ever built from input. Each public function that
 * touches storage dispatches on the backend: a PostgreSQL connection
 * (db_pg_conn) goes to storage/pg/store.c, after the backend-neutral part
 * (defaults, generated ids, argument checks) ran here. */
#include "store.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/store.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEP_ONE(st) (sqlite3_step(st))

static int done_or_err(sqlite3_stmt *st, int rc)
{
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? STORE_OK : STORE_ERR;
}

static void copy_col(char *dst, size_t len, sqlite3_stmt *st, int col)
{
    str_copy(dst, len, (const char *)sqlite3_column_text(st, col));
}

/* ---- tickets ---- */

int store_ticket_put(parley_db *db, const char *id, const char *body)
{
    if (db_pg_conn(db))
        return store_pg_ticket_put(db, id, body);
    static const char sql[] =
        "INSERT INTO tickets(id, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) "
        "ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at "
        "WHERE body <> excluded.body";
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, body ? body : "");
    sqlite3_bind_int64(st, 3, now_ms());
    return done_or_err(st, STEP_ONE(st));
}

int store_ticket_get(parley_db *db, const char *id, char **body)
{
    *body = NULL;
    if (db_pg_conn(db))
        return store_pg_ticket_get(db, id, body);
    sqlite3_stmt *st = db_stmt(db, "SELECT body FROM tickets WHERE id = ?");
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *body = db_col_strdup(st, 0);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return *body ? STORE_OK : STORE_ERR;
    return rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERR;
}

/* ---- conversations ---- */

void store_conv_free(struct conversation *c)
{
    if (!c)
        return;
    free(c->ticket_id);
    free(c->brand_id);
    free(c->title);
    free(c->settings);
    free(c->metadata);
    free(c->project_id);
    c->ticket_id = c->brand_id = c->title = c->settings = c->metadata = c->project_id = NULL;
}

void store_convs_free(struct conversation *c, int n)
{
    if (!c)
        return;
    for (int i = 0; i < n; i++)
        store_conv_free(&c[i]);
    free(c);
}

int store_conv_create(parley_db *db, struct conversation *c)
{
    static const char sql[] =
        "INSERT INTO conversations(id, owner, kind, ticket_id, brand_id, title, status, "
        "settings, metadata, created_at, updated_at, project_id, last_activity) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING";
    if (!c->id[0] && uuid_v4(c->id) < 0)
        return STORE_ERR;
    if (!c->kind[0])
        str_copy(c->kind, sizeof c->kind, "chat");
    if (!c->status[0])
        str_copy(c->status, sizeof c->status, "active");
    c->created_at = c->updated_at = c->last_activity = now_ms();
    if (db_pg_conn(db))
        return store_pg_conv_create(db, c);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, c->id);
    db_bind_text(st, 2, c->owner);
    db_bind_text(st, 3, c->kind);
    db_bind_text(st, 4, c->ticket_id);
    db_bind_text(st, 5, c->brand_id);
    db_bind_text(st, 6, c->title ? c->title : "");
    db_bind_text(st, 7, c->status);
    db_bind_text(st, 8, c->settings ? c->settings : "{}");
    db_bind_text(st, 9, c->metadata ? c->metadata : "{}");
    sqlite3_bind_int64(st, 10, c->created_at);
    sqlite3_bind_int64(st, 11, c->updated_at);
    db_bind_text(st, 12, c->project_id);
    sqlite3_bind_int64(st, 13, c->last_activity);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return STORE_ERR;
    return changed == 1 ? STORE_OK : STORE_EXISTS;
}

#define CONV_COLS "c.id, c.owner, c.kind, c.ticket_id, c.brand_id, c.title, c.status, " \
    "c.settings, c.metadata, c.created_at, c.updated_at, " \
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id), " \
    "c.project_id, coalesce(c.last_activity, 0)"

static int conv_from_row(sqlite3_stmt *st, struct conversation *c)
{
    memset(c, 0, sizeof *c);
    copy_col(c->id, sizeof c->id, st, 0);
    copy_col(c->owner, sizeof c->owner, st, 1);
    copy_col(c->kind, sizeof c->kind, st, 2);
    c->ticket_id = db_col_strdup(st, 3);
    c->brand_id = db_col_strdup(st, 4);
    c->title = db_col_strdup(st, 5);
    copy_col(c->status, sizeof c->status, st, 6);
    c->settings = db_col_strdup(st, 7);
    c->metadata = db_col_strdup(st, 8);
    c->created_at = sqlite3_column_int64(st, 9);
    c->updated_at = sqlite3_column_int64(st, 10);
    c->message_count = sqlite3_column_int64(st, 11);
    c->project_id = db_col_strdup(st, 12);
    c->last_activity = sqlite3_column_int64(st, 13);
    if (!c->title || !c->settings || !c->metadata ||
        (!c->project_id && sqlite3_column_type(st, 12) != SQLITE_NULL)) {
        store_conv_free(c);
        return -1;
    }
    return 0;
}

int store_conv_get(parley_db *db, const char *id, const char *owner, struct conversation *out)
{
    static const char sql[] =
        "SELECT " CONV_COLS " FROM conversations c WHERE c.id = ?1 AND (?2 IS NULL OR c.owner = ?2)";
    memset(out, 0, sizeof *out);
    if (db_pg_conn(db))
        return store_pg_conv_get(db, id, owner, out);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, owner);
    int rc = sqlite3_step(st), r;
    if (rc == SQLITE_ROW)
        r = conv_from_row(st, out);
    else
        r = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERR;
    sqlite3_reset(st);
    return r;
}

int store_conv_list_project(parley_db *db, const char *owner, const char *kind,
                            const char *project, int limit, int offset,
                            struct conversation **out, int *n, int64_t *total)
{
    static const char sql_count[] =
        "SELECT count(*) FROM conversations WHERE owner = ?1 AND (?2 IS NULL OR kind = ?2) "
        "AND (?3 IS NULL OR project_id = ?3)";
    static const char sql[] =
        "SELECT " CONV_COLS " FROM conversations c WHERE c.owner = ?1 AND (?2 IS NULL OR c.kind = ?2) "
        "AND (?5 IS NULL OR c.project_id = ?5) ORDER BY c.updated_at DESC, c.id LIMIT ?3 OFFSET ?4";
    *out = NULL;
    *n = 0;
    *total = 0;
    if (db_pg_conn(db))
        return store_pg_conv_list(db, owner, kind, project, limit, offset, out, n, total);
    sqlite3_stmt *st = db_stmt(db, sql_count);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, owner);
    db_bind_text(st, 2, kind);
    db_bind_text(st, 3, project);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return STORE_ERR;
    }
    *total = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (limit <= 0)
        return STORE_OK;
    st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, owner);
    db_bind_text(st, 2, kind);
    sqlite3_bind_int(st, 3, limit);
    sqlite3_bind_int(st, 4, offset < 0 ? 0 : offset);
    db_bind_text(st, 5, project);
    struct conversation *v = calloc((size_t)limit, sizeof *v);
    if (!v) {
        sqlite3_reset(st);
        return STORE_ERR;
    }
    int k = 0, rc;
    while (k < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (conv_from_row(st, &v[k]) < 0)
            break;
        k++;
    }
    sqlite3_reset(st);
    *out = v;
    *n = k;
    return STORE_OK;
}

int store_conv_list(parley_db *db, const char *owner, const char *kind, int limit, int offset,
                    struct conversation **out, int *n, int64_t *total)
{
    return store_conv_list_project(db, owner, kind, NULL, limit, offset, out, n, total);
}

int store_conv_touch(parley_db *db, const char *id, const char *metadata)
{
    static const char sql[] =
        "UPDATE conversations SET last_activity = ?2, metadata = coalesce(?3, metadata), "
        "status = CASE WHEN status = 'closed' THEN status ELSE 'active' END WHERE id = ?1";
    if (db_pg_conn(db))
        return store_pg_conv_touch(db, id, metadata);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms());
    db_bind_text(st, 3, metadata);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

const char *store_conv_status(const struct conversation *c, int64_t now, int64_t idle_ms)
{
    if (!strcmp(c->status, "closed"))
        return "closed";
    if (!strcmp(c->status, "idle"))
        return "idle";
    int64_t last = c->last_activity > 0 ? c->last_activity : c->created_at;
    return idle_ms > 0 && last + idle_ms < now ? "idle" : "active";
}

int store_conv_set_status(parley_db *db, const char *id, const char *owner, const char *status)
{
    static const char sql[] =
        "UPDATE conversations SET status = ?3, updated_at = ?4 "
        "WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)";
    if (db_pg_conn(db))
        return store_pg_conv_set_status(db, id, owner, status);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, owner);
    db_bind_text(st, 3, status);
    sqlite3_bind_int64(st, 4, now_ms());
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

int store_conv_delete(parley_db *db, const char *id, const char *owner)
{
    static const char sql[] = "DELETE FROM conversations WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)";
    if (db_pg_conn(db))
        return store_pg_conv_delete(db, id, owner);
    if (db_begin(db) < 0)
        return STORE_ERR;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st) {
        db_rollback(db);
        return STORE_ERR;
    }
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, owner);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        db_rollback(db);
        return STORE_ERR;
    }
    if (db_commit(db) < 0)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

/* ---- messages ---- */

void store_msg_init(struct message *m)
{
    memset(m, 0, sizeof *m);
    m->tokens = -1;
    m->processing_ms = -1;
    m->helpful = -1;
}

static void msg_free(struct message *m)
{
    free(m->content);
    free(m->model);
    free(m->metadata);
}

void store_msgs_free(struct message *m, int n)
{
    if (!m)
        return;
    for (int i = 0; i < n; i++)
        msg_free(&m[i]);
    free(m);
}

int store_msg_add_tx(parley_db *db, struct message *m)
{
    static const char sql[] =
        "INSERT INTO messages(id, conversation_id, role, content, tokens, processing_ms, model, "
        "helpful, rating, metadata, created_at, queued) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    /* max(): a message committed after a newer one does not move the
     * conversation's activity back (as on PostgreSQL, where two nodes'
     * adds interleave) */
    static const char touch[] = "UPDATE conversations SET updated_at = max(updated_at, ?2) WHERE id = ?1";
    if (!m->id[0] && uuid_v4(m->id) < 0)
        return STORE_ERR;
    if (!m->created_at)
        m->created_at = now_ms();
    if (db_pg_conn(db))
        return store_pg_msg_add_tx(db, m);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, m->id);
    db_bind_text(st, 2, m->conversation_id);
    db_bind_text(st, 3, m->role);
    db_bind_text(st, 4, m->content ? m->content : "");
    if (m->tokens >= 0)
        sqlite3_bind_int64(st, 5, m->tokens);
    if (m->processing_ms >= 0)
        sqlite3_bind_int64(st, 6, m->processing_ms);
    db_bind_text(st, 7, m->model);
    if (m->helpful >= 0)
        sqlite3_bind_int(st, 8, m->helpful);
    if (m->rating > 0)
        sqlite3_bind_int(st, 9, m->rating);
    db_bind_text(st, 10, m->metadata ? m->metadata : "{}");
    sqlite3_bind_int64(st, 11, m->created_at);
    sqlite3_bind_int(st, 12, m->queued ? 1 : 0);
    if (done_or_err(st, sqlite3_step(st)) < 0)
        return STORE_ERR;
    st = db_stmt(db, touch);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, m->conversation_id);
    sqlite3_bind_int64(st, 2, m->created_at);
    return done_or_err(st, sqlite3_step(st));
}

int store_msg_add(parley_db *db, struct message *m)
{
    if (db_begin(db) < 0)
        return STORE_ERR;
    if (store_msg_add_tx(db, m) < 0) {
        db_rollback(db);
        return STORE_ERR;
    }
    return db_commit(db);
}

#define MSG_COLS "id, conversation_id, role, content, tokens, processing_ms, model, " \
    "helpful, rating, metadata, created_at, queued"

static int msg_from_row(sqlite3_stmt *st, struct message *m)
{
    store_msg_init(m);
    copy_col(m->id, sizeof m->id, st, 0);
    copy_col(m->conversation_id, sizeof m->conversation_id, st, 1);
    copy_col(m->role, sizeof m->role, st, 2);
    m->content = db_col_strdup(st, 3);
    if (sqlite3_column_type(st, 4) != SQLITE_NULL)
        m->tokens = sqlite3_column_int64(st, 4);
    if (sqlite3_column_type(st, 5) != SQLITE_NULL)
        m->processing_ms = sqlite3_column_int64(st, 5);
    m->model = db_col_strdup(st, 6);
    if (sqlite3_column_type(st, 7) != SQLITE_NULL)
        m->helpful = sqlite3_column_int(st, 7);
    if (sqlite3_column_type(st, 8) != SQLITE_NULL)
        m->rating = sqlite3_column_int(st, 8);
    m->metadata = db_col_strdup(st, 9);
    m->created_at = sqlite3_column_int64(st, 10);
    m->queued = sqlite3_column_int(st, 11);
    if (!m->content || !m->metadata) {
        msg_free(m);
        return -1;
    }
    return 0;
}

static int collect_msgs(sqlite3_stmt *st, int cap, struct message **out, int *n)
{
    struct message *v = calloc(cap > 0 ? (size_t)cap : 1, sizeof *v);
    if (!v) {
        sqlite3_reset(st);
        return -1;
    }
    int k = 0, rc = SQLITE_DONE;
    while (k < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (msg_from_row(st, &v[k]) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        k++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_msgs_free(v, k);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

int store_msg_list(parley_db *db, const char *conv_id, int limit, int offset,
                   struct message **out, int *n, int64_t *total)
{
    static const char sql_count[] = "SELECT count(*) FROM messages WHERE conversation_id = ?";
    static const char sql[] =
        "SELECT " MSG_COLS " FROM messages WHERE conversation_id = ? "
        "ORDER BY created_at, rowid LIMIT ? OFFSET ?";
    *out = NULL;
    *n = 0;
    if (db_pg_conn(db))
        return store_pg_msg_list(db, conv_id, limit, offset, out, n, total);
    sqlite3_stmt *st = db_stmt(db, sql_count);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, conv_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return STORE_ERR;
    }
    *total = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (limit <= 0)
        return STORE_OK;
    st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, conv_id);
    sqlite3_bind_int(st, 2, limit);
    sqlite3_bind_int(st, 3, offset < 0 ? 0 : offset);
    return collect_msgs(st, limit, out, n);
}

int store_msg_context(parley_db *db, const char *conv_id, int last,
                      struct message **out, int *n)
{
    static const char sql[] =
        "SELECT * FROM (SELECT " MSG_COLS ", rowid AS r FROM messages WHERE conversation_id = ? "
        "ORDER BY created_at DESC, rowid DESC LIMIT ?) ORDER BY created_at, r";
    *out = NULL;
    *n = 0;
    if (db_pg_conn(db))
        return store_pg_msg_context(db, conv_id, last, out, n);
    if (last <= 0)
        return STORE_OK;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, conv_id);
    sqlite3_bind_int(st, 2, last);
    return collect_msgs(st, last, out, n);
}

int store_msg_context_for(parley_db *db, const char *conv_id, const char *answering, int last,
                          struct message **out, int *n)
{
    /* the answered message sorts last whatever its time (?3 NULL: none) */
    static const char sql[] =
        "SELECT * FROM (SELECT " MSG_COLS ", rowid AS r, id = ?3 AS a FROM messages "
        "WHERE conversation_id = ?1 AND (queued = 0 OR id = ?3) "
        "ORDER BY id = ?3 DESC, created_at DESC, rowid DESC LIMIT ?2) ORDER BY a, created_at, r";
    *out = NULL;
    *n = 0;
    if (db_pg_conn(db))
        return store_pg_msg_context_for(db, conv_id, answering, last, out, n);
    if (last <= 0)
        return STORE_OK;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, conv_id);
    sqlite3_bind_int(st, 2, last);
    db_bind_text(st, 3, answering);
    return collect_msgs(st, last, out, n);
}

int store_msg_queued(parley_db *db, const char *conv_id, char first_id[64], int64_t *count)
{
    static const char sql[] =
        "SELECT (SELECT id FROM messages WHERE conversation_id = ?1 AND queued = 1 "
        "ORDER BY created_at, rowid LIMIT 1), "
        "(SELECT count(*) FROM messages WHERE conversation_id = ?1 AND queued = 1)";
    if (first_id)
        first_id[0] = '\0';
    if (count)
        *count = 0;
    if (db_pg_conn(db))
        return store_pg_msg_queued(db, conv_id, first_id, count);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, conv_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (first_id)
            copy_col(first_id, 64, st, 0);
        if (count)
            *count = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? STORE_OK : STORE_ERR;
}

int store_msg_react(parley_db *db, const char *owner, const char *conv_id,
                    const char *msg_id, int helpful, int rating)
{
    static const char sql[] =
        "UPDATE messages SET helpful = CASE WHEN ?4 >= 0 THEN ?4 ELSE helpful END, "
        "rating = CASE WHEN ?5 > 0 THEN ?5 ELSE rating END "
        "WHERE id = ?3 AND conversation_id = ?2 AND EXISTS "
        "(SELECT 1 FROM conversations c WHERE c.id = ?2 AND (?1 IS NULL OR c.owner = ?1))";
    if (rating < 0 || rating > 5 || helpful < -1 || helpful > 1)
        return STORE_ERR;
    if (db_pg_conn(db))
        return store_pg_msg_react(db, owner, conv_id, msg_id, helpful, rating);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, owner);
    db_bind_text(st, 2, conv_id);
    db_bind_text(st, 3, msg_id);
    sqlite3_bind_int(st, 4, helpful);
    sqlite3_bind_int(st, 5, rating);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return STORE_ERR;
    return changed ? STORE_OK : STORE_NOT_FOUND;
}

/* ---- answer cache ---- */

void answer_key_ticket(struct answer *a, const char *ticket_id, const char *body, char hash[65])
{
    memset(a, 0, sizeof *a);
    sha256_hex(body ? body : "", body ? strlen(body) : 0, hash);
    snprintf(a->key, sizeof a->key, "ticket:%.96s:%s", ticket_id, hash);
    str_copy(a->kind, sizeof a->kind, "ticket");
    a->ticket_id = ticket_id;
    a->body_hash = hash;
    a->temperature = -1;
    a->tokens = -1;
}

char *answer_key_query(struct answer *a, const char *query, const char *model, double temperature)
{
    memset(a, 0, sizeof *a);
    size_t len = strlen(query);
    char *norm = malloc(len + 1), *o = norm;
    if (!norm)
        return NULL;
    int space = 0;
    for (const unsigned char *p = (const unsigned char *)query; *p; p++) {
        if (isspace(*p)) {
            space = o != norm;
            continue;
        }
        if (space)
            *o++ = ' ';
        space = 0;
        *o++ = (char)(*p < 128 ? tolower(*p) : *p);
    }
    *o = '\0';
    /* hash of norm, NUL, model, NUL, temperature printed to 3 decimals */
    size_t mlen = model ? strlen(model) : 0, nlen = strlen(norm);
    char temp[32];
    int tl = snprintf(temp, sizeof temp, "%.3f", temperature < 0 ? -1.0 : temperature);
    char *buf = malloc(nlen + mlen + (size_t)tl + 2);
    if (!buf) {
        free(norm);
        return NULL;
    }
    memcpy(buf, norm, nlen);
    buf[nlen] = '\0';
    if (mlen)
        memcpy(buf + nlen + 1, model, mlen);
    buf[nlen + 1 + mlen] = '\0';
    memcpy(buf + nlen + 2 + mlen, temp, (size_t)tl);
    char hash[65];
    sha256_hex(buf, nlen + mlen + (size_t)tl + 2, hash);
    free(buf);
    snprintf(a->key, sizeof a->key, "query:%s", hash);
    str_copy(a->kind, sizeof a->kind, "query");
    a->query_norm = norm;
    a->model = model;
    a->temperature = temperature;
    a->tokens = -1;
    return norm;
}

int store_answer_get(parley_db *db, const char *key, char **response, int64_t *tokens, char **model)
{
    if (db_pg_conn(db))
        return store_pg_answer_get(db, key, response, tokens, model);
    static const char sql[] = "SELECT response, tokens, model FROM answers WHERE key = ?";
    *response = NULL;
    if (model)
        *model = NULL;
    if (tokens)
        *tokens = -1;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, key);
    int rc = sqlite3_step(st), r = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERR;
    if (rc == SQLITE_ROW) {
        *response = db_col_strdup(st, 0);
        if (tokens && sqlite3_column_type(st, 1) != SQLITE_NULL)
            *tokens = sqlite3_column_int64(st, 1);
        if (model)
            *model = db_col_strdup(st, 2);
        r = *response ? STORE_OK : STORE_ERR;
    }
    sqlite3_reset(st);
    return r;
}

int store_answer_put_tx(parley_db *db, const struct answer *a)
{
    static const char sql[] =
        "INSERT OR REPLACE INTO answers(key, kind, ticket_id, body_hash, query_norm, model, "
        "temperature, response, tokens, hits, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)";
    if (db_pg_conn(db))
        return store_pg_answer_put_tx(db, a);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, a->key);
    db_bind_text(st, 2, a->kind);
    db_bind_text(st, 3, a->ticket_id);
    db_bind_text(st, 4, a->body_hash);
    db_bind_text(st, 5, a->query_norm);
    db_bind_text(st, 6, a->model ? a->model : "");
    if (a->temperature >= 0)
        sqlite3_bind_double(st, 7, a->temperature);
    db_bind_text(st, 8, a->response ? a->response : "");
    if (a->tokens >= 0)
        sqlite3_bind_int64(st, 9, a->tokens);
    sqlite3_bind_int64(st, 10, now_ms());
    int rc = done_or_err(st, sqlite3_step(st));
    db_answer_changed(db, a->ticket_id);    /* at the commit: the versions of db.h */
    return rc;
}

int store_answer_delete_ticket(parley_db *db, const char *ticket_id)
{
    if (db_pg_conn(db))
        return store_pg_answer_delete_ticket(db, ticket_id);
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM answers WHERE ticket_id = ?");
    if (!st)
        return -1;
    db_bind_text(st, 1, ticket_id);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    db_answer_changed(db, ticket_id);       /* now, or at the commit (db.h) */
    return rc == SQLITE_DONE ? changed : -1;
}

int store_answer_ticket_exists(parley_db *db, const char *ticket_id, char **response)
{
    static const char sql[] =
        "SELECT response FROM answers WHERE ticket_id = ? ORDER BY created_at DESC LIMIT 1";
    if (db_pg_conn(db))
        return store_pg_answer_ticket_exists(db, ticket_id, response);
    if (response)
        *response = NULL;
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    db_bind_text(st, 1, ticket_id);
    int rc = sqlite3_step(st), r = rc == SQLITE_DONE ? 0 : -1;
    if (rc == SQLITE_ROW) {
        r = 1;
        if (response)
            *response = db_col_strdup(st, 0);
    }
    sqlite3_reset(st);
    return r;
}

int store_answer_peek(parley_db *db, const char *ticket_id, store_text_fn fn, void *ud,
                      int *fn_rc)
{
    static const char sql[] =
        "SELECT response FROM answers WHERE ticket_id = ? ORDER BY created_at DESC LIMIT 1";
    if (db_pg_conn(db))
        return store_pg_answer_peek(db, ticket_id, fn, ud, fn_rc);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    sqlite3_bind_text(st, 1, ticket_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);          /* ticket_id was bound SQLITE_STATIC */
        return step == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERR;
    }
    const char *text = (const char *)sqlite3_column_text(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    if (!text) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {     /* out of memory */
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return STORE_ERR;
        }
        text = "";
        len = 0;
    }
    int r = fn(ud, text, len);
    if (fn_rc)
        *fn_rc = r;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return STORE_OK;
}

int store_msg_reaction_get(parley_db *db, const char *conv_id, const char *msg_id,
                           int *helpful, int *rating)
{
    static const char sql[] =
        "SELECT helpful, rating FROM messages WHERE id = ?1 AND conversation_id = ?2";
    if (db_pg_conn(db))
        return store_pg_msg_reaction_get(db, conv_id, msg_id, helpful, rating);
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return STORE_ERR;
    db_bind_text(st, 1, msg_id);
    db_bind_text(st, 2, conv_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *helpful = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 0);
        *rating = sqlite3_column_type(st, 1) == SQLITE_NULL ? 0 : sqlite3_column_int(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? STORE_OK : rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERR;
}
