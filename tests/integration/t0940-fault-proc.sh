#!/bin/sh
# t0940-fault-proc.sh — issue 13 item 2, the process faults, mid-stream on
# every transport at once (tests/integration/faults-proc.mjs), through the
# shipped snippets: lighttpd + parley.fcgi (apache-conf/lighttpd-parley.conf:
# lighttpd spawns and respawns parley.fcgi), Apache + mod_fcgid
# (parley-fcgid.conf + parley-websocket.conf), one bridge (the ExecStart= of
# apache-conf/parley-ws.service), one SQLite database, PARLEY_LEASE_MS=2000.
# The faults (phases):
#   1. lighttpd's parley.fcgi SIGKILLed (lighttpd respawns it) — while, at
#      the same time, 3. runs on a second lighttpd and 4. on the Apache
#      front (each its own parley.fcgi, the same bridge and database);
#   2. parley-ws SIGKILLed, started again 1 s later on the same port as
#      systemd's Restart= would;
#   3. lighttpd gracefully restarted (SIGUSR1: serve the open connections,
#      then reload);
#   4. Apache gracefully restarted (SIGUSR1, `apachectl graceful`: mod_fcgid
#      terminates its parley.fcgi processes).
# Transports: seed 000 and seed 001 over WebSocket and long-poll, the
# ticket SSE follower, seed 004 SSE, Phoenix over WebSocket and LongPoll,
# the OpenAI-compatible SSE. Each client sees the whole answer once (the
# protocol's resume) or the documented `interrupted` error, never a hang;
# the same question again gets the whole deterministic answer from a new
# upstream request (nothing partial cached); no job stays running past its
# lease; PRAGMA integrity_check is ok; a new user is served on every
# transport afterwards (by the restarted bridge after 2.).
# FP_PHASES (default "fcgi bridge graceful apache") reruns some of them.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
. tests/integration/lib-par.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - process faults # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
command -v sqlite3 >/dev/null 2>&1 || it_die "sqlite3 is not installed"
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix is not installed (npm ci)"

it_init
it_fake_llm
it_jwt_config
LEASE_MS=2000
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_LEASE_MS=$LEASE_MS"
} >>"$IT_APP_CONFIG"

FP_PHASES=${FP_PHASES:-fcgi bridge graceful apache}
case " $FP_PHASES " in *" apache "*) FP_APACHE=1 ;; *) FP_APACHE=0 ;; esac

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
if [ $FP_APACHE = 1 ]; then
    start_fcgid "$BUILD/parley.fcgi"
    A_BASE=$BASE A_DIR=$SETUP_DIR A_PIDS=$SETUP_PIDS
fi
start_lighttpd "$BUILD/parley.fcgi"
L_BASE=$BASE L_DIR=$SETUP_DIR L_PIDS=$SETUP_PIDS
# a second lighttpd (its own parley.fcgi, same bridge and database) for the
# graceful restart, so that it runs at the same time as the SIGKILL of the
# first one's parley.fcgi
G_DIR=""
case " $FP_PHASES " in *" graceful "*)
    IT_NODE=g start_lighttpd "$BUILD/parley.fcgi"
    G_BASE=$BASE G_DIR=$SETUP_DIR G_PIDS=$SETUP_PIDS ;;
esac
# The bridge started again as its unit's ExecStart= (what systemd's
# Restart=on-failure does), same port: a script the node test runs.
_env=$(sed -n 's/^Environment=//p' "$BRIDGE_DIR/parley-ws.service" | tr '\n' ' ')
_exec=$(sed -n 's/^ExecStart=//p' "$BRIDGE_DIR/parley-ws.service")
printf 'exec %s env %s PARLEY_CONFIG=%s %s >>%s 2>&1 </dev/null\n' "$AS_APP" "$_env" "$IT_APP_CONFIG" \
    "$_exec" "$BRIDGE_DIR/parley-ws.log" >"$IT_TMP/restart-bridge.sh"

export SECRET FAKE_LLM_URL LEASE_MS DB="$IT_TMP/data/parley.db"
export BRIDGE_RESTART="$IT_TMP/restart-bridge.sh" BRIDGE_PID_FILE="$IT_TMP/bridge.pid"
export WEB_SIGNAL=SIGUSR1 RESULT_FILE="$IT_TMP/results.txt"
: >"$RESULT_FILE"
IT_NODE_TIMEOUT=300

# phase WEB PHASE LABEL — faults-proc.mjs against the front WEB (lighttpd
# or apache), one TAP step.
phase() {
    case $1 in
    lighttpd) SETUP_DIR=$L_DIR; _base=$L_BASE; _web=$L_PIDS ;;
    lighttpd-g) SETUP_DIR=$G_DIR; _base=$G_BASE; _web=$G_PIDS ;;
    apache) SETUP_DIR=$A_DIR; _base=$A_BASE; _web=$A_PIDS ;;
    esac
    BASE=$_base WEB=${1%-g} WEB_PID=$(echo $_web) FCGI_EXE="$SETUP_DIR/bin/parley.fcgi" RUN="fp$$$1" \
        BRIDGE_PID=$BRIDGE_PID PHASE=$2 it_node_tap "$3: " tests/integration/faults-proc.mjs
}

# The faults that spare the bridge run at the same time, each on its own
# front; then the bridge's.
FP_GRACEFUL=0
case " $FP_PHASES " in *" graceful "*) FP_GRACEFUL=1 ;; esac
for _phase in $FP_PHASES; do
    case $_phase in
    fcgi)
        it_par fcgi phase lighttpd fcgi "lighttpd, parley.fcgi SIGKILLed"
        if [ $FP_GRACEFUL = 1 ]; then
            it_par graceful phase lighttpd-g graceful "lighttpd, graceful restart (SIGUSR1)"
            FP_GRACEFUL=0
        fi
        if [ $FP_APACHE = 1 ]; then
            it_par apache phase apache graceful "Apache mod_fcgid, graceful restart (SIGUSR1)"
            FP_APACHE=0
        fi
        it_par_wait ;;
    bridge)
        phase lighttpd bridge "lighttpd, parley-ws SIGKILLed"
        if [ -s "$BRIDGE_PID_FILE" ]; then
            BRIDGE_PID=$(cat "$BRIDGE_PID_FILE")
            IT_PIDS="$IT_PIDS $BRIDGE_PID"
        fi ;;
    graceful)
        if [ $FP_GRACEFUL = 1 ]; then
            phase lighttpd-g graceful "lighttpd, graceful restart (SIGUSR1)"
            FP_GRACEFUL=0
        fi ;;
    apache)
        if [ $FP_APACHE = 1 ]; then
            phase apache graceful "Apache mod_fcgid, graceful restart (SIGUSR1)"
            FP_APACHE=0
        fi ;;
    *) it_die "FP_PHASES: unknown phase $_phase" ;;
    esac
done

cat "$RESULT_FILE"
for _d in "$L_DIR" ${G_DIR:-} ${A_DIR:-}; do
    SETUP_DIR=$_d
    case $_d in "$L_DIR") SETUP_PIDS=$L_PIDS ;; "$G_DIR") SETUP_PIDS=$G_PIDS ;; *) SETUP_PIDS=$A_PIDS ;; esac
    stop_setup
done
it_done
