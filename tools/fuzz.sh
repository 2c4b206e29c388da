#!/bin/sh
# fuzz.sh — runs every fuzz harness built by make fuzz-build (or the ones
# named) for FUZZ_S seconds each, one after the other, and prints a table:
# executions, CPU seconds (user + system), coverage (libFuzzer's cov: edges, ft: features),
# corpus size, and what it found.
#
#   FUZZ_BUILD=build-fuzz FUZZ_S=60 tools/fuzz.sh [name...]
#
# The working corpus of each harness is $FUZZ_BUILD/corpus/<name>/ (kept
# between runs), seeded from fuzz/corpus/<name>/ (read only). A crash, leak
# or sanitizer report goes to fuzz/crashes/<name>-<kind>-<sha1>; logs to
# $FUZZ_BUILD/fuzz-logs/<name>.log. Exit status 1 when any harness found
# something (fix it, then keep the input in fuzz/regressions/<name>/).
set -u
cd "$(dirname "$0")/.."
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_S=${FUZZ_S:-60}
# The harnesses' scratch databases (one per input): on a tmpfs when there
# is one, so that SQLite's fsyncs cost nothing (FUZZ_TMPDIR to choose).
if [ -z "${FUZZ_TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then FUZZ_TMPDIR=/dev/shm; fi
[ -n "${FUZZ_TMPDIR:-}" ] && export TMPDIR="$FUZZ_TMPDIR"
names=${*:-$(for f in fuzz/fuzz_*.c; do basename "$f" .c | sed 's/^fuzz_//'; done)}
mkdir -p fuzz/crashes "$FUZZ_BUILD/fuzz-logs"
found=""
# CPU seconds (user + system) used so far by this shell's finished
# children, from the shell's own `times` (no /usr/bin/time needed; run in
# this shell, not in a $(...) subshell, which has children of its own).
cpu_children() {
    times >"$FUZZ_BUILD/fuzz-logs/.times"
    tail -n 1 "$FUZZ_BUILD/fuzz-logs/.times" | awk '{ s = 0; for (i = 1; i <= 2; i++) {
        split($i, t, "m"); sub("s", "", t[2]); s += t[1] * 60 + t[2] } printf "%.2f", s }'
}
printf '%-12s %10s %8s %7s %7s %7s  %s\n' harness execs cpu_s cov ft corpus result
for n in $names; do
    bin=$FUZZ_BUILD/fuzz/fuzz_$n
    [ -x "$bin" ] || { echo "fuzz.sh: $bin is not built (make fuzz-build)" >&2; exit 2; }
    corpus=$FUZZ_BUILD/corpus/$n
    mkdir -p "$corpus"
    log=$FUZZ_BUILD/fuzz-logs/$n.log
    dict=""
    [ -f "fuzz/dict/$n.dict" ] && dict="-dict=fuzz/dict/$n.dict"
    cpu_children >"$log.cpu0"
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$FUZZ_S" -timeout=20 -rss_limit_mb=3072 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="fuzz/crashes/$n-" $dict \
        "$corpus" "fuzz/corpus/$n" >"$log" 2>&1
    rc=$?
    cpu_children >"$log.cpu1"
    cpu=$(awk 'NR == FNR { a = $1; next } { printf "%.0f", $1 - a }' "$log.cpu0" "$log.cpu1")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -aoE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -aoE 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    size=$(find "$corpus" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FOUND (exit $rc): $(grep -a -m1 -oE '(ERROR: [A-Za-z]+: [^ ]+( [^ ]+)?|runtime error: .*|ERROR: libFuzzer: [a-z-]+)' "$log" | head -c 100)"
        found="$found $n"
    fi
    printf '%-12s %10s %8s %7s %7s %7s  %s\n' "$n" "${execs:-?}" "${cpu:-?}" "${cov:-?}" \
        "${ft:-?}" "$size" "$result"
done
if [ -n "$found" ]; then
    echo "fuzz: found something in:$found (fuzz/crashes/, $FUZZ_BUILD/fuzz-logs/)"
    exit 1
fi
echo "fuzz: nothing found"
