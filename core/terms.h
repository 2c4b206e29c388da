/* terms.h — search terms for SQLite FTS5 MATCH and PostgreSQL full-text
 * search, shared by the storage modules that search (catalog: seed 002
 * product suggestions; kb: the knowledge base).
 *
 * A user's text is never read as FTS5 or tsquery syntax: terms_split
 * cuts it into words of letters and digits only (quotes, parentheses,
 * `*`, `:`, `-`, `^`, `&`, `|`, `!`, spaces (U+1680 too) and malformed
 * UTF-8 all separate words), drops what says nothing (one-character
 * words, words longer than TERMS_WORD_MAX bytes, common English /
 * Portuguese / Indonesian words, repeats), lower-cases ASCII letters
 * and makes each word left a quoted FTS5 string ("word"), optionally a
 * prefix query ("word"*). terms_or joins them with OR into
 * the MATCH expression; terms_hits counts how many of them one row has
 * (SQLite only). terms_words gives the same words as a plain list for the
 * PostgreSQL bodies, which build the tsquery in SQL from it.
 *
 * terms.c includes db_sqlite.h as a shared helper of the storage modules
 * (terms_hits runs the caller's literal SQL): it is not a storage module
 * of its own and owns no table. Pure functions apart from terms_hits,
 * which runs in the thread that owns the given parley_db (db.h).
 */
#ifndef PARLEY_TERMS_H
#define PARLEY_TERMS_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"

#define TERMS_MAX 32                          /* terms a struct terms holds at most */
#define TERMS_WORD_MAX 64                     /* longer words (bytes) are dropped */
#define TERMS_TERM_SIZE (TERMS_WORD_MAX + 4)  /* "word"* and its NUL */
/* A buffer for terms_or that always fits: each term plus " OR ". */
#define TERMS_EXPR_SIZE (TERMS_MAX * (TERMS_TERM_SIZE + 4))

enum {
    /* a word of 4 or more bytes (after stemming) becomes a prefix query,
     * "word"*, which also finds longer words that start with it */
    TERMS_PREFIX = 1,
    /* a light plural stem for ASCII words: a word of 5 or more letters
     * ending in one "s" loses it ("laptops" -> "laptop"; "glass" stays) */
    TERMS_STEM = 2
};

struct terms {
    char v[TERMS_MAX][TERMS_TERM_SIZE];       /* "word" or "word"*, in query order */
    int n;
};

/* Splits query (NUL-terminated, NULL = "") into at most max terms
 * (clamped to 1..TERMS_MAX) as described above, with flags a combination
 * of TERMS_PREFIX and TERMS_STEM (0: plain quoted words). Words after the
 * max-th kept term are ignored. *t is always initialised; t->n may be 0.
 * No allocation. */
void terms_split(const char *query, int flags, int max, struct terms *t);

/* 1 when w (lower case, NUL-terminated) is on the stop-word list: the
 * common English, Portuguese and Indonesian words terms_split drops. */
int terms_stop_word(const char *w);

/* Writes the FTS5 MATCH expression of t ("a" OR "b"* OR ...) into
 * out[outlen] (TERMS_EXPR_SIZE always fits). 0, or -1 when it does not
 * fit or t has no term (out then holds ""). */
int terms_or(const struct terms *t, char *out, size_t outlen);

/* The terms for PostgreSQL (core/storage/pg/, sql/pg/004_catalog_kb.sql):
 * each term's word without its quotes, with a final '*' for a prefix
 * query, separated by single spaces ("vpn lease* printer*"), written into
 * out[outlen] (TERMS_EXPR_SIZE always fits). The words hold letters and
 * digits only (no space, quote, '*', ':' or other tsquery syntax); the
 * storage module binds the list as one parameter and SQL turns each word
 * into a tsquery (parley_term_query: plainto_tsquery, or to_tsquery of
 * "word:*" for a prefix). 0, or -1 when it does not fit or t has no term
 * (out then holds ""). */
int terms_words(const struct terms *t, char *out, size_t outlen);

/* How many of t's terms the row rowid matches, each tested alone with
 * sql: a string literal of the caller's storage module binding the term
 * as ?1 and the rowid as ?2, e.g.
 *   "SELECT 1 FROM x_fts WHERE x_fts MATCH ?1 AND rowid = ?2".
 * Returns the count (0..t->n), or -1 on a database error. */
int terms_hits(parley_db *db, const char *sql, const struct terms *t, int64_t rowid);
#endif
