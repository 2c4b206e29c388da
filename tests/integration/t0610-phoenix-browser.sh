#!/bin/sh
# t0610-phoenix-browser.sh — seed 003 (NeuralBridge, Phoenix Channels) in
# headless Chromium with the official phoenix.js (node_modules/phoenix, the
# version package.json pins, copied to the served www/vendor/ as `make run`
# does): the demo page www/neuralbridge.html and the seed's own page
# www/seed003.html, through real web servers configured with the shipped
# apache-conf/ snippets. tests/browser/phoenix.test.mjs, three setups:
#   lighttpd    lighttpd + mod_fastcgi, open mode, NO bridge (lighttpd
#               answers the upgrade with 503): LongPoll, and the WebSocket →
#               LongPoll fallback.
#   fcgid       Apache + mod_fcgid + the bridge, open mode: what `make run`
#               serves. Both transports when the bridge speaks Phoenix at
#               /socket/websocket (probed; else the WebSocket tests skip,
#               saying so), the seed's page on both.
#   fcgid-jwt   the same with a JWT secret: the page's token as auth_token
#               (the seed's page, which sends no token, is not run here).
#   fcgid-nows  Apache + mod_fcgid WITHOUT parley-websocket.conf, no bridge:
#               the fallback test only (the server does not proxy WebSocket).
# The fcgid setup also runs the long run (lighttpd with the same bridge
# started next to Apache: 60 s of heartbeats on both servers and both
# transports, leave/rejoin, two topics, while the other tests run) and the
# stream-cut tests (PHX_GROUPS; docs/browser-client.md "Tests").
# Screenshots: $BUILD/browser/{neuralbridge,seed003}-<transport>-<setup>.png.
# Needs chromium (Debian's), node_modules (npm ci). BROWSER_SETUPS="lighttpd"
# runs one setup. TAP; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
it_init
it_fake_llm

PARLEY_APP=$BUILD/parley.fcgi
BRIDGE_APP=$BUILD/parley-ws
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PHX_JS=node_modules/phoenix/priv/static/phoenix.js
[ -x "$PARLEY_APP" ] || it_die "$PARLEY_APP is not built (make)"
[ -x "$CHROMIUM" ] || it_die "$CHROMIUM is missing: apt-get install chromium (Debian's package; no browser is downloaded)"
[ -f node_modules/playwright-core/package.json ] || it_die "node_modules/playwright-core is missing: npm ci"
[ -f "$PHX_JS" ] || it_die "$PHX_JS is missing: npm ci"

# The pages, and phoenix.js where tools/run.sh puts it, readable by the
# servers' account.
cp -R www/. "$IT_TMP/www/"
mkdir -p "$IT_TMP/www/vendor"
cp "$PHX_JS" "$IT_TMP/www/vendor/phoenix.js"
# The test harness page (phoenix.js and nothing else) at /_test/.
mkdir -p "$IT_TMP/www/_test"
cp tests/browser/fixtures/phoenix-harness.html tests/browser/fixtures/phoenix-harness.js "$IT_TMP/www/_test/"
it_own "$IT_TMP/www"
SHOTS=$PWD/$BUILD/browser
mkdir -p "$SHOTS"

# write_config FILE SECRET
write_config() {
    {
        echo "RATE_LIMIT_MESSAGES_PER_MINUTE=100000"
        [ -n "$2" ] && echo "PARLEY_JWT_SECRET=$2"
    } >"$1"
    chmod 600 "$1"
    it_own "$1"
}

# run_browser NAME WS(0/1) SECRET — node's TAP becomes lines of ours.
run_browser() {
    _out=$SETUP_DIR/browser.tap
    _rc=0
    PARLEY_BASE=$BASE PARLEY_SETUP=$1 PARLEY_WS=$2 PARLEY_JWT_SECRET=$3 PARLEY_SHOTS=$SHOTS \
        FAKE_LLM_URL=$FAKE_LLM_URL CHROMIUM=$CHROMIUM PHX_GROUPS=$GROUPS PARLEY_BASE_LIGHTTPD=$LIGHTTPD_BASE \
        timeout 300 node --test --test-reporter=tap --test-concurrency=1 \
        tests/browser/phoenix.test.mjs >"$_out" 2>&1 || _rc=$?
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
        for _f in "$SETUP_DIR"/logs/* "$IT_TMP/bridge/parley-ws.log"; do
            [ -s "$_f" ] && tail -n 15 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    return 0
}

# apache_with_bridge NAME SECRET [lighttpd] — Apache + mod_fcgid, and the
# bridge behind parley-websocket.conf when it is built and starts; with
# "lighttpd", lighttpd with the same bridge behind it too, for the long run
# (LIGHTTPD_BASE); stopped afterwards.
apache_with_bridge() {
    IT_APP_CONFIG=$IT_TMP/$1.env
    write_config "$IT_APP_CONFIG" "$2"
    ws=0 bpid=""
    IT_NO_WS=1
    WS_PORT=$(free_port)
    if [ -x "$BRIDGE_APP" ]; then
        if start_bridge; then ws=1; IT_NO_WS=""; WS_PORT=$BRIDGE_PORT; bpid=$IT_LAST_PID
        else it_log "parley-ws did not start: WebSocket not tested through Apache"; fi
    else
        it_log "$BRIDGE_APP is not built: WebSocket not tested through Apache"
    fi
    lpids="" ldir=""
    if [ "${3:-}" = lighttpd ] && [ $ws = 1 ]; then
        start_lighttpd "$PARLEY_APP"
        LIGHTTPD_BASE=$BASE lpids=$SETUP_PIDS ldir=$SETUP_DIR
        it_log "lighttpd at $BASE, the same bridge behind it (long run, drop)"
    fi
    start_fcgid "$PARLEY_APP"
    it_log "Apache + mod_fcgid at $BASE, $([ -n "$2" ] && echo "JWT required" || echo "open mode"), bridge: $([ $ws = 1 ] && echo "parley-ws on $WS_PORT" || echo none)"
    run_browser "$1" "$ws" "$2"
    stop_setup
    if [ -n "$lpids" ]; then SETUP_PIDS=$lpids SETUP_DIR=$ldir; stop_setup; fi
    LIGHTTPD_BASE=""
    [ -n "$bpid" ] && it_stop "$bpid"
    IT_NO_WS=""
}

LIGHTTPD_BASE=""
for setup in ${BROWSER_SETUPS:-lighttpd fcgid fcgid-jwt fcgid-nows}; do
    GROUPS=pages
    case $setup in
    lighttpd)
        IT_APP_CONFIG=$IT_TMP/lighttpd.env
        write_config "$IT_APP_CONFIG" ""
        WS_PORT=$(free_port)          # nothing listens there: upgrades get 503
        start_lighttpd "$PARLEY_APP"
        it_log "lighttpd at $BASE, open mode, no WebSocket bridge"
        run_browser lighttpd 0 ""
        stop_setup
        ;;
    fcgid) GROUPS=${PHX_GROUPS:-pages,long,drop}; apache_with_bridge fcgid "" lighttpd ;;
    fcgid-jwt) apache_with_bridge fcgid-jwt "phx-browser-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" ;;
    fcgid-nows)
        # Apache that does not proxy WebSocket at all (no
        # parley-websocket.conf, no bridge): the fallback lands on LongPoll.
        IT_APP_CONFIG=$IT_TMP/nows.env
        write_config "$IT_APP_CONFIG" ""
        IT_NO_WS=1 WS_PORT=$(free_port)
        start_fcgid "$PARLEY_APP"
        IT_NO_WS=""
        it_log "Apache + mod_fcgid at $BASE without parley-websocket.conf (no WebSocket proxying), open mode"
        GROUPS=fallback
        run_browser fcgid-nows 0 ""
        stop_setup
        ;;
    *) it_die "unknown setup '$setup' in BROWSER_SETUPS (lighttpd, fcgid, fcgid-jwt, fcgid-nows)" ;;
    esac
done

it_done
