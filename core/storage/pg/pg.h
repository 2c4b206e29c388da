/* storage/pg/pg.h — the PostgreSQL side of a parley_db (issue 10).
 *
 * Included ONLY by db.c, core's storage modules (each dispatches to its
 * PostgreSQL body in core/storage/pg/ when db_pg_conn(db) is not NULL),
 * config.c (db_pg_is_conninfo) and unit tests. Fronts never see it nor
 * <libpq-fe.h>.
 *
 * Every statement with values uses bound parameters (PQexecParams); the
 * only texts run without parameters are constants (migrations, BEGIN,
 * savepoints). Messages never show the password of the connection string:
 * they use the redacted form (db_pg_redact) and any text from libpq is
 * scrubbed of the password first.
 * Threads: as db.h (the connection's thread only); db_pg_is_conninfo and
 * db_pg_redact are pure functions, safe from any thread.
 */
#ifndef PARLEY_DB_PG_H
#define PARLEY_DB_PG_H
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include "db.h"

/* 1 when s selects the PostgreSQL backend: a "postgresql://" or
 * "postgres://" URI, or a libpq "keyword=value ..." string whose first
 * keyword is one libpq knows (host=..., dbname=...). 0 otherwise (a path:
 * SQLite). */
int db_pg_is_conninfo(const char *s);

/* Copy of conninfo with the password replaced by "***" (URI user:password@,
 * a ?password= / &password= query parameter, a password= keyword). New
 * string (free()), NULL when out of memory. When secret is not NULL, *secret
 * gets a new copy of the password as written (NULL when there is none). */
char *db_pg_redact(const char *conninfo, char **secret);

/* The connection's PGconn when db is a PostgreSQL connection (borrowed,
 * valid until db_close), NULL when it is SQLite. Storage modules dispatch on
 * it. */
PGconn *db_pg_conn(parley_db *db);

/* Runs the constant statement sql with bound values, like PQexecParams
 * (parameter types inferred; lengths/formats may be NULL: text), but
 * prepared once per session: the first call on a connection prepares it
 * (named by sql's ADDRESS, as db_stmt caches: sql must be a string constant
 * that outlives db, never a text built at run time), later calls only
 * execute it; a session re-opened after a loss prepares again. Returns the
 * result (PQclear it; a failed prepare's result when preparing failed).
 * Threads: db's thread. */
PGresult *db_pg_exec(parley_db *db, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats, int result_format);

/* db_pg_exec with text parameters and text results, for the storage
 * bodies: the result (PQclear it) when its status is want, else NULL with
 * the failure recorded (db_errmsg, db_err_kind) and logged as what. */
PGresult *db_pg_run(parley_db *db, const char *sql, int n, const char *const *params,
                    ExecStatusType want, const char *what);
/* A statement that returns no rows (INSERT/UPDATE/DELETE without
 * RETURNING): the rows it changed, or -1 with the failure recorded. */
int64_t db_pg_command(parley_db *db, const char *sql, int n, const char *const *params,
                      const char *what);

/* Records why a PostgreSQL call failed, for db_errmsg/db_err_kind: what
 * (the caller's words) and the result's message (or the connection's when
 * r is NULL), scrubbed of the password, and logs it to stderr. SQLSTATE
 * 25006 (read-only transaction) gives PERR_DB_READONLY. */
void db_pg_fail(parley_db *db, const char *what, const PGresult *r);

/* ---- the connection, for db.c (opaque outside storage/pg/conn.c) ---- */
struct db_pg;
/* Connects to conninfo (shown: its redacted form, for messages) and applies
 * pending sql/pg migrations. NULL with err set on failure: the gate closed,
 * no connection, a schema newer than ours. */
struct db_pg *pgc_open(const char *conninfo, const char *shown, char *err, size_t errlen);
void pgc_close(struct db_pg *p);                /* NULL accepted */
PGconn *pgc_conn(struct db_pg *p);
PGresult *pgc_exec_params(struct db_pg *p, const char *sql, int n, const char *const *values,
                          const int *lengths, const int *formats, int result_format);             /* re-opens a broken connection outside a transaction */
int pgc_begin(struct db_pg *p);                 /* db.h semantics; 0 / -1 */
int pgc_commit(struct db_pg *p);
int pgc_rollback(struct db_pg *p);
int pgc_in_tx(const struct db_pg *p);          /* transactions open (0: none) */
int pgc_exec(struct db_pg *p, const char *sql); /* constant SQL, no rows; 0 / -1 */
int pgc_schema_version(struct db_pg *p);        /* -1 on error */
int pgc_latest_version(void);                   /* newest sql/pg migration */
int pgc_readonly(struct db_pg *p);              /* last failure was "read-only" */
int pgc_unavailable(struct db_pg *p);           /* no connection to the server now, or the last
                                                  * failure was its end (SQLSTATE class 08 or 57P) */
const char *pgc_errmsg(struct db_pg *p);
void pgc_fail(struct db_pg *p, const char *what, const PGresult *r);
enum db_health pgc_health(struct db_pg *p);

/* ---- the event log's PostgreSQL bodies (storage/pg/evlog.c; contracts: evlog.h) ---- */
struct evlog_event;
int64_t evlog_pg_append_tx(parley_db *db, const char *channel, int64_t job_id,
                           const char *type, const char *data, size_t len);
int64_t evlog_pg_last_seq(parley_db *db, const char *channel);
int evlog_pg_read(parley_db *db, const char *channel, int64_t after, int max,
                  struct evlog_event **out);
int evlog_pg_compact(parley_db *db, int64_t grace_ms, int64_t now);

/* ---- the jobs module's PostgreSQL bodies (storage/pg/jobs.c; contracts: jobs.h,
 * same return values; jobs_recover_if_expired has no body of its own: it
 * is jobs_get + jobs_recover) ---- */
struct job_claim;
struct job_info;
struct parley_bell;
int jobs_pg_claim_turn(parley_db *db, struct parley_bell *bell, const char *channel,
                       const char *conv_id, const char *msg_id, const char *user, int lease_ms,
                       struct job_claim *out, char *err, size_t errlen);
int jobs_pg_claim(parley_db *db, struct parley_bell *bell, const char *channel,
                  const char *prompt_key, const char *user, int lease_ms,
                  struct job_claim *out, char *err, size_t errlen);
int jobs_pg_adopt(parley_db *db, struct job_claim *claim, int lease_ms);
int jobs_pg_renew(parley_db *db, int64_t job_id, int lease_ms);
int jobs_pg_finish_tx(parley_db *db, int64_t job_id, const char *error);
/* jobs_recover's two backend steps (jobs.c runs the loop): the ids of
 * running jobs whose lease expired before now (at most max; count or -1),
 * and failing one of them inside the caller's transaction (1 failed, 0 it
 * was renewed or ended meanwhile, -1 error; chan gets its channel). */
int jobs_pg_expired(parley_db *db, int64_t now, int64_t *ids, int max);
int jobs_pg_fail_expired_tx(parley_db *db, int64_t job_id, int64_t now, char *chan, size_t chanlen);
int jobs_pg_running_on(parley_db *db, const char *channel, int64_t *job_id, int64_t *first_seq);
int jobs_pg_get(parley_db *db, int64_t job_id, struct job_info *out);
/* jobs_request_stop's backend steps (jobs.c decides): the channel's newest
 * running job, else its newest job (0 found into *job, 1 none, -1 error);
 * recording the stop on a running job started by user (or any, admin != 0):
 * 1 recorded, 0 not (ended, foreign or unknown), -1 error. */
int jobs_pg_stop_pick(parley_db *db, const char *channel, int64_t *job);
int jobs_pg_stop_mark(parley_db *db, int64_t job_id, const char *user, int admin, int64_t now,
                      char *chan, size_t chanlen);
int jobs_pg_stop_pending(parley_db *db, const char *lease_owner, int64_t *ids, int max);
int jobs_pg_finish_stopped_tx(parley_db *db, int64_t job_id);
#endif
