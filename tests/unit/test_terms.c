/* test_terms.c — search terms for FTS5 MATCH (core/terms.c): splitting a
 * query into quoted words, the merged stop-word list (English, Portuguese,
 * Indonesian), hostile FTS5 syntax reduced to quoted words that SQLite
 * accepts, the cap, the prefix and plural-stem options, the OR expression
 * and per-term hit counts on a real FTS5 table; the word list for
 * PostgreSQL (terms_words). With PARLEY_TEST_PG (t0750-pg-kb.sh), hostile
 * queries (FTS5 and tsquery syntax) become tsqueries through
 * parley_term_query on a real server: never an error, never a NOTICE. */
#include "th.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "terms.h"
#include "util.h"

#include <unistd.h>

static int has(const struct terms *t, const char *term)
{
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->v[i], term))
            return 1;
    return 0;
}

/* The terms of query, joined by one space (a static buffer). */
static const char *split(const char *query, int flags, int max)
{
    static char buf[TERMS_EXPR_SIZE];
    struct terms t;
    terms_split(query, flags, max, &t);
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < t.n; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", i ? " " : "", t.v[i]);
    return buf;
}

TEST(split_words)
{
    /* "2": one character */
    CHECK_STR(split("Printer JAMS, tray-2 (paper)!", 0, TERMS_MAX),
              "\"printer\" \"jams\" \"tray\" \"paper\"");
}

TEST(split_rules)
{
    struct terms t;
    /* one-character words go, repeats (after lower-casing) go */
    CHECK_STR(split("a b c vpn VPN Vpn x", 0, TERMS_MAX), "\"vpn\"");
    /* letters beyond ASCII are letters; only ASCII is lower-cased */
    CHECK_STR(split("Ação café ÉCLAIR 東京", 0, TERMS_MAX),
              "\"ação\" \"café\" \"Éclair\" \"東京\"");
    /* emoji, symbols and malformed UTF-8 separate words */
    terms_split("wifi\xf0\x9f\x98\x80router\xff" "cable\xc0\xafmodem", 0, TERMS_MAX, &t);
    CHECK_INT(t.n, 4);
    CHECK(has(&t, "\"wifi\"") && has(&t, "\"router\"") && has(&t, "\"cable\"") &&
          has(&t, "\"modem\""));
    /* a word longer than 64 bytes is dropped, 64 is kept */
    char q[200];
    memset(q, 'k', 65);
    q[65] = ' ';
    memset(q + 66, 'w', 64);
    q[130] = '\0';
    terms_split(q, 0, TERMS_MAX, &t);
    CHECK_INT(t.n, 1);
    CHECK_INT(strlen(t.v[0]), 66);
    CHECK(t.v[0][1] == 'w');
    terms_split(NULL, 0, TERMS_MAX, &t);
    CHECK_INT(t.n, 0);
    terms_split("", TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
    CHECK_INT(t.n, 0);
}

TEST(stop_words)
{
    /* English (both old lists), Portuguese (with accents), Indonesian */
    static const char *const stop[] = {
        "the", "how", "please", "recommend", "something", "before", "cannot",
        "para", "não", "você", "também", "que", "saya", "untuk", "yang",
    };
    for (size_t i = 0; i < sizeof stop / sizeof stop[0]; i++) {
        CHECK(terms_stop_word(stop[i]));
        struct terms t;
        terms_split(stop[i], TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
        CHECK_INT(t.n, 0);
    }
    CHECK(!terms_stop_word("printer"));
    CHECK(!terms_stop_word("The"));        /* the list is lower case: callers lower-case */
    CHECK_STR(split("How do I fix THE printer, por favor? Não funciona", 0, TERMS_MAX),
              "\"fix\" \"printer\" \"favor\" \"funciona\"");
}

TEST(hostile_syntax_quoted)
{
    static const char *const qs[] = {
        "AND OR \"(*", "\"", "NEAR(monitor cable, 2)", "title:monitor", "monitor*",
        "-monitor ^cable", "{title text}: monitor", "mon\"itor", "* OR *", "NOT",
        "'; DROP TABLE t; --", "\xff\xfe monitor \xc3", "col:umn:x", "[x]", "\\\\",
    };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        struct terms t;
        terms_split(qs[i], TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
        for (int k = 0; k < t.n; k++) {
            const char *v = t.v[k];
            size_t n = strlen(v);
            int star = n > 0 && v[n - 1] == '*';
            /* "word" or "word"*, with no quote, space or syntax inside */
            CHECK(n >= 4 && v[0] == '"' && v[n - 1 - star] == '"');
            for (size_t j = 1; j + 1 + (size_t)star < n; j++)
                CHECK(v[j] != '"' && v[j] != ' ' && v[j] != '*' && v[j] != ':' &&
                      v[j] != '(' && v[j] != ')' && v[j] != '-' && v[j] != '^');
        }
    }
    CHECK_STR(split("NEAR(monitor cable, 2)", 0, TERMS_MAX), "\"near\" \"monitor\" \"cable\"");
    /* and, or, not: stop words */
    CHECK_STR(split("mon\"itor AND OR NOT", 0, TERMS_MAX), "\"mon\" \"itor\"");
}

TEST(cap)
{
    char q[600] = "";
    for (int i = 0; i < 40; i++) {
        char w[16];
        snprintf(w, sizeof w, "w%02dx ", i);
        strcat(q, w);
    }
    struct terms t;
    terms_split(q, 0, 16, &t);
    CHECK_INT(t.n, 16);
    CHECK(!strcmp(t.v[0], "\"w00x\"") && !strcmp(t.v[15], "\"w15x\""));
    terms_split(q, 0, 24, &t);
    CHECK_INT(t.n, 24);
    CHECK(!strcmp(t.v[23], "\"w23x\""));
    terms_split(q, 0, 1000, &t);             /* clamped to TERMS_MAX */
    CHECK_INT(t.n, TERMS_MAX);
    terms_split(q, 0, 0, &t);                /* clamped to 1 */
    CHECK_INT(t.n, 1);
    /* dropped words do not count towards the cap */
    CHECK_STR(split("the a of printer x to toner", 0, 2), "\"printer\" \"toner\"");
}

TEST(prefix_and_stem)
{
    /* plain: quoted words, no stem, no prefix */
    CHECK_STR(split("laptops gaming pc glass", 0, TERMS_MAX),
              "\"laptops\" \"gaming\" \"pc\" \"glass\"");
    /* prefix only: 4 bytes and more */
    CHECK_STR(split("laptops gaming pc ssd mice", TERMS_PREFIX, TERMS_MAX),
              "\"laptops\"* \"gaming\"* \"pc\" \"ssd\" \"mice\"*");
    /* stem: ASCII words of 5+ letters ending in one s ("glass" keeps its
     * double s, "bus" is too short, "cafés" is not ASCII) */
    CHECK_STR(split("Laptops glass bus cafés phones", TERMS_PREFIX | TERMS_STEM, TERMS_MAX),
              "\"laptop\"* \"glass\"* \"bus\" \"cafés\"* \"phone\"*");
    /* stem without prefix */
    CHECK_STR(split("laptops glass", TERMS_STEM, TERMS_MAX), "\"laptop\" \"glass\"");
    /* the stem and the singular are one term */
    CHECK_STR(split("laptop laptops", TERMS_PREFIX | TERMS_STEM, TERMS_MAX), "\"laptop\"*");
}

TEST(or_expression)
{
    struct terms t;
    char expr[TERMS_EXPR_SIZE];
    terms_split("vpn lease printers", TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
    CHECK_INT(terms_or(&t, expr, sizeof expr), 0);
    CHECK_STR(expr, "\"vpn\" OR \"lease\"* OR \"printer\"*");
    char small[8];
    CHECK_INT(terms_or(&t, small, sizeof small), -1);
    CHECK_STR(small, "");
    terms_split("", 0, TERMS_MAX, &t);
    CHECK_INT(terms_or(&t, expr, sizeof expr), -1);
    CHECK_STR(expr, "");
    /* the largest split fits TERMS_EXPR_SIZE */
    char q[TERMS_MAX * 70 + 1];
    size_t off = 0;
    for (int i = 0; i < TERMS_MAX; i++) {
        memset(q + off, 'a' + i % 26, 62);
        q[off + 62] = (char)('a' + i / 26);
        q[off + 63] = 'z';
        q[off + 64] = ' ';
        off += 65;
    }
    q[off] = '\0';
    terms_split(q, TERMS_PREFIX, TERMS_MAX, &t);
    REQUIRE(t.n == TERMS_MAX);
    CHECK_INT(terms_or(&t, expr, sizeof expr), 0);
    CHECK_INT(strlen(expr), TERMS_MAX * 67 + (TERMS_MAX - 1) * 4);
}

static const char SQL_HIT[] = "SELECT 1 FROM tt WHERE tt MATCH ?1 AND rowid = ?2";

TEST(hits_on_fts5)
{
    char path[300], err[256];
    snprintf(path, sizeof path, "%s/terms.db", th_tmpdir());
    parley_db *db = db_open(path, err, sizeof err);
    REQUIRE(db != NULL);
    REQUIRE(db_exec(db, "CREATE VIRTUAL TABLE tt USING fts5(body);"
                        "INSERT INTO tt(rowid, body) VALUES (1, 'gaming laptop with a fast ssd');"
                        "INSERT INTO tt(rowid, body) VALUES (2, 'office chair');") == 0);
    struct terms t;
    terms_split("Laptops for gaming? NEAR(chair \"ssd\"", TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
    REQUIRE(t.n == 5);                       /* laptop*, gaming*, near*, chair*, ssd */
    CHECK_INT(terms_hits(db, SQL_HIT, &t, 1), 3);
    CHECK_INT(terms_hits(db, SQL_HIT, &t, 2), 1);
    CHECK_INT(terms_hits(db, SQL_HIT, &t, 3), 0);
    /* every hostile query gives an expression FTS5 accepts */
    static const char SQL_ALL[] = "SELECT count(*) FROM tt WHERE tt MATCH ?1";
    static const char *const qs[] = {
        "AND OR \"(*", "NEAR(laptop chair, 2)", "body:laptop", "laptop*", "-laptop ^chair",
        "{body}: laptop", "lap\"top", "* OR *", "NOT chair", "'; DROP TABLE tt; --",
    };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        terms_split(qs[i], TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
        char expr[TERMS_EXPR_SIZE];
        if (terms_or(&t, expr, sizeof expr) < 0)
            continue;
        sqlite3_stmt *st = db_stmt(db, SQL_ALL);
        REQUIRE(st != NULL);
        db_bind_text(st, 1, expr);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            printf("#   query %zu (%s) refused: %s\n", i, expr, sqlite3_errmsg(db_handle(db)));
        CHECK_INT(rc, SQLITE_ROW);
        sqlite3_reset(st);
        CHECK_INT(terms_hits(db, SQL_HIT, &t, 1) >= 0, 1);
    }
    db_close(db);
}

TEST(words_for_postgres)
{
    struct terms t;
    char w[TERMS_EXPR_SIZE];
    terms_split("vpn lease printers", TERMS_PREFIX | TERMS_STEM, TERMS_MAX, &t);
    CHECK_INT(terms_words(&t, w, sizeof w), 0);
    CHECK_STR(w, "vpn lease* printer*");
    terms_split("Ação & !café | (x) <-> 'ab':*", 0, TERMS_MAX, &t);
    CHECK_INT(terms_words(&t, w, sizeof w), 0);
    CHECK_STR(w, "ação café ab");
    /* U+1680 (ogham space) separates words: no space inside a word */
    terms_split("lap\xe1\x9a\x80top", 0, TERMS_MAX, &t);
    CHECK_INT(t.n, 2);
    char small[6];
    terms_split("printer toner", 0, TERMS_MAX, &t);
    CHECK_INT(terms_words(&t, small, sizeof small), -1);
    CHECK_STR(small, "");
    terms_split("", 0, TERMS_MAX, &t);
    CHECK_INT(terms_words(&t, w, sizeof w), -1);
    /* the largest split fits TERMS_EXPR_SIZE */
    char q[TERMS_MAX * 70 + 1];
    size_t off = 0;
    for (int i = 0; i < TERMS_MAX; i++) {
        memset(q + off, 'a' + i % 26, 62);
        q[off + 62] = (char)('a' + i / 26);
        q[off + 63] = 'z';
        q[off + 64] = ' ';
        off += 65;
    }
    q[off] = '\0';
    terms_split(q, TERMS_PREFIX, TERMS_MAX, &t);
    REQUIRE(t.n == TERMS_MAX);
    CHECK_INT(terms_words(&t, w, sizeof w), 0);
}

static const char *pg_uri;
static int notices;
static void count_notice(void *arg, const PGresult *r)
{
    (void)arg;
    notices++;
    printf("#   notice: %s", PQresultErrorMessage(r));
}

/* Every hostile query's words become a tsquery (or none) under both
 * configurations, through the statement the storage modules use, with no
 * error and no NOTICE (a word that leaves no lexeme is NULL, skipped). */
TEST(pg_term_queries)
{
    char err[512];
    parley_db *db = db_open(pg_uri, err, sizeof err);
    REQUIRE(db);
    PGconn *c = db_pg_conn(db);
    REQUIRE(c);
    PQsetNoticeReceiver(c, count_notice, NULL);
    static const char SQL[] =
        "SELECT parley_tsquery_or(parley_term_query($2::regconfig, w))::text "
        "FROM unnest(string_to_array($1, ' ')) AS w";
    static const char *const qs[] = {
        "AND OR \"(*", "NEAR(monitor cable, 2)", "title:monitor", "monitor*", "-monitor ^cable",
        "{title text}: monitor", "mon\"itor", "* OR *", "'; DROP TABLE t; --", "a & b | !c",
        "monitor:* <-> cable:AB", "'''", "\\x00", "\xcc\x81\xcc\x81 monitor",
        "lap\xe1\x9a\x80top", "\xe2\x80\x94monitor\xe2\x80\x94", "Éclair ação ΣΟΦΙΑ 東京",
        "\xff\xfe monitor \xc3", "12345 1e5 0x1f v1", "monitors",
    };
    static const char *const cfgs[] = { "parley_kb", "simple" };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++)
        for (int k = 0; k < 2; k++) {
            struct terms t;
            terms_split(qs[i], k ? TERMS_PREFIX | TERMS_STEM : 0, TERMS_MAX, &t);
            char w[TERMS_EXPR_SIZE];
            if (terms_words(&t, w, sizeof w) < 0)
                continue;
            const char *params[2] = { w, cfgs[k] };
            PGresult *r = PQexecParams(c, SQL, 2, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                printf("#   query %zu (%s) refused: %s", i, w, PQresultErrorMessage(r));
            CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
            if (i == 19 && PQresultStatus(r) == PGRES_TUPLES_OK)   /* stemmed / prefix */
                CHECK_STR(PQgetvalue(r, 0, 0), k ? "'monitor':*" : "'monitor'");
            if (i == 16 && k == 0 && PQresultStatus(r) == PGRES_TUPLES_OK)
                CHECK_STR(PQgetvalue(r, 0, 0), "'eclair' | 'acao' | 'σοφια' | '東京'");
            PQclear(r);
        }
    CHECK_INT(notices, 0);
    db_close(db);
}

int main(void)
{
    RUN(split_words);
    RUN(split_rules);
    RUN(stop_words);
    RUN(hostile_syntax_quoted);
    RUN(cap);
    RUN(prefix_and_stem);
    RUN(or_expression);
    RUN(hits_on_fts5);
    RUN(words_for_postgres);
    pg_uri = getenv("PARLEY_TEST_PG");
    if (pg_uri && *pg_uri) {
        printf("# backend: PostgreSQL (PARLEY_TEST_PG)\n");
        RUN(pg_term_queries);
    }
    return th_done();
}
