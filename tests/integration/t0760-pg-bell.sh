#!/bin/sh
# t0760-pg-bell.sh — the doorbell across nodes on PostgreSQL (issue 10):
# against a private PostgreSQL 15 (it_postgres), with,
#   - test_bell_pg: a commit on another connection, and one in another
#     process, wakes a follower sleeping in bell_wait / bell_wait_any on a
#     listening bell (NOTIFY in the appending transaction, one LISTEN
#     connection per process); a rolled-back append wakes nobody; the
#     listener's backend killed (pg_terminate_backend, found by its
#     application_name) while connections are refused and an append
#     committed meanwhile: the listener comes back, the follower is woken
#     and reads that event, a later append is delivered again;
#     bell_wake_all joins the listener (its backend leaves);
#   - test_bell, test_bell_wake, test_bell_any: their cases on the
#     listening bell (timeouts, fan-out to 50, slot isolation, signals,
#     wake_all with another "process", the race of 200 rounds, "any");
#   - the run uses a role with a password in the URI: the password is in
#     none of the programs' output, and the outage was logged once lost and
#     once back (redacted);
#   - parley-ws on PostgreSQL: refused without PARLEY_NODE_PREFIX (the
#     message names it, not the password); with it, <prefix>-ws.up and
#     <prefix>-ws.prom are written, the process holds exactly one LISTEN
#     connection (its long-poll front shares the doorbell), and SIGTERM
#     ends it with status 0, the marker and the connection gone;
#     `parley migrate` opens the listening bell too and shows the URI redacted;
#   - no LISTEN connection of these programs is left on the server.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _t in tests/test_bell_pg tests/test_bell tests/test_bell_wake tests/test_bell_any \
          parley-ws parley; do
    [ -x "$BUILD/$_t" ] || it_die "$BUILD/$_t is not built (make)"
done

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

# A role with a password that owns its database (it may then end its own
# backends and refuse connections to its database, as test_bell_pg does).
SECRET="t0760-Pw$(date +%s%N | tail -c 10)x"
PW_URL="postgresql://t0760pw:$SECRET@127.0.0.1:$PG_PORT/t0760pw"
setup_role() {
    it_pg_sql "CREATE ROLE t0760pw LOGIN PASSWORD '$SECRET'" -d postgres &&
    it_pg_sql "CREATE DATABASE t0760pw OWNER t0760pw" -d postgres
}
ok "a role with a password and its own database" setup_role

# run NAME — runs $BUILD/tests/NAME against PostgreSQL into $IT_TMP/NAME.out
run() {
    _rc=0
    PARLEY_TEST_PG=$PW_URL \
        timeout 180 "$BUILD/tests/$1" >"$IT_TMP/$1.out" 2>&1 || _rc=$?
    sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/$1.out" >"$IT_TMP/$1.pg"
    echo "$_rc" >"$IT_TMP/$1.rc"
}
for _t in test_bell_pg test_bell test_bell_wake test_bell_any; do
    run "$_t"
done

# passed PROG — PROG exited 0, ran its PostgreSQL cases, no "not ok"
passed() {
    _rc=$(cat "$IT_TMP/$1.rc")
    if [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/$1.pg" &&
       ! grep -q '^not ok' "$IT_TMP/$1.out"; then
        return 0
    fi
    echo "$1 (exit $_rc):"
    tail -n 40 "$IT_TMP/$1.out"
    return 1
}
# pg_case PROG NAME — NAME passed in PROG's PostgreSQL run (its notes shown)
pg_case() {
    if grep -q "^ok [0-9]* - $2\$" "$IT_TMP/$1.pg"; then
        awk -v n="$2" '/^ok [0-9]* - / { if ($0 ~ (" - " n "$")) { for (i = 0; i < c; i++) print b[i]; exit } c = 0; next }
                       /^# / { b[c++] = $0 }' "$IT_TMP/$1.pg" | grep -v '^# backend' | head -n 5
        return 0
    fi
    grep -v '^ok ' "$IT_TMP/$1.out" | tail -n 30
    return 1
}

ok "test_bell_pg passed its PostgreSQL cases" passed test_bell_pg
ok "a commit on another connection wakes a follower on the listening bell (bell_wait, any); it reads the event" \
    pg_case test_bell_pg commit_on_another_connection_wakes_follower
ok "a commit in another process wakes the follower" \
    pg_case test_bell_pg commit_in_another_process_wakes_follower
ok "a rolled-back append wakes nobody (the slot does not move); the committed one does" \
    pg_case test_bell_pg rolled_back_append_wakes_nobody
ok "the LISTEN connection killed during an outage: reconnected, follower woken, re-read finds the outage's event, next append delivered" \
    pg_case test_bell_pg killed_listener_reconnects_and_followers_reread
ok "bell_wake_all wakes the sleepers and joins the listener (its backend leaves); a second handle's does not" \
    pg_case test_bell_pg wake_all_joins_the_listener
ok "test_bell's cases on the listening bell (timeouts, 50 waiters, isolation, signals)" passed test_bell
ok "test_bell_wake's cases on listening bells (wake_all, 200 racing rounds)" passed test_bell_wake
ok "test_bell_any's case on a listening bell (another process commits)" passed test_bell_any

outage_logged() {
    _f=$IT_TMP/test_bell_pg.out
    _lost=$(grep -c 'doorbell: LISTEN connection to .* lost' "$_f")
    _back=$(grep -c 'doorbell: LISTEN connection to .* is back' "$_f")
    grep 'doorbell: LISTEN connection' "$_f"
    [ "$_lost" = 1 ] && [ "$_back" = 1 ] && grep 'doorbell: LISTEN connection' "$_f" | grep -q '\*\*\*'
}
ok "the outage was logged once lost and once back, with the password redacted" outage_logged


# parley-ws on PostgreSQL
WS_OUT=$IT_TMP/ws.out
NODE=$IT_TMP/node-a
ws_needs_prefix() {
    _rc=0
    PARLEY_DB=$PW_URL timeout 20 "$BUILD/parley-ws" \
        --listen 127.0.0.1:0 >"$IT_TMP/ws-noprefix.out" 2>&1 || _rc=$?
    cat "$IT_TMP/ws-noprefix.out"
    [ "$_rc" != 0 ] && grep -q 'PARLEY_NODE_PREFIX: must be set' "$IT_TMP/ws-noprefix.out" &&
        ! grep -qF -- "$SECRET" "$IT_TMP/ws-noprefix.out"
}
ok "parley-ws with a PostgreSQL PARLEY_DB and no PARLEY_NODE_PREFIX: refused, naming the setting" \
    ws_needs_prefix

PARLEY_DB=$PW_URL PARLEY_NODE_PREFIX=$NODE \
    "$BUILD/parley-ws" --listen 127.0.0.1:0 >"$WS_OUT" 2>&1 &
WS_PID=$!
ws_serves() {
    _i=0
    while [ ! -f "$NODE-ws.up" ] || [ ! -f "$NODE-ws.prom" ]; do
        _i=$((_i + 1))
        [ "$_i" -lt 100 ] && it_alive "$WS_PID" || { cat "$WS_OUT"; return 1; }
        sleep 0.1
    done
    _n=$(it_pg_sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'parley-bell/$WS_PID'") ||
        return 1
    echo "$NODE-ws.up, -ws.prom; LISTEN connections of pid $WS_PID: $_n"
    [ "$_n" = 1 ]
}
ok "parley-ws with PARLEY_NODE_PREFIX: <prefix>-ws.up and -ws.prom written, one LISTEN connection for the process" \
    ws_serves
kill -TERM "$WS_PID"
WS_RC=0
wait "$WS_PID" || WS_RC=$?
ws_stops() {
    _i=0
    while :; do        # the server ends the backend just after the client left
        _n=$(it_pg_sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'parley-bell/$WS_PID'") ||
            return 1
        [ "$_n" = 0 ] || [ "$_i" -ge 40 ] && break
        _i=$((_i + 1))
        sleep 0.05
    done
    echo "exit $WS_RC; LISTEN connections left: $_n; marker: $(ls "$NODE-ws.up" 2>&1)"
    [ "$WS_RC" = 0 ] && [ "$_n" = 0 ] && [ ! -e "$NODE-ws.up" ]
}
ok "SIGTERM: parley-ws exits 0, its LISTEN connection and marker are gone" ws_stops

cli_migrate() {
    _out=$(PARLEY_DB=$PW_URL PARLEY_NODE_PREFIX=$NODE \
           timeout 30 "$BUILD/parley" migrate 2>&1) || { echo "$_out"; return 1; }
    echo "$_out"
    echo "$_out" | grep -q 'postgresql://t0760pw:\*\*\*@' && ! echo "$_out" | grep -qF -- "$SECRET"
}
ok "parley migrate on PostgreSQL (its doorbell listens too): URI redacted" cli_migrate

no_listener_left() {
    _n=$(it_pg_sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'parley-bell/%'") ||
        return 1
    echo "listeners left: $_n"
    [ "$_n" = 0 ]
}
ok "no LISTEN connection is left on the server" no_listener_left

no_secret() {
    if grep -F -- "$SECRET" "$IT_TMP"/test_bell*.out "$WS_OUT"; then
        echo "the password appears in a program's output"
        return 1
    fi
    return 0
}
ok "the password appears in no program's output" no_secret

it_done
