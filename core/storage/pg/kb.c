/* storage/pg/kb.c — the knowledge base's PostgreSQL bodies (contracts: kb.h;
 * kb.c cuts files, checks input, opens and commits transactions and
 * dispatches here when db_pg_conn(db) is not NULL).
 *
 * Re-import: SQLite's BEGIN IMMEDIATE made two imports of one source run
 * one after the other. Under READ COMMITTED they would interleave: the
 * second's DELETE does not see the first's uncommitted passages, and its
 * INSERT of (source, 1) then fails on kb_passages_source once the first
 * commits. So a replace (and a removal by source) first takes a
 * transaction-level advisory lock on the source (pg_advisory_xact_lock of
 * hashtextextended('parley.kb:' || source)): the second waits, then its
 * DELETE (a new statement, a new snapshot) sees and removes the first's
 * passages. Last import wins, whole; both succeed. A hash collision of two
 * sources only makes them wait for each other.
 *
 * Search: kb_passages.fts (a generated tsvector, parley_kb configuration:
 * English Snowball stems, no stop words; title A, text B) matched against
 * the OR of the terms' tsqueries (parley_term_query, from terms_words'
 * letters-and-digits list bound as $1), ranked by ts_rank_cd with weights
 * A 1.0, B 0.5 (title twice the text), ties by id. Not BM25: see
 * docs/postgres.md for where the order can differ. Every value is bound
 * (db_pg_exec: text format, each statement prepared once per session). */
#include "storage/pg/pg.h"
#include "storage/pg/kb.h"
#include "../../kb.h"          /* core/kb.h: a plain "kb.h" here is storage/pg/kb.h */
#include "terms.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_LOCK_SOURCE[] =
    "SELECT pg_advisory_xact_lock(hashtextextended('parley.kb:' || $1, 0))";
static const char SQL_DELETE_SOURCE[] = "DELETE FROM kb_passages WHERE source = $1";
static const char SQL_DELETE_ID[] = "DELETE FROM kb_passages WHERE id = $1";
static const char SQL_INSERT[] =
    "INSERT INTO kb_passages(source, seq, title, text, created_at) VALUES ($1, $2, $3, $4, $5)";
/* byte order of source names, as SQLite's BINARY collation */
static const char SQL_LIST_ALL[] =
    "SELECT id, source, title, seq, octet_length(text), created_at FROM kb_passages "
    "ORDER BY source COLLATE \"C\", seq";
static const char SQL_LIST_SOURCE[] =
    "SELECT id, source, title, seq, octet_length(text), created_at FROM kb_passages "
    "WHERE source = $1 ORDER BY seq";
/* $1: terms_words' list; the rank's weights are {D, C, B, A}. The
 * per-term hit count is taken for the returned rows only. */
static const char SQL_SEARCH[] =
    "WITH t AS (SELECT parley_term_query('parley_kb', w) AS q "
    "           FROM unnest(string_to_array($1, ' ')) AS w), "
    "     q AS (SELECT parley_tsquery_or(t.q) AS q FROM t) "
    "SELECT h.id, h.source, h.title, h.text, h.score, "
    "       (SELECT count(*) FROM t WHERE t.q IS NOT NULL AND h.fts @@ t.q) "
    "FROM (SELECT p.id, p.source, p.title, p.text, p.fts, "
    "             ts_rank_cd('{0, 0, 0.5, 1}', p.fts, q.q) AS score "
    "      FROM kb_passages p, q WHERE p.fts @@ q.q "
    "      ORDER BY score DESC, p.id LIMIT $2) h "
    "ORDER BY h.score DESC, h.id";

static int lock_source(parley_db *db, const char *source)
{
    const char *params[1] = { source };
    PGresult *r = db_pg_run(db, SQL_LOCK_SOURCE, 1, params, PGRES_TUPLES_OK, "kb: source lock");
    PQclear(r);
    return r ? 0 : -1;
}

int kb_pg_replace_tx(parley_db *db, const char *source, const struct kb_cut_passage *v, int n,
                     int64_t now)
{
    const char *src[1] = { source };
    if (lock_source(db, source) < 0 ||
        db_pg_command(db, SQL_DELETE_SOURCE, 1, src, "kb: delete source") < 0)
        return -1;
    char nows[24];
    snprintf(nows, sizeof nows, "%" PRId64, now);
    for (int i = 0; i < n; i++) {
        char seq[16];
        snprintf(seq, sizeof seq, "%d", i + 1);
        const char *params[5] = { source, seq, v[i].title, v[i].text, nows };
        if (db_pg_command(db, SQL_INSERT, 5, params, "kb: insert passage") < 0)
            return -1;
    }
    return 0;
}

int kb_pg_list(parley_db *db, const char *source, struct kb_entry **out, int *n)
{
    *out = NULL;
    *n = 0;
    const char *params[1] = { source };
    PGresult *r = db_pg_run(db, source ? SQL_LIST_SOURCE : SQL_LIST_ALL, source ? 1 : 0, params,
                      PGRES_TUPLES_OK, "kb: list");
    if (!r)
        return KB_ERR;
    int rows = PQntuples(r);
    struct kb_entry *v = rows ? calloc((size_t)rows, sizeof *v) : NULL;
    if (rows && !v) {
        PQclear(r);
        return KB_ERR;
    }
    for (int i = 0; i < rows; i++) {
        struct kb_entry *e = &v[i];
        e->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        e->source = strdup(PQgetvalue(r, i, 1));
        e->title = strdup(PQgetvalue(r, i, 2));
        e->seq = atoi(PQgetvalue(r, i, 3));
        e->bytes = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        e->created_at = strtoll(PQgetvalue(r, i, 5), NULL, 10);
        if (!e->source || !e->title) {
            PQclear(r);
            kb_entries_free(v, rows);
            return KB_ERR;
        }
    }
    PQclear(r);
    *out = v;
    *n = rows;
    return KB_OK;
}

int kb_pg_delete_source_tx(parley_db *db, const char *source)
{
    const char *params[1] = { source };
    if (lock_source(db, source) < 0)
        return -1;
    return db_pg_command(db, SQL_DELETE_SOURCE, 1, params, "kb: delete source");
}

int kb_pg_delete_id_tx(parley_db *db, int64_t id)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%" PRId64, id);
    const char *params[1] = { ids };
    return db_pg_command(db, SQL_DELETE_ID, 1, params, "kb: delete passage");
}

int kb_pg_search(parley_db *db, const struct terms *t, int limit, struct kb_hits *out)
{
    char words[TERMS_EXPR_SIZE], lim[16];
    if (terms_words(t, words, sizeof words) < 0)
        return KB_ERR;
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[2] = { words, lim };
    PGresult *r = db_pg_run(db, SQL_SEARCH, 2, params, PGRES_TUPLES_OK, "kb: search");
    if (!r)
        return KB_ERR;
    int rc = KB_OK;
    for (int i = 0; i < PQntuples(r) && out->n < limit; i++) {
        struct kb_hit *h = &out->v[out->n++];
        h->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        h->source = strdup(PQgetvalue(r, i, 1));
        h->title = strdup(PQgetvalue(r, i, 2));
        h->text = strdup(PQgetvalue(r, i, 3));
        h->bm25 = -strtod(PQgetvalue(r, i, 4), NULL);
        h->terms_matched = atoi(PQgetvalue(r, i, 5));
        if (!h->source || !h->title || !h->text) {
            rc = KB_ERR;
            break;
        }
    }
    PQclear(r);
    return rc;
}
