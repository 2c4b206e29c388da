#!/bin/sh
# gens-bench.sh — many generations started at once (a help desk opening N
# tickets together, one viewer each): how long each viewer waits for its
# first token BEYOND the upstream's own first-token time, over WebSocket
# (the bridge) and over long-poll on lighttpd, Apache + mod_proxy_fcgi and
# Apache + mod_fcgid. Prints Markdown for docs/PERFORMANCE.md.
#
#   bench/gens-bench.sh                     (BUILD=build-x for another build dir)
#   N=500                                   generations per setup
#   TOKENS=100 TOKEN_MS=50 FIRST_MS=200     each answer (the simulated LLM's
#                                           directives): 100 tokens at 20/s,
#                                           the first one 200 ms after the request
#   SETUPS="bridge lighttpd proxy_fcgi fcgid fcgid_bridge floor"
#                                           floor: bench/longpoll-floor.mjs, the same
#                                           long-poll exchange with Parley's part removed
#                                           (in-memory Node server, timers for tokens)
#                                           fcgid_bridge: mod_fcgid as shipped with
#                                           parley-websocket.conf and the bridge
#                                           running, which then answers long-poll
#                                           (docs/ws-bridge.md, Long-poll)
#   THREADS=                                parley.fcgi --threads (lighttpd,
#                                           mod_proxy_fcgi); default: as shipped
#                                           (16 in lighttpd-parley.conf, 32 in
#                                           parley-fcgi.service): a waiting poll
#                                           is parked and holds no thread.
#                                           Apache gets 2N+64 workers (each
#                                           waiting request holds one of its own),
#                                           all in one child process: the event
#                                           MPM closes the kept connections of a
#                                           child whose threads are all busy
#
# The client is tests/integration/concurrent.mjs (the checks of
# t0500-concurrent.sh: every token and done to every viewer, all started
# before any ended; requests repeated on 503 or a reset as www/parley.js
# does); the servers are the integration harness's, with the
# SHIPPED apache-conf/ snippets (parley.fcgi's thread counts too, unless
# THREADS is set) except for Apache's MaxRequestWorkers (mod_fcgid as
# shipped: FcgidMaxProcessesPerClass 64). One row per setup.
# Bounded: every run is under timeout(1).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
N=${N:-500}
TOKENS=${TOKENS:-100}
TOKEN_MS=${TOKEN_MS:-50}
FIRST_MS=${FIRST_MS:-200}
SETUPS=${SETUPS:-"bridge lighttpd proxy_fcgi fcgid fcgid_bridge floor"}
THREADS=${THREADS:-}
DEADLINE=$((FIRST_MS / 1000 + TOKENS * TOKEN_MS / 1000 + 120))

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/gens-bench.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
. bench/http-lib.sh
bench_deps apache2 lighttpd libapache2-mod-fcgid || exit 1
it_init
it_fake_llm
IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"      # N tickets from one client address
    echo "WEBSOCKET_MAX_CONNECTIONS=$((N + 100))"
    echo "PARLEY_COALESCE_MS=5"
} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG
IT_NO_WS=1
BENCH_APP_THREADS=$THREADS
BENCH_APACHE_WORKERS=$((2 * N + 64))
BENCH_APACHE_ONE_CHILD=1     # else children of 64 fill up and close kept connections
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

bench_machine "Generations at once (\`bench/gens-bench.sh\`)" "node $(node --version)" \
    "N=$N TOKENS=$TOKENS TOKEN_MS=$TOKEN_MS FIRST_MS=$FIRST_MS SETUPS=\"$SETUPS\"${THREADS:+ THREADS=$THREADS} bench/gens-bench.sh"
echo "$N ticket answers started at once, one viewer each; each answer $TOKENS tokens every $TOKEN_MS ms,"
echo "the first $FIRST_MS ms after the request (the upstream's own first-token time, subtracted below)."
echo "First token = from the viewer sending its ticket body to its first \`stream\` frame, minus $FIRST_MS ms."
echo "Long-poll viewers open their session and start polling (wait=25) before sending, as www/parley.js does;"
echo "parley.fcgi --threads ${THREADS:-as shipped (16 lighttpd, 32 mod_proxy_fcgi)}, Apache MaxRequestWorkers $BENCH_APACHE_WORKERS in one child, mod_fcgid as shipped."
echo
echo "| setup | transport | generations | complete | failed | started after another ended | first token p50 (ms) | p99 (ms) | max (ms) | requests repeated (by cause) | wall time (s) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

rc=0
row() { # setup transport json-file seconds
    node -e '
      const fs = require("fs");
      const [setup, tr, file, secs] = process.argv.slice(1);
      let j = null;
      for (const l of fs.readFileSync(file, "utf8").split("\n")) { try { j = JSON.parse(l); } catch {} }
      if (!j) { console.log(`| ${setup} | ${tr} | | | | | | | | | ${secs} (no result) |`); process.exit(0); }
      const f = j.first_token_beyond_upstream_ms;
      console.log(`| ${setup} | ${tr} | ${j.n} | ${j.complete} | ${j.failed} | ${j.late_starts} | ${f.p50 ?? "-"} | ${f.p99 ?? "-"} | ${f.max ?? "-"} | ${j.retried_requests ?? "-"}${j.retried_requests ? ` (${Object.entries(j.retried_by_cause || {}).map(([k, n]) => `${k}: ${n}`).join(", ")})` : ""} | ${secs} |`);
    ' "$@"
}
DETAILS=$IT_TMP/details
: >"$DETAILS"
for setup in $SETUPS; do
    out=$IT_TMP/$setup.out
    t0=$(date +%s)
    case $setup in
    bridge)
        if start_bridge; then
            timeout $((DEADLINE + 60)) node tests/integration/concurrent.mjs --transport ws \
                --base "http://127.0.0.1:$BRIDGE_PORT" --n "$N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
                --first-ms "$FIRST_MS" --deadline "$DEADLINE" --json >"$out" 2>&1 || rc=1
        else
            echo "bridge did not start" >"$out"; rc=1
        fi
        row bridge WebSocket "$out" $(( $(date +%s) - t0 ))
        it_stop "$IT_LAST_PID" 2>/dev/null || true ;;
    lighttpd|proxy_fcgi|fcgid)
        IT_DB=$IT_TMP/data/$setup.db
        "start_$setup" "$BUILD/parley.fcgi"
        timeout $((DEADLINE + 60)) node tests/integration/concurrent.mjs --transport poll \
            --base "$BASE" --n "$N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
            --first-ms "$FIRST_MS" --deadline "$DEADLINE" --json >"$out" 2>&1 || rc=1
        row "$setup" long-poll "$out" $(( $(date +%s) - t0 ))
        stop_setup ;;
    fcgid_bridge)
        IT_DB=$IT_TMP/data/$setup.db
        if start_bridge; then
            _bpid=$IT_LAST_PID
            WS_PORT=$BRIDGE_PORT IT_NO_WS= start_fcgid "$BUILD/parley.fcgi"
            timeout $((DEADLINE + 60)) node tests/integration/concurrent.mjs --transport poll \
                --base "$BASE" --n "$N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
                --first-ms "$FIRST_MS" --deadline "$DEADLINE" --json >"$out" 2>&1 || rc=1
            stop_setup
            it_stop "$_bpid" 2>/dev/null || true
        else
            echo "bridge did not start" >"$out"; rc=1
        fi
        row "mod_fcgid + bridge" long-poll "$out" $(( $(date +%s) - t0 )) ;;
    floor)
        it_bg "$IT_TMP/floor.log" node bench/longpoll-floor.mjs --port-file "$IT_TMP/floor.port"
        _fpid=$IT_LAST_PID
        _i=0
        while [ ! -s "$IT_TMP/floor.port" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
        timeout $((DEADLINE + 60)) node tests/integration/concurrent.mjs --transport poll \
            --base "http://127.0.0.1:$(cat "$IT_TMP/floor.port")" --n "$N" --tokens "$TOKENS" \
            --token-ms "$TOKEN_MS" --first-ms "$FIRST_MS" --deadline "$DEADLINE" --json >"$out" 2>&1 || rc=1
        it_stop "$_fpid"
        row "floor (no web server, no Parley)" long-poll "$out" $(( $(date +%s) - t0 )) ;;
    *) echo "bench/gens-bench.sh: unknown setup $setup" >&2; rc=1; continue ;;
    esac
    { echo "# $setup:"; grep -v '^{' "$out" | head -n 12; } >>"$DETAILS"
done
echo
if grep -qv '^# ' "$DETAILS"; then
    echo "Problems reported by the client (first lines per setup):"
    echo
    echo '```'
    cat "$DETAILS"
    echo '```'
fi
exit $rc
