// anonymous.mjs — anonymous visitors (docs/anonymous.md, issue 11 item 6)
// through a real web server (PARLEY_BASE: lighttpd in front of parley.fcgi,
// WebSocket paths proxied to parley-ws) and the bridge itself (WS_DIRECT,
// for its /metrics), with PARLEY_JWT_SECRET=SECRET, PARLEY_ANONYMOUS=brand
// and RATE_LIMIT_MESSAGES_PER_MINUTE=LIMIT. Run by t0820-anonymous.sh.
// The tests run in order and share what they created (node:test runs the
// tests of one file one after the other).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { api, jwtHS256, LongPoll } from '../node/clients.mjs';

const BASE = process.env.PARLEY_BASE;
const WS = BASE && BASE.replace(/^http/, 'ws');
const DIRECT = process.env.BRIDGE_URL;
const SECRET = process.env.PARLEY_JWT_SECRET;
const LIMIT = Number(process.env.LIMIT);
if (!BASE || !DIRECT || !SECRET || !(LIMIT > 0)) throw new Error('PARLEY_BASE, BRIDGE_URL, PARLEY_JWT_SECRET, LIMIT');
const run = `${process.pid}${Date.now().toString(36)}`;

const jwt = (sub) => jwtHS256(SECRET, sub);
const USER = jwt(`alice-${run}`);

// A WebSocket client: frames in order, next(pred) waits for one.
async function connect(path, headers = {}) {
  const ws = new WebSocket(`${WS}${path}`, { headers });
  const frames = [];
  let wake = null, closed = null;
  ws.on('message', (d) => { frames.push(JSON.parse(d.toString())); if (wake) wake(); });
  ws.on('close', (code, reason) => { closed = { code, reason: reason.toString() }; if (wake) wake(); });
  ws.on('error', () => {});
  const next = async (pred, what) => {
    const until = Date.now() + 15000;
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      if (closed) throw new Error(`closed ${closed.code} ${closed.reason} before ${what}; frames ${JSON.stringify(frames)}`);
      if (Date.now() > until) throw new Error(`no ${what}; frames ${JSON.stringify(frames)}`);
      await new Promise((res) => { const t = setTimeout(res, until - Date.now()); wake = () => { clearTimeout(t); wake = null; res(); }; });
    }
  };
  const closeCode = async () => {
    const until = Date.now() + 10000;
    while (!closed && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    return closed && closed.code;
  };
  return { ws, frames, next, closeCode, send: (o) => ws.send(JSON.stringify(o)) };
}

// Opens seed 002 brand techpro (path suffix q), sends one chat; resolves with
// { welcome, conversation_id, text } or { error }.
async function brandChat(q, message, conversation_id, headers) {
  const c = await connect(`/ws/chat/techpro${q}`, headers);
  try {
    const welcome = await c.next((f) => f.type === 'welcome' || f.type === 'error', 'welcome');
    if (welcome.type === 'error') return { error: welcome.data.message };
    c.send({ type: 'chat', data: conversation_id ? { message, conversation_id } : { message } });
    let text = '', conv = null;
    for (;;) {
      const f = await c.next((x) => ['chunk', 'complete', 'error'].includes(x.type), 'answer');
      if (f.type === 'error') return { welcome, error: f.data.message, code: f.data.code };
      conv = f.data.conversation_id || conv;
      text += f.data.content || '';
      if (f.type === 'complete') return { welcome, conversation_id: conv, text };
    }
  } finally {
    c.ws.close();
  }
}

// One REST call through the web server: { status, headers, json, text }.
const http = (method, path, opts) => api(BASE, method, path, opts);

const S = {};   // shared between the tests (they run in order)
let visitorMessages = 0;

test('the ticket protocol (seed 000) still refuses a missing token: WebSocket 4401, long-poll 401', async () => {
  const c = await connect(`/api/websocket/chat/T-anon-${run}`);
  assert.equal(await c.closeCode(), 4401);
  const r = await http('POST', '/api/poll/open', { body: { path: `/api/websocket/chat/T-anon-${run}` } });
  assert.equal(r.status, 401, r.text);
  assert.equal(r.headers.get('set-cookie'), null);
  const s = await http('POST', '/api/chat/send', { body: { message: 'hi' } });
  assert.equal(s.status, 401, 'seed 004 REST');
  const t = await http('GET', `/api/tickets/T-anon-${run}/ai`);
  assert.equal(t.status, 401, 'seed 000 REST');
  // a wrong JWT on the anonymous protocol is refused, not made a visitor
  const w = await connect('/ws/chat/techpro?token=not.a.jwt');
  assert.equal(await w.closeCode(), 4401);
});

test('a brand visitor is served over WebSocket and gets a visitor token in the welcome frame', async () => {
  const a = await brandChat('', `hello from visitor A ${run}`);
  visitorMessages++;
  assert.equal(a.error, undefined, a.error);
  assert.match(a.welcome.visitor, /^v1\.[0-9a-f]{32}\.[0-9a-f]{64}$/);
  assert.match(a.conversation_id, /^[0-9a-f-]{36}$/);
  assert.ok(a.text.length > 0);
  S.tokA = a.welcome.visitor;
  S.convA = a.conversation_id;
  // with its token, the same visitor continues its conversation (no new token)
  const again = await brandChat(`?visitor=${S.tokA}`, 'and a second question', S.convA);
  visitorMessages++;
  assert.equal(again.error, undefined, again.error);
  assert.equal(again.welcome.visitor, undefined);
  assert.equal(again.conversation_id, S.convA);
});

test('a brand visitor is served over long-poll: cookie HttpOnly, SameSite=Lax; token in the open response', async () => {
  const lp = new LongPoll(BASE, '/ws/chat/techpro');
  await lp.open();
  const r = lp.opened;
  const cookie = r.headers.get('set-cookie');
  assert.match(cookie, /^parley_visitor=v1\.[0-9a-f.]+; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/);
  assert.ok(!/Secure/.test(cookie), 'plain HTTP: no Secure');
  assert.match(r.json.visitor, /^v1\./);
  assert.equal(r.headers.get('x-parley-visitor'), r.json.visitor);
  const jar = { cookie: cookie.split(';')[0] };
  S.jarB = jar;
  S.tokB = lp.visitor;
  S.sidB = lp.sid;
  lp.headers = jar;            // from now on the visitor sends its cookie back
  await lp.send({ type: 'chat', data: { message: 'long-poll visitor here' } });
  visitorMessages++;
  const got = await lp.until((m) => m.some((f) => f.type === 'complete' || f.type === 'error'));
  assert.equal(got[0].type, 'welcome');
  assert.ok(!got.some((f) => f.type === 'error'), JSON.stringify(got));
  S.convB = got.find((f) => f.type === 'complete').data.conversation_id;
  assert.ok(S.convB && S.convB !== S.convA);
  // the poll session is the visitor's: no credential, another visitor, a user: refused
  assert.equal((await http('GET', `/api/poll/${S.sidB}?cursor=0`)).status, 401);
  const other = await http('GET', `/api/poll/${S.sidB}?cursor=0`, { headers: { 'x-parley-visitor': S.tokA } });
  assert.ok(other.status === 404 || other.status === 410, `another visitor: ${other.status}`);
  const user = await http('GET', `/api/poll/${S.sidB}?cursor=0`, { headers: { authorization: `Bearer ${USER}` } });
  assert.ok(user.status === 404 || user.status === 410, `a user: ${user.status}`);
  // the header works as well as the cookie
  const hdr = await http('GET', `/api/poll/${S.sidB}?cursor=0`, { headers: { 'x-parley-visitor': S.tokB } });
  assert.equal(hdr.status, 200);
});

test("a visitor cannot continue another visitor's conversation", async () => {
  const r = await brandChat(`?visitor=${S.tokA}`, 'let me into B', S.convB);
  visitorMessages++;
  assert.equal(r.error, undefined, r.error);
  assert.notEqual(r.conversation_id, S.convB);
  assert.notEqual(r.conversation_id, S.convA);   // a new one, A's own
});

test("a user cannot take over a visitor's conversation, nor pose as a visitor", async () => {
  const r = await brandChat(`?token=${USER}`, 'taking over', S.convA);
  assert.equal(r.error, undefined, r.error);
  assert.equal(r.welcome.visitor, undefined);
  assert.notEqual(r.conversation_id, S.convA);
  S.convU = r.conversation_id;
  // a JWT naming the visitor's id is refused
  const idA = S.tokA.split('.')[1];
  const forged = await connect(`/ws/chat/techpro?token=${jwt(`anon:${idA}`)}`);
  assert.equal(await forged.closeCode(), 4401);
  // a forged visitor token (A's id, B's MAC) is not A: a new visitor is issued
  const fake = `v1.${idA}.${S.tokB.split('.')[2]}`;
  const f = await brandChat(`?visitor=${fake}`, 'am I A?', S.convA);
  visitorMessages++;
  assert.match(f.welcome.visitor, /^v1\./);
  assert.notEqual(f.welcome.visitor.split('.')[1], idA);
  assert.notEqual(f.conversation_id, S.convA);
});

test("a visitor cannot reach a user's conversation or poll session", async () => {
  const r = await brandChat(`?visitor=${S.tokA}`, "into the user's conversation", S.convU);
  visitorMessages++;
  assert.equal(r.error, undefined, r.error);
  assert.notEqual(r.conversation_id, S.convU);
  const o = await http('POST', '/api/poll/open', { headers: { authorization: `Bearer ${USER}` }, body: { path: '/ws/chat/techpro' } });
  assert.equal(o.status, 200, o.text);
  assert.equal(o.json.visitor, undefined);
  assert.equal(o.headers.get('set-cookie'), null);
  const g = await http('GET', `/api/poll/${o.json.sid}?cursor=0`, { headers: S.jarB });
  assert.ok(g.status === 404 || g.status === 410, `visitor on a user's session: ${g.status}`);
  // the seed 001 REST (not anonymous) stays closed to a visitor
  assert.equal((await http('GET', '/api/chat/sessions', { headers: S.jarB })).status, 401);
});

test('the metrics count anonymous visitors (parley.fcgi and the bridge)', async () => {
  const m = await http('GET', '/api/metrics', { headers: { authorization: `Bearer ${jwtHS256(SECRET, `ops-${run}`, { role: 'admin' })}` } });
  assert.equal(m.status, 200);
  const val = (text, name) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    assert.ok(line, `${name} missing`);
    return Number(line.split(' ')[1]);
  };
  assert.ok(val(m.text, 'parley_anonymous_conversations') >= 4);
  assert.equal(val(m.text, 'parley_anonymous_messages_total'), visitorMessages);
  assert.equal(val(m.text, 'parley_anonymous_poll_sessions'), 1);
  const b = await (await fetch(`${DIRECT}/metrics`)).text();
  assert.equal(val(b, 'parley_ws_anonymous_connections_total'), 5);   // A twice, A, the forged token, A
  assert.equal(val(b, 'parley_ws_anonymous_visitors_issued_total'), 2);  // A, the forged token's
  assert.equal(val(b, 'parley_ws_anonymous_messages_total'), visitorMessages - 1);  // one was long-poll
  assert.ok(!b.includes('anon:'), 'no visitor id in the bridge metrics');
});

test('visitors are rate-limited per client address, whatever their identity', async () => {
  // every visitor message so far came from 127.0.0.1: fresh visitors (new
  // identities each) are refused once the address's bucket is full
  let served = 0, limited = null;
  for (let i = 0; i < LIMIT + 1 && !limited; i++) {
    const r = await brandChat('', `fresh visitor ${i}`);
    assert.match(r.welcome.visitor, /^v1\./);
    if (r.error) limited = r;
    else served++;
  }
  assert.ok(limited, 'no fresh visitor was ever limited');
  assert.equal(limited.error, 'Rate limit exceeded');
  assert.equal(served + visitorMessages, LIMIT, `served ${served} after ${visitorMessages}`);
  // a user has a bucket of its own
  const u = await brandChat(`?token=${USER}`, 'still served');
  assert.equal(u.error, undefined, u.error);
});
