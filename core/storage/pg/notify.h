/* storage/pg/notify.h — the doorbell across nodes on PostgreSQL (issue 10):
 * the NOTIFY a writing transaction sends, and the one LISTEN connection per
 * process that rings the process's listening bell (bell.h).
 *
 * Channel "parley_bell", payload: the event-log channel. PostgreSQL
 * delivers a NOTIFY when (and only if) its transaction commits, folds
 * identical ones of one transaction, and queues them in commit order.
 *
 * No libpq type appears here: bell.c includes this header and stays free of
 * SQL and libpq.
 */
#ifndef PARLEY_PG_NOTIFY_H
#define PARLEY_PG_NOTIFY_H
#include <stddef.h>
#include "db.h"

#define PGN_CHANNEL "parley_bell"
/* application_name of a listener's connection: "parley-bell/<pid>". */
#define PGN_APPNAME_PREFIX "parley-bell/"

struct parley_bell;
struct pgn_listener;

/* 1 when s is a PostgreSQL connection string (db_pg_is_conninfo). */
int pgn_is_conninfo(const char *s);

/* Queues NOTIFY parley_bell with channel as payload in db's open
 * transaction (SELECT pg_notify($1, $2), bound). Delivered at its commit,
 * dropped by its rollback. 0, or -1 with the failure recorded on db
 * (db_pg_fail). db must be a PostgreSQL connection in a transaction. */
int pgn_notify_tx(parley_db *db, const char *channel);

/* Connects to conninfo (application_name "parley-bell/<pid>"), runs
 * LISTEN parley_bell, then starts the listener thread: each notification
 * rings its channel on bell (bell_ring); a lost connection is logged once
 * (redacted), re-established with backoff (50 ms doubling to 5 s, for as
 * long as it takes), logged when back, and then bell_ring_all(bell).
 * Returns the listener, or NULL with err (never the password) when the
 * first connection or LISTEN fails (bounded: connect_timeout 10 s unless
 * the string sets one). bell must outlive the listener (pgn_free). */
struct pgn_listener *pgn_listen(const char *conninfo, struct parley_bell *bell,
                                char *err, size_t errlen);
/* Stops the thread and joins it (it leaves any wait at once; its libpq
 * calls never block), then closes the connection. Idempotent, safe from
 * any thread and concurrently; NULL accepted. */
void pgn_stop(struct pgn_listener *l);
/* pgn_stop, then frees. NULL accepted. */
void pgn_free(struct pgn_listener *l);
#endif
