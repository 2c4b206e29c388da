#!/bin/sh
# t0940-fault-proc.sh — issue 13 item 2, the process faults, through
# lighttpd + parley.fcgi (apache-conf/lighttpd-parley.conf, lighttpd spawns
# and respawns parley.fcgi) + the bridge (apache-conf/parley-ws.service's
# ExecStart), one SQLite database, PARLEY_LEASE_MS=2000. Three faults, one
# after the other on the same setup, each hitting every transport at once
# mid-stream (tests/integration/faults-proc.mjs):
#   1. parley.fcgi SIGKILLed (lighttpd respawns it);
#   2. parley-ws SIGKILLed, started again 1 s later on the same port as
#      systemd's Restart= would;
#   3. lighttpd gracefully restarted (SIGUSR1: serve the open connections,
#      then reload).
# Transports: seed 000 and seed 001 over WebSocket and long-poll, the
# ticket SSE follower, seed 004 SSE, Phoenix over WebSocket and LongPoll,
# the OpenAI-compatible SSE. Each client sees the whole answer once (the
# protocol's resume) or the documented `interrupted` error, never a hang;
# the same question again gets the whole deterministic answer from a new
# upstream request; no job stays running past its lease; PRAGMA
# integrity_check is ok; a new user is served on every transport.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

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

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
WEB_PID=$(echo $SETUP_PIDS)

# The bridge started again as its unit's ExecStart= (what systemd's
# Restart=on-failure does), same port: a script the node test runs.
_env=$(sed -n 's/^Environment=//p' "$BRIDGE_DIR/parley-ws.service" | tr '\n' ' ')
_exec=$(sed -n 's/^ExecStart=//p' "$BRIDGE_DIR/parley-ws.service")
printf 'exec %s env %s PARLEY_CONFIG=%s %s >>%s 2>&1 </dev/null\n' "$AS_APP" "$_env" "$IT_APP_CONFIG" \
    "$_exec" "$BRIDGE_DIR/parley-ws.log" >"$IT_TMP/restart-bridge.sh"

export BASE SECRET FAKE_LLM_URL LEASE_MS WEB_PID
export DB="$IT_TMP/data/parley.db" FCGI_EXE="$SETUP_DIR/bin/parley.fcgi" RUN="fp$$"
export BRIDGE_RESTART="$IT_TMP/restart-bridge.sh" BRIDGE_PID_FILE="$IT_TMP/bridge.pid"
export WEB_SIGNAL=SIGUSR1 RESULT_FILE="$IT_TMP/results.txt"
: >"$RESULT_FILE"

IT_NODE_TIMEOUT=300

# FP_PHASES: the phases to run (all three by default; to rerun one).
for _phase in ${FP_PHASES:-fcgi bridge graceful}; do
    case $_phase in
    fcgi) _what="parley.fcgi SIGKILLed" ;;
    bridge) _what="parley-ws SIGKILLed" ;;
    graceful) _what="graceful restart (SIGUSR1)" ;;
    *) it_die "FP_PHASES: unknown phase $_phase" ;;
    esac
    BRIDGE_PID=$BRIDGE_PID PHASE=$_phase it_node_tap "lighttpd, $_what: " tests/integration/faults-proc.mjs
    if [ "$_phase" = bridge ] && [ -s "$BRIDGE_PID_FILE" ]; then
        BRIDGE_PID=$(cat "$BRIDGE_PID_FILE")
        IT_PIDS="$IT_PIDS $BRIDGE_PID"
    fi
done

cat "$RESULT_FILE"
it_done
