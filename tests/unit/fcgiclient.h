/* fcgiclient.h — a FastCGI client for tests that speak to the real
 * parley.fcgi over a unix socket, as a web server would: starts and stops
 * the server of the same build directory (../parley.fcgi next to tests/)
 * on a scratch database, opens connections, writes FCGI records and reads
 * the answer. Shared by test_fcgi_keepconn.c and test_fcgi_park.c; every
 * function is static, for one test program each. Single-threaded.
 */
#ifndef PARLEY_TEST_FCGICLIENT_H
#define PARLEY_TEST_FCGICLIENT_H
#include "th.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char sock_path[300], db_file[300], log_file[300];
static char upstream_url[128];   /* OLLAMA_SERVER for the server ("": none reachable) */
static pid_t server = -1;

/* ---- a small FastCGI client ---- */

static int put_len(unsigned char *p, size_t n)
{
    if (n < 128) {
        p[0] = (unsigned char)n;
        return 1;
    }
    p[0] = (unsigned char)(0x80 | (n >> 24));
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
    return 4;
}

static size_t record(unsigned char *out, int type, const void *content, size_t len)
{
    unsigned char *h = out;
    h[0] = 1;
    h[1] = (unsigned char)type;
    h[2] = 0;
    h[3] = 1;                          /* request id 1, as Apache uses */
    h[4] = (unsigned char)(len >> 8);
    h[5] = (unsigned char)len;
    h[6] = 0;
    h[7] = 0;
    if (len)
        memcpy(out + 8, content, len);
    return 8 + len;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends one request. content_length < 0: the body's length. The body, if
 * any, and the end of stdin are sent unless stdin_eof is 0. */
static int fc_send(int fd, int keep, const char *method, const char *uri, const char *body,
                   long content_length, int stdin_eof)
{
    static unsigned char buf[65536];
    unsigned char params[2048];
    size_t pl = 0, n = 0;
    char clen[32];
    size_t blen = body ? strlen(body) : 0;
    snprintf(clen, sizeof clen, "%ld", content_length >= 0 ? content_length : (long)blen);
    const char *query = strchr(uri, '?');
    char path[512];
    snprintf(path, sizeof path, "%.*s", (int)(query ? (size_t)(query - uri) : strlen(uri)), uri);
    const char *kv[][2] = {
        { "REQUEST_METHOD", method }, { "REQUEST_URI", uri }, { "SCRIPT_NAME", path },
        { "QUERY_STRING", query ? query + 1 : "" }, { "CONTENT_LENGTH", clen },
        { "CONTENT_TYPE", "application/json" }, { "REMOTE_ADDR", "127.0.0.1" },
        { "GATEWAY_INTERFACE", "CGI/1.1" },
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        size_t a = strlen(kv[i][0]), b = strlen(kv[i][1]);
        pl += (size_t)put_len(params + pl, a);
        pl += (size_t)put_len(params + pl, b);
        memcpy(params + pl, kv[i][0], a);
        memcpy(params + pl + a, kv[i][1], b);
        pl += a + b;
    }
    unsigned char begin[8] = { 0, 1, (unsigned char)(keep ? 1 : 0), 0, 0, 0, 0, 0 };
    n += record(buf + n, 1, begin, sizeof begin);           /* BEGIN_REQUEST, responder */
    n += record(buf + n, 4, params, pl);                    /* PARAMS */
    n += record(buf + n, 4, NULL, 0);
    if (blen)
        n += record(buf + n, 5, body, blen);                /* STDIN */
    if (stdin_eof)
        n += record(buf + n, 5, NULL, 0);
    return write_all(fd, buf, n);
}

/* Reads one record: its 8-byte header into h, its content and padding into
 * content (room for 65535 + 255). 0, or -1 on timeout, EOF or an error. */
static int fc_record(int fd, int timeout_ms, unsigned char *h, unsigned char *content)
{
    size_t got = 0, want = 8;
    unsigned char *dst = h;
    for (int part = 0; part < 2; part++) {
        while (got < want) {
            struct pollfd pf = { fd, POLLIN, 0 };
            if (poll(&pf, 1, timeout_ms) <= 0)
                return -1;
            ssize_t r = read(fd, dst + got, want - got);
            if (r <= 0)
                return -1;
            got += (size_t)r;
        }
        if (part == 0) {
            want = (size_t)((h[4] << 8) | h[5]) + h[6];
            got = 0;
            dst = content;
        }
    }
    return 0;
}

/* Reads until FCGI_END_REQUEST: 0 with the HTTP status, -1 on timeout, EOF
 * or a protocol error. out (may be NULL): the response (headers and body,
 * cut at outlen - 1 bytes), NUL-terminated. */
static int fc_read_out(int fd, int timeout_ms, int *status, char *out, size_t outlen)
{
    unsigned char h[8], content[65536 + 256];
    char own[16384];
    if (!out || outlen == 0) {
        out = own;
        outlen = sizeof own;
    }
    size_t out_len = 0;
    *status = 0;
    for (;;) {
        if (fc_record(fd, timeout_ms, h, content) < 0)
            return -1;
        size_t clen = (size_t)((h[4] << 8) | h[5]);
        if (h[1] == 6) {                                    /* STDOUT */
            size_t c = clen < outlen - 1 - out_len ? clen : outlen - 1 - out_len;
            memcpy(out + out_len, content, c);
            out_len += c;
        } else if (h[1] == 3) {                             /* END_REQUEST */
            out[out_len] = '\0';
            sscanf(out, "Status: %d", status);
            return 0;
        }
    }
}

/* Reads a streaming response's records, appending its STDOUT text to
 * out (*len bytes so far, NUL-terminated, cut at outlen - 1), until needle
 * is in it: 1; 0 when the request ended (FCGI_END_REQUEST) first; -1 on
 * timeout, EOF or a protocol error. */
static __attribute__((unused)) int fc_read_until(int fd, int timeout_ms, char *out, size_t outlen, size_t *len,
                         const char *needle)
{
    unsigned char h[8], content[65536 + 256];
    for (;;) {
        out[*len] = '\0';
        if (strstr(out, needle))
            return 1;
        if (fc_record(fd, timeout_ms, h, content) < 0)
            return -1;
        size_t clen = (size_t)((h[4] << 8) | h[5]);
        if (h[1] == 6) {                                    /* STDOUT */
            size_t c = clen < outlen - 1 - *len ? clen : outlen - 1 - *len;
            memcpy(out + *len, content, c);
            *len += c;
        } else if (h[1] == 3) {                             /* END_REQUEST */
            out[*len] = '\0';
            return strstr(out, needle) ? 1 : 0;
        }
    }
}

/* fc_read_out without the response text. */
static int fc_read(int fd, int timeout_ms, int *status)
{
    return fc_read_out(fd, timeout_ms, status, NULL, 0);
}

/* 1 if the server closed fd (EOF) within timeout_ms. */
static int fc_closed(int fd, int timeout_ms)
{
    struct pollfd pf = { fd, POLLIN, 0 };
    char b[256];
    while (poll(&pf, 1, timeout_ms) > 0) {
        ssize_t r = read(fd, b, sizeof b);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
        if (r < 0)
            return 0;
    }
    return 0;
}

static int fc_connect(void)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(sock_path) >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* One request on a new, not kept connection: the status, and the body's
 * "sid" into sid when asked. */
static int one_shot(const char *method, const char *uri, const char *body, char *sid, size_t sidlen)
{
    int fd = fc_connect(), st = 0;
    if (fd < 0)
        return -1;
    if (fc_send(fd, 0, method, uri, body, -1, 1) < 0) {
        close(fd);
        return -1;
    }
    /* read the response ourselves to find the sid */
    unsigned char buf[8192];
    size_t n = 0;
    struct pollfd pf = { fd, POLLIN, 0 };
    while (n < sizeof buf - 1 && poll(&pf, 1, 5000) > 0) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
    for (size_t i = 0; i + 8 < n; i++)
        if (memcmp(buf + i, "Status: ", 8) == 0) {
            st = atoi((char *)buf + i + 8);
            break;
        }
    if (sid) {
        const char *s = memmem(buf, n, "\"sid\":\"", 7);
        sid[0] = '\0';
        if (s) {
            s += 7;
            size_t l = strcspn(s, "\"");
            snprintf(sid, sidlen, "%.*s", (int)l, s);
        }
    }
    return st;
}

/* ---- the server ---- */

static int start_server(int threads)
{
    char exe[PATH_MAX], bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(bin, sizeof bin, "%s/../parley.fcgi", exe);
    if (access(bin, X_OK) != 0) {
        printf("# %s is not built (make builds it before the tests)\n", bin);
        return -1;
    }
    char tn[16];
    snprintf(tn, sizeof tn, "%d", threads);
    server = fork();
    if (server < 0)
        return -1;
    if (server == 0) {
        int lf = open(log_file, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
        }
        setenv("PARLEY_DB", db_file, 1);
        setenv("OLLAMA_SERVER", upstream_url[0] ? upstream_url : "http://127.0.0.1:9", 1);
        unsetenv("PARLEY_JWT_SECRET");
        unsetenv("PARLEY_CONFIG");
        execl(bin, bin, "--socket", sock_path, "--threads", tn, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        int fd = fc_connect();
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        struct timespec ts = { 0, 25 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* SIGTERM, then the exit status (-1 if it did not exit within 10 s). */
static int stop_server(void)
{
    if (server <= 0)
        return -1;
    kill(server, SIGTERM);
    int st = 0;
    for (int i = 0; i < 400; i++) {
        pid_t p = waitpid(server, &st, WNOHANG);
        if (p == server) {
            server = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        struct timespec ts = { 0, 25 * 1000000L };
        nanosleep(&ts, NULL);
    }
    kill(server, SIGKILL);
    waitpid(server, &st, 0);
    server = -1;
    return -1;
}

static void show_log(void)
{
    FILE *f = fopen(log_file, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        printf("# server: %s", line);
    if (f)
        fclose(f);
}
#endif
