/* metrics.c — the bridge's counters and their Prometheus text (/metrics on
 * the bridge's own port, and the same text in a stats file the FastCGI app
 * can merge into /api/metrics without a network call).
 *
 * Counters are 64-bit atomics, bumped from any thread. Per-user byte
 * counters live in a table that only grows (at most MAX_USERS entries; the
 * rest count under "(other)"), so a connection keeps a plain pointer
 * to its entry; the text shows only how many users there are and the most
 * bytes one received, never a user's name. Generation latency comes from the jobs' done events as the
 * bridge reads them (each job counted once), so a generation run by a
 * FastCGI process that WebSocket clients watch is measured too.
 */
#include "bridge.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_USERS 4096
#define SEEN_JOBS 512

struct ustat {
    struct ustat *next;
    uint64_t bytes;            /* atomic */
    uint64_t frames;           /* atomic */
    char name[];
};

static const double buckets[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 };
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct histo {
    uint64_t le[NBUCKETS];     /* cumulative at render time; stored per bucket */
    uint64_t count;
    double sum;
};

static struct {
    uint64_t phx_open;         /* of open: Phoenix sockets (/socket/websocket) */
    uint64_t accepted, open, received, received_bytes, sent, sent_bytes;
    uint64_t refused[RF_COUNT], closed[CW_COUNT];
    int64_t gen_waiting, gen_running;
    uint64_t gen_done;
    uint64_t tok_prompt, tok_completion;   /* from done events (docs/usage.md) */
    uint64_t anon_conns, anon_new, anon_msgs;   /* anonymous visitors */
    uint64_t lp[3];            /* long-poll requests answered: GET, POST, other */
    pthread_mutex_t mu;        /* users, errors, histograms, seen jobs */
    struct ustat *users;
    int nusers;
    struct ustat *other;
    json_t *errors;            /* kind -> count */
    json_t *gen_errors;        /* kind -> count */
    struct histo ttft, total;
    int64_t seen[SEEN_JOBS];
    int nseen;
} M = { .mu = PTHREAD_MUTEX_INITIALIZER };

static const char *close_names[CW_COUNT] = {
    "client", "idle_timeout", "slow_consumer", "message_too_big", "binary_message",
    "protocol", "shutdown", "too_many_connections", "unauthorized", "error"
};
static const char *refuse_names[RF_COUNT] = { "not_found", "origin", "unauthorized", "version" };

static void add(uint64_t *p, uint64_t v)
{
    __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void metrics_init(void)
{
    pthread_mutex_lock(&M.mu);
    if (!M.errors)
        M.errors = json_object();
    if (!M.gen_errors)
        M.gen_errors = json_object();
    pthread_mutex_unlock(&M.mu);
}

void metrics_cleanup(void)
{
    pthread_mutex_lock(&M.mu);
    while (M.users) {
        struct ustat *u = M.users;
        M.users = u->next;
        free(u);
    }
    M.nusers = 0;
    M.other = NULL;
    json_decref(M.errors);
    json_decref(M.gen_errors);
    M.errors = M.gen_errors = NULL;
    pthread_mutex_unlock(&M.mu);
}

void metrics_accepted(void) { add(&M.accepted, 1); }
void metrics_anonymous_open(int new_visitor)
{
    add(&M.anon_conns, 1);
    if (new_visitor)
        add(&M.anon_new, 1);
}
void metrics_anonymous_message(void) { add(&M.anon_msgs, 1); }
void metrics_open_delta(int d) { __atomic_add_fetch(&M.open, (uint64_t)(int64_t)d, __ATOMIC_RELAXED); }
void metrics_phx_open_delta(int d)
{
    __atomic_add_fetch(&M.phx_open, (uint64_t)(int64_t)d, __ATOMIC_RELAXED);
}

json_t *metrics_presence_counts(void *ud)
{
    (void)ud;
    int64_t all = (int64_t)get(&M.open), phx = (int64_t)get(&M.phx_open);
    return json_pack("{s:I, s:I, s:i}", "websocket", (json_int_t)(all - phx),
                     "phoenix_websocket", (json_int_t)phx, "longpoll_waiting", httpfront_busy());
}

void metrics_refused(enum refuse_why w) { add(&M.refused[w], 1); }
void metrics_closed(enum close_why w) { add(&M.closed[w], 1); }

void metrics_received(size_t bytes)
{
    add(&M.received, 1);
    add(&M.received_bytes, bytes);
}

void metrics_sent_n(struct ustat *u, int n, size_t bytes)
{
    add(&M.sent, (uint64_t)n);
    add(&M.sent_bytes, bytes);
    if (u) {
        add(&u->frames, (uint64_t)n);
        add(&u->bytes, bytes);
    }
}

static void bump(json_t *obj, const char *kind)
{
    if (!obj)
        return;
    json_t *v = json_object_get(obj, kind);
    json_object_set_new(obj, kind, json_integer(json_integer_value(v) + 1));
}

void metrics_longpoll(const char *method)
{
    add(&M.lp[!strcmp(method, "GET") ? 0 : !strcmp(method, "POST") ? 1 : 2], 1);
}

void metrics_error(const char *kind)
{
    pthread_mutex_lock(&M.mu);
    bump(M.errors, kind);
    pthread_mutex_unlock(&M.mu);
}

void metrics_gen_queue(int waiting_delta, int running_delta)
{
    __atomic_add_fetch(&M.gen_waiting, waiting_delta, __ATOMIC_RELAXED);
    __atomic_add_fetch(&M.gen_running, running_delta, __ATOMIC_RELAXED);
}

static void observe(struct histo *h, double secs)
{
    for (size_t i = 0; i < NBUCKETS; i++)
        if (secs <= buckets[i]) {
            h->le[i]++;
            break;
        }
    h->count++;
    h->sum += secs;
}

void metrics_job_event(const struct evlog_event *ev)
{
    if (ev->job_id <= 0)
        return;
    pthread_mutex_lock(&M.mu);
    for (int i = 0; i < M.nseen && i < SEEN_JOBS; i++)
        if (M.seen[i] == ev->job_id) {
            pthread_mutex_unlock(&M.mu);
            return;
        }
    M.seen[M.nseen++ % SEEN_JOBS] = ev->job_id;
    if (M.nseen >= 2 * SEEN_JOBS)
        M.nseen = SEEN_JOBS;
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!strcmp(ev->type, "done")) {
        json_int_t first = json_integer_value(json_object_get(d, "first_token_ms"));
        json_int_t total = json_integer_value(json_object_get(d, "processing_ms"));
        if (json_object_get(d, "first_token_ms") && first >= 0)
            observe(&M.ttft, (double)first / 1000.0);
        observe(&M.total, (double)total / 1000.0);
        M.gen_done++;
        json_int_t pt = json_integer_value(json_object_get(d, "prompt_tokens"));
        json_int_t ct = json_integer_value(json_object_get(d, "tokens"));
        M.tok_prompt += pt > 0 ? (uint64_t)pt : 0;
        M.tok_completion += ct > 0 ? (uint64_t)ct : 0;
    } else {
        const char *kind = json_string_value(json_object_get(d, "kind"));
        bump(M.gen_errors, kind && *kind ? kind : "unknown");
    }
    json_decref(d);
    pthread_mutex_unlock(&M.mu);
}

struct ustat *metrics_user(const char *user)
{
    /* visitors are counted together: one label per visitor would grow
     * without bound (their own counters: parley_ws_anonymous_*) */
    const char *name = visitor_is(user) ? "(visitors)" : user && *user ? user : "(anonymous)";
    pthread_mutex_lock(&M.mu);
    struct ustat *u;
    for (u = M.users; u; u = u->next)
        if (!strcmp(u->name, name))
            break;
    if (!u && M.nusers >= MAX_USERS) {
        if (!M.other && (M.other = calloc(1, sizeof *M.other + 8))) {
            strcpy(M.other->name, "(other)");
            M.other->next = M.users;
            M.users = M.other;
        }
        u = M.other;
    } else if (!u && (u = calloc(1, sizeof *u + strlen(name) + 1))) {
        strcpy(u->name, name);
        u->next = M.users;
        M.users = u;
        M.nusers++;
    }
    pthread_mutex_unlock(&M.mu);
    return u;
}

/* Prometheus label value: backslash, quote and newline escaped. */
static void label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f), fputc(*s, f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void histo_out(FILE *f, const char *name, const char *help, const struct histo *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += h->le[i];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, buckets[i], (unsigned long long)cum);
    }
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", name,
            (unsigned long long)h->count, name, h->sum, name, (unsigned long long)h->count);
}

static void kinds_out(FILE *f, const char *name, const char *help, json_t *obj)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        fprintf(f, "%s{kind=\"", name);
        label(f, k);
        fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
    }
}

#define COUNTER(f, name, help, v) fprintf(f, "# HELP " name " " help "\n# TYPE " name \
    " counter\n" name " %llu\n", (unsigned long long)(v))
#define GAUGE(f, name, help, v) fprintf(f, "# HELP " name " " help "\n# TYPE " name \
    " gauge\n" name " %lld\n", (long long)(v))

char *metrics_render(const struct bridge *br)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    GAUGE(f, "parley_ws_connections", "Open WebSocket connections.",
          (int64_t)get(&M.open));
    fprintf(f, "# HELP parley_ws_connections_max WEBSOCKET_MAX_CONNECTIONS.\n"
               "# TYPE parley_ws_connections_max gauge\nparley_ws_connections_max %d\n",
            br->cfg.ws_max_connections);
    COUNTER(f, "parley_ws_connections_accepted_total", "WebSocket upgrades accepted.",
            get(&M.accepted));
    fprintf(f, "# HELP parley_ws_refused_total Upgrades refused before the handshake.\n"
               "# TYPE parley_ws_refused_total counter\n");
    for (int i = 0; i < RF_COUNT; i++)
        fprintf(f, "parley_ws_refused_total{reason=\"%s\"} %llu\n", refuse_names[i],
                (unsigned long long)get(&M.refused[i]));
    fprintf(f, "# HELP parley_ws_closes_total Connections ended, by why.\n"
               "# TYPE parley_ws_closes_total counter\n");
    for (int i = 0; i < CW_COUNT; i++)
        fprintf(f, "parley_ws_closes_total{reason=\"%s\"} %llu\n", close_names[i],
                (unsigned long long)get(&M.closed[i]));
    COUNTER(f, "parley_ws_messages_received_total", "Client messages received.",
            get(&M.received));
    COUNTER(f, "parley_ws_anonymous_connections_total",
            "WebSocket connections of anonymous visitors (PARLEY_ANONYMOUS).", get(&M.anon_conns));
    COUNTER(f, "parley_ws_anonymous_visitors_issued_total",
            "Visitor identities issued to WebSocket clients.", get(&M.anon_new));
    COUNTER(f, "parley_ws_anonymous_messages_total", "Client messages of anonymous visitors.",
            get(&M.anon_msgs));
    COUNTER(f, "parley_ws_received_bytes_total", "Bytes of client messages.",
            get(&M.received_bytes));
    COUNTER(f, "parley_ws_messages_sent_total", "Frames sent to clients.", get(&M.sent));
    COUNTER(f, "parley_ws_sent_bytes_total", "Bytes of frames sent to clients.",
            get(&M.sent_bytes));
    fprintf(f, "# HELP parley_ws_longpoll_requests_total Long-poll requests answered here "
               "(handed over by parley.fcgi under mod_fcgid), by method.\n"
               "# TYPE parley_ws_longpoll_requests_total counter\n");
    for (int i = 0; i < 3; i++)
        fprintf(f, "parley_ws_longpoll_requests_total{method=\"%s\"} %llu\n",
                i == 0 ? "GET" : i == 1 ? "POST" : "other", (unsigned long long)get(&M.lp[i]));
    GAUGE(f, "parley_ws_longpoll_open", "Long-poll requests being answered (most of them waiting).",
          (int64_t)httpfront_busy());
    GAUGE(f, "parley_ws_generations_waiting", "Generations waiting for a thread.",
          __atomic_load_n(&M.gen_waiting, __ATOMIC_RELAXED));
    GAUGE(f, "parley_ws_generations_running", "Generations running in this bridge.",
          __atomic_load_n(&M.gen_running, __ATOMIC_RELAXED));

    pthread_mutex_lock(&M.mu);
    /* Per-user numbers as counts, never names: user ids are personal data
     * and this text leaves the host (the stats file merged into
     * /api/metrics, a Prometheus server). Who is heavy: the logs. */
    uint64_t umax = 0;
    int nusers = 0;
    for (struct ustat *u = M.users; u; u = u->next) {
        if (u == M.other)
            continue;
        nusers++;
        uint64_t b = get(&u->bytes);
        umax = b > umax ? b : umax;
    }
    fprintf(f, "# HELP parley_ws_users Distinct users sent frames since the bridge started "
               "(visitors count as one, at most %d).\n"
               "# TYPE parley_ws_users gauge\nparley_ws_users %d\n"
               "# HELP parley_ws_user_sent_bytes_max Most bytes sent to one user since the "
               "bridge started.\n"
               "# TYPE parley_ws_user_sent_bytes_max gauge\nparley_ws_user_sent_bytes_max %llu\n",
            MAX_USERS, nusers, (unsigned long long)umax);
    histo_out(f, "parley_generation_first_token_seconds",
              "Time to first token of finished generations on followed channels.", &M.ttft);
    histo_out(f, "parley_generation_seconds",
              "Total time of finished generations on followed channels.", &M.total);
    kinds_out(f, "parley_generation_errors_total", "Failed generations by kind.", M.gen_errors);
    fprintf(f, "# HELP parley_ws_tokens_total Tokens of finished generations on followed "
               "channels, as the upstream reported them (each job once).\n"
               "# TYPE parley_ws_tokens_total counter\n"
               "parley_ws_tokens_total{kind=\"prompt\"} %llu\n"
               "parley_ws_tokens_total{kind=\"completion\"} %llu\n",
            (unsigned long long)M.tok_prompt, (unsigned long long)M.tok_completion);
    kinds_out(f, "parley_ws_errors_total", "Bridge errors by kind.", M.errors);
    pthread_mutex_unlock(&M.mu);
    /* this bridge's upstreams: breakers, counters, latency (docs/upstreams.md) */
    struct llm_config lc;
    config_llm(&br->cfg, &lc);
    char *ups = llm_upstreams_prom(&lc, "parley_ws");
    if (ups)
        fputs(ups, f);
    free(ups);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int metrics_write_file(const struct bridge *br, const char *path)
{
    char *text = metrics_render(br);
    if (!text)
        return -1;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int rc = -1;
    if (f) {
        rc = fputs(text, f) < 0 ? -1 : 0;
        if (fclose(f) != 0)
            rc = -1;
        if (rc == 0 && rename(tmp, path) != 0)
            rc = -1;
        if (rc < 0)
            unlink(tmp);
    }
    free(text);
    return rc;
}
