/* evlog.c — the per-channel event log and the coalescing token writer.
 * See evlog.h. Every statement is prepared once per connection (db_stmt).
 * Each public function that touches storage dispatches on the backend: a
 * PostgreSQL connection (db_pg_conn) goes to storage/pg/evlog.c. */
#include "evlog.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/notify.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Two plain statements beat one INSERT ... SELECT max() ... RETURNING:
 * that form makes SQLite build two temporary tables per event (measured in
 * bench_evlog: 63% of a bare insert loop, against 90-100% for this). */
static const char SQL_NEXT[] = "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE channel = ?";
static const char SQL_APPEND[] =
    "INSERT INTO events(channel, seq, job_id, type, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char SQL_LAST[] = "SELECT coalesce(max(seq), 0) FROM events WHERE channel = ?";
static const char SQL_READ[] =
    "SELECT seq, job_id, type, data, created_at FROM events "
    "WHERE channel = ? AND seq > ? ORDER BY seq LIMIT ?";
static const char SQL_COMPACT[] =
    "DELETE FROM events WHERE job_id IN "
    "  (SELECT id FROM jobs WHERE state <> 'running' AND finished_at < ?1) "
    "AND seq < (SELECT max(e2.seq) FROM events e2 WHERE e2.channel = events.channel)";

int64_t evlog_append_tx(parley_db *db, const char *channel, int64_t job_id,
                        const char *type, const char *data, size_t len)
{
    if (db_pg_conn(db))
        return evlog_pg_append_tx(db, channel, job_id, type, data, len);
    /* The caller holds the write lock (BEGIN IMMEDIATE), so max(seq) + 1
     * cannot be taken by anyone else before the insert. */
    sqlite3_stmt *st = db_stmt(db, SQL_NEXT);
    if (!st)
        return -1;
    db_bind_text(st, 1, channel);
    int64_t seq = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (seq < 0 || !(st = db_stmt(db, SQL_APPEND)))
        return -1;
    db_bind_text(st, 1, channel);
    sqlite3_bind_int64(st, 2, seq);
    if (job_id > 0)
        sqlite3_bind_int64(st, 3, job_id);
    db_bind_text(st, 4, type);
    sqlite3_bind_text(st, 5, data ? data : "", data ? (int)len : 0, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now_ms());
    if (sqlite3_step(st) != SQLITE_DONE) {
        fprintf(stderr, "parley: evlog: append to %s failed: %s\n", channel, db_errmsg(db));
        seq = -1;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);     /* data was bound SQLITE_STATIC */
    return seq;
}

int64_t evlog_append(parley_db *db, parley_bell *bell, const char *channel,
                     int64_t job_id, const char *type, const char *data, size_t len)
{
    if (db_begin(db) < 0)
        return -1;
    int64_t seq = evlog_append_tx(db, channel, job_id, type, data, len);
    if (seq < 0) {
        db_rollback(db);
        return -1;
    }
    if (db_commit(db) < 0)
        return -1;
    if (bell)
        bell_ring(bell, channel);
    return seq;
}

int64_t evlog_last_seq(parley_db *db, const char *channel)
{
    if (db_pg_conn(db))
        return evlog_pg_last_seq(db, channel);
    sqlite3_stmt *st = db_stmt(db, SQL_LAST);
    if (!st)
        return -1;
    db_bind_text(st, 1, channel);
    int64_t seq = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return seq;
}

void evlog_free(struct evlog_event *ev, int n)
{
    if (!ev)
        return;
    for (int i = 0; i < n; i++) {
        free(ev[i].type);
        free(ev[i].data);
    }
    free(ev);
}

int evlog_read(parley_db *db, const char *channel, int64_t after, int max,
               struct evlog_event **out)
{
    if (db_pg_conn(db))
        return evlog_pg_read(db, channel, after, max, out);
    *out = NULL;
    if (max <= 0)
        max = 1000;
    sqlite3_stmt *st = db_stmt(db, SQL_READ);
    if (!st)
        return -1;
    db_bind_text(st, 1, channel);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, max);
    struct evlog_event *ev = NULL;
    int n = 0, cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            struct evlog_event *nev = realloc(ev, sizeof *ev * (size_t)ncap);
            if (!nev)
                goto error;
            ev = nev;
            cap = ncap;
        }
        struct evlog_event *e = &ev[n];
        memset(e, 0, sizeof *e);
        n++;
        e->seq = sqlite3_column_int64(st, 0);
        e->job_id = sqlite3_column_int64(st, 1);
        e->type = db_col_strdup(st, 2);
        const void *d = sqlite3_column_text(st, 3);
        e->data_len = (size_t)sqlite3_column_bytes(st, 3);
        e->data = malloc(e->data_len + 1);
        if (!e->type || !e->data)
            goto error;
        if (e->data_len)
            memcpy(e->data, d, e->data_len);
        e->data[e->data_len] = '\0';
        e->created_at = sqlite3_column_int64(st, 4);
    }
    if (rc != SQLITE_DONE)
        goto error;
    sqlite3_reset(st);
    *out = ev;
    return n;
error:
    fprintf(stderr, "parley: evlog: read of %s failed: %s\n", channel, db_errmsg(db));
    sqlite3_reset(st);
    evlog_free(ev, n);
    return -1;
}

int evlog_wait(parley_db *db, parley_bell *bell, const char *channel, int64_t after,
               int max, int timeout_ms, const volatile int *stop,
               struct evlog_event **out)
{
    int64_t deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : -1;
    *out = NULL;
    for (;;) {
        if (stop && *stop)
            return -1;
        uint32_t seen = bell ? bell_peek(bell, channel) : 0;
        int n = evlog_read(db, channel, after, max, out);
        if (n != 0)
            return n;
        int slice = 250;
        if (deadline >= 0) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                return 0;
            if (left < slice)
                slice = (int)left;
        }
        if (bell) {
            bell_wait(bell, channel, seen, slice);
        } else {
            struct timespec ts = { 0, 5 * 1000000L };   /* no bell: degraded mode */
            nanosleep(&ts, NULL);
        }
    }
}

int evlog_compact(parley_db *db, int64_t grace_ms, int64_t now)
{
    if (db_pg_conn(db))
        return evlog_pg_compact(db, grace_ms, now);
    if (db_begin(db) < 0)
        return -1;
    sqlite3_stmt *st = db_stmt(db, SQL_COMPACT);
    if (!st) {
        db_rollback(db);
        return -1;
    }
    sqlite3_bind_int64(st, 1, now - grace_ms);
    int rc = sqlite3_step(st);
    int n = sqlite3_changes(db_handle(db));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        db_rollback(db);
        return -1;
    }
    return db_commit(db) < 0 ? -1 : n;
}

/* ---- coalescing writer ---- */

void evw_init(struct evlog_writer *w, parley_db *db, parley_bell *bell,
              const char *channel, int64_t job_id, int coalesce_ms)
{
    memset(w, 0, sizeof *w);
    w->db = db;
    w->bell = bell;
    w->channel = channel;
    w->job_id = job_id;
    w->coalesce_ms = coalesce_ms < 0 ? 0 : coalesce_ms;
}

static int append_now(struct evlog_writer *w, const char *text, size_t len)
{
    int64_t seq = evlog_append(w->db, w->bell, w->channel, w->job_id, "token", text, len);
    if (seq < 0)
        return -1;
    w->last_seq = seq;
    w->events++;
    return 0;
}

int evw_token(struct evlog_writer *w, const char *text, size_t len)
{
    if (len == 0)
        return 0;
    int64_t now = mono_us();
    if (w->coalesce_ms == 0)
        return append_now(w, text, len);
    /* Nothing buffered and the last flush is older than the window: this
     * token starts a burst and goes out at once (lowest latency). */
    if (w->len == 0) {
        if (w->flushed_us == 0 || now - w->flushed_us >= (int64_t)w->coalesce_ms * 1000) {
            if (append_now(w, text, len) < 0)
                return -1;
            w->flushed_us = now;
            return 0;
        }
    }
    if (w->len + len + 1 > w->cap) {
        size_t ncap = w->cap ? w->cap : 256;
        while (ncap < w->len + len + 1)
            ncap *= 2;
        char *nb = realloc(w->buf, ncap);
        if (!nb)
            return -1;
        w->buf = nb;
        w->cap = ncap;
    }
    if (w->len == 0)
        w->first_us = now;
    memcpy(w->buf + w->len, text, len);
    w->len += len;
    return evw_tick(w);
}

int evw_flush(struct evlog_writer *w)
{
    if (w->len == 0)
        return 0;
    if (append_now(w, w->buf, w->len) < 0)
        return -1;
    w->len = 0;
    w->flushed_us = mono_us();
    return 0;
}

int evw_due_ms(const struct evlog_writer *w)
{
    if (w->len == 0)
        return -1;
    int64_t due = w->first_us + (int64_t)w->coalesce_ms * 1000 - mono_us();
    return due <= 0 ? 0 : (int)((due + 999) / 1000);
}

int evw_tick(struct evlog_writer *w)
{
    if (w->len == 0)
        return 0;
    if (mono_us() - w->first_us >= (int64_t)w->coalesce_ms * 1000)
        return evw_flush(w);
    return 0;
}

char *evw_take(struct evlog_writer *w, size_t *len)
{
    *len = 0;
    if (w->len == 0)
        return NULL;
    char *s = malloc(w->len + 1);
    if (!s)
        return NULL;
    memcpy(s, w->buf, w->len);
    s[w->len] = '\0';
    *len = w->len;
    w->len = 0;
    w->flushed_us = mono_us();
    return s;
}

void evw_cleanup(struct evlog_writer *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

void evlog_ring(parley_db *db, parley_bell *bell, const char *channel)
{
    if (bell)
        bell_ring(bell, channel);
    if (db && db_pg_conn(db))
        pgn_notify_tx(db, channel);     /* its own statement when no transaction is open */
}
