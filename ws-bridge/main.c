/* main.c — parley-ws: options, configuration, the lws context, threads,
 * the service loop and a clean shutdown. The protocol lives in service.c,
 * the workers in sched.c, generations in gen.c (bridge.h has the map).
 *
 *   parley-ws [--listen HOST:PORT | --socket PATH] [--workers N]
 *             [--gen-threads N] [--max-frame BYTES] [--ping SECS]
 *             [--log FILE] [--stats-file FILE|-] [--drain SECS]
 *             [--port-file FILE] [--socket-mode OCTAL]
 * Settings shared with the other programs (PARLEY_DB, OLLAMA_SERVER,
 * WEBSOCKET_*, PARLEY_JWT_SECRET...) come from config_load().
 * Runs in the main thread (the lws service thread) plus the signal thread.
 */
#include "bridge.h"
#include "ident.h"
#include "log.h"
#include "presence.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct bridge B;
static pthread_t sig_th;
static struct presence *presence;     /* this process's presence row (core/presence.h) */
static volatile int sig_exit;

/* Points stderr at the log file (again, after SIGHUP). 0 / -1. */
static int log_open(const char *path)
{
    if (!path)
        return 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    if (dup2(fd, STDERR_FILENO) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* The signal thread: the other threads block these signals. */
static void *signal_main(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig_exit)
            break;
        if (sig == SIGHUP) {
            if (log_open(B.opt.log_path) < 0)
                wslog("SIGHUP: cannot reopen %s: %s", B.opt.log_path, strerror(errno));
            else
                wslog("SIGHUP: log reopened");
            continue;
        }
        wslog("%s received", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        __atomic_store_n(&B.stopping, 1, __ATOMIC_RELEASE);
        if (B.lws)
            lws_cancel_service(B.lws);
    }
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: parley-ws [options]\n"
        "  --listen HOST:PORT   listen on TCP (default 127.0.0.1:8081; port 0 picks one)\n"
        "  --socket PATH        listen on a unix socket instead\n"
        "  --socket-mode OCTAL  its permissions (default 660)\n"
        "  --port-file FILE     write the port listened on to FILE\n"
        "  --workers N          database worker threads (default 4)\n"
        "  --gen-threads N      most generations streaming at once (default PARLEY_MAX_GENERATIONS,\n"
        "                       1024); all run on one event-loop thread; more wait in a queue\n"
        "  --max-frame BYTES    largest client message (default 65536); bigger: close 1009\n"
        "  --ping SECS          WebSocket ping after SECS without a pong; hang up after 2 x SECS (30)\n"
        "  --log FILE           log to FILE (reopened on SIGHUP) instead of stderr\n"
        "  --stats-file FILE    Prometheus text rewritten every 5 s (default <PARLEY_NODE_PREFIX>-ws.prom;\n"
        "                       '-' for none)\n"
        "  --drain SECS         at exit, wait this long for running generations (default 10)\n"
        "  --event-loop ev|poll lws event loop: libev/epoll (default; falls back to poll when\n"
        "                       the libwebsockets-evlib-ev plugin is missing) or poll()\n"
        "Settings (PARLEY_DB, OLLAMA_SERVER, WEBSOCKET_MAX_CONNECTIONS, WEBSOCKET_TIMEOUT,\n"
        "PARLEY_JWT_SECRET, PARLEY_ALLOWED_ORIGINS...) come from the environment or\n"
        "PARLEY_CONFIG: see docs/configuration.md and docs/ws-bridge.md.\n");
}

static int int_arg(const char *name, const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || !*v || *end || n < min || n > max) {
        fprintf(stderr, "parley-ws: %s must be an integer from %ld to %ld, got '%s'\n", name, min,
                max, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_args(int argc, char **argv, struct bridge_opts *o, const char **port_file,
                      long *sock_mode)
{
    static char host[256];
    static const struct option longopts[] = {
        { "listen", required_argument, NULL, 'l' }, { "socket", required_argument, NULL, 's' },
        { "socket-mode", required_argument, NULL, 'm' }, { "port-file", required_argument, NULL, 'P' },
        { "workers", required_argument, NULL, 'w' }, { "gen-threads", required_argument, NULL, 'g' },
        { "max-frame", required_argument, NULL, 'f' }, { "ping", required_argument, NULL, 'p' },
        { "log", required_argument, NULL, 'L' }, { "stats-file", required_argument, NULL, 'S' },
        { "drain", required_argument, NULL, 'd' }, { "event-loop", required_argument, NULL, 'e' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int ch;
    long n;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'l': {
            const char *colon = strrchr(optarg, ':');
            if (!colon || colon == optarg || (size_t)(colon - optarg) >= sizeof host ||
                int_arg("--listen port", colon + 1, 0, 65535, &n) < 0) {
                fprintf(stderr, "parley-ws: --listen wants HOST:PORT, got '%s'\n", optarg);
                return -1;
            }
            const char *h = optarg;
            size_t hl = (size_t)(colon - optarg);
            if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {   /* [::1]:8081 */
                h++;
                hl -= 2;
            }
            memcpy(host, h, hl);
            host[hl] = '\0';
            o->host = host;
            o->port = (int)n;
            break;
        }
        case 's': o->socket_path = optarg; break;
        case 'm': {
            char *end;
            n = strtol(optarg, &end, 8);
            if (!*optarg || *end || n < 0 || n > 0777) {
                fprintf(stderr, "parley-ws: --socket-mode wants an octal mode, got '%s'\n", optarg);
                return -1;
            }
            *sock_mode = n;
            break;
        }
        case 'P': *port_file = optarg; break;
        case 'w': if (int_arg("--workers", optarg, 1, 256, &n) < 0) return -1; o->workers = (int)n; break;
        case 'g': if (int_arg("--gen-threads", optarg, 1, 100000, &n) < 0) return -1; o->gen_threads = (int)n; break;
        case 'f': if (int_arg("--max-frame", optarg, 128, 64 << 20, &n) < 0) return -1; o->max_message = (size_t)n; break;
        case 'p': if (int_arg("--ping", optarg, 1, 3600, &n) < 0) return -1; o->ping_s = (int)n; break;
        case 'L': o->log_path = optarg; break;
        case 'S': o->stats_path = optarg; break;
        case 'd': if (int_arg("--drain", optarg, 0, 3600, &n) < 0) return -1; o->drain_s = (int)n; break;
        case 'e':
            if (strcmp(optarg, "ev") != 0 && strcmp(optarg, "poll") != 0) {
                fprintf(stderr, "parley-ws: --event-loop must be ev or poll, got '%s'\n", optarg);
                return -1;
            }
            o->event_poll = !strcmp(optarg, "poll");
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "parley-ws: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

void bridge_mark(struct bridge *br, int on)
{
    if (!br->up_path[0])
        return;
    if (!on) {
        if (unlink(br->up_path) < 0 && errno != ENOENT)
            wslog("cannot remove %s: %s", br->up_path, strerror(errno));
        return;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", br->up_path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 ||
        rename(tmp, br->up_path) < 0)
        wslog("cannot write %s (long-poll stays with parley.fcgi): %s", br->up_path,
              strerror(errno));
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%d", port);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

int main(int argc, char **argv)
{
    struct bridge_opts *o = &B.opt;
    o->host = "127.0.0.1";
    o->port = 8081;
    o->workers = 4;
    o->gen_threads = 0;              /* 0: PARLEY_MAX_GENERATIONS */
    o->max_message = 65536;
    o->ping_s = 30;
    o->stats_every_s = 5;
    o->drain_s = 10;
    o->out_high = 64;
    o->out_high_bytes = 256 * 1024;
    o->out_hard = 256;
    o->out_hard_bytes = 1024 * 1024;
    o->stall_s = 30;
    const char *port_file = NULL;
    long sock_mode = 0660;
    if (parse_args(argc, argv, o, &port_file, &sock_mode) < 0)
        return 2;
    if (o->log_path && log_open(o->log_path) < 0) {
        fprintf(stderr, "parley-ws: cannot open log %s: %s\n", o->log_path, strerror(errno));
        return 1;
    }

    /* only the signal thread takes these; every thread inherits the mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    if (config_load(&B.cfg, err, sizeof err) < 0) {
        fprintf(stderr, "parley-ws: configuration: %s\n", err);
        return 1;
    }
    if (config_open_mode(&B.cfg))
        wslog("WARNING: PARLEY_JWT_SECRET is not set: open development mode, no token "
              "needed, every client is the same anonymous user");
    if (llm_global_init() != 0) {
        wslog("cannot initialise libcurl");
        config_cleanup(&B.cfg);
        return 1;
    }
    parley_db *db = db_open(B.cfg.db_path, err, sizeof err);   /* migrations, once */
    if (!db) {
        wslog("%s", err);
        config_cleanup(&B.cfg);
        return 1;
    }
    db_close(db);
    char statspath[4096];
    const char *node = config_node_prefix(&B.cfg);   /* config_load refused NULL */
    if (!node || (size_t)snprintf(statspath, sizeof statspath, "%s-ws.prom", node) >=
                     sizeof statspath) {
        wslog("configuration: PARLEY_NODE_PREFIX (default: PARLEY_DB) is too long");
        config_cleanup(&B.cfg);
        return 1;
    }
    B.bell = bell_open_db(B.cfg.db_path, err, sizeof err);
    if (!B.bell) {
        wslog("%s", err);
        config_cleanup(&B.cfg);
        return 1;
    }
    if (!o->stats_path) {
        o->stats_path = statspath;
    } else if (!strcmp(o->stats_path, "-")) {
        o->stats_path = NULL;
    }
    pthread_mutex_init(&B.mu, NULL);
    pthread_cond_init(&B.cv, NULL);
    pthread_mutex_init(&B.notify_mu, NULL);
    metrics_init();

    lws_set_log_level(LLL_ERR | LLL_WARN, wslog_lws);
    static lws_retry_bo_t retry;
    retry.secs_since_valid_ping = (uint16_t)o->ping_s;
    retry.secs_since_valid_hangup = (uint16_t)(2 * o->ping_s);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.protocols = bridge_protocols;
    info.user = &B;
    info.vhost_name = "default";
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.retry_and_idle_policy = &retry;
    info.max_http_header_data = 16384;   /* a ?token= over AUTH_MAX_TOKEN still reaches
                                           on_established: 4401 "token too long" */
    info.timeout_secs = 10;
    if (o->socket_path) {
        info.options |= LWS_SERVER_OPTION_UNIX_SOCK;
        info.iface = o->socket_path;
        info.port = 0;
    } else {
        info.iface = o->host;
        info.port = o->port;
        if (!strchr(o->host, ':'))
            info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    }
    int rc = 1, gen_left = 0;
    struct lws_context *ctx = NULL;
    if (!o->event_poll) {
        /* libev (epoll): a wake-up costs O(ready sockets), where poll()
         * scans every connection; lws loads it as a plugin */
        info.options |= LWS_SERVER_OPTION_LIBEV;
        ctx = lws_create_context(&info);
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_LIBEV;
        if (!ctx) {
            wslog("libev event loop unavailable (libwebsockets-evlib-ev?): using poll()");
            o->event_poll = 1;
        }
    }
    if (!ctx)
        ctx = lws_create_context(&info);
    if (!ctx) {
        wslog("cannot listen on %s%s%d", o->socket_path ? o->socket_path : o->host,
              o->socket_path ? "" : ":", o->socket_path ? 0 : o->port);
        goto out;
    }
    B.lws = ctx;
    if (o->socket_path && chmod(o->socket_path, (mode_t)sock_mode) != 0)
        wslog("chmod %s: %s", o->socket_path, strerror(errno));
    int port = o->socket_path ? 0 : lws_get_vhost_listen_port(lws_get_vhost_by_name(ctx, "default"));
    if (sched_start(&B) < 0 || gen_start(&B) < 0 || httpfront_start(&B) < 0) {
        wslog("cannot start threads or open the database");
        goto stop;
    }
    if (pthread_create(&sig_th, NULL, signal_main, NULL) != 0)
        goto stop;
    /* this process's row of open connections for the admin page */
    presence = presence_start(&B.cfg, "parley-ws", metrics_presence_counts, NULL);
    if ((size_t)snprintf(B.up_path, sizeof B.up_path, "%s-ws.up", node) >= sizeof B.up_path)
        B.up_path[0] = '\0';
    bridge_mark(&B, 1);
    if (port_file && write_port_file(port_file, port) < 0)
        wslog("cannot write %s: %s", port_file, strerror(errno));
    if (o->socket_path)
        wslog("listening on unix socket %s (%d workers, at most %d generations at once)",
              o->socket_path, o->workers, B.cfg.max_generations);
    else
        wslog("listening on %s:%d (%d workers, at most %d generations at once)", o->host, port,
              o->workers, B.cfg.max_generations);

    while (!B.service_done)
        if (lws_service(ctx, 0) < 0)
            break;
    rc = 0;
stop:
    bridge_mark(&B, 0);
    B.lws = NULL;                    /* workers stop waking the loop */
    /* closes what is left (T_CLOSE tasks); with libev this completes the
     * destroy the sweep started inside the loop */
    lws_context_destroy(ctx);
    httpfront_stop();
    sched_stop(&B);
    gen_left = gen_stop(&B, o->drain_s) < 0;
    presence_stop(presence);             /* deletes this process's row */
    presence = NULL;
    if (o->stats_path)
        metrics_write_file(&B, o->stats_path);
    if (sig_th) {
        sig_exit = 1;
        pthread_kill(sig_th, SIGTERM);
        pthread_join(sig_th, NULL);
    }
    wslog("stopped");
    if (gen_left) {                  /* threads still use the config and bell */
        fflush(NULL);
        _exit(rc);
    }
out:
    metrics_cleanup();
    bell_close(B.bell);
    config_cleanup(&B.cfg);
    return rc;
}
