#!/bin/sh
# t0800-upstreams.sh — upstream failover through a real web server on two
# transports (docs/upstreams.md): lighttpd + parley.fcgi (long-poll) and the
# bridge parley-ws behind it (WebSocket), with two simulated LLMs:
#   first   Ollama, order 1, answering 429 with Retry-After: 1
#   second  OpenAI-compatible, order 2, its URL carrying user:password
# PARLEY_BREAKER_FAILURES=1, so one 429 opens first's breaker in the process
# that saw it. Checked:
#   a seed 000 ticket over WebSocket gets one normal answer (the exact text,
#     once); first's request log shows the 429, second's the answer after it;
#   the same over long-poll (parley.fcgi runs its own generation loop, with
#     its own breakers);
#   /api/health keeps its fields and lists both upstreams (no password),
#     first's breaker open with its 429 counted, second's closed with a
#     first-token latency; /api/metrics and the bridge's /metrics render
#     parley_upstream_* / parley_ws_upstream_* the same way;
#   while first's breaker is open a new ticket goes straight to second
#     (first's log unchanged).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - upstream failover # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done

it_init

# two simulated LLMs of our own (their knobs differ). Started from this
# shell, not in $(...): it_bg records each pid for it_cleanup, which a
# subshell's record would not reach (they outlived the test before).
start_fake() {
    _pf=$IT_TMP/fake-$1.port
    it_bg "$IT_TMP/fake-$1.log" node tests/fake-llm/server.mjs --port 0 --port-file "$_pf" --token-ms 2
    SETUP_PIDS=""
    _i=0
    while [ ! -s "$_pf" ] && [ $_i -lt 100 ]; do sleep 0.05; _i=$((_i + 1)); done
    [ -s "$_pf" ] || it_die "the simulated LLM $1 did not start: $(cat "$IT_TMP/fake-$1.log")"
}
start_fake a
start_fake b
PORT_A=$(cat "$IT_TMP/fake-a.port")
PORT_B=$(cat "$IT_TMP/fake-b.port")
FAKE_A=http://127.0.0.1:$PORT_A
FAKE_B=http://127.0.0.1:$PORT_B
FAKE_LLM_URL=$FAKE_B                  # what the shipped snippets call OLLAMA_SERVER (unused)
export FAKE_LLM_URL
curl -fsS -m 5 -H 'Content-Type: application/json' -d '{"status": 429, "retry_after": "1"}' \
    "$FAKE_A/_fake/config" >/dev/null || it_die "cannot set the first fake's knobs"

# /api/metrics is an admin's (docs/admin.md): a JWT secret, a user's token
# for the tickets (IT_TOK) and an admin's for the metrics
SECRET="it-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
IT_TOK=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "t0800"))' "$SECRET")
IT_ADMIN=$(node --input-type=module -e 'import { jwtHS256 } from "./tests/node/clients.mjs";
    console.log(jwtHS256(process.argv[1], "ops", { role: "admin" }))' "$SECRET")
export IT_TOK
IT_APP_CONFIG=$IT_TMP/parley.env
cat >"$IT_APP_CONFIG" <<EOF
PARLEY_JWT_SECRET=$SECRET
RATE_LIMIT_MESSAGES_PER_MINUTE=0
PARLEY_COALESCE_MS=0
PARLEY_UPSTREAMS="name=first provider=ollama url=$FAKE_A order=1; name=second provider=openai url=http://itu:it-pass-77@127.0.0.1:$PORT_B/v1 order=2"
PARLEY_UPSTREAM_BACKOFF_MS=50
PARLEY_BREAKER_FAILURES=1
PARLEY_BREAKER_COOLDOWN_MS=600000
EOF
it_own "$IT_APP_CONFIG"

start_bridge || it_die "parley-ws did not start"
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"

# count FAKE STATUS — requests in a fake's log that began with STATUS
count() {
    curl -fsS -m 5 "$1/_fake/requests" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{
            const j=JSON.parse(s);console.log(j.requests.filter(r=>r.status===Number(process.argv[1])).length)})' "$2"
}

# ticket TRANSPORT ID BODY — one seed 000 ticket answer over ws or lp
# through lighttpd; prints the streamed text (exit 1 on an error frame).
ticket() {
    node --input-type=module -e '
        import WebSocket from "ws";
        const [how, base, id, body] = process.argv.slice(1);
        const fail = (m) => { console.log(m); process.exit(1); };
        setTimeout(() => fail("timeout"), 20000).unref();
        let text = "";
        if (how === "ws") {
            const ws = new WebSocket(`${base.replace(/^http/, "ws")}/api/websocket/chat/${id}?token=${process.env.IT_TOK}`);
            ws.on("open", () => ws.send(JSON.stringify({ ticketBody: body })));
            ws.on("message", (raw) => {
                const m = JSON.parse(raw.toString());
                if (m.type === "stream") text += m.content;
                else if (m.type === "done") { console.log(text); process.exit(0); }
                else if (m.type === "error") fail(`error frame: ${m.message}`);
            });
            ws.on("error", (e) => fail(`ws: ${e.message}`));
        } else {
            const auth = { authorization: `Bearer ${process.env.IT_TOK}` };
            const open = await fetch(`${base}/api/poll/open`, { method: "POST",
                headers: { "content-type": "application/json", ...auth },
                body: JSON.stringify({ path: `/api/websocket/chat/${id}` }) });
            if (open.status !== 200) fail(`open: HTTP ${open.status}`);
            const { sid } = await open.json();
            const post = await fetch(`${base}/api/poll/${sid}`, { method: "POST", headers: auth,
                body: JSON.stringify({ ticketBody: body }) });
            if (post.status !== 202) fail(`post: HTTP ${post.status}`);
            let cursor = 0;
            for (let i = 0; i < 100; i++) {
                const r = await fetch(`${base}/api/poll/${sid}?cursor=${cursor}&wait=10`, { headers: auth });
                const j = await r.json();
                for (const m of j.messages) {
                    if (m.type === "stream") text += m.content;
                    else if (m.type === "done") { console.log(text); process.exit(0); }
                    else if (m.type === "error") fail(`error frame: ${m.message}`);
                }
                cursor = j.cursor;
            }
            fail("no done frame");
        }' "$@"
}

ANSWER="Failover gives exactly one answer"
RUN_ID=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')

check_answer() {    # TRANSPORT ID
    _a0=$(count "$FAKE_A" 429) _b0=$(count "$FAKE_B" 200)
    _t=$(ticket "$1" "$BASE" "$2" "[[fake answer=\"$ANSWER\"]] my order $2 is late") || { echo "$_t"; return 1; }
    [ "$_t" = "$ANSWER" ] || { echo "got '$_t', wanted '$ANSWER' once"; return 1; }
    _a1=$(count "$FAKE_A" 429) _b1=$(count "$FAKE_B" 200)
    [ $((_a1 - _a0)) -eq 1 ] || { echo "first got $((_a1 - _a0)) requests answered 429, wanted 1"; return 1; }
    [ $((_b1 - _b0)) -eq 1 ] || { echo "second answered $((_b1 - _b0)) requests, wanted 1"; return 1; }
    echo "one answer; first's log +1 (429), second's +1 (200)"
}
ok "WebSocket (bridge): a seed 000 ticket fails over from the 429 upstream, one answer" \
    check_answer ws "T-ws-$RUN_ID"
sleep 1.1    # first's Retry-After is per process anyway; keep the logs apart
ok "long-poll (parley.fcgi): a seed 000 ticket fails over from the 429 upstream, one answer" \
    check_answer lp "T-lp-$RUN_ID"

# order in the logs: the 429 ended before second's answer began
check_order() {
    curl -fsS -m 5 "$FAKE_A/_fake/requests" >"$IT_TMP/a.json" &&
    curl -fsS -m 5 "$FAKE_B/_fake/requests" >"$IT_TMP/b.json" &&
    node -e '
        const fs = require("fs");
        const a = JSON.parse(fs.readFileSync(process.argv[1])).requests;
        const b = JSON.parse(fs.readFileSync(process.argv[2])).requests;
        if (a.length !== 2 || b.length !== 2) { console.log(`logs: first ${a.length}, second ${b.length}`); process.exit(1); }
        for (let i = 0; i < 2; i++) {
            if (a[i].status !== 429 || b[i].status !== 200) { console.log("statuses", a[i].status, b[i].status); process.exit(1); }
            if (!(b[i].started_at >= a[i].ended_at - 1)) { console.log("second began before the 429 ended"); process.exit(1); }
            if (b[i].path !== "/v1/chat/completions" || a[i].path !== "/api/chat" && a[i].path !== "/api/generate") {
                console.log("paths", a[i].path, b[i].path); process.exit(1); }
        }
        console.log("first: 429, 429; second: 200, 200, each after the 429");' "$IT_TMP/a.json" "$IT_TMP/b.json"
}
ok "the fakes' request logs: each 429 on first, then the answer on second" check_order

check_health() {
    curl -sS -m 10 "$BASE/api/health" >"$IT_TMP/health.json" || return 1
    node -e '
        const h = JSON.parse(require("fs").readFileSync(process.argv[1]));
        const bad = (m) => { console.log(m, JSON.stringify(h)); process.exit(1); };
        for (const k of ["status", "database", "upstream", "auth"]) if (!(k in h)) bad(`no ${k}`);
        if (!("provider" in h.upstream && "reachable" in h.upstream && "url" in h.upstream)) bad("upstream fields");
        const u = h.upstreams;
        if (!Array.isArray(u) || u.length !== 2) bad("upstreams");
        const [f, s] = u;
        if (f.name !== "first" || s.name !== "second") bad("names");
        if (f.provider !== "ollama" || s.provider !== "openai") bad("providers");
        if (JSON.stringify(h).includes("it-pass-77") || JSON.stringify(h).includes("itu:")) bad("credentials shown");
        if (s.url !== `http://127.0.0.1:${process.argv[2]}/v1`) bad("second url");
        if (f.breaker !== "open" || f.errors.http_429 !== 1 || f.requests !== 1) bad("first: breaker open after its 429");
        if (s.breaker !== "closed" || s.successes < 1 || typeof s.first_token_ms_last !== "number" ||
            typeof s.first_token_ms_mean !== "number") bad("second: closed with a latency");
        console.log(`first ${f.breaker} (429: ${f.errors.http_429}), second ${s.breaker} (${s.successes} ok, last first token ${s.first_token_ms_last} ms)`);
    ' "$IT_TMP/health.json" "$PORT_B"
}
ok "/api/health: its fields kept, both upstreams with breaker state, counts and latency, no credentials" check_health

check_metrics() {    # URL PREFIX
    curl -fsS -m 10 -H "Authorization: Bearer $IT_ADMIN" "$1" >"$IT_TMP/metrics.txt" || return 1
    _m=$IT_TMP/metrics.txt
    if grep -q 'it-pass-77' "$_m"; then echo "credentials shown"; return 1; fi
    for _l in \
        "${2}_upstream_breaker_state{upstream=\"first\",url=\"$FAKE_A\",state=\"open\"} 1" \
        "${2}_upstream_breaker_state{upstream=\"second\",url=\"http://127.0.0.1:$PORT_B/v1\",state=\"closed\"} 1" \
        "${2}_upstream_errors_total{upstream=\"first\",url=\"$FAKE_A\",kind=\"http_429\"} 1" \
        "${2}_upstream_successes_total{upstream=\"second\",url=\"http://127.0.0.1:$PORT_B/v1\"} 1"; do
        grep -qxF "$_l" "$_m" || { echo "missing: $_l"; grep "${2}_upstream" "$_m" | head -20; return 1; }
    done
    grep -q "^${2}_upstream_first_token_seconds{upstream=\"second\",.*stat=\"mean\"} " "$_m" ||
        { echo "no latency for second"; return 1; }
    echo "breakers, 429 count, successes and latency as expected"
}
ok "/api/metrics (parley.fcgi): parley_upstream_* per upstream" check_metrics "$BASE/api/metrics" parley
ok "the bridge's /metrics: parley_ws_upstream_* per upstream" \
    check_metrics "http://127.0.0.1:$BRIDGE_PORT/metrics" parley_ws

# first's breaker is open in both processes: new tickets skip it
check_skip() {
    _a0=$(count "$FAKE_A" 429)
    for _tr in ws lp; do
        _t=$(ticket "$_tr" "$BASE" "T-skip-$_tr-$RUN_ID" "[[fake answer=\"$ANSWER\"]] again $_tr") || { echo "$_t"; return 1; }
        [ "$_t" = "$ANSWER" ] || { echo "$_tr: got '$_t'"; return 1; }
    done
    # generation requests only (/api/health probes first's /api/tags)
    _n=$(curl -fsS -m 5 "$FAKE_A/_fake/requests" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>
        console.log(JSON.parse(s).requests.filter(r=>r.path!=="/api/tags").length))')
    [ "$_n" -eq 2 ] || { echo "first was asked again ($_n requests)"; curl -sS -m 5 "$FAKE_A/_fake/requests"; return 1; }
    echo "both answered by second; first not asked"
}
ok "open breaker: the next tickets (WebSocket and long-poll) go straight to second" check_skip

# (parley ask exits 78 on a configuration error; parley-ws and parley.fcgi
# refuse to start with the same message)
check_refused_config() {
    _out=$(PARLEY_CONFIG= PARLEY_UPSTREAMS="name=x provider=ollama" PARLEY_DB=$IT_TMP/data/refuse.db \
        "$BUILD/parley" ask "hello" 2>&1) && _rc=0 || _rc=$?
    [ $_rc -eq 78 ] || { echo "exit $_rc (wanted 78): $_out"; return 1; }
    _out2=$(PARLEY_CONFIG= PARLEY_UPSTREAMS="name=x provider=ollama" PARLEY_DB=$IT_TMP/data/refuse.db \
        timeout 10 "$BUILD/parley-ws" --port 0 2>&1) && _rc=0 || _rc=$?
    [ $_rc -ne 0 ] || { echo "parley-ws started"; return 1; }
    case $_out2 in *"PARLEY_UPSTREAMS: upstream 1 ('x'): url is required"*) ;;
        *) echo "parley-ws said: $_out2"; return 1 ;; esac
    case $_out in *"PARLEY_UPSTREAMS: upstream 1 ('x'): url is required"*) ;;
        *) echo "message: $_out"; return 1 ;; esac
    echo "exit 78: $(printf '%s' "$_out" | head -n 1)"
}
ok "a bad PARLEY_UPSTREAMS is refused with the setting named (parley ask: exit 78; parley-ws does not start)" check_refused_config

it_done
