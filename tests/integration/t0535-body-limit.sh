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
    _out=$SETUP_DIR/logs/body-limit.tap
    _limit=1048576
    [ "$setup" = htaccess ] && _limit=131072
    PARLEY_BASE=$BASE PARLEY_SETUP=$setup BODY_LIMIT=$_limit \
        node --test --test-reporter=tap tests/integration/body-limit.mjs >"$_out" 2>&1 && _rc=0 || _rc=$?
    _n=0
    while IFS= read -r _line; do
        case $_line in
        "ok "*|"not ok "*)
            _n=$((_n + 1)); TAP_N=$((TAP_N + 1))
            _t=$(printf '%s' "$_line" | sed -E 's/^(not )?ok [0-9]+ - //')
            case $_line in
            "not ok "*) TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $_t" ;;
            *) echo "ok $TAP_N - $_t" ;;
            esac ;;
        esac
    done <"$_out"
    if [ "$_rc" -ne 0 ] || [ "$_n" -eq 0 ]; then
        grep -E '^ *(error|  ---|    (expected|actual))' "$_out" | grep -v '^ *---' | head -n 20 | sed 's/^/#   /'
        [ "$_n" -eq 0 ] && { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); \
            echo "not ok $TAP_N - $setup: the checks ran no test (exit $_rc)"; }
        for _f in "$SETUP_DIR"/logs/error.log "$SETUP_DIR"/logs/app.log; do
            [ -s "$_f" ] && tail -n 5 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    stop_setup
done
it_done
