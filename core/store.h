/* store.h — tickets, conversations, messages and the answer cache.
 *
 * Conversations are one table for every protocol (seed 001 sessions, seed
 * 004 conversations, seed 003 channel sessions, seed 002 brand chats,
 * seed 000 ticket chats), so a chat begun on one transport can be listed,
 * exported or continued on another. Every read of a conversation takes the
 * caller's user: another user's conversation is "not found" (the fronts
 * answer 404). Strings in the structs are new (free with the _free calls).
 * Threads: uses the caller's parley_db. Functions without _tx run their
 * own transaction; _tx ones run inside the caller's.
 * Return values: the named codes of enum store_rc (STORE_OK success or
 * found, STORE_NOT_FOUND, STORE_EXISTS, STORE_ERR a database error: then
 * db_err_kind(db) says which, e.g. PERR_DB_READONLY), unless a function
 * says otherwise. The numbers are part of the contract (callers compared
 * them before the names existed).
 * Backend: SQLite in store.c; another backend implements this header again.
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "db.h"

enum store_rc {
    STORE_ERR = -1,        /* database error (db_err_kind tells which) */
    STORE_OK = 0,          /* done / found */
    STORE_NOT_FOUND = 1,   /* no such row, or it belongs to another owner */
    STORE_EXISTS = 2       /* store_conv_create: the id is taken */
};

/* ---- tickets ---- */
/* Creates the ticket or updates its body. */
int store_ticket_put(parley_db *db, const char *id, const char *body);
/* *body: new string. */
int store_ticket_get(parley_db *db, const char *id, char **body);

/* ---- conversations ---- */
struct conversation {
    char id[64];
    char owner[128];
    char kind[16];         /* chat | ticket | brand | phoenix | sse */
    char *ticket_id;       /* NULL when none */
    char *brand_id;
    char *title;
    char status[16];       /* active | idle | closed */
    char *settings;        /* JSON object text */
    char *metadata;        /* JSON object text */
    char *project_id;      /* seed 001's project_id; NULL when none */
    int64_t created_at, updated_at;
    int64_t last_activity; /* ms of the last connection or client frame (store_conv_touch);
                              0 when never recorded (read: created_at) */
    int64_t message_count; /* filled by get/list */
};
void store_conv_free(struct conversation *c);     /* frees the strings only */
void store_convs_free(struct conversation *c, int n);

/* Inserts c (c->id generated as a UUID when empty; NULL strings default).
 * STORE_OK, STORE_EXISTS when the id is taken, STORE_ERR. */
int store_conv_create(parley_db *db, struct conversation *c);
/* Reads id if it belongs to owner (owner NULL: any owner). 0 / 1 / -1. */
int store_conv_get(parley_db *db, const char *id, const char *owner, struct conversation *out);
/* The owner's conversations, newest activity first, kind NULL = all.
 * *out new array (store_convs_free), *n count, *total all matching. */
int store_conv_list(parley_db *db, const char *owner, const char *kind, int limit, int offset,
                    struct conversation **out, int *n, int64_t *total);
/* store_conv_list of the conversations whose project_id is project
 * (NULL: any, as store_conv_list). */
int store_conv_list_project(parley_db *db, const char *owner, const char *kind,
                            const char *project, int limit, int offset,
                            struct conversation **out, int *n, int64_t *total);
/* A connection or a client frame on conversation id (seed 001's activity):
 * last_activity = now, status back to 'active' unless it is 'closed', and
 * metadata replaced by the given JSON object text when not NULL. One
 * statement. 0 / 1 (no such conversation) / -1. */
int store_conv_touch(parley_db *db, const char *id, const char *metadata);
/* The status a client sees: "closed" and "idle" as stored; a stored
 * "active" reads "idle" when the last activity (or the creation) is older
 * than idle_ms before now (idle_ms <= 0: never). Borrowed constant. */
const char *store_conv_status(const struct conversation *c, int64_t now, int64_t idle_ms);
/* Sets status (active/idle/closed). 0 / 1 / -1. */
int store_conv_set_status(parley_db *db, const char *id, const char *owner, const char *status);
/* Deletes the conversation and its messages. 0 / 1 / -1. */
int store_conv_delete(parley_db *db, const char *id, const char *owner);

/* ---- messages ---- */
struct message {
    char id[64];
    char conversation_id[64];
    char role[16];         /* user | assistant | system */
    char *content;
    int64_t tokens;        /* -1: unknown */
    int64_t processing_ms; /* -1: unknown */
    char *model;           /* NULL when none */
    int helpful;           /* -1 unset, 0, 1 */
    int rating;            /* 0 unset, 1..5 */
    char *metadata;        /* JSON object text */
    int64_t created_at;
    int queued;            /* 1: a user message waiting for its answer (seed 001's
                              queue: jobs_claim_turn takes it); store_msg_add writes it */
};
void store_msg_init(struct message *m);           /* unknown/unset values */
void store_msgs_free(struct message *m, int n);
/* Appends m to its conversation (m->id generated when empty) and touches the
 * conversation's updated_at. */
int store_msg_add(parley_db *db, struct message *m);
int store_msg_add_tx(parley_db *db, struct message *m);
/* Messages oldest first, from offset; *total all of them. */
int store_msg_list(parley_db *db, const char *conv_id, int limit, int offset,
                   struct message **out, int *n, int64_t *total);
/* The last `last` messages, oldest first (the LLM context). */
int store_msg_context(parley_db *db, const char *conv_id, int last,
                      struct message **out, int *n);
/* The context to answer message `answering` (may be NULL: as
 * store_msg_context) of a conversation with queued messages: the last
 * last-1 messages that are not queued, oldest first, then `answering`
 * itself (so neither a later queued question nor an answer stored after
 * it was queued comes after it). */
int store_msg_context_for(parley_db *db, const char *conv_id, const char *answering, int last,
                          struct message **out, int *n);
/* The oldest queued message of a conversation (created_at, rowid) into
 * first_id ("" when none; first_id may be NULL) and how many are queued
 * into *count (may be NULL). 0 / -1. */
int store_msg_queued(parley_db *db, const char *conv_id, char first_id[64], int64_t *count);
/* Sets helpful (-1 leaves it) and rating (0 leaves it) on a message of a
 * conversation that belongs to owner. 0 / 1 / -1. */
int store_msg_react(parley_db *db, const char *owner, const char *conv_id,
                    const char *msg_id, int helpful, int rating);
/* The reactions of message msg_id of conversation conv_id: *helpful -1
 * unset, 0 or 1; *rating 0 unset or 1..5. The caller checked ownership
 * (store_msg_react / store_conv_get). STORE_OK / STORE_NOT_FOUND /
 * STORE_ERR; the outputs are set only with STORE_OK. */
int store_msg_reaction_get(parley_db *db, const char *conv_id, const char *msg_id,
                           int *helpful, int *rating);

/* ---- answer cache ---- */
struct answer {
    char key[160];
    char kind[8];          /* ticket | query */
    const char *ticket_id; /* borrowed in puts; NULL */
    const char *body_hash;
    const char *query_norm;
    const char *model;
    double temperature;    /* < 0: none */
    const char *response;
    int64_t tokens;        /* -1: unknown */
};
/* key = "ticket:<id>:<sha256(body)>"; fills key/kind/ticket_id(borrowed
 * from the argument)/body_hash (points into hash, a caller buffer [65]). */
void answer_key_ticket(struct answer *a, const char *ticket_id, const char *body, char hash[65]);
/* Normalises query (trim, collapse white space, ASCII lower case) into norm
 * (new string, caller frees) and sets key = "query:<sha256(norm|model|temp)>". */
char *answer_key_query(struct answer *a, const char *query, const char *model, double temperature);
/* Looks a key up. *response (new), *tokens and *model (new, may be NULL)
 * are set when found. 0 / 1 / -1. */
int store_answer_get(parley_db *db, const char *key, char **response, int64_t *tokens, char **model);
/* Inserts or replaces the cached answer, inside the caller's transaction. */
int store_answer_put_tx(parley_db *db, const struct answer *a);
/* Deletes every cached answer of a ticket. Returns rows deleted or -1. */
int store_answer_delete_ticket(parley_db *db, const char *ticket_id);
/* 1 if the ticket has any cached answer, 0 if not, -1 error (not the
 * store_rc codes: 1 means found here). *response (new) is the newest. */
int store_answer_ticket_exists(parley_db *db, const char *ticket_id, char **response);
/* Called by store_answer_peek with the answer's text read in place:
 * text[0..len) (also NUL-terminated), borrowed for the call only. It must
 * not use the connection. Its return value is handed back through
 * store_answer_peek's *fn_rc. */
typedef int (*store_text_fn)(void *ud, const char *text, size_t len);
/* Zero-copy read of the ticket's newest cached answer (what
 * store_answer_ticket_exists would copy): calls fn(ud, text, len) once,
 * while the row is held, and stores its return value in *fn_rc.
 * STORE_OK (fn ran), STORE_NOT_FOUND (no answer, fn not called),
 * STORE_ERR (fn not called). Threads: the connection's thread. */
int store_answer_peek(parley_db *db, const char *ticket_id, store_text_fn fn, void *ud,
                      int *fn_rc);
#endif
