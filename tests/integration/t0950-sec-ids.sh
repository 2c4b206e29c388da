#!/bin/sh
# t0950-sec-ids.sh — another user's objects by id (issue 13, item 3), with
# PARLEY_JWT_SECRET set and two users, alice and bob, through lighttpd (the
# shipped apache-conf/lighttpd-parley.conf) in front of parley.fcgi with the
# WebSocket paths proxied to parley-ws (one SQLite database): every
# transport the bridge and parley.fcgi serve (REST, WebSocket, Parley
# long-poll, Phoenix WebSocket and LongPoll, SSE of seed 004 and the AI SDK
# stream). tests/integration/sec-ids.mjs says what each case checks: bob
# gets 404 or a refusal, never alice's data, and his stops, deletes and
# posts change nothing of hers. tests/integration/sec-ids-edge.mjs, on the
# same setup (PARLEY_ALLOWED_ORIGINS and PARLEY_TENANT_CLAIM=org set): Origin
# and CORS from foreign origins on every WebSocket path and on preflights,
# the bridge's /metrics and /healthz out of a proxy's reach, /api/metrics
# an admin's, another tenant's stored ticket id. Anonymous visitors and the
# other tenant checks are t0821 and t0890. Needs $BUILD/parley-ws and
# $BUILD/parley.fcgi (skips otherwise). TAP output; exit status 0 only if
# everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - another user's objects by id # SKIP $BUILD/$_b is not built"
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
GOOD=https://help.example
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_ALLOWED_ORIGINS=$GOOD, https://other.example:8443"
    echo "PARLEY_TENANT_CLAIM=org"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
export BASE SECRET GOOD RUN="i$$" IT_NODE_TIMEOUT=180 BRIDGE="http://127.0.0.1:$WS_PORT"
it_node_tap "lighttpd: " tests/integration/sec-ids.mjs
it_node_tap "lighttpd: " tests/integration/sec-ids-edge.mjs
stop_setup

# (stop_setup and it_done fail the test on a sanitizer report of any of them)
it_done
