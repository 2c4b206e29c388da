#!/bin/sh
# t0750-pg-kb.sh — the catalog and the knowledge base on PostgreSQL
# (issue 10): test_kb, test_catalog and test_terms run their
# backend-neutral cases against a private PostgreSQL 15 (it_postgres) with
# PARLEY_TEST_PG=$PG_URL and, each in a schema of
# its own:
#   - import (Markdown / text), re-import replacing a file whole, removal,
#     the generated tsvector agreeing with every row;
#   - search: which passages match, best first in clear cases, terms
#     matched, diacritics and case folded, English stems, no hit = empty,
#     FTS5 / tsquery syntax in the text only words;
#   - 8 connections re-importing one file at once: all succeed, one whole
#     version left (the per-source advisory lock);
#   - brands and products as on SQLite (the demo brands of the sample
#     catalogue, share/sample-catalog.json, imported by `parley brands
#     import` as `make run` does: no migration inserts them), 8
#     connections putting one brand and product at once: all succeed, one
#     row (INSERT ... ON CONFLICT DO UPDATE);
#   - hostile words through parley_term_query: no error, no NOTICE;
# then the schema itself (the public one the first connection migrated):
# the tables and columns SQLite has, the unique keys, the GIN indexes used
# by a search, and `parley kb import / list / remove` against the server.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for b in test_kb test_catalog test_terms; do
    [ -x "$BUILD/tests/$b" ] || it_die "$BUILD/tests/$b is not built (make)"
done

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

# run_unit NAME — runs $BUILD/tests/NAME against the server; RC_NAME, its output in $IT_TMP/NAME.out
run_unit() {
    _rc=0
    PARLEY_TEST_PG=$PG_URL \
        timeout 180 "$BUILD/tests/$1" >"$IT_TMP/$1.out" 2>&1 || _rc=$?
    sed -n '/^# backend: PostgreSQL/,$p' "$IT_TMP/$1.out" >"$IT_TMP/$1.pg"
    eval "RC_$1=$_rc"
}
# unit_passed NAME — every case passed and the PostgreSQL run happened
unit_passed() {
    eval "_rc=\$RC_$1"
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/$1.pg" &&
        ! grep -q '^not ok' "$IT_TMP/$1.out" && return 0
    echo "$1 (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/$1.out" | tail -n 30
    return 1
}
# pg_case NAME CASE — CASE passed in NAME's PostgreSQL run
pg_case() {
    grep -q "^ok [0-9]* - $2\$" "$IT_TMP/$1.pg" && return 0
    echo "$1: no 'ok ... - $2' in the PostgreSQL run"
    grep -v '^ok ' "$IT_TMP/$1.out" | tail -n 30
    return 1
}

run_unit test_kb
run_unit test_catalog
run_unit test_terms
ok "test_kb ran its PostgreSQL cases and passed" unit_passed test_kb
ok "test_catalog ran its PostgreSQL cases and passed" unit_passed test_catalog
ok "test_terms ran its PostgreSQL case and passed" unit_passed test_terms
ok "PostgreSQL: Markdown and text imports cut as on SQLite" pg_case test_kb import_markdown
ok "PostgreSQL: a re-import replaces a file whole; refused input changes nothing" \
    pg_case test_kb reimport_replaces
ok "PostgreSQL: removal by file and id; fts agrees with every row" pg_case test_kb remove_passages
ok "PostgreSQL: ranking, stems, terms matched, folded diacritics" pg_case test_kb search_ranking
ok "PostgreSQL: search syntax in the question is only words" pg_case test_kb hostile_queries
ok "PostgreSQL: no term or no match is the empty result (confidence -1)" \
    pg_case test_kb empty_and_no_hits
ok "PostgreSQL: best passage first in clear cases" pg_case test_kb search_clear_cases
ok "PostgreSQL: 8 connections re-importing one file at once all succeed, one whole version left" \
    pg_case test_kb concurrent_reimports_one_source
ok "PostgreSQL: brands (put, get, active list, demo brands)" pg_case test_catalog brands
ok "PostgreSQL: products and suggestions as on SQLite" pg_case test_catalog products_and_suggestions
ok "PostgreSQL: 8 connections putting one brand and product at once: all succeed, one row" \
    pg_case test_catalog concurrent_puts_one_row
ok "PostgreSQL: hostile words make tsqueries without error or NOTICE" \
    pg_case test_terms pg_term_queries

# the columns of a table in the public schema, comma-separated, in order
columns() {
    it_pg_sql "SELECT string_agg(column_name, ',' ORDER BY ordinal_position)
               FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '$1'"
}
schema_mirrors_sqlite() {
    _b=$(columns brands) && _p=$(columns products) && _k=$(columns kb_passages) || return 1
    echo "brands: $_b"; echo "products: $_p"; echo "kb_passages: $_k"
    [ "$_b" = "id,name,welcome,system_prompt,active,created_at,disabled_at" ] &&
    [ "$_p" = "pk,id,brand_id,name,description,category,price,features,specifications,availability,fts" ] &&
    [ "$_k" = "id,source,seq,title,text,created_at,fts" ]
}
ok "the tables have SQLite's columns (plus the generated fts)" schema_mirrors_sqlite

keys_and_indexes() {
    _i=$(it_pg_sql "SELECT indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
                    AND tablename IN ('brands', 'products', 'kb_passages') ORDER BY 1") || return 1
    echo "$_i"
    echo "$_i" | grep -q 'kb_passages_source: CREATE UNIQUE INDEX .* (source, seq)' &&
    echo "$_i" | grep -q 'products_id_key: CREATE UNIQUE INDEX .* (id)' &&
    echo "$_i" | grep -q 'brands_pkey: CREATE UNIQUE INDEX .* (id)' &&
    echo "$_i" | grep -q 'kb_passages_search: .* USING gin (fts)' &&
    echo "$_i" | grep -q 'products_search: .* USING gin (fts)'
}
ok "unique keys as SQLite's; GIN indexes on fts" keys_and_indexes

search_uses_index() {
    _e=$(it_pg_sql "SET enable_seqscan = off; EXPLAIN SELECT id FROM kb_passages
                    WHERE fts @@ parley_term_query('parley_kb', 'printer')") || return 1
    echo "$_e"
    echo "$_e" | grep -q 'kb_passages_search'
}
ok "a knowledge-base search can use the GIN index" search_uses_index

demo_brands() {
    it_sample_catalog "$PG_URL"
    _n=$(it_pg_sql "SELECT count(*) FROM brands WHERE id IN ('techpro', 'homestyle', 'retired')") &&
    _m=$(it_pg_sql "SELECT count(*) FROM products WHERE brand_id IN ('techpro', 'homestyle')") || return 1
    echo "demo brands $_n, products $_m"
    [ "$_n" = 3 ] && [ "$_m" = 9 ]
}
ok "the demo brands and products of seed 002 are there (parley brands import of the sample catalogue)" demo_brands

# parley kb against the server (the CLI goes through kb.h only)
cli_kb() {
    _d=$IT_TMP/kbcli
    mkdir -p "$_d" && printf '# Fuser error E52\nSwitch the printer off for ten minutes.\n' >"$_d/guide.md" || return 1
    _env="PARLEY_DB=$PG_URL PARLEY_NODE_PREFIX=$_d/node"
    _imp=$(cd "$_d" && env $_env timeout 30 "$OLDPWD/$BUILD/parley" kb import guide.md 2>&1) &&
    _lst=$(cd "$_d" && env $_env timeout 30 "$OLDPWD/$BUILD/parley" kb list 2>/dev/null) &&
    _rm=$(cd "$_d" && env $_env timeout 30 "$OLDPWD/$BUILD/parley" kb remove guide.md 2>&1) || {
        echo "import: $_imp"; echo "list: $_lst"; echo "remove: $_rm"; return 1; }
    echo "import: $_imp"; echo "list: $_lst"; echo "remove: $_rm"
    _left=$(it_pg_sql "SELECT count(*) FROM kb_passages WHERE source = 'guide.md'") || return 1
    [ "$_imp" = "guide.md: 1 passage" ] && echo "$_lst" | grep -q "	guide.md	1	.*	Fuser error E52\$" &&
        [ "$_rm" = "removed 1 passage" ] && [ "$_left" = 0 ]
}
ok "parley kb import / list / remove work against PostgreSQL" cli_kb

it_done
