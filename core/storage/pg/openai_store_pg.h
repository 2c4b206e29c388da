/* storage/pg/openai_store_pg.h — the PostgreSQL bodies of the
 * openai_store module (storage/pg/openai_store.c; contracts:
 * openai_store.h) and the statements both backends share. Included only
 * by core/openai_store.c and storage/pg/openai_store.c. openai_store.c
 * checks the arguments before it dispatches here. Threads: as db.h.
 * Tables: sql/pg/010_openai.sql. */
#ifndef PARLEY_PG_OPENAI_STORE_H
#define PARLEY_PG_OPENAI_STORE_H
#include <stdint.h>
#include "openai_store.h"

/* The same text on SQLite and PostgreSQL ($N parameters). */
#define SQL_OAI_KEY_PUT "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) " \
    "VALUES ($1, $2, $3, $4, $5, $6)"
#define SQL_OAI_KEY_GET "SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
#define SQL_OAI_KEY_LIST_ALL "SELECT id, user_id, name, prefix, created_at, revoked_at " \
    "FROM api_keys ORDER BY created_at, id"
#define SQL_OAI_KEY_LIST_USER "SELECT id, user_id, name, prefix, created_at, revoked_at " \
    "FROM api_keys WHERE user_id = $1 ORDER BY created_at, id"
#define SQL_OAI_KEY_REVOKE "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
#define SQL_OAI_FOLLOW_ADD "INSERT INTO openai_followers (job_id, follower, since) " \
    "VALUES ($1, $2, $3) ON CONFLICT (job_id, follower) DO NOTHING"
#define SQL_OAI_FOLLOW_DEL "DELETE FROM openai_followers WHERE job_id = $1 AND follower = $2"
#define SQL_OAI_FOLLOW_COUNT "SELECT count(*) FROM openai_followers WHERE job_id = $1"
#define SQL_OAI_COUNT "INSERT INTO openai_requests (endpoint, outcome, n) VALUES ($1, $2, 1) " \
    "ON CONFLICT (endpoint, outcome) DO UPDATE SET n = openai_requests.n + 1"
#define SQL_OAI_COUNTS "SELECT endpoint, outcome, n FROM openai_requests ORDER BY endpoint, outcome"

/* One key row as apikey_list shows it (new object, NULL out of memory);
 * revoked_at NULL: still active. */
json_t *apikey_row_json(const char *id, const char *user, const char *name, const char *prefix,
                        long long created_at, const char *revoked_at);

int apikey_pg_put(parley_db *db, const char *id, const char *user, const char *name,
                  const char *prefix, const char *hash, int64_t now);
int apikey_pg_lookup(parley_db *db, const char *hash, char *user, size_t ulen);
int apikey_pg_list(parley_db *db, const char *user, json_t *arr);
int apikey_pg_revoke(parley_db *db, const char *id, int64_t now);
int oai_pg_follow_add(parley_db *db, int64_t job_id, const char *follower, int64_t now);
int oai_pg_follow_remove(parley_db *db, int64_t job_id, const char *follower);
int oai_pg_count(parley_db *db, const char *endpoint, const char *outcome);
int oai_pg_counts(parley_db *db, json_t *arr);
#endif
