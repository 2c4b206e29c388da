#!/bin/sh
# t0540-kb.sh — the knowledge base end to end (docs/knowledge-base.md):
# `parley kb import` loads a Markdown article into the database, parley.fcgi
# runs behind Apache + mod_fcgid (the shipped snippet) with
# PARLEY_KB_TICKETS=1 in its PARLEY_CONFIG file, and a seed 000 ticket asked
# over long-poll reaches the simulated LLM with the article's passage in its
# system prompt; a ticket that matches no article gets the plain prompt, and
# so does the matching one once `parley kb remove` took the article away.
# The simulated LLM is this test's own (its last request is what we read).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh
CLI=$BUILD/parley
APP=$BUILD/parley.fcgi
[ -x "$CLI" ] || it_die "$CLI is not built (make)"
[ -x "$APP" ] || it_die "$APP is not built (make)"
it_init
FAKE_LLM_URL=""            # our own: its last_body must be our request
it_fake_llm

DB=$IT_TMP/data/parley.db
ART=$IT_TMP/printers.md
cat >"$ART" <<'EOF'
# Printers

## Fuser error E52

Error E52 means the fuser unit overheated: switch the printer off for
ten minutes, then clear the paper path.

## Toner

Replace the toner cartridge when the orange light blinks.
EOF

kb_cli() { PARLEY_DB=$DB "$CLI" kb "$@"; }

import_ok() {
    _out=$(kb_cli import "$ART" 2>&1) || { echo "$_out"; return 1; }
    [ "$_out" = "$ART: 2 passages" ] || { echo "got: $_out"; return 1; }
    _list=$(kb_cli list 2>/dev/null) || return 1
    printf '%s\n' "$_list" | grep -q "	printers.md	1	[0-9]*	Fuser error E52$" ||
        { echo "list: $_list"; return 1; }
}
ok "parley kb import cuts the article into passages; kb list shows them" import_ok
it_own "$IT_TMP/data"

IT_APP_CONFIG=$IT_TMP/parley.conf
{
    echo "PARLEY_KB_TICKETS=1"
    echo "PARLEY_COALESCE_MS=5"
} >"$IT_APP_CONFIG"
it_own "$IT_APP_CONFIG"
export IT_APP_CONFIG
IT_NO_WS=1
IT_DB=$DB
start_fcgid "$APP"
it_log "fcgid: $BASE"

# jget EXPR — the JavaScript expression EXPR over o, the JSON on stdin
# ("" for null or undefined).
jget() {
    node -e 'let s = ""; process.stdin.on("data", (d) => { s += d; }).on("end", () => {
        const o = JSON.parse(s); const v = eval(process.argv[1]);
        process.stdout.write(v == null ? "" : String(v)); })' "$1"
}

# ask_ticket ID BODY — opens a long-poll seed 000 session on ticket ID,
# sends BODY, polls until "done" or "error"; prints the frame types.
ask_ticket() {
    _sid=$(curl -sf -m 10 -H 'Content-Type: application/json' \
        -d "{\"path\":\"/api/websocket/chat/$1\"}" "$BASE/api/poll/open" | jget o.sid) || return 1
    [ -n "$_sid" ] || { echo "no session"; return 1; }
    _msg=$(node -e 'process.stdout.write(JSON.stringify({ ticketBody: process.argv[1] }))' "$2")
    curl -sf -m 10 --data-binary "$_msg" "$BASE/api/poll/$_sid" >/dev/null || { echo "POST failed"; return 1; }
    _cur=0 _types="" _i=0
    while [ $_i -lt 20 ]; do
        _r=$(curl -sf -m 15 "$BASE/api/poll/$_sid?cursor=$_cur&wait=5") || { echo "GET failed"; return 1; }
        _types="$_types $(printf '%s' "$_r" | jget 'o.messages.map((m) => m.type).join(" ")')"
        _cur=$(printf '%s' "$_r" | jget o.cursor)
        case " $_types " in *" done "*|*" error "*) break ;; esac
        _i=$((_i + 1))
    done
    echo $_types
}

# The system prompt of the last request the simulated LLM received.
last_system() { curl -sf -m 5 "$FAKE_LLM_URL/_fake/stats" | jget 'o.last_body && o.last_body.system'; }

grounded() {
    _t=$(ask_ticket kb-1 'The printer shows fuser error E52 [[fake tokens=6 token_ms=0]]') || { echo "$_t"; return 1; }
    case "$_t" in stream*done) ;; *) echo "frames: $_t"; return 1 ;; esac
    _s=$(last_system)
    case "$_s" in
    *"[1] Fuser error E52 (printers.md)"*"Error E52 means the fuser unit overheated"*) ;;
    *) echo "upstream system prompt: $_s"; return 1 ;;
    esac
    case "$_s" in *"Replace the toner"*) echo "an unrelated passage went in: $_s"; return 1 ;; esac
}
ok "a matching ticket reaches the upstream with the article's passage" grounded

plain() {
    _t=$(ask_ticket kb-2 'Coffee machine leaks water [[fake tokens=4 token_ms=0]]') || { echo "$_t"; return 1; }
    case "$_t" in stream*done) ;; *) echo "frames: $_t"; return 1 ;; esac
    _s=$(last_system)
    [ -n "$_s" ] || { echo "no system prompt at all"; return 1; }
    case "$_s" in *"[1]"*|*"knowledge base"*) echo "context added: $_s"; return 1 ;; esac
}
ok "a ticket that matches no article gets no context" plain

removed() {
    _out=$(kb_cli remove printers.md 2>&1) || { echo "$_out"; return 1; }
    [ "$_out" = "removed 2 passages" ] || { echo "got: $_out"; return 1; }
    _t=$(ask_ticket kb-3 'The printer shows fuser error E52 again [[fake tokens=4 token_ms=0]]') ||
        { echo "$_t"; return 1; }
    case "$_t" in stream*done) ;; *) echo "frames: $_t"; return 1 ;; esac
    _s=$(last_system)
    case "$_s" in *"E52"*) echo "removed article still used: $_s"; return 1 ;; esac
}
ok "after parley kb remove the article is no longer used" removed

stop_setup
# The app ran sanitized in CI (SANITIZE=address,undefined): any report fails.
hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
no_reports() {
    [ -z "$hits" ] && return 0
    for f in $hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$f"; done
    return 1
}
ok "no sanitizer report in any server or app log" no_reports
it_done
