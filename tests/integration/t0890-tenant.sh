#!/bin/sh
# t0890-tenant.sh — tickets scoped to a tenant (docs/tenants.md, issue 13
# item 4) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf) and Apache + mod_proxy_fcgi
# (parley-proxy-fcgi.conf, parley-fcgi.service, parley-websocket.conf),
# each with parley.fcgi and the WebSocket bridge on one SQLite database,
# PARLEY_TENANT_CLAIM=org and PARLEY_ADMIN_CLAIM=role=helpdesk-admin.
#
# tests/integration/tenant.mjs, through each server: users of two tenants
# on one ticket id over WebSocket, long-poll, REST and SSE get two
# generations (the simulated LLM's request log: one request per tenant) and
# never each other's answer; a token without the claim is refused (403,
# error frame "forbidden", close 4403); DELETE needs the admin claim and
# reaches only the caller's tenant; another tenant's stop finds nothing.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - tenants through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL
curl -fsS "$FAKE_LLM_URL/_fake/requests" >/dev/null 2>&1 ||
    it_die "the simulated LLM at $FAKE_LLM_URL has no request log (GET /_fake/requests)"
it_jwt_config
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_TENANT_CLAIM=org"
    echo "PARLEY_ADMIN_CLAIM=role=helpdesk-admin"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

start_lighttpd "$BUILD/parley.fcgi"
export BASE SECRET RUN="l$$" IT_NODE_TIMEOUT=180
it_node_tap "lighttpd: " tests/integration/tenant.mjs
stop_setup

start_proxy_fcgi "$BUILD/parley.fcgi"
export BASE RUN="a$$"
it_node_tap "apache mod_proxy_fcgi: " tests/integration/tenant.mjs
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
