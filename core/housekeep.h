/* housekeep.h — what an administrator inspects and cleans up from the
 * command line (`parley tickets`, `sessions`, `backup`, `maintain`;
 * docs/cli.md): seed 000 tickets with their cached answers and generations,
 * seed 001 / 004 conversations (kinds 'chat' and 'sse'), an online backup
 * of a SQLite database, and the backend's own upkeep.
 *
 * Storage module: SQLite statements in housekeep.c, PostgreSQL bodies in
 * storage/pg/housekeep.c (dispatch on db_pg_conn); every value is bound.
 * Threads: the caller's parley_db (one thread at a time).
 * Ownership: every json_t * returned is new (caller json_decref's it).
 */
#ifndef PARLEY_HOUSEKEEP_H
#define PARLEY_HOUSEKEEP_H
#include <stdint.h>
#include <jansson.h>
#include "db.h"

/* Tickets, the most recently updated first (then by id), at most limit
 * (1..10000) from offset: a new array of {"id", "body_bytes",
 * "created_at", "updated_at", "answers" (cached answers)}. NULL on error. */
json_t *hk_tickets_list(parley_db *db, int limit, int offset);

/* Ticket id in full: {"id", "body", "created_at", "updated_at",
 * "answers": [{"key", "model", "tokens" (null: unknown), "hits",
 * "response_bytes", "created_at"}] newest first, "jobs": [{"id", "state",
 * "created_at", "finished_at" (null while running), "error" (null)}] of
 * its channel "ticket:<id>", newest first, at most 20, "events" (rows of
 * its channel in the event log)} in *out. 0 found, 1 no such ticket,
 * -1 error (*out NULL unless 0). */
int hk_ticket_show(parley_db *db, const char *id, json_t **out);

/* Seed 001 / 004 conversations (kinds 'chat' and 'sse') of user (NULL:
 * every user), the most recently active first, at most limit (1..10000):
 * a new array of {"id", "user", "kind", "title", "status", "created_at",
 * "updated_at", "messages"}. NULL on error. */
json_t *hk_sessions_list(parley_db *db, const char *user, int limit);

/* Deletes the seed 001 / 004 conversations (kinds 'chat' and 'sse') of
 * user (NULL: every user) whose last activity (updated_at) is before
 * before_ms, with their messages (ON DELETE CASCADE), in one statement.
 * Returns how many conversations were deleted, or -1. */
int64_t hk_sessions_purge(parley_db *db, const char *user, int64_t before_ms);

/* Online backup of a SQLite database into the new file path (VACUUM INTO:
 * a consistent copy while the servers keep writing; nothing of the source
 * is locked for longer than a read). path must not exist.
 * HK_OK; HK_EXISTS (path exists, nothing written); HK_UNSUPPORTED (a
 * PostgreSQL connection: use pg_dump, docs/cli.md); HK_ERR (db_errmsg;
 * a partial file is removed). */
enum hk_rc { HK_ERR = -1, HK_OK = 0, HK_EXISTS = 1, HK_UNSUPPORTED = 2 };
int hk_backup(parley_db *db, const char *path);

/* The backend's upkeep: SQLite runs PRAGMA optimize (statistics of the
 * query planner) then a TRUNCATE checkpoint of the WAL (*detail: "wal
 * checkpoint: N of M pages, busy B"); PostgreSQL runs ANALYZE on
 * Parley's tables (*detail: "analyze"). detail: a caller buffer, may be
 * NULL. HK_OK / HK_ERR. Not inside a transaction. */
int hk_optimize(parley_db *db, char *detail, size_t detail_len);
#endif
