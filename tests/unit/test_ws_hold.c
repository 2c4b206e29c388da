/* test_ws_hold.c — the bridge's queue of waiting generations relies on
 * proto_job_hold(): a job claimed by proto_message in one thread, kept
 * waiting longer than its lease in a queue while another thread holds it,
 * then run by a third thread, still streams, finishes and caches; a job
 * nobody holds is recovered as interrupted and cannot be held any more. */
#include "th.h"
#include "protohelp.h"
#include "fake.h"
#include "bell.h"
#include "config.h"
#include "db.h"
#include "evlog.h"
#include "jobs.h"
#include "proto.h"
#include "store.h"
#include "util.h"

#include <pthread.h>
#include <time.h>

/* Claims a ticket generation through the seed 000 adapter in this thread. */
static struct proto_job *claim_ticket(struct parley_ctx *ctx, const char *ticket,
                                      const char *body, struct proto_conn *c)
{
    char path[128];
    snprintf(path, sizeof path, "/api/websocket/chat/%s", ticket);
    struct proto_frames fr;
    frames_init(&fr);
    if (proto_open(ctx, c, path, "", "ip:127.0.0.1", &fr) < 0) {
        frames_free(&fr);
        return NULL;
    }
    json_t *m = json_pack("{s:s}", "ticketBody", body);
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    struct proto_job *job = NULL;
    proto_message(ctx, c, text, strlen(text), &fr, &job);
    free(text);
    frames_free(&fr);
    return job;
}

struct holder {
    struct proto_job *job;
    int ms, every, rc;
};

/* Another thread keeps the waiting job for h->ms, holding it every h->every. */
static void *hold_thread(void *arg)
{
    struct holder *h = arg;
    struct parley_ctx ctx;
    h->rc = -1;
    if (open_ctx(&ctx) < 0)
        return NULL;
    h->rc = 0;
    for (int t = 0; t < h->ms; t += h->every) {
        if (proto_job_hold(&ctx, h->job) < 0) {
            h->rc = -1;
            break;
        }
        sleep_ms(h->every);
    }
    close_ctx(&ctx);
    return NULL;
}

static void *run_thread(void *arg)
{
    struct holder *h = arg;
    struct parley_ctx ctx;
    h->rc = -1;
    if (open_ctx(&ctx) < 0)
        return NULL;
    h->rc = proto_job_run(&ctx, h->job);
    close_ctx(&ctx);
    return NULL;
}

/* The type of the last event of channel (new string) or NULL. */
static char *last_event_type(struct parley_ctx *ctx, const char *channel)
{
    int64_t last = evlog_last_seq(ctx->db, channel);
    struct evlog_event *ev = NULL;
    int n = last > 0 ? evlog_read(ctx->db, channel, last - 1, 1, &ev) : 0;
    char *t = n == 1 ? strdup(ev[0].type) : NULL;
    evlog_free(ev, n);
    return t;
}

TEST(held_job_outlives_its_lease_and_caches)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    const char *body = "printer offline [[fake tokens=4 token_ms=1]]";
    struct proto_job *job = claim_ticket(&ctx, "hold-1", body, &c);
    REQUIRE(job != NULL);

    /* waits three leases in a queue, held by another thread */
    struct holder h = { job, 3 * cfg.lease_ms, cfg.lease_ms / 4, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hold_thread, &h) == 0);
    for (int i = 0; i < 6; i++) {        /* a viewer checks leases meanwhile */
        sleep_ms(cfg.lease_ms / 2);
        CHECK(jobs_recover(ctx.db, ctx.bell, now_ms()) == 0);
    }
    pthread_join(th, NULL);
    CHECK_INT(h.rc, 0);

    /* a third thread runs it */
    REQUIRE(pthread_create(&th, NULL, run_thread, &h) == 0);
    pthread_join(th, NULL);
    CHECK_INT(h.rc, 0);
    char *t = last_event_type(&ctx, "ticket:hold-1");
    CHECK_STR(t, "done");
    free(t);
    struct answer a;
    char hash[65], *cached = NULL;
    answer_key_ticket(&a, "hold-1", body, hash);
    CHECK_INT(store_answer_get(ctx.db, a.key, &cached, NULL, NULL), 0);
    free(cached);
    proto_job_free(job);
    proto_conn_cleanup(&c);
    close_ctx(&ctx);
}

TEST(unheld_job_is_recovered_and_cannot_be_held)
{
    struct parley_ctx ctx;
    REQUIRE(open_ctx(&ctx) == 0);
    struct proto_conn c;
    struct proto_job *job = claim_ticket(&ctx, "hold-2", "disk full [[fake tokens=3]]", &c);
    REQUIRE(job != NULL);
    sleep_ms(cfg.lease_ms + 100);
    CHECK_INT(jobs_recover(ctx.db, ctx.bell, now_ms()), 1);
    struct holder h = { job, 1, 1, 0 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, hold_thread, &h) == 0);
    pthread_join(th, NULL);
    CHECK_INT(h.rc, -1);
    char *t = last_event_type(&ctx, "ticket:hold-2");
    CHECK_STR(t, "error");
    free(t);
    proto_job_free(job);
    proto_conn_cleanup(&c);
    close_ctx(&ctx);
}

int main(void)
{
    const char *url = fake_url();
    if (!url)
        return 1;
    char err[512];
    if (config_defaults(&cfg) < 0)
        return 1;
    snprintf(dbpath, sizeof dbpath, "%s/hold.db", th_tmpdir());
    snprintf(bellpath, sizeof bellpath, "%s-bell", dbpath);
    if (config_set(&cfg, "OLLAMA_SERVER", url, err, sizeof err) < 0 ||
        config_set(&cfg, "PARLEY_LEASE_MS", "400", err, sizeof err) < 0 ||
        config_set(&cfg, "RATE_LIMIT_MESSAGES_PER_MINUTE", "0", err, sizeof err) < 0) {
        printf("# %s\n", err);
        return 1;
    }
    llm_global_init();
    RUN(held_job_outlives_its_lease_and_caches);
    RUN(unheld_job_is_recovered_and_cannot_be_held);
    config_cleanup(&cfg);
    return th_done();
}
