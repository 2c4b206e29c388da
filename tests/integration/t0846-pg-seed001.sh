#!/bin/sh
# t0846-pg-seed001.sh — seed 001's queue and sessions on PostgreSQL (issue 11
# item 4): test_proto_chat's storage cases run against a private PostgreSQL
# (it_postgres) with PARLEY_TEST_PG=$PG_URL: queued messages answered in
# order through jobs_claim_turn (the conversation row's lock), a stalled
# queue answered on connect, session metadata, project_id and status, and
# the conflict answer with PARLEY_CHAT_QUEUE=0.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

CHAT_BIN=$BUILD/tests/test_proto_chat
[ -x "$CHAT_BIN" ] || it_die "$CHAT_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

_rc=0
PARLEY_TEST_PG=$PG_URL timeout 240 "$CHAT_BIN" >"$IT_TMP/chat.out" 2>&1 || _rc=$?
sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/chat.out" >"$IT_TMP/chat.pg"

passed() {
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/chat.pg" &&
        ! grep -q '^not ok' "$IT_TMP/chat.out" && return 0
    echo "test_proto_chat (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/chat.out" | tail -n 40
    return 1
}
pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$IT_TMP/chat.pg" && return 0
    grep -v '^ok ' "$IT_TMP/chat.pg" | tail -n 30
    return 1
}

ok "test_proto_chat ran its PostgreSQL cases and passed" passed
for _c in connected_creates_session message_streams_and_stores one_generation_per_connection \
          queued_messages_answered_in_order stalled_queue_answered_on_connect \
          session_metadata_project_and_status; do
    ok "PostgreSQL: seed 001 $_c" pg_case "$_c"
done

it_done
