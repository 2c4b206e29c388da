// stop.mjs — stopping a generation through a real web server (docs/stop.md),
// run by t0810-stop.sh once per setup. Clients on two transports —
// WebSocket (the bridge behind the server's proxy) and long-poll
// (parley.fcgi) — plus the REST form; the simulated LLM's request log
// (GET /_fake/requests) is the witness that the upstream connection was
// closed, and when.
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/stop.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api as apiCall, connect, jwtHS256, LongPoll } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const SLOWLY = '[[fake tokens=600 token_ms=10]]';

const now = () => performance.timeOrigin + performance.now();
const ALICE = jwtHS256(SECRET, 'alice');
const BOB = jwtHS256(SECRET, 'bob');
const ADMIN = jwtHS256(SECRET, 'root', { role: 'admin' });
const api = (method, path, token, body) => apiCall(BASE, method, path, { token, body });

// The fake's log entries whose prompt starts with tag.
async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.startsWith(tag));
}
async function fakeEnded(tag, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const q = (await fakeRequests(tag)).at(-1);
    if (q?.ended_at) return q;
    assert.ok(Date.now() < end, `the fake never saw ${tag} end`);
    await sleep(5);
  }
}

// A long-poll client with a token (the transport carries protocol frames).
const poll = (path, token) => new LongPoll(BASE, path, { token });

const count = (msgs, type) => msgs.filter((m) => m.type === type).length;
const has = (type) => (msgs) => msgs.some((m) => m.type === type);

test('seed 001: a long-poll stop ends the WebSocket stream; upstream closed within 100 ms; partial kept as stopped', async () => {
  const sid = `stop-${RUN}-a`;
  const tag = `stopit-${RUN}-chat`;
  const ws = await connect(`${WS}/ws/${sid}?token=${ALICE}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content: `${tag} ${SLOWLY}` }));
  await ws.until((m) => count(m, 'stream_chunk') >= 5);
  // a second viewer on the other transport, opened mid-stream: it follows
  const lp = poll(`/ws/${sid}`, ALICE);
  await lp.open();
  await lp.until((m) => count(m, 'stream_chunk') >= 1);
  const t0 = now();
  await lp.send({ type: 'stop' });
  const q = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true, 'Parley closed the upstream connection');
  const delay = q.ended_at - t0;
  console.log(`# upstream connection closed ${delay.toFixed(1)} ms after the stop request`);
  assert.ok(delay < 100, `closed ${delay} ms after the stop`);
  const wsMsgs = await ws.until(has('stream_end'));
  const end = wsMsgs.find((m) => m.type === 'stream_end');
  assert.equal(end.metadata.stopped, true);
  const lpMsgs = await lp.until(has('stream_end'));
  const lpEnd = lpMsgs.find((m) => m.type === 'stream_end');
  assert.equal(lpEnd.metadata.stopped, true);
  assert.equal(lpEnd.message_id, end.message_id);
  const partial = wsMsgs.filter((m) => m.type === 'stream_chunk').map((m) => m.content).join('');
  assert.ok(partial.length > 0);
  // stored: the partial text, marked stopped
  const h = await api('GET', `/api/chat/sessions/${sid}/messages`, ALICE);
  assert.equal(h.status, 200, h.text);
  const list = h.json.messages ?? h.json;
  const last = list.at(-1);
  assert.equal(last.role, 'assistant');
  assert.equal(last.content, partial);
  assert.equal(last.metadata.stopped, true);
  // the finished generation: 409, by REST and by frame
  const again = await api('POST', `/api/chat/sessions/${sid}/stop`, ALICE);
  assert.equal(again.status, 409, again.text);
  assert.equal(again.json.message, 'The generation has already finished');
  ws.ws.send(JSON.stringify({ type: 'stop' }));
  const e = (await ws.until((m) => m.filter((x) => x.type === 'error').length >= 1)).find((x) => x.type === 'error');
  assert.equal(e.message, 'The generation has already finished');
  ws.ws.close();
});

test('REST: a non-owner is refused (403), an admin may stop (202), nothing to stop is 404', async () => {
  const sid = `stop-${RUN}-b`;
  const tag = `stopit-${RUN}-admin`;
  const none = await api('POST', `/api/chat/sessions/${sid}/stop`, ALICE);
  assert.equal(none.status, 404, none.text);
  assert.equal(none.json.message, 'No generation to stop');
  const ws = await connect(`${WS}/ws/${sid}?token=${ALICE}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content: `${tag} ${SLOWLY}` }));
  await ws.until((m) => count(m, 'stream_chunk') >= 3);
  const foreign = await api('POST', `/api/chat/sessions/${sid}/stop`, BOB);
  assert.equal(foreign.status, 403, foreign.text);
  assert.equal(foreign.json.message, 'Only the user who started the generation (or an admin) can stop it');
  assert.equal((await fakeRequests(tag)).at(-1).ended_at, null, 'still streaming after the refused stop');
  const t0 = now();
  const admin = await api('POST', `/api/chat/sessions/${sid}/stop`, ADMIN);
  assert.equal(admin.status, 202, admin.text);
  assert.equal(admin.json.stopped, true);
  const q = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true);
  assert.ok(q.ended_at - t0 < 100, `closed ${q.ended_at - t0} ms after the stop`);
  const end = (await ws.until(has('stream_end'))).find((m) => m.type === 'stream_end');
  assert.equal(end.metadata.stopped, true);
  ws.ws.close();
});

test('seed 000: a viewer of another user cannot stop; the stopped answer is not cached; a viewer leaving never stops', async () => {
  const ticket = `T-${RUN}`;
  const tag = `stopit-${RUN}-ticket`;
  const body = `${tag} ${SLOWLY}`;
  const a = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ALICE}`);
  a.ws.send(JSON.stringify({ ticketBody: body }));
  await a.until((m) => count(m, 'stream') >= 3);
  // bob watches the same generation over long-poll, then tries to stop it
  const lp = poll(`/api/websocket/chat/${ticket}`, BOB);
  await lp.open();
  await lp.send({ ticketBody: body });
  await lp.send({ type: 'stop' });
  const err = (await lp.until(has('error'))).find((m) => m.type === 'error');
  assert.equal(err.message, 'Only the user who started the generation (or an admin) can stop it');
  // a third viewer leaves: the generation goes on
  const c = await connect(`${WS}/api/websocket/chat/${ticket}?token=${BOB}`);
  c.ws.send(JSON.stringify({ ticketBody: body }));
  await c.until((m) => count(m, 'stream') >= 1);
  c.ws.close();
  await sleep(150);
  assert.equal((await fakeRequests(tag)).length, 1, 'one upstream request');
  assert.equal((await fakeRequests(tag))[0].ended_at, null, 'a viewer leaving does not stop it');
  // the starter stops it by REST (the SSE clients' way)
  const t0 = now();
  const r = await api('POST', `/api/tickets/${ticket}/ai/stop`, ALICE);
  assert.equal(r.status, 202, r.text);
  const q = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true);
  assert.ok(q.ended_at - t0 < 100, `closed ${q.ended_at - t0} ms after the stop`);
  assert.deepEqual((await a.until(has('done'))).at(-1), { type: 'done', stopped: true });
  assert.deepEqual((await lp.until(has('done'))).at(-1), { type: 'done', stopped: true });
  a.ws.close();
  // not cached: the next open streams again, from a new upstream request
  const again = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ALICE}`);
  again.ws.send(JSON.stringify({ ticketBody: body }));
  const m2 = await again.until((m) => count(m, 'stream') >= 2 || has('cached')(m));
  assert.equal(count(m2, 'cached'), 0, 'the stopped answer was not cached');
  assert.equal((await fakeRequests(tag)).length, 2, 'a new upstream request');
  const g = await api('GET', `/api/tickets/${ticket}/ai`, ALICE);
  assert.equal(g.status, 200, g.text);
  assert.equal(g.json.response, null, `no cached answer: ${g.text.slice(0, 200)}`);
  again.ws.send(JSON.stringify({ type: 'stop' }));
  assert.deepEqual((await again.until(has('done'))).at(-1), { type: 'done', stopped: true });
  again.ws.close();
});

test('an admin\'s stop frame (role claim) stops another user\'s generation, over WebSocket and over long-poll', async () => {
  for (const via of ['websocket', 'long-poll']) {
    const ticket = `TA-${via}-${RUN}`;
    const tag = `stopit-${RUN}-admin-${via}`;
    const body = `${tag} ${SLOWLY}`;
    const a = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ALICE}`);
    a.ws.send(JSON.stringify({ ticketBody: body }));
    await a.until((m) => count(m, 'stream') >= 3);
    if (via === 'websocket') {
      const adm = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ADMIN}`);
      adm.ws.send(JSON.stringify({ ticketBody: body }));
      await adm.until((m) => count(m, 'stream') >= 1);
      adm.ws.send(JSON.stringify({ type: 'stop' }));
      assert.deepEqual((await adm.until(has('done'))).at(-1), { type: 'done', stopped: true });
      assert.equal(count(adm.msgs, 'error'), 0, JSON.stringify(adm.msgs.filter((m) => m.type === 'error')));
      adm.ws.close();
    } else {
      const lp = poll(`/api/websocket/chat/${ticket}`, ADMIN);
      await lp.open();
      await lp.send({ ticketBody: body });
      await lp.send({ type: 'stop' });
      assert.deepEqual((await lp.until(has('done'))).at(-1), { type: 'done', stopped: true });
      assert.equal(count(lp.msgs, 'error'), 0, JSON.stringify(lp.msgs.filter((m) => m.type === 'error')));
    }
    const q = await fakeEnded(tag);
    assert.equal(q.closed_by_client, true, `${via}: the upstream request was closed by Parley`);
    assert.deepEqual((await a.until(has('done'))).at(-1), { type: 'done', stopped: true });
    a.ws.close();
  }
});
