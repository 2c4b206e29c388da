#!/bin/sh
# t0200-ws.sh — the WebSocket bridge behind real web servers, configured
# with the shipped snippets: Apache (apache-conf/parley-websocket.conf,
# ProxyPass ... upgrade=websocket, with parley-fcgid.conf) and lighttpd
# (apache-conf/lighttpd-parley.conf, mod_proxy with the upgrade header).
#
# Through each server, the seed 000/001/002 client logic of
# tests/node/ws-bridge.test.mjs runs in its external mode (WS_BRIDGE_URL =
# the server), and so do its cross-transport tests (WS_POLL_URL = the same
# server, whose /api/poll/* is parley.fcgi): a WebSocket client and a
# long-poll client on one ticket get identical text from one upstream call,
# whichever starts the generation. One bridge and one database serve both
# setups, as on a real host.
#
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - WebSocket through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL

# Settings every program reads (the bridge and parley.fcgi): no rate limit,
# since every test client comes from 127.0.0.1.
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=0
EOF
it_own "$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT               # what the snippets proxy WebSocket paths to

# run_clients NAME — the Node suite in external mode through $BASE; each
# of its TAP results becomes one of ours.
run_clients() {
    _out=$SETUP_DIR/logs/node-clients.tap
    _rc=0                          # (set -e: a failing suite must be reported, not end us)
    WS_BRIDGE_URL="ws://127.0.0.1:${BASE##*:}" WS_POLL_URL="$BASE" \
        node --test --test-reporter=tap tests/node/ws-bridge.test.mjs >"$_out" 2>&1 || _rc=$?
    # leaf test results only (indented "ok N - name" lines of each suite)
    _n=0
    while IFS= read -r _line; do
        case $_line in
        "    ok "*|"    not ok "*)
            _n=$((_n + 1))
            _t=$(printf '%s' "$_line" | sed -E 's/^ *(not )?ok [0-9]+ - //')
            TAP_N=$((TAP_N + 1))
            case $_line in
            "    not ok "*)
                echo "not ok $TAP_N - $1: $_t"
                TAP_FAILED=$((TAP_FAILED + 1)) ;;
            *) echo "ok $TAP_N - $1: $_t" ;;
            esac ;;
        esac
    done <"$_out"
    if [ "$_n" -eq 0 ] || [ "$_rc" -ne 0 ]; then
        grep -E '^ *(not ok|#|  ---|    (error|expected|actual|message))' "$_out" | head -n 60 | sed 's/^/#   /'
        [ "$_n" -eq 0 ] && { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); \
            echo "not ok $TAP_N - $1: the client suite ran no test (exit $_rc)"; }
        tail -n 20 "$IT_TMP/bridge/parley-ws.log" | sed 's/^/#   parley-ws: /'
    fi
}

# 101 through the proxy, and the bridge's close codes pass through it.
check_close_codes() {
    node --input-type=module -e '
        import WebSocket from "ws";
        const base = process.argv[1];
        const ws = new WebSocket(`${base}/ws/chat/no-such-brand`);
        const t = setTimeout(() => { console.log("no close"); process.exit(1); }, 5000);
        ws.on("close", (code) => { clearTimeout(t);
            if (code !== 1008) { console.log(`close ${code}, expected 1008`); process.exit(1); } });
    ' "ws://127.0.0.1:${BASE##*:}"
}

start_fcgid "$BUILD/parley.fcgi"
ok "apache: the bridge's close code passes the proxy" check_close_codes
run_clients apache
stop_setup

start_lighttpd "$BUILD/parley.fcgi"
ok "lighttpd: the bridge's close code passes the proxy" check_close_codes
run_clients lighttpd
stop_setup

it_done
