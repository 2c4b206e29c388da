#!/bin/sh
# t0931-pg-fault-db.sh — the PostgreSQL part of the database fault matrix
# (issue 13 item 2): PostgreSQL restarted mid-stream, then unreachable for
# some seconds, then back.
#
# One setup: lighttpd + parley.fcgi + parley-ws with the shipped apache-conf
# files (lib.sh: lighttpd-parley.conf verbatim, the bridge as
# parley-ws.service starts it) on a private PostgreSQL 15 (lib.sh
# it_postgres), this script's own simulated LLM (its request log is the
# witness of upstream calls). faults-db.mjs's "pg" scenario drives the
# clients (seed 000 over WebSocket and Parley long-poll, seed 004 SSE,
# Phoenix LongPoll and WebSocket with the official client, OpenAI SSE) and
# hands over to this shell, which owns the postmaster, through marker files:
#
#   streaming   6 generations are streaming  -> a fast restart (sessions
#                                               cut), same port
#   stop-now    the clients have settled     -> PostgreSQL stopped: 6 new
#                                               questions must get
#                                               database_unavailable with
#                                               no upstream call, health 503
#   start-now   those are answered           -> started again
#
# The running generations end with the whole answer or a documented code;
# afterwards each question again gives the whole answer (from a new upstream
# request when its first try did not end done: nothing partial cached), new
# questions on every transport end done without restarting Parley, health
# is 200. Then, here: no job left running past its lease (after `parley
# maintain`) and none running at all, every cached answer belongs to a job
# that ended done, and PostgreSQL's own consistency (amcheck: bt_index_check
# with heapallindexed on every index, verify_heapam on every table; no
# orphan events or messages). TAP; about 20 s under ASan+UBSan.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - PostgreSQL faults # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
# this script's own simulated LLM: its request log must hold our requests only
unset FAKE_LLM_URL
it_fake_llm
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
IT_DB=$PG_URL

LEASE_MS=3000
mkdir -p "$IT_TMP/node"
it_own "$IT_TMP/node"
PARLEY_NODE_PREFIX=$IT_TMP/node/parley
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOC
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_LEASE_MS=$LEASE_MS
PARLEY_NODE_PREFIX=$PARLEY_NODE_PREFIX
EOC
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "lighttpd $BASE, bridge $BRIDGE_PORT, PostgreSQL $PG_PORT"

SIGDIR=$IT_TMP/sig
mkdir -p "$SIGDIR"
case $BUILD in /*) CLI=$BUILD/parley ;; *) CLI=$IT_ROOT/$BUILD/parley ;; esac
T0=$(date +%s)
BASE=$BASE WS=ws://127.0.0.1:${BASE##*:} FAKE=$FAKE_LLM_URL SIGDIR=$SIGDIR LEASE_MS=$LEASE_MS \
    timeout 150 node tests/integration/faults-db.mjs pg >"$IT_TMP/pg.out" 2>&1 &
NODE_PID=$!

# wait_mark NAME — until the clients wrote $SIGDIR/NAME (at most 90 s);
# 1 when they ended or timed out first.
wait_mark() {
    _i=0
    while [ ! -e "$SIGDIR/$1" ]; do
        it_alive "$NODE_PID" || return 1
        [ $_i -ge 1800 ] && return 1
        sleep 0.05; _i=$((_i + 1))
    done
}
# The hand-shake runs in this shell (the postmaster must be its child). A
# step the clients never asked for is reported by them ("no <mark> from the
# script" or a failed check), and by the TAP line below.
HANDSHAKE=""
if wait_mark streaming; then
    it_pg_restart
    HANDSHAKE="$HANDSHAKE restarted"
    touch "$SIGDIR/restarted"
    if wait_mark stop-now; then
        _port=$PG_PORT
        it_pg_stop
        HANDSHAKE="$HANDSHAKE stopped"
        touch "$SIGDIR/down"
        if wait_mark start-now; then
            IT_PG_PORT=$_port it_postgres "$PG_DATA"
            HANDSHAKE="$HANDSHAKE started"
            touch "$SIGDIR/up"
        fi
    fi
fi
wait "$NODE_PID" && _rc=0 || _rc=$?
TAP_N=$((TAP_N + 1))
if [ "$HANDSHAKE" = " restarted stopped started" ]; then
    echo "ok $TAP_N - PostgreSQL restarted mid-stream, stopped, started again on the clients' cue"
else
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - PostgreSQL restarted mid-stream, stopped, started again on the clients' cue"
    echo "#   done:${HANDSHAKE:- nothing}"
fi

# The clients' lines as TAP.
_seen=0
while IFS= read -r _l; do
    case $_l in
    "PASS "*) TAP_N=$((TAP_N + 1)); _seen=1; echo "ok $TAP_N - ${_l#PASS }" ;;
    "FAIL "*) TAP_N=$((TAP_N + 1)); _seen=1; TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - ${_l#FAIL }" ;;
    "#"*) echo "$_l" ;;
    *) echo "# pg: $_l" ;;
    esac
done <"$IT_TMP/pg.out"
if [ "$_seen" = 0 ] || { [ "$_rc" != 0 ] && [ "$_rc" != 1 ]; }; then
    TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - faults-db.mjs pg ended with status $_rc"
fi
it_log "the scenario took $(($(date +%s) - T0)) s"

# After it: the leases of what the restart cut have run out; the cron
# upkeep (docs/cli.md) fails those nobody followed.
sleep $((LEASE_MS / 1000 + 1))
STALE="SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires < (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
it_log "running past their lease before parley maintain: $(it_pg_sql "$STALE" 2>&1)"
# shellcheck disable=SC2086
$AS_APP env PARLEY_DB="$PG_URL" PARLEY_CONFIG="$IT_APP_CONFIG" timeout 60 "$CLI" maintain --json \
    >"$IT_TMP/maintain.out" 2>&1 || it_log "parley maintain: $(tail -n 5 "$IT_TMP/maintain.out")"
pg_zero() { # SQL — its one value must be 0
    _v=$(it_pg_sql "$1" 2>&1)
    [ "$_v" = 0 ] || { echo "got: $_v"; return 1; }
}
ok "after: no job left running past its lease (after parley maintain)" pg_zero "$STALE"
ok "after: no job running once every client is done" \
    pg_zero "SELECT count(*) FROM jobs WHERE state = 'running'"
ok "after: every cached answer belongs to a job that ended done" \
    pg_zero "SELECT count(*) FROM answers a WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.prompt_key = a.key AND j.state = 'done')"
ok "after: no event of an unknown job, no message of an unknown conversation" \
    pg_zero "SELECT (SELECT count(*) FROM events e WHERE e.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)) + (SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id))"
# amcheck: every B-tree index of Parley's tables agrees with its table, no
# corrupt heap page.
amcheck() {
    it_pg_sql "CREATE EXTENSION IF NOT EXISTS amcheck" >/dev/null || return 1
    _n=$(it_pg_sql "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.amname = 'btree' AND n.nspname = 'public'") || return 1
    [ "$_n" -gt 5 ] || { echo "only $_n indexes found"; return 1; }
    _c=$(it_pg_sql "SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE a.amname = 'btree' AND n.nspname = 'public') AS checked" 2>&1)
    [ "$_c" = "$_n" ] || { echo "bt_index_check: $_c"; return 1; }
    _h=$(it_pg_sql "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
        LATERAL verify_heapam(c.oid) WHERE c.relkind = 'r' AND n.nspname = 'public'" 2>&1)
    [ "$_h" = 0 ] || { echo "verify_heapam: $_h"; return 1; }
    echo "$_n indexes checked, every table's heap verified"
}
ok "after: PostgreSQL consistent (amcheck)" amcheck
ok "no sanitizer report in the servers' logs" sh -c "! grep -l 'AddressSanitizer\|runtime error:\|LeakSanitizer' \
    $IT_TMP/bridge*/parley-ws.log $IT_TMP/lighttpd*/logs/* 2>/dev/null"
it_done
