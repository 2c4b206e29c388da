/* kb.c — the knowledge base on SQLite FTS5 (see kb.h,
 * docs/knowledge-base.md): cutting files into passages, storing them,
 * BM25 search with a query of quoted words only (terms.h), confidence,
 * prompt context. Runs in whichever thread owns the parley_db it is given.
 * Every statement is a literal prepared once per connection (db_stmt) with
 * bound parameters. Cutting, checks, transactions, confidence and context
 * are shared; on a PostgreSQL connection (db_pg_conn) the statements are
 * storage/pg/kb.c's (full-text search with tsvector/tsquery there). */
#include "kb.h"
#include "db_sqlite.h"
#include "storage/pg/pg.h"
#include "storage/pg/kb.h"
#include "terms.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char SQL_DELETE_SOURCE[] = "DELETE FROM kb_passages WHERE source = ?1";
static const char SQL_DELETE_ID[] = "DELETE FROM kb_passages WHERE id = ?1";
static const char SQL_INSERT[] =
    "INSERT INTO kb_passages(source, seq, title, text, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
static const char SQL_LIST_ALL[] =
    "SELECT id, source, title, seq, length(CAST(text AS BLOB)), created_at FROM kb_passages "
    "ORDER BY source, seq";
static const char SQL_LIST_SOURCE[] =
    "SELECT id, source, title, seq, length(CAST(text AS BLOB)), created_at FROM kb_passages "
    "WHERE source = ?1 ORDER BY seq";
/* bm25 weights follow the columns: title, text. */
static const char SQL_SEARCH[] =
    "SELECT p.id, p.source, p.title, p.text, bm25(kb_fts, 2.0, 1.0) AS score FROM kb_fts "
    "JOIN kb_passages p ON p.id = kb_fts.rowid WHERE kb_fts MATCH ?1 "
    "ORDER BY score, p.id LIMIT ?2";
static const char SQL_TERM_HIT[] =
    "SELECT 1 FROM kb_fts WHERE kb_fts MATCH ?1 AND rowid = ?2";

/* ---- UTF-8 ---- */

/* 0 when s[0..n) is UTF-8 without NUL bytes; else the offset of the first
 * bad byte plus one. */
static size_t utf8_bad_at(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        long cp;
        size_t l = u[i] ? utf8_decode(u + i, n - i, &cp) : 0;
        if (!l)
            return i + 1;
        i += l;
    }
    return 0;
}

/* ---- cutting text into passages ---- */

struct cut {
    struct kb_cut_passage *v;
    int n, cap;
    int oom;
};

static int is_blank_line(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The first line of text, trimmed, at most 120 bytes (new string). */
static char *first_line(const char *text)
{
    while (is_space(*text))
        text++;
    size_t n = strcspn(text, "\n");
    while (n > 0 && is_space(text[n - 1]))
        n--;
    if (n > 120)
        n = utf8_floor(text, 120);
    return strndup(text, n);
}

/* Adds one passage: text[0..len) trimmed; title NULL = its first line. */
static void cut_add(struct cut *c, const char *title, const char *text, size_t len)
{
    while (len > 0 && is_space(*text)) {
        text++;
        len--;
    }
    while (len > 0 && is_space(text[len - 1]))
        len--;
    if (len == 0 || c->oom)
        return;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        struct kb_cut_passage *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) {
            c->oom = 1;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    char *t = strndup(text, len);
    char *ti = t ? (title ? strdup(title) : first_line(t)) : NULL;
    if (!t || !ti) {
        free(t);
        free(ti);
        c->oom = 1;
        return;
    }
    c->v[c->n].title = ti;
    c->v[c->n].text = t;
    c->n++;
}

/* Adds text[0..len) as passages of at most KB_PASSAGE_MAX bytes, cut at
 * the last white space before the limit (or at a character boundary when
 * the second half of the piece has none). */
static void cut_long(struct cut *c, const char *title, const char *text, size_t len)
{
    while (len > 0) {
        while (len > 0 && is_space(*text)) {
            text++;
            len--;
        }
        if (len <= KB_PASSAGE_MAX) {
            cut_add(c, title, text, len);
            return;
        }
        size_t at = KB_PASSAGE_MAX;
        while (at > KB_PASSAGE_MAX / 2 && !is_space(text[at]))
            at--;
        if (!is_space(text[at]))
            at = utf8_floor(text, KB_PASSAGE_MAX);
        cut_add(c, title, text, at);
        text += at;
        len -= at;
    }
}

/* 1 when the line opens or closes a Markdown code fence. */
static int is_fence(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < 3 && s[i] == ' ')
        i++;
    return n - i >= 3 && (!strncmp(s + i, "```", 3) || !strncmp(s + i, "~~~", 3));
}

/* Adds a section body as passages: its paragraphs (runs of lines between
 * blank lines; in Markdown a fenced block is one run) grouped while they
 * fit in KB_PASSAGE_MAX, longer ones cut by cut_long. */
static void cut_section(struct cut *c, const char *title, const char *body, size_t len,
                        int markdown)
{
    size_t grp_start = 0, grp_end = 0;       /* the group being filled */
    int have_grp = 0, fence = 0;
    size_t i = 0;
    while (i < len) {
        /* one paragraph: [ps, pe) */
        while (i < len) {
            size_t e = i;
            while (e < len && body[e] != '\n')
                e++;
            if (!is_blank_line(body + i, e - i))
                break;
            i = e < len ? e + 1 : e;
        }
        if (i >= len)
            break;
        size_t ps = i, pe = i;
        while (i < len) {
            size_t e = i;
            while (e < len && body[e] != '\n')
                e++;
            if (markdown && is_fence(body + i, e - i))
                fence = !fence;
            else if (!fence && is_blank_line(body + i, e - i))
                break;
            pe = e;
            i = e < len ? e + 1 : e;
        }
        if (have_grp && pe - grp_start <= KB_PASSAGE_MAX) {
            grp_end = pe;                    /* the blank lines between stay */
            continue;
        }
        if (have_grp)                        /* full: the group is a passage */
            cut_long(c, title, body + grp_start, grp_end - grp_start);
        grp_start = ps;
        grp_end = pe;
        have_grp = 1;
    }
    if (have_grp)
        cut_long(c, title, body + grp_start, grp_end - grp_start);
}

/* The heading text of an ATX heading line ("## Title ##"), or NULL when
 * the line is not one. *hlen: its length. */
static const char *heading_of(const char *s, size_t n, size_t *hlen)
{
    size_t i = 0;
    while (i < n && i < 3 && s[i] == ' ')
        i++;
    size_t h = 0;
    while (i + h < n && s[i + h] == '#')
        h++;
    if (h < 1 || h > 6 || (i + h < n && s[i + h] != ' ' && s[i + h] != '\t' && s[i + h] != '\r'))
        return NULL;
    const char *t = s + i + h;
    size_t tl = n - i - h;
    while (tl > 0 && is_space(*t)) {
        t++;
        tl--;
    }
    while (tl > 0 && is_space(t[tl - 1]))
        tl--;
    /* a closing run of '#' preceded by a space goes */
    size_t k = tl;
    while (k > 0 && t[k - 1] == '#')
        k--;
    if (k < tl && (k == 0 || t[k - 1] == ' ' || t[k - 1] == '\t')) {
        tl = k;
        while (tl > 0 && is_space(t[tl - 1]))
            tl--;
    }
    *hlen = tl;
    return t;
}

/* Cuts a whole file's text into c. */
static void cut_text(struct cut *c, const char *text, size_t len, int markdown)
{
    if (!markdown) {
        cut_section(c, NULL, text, len, 0);
        return;
    }
    char *title = NULL;                      /* NULL before the first heading */
    size_t sec = 0, i = 0;
    int fence = 0;
    while (i < len && !c->oom) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        size_t hl;
        const char *h = NULL;
        if (is_fence(text + i, e - i))
            fence = !fence;
        else if (!fence)
            h = heading_of(text + i, e - i, &hl);
        if (h) {
            cut_section(c, title, text + sec, i - sec, 1);
            free(title);
            title = strndup(h, hl);
            if (!title)
                c->oom = 1;
            sec = e < len ? e + 1 : e;
        }
        i = e < len ? e + 1 : e;
    }
    if (!c->oom)
        cut_section(c, title, text + sec, len - sec, 1);
    free(title);
}

static void cut_free(struct cut *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->v[i].title);
        free(c->v[i].text);
    }
    free(c->v);
    memset(c, 0, sizeof *c);
}

/* ---- import ---- */

int kb_import_text(parley_db *db, const char *source, const char *text, size_t len,
                   int markdown, int *npassages, char *err, size_t errlen)
{
    if (npassages)
        *npassages = 0;
    size_t sl = source ? strlen(source) : 0;
    if (sl == 0 || sl > KB_SOURCE_MAX) {
        set_err(err, errlen, "source name must be 1 to %d bytes", KB_SOURCE_MAX);
        return KB_BAD_INPUT;
    }
    if (utf8_bad_at(source, sl)) {
        set_err(err, errlen, "source name is not UTF-8");
        return KB_BAD_INPUT;
    }
    size_t bad = utf8_bad_at(text, len);
    if (bad) {
        set_err(err, errlen, "%s: not UTF-8 text (bad byte at offset %zu)", source, bad - 1);
        return KB_BAD_INPUT;
    }
    struct cut c;
    memset(&c, 0, sizeof c);
    cut_text(&c, text, len, markdown);
    if (c.oom) {
        cut_free(&c);
        set_err(err, errlen, "%s: out of memory", source);
        return KB_ERR;
    }
    if (c.n == 0) {
        cut_free(&c);
        set_err(err, errlen, "%s: no text to import", source);
        return KB_BAD_INPUT;
    }
    if (db_begin(db) < 0) {
        cut_free(&c);
        set_err(err, errlen, "%s: %s", source, db_err_text(db, "database error"));
        return KB_ERR;
    }
    int64_t now = now_ms();
    int pg = db_pg_conn(db) != NULL;
    sqlite3_stmt *st = pg ? NULL : db_stmt(db, SQL_DELETE_SOURCE);
    int rc = pg ? (kb_pg_replace_tx(db, source, c.v, c.n, now) == 0 ? SQLITE_OK : SQLITE_ERROR)
                : st ? SQLITE_OK : SQLITE_ERROR;
    if (st) {
        db_bind_text(st, 1, source);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(st);
    }
    for (int i = 0; i < c.n && rc == SQLITE_OK && !pg; i++) {
        st = db_stmt(db, SQL_INSERT);
        if (!st) {
            rc = SQLITE_ERROR;
            break;
        }
        db_bind_text(st, 1, source);
        sqlite3_bind_int(st, 2, i + 1);
        db_bind_text(st, 3, c.v[i].title);
        db_bind_text(st, 4, c.v[i].text);
        sqlite3_bind_int64(st, 5, now);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
        sqlite3_reset(st);
    }
    if (rc == SQLITE_OK && db_commit(db) == 0) {
        if (npassages)
            *npassages = c.n;
        cut_free(&c);
        return KB_OK;
    }
    set_err(err, errlen, "%s: %s", source, db_err_text(db, "database error"));
    db_rollback(db);
    cut_free(&c);
    return KB_ERR;
}

/* 1 when name ends in ".md" or ".markdown" (any case). */
static int is_markdown_name(const char *name)
{
    size_t n = strlen(name);
    return (n > 3 && !strcasecmp(name + n - 3, ".md")) ||
           (n > 9 && !strcasecmp(name + n - 9, ".markdown"));
}

int kb_import_file(parley_db *db, const char *path, int *npassages, char *err, size_t errlen)
{
    if (npassages)
        *npassages = 0;
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    if (!*name) {
        set_err(err, errlen, "%s: not a file name", path);
        return KB_BAD_INPUT;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return KB_BAD_INPUT;
    }
    char *buf = malloc((size_t)KB_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        set_err(err, errlen, "%s: out of memory", path);
        return KB_ERR;
    }
    size_t len = fread(buf, 1, (size_t)KB_FILE_MAX + 1, f);
    int rerr = ferror(f);
    int saved = errno;
    fclose(f);
    if (rerr) {
        free(buf);
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(saved));
        return KB_BAD_INPUT;
    }
    if (len > (size_t)KB_FILE_MAX) {
        free(buf);
        set_err(err, errlen, "%s: larger than %d bytes", path, KB_FILE_MAX);
        return KB_BAD_INPUT;
    }
    size_t off = len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3) ? 3 : 0;   /* BOM */
    int rc = kb_import_text(db, name, buf + off, len - off, is_markdown_name(name), npassages,
                            err, errlen);
    free(buf);
    return rc;
}

/* ---- list, remove ---- */

void kb_entries_free(struct kb_entry *e, int n)
{
    if (!e)
        return;
    for (int i = 0; i < n; i++) {
        free(e[i].source);
        free(e[i].title);
    }
    free(e);
}

int kb_list(parley_db *db, const char *source, struct kb_entry **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (db_pg_conn(db))
        return kb_pg_list(db, source, out, n);
    sqlite3_stmt *st = db_stmt(db, source ? SQL_LIST_SOURCE : SQL_LIST_ALL);
    if (!st)
        return KB_ERR;
    if (source)
        db_bind_text(st, 1, source);
    struct kb_entry *v = NULL;
    int cnt = 0, cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            int ncap = cap ? 2 * cap : 32;
            struct kb_entry *nv = realloc(v, (size_t)ncap * sizeof *nv);
            if (!nv) {
                rc = SQLITE_NOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        struct kb_entry *e = &v[cnt++];
        e->id = sqlite3_column_int64(st, 0);
        e->source = db_col_strdup(st, 1);
        e->title = db_col_strdup(st, 2);
        e->seq = sqlite3_column_int(st, 3);
        e->bytes = sqlite3_column_int64(st, 4);
        e->created_at = sqlite3_column_int64(st, 5);
        if (!e->source || !e->title) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        kb_entries_free(v, cnt);
        return KB_ERR;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

/* Runs a one-parameter DELETE in its own transaction; rows deleted, or -1. */
static int delete_tx(parley_db *db, const char *sql, const char *text, int64_t id)
{
    if (db_begin(db) < 0)
        return -1;
    if (db_pg_conn(db)) {
        int n = text ? kb_pg_delete_source_tx(db, text) : kb_pg_delete_id_tx(db, id);
        if (n < 0 || db_commit(db) < 0) {
            db_rollback(db);
            return -1;
        }
        return n;
    }
    sqlite3_stmt *st = db_stmt(db, sql);
    if (!st) {
        db_rollback(db);
        return -1;
    }
    if (text)
        db_bind_text(st, 1, text);
    else
        sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    int changed = db_changes(db);
    if (rc != SQLITE_DONE || db_commit(db) < 0) {
        db_rollback(db);
        return -1;
    }
    return changed;
}

int kb_remove_source(parley_db *db, const char *source, int *removed)
{
    if (removed)
        *removed = 0;
    if (!source || !*source)
        return KB_NOT_FOUND;
    int n = delete_tx(db, SQL_DELETE_SOURCE, source, 0);
    if (n < 0)
        return KB_ERR;
    if (removed)
        *removed = n;
    return n > 0 ? KB_OK : KB_NOT_FOUND;
}

int kb_remove_id(parley_db *db, int64_t id)
{
    int n = delete_tx(db, SQL_DELETE_ID, NULL, id);
    return n < 0 ? KB_ERR : n > 0 ? KB_OK : KB_NOT_FOUND;
}

/* ---- search ---- */

_Static_assert(KB_MAX_TERMS <= TERMS_MAX, "a struct terms holds KB_MAX_TERMS");

void kb_hits_free(struct kb_hits *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->n; i++) {
        free(h->v[i].source);
        free(h->v[i].title);
        free(h->v[i].text);
    }
    free(h->v);
    memset(h, 0, sizeof *h);
}

int kb_search(parley_db *db, const char *query, int limit, struct kb_hits *out)
{
    memset(out, 0, sizeof *out);
    struct terms t;
    terms_split(query, 0, KB_MAX_TERMS, &t);
    out->nterms = t.n;
    if (t.n == 0 || limit <= 0)
        return KB_OK;
    if (limit > KB_MAX_HITS)
        limit = KB_MAX_HITS;
    char expr[TERMS_EXPR_SIZE];
    if (terms_or(&t, expr, sizeof expr) < 0)
        return KB_ERR;

    out->v = calloc((size_t)limit, sizeof *out->v);
    if (out->v && db_pg_conn(db)) {
        if (kb_pg_search(db, &t, limit, out) != KB_OK) {
            int nt = out->nterms;
            kb_hits_free(out);
            out->nterms = nt;
            return KB_ERR;
        }
        for (int i = 0; i < out->n; i++)
            if (out->v[i].terms_matched < 1)
                out->v[i].terms_matched = 1;     /* it matched the OR: one at least */
        if (out->n == 0) {
            free(out->v);
            out->v = NULL;
        }
        return KB_OK;
    }
    sqlite3_stmt *st = out->v ? db_stmt(db, SQL_SEARCH) : NULL;
    if (!st) {
        kb_hits_free(out);
        return KB_ERR;
    }
    db_bind_text(st, 1, expr);
    sqlite3_bind_int(st, 2, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && out->n < limit) {
        struct kb_hit *h = &out->v[out->n++];
        h->id = sqlite3_column_int64(st, 0);
        h->source = db_col_strdup(st, 1);
        h->title = db_col_strdup(st, 2);
        h->text = db_col_strdup(st, 3);
        h->bm25 = sqlite3_column_double(st, 4);
        if (!h->source || !h->title || !h->text) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        int nt = out->nterms;
        kb_hits_free(out);
        out->nterms = nt;
        return KB_ERR;
    }
    for (int i = 0; i < out->n; i++) {
        int m = terms_hits(db, SQL_TERM_HIT, &t, out->v[i].id);
        if (m < 0) {
            int nt = out->nterms;
            kb_hits_free(out);
            out->nterms = nt;
            return KB_ERR;
        }
        out->v[i].terms_matched = m > 0 ? m : 1;   /* it matched the OR: one at least */
    }
    if (out->n == 0) {
        free(out->v);
        out->v = NULL;
    }
    return KB_OK;
}

double kb_confidence(const struct kb_hits *h)
{
    if (!h || h->n <= 0 || !h->v || h->nterms <= 0)
        return -1;
    const struct kb_hit *b = &h->v[0];
    double coverage = (double)b->terms_matched / h->nterms;
    if (coverage > 1)
        coverage = 1;
    double s = fabs(b->bm25);
    if (!isfinite(s))
        s = 0;
    double strength = s / (s + 2.0);
    double c = coverage * (0.6 + 0.4 * strength);
    c = round(100.0 * c) / 100.0;
    return c < 0 ? 0 : c > 1 ? 1 : c;
}

/* ---- context ---- */

char *kb_context(const struct kb_hits *h, size_t max_bytes, int *used)
{
    if (used)
        *used = 0;
    size_t len = 0;
    int n = h ? h->n : 0;
    /* what all the passages need, or max_bytes + 1 when that is less */
    size_t need = 1;
    for (int i = 0; i < n; i++)
        need += strlen(h->v[i].title) + strlen(h->v[i].source) + strlen(h->v[i].text) + 32;
    size_t cap = max_bytes < need ? max_bytes + 1 : need;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    out[0] = '\0';
    int k = 0;
    for (int i = 0; i < n; i++) {
        const struct kb_hit *p = &h->v[i];
        char head[64];
        int hl = snprintf(head, sizeof head, "%s[%d] ", k ? "\n\n" : "", k + 1);
        size_t tl = strlen(p->title), sl = strlen(p->source), xl = strlen(p->text);
        /* head + title + " (" + source + ")\n" + text */
        size_t fixed = (size_t)hl + tl + (tl ? 1 : 0) + 1 + sl + 2;
        size_t whole = fixed + xl;
        if (len + whole <= max_bytes) {
            len += (size_t)snprintf(out + len, cap - len, "%s%s%s(%s)\n%s", head, p->title,
                                    tl ? " " : "", p->source, p->text);
            k++;
            continue;
        }
        if (k == 0 && len + fixed + 4 <= max_bytes) {
            /* not even the best one fits: cut it (with "…", 3 bytes) */
            size_t room = utf8_floor(p->text, max_bytes - len - fixed - 3);
            len += (size_t)snprintf(out + len, cap - len, "%s%s%s(%s)\n%.*s\xe2\x80\xa6", head,
                                    p->title, tl ? " " : "", p->source, (int)room, p->text);
            k++;
        }
        break;
    }
    if (used)
        *used = k;
    return out;
}

/* ---- grounding ---- */

#define KB_GROUND_INTRO "Passages from the knowledge base follow. Use them when they " \
    "answer the question, cite their titles, and do not invent what they do not say."

void kb_grounding_free(struct kb_grounding *g)
{
    if (!g)
        return;
    free(g->system);
    memset(g, 0, sizeof *g);
    g->confidence = -1;
}

int kb_ground(parley_db *db, const char *question, const char *base, int max_passages,
              size_t max_bytes, struct kb_grounding *g)
{
    memset(g, 0, sizeof *g);
    g->confidence = -1;
    struct kb_hits h;
    if (kb_search(db, question, max_passages, &h) != KB_OK)
        return KB_ERR;
    if (h.n == 0) {
        kb_hits_free(&h);
        return KB_OK;
    }
    int used = 0;
    char *ctx = kb_context(&h, max_bytes, &used);
    double conf = kb_confidence(&h);
    kb_hits_free(&h);
    if (!ctx)
        return KB_ERR;
    if (used == 0) {
        free(ctx);
        return KB_OK;
    }
    const char *b = base ? base : "";
    size_t len = strlen(b) + strlen(KB_GROUND_INTRO) + strlen(ctx) + 8;
    g->system = malloc(len);
    if (!g->system) {
        free(ctx);
        return KB_ERR;
    }
    snprintf(g->system, len, "%s%s%s\n\n%s", b, *b ? "\n\n" : "", KB_GROUND_INTRO, ctx);
    free(ctx);
    g->used = used;
    g->confidence = conf;
    return KB_OK;
}

int kb_key_ground(char *key, size_t keylen, const char *system)
{
    if (!system || !*system)
        return 0;
    char *colon = strrchr(key, ':');
    if (!colon || strlen(colon + 1) != 64 || (size_t)(colon + 1 - key) + 65 > keylen)
        return -1;
    char *digest = colon + 1;
    size_t sys_len = strlen(system);
    size_t len = 64 + 4 + sys_len;
    char *buf = malloc(len);
    if (!buf)
        return -1;
    memcpy(buf, digest, 64);
    memcpy(buf + 64, "|kb|", 4);
    memcpy(buf + 68, system, sys_len);
    char hex[65];
    sha256_hex(buf, len, hex);
    free(buf);
    memcpy(digest, hex, 65);
    return 0;
}
