// sec-ids.mjs — another user's objects by id (issue 13, item 3): with
// PARLEY_JWT_SECRET set, users alice and bob; bob names alice's objects on
// every transport and gets 404 or a refusal, never her data, and none of
// his requests changes, stops or deletes anything of hers. Run by
// t0950-sec-ids.sh through lighttpd (the shipped snippet) in front of
// parley.fcgi, WebSocket paths proxied to parley-ws.
//
//   seed 001 session   REST (GET, messages, DELETE, export, reaction on her
//                      message, the list), WebSocket /ws/<id> (4404),
//                      Parley long-poll open on /ws/<id> (error frame),
//                      stop by REST and a stop frame naming her message_id
//   seed 004           POST /api/chat/send (SSE) on her conversation: 404
//   AI SDK chat        POST /api/ai-sdk/chat with her chat id: 404; the
//                      resume stream GET .../{id}/stream: nothing of hers
//   poll session       GET, POST, DELETE /api/poll/<her sid>: 404/410, hers
//                      still works afterwards
//   Phoenix topic      join of proxy:<her session> over WebSocket and over
//                      LongPoll: error "unauthorized"
//   Phoenix LongPoll   GET with her LongPoll token and his JWT: a new session
//   token              of his (410, another token), her frames not taken;
//                      POST with her token and his JWT: refused, her
//                      session unharmed
//   OpenAI             no stored completions: GET /v1/chat/completions/<id>
//                      is 404/405, nothing listed
//
// The simulated LLM's request log (FAKE_LLM_URL/_fake/requests) is the
// witness of what reached the upstream: nothing bob sent on alice's objects.
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/sec-ids.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { Socket, LongPoll as PhxLongPoll } from 'phoenix';
import { answerText } from '../fake-llm/answer.mjs';
import { api as apiCall, connect, jwtHS256, LongPoll, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
if (!BASE || !FAKE || !SECRET) throw new Error('BASE, FAKE_LLM_URL and SECRET are required');
const WS = BASE.replace(/^http/, 'ws');
const RUN = process.env.RUN || `r${process.pid}`;
const T = { timeout: 60000 * SLOW };

const A = `alice-${RUN}`;
const B = `bob-${RUN}`;
const ALICE = jwtHS256(SECRET, A);
const BOB = jwtHS256(SECRET, B);
const api = (method, path, opts) => apiCall(BASE, method, path, opts);
const has = (type) => (msgs) => msgs.some((m) => m.type === type);
const frame = (msgs, type) => msgs.find((m) => m.type === type);
const chatText = (msgs) => msgs.filter((m) => m.type === 'stream_chunk').map((m) => m.content).join('');
const notFound = (r, what) => assert.ok(r.status === 404 || r.status === 410,
  `${what}: ${r.status} ${r.text?.slice(0, 300)}`);

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.includes(tag));
}
async function closeOf(c, ms = 5000 * SLOW) {
  return Promise.race([c.closed, sleep(ms).then(() => null)]);
}
// Nothing of alice's: neither her tag nor her answer's text in a reply.
function nothingOf(text, tag, what) {
  assert.ok(!String(text).includes(tag), `${what} shows alice's data: ${String(text).slice(0, 300)}`);
}

// ---- seed 001: a session with one answered message, then a slow one ------

test('seed 001 session: bob gets 404 on REST, 4404 on WebSocket, an error on long-poll; his stops stop nothing', T, async () => {
  const sid = `s1-${RUN}`;
  const tag = `sid-${RUN}-s1`;
  const q1 = `${tag} first question [[fake tokens=6 token_ms=1]]`;
  const a = await connect(`${WS}/ws/${sid}?token=${ALICE}`);
  assert.equal(frame(await a.until(has('connected')), 'connected').user_id, A);
  a.ws.send(JSON.stringify({ type: 'message', content: q1 }));
  const m1 = await a.until((m) => has('stream_end')(m) || has('error')(m));
  assert.equal(chatText(m1), answerText(q1, 6));
  const h = await api('GET', `/api/chat/sessions/${sid}/messages`, { token: ALICE });
  assert.equal(h.status, 200, h.text);
  const hist = h.json.messages ?? h.json;
  const mid = hist.find((x) => x.role === 'assistant').message_id;
  assert.ok(mid, 'her assistant message has an id');

  // REST by id
  for (const p of [`/api/chat/sessions/${sid}`, `/api/chat/sessions/${sid}/messages`]) {
    const r = await api('GET', p, { token: BOB });
    assert.equal(r.status, 404, `GET ${p}: ${r.status} ${r.text}`);
    nothingOf(r.text, tag, p);
  }
  const ex = await api('POST', '/api/chat/export', { token: BOB, body: { session_id: sid } });
  assert.equal(ex.status, 404, `export: ${ex.text}`);
  nothingOf(ex.text, tag, 'export');
  const re = await api('POST', `/api/chat/sessions/${sid}/messages/${mid}/reactions`,
    { token: BOB, body: { helpful: false } });
  assert.equal(re.status, 404, `reaction on her message: ${re.text}`);
  const list = await api('GET', '/api/chat/sessions', { token: BOB });
  assert.equal(list.status, 200, list.text);
  assert.ok(!list.json.sessions.some((s) => s.session_id === sid), 'her session in his list');
  const del = await api('DELETE', `/api/chat/sessions/${sid}`, { token: BOB });
  assert.equal(del.status, 404, `DELETE: ${del.text}`);

  // WebSocket and Parley long-poll on her session id
  const c = await connect(`${WS}/ws/${sid}?token=${BOB}`);
  const end = await closeOf(c);
  assert.equal(end?.code, 4404, `WebSocket: ${JSON.stringify(end)} ${JSON.stringify(c.msgs)}`);
  assert.equal(frame(c.msgs, 'error')?.message, 'Session not found');
  assert.ok(!c.msgs.some((x) => x.type === 'connected' || x.type === 'history'), JSON.stringify(c.msgs));
  const lp = new LongPoll(BASE, `/ws/${sid}`, { token: BOB });
  await lp.open();
  const lm = await lp.until(has('error'));
  assert.equal(frame(lm, 'error').message, 'Session not found');
  assert.ok(!lm.some((x) => x.type === 'connected'), JSON.stringify(lm));
  nothingOf(JSON.stringify(lm), tag, 'long-poll');
  // what he sends there reaches nobody
  const p = await fetch(`${BASE}/api/poll/${lp.sid}`, { method: 'POST',
    headers: { authorization: `Bearer ${BOB}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'message', content: `${tag}-bob-lp hi` }) });
  assert.ok([202, 404, 410].includes(p.status), `post on the refused session: ${p.status}`);

  // a slow answer of hers; his stops (REST, and a stop frame naming her
  // message on his own session) must not end it
  const q2 = `${tag} slow one [[fake tokens=300 token_ms=10]]`;
  a.ws.send(JSON.stringify({ type: 'message', content: q2 }));
  const chunks = (m) => m.filter((x) => x.type === 'stream_chunk').length;
  const before = chunks(m1); // m1 is the connection's message array, growing
  await a.until((m) => chunks(m) >= before + 3);
  const st = await api('POST', `/api/chat/sessions/${sid}/stop`, { token: BOB });
  assert.ok(st.status === 404 || st.status === 403, `REST stop: ${st.status} ${st.text}`);
  const own = await connect(`${WS}/ws/own-${RUN}?token=${BOB}`);
  await own.until(has('connected'));
  const running = await api('GET', `/api/chat/sessions/${sid}/messages`, { token: ALICE });
  const rl = running.json.messages ?? running.json;
  const slowMid = rl.filter((x) => x.role === 'assistant').at(-1)?.message_id;
  for (const m of [mid, slowMid].filter(Boolean)) {
    own.ws.send(JSON.stringify({ type: 'stop', message_id: m }));
  }
  await own.until((m) => m.filter((x) => x.type === 'error').length >= 1);
  own.ws.close();
  const fq = (await fakeRequests(`${tag} slow one`)).at(-1);
  assert.ok(fq, 'her slow question reached the upstream');
  assert.equal(fq.ended_at, null, 'still streaming after his stops');
  // she stops it herself: it ends, marked stopped (the stops above were refused, not lost)
  a.ws.send(JSON.stringify({ type: 'stop' }));
  const fin = await a.until((m) => m.filter((x) => x.type === 'stream_end').length >= 2);
  assert.equal(fin.filter((x) => x.type === 'stream_end').at(-1).metadata?.stopped, true);
  a.ws.close();
  // her session is whole: 4 messages, hers
  const after = await api('GET', `/api/chat/sessions/${sid}`, { token: ALICE });
  assert.equal(after.status, 200, after.text);
  const ah = await api('GET', `/api/chat/sessions/${sid}/messages`, { token: ALICE });
  assert.deepEqual((ah.json.messages ?? ah.json).map((x) => x.role), ['user', 'assistant', 'user', 'assistant']);
  assert.equal((await fakeRequests(`${tag}-bob`)).length, 0, 'nothing of bob reached the upstream');
});

// ---- seed 004 (SSE) and the AI SDK chat --------------------------------------

test('seed 004 conversation: bob sending on her conversation id over SSE gets 404, nothing streamed', T, async () => {
  const tag = `sid-${RUN}-s4`;
  const conv = await api('POST', '/api/chat/sessions', { token: ALICE, body: { title: 'hers' } });
  assert.equal(conv.status, 201, conv.text);
  const id = conv.json.id;
  const mine = await fetch(`${BASE}/api/chat/send`, { method: 'POST',
    headers: { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json' },
    body: JSON.stringify({ conversationId: id, content: `${tag} hello [[fake tokens=4 token_ms=1]]` }) });
  assert.equal(mine.status, 200);
  assert.match(await mine.text(), /data: /);
  const r = await api('POST', '/api/chat/send', { token: BOB, body: { conversationId: id, content: `${tag}-bob hi` } });
  assert.equal(r.status, 404, `bob on her conversation: ${r.status} ${r.text}`);
  assert.doesNotMatch(r.headers.get('content-type') || '', /event-stream/);
  const msgs = await api('GET', `/api/chat/sessions/${id}/messages`, { token: BOB });
  assert.equal(msgs.status, 404, msgs.text);
  assert.equal((await fakeRequests(`${tag}-bob`)).length, 0, 'his message reached the upstream');
  const hers = await api('GET', `/api/chat/sessions/${id}/messages`, { token: ALICE });
  assert.equal((hers.json.messages ?? hers.json).length, 2, hers.text);
});

const userMessage = (text) => ({ id: `m-${Math.random().toString(36).slice(2)}`, role: 'user',
  parts: [{ type: 'text', text }] });

test('AI SDK chat: bob posting to her chat id gets 404; resuming it streams nothing of hers', T, async () => {
  const tag = `sid-${RUN}-ai`;
  const chatId = `ai-${RUN}`;
  const body = (text) => JSON.stringify({ id: chatId, messages: [userMessage(text)], trigger: 'submit-message' });
  const ctl = new AbortController();
  // her slow answer, running while bob tries
  const mine = await fetch(`${BASE}/api/ai-sdk/chat`, { method: 'POST', signal: ctl.signal,
    headers: { authorization: `Bearer ${ALICE}`, 'content-type': 'application/json' },
    body: body(`${tag} slow [[fake tokens=200 token_ms=10]]`) });
  assert.equal(mine.status, 200);
  const reader = mine.body.getReader();
  await reader.read();
  const r = await api('POST', '/api/ai-sdk/chat', { token: BOB, body: JSON.parse(body(`${tag}-bob mine now`)) });
  assert.equal(r.status, 404, `bob posting: ${r.status} ${r.text}`);
  const res = await fetch(`${BASE}/api/ai-sdk/chat/${chatId}/stream`, { headers: { authorization: `Bearer ${BOB}` } });
  const txt = await res.text();
  assert.ok(res.status === 204 || res.status === 404, `bob resuming: ${res.status} ${txt.slice(0, 200)}`);
  nothingOf(txt, 'text-delta', 'the resume');
  const st = await api('POST', `/api/chat/sessions/${chatId}/stop`, { token: BOB });
  assert.ok(st.status === 404 || st.status === 403, `bob stopping: ${st.status} ${st.text}`);
  const fq = (await fakeRequests(`${tag} slow`)).at(-1);
  assert.equal(fq?.ended_at, null, 'her answer still streams');
  const own = await api('POST', `/api/chat/sessions/${chatId}/stop`, { token: ALICE });
  assert.equal(own.status, 202, own.text);
  ctl.abort();
  assert.equal((await fakeRequests(`${tag}-bob`)).length, 0);
});

// ---- Parley long-poll sessions --------------------------------------------

test('poll session: bob\'s GET, POST and DELETE on her sid are 404/410; hers goes on', T, async () => {
  const tag = `sid-${RUN}-lp`;
  const lp = new LongPoll(BASE, `/ws/lp-${RUN}`, { token: ALICE });
  await lp.open();
  await lp.until(has('connected'));
  const at = `/api/poll/${lp.sid}`;
  notFound(await api('GET', `${at}?cursor=0&wait=0`, { token: BOB }), 'GET');
  notFound(await api('POST', at, { token: BOB, body: { type: 'message', content: `${tag}-bob hi` } }), 'POST');
  notFound(await api('DELETE', at, { token: BOB }), 'DELETE');
  const q = `${tag} still mine [[fake tokens=5 token_ms=1]]`;
  await lp.send({ type: 'message', content: q });
  const m = await lp.until((x) => has('stream_end')(x) || has('error')(x));
  assert.equal(chatText(m), answerText(q, 5));
  assert.equal((await fakeRequests(`${tag}-bob`)).length, 0);
  assert.equal((await api('DELETE', at, { token: ALICE })).status < 300, true, 'she closes her own');
});

// ---- Phoenix: topics over both transports, LongPoll tokens --------------------

function phxSocket(sub, transport) {
  const s = new Socket(`${WS}/socket`, { transport, params: { user_id: sub, auth_token: jwtHS256(SECRET, sub) },
    timeout: 10000 * SLOW, reconnectAfterMs: () => 60000, rejoinAfterMs: () => 60000 });
  s.connect();
  return s;
}
function join(ch) {
  return new Promise((resolve) => {
    ch.join().receive('ok', (r) => resolve({ ok: r })).receive('error', (e) => resolve({ error: e }))
      .receive('timeout', () => resolve({ timeout: true }));
  });
}

test('Phoenix topic: bob joining proxy:<her session> is refused (unauthorized) over WebSocket and LongPoll', T, async () => {
  const sess = `phx-${RUN}`;
  const sa = phxSocket(A, WebSocket);
  const sb = phxSocket(B, WebSocket);
  const sl = phxSocket(B, PhxLongPoll);
  try {
    const ca = sa.channel(`proxy:${sess}`, { user_id: A });
    assert.deepEqual(await join(ca), { ok: {} });
    for (const [how, s] of [['WebSocket', sb], ['LongPoll', sl]]) {
      const ch = s.channel(`proxy:${sess}`, { user_id: A });
      const r = await join(ch);
      assert.equal(r.error?.reason, 'unauthorized', `${how}: ${JSON.stringify(r)}`);
      ch.leave();
    }
  } finally {
    sa.disconnect(); sb.disconnect(); sl.disconnect();
  }
});

// Raw Phoenix LongPoll: one GET (optionally with token T), JSON body.
async function lpGet(jwt, token) {
  const q = token ? `&token=${encodeURIComponent(token)}` : '';
  const r = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0${q}`, { headers: { authorization: `Bearer ${jwt}` } });
  assert.equal(r.status, 200);
  return r.json();
}
async function lpPost(jwt, token, frames) {
  const r = await fetch(`${BASE}/socket/longpoll?vsn=2.0.0&token=${encodeURIComponent(token)}`, {
    method: 'POST', headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/x-ndjson' },
    body: frames.map((f) => JSON.stringify(f)).join('\n') });
  assert.equal(r.status, 200);
  return r.json();
}

test('Phoenix LongPoll token: bob with her token gets a session of his own; his POST with it is refused; her frames stay hers', T, async () => {
  const sess = `plp-${RUN}`;
  const first = await lpGet(ALICE);
  assert.equal(first.status, 410);
  const ta = first.token;
  assert.equal((await lpPost(ALICE, ta, [['1', '1', `proxy:${sess}`, 'phx_join', {}]])).status, 200);
  // bob polls with her token: a new session (410 and another token), none of her frames
  const g = await lpGet(BOB, ta);
  assert.equal(g.status, 410, JSON.stringify(g));
  assert.notEqual(g.token, ta);
  assert.deepEqual(g.messages, []);
  // bob posts with her token (and his JWT): refused, nothing joined or sent for her
  const p = await lpPost(BOB, ta, [['9', '9', `proxy:${sess}`, 'phx_leave', {}],
    ['9', '10', 'phoenix', 'heartbeat', {}]]);
  assert.notEqual(p.status, 200, `bob's POST on her token: ${JSON.stringify(p)}`);
  // she still reads her own join reply (not taken by bob, not left)
  const mine = await lpGet(ALICE, ta);
  assert.equal(mine.status, 200, JSON.stringify(mine));
  const frames = mine.messages.map((m) => JSON.parse(m));
  assert.ok(frames.some((f) => f[1] === '1' && f[3] === 'phx_reply' && f[4].status === 'ok'), JSON.stringify(frames));
  assert.ok(!frames.some((f) => f[1] === '9' || f[1] === '10'), `bob's frames were handled: ${JSON.stringify(frames)}`);
});

// ---- OpenAI-compatible API ---------------------------------------------------

test('OpenAI-compatible API: no stored completions to reach by id', T, async () => {
  for (const [m, p] of [['GET', '/v1/chat/completions/chatcmpl-1'], ['GET', '/v1/chat/completions'],
    ['DELETE', '/v1/chat/completions/chatcmpl-1']]) {
    const r = await api(m, p, { token: BOB });
    assert.ok(r.status === 404 || r.status === 405, `${m} ${p}: ${r.status} ${r.text.slice(0, 200)}`);
  }
});
