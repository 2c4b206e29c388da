#!/bin/sh
# t0535-body-limit.sh — request bodies over Parley's 1 MB limit get the
# API's 413 JSON ({"success":false,"message":...}) through every shipped
# setup, with the shipped files included verbatim: Apache + mod_fcgid
# (parley-fcgid.conf), shared hosting (.htaccess, the host's mod_fcgid
# defaults), Apache + mod_proxy_fcgi (parley-proxy-fcgi.conf) and lighttpd
# (lighttpd-parley.conf). Issue 8 defect g: a 10 MB body got Apache's HTML
# 500 (FcgidMaxRequestLen). tests/integration/body-limit.mjs has the checks.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
APP=$BUILD/parley.fcgi
if [ ! -x "$APP" ]; then
    echo "ok 1 - body limit # SKIP $APP is not built"
    echo "1..1"
    exit 0
fi
it_init
it_fake_llm
IT_NO_WS=1

for setup in fcgid htaccess proxy_fcgi lighttpd; do
    IT_DB=$IT_TMP/data/$setup.db
    "start_$setup" "$APP"
    _limit=1048576
    [ "$setup" = htaccess ] && _limit=131072
    PARLEY_BASE=$BASE PARLEY_SETUP=$setup BODY_LIMIT=$_limit it_node_tap "" tests/integration/body-limit.mjs
    stop_setup
done
it_done
