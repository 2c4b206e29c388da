/* test_util.c — ids, hashing, error buffers, clocks. */
#include "th.h"
#include "util.h"

#include <ctype.h>
#include <pthread.h>
#include <unistd.h>

TEST(sha256_known_vectors)
{
    static const struct { const char *in; const char *hex; } v[] = {
        { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
        { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[65];
        sha256_hex(v[i].in, strlen(v[i].in), out);
        CHECK_STR(out, v[i].hex);
    }
}

TEST(uuid_v4_format_and_uniqueness)
{
    char a[37], b[37];
    REQUIRE(uuid_v4(a) == 0);
    REQUIRE(uuid_v4(b) == 0);
    CHECK_INT(strlen(a), 36);
    CHECK(strcmp(a, b) != 0);
    CHECK(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
    CHECK(a[14] == '4');
    CHECK(strchr("89ab", a[19]) != NULL);
    for (int i = 0; i < 36; i++)
        if (i != 8 && i != 13 && i != 18 && i != 23)
            CHECK(isxdigit((unsigned char)a[i]) && !isupper((unsigned char)a[i]));
}

TEST(set_err_and_str_copy)
{
    char buf[8];
    CHECK_INT(set_err(buf, sizeof buf, "%s-%d", "abcdef", 42), -1);
    CHECK_STR(buf, "abcdef-");          /* truncated, terminated */
    CHECK_INT(set_err(NULL, 0, "x"), -1);
    str_copy(buf, sizeof buf, "0123456789");
    CHECK_STR(buf, "0123456");
    str_copy(buf, sizeof buf, NULL);
    CHECK_STR(buf, "");
}

static void *owner_of_thread(void *arg)
{
    str_copy(arg, 64, owner_id());
    return NULL;
}

TEST(owner_ids_differ_per_thread)
{
    char other[64];
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, owner_of_thread, other) == 0);
    pthread_join(th, NULL);
    CHECK(strcmp(other, owner_id()) != 0);
    CHECK_STR(owner_id(), owner_id());  /* stable within a thread */
    CHECK_INT(pid_alive(getpid()), 1);
    CHECK_INT(pid_alive(0), 0);
}

TEST(clocks_move_forward)
{
    int64_t a = mono_us(), m = mono_ms(), w = now_ms();
    CHECK(a > 0 && m > 0);
    CHECK(w > 1600000000000LL);         /* after 2020 */
    CHECK(mono_us() >= a);
}

int main(void)
{
    RUN(sha256_known_vectors);
    RUN(uuid_v4_format_and_uniqueness);
    RUN(set_err_and_str_copy);
    RUN(owner_ids_differ_per_thread);
    RUN(clocks_move_forward);
    return th_done();
}
