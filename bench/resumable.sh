#!/bin/sh
# resumable.sh — resumable chat streams, side by side (issue 14, target 6):
# Vercel's `resumable-stream` (npm) with Redis (Debian's redis-server) behind
# the AI SDK's UI message stream, as the AI SDK's "Chatbot Resume Streams"
# guide builds it (bench/resumable/peer.mjs), against Parley's AI SDK stream
# (docs/ai-sdk.md) in the recommended deployment: lighttpd with the shipped
# apache-conf/lighttpd-parley.conf spawning parley.fcgi, plus the bridge
# (parley-ws) as parley-ws.service starts it. Both stream the same simulated
# upstream (tests/fake-llm, OpenAI API, stream: true), and both are driven by
# the same client: the `ai` package's DefaultChatTransport (what useChat
# sends, and reconnectToStream: what useChat({ resume: true }) calls) and
# readUIMessageStream (how useChat builds the message).
#
#   bench/resumable.sh                  (BUILD=build-x for another build dir)
#   TOKENS=100 TOKEN_MS=50 K=20         each scenario's answer: 100 tokens at
#                                       20/s; the reload / kill / second tab
#                                       happen after K tokens
#   SCENARIOS=reload,kill,tab,done      (bench/resumable/scenarios.mjs)
#   N=100 READERS="1 2"                 the CPU run: N answers at once, each
#                                       read by its POST's client (1) and also
#                                       by a second tab resuming it (2)
#   THREADS=shipped                     parley.fcgi --threads for the CPU run
#                                       (shipped: the snippet's 16; an open
#                                       SSE stream holds no thread, it waits
#                                       on the parking hub: fcgi/sse_park.c)
#   SHIPPED=0                           1: also a CPU run of Parley as shipped
#                                       (readers 1) when THREADS is a number
#   SEED000=1                           also Parley's seed 000 ticket stream,
#                                       resumed by position (bench/resumable/seed000.mjs:
#                                       WebSocket ?after=N, SSE Last-Event-ID)
#   SIDES="peer parley"
#   SCENARIOS= or READERS= (empty) skips that part
#
# Scenarios (each checked: the message useChat would build must equal the
# upstream's answer, every token once and in order):
#   reload  the POST's response dropped after K tokens, then reconnectToStream
#   kill    the producing process SIGKILLed after K tokens (the peer's Node
#           process, which a supervisor restarts like systemd's Restart=always;
#           the parley.fcgi that owns the generation's lease, which lighttpd
#           restarts); the page then resumes, retrying errors for 20 s
#   tab     a second tab resumes (follows) the stream while the first reads
#   done    resume after the stream finished, then the stored answer
# CPU: utime + stime from /proc/PID/stat of the server processes (peer: the
# Node server + redis-server; Parley: lighttpd + parley.fcgi + parley-ws)
# over the run, divided by the tokens delivered exactly; memory: their summed
# VmRSS before and at the peak. Prints Markdown for docs/PERFORMANCE.md.
# Bounded: every client under timeout(1); loopback only; stops only the
# processes it started, by pid (it_cleanup).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
TOKENS=${TOKENS:-100}
TOKEN_MS=${TOKEN_MS:-50}
K=${K:-20}
SCENARIOS=${SCENARIOS-reload,kill,tab,done}
N=${N:-100}
READERS=${READERS-"1 2"}
SHIPPED=${SHIPPED:-0}
SEED000=${SEED000:-1}
THREADS=${THREADS:-shipped}
SIDES=${SIDES:-"peer parley"}

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/resumable.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
for _m in resumable-stream redis openai ai; do
    [ -f "node_modules/$_m/package.json" ] || { echo "bench/resumable.sh: node_modules/$_m missing (npm ci)" >&2; exit 1; }
done
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
. bench/http-lib.sh
bench_deps lighttpd redis-server || exit 1
it_init
it_fake_llm
it_jwt_config
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"     # N chats from one user at once
} >>"$IT_APP_CONFIG"
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
RES=$IT_TMP/results
mkdir -p "$RES"
SCEN_T=$(( (TOKENS * TOKEN_MS / 1000 + 40) * 4 + 60 ))
LOAD_T=$(( (TOKENS * TOKEN_MS / 1000) * (N / 16 + 2) + 90 ))

# --- the peer: a private redis-server (no persistence) + the Node server ----
REDIS_PID="" SUP_PID="" PEER_PORT=""
start_peer() {
    _keep=$SETUP_PIDS
    _rp=$(free_port)
    it_bg "$IT_TMP/redis.log" redis-server --port "$_rp" --bind 127.0.0.1 --save '' --appendonly no
    REDIS_PID=$IT_LAST_PID
    _i=0
    while ! redis-cli -p "$_rp" ping >/dev/null 2>&1 && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
    PEER_PORT=$(free_port)
    it_bg "$IT_TMP/peer.log" node bench/resumable/supervise.mjs --pid-file "$IT_TMP/peer.pid" -- \
        node bench/resumable/peer.mjs --port "$PEER_PORT" --redis "redis://127.0.0.1:$_rp" --upstream "$FAKE_LLM_URL"
    SUP_PID=$IT_LAST_PID
    SETUP_PIDS=$_keep
    it_wait_port "$PEER_PORT" "$SUP_PID" || { cat "$IT_TMP/peer.log" >&2; it_die "the peer did not start"; }
}
stop_peer() {
    [ -n "$SUP_PID" ] && it_stop "$SUP_PID"
    [ -n "$REDIS_PID" ] && it_stop "$REDIS_PID"
    SUP_PID="" REDIS_PID=""
}

# --- Parley: the bridge, lighttpd + parley.fcgi ------------------------------
# one database for the bridge and every parley.fcgi (the default $IT_TMP/data/parley.db)
start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
TOKEN=$(node -e 'import("./tests/node/clients.mjs").then((m) => console.log(m.jwtHS256(process.argv[1], "bench-user")))' "$SECRET")
ADMIN=$(node -e 'import("./tests/node/clients.mjs").then((m) => console.log(m.jwtHS256(process.argv[1], "root", { role: "admin" })))' "$SECRET")

bench_machine "Resumable streams: resumable-stream + Redis against Parley (\`bench/resumable.sh\`)" \
    "node $(node --version), redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), resumable-stream $(node -p 'require("./node_modules/resumable-stream/package.json").version'), redis (npm) $(node -p 'require("./node_modules/redis/package.json").version'), openai (npm) $(node -p 'require("./node_modules/openai/package.json").version'), ai $(node -p 'require("./node_modules/ai/package.json").version')" \
    "TOKENS=$TOKENS TOKEN_MS=$TOKEN_MS K=$K N=$N READERS=\"$READERS\" THREADS=$THREADS bench/resumable.sh"

rc=0
# --- scenarios ------------------------------------------------------------------
[ -n "$SCENARIOS" ] && for side in $SIDES; do
    case $side in
    peer)
        start_peer
        timeout "$SCEN_T" node bench/resumable/scenarios.mjs --side peer --base "http://127.0.0.1:$PEER_PORT" \
            --pid-file "$IT_TMP/peer.pid" --tokens "$TOKENS" --token-ms "$TOKEN_MS" --k "$K" --only "$SCENARIOS" \
            >"$RES/scen-peer.jsonl" 2>"$RES/scen-peer.err" || rc=1
        stop_peer ;;
    parley)
        start_lighttpd "$BUILD/parley.fcgi"
        timeout "$SCEN_T" node bench/resumable/scenarios.mjs --side parley --base "$BASE" --token "$TOKEN" --admin "$ADMIN" \
            --tokens "$TOKENS" --token-ms "$TOKEN_MS" --k "$K" --only "$SCENARIOS" \
            >"$RES/scen-parley.jsonl" 2>"$RES/scen-parley.err" || rc=1
        if [ "$SEED000" = 1 ]; then
            timeout "$SCEN_T" node bench/resumable/seed000.mjs --base "$BASE" --token "$TOKEN" \
                --tokens "$TOKENS" --token-ms "$TOKEN_MS" --k "$K" \
                >"$RES/scen-seed000.jsonl" 2>"$RES/scen-seed000.err" || rc=1
        fi
        stop_setup ;;
    esac
done
[ -n "$SCENARIOS" ] && {
echo "Scenarios: one answer of $TOKENS tokens at one per $TOKEN_MS ms; the reload, the kill and the second tab after $K tokens."
echo "Client: the \`ai\` package's DefaultChatTransport (sendMessages, reconnectToStream) and readUIMessageStream on both sides;"
echo "survives = the message useChat builds equals the upstream's answer (every token once, in order). Parley: the shipped lighttpd snippet"
echo "(parley.fcgi --threads 16), PARLEY_LEASE_MS default (10 s). The peer: resumable-stream's own 1 s ack timeout, its Node server restarted"
echo "100 ms after it dies (as systemd's Restart=always)."
echo
node bench/resumable/report.mjs scenarios "$RES/scen-peer.jsonl" "$RES/scen-parley.jsonl"
echo
if [ -s "$RES/scen-seed000.jsonl" ]; then
    echo "Parley's seed 000 ticket stream through the same lighttpd (WebSocket proxied to the bridge, SSE to parley.fcgi), resumed by"
    echo "position (no peer row: resumable-stream's counterpart is skipCharacters, which the AI SDK's client does not use):"
    echo
    node bench/resumable/report.mjs seed000 "$RES/scen-seed000.jsonl"
    echo
fi
}

# --- CPU per delivered token ------------------------------------------------------
LOADS=""
RUNS=""
for readers in $READERS; do
    for side in $SIDES; do RUNS="$RUNS $side:$readers:$THREADS"; done
done
case " $SIDES " in *" parley "*) [ "$SHIPPED" = 1 ] && [ -n "$READERS" ] && RUNS="$RUNS parley:1:shipped" ;; esac
for run in $RUNS; do
        side=${run%%:*} readers=${run#*:} threads=${readers#*:} readers=${readers%%:*}
        out=$RES/load-$side-$readers-$threads.jsonl
        case $side in
        peer)
            start_peer
            _pids="peer:$(cat "$IT_TMP/peer.pid"),redis:$REDIS_PID"
            timeout "$LOAD_T" node bench/resumable/load.mjs --side peer --base "http://127.0.0.1:$PEER_PORT" \
                --n "$N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" --readers "$readers" --pids "$_pids" \
                >"$out" 2>"$out.err" || rc=1
            stop_peer ;;
        parley)
            BENCH_APP_THREADS=$threads
            [ "$threads" = shipped ] && BENCH_APP_THREADS=
            start_lighttpd "$BUILD/parley.fcgi"
            BENCH_APP_THREADS=
            _app=$(app_pids | tr '\n' ' ')
            _pids=""
            for _p in $SETUP_PIDS; do
                for _q in $_p $(pgrep -P "$_p"); do
                    case " $_app " in *" $_q "*) ;; *) _pids="$_pids,lighttpd:$_q" ;; esac
                done
            done
            for _q in $_app; do _pids="$_pids,parley.fcgi:$_q"; done
            _pids="$_pids,parley-ws:$BRIDGE_PID"
            timeout "$LOAD_T" node bench/resumable/load.mjs --side parley --base "$BASE" --token "$TOKEN" \
                --threads "$(sed -n 's/.*--threads \([0-9]*\).*/\1/p' "$SETUP_DIR/conf/lighttpd-parley.conf")" \
                --n "$N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" --readers "$readers" --pids "${_pids#,}" \
                >"$out" 2>"$out.err" || rc=1
            stop_setup ;;
        esac
        LOADS="$LOADS $out"
done
[ -n "$READERS" ] && {
echo "CPU run: $N answers started at once, $TOKENS tokens each at one per $TOKEN_MS ms; readers 1 = each read by its POST's client,"
echo "2 = also by a second tab resuming it at its first token. Server CPU = utime + stime of the peer's Node server + redis-server,"
echo "or of lighttpd + parley.fcgi (--threads $THREADS; shipped = the snippet's 16, an open SSE stream holds no thread) + parley-ws, over the run; per token = / tokens delivered"
echo "whole and exact. The client, the simulated LLM and the servers share the machine's $(nproc) cores."
echo
# shellcheck disable=SC2086
node bench/resumable/report.mjs load $LOADS
echo
}
for f in "$RES"/*.err; do
    [ -s "$f" ] && { echo "stderr of $(basename "$f" .err):"; echo '```'; head -n 20 "$f"; echo '```'; }
done
if [ "${RESUMABLE_RAW:-0}" = 1 ]; then
    echo '```'; cat "$RES"/*.jsonl; echo '```'
fi
exit $rc
