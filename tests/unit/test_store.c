/* test_store.c — tickets, conversations (owner isolation), messages
 * (pagination, context window, reactions), answer cache keys, stats.
 *
 * The cases (run_cases) run on SQLite and again on PostgreSQL when
 * PARLEY_TEST_PG holds a URI (tests/integration/t0730-pg-store.sh, with
 *), with ids and owners of their own (pfx) so a
 * database used before does not disturb them. Among them, threads with a
 * connection each hit one key at once, inside transactions held open long
 * enough to overlap on PostgreSQL: one conversation creator wins, ticket
 * and answer puts never fail and leave one whole row, two reactions to one
 * message both stay, messages from many writers are all kept and the
 * conversation's updated_at never goes back. */
#include "th.h"
#include "db.h"
#include "storage/pg/pg.h"
#include "evlog.h"
#include "jobs.h"
#include "stats.h"
#include "store.h"
#include "util.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

static parley_db *db;
static const char *target;       /* what open_db opens: a SQLite path or the PostgreSQL URI */
static char pfx[64];             /* prefix of ids and owners: "" on SQLite */

/* name with this run's prefix, in buf */
#define ID(buf, name) char buf[128]; snprintf(buf, sizeof buf, "%s%s", pfx, name)

#define THREADS 8

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static parley_db *open_db(void)
{
    char err[512];
    parley_db *d = db_open(target, err, sizeof err);
    if (!d)
        printf("# db_open: %s\n", err);
    return d;
}

TEST(tickets)
{
    char *body;
    ID(t42, "42");
    CHECK_INT(store_ticket_get(db, t42, &body), 1);
    CHECK_INT(store_ticket_put(db, t42, "printer on fire"), 0);
    REQUIRE(store_ticket_get(db, t42, &body) == 0);
    CHECK_STR(body, "printer on fire");
    free(body);
    CHECK_INT(store_ticket_put(db, t42, "printer on fire"), 0);   /* unchanged */
    CHECK_INT(store_ticket_put(db, t42, "printer still on fire"), 0);
    REQUIRE(store_ticket_get(db, t42, &body) == 0);
    CHECK_STR(body, "printer still on fire");
    free(body);
}

TEST(conversations_belong_to_their_owner)
{
    ID(alice, "alice");
    ID(mallory, "mallory");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, alice);
    c.title = "first";
    REQUIRE(store_conv_create(db, &c) == 0);
    CHECK_INT(strlen(c.id), 36);
    CHECK_STR(c.kind, "chat");
    CHECK_STR(c.status, "active");
    struct conversation dup = c;
    CHECK_INT(store_conv_create(db, &dup), 2);          /* same id again */
    struct conversation got;
    REQUIRE(store_conv_get(db, c.id, alice, &got) == 0);
    CHECK_STR(got.title, "first");
    CHECK_STR(got.settings, "{}");
    store_conv_free(&got);
    CHECK_INT(store_conv_get(db, c.id, mallory, &got), 1);  /* foreign = not found */
    CHECK_INT(store_conv_get(db, "no-such-id", alice, &got), 1);
    CHECK_INT(store_conv_set_status(db, c.id, mallory, "closed"), 1);
    CHECK_INT(store_conv_set_status(db, c.id, alice, "closed"), 0);
    REQUIRE(store_conv_get(db, c.id, NULL, &got) == 0);
    CHECK_STR(got.status, "closed");
    store_conv_free(&got);
    CHECK_INT(store_conv_delete(db, c.id, mallory), 1);
    CHECK_INT(store_conv_delete(db, c.id, alice), 0);
    CHECK_INT(store_conv_get(db, c.id, NULL, &got), 1);
}

TEST(listing_and_pagination)
{
    ID(bob, "bob");
    ID(nobody, "nobody");
    for (int i = 0; i < 5; i++) {
        struct conversation c;
        memset(&c, 0, sizeof c);
        str_copy(c.owner, sizeof c.owner, bob);
        str_copy(c.kind, sizeof c.kind, i < 3 ? "chat" : "sse");
        REQUIRE(store_conv_create(db, &c) == 0);
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
    }
    struct conversation *v;
    int n;
    int64_t total;
    REQUIRE(store_conv_list(db, bob, NULL, 2, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 5);
    CHECK_INT(n, 2);
    if (n == 2)
        CHECK(v[0].updated_at >= v[1].updated_at);     /* newest first */
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, bob, NULL, 10, 4, &v, &n, &total) == 0);
    CHECK_INT(n, 1);
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, bob, "sse", 10, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 2);
    CHECK_INT(n, 2);
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, nobody, NULL, 10, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 0);
    CHECK_INT(n, 0);
    store_convs_free(v, n);
}

TEST(messages_context_and_reactions)
{
    ID(carol, "carol");
    ID(mallory, "mallory");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, carol);
    REQUIRE(store_conv_create(db, &c) == 0);
    char first_id[64] = "";
    for (int i = 0; i < 14; i++) {
        struct message m;
        store_msg_init(&m);
        str_copy(m.conversation_id, sizeof m.conversation_id, c.id);
        str_copy(m.role, sizeof m.role, i % 2 ? "assistant" : "user");
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        m.content = text;
        if (i % 2) {
            m.tokens = 7;
            m.model = "fake";
        }
        REQUIRE(store_msg_add(db, &m) == 0);
        if (i == 1)
            str_copy(first_id, sizeof first_id, m.id);
    }
    struct message *v;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(db, c.id, 5, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 14);
    CHECK_INT(n, 5);
    if (n == 5) {
        CHECK_STR(v[0].content, "m0");
        CHECK_STR(v[4].content, "m4");
        CHECK_INT(v[0].tokens, -1);
        CHECK_INT(v[1].tokens, 7);
        CHECK_STR(v[1].model, "fake");
        CHECK(v[0].model == NULL);
    }
    store_msgs_free(v, n);
    /* context: the last 10, oldest first (messages added within one ms keep order) */
    REQUIRE(store_msg_context(db, c.id, 10, &v, &n) == 0);
    CHECK_INT(n, 10);
    if (n == 10) {
        CHECK_STR(v[0].content, "m4");
        CHECK_STR(v[9].content, "m13");
    }
    store_msgs_free(v, n);
    CHECK_INT(store_msg_react(db, carol, c.id, first_id, 1, 5), 0);
    CHECK_INT(store_msg_react(db, mallory, c.id, first_id, 0, 1), 1);
    CHECK_INT(store_msg_react(db, carol, c.id, "nope", 1, 5), 1);
    CHECK_INT(store_msg_react(db, carol, c.id, first_id, 1, 6), -1);   /* out of range */
    CHECK_INT(store_msg_react(db, carol, c.id, first_id, -1, 3), 0);   /* rating only */
    REQUIRE(store_msg_list(db, c.id, 1, 1, &v, &n, &total) == 0);
    REQUIRE(n == 1);
    CHECK_INT(v[0].helpful, 1);
    CHECK_INT(v[0].rating, 3);
    store_msgs_free(v, n);
    /* the reactions read back by id (what the REST answer shows) */
    int helpful = 9, rating = 9;
    CHECK_INT(store_msg_reaction_get(db, c.id, first_id, &helpful, &rating), STORE_OK);
    CHECK_INT(helpful, 1);
    CHECK_INT(rating, 3);
    CHECK_INT(store_msg_reaction_get(db, c.id, "nope", &helpful, &rating), STORE_NOT_FOUND);
    CHECK_INT(store_msg_reaction_get(db, "other-conv", first_id, &helpful, &rating),
              STORE_NOT_FOUND);
    /* deleting the conversation deletes its messages */
    REQUIRE(store_conv_delete(db, c.id, carol) == 0);
    REQUIRE(store_msg_list(db, c.id, 5, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 0);
    store_msgs_free(v, n);
}

TEST(answer_cache)
{
    ID(t123, "123");
    char want[160];
    snprintf(want, sizeof want, "ticket:%s:", t123);
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, t123, "my body", hash);
    CHECK(strncmp(a.key, want, strlen(want)) == 0);
    CHECK_INT(strlen(hash), 64);
    char *resp, *model;
    int64_t tokens;
    CHECK_INT(store_answer_get(db, a.key, &resp, &tokens, &model), 1);
    CHECK_INT(store_answer_ticket_exists(db, t123, NULL), 0);
    a.response = "the answer";
    a.model = "llama";
    a.tokens = 3;
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &a) == 0);
    REQUIRE(db_commit(db) == 0);
    REQUIRE(store_answer_get(db, a.key, &resp, &tokens, &model) == 0);
    CHECK_STR(resp, "the answer");
    CHECK_STR(model, "llama");
    CHECK_INT(tokens, 3);
    free(resp);
    free(model);
    CHECK_INT(store_answer_ticket_exists(db, t123, &resp), 1);
    CHECK_STR(resp, "the answer");
    free(resp);
    /* another body is another key */
    struct answer b;
    char hash2[65];
    answer_key_ticket(&b, t123, "my body!", hash2);
    CHECK(strcmp(a.key, b.key) != 0);
    CHECK_INT(store_answer_delete_ticket(db, t123), 1);
    CHECK_INT(store_answer_ticket_exists(db, t123, NULL), 0);
    /* query keys: normalised text, model and temperature all count */
    struct answer q1, q2, q3, q4;
    char *n1 = answer_key_query(&q1, "  What IS   the\tweather? ", "gpt-4", 0.7);
    char *n2 = answer_key_query(&q2, "what is the weather?", "gpt-4", 0.7);
    char *n3 = answer_key_query(&q3, "what is the weather?", "gpt-4", 0.6);
    char *n4 = answer_key_query(&q4, "what is the weather?", "llama", 0.7);
    CHECK_STR(n1, "what is the weather?");
    CHECK_STR(q1.key, q2.key);
    CHECK(strcmp(q2.key, q3.key) != 0);
    CHECK(strcmp(q2.key, q4.key) != 0);
    free(n1);
    free(n2);
    free(n3);
    free(n4);
}

/* The names of the result codes keep their numbers (callers compared
 * numbers before the names existed). */
TEST(result_codes_are_named)
{
    CHECK_INT(STORE_ERR, -1);
    CHECK_INT(STORE_OK, 0);
    CHECK_INT(STORE_NOT_FOUND, 1);
    CHECK_INT(STORE_EXISTS, 2);
    ID(dave, "dave");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, dave);
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    struct conversation dup;
    memset(&dup, 0, sizeof dup);
    str_copy(dup.id, sizeof dup.id, c.id);
    str_copy(dup.owner, sizeof dup.owner, dave);
    CHECK_INT(store_conv_create(db, &dup), STORE_EXISTS);
    CHECK_INT(store_conv_delete(db, c.id, dave), STORE_OK);
    CHECK_INT(store_conv_delete(db, c.id, dave), STORE_NOT_FOUND);
}

struct peeked { int calls; char text[64]; size_t len; };

static int peek_cb(void *ud, const char *text, size_t len)
{
    struct peeked *p = ud;
    p->calls++;
    p->len = len;
    snprintf(p->text, sizeof p->text, "%.*s", (int)len, text);
    return 42;
}

/* store_answer_peek hands the newest answer's text in place, once, and the
 * callback's return value back; nothing when there is none. */
TEST(answer_peek)
{
    ID(peek1, "peek-1");
    ID(peek2, "peek-2");
    struct peeked p = { 0 };
    int fn_rc = -7;
    CHECK_INT(store_answer_peek(db, peek1, peek_cb, &p, &fn_rc), STORE_NOT_FOUND);
    CHECK_INT(p.calls, 0);
    CHECK_INT(fn_rc, -7);
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, peek1, "body one", hash);
    a.response = "first answer";
    a.model = "m";
    a.tokens = 2;
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &a) == 0);
    REQUIRE(db_commit(db) == 0);
    CHECK_INT(store_answer_peek(db, peek1, peek_cb, &p, &fn_rc), STORE_OK);
    CHECK_INT(p.calls, 1);
    CHECK_INT(fn_rc, 42);
    CHECK_STR(p.text, "first answer");
    CHECK_INT(p.len, strlen("first answer"));
    /* an empty answer is an answer (len 0), and NULL fn_rc is allowed */
    struct answer e;
    char hash2[65];
    answer_key_ticket(&e, peek2, "body two", hash2);
    e.response = "";
    e.model = "m";
    e.tokens = 0;
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &e) == 0);
    REQUIRE(db_commit(db) == 0);
    memset(&p, 0, sizeof p);
    CHECK_INT(store_answer_peek(db, peek2, peek_cb, &p, NULL), STORE_OK);
    CHECK_INT(p.calls, 1);
    CHECK_INT(p.len, 0);
    /* the statement is released: a write right after it works */
    CHECK_INT(store_answer_delete_ticket(db, peek1), 1);
    memset(&p, 0, sizeof p);
    CHECK_INT(store_answer_peek(db, peek1, peek_cb, &p, NULL), STORE_NOT_FOUND);
    CHECK_INT(p.calls, 0);
}

/* ---- many connections on one key at once ----
 * Each thread opens its own connection, waits at a barrier, then does its
 * write inside a transaction it keeps open for HOLD_MS, so on PostgreSQL
 * the writers really overlap (the later ones wait on the first one's row
 * or key) instead of happening to run one after another. On SQLite
 * BEGIN IMMEDIATE runs them one at a time. */
#define HOLD_MS 30

enum op { OP_CONV, OP_TICKET, OP_ANSWER, OP_REACT_HELPFUL, OP_REACT_RATING, OP_MSGS };

struct racer {
    enum op op;
    int idx;
    const char *key;            /* conversation id, ticket id, answer's ticket id */
    const char *conv;           /* OP_REACT_*, OP_MSGS */
    const char *msg;            /* OP_REACT_* */
    int value;                  /* OP_REACT_*: helpful or rating; OP_MSGS: how many */
    pthread_barrier_t *start;
    int rc;                     /* what the store call returned (-9: no connection) */
    int errors;                 /* OP_MSGS: failed adds */
    char owner[128];
};

static int held_tx(parley_db *d, struct racer *a)
{
    if (db_begin(d) < 0)
        return -8;
    int rc = -7;
    if (a->op == OP_CONV) {
        struct conversation c;
        memset(&c, 0, sizeof c);
        str_copy(c.id, sizeof c.id, a->key);
        str_copy(c.owner, sizeof c.owner, a->owner);
        rc = store_conv_create(d, &c);
    } else if (a->op == OP_TICKET) {
        char body[64];
        snprintf(body, sizeof body, "body from %d", a->idx);
        rc = store_ticket_put(d, a->key, body);
    } else if (a->op == OP_ANSWER) {
        struct answer an;
        char hash[65], text[64];
        answer_key_ticket(&an, a->key, "one body", hash);
        snprintf(text, sizeof text, "answer from %d", a->idx);
        an.response = text;
        an.model = "m";
        an.tokens = a->idx;
        rc = store_answer_put_tx(d, &an);
    } else if (a->op == OP_REACT_HELPFUL) {
        rc = store_msg_react(d, NULL, a->conv, a->msg, a->value, 0);
    } else if (a->op == OP_REACT_RATING) {
        rc = store_msg_react(d, NULL, a->conv, a->msg, -1, a->value);
    }
    sleep_ms(HOLD_MS);
    if (rc < 0) {
        db_rollback(d);
        return rc;
    }
    return db_commit(d) < 0 ? -6 : rc;
}

static void *racer_run(void *p)
{
    struct racer *a = p;
    parley_db *d = open_db();
    pthread_barrier_wait(a->start);         /* every connection open: go */
    if (!d) {
        a->rc = -9;
        return NULL;
    }
    if (a->op == OP_MSGS) {
        a->rc = 0;
        for (int i = 0; i < a->value; i++) {
            struct message m;
            store_msg_init(&m);
            str_copy(m.conversation_id, sizeof m.conversation_id, a->conv);
            str_copy(m.role, sizeof m.role, "user");
            char text[32];
            snprintf(text, sizeof text, "t%d-%d", a->idx, i);
            m.content = text;
            if (store_msg_add(d, &m) != STORE_OK)
                a->errors++;
        }
    } else {
        a->rc = held_tx(d, a);
    }
    db_close(d);
    return NULL;
}

/* Runs n racers at once (args prepared by the caller but for start). */
static void race(struct racer *args, int n)
{
    pthread_t th[THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int t = 0; t < n; t++) {
        args[t].start = &start;
        args[t].rc = -10;
        if (pthread_create(&th[t], NULL, racer_run, &args[t]) != 0)
            abort();
    }
    for (int t = 0; t < n; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
}

/* THREADS connections create one conversation id at once (5 rounds):
 * exactly one STORE_OK, the others STORE_EXISTS, no error, and the stored
 * conversation is the winner's (its owner), not overwritten by a later
 * creator. */
TEST(concurrent_conv_create_one_winner)
{
    for (int round = 0; round < 5; round++) {
        char id[64];
        snprintf(id, sizeof id, "%.40sconc-conv-%d", pfx, round);
        struct racer args[THREADS];
        memset(args, 0, sizeof args);
        for (int t = 0; t < THREADS; t++) {
            args[t].op = OP_CONV;
            args[t].idx = t;
            args[t].key = id;
            snprintf(args[t].owner, sizeof args[t].owner, "%sowner-%d", pfx, t);
        }
        race(args, THREADS);
        int ok = 0, exists = 0, winner = -1;
        for (int t = 0; t < THREADS; t++) {
            if (args[t].rc == STORE_OK) {
                ok++;
                winner = t;
            } else if (args[t].rc == STORE_EXISTS) {
                exists++;
            } else {
                printf("# round %d thread %d: store_conv_create gave %d\n", round, t, args[t].rc);
            }
        }
        CHECK_INT(ok, 1);
        CHECK_INT(exists, THREADS - 1);
        struct conversation got;
        REQUIRE(store_conv_get(db, id, NULL, &got) == STORE_OK);
        if (winner >= 0)
            CHECK_STR(got.owner, args[winner].owner);
        store_conv_free(&got);
    }
}

/* THREADS connections put one new ticket id at once, each with its own
 * body: every put succeeds (none fails on the key), and the ticket holds
 * one of the bodies whole. */
TEST(concurrent_ticket_puts)
{
    ID(tid, "conc-ticket");
    struct racer args[THREADS];
    memset(args, 0, sizeof args);
    for (int t = 0; t < THREADS; t++) {
        args[t].op = OP_TICKET;
        args[t].idx = t;
        args[t].key = tid;
    }
    race(args, THREADS);
    int ok = 0;
    for (int t = 0; t < THREADS; t++) {
        ok += args[t].rc == STORE_OK;
        if (args[t].rc != STORE_OK)
            printf("# thread %d: store_ticket_put gave %d\n", t, args[t].rc);
    }
    CHECK_INT(ok, THREADS);
    char *body = NULL;
    REQUIRE(store_ticket_get(db, tid, &body) == STORE_OK);
    int from = -1;
    CHECK(sscanf(body, "body from %d", &from) == 1 && from >= 0 && from < THREADS);
    free(body);
}

/* THREADS connections cache an answer under one key at once (the runner's
 * final transaction, on several nodes): every put succeeds, one row is
 * left, and it is one writer's whole row (its response and its tokens). */
TEST(concurrent_answer_puts)
{
    ID(tid, "conc-answer");
    struct racer args[THREADS];
    memset(args, 0, sizeof args);
    for (int t = 0; t < THREADS; t++) {
        args[t].op = OP_ANSWER;
        args[t].idx = t;
        args[t].key = tid;
    }
    race(args, THREADS);
    int ok = 0;
    for (int t = 0; t < THREADS; t++) {
        ok += args[t].rc == STORE_OK;
        if (args[t].rc != STORE_OK)
            printf("# thread %d: store_answer_put_tx gave %d\n", t, args[t].rc);
    }
    CHECK_INT(ok, THREADS);
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, tid, "one body", hash);
    char *resp = NULL, *model = NULL;
    int64_t tokens = -2;
    REQUIRE(store_answer_get(db, a.key, &resp, &tokens, &model) == STORE_OK);
    int from = -1;
    CHECK(sscanf(resp, "answer from %d", &from) == 1);
    CHECK_INT(tokens, from);
    CHECK_STR(model, "m");
    free(resp);
    free(model);
    CHECK_INT(store_answer_delete_ticket(db, tid), 1);     /* one row */
}

/* Two connections react to one message at once, one setting helpful, the
 * other the rating (10 rounds, new values each round): both reactions are
 * kept, neither overwrites the other's with the value it saw before. */
TEST(concurrent_reactions_both_kept)
{
    ID(owner, "erin");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, owner);
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    struct message m;
    store_msg_init(&m);
    str_copy(m.conversation_id, sizeof m.conversation_id, c.id);
    str_copy(m.role, sizeof m.role, "assistant");
    m.content = "an answer";
    REQUIRE(store_msg_add(db, &m) == STORE_OK);
    for (int round = 0; round < 10; round++) {
        struct racer args[2];
        memset(args, 0, sizeof args);
        args[0].op = OP_REACT_HELPFUL;
        args[0].value = round % 2;
        args[1].op = OP_REACT_RATING;
        args[1].value = 1 + round % 5;
        for (int t = 0; t < 2; t++) {
            args[t].conv = c.id;
            args[t].msg = m.id;
        }
        race(args, 2);
        CHECK_INT(args[0].rc, STORE_OK);
        CHECK_INT(args[1].rc, STORE_OK);
        int helpful = -5, rating = -5;
        REQUIRE(store_msg_reaction_get(db, c.id, m.id, &helpful, &rating) == STORE_OK);
        if (helpful != round % 2 || rating != 1 + round % 5)
            printf("# round %d: helpful %d rating %d\n", round, helpful, rating);
        CHECK_INT(helpful, round % 2);
        CHECK_INT(rating, 1 + round % 5);
    }
    CHECK_INT(store_conv_delete(db, c.id, owner), STORE_OK);
}

/* THREADS connections add 10 messages each to one conversation at once:
 * every add succeeds, all are kept with distinct ids, and the
 * conversation's updated_at is the newest message's created_at. A message
 * whose created_at is older than the conversation's activity (its
 * transaction began before a newer message's committed) does not move
 * updated_at back. */
TEST(concurrent_messages_one_conversation)
{
    ID(owner, "frank");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, owner);
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    struct racer args[THREADS];
    memset(args, 0, sizeof args);
    for (int t = 0; t < THREADS; t++) {
        args[t].op = OP_MSGS;
        args[t].idx = t;
        args[t].conv = c.id;
        args[t].value = 10;
    }
    race(args, THREADS);
    int errors = 0;
    for (int t = 0; t < THREADS; t++)
        errors += args[t].errors + (args[t].rc != 0);
    CHECK_INT(errors, 0);
    struct message *v;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(db, c.id, 1000, 0, &v, &n, &total) == STORE_OK);
    CHECK_INT(total, THREADS * 10);
    CHECK_INT(n, THREADS * 10);
    int64_t newest = 0;
    int dup = 0, disorder = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].created_at > newest)
            newest = v[i].created_at;
        if (i && v[i].created_at < v[i - 1].created_at)
            disorder++;
        for (int k = 0; k < i; k++)
            dup += !strcmp(v[i].id, v[k].id);
    }
    CHECK_INT(dup, 0);
    CHECK_INT(disorder, 0);
    store_msgs_free(v, n);
    struct conversation got;
    REQUIRE(store_conv_get(db, c.id, owner, &got) == STORE_OK);
    CHECK_INT(got.updated_at, newest);
    CHECK_INT(got.message_count, THREADS * 10);
    store_conv_free(&got);
    /* a late commit of an older message keeps the newer activity */
    struct message old;
    store_msg_init(&old);
    str_copy(old.conversation_id, sizeof old.conversation_id, c.id);
    str_copy(old.role, sizeof old.role, "user");
    old.content = "written before the others, committed after";
    old.created_at = newest - 60000;
    REQUIRE(store_msg_add(db, &old) == STORE_OK);
    REQUIRE(store_conv_get(db, c.id, owner, &got) == STORE_OK);
    CHECK_INT(got.updated_at, newest);
    store_conv_free(&got);
    CHECK_INT(store_conv_delete(db, c.id, owner), STORE_OK);
    REQUIRE(store_msg_list(db, c.id, 10, 0, &v, &n, &total) == STORE_OK);
    CHECK_INT(total, 0);                   /* the messages went with it */
    store_msgs_free(v, n);
}

/* Messages added within one millisecond keep their order (the tie-break
 * is the insertion order) in the list and the context window. */
TEST(messages_same_millisecond_keep_order)
{
    ID(owner, "gina");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, owner);
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    int64_t t0 = now_ms();
    for (int i = 0; i < 12; i++) {
        struct message m;
        store_msg_init(&m);
        str_copy(m.conversation_id, sizeof m.conversation_id, c.id);
        str_copy(m.role, sizeof m.role, "user");
        char text[16];
        snprintf(text, sizeof text, "s%02d", i);
        m.content = text;
        m.created_at = t0;                 /* one millisecond for all */
        REQUIRE(store_msg_add(db, &m) == STORE_OK);
    }
    struct message *v;
    int n;
    int64_t total;
    REQUIRE(store_msg_list(db, c.id, 20, 0, &v, &n, &total) == STORE_OK);
    CHECK_INT(n, 12);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof want, "s%02d", i);
        bad += strcmp(v[i].content, want) != 0;
    }
    CHECK_INT(bad, 0);
    store_msgs_free(v, n);
    REQUIRE(store_msg_context(db, c.id, 5, &v, &n) == STORE_OK);
    CHECK_INT(n, 5);
    if (n == 5) {
        CHECK_STR(v[0].content, "s07");
        CHECK_STR(v[4].content, "s11");
    }
    store_msgs_free(v, n);
    CHECK_INT(store_conv_delete(db, c.id, owner), STORE_OK);
}

/* stats_collect / stats_jobs_running count what the tables hold: deltas
 * (another run's rows may be in the database) after a conversation, a
 * cached answer, a running job and its "done" event. */
TEST(stats_counts)
{
    struct parley_stats before, after;
    /* an hour back: the window holds this case's event even if the clock
     * steps a little; other done events in it are counted in before too */
    int64_t since = now_ms() - 3600 * 1000;
    REQUIRE(stats_collect(db, since, &before) == 0);
    CHECK(before.conversations >= 0);
    CHECK(before.answers_cached >= 0);
    /* poll_sessions is the long-poll module's table: -1 only on a
     * PostgreSQL database without it */
    if (before.poll_sessions < 0 && pfx[0]) {
        PGresult *r = PQexec(db_pg_conn(db), "SELECT to_regclass('poll_sessions') IS NULL");
        CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "t"));
        PQclear(r);
    } else {
        CHECK(before.poll_sessions >= 0);
    }
    int64_t running0 = stats_jobs_running(db);
    CHECK(running0 >= 0);
    ID(owner, "hank");
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, owner);
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    ID(tid, "stats-ticket");
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, tid, "b", hash);
    a.response = "r";
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &a) == STORE_OK);
    REQUIRE(db_commit(db) == 0);
    ID(chan, "stats:chan");
    struct job_claim job;
    char err[256];
    REQUIRE(jobs_claim(db, NULL, chan, "k", 5000, &job, err, sizeof err) == 0);
    CHECK_INT(stats_jobs_running(db), running0 + 1);
    static const char done[] = "{\"first_token_ms\":10,\"processing_ms\":30,\"tokens\":3}";
    REQUIRE(db_begin(db) == 0);
    REQUIRE(evlog_append_tx(db, chan, job.job_id, "done", done, strlen(done)) > 0);
    REQUIRE(jobs_finish_tx(db, job.job_id, NULL) == 0);
    REQUIRE(db_commit(db) == 0);
    REQUIRE(stats_collect(db, since, &after) == 0);
    CHECK_INT(after.conversations, before.conversations + 1);
    CHECK_INT(after.answers_cached, before.answers_cached + 1);
    CHECK_INT(after.jobs_running, running0);
    CHECK_INT(after.jobs_done, before.jobs_done + 1);
    CHECK_INT(after.jobs_failed, before.jobs_failed);
    CHECK_INT(after.recent_done, before.recent_done + 1);
    /* the means moved by exactly this event's 10 and 30 ms */
    double ft = after.recent_first_token_ms * (double)after.recent_done -
                before.recent_first_token_ms * (double)before.recent_done;
    double gen = after.recent_generation_ms * (double)after.recent_done -
                 before.recent_generation_ms * (double)before.recent_done;
    if (ft < 9.9 || ft > 10.1 || gen < 29.9 || gen > 30.1)
        printf("# first token sum moved by %.3f, generation by %.3f\n", ft, gen);
    CHECK(ft > 9.9 && ft < 10.1);
    CHECK(gen > 29.9 && gen < 30.1);
    CHECK_INT(after.poll_sessions, before.poll_sessions);
    CHECK_INT(stats_jobs_running(db), running0);
    CHECK_INT(store_answer_delete_ticket(db, tid), 1);
    CHECK_INT(store_conv_delete(db, c.id, owner), STORE_OK);
}

static int run_cases(void)
{
    db = open_db();
    if (!db)
        return -1;
    RUN(tickets);
    RUN(conversations_belong_to_their_owner);
    RUN(listing_and_pagination);
    RUN(messages_context_and_reactions);
    RUN(answer_cache);
    RUN(result_codes_are_named);
    RUN(answer_peek);
    RUN(concurrent_conv_create_one_winner);
    RUN(concurrent_ticket_puts);
    RUN(concurrent_answer_puts);
    RUN(concurrent_reactions_both_kept);
    RUN(concurrent_messages_one_conversation);
    RUN(messages_same_millisecond_keep_order);
    RUN(stats_counts);
    db_close(db);
    db = NULL;
    return 0;
}

int main(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/store.db", th_tmpdir());
    target = path;
    printf("# backend: SQLite\n");
    if (run_cases() < 0)
        return 1;
    const char *pg = getenv("PARLEY_TEST_PG");
    if (pg && *pg) {
        /* ids and owners of this run only: the database may have been used before */
        target = pg;
        snprintf(pfx, sizeof pfx, "r%ld-%lld:", (long)getpid(), (long long)now_ms());
        printf("# backend: PostgreSQL (PARLEY_TEST_PG, ids %s*)\n", pfx);
        if (run_cases() < 0)
            return 1;
    }
    return th_done();
}
