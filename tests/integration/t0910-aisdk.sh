#!/bin/sh
# t0910-aisdk.sh — the AI SDK UI message stream (docs/ai-sdk.md, issue 15
# item 2) through real web servers configured with the shipped snippets:
# lighttpd (apache-conf/lighttpd-parley.conf), Apache + mod_fcgid
# (parley-fcgid.conf) and Apache + mod_proxy_fcgi (parley-proxy-fcgi.conf,
# parley.fcgi as parley-fcgi.service starts it), JWT required, one SQLite
# database, PARLEY_LEASE_MS=6000, PARLEY_ANONYMOUS=send (not with
# mod_proxy_fcgi).
#
# tests/integration/aisdk.mjs, with the official `ai` package's client side
# (DefaultChatTransport, readUIMessageStream; 6.0.333 pinned), checks
# through each server: the protocol header, data: lines, [DONE] and the
# exact parts; three turns whose text is the simulated LLM's answer, the
# chat listed and exported as a conversation; a reload mid-answer (the
# response dropped, then the resume endpoint) yields the whole answer once;
# resume with nothing running: 204; the REST stop ends the answer with
# finish (stopped); regenerate-message; an anonymous visitor issued by its
# first request, reaching its own chat only; and, under lighttpd and mod_fcgid
# (which start a new parley.fcgi), the process that owns a generation
# SIGKILLed mid-answer: the resume gets the protocol's error part once the
# lease expires, never a hang.
# Needs $BUILD/parley-ws and $BUILD/parley.fcgi (skips otherwise).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - AI SDK stream through the web servers # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
[ -f node_modules/ai/package.json ] || it_die "node_modules/ai is not installed (npm ci)"

it_init
it_fake_llm
it_jwt_config
{
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_LEASE_MS=6000"
} >>"$IT_APP_CONFIG"

# lighttpd and mod_fcgid also admit anonymous visitors (ANON=1); the
# mod_proxy_fcgi setup runs without PARLEY_ANONYMOUS (no token: 401)
cp "$IT_APP_CONFIG" "$IT_TMP/parley-users-only.conf"
it_own "$IT_TMP/parley-users-only.conf"
echo "PARLEY_ANONYMOUS=send" >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT

# The three setups run at once (lib-par.sh), each with its own RUN (its
# users and chats) and its own parley.fcgi processes: a KILL reaches only
# the process that owns that setup's generation.
. tests/integration/lib-par.sh
start_lighttpd "$BUILD/parley.fcgi"
L_BASE=$BASE L_DIR=$SETUP_DIR L_PIDS=$SETUP_PIDS
start_fcgid "$BUILD/parley.fcgi"
F_BASE=$BASE F_DIR=$SETUP_DIR F_PIDS=$SETUP_PIDS
IT_APP_CONFIG=$IT_TMP/parley-users-only.conf
start_proxy_fcgi "$BUILD/parley.fcgi"
P_BASE=$BASE P_DIR=$SETUP_DIR P_PIDS=$SETUP_PIDS
it_log "lighttpd $L_BASE, mod_fcgid $F_BASE, mod_proxy_fcgi $P_BASE, bridge $BRIDGE_PORT"

SETUP_DIR=$L_DIR BASE=$L_BASE RUN="l$$" KILL=1 ANON=1 SECRET="$SECRET" \
    it_par lighttpd it_node_tap "lighttpd: " tests/integration/aisdk.mjs
SETUP_DIR=$F_DIR BASE=$F_BASE RUN="f$$" KILL=1 ANON=1 SECRET="$SECRET" \
    it_par fcgid it_node_tap "apache mod_fcgid: " tests/integration/aisdk.mjs
SETUP_DIR=$P_DIR BASE=$P_BASE RUN="p$$" KILL=0 SECRET="$SECRET" \
    it_par proxy_fcgi it_node_tap "apache mod_proxy_fcgi: " tests/integration/aisdk.mjs
it_par_wait
for _s in L F P; do
    eval "SETUP_PIDS=\$${_s}_PIDS SETUP_DIR=\$${_s}_DIR"
    stop_setup
done

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
