/* api_usage.h — the token_budget JWT claim for parley.fcgi's fronts
 * (api_usage.c, docs/usage.md). */
#ifndef PARLEY_API_USAGE_H
#define PARLEY_API_USAGE_H
#include "http.h"
#include "proto.h"

/* Sets c->has_token_budget / c->token_budget from the token_budget claim of
 * token (NULL or "": the request's Authorization bearer, else its ?token=)
 * when it verifies and its sub is c->user; leaves c alone otherwise (open
 * mode, no token, no claim, a visitor). Call after proto_open. Thread: the
 * request's. Borrows everything. */
void request_token_budget(struct request *r, const char *token, struct proto_conn *c);
#endif
