// api-suite.mjs — the FastCGI API end to end through a real web server.
//
// Run by tests/integration/t0100-api.sh once per server setup (Apache +
// mod_fcgid, Apache + mod_proxy_fcgi, lighttpd), with:
//   PARLEY_BASE     http://127.0.0.1:PORT   (the web server)
//   FAKE_LLM_URL    the simulated LLM the app talks to (stats, answers)
//   PARLEY_JWT_SECRET  the secret the app was started with ("" = open mode)
//   PARLEY_SETUP    a name for the test titles
// Only loopback; every wait is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';

const BASE = process.env.PARLEY_BASE;
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.PARLEY_JWT_SECRET || '';
const SETUP = process.env.PARLEY_SETUP || 'server';
if (!BASE || !FAKE) throw new Error('PARLEY_BASE and FAKE_LLM_URL must be set');

const b64u = (b) => Buffer.from(b).toString('base64url');
export function jwt(sub, { exp = Math.floor(Date.now() / 1000) + 3600, secret = SECRET, alg = 'HS256' } = {}) {
  const head = b64u(JSON.stringify({ alg, typ: 'JWT' }));
  const body = b64u(JSON.stringify(exp === null ? { sub } : { sub, exp }));
  const sig = alg === 'none' ? '' : createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const ALICE = SECRET ? jwt('alice') : '';
const BOB = SECRET ? jwt('bob') : '';
const auth = (tok) => (tok ? { Authorization: `Bearer ${tok}` } : {});

async function api(method, path, { body, token = ALICE, headers = {}, raw } = {}) {
  const h = { ...auth(token), ...headers };
  let payload;
  if (raw !== undefined) payload = raw;
  else if (body !== undefined) { payload = JSON.stringify(body); h['Content-Type'] = 'application/json'; }
  const res = await fetch(BASE + path, { method, headers: h, body: payload, signal: AbortSignal.timeout(20000) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

async function fakeAnswer(prompt, tokens) {
  const r = await fetch(`${FAKE}/_fake/answer`, { method: 'POST', body: JSON.stringify({ prompt, tokens }) });
  return (await r.json()).text;
}
async function fakeTotal() {
  return (await (await fetch(`${FAKE}/_fake/stats`)).json()).total;
}

// The seed 004 client's own reading loop (fetch + reader + split on blank
// lines + JSON.parse of each data: line), kept as the seed wrote it, with
// receive timestamps recorded.
async function seed004Send(conversationId, content, token = ALICE) {
  const res = await fetch(`${BASE}/api/chat/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...auth(token) },
    body: JSON.stringify({ conversationId, content }),
    signal: AbortSignal.timeout(30000),
  });
  const out = { status: res.status, text: '', events: [], times: [], parseErrors: 0 };
  if (!res.body || res.status !== 200) { out.body = await res.text(); return out; }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    const chunk = decoder.decode(value);
    const lines = chunk.split('\n\n');
    for (const line of lines) {
      if (line.startsWith('data: ')) {
        let json;
        try { json = JSON.parse(line.substring(6)); } catch { out.parseErrors++; continue; }
        out.events.push(json);
        out.times.push(Date.now());
        if (json.content) out.text += json.content;
      }
    }
  }
  return out;
}

// Follows a long-poll session until the seed 000 "done"/"error" frame.
// With dropSecond, the second poll's response is thrown away as if it had
// been lost on the way, and the client polls again from the same cursor:
// the server must send those frames again (nothing lost, nothing doubled).
async function pollUntilDone(sid, { token = ALICE, cursor = 0, dropSecond = false } = {}) {
  const frames = [];
  let dropped = false;
  let polls = 0;
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const res = await fetch(`${BASE}/api/poll/${sid}?cursor=${cursor}&wait=5`, { headers: auth(token) });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    polls++;
    if (dropSecond && polls === 2 && !dropped) { dropped = true; continue; }
    for (const m of body.messages) frames.push(m);
    assert.ok(body.cursor >= cursor);
    cursor = body.cursor;
    if (frames.some((f) => f.type === 'done' || f.type === 'error')) break;
  }
  return { frames, cursor, dropped };
}

// Starts a poll and aborts it mid-wait (the client went away); returns
// once the abort happened.
async function abortedPoll(sid, cursor, token = ALICE) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 150);
  try {
    await fetch(`${BASE}/api/poll/${sid}?cursor=${cursor}&wait=5`, { headers: auth(token), signal: ctl.signal });
    return false;
  } catch { return ctl.signal.aborted; } finally { clearTimeout(t); }
}

async function openPoll(path, token = ALICE) {
  const r = await api('POST', '/api/poll/open', { body: { path }, token });
  assert.equal(r.status, 200, r.text);
  assert.equal(typeof r.json.sid, 'string');
  assert.equal(r.json.cursor, 0);
  return r.json.sid;
}

const uniq = () => randomUUID().slice(0, 8);

test(`${SETUP}: health answers JSON`, async () => {
  const r = await api('GET', '/api/health');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, 'ok');
  assert.equal(r.json.database, 'ok');
});

test(`${SETUP}: seed 004 send streams with the seed's own reader and stores both messages`, async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse', title: 'seed 004' } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  const content = `Hello from seed 004 ${uniq()} [[fake tokens=30 token_ms=5]]`;
  const want = await fakeAnswer(content, 30);
  const out = await seed004Send(id, content);
  assert.equal(out.status, 200, out.body);
  assert.equal(out.parseErrors, 0);
  assert.equal(out.text, want);
  const last = out.events[out.events.length - 1];
  assert.equal(last.done, true);
  const msgs = await api('GET', `/api/chat/sessions/${id}/messages`);
  assert.equal(msgs.status, 200, msgs.text);
  const roles = msgs.json.messages.map((m) => m.role);
  assert.deepEqual(roles, ['user', 'assistant']);
  assert.equal(msgs.json.messages[1].content, want);
});

test(`${SETUP}: SSE streaming is incremental, not bunched at the end`, async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse' } });
  const out = await seed004Send(c.json.id, `slow ${uniq()} [[fake tokens=20 token_ms=50]]`);
  assert.equal(out.status, 200, out.body);
  const contentTimes = out.times.filter((_, i) => out.events[i].content);
  assert.ok(contentTimes.length >= 10, `only ${contentTimes.length} content events arrived separately`);
  const span = contentTimes[contentTimes.length - 1] - contentTimes[0];
  assert.ok(span >= 500, `tokens arrived within ${span} ms: the response was buffered`);
  const end = contentTimes[contentTimes.length - 1];
  const early = contentTimes.filter((t) => end - t > 300).length;
  assert.ok(early >= 5, `only ${early} events arrived more than 300 ms before the end`);
});

test(`${SETUP}: long-poll follows a ticket exactly once and in order, across a dropped poll`, async () => {
  const ticket = `lp-${uniq()}`;
  // 2.5 s of streaming: the answer spans several polls even when mod_fcgid
  // holds a GET for its 1 s busy-retry on a loaded machine (seen once at
  // token_ms=20: the first poll got the whole answer and none was dropped).
  const body = `Printer jams ${ticket} [[fake tokens=25 token_ms=100]]`;
  const want = await fakeAnswer(body, 25);
  const sid = await openPoll(`/api/websocket/chat/${ticket}`);
  assert.ok(await abortedPoll(sid, 0), 'the first poll should still be waiting when aborted');
  const p = await api('POST', `/api/poll/${sid}`, { raw: JSON.stringify({ ticketBody: body }) });
  assert.equal(p.status, 202, p.text);
  const { frames, dropped } = await pollUntilDone(sid, { dropSecond: true });
  assert.ok(dropped);
  const types = frames.map((f) => f.type);
  assert.equal(types[types.length - 1], 'done');
  assert.ok(types.slice(0, -1).every((t) => t === 'stream'), types.join(','));
  assert.equal(frames.filter((f) => f.type === 'stream').map((f) => f.content).join(''), want);
  // the same ticket and body again: the cached answer, then done
  const sid2 = await openPoll(`/api/websocket/chat/${ticket}`);
  await api('POST', `/api/poll/${sid2}`, { raw: JSON.stringify({ ticketBody: body }) });
  const again = await pollUntilDone(sid2);
  assert.deepEqual(again.frames.map((f) => f.type), ['cached', 'done']);
  assert.equal(again.frames[0].response, want);
  const d = await api('DELETE', `/api/poll/${sid}`);
  assert.equal(d.status, 204);
  const gone = await api('GET', `/api/poll/${sid}?cursor=0&wait=0`);
  assert.equal(gone.status, 410);
});

test(`${SETUP}: two long-poll clients and one SSE client share one upstream call`, async () => {
  const ticket = `share-${uniq()}`;
  // 3 s of streaming: long enough that the second client's POST reaches the
  // app while the answer still streams, even when mod_fcgid holds it for its
  // 1 s busy-retry on a loaded machine (seen once at token_ms=30: the second
  // client then got the cached answer instead of joining).
  const body = `Shared ${ticket} [[fake tokens=30 token_ms=100]]`;
  const want = await fakeAnswer(body, 30);
  const before = await fakeTotal();
  const a = await openPoll(`/api/websocket/chat/${ticket}`);
  const b = await openPoll(`/api/websocket/chat/${ticket}`);
  const msg = JSON.stringify({ ticketBody: body });
  const [pa, pb] = await Promise.all([
    api('POST', `/api/poll/${a}`, { raw: msg }),
    api('POST', `/api/poll/${b}`, { raw: msg }),
  ]);
  assert.equal(pa.status, 202);
  assert.equal(pb.status, 202);
  // the SSE client joins the running generation
  const sse = (async () => {
    const res = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, { headers: auth(ALICE), signal: AbortSignal.timeout(30000) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /text\/event-stream/);
    const text = await res.text();
    const frames = text.split('\n\n').filter((e) => e.includes('data: '))
      .map((e) => JSON.parse(e.split('\n').find((l) => l.startsWith('data: ')).slice(6)));
    return frames;
  })();
  const [ra, rb, rs] = await Promise.all([pollUntilDone(a), pollUntilDone(b), sse]);
  const textOf = (fr) => fr.filter((f) => f.type === 'stream').map((f) => f.content).join('');
  assert.equal(textOf(ra.frames), want);
  assert.equal(textOf(rb.frames), want);
  assert.ok(rs.some((f) => f.type === 'done' || f.type === 'cached'));
  const sseText = rs.some((f) => f.type === 'cached') ? rs.find((f) => f.type === 'cached').response : textOf(rs);
  assert.equal(sseText, want);
  assert.equal((await fakeTotal()) - before, 1);
  const info = await api('GET', `/api/tickets/${ticket}/ai`);
  assert.equal(info.status, 200);
  assert.equal(info.json.status, 'cached');
  assert.equal(info.json.response, want);
});

test(`${SETUP}: SSE resumes after Last-Event-ID`, async () => {
  const ticket = `resume-${uniq()}`;
  const body = `Resume ${ticket} [[fake tokens=12 token_ms=5]]`;
  const sid = await openPoll(`/api/websocket/chat/${ticket}`);
  await api('POST', `/api/poll/${sid}`, { raw: JSON.stringify({ ticketBody: body }) });
  await pollUntilDone(sid);
  const res = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, { headers: { ...auth(ALICE), 'Last-Event-ID': '0' } });
  const text = await res.text();
  const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  assert.ok(ids.length >= 2);
  const mid = ids[Math.floor(ids.length / 2)];
  const res2 = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream?after=${mid}`, { headers: auth(ALICE) });
  const ids2 = [...(await res2.text()).matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  assert.deepEqual(ids2, ids.filter((i) => i > mid));
  const end = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, { headers: { ...auth(ALICE), 'Last-Event-ID': String(ids[ids.length - 1]) } });
  assert.equal(end.status, 204);
});

test(`${SETUP}: upstream failure mid-stream is a JSON data line and nothing is cached`, async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse' } });
  const out = await seed004Send(c.json.id, `fail ${uniq()} [[fake tokens=10 error_after=3]]`);
  assert.equal(out.status, 200);
  assert.equal(out.parseErrors, 0);
  const last = out.events[out.events.length - 1];
  assert.equal(last.done, true);
  assert.match(last.error, /upstream/);
  const msgs = await api('GET', `/api/chat/sessions/${c.json.id}/messages`);
  assert.deepEqual(msgs.json.messages.map((m) => m.role), ['user']);
  const ticket = `down-${uniq()}`;
  const sid = await openPoll(`/api/websocket/chat/${ticket}`);
  await api('POST', `/api/poll/${sid}`, { raw: JSON.stringify({ ticketBody: `x [[fake status=503]]` }) });
  const { frames } = await pollUntilDone(sid);
  assert.equal(frames[frames.length - 1].type, 'error');
  assert.match(frames[frames.length - 1].message, /503/);
  const info = await api('GET', `/api/tickets/${ticket}/ai`);
  assert.equal(info.json.status, 'none');
});

test(`${SETUP}: bad input gets the right status and a clear message`, async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse' } });
  const id = c.json.id;
  const cases = [
    ['invalid JSON', api('POST', '/api/chat/send', { raw: '{"conversationId":', headers: { 'Content-Type': 'application/json' } }), 400],
    ['wrong type', api('POST', '/api/chat/send', { body: { conversationId: id, content: 42 } }), 400],
    ['missing field', api('POST', '/api/chat/send', { body: { conversationId: id } }), 400],
    ['too long', api('POST', '/api/chat/send', { body: { conversationId: id, content: 'x'.repeat(5001) } }), 400],
    ['unknown conversation', api('POST', '/api/chat/send', { body: { conversationId: randomUUID(), content: 'hi' } }), 404],
    ['unknown route', api('GET', '/api/nope'), 404],
    ['unknown poll', api('GET', `/api/poll/${randomUUID()}?cursor=0&wait=0`), 410],
    ['bad cursor', api('GET', `/api/poll/${randomUUID()}?cursor=-1`), 400],
    ['no protocol at path', api('POST', '/api/poll/open', { body: { path: '/nowhere' } }), 404],
    ['bad ticket id', api('GET', '/api/tickets/bad%20id/ai'), 400],
  ];
  for (const [name, p, status] of cases) {
    const r = await p;
    assert.equal(r.status, status, `${name}: ${r.status} ${r.text}`);
    assert.equal(r.json?.success, false, `${name}: ${r.text}`);
    assert.equal(typeof r.json.message, 'string', name);
    assert.ok(r.json.message.length > 3, name);
  }
  // a too-long ticket body over long-poll is the protocol's error frame
  const sid = await openPoll(`/api/websocket/chat/long-${uniq()}`);
  await api('POST', `/api/poll/${sid}`, { raw: JSON.stringify({ ticketBody: 'y'.repeat(5001) }) });
  const r = await api('GET', `/api/poll/${sid}?cursor=0&wait=2`);
  assert.equal(r.json.messages[0].type, 'error');
  assert.match(r.json.messages[0].message, /too long/);
  // nothing was stored for the rejected sends
  const msgs = await api('GET', `/api/chat/sessions/${id}/messages`);
  assert.equal(msgs.json.total, 0);
});

test(`${SETUP}: long-poll closes like a WebSocket would (unknown brand: error, then close 1008)`, async () => {
  const sid = await openPoll('/ws/chat/no-such-brand');
  const r = await api('GET', `/api/poll/${sid}?cursor=0&wait=2`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.messages[0].type, 'error');
  assert.match(r.json.messages[0].data.message, /not found or inactive/);
  assert.equal(r.json.closed, true);
  assert.equal(r.json.close_code, 1008);
  const post = await api('POST', `/api/poll/${sid}`, { raw: JSON.stringify({ type: 'ping', data: {} }) });
  assert.equal(post.status, 410);
});

test(`${SETUP}: JWT: bad, expired, alg none and another user's ids`, { skip: !SECRET && 'open mode' }, async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse' } });
  for (const [name, tok] of [['expired', jwt('alice', { exp: 1000 })], ['bad signature', jwt('alice', { secret: 'other' })],
    ['alg none', jwt('alice', { alg: 'none' })], ['garbage', 'abc.def']]) {
    const r = await api('GET', '/api/chat/sessions', { token: tok });
    assert.equal(r.status, 401, `${name}: ${r.text}`);
    assert.equal(r.json.success, false);
  }
  const none = await api('GET', '/api/chat/sessions', { token: '' });
  assert.equal(none.status, 401);
  const foreign = await api('GET', `/api/chat/sessions/${c.json.id}`, { token: BOB });
  assert.equal(foreign.status, 404);
  const send = await api('POST', '/api/chat/send', { body: { conversationId: c.json.id, content: 'hi' }, token: BOB });
  assert.equal(send.status, 404);
});

test(`${SETUP}: the 31st message in a minute is rate limited`, async () => {
  const who = SECRET ? jwt(`rl-${uniq()}`) : ALICE;
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse' }, token: who });
  let limited = null;
  for (let i = 1; i <= 31 && !limited; i++) {
    const out = await seed004Send(c.json.id, `m${i} [[fake tokens=1 token_ms=0]]`, who);
    if (out.status === 429) limited = { i, body: out.body };
    else assert.equal(out.status, 200, out.body);
  }
  assert.ok(limited, 'never limited');
  assert.ok(limited.i <= 31, `limited at ${limited.i}`);
  assert.match(JSON.parse(limited.body).message, /Rate limit/);
});
