#!/bin/sh
# t0770-pg-copy.sh — `parley db copy` (issue 10): a populated SQLite
# database moved into a private PostgreSQL 15 (it_postgres):
#   - test_copy's cases on this server (PARLEY_TEST_PG): every value kind,
#     foreign-key order, sequences, refusals, failures copying nothing;
#   - the CLI on a SQLite file filled by hand (sqlite3): events whose data
#     holds NUL bytes and invalid UTF-8, jobs in each state, NULLs, and rows
#     in every other module's tables (a demo brand removed); exit 0, the
#     per-table counts printed and equal to both sides' count(*), no table
#     with rows left behind, the target's own demo brands replaced by the
#     source's, PostgreSQL's derived tsvector filled;
#   - the bytes equal: an md5 of every event (channel, seq, job, type, hex
#     of data) and of every job's columns, computed by sqlite3 and by psql;
#   - new rows get fresh ids (jobs' identity) and fresh seqs (an append
#     through Parley's event log on the copied channel);
#   - a second copy into the now non-empty target is refused with the
#     documented message, exit 1, the target unchanged (same md5);
#   - a bad --from (missing: not created) and an unreachable --to carrying a
#     password give clear errors; the password appears in no output, also
#     when copying into a role with a password.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

CLI=$BUILD/parley
COPY_BIN=$BUILD/tests/test_copy
EVLOG_BIN=$BUILD/tests/test_evlog
[ -x "$CLI" ] || it_die "$CLI is not built (make)"
[ -x "$COPY_BIN" ] || it_die "$COPY_BIN is not built (make)"
command -v sqlite3 >/dev/null || it_die "sqlite3 (the shell) is not installed (tools/deps.sh installs it)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
PSQL="$PG_BIN/psql -X -q -A -t -v ON_ERROR_STOP=1"

# ---- test_copy on this server ----
UNIT_OUT=$IT_TMP/test_copy.out
unit_cases() {
    PARLEY_TEST_PG=$PG_URL timeout 120 "$COPY_BIN" >"$UNIT_OUT" 2>&1 || { tail -n 40 "$UNIT_OUT"; return 1; }
    grep -q '^ok [0-9]* - count_mismatch_copies_nothing$' "$UNIT_OUT" || { tail -n 40 "$UNIT_OUT"; return 1; }
    grep -c '^ok ' "$UNIT_OUT" | sed 's/^/cases passed: /'
}
ok "test_copy's cases pass on PostgreSQL (values, FK order, sequences, refusals, nothing half-copied)" unit_cases

# ---- a populated SQLite file ----
SRC=$IT_TMP/src.db
populate() {
    PARLEY_DB=$SRC "$CLI" migrate >/dev/null || return 1
    # seed 002's demo brands, as `make run` imports them (no migration does)
    PARLEY_DB=$SRC "$CLI" brands import share/sample-catalog.json >/dev/null || return 1
    {
        echo "BEGIN;"
        echo "INSERT INTO jobs(id, channel, prompt_key, state, lease_owner, lease_expires, first_seq, error, created_at, finished_at) VALUES
              (1, 'ticket:1', 'k1', 'done', NULL, NULL, 0, NULL, 1700000000000, 1700000001000),
              (2, 'ticket:1', 'k2', 'failed', 'node-a', 1700000000500, 4, 'upstream 500', 1700000000100, 1700000002000),
              (6, 'ticket:2', 'k1', 'running', 'node-b', 9999999999999, 0, NULL, 1700000000200, NULL);"
        i=1
        while [ $i -le 400 ]; do
            ch="ticket:$((i % 2 + 1))"
            echo "INSERT INTO events(channel, seq, job_id, type, data, created_at)
                  VALUES ('$ch', (SELECT coalesce(max(seq), 0) + 1 FROM events WHERE channel = '$ch'),
                          $([ $((i % 9)) = 0 ] && echo NULL || echo $((i % 2 + 1))), 'token',
                          $(case $((i % 4)) in
                              0) echo "X'00$(printf '%02x' $((i % 256)))ff00c328'" ;;
                              1) echo "CAST(X'686900fe41' AS TEXT)" ;;
                              2) echo "''" ;;
                              *) echo "'tok $i é'" ;;
                            esac), 1700000000000 + $i);"
            i=$((i + 1))
        done
        # the other modules' tables (their PostgreSQL schemas mirror these):
        # rows with foreign keys, NULLs, REAL, JSON text, a demo brand removed
        echo "INSERT INTO tickets(id, body, created_at, updated_at) VALUES ('1', 'printer', 1, 2), ('2', '', 3, 4);
              INSERT INTO brands(id, name, created_at) VALUES ('acme', 'Acme', 5);
              DELETE FROM brands WHERE id = 'retired';
              INSERT INTO products(id, brand_id, name, description, category, price)
                  VALUES ('p1', 'acme', 'Widget', 'a widget', 'Tools', 9.99);
              INSERT INTO conversations(id, owner, kind, ticket_id, brand_id, title, created_at, updated_at)
                  VALUES ('c1', 'u', 'ticket', '1', NULL, 'x', 1, 2), ('c2', '', 'brand', NULL, 'acme', '', 3, 4);
              INSERT INTO messages(id, conversation_id, role, content, tokens, created_at)
                  VALUES ('m1', 'c1', 'user', 'hi', NULL, 1), ('m2', 'c1', 'assistant', 'hello é', 5, 2);
              INSERT INTO answers(key, kind, ticket_id, response, temperature, created_at)
                  VALUES ('ticket:1:abc', 'ticket', '1', 'do this', 0.7, 1);
              INSERT INTO poll_sessions(sid, path, created_at, last_seen, expires_at) VALUES ('s1', '/x', 1, 2, 3);
              INSERT INTO poll_outbox VALUES ('s1', 1, '{}', 1), ('s1', 2, '{\"a\":1}', 2);
              INSERT INTO rate_hits VALUES ('u', 1), ('u', 2);
              INSERT INTO kb_passages(source, seq, title, text, created_at)
                  VALUES ('faq.md', 1, 'Printers', 'Restart the printer', 1), ('faq.md', 2, 'Wifi', 'Reboot', 2);"
        echo "COMMIT;"
    } | sqlite3 "$SRC" || return 1
    sqlite3 "$SRC" "SELECT count(*) FROM events; SELECT count(*) FROM events WHERE instr(CAST(data AS BLOB), X'00') > 0" | tr '\n' ' '
    echo "(events, with a NUL byte)"
}
ok "a SQLite database with events (binary data, NUL bytes, invalid UTF-8), jobs in each state, NULLs" populate

# md5 of the events and jobs, the same text computed on each side
SQLITE_EV="SELECT channel || '|' || seq || '|' || coalesce(job_id, 'N') || '|' || type || '|' || lower(hex(CAST(data AS BLOB))) FROM events ORDER BY channel, seq"
PG_EV="SELECT channel || '|' || seq || '|' || coalesce(job_id::text, 'N') || '|' || type || '|' || encode(data, 'hex') FROM events ORDER BY channel, seq"
JOBS="SELECT id || '|' || channel || '|' || prompt_key || '|' || state || '|' || coalesce(lease_owner, 'N') || '|' || coalesce(lease_expires, 'N') || '|' || first_seq || '|' || coalesce(error, 'N') || '|' || created_at || '|' || coalesce(finished_at, 'N') FROM jobs ORDER BY id"
PG_JOBS="SELECT id || '|' || channel || '|' || prompt_key || '|' || state || '|' || coalesce(lease_owner, 'N') || '|' || coalesce(lease_expires::text, 'N') || '|' || first_seq || '|' || coalesce(error, 'N') || '|' || created_at || '|' || coalesce(finished_at::text, 'N') FROM jobs ORDER BY id"
sqlite_sum() { { sqlite3 "$SRC" "$SQLITE_EV"; sqlite3 "$SRC" "$JOBS"; } | md5sum | cut -d' ' -f1; }
pg_sum() { { it_pg_sql "$PG_EV" "$@"; it_pg_sql "$PG_JOBS" "$@"; } | md5sum | cut -d' ' -f1; }

# ---- the copy ----
OUT=$IT_TMP/copy.out
ERR=$IT_TMP/copy.err
copy_ok() {
    timeout 120 "$CLI" db copy --from "$SRC" --to "$PG_URL" >"$OUT" 2>"$ERR" || {
        echo "exit status $?"; cat "$OUT" "$ERR"; return 1; }
    cat "$OUT"
    grep -q '^copied ' "$OUT" || return 1
}
ok "parley db copy --from src.db --to \$PG_URL exits 0" copy_ok

counts_equal() {
    for t in $({ echo events; echo jobs; sed -n "2,\$p" "$OUT" | grep -v "^copied" | awk "{print \$1}"; } | sort -u); do
        _line=$(grep "^$t " "$OUT") || { echo "no line for $t"; return 1; }
        _s=$(sqlite3 "$SRC" "SELECT count(*) FROM $t")
        _p=$(it_pg_sql "SELECT count(*) FROM $t")
        set -- $_line
        echo "$t: printed $2 $3, sqlite $_s, postgresql $_p"
        [ "$2" = "$_s" ] && [ "$3" = "$_p" ] && [ "$_s" = "$_p" ] || return 1
    done
}
ok "the printed counts are both sides' count(*), and equal" counts_equal

# every SQLite table holding rows has a PostgreSQL table (sql/pg mirrors
# sql/): nothing of a user's database is left behind
nothing_left() {
    if grep 'not in the target' "$ERR"; then return 1; fi
    for t in tickets conversations messages answers poll_sessions poll_outbox rate_hits brands \
             products kb_passages; do
        grep -q "^$t " "$OUT" || { echo "$t not copied"; return 1; }
    done
    _b=$(it_pg_sql "SELECT string_agg(id, ',' ORDER BY id) FROM brands")
    _f=$(it_pg_sql "SELECT count(*) FROM kb_passages WHERE fts IS NOT NULL")
    _k=$(it_pg_sql "INSERT INTO kb_passages(source, seq, title, text, created_at) VALUES ('n', 1, '', 'x', 1) RETURNING id")
    echo "brands $_b; kb_passages with a tsvector $_f; next kb_passages id $_k"
    [ "$_b" = "acme,homestyle,techpro" ] && [ "$_f" = 2 ] && [ "$_k" = 3 ] &&
        it_pg_sql "DELETE FROM kb_passages WHERE id = 3" >/dev/null
}
ok "every table with rows is copied (store, sessions, catalog, kb): the target's demo brands replaced by the source's, PostgreSQL's tsvector filled, identities advanced" nothing_left

bytes_equal() {
    _a=$(sqlite_sum); _b=$(pg_sum)
    echo "sqlite $_a, postgresql $_b"
    [ -n "$_a" ] && [ "$_a" = "$_b" ]
}
ok "events (data byte for byte) and jobs (every column, NULLs) are the same on both sides (md5)" bytes_equal

fresh_ids() {
    _id=$(it_pg_sql "INSERT INTO jobs(channel, prompt_key, state, created_at) VALUES ('t', 't', 'done', 1) RETURNING id")
    _max=$(sqlite3 "$SRC" "SELECT max(id) FROM jobs")
    echo "new job id $_id (max copied $_max)"
    [ "$_id" = $((_max + 1)) ] || return 1
    # the next append to a copied channel, through Parley (event_channels rebuilt)
    _seq=$(it_pg_sql "SELECT max(seq) FROM events WHERE channel = 'ticket:1'")
    _last=$(it_pg_sql "SELECT last_seq FROM event_channels WHERE channel = 'ticket:1'")
    echo "ticket:1 max seq $_seq, event_channels.last_seq $_last"
    [ "$_seq" = "$_last" ] || return 1
    it_pg_sql "DELETE FROM jobs WHERE id = $_id" >/dev/null
}
ok "new rows get fresh ids (identity past the max) and the event log goes on after the copied seqs" fresh_ids

refused() {
    _before=$(pg_sum)
    timeout 60 "$CLI" db copy --from "$SRC" --to "$PG_URL" >"$OUT" 2>"$ERR" && { echo "exit 0"; return 1; }
    cat "$ERR"
    grep -q 'already holds rows (in .*events.*): parley db copy copies into an empty database only, so that two databases are never mixed; nothing was copied (--replace deletes the target' "$ERR" || return 1
    _after=$(pg_sum)
    echo "md5 before $_before, after $_after"
    [ "$_before" = "$_after" ] && [ "$(it_pg_sql 'SELECT count(*) FROM events')" = 400 ]
}
ok "a second copy into the non-empty target is refused (exit 1, the documented message) and changes nothing" refused

replaced() {
    it_pg_sql "INSERT INTO events(channel, seq, type, data, created_at) VALUES ('other', 1, 'token', '\\x00', 1)" >/dev/null
    timeout 120 "$CLI" db copy --from "$SRC" --to "$PG_URL" --replace >"$OUT" 2>"$ERR" || { cat "$ERR"; return 1; }
    _n=$(it_pg_sql "SELECT count(*) FROM events WHERE channel = 'other'")
    echo "rows of the target's own channel after --replace: $_n"
    [ "$_n" = 0 ] && [ "$(pg_sum)" = "$(sqlite_sum)" ]
}
ok "--replace: the target's rows in the copied tables are replaced by the source's (same md5)" replaced

bad_from() {
    timeout 30 "$CLI" db copy --from "$IT_TMP/missing.db" --to "$PG_URL" >"$OUT" 2>"$ERR" && return 1
    cat "$ERR"
    grep -q "missing.db: No such file or directory" "$ERR" && [ ! -e "$IT_TMP/missing.db" ]
}
ok "a missing --from: a clear error, exit 1, no file created" bad_from

SECRET="t0770-Pw$(date +%s%N | tail -c 9)q"
DEAD_PORT=$(free_port)
unreachable() {
    timeout 60 "$CLI" db copy --from "$SRC" --to "postgresql://parley:$SECRET@127.0.0.1:$DEAD_PORT/parley" \
        >"$OUT" 2>"$ERR" && return 1
    cat "$ERR"
    grep -q 'cannot connect to PostgreSQL' "$ERR" && grep -q 'parley:\*\*\*@' "$ERR" &&
        ! grep -F -- "$SECRET" "$OUT" "$ERR"
}
ok "an unreachable --to: a clear error without its password" unreachable

with_password() {
    it_pg_sql "CREATE ROLE t0770pw LOGIN PASSWORD '$SECRET'" -d postgres >/dev/null &&
    it_pg_sql "CREATE DATABASE t0770pw OWNER t0770pw" -d postgres >/dev/null || return 1
    timeout 120 "$CLI" db copy --from "$SRC" --to "postgresql://t0770pw:$SECRET@127.0.0.1:$PG_PORT/t0770pw" \
        >"$OUT" 2>"$ERR" || { cat "$ERR"; return 1; }
    grep '^copied' "$OUT"
    ! grep -F -- "$SECRET" "$OUT" "$ERR" && grep -q 't0770pw:\*\*\*@' "$OUT" &&
        [ "$(pg_sum -d t0770pw)" = "$(sqlite_sum)" ] || return 1
    # a refused second copy names the target without the password too
    timeout 60 "$CLI" db copy --from "$SRC" --to "postgresql://t0770pw:$SECRET@127.0.0.1:$PG_PORT/t0770pw" \
        >"$OUT" 2>"$ERR" && return 1
    ! grep -F -- "$SECRET" "$OUT" "$ERR" && grep -q 'already holds rows' "$ERR"
}
ok "a target whose URI has a password: copied, and the password is in no output" with_password

it_done
