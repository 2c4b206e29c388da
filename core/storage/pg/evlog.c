/* storage/pg/evlog.c — the event log's PostgreSQL bodies (contracts: evlog.h;
 * evlog.c dispatches here when db_pg_conn(db) is not NULL).
 *
 * Seqs: an append bumps the channel's row of event_channels with
 * INSERT ... ON CONFLICT DO UPDATE ... RETURNING inside the appending
 * transaction, so concurrent writers of one channel queue on that row lock
 * (READ COMMITTED re-reads the committed row) and get dense, unique seqs;
 * a rolled-back append rolls its bump back too. Each append also queues
 * NOTIFY parley_bell '<channel>' (storage/pg/notify.h) in its transaction:
 * every node's doorbell rings at the commit, none at a rollback. The three
 * are one statement (one round trip). Every statement binds its values
 * (db_pg_exec, prepared once per session); event data goes and comes back
 * as bytes (bytea, binary format). */
#include "storage/pg/pg.h"
#include "storage/pg/notify.h"
#include "evlog.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One round trip per append: bump the channel's seq (the row lock orders
 * writers of one channel), insert the event with it, queue the NOTIFY of
 * every node's doorbell (delivered at commit, dropped at rollback). A
 * data-modifying WITH runs exactly once; the notify runs once for the one
 * row the insert returns. */
static const char SQL_APPEND[] =
    "WITH b AS (INSERT INTO event_channels(channel, last_seq) VALUES ($1, 1) "
    "           ON CONFLICT (channel) DO UPDATE SET last_seq = event_channels.last_seq + 1 "
    "           RETURNING last_seq), "
    "     i AS (INSERT INTO events(channel, seq, job_id, type, data, created_at) "
    "           SELECT $1, b.last_seq, $2, $3, $4, $5 FROM b RETURNING seq) "
    "SELECT i.seq, pg_notify('" PGN_CHANNEL "', $1) FROM i";
static const char SQL_LAST[] = "SELECT coalesce(max(seq), 0) FROM events WHERE channel = $1";
static const char SQL_READ[] =
    "SELECT seq, coalesce(job_id, 0), type, data, created_at FROM events "
    "WHERE channel = $1 AND seq > $2 ORDER BY seq LIMIT $3";
static const char SQL_COMPACT[] =
    "DELETE FROM events WHERE job_id IN "
    "  (SELECT id FROM jobs WHERE state <> 'running' AND finished_at < $1) "
    "AND seq < (SELECT max(e2.seq) FROM events e2 WHERE e2.channel = events.channel)";

/* A bigint column of a binary-format result (network byte order). */
static int64_t get_i64(const PGresult *r, int row, int col)
{
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    if (PQgetlength(r, row, col) != 8)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

/* A one-row, one-column bigint query with text parameters; -1 on error. */
static int64_t one_i64(parley_db *db, const char *sql, int n, const char *const *params,
                       const char *what)
{
    PGresult *r = db_pg_exec(db, sql, n, params, NULL, NULL, 1);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1)
        v = get_i64(r, 0, 0);
    else
        db_pg_fail(db, what, r);
    PQclear(r);
    return v;
}

int64_t evlog_pg_append_tx(parley_db *db, const char *channel, int64_t job_id,
                           const char *type, const char *data, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return -1;
    char jobs[24], now[24];
    snprintf(jobs, sizeof jobs, "%" PRId64, job_id);
    snprintf(now, sizeof now, "%" PRId64, now_ms());
    const char *params[5] = { channel, job_id > 0 ? jobs : NULL, type, data ? data : "", now };
    int lengths[5] = { 0, 0, 0, data ? (int)len : 0, 0 };
    int formats[5] = { 0, 0, 0, 1, 0 };      /* data as bytes */
    PGresult *r = db_pg_exec(db, SQL_APPEND, 5, params, lengths, formats, 1);
    int64_t seq = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        seq = get_i64(r, 0, 0);
    else
        db_pg_fail(db, "evlog: append", r);
    PQclear(r);
    return seq;
}

int64_t evlog_pg_last_seq(parley_db *db, const char *channel)
{
    const char *params[1] = { channel };
    return one_i64(db, SQL_LAST, 1, params, "evlog: last seq");
}

int evlog_pg_read(parley_db *db, const char *channel, int64_t after, int max,
                  struct evlog_event **out)
{
    *out = NULL;
    if (max <= 0)
        max = 1000;
    char afters[24], maxs[16];
    snprintf(afters, sizeof afters, "%" PRId64, after);
    snprintf(maxs, sizeof maxs, "%d", max);
    const char *params[3] = { channel, afters, maxs };
    PGresult *r = db_pg_exec(db, SQL_READ, 3, params, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        db_pg_fail(db, "evlog: read", r);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    struct evlog_event *ev = n ? calloc((size_t)n, sizeof *ev) : NULL;
    if (n && !ev)
        goto oom;
    for (int i = 0; i < n; i++) {
        struct evlog_event *e = &ev[i];
        e->seq = get_i64(r, i, 0);
        e->job_id = get_i64(r, i, 1);
        e->type = strndup(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
        e->data_len = (size_t)PQgetlength(r, i, 3);
        e->data = malloc(e->data_len + 1);
        if (!e->type || !e->data)
            goto oom;
        if (e->data_len)
            memcpy(e->data, PQgetvalue(r, i, 3), e->data_len);
        e->data[e->data_len] = '\0';
        e->created_at = get_i64(r, i, 4);
    }
    PQclear(r);
    *out = ev;
    return n;
oom:
    fprintf(stderr, "parley: evlog: read of %s: out of memory\n", channel);
    evlog_free(ev, n);
    PQclear(r);
    return -1;
}

int evlog_pg_compact(parley_db *db, int64_t grace_ms, int64_t now)
{
    if (db_begin(db) < 0)
        return -1;
    char before[24];
    snprintf(before, sizeof before, "%" PRId64, now - grace_ms);
    const char *params[1] = { before };
    PGresult *r = db_pg_exec(db, SQL_COMPACT, 1, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        db_pg_fail(db, "evlog: compact", r);
        PQclear(r);
        db_rollback(db);
        return -1;
    }
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    return db_commit(db) < 0 ? -1 : n;
}
