/* storage/pg/usage_pg.h — the PostgreSQL bodies of the usage module
 * (storage/pg/usage.c; contracts and return values: usage.h). Included only
 * by core/usage.c, storage/pg/usage.c and unit tests. usage.c checks the
 * arguments (db set, user not NULL, counts and outcome valid) before it
 * dispatches here. Threads: as db.h (the connection's thread only).
 * Tables: sql/pg/006_usage.sql. */
#ifndef PARLEY_PG_USAGE_H
#define PARLEY_PG_USAGE_H
#include <stdint.h>
#include "usage.h"

int usage_pg_charge_tx(parley_db *db, const struct usage_charge *u, const char *user);
/* Rows of usage_daily for user with day in [from, to], newest first, into
 * days (at most max): count or -1. */
int usage_pg_days(parley_db *db, const char *user, int64_t from, int64_t to,
                  struct usage_day *days, int max);
int usage_pg_budget_set(parley_db *db, const char *user, int64_t tokens, int64_t now_ms);
int usage_pg_budget_get(parley_db *db, const char *user, int64_t *tokens);
int usage_pg_totals(parley_db *db, int64_t *prompt_tokens, int64_t *completion_tokens);
#endif
