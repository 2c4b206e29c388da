/* db.h — one SQLite connection, configured for many processes and threads.
 *
 * Owns: the sqlite3 handle and a cache of prepared statements.
 * Threads: a parley_db is used by one thread at a time; every thread (and
 * every process) opens its own. WAL, synchronous=NORMAL, foreign keys on,
 * and a busy handler that waits (with short randomised sleeps) up to
 * busy_ms, so SQLITE_BUSY does not reach callers under normal contention.
 * Writes go through db_begin() = BEGIN IMMEDIATE, which takes the write
 * lock up front and so can't fail later with SQLITE_BUSY_SNAPSHOT.
 * Write gate: within one process, db_begin() first takes a mutex shared by
 * every connection to the same path (released by db_commit/db_rollback),
 * so the process's writers queue on it instead of on SQLite's lock through
 * the busy handler (which still arbitrates between processes). A thread
 * must not hold a transaction on one connection while it begins one on
 * another connection to the same database (it would wait BUSY_WAIT_MS,
 * then go on ungated: SQLite's own lock then decides, as before). The WAL
 * auto-checkpoint (every 1000 pages, passive) runs after the gate is
 * released, not inside COMMIT, so it never holds up the process's writers.
 */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct parley_db parley_db;

/* Opens (creating if needed) the database at path and applies pending
 * migrations from sql/. Returns a new handle, or NULL with a message in err:
 * a database written by a newer Parley (user_version above ours) is refused. */
parley_db *db_open(const char *path, char *err, size_t errlen);
/* Finalizes cached statements and closes. Accepts NULL. */
void db_close(parley_db *db);

sqlite3 *db_handle(parley_db *db);     /* borrowed */
const char *db_path(parley_db *db);    /* borrowed */
int db_schema_version(parley_db *db);  /* PRAGMA user_version */
int db_latest_version(void);           /* newest migration compiled in */

/* Returns the prepared statement for sql, preparing it on first use and
 * reusing it after. sql must be a string literal or otherwise outlive db
 * (the pointer is the cache key). The statement comes back reset with its
 * bindings cleared: borrowed, do not finalize. NULL on a prepare error
 * (logged with the SQL text, never with bound values). */
sqlite3_stmt *db_stmt(parley_db *db, const char *sql);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. 0 on success, -1 on error.
 * db_rollback is safe to call when no transaction is open. */
int db_begin(parley_db *db);
int db_commit(parley_db *db);
int db_rollback(parley_db *db);

/* Runs one statement with no result rows (no parameters). 0 / -1. */
int db_exec(parley_db *db, const char *sql);

/* Last error message of this connection (borrowed, valid until next call). */
const char *db_errmsg(parley_db *db);

/* Binding helpers: NULL text binds SQL NULL. Return the sqlite3 code. */
int db_bind_text(sqlite3_stmt *st, int idx, const char *s);
/* Copy of column text (new, free()), NULL when SQL NULL. */
char *db_col_strdup(sqlite3_stmt *st, int col);
#endif
