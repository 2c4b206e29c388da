#!/bin/sh
# longpoll-bench.sh — long-poll delivery latency (event appended -> client
# has it) with many waiting clients, and the CPU that idle waiters cost.
# Prints Markdown for docs/PERFORMANCE.md. Two scenarios:
#   fanout  every client follows ONE ticket channel (one live answer watched
#           by N viewers): CLIENTS="200 50 10", COUNT=100 events at RATE=20/s
#   desk    every client follows ITS OWN ticket channel (a help desk: many
#           agents, each watching their ticket); events round-robin over the
#           channels: DESK_CLIENTS=200 clients, DESK_RATES="200 1000" events/s
#           in all (1 and 5 per channel and second), DESK_SECONDS=10 s each
#
#   bench/longpoll-bench.sh               (BUILD=build-x for another build dir)
#   SETUPS="proxy_fcgi lighttpd"          which web-server setups (default: both)
#   SCENARIOS="fanout desk"               which scenarios (default: both)
#   CLIENTS="200 50 10" COUNT=100 RATE=20 IDLE=5 REPS=2   fanout: clients (one run
#                                         series per number), events, events/s,
#                                         idle window (s), runs per setup and number
#   DESK_CLIENTS=200 DESK_RATES="200 1000" DESK_SECONDS=10   desk
#   APP_BIN=path/parley.fcgi              another build of the app (A/B comparisons)
#
# Each setup is started by the integration harness (tests/integration/lib.sh)
# with the SHIPPED apache-conf/ snippets on a free loopback port, except that
# parley.fcgi gets --threads 256 (every waiting poll holds a thread) and
# Apache MaxRequestWorkers 512 (bench/http-lib.sh):
#   proxy_fcgi   Apache (event MPM) + mod_proxy_fcgi to parley.fcgi on a unix socket
#   lighttpd     lighttpd + mod_fastcgi spawning parley.fcgi
# bench/longpoll-latency.mjs opens the long-poll sessions, measures the idle
# CPU, then runs build/bench/ws-pub (evlog_append of the events at the rate,
# round-robin over the channels, each stamped with its append time) and
# measures the latency of every frame at every client. One row per run.
# Bounded: every run is under timeout(1); about 6 minutes with the defaults.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
CLIENTS=${CLIENTS:-"200 50 10"}
COUNT=${COUNT:-100}
RATE=${RATE:-20}
IDLE=${IDLE:-5}
REPS=${REPS:-2}
THREADS=${THREADS:-256}
SETUPS=${SETUPS:-"proxy_fcgi lighttpd"}
SCENARIOS=${SCENARIOS:-"fanout desk"}
DESK_CLIENTS=${DESK_CLIENTS:-200}
DESK_RATES=${DESK_RATES:-"200 1000"}
DESK_SECONDS=${DESK_SECONDS:-10}
APP_GIVEN=${APP_BIN:-}
APP_BIN=${APP_BIN:-$BUILD/parley.fcgi}

LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/bench/ws-pub" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/longpoll-bench.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
. bench/http-lib.sh
bench_deps apache2 lighttpd || exit 1
it_init
IT_UPSTREAM=http://127.0.0.1:9     # no generation runs here: the events come from ws-pub
IT_NO_WS=1
BENCH_APP_THREADS=$THREADS
BENCH_APACHE_WORKERS=512
ulimit -n 8192 2>/dev/null || true

# The web server's processes of the setup (the harness's pids and their
# children), without the app.
server_pids() {
    _app=" $(app_pids | tr '\n' ' ') "
    for _p in $SETUP_PIDS; do
        echo "$_p"
        pgrep -P "$_p" || true
    done | while read -r _q; do
        case $_app in *" $_q "*) ;; *) echo "$_q" ;; esac
    done | sort -u | tr '\n' ' '
}

bench_machine "Long-poll delivery (\`bench/longpoll-bench.sh\`)" "node $(node --version)" \
    "BUILD=$BUILD SCENARIOS=\"$SCENARIOS\" CLIENTS=\"$CLIENTS\" COUNT=$COUNT RATE=$RATE DESK_CLIENTS=$DESK_CLIENTS DESK_RATES=\"$DESK_RATES\" DESK_SECONDS=$DESK_SECONDS REPS=$REPS ${APP_GIVEN:+APP_BIN=$APP_GIVEN }bench/longpoll-bench.sh"
echo "Long-poll clients, one session each (\`GET /api/poll/{sid}?cursor=N&wait=25\`); parley.fcgi --threads $THREADS."
echo "fanout: N = $CLIENTS clients on ONE ticket channel, $COUNT events at $RATE/s. desk: $DESK_CLIENTS clients"
echo "each on its OWN ticket channel, events round-robin over the channels at $DESK_RATES/s in all for $DESK_SECONDS s."
echo "Idle: $IDLE s with every client waiting and nothing appended. Events appended with evlog_append"
echo "(\`$BUILD/bench/ws-pub\`); latency = client has the frame − append time, over every frame at every client, ms."
echo
echo "| setup | clients | channels | events | frames | p50 | p90 | p99 | max | app CPU while delivering | idle: app CPU | idle: app wake-ups | idle: web server CPU | errors |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
DETAILS=$IT_TMP/details
: >"$DETAILS"
rc=0
for setup in $SETUPS; do
    IT_DB=$IT_TMP/data/$setup.db
    "start_$setup" "$APP_BIN"
    # lighttpd starts parley.fcgi itself: wait until it runs.
    i=0
    while [ -z "$(app_pids)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    curl -s -o /dev/null "$BASE/api/health" || true
    # runs: "clients channels count rate" per line
    RUNS=$IT_TMP/runs
    : >"$RUNS"
    for sc in $SCENARIOS; do
        case $sc in
        fanout) for n in $CLIENTS; do echo "$n 1 $COUNT $RATE" >>"$RUNS"; done ;;
        desk) for r in $DESK_RATES; do
                  echo "$DESK_CLIENTS $DESK_CLIENTS $((r * DESK_SECONDS)) $r" >>"$RUNS"
              done ;;
        *) echo "bench/longpoll-bench.sh: unknown scenario $sc" >&2; rc=1 ;;
        esac
    done
    while read -r n ch cnt rt; do
        rep=1
        while [ $rep -le "$REPS" ]; do
            echo "# $setup, $n clients on $ch channel(s), $cnt events at $rt/s, run $rep:" >>"$DETAILS"
            timeout $((cnt / rt + IDLE + 60)) node bench/longpoll-latency.mjs --base "$BASE" \
                --db "$IT_DB" --pub "$BUILD/bench/ws-pub" --clients "$n" --channels "$ch" \
                --count "$cnt" --rate "$rt" --idle "$IDLE" --app-pids "$(app_pids | tr '\n' ' ')" \
                --server-pids "$(server_pids)" --label "$setup #$rep" \
                --timeout $((cnt / rt + IDLE + 50)) 2>>"$DETAILS" </dev/null || rc=1
            rep=$((rep + 1))
        done
    done <"$RUNS"
    stop_setup || true
    bench_reap
done
echo
echo "Details (from bench/longpoll-latency.mjs):"
echo
sed -e 's/^# \(.*\):$/\n**\1**\n/' -e 's/^# /- /' "$DETAILS"
exit $rc
