#!/bin/sh
# t0891-jwt.sh — refused JWTs (issue 13 item 3) through real web servers
# configured with the shipped snippets: lighttpd, Apache + mod_proxy_fcgi
# and Apache + mod_fcgid, each with parley.fcgi and the WebSocket bridge,
# PARLEY_JWT_REQUIRE_EXP=1.
#
# tests/integration/jwt.mjs, through each server: alg none, a wrong key,
# HS512, expired, nbf in the future, no / empty / numeric sub, a crit
# header, no exp, a 5 KB token: 401 with the reason over REST (header and
# ?token=), SSE and long-poll open (header and token in the path), close
# 4401 with it over WebSocket (?token= and Authorization); an 8 KB token:
# Parley's "token too long" where the server lets it through, the server's
# own 4xx where its limits answer first, never 502, 404 or a hang (what
# each server did is printed as a diagnostic); the bridge reached directly
# closes 4401 "token too long" for an 8 KB token in the query or header.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - JWT refusals through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
it_jwt_config
echo "PARLEY_JWT_REQUIRE_EXP=1" >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

# run NAME — jwt.mjs through $BASE; its 8 KB findings become diagnostics.
run() {
    export BASE SECRET SERVER="$1" IT_NODE_TIMEOUT=180
    it_node_tap "$1: " tests/integration/jwt.mjs
    grep -h '8 KB token' "$IT_TMP"/jwt.*.tap 2>/dev/null | grep -F "$1:" | sed -E 's/^[#\\ ]*/# /' | sort -u
}

start_lighttpd "$BUILD/parley.fcgi"
export BRIDGE_WS="ws://127.0.0.1:$BRIDGE_PORT"     # once: the bridge without a server in front
run lighttpd
unset BRIDGE_WS
stop_setup

start_proxy_fcgi "$BUILD/parley.fcgi"
run "apache mod_proxy_fcgi"
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run "apache mod_fcgid"
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
