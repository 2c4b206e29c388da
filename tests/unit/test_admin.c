/* test_admin.c — what the admin page and `parley stats` read (core/stats.h,
 * core/presence.h): stats_overview's counts, cache hit rate, generations by
 * outcome, failed generations in the last hour and tokens by user today
 * after known activity; the live generations (user, model, tokens so far,
 * the text's tail cut on a character); the open long-poll sessions; the
 * presence rows (write, list fresh only, purge stale, remove, bad keys
 * refused) and a process's reporter thread writing and then deleting its
 * row.
 *
 * Every case runs on SQLite (a database file per case) and again on
 * PostgreSQL when PARLEY_TEST_PG holds a URI (tests/integration/
 * t0860-admin-pg.sh), where the database is shared: counts are checked as
 * differences, with ids and users of this run (prefix pfx). */
#include "th.h"
#include "config.h"
#include "db.h"
#include "db_sqlite.h"
#include "evlog.h"
#include "jobs.h"
#include "pollsess.h"
#include "presence.h"
#include "stats.h"
#include "store.h"
#include "storage/pg/pg.h"
#include "usage.h"
#include "util.h"

#include <time.h>
#include <unistd.h>

static const char *pg_uri;      /* NULL: SQLite run */
static char pfx[64];            /* prefix of ids: "" on SQLite */

#define ID(buf, name) char buf[160]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

static const char *target(const char *name, char *buf, size_t len)
{
    if (pg_uri)
        return pg_uri;
    snprintf(buf, len, "%s/%s", th_tmpdir(), name);
    return buf;
}

static parley_db *open_db(const char *name)
{
    char path[512], err[512];
    const char *t = target(name, path, sizeof path);
    parley_db *db = db_open(t, err, sizeof err);
    if (!db)
        printf("#   db_open %s: %s\n", pg_uri ? "PARLEY_TEST_PG" : t, err);
    return db;
}

/* Runs a statement with one integer and one text parameter on either
 * backend (sqlite_sql with ?1 ?2, pg_sql with $1 $2). 0 / -1. */
static int exec2(parley_db *db, const char *sqlite_sql, const char *pg_sql, int64_t a, const char *b)
{
    char sa[24];
    snprintf(sa, sizeof sa, "%lld", (long long)a);
    if (db_pg_conn(db)) {
        const char *p[2] = { sa, b };
        PGresult *r = PQexecParams(db_pg_conn(db), pg_sql, 2, NULL, p, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        return ok ? 0 : -1;
    }
    sqlite3_stmt *st = db_stmt(db, sqlite_sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, a);
    db_bind_text(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static json_int_t geti(json_t *o, const char *a, const char *b)
{
    return json_integer_value(json_object_get(json_object_get(o, a), b));
}

/* The user's row in tokens_today.users and its index (-1: absent). */
static json_t *user_row(json_t *ov, const char *user, int *index)
{
    json_t *users = json_object_get(json_object_get(ov, "tokens_today"), "users");
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
        if (!strcmp(json_string_value(json_object_get(u, "user")), user)) {
            *index = (int)i;
            return u;
        }
    *index = -1;
    return NULL;
}

/* Claims a job on channel for user and ends it: outcome "done", "failed",
 * "stopped" or "running" (left running). Returns its id, or -1. */
static int64_t job(parley_db *db, const char *channel, const char *user, const char *outcome)
{
    struct job_claim c;
    char err[256];
    if (jobs_claim_as(db, NULL, channel, "k", user, 30000, &c, err, sizeof err) < 0 || !c.owner) {
        printf("#   claim %s: %s\n", channel, err);
        return -1;
    }
    if (!strcmp(outcome, "running"))
        return c.job_id;
    if (!strcmp(outcome, "stopped") &&
        jobs_request_stop(db, NULL, NULL, c.job_id, user, 0, NULL) != JOBS_STOP_OK)
        return -1;
    if (db_begin(db) < 0)
        return -1;
    int rc = !strcmp(outcome, "done") ? jobs_finish_tx(db, c.job_id, NULL)
             : !strcmp(outcome, "failed") ? jobs_finish_tx(db, c.job_id, "upstream broke")
             : jobs_finish_stopped_tx(db, c.job_id);
    if (rc < 0 || db_commit(db) < 0) {
        db_rollback(db);
        return -1;
    }
    return c.job_id;
}

static int charge(parley_db *db, const char *user, int64_t p, int64_t c, int64_t at)
{
    struct usage_charge u = { .user = user, .channel = "conv:x", .outcome = "done",
                              .prompt_tokens = p, .completion_tokens = c, .at_ms = at };
    return usage_charge_tx(db, &u);
}

TEST(overview_after_known_activity)
{
    parley_db *db = open_db("overview.db");
    REQUIRE(db);
    json_t *before = NULL, *after = NULL;
    REQUIRE(stats_overview(db, &before) == 0);
    int64_t now = now_ms();

    ID(t1, "T-1");
    ID(t2, "T-2");
    CHECK_INT(store_ticket_put(db, t1, "body one"), 0);
    CHECK_INT(store_ticket_put(db, t2, "body two"), 0);
    struct conversation cv;
    memset(&cv, 0, sizeof cv);
    ID(cid, "conv-1");
    ID(alice, "alice");
    ID(bob, "bob");
    str_copy(cv.id, sizeof cv.id, cid);
    str_copy(cv.owner, sizeof cv.owner, alice);
    snprintf(cv.kind, sizeof cv.kind, "chat");
    CHECK_INT(store_conv_create(db, &cv), STORE_OK);
    for (int i = 0; i < 3; i++) {
        struct message m;
        store_msg_init(&m);
        str_copy(m.conversation_id, sizeof m.conversation_id, cid);
        snprintf(m.role, sizeof m.role, "%s", i % 2 ? "assistant" : "user");
        m.content = (char *)"hello";
        CHECK_INT(store_msg_add(db, &m), 0);
    }
    /* one cached answer, served 3 times from the cache */
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, t1, "body one", hash);
    a.response = "the answer";
    a.model = "m";
    a.temperature = -1;
    a.tokens = 3;
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(store_answer_put_tx(db, &a), 0);
    CHECK_INT(db_commit(db), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(stats_cache_hit(db, a.key), 1);
    CHECK_INT(stats_cache_hit(db, "ticket:no-such-answer"), 0);
    /* generations: one of each outcome, and a failure two hours ago */
    ID(c1, "conv:g1");
    ID(c2, "conv:g2");
    ID(c3, "conv:g3");
    ID(c4, "conv:g4");
    ID(c5, "conv:g5");
    CHECK(job(db, c1, alice, "done") > 0);
    CHECK(job(db, c2, alice, "failed") > 0);
    CHECK(job(db, c3, alice, "stopped") > 0);
    CHECK(job(db, c4, bob, "running") > 0);
    int64_t old = job(db, c5, bob, "failed");
    CHECK(old > 0);
    CHECK_INT(exec2(db, "UPDATE jobs SET finished_at = ?1 WHERE channel = ?2",
                    "UPDATE jobs SET finished_at = $1 WHERE channel = $2", now - 7200000, c5), 0);
    /* tokens today: alice 30 in one generation, bob 20 in two; yesterday's not counted */
    CHECK_INT(charge(db, alice, 10, 20, now), 0);
    CHECK_INT(charge(db, bob, 5, 5, now), 0);
    CHECK_INT(charge(db, bob, 4, 6, now), 0);
    CHECK_INT(charge(db, bob, 100, 100, now - USAGE_DAY_MS), 0);

    REQUIRE(stats_overview(db, &after) == 0);
    CHECK_INT(geti(after, "counts", "tickets") - geti(before, "counts", "tickets"), 2);
    CHECK_INT(geti(after, "counts", "conversations") - geti(before, "counts", "conversations"), 1);
    CHECK_INT(geti(after, "counts", "messages") - geti(before, "counts", "messages"), 3);
    CHECK_INT(geti(after, "counts", "answers_cached") - geti(before, "counts", "answers_cached"), 1);
    CHECK_INT(geti(after, "cache", "hits") - geti(before, "cache", "hits"), 3);
    CHECK_INT(geti(after, "cache", "answers") - geti(before, "cache", "answers"), 1);
    CHECK_INT(geti(after, "generations", "running") - geti(before, "generations", "running"), 1);
    CHECK_INT(geti(after, "generations", "done") - geti(before, "generations", "done"), 1);
    CHECK_INT(geti(after, "generations", "stopped") - geti(before, "generations", "stopped"), 1);
    CHECK_INT(geti(after, "generations", "failed") - geti(before, "generations", "failed"), 2);
    CHECK_INT(geti(after, "errors_last_hour", "total") - geti(before, "errors_last_hour", "total"), 1);
    CHECK_INT(geti(after, "errors_last_hour", "generations_failed"),
              geti(after, "errors_last_hour", "total"));
    CHECK(json_is_string(json_object_get(json_object_get(after, "cache"), "basis")));
    if (!pg_uri) {                 /* a fresh database: exact values */
        CHECK_INT(geti(after, "counts", "tickets"), 2);
        CHECK_INT(geti(after, "generations", "failed"), 2);
        CHECK_INT(geti(after, "errors_last_hour", "total"), 1);
        json_t *rate = json_object_get(json_object_get(after, "cache"), "hit_rate");
        CHECK(json_is_real(rate) && json_real_value(rate) == 0.75);       /* 3 / (3 + 1) */
        CHECK(json_is_null(json_object_get(json_object_get(before, "cache"), "hit_rate")));
    }
    char date[16];
    usage_date(usage_day_of(now), date);
    CHECK_STR(json_string_value(json_object_get(json_object_get(after, "tokens_today"), "day")), date);
    int ia, ib;
    json_t *ua = user_row(after, alice, &ia), *ub = user_row(after, bob, &ib);
    REQUIRE(ua && ub);
    CHECK_INT(json_integer_value(json_object_get(ua, "tokens")), 30);
    CHECK_INT(json_integer_value(json_object_get(ua, "prompt_tokens")), 10);
    CHECK_INT(json_integer_value(json_object_get(ua, "completion_tokens")), 20);
    CHECK_INT(json_integer_value(json_object_get(ua, "generations")), 1);
    CHECK_INT(json_integer_value(json_object_get(ub, "tokens")), 20);
    CHECK_INT(json_integer_value(json_object_get(ub, "generations")), 2);
    CHECK(ia < ib);                /* the heaviest first */
    /* yesterday: only bob's old charge */
    json_t *y = NULL;
    REQUIRE(stats_overview_at(db, now - USAGE_DAY_MS, &y) == 0);
    json_t *uy = user_row(y, bob, &ib);
    REQUIRE(uy);
    CHECK_INT(json_integer_value(json_object_get(uy, "tokens")), 200);
    CHECK(!user_row(y, alice, &ia));
    json_decref(y);
    json_decref(before);
    json_decref(after);
    db_close(db);
}

TEST(live_generations_show_user_model_tokens_and_tail)
{
    parley_db *db = open_db("live.db");
    REQUIRE(db);
    ID(chan, "conv:live");
    ID(carol, "carol");
    int64_t id = job(db, chan, carol, "running");
    REQUIRE(id > 0);
    const char *start = "{\"job_id\":1,\"message_id\":\"m\",\"model\":\"model-x\"}";
    CHECK(evlog_append(db, NULL, chan, id, "start", start, strlen(start)) > 0);
    const char *toks[] = { "<b>bold</b>", " and", " more" };
    for (int i = 0; i < 3; i++)
        CHECK(evlog_append(db, NULL, chan, id, "token", toks[i], strlen(toks[i])) > 0);
    json_t *arr = NULL;
    REQUIRE(stats_live_generations(db, now_ms(), &arr) == 0);
    json_t *g = NULL, *x;
    size_t i;
    json_array_foreach(arr, i, x)
        if (json_integer_value(json_object_get(x, "job_id")) == id)
            g = x;
    REQUIRE(g);
    CHECK_STR(json_string_value(json_object_get(g, "channel")), chan);
    CHECK_STR(json_string_value(json_object_get(g, "user")), carol);
    CHECK_STR(json_string_value(json_object_get(g, "model")), "model-x");
    CHECK_INT(json_integer_value(json_object_get(g, "tokens_so_far")), 3);
    CHECK_INT(json_integer_value(json_object_get(g, "streamed_bytes")), strlen("<b>bold</b> and more"));
    CHECK_STR(json_string_value(json_object_get(g, "text_tail")), "<b>bold</b> and more");
    CHECK(json_integer_value(json_object_get(g, "age_ms")) >= 0);
    CHECK(json_is_false(json_object_get(g, "stop_requested")));
    json_decref(arr);

    /* a long text: its tail is at most STATS_TAIL_BYTES and starts on a
     * character ("éééa" is 7 bytes: the cut falls inside an "é") */
    for (int k = 0; k < 80; k++)
        CHECK(evlog_append(db, NULL, chan, id, "token", "\xc3\xa9\xc3\xa9\xc3\xa9" "a", 7) > 0);
    CHECK_INT(jobs_request_stop(db, NULL, NULL, id, carol, 0, NULL), JOBS_STOP_OK);
    REQUIRE(stats_live_generations(db, now_ms(), &arr) == 0);
    g = NULL;
    json_array_foreach(arr, i, x)
        if (json_integer_value(json_object_get(x, "job_id")) == id)
            g = x;
    REQUIRE(g);
    const char *tail = json_string_value(json_object_get(g, "text_tail"));
    REQUIRE(tail);
    CHECK(strlen(tail) <= STATS_TAIL_BYTES && strlen(tail) >= STATS_TAIL_BYTES - 3);
    CHECK(((unsigned char)tail[0] & 0xC0) != 0x80);
    CHECK(tail[strlen(tail) - 1] == 'a');
    CHECK_INT(json_integer_value(json_object_get(g, "tokens_so_far")), 83);
    CHECK(json_is_true(json_object_get(g, "stop_requested")));
    json_decref(arr);
    /* ended: no longer listed */
    REQUIRE(db_begin(db) == 0);
    CHECK_INT(jobs_finish_stopped_tx(db, id), 0);
    CHECK_INT(db_commit(db), 0);
    REQUIRE(stats_live_generations(db, now_ms(), &arr) == 0);
    json_array_foreach(arr, i, x)
        CHECK(json_integer_value(json_object_get(x, "job_id")) != id);
    json_decref(arr);
    db_close(db);
}

TEST(open_long_poll_sessions_by_kind)
{
    parley_db *db = open_db("poll.db");
    REQUIRE(db);
    int64_t now = now_ms(), g0 = -1, p0 = -1, g1 = -1, p1 = -1;
    REQUIRE(stats_poll_open(db, now, &g0, &p0) == 0);
    char sid[37];
    ID(owner, "dave");
    ID(path, "/ws/lp-1");
    CHECK_INT(poll_create(db, path, owner, 60, sid), 0);
    CHECK_INT(poll_create(db, "/socket/longpoll", owner, 60, sid), 0);
    CHECK_INT(poll_create(db, "/socket/longpoll", owner, 60, sid), 0);
    REQUIRE(stats_poll_open(db, now_ms(), &g1, &p1) == 0);
    CHECK_INT(g1 - g0, 1);
    CHECK_INT(p1 - p0, 2);
    /* a day later they have expired: not counted */
    int64_t g2 = -1, p2 = -1;
    REQUIRE(stats_poll_open(db, now + USAGE_DAY_MS, &g2, &p2) == 0);
    if (!pg_uri) {
        CHECK_INT(g2, 0);
        CHECK_INT(p2, 0);
    }
    db_close(db);
}

TEST(presence_rows_fresh_stale_removed)
{
    parley_db *db = open_db("presence.db");
    REQUIRE(db);
    int64_t now = now_ms();
    ID(node, "node-a");
    CHECK_INT(presence_put(db, node, "parley-ws", 101, "{\"websocket\":3}", "[{\"name\":\"u\"}]", now - 5000, now), 0);
    CHECK_INT(presence_put(db, node, "parley.fcgi", 102, "not json", NULL, now, now), 0);
    CHECK_INT(presence_put(db, node, "parley.fcgi", 103, "{\"sse\":1}", NULL, now, now - PRESENCE_STALE_MS - 1000), 0);
    /* rewriting a row replaces it */
    CHECK_INT(presence_put(db, node, "parley-ws", 101, "{\"websocket\":4}", "[]", now - 5000, now), 0);
    /* bad keys write nothing */
    CHECK_INT(presence_put(db, "", "parley-ws", 1, NULL, NULL, now, now), -1);
    CHECK_INT(presence_put(db, node, NULL, 1, NULL, NULL, now, now), -1);
    CHECK_INT(presence_put(db, node, "parley-ws", 0, NULL, NULL, now, now), -1);

    json_t *rows = NULL;
    REQUIRE(presence_list(db, now - PRESENCE_STALE_MS, &rows) == 0);
    int ws = 0, fcgi = 0, stale = 0;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "node")), node) != 0)
            continue;
        json_int_t pid = json_integer_value(json_object_get(r, "pid"));
        if (pid == 101) {
            ws++;
            CHECK_STR(json_string_value(json_object_get(r, "program")), "parley-ws");
            CHECK_INT(json_integer_value(json_object_get(json_object_get(r, "counts"), "websocket")), 4);
            CHECK(json_is_array(json_object_get(r, "upstreams")));
            CHECK_INT(json_integer_value(json_object_get(r, "started_at")), now - 5000);
        } else if (pid == 102) {
            fcgi++;
            CHECK(json_is_object(json_object_get(r, "counts")));    /* bad JSON shows {} */
            CHECK_INT(json_object_size(json_object_get(r, "counts")), 0);
        } else if (pid == 103) {
            stale++;
        }
    }
    CHECK_INT(ws, 1);
    CHECK_INT(fcgi, 1);
    CHECK_INT(stale, 0);
    json_decref(rows);
    /* the stale row is purged, the fresh ones stay */
    CHECK(presence_purge(db, now - PRESENCE_STALE_MS) >= 1);
    REQUIRE(presence_list(db, 0, &rows) == 0);
    json_array_foreach(rows, i, r)
        if (!strcmp(json_string_value(json_object_get(r, "node")), node))
            CHECK(json_integer_value(json_object_get(r, "pid")) != 103);
    json_decref(rows);
    CHECK_INT(presence_remove(db, node, "parley-ws", 101), 0);
    CHECK_INT(presence_remove(db, node, "parley.fcgi", 102), 0);
    CHECK_INT(presence_remove(db, node, "parley.fcgi", 102), 0);   /* none: still 0 */
    REQUIRE(presence_list(db, 0, &rows) == 0);
    json_array_foreach(rows, i, r)
        CHECK(strcmp(json_string_value(json_object_get(r, "node")), node) != 0);
    json_decref(rows);
    db_close(db);
}

static json_t *seven(void *ud)
{
    return json_pack("{s:i, s:s}", "websocket", *(int *)ud, "not_a_count", "x");
}

/* This process's row: 1 found (*count its websocket count), 0 none, -1 error. */
static int own_row(parley_db *db, const char *program, json_int_t *count)
{
    json_t *rows = NULL;
    if (presence_list(db, now_ms() - PRESENCE_STALE_MS, &rows) < 0)
        return -1;
    int found = 0;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
        if (json_integer_value(json_object_get(r, "pid")) == (json_int_t)getpid() &&
            !strcmp(json_string_value(json_object_get(r, "program")), program)) {
            found = 1;
            *count = json_integer_value(json_object_get(json_object_get(r, "counts"), "websocket"));
            CHECK(json_is_array(json_object_get(r, "upstreams")));
            CHECK(json_array_size(json_object_get(r, "upstreams")) >= 1);
        }
    json_decref(rows);
    return found;
}

TEST(reporter_writes_then_deletes_its_row)
{
    char path[512], err[512];
    struct parley_config cfg;
    REQUIRE(config_defaults(&cfg) == 0);
    REQUIRE(config_set(&cfg, "PARLEY_DB", target("reporter.db", path, sizeof path), err, sizeof err) == 0);
    parley_db *db = open_db("reporter.db");
    REQUIRE(db);
    char program[48];
    snprintf(program, sizeof program, "test-%s", pfx[0] ? "pg" : "sqlite");
    int n = 7;
    struct presence *p = presence_start(&cfg, program, seven, &n);
    REQUIRE(p);
    json_int_t count = -1;
    int found = 0;
    for (int i = 0; i < 100 && found != 1; i++) {
        found = own_row(db, program, &count);
        if (found != 1) {
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
        }
    }
    CHECK_INT(found, 1);
    CHECK_INT(count, 7);
    presence_stop(p);
    CHECK_INT(own_row(db, program, &count), 0);
    db_close(db);
    config_cleanup(&cfg);
}

static void run_cases(void)
{
    RUN(overview_after_known_activity);
    RUN(live_generations_show_user_model_tokens_and_tail);
    RUN(open_long_poll_sessions_by_kind);
    RUN(presence_rows_fresh_stale_removed);
    RUN(reporter_writes_then_deletes_its_row);
}

int main(void)
{
    printf("# backend: SQLite\n");
    run_cases();
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        pg_uri = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, ids %s*)\n", pfx);
        run_cases();
    }
    return th_done();
}
