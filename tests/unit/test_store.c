/* test_store.c — tickets, conversations (owner isolation), messages
 * (pagination, context window, reactions), answer cache keys. */
#include "th.h"
#include "db.h"
#include "store.h"
#include "util.h"

#include <time.h>

static parley_db *db;

TEST(tickets)
{
    char *body;
    CHECK_INT(store_ticket_get(db, "42", &body), 1);
    CHECK_INT(store_ticket_put(db, "42", "printer on fire"), 0);
    REQUIRE(store_ticket_get(db, "42", &body) == 0);
    CHECK_STR(body, "printer on fire");
    free(body);
    CHECK_INT(store_ticket_put(db, "42", "printer still on fire"), 0);
    REQUIRE(store_ticket_get(db, "42", &body) == 0);
    CHECK_STR(body, "printer still on fire");
    free(body);
}

TEST(conversations_belong_to_their_owner)
{
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, "alice");
    c.title = "first";
    REQUIRE(store_conv_create(db, &c) == 0);
    CHECK_INT(strlen(c.id), 36);
    CHECK_STR(c.kind, "chat");
    CHECK_STR(c.status, "active");
    struct conversation dup = c;
    CHECK_INT(store_conv_create(db, &dup), 2);          /* same id again */
    struct conversation got;
    REQUIRE(store_conv_get(db, c.id, "alice", &got) == 0);
    CHECK_STR(got.title, "first");
    CHECK_STR(got.settings, "{}");
    store_conv_free(&got);
    CHECK_INT(store_conv_get(db, c.id, "mallory", &got), 1);  /* foreign = not found */
    CHECK_INT(store_conv_get(db, "no-such-id", "alice", &got), 1);
    CHECK_INT(store_conv_set_status(db, c.id, "mallory", "closed"), 1);
    CHECK_INT(store_conv_set_status(db, c.id, "alice", "closed"), 0);
    REQUIRE(store_conv_get(db, c.id, NULL, &got) == 0);
    CHECK_STR(got.status, "closed");
    store_conv_free(&got);
    CHECK_INT(store_conv_delete(db, c.id, "mallory"), 1);
    CHECK_INT(store_conv_delete(db, c.id, "alice"), 0);
    CHECK_INT(store_conv_get(db, c.id, NULL, &got), 1);
}

TEST(listing_and_pagination)
{
    for (int i = 0; i < 5; i++) {
        struct conversation c;
        memset(&c, 0, sizeof c);
        str_copy(c.owner, sizeof c.owner, "bob");
        str_copy(c.kind, sizeof c.kind, i < 3 ? "chat" : "sse");
        REQUIRE(store_conv_create(db, &c) == 0);
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
    }
    struct conversation *v;
    int n;
    int64_t total;
    REQUIRE(store_conv_list(db, "bob", NULL, 2, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 5);
    CHECK_INT(n, 2);
    if (n == 2)
        CHECK(v[0].updated_at >= v[1].updated_at);     /* newest first */
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, "bob", NULL, 10, 4, &v, &n, &total) == 0);
    CHECK_INT(n, 1);
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, "bob", "sse", 10, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 2);
    CHECK_INT(n, 2);
    store_convs_free(v, n);
    REQUIRE(store_conv_list(db, "nobody", NULL, 10, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 0);
    CHECK_INT(n, 0);
    store_convs_free(v, n);
}

TEST(messages_context_and_reactions)
{
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, "carol");
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
    CHECK_INT(store_msg_react(db, "carol", c.id, first_id, 1, 5), 0);
    CHECK_INT(store_msg_react(db, "mallory", c.id, first_id, 0, 1), 1);
    CHECK_INT(store_msg_react(db, "carol", c.id, "nope", 1, 5), 1);
    CHECK_INT(store_msg_react(db, "carol", c.id, first_id, 1, 6), -1);   /* out of range */
    CHECK_INT(store_msg_react(db, "carol", c.id, first_id, -1, 3), 0);   /* rating only */
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
    REQUIRE(store_conv_delete(db, c.id, "carol") == 0);
    REQUIRE(store_msg_list(db, c.id, 5, 0, &v, &n, &total) == 0);
    CHECK_INT(total, 0);
    store_msgs_free(v, n);
}

TEST(answer_cache)
{
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, "123", "my body", hash);
    CHECK(strncmp(a.key, "ticket:123:", 11) == 0);
    CHECK_INT(strlen(hash), 64);
    char *resp, *model;
    int64_t tokens;
    CHECK_INT(store_answer_get(db, a.key, &resp, &tokens, &model), 1);
    CHECK_INT(store_answer_ticket_exists(db, "123", NULL), 0);
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
    CHECK_INT(store_answer_ticket_exists(db, "123", &resp), 1);
    CHECK_STR(resp, "the answer");
    free(resp);
    /* another body is another key */
    struct answer b;
    char hash2[65];
    answer_key_ticket(&b, "123", "my body!", hash2);
    CHECK(strcmp(a.key, b.key) != 0);
    CHECK_INT(store_answer_delete_ticket(db, "123"), 1);
    CHECK_INT(store_answer_ticket_exists(db, "123", NULL), 0);
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
    struct conversation c;
    memset(&c, 0, sizeof c);
    str_copy(c.owner, sizeof c.owner, "dave");
    REQUIRE(store_conv_create(db, &c) == STORE_OK);
    struct conversation dup;
    memset(&dup, 0, sizeof dup);
    str_copy(dup.id, sizeof dup.id, c.id);
    str_copy(dup.owner, sizeof dup.owner, "dave");
    CHECK_INT(store_conv_create(db, &dup), STORE_EXISTS);
    CHECK_INT(store_conv_delete(db, c.id, "dave"), STORE_OK);
    CHECK_INT(store_conv_delete(db, c.id, "dave"), STORE_NOT_FOUND);
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
    struct peeked p = { 0 };
    int fn_rc = -7;
    CHECK_INT(store_answer_peek(db, "peek-1", peek_cb, &p, &fn_rc), STORE_NOT_FOUND);
    CHECK_INT(p.calls, 0);
    CHECK_INT(fn_rc, -7);
    struct answer a;
    char hash[65];
    answer_key_ticket(&a, "peek-1", "body one", hash);
    a.response = "first answer";
    a.model = "m";
    a.tokens = 2;
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &a) == 0);
    REQUIRE(db_commit(db) == 0);
    CHECK_INT(store_answer_peek(db, "peek-1", peek_cb, &p, &fn_rc), STORE_OK);
    CHECK_INT(p.calls, 1);
    CHECK_INT(fn_rc, 42);
    CHECK_STR(p.text, "first answer");
    CHECK_INT(p.len, strlen("first answer"));
    /* an empty answer is an answer (len 0), and NULL fn_rc is allowed */
    struct answer e;
    char hash2[65];
    answer_key_ticket(&e, "peek-2", "body two", hash2);
    e.response = "";
    e.model = "m";
    e.tokens = 0;
    REQUIRE(db_begin(db) == 0);
    REQUIRE(store_answer_put_tx(db, &e) == 0);
    REQUIRE(db_commit(db) == 0);
    memset(&p, 0, sizeof p);
    CHECK_INT(store_answer_peek(db, "peek-2", peek_cb, &p, NULL), STORE_OK);
    CHECK_INT(p.calls, 1);
    CHECK_INT(p.len, 0);
    /* the statement is released: a write right after it works */
    CHECK_INT(store_answer_delete_ticket(db, "peek-1"), 1);
    memset(&p, 0, sizeof p);
    CHECK_INT(store_answer_peek(db, "peek-1", peek_cb, &p, NULL), STORE_NOT_FOUND);
    CHECK_INT(p.calls, 0);
}

int main(void)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/store.db", th_tmpdir());
    db = db_open(path, err, sizeof err);
    if (!db) {
        printf("# %s\n", err);
        return 1;
    }
    RUN(tickets);
    RUN(conversations_belong_to_their_owner);
    RUN(listing_and_pagination);
    RUN(messages_context_and_reactions);
    RUN(answer_cache);
    RUN(result_codes_are_named);
    RUN(answer_peek);
    db_close(db);
    return th_done();
}
