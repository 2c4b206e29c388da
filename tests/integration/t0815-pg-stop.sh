#!/bin/sh
# t0815-pg-stop.sh — stopping a generation on PostgreSQL (docs/stop.md):
# test_stop's backend cases run against a private PostgreSQL 15
# (it_postgres) with PARLEY_TEST_PG=$PG_URL: the stop rules of the jobs
# module (one UPDATE on a running job of its starter or an admin; pending
# stops per lease owner; finished and unknown jobs refused), and through
# the generation loop on a listening bell (the NOTIFY doorbell): a seed 001
# stop closes the simulated LLM's connection within 100 ms and keeps the
# partial answer marked stopped; a seed 000 stop by another user is
# refused and nothing is cached.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

STOP_BIN=$BUILD/tests/test_stop
[ -x "$STOP_BIN" ] || it_die "$STOP_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

OUT=$IT_TMP/test_stop.out
RC=0
PARLEY_TEST_PG=$PG_URL timeout 180 "$STOP_BIN" >"$OUT" 2>&1 || RC=$?
PG_OUT=$IT_TMP/test_stop.pg
sed -n '/^# backend: PostgreSQL/,$p' "$OUT" >"$PG_OUT"

pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$PG_OUT" && return 0
    echo "test_stop (exit $RC):"
    grep -v '^ok ' "$OUT" | tail -n 30
    return 1
}
ok "test_stop ran its PostgreSQL cases and passed (exit $RC)" \
    sh -c "[ $RC = 0 ] && grep -q '^# backend: PostgreSQL' '$PG_OUT' && ! grep -q '^not ok' '$OUT' || { tail -n 40 '$OUT'; exit 1; }"
ok "PostgreSQL: stop rules (starter, admin, foreign, finished, unknown, pending per owner)" \
    pg_case jobs_stop_rules
ok "PostgreSQL: seed 001 stop aborts the upstream within 100 ms, partial kept as stopped" \
    pg_case chat_stop_aborts_upstream_and_keeps_partial
ok "PostgreSQL: seed 000 stop by another user refused; stopped answer not cached" \
    pg_case ticket_stop_foreign_refused_and_not_cached
grep '^# upstream closed' "$PG_OUT" | sed 's/^/# PostgreSQL: /'
it_done
