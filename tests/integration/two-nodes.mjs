// two-nodes.mjs — two complete Parley stacks (a web server, parley.fcgi
// and parley-ws each) sharing one PostgreSQL and one simulated LLM
// (tests/integration/t0790-two-nodes.sh starts them). What holds across
// processes on one machine must hold across nodes:
//   - a WebSocket viewer on B sees, live, a generation a long-poll client
//     started on A, from one upstream call;
//   - two openers of one ticket on two nodes at once: one upstream call;
//   - a long-poll session (seed 000 and seed 001) and a Phoenix LongPoll
//     session opened on one node go on through the other: any node serves
//     any poll request, no sticky sessions;
//   - node A's bridge SIGKILLed mid-stream (last, it does not come back):
//     B's viewer gets the "interrupted" error once the lease runs out, and
//     the next open regenerates the whole answer (nothing partial cached).
//
// Env: NODE_A, NODE_B (http://127.0.0.1:PORT of each web server),
// FAKE_LLM_URL, PARLEY_JWT_SECRET (the nodes' secret), BRIDGE_A_PID,
// LEASE_MS (the nodes' PARLEY_LEASE_MS), RESULT_FILE (measurements are
// appended there as "# ..." lines for the TAP output).
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LongPoll as PhxLongPoll, Socket } from 'phoenix';
import { answerText } from '../fake-llm/answer.mjs';
import { LongPoll, SLOW, TicketAIChat, WebSocketService, ended, types } from '../node/clients.mjs';

const A = process.env.NODE_A, B = process.env.NODE_B;
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.PARLEY_JWT_SECRET || '';
const LEASE_MS = Number(process.env.LEASE_MS || 10000);
const T = { timeout: 120000 * SLOW };   // no test can hang a CI run
const ws = (base) => base.replace(/^http/, 'ws');
const id = (p) => `${p}-${randomUUID()}`;
const note = (line) => process.env.RESULT_FILE && appendFileSync(process.env.RESULT_FILE, `# ${line}\n`);

async function upstreamCalls() {
  return (await (await fetch(`${FAKE}/_fake/stats`)).json()).total;
}

function jwt(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

// Phoenix's own LongPoll transport, each request (poll GET and send POST)
// sent to the next node in turn: A, B, A, B...
class AlternatingLongPoll extends PhxLongPoll {
  endpointURL() {
    this.turn = (this.turn || 0) + 1;
    const base = this.turn % 2 ? A : B;
    this.pollEndpoint = this.pollEndpoint.replace(/^https?:\/\/[^/]+/, base);
    return super.endpointURL();
  }
}

test('a WebSocket viewer on B sees, live, the generation a long-poll client started on A (one upstream call)', T, async () => {
  const ticket = id('t2n');
  const body = `Two nodes, live [[fake tokens=24 token_ms=100]] ${ticket}`;
  const before = await upstreamCalls();
  const lp = new LongPoll(A, `/api/websocket/chat/${ticket}`);
  await lp.open();
  await lp.send({ ticketBody: body });
  await lp.until((m) => m.some((x) => x.type === 'stream'));     // it runs on A now
  const viewer = new TicketAIChat(`${ws(B)}/api/websocket/chat/${ticket}`, body);
  try {
    assert.equal(await viewer.done, 'done');
    await lp.until(ended);
    assert.ok(types(viewer.log).includes('stream'), `B watched the live stream: ${types(viewer.log)}`);
    assert.ok(!types(viewer.log).includes('cached'), 'B did not get a cached answer');
    assert.equal(lp.text(), answerText(body, 24));
    assert.equal(viewer.aiResponse, lp.text());
    assert.equal(await upstreamCalls() - before, 1, 'one upstream call');
  } finally {
    viewer.close();
  }
});

test('two openers of one ticket on two nodes at the same moment: one upstream call, the same text (5 tickets)', T, async () => {
  for (let round = 0; round < 5; round++) {
    const ticket = id('t2o');
    const body = `Two openers [[fake tokens=12 token_ms=20]] ${ticket}`;
    const before = await upstreamCalls();
    const onA = new TicketAIChat(`${ws(A)}/api/websocket/chat/${ticket}`, body);
    const onB = new TicketAIChat(`${ws(B)}/api/websocket/chat/${ticket}`, body);
    try {
      assert.deepEqual(await Promise.all([onA.done, onB.done]), ['done', 'done']);
      assert.equal(onA.aiResponse, answerText(body, 12));
      assert.equal(onB.aiResponse, onA.aiResponse);
      assert.equal(await upstreamCalls() - before, 1, `round ${round}: one upstream call`);
    } finally {
      onA.close();
      onB.close();
    }
  }
});

test('seed 000 long-poll: a session opened on A, its frame posted on B, its GETs alternating A and B', T, async () => {
  const ticket = id('t2l');
  const body = `Alternating polls [[fake tokens=30 token_ms=40]] ${ticket}`;
  const lp = new LongPoll(A, `/api/websocket/chat/${ticket}`);
  await lp.open();
  lp.base = B;
  await lp.send({ ticketBody: body });
  let turn = 0;
  const delivered = { [A]: 0, [B]: 0 };
  const t0 = Date.now();
  while (!ended(lp.msgs)) {
    assert.ok(Date.now() - t0 < 30000 * SLOW, `long-poll timeout; got ${JSON.stringify(lp.msgs)}`);
    const base = turn++ % 2 ? A : B;
    const r = await fetch(`${base}/api/poll/${lp.sid}?cursor=${lp.cursor}&wait=5`);
    assert.equal(r.status, 200, `${base}: ${await r.clone().text()}`);
    const j = await r.json();
    lp.msgs.push(...j.messages);
    lp.cursor = j.cursor;
    if (j.messages.length) delivered[base]++;
  }
  assert.ok(delivered[A] > 0 && delivered[B] > 0, `both nodes delivered frames: ${JSON.stringify(delivered)}`);
  assert.equal(lp.msgs.at(-1).type, 'done', JSON.stringify(lp.msgs.at(-1)));
  assert.equal(lp.text(), answerText(body, 30), 'every token once, in order');
});

test('a GET parked on A wakes, live, for a frame POSTed to its session on B', T, async () => {
  const ticket = id('t2w');
  const body = `Parked on A [[fake tokens=24 token_ms=100]] ${ticket}`;
  const lp = new LongPoll(A, `/api/websocket/chat/${ticket}`);
  await lp.open();
  // the session follows no channel yet: only the session's own ring
  // ("poll:<sid>", NOTIFYed by B) can wake this GET before its 20 s wait ends
  const parked = fetch(`${A}/api/poll/${lp.sid}?cursor=0&wait=20`);
  await sleep(300);
  lp.base = B;
  await lp.send({ ticketBody: body });
  const r = await parked;
  assert.equal(r.status, 200);
  const j = await r.json();
  assert.ok(j.messages.length > 0, 'the parked GET answered with frames');
  assert.ok(!ended(j.messages), `it answered while the answer was still streaming: ${types(j.messages)}`);
  lp.msgs.push(...j.messages);
  lp.cursor = j.cursor;
  lp.base = A;
  await lp.until(ended);
  assert.equal(lp.text(), answerText(body, 24));
});

test('seed 001: a session streamed over WebSocket on B is the same conversation over long-poll on A', T, async () => {
  const session = id('s2n');
  const svc = new WebSocketService(ws(B));
  svc.connect(session);
  await svc.next('connected');
  const end = svc.next('streamEnd', 20000 * SLOW);
  svc.sendMessage(`two nodes [[fake tokens=4]] ${session}`);
  await end;
  svc.close();
  const lp = new LongPoll(A, `/ws/${session}`);
  await lp.open();
  await lp.until((m) => m.length >= 1);
  assert.equal(lp.msgs[0].type, 'connected');
  assert.equal(lp.msgs[0].session_id, session);
  lp.base = B;
  await lp.send({ type: 'ping' });
  lp.base = A;
  await lp.until((m) => m.some((x) => x.type === 'pong'));
});

test('Phoenix LongPoll (the official client): every request to the other node in turn; join, a streamed query, history', T, async () => {
  let gone = 0;
  const params = { user_id: 'alice' };
  if (SECRET) params.auth_token = jwt('alice');
  const socket = new Socket(`${ws(A)}/socket`, { transport: AlternatingLongPoll, params, timeout: 15000 });
  socket.onClose((e) => { if (e && e.code === 3410) gone++; });
  socket.connect();
  try {
    const ch = socket.channel(`proxy:${id('p')}`, { user_id: 'alice' });
    await new Promise((res, rej) => ch.join().receive('ok', res).receive('error', rej)
      .receive('timeout', () => rej(new Error('join timeout'))));
    const q = `Two nodes over LongPoll ${randomUUID()} [[fake tokens=10 token_ms=30]]`;
    const streamed = new Promise((res, rej) => {
      let text = '';
      const t = setTimeout(() => rej(new Error('stream did not complete')), 30000 * SLOW);
      ch.on('stream_token', (p) => { text += p.token; });
      ch.on('stream_complete', () => { clearTimeout(t); res(text); });
      ch.on('stream_error', (p) => { clearTimeout(t); rej(new Error(`stream_error ${p.error}`)); });
    });
    ch.push('stream_query', { query: q });
    assert.equal(await streamed, answerText(q, 10));
    const hist = await new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error('no history')), 15000 * SLOW);
      ch.on('history', (p) => { clearTimeout(t); res(p); });
      ch.push('get_history');
    });
    assert.equal(hist.messages.length, 2);
    assert.equal(hist.messages[1].content, answerText(q, 10));
    assert.equal(gone, 0, 'no node answered "session gone" (410)');
  } finally {
    socket.disconnect();
  }
});

// Last: node A's bridge does not come back.
test('node A\'s bridge SIGKILLed mid-stream: B\'s viewer gets the interrupted error; the next open regenerates', T, async () => {
  const pid = Number(process.env.BRIDGE_A_PID);
  assert.ok(pid > 0, 'BRIDGE_A_PID');
  const ticket = id('t2k');
  const n = 400, tokenMs = 50;                 // 20 s of streaming: longer than the recovery
  const body = `Kill node A [[fake tokens=${n} token_ms=${tokenMs}]] ${ticket}`;
  const before = await upstreamCalls();
  const owner = new TicketAIChat(`${ws(A)}/api/websocket/chat/${ticket}`, body);
  let viewer = null;
  try {
    // A owns the generation (it streams there) before B's viewer asks for it
    const t0 = Date.now();
    while (!owner.log.some((m) => m.type === 'stream')) {
      assert.ok(Date.now() - t0 < 20000 * SLOW, `A streamed nothing: ${types(owner.log)}`);
      await sleep(20);
    }
    viewer = new TicketAIChat(`${ws(B)}/api/websocket/chat/${ticket}`, body);
    while (!viewer.log.some((m) => m.type === 'stream')) {
      assert.ok(Date.now() - t0 < 20000 * SLOW, `B saw no stream: ${types(viewer.log)}`);
      await sleep(20);
    }
    process.kill(pid, 'SIGKILL');
    const killed = Date.now();
    assert.equal(await viewer.done, 'error');
    const ms = Date.now() - killed;
    note(`node A's bridge killed: B's viewer got the error after ${ms} ms (lease ${LEASE_MS} ms, ` +
         `${(ms / LEASE_MS).toFixed(2)} leases)`);
    const err = viewer.log.at(-1);
    assert.match(err.message, /interrupted/, JSON.stringify(err));
    assert.ok(ms < n * tokenMs, `the error came before the stream would have ended (${ms} ms)`);
    assert.equal(await upstreamCalls() - before, 1);
  } finally {
    owner.close();
    viewer?.close();
  }
  const again = new TicketAIChat(`${ws(B)}/api/websocket/chat/${ticket}`, body);
  try {
    assert.equal(await again.done, 'done');
    assert.ok(!types(again.log).includes('cached'), 'nothing partial was cached');
    assert.equal(again.aiResponse, answerText(body, n));
    assert.equal(await upstreamCalls() - before, 2, 'the next open called the upstream again');
  } finally {
    again.close();
  }
});
