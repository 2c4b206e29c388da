/* api_usage.h — a connection's JWT claims for parley.fcgi's fronts: the
 * token_budget claim (docs/usage.md) and the admin role (docs/stop.md). */
#ifndef PARLEY_API_USAGE_H
#define PARLEY_API_USAGE_H
#include "http.h"
#include "proto.h"

/* Sets c->admin (role "admin") and c->has_token_budget / c->token_budget
 * (the token_budget claim) from token (NULL or "": the request's
 * Authorization bearer, else its ?token=) when it verifies and its sub is
 * c->user; leaves c alone otherwise (open mode, no token, no claim, a
 * visitor). Call after proto_open. Thread: the request's. Borrows
 * everything. */
void request_claims(struct request *r, const char *token, struct proto_conn *c);
#endif
