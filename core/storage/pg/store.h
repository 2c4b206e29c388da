/* storage/pg/store.h — the PostgreSQL bodies of store.h and stats.h
 * (storage/pg/store.c, storage/pg/stats.c; issue 10).
 *
 * Included only by core/store.c and core/stats.c, which dispatch here when
 * db_pg_conn(db) is not NULL, and by unit tests. Each function has the
 * contract, return values, ownership and threading of the store.h /
 * stats.h function of the same name without "_pg" (the connection's thread
 * only). Functions with no SQL of their own (store_msg_add, the free
 * functions, the answer keys) have no body here: they are the same code on
 * both backends.
 *
 * READ COMMITTED lets two nodes' statements interleave; every decision
 * that reads and then writes is one statement resting on a key or a row
 * lock (docs/postgres.md, "store"): conversation creation and ticket and
 * answer puts on the primary key (INSERT ... ON CONFLICT), reactions and
 * the conversation's updated_at in one UPDATE that PostgreSQL re-evaluates
 * on the newest row version after waiting for its lock.
 */
#ifndef PARLEY_STORAGE_PG_STORE_H
#define PARLEY_STORAGE_PG_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"
/* core/store.h and core/stats.h: a plain "store.h" would name this file */
#include "../../store.h"
#include "../../stats.h"

int store_pg_ticket_put(parley_db *db, const char *id, const char *body);
int store_pg_ticket_get(parley_db *db, const char *id, char **body);

int store_pg_conv_create(parley_db *db, struct conversation *c);
int store_pg_conv_get(parley_db *db, const char *id, const char *owner, struct conversation *out);
int store_pg_conv_list(parley_db *db, const char *owner, const char *kind, const char *project,
                       int limit, int offset, struct conversation **out, int *n, int64_t *total);
int store_pg_conv_touch(parley_db *db, const char *id, const char *metadata);
int store_pg_conv_set_status(parley_db *db, const char *id, const char *owner, const char *status);
int store_pg_conv_delete(parley_db *db, const char *id, const char *owner);

/* m->id and m->created_at are already set (store.c fills them). */
int store_pg_msg_add_tx(parley_db *db, struct message *m);
int store_pg_msg_list(parley_db *db, const char *conv_id, int limit, int offset,
                      struct message **out, int *n, int64_t *total);
int store_pg_msg_context(parley_db *db, const char *conv_id, int last,
                         struct message **out, int *n);
int store_pg_msg_context_for(parley_db *db, const char *conv_id, const char *answering, int last,
                             struct message **out, int *n);
/* first_id and count already reset by store.c (either may be NULL). */
int store_pg_msg_queued(parley_db *db, const char *conv_id, char first_id[64], int64_t *count);
/* helpful and rating already checked (-1..1, 0..5) by store.c. */
int store_pg_msg_react(parley_db *db, const char *owner, const char *conv_id,
                       const char *msg_id, int helpful, int rating);
int store_pg_msg_reaction_get(parley_db *db, const char *conv_id, const char *msg_id,
                              int *helpful, int *rating);

int store_pg_answer_get(parley_db *db, const char *key, char **response, int64_t *tokens,
                        char **model);
int store_pg_answer_put_tx(parley_db *db, const struct answer *a);
int store_pg_answer_delete_ticket(parley_db *db, const char *ticket_id);
int store_pg_answer_ticket_exists(parley_db *db, const char *ticket_id, char **response);
int store_pg_answer_peek(parley_db *db, const char *ticket_id, store_text_fn fn, void *ud,
                         int *fn_rc);

/* stats.h (storage/pg/stats.c) */
int stats_pg_collect(parley_db *db, int64_t since, struct parley_stats *out);
int64_t stats_pg_jobs_running(parley_db *db);
#endif
