#!/bin/sh
# run.sh — run every Parley test suite and print "N passed, N failed".
#
#   tests/run.sh          all suites
#   tests/run.sh unit     only the C unit tests
#   tests/run.sh WORD     only the suites (unit, integration, node) whose
#                         name contains WORD, e.g. t0600 or phoenix
#
# Every test program prints TAP lines ("ok N - name" / "not ok N - name";
# "ok N - name # SKIP why" is counted as skipped, not passed);
# a program that exits non-zero without a "not ok" line counts as one failure,
# so a crash can never pass. Output of each program goes to build/test-logs/.
#
# TEST_JOBS=N (default 1; make test sets 2) runs the integration and node
# suites N at a time in N lanes (the unit tests stay one after the other),
# each lane with a simulated LLM of its own (a suite reads its request log
# and may change its global knobs); the results are printed in the usual
# order, one block per suite (its own seconds), and counted as usual. Suites listed in TEST_ALONE run
# with no other suite beside them; by default t0400-valgrind and
# t0410-valgrind-bridge (valgrind's pace; both build $BUILD-vg),
# t0500-concurrent (N generations must all run at once) and
# t0610-phoenix-browser (its long run wants every Phoenix heartbeat, sent
# every 5 s, answered before the next one).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
LOGS=$BUILD/test-logs
mkdir -p "$LOGS"
want=${1:-all}
JOBS=${TEST_JOBS:-1}
case $JOBS in [1-9]) ;; *) echo "TEST_JOBS must be 1 to 9 (got '$JOBS')" >&2; exit 2 ;; esac
ALONE=${TEST_ALONE-t0400-valgrind t0410-valgrind-bridge t0500-concurrent t0610-phoenix-browser}
pass=0 fail=0 skip=0 failed_names=""

# report NAME RC SECONDS — counts the results in NAME's log, prints its line.
report() {
    _rn=$1 _rrc=$2
    _rlog=$LOGS/$_rn.log
    p=$(grep -cE '^ok [0-9]+' "$_rlog")
    f=$(grep -cE '^not ok [0-9]+' "$_rlog")
    s=$(grep -cE '^ok [0-9]+.*# *SKIP' "$_rlog")
    p=$((p - s))
    if [ "$_rrc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1; echo "not ok - $_rn exited with status $_rrc" >>"$_rlog"
    fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
        f=1; echo "not ok - $_rn ran no test" >>"$_rlog"
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    printf '%-28s %3d passed, %d failed%s  (%ss)\n' "$_rn" "$p" "$f" \
        "$([ "$s" -gt 0 ] && echo ", $s skipped")" "$3"
    if [ "$f" -ne 0 ]; then
        failed_names="$failed_names $_rn"
        grep -E '^(not ok|#)' "$_rlog" | head -n 40 | sed 's/^/    /'
        tail -n 15 "$_rlog" | sed 's/^/    | /'
    fi
}

run_one() { # name, command...
    name=$1; shift
    start=$(date +%s)
    "$@" >"$LOGS/$name.log" 2>&1
    report "$name" $? "$(( $(date +%s) - start ))"
}

# The simulated LLM, shared by the suites that need an upstream: one, or
# one per lane with TEST_JOBS (FAKE_URL_<lane>; FAKE_PIDS to stop them).
FAKE_PIDS=""
start_fake_llm() { # lane
    portfile=$(mktemp)
    node tests/fake-llm/server.mjs --port 0 --port-file "$portfile" >"$LOGS/fake-llm${1#0}.log" 2>&1 &
    FAKE_PIDS="$FAKE_PIDS $!"
    i=0
    while [ ! -s "$portfile" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    eval "FAKE_URL_$1=\"http://127.0.0.1:\$(cat \"\$portfile\")\""
    rm -f "$portfile"
}
cleanup() { for _p in $FAKE_PIDS; do kill "$_p" 2>/dev/null; done; }
trap cleanup EXIT INT TERM

if [ -f tests/fake-llm/server.mjs ]; then
    start_fake_llm 0
    FAKE_LLM_URL=$FAKE_URL_0
    export FAKE_LLM_URL
fi

# picked NAME — whether suite NAME runs (the argument: all, unit, a WORD)
picked() {
    case $want in all) return 0 ;; unit) case $1 in test_*) return 0 ;; esac; return 1 ;; esac
    case $1 in *"$want"*) return 0 ;; esac
    return 1
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    picked "$(basename "$t")" || continue
    run_one "$(basename "$t")" "$t"
done

if [ "$want" != unit ] && [ "$JOBS" -eq 1 ]; then
    for t in tests/integration/t[0-9]*.sh; do
        [ -f "$t" ] || continue
        picked "$(basename "$t" .sh)" || continue
        run_one "$(basename "$t" .sh)" sh "$t"
    done
    for t in tests/node/*.test.mjs; do
        [ -f "$t" ] || continue
        picked "$(basename "$t" .test.mjs)" || continue
        run_one "$(basename "$t" .test.mjs)" node --test --test-reporter=tap "$t"
    done
elif [ "$want" != unit ]; then
    # The suites in the usual order: S_NAME_<i>, S_CMD_<i> (a command
    # line: the paths have no spaces); n of them.
    n=0
    for t in tests/integration/t[0-9]*.sh tests/node/*.test.mjs; do
        [ -f "$t" ] || continue
        case $t in *.sh) _n=$(basename "$t" .sh) ;; *) _n=$(basename "$t" .test.mjs) ;; esac
        picked "$_n" || continue
        case $t in
        *.sh) eval "S_NAME_$n=\$(basename \"\$t\" .sh) S_CMD_$n=\"sh \$t\"" ;;
        *) eval "S_NAME_$n=\$(basename \"\$t\" .test.mjs) S_CMD_$n=\"node --test --test-reporter=tap \$t\"" ;;
        esac
        n=$((n + 1))
    done
    # Lanes 0..JOBS-1, each with its simulated LLM: LANE_<k> is the index
    # of the suite it runs, empty when free. Suite i writes its exit
    # status and seconds to $LOGS/.done.<i> when it ends; the results are
    # reported in order as they come (NEXT: the next one to report).
    k=1
    while [ $k -lt "$JOBS" ]; do start_fake_llm $k; k=$((k + 1)); done
    k=0
    while [ $k -lt "$JOBS" ]; do eval "LANE_$k="; k=$((k + 1)); done
    rm -f "$LOGS"/.done.*
    NEXT=0 PIDS=""
    report_done() {
        while [ "$NEXT" -lt "$n" ] && [ -f "$LOGS/.done.$NEXT" ]; do
            read -r _rc _secs <"$LOGS/.done.$NEXT"
            eval "_nm=\$S_NAME_$NEXT"
            report "$_nm" "$_rc" "$_secs"
            NEXT=$((NEXT + 1))
        done
    }
    # update_lanes — frees the lanes whose suite ended; BUSY, FREE (a free lane)
    update_lanes() {
        BUSY=0 FREE="" _k=0
        while [ $_k -lt "$JOBS" ]; do
            eval "_j=\$LANE_$_k"
            if [ -n "$_j" ] && [ -f "$LOGS/.done.$_j" ]; then eval "LANE_$_k="; _j=""; fi
            if [ -n "$_j" ]; then BUSY=$((BUSY + 1)); elif [ -z "$FREE" ]; then FREE=$_k; fi
            _k=$((_k + 1))
        done
    }
    is_alone() { case " $ALONE " in *" $1 "*) return 0 ;; esac; return 1; }
    i=0 alone=""
    while [ $i -lt "$n" ]; do
        eval "name=\$S_NAME_$i cmd=\$S_CMD_$i"
        # a suite of TEST_ALONE starts when every lane is free; the others
        # when one is (and none runs a suite of TEST_ALONE)
        if is_alone "$name"; then limit=0; else limit=$((JOBS - 1)); fi
        while :; do
            update_lanes
            report_done
            [ "$BUSY" -le "$limit" ] && { [ -z "$alone" ] || [ -f "$LOGS/.done.$alone" ]; } && break
            sleep 0.2
        done
        eval "url=\$FAKE_URL_$FREE"
        (
            FAKE_LLM_URL=$url
            export FAKE_LLM_URL
            start=$(date +%s)
            # shellcheck disable=SC2086
            $cmd >"$LOGS/$name.log" 2>&1 </dev/null
            echo "$? $(( $(date +%s) - start ))" >"$LOGS/.done.$i.tmp"
            mv "$LOGS/.done.$i.tmp" "$LOGS/.done.$i"
        ) &
        PIDS="$PIDS $!"
        eval "LANE_$FREE=$i"
        if is_alone "$name"; then alone=$i; else alone=""; fi
        i=$((i + 1))
    done
    for _p in $PIDS; do wait "$_p"; done
    report_done
    rm -f "$LOGS"/.done.*
fi

[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$pass passed, $fail failed$([ "$skip" -gt 0 ] && echo ", $skip skipped")"
[ "$fail" -eq 0 ]
