/* kb.h — the knowledge base: passages cut from Markdown or text files,
 * searched with full-text search (BM25), and turned into prompt context.
 *
 * Storage (tables kb_passages and kb_fts, sql/004_kb.sql) and the text
 * work around it (cutting files into passages, turning a user's question
 * into a safe search expression, formatting passages for a prompt). See
 * docs/knowledge-base.md for the formats, the confidence formula and the
 * settings that use it (PARLEY_KB_TICKETS, PARLEY_KB_PASSAGES,
 * PARLEY_KB_CONTEXT_BYTES).
 *
 * Backends: SQLite FTS5 in kb.c; PostgreSQL full-text search (a generated
 * tsvector with a GIN index, ts_rank_cd; sql/pg/004_catalog_kb.sql,
 * storage/pg/kb.c) when db is a PostgreSQL connection. Callers see only
 * these functions and structs. Both find the same passages for a query
 * (same words, folding and stems); the order of passages that match
 * about equally well, and the scores, can differ (docs/postgres.md).
 * Threads: every function that takes a parley_db uses it from the calling
 * thread only (db.h's rule); the others are pure and thread-safe.
 * Return values: the named codes of enum kb_rc unless a function says
 * otherwise. After KB_ERR, db_err_kind(db) / db_err_text(db, …) say which
 * database failure it was (PERR_DB_READONLY during a read-only spell).
 * User text never becomes SQL or search syntax: every statement is a
 * literal with bound parameters, and kb_search quotes each word itself.
 */
#ifndef PARLEY_KB_H
#define PARLEY_KB_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"

enum kb_rc {
    KB_ERR = -1,           /* database error (db_err_kind tells which) */
    KB_OK = 0,             /* done / found */
    KB_NOT_FOUND = 1,      /* no such passage or source */
    KB_BAD_INPUT = 2       /* the file or text was refused (err says why); nothing stored */
};

#define KB_PASSAGE_MAX 1200        /* bytes of text a passage holds at most */
#define KB_FILE_MAX (8 << 20)      /* largest file kb_import_file reads (8 MiB) */
#define KB_SOURCE_MAX 255          /* bytes of a source name */
#define KB_MAX_TERMS 24            /* query words kept for a search */
#define KB_MAX_HITS 50             /* largest limit kb_search honours */

/* ---- import ---- */

/* Cuts text (len bytes of UTF-8, no NUL) into passages and stores them as
 * the passages of source, replacing every passage source had before, in
 * one transaction: a failure leaves the old passages as they were.
 * markdown 1: split at ATX headings ("#" to "######", outside ``` / ~~~
 * fences), each passage titled by its heading; 0: plain text, paragraphs
 * (blank-line separated) grouped up to KB_PASSAGE_MAX bytes, titled by
 * their first line. Longer sections or paragraphs are cut at white space.
 * *npassages (may be NULL): how many were stored.
 * KB_OK; KB_BAD_INPUT (err set) when source is empty or longer than
 * KB_SOURCE_MAX, or the text is not UTF-8, holds a NUL byte, or has no
 * passage at all; KB_ERR (err set too). */
int kb_import_text(parley_db *db, const char *source, const char *text, size_t len,
                   int markdown, int *npassages, char *err, size_t errlen);

/* Reads the file at path (at most KB_FILE_MAX bytes) and imports it with
 * kb_import_text under its file name (the last path component): ".md" and
 * ".markdown" (any case) are Markdown, anything else plain text.
 * Re-importing a file of the same name replaces its passages. KB_OK;
 * KB_BAD_INPUT (err set) when the file cannot be read, is too large, or
 * kb_import_text refuses it; KB_ERR on a database error (err set). */
int kb_import_file(parley_db *db, const char *path, int *npassages, char *err, size_t errlen);

/* ---- list, remove ---- */

struct kb_entry {
    int64_t id;
    char *source;          /* new strings (kb_entries_free) */
    char *title;
    int seq;               /* position of the passage in its source, from 1 */
    int64_t bytes;         /* length of its text */
    int64_t created_at;    /* unix ms of the import */
};
/* Frees n entries and the array; accepts NULL. */
void kb_entries_free(struct kb_entry *e, int n);
/* Passages, by source name then position; source NULL = all, else only
 * that source's. *out: new array (kb_entries_free), *n its length (0 with
 * *out NULL when there is none). KB_OK / KB_ERR. */
int kb_list(parley_db *db, const char *source, struct kb_entry **out, int *n);

/* Deletes every passage of source (a file name as kb_list shows it).
 * *removed (may be NULL): how many. KB_OK / KB_NOT_FOUND (none had that
 * source) / KB_ERR. */
int kb_remove_source(parley_db *db, const char *source, int *removed);
/* Deletes passage id. KB_OK / KB_NOT_FOUND / KB_ERR. */
int kb_remove_id(parley_db *db, int64_t id);

/* ---- search ---- */

struct kb_hit {
    int64_t id;
    char *source;          /* new strings (kb_hits_free) */
    char *title;
    char *text;
    double bm25;           /* FTS5 bm25(): negative, lower = better match;
                              PostgreSQL: -ts_rank_cd (same sense, another scale) */
    int terms_matched;     /* how many of the query's terms the passage has */
};
struct kb_hits {
    struct kb_hit *v;      /* best first; NULL when n == 0 */
    int n;
    int nterms;            /* search terms the query had (0: nothing to search) */
};
/* Frees the hits and zeroes *h; accepts NULL and a zeroed struct. */
void kb_hits_free(struct kb_hits *h);

/* Up to limit passages (capped at KB_MAX_HITS) for query, best first by
 * BM25 (title weighs twice the text). The query is cut into words of
 * letters and digits; words shorter than 2 characters, common words
 * (English, Portuguese, Indonesian) and repeats are dropped, at most
 * KB_MAX_TERMS are kept, and each becomes a quoted FTS5 string, OR-ed
 * (terms.h, without prefix or stem): no text of the user is ever read as
 * search syntax (a query like `AND OR "(*` is just words, or nothing). A query with no term left, or limit <= 0, gives no
 * hits. *out is always initialised (kb_hits_free it). KB_OK / KB_ERR. */
int kb_search(parley_db *db, const char *query, int limit, struct kb_hits *out);

/* How well the best hit answers the query, in [0, 1], two decimals:
 *   coverage = terms_matched(best) / nterms
 *   strength = |bm25(best)| / (|bm25(best)| + 2)
 *   confidence = coverage * (0.6 + 0.4 * strength)
 * -1 when h is NULL or has no hit: report that as JSON null, not a number.
 * Pure; thread-safe. */
double kb_confidence(const struct kb_hits *h);

/* The hits as prompt context, best first:
 *   [1] <title> (<source>)\n<text>\n\n[2] ...
 * at most max_bytes bytes (not counting the final NUL). Whole passages are
 * added while they fit; when not even the first fits, it is cut at a UTF-8
 * character boundary (with "…") to fit. *used (may be NULL): how many
 * passages went in, the number to report as rag_context_used. Returns a new
 * string ("" when there is no hit or max_bytes is too small for anything),
 * NULL on out of memory. Pure; thread-safe. */
char *kb_context(const struct kb_hits *h, size_t max_bytes, int *used);

/* ---- grounding an answer ---- */

/* What kb_ground found. */
struct kb_grounding {
    char *system;          /* new: base + the articles, NULL when nothing matched */
    int used;              /* passages in system (rag_context_used) */
    double confidence;     /* kb_confidence of the search; -1 when no hit */
};
/* Frees g->system and zeroes g; accepts NULL. */
void kb_grounding_free(struct kb_grounding *g);

/* Searches the knowledge base for question (kb_search, up to max_passages)
 * and, when something matched, builds the system text of a grounded
 * answer: base (may be NULL or ""), a line telling the model to use the
 * articles, then kb_context(…, max_bytes). Nothing matched: g->system NULL,
 * used 0, confidence -1, and the caller sends its usual prompt.
 * KB_OK / KB_ERR (g zeroed, confidence -1). */
int kb_ground(parley_db *db, const char *question, const char *base, int max_passages,
              size_t max_bytes, struct kb_grounding *g);

/* Makes a cache / single-flight key cover a grounded prompt: the hex
 * digest after the key's last ':' ("ticket:<id>:<hex>", "query:<hex>") is
 * replaced by sha256(<that digest> "|kb|" <system>), same length, so the
 * key still fits where it did. An answer cached for the ungrounded prompt,
 * or for other articles, is then never served for this one. system NULL or
 * "": the key is left as it is (the prompt is the ungrounded one). 0, or -1
 * (key unchanged) when the key has no ':' or no 64-digit digest after it. */
int kb_key_ground(char *key, size_t keylen, const char *system);
#endif
