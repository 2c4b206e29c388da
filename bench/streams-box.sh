#!/bin/sh
# streams-box.sh — streams per box (issue 14 target 5): how many concurrent
# generations this machine carries at 20 tokens/s each, every token
# delivered (and, for Parley, persisted), with p99 token delivery latency
# <= 50 ms; server CPU per delivered token and memory per stream at each
# step. Side by side in the same run with what a seed's own team would run
# instead: a minimal Node server of seed 000 over `ws` and of seed 004 over
# SSE, each with the `openai` npm client (bench/peers/*.mjs; NO persistence,
# NO cache), against the same simulated upstream. Prints Markdown for
# docs/PERFORMANCE.md.
#
#   bench/streams-box.sh                    (BUILD=build-x for another build dir)
#   STEPS="50 100 200 400 800 1600"         concurrent generations per step; a
#                                           setup stops after its first step
#                                           that misses (the knee is the step
#                                           before)
#   TOKENS=100 TOKEN_MS=50 FIRST_MS=100     each answer (the simulated LLM's
#                                           directives): 100 tokens at 20/s
#   RAMP_MS=2000                            the N generations start evenly over
#                                           this time (tokens of different
#                                           streams do not all fall on the same
#                                           instants); all N stream at once
#                                           from RAMP_MS to FIRST_MS + TOKENS
#                                           * TOKEN_MS
#   SETUPS="parley-ws parley-sse node-ws node-sse"
#       parley-ws      seed 000 over WebSocket: lighttpd (the shipped
#                      lighttpd-parley.conf) → mod_proxy → parley-ws
#       parley-sse     seed 004 over SSE: lighttpd → parley.fcgi as shipped
#                      (--threads 16; an open SSE stream holds no thread, it
#                      waits on the parking hub: fcgi/sse_park.c), or with
#                      --threads SSE_THREADS when set
#       node-ws        bench/peers/seed000-ws.mjs (ws + openai), direct
#       node-sse       bench/peers/seed004-sse.mjs (node:http + openai), direct
#   SSE_THREADS=                            parley.fcgi's --threads for parley-sse
#                                           (empty: the snippet's 16)
#   PERF_OUT=DIR                            perf record -F 499 -g on each setup's
#                                           server processes for its whole client
#                                           run: DIR/<setup>.data (perf report -i;
#                                           e.g. SETUPS=parley-ws STEPS=800 RETRY=0)
#   RETRY=1                                 a step that misses is run once more
#                                           (both reported): other users of the
#                                           box can spoil one step
#
# Parley runs the recommended deployment: lighttpd with the shipped snippet
# spawning parley.fcgi, and the bridge (parley-ws) started as its shipped
# unit does, both on one SQLite database; the processes counted as "server"
# are lighttpd, parley.fcgi and parley-ws (all three, whichever transport).
# Adjusted for the load, nothing else: RATE_LIMIT_MESSAGES_PER_MINUTE=0
# (every stream comes from one address), WEBSOCKET_MAX_CONNECTIONS and
# PARLEY_MAX_GENERATIONS above the largest step, and lighttpd's
# server.max-fds / server.max-connections raised to 16384 / 8192 in the
# copy of the snippet (lighttpd caps connections at a fraction of its fd
# limit; each proxied WebSocket takes two fds).
# The simulated LLM is tests/fake-llm/server.mjs's FakeLLM run by
# bench/streams-box.mjs llm, which logs the time of every token write: the
# latency of a token is the viewer's receipt of the frame completing it
# minus that time, both CLOCK_MONOTONIC on this box.
# Bounded: every client run is under timeout(1); processes stopped by pid.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
STEPS=${STEPS:-"50 100 200 400 800 1600"}
TOKENS=${TOKENS:-100}
TOKEN_MS=${TOKEN_MS:-50}
FIRST_MS=${FIRST_MS:-100}
RAMP_MS=${RAMP_MS:-2000}
SETUPS=${SETUPS:-"parley-ws parley-sse node-ws node-sse"}
RETRY=${RETRY:-1}
SSE_THREADS=${SSE_THREADS:-}
PERF_OUT=${PERF_OUT:-}
MAXN=0
for _n in $STEPS; do [ "$_n" -gt "$MAXN" ] && MAXN=$_n; done
NSTEPS=$(echo "$STEPS" | wc -w)
STEP_S=$(( (RAMP_MS + FIRST_MS + TOKENS * TOKEN_MS) / 1000 + 25 ))

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/streams-box.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
. bench/http-lib.sh
bench_deps lighttpd || exit 1
it_init
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true

# The simulated LLM with its token log (instead of it_fake_llm's plain one).
it_bg "$IT_TMP/fake-llm.log" node bench/streams-box.mjs llm --port-file "$IT_TMP/fake-llm.port"
LLM_PID=$IT_LAST_PID
SETUP_PIDS=""
_i=0
while [ ! -s "$IT_TMP/fake-llm.port" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
[ -s "$IT_TMP/fake-llm.port" ] || it_die "the simulated LLM did not start: $(cat "$IT_TMP/fake-llm.log")"
FAKE_LLM_URL="http://127.0.0.1:$(cat "$IT_TMP/fake-llm.port")"

IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"      # every stream from one client address
    echo "WEBSOCKET_MAX_CONNECTIONS=$((MAXN + 100))"
    echo "PARLEY_MAX_GENERATIONS=$((MAXN + 100))"
} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

# The copy of lighttpd-parley.conf: parley.fcgi's --threads (BENCH_APP_THREADS,
# as http-lib.sh's it_subst) and lighttpd's fd and connection limits.
it_subst() {
    it_subst_shipped "$1" "$2"
    case $1 in
    */lighttpd-parley.conf)
        if [ -n "$BENCH_APP_THREADS" ]; then
            sed -i "s/--threads [0-9]*/--threads $BENCH_APP_THREADS/" "$2"
        fi
        {
            echo ""
            echo "# bench/streams-box.sh: room for thousands of streams"
            echo "server.max-fds = 16384"
            echo "server.max-connections = 8192"
        } >>"$2" ;;
    esac
}

bench_machine "Streams per box (\`bench/streams-box.sh\`)" "node $(node --version)" \
    "STEPS=\"$STEPS\" RETRY=$RETRY TOKENS=$TOKENS TOKEN_MS=$TOKEN_MS FIRST_MS=$FIRST_MS RAMP_MS=$RAMP_MS SETUPS=\"$SETUPS\" bench/streams-box.sh"

RESULTS=$IT_TMP/results
mkdir -p "$RESULTS"
rc=0
exe_pids() { # DIR — pids whose program is under DIR
    for _d in /proc/[0-9]*; do
        _exe=$(readlink "$_d/exe" 2>/dev/null) || continue
        case $_exe in "$1"/*) echo "${_d#/proc/}" ;; esac
    done
}
client() { # setup kind base steps server-pids [extra...]
    _s=$1 _k=$2 _b=$3 _st=$4 _sp=$5
    shift 5
    _perf=""
    if [ -n "$PERF_OUT" ]; then
        mkdir -p "$PERF_OUT"
        perf record -F 499 -g -p "$(echo $_sp | tr ' ' ',')" -o "$PERF_OUT/$_s.data" \
            >"$PERF_OUT/$_s.log" 2>&1 &
        _perf=$!
    fi
    timeout $(( STEP_S * (NSTEPS + 2) + 120 )) node bench/streams-box.mjs run --setup "$_s" --kind "$_k" \
        --base "$_b" --llm "$FAKE_LLM_URL" --server-pids "$_sp" --aux-pids "llm=$LLM_PID" \
        --steps "$_st" --tokens "$TOKENS" --token-ms "$TOKEN_MS" --first-ms "$FIRST_MS" \
        --ramp-ms "$RAMP_MS" --retry "$RETRY" --out "$RESULTS/$_s.json" "$@" >"$IT_TMP/$_s.out" 2>&1 || rc=1
    if [ -n "$_perf" ]; then
        kill -INT "$_perf" 2>/dev/null
        wait "$_perf" 2>/dev/null || true
    fi
}
parley_up() { # setup threads
    IT_DB=$IT_TMP/data/$1.db
    BENCH_APP_THREADS=$2
    start_bridge || { echo "bridge did not start" >&2; return 1; }
    _bpid=$BRIDGE_PID
    WS_PORT=$BRIDGE_PORT start_lighttpd "$BUILD/parley.fcgi"
    sleep 0.5
    PIDS="$SETUP_PIDS $(exe_pids "$SETUP_DIR" | tr '\n' ' ') $(exe_pids "$BRIDGE_DIR" | tr '\n' ' ')"
}
parley_down() {
    stop_setup
    bench_reap 2>/dev/null
    it_stop "$_bpid" 2>/dev/null || true
}
node_up() { # file
    it_bg "$IT_TMP/peer.log" node "$1" --upstream "$FAKE_LLM_URL" --port-file "$IT_TMP/peer.port"
    _npid=$IT_LAST_PID
    _i=0
    while [ ! -s "$IT_TMP/peer.port" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
    PEER_BASE="http://127.0.0.1:$(cat "$IT_TMP/peer.port")"
}
node_down() {
    it_stop "$_npid"
    SETUP_PIDS=""
    rm -f "$IT_TMP/peer.port"
}

for setup in $SETUPS; do
    case $setup in
    parley-ws)
        if parley_up "$setup" ""; then
            client "$setup" ws "$BASE" "$STEPS" "$PIDS"
        else rc=1; fi
        parley_down ;;
    parley-sse)
        if parley_up "$setup" "$SSE_THREADS"; then
            client "$setup" sse "$BASE" "$STEPS" "$PIDS" --parley-sessions
        else rc=1; fi
        parley_down ;;
    node-ws)
        node_up bench/peers/seed000-ws.mjs
        client "$setup" ws "$PEER_BASE" "$STEPS" "$_npid"
        node_down ;;
    node-sse)
        node_up bench/peers/seed004-sse.mjs
        client "$setup" sse "$PEER_BASE" "$STEPS" "$_npid"
        node_down ;;
    *) echo "bench/streams-box.sh: unknown setup $setup" >&2; rc=1 ;;
    esac
done

echo "Each step: N generations started evenly over $RAMP_MS ms, one viewer each, unique questions (no cache hit);"
echo "each answer $TOKENS tokens every $TOKEN_MS ms (20/s), the first $FIRST_MS ms after the request."
echo "Latency = viewer's receipt of the frame completing a token − the simulated LLM's write of it (same clock)."
echo "Server = lighttpd + parley.fcgi + parley-ws for Parley (every token persisted in SQLite), the one node process for a peer"
echo "(no persistence, no cache). RSS per stream = (server RSS mid-step − server RSS before the first step) / N."
echo "The simulated LLM's and the client's CPU are beside: they share the $(nproc) cores; box busy = all processes on the machine."
echo
_files=""
for setup in $SETUPS; do [ -s "$RESULTS/$setup.json" ] && _files="$_files $RESULTS/$setup.json"; done
# shellcheck disable=SC2086
[ -n "$_files" ] && node bench/streams-box.mjs table $_files
echo
_any=0
for setup in $SETUPS; do
    if [ -s "$IT_TMP/$setup.out" ] && grep -qv '^{' "$IT_TMP/$setup.out"; then
        [ $_any = 0 ] && { echo "Client notes (warm-up steps, errors):"; echo; echo '```'; _any=1; }
        echo "# $setup:"
        grep -v '^{' "$IT_TMP/$setup.out" | cut -c1-400 | head -n 8
    fi
done
[ $_any = 1 ] && echo '```'
it_stop "$LLM_PID"
exit $rc
