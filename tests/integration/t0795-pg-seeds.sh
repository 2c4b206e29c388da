#!/bin/sh
# t0795-pg-seeds.sh — moving up (issue 10): a SQLite database a real user
# filled is copied to PostgreSQL with `parley db copy`, then the seed suites
# pass against the copy and the copied data is served.
#
#   1. SQLite: lighttpd + parley.fcgi + parley-ws on one SQLite file (JWT
#      on), with the shipped apache-conf/ files. Before it starts, an admin
#      imports two knowledge-base articles (`parley kb import`) and edits the
#      brands (a brand "acme" added, the demo "homestyle" removed: sqlite3,
#      as docs/postgres.md's admin would). Through the web server, user
#      carol: a seed 000 ticket answered over long-poll (then cached), a
#      seed 001 conversation of two messages over WebSocket (/ws/<id>), a
#      seed 002 brand chat (/ws/chat/acme), a seed 003 Phoenix session
#      (LongPoll: query, stream_query) and a long-poll session left open.
#      The setup is stopped.
#   2. `parley db copy --from <file> --to $PG_URL`: exit 0, counts printed.
#   3. PostgreSQL (PARLEY_DB=$PG_URL, PARLEY_NODE_PREFIX in the app's
#      PARLEY_CONFIG file): Apache + mod_proxy_fcgi and lighttpd, each with
#      its parley-ws. On the first, the copied data is checked: the ticket
#      comes back `cached` with the same text (no upstream call), the seed
#      001 conversation's messages, the Phoenix session's get_history, the
#      brand list is the source's, a query grounded in the copied passages
#      (rag_context_used 1, the passage upstream), the brand conversation
#      and the open long-poll session go on. Then on each server the seed
#      suites: tests/integration/api-suite.mjs, phoenix-lp.mjs (its KB test
#      uses the copied article "Fuser error E52") and phoenix-ws.mjs (JWT on
#      Apache only: lighttpd passes Phoenix's authToken subprotocol as is,
#      which t0610 does not test either), then, restarted in open mode (no
#      JWT, no rate limit, as t0200), tests/node/ws-bridge.test.mjs in
#      external mode (WS_BRIDGE_URL, WS_POLL_URL) and phoenix-ws.mjs.
#      Then Apache + mod_fcgid the same way, its parley-websocket.conf's
#      @PARLEY_NODE_PREFIX@ the node's prefix: while the bridge runs (its
#      marker <prefix>-ws.up), Apache sends long-polls to it, which its
#      /metrics must show.
#      The six setups run at once (the three JWT ones, then the three open
#      ones; T0795_WAVES=all: all six together), each with its own
#      simulated LLM, node prefix and directories; each server on its own
#      copy of the source (`parley db copy` again, into parley_lighttpd and
#      parley_fcgid; the copied data is checked on proxy_fcgi's, the
#      database "parley" whose counts were compared).
#      Before each JWT run the rate-limit hits are deleted (psql): the
#      suites' user alice sends ~15 messages a run, and on one database the
#      runs of two suites within a minute would pass the limit of 30 that
#      t0100's fresh database per setup never reaches.
#   4. Any sanitizer report in any log (each setup's kept) fails the test,
#      and so does an ERROR, FATAL or PANIC in the PostgreSQL server's log.
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/integration/lib.sh

for _b in parley-ws parley.fcgi parley; do
    if [ ! -x "$BUILD/$_b" ]; then
        echo "ok 1 - db copy then the seed suites on PostgreSQL # SKIP $BUILD/$_b is not built"
        echo "1..1"
        exit 0
    fi
done
[ -f node_modules/phoenix/package.json ] || it_die "node_modules/phoenix missing (make node-deps)"
command -v sqlite3 >/dev/null 2>&1 || it_die "sqlite3 is not installed"

T0=$(date +%s)
since() { echo "$(($(date +%s) - T0)) s"; }
it_init
FAKE_LLM_URL=""            # our own: the KB checks read its last request
it_fake_llm
export FAKE_LLM_URL
IT_PG_MAX_CONN=300         # up to six setups at once (phase 3)
it_postgres
ok "PostgreSQL started (port $PG_PORT)" it_alive "$PG_PID"
CLI=$BUILD/parley
SRC=$IT_TMP/data/source.db
SECRET="it-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
STATE=$IT_TMP/populated.json

# app_config NAME jwt|open [NODE_PREFIX] — the PARLEY_CONFIG file
# $IT_TMP/NAME.env, as IT_APP_CONFIG: JWT mode (SECRET, default rate limit,
# the Origin allow-list phoenix-lp's OPTIONS test uses) or open mode (no
# rate limit, as t0200); PARLEY_PHOENIX_WINDOW=2 (empty polls answer soon).
app_config() {
    _f=$IT_TMP/$1.env
    {
        if [ "$2" = jwt ]; then
            echo "PARLEY_JWT_SECRET=$SECRET"
            echo "PARLEY_COALESCE_MS=5"
            echo "PARLEY_ALLOWED_ORIGINS=https://app.example"
        else
            echo "RATE_LIMIT_MESSAGES_PER_MINUTE=0"
            echo "PARLEY_COALESCE_MS=0"
        fi
        echo "PARLEY_PHOENIX_WINDOW=2"
        [ -n "${3:-}" ] && echo "PARLEY_NODE_PREFIX=$3"
    } >"$_f"
    chmod 640 "$_f"
    it_own "$_f"
    IT_APP_CONFIG=$_f
    export IT_APP_CONFIG
}

# js_tap PREFIX SCRIPT — runs the Node program SCRIPT (ES module, from the
# repository root, so `ws` and `phoenix` resolve) with BASE, SECRET, STATE,
# FAKE_LLM_URL; each "ok - NAME" / "not ok - NAME" line it prints becomes
# one of our results, its "# ..." lines diagnostics.
js_tap() {
    _pre=$1
    _out=$IT_TMP/js.$TAP_N.out
    BASE=$BASE SECRET=$SECRET STATE=$STATE timeout 120 node --input-type=module -e "$JS_COMMON
$2" >"$_out" 2>&1 && _rc=0 || _rc=$?
    _n=0
    while IFS= read -r _line; do
        case $_line in
        "ok - "*) _n=$((_n + 1)); TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $_pre${_line#ok - }" ;;
        "not ok - "*) _n=$((_n + 1)); TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
            echo "not ok $TAP_N - $_pre${_line#not ok - }" ;;
        "#"*) echo "$_line" ;;
        esac
    done <"$_out"
    if [ "$_rc" -ne 0 ] || [ "$_n" -eq 0 ]; then
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - ${_pre}the checks ended with exit $_rc after $_n results"
        grep -v '^\(ok\|not ok\|#\) ' "$_out" | tail -n 15 | sed 's/^/#   /'
        for _f in "$SETUP_DIR"/logs/error.log "$SETUP_DIR"/logs/app.log "${BRIDGE_DIR:-}"/parley-ws.log; do
            [ -s "$_f" ] && tail -n 5 "$_f" | sed "s|^|#   $(basename "$_f"): |"
        done
    fi
    return 0
}

# Helpers of both Node programs: JWTs, the API, a long-poll ticket, a
# Phoenix LongPoll socket, check() printing one result line.
JS_COMMON=$(cat <<'EOF_JS'
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import WebSocket from 'ws';
import { Socket, LongPoll } from 'phoenix';
const BASE = process.env.BASE, SECRET = process.env.SECRET, FAKE = process.env.FAKE_LLM_URL;
const WSB = BASE.replace(/^http/, 'ws');
const jwt = (sub) => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
};
async function api(method, path, sub, body) {
  const headers = sub ? { Authorization: `Bearer ${jwt(sub)}` } : {};
  let payload;
  if (body !== undefined) { payload = typeof body === 'string' ? body : JSON.stringify(body); headers['Content-Type'] = 'application/json'; }
  const r = await fetch(BASE + path, { method, headers, body: payload, signal: AbortSignal.timeout(20000) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}
const fakeStats = async () => (await fetch(`${FAKE}/_fake/stats`)).json();
// polls session sid from cursor until done/error (30 s at most)
async function pollDone(sid, sub, cursor = 0) {
  const frames = [];
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    const r = await api('GET', `/api/poll/${sid}?cursor=${cursor}&wait=5`, sub);
    if (r.status !== 200) throw new Error(`poll ${sid}: ${r.status} ${r.text}`);
    frames.push(...r.json.messages);
    cursor = r.json.cursor;
    if (frames.some((f) => f.type === 'done' || f.type === 'error')) break;
  }
  return { frames, cursor };
}
async function lpOpen(path, sub) {
  const r = await api('POST', '/api/poll/open', sub, { path });
  if (r.status !== 200) throw new Error(`poll open: ${r.status} ${r.text}`);
  return r.json.sid;
}
// a seed 000 ticket over long-poll: open, post the body, poll to the end
async function lpTicket(ticket, ticketBody, sub) {
  const sid = await lpOpen(`/api/websocket/chat/${ticket}`, sub);
  const p = await api('POST', `/api/poll/${sid}`, sub, JSON.stringify({ ticketBody }));
  if (p.status !== 202) throw new Error(`poll post: ${p.status} ${p.text}`);
  const { frames, cursor } = await pollDone(sid, sub);
  const text = frames.filter((f) => f.type === 'stream').map((f) => f.content).join('');
  return { sid, cursor, frames, types: frames.map((f) => f.type), text };
}
// a Phoenix socket of user sub on LongPoll (the seed's connect params)
function phx(sub) {
  const s = new Socket(`${WSB}/socket`, { transport: LongPoll, timeout: 15000,
    params: { user_id: sub, auth_token: jwt(sub) } });
  s.connect();
  return s;
}
const join = (ch) => new Promise((res, rej) => ch.join().receive('ok', res).receive('error', (e) => rej(new Error(JSON.stringify(e))))
  .receive('timeout', () => rej(new Error('join timeout'))));
function next(ch, ev, ms = 20000) {
  return new Promise((res, rej) => {
    const t = setTimeout(() => { ch.off(ev, ref); rej(new Error(`no ${ev}`)); }, ms);
    const ref = ch.on(ev, (p) => { clearTimeout(t); ch.off(ev, ref); res(p); });
  });
}
function streamOf(ch, ms = 20000) {
  return new Promise((res, rej) => {
    let text = '';
    const t = setTimeout(() => rej(new Error('stream did not complete')), ms);
    ch.on('stream_token', (p) => { text += p.token; });
    ch.on('stream_complete', () => { clearTimeout(t); res(text); });
    ch.on('stream_error', (p) => { clearTimeout(t); rej(new Error(`stream_error ${p.error}`)); });
  });
}
// a WebSocket client: resolves once open; msgs collects frames; until(pred)
function wsOpen(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const msgs = [];
    ws.on('message', (d) => msgs.push(JSON.parse(d.toString())));
    ws.on('unexpected-response', (_q, r) => reject(new Error(`HTTP ${r.statusCode}`)));
    ws.on('error', reject);
    ws.on('open', () => resolve({ ws, msgs, async until(pred, ms = 20000) {
      const t0 = Date.now();
      while (!pred(msgs)) {
        if (Date.now() - t0 > ms) throw new Error(`timeout; got ${JSON.stringify(msgs).slice(0, 500)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return msgs;
    } }));
  });
}
let failed = 0;
async function check(name, fn) {
  try { await fn(); console.log(`ok - ${name}`); } catch (e) {
    failed++;
    console.log(`not ok - ${name}`);
    for (const l of String(e && e.stack || e).split('\n').slice(0, 6)) console.log(`#   ${l}`);
  }
}
function eq(got, want, what) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g.slice(0, 400)}, expected ${w.slice(0, 400)}`);
}
function must(cond, what) { if (!cond) throw new Error(what); }
EOF_JS
)

# keep_logs TAG — after a setup and its bridge stopped: their logs moved
# aside (TAG in the name, still *.log / *.out), so that the next setup in
# the same directory does not overwrite what the sanitizer check reads.
keep_logs() {
    if [ -d "$SETUP_DIR/logs" ]; then mv "$SETUP_DIR/logs" "$SETUP_DIR/logs-$1"; fi
    if [ -f "$BRIDGE_DIR/parley-ws.log" ]; then mv "$BRIDGE_DIR/parley-ws.log" "$BRIDGE_DIR/parley-ws-$1.log"; fi
    return 0
}

# --- 1. a SQLite database filled the way a user fills it -------------------
cat >"$IT_TMP/printers.md" <<'EOF'
# Fuser error E52

Error E52 means the fuser unit overheated: switch the printer off for
ten minutes, then clear the paper path.
EOF
cat >"$IT_TMP/routers.md" <<'EOF'
# Router code R7

Code R7 on the router means the uplink lost its sync: hold the reset
button for thirty seconds, then wait for the green light.
EOF
kb_import() {
    # seed 002's demo brands first, as `make run` imports them (no migration does)
    PARLEY_DB=$SRC "$CLI" brands import share/sample-catalog.json >"$IT_TMP/brands-import.out" 2>&1 ||
        { cat "$IT_TMP/brands-import.out"; return 1; }
    PARLEY_DB=$SRC "$CLI" kb import "$IT_TMP/printers.md" "$IT_TMP/routers.md" >"$IT_TMP/kb-import.out" 2>&1 ||
        { cat "$IT_TMP/kb-import.out"; return 1; }
    # the admin's brand edits (SQL: the CLI has no brand delete; foreign
    # keys on, so homestyle's products go with it)
    sqlite3 "$SRC" "PRAGMA foreign_keys = ON;
                    INSERT INTO brands(id, name, welcome, system_prompt, active, created_at)
                        VALUES ('acme', 'Acme Help Desk', 'Welcome to Acme!', 'You help Acme customers.', 1, 1);
                    DELETE FROM brands WHERE id = 'homestyle';" || return 1
    it_own "$IT_TMP/data"
    PARLEY_DB=$SRC "$CLI" kb list
}
ok "SQLite: parley kb import of two articles (and the brands edited)" kb_import

IT_DB=$SRC
app_config sqlite jwt
start_bridge || it_die "parley-ws (SQLite) did not start"
SQ_BRIDGE_PID=$BRIDGE_PID
WS_PORT=$BRIDGE_PORT
start_lighttpd "$BUILD/parley.fcgi"
it_log "SQLite setup (lighttpd): $BASE, bridge $BRIDGE_PORT, at $(since)"

js_tap "SQLite: " "$(cat <<'EOF_JS'
const st = {};
await check('seed 000 ticket answered over long-poll, then cached', async () => {
  st.ticket = `seedcopy-${randomUUID().slice(0, 8)}`;
  st.ticketBody = `The printer in room 4 jams every morning ${st.ticket} [[fake tokens=12 token_ms=5]]`;
  const a = await lpTicket(st.ticket, st.ticketBody, 'carol');
  eq(a.types.at(-1), 'done', 'last frame');
  must(a.text.length > 0, 'no text');
  st.ticketText = a.text;
  const b = await lpTicket(st.ticket, st.ticketBody, 'carol');
  eq(b.types, ['cached', 'done'], 'second open');
  eq(b.frames[0].response, a.text, 'cached text');
});
await check('seed 001 conversation: two messages over /ws/<id>?token=', async () => {
  st.conv = `conv-${randomUUID().slice(0, 8)}`;
  const c = await wsOpen(`${WSB}/ws/${st.conv}?token=${jwt('carol')}`);
  await c.until((m) => m.some((x) => x.type === 'connected'));
  for (const [i, q] of ['How do I export the monthly report?', 'And as CSV?'].entries()) {
    c.ws.send(JSON.stringify({ type: 'message', content: `${q} [[fake tokens=6 token_ms=5]]`, metadata: {} }));
    await c.until((m) => m.filter((x) => x.type === 'stream_end').length === i + 1);
  }
  c.ws.close();
  const r = await api('GET', `/api/chat/sessions/${st.conv}/messages`, 'carol');
  eq(r.status, 200, `messages ${r.text}`);
  st.convMessages = r.json.messages.map((m) => ({ role: m.role, content: m.content }));
  eq(st.convMessages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant'], 'roles');
});
await check('seed 002 brand chat with the admin\'s brand acme', async () => {
  const c = await wsOpen(`${WSB}/ws/chat/acme?token=${jwt('carol')}`);
  await c.until((m) => m.some((x) => x.type === 'welcome'));
  eq(c.msgs[0].data.brand_name, 'Acme Help Desk', 'welcome');
  c.ws.send(JSON.stringify({ type: 'chat', data: { message: 'Do you repair printers? [[fake tokens=5 token_ms=5]]', conversation_id: null } }));
  await c.until((m) => m.some((x) => x.type === 'complete' || x.type === 'error'));
  const done = c.msgs.find((x) => x.type === 'complete');
  must(done, `no complete: ${JSON.stringify(c.msgs.at(-1))}`);
  st.brandConv = done.data.conversation_id;
  must(st.brandConv, 'no conversation id');
  c.ws.close();
  const b = await api('GET', '/brands/active');
  eq(b.status, 200, 'brands');
  st.brands = b.json;
  must(b.json.some((x) => x.brand_id === 'acme') && !b.json.some((x) => x.brand_id === 'homestyle'), `brands ${b.text}`);
});
await check('seed 003 Phoenix session (LongPoll): query, stream_query, get_history', async () => {
  const s = phx('carol');
  try {
    st.phxTopic = `proxy:seedcopy-${randomUUID().slice(0, 8)}`;
    const ch = s.channel(st.phxTopic, { user_id: 'carol' });
    await join(ch);
    const got = next(ch, 'response');
    ch.push('query', { query: `What is a fuser? ${st.phxTopic} [[fake tokens=5 token_ms=5]]` });
    must((await got).response.length > 0, 'empty response');
    const str = streamOf(ch);
    ch.push('stream_query', { query: `And a drum unit? ${st.phxTopic} [[fake tokens=5 token_ms=5]]` });
    await str;
    const h = next(ch, 'history');
    ch.push('get_history');
    st.phxHistory = (await h).messages.map((m) => ({ role: m.role, content: m.content }));
    eq(st.phxHistory.length, 4, 'history length');
  } finally { s.disconnect(); }
});
await check('a long-poll session left open (one ticket answered on it)', async () => {
  st.lpTicket = `seedopen-${randomUUID().slice(0, 8)}`;
  const a = await lpTicket(st.lpTicket, `Scanner offline ${st.lpTicket} [[fake tokens=4 token_ms=5]]`, 'carol');
  eq(a.types.at(-1), 'done', 'last frame');
  st.lpSid = a.sid;
  st.lpCursor = a.cursor;
});
writeFileSync(process.env.STATE, JSON.stringify(st));
process.exit(0);
EOF_JS
)"
stop_setup
it_stop "$SQ_BRIDGE_PID"
keep_logs sqlite
[ -s "$STATE" ] || it_die "the SQLite phase left no state"

# --- 2. parley db copy --------------------------------------------------------
COPY_OUT=$IT_TMP/copy.out
db_copy() {
    "$CLI" db copy --from "$SRC" --to "$PG_URL" >"$COPY_OUT" 2>&1 || { cat "$COPY_OUT"; return 1; }
    cat "$COPY_OUT"
    # counts printed: the store's and the KB's tables among them, not zero
    for _t in answers conversations messages poll_sessions kb_passages brands; do
        grep -q "$_t" "$COPY_OUT" || { echo "no count for $_t"; return 1; }
    done
}
ok "parley db copy --from <SQLite file> --to \$PG_URL: exit 0, counts printed" db_copy
ok "the copy's row counts match the source's (answers, messages, kb_passages, brands)" sh -c '
    for t in answers messages kb_passages brands poll_sessions; do
        s=$(sqlite3 "$1" "SELECT count(*) FROM $t")
        p=$(PGCONNECT_TIMEOUT=5 "$2/psql" -X -q -A -t -d "$3" -c "SELECT count(*) FROM $t") || exit 1
        echo "$t sqlite $s postgresql $p"
        [ "$s" = "$p" ] && [ "$s" -gt 0 ] || exit 1
    done' sh "$SRC" "$PG_BIN" "$PG_URL"

# --- 3. the seed suites on PostgreSQL ------------------------------------------
# The six setups (three servers, JWT and open mode) run at once
# (lib-par.sh), T0795_WAVES at a time ("all": together; "jwt open", the
# default: the three JWT setups, then the three open ones), each with
# its own setup and bridge directories, node prefix and simulated LLM (the
# suites count its upstream calls and read its last request). Each server
# has its own copy of the source database (the same `parley db copy`,
# into parley_<server>): the suites' user alice is rate limited per
# database, and the servers' runs fall within one minute. The copied data
# is checked on proxy_fcgi's copy, the one whose counts were compared.
db_url() { echo "${PG_URL%/*}/parley_$1"; }
copy_to() {
    _o=$(it_pg_sql "CREATE DATABASE parley_$1" -d postgres 2>&1) || { echo "CREATE DATABASE: $_o"; return 1; }
    "$CLI" db copy --from "$SRC" --to "$(db_url "$1")" >"$IT_TMP/copy-$1.out" 2>&1 ||
        { cat "$IT_TMP/copy-$1.out"; return 1; }
}
for setup in lighttpd fcgid; do
    ok "parley db copy of the same file into a database for $setup (parley_$setup)" copy_to "$setup"
done
url_of() { if [ "$1" = proxy_fcgi ]; then echo "$PG_URL"; else db_url "$1"; fi; }
# clear_rate_hits SETUP — the rate-limit hits of SETUP's database deleted
clear_rate_hits() { it_pg_sql "DELETE FROM rate_hits" -d "$(url_of "$1")" >/dev/null; }
# own_fake_llm — a simulated LLM of the setup's own (FAKE_LLM_URL)
own_fake_llm() {
    rm -f "$IT_TMP/fake-llm.port"
    FAKE_LLM_URL=""
    it_fake_llm
}

# setup_up SETUP MODE — a node prefix of its own, the app config, its
# simulated LLM, the bridge and the web server on SETUP's database; what
# stops them is added to STOPS
STOPS=""
setup_up() {
    IT_NODE=$1-$2
    IT_DB=$(url_of "$1")
    own_fake_llm
    export FAKE_LLM_URL
    mkdir -p "$IT_TMP/node-$IT_NODE"
    it_own "$IT_TMP/node-$IT_NODE"
    app_config "$IT_NODE" "$2" "$IT_TMP/node-$IT_NODE/parley"
    start_bridge || it_die "$1 ($2): parley-ws on PostgreSQL did not start"
    PARLEY_NODE_PREFIX=$IT_TMP/node-$IT_NODE/parley    # @PARLEY_NODE_PREFIX@ (not exported)
    WS_PORT=$BRIDGE_PORT
    "start_$1" "$BUILD/parley.fcgi"
    it_log "$1 on PostgreSQL ($2): $BASE, bridge $BRIDGE_PORT, simulated LLM $FAKE_LLM_URL, at $(since)"
    STOPS="$STOPS $SETUP_DIR|$(echo $SETUP_PIDS | tr ' ' ,)|$BRIDGE_PID"
    IT_NODE=""
}

# ws_clients PREFIX — tests/node/ws-bridge.test.mjs in external mode through
# $BASE (the t0200 pattern): each leaf result (the tests inside its
# describe blocks; the blocks that need a bridge of their own are skipped
# as a whole) becomes one of ours.
ws_clients() {
    _out=$IT_TMP/ws-bridge.$TAP_N.tap
    WS_BRIDGE_URL="ws://127.0.0.1:${BASE##*:}" WS_POLL_URL="$BASE" timeout 300 \
        node --test --test-reporter=tap tests/node/ws-bridge.test.mjs >"$_out" 2>&1 && _rc=0 || _rc=$?
    _n=0
    while IFS= read -r _line; do
        case $_line in
        "    ok "*|"    not ok "*)
            _n=$((_n + 1)); TAP_N=$((TAP_N + 1))
            _t=$(printf '%s' "$_line" | sed -E 's/^ *(not )?ok [0-9]+ - //')
            case $_line in
            "    not ok "*) TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $1$_t" ;;
            *) echo "ok $TAP_N - $1$_t" ;;
            esac ;;
        esac
    done <"$_out"
    if [ "$_n" -lt 5 ] || [ "$_rc" -ne 0 ]; then
        TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1))
        echo "not ok $TAP_N - ${1}ws-bridge.test.mjs: $_n results, exit $_rc"
        grep -E '^ *(not ok|#|  ---|    (error|expected|actual|message))' "$_out" | head -n 60 | sed 's/^/#   /'
        tail -n 20 "$BRIDGE_DIR/parley-ws.log" | sed 's/^/#   parley-ws: /'
    fi
}

# lp_requests: long-poll requests the bridge answered (its /metrics)
lp_requests() {
    curl -s "http://127.0.0.1:$BRIDGE_PORT/metrics" |
        awk '/^parley_ws_longpoll_requests_total/ { n += $2 } END { print n + 0 }'
}

# jwt_suites SETUP — JWT mode: the copied data (proxy_fcgi), api-suite,
# phoenix-lp, phoenix-ws (Apache + mod_proxy_fcgi); with mod_fcgid, the
# long-polls its bridge answered
jwt_suites() {
    setup=$1
    ok "$setup: /api/health says the database is ok" sh -c "curl -sf -m 10 '$BASE/api/health' | grep -q '\"database\":\"ok\"'"
    [ "$setup" = proxy_fcgi ] && js_tap "$setup, copied data: " "$COPIED_JS"
    clear_rate_hits "$setup"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_SETUP="$setup on PostgreSQL" \
        it_node_tap "$setup: " tests/integration/api-suite.mjs
    clear_rate_hits "$setup"
    PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PARLEY_FAKE_URL=$FAKE_LLM_URL \
        it_node_tap "$setup, phoenix-lp: " tests/integration/phoenix-lp.mjs
    if [ "$setup" = proxy_fcgi ]; then
        clear_rate_hits "$setup"
        PARLEY_BASE=$BASE PARLEY_JWT_SECRET=$SECRET PHX_PART=ws PARLEY_DB=$(url_of "$setup") PSQL=$PG_BIN/psql \
            it_node_tap "$setup, phoenix-ws JWT: " tests/integration/phoenix-ws.mjs
    fi
    if [ "$setup" = fcgid ]; then
        n=$(lp_requests)
        TAP_N=$((TAP_N + 1))
        if [ "${n:-0}" -ge 20 ]; then
            echo "ok $TAP_N - fcgid: the bridge answered the long-poll requests (@PARLEY_NODE_PREFIX@-ws.up found: $n)"
        else
            echo "not ok $TAP_N - fcgid: the bridge answered ${n:-0} long-poll requests (@PARLEY_NODE_PREFIX@-ws.up not found?)"
            TAP_FAILED=$((TAP_FAILED + 1))
        fi
    fi
    return 0
}

# open_suites SETUP — open mode: the seed 000/001/002 clients and Phoenix
# over WebSocket
open_suites() {
    ws_clients "$1, ws-bridge: "
    PARLEY_BASE=$BASE PHX_PART=ws PARLEY_DB=$(url_of "$1") PSQL=$PG_BIN/psql \
        it_node_tap "$1, phoenix-ws: " tests/integration/phoenix-ws.mjs
}

COPIED_JS=$(cat <<'EOF_JS'
const st = JSON.parse(readFileSync(process.env.STATE, 'utf8'));
await check('the ticket answered before the copy comes back cached, same text, no upstream call', async () => {
  const before = (await fakeStats()).total;
  const a = await lpTicket(st.ticket, st.ticketBody, 'carol');
  eq(a.types, ['cached', 'done'], 'frames');
  eq(a.frames[0].response, st.ticketText, 'cached text');
  const info = await api('GET', `/api/tickets/${st.ticket}/ai`, 'carol');
  eq([info.json.status, info.json.response], ['cached', st.ticketText], 'GET /api/tickets/<id>/ai');
  eq((await fakeStats()).total - before, 0, 'upstream calls');
});
await check('the seed 001 conversation\'s messages (GET /api/chat/sessions/<id>/messages)', async () => {
  const r = await api('GET', `/api/chat/sessions/${st.conv}/messages`, 'carol');
  eq(r.status, 200, r.text);
  eq(r.json.messages.map((m) => ({ role: m.role, content: m.content })), st.convMessages, 'messages');
  const other = await api('GET', `/api/chat/sessions/${st.conv}/messages`, 'alice');
  eq(other.status, 404, 'another user');
});
await check('the seed 001 conversation goes on over /ws/<id> (6 messages then)', async () => {
  const c = await wsOpen(`${WSB}/ws/${st.conv}?token=${jwt('carol')}`);
  await c.until((m) => m.some((x) => x.type === 'connected'));
  c.ws.send(JSON.stringify({ type: 'message', content: 'And as PDF? [[fake tokens=4 token_ms=5]]', metadata: {} }));
  await c.until((m) => m.some((x) => x.type === 'stream_end' || x.type === 'error'));
  must(!c.msgs.some((x) => x.type === 'error'), JSON.stringify(c.msgs.find((x) => x.type === 'error')));
  c.ws.close();
  const r = await api('GET', `/api/chat/sessions/${st.conv}/messages`, 'carol');
  eq(r.json.messages.slice(0, 4).map((m) => ({ role: m.role, content: m.content })), st.convMessages, 'first four');
  eq(r.json.total, 6, 'total');
});
await check('the Phoenix session\'s get_history returns the messages of before the copy; the session goes on; bob is refused', async () => {
  const s = phx('carol');
  try {
    const ch = s.channel(st.phxTopic, { user_id: 'carol' });
    await join(ch);
    const h = next(ch, 'history');
    ch.push('get_history');
    eq((await h).messages.map((m) => ({ role: m.role, content: m.content })), st.phxHistory, 'history');
    const got = next(ch, 'response');
    ch.push('query', { query: `And the toner? ${st.phxTopic} [[fake tokens=4 token_ms=5]]` });
    eq((await got).metadata.source, 'llm', 'a new query on the copied session');
    const h2 = next(ch, 'history');
    ch.push('get_history');
    const all = (await h2).messages.map((m) => ({ role: m.role, content: m.content }));
    eq(all.length, 6, 'history length after one more query');
    eq(all.slice(0, 4), st.phxHistory, 'the copied history first');
    const bob = phx('bob');
    try {
      await join(bob.channel(st.phxTopic, {})).then(() => { throw new Error('bob joined carol\'s session'); },
        (e) => must(/unauthorized/.test(e.message), e.message));
    } finally { bob.disconnect(); }
  } finally { s.disconnect(); }
});
await check('a query grounded in the copied passages: rag_context_used 1, the passage upstream', async () => {
  const s = phx('carol');
  try {
    const ch = s.channel(`proxy:kb-${randomUUID().slice(0, 8)}`, {});
    await join(ch);
    const got = next(ch, 'response');
    ch.push('query', { query: `My router shows code R7 ${randomUUID()} [[fake tokens=4 token_ms=5]]` });
    const r = await got;
    eq([r.metadata.source, r.metadata.rag_context_used], ['llm', 1], 'metadata');
    const body = (await fakeStats()).last_body || {};
    const system = body.system || (body.messages || []).filter((m) => m.role === 'system').map((m) => m.content).join('\n');
    must(system.includes('Code R7 on the router means the uplink lost its sync'), `system: ${system.slice(0, 300)}`);
  } finally { s.disconnect(); }
});
await check('the brand list is the source\'s (acme added, homestyle removed)', async () => {
  const b = await api('GET', '/brands/active');
  eq(b.status, 200, b.text);
  eq(b.json, st.brands, 'brands');
});
await check('the seed 002 brand conversation goes on (same conversation_id)', async () => {
  const c = await wsOpen(`${WSB}/ws/chat/acme?token=${jwt('carol')}`);
  await c.until((m) => m.some((x) => x.type === 'welcome'));
  c.ws.send(JSON.stringify({ type: 'chat', data: { message: 'And scanners? [[fake tokens=4 token_ms=5]]', conversation_id: st.brandConv } }));
  await c.until((m) => m.some((x) => x.type === 'complete' || x.type === 'error'));
  const done = c.msgs.find((x) => x.type === 'complete');
  must(done, JSON.stringify(c.msgs.at(-1)));
  eq(done.data.conversation_id, st.brandConv, 'conversation_id');
  c.ws.close();
});
await check('the long-poll session left open goes on: its cursor, then a new ticket on it', async () => {
  const r = await api('GET', `/api/poll/${st.lpSid}?cursor=${st.lpCursor}&wait=0`, 'carol');
  eq(r.status, 200, r.text);
  eq(r.json.messages.length, 0, 'nothing after the cursor');
  const t = `after-copy-${randomUUID().slice(0, 8)}`;
  const p = await api('POST', `/api/poll/${st.lpSid}`, 'carol', JSON.stringify({ ticketBody: `Scanner offline again ${t} [[fake tokens=3 token_ms=5]]` }));
  eq(p.status, 202, p.text);
  const { frames } = await pollDone(st.lpSid, 'carol', st.lpCursor);
  eq(frames.at(-1).type, 'done', 'last frame');
});
process.exit(0);
EOF_JS
)
. tests/integration/lib-par.sh
for wave in ${T0795_WAVES:-jwt open}; do
    [ "$wave" = all ] && wave="jwt open"
    for mode in $wave; do
        for setup in proxy_fcgi lighttpd fcgid; do
            setup_up "$setup" "$mode"
            it_par "$setup-$mode" "${mode}_suites" "$setup"
        done
    done
    it_par_wait
    for _s in $STOPS; do
        SETUP_DIR=${_s%%|*} _r=${_s#*|}
        SETUP_PIDS=$(echo "${_r%|*}" | tr , ' ')
        stop_setup
        it_stop "${_r##*|}"
    done
    STOPS=""
done

it_log "suites done at $(since)"
ok "the PostgreSQL server logged no ERROR, FATAL or PANIC" sh -c "! grep -E 'ERROR|FATAL|PANIC' '$PG_LOG'"
hits=$(grep -rlE --include='*.log' --include='*.out' 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$IT_TMP" 2>/dev/null) || true
TAP_N=$((TAP_N + 1))
if [ -n "$hits" ]; then
    echo "not ok $TAP_N - sanitizer reports in: $hits"
    for f in $hits; do grep -m 3 -A 12 -E 'Sanitizer|runtime error:' "$f" | sed 's/^/# /'; done
    TAP_FAILED=$((TAP_FAILED + 1))
else
    echo "ok $TAP_N - no sanitizer report in any server, app, bridge or client log"
fi
it_done
