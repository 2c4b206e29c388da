#!/bin/sh
# pg-evlog.sh — event-log append on PostgreSQL vs a bare libpq loop, with
# the SQLite figures beside (bench/pg-evlog.c); prints Markdown for
# docs/PERFORMANCE.md.
#
#   bench/pg-evlog.sh                      2 s per run, 3 repetitions (~2.5 min)
#   SECS=1 REPS=1 bench/pg-evlog.sh        a quick look
#   BUILD=build-perf bench/pg-evlog.sh     another build directory (unsanitized)
#
# Starts a private PostgreSQL 15 with tests/integration/lib.sh's it_postgres
# (127.0.0.1 only, a free port, fsync and synchronous_commit off as the
# tests run it — say so next to the numbers), runs the bench against a
# database of its own, stops the server (it_cleanup). Bounded: the bench
# runs under timeout(1).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
SECS=${SECS:-2}
REPS=${REPS:-3}
LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/bench/pg-evlog" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/pg-evlog.sh: build failed" >&2
    exit 1
fi
rm -f "$LOG"
. tests/integration/lib.sh
set +e
it_init
it_postgres
it_pg_sql "CREATE DATABASE bench_evlog" -d postgres >/dev/null || it_die "CREATE DATABASE bench_evlog failed"
URI=postgresql://parley@127.0.0.1:$PG_PORT/bench_evlog

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
echo "## Machine"
echo
echo "- Date: $(date '+%Y-%m-%d %H:%M %Z')"
echo "- CPU: ${cpu:-unknown}, $(nproc) cores online"
echo "- PostgreSQL: $("$PG_BIN/postgres" --version) (it_postgres: loopback TCP, fsync=off, synchronous_commit=off); libpq $(pkg-config --modversion libpq 2>/dev/null); SQLite $(pkg-config --modversion sqlite3 2>/dev/null)"
echo "- Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- Command: \`BUILD=$BUILD SECS=$SECS REPS=$REPS bench/pg-evlog.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo
# 4 series x 4 modes x REPS runs of SECS, plus set-up: bounded generously
limit=$(awk -v s="$SECS" -v r="$REPS" 'BEGIN { printf "%d", 16 * r * (s + 3) + 60 }')
timeout "$limit" "$BUILD/bench/pg-evlog" "$URI" "$SECS" "$REPS"
rc=$?
[ $rc = 0 ] || echo "bench/pg-evlog.sh: pg-evlog failed or timed out (status $rc)" >&2
exit $rc
