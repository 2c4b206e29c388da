/* storage/pg/openai_store.c — API keys, followers and request counts of
 * the OpenAI-compatible endpoint on PostgreSQL (contracts: openai_store.h;
 * openai_store.c checks the arguments and dispatches here when
 * db_pg_conn(db) is not NULL). Constant statements shared with SQLite
 * (openai_store_pg.h), values bound as text parameters. */
#include "storage/pg/pg.h"
#include "storage/pg/openai_store_pg.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char SQL_PUT[] = SQL_OAI_KEY_PUT;
static const char SQL_GET[] = SQL_OAI_KEY_GET;
static const char SQL_LIST_ALL[] = SQL_OAI_KEY_LIST_ALL;
static const char SQL_LIST_USER[] = SQL_OAI_KEY_LIST_USER;
static const char SQL_REVOKE[] = SQL_OAI_KEY_REVOKE;
static const char SQL_FOLLOW_ADD[] = SQL_OAI_FOLLOW_ADD;
static const char SQL_FOLLOW_DEL[] = SQL_OAI_FOLLOW_DEL;
static const char SQL_FOLLOW_COUNT[] = SQL_OAI_FOLLOW_COUNT;
static const char SQL_COUNT[] = SQL_OAI_COUNT;
static const char SQL_COUNTS[] = SQL_OAI_COUNTS;

int apikey_pg_put(parley_db *db, const char *id, const char *user, const char *name,
                  const char *prefix, const char *hash, int64_t now)
{
    char snow[24];
    snprintf(snow, sizeof snow, "%" PRId64, now);
    const char *p[6] = { id, user, name, prefix, hash, snow };
    return db_pg_command(db, SQL_PUT, 6, p, "api key: create") < 0 ? -1 : 0;
}

int apikey_pg_lookup(parley_db *db, const char *hash, char *user, size_t ulen)
{
    const char *p[1] = { hash };
    PGresult *r = db_pg_run(db, SQL_GET, 1, p, PGRES_TUPLES_OK, "api key: lookup");
    if (!r)
        return -1;
    int found = PQntuples(r) > 0;
    if (found)
        str_copy(user, ulen, PQgetvalue(r, 0, 0));
    PQclear(r);
    return found ? 0 : 1;
}

int apikey_pg_list(parley_db *db, const char *user, json_t *arr)
{
    const char *p[1] = { user };
    PGresult *r = db_pg_run(db, user ? SQL_LIST_USER : SQL_LIST_ALL, user ? 1 : 0, p,
                            PGRES_TUPLES_OK, "api key: list");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *row = apikey_row_json(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                      PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                                      strtoll(PQgetvalue(r, i, 4), NULL, 10),
                                      PQgetisnull(r, i, 5) ? NULL : PQgetvalue(r, i, 5));
        if (!row || json_array_append_new(arr, row) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}

int apikey_pg_revoke(parley_db *db, const char *id, int64_t now)
{
    char snow[24];
    snprintf(snow, sizeof snow, "%" PRId64, now);
    const char *p[2] = { snow, id };
    int64_t n = db_pg_command(db, SQL_REVOKE, 2, p, "api key: revoke");
    return n < 0 ? -1 : n > 0 ? 0 : 1;
}

int oai_pg_follow_add(parley_db *db, int64_t job_id, const char *follower, int64_t now)
{
    char sjob[24], snow[24];
    snprintf(sjob, sizeof sjob, "%" PRId64, job_id);
    snprintf(snow, sizeof snow, "%" PRId64, now);
    const char *p[3] = { sjob, follower, snow };
    return db_pg_command(db, SQL_FOLLOW_ADD, 3, p, "openai: follow") < 0 ? -1 : 0;
}

int oai_pg_follow_remove(parley_db *db, int64_t job_id, const char *follower)
{
    char sjob[24];
    snprintf(sjob, sizeof sjob, "%" PRId64, job_id);
    const char *p[2] = { sjob, follower };
    if (db_pg_command(db, SQL_FOLLOW_DEL, 2, p, "openai: unfollow") < 0)
        return -1;
    PGresult *r = db_pg_run(db, SQL_FOLLOW_COUNT, 1, p, PGRES_TUPLES_OK, "openai: followers");
    if (!r)
        return -1;
    int n = PQntuples(r) > 0 ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return n;
}

int oai_pg_count(parley_db *db, const char *endpoint, const char *outcome)
{
    const char *p[2] = { endpoint, outcome };
    return db_pg_command(db, SQL_COUNT, 2, p, "openai: count") < 0 ? -1 : 0;
}

int oai_pg_counts(parley_db *db, json_t *arr)
{
    PGresult *r = db_pg_run(db, SQL_COUNTS, 0, NULL, PGRES_TUPLES_OK, "openai: counts");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *row = json_pack("{s:s, s:s, s:I}", "endpoint", PQgetvalue(r, i, 0), "outcome",
                                PQgetvalue(r, i, 1), "n",
                                (json_int_t)strtoll(PQgetvalue(r, i, 2), NULL, 10));
        if (!row || json_array_append_new(arr, row) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}
