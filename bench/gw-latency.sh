#!/bin/sh
# gw-latency.sh — the latency Parley adds to the first token (issue 14,
# target 4): new generations at 1/s and at 100/s sustained (open-loop, a
# fixed interval), each a new question from a client already connected,
# over WebSocket (seed 000; and Phoenix WebSocket, seed 003), SSE (seed 004)
# and both long-poll transports (Parley's own, seed 000; Phoenix LongPoll,
# seed 003, with the official phoenix client) — and in the SAME run, at the
# same rate, interleaved, the same client asking the simulated LLM straight
# (its OpenAI streaming endpoint) with the same directives. Prints Markdown
# for docs/PERFORMANCE.md.
#
#   bench/gw-latency.sh                     (BUILD=build-x for another build dir)
#   SETUPS="lighttpd proxy_fcgi"            lighttpd: the recommended deployment,
#                                           lighttpd + the shipped lighttpd snippet
#                                           (parley.fcgi spawned by lighttpd) + the
#                                           bridge for the WebSocket paths;
#                                           proxy_fcgi: Apache + mod_proxy_fcgi +
#                                           parley-websocket.conf + the bridge
#                                           floor: bench/longpoll-floor.mjs (the long-poll
#                                           exchange with Parley's part removed: an
#                                           in-memory Node server, timers for tokens,
#                                           no web server, no database, no upstream);
#                                           transports lp and phx-lp (the same server
#                                           speaks Phoenix LongPoll to phoenix.js).
#                                           With sse in TRANSPORTS, lighttpd and
#                                           proxy_fcgi also run the SSE
#                                           floor: bench/sse-floor.c (a libfcgi responder
#                                           relaying the upstream's tokens as seed 004
#                                           frames: no database, no loop) behind the
#                                           same web server at /floor/, asked right
#                                           after Parley at the same rate
#   TRANSPORTS="ws phx-ws sse lp phx-lp"
#   RATES="1 100"   SECONDS_AT_1=30   SECONDS_AT_100=20
#   FIRST_MS=50 TOKENS=3 TOKEN_MS=5         the answer (directives in every question)
#   PHX_SOCKETS=32                          Phoenix sockets the client opens before a
#                                           run (a topic per generation on them; one
#                                           more is opened when all have 10 topics)
#   COALESCE_MS=                            PARLEY_COALESCE_MS for the app (unset:
#                                           the default, 5); an experiment knob
#
# The servers are the integration harness's (tests/integration/lib.sh) with
# the SHIPPED apache-conf/ snippets and thread counts; the app's config file
# lifts the per-user rate limit (every question comes from one address) and
# the WebSocket connection cap. The simulated LLM runs with --timing-log:
# it stamps each request's arrival and its first token's write on the same
# monotonic clock as the client, so the upstream's own time is taken out of
# every generation (bench/gw-latency.mjs explains the columns).
# Bounded: every client run is under timeout(1); everything started here is
# stopped by pid at exit.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
SETUPS=${SETUPS:-"lighttpd proxy_fcgi floor"}
TRANSPORTS=${TRANSPORTS:-"ws phx-ws sse lp phx-lp"}
RATES=${RATES:-"1 100"}
SECONDS_AT_1=${SECONDS_AT_1:-30}
SECONDS_AT_100=${SECONDS_AT_100:-20}
FIRST_MS=${FIRST_MS:-50}
TOKENS=${TOKENS:-3}
TOKEN_MS=${TOKEN_MS:-5}
COALESCE_MS=${COALESCE_MS:-}
PHX_SOCKETS=${PHX_SOCKETS:-32}

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" "$BUILD/parley" \
    "$BUILD/bench/sse-floor" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/gw-latency.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
. bench/http-lib.sh
bench_deps apache2 lighttpd || exit 1
set +e
it_init

# the simulated LLM, with its timing log
TIMING=$IT_TMP/llm-timing.ndjson
_pf=$IT_TMP/fake-llm.port
it_bg "$IT_TMP/fake-llm.log" node tests/fake-llm/server.mjs --port 0 --port-file "$_pf" --timing-log "$TIMING"
FAKE_PID=$IT_LAST_PID
SETUP_PIDS=""
_i=0
while [ ! -s "$_pf" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
[ -s "$_pf" ] || it_die "the simulated LLM did not start: $(cat "$IT_TMP/fake-llm.log")"
FAKE_LLM_URL="http://127.0.0.1:$(cat "$_pf")"

IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"     # every question from one client address
    echo "WEBSOCKET_MAX_CONNECTIONS=20000"
    [ -n "$COALESCE_MS" ] && echo "PARLEY_COALESCE_MS=$COALESCE_MS"
} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

bench_machine "Latency a gateway adds (\`bench/gw-latency.sh\`)" "node $(node --version)" \
    "SETUPS=\"$SETUPS\" TRANSPORTS=\"$TRANSPORTS\" RATES=\"$RATES\" SECONDS_AT_1=$SECONDS_AT_1 SECONDS_AT_100=$SECONDS_AT_100 FIRST_MS=$FIRST_MS TOKENS=$TOKENS TOKEN_MS=$TOKEN_MS${COALESCE_MS:+ COALESCE_MS=$COALESCE_MS} bench/gw-latency.sh"
echo "Each generation: a new question (no cache hit) from a client already connected; the answer $TOKENS tokens,"
echo "the first $FIRST_MS ms after the simulated LLM got the request, then every $TOKEN_MS ms."
echo "Parley and the baseline (the same client asking the simulated LLM straight, OpenAI streaming, kept"
echo "connection) are asked at the same rate in the same window, interleaved half an interval apart."
echo "overhead = time to first token − the upstream's own time (first token written − request arrived, both"
echo "stamped by the simulated LLM on the client's monotonic clock); **added = Parley's overhead − the"
echo "baseline's**, percentile by percentile. Target: added p50 ≤ 1 ms, p99 ≤ 5 ms.${COALESCE_MS:+ PARLEY_COALESCE_MS=$COALESCE_MS.}"
echo
echo "| setup | transport | rate (/s) | generations (ok / asked) | errors | TTFT Parley p50 / p99 (ms) | TTFT direct p50 / p99 | overhead Parley p50 / p99 / max | overhead direct p50 / p99 / max | **added p50 / p99** | request path Parley p50 / p99 (direct) | token path Parley p50 / p99 (direct) |"
echo "|---|---|---:|---:|---:|---|---|---|---|---|---|---|"

RESULTS=$IT_TMP/results.ndjson
: >"$RESULTS"
DETAILS=$IT_TMP/details
: >"$DETAILS"
rc=0
row() { # setup json-file
    node -e '
      const fs = require("fs");
      const [setup, file, tr, rate] = process.argv.slice(1);
      let j = null;
      for (const l of fs.readFileSync(file, "utf8").split("\n")) { try { const x = JSON.parse(l); if (x && x.parley) j = x; } catch {} }
      if (!j) { console.log(`| ${setup} | ${tr} | ${rate} | no result | | | | | | | | |`); process.exit(1); }
      const f = (x) => (x === null || x === undefined ? "-" : x.toFixed(2));
      const P = j.parley, D = j.direct;
      const err = P.failed + D.failed;
      const errs = err ? `${err} (${Object.entries({ ...P.errors }).map(([k, n]) => `${k}: ${n}`).concat(Object.entries(D.errors).map(([k, n]) => `direct ${k}: ${n}`)).join("; ")})` : "0";
      console.log(`| ${setup} | ${tr} | ${j.rate} | ${P.complete} / ${P.asked} (direct ${D.complete} / ${D.asked}) | ${errs} | ${f(P.ttft.p50)} / ${f(P.ttft.p99)} | ${f(D.ttft.p50)} / ${f(D.ttft.p99)} | ${f(P.overhead.p50)} / ${f(P.overhead.p99)} / ${f(P.overhead.max)} | ${f(D.overhead.p50)} / ${f(D.overhead.p99)} / ${f(D.overhead.max)} | **${f(j.added.p50)} / ${f(j.added.p99)}** | ${f(P.to_llm.p50)} / ${f(P.to_llm.p99)} (${f(D.to_llm.p50)} / ${f(D.to_llm.p99)}) | ${f(P.from_llm.p50)} / ${f(P.from_llm.p99)} (${f(D.from_llm.p50)} / ${f(D.from_llm.p99)}) |`);
      if (err || P.unmatched || D.unmatched) process.exit(1);
    ' "$@"
}

for setup in $SETUPS; do
    if [ "$setup" = floor ]; then
        it_bg "$IT_TMP/floor.log" node bench/longpoll-floor.mjs --port-file "$IT_TMP/floor.port"
        _fpid=$IT_LAST_PID
        _i=0
        while [ ! -s "$IT_TMP/floor.port" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
        for rate in $RATES; do
            if [ "$rate" -ge 100 ]; then secs=$SECONDS_AT_100; else secs=$SECONDS_AT_1; fi
            for tr in lp phx-lp; do
                case " $TRANSPORTS " in *" $tr "*) ;; *) continue ;; esac
                out=$IT_TMP/floor-$tr-$rate.out
                timeout $((secs + 120)) node bench/gw-latency.mjs --base "http://127.0.0.1:$(cat "$IT_TMP/floor.port")" \
                    --fake "$FAKE_LLM_URL" --timing-log "$TIMING" --transport "$tr" --no-upstream --rate "$rate" \
                    --seconds "$secs" --first-ms "$FIRST_MS" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
                    --phx-sockets "$PHX_SOCKETS" --label floor --json >"$out" 2>&1 || rc=1
                row "floor (longpoll-floor.mjs: no web server, no Parley)" "$out" "$tr" "$rate" || rc=1
                grep '^{' "$out" | tail -n 1 >>"$RESULTS"
                { echo "# floor $tr $rate:"; grep -v '^{' "$out" | head -n 12; } >>"$DETAILS"
            done
        done
        it_stop "$_fpid"
        continue
    fi
    IT_DB=$IT_TMP/data/$setup.db
    export IT_DB
    if ! start_bridge; then
        echo "| $setup | | | bridge did not start | | | | | | | | |"; rc=1; continue
    fi
    _bpid=$BRIDGE_PID
    # the SSE floor (bench/sse-floor.c) behind the same web server at /floor/
    case " $TRANSPORTS " in *" sse "*) BENCH_FLOOR=$BUILD/bench/sse-floor ;; *) BENCH_FLOOR="" ;; esac
    case $setup in
    lighttpd) WS_PORT=$BRIDGE_PORT start_lighttpd "$BUILD/parley.fcgi" ;;
    proxy_fcgi) WS_PORT=$BRIDGE_PORT start_proxy_fcgi "$BUILD/parley.fcgi" ;;
    *) echo "bench/gw-latency.sh: unknown setup $setup" >&2; it_stop "$_bpid"; rc=1; continue ;;
    esac
    WS_PORT=""
    for rate in $RATES; do
        if [ "$rate" -ge 100 ]; then secs=$SECONDS_AT_100; else secs=$SECONDS_AT_1; fi
        for tr in $TRANSPORTS; do
            out=$IT_TMP/$setup-$tr-$rate.out
            timeout $((secs + 120)) node bench/gw-latency.mjs --base "$BASE" --fake "$FAKE_LLM_URL" \
                --timing-log "$TIMING" --transport "$tr" --rate "$rate" --seconds "$secs" \
                --first-ms "$FIRST_MS" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
                --phx-sockets "$PHX_SOCKETS" --label "$setup" --json >"$out" 2>&1 || rc=1
            row "$setup" "$out" "$tr" "$rate" || rc=1
            grep '^{' "$out" | tail -n 1 >>"$RESULTS"
            { echo "# $setup $tr $rate:"; grep -v '^{' "$out" | head -n 12; } >>"$DETAILS"
            [ "$tr" = sse ] || continue
            # the same exchange against the floor, right after, same web server
            out=$IT_TMP/$setup-sse-floor-$rate.out
            timeout $((secs + 120)) node bench/gw-latency.mjs --base "$BASE/floor" --fake "$FAKE_LLM_URL" \
                --timing-log "$TIMING" --transport sse --rate "$rate" --seconds "$secs" \
                --first-ms "$FIRST_MS" --tokens "$TOKENS" --token-ms "$TOKEN_MS" \
                --label "$setup-floor" --json >"$out" 2>&1 || rc=1
            row "$setup floor (sse-floor.c: no Parley)" "$out" sse "$rate" || rc=1
            grep '^{' "$out" | tail -n 1 >>"$RESULTS"
            { echo "# $setup floor sse $rate:"; grep -v '^{' "$out" | head -n 12; } >>"$DETAILS"
        done
    done
    stop_setup
    it_stop "$_bpid" 2>/dev/null || true
done
echo
echo "Every column in ms. TTFT: client sent → client has the first token. Request path: client sent → the"
echo "simulated LLM has the request; token path: the LLM wrote the first token → the client has it."
if grep -qv '^# ' "$DETAILS"; then
    echo
    echo "Problems reported by the client (first lines per run):"
    echo
    echo '```'
    cat "$DETAILS"
    echo '```'
fi
if [ -n "${GWL_RESULTS:-}" ]; then cp "$RESULTS" "$GWL_RESULTS"; fi
exit $rc
