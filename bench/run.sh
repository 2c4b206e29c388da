#!/bin/sh
# run.sh — build and run Parley's benchmarks; prints Markdown for docs/PERFORMANCE.md.
#
#   bench/run.sh                 (or: make bench)
#   BUILD=build-x bench/run.sh   use another build directory
#
# Bounded: each benchmark runs under timeout(1); the whole script takes about
# a minute on 2 cores (bench_bell ~10 s, bench_evlog ~55 s).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT INT TERM

if ! make --no-print-directory BUILD="$BUILD" "$BUILD/bench/bench_bell" \
        "$BUILD/bench/bench_evlog" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "bench/run.sh: build failed" >&2
    exit 1
fi

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
sqlite=$(pkg-config --modversion sqlite3 2>/dev/null || echo unknown)

echo "## Machine"
echo
echo "- Date: $(date '+%Y-%m-%d %H:%M %Z')"
echo "- CPU: ${cpu:-unknown}, $(nproc) cores online"
echo "- RAM: $mem"
echo "- Kernel: $(uname -sr)"
echo "- SQLite: $sqlite; compiler: $(${CC:-cc} --version | head -n 1)"
echo "- Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- Command: \`BUILD=$BUILD bench/run.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo

rc=0
echo "## Doorbell (\`$BUILD/bench/bench_bell\`)"
echo
timeout 40 "$BUILD/bench/bench_bell" || { echo "bench_bell failed or timed out" >&2; rc=1; }
echo
echo "## Event log (\`$BUILD/bench/bench_evlog 2 3\`)"
echo
timeout 80 "$BUILD/bench/bench_evlog" 2 3 || { echo "bench_evlog failed or timed out" >&2; rc=1; }
exit $rc
