/* test_phx_heartbeat.c — phx_heartbeat() (core/phx.h), the heartbeat
 * answer a transport gives before queueing a frame (the bridge's service
 * thread): for every heartbeat it takes, the same reply phx_message makes;
 * every other frame left alone (0, out untouched) for phx_message, which
 * then answers it as before. No database: neither call touches one for
 * these frames. */
#include "th.h"
#include "phx.h"

#include <stdlib.h>
#include <string.h>

/* phx_heartbeat and phx_message on text; *hb = phx_heartbeat's result.
 * Returns 1 when the heartbeat answer (if any) is phx_message's, byte for
 * byte, and a frame phx_heartbeat declined left out empty. */
static int same_answer(const char *text, size_t len, int *hb)
{
    struct parley_ctx ctx;
    memset(&ctx, 0, sizeof ctx);              /* no database: none is used */
    struct phx_socket s;
    phx_init(&s, "alice", "user:alice", 10);
    struct proto_frames a, b;
    frames_init(&a);
    frames_init(&b);
    *hb = phx_heartbeat(text, len, &a);
    struct proto_job *job = NULL;
    int rc = phx_message(&ctx, &s, text, len, &b, &job);
    int same = rc == 0 && !job;
    if (*hb == 1)
        same = same && a.n == 1 && b.n == 1 && !strcmp(a.v[0], b.v[0]);
    else
        same = same && a.n == 0;
    frames_free(&a);
    frames_free(&b);
    phx_free(&s);
    return same;
}

static int hb_of(const char *text)
{
    int hb = -2;
    return same_answer(text, strlen(text), &hb) ? hb : -3;
}

TEST(heartbeats_are_answered_as_phx_message_answers_them)
{
    CHECK_INT(hb_of("[null,\"1\",\"phoenix\",\"heartbeat\",{}]"), 1);
    CHECK_INT(hb_of("[null,7,\"phoenix\",\"heartbeat\",{}]"), 1);
    CHECK_INT(hb_of("[\"3\",\"9\",\"phoenix\",\"heartbeat\",null]"), 1);
    CHECK_INT(hb_of(" [ null , \"12\" , \"phoenix\" , \"heartbeat\" , {\"x\":1} ] "), 1);
    /* the reply's bytes */
    struct proto_frames f;
    frames_init(&f);
    const char *t = "[null,\"42\",\"phoenix\",\"heartbeat\",{}]";
    REQUIRE(phx_heartbeat(t, strlen(t), &f) == 1);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[null,\"42\",\"phoenix\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);
}

TEST(other_frames_are_left_to_phx_message)
{
    /* not heartbeats */
    CHECK_INT(hb_of("[null,\"1\",\"phoenix\",\"ping\",{}]"), 0);
    CHECK_INT(hb_of("[null,\"1\",\"proxy:s\",\"heartbeat\",{}]"), 0);
    CHECK_INT(hb_of("[null,\"1\",\"heartbeat\",\"phx_join\",{}]"), 0);
    CHECK_INT(hb_of("[\"1\",\"1\",\"room:heartbeat\",\"phx_join\",{}]"), 0);
    /* malformed: phx_message answers or drops them, as before */
    CHECK_INT(hb_of("[null,\"1\",\"phoenix\",\"heartbeat\"]"), 0);
    CHECK_INT(hb_of("[null,{},\"phoenix\",\"heartbeat\",{}]"), 0);
    CHECK_INT(hb_of("[[],\"1\",\"phoenix\",\"heartbeat\",{}]"), 0);
    CHECK_INT(hb_of("[null,\"1\",\"phoenix\",\"heartbeat\",{}"), 0);
    CHECK_INT(hb_of("{\"event\":\"heartbeat\"}"), 0);
    CHECK_INT(hb_of("heartbeat"), 0);
    CHECK_INT(hb_of(""), 0);
    /* an escaped name: not taken here, still answered by phx_message */
    struct parley_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    struct phx_socket s;
    phx_init(&s, "", "ip:127.0.0.1", 10);
    struct proto_frames f;
    frames_init(&f);
    const char *esc = "[null,\"5\",\"phoenix\",\"heart\\u0062eat\",{}]";
    CHECK_INT(phx_heartbeat(esc, strlen(esc), &f), 0);
    CHECK_INT(f.n, 0);
    struct proto_job *job = NULL;
    REQUIRE(phx_message(&ctx, &s, esc, strlen(esc), &f, &job) == 0);
    REQUIRE(f.n == 1);
    CHECK_STR(f.v[0], "[null,\"5\",\"phoenix\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");
    frames_free(&f);
    phx_free(&s);
}

TEST(oversized_heartbeat_is_left_to_phx_message)
{
    /* over PHX_FRAME_MAX: phx_message answers "message too large" */
    const char *head = "[null,\"8\",\"phoenix\",\"heartbeat\",{\"pad\":\"";
    size_t n = PHX_FRAME_MAX + 100;
    char *t = malloc(n + 1);
    REQUIRE(t != NULL);
    memset(t, 'a', n);
    memcpy(t, head, strlen(head));
    memcpy(t + n - 3, "\"}]", 3);
    t[n] = '\0';
    int hb = -2;
    CHECK(same_answer(t, n, &hb));
    CHECK_INT(hb, 0);
    struct parley_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    struct phx_socket s;
    phx_init(&s, "", "ip:127.0.0.1", 10);
    struct proto_frames f;
    frames_init(&f);
    struct proto_job *job = NULL;
    REQUIRE(phx_message(&ctx, &s, t, n, &f, &job) == 0);
    REQUIRE(f.n == 1);
    CHECK(strstr(f.v[0], "message too large") != NULL);
    frames_free(&f);
    phx_free(&s);
    free(t);
}

int main(void)
{
    RUN(heartbeats_are_answered_as_phx_message_answers_them);
    RUN(other_frames_are_left_to_phx_message);
    RUN(oversized_heartbeat_is_left_to_phx_message);
    return th_done();
}
