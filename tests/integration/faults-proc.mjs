// faults-proc.mjs — the process part of issue 13's fault matrix, through a
// real web server in front of parley.fcgi and the bridge (parley-ws), run
// by tests/integration/t0940-fault-proc.sh once per fault (PHASE):
//
//   fcgi      the parley.fcgi process SIGKILLed mid-stream (under lighttpd
//             one process: the owner of the generations started over
//             long-poll, SSE, Phoenix LongPoll and the OpenAI API, and the
//             server of the long-poll / SSE / Phoenix LongPoll followers
//             of generations the bridge runs); the web server respawns it
//   bridge    parley-ws SIGKILLed mid-stream, then started again on the
//             same port as systemd would (BRIDGE_RESTART, a script that
//             execs the shipped unit's ExecStart)
//   graceful  the web server (WEB: lighttpd or apache) gracefully restarted
//             mid-stream (WEB_PID gets WEB_SIGNAL: lighttpd's SIGUSR1,
//             Apache's SIGUSR1)
//
// Every transport is a case, all cases of a phase run at once and the fault
// hits them together (a barrier: once every case has seen answer text).
// For each case: what its client sees — the whole answer exactly once (a
// transparent resume through the protocol's own reconnect: seq/after=,
// the long-poll cursor, Last-Event-ID, Phoenix's rejoin) or the protocol's
// error frame with the documented code (docs/errors.md: `interrupted`),
// never a hang (every wait is bounded); then the same question again: the
// whole deterministic answer of the simulated LLM, and the simulated LLM's
// request log shows a new upstream request for it (no partial answer was
// cached). After the cases: no job left `running` past its lease, `PRAGMA
// integrity_check` ok, and a new user served on every transport.
//
// Env: BASE, SECRET, FAKE_LLM_URL, DB (the SQLite file), LEASE_MS, PHASE,
// RUN (unique tag), FCGI_EXE (the parley.fcgi program the web server
// spawns: its processes are found by /proc/<pid>/exe), BRIDGE_PID,
// WEB, BRIDGE_RESTART, BRIDGE_PID_FILE (the restarted bridge's pid is written
// there), WEB_PID, WEB_SIGNAL, RESULT_FILE (measurements, "# ..." lines).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LongPoll as PhxLongPoll, Socket } from 'phoenix';
import WebSocket from 'ws';
import { answerText } from '../fake-llm/answer.mjs';
import { SLOW, api as apiCall, jwtHS256, LongPoll } from '../node/clients.mjs';

const { BASE, SECRET, FAKE_LLM_URL: FAKE, DB, PHASE } = process.env;
const WS = BASE.replace(/^http/, 'ws');
const RUN = `${process.env.RUN || process.pid}${PHASE}`;
const LEASE_MS = Number(process.env.LEASE_MS || 2000);
const N = 200;                                 // tokens of a faulted answer
const TOKEN_MS = PHASE === 'graceful' ? 30 : 15;
const DIRECTIVE = `[[fake tokens=${N} token_ms=${TOKEN_MS}]]`;
const ALICE = jwtHS256(SECRET, `alice-${RUN}`);
const ADMIN = jwtHS256(SECRET, 'root', { role: 'admin' });
const T = { timeout: 120000 * SLOW };
const T0 = Date.now();
const WAIT = 40000 * SLOW;                     // any one client's bound
const PRE = 15000 * SLOW;                      // before the fault
const note = (line) => {
  console.log(`# ${line}`);
  if (process.env.RESULT_FILE) appendFileSync(process.env.RESULT_FILE, `# ${line}\n`);
};
const api = (method, path, token, body) => apiCall(BASE, method, path, { token, body });
const auth = (tok) => ({ authorization: `Bearer ${tok}` });

// ---------------------------------------------------------------- helpers

function fcgiPids() {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try { if (readlinkSync(`/proc/${d}/exe`) === process.env.FCGI_EXE) out.push(Number(d)); } catch { /* gone */ }
  }
  return out;
}

const sql = (q) => execFileSync('sqlite3', [DB, q], { encoding: 'utf8' }).trim();

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => (q.prompt ?? '').includes(tag));
}

// Retries fn (an async request) until it does not throw, within ms: the
// web server or the bridge may be coming back.
async function retry(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    try { return await fn(); } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: still failing after ${ms} ms: ${e.message}`);
      await sleep(200);
    }
  }
}

// A barrier: fire() runs once every case arrived (or after a bound, so that
// a case failing early does not hold the others).
class Fault {
  constructor(n, fire) {
    this.n = n; this.count = 0; this.fire = fire;
    this.fired = new Promise((res, rej) => { this.res = res; this.rej = rej; });
    this.timer = setTimeout(() => this.go(), PRE);
  }
  arrive() { if (++this.count >= this.n) this.go(); return this.fired; }
  go() {
    if (this.started) return;
    this.started = true;
    clearTimeout(this.timer);
    Promise.resolve().then(this.fire).then(this.res, this.rej);
  }
}

// ---- seed 000 / seed 001 over WebSocket with seq=1, resuming with after=
// the last seq seen when the connection is lost. Resolves with { frames,
// text, end, reconnects }; text is what the seed's client shows.
function wsClient(kind, id, content, { send = true, onText } = {}) {
  const frames = [];
  let lastSeq = 0, reconnects = 0, sent = false, text = '';
  const endTypes = kind === '000' ? ['done', 'error', 'cached'] : ['stream_end', 'error'];
  const deadline = Date.now() + WAIT;
  return new Promise((resolve, reject) => {
    const open = () => {
      // a viewer that sends nothing follows the ticket's running generation
      // from the start (seed 000 needs after= for that; seed 001 follows anyway)
      const after = lastSeq || (!send && kind === '000') ? `&after=${lastSeq}` : '';
      const q = `seq=1${after}&token=${ALICE}`;
      const url = kind === '000' ? `${WS}/api/websocket/chat/${id}?${q}` : `${WS}/ws/${id}?${q}`;
      const ws = new WebSocket(url);
      let ended = false;
      ws.on('open', () => {
        if (send && !sent && kind === '000') { sent = true; ws.send(JSON.stringify({ ticketBody: content })); }
      });
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString());
        frames.push(m);
        if (m.seq) {
          if (m.seq <= lastSeq) { ended = true; ws.terminate(); reject(new Error(`seq ${m.seq} again after ${lastSeq}: a duplicate`)); return; }
          lastSeq = m.seq;
        }
        if (m.type === 'connected' && send && !sent) {
          sent = true;
          ws.send(JSON.stringify({ type: 'message', content }));
        }
        if (m.type === 'stream' || m.type === 'stream_chunk') { text += m.content ?? ''; onText?.(); }
        if (m.type === 'cached') text = m.response;
        if (endTypes.includes(m.type) && !(kind === '001' && m.type === 'error' && !m.message_id && !m.code)) {
          ended = true;
          ws.close();
          resolve({ frames, text, end: m, reconnects });
        }
      });
      ws.on('error', () => {});
      ws.on('close', () => {
        if (ended) return;
        if (Date.now() > deadline) { reject(new Error(`no end within ${WAIT} ms: ${JSON.stringify(frames.slice(-3))}`)); return; }
        reconnects++;
        setTimeout(open, 200);
      });
    };
    open();
  });
}

// ---- Parley long-poll, tolerant: a failed or refused request (the process
// died, the web server restarts) is repeated with the same cursor.
class LP extends LongPoll {
  async follow(pred, ms = WAIT) {
    const end = Date.now() + ms;
    this.failures = 0;
    while (!pred(this.msgs)) {
      assert.ok(Date.now() < end, `long-poll: no end within ${ms} ms; got ${JSON.stringify(this.msgs.slice(-3))}`);
      try {
        const r = await fetch(`${this.base}/api/poll/${this.sid}?cursor=${this.cursor}&wait=2`,
          { headers: this.headers, signal: AbortSignal.timeout(15000 * SLOW) });
        if (r.status !== 200) {
          this.failures++;
          assert.ok(r.status >= 500, `long-poll GET: ${r.status} ${await r.text()}`);
          await sleep(200);
          continue;
        }
        const j = await r.json();
        this.msgs.push(...j.messages);
        this.cursor = j.cursor;
      } catch (e) {
        if (e.code === 'ERR_ASSERTION') throw e;
        this.failures++;
        await sleep(200);
      }
    }
    return this.msgs;
  }
  chunks() { return this.msgs.filter((m) => m.type === 'stream' || m.type === 'stream_chunk').map((m) => m.content).join(''); }
}
const lpEnded = (kind) => (m) => m.some((x) => (kind === '000' ? ['done', 'error', 'cached'] : ['stream_end', 'error']).includes(x.type));

// ---- SSE follower of a ticket (GET /api/tickets/{id}/ai/stream),
// reconnecting with Last-Event-ID as EventSource does.
async function sseTicket(ticket, onText) {
  const frames = [];
  let last = null, reconnects = 0;
  const end = Date.now() + WAIT;
  for (;;) {
    assert.ok(Date.now() < end, `SSE: no end within ${WAIT} ms: ${JSON.stringify(frames.slice(-3))}`);
    let res;
    try {
      res = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, {
        headers: { ...auth(ALICE), ...(last !== null ? { 'last-event-id': last } : {}) },
        signal: AbortSignal.timeout(WAIT),
      });
    } catch { reconnects++; await sleep(200); continue; }
    if (res.status === 204 && frames.length) return { frames, reconnects, last };
    if (res.status !== 200) { reconnects++; await res.text().catch(() => {}); await sleep(200); continue; }
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += Buffer.from(chunk).toString();
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, k);
          buf = buf.slice(k + 2);
          const id = block.split('\n').find((l) => l.startsWith('id:'));
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
          if (!data.length) continue;
          const m = JSON.parse(data.join('\n'));
          if (id) {
            const v = id.slice(3).trim();
            assert.ok(last === null || Number(v) > Number(last), `SSE id ${v} again after ${last}: a duplicate`);
            last = v;
          }
          frames.push(m);
          if (m.type === 'stream') onText?.();
          if (['done', 'error', 'cached'].includes(m.type)) return { frames, reconnects, last };
        }
      }
    } catch { /* cut: reconnect below */ }
    reconnects++;
    await sleep(200);
  }
}

// ---- seed 004: POST /api/chat/send, the seed's reading loop; the stream
// either ends with a done/error frame or breaks (cut: true).
async function seed004(conversationId, content, onText) {
  const res = await fetch(`${BASE}/api/chat/send`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...auth(ALICE) },
    body: JSON.stringify({ conversationId, content }), signal: AbortSignal.timeout(WAIT),
  });
  const out = { status: res.status, events: [], text: '', cut: false };
  if (res.status !== 200) { out.body = await res.text(); return out; }
  let buf = '';
  try {
    for await (const chunk of res.body) {
      buf += Buffer.from(chunk).toString();
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, k);
        buf = buf.slice(k + 2);
        const line = block.split('\n').find((l) => l.startsWith('data: '));
        if (!line) continue;
        const m = JSON.parse(line.slice(6));
        out.events.push(m);
        if (m.content) { out.text += m.content; onText?.(); }
      }
    }
  } catch (e) { out.cut = true; out.cutError = e.message; }
  out.end = out.events.at(-1);
  if (!out.end?.done) out.cut = true;
  return out;
}

// ---- OpenAI-compatible SSE (temperature 0: shareable and cached).
async function openaiStream(content, onText, token = ALICE) {
  const res = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...auth(token) },
    body: JSON.stringify({ model: 'llama3.2', stream: true, temperature: 0, messages: [{ role: 'user', content }] }),
    signal: AbortSignal.timeout(WAIT),
  });
  const out = { status: res.status, cache: res.headers.get('x-parley-cache'), text: '', done: false, error: null, cut: false };
  if (res.status !== 200) { out.body = await res.text(); return out; }
  let buf = '';
  try {
    for await (const chunk of res.body) {
      buf += Buffer.from(chunk).toString();
      let k;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, k);
        buf = buf.slice(k + 2);
        if (!line.startsWith('data: ')) continue;
        if (line === 'data: [DONE]') { out.done = true; continue; }
        const m = JSON.parse(line.slice(6));
        if (m.error) { out.error = m.error; continue; }
        const d = m.choices?.[0]?.delta?.content;
        if (d) { out.text += d; onText?.(); }
      }
    }
  } catch (e) { out.cut = true; out.cutError = e.message; }
  if (!out.done && !out.error) out.cut = true;
  return out;
}

// ---- Phoenix (phoenix.js, the official client) on the bridge's WebSocket
// or on LongPoll; it reconnects and rejoins by itself. An answer restarts
// at each stream_start (docs/protocol-phoenix.md: a join while an answer
// runs follows it from its start; "a join after the answer ended follows
// nothing (the answer is in get_history)": so after each rejoin the client
// asks for the history, and an answer to its query found there is the
// answer — st.query is the query it asked or watches).
function phoenix(transport, session) {
  const socket = new Socket(`${WS}/socket`, {
    transport: transport === 'ws' ? WebSocket : PhxLongPoll,
    params: { user_id: `alice-${RUN}`, auth_token: ALICE }, timeout: 10000,
    reconnectAfterMs: () => 300, rejoinAfterMs: () => 300, longpollerTimeout: 20000,
  });
  socket.connect();
  const ch = socket.channel(`proxy:${session}`, {});
  const st = { transport, socket, ch, starts: 0, text: '', end: null, joins: 0, errors: 0, log: [] };
  ch.onMessage = (event, payload) => {
    if (event !== 'stream_token') st.log.push(`${((Date.now() - T0) / 1000).toFixed(1)}s:${event}`);
    return payload;
  };
  st.done = new Promise((resolve) => {
    ch.on('history', async (p) => {
      if (st.end) return;
      const m = p.messages ?? [];
      const a = m.at(-1), u = m.at(-2);
      if (a?.role === 'assistant' && u?.role === 'user' && u.content === st.query) {
        st.text = a.content;
        st.end = { event: 'history' };
        resolve(st);
        return;
      }
      // unanswered: the rejoin follows the answer (a stream_start comes),
      // or the answer ended meanwhile. Once no job runs on the session,
      // the last word: its answer in the history, or nothing — the client
      // was told nothing (st.end "lost", which no case accepts)
      if (st.checking) return;
      st.checking = true;
      const starts = st.starts;
      const end = Date.now() + WAIT / 2;
      while (Date.now() < end && !st.end &&
             sql(`SELECT count(*) FROM jobs WHERE channel = 'conv:${session}' AND state = 'running'`) !== '0') await sleep(200);
      await sleep(1000);                       // what the pump still had to hand on
      if (st.end || st.starts > starts) { st.checking = false; return; }
      st.lastCheck = true;
      ch.push('get_history', {});
    });
    ch.on('history', (p) => {
      if (st.end || !st.lastCheck) return;
      const a = (p.messages ?? []).at(-1);
      if (a?.role === 'user' && a.content === st.query) {
        st.end = { event: 'lost', detail: 'rejoined after the answer ended: no stream_start, no stream_error, ' +
                   'the history holds the question unanswered' };
        resolve(st);
      }
    });
    ch.on('stream_start', () => { st.starts++; st.text = ''; });
    ch.on('stream_token', (p) => { st.text += p.token; st.onText?.(); });
    ch.on('stream_complete', (p) => { st.end = { event: 'stream_complete', ...p }; resolve(st); });
    ch.on('stream_error', (p) => { st.end = { event: 'stream_error', ...p }; resolve(st); });
  });
  st.joined = new Promise((resolve, reject) => {
    ch.join().receive('ok', () => {
      if (++st.joins > 1 && !st.end && st.query) ch.push('get_history', {});
      resolve();
    }).receive('error', (e) => reject(new Error(JSON.stringify(e))));
  });
  socket.onError(() => { st.errors++; });
  return st;
}
async function phxDone(st) {
  let t;
  const bound = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`Phoenix ${st.transport}: no end within ${WAIT} ms (text ${st.text.length} chars, ` +
      `${st.starts} stream_start, ${st.joins} join(s), ${st.errors} socket error(s), events ${st.log.slice(-8).join(' ')})`)), WAIT);
  });
  try { return await Promise.race([st.done, bound]); } finally { clearTimeout(t); st.socket.disconnect(); }
}

// ---- the faults

async function killFcgi() {
  const pids = fcgiPids();
  assert.ok(pids.length >= 1, `no process runs ${process.env.FCGI_EXE}`);
  for (const p of pids) process.kill(p, 'SIGKILL');
  note(`${PHASE}: SIGKILLed parley.fcgi ${pids.join(' ')}`);
  return pids;
}

async function killBridge() {
  const pid = Number(process.env.BRIDGE_PID);
  process.kill(pid, 'SIGKILL');
  const t0 = Date.now();
  await sleep(1000);                           // systemd: RestartSec
  const child = spawn('sh', [process.env.BRIDGE_RESTART], { stdio: 'ignore' });
  child.unref();
  writeFileSync(process.env.BRIDGE_PID_FILE, String(child.pid));
  note(`bridge: SIGKILLed parley-ws ${pid}, started it again after ${Date.now() - t0} ms (pid ${child.pid})`);
}

async function gracefulRestart() {
  const pid = Number(process.env.WEB_PID);
  const t0 = Date.now();
  process.kill(pid, process.env.WEB_SIGNAL || 'SIGUSR1');
  // how long new requests wait while the server restarts (measured, not asserted)
  (async () => {
    await retry('health after the graceful restart', async () => {
      const r = await fetch(`${BASE}/api/health`, { signal: AbortSignal.timeout(1000) });
      assert.equal(r.status, 200);
    }, 60000 * SLOW);
    note(`graceful: ${process.env.WEB_SIGNAL || 'SIGUSR1'} to ${pid}; /api/health answered 200 again after ${Date.now() - t0} ms`);
  })().catch((e) => note(`graceful: ${e.message}`));
}

const fire = () => {
  note(`${PHASE}: the fault at ${((Date.now() - T0) / 1000).toFixed(1)} s`);
  return { fcgi: killFcgi, bridge: killBridge, graceful: gracefulRestart }[PHASE]();
};

// ---- the cases. Each is (mid) => result: it starts its clients, awaits
// mid() once it has seen text (the fault happened when mid() resolves),
// then checks what its clients saw. The re-ask of the same question is
// part of the case.

const id = (p) => `${p}-${RUN}`;
const body = (p) => `${p} ${RUN} ${DIRECTIVE}`;
const codeOf = (m) => m?.code ?? m?.error?.code;

// What a case's client may see, per phase and who owns the generation:
// RESUME: the whole answer once; ERROR: the `interrupted` error frame.
function expectEnd(what, got, { resume, text, expected, endFrame }) {
  if (resume) {
    assert.equal(text.length, expected.length, `${what}: the whole answer once (${JSON.stringify(endFrame)})`);
    assert.equal(text, expected, `${what}: the whole answer once`);
  } else {
    assert.equal(codeOf(endFrame), 'interrupted', `${what}: the documented error: ${JSON.stringify(endFrame)}`);
    assert.ok(expected.startsWith(text), `${what}: the text shown before the error is a prefix of the answer`);
  }
  return got;
}

// The same question again, on the same transport: the whole answer, and a
// new upstream request (the fake's log) unless the first answer completed.
async function reask(what, tag, prev, fn) {
  const before = (await fakeRequests(tag)).length;
  const { text, expected, cachedOk } = await fn();
  assert.equal(text, expected, `${what}: asked again: the whole deterministic answer`);
  const after = (await fakeRequests(tag)).length;
  if (!cachedOk) assert.ok(after > before, `${what}: asked again: a new upstream request (nothing partial cached): ${before} → ${after}`);
  return { before, after };
}

// Owner of the generation, per phase: which process it runs in.
// fcgi: what starts on parley.fcgi dies; bridge: what starts on the bridge dies;
// graceful: nothing dies.
const dies = (owner) => (PHASE === 'fcgi' && owner === 'fcgi') || (PHASE === 'bridge' && owner === 'bridge');
// Apache's graceful restart makes mod_fcgid terminate its parley.fcgi
// processes (SIGTERM, and again a few seconds later: parley.fcgi then exits
// at once), so a stream one of them writes may be cut — a cut, never a
// false end, and its answer is failed and asked again as after a kill.
// lighttpd's graceful restart serves the open requests to their end.
const MAY_CUT = PHASE === 'graceful' && process.env.WEB === 'apache';

const cases = {};

// seed 000, started over WebSocket (the bridge), followed over long-poll and SSE (parley.fcgi)
cases['seed 000: WebSocket starter + long-poll and SSE followers'] = async (mid) => {
  const t = id('t0ws'), b = body('ws000 ticket');
  const expected = answerText(b, N);
  let seen = 0;
  const ws = wsClient('000', t, b, { onText: () => seen++ });
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  const lp = new LP(BASE, `/api/websocket/chat/${t}?seq=1&after=0`, { token: ALICE });
  await lp.open();
  await lp.follow((m) => m.some((x) => x.type === 'stream'), PRE);
  let sseSeen = 0;
  const sse = sseTicket(t, () => sseSeen++);
  await retry('SSE text', async () => assert.ok(sseSeen >= 1), PRE);
  await mid();
  const resume = !dies('bridge');
  const [w, l, s] = await Promise.all([ws, lp.follow(lpEnded('000')), sse]);
  expectEnd('WebSocket', w, { resume, text: w.text, expected, endFrame: w.end });
  expectEnd('long-poll', l, { resume, text: lp.chunks(), expected, endFrame: l.at(-1) });
  const sText = s.frames.filter((m) => m.type === 'stream').map((m) => m.content).join('');
  expectEnd('SSE', s, { resume, text: sText, expected, endFrame: s.frames.at(-1) });
  note(`${PHASE}: seed 000 WS starter: ${w.end.type}${w.end.code ? ` (${w.end.code})` : ''}, ${w.reconnects} reconnect(s); ` +
       `long-poll ${l.at(-1).type}, ${lp.failures} failed request(s); SSE ${s.frames.at(-1).type}, ${s.reconnects} reconnect(s)`);
  await reask('seed 000 WebSocket', `ws000 ticket ${RUN}`, w, async () => {
    const again = await wsClient('000', t, b);
    return { text: again.text, expected, cachedOk: resume };
  });
};

// seed 000, started over long-poll (parley.fcgi), watched over WebSocket (the bridge)
cases['seed 000: long-poll starter + WebSocket viewer'] = async (mid) => {
  const t = id('t0lp'), b = body('lp000 ticket');
  const expected = answerText(b, N);
  const lp = new LP(BASE, `/api/websocket/chat/${t}`, { token: ALICE });
  await lp.open();
  await lp.send({ ticketBody: b });
  await lp.follow((m) => m.some((x) => x.type === 'stream'), PRE);
  let seen = 0;
  const ws = wsClient('000', t, b, { send: false, onText: () => seen++ });
  await retry('viewer text', async () => assert.ok(seen >= 1), PRE);
  await mid();
  const resume = !dies('fcgi');
  const [l, w] = await Promise.all([lp.follow(lpEnded('000')), ws]);
  expectEnd('long-poll', l, { resume, text: lp.chunks(), expected, endFrame: l.at(-1) });
  expectEnd('WebSocket viewer', w, { resume, text: w.text, expected, endFrame: w.end });
  note(`${PHASE}: seed 000 long-poll starter: ${l.at(-1).type}${l.at(-1).code ? ` (${l.at(-1).code})` : ''}, ` +
       `${lp.failures} failed request(s); WS viewer ${w.end.type}, ${w.reconnects} reconnect(s)`);
  await reask('seed 000 long-poll', `lp000 ticket ${RUN}`, l, async () => {
    const again = new LP(BASE, `/api/websocket/chat/${id('t0lp')}`, { token: ALICE });
    await retry('poll open', () => again.open());
    await again.send({ ticketBody: b });
    const m = await again.follow(lpEnded('000'));
    const c = m.find((x) => x.type === 'cached');
    return { text: c ? c.response : again.chunks(), expected, cachedOk: resume };
  });
};

// seed 001, started over WebSocket, followed over long-poll
cases['seed 001: WebSocket starter + long-poll follower'] = async (mid) => {
  const s = id('s1ws'), c = body('ws001 chat');
  const expected = answerText(c, N);
  let seen = 0;
  const ws = wsClient('001', s, c, { onText: () => seen++ });
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  const lp = new LP(BASE, `/ws/${s}`, { token: ALICE });
  await lp.open();
  await lp.follow((m) => m.some((x) => x.type === 'stream_chunk'), PRE);
  await mid();
  const resume = !dies('bridge');
  const [w, l] = await Promise.all([ws, lp.follow(lpEnded('001'))]);
  expectEnd('WebSocket', w, { resume, text: w.text, expected, endFrame: w.end });
  expectEnd('long-poll', l, { resume, text: lp.chunks(), expected, endFrame: l.at(-1) });
  if (!resume) assert.ok(w.end.message_id, 'the error belongs to the answer (message_id)');
  note(`${PHASE}: seed 001 WS starter: ${w.end.type}${w.end.code ? ` (${w.end.code})` : ''}, ${w.reconnects} reconnect(s); ` +
       `long-poll ${l.at(-1).type}, ${lp.failures} failed request(s)`);
  await reask('seed 001 WebSocket', `ws001 chat ${RUN}`, w, async () => {
    const again = await wsClient('001', s, c);
    return { text: again.text, expected, cachedOk: resume };
  });
};

// seed 001, started over long-poll, watched over WebSocket
cases['seed 001: long-poll starter + WebSocket viewer'] = async (mid) => {
  const s = id('s1lp'), c = body('lp001 chat');
  const expected = answerText(c, N);
  const lp = new LP(BASE, `/ws/${s}`, { token: ALICE });
  await lp.open();
  await lp.follow((m) => m.some((x) => x.type === 'connected'), PRE);
  await lp.send({ type: 'message', content: c });
  await lp.follow((m) => m.some((x) => x.type === 'stream_chunk'), PRE);
  let seen = 0;
  const ws = wsClient('001', s, c, { send: false, onText: () => seen++ });
  await retry('viewer text', async () => assert.ok(seen >= 1), PRE);
  await mid();
  const resume = !dies('fcgi');
  const [l, w] = await Promise.all([lp.follow(lpEnded('001')), ws]);
  expectEnd('long-poll', l, { resume, text: lp.chunks(), expected, endFrame: l.at(-1) });
  expectEnd('WebSocket viewer', w, { resume, text: w.text, expected, endFrame: w.end });
  note(`${PHASE}: seed 001 long-poll starter: ${l.at(-1).type}${l.at(-1).code ? ` (${l.at(-1).code})` : ''}, ` +
       `${lp.failures} failed request(s); WS viewer ${w.end.type}, ${w.reconnects} reconnect(s)`);
  await reask('seed 001 long-poll', `lp001 chat ${RUN}`, l, async () => {
    const again = new LP(BASE, `/ws/${s}`, { token: ALICE });
    await retry('poll open', () => again.open());
    await again.follow((m) => m.some((x) => x.type === 'connected'));
    const from = again.msgs.length;
    await again.send({ type: 'message', content: c });
    await again.follow((m) => m.slice(from).some((x) => ['stream_end', 'error'].includes(x.type)));
    const mine = again.msgs.slice(from);
    return { text: mine.filter((x) => x.type === 'stream_chunk').map((x) => x.content).join(''), expected, cachedOk: resume };
  });
};

// Phoenix: started over the WebSocket transport (bridge), followed over LongPoll (parley.fcgi)
cases['Phoenix: WebSocket starter + LongPoll follower'] = async (mid) => {
  const session = id('pws'), q = body('phxws query');
  const expected = answerText(q, N);
  const a = phoenix('ws', session);
  await a.joined;
  let seen = 0;
  a.onText = () => seen++;
  a.query = q;
  a.ch.push('stream_query', { query: q });
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  const b = phoenix('lp', session);
  b.query = q;
  let bseen = 0;
  b.onText = () => bseen++;
  await b.joined;
  await retry('LongPoll text', async () => assert.ok(bseen >= 1), PRE);
  await mid();
  const resume = !dies('bridge');
  const [ra, rb] = await Promise.all([phxDone(a), phxDone(b)]);
  for (const [w, r] of [['Phoenix WebSocket', ra], ['Phoenix LongPoll', rb]]) {
    if (resume) {
      // the stream to its end, or (rejoined after the end) the answer in get_history
      assert.ok(['stream_complete', 'history'].includes(r.end.event), `${w}: ${JSON.stringify(r.end)}`);
      assert.equal(r.text, expected, `${w}: the whole answer once, from its last stream_start or the history`);
    } else {
      assert.equal(r.end.event, 'stream_error', `${w}: ${JSON.stringify(r.end)}`);
      assert.equal(r.end.code, 'interrupted', `${w}: ${JSON.stringify(r.end)}`);
    }
  }
  note(`${PHASE}: Phoenix WS starter: ${ra.end.event}${ra.end.code ? ` (${ra.end.code})` : ''}, ${ra.joins} join(s); ` +
       `LongPoll follower ${rb.end.event}, ${rb.joins} join(s)`);
  await reask('Phoenix WebSocket', `phxws query ${RUN}`, ra, async () => {
    const c = phoenix('ws', session);
    await retry('rejoin', () => c.joined);
    const got = new Promise((res) => c.ch.on('response', res));
    c.ch.push('query', { query: q });
    const r = await Promise.race([got, sleep(WAIT, null, { ref: false }).then(() => ({ response: '(no response)' }))]);
    c.socket.disconnect();
    return { text: r.response, expected, cachedOk: resume };
  });
};

// Phoenix: started over LongPoll (parley.fcgi), watched over WebSocket (bridge)
cases['Phoenix: LongPoll starter + WebSocket viewer'] = async (mid) => {
  const session = id('plp'), q = body('phxlp query');
  const expected = answerText(q, N);
  const a = phoenix('lp', session);
  await a.joined;
  let seen = 0;
  a.onText = () => seen++;
  a.query = q;
  a.ch.push('stream_query', { query: q });
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  const b = phoenix('ws', session);
  b.query = q;
  let bseen = 0;
  b.onText = () => bseen++;
  await b.joined;
  await retry('viewer text', async () => assert.ok(bseen >= 1), PRE);
  await mid();
  const resume = !dies('fcgi');
  const [ra, rb] = await Promise.all([phxDone(a), phxDone(b)]);
  for (const [w, r] of [['Phoenix LongPoll', ra], ['Phoenix WebSocket', rb]]) {
    if (resume) {
      // the stream to its end, or (rejoined after the end) the answer in get_history
      assert.ok(['stream_complete', 'history'].includes(r.end.event), `${w}: ${JSON.stringify(r.end)}`);
      assert.equal(r.text, expected, `${w}: the whole answer once, from its last stream_start or the history`);
    } else {
      assert.equal(r.end.event, 'stream_error', `${w}: ${JSON.stringify(r.end)}`);
      assert.equal(r.end.code, 'interrupted', `${w}: ${JSON.stringify(r.end)}`);
    }
  }
  note(`${PHASE}: Phoenix LongPoll starter: ${ra.end.event}${ra.end.code ? ` (${ra.end.code})` : ''}, ${ra.joins} join(s); ` +
       `WS viewer ${rb.end.event}, ${rb.joins} join(s)`);
  await reask('Phoenix LongPoll', `phxlp query ${RUN}`, ra, async () => {
    const c = phoenix('lp', session);
    await retry('rejoin', () => c.joined);
    const got = new Promise((res) => c.ch.on('response', res));
    c.ch.push('query', { query: q });
    const r = await Promise.race([got, sleep(WAIT, null, { ref: false }).then(() => ({ response: '(no response)' }))]);
    c.socket.disconnect();
    return { text: r.response, expected, cachedOk: resume };
  });
};

// seed 004 SSE (POST /api/chat/send): parley.fcgi runs it and writes its stream
cases['seed 004 SSE (POST /api/chat/send)'] = async (mid) => {
  const conv = await api('POST', '/api/chat/sessions', ALICE, { kind: 'sse' });
  assert.ok(conv.status === 200 || conv.status === 201, conv.text);
  const cid = conv.json.id, c = body('sse004 send');
  const expected = answerText(c, N);
  let seen = 0;
  const p = seed004(cid, c, () => seen++);
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  await mid();
  const out = await p;
  const cut = dies('fcgi') || MAY_CUT;
  if (dies('fcgi') || (MAY_CUT && out.cut)) {
    // its process died: the stream breaks (no done frame: the client knows it is incomplete)
    assert.equal(out.cut, true, `a cut stream, not a false end: ${JSON.stringify(out.end)}`);
    assert.ok(expected.startsWith(out.text), 'the text before the cut is a prefix of the answer');
  } else {
    assert.equal(out.cut, false, `the stream was not cut: ${out.cutError}`);
    assert.equal(out.end.done, true);
    assert.equal(out.text, expected);
  }
  note(`${PHASE}: seed 004 stream: ${out.cut ? `cut (${out.cutError ?? 'no done frame'})` : 'done'}`);
  if (cut && out.cut) {
    // nothing partial stored as the answer: only the user message (once the job is failed)
    await retry('the failed job', async () => {
      const h = await api('GET', `/api/chat/sessions/${cid}/messages`, ALICE);
      assert.equal(h.status, 200, h.text);
      const roles = (h.json.messages ?? h.json).map((m) => m.role);
      assert.deepEqual(roles, ['user'], `stored messages: ${JSON.stringify(h.json).slice(0, 300)}`);
    }, 5000);
  }
  await reask('seed 004', `sse004 send ${RUN}`, out, async () => {
    const again = await retry('send', async () => {
      const r = await seed004(cid, c);
      assert.equal(r.status, 200, r.body);
      return r;
    });
    return { text: again.text, expected, cachedOk: false };
  });
};

// OpenAI-compatible SSE: parley.fcgi runs it
cases['OpenAI-compatible SSE (/v1/chat/completions)'] = async (mid) => {
  const c = body('openai completion');
  const expected = answerText(c, N);
  let seen = 0;
  const p = openaiStream(c, () => seen++);
  await retry('first text', async () => assert.ok(seen >= 1), PRE);
  await mid();
  const out = await p;
  if (dies('fcgi') || (MAY_CUT && out.cut)) {
    assert.equal(out.cut, true, `a cut stream (no [DONE]): ${JSON.stringify(out).slice(0, 300)}`);
    assert.ok(expected.startsWith(out.text), 'the text before the cut is a prefix of the answer');
  } else {
    assert.equal(out.done, true, JSON.stringify(out).slice(0, 300));
    assert.equal(out.text, expected);
  }
  note(`${PHASE}: OpenAI stream: ${out.cut ? `cut (${out.cutError ?? 'no [DONE]'})` : 'done'} (X-Parley-Cache ${out.cache})`);
  // the same request again: it may join the dead generation until its lease
  // runs out — then it must end with the error chunk `interrupted` — and
  // is answered in full after that
  const errs = [];
  await reask('OpenAI', `openai completion ${RUN}`, out, async () => {
    const end = Date.now() + WAIT;
    for (;;) {
      const r = await retry('completion', () => openaiStream(c));
      if (r.done) return { text: r.text, expected, cachedOk: !out.cut };
      assert.ok(r.error || r.status >= 500, `neither an answer nor an error: ${JSON.stringify(r).slice(0, 300)}`);
      if (r.error) {
        assert.equal(r.error.code, 'interrupted', JSON.stringify(r.error));
        errs.push(r.error.code);
      }
      assert.ok(Date.now() < end, 'OpenAI: no whole answer in time');
    }
  });
  if (errs.length) note(`${PHASE}: OpenAI: asked again, ${errs.length} error chunk(s) ${errs.join(',')} before the answer`);
};

// ---- run the phase: every case at once, one fault
const names = Object.keys(cases);
const fault = new Fault(names.length, fire);
const results = {};
for (const name of names) {
  let arrived = false;
  const mid = () => { arrived = true; return fault.arrive(); };
  results[name] = (async () => {
    try { return await cases[name](mid); } finally { if (!arrived) fault.arrive(); }
  })();
  results[name].catch(() => {});
}
fault.fired.catch(() => {});

test(`${PHASE}: the fault happened mid-stream`, T, async () => {
  await fault.fired;
  assert.equal(fault.count, names.length, 'every case had text streaming when the fault hit');
});
for (const name of names) test(`${PHASE}: ${name}`, T, async () => { await results[name]; });

test(`${PHASE}: no job is left running past its lease`, T, async () => {
  await Promise.allSettled(Object.values(results));
  // every faulted job's lease has run out by now or soon; the sweep may
  // take one more lease and a reporter period
  const end = Date.now() + (3 * LEASE_MS + 6000) * SLOW;
  let stale;
  for (;;) {
    const now = Date.now();
    stale = sql(`SELECT id || ' ' || channel || ' ' || lease_expires FROM jobs WHERE state = 'running' AND lease_expires < ${now}`);
    if (!stale || Date.now() > end) break;
    await sleep(250);
  }
  assert.equal(stale, '', `jobs still running after their lease expired (id channel lease_expires):\n${stale}`);
  // this phase's own jobs (its users; another phase may run at the same time)
  const running = sql(`SELECT count(*) FROM jobs WHERE state = 'running' AND started_by IN ('alice-${RUN}', 'bob-${RUN}')`);
  assert.equal(running, '0', 'no job of this phase runs once every case ended');
});

test(`${PHASE}: PRAGMA integrity_check is ok`, T, async () => {
  await Promise.allSettled(Object.values(results));
  assert.equal(sql('PRAGMA integrity_check'), 'ok');
});

test(`${PHASE}: every cached answer is the answer of a job that ended done`, T, async () => {
  await Promise.allSettled(Object.values(results));
  const partial = sql('SELECT a.key FROM answers a WHERE NOT EXISTS ' +
    "(SELECT 1 FROM jobs j WHERE j.prompt_key = a.key AND j.state = 'done')");
  assert.equal(partial, '', 'cached answers without a finished job');
});

test(`${PHASE}: afterwards a new user is served on every transport`, T, async () => {
  await Promise.allSettled(Object.values(results));
  const bob = jwtHS256(SECRET, `bob-${RUN}`);
  const q = (p) => `${p} after ${RUN} [[fake tokens=8 token_ms=1]]`;
  const ws = await retry('WebSocket', () => new Promise((res, rej) => {
    const w = new WebSocket(`${WS}/api/websocket/chat/${id('after')}?token=${bob}`);
    let text = '';
    w.on('open', () => w.send(JSON.stringify({ ticketBody: q('ws') })));
    w.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === 'stream') text += m.content;
      if (m.type === 'done') { w.close(); res(text); }
      if (m.type === 'error') { w.close(); rej(new Error(JSON.stringify(m))); }
    });
    w.on('error', rej);
  }));
  assert.equal(ws, answerText(q('ws'), 8));
  const lp = new LP(BASE, `/ws/${id('after')}`, { token: bob });
  await retry('poll open', () => lp.open());
  await lp.follow((m) => m.some((x) => x.type === 'connected'), PRE);
  await lp.send({ type: 'message', content: q('lp') });
  await lp.follow(lpEnded('001'));
  assert.equal(lp.chunks(), answerText(q('lp'), 8));
  const oa = await openaiStream(q('openai'), null, bob);
  assert.equal(oa.text, answerText(q('openai'), 8));
  const g = await api('GET', '/api/admin/generations', ADMIN);
  assert.equal(g.status, 200, g.text);
});
