/* test_fcgi_park.c — parked long-poll GETs in the real parley.fcgi
 * (fcgi/poll_park.c, fcgx_adapter.c), spoken to over FastCGI on a unix
 * socket as a web server would:
 *
 *  - with --threads 2, twenty waiting long-poll GETs hold no thread: other
 *    requests are answered while all twenty still wait, and at SIGTERM all
 *    twenty are answered at once and the process exits 0 (on the blocking
 *    wait, the first two held both threads and nothing else was served);
 *  - the same for waiting Phoenix LongPoll GETs (fcgi/phx_longpoll.c, the
 *    hub's generic waiters): with --threads 2, ten of them hold no thread,
 *    a POST to each session answers its GET at once from the hub, and a
 *    stop signal answers a parked one at once;
 *  - a parked GET on a kept connection (FCGI_KEEP_CONN) is answered at its
 *    wait's end from the hub thread, and the connection is kept for the
 *    next request, as after any request.
 *
 * The FastCGI client is tests/unit/fcgiclient.h. Runs the
 * parley.fcgi of the same build directory (../parley.fcgi next to tests/).
 */
#include "th.h"
#include "fcgiclient.h"
#include "util.h"

#define WAITERS 20

/* Opens a long-poll session on ticket channel `ticket`: its sid. */
static int open_poll(const char *ticket, char *sid, size_t len)
{
    char body[200];
    snprintf(body, sizeof body, "{\"path\": \"/api/websocket/chat/%s\"}", ticket);
    return one_shot("POST", "/api/poll/open", body, sid, len) == 200 && sid[0] ? 0 : -1;
}

TEST(waiting_gets_hold_no_thread_and_stop_answers_them)
{
    int fds[WAITERS], st;
    for (int i = 0; i < WAITERS; i++) {
        char sid[128], uri[256], ticket[32];
        snprintf(ticket, sizeof ticket, "park-%d", i % 3);
        REQUIRE(open_poll(ticket, sid, sizeof sid) == 0);
        /* cursor past the opening frames: nothing to answer, a long wait */
        snprintf(uri, sizeof uri, "/api/poll/%s?cursor=0&wait=0", sid);
        int fd = fc_connect();
        REQUIRE(fd >= 0 && fc_send(fd, 0, "GET", uri, NULL, -1, 1) == 0);
        CHECK(fc_read(fd, 5000, &st) == 0);
        close(fd);
        snprintf(uri, sizeof uri, "/api/poll/%s?cursor=1000000&wait=25", sid);
        fds[i] = fc_connect();
        REQUIRE(fds[i] >= 0 && fc_send(fds[i], 0, "GET", uri, NULL, -1, 1) == 0);
    }
    /* both threads are free: other requests are answered ... */
    for (int i = 0; i < 4; i++)
        CHECK_INT(one_shot("GET", "/api/tickets/park-none/ai", NULL, NULL, 0), 200);
    /* ... while every long-poll still waits */
    int waiting = 0;
    for (int i = 0; i < WAITERS; i++) {
        struct pollfd pf = { fds[i], POLLIN, 0 };
        waiting += poll(&pf, 1, 0) == 0;
    }
    CHECK_INT(waiting, WAITERS);
    kill(server, SIGTERM);
    for (int i = 0; i < WAITERS; i++) {
        CHECK(fc_read(fds[i], 5000, &st) == 0);   /* answered at once, not after 25 s */
        CHECK_INT(st, 200);
        close(fds[i]);
    }
    CHECK_INT(stop_server(), 0);
}

/* A new Phoenix LongPoll session: its token (36 characters) into tok. */
static int phx_open(char *tok)
{
    int fd = fc_connect(), st = 0;
    char out[4096];
    tok[0] = '\0';
    if (fd < 0 || fc_send(fd, 0, "GET", "/socket/longpoll?vsn=2.0.0", NULL, -1, 1) < 0 ||
        fc_read_out(fd, 5000, &st, out, sizeof out) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    const char *t = strstr(out, "\"token\":\"");
    if (st != 200 || !strstr(out, "\"status\":410") || !t)
        return -1;
    snprintf(tok, 37, "%s", t + 9);
    return strlen(tok) == 36 ? 0 : -1;
}

#define PHX_WAITERS 10

TEST(waiting_phoenix_gets_hold_no_thread)
{
    int fds[PHX_WAITERS], st;
    char toks[PHX_WAITERS][40], uri[512];
    for (int i = 0; i < PHX_WAITERS; i++) {
        REQUIRE(phx_open(toks[i]) == 0);
        snprintf(uri, sizeof uri, "/socket/longpoll?vsn=2.0.0&token=%s", toks[i]);
        fds[i] = fc_connect();
        REQUIRE(fds[i] >= 0 && fc_send(fds[i], 0, "GET", uri, NULL, -1, 1) == 0);
    }
    int64_t t0 = mono_ms();
    /* both threads are free: other requests are answered ... */
    for (int i = 0; i < 4; i++)
        CHECK_INT(one_shot("GET", "/api/tickets/park-none/ai", NULL, NULL, 0), 200);
    /* ... while every Phoenix GET still waits (its window is 25 s) */
    int waiting = 0;
    for (int i = 0; i < PHX_WAITERS; i++) {
        struct pollfd pf = { fds[i], POLLIN, 0 };
        waiting += poll(&pf, 1, 0) == 0;
    }
    CHECK_INT(waiting, PHX_WAITERS);
    /* a frame posted to each session answers its GET, from the hub */
    for (int i = 0; i < PHX_WAITERS; i++) {
        char body[100];
        snprintf(uri, sizeof uri, "/socket/longpoll?vsn=2.0.0&token=%s", toks[i]);
        snprintf(body, sizeof body, "[null,\"hb%d\",\"phoenix\",\"heartbeat\",{}]", i);
        CHECK_INT(one_shot("POST", uri, body, NULL, 0), 200);
    }
    for (int i = 0; i < PHX_WAITERS; i++) {
        char out[4096], want[40];
        CHECK(fc_read_out(fds[i], 10000, &st, out, sizeof out) == 0);
        CHECK_INT(st, 200);
        snprintf(want, sizeof want, "\\\"hb%d\\\"", i);
        CHECK(strstr(out, "\"status\":200") && strstr(out, want));
        close(fds[i]);
    }
    CHECK(mono_ms() - t0 < 15000);         /* answered by the POSTs, not the window */
    /* parked again, then a stop signal: answered at once (204), exit 0 */
    snprintf(uri, sizeof uri, "/socket/longpoll?vsn=2.0.0&token=%s", toks[0]);
    int fd = fc_connect();
    REQUIRE(fd >= 0 && fc_send(fd, 0, "GET", uri, NULL, -1, 1) == 0);
    struct pollfd pf = { fd, POLLIN, 0 };
    CHECK_INT(poll(&pf, 1, 300), 0);       /* waiting */
    kill(server, SIGTERM);
    char out[4096];
    CHECK(fc_read_out(fd, 5000, &st, out, sizeof out) == 0);
    CHECK_INT(st, 200);
    CHECK(strstr(out, "\"status\":204") != NULL);
    close(fd);
    CHECK_INT(stop_server(), 0);
}

TEST(a_parked_get_on_a_kept_connection_keeps_it)
{
    char sid[128], uri[256];
    REQUIRE(open_poll("park-kept", sid, sizeof sid) == 0);
    snprintf(uri, sizeof uri, "/api/poll/%s?cursor=1000000&wait=1", sid);
    int fd = fc_connect(), st;
    REQUIRE(fd >= 0);
    REQUIRE(fc_send(fd, 1, "GET", uri, NULL, -1, 1) == 0);
    CHECK(fc_read(fd, 10000, &st) == 0);          /* after its 1 s wait */
    CHECK_INT(st, 200);
    CHECK(!fc_closed(fd, 300));                   /* kept */
    REQUIRE(fc_send(fd, 1, "GET", "/api/tickets/park-none/ai", NULL, -1, 1) == 0);
    CHECK(fc_read(fd, 5000, &st) == 0);
    CHECK_INT(st, 200);
    /* and once more a parked GET on it */
    REQUIRE(fc_send(fd, 1, "GET", uri, NULL, -1, 1) == 0);
    CHECK(fc_read(fd, 10000, &st) == 0);
    CHECK_INT(st, 200);
    close(fd);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setenv("PARLEY_PHOENIX_WINDOW", "25", 1);   /* the servers' Phoenix GETs wait long */
    snprintf(sock_path, sizeof sock_path, "%s/p.sock", th_tmpdir());
    snprintf(db_file, sizeof db_file, "%s/park.db", th_tmpdir());
    snprintf(log_file, sizeof log_file, "%s/server.log", th_tmpdir());
    if (start_server(2) < 0) {
        printf("not ok 1 - parley.fcgi did not start\n");
        show_log();
        stop_server();
        return 1;
    }
    RUN(waiting_gets_hold_no_thread_and_stop_answers_them);
    if (server > 0)
        stop_server();             /* the case failed before its SIGTERM */
    if (start_server(2) < 0) {
        printf("not ok 2 - parley.fcgi did not start again\n");
        show_log();
        return 1;
    }
    RUN(a_parked_get_on_a_kept_connection_keeps_it);
    if (server > 0)
        stop_server();
    if (start_server(2) < 0) {
        printf("not ok 3 - parley.fcgi did not start again\n");
        show_log();
        return 1;
    }
    RUN(waiting_phoenix_gets_hold_no_thread);
    if (server > 0)
        stop_server();
    if (th_failed_cases)
        show_log();
    return th_done();
}
