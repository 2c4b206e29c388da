/* test_session_meta.c — POST /api/chat/sessions bounds the client's
 * metadata and settings objects like a message's metadata (8,192 bytes of
 * compact JSON, fcgi/api_chat.c CHAT_OBJECT_MAX): over it, 400 bad_input
 * and no session stored; at it, stored whole (issue 13: a 900 KB metadata
 * object under the 1 MB body limit used to be stored). Driven through
 * http_dispatch() with a memory-backed response (memres.h), open mode.
 */
#include "th.h"
#include "handlers.h"
#include "memres.h"
#include "db_sqlite.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static struct parley_config cfg;
static struct parley_ctx ctx;

/* {"<key>":{"big":"xxx..."}} whose inner object's compact JSON is n bytes. */
static char *body_with(const char *key, size_t n)
{
    size_t pad = n - strlen("{\"big\":\"\"}");
    size_t len = strlen(key) + pad + 32;
    char *b = malloc(len);
    if (!b)
        return NULL;
    int off = snprintf(b, len, "{\"%s\":{\"big\":\"", key);
    memset(b + off, 'x', pad);
    snprintf(b + off + pad, len - (size_t)off - pad, "\"}}");
    return b;
}

static long long sessions(void)
{
    sqlite3_stmt *st = NULL;
    long long n = -1;
    if (sqlite3_prepare_v2(db_handle(ctx.db), "SELECT count(*) FROM conversations", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

TEST(metadata_and_settings_over_8k_are_400_and_not_stored)
{
    static const char *const keys[] = { "metadata", "settings" };
    static const size_t sizes[] = { 8193, 9 * 1024, 900 * 1024 };
    for (size_t k = 0; k < 2; k++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            long long before = sessions();
            char *b = body_with(keys[k], sizes[i]), *out = NULL;
            REQUIRE(b);
            int st = mem_dispatch(&ctx, "POST", "/api/chat/sessions", NULL, b, &out);
            CHECK_INT(st, 400);
            CHECK(out && strstr(out, "\"code\":\"bad_input\"") != NULL);
            CHECK(out && strstr(out, "too large (max 8192 bytes)") != NULL);
            CHECK(out && strstr(out, keys[k]) != NULL);
            CHECK_INT(sessions(), before);
            free(b);
            free(out);
        }
    }
}

TEST(metadata_and_settings_of_8k_are_stored_whole)
{
    static const char *const keys[] = { "metadata", "settings" };
    for (size_t k = 0; k < 2; k++) {
        long long before = sessions();
        char *b = body_with(keys[k], 8192), *out = NULL;
        REQUIRE(b);
        int st = mem_dispatch(&ctx, "POST", "/api/chat/sessions", NULL, b, &out);
        CHECK_INT(st, 201);
        json_t *j = out ? json_loads(out, 0, NULL) : NULL;
        const char *big = json_string_value(json_object_get(json_object_get(j, keys[k]), "big"));
        CHECK(big && strlen(big) == 8192 - strlen("{\"big\":\"\"}"));
        CHECK_INT(sessions(), before + 1);
        json_decref(j);
        free(b);
        free(out);
    }
}

int main(void)
{
    char err[512], path[512];
    setenv("TZ", "UTC", 1);
    if (config_defaults(&cfg) < 0 || llm_global_init() != 0)
        return 2;
    config_set(&cfg, "OLLAMA_SERVER", "http://127.0.0.1:9", err, sizeof err);
    snprintf(path, sizeof path, "%s/sessmeta.db", th_tmpdir());
    ctx.cfg = &cfg;
    ctx.db = db_open(path, err, sizeof err);
    if (!ctx.db) {
        fprintf(stderr, "db_open: %s\n", err);
        return 2;
    }
    RUN(metadata_and_settings_over_8k_are_400_and_not_stored);
    RUN(metadata_and_settings_of_8k_are_stored_whole);
    db_close(ctx.db);
    config_cleanup(&cfg);
    return th_done();
}
