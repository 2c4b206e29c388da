/* migrations.h — the sql/NNN_*.sql (SQLite) and sql/pg/NNN_*.sql
 * (PostgreSQL) files compiled in by tools/embed-sql.sh. */
#ifndef PARLEY_MIGRATIONS_H
#define PARLEY_MIGRATIONS_H
struct migration { int version; const char *name; const char *sql; };
extern const struct migration parley_migrations[];
extern const int parley_migrations_count;
extern const struct migration parley_pg_migrations[];
extern const int parley_pg_migrations_count;
#endif
