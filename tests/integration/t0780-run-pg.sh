#!/bin/sh
# t0780-run-pg.sh — `make run` on PostgreSQL (issue 10, item 5): tools/run.sh
# as a user starts it, on free ports, bounded in time.
#
#   1. DB=postgres NODES=2: run.sh starts a private PostgreSQL and two
#      complete nodes (web server + parley.fcgi + bridge each, PORT and
#      PORT+1) on it. Both /api/health say the database is ok; a seed 000
#      ticket answered over long-poll (curl) through node 1 is a cached
#      answer on node 2 (long-poll "cached", GET /api/tickets/{id}/ai, no
#      upstream call), and one answered over WebSocket through node 2's
#      bridge is cached on node 1; the rows are in that PostgreSQL; each
#      node's bridge has its own marker (<node prefix>-ws.up) and numbers
#      (parley_ws_up 1 on both); the PostgreSQL listens on 127.0.0.1 only
#      (its postmaster's listening sockets in /proc/net/tcp, tcp6). SIGINT
#      to run.sh (what Ctrl-C sends) stops every process it started,
#      PostgreSQL included, within 30 s.
#   2. PARLEY_DB=postgresql://role:PASSWORD@.../db (a role and database
#      created on this test's own it_postgres server), NODES=2: served on
#      that server (no private one; migrated there), and neither run.sh's
#      whole output nor its nodes' logs ever hold the password; after
#      SIGINT that server still runs (run.sh did not start it). The same
#      URI on a port where nothing listens: a clear failure, no password.
#   3. Refusals: NODES=2 on SQLite; DB=postgres with a PostgreSQL PARLEY_DB.
#
# SERVER (apache, apache-proxy, lighttpd) picks run.sh's web server (apache).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley parley.fcgi parley-ws; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - make run on PostgreSQL # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
if [ ! -x "$PG_BIN/postgres" ]; then
    echo "ok 1 - make run on PostgreSQL # SKIP no PostgreSQL 15 ($PG_BIN)"
    echo "1..1"
    exit 0
fi

it_init
it_fake_llm
RUN_SERVER=${SERVER:-apache}
unset SERVER PARLEY_DB PARLEY_NODE_PREFIX DB NODES PG_DIR

# two_ports — RUN_PORT such that RUN_PORT and RUN_PORT+1 are both free:
# tried below the kernel's ephemeral range (free_port's ports are in it, and
# the port after one is often some client connection's, in TIME_WAIT).
two_ports() {
    for _t in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        RUN_PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12000))
        node -e 'const net = require("net"); const a = net.createServer(), b = net.createServer();
                 a.on("error", () => process.exit(1)); b.on("error", () => process.exit(1));
                 a.listen(+process.argv[1], "127.0.0.1", () => b.listen(+process.argv[1] + 1, "127.0.0.1",
                     () => { a.close(); b.close(); }))' "$RUN_PORT" 2>/dev/null && return 0
    done
    it_die "no two free consecutive ports"
}

# /api/metrics is an admin's (docs/admin.md): run.sh gets a JWT secret,
# the clients a user's token (T_TOK), the metrics check an admin's.
T_SECRET="it-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
T_TOK=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "t0780"))' "$T_SECRET")
T_ADMIN=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "ops", { role: "admin" }))' "$T_SECRET")

# start_run NAME ENV... — tools/run.sh in the background with ENV (log
# $IT_TMP/run-NAME.log; RUN_PID, RUN_LOG, RUN_PORT), SIGINT at its default
# (a background job of a script has it ignored, and a shell cannot trap an
# ignored signal: env --default-signal gives run.sh the terminal's Ctrl-C
# behaviour); waits (120 s) until it serves or stops.
start_run() {
    RUN_LOG=$IT_TMP/run-$1.log
    shift
    two_ports
    it_bg "$RUN_LOG" env --default-signal=INT "$@" PARLEY_JWT_SECRET="$T_SECRET" PORT="$RUN_PORT" SERVER="$RUN_SERVER" \
        BUILD="$BUILD" OLLAMA_SERVER="$FAKE_LLM_URL" sh tools/run.sh
    RUN_PID=$IT_LAST_PID
    SETUP_PIDS=""
    _i=0
    while ! grep -q '^parley: Ctrl-C stops everything' "$RUN_LOG" && it_alive "$RUN_PID" && [ $_i -lt 1200 ]; do
        sleep 0.1; _i=$((_i + 1))
    done
    NODE1=http://127.0.0.1:$RUN_PORT
    NODE2=http://127.0.0.1:$((RUN_PORT + 1))
    # run.sh's temporary directory, from its node 1 "logs:" line
    RUN_TMP=$(sed -n 's|^parley: node 1: logs: \(.*\)/[^/]*/logs/ .*$|\1|p' "$RUN_LOG" | head -n 1)
}
served() {
    grep -q '^parley: Ctrl-C stops everything' "$RUN_LOG" || { tail -n 40 "$RUN_LOG"; return 1; }
    grep -q "^parley: two nodes, one database and one upstream: $NODE1/ and $NODE2/\$" "$RUN_LOG" ||
        { echo "no line with both URLs"; return 1; }
}
health_ok() {
    for _b in "$NODE1" "$NODE2"; do
        _h=$(curl -sS -m 10 "$_b/api/health" 2>&1) || true
        case $_h in *'"database":"ok"'*) ;; *) echo "$_b/api/health: $_h"; return 1 ;; esac
    done
}
# The processes run.sh started: its descendants now (pid, ppid walk).
descendants() {
    ps -e -o pid=,ppid= | awk -v r="$1" '{ p[$1] = $2 }
        END { for (x in p) { y = x; while (y > 1) { if (y == r) { print x; break }; y = p[y] } } }'
}
# gone_within SECONDS PID... — every PID gone (or a zombie) in time
gone_within() {
    _s=$1; shift
    _i=0
    while [ $_i -lt $((_s * 10)) ]; do
        _left=""
        for _p in "$@"; do it_alive "$_p" && _left="$_left $_p"; done
        [ -z "$_left" ] && { echo "all $# processes gone after $((_i / 10)).$((_i % 10)) s"; return 0; }
        sleep 0.1; _i=$((_i + 1))
    done
    echo "still running after $_s s:"
    for _p in $_left; do echo "  $_p $(tr '\0' ' ' <"/proc/$_p/cmdline" 2>/dev/null)"; done
    return 1
}
upstream_total() {
    curl -sf -m 5 "$FAKE_LLM_URL/_fake/stats" | sed -n 's/.*"total":\([0-9]*\).*/\1/p'
}

# lp_ticket BASE TICKET BODY OUT — a seed 000 ticket over long-poll through
# BASE with curl: open, post the body, poll until "done" (at most 10 polls);
# every poll's answer appended to OUT.
lp_ticket() {
    : >"$4"
    _sid=$(curl -sf -m 10 -H "Authorization: Bearer $T_TOK" -H 'content-type: application/json' -d "{\"path\":\"/api/websocket/chat/$2\"}" \
        "$1/api/poll/open" | sed -n 's/.*"sid":"\([^"]*\)".*/\1/p')
    [ -n "$_sid" ] || { echo "$1: no long-poll session"; return 1; }
    curl -sf -m 10 -o /dev/null -H "Authorization: Bearer $T_TOK" -H 'content-type: application/json' -d "{\"ticketBody\":\"$3\"}" \
        "$1/api/poll/$_sid" || { echo "$1: POST failed"; return 1; }
    _c=0
    for _i in 1 2 3 4 5 6 7 8 9 10; do
        _out=$(curl -sf -m 15 -H "Authorization: Bearer $T_TOK" "$1/api/poll/$_sid?cursor=$_c&wait=5") || { echo "$1: GET failed"; return 1; }
        printf '%s\n' "$_out" >>"$4"
        _c=$(printf '%s' "$_out" | sed -n 's/.*"cursor":\([0-9]*\).*/\1/p')
        printf '%s' "$_out" | grep -q '"type":"done"' && return 0
        printf '%s' "$_out" | grep -q '"type":"error"' && { echo "$_out"; return 1; }
    done
    echo "$1: no done: $_out"
    return 1
}

# ===== 1. DB=postgres NODES=2 ==================================================
RUN_PG=$IT_TMP/run-pg
mkdir -p "$RUN_PG"
it_own "$RUN_PG"
start_run pg DB=postgres NODES=2 PG_DIR="$RUN_PG"
RUN_URL=$(sed -n 's|^parley: PostgreSQL 15 started at \(postgresql://[^ ]*\) .*|\1|p' "$RUN_LOG" | head -n 1)
RUN_PG_PID=$(head -n 1 "$RUN_PG/postmaster.pid" 2>/dev/null || true)
ok "DB=postgres NODES=2 make run: serves two nodes and prints both URLs" served
ok "DB=postgres NODES=2: both nodes' /api/health say the database is ok" health_ok
on_pg() {
    grep -q "^parley: database $RUN_URL (PostgreSQL; schema version [0-9]*)\$" "$RUN_LOG" ||
        { grep '^parley: database' "$RUN_LOG"; return 1; }
    ! grep -q 'not used by Parley\|serving on SQLite' "$RUN_LOG" || { echo "says it serves on SQLite"; return 1; }
}
ok "DB=postgres: run.sh serves on its private PostgreSQL ($RUN_URL), migrated" on_pg

run_psql() { PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$RUN_URL" -c "$1"; }
T1=t0780-lp-$$
cached_on_2() {
    lp_ticket "$NODE1" "$T1" "Answered on node 1 [[fake tokens=5]] $T1" "$IT_TMP/lp1.out" || return 1
    _before=$(upstream_total)
    lp_ticket "$NODE2" "$T1" "Answered on node 1 [[fake tokens=5]] $T1" "$IT_TMP/lp2.out" || return 1
    grep -q '"type":"cached"' "$IT_TMP/lp2.out" || { echo "node 2 did not answer 'cached':"; cat "$IT_TMP/lp2.out"; return 1; }
    _code=$(curl -s -m 10 -H "Authorization: Bearer $T_TOK" -o "$IT_TMP/ai2.json" -w '%{http_code}' "$NODE2/api/tickets/$T1/ai")
    [ "$_code" = 200 ] || { echo "GET node 2 /api/tickets/$T1/ai: $_code $(cat "$IT_TMP/ai2.json")"; return 1; }
    [ "$(upstream_total)" = "$_before" ] || { echo "node 2 called the upstream"; return 1; }
    _n=$(run_psql "SELECT count(*) FROM events WHERE channel LIKE '%$T1%'") || return 1
    [ "${_n:-0}" -gt 0 ] || { echo "no events of $T1 in $RUN_URL"; return 1; }
    echo "$_n events of $T1 in the private PostgreSQL"
}
ok "a ticket answered over long-poll through node 1 is cached on node 2 (no upstream call), rows in PostgreSQL" cached_on_2
T2=t0780-ws-$$
cached_on_1() {
    timeout 60 node tests/integration/ws-ticket.mjs "ws://127.0.0.1:$((RUN_PORT + 1))/api/websocket/chat/$T2?token=$T_TOK" \
        "Answered on node 2 [[fake tokens=5]] $T2" || return 1
    _before=$(upstream_total)
    lp_ticket "$NODE1" "$T2" "Answered on node 2 [[fake tokens=5]] $T2" "$IT_TMP/lp3.out" || return 1
    grep -q '"type":"cached"' "$IT_TMP/lp3.out" || { echo "node 1 did not answer 'cached':"; cat "$IT_TMP/lp3.out"; return 1; }
    [ "$(upstream_total)" = "$_before" ] || { echo "node 1 called the upstream"; return 1; }
}
ok "a ticket answered over WebSocket through node 2's bridge is cached on node 1" cached_on_1
own_prefixes() {
    [ -n "$RUN_TMP" ] || { echo "no logs: line"; return 1; }
    for _n in 1 2; do
        [ -f "$RUN_TMP/node-$_n/parley-ws.up" ] || { echo "no $RUN_TMP/node-$_n/parley-ws.up"; return 1; }
        grep -q "RewriteCond \"$RUN_TMP/node-$_n/parley-ws.up\" -f" "$RUN_TMP"/*/conf/parley-websocket.conf 2>/dev/null ||
            [ "$RUN_SERVER" != apache ] || { echo "no RewriteCond on node $_n's marker"; return 1; }
    done
    for _b in "$NODE1" "$NODE2"; do
        curl -sf -m 5 -H "Authorization: Bearer $T_ADMIN" "$_b/api/metrics" | grep -qx 'parley_ws_up 1' || { echo "$_b: parley_ws_up is not 1"; return 1; }
    done
}
ok "each node has its own node prefix (marker, RewriteCond) and its bridge's numbers (parley_ws_up 1)" own_prefixes

# loopback_only — every listening TCP socket of the postmaster is on
# 127.0.0.1 (and there is one): /proc/PID/fd socket inodes against
# /proc/net/tcp and tcp6 (state 0A = LISTEN).
loopback_only() {
    [ -n "$RUN_PG_PID" ] && it_alive "$RUN_PG_PID" || { echo "no postmaster (pid '$RUN_PG_PID')"; return 1; }
    _inodes=$(for _f in /proc/"$RUN_PG_PID"/fd/*; do readlink "$_f"; done 2>/dev/null |
        sed -n 's/^socket:\[\([0-9]*\)\]$/\1/p')
    [ -n "$_inodes" ] || { echo "cannot read the postmaster's sockets"; return 1; }
    _listen=$(for _i in $_inodes; do
        awk -v i="$_i" '$4 == "0A" && $10 == i { print FILENAME, $2 }' /proc/net/tcp /proc/net/tcp6
    done)
    [ -n "$_listen" ] || { echo "no listening TCP socket of the postmaster"; return 1; }
    _bad=$(printf '%s\n' "$_listen" | grep -v '^/proc/net/tcp 0100007F:') || true
    [ -z "$_bad" ] || { echo "listens elsewhere: $_bad"; return 1; }
    [ "$(run_psql 'SHOW listen_addresses')" = 127.0.0.1 ] || return 1
    echo "$_listen"
}
ok "the PostgreSQL run.sh started listens on 127.0.0.1 only" loopback_only

PROCS="$(descendants "$RUN_PID" | tr '\n' ' ') $RUN_PID"
kill -INT "$RUN_PID"
# shellcheck disable=SC2086
ok "SIGINT to run.sh: every process it started ($(echo $PROCS | wc -w)), PostgreSQL included, gone within 30 s" \
    gone_within 30 $PROCS
wait "$RUN_PID" 2>/dev/null || true
pg_stopped() {
    [ -n "$RUN_PG_PID" ] || { echo "no postmaster.pid was seen"; return 1; }
    it_alive "$RUN_PG_PID" && { echo "postmaster $RUN_PG_PID still runs"; return 1; }
    [ ! -e "$RUN_PG/postmaster.pid" ] || { echo "postmaster.pid left"; return 1; }
    grep -q '^parley: stopped' "$RUN_LOG" || { tail -n 5 "$RUN_LOG"; return 1; }
    [ -n "$RUN_TMP" ] && [ ! -d "$RUN_TMP" ] || { echo "$RUN_TMP left behind"; return 1; }
}
ok "after SIGINT: the postmaster is gone, its pid file removed, run.sh said 'stopped'" pg_stopped
if [ -n "$RUN_PG_PID" ] && it_alive "$RUN_PG_PID"; then kill -INT "$RUN_PG_PID"; fi   # ours, left by a failure

# ===== 2. PARLEY_DB=postgresql://role:password@... =============================
it_postgres
PW="pw$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')Zq9"
ROLE=t0780_user
it_pg_sql "CREATE ROLE $ROLE LOGIN PASSWORD '$PW'" >/dev/null
it_pg_sql "CREATE DATABASE t0780 OWNER $ROLE" >/dev/null
URI=postgresql://$ROLE:$PW@127.0.0.1:$PG_PORT/t0780
start_run uri NODES=2 PARLEY_DB="$URI"
ok "PARLEY_DB=postgresql://… NODES=2 make run: serves two nodes" served
ok "PARLEY_DB=postgresql://…: both nodes' /api/health say the database is ok" health_ok
uri_used() {
    ! grep -q 'PostgreSQL 15 started' "$RUN_LOG" || { echo "run.sh started a PostgreSQL of its own"; return 1; }
    grep -q "^parley: database postgresql://${ROLE}[:@].*127.0.0.1:$PG_PORT/t0780 (PostgreSQL; schema version" "$RUN_LOG" ||
        { grep '^parley: database' "$RUN_LOG"; return 1; }
    _v=$(it_pg_sql "SELECT count(*) FROM parley_schema" -d t0780) || return 1
    [ "${_v:-0}" -gt 0 ] || { echo "t0780 has no migration recorded"; return 1; }
    _o=$(it_pg_sql "SELECT tableowner FROM pg_tables WHERE tablename = 'events'" -d t0780)
    [ "$_o" = "$ROLE" ] || { echo "events owned by '$_o'"; return 1; }
}
ok "it uses that server (no private one), migrated as $ROLE" uri_used
T3=t0780-uri-$$
uri_ticket() {
    lp_ticket "$NODE2" "$T3" "With a password [[fake tokens=3]] $T3" "$IT_TMP/lp4.out" || return 1
    lp_ticket "$NODE1" "$T3" "With a password [[fake tokens=3]] $T3" "$IT_TMP/lp5.out" || return 1
    grep -q '"type":"cached"' "$IT_TMP/lp5.out" || { echo "node 1: not cached"; return 1; }
}
ok "a ticket answered through node 2 is cached on node 1 (PARLEY_DB with a password)" uri_ticket
logs_clean() {
    [ -n "$RUN_TMP" ] && [ -d "$RUN_TMP" ] || { echo "no run directory"; return 1; }
    _hits=$(grep -rl -- "$PW" "$RUN_TMP"/*/logs "$RUN_TMP"/bridge*/parley-ws.log 2>/dev/null) || true
    [ -z "$_hits" ] || { echo "the password is in: $_hits"; return 1; }
}
ok "no node's log (web server, parley.fcgi, bridge) holds the password" logs_clean
PROCS="$(descendants "$RUN_PID" | tr '\n' ' ') $RUN_PID"
kill -INT "$RUN_PID"
# shellcheck disable=SC2086
ok "SIGINT: every process of this run.sh gone within 30 s" gone_within 30 $PROCS
wait "$RUN_PID" 2>/dev/null || true
ok "the PostgreSQL run.sh did not start still runs" it_alive "$PG_PID"
no_password() {
    ! grep -q -- "$PW" "$RUN_LOG" || { echo "the password is in run.sh's output:"; grep -n -- "$PW" "$RUN_LOG" | sed "s/$PW/<PASSWORD>/g"; return 1; }
    grep -q '^parley: stopped' "$RUN_LOG" || { tail -n 5 "$RUN_LOG"; return 1; }
}
ok "run.sh's whole output never holds the password" no_password

# the same URI where nothing listens: a clear failure, no password
DEAD_PORT=$(free_port)
DEAD_LOG=$IT_TMP/run-dead.log
env PARLEY_DB="postgresql://$ROLE:$PW@127.0.0.1:$DEAD_PORT/t0780" PORT="$(free_port)" BUILD="$BUILD" \
    OLLAMA_SERVER="$FAKE_LLM_URL" timeout 60 sh tools/run.sh >"$DEAD_LOG" 2>&1 </dev/null && _rc=0 || _rc=$?
dead_clear() {
    [ "$_rc" -ne 0 ] && [ "$_rc" -ne 124 ] || { echo "exit status $_rc"; cat "$DEAD_LOG"; return 1; }
    grep -q 'cannot create/migrate the PostgreSQL database' "$DEAD_LOG" || { cat "$DEAD_LOG"; return 1; }
    grep -q "127.0.0.1:$DEAD_PORT" "$DEAD_LOG" || { echo "the server is not named"; cat "$DEAD_LOG"; return 1; }
    ! grep -q -- "$PW" "$DEAD_LOG" || { echo "the password is in the output"; return 1; }
}
ok "PARLEY_DB naming a server that is down: a clear error naming it, no password" dead_clear

# ===== 3. refusals ============================================================
_rc=0
_out=$(env NODES=2 PARLEY_DB="$IT_TMP/data/refused.db" PORT="$(free_port)" BUILD="$BUILD" \
    timeout 30 sh tools/run.sh 2>&1 </dev/null) || _rc=$?
ok "NODES=2 on SQLite is refused, saying why" sh -c '[ "$1" = 2 ] && printf "%s" "$2" | grep -q "NODES=2 needs PostgreSQL" || { echo "$1: $2"; exit 1; }' sh "$_rc" "$_out"
_rc=0
_out=$(env DB=postgres PARLEY_DB="$URI" PORT="$(free_port)" BUILD="$BUILD" \
    timeout 30 sh tools/run.sh 2>&1 </dev/null) || _rc=$?
ok "DB=postgres with a PostgreSQL PARLEY_DB is refused, without the password" sh -c '[ "$1" = 2 ] &&
    printf "%s" "$2" | grep -q "use one of them" && ! printf "%s" "$2" | grep -q -- "$3" || { echo "exit $1"; exit 1; }' sh "$_rc" "$_out" "$PW"
it_done
