#!/bin/sh
# t0520-poll-limits.sh — the long-poll transport's bounds (frames per POST,
# frames waiting in a session's outbox, pings, open sessions per user) and
# its rate-limit identity (a session opened with the token only in its
# path is limited as its user), through Apache + mod_proxy_fcgi in front of
# parley.fcgi (tests/integration/poll-limits.mjs; issue 8 defects b and c).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

if [ ! -x "$BUILD/parley.fcgi" ]; then
    echo "ok 1 - long-poll limits # SKIP $BUILD/parley.fcgi is not built"
    echo "1..1"
    exit 0
fi

it_init
it_fake_llm
it_jwt_config
LIMIT=4
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=$LIMIT" >>"$IT_APP_CONFIG"
IT_NO_WS=1
start_proxy_fcgi "$BUILD/parley.fcgi"
it_log "web server $BASE"

PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET LIMIT=$LIMIT \
    it_node_tap "" tests/integration/poll-limits.mjs
# Under SANITIZE=address,undefined any report in a log (a leak at exit
# included) fails the run.
stop_setup
_hits=$(grep -rlE --include='*.log' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
TAP_N=$((TAP_N + 1))
if [ -n "$_hits" ]; then
    TAP_FAILED=$((TAP_FAILED + 1))
    echo "not ok $TAP_N - sanitizer reports in: $_hits"
    for _f in $_hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$_f" | sed 's/^/# /'; done
else
    echo "ok $TAP_N - no sanitizer report in the app's log"
fi
it_done
