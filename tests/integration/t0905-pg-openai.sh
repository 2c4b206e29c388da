#!/bin/sh
# t0905-pg-openai.sh — the OpenAI-compatible API's storage on PostgreSQL
# (sql/pg/010_openai.sql, core/storage/pg/openai_store.c): every case of
# test_proto_openai (chunks, refusals, cache rules, single flight and
# followers, API keys hashed and revoked, request counts) against a private
# PostgreSQL 15 (it_postgres) with PARLEY_TEST_PG=$PG_URL, and the real
# `parley keys create/list/revoke` on it.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

OAI_BIN=$BUILD/tests/test_proto_openai
[ -x "$OAI_BIN" ] || it_die "$OAI_BIN is not built (make)"
[ -x "$BUILD/parley" ] || it_die "$BUILD/parley is not built (make)"

it_init
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"

_rc=0
PARLEY_TEST_PG=$PG_URL timeout 180 "$OAI_BIN" >"$IT_TMP/oai.out" 2>&1 || _rc=$?
cases_pass() {
    [ "$_rc" = 0 ] && grep -q '^# backend: PostgreSQL' "$IT_TMP/oai.out" &&
        grep -q '^1\.\.' "$IT_TMP/oai.out" && ! grep -q '^not ok' "$IT_TMP/oai.out" && return 0
    echo "test_proto_openai (exit $_rc):"
    grep -v '^ok ' "$IT_TMP/oai.out" | tail -n 40
    return 1
}
ok "test_proto_openai's cases on PostgreSQL" cases_pass

P="env PARLEY_DB=$PG_URL PARLEY_NODE_PREFIX=$IT_TMP/node $BUILD/parley"
cli_keys() {
    _k=$($P keys create --user pg-kim --name pg 2>"$IT_TMP/keys.err") || { cat "$IT_TMP/keys.err"; return 1; }
    printf '%s\n' "$_k" | grep -Eq '^sk-parley-[0-9a-f]{48}$' || { echo "key: $_k"; return 1; }
    _l=$($P keys list --user pg-kim --json) || return 1
    _id=$(printf '%s' "$_l" | node -e 'const l=JSON.parse(require("fs").readFileSync(0,"utf8"));
        if (l.length!==1||l[0].revoked_at!==null) process.exit(1); console.log(l[0].id)') || { echo "$_l"; return 1; }
    printf '%s' "$_l" | grep -q "$(printf '%s' "$_k" | cut -c15-)" && { echo "the key is stored"; return 1; }
    $P keys revoke "$_id" >/dev/null || return 1
    ! $P keys revoke "$_id" 2>/dev/null || { echo "revoked twice"; return 1; }
    $P keys list --json | grep -q '"revoked_at": [0-9]' || return 1
}
ok "parley keys create, list, revoke on PostgreSQL" cli_keys

it_done
