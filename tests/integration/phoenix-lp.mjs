// phoenix-lp.mjs — seed 003 over Phoenix LongPoll, driven by the OFFICIAL
// phoenix client (npm "phoenix", pinned in package.json) through a real web
// server in front of parley.fcgi (t0600-phoenix.sh starts it). Node 20 has
// no XMLHttpRequest: phoenix.js 1.8 then uses fetch, which Node has.
// Env: PARLEY_BASE (http://127.0.0.1:PORT), PARLEY_JWT_SECRET, PARLEY_FAKE_URL
// (the simulated LLM, for what it last received; the server's database holds
// the article "Fuser error E52" that t0600 imported).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { Socket, LongPoll } from 'phoenix';

const BASE = process.env.PARLEY_BASE;
const FAKE = process.env.PARLEY_FAKE_URL || '';
const SECRET = process.env.PARLEY_JWT_SECRET || '';

function jwt(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// A socket of user `sub` forced onto LongPoll (the seed's connect params).
function connect(sub, extra = {}) {
  const params = { user_id: sub };
  if (SECRET) params.auth_token = jwt(sub);
  const socket = new Socket(`${BASE.replace(/^http/, 'ws')}/socket`, {
    transport: LongPoll, params, timeout: 15000, ...extra,
  });
  socket.connect();
  return socket;
}

function join(channel) {
  return new Promise((resolve, reject) => {
    channel.join().receive('ok', resolve).receive('error', reject)
      .receive('timeout', () => reject(new Error('join timeout')));
  });
}

// The next `event` on channel (payload), within ms.
function next(channel, event, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { channel.off(event, ref); reject(new Error(`no ${event}`)); }, ms);
    const ref = channel.on(event, (p) => { clearTimeout(timer); channel.off(event, ref); resolve(p); });
  });
}

// Collects a stream: stream_start, the tokens, stream_complete.
function collectStream(channel, ms = 20000) {
  return new Promise((resolve, reject) => {
    let text = '', start = null;
    const refs = [];
    const done = (err, v) => {
      clearTimeout(timer);
      channel.off('stream_start', refs[0]); channel.off('stream_token', refs[1]);
      channel.off('stream_complete', refs[2]); channel.off('stream_error', refs[3]);
      err ? reject(err) : resolve(v);
    };
    const timer = setTimeout(() => done(new Error('stream did not complete')), ms);
    refs.push(channel.on('stream_start', (p) => { start = p; }));
    refs.push(channel.on('stream_token', (p) => { text += p.token; }));
    refs.push(channel.on('stream_complete', () => done(null, { start, text })));
    refs.push(channel.on('stream_error', (p) => done(new Error(`stream_error ${p.error}`))));
  });
}

const sid = () => `t-${randomUUID()}`;

test('join, query (llm then cache), stream_query, get_history, ping', { timeout: 60000 }, async () => {
  const socket = connect('alice');
  try {
    const ch = socket.channel(`proxy:${sid()}`, { user_id: 'alice' });
    assert.deepEqual(await join(ch), {});
    const q = `How to implement JWT authentication? ${randomUUID()} [[fake tokens=6 token_ms=5]]`;
    let got = next(ch, 'response');
    ch.push('query', { query: q, temperature: 0.7, metadata: { context_type: 'programming' } });
    const r1 = await got;
    assert.equal(r1.metadata.source, 'llm');
    assert.ok(r1.response.length > 0);
    assert.equal(r1.metadata.rag_context_used, 0);
    assert.equal(r1.metadata.confidence_score, null);
    assert.equal(typeof r1.metadata.processing_time_ms, 'number');
    assert.equal(typeof r1.metadata.model_used, 'string');
    assert.match(r1.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);

    got = next(ch, 'response');
    ch.push('query', { query: `  ${q.toUpperCase().replace('[[FAKE TOKENS=6 TOKEN_MS=5]]', '[[fake tokens=6 token_ms=5]]')}`, temperature: 0.7 });
    const r2 = await got;
    assert.equal(r2.metadata.source, 'cache');
    assert.equal(r2.response, r1.response);

    const s = collectStream(ch);
    ch.push('stream_query', { query: `Explain machine learning ${randomUUID()} [[fake tokens=8 token_ms=5]]` });
    const st = await s;
    assert.ok(st.start && st.start.query.startsWith('Explain machine learning'));
    assert.ok(st.text.length > 0);

    got = next(ch, 'history');
    ch.push('get_history');
    const h = await got;
    assert.equal(h.messages.length, 6);
    assert.deepEqual(h.messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']);
    assert.equal(h.messages[1].content, r1.response);
    assert.equal(h.messages[5].content, st.text);

    got = next(ch, 'pong');
    ch.push('ping');
    assert.ok((await got).timestamp);

    got = next(ch, 'error');
    ch.push('query', { query: 'x', temperature: 9 });
    assert.equal((await got).error, 'invalid_temperature');
  } finally {
    socket.disconnect();
  }
});

test('a query grounded in the knowledge base: rag_context_used, confidence, the passage upstream', { timeout: 60000, skip: !FAKE && 'PARLEY_FAKE_URL not set' }, async () => {
  const socket = connect('alice');
  try {
    const ch = socket.channel(`proxy:${sid()}`, {});
    await join(ch);
    const q = `Printer shows fuser error E52 ${randomUUID()} [[fake tokens=4 token_ms=5]]`;
    const got = next(ch, 'response');
    ch.push('query', { query: q });
    const r = await got;
    assert.equal(r.metadata.source, 'llm');
    assert.equal(r.metadata.rag_context_used, 1);
    assert.equal(typeof r.metadata.confidence_score, 'number');
    assert.ok(r.metadata.confidence_score > 0 && r.metadata.confidence_score <= 1);
    const stats = await (await fetch(`${FAKE}/_fake/stats`)).json();
    const body = stats.last_body || {};
    const system = body.system ||
      (body.messages || []).filter((m) => m.role === 'system').map((m) => m.content).join('\n');
    assert.ok(system.includes('[1] Fuser error E52 (printers.md)'), `system: ${system}`);
    assert.ok(system.includes('Error E52 means the fuser unit overheated'), `system: ${system}`);
  } finally {
    socket.disconnect();
  }
});

test('leave and rejoin; two topics on one socket', { timeout: 60000 }, async () => {
  const socket = connect('alice');
  try {
    const id = sid();
    const ch = socket.channel(`proxy:${id}`, {});
    await join(ch);
    await new Promise((resolve) => ch.leave().receive('ok', resolve));
    const again = socket.channel(`proxy:${id}`, {});
    await join(again);
    const a = socket.channel(`proxy:${sid()}`, {});
    await join(a);
    const sa = collectStream(a), rb = next(again, 'response');
    a.push('stream_query', { query: `topic a ${randomUUID()} [[fake tokens=5 token_ms=5]]` });
    again.push('query', { query: `topic b ${randomUUID()} [[fake tokens=5 token_ms=5]]` });
    const [s1, r1] = await Promise.all([sa, rb]);
    assert.ok(s1.text.length > 0);
    assert.equal(r1.metadata.source, 'llm');
  } finally {
    socket.disconnect();
  }
});

test("another user's session is refused at join", { timeout: 30000, skip: !SECRET && 'open mode: one user' }, async () => {
  const alice = connect('alice'), bob = connect('bob');
  try {
    const id = sid();
    await join(alice.channel(`proxy:${id}`, {}));
    await assert.rejects(join(bob.channel(`proxy:${id}`, {})), (e) => e.reason === 'unauthorized');
  } finally {
    alice.disconnect();
    bob.disconnect();
  }
});

// The raw LongPoll contract, for what the client never sends.
async function lp(method, token, { body, type } = {}) {
  const qs = new URLSearchParams({ vsn: '2.0.0' });
  if (SECRET) qs.set('auth_token', jwt('alice'));
  if (token) qs.set('token', token);
  const r = await fetch(`${BASE}/socket/longpoll?${qs}`, {
    method, body, headers: type ? { 'Content-Type': type } : {},
  });
  const text = await r.text();
  return { http: r.status, type: r.headers.get('content-type'), cache: r.headers.get('cache-control'), json: text ? JSON.parse(text) : null };
}

test('LongPoll contract: 410 + token, 204, NDJSON POST, bad frames, 101 lines, gone, methods', { timeout: 60000 }, async () => {
  const first = await lp('GET');
  assert.equal(first.http, 200);
  assert.equal(first.type, 'application/json; charset=utf-8');
  assert.equal(first.cache, 'no-store');
  assert.equal(first.json.status, 410);
  assert.deepEqual(first.json.messages, []);
  const t = first.json.token;
  assert.match(t, /^[0-9a-f-]{36}$/);

  const id = sid();
  const lines = [
    `["1","1","proxy:${id}","phx_join",{}]`,
    'not json',
    '["1","2","proxy:nope"',
    '{"not":"an array"}',
    `["1","3","proxy:${id}","ping"]`,
    `["9","4","room:x","phx_join",{}]`,
    `["1","5","proxy:other-${id}","ping",{}]`,
    `[null,"6","phoenix","heartbeat",{}]`,
  ];
  const p = await lp('POST', t, { body: lines.join('\r\n'), type: 'application/x-ndjson' });
  assert.deepEqual(p.json, { status: 200 });
  const g = await lp('GET', t);
  assert.equal(g.json.status, 200);
  const frames = g.json.messages.map((m) => { assert.equal(typeof m, 'string'); return JSON.parse(m); });
  assert.deepEqual(frames, [
    ['1', '1', `proxy:${id}`, 'phx_reply', { status: 'ok', response: {} }],
    ['1', '3', `proxy:${id}`, 'phx_reply', { status: 'error', response: { reason: 'malformed message', code: 'bad_input' } }],
    [null, '4', 'room:x', 'phx_reply', { status: 'error', response: { reason: 'unmatched topic', code: 'not_found' } }],
    [null, '5', `proxy:other-${id}`, 'phx_reply', { status: 'error', response: { reason: 'unmatched topic', code: 'not_found' } }],
    [null, '6', 'phoenix', 'phx_reply', { status: 'ok', response: {} }],
  ]);

  // 101 lines: the first 100 handled, the 101st ignored (as Phoenix)
  const many = Array.from({ length: 101 }, (_, i) => `[null,"h${i}","phoenix","heartbeat",{}]`);
  assert.deepEqual((await lp('POST', t, { body: many.join('\n'), type: 'application/x-ndjson' })).json, { status: 200 });
  const g2 = await lp('GET', t);
  assert.equal(g2.json.messages.length, 100);
  assert.equal(JSON.parse(g2.json.messages[99])[1], 'h99');

  // a plain POST is one frame
  assert.deepEqual((await lp('POST', t, { body: '[null,"x","phoenix","heartbeat",{}]', type: 'text/plain' })).json, { status: 200 });
  assert.equal((await lp('GET', t)).json.messages.length, 1);

  // nothing: 204 after the window
  const t0 = Date.now();
  const idle = await lp('GET', t);
  assert.equal(idle.json.status, 204);
  assert.ok(Date.now() - t0 >= 1500, 'waited the window');

  // gone sessions
  assert.deepEqual((await lp('POST', '00000000-0000-4000-8000-000000000000', { body: '[]' })).json, { status: 410 });
  const fresh = await lp('GET', 'nope');
  assert.equal(fresh.json.status, 410);
  assert.notEqual(fresh.json.token, t);

  for (const m of ['PUT', 'DELETE', 'PATCH']) {
    const r = await fetch(`${BASE}/socket/longpoll`, { method: m });
    assert.equal(r.status, 400, m);
  }
});

// A session's next GET may start waiting at once, from what its last
// answer watched (fcgi/phx_longpoll.c), only when none of that moved since.
// Here session a streams an answer and reads it, then stops polling while
// the rest of the stream is appended: a's next GET must answer those
// frames at once (it must win the race against an idle session's GET sent
// just before it, which waits the whole window), not at its window's end.
test('frames appended between two GETs come with the next GET at once', { timeout: 30000 }, async () => {
  const ndjson = 'application/x-ndjson';
  const a = (await lp('GET')).json.token;
  const id = sid();
  const q = `Explain long polling ${randomUUID()} [[fake tokens=5 token_ms=100]]`;
  const lines = [`["1","1","proxy:${id}","phx_join",{}]`, JSON.stringify(['1', '2', `proxy:${id}`, 'stream_query', { query: q }])];
  assert.deepEqual((await lp('POST', a, { body: lines.join('\n'), type: ndjson })).json, { status: 200 });
  const seen = [];
  for (let i = 0; i < 20 && !seen.includes('stream_token'); i++)
    for (const m of (await lp('GET', a)).json.messages) seen.push(JSON.parse(m)[3]);
  assert.ok(seen.includes('stream_token'), seen.join());
  assert.ok(!seen.includes('stream_complete'), `the stream is still running: ${seen.join()}`);
  await new Promise((r) => setTimeout(r, 1000));     // the rest of it is appended meanwhile

  const c = (await lp('GET')).json.token;
  const idle = lp('GET', c).then((r) => ({ who: 'idle', r }));
  const mine = lp('GET', a).then((r) => ({ who: 'a', r }));
  const first = await Promise.race([idle, mine]);
  assert.equal(first.who, 'a', "a's GET answered before an idle session's GET sent earlier");
  assert.equal(first.r.json.status, 200);
  const events = first.r.json.messages.map((m) => JSON.parse(m)[3]);
  assert.equal(events.at(-1), 'stream_complete', events.join());
  assert.equal((await idle).r.json.status, 204);
});

test('headers: X-Phoenix-Longpoll-Token, X-Phoenix-AuthToken, OPTIONS under the Origin allow-list', { timeout: 30000 }, async () => {
  // the JWT in X-Phoenix-AuthToken only (no auth_token param): a new session
  const hdr = SECRET ? { 'X-Phoenix-AuthToken': jwt('alice') } : {};
  const first = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0`, { headers: hdr });
  const j = await first.json();
  assert.equal(j.status, 410);
  const t = j.token;
  // the session token in X-Phoenix-Longpoll-Token only; a POST with no JWT
  // at all acts for the session's owner (phoenix.js sends the header on GETs only)
  const p = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0`, {
    method: 'POST', headers: { 'X-Phoenix-Longpoll-Token': t, 'Content-Type': 'application/x-ndjson' },
    body: '[null,"hh1","phoenix","heartbeat",{}]',
  });
  assert.deepEqual(await p.json(), { status: 200 });
  // header first: a wrong ?token= beside it is not read
  const g = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0&token=00000000-0000-4000-8000-000000000000`,
    { headers: { ...hdr, 'X-Phoenix-Longpoll-Token': t } });
  const gj = await g.json();
  assert.equal(gj.status, 200);
  assert.equal(gj.token, t);
  assert.deepEqual(JSON.parse(gj.messages[0]), [null, 'hh1', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  if (SECRET) {
    const bad = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0`, { headers: { 'X-Phoenix-AuthToken': 'bad' } });
    assert.deepEqual(await bad.json(), { status: 403 });
  }

  // OPTIONS as Phoenix answers it, for an allowed Origin (t0600 sets PARLEY_ALLOWED_ORIGINS)
  const o = await fetch(`${BASE}/socket/longpoll`, {
    method: 'OPTIONS',
    headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'GET',
               'Access-Control-Request-Headers': 'x-phoenix-authtoken, content-type' },
  });
  assert.equal(o.status, 200);
  assert.equal(o.headers.get('access-control-allow-headers'), 'x-phoenix-authtoken, content-type');
  assert.equal(o.headers.get('access-control-allow-methods'), 'get, post, options');
  assert.equal(o.headers.get('access-control-max-age'), '3600');
  assert.equal(o.headers.get('access-control-allow-origin'), 'https://app.example');
  assert.equal(await o.text(), '');
  const evil = await fetch(`${BASE}/socket/longpoll`, {
    method: 'OPTIONS', headers: { Origin: 'https://evil.example', 'Access-Control-Request-Headers': 'content-type' },
  });
  assert.equal(evil.status, 403);
  await evil.text();
});

test("the client's authToken option (X-Phoenix-AuthToken on LongPoll): join, query, ping", { timeout: 30000 }, async () => {
  const socket = new Socket(`${BASE.replace(/^http/, 'ws')}/socket`, {
    transport: LongPoll, timeout: 15000, ...(SECRET ? { authToken: jwt('alice') } : {}),
  });
  socket.connect();
  try {
    const ch = socket.channel(`proxy:${sid()}`, {});
    assert.deepEqual(await join(ch), {});
    const got = next(ch, 'response');
    ch.push('query', { query: `authToken ${randomUUID()} [[fake tokens=3 token_ms=5]]` });
    assert.equal((await got).metadata.source, 'llm');
    const pong = next(ch, 'pong');
    ch.push('ping');
    assert.ok((await pong).timestamp);
  } finally {
    socket.disconnect();
  }
});

test('a refused connect is status 403', { timeout: 20000, skip: !SECRET && 'open mode' }, async () => {
  const r = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0&auth_token=bad`);
  assert.deepEqual(await r.json(), { status: 403 });
});
