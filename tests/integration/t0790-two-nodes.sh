#!/bin/sh
# t0790-two-nodes.sh — two complete Parley nodes sharing one PostgreSQL
# (issue 10): node A is Apache + mod_proxy_fcgi + parley.fcgi (its
# parley-fcgi.service lines) + parley-ws; node B is lighttpd + parley.fcgi +
# parley-ws; each with the shipped apache-conf/ files, both on one private
# PostgreSQL 15 (it_postgres) and one simulated LLM, each with its own
# PARLEY_NODE_PREFIX (its own bridge marker and stats file).
#
# tests/integration/two-nodes.mjs checks, through the two web servers: a
# WebSocket viewer on B sees live a generation a long-poll client started
# on A (one upstream call); two openers of one ticket on two nodes at once
# make one upstream call; a seed 000 long-poll session, a seed 001 session
# and a Phoenix LongPoll session (the official client, its requests sent to
# A and B in turn) go on across nodes; node A's bridge SIGKILLed mid-stream
# gives B's viewer the "interrupted" error once the lease (2 s here) runs
# out, and the next open regenerates the whole answer.
#
# Then PostgreSQL is stopped while B streams a ticket: both nodes answer
# 503 (/api/health: database unavailable) and clear errors while it is
# down; it starts again; the client got "done" or a clear error, never a
# hang; after it, new tickets work on B
# (the connections are opened again), `parley maintain` recovers what the
# restart cut, and the database is consistent: every channel's seqs are
# dense and end at event_channels' last_seq, no two running jobs share a
# (channel, prompt_key), no running job has an expired lease.
#
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - two nodes # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
IT_DB=$PG_URL
LEASE_MS=2000

# node_config NODE — the node's PARLEY_CONFIG file: no rate limit (every
# client is 127.0.0.1), a 2 s lease, its own node prefix.
node_config() {
    mkdir -p "$IT_TMP/node-$1"
    it_own "$IT_TMP/node-$1"
    cat >"$IT_TMP/node-$1.env" <<EOF_CONF
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=0
PARLEY_LEASE_MS=$LEASE_MS
PARLEY_NODE_PREFIX=$IT_TMP/node-$1/parley
EOF_CONF
    it_own "$IT_TMP/node-$1.env"
    IT_APP_CONFIG=$IT_TMP/node-$1.env
}

# --- node A: Apache + mod_proxy_fcgi ---
IT_NODE=a
node_config a
start_bridge || it_die "node A: parley-ws did not start"
BRIDGE_A_PID=$BRIDGE_PID
WS_PORT=$BRIDGE_PORT
start_proxy_fcgi "$BUILD/parley.fcgi"
NODE_A=$BASE
SETUP_A=$SETUP_DIR

# --- node B: lighttpd ---
IT_NODE=b
node_config b
start_bridge || it_die "node B: parley-ws did not start"
BRIDGE_B_PID=$BRIDGE_PID
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
NODE_B=$BASE
SETUP_B=$SETUP_DIR
it_log "node A $NODE_A (bridge pid $BRIDGE_A_PID), node B $NODE_B (bridge pid $BRIDGE_B_PID), PostgreSQL $PG_URL"

ok "both nodes answer /api/health with the database ok" sh -c "
    curl -sf -m 10 '$NODE_A/api/health' | grep -q '\"database\":\"ok\"' &&
    curl -sf -m 10 '$NODE_B/api/health' | grep -q '\"database\":\"ok\"' ||
    { curl -s -m 10 '$NODE_A/api/health'; echo; curl -s -m 10 '$NODE_B/api/health'; exit 1; }"

RESULT_FILE=$IT_TMP/two-nodes.results
: >"$RESULT_FILE"
SETUP_DIR=$SETUP_A BRIDGE_DIR=$IT_TMP/bridge-a \
NODE_A=$NODE_A NODE_B=$NODE_B BRIDGE_A_PID=$BRIDGE_A_PID LEASE_MS=$LEASE_MS \
    RESULT_FILE=$RESULT_FILE it_node_tap "two nodes: " tests/integration/two-nodes.mjs
cat "$RESULT_FILE"
# connections per program (docs/postgres.md sizing), after the suite's traffic
# (application_name is "<program>/<pid>")
it_log "PostgreSQL connections by program (processes, connections): $(it_pg_sql "
    SELECT p || ' ' || n || ' ' || c FROM (
      SELECT split_part(application_name, '/', 1) AS p, count(DISTINCT application_name) AS n, count(*) AS c
        FROM pg_stat_activity WHERE datname = 'parley' AND pid <> pg_backend_pid() GROUP BY 1) x
     ORDER BY 1" | paste -sd, -)"

# --- PostgreSQL restarted while node B streams ---
RS_OUT=$IT_TMP/pg-restart.out
TICKET=t0790-restart-$$
node tests/integration/pg-restart.mjs "ws://127.0.0.1:${NODE_B##*:}/api/websocket/chat/$TICKET" \
    "PostgreSQL restarts [[fake tokens=200 token_ms=50]] $TICKET" 60000 >"$RS_OUT" 2>&1 &
RS_PID=$!
_i=0
while ! grep -q '^streaming' "$RS_OUT" && [ $_i -lt 200 ] && it_alive "$RS_PID"; do
    sleep 0.1; _i=$((_i + 1))
done
ok "a ticket streams on node B" grep -q '^streaming' "$RS_OUT"
PG_PORT_WAS=$PG_PORT
it_pg_stop

# down_answers BASE — with PostgreSQL down: /api/health is 503 saying the
# database is unavailable; a long-poll open gets 503 "The database is
# unavailable"
down_answers() {
    _code=$(curl -s -m 15 -o "$IT_TMP/down.json" -w '%{http_code}' "$1/api/health")
    echo "health: $_code $(cat "$IT_TMP/down.json")"
    [ "$_code" = 503 ] && grep -q '"database":"unavailable"' "$IT_TMP/down.json" || return 1
    _code=$(curl -s -m 15 -o "$IT_TMP/down.json" -w '%{http_code}' -H 'content-type: application/json' \
        -d '{"path":"/api/websocket/chat/t0790-down"}' "$1/api/poll/open")
    echo "poll open: $_code $(cat "$IT_TMP/down.json")"
    [ "$_code" = 503 ] && grep -q 'The database is unavailable' "$IT_TMP/down.json"
}
ok "PostgreSQL down: node A answers 503 (health: database unavailable; long-poll open: The database is unavailable)" down_answers "$NODE_A"
ok "PostgreSQL down: node B too" down_answers "$NODE_B"
IT_PG_PORT=$PG_PORT_WAS it_postgres "$PG_DATA"
ok "PostgreSQL started again on the same port" it_alive "$PG_PID"
wait "$RS_PID"
RS_RC=$?
RS_LINE=$(tail -n 1 "$RS_OUT")
it_log "client during the restart: $RS_LINE"
# ended_clearly — the client's last line says "done" or "error" (not a
# timeout: a hang; not a bare close)
ended_clearly() {
    [ "$RS_RC" = 0 ] || { cat "$RS_OUT"; return 1; }
    case $RS_LINE in *'"end":"done"'*|*'"end":"error"'*) return 0 ;; esac
    cat "$RS_OUT"; return 1
}
ok "the client got 'done' or a clear error, never a hang" ended_clearly

# after the restart: new tickets on B work (the connections are opened again)
AFTER=t0790-after-$$
ok "after the restart a new ticket streams to done on node B" \
    timeout 60 node tests/integration/ws-ticket.mjs "ws://127.0.0.1:${NODE_B##*:}/api/websocket/chat/$AFTER" \
    "After the restart [[fake tokens=6 token_ms=10]] $AFTER"

# lp_ticket BASE TICKET BODY — a seed 000 ticket over long-poll through BASE
# (curl): open, post the body, poll until "done" (at most 10 polls).
lp_ticket() {
    _sid=$(curl -sf -m 10 -H 'content-type: application/json' -d "{\"path\":\"/api/websocket/chat/$2\"}" \
        "$1/api/poll/open" | sed -n 's/.*"sid":"\([^"]*\)".*/\1/p')
    [ -n "$_sid" ] || { echo "no session"; return 1; }
    curl -sf -m 10 -o /dev/null -H 'content-type: application/json' -d "{\"ticketBody\":\"$3\"}" \
        "$1/api/poll/$_sid" || { echo "POST failed"; return 1; }
    _c=0
    for _i in 1 2 3 4 5 6 7 8 9 10; do
        _out=$(curl -sf -m 15 "$1/api/poll/$_sid?cursor=$_c&wait=5") || { echo "GET failed"; return 1; }
        _c=$(printf '%s' "$_out" | sed -n 's/.*"cursor":\([0-9]*\).*/\1/p')
        printf '%s' "$_out" | grep -q '"type":"done"' && return 0
        printf '%s' "$_out" | grep -q '"type":"error"' && { echo "$_out"; return 1; }
    done
    echo "no done: $_out"
    return 1
}
ok "after the restart a long-poll client gets a ticket answer through node A's parley.fcgi" \
    lp_ticket "$NODE_A" "$AFTER-lp" "After the restart, long-poll [[fake tokens=3]] $AFTER"

# wait out the lease of anything the restart cut, then recover it
sleep $((LEASE_MS * 2 / 1000))
ok "parley maintain (node B's settings) recovers the jobs the restart cut" \
    env PARLEY_CONFIG="$IT_TMP/node-b.env" PARLEY_DB="$PG_URL" timeout 60 "$BUILD/parley" maintain

# sql_none WHAT SQL — SQL returns no row (else the rows, as diagnostics)
sql_none() {
    _rows=$(it_pg_sql "$2") || return 1
    [ -z "$_rows" ] && return 0
    echo "$1:"; echo "$_rows"; return 1
}
NOW_MS=$(it_pg_ms)
ok "no running job has an expired lease" sql_none "running with an expired lease" \
    "SELECT id, channel, lease_expires FROM jobs WHERE state = 'running' AND lease_expires < $NOW_MS"
ok "no two running jobs share a (channel, prompt_key)" sql_none "two running" \
    "SELECT channel, prompt_key FROM jobs WHERE state = 'running' GROUP BY 1, 2 HAVING count(*) > 1"
ok "every channel's seqs are dense and end at event_channels.last_seq" sql_none "not dense" \
    "SELECT e.channel, count(*), min(e.seq), max(e.seq), c.last_seq FROM events e
       LEFT JOIN event_channels c USING (channel) GROUP BY e.channel, c.last_seq
     HAVING count(*) <> max(e.seq) - min(e.seq) + 1 OR c.last_seq IS DISTINCT FROM max(e.seq)"
ok "both nodes' generations are in the one database" sql_none "too few channels" \
    "SELECT n FROM (SELECT count(DISTINCT channel) AS n FROM events) x WHERE n < 8"
it_done
