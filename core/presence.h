/* presence.h — which server processes run, and their open connections by
 * transport, across every process and node (issue 12 item 2, the admin
 * page; docs/admin.md). A storage module: SQLite body in presence.c,
 * PostgreSQL body in storage/pg/presence.c (dispatch on db_pg_conn), table
 * sql/009_presence.sql and sql/pg/009_presence.sql.
 *
 * Connections live in different processes (WebSocket and Phoenix sockets in
 * parley-ws, SSE streams and waiting long-poll requests in each parley.fcgi
 * process) and possibly on several nodes. Each process runs a reporter
 * thread (presence_start) that every PRESENCE_EVERY_MS rewrites ONE row
 * keyed (node = host name, program, pid) with its counts (a JSON object,
 * transport -> open connections, from the process's own callback) and its
 * view of the upstreams (breakers and counters are per process). The
 * process deletes its row when it stops; a row older than
 * PRESENCE_STALE_MS belongs to a process that died or hangs: readers
 * ignore it (presence_list) and every reporter deletes such rows.
 *
 * Threads: the storage functions use the caller's parley_db (its thread
 * only). The reporter has its own thread and its own database connection.
 */
#ifndef PARLEY_PRESENCE_H
#define PARLEY_PRESENCE_H
#include <stdint.h>
#include <jansson.h>
#include "config.h"
#include "db.h"

#define PRESENCE_EVERY_MS 2000     /* each process rewrites its row this often */
#define PRESENCE_STALE_MS 15000    /* older rows are ignored and deleted */

/* Writes (inserts or replaces) the row of (node, program, pid): counts and
 * upstreams are JSON texts (borrowed; NULL: "{}" / "[]"), started_at and
 * now wall-clock ms. 0, or -1 on bad arguments (node or program NULL or
 * empty, pid <= 0) or a database error (db_err_kind). */
int presence_put(parley_db *db, const char *node, const char *program, long pid,
                 const char *counts, const char *upstreams, int64_t started_at, int64_t now);
/* Deletes the row of (node, program, pid). 0 (also when there was none),
 * -1 on a database error. */
int presence_remove(parley_db *db, const char *node, const char *program, long pid);
/* Deletes the rows not written since before (wall-clock ms). Returns how
 * many, or -1 on a database error. */
int presence_purge(parley_db *db, int64_t before);
/* The rows written at or after fresh_after as a new JSON array (caller
 * json_decrefs) in *out, ordered by node, program, pid:
 *   [{"node", "program", "pid", "counts": {...}, "upstreams": [...],
 *     "started_at", "updated_at"}...]
 * A row whose stored JSON does not parse shows {} / []. 0, or -1 on a
 * database error (*out untouched). */
int presence_list(parley_db *db, int64_t fresh_after, json_t **out);

/* ---- the reporter ---- */

/* Called by the reporter thread every PRESENCE_EVERY_MS: returns a NEW
 * JSON object transport -> count (the reporter json_decrefs it), or NULL
 * (then "{}"). Must be safe from that thread (atomic counters). */
typedef json_t *(*presence_counts_fn)(void *ud);

struct presence;

/* Starts the reporter of this process: a thread with its own database
 * connection (cfg->db_path, opened and retried by the thread) writing the
 * row (host name, program, getpid()) now and every PRESENCE_EVERY_MS, and
 * deleting stale rows. cfg (borrowed) and ud must outlive presence_stop.
 * program: "parley.fcgi" or "parley-ws" (copied). Returns the handle, or
 * NULL when the thread cannot start (nothing is reported then). Any
 * thread. */
struct presence *presence_start(const struct parley_config *cfg, const char *program,
                                presence_counts_fn counts, void *ud);
/* Stops the thread, deletes the row, frees p. NULL is a no-op. Call once,
 * from the thread that started it, before cfg is freed. */
void presence_stop(struct presence *p);

/* The upstreams cfg names as this process sees them (llm.h
 * llm_upstreams_status): a new JSON array of {"name", "provider", "url",
 * "breaker", "consecutive_failures", "requests", "successes", "errors":
 * {kind: n}, "first_token_ms_last", "first_token_ms_mean"}. NULL out of
 * memory. Any thread. */
json_t *presence_upstreams(const struct parley_config *cfg);
#endif
