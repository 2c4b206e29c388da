#!/bin/sh
# t0700-postgres.sh — the private PostgreSQL 15 that issue 10's backend,
# its tests and `DB=postgres make run` stand on (lib.sh it_postgres,
# tools/run.sh), checked for what those later steps rely on:
#   - it starts (timed: initdb and start, as diagnostics), answers as
#     PostgreSQL 15, as a non-root account, on 127.0.0.1 only (never
#     0.0.0.0 or IPv6) and on its unix socket inside the temp dir; PG_URL
#     and the PG* variables reach it;
#   - a unique constraint rejects a duplicate (SQLSTATE 23505);
#   - LISTEN/NOTIFY (tests/tools/pg-notify): a notification sent inside a
#     committed transaction reaches a listening session, one from a
#     rolled-back transaction does not;
#   - it_pg_stop: the postmaster and its backends are gone, nothing listens
#     on its port or socket, the server's log shows a clean shutdown and no
#     error but the expected duplicate;
#   - DB=postgres tools/run.sh: prints the URI of a server that answers,
#     serves Parley on it (/api/health 200, database ok; a SQLite PARLEY_DB
#     in the environment is said not to be used), stops the server with
#     everything else, and reuses its cluster next time.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

NOTIFY_BIN=$BUILD/tests/pg-notify
[ -x "$NOTIFY_BIN" ] || it_die "$NOTIFY_BIN is not built (make; needs libpq-dev)"

it_init
it_postgres
ok "PostgreSQL started (initdb $PG_INITDB_MS ms, start $PG_START_MS ms, port $PG_PORT)" it_alive "$PG_PID"

# --- what it is and where it listens ------------------------------------------
is_15() {
    _v=$(it_pg_sql "SHOW server_version_num") || return 1
    case $_v in 15[0-9][0-9][0-9][0-9]) echo "server_version_num $_v" ;; *) echo "server_version_num '$_v'"; return 1 ;; esac
}
ok "the server answers as PostgreSQL 15" is_15

not_root() {
    _uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$PG_PID/status")
    [ -n "$_uid" ] && [ "$_uid" != 0 ] || { echo "postmaster uid '$_uid'"; return 1; }
    if [ -n "$APP_USER" ]; then
        [ "$_uid" = "$(id -u "$APP_USER")" ] || { echo "uid $_uid, not $APP_USER's"; return 1; }
    fi
    echo "postmaster pid $PG_PID, uid $_uid"
}
ok "the server runs as a non-root account${APP_USER:+ ($APP_USER)}" not_root

# Listening TCP sockets on port $1 from /proc/net/tcp and tcp6, one
# "tcp ADDR" / "tcp6 ADDR" line each (ADDR as the kernel prints it in hex).
listeners() {
    _hex=$(printf '%04X' "$1")
    for _f in tcp tcp6; do
        [ -r "/proc/net/$_f" ] || continue
        awk -v p="$_hex" -v f="$_f" 'NR > 1 && $4 == "0A" { split($2, a, ":"); if (a[2] == p) print f, a[1] }' "/proc/net/$_f"
    done
}
loopback_only() {
    _l=$(listeners "$PG_PORT")
    _la=$(it_pg_sql "SHOW listen_addresses")
    echo "listen_addresses '$_la'; listening: $(echo $_l)"
    [ "$_la" = 127.0.0.1 ] || return 1
    # 127.0.0.1 is 0100007F in /proc/net/tcp (little-endian)
    [ "$_l" = "tcp 0100007F" ] || return 1
}
ok "it listens on 127.0.0.1:$PG_PORT only (not 0.0.0.0, not IPv6)" loopback_only

socket_ok() {
    [ -S "$PG_SOCKDIR/.s.PGSQL.$PG_PORT" ] || { echo "no socket in $PG_SOCKDIR"; return 1; }
    case $PG_SOCKDIR in "$IT_TMP"/*) ;; *) echo "socket dir $PG_SOCKDIR outside $IT_TMP"; return 1 ;; esac
    _u=$(PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -At -h "$PG_SOCKDIR" -p "$PG_PORT" -U parley -d parley \
        -c "SELECT current_user || ' ' || coalesce(inet_server_addr()::text, 'socket')") || return 1
    [ "$_u" = "parley socket" ] || { echo "over the socket: '$_u'"; return 1; }
}
ok "it answers on its unix socket inside the temp dir" socket_ok

url_ok() {
    _a=$(PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -At "$PG_URL" -c "SELECT current_database() || ' ' || inet_server_addr()") || return 1
    [ "$_a" = "parley 127.0.0.1/32" ] || { echo "PG_URL: '$_a'"; return 1; }
    _b=$(PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -At -c "SELECT current_database()") || return 1
    [ "$_b" = parley ] || { echo "PGHOST/PGPORT/...: '$_b'"; return 1; }
    echo "$PG_URL"
}
ok "PG_URL and PGHOST/PGPORT reach database parley over 127.0.0.1" url_ok

# --- a unique constraint ---------------------------------------------------------
it_pg_sql "CREATE TABLE t0700_u (k text NOT NULL UNIQUE, v int)" >/dev/null
it_pg_sql "INSERT INTO t0700_u VALUES ('a', 1)" >/dev/null
dup_rejected() {
    if _e=$(it_pg_sql "INSERT INTO t0700_u VALUES ('a', 2)" -v VERBOSITY=verbose 2>&1); then
        echo "the duplicate was inserted"; return 1
    fi
    printf '%s\n' "$_e" | grep -q '23505' || { echo "not a unique violation: $_e"; return 1; }
    _n=$(it_pg_sql "SELECT count(*) || ' ' || min(v) FROM t0700_u WHERE k = 'a'")
    [ "$_n" = "1 1" ] || { echo "rows for 'a': $_n"; return 1; }
    printf '%s\n' "$_e" | head -n 1
}
ok "a table with a unique constraint rejects a duplicate (23505), the first row stays" dup_rejected

# --- LISTEN/NOTIFY ---------------------------------------------------------------
# pg-notify prints "listening" once its LISTEN is in effect, then each
# payload; it stops at payload "end". The rolled-back notification is sent
# first: were it delivered, it would come before "committed".
it_pg_sql "CREATE TABLE t0700_ev (id serial PRIMARY KEY, what text NOT NULL)" >/dev/null
NOTIFY_OUT=$IT_TMP/pg-notify.out
it_bg "$NOTIFY_OUT" "$NOTIFY_BIN" "$PG_URL" parley_t0700 end 10000
NOTIFY_PID=$IT_LAST_PID
_i=0
while ! grep -qx listening "$NOTIFY_OUT" && it_alive "$NOTIFY_PID" && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
listening() { grep -qx listening "$NOTIFY_OUT" || { cat "$NOTIFY_OUT"; return 1; }; }
ok "pg-notify LISTENs on PG_URL" listening
it_pg_sql "BEGIN; INSERT INTO t0700_ev (what) VALUES ('rolled-back');
           SELECT pg_notify('parley_t0700', 'rolled-back'); ROLLBACK" >/dev/null
it_pg_sql "BEGIN; INSERT INTO t0700_ev (what) VALUES ('committed');
           NOTIFY parley_t0700, 'committed'; COMMIT" >/dev/null
it_pg_sql "NOTIFY parley_t0700, 'end'" >/dev/null
_rc=0
_i=0
while it_alive "$NOTIFY_PID" && [ $_i -lt 200 ]; do sleep 0.05; _i=$((_i + 1)); done
it_alive "$NOTIFY_PID" && kill -TERM "$NOTIFY_PID"
wait "$NOTIFY_PID" || _rc=$?
notified() {
    _got=$(tr '\n' ' ' <"$NOTIFY_OUT")
    echo "pg-notify exit $_rc: $_got"
    [ "$_rc" = 0 ] && [ "$_got" = "listening committed end " ]
}
ok "LISTEN gets the NOTIFY of a committed transaction and not that of a rolled-back one" notified
rows() {
    _r=$(it_pg_sql "SELECT string_agg(what, ',' ORDER BY id) FROM t0700_ev")
    [ "$_r" = committed ] || { echo "rows: '$_r'"; return 1; }
}
ok "and only the committed transaction's row is stored" rows

# --- stopping ----------------------------------------------------------------------
# The postmaster's children (its backends and auxiliary processes).
pg_children() {
    for _d in /proc/[0-9]*; do
        _pp=$(sed -n 's/^PPid:[[:space:]]*//p' "$_d/status" 2>/dev/null) || continue   # gone meanwhile
        [ "$_pp" = "$1" ] && echo "${_d#/proc/}"
    done
    return 0
}
_pid=$PG_PID _port=$PG_PORT
_kids=$(pg_children "$_pid")
it_pg_stop                          # here, not inside ok's subshell: it reaps its child
stopped() {
    [ -n "$_kids" ] || { echo "no child processes of postmaster $_pid seen before the stop"; return 1; }
    [ -z "$PG_PID" ] || return 1
    it_alive "$_pid" && { echo "postmaster $_pid still runs"; return 1; }
    for _k in $_kids; do
        it_alive "$_k" && [ "$(readlink "/proc/$_k/exe" 2>/dev/null)" = "$PG_BIN/postgres" ] &&
            { echo "backend $_k still runs"; return 1; }
    done
    _l=$(listeners "$_port")
    [ -z "$_l" ] || { echo "still listening on $_port: $_l"; return 1; }
    [ ! -e "$PG_SOCKDIR/.s.PGSQL.$_port" ] || { echo "socket left"; return 1; }
    [ ! -e "$PG_DATA/postmaster.pid" ] || { echo "postmaster.pid left"; return 1; }
    echo "postmaster $_pid and its $(echo $_kids | wc -w) children gone"
}
ok "it_pg_stop: postmaster and backends gone, nothing listening on its port or socket" stopped
log_clean() {
    # the one expected error is the duplicate insert above; and the
    # harness's own readiness probe (pg_isready, every 0.1 s from the
    # start) is refused with "FATAL: the database system is starting up"
    # when it comes before the server is ready — the clean-clone CI met it
    _bad=$(grep -E '(ERROR|FATAL|PANIC):' "$PG_LOG" |
        grep -v -e 'duplicate key value violates unique constraint "t0700_u_k_key"' \
            -e 'FATAL:  the database system is starting up') || true
    [ -z "$_bad" ] || { printf '%s\n' "$_bad" | head -n 10; return 1; }
    grep -q 'database system is shut down' "$PG_LOG" || { echo "no clean shutdown in $PG_LOG"; tail -n 5 "$PG_LOG"; return 1; }
}
ok "the server's log has no error but the duplicate, and ends with a clean shutdown" log_clean

# --- DB=postgres make run ------------------------------------------------------------
for _b in parley parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        TAP_N=$((TAP_N + 1))
        echo "ok $TAP_N - DB=postgres make run # SKIP $BUILD/$_b is not built"
        it_done
        exit $?
    fi
done
it_fake_llm
RUN_PG=$IT_TMP/run-pg        # PG_DIR: the cluster run.sh keeps between runs
mkdir -p "$RUN_PG"
it_own "$RUN_PG"

# run_pg N — starts DB=postgres tools/run.sh (log $IT_TMP/run-N.log) and
# waits until it serves; RUN_PID, RUN_LOG, RUN_URL (the URI it printed) and
# RUN_PG_PID (its postmaster, from postmaster.pid) are set.
run_pg() {
    RUN_LOG=$IT_TMP/run-$1.log
    RUN_PORT=$(free_port)
    it_bg "$RUN_LOG" env DB=postgres PG_DIR="$RUN_PG" PARLEY_DB="$IT_TMP/data/run-pg.db" PORT="$RUN_PORT" \
        BUILD="$BUILD" FAKE_LLM_URL="$FAKE_LLM_URL" OLLAMA_SERVER= sh tools/run.sh
    RUN_PID=$IT_LAST_PID
    _i=0
    while ! grep -q '^parley: Ctrl-C stops everything' "$RUN_LOG" && it_alive "$RUN_PID" && [ $_i -lt 1200 ]; do
        sleep 0.1; _i=$((_i + 1))
    done
    RUN_URL=$(sed -n 's|^parley: PostgreSQL 15 started at \(postgresql://[^ ]*\) .*|\1|p' "$RUN_LOG" | head -n 1)
    RUN_PG_PID=$(head -n 1 "$RUN_PG/postmaster.pid" 2>/dev/null || true)
}
run_serves() {
    grep -q '^parley: Ctrl-C stops everything' "$RUN_LOG" || { tail -n 30 "$RUN_LOG"; return 1; }
    case $RUN_URL in postgresql://parley@127.0.0.1:[0-9]*/parley) ;; *) echo "URI '$RUN_URL'"; return 1 ;; esac
    _h=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RUN_PORT/api/health")
    [ "$_h" = 200 ] || { echo "GET /api/health: $_h"; return 1; }
    grep -q "^parley: database $RUN_URL (PostgreSQL; schema version [0-9]*)\$" "$RUN_LOG" ||
        { echo "not on its PostgreSQL:"; grep '^parley: database' "$RUN_LOG"; return 1; }
    grep -q "PARLEY_DB (the SQLite file $IT_TMP/data/run-pg.db) is not used" "$RUN_LOG" ||
        { echo "no notice that the SQLite PARLEY_DB is not used"; return 1; }
    curl -sS -m 10 "http://127.0.0.1:$RUN_PORT/api/health" | grep -q '"database":"ok"' ||
        { echo "database not ok"; return 1; }
    echo "$RUN_URL"
}
run_psql() { PGCONNECT_TIMEOUT=5 timeout 30 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$RUN_URL" -c "$1"; }
# run_stopped — after SIGTERM to run.sh (what its Ctrl-C does, but from
# outside the terminal; it_stop in this shell, which reaps it): its cleanup
# must have stopped the PostgreSQL it started.
run_stopped() {
    [ -n "$RUN_PG_PID" ] || { echo "no postmaster.pid was seen while it ran"; return 1; }
    it_alive "$RUN_PG_PID" && { echo "postmaster $RUN_PG_PID still runs"; return 1; }
    [ ! -e "$RUN_PG/postmaster.pid" ] || { echo "postmaster.pid left"; return 1; }
    grep -q '^parley: stopped' "$RUN_LOG" || { tail -n 5 "$RUN_LOG"; return 1; }
    echo "postmaster $RUN_PG_PID gone"
}

run_pg 1
ok "DB=postgres make run: serves on a private PostgreSQL and prints its URI" run_serves
first_use() {
    _t=$(sed -n 's/^parley:   initdb \([0-9]*\) ms, start \([0-9]*\) ms.*/initdb \1 ms, start \2 ms/p' "$RUN_LOG")
    run_psql "CREATE TABLE t0700_kept (v text); INSERT INTO t0700_kept VALUES ('from run 1')" || return 1
    [ "$(run_psql "SHOW listen_addresses")" = 127.0.0.1 ] || return 1
    echo "$_t"
}
ok "DB=postgres make run: its PostgreSQL takes a table (loopback only)" first_use
it_stop "$RUN_PID"
ok "DB=postgres make run: stopping it stops its PostgreSQL" run_stopped
if [ -e "$RUN_PG/postmaster.pid" ] && [ -n "$RUN_PG_PID" ] && it_alive "$RUN_PG_PID"; then
    kill -INT "$RUN_PG_PID"         # the failure above left it running: ours to stop
fi

run_pg 2
reused() {
    run_serves >/dev/null || { run_serves; return 1; }
    grep -q "^parley: PostgreSQL: reusing the cluster in $RUN_PG" "$RUN_LOG" || { echo "no 'reusing' line"; return 1; }
    _v=$(run_psql "SELECT v FROM t0700_kept") || return 1
    [ "$_v" = "from run 1" ] || { echo "t0700_kept: '$_v'"; return 1; }
}
ok "DB=postgres make run again: reuses the cluster (the table of run 1 is there)" reused
it_stop "$RUN_PID"
ok "DB=postgres make run again: stopping it stops its PostgreSQL" run_stopped
if [ -e "$RUN_PG/postmaster.pid" ] && [ -n "$RUN_PG_PID" ] && it_alive "$RUN_PG_PID"; then
    kill -INT "$RUN_PG_PID"
fi

it_done
