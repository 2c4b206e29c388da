/* openai_store.h — what the OpenAI-compatible endpoint stores (issue 15
 * item 1, docs/openai.md): API keys per user, the streaming requests that
 * follow a generation, and request counts by endpoint and outcome. A
 * storage module: SQLite body in openai_store.c, PostgreSQL body in
 * storage/pg/openai_store.c (dispatch on db_pg_conn), tables
 * sql/010_openai.sql and sql/pg/010_openai.sql.
 *
 * Keys: "sk-parley-" + 48 hex digits (24 random bytes). Only the SHA-256
 * of the whole key is stored, with its first OAI_KEY_PREFIX_LEN characters
 * for display; the key itself is shown once, by apikey_create.
 * Threads: every function uses the caller's parley_db (its thread only).
 */
#ifndef PARLEY_OPENAI_STORE_H
#define PARLEY_OPENAI_STORE_H
#include <stdint.h>
#include <jansson.h>
#include "db.h"

#define OAI_KEY_TAG "sk-parley-"
#define OAI_KEY_LEN (10 + 48)          /* strlen of a key */
#define OAI_KEY_PREFIX_LEN 14          /* "sk-parley-" + 4 hex digits */
#define OAI_KEY_ID_LEN 20              /* "key_" + 16 hex digits */

/* 1 when s has the form of a Parley API key (the tag, then 48 lower-case
 * hex digits), else 0. Pure. */
int apikey_looks_like(const char *s);
/* Creates a key for user (non-empty, < 128 bytes) named name (NULL: "",
 * < 128 bytes) at now (ms): key gets the key (shown once), id its id.
 * 0, or -1 on bad arguments, no randomness or a database error. */
int apikey_create(parley_db *db, const char *user, const char *name, int64_t now,
                  char key[OAI_KEY_LEN + 1], char id[OAI_KEY_ID_LEN + 1]);
/* The user of an active (not revoked) key: one indexed lookup of its
 * SHA-256. 0 found (user set, at most ulen-1 bytes), 1 no such active key
 * (also for text that is not a key), -1 database error. */
int apikey_lookup(parley_db *db, const char *key, char *user, size_t ulen);
/* The keys of user (NULL: everybody's), oldest first, as a new JSON array
 * in *out: [{"id","user","name","prefix","created_at","revoked_at"(null
 * while active)}]. Never the hash. 0 / -1 (database error). */
int apikey_list(parley_db *db, const char *user, json_t **out);
/* Revokes key id at now: 0 revoked, 1 no such key or already revoked,
 * -1 database error. */
int apikey_revoke(parley_db *db, const char *id, int64_t now);

/* The streaming request follower (a random id) follows job_id from now:
 * 0 / -1. */
int oai_follow_add(parley_db *db, int64_t job_id, const char *follower, int64_t now);
/* follower no longer follows job_id; returns how many followers the job
 * still has (0: nobody), or -1 on a database error. */
int oai_follow_remove(parley_db *db, int64_t job_id, const char *follower);

/* Adds one request of endpoint ("chat.completions", "models") with
 * outcome (a short word) to the counts. 0 / -1. */
int oai_count(parley_db *db, const char *endpoint, const char *outcome);
/* Every count as a new JSON array [{"endpoint","outcome","n"}], ordered.
 * 0 / -1. */
int oai_counts(parley_db *db, json_t **out);
#endif
