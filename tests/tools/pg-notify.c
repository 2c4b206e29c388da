/* pg-notify — a LISTEN session for the PostgreSQL tests (t0700, and the
 * doorbell tests of issue 10 after it).
 *
 *   pg-notify CONNINFO CHANNEL STOP_PAYLOAD TIMEOUT_MS
 *
 * Connects with libpq (CONNINFO: a postgresql:// URI or a key=value string;
 * connect_timeout is 10 s), runs LISTEN CHANNEL and prints "listening" once
 * the server has confirmed it — a NOTIFY committed after that line is
 * guaranteed to reach this session. Then prints one line per notification
 * received on CHANNEL: its payload. Notifications on other channels are
 * ignored.
 *
 * Exit status: 0 after printing the notification whose payload is
 * STOP_PAYLOAD; 3 when TIMEOUT_MS milliseconds (counted from the
 * "listening" line) pass first; 1 on a connection or server error,
 * including a connection lost while waiting (the reason on stderr);
 * 2 on bad usage. stdout is flushed after every line, so a test reading it
 * while this runs sees each line as soon as it is received.
 *
 * Single-threaded; everything allocated is freed before exit.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Prints the payloads of the notifications libpq has already read; 1 when
 * STOP_PAYLOAD was among them, else 0. */
static int drain(PGconn *c, const char *channel, const char *stop)
{
    int done = 0;
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
        if (strcmp(n->relname, channel) == 0 && !done) {
            printf("%s\n", n->extra);
            fflush(stdout);
            if (strcmp(n->extra, stop) == 0)
                done = 1;
        }
        PQfreemem(n);
    }
    return done;
}

static int run(PGconn *c, const char *channel, const char *stop, long timeout_ms)
{
    char *ident = PQescapeIdentifier(c, channel, strlen(channel));
    if (!ident) {
        fprintf(stderr, "pg-notify: %s", PQerrorMessage(c));
        return 1;
    }
    size_t len = strlen(ident) + sizeof "LISTEN ";
    char *sql = malloc(len);
    if (!sql) {
        PQfreemem(ident);
        fprintf(stderr, "pg-notify: out of memory\n");
        return 1;
    }
    snprintf(sql, len, "LISTEN %s", ident);
    PQfreemem(ident);
    PGresult *r = PQexec(c, sql);
    free(sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "pg-notify: LISTEN: %s", PQerrorMessage(c));
        PQclear(r);
        return 1;
    }
    PQclear(r);
    printf("listening\n");
    fflush(stdout);

    long long deadline = now_ms() + timeout_ms;
    if (drain(c, channel, stop))
        return 0;
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 3;
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        if (p.fd < 0) {
            fprintf(stderr, "pg-notify: connection lost\n");
            return 1;
        }
        int k = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            perror("pg-notify: poll");
            return 1;
        }
        if (k == 0)
            continue;
        if (!PQconsumeInput(c)) {
            fprintf(stderr, "pg-notify: %s", PQerrorMessage(c));
            return 1;
        }
        if (drain(c, channel, stop))
            return 0;
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "pg-notify: connection lost\n");
            return 1;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: pg-notify CONNINFO CHANNEL STOP_PAYLOAD TIMEOUT_MS\n");
        return 2;
    }
    char *end;
    errno = 0;
    long timeout_ms = strtol(argv[4], &end, 10);
    if (errno || *end || end == argv[4] || timeout_ms < 0 || timeout_ms > 3600000) {
        fprintf(stderr, "pg-notify: TIMEOUT_MS must be 0..3600000, not '%s'\n", argv[4]);
        return 2;
    }
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {argv[1], "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        fprintf(stderr, "pg-notify: out of memory\n");
        return 1;
    }
    int rc;
    if (PQstatus(c) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password. */
        fprintf(stderr, "pg-notify: cannot connect: %s", PQerrorMessage(c));
        rc = 1;
    } else {
        rc = run(c, argv[2], argv[3], timeout_ms);
    }
    PQfinish(c);
    return rc;
}
