#!/bin/sh
# t0600-phoenix.sh — seed 003 (Phoenix Channels) over the Phoenix LongPoll
# transport of parley.fcgi, with the official phoenix client in Node
# (tests/integration/phoenix-lp.mjs), through lighttpd + mod_fastcgi and
# Apache + mod_proxy_fcgi set up with the shipped apache-conf/ snippets.
# JWT on; PARLEY_PHOENIX_WINDOW=2 so an empty poll answers 204 quickly.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
it_init
it_fake_llm
APP=$BUILD/parley.fcgi
[ -x "$APP" ] || it_die "$APP is not built (make)"
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix missing (make node-deps)"

it_jwt_config
echo "PARLEY_PHOENIX_WINDOW=2" >>"$IT_APP_CONFIG"
IT_NO_WS=1
TAP_N=0 TAP_FAILED=0
for setup in lighttpd proxy_fcgi; do
    IT_DB=$IT_TMP/data/$setup.db
    "start_$setup" "$APP"
    it_log "$setup: $BASE"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET it_node_tap "$setup: " tests/integration/phoenix-lp.mjs
    stop_setup
done
hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
TAP_N=$((TAP_N + 1))
if [ -n "$hits" ]; then
    echo "not ok $TAP_N - sanitizer reports in: $hits"
    for f in $hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$f" | sed 's/^/# /'; done
    TAP_FAILED=$((TAP_FAILED + 1))
else
    echo "ok $TAP_N - no sanitizer report in any server or app log"
fi
it_done
