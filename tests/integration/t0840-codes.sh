#!/bin/sh
# t0840-codes.sh — protocol errors as data (docs/errors.md, issue 11 item
# 5) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf) and Apache + mod_fcgid
# (parley-fcgid.conf, parley-websocket.conf), each with parley.fcgi and the
# WebSocket bridge on one SQLite database, JWT required,
# RATE_LIMIT_MESSAGES_PER_MINUTE=3.
#
# tests/integration/codes.mjs runs through each server, over WebSocket
# (the bridge behind the server's proxy), long-poll and REST, each error
# frame checked for its code beside the unchanged message:
#   - a rate-limited question (the 4th of a minute): rate_limited on
#     WebSocket (seed 000), long-poll (seed 000), REST send 429;
#   - a too-long message (MAX_MESSAGE_LENGTH + 1 characters): too_long on
#     WebSocket (seed 001, seed 002), long-poll (seed 000), REST send 400;
#   - the upstream down (the simulated LLM answering 503, and failing after
#     two tokens): upstream_unavailable / upstream_error on WebSocket (seed
#     001), long-poll (seed 000) and in seed 004's SSE stream;
#   - a bad JSON frame: bad_input on WebSocket (seed 002), long-poll
#     (seed 001) and REST (400);
#   - a REST 404 and 401: not_found, unauthorized.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - error codes through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL
it_jwt_config
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=3" >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

run_suite() {
    RUN="$1-$$" IT_NODE_TIMEOUT=180
    export BASE SECRET RUN FAKE_LLM_URL IT_NODE_TIMEOUT
    it_node_tap "$1: " tests/integration/codes.mjs
}

start_lighttpd "$BUILD/parley.fcgi"
run_suite lighttpd
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run_suite apache
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
