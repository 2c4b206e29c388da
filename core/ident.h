/* ident.h — who and what a request names, decided once for every front:
 * the Origin allow-list, the ids that may appear in paths, the rate-limit
 * identity of a client, and where a database's doorbell file lives.
 * parley.fcgi, parley-ws and the CLI call these instead of keeping copies
 * (which used to disagree: one trimmed the list, one did not; one cut the
 * user id at 70 bytes, one at 120).
 * Threads: pure functions, no state.
 */
#ifndef PARLEY_IDENT_H
#define PARLEY_IDENT_H
#include <stddef.h>

/* 1 if origin may use the API under allow-list list (PARLEY_ALLOWED_ORIGINS:
 * comma-separated, blanks around entries ignored, a trailing '/' on an
 * entry or on origin ignored, ASCII case-insensitive; "*" allows any).
 * A NULL or empty list allows any origin; a NULL or empty origin (not a
 * browser's cross-site request) is allowed. 0 otherwise. */
int ident_origin_allowed(const char *list, const char *origin);

/* 1 if id is 1..max_len bytes of ASCII letters, digits, '-', '_' or '.'
 * (safe in paths, channel names and logs), 0 otherwise (NULL too). */
int ident_name_valid(const char *id, size_t max_len);
/* 1 if id is a valid ticket id: ident_name_valid(id, 64). */
int ident_ticket_id_valid(const char *id);
/* The error message for an invalid ticket id (static storage). */
#define IDENT_TICKET_ID_RULE "use 1-64 letters, digits, '-', '_' or '.'"

/* Tickets scoped to a tenant (PARLEY_TENANT_CLAIM, docs/tenants.md): a
 * tenant's scope is the first IDENT_SCOPE_LEN hex digits of SHA-256(tenant),
 * and its ticket <id> is stored as "<id>~<scope>" (channel, tickets row,
 * answer cache key), which no client's id can be, since '~' is not allowed
 * in ticket ids. Only core and the fronts' ticket handlers use the stored
 * form; every frame and body shows the client's id. */
#define IDENT_SCOPE_LEN 16
/* Longest stored ticket id, NUL included: 64 + '~' + 16 + 1. */
#define IDENT_TICKET_STORED_MAX 82
/* The scope of tenant into out (IDENT_SCOPE_LEN + 1 bytes): "" when tenant
 * is NULL or "" (no tenant). */
void ident_tenant_scope(const char *tenant, char *out);
/* 1 when s is a scope: "" or IDENT_SCOPE_LEN lower-case hex digits. */
int ident_scope_valid(const char *s);
/* The stored id of ticket id in scope ("" or NULL: id itself) into out
 * (IDENT_TICKET_STORED_MAX bytes is always enough for a valid id).
 * Returns out, or NULL when it does not fit. */
char *ident_ticket_stored(char *out, size_t outlen, const char *id, const char *scope);

/* Longest rate-limit identity, NUL included. */
#define IDENT_PEER_MAX 128
/* The rate-limit identity of a client, the same on every transport:
 * "user:<sub>" when user is a non-empty JWT subject (a subject longer than
 * 100 bytes becomes "user:sha256:<hex of the whole subject>", so two users
 * never share a bucket), else "ip:<addr>" (also for an anonymous
 * visitor, user "anon:...": visitors are limited per client address) (addr cut to 100 bytes; "ip:?"
 * when addr is NULL or empty). out must hold IDENT_PEER_MAX bytes.
 * Returns out. */
char *ident_peer(char *out, size_t outlen, const char *user, const char *addr);

/* The doorbell file of the SQLite database at db_path: "<db_path>-bell",
 * into out (bell_open_db opens it; a PostgreSQL PARLEY_DB has no doorbell
 * file: its doorbell listens, bell.h). Returns 0, or -1 when it does not
 * fit (out is then ""). */
int ident_bell_path(const char *db_path, char *out, size_t outlen);
#endif
