#!/bin/sh
# t0510-rate-ident.sh — one rate-limit bucket per authenticated user, keyed
# by the whole JWT subject, shared by WebSocket (parley-ws) and REST/SSE
# (parley.fcgi behind Apache + mod_proxy_fcgi) on one database
# (tests/integration/rate-ident.mjs; issue 8 defect d: the bridge cut the
# subject at 70 bytes).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - rate-limit identity # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
it_jwt_config
LIMIT=4
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=$LIMIT" >>"$IT_APP_CONFIG"
IT_DB=$IT_TMP/data/parley.db

start_bridge || it_die "parley-ws did not start"
BRIDGE_PID=$IT_LAST_PID
WS_PORT=$BRIDGE_PORT
start_proxy_fcgi "$BUILD/parley.fcgi"
it_log "bridge ws://127.0.0.1:$BRIDGE_PORT, web server $BASE"

WS_URL="ws://127.0.0.1:$BRIDGE_PORT" PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET LIMIT=$LIMIT \
    it_node_tap "" tests/integration/rate-ident.mjs

# Under SANITIZE=address,undefined: no report from the bridge or the app,
# a leak at exit included.
stop_setup
it_stop "$BRIDGE_PID"
_hits=$(grep -rlE --include='*.log' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
TAP_N=$((TAP_N + 1))
if [ -n "$_hits" ]; then
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - sanitizer reports in: $_hits"
    for _f in $_hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$_f" | sed 's/^/# /'; done
else
    echo "ok $TAP_N - no sanitizer report from the bridge or parley.fcgi"
fi
it_done
