#!/bin/sh
# t0730-pg-store.sh — the store module (tickets, conversations, messages,
# the answer cache) and stats on PostgreSQL (issue 10): test_store's cases
# run against a private PostgreSQL 15 (it_postgres) with
# PARLEY_TEST_PG=$PG_URL and:
#   - every backend-neutral case passes as on SQLite (tickets, owner
#     isolation, listing and pagination, messages, context window,
#     reactions, the answer cache, peek, result codes, stats);
#   - 8 connections creating one conversation id at once: one STORE_OK,
#     7 STORE_EXISTS, the winner's owner kept (5 rounds);
#   - 8 connections putting one ticket, one cached answer at once: all
#     succeed, one whole row left;
#   - two connections reacting to one message at once (helpful, rating):
#     both kept (10 rounds);
#   - 8 connections adding 10 messages each to one conversation: 80 kept,
#     updated_at is the newest message's and never goes back;
#   - messages of one millisecond keep their insertion order;
#   - afterwards the tables hold what the cases left and their keys are
#     there: no orphan message, no duplicate conversation or answer, the
#     schema version recorded.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

STORE_BIN=$BUILD/tests/test_store
[ -x "$STORE_BIN" ] || it_die "$STORE_BIN is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

OUT=$IT_TMP/test_store.out
STORE_RC=0
PARLEY_TEST_PG=$PG_URL \
    timeout 120 "$STORE_BIN" >"$OUT" 2>&1 || STORE_RC=$?

# the lines of the PostgreSQL run (after its "# backend: PostgreSQL" line)
PG_OUT=$IT_TMP/test_store.pg
sed -n '/^# backend: PostgreSQL/,$p' "$OUT" >"$PG_OUT"

# pg_case NAME — NAME passed in the PostgreSQL run (diagnostics otherwise)
pg_case() {
    grep -q "^ok [0-9]* - $1\$" "$PG_OUT" && return 0
    echo "test_store (exit $STORE_RC):"
    grep -v '^ok ' "$OUT" | tail -n 30
    return 1
}
ok "test_store ran its PostgreSQL cases and passed (exit $STORE_RC)" \
    sh -c "[ $STORE_RC = 0 ] && grep -q '^# backend: PostgreSQL' '$PG_OUT' && ! grep -q '^not ok' '$OUT' || { tail -n 40 '$OUT'; exit 1; }"
ok "PostgreSQL: tickets" pg_case tickets
ok "PostgreSQL: a conversation is its owner's only" pg_case conversations_belong_to_their_owner
ok "PostgreSQL: listing, kinds and pagination" pg_case listing_and_pagination
ok "PostgreSQL: messages, context window, reactions, delete with the conversation" \
    pg_case messages_context_and_reactions
ok "PostgreSQL: the answer cache" pg_case answer_cache
ok "PostgreSQL: result codes" pg_case result_codes_are_named
ok "PostgreSQL: answer peek" pg_case answer_peek
ok "PostgreSQL: 8 connections create one conversation id at once: one winner, its owner kept" \
    pg_case concurrent_conv_create_one_winner
ok "PostgreSQL: 8 connections put one ticket at once: all succeed, one body" \
    pg_case concurrent_ticket_puts
ok "PostgreSQL: 8 connections cache one answer at once: all succeed, one whole row" \
    pg_case concurrent_answer_puts
ok "PostgreSQL: helpful and rating set at once on one message: both kept" \
    pg_case concurrent_reactions_both_kept
ok "PostgreSQL: 8 x 10 messages into one conversation at once: all kept, updated_at never back" \
    pg_case concurrent_messages_one_conversation
ok "PostgreSQL: messages of one millisecond keep their order" \
    pg_case messages_same_millisecond_keep_order
ok "PostgreSQL: stats count jobs, recent generations, answers, conversations" pg_case stats_counts

# what the cases left: the run's prefix names its rows
PFX=$(sed -n 's/^# backend: PostgreSQL (PARLEY_TEST_PG, ids \(.*\)\*)$/\1/p' "$OUT")
tables() {
    [ -n "$PFX" ] || { echo "no prefix in the output"; return 1; }
    _v=$(it_pg_sql "SELECT max(version) FROM parley_schema") || return 1
    _orph=$(it_pg_sql "SELECT count(*) FROM messages m WHERE NOT EXISTS
                       (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)") || return 1
    _conc=$(it_pg_sql "SELECT count(*) FROM conversations WHERE id LIKE '${PFX}conc-conv-%'") || return 1
    _own=$(it_pg_sql "SELECT count(*) FROM conversations WHERE id LIKE '${PFX}conc-conv-%'
                      AND owner LIKE '${PFX}owner-%'") || return 1
    _tick=$(it_pg_sql "SELECT count(*) FROM tickets WHERE id = '${PFX}conc-ticket'") || return 1
    _tbody=$(it_pg_sql "SELECT body FROM tickets WHERE id = '${PFX}conc-ticket'") || return 1
    _ans=$(it_pg_sql "SELECT string_agg(ticket_id, ' ') FROM answers WHERE ticket_id LIKE '${PFX}%'") || return 1
    _msgs=$(it_pg_sql "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
                       WHERE c.owner LIKE '${PFX}%'") || return 1
    echo "schema $_v; orphan messages $_orph; contested conversations $_conc (a racer's owner: $_own);" \
         "contested ticket rows $_tick ($_tbody); answers left: $_ans; messages left $_msgs"
    [ "$_v" -ge 2 ] && [ "$_orph" = 0 ] && [ "$_conc" = 5 ] && [ "$_own" = 5 ] &&
        [ "$_tick" = 1 ] && echo "$_tbody" | grep -q '^body from [0-7]$' &&
        [ "$_ans" = "${PFX}peek-2" ] && [ "$_msgs" = 0 ]
}
ok "the tables: 5 contested conversations, each a racer's; one contested ticket row; no orphan message; deleted conversations took their messages; only the answer left on purpose" tables

keys() {
    _k=$(it_pg_sql "SELECT string_agg(conrelid::regclass::text || ':' || contype::text, ' ')
                    FROM pg_constraint WHERE conrelid::regclass::text IN
                    ('tickets', 'conversations', 'messages', 'answers') AND contype IN ('p', 'f')") || return 1
    _i=$(it_pg_sql "SELECT string_agg(indexname, ' ' ORDER BY indexname) FROM pg_indexes
                    WHERE indexname IN ('conversations_owner', 'messages_conv', 'answers_ticket')") || return 1
    echo "keys: $_k; indexes: $_i"
    for _want in tickets:p conversations:p conversations:f messages:p messages:f answers:p; do
        echo " $_k " | grep -q " $_want " || return 1
    done
    [ "$_i" = "answers_ticket conversations_owner messages_conv" ]
}
ok "the keys the store relies on: primary keys of the four tables, foreign keys of conversations and messages, the indexes" keys

it_done
