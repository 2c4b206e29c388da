/* storage/pg/presence.c — process presence on PostgreSQL (contracts:
 * presence.h; presence.c checks the arguments and dispatches here when
 * db_pg_conn(db) is not NULL). Constant statements shared with SQLite
 * (presence_pg.h), values bound as text parameters. */
#include "storage/pg/pg.h"
#include "storage/pg/presence_pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static const char SQL_PUT[] = SQL_PRESENCE_PUT;
static const char SQL_DEL[] = SQL_PRESENCE_DEL;
static const char SQL_PURGE[] = SQL_PRESENCE_PURGE;
static const char SQL_LIST[] = SQL_PRESENCE_LIST;

int presence_pg_put(parley_db *db, const char *node, const char *program, long pid,
                    const char *counts, const char *upstreams, int64_t started_at, int64_t now)
{
    char spid[24], sstart[24], snow[24];
    snprintf(spid, sizeof spid, "%ld", pid);
    snprintf(sstart, sizeof sstart, "%" PRId64, started_at);
    snprintf(snow, sizeof snow, "%" PRId64, now);
    const char *p[7] = { node, program, spid, counts, upstreams, sstart, snow };
    return db_pg_command(db, SQL_PUT, 7, p, "presence: write") < 0 ? -1 : 0;
}

int presence_pg_remove(parley_db *db, const char *node, const char *program, long pid)
{
    char spid[24];
    snprintf(spid, sizeof spid, "%ld", pid);
    const char *p[3] = { node, program, spid };
    return db_pg_command(db, SQL_DEL, 3, p, "presence: remove") < 0 ? -1 : 0;
}

int presence_pg_purge(parley_db *db, int64_t before)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, before);
    const char *p[1] = { s };
    int64_t n = db_pg_command(db, SQL_PURGE, 1, p, "presence: purge");
    return n < 0 ? -1 : (int)n;
}

int presence_pg_list(parley_db *db, int64_t fresh_after, json_t *arr)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, fresh_after);
    const char *p[1] = { s };
    PGresult *r = db_pg_run(db, SQL_LIST, 1, p, PGRES_TUPLES_OK, "presence: list");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        json_t *row = presence_row_json(PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                                        strtoll(PQgetvalue(r, i, 2), NULL, 10),
                                        PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
                                        strtoll(PQgetvalue(r, i, 5), NULL, 10),
                                        strtoll(PQgetvalue(r, i, 6), NULL, 10));
        if (!row || json_array_append_new(arr, row) < 0)
            rc = -1;
    }
    PQclear(r);
    return rc;
}
