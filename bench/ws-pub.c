/* ws-pub.c — the publisher of bench/ws-fanout.mjs for Parley: appends
 * "token" events to ticket channels' event logs at a fixed rate, exactly
 * as a generation does (evlog_append: one transaction, then the doorbell),
 * so the WebSocket bridge fans them out to its subscribers.
 *
 *   ws-pub DB PREFIX CHANNELS RATE COUNT SIZE
 *     DB: what PARLEY_DB would hold — a SQLite path (the file doorbell
 *     <DB>-bell) or a PostgreSQL connection string (each append NOTIFYs in
 *     its transaction, so bridges on every node wake); "-" reads PARLEY_DB
 *     (keeps a password off the command line). The doorbell is opened with
 *     bell_open_db, as Parley's programs do (on PostgreSQL: its own LISTEN
 *     connection, like a parley.fcgi process running a generation).
 *     appends COUNT events in total, RATE per second, round-robin over
 *     channels "ticket:PREFIX0" ... "ticket:PREFIX<CHANNELS-1>". Each event's
 *     text starts with the wall-clock time in microseconds, then padding to
 *     SIZE bytes, so a subscriber measures append -> receive latency.
 *     The tokens of channel k belong to job 1000 + k, as a generation's
 *     carry its job id (a viewer follows the first job it sees).
 * Prints "published N in S s" on stdout. Single thread.
 */
#include "bell.h"
#include "db.h"
#include "evlog.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void sleep_until_us(int64_t mono_target)
{
    int64_t left = mono_target - mono_us();
    if (left > 0) {
        struct timespec ts = { left / 1000000, (long)(left % 1000000) * 1000 };
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: ws-pub DB PREFIX CHANNELS RATE COUNT SIZE\n");
        return 2;
    }
    const char *dbpath = argv[1], *prefix = argv[2];
    if (strcmp(dbpath, "-") == 0 && !(dbpath = getenv("PARLEY_DB"))) {
        fprintf(stderr, "ws-pub: DB is \"-\" and PARLEY_DB is not set\n");
        return 2;
    }
    int nch = atoi(argv[3]), count = atoi(argv[5]);
    double rate = atof(argv[4]);
    size_t size = (size_t)atol(argv[6]);
    if (nch < 1 || rate <= 0 || count < 1 || size < 24 || size > 60000) {
        fprintf(stderr, "ws-pub: bad arguments\n");
        return 2;
    }
    char err[512] = "";
    parley_db *db = db_open(dbpath, err, sizeof err);
    parley_bell *bell = db ? bell_open_db(dbpath, err, sizeof err) : NULL;
    if (!db || !bell) {
        fprintf(stderr, "ws-pub: %s\n", err);   /* err never holds a password */
        bell_close(bell);
        db_close(db);
        return 1;
    }
    char *text = malloc(size + 1);
    if (!text)
        return 1;
    int64_t start = mono_us(), step = (int64_t)(1e6 / rate);
    for (int i = 0; i < count; i++) {
        sleep_until_us(start + (int64_t)i * step);
        char chan[256];
        snprintf(chan, sizeof chan, "ticket:%s%d", prefix, i % nch);
        int n = snprintf(text, size + 1, "%lld ", (long long)wall_us());
        memset(text + n, 'x', size - (size_t)n);
        text[size] = '\0';
        if (evlog_append(db, bell, chan, 1000 + i % nch, "token", text, size) < 0) {
            fprintf(stderr, "ws-pub: append failed: %s\n", db_errmsg(db));
            return 1;
        }
    }
    printf("published %d in %.2f s\n", count, (double)(mono_us() - start) / 1e6);
    free(text);
    bell_close(bell);
    db_close(db);
    return 0;
}
