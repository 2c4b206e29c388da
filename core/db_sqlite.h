/* db_sqlite.h — the SQLite side of a parley_db, for core's storage modules.
 *
 * Included ONLY by core's storage modules (db.c, store.c, evlog.c, jobs.c,
 * pollsess.c, ratelimit.c, catalog.c, kb.c, stats.c; terms.c as their
 * shared search-term helper) and by unit tests that look at tables
 * directly. Fronts (fcgi/, ws-bridge/, cli/) include db.h and the
 * storage headers, never this one nor <sqlite3.h>: every SQL statement of
 * Parley lives in a storage module, as a string literal with bound
 * parameters (nothing is ever built from input).
 * Threads: as db.h (the connection's thread only).
 * On a PostgreSQL handle (storage/pg/pg.h): db_handle is NULL, db_stmt logs
 * and returns NULL (a module calling it there would be missing its
 * PostgreSQL dispatch), db_changes is 0; db_exec runs the text with libpq
 * (tests only).
 */
#ifndef PARLEY_DB_SQLITE_H
#define PARLEY_DB_SQLITE_H
#include <sqlite3.h>
#include "db.h"

/* The connection's sqlite3 handle (borrowed). It can change at db_begin()
 * and db_stmt() when a broken or read-only connection is reopened (db.h):
 * do not keep it across those calls. */
sqlite3 *db_handle(parley_db *db);

/* Returns the prepared statement for sql, preparing it on first use and
 * reusing it after. sql must be a string literal or otherwise outlive db
 * (the pointer is the cache key). The statement comes back reset with its
 * bindings cleared: borrowed, do not finalize. NULL on a prepare error
 * (logged with the SQL text, never with bound values).
 * Outside a transaction, when none of the connection's statements is
 * running, a read-only or broken connection is reopened first (db.h): a
 * statement obtained earlier must not be used after a later db_stmt()
 * unless it was running (stepped and not reset) across that call. */
sqlite3_stmt *db_stmt(parley_db *db, const char *sql);

/* Runs SQL with no result rows and no parameters (one or more statements;
 * tests and migrations). 0 / -1. */
int db_exec(parley_db *db, const char *sql);

/* Rows changed by the last INSERT/UPDATE/DELETE of this connection. */
int db_changes(parley_db *db);

/* Binding helpers: NULL text binds SQL NULL. Return the sqlite3 code. */
int db_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* Copy of column text (new, free()), NULL when SQL NULL. */
char *db_col_strdup(sqlite3_stmt *st, int col);
#endif
