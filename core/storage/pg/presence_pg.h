/* storage/pg/presence_pg.h — the PostgreSQL bodies of the presence module
 * (storage/pg/presence.c; contracts: presence.h) and the statements both
 * backends share. Included only by core/presence.c, storage/pg/presence.c
 * and unit tests. presence.c checks the arguments before it dispatches
 * here. Threads: as db.h (the connection's thread only). Table:
 * sql/pg/009_presence.sql. */
#ifndef PARLEY_PG_PRESENCE_H
#define PARLEY_PG_PRESENCE_H
#include <stdint.h>
#include "presence.h"

/* The same text on SQLite and PostgreSQL ($N parameters); each module
 * keeps its own static copy (statements are cached by address). */
#define SQL_PRESENCE_PUT "INSERT INTO presence (node, program, pid, counts, upstreams, " \
    "started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) " \
    "ON CONFLICT (node, program, pid) DO UPDATE SET counts = excluded.counts, " \
    "upstreams = excluded.upstreams, started_at = excluded.started_at, " \
    "updated_at = excluded.updated_at"
#define SQL_PRESENCE_DEL "DELETE FROM presence WHERE node = $1 AND program = $2 AND pid = $3"
#define SQL_PRESENCE_PURGE "DELETE FROM presence WHERE updated_at < $1"
#define SQL_PRESENCE_LIST "SELECT node, program, pid, counts, upstreams, started_at, updated_at " \
    "FROM presence WHERE updated_at >= $1 ORDER BY node, program, pid"

/* One row as the object presence_list returns (presence.c): a new object,
 * NULL out of memory. Texts borrowed; unparsable JSON shows {} / []. */
json_t *presence_row_json(const char *node, const char *program, long long pid,
                          const char *counts, const char *upstreams, long long started_at,
                          long long updated_at);

int presence_pg_put(parley_db *db, const char *node, const char *program, long pid,
                    const char *counts, const char *upstreams, int64_t started_at, int64_t now);
int presence_pg_remove(parley_db *db, const char *node, const char *program, long pid);
int presence_pg_purge(parley_db *db, int64_t before);
/* Rows into arr (append); 0 / -1. */
int presence_pg_list(parley_db *db, int64_t fresh_after, json_t *arr);
#endif
