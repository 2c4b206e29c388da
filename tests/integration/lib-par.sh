# lib-par.sh — run the TAP steps of an integration test concurrently, their
# output kept grouped per step and numbered in order. Sourced after lib.sh
# (from the repository root, after it_init):
#
#   . tests/integration/lib-par.sh
#   it_par TAG CMD...     runs CMD — a TAP step: ok, it_node_tap, or a
#                         function of the script that prints "ok N - ..." /
#                         "not ok N - ..." and counts with TAP_N/TAP_FAILED —
#                         in a background subshell with counters of its own
#                         and an IT_TMP of its own ($IT_TMP/par.TAG: lib.sh's
#                         it_node_tap names its files after the counter, which
#                         concurrent steps share), its output (stdout and
#                         stderr) in $IT_TMP/par.TAG.out. TAG: one word.
#                         CMD sees the variables as they are at the call: set
#                         BASE, SETUP_DIR, BRIDGE_DIR... for its setup first
#                         (lib.sh's diagnostics read SETUP_DIR and BRIDGE_DIR).
#   it_par_wait           waits for every step it_par started, then prints
#                         their output in the order they were started, their
#                         results renumbered into this script's TAP stream
#                         and counted in TAP_FAILED. A step that exits
#                         non-zero (it_die) or prints no result is a failure.
#
# The steps share the machine: only run concurrently what does not read a
# global knob or log another step changes (the simulated LLM's stats and
# global config, a rate limit per user, one setup directory).
IT_PAR_JOBS=""

it_par() {
    _ptag=$1; shift
    _pf=$IT_TMP/par.$_ptag.out
    mkdir -p "$IT_TMP/par.$_ptag"
    ( TAP_N=0 TAP_FAILED=0 IT_TMP=$IT_TMP/par.$_ptag; "$@" ) >"$_pf" 2>&1 </dev/null &
    IT_PAR_JOBS="$IT_PAR_JOBS $!:$_ptag"
}

it_par_wait() {
    _pjobs=$IT_PAR_JOBS
    IT_PAR_JOBS=""
    _prcs=""
    for _pj in $_pjobs; do
        wait "${_pj%%:*}" && _prc=0 || _prc=$?
        _prcs="$_prcs $_prc"
    done
    set -- $_prcs
    for _pj in $_pjobs; do
        _prc=$1; shift
        _ptag=${_pj#*:}
        _pn=0
        while IFS= read -r _pline; do
            case $_pline in
            "ok "[0-9]*" - "*)
                _pn=$((_pn + 1)); TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - ${_pline#ok * - }" ;;
            "not ok "[0-9]*" - "*)
                _pn=$((_pn + 1)); TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
                echo "not ok $TAP_N - ${_pline#not ok * - }" ;;
            "not ok - "*)
                _pn=$((_pn + 1)); TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
                echo "not ok $TAP_N - $_ptag: ${_pline#not ok - }" ;;
            "1.."*) ;;
            *) echo "$_pline" ;;
            esac
        done <"$IT_TMP/par.$_ptag.out"
        if [ "$_prc" -ne 0 ] || [ "$_pn" -eq 0 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_ptag: the step exited with status $_prc after $_pn results"
        fi
    done
}
