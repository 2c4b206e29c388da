/* storage/copy.c — `parley db copy`: a SQLite database into PostgreSQL, by
 * table and column name (contract: storage/copy.h).
 *
 * SQL is built here only from names read from the two schemas (SQLite's
 * pragma_table_list / pragma_table_info, PostgreSQL's pg_catalog), always
 * quoted as identifiers; every value travels as a bound parameter. */
#include "storage/copy.h"
#include "db_sqlite.h"
#include "migrations.h"
#include "storage/pg/pg.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Rows sent before waiting for their results (libpq pipeline mode): one
 * round trip per batch instead of one per row. Results are a few bytes
 * each, so a batch never fills the server's output buffer. */
#define PIPE_BATCH 256

/* PostgreSQL-only tables that hold what can be derived from a copied one,
 * rebuilt after the rows are in (ON CONFLICT keeps a larger value a
 * replaced target may hold). event_channels: each channel's last seq, which
 * the event log's appends bump (storage/pg/evlog.c); without it the next
 * append to a copied channel would take seq 1 again. */
static const struct derived {
    const char *table, *from, *sql;
} DERIVED[] = {
    { "event_channels", "events",
      "INSERT INTO event_channels(channel, last_seq) "
      "SELECT channel, max(seq) FROM events GROUP BY channel "
      "ON CONFLICT (channel) DO UPDATE "
      "SET last_seq = GREATEST(event_channels.last_seq, EXCLUDED.last_seq)" },
};
#define NDERIVED (sizeof DERIVED / sizeof DERIVED[0])

/* ---- a growing string; on out of memory ->s is NULL for good ---- */

struct sb { char *s; size_t len, cap; };

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
    if (b->cap && !b->s)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            goto oom;
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->len + (size_t)n + 1) * 2;
        char *ns = realloc(b->s, cap);
        if (!ns)
            goto oom;
        b->s = ns;
        b->cap = cap;
    }
oom:
    free(b->s);
    b->s = NULL;
    b->cap = 1;
}

/* An identifier, quoted the way both SQLite and PostgreSQL read it. */
static void sb_ident(struct sb *b, const char *name)
{
    sb_printf(b, "\"");
    for (const char *p = name; *p; ) {
        size_t n = strcspn(p, "\"");
        sb_printf(b, "%.*s", (int)n, p);
        p += n;
        if (*p == '"') {
            sb_printf(b, "\"\"");
            p++;
        }
    }
    sb_printf(b, "\"");
}

/* ---- what is copied ---- */

struct col {
    char *name;
    int bytea;            /* the PostgreSQL column is bytea: values go as bytes */
    char *pgtype;         /* format_type() of the PostgreSQL column */
};

struct tbl {
    char *name;
    char *oid;            /* PostgreSQL oid (text), NULL when only SQLite has it */
    struct col *cols;
    int ncols;
    int identity_always;  /* a copied column is GENERATED ALWAYS AS IDENTITY */
    char *skipped;        /* SQLite columns PostgreSQL lacks ("a, b") */
    int64_t src_rows, dst_rows;
    int done;             /* placed in the copy order */
};

struct ctx {
    parley_db *src, *dst;
    sqlite3 *sh;
    PGconn *pc;
    struct tbl *t;        /* every SQLite table; the copied ones first once ordered */
    int nt, ncopy;
    char *err;
    size_t errlen;
};

static void tbl_free(struct tbl *t)
{
    for (int i = 0; i < t->ncols; i++) {
        free(t->cols[i].name);
        free(t->cols[i].pgtype);
    }
    free(t->cols);
    free(t->name);
    free(t->oid);
    free(t->skipped);
}

static int oom(struct ctx *c)
{
    return set_err(c->err, c->errlen, "out of memory");
}

static int sqlite_fail(struct ctx *c, const char *what)
{
    return set_err(c->err, c->errlen, "%s: %s: %s", db_path(c->src), what,
                   sqlite3_errmsg(c->sh));
}

/* Records a PostgreSQL failure (db_pg_fail scrubs the password) and puts
 * it in err. */
static int pg_fail(struct ctx *c, const char *what, const PGresult *r)
{
    db_pg_fail(c->dst, what, r);
    return set_err(c->err, c->errlen, "%s: %s", db_path(c->dst), db_errmsg(c->dst));
}

/* Runs a statement with text parameters; the result (caller PQclears) when
 * it succeeded, else NULL with the failure recorded. */
static PGresult *pg_exec(struct ctx *c, const char *sql, int n, const char *const *params,
                         const char *what)
{
    PGresult *r = PQexecParams(c->pc, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    pg_fail(c, what, r);
    PQclear(r);
    return NULL;
}

/* count(*) of a SQLite table (in the read transaction); -1 on error. */
static int64_t sqlite_count(struct ctx *c, const char *table)
{
    struct sb q = { 0 };
    sb_printf(&q, "SELECT count(*) FROM ");
    sb_ident(&q, table);
    if (!q.s)
        return oom(c);
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(c->sh, q.s, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        sqlite_fail(c, "count");
    sqlite3_finalize(st);
    free(q.s);
    return n;
}

/* One bigint-or-boolean answer of a one-table statement built as
 * "<pre> "table" <post>"; -1 on error. */
static int64_t pg_one(struct ctx *c, const char *pre, const char *table, const char *post,
                      const char *what)
{
    struct sb q = { 0 };
    sb_printf(&q, "%s", pre);
    sb_ident(&q, table);
    sb_printf(&q, "%s", post);
    if (!q.s)
        return oom(c);
    PGresult *r = pg_exec(c, q.s, 0, NULL, what);
    free(q.s);
    if (!r)
        return -1;
    int64_t v = -1;
    if (PQntuples(r) == 1) {
        const char *s = PQgetvalue(r, 0, 0);
        v = !strcmp(s, "t") ? 1 : !strcmp(s, "f") ? 0 : strtoll(s, NULL, 10);
    }
    PQclear(r);
    return v;
}

/* ---- the two schemas ---- */

/* The SQLite tables to consider: ordinary tables, not sqlite_* internals,
 * not virtual tables nor their shadow tables, not the schema bookkeeping. */
static int read_sqlite_tables(struct ctx *c)
{
    static const char sql[] =
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'parley_schema' ORDER BY name";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->sh, sql, -1, &st, NULL) != SQLITE_OK)
        return sqlite_fail(c, "cannot list tables");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct tbl *nt = realloc(c->t, (size_t)(c->nt + 1) * sizeof *nt);
        if (!nt) {
            sqlite3_finalize(st);
            return oom(c);
        }
        c->t = nt;
        struct tbl *t = &c->t[c->nt];
        memset(t, 0, sizeof *t);
        t->src_rows = t->dst_rows = -1;
        c->nt++;
        if (!(t->name = strdup((const char *)sqlite3_column_text(st, 0)))) {
            sqlite3_finalize(st);
            return oom(c);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sqlite_fail(c, "cannot list tables");
}

/* The PostgreSQL oid of each SQLite table that the target's current schema
 * also has (ordinary or partitioned tables). */
static int find_pg_tables(struct ctx *c)
{
    PGresult *r = pg_exec(c,
        "SELECT c.oid::text, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')", 0, NULL,
        "cannot list the target's tables");
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        for (int k = 0; k < c->nt; k++)
            if (!strcmp(c->t[k].name, PQgetvalue(r, i, 1)) &&
                !(c->t[k].oid = strdup(PQgetvalue(r, i, 0)))) {
                PQclear(r);
                return oom(c);
            }
    PQclear(r);
    return 0;
}

/* The columns of t both schemas have (SQLite's order), and the SQLite
 * columns the target lacks. */
static int read_columns(struct ctx *c, struct tbl *t)
{
    const char *params[1] = { t->oid };
    PGresult *r = pg_exec(c,
        "SELECT attname, atttypid = 'bytea'::regtype, attidentity::text, attgenerated::text, "
        "format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped", 1, params,
        "cannot read the target's columns");
    if (!r)
        return -1;
    sqlite3_stmt *st = NULL;
    struct sb skipped = { 0 };
    int rc = -1;
    if (sqlite3_prepare_v2(c->sh, "SELECT name FROM pragma_table_info(?1) ORDER BY cid", -1, &st,
                           NULL) != SQLITE_OK) {
        sqlite_fail(c, "cannot read columns");
        goto out;
    }
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        int found = -1;
        for (int i = 0; i < PQntuples(r) && found < 0; i++)
            if (!strcmp(PQgetvalue(r, i, 0), name) && PQgetvalue(r, i, 3)[0] == '\0')
                found = i;          /* a generated column is PostgreSQL's to fill */
        if (found < 0) {
            sb_printf(&skipped, "%s%s", skipped.len ? ", " : "", name);
            continue;
        }
        struct col *nc = realloc(t->cols, (size_t)(t->ncols + 1) * sizeof *nc);
        if (!nc) {
            oom(c);
            goto out;
        }
        t->cols = nc;
        struct col *col = &t->cols[t->ncols];
        col->name = strdup(name);
        col->pgtype = strdup(PQgetvalue(r, found, 4));
        col->bytea = PQgetvalue(r, found, 1)[0] == 't';
        t->ncols++;
        if (!col->name || !col->pgtype) {
            oom(c);
            goto out;
        }
        if (PQgetvalue(r, found, 2)[0] == 'a')
            t->identity_always = 1;
    }
    if (src != SQLITE_DONE) {
        sqlite_fail(c, "cannot read columns");
        goto out;
    }
    if (skipped.cap && !skipped.s) {
        oom(c);
        goto out;
    }
    t->skipped = skipped.s;
    skipped.s = NULL;
    rc = 0;
out:
    free(skipped.s);
    sqlite3_finalize(st);
    PQclear(r);
    return rc;
}

/* Puts the copied tables first, referenced tables before the tables whose
 * foreign keys point at them (the target's constraints; a table referencing
 * itself is fine), ties by name; the others after. A cycle is an error. */
static int order_tables(struct ctx *c)
{
    PGresult *r = pg_exec(c, "SELECT conrelid::text, confrelid::text FROM pg_constraint "
                             "WHERE contype = 'f' AND conrelid <> confrelid", 0, NULL,
                          "cannot read the target's foreign keys");
    if (!r)
        return -1;
    struct tbl *sorted = calloc((size_t)c->nt + 1, sizeof *sorted);
    if (!sorted) {
        PQclear(r);
        return oom(c);
    }
    int n = 0, want = 0;
    for (int k = 0; k < c->nt; k++)
        want += c->t[k].oid != NULL && c->t[k].ncols > 0;
    while (n < want) {
        int pick = -1;
        for (int k = 0; k < c->nt && pick < 0; k++) {
            struct tbl *t = &c->t[k];
            if (t->done || !t->oid || t->ncols == 0)
                continue;
            int blocked = 0;      /* references a copied table not placed yet */
            for (int i = 0; i < PQntuples(r) && !blocked; i++) {
                if (strcmp(PQgetvalue(r, i, 0), t->oid))
                    continue;
                for (int m = 0; m < c->nt; m++)
                    if (m != k && !c->t[m].done && c->t[m].oid && c->t[m].ncols > 0 &&
                        !strcmp(c->t[m].oid, PQgetvalue(r, i, 1)))
                        blocked = 1;
            }
            if (!blocked)
                pick = k;
        }
        if (pick < 0) {
            struct sb names = { 0 };
            for (int k = 0; k < c->nt; k++)
                if (!c->t[k].done && c->t[k].oid && c->t[k].ncols > 0)
                    sb_printf(&names, "%s%s", names.len ? ", " : "", c->t[k].name);
            set_err(c->err, c->errlen, "the target's foreign keys form a cycle between %s: "
                    "cannot order the copy", names.s ? names.s : "some tables");
            free(names.s);
            free(sorted);
            PQclear(r);
            return -1;
        }
        c->t[pick].done = 1;
        sorted[n++] = c->t[pick];
    }
    for (int k = 0; k < c->nt; k++)
        if (!c->t[k].done)
            sorted[n++] = c->t[k];
    free(c->t);
    c->t = sorted;
    c->ncopy = want;
    PQclear(r);
    return 0;
}

/* ---- the copy ---- */

/* The derived tables that exist in the target and whose source is copied:
 * 1 for DERIVED[i] when it applies. */
static int derived_applies(struct ctx *c, size_t i, const char *const *pg_names, int npg)
{
    int have = 0, from = 0;
    for (int k = 0; k < npg; k++)
        have |= !strcmp(pg_names[k], DERIVED[i].table);
    for (int k = 0; k < c->ncopy; k++)
        from |= !strcmp(c->t[k].name, DERIVED[i].from);
    return have && from;
}

/* 1 when one of the sql/pg migrations inserts rows into table (the demo
 * brands and products): a fresh target already holds those rows. */
static int seeded(const char *table)
{
    size_t tl = strlen(table);
    for (int i = 0; i < parley_pg_migrations_count; i++) {
        const char *p = parley_pg_migrations[i].sql;
        while ((p = strcasestr(p, "INSERT INTO")) != NULL) {
            p += 11;
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                p++;
            if (!strncmp(p, table, tl) && (p[tl] == '(' || p[tl] == ' ' || p[tl] == '\n' ||
                                           p[tl] == '\t' || p[tl] == '\r'))
                return 1;
        }
    }
    return 0;
}

/* Locks the copied and derived tables, then refuses (COPY_NOT_EMPTY) a
 * target with rows in a copied table that its migrations do not fill
 * (seeded()), or empties them with COPY_REPLACE. The seeded tables of a
 * target that is otherwise empty are emptied: the source's rows replace
 * the target's seeds (the source had the same seeds, kept or removed). */
static int prepare_target(struct ctx *c, unsigned flags, const int *derived)
{
    struct sb lock = { 0 }, trunc = { 0 }, seeds = { 0 };
    sb_printf(&lock, "LOCK TABLE ");
    sb_printf(&trunc, "TRUNCATE ");
    for (int k = 0; k < c->ncopy; k++) {
        sb_printf(&lock, "%s", k ? ", " : "");
        sb_ident(&lock, c->t[k].name);
        sb_printf(&trunc, "%s", k ? ", " : "");
        sb_ident(&trunc, c->t[k].name);
    }
    /* seeds: DELETE, referencing tables first (TRUNCATE would need every
     * table with a foreign key to them, copied or not) */
    for (int k = c->ncopy - 1; k >= 0; k--)
        if (seeded(c->t[k].name)) {
            sb_printf(&seeds, "DELETE FROM ");
            sb_ident(&seeds, c->t[k].name);
            sb_printf(&seeds, "; ");
        }
    for (size_t i = 0; i < NDERIVED; i++)
        if (derived[i]) {
            sb_printf(&lock, ", ");
            sb_ident(&lock, DERIVED[i].table);
            sb_printf(&trunc, ", ");
            sb_ident(&trunc, DERIVED[i].table);
        }
    sb_printf(&lock, " IN EXCLUSIVE MODE");
    int rc = -1;
    PGresult *r = NULL;
    if (!lock.s || !trunc.s || (seeds.cap && !seeds.s)) {
        oom(c);
        goto out;
    }
    if (!(r = pg_exec(c, "SET LOCAL lock_timeout = '10s'", 0, NULL, "lock timeout")))
        goto out;
    PQclear(r);
    if (!(r = pg_exec(c, lock.s, 0, NULL, "cannot lock the target's tables")))
        goto out;
    PQclear(r);
    r = NULL;
    struct sb full = { 0 };
    int nfull = 0, nseeded_rows = 0;
    for (int k = 0; k < c->ncopy; k++) {
        int64_t any = pg_one(c, "SELECT EXISTS (SELECT 1 FROM ", c->t[k].name, ")",
                             "cannot look at the target's rows");
        if (any < 0) {
            free(full.s);
            goto out;
        }
        if (any && seeded(c->t[k].name)) {
            nseeded_rows++;
        } else if (any) {
            sb_printf(&full, "%s%s", nfull ? ", " : "", c->t[k].name);
            nfull++;
        }
    }
    if (nfull && !(flags & COPY_REPLACE)) {
        set_err(c->err, c->errlen,
                "%s already holds rows (in %s): parley db copy copies into an empty database "
                "only, so that two databases are never mixed; nothing was copied "
                "(--replace deletes the target's rows in the copied tables first)",
                db_path(c->dst), full.s ? full.s : "some tables");
        free(full.s);
        rc = COPY_NOT_EMPTY;
        goto out;
    }
    free(full.s);
    if (flags & COPY_REPLACE || nseeded_rows) {
        /* several statements: PQexec (constant text built from the schemas) */
        r = PQexec(c->pc, flags & COPY_REPLACE ? trunc.s : seeds.s);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pg_fail(c, "cannot empty the target's tables", r);
            PQclear(r);
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    if (!(r = pg_exec(c, "SET CONSTRAINTS ALL DEFERRED", 0, NULL, "defer constraints")))
        goto out;
    PQclear(r);
    r = NULL;
    rc = 0;
out:
    free(lock.s);
    free(trunc.s);
    free(seeds.s);
    return rc;
}

/* Reads the results of the rows sent since the last sync, up to and
 * including the sync. 0 when every row was inserted; -1 with the first
 * failure recorded (row numbers count from first). */
static int pipe_drain(struct ctx *c, const struct tbl *t, int64_t first)
{
    int rc = 0;
    int64_t row = first;
    for (;;) {
        PGresult *r = PQgetResult(c->pc);
        if (!r) {
            if (PQstatus(c->pc) != CONNECTION_OK) {
                pg_fail(c, "connection lost", NULL);
                return -1;
            }
            continue;        /* between two queries' results */
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return rc;
        }
        if (st == PGRES_COMMAND_OK) {
            row++;
        } else if (st != PGRES_PIPELINE_ABORTED && rc == 0) {
            char what[256];
            snprintf(what, sizeof what, "table %s, row %" PRId64, t->name, row);
            pg_fail(c, what, r);
            rc = -1;
        }
        PQclear(r);
    }
}

/* Copies one table's rows: SELECT from SQLite, INSERT into PostgreSQL with
 * every value bound, rows pipelined. Rows inserted, or -1. */
static int64_t copy_rows(struct ctx *c, struct tbl *t)
{
    struct sb sel = { 0 }, ins = { 0 };
    sb_printf(&sel, "SELECT ");
    sb_printf(&ins, "INSERT INTO ");
    sb_ident(&ins, t->name);
    sb_printf(&ins, " (");
    for (int i = 0; i < t->ncols; i++) {
        sb_printf(&sel, "%s", i ? ", " : "");
        sb_ident(&sel, t->cols[i].name);
        sb_printf(&ins, "%s", i ? ", " : "");
        sb_ident(&ins, t->cols[i].name);
    }
    sb_printf(&sel, " FROM ");
    sb_ident(&sel, t->name);
    sb_printf(&ins, ")%s VALUES (", t->identity_always ? " OVERRIDING SYSTEM VALUE" : "");
    for (int i = 0; i < t->ncols; i++)
        sb_printf(&ins, "%s$%d", i ? ", " : "", i + 1);
    sb_printf(&ins, ")");

    int n = t->ncols;
    const char **vals = calloc((size_t)n, sizeof *vals);
    int *lens = calloc((size_t)n, sizeof *lens);
    int *fmts = calloc((size_t)n, sizeof *fmts);
    char (*num)[32] = calloc((size_t)n, sizeof *num);
    sqlite3_stmt *st = NULL;
    int64_t rows = 0, synced = 0, rc = -1;
    int piped = 0;
    if (!sel.s || !ins.s || !vals || !lens || !fmts || !num) {
        oom(c);
        goto out;
    }
    if (sqlite3_prepare_v2(c->sh, sel.s, -1, &st, NULL) != SQLITE_OK) {
        sqlite_fail(c, "cannot read a table");
        goto out;
    }
    PGresult *pr = PQprepare(c->pc, "", ins.s, n, NULL);
    if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
        char what[256];
        snprintf(what, sizeof what, "cannot insert into %s", t->name);
        pg_fail(c, what, pr);
        PQclear(pr);
        goto out;
    }
    PQclear(pr);
    if (!PQenterPipelineMode(c->pc)) {
        pg_fail(c, "pipeline mode", NULL);
        goto out;
    }
    piped = 1;
    int step, batch = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < n; i++) {
            int type = sqlite3_column_type(st, i);
            fmts[i] = 0;
            lens[i] = 0;
            if (type == SQLITE_NULL) {
                vals[i] = NULL;
            } else if (t->cols[i].bytea) {
                vals[i] = sqlite3_column_blob(st, i);
                lens[i] = sqlite3_column_bytes(st, i);
                fmts[i] = 1;
                if (!vals[i])
                    vals[i] = "";      /* a zero-length value */
            } else if (type == SQLITE_INTEGER) {
                snprintf(num[i], sizeof num[i], "%lld", (long long)sqlite3_column_int64(st, i));
                vals[i] = num[i];
            } else if (type == SQLITE_FLOAT) {
                snprintf(num[i], sizeof num[i], "%.17g", sqlite3_column_double(st, i));
                vals[i] = num[i];
            } else {                    /* TEXT or BLOB into a text-like column */
                const char *v = (const char *)sqlite3_column_text(st, i);
                int len = sqlite3_column_bytes(st, i);
                if (!v) {
                    oom(c);
                    goto out;
                }
                if (memchr(v, '\0', (size_t)len)) {
                    set_err(c->err, c->errlen, "table %s, row %" PRId64 ", column %s: the value "
                            "holds a NUL byte, which a PostgreSQL %s column cannot store; "
                            "nothing was copied", t->name, rows + 1, t->cols[i].name,
                            t->cols[i].pgtype);
                    goto out;
                }
                vals[i] = v;
            }
        }
        if (!PQsendQueryPrepared(c->pc, "", n, vals, lens, fmts, 0)) {
            pg_fail(c, "cannot send a row", NULL);
            goto out;
        }
        rows++;
        if (++batch == PIPE_BATCH) {
            batch = 0;
            if (!PQpipelineSync(c->pc) || pipe_drain(c, t, synced + 1) < 0)
                goto out;
            synced = rows;
        }
    }
    if (step != SQLITE_DONE) {
        sqlite_fail(c, "cannot read a table");
        goto out;
    }
    if (!PQpipelineSync(c->pc) || pipe_drain(c, t, synced + 1) < 0)
        goto out;
    rc = rows;
out:
    if (piped) {
        if (rc < 0 && PQpipelineStatus(c->pc) != PQ_PIPELINE_OFF) {
            /* send what remains to a sync and read it all, so the
             * connection can leave pipeline mode and roll back */
            char keep[512];
            str_copy(keep, sizeof keep, c->err);
            if (PQpipelineSync(c->pc))
                pipe_drain(c, t, 0);
            str_copy(c->err, c->errlen, keep);
        }
        if (!PQexitPipelineMode(c->pc) && rc >= 0) {
            pg_fail(c, "pipeline mode", NULL);
            rc = -1;
        }
    }
    sqlite3_finalize(st);
    free(sel.s);
    free(ins.s);
    free(vals);
    free(lens);
    free(fmts);
    free(num);
    return rc;
}

/* Sets every identity/serial sequence of t's columns to the column's max
 * (left alone when the table is empty), so new rows get fresh ids. */
static int advance_sequences(struct ctx *c, const struct tbl *t)
{
    const char *params[1] = { t->oid };
    PGresult *r = pg_exec(c,
        "SELECT a.attname, s.seq FROM pg_attribute a, "
        "LATERAL (SELECT pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) AS seq) s "
        "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
        "AND s.seq IS NOT NULL", 1, params, "cannot find the target's sequences");
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        struct sb q = { 0 };
        sb_printf(&q, "SELECT setval($1::regclass, m) FROM (SELECT max(");
        sb_ident(&q, PQgetvalue(r, i, 0));
        sb_printf(&q, ")::bigint AS m FROM ");
        sb_ident(&q, t->name);
        sb_printf(&q, ") s WHERE m IS NOT NULL");
        if (!q.s) {
            rc = oom(c);
            break;
        }
        const char *seq[1] = { PQgetvalue(r, i, 1) };
        PGresult *s = pg_exec(c, q.s, 1, seq, "cannot advance a sequence");
        if (!s)
            rc = -1;
        PQclear(s);
        free(q.s);
    }
    PQclear(r);
    return rc;
}

static int fill_result(struct ctx *c, struct copy_result *res)
{
    if (!res)
        return 0;
    res->target = strdup(db_path(c->dst));
    res->tables = calloc((size_t)c->nt + 1, sizeof *res->tables);
    if (!res->target || !res->tables)
        return oom(c);
    for (int k = 0; k < c->nt; k++) {
        struct copy_table *o = &res->tables[k];
        struct tbl *t = &c->t[k];
        o->name = t->name;
        t->name = NULL;
        o->skipped_cols = t->skipped;
        t->skipped = NULL;
        o->copied = k < c->ncopy;
        o->ncols = o->copied ? t->ncols : 0;
        o->source_rows = t->src_rows;
        o->target_rows = o->copied ? t->dst_rows : -1;
        res->ntables++;
    }
    return 0;
}

/* The source must be an existing Parley SQLite file: refuses what db_open
 * would create or migrate into something else. */
static int check_source(const char *from, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(from, &sb) < 0)
        return set_err(err, errlen, "--from %s: %s", from, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return set_err(err, errlen, "--from %s: not a regular file", from);
    sqlite3 *h = NULL;
    int version = -1;
    char msg[256] = "";
    if (sqlite3_open_v2(from, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        else
            str_copy(msg, sizeof msg, sqlite3_errmsg(h));
        sqlite3_finalize(st);
    } else {
        str_copy(msg, sizeof msg, h ? sqlite3_errmsg(h) : "out of memory");
    }
    sqlite3_close(h);
    if (version < 0)
        return set_err(err, errlen, "--from %s: cannot read it as a SQLite database: %s", from, msg);
    if (version == 0)
        return set_err(err, errlen, "--from %s: not a Parley database (no schema version)", from);
    return 0;
}

int copy_run(const char *from, const char *to, unsigned flags, struct copy_result *res,
             char *err, size_t errlen)
{
    if (res)
        memset(res, 0, sizeof *res);
    if (!from || !*from || db_pg_is_conninfo(from))
        return set_err(err, errlen, "--from must be the path of a SQLite database file");
    if (!to || !db_pg_is_conninfo(to))
        return set_err(err, errlen, "--to must be a PostgreSQL connection string "
                       "(postgresql://... or libpq key=value)");
    if (check_source(from, err, errlen) < 0)
        return COPY_ERR;
    struct ctx c = { .err = err, .errlen = errlen };
    int rc = COPY_ERR, src_tx = 0, dst_tx = 0;
    int derived[NDERIVED] = { 0 };
    char **pg_names = NULL;
    int npg = 0;
    if (!(c.src = db_open(from, err, errlen)))
        goto out;
    if (!(c.dst = db_open(to, err, errlen)))
        goto out;
    c.sh = db_handle(c.src);
    c.pc = db_pg_conn(c.dst);
    if (sqlite3_exec(c.sh, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {   /* one snapshot */
        sqlite_fail(&c, "cannot start a read transaction");
        goto out;
    }
    src_tx = 1;
    if (db_begin(c.dst) < 0) {
        pg_fail(&c, "BEGIN", NULL);
        goto out;
    }
    dst_tx = 1;
    if (read_sqlite_tables(&c) < 0 || find_pg_tables(&c) < 0)
        goto out;
    for (int k = 0; k < c.nt; k++)
        if (c.t[k].oid && read_columns(&c, &c.t[k]) < 0)
            goto out;
    if (order_tables(&c) < 0)
        goto out;
    if (c.ncopy == 0) {
        set_err(err, errlen, "no table of %s is also in %s: nothing to copy", from,
                db_path(c.dst));
        goto out;
    }
    {   /* the target's table names, for the derived tables */
        PGresult *r = pg_exec(&c, "SELECT c.relname FROM pg_class c "
                                  "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                  "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
                              0, NULL, "cannot list the target's tables");
        if (!r)
            goto out;
        npg = PQntuples(r);
        pg_names = calloc((size_t)npg + 1, sizeof *pg_names);
        for (int i = 0; pg_names && i < npg; i++)
            pg_names[i] = strdup(PQgetvalue(r, i, 0));
        PQclear(r);
        if (!pg_names) {
            oom(&c);
            goto out;
        }
        for (int i = 0; i < npg; i++)
            if (!pg_names[i]) {
                oom(&c);
                goto out;
            }
        for (size_t i = 0; i < NDERIVED; i++)
            derived[i] = derived_applies(&c, i, (const char *const *)pg_names, npg);
    }
    int prc = prepare_target(&c, flags, derived);
    if (prc < 0) {
        rc = prc;
        goto out;
    }
    int64_t total = 0;
    for (int k = 0; k < c.ncopy; k++) {
        int64_t n = copy_rows(&c, &c.t[k]);
        if (n < 0)
            goto out;
        total += n;
    }
    for (size_t i = 0; i < NDERIVED; i++)
        if (derived[i]) {
            PGresult *r = pg_exec(&c, DERIVED[i].sql, 0, NULL, "cannot rebuild a derived table");
            if (!r)
                goto out;
            PQclear(r);
        }
    for (int k = 0; k < c.ncopy; k++)
        if (advance_sequences(&c, &c.t[k]) < 0)
            goto out;
    int mismatch = 0;
    for (int k = 0; k < c.nt; k++) {
        struct tbl *t = &c.t[k];
        if ((t->src_rows = sqlite_count(&c, t->name)) < 0)
            goto out;
        if (k < c.ncopy) {
            t->dst_rows = pg_one(&c, "SELECT count(*) FROM ", t->name, "", "cannot count rows");
            if (t->dst_rows < 0)
                goto out;
            mismatch |= t->dst_rows != t->src_rows;
        }
    }
    if (res)
        res->rows = total;
    if (mismatch) {
        if (res)
            res->mismatch = 1;
        set_err(err, errlen, "the row counts of SQLite and PostgreSQL differ: nothing was copied");
        fill_result(&c, res);
        goto out;
    }
    if (db_commit(c.dst) < 0) {
        dst_tx = 0;
        set_err(err, errlen, "%s: %s", db_path(c.dst), db_errmsg(c.dst));
        goto out;
    }
    dst_tx = 0;
    if (fill_result(&c, res) < 0)
        goto out;
    rc = COPY_OK;
out:
    if (dst_tx)
        db_rollback(c.dst);
    if (src_tx)
        sqlite3_exec(c.sh, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; pg_names && i < npg; i++)
        free(pg_names[i]);
    free(pg_names);
    for (int k = 0; k < c.nt; k++)
        tbl_free(&c.t[k]);
    free(c.t);
    db_close(c.dst);
    db_close(c.src);
    if (rc != COPY_OK && res && !res->mismatch) {
        copy_result_free(res);
        memset(res, 0, sizeof *res);
    }
    return rc;
}

void copy_result_free(struct copy_result *res)
{
    if (!res)
        return;
    for (int k = 0; k < res->ntables; k++) {
        free(res->tables[k].name);
        free(res->tables[k].skipped_cols);
    }
    free(res->tables);
    free(res->target);
    res->tables = NULL;
    res->target = NULL;
    res->ntables = 0;
}
