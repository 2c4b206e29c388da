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
#   3. no bridge (nothing listens where the servers send WebSocket): with
#      longPollFallbackMs the client lands on /socket/longpoll (parley.fcgi)
#      and works, on both servers.
# The five runs go at once (lib-par.sh): each web server its own, each part
# its own database (a running bridge's marker file is its database's).
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
. tests/integration/lib-par.sh

# The five runs below go at once (lib-par.sh), each on a web server of its
# own (IT_NODE: its own directories); each part on a database of its own,
# so that a bridge's marker file (<db>-ws.up: Apache sends long-poll to the
# bridge while it exists) is only there for the setups of that bridge.
OPEN_CONFIG=$IT_TMP/parley.env
cat >"$OPEN_CONFIG" <<EOF_CONF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_PHOENIX_WINDOW=2
EOF_CONF
it_own "$OPEN_CONFIG"
it_jwt_config
cat >>"$IT_APP_CONFIG" <<EOF_CONF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_PHOENIX_WINDOW=2
EOF_CONF
JWT_CONFIG=$IT_APP_CONFIG

STOPS=""
# server SETUP NODE — starts SETUP (fcgid, lighttpd) as IT_NODE=NODE;
# what stops it is added to STOPS
server() {
    IT_NODE=$2
    "start_$1" "$BUILD/parley.fcgi"
    STOPS="$STOPS $SETUP_DIR|$(echo $SETUP_PIDS | tr ' ' ,)"
    IT_NODE=""
}

# 1. open mode, both servers, one bridge
IT_APP_CONFIG=$OPEN_CONFIG IT_DB=$IT_TMP/data/open.db
IT_NODE=open
start_bridge || it_die "parley-ws did not start"
OPEN_BRIDGE_PID=$BRIDGE_PID
WS_PORT=$BRIDGE_PORT
for setup in fcgid lighttpd; do
    server "$setup" "open"
    it_log "$setup (open mode): $BASE, bridge $BRIDGE_PORT"
    PARLEY_BASE=$BASE PARLEY_DB=$IT_DB AS_APP=$AS_APP PHX_PART=ws it_par "$setup-open" it_node_tap "$setup: " tests/integration/phoenix-ws.mjs
done

# 2. JWT mode: a bridge with the secret, Apache
IT_APP_CONFIG=$JWT_CONFIG IT_DB=$IT_TMP/data/jwt.db
IT_NODE=jwt
start_bridge || it_die "parley-ws did not start (JWT)"
JWT_BRIDGE_PID=$BRIDGE_PID
WS_PORT=$BRIDGE_PORT
server fcgid jwt
it_log "fcgid (JWT): $BASE, bridge $BRIDGE_PORT"
PARLEY_BASE=$BASE PARLEY_DB=$IT_DB AS_APP=$AS_APP PARLEY_JWT_SECRET=$SECRET PHX_PART=ws \
    it_par fcgid-jwt it_node_tap "fcgid, JWT: " tests/integration/phoenix-ws.mjs

# 3. the bridge down (none on this database; nothing listens on WS_PORT):
# WebSocket refused by the web server → LongPoll
IT_DB=$IT_TMP/data/down.db
WS_PORT=$(free_port)
for setup in fcgid lighttpd; do
    server "$setup" "down"
    it_log "$setup (bridge down, JWT): $BASE"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PHX_PART=fallback \
        it_par "$setup-down" it_node_tap "$setup, bridge down: " tests/integration/phoenix-ws.mjs
done

it_par_wait
it_stop "$OPEN_BRIDGE_PID" "$JWT_BRIDGE_PID"
for _s in $STOPS; do
    SETUP_DIR=${_s%%|*} SETUP_PIDS=$(echo "${_s#*|}" | tr , ' ')
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
