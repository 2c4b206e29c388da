#!/bin/sh
# longpoll-bench.sh — long-poll delivery latency (event appended -> client
# has it) with many waiting clients on one ticket channel, and the CPU that
# idle waiters cost. Prints Markdown for docs/PERFORMANCE.md.
#
#   bench/longpoll-bench.sh               (BUILD=build-x for another build dir)
#   SETUPS="proxy_fcgi lighttpd"          which web-server setups (default: both)
#   CLIENTS="200 50 10" COUNT=100 RATE=20 IDLE=5 REPS=2   clients (one run
#                                         series per number), events, events/s,
#                                         idle window (s), runs per setup and number
#   APP_BIN=path/parley.fcgi              another build of the app (A/B comparisons)
#
# Each setup is started by the integration harness (tests/integration/lib.sh)
# with the SHIPPED apache-conf/ snippets on a free loopback port, except that
# parley.fcgi gets --threads 256 (every waiting poll holds a thread) and
# Apache MaxRequestWorkers 512 (bench/http-lib.sh):
#   proxy_fcgi   Apache (event MPM) + mod_proxy_fcgi to parley.fcgi on a unix socket
#   lighttpd     lighttpd + mod_fastcgi spawning parley.fcgi
# bench/longpoll-latency.mjs opens CLIENTS long-poll sessions on one ticket
# channel, measures the idle CPU, then runs build/bench/ws-pub (evlog_append
# of COUNT events at RATE per second, each stamped with its append time) and
# measures the latency of every frame at every client. One row per run.
# Bounded: every run is under timeout(1); about 3 minutes with the defaults.
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
    "BUILD=$BUILD CLIENTS=\"$CLIENTS\" COUNT=$COUNT RATE=$RATE REPS=$REPS ${APP_GIVEN:+APP_BIN=$APP_GIVEN }bench/longpoll-bench.sh"
echo "N long-poll clients (N = $CLIENTS; one session each, \`GET /api/poll/{sid}?cursor=N&wait=25\`) on one ticket"
echo "channel; parley.fcgi --threads $THREADS. Idle: $IDLE s with every client waiting and nothing"
echo "appended. Delivery: $COUNT events appended with evlog_append at $RATE/s (\`$BUILD/bench/ws-pub\`);"
echo "latency = client has the frame − append time, over every frame at every client, ms."
echo
echo "| setup | clients | events | frames | p50 | p90 | p99 | max | app CPU while delivering | idle: app CPU | idle: app wake-ups | idle: web server CPU | errors |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
    for n in $CLIENTS; do
        rep=1
        while [ $rep -le "$REPS" ]; do
            echo "# $setup, $n clients, run $rep:" >>"$DETAILS"
            timeout $((COUNT / RATE + IDLE + 60)) node bench/longpoll-latency.mjs --base "$BASE" \
                --db "$IT_DB" --pub "$BUILD/bench/ws-pub" --clients "$n" --count "$COUNT" \
                --rate "$RATE" --idle "$IDLE" --app-pids "$(app_pids | tr '\n' ' ')" \
                --server-pids "$(server_pids)" --label "$setup #$rep" \
                --timeout $((COUNT / RATE + IDLE + 50)) 2>>"$DETAILS" || rc=1
            rep=$((rep + 1))
        done
    done
    stop_setup || true
    bench_reap
done
echo
echo "Details (from bench/longpoll-latency.mjs):"
echo
sed -e 's/^# \(.*\):$/\n**\1**\n/' -e 's/^# /- /' "$DETAILS"
exit $rc
