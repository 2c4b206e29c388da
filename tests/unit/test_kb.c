/* test_kb.c — the knowledge base (core/kb.c): Markdown and text files cut
 * into passages, re-import replacing a file's passages in one transaction
 * (a refused file leaves them alone), removal by file name and id, BM25
 * ranking, hostile FTS5 syntax in queries, empty queries, confidence (-1
 * = JSON null without a hit, else in [0, 1]), the byte bound of the prompt
 * context, the grounded cache key; 8 connections re-importing one file at
 * once (every import succeeds, one whole version is left); and seed 000
 * with PARLEY_KB_TICKETS: the passages reach the upstream's system prompt,
 * and an answer cached before grounding is not served for the grounded
 * prompt.
 *
 * The backend-neutral cases (run_cases) run on SQLite; when PARLEY_TEST_PG
 * holds a PostgreSQL URI (tests/integration/t0750-pg-kb.sh, with
 *) they run again on it, in a schema of their own
 * (kbt_<pid>_<ms>, through the URI's options=-csearch_path; migrated at
 * the first open, dropped at the end), so passages of earlier runs cannot
 * change what a search finds. What holds on both backends is asserted:
 * which passages match, the best first in clear cases, the number of
 * terms each matches, no hit = the documented empty result, user syntax
 * harmless. The scores differ (BM25 there, ts_rank_cd here: see
 * docs/postgres.md); ticket_grounding (the whole seed 000 stack) is
 * SQLite-only. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "kb.h"
#include "proto_impl.h"
#include "store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

static parley_db *db;
static const char *target;           /* what the cases open: dbpath or a PostgreSQL URI */

static const char MD[] =
    "Welcome to the help desk articles.\n"
    "\n"
    "# Printers\n"
    "\n"
    "## Paper jams\n"
    "\n"
    "When the printer jams, open tray 2 and remove the crumpled paper.\n"
    "Then restart the printer.\n"
    "\n"
    "```\n"
    "# not a heading inside a fence\n"
    "\n"
    "lpstat -p\n"
    "```\n"
    "\n"
    "## Toner ##\n"
    "Replace the toner cartridge when the orange light blinks.\n"
    "\n"
    "# VPN\n"
    "The VPN drops every hour because the DHCP lease expires; renew the lease.\n";

static int count_rows(const char *source)
{
    struct kb_entry *e;
    int n;
    if (kb_list(db, source, &e, &n) != KB_OK)
        return -1;
    kb_entries_free(e, n);
    return n;
}

static int valid_utf8(const char *s)
{
    json_t *j = json_string(s);      /* jansson refuses invalid UTF-8 */
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

TEST(import_markdown)
{
    char err[256];
    int n = -1;
    REQUIRE(kb_import_text(db, "help.md", MD, strlen(MD), 1, &n, err, sizeof err) == KB_OK);
    CHECK_INT(n, 4);
    struct kb_entry *e;
    int ne;
    REQUIRE(kb_list(db, "help.md", &e, &ne) == KB_OK);
    REQUIRE(ne == 4);
    CHECK_STR(e[0].title, "Welcome to the help desk articles.");
    CHECK_STR(e[1].title, "Paper jams");        /* "# Printers" has no text of its own */
    CHECK_STR(e[2].title, "Toner");             /* closing #s dropped */
    CHECK_STR(e[3].title, "VPN");
    for (int i = 0; i < ne; i++)
        CHECK_INT(e[i].seq, i + 1);
    kb_entries_free(e, ne);
    /* the fence (and its blank line) stays in the paper-jam passage */
    struct kb_hits h;
    REQUIRE(kb_search(db, "lpstat", 5, &h) == KB_OK);
    REQUIRE(h.n == 1);
    CHECK_STR(h.v[0].title, "Paper jams");
    CHECK(strstr(h.v[0].text, "# not a heading inside a fence\n\nlpstat -p") != NULL);
    CHECK(strncmp(h.v[0].text, "When the printer jams", 21) == 0);
    kb_hits_free(&h);
}

TEST(import_text)
{
    /* 30 paragraphs of ~100 bytes: grouped into passages <= 1200 bytes */
    char *t = malloc(64 * 1024);
    REQUIRE(t);
    size_t off = 0;
    for (int i = 0; i < 30; i++)
        off += (size_t)sprintf(t + off, "Paragraph %d about routers and switches, "
                               "with enough words to be about one hundred bytes long.\n\n", i);
    /* one paragraph of 3000 bytes without blank lines, with a 2-byte character */
    for (int i = 0; i < 300; i++)
        off += (size_t)sprintf(t + off, "%s", i == 119 ? "longwordé " : "longword1 ");
    t[off] = '\0';
    char err[256];
    int n = 0;
    REQUIRE(kb_import_text(db, "net.txt", t, off, 0, &n, err, sizeof err) == KB_OK);
    struct kb_entry *e;
    int ne;
    REQUIRE(kb_list(db, "net.txt", &e, &ne) == KB_OK);
    CHECK_INT(ne, n);
    CHECK(ne >= 5 && ne <= 8);
    for (int i = 0; i < ne; i++)
        CHECK(e[i].bytes > 0 && e[i].bytes <= KB_PASSAGE_MAX);
    CHECK_STR(e[0].title, "Paragraph 0 about routers and switches, with enough words to be about "
                          "one hundred bytes long.");
    kb_entries_free(e, ne);
    /* every passage is valid UTF-8 (the long paragraph was cut at spaces) */
    struct kb_hits h;
    REQUIRE(kb_search(db, "longword1", 10, &h) == KB_OK);
    CHECK(h.n >= 3);
    for (int i = 0; i < h.n; i++)
        CHECK(valid_utf8(h.v[i].text) && strlen(h.v[i].text) <= KB_PASSAGE_MAX);
    kb_hits_free(&h);
    free(t);
}

TEST(reimport_replaces)
{
    char err[256];
    int n = 0;
    const char *v1 = "# Zebra\nThe zebra article.\n# Quokka\nThe quokka article.\n";
    const char *v2 = "# Quokka\nThe quokka article, second edition.\n";
    REQUIRE(kb_import_text(db, "animals.md", v1, strlen(v1), 1, &n, err, sizeof err) == KB_OK);
    CHECK_INT(n, 2);
    REQUIRE(kb_import_text(db, "animals.md", v2, strlen(v2), 1, &n, err, sizeof err) == KB_OK);
    CHECK_INT(n, 1);
    CHECK_INT(count_rows("animals.md"), 1);
    struct kb_hits h;
    REQUIRE(kb_search(db, "zebra", 5, &h) == KB_OK);
    CHECK_INT(h.n, 0);                          /* gone from the index too */
    kb_hits_free(&h);
    REQUIRE(kb_search(db, "quokka edition", 5, &h) == KB_OK);
    CHECK_INT(h.n, 1);
    kb_hits_free(&h);

    /* refused input changes nothing */
    const char bad_utf8[] = "# Quokka\nbad \xff byte\n";
    CHECK_INT(kb_import_text(db, "animals.md", bad_utf8, strlen(bad_utf8), 1, &n, err, sizeof err),
              KB_BAD_INPUT);
    CHECK(strstr(err, "not UTF-8") != NULL);
    const char nul[] = "# Quokka\nnul\0byte\n";
    CHECK_INT(kb_import_text(db, "animals.md", nul, sizeof nul - 1, 1, &n, err, sizeof err),
              KB_BAD_INPUT);
    CHECK_INT(kb_import_text(db, "animals.md", "\n  \n# Empty\n\n", 12, 1, &n, err, sizeof err),
              KB_BAD_INPUT);
    CHECK(strstr(err, "no text") != NULL);
    CHECK_INT(kb_import_text(db, "", "x y", 3, 0, &n, err, sizeof err), KB_BAD_INPUT);
    CHECK_INT(count_rows("animals.md"), 1);
    REQUIRE(kb_search(db, "quokka", 5, &h) == KB_OK);
    CHECK_INT(h.n, 1);
    kb_hits_free(&h);

    /* the file reader: name = last path component, .md is Markdown */
    char path[600];
    snprintf(path, sizeof path, "%s/Guide.MD", th_tmpdir());
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("\xef\xbb\xbf# Wombat\nWombats dig burrows.\n", f);
    fclose(f);
    REQUIRE(kb_import_file(db, path, &n, err, sizeof err) == KB_OK);
    CHECK_INT(n, 1);
    REQUIRE(kb_search(db, "wombat", 5, &h) == KB_OK);
    REQUIRE(h.n == 1);
    CHECK_STR(h.v[0].source, "Guide.MD");
    CHECK_STR(h.v[0].title, "Wombat");
    kb_hits_free(&h);
    snprintf(path, sizeof path, "%s/missing.md", th_tmpdir());
    CHECK_INT(kb_import_file(db, path, &n, err, sizeof err), KB_BAD_INPUT);
    CHECK(strstr(err, "cannot open") != NULL);
}

TEST(remove_passages)
{
    char err[256];
    int n = 0;
    const char *t = "Alpha paragraph about gizmos.\n\nBeta paragraph about gadgets.\n";
    REQUIRE(kb_import_text(db, "rm.txt", t, strlen(t), 0, &n, err, sizeof err) == KB_OK);
    struct kb_entry *e;
    int ne;
    REQUIRE(kb_list(db, "rm.txt", &e, &ne) == KB_OK);
    REQUIRE(ne == 1);                           /* two short paragraphs: one passage */
    int64_t id = e[0].id;
    kb_entries_free(e, ne);
    CHECK_INT(kb_remove_id(db, id), KB_OK);
    CHECK_INT(kb_remove_id(db, id), KB_NOT_FOUND);
    CHECK_INT(count_rows("rm.txt"), 0);
    REQUIRE(kb_import_text(db, "rm.txt", t, strlen(t), 0, &n, err, sizeof err) == KB_OK);
    int removed = 0;
    CHECK_INT(kb_remove_source(db, "rm.txt", &removed), KB_OK);
    CHECK_INT(removed, 1);
    CHECK_INT(kb_remove_source(db, "rm.txt", &removed), KB_NOT_FOUND);
    CHECK_INT(removed, 0);
    struct kb_hits h;
    REQUIRE(kb_search(db, "gizmos gadgets", 5, &h) == KB_OK);
    CHECK_INT(h.n, 0);
    kb_hits_free(&h);
    if (!db_pg_conn(db)) {
        /* the index agrees with the table (FTS5 integrity check) */
        CHECK(db_exec(db, "INSERT INTO kb_fts(kb_fts, rank) VALUES ('integrity-check', 1)") == 0);
    } else {
        /* the generated column is every row's document */
        PGresult *r = PQexec(db_pg_conn(db), "SELECT count(*) FROM kb_passages "
                                             "WHERE fts IS DISTINCT FROM kb_document(title, text)");
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "0"));
        PQclear(r);
    }
}

TEST(search_ranking)
{
    char err[256];
    int n;
    const char *t =
        "# Keyboard cleaning\nWipe the keys with a dry cloth.\n"
        "# Monitor flicker\nA flickering monitor needs a new cable; check the keyboard too.\n"
        "# Monitor cable and keyboard\nA loose monitor cable makes the monitor flicker. "
        "Replace the monitor cable.\n";
    REQUIRE(kb_import_text(db, "hw.md", t, strlen(t), 1, &n, err, sizeof err) == KB_OK);
    struct kb_hits h;
    REQUIRE(kb_search(db, "Why does my monitor flicker? Is it the cable?", 10, &h) == KB_OK);
    CHECK_INT(h.nterms, 3);                     /* monitor, flicker, cable: the rest are common */
    REQUIRE(h.n == 2);
    CHECK_STR(h.v[0].title, "Monitor cable and keyboard");
    CHECK_STR(h.v[1].title, "Monitor flicker");
    CHECK(h.v[0].bm25 <= h.v[1].bm25);
    CHECK_INT(h.v[0].terms_matched, 3);
    CHECK_INT(h.v[1].terms_matched, 3);         /* porter: "flickering" is "flicker" */
    double c = kb_confidence(&h);
    CHECK(c > 0 && c <= 1);
    kb_hits_free(&h);
    /* the limit holds, and a partial match has a lower confidence */
    REQUIRE(kb_search(db, "keyboard", 1, &h) == KB_OK);
    CHECK_INT(h.n, 1);
    kb_hits_free(&h);
    REQUIRE(kb_search(db, "monitor cable flicker toaster oven warranty", 10, &h) == KB_OK);
    CHECK_INT(h.nterms, 6);
    CHECK_INT(h.v[0].terms_matched, 3);
    double partial = kb_confidence(&h);
    CHECK(partial > 0 && partial < c);
    CHECK(partial <= 0.5);
    kb_hits_free(&h);
    /* diacritics and case are folded */
    REQUIRE(kb_search(db, "MONITÖR", 10, &h) == KB_OK);
    CHECK_INT(h.n, 2);
    kb_hits_free(&h);
}

TEST(hostile_queries)
{
    static const char *const qs[] = {
        "AND OR \"(*", "\"", "\"\"\"", "NEAR(monitor cable, 2)", "title:monitor", "monitor*",
        "-monitor ^cable", "{title text}: monitor", "mon\"itor", ")(", "* OR *", "NOT",
        "monitor AND", "'; DROP TABLE kb_passages; --", "\xff\xfe monitor \xc3", "a+b=c",
        "col:umn:x", "[x]", "\\\\", "monitor\"cable",
    };
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        struct kb_hits h;
        int rc = kb_search(db, qs[i], 5, &h);
        if (rc != KB_OK)
            printf("#   query %zu failed: %s\n", i, db_errmsg(db));
        CHECK_INT(rc, KB_OK);
        CHECK(kb_confidence(&h) == -1 || (kb_confidence(&h) >= 0 && kb_confidence(&h) <= 1));
        kb_hits_free(&h);
    }
    /* words inside syntax are still words */
    struct kb_hits h;
    REQUIRE(kb_search(db, "NEAR(monitor cable, 2)", 5, &h) == KB_OK);
    CHECK(h.n >= 1);
    kb_hits_free(&h);
    REQUIRE(kb_search(db, "mon\"itor", 5, &h) == KB_OK);   /* "mon" and "itor": no such words */
    CHECK_INT(h.n, 0);
    kb_hits_free(&h);
    CHECK(count_rows("hw.md") == 3);
}

TEST(empty_and_no_hits)
{
    static const char *const qs[] = { "", "   ", "the and of to", "a b c ? !", "AND OR", NULL };
    for (int i = 0; i < 6; i++) {
        struct kb_hits h;
        CHECK_INT(kb_search(db, qs[i], 5, &h), KB_OK);
        CHECK_INT(h.n, 0);
        CHECK(h.nterms == 0 || i == 4);        /* "AND OR": words, just not common ones */
        CHECK(kb_confidence(&h) == -1);
        kb_hits_free(&h);
    }
    struct kb_hits h;
    CHECK_INT(kb_search(db, "xylophone zeppelin", 5, &h), KB_OK);
    CHECK_INT(h.nterms, 2);
    CHECK_INT(h.n, 0);
    CHECK(kb_confidence(&h) == -1);             /* the caller reports JSON null */
    int used = 7;
    char *ctx = kb_context(&h, 4000, &used);
    CHECK_STR(ctx, "");
    CHECK_INT(used, 0);
    free(ctx);
    kb_hits_free(&h);
    CHECK(kb_confidence(NULL) == -1);
    CHECK_INT(kb_search(db, "monitor", 0, &h), KB_OK);
    CHECK_INT(h.n, 0);
    kb_hits_free(&h);
    struct kb_grounding g;
    CHECK_INT(kb_ground(db, "xylophone zeppelin", "base", 3, 4000, &g), KB_OK);
    CHECK(g.system == NULL);
    CHECK_INT(g.used, 0);
    CHECK(g.confidence == -1);
    kb_grounding_free(&g);
}

TEST(context_bound)
{
    struct kb_hits h;
    REQUIRE(kb_search(db, "monitor cable keyboard", 10, &h) == KB_OK);
    REQUIRE(h.n == 3);
    int used;
    char *all = kb_context(&h, 100000, &used);
    REQUIRE(all);
    CHECK_INT(used, 3);
    char want[200];
    snprintf(want, sizeof want, "[1] %s (%s)\n", h.v[0].title, h.v[0].source);
    CHECK(strncmp(all, want, strlen(want)) == 0);
    CHECK(strstr(all, "\n\n[2] ") != NULL && strstr(all, "\n\n[3] ") != NULL);
    size_t full = strlen(all);
    int last_used = 0;
    for (size_t max = 0; max <= full + 5; max++) {
        char *s = kb_context(&h, max, &used);
        REQUIRE(s);
        CHECK(strlen(s) <= max);
        CHECK(valid_utf8(s));
        CHECK(used >= last_used);               /* more room never fewer passages */
        CHECK((used == 0) == (s[0] == '\0'));
        if (used > 1)
            CHECK(strncmp(s, all, strlen(s)) == 0);
        last_used = used;
        free(s);
    }
    CHECK_INT(last_used, 3);
    char *huge = kb_context(&h, SIZE_MAX, &used);     /* no overflow in the size */
    CHECK(huge && !strcmp(huge, all) && used == 3);
    free(huge);
    /* too small for the first whole passage: it is cut, with "…" */
    char *cut = kb_context(&h, strlen(want) + 10, &used);
    CHECK_INT(used, 1);
    CHECK(strlen(cut) <= strlen(want) + 10);
    CHECK(strstr(cut, "\xe2\x80\xa6") != NULL);
    free(cut);
    free(all);

    /* grounding: base, the instruction, the context */
    struct kb_grounding g;
    REQUIRE(kb_ground(db, "monitor cable keyboard", "BASE PROMPT", 2, 4000, &g) == KB_OK);
    REQUIRE(g.system);
    CHECK_INT(g.used, 2);
    CHECK(strncmp(g.system, "BASE PROMPT\n\n", 13) == 0);
    CHECK(strstr(g.system, "[1] ") && strstr(g.system, "[2] ") && !strstr(g.system, "[3] "));
    CHECK(g.confidence > 0 && g.confidence <= 1);
    kb_grounding_free(&g);
    kb_hits_free(&h);
}

TEST(key_ground)
{
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, "T-1", "body", hash);
    char k0[160], k1[160], k2[160];
    memcpy(k0, a.key, sizeof k0);
    memcpy(k1, a.key, sizeof k1);
    memcpy(k2, a.key, sizeof k2);
    CHECK_INT(kb_key_ground(k1, sizeof k1, "system with passages A"), 0);
    CHECK_INT(kb_key_ground(k2, sizeof k2, "system with passages B"), 0);
    CHECK(strcmp(k0, k1) != 0 && strcmp(k1, k2) != 0);
    CHECK_INT(strlen(k1), strlen(k0));
    CHECK(strncmp(k1, "ticket:T-1:", 11) == 0);
    char k3[160];
    memcpy(k3, a.key, sizeof k3);
    kb_key_ground(k3, sizeof k3, "system with passages A");
    CHECK_STR(k3, k1);                           /* deterministic: other processes agree */
    CHECK_INT(kb_key_ground(k3, sizeof k3, NULL), 0);
    CHECK_INT(kb_key_ground(k3, sizeof k3, ""), 0);
    CHECK_STR(k3, k1);
    char *norm = answer_key_query(&a, "Hello", "m", 0.5);
    free(norm);
    memcpy(k3, a.key, sizeof k3);
    CHECK_INT(kb_key_ground(k3, sizeof k3, "x"), 0);
    CHECK(strncmp(k3, "query:", 6) == 0 && strcmp(k3, a.key) != 0);
    char bad[32] = "nocolon";
    CHECK_INT(kb_key_ground(bad, sizeof bad, "x"), -1);
}

/* Best first in a clear case, on both backends: a rare word only one
 * passage has, and a title match over a text match. */
TEST(search_clear_cases)
{
    char err[256];
    int n;
    const char *t =
        "# Plotter drivers\nInstall the plotter driver from the vendor site.\n"
        "# Plotter sheets\nLoad the plotter with A4 sheets; the plotter takes 250 of them.\n"
        "# Digitizer\nThe digitizer sits next to the plotter and shares its shelf with the sheets.\n";
    REQUIRE(kb_import_text(db, "office.md", t, strlen(t), 1, &n, err, sizeof err) == KB_OK);
    struct kb_hits h;
    /* "digitizer" is in one title and one text: that passage, and only it */
    REQUIRE(kb_search(db, "digitizer", 10, &h) == KB_OK);
    REQUIRE(h.n == 1);
    CHECK_STR(h.v[0].title, "Digitizer");
    kb_hits_free(&h);
    /* both words in one passage beat one word in the others */
    REQUIRE(kb_search(db, "plotter drivers", 10, &h) == KB_OK);
    CHECK_INT(h.nterms, 2);
    REQUIRE(h.n == 3);
    CHECK_STR(h.v[0].title, "Plotter drivers");
    CHECK_INT(h.v[0].terms_matched, 2);       /* stems: "drivers" is "driver" */
    CHECK_INT(h.v[1].terms_matched, 1);
    CHECK_INT(h.v[2].terms_matched, 1);
    for (int i = 1; i < h.n; i++)
        CHECK(h.v[i - 1].bm25 <= h.v[i].bm25);       /* best first: lower is better */
    kb_hits_free(&h);
    /* a word in a title (and its text) beats the same word once in a text */
    REQUIRE(kb_search(db, "sheets", 10, &h) == KB_OK);
    REQUIRE(h.n == 2);
    CHECK_STR(h.v[0].title, "Plotter sheets");
    CHECK_STR(h.v[1].title, "Digitizer");
    kb_hits_free(&h);
    REQUIRE(kb_search(db, "shelf digitizer", 10, &h) == KB_OK);
    REQUIRE(h.n == 1);
    CHECK_INT(h.v[0].terms_matched, 2);
    CHECK(kb_confidence(&h) >= 0.6);
    kb_hits_free(&h);
    CHECK_INT(kb_remove_source(db, "office.md", &n), KB_OK);
}

/* 8 connections re-import one file at the same moment (a barrier), each
 * with its own version (different texts, 1 to 8 passages), 4 rounds:
 * every import succeeds, and the file is then exactly one version, whole
 * (its passage count, seqs 1..n, one marker). On PostgreSQL this rests on
 * the per-source advisory lock: without it the second import's INSERT
 * fails on kb_passages_source (SQLite's BEGIN IMMEDIATE serialises). */
#define IMPORTERS 8
struct importer {
    int no, round, rc;
    pthread_barrier_t *start;
    char err[256];
};

static void version_text(char *buf, size_t len, int no, int round)
{
    size_t off = 0;
    for (int i = 0; i <= no; i++)
        off += (size_t)snprintf(buf + off, len - off, "# Part %d\nVersion v%dr%d of the racing "
                                "article, part %d.\n", i, no, round, i);
}

static void *importer_main(void *p)
{
    struct importer *a = p;
    char err[512];
    parley_db *mine = db_open(target, err, sizeof err);
    char text[2048];
    version_text(text, sizeof text, a->no, a->round);
    pthread_barrier_wait(a->start);
    a->rc = mine ? kb_import_text(mine, "race.md", text, strlen(text), 1, NULL, a->err,
                                  sizeof a->err) : KB_ERR;
    if (!mine)
        snprintf(a->err, sizeof a->err, "%.200s", err);
    db_close(mine);
    return NULL;
}

TEST(concurrent_reimports_one_source)
{
    for (int round = 0; round < 4; round++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, IMPORTERS);
        struct importer a[IMPORTERS];
        pthread_t th[IMPORTERS];
        for (int i = 0; i < IMPORTERS; i++) {
            a[i] = (struct importer){ .no = i, .round = round, .rc = -9, .start = &start };
            REQUIRE(pthread_create(&th[i], NULL, importer_main, &a[i]) == 0);
        }
        for (int i = 0; i < IMPORTERS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&start);
        int ok = 0;
        for (int i = 0; i < IMPORTERS; i++) {
            if (a[i].rc != KB_OK)
                printf("#   round %d importer %d: %d %s\n", round, i, a[i].rc, a[i].err);
            ok += a[i].rc == KB_OK;
        }
        CHECK_INT(ok, IMPORTERS);
        struct kb_entry *e;
        int ne;
        REQUIRE(kb_list(db, "race.md", &e, &ne) == KB_OK);
        REQUIRE(ne >= 1 && ne <= IMPORTERS);
        int no = ne - 1;                      /* version no has no + 1 passages */
        for (int i = 0; i < ne; i++)
            CHECK_INT(e[i].seq, i + 1);
        kb_entries_free(e, ne);
        char word[32];
        snprintf(word, sizeof word, "v%dr%d", no, round);
        struct kb_hits h;
        REQUIRE(kb_search(db, word, KB_MAX_HITS, &h) == KB_OK);
        CHECK_INT(h.n, ne);                   /* every passage is of that one version */
        kb_hits_free(&h);
        REQUIRE(kb_search(db, "racing", KB_MAX_HITS, &h) == KB_OK);
        CHECK_INT(h.n, ne);                   /* and no other version's is left */
        kb_hits_free(&h);
    }
    CHECK_INT(kb_remove_source(db, "race.md", NULL), KB_OK);
}

/* ---- seed 000 grounded in the knowledge base ---- */

static json_t *fake_last_body(void)
{
    json_t *o = fake_stats();
    json_t *b = json_incref(json_object_get(o, "last_body"));
    json_decref(o);
    return b;
}

/* Sends ticketBody on a new seed 000 connection to ticket; runs the job
 * when one starts. *types: the frame types, space-separated (caller's
 * buffer). 0 / -1. */
static int ask_ticket(struct parley_ctx *ctx, const char *ticket, const char *body,
                      char *types, size_t tlen)
{
    char path[128];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", ticket);
    struct proto_conn c;
    struct proto_frames f;
    frames_init(&f);
    types[0] = '\0';
    if (proto_open(ctx, &c, path, "", "ip:127.0.0.1", &f) < 0) {
        frames_free(&f);
        proto_conn_cleanup(&c);
        return -1;
    }
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    struct proto_job *job = NULL;
    int rc = send_text(ctx, &c, text, &f, &job);
    free(text);
    if (rc == 0 && job)
        rc = run_job(ctx, job);
    if (rc == 0)
        rc = pump_to_end(ctx, &c, &f);
    for (int i = 0; i < f.n; i++) {
        json_t *o = frame(&f, i);
        size_t l = strlen(types);
        snprintf(types + l, tlen - l, "%s%s", l ? " " : "", ftype(o));
        json_decref(o);
    }
    frames_free(&f);
    proto_conn_cleanup(&c);
    return rc;
}

/* The frames of a fresh answer: stream frames (tokens may be coalesced),
 * then done; a cached answer is "cached done". */
static int streamed(const char *types)
{
    size_t n = strlen(types);
    int ok = !strncmp(types, "stream ", 7) && n > 12 && !strcmp(types + n - 5, " done");
    if (!ok)
        printf("#   frames: %s\n", types);
    return ok;
}

static int last_system_has(const char *needle)
{
    json_t *b = fake_last_body();
    const char *sys = json_string_value(json_object_get(b, "system"));
    int has = sys && strstr(sys, needle) != NULL;
    if (!sys)
        printf("#   the upstream request had no system text\n");
    json_decref(b);
    return has;
}

TEST(ticket_grounding)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    char err[256];
    int n;
    const char *art = "# Fuser error E52\nError E52 means the fuser unit overheated: "
                      "switch the printer off for ten minutes.\n";
    REQUIRE(kb_import_text(ctx.db, "printers.md", art, strlen(art), 1, &n, err, sizeof err) == KB_OK);
    const char *body = "Printer shows fuser error E52 [[fake tokens=4 token_ms=0]]";
    char types[256];

    /* grounding off: answered and cached without the article */
    cfg.kb_tickets = 0;
    REQUIRE(ask_ticket(&ctx, "kb-1", body, types, sizeof types) == 0);
    CHECK(streamed(types));
    CHECK(!last_system_has("E52"));
    REQUIRE(ask_ticket(&ctx, "kb-1", body, types, sizeof types) == 0);
    CHECK_STR(types, "cached done");

    /* grounding on: the same ticket and body is a new question (the
     * ungrounded cached answer is not served), and the article reaches
     * the upstream's system prompt */
    cfg.kb_tickets = 1;
    json_t *before = fake_stats();
    json_int_t total0 = json_integer_value(json_object_get(before, "total"));
    json_decref(before);
    REQUIRE(ask_ticket(&ctx, "kb-1", body, types, sizeof types) == 0);
    CHECK(streamed(types));
    json_t *after = fake_stats();
    CHECK_INT(json_integer_value(json_object_get(after, "total")), total0 + 1);
    json_decref(after);
    CHECK(last_system_has("[1] Fuser error E52 (printers.md)\nError E52 means the fuser unit"));
    CHECK(last_system_has("You are a helpdesk assistant"));
    /* asked again with the same knowledge base: the grounded answer is cached */
    REQUIRE(ask_ticket(&ctx, "kb-1", body, types, sizeof types) == 0);
    CHECK_STR(types, "cached done");

    /* the article changes: the prompt changes, so a new answer */
    const char *art2 = "# Fuser error E52\nError E52: call the technician, the fuser is broken.\n";
    REQUIRE(kb_import_text(ctx.db, "printers.md", art2, strlen(art2), 1, &n, err, sizeof err) == KB_OK);
    REQUIRE(ask_ticket(&ctx, "kb-1", body, types, sizeof types) == 0);
    CHECK(streamed(types));
    CHECK(last_system_has("call the technician"));

    /* a question that matches nothing gets the plain system prompt */
    REQUIRE(ask_ticket(&ctx, "kb-2", "Coffee machine leaks water [[fake tokens=3 token_ms=0]]",
                       types, sizeof types) == 0);
    CHECK(streamed(types));
    json_t *b = fake_last_body();
    const char *sys = json_string_value(json_object_get(b, "system"));
    CHECK(sys && !strstr(sys, "[1]") && !strstr(sys, "knowledge base"));
    json_decref(b);
    cfg.kb_tickets = 0;
    close_ctx(&ctx);
}

static void run_cases(void)
{
    char err[512];
    db = db_open(target, err, sizeof err);
    if (!db) {
        printf("not ok %d - open: %s\n", ++th_cases, err);
        th_failed_cases++;
        return;
    }
    RUN(import_markdown);
    RUN(import_text);
    RUN(reimport_replaces);
    RUN(remove_passages);
    RUN(search_ranking);
    RUN(hostile_queries);
    RUN(empty_and_no_hits);
    RUN(context_bound);
    RUN(search_clear_cases);
    RUN(concurrent_reimports_one_source);
    db_close(db);
    db = NULL;
}

/* A schema of this run's own on the PostgreSQL database at uri: created
 * through a first connection (which migrates the default schema), its name
 * in schema, and the URI whose connections use it in out. 0 / -1. */
static int pg_fresh_schema(const char *uri, const char *prefix, char *schema, size_t slen,
                           char *out, size_t olen)
{
    char err[512], sql[256];
    snprintf(schema, slen, "%s_%ld_%lld", prefix, (long)getpid(), (long long)now_ms());
    parley_db *d = db_open(uri, err, sizeof err);
    if (!d) {
        printf("# db_open %s: %s\n", uri, err);
        return -1;
    }
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);    /* our own name: no input */
    int rc = db_exec(d, sql);
    db_close(d);
    snprintf(out, olen, "%s%soptions=-csearch_path%%3D%s", uri, strchr(uri, '?') ? "&" : "?",
             schema);
    return rc;
}

static void pg_drop_schema(const char *uri, const char *schema)
{
    char err[512], sql[256];
    parley_db *d = db_open(uri, err, sizeof err);
    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    if (!d || db_exec(d, sql) < 0)
        printf("# could not drop schema %s\n", schema);
    db_close(d);
}

int main(void)
{
    if (test_setup("kb") < 0)
        return 1;
    target = dbpath;
    printf("# backend: SQLite\n");
    run_cases();
    RUN(key_ground);
    {
        char err[512];
        db = db_open(dbpath, err, sizeof err);
        if (db)
            RUN(ticket_grounding);
        db_close(db);
        db = NULL;
    }
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        static char uri[1024];
        char schema[128];
        if (pg_fresh_schema(pg, "kbt", schema, sizeof schema, uri, sizeof uri) < 0) {
            printf("not ok %d - PostgreSQL schema for this run\n", ++th_cases);
            th_failed_cases++;
        } else {
            target = uri;
            printf("# backend: PostgreSQL (PARLEY_TEST_PG, schema %s)\n", schema);
            run_cases();
            if (!getenv("PARLEY_TEST_PG_KEEP"))
                pg_drop_schema(pg, schema);
        }
    }
    config_cleanup(&cfg);
    return th_done();
}
