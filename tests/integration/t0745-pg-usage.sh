#!/bin/sh
# t0745-pg-usage.sh — token accounting and budgets on PostgreSQL (issue 11
# item 3): test_usage's cases run against a private PostgreSQL 15
# (it_postgres) with PARLEY_TEST_PG=$PG_URL, each connection standing for a
# node:
#   - charges and their rows, zero/bad charges writing nothing, a charge
#     going with its caller's transaction, UTC days and the reset time,
#     budget precedence (claim > override > default, 0 = unlimited), totals,
#     as on SQLite;
#   - 4 processes x 25 charges and 12 connections x 15 charges of one user at
#     once: the day's sums, generations and event rows exact, one day row;
#   - the tables mirror SQLite's (columns, the (user_id, day) key).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

USAGE_BIN=$BUILD/tests/test_usage
[ -x "$USAGE_BIN" ] || it_die "$USAGE_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

_rc=0
PARLEY_TEST_PG=$PG_URL timeout 180 "$USAGE_BIN" >"$IT_TMP/usage.out" 2>&1 || _rc=$?
sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/usage.out" >"$IT_TMP/usage.pg"

passed() {
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/usage.pg" &&
        ! grep -q '^not ok' "$IT_TMP/usage.out" && return 0
    echo "test_usage (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/usage.out" | tail -n 40
    return 1
}
pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$IT_TMP/usage.pg" && return 0
    grep -v '^ok ' "$IT_TMP/usage.pg" | tail -n 30
    return 1
}

ok "test_usage ran its PostgreSQL cases and passed" passed
for _c in charge_rows_and_today zero_and_bad_charges_write_nothing \
          charge_goes_with_the_callers_transaction days_reset_and_dates \
          budget_precedence_and_message totals_sum_every_user; do
    ok "PostgreSQL: usage $_c" pg_case "$_c"
done
ok "PostgreSQL: 4 processes x 25 charges of one user: sums exact" pg_case processes_count_exactly
ok "PostgreSQL: 12 connections x 15 charges at once: sums exact, one day row" \
    pg_case connections_count_exactly

tables() {
    _cols=$(it_pg_sql "SELECT table_name || '.' || column_name FROM information_schema.columns
                       WHERE table_name IN ('usage_events', 'usage_daily', 'usage_budgets')
                       ORDER BY table_name, ordinal_position" | tr '\n' ' ') || return 1
    _pk=$(it_pg_sql "SELECT indexdef FROM pg_indexes WHERE indexname = 'usage_daily_pkey'") || return 1
    echo "$_cols"
    echo "$_pk"
    [ "$_cols" = "usage_budgets.user_id usage_budgets.tokens usage_budgets.updated_at usage_daily.user_id usage_daily.day usage_daily.prompt_tokens usage_daily.completion_tokens usage_daily.generations usage_events.id usage_events.user_id usage_events.channel usage_events.job_id usage_events.message_id usage_events.model usage_events.upstream usage_events.outcome usage_events.prompt_tokens usage_events.completion_tokens usage_events.at_ms " ] &&
        echo "$_pk" | grep -q 'UNIQUE INDEX.*(user_id, day)'
}
ok "the tables mirror SQLite's: columns, the (user_id, day) key" tables

it_done
