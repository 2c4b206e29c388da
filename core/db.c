/* db.c — SQLite connection setup, migrations, statement cache, transactions,
 * and the repair of read-only or broken connections; the choice of backend
 * at db_open (a PostgreSQL connection string goes to storage/pg/conn.c, and every
 * function of db.h dispatches on it).
 * See db.h and db_sqlite.h for the contract. One parley_db per thread. */
#include "db_sqlite.h"
#include "bell.h"
#include "ident.h"
#include "storage/pg/pg.h"
#include "migrations.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define STMT_CACHE 64
#define BUSY_WAIT_MS 30000
#define CHECKPOINT_PAGES 1000  /* SQLite's default wal_autocheckpoint */
/* Below this much free space the database counts as not writable (db.h). */
#define DB_MIN_FREE_BYTES (1024ull * 1024ull)

/* The in-process write gate (db.h): one mutex per database path, taken
 * before BEGIN IMMEDIATE and released at COMMIT/ROLLBACK, so this
 * process's writers queue in the kernel and take SQLite's write lock one
 * after the other instead of retrying through the busy handler. Gates live
 * until exit (one per distinct path). */
struct write_gate {
    char *path;
    pthread_mutex_t mu;
    int readonly_seen;         /* last logged state (atomic): 1 read-only */
    struct write_gate *next;
};
static pthread_mutex_t gates_lock = PTHREAD_MUTEX_INITIALIZER;
static struct write_gate *gates;

static struct write_gate *gate_for(const char *path)
{
    pthread_mutex_lock(&gates_lock);
    struct write_gate *g = gates;
    while (g && strcmp(g->path, path) != 0)
        g = g->next;
    if (!g && (g = calloc(1, sizeof *g)) != NULL) {
        if (!(g->path = strdup(path)) || pthread_mutex_init(&g->mu, NULL) != 0) {
            free(g->path);
            free(g);
            g = NULL;
        } else {
            g->next = gates;
            gates = g;
        }
    }
    pthread_mutex_unlock(&gates_lock);
    return g;
}

struct stmt_slot { const char *sql; sqlite3_stmt *st; };

struct parley_db {
    sqlite3 *h;
    struct db_pg *pg;          /* non-NULL: a PostgreSQL connection (h is NULL) */
    char *path;                /* SQLite: the path; PostgreSQL: the redacted string */
    int in_tx;                 /* transactions open: 1 the outermost, more are savepoints */
    struct write_gate *gate;   /* NULL: none (out of memory at open) */
    int gated;                 /* this connection holds gate->mu */
    int ckpt_due;              /* a checkpoint waits for the gate's release */
    int refused;               /* the last failure was "read-only" (kept over a rollback) */
    int broken;                /* BEGIN/COMMIT failed in a way that calls for a reopen */
    int64_t reopen_failed_ms;  /* mono_ms() of the last failed reopen (0: none) */
    unsigned rnd;
    struct stmt_slot cache[STMT_CACHE];
    int ncache;
    /* cached-answer versions (db_answer_version): the doorbell file, mapped
     * at the first need (NULL: not yet, or it does not exist); the tickets
     * whose answers changed in the open transaction, rung at its end */
    parley_bell *ans_bell;
    char ans_pending[4][IDENT_TICKET_STORED_MAX + 1];
    int ans_npending;
    int ans_overflow;          /* more tickets than that: ring "answer:*" */
    /* db_ring_at_end: channels to ring when the open transaction ends */
    parley_bell *ring_bell;
    char ring_pending[4][256];
    int ring_npending;
    int ring_overflow;         /* more than that (or a longer name): ring every slot */
    int64_t ans_bell_retry_ms; /* a reader's failed mapping: not again before */
};

/* Busy handler: short randomised sleeps (50-550 us, growing to ~2 ms), so
 * that many writers interleave tightly, for up to BUSY_WAIT_MS in all.
 * sqlite3_busy_timeout() sleeps 1..100 ms, which wastes most of the lock's
 * free time when transactions last tens of microseconds. */
static int busy_handler(void *ud, int count)
{
    parley_db *db = ud;
    static const int cap_us = 2000;
    db->rnd = db->rnd * 1103515245u + 12345u;
    int base = 50 + count * 10;
    if (base > cap_us)
        base = cap_us;
    int us = base + (int)((db->rnd >> 8) % 500u);
    /* total slept is at most count * (cap_us + 500) us */
    if ((int64_t)count * (cap_us + 500) / 1000 > BUSY_WAIT_MS)
        return 0;
    struct timespec ts = { 0, (long)us * 1000L };
    nanosleep(&ts, NULL);
    return 1;
}

/* The WAL auto-checkpoint, moved out of the write gate. SQLite's own runs
 * inside the COMMIT step, i.e. while this connection still holds the
 * process's write gate, so every other writer of the process would wait
 * for the checkpoint's copy and fsync (tens of ms) although SQLite lets
 * writers go on during a passive checkpoint. So a commit under the gate
 * only notes that one is due, and db_commit runs it after the release. */
static int wal_hook(void *ud, sqlite3 *h, const char *name, int pages)
{
    parley_db *db = ud;
    if (pages < CHECKPOINT_PAGES)
        return SQLITE_OK;
    if (db->gated)
        db->ckpt_due = 1;
    else
        sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

static int exec_simple(sqlite3 *h, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, "%s", msg ? msg : sqlite3_errmsg(h));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int get_user_version(sqlite3 *h)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int db_latest_version(void)
{
    int v = 0;
    for (int i = 0; i < parley_migrations_count; i++)
        if (parley_migrations[i].version > v)
            v = parley_migrations[i].version;
    return v;
}

/* Applies every migration above the current user_version, each in its own
 * IMMEDIATE transaction that re-reads the version first, so several
 * processes opening a new database at once apply each migration once. */
static int migrate(parley_db *db, char *err, size_t errlen)
{
    int latest = db_latest_version();
    int v = get_user_version(db->h);
    if (v < 0)
        return set_err(err, errlen, "%s: cannot read schema version: %s", db->path,
                       sqlite3_errmsg(db->h));
    if (v > latest)
        return set_err(err, errlen,
                       "%s: database schema version %d is newer than this Parley "
                       "understands (%d); upgrade Parley or use another PARLEY_DB",
                       db->path, v, latest);
    for (int i = 0; i < parley_migrations_count; i++) {
        const struct migration *m = &parley_migrations[i];
        if (m->version <= v)
            continue;
        if (exec_simple(db->h, "BEGIN IMMEDIATE", err, errlen) < 0)
            return -1;
        int cur = get_user_version(db->h);
        if (cur >= m->version) {              /* another process did it */
            exec_simple(db->h, "COMMIT", NULL, 0);
            v = cur;
            continue;
        }
        char verr[256];
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", m->version);
        if (exec_simple(db->h, m->sql, verr, sizeof verr) < 0 ||
            exec_simple(db->h, pragma, verr, sizeof verr) < 0) {
            exec_simple(db->h, "ROLLBACK", NULL, 0);
            return set_err(err, errlen, "%s: migration %s failed: %s", db->path, m->name, verr);
        }
        if (exec_simple(db->h, "COMMIT", err, errlen) < 0)
            return -1;
        v = m->version;
    }
    return 0;
}

static int file_writable(const char *path);

/* SQLite gives an empty -wal file the permission bits of the database file
 * each time a connection opens it, so a connection opened during a
 * read-only spell (chmod 0444) leaves a 0444 -wal behind; the next
 * connection after the spell then opens the WAL read-only and cannot write
 * although the database file can be written (it restores the bits itself,
 * too late for its own writes). So before opening a handle: when the
 * database file can be written and its -wal exists but cannot, give the
 * -wal the database file's bits, as SQLite would. */
static void wal_fix_mode(const char *path)
{
    char wal[4096];
    struct stat sb;
    if ((size_t)snprintf(wal, sizeof wal, "%s-wal", path) >= sizeof wal)
        return;
    if (faccessat(AT_FDCWD, wal, F_OK, AT_EACCESS) != 0 || file_writable(wal) ||
        !file_writable(path) || stat(path, &sb) != 0)
        return;
    if (chmod(wal, sb.st_mode & 0777) == 0)
        fprintf(stderr, "parley: db: %s had the permissions of a read-only spell; restored\n", wal);
}

/* Opens path into *out with the connection setup every handle gets (busy
 * handler, PRAGMAs). flags: SQLite open flags. 0, or -1 with err set and
 * *out NULL. */
static int connect_handle(parley_db *db, const char *path, int flags, sqlite3 **out,
                          char *err, size_t errlen)
{
    sqlite3 *h = NULL;
    *out = NULL;
    wal_fix_mode(path);
    if (sqlite3_open_v2(path, &h, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        set_err(err, errlen, "%s: cannot open database: %s", path,
                h ? sqlite3_errmsg(h) : "out of memory");
        sqlite3_close_v2(h);
        return -1;
    }
    sqlite3_extended_result_codes(h, 1);
    sqlite3_busy_handler(h, busy_handler, db);
    char inner[256];
    if (exec_simple(h,
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA foreign_keys=ON;"
                    "PRAGMA temp_store=MEMORY;", inner, sizeof inner) < 0) {
        set_err(err, errlen, "%s: cannot configure database: %s", path, inner);
        sqlite3_close_v2(h);
        return -1;
    }
    *out = h;
    return 0;
}

/* A PostgreSQL connection string: connect, migrate (storage/pg/conn.c). */
static parley_db *open_pg(const char *conninfo, char *err, size_t errlen)
{
    parley_db *db = calloc(1, sizeof *db);
    if (!db || !(db->path = db_pg_redact(conninfo, NULL))) {
        free(db);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    db->pg = pgc_open(conninfo, db->path, err, errlen);
    if (!db->pg) {
        free(db->path);
        free(db);
        return NULL;
    }
    return db;
}

parley_db *db_open(const char *path, char *err, size_t errlen)
{
    if (db_pg_is_conninfo(path))
        return open_pg(path, err, errlen);
    parley_db *db = calloc(1, sizeof *db);
    if (!db) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    db->path = strdup(path ? path : "");
    db->rnd = (unsigned)mono_us() ^ (unsigned)(uintptr_t)db;
    if (!db->path || !path || !*path) {
        set_err(err, errlen, "PARLEY_DB: no database path given");
        goto error;
    }
    if (connect_handle(db, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db->h,
                       err, errlen) < 0)
        goto error;
    if (migrate(db, err, errlen) < 0)
        goto error;
    db->gate = gate_for(path);
    sqlite3_wal_hook(db->h, wal_hook, db);   /* replaces the auto-checkpoint */
    return db;
error:
    db_close(db);
    return NULL;
}

static void gate_leave(parley_db *db)
{
    if (db->gated) {
        db->gated = 0;
        pthread_mutex_unlock(&db->gate->mu);
    }
}

/* Takes the gate, waiting at most BUSY_WAIT_MS like the busy handler would;
 * past that (a holder stuck, or this thread holding it through another
 * connection) it goes on without the gate and SQLite's lock decides. */
static void gate_enter(parley_db *db)
{
    if (!db->gate || db->gated || db->in_tx)
        return;
    if (pthread_mutex_trylock(&db->gate->mu) == 0) {
        db->gated = 1;
        return;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += BUSY_WAIT_MS / 1000;
    int rc;
    while ((rc = pthread_mutex_timedlock(&db->gate->mu, &until)) == EINTR)
        ;
    if (rc == 0)
        db->gated = 1;
}

static void cache_clear(parley_db *db)
{
    for (int i = 0; i < db->ncache; i++)
        sqlite3_finalize(db->cache[i].st);
    db->ncache = 0;
}

/* ---- cached-answer versions (db.h) ---- */

/* The doorbell file of db's database, mapped once; create: map it even if
 * it must be created first (a reader), else only if it exists (a writer:
 * without the file nobody can hold a version). NULL when unavailable. */
static parley_bell *ans_bell(parley_db *db, int create)
{
    if (db->ans_bell || db->pg || !db->path)
        return db->ans_bell;
    char path[4096], err[256];
    if (ident_bell_path(db->path, path, sizeof path) < 0)
        return NULL;
    if (!create && access(path, F_OK) != 0)
        return NULL;
    if (create && db->ans_bell_retry_ms && mono_ms() < db->ans_bell_retry_ms)
        return NULL;
    db->ans_bell = bell_open(path, err, sizeof err);
    if (!db->ans_bell && create)
        db->ans_bell_retry_ms = mono_ms() + 10000;
    return db->ans_bell;
}

#define ANS_KEY_ALL "answer:*"   /* every ticket's version moves with it */

static void ans_ring(parley_db *db, const char *key)
{
    parley_bell *b = ans_bell(db, 0);
    if (b)
        bell_ring(b, key);
}

static void ans_ring_ticket(parley_db *db, const char *ticket_id)
{
    char key[IDENT_TICKET_STORED_MAX + 16];
    snprintf(key, sizeof key, "answer:%s", ticket_id);
    ans_ring(db, key);
}

/* Rings the tickets noted in the transaction that just ended (committed or
 * not: a ring for nothing costs a reader one read). */
static void ans_ring_pending(parley_db *db)
{
    for (int i = 0; i < db->ans_npending; i++)
        ans_ring_ticket(db, db->ans_pending[i]);
    if (db->ans_overflow)
        ans_ring(db, ANS_KEY_ALL);
    db->ans_npending = 0;
    db->ans_overflow = 0;
}

/* Rings the channels db_ring_at_end noted, once no transaction is open. */
static void ring_pending_end(parley_db *db)
{
    if (!db->ring_bell || (db->pg ? pgc_in_tx(db->pg) : db->in_tx) > 0)
        return;
    for (int i = 0; i < db->ring_npending; i++)
        bell_ring(db->ring_bell, db->ring_pending[i]);
    if (db->ring_overflow)
        bell_ring_all(db->ring_bell);
    db->ring_npending = 0;
    db->ring_overflow = 0;
    db->ring_bell = NULL;
}

void db_ring_at_end(parley_db *db, parley_bell *bell, const char *channel)
{
    if (!bell || !channel)
        return;
    int open = db ? (db->pg ? pgc_in_tx(db->pg) : db->in_tx) : 0;
    if (!open || (db->ring_bell && db->ring_bell != bell)) {
        bell_ring(bell, channel);           /* nothing to wait for (or another bell: now) */
        return;
    }
    db->ring_bell = bell;
    for (int i = 0; i < db->ring_npending; i++)
        if (strcmp(db->ring_pending[i], channel) == 0)
            return;
    if (db->ring_npending < (int)(sizeof db->ring_pending / sizeof db->ring_pending[0]) &&
        strlen(channel) < sizeof db->ring_pending[0])
        str_copy(db->ring_pending[db->ring_npending++], sizeof db->ring_pending[0], channel);
    else
        db->ring_overflow = 1;
}

int db_answer_version(parley_db *db, const char *ticket_id, uint64_t *v)
{
    parley_bell *b = db && ticket_id ? ans_bell(db, 1) : NULL;
    if (!b)
        return 0;
    char key[IDENT_TICKET_STORED_MAX + 16];
    snprintf(key, sizeof key, "answer:%s", ticket_id);
    *v = (uint64_t)bell_peek(b, ANS_KEY_ALL) << 32 | bell_peek(b, key);
    return 1;
}

void db_answer_changed(parley_db *db, const char *ticket_id)
{
    if (!db || db->pg || !ticket_id)
        return;
    if (db->in_tx == 0 && (!db->h || sqlite3_get_autocommit(db->h))) {
        ans_ring_ticket(db, ticket_id);     /* already committed */
        return;
    }
    for (int i = 0; i < db->ans_npending; i++)
        if (strcmp(db->ans_pending[i], ticket_id) == 0)
            return;
    if (db->ans_npending < (int)(sizeof db->ans_pending / sizeof db->ans_pending[0]) &&
        strlen(ticket_id) < sizeof db->ans_pending[0])
        str_copy(db->ans_pending[db->ans_npending++], sizeof db->ans_pending[0], ticket_id);
    else
        db->ans_overflow = 1;
}

void db_close(parley_db *db)
{
    if (!db)
        return;
    if (db->pg) {
        pgc_close(db->pg);
        free(db->path);
        free(db);
        return;
    }
    if (db->h && !sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    ans_ring_pending(db);
    db->in_tx = 0;
    ring_pending_end(db);
    bell_close(db->ans_bell);
    gate_leave(db);
    cache_clear(db);
    if (db->h)
        sqlite3_close_v2(db->h);
    free(db->path);
    free(db);
}

/* ---- read-only spells and broken connections (db.h) ---- */

#define READONLY_MSG "the database is read-only"

/* A result code after which the connection is reopened: SQLite keeps a
 * connection that opened the file read-only read-only for good, and one
 * that lost its file or hit an I/O error may stay broken. */
static int needs_reopen_code(int code)
{
    int primary = code & 0xff;
    return primary == SQLITE_READONLY || primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR;
}

/* 1 when this process may write the database file now (effective ids),
 * 0 when it may not (permissions, read-only file system, or a full one:
 * less than DB_MIN_FREE_BYTES left for unprivileged writers, where the
 * WAL cannot grow and a generation could not record its end). Other
 * errors (the file is gone, statvfs fails...) give 1: SQLite reports
 * those itself. */
static int file_writable(const char *path)
{
    if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) != 0)
        return !(errno == EACCES || errno == EROFS || errno == EPERM);
    struct statvfs fs;
    if (statvfs(path, &fs) == 0 && fs.f_blocks > 0 &&
        (unsigned long long)fs.f_bavail * fs.f_frsize < DB_MIN_FREE_BYTES)
        return 0;
    return 1;
}

/* Logs when the database turns read-only for this process and when it
 * turns writable again: once per change and per path, not per refusal. */
static void note_writable(parley_db *db, int writable)
{
    if (!db->gate)
        return;
    int ro = !writable;
    if (__atomic_exchange_n(&db->gate->readonly_seen, ro, __ATOMIC_RELAXED) != ro)
        fprintf(stderr, ro ? "parley: db: %s is read-only for this process (permissions, or a "
                             "read-only or full file system): writes are refused\n"
                           : "parley: db: %s can be written again\n", db->path);
}

/* 1 when one of the connection's statements is running (stepped, not
 * reset): the handle must not change under it. */
static int stmt_running(parley_db *db)
{
    for (sqlite3_stmt *st = sqlite3_next_stmt(db->h, NULL); st; st = sqlite3_next_stmt(db->h, st))
        if (sqlite3_stmt_busy(st))
            return 1;
    return 0;
}

/* Replaces the handle by a new one on the same path (never creating the
 * file): the statement cache goes with the old one. Keeps the old handle
 * when the new one cannot be opened. 0 / -1. */
static int reopen(parley_db *db)
{
    char err[300];
    sqlite3 *h = NULL;
    if (connect_handle(db, db->path, SQLITE_OPEN_READWRITE, &h, err, sizeof err) < 0) {
        fprintf(stderr, "parley: db: reopen failed: %s\n", err);
        db->reopen_failed_ms = mono_ms();
        return -1;
    }
    db->reopen_failed_ms = 0;
    cache_clear(db);
    sqlite3_close_v2(db->h);
    db->h = h;
    db->broken = 0;
    sqlite3_wal_hook(db->h, wal_hook, db);
    return 0;
}

/* Outside a transaction: reopens the connection when it is read-only and
 * the file can be written again, or when its last error calls for it (at
 * most once a second after a reopen failed). Cheap when nothing is wrong:
 * three calls into SQLite, no system call. */
static void heal(parley_db *db, int check_last_error)
{
    if (db->in_tx || db->gated || !sqlite3_get_autocommit(db->h))
        return;
    int ro = sqlite3_db_readonly(db->h, "main") == 1;
    int broken = db->broken ||
                 (check_last_error && needs_reopen_code(sqlite3_extended_errcode(db->h)));
    if (!ro && !broken)
        return;
    if (db->reopen_failed_ms && mono_ms() - db->reopen_failed_ms < 1000)
        return;
    if (!file_writable(db->path) || stmt_running(db))
        return;
    reopen(db);
}

sqlite3 *db_handle(parley_db *db) { return db->h; }
const char *db_path(parley_db *db) { return db->path; }
int db_changes(parley_db *db) { return db->pg ? 0 : sqlite3_changes(db->h); }

int db_schema_version(parley_db *db)
{
    return db->pg ? pgc_schema_version(db->pg) : get_user_version(db->h);
}

PGconn *db_pg_conn(parley_db *db) { return db->pg ? pgc_conn(db->pg) : NULL; }

PGresult *db_pg_exec(parley_db *db, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats, int result_format)
{
    return pgc_exec_params(db->pg, sql, n, values, lengths, formats, result_format);
}

PGresult *db_pg_run(parley_db *db, const char *sql, int n, const char *const *params,
                    ExecStatusType want, const char *what)
{
    PGresult *r = db_pg_exec(db, sql, n, params, NULL, NULL, 0);
    if (PQresultStatus(r) == want)
        return r;
    db_pg_fail(db, what, r);
    PQclear(r);
    return NULL;
}

int64_t db_pg_command(parley_db *db, const char *sql, int n, const char *const *params,
                      const char *what)
{
    PGresult *r = db_pg_run(db, sql, n, params, PGRES_COMMAND_OK, what);
    if (!r)
        return -1;
    int64_t changed = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return changed;
}

void db_pg_fail(parley_db *db, const char *what, const PGresult *r)
{
    if (db->pg)
        pgc_fail(db->pg, what, r);
}

const char *db_errmsg(parley_db *db)
{
    if (db->pg)
        return pgc_errmsg(db->pg);
    return db->refused ? READONLY_MSG : sqlite3_errmsg(db->h);
}

enum perr db_err_kind(parley_db *db)
{
    if (db->pg)
        return pgc_readonly(db->pg) ? PERR_DB_READONLY
               : pgc_unavailable(db->pg) ? PERR_DB_UNAVAILABLE : PERR_DB;
    int primary = sqlite3_extended_errcode(db->h) & 0xff;
    if (db->refused || primary == SQLITE_READONLY || primary == SQLITE_FULL)
        return PERR_DB_READONLY;  /* a full disk: it cannot be written now either */
    /* another failure while the file cannot be written now is that too (a
     * full disk may fail the -shm or -wal with an I/O error, and a later
     * statement may have replaced the code) */
    if (!file_writable(db->path))
        return PERR_DB_READONLY;
    return PERR_DB;
}

const char *db_err_text(parley_db *db, const char *fallback)
{
    enum perr k = db_err_kind(db);
    return k == PERR_DB_READONLY || k == PERR_DB_UNAVAILABLE ? perr_text(k) : fallback;
}

sqlite3_stmt *db_stmt(parley_db *db, const char *sql)
{
    if (db->pg) {
        fprintf(stderr, "parley: db: %s: this storage function has no PostgreSQL body yet "
                "(only the event log has one)\n", db->path);
        return NULL;
    }
    db->refused = 0;
    heal(db, 1);
    for (int i = 0; i < db->ncache; i++) {
        if (db->cache[i].sql == sql) {
            sqlite3_stmt *st = db->cache[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "parley: db: cannot prepare [%s]: %s\n", sql, sqlite3_errmsg(db->h));
        return NULL;
    }
    if (db->ncache < STMT_CACHE) {
        db->cache[db->ncache].sql = sql;
        db->cache[db->ncache].st = st;
        db->ncache++;
    } else {
        /* Cache full: a programming error (more distinct statements than
         * STMT_CACHE); evict the oldest so we keep working. */
        sqlite3_finalize(db->cache[0].st);
        memmove(&db->cache[0], &db->cache[1], sizeof db->cache[0] * (STMT_CACHE - 1));
        db->cache[STMT_CACHE - 1].sql = sql;
        db->cache[STMT_CACHE - 1].st = st;
    }
    return st;
}

static int step_done(parley_db *db, const char *sql)
{
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        if (needs_reopen_code(sqlite3_extended_errcode(db->h)))
            db->broken = 1;
        fprintf(stderr, "parley: db: %s failed: %s\n", sql, sqlite3_errmsg(db->h));
        return -1;
    }
    return 0;
}

/* Savepoints of nested transactions, by level (1 = the first one inside
 * the outermost transaction). Static texts: db_stmt caches statements by
 * their text's address. */
#define SP_MAX 8
enum sp_verb { SP_BEGIN, SP_RELEASE, SP_UNDO };
static const char *const sp_sql[3][SP_MAX] = {
#define SP_ROW(v) { v " n1", v " n2", v " n3", v " n4", v " n5", v " n6", v " n7", v " n8" }
    SP_ROW("SAVEPOINT"), SP_ROW("RELEASE"), SP_ROW("ROLLBACK TO"),
#undef SP_ROW
};

/* Runs a savepoint statement for level (1..SP_MAX). 0 / -1 (deeper). */
static int savepoint(parley_db *db, enum sp_verb verb, int level)
{
    if (level < 1 || level > SP_MAX) {
        fprintf(stderr, "parley: db: transactions nested deeper than %d\n", SP_MAX + 1);
        return -1;
    }
    return step_done(db, sp_sql[verb][level - 1]);
}

int db_begin(parley_db *db)
{
    if (db->pg)
        return pgc_begin(db->pg);
    if (db->in_tx) {
        /* nested: a savepoint inside the open transaction */
        if (sqlite3_get_autocommit(db->h) || savepoint(db, SP_BEGIN, db->in_tx) < 0)
            return -1;
        db->in_tx++;
        return 0;
    }
    heal(db, 1);                  /* a read-only or broken handle: reopen it */
    if (sqlite3_db_readonly(db->h, "main") == 1) {
        db->refused = 1;          /* still read-only: the file cannot be written */
        note_writable(db, 0);
        return -1;
    }
    gate_enter(db);
    if (step_done(db, "BEGIN IMMEDIATE") < 0) {
        gate_leave(db);
        return -1;
    }
    db->in_tx = 1;
    return 0;
}

int db_commit(parley_db *db)
{
    if (db->pg) {
        int rc = pgc_commit(db->pg);
        ring_pending_end(db);
        return rc;
    }
    if (db->in_tx > 1) {
        if (savepoint(db, SP_RELEASE, db->in_tx - 1) < 0) {
            db_rollback(db);
            return -1;
        }
        db->in_tx--;
        return 0;
    }
    if (step_done(db, "COMMIT") < 0) {
        int code = sqlite3_extended_errcode(db->h);
        db_rollback(db);
        db->refused = (code & 0xff) == SQLITE_READONLY || (code & 0xff) == SQLITE_FULL; /* keep the kind */
        return -1;
    }
    db->in_tx = 0;
    gate_leave(db);
    ans_ring_pending(db);
    ring_pending_end(db);
    if (db->ckpt_due) {
        db->ckpt_due = 0;
        sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    return 0;
}

int db_rollback(parley_db *db)
{
    if (db->pg) {
        int rc = pgc_rollback(db->pg);
        ring_pending_end(db);
        return rc;
    }
    /* the kind of the failure that led here outlives the ROLLBACK */
    int readonly = db_err_kind(db) == PERR_DB_READONLY;
    if (db->in_tx > 1 && !sqlite3_get_autocommit(db->h)) {
        /* nested: undo this level only; the outer transaction goes on */
        db->in_tx--;
        int rc = savepoint(db, SP_UNDO, db->in_tx) | savepoint(db, SP_RELEASE, db->in_tx);
        if (readonly)
            db->refused = 1;
        return rc ? -1 : 0;
    }
    db->in_tx = 0;
    int rc = 0;
    if (!sqlite3_get_autocommit(db->h))
        rc = step_done(db, "ROLLBACK");
    gate_leave(db);
    ans_ring_pending(db);
    ring_pending_end(db);
    if (readonly)
        db->refused = 1;
    return rc;
}

int db_can_write(parley_db *db)
{
    if (db->pg)
        return db_health(db) == DB_HEALTH_OK ? 0 : -1;
    int writable = file_writable(db->path);
    note_writable(db, writable);
    if (writable) {
        heal(db, 1);
        if (sqlite3_db_readonly(db->h, "main") != 1)
            return 0;
    }
    db->refused = 1;
    return -1;
}

enum db_health db_health(parley_db *db)
{
    if (!db)
        return DB_HEALTH_UNAVAILABLE;
    if (db->pg)
        return pgc_health(db->pg);
    int writable = file_writable(db->path);
    note_writable(db, writable);
    heal(db, 1);
    sqlite3_stmt *st = db_stmt(db, "SELECT 1");
    int answers = st && sqlite3_step(st) == SQLITE_ROW;
    if (st)
        sqlite3_reset(st);
    if (!answers)
        return DB_HEALTH_UNAVAILABLE;
    if (!writable || sqlite3_db_readonly(db->h, "main") == 1)
        return DB_HEALTH_READONLY;
    return DB_HEALTH_OK;
}

const char *db_health_name(enum db_health h)
{
    switch (h) {
    case DB_HEALTH_OK: return "ok";
    case DB_HEALTH_READONLY: return "read-only";
    default: return "unavailable";
    }
}

int db_exec(parley_db *db, const char *sql)
{
    if (db->pg)
        return pgc_exec(db->pg, sql);
    return exec_simple(db->h, sql, NULL, 0);
}

int db_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

char *db_col_strdup(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? strdup((const char *)t) : NULL;
}
