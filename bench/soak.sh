#!/bin/sh
# soak.sh — the soak (issue 13, item 5): about 1,200 simulated users for
# SOAK_S seconds (600 by default) on every transport at once, through a web
# server with the SHIPPED apache-conf/ snippets in front of parley.fcgi and
# the WebSocket bridge, with the simulated LLM streaming every answer; each
# reassembled answer is checked against the simulated LLM's deterministic
# output. Prints Markdown (machine, command, answers checked, chunks lost or
# duplicated, errors by kind, RSS and file descriptors of every server
# process over time, WAL size, jobs left running) and exits non-zero when
# something is wrong (see "Verdict" below). Not part of `make test`.
#
#   bench/soak.sh                              (BUILD=build-x for another build dir)
#   SOAK_S=60 SOAK_SCALE=10 bench/soak.sh      a short look: 1/10 of the clients, 1 min
#   SOAK_PG=1 bench/soak.sh                    PostgreSQL (a private cluster, it_postgres)
#   SOAK_SERVER=proxy_fcgi bench/soak.sh       Apache + mod_proxy_fcgi instead of lighttpd
#
# Clients (bench/soak-clients.mjs; counts overridable, SOAK_SCALE=N divides
# each by N, at least 1):
#   SOAK_WS_TICKET=400 SOAK_WS_CHAT=400 SOAK_WS_BRAND=200   WebSocket (seeds 000/001/002)
#   SOAK_POLL_TICKET=40 SOAK_POLL_CHAT=40 SOAK_POLL_BRAND=20  Parley long-poll
#   SOAK_SSE=50                                             seed 004 SSE
#   SOAK_PHX_WS=25 SOAK_PHX_LP=25                           seed 003, phoenix.js
# Each asks, waits for the whole answer, pauses SOAK_THINK_MIN_MS..MAX_MS
# (10000..30000), asks again. Answers: SOAK_TOKENS_MIN..MAX tokens (8..40)
# every SOAK_TOKEN_MS_MIN..MAX ms (10..50), the first after 0..200 ms —
# per-question directives of the simulated LLM. The clients start over
# SOAK_RAMP_S (30) seconds.
#
# Limits raised for 1,200 clients (docs: bench/README.md, "bench/soak.sh";
# what an operator sets for as many): ulimit -n 65536 (or the hard limit)
# for every process started here; lighttpd server.max-fds 16384 and
# server.max-connections 8192 (appended to the copy of the shipped snippet);
# parley.fcgi --threads SOAK_THREADS (64: one per open SSE stream); Apache
# MaxRequestWorkers = all clients + 256, in one child; the bridge's
# WEBSOCKET_MAX_CONNECTIONS 4000; RATE_LIMIT_MESSAGES_PER_MINUTE 0 (every
# client comes from 127.0.0.1; each has its own JWT user).
#
# Verdict: non-zero exit status when a chunk is lost or duplicated, an
# answer is wrong, any error is counted (none is expected: repeated
# long-poll requests, www/parley.js's behaviour, are counted apart), a kind
# of client checked no answer, a server process restarted or died, a job
# is left running, the RSS of the bridge or of a parley.fcgi grew after the
# warm-up (SOAK_WARMUP_S, default min(120, SOAK_S / 3)) by more than
# SOAK_RSS_PCT % (20) + SOAK_RSS_SLACK_MB (8), the open descriptors of a
# server process at the end exceed those at the start by more than
# SOAK_FD_SLACK (32), or the SQLite WAL exceeds SOAK_WAL_MAX_MB (64;
# PostgreSQL: pg_wal beyond 1100 MB, above its default max_wal_size).
#
# Bounded: the clients stop at SOAK_S and are killed at SOAK_S + 240 s;
# everything started here is stopped by pid at exit (tests/integration/lib.sh).
# Loopback only. Run it under `nice` on a shared machine.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
SOAK_S=${SOAK_S:-600}
SOAK_SCALE=${SOAK_SCALE:-1}
SOAK_SERVER=${SOAK_SERVER:-lighttpd}
SOAK_PG=${SOAK_PG:-0}
SOAK_SAMPLE_S=${SOAK_SAMPLE_S:-30}
SOAK_WARMUP_S=${SOAK_WARMUP_S:-$(( SOAK_S / 3 < 120 ? SOAK_S / 3 : 120 ))}
SOAK_THREADS=${SOAK_THREADS:-64}
SOAK_RAMP_S=${SOAK_RAMP_S:-30}
export SOAK_RSS_PCT=${SOAK_RSS_PCT:-20} SOAK_RSS_SLACK_MB=${SOAK_RSS_SLACK_MB:-8}
export SOAK_FD_SLACK=${SOAK_FD_SLACK:-32} SOAK_WAL_MAX_MB=${SOAK_WAL_MAX_MB:-64}
scale() { _v=$(( $1 / SOAK_SCALE )); [ "$1" -gt 0 ] && [ "$_v" -lt 1 ] && _v=1; echo "$_v"; }
N_WS_TICKET=$(scale "${SOAK_WS_TICKET:-400}")
N_WS_CHAT=$(scale "${SOAK_WS_CHAT:-400}")
N_WS_BRAND=$(scale "${SOAK_WS_BRAND:-200}")
N_POLL_TICKET=$(scale "${SOAK_POLL_TICKET:-40}")
N_POLL_CHAT=$(scale "${SOAK_POLL_CHAT:-40}")
N_POLL_BRAND=$(scale "${SOAK_POLL_BRAND:-20}")
N_SSE=$(scale "${SOAK_SSE:-50}")
N_PHX_WS=$(scale "${SOAK_PHX_WS:-25}")
N_PHX_LP=$(scale "${SOAK_PHX_LP:-25}")
N_ALL=$((N_WS_TICKET + N_WS_CHAT + N_WS_BRAND + N_POLL_TICKET + N_POLL_CHAT + N_POLL_BRAND + N_SSE + N_PHX_WS + N_PHX_LP))
CLIENT_OPTS="--think-min ${SOAK_THINK_MIN_MS:-10000} --think-max ${SOAK_THINK_MAX_MS:-30000}
 --tokens-min ${SOAK_TOKENS_MIN:-8} --tokens-max ${SOAK_TOKENS_MAX:-40}
 --token-ms-min ${SOAK_TOKEN_MS_MIN:-10} --token-ms-max ${SOAK_TOKEN_MS_MAX:-50} --first-ms-max 200
 --ramp $SOAK_RAMP_S --seconds $SOAK_S"

case $SOAK_SERVER in lighttpd|proxy_fcgi) ;; *) echo "bench/soak.sh: SOAK_SERVER is lighttpd or proxy_fcgi" >&2; exit 2 ;; esac
LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley.fcgi" "$BUILD/parley-ws" "$BUILD/parley" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/soak.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
[ -f node_modules/phoenix/package.json ] && [ -f node_modules/ws/package.json ] ||
    { echo "bench/soak.sh: node_modules missing (make node-deps)" >&2; exit 1; }
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
SANITIZED=0
grep -q __asan_init "$BUILD/parley-ws" 2>/dev/null && SANITIZED=1

. bench/http-lib.sh
case $SOAK_SERVER in
lighttpd) bench_deps lighttpd || exit 1 ;;
proxy_fcgi) bench_deps apache2 || exit 1 ;;
esac
set +e
# The descriptors: every process started below inherits this.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
it_init
FAKE_LLM_URL=""            # our own simulated LLM, not a shared one
it_fake_llm
export FAKE_LLM_URL

SECRET="soak-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
RUN=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
if [ "$SOAK_PG" = 1 ]; then
    IT_PG_MAX_CONN=300 it_postgres
    IT_DB=$PG_URL
    mkdir -p "$IT_TMP/node"
    it_own "$IT_TMP/node"
fi
IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "PARLEY_JWT_SECRET=$SECRET"
    echo "PARLEY_COALESCE_MS=5"
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "WEBSOCKET_MAX_CONNECTIONS=4000"
    [ "$SOAK_PG" = 1 ] && echo "PARLEY_NODE_PREFIX=$IT_TMP/node/parley"
} >"$IT_APP_CONFIG"
chmod 640 "$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

# The shipped snippets, as lib.sh's it_subst fills them, plus the soak's
# limits: parley.fcgi's --threads, lighttpd's descriptors and connections.
it_subst() {
    it_subst_shipped "$1" "$2"
    case $1 in
    */parley-fcgi.service)
        sed -i "s/--threads [0-9]*/--threads $SOAK_THREADS/" "$2" ;;
    */lighttpd-parley.conf)
        sed -i "s/--threads [0-9]*/--threads $SOAK_THREADS/" "$2"
        {
            echo ""
            echo "# bench/soak.sh: limits for ~1,200 concurrent clients (bench/README.md)"
            echo "server.max-fds = 16384"
            echo "server.max-connections = 8192"
        } >>"$2" ;;
    esac
}
BENCH_APACHE_WORKERS=$((N_ALL + 256))
BENCH_APACHE_ONE_CHILD=1

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
"start_$SOAK_SERVER" "$BUILD/parley.fcgi"
WEB_PID=$IT_LAST_PID
# parley.fcgi exists once a request reached it (lighttpd starts it at once;
# the external server of mod_proxy_fcgi runs already)
curl -s -o /dev/null -m 10 "$BASE/api/health" || true
APP_PIDS=$(app_pids | tr '\n' ' ')

OUT=$IT_TMP/out
mkdir -p "$OUT"
SAMPLES=$OUT/samples.tsv
DB_FILE=""
[ "$SOAK_PG" = 1 ] || DB_FILE=$IT_TMP/data/parley.db

# sample PHASE — one line per server process: t phase role pid rss_kb threads fds sockets files other cpu_ticks
T0=$(date +%s)
web_pids() { echo "$WEB_PID"; pgrep -P "$WEB_PID" 2>/dev/null | grep -vxF "$(app_pids)" || true; }
sample() {
    _t=$(($(date +%s) - T0))
    {
        echo "bridge $BRIDGE_PID"
        for _p in $(app_pids); do echo "parley.fcgi $_p"; done
        for _p in $(web_pids | sort -u); do echo "$SOAK_SERVER $_p"; done
        for _p in $CPIDS; do pgrep -P "$_p" 2>/dev/null | sed 's/^/clients /'; done
    } | while read -r _role _p; do
        _rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$_p/status" 2>/dev/null)
        _thr=$(awk '/^Threads:/ { print $2 }' "/proc/$_p/status" 2>/dev/null)
        # descriptors: all, sockets, regular files (the database's), others
        _fds=$(find "/proc/$_p/fd" -mindepth 1 -maxdepth 1 -printf '%l\n' 2>/dev/null |
            awk '{ n++ } /^socket:/ { s++; next } /^\// { f++; next } END { printf "%d\t%d\t%d\t%d", n, s, f, n - s - f }')
        _cpu=$(sed 's/^.*) //' "/proc/$_p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        [ -n "$_rss" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$_t" "$1" "$_role" "$_p" "$_rss" "$_thr" "$_fds" "$_cpu"
    done >>"$SAMPLES"
    [ -n "$DB_FILE" ] && printf '%s\t%s\t%s\n' "$_t" "$1" "$(stat -c %s "$DB_FILE-wal" 2>/dev/null || echo 0)" >>"$OUT/wal.tsv"
    return 0
}
CPIDS=""
printf 't\tphase\trole\tpid\trss_kb\tthreads\tfds\tsockets\tfiles\tother\tcpu_ticks\n' >"$SAMPLES"
sample start

PGV=""
[ "$SOAK_PG" = 1 ] && PGV=", PostgreSQL $("$PG_BIN/postgres" --version | sed 's/.* //')"
bench_machine "Soak (\`bench/soak.sh\`)" "node $(node --version)$PGV" \
    "SOAK_S=$SOAK_S SOAK_SCALE=$SOAK_SCALE SOAK_SERVER=$SOAK_SERVER SOAK_PG=$SOAK_PG BUILD=$(basename "$BUILD") bench/soak.sh"
echo "- Servers: $SOAK_SERVER (shipped snippet) in front of parley.fcgi --threads $SOAK_THREADS and parley-ws;" \
     "storage $([ "$SOAK_PG" = 1 ] && echo "PostgreSQL 15 (private cluster, fsync off)" || echo SQLite);" \
     "$([ "$SANITIZED" = 1 ] && echo "SANITIZED build (ASan+UBSan)" || echo "unsanitized build"); open files limit $(ulimit -n)."
echo "- Clients: $N_ALL — WebSocket tickets $N_WS_TICKET, chats $N_WS_CHAT, brand chats $N_WS_BRAND;" \
     "long-poll tickets $N_POLL_TICKET, chats $N_POLL_CHAT, brand chats $N_POLL_BRAND; SSE $N_SSE;" \
     "Phoenix WebSocket $N_PHX_WS, LongPoll $N_PHX_LP. Options: $(echo $CLIENT_OPTS)."
echo

# The clients: four Node processes (the work spread over the cores).
SLOW=1
[ "$SANITIZED" = 1 ] && SLOW=3
client() { # name options...
    _n=$1; shift
    # shellcheck disable=SC2086
    timeout -s TERM $((SOAK_S + 240)) node bench/soak-clients.mjs --base "$BASE" --secret "$SECRET" \
        --tag "$RUN$_n" --slow "$SLOW" --out "$OUT/clients-$_n.json" $CLIENT_OPTS "$@" \
        >"$OUT/clients-$_n.log" 2>&1 &
    CPIDS="$CPIDS $!"
    IT_PIDS="$IT_PIDS $!"
}
client a --ws-ticket "$N_WS_TICKET"
client b --ws-chat "$N_WS_CHAT"
client c --ws-brand "$N_WS_BRAND" --poll-ticket "$N_POLL_TICKET" --poll-chat "$N_POLL_CHAT" \
    --poll-brand "$N_POLL_BRAND"
client d --sse "$N_SSE" --phx-ws "$N_PHX_WS" --phx-lp "$N_PHX_LP"

# Sample every SOAK_SAMPLE_S seconds while the clients run.
running() { for _p in $CPIDS; do it_alive "$_p" && return 0; done; return 1; }
next=$SOAK_SAMPLE_S
while running; do
    sleep 1
    if [ $(($(date +%s) - T0)) -ge "$next" ]; then
        sample load
        next=$((next + SOAK_SAMPLE_S))
    fi
done
for _p in $CPIDS; do wait "$_p" 2>/dev/null; done
sample load-end
T_LOAD=$(($(date +%s) - T0))

# Settle: the last generations end, connections close.
jobs_running() {
    if [ "$SOAK_PG" = 1 ]; then
        it_pg_sql "SELECT count(*) FROM jobs WHERE state = 'running'" 2>/dev/null
    else
        # shellcheck disable=SC2086
        $AS_APP sqlite3 -cmd '.timeout 5000' "$DB_FILE" "SELECT count(*) FROM jobs WHERE state = 'running'" 2>/dev/null
    fi
}
_i=0
while [ $_i -lt 60 ]; do
    [ "$(jobs_running)" = 0 ] && break
    sleep 1; _i=$((_i + 1))
done
sleep 10
sample end
# what the server processes still have connected (their state, for the report)
for _p in $BRIDGE_PID $(app_pids) $(web_pids | sort -u); do
    ss -Htanp 2>/dev/null | grep "pid=$_p," | awk -v p="$_p" '{ print p, $1, $4, $5 }'
done >"$OUT/sockets-end.txt"
# One more question on each generating process (the bridge: a WebSocket
# ticket; parley.fcgi: a long-poll ticket and an SSE answer): libcurl closes
# the upstream connections its cache kept (CLOSE-WAIT once the upstream
# closed them, idle) at the next request. Then the descriptors again.
timeout 60 node bench/soak-clients.mjs --base "$BASE" --secret "$SECRET" --tag "${RUN}p" --slow "$SLOW" \
    --out "$OUT/probe.json" --seconds 2 --ramp 0 --think-min 0 --think-max 0 --tokens-min 3 --tokens-max 3 \
    --ws-ticket 1 --poll-ticket 1 --sse 1 >"$OUT/probe.log" 2>&1
sleep 2
sample probe
for _p in $BRIDGE_PID $(app_pids) $(web_pids | sort -u); do
    ss -Htanp 2>/dev/null | grep "pid=$_p," | awk -v p="$_p" '{ print p, $1, $4, $5 }'
done >"$OUT/sockets-probe.txt"

# The database.
INFO=$OUT/info.json
if [ "$SOAK_PG" = 1 ]; then
    WAL_BYTES=$(it_pg_sql "SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()" 2>/dev/null)
    DB_BYTES=$(it_pg_sql "SELECT pg_database_size('parley')" 2>/dev/null)
    CHECK=$(it_pg_sql "SELECT count(*) FROM jobs" >/dev/null 2>&1 && echo ok || echo "query failed")
    POLL_LEFT=$(it_pg_sql "SELECT count(*) FROM poll_sessions" 2>/dev/null)
    EVENTS=$(it_pg_sql "SELECT count(*) FROM events" 2>/dev/null)
else
    WAL_BYTES=$(stat -c %s "$DB_FILE-wal" 2>/dev/null || echo 0)
    DB_BYTES=$(stat -c %s "$DB_FILE" 2>/dev/null || echo 0)
    # shellcheck disable=SC2086
    CHECK=$($AS_APP sqlite3 -cmd '.timeout 10000' "$DB_FILE" 'PRAGMA quick_check' 2>&1 | head -n 3 | tr '\n' ' ' | sed 's/ $//')
    # shellcheck disable=SC2086
    POLL_LEFT=$($AS_APP sqlite3 -cmd '.timeout 5000' "$DB_FILE" 'SELECT count(*) FROM poll_sessions' 2>/dev/null)
    # shellcheck disable=SC2086
    EVENTS=$($AS_APP sqlite3 -cmd '.timeout 5000' "$DB_FILE" 'SELECT count(*) FROM events' 2>/dev/null)
fi
JOBS_LEFT=$(jobs_running)
ALIVE=""
for _p in $BRIDGE_PID $WEB_PID; do it_alive "$_p" || ALIVE="$ALIVE $_p"; done
cat >"$INFO" <<EOF_INFO
{"soak_s": $SOAK_S, "upstream_port": "${FAKE_LLM_URL##*:}", "load_s": $T_LOAD, "warmup_s": $SOAK_WARMUP_S, "sample_s": $SOAK_SAMPLE_S,
 "pg": $([ "$SOAK_PG" = 1 ] && echo true || echo false), "server": "$SOAK_SERVER",
 "wal_bytes": ${WAL_BYTES:-null}, "db_bytes": ${DB_BYTES:-null}, "integrity": "$CHECK",
 "jobs_running": ${JOBS_LEFT:-null}, "poll_sessions_left": ${POLL_LEFT:-null}, "events_left": ${EVENTS:-null},
 "app_pids_at_start": "$APP_PIDS", "dead": "$ALIVE",
 "clients_expected": {"ws-ticket": $N_WS_TICKET, "ws-chat": $N_WS_CHAT, "ws-brand": $N_WS_BRAND,
   "poll-ticket": $N_POLL_TICKET, "poll-chat": $N_POLL_CHAT, "poll-brand": $N_POLL_BRAND,
   "sse": $N_SSE, "phx-ws": $N_PHX_WS, "phx-lp": $N_PHX_LP}}
EOF_INFO
node bench/soak-report.mjs "$OUT"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo
    echo "Logs (last lines):"
    echo
    echo '```'
    for _f in "$OUT"/clients-*.log "$BRIDGE_DIR/parley-ws.log" "$SETUP_DIR"/logs/*; do
        [ -s "$_f" ] && tail -n 8 "$_f" | sed "s|^|$(basename "$_f"): |"
    done
    echo '```'
fi
[ "${SOAK_KEEP:-0}" = 1 ] && IT_KEEP=1
exit $rc
