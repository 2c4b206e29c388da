// aisdk.mjs — the AI SDK UI message stream through a real web server
// (docs/ai-sdk.md), run by t0910-aisdk.sh once per setup, with the official
// `ai` package's client side (6.0.333, pinned in package.json):
// DefaultChatTransport (what useChat sends and how it resumes) and
// readUIMessageStream (how useChat builds the assistant message).
//
//   BASE=http://127.0.0.1:PORT SECRET=... RUN=tag [KILL=1] [ANON=1] \
//     node --test --test-reporter=tap tests/integration/aisdk.mjs
//
// KILL=1: the process that owns a generation (found by its lease_owner in
// GET /api/admin/generations) is SIGKILLed mid-answer; the web server must
// start another one (lighttpd, mod_fcgid), so not with mod_proxy_fcgi's
// single external server.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DefaultChatTransport, readUIMessageStream } from 'ai';
import { answerText } from '../fake-llm/answer.mjs';
import { api as apiCall, jwtHS256 } from '../node/clients.mjs';

const BASE = process.env.BASE;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const KILL = process.env.KILL === '1';
const ANON = process.env.ANON === '1';        // PARLEY_ANONYMOUS=send
const T = { timeout: 60000 };

const ALICE = jwtHS256(SECRET, `alice-${RUN}`);
const ADMIN = jwtHS256(SECRET, 'root', { role: 'admin' });
const api = (method, path, token, body) => apiCall(BASE, method, path, { token, body });

const transport = (token) => new DefaultChatTransport({
  api: `${BASE}/api/ai-sdk/chat`,
  headers: { authorization: `Bearer ${token}` },
});

let nextId = 0;
const userMessage = (text) => ({ id: `u${++nextId}-${RUN}`, role: 'user', parts: [{ type: 'text', text }] });
const textOf = (m) => m.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');

// All the chunks of a UI message chunk stream, at most ms.
async function chunksOf(stream, ms = 30000) {
  const out = [];
  const reader = stream.getReader();
  const end = Date.now() + ms;
  for (;;) {
    const left = end - Date.now();
    assert.ok(left > 0, `the stream did not end within ${ms} ms: ${JSON.stringify(out.slice(-3))}`);
    const r = await Promise.race([reader.read(), sleep(left).then(() => ({ timeout: true }))]);
    if (r.timeout) continue;
    if (r.done) return out;
    out.push(r.value);
  }
}

// The assistant message useChat would show for a chunk stream (the last
// snapshot readUIMessageStream yields); errors as useChat reports them.
async function messageOf(stream) {
  let last;
  for await (const m of readUIMessageStream({ stream, terminateOnError: true })) last = m;
  return last;
}

// A chat turn through the transport, as useChat sends it.
function send(tr, chatId, messages, extra = {}) {
  return tr.sendMessages({ chatId, messages, trigger: 'submit-message', messageId: undefined,
    abortSignal: extra.signal, ...extra });
}

test('the response: the protocol header, data: lines and [DONE], the exact parts', T, async () => {
  const chatId = `raw-${RUN}`;
  const q = `raw ${RUN} [[fake tokens=6 token_ms=1]]`;
  const r = await fetch(`${BASE}/api/ai-sdk/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ALICE}` },
    body: JSON.stringify({ id: chatId, messages: [userMessage(q)], trigger: 'submit-message' }),
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  const body = await r.text();
  assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-80));
  const lines = body.split('\n\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]');
  const parts = lines.map((l) => JSON.parse(l.slice(6)));
  assert.deepEqual(parts.slice(0, 3).map((p) => p.type), ['start', 'start-step', 'text-start']);
  assert.deepEqual(parts.slice(-3), [{ type: 'text-end', id: 'text-1' }, { type: 'finish-step' },
    { type: 'finish', finishReason: 'stop' }]);
  const deltas = parts.slice(3, -3);
  assert.ok(deltas.every((p) => p.type === 'text-delta' && p.id === 'text-1'));
  assert.equal(deltas.map((p) => p.delta).join(''), answerText(q, 6));
  // refused before streaming: a status, not a stream
  const bad = await api('POST', '/api/ai-sdk/chat', ALICE, { id: chatId, messages: 'no' });
  assert.equal(bad.status, 400, bad.text);
  // no credentials: 401, or with PARLEY_ANONYMOUS=send a new visitor (and
  // nothing of alice's to resume)
  const anon = await fetch(`${BASE}/api/ai-sdk/chat/${chatId}/stream`);
  assert.equal(anon.status, ANON ? 204 : 401);
});

test('an anonymous visitor (PARLEY_ANONYMOUS=send): issued on the first request, its own chats only',
  { ...T, skip: ANON ? false : 'PARLEY_ANONYMOUS does not name send here' }, async () => {
    const chatId = `visitor-${RUN}`;
    // useChat({ resume: true }) on a fresh page: the visitor is issued there
    const first = await fetch(`${BASE}/api/ai-sdk/chat/${chatId}/stream`);
    assert.equal(first.status, 204);
    const visitor = first.headers.get('x-parley-visitor');
    assert.match(visitor ?? '', /^v1\./);
    assert.match(first.headers.get('set-cookie') ?? '', /parley_visitor=/);
    const tr = new DefaultChatTransport({ api: `${BASE}/api/ai-sdk/chat`,
      headers: { 'X-Parley-Visitor': visitor } });
    const q = `visitor ${RUN} [[fake tokens=5 token_ms=1]]`;
    const m = await messageOf(await send(tr, chatId, [userMessage(q)]));
    assert.equal(textOf(m), answerText(q, 5));
    const list = await apiCall(BASE, 'GET', '/api/chat/sessions?kind=sse', { headers: { 'X-Parley-Visitor': visitor } });
    assert.equal(list.status, 200, list.text);
    const s = list.json.sessions.find((x) => x.session_id === chatId);
    assert.ok(s, 'the visitor lists its chat');
    assert.match(s.user_id, /^anon:/);
    // another visitor (a new one) and a user do not reach it
    const other = await fetch(`${BASE}/api/ai-sdk/chat`, { method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: chatId, messages: [userMessage('mine now')], trigger: 'submit-message' }) });
    assert.equal(other.status, 404, await other.text());
    const user = await api('POST', '/api/ai-sdk/chat', ALICE,
      { id: chatId, messages: [userMessage('mine now')], trigger: 'submit-message' });
    assert.equal(user.status, 404, user.text);
  });

test('a chat of three turns: each answer is the simulated LLM\'s; the chat is a listable, exportable conversation', T, async () => {
  const tr = transport(ALICE);
  const chatId = `three-${RUN}`;
  const messages = [];
  for (const n of [1, 2, 3]) {
    const q = `turn ${n} of ${RUN} [[fake tokens=${4 + n} token_ms=1]]`;
    messages.push(userMessage(q));
    const answer = await messageOf(await send(tr, chatId, messages));
    assert.equal(answer.role, 'assistant');
    assert.equal(textOf(answer), answerText(q, 4 + n), `turn ${n}`);
    messages.push(answer);
  }
  const list = await api('GET', '/api/chat/sessions?kind=sse', ALICE);
  assert.equal(list.status, 200, list.text);
  const s = list.json.sessions.find((x) => x.session_id === chatId);
  assert.ok(s, 'listed');
  assert.equal(s.message_count, 6);
  assert.equal(s.metadata.client, 'ai-sdk');
  const h = await api('GET', `/api/chat/sessions/${chatId}/messages`, ALICE);
  assert.equal(h.status, 200, h.text);
  const stored = h.json.messages ?? h.json;
  assert.deepEqual(stored.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']);
  // the assistant messages keep the ids the stream announced
  assert.deepEqual(stored.filter((m) => m.role === 'assistant').map((m) => m.message_id),
    messages.filter((m) => m.role === 'assistant').map((m) => m.id));
  const ex = await api('POST', '/api/chat/export', ALICE, { session_id: chatId, format: 'json' });
  assert.equal(ex.status, 200, ex.text);
  assert.equal(ex.json.messages.length, 6);
  // another user does not reach it
  const other = await api('POST', '/api/ai-sdk/chat', jwtHS256(SECRET, `mallory-${RUN}`),
    { id: chatId, messages: [userMessage('hi')], trigger: 'submit-message' });
  assert.equal(other.status, 404, other.text);
});

test('a reload mid-answer: the dropped response, then the resume endpoint yields the whole answer once', T, async () => {
  const tr = transport(ALICE);
  const chatId = `reload-${RUN}`;
  const q = `reload ${RUN} [[fake tokens=80 token_ms=25]]`;
  const ac = new AbortController();
  const first = await send(tr, chatId, [userMessage(q)], { signal: ac.signal });
  const reader = first.getReader();
  const seen = [];
  while (seen.filter((c) => c.type === 'text-delta').length < 5) {
    const r = await reader.read();
    assert.ok(!r.done, 'the answer ended before the reload');
    seen.push(r.value);
  }
  ac.abort();                                  // the page goes away
  await reader.cancel().catch(() => {});
  // the reloaded page: useChat({ resume: true }) calls reconnectToStream
  const again = await tr.reconnectToStream({ chatId });
  assert.ok(again, 'a running answer to resume (not 204)');
  const chunks = await chunksOf(again);
  assert.equal(chunks[0].type, 'start');
  assert.equal(chunks[0].messageId, seen[0].messageId, 'the same answer');
  assert.equal(chunks.filter((c) => c.type === 'start').length, 1);
  assert.equal(chunks.at(-1).type, 'finish');
  const text = chunks.filter((c) => c.type === 'text-delta').map((c) => c.delta).join('');
  assert.equal(text, answerText(q, 80), 'the whole answer, once');
  // useChat's view of the resumed stream
  const replay = await tr.reconnectToStream({ chatId });
  assert.equal(replay, null, 'over: nothing to resume (204)');
});

test('resume when nothing runs: 204 (unknown chat, finished answer)', T, async () => {
  const tr = transport(ALICE);
  assert.equal(await tr.reconnectToStream({ chatId: `never-${RUN}` }), null);
  const r = await fetch(`${BASE}/api/ai-sdk/chat/never-${RUN}/stream`,
    { headers: { authorization: `Bearer ${ALICE}` } });
  assert.equal(r.status, 204);
  assert.equal(await r.text(), '');
  const chatId = `idle-${RUN}`;
  const q = `idle ${RUN} [[fake tokens=3 token_ms=1]]`;
  await messageOf(await send(tr, chatId, [userMessage(q)]));
  assert.equal(await tr.reconnectToStream({ chatId }), null);
});

test('the REST stop ends the answer with finish (stopped), the partial text kept', T, async () => {
  const tr = transport(ALICE);
  const chatId = `stop-${RUN}`;
  const q = `stop ${RUN} [[fake tokens=400 token_ms=20]]`;
  const stream = await send(tr, chatId, [userMessage(q)]);
  const reader = stream.getReader();
  const chunks = [];
  while (chunks.filter((c) => c.type === 'text-delta').length < 3) chunks.push((await reader.read()).value);
  const st = await api('POST', `/api/chat/sessions/${chatId}/stop`, ALICE);
  assert.equal(st.status, 202, st.text);
  const end = Date.now() + 10000;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    chunks.push(r.value);
    assert.ok(Date.now() < end, 'ended after the stop');
  }
  assert.deepEqual(chunks.slice(-3), [{ type: 'text-end', id: 'text-1' }, { type: 'finish-step' },
    { type: 'finish', finishReason: 'other', messageMetadata: { stopped: true } }]);
  const text = chunks.filter((c) => c.type === 'text-delta').map((c) => c.delta).join('');
  assert.ok(answerText(q, 400).startsWith(text) && text.length < answerText(q, 400).length);
  assert.equal(await tr.reconnectToStream({ chatId }), null);
  // the next turn is accepted
  const q2 = `after the stop ${RUN} [[fake tokens=3 token_ms=1]]`;
  const m = await messageOf(await send(tr, chatId, [userMessage(q), userMessage(q2)]));
  assert.equal(textOf(m), answerText(q2, 3));
});

test('regenerate-message answers the last user message again', T, async () => {
  const tr = transport(ALICE);
  const chatId = `regen-${RUN}`;
  const q = `regen ${RUN} [[fake tokens=5 token_ms=1]]`;
  const u = userMessage(q);
  const a = await messageOf(await send(tr, chatId, [u]));
  const b = await messageOf(await tr.sendMessages({ chatId, messages: [u], trigger: 'regenerate-message',
    messageId: a.id }));
  assert.equal(textOf(b), answerText(q, 5));
  assert.notEqual(b.id, a.id);
});

test('resume after the generating process was SIGKILLed: the protocol\'s error part, never a hang',
  { ...T, skip: KILL ? false : 'KILL=1 not set (one external server: nothing would restart it)' }, async () => {
    const tr = transport(ALICE);
    const chatId = `kill-${RUN}`;
    const q = `kill ${RUN} [[fake tokens=600 token_ms=20]]`;
    const first = await send(tr, chatId, [userMessage(q)]);
    const reader = first.getReader();
    let deltas = 0;
    while (deltas < 3) {
      const r = await reader.read();
      assert.ok(!r.done);
      if (r.value.type === 'text-delta') deltas++;
    }
    const g = await api('GET', '/api/admin/generations', ADMIN);
    assert.equal(g.status, 200, g.text);
    const job = g.json.generations.find((x) => x.channel === `conv:${chatId}`);
    assert.ok(job, 'the generation is listed');
    const pid = Number(job.lease_owner.split(':')[0]);
    assert.ok(pid > 1);
    process.kill(pid, 'SIGKILL');
    console.log(`# SIGKILLed pid ${pid}, the owner of job ${job.job_id}`);
    await reader.cancel().catch(() => {});
    const t0 = Date.now();
    // the web server starts a new parley.fcgi: until it listens, it answers
    // 5xx itself (lighttpd: 500), which the reloaded page would retry
    let again;
    for (;;) {
      try {
        again = await tr.reconnectToStream({ chatId });
        break;
      } catch (e) {
        assert.ok(Date.now() - t0 < 20000, `the resume kept failing: ${e.message}`);
        await sleep(100);
      }
    }
    assert.ok(again, 'the job is still running when the resume arrives (not 204)');
    const chunks = await chunksOf(again, 30000);
    const err = chunks.find((c) => c.type === 'error');
    assert.ok(err, `an error part: ${JSON.stringify(chunks.slice(-3))}`);
    assert.equal(typeof err.errorText, 'string');
    assert.ok(!chunks.some((c) => c.type === 'finish'));
    console.log(`# error part after ${Date.now() - t0} ms: ${err.errorText}`);
    // useChat reports it as an error
    await assert.rejects(messageOf(new ReadableStream({
      start(c) { for (const x of chunks) c.enqueue(x); c.close(); } })));
    // and then nothing runs: 204, and a new turn works
    assert.equal(await tr.reconnectToStream({ chatId }), null);
    const q2 = `after the kill ${RUN} [[fake tokens=3 token_ms=1]]`;
    const m = await messageOf(await send(tr, chatId, [userMessage(q2)]));
    assert.equal(textOf(m), answerText(q2, 3));
  });

// ---- two nodes on one PostgreSQL (t0912): OTHER_BASE is another node ----
const OTHER = process.env.OTHER_BASE;
const transportAt = (base, token) => new DefaultChatTransport({
  api: `${base}/api/ai-sdk/chat`, headers: { authorization: `Bearer ${token}` },
});

test('a reload mid-answer resumed on another node: the whole answer once',
  { ...T, skip: OTHER ? false : 'OTHER_BASE not set (one node)' }, async () => {
    const chatId = `nodes-${RUN}`;
    const q = `two nodes ${RUN} [[fake tokens=80 token_ms=25]]`;
    const ac = new AbortController();
    const first = await send(transportAt(OTHER, ALICE), chatId, [userMessage(q)], { signal: ac.signal });
    const reader = first.getReader();
    const seen = [];
    while (seen.filter((c) => c.type === 'text-delta').length < 5) seen.push((await reader.read()).value);
    ac.abort();
    await reader.cancel().catch(() => {});
    const again = await transportAt(BASE, ALICE).reconnectToStream({ chatId });
    assert.ok(again, 'running: not 204');
    const chunks = await chunksOf(again);
    assert.equal(chunks[0].messageId, seen[0].messageId);
    assert.equal(chunks.filter((c) => c.type === 'text-delta').map((c) => c.delta).join(''), answerText(q, 80));
    assert.equal(chunks.at(-1).type, 'finish');
  });

test('the other node\'s generating process SIGKILLed (it does not come back): the resume here gets the error part',
  { ...T, skip: OTHER && process.env.KILL_OTHER === '1' ? false : 'OTHER_BASE/KILL_OTHER not set' }, async () => {
    const chatId = `nodekill-${RUN}`;
    const q = `node kill ${RUN} [[fake tokens=600 token_ms=20]]`;
    const first = await send(transportAt(OTHER, ALICE), chatId, [userMessage(q)]);
    const reader = first.getReader();
    let deltas = 0;
    while (deltas < 3) if ((await reader.read()).value.type === 'text-delta') deltas++;
    const g = await apiCall(OTHER, 'GET', '/api/admin/generations', { token: ADMIN });
    const job = g.json.generations.find((x) => x.channel === `conv:${chatId}`);
    assert.ok(job, 'listed');
    const pid = Number(job.lease_owner.split(':')[0]);
    assert.ok(pid > 1);
    process.kill(pid, 'SIGKILL');
    await reader.cancel().catch(() => {});
    const again = await transportAt(BASE, ALICE).reconnectToStream({ chatId });
    assert.ok(again, 'still running when the resume arrives (not 204)');
    const chunks = await chunksOf(again, 30000);
    assert.ok(chunks.some((c) => c.type === 'error'), JSON.stringify(chunks.slice(-2)));
    assert.ok(!chunks.some((c) => c.type === 'finish'));
    assert.equal(await transportAt(BASE, ALICE).reconnectToStream({ chatId }), null);
  });
