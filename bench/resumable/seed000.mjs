// seed000.mjs — Parley's other resumable transport, for bench/resumable.sh:
// a seed 000 ticket answer (docs/protocol-000.md) through the same lighttpd
// (WebSocket paths proxied to the bridge, SSE to parley.fcgi), resumed by
// position instead of replayed from the start:
//
//   ws-reload   WebSocket ?seq=1, the body sent, closed after K tokens;
//               reopened with ?seq=1&after=<last seq>: exactly the rest
//   sse-reload  the answer started over WebSocket (that tab then closes);
//               GET /api/tickets/{id}/ai/stream read for K tokens, dropped,
//               and GET again with Last-Event-ID (as EventSource does):
//               exactly the rest, then 204 for the next reconnect
//   sse-tab     a WebSocket tab reads the answer; an SSE tab joins after K
//   done        after the answer: GET …/ai/stream -> the cached answer + done;
//               a WebSocket reopened with the same body -> cached
//
//   node bench/resumable/seed000.mjs --base URL --token JWT [--tokens 100]
//        [--token-ms 50] [--k 20] [--run TAG]
// One JSON line per scenario, like scenarios.mjs (side "parley-seed000").
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { answerText } from '../../tests/fake-llm/answer.mjs';

const arg = (n, d) => { const i = process.argv.indexOf(`--${n}`); return i > 0 ? process.argv[i + 1] : d; };
const BASE = arg('base');
const TOKEN = arg('token', '');
const TOKENS = Number(arg('tokens', '100'));
const TOKEN_MS = Number(arg('token-ms', '50'));
const K = Number(arg('k', '20'));
const RUN = arg('run', `s${process.pid}`);
const STREAM_MS = TOKENS * TOKEN_MS + 30000;
const WSBASE = BASE.replace(/^http/, 'ws');
const now = () => Number(process.hrtime.bigint() / 1000000n);
const out = (o) => console.log(JSON.stringify({ side: 'parley-seed000', ...o }));
const q = (name) => `${name} seed000 ${RUN} [[fake tokens=${TOKENS} token_ms=${TOKEN_MS}]]`;

// A WebSocket viewer: collects frames; resolves `ended` on done/error/close.
function wsOpen(tid, query = '') {
  const ws = new WebSocket(`${WSBASE}/api/websocket/chat/${tid}?token=${TOKEN}&seq=1${query}`);
  const v = { ws, frames: [], text: '', lastSeq: null, tFirst: null, t0: now(), onStream: null };
  v.opened = new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  v.ended = new Promise((res) => {
    ws.on('message', (m) => {
      const f = JSON.parse(m.toString());
      v.frames.push(f);
      if (f.seq != null) v.lastSeq = f.seq;
      if (f.type === 'stream') {
        if (v.tFirst === null) v.tFirst = now() - v.t0;
        v.text += f.content;
        if (v.onStream) v.onStream(v);
      }
      if (f.type === 'done' || f.type === 'error' || f.type === 'cached') {
        if (f.type === 'cached') v.text = f.response;
        if (f.type !== 'cached') res(f.type);
      }
    });
    ws.on('close', () => res('closed'));
    ws.on('error', () => res('error'));
  });
  return v;
}
const timeoutP = (p, ms) => Promise.race([p, sleep(ms).then(() => 'hang')]);
const streams = (v) => v.frames.filter((f) => f.type === 'stream').length;

// An SSE reader of GET …/ai/stream; stops after `stopAfter` stream events
// (then aborts, like a reload) or at the end.
async function sse(tid, lastEventId, stopAfter = Infinity, onEvent = null) {
  const ac = new AbortController();
  const t0 = now();
  const headers = { authorization: `Bearer ${TOKEN}` };
  if (lastEventId != null) headers['last-event-id'] = String(lastEventId);
  const r = await fetch(`${BASE}/api/tickets/${tid}/ai/stream`, { headers, signal: ac.signal });
  const res = { status: r.status, text: '', n: 0, lastId: lastEventId, frames: [], end: null, tFirst: null };
  if (r.status !== 200) { res.end = `HTTP ${r.status}`; res.body = (await r.text().catch(() => '')).slice(0, 160); return res; }
  const dec = new TextDecoder();
  let buf = '';
  const until = t0 + STREAM_MS;
  const it = r.body[Symbol.asyncIterator]();
  for (;;) {
    const left = until - now();
    if (left <= 0) { res.end = 'hang'; ac.abort(); return res; }
    let x;
    try { x = await Promise.race([it.next(), sleep(left).then(() => ({ timeout: true }))]); } catch (e) { res.end = `error: ${e.message}`; return res; }
    if (x.timeout) continue;
    if (x.done) { res.end = res.end ?? 'closed'; return res; }
    buf += dec.decode(x.value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let data = null;
      let id = null;
      for (const line of ev.split('\n')) {
        if (line.startsWith('data: ')) data = line.slice(6);
        else if (line.startsWith('id: ')) id = Number(line.slice(4));
      }
      if (data === null) continue;
      if (id !== null) res.lastId = id;
      const f = JSON.parse(data);
      res.frames.push(f);
      if (f.type === 'stream') {
        if (res.tFirst === null) res.tFirst = now() - t0;
        res.text += f.content; res.n++;
        if (onEvent) onEvent(f);
        if (res.n >= stopAfter) { res.end = 'dropped'; ac.abort(); return res; }
      } else if (f.type === 'cached') res.text = f.response;
      else if (f.type === 'done' || f.type === 'error') res.end = f.type;
    }
  }
}

async function wsReload() {
  const tid = `wsr-${RUN}`;
  const text = q('ws-reload');
  const expected = answerText(text, TOKENS);
  const a = wsOpen(tid);
  await a.opened;
  let stopAt;
  const kth = new Promise((r) => { stopAt = r; });
  a.onStream = (v) => { if (streams(v) === K) stopAt(); };
  a.ws.send(JSON.stringify({ ticketBody: text }));
  await timeoutP(kth, STREAM_MS);
  a.onStream = null;
  const seen = a.text;
  const after = a.lastSeq;
  a.ws.terminate();
  const t0 = now();
  const b = wsOpen(tid, `&after=${after}`);
  const end = await timeoutP(b.ended, STREAM_MS);
  b.ws.close();
  const ok = seen + b.text === expected;
  out({ scenario: 'ws-reload', outcome: end === 'done' && ok ? 'complete' : end === 'hang' ? 'hang' : end === 'done' ? 'partial' : 'error',
    ok, before_chars: seen.length, after_chars: b.text.length, expected_chars: expected.length,
    first_token_ms: b.tFirst, end_ms: now() - t0, end });
}

async function sseReload() {
  const tid = `sser-${RUN}`;
  const text = q('sse-reload');
  const expected = answerText(text, TOKENS);
  const a = wsOpen(tid);
  await a.opened;
  let first;
  const gotFirst = new Promise((r) => { first = r; });
  a.onStream = () => first();
  a.ws.send(JSON.stringify({ ticketBody: text }));
  await timeoutP(gotFirst, STREAM_MS);
  a.ws.terminate();                                   // that tab is gone
  const s1 = await sse(tid, null, K);
  const t0 = now();
  const s2 = await sse(tid, s1.lastId);
  const s3 = await sse(tid, s2.lastId);               // EventSource reconnects once more
  const ok = s1.text + s2.text === expected;
  out({ scenario: 'sse-reload', outcome: s2.end === 'done' && ok ? 'complete' : s2.end === 'hang' ? 'hang' : s2.end === 'done' ? 'partial' : 'error',
    ok, first_status: s1.status, first_body: s1.body, before_chars: s1.text.length, after_chars: s2.text.length, expected_chars: expected.length,
    last_event_id: s1.lastId, first_token_ms: s2.tFirst, end_ms: now() - t0, end: s2.end, next_reconnect: s3.end });
}

async function sseTab() {
  const tid = `sset-${RUN}`;
  const text = q('sse-tab');
  const expected = answerText(text, TOKENS);
  const a = wsOpen(tid);
  await a.opened;
  const arrivals = [];
  let join;
  const joinP = new Promise((r) => { join = r; });
  a.onStream = (v) => { arrivals.push([now(), null]); if (streams(v) === K) join(); };
  a.ws.send(JSON.stringify({ ticketBody: text }));
  await timeoutP(joinP, STREAM_MS);
  let n2 = 0;
  const s = await sse(tid, null, Infinity, () => { if (arrivals[n2]) arrivals[n2][1] = now(); n2++; });
  const end = await timeoutP(a.ended, STREAM_MS);
  a.ws.close();
  const lags = arrivals.slice(K + 2).filter((x) => x[1] !== null).map((x) => x[1] - x[0]).sort((x, y) => x - y);
  const ok = a.text === expected && s.text === expected;
  out({ scenario: 'sse-tab', outcome: s.end === 'done' && s.text === expected ? 'complete' : s.end === 'hang' ? 'hang' : 'partial',
    ok, tab1: end, tab2_first_token_ms: s.tFirst,
    tab2_lag_ms: { p50: lags[Math.floor(lags.length / 2)] ?? null, max: lags.at(-1) ?? null } });
}

async function done() {
  const tid = `ssed-${RUN}`;
  const text = q('done');
  const expected = answerText(text, TOKENS);
  const a = wsOpen(tid);
  await a.opened;
  a.ws.send(JSON.stringify({ ticketBody: text }));
  const end = await timeoutP(a.ended, STREAM_MS);
  a.ws.close();
  await sleep(500);
  const t0 = now();
  const s = await sse(tid, null);
  const sseMs = now() - t0;
  const b = wsOpen(tid);
  await b.opened;
  b.ws.send(JSON.stringify({ ticketBody: text }));
  const bEnd = await timeoutP(b.ended, 10000);
  b.ws.close();
  const cachedSse = s.frames.find((f) => f.type === 'cached');
  const cachedWs = b.frames.find((f) => f.type === 'cached');
  const ok = a.text === expected && cachedSse?.response === expected && cachedWs?.response === expected;
  out({ scenario: 'done', outcome: ok ? 'cached answer + done' : 'other', ok, first: end,
    sse: `${s.status} ${cachedSse ? 'cached' : s.frames.map((f) => f.type).join(',')} then ${s.end}`, sse_ms: sseMs,
    ws: `${cachedWs ? 'cached' : b.frames.map((f) => f.type).join(',')} then ${bEnd}` });
}

for (const [name, f] of [['ws-reload', wsReload], ['sse-reload', sseReload], ['sse-tab', sseTab], ['done', done]]) {
  try { await f(); } catch (e) { out({ scenario: name, outcome: 'error', ok: false, exception: String(e.stack ?? e).split('\n').slice(0, 3).join(' | ') }); }
}
process.exit(0);
