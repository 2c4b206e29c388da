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
 *    next request, as after any request;
 *  - Server-Sent Event streams (seed 004's send, fcgi/sse_park.h) hold no
 *    thread either: with --threads 2, eight chats stream at once from an
 *    upstream (a small Ollama speaker forked here) that holds every answer
 *    after its first token until the test lets it go; other requests are
 *    answered meanwhile; then every stream ends with its whole answer and
 *    its done frame, written by the hub; and at a stop signal every parked
 *    stream ends at once (the upstream still holding its answers), then
 *    the process exits 0 once the generations ended.
 *
 * The FastCGI client is tests/unit/fcgiclient.h. Runs the
 * parley.fcgi of the same build directory (../parley.fcgi next to tests/).
 */
#include "th.h"
#include "fcgiclient.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>

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

/* ---- a held upstream: an Ollama /api/chat that streams one token, then
 * waits for a byte on the gate (or its end) before the rest ---- */

#define CHATS 8

static pid_t up_pid = -1;
static int gate_w = -1;

static void up_answer(int fd, int gate)
{
    char req[16384];
    size_t n = 0;
    long clen = -1;
    char *end = NULL;
    while (n < sizeof req - 1) {
        ssize_t r = read(fd, req + n, sizeof req - 1 - n);
        if (r <= 0)
            return;
        n += (size_t)r;
        req[n] = '\0';
        if (!end && (end = strstr(req, "\r\n\r\n"))) {
            const char *cl = strcasestr(req, "content-length:");
            clen = cl ? strtol(cl + 15, NULL, 10) : 0;
        }
        if (end && (long)(n - (size_t)(end + 4 - req)) >= clen)
            break;
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                               "Connection: close\r\n\r\n";
    static const char *const words[] = { "Parked ", "streams ", "hold ", "no ", "thread." };
    char line[256];
    if (write(fd, head, sizeof head - 1) < 0)
        return;
    for (int i = 0; i < 5; i++) {
        if (i == 1) {
            char b;
            if (read(gate, &b, 1) < 0)     /* a byte, or the gate's end */
                return;
        }
        int l = snprintf(line, sizeof line,
                         "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
                         "\"done\":false}\n", words[i]);
        if (write(fd, line, (size_t)l) < 0)
            return;
    }
    static const char done[] = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
                               "\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,"
                               "\"eval_count\":5}\n";
    if (write(fd, done, sizeof done - 1) < 0)
        return;
}

/* Starts the upstream on a loopback port (upstream_url set). 0 / -1. */
static int up_start(void)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), gate[2];
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 64) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0 || pipe(gate) < 0)
        return -1;
    up_pid = fork();
    if (up_pid < 0)
        return -1;
    if (up_pid == 0) {
        close(gate[1]);
        signal(SIGCHLD, SIG_IGN);          /* the answering children reap themselves */
        for (;;) {
            int fd = accept(ls, NULL, NULL);
            if (fd < 0)
                continue;
            if (fork() == 0) {
                up_answer(fd, gate[0]);
                close(fd);
                _exit(0);
            }
            close(fd);
        }
    }
    close(ls);
    close(gate[0]);
    gate_w = gate[1];
    snprintf(upstream_url, sizeof upstream_url, "http://127.0.0.1:%d", ntohs(a.sin_port));
    return 0;
}

static void up_stop(void)
{
    if (gate_w >= 0)
        close(gate_w);                     /* every held answer goes on */
    gate_w = -1;
    if (up_pid > 0) {
        kill(up_pid, SIGTERM);
        waitpid(up_pid, NULL, 0);
    }
    up_pid = -1;
}

/* A new conversation's id into id. 0 / -1. */
static int new_conversation(char *id, size_t len)
{
    int fd = fc_connect(), st = 0;
    char out[4096];
    if (fd < 0)
        return -1;
    int rc = fc_send(fd, 0, "POST", "/api/chat/sessions", "{\"kind\": \"sse\"}", -1, 1) < 0 ||
             fc_read_out(fd, 5000, &st, out, sizeof out) < 0 ? -1 : 0;
    close(fd);
    const char *p = strstr(out, "\"session_id\":");
    if (rc < 0 || st != 201 || !p)
        return -1;
    p = strchr(p + 13, '"');
    if (!p)
        return -1;
    size_t l = strcspn(p + 1, "\"");
    snprintf(id, len, "%.*s", (int)l, p + 1);
    return 0;
}

TEST(sse_streams_hold_no_thread)
{
    int fds[CHATS];
    static char out[CHATS][8192];
    size_t len[CHATS];
    for (int i = 0; i < CHATS; i++) {
        char id[128], body[256];
        fds[i] = -1;
        len[i] = 0;
        REQUIRE(new_conversation(id, sizeof id) == 0);
        snprintf(body, sizeof body, "{\"conversationId\": \"%s\", \"content\": \"chat %d\"}", id, i);
        fds[i] = fc_connect();
        REQUIRE(fds[i] >= 0 && fc_send(fds[i], 0, "POST", "/api/chat/send", body, -1, 1) == 0);
    }
    /* every chat streams at once: its first token arrives while the
     * upstream holds the rest (with a thread per stream, only two would) */
    for (int i = 0; i < CHATS; i++) {
        CHECK_INT(fc_read_until(fds[i], 10000, out[i], sizeof out[i], &len[i],
                                "data: {\"content\":\"Parked \"}\n\n"), 1);
        CHECK(strstr(out[i], "Content-Type: text/event-stream") != NULL);
    }
    /* both threads are free for other requests */
    for (int i = 0; i < 4; i++)
        CHECK_INT(one_shot("GET", "/api/tickets/park-none/ai", NULL, NULL, 0), 200);
    /* let the answers go on: each stream ends with its whole answer */
    for (int i = 0; i < CHATS; i++)
        CHECK(write(gate_w, "g", 1) == 1);
    for (int i = 0; i < CHATS; i++) {
        CHECK_INT(fc_read_until(fds[i], 10000, out[i], sizeof out[i], &len[i], "\"done\":true"), 1);
        int st = 0;
        CHECK(fc_read(fds[i], 10000, &st) == 0);   /* and the request ends */
        const char *body = strstr(out[i], "\r\n\r\n");
        CHECK(body != NULL);
        if (!body)
            continue;
        /* every event one "data: {...}\n\n": the content frames (tokens
         * may be coalesced) make the whole answer, then the done frame */
        char text[256] = "";
        int frames = 0, done = 0;
        const char *at = body + 4;
        while (*at) {
            CHECK(strncmp(at, "data: {", 7) == 0);
            const char *e = strstr(at, "}\n\n");
            CHECK(e != NULL);
            if (!e || strncmp(at, "data: {", 7) != 0)
                break;
            CHECK(!done);                            /* nothing after done */
            if (strncmp(at, "data: {\"content\":\"", 18) == 0)
                snprintf(text + strlen(text), sizeof text - strlen(text), "%.*s",
                         (int)(e - at - 19), at + 18);
            else if (strncmp(at, "data: {\"done\":true,", 19) == 0) {
                const char *t = strstr(at, "\"tokens_used\":5");
                done = t && t < e;
            }
            frames++;
            at = e + 3;
        }
        CHECK_STR(text, "Parked streams hold no thread.");
        CHECK(done);
        CHECK(frames >= 3);
        close(fds[i]);
        fds[i] = -1;
    }
    for (int i = 0; i < CHATS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

TEST(parked_sse_streams_end_at_a_stop)
{
    int fds[4];
    for (int i = 0; i < 4; i++) {
        char id[128], body[256], out[8192];
        size_t len = 0;
        fds[i] = -1;
        REQUIRE(new_conversation(id, sizeof id) == 0);
        snprintf(body, sizeof body, "{\"conversationId\": \"%s\", \"content\": \"stop %d\"}", id, i);
        fds[i] = fc_connect();
        REQUIRE(fds[i] >= 0 && fc_send(fds[i], 0, "POST", "/api/chat/send", body, -1, 1) == 0);
        CHECK_INT(fc_read_until(fds[i], 10000, out, sizeof out, &len,
                                "data: {\"content\":\"Parked \"}\n\n"), 1);
    }
    /* the upstream holds every answer: only the stop ends the streams */
    kill(server, SIGTERM);
    for (int i = 0; i < 4; i++) {
        int st = 0;
        CHECK(fc_read(fds[i], 5000, &st) == 0);    /* the request ended (its headers came before) */
        close(fds[i]);
    }
    up_stop();                       /* the held generations end, the drain with them */
    CHECK_INT(stop_server(), 0);
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
    if (up_start() < 0 || start_server(2) < 0) {
        printf("not ok 4 - the upstream or parley.fcgi did not start\n");
        show_log();
        up_stop();
        return 1;
    }
    RUN(sse_streams_hold_no_thread);
    if (server > 0)
        CHECK_INT(stop_server(), 0);
    if (start_server(2) < 0) {
        printf("not ok 5 - parley.fcgi did not start again\n");
        show_log();
        up_stop();
        return 1;
    }
    RUN(parked_sse_streams_end_at_a_stop);
    up_stop();
    if (server > 0)
        stop_server();
    if (th_failed_cases)
        show_log();
    return th_done();
}
