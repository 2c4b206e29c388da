#!/bin/sh
# t0820-anonymous.sh — anonymous visitors (docs/anonymous.md, issue 11
# item 6) through lighttpd (apache-conf/lighttpd-parley.conf: parley.fcgi
# for /api/*, WebSocket paths proxied to the bridge parley-ws), with
# PARLEY_JWT_SECRET set and PARLEY_ANONYMOUS=brand
# (tests/integration/anonymous.mjs):
#   the ticket protocol (seed 000), seed 004 and seed 000 REST still refuse a
#     missing token (4401 / 401); a wrong JWT on brand is refused too;
#   a seed 002 brand visitor is served over WebSocket (token in the welcome
#     frame) and over long-poll (Set-Cookie HttpOnly SameSite=Lax; token in
#     the open response), and keeps its identity with its token;
#   a visitor cannot continue another visitor's or a user's conversation nor
#     read their poll sessions; a user cannot take over a visitor's
#     conversation; a JWT naming a visitor and a forged visitor token fail;
#   /api/metrics and the bridge's /metrics count the visitors;
#   fresh visitors from one address share its rate-limit bucket.
# Then: PARLEY_ANONYMOUS=brand,shop is refused at start, naming the setting.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - anonymous visitors # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL
it_jwt_config
LIMIT=10
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=$LIMIT"
    echo "PARLEY_ANONYMOUS=brand"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
BRIDGE_PID=$IT_LAST_PID
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "bridge ws://127.0.0.1:$BRIDGE_PORT, lighttpd $BASE"

PARLEY_BASE=$BASE BRIDGE_URL="http://127.0.0.1:$BRIDGE_PORT" PARLEY_JWT_SECRET=$SECRET LIMIT=$LIMIT \
    it_node_tap "" tests/integration/anonymous.mjs

stop_setup
it_stop "$BRIDGE_PID"

# An unknown protocol in PARLEY_ANONYMOUS stops the bridge at start, with
# the setting named.
bad_list() {
    _cfg=$IT_TMP/bad.env
    sed 's/^PARLEY_ANONYMOUS=.*/PARLEY_ANONYMOUS=brand,shop/' "$IT_APP_CONFIG" >"$_cfg"
    it_own "$_cfg"
    _msg=$(PARLEY_CONFIG=$_cfg PARLEY_DB=$IT_TMP/bad.db timeout 10 $AS_APP "$BUILD/parley-ws" \
        --listen 127.0.0.1:0 2>&1) && _rc=0 || _rc=$?
    [ $_rc -ne 0 ] && [ $_rc -ne 124 ] || { echo "parley-ws exit $_rc: $_msg"; return 1; }
    case $_msg in
    *PARLEY_ANONYMOUS*shop*) echo "refused: $_msg" | head -n 2 ;;
    *) echo "no message naming PARLEY_ANONYMOUS: $_msg"; return 1 ;;
    esac
}
ok "PARLEY_ANONYMOUS=brand,shop refused at start, the setting named" bad_list

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
