#!/bin/sh
# t0610-phoenix-ws.sh — seed 003 (Phoenix Channels) over the bridge's
# WebSocket transport (/socket/websocket), with the official phoenix client
# in Node (tests/integration/phoenix-ws.mjs, `ws` as its WebSocket), through
# Apache (parley-fcgid.conf + parley-websocket.conf) and lighttpd
# (lighttpd-parley.conf) set up with the shipped apache-conf/ snippets.
#   1. open mode, both servers: join, query then cache, stream_query,
#      get_history, ping, heartbeats, leave/rejoin, two topics streaming at
#      once, bad frames, vsn, the first heartbeat in time with
#      longPollFallbackMs;
#   2. PARLEY_JWT_SECRET set (bridge restarted), Apache: the JWT forms, 403
#      refusals, another user's session refused;
#   3. the bridge stopped: with longPollFallbackMs the client lands on
#      /socket/longpoll (parley.fcgi) and works, on both servers.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - Phoenix over WebSocket # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix missing (make node-deps)"

it_init
it_fake_llm
export FAKE_LLM_URL

IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOF_CONF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_PHOENIX_WINDOW=2
EOF_CONF
it_own "$IT_APP_CONFIG"

# 1. open mode
start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
BRIDGE_PID=$IT_LAST_PID
for setup in fcgid lighttpd; do
    "start_$setup" "$BUILD/parley.fcgi"
    it_log "$setup (open mode): $BASE"
    PARLEY_BASE=$BASE PHX_PART=ws it_node_tap "$setup: " tests/integration/phoenix-ws.mjs
    stop_setup
done

# 2. JWT mode: the bridge restarted with the secret
it_stop "$BRIDGE_PID"
it_jwt_config
cat >>"$IT_APP_CONFIG" <<EOF_CONF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_PHOENIX_WINDOW=2
EOF_CONF
start_bridge || it_die "parley-ws did not start (JWT)"
WS_PORT=$BRIDGE_PORT
BRIDGE_PID=$IT_LAST_PID
start_fcgid "$BUILD/parley.fcgi"
it_log "fcgid (JWT): $BASE"
PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PHX_PART=ws it_node_tap "fcgid, JWT: " tests/integration/phoenix-ws.mjs
stop_setup

# 3. the bridge down: WebSocket refused by the web server → LongPoll
it_stop "$BRIDGE_PID"
for setup in fcgid lighttpd; do
    "start_$setup" "$BUILD/parley.fcgi"
    it_log "$setup (bridge down, JWT): $BASE"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PHX_PART=fallback it_node_tap "$setup, bridge down: " \
        tests/integration/phoenix-ws.mjs
    stop_setup
done

hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
TAP_N=$((TAP_N + 1))
if [ -n "$hits" ]; then
    echo "not ok $TAP_N - sanitizer reports in: $hits"
    for f in $hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$f" | sed 's/^/# /'; done
    TAP_FAILED=$((TAP_FAILED + 1))
else
    echo "ok $TAP_N - no sanitizer report in any server, app or bridge log"
fi
it_done
