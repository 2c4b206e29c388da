// poll-limits.mjs — the long-poll transport's bounds and its rate-limit
// identity (issue 8 defects b and c). Run by tests/integration/t0520-poll-limits.sh
// against a real web server in front of parley.fcgi (PARLEY_BASE), with
// RATE_LIMIT_MESSAGES_PER_MINUTE=LIMIT and PARLEY_JWT_SECRET=SECRET, and the
// default PARLEY_POLL_MAX_SESSIONS (32).
//
// b: POST /api/poll/{sid} took any number of frames (65,000 pings in one
//    POST: 202 accepted:65000, 49 MB of outbox); one client opened 5,000
//    sessions. Expected: at most 256 frames per POST (413), at most 256
//    frames waiting in a session's outbox (429), pings rate-limited, at
//    most 32 open sessions per user (429); a refused POST stores nothing.
// c: a session opened with its token only inside `path` (seed 001
//    "/ws/<id>?token=JWT", no Authorization header) was rate-limited as
//    ip:<addr>, so a user at the limit on another transport got more
//    messages through long-poll.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';

const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET;
const LIMIT = Number(process.env.LIMIT);
if (!BASE || !SECRET || !(LIMIT > 0)) throw new Error('PARLEY_BASE, PARLEY_JWT_SECRET, LIMIT');
const run = `${process.pid}${Date.now().toString(36)}`;
const PENDING_MAX = 256;
const POST_MAX = 256;
const SESSIONS_MAX = 32;

const b64u = (s) => Buffer.from(s).toString('base64url');
function jwt(sub) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function api(method, path, { token, json, raw } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  if (raw !== undefined) { headers['Content-Type'] = 'application/x-ndjson'; body = raw; }
  const r = await fetch(`${BASE}${path}`, { method, headers, body, signal: AbortSignal.timeout(30000) });
  const text = await r.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, text, json: parsed };
}

async function open(token, path) {
  const r = await api('POST', '/api/poll/open', { token, json: { path } });
  assert.equal(r.status, 200, r.text);
  return r.json.sid;
}

// Every frame of the session from cursor on, without waiting.
async function frames(token, sid, cursor = 0) {
  const r = await api('GET', `/api/poll/${sid}?cursor=${cursor}&wait=0`, { token });
  assert.equal(r.status, 200, r.text);
  return r.json;
}

const lines = (n, frame) => Array(n).fill(JSON.stringify(frame)).join('\n');
const unknown = { type: 'no-such-type' };      // answered with one error frame each

test('a POST of more than 256 frames is refused with 413 and stores nothing', async () => {
  const tok = jwt(`flood-${run}`);
  const sid = await open(tok, '/ws/chat/homestyle');
  const before = await frames(tok, sid);
  const r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(POST_MAX + 1, unknown) });
  assert.equal(r.status, 413, r.text);
  assert.equal(r.json?.success, false, r.text);
  assert.match(r.json.message, /frames/);
  const after = await frames(tok, sid);
  assert.equal(after.messages.length, before.messages.length, 'nothing of the refused POST was stored');
  // 65,000 pings (the probe's 1 MB body): refused the same way
  const big = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(65000, { type: 'ping', data: {} }) });
  assert.equal(big.status, 413, big.text.slice(0, 300));
  assert.equal((await frames(tok, sid)).messages.length, before.messages.length);
  // at the bound: accepted
  const ok = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(POST_MAX - before.messages.length, unknown) });
  assert.equal(ok.status, 202, ok.text);
});

test('a session holds at most 256 frames its client has not received: 429 beyond, nothing stored', async () => {
  const tok = jwt(`pending-${run}`);
  const sid = await open(tok, '/ws/chat/homestyle');
  const first = await frames(tok, sid);        // the welcome
  const w = first.messages.length;
  let r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(200, unknown) });
  assert.equal(r.status, 202, r.text);
  r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(PENDING_MAX - 200 - w + 1, unknown) });
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json?.success, false, r.text);
  assert.match(r.json.message, /outbox|not yet received/i);
  const got = await frames(tok, sid);
  assert.equal(got.messages.length, w + 200, 'nothing of the refused POST was stored');
  // the client received them: room again
  const empty = await frames(tok, sid, got.cursor);
  assert.equal(empty.messages.length, 0);
  r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: lines(PENDING_MAX - 10, unknown) });
  assert.equal(r.status, 202, r.text);
  const next = await frames(tok, sid, got.cursor);
  assert.equal(next.messages.length, PENDING_MAX - 10);
});

test('pings are rate-limited like messages', async () => {
  const tok = jwt(`pinger-${run}`);
  const sid = await open(tok, '/ws/chat/homestyle');
  for (let i = 0; i < LIMIT; i++) {
    const r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: JSON.stringify({ type: 'ping', data: {} }) });
    assert.equal(r.status, 202, `ping ${i + 1}: ${r.text}`);
  }
  const r = await api('POST', `/api/poll/${sid}`, { token: tok, raw: JSON.stringify({ type: 'ping', data: {} }) });
  assert.equal(r.status, 429, r.text);
  assert.match(r.json.message, /ping/i);
  const got = await frames(tok, sid);
  assert.equal(got.messages.filter((m) => m.type === 'pong').length, LIMIT);
});

test('a user may keep at most 32 poll sessions open: 429 beyond, others unaffected', async () => {
  const tok = jwt(`opener-${run}`);
  const sids = [];
  for (let i = 0; i < SESSIONS_MAX; i++) sids.push(await open(tok, '/ws/chat/homestyle'));
  const r = await api('POST', '/api/poll/open', { token: tok, json: { path: '/ws/chat/homestyle' } });
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json?.success, false, r.text);
  assert.match(r.json.message, /sessions/);
  // another user is not affected
  await open(jwt(`other-${run}`), '/ws/chat/homestyle');
  // closing one makes room
  const d = await api('DELETE', `/api/poll/${sids[0]}`, { token: tok });
  assert.equal(d.status, 204, d.text);
  await open(tok, '/ws/chat/homestyle');
});

test('a session opened with the token only in its path is limited as its user (one bucket with REST/SSE)', async () => {
  const sub = `ident-${run}`;
  const tok = jwt(sub);
  const h = { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' };
  // use up the user's messages over seed 004 (REST/SSE)
  const c = await fetch(`${BASE}/api/chat/sessions`, { method: 'POST', headers: h,
    body: JSON.stringify({ kind: 'sse' }), signal: AbortSignal.timeout(20000) });
  const cj = await c.json();
  assert.ok(c.ok, JSON.stringify(cj));
  for (let i = 0; i < LIMIT; i++) {
    const s = await fetch(`${BASE}/api/chat/send`, { method: 'POST', headers: h,
      body: JSON.stringify({ conversationId: cj.id, content: `s${i} ${run} [[fake tokens=1 token_ms=0]]` }),
      signal: AbortSignal.timeout(20000) });
    const text = await s.text();
    assert.equal(s.status, 200, text);
  }
  // seed 001 over long-poll, the token only inside the path (no header)
  const o = await api('POST', '/api/poll/open', { json: { path: `/ws/pl-${run}?token=${tok}` } });
  assert.equal(o.status, 200, o.text);
  const sid = o.json.sid;
  const p = await api('POST', `/api/poll/${sid}`, { token: tok, raw: JSON.stringify({ type: 'message',
    content: `p ${run} [[fake tokens=1 token_ms=0]]`, metadata: {}, timestamp: new Date().toISOString() }) });
  assert.equal(p.status, 202, p.text);
  let cursor = 0;
  const seen = [];
  const until = Date.now() + 15000;
  while (Date.now() < until) {
    const r = await api('GET', `/api/poll/${sid}?cursor=${cursor}&wait=2`, { token: tok });
    assert.equal(r.status, 200, r.text);
    seen.push(...r.json.messages);
    cursor = r.json.cursor;
    if (seen.some((m) => m.type === 'error' || m.type === 'stream_end')) break;
  }
  const end = seen.find((m) => m.type === 'error' || m.type === 'stream_end');
  assert.ok(end, JSON.stringify(seen));
  assert.equal(end.type, 'error', `the message went through: ${JSON.stringify(seen)}`);
  assert.equal(end.message, 'Rate limit exceeded', JSON.stringify(end));
});
