/* phx.c — a Phoenix Channels socket over any transport (phx.h): V2 frames,
 * heartbeat, join / leave, unmatched topics, malformed frames, and the
 * routing of topic events to their PROTO_PHOENIX connections. */
#include "phx.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

void phx_init(struct phx_socket *s, const char *user, const char *peer, int max_topics)
{
    memset(s, 0, sizeof *s);
    str_copy(s->user, sizeof s->user, user ? user : "");
    str_copy(s->peer, sizeof s->peer, peer ? peer : "");
    s->max_topics = max_topics < 1 ? 1 : max_topics > PHX_TOPICS_MAX ? PHX_TOPICS_MAX : max_topics;
    s->token_budget = -1;
}

void phx_free(struct phx_socket *s)
{
    for (int i = 0; i < s->n; i++)
        proto_conn_cleanup(&s->topics[i]);
    free(s->topics);
    s->topics = NULL;
    s->n = s->cap = 0;
}

/* [join_ref, ref, topic, "phx_reply", {status, response}] (steals response). */
static int phx_reply(struct proto_frames *out, json_t *join_ref, json_t *ref, const char *topic,
                     const char *status, json_t *response)
{
    return frames_push(out, json_pack("[O, O, s, s, {s:s, s:o}]",
                                      join_ref ? join_ref : json_null(), ref ? ref : json_null(),
                                      topic, "phx_reply", "status", status, "response",
                                      response ? response : json_object()));
}

/* An error reply {reason, code}: code is kind's client code (docs/errors.md). */
static int reason_reply(struct proto_frames *out, json_t *join_ref, json_t *ref,
                        const char *topic, const char *reason, enum perr kind)
{
    return phx_reply(out, join_ref, ref, topic, "error",
                     json_pack("{s:s, s:s}", "reason", reason, "code", perr_code(kind)));
}

/* [join_ref, join_ref, topic, "phx_close", {}]: what Phoenix sends when a
 * channel ends by a leave or a duplicate join. */
static int phx_close(struct proto_frames *out, const struct proto_conn *c)
{
    json_t *jr = json_object_get(c->state, "join_ref");
    const char *topic = json_string_value(json_object_get(c->state, "topic"));
    return frames_push(out, json_pack("[O, O, s, s, {}]", jr ? jr : json_null(),
                                      jr ? jr : json_null(), topic ? topic : "", "phx_close"));
}

static int find_topic(const struct phx_socket *s, const char *topic)
{
    for (int i = 0; i < s->n; i++) {
        const char *t = json_string_value(json_object_get(s->topics[i].state, "topic"));
        if (t && strcmp(t, topic) == 0)
            return i;
    }
    return -1;
}

static void drop_topic(struct phx_socket *s, int i)
{
    proto_conn_cleanup(&s->topics[i]);
    memmove(&s->topics[i], &s->topics[i + 1], sizeof s->topics[0] * (size_t)(s->n - i - 1));
    s->n--;
}

/* Room for one more topic. 0 / -1. */
static int grow(struct phx_socket *s)
{
    if (s->n < s->cap)
        return 0;
    int ncap = s->cap ? s->cap * 2 : 4;
    struct proto_conn *nv = realloc(s->topics, sizeof *nv * (size_t)ncap);
    if (!nv)
        return -1;
    s->topics = nv;
    s->cap = ncap;
    return 0;
}

/* 1 when a frame's join_ref names the topic's current join (or is null). */
static int current_join(const struct proto_conn *c, json_t *join_ref)
{
    if (!join_ref || json_is_null(join_ref))
        return 1;
    return json_equal(join_ref, json_object_get(c->state, "join_ref"));
}

static int on_join(struct parley_ctx *ctx, struct phx_socket *s, json_t *join_ref, json_t *ref,
                   const char *topic, struct proto_frames *out)
{
    if (strncmp(topic, PROTO_PHOENIX_TOPIC, strlen(PROTO_PHOENIX_TOPIC)) != 0)
        return reason_reply(out, NULL, ref, topic, "unmatched topic", PERR_NOT_FOUND);
    int old = find_topic(s, topic);
    if (old >= 0) {
        /* a duplicate join: the old one closes first, as in Phoenix */
        if (phx_close(out, &s->topics[old]) < 0)
            return -1;
        drop_topic(s, old);
    }
    if (s->n >= s->max_topics)
        return reason_reply(out, join_ref, ref, topic, "too many channels joined",
                            PERR_CONFLICT);
    if (grow(s) < 0)
        return -1;
    struct proto_conn *c = &s->topics[s->n];
    int r = proto_phoenix_join(ctx, c, topic, join_ref, s->user, s->peer, out);
    if (r != 0) {
        /* a database that cannot be written or reached now says so (503
         * kinds: retry later); any other failure is "join failed" */
        int db_now = c->err == PERR_DB_READONLY || c->err == PERR_DB_UNAVAILABLE;
        const char *why = r < 0 && !db_now ? "join failed" : c->err_msg;
        int rc = reason_reply(out, join_ref, ref, topic, why[0] ? why : "join failed",
                              (r < 0 && !db_now) || c->err == PERR_OK ? PERR_INTERNAL : c->err);
        proto_conn_cleanup(c);
        return r < 0 ? -1 : rc;
    }
    c->admin = s->admin;                             /* the socket's JWT claims */
    c->has_token_budget = s->token_budget >= 0;
    c->token_budget = s->token_budget >= 0 ? s->token_budget : 0;
    s->n++;
    return phx_reply(out, join_ref, ref, topic, "ok", NULL);
}

/* 1 when v is a string holding a NUL (possible only in a frame loaded
 * with JSON_ALLOW_NUL): its C string would name something else. */
static int has_nul(json_t *v)
{
    return json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v);
}

/* Reads ref and topic of a frame that could not be taken, to answer it. */
static int answer_bad(struct proto_frames *out, json_t *arr, const char *reason, enum perr kind)
{
    json_t *ref = json_array_get(arr, 1);
    const char *topic = json_string_value(json_array_get(arr, 2));
    if (!topic || !ref || json_is_null(ref) || has_nul(ref) || has_nul(json_array_get(arr, 2)) ||
        has_nul(json_array_get(arr, 0)))
        return 0;                 /* nothing to answer to: dropped */
    json_t *jr = json_array_get(arr, 0);
    return reason_reply(out, jr, ref, topic, reason, kind);
}

/* 1 when arr is a well-formed frame: an array of 5, topic and event
 * strings, join_ref and ref strings, integers or null. */
static int well_formed(json_t *arr)
{
    json_t *join_ref = json_array_get(arr, 0), *ref = json_array_get(arr, 1);
    return json_is_array(arr) && json_array_size(arr) == 5 &&
           json_is_string(json_array_get(arr, 2)) && json_is_string(json_array_get(arr, 3)) &&
           (json_is_null(join_ref) || json_is_string(join_ref) || json_is_integer(join_ref)) &&
           (json_is_null(ref) || json_is_string(ref) || json_is_integer(ref));
}

static int is_heartbeat(const char *topic, const char *event)
{
    return !strcmp(topic, "phoenix") && !strcmp(event, "heartbeat");
}

int phx_heartbeat(const char *text, size_t len, struct proto_frames *out)
{
    /* every heartbeat phoenix.js sends names it plainly: skip the parse
     * of other frames (an escaped one still gets its answer, from
     * phx_message) */
    if (len > PHX_FRAME_MAX || !memmem(text, len, "heartbeat", 9))
        return 0;
    json_t *arr = json_loadb(text, len, 0, NULL);
    int rc = 0;
    if (well_formed(arr) && is_heartbeat(json_string_value(json_array_get(arr, 2)),
                                         json_string_value(json_array_get(arr, 3))))
        rc = phx_reply(out, NULL, json_array_get(arr, 1), "phoenix", "ok", NULL) < 0 ? -1 : 1;
    json_decref(arr);
    return rc;
}

int phx_message(struct parley_ctx *ctx, struct phx_socket *s, const char *text, size_t len,
                struct proto_frames *out, struct proto_job **job)
{
    *job = NULL;
    json_t *arr = json_loadb(text, len, 0, NULL);
    if (!arr && len <= PHX_FRAME_MAX) {
        /* JSON but for a NUL in a string (\u0000, refused in every string
         * Parley takes): malformed, answered when its ref and topic can be
         * read, never run */
        json_t *nul = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
        int rc = json_is_array(nul) ? answer_bad(out, nul, "malformed message", PERR_BAD_INPUT) : 0;
        json_decref(nul);
        return rc;
    }
    if (len > PHX_FRAME_MAX) {
        int rc = answer_bad(out, arr, "message too large", PERR_TOO_LARGE);
        json_decref(arr);
        return rc;
    }
    json_t *join_ref = json_array_get(arr, 0), *ref = json_array_get(arr, 1);
    const char *topic = json_string_value(json_array_get(arr, 2));
    const char *event = json_string_value(json_array_get(arr, 3));
    json_t *payload = json_array_get(arr, 4);
    if (!well_formed(arr)) {
        int rc = json_is_array(arr) ? answer_bad(out, arr, "malformed message", PERR_BAD_INPUT) : 0;
        json_decref(arr);
        return rc;
    }
    int rc = 0;
    if (is_heartbeat(topic, event)) {
        rc = phx_reply(out, NULL, ref, topic, "ok", NULL);
        goto done;
    }
    if (!strcmp(event, "phx_join")) {
        rc = on_join(ctx, s, join_ref, ref, topic, out);
        goto done;
    }
    int i = find_topic(s, topic);
    if (!strcmp(event, "phx_leave")) {
        if (i >= 0 && !current_join(&s->topics[i], join_ref))
            goto done;            /* raced a server close: nothing to say */
        rc = phx_reply(out, i >= 0 ? json_object_get(s->topics[i].state, "join_ref") : join_ref,
                       ref, topic, "ok", NULL);
        if (i >= 0) {
            if (rc == 0)
                rc = phx_close(out, &s->topics[i]);
            drop_topic(s, i);
        }
        goto done;
    }
    if (i < 0) {
        rc = reason_reply(out, NULL, ref, topic, "unmatched topic", PERR_NOT_FOUND);
        goto done;
    }
    if (!current_join(&s->topics[i], join_ref))
        goto done;                /* a push to an earlier join: ignored */
    json_t *msg = json_pack("{s:O, s:s, s:O}", "ref", ref, "event", event, "payload",
                            payload ? payload : json_null());
    if (!msg) {
        rc = -1;
        goto done;
    }
    rc = proto_message_json(ctx, &s->topics[i], msg, out, job);
    json_decref(msg);
done:
    json_decref(arr);
    return rc;
}

int phx_topic_crashed(struct phx_socket *s, int i, struct proto_frames *out)
{
    if (i < 0 || i >= s->n)
        return -1;
    const struct proto_conn *c = &s->topics[i];
    json_t *jr = json_object_get(c->state, "join_ref");
    const char *topic = json_string_value(json_object_get(c->state, "topic"));
    int rc = frames_push(out, json_pack("[O, O, s, s, {}]", jr ? jr : json_null(),
                                        jr ? jr : json_null(), topic ? topic : "", "phx_error"));
    drop_topic(s, i);
    return rc;
}

int phx_pump(struct parley_ctx *ctx, struct phx_socket *s, struct proto_frames *out)
{
    int total = 0;
    for (int i = 0; i < s->n; i++) {
        int n = proto_pump(ctx, &s->topics[i], out);
        if (n < 0) {
            /* this topic's channel could not be read: it "crashed", the
             * others go on; the client rejoins it (and is replayed) */
            if (phx_topic_crashed(s, i, out) < 0)
                return -1;
            i--;
            continue;
        }
        total += n;
    }
    return total;
}

int phx_channels(const struct phx_socket *s, const char **chans, int max)
{
    int k = 0;
    for (int i = 0; i < s->n && k < max; i++) {
        if (!proto_following(&s->topics[i]))
            continue;
        int seen = 0;
        for (int j = 0; j < k && !seen; j++)
            seen = strcmp(chans[j], s->topics[i].channel) == 0;
        if (!seen)
            chans[k++] = s->topics[i].channel;
    }
    return k;
}

char *phx_save(const struct phx_socket *s)
{
    json_t *arr = json_array();
    for (int i = 0; i < s->n && arr; i++) {
        json_t *o = proto_conn_json(&s->topics[i]);
        if (!o || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *o = arr ? json_pack("{s:s, s:s, s:i, s:b, s:I, s:o}", "user", s->user, "peer", s->peer,
                                "max_topics", s->max_topics, "admin", s->admin,
                                "token_budget", (json_int_t)s->token_budget, "topics", arr)
                    : NULL;
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

int phx_load(struct phx_socket *s, const char *text)
{
    json_t *o = json_loads(text, 0, NULL), *arr;
    const char *user, *peer;
    int max;
    memset(s, 0, sizeof *s);
    if (!o || json_unpack(o, "{s:s, s:s, s:i, s:o}", "user", &user, "peer", &peer, "max_topics",
                          &max, "topics", &arr) < 0 || !json_is_array(arr) ||
        json_array_size(arr) > PHX_TOPICS_MAX) {
        json_decref(o);
        return -1;
    }
    phx_init(s, user, peer, max);
    s->admin = json_is_true(json_object_get(o, "admin"));          /* absent in older states */
    json_t *tb = json_object_get(o, "token_budget");
    s->token_budget = json_is_integer(tb) ? (int64_t)json_integer_value(tb) : -1;
    size_t i;
    json_t *t;
    json_array_foreach(arr, i, t) {
        int ok = json_is_object(t) && grow(s) == 0 &&
                 proto_conn_from_json(&s->topics[s->n], t) == 0 &&
                 s->topics[s->n].kind == PROTO_PHOENIX;
        if (!ok && s->n < s->cap && s->topics[s->n].state)
            proto_conn_cleanup(&s->topics[s->n]);
        if (!ok) {
            phx_free(s);
            json_decref(o);
            return -1;
        }
        s->n++;
    }
    json_decref(o);
    return 0;
}
