/* storage/pg/housekeep.c — housekeep.h on PostgreSQL (contracts there;
 * housekeep.c dispatches here when db_pg_conn(db) is not NULL). The same
 * rows as the SQLite statements, every value bound (db_pg_run: each
 * statement prepared once per session). ANALYZE, which cannot be
 * prepared, is a constant text run as is. */
#include "storage/pg/pg.h"
#include "storage/pg/housekeep_pg.h"
#include "housekeep.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_TICKETS[] =
    "SELECT t.id, octet_length(t.body), t.created_at, t.updated_at, "
    "(SELECT count(*) FROM answers a WHERE a.ticket_id = t.id) "
    "FROM tickets t ORDER BY t.updated_at DESC, t.id COLLATE \"C\" LIMIT $1 OFFSET $2";
static const char SQL_TICKET[] = "SELECT id, body, created_at, updated_at FROM tickets WHERE id = $1";
static const char SQL_TICKET_ANSWERS[] =
    "SELECT key, model, coalesce(tokens, -1), hits, octet_length(response), created_at FROM answers "
    "WHERE ticket_id = $1 ORDER BY created_at DESC, key COLLATE \"C\"";
static const char SQL_TICKET_JOBS[] =
    "SELECT id, state, created_at, coalesce(finished_at, -1), error FROM jobs "
    "WHERE channel = 'ticket:' || $1 ORDER BY id DESC LIMIT 20";
static const char SQL_TICKET_EVENTS[] =
    "SELECT count(*) FROM events WHERE channel = 'ticket:' || $1";
static const char SQL_SESSIONS[] =
    "SELECT c.id, c.owner, c.kind, c.title, c.status, c.created_at, c.updated_at, "
    "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
    "FROM conversations c WHERE c.kind IN ('chat', 'sse') AND ($1::text IS NULL OR c.owner = $1) "
    "ORDER BY c.updated_at DESC, c.id COLLATE \"C\" LIMIT $2";
static const char SQL_SESSIONS_PURGE[] =
    "DELETE FROM conversations WHERE kind IN ('chat', 'sse') AND updated_at < $2::bigint "
    "AND ($1::text IS NULL OR owner = $1)";

static int64_t num(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int hk_pg_tickets_list(parley_db *db, int limit, int offset, json_t *arr)
{
    char lim[16], off[16];
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(off, sizeof off, "%d", offset);
    const char *params[2] = { lim, off };
    PGresult *r = db_pg_run(db, SQL_TICKETS, 2, params, PGRES_TUPLES_OK, "housekeep: tickets");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *o = hk_ticket_row(PQgetvalue(r, i, 0), num(r, i, 1), num(r, i, 2), num(r, i, 3),
                                  num(r, i, 4));
        if (!o || json_array_append_new(arr, o) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}

int hk_pg_ticket_show(parley_db *db, const char *id, json_t **out)
{
    const char *params[1] = { id };
    PGresult *r = db_pg_run(db, SQL_TICKET, 1, params, PGRES_TUPLES_OK, "housekeep: ticket");
    if (!r)
        return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 1;
    }
    json_t *t = json_pack("{s:s, s:s, s:I, s:I}", "id", PQgetvalue(r, 0, 0), "body",
                          PQgetvalue(r, 0, 1), "created_at", (json_int_t)num(r, 0, 2),
                          "updated_at", (json_int_t)num(r, 0, 3));
    PQclear(r);
    json_t *answers = json_array(), *jobs = json_array();
    if (!t || !answers || !jobs) {
        json_decref(t);
        json_decref(answers);
        json_decref(jobs);
        return -1;
    }
    json_object_set_new(t, "answers", answers);
    json_object_set_new(t, "jobs", jobs);
    int rc = 0;
    r = db_pg_run(db, SQL_TICKET_ANSWERS, 1, params, PGRES_TUPLES_OK, "housekeep: ticket answers");
    for (int i = 0; r && i < PQntuples(r) && rc == 0; i++) {
        json_t *o = hk_answer_row(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), num(r, i, 2),
                                  num(r, i, 3), num(r, i, 4), num(r, i, 5));
        if (!o || json_array_append_new(answers, o) < 0)
            rc = -1;
    }
    if (!r)
        rc = -1;
    PQclear(r);
    r = rc == 0 ? db_pg_run(db, SQL_TICKET_JOBS, 1, params, PGRES_TUPLES_OK, "housekeep: ticket jobs") : NULL;
    for (int i = 0; r && i < PQntuples(r) && rc == 0; i++) {
        json_t *o = hk_job_row(num(r, i, 0), PQgetvalue(r, i, 1), num(r, i, 2), num(r, i, 3),
                               PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4));
        if (!o || json_array_append_new(jobs, o) < 0)
            rc = -1;
    }
    if (!r)
        rc = -1;
    PQclear(r);
    r = rc == 0 ? db_pg_run(db, SQL_TICKET_EVENTS, 1, params, PGRES_TUPLES_OK, "housekeep: ticket events") : NULL;
    if (!r || PQntuples(r) != 1 || json_object_set_new(t, "events", json_integer(num(r, 0, 0))) < 0)
        rc = -1;
    PQclear(r);
    if (rc < 0) {
        json_decref(t);
        return -1;
    }
    *out = t;
    return 0;
}

int hk_pg_sessions_list(parley_db *db, const char *user, int limit, json_t *arr)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[2] = { user, lim };
    PGresult *r = db_pg_run(db, SQL_SESSIONS, 2, params, PGRES_TUPLES_OK, "housekeep: sessions");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *o = hk_session_row(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                                   PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), num(r, i, 5),
                                   num(r, i, 6), num(r, i, 7));
        if (!o || json_array_append_new(arr, o) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}

int64_t hk_pg_sessions_purge(parley_db *db, const char *user, int64_t before_ms)
{
    char before[24];
    snprintf(before, sizeof before, "%" PRId64, before_ms);
    const char *params[2] = { user, before };
    return db_pg_command(db, SQL_SESSIONS_PURGE, 2, params, "housekeep: sessions purge");
}

int hk_pg_optimize(parley_db *db, char *detail, size_t detail_len)
{
    PGresult *r = PQexec(db_pg_conn(db), "ANALYZE");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        db_pg_fail(db, "housekeep: analyze", r);
        PQclear(r);
        return HK_ERR;
    }
    PQclear(r);
    if (detail && detail_len)
        snprintf(detail, detail_len, "analyze: planner statistics refreshed");
    return HK_OK;
}
