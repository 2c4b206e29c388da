#!/bin/sh
# t0900-openai.sh — the OpenAI-compatible API (docs/openai.md, issue 15
# item 1) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf), Apache + mod_fcgid
# (parley-fcgid.conf) and Apache + mod_proxy_fcgi (parley-proxy-fcgi.conf
# with the parley-fcgi.service lines), JWT required,
# RATE_LIMIT_MESSAGES_PER_MINUTE=4, the default PARLEY_OPENAI_CACHE
# (deterministic). tests/integration/openai.mjs runs the official `openai`
# npm client through each: the model list, completions with and without
# streaming (the simulated LLM's deterministic text, usage in and out of the
# stream), a bad key (401), an unknown model (404), bad requests (400), the
# rate limit (429 with Retry-After), keys created, listed and revoked with
# the real CLI, a client aborting mid-stream (the simulated LLM's request
# log shows the upstream closed), the same while an identical temperature-0
# request shares the generation (it completes; one upstream request) and a
# cache hit after it, an upstream failure before any text (5xx).
# Needs $BUILD/parley.fcgi and $BUILD/parley (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - the OpenAI-compatible API through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
[ -d node_modules/openai ] || it_die "node_modules/openai is missing (npm ci)"

it_init
it_fake_llm
export FAKE_LLM_URL
curl -fsS "$FAKE_LLM_URL/_fake/requests" >/dev/null 2>&1 ||
    it_die "the simulated LLM at $FAKE_LLM_URL has no request log (GET /_fake/requests)"
it_jwt_config
echo "RATE_LIMIT_MESSAGES_PER_MINUTE=4" >>"$IT_APP_CONFIG"
IT_NO_WS=1        # no WebSocket bridge: /v1/ is parley.fcgi's alone
export IT_NO_WS

CLI_DB=${IT_DB:-$IT_TMP/data/parley.db}
PARLEY_CLI="${AS_APP:-} env PARLEY_CONFIG=$IT_APP_CONFIG PARLEY_DB=$CLI_DB $IT_ROOT/$BUILD/parley"
export SECRET FAKE_LLM_URL PARLEY_CLI
export RATE=4

run_suite() {
    BASE="$BASE" RUN="$1-$$" IT_NODE_TIMEOUT=180 it_node_tap "$1: " tests/integration/openai.mjs
}

start_lighttpd "$BUILD/parley.fcgi"
run_suite lighttpd
stop_setup

start_fcgid "$BUILD/parley.fcgi"
run_suite apache-fcgid
stop_setup

start_proxy_fcgi "$BUILD/parley.fcgi"
run_suite apache-proxy-fcgi
stop_setup

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in parley.fcgi's logs" no_sanitizer_report

it_done
