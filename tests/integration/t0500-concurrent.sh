#!/bin/sh
# t0500-concurrent.sh — many generations at once (issue 8, defect i): N
# ticket answers started together, one viewer each, over WebSocket (the
# bridge) and over long-poll through lighttpd, Apache + mod_proxy_fcgi and
# Apache + mod_fcgid, with the fronts' thread and process limits scaled
# down from the shipped ones (tests/integration/concurrent.mjs checks).
# Every viewer must get every token and "done", none may fail (no error
# frame, no 410), and all N generations must run at once: every first token
# arrives before any answer ends (a front that gives each running generation
# a thread of its own starts the later ones only after the first ones end).
#
#   T0500_N (60)          generations per setup (bridge, lighttpd, mod_proxy_fcgi)
#   T0500_THREADS (4)     parley.fcgi worker threads under lighttpd and
#                         mod_proxy_fcgi (shipped: 16 and 32), far fewer than
#                         N viewers: a waiting long-poll GET must hold no
#                         thread (it is parked in the process's poll hub,
#                         fcgi/poll_park.c), and the generations none either
#   T0500_SETUPS          the setups to run (default all: "bridge lighttpd
#                         proxy-fcgi fcgid fcgid-bridge")
#   T0500_FCGID_N (20)    generations under mod_fcgid, with N+8 processes of
#                         ONE worker thread each; every waiting GET holds a
#                         process and mod_fcgid spawns about one a second
#                         after a burst of ten, so N long-poll GETs of 15 s
#                         first make it spawn them (--warmup); this setup
#                         starts first and warms up while the bridge,
#                         lighttpd and mod_proxy_fcgi are measured; its
#                         burst waits for them (--go-file)
#   T0500_HANDOFF_PROCS (4)  mod_fcgid processes when the bridge runs
#                         (parley-websocket.conf included): N viewers, far
#                         more than processes, because Apache sends
#                         long-poll to the bridge while it runs (its marker
#                         file <db>-ws.up) and no request holds a process
#                         while it waits; the bridge's /metrics must show
#                         the GETs it answered
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

if [ ! -x "$BUILD/parley.fcgi" ] || [ ! -x "$BUILD/parley-ws" ]; then
    echo "ok 1 - concurrent generations # SKIP $BUILD/parley.fcgi or parley-ws is not built"
    echo "1..1"
    exit 0
fi
case $BUILD in /*) ;; *) BUILD=$IT_ROOT/$BUILD ;; esac

N=${T0500_N:-60}
THREADS=${T0500_THREADS:-4}
SETUPS=${T0500_SETUPS:-bridge lighttpd proxy-fcgi fcgid fcgid-bridge}
HANDOFF_PROCS=${T0500_HANDOFF_PROCS:-4}
FCGID_N=${T0500_FCGID_N:-20}
PROCS=$((FCGID_N + 8))
FCGID_THREADS=1
TOKENS=${T0500_TOKENS:-60}
TOKEN_MS=${T0500_TOKEN_MS:-100}

it_init
it_fake_llm
IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"     # N messages from one client address
    echo "PARLEY_COALESCE_MS=5"

} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

# The shipped snippets with the thread / process limits scaled down: the
# start_* functions read apache-conf/ from the current directory.
SCALED=$IT_TMP/scaled
mkdir -p "$SCALED/apache-conf"
sed -e "s/--threads [0-9][0-9]*/--threads $THREADS/" apache-conf/lighttpd-parley.conf \
    >"$SCALED/apache-conf/lighttpd-parley.conf"
sed -e "s/--threads [0-9][0-9]*/--threads $THREADS/" apache-conf/parley-fcgi.service \
    >"$SCALED/apache-conf/parley-fcgi.service"
sed -e "s/^FcgidMaxProcessesPerClass .*/FcgidMaxProcessesPerClass $PROCS/" \
    -e "\$a FcgidInitialEnv PARLEY_FCGI_THREADS $FCGID_THREADS" apache-conf/parley-fcgid.conf \
    >"$SCALED/apache-conf/parley-fcgid.conf"
for _f in parley-proxy-fcgi.conf parley-websocket.conf; do cp "apache-conf/$_f" "$SCALED/apache-conf/"; done
grep -q -- "--threads $THREADS" "$SCALED/apache-conf/lighttpd-parley.conf" || it_die "lighttpd-parley.conf: no --threads to scale"
grep -q -- "--threads $THREADS" "$SCALED/apache-conf/parley-fcgi.service" || it_die "parley-fcgi.service: no --threads to scale"
grep -q "^FcgidMaxProcessesPerClass $PROCS" "$SCALED/apache-conf/parley-fcgid.conf" || it_die "parley-fcgid.conf: no FcgidMaxProcessesPerClass"
it_own "$SCALED"

# concurrent NAME TRANSPORT BASE N [OPTIONS...]
concurrent() {
    _name=$1 _tr=$2 _base=$3 _n=$4
    shift 4
    _out=$IT_TMP/concurrent-$_name.out
    node "$IT_ROOT/tests/integration/concurrent.mjs" --transport "$_tr" --base "$_base" \
        --n "$_n" --tokens "$TOKENS" --token-ms "$TOKEN_MS" "$@" \
        >"$_out" 2>&1 && _rc=0 || _rc=$?
    cat "$_out"
    return "$_rc"
}

IT_NO_WS=1
it_log "generations of $TOKENS tokens every $TOKEN_MS ms"
wanted() { case " $SETUPS " in *" $1 "*) return 0 ;; esac; return 1; }

# mod_fcgid first: its warmup (N long-poll GETs held 15 s, so that it
# spawns its processes) runs in the background while the other setups are
# measured; its burst starts when GO exists, after them.
GO=$IT_TMP/fcgid.go
FCGID_PID=""
if wanted fcgid; then
    cd "$SCALED"
    start_fcgid "$BUILD/parley.fcgi"
    cd "$IT_ROOT"
    FCGID_BASE=$BASE FCGID_DIR=$SETUP_DIR FCGID_PIDS=$SETUP_PIDS
    SETUP_PIDS=""
    node "$IT_ROOT/tests/integration/concurrent.mjs" --transport poll --base "$BASE" \
        --n "$FCGID_N" --tokens "$TOKENS" --token-ms "$TOKEN_MS" --warmup 15 --go-file "$GO" \
        >"$IT_TMP/concurrent-fcgid.out" 2>&1 </dev/null &
    FCGID_PID=$!
fi

if ! wanted bridge; then
    :
elif start_bridge; then
    BRIDGE_PID=$IT_LAST_PID
    ok "bridge (WebSocket): $N generations at once, every token and done to every viewer" \
        concurrent bridge ws "http://127.0.0.1:$BRIDGE_PORT" "$N"
else
    ok "bridge (WebSocket): the bridge starts" false
fi

if wanted lighttpd; then
    cd "$SCALED"
    start_lighttpd "$BUILD/parley.fcgi"
    cd "$IT_ROOT"
    ok "lighttpd long-poll ($THREADS app threads): $N generations at once, every token and done" \
        concurrent lighttpd poll "$BASE" "$N"
    stop_setup
fi

if wanted proxy-fcgi; then
    cd "$SCALED"
    start_proxy_fcgi "$BUILD/parley.fcgi"
    cd "$IT_ROOT"
    ok "mod_proxy_fcgi long-poll ($THREADS app threads): $N generations at once, every token and done" \
        concurrent proxy-fcgi poll "$BASE" "$N"
    stop_setup
fi

# fcgid_burst — mod_fcgid's burst (started below, now that nothing else
# runs: the client is this shell's child, so it is waited for here, not in
# ok's subshell): its output and exit status
fcgid_burst() {
    cat "$IT_TMP/concurrent-fcgid.out"
    return "$FCGID_RC"
}
if [ -n "$FCGID_PID" ]; then
    SETUP_DIR=$FCGID_DIR SETUP_PIDS=$FCGID_PIDS
    touch "$GO"
    wait "$FCGID_PID" && FCGID_RC=0 || FCGID_RC=$?
    ok "mod_fcgid long-poll ($PROCS processes of $FCGID_THREADS thread): $FCGID_N generations at once, every token and done" \
        fcgid_burst
    stop_setup
fi

# bridge_lp_gets: the long-poll GETs the bridge has answered (its /metrics).
bridge_lp_gets() {
    curl -s "http://127.0.0.1:$BRIDGE_PORT/metrics" |
        sed -n 's/^parley_ws_longpoll_requests_total{method="GET"} //p'
}

wanted fcgid-bridge || { it_done; exit $?; }
if [ -z "${BRIDGE_PORT-}" ]; then
    if ! start_bridge; then
        ok "mod_fcgid + bridge: the bridge starts" false
        it_done
        exit $?
    fi
    BRIDGE_PID=$IT_LAST_PID
fi
UP=${IT_DB:-$IT_TMP/data/parley.db}-ws.up
ok "the bridge marks that it serves long-poll ($UP)" test -f "$UP"
sed -i "s/^FcgidMaxProcessesPerClass .*/FcgidMaxProcessesPerClass $HANDOFF_PROCS/" \
    "$SCALED/apache-conf/parley-fcgid.conf"
unset IT_NO_WS
WS_PORT=$BRIDGE_PORT
before=$(bridge_lp_gets)
cd "$SCALED"
start_fcgid "$BUILD/parley.fcgi"
cd "$IT_ROOT"
ok "mod_fcgid + bridge long-poll ($HANDOFF_PROCS processes): $N generations at once, every token and done" \
    concurrent fcgid-bridge poll "$BASE" "$N"
after=$(bridge_lp_gets)
ok "mod_fcgid + bridge: the long-poll GETs went to the bridge (${before:-none} -> ${after:-none})" \
    test "${after:-0}" -ge "$((${before:-0} + N))"
# The bridge stops: its marker goes, and long-poll is parley.fcgi's again.
it_stop "$BRIDGE_PID"
ok "a stopped bridge removes its marker" test ! -f "$UP"
ok "mod_fcgid without the bridge: long-poll still works (3 generations)" \
    concurrent fcgid-nobridge poll "$BASE" 3
stop_setup

it_done
