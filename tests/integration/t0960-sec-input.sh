#!/bin/sh
# t0960-sec-input.sh — hostile input through a real web server (issue 13
# item 3): lighttpd + parley.fcgi (apache-conf/lighttpd-parley.conf, which
# proxies the WebSocket paths to parley-ws) and the bridge
# (apache-conf/parley-ws.service), JWT on, one SQLite database (with
# SEC_INPUT_PG=1, as t0961-pg-sec-input.sh runs it: a private PostgreSQL).
#
#   tests/integration/sec-input.mjs: SQL metacharacters and NUL bytes in
#     every string field a client sends (seeds 000-004, Phoenix over
#     WebSocket and LongPoll, long-poll, OpenAI, AI SDK, REST bodies, query
#     parameters of every GET route, headers kept as session metadata):
#     stored byte-exact or refused with the documented error, never a 500,
#     a canary user's rows and the catalogue untouched; 10 MB bodies on
#     every POST route and as WebSocket frames (seeds 000/001/002, Phoenix);
#     NDJSON batches of 100,000 lines on both long-poll transports;
#     metadata bounded wherever a client may send it (session metadata of
#     1 MB included).
#   tests/integration/sec-input-scale.mjs: 10,000 poll-session opens from
#     one user (the per-user cap at scale, other users unaffected, cleanup);
#     40 messages from 5 clients of one user on mixed transports with the
#     default limit of 30 a minute: exactly 30 accepted.
#   sec-input-db.mjs (database reads, SQLite or PostgreSQL) and
#   sec-input-http.mjs (the HTTP client) are their helpers.
#
# Both node files run at the same time (different users), then the
# database's consistency and the sanitizer logs are checked. Debugging:
# SEC_CASES=name,name runs only those cases of sec-input.mjs.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - hostile input # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
[ "${SEC_INPUT_PG:-0}" = 1 ] || command -v sqlite3 >/dev/null 2>&1 || it_die "sqlite3 is not installed"

it_init
it_fake_llm
it_jwt_config
# RATE_LIMIT_MESSAGES_PER_MINUTE and PARLEY_POLL_MAX_SESSIONS are left at
# their documented defaults (30 and 32): the node files count on them.
RATE=30
if [ "${SEC_INPUT_PG:-0}" = 1 ]; then
    # t0961-pg-sec-input.sh: the same on a private PostgreSQL 15
    it_postgres
    IT_DB=$PG_URL
    mkdir -p "$IT_TMP/node"
    it_own "$IT_TMP/node"
    echo "PARLEY_NODE_PREFIX=$IT_TMP/node/parley" >>"$IT_APP_CONFIG"
    export PARLEY_PG_URL=$PG_URL PARLEY_PSQL=$PG_BIN/psql
    DB_DESC="PostgreSQL $PG_URL"
else
    IT_DB=$IT_TMP/data/parley.db
    export PARLEY_DB_PATH=$IT_DB
    DB_DESC="database $IT_DB"
fi

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "lighttpd $BASE, bridge 127.0.0.1:$BRIDGE_PORT, $DB_DESC"

# The two node files at once (different users), each into its own TAP
# file; their results become ours in a fixed order. Bounded: IT_NODE_TIMEOUT
# seconds (180) for each.
export PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET RATE BUILD
_run() {
    _rc=0
    timeout "${IT_NODE_TIMEOUT:-180}" node --test --test-reporter=tap "$1" >"$2" 2>&1 || _rc=$?
    echo "$_rc" >"$2.rc"
}
_run tests/integration/sec-input.mjs "$IT_TMP/a.tap" &
_pa=$!
_run tests/integration/sec-input-scale.mjs "$IT_TMP/b.tap" &
_pb=$!
wait "$_pa" || true
wait "$_pb" || true

for _t in a b; do
    _n=0 _bad=0
    _rc=$(cat "$IT_TMP/$_t.tap.rc" 2>/dev/null) || _rc=missing
    while IFS= read -r _line; do
        case $_line in
        "ok "*|"not ok "*)
            _n=$((_n + 1)); TAP_N=$((TAP_N + 1))
            _name=$(printf '%s' "$_line" | sed -E 's/^(not )?ok [0-9]+ - //')
            case $_line in
            "not ok "*) _bad=$((_bad + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $_name" ;;
            *) echo "ok $TAP_N - $_name" ;;
            esac ;;
        esac
    done <"$IT_TMP/$_t.tap"
    if [ "$_rc" != 0 ] || [ "$_n" -eq 0 ]; then
        grep -E '^ *(error:|expected:|actual:|  [^ #-][^:]*$)' "$IT_TMP/$_t.tap" | grep -v '^ *\(at \|stack\)' |
            head -n 60 | sed 's/^/#   /'
        if [ "$_n" -eq 0 ] || [ "$_bad" -eq 0 ]; then
            TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_t: the node file ran $_n tests, $_bad failed, and exited $_rc (124: timeout)"
            tail -n 20 "$IT_TMP/$_t.tap" | sed 's/^/#   /'
        fi
    fi
done

ok "parley-ws is still running" it_alive "$BRIDGE_PID"
ok "parley.fcgi still answers" sh -c "curl -fsS -m 10 '$BASE/api/health' >/dev/null"
db_consistent() {
    _c=$(node -e 'import("./tests/integration/sec-input-db.mjs").then((d) => console.log(d.consistency()))' 2>&1)
    [ "$_c" = ok ] || { echo "$_c"; return 1; }
}
ok "the database is consistent after it all (SQLite: integrity_check; no orphan messages or outbox rows)" db_consistent

# Sanitizer reports (SANITIZE=address,undefined), a leak at exit included:
# stop_setup and it_done scan what parley.fcgi and the bridge wrote (lib.sh
# it_san_scan) and add a "not ok" line for each.
stop_setup
it_pg_stop
it_done
