#!/bin/sh
# ws-run.sh — the WebSocket bridge benchmarks; prints Markdown for
# docs/PERFORMANCE.md (machine, date, command, then the tables).
#
#   bench/ws-run.sh                  (BUILD=build-x bench/ws-run.sh for another build)
#   QUICK=1 bench/ws-run.sh          1,000 idle connections and lighter fan-out
#   FANOUT_ONLY=1                    skip the idle-connection rows
#   PAIRS="1 1000 200 1000,100 10 3000 15000"
#                                    fan-out setups (channels subs rate count, comma-separated)
#   BASE_BIN=path/to/parley-ws       also run this bridge binary on each setup, row
#                                    "parley (base)" (e.g. one built from an older commit)
#
# 1. Idle connections: RSS of parley-ws per idle WebSocket (bench/ws-idle.mjs).
# 2. Fan-out: one channel to 1,000 subscribers and 100 channels x 10, at
#    the same publish rates through parley-ws and through Nchan
#    (nginx + libnginx-mod-nchan on loopback, temporary config), frames
#    delivered per second and append -> receive latency (bench/ws-fanout.mjs).
# Installs nginx-light and libnginx-mod-nchan with apt-get when missing
# (root only; otherwise the Nchan rows are skipped). Raises `ulimit -n`.
# Bounded: every step runs under timeout(1); about 3 minutes on 2 cores.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT INT TERM

if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley-ws" "$BUILD/bench/ws-pub" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "bench/ws-run.sh: build failed" >&2
    exit 1
fi
[ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error >"$LOG" 2>&1
NCHAN=1
if [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! command -v nginx >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            nginx-light libnginx-mod-nchan >"$LOG" 2>&1 || NCHAN=0
    else
        NCHAN=0
    fi
fi
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "## WebSocket bridge (\`bench/ws-run.sh\`)"
echo
echo "- Date: $(date '+%Y-%m-%d %H:%M %Z')"
echo "- CPU: ${cpu:-unknown}, $(nproc) cores online; RAM: $mem; kernel $(uname -sr)"
echo "- libwebsockets $(pkg-config --modversion libwebsockets 2>/dev/null); node $(node --version);" \
     "nginx $(nginx -v 2>&1 | sed 's/.*\///'); nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo none)"
echo "- Command: \`BUILD=$BUILD bench/ws-run.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'));" \
     "clients and servers share the machine's cores"
echo "- Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

rc=0
N=10000
[ "${QUICK:-0}" = 1 ] && N=1000
if [ "${FANOUT_ONLY:-0}" != 1 ]; then
echo "### Idle connections (\`node bench/ws-idle.mjs --conns $N\`)"
echo
echo "| connections asked | open | failed | RSS before | RSS after | RSS per connection | time |"
echo "|---|---|---|---|---|---|---|"
timeout 150 node bench/ws-idle.mjs --conns "$N" 2>/dev/null || rc=1
timeout 150 node bench/ws-idle.mjs --conns "$N" --path /ws/ 2>/dev/null || rc=1
echo
echo "First row: seed 000 ticket connections (no message sent); second: seed 001"
echo "sessions (\`/ws/<id>\`: a conversation row and the \"connected\" frame each)."
echo
fi

echo "### Fan-out (\`node bench/ws-fanout.mjs\`)"
echo
echo "| server | channels × subscribers | publish rate × messages | body | frames received | frames/s | p50 | p99 | max | server CPU per frame |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run_pair() { # channels subs rate count
    if [ -n "${BASE_BIN:-}" ]; then
        timeout 120 node bench/ws-fanout.mjs --server parley --bin "$BASE_BIN" --label "parley (base)" \
            --channels "$1" --subs "$2" --rate "$3" --count "$4" --size 64 || rc=1
    fi
    for s in parley nchan; do
        [ "$s" = nchan ] && [ "$NCHAN" = 0 ] && { echo "| nchan | (not installed) | | | | | | | | |"; continue; }
        timeout 120 node bench/ws-fanout.mjs --server "$s" --channels "$1" --subs "$2" \
            --rate "$3" --count "$4" --size 64 || rc=1
    done
}
if [ -n "${PAIRS:-}" ]; then
    oifs=$IFS
    IFS=,
    for setup in $PAIRS; do
        IFS=$oifs
        # shellcheck disable=SC2086
        run_pair $setup
        echo "load average after $setup: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    done
    IFS=$oifs
elif [ "${QUICK:-0}" = 1 ]; then
    run_pair 1 200 50 100
    run_pair 20 10 200 1000
else
    run_pair 1 1000 50 250
    run_pair 1 1000 200 1000
    run_pair 100 10 1000 5000
    run_pair 100 10 3000 15000
fi
exit $rc
