/* test_fcgi_keepconn.c — parley.fcgi's connection handling (fcgi/server_listen.c, fcgx_adapter.c),
 * spoken to directly over FastCGI on a unix socket, as a web server would:
 *
 *  - kept connections (FCGI_KEEP_CONN, mod_proxy_fcgi enablereuse=on)
 *    never pin a worker thread: with --threads 3 and two threads held by
 *    long-polls, one free thread serves eight kept connections, in any
 *    order and all at once (libfcgi's own model would block the thread on
 *    the first idle connection and starve the rest);
 *  - a kept connection whose request left input unread (a 413) is closed,
 *    never reused;
 *  - a connection whose request comes more than 2 s after it was accepted
 *    (a web server busy with a burst) is served, not dropped (libfcgi's
 *    own accept closes such a unix connection: lighttpd answered 500),
 *    and three of them at once hold no thread while they are silent;
 *  - SIGTERM closes idle kept connections at once, a waiting long-poll
 *    answers at once (the doorbell's bell_wake_all), the process exits 0.
 *
 * Runs the parley.fcgi of the same build directory (../parley.fcgi next to
 * tests/), so under SANITIZE it is the sanitized program.
 */
#include "th.h"
#include "fcgiclient.h"

#define KEPT 8

TEST(kept_connections_never_pin_a_thread)
{
    /* two long-polls hold two of the three threads */
    int polls[2] = { -1, -1 };
    for (int i = 0; i < 2; i++) {
        char sid[128], uri[256];
        char body[128];
        snprintf(body, sizeof body, "{\"path\": \"/api/websocket/chat/keep-%d\"}", i);
        CHECK_INT(one_shot("POST", "/api/poll/open", body, sid, sizeof sid), 200);
        REQUIRE(sid[0]);
        snprintf(uri, sizeof uri, "/api/poll/%s?cursor=0&wait=8", sid);
        polls[i] = fc_connect();
        REQUIRE(polls[i] >= 0 && fc_send(polls[i], 0, "GET", uri, NULL, -1, 1) == 0);
    }
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    struct pollfd pf = { polls[0], POLLIN, 0 };
    CHECK(poll(&pf, 1, 0) == 0);                 /* still held */

    int c[KEPT], st;
    for (int i = 0; i < KEPT; i++) {
        c[i] = fc_connect();
        REQUIRE(c[i] >= 0);
        REQUIRE(fc_send(c[i], 1, "GET", "/api/tickets/keep-none/ai", NULL, -1, 1) == 0);
        CHECK(fc_read(c[i], 3000, &st) == 0);
        CHECK_INT(st, 200);
    }
    /* again, the other way round, on the same connections */
    for (int i = KEPT - 1; i >= 0; i--) {
        REQUIRE(fc_send(c[i], 1, "GET", "/api/tickets/keep-none/ai", NULL, -1, 1) == 0);
        CHECK(fc_read(c[i], 3000, &st) == 0);
        CHECK_INT(st, 200);
    }
    /* all at once */
    for (int i = 0; i < KEPT; i++)
        REQUIRE(fc_send(c[i], 1, "GET", "/brands/active", NULL, -1, 1) == 0);
    for (int i = 0; i < KEPT; i++) {
        CHECK(fc_read(c[i], 5000, &st) == 0);
        CHECK_INT(st, 200);
    }
    /* the web server closes some: the rest and new connections still work */
    for (int i = 0; i < KEPT / 2; i++)
        close(c[i]);
    for (int i = KEPT / 2; i < KEPT; i++) {
        REQUIRE(fc_send(c[i], 1, "GET", "/api/tickets/keep-none/ai", NULL, -1, 1) == 0);
        CHECK(fc_read(c[i], 3000, &st) == 0);
        CHECK_INT(st, 200);
    }
    CHECK_INT(one_shot("GET", "/api/tickets/keep-none/ai", NULL, NULL, 0), 200);
    /* the long-polls answer when their wait ends */
    for (int i = 0; i < 2; i++) {
        CHECK(fc_read(polls[i], 15000, &st) == 0);
        CHECK_INT(st, 200);
        close(polls[i]);
    }
    for (int i = KEPT / 2; i < KEPT; i++)
        close(c[i]);
}

TEST(unread_input_is_never_kept)
{
    int fd = fc_connect(), st;
    REQUIRE(fd >= 0);
    /* a declared body over the 1 MiB cap: 413 without reading it */
    REQUIRE(fc_send(fd, 1, "POST", "/api/chat/sessions", "{}", 5 * 1024 * 1024, 0) == 0);
    CHECK(fc_read(fd, 3000, &st) == 0);
    CHECK_INT(st, 413);
    CHECK(fc_closed(fd, 5000));
    close(fd);
    /* a body read to its end: kept */
    fd = fc_connect();
    REQUIRE(fd >= 0);
    REQUIRE(fc_send(fd, 1, "POST", "/api/chat/sessions", "{\"title\":\"k\"}", -1, 1) == 0);
    CHECK(fc_read(fd, 3000, &st) == 0);
    CHECK_INT(st, 201);
    CHECK(!fc_closed(fd, 300));
    REQUIRE(fc_send(fd, 1, "GET", "/api/tickets/keep-none/ai", NULL, -1, 1) == 0);
    CHECK(fc_read(fd, 3000, &st) == 0);
    CHECK_INT(st, 200);
    close(fd);
}

TEST(a_request_late_after_the_connect_is_served)
{
    int fds[3], st;
    for (int i = 0; i < 3; i++) {
        fds[i] = fc_connect();
        REQUIRE(fds[i] >= 0);
    }
    /* silent for 2.5 s; meanwhile (3 threads) another request is served */
    struct timespec ts = { 1, 0 };
    nanosleep(&ts, NULL);
    int other = fc_connect();
    REQUIRE(other >= 0);
    REQUIRE(fc_send(other, 0, "GET", "/api/health", NULL, -1, 1) == 0);
    CHECK(fc_read(other, 3000, &st) == 0);
    CHECK_INT(st, 200);
    close(other);
    ts.tv_nsec = 500 * 1000000L;
    nanosleep(&ts, NULL);
    for (int i = 0; i < 3; i++) {
        CHECK(!fc_closed(fds[i], 0));          /* not dropped */
        REQUIRE(fc_send(fds[i], 0, "GET", "/api/health", NULL, -1, 1) == 0);
        CHECK(fc_read(fds[i], 3000, &st) == 0);
        CHECK_INT(st, 200);
        close(fds[i]);
    }
}

TEST(sigterm_closes_idle_kept_connections_and_ends_long_polls)
{
    /* a long-poll that would wait 25 s */
    char sid[128], uri[256];
    CHECK_INT(one_shot("POST", "/api/poll/open", "{\"path\": \"/api/websocket/chat/keep-t\"}", sid,
                       sizeof sid), 200);
    REQUIRE(sid[0]);
    snprintf(uri, sizeof uri, "/api/poll/%s?cursor=0&wait=25", sid);
    int lp = fc_connect(), st;
    REQUIRE(lp >= 0 && fc_send(lp, 0, "GET", uri, NULL, -1, 1) == 0);
    int fd = fc_connect();
    REQUIRE(fd >= 0);
    REQUIRE(fc_send(fd, 1, "GET", "/api/tickets/keep-none/ai", NULL, -1, 1) == 0);
    CHECK(fc_read(fd, 3000, &st) == 0);
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    kill(server, SIGTERM);
    CHECK(fc_closed(fd, 3000));              /* the idle kept connection */
    CHECK(fc_read(lp, 3000, &st) == 0);      /* the long-poll answers at once */
    CHECK_INT(st, 200);
    close(fd);
    close(lp);
    CHECK_INT(stop_server(), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(sock_path, sizeof sock_path, "%s/p.sock", th_tmpdir());
    snprintf(db_file, sizeof db_file, "%s/keep.db", th_tmpdir());
    snprintf(log_file, sizeof log_file, "%s/server.log", th_tmpdir());
    if (start_server(3) < 0) {
        printf("not ok 1 - parley.fcgi did not start\n");
        show_log();
        stop_server();
        return 1;
    }
    RUN(kept_connections_never_pin_a_thread);
    RUN(unread_input_is_never_kept);
    RUN(a_request_late_after_the_connect_is_served);
    RUN(sigterm_closes_idle_kept_connections_and_ends_long_polls);
    if (server > 0)
        stop_server();
    if (th_failed_cases)
        show_log();
    return th_done();
}
