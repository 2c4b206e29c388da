#!/bin/sh
# pg-fanout.sh — WebSocket fan-out with the subscribers split over two nodes
# vs one node, on PostgreSQL, with SQLite beside (bench/ws-fanout.mjs);
# prints Markdown for docs/PERFORMANCE.md (machine, date, commit, the table,
# then the ratios of the same run).
#
#   bench/pg-fanout.sh                     the four setups below, 3 rows each (~2–3 min)
#   PAIRS="1 1000 200 1000" bench/pg-fanout.sh
#                                          other setups (channels subs rate count, comma-separated)
#   BUILD=build-perf bench/pg-fanout.sh    another build directory (unsanitized)
#
# For each setup (ws-run.sh's fan-out setups: 1 channel × 1,000 subscribers
# at 50/s × 250 and 200/s × 1,000; 100 channels × 10 at 1,000/s × 5,000 and
# 3,000/s × 15,000; 64-byte bodies) three rows, in this order:
#   SQLite, 1 bridge         a fresh SQLite file, the file doorbell;
#   PostgreSQL, 1 bridge     PARLEY_DB = a private PostgreSQL, LISTEN/NOTIFY;
#   PostgreSQL, 2 bridges    two parley-ws processes ("nodes", each its own
#                            PARLEY_NODE_PREFIX) on that PostgreSQL; each
#                            channel's subscribers split evenly between them,
#                            so every append is read by both nodes.
# The publisher is build/bench/ws-pub (evlog_append like a generation, its
# doorbell from bell_open_db). The CPU column sums the bridges; the details
# list each bridge's share and PostgreSQL's (postmaster and every backend,
# ws-pub's included) over the same window.
#
# Starts a private PostgreSQL 15 with tests/integration/lib.sh's it_postgres
# (127.0.0.1 only, a free port, fsync and synchronous_commit off as the tests
# run it — say so next to the numbers), a database of its own; the bridges
# listen on 127.0.0.1 ports the kernel picks. Everything it starts runs from
# its temporary directory and is stopped at exit (it_cleanup: the programs by
# pid, then the server). Bounded: each row runs under timeout(1).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
PAIRS=${PAIRS:-"1 1000 50 250,1 1000 200 1000,100 10 1000 5000,100 10 3000 15000"}
LOG=$(mktemp)
if ! make --no-print-directory BUILD="$BUILD" "$BUILD/parley-ws" "$BUILD/bench/ws-pub" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/pg-fanout.sh: build failed" >&2
    exit 1
fi
if [ ! -d node_modules/ws ] && ! npm ci --no-audit --no-fund --loglevel=error >"$LOG" 2>&1; then
    cat "$LOG" >&2
    rm -f "$LOG"
    echo "bench/pg-fanout.sh: npm ci failed (the ws package is needed)" >&2
    exit 1
fi
rm -f "$LOG"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
COMMAND="BUILD=$BUILD bench/pg-fanout.sh"
[ "$PAIRS" != "1 1000 50 250,1 1000 200 1000,100 10 1000 5000,100 10 3000 15000" ] &&
    COMMAND="PAIRS=\"$PAIRS\" $COMMAND"
REPO_BUILD=$BUILD

. tests/integration/lib.sh
set +e
it_init
it_postgres
it_pg_sql "CREATE DATABASE bench_fanout" -d postgres >/dev/null || it_die "CREATE DATABASE bench_fanout failed"
URI=postgresql://parley@127.0.0.1:$PG_PORT/bench_fanout

# The programs run from the temporary directory, so that it_cleanup finds and
# stops any a timed-out run left behind (it_orphans: executables under IT_TMP).
BIN=$IT_TMP/bin
mkdir -p "$BIN/bench" || it_die "mkdir $BIN"
cp "$REPO_BUILD/parley-ws" "$BIN/parley-ws" && cp "$REPO_BUILD/bench/ws-pub" "$BIN/bench/ws-pub" ||
    it_die "copying the programs to $BIN failed"
ROWS=$IT_TMP/rows.md
DETAILS=$IT_TMP/details.md
: >"$ROWS"
: >"$DETAILS"

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
echo "## WebSocket fan-out, one node vs two on PostgreSQL (\`bench/pg-fanout.sh\`)"
echo
echo "- Date: $(date '+%Y-%m-%d %H:%M %Z')"
echo "- CPU: ${cpu:-unknown}, $(nproc) cores online; RAM: $mem; kernel $(uname -sr)"
echo "- PostgreSQL: $("$PG_BIN/postgres" --version) (it_postgres: loopback TCP, fsync=off, synchronous_commit=off); libpq $(pkg-config --modversion libpq 2>/dev/null); SQLite $(pkg-config --modversion sqlite3 2>/dev/null); libwebsockets $(pkg-config --modversion libwebsockets 2>/dev/null); node $(node --version)"
echo "- Command: \`$COMMAND\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'));" \
     "clients, bridges, publisher and PostgreSQL share the machine's cores"
echo "- Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

rc=0
run_row() { # label db bridges channels subs rate count
    _label=$1 _db=$2 _nb=$3
    shift 3
    # publishing takes count/rate s; connecting, draining and stopping add < 60 s
    _limit=$(awk -v r="$3" -v c="$4" 'BEGIN { printf "%d", c / r + 75 }')
    set -- --server parley --label "$_label" --bridges "$_nb" --channels "$1" --subs "$2" \
        --rate "$3" --count "$4" --size 64 --details "$DETAILS"
    [ "$_db" = sqlite ] || set -- "$@" --db "$URI" --db-pid "$PG_PID"
    _out=$(BUILD=$BIN timeout "$_limit" node bench/ws-fanout.mjs "$@")
    _st=$?
    if [ -n "$_out" ]; then
        echo "$_out" | tee -a "$ROWS"
    else
        echo "| $_label | $1 × $2 | $3/s × $4 | 64 B | (failed, status $_st) | | | | | |"
    fi
    [ "$_st" = 0 ] || { rc=1; echo "bench/pg-fanout.sh: $_label, $*: status $_st" >&2; }
}

echo "### Fan-out (\`node bench/ws-fanout.mjs\`, publisher \`ws-pub\`)"
echo
echo "| setup | channels × subscribers | publish rate × messages | body | frames received | frames/s | p50 | p99 | max | bridge CPU per frame |"
echo "|---|---|---|---|---|---|---|---|---|---|"
oifs=$IFS
IFS=,
for setup in $PAIRS; do
    IFS=$oifs
    # shellcheck disable=SC2086
    set -- $setup
    [ $# = 4 ] || it_die "PAIRS: \"$setup\" is not \"channels subs rate count\""
    run_row "SQLite, 1 bridge" sqlite 1 "$@"
    run_row "PostgreSQL, 1 bridge" pg 1 "$@"
    run_row "PostgreSQL, 2 bridges" pg 2 "$@"
    echo "load average after $setup: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
IFS=$oifs

echo
echo "Latency: append (ws-pub's clock, before its transaction) → the subscriber has"
echo "the frame. Frames/s is bounded by the publish rate × the subscribers per"
echo "channel when delivery keeps up. \"bridge CPU per frame\": user + system time"
echo "of the bridge process(es), summed, over the publish window, per frame delivered."
echo
echo "Each row's CPU per frame of each bridge and of PostgreSQL (postmaster and every"
echo "backend; also per message, its work being per append), and what the publisher"
echo "said (a time above count / rate: it fell behind the rate asked):"
echo
cat "$DETAILS"
echo
echo "### Ratios (same run)"
echo
echo "| channels × subscribers | publish rate × messages | PostgreSQL 1 bridge / SQLite: CPU per frame | p50 | p99 | PostgreSQL 2 bridges / 1 bridge: CPU per frame | p50 | p99 |"
echo "|---|---|---|---|---|---|---|---|"
awk -F'|' '
    function num(s) { gsub(/[^0-9.]/, "", s); return s + 0 }
    function trim(s) { gsub(/^ +| +$/, "", s); return s }
    function ratio(a, b) { return (b > 0 && a > 0) ? sprintf("%.2f", a / b) : "–" }
    {
        label = trim($2); key = trim($3) SUBSEP trim($4)
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        cpu[key, label] = num($11); p50[key, label] = num($8); p99[key, label] = num($9)
    }
    END {
        s = "SQLite, 1 bridge"; p = "PostgreSQL, 1 bridge"; q = "PostgreSQL, 2 bridges"
        for (i = 1; i <= n; i++) {
            k = order[i]; split(k, kk, SUBSEP)
            printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", kk[1], kk[2],
                ratio(cpu[k, p], cpu[k, s]), ratio(p50[k, p], p50[k, s]), ratio(p99[k, p], p99[k, s]),
                ratio(cpu[k, q], cpu[k, p]), ratio(p50[k, q], p50[k, p]), ratio(p99[k, q], p99[k, p])
        }
    }' "$ROWS"
echo
echo "A ratio above 1 costs more than what it is compared with (CPU is the bridges'"
echo "sum: with two nodes each append is read by both, each frame sent by one)."
[ $rc = 0 ] || echo "bench/pg-fanout.sh: a row failed or timed out" >&2
exit $rc
