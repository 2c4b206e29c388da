#!/bin/sh
# t0830-budget.sh — token accounting and daily budgets (docs/usage.md, issue
# 11 item 3) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf) and Apache + mod_fcgid
# (parley-fcgid.conf, parley-websocket.conf), each with parley.fcgi and the
# WebSocket bridge on one SQLite database, JWT required,
# PARLEY_TOKEN_BUDGET_PER_DAY=1 (one generation spends a user's default).
#
# tests/integration/budget.mjs runs through each server, WebSocket and
# long-poll clients and REST, the simulated LLM's request log as witness:
#   - seed 000: a user's tokens counted from the fake's eval/prompt counts
#     (/api/usage: today, budget, remaining, exhausted, resets_at = the
#     next UTC midnight, the last N days); then exhausted: the same question
#     is still served from the cache (long-poll) without an upstream
#     request, a new one is refused with the protocol's error "Daily token
#     budget exhausted; it resets at <ISO 8601>" and never reaches the
#     upstream; seed 004's REST send answers 429 with the same message;
#   - seed 001: a token_budget JWT claim lifts the default (two answers over
#     WebSocket), a claim equal to what was used refuses over long-poll;
#   - the CLI: parley budget set USER TOKENS lets the next question through,
#     parley usage shows it, parley budget set USER default refuses again;
#     ?user= is 403 for a user and served for role admin;
#   - /api/metrics: parley_tokens_total{kind=prompt|completion}.
# Needs $BUILD/parley-ws, $BUILD/parley.fcgi and $BUILD/parley (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - budgets through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init
it_fake_llm
export FAKE_LLM_URL
curl -fsS "$FAKE_LLM_URL/_fake/requests" >/dev/null 2>&1 ||
    it_die "the simulated LLM at $FAKE_LLM_URL has no request log (GET /_fake/requests)"
it_jwt_config
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_TOKEN_BUDGET_PER_DAY=1"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
# the CLI on the setups' database, as the servers' user
CLI_DB=${IT_DB:-$IT_TMP/data/parley.db}
PARLEY_CLI="${AS_APP:-} env PARLEY_CONFIG=$IT_APP_CONFIG PARLEY_DB=$CLI_DB $IT_ROOT/$BUILD/parley"

run_suite() {
    BASE="$BASE" SECRET="$SECRET" RUN="$1-$$" FAKE_LLM_URL="$FAKE_LLM_URL" PARLEY_CLI="$PARLEY_CLI" IT_NODE_TIMEOUT=180 \
        it_node_tap "$1: " tests/integration/budget.mjs
}

start_lighttpd "$BUILD/parley.fcgi"
run_suite lighttpd
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run_suite apache
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
