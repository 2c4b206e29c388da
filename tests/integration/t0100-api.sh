#!/bin/sh
# t0100-api.sh — the FastCGI API suite (tests/integration/api-suite.mjs)
# through each real web server set up with the shipped apache-conf/ snippets:
# Apache + mod_fcgid, Apache + mod_proxy_fcgi (threaded external app),
# lighttpd + mod_fastcgi. JWT on (a secret in the app's PARLEY_CONFIG file),
# one fresh database per setup. Prints the suite's TAP lines as they come.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
it_init
it_fake_llm
APP=$BUILD/parley.fcgi
[ -x "$APP" ] || it_die "$APP is not built (make)"

it_jwt_config
IT_NO_WS=1          # the bridge is not part of this suite

failed=0
for setup in fcgid proxy_fcgi lighttpd; do
    IT_DB=$IT_TMP/data/$setup.db
    "start_$setup" "$APP"
    it_log "$setup: $BASE"
    if ! PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_SETUP=$setup FAKE_LLM_URL=$FAKE_LLM_URL \
        node --test --test-reporter=tap --test-timeout=60000 tests/integration/api-suite.mjs; then
        failed=$((failed + 1))
        for f in "$SETUP_DIR"/logs/*; do
            [ -s "$f" ] && tail -n 15 "$f" | sed "s|^|# $(basename "$f"): |"
        done
    fi
    stop_setup
done
# The apps ran sanitized in CI (SANITIZE=address,undefined): any report in
# a log — a leak at exit included — fails the run.
hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
if [ -n "$hits" ]; then
    echo "not ok 999 - sanitizer reports in: $hits"
    for f in $hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$f" | sed 's/^/# /'; done
    failed=$((failed + 1))
else
    echo "ok 999 - no sanitizer report in any server or app log"
fi
[ "$failed" -eq 0 ]
