/* test_ident.c — origins, ticket ids, rate-limit identities, bell path,
 * failure kinds (core/ident.c, core/perr.c). */
#include "th.h"
#include "ident.h"
#include "perr.h"

#include <string.h>

TEST(t_origins)
{
    CHECK(ident_origin_allowed(NULL, "https://a.example"));
    CHECK(ident_origin_allowed("", "https://a.example"));
    CHECK(ident_origin_allowed(" , ", "https://a.example"));
    CHECK(ident_origin_allowed("https://a.example", NULL));
    CHECK(ident_origin_allowed("https://a.example", "https://a.example"));
    CHECK(ident_origin_allowed("https://A.example", "https://a.EXAMPLE"));
    CHECK(ident_origin_allowed(" https://b.example , https://a.example/ ", "https://a.example"));
    CHECK(ident_origin_allowed("https://a.example", "https://a.example/"));
    CHECK(ident_origin_allowed("*", "https://x.example"));
    CHECK(!ident_origin_allowed("https://a.example", "https://a.example.evil"));
    CHECK(!ident_origin_allowed("https://a.example", "https://evil"));
    CHECK(!ident_origin_allowed("https://a.example,", "null"));
}

TEST(t_ticket_ids)
{
    CHECK(ident_ticket_id_valid("T-1_2.x"));
    CHECK(!ident_ticket_id_valid(""));
    CHECK(!ident_ticket_id_valid(NULL));
    CHECK(!ident_ticket_id_valid("a b"));
    CHECK(!ident_ticket_id_valid("é"));
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    CHECK(!ident_ticket_id_valid(id65));
    id65[64] = '\0';
    CHECK(ident_ticket_id_valid(id65));
    CHECK(ident_name_valid("abc", 3));
    CHECK(!ident_name_valid("abcd", 3));
    CHECK(!ident_name_valid("a/b", 10));
}

TEST(t_rate_limit_identity)
{
    char a[IDENT_PEER_MAX], b[IDENT_PEER_MAX];
    CHECK(!strcmp(ident_peer(a, sizeof a, "alice", "1.2.3.4"), "user:alice"));
    CHECK(!strcmp(ident_peer(a, sizeof a, "", "1.2.3.4"), "ip:1.2.3.4"));
    CHECK(!strcmp(ident_peer(a, sizeof a, NULL, NULL), "ip:?"));
    char u1[200], u2[200];
    memset(u1, 'u', 150);
    u1[150] = '\0';
    memcpy(u2, u1, 151);
    u2[149] = 'v';                  /* same 149-byte prefix, different user */
    ident_peer(a, sizeof a, u1, NULL);
    ident_peer(b, sizeof b, u2, NULL);
    CHECK(strcmp(a, b) != 0);
    CHECK(!strncmp(a, "user:sha256:", 12) && strlen(a) == 12 + 64);
    char u100[101];
    memset(u100, 'w', 100);
    u100[100] = '\0';
    ident_peer(a, sizeof a, u100, NULL);
    CHECK(strlen(a) == 105 && !strncmp(a + 5, u100, 100));
}

TEST(t_bell_path)
{
    char p[32];
    CHECK(ident_bell_path("/x/parley.db", p, sizeof p) == 0 && !strcmp(p, "/x/parley.db-bell"));
    CHECK(ident_bell_path("/a/very/long/path/to/parley.db", p, 10) == -1 && p[0] == '\0');
}

TEST(t_failure_kinds)
{
    CHECK(!strcmp(perr_name(PERR_RATE_LIMITED), "rate_limited"));
    CHECK(!strcmp(perr_name((enum perr)999), "internal"));
    CHECK(!strcmp(perr_text(PERR_DB_READONLY), "The database is read-only"));
}

int main(void)
{
    RUN(t_origins);
    RUN(t_ticket_ids);
    RUN(t_rate_limit_identity);
    RUN(t_bell_path);
    RUN(t_failure_kinds);
    return th_done();
}
