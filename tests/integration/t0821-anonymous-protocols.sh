#!/bin/sh
# t0821-anonymous-protocols.sh — anonymous visitors of the ticket (seed 000),
# chat (seed 001) and send (seed 004) protocols (docs/anonymous.md) through
# lighttpd (apache-conf/lighttpd-parley.conf: parley.fcgi for /api/*,
# WebSocket paths proxied to the bridge parley-ws), with PARLEY_JWT_SECRET
# set and PARLEY_ANONYMOUS=ticket,chat,send
# (tests/integration/anonymous-protocols.mjs), the simulated LLM's request
# log as witness:
#   brand (not listed) refuses a missing token (4401 / 401); a bad JWT on a
#     listed protocol is refused, not made a visitor;
#   ticket: a visitor is served over WebSocket, long-poll (token in
#     Set-Cookie HttpOnly SameSite=Lax, X-Parley-Visitor and the open
#     response) and REST + SSE (/ai, /ai/stream, /ai/stop); its token keeps
#     its identity across transports; only the starter stops its generation
#     (another visitor, a user, a forged token: 403, the upstream goes on);
#     its poll session is its alone;
#   chat: the WebSocket connected frame carries the token and the owner
#     anon:<id>; with the token the session goes on; another visitor, a
#     user, a forged token: 4404 / 404; GET /api/chat/sessions lists only
#     the caller's own; a JWT naming a visitor is refused;
#   send: a visitor's conversation answered as SSE; anyone else's send to
#     it is 404 and never reaches the upstream;
#   a JWT user still works on all three.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - anonymous visitors of ticket, chat and send # SKIP $BUILD/$_b is not built"
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
    # every visitor comes from 127.0.0.1: one shared bucket (docs/anonymous.md)
    echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
    echo "PARLEY_ANONYMOUS=${IT_ANONYMOUS:-ticket,chat,send}"
} >>"$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "bridge ws://127.0.0.1:$BRIDGE_PORT, lighttpd $BASE, PARLEY_ANONYMOUS=${IT_ANONYMOUS:-ticket,chat,send}"

BASE="$BASE" SECRET="$SECRET" RUN="ap-$$" FAKE_LLM_URL="$FAKE_LLM_URL" IT_NODE_TIMEOUT=300 \
    it_node_tap "" tests/integration/anonymous-protocols.mjs

stop_setup

# PARLEY_ANONYMOUS=send alone: a seed 004 visitor creates its conversation
# (POST /api/chat/sessions admits send visitors too), is answered, reads its
# messages back; tickets still need a token.
send_alone() {
    _jar=$IT_TMP/send.jar
    _c=$(curl -sS -c "$_jar" -H 'content-type: application/json' -d '{"kind":"sse"}' \
        -w '\n%{http_code}' "$BASE/api/chat/sessions") || return 1
    _code=$(printf '%s\n' "$_c" | tail -n 1)
    _body=$(printf '%s\n' "$_c" | sed '$d')
    [ "$_code" = 201 ] || { echo "create: $_code $_body"; return 1; }
    _id=$(printf '%s' "$_body" | node -e 'let s="";process.stdin.on("data",(d)=>{s+=d;}).on("end",()=>console.log(JSON.parse(s).id))')
    _sse=$(curl -sS -b "$_jar" -H 'content-type: application/json' \
        -d "{\"conversationId\":\"$_id\",\"content\":\"send alone [[fake tokens=3 token_ms=1]]\"}" \
        "$BASE/api/chat/send") || return 1
    case $_sse in *'"done":true'*) ;; *) echo "send: $_sse"; return 1 ;; esac
    case $_sse in *'"error"'*) echo "send: $_sse"; return 1 ;; esac
    _m=$(curl -sS -b "$_jar" -o /dev/null -w '%{http_code}' "$BASE/api/chat/sessions/$_id/messages")
    [ "$_m" = 200 ] || { echo "messages: $_m"; return 1; }
    _t=$(curl -sS -o /dev/null -w '%{http_code}' "$BASE/api/tickets/T-send-alone/ai")
    [ "$_t" = 401 ] || { echo "a ticket without a token: $_t"; return 1; }
    echo "conversation $_id answered; ticket without a token: $_t"
}
if [ -z "${IT_ANONYMOUS:-}" ]; then
    sed -i 's/^PARLEY_ANONYMOUS=.*/PARLEY_ANONYMOUS=send/' "$IT_APP_CONFIG"
    start_lighttpd "$BUILD/parley.fcgi"
    ok "PARLEY_ANONYMOUS=send alone: a visitor creates its seed 004 conversation, is answered, reads it; tickets still 401" send_alone
    stop_setup
fi

no_sanitizer_report() {
    ! grep -l -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer' \
        "$BRIDGE_DIR"/*.log "$IT_TMP"/*/logs/* 2>/dev/null
}
ok "no sanitizer report in the bridge's or parley.fcgi's logs" no_sanitizer_report

it_done
