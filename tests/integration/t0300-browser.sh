#!/bin/sh
# t0300-browser.sh — the demo pages (www/) and the browser client
# (www/parley.js) in headless Chromium, against real web servers configured
# with the shipped apache-conf/ snippets and build/parley.fcgi.
#
# Two setups, each running tests/browser/*.test.mjs (node:test, TAP):
#   lighttpd    lighttpd + mod_fastcgi, open mode (no JWT secret), NO
#               WebSocket bridge: lighttpd answers the upgrade with 503, so
#               'auto' must fall back to long-poll.
#   fcgid       Apache + mod_fcgid, a JWT secret (the pages send a token),
#               and the bridge build/parley-ws (lib.sh start_bridge) behind
#               parley-websocket.conf when it is built: pages are then tested
#               over WebSocket too.
# The two setups run at once, each with its own database and simulated LLM
# (pages.test.mjs sets the simulated LLM's global knobs for its screenshot).
# Each test file launches Debian's chromium (/usr/bin/chromium, never a
# downloaded browser) through playwright-core with a fresh profile. The
# chat page's screenshot goes to $BUILD/browser/chat-<setup>.png.
#
# Needs: chromium (apt-get install chromium), node_modules/playwright-core
# (npm ci). TAP output, one line per browser test, renumbered; exit status
# 0 only if everything passed. BROWSER_SETUPS="lighttpd" runs one setup.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
it_init

PARLEY_APP=$BUILD/parley.fcgi
BRIDGE_APP=$BUILD/parley-ws
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$PARLEY_APP" ] || it_die "$PARLEY_APP is not built (make)"
[ -x "$CHROMIUM" ] || it_die "$CHROMIUM is missing: apt-get install chromium (Debian's package; no browser is downloaded)"
[ -f node_modules/playwright-core/package.json ] || it_die "node_modules/playwright-core is missing: npm ci"

# The pages, readable by the servers' account.
cp -R www/. "$IT_TMP/www/"
it_own "$IT_TMP/www"
SHOTS=$PWD/$BUILD/browser
mkdir -p "$SHOTS"

# Settings for the app (and the bridge): a generous rate limit, since all
# the tests come from one address and one user within a minute.
# write_config FILE SECRET
write_config() {
    {
        echo "RATE_LIMIT_MESSAGES_PER_MINUTE=100000"
        [ -n "$2" ] && echo "PARLEY_JWT_SECRET=$2"
    } >"$1"
    chmod 600 "$1"
    it_own "$1"
}

# run_browser NAME WS(0/1) SECRET — runs the browser tests against $BASE and
# turns node's TAP into lines of this file's TAP stream.
run_browser() {
    _out=$SETUP_DIR/browser.tap
    _rc=0
    PARLEY_BASE=$BASE PARLEY_SETUP=$1 PARLEY_WS=$2 PARLEY_JWT_SECRET=$3 PARLEY_SHOTS=$SHOTS \
        FAKE_LLM_URL=$FAKE_LLM_URL CHROMIUM=$CHROMIUM \
        timeout 300 node --test --test-reporter=tap --test-concurrency=1 \
        tests/browser/pages.test.mjs tests/browser/client.test.mjs >"$_out" 2>&1 || _rc=$?
    _before=$TAP_FAILED _n0=$TAP_N
    while IFS= read -r _line; do
        case $_line in
        "ok "[0-9]*)
            TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - ${_line#ok * - }" ;;
        "not ok "[0-9]*)
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - ${_line#not ok * - }" ;;
        "1.."* | "TAP version"*) ;;
        *) echo "# $_line" ;;
        esac
    done <"$_out"
    if [ "$_rc" -ne 0 ] && [ "$TAP_FAILED" -eq "$_before" ]; then
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - $1: node --test exited with status $_rc"
    fi
    if [ "$TAP_N" -eq "$_n0" ]; then
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - $1: no browser test ran"
    fi
    if [ "$TAP_FAILED" -ne "$_before" ]; then
        for _f in "$SETUP_DIR"/logs/* "${BRIDGE_DIR:-$IT_TMP/bridge}/parley-ws.log"; do
            [ -s "$_f" ] && tail -n 15 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    return 0
}

# own_fake_llm TAG — a simulated LLM of the setup's own (FAKE_LLM_URL):
# pages.test.mjs resets the knobs and sets global ones (its screenshot's
# fixed answer) while the other setup's tests run.
own_fake_llm() {
    _pf=$IT_TMP/fake-llm-$1.port
    it_bg "$IT_TMP/fake-llm-$1.log" node tests/fake-llm/server.mjs --port 0 --port-file "$_pf"
    SETUP_PIDS=""
    _i=0
    while [ ! -s "$_pf" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
    [ -s "$_pf" ] || it_die "the simulated LLM did not start: $(cat "$IT_TMP/fake-llm-$1.log")"
    FAKE_LLM_URL="http://127.0.0.1:$(cat "$_pf")"
}

# Both setups run at once (lib-par.sh), each with its own directories
# (IT_NODE), database and simulated LLM.
. tests/integration/lib-par.sh
STOPS="" BPID=""
for setup in ${BROWSER_SETUPS:-lighttpd fcgid}; do
    IT_NODE=$setup IT_DB=$IT_TMP/data/$setup.db
    BRIDGE_DIR=""
    own_fake_llm "$setup"
    case $setup in
    lighttpd)
        IT_APP_CONFIG=$IT_TMP/browser-open.env
        write_config "$IT_APP_CONFIG" ""
        WS_PORT=$(free_port)          # nothing listens there: upgrades get 503
        start_lighttpd "$PARLEY_APP"
        it_log "lighttpd at $BASE, open mode, no WebSocket bridge"
        it_par lighttpd run_browser lighttpd 0 ""
        ;;
    fcgid)
        SECRET=browser-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
        IT_APP_CONFIG=$IT_TMP/browser-jwt.env
        write_config "$IT_APP_CONFIG" "$SECRET"
        ws=0
        IT_NO_WS=1
        WS_PORT=$(free_port)
        if [ -x "$BRIDGE_APP" ]; then
            # lib.sh's bridge, with this setup's secret (IT_APP_CONFIG).
            if start_bridge; then ws=1; IT_NO_WS=""; WS_PORT=$BRIDGE_PORT; BPID=$BRIDGE_PID
            else it_log "parley-ws did not start: WebSocket not tested through Apache"; fi
        else
            it_log "$BRIDGE_APP is not built: WebSocket not tested through Apache"
        fi
        start_fcgid "$PARLEY_APP"
        it_log "Apache + mod_fcgid at $BASE, JWT required, bridge: $([ $ws = 1 ] && echo "parley-ws on $WS_PORT" || echo none)"
        it_par fcgid run_browser fcgid "$ws" "$SECRET"
        IT_NO_WS=""
        ;;
    *) it_die "unknown setup '$setup' in BROWSER_SETUPS (lighttpd, fcgid)" ;;
    esac
    STOPS="$STOPS $SETUP_DIR|$(echo $SETUP_PIDS | tr ' ' ,)"
    IT_NODE=""
done
it_par_wait
for _s in $STOPS; do
    SETUP_DIR=${_s%%|*} SETUP_PIDS=$(echo "${_s#*|}" | tr , ' ')
    stop_setup
done
[ -z "$BPID" ] || it_stop "$BPID"

it_done
