/* openai_store.c — API keys, followers and request counts of the
 * OpenAI-compatible endpoint (openai_store.h): the SQLite bodies. A
 * PostgreSQL connection (db_pg_conn) goes to storage/pg/openai_store.c.
 * Statements are literals with bound values, shared with the PostgreSQL
 * body (openai_store_pg.h). */
#include "openai_store.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/openai_store_pg.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const char sql_put[] = SQL_OAI_KEY_PUT;
static const char sql_get[] = SQL_OAI_KEY_GET;
static const char sql_list_all[] = SQL_OAI_KEY_LIST_ALL;
static const char sql_list_user[] = SQL_OAI_KEY_LIST_USER;
static const char sql_revoke[] = SQL_OAI_KEY_REVOKE;
static const char sql_follow_add[] = SQL_OAI_FOLLOW_ADD;
static const char sql_follow_del[] = SQL_OAI_FOLLOW_DEL;
static const char sql_follow_count[] = SQL_OAI_FOLLOW_COUNT;
static const char sql_count[] = SQL_OAI_COUNT;
static const char sql_counts[] = SQL_OAI_COUNTS;

static int random_hex(char *out, size_t nbytes)
{
    unsigned char b[32];
    if (nbytes > sizeof b)
        return -1;
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom(b + got, nbytes - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

int apikey_looks_like(const char *s)
{
    size_t tag = strlen(OAI_KEY_TAG);
    if (!s || strncmp(s, OAI_KEY_TAG, tag) != 0 || strlen(s) != OAI_KEY_LEN)
        return 0;
    for (const char *p = s + tag; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

json_t *apikey_row_json(const char *id, const char *user, const char *name, const char *prefix,
                        long long created_at, const char *revoked_at)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "id", id ? id : "", "user",
                     user ? user : "", "name", name ? name : "", "prefix", prefix ? prefix : "",
                     "created_at", (json_int_t)created_at, "revoked_at",
                     revoked_at ? json_integer(strtoll(revoked_at, NULL, 10)) : json_null());
}

int apikey_create(parley_db *db, const char *user, const char *name, int64_t now,
                  char key[OAI_KEY_LEN + 1], char id[OAI_KEY_ID_LEN + 1])
{
    if (!db || !user || !*user || strlen(user) >= 128 || (name && strlen(name) >= 128))
        return -1;
    if (!name)
        name = "";
    char hex[49], idhex[17];
    if (random_hex(hex, 24) < 0 || random_hex(idhex, 8) < 0)
        return -1;
    snprintf(key, OAI_KEY_LEN + 1, "%s%s", OAI_KEY_TAG, hex);
    snprintf(id, OAI_KEY_ID_LEN + 1, "key_%s", idhex);
    char hash[65], prefix[OAI_KEY_PREFIX_LEN + 1];
    sha256_hex(key, strlen(key), hash);
    str_copy(prefix, sizeof prefix, key);
    if (db_pg_conn(db))
        return apikey_pg_put(db, id, user, name, prefix, hash, now);
    sqlite3_stmt *st = db_stmt(db, sql_put);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, user);
    db_bind_text(st, 3, name);
    db_bind_text(st, 4, prefix);
    db_bind_text(st, 5, hash);
    sqlite3_bind_int64(st, 6, now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int apikey_lookup(parley_db *db, const char *key, char *user, size_t ulen)
{
    if (!db || !user || ulen == 0)
        return -1;
    user[0] = '\0';
    if (!apikey_looks_like(key))
        return 1;
    char hash[65];
    sha256_hex(key, strlen(key), hash);
    if (db_pg_conn(db))
        return apikey_pg_lookup(db, hash, user, ulen);
    sqlite3_stmt *st = db_stmt(db, sql_get);
    if (!st)
        return -1;
    db_bind_text(st, 1, hash);
    int rc = sqlite3_step(st);
    int out = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? 1 : -1;
    if (out == 0)
        str_copy(user, ulen, (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return out;
}

int apikey_list(parley_db *db, const char *user, json_t **out)
{
    if (!db || !out)
        return -1;
    json_t *arr = json_array();
    if (!arr)
        return -1;
    if (db_pg_conn(db)) {
        if (apikey_pg_list(db, user, arr) < 0) {
            json_decref(arr);
            return -1;
        }
        *out = arr;
        return 0;
    }
    sqlite3_stmt *st = db_stmt(db, user ? sql_list_user : sql_list_all);
    if (!st) {
        json_decref(arr);
        return -1;
    }
    if (user)
        db_bind_text(st, 1, user);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = apikey_row_json((const char *)sqlite3_column_text(st, 0),
                                      (const char *)sqlite3_column_text(st, 1),
                                      (const char *)sqlite3_column_text(st, 2),
                                      (const char *)sqlite3_column_text(st, 3),
                                      sqlite3_column_int64(st, 4),
                                      (const char *)sqlite3_column_text(st, 5));
        if (!row || json_array_append_new(arr, row) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}

int apikey_revoke(parley_db *db, const char *id, int64_t now)
{
    if (!db || !id || !*id)
        return -1;
    if (db_pg_conn(db))
        return apikey_pg_revoke(db, id, now);
    sqlite3_stmt *st = db_stmt(db, sql_revoke);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, now);
    db_bind_text(st, 2, id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return -1;
    return db_changes(db) > 0 ? 0 : 1;
}

int oai_follow_add(parley_db *db, int64_t job_id, const char *follower, int64_t now)
{
    if (!db || job_id <= 0 || !follower || !*follower)
        return -1;
    if (db_pg_conn(db))
        return oai_pg_follow_add(db, job_id, follower, now);
    sqlite3_stmt *st = db_stmt(db, sql_follow_add);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, follower);
    sqlite3_bind_int64(st, 3, now);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int oai_follow_remove(parley_db *db, int64_t job_id, const char *follower)
{
    if (!db || job_id <= 0 || !follower || !*follower)
        return -1;
    if (db_pg_conn(db))
        return oai_pg_follow_remove(db, job_id, follower);
    sqlite3_stmt *st = db_stmt(db, sql_follow_del);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job_id);
    db_bind_text(st, 2, follower);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return -1;
    st = db_stmt(db, sql_follow_count);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, job_id);
    rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

int oai_count(parley_db *db, const char *endpoint, const char *outcome)
{
    if (!db || !endpoint || !*endpoint || !outcome || !*outcome)
        return -1;
    if (db_pg_conn(db))
        return oai_pg_count(db, endpoint, outcome);
    sqlite3_stmt *st = db_stmt(db, sql_count);
    if (!st)
        return -1;
    db_bind_text(st, 1, endpoint);
    db_bind_text(st, 2, outcome);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int oai_counts(parley_db *db, json_t **out)
{
    if (!db || !out)
        return -1;
    json_t *arr = json_array();
    if (!arr)
        return -1;
    if (db_pg_conn(db)) {
        if (oai_pg_counts(db, arr) < 0) {
            json_decref(arr);
            return -1;
        }
        *out = arr;
        return 0;
    }
    sqlite3_stmt *st = db_stmt(db, sql_counts);
    if (!st) {
        json_decref(arr);
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_pack("{s:s, s:s, s:I}", "endpoint", sqlite3_column_text(st, 0),
                                "outcome", sqlite3_column_text(st, 1), "n",
                                (json_int_t)sqlite3_column_int64(st, 2));
        if (!row || json_array_append_new(arr, row) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}
