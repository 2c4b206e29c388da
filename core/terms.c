/* terms.c — search terms for FTS5 MATCH and PostgreSQL full-text search
 * (see terms.h): splitting a query into quoted words, the stop-word list,
 * the OR expression, the word list for PostgreSQL, per-term hit counts. Uses db_sqlite.h as a shared helper of the storage modules
 * (catalog.c, kb.c): terms_hits runs their literal SQL with bound
 * parameters; no SQL of its own. */
#include "terms.h"
#include "db_sqlite.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* Words that say nothing about what a passage or product is about:
 * English, Portuguese (seed 000's help desk writes Portuguese) and a few
 * Indonesian ones the seeds' users write. Lower case, each once. */
static const char *const STOP_WORDS[] = {
    /* English */
    "about", "after", "again", "all", "also", "am", "an", "and", "any", "anything", "are",
    "as", "at", "be", "been", "before", "best", "but", "buy", "by", "can", "cannot",
    "could", "did", "do", "does", "doing", "for", "from", "get", "give", "good", "got",
    "had", "has", "have", "having", "he", "hello", "help", "her", "hi", "him", "his", "how",
    "if", "in", "into", "is", "it", "its", "just", "like", "looking", "me", "more", "most",
    "my", "need", "needs", "no", "not", "of", "on", "one", "or", "our", "please",
    "recommend", "she", "should", "show", "so", "some", "something", "tell", "than",
    "thanks", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "too", "up", "us", "very", "want", "was", "we", "were", "what", "when",
    "where", "which", "who", "why", "will", "with", "would", "you", "your",
    /* Portuguese (as, do, me, no: above) */
    "ao", "aos", "até", "com", "como", "da", "das", "de", "dos", "ela", "ele", "em",
    "entre", "essa", "esse", "esta", "está", "este", "eu", "foi", "isso", "mais", "mas",
    "meu", "minha", "na", "nas", "nem", "nos", "não", "num", "numa", "os", "ou", "para",
    "pela", "pelo", "por", "qual", "que", "quando", "se", "sem", "ser", "seu", "sua", "são",
    "também", "tem", "um", "uma", "você",
    /* Indonesian */
    "ada", "apa", "dan", "di", "ini", "itu", "saya", "untuk", "yang",
};

int terms_stop_word(const char *w)
{
    for (size_t i = 0; i < sizeof STOP_WORDS / sizeof STOP_WORDS[0]; i++)
        if (!strcmp(w, STOP_WORDS[i]))
            return 1;
    return 0;
}

/* Letters and digits: ASCII alphanumerics, and code points above ASCII
 * that are not punctuation, symbols, spaces, private use or emoji. */
static int is_word_cp(long cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
    if (cp < 0xc0 || cp == 0xd7 || cp == 0xf7 || cp == 0x1680)
        return 0;                                   /* Latin-1 controls, signs, x, /; ogham space */
    if ((cp >= 0x2000 && cp <= 0x2bff) || (cp >= 0x3000 && cp <= 0x303f) ||
        (cp >= 0xe000 && cp <= 0xf8ff) || (cp >= 0xfe10 && cp <= 0xfe6f) ||
        (cp >= 0xff00 && cp <= 0xff0f) || (cp >= 0xfff0 && cp <= 0xffff) || cp >= 0x1f000)
        return 0;                                   /* punctuation, symbols, emoji */
    return 1;
}

/* Adds word w (len bytes, chars code points; letters and digits only, so
 * no '"') as a term unless it is too short or long, a stop word, or
 * already there. */
static void add_term(struct terms *t, int flags, int max, const char *w, size_t len,
                     size_t chars)
{
    if (t->n >= max || chars < 2 || len > TERMS_WORD_MAX)
        return;
    char word[TERMS_WORD_MAX + 1];
    int ascii = 1;
    for (size_t i = 0; i < len; i++) {
        char ch = w[i];
        if ((unsigned char)ch >= 0x80)
            ascii = 0;
        word[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    word[len] = '\0';
    if (terms_stop_word(word))
        return;
    if ((flags & TERMS_STEM) && ascii && len >= 5 && word[len - 1] == 's' && word[len - 2] != 's')
        word[--len] = '\0';
    char term[TERMS_TERM_SIZE];
    snprintf(term, sizeof term, (flags & TERMS_PREFIX) && len >= 4 ? "\"%s\"*" : "\"%s\"", word);
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->v[i], term))
            return;
    memcpy(t->v[t->n++], term, strlen(term) + 1);
}

void terms_split(const char *query, int flags, int max, struct terms *t)
{
    memset(t, 0, sizeof *t);
    if (max < 1)
        max = 1;
    if (max > TERMS_MAX)
        max = TERMS_MAX;
    if (!query)
        query = "";
    const unsigned char *s = (const unsigned char *)query;
    size_t n = strlen(query), i = 0, start = 0, chars = 0;
    int in_word = 0;
    while (i < n && t->n < max) {
        size_t at = i;
        long cp = -1;
        size_t l = utf8_decode(s + i, n - i, &cp);
        i += l ? l : 1;                             /* a malformed byte separates words */
        if (l && is_word_cp(cp)) {
            if (!in_word) {
                in_word = 1;
                start = at;
                chars = 0;
            }
            chars++;
        } else if (in_word) {
            add_term(t, flags, max, query + start, at - start, chars);
            in_word = 0;
        }
    }
    if (in_word)
        add_term(t, flags, max, query + start, i - start, chars);
}

int terms_or(const struct terms *t, char *out, size_t outlen)
{
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (t->n <= 0)
        return -1;
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        int w = snprintf(out + off, outlen - off, "%s%s", i ? " OR " : "", t->v[i]);
        if (w < 0 || (size_t)w >= outlen - off) {
            out[0] = '\0';
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

int terms_words(const struct terms *t, char *out, size_t outlen)
{
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (t->n <= 0)
        return -1;
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        const char *v = t->v[i];                    /* "word" or "word"* */
        size_t n = strlen(v);
        int star = n > 0 && v[n - 1] == '*';
        if (n < 2 + (size_t)star + 1 || v[0] != '"' || v[n - 1 - (size_t)star] != '"') {
            out[0] = '\0';
            return -1;
        }
        int w = snprintf(out + off, outlen - off, "%s%.*s%s", i ? " " : "",
                         (int)(n - 2 - (size_t)star), v + 1, star ? "*" : "");
        if (w < 0 || (size_t)w >= outlen - off) {
            out[0] = '\0';
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

int terms_hits(parley_db *db, const char *sql, const struct terms *t, int64_t rowid)
{
    int hits = 0;
    for (int i = 0; i < t->n; i++) {
        sqlite3_stmt *st = db_stmt(db, sql);
        if (!st)
            return -1;
        db_bind_text(st, 1, t->v[i]);
        sqlite3_bind_int64(st, 2, rowid);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
            hits++;
        else if (rc != SQLITE_DONE)
            return -1;
    }
    return hits;
}
