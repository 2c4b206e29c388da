/* db.h — a storage connection, as the rest of Parley sees it.
 *
 * Backend-neutral: nothing here names SQLite. The storage modules of core
 * (store, evlog, jobs, pollsess, ratelimit, catalog, stats) implement their
 * headers on top of this connection; only they include db_sqlite.h, which
 * holds the SQL helpers. A second backend (PostgreSQL, issue 10) provides
 * this header and the storage headers again; fronts (fcgi/, ws-bridge/,
 * cli/) do not change.
 *
 * PostgreSQL (storage/pg/pg.h, docs/postgres.md): db_open takes a
 * "postgresql://" / "postgres://" URI or a libpq "key=value" string. On
 * such a handle this header and every storage module work as on SQLite
 * (their PostgreSQL bodies are in core/storage/pg/); transactions are READ
 * COMMITTED, nested ones savepoints. A connection whose session the server
 * ended is opened again outside a transaction. db_path() and every message
 * show the connection string with its password replaced by "***". No write
 * gate: PostgreSQL's row locks order writers.
 *
 * Owns: the backend connection and its prepared statements.
 * Threads: a parley_db is used by one thread at a time; every thread (and
 * every process) opens its own. Writers in one process queue on an
 * in-process gate per database, then on the backend's own lock.
 *
 * SQLite backend (db.c): WAL, synchronous=NORMAL, foreign keys on, and a
 * busy handler that waits (with short randomised sleeps) up to 30 s, so
 * SQLITE_BUSY does not reach callers under normal contention. Writes go
 * through db_begin() = BEGIN IMMEDIATE, which takes the write lock up front
 * and so can't fail later with SQLITE_BUSY_SNAPSHOT. Write gate: within one
 * process, db_begin() first takes a mutex shared by every connection to the
 * same path (released by db_commit/db_rollback). A thread must not hold a
 * transaction on one connection while it begins one on another connection
 * to the same database (it would wait 30 s, then go on ungated). The WAL
 * auto-checkpoint (every 1000 pages, passive) runs after the gate is
 * released, not inside COMMIT.
 *
 * Read-only spells and broken connections: a connection opened while the
 * database file could not be written is read-only for good in SQLite, and
 * one that hit an I/O error may stay broken. So (SQLite backend):
 *   - a connection that is read-only, or whose last error was READONLY,
 *     CANTOPEN or IOERR, is closed and opened again (same path, never
 *     creating the file) at the next db_begin(), and at the next statement
 *     outside a transaction while none of its statements is running, once
 *     the file can be written again. Callers see nothing of it;
 *   - while it cannot be written, db_begin() on such a connection fails at
 *     once with PERR_DB_READONLY. A connection opened before the spell still
 *     writes through its descriptor (SQLite's own behaviour): work already
 *     running (a generation streaming) ends normally;
 *   - db_can_write() is the check for starting new long-lived work (a job
 *     claim): it fails on every connection while the file cannot be written,
 *     so no generation starts that could not record its end.
 * A full file system counts as "cannot be written" (less than 1 MiB left
 * for unprivileged writers, statvfs): db_can_write refuses (no generation
 * starts that could not record its end), db_health says read-only
 * (/api/health 503), and a write that fails with SQLITE_FULL (db_begin
 * itself does not look: a short write may still fit) is PERR_DB_READONLY
 * (database_readonly: "cannot be written now"), as is any failure while
 * the file cannot be written (db_err_kind looks).
 */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H
#include <stddef.h>
#include <stdint.h>
#include "perr.h"

typedef struct parley_db parley_db;
typedef struct parley_bell parley_bell;   /* bell.h */

/* Opens (creating if needed) the database at path and applies pending
 * migrations from sql/. Returns a new handle (close with db_close), or NULL
 * with a message in err: a database written by a newer Parley (schema above
 * ours) is refused. A file that cannot be written now opens read-only
 * (writes then fail with PERR_DB_READONLY until it can be written again).
 * A PostgreSQL connection string (above) connects instead and applies
 * sql/pg/ migrations (version in table parley_schema), or is refused while
 * the gate is closed; err never holds its password. */
parley_db *db_open(const char *path, char *err, size_t errlen);
/* Rolls back an open transaction, finalizes statements and closes.
 * Accepts NULL. */
void db_close(parley_db *db);

const char *db_path(parley_db *db);    /* borrowed, valid until db_close; PostgreSQL: redacted */
int db_schema_version(parley_db *db);  /* schema version of the database; -1 error */
int db_latest_version(void);           /* newest SQLite migration compiled in (sql/) */

/* Starts a write transaction (SQLite: BEGIN IMMEDIATE) / commits / rolls
 * back. 0 on success, -1 on error (db_err_kind, db_errmsg tell why; a
 * failed commit has rolled back). db_rollback is safe to call when no
 * transaction is open. Transactions nest: db_begin inside an open one
 * starts a savepoint, whose db_commit keeps its changes for the outer
 * transaction's commit and whose db_rollback undoes only its own (the
 * outer one goes on), so a storage function that commits its own work can
 * also be one step of a caller's transaction (fcgi/poll_handlers.c: a
 * long-poll POST's frames, jobs and session state are one commit). Only
 * the outermost commit makes anything durable and visible. If SQLite
 * itself ended the whole transaction (an I/O error, a full disk), every
 * later call up to the outermost db_rollback fails. */
int db_begin(parley_db *db);
int db_commit(parley_db *db);
int db_rollback(parley_db *db);

/* Rings channel on bell when the transaction open on db ends — at the
 * outermost db_commit or db_rollback (committed or not: a ring for nothing
 * costs a reader one read) — or at once when none is open. For a storage
 * function that may be one step of a caller's transaction: a ring at its
 * own (nested) commit would wake readers before they can see what it
 * wrote, and none would come after. Up to four channels are kept per
 * transaction, more ring every slot; one bell per transaction (a ring on
 * another is made at once). Same thread as db's other calls. */
void db_ring_at_end(parley_db *db, parley_bell *bell, const char *channel);

/* ---- cached-answer versions (SQLite) ----
 * A counter per ticket in the machine's doorbell file "<database>-bell"
 * (bell.h; the slot of "answer:<ticket id>"), advanced right after every
 * commit of this connection that changed the ticket's cached answers (the
 * storage functions that write them call db_answer_changed), or right away
 * when no transaction is open. Every Parley program on the machine writes
 * answers through them, so a reader that peeked the version BEFORE it read
 * a ticket's answer may serve what it read for as long as the version has
 * not moved (fcgi/api_tickets.c): the change is seen from the moment the
 * writer's thread has committed and rung, before it answers its own
 * caller. A write made behind Parley's back (the sqlite3 shell) does not
 * ring; two tickets may share a slot (a version then moves for nothing).
 * A transaction that changed more than 4 tickets' answers moves every
 * ticket's version (the slot of "answer:*", part of each version).
 * db_answer_version: 1 with *v set, 0 when there is no such counter
 * (PostgreSQL: several nodes share the database and a NOTIFY arrives
 * late, so readers there always read; or the bell file cannot be mapped).
 * The writer side never creates the bell file: when it does not exist,
 * nobody can have peeked a version. */
int db_answer_version(parley_db *db, const char *ticket_id, uint64_t *v);
void db_answer_changed(parley_db *db, const char *ticket_id);

/* Can this process write the database now (access(2) on the file with the
 * effective ids, about half a microsecond; the connection reopened first if
 * it is read-only and the file is writable again)? 0 yes; -1 no, and then
 * db_err_kind(db) is PERR_DB_READONLY and db_errmsg(db) says "the database
 * is read-only". Call it before starting work that must be able to write
 * until it ends (a generation). Not inside a transaction. */
int db_can_write(parley_db *db);
/* (PostgreSQL: 0 when db_health says ok, else -1 with PERR_DB.) */

/* Why the last failing call on this connection failed: PERR_DB_READONLY
 * when the database cannot be written now (db_can_write or db_begin said
 * so, the backend refused a write as read-only or for a full disk, or the
 * SQLite file cannot be written at the time of the call: permissions, a
 * read-only or full file system); PERR_DB_UNAVAILABLE
 * when there is no connection to the server now (PostgreSQL down or
 * unreachable); else PERR_DB. Both of the first map to 503. Call it right
 * after the failure, before the next call on db. */
enum perr db_err_kind(parley_db *db);
/* What to tell a client after a failure on db: perr_text(kind) ("The
 * database is read-only", "The database is unavailable") when
 * db_err_kind(db) is PERR_DB_READONLY or PERR_DB_UNAVAILABLE, else fallback
 * (the caller's own wording for a database error). */
const char *db_err_text(parley_db *db, const char *fallback);
/* Message of the last failure on this connection (borrowed, valid until the
 * next call on db): "the database is read-only" after db_can_write or
 * db_begin refused.
 * Never contains bound values. */
const char *db_errmsg(parley_db *db);

/* What /api/health reports about the database. */
enum db_health {
    DB_HEALTH_OK = 0,          /* readable, and writable by this process */
    DB_HEALTH_READONLY,        /* readable, but writes are refused now */
    DB_HEALTH_UNAVAILABLE      /* no connection, or it does not answer */
};
/* Cheap probe, no write and no lock: can this process write the database
 * file now (access(2)), is this connection read-only (reopened first if the
 * file is writable again), does a trivial read answer. db NULL gives
 * DB_HEALTH_UNAVAILABLE. Not inside a transaction. */
enum db_health db_health(parley_db *db);
/* "ok", "read-only", "unavailable". Never NULL. */
const char *db_health_name(enum db_health h);
#endif
