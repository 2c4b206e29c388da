#!/bin/sh
# t0870-openapi.sh — the OpenAPI contract (docs/openapi.yaml, docs/openapi.md)
# against real responses: lighttpd + parley.fcgi (the shipped
# apache-conf/lighttpd-parley.conf), then Apache + mod_proxy_fcgi
# (apache-conf/parley-proxy-fcgi.conf), JWT on, PARLEY_ANONYMOUS=brand, a rate
# limit, an Origin allow-list, the simulated LLM. tests/integration/openapi.mjs
# drives every route (success and error cases) and checks each response's
# status, Content-Type and body (SSE: each event's data) against
# docs/openapi.json; the document itself is checked as OpenAPI 3.1, and
# docs/openapi.json must be what tools/openapi-json.py makes of the YAML.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

if [ ! -x "$BUILD/parley.fcgi" ]; then
    echo "ok 1 - openapi # SKIP $BUILD/parley.fcgi is not built"
    echo "1..1"
    exit 0
fi

it_init
it_fake_llm
export FAKE_LLM_URL
it_jwt_config
LIMIT=20
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=$LIMIT"
    echo "PARLEY_ANONYMOUS=brand"
    echo "PARLEY_ALLOWED_ORIGINS=http://127.0.0.1"
} >>"$IT_APP_CONFIG"

ok "docs/openapi.json is tools/openapi-json.py's output for docs/openapi.yaml" \
    python3 tools/openapi-json.py --check docs/openapi.yaml docs/openapi.json
# YAML outside the JSON data model (an unquoted status code is an integer
# key, an unquoted date a date) is refused, naming where
refuses() {
    printf '%s\n' "$1" >"$IT_TMP/bad.yaml"
    if _m=$(python3 tools/openapi-json.py "$IT_TMP/bad.yaml" 2>&1); then
        echo "accepted: $1"; return 1
    fi
    case $_m in *"$2"*) return 0 ;; *) echo "message: $_m"; return 1 ;; esac
}
ok "tools/openapi-json.py refuses an integer key" refuses "responses: {200: {description: x}}" "#/responses: key 200"
ok "tools/openapi-json.py refuses a date" refuses "info: {version: 2026-12-07}" "#/info/version: date"

# Through lighttpd (mod_fastcgi spawning the app) and Apache (mod_proxy_fcgi
# to the app as parley-fcgi.service runs it): what a web server adds or
# answers itself (a 413, a content type) must match the contract too.
for setup in lighttpd proxy_fcgi; do
    IT_DB=$IT_TMP/data/$setup.db
    "start_$setup" "$BUILD/parley.fcgi"
    it_log "$setup: $BASE"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET RATE_LIMIT=$LIMIT BAD_ORIGIN=http://evil.example \
        it_node_tap "openapi ($setup): " tests/integration/openapi.mjs
    stop_setup
done
# A sanitized build (SANITIZE=address,undefined) reports into the app's
# logs: any report, a leak at exit included, fails the run.
hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
ok "no sanitizer report in any server or app log" test -z "$hits"
it_done
