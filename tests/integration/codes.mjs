// codes.mjs — protocol errors as data (docs/errors.md) through a real web
// server, run by t0840-codes.sh once per setup with a JWT secret and
// RATE_LIMIT_MESSAGES_PER_MINUTE=3. Every error frame and REST error must
// carry its documented code beside the message; checked over WebSocket (the
// bridge behind the server's proxy), long-poll (parley.fcgi) and REST / SSE.
// The simulated LLM's failure knobs ([[fake status=503]], error_after) make
// the upstream fail before and after text.
//
//   BASE=http://127.0.0.1:PORT SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/codes.mjs
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { connect, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const MAX = 5000;          // MAX_MESSAGE_LENGTH's default
const LIMIT = 3;          // RATE_LIMIT_MESSAGES_PER_MINUTE in t0840-codes.sh

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(sub) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function api(method, path, token, { body, raw, type } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined || raw !== undefined) headers['content-type'] = type || 'application/json';
  const r = await fetch(`${BASE}${path}`, { method, headers,
    body: raw !== undefined ? raw : body !== undefined ? JSON.stringify(body) : undefined });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text, type: r.headers.get('content-type') || '' };
}

// A REST error: the status, {success:false, message, code}.
function restError(r, status, code) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.success, false, r.text);
  assert.equal(typeof r.json.message, 'string', r.text);
  assert.equal(r.json.code, code, r.text);
}

class Poll {
  constructor(path, token) { this.path = path; this.token = token; this.cursor = 0; this.msgs = []; }
  async open() {
    const r = await api('POST', '/api/poll/open', this.token, { body: { path: this.path } });
    assert.equal(r.status, 200, r.text);
    this.sid = r.json.sid;
    return this;
  }
  async sendRaw(text) {
    const r = await api('POST', `/api/poll/${this.sid}`, this.token, { raw: text, type: 'text/plain' });
    assert.equal(r.status, 202, r.text);
  }
  send(frame) { return this.sendRaw(JSON.stringify(frame)); }
  async until(pred, ms = 15000 * SLOW) {
    const t0 = Date.now();
    while (!pred(this.msgs)) {
      assert.ok(Date.now() - t0 < ms, `long-poll timeout; got ${JSON.stringify(this.msgs).slice(0, 2000)}`);
      const r = await api('GET', `/api/poll/${this.sid}?cursor=${this.cursor}&wait=5`, this.token);
      assert.equal(r.status, 200, r.text);
      this.msgs.push(...r.json.messages);
      this.cursor = r.json.cursor;
    }
    return this.msgs;
  }
}
const has = (type) => (msgs) => msgs.some((m) => m.type === type);
const lastOf = (type, msgs) => msgs.filter((m) => m.type === type).at(-1);
const endOfTicket = (m) => has('done')(m) || has('error')(m);

async function ws(path, token) {
  return connect(`${WS}${path}${path.includes('?') ? '&' : '?'}token=${token}`);
}

// One seed 000 question over WebSocket on a fresh ticket; its frames.
async function ticketWs(token, ticket, body) {
  const c = await ws(`/api/websocket/chat/${ticket}`, token);
  c.ws.send(JSON.stringify({ ticketBody: body }));
  const msgs = await c.until(endOfTicket, 15000 * SLOW);
  c.ws.close();
  return msgs;
}

// One seed 000 question over long-poll on a fresh ticket; its frames.
async function ticketLp(token, ticket, body) {
  const p = await new Poll(`/api/websocket/chat/${ticket}`, token).open();
  await p.send({ ticketBody: body });
  return p.until(endOfTicket);
}

// Seed 004: a conversation of user token's, then the send's SSE frames.
async function sseConv(token) {
  const c = await api('POST', '/api/chat/sessions', token, { body: { kind: 'sse' } });
  assert.ok(c.status === 200 || c.status === 201, c.text);
  return c.json.id || c.json.session_id || c.json.conversationId;
}
function sseFrames(text) {
  return text.split('\n').filter((l) => l.startsWith('data:')).map((l) => JSON.parse(l.slice(5)));
}

test('rate_limited: the 4th question of a minute, over WebSocket, long-poll and REST', async () => {
  // WebSocket (seed 000): LIMIT answered, then refused
  const tw = jwt(`rl-ws-${RUN}`);
  for (let i = 0; i < LIMIT; i++) {
    const m = await ticketWs(tw, `RLW-${RUN}-${i}`, `rate ${RUN} ws ${i} [[fake tokens=1 token_ms=0]]`);
    assert.ok(has('done')(m), JSON.stringify(m));
  }
  const m = await ticketWs(tw, `RLW-${RUN}-x`, `rate ${RUN} ws x`);
  assert.deepEqual(m, [{ type: 'error', message: 'Rate limit exceeded', code: 'rate_limited' }]);
  // the same user over REST (the limit is the user's, across transports)
  const conv = await sseConv(tw);
  restError(await api('POST', '/api/chat/send', tw, { body: { conversationId: conv, content: 'one more' } }),
    429, 'rate_limited');
  // long-poll (seed 000), another user
  const tl = jwt(`rl-lp-${RUN}`);
  for (let i = 0; i < LIMIT; i++) {
    const n = await ticketLp(tl, `RLL-${RUN}-${i}`, `rate ${RUN} lp ${i} [[fake tokens=1 token_ms=0]]`);
    assert.ok(has('done')(n), JSON.stringify(n));
  }
  const n = await ticketLp(tl, `RLL-${RUN}-x`, `rate ${RUN} lp x`);
  assert.deepEqual(n, [{ type: 'error', message: 'Rate limit exceeded', code: 'rate_limited' }]);
});

test('too_long: MAX_MESSAGE_LENGTH + 1 characters, over WebSocket, long-poll and REST', async () => {
  const tok = jwt(`long-${RUN}`);
  const long = 'é'.repeat(MAX + 1);          // characters, not bytes
  // WebSocket, seed 001
  const c = await ws(`/ws/long-${RUN}`, tok);
  await c.until(has('connected'));
  c.ws.send(JSON.stringify({ type: 'message', content: long }));
  const e = lastOf('error', await c.until(has('error')));
  assert.deepEqual(e, { type: 'error', message: `Message too long (max ${MAX} characters)`, code: 'too_long' });
  c.ws.close();
  // WebSocket, seed 002
  const b = await ws('/ws/chat/techpro', tok);
  await b.until(has('welcome'));
  b.ws.send(JSON.stringify({ type: 'chat', data: { message: long } }));
  const be = lastOf('error', await b.until(has('error')));
  assert.deepEqual(be, { type: 'error', data: { message: `Message too long (max ${MAX} characters)`, code: 'too_long' } });
  b.ws.close();
  // long-poll, seed 000
  const n = await ticketLp(tok, `LONG-${RUN}`, long);
  assert.deepEqual(n, [{ type: 'error', message: `ticketBody too long: ${MAX + 1} characters (max ${MAX})`,
    code: 'too_long' }]);
  // REST, seed 004: refused before the stream, 400
  const conv = await sseConv(tok);
  const r = await api('POST', '/api/chat/send', tok, { body: { conversationId: conv, content: long } });
  restError(r, 400, 'too_long');
  assert.match(r.json.message, /too long/);
});

test('upstream_unavailable / upstream_error: the upstream down, or failing mid-answer', async () => {
  const tok = jwt(`up-${RUN}`);
  // WebSocket, seed 001: 503 before any token
  const c = await ws(`/ws/up-${RUN}`, tok);
  await c.until(has('connected'));
  c.ws.send(JSON.stringify({ type: 'message', content: `down ${RUN} [[fake status=503]]` }));
  const e = lastOf('error', await c.until(has('error'), 20000 * SLOW));
  assert.equal(e.code, 'upstream_unavailable', JSON.stringify(e));
  assert.match(e.message, /503/);
  assert.equal(typeof e.message_id, 'string', 'the error names the answer it ends');
  c.ws.close();
  // long-poll, seed 000: 503, then failing after two tokens
  const n = await ticketLp(tok, `DOWN-${RUN}`, `down ${RUN} lp [[fake status=503]]`);
  const ne = lastOf('error', n);
  assert.equal(ne?.code, 'upstream_unavailable', JSON.stringify(n));
  assert.match(ne.message, /503/);
  const cut = await ticketLp(tok, `CUT-${RUN}`, `cut ${RUN} lp [[fake tokens=6 error_after=2 token_ms=1]]`);
  assert.ok(has('stream')(cut), 'text streamed before the failure');
  assert.equal(lastOf('error', cut)?.code, 'upstream_error', JSON.stringify(cut));
  // REST, seed 004 (SSE): the error frame in the stream (another user: the
  // three questions above are this minute's limit)
  const t2 = jwt(`up2-${RUN}`);
  const conv = await sseConv(t2);
  const r = await api('POST', '/api/chat/send', t2,
    { body: { conversationId: conv, content: `down ${RUN} sse [[fake status=503]]` } });
  assert.equal(r.status, 200, r.text);
  const last = sseFrames(r.text).at(-1);
  assert.equal(last.done, true, r.text);
  assert.equal(typeof last.error, 'string', r.text);
  assert.equal(last.code, 'upstream_unavailable', r.text);
});

test('bad_input: a bad JSON frame over WebSocket and long-poll, a bad JSON body over REST', async () => {
  const tok = jwt(`bad-${RUN}`);
  // WebSocket, seed 002
  const b = await ws('/ws/chat/techpro', tok);
  await b.until(has('welcome'));
  b.ws.send('{"type":"chat",');
  const be = lastOf('error', await b.until(has('error')));
  assert.deepEqual(be, { type: 'error', data: { message: 'Invalid JSON', code: 'bad_input' } });
  b.ws.close();
  // long-poll, seed 001
  const p = await new Poll(`/ws/bad-${RUN}`, tok).open();
  await p.until(has('connected'));
  await p.sendRaw('{"type":"message",');
  const pe = lastOf('error', await p.until(has('error')));
  assert.deepEqual(pe, { type: 'error', message: 'Invalid message format: not valid JSON', code: 'bad_input' });
  // REST
  restError(await api('POST', '/api/chat/send', tok, { raw: '{"conversationId":' }), 400, 'bad_input');
});

test('REST: an unknown route, a missing token and an unknown session carry not_found, unauthorized, not_found', async () => {
  const tok = jwt(`rest-${RUN}`);
  restError(await api('GET', '/api/no-such-route', tok), 404, 'not_found');
  restError(await api('GET', '/api/chat/sessions', null), 401, 'unauthorized');
  restError(await api('GET', `/api/chat/sessions/${randomUUID()}`, tok), 404, 'not_found');
});
