/* storage/pg/notify.c — NOTIFY in the writing transaction, and the
 * process's LISTEN connection that rings its listening bell (notify.h).
 *
 * The listener thread owns its PGconn (non-blocking: connect with
 * PQconnectStartParams/PQconnectPoll, queries with PQsendQuery, input with
 * PQconsumeInput), and waits in poll() on the connection's socket and an
 * eventfd that pgn_stop writes: no libpq call of it ever blocks, so a stop
 * is seen at once and the join is quick.
 *
 * Why nothing is missed across a lost connection: notifications sent while
 * no LISTEN was active are lost (PostgreSQL queues them only for listening
 * sessions). So once LISTEN is active again, every slot and "any" of the
 * bell is rung: each follower re-reads the event log from its cursor and
 * finds whatever was committed during the outage; anything committed after
 * LISTEN took effect is notified. A follower never depends on a
 * notification for an event it has not read: it peeks the bell before
 * reading (bell.h's race-free use).
 *
 * Messages: the connection string is shown redacted (db_pg_redact) and
 * libpq's messages are scrubbed of the password.
 */
#include "storage/pg/notify.h"
#include "storage/pg/pg.h"
#include "bell.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 10000   /* our own bound on one attempt */

static const char SQL_NOTIFY[] = "SELECT pg_notify($1, $2)";
static const char SQL_LISTEN[] = "LISTEN " PGN_CHANNEL;

struct pgn_listener {
    struct parley_bell *bell;
    char *conninfo;            /* as given (may hold the password); wiped at free */
    char *shown;               /* redacted, for messages */
    char *secret;              /* the password as written, or NULL; wiped at free */
    char appname[64];
    int efd;                   /* eventfd: written by pgn_stop */
    PGconn *c;                 /* the thread's (before it starts: pgn_listen's) */
    pthread_t th;
    pthread_mutex_t stop_mu;   /* serialises pgn_stop */
    int running;               /* the thread was started and not yet joined {stop_mu} */
    int stop;                  /* atomics */
    unsigned reconnects;       /* the thread's: connections re-established */
};

int pgn_is_conninfo(const char *s)
{
    return db_pg_is_conninfo(s);
}

int pgn_notify_tx(parley_db *db, const char *channel)
{
    const char *params[2] = { PGN_CHANNEL, channel ? channel : "" };
    PGresult *r = db_pg_exec(db, SQL_NOTIFY, 2, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        db_pg_fail(db, "doorbell: notify", r);
    PQclear(r);
    return ok ? 0 : -1;
}

/* msg with every occurrence of secret replaced by "***", on one line. */
static void scrub(char *out, size_t outlen, const char *msg, const char *secret)
{
    size_t o = 0, sl = secret ? strlen(secret) : 0;
    if (!msg)
        msg = "";
    while (*msg && o + 1 < outlen) {
        if (sl && !strncmp(msg, secret, sl)) {
            for (const char *r = "***"; *r && o + 1 < outlen; r++)
                out[o++] = *r;
            msg += sl;
        } else {
            char ch = *msg++;
            if (ch == '\n' || ch == '\t' || ch == ' ') {
                if (o > 0 && out[o - 1] != ' ')
                    out[o++] = ' ';             /* one space for a run of them */
            } else {
                out[o++] = ch;
            }
        }
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

static void conn_msg(struct pgn_listener *l, char *out, size_t outlen, const char *fallback)
{
    const char *m = l->c ? PQerrorMessage(l->c) : NULL;
    scrub(out, outlen, m && *m ? m : fallback, l->secret);
}

/* Waits until fd is ready for ev, the stop eventfd is written, or ms pass
 * (ms < 0: no limit; fd < 0: only the stop and the time). 1 ready, 0 time
 * out, -1 stop (or poll failed). */
static int wait_fd(struct pgn_listener *l, int fd, short ev, int ms)
{
    struct pollfd p[2] = { { l->efd, POLLIN, 0 }, { fd, ev, 0 } };
    for (;;) {
        if (__atomic_load_n(&l->stop, __ATOMIC_SEQ_CST))
            return -1;
        int n = poll(p, fd >= 0 ? 2 : 1, ms);
        if (n < 0 && errno == EINTR)
            continue;               /* (ms restarts: only the backoff waits are timed) */
        if (n < 0 || (p[0].revents & POLLIN))
            return -1;
        if (n == 0)
            return 0;
        return 1;                   /* readable, writable, hang-up or error: the caller reads */
    }
}

/* Connects and LISTENs, without blocking (see the top). 0 with l->c ready,
 * -1 with the reason in msg (l->c closed). */
static int connect_listen(struct pgn_listener *l, char *msg, size_t msglen)
{
    const char *const keys[] = { "connect_timeout", "keepalives", "keepalives_idle",
                                 "keepalives_interval", "keepalives_count", "dbname",
                                 "application_name", NULL };
    const char *const vals[] = { "10", "1", "30", "10", "3", l->conninfo, l->appname, NULL };
    int64_t deadline = mono_ms() + CONNECT_TIMEOUT_MS;
    l->c = PQconnectStartParams(keys, vals, 1);
    if (!l->c) {
        scrub(msg, msglen, "out of memory", NULL);
        return -1;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(l->c) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int left = (int)(deadline - mono_ms());
        int w = left <= 0 ? 0 : wait_fd(l, PQsocket(l->c),
                                         st == PGRES_POLLING_READING ? POLLIN : POLLOUT, left);
        if (w <= 0) {
            scrub(msg, msglen, w < 0 ? "stopped" : "timed out connecting", NULL);
            goto failed;
        }
        st = PQconnectPoll(l->c);
    }
    if (st == PGRES_POLLING_FAILED) {
        conn_msg(l, msg, msglen, "cannot connect");
        goto failed;
    }
    if (PQsetnonblocking(l->c, 1) != 0 || !PQsendQuery(l->c, SQL_LISTEN)) {
        conn_msg(l, msg, msglen, "cannot send LISTEN");
        goto failed;
    }
    int f;
    while ((f = PQflush(l->c)) == 1)
        if (wait_fd(l, PQsocket(l->c), POLLOUT, CONNECT_TIMEOUT_MS) <= 0) {
            scrub(msg, msglen, "cannot send LISTEN", NULL);
            goto failed;
        }
    if (f < 0) {
        conn_msg(l, msg, msglen, "cannot send LISTEN");
        goto failed;
    }
    int ok = 0;
    for (;;) {
        while (PQisBusy(l->c)) {
            if (wait_fd(l, PQsocket(l->c), POLLIN, CONNECT_TIMEOUT_MS) <= 0) {
                scrub(msg, msglen, "no answer to LISTEN", NULL);
                goto failed;
            }
            if (!PQconsumeInput(l->c)) {
                conn_msg(l, msg, msglen, "connection lost during LISTEN");
                goto failed;
            }
        }
        PGresult *r = PQgetResult(l->c);
        if (!r)
            break;
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            ok = 1;
        else
            scrub(msg, msglen, PQresultErrorMessage(r), l->secret);
        PQclear(r);
    }
    if (ok)
        return 0;
failed:
    PQfinish(l->c);
    l->c = NULL;
    return -1;
}

/* Rings the channel of every notification received. 0, or -1 when the
 * connection is lost (reason in msg). */
static int drain(struct pgn_listener *l, char *msg, size_t msglen)
{
    if (!PQconsumeInput(l->c)) {
        conn_msg(l, msg, msglen, "connection lost");
        return -1;
    }
    PGnotify *n;
    while ((n = PQnotifies(l->c)) != NULL) {
        if (!strcmp(n->relname, PGN_CHANNEL))
            bell_ring(l->bell, n->extra);
        PQfreemem(n);
    }
    /* an asynchronous error (the backend terminated) with the socket open */
    PGresult *r;
    while (!PQisBusy(l->c) && (r = PQgetResult(l->c)) != NULL)
        PQclear(r);
    if (PQstatus(l->c) != CONNECTION_OK) {
        conn_msg(l, msg, msglen, "connection lost");
        return -1;
    }
    return 0;
}

static void *listener_main(void *arg)
{
    struct pgn_listener *l = arg;
    char msg[400];
    int backoff = BACKOFF_MIN_MS;
    int64_t lost_at = 0;
    unsigned attempts = 0;
    while (!__atomic_load_n(&l->stop, __ATOMIC_SEQ_CST)) {
        if (!l->c) {
            attempts++;
            if (connect_listen(l, msg, sizeof msg) < 0) {
                if (wait_fd(l, -1, 0, backoff) < 0)
                    break;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            l->reconnects++;
            fprintf(stderr, "parley: doorbell: LISTEN connection to %s is back after %lld ms "
                            "(%u attempt%s, reconnection %u); every follower re-reads\n",
                    l->shown, (long long)(mono_ms() - lost_at), attempts,
                    attempts == 1 ? "" : "s", l->reconnects);
            bell_ring_all(l->bell);        /* after LISTEN: nothing falls in between */
            backoff = BACKOFF_MIN_MS;
        }
        int w = wait_fd(l, PQsocket(l->c), POLLIN, -1);
        if (w < 0)
            break;
        if (drain(l, msg, sizeof msg) < 0) {
            fprintf(stderr, "parley: doorbell: LISTEN connection to %s lost (%s); "
                            "reconnecting\n", l->shown, msg);
            PQfinish(l->c);
            l->c = NULL;
            lost_at = mono_ms();
            attempts = 0;
        }
    }
    if (l->c)
        PQfinish(l->c);
    l->c = NULL;
    return NULL;
}

static void wipe_free(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

void pgn_free(struct pgn_listener *l)
{
    if (!l)
        return;
    pgn_stop(l);
    if (l->c)
        PQfinish(l->c);
    if (l->efd >= 0)
        close(l->efd);
    pthread_mutex_destroy(&l->stop_mu);
    wipe_free(l->conninfo);
    wipe_free(l->secret);
    free(l->shown);
    free(l);
}

struct pgn_listener *pgn_listen(const char *conninfo, struct parley_bell *bell,
                                char *err, size_t errlen)
{
    struct pgn_listener *l = calloc(1, sizeof *l);
    if (!l) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    l->efd = -1;
    pthread_mutex_init(&l->stop_mu, NULL);
    l->bell = bell;
    l->conninfo = strdup(conninfo);
    l->shown = db_pg_redact(conninfo, &l->secret);
    snprintf(l->appname, sizeof l->appname, PGN_APPNAME_PREFIX "%ld", (long)getpid());
    l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!l->conninfo || !l->shown) {
        set_err(err, errlen, "out of memory");
        goto error;
    }
    if (l->efd < 0) {
        set_err(err, errlen, "doorbell: eventfd: %s", strerror(errno));
        goto error;
    }
    char msg[400];
    if (connect_listen(l, msg, sizeof msg) < 0) {
        set_err(err, errlen, "%s: doorbell: cannot LISTEN on PostgreSQL: %s", l->shown, msg);
        goto error;
    }
    if (pthread_create(&l->th, NULL, listener_main, l) != 0) {
        set_err(err, errlen, "doorbell: cannot start the listener thread");
        goto error;
    }
    l->running = 1;
    return l;
error:
    pgn_free(l);
    return NULL;
}

void pgn_stop(struct pgn_listener *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->stop_mu);
    __atomic_store_n(&l->stop, 1, __ATOMIC_SEQ_CST);
    if (l->running) {
        uint64_t one = 1;
        ssize_t w = write(l->efd, &one, sizeof one);
        (void)w;                    /* EAGAIN: already signalled */
        pthread_join(l->th, NULL);
        l->running = 0;
    }
    pthread_mutex_unlock(&l->stop_mu);
}
