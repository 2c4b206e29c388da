#!/bin/sh
# t0600-phoenix.sh — seed 003 (Phoenix Channels) over the Phoenix LongPoll
# transport of parley.fcgi, with the official phoenix client in Node
# (tests/integration/phoenix-lp.mjs), through lighttpd + mod_fastcgi,
# Apache + mod_proxy_fcgi and Apache + mod_fcgid (one request per process:
# a waiting GET holds its process, the POSTs get others), and Apache +
# mod_fcgid with the bridge running (parley-websocket.conf sends LongPoll to
# the bridge, which answers it with the same handlers), set up with the
# shipped apache-conf/ snippets.
# JWT on; PARLEY_PHOENIX_WINDOW=2 so an empty poll answers 204 quickly.
# Each setup's database gets a knowledge-base article (`parley kb import`,
# as an admin does) so one query is answered grounded (PARLEY_KB_PHOENIX is
# on by default): the simulated LLM — one of this test's own per setup, so
# its last request is that setup's (PARLEY_FAKE_URL) — must see the
# article's passage.
# The four setups run at once (lib-par.sh), each with its own database,
# setup directory, simulated LLM and (fcgid_bridge) bridge.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
it_init
. tests/integration/lib-par.sh
# own_fake_llm — a simulated LLM of this setup's own (FAKE_LLM_URL): the
# KB test reads its last request, which another setup's would overwrite.
own_fake_llm() {
    rm -f "$IT_TMP/fake-llm.port"
    FAKE_LLM_URL=""
    it_fake_llm
}
APP=$BUILD/parley.fcgi
CLI=$BUILD/parley
[ -x "$APP" ] || it_die "$APP is not built (make)"
[ -x "$CLI" ] || it_die "$CLI is not built (make)"
ART=$IT_TMP/printers.md
cat >"$ART" <<'EOF'
# Fuser error E52

Error E52 means the fuser unit overheated: switch the printer off for
ten minutes, then clear the paper path.
EOF
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix missing (make node-deps)"

it_jwt_config
echo "PARLEY_PHOENIX_WINDOW=2" >>"$IT_APP_CONFIG"
echo "PARLEY_ALLOWED_ORIGINS=https://app.example" >>"$IT_APP_CONFIG"   # OPTIONS test
IT_NO_WS=1
TAP_N=0 TAP_FAILED=0
# lp_requests PORT: long-poll requests the bridge on PORT answered (its /metrics).
lp_requests() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk '/^parley_ws_longpoll_requests_total/ { n += $2 } END { print n + 0 }'
}
# lp_suite SETUP [BRIDGE_PORT] — phoenix-lp.mjs against $BASE; with the
# bridge, then the check that it answered the LongPoll requests
lp_suite() {
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_FAKE_URL=$FAKE_LLM_URL \
        it_node_tap "$1: " tests/integration/phoenix-lp.mjs
    [ -n "${2:-}" ] || return 0
    n=$(lp_requests "$2")
    TAP_N=$((TAP_N + 1))
    if [ "${n:-0}" -ge 20 ]; then
        echo "ok $TAP_N - fcgid_bridge: the bridge answered the LongPoll requests ($n)"
    else
        echo "not ok $TAP_N - fcgid_bridge: the bridge answered ${n:-0} LongPoll requests"
        TAP_FAILED=$((TAP_FAILED + 1))
    fi
}
STOPS="" BRIDGE_PID=""
for setup in lighttpd proxy_fcgi fcgid fcgid_bridge; do
    IT_DB=$IT_TMP/data/$setup.db
    mkdir -p "$IT_TMP/data"
    PARLEY_DB=$IT_DB "$CLI" kb import "$ART" >"$IT_TMP/kb-$setup.out" 2>&1 ||
        it_die "parley kb import failed: $(cat "$IT_TMP/kb-$setup.out")"
    it_own "$IT_TMP/data"
    own_fake_llm
    bport=""
    if [ "$setup" = fcgid_bridge ]; then
        # mod_fcgid with the bridge running and parley-websocket.conf:
        # Apache sends /socket/longpoll to the bridge (its marker file);
        # IT_NODE keeps its directories apart from the fcgid setup's
        IT_NODE=bridge
        start_bridge || it_die "parley-ws did not start"
        BRIDGE_PID=$IT_LAST_PID bport=$BRIDGE_PORT
        WS_PORT=$BRIDGE_PORT
        IT_NO_WS=""
        start_fcgid "$APP"
        IT_NO_WS=1 IT_NODE=""
    else
        "start_$setup" "$APP"
    fi
    it_log "$setup: $BASE, simulated LLM $FAKE_LLM_URL"
    it_par "$setup" lp_suite "$setup" "$bport"
    STOPS="$STOPS $SETUP_DIR|$(echo $SETUP_PIDS | tr ' ' ,)"
done
it_par_wait
[ -z "$BRIDGE_PID" ] || it_stop "$BRIDGE_PID"
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
    echo "ok $TAP_N - no sanitizer report in any server or app log"
fi
it_done
