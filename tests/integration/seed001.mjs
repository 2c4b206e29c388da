// seed001.mjs — seed 001 as its document describes it (issue 11 item 4,
// docs/protocol-001.md) through a real web server, run by t0845-seed001.sh
// once per setup with PARLEY_CHAT_QUEUE=2 and WEBSOCKET_TIMEOUT=4:
//   - messages sent while an answer streams are queued and answered in
//     order, each with its own question (WebSocket and long-poll), the
//     history reads question, answer, question...; a third waiting message
//     is refused with queue_full; "stream": false on a queued message gives
//     one answer frame; the simulated LLM's request log shows one request
//     per question, in order, each ending with its own question;
//   - the session's metadata (user_agent, ip_address as the web server saw
//     it, client_version from the header or the query) and project_id (set
//     at creation, returned, a filter on the list; invalid ones refused);
//   - status active, idle after WEBSOCKET_TIMEOUT, active again on a
//     reconnect, closed on delete (and a closed session refuses 4410).
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/seed001.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { answerText } from '../fake-llm/answer.mjs';
import { api, connect, jwtHS256, LongPoll, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const IDLE_S = 4;                       // WEBSOCKET_TIMEOUT of the setup
const USER = `quinn-${RUN}`;
const TOKEN = jwtHS256(SECRET, USER);

const count = (msgs, type) => msgs.filter((m) => m.type === type).length;
const has = (type) => (msgs) => msgs.some((m) => m.type === type);

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.includes(tag));
}

// The stream_chunk text of message id mid.
const textOf = (msgs, mid) => msgs.filter((m) => m.type === 'stream_chunk' && m.message_id === mid)
  .map((m) => m.content).join('');

// Checks the frames of answers in order: for each expected text, a
// stream_start, its chunks, its stream_end, one message id; returns the ids.
function checkAnswers(msgs, texts) {
  const starts = msgs.filter((m) => m.type === 'stream_start');
  const ends = msgs.filter((m) => m.type === 'stream_end');
  assert.equal(starts.length, texts.length, JSON.stringify(msgs).slice(0, 2000));
  assert.equal(ends.length, texts.length);
  const ids = starts.map((s) => s.message_id);
  assert.deepEqual(ends.map((e) => e.message_id), ids);
  // one answer after the other: each starts after the previous one ended
  for (let i = 1; i < ids.length; i++)
    assert.ok(msgs.indexOf(starts[i]) > msgs.indexOf(ends[i - 1]), 'answers interleaved');
  texts.forEach((t, i) => assert.equal(textOf(msgs, ids[i]), t));
  return ids;
}

async function history(sid) {
  const r = await api(BASE, 'GET', `/api/chat/sessions/${sid}/messages?limit=50`, { token: TOKEN });
  assert.equal(r.status, 200, r.text);
  return r.json.messages;
}

test('WebSocket: two messages sent during an answer wait and are answered in order; a third waiting one is queue_full', async () => {
  const sid = `q-${RUN}-ws`;
  const tag = `queue-${RUN}-ws`;
  const qs = [`${tag} first [[fake tokens=12 token_ms=40]]`, `${tag} second [[fake tokens=4 token_ms=1]]`,
    `${tag} third [[fake tokens=3 token_ms=1]]`];
  const ws = await connect(`${WS}/ws/${sid}?token=${TOKEN}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content: qs[0], metadata: {} }));
  await ws.until(has('stream_start'));
  ws.ws.send(JSON.stringify({ type: 'message', content: qs[1], metadata: {} }));
  ws.ws.send(JSON.stringify({ type: 'message', content: qs[2], metadata: {} }));
  ws.ws.send(JSON.stringify({ type: 'message', content: `${tag} fourth`, metadata: {} }));
  const msgs = await ws.until((m) => count(m, 'stream_end') >= 3, 20000 * SLOW);
  const errs = msgs.filter((m) => m.type === 'error');
  assert.deepEqual(errs, [{ type: 'error', code: 'queue_full',
    message: 'Too many messages waiting for an answer (max 2); wait for one to finish' }]);
  const answers = qs.map((q, i) => answerText(q, [12, 4, 3][i]));
  const ids = checkAnswers(msgs, answers);
  ws.ws.close();
  // one upstream request per question, in order, each asking its own
  const reqs = await fakeRequests(tag);
  assert.equal(reqs.length, 3, JSON.stringify(reqs.map((q) => q.prompt)));
  assert.deepEqual(reqs.map((q) => q.prompt), qs);      // the last user message of each
  // the history: question, answer, question, answer...; nothing left queued
  const h = await history(sid);
  assert.deepEqual(h.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']);
  assert.deepEqual(h.map((m) => m.content), [qs[0], answers[0], qs[1], answers[1], qs[2], answers[2]]);
  assert.deepEqual(h.filter((m) => m.role === 'assistant').map((m) => m.message_id), ids);
  assert.ok(h.every((m) => !m.metadata.queued));
});

test('long-poll: a queued message answered after the running one; "stream": false on it gives one answer frame', async () => {
  const sid = `q-${RUN}-lp`;
  const tag = `queue-${RUN}-lp`;
  const q1 = `${tag} streamed [[fake tokens=10 token_ms=40]]`;
  const q2 = `${tag} all at once [[fake tokens=5 token_ms=1]]`;
  const lp = new LongPoll(BASE, `/ws/${sid}`, { token: TOKEN });
  await lp.open();
  await lp.send({ type: 'message', content: q1 });
  await lp.until(has('stream_start'));
  await lp.send({ type: 'message', content: q2, stream: false });
  // while it waits, the REST history shows it queued
  const h0 = await history(sid);
  const waiting = h0.find((m) => m.content === q2);
  assert.ok(waiting && waiting.metadata.queued === true, JSON.stringify(h0));
  const msgs = await lp.until((m) => m.some((x) => x.stream === false), 20000 * SLOW);
  checkAnswers(msgs, [answerText(q1, 10)]);
  const one = msgs.find((x) => x.stream === false);
  assert.deepEqual(Object.keys(one).sort(), ['chunks', 'content', 'message_id', 'metadata', 'stream']);
  assert.equal(one.content, answerText(q2, 5));
  assert.ok(msgs.indexOf(one) > msgs.indexOf(msgs.find((m) => m.type === 'stream_end')));
  const h = await history(sid);
  assert.deepEqual(h.map((m) => m.content), [q1, answerText(q1, 10), q2, answerText(q2, 5)]);
});

test('session metadata from the connection and project_id: stored, returned, filterable; bad ones refused', async () => {
  const ua = `seed001-test/1.0 (${RUN})`;
  const sid = `meta-${RUN}-ws`;
  const ws = await connect(`${WS}/ws/${sid}?token=${TOKEN}&project_id=proj-${RUN}&client_version=2.3.4`,
    { headers: { 'user-agent': ua } });
  await ws.until(has('connected'));
  ws.ws.close();
  let r = await api(BASE, 'GET', `/api/chat/sessions/${sid}`, { token: TOKEN });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.project_id, `proj-${RUN}`);
  assert.equal(r.json.metadata.user_agent, ua);
  assert.equal(r.json.metadata.client_version, '2.3.4');
  assert.match(r.json.metadata.ip_address, /^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
  assert.equal(r.json.status, 'active');
  // long-poll: the header version, the same project through REST creation
  r = await api(BASE, 'POST', '/api/chat/sessions', { token: TOKEN, body: { project_id: `proj-${RUN}` } });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.json.project_id, `proj-${RUN}`);
  const made = r.json.session_id;
  const lp = new LongPoll(BASE, `/ws/${made}`, { token: TOKEN,
    headers: { 'user-agent': `${ua} lp`, 'x-client-version': '9.9' } });
  await lp.open();
  r = await api(BASE, 'GET', `/api/chat/sessions/${made}`, { token: TOKEN });
  assert.equal(r.json.metadata.user_agent, `${ua} lp`);
  assert.equal(r.json.metadata.client_version, '9.9');
  assert.match(r.json.metadata.ip_address, /^(127\.0\.0\.1|::1|::ffff:127\.0\.0\.1)$/);
  // a session of another project, then the filter
  const other = await connect(`${WS}/ws/meta-${RUN}-other?token=${TOKEN}&project_id=elsewhere-${RUN}`);
  await other.until(has('connected'));
  other.ws.close();
  r = await api(BASE, 'GET', `/api/chat/sessions?project_id=proj-${RUN}`, { token: TOKEN });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.sessions.map((s) => s.session_id).sort(), [made, sid].sort());
  assert.equal(r.json.total, 2);
  // bad project ids: REST 400 bad_input; WebSocket error frame then close 1008
  r = await api(BASE, 'GET', '/api/chat/sessions?project_id=a%20b', { token: TOKEN });
  assert.equal(r.status, 400);
  assert.equal(r.json.code, 'bad_input');
  r = await api(BASE, 'POST', '/api/chat/sessions', { token: TOKEN, body: { project_id: 42 } });
  assert.equal(r.status, 400);
  assert.equal(r.json.code, 'bad_input');
  const bad = await connect(`${WS}/ws/meta-${RUN}-bad?token=${TOKEN}&project_id=${'x'.repeat(65)}`);
  const closed = await bad.closed;
  assert.equal(closed.code, 1008);
  assert.equal(bad.msgs[0]?.code, 'bad_input');
  r = await api(BASE, 'GET', `/api/chat/sessions/meta-${RUN}-bad`, { token: TOKEN });
  assert.equal(r.status, 404);                 // nothing was created
});

test('status: active, idle after WEBSOCKET_TIMEOUT without activity, active on reconnect, closed on delete', async () => {
  const sid = `idle-${RUN}`;
  const ws = await connect(`${WS}/ws/${sid}?token=${TOKEN}`);
  await ws.until(has('connected'));
  ws.ws.close();
  const status = async () => {
    const r = await api(BASE, 'GET', `/api/chat/sessions/${sid}`, { token: TOKEN });
    assert.equal(r.status, 200, r.text);
    return r.json.status;
  };
  assert.equal(await status(), 'active');
  await sleep(IDLE_S * 1000 + 700);
  assert.equal(await status(), 'idle');
  const list = await api(BASE, 'GET', '/api/chat/sessions?limit=100', { token: TOKEN });
  assert.equal(list.json.sessions.find((s) => s.session_id === sid)?.status, 'idle');
  const again = await connect(`${WS}/ws/${sid}?token=${TOKEN}`);
  await again.until(has('connected'));
  assert.equal(await status(), 'active');
  again.ws.close();
  const del = await api(BASE, 'DELETE', `/api/chat/sessions/${sid}`, { token: TOKEN });
  assert.equal(del.status, 200, del.text);
  assert.equal(await status(), 'closed');
  await sleep(IDLE_S * 1000 + 700);
  assert.equal(await status(), 'closed');      // closed never reads idle
  const refused = await connect(`${WS}/ws/${sid}?token=${TOKEN}`);
  assert.equal((await refused.closed).code, 4410);
});
