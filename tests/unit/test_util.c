/* test_util.c — ids, hashing, error buffers, clocks, UTF-8 decoding and
 * boundary cuts, blank strings. */
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

TEST(utf8_decoding)
{
    long cp = -7;
    CHECK_INT(utf8_decode((const unsigned char *)"A", 1, &cp), 1);
    CHECK_INT(cp, 'A');
    CHECK_INT(utf8_decode((const unsigned char *)"\xc3\xa7", 2, &cp), 2);
    CHECK_INT(cp, 0xe7);
    CHECK_INT(utf8_decode((const unsigned char *)"\xe6\x9d\xb1", 3, &cp), 3);
    CHECK_INT(cp, 0x6771);
    CHECK_INT(utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &cp), 4);
    CHECK_INT(cp, 0x1f600);
    cp = -7;
    static const char *const bad[] = {
        "\x80", "\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xc3(", "\xe6\x9d",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(utf8_decode((const unsigned char *)bad[i], strlen(bad[i]), &cp), 0);
    CHECK_INT(cp, -7);                              /* untouched when malformed */
    /* a sequence longer than the bytes left is malformed */
    CHECK_INT(utf8_decode((const unsigned char *)"\xc3\xa7", 1, &cp), 0);
}

TEST(utf8_boundary_cut)
{
    const char *s = "ab\xc3\xa7\xe2\x82\xac!";  /* a b ç € ! : 1+1+2+3+1 bytes */
    CHECK_INT(utf8_cut(s, 100), 8);
    CHECK_INT(utf8_cut(s, 8), 8);
    CHECK_INT(utf8_cut(s, 7), 7);
    CHECK_INT(utf8_cut(s, 6), 4);                   /* inside the euro sign */
    CHECK_INT(utf8_cut(s, 5), 4);
    CHECK_INT(utf8_cut(s, 4), 4);
    CHECK_INT(utf8_cut(s, 3), 2);                   /* inside the c cedilla */
    CHECK_INT(utf8_cut(s, 0), 0);
    CHECK_INT(utf8_cut("", 5), 0);
    CHECK_INT(utf8_floor(s, 6), 4);
    CHECK_INT(utf8_floor(s, 2), 2);
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", utf8_cut(s, 6), s);
    CHECK_STR(buf, "ab\xc3\xa7");
}

TEST(blank_strings)
{
    CHECK_INT(str_blank(""), 1);
    CHECK_INT(str_blank(" \t\r\n "), 1);
    CHECK_INT(str_blank(" x "), 0);
    CHECK_INT(str_blank("\xc2\xa0"), 0);           /* only ASCII white space is blank */
    CHECK_INT(str_blank("\v"), 0);
}

int main(void)
{
    RUN(sha256_known_vectors);
    RUN(uuid_v4_format_and_uniqueness);
    RUN(set_err_and_str_copy);
    RUN(owner_ids_differ_per_thread);
    RUN(clocks_move_forward);
    RUN(utf8_decoding);
    RUN(utf8_boundary_cut);
    RUN(blank_strings);
    return th_done();
}
