/* test_config.c — defaults, per-key validation, KEY=VALUE files, the
 * environment, precedence, secrets kept out of messages, cleanup. */
#include "th.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

/* Every key, so the environment of the test runner cannot leak in. */
static const char *all_keys[] = {
    "PARLEY_DB", "PARLEY_PROVIDER", "OLLAMA_SERVER", "OPENAI_BASE_URL", "OPENAI_API_KEY",
    "PARLEY_MODEL", "PARLEY_TEMPERATURE", "PARLEY_JWT_SECRET", "PARLEY_ALLOWED_ORIGINS",
    "WEBSOCKET_MAX_CONNECTIONS", "WEBSOCKET_TIMEOUT", "RATE_LIMIT_MESSAGES_PER_MINUTE",
    "MAX_MESSAGE_LENGTH", "PARLEY_CONNECT_TIMEOUT_MS", "PARLEY_FIRST_TOKEN_TIMEOUT_MS",
    "PARLEY_IDLE_TIMEOUT_MS", "PARLEY_TOTAL_TIMEOUT_MS", "PARLEY_COALESCE_MS",
    "PARLEY_LEASE_MS", "PARLEY_POLL_IDLE", "PARLEY_EVENT_GRACE", "PARLEY_CONTEXT_MESSAGES",
    "PARLEY_NODE_PREFIX", "PARLEY_CONFIG",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof all_keys / sizeof all_keys[0]; i++)
        unsetenv(all_keys[i]);
}

/* Writes text to a new file in the scratch directory; returns its path. */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", th_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(defaults_match_header)
{
    struct parley_config c;
    REQUIRE(config_defaults(&c) == 0);
    CHECK_STR(c.db_path, "parley.db");
    CHECK_INT(c.provider, LLM_OLLAMA);
    CHECK_STR(c.ollama_server, "http://127.0.0.1:11434");
    CHECK_STR(c.openai_base_url, "https://api.openai.com/v1");
    CHECK(c.openai_api_key == NULL);
    CHECK_STR(c.model, "llama3.2");
    CHECK(c.temperature > 0.69 && c.temperature < 0.71);
    CHECK(c.jwt_secret == NULL);
    CHECK(c.allowed_origins == NULL);
    CHECK_INT(c.ws_max_connections, 100);
    CHECK_INT(c.ws_timeout_s, 300);
    CHECK_INT(c.rate_limit_per_min, 30);
    CHECK_INT(c.max_message_length, 5000);
    CHECK_INT(c.connect_timeout_ms, 5000);
    CHECK_INT(c.first_token_timeout_ms, 60000);
    CHECK_INT(c.idle_timeout_ms, 30000);
    CHECK_INT(c.total_timeout_ms, 300000);
    CHECK_INT(c.coalesce_ms, 5);
    CHECK_INT(c.lease_ms, 10000);
    CHECK_INT(c.poll_idle_s, 60);
    CHECK_INT(c.event_grace_s, 300);
    CHECK_INT(c.context_messages, 10);
    CHECK(config_open_mode(&c));
    config_cleanup(&c);
}

/* One config_set case: key, value, expected return, and either a substring
 * of the error (rc -1) or nothing. */
struct set_case {
    const char *key, *value;
    int rc;
    const char *err;
};

static const struct set_case set_cases[] = {
    /* seed 001 integers, at and past their bounds */
    { "WEBSOCKET_MAX_CONNECTIONS", "1", 0, NULL },
    { "WEBSOCKET_MAX_CONNECTIONS", "100000", 0, NULL },
    { "WEBSOCKET_MAX_CONNECTIONS", "0", -1,
      "WEBSOCKET_MAX_CONNECTIONS: must be an integer between 1 and 100000, got '0'" },
    { "WEBSOCKET_MAX_CONNECTIONS", "100001", -1, "got '100001'" },
    { "WEBSOCKET_TIMEOUT", "86400", 0, NULL },
    { "WEBSOCKET_TIMEOUT", "abc", -1,
      "WEBSOCKET_TIMEOUT: must be an integer between 1 and 86400, got 'abc'" },
    { "WEBSOCKET_TIMEOUT", "30abc", -1, "got '30abc'" },
    { "WEBSOCKET_TIMEOUT", "", 0, NULL },                 /* empty: unset (default) */
    { "WEBSOCKET_TIMEOUT", " 30", -1, "got ' 30'" },
    { "WEBSOCKET_TIMEOUT", "30 ", -1, "got '30 '" },
    { "WEBSOCKET_TIMEOUT", "3.5", -1, "got '3.5'" },
    { "WEBSOCKET_TIMEOUT", "0x10", -1, "got '0x10'" },
    { "WEBSOCKET_TIMEOUT", "-", -1, "got '-'" },
    { "WEBSOCKET_TIMEOUT", "99999999999999999999999", -1, "got '99999999999999999999999'" },
    { "WEBSOCKET_TIMEOUT", "4294967297", -1, "between 1 and 86400" },  /* not truncated to 1 */
    { "RATE_LIMIT_MESSAGES_PER_MINUTE", "0", 0, NULL },
    { "RATE_LIMIT_MESSAGES_PER_MINUTE", "-1", -1,
      "RATE_LIMIT_MESSAGES_PER_MINUTE: must be an integer between 0 and 100000, got '-1'" },
    { "MAX_MESSAGE_LENGTH", "10000000", 0, NULL },
    { "MAX_MESSAGE_LENGTH", "10000001", -1, "between 1 and 10000000" },
    { "MAX_MESSAGE_LENGTH", "+5000", 0, NULL },
    /* other integers */
    { "PARLEY_CONNECT_TIMEOUT_MS", "0", -1, "PARLEY_CONNECT_TIMEOUT_MS: must be an integer" },
    { "PARLEY_COALESCE_MS", "0", 0, NULL },
    { "PARLEY_EVENT_GRACE", "0", 0, NULL },
    { "PARLEY_POLL_IDLE", "0", -1, "PARLEY_POLL_IDLE" },
    /* temperature */
    { "PARLEY_TEMPERATURE", "0", 0, NULL },
    { "PARLEY_TEMPERATURE", "2", 0, NULL },
    { "PARLEY_TEMPERATURE", "1.25", 0, NULL },
    { "PARLEY_TEMPERATURE", ".5", 0, NULL },
    { "PARLEY_TEMPERATURE", "2.01", -1,
      "PARLEY_TEMPERATURE: must be a number between 0 and 2, got '2.01'" },
    { "PARLEY_TEMPERATURE", "-0.1", -1, "got '-0.1'" },
    { "PARLEY_TEMPERATURE", "nan", -1, "got 'nan'" },
    { "PARLEY_TEMPERATURE", "inf", -1, "got 'inf'" },
    { "PARLEY_TEMPERATURE", "0x1p0", -1, "got '0x1p0'" },
    { "PARLEY_TEMPERATURE", "1e400", -1, "got '1e400'" },
    { "PARLEY_TEMPERATURE", "", 0, NULL },
    /* provider */
    { "PARLEY_PROVIDER", "ollama", 0, NULL },
    { "PARLEY_PROVIDER", "OpenAI", 0, NULL },
    { "PARLEY_PROVIDER", "anthropic", -1,
      "PARLEY_PROVIDER: must be ollama or openai, got 'anthropic'" },
    /* URLs */
    { "OLLAMA_SERVER", "http://localhost:11434/api/generate", 0, NULL },
    { "OLLAMA_SERVER", "HTTPS://gpu.example.com", 0, NULL },
    { "OLLAMA_SERVER", "localhost:11434", -1,
      "OLLAMA_SERVER: must be a URL starting with http:// or https://, got 'localhost:11434'" },
    { "OLLAMA_SERVER", "ftp://x", -1, "got 'ftp://x'" },
    { "OLLAMA_SERVER", "http://", -1, "got 'http://'" },
    { "OLLAMA_SERVER", "http:///x", -1, "OLLAMA_SERVER" },
    { "OLLAMA_SERVER", "http://a b", -1, "OLLAMA_SERVER" },
    { "OLLAMA_SERVER", "", 0, NULL },
    { "OPENAI_BASE_URL", "http://127.0.0.1:8000/v1", 0, NULL },
    { "OPENAI_BASE_URL", "api.openai.com", -1, "OPENAI_BASE_URL" },
    /* strings */
    { "PARLEY_DB", "", 0, NULL },
    { "PARLEY_DB", "/var/lib/parley/p.db", 0, NULL },
    { "PARLEY_MODEL", "", 0, NULL },
    { "PARLEY_MODEL", "qwen2.5:7b", 0, NULL },
    /* origins */
    { "PARLEY_ALLOWED_ORIGINS", "https://a.example", 0, NULL },
    { "PARLEY_ALLOWED_ORIGINS", "*", 0, NULL },
    { "PARLEY_ALLOWED_ORIGINS", "https://a.example/", -1, "PARLEY_ALLOWED_ORIGINS" },
    { "PARLEY_ALLOWED_ORIGINS", "a.example", -1, "got 'a.example'" },
    { "PARLEY_ALLOWED_ORIGINS", "https://a.example,,https://b", -1, "empty item" },
    /* names */
    { "PARLEY_MODLE", "x", -1, "PARLEY_MODLE: unknown setting" },
    { "HOME", "/root", 1, NULL },
    { "HTTP_HOST", "example.com", 1, NULL },
    { "PARLEY_CONFIG", "/etc/parley.env", 1, NULL },
    { "", "x", -1, "empty setting name" },
};

TEST(set_validates_each_key)
{
    struct parley_config c;
    REQUIRE(config_defaults(&c) == 0);
    for (size_t i = 0; i < sizeof set_cases / sizeof set_cases[0]; i++) {
        const struct set_case *t = &set_cases[i];
        char err[512] = "";
        int rc = config_set(&c, t->key, t->value, err, sizeof err);
        if (rc != t->rc || (t->err && !strstr(err, t->err))) {
            th_case_failed = 1;
            printf("#   case %zu: %s='%s' → rc %d, err \"%s\"; expected rc %d, \"%s\"\n", i,
                   t->key, t->value, rc, err, t->rc, t->err ? t->err : "");
        }
    }
    config_cleanup(&c);
}

TEST(set_stores_values)
{
    struct parley_config c;
    char err[256];
    REQUIRE(config_defaults(&c) == 0);
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "42", err, sizeof err), 0);
    CHECK_INT(c.ws_timeout_s, 42);
    CHECK_INT(config_set(&c, "PARLEY_TEMPERATURE", "1.5", err, sizeof err), 0);
    CHECK(c.temperature == 1.5);
    CHECK_INT(config_set(&c, "PARLEY_PROVIDER", "openai", err, sizeof err), 0);
    CHECK_INT(c.provider, LLM_OPENAI);
    /* a trailing slash is dropped: "http://h/" and "http://h" are one server */
    CHECK_INT(config_set(&c, "OLLAMA_SERVER", "http://gpu:11434//", err, sizeof err), 0);
    CHECK_STR(c.ollama_server, "http://gpu:11434");
    CHECK_INT(config_set(&c, "OLLAMA_SERVER", "http://gpu:11434/api/generate", err, sizeof err), 0);
    CHECK_STR(c.ollama_server, "http://gpu:11434/api/generate");
    /* a failed set keeps the old value */
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "x", err, sizeof err), -1);
    CHECK_INT(c.ws_timeout_s, 42);
    CHECK_INT(config_set(&c, "OLLAMA_SERVER", "nope", err, sizeof err), -1);
    CHECK_STR(c.ollama_server, "http://gpu:11434/api/generate");
    /* origins: blanks around items dropped; "*" or empty means any (NULL) */
    CHECK_INT(config_set(&c, "PARLEY_ALLOWED_ORIGINS", " https://a.example , http://b:8080 ",
                         err, sizeof err), 0);
    CHECK_STR(c.allowed_origins, "https://a.example,http://b:8080");
    CHECK_INT(config_set(&c, "PARLEY_ALLOWED_ORIGINS", "https://a.example,*", err, sizeof err), 0);
    CHECK(c.allowed_origins == NULL);
    CHECK_INT(config_set(&c, "PARLEY_ALLOWED_ORIGINS", "https://x", err, sizeof err), 0);
    CHECK_INT(config_set(&c, "PARLEY_ALLOWED_ORIGINS", "", err, sizeof err), 0);
    CHECK(c.allowed_origins == NULL);
    config_cleanup(&c);
}

TEST(long_and_binary_values_are_shown_safely)
{
    struct parley_config c;
    char err[512], big[4096];
    REQUIRE(config_defaults(&c) == 0);
    memset(big, '7', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", big, err, sizeof err), -1);
    CHECK(strstr(err, "...'") != NULL);        /* shortened */
    CHECK(strlen(err) < 200);
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "1\n2\x1b", err, sizeof err), -1);
    CHECK(strstr(err, "got '1\\x0a2\\x1b'") != NULL);
    /* a tiny buffer is still terminated */
    char small[8];
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "abc", small, sizeof small), -1);
    CHECK_INT(strlen(small), 7);
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "abc", NULL, 0), -1);
    config_cleanup(&c);
}

TEST(secrets_never_appear_in_messages)
{
    struct parley_config c;
    char err[512];
    REQUIRE(config_defaults(&c) == 0);
    CHECK_INT(config_set(&c, "PARLEY_JWT_SECRET", "hunter2-SUPERSECRET\x01", err, sizeof err), -1);
    CHECK(strstr(err, "PARLEY_JWT_SECRET") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    CHECK(strstr(err, "hunter2") == NULL);
    CHECK_INT(config_set(&c, "OPENAI_API_KEY", "sk-SUPERSECRET\nX-Evil: 1", err, sizeof err), -1);
    CHECK(strstr(err, "OPENAI_API_KEY") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    CHECK(c.jwt_secret == NULL && c.openai_api_key == NULL);

    /* set, then cleared by an empty value: open mode again */
    CHECK_INT(config_set(&c, "PARLEY_JWT_SECRET", "s3cret", err, sizeof err), 0);
    CHECK(!config_open_mode(&c));
    CHECK_STR(c.jwt_secret, "s3cret");
    CHECK_INT(config_set(&c, "PARLEY_JWT_SECRET", "", err, sizeof err), 0);
    CHECK(config_open_mode(&c));

    /* in a file, neither a bad secret nor a badly quoted one is echoed */
    const char *p = write_file("secret.env", "\n\nPARLEY_JWT_SECRET='SUPERSECRET\n");
    REQUIRE(p != NULL);
    CHECK_INT(config_load_file(&c, p, err, sizeof err), -1);
    CHECK(strstr(err, ":3: PARLEY_JWT_SECRET: unterminated single quote") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    p = write_file("secret2.env", "OPENAI_API_KEY=\"sk-SUPERSECRET\" trailing\n");
    CHECK_INT(config_load_file(&c, p, err, sizeof err), -1);
    CHECK(strstr(err, ":1: OPENAI_API_KEY:") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    p = write_file("secret3.env", "SUPERSECRET\n");
    CHECK_INT(config_load_file(&c, p, err, sizeof err), -1);
    CHECK(strstr(err, ":1: expected KEY=VALUE") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    config_cleanup(&c);
}

TEST(file_syntax)
{
    struct parley_config c;
    char err[512] = "";
    REQUIRE(config_defaults(&c) == 0);
    const char *p = write_file("good.env",
        "\xef\xbb\xbf# Parley settings\n"
        "\n"
        "   # indented comment\n"
        "WEBSOCKET_TIMEOUT=120\n"
        "export WEBSOCKET_MAX_CONNECTIONS=250\r\n"
        "export\tRATE_LIMIT_MESSAGES_PER_MINUTE = 12  # per user\n"
        "PARLEY_MODEL=\"qwen2.5:7b\"\n"
        "PARLEY_DB='/srv/my parley/p.db'   # quoted, with a space\n"
        "PARLEY_JWT_SECRET=\"a#b c'd\"\n"
        "OPENAI_API_KEY=sk-abc#def\n"
        "OLLAMA_SERVER = http://gpu:11434/api/generate \n"
        "SOMEONE_ELSES=anything at all\n"
        "MAX_MESSAGE_LENGTH=1\n"
        "MAX_MESSAGE_LENGTH=6000\n"
        "PARLEY_ALLOWED_ORIGINS=\n"
        "PARLEY_TEMPERATURE=0.2");                 /* no final newline */
    REQUIRE(p != NULL);
    CHECK_INT(config_load_file(&c, p, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_INT(c.ws_timeout_s, 120);
    CHECK_INT(c.ws_max_connections, 250);
    CHECK_INT(c.rate_limit_per_min, 12);
    CHECK_STR(c.model, "qwen2.5:7b");
    CHECK_STR(c.db_path, "/srv/my parley/p.db");
    CHECK_STR(c.jwt_secret, "a#b c'd");
    CHECK_STR(c.openai_api_key, "sk-abc#def");    /* '#' not after a blank */
    CHECK_STR(c.ollama_server, "http://gpu:11434/api/generate");
    CHECK_INT(c.max_message_length, 6000);        /* last one wins */
    CHECK(c.allowed_origins == NULL);
    CHECK(c.temperature == 0.2);
    config_cleanup(&c);
}

struct file_case {
    const char *text;
    const char *err;          /* expected start of the message after the path */
};

static const struct file_case bad_files[] = {
    { "A=1\nB=2\nWEBSOCKET_TIMEOUT=30abc\n",
      ":3: WEBSOCKET_TIMEOUT: must be an integer between 1 and 86400, got '30abc'" },
    { "WEBSOCKET_TIMEOUT=300  # segundos\nWEBSOCKET_TIMEOUT 300\n", ":2: expected KEY=VALUE" },
    { "just words\n", ":1: expected KEY=VALUE" },
    { "=5\n", ":1: expected KEY=VALUE" },
    { "1KEY=5\n", ":1: expected KEY=VALUE" },
    { "PARLEY_MODEL=\"abc\n", ":1: PARLEY_MODEL: unterminated double quote" },
    { "PARLEY_MODEL=\"abc'\n", ":1: PARLEY_MODEL: unterminated double quote" },
    { "PARLEY_MODEL=\"a\"b\n", ":1: PARLEY_MODEL: unexpected text after the closing quote" },
    { "# ok\n\nPARLEY_FOO=1\n", ":3: PARLEY_FOO: unknown setting" },
    { "PARLEY_PROVIDER=gemini\n", ":1: PARLEY_PROVIDER: must be ollama or openai, got 'gemini'" },
};

TEST(file_errors_name_path_and_line)
{
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        struct parley_config c;
        char err[512] = "", name[32], want[600];
        REQUIRE(config_defaults(&c) == 0);
        snprintf(name, sizeof name, "bad%zu.env", i);
        const char *p = write_file(name, bad_files[i].text);
        REQUIRE(p != NULL);
        snprintf(want, sizeof want, "%s%s", p, bad_files[i].err);
        int rc = config_load_file(&c, p, err, sizeof err);
        if (rc != -1 || strncmp(err, want, strlen(want)) != 0) {
            th_case_failed = 1;
            printf("#   case %zu: rc %d, err \"%s\"\n#     expected \"%s\"\n", i, rc, err, want);
        }
        config_cleanup(&c);
    }
}

TEST(missing_file_is_named)
{
    struct parley_config c;
    char err[512], p[512];
    REQUIRE(config_defaults(&c) == 0);
    snprintf(p, sizeof p, "%s/does-not-exist.env", th_tmpdir());
    CHECK_INT(config_load_file(&c, p, err, sizeof err), -1);
    CHECK(strncmp(err, p, strlen(p)) == 0);
    CHECK(strstr(err, "cannot open") != NULL);
    config_cleanup(&c);
}

TEST(load_precedence_defaults_file_env)
{
    clear_env();
    const char *p = write_file("prec.env",
                               "WEBSOCKET_TIMEOUT=111\n"
                               "WEBSOCKET_MAX_CONNECTIONS=222\n"
                               "PARLEY_JWT_SECRET=from-file\n");
    REQUIRE(p != NULL);
    setenv("PARLEY_CONFIG", p, 1);
    setenv("WEBSOCKET_TIMEOUT", "333", 1);          /* env beats file */
    setenv("UNRELATED_VARIABLE", "x", 1);
    struct parley_config c;
    char err[512] = "";
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_INT(c.ws_timeout_s, 333);
    CHECK_INT(c.ws_max_connections, 222);          /* file beats default */
    CHECK_INT(c.rate_limit_per_min, 30);           /* default */
    CHECK_STR(c.jwt_secret, "from-file");
    CHECK(!config_open_mode(&c));
    /* FastCGI parameters come last, through config_set */
    CHECK_INT(config_set(&c, "WEBSOCKET_TIMEOUT", "444", err, sizeof err), 0);
    CHECK_INT(c.ws_timeout_s, 444);
    config_cleanup(&c);

    /* an empty PARLEY_JWT_SECRET in the environment means open mode */
    setenv("PARLEY_JWT_SECRET", "", 1);
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK(config_open_mode(&c));
    config_cleanup(&c);
    clear_env();
    unsetenv("UNRELATED_VARIABLE");
}

TEST(load_errors)
{
    clear_env();
    struct parley_config c;
    char err[512] = "", p[512];
    snprintf(p, sizeof p, "%s/nope.env", th_tmpdir());
    setenv("PARLEY_CONFIG", p, 1);
    CHECK_INT(config_load(&c, err, sizeof err), -1);
    CHECK(strstr(err, "PARLEY_CONFIG") != NULL);
    CHECK(strstr(err, p) != NULL);
    CHECK(c.db_path == NULL);                     /* cleaned up on failure */
    config_cleanup(&c);                           /* and safe again */

    unsetenv("PARLEY_CONFIG");
    setenv("MAX_MESSAGE_LENGTH", "lots", 1);
    CHECK_INT(config_load(&c, err, sizeof err), -1);
    CHECK_STR(err, "environment: MAX_MESSAGE_LENGTH: must be an integer between 1 and "
                   "10000000, got 'lots'");
    config_cleanup(&c);

    setenv("MAX_MESSAGE_LENGTH", "", 1);          /* empty: unset, not an error */
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK_INT(c.max_message_length, 5000);
    config_cleanup(&c);

    unsetenv("MAX_MESSAGE_LENGTH");
    setenv("OPENAI_API_KEY", "sk-SUPERSECRET\x7f", 1);
    CHECK_INT(config_load(&c, err, sizeof err), -1);
    CHECK(strstr(err, "OPENAI_API_KEY") != NULL);
    CHECK(strstr(err, "SUPERSECRET") == NULL);
    config_cleanup(&c);
    clear_env();
}

/* Issue 8 defect h: "OLLAMA_SERVER=" (docker-compose passes unset
 * variables that way) stopped every program. An empty value is an unset
 * one, for every key and from every source. */
TEST(empty_value_is_unset)
{
    static const struct { const char *key, *value; } each[] = {
        { "PARLEY_DB", "/x/p.db" }, { "PARLEY_PROVIDER", "openai" },
        { "OLLAMA_SERVER", "http://gpu:1" }, { "OPENAI_BASE_URL", "http://o:2/v1" },
        { "OPENAI_API_KEY", "sk-1" }, { "PARLEY_MODEL", "m" }, { "PARLEY_TEMPERATURE", "1.5" },
        { "PARLEY_JWT_SECRET", "s" }, { "PARLEY_ALLOWED_ORIGINS", "https://a.example" },
        { "WEBSOCKET_MAX_CONNECTIONS", "7" }, { "WEBSOCKET_TIMEOUT", "7" },
        { "RATE_LIMIT_MESSAGES_PER_MINUTE", "7" }, { "MAX_MESSAGE_LENGTH", "7" },
        { "PARLEY_CONNECT_TIMEOUT_MS", "7" }, { "PARLEY_FIRST_TOKEN_TIMEOUT_MS", "7" },
        { "PARLEY_IDLE_TIMEOUT_MS", "7" }, { "PARLEY_TOTAL_TIMEOUT_MS", "7" },
        { "PARLEY_COALESCE_MS", "7" }, { "PARLEY_LEASE_MS", "700" }, { "PARLEY_POLL_IDLE", "7" },
        { "PARLEY_EVENT_GRACE", "7" }, { "PARLEY_CONTEXT_MESSAGES", "7" },
    };
    struct parley_config c, d;
    char err[512] = "";
    REQUIRE(config_defaults(&d) == 0);
    REQUIRE(config_defaults(&c) == 0);
    for (size_t i = 0; i < sizeof each / sizeof each[0]; i++)
        CHECK_INT(config_set(&c, each[i].key, each[i].value, err, sizeof err), 0);
    CHECK(c.ws_timeout_s == 7 && c.provider == LLM_OPENAI && c.jwt_secret);
    /* config_set with "" (and NULL): every key back to its default */
    for (size_t i = 0; i < sizeof each / sizeof each[0]; i++) {
        if (config_set(&c, each[i].key, i % 2 ? "" : NULL, err, sizeof err) != 0) {
            th_case_failed = 1;
            printf("#   %s='': %s\n", each[i].key, err);
        }
    }
    CHECK_STR(c.db_path, d.db_path);
    CHECK_INT(c.provider, d.provider);
    CHECK_STR(c.ollama_server, d.ollama_server);
    CHECK_STR(c.openai_base_url, d.openai_base_url);
    CHECK(c.openai_api_key == NULL && c.jwt_secret == NULL && c.allowed_origins == NULL);
    CHECK_STR(c.model, d.model);
    CHECK(c.temperature == d.temperature);
    CHECK_INT(c.ws_max_connections, d.ws_max_connections);
    CHECK_INT(c.ws_timeout_s, d.ws_timeout_s);
    CHECK_INT(c.rate_limit_per_min, d.rate_limit_per_min);
    CHECK_INT(c.max_message_length, d.max_message_length);
    CHECK_INT(c.connect_timeout_ms, d.connect_timeout_ms);
    CHECK_INT(c.first_token_timeout_ms, d.first_token_timeout_ms);
    CHECK_INT(c.idle_timeout_ms, d.idle_timeout_ms);
    CHECK_INT(c.total_timeout_ms, d.total_timeout_ms);
    CHECK_INT(c.coalesce_ms, d.coalesce_ms);
    CHECK_INT(c.lease_ms, d.lease_ms);
    CHECK_INT(c.poll_idle_s, d.poll_idle_s);
    CHECK_INT(c.event_grace_s, d.event_grace_s);
    CHECK_INT(c.context_messages, d.context_messages);
    config_cleanup(&c);

    /* in a file: "KEY=" and KEY="" are the default, not an error */
    const char *p = write_file("empty.env", "OLLAMA_SERVER=\nPARLEY_MODEL=\"\"\n"
                                            "WEBSOCKET_TIMEOUT=\nPARLEY_DB=''\n");
    REQUIRE(p != NULL);
    REQUIRE(config_defaults(&c) == 0);
    CHECK_INT(config_load_file(&c, p, err, sizeof err), 0);
    CHECK_STR(c.ollama_server, d.ollama_server);
    CHECK_STR(c.model, d.model);
    CHECK_INT(c.ws_timeout_s, d.ws_timeout_s);
    CHECK_STR(c.db_path, d.db_path);
    config_cleanup(&c);

    /* in the environment, as docker-compose passes it: the program starts */
    clear_env();
    setenv("OLLAMA_SERVER", "", 1);
    setenv("PARLEY_DB", "", 1);
    setenv("WEBSOCKET_TIMEOUT", "", 1);
    setenv("PARLEY_TEMPERATURE", "", 1);
    setenv("PARLEY_PROVIDER", "", 1);
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK_STR(c.ollama_server, d.ollama_server);
    CHECK_STR(c.db_path, d.db_path);
    CHECK_INT(c.ws_timeout_s, d.ws_timeout_s);
    config_cleanup(&c);

    /* over a PARLEY_CONFIG file too: empty means the default (an empty
     * PARLEY_JWT_SECRET is open mode, see load_precedence_defaults_file_env) */
    p = write_file("file-then-empty.env", "OLLAMA_SERVER=http://from-file:1\n"
                                          "WEBSOCKET_TIMEOUT=77\nPARLEY_MODEL=file-model\n");
    REQUIRE(p != NULL);
    setenv("PARLEY_CONFIG", p, 1);
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK_STR(c.ollama_server, d.ollama_server);
    CHECK_INT(c.ws_timeout_s, d.ws_timeout_s);
    CHECK_STR(c.model, "file-model");
    config_cleanup(&c);
    config_cleanup(&d);
    clear_env();
}

/* PARLEY_NODE_PREFIX: this node's own files; PARLEY_DB by default, and
 * required when PARLEY_DB is a PostgreSQL string (whose password is then
 * in no message). */
TEST(node_prefix_defaults_and_is_required_for_postgres)
{
    struct parley_config c;
    char err[512];
    clear_env();
    REQUIRE(config_load(&c, err, sizeof err) == 0);
    CHECK(c.node_prefix == NULL);
    CHECK_STR(config_node_prefix(&c), "parley.db");       /* the default PARLEY_DB */
    config_cleanup(&c);

    setenv("PARLEY_DB", "/srv/parley/p.db", 1);
    REQUIRE(config_load(&c, err, sizeof err) == 0);
    CHECK_STR(config_node_prefix(&c), "/srv/parley/p.db");  /* SQLite: nothing changes */
    config_cleanup(&c);
    setenv("PARLEY_NODE_PREFIX", "/var/lib/parley/node-a", 1);
    REQUIRE(config_load(&c, err, sizeof err) == 0);
    CHECK_STR(config_node_prefix(&c), "/var/lib/parley/node-a");
    config_cleanup(&c);

    /* a PostgreSQL PARLEY_DB without a prefix: refused, naming the setting */
    unsetenv("PARLEY_NODE_PREFIX");
    const char *specs[] = { "postgresql://parley:N0deS3cret@db.example:5432/parley",
                            "postgres://parley:N0deS3cret@db.example/parley",
                            "host=db.example password=N0deS3cret dbname=parley" };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        setenv("PARLEY_DB", specs[i], 1);
        err[0] = '\0';
        CHECK_INT(config_load(&c, err, sizeof err), -1);
        CHECK(strstr(err, "PARLEY_NODE_PREFIX") != NULL);
        CHECK(strstr(err, "N0deS3cret") == NULL);
        CHECK(c.db_path == NULL);                          /* cleaned on failure */
    }
    printf("# %s\n", err);
    /* ... and accepted with one */
    setenv("PARLEY_NODE_PREFIX", "/var/lib/parley/node-b", 1);
    REQUIRE(config_load(&c, err, sizeof err) == 0);
    CHECK_STR(config_node_prefix(&c), "/var/lib/parley/node-b");
    CHECK_INT(config_check(&c, err, sizeof err), 0);
    config_cleanup(&c);
    /* set later (parley.fcgi's FastCGI parameters): config_check sees it */
    clear_env();
    REQUIRE(config_load(&c, err, sizeof err) == 0);
    CHECK_INT(config_set(&c, "PARLEY_DB", specs[0], err, sizeof err), 0);
    CHECK(config_node_prefix(&c) == NULL);
    CHECK_INT(config_check(&c, err, sizeof err), -1);
    CHECK(strstr(err, "PARLEY_NODE_PREFIX") && !strstr(err, "N0deS3cret"));
    CHECK_INT(config_set(&c, "PARLEY_NODE_PREFIX", "/n/x", err, sizeof err), 0);
    CHECK_INT(config_check(&c, err, sizeof err), 0);
    CHECK_INT(config_set(&c, "PARLEY_NODE_PREFIX", "", err, sizeof err), 0);   /* unset again */
    CHECK_INT(config_check(&c, err, sizeof err), -1);
    config_cleanup(&c);
    clear_env();
}

TEST(empty_config_env_is_ignored)
{
    clear_env();
    setenv("PARLEY_CONFIG", "", 1);
    struct parley_config c;
    char err[256];
    CHECK_INT(config_load(&c, err, sizeof err), 0);
    CHECK_INT(c.ws_timeout_s, 300);
    config_cleanup(&c);
    clear_env();
}

TEST(cleanup_is_safe)
{
    struct parley_config c;
    memset(&c, 0, sizeof c);
    config_cleanup(&c);                           /* zeroed */
    config_cleanup(&c);
    config_cleanup(NULL);
    REQUIRE(config_defaults(&c) == 0);
    char err[64];
    config_set(&c, "OPENAI_API_KEY", "k", err, sizeof err);
    config_set(&c, "PARLEY_JWT_SECRET", "s", err, sizeof err);
    config_set(&c, "PARLEY_ALLOWED_ORIGINS", "https://a", err, sizeof err);
    config_cleanup(&c);
    CHECK(c.db_path == NULL && c.jwt_secret == NULL && c.allowed_origins == NULL);
    config_cleanup(&c);                           /* twice */
    /* partial: only some strings set */
    memset(&c, 0, sizeof c);
    c.model = strdup("m");
    config_cleanup(&c);
    CHECK(c.model == NULL);
}

TEST(llm_view_borrows_the_right_strings)
{
    struct parley_config c;
    struct llm_config l;
    char err[256];
    REQUIRE(config_defaults(&c) == 0);
    config_set(&c, "OPENAI_API_KEY", "sk-test", err, sizeof err);
    config_set(&c, "PARLEY_IDLE_TIMEOUT_MS", "1234", err, sizeof err);
    config_llm(&c, &l);
    CHECK_INT(l.provider, LLM_OLLAMA);
    CHECK(l.base_url == c.ollama_server);
    CHECK(l.api_key == NULL);                     /* never sent to Ollama */
    CHECK(l.model == c.model);
    CHECK_INT(l.idle_timeout_ms, 1234);
    CHECK_INT(l.connect_timeout_ms, 5000);
    CHECK_INT(l.first_token_timeout_ms, 60000);
    CHECK_INT(l.total_timeout_ms, 300000);
    config_set(&c, "PARLEY_PROVIDER", "openai", err, sizeof err);
    config_llm(&c, &l);
    CHECK_INT(l.provider, LLM_OPENAI);
    CHECK(l.base_url == c.openai_base_url);
    CHECK_STR(l.api_key, "sk-test");
    config_cleanup(&c);
}

int main(void)
{
    RUN(defaults_match_header);
    RUN(set_validates_each_key);
    RUN(set_stores_values);
    RUN(long_and_binary_values_are_shown_safely);
    RUN(secrets_never_appear_in_messages);
    RUN(file_syntax);
    RUN(file_errors_name_path_and_line);
    RUN(missing_file_is_named);
    RUN(load_precedence_defaults_file_env);
    RUN(load_errors);
    RUN(empty_value_is_unset);
    RUN(empty_config_env_is_ignored);
    RUN(node_prefix_defaults_and_is_required_for_postgres);
    RUN(cleanup_is_safe);
    RUN(llm_view_borrows_the_right_strings);
    return th_done();
}
