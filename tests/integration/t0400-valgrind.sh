#!/bin/sh
# t0400-valgrind.sh — parley.fcgi, the long-running FastCGI server, under
# valgrind (memcheck) for a whole session of the API suite
# (tests/integration/api-suite.mjs: REST, long-poll, SSE, seed 004, JWT,
# bad input, rate limit, upstream faults) and of Phoenix LongPoll with the
# official client (tests/integration/phoenix-lp.mjs, seed 003; its
# knowledge-base case is skipped: no article imported here) behind Apache +
# mod_proxy_fcgi,
# started from the shipped parley-fcgi.service, then SIGTERM: no error, no
# definitely or indirectly lost byte.
#
# valgrind and the sanitizers do not mix, so this builds its own plain
# parley.fcgi in $BUILD-vg (a few seconds; CI's suite runs sanitized and
# still gets a valgrind run here). The bridge has its own valgrind test in
# tests/node/ws-bridge.test.mjs.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
it_init
if ! command -v valgrind >/dev/null 2>&1; then
    echo "ok 1 - parley.fcgi under valgrind # SKIP valgrind is not installed"
    exit 0
fi
it_fake_llm

VG_BUILD=${BUILD}-vg
if ! make -s BUILD="$VG_BUILD" SANITIZE= "$VG_BUILD/parley.fcgi" >"$IT_TMP/make.log" 2>&1; then
    sed 's/^/# /' "$IT_TMP/make.log"
    it_die "could not build $VG_BUILD/parley.fcgi"
fi
REAL=$(cd "$VG_BUILD" && pwd)/parley.fcgi
cp "$REAL" "$IT_TMP/parley.fcgi.real"
it_own "$IT_TMP/parley.fcgi.real"

it_jwt_config
{   # phoenix-lp.mjs, as t0600 sets it: an empty poll answers 204 in 2 s;
    # the Origin its OPTIONS case sends is allowed
    echo "PARLEY_PHOENIX_WINDOW=2"
    echo "PARLEY_ALLOWED_ORIGINS=https://app.example"
} >>"$IT_APP_CONFIG"
IT_NO_WS=1

# What the service's ExecStart runs: valgrind around the real program. exec
# keeps the PID, so the harness's SIGTERM reaches valgrind, which passes it on.
VG_LOG=$IT_TMP/vglogs
mkdir -p "$VG_LOG"
it_own "$VG_LOG"
cat >"$IT_TMP/vg-parley.fcgi" <<EOF
#!/bin/sh
exec valgrind --leak-check=full --show-leak-kinds=definite,indirect \\
    --errors-for-leak-kinds=definite,indirect --num-callers=30 \\
    --log-file=$VG_LOG/parley.fcgi.%p.log "$IT_TMP/parley.fcgi.real" "\$@"
EOF
chmod 755 "$IT_TMP/vg-parley.fcgi"

IT_DB=$IT_TMP/data/vg.db
IT_STOP_GRACE=1200     # 60 s: the exit and leak check run at valgrind's pace
start_proxy_fcgi "$IT_TMP/vg-parley.fcgi"
it_log "proxy_fcgi under valgrind: $BASE"
failed=0
if ! PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_SETUP=proxy_fcgi FAKE_LLM_URL=$FAKE_LLM_URL \
    node --test --test-reporter=tap --test-timeout=180000 tests/integration/api-suite.mjs; then
    failed=1
    for f in "$SETUP_DIR"/logs/*; do
        [ -s "$f" ] && tail -n 15 "$f" | sed "s|^|# $(basename "$f"): |"
    done
fi
if ! PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_FAKE_URL= \
    node --test --test-reporter=tap --test-timeout=180000 tests/integration/phoenix-lp.mjs; then
    failed=1
    for f in "$SETUP_DIR"/logs/*; do
        [ -s "$f" ] && tail -n 15 "$f" | sed "s|^|# $(basename "$f"): |"
    done
fi
stop_setup

logs=$(ls "$VG_LOG"/parley.fcgi.*.log 2>/dev/null)
if [ -z "$logs" ]; then
    echo "not ok 900 - valgrind wrote no log (did parley.fcgi run under it?)"
    failed=1
else
    # The summary is written at exit only: a process that had to be killed
    # has none, and that fails too. Leaks of the kinds above count as errors.
    bad=""
    for f in $logs; do
        grep -q 'ERROR SUMMARY: 0 errors' "$f" || bad="$bad $f"
    done
    if [ -n "$bad" ]; then
        echo "not ok 900 - valgrind found errors or leaks in parley.fcgi, or it did not exit by itself"
        for f in $bad; do grep -v '^==[0-9]*== *$' "$f" | head -n 80 | sed 's/^/# /'; done
        failed=1
    else
        echo "ok 900 - parley.fcgi under valgrind: no error, nothing definitely or indirectly lost, clean exit on SIGTERM"
        grep -h -E 'definitely lost|indirectly lost|in use at exit' $logs | sed 's/^/# /'
    fi
fi
[ "$failed" -eq 0 ]
