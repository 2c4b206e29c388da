// gw-latency.mjs — the latency a gateway adds to the first token (issue 14,
// target 4): new generations started open-loop at a fixed rate by clients
// that are already connected, through Parley over one transport, and in the
// SAME run, interleaved at the same rate, straight from the simulated LLM's
// OpenAI streaming endpoint (the baseline). bench/gw-latency.sh starts the
// servers and runs this once per transport and rate.
//
//   node bench/gw-latency.mjs --base http://127.0.0.1:PORT --fake http://127.0.0.1:FPORT
//        --timing-log FILE --transport ws|phx-ws|sse|lp|phx-lp --rate R --seconds S
//        [--first-ms 50] [--tokens 3] [--token-ms 5] [--lead-ms 500] [--warmup 20]
//        [--timeout-s 15] [--label TEXT] [--json]
//
// Transports (the client opens its connection --lead-ms before the question):
//   ws      seed 000 over WebSocket: ws://BASE/api/websocket/chat/{ticket},
//           then {"ticketBody": Q}; first token = the first "stream" frame
//   phx-ws  seed 003 over Phoenix WebSocket (phoenix npm client, ws):
//           BASE/socket, join proxy:{session}, push stream_query {query: Q};
//           first token = the first stream_token
//   sse     seed 004: POST /api/chat/sessions {kind: "sse"} ahead, then
//           POST /api/chat/send {conversationId, content: Q}, a
//           text/event-stream; first token = the first data: with content
//   lp      Parley's long-poll (www/parley.js's protocol, seed 000): POST
//           /api/poll/open ahead and a GET waiting, then POST /api/poll/{sid}
//           {"ticketBody": Q}; first token = the first "stream" frame a GET
//           brings
//   phx-lp  seed 003 over Phoenix LongPoll (phoenix npm client), as phx-ws
//           (both: a pool of sockets connected before the run, a topic
//           joined per generation; see phoenixTransport)
// Baseline (every transport's run): POST FAKE/v1/chat/completions
// {stream: true} with the same question shape and directives, over a kept
// connection (fetch); first token = the first chunk with delta.content.
//
// Every question is new ("gwl-<run>-..." plus a counter: no cache hit) and
// carries the same directives [[fake tokens=T token_ms=M first_ms=F]].
//
// Clock: process.hrtime.bigint() (CLOCK_MONOTONIC) here and in the
// simulated LLM (its --timing-log), so for each generation
//   ttft      = client has the first token − client sent the question
//   upstream  = LLM wrote its first token − LLM got the request (≈ first_ms:
//               the upstream's own time, the same on both paths)
//   overhead  = ttft − upstream: everything on the way there and back
//   to_llm    = LLM got the request − client sent (the request's path)
//   from_llm  = client has the first token − LLM wrote it (the token's path)
// The added latency is Parley's overhead minus the baseline's, compared
// percentile by percentile (p50 − p50, p99 − p99): the two are different
// generations, so no per-request difference exists.
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync, existsSync } from 'node:fs';
import WebSocket from 'ws';
import { Socket, LongPoll } from 'phoenix';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const BASE = opt('base', '');
const FAKE = opt('fake', '');
const TIMING_LOG = opt('timing-log', '');
const TRANSPORT = opt('transport', 'ws');
const RATE = Number(opt('rate', 1));
const SECONDS = Number(opt('seconds', 20));
const FIRST_MS = Number(opt('first-ms', 50));
const TOKENS = Number(opt('tokens', 3));
const TOKEN_MS = Number(opt('token-ms', 5));
const LEAD_MS = Number(opt('lead-ms', 500));
const WARMUP = Number(opt('warmup', 20));
const TIMEOUT_S = Number(opt('timeout-s', 15));
const LABEL = opt('label', TRANSPORT);
const SECRET = opt('secret', '');
const JSON_OUT = args.includes('--json');
// --no-upstream: BASE answers by itself with timers (bench/longpoll-floor.mjs,
// the long-poll floor): no LLM request to match; its "upstream" time is
// taken as first_ms, its timer's own lateness staying in the overhead.
const NO_UPSTREAM = args.includes('--no-upstream');
const TRANSPORTS = ['ws', 'phx-ws', 'sse', 'lp', 'phx-lp'];
if (!BASE || !FAKE || !TIMING_LOG || !TRANSPORTS.includes(TRANSPORT) || !(RATE > 0)) {
  console.error(`usage: gw-latency.mjs --base URL --fake URL --timing-log FILE --transport ${TRANSPORTS.join('|')} --rate R --seconds S`);
  process.exit(2);
}
const WS_BASE = BASE.replace(/^http/, 'ws');
const RUN = randomUUID().slice(0, 8);
const DIRECTIVES = `[[fake tokens=${TOKENS} token_ms=${TOKEN_MS} first_ms=${FIRST_MS}]]`;
const hr = () => process.hrtime.bigint();
const ms = (ns) => Number(ns) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));

const b64u = (b) => Buffer.from(b).toString('base64url');
function jwt(sub) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const authHeaders = (extra = {}) => (SECRET ? { Authorization: `Bearer ${jwt('gwl')}`, ...extra } : extra);

// One generation. kind: 'parley' or 'direct'.
class Gen {
  constructor(kind, i, warm) {
    this.kind = kind;
    this.i = i;
    this.warm = warm;
    this.tag = `gwl-${RUN}-${kind === 'direct' ? 'd' : TRANSPORT}-${warm ? 'w' : ''}${i}`;
    this.question = `${this.tag} Why does my printer print blank pages, case ${i}? ${DIRECTIVES}`;
    this.sentNs = 0n;
    this.firstNs = 0n;
    this.done = false;
    this.error = '';
    this.text = '';
    this.ended = new Promise((res) => { this.end = res; });
    this.cleanup = () => {};
  }

  fail(why) {
    if (this.done || this.error) return;
    this.error = why;
    this.end();
  }

  token(s) {
    if (!this.firstNs) this.firstNs = hr();
    this.text += s;
  }

  finish() {
    if (this.done || this.error) return;
    if (!this.firstNs) { this.fail('done without a token'); return; }
    this.done = true;
    this.end();
  }

  sent() { this.sentNs = hr(); }
}

// ---------------------------------------------------------------- baseline

async function readSSE(res, onData) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      for (const line of ev.split('\n')) {
        if (line.startsWith('data:')) {
          if (onData(line.slice(5).trim()) === false) { reader.cancel().catch(() => {}); return; }
        }
      }
    }
  }
}

const direct = {
  async prepare() {},
  async ask(g) {
    g.sent();
    const res = await fetch(`${FAKE}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: g.question }] }),
    });
    if (res.status !== 200) { g.fail(`direct: HTTP ${res.status}`); await res.text().catch(() => {}); return; }
    await readSSE(res, (d) => {
      if (d === '[DONE]') { g.finish(); return false; }
      const j = JSON.parse(d);
      const c = j.choices?.[0]?.delta?.content;
      if (typeof c === 'string' && c !== '') g.token(c);
      return true;
    });
    if (!g.done) g.fail('direct: stream ended without [DONE]');
  },
};

// ---------------------------------------------------------------- Parley

const parley = {
  // seed 000 over WebSocket
  ws: {
    async prepare(g) {
      const ws = new WebSocket(`${WS_BASE}/api/websocket/chat/${g.tag}${SECRET ? `?token=${jwt('gwl')}` : ''}`);
      g.cleanup = () => ws.terminate();
      ws.on('message', (raw) => {
        let m;
        try { m = JSON.parse(raw.toString()); } catch { g.fail('bad frame'); return; }
        if (m.type === 'stream') g.token(m.content);
        else if (m.type === 'done') g.finish();
        else if (m.type === 'error') g.fail(`error frame: ${m.code} ${m.message}`);
        else g.fail(`unexpected frame ${m.type}`);
      });
      ws.on('close', (code) => g.fail(`closed ${code}`));
      ws.on('error', (e) => g.fail(`websocket: ${e.message}`));
      ws.on('unexpected-response', (req, res) => g.fail(`HTTP ${res.statusCode} instead of an upgrade`));
      await new Promise((res) => { ws.once('open', res); g.ended.then(res); });
      g.ask = () => { g.sent(); ws.send(JSON.stringify({ ticketBody: g.question })); };
    },
  },

  // seed 004: Server-Sent Events
  sse: {
    async prepare(g) {
      const r = await fetch(`${BASE}/api/chat/sessions`, {
        method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ kind: 'sse', title: g.tag }),
      });
      const j = await r.json().catch(() => null);
      if (r.status !== 201 || !j?.id) { g.fail(`create session: HTTP ${r.status}`); return; }
      g.ask = async () => {
        g.sent();
        const res = await fetch(`${BASE}/api/chat/send`, {
          method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json' }),
          body: JSON.stringify({ conversationId: j.id, content: g.question }),
        });
        if (res.status !== 200) { g.fail(`send: HTTP ${res.status} ${(await res.text()).slice(0, 100)}`); return; }
        await readSSE(res, (d) => {
          const e = JSON.parse(d);
          if (e.done) { g.finish(); return false; }
          if (typeof e.content === 'string') g.token(e.content);
          else if (e.error || e.code) { g.fail(`sse error ${d.slice(0, 100)}`); return false; }
          return true;
        });
        if (!g.done) g.fail('sse: stream ended without done');
      };
    },
  },

  // Parley's own long-poll, as www/parley.js does it: open, GET waiting, POST
  lp: {
    async prepare(g) {
      const r = await fetch(`${BASE}/api/poll/open`, {
        method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ path: `/api/websocket/chat/${g.tag}` }),
      });
      const j = await r.json().catch(() => null);
      if (r.status !== 200 || typeof j?.sid !== 'string') { g.fail(`open: HTTP ${r.status}`); return; }
      const sid = j.sid;
      let cursor = j.cursor || 0;
      let stop = false;
      const ac = new AbortController();
      g.cleanup = () => {
        stop = true;
        ac.abort();
        fetch(`${BASE}/api/poll/${sid}`, { method: 'DELETE', headers: authHeaders() })
          .then((x) => x.arrayBuffer()).catch(() => {});
      };
      (async () => {
        while (!stop && !g.done && !g.error) {
          let res, body;
          try {
            res = await fetch(`${BASE}/api/poll/${sid}?cursor=${cursor}&wait=25`, { headers: authHeaders(), signal: ac.signal });
            body = await res.json();
          } catch (e) {
            if (!stop) g.fail(`poll: ${e.message}`);
            return;
          }
          if (res.status !== 200 || !Array.isArray(body.messages)) { g.fail(`poll: HTTP ${res.status}`); return; }
          for (const m of body.messages) {
            if (m.type === 'stream') g.token(m.content);
            else if (m.type === 'done') g.finish();
            else if (m.type === 'error') g.fail(`error frame: ${m.code} ${m.message}`);
          }
          if (body.cursor > cursor) cursor = body.cursor;
          if (body.closed) g.fail('session closed');
        }
      })();
      await sleep(20);   // the first GET is out before the question, as parley.js does
      g.ask = async () => {
        g.sent();
        const res = await fetch(`${BASE}/api/poll/${sid}`, {
          method: 'POST', headers: authHeaders({ 'Content-Type': 'application/json' }),
          body: JSON.stringify({ ticketBody: g.question }),
        }).catch((e) => ({ status: 0, e }));
        if (res.status !== 202 && res.status !== 200) g.fail(`post: ${res.e ? res.e.message : `HTTP ${res.status}`}`);
        else await res.arrayBuffer().catch(() => {});
      };
    },
  },
};

// seed 003 over either Phoenix transport, with the official client. A
// Phoenix client keeps ONE socket and joins a topic per conversation: here
// --phx-sockets sockets (32) connected before the run, each generation a
// new topic proxy:{tag} joined on one of them (round robin) --lead-ms
// before its question and left after its answer. At most
// PARLEY_PHOENIX_MAX_TOPICS (10) topics per socket: a socket with 10
// joined takes the next free one; when all are full, one more socket is
// opened (counted in phoenix_sockets_added).
const PHX_SOCKETS = Number(opt('phx-sockets', 32));
const phxPool = [];
let phxExtra = 0;       // sockets opened during the run (the pool was full)
function phoenixTransport(transport) {
  return {
    // a connected socket (resolves when open)
    open() {
      const params = { user_id: 'gwl' };
      if (SECRET) params.auth_token = jwt('gwl');
      const socket = new Socket(`${WS_BASE}/socket`, {
        transport, params, timeout: TIMEOUT_S * 1000, reconnectAfterMs: () => 60000,
        longpollerTimeout: 30000,
      });
      socket.topics_ = 0;
      socket.connect();
      phxPool.push(socket);
      return new Promise((resolve, reject) => {
        if (socket.isConnected()) return resolve(socket);
        const t = setTimeout(() => reject(new Error('phoenix socket did not open')), 10000);
        socket.onOpen(() => { clearTimeout(t); resolve(socket); });
      });
    },
    async setup() {
      await Promise.all(Array.from({ length: PHX_SOCKETS }, () => this.open()));
    },
    teardown() { for (const s of phxPool) s.disconnect(); },
    async prepare(g) {
      let socket = null;
      for (let k = 0; k < phxPool.length && !socket; k++) {
        const s = phxPool[(g.i + k) % phxPool.length];
        if (s.topics_ < 10) socket = s;
      }
      if (!socket) {
        // every socket has 10 topics (a stall kept them open): one more
        // socket, as a client with more conversations would open
        phxExtra++;
        socket = await this.open();
      }
      socket.topics_++;
      const ch = socket.channel(`proxy:${g.tag}`, { user_id: 'gwl' });
      g.cleanup = () => { ch.leave(); socket.topics_--; };
      ch.on('stream_token', (p) => g.token(p.token));
      ch.on('stream_complete', () => g.finish());
      ch.on('stream_error', (p) => g.fail(`stream_error ${p.code} ${p.error}`));
      await new Promise((resolve) => {
        ch.join().receive('ok', resolve)
          .receive('error', (e) => { g.fail(`join: ${JSON.stringify(e)}`); resolve(); })
          .receive('timeout', () => { g.fail('join timeout'); resolve(); });
      });
      g.ask = () => { g.sent(); ch.push('stream_query', { query: g.question }); };
    },
  };
}
parley['phx-ws'] = phoenixTransport(WebSocket);
parley['phx-lp'] = phoenixTransport(LongPoll);

// ---------------------------------------------------------------- schedule

const tr = parley[TRANSPORT];
const gens = [];

// One generation: prepared LEAD_MS before `at` (ms on performance.now()),
// asked at `at`, ended by done, error or the timeout.
async function runGen(g, at) {
  const timer = setTimeout(() => g.fail(g.sentNs ? 'timeout' : 'not ready in time'), at - performance.now() + TIMEOUT_S * 1000);
  try {
    if (g.kind === 'parley') await tr.prepare(g);
    if (g.error) return;
    const wait = at - performance.now();
    if (wait > 0) await sleep(wait);
    if (g.error) return;
    if (g.kind === 'direct') await direct.ask(g);
    else await g.ask();
  } catch (e) {
    g.fail(`${e.message}${e.cause ? ` (${e.cause.code || e.cause.message})` : ''}`);
  }
  await g.ended;
  clearTimeout(timer);
  g.cleanup();
}

// Fires run(i, at) for i = 0.. at `at` = t0 + i/rate, `lead` ms early.
async function schedule(n, rate, t0, lead, run) {
  const runs = [];
  for (let i = 0; i < n; i++) {
    const at = t0 + (i * 1000) / rate;
    const wait = at - lead - performance.now();
    if (wait > 1) await sleep(wait);
    runs.push(run(i, at));
  }
  await Promise.all(runs);
}

// Warm-up (not counted): the connections to the servers and the upstream
// exist, both paths ran a few times.
async function phase(n, rate, warm) {
  const t0 = performance.now() + LEAD_MS + 50;
  const half = 500 / rate;    // the baseline asks half an interval after Parley
  await Promise.all([
    schedule(n, rate, t0, LEAD_MS, (i, at) => { const g = new Gen('parley', i, warm); gens.push(g); return runGen(g, at); }),
    schedule(n, rate, t0 + half, 0, (i, at) => { const g = new Gen('direct', i, warm); gens.push(g); return runGen(g, at); }),
  ]);
}

const deadline = setTimeout(() => {
  console.error('gw-latency: overall deadline passed');
  process.exit(3);
}, (SECONDS + TIMEOUT_S + 60 + WARMUP) * 1000);

if (tr.setup) await tr.setup();
if (WARMUP > 0) await phase(WARMUP, Math.min(RATE, 20), true);
await sleep(200);
const N = Math.max(1, Math.round(RATE * SECONDS));
const tStart = performance.now();
await phase(N, RATE, false);
const wall = (performance.now() - tStart) / 1000;
clearTimeout(deadline);
if (tr.teardown) tr.teardown();

// ---------------------------------------------------------------- results

// the LLM writes its log line when a request closes: wait for ours
const want = new Set(gens.filter((g) => g.done && !(NO_UPSTREAM && g.kind === 'parley')).map((g) => g.tag));
let up = new Map();
for (let k = 0; k < 50; k++) {
  up = new Map();
  if (existsSync(TIMING_LOG)) {
    for (const l of readFileSync(TIMING_LOG, 'utf8').split('\n')) {
      if (!l) continue;
      try {
        const r = JSON.parse(l);
        if (r.tag && r.tag.startsWith(`gwl-${RUN}-`) && r.first_ns) up.set(r.tag, r);
      } catch { /* a line being written */ }
    }
  }
  if ([...want].every((t) => up.has(t))) break;
  await sleep(100);
}

const pct = (v, p) => {
  if (!v.length) return null;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
const stats = (v) => ({ n: v.length, p50: r3(pct(v, 50)), p99: r3(pct(v, 99)), max: r3(pct(v, 100)) });

function side(kind) {
  const all = gens.filter((g) => g.kind === kind && !g.warm);
  const errors = {};
  for (const g of all) if (g.error) { const k = g.error.replace(/gwl-\S+/g, '…').slice(0, 80); errors[k] = (errors[k] || 0) + 1; }
  const ok = all.filter((g) => g.done);
  const rows = [];
  let unmatched = 0;
  for (const g of ok) {
    const u = up.get(g.tag);
    const ttft = ms(g.firstNs - g.sentNs);
    if (!u && kind === 'parley' && NO_UPSTREAM) { rows.push({ ttft, upstream: FIRST_MS, overhead: ttft - FIRST_MS }); continue; }
    if (!u) { unmatched++; rows.push({ ttft }); continue; }
    const req = BigInt(u.req_ns);
    const first = BigInt(u.first_ns);
    rows.push({
      ttft,
      upstream: ms(first - req),
      overhead: ttft - ms(first - req),
      to_llm: ms(req - g.sentNs),
      from_llm: ms(g.firstNs - first),
    });
  }
  const col = (k) => rows.filter((r) => r[k] !== undefined).map((r) => r[k]);
  return {
    asked: all.length, complete: ok.length, failed: all.length - ok.length, errors,
    unmatched: kind === 'parley' && NO_UPSTREAM ? 0 : unmatched,
    ttft: stats(col('ttft')), upstream: stats(col('upstream')), overhead: stats(col('overhead')),
    to_llm: stats(col('to_llm')), from_llm: stats(col('from_llm')),
  };
}

const P = side('parley');
const D = side('direct');
const diff = (a, b) => (a === null || b === null ? null : r3(a - b));
const summary = {
  label: LABEL, transport: TRANSPORT, rate: RATE, seconds: SECONDS, wall_s: r3(wall),
  phoenix_sockets_added: phxExtra,
  first_ms: FIRST_MS, tokens: TOKENS, token_ms: TOKEN_MS, run: RUN,
  parley: P, direct: D,
  added: {            // Parley's overhead minus the baseline's, per percentile
    p50: diff(P.overhead.p50, D.overhead.p50),
    p99: diff(P.overhead.p99, D.overhead.p99),
    max: diff(P.overhead.max, D.overhead.max),
  },
  added_ttft: {       // the plain way: TTFT percentiles minus TTFT percentiles
    p50: diff(P.ttft.p50, D.ttft.p50), p99: diff(P.ttft.p99, D.ttft.p99),
  },
};
if (JSON_OUT) console.log(JSON.stringify(summary));
else console.log(JSON.stringify(summary, null, 2));
process.exit(0);
