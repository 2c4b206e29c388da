/* storage/pg/jobs.c — the jobs module's PostgreSQL bodies (contracts: jobs.h;
 * jobs.c dispatches here when db_pg_conn(db) is not NULL).
 *
 * PostgreSQL (READ COMMITTED) lets claimers interleave where SQLite's
 * BEGIN IMMEDIATE made them run one at a time, so each decision rests on a
 * constraint or a row lock, never on a read followed by a write:
 *   - single flight: INSERT ... ON CONFLICT (channel, prompt_key) WHERE
 *     state = 'running' DO NOTHING RETURNING id, on the partial unique index
 *     jobs_single_flight (sql/pg/001_init.sql). Two claimers on two
 *     connections: the second's insert waits for the first's transaction,
 *     then inserts nothing; it then reads the committed running job and
 *     attaches to it (or, if that job's lease expired, fails it and tries
 *     again). Exactly one owner;
 *   - leases: failing an expired job is UPDATE ... WHERE state = 'running'
 *     AND lease_expires < now, so of a recovery and a renewal (or two
 *     recoveries) racing on one job, the one that comes second re-reads the
 *     row after the first's commit and changes zero rows;
 *   - no lock is held across anything slow: a claim's transaction is a few
 *     statements; the generation runs after it committed.
 * Every statement binds its values (db_pg_exec: text format, each statement prepared once per session). */
#include "storage/pg/pg.h"
#include "evlog.h"
#include "jobs.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How many times a claim retries when the running job it conflicted with
 * ended (or was failed) before it could read it. Each retry needs another
 * claimer to have finished a job in between, so this is never reached in
 * practice; it bounds the loop. */
#define CLAIM_TRIES 8

static const char SQL_INSERT[] =
    "INSERT INTO jobs(channel, prompt_key, state, lease_owner, lease_expires, first_seq, created_at, "
    "started_by) VALUES ($1, $2, 'running', $3, $4, $5, $6, $7) "
    "ON CONFLICT (channel, prompt_key) WHERE state = 'running' DO NOTHING RETURNING id";
static const char SQL_FIND_RUNNING[] =
    "SELECT id, coalesce(lease_expires, 0), first_seq FROM jobs "
    "WHERE channel = $1 AND prompt_key = $2 AND state = 'running'";
static const char SQL_ADOPT[] =
    "UPDATE jobs SET lease_owner = $1, lease_expires = $2 "
    "WHERE id = $3 AND state = 'running' AND lease_owner = $4";
static const char SQL_RENEW[] =
    "UPDATE jobs SET lease_expires = $1 WHERE id = $2 AND state = 'running' AND lease_owner = $3";
static const char SQL_FINISH[] =
    "UPDATE jobs SET state = $1, error = $2, finished_at = $3, lease_expires = NULL "
    "WHERE id = $4 AND state = 'running' AND lease_owner = $5";
static const char SQL_FAIL_EXPIRED[] =
    "UPDATE jobs SET state = 'failed', error = $1, finished_at = $2, lease_expires = NULL "
    "WHERE id = $3 AND state = 'running' AND lease_expires < $2 RETURNING channel";
static const char SQL_EXPIRED[] =
    "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < $1 ORDER BY id LIMIT 64";
static const char SQL_RUNNING_ON[] =
    "SELECT id, first_seq FROM jobs WHERE channel = $1 AND state = 'running' "
    "ORDER BY id DESC LIMIT 1";
static const char SQL_GET[] =
    "SELECT state, coalesce(lease_expires, 0), first_seq, coalesce(error, ''), "
    "coalesce(started_by, ''), (stop_requested_at IS NOT NULL)::int, (stopped_at IS NOT NULL)::int "
    "FROM jobs WHERE id = $1";
/* Stopping (docs/stop.md): the mark is one UPDATE on the job's row, so a
 * stop racing the job's end either lands while it runs (its owner sees it)
 * or changes nothing (the caller is told it was over). */
static const char SQL_STOP_PICK[] =
    "SELECT id FROM jobs WHERE channel = $1 ORDER BY (state = 'running') DESC, id DESC LIMIT 1";
static const char SQL_STOP_MARK[] =
    "UPDATE jobs SET stop_requested_at = coalesce(stop_requested_at, $1::bigint), "
    "stop_requested_by = coalesce(stop_requested_by, $2::text) "
    "WHERE id = $3 AND state = 'running' AND ($4::int = 1 OR started_by = $2::text) "
    "RETURNING channel";
static const char SQL_STOP_PENDING[] =
    "SELECT id FROM jobs WHERE lease_owner = $1 AND state = 'running' "
    "AND stop_requested_at IS NOT NULL LIMIT 256";
static const char SQL_FINISH_STOPPED[] =
    "UPDATE jobs SET state = 'done', stopped_at = $1::bigint, finished_at = $1::bigint, "
    "lease_expires = NULL WHERE id = $2 AND state = 'running' AND lease_owner = $3";

static int64_t col_i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

#define I64(buf, v) char buf[24]; snprintf(buf, sizeof buf, "%" PRId64, (int64_t)(v))

/* The JSON data of an "error" event. New string. */
static char *error_event_data(int64_t job_id, const char *kind, const char *msg)
{
    json_t *o = json_pack("{s:I, s:s, s:s}", "job_id", (json_int_t)job_id,
                          "message", msg, "kind", kind);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Inside a transaction: fails job_id if it is still running and its lease
 * expired before now, and appends its error event. Copies the channel into
 * chan for the caller's ring. 1 failed now, 0 not (someone else failed or
 * finished it first, or its owner renewed the lease), -1 on error. */
static int fail_expired_tx(parley_db *db, int64_t job_id, int64_t now, char *chan, size_t chanlen)
{
    I64(nows, now);
    I64(ids, job_id);
    const char *params[3] = { JOB_INTERRUPTED_MSG, nows, ids };
    PGresult *r = db_pg_run(db, SQL_FAIL_EXPIRED, 3, params, PGRES_TUPLES_OK, "jobs: fail expired");
    if (!r)
        return -1;
    int got = PQntuples(r) == 1;
    if (got)
        str_copy(chan, chanlen, PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!got)
        return 0;
    char *data = error_event_data(job_id, "interrupted", JOB_INTERRUPTED_MSG);
    if (!data)
        return -1;
    int64_t seq = evlog_append_tx(db, chan, job_id, "error", data, strlen(data));
    free(data);
    return seq < 0 ? -1 : 1;
}

int jobs_pg_claim(parley_db *db, parley_bell *bell, const char *channel,
                  const char *prompt_key, const char *user, int lease_ms,
                  struct job_claim *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rang = 0;
    if (db_can_write(db) < 0)
        return set_err(err, errlen, "cannot claim job on %s: %s", channel, db_errmsg(db));
    if (db_begin(db) < 0)
        return set_err(err, errlen, "database busy or unavailable: %s", db_errmsg(db));
    for (int attempt = 0; attempt < CLAIM_TRIES; attempt++) {
        int64_t now = now_ms();
        int64_t first = evlog_last_seq(db, channel);
        if (first < 0)
            goto error;
        I64(expires, now + lease_ms);
        I64(firsts, first);
        I64(nows, now);
        const char *ins[7] = { channel, prompt_key, owner_id(), expires, firsts, nows, user };
        PGresult *r = db_pg_run(db, SQL_INSERT, 7, ins, PGRES_TUPLES_OK, "jobs: claim");
        if (!r)
            goto error;
        if (PQntuples(r) == 1) {               /* ours: no job was running */
            out->job_id = col_i64(r, 0, 0);
            out->owner = 1;
            out->first_seq = first;
            str_copy(out->lease_owner, sizeof out->lease_owner, owner_id());
            PQclear(r);
            if (db_commit(db) < 0)
                return set_err(err, errlen, "commit failed: %s", db_errmsg(db));
            if (rang && bell)
                db_ring_at_end(db, bell, channel);
            return 0;
        }
        PQclear(r);
        /* A running job holds the key (committed: the insert waited for
         * its transaction). Each statement reads what is committed now. */
        const char *find[2] = { channel, prompt_key };
        r = db_pg_run(db, SQL_FIND_RUNNING, 2, find, PGRES_TUPLES_OK, "jobs: find running");
        if (!r)
            goto error;
        if (PQntuples(r) == 0) {               /* it ended meanwhile: try again */
            PQclear(r);
            continue;
        }
        int64_t id = col_i64(r, 0, 0), lease = col_i64(r, 0, 1), fseq = col_i64(r, 0, 2);
        PQclear(r);
        now = now_ms();
        if (lease >= now) {                    /* live: attach */
            out->job_id = id;
            out->owner = 0;
            out->first_seq = fseq;
            if (db_commit(db) < 0)
                return set_err(err, errlen, "commit failed: %s", db_errmsg(db));
            if (rang && bell)
                db_ring_at_end(db, bell, channel);
            return 0;
        }
        char chan[512];
        int f = fail_expired_tx(db, id, now, chan, sizeof chan);
        if (f < 0)
            goto error;
        rang |= f;                             /* 0: renewed or failed by another: look again */
    }
    set_err(err, errlen, "cannot claim job on %s: the running job changed %d times in a row",
            channel, CLAIM_TRIES);
    db_rollback(db);
    return -1;
error:
    set_err(err, errlen, "cannot claim job on %s: %s", channel, db_errmsg(db));
    db_rollback(db);
    return -1;
}

/* Seed 001's queue (jobs_claim_turn): the conversation's row lock orders
 * two claimers of one conversation; the rest reads committed rows under it. */
static const char SQL_TURN_LOCK[] = "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE";
static const char SQL_TURN_OLDEST[] =
    "SELECT id FROM messages WHERE conversation_id = $1 AND queued = 1 "
    "ORDER BY created_at, rowid LIMIT 1";
static const char SQL_TURN_TAKE[] =
    "UPDATE messages SET queued = 0, created_at = GREATEST($2::bigint, (SELECT coalesce(max(created_at), 0) + 1 "
    "FROM messages WHERE conversation_id = $3 AND queued = 0)) WHERE id = $1 AND queued = 1";

int jobs_pg_claim_turn(parley_db *db, parley_bell *bell, const char *channel, const char *conv_id,
                       const char *msg_id, const char *user, int lease_ms, struct job_claim *out,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rang = 0, rc = JOBS_TURN_ERR;
    if (db_can_write(db) < 0)
        return set_err(err, errlen, "cannot claim a turn on %s: %s", channel, db_errmsg(db));
    if (db_begin(db) < 0)
        return set_err(err, errlen, "database busy or unavailable: %s", db_errmsg(db));
    const char *lk[1] = { conv_id };
    PGresult *r = db_pg_run(db, SQL_TURN_LOCK, 1, lk, PGRES_TUPLES_OK, "jobs: lock conversation");
    if (!r)
        goto error;
    int exists = PQntuples(r) == 1;
    PQclear(r);
    if (!exists) {
        rc = JOBS_TURN_EMPTY;
        goto commit;
    }
    int64_t now = now_ms();
    for (int i = 0; i < 64; i++) {
        const char *ch[1] = { channel };
        if (!(r = db_pg_run(db, SQL_RUNNING_ON, 1, ch, PGRES_TUPLES_OK, "jobs: running on")))
            goto error;
        if (PQntuples(r) == 0) {
            PQclear(r);
            break;
        }
        int64_t id = col_i64(r, 0, 0), fseq = col_i64(r, 0, 1);
        PQclear(r);
        struct job_info ji;
        int g = jobs_pg_get(db, id, &ji);
        if (g < 0)
            goto error;
        if (g == 1 || strcmp(ji.state, "running") != 0)
            continue;                  /* it ended meanwhile: look again */
        if (ji.lease_expires >= now) {
            out->job_id = id;
            out->first_seq = fseq;
            rc = JOBS_TURN_BUSY;
            goto commit;
        }
        char chan[512];
        int f = fail_expired_tx(db, id, now, chan, sizeof chan);
        if (f < 0)
            goto error;
        rang |= f;
    }
    if (!(r = db_pg_run(db, SQL_TURN_OLDEST, 1, lk, PGRES_TUPLES_OK, "jobs: oldest queued")))
        goto error;
    char first_id[64] = "";
    if (PQntuples(r) == 1)
        str_copy(first_id, sizeof first_id, PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!first_id[0] || strcmp(first_id, msg_id) != 0) {
        rc = first_id[0] ? JOBS_TURN_MOVED : JOBS_TURN_EMPTY;
        goto commit;
    }
    I64(nows, now);
    const char *tk[3] = { msg_id, nows, conv_id };
    if (db_pg_command(db, SQL_TURN_TAKE, 3, tk, "jobs: take queued message") != 1)
        goto error;
    int64_t first = evlog_last_seq(db, channel);
    if (first < 0)
        goto error;
    I64(expires, now + lease_ms);
    I64(firsts, first);
    const char *ins[7] = { channel, msg_id, owner_id(), expires, firsts, nows, user };
    if (!(r = db_pg_run(db, SQL_INSERT, 7, ins, PGRES_TUPLES_OK, "jobs: claim turn")))
        goto error;
    if (PQntuples(r) != 1) {         /* a job of that very message runs: not a queued turn */
        PQclear(r);
        set_err(err, errlen, "cannot claim a turn on %s: message %s is already being answered",
                channel, msg_id);
        db_rollback(db);
        return JOBS_TURN_ERR;
    }
    out->job_id = col_i64(r, 0, 0);
    out->owner = 1;
    out->first_seq = first;
    str_copy(out->lease_owner, sizeof out->lease_owner, owner_id());
    PQclear(r);
    rc = JOBS_TURN_OK;
commit:
    if (db_commit(db) < 0)
        return set_err(err, errlen, "commit failed: %s", db_errmsg(db));
    if (rang && bell)
        db_ring_at_end(db, bell, channel);
    return rc;
error:
    set_err(err, errlen, "cannot claim a turn on %s: %s", channel, db_errmsg(db));
    db_rollback(db);
    return JOBS_TURN_ERR;
}

int jobs_pg_adopt(parley_db *db, struct job_claim *claim, int lease_ms)
{
    I64(expires, now_ms() + lease_ms);
    I64(ids, claim->job_id);
    const char *params[4] = { owner_id(), expires, ids, claim->lease_owner };
    if (db_pg_command(db, SQL_ADOPT, 4, params, "jobs: adopt") != 1)
        return -1;
    str_copy(claim->lease_owner, sizeof claim->lease_owner, owner_id());
    return 0;
}

int jobs_pg_renew(parley_db *db, int64_t job_id, int lease_ms)
{
    I64(expires, now_ms() + lease_ms);
    I64(ids, job_id);
    const char *params[3] = { expires, ids, owner_id() };
    return db_pg_command(db, SQL_RENEW, 3, params, "jobs: renew") == 1 ? 0 : -1;
}

int jobs_pg_finish_tx(parley_db *db, int64_t job_id, const char *error)
{
    I64(nows, now_ms());
    I64(ids, job_id);
    const char *params[5] = { error ? "failed" : "done", error, nows, ids, owner_id() };
    return db_pg_command(db, SQL_FINISH, 5, params, "jobs: finish") == 1 ? 0 : -1;
}

int jobs_pg_expired(parley_db *db, int64_t now, int64_t *ids, int max)
{
    I64(nows, now);
    const char *params[1] = { nows };
    PGresult *r = db_pg_run(db, SQL_EXPIRED, 1, params, PGRES_TUPLES_OK, "jobs: expired");
    if (!r)
        return -1;
    int n = PQntuples(r) < max ? PQntuples(r) : max;
    for (int k = 0; k < n; k++)
        ids[k] = col_i64(r, k, 0);
    PQclear(r);
    return n;
}

int jobs_pg_fail_expired_tx(parley_db *db, int64_t job_id, int64_t now, char *chan, size_t chanlen)
{
    return fail_expired_tx(db, job_id, now, chan, chanlen);
}

int jobs_pg_running_on(parley_db *db, const char *channel, int64_t *job_id, int64_t *first_seq)
{
    const char *params[1] = { channel };
    PGresult *r = db_pg_run(db, SQL_RUNNING_ON, 1, params, PGRES_TUPLES_OK, "jobs: running on");
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found) {
        *job_id = col_i64(r, 0, 0);
        *first_seq = col_i64(r, 0, 1);
    }
    PQclear(r);
    return found ? 0 : 1;
}

int jobs_pg_get(parley_db *db, int64_t job_id, struct job_info *out)
{
    memset(out, 0, sizeof *out);
    I64(ids, job_id);
    const char *params[1] = { ids };
    PGresult *r = db_pg_run(db, SQL_GET, 1, params, PGRES_TUPLES_OK, "jobs: get");
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found) {
        out->id = job_id;
        str_copy(out->state, sizeof out->state, PQgetvalue(r, 0, 0));
        out->lease_expires = col_i64(r, 0, 1);
        out->first_seq = col_i64(r, 0, 2);
        str_copy(out->error, sizeof out->error, PQgetvalue(r, 0, 3));
        str_copy(out->started_by, sizeof out->started_by, PQgetvalue(r, 0, 4));
        out->stop_requested = (int)col_i64(r, 0, 5);
        out->stopped = (int)col_i64(r, 0, 6);
    }
    PQclear(r);
    return found ? 0 : 1;
}

int jobs_pg_stop_pick(parley_db *db, const char *channel, int64_t *job)
{
    const char *params[1] = { channel };
    PGresult *r = db_pg_run(db, SQL_STOP_PICK, 1, params, PGRES_TUPLES_OK, "jobs: stop pick");
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found)
        *job = col_i64(r, 0, 0);
    PQclear(r);
    return found ? 0 : 1;
}

int jobs_pg_stop_mark(parley_db *db, int64_t job_id, const char *user, int admin, int64_t now,
                      char *chan, size_t chanlen)
{
    I64(nows, now);
    I64(ids, job_id);
    const char *params[4] = { nows, user ? user : "", ids, admin ? "1" : "0" };
    PGresult *r = db_pg_run(db, SQL_STOP_MARK, 4, params, PGRES_TUPLES_OK, "jobs: stop");
    if (!r)
        return -1;
    int got = PQntuples(r) == 1;
    if (got)
        str_copy(chan, chanlen, PQgetvalue(r, 0, 0));
    PQclear(r);
    return got;
}

int jobs_pg_stop_pending(parley_db *db, const char *lease_owner, int64_t *ids, int max)
{
    const char *params[1] = { lease_owner };
    PGresult *r = db_pg_run(db, SQL_STOP_PENDING, 1, params, PGRES_TUPLES_OK, "jobs: stop pending");
    if (!r)
        return -1;
    int n = PQntuples(r) < max ? PQntuples(r) : max;
    for (int k = 0; k < n; k++)
        ids[k] = col_i64(r, k, 0);
    PQclear(r);
    return n;
}

int jobs_pg_finish_stopped_tx(parley_db *db, int64_t job_id)
{
    I64(nows, now_ms());
    I64(ids, job_id);
    const char *params[3] = { nows, ids, owner_id() };
    return db_pg_command(db, SQL_FINISH_STOPPED, 3, params, "jobs: finish stopped") == 1 ? 0 : -1;
}
