// rate-ident.mjs — one rate-limit bucket per user, whole subject, on every
// transport (issue 8 defect d). Run by tests/integration/t0510-rate-ident.sh
// against a real parley-ws (WS_URL, ws://) and a real web server in front
// of parley.fcgi (PARLEY_BASE, http://), both on one database, with
// RATE_LIMIT_MESSAGES_PER_MINUTE=LIMIT and PARLEY_JWT_SECRET=SECRET.
//
// The bridge used to key its buckets "user:%.70s" (FastCGI "user:%.120s"):
// two users sharing a 70-byte prefix shared one bucket over WebSocket, and
// one user with a longer subject had one bucket on WebSocket and another on
// REST/SSE.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import WebSocket from 'ws';

const WS = process.env.WS_URL;
const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET;
const LIMIT = Number(process.env.LIMIT);
if (!WS || !BASE || !SECRET || !(LIMIT > 0)) throw new Error('WS_URL, PARLEY_BASE, PARLEY_JWT_SECRET, LIMIT');
const run = `${process.pid}${Date.now().toString(36)}`;
let uniq = 0;

const b64u = (s) => Buffer.from(s).toString('base64url');
function jwt(sub) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
// A subject of exactly len bytes: prefix, padding, then the tail.
function subject(prefix, tail, len) {
  return prefix + 'x'.repeat(len - prefix.length - tail.length) + tail;
}

// Seed 001 over WebSocket: opens /ws/<id>, sends n messages one after the
// other; resolves with 'ok' or 'limited' for each.
async function wsSend(token, n) {
  const ws = new WebSocket(`${WS}/ws/rl-${run}-${++uniq}?token=${token}`);
  const frames = [];
  let wake = null;
  ws.on('message', (d) => { frames.push(JSON.parse(d.toString())); if (wake) wake(); });
  await new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); });
  const next = async (pred) => {
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      await new Promise((res, rej) => {
        const t = setTimeout(() => rej(new Error(`no frame; got ${JSON.stringify(frames)}`)), 15000);
        wake = () => { clearTimeout(t); wake = null; res(); };
      });
    }
  };
  const out = [];
  for (let i = 0; i < n; i++) {
    ws.send(JSON.stringify({ type: 'message', content: `m${i} ${run} [[fake tokens=1 token_ms=0]]`,
      metadata: {}, timestamp: new Date().toISOString() }));
    const f = await next((m) => m.type === 'stream_end' || m.type === 'error');
    if (f.type === 'error') assert.equal(f.message, 'Rate limit exceeded', JSON.stringify(f));
    out.push(f.type === 'error' ? 'limited' : 'ok');
  }
  ws.close();
  return out;
}

// Seed 004 over REST/SSE: one conversation, n sends; 'ok' or 'limited' each.
async function sseSend(token, n) {
  const h = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  const c = await fetch(`${BASE}/api/chat/sessions`, { method: 'POST', headers: h,
    body: JSON.stringify({ kind: 'sse' }), signal: AbortSignal.timeout(20000) });
  const cj = await c.json();
  assert.ok(c.ok, JSON.stringify(cj));
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${BASE}/api/chat/send`, { method: 'POST', headers: h,
      body: JSON.stringify({ conversationId: cj.id, content: `s${i} ${run} [[fake tokens=1 token_ms=0]]` }),
      signal: AbortSignal.timeout(20000) });
    const text = await r.text();
    if (r.status === 429) {
      assert.match(JSON.parse(text).message, /Rate limit/);
      out.push('limited');
    } else {
      assert.equal(r.status, 200, text);
      assert.match(text, /"done": *true/);
      out.push('ok');
    }
  }
  return out;
}

const oks = (n) => Array(n).fill('ok');

test('two subjects sharing a 80-byte prefix have a bucket each over WebSocket', async () => {
  const prefix = `rl-${run}-`.padEnd(80, 'p');
  const a = jwt(subject(prefix, '-alice', 90));
  const b = jwt(subject(prefix, '-bob', 90));
  assert.deepEqual(await wsSend(a, LIMIT), oks(LIMIT));
  assert.deepEqual(await wsSend(b, LIMIT), oks(LIMIT), 'bob was limited by alice\'s messages');
  assert.deepEqual(await wsSend(a, 1), ['limited']);
});

test('two subjects sharing a 120-byte prefix (127 bytes long) have a bucket each over WebSocket', async () => {
  const prefix = `rl-${run}-`.padEnd(120, 'q');
  const a = jwt(subject(prefix, '-carol', 127));
  const b = jwt(subject(prefix, '-dave', 127));
  assert.deepEqual(await wsSend(a, LIMIT), oks(LIMIT));
  assert.deepEqual(await wsSend(b, LIMIT), oks(LIMIT), 'dave was limited by carol\'s messages');
  assert.deepEqual(await wsSend(a, 1), ['limited']);
});

test('a 90-byte subject has one bucket for WebSocket and REST/SSE together', async () => {
  const who = jwt(subject(`rl-${run}-erin-`, '-e', 90));
  const first = LIMIT - 1;
  assert.deepEqual(await wsSend(who, first), oks(first));
  assert.deepEqual(await sseSend(who, 2), ['ok', 'limited'], 'SSE had a bucket of its own');
  assert.deepEqual(await wsSend(who, 1), ['limited']);
});

test('and the other way round: REST/SSE first, then WebSocket', async () => {
  const who = jwt(subject(`rl-${run}-frank-`, '-f', 95));
  const first = LIMIT - 1;
  assert.deepEqual(await sseSend(who, first), oks(first));
  assert.deepEqual(await wsSend(who, 2), ['ok', 'limited'], 'WebSocket had a bucket of its own');
});

test('a 120-byte subject (over 100 bytes: a hashed key) has one bucket for WebSocket and REST/SSE', async () => {
  const who = jwt(subject(`rl-${run}-grace-`, '-g', 120));
  const first = LIMIT - 1;
  assert.deepEqual(await wsSend(who, first), oks(first));
  assert.deepEqual(await sseSend(who, 2), ['ok', 'limited'], 'SSE had a bucket of its own');
  assert.deepEqual(await wsSend(who, 1), ['limited']);
});
