/* storage/pg/housekeep_pg.h — the PostgreSQL bodies of housekeep.h (contracts
 * and return values there) and the JSON row builders housekeep.c shares
 * with them. Included only by housekeep.c and storage/pg/housekeep.c.
 * Threads: the connection's thread. */
#ifndef PARLEY_PG_HOUSEKEEP_H
#define PARLEY_PG_HOUSEKEEP_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "db.h"

/* Row builders (housekeep.c): a new object, NULL on OOM; -1 for an
 * integer that is NULL in the row. */
json_t *hk_ticket_row(const char *id, int64_t body_bytes, int64_t created, int64_t updated,
                      int64_t answers);
json_t *hk_answer_row(const char *key, const char *model, int64_t tokens, int64_t hits,
                      int64_t bytes, int64_t created);
json_t *hk_job_row(int64_t id, const char *state, int64_t created, int64_t finished,
                   const char *error);
json_t *hk_session_row(const char *id, const char *user, const char *kind, const char *title,
                       const char *status, int64_t created, int64_t updated, int64_t messages);

/* Rows appended to arr; 0 / -1. */
int hk_pg_tickets_list(parley_db *db, int limit, int offset, json_t *arr);
int hk_pg_ticket_show(parley_db *db, const char *id, json_t **out);
int hk_pg_sessions_list(parley_db *db, const char *user, int limit, json_t *arr);
int64_t hk_pg_sessions_purge(parley_db *db, const char *user, int64_t before_ms);
int hk_pg_optimize(parley_db *db, char *detail, size_t detail_len);
#endif
