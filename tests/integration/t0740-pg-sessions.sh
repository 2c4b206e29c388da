#!/bin/sh
# t0740-pg-sessions.sh — long-poll sessions and rate limits on PostgreSQL
# (issue 10): test_pollsess's and test_ratelimit's cases run against a
# private PostgreSQL 15 (it_postgres) with PARLEY_TEST_PG=$PG_URL and
#, each connection standing for a node:
#   - sessions: lock / save / read / ack / touch / peek / delete, expiry,
#     poll_open with its per-owner cap, poll_pump's statuses, as on SQLite;
#   - 8 connections locking one session at once: one holder at a time, the
#     state's counter ends at 8, frames 1..8 once each (no lost update);
#   - 8 connections pumping two sessions at once (in both orders): no
#     failed pump (no duplicate frame, no deadlock), every event in each
#     outbox exactly once and in order (no double delivery);
#   - 8 opens for one owner at once under a cap of 3: exactly 3;
#   - a sweep racing an uncommitted touch leaves the session; a lease taken
#     over while its old holder saves is not wiped by that save;
#   - rate limits: window, retry time, users apart, pruning, as on SQLite;
#     4 processes x 20 hits under a limit of 50: exactly 50; 2L connections
#     hitting a limit L at once: exactly L allowed and stored (5 rounds),
#     and all-or-none batches of 3 under 10: exactly 3;
#   - the tables mirror SQLite's (names, columns, the unique (sid, seq) key)
#     and a user has no more hits stored than the limit allowed.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

POLL_BIN=$BUILD/tests/test_pollsess
RATE_BIN=$BUILD/tests/test_ratelimit
for _b in "$POLL_BIN" "$RATE_BIN"; do
    [ -x "$_b" ] || it_die "$_b is not built (make)"
done

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

# run_unit NAME BIN — runs BIN on SQLite and PostgreSQL; output in $IT_TMP/NAME.out,
# the PostgreSQL run's lines in $IT_TMP/NAME.pg, exit status in $IT_TMP/NAME.rc
run_unit() {
    _rc=0
    PARLEY_TEST_PG=$PG_URL \
        timeout 180 "$2" >"$IT_TMP/$1.out" 2>&1 || _rc=$?
    echo "$_rc" >"$IT_TMP/$1.rc"
    sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/$1.out" >"$IT_TMP/$1.pg"
}
run_unit pollsess "$POLL_BIN"
run_unit ratelimit "$RATE_BIN"

# passed NAME — the unit program NAME exited 0, ran a PostgreSQL part, no case failed
passed() {
    _rc=$(cat "$IT_TMP/$1.rc")
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/$1.pg" &&
        ! grep -q '^not ok' "$IT_TMP/$1.out" && return 0
    echo "test_$1 (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/$1.out" | tail -n 40
    return 1
}
# pg_case NAME CASE — CASE passed in NAME's PostgreSQL run (its notes shown)
pg_case() {
    if grep -q "^ok [0-9]* - $2\$" "$IT_TMP/$1.pg"; then
        # the case's own notes: the lines after the previous case's line
        awk -v c="$2" '/^(not )?ok [0-9]+ - / { if ($NF == c) exit; n = ""; next }
                       /^#   / { n = n $0 "\n" } END { printf "%s", n }' "$IT_TMP/$1.pg" | tail -n 2
        return 0
    fi
    echo "test_$1:"
    grep -v '^ok ' "$IT_TMP/$1.pg" | tail -n 30
    return 1
}

ok "test_pollsess ran its PostgreSQL cases and passed" passed pollsess
ok "PostgreSQL: lock, save, read, ack, touch, peek, delete" pg_case pollsess lock_save_read_ack_touch
ok "PostgreSQL: expiry, poll_open and its per-owner cap" pg_case pollsess expiry_and_open
ok "PostgreSQL: poll_pump skips unknown, expired and locked sessions, acks in its write" \
    pg_case pollsess pump_statuses
ok "PostgreSQL: 8 connections locking one session at once: one holder at a time, no lost update" \
    pg_case pollsess concurrent_locks_one_holder
ok "PostgreSQL: 8 connections pumping two sessions at once: every event once, in order, no deadlock" \
    pg_case pollsess concurrent_pumps_deliver_once
ok "PostgreSQL: 8 opens for one owner at once under a cap of 3: exactly 3" \
    pg_case pollsess concurrent_opens_respect_cap
ok "PostgreSQL: a sweep racing an uncommitted touch leaves the session" \
    pg_case pollsess expire_racing_touch_keeps_session
ok "PostgreSQL: a lease taken over while its old holder saves stays with the taker" \
    pg_case pollsess takeover_racing_save

ok "test_ratelimit ran its PostgreSQL cases and passed" passed ratelimit
for _c in thirty_then_limited window_slides users_are_separate later_stamped_hits_count \
          limit_zero_is_unlimited lowered_limit_retry_counts_the_excess bad_arguments \
          prune_removes_only_old_hits; do
    ok "PostgreSQL: rate limit $_c" pg_case ratelimit "$_c"
done
ok "PostgreSQL: 4 processes x 20 hits under a limit of 50: exactly 50" \
    pg_case ratelimit processes_share_one_limit
ok "PostgreSQL: 2L connections on one limit L at once: exactly L (5 rounds); batches of 3 under 10: 3" \
    pg_case ratelimit threads_share_one_limit

tables() {
    _cols=$(it_pg_sql "SELECT table_name || '.' || column_name FROM information_schema.columns
                       WHERE table_name IN ('poll_sessions', 'poll_outbox', 'rate_hits')
                       ORDER BY table_name, ordinal_position" | tr '\n' ' ') || return 1
    _pk=$(it_pg_sql "SELECT indexdef FROM pg_indexes WHERE indexname = 'poll_outbox_pkey'") || return 1
    _idx=$(it_pg_sql "SELECT string_agg(indexname, ' ' ORDER BY indexname) FROM pg_indexes
                      WHERE tablename IN ('poll_sessions', 'rate_hits')") || return 1
    echo "$_cols"
    echo "$_pk; $_idx"
    [ "$_cols" = "poll_outbox.sid poll_outbox.seq poll_outbox.frame poll_outbox.created_at poll_sessions.sid poll_sessions.path poll_sessions.owner poll_sessions.state poll_sessions.next_seq poll_sessions.version poll_sessions.lock_owner poll_sessions.lock_expires poll_sessions.created_at poll_sessions.last_seen poll_sessions.expires_at rate_hits.user_id rate_hits.at_ms " ] &&
        echo "$_pk" | grep -q 'UNIQUE INDEX.*(sid, seq)' &&
        [ "$_idx" = "poll_sessions_expiry poll_sessions_owner poll_sessions_pkey rate_hits_user" ]
}
ok "the tables mirror SQLite's: columns, the (sid, seq) key, the indexes" tables

# every user of the runs' threads_share_one_limit rounds: exactly the limit
# stored (8 for single hits, 9 for the batches of 3)
stored_hits() {
    _rows=$(it_pg_sql "SELECT user_id || '=' || count(*) FROM rate_hits
                       WHERE user_id LIKE '%:threads-%' GROUP BY user_id ORDER BY user_id") || return 1
    echo "$_rows" | tr '\n' ' '
    echo
    [ -n "$_rows" ] && ! echo "$_rows" | grep -v -e ':threads-[0-4]=8$' -e ':threads-5=9$'
}
ok "rate_hits: no user has more hits stored than the limit let through" stored_hits

it_done
