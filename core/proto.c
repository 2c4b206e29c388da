/* proto.c — the adapter dispatcher and what all adapters share: routing,
 * frames, following a channel, job hand-off, (de)serialisation (proto.h). */
#include "proto_impl.h"
#include "ident.h"
#include "kb.h"
#include "ratelimit.h"
#include "usage.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- frames ---- */

void frames_init(struct proto_frames *f)
{
    memset(f, 0, sizeof *f);
}

int frames_push(struct proto_frames *f, json_t *o)
{
    if (!o)
        return -1;
    /* 15 significant digits: 0.67 stays "0.67", not 0.67000000000000004 */
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(o);
    if (!s)
        return -1;
    if (f->n == f->cap) {
        int ncap = f->cap ? f->cap * 2 : 8;
        char **nv = realloc(f->v, sizeof *nv * (size_t)ncap);
        if (!nv) {
            free(s);
            return -1;
        }
        f->v = nv;
        f->cap = ncap;
    }
    f->v[f->n++] = s;
    return 0;
}

void frames_free(struct proto_frames *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->v[i]);
    free(f->v);
    frames_init(f);
}

/* ---- helpers for adapters ---- */

const char *proto_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

size_t proto_utf8_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80)
            n++;
    return n;
}

void proto_timestamp(char out[32], int64_t ms, int naive)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!naive)
        snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

json_t *proto_with_seq(const struct proto_conn *c, const struct evlog_event *ev, json_t *o)
{
    if (c->with_seq && o && ev)
        json_object_set_new(o, "seq", json_integer(ev->seq));
    return o;
}

char *proto_event_error(const struct evlog_event *ev, const char **code)
{
    json_t *o = json_loads(ev->data, 0, NULL);
    const char *m = proto_str(o, "message");
    char *s = strdup(m && *m ? m : "the answer could not be generated");
    const char *known = perr_code_known(proto_str(o, "code"));
    *code = known ? known : perr_gen_code(proto_str(o, "kind"), 0);
    json_decref(o);
    return s;
}

int proto_rate_ok(struct parley_ctx *ctx, const struct proto_conn *c)
{
    return ratelimit_hit(ctx->db, c->peer, ctx->cfg->rate_limit_per_min, 60000, now_ms(), NULL);
}

int proto_budget_ok(struct parley_ctx *ctx, const struct proto_conn *c, char *msg, size_t len)
{
    return usage_budget_ok(ctx->db, c->user, ctx->cfg->token_budget_per_day,
                           c->has_token_budget ? c->token_budget : -1, now_ms(), msg, len);
}

int proto_fail(struct proto_conn *c, enum perr kind, const char *msg)
{
    c->err = kind;
    str_copy(c->err_msg, sizeof c->err_msg, msg && *msg ? msg : perr_text(kind));
    return 0;
}

void proto_follow(struct proto_conn *c, const char *channel, int64_t job_id, int64_t after)
{
    str_copy(c->channel, sizeof c->channel, channel);
    json_object_set_new(c->state, "last_channel", json_string(channel));
    c->job_id = job_id;
    c->cursor = after;
}

void proto_unfollow(struct proto_conn *c)
{
    c->channel[0] = '\0';
    c->job_id = 0;
    c->cursor = 0;
}

int proto_following(const struct proto_conn *c)
{
    return c->channel[0] != '\0';
}

/* ---- jobs ---- */

struct proto_job *proto_job_new(void)
{
    struct proto_job *j = calloc(1, sizeof *j);
    if (j)
        j->req.llm.temperature = -1;
    return j;
}

char *proto_job_keep(struct proto_job *job, const char *s)
{
    if (!s || job->nowned >= (int)(sizeof job->owned / sizeof job->owned[0]))
        return NULL;
    char *d = strdup(s);
    if (d)
        job->owned[job->nowned++] = d;
    return d;
}

int proto_job_ground(struct parley_ctx *ctx, struct proto_job *job, int enabled,
                     const char *base, const char *question, const char **system, int *rag,
                     double *conf)
{
    int rag_n = 0;
    double confidence = -1;
    *system = base;
    if (rag)
        *rag = 0;
    if (conf)
        *conf = -1;
    if (!enabled)
        return 0;
    struct kb_grounding g;
    if (kb_ground(ctx->db, question, base, ctx->cfg->kb_passages,
                  (size_t)ctx->cfg->kb_context_bytes, &g) != KB_OK)
        return -1;
    if (g.system) {
        *system = proto_job_keep(job, g.system);
        if (!*system || kb_key_ground(job->ans.key, sizeof job->ans.key, *system) < 0)
            *system = NULL;
        rag_n = g.used;
        confidence = g.confidence;
    }
    kb_grounding_free(&g);
    if (rag)
        *rag = rag_n;
    if (conf)
        *conf = confidence;
    return *system ? 0 : -1;
}

void proto_job_free(struct proto_job *job)
{
    if (!job)
        return;
    for (int i = 0; i < job->nowned; i++)
        free(job->owned[i]);
    free(job);
}

int proto_job_hold(struct parley_ctx *ctx, struct proto_job *job)
{
    return jobs_adopt(ctx->db, &job->claim, ctx->cfg->lease_ms);
}

int proto_job_conversation(struct parley_ctx *ctx, struct proto_job *job, const char *conv_id,
                           const char *user_msg_id)
{
    int want = ctx->cfg->context_messages;
    if (want < 1)
        want = 1;                         /* the model needs the question at least */
    if (want > PROTO_JOB_MAX_MSGS)
        want = PROTO_JOB_MAX_MSGS;
    struct message *hist = NULL;
    int nh = 0;
    if (store_msg_context_for(ctx->db, conv_id, user_msg_id, want, &hist, &nh) < 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < nh && rc == 0; i++) {
        const char *role = hist[i].role;
        job->msgs[i].role = !strcmp(role, "assistant") ? "assistant"
                          : !strcmp(role, "system") ? "system" : "user";
        job->msgs[i].content = proto_job_keep(job, hist[i].content);
        if (!job->msgs[i].content)
            rc = -1;
    }
    store_msgs_free(hist, nh);
    snprintf(job->channel, sizeof job->channel, "conv:%s", conv_id);
    job->req.channel = job->channel;
    job->req.prompt_key = proto_job_keep(job, user_msg_id);
    job->req.conversation_id = proto_job_keep(job, conv_id);
    job->req.llm.messages = job->msgs;
    job->req.llm.n_messages = (size_t)nh;
    job->req.llm.temperature = ctx->cfg->temperature;
    if (!job->req.prompt_key || !job->req.conversation_id)
        rc = -1;
    return rc;
}

const char *proto_job_channel(const struct proto_job *job)
{
    return job->channel;
}

int proto_start(struct parley_ctx *ctx, struct proto_conn *c, struct proto_job *job,
                struct proto_job **out)
{
    *out = NULL;
    char err[256];
    if (!job->req.user)
        job->req.user = proto_job_keep(job, c->user);   /* NULL on OOM: nobody can stop it */
    if (runner_claim(ctx, &job->req, &job->claim, err, sizeof err) < 0) {
        fprintf(stderr, "parley: %s\n", err);
        proto_job_free(job);
        return -1;
    }
    proto_follow(c, job->req.channel, job->claim.job_id, job->claim.first_seq);
    if (job->claim.owner)
        *out = job;
    else
        proto_job_free(job);
    return 0;
}

int proto_job_run(struct parley_ctx *ctx, struct proto_job *job)
{
    /* runner_execute takes the lease over from the claiming thread. */
    struct gen_outcome out;
    int rc = runner_execute(ctx, &job->req, &job->claim, &out);
    gen_outcome_free(&out);
    return rc;
}

int proto_event_stopped(const struct evlog_event *ev)
{
    if (strcmp(ev->type, "done") != 0)
        return 0;
    json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
    int st = json_is_true(json_object_get(d, "stopped"));
    json_decref(d);
    return st;
}

int proto_stop_channel(struct parley_ctx *ctx, const char *channel, int64_t job_id,
                       const char *user, int admin, enum perr *kind, const char **msg,
                       int64_t *job)
{
    *kind = PERR_OK;
    *msg = NULL;
    int rc = jobs_request_stop(ctx->db, ctx->bell, channel, job_id, user, admin, job);
    switch (rc) {
    case JOBS_STOP_OK:
        return rc;
    case JOBS_STOP_NONE:
        *kind = PERR_NOT_FOUND;
        *msg = PROTO_STOP_NONE_MSG;
        break;
    case JOBS_STOP_OVER:
        *kind = PERR_CONFLICT;
        *msg = PROTO_STOP_OVER_MSG;
        break;
    case JOBS_STOP_FOREIGN:
        *kind = PERR_FORBIDDEN;
        *msg = PROTO_STOP_FOREIGN_MSG;
        break;
    default:
        *kind = db_err_kind(ctx->db);
        *msg = db_err_text(ctx->db, "Database error: please try again");
        rc = JOBS_STOP_ERR;
        break;
    }
    return rc;
}

int proto_stop(struct parley_ctx *ctx, struct proto_conn *c, const char *channel, int64_t job_id,
               enum perr *kind, const char **msg)
{
    if (job_id <= 0 && proto_following(c) && c->job_id > 0 && !strcmp(c->channel, channel))
        job_id = c->job_id;
    int rc = proto_stop_channel(ctx, channel, job_id, c->user, c->admin, kind, msg, NULL);
    if (rc != JOBS_STOP_OK)
        proto_fail(c, *kind, *msg);
    return rc;
}

/* ---- dispatch ---- */

static const struct proto_ops *ops_of(enum proto_kind k)
{
    switch (k) {
    case PROTO_TICKET: return &proto_ticket_ops;
    case PROTO_CHAT: return &proto_chat_ops;
    case PROTO_BRAND: return &proto_brand_ops;
    case PROTO_SEND: return &proto_send_ops;
    case PROTO_PHOENIX: return &proto_phoenix_ops;
    case PROTO_AISDK: return &proto_aisdk_ops;
    case PROTO_OPENAI: return &proto_openai_ops;
    }
    return NULL;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes [s, s+n) into out; -1 on a bad escape, NUL, '/' or overflow. */
static int decode_segment(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval((unsigned char)s[i + 1]);
            int lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || ch == '/' || o + 1 >= outlen)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return o > 0 ? 0 : -1;
}

int proto_route(const char *path, enum proto_kind *kind, char *param, size_t plen)
{
    static const struct { const char *prefix; enum proto_kind kind; } routes[] = {
        { "/api/websocket/chat/", PROTO_TICKET },
        { "/ws/chat/", PROTO_BRAND },
        { "/ws/", PROTO_CHAT },
    };
    size_t len = strcspn(path, "?#");
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t pl = strlen(routes[i].prefix);
        if (len <= pl || strncmp(path, routes[i].prefix, pl) != 0)
            continue;
        const char *seg = path + pl;
        size_t sl = len - pl;
        if (seg[sl - 1] == '/')          /* tolerate one trailing slash */
            sl--;
        if (sl == 0 || memchr(seg, '/', sl))
            return -1;
        if (decode_segment(seg, sl, param, plen) < 0)
            return -1;
        *kind = routes[i].kind;
        return 0;
    }
    return -1;
}

/* Value of query parameter name in path's query (decoded into out). */
static int query_param(const char *path, const char *name, char *out, size_t outlen)
{
    const char *q = strchr(path, '?');
    if (!q)
        return -1;
    size_t nl = strlen(name);
    for (const char *p = q + 1; *p;) {
        size_t seg = strcspn(p, "&#");
        if (seg > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            size_t vl = seg - nl - 1;
            if (vl == 0) {
                out[0] = '\0';
                return 0;
            }
            return decode_segment(p + nl + 1, vl, out, outlen);
        }
        p += seg;
        if (*p != '&')
            break;
        p++;
    }
    return -1;
}

int proto_open(struct parley_ctx *ctx, struct proto_conn *c, const char *path,
               const char *user, const char *peer, struct proto_frames *out)
{
    return proto_open_client(ctx, c, path, user, peer, NULL, out);
}

int proto_open_client(struct parley_ctx *ctx, struct proto_conn *c, const char *path,
                      const char *user, const char *peer, const struct proto_client *cl,
                      struct proto_frames *out)
{
    memset(c, 0, sizeof *c);
    c->state = json_object();
    str_copy(c->user, sizeof c->user, user ? user : "");
    str_copy(c->peer, sizeof c->peer, peer && *peer ? peer : "anonymous");
    /* tickets per tenant only while PARLEY_TENANT_CLAIM is set */
    if (ctx->cfg->tenant_claim && *ctx->cfg->tenant_claim)
        ident_tenant_scope(cl ? cl->tenant : NULL, c->tenant_scope);
    size_t pl = strlen(PROTO_PHOENIX_PATH);
    if (c->state && !strcmp(path, PROTO_SEND_PATH))
        c->kind = PROTO_SEND;           /* HTTP only: no path parameter */
    else if (c->state && !strcmp(path, PROTO_AISDK_PATH))
        c->kind = PROTO_AISDK;          /* HTTP only, like seed 004 */
    else if (c->state && !strcmp(path, "/v1/chat/completions"))
        c->kind = PROTO_OPENAI;         /* HTTP only (proto_openai.h PROTO_OPENAI_PATH) */
    else if (c->state && !strncmp(path, PROTO_PHOENIX_PATH, pl) &&
             decode_segment(path + pl, strcspn(path + pl, "?#"), c->param, sizeof c->param) == 0)
        c->kind = PROTO_PHOENIX;        /* a Phoenix topic (proto_phoenix_join) */
    else if (!c->state || proto_route(path, &c->kind, c->param, sizeof c->param) < 0) {
        proto_fail(c, c->state ? PERR_NOT_FOUND : PERR_INTERNAL, "unknown path");
        c->close = 1;
        c->close_code = 1008;
        str_copy(c->close_reason, sizeof c->close_reason, "unknown path");
        return -1;
    }
    char v[32];
    if (query_param(path, "seq", v, sizeof v) == 0 && (!strcmp(v, "1") || !strcmp(v, "true")))
        c->with_seq = 1;
    int64_t after = -1;
    if (query_param(path, "after", v, sizeof v) == 0) {
        char *end;
        long long n = strtoll(v, &end, 10);
        if (*end == '\0' && n >= 0)
            after = n;
    }
    json_object_set_new(c->state, "resume_after", json_integer(after));
    /* seed 001's session metadata and project (the adapter validates) */
    struct proto_client who = { 0 };
    if (cl)
        who = *cl;
    char version[129], project[256];
    if ((!who.client_version || !*who.client_version) &&
        query_param(path, "client_version", version, sizeof version) == 0)
        who.client_version = version;
    who.project_id = NULL;
    if (query_param(path, "project_id", project, sizeof project) == 0)
        who.project_id = project;
    else if (strstr(path, "?project_id=") || strstr(path, "&project_id="))
        who.project_id = "\x01";          /* present but undecodable: refused as invalid */
    return ops_of(c->kind)->open(ctx, c, &who, out);
}

int proto_message_json(struct parley_ctx *ctx, struct proto_conn *c, json_t *msg,
                       struct proto_frames *out, struct proto_job **job)
{
    *job = NULL;
    c->err = PERR_OK;
    c->err_msg[0] = '\0';
    return ops_of(c->kind)->message(ctx, c, msg, out, job);
}

int proto_message(struct parley_ctx *ctx, struct proto_conn *c, const char *text,
                  size_t len, struct proto_frames *out, struct proto_job **job)
{
    *job = NULL;
    c->err = PERR_OK;
    c->err_msg[0] = '\0';
    json_error_t jerr;
    json_t *msg = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = ops_of(c->kind)->message(ctx, c, msg, out, job);
    json_decref(msg);
    return rc;
}

int proto_event(struct parley_ctx *ctx, struct proto_conn *c,
                const struct evlog_event *ev, struct proto_frames *out)
{
    if (!proto_following(c))
        return 0;
    if (ev->from_memory) {
        /* an end the log does not hold (jobs_expired_event): for the
         * followed job only, and the cursor stays, so that nothing logged
         * later is skipped */
        if (!c->job_id || ev->job_id != c->job_id || strcmp(ev->type, "error") != 0)
            return 0;
        c->ended_job = ev->job_id;
    } else {
        if (ev->seq <= c->cursor)
            return 0;
        c->cursor = ev->seq;
        if (!c->job_id && ev->job_id > 0 && ev->job_id == c->ended_job)
            return 0;             /* that job's end was handed on already */
        if (!c->job_id && ev->job_id > 0)
            c->job_id = ev->job_id;   /* resuming: adopt the first job seen */
        if (c->job_id && ev->job_id != c->job_id)
            return 0;
    }
    int end = !strcmp(ev->type, "done") || !strcmp(ev->type, "error");
    c->follow_next = 0;
    int rc = ops_of(c->kind)->event(ctx, c, ev, out);
    if (end && c->job_id) {
        if (c->follow_next)
            c->job_id = 0;        /* the next job of the channel follows */
        else
            c->channel[0] = '\0'; /* the followed job is over */
    }
    c->follow_next = 0;
    return rc;
}

int proto_pump(struct parley_ctx *ctx, struct proto_conn *c, struct proto_frames *out)
{
    if (!proto_following(c))
        return 0;
    struct evlog_event *ev = NULL;
    int n = evlog_read(ctx->db, c->channel, c->cursor, 256, &ev);
    if (n < 0)
        return -1;
    for (int i = 0; i < n && proto_following(c); i++)
        if (proto_event(ctx, c, &ev[i], out) < 0) {
            evlog_free(ev, n);
            return -1;
        }
    evlog_free(ev, n);
    if (n == 0 && c->job_id &&
        jobs_recover_if_expired(ctx->db, ctx->bell, c->job_id, now_ms()) == JOBS_EXPIRED_UNRECORDED) {
        /* the owner's lease ran out and the database cannot be written: the
         * error recovery would have appended, from memory (jobs.h) */
        struct evlog_event *xe = jobs_expired_event(c->job_id, c->cursor);
        if (!xe)
            return -1;
        int rc = proto_event(ctx, c, xe, out);
        evlog_free(xe, 1);
        return rc < 0 ? -1 : 1;
    }
    return n;
}

/* ---- (de)serialisation ---- */

json_t *proto_conn_json(const struct proto_conn *c)
{
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:b, s:s, s:I, s:I, s:O, s:b, s:i, s:s, s:b}",
                          "kind", (int)c->kind, "user", c->user, "peer", c->peer,
                          "param", c->param, "with_seq", c->with_seq,
                          "channel", c->channel, "job_id", (json_int_t)c->job_id,
                          "cursor", (json_int_t)c->cursor, "state", c->state,
                          "close", c->close, "close_code", c->close_code,
                          "close_reason", c->close_reason, "admin", c->admin);
    if (o && c->has_token_budget)
        json_object_set_new(o, "token_budget", json_integer(c->token_budget));
    if (o && c->tenant_scope[0])
        json_object_set_new(o, "tenant_scope", json_string(c->tenant_scope));
    if (o && c->ended_job)
        json_object_set_new(o, "ended_job", json_integer(c->ended_job));
    return o;
}

char *proto_conn_save(const struct proto_conn *c)
{
    json_t *o = proto_conn_json(c);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

int proto_conn_load(struct proto_conn *c, const char *text)
{
    json_t *o = json_loads(text, 0, NULL);
    if (!o) {
        memset(c, 0, sizeof *c);
        return -1;
    }
    int rc = proto_conn_from_json(c, o);
    json_decref(o);
    return rc;
}

int proto_conn_from_json(struct proto_conn *c, json_t *o)
{
    memset(c, 0, sizeof *c);
    int kind, with_seq, close, code;
    const char *user, *peer, *param, *channel, *reason;
    json_int_t job, cursor;
    json_t *state;
    if (!o || json_unpack(o, "{s:i, s:s, s:s, s:s, s:b, s:s, s:I, s:I, s:o, s:b, s:i, s:s}",
                          "kind", &kind, "user", &user, "peer", &peer, "param", &param,
                          "with_seq", &with_seq, "channel", &channel, "job_id", &job,
                          "cursor", &cursor, "state", &state, "close", &close,
                          "close_code", &code, "close_reason", &reason) < 0 ||
        kind < PROTO_TICKET || kind > PROTO_PHOENIX || kind == PROTO_SEND ||
        !json_is_object(state)) {
        return -1;
    }
    c->kind = (enum proto_kind)kind;
    str_copy(c->user, sizeof c->user, user);
    str_copy(c->peer, sizeof c->peer, peer);
    str_copy(c->param, sizeof c->param, param);
    c->with_seq = with_seq;
    str_copy(c->channel, sizeof c->channel, channel);
    c->job_id = job;
    c->cursor = cursor;
    c->state = json_incref(state);
    c->close = close;
    c->close_code = code;
    str_copy(c->close_reason, sizeof c->close_reason, reason);
    c->admin = json_is_true(json_object_get(o, "admin"));   /* absent in older sessions */
    json_t *tb = json_object_get(o, "token_budget");
    c->has_token_budget = json_is_integer(tb) && json_integer_value(tb) >= 0;
    c->token_budget = c->has_token_budget ? json_integer_value(tb) : 0;
    json_t *ts = json_object_get(o, "tenant_scope");      /* absent: no tenant */
    if (ts && !(json_is_string(ts) && ident_scope_valid(json_string_value(ts)))) {
        json_decref(c->state);
        c->state = NULL;
        return -1;
    }
    str_copy(c->tenant_scope, sizeof c->tenant_scope, ts ? json_string_value(ts) : "");
    json_t *ej = json_object_get(o, "ended_job");          /* absent: none */
    c->ended_job = json_is_integer(ej) && json_integer_value(ej) > 0 ? json_integer_value(ej) : 0;
    return 0;
}

void proto_conn_cleanup(struct proto_conn *c)
{
    json_decref(c->state);
    c->state = NULL;
}
