#!/bin/sh
# t0810-stop.sh — stopping a generation (docs/stop.md, issue 11 item 1)
# through real web servers configured with the shipped snippets: lighttpd
# (apache-conf/lighttpd-parley.conf) and Apache + mod_fcgid
# (parley-fcgid.conf, parley-websocket.conf), each with parley.fcgi and the
# WebSocket bridge on one SQLite database, JWT required.
#
# tests/integration/stop.mjs runs through each server, WebSocket and
# long-poll clients together, the simulated LLM's request log as witness:
#   - seed 001: a stop POSTed on a long-poll session ends the generation a
#     WebSocket client started (owned by the bridge, stopped from
#     parley.fcgi): the upstream connection is closed by Parley within
#     100 ms of the stop request; both viewers get stream_end with
#     metadata.stopped; the stored assistant message is the partial text
#     with metadata.stopped; stopping it again: 409 (REST) and the error
#     frame (WebSocket);
#   - REST: nothing to stop 404; another user 403 (the generation goes
#     on); a token with role "admin" 202, upstream closed within 100 ms;
#   - seed 000: another user's long-poll stop is refused with the error
#     frame; a viewer leaving does not stop it; the starter's REST stop
#     closes the upstream within 100 ms and every viewer gets
#     {"type":"done","stopped":true}; nothing cached: the next open streams
#     again from a new upstream request.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - stop through the web servers # SKIP $BUILD/$_b is not built"
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
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0" >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

# run_suite NAME — stop.mjs through $BASE; each of its results is one of ours.
run_suite() {
    BASE="$BASE" SECRET="$SECRET" RUN="$1-$$" FAKE_LLM_URL="$FAKE_LLM_URL" IT_NODE_TIMEOUT=180 \
        it_node_tap "$1: " tests/integration/stop.mjs
}

start_lighttpd "$BUILD/parley.fcgi"
run_suite lighttpd
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run_suite apache
stop_setup

# With a sanitizer build (SANITIZE=address,undefined): no report in any log
# of the bridge or of either setup's parley.fcgi.
no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
