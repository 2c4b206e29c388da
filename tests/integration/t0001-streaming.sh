#!/bin/sh
# t0001-streaming.sh — the shipped apache-conf/ snippets, in real Apache and
# lighttpd servers on loopback, route Parley's URLs and stream.
#
# For each setup — Apache + mod_fcgid, Apache + mod_proxy_fcgi with an
# external threaded server on a unix socket, lighttpd + mod_fastcgi — with
# build/tests/fcgi-stream standing in for parley.fcgi:
#   - an SSE response of 5 events sent 200 ms apart arrives spread out
#     (~800 ms between first and last), not bunched at the end;
#   - /api/, /brands/ and /socket/longpoll reach the program, with the
#     Authorization header and the settings (PARLEY_DB...);
#   - static files come from the document root;
#   - WebSocket upgrades on /api/websocket/, /ws/ and /socket/websocket reach
#     the bridge's port (a stand-in echo server: tests/integration/ws-echo.mjs).
# Then, when build/parley.fcgi is built, through each setup: GET /api/health
# answers 200 JSON, and a chat answer (POST /api/chat/send, seed 004) from
# the simulated LLM, 6 tokens 150 ms apart, arrives token by token; and
# when build/parley-ws is built too, a ticket answer over WebSocket through
# the server's proxy to the real bridge arrives message by message. The shared-hosting .htaccess is checked too: routing
# and SetEnv work; its SSE timing is only reported (the host's default
# output buffering collects it, as apache-conf/htaccess-shared-hosting says).
#
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
it_init
it_fake_llm

STREAM_APP=$BUILD/tests/fcgi-stream
PARLEY_APP=$BUILD/parley.fcgi
[ -x "$STREAM_APP" ] || it_die "$STREAM_APP is not built (make)"

WS_PORT=$(free_port)
it_bg "$IT_TMP/ws-echo.log" node tests/integration/ws-echo.mjs serve "$WS_PORT"
SETUP_PIDS=""                       # the echo server lives for the whole file
_i=0
until grep -q listening "$IT_TMP/ws-echo.log" 2>/dev/null; do
    _i=$((_i + 1)); [ $_i -gt 100 ] && it_die "ws-echo did not start"; sleep 0.05
done

# jget JSON PATH — prints the value at a dotted PATH ("null" / "undefined").
jget() {
    node -e 'let v = JSON.parse(process.argv[1]);
             for (const k of process.argv[2].split(".")) v = v?.[k];
             console.log(v === undefined ? "undefined" : v === null ? "null" :
                         typeof v === "object" ? JSON.stringify(v) : String(v));' "$1" "$2"
}

# expect WHAT GOT WANT
expect() {
    [ "$2" = "$3" ] && return 0
    echo "$1: got '$2', expected '$3'"
    return 1
}

check_stream() {
    node tests/integration/sse-times.mjs "$BASE/api/tickets/1/ai/stream" \
        --events 5 --min-spread 600 --max-spread 2500
}

# check_params HOW — the program sees the request as Parley needs it.
# HOW: env (settings in the process environment) or param (SetEnv).
check_params() {
    for _prefix in /api/chat /brands /socket/longpoll; do
        _j=$(curl -fsS -m 5 -H 'Authorization: Bearer t0k.en' "$BASE$_prefix/params?x=1&y=%2F") \
            || { echo "GET $_prefix/params failed"; return 1; }
        expect "$_prefix REQUEST_URI" "$(jget "$_j" params.REQUEST_URI)" "$_prefix/params?x=1&y=%2F" || return 1
        expect "$_prefix QUERY_STRING" "$(jget "$_j" params.QUERY_STRING)" "x=1&y=%2F" || return 1
        expect "$_prefix HTTP_AUTHORIZATION" "$(jget "$_j" params.HTTP_AUTHORIZATION)" "Bearer t0k.en" || return 1
    done
    expect "PARLEY_DB ($1)" "$(jget "$_j" "$1.PARLEY_DB")" "$PARLEY_DB" || return 1
    expect "OLLAMA_SERVER ($1)" "$(jget "$_j" "$1.OLLAMA_SERVER")" "$OLLAMA_SERVER" || return 1
    echo "SCRIPT_NAME=$(jget "$_j" params.SCRIPT_NAME) PATH_INFO=$(jget "$_j" params.PATH_INFO) (for $_prefix/params)"
}

check_static() {
    _c=$(curl -sS -m 5 -o "$SETUP_DIR/index.out" -w '%{http_code}' "$BASE/") || return 1
    expect "GET / status" "$_c" 200 || return 1
    grep -q 'parley integration test' "$SETUP_DIR/index.out" || { echo "GET / is not www/index.html"; return 1; }
    _c=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "$BASE/elsewhere/params") || return 1
    expect "GET /elsewhere/params (not an API path)" "$_c" 404
}

check_ws() {
    for _p in /api/websocket/chat/42 "/ws/sess-1?token=abc" "/ws/chat/brand-7" "/socket/websocket?vsn=2.0.0"; do
        node tests/integration/ws-echo.mjs check "$BASE$_p" || { echo "(path $_p)"; return 1; }
    done
}

check_health() {
    _c=$(curl -sS -m 10 -o "$SETUP_DIR/health.out" -w '%{http_code} %{content_type}' "$BASE/api/health") \
        || { echo "GET /api/health failed"; return 1; }
    echo "GET /api/health: $_c $(head -c 200 "$SETUP_DIR/health.out")"
    case $_c in "200 application/json"*) ;; *) echo "expected 200 application/json"; return 1 ;; esac
    node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
             if (typeof j !== "object" || j === null || Array.isArray(j)) process.exit(1);' \
        "$SETUP_DIR/health.out" || { echo "body is not a JSON object"; return 1; }
}

# A seed 004 chat answer from parley.fcgi: 6 tokens 150 ms apart from the
# simulated LLM, each a "data:" event. Only these are measured (the client
# leaves after them): what the app does at the end is its own tests' job.
check_chat_stream() {
    _s=$(curl -fsS -m 10 -H 'Content-Type: application/json' -d '{"kind":"sse"}' "$BASE/api/chat/sessions") \
        || { echo "POST /api/chat/sessions failed: $_s"; return 1; }
    _id=$(jget "$_s" session_id)
    node tests/integration/sse-times.mjs "$BASE/api/chat/send" \
        --post "{\"conversationId\":\"$_id\",\"content\":\"Stream test $name [[fake tokens=6 token_ms=150 first_ms=0]]\"}" \
        --stop-after 6 --min-events 6 --min-spread 600 --max-spread 2500
}

# A seed 000 ticket answer over WebSocket through the server's proxy to the
# real bridge: 6 tokens 150 ms apart arrive as 6 "stream" messages.
check_ws_ticket() {
    _t=$((9000 + TAP_N))
    node tests/integration/ws-ticket.mjs "ws://127.0.0.1:$HTTP_PORT/api/websocket/chat/$_t" \
        "WebSocket test $name $_t [[fake tokens=6 token_ms=150 first_ms=0]]" \
        --stop-after 6 --min-spread 600 --max-spread 2500
}

ECHO_PORT=$WS_PORT
HAVE_BRIDGE=""
if [ -x "$BUILD/parley-ws" ] && [ -x "$PARLEY_APP" ]; then
    start_bridge && HAVE_BRIDGE=1
    ok "parley-ws starts (for the WebSocket checks below)" test -n "$HAVE_BRIDGE"
fi

for setup in fcgid proxy_fcgi lighttpd; do
    name=$(echo "$setup" | tr _ -)
    start_$setup "$STREAM_APP"
    ok "$name: SSE through the server arrives as it is sent" check_stream
    ok "$name: API prefixes reach the program with Authorization and settings" check_params env
    ok "$name: www/ is the document root, other paths are not the API" check_static
    ok "$name: WebSocket upgrades reach the bridge port" check_ws
    stop_setup
    if [ -x "$PARLEY_APP" ]; then
        [ -n "$HAVE_BRIDGE" ] && WS_PORT=$BRIDGE_PORT
        start_$setup "$PARLEY_APP"
        ok "$name: parley.fcgi answers GET /api/health with 200 JSON" check_health
        ok "$name: parley.fcgi streams a chat answer token by token (POST /api/chat/send)" check_chat_stream
        if [ -n "$HAVE_BRIDGE" ]; then
            ok "$name: parley-ws streams a ticket answer through the proxy (/api/websocket/)" check_ws_ticket
        fi
        stop_setup
        WS_PORT=$ECHO_PORT
    else
        it_log "$PARLEY_APP is not built yet: /api/health through $name not checked"
    fi
done

# Shared hosting: routing and settings through .htaccess alone.
start_htaccess "$STREAM_APP"
ok "htaccess: API prefixes reach the program, SetEnv arrives as a FastCGI parameter" check_params params
ok "htaccess: SSE answer arrives complete (timing reported only)" \
    node tests/integration/sse-times.mjs "$BASE/api/tickets/1/ai/stream" --events 5
stop_setup
if [ -x "$PARLEY_APP" ]; then
    start_htaccess "$PARLEY_APP"
    ok "htaccess: parley.fcgi answers GET /api/health with 200 JSON" check_health
    stop_setup
fi

# Under SANITIZE= builds (CI), the programs' stderr — the web servers' error
# logs, the external server's and the bridge's logs — must hold no report.
no_sanitizer_reports() {
    _hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
    [ -z "$_hits" ] && return 0
    for _f in $_hits; do echo "== $_f"; grep -m 5 -A 8 -E 'Sanitizer|runtime error:' "$_f"; done
    return 1
}
ok "no sanitizer report in any server or program log" no_sanitizer_reports

it_done
