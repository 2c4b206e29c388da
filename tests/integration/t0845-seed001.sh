#!/bin/sh
# t0845-seed001.sh — seed 001 as its document describes it (issue 11 item 4,
# docs/protocol-001.md) through real web servers configured with the
# shipped snippets: lighttpd (apache-conf/lighttpd-parley.conf) and Apache +
# mod_proxy_fcgi (parley-proxy-fcgi.conf, parley-websocket.conf), each with
# parley.fcgi and the WebSocket bridge on one SQLite database, JWT required,
# PARLEY_CHAT_QUEUE=2 and WEBSOCKET_TIMEOUT=4.
#
# tests/integration/seed001.mjs runs through each server with WebSocket and
# long-poll clients and REST, the simulated LLM's request log as witness:
# queued messages answered in order (queue_full beyond the queue; "stream":
# false on a queued one), the session's metadata and project_id, and its
# status active -> idle -> active -> closed.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - seed 001 through the web servers # SKIP $BUILD/$_b is not built"
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
    echo "PARLEY_CHAT_QUEUE=2"
    echo "WEBSOCKET_TIMEOUT=4"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

run_suite() {
    BASE="$BASE" SECRET="$SECRET" RUN="$1-$$" FAKE_LLM_URL="$FAKE_LLM_URL" IT_NODE_TIMEOUT=240 \
        it_node_tap "$1: " tests/integration/seed001.mjs
}

start_lighttpd "$BUILD/parley.fcgi"
run_suite lighttpd
stop_setup

start_proxy_fcgi "$BUILD/parley.fcgi"
run_suite apache-proxy-fcgi
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
