/* test_db.c — migrations, version refusal, statement cache, transactions. */
#include "th.h"
#include "db.h"
#include "util.h"

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

int main(void)
{
    RUN(opens_and_migrates);
    RUN(refuses_newer_database);
    RUN(migrates_older_database);
    RUN(bad_path_is_clear);
    RUN(statement_cache_and_rollback);
    return th_done();
}
