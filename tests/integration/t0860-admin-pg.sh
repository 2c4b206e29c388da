#!/bin/sh
# t0860-admin-pg.sh — what the admin page and `parley stats` read, on
# PostgreSQL (issue 12 item 2, docs/admin.md): test_admin's cases run
# against a private PostgreSQL 15 (it_postgres) with PARLEY_TEST_PG=$PG_URL:
#   - stats_overview after known activity (counts, cache hits, generations
#     by outcome, failures in the last hour, tokens by user today), as
#     differences on the shared database;
#   - live generations (user, model, tokens so far, the text's tail);
#   - open long-poll sessions by kind;
#   - presence rows (fresh, stale, purged, removed) and a reporter thread;
#   - the presence table mirrors SQLite's.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

ADMIN_BIN=$BUILD/tests/test_admin
[ -x "$ADMIN_BIN" ] || it_die "$ADMIN_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

_rc=0
PARLEY_TEST_PG=$PG_URL timeout 180 "$ADMIN_BIN" >"$IT_TMP/admin.out" 2>&1 || _rc=$?
sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/admin.out" >"$IT_TMP/admin.pg"

passed() {
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/admin.pg" &&
        ! grep -q '^not ok' "$IT_TMP/admin.out" && return 0
    echo "test_admin (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/admin.out" | tail -n 40
    return 1
}
pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$IT_TMP/admin.pg" && return 0
    grep -v '^ok ' "$IT_TMP/admin.pg" | tail -n 30
    return 1
}

ok "test_admin ran its PostgreSQL cases and passed" passed
for _c in overview_after_known_activity live_generations_show_user_model_tokens_and_tail \
          open_long_poll_sessions_by_kind presence_rows_fresh_stale_removed \
          reporter_writes_then_deletes_its_row; do
    ok "PostgreSQL: admin $_c" pg_case "$_c"
done

tables() {
    _cols=$(it_pg_sql "SELECT column_name FROM information_schema.columns
                       WHERE table_name = 'presence' ORDER BY ordinal_position" | tr '\n' ' ') || return 1
    _pk=$(it_pg_sql "SELECT indexdef FROM pg_indexes WHERE indexname = 'presence_pkey'") || return 1
    echo "$_cols"
    echo "$_pk"
    [ "$_cols" = "node program pid counts upstreams started_at updated_at " ] &&
        echo "$_pk" | grep -q 'UNIQUE INDEX.*(node, program, pid)'
}
ok "the presence table mirrors SQLite's: columns, the (node, program, pid) key" tables

it_done
