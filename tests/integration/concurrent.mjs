// concurrent.mjs — N seed 000 ticket answers started at once, one viewer per
// ticket, over WebSocket (through the bridge) or Parley's long-poll
// transport (through a web server in front of parley.fcgi).
//
//   node concurrent.mjs --transport ws|poll --base http://127.0.0.1:PORT \
//        [--ws-base ws://127.0.0.1:PORT] [--n 60] [--tokens 60] [--token-ms 100]
//        [--first-ms 0] [--wait 25] [--secret S] [--json]
//        [--warmup S] [--go-file PATH]
//
// Each viewer connects (WebSocket; or POST /api/poll/open and its first GET
// before the ticket body, as www/parley.js does), then every viewer sends
// {"ticketBody"} at once. Checked for every viewer: the "stream" frames
// spell exactly the simulated LLM's answer (tests/fake-llm/answer.mjs), one
// "done" ends them, no "error", no close, no HTTP error (410: the session
// expired). And that all N generations ran at once: every viewer's first
// token arrived before ANY viewer's "done" — with answers of tokens ×
// token_ms each, a front that runs only some generations at a time (a
// thread each) starts the rest only after the first ones end.
// Prints one summary line (--json: a JSON object with the first-token
// latencies: from sending the body to the first token, minus the
// upstream's own first_ms). Exit 0 when everything held, 1 otherwise.
// Loopback only; every wait is bounded (--deadline seconds, default 120).
import WebSocket from 'ws';
import { createHmac, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { answerText } from '../fake-llm/answer.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const TRANSPORT = opt('transport', 'ws');
const BASE = opt('base', '');
const WS_BASE = opt('ws-base', BASE.replace(/^http/, 'ws'));
const N = Number(opt('n', 60));
const TOKENS = Number(opt('tokens', 60));
const TOKEN_MS = Number(opt('token-ms', 100));
const FIRST_MS = Number(opt('first-ms', 0));
const WAIT = Number(opt('wait', 25));
const SECRET = opt('secret', '');
const DEADLINE_S = Number(opt('deadline', 120));
const JSON_OUT = args.includes('--json');
// --warmup S (poll): first hold N long-poll GETs of S seconds at once on
// sessions that follow nothing, so that a front that spawns processes on
// demand (mod_fcgid) has them before the measured burst.
const WARMUP_S = Number(opt('warmup', 0));
// --go-file PATH: after the warmup, wait (at most 600 s; not once PATH's
// directory is gone) until PATH exists before the burst, so that a caller
// can warm this front up while it measures another one; the --deadline
// counts from then.
const GO_FILE = opt('go-file', '');
if (!BASE || !['ws', 'poll'].includes(TRANSPORT)) {
  console.error('usage: concurrent.mjs --transport ws|poll --base URL [options]');
  process.exit(2);
}

const b64u = (b) => Buffer.from(b).toString('base64url');
function jwt(sub) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const run = randomUUID().slice(0, 8);
const now = () => performance.now();

// fetch, repeated as www/parley.js repeats a long-poll request: on a
// network error (a kept connection the server closed meanwhile, a reset) and
// on 409, 429, 502, 503, 504, for up to 60 s with a backoff from 250 ms to
// 5 s; a GET is repeated from the same cursor, so nothing is lost or
// doubled. Other statuses are the caller's. retries counts the repeats,
// retryWhy by cause ("409", "503", "reset <code>": a network error).
const RETRYABLE = new Set([409, 429, 502, 503, 504]);
let retries = 0;
const retryWhy = {};
async function fetchRetry(url, init) {
  const until = Date.now() + 60000;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    let why;
    try {
      const r = await fetch(url, init());
      if (!RETRYABLE.has(r.status) || Date.now() + delay > until) return r;
      await r.arrayBuffer().catch(() => {});
      why = `HTTP ${r.status}`;
      retryWhy[r.status] = (retryWhy[r.status] || 0) + 1;
    } catch (e) {
      why = `${e.message}${e.cause ? ` (${e.cause.code || e.cause.message})` : ''}`;
      if (Date.now() + delay > until) throw new Error(why);
      const k = `reset ${e.cause?.code || e.name}`;
      retryWhy[k] = (retryWhy[k] || 0) + 1;
    }
    retries++;
    await new Promise((r) => setTimeout(r, delay));
  }
}

class Viewer {
  constructor(i) {
    this.i = i;
    this.ticket = `cc-${run}-${i}`;
    this.body = `concurrent ${i} of run ${run} [[fake tokens=${TOKENS} token_ms=${TOKEN_MS}` +
      `${FIRST_MS ? ` first_ms=${FIRST_MS}` : ''}]]`;
    this.want = answerText(this.body, TOKENS);
    this.text = '';
    this.types = [];
    this.sentAt = 0;
    this.firstAt = 0;
    this.doneAt = 0;
    this.failure = '';
    this.token = SECRET ? jwt(`user-${run}-${i}`) : '';
    this.ended = new Promise((res) => { this.end = res; });
  }

  fail(why) {
    if (!this.failure) this.failure = why;
    this.end();
  }

  frame(m) {
    this.types.push(m.type);
    if (m.type === 'stream') {
      if (!this.firstAt) this.firstAt = now();
      this.text += m.content;
    } else if (m.type === 'done') {
      this.doneAt = now();
      this.end();
    } else if (m.type === 'error') {
      this.fail(`error frame: ${m.message}`);
    } else {
      this.fail(`unexpected frame ${m.type}`);
    }
  }

  // ---- WebSocket ----
  async openWs() {
    const url = `${WS_BASE}/api/websocket/chat/${this.ticket}${this.token ? `?token=${this.token}` : ''}`;
    this.ws = new WebSocket(url);
    this.ws.on('message', (raw) => {
      try { this.frame(JSON.parse(raw.toString())); } catch (e) { this.fail(`bad frame: ${e.message}`); }
    });
    this.ws.on('close', (code) => { if (!this.doneAt) this.fail(`closed ${code}`); });
    this.ws.on('error', (e) => this.fail(`websocket: ${e.message}`));
    this.ws.on('unexpected-response', (req, res) => this.fail(`HTTP ${res.statusCode} instead of an upgrade`));
    await new Promise((res) => { this.ws.once('open', res); this.ended.then(res); });
  }

  sendWs() {
    this.sentAt = now();
    this.ws.send(JSON.stringify({ ticketBody: this.body }));
  }

  // ---- long-poll ----
  headers(extra = {}) {
    return this.token ? { Authorization: `Bearer ${this.token}`, ...extra } : extra;
  }

  async openPoll(loop = true) {
    const r = await fetchRetry(`${BASE}/api/poll/open`, () => ({
      method: 'POST', headers: this.headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ path: `/api/websocket/chat/${this.ticket}` }),
      signal: AbortSignal.timeout(DEADLINE_S * 1000),
    }));
    const j = await r.json().catch(() => null);
    if (r.status !== 200 || !j || typeof j.sid !== 'string') {
      this.fail(`open: HTTP ${r.status}`);
      return;
    }
    this.sid = j.sid;
    this.cursor = j.cursor || 0;
    if (loop) this.polling = this.pollLoop();
  }

  async pollLoop() {
    while (!this.doneAt && !this.failure) {
      let r, j;
      try {
        r = await fetchRetry(`${BASE}/api/poll/${this.sid}?cursor=${this.cursor}&wait=${WAIT}`, () => ({
          headers: this.headers(), signal: AbortSignal.timeout((WAIT + 60) * 1000),
        }));
        j = await r.json().catch(() => ({ status: r.status }));
      } catch (e) {
        this.fail(`poll: ${e.message}`);
        return;
      }
      if (r.status !== 200 || !Array.isArray(j.messages)) {
        this.fail(`poll: HTTP ${r.status} ${JSON.stringify(j).slice(0, 120)}`);
        return;
      }
      for (const m of j.messages) this.frame(m);
      if (j.cursor > this.cursor) this.cursor = j.cursor;
      if (j.closed && !this.doneAt) this.fail('the session closed');
    }
  }

  async sendPoll() {
    this.sentAt = now();
    const r = await fetchRetry(`${BASE}/api/poll/${this.sid}`, () => ({
      method: 'POST', headers: this.headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify({ ticketBody: this.body }), signal: AbortSignal.timeout(DEADLINE_S * 1000),
    })).catch((e) => ({ status: 0, e }));
    if (r.status !== 202 && r.status !== 200) this.fail(`send: ${r.e ? r.e.message : `HTTP ${r.status}`}`);
    this.sendMs = now() - this.sentAt;
  }

  close() {
    if (this.ws) this.ws.terminate();
    if (this.sid) {
      fetch(`${BASE}/api/poll/${this.sid}`, { method: 'DELETE', headers: this.headers() }).catch(() => {});
    }
  }
}

const pct = (v, p) => {
  if (!v.length) return null;
  const s = [...v].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]);
};

const viewers = Array.from({ length: N }, (_, i) => new Viewer(i));
let timer;
const startDeadline = () => {
  timer = setTimeout(() => {
    for (const v of viewers) if (!v.doneAt) v.fail('no done before the deadline');
  }, DEADLINE_S * 1000);
};
if (!GO_FILE) startDeadline();

if (TRANSPORT === 'ws') {
  await Promise.all(viewers.map((v) => v.openWs()));
  for (const v of viewers) if (!v.failure) v.sendWs();
} else {
  if (WARMUP_S > 0) {
    await Promise.all(Array.from({ length: N }, async (_, i) => {
      const w = new Viewer(N + i);
      await w.openPoll(false);        // no poll loop: one GET below
      if (w.failure) return;
      await fetchRetry(`${BASE}/api/poll/${w.sid}?cursor=0&wait=${WARMUP_S}`, () => ({
        headers: w.headers(), signal: AbortSignal.timeout((WARMUP_S + 120) * 1000),
      })).then((r) => r.text()).catch(() => {});
      w.close();
    }));
  }
  if (GO_FILE) {
    const until = Date.now() + 600000;
    while (!existsSync(GO_FILE)) {
      // the caller's temp dir gone (it ended): so do we
      if (Date.now() > until || !existsSync(dirname(GO_FILE))) {
        console.log(`FAIL: no ${GO_FILE} within 600 s`);
        process.exit(1);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    startDeadline();
  }
  await Promise.all(viewers.map((v) => v.openPoll().catch((e) => v.fail(`open: ${e.message}`))));
  await new Promise((r) => setTimeout(r, 200));   // the first GETs are out, as parley.js does
  await Promise.all(viewers.filter((v) => !v.failure).map((v) => v.sendPoll()));
}
await Promise.all(viewers.map((v) => v.ended));
clearTimeout(timer);
for (const v of viewers) v.close();

const problems = [];
for (const v of viewers) {
  if (v.failure) problems.push(`viewer ${v.i}: ${v.failure}`);
  else if (v.text !== v.want) problems.push(`viewer ${v.i}: got ${v.text.length} chars, want ${v.want.length}`);
  else if (v.types.filter((t) => t === 'done').length !== 1) problems.push(`viewer ${v.i}: ${v.types.length} frames, not one done`);
}
const ok = viewers.filter((v) => !v.failure && v.text === v.want);
const firstDone = Math.min(...viewers.map((v) => v.doneAt || Infinity));
const lateStarts = viewers.filter((v) => v.firstAt && v.firstAt > firstDone).length;
if (!problems.length && lateStarts)
  problems.push(`${lateStarts} of ${N} generations started streaming only after another one had ended: ` +
    'they did not all run at once');
const first = ok.filter((v) => v.firstAt).map((v) => v.firstAt - v.sentAt - FIRST_MS);
const summary = {
  transport: TRANSPORT, n: N, tokens: TOKENS, token_ms: TOKEN_MS, first_ms: FIRST_MS,
  complete: ok.length, failed: N - ok.length, late_starts: lateStarts,
  first_token_beyond_upstream_ms: { p50: pct(first, 50), p99: pct(first, 99), max: pct(first, 100) },
  // long-poll: from sending the ticket body to its 202 (where the time goes)
  send_ms: (() => { const s = viewers.filter((v) => v.sendMs != null).map((v) => v.sendMs);
    return s.length ? { p50: pct(s, 50), p99: pct(s, 99), max: pct(s, 100) } : null; })(),
  tokens_received: viewers.reduce((a, v) => a + (v.text === v.want ? TOKENS : 0), 0),
  retried_requests: retries,
  retried_by_cause: retryWhy,
};
if (JSON_OUT) console.log(JSON.stringify(summary));
else console.log(`${TRANSPORT}: ${ok.length}/${N} complete, ${lateStarts} started after a done; ` +
  `first token beyond the upstream's: p50 ${summary.first_token_beyond_upstream_ms.p50} ms, ` +
  `p99 ${summary.first_token_beyond_upstream_ms.p99} ms; ${retries} requests repeated` +
  (retries ? ` (${Object.entries(retryWhy).map(([k, n]) => `${k}: ${n}`).join(', ')})` : ''));
for (const p of problems.slice(0, 20)) console.log(p);
if (problems.length > 20) console.log(`... ${problems.length - 20} more`);
process.exit(problems.length ? 1 : 0);
