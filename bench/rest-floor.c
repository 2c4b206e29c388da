/* rest-floor.c — the floor of bench/http-bench.sh's cached-answer row: a
 * minimal libfcgi responder that answers every request with the same bytes
 * parley.fcgi answers GET /api/tickets/{id}/ai with (status line, headers
 * and body, as parley.fcgi writes them to its FastCGI stdout).
 *
 * The bytes come from a file, read once (at the first request, so that the
 * benchmark can write it after asking parley.fcgi through the same web
 * server), then sent as they are: one FCGX_PutStr, FCGX_Finish_r. No
 * routing, no parameters looked at, no database, no allocation per
 * request. Threads as in libfcgi's threaded example (examples/threaded.c):
 * N threads, each an FCGX_Accept_r loop, the accept serialized by a mutex
 * (REST_FLOOR_ACCEPT_LOCK=0 in its environment: no mutex, every thread in
 * accept() at once, which Linux allows; lighttpd and the mod_proxy_fcgi
 * service pass the variable on, mod_fcgid does not).
 * What is left is the web server, its FastCGI hop and libfcgi: the least
 * any FastCGI application could cost per answer behind that web server on
 * this machine.
 *
 *   rest-floor [--socket PATH [--socket-mode OCTAL]] [--threads N]
 *              [--response FILE]
 *   rest-floor --fetch SOCKET URI     (how the benchmark gets the bytes)
 * --fetch is a FastCGI client instead: it sends one GET of URI to the
 * FastCGI server on the unix socket SOCKET (a parley.fcgi --socket) and
 * writes what the server answers on its stdout, byte for byte, to stdout.
 * Takes the command lines the shipped setups give parley.fcgi (lighttpd
 * spawns it with its socket on fd 0; mod_fcgid likewise, with no
 * arguments; parley-fcgi.service passes --socket), so bench/http-lib.sh
 * starts it exactly the way it starts parley.fcgi. Threads: N, default 16
 * (parley.fcgi's default, which is what mod_fcgid's copies run with).
 * The response file: --response, else $REST_FLOOR_RESPONSE, else the
 * program's own path + ".response". Until the file can be read, requests
 * get a 503. Runs until killed. Not part of Parley: a benchmark's yardstick.
 */
#include "floor.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const char *response_path;
static char exe_response[PATH_MAX + 16];
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static char *response;               /* set once, never freed */
static int response_len;
static int accept_locked = 1;        /* REST_FLOOR_ACCEPT_LOCK=0: no mutex */

/* The response bytes, loaded at the first call that finds the file. */
static const char *response_get(int *len)
{
    pthread_mutex_lock(&load_lock);
    if (!response) {
        FILE *f = fopen(response_path, "rb");
        if (f) {
            char *buf = NULL;
            long n = -1;
            if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && n < (1L << 24) &&
                fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
                fread(buf, 1, (size_t)n, f) == (size_t)n) {
                response = buf;
                response_len = (int)n;
            } else {
                free(buf);
            }
            fclose(f);
        }
    }
    const char *r = response;
    *len = response_len;
    pthread_mutex_unlock(&load_lock);
    return r;
}

static void *worker(void *arg)
{
    (void)arg;
    FCGX_Request rq;
    FCGX_InitRequest(&rq, listen_fd, 0);
    const char *resp = NULL;
    int len = 0;
    for (;;) {
        if (floor_accept(&rq, accept_locked) < 0)
            break;
        if (!resp)
            resp = response_get(&len);
        if (resp) {
            FCGX_PutStr(resp, len, rq.out);
        } else {
            static const char no[] = "Status: 503 Service Unavailable\r\n"
                                     "Content-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
                                     "no response\n";
            FCGX_PutStr(no, (int)sizeof no - 1, rq.out);
        }
        FCGX_Finish_r(&rq);
    }
    return NULL;
}

/* ---- --fetch: a minimal FastCGI client ---- */

static int put_pair(unsigned char *b, size_t *n, size_t cap, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    if (kl > 127 || vl > 127 || *n + 2 + kl + vl > cap)
        return -1;
    b[(*n)++] = (unsigned char)kl;
    b[(*n)++] = (unsigned char)vl;
    memcpy(b + *n, k, kl);
    *n += kl;
    memcpy(b + *n, v, vl);
    *n += vl;
    return 0;
}

static int put_record(int fd, int type, const unsigned char *content, size_t len)
{
    unsigned char h[8] = { 1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8),
                           (unsigned char)len, 0, 0 };
    if (write(fd, h, 8) != 8)
        return -1;
    return len && write(fd, content, len) != (ssize_t)len ? -1 : 0;
}

static int read_full(int fd, unsigned char *b, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, b + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int fetch(const char *sock, const char *uri)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock) >= sizeof sa.sun_path)
        return 1;
    strcpy(sa.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "rest-floor --fetch: cannot connect to %s\n", sock);
        return 1;
    }
    static const unsigned char begin[8] = { 0, 1, 0, 0, 0, 0, 0, 0 };   /* RESPONDER */
    unsigned char p[2048];
    size_t n = 0;
    const char *q = strchr(uri, '?');
    char path[256];
    snprintf(path, sizeof path, "%.*s", q ? (int)(q - uri) : (int)strlen(uri), uri);
    if (put_pair(p, &n, sizeof p, "GATEWAY_INTERFACE", "CGI/1.1") ||
        put_pair(p, &n, sizeof p, "SERVER_PROTOCOL", "HTTP/1.1") ||
        put_pair(p, &n, sizeof p, "REQUEST_METHOD", "GET") ||
        put_pair(p, &n, sizeof p, "REQUEST_URI", uri) ||
        put_pair(p, &n, sizeof p, "SCRIPT_NAME", path) ||
        put_pair(p, &n, sizeof p, "QUERY_STRING", q ? q + 1 : "") ||
        put_pair(p, &n, sizeof p, "REMOTE_ADDR", "127.0.0.1") ||
        put_pair(p, &n, sizeof p, "SERVER_NAME", "127.0.0.1") ||
        put_pair(p, &n, sizeof p, "HTTP_HOST", "127.0.0.1") ||
        put_record(fd, 1, begin, 8) < 0 || put_record(fd, 4, p, n) < 0 ||
        put_record(fd, 4, NULL, 0) < 0 || put_record(fd, 5, NULL, 0) < 0) {
        fprintf(stderr, "rest-floor --fetch: cannot send the request\n");
        return 1;
    }
    for (;;) {
        unsigned char h[8], c[65536 + 256];
        if (read_full(fd, h, 8) < 0)
            break;
        size_t len = (size_t)h[4] << 8 | h[5], pad = h[6];
        if (read_full(fd, c, len + pad) < 0)
            break;
        if (h[1] == 6 && len && fwrite(c, 1, len, stdout) != len)
            return 1;
        if (h[1] == 7)
            fwrite(c, 1, len, stderr);
        if (h[1] == 3) {
            close(fd);
            return fflush(stdout) == 0 ? 0 : 1;
        }
    }
    fprintf(stderr, "rest-floor --fetch: the connection ended before FCGI_END_REQUEST\n");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--fetch"))
        return fetch(argv[2], argv[3]);
    struct floor_opts o = { .threads = 16 };
    floor_args(argc, argv, &o);
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--response"))
            response_path = argv[i + 1];
    if (!response_path)
        response_path = getenv("REST_FLOOR_RESPONSE");
    if (!response_path || !*response_path) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) {
            fprintf(stderr, "rest-floor: no --response and no /proc/self/exe\n");
            return 1;
        }
        exe[n] = '\0';
        snprintf(exe_response, sizeof exe_response, "%s.response", exe);
        response_path = exe_response;
    }
    const char *al = getenv("REST_FLOOR_ACCEPT_LOCK");
    if (al && !strcmp(al, "0"))
        accept_locked = 0;
    if (floor_listen(&o, "rest-floor") < 0)
        return 1;
    fprintf(stderr, "rest-floor[%ld]: serving %s with %d threads\n", (long)getpid(),
            response_path, o.threads);
    floor_run(o.threads, 0, worker, "rest-floor");
    return 0;
}
