#!/bin/sh
# t0720-pg-jobs.sh — jobs on PostgreSQL (issue 10, second slice):
# test_jobs's backend-neutral cases run against a private PostgreSQL 15
# (it_postgres) with PARLEY_TEST_PG=$PG_URL and:
#   - claim / attach / renew / finish / running-on / get as on SQLite;
#   - single flight: 8 threads, a connection each, claiming one
#     (channel, key) at once get exactly one owner (5 rounds), by the
#     partial unique index and INSERT ... ON CONFLICT DO NOTHING;
#   - a job whose lease expired, claimed by 8 at once: failed once (one
#     error event), one new owner;
#   - a renewed lease is not recovered; 4 recoveries at once fail an
#     expired job exactly once (UPDATE ... WHERE lease_expires < now); a
#     recovery that read the lease while its renewal was uncommitted waits
#     on the row and then changes nothing;
#   - jobs_adopt moves the lease to another thread;
#   - an owner SIGKILLed mid-stream: a viewer in another process following
#     it (runner_follow) gets the "interrupted" error once the lease runs
#     out, one error event, and the next claim owns a new job;
#   - the table holds at most one running job per (channel, prompt_key)
#     afterwards, and the index that enforces it is there.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

JOBS_BIN=$BUILD/tests/test_jobs
[ -x "$JOBS_BIN" ] || it_die "$JOBS_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

OUT=$IT_TMP/test_jobs.out
JOBS_RC=0
PARLEY_TEST_PG=$PG_URL \
    timeout 120 "$JOBS_BIN" >"$OUT" 2>&1 || JOBS_RC=$?

# the lines of the PostgreSQL run (after its "# backend: PostgreSQL" line)
PG_OUT=$IT_TMP/test_jobs.pg
sed -n '/^# backend: PostgreSQL/,$p' "$OUT" >"$PG_OUT"

# pg_case NAME — NAME passed in the PostgreSQL run (diagnostics otherwise)
pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$PG_OUT" && return 0
    echo "test_jobs (exit $JOBS_RC):"
    grep -v '^ok ' "$OUT" | tail -n 30
    return 1
}
ok "test_jobs ran its PostgreSQL cases and passed (exit $JOBS_RC)" \
    sh -c "[ $JOBS_RC = 0 ] && grep -q '^# backend: PostgreSQL' '$PG_OUT' && ! grep -q '^not ok' '$OUT' || { tail -n 40 '$OUT'; exit 1; }"
ok "PostgreSQL: claim, attach, renew, finish, running-on, get" pg_case claim_in_one_process
ok "PostgreSQL: an expired lease is taken over by the next claim" pg_case expired_lease_taken_over_by_claim
ok "PostgreSQL: 8 connections claiming one key at once: exactly one owner (5 rounds)" \
    pg_case concurrent_claims_one_owner
ok "PostgreSQL: 8 claims of an expired job at once: failed once, one new owner" \
    pg_case concurrent_claims_of_expired_job
ok "PostgreSQL: a renewed lease is kept; 4 recoveries at once fail an expired job once" \
    pg_case lease_renewal_and_recovery_race
ok "PostgreSQL: a recovery that read the lease before its renewal committed does not fail the job" \
    pg_case renewal_racing_recovery_keeps_job
ok "PostgreSQL: jobs_adopt moves the lease to another thread" pg_case adopt_moves_the_lease
ok "PostgreSQL: a SIGKILLed owner's viewer in another process gets the interrupted error; the key runs again" \
    pg_case killed_owner_is_recovered

one_running() {
    _d=$(it_pg_sql "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'running'
                    GROUP BY channel, prompt_key HAVING count(*) > 1) d") || return 1
    _n=$(it_pg_sql "SELECT count(*) FROM jobs") || return 1
    _i=$(it_pg_sql "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_single_flight'") || return 1
    echo "jobs $_n; keys with more than one running job: $_d; $_i"
    [ "$_d" = 0 ] && [ "$_n" -gt 0 ] && echo "$_i" | grep -q "UNIQUE INDEX.*WHERE (state = 'running'"
}
ok "the table: at most one running job per (channel, prompt_key); the unique partial index" one_running

it_done
