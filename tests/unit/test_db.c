/* test_db.c — migrations, version refusal, statement cache, transactions,
 * and the in-process write gate (threads writing at once all succeed; a
 * transaction that ends any way — commit, rollback, close — lets the next
 * writer in at once; nested transactions are savepoints). */
#include "th.h"
#include "db_sqlite.h"
#include "util.h"

#include <pthread.h>
#include <sqlite3.h>

static char path[512];

TEST(opens_and_migrates)
{
    char err[512];
    snprintf(path, sizeof path, "%s/a.db", th_tmpdir());
    parley_db *db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    CHECK_INT(db_schema_version(db), db_latest_version());
    CHECK(db_latest_version() >= 1);
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM sqlite_master WHERE name IN "
                                    "('tickets','conversations','messages','answers','jobs',"
                                    "'events','poll_sessions','poll_outbox','brands','products',"
                                    "'products_fts','rate_hits')");
    REQUIRE(st != NULL);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(st, 0), 12);
    st = db_stmt(db, "PRAGMA journal_mode");
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    db_close(db);
    /* reopening applies nothing and keeps the version */
    db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    CHECK_INT(db_schema_version(db), db_latest_version());
    db_close(db);
}

TEST(refuses_newer_database)
{
    char err[512], p[512];
    snprintf(p, sizeof p, "%s/newer.db", th_tmpdir());
    sqlite3 *h;
    REQUIRE(sqlite3_open(p, &h) == SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", db_latest_version() + 1);
    REQUIRE(sqlite3_exec(h, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    err[0] = 0;
    parley_db *db = db_open(p, err, sizeof err);
    CHECK(db == NULL);
    CHECK(strstr(err, "newer") != NULL);
    db_close(db);
}

TEST(migrates_older_database)
{
    /* An empty database (version 0) is an "older" one: every migration runs. */
    char err[512], p[512];
    snprintf(p, sizeof p, "%s/old.db", th_tmpdir());
    sqlite3 *h;
    REQUIRE(sqlite3_open(p, &h) == SQLITE_OK);
    REQUIRE(sqlite3_exec(h, "CREATE TABLE keepme(x); INSERT INTO keepme VALUES (42);",
                         NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    parley_db *db = db_open(p, err, sizeof err);
    REQUIRE(db != NULL);
    CHECK_INT(db_schema_version(db), db_latest_version());
    sqlite3_stmt *st = db_stmt(db, "SELECT x FROM keepme");
    REQUIRE(st && sqlite3_step(st) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(st, 0), 42);
    db_close(db);
}

TEST(bad_path_is_clear)
{
    char err[512] = "";
    parley_db *db = db_open("/nonexistent-dir/x/y.db", err, sizeof err);
    CHECK(db == NULL);
    CHECK(strstr(err, "/nonexistent-dir/x/y.db") != NULL);
    err[0] = 0;
    CHECK(db_open("", err, sizeof err) == NULL);
    CHECK(strstr(err, "PARLEY_DB") != NULL);
}

TEST(statement_cache_and_rollback)
{
    char err[512];
    parley_db *db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    static const char *ins = "INSERT INTO tickets(id, body, created_at, updated_at) VALUES (?, ?, 0, 0)";
    sqlite3_stmt *a = db_stmt(db, ins);
    sqlite3_stmt *b = db_stmt(db, ins);
    CHECK(a == b);
    REQUIRE(db_begin(db) == 0);
    db_bind_text(a, 1, "t1");
    db_bind_text(a, 2, "body");
    CHECK_INT(sqlite3_step(a), SQLITE_DONE);
    REQUIRE(db_rollback(db) == 0);
    sqlite3_stmt *c = db_stmt(db, "SELECT count(*) FROM tickets WHERE id = 't1'");
    REQUIRE(sqlite3_step(c) == SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(c, 0), 0);
    CHECK_INT(db_rollback(db), 0);  /* no transaction open: harmless */
    db_close(db);
}

struct writer {
    pthread_t th;
    int id, ok, inside_max;
};
static int inside;

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    char err[512];
    parley_db *db = db_open(path, err, sizeof err);
    if (!db)
        return NULL;
    static const char *ins = "INSERT INTO tickets(id, body, created_at, updated_at) VALUES (?, 'b', 0, 0)";
    for (int i = 0; i < 150; i++) {
        if (db_begin(db) < 0)
            continue;
        int now_in = __atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST);
        if (now_in > w->inside_max)
            w->inside_max = now_in;
        char id[32];
        snprintf(id, sizeof id, "gate-%d-%d", w->id, i);
        sqlite3_stmt *st = db_stmt(db, ins);
        db_bind_text(st, 1, id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
        if (rc == SQLITE_DONE && db_commit(db) == 0)
            w->ok++;
        else
            db_rollback(db);
    }
    db_close(db);
    return NULL;
}

TEST(write_gate_threads_all_succeed)
{
    enum { N = 8 };
    struct writer w[N];
    memset(w, 0, sizeof w);
    for (int i = 0; i < N; i++) {
        w[i].id = i;
        pthread_create(&w[i].th, NULL, writer_main, &w[i]);
    }
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].ok;
        CHECK_INT(w[i].inside_max, 1);
    }
    CHECK_INT(total, N * 150);
}

/* Begins on db within ms: 1 yes, 0 no (then rolled back). */
struct try_begin { parley_db *db; int got; };
static void *try_begin_main(void *arg)
{
    struct try_begin *t = arg;
    int64_t t0 = mono_ms();
    t->got = db_begin(t->db) == 0 && mono_ms() - t0 < 1000;
    db_rollback(t->db);
    return NULL;
}

static int other_thread_begins(parley_db *other)
{
    struct try_begin t = { other, 0 };
    pthread_t th;
    pthread_create(&th, NULL, try_begin_main, &t);
    pthread_join(th, NULL);
    return t.got;
}

TEST(write_gate_released_however_a_transaction_ends)
{
    char err[512];
    parley_db *a = db_open(path, err, sizeof err), *b = db_open(path, err, sizeof err);
    REQUIRE(a && b);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(db_begin(a), 0);             /* nested: a savepoint, no self-deadlock */
    CHECK_INT(db_commit(a), 0);            /* the savepoint */
    CHECK_INT(db_commit(a), 0);            /* the outer one commits */
    CHECK_INT(other_thread_begins(b), 1);
    REQUIRE(db_begin(a) == 0);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(db_rollback(a), 0);          /* the savepoint only */
    CHECK_INT(db_rollback(a), 0);          /* the outer one */
    CHECK_INT(other_thread_begins(b), 1);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(db_rollback(a), 0);
    CHECK_INT(other_thread_begins(b), 1);
    CHECK_INT(db_rollback(a), 0);          /* none open: harmless, releases nothing twice */
    CHECK_INT(other_thread_begins(b), 1);
    REQUIRE(db_begin(a) == 0);
    db_close(a);                           /* closing mid-transaction */
    CHECK_INT(other_thread_begins(b), 1);
    db_close(b);
}

static int count_tickets(parley_db *db, const char *prefix)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM tickets WHERE id LIKE ? || '%'");
    if (!st)
        return -1;
    db_bind_text(st, 1, prefix);
    int n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

static int put_ticket(parley_db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO tickets(id, body, created_at, updated_at) "
                                   "VALUES (?, 'b', 0, 0)");
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Nested transactions are savepoints: an inner commit keeps its changes
 * for the outer commit, an inner rollback undoes only its own, an outer
 * rollback undoes everything, and nothing is visible to another
 * connection before the outermost commit. */
TEST(nested_transactions_are_savepoints)
{
    char err[512];
    parley_db *a = db_open(path, err, sizeof err), *b = db_open(path, err, sizeof err);
    REQUIRE(a && b);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-outer"), 0);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-kept"), 0);
    CHECK_INT(db_commit(a), 0);                  /* inner: kept for the outer */
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-undone"), 0);
    REQUIRE(db_begin(a) == 0);                   /* three deep */
    CHECK_INT(put_ticket(a, "nest-deep"), 0);
    CHECK_INT(db_commit(a), 0);
    CHECK_INT(db_rollback(a), 0);                /* undoes nest-undone and nest-deep */
    CHECK_INT(count_tickets(a, "nest-"), 2);
    CHECK_INT(count_tickets(b, "nest-"), 0);     /* nothing visible before the outer commit */
    CHECK_INT(db_commit(a), 0);
    CHECK_INT(count_tickets(b, "nest-"), 2);
    CHECK_INT(count_tickets(b, "nest-outer"), 1);
    CHECK_INT(count_tickets(b, "nest-kept"), 1);
    /* an outer rollback undoes what inner levels committed */
    REQUIRE(db_begin(a) == 0);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-gone"), 0);
    CHECK_INT(db_commit(a), 0);
    CHECK_INT(db_rollback(a), 0);
    CHECK_INT(count_tickets(b, "nest-gone"), 0);
    /* a failing statement in a savepoint: undo it, the outer one commits */
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-after"), 0);
    REQUIRE(db_begin(a) == 0);
    CHECK_INT(put_ticket(a, "nest-outer"), -1);  /* duplicate key */
    CHECK_INT(db_rollback(a), 0);
    CHECK_INT(db_commit(a), 0);
    CHECK_INT(count_tickets(b, "nest-after"), 1);
    CHECK_INT(other_thread_begins(b), 1);        /* the gate is free */
    db_close(a);
    db_close(b);
}

/* The auto-checkpoint runs after the gate's release (db.c's WAL hook):
 * the WAL does not grow without bound under gated commits. */
TEST(wal_is_checkpointed_outside_the_gate)
{
    char err[512], p2[600];
    snprintf(p2, sizeof p2, "%s-ckpt", path);
    parley_db *db = db_open(p2, err, sizeof err);
    REQUIRE(db != NULL);
    static const char *ins = "INSERT INTO tickets(id, body, created_at, updated_at) VALUES (?, ?, 0, 0)";
    char body[5000];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    int ok = 0;
    for (int i = 0; i < 3000; i++) {
        char id[32];
        snprintf(id, sizeof id, "ck-%d", i);
        if (db_begin(db) < 0)
            break;
        sqlite3_stmt *st = db_stmt(db, ins);
        db_bind_text(st, 1, id);
        db_bind_text(st, 2, body);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE || db_commit(db) < 0)
            break;
        ok++;
    }
    CHECK_INT(ok, 3000);
    /* 3000 commits of 2+ pages each: without checkpoints the WAL would
     * hold 6000+ pages; with them it restarts every ~1000 */
    char walp[700];
    snprintf(walp, sizeof walp, "%s-wal", p2);
    FILE *f = fopen(walp, "rb");
    REQUIRE(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    printf("# WAL %ld bytes after 3000 commits\n", size);
    CHECK(size < 3000L * 4096);
    db_close(db);
}

int main(void)
{
    RUN(opens_and_migrates);
    RUN(refuses_newer_database);
    RUN(migrates_older_database);
    RUN(bad_path_is_clear);
    RUN(statement_cache_and_rollback);
    RUN(write_gate_threads_all_succeed);
    RUN(write_gate_released_however_a_transaction_ends);
    RUN(nested_transactions_are_savepoints);
    RUN(wal_is_checkpointed_outside_the_gate);
    return th_done();
}
