/* api_usage.h — a connection's JWT claims for parley.fcgi's fronts: the
 * token_budget claim (docs/usage.md) and the admin role (docs/stop.md). */
#ifndef PARLEY_API_USAGE_H
#define PARLEY_API_USAGE_H
#include "http.h"
#include "proto.h"

/* Sets c->admin (role "admin") and c->has_token_budget / c->token_budget
 * (the token_budget claim) from token (NULL or "": the claims of the token
 * the dispatcher verified, r->claims) when it verifies and its sub is
 * c->user; leaves c alone otherwise (open mode, no token, no claim, a
 * visitor). Call after proto_open (the tenant goes to proto_open_client,
 * proto_client.tenant). Thread: the request's. Borrows everything. */
void request_claims(struct request *r, const char *token, struct proto_conn *c);
/* The stored id of the request's ticket r->params[0] (a valid ticket id)
 * for the tenant of its token (ident_ticket_stored; docs/tenants.md) into
 * out (IDENT_TICKET_STORED_MAX bytes): the id itself while
 * PARLEY_TENANT_CLAIM is unset. Returns out, or NULL with a 403 written
 * when the setting is set and the token carries no tenant. Thread: the
 * request's. */
const char *api_ticket_stored(struct request *r, char *out);
#endif
