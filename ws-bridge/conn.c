/* conn.c — a WebSocket connection's shared parts: reference count, the
 * bounded queue of frames waiting for the service thread, close requests
 * and the notify list that wakes the event loop (bridge.h).
 * Any thread may post frames or request a close; only the service thread
 * takes frames (conn_take) and touches the wsi.
 */
#include "bridge.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct wsconn *conn_new(struct bridge *br, struct lws *wsi)
{
    struct wsconn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->br = br;
    c->refs = 1;                 /* the service thread's, dropped at CLOSED */
    c->wsi = wsi;
    c->chan_idx = -1;
    return c;
}

void conn_ref(struct wsconn *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

/* ---- frames ---- */

struct frame *frame_new(const char *text, size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    struct frame *f = malloc(sizeof *f + FRAME_HDR_MAX + len + 1);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    /* RFC 6455 5.2: FIN + text opcode, server frames unmasked */
    unsigned char h[FRAME_HDR_MAX];
    size_t hl;
    h[0] = 0x81;
    if (len < 126) {
        h[1] = (unsigned char)len;
        hl = 2;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    f->hlen = (uint8_t)hl;
    memcpy(f->buf + FRAME_HDR_MAX - hl, h, hl);
    memcpy(f->buf + FRAME_HDR_MAX, text, len);
    f->buf[FRAME_HDR_MAX + len] = '\0';
    return f;
}

void frame_ref(struct frame *f)
{
    __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
}

void frame_unref(struct frame *f)
{
    if (f && __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(f);
}

/* ---- the out queue: a ring of frame references ({mu} held) ---- */

#define RING_MIN 8

static struct frame **ring_at(struct wsconn *c, unsigned i)
{
    return &c->ring[(c->ring_head + i) & (c->ring_cap - 1)];
}

/* Room for n more frames. 0 / -1. */
static int ring_reserve(struct wsconn *c, int n)
{
    unsigned need = (unsigned)c->out_n + (unsigned)n;
    if (need <= c->ring_cap)
        return 0;
    unsigned cap = c->ring_cap ? c->ring_cap : RING_MIN;
    while (cap < need)
        cap *= 2;
    struct frame **r = malloc(sizeof *r * cap);
    if (!r)
        return -1;
    for (unsigned i = 0; i < (unsigned)c->out_n; i++)
        r[i] = *ring_at(c, i);
    free(c->ring);
    c->ring = r;
    c->ring_cap = cap;
    c->ring_head = 0;
    return 0;
}

static void ring_clear(struct wsconn *c)
{
    for (unsigned i = 0; i < (unsigned)c->out_n; i++)
        frame_unref(*ring_at(c, i));
    c->ring_head = 0;
    c->out_n = 0;
    c->out_bytes = 0;
}

void conn_unref(struct wsconn *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    ring_clear(c);
    free(c->ring);
    for (struct task *t = c->task_head; t;) {
        struct task *n = t->next;
        free(t);
        t = n;
    }
    if (c->opened)                 /* normally cleaned by the T_CLOSE task */
        proto_conn_cleanup(&c->pc);
    if (c->phx) {                  /* its topics normally freed by T_CLOSE */
        phx_free(c->phx);
        free(c->phx);
    }
    free(c->pf);
    free(c->rx);
    free(c->open_path);
    free(c->open_ua);
    free(c->open_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Puts c on the notify list; 1 when the caller must wake the loop (the
 * list was empty: the loop drains it whole, so one wake-up covers every
 * connection added before it runs). */
static int notify_list_add(struct wsconn *c)
{
    struct bridge *br = c->br;
    int wake = 0;
    pthread_mutex_lock(&br->notify_mu);
    if (!c->notify_pending) {
        c->notify_pending = 1;
        conn_ref(c);
        wake = br->notify_head == NULL;   /* the loop drains the whole list */
        c->nnext = br->notify_head;
        br->notify_head = c;
    }
    pthread_mutex_unlock(&br->notify_mu);
    return wake;
}

void conn_notify(struct wsconn *c)
{
    if (notify_list_add(c) && c->br->lws)
        lws_cancel_service(c->br->lws);
}

void conn_wake(struct bridge *br)
{
    if (br->lws)
        lws_cancel_service(br->lws);
}

/* With mu held: drop the queue and ask to close (first request wins). */
static void close_locked(struct wsconn *c, int code, const char *reason, int drop)
{
    if (drop)
        ring_clear(c);
    if (!c->close_code) {
        c->close_code = code;
        str_copy(c->close_reason, sizeof c->close_reason, reason);
    }
}

void conn_request_close(struct wsconn *c, int code, const char *reason, int drop)
{
    pthread_mutex_lock(&c->mu);
    close_locked(c, code, reason, drop);
    pthread_mutex_unlock(&c->mu);
    conn_notify(c);
}

int conn_post_shared(struct wsconn *c, struct frame *const *v, int n)
{
    const struct bridge_opts *o = &c->br->opt;
    if (n <= 0)
        return 0;
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += v[i]->len;
    int slow = 0;
    pthread_mutex_lock(&c->mu);
    if (c->close_code) {
        /* closing: nothing more goes out */
    } else if (c->out_n + n > o->out_hard || c->out_bytes + bytes > o->out_hard_bytes) {
        close_locked(c, 1008, "slow consumer", 1);
        slow = 1;
    } else if (ring_reserve(c, n) < 0) {
        metrics_error("out_of_memory");
    } else {
        if (c->out_n == 0)
            c->stalled_since_ms = bridge_now_ms();
        for (int i = 0; i < n; i++) {
            frame_ref(v[i]);
            *ring_at(c, (unsigned)c->out_n++) = v[i];
        }
        c->out_bytes += bytes;
    }
    pthread_mutex_unlock(&c->mu);
    if (slow)
        metrics_closed(CW_SLOW);
    return notify_list_add(c);
}

int conn_post_quiet(struct wsconn *c, struct proto_frames *fr)
{
    struct frame *one[8] = { NULL }, **v = fr->n <= 8 ? one : malloc(sizeof *v * (size_t)fr->n);
    int n = 0;
    if (!v) {
        metrics_error("out_of_memory");
        frames_free(fr);
        return 0;
    }
    for (int i = 0; i < fr->n; i++) {
        struct frame *f = frame_new(fr->v[i], strlen(fr->v[i]));
        if (f)
            v[n++] = f;
        else
            metrics_error("out_of_memory");
    }
    frames_free(fr);
    int wake = conn_post_shared(c, v, n);
    for (int i = 0; i < n; i++)
        frame_unref(v[i]);
    if (v != one)
        free(v);
    return wake;
}

void conn_post(struct wsconn *c, struct proto_frames *fr)
{
    if (conn_post_quiet(c, fr))
        conn_wake(c->br);
}

int conn_out_count(struct wsconn *c, size_t *bytes)
{
    pthread_mutex_lock(&c->mu);
    int n = c->out_n;
    if (bytes)
        *bytes = c->out_bytes;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int conn_take(struct wsconn *c, struct frame **out, int max, size_t max_bytes, int *left,
              int *close_pending)
{
    int k = 0;
    size_t wire = 0;
    pthread_mutex_lock(&c->mu);
    while (k < max && c->out_n > 0) {
        struct frame *f = c->ring[c->ring_head];
        if (k > 0 && wire + frame_wire_len(f) > max_bytes)
            break;
        wire += frame_wire_len(f);
        out[k++] = f;
        c->ring_head = (c->ring_head + 1) & (c->ring_cap - 1);
        c->out_n--;
        c->out_bytes -= f->len;
    }
    if (k)
        c->stalled_since_ms = c->out_n ? bridge_now_ms() : 0;
    *left = c->out_n;
    *close_pending = c->close_code != 0;
    pthread_mutex_unlock(&c->mu);
    return k;
}

void conn_trim(struct wsconn *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->out_n == 0 && c->ring) {
        free(c->ring);
        c->ring = NULL;
        c->ring_cap = c->ring_head = 0;
    }
    pthread_mutex_unlock(&c->mu);
}
