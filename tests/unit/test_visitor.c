/* test_visitor.c — anonymous visitors (core/visitor.c): the PARLEY_ANONYMOUS
 * list and its validation, visitor tokens (unguessable, unforgeable, bound to
 * the secret), cookies, and the ownership rules: a visitor's conversations are
 * neither another visitor's nor a user's, a JWT can never name a visitor, and
 * visitors are rate-limited by address (core/auth.c, core/ident.c, store). */
#include "th.h"
#include "auth.h"
#include "config.h"
#include "db.h"
#include "ident.h"
#include "proto.h"
#include "store.h"
#include "util.h"
#include "visitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "test-secret-0123456789-0123456789"

TEST(t_list)
{
    char err[200];
    CHECK(visitor_list_check(NULL, err, sizeof err) == 0);
    CHECK(visitor_list_check("", err, sizeof err) == 0);
    CHECK(visitor_list_check("brand", err, sizeof err) == 0);
    CHECK(visitor_list_check(" brand , ticket,send ", err, sizeof err) == 0);
    CHECK(visitor_list_check("brand,shop", err, sizeof err) == -1);
    CHECK(strstr(err, "PARLEY_ANONYMOUS") && strstr(err, "'shop'"));
    CHECK(visitor_list_check("brand,,ticket", err, sizeof err) == -1);
    CHECK(strstr(err, "PARLEY_ANONYMOUS") && strstr(err, "empty"));
    CHECK(visitor_list_check("Brand", err, sizeof err) == -1);
    CHECK(visitor_list_check("brand,phoenix", err, sizeof err) == -1);
    CHECK(strstr(err, "PARLEY_ANONYMOUS") && strstr(err, "phoenix"));
    CHECK(!visitor_allowed("phoenix", PROTO_PHOENIX));
    CHECK(visitor_allowed("brand", PROTO_BRAND));
    CHECK(visitor_allowed(" ticket , brand ", PROTO_BRAND));
    CHECK(visitor_allowed(" ticket , brand ", PROTO_TICKET));
    CHECK(!visitor_allowed("brand", PROTO_TICKET));
    CHECK(!visitor_allowed("brand", PROTO_CHAT));
    CHECK(!visitor_allowed("branding", PROTO_BRAND));
    CHECK(!visitor_allowed(NULL, PROTO_BRAND));
    CHECK(!visitor_allowed("brand", 99));
    CHECK(visitor_any("send") && !visitor_any("") && !visitor_any(NULL));
    CHECK_STR(visitor_kind_name(PROTO_SEND), "send");
    CHECK_STR(visitor_kind_name(PROTO_PHOENIX), "phoenix");
    CHECK(visitor_kind_name(-1) == NULL);
}

/* config_check names the setting for an unknown protocol. */
TEST(t_config)
{
    struct parley_config cfg;
    char err[300];
    REQUIRE(config_defaults(&cfg) == 0);
    CHECK(config_set(&cfg, "PARLEY_ANONYMOUS", "brand,ticket", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) == 0);
    CHECK(config_set(&cfg, "PARLEY_ANONYMOUS", "brand,shop", err, sizeof err) == 0);
    CHECK(config_check(&cfg, err, sizeof err) == -1);
    CHECK(strstr(err, "PARLEY_ANONYMOUS") != NULL);
    config_cleanup(&cfg);
}

TEST(t_tokens)
{
    char tok[VISITOR_TOKEN_MAX], tok2[VISITOR_TOKEN_MAX], u[VISITOR_USER_MAX], u2[VISITOR_USER_MAX];
    char got[VISITOR_USER_MAX];
    REQUIRE(visitor_issue(SECRET, tok, sizeof tok, u, sizeof u) == 0);
    REQUIRE(visitor_issue(SECRET, tok2, sizeof tok2, u2, sizeof u2) == 0);
    CHECK(visitor_is(u) && visitor_is(u2));
    CHECK(strlen(u) == 5 + 32);
    CHECK(strcmp(u, u2) != 0 && strcmp(tok, tok2) != 0);   /* random ids */
    CHECK(visitor_verify(SECRET, tok, got, sizeof got) == 0);
    CHECK_STR(got, u);
    CHECK(visitor_verify(SECRET, tok2, got, sizeof got) == 0);
    CHECK_STR(got, u2);
    /* another secret (another deployment) does not accept it */
    CHECK(visitor_verify("another-secret-xxxxxxxxxxxxxxxxxxxx", tok, got, sizeof got) == -1);
    CHECK_STR(got, "");
    /* knowing a visitor's id is not enough: a forged MAC is refused */
    char forged[VISITOR_TOKEN_MAX];
    snprintf(forged, sizeof forged, "%.36s%s", tok, tok2 + 36);
    CHECK(visitor_verify(SECRET, forged, got, sizeof got) == -1);
    strcpy(forged, tok);
    forged[50] = forged[50] == 'a' ? 'b' : 'a';
    CHECK(visitor_verify(SECRET, forged, got, sizeof got) == -1);
    CHECK(visitor_verify(SECRET, "", got, sizeof got) == -1);
    CHECK(visitor_verify(SECRET, NULL, got, sizeof got) == -1);
    CHECK(visitor_verify(SECRET, "v1.zz", got, sizeof got) == -1);
    strcpy(forged, tok);
    forged[3] = 'G';                                       /* not hex */
    CHECK(visitor_verify(SECRET, forged, got, sizeof got) == -1);
    CHECK(visitor_issue("", tok, sizeof tok, u, sizeof u) == -1);
    CHECK(visitor_issue(SECRET, tok, 20, u, sizeof u) == -1);
    /* a JWT is not a visitor token, nor the reverse */
    char *jwt = auth_make_token(SECRET, "alice", 0);
    REQUIRE(jwt);
    CHECK(visitor_verify(SECRET, jwt, got, sizeof got) == -1);
    char sub[128];
    CHECK(auth_verify(SECRET, tok, 0, sub, sizeof sub) != AUTH_OK);
    free(jwt);
}

/* No token can name a visitor: a JWT whose sub is "anon:..." is refused. */
TEST(t_jwt_cannot_be_visitor)
{
    char tok[VISITOR_TOKEN_MAX], u[VISITOR_USER_MAX], sub[128];
    REQUIRE(visitor_issue(SECRET, tok, sizeof tok, u, sizeof u) == 0);
    char *jwt = auth_make_token(SECRET, u, 0);
    REQUIRE(jwt);
    CHECK_INT(auth_verify(SECRET, jwt, 0, sub, sizeof sub), AUTH_NO_SUBJECT);
    CHECK_STR(sub, "");
    free(jwt);
    jwt = auth_make_token(SECRET, "anonymous-fan", 0);    /* only the prefix */
    REQUIRE(jwt);
    CHECK_INT(auth_verify(SECRET, jwt, 0, sub, sizeof sub), AUTH_OK);
    CHECK_STR(sub, "anonymous-fan");
    free(jwt);
}

TEST(t_cookies)
{
    char out[VISITOR_TOKEN_MAX], hdr[300];
    CHECK_STR(visitor_cookie_find("parley_visitor=v1.abc", out, sizeof out), "v1.abc");
    CHECK_STR(visitor_cookie_find("a=1; parley_visitor=v1.x ; b=2", out, sizeof out), "v1.x");
    CHECK_STR(visitor_cookie_find("a=1;parley_visitor=\"v1.q\"", out, sizeof out), "v1.q");
    CHECK(visitor_cookie_find("xparley_visitor=v1.a", out, sizeof out) == NULL);
    CHECK(visitor_cookie_find("parley_visitorx=v1.a", out, sizeof out) == NULL);
    CHECK(visitor_cookie_find("a=1", out, sizeof out) == NULL);
    CHECK(visitor_cookie_find(NULL, out, sizeof out) == NULL);
    CHECK(visitor_cookie_find("parley_visitor=0123456789", out, 5) == NULL);
    CHECK(visitor_set_cookie(hdr, sizeof hdr, "v1.t", 0) == 0);
    CHECK(strstr(hdr, "parley_visitor=v1.t; Path=/;") == hdr);
    CHECK(strstr(hdr, "HttpOnly") && strstr(hdr, "SameSite=Lax") && !strstr(hdr, "Secure"));
    CHECK(visitor_set_cookie(hdr, sizeof hdr, "v1.t", 1) == 0);
    CHECK(strstr(hdr, "; Secure") != NULL);
    CHECK(visitor_set_cookie(hdr, 10, "v1.t", 1) == -1 && hdr[0] == '\0');
    CHECK(visitor_https("on", NULL) && visitor_https(NULL, "https") &&
          visitor_https(NULL, " HTTPS, http") && visitor_https("1", "http"));
    CHECK(!visitor_https(NULL, NULL) && !visitor_https("off", "http") &&
          !visitor_https("", "httpsx"));
}

/* Visitors share the bucket of their address; users keep their own. */
TEST(t_rate_identity)
{
    char p[IDENT_PEER_MAX], u[VISITOR_USER_MAX], tok[VISITOR_TOKEN_MAX];
    REQUIRE(visitor_issue(SECRET, tok, sizeof tok, u, sizeof u) == 0);
    CHECK_STR(ident_peer(p, sizeof p, u, "203.0.113.7"), "ip:203.0.113.7");
    CHECK_STR(ident_peer(p, sizeof p, "alice", "203.0.113.7"), "user:alice");
}

/* A visitor's conversation is found only under that visitor's id. */
TEST(t_ownership)
{
    char dir[512], path[600], err[300];
    snprintf(dir, sizeof dir, "%s", th_tmpdir());
    snprintf(path, sizeof path, "%s/visitor.db", dir);
    parley_db *db = db_open(path, err, sizeof err);
    if (!db)
        printf("# db_open: %s\n", err);
    REQUIRE(db);
    char ta[VISITOR_TOKEN_MAX], tb[VISITOR_TOKEN_MAX], a[VISITOR_USER_MAX], b[VISITOR_USER_MAX];
    REQUIRE(visitor_issue(SECRET, ta, sizeof ta, a, sizeof a) == 0);
    REQUIRE(visitor_issue(SECRET, tb, sizeof tb, b, sizeof b) == 0);
    struct conversation ca, cu, got;
    memset(&ca, 0, sizeof ca);
    str_copy(ca.owner, sizeof ca.owner, a);
    str_copy(ca.kind, sizeof ca.kind, "brand");
    REQUIRE(store_conv_create(db, &ca) == STORE_OK);
    memset(&cu, 0, sizeof cu);
    str_copy(cu.owner, sizeof cu.owner, "alice");
    str_copy(cu.kind, sizeof cu.kind, "brand");
    REQUIRE(store_conv_create(db, &cu) == STORE_OK);
    CHECK(strlen(ca.id) == 36 && strcmp(ca.id, cu.id) != 0);   /* random UUIDs */
    CHECK_INT(store_conv_get(db, ca.id, a, &got), 0);
    store_conv_free(&got);
    CHECK_INT(store_conv_get(db, ca.id, b, &got), 1);          /* another visitor */
    CHECK_INT(store_conv_get(db, ca.id, "alice", &got), 1);    /* a user */
    CHECK_INT(store_conv_get(db, cu.id, a, &got), 1);          /* a visitor, a user's */
    CHECK_INT(store_conv_get(db, cu.id, "alice", &got), 0);
    store_conv_free(&got);
    db_close(db);
}

int main(void)
{
    RUN(t_list);
    RUN(t_config);
    RUN(t_tokens);
    RUN(t_jwt_cannot_be_visitor);
    RUN(t_cookies);
    RUN(t_rate_identity);
    RUN(t_ownership);
    return th_done();
}
