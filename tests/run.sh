#!/bin/sh
# run.sh — run every Parley test suite and print "N passed, N failed".
#
#   tests/run.sh          all suites
#   tests/run.sh unit     only the C unit tests
#
# Every test program prints TAP lines ("ok N - name" / "not ok N - name";
# "ok N - name # SKIP why" is counted as skipped, not passed);
# a program that exits non-zero without a "not ok" line counts as one failure,
# so a crash can never pass. Output of each program goes to build/test-logs/.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LOGS=$BUILD/test-logs
mkdir -p "$LOGS"
want=${1:-all}
pass=0 fail=0 skip=0 failed_names=""

run_one() { # name, command...
    name=$1; shift
    log=$LOGS/$name.log
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    p=$(grep -cE '^ok [0-9]+' "$log")
    f=$(grep -cE '^not ok [0-9]+' "$log")
    s=$(grep -cE '^ok [0-9]+.*# *SKIP' "$log")
    p=$((p - s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1; echo "not ok - $name exited with status $rc" >>"$log"
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
        f=1; echo "not ok - $name ran no test" >>"$log"
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    printf '%-28s %3d passed, %d failed%s  (%ss)\n' "$name" "$p" "$f" \
        "$([ "$s" -gt 0 ] && echo ", $s skipped")" "$(( $(date +%s) - start ))"
    if [ "$f" -ne 0 ]; then
        failed_names="$failed_names $name"
        grep -E '^(not ok|#)' "$log" | head -n 40 | sed 's/^/    /'
        tail -n 15 "$log" | sed 's/^/    | /'
    fi
}

# The simulated LLM, shared by the suites that need an upstream.
FAKE_PID=""
start_fake_llm() {
    [ -n "$FAKE_PID" ] && return 0
    portfile=$(mktemp)
    node tests/fake-llm/server.mjs --port 0 --port-file "$portfile" >"$LOGS/fake-llm.log" 2>&1 &
    FAKE_PID=$!
    i=0
    while [ ! -s "$portfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    FAKE_LLM_URL="http://127.0.0.1:$(cat "$portfile")"
    export FAKE_LLM_URL
    rm -f "$portfile"
}
cleanup() { [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null; }
trap cleanup EXIT INT TERM

if [ -f tests/fake-llm/server.mjs ]; then start_fake_llm; fi

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done

if [ "$want" = all ]; then
    for t in tests/integration/t[0-9]*.sh; do
        [ -f "$t" ] || continue
        run_one "$(basename "$t" .sh)" sh "$t"
    done
    for t in tests/node/*.test.mjs; do
        [ -f "$t" ] || continue
        run_one "$(basename "$t" .test.mjs)" node --test --test-reporter=tap "$t"
    done
fi

[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed$([ "$skip" -gt 0 ] && echo ", $skip skipped")"
[ "$fail" -eq 0 ]
