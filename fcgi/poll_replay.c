/* poll_replay.c — virtual long-poll frames, formatted once per process
 * (poll_replay.h): a fixed table of entries under one mutex, least
 * recently used evicted first. */
#include "poll_replay.h"
#include "bell.h"
#include "evlog.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_SLOTS 256          /* a power of two: an id's low bits are its slot */
#define REPLAY_READ 256           /* events read from the log at a time */

struct entry {
    uint64_t id;                  /* 0: free */
    char *key;                    /* the state without identity fields */
    unsigned hash;
    struct proto_conn c;          /* replayed up to c.cursor */
    char *frames[REPLAY_MAX_FRAMES];
    int nframes;
    int blocked;
    int fresh;                    /* bell holds the channel's bell at the last read
                                   * that reached the log's end */
    uint32_t bell;
    uint64_t used;                /* LRU tick */
};

static pthread_mutex_t rp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry table[REPLAY_SLOTS];
static uint64_t gen, tick;

static unsigned key_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* {rp_lock} Frees what e holds and marks it free. */
static void entry_clear(struct entry *e)
{
    for (int i = 0; i < e->nframes; i++)
        free(e->frames[i]);
    if (e->id)
        proto_conn_cleanup(&e->c);
    free(e->key);
    memset(e, 0, sizeof *e);
}

/* The entry key of c: its saved form with the identity fields blanked
 * (new string), NULL when out of memory. */
static char *conn_key(const struct proto_conn *c)
{
    struct proto_conn k = *c;        /* state borrowed: only read by the save */
    k.user[0] = k.peer[0] = k.tenant_scope[0] = '\0';
    k.admin = 0;
    k.has_token_budget = 0;
    k.token_budget = 0;
    return proto_conn_save(&k);
}

/* 1 when formatting ev leaves c's state as it was but for the position
 * (checked after the fact by the caller for token events): events the
 * followed job did not produce, which proto_event only passes over. */
static int passed_over(const struct proto_conn *c, const struct evlog_event *ev)
{
    return c->job_id != 0 && ev->job_id != c->job_id && !ev->from_memory;
}

/* {rp_lock} Formats the events after e's position that are pure, until the
 * first that is not (blocked) or the log's end. 0 / -1 (database or
 * memory: the entry is blocked, so nobody relies on it). */
static int entry_extend(struct parley_ctx *ctx, struct entry *e)
{
    if (e->blocked)
        return 0;
    uint32_t b = ctx->bell ? bell_peek(ctx->bell, e->c.channel) : 0;
    if (ctx->bell && e->fresh && b == e->bell)
        return 0;                 /* nothing appended since the last read */
    for (;;) {
        struct evlog_event *ev = NULL;
        int n = evlog_read(ctx->db, e->c.channel, e->c.cursor, REPLAY_READ, &ev);
        if (n < 0) {
            e->blocked = 1;
            return -1;
        }
        for (int i = 0; i < n && !e->blocked; i++) {
            if (passed_over(&e->c, &ev[i])) {
                e->c.cursor = ev[i].seq;
                continue;
            }
            if (e->c.job_id == 0 || ev[i].from_memory || strcmp(ev[i].type, "token") != 0 ||
                ev[i].job_id != e->c.job_id || e->nframes >= REPLAY_MAX_FRAMES) {
                e->blocked = 1;   /* a pump must store this one */
                break;
            }
            json_t *before = json_deep_copy(e->c.state);
            struct proto_frames fr;
            frames_init(&fr);
            int rc = before ? proto_event(ctx, &e->c, &ev[i], &fr) : -1;
            if (rc < 0 || !json_equal(before, e->c.state) || e->c.close || !proto_following(&e->c) ||
                e->c.job_id != ev[i].job_id || e->nframes + fr.n > REPLAY_MAX_FRAMES) {
                e->blocked = 1;   /* not pure after all: its frames are the pump's */
            } else {
                for (int j = 0; j < fr.n; j++) {
                    e->frames[e->nframes++] = fr.v[j];
                    fr.v[j] = NULL;
                }
            }
            json_decref(before);
            frames_free(&fr);
        }
        evlog_free(ev, n);
        if (e->blocked || n < REPLAY_READ)
            break;
    }
    e->fresh = 1;
    e->bell = b;
    return 0;
}

static void fill_view(const struct entry *e, struct poll_view *v)
{
    v->id = e->id;
    v->nframes = e->nframes;
    v->work = e->blocked;
    v->at_end = !e->blocked;
}

int poll_replay_open(struct parley_ctx *ctx, const struct proto_conn *c, struct poll_view *v)
{
    memset(v, 0, sizeof *v);
    char *key = conn_key(c);
    if (!key)
        return -1;
    unsigned h = key_hash(key);
    pthread_mutex_lock(&rp_lock);
    struct entry *e = NULL, *victim = &table[0];
    for (int i = 0; i < REPLAY_SLOTS; i++) {
        struct entry *t = &table[i];
        if (t->id && t->hash == h && strcmp(t->key, key) == 0) {
            e = t;
            break;
        }
        if (victim->id && (!t->id || t->used < victim->used))
            victim = t;
    }
    if (!e) {
        e = victim;
        entry_clear(e);
        if (proto_conn_load(&e->c, key) < 0) {
            memset(&e->c, 0, sizeof e->c);
            pthread_mutex_unlock(&rp_lock);
            free(key);
            return -1;
        }
        e->key = key;
        key = NULL;
        e->hash = h;
        e->id = (++gen << 8) | (uint64_t)(e - table);
    }
    free(key);
    e->used = ++tick;
    int rc = entry_extend(ctx, e);
    fill_view(e, v);
    pthread_mutex_unlock(&rp_lock);
    return rc;
}

/* {rp_lock} The entry of id, or NULL. */
static struct entry *entry_of(uint64_t id)
{
    struct entry *e = &table[id & (REPLAY_SLOTS - 1)];
    return id && e->id == id ? e : NULL;
}

int poll_replay_view(struct parley_ctx *ctx, uint64_t id, struct poll_view *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&rp_lock);
    struct entry *e = entry_of(id);
    int rc = 0;
    if (e) {
        e->used = ++tick;
        rc = entry_extend(ctx, e) < 0 ? -1 : 1;
        fill_view(e, v);
    }
    pthread_mutex_unlock(&rp_lock);
    return rc;
}

int poll_replay_frames(uint64_t id, int64_t from, int max, char **buf, size_t *len, int *count)
{
    pthread_mutex_lock(&rp_lock);
    struct entry *e = entry_of(id);
    if (!e) {
        pthread_mutex_unlock(&rp_lock);
        return -1;
    }
    int k = 0;
    size_t need = *len + 2;
    for (int64_t i = from; i >= 0 && i < e->nframes && k < max; i++, k++)
        need += strlen(e->frames[i]) + 1;
    if (k > 0) {
        char *nb = realloc(*buf, need);
        if (!nb) {
            pthread_mutex_unlock(&rp_lock);
            return -1;
        }
        *buf = nb;
        for (int64_t i = from; i < from + k; i++) {
            if ((*count)++ > 0)
                nb[(*len)++] = ',';
            size_t fl = strlen(e->frames[i]);
            memcpy(nb + *len, e->frames[i], fl);
            *len += fl;
        }
    }
    pthread_mutex_unlock(&rp_lock);
    return k;
}
