#!/bin/sh
# t0710-pg-evlog.sh — the event log on PostgreSQL (issue 10, first slice):
# test_evlog's cases run against a private PostgreSQL 15 (it_postgres)
# with PARLEY_TEST_PG=$PG_URL and:
#   - every case of the SQLite run passes on PostgreSQL too (appends and
#     reads after a cursor, bytes kept, coalescing, compaction, a wait woken
#     by the bell, nested transactions as savepoints);
#   - 4 threads appending to one channel at once get seqs 1..N, no gap,
#     no duplicate;
#   - the migrations are recorded (parley_schema holds 1..N, one row each);
#   - a database whose schema version (999) is newer than ours is refused;
#   - a role with a password (the URI carries it): the password is in no
#     message — refused schema, missing database, failing statement, the
#     db_path — nor anywhere in the program's output.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

EVLOG_BIN=$BUILD/tests/test_evlog
[ -x "$EVLOG_BIN" ] || it_die "$EVLOG_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

# A role with a password, its own database, and one whose schema is newer.
SECRET="t0710-Pw$(date +%s%N | tail -c 10)x"
PW_URL="postgresql://t0710pw:$SECRET@127.0.0.1:$PG_PORT/t0710pw"
NEWER_URL="postgresql://t0710pw:$SECRET@127.0.0.1:$PG_PORT/t0710new"
setup_roles() {
    it_pg_sql "CREATE ROLE t0710pw LOGIN PASSWORD '$SECRET'" -d postgres &&
    it_pg_sql "CREATE DATABASE t0710pw OWNER t0710pw" -d postgres &&
    it_pg_sql "CREATE DATABASE t0710new OWNER t0710pw" -d postgres &&
    it_pg_sql "CREATE TABLE parley_schema (version integer PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now());
               INSERT INTO parley_schema(version) VALUES (999)" -d t0710new -U t0710pw
}
ok "a role with a password, its database, a database at schema version 999" setup_roles

OUT=$IT_TMP/test_evlog.out
EVLOG_RC=0
PARLEY_TEST_PG=$PG_URL \
PARLEY_TEST_PG_SECRET_URI=$PW_URL PARLEY_TEST_PG_SECRET=$SECRET PARLEY_TEST_PG_NEWER_URI=$NEWER_URL \
    timeout 120 "$EVLOG_BIN" >"$OUT" 2>&1 || EVLOG_RC=$?

# the lines of the PostgreSQL run (after its "# backend: PostgreSQL" line)
PG_OUT=$IT_TMP/test_evlog.pg
sed -n '/^# backend: PostgreSQL/,$p' "$OUT" >"$PG_OUT"

# pg_case NAME — NAME passed in the PostgreSQL run (its diagnostics otherwise)
pg_case() {
    if grep -q "^ok [0-9]* - $1\$" "$PG_OUT"; then
        grep "^# " "$PG_OUT" | grep -v '^# backend' | sed -n "/$1/p" | head -n 3
        return 0
    fi
    echo "test_evlog (exit $EVLOG_RC):"
    sed -n '1,200p' "$OUT" | grep -v '^ok ' | tail -n 30
    return 1
}
ok "test_evlog ran its PostgreSQL cases and passed (exit $EVLOG_RC)" \
    sh -c "[ $EVLOG_RC = 0 ] && grep -q '^# backend: PostgreSQL' '$PG_OUT' && ! grep -q '^not ok' '$OUT' || { tail -n 40 '$OUT'; exit 1; }"
ok "PostgreSQL: append and read after a cursor (bytes kept)" pg_case append_and_read
ok "PostgreSQL: coalescing writer" pg_case coalescing_writer
ok "PostgreSQL: compaction keeps each channel's newest event" pg_case compaction_keeps_newest
ok "PostgreSQL: a wait is woken across processes" pg_case wait_is_woken_across_processes
ok "PostgreSQL: nested transactions are savepoints, seqs stay dense" pg_case nested_rollback_keeps_seqs_dense
ok "PostgreSQL: 4 threads appending to one channel get seqs 1..400, no gap, no duplicate" \
    pg_case concurrent_appends_dense
ok "PostgreSQL: a newer schema is refused; the password is in no message" pg_case pg_password_never_shown
ok "PostgreSQL: a session the server ended (pg_terminate_backend) is reopened; a transaction it cut is lost, the next one works" \
    pg_case pg_session_ended_is_reopened

# every sql/pg migration recorded once, in order: 1,2,...,N
schema_recorded() {
    _want=$(ls sql/pg/[0-9]*.sql | sed 's|.*/0*\([0-9][0-9]*\)_.*|\1|' | sort -n | paste -sd, -)
    _v=$(it_pg_sql "SELECT string_agg(version::text, ',' ORDER BY version) FROM parley_schema") || return 1
    _t=$(it_pg_sql "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
                    AND tablename IN ('events', 'event_channels', 'jobs')") || return 1
    echo "parley_schema versions $_v (sql/pg: $_want); tables $_t/3"
    [ "$_v" = "$_want" ] && [ "$_t" = 3 ]
}
ok "every sql/pg migration is recorded in the database, once" schema_recorded

newer_untouched() {
    _v=$(it_pg_sql "SELECT string_agg(version::text, ',') FROM parley_schema" -d t0710new) || return 1
    _t=$(it_pg_sql "SELECT count(*) FROM pg_tables WHERE tablename = 'events'" -d t0710new) || return 1
    echo "t0710new: versions $_v, events tables $_t"
    [ "$_v" = 999 ] && [ "$_t" = 0 ]
}
ok "the newer database was left as it was (no migration applied)" newer_untouched

no_secret() {
    if grep -F -- "$SECRET" "$OUT"; then
        echo "the password appears in test_evlog's output"
        return 1
    fi
    grep -c '\*\*\*' "$OUT" | sed 's/^/redacted mentions: /'
}
ok "the password appears nowhere in the program's output (stdout and stderr)" no_secret

it_done
