/* storage/pg/conn.c — the PostgreSQL connection of a parley_db: selection, redaction
 * of the password, migrations from sql/pg/,
 * transactions (nested ones are savepoints) and failure messages.
 * See storage/pg/pg.h and db.h for the contract. One connection per thread. */
#include "storage/pg/pg.h"
#include "migrations.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Key of the advisory lock migrations take ("parl"), so that processes
 * opening a new database together apply each migration once. */
#define MIGRATE_LOCK_KEY "1885434476"
#define SP_MAX 8
/* Statements prepared per connection (pgc_exec_params); more are run
 * unprepared. */
#define PREP_MAX 256

struct db_pg {
    PGconn *c;
    char *shown;            /* the redacted connection string */
    char *secret;           /* the password as written, NULL when none */
    int in_tx;              /* 1 the outermost transaction, more are savepoints */
    const char *prep[PREP_MAX];  /* SQL prepared on this session as "parley_<i>" */
    int nprep;
    int readonly;           /* the last failure was SQLSTATE 25006 */
    int lost;               /* the last failure was the session's end: SQLSTATE
                             * class 08 (connection exception) or 57P
                             * (the server shutting down or starting) */
    char err[512];
};

/* ---- selection and redaction ---- */

static int is_uri(const char *s)
{
    return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11);
}

int db_pg_is_conninfo(const char *s)
{
    if (!s)
        return 0;
    if (is_uri(s))
        return 1;
    while (isspace((unsigned char)*s))
        s++;
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_')
        n++;
    const char *p = s + n;
    while (isspace((unsigned char)*p))
        p++;
    if (n == 0 || *p != '=')
        return 0;
    int known = 0;
    PQconninfoOption *opts = PQconndefaults();
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strlen(o->keyword) == n && !strncmp(o->keyword, s, n))
            known = 1;
    PQconninfoFree(opts);
    return known;
}

/* A growing output string; on out of memory ->s becomes NULL for good. */
struct sbuf { char *s; size_t len, cap; };

static void sb_add(struct sbuf *b, const char *p, size_t n)
{
    if (!b->s)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            free(b->s);
            b->s = NULL;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void keep_secret(char **secret, const char *p, size_t n)
{
    if (secret && !*secret && n > 0)
        *secret = strndup(p, n);
}

static void redact_uri(const char *s, struct sbuf *b, char **secret)
{
    const char *auth = strstr(s, "://") + 3;
    const char *end = auth + strcspn(auth, "@/");   /* libpq: userinfo ends at the first '@' before '/' */
    const char *p = s;
    if (*end == '@') {
        const char *colon = memchr(auth, ':', (size_t)(end - auth));
        if (colon) {
            keep_secret(secret, colon + 1, (size_t)(end - colon - 1));
            sb_add(b, s, (size_t)(colon + 1 - s));
            sb_add(b, "***", 3);
            p = end;
        }
    }
    const char *q = strchr(p, '?');
    if (!q) {
        sb_add(b, p, strlen(p));
        return;
    }
    sb_add(b, p, (size_t)(q - p));
    while (*q) {                       /* q at '?' or '&' */
        sb_add(b, q, 1);
        q++;
        size_t n = strcspn(q, "&");
        if (n >= 9 && !strncmp(q, "password=", 9)) {
            keep_secret(secret, q + 9, n - 9);
            sb_add(b, "password=***", 12);
        } else {
            sb_add(b, q, n);
        }
        q += n;
    }
}

/* keyword = value pairs as libpq reads them: a value is quoted ('...' with
 * backslash escapes) or runs to the next white space. */
static void redact_kv(const char *s, struct sbuf *b, char **secret)
{
    const char *p = s;
    while (*p) {
        const char *ws = p;
        while (isspace((unsigned char)*p))
            p++;
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t keylen = (size_t)(p - key);
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '=') {                /* not a pair: copy the rest as it is */
            sb_add(b, ws, strlen(ws));
            return;
        }
        p++;
        while (isspace((unsigned char)*p))
            p++;
        const char *val = p;
        if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (keylen == 8 && !strncmp(key, "password", 8)) {
            const char *v = val, *ve = p;
            if (*v == '\'') {
                v++;
                if (ve > v && ve[-1] == '\'')
                    ve--;
            }
            keep_secret(secret, v, (size_t)(ve - v));
            sb_add(b, ws, (size_t)(val - ws));
            sb_add(b, "***", 3);
        } else {
            sb_add(b, ws, (size_t)(p - ws));
        }
    }
}

char *db_pg_redact(const char *conninfo, char **secret)
{
    struct sbuf b = { malloc(64), 0, 64 };
    if (secret)
        *secret = NULL;
    if (!b.s)
        return NULL;
    b.s[0] = '\0';
    if (is_uri(conninfo))
        redact_uri(conninfo, &b, secret);
    else
        redact_kv(conninfo, &b, secret);
    return b.s;
}

/* Copies msg into out with every occurrence of secret replaced by "***",
 * on one line (libpq's line breaks and tabs become spaces, the trailing
 * ones go). */
static void scrub(char *out, size_t outlen, const char *msg, const char *secret)
{
    size_t o = 0, sl = secret ? strlen(secret) : 0;
    if (!msg)
        msg = "";
    while (*msg && o + 1 < outlen) {
        if (sl && !strncmp(msg, secret, sl)) {
            for (const char *r = "***"; *r && o + 1 < outlen; r++)
                out[o++] = *r;
            msg += sl;
        } else if (*msg == '\n' || *msg == '\t') {
            if (o > 0 && out[o - 1] != ' ')
                out[o++] = ' ';
            msg++;
        } else {
            out[o++] = *msg++;
        }
    }
    while (o > 0 && (out[o - 1] == '\n' || out[o - 1] == ' '))
        o--;
    out[o] = '\0';
}

/* ---- errors ---- */

void pgc_fail(struct db_pg *p, const char *what, const PGresult *r)
{
    char msg[400];
    const char *raw = r ? PQresultErrorMessage(r) : NULL;
    if (!raw || !*raw)
        raw = PQerrorMessage(p->c);
    scrub(msg, sizeof msg, raw, p->secret);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    p->readonly = state && !strcmp(state, "25006");
    /* A statement that meets a server going down may get its FATAL
     * (57P01 terminating connection...) before libpq has seen the socket
     * close, while PQstatus still says CONNECTION_OK: that is the server
     * unreachable too, not a plain database error. */
    p->lost = PQstatus(p->c) != CONNECTION_OK ||
              (state && (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3)));
    snprintf(p->err, sizeof p->err, "%s: %s", what, msg[0] ? msg : "unknown error");
    fprintf(stderr, "parley: db: %s: %s\n", p->shown, p->err);
}

const char *pgc_errmsg(struct db_pg *p) { return p->err; }
int pgc_readonly(struct db_pg *p) { return p->readonly; }
int pgc_unavailable(struct db_pg *p) { return p->lost || PQstatus(p->c) != CONNECTION_OK; }

/* Runs constant SQL without parameters; 0 when it succeeded (no rows or
 * rows, both fine), -1 with the failure recorded. */
static int run(struct db_pg *p, const char *sql, const char *what)
{
    PGresult *r = PQexec(p->c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        pgc_fail(p, what, r);
    PQclear(r);
    return ok ? 0 : -1;
}

int pgc_exec(struct db_pg *p, const char *sql) { return run(p, sql, "statement failed"); }

/* ---- migrations ---- */

int pgc_latest_version(void)
{
    int v = 0;
    for (int i = 0; i < parley_pg_migrations_count; i++)
        if (parley_pg_migrations[i].version > v)
            v = parley_pg_migrations[i].version;
    return v;
}

static int read_version(struct db_pg *p)
{
    PGresult *r = PQexec(p->c, "SELECT coalesce(max(version), 0) FROM parley_schema");
    int v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = atoi(PQgetvalue(r, 0, 0));
    else
        pgc_fail(p, "cannot read schema version", r);
    PQclear(r);
    return v;
}

int pgc_schema_version(struct db_pg *p) { return read_version(p); }

/* Each migration in its own transaction, under a transaction-level advisory
 * lock, re-reading the version first: processes opening a new database at
 * once apply each migration once. */
static int migrate(struct db_pg *p, char *err, size_t errlen)
{
    int latest = pgc_latest_version();
    for (int i = -1; i < parley_pg_migrations_count; i++) {
        const struct migration *m = i >= 0 ? &parley_pg_migrations[i] : NULL;
        if (run(p, "BEGIN", "BEGIN") < 0 ||
            run(p, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", "migration lock") < 0 ||
            run(p, "CREATE TABLE IF NOT EXISTS parley_schema ("
                   " version integer PRIMARY KEY,"
                   " applied_at timestamptz NOT NULL DEFAULT now())", "schema table") < 0)
            goto failed;
        int v = read_version(p);
        if (v < 0)
            goto failed;
        if (v > latest) {
            run(p, "ROLLBACK", "ROLLBACK");
            return set_err(err, errlen,
                           "%s: database schema version %d is newer than this Parley "
                           "understands (%d); upgrade Parley or use another PARLEY_DB",
                           p->shown, v, latest);
        }
        if (m && m->version > v) {
            char what[128];
            snprintf(what, sizeof what, "migration %s failed", m->name);
            char ver[16];
            snprintf(ver, sizeof ver, "%d", m->version);
            const char *params[1] = { ver };
            if (run(p, m->sql, what) < 0)
                goto failed;
            PGresult *r = PQexecParams(p->c, "INSERT INTO parley_schema(version) VALUES ($1)",
                                       1, NULL, params, NULL, NULL, 0);
            int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            if (!ok)
                pgc_fail(p, what, r);
            PQclear(r);
            if (!ok)
                goto failed;
        }
        if (run(p, "COMMIT", "COMMIT") < 0)
            goto failed;
    }
    return 0;
failed:
    set_err(err, errlen, "%s: %s", p->shown, p->err);
    if (PQtransactionStatus(p->c) != PQTRANS_IDLE)
        run(p, "ROLLBACK", "ROLLBACK");
    return -1;
}

/* ---- open / close ---- */

struct db_pg *pgc_open(const char *conninfo, const char *shown, char *err, size_t errlen)
{
    struct db_pg *p = calloc(1, sizeof *p);
    if (!p || !(p->shown = strdup(shown))) {
        free(p);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    char *redacted = db_pg_redact(conninfo, &p->secret);
    free(redacted);
    /* The string's own settings win over these defaults (expand_dbname:
     * later keywords override earlier ones, the string stands at dbname). */
    /* application_name "<program>/<pid>" (parley.fcgi/1234, parley-ws/99):
     * pg_stat_activity tells which process holds which connection */
    char app[64];
    snprintf(app, sizeof app, "%.40s/%ld", program_invocation_short_name, (long)getpid());
    const char *const keys[] = { "connect_timeout", "application_name", "dbname", NULL };
    const char *const vals[] = { "10", app, conninfo, NULL };
    p->c = PQconnectdbParams(keys, vals, 1);
    if (!p->c) {
        set_err(err, errlen, "%s: cannot connect to PostgreSQL: out of memory", shown);
        pgc_close(p);
        return NULL;
    }
    if (PQstatus(p->c) != CONNECTION_OK) {
        char msg[400];
        scrub(msg, sizeof msg, PQerrorMessage(p->c), p->secret);
        set_err(err, errlen, "%s: cannot connect to PostgreSQL: %s", shown, msg);
        pgc_close(p);
        return NULL;
    }
    if (run(p, "SET client_min_messages = warning", "session setup") < 0) {
        set_err(err, errlen, "%s: %s", shown, p->err);
        pgc_close(p);
        return NULL;
    }
    if (migrate(p, err, errlen) < 0) {
        pgc_close(p);
        return NULL;
    }
    p->err[0] = '\0';
    return p;
}

void pgc_close(struct db_pg *p)
{
    if (!p)
        return;
    if (p->c)
        PQfinish(p->c);      /* an open transaction is rolled back by the server */
    free(p->shown);
    free(p->secret);
    free(p);
}

/* ---- a lost connection (the server restarted, a network cut) ---- */

/* Outside a transaction, a connection libpq found broken, or whose idle
 * session the server ended (it reads the FATAL the server sent before
 * closing), is opened again (PQreset: same parameters, connect_timeout
 * bounds it), so that a restart of PostgreSQL that is over costs no
 * statement; one still going fails the statements that meet it. Inside a
 * transaction nothing is retried: the transaction is lost with the
 * session and its caller sees the failure (db_commit fails; whatever it
 * wrote is not there). 0 connected, -1 still not (p->err says why). */
static int revive(struct db_pg *p)
{
    if (p->in_tx)
        return 0;
    if (PQstatus(p->c) == CONNECTION_OK) {
        /* An idle session has nothing to read unless the server ended it
         * (a restart sends FATAL, then closes): read that now, so the
         * next statement does not meet it. One poll(2) of the socket. */
        struct pollfd pf = { .fd = PQsocket(p->c), .events = POLLIN };
        if (pf.fd < 0 || poll(&pf, 1, 0) <= 0)
            return 0;
        PQconsumeInput(p->c);
        PGnotify *n;
        while ((n = PQnotifies(p->c)))
            PQfreemem(n);
        if (PQstatus(p->c) == CONNECTION_OK)
            return 0;
    }
    PQreset(p->c);
    p->nprep = 0;                /* a new session has no prepared statement */
    if (PQstatus(p->c) != CONNECTION_OK) {
        char msg[400];
        scrub(msg, sizeof msg, PQerrorMessage(p->c), p->secret);
        snprintf(p->err, sizeof p->err, "cannot connect to PostgreSQL: %s", msg);
        return -1;
    }
    fprintf(stderr, "parley: db: %s: connection re-established\n", p->shown);
    return run(p, "SET client_min_messages = warning", "session setup");
}

PGconn *pgc_conn(struct db_pg *p)
{
    revive(p);
    return p->c;
}

/* ---- statements, prepared once per session ---- */

PGresult *pgc_exec_params(struct db_pg *p, const char *sql, int n, const char *const *values,
                          const int *lengths, const int *formats, int result_format)
{
    PGconn *c = pgc_conn(p);
    int i = 0;
    while (i < p->nprep && p->prep[i] != sql)
        i++;
    if (i == PREP_MAX)          /* full: parsed at each call, as PQexecParams does */
        return PQexecParams(c, sql, n, NULL, values, lengths, formats, result_format);
    char name[24];
    snprintf(name, sizeof name, "parley_%d", i);
    if (i == p->nprep) {
        /* Parse once. A failure (a broken session, an aborted transaction)
         * is the statement's failure; nothing is recorded, the next call
         * prepares again. A prepared statement outlives a rollback. */
        PGresult *r = PQprepare(c, name, sql, n, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return r;
        PQclear(r);
        p->prep[p->nprep++] = sql;
    }
    return PQexecPrepared(c, name, n, values, lengths, formats, result_format);
}

/* ---- transactions ---- */

static int savepoint(struct db_pg *p, const char *verb, int level)
{
    if (level < 1 || level > SP_MAX) {
        snprintf(p->err, sizeof p->err, "transactions nested deeper than %d", SP_MAX + 1);
        fprintf(stderr, "parley: db: %s\n", p->err);
        return -1;
    }
    char sql[48];
    snprintf(sql, sizeof sql, "%s n%d", verb, level);
    return run(p, sql, verb);
}

int pgc_begin(struct db_pg *p)
{
    p->readonly = 0;
    p->lost = 0;
    if (p->in_tx) {
        if (savepoint(p, "SAVEPOINT", p->in_tx) < 0)
            return -1;
        p->in_tx++;
        return 0;
    }
    if (revive(p) < 0) {
        fprintf(stderr, "parley: db: %s: %s\n", p->shown, p->err);
        return -1;
    }
    /* A session the server ended while it sat idle (a restart) is found
     * broken only by this first statement: open it again and retry once. */
    if (run(p, "BEGIN", "BEGIN") < 0 &&
        (PQstatus(p->c) == CONNECTION_OK || revive(p) < 0 || run(p, "BEGIN", "BEGIN") < 0))
        return -1;
    p->in_tx = 1;
    return 0;
}

int pgc_commit(struct db_pg *p)
{
    if (p->in_tx > 1) {
        if (savepoint(p, "RELEASE SAVEPOINT", p->in_tx - 1) < 0) {
            pgc_rollback(p);
            return -1;
        }
        p->in_tx--;
        return 0;
    }
    if (p->in_tx == 0) {
        snprintf(p->err, sizeof p->err, "COMMIT without a transaction");
        return -1;
    }
    /* COMMIT of a transaction that failed earlier succeeds as ROLLBACK */
    PGresult *r = PQexec(p->c, "COMMIT");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "COMMIT");
    if (!ok) {
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            snprintf(p->err, sizeof p->err, "COMMIT: the transaction had failed and was rolled back");
            fprintf(stderr, "parley: db: %s: %s\n", p->shown, p->err);
        } else {
            pgc_fail(p, "COMMIT", r);
        }
    }
    PQclear(r);
    p->in_tx = 0;
    if (!ok && PQtransactionStatus(p->c) != PQTRANS_IDLE)
        run(p, "ROLLBACK", "ROLLBACK");
    return ok ? 0 : -1;
}

int pgc_in_tx(const struct db_pg *p)
{
    return p->in_tx;
}

int pgc_rollback(struct db_pg *p)
{
    int readonly = p->readonly, lost = p->lost;
    int rc = 0;
    if (p->in_tx > 1) {
        p->in_tx--;
        rc = savepoint(p, "ROLLBACK TO SAVEPOINT", p->in_tx) |
             savepoint(p, "RELEASE SAVEPOINT", p->in_tx);
    } else {
        p->in_tx = 0;
        if (PQtransactionStatus(p->c) != PQTRANS_IDLE)
            rc = run(p, "ROLLBACK", "ROLLBACK");
    }
    p->readonly = readonly;    /* the kind of the failure that led here */
    p->lost |= lost;
    return rc ? -1 : 0;
}

enum db_health pgc_health(struct db_pg *p)
{
    if (!p || revive(p) < 0)
        return DB_HEALTH_UNAVAILABLE;
    PGresult *r = PQexec(p->c, "SELECT pg_is_in_recovery()");
    enum db_health h = DB_HEALTH_UNAVAILABLE;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        h = PQgetvalue(r, 0, 0)[0] == 't' ? DB_HEALTH_READONLY : DB_HEALTH_OK;
    PQclear(r);
    return h;
}
