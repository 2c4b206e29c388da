#!/bin/sh
# t0410-valgrind-bridge.sh — parley-ws, the long-running WebSocket bridge,
# under valgrind (memcheck) for a session of WebSocket clients of every
# protocol it serves, behind lighttpd configured with the shipped
# apache-conf/lighttpd-parley.conf and started from the shipped
# parley-ws.service, then SIGTERM: no error, no definitely or indirectly
# lost byte, a clean exit (valgrind writes its summary at exit only).
#
# The clients, concurrently:
#   - tests/node/ws-bridge.test.mjs in its external mode (as t0200 runs it):
#     seed 000 tickets (streams, cache, shared generation, reconnect with
#     ?after=, an upstream error mid-stream, bad JSON, a client vanishing,
#     oversize and binary frames), seed 001 chat sessions (streams, ping,
#     "stream": false), seed 002 brand chats (products, an unknown brand),
#     and its cross-transport tests (long-poll through parley.fcgi and
#     WebSocket on one ticket or session);
#   - tests/integration/phoenix-ws.mjs: seed 003 with the official phoenix
#     client over /socket/websocket (joins, pushes, refusals, a leave).
# Connections still open at the stop are closed 1001 by the bridge.
#
# valgrind and the sanitizers do not mix: like t0400 (parley.fcgi under
# valgrind) this builds a plain parley-ws in $BUILD-vg. parley.fcgi, spawned
# by lighttpd, is $BUILD's (sanitized in CI: lib.sh scans its reports).
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - parley-ws under valgrind # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
if ! command -v valgrind >/dev/null 2>&1; then
    echo "ok 1 - parley-ws under valgrind # SKIP valgrind is not installed"
    echo "1..1"
    exit 0
fi
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix missing (make node-deps)"

it_init
it_fake_llm
export FAKE_LLM_URL

VG_BUILD=${BUILD}-vg
if ! make -s BUILD="$VG_BUILD" SANITIZE= "$VG_BUILD/parley-ws" >"$IT_TMP/make.log" 2>&1; then
    sed 's/^/# /' "$IT_TMP/make.log"
    it_die "could not build $VG_BUILD/parley-ws"
fi
mkdir -p "$IT_TMP/vgbin" "$IT_TMP/vglogs"
cp "$VG_BUILD/parley-ws" "$IT_TMP/vgbin/parley-ws.real"
VG_LOG=$IT_TMP/vglogs
# What the service's ExecStart runs (start_bridge copies $BUILD/parley-ws):
# valgrind around the plain program. exec keeps the pid, so the SIGTERM
# reaches valgrind, which passes it on.
cat >"$IT_TMP/vgbin/parley-ws" <<EOF
#!/bin/sh
exec valgrind --leak-check=full --show-leak-kinds=definite,indirect \\
    --errors-for-leak-kinds=definite,indirect --num-callers=30 \\
    --log-file=$VG_LOG/parley-ws.%p.log "$IT_TMP/vgbin/parley-ws.real" "\$@"
EOF
chmod 755 "$IT_TMP/vgbin/parley-ws"
it_own "$IT_TMP/vgbin" "$VG_LOG"

# Open mode (no JWT), no rate limit (every client is 127.0.0.1), a Phoenix
# window of 2 (phoenix-ws.mjs checks it), 5 ms coalescing.
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_PHOENIX_WINDOW=2
EOF
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

_build=$BUILD
BUILD=$IT_TMP/vgbin
IT_WAIT_PORT=600 start_bridge || { BUILD=$_build; it_die "parley-ws did not start under valgrind"; }
BUILD=$_build
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "lighttpd $BASE, parley-ws under valgrind on $BRIDGE_PORT (pid $BRIDGE_PID)"

# First the seed suites and the Phoenix suite at once, then the
# cross-transport tests alone (they count the simulated LLM's requests:
# another suite's generations would be counted too). Each node --test's TAP
# goes to a file; their top-level results become ours (as in it_node_tap).
WS_TAP=$IT_TMP/ws-bridge.tap
PHX_TAP=$IT_TMP/phoenix-ws.tap
X_TAP=$IT_TMP/cross-transport.tap
WS_BRIDGE_URL="ws://127.0.0.1:${BASE##*:}" \
    timeout 300 node --test --test-reporter=tap tests/node/ws-bridge.test.mjs >"$WS_TAP" 2>&1 &
ws_job=$!
PARLEY_BASE=$BASE PHX_PART=ws PARLEY_DB=${IT_DB:-$IT_TMP/data/parley.db} AS_APP=$AS_APP \
    timeout 300 node --test --test-reporter=tap tests/integration/phoenix-ws.mjs >"$PHX_TAP" 2>&1 &
phx_job=$!
ws_rc=0 phx_rc=0 x_rc=0
wait "$ws_job" || ws_rc=$?
wait "$phx_job" || phx_rc=$?
WS_BRIDGE_URL="ws://127.0.0.1:${BASE##*:}" WS_POLL_URL="$BASE" \
    timeout 300 node --test --test-reporter=tap --test-name-pattern='^cross-transport' \
    tests/node/ws-bridge.test.mjs >"$X_TAP" 2>&1 || x_rc=$?

# tap_results PREFIX FILE RC [NAME] — FILE's top-level results (only NAME's,
# a prefix, when given) as ours; a file with none, or a non-zero exit
# without a failed result, fails once.
tap_results() {
    _n=0 _bad=0
    while IFS= read -r _line; do
        case $_line in
        "ok "*|"not ok "*)
            _t=$(printf '%s' "$_line" | sed -E 's/^(not )?ok [0-9]+ - //')
            case $_t in "${4:-}"*) ;; *) continue ;; esac
            _n=$((_n + 1)); TAP_N=$((TAP_N + 1))
            case $_line in
            "not ok "*) _bad=$((_bad + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $1$_t" ;;
            *) echo "ok $TAP_N - $1$_t" ;;
            esac ;;
        esac
    done <"$2"
    if [ "$3" -ne 0 ] || [ "$_n" -eq 0 ]; then
        grep -E '^ *(not ok|error:|expected:|actual:)' "$2" | head -n 40 | sed 's/^/#   /'
        if [ "$_bad" -eq 0 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $1$(basename "$2" .tap) exited $3 with $_n results"
        fi
        tail -n 10 "$BRIDGE_DIR/parley-ws.log" | sed 's/^/#   parley-ws: /'
    fi
}
tap_results "seeds 000/001/002 through lighttpd: " "$WS_TAP" "$ws_rc"
tap_results "Phoenix (seed 003) through lighttpd: " "$PHX_TAP" "$phx_rc"
tap_results "WebSocket and long-poll on one ticket or session: " "$X_TAP" "$x_rc" cross-transport

stop_setup
# SIGTERM; the exit and the leak check run at valgrind's pace: 60 s at most.
IT_STOP_GRACE=1200 it_stop "$BRIDGE_PID"

# vg_clean — one valgrind log, with its summary (written at exit only: a
# bridge that had to be killed has none), 0 errors (the leak kinds above
# count as errors), and the bridge's own "stopped" line.
vg_clean() {
    _logs=$(ls "$VG_LOG"/parley-ws.*.log 2>/dev/null)
    [ -n "$_logs" ] || { echo "valgrind wrote no log (did parley-ws run under it?)"; return 1; }
    _rc=0
    for _f in $_logs; do
        if grep -q 'ERROR SUMMARY: 0 errors' "$_f"; then
            grep -h -E 'definitely lost|indirectly lost|in use at exit|ERROR SUMMARY' "$_f"
        else
            echo "$(basename "$_f"): errors or leaks, or no summary (the bridge did not exit by itself)"
            grep -v '^==[0-9]*== *$' "$_f" | head -n 100
            _rc=1
        fi
    done
    tail -n 3 "$BRIDGE_DIR/parley-ws.log"
    grep -q 'parley-ws\[[0-9]*\]: stopped$' "$BRIDGE_DIR/parley-ws.log" || { echo "no 'stopped' line"; _rc=1; }
    return $_rc
}
ok "parley-ws under valgrind after the session: no error, nothing definitely or indirectly lost, a clean exit on SIGTERM" vg_clean

it_done
