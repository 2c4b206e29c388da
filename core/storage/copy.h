/* storage/copy.h — `parley db copy`: moving a SQLite database to PostgreSQL
 * (issue 10), driven by the two schemas.
 *
 * What is copied: every ordinary table of the SQLite schema (not sqlite_*
 * internals, not virtual tables such as FTS5 indexes nor their shadow
 * tables, not the schema bookkeeping parley_schema) that the PostgreSQL
 * schema (current_schema()) also has, by name; of each, the columns both
 * have, by name (a PostgreSQL generated column is left to PostgreSQL, and a
 * PostgreSQL-only column gets its default). Tables or columns only SQLite
 * has are reported, not copied.
 *
 * How: the source is read in one SQLite read transaction (one snapshot);
 * the target is written in ONE PostgreSQL transaction, so a failure copies
 * nothing: the copied tables are locked (EXCLUSIVE: readers go on, other
 * writers wait; at most 10 s to get the locks), checked empty (rows that the
 * target's own migrations insert — the demo brands and products of
 * sql/pg — do not count: when no other copied table holds a row, those
 * tables are emptied and get the source's rows, which started from the same
 * seeds), filled in
 * an order that respects the target's foreign keys (referenced tables
 * first; deferrable constraints deferred), PostgreSQL-only tables derived
 * from copied ones are rebuilt (event_channels from events: each channel's
 * last seq), every identity/serial sequence of a copied table is set to its
 * column's max, and the rows of each table are counted on both sides; any
 * difference rolls everything back (sequences are not transactional in
 * PostgreSQL: after a failure they may stay advanced, which only leaves a
 * gap in future ids). Rows go in pipelined batches of 256 (libpq pipeline
 * mode), one prepared INSERT per table. Values: SQLite INTEGER -> int8 text,
 * REAL -> float8 text (%.17g, exact), TEXT -> text, BLOB -> text; into a
 * bytea column every non-NULL value goes byte for byte (binary format, NUL
 * bytes and invalid UTF-8 kept); NULL -> NULL. A TEXT or BLOB value with a
 * NUL byte cannot go into a non-bytea column: an error naming the table,
 * column and row. Identifiers come only from the two schemas and are
 * quoted; every value is bound.
 *
 * Both databases are opened with db_open: the SQLite file is brought up to
 * this Parley's schema (as any Parley program opening it would) and the
 * target gets its sql/pg migrations. The target's password never appears
 * in err (db_path() is the redacted form).
 */
#ifndef PARLEY_STORAGE_COPY_H
#define PARLEY_STORAGE_COPY_H
#include <stddef.h>
#include <stdint.h>

/* Flags of copy_run. */
enum {
    /* The target may hold rows in copied tables: they are deleted first
     * (TRUNCATE of the copied tables and the tables derived from them, in
     * the copy's transaction; refused by PostgreSQL when a table that is not
     * copied references one of them). Without it, a target holding any row
     * in a copied table is refused and left untouched. */
    COPY_REPLACE = 1
};

/* One table of the report. */
struct copy_table {
    char *name;
    int copied;              /* 1 copied; 0 only SQLite has it (not copied) */
    int64_t source_rows;     /* count(*) in SQLite (-1 unknown) */
    int64_t target_rows;     /* count(*) in PostgreSQL after the copy (-1 not counted) */
    int ncols;               /* columns copied */
    char *skipped_cols;      /* "a, b": SQLite columns PostgreSQL lacks, or NULL */
};

struct copy_result {
    struct copy_table *tables;   /* copied tables in copy order, then the others */
    int ntables;
    int64_t rows;                /* rows inserted in all */
    int mismatch;                /* 1 when the counts differed (nothing committed) */
    char *target;                /* the target as shown (password redacted) */
};

/* Result codes of copy_run. */
enum copy_rc {
    COPY_OK = 0,
    COPY_ERR = -1,        /* failed: err says why; nothing was committed */
    COPY_NOT_EMPTY = -2   /* the target holds rows in a copied table (err names
                           * them) and COPY_REPLACE was not given; untouched */
};

/* Copies the SQLite database at `from` (an existing Parley database file)
 * into the PostgreSQL database `to` (a postgresql:// URI or libpq
 * key=value string), as above. res (may be NULL) gets the per-table report
 * (also on COPY_ERR when the counts were taken, mismatch set); free it with
 * copy_result_free. err gets a one-line message on failure, never the
 * password. Opens its own connections; any thread. */
int copy_run(const char *from, const char *to, unsigned flags, struct copy_result *res,
             char *err, size_t errlen);

/* Frees what copy_run put in res (not res itself). NULL accepted. */
void copy_result_free(struct copy_result *res);
#endif
