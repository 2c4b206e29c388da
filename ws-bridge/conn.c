/* conn.c — a WebSocket connection's shared parts: reference count, the
 * bounded queue of frames waiting for the service thread, close requests
 * and the notify list that wakes the event loop (bridge.h).
 * Any thread may post frames or request a close; only the service thread
 * pops frames (conn_pop) and touches the wsi.
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

static void free_frames(struct frame *f)
{
    while (f) {
        struct frame *n = f->next;
        free(f);
        f = n;
    }
}

void conn_unref(struct wsconn *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    free_frames(c->out_head);
    for (struct task *t = c->task_head; t;) {
        struct task *n = t->next;
        free(t);
        t = n;
    }
    if (c->opened)                 /* normally cleaned by the T_CLOSE task */
        proto_conn_cleanup(&c->pc);
    free(c->rx);
    free(c->open_path);
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
    if (drop) {
        free_frames(c->out_head);
        c->out_head = c->out_tail = NULL;
        c->out_n = 0;
        c->out_bytes = 0;
    }
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

int conn_post_quiet(struct wsconn *c, struct proto_frames *fr)
{
    const struct bridge_opts *o = &c->br->opt;
    struct frame *head = NULL, **tail = &head;
    int n = 0;
    size_t bytes = 0;
    for (int i = 0; i < fr->n; i++) {
        size_t len = strlen(fr->v[i]);
        struct frame *f = malloc(sizeof *f + LWS_PRE + len);
        if (!f) {
            metrics_error("out_of_memory");
            continue;
        }
        f->next = NULL;
        f->len = len;
        memcpy(f->buf + LWS_PRE, fr->v[i], len);
        *tail = f;
        tail = &f->next;
        n++;
        bytes += len;
    }
    frames_free(fr);
    if (!head)
        return 0;
    int slow = 0;
    pthread_mutex_lock(&c->mu);
    if (c->close_code) {
        free_frames(head);             /* closing: nothing more goes out */
    } else if (c->out_n + n > o->out_hard || c->out_bytes + bytes > o->out_hard_bytes) {
        free_frames(head);
        close_locked(c, 1008, "slow consumer", 1);
        slow = 1;
    } else {
        if (c->out_tail)
            c->out_tail->next = head;
        else
            c->out_head = head;
        c->out_tail = (struct frame *)((char *)tail - offsetof(struct frame, next));
        if (c->out_n == 0)
            c->stalled_since_ms = bridge_now_ms();
        c->out_n += n;
        c->out_bytes += bytes;
    }
    pthread_mutex_unlock(&c->mu);
    if (slow)
        metrics_closed(CW_SLOW);
    return notify_list_add(c);
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

struct frame *conn_pop(struct wsconn *c, int *left)
{
    pthread_mutex_lock(&c->mu);
    struct frame *f = c->out_head;
    if (f) {
        c->out_head = f->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_n--;
        c->out_bytes -= f->len;
        c->stalled_since_ms = c->out_n ? bridge_now_ms() : 0;
    }
    *left = c->out_n;
    pthread_mutex_unlock(&c->mu);
    return f;
}
