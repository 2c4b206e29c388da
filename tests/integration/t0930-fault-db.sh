#!/bin/sh
# t0930-fault-db.sh — the SQLite part of the database fault matrix (issue 13
# item 2): the database locked by another writer for 10 s, its disk full,
# and a read-only spell on the transports t0515-readonly.sh does not cover.
#
# Three complete setups side by side, each lighttpd + parley.fcgi + parley-ws
# with the shipped apache-conf files (lib.sh: lighttpd-parley.conf verbatim,
# the bridge as parley-ws.service starts it), each on its own database, the
# apps running as the app account (www-data when run as root, so file
# permissions are real). One simulated LLM of this script's own (its request
# log is the witness of upstream calls). The three scenarios of
# faults-db.mjs run at the same time, one per setup:
#
#   locked    sqlite3 holds BEGIN EXCLUSIVE for 10 s while 6 generations
#             stream (seed 000 over WebSocket and Parley long-poll, seed 004
#             SSE, Phoenix LongPoll and WebSocket, OpenAI SSE) and 6 new
#             questions start
#   full      the database lives on a 24 MB tmpfs (as root: mount; skipped,
#             saying why, otherwise), filled while 6 generations stream
#             (they end "interrupted", from memory, or database_readonly),
#             then 6 new questions (database_readonly, no upstream call);
#             then emptied
#   readonly  parley.db 0444 while 5 generations stream (they end done), new
#             questions on Parley long-poll, Phoenix LongPoll/WebSocket and
#             OpenAI get database_readonly with no upstream call, health 503
#             read-only; then 0644
#
# The long-poll transports keep their sessions in the database: during a
# fault a Parley long-poll GET may get 503 database_readonly (the client
# polls again) and Phoenix LongPoll {"status":500} (phoenix.js reconnects
# and rejoins); such a client waits through the fault and must resume after
# it with the whole answer or a documented error (faults-db.mjs ends each
# fault once every client has an outcome or waits so).
#
# For each: every client ends with the whole answer or a documented error
# code, never a hang; afterwards each question again gives the whole answer
# (from a new upstream request when its first try failed: nothing partial
# cached), new questions on every transport end done without a restart,
# /api/health is 200 ok, no job is left running past its lease, and PRAGMA
# integrity_check is ok. TAP output; exit status 0 only if all passed.
# About 30 s under ASan+UBSan (the three scenarios at once; the lock
# alone is 10 s).
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - database faults # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

# The tmpfs mount for the disk-full case, when we can make one here.
FULL_MNT="" FULL_HOW=""

it_init
# this script's own simulated LLM: its request log must hold our requests only
unset FAKE_LLM_URL
it_fake_llm

# The mount goes before the cleanup's rm -rf: lazily unmounted (the servers
# on it are stopped by then, or will be).
fdb_cleanup() {
    _rc=$?
    [ -n "$FULL_MNT" ] && [ "$FULL_HOW" = mount ] && umount -l "$FULL_MNT" 2>/dev/null
    (exit "$_rc")
    it_cleanup
}
trap fdb_cleanup EXIT

LEASE_MS=3000
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOC
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=5
PARLEY_LEASE_MS=$LEASE_MS
EOC
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG

# The disk-full database: a 24 MB tmpfs (its own mount, or none).
FULL_DIR=$IT_TMP/full
mkdir -p "$FULL_DIR"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=24m,mode=0755 fdb-tmpfs "$FULL_DIR" 2>"$IT_TMP/mount.err"; then
    FULL_MNT=$FULL_DIR FULL_HOW=mount
    it_own "$FULL_DIR"
else
    FULL_HOW="no tmpfs: $( [ "$(id -u)" = 0 ] && cat "$IT_TMP/mount.err" || echo 'not root (unshare -Urm cannot give the app account its own mount here)')"
fi

# setup NAME DB — lighttpd + parley.fcgi + parley-ws on DB; sets NAME_BASE,
# NAME_WS.
setup() {
    IT_NODE=$1 IT_DB=$2 WS_PORT=""
    start_bridge || it_die "parley-ws ($1) did not start"
    WS_PORT=$BRIDGE_PORT
    start_lighttpd "$BUILD/parley.fcgi"
    eval "${1}_BASE=\$BASE ${1}_WS=ws://127.0.0.1:\${BASE##*:}"
    it_log "$1: $BASE (bridge $BRIDGE_PORT), database $2"
}
setup locked "$IT_TMP/data/locked.db"
setup readonly "$IT_TMP/data/readonly.db"
[ -n "$FULL_MNT" ] && setup full "$FULL_DIR/parley.db"

# scenario NAME — faults-db.mjs NAME against its setup, in the background;
# its PASS/FAIL lines go to $IT_TMP/NAME.out.
scenario() {
    eval "_base=\$${1}_BASE _ws=\$${1}_WS"
    case $1 in full) _db=$FULL_DIR/parley.db ;; *) _db=$IT_TMP/data/$1.db ;; esac
    BASE=$_base WS=$_ws FAKE=$FAKE_LLM_URL DB=$_db FILL_DIR=$FULL_DIR AS_APP=$AS_APP LEASE_MS=$LEASE_MS PARLEY_CLI=$CLI \
        timeout 150 node tests/integration/faults-db.mjs "$1" >"$IT_TMP/$1.out" 2>&1 &
    eval "${1}_PID=\$!"
}
case $BUILD in /*) CLI=$BUILD/parley ;; *) CLI=$IT_ROOT/$BUILD/parley ;; esac
T0=$(date +%s)
scenario locked
scenario readonly
[ -n "$FULL_MNT" ] && scenario full

# report NAME — the scenario's lines as TAP.
report() {
    eval "wait \$${1}_PID" && _rc=0 || _rc=$?
    _seen=0
    while IFS= read -r _l; do
        case $_l in
        "PASS "*) TAP_N=$((TAP_N + 1)); _seen=1; echo "ok $TAP_N - ${_l#PASS }" ;;
        "FAIL "*) TAP_N=$((TAP_N + 1)); _seen=1; TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - ${_l#FAIL }" ;;
        "#"*) echo "$_l" ;;
        *) echo "# $1: $_l" ;;
        esac
    done <"$IT_TMP/$1.out"
    if [ "$_seen" = 0 ] || { [ "$_rc" != 0 ] && [ "$_rc" != 1 ]; }; then
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - $1: faults-db.mjs ended with status $_rc"
    fi
}
report locked
report readonly
if [ -n "$FULL_MNT" ]; then
    report full
else
    TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - disk full # SKIP $FULL_HOW"
fi
it_log "the scenarios took $(($(date +%s) - T0)) s"
for _n in locked readonly full; do
    for _f in "$IT_TMP/bridge-$_n/parley-ws.log" "$IT_TMP/lighttpd-$_n/logs/error.log"; do
        [ -s "$_f" ] && grep -i 'AddressSanitizer\|runtime error\|LeakSanitizer' "$_f" | head -n 5 | sed "s|^|# $_n: |"
    done
done
ok "no sanitizer report in the servers' logs" sh -c "! grep -l 'AddressSanitizer\|runtime error:\|LeakSanitizer' \
    $IT_TMP/bridge-*/parley-ws.log $IT_TMP/lighttpd-*/logs/* 2>/dev/null"
it_done
