#!/bin/sh
# t0860-admin.sh — the admin page and its endpoints (docs/admin.md, issue 12
# item 2) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf) and Apache + mod_fcgid
# (parley-fcgid.conf, parley-websocket.conf), each with parley.fcgi and the
# WebSocket bridge on one SQLite database, JWT required.
#
# tests/integration/admin.mjs runs through each server: 401/403 refusals of
# every /api/admin/ endpoint, the overview's shape, a running generation
# seen and stopped by job id (the simulated LLM's request log as witness),
# WebSocket, long-poll, Phoenix socket and SSE clients counted in the open
# connections and gone from them once closed.
# tests/integration/admin-browser.mjs (lighttpd setup) opens www/admin.html
# in headless Chromium (Debian's, through playwright-core) with an admin
# token: the live generation shows, its model text (with markup) is text,
# the page's Stop button stops it, no CSP violation.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise); the
# browser part skips without chromium or playwright-core.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - the admin page through the web servers # SKIP $BUILD/$_b is not built"
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
# the pages, readable by the servers' account
cp -R www/. "$IT_TMP/www/"
it_own "$IT_TMP/www"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

# run_node NAME FILE ENV... — a node --test file through $BASE; each of its
# results is one of ours.
run_node() {
    _name=$1 _file=$2
    shift 2
    _out=$SETUP_DIR/logs/$(basename "$_file" .mjs).tap
    _rc=0
    env BASE="$BASE" SECRET="$SECRET" RUN="$_name-$$" FAKE_LLM_URL="$FAKE_LLM_URL" "$@" \
        timeout 240 node --test --test-reporter=tap --test-concurrency=1 "$_file" >"$_out" 2>&1 || _rc=$?
    _n=0
    while IFS= read -r _line; do
        case $_line in
        "ok "*|"not ok "*)
            _n=$((_n + 1))
            _t=$(printf '%s' "$_line" | sed -E 's/^(not )?ok [0-9]+ - //')
            TAP_N=$((TAP_N + 1))
            case $_line in
            "not ok "*) echo "not ok $TAP_N - $_name: $_t"; TAP_FAILED=$((TAP_FAILED + 1)) ;;
            *) echo "ok $TAP_N - $_name: $_t" ;;
            esac ;;
        esac
    done <"$_out"
    if [ "$_n" -eq 0 ] || [ "$_rc" -ne 0 ]; then
        grep -E '^ *(not ok|(error|expected|actual|message|location):)' "$_out" | head -n 60 | sed 's/^/#   /'
        [ "$_n" -eq 0 ] && { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); \
            echo "not ok $TAP_N - $_name: $(basename "$_file") ran no test (exit $_rc)"; tail -n 20 "$_out" | sed 's/^/#   /'; }
        tail -n 20 "$BRIDGE_DIR/parley-ws.log" | sed 's/^/#   parley-ws: /'
        for _f in "$SETUP_DIR"/logs/*.log; do [ -f "$_f" ] && tail -n 10 "$_f" | sed "s|^|#   $(basename "$_f"): |"; done
    fi
}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
start_lighttpd "$BUILD/parley.fcgi"
run_node lighttpd tests/integration/admin.mjs
if [ -x "$CHROMIUM" ] && [ -f node_modules/playwright-core/package.json ]; then
    run_node lighttpd-browser tests/integration/admin-browser.mjs PARLEY_BASE="$BASE" \
        PARLEY_JWT_SECRET="$SECRET" PARLEY_SETUP=lighttpd PARLEY_WS=1 CHROMIUM="$CHROMIUM" \
        PARLEY_SHOTS="$PWD/$BUILD/browser"
else
    TAP_N=$((TAP_N + 1))
    echo "ok $TAP_N - the admin page in Chromium # SKIP no $CHROMIUM or node_modules/playwright-core"
fi
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run_node apache tests/integration/admin.mjs
stop_setup

# With a sanitizer build (SANITIZE=address,undefined): no report in any log
# of the bridge or of either setup's parley.fcgi.
no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
