// ws-bridge.test.mjs — parley-ws end to end with the `ws` client: the
// client logic of seeds 000 (React hook), 001 (WebSocketService) and 002
// (ChatbotWebSocket) ported from the seed documents, against a real bridge
// on a free loopback port, a temporary PARLEY_DB and the simulated LLM.
//
//   node --test --test-reporter=tap tests/node/ws-bridge.test.mjs
//
// The bridge binary is ${BUILD:-build}/parley-ws (tests/run.sh passes BUILD,
// so under SANITIZE=address,undefined the sanitized build runs here and
// every bridge's stderr is checked for sanitizer reports when it stops).
// FAKE_LLM_URL (exported by tests/run.sh) names the simulated LLM; without
// it one is started in-process.
//
// External mode (tests/integration/t0200-ws.sh): with WS_BRIDGE_URL set
// (ws://host:port of a web server proxying to a running bridge), the seed
// client tests run against it instead of a bridge of their own, the tests
// that need their own bridge are skipped, and with WS_POLL_URL (the same
// server's http:// base, serving parley.fcgi) the cross-transport tests run:
// a WebSocket client and a long-poll client on one ticket.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { answerText, answerTokens } from '../fake-llm/answer.mjs';
import { startFakeLLM } from '../fake-llm/server.mjs';
import { BIN, ChatbotWebSocket, LongPoll, ROOT, SANITIZED, SLOW, TicketAIChat, WebSocketService,
  connect, ended, types } from './clients.mjs';

const SUITE_MS = 180000 * SLOW;          // no suite can hang a CI run
const EXTERNAL = process.env.WS_BRIDGE_URL || '';
const POLL = process.env.WS_POLL_URL || '';
const OWN = EXTERNAL ? 'needs a bridge of its own (external mode)' : false;
let FAKE;                                // base URL of the simulated LLM
let fakeInProcess = null;
let uniq = 0;
const id = (p) => `${p}-${process.pid}-${Date.now().toString(36)}-${++uniq}`;

// ---------------------------------------------------------------- helpers

// Starts parley-ws with env added to a clean Parley environment; resolves
// once it listens. stop(sig) resolves with { code, signal, stderr }.
async function startBridge(env = {}, args = [], wrap = []) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-ws-test-'));
  const portFile = join(dir, 'port');
  if (!env.PARLEY_DB) {
    // seed 002's demo brands (techpro...): the sample catalogue, which the
    // migrations no longer insert, imported as `make run` does
    const r = spawnSync(join(ROOT, process.env.BUILD || 'build', 'parley'),
      ['brands', 'import', join(ROOT, 'share', 'sample-catalog.json')],
      { env: { PATH: process.env.PATH, PARLEY_DB: join(dir, 'parley.db') }, encoding: 'utf8' });
    assert.equal(r.status, 0, `parley brands import share/sample-catalog.json: ${r.stderr}`);
  }
  const argv = [BIN, '--listen', '127.0.0.1:0', '--port-file', portFile, '--drain', '2',
    '--stats-file', join(dir, 'stats.prom'), ...args];
  const child = spawn(wrap.length ? wrap[0] : BIN, [...wrap.slice(1), ...(wrap.length ? argv : argv.slice(1))], {
    env: {
      PATH: process.env.PATH, PARLEY_DB: join(dir, 'parley.db'), OLLAMA_SERVER: FAKE,
      RATE_LIMIT_MESSAGES_PER_MINUTE: '0', PARLEY_COALESCE_MS: '0',
      ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1',
      UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || 'print_stacktrace=1',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = once(child, 'exit');
  for (let i = 0; i < (wrap.length ? 3000 : 400) && !existsSync(portFile); i++) {
    if (child.exitCode !== null) break;
    await sleep(10);
  }
  assert.ok(existsSync(portFile), `parley-ws did not start: ${stderr}`);
  const port = Number(readFileSync(portFile, 'utf8'));
  const b = {
    child, dir, port, base: `ws://127.0.0.1:${port}`,
    url: (path) => `ws://127.0.0.1:${port}${path}`,
    http: (path) => `http://127.0.0.1:${port}${path}`,
    stderr: () => stderr,
    async stop(sig = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
      const [code, signal] = await exited;
      rmSync(dir, { recursive: true, force: true });
      assert.doesNotMatch(stderr, /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/,
        'sanitizer report in the bridge log');
      return { code, signal, stderr };
    },
  };
  return b;
}


async function fakeStats() {
  return (await fetch(`${FAKE}/_fake/stats`)).json();
}

function hs256(payload, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}


// ------------------------------------------------------------------ setup

let br;                                   // the shared bridge
before(async () => {
  assert.ok(existsSync(BIN), `${BIN} missing: make BUILD=${process.env.BUILD || 'build'}`);
  FAKE = process.env.FAKE_LLM_URL;
  if (!FAKE) {
    fakeInProcess = await startFakeLLM();
    FAKE = fakeInProcess.url;
  }
  if (EXTERNAL) {
    br = { base: EXTERNAL, url: (path) => `${EXTERNAL}${path}`, external: true };
  } else {
    br = await startBridge();
  }
});

after(async () => {
  if (br && !br.external) {
    const r = await br.stop();
    assert.equal(r.code, 0, r.stderr);
  }
  if (fakeInProcess) await fakeInProcess.close();
});

// ------------------------------------------------------------ HTTP paths

describe('http', { skip: OWN, timeout: SUITE_MS }, () => {
  test('/healthz answers 200, /metrics Prometheus text, other paths 404/426', async () => {
    let r = await fetch(br.http('/healthz'));
    assert.equal(r.status, 200);
    assert.equal(await r.text(), 'ok\n');
    r = await fetch(br.http('/metrics'));
    assert.equal(r.status, 200);
    assert.match(await r.text(), /^parley_ws_connections \d+$/m);
    assert.equal((await fetch(br.http('/nowhere'))).status, 404);
    assert.equal((await fetch(br.http('/ws/some-session'))).status, 426);
    assert.equal((await fetch(br.http('/healthz'), { method: 'POST', body: 'x' })).status, 405);
    assert.equal((await fetch(br.http('/healthz'))).status, 200, 'still serving');
    // for the host only: a request a web server proxied here gets 404
    for (const h of [{ 'x-forwarded-for': '203.0.113.9' }, { via: '1.1 proxy' }, { forwarded: 'for=203.0.113.9' },
      { 'x-forwarded-host': 'help.example' }, { 'x-forwarded-proto': 'https' }]) {
      for (const p of ['/healthz', '/metrics']) {
        r = await fetch(br.http(p), { headers: h });
        assert.equal(r.status, 404, `${p} with ${JSON.stringify(h)}`);
        assert.doesNotMatch(await r.text(), /parley_ws_/);
      }
    }
  });

  test('an upgrade on an unknown path is refused with 404 before the handshake', async () => {
    await assert.rejects(connect(br.url('/nowhere/at/all')), { status: 404 });
    await assert.rejects(connect(br.url('/api/websocket/chat/')), { status: 404 });
  });
});

// -------------------------------------------------------------- seed 000

describe('seed 000 tickets', { timeout: SUITE_MS }, () => {
  test('stream... then done; the text is the upstream answer', async () => {
    const ticket = id('t');
    const body = `Impressora não imprime [[fake tokens=8]] ${ticket}`;
    const c = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    assert.equal(await c.done, 'done');
    const t = types(c.log);
    assert.ok(t.length >= 2 && t.at(-1) === 'done' && t.slice(0, -1).every((x) => x === 'stream'), t.join());
    assert.equal(c.aiResponse, answerText(body, 8));
    assert.equal(c.isLoading, false);
    assert.equal(c.error, null);
    c.close();
  });

  test('a second open of the same ticket and body gets cached then done', async () => {
    const ticket = id('t');
    const body = `VPN caiu [[fake tokens=6]] ${ticket}`;
    const a = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    await a.done;
    a.close();
    const before0 = (await fakeStats()).total;
    const b = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    assert.equal(await b.done, 'done');
    assert.deepEqual(types(b.log), ['cached', 'done']);
    assert.equal(b.log[0].response, answerText(body, 6));
    assert.equal(b.log[0].message, 'Resposta em cache - ticket já foi processado anteriormente');
    assert.equal(b.aiResponse, a.aiResponse);
    assert.equal((await fakeStats()).total, before0, 'no upstream call for a cached answer');
    b.close();
  });

  test('two openers of one ticket share one upstream call and get the same text', async () => {
    const ticket = id('t');
    const body = `Sem rede no andar 3 [[fake tokens=20 token_ms=25]] ${ticket}`;
    const before0 = (await fakeStats()).total;
    const a = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    while (!a.log.length) await sleep(10);              // A is streaming
    const b = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    assert.equal(await a.done, 'done');
    assert.equal(await b.done, 'done');
    assert.equal(a.aiResponse, answerText(body, 20));
    assert.equal(b.aiResponse, a.aiResponse);
    assert.ok(types(b.log).includes('stream'), 'B watched the shared stream');
    assert.equal((await fakeStats()).total - before0, 1, 'one upstream call');
    a.close(); b.close();
  });

  test('reconnect mid-stream with ?after=<last seq> reassembles the whole answer', async () => {
    const ticket = id('t');
    const body = `Outlook trava [[fake tokens=30 token_ms=20]] ${ticket}`;
    const a = await connect(br.url(`/api/websocket/chat/${ticket}?seq=1`));
    a.ws.send(JSON.stringify({ ticketBody: body }));
    await a.until((m) => m.length >= 5);
    a.ws.terminate();                                    // cut mid-stream
    const got = a.msgs.filter((m) => m.type === 'stream');
    assert.ok(got.every((m) => Number.isInteger(m.seq)), 'frames carry seq');
    const last = got.at(-1).seq;
    const b = await connect(br.url(`/api/websocket/chat/${ticket}?seq=1&after=${last}`));
    await b.until((m) => m.some((x) => x.type === 'done' || x.type === 'error'));
    assert.equal(b.msgs.at(-1).type, 'done');
    assert.ok(b.msgs.every((m, i) => i === 0 || m.seq > b.msgs[i - 1].seq), 'seqs increase');
    assert.ok(b.msgs[0].seq > last, 'nothing repeated');
    const text = [...got, ...b.msgs].filter((m) => m.type === 'stream').map((m) => m.content).join('');
    assert.equal(text, answerText(body, 30));
    b.ws.close();
  });

  test('an error in the middle of the stream: stream frames, then error, nothing cached', async () => {
    const ticket = id('t');
    const body = `Disco cheio [[fake tokens=10 error_after=3]] ${ticket}`;
    const c = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    assert.equal(await c.done, 'error');
    const t = types(c.log);
    assert.equal(t.at(-1), 'error');
    assert.ok(!t.includes('done'));
    assert.match(c.error, /unexpected EOF|error/);
    assert.equal(c.aiResponse, answerTokens(body, 10).slice(0, 3).join(''), 'the three tokens shown stay shown');
    c.close();
    const again = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    await again.done;
    assert.notEqual(again.log[0].type, 'cached', 'a failed answer is never cached');
    again.close();
  });

  test('bad JSON and a missing ticketBody are answered with error; the connection stays open', async () => {
    const c = await connect(br.url(`/api/websocket/chat/${id('t')}`));
    c.ws.send('{"ticketBody": ');
    c.ws.send(JSON.stringify({ nope: 1 }));
    c.ws.send(JSON.stringify({ ticketBody: '' }));
    await c.until((m) => m.length >= 3);
    assert.deepEqual(types(c.msgs), ['error', 'error', 'error']);
    assert.ok(c.msgs.every((m) => typeof m.message === 'string' && m.message.length > 0));
    assert.equal(c.ws.readyState, WebSocket.OPEN);
    c.ws.close();
  });

  test('a client vanishing without a close frame: the generation completes and caches', async () => {
    const ticket = id('t');
    const body = `Servidor lento [[fake tokens=25 token_ms=20]] ${ticket}`;
    const a = await connect(br.url(`/api/websocket/chat/${ticket}`));
    a.ws.send(JSON.stringify({ ticketBody: body }));
    await a.until((m) => m.length >= 2);
    a.ws._socket.destroy();                             // no close frame
    // the bridge keeps serving others meanwhile
    const other = new TicketAIChat(br.url(`/api/websocket/chat/${id('t')}`), `olá [[fake tokens=3]]`);
    assert.equal(await other.done, 'done');
    other.close();
    let cached = null;
    for (let i = 0; i < 50 && !cached; i++) {
      await sleep(100);
      const c = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
      await c.done;
      if (c.log[0].type === 'cached') cached = c.log[0].response;
      c.close();
      await c.closed;
    }
    assert.equal(cached, answerText(body, 25));
  });

  test('oversize message closes 1009; binary closes 1003', async () => {
    const c = await connect(br.url(`/api/websocket/chat/${id('t')}`));
    c.ws.send(JSON.stringify({ ticketBody: 'x'.repeat(70000) }));
    const cl = await c.closed;
    assert.equal(cl.code, 1009);
    assert.equal(cl.reason, 'message too big');
    const d = await connect(br.url(`/api/websocket/chat/${id('t')}`));
    d.ws.send(Buffer.from('{"ticketBody":"x"}'));
    assert.equal((await d.closed).code, 1003);
  });
});

// -------------------------------------------------------------- seed 001

describe('seed 001 chat sessions', { timeout: SUITE_MS }, () => {
  test('connected, then stream_start/stream_chunk/stream_end; ping/pong; errors', async () => {
    const svc = new WebSocketService(br.base);
    const session = id('s');
    const first = svc.next('message');
    svc.connect(session);
    await svc.next('connected');
    const hello = await first;
    assert.equal(hello.type, 'connected');
    assert.equal(hello.session_id, session);
    assert.match(hello.timestamp, /^\d{4}-\d\d-\d\dT/);

    const chunks = [];
    svc.on('streamChunk', (d) => chunks.push(d));
    const start = svc.next('streamStart');
    const end = svc.next('streamEnd');
    const content = `Como exporto o relatório? [[fake tokens=9]] ${session}`;
    svc.sendMessage(content);
    const s = await start;
    const e = await end;
    assert.ok(s.message_id);
    assert.ok(chunks.length > 0 && chunks.every((c) => c.message_id === s.message_id));
    assert.equal(e.message_id, s.message_id);
    assert.equal(chunks.map((c) => c.content).join(''), answerText(content, 9));
    assert.equal(e.metadata.tokens_used, 9);
    assert.equal(typeof e.metadata.processing_time, 'number');
    assert.equal(e.metadata.model, 'llama3.2');

    const pong = svc.next('message');
    svc.ws.send(JSON.stringify({ type: 'ping' }));
    assert.equal((await pong).type, 'pong');

    const err = svc.next('error');
    svc.ws.send('not json at all');
    assert.match((await err).message, /Invalid message format/);
    const err2 = svc.next('error');
    svc.sendMessage('   ');
    assert.match((await err2).message, /empty/);
    assert.equal(svc.ws.readyState, WebSocket.OPEN);
    svc.close();
  });

  // The seed's websocket_endpoint sends process_message's result as it is
  // when "stream" is false: {message_id, content, stream, chunks, metadata}.
  test('"stream": false: one answer frame, no stream_start/chunk/end (WebSocket)', async () => {
    const svc = new WebSocketService(br.base);
    const session = id('ns');
    const hello = svc.next('message');
    svc.connect(session);
    assert.equal((await hello).type, 'connected');
    const seen = [];
    for (const ev of ['streamStart', 'streamChunk', 'streamEnd']) svc.on(ev, (d) => seen.push(d));
    const answer = svc.next('message');
    const content = `Sem streaming [[fake tokens=7]] ${session}`;
    svc.ws.send(JSON.stringify({ type: 'message', content, metadata: {}, stream: false }));
    const a = await answer;
    assert.deepEqual(Object.keys(a).sort(), ['chunks', 'content', 'message_id', 'metadata', 'stream']);
    assert.equal(a.stream, false);
    assert.equal(a.content, answerText(content, 7));
    assert.deepEqual(a.chunks, [a.content.split(/\s+/).filter(Boolean).join(' ')]);
    assert.equal(a.metadata.tokens_used, 7);
    assert.equal(a.metadata.model, 'llama3.2');
    assert.match(a.message_id, /^[0-9a-f-]{36}$/);
    await sleep(100);
    assert.deepEqual(seen, []);
    svc.close();
  });

  test('"stream": false: one answer frame over long-poll', async () => {
    const http = (p) => br.base.replace(/^ws/, 'http') + p;
    const session = id('nslp');
    const open = await fetch(http('/api/poll/open'), { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ path: `/ws/${session}` }) });
    assert.equal(open.status, 200);
    const { sid } = await open.json();
    const content = `Sem streaming por long-poll [[fake tokens=6]] ${session}`;
    const post = await fetch(http(`/api/poll/${sid}`), { method: 'POST',
      body: JSON.stringify({ type: 'message', content, stream: false }) });
    assert.equal(post.status, 202);
    const got = [];
    let cursor = 0;
    for (let i = 0; i < 50 && !got.some((m) => m.stream === false); i++) {
      const r = await fetch(http(`/api/poll/${sid}?cursor=${cursor}&wait=10`));
      assert.equal(r.status, 200);
      const j = await r.json();
      got.push(...j.messages);
      cursor = j.cursor;
    }
    assert.deepEqual(types(got).filter((t) => /^stream_/.test(t || '')), []);
    const a = got.find((m) => m.stream === false);
    assert.ok(a, JSON.stringify(got));
    assert.equal(a.content, answerText(content, 6));
    assert.equal(a.metadata.tokens_used, 6);
  });

  test('MAX_MESSAGE_LENGTH and the rate limit answer error; the connection stays open', { skip: OWN }, async () => {
    const b = await startBridge({ RATE_LIMIT_MESSAGES_PER_MINUTE: '2', MAX_MESSAGE_LENGTH: '50' });
    try {
      const svc = new WebSocketService(b.base);
      svc.connect(id('s'));
      await svc.next('connected');
      let err = svc.next('error');
      svc.sendMessage('x'.repeat(51));
      assert.match((await err).message, /too long/i);
      for (let i = 0; i < 2; i++) {
        const end = svc.next('streamEnd');
        svc.sendMessage(`pergunta ${i} [[fake tokens=2 token_ms=1]]`);
        await end;
      }
      err = svc.next('error');
      svc.sendMessage('mais uma [[fake tokens=2]]');
      assert.equal((await err).message, 'Rate limit exceeded');
      assert.equal(svc.ws.readyState, WebSocket.OPEN);
      svc.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });
});

// -------------------------------------------------------------- seed 002

describe('seed 002 brands', { timeout: SUITE_MS }, () => {
  test('welcome, chunk... complete with products; ping/pong; bad JSON', async () => {
    const bot = new ChatbotWebSocket(br.base, 'techpro');
    await bot.connect();
    while (!bot.welcome) await sleep(10);
    assert.equal(bot.welcome.brand_id, 'techpro');
    assert.equal(bot.welcome.brand_name, 'TechPro Solutions');
    const text = `I need a laptop for business work [[fake tokens=7]] ${id('q')}`;
    await bot.sendMessage(text);
    const t = types(bot.events);
    assert.equal(t[0], 'welcome');
    assert.equal(t.at(-1), 'complete');
    assert.ok(t.slice(1, -1).every((x) => x === 'chunk') && t.length > 2, t.join());
    assert.equal(bot.currentMessage, answerText(text, 7));
    const chunk = bot.events[1].data;
    assert.equal(chunk.is_final, false);
    assert.equal(chunk.suggested_products, null);
    assert.equal(chunk.confidence_score, null);
    const complete = bot.events.at(-1).data;
    assert.equal(complete.is_final, true);
    assert.equal(complete.content, '');
    assert.ok(Array.isArray(bot.products) && bot.products.length > 0, 'laptops suggested');
    assert.equal(bot.products[0].category, 'Laptop');
    assert.equal(typeof bot.confidence, 'number');
    assert.ok(bot.conversationId);

    bot.sendPing();
    while (!bot.pongs.length) await sleep(10);
    assert.match(bot.pongs[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);

    const e = bot.errors.length;
    bot.socket.send('{oops');
    while (bot.errors.length === e) await sleep(10);
    assert.equal(bot.errors.at(-1), 'Invalid JSON');
    assert.equal(bot.socket.readyState, WebSocket.OPEN);
    bot.close();
  });

  test('an unknown brand gets error, then the connection closes', async () => {
    const bot = new ChatbotWebSocket(br.base, 'no-such-brand');
    await bot.connect();
    const cl = await bot.closed;
    assert.deepEqual(types(bot.events), ['error']);
    assert.equal(bot.errors[0], "Brand 'no-such-brand' not found or inactive");
    assert.equal(cl.code, 1008);
  });
});

// ------------------------------------------------------ upstream failures

describe('generations', { skip: OWN, timeout: SUITE_MS }, () => {
  test('--gen-threads bounds running generations; a queued one outlives its lease and completes', async () => {
    const b = await startBridge({ PARLEY_LEASE_MS: '400' }, ['--gen-threads', '1']);
    try {
      const t1 = id('t'), t2 = id('t');
      const body1 = `primeiro [[fake tokens=30 token_ms=50]] ${t1}`;
      const body2 = `segundo [[fake tokens=5 token_ms=10]] ${t2}`;
      const a = new TicketAIChat(b.url(`/api/websocket/chat/${t1}`), body1);
      while (!a.log.length) await sleep(10);             // the only thread is busy
      const c = new TicketAIChat(b.url(`/api/websocket/chat/${t2}`), body2);
      let waiting = 0;
      for (let i = 0; i < 50 && !waiting; i++) {
        const m = await (await fetch(b.http('/metrics'))).text();
        waiting = Number(m.match(/^parley_ws_generations_waiting (\d+)$/m)[1]);
        if (!waiting) await sleep(20);
      }
      assert.equal(waiting, 1, 'the second generation waits');
      assert.equal(await a.done, 'done');
      assert.equal(await c.done, 'done', c.error || '');   // waited ~1.5 s > 3 leases
      assert.equal(c.aiResponse, answerText(body2, 5));
      assert.equal(a.aiResponse, answerText(body1, 30));
      a.close(); c.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });
});

describe('upstream failures', { skip: OWN, timeout: SUITE_MS }, () => {
  test('upstream down: a clear error, nothing cached, the connection stays open', async () => {
    const b = await startBridge({ OLLAMA_SERVER: 'http://127.0.0.1:9', PARLEY_CONNECT_TIMEOUT_MS: '1000' });
    try {
      const ticket = id('t');
      const c = new TicketAIChat(b.url(`/api/websocket/chat/${ticket}`), 'Sem internet');
      assert.equal(await c.done, 'error');
      assert.match(c.error, /connect|refused|upstream/i);
      assert.equal(c.ws.readyState, WebSocket.OPEN);
      c.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('an upstream hanging past PARLEY_IDLE_TIMEOUT_MS ends in error', async () => {
    const b = await startBridge({ PARLEY_IDLE_TIMEOUT_MS: String(300 * SLOW) });
    try {
      const ticket = id('t');
      const body = `Travou [[fake tokens=10 hang_after=2]] ${ticket}`;
      const c = new TicketAIChat(b.url(`/api/websocket/chat/${ticket}`), body);
      assert.equal(await c.done, 'error');
      assert.equal(c.aiResponse, answerTokens(body, 10).slice(0, 2).join(''));
      assert.match(c.error, /idle|timeout|tokens/i);
      assert.equal(c.ws.readyState, WebSocket.OPEN);
      c.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });
});

// --------------------------------------------------------------- limits

describe('limits and security', { skip: OWN, timeout: SUITE_MS }, () => {
  test('150 connections against WEBSOCKET_MAX_CONNECTIONS=100: 50 closed 1013', async () => {
    const b = await startBridge({ WEBSOCKET_MAX_CONNECTIONS: '100' });
    try {
      const conns = await Promise.all(Array.from({ length: 150 }, () =>
        connect(b.url(`/api/websocket/chat/${id('t')}`))));
      for (let i = 0; i < 100 && conns.filter((c) => c.closeInfo).length < 50; i++) await sleep(20);
      await sleep(100);
      const refused = conns.filter((c) => c.closeInfo).map((c) => c.closeInfo);
      assert.equal(refused.length, 50);
      assert.ok(refused.every((r) => r.code === 1013 && r.reason === 'too many connections'));
      const open = conns.filter((c) => c.ws.readyState === WebSocket.OPEN);
      assert.equal(open.length, 100);
      const metrics = await (await fetch(b.http('/metrics'))).text();
      assert.match(metrics, /^parley_ws_connections 100$/m);
      // a freed slot is usable again
      open[0].ws.close();
      await open[0].closed;
      await sleep(100);
      const again = await connect(b.url(`/api/websocket/chat/${id('t')}`));
      assert.equal(await Promise.race([again.closed, sleep(300).then(() => 'open')]), 'open');
      for (const c of [...open, again]) c.ws.terminate();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('an Origin outside PARLEY_ALLOWED_ORIGINS is refused with 403', async () => {
    const b = await startBridge({ PARLEY_ALLOWED_ORIGINS: 'https://help.example.com, https://ok.example' });
    try {
      await assert.rejects(connect(b.url(`/api/websocket/chat/${id('t')}`),
        { headers: { Origin: 'https://evil.example' } }), { status: 403 });
      const ok = await connect(b.url(`/api/websocket/chat/${id('t')}`),
        { headers: { Origin: 'https://ok.example' } });
      ok.ws.close();
      const noOrigin = await connect(b.url(`/api/websocket/chat/${id('t')}`));
      noOrigin.ws.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('with PARLEY_JWT_SECRET: missing, forged or expired tokens close 4401; good ones open', async () => {
    const secret = 'test-secret-0123456789abcdef0123456789';
    const b = await startBridge({ PARLEY_JWT_SECRET: secret });
    try {
      const now = Math.floor(Date.now() / 1000);
      const cases = [
        ['', /missing|no token/i],
        [hs256({ sub: 'ana', exp: now + 600 }, 'wrong-secret'), /signature/i],
        [hs256({ sub: 'ana', exp: now - 600 }, secret), /expired/i],
        ['not.a.jwt', /malformed|invalid/i],
      ];
      for (const [tok, why] of cases) {
        const q = tok ? `?token=${tok}` : '';
        const c = await connect(b.url(`/ws/${id('s')}${q}`));
        const cl = await c.closed;
        assert.equal(cl.code, 4401, `token ${tok}`);
        assert.match(cl.reason, /^Unauthorized: /);
        assert.match(cl.reason, why);
        assert.equal(c.msgs.length, 0, 'nothing before the close');
      }
      const tok = hs256({ sub: 'ana', exp: now + 600 }, secret);
      const svc = new WebSocketService(b.base, { token: tok });
      const hello = svc.next('message');
      svc.connect(id('s'));
      assert.equal((await hello).user_id, 'ana');
      svc.close();
      // Authorization: Bearer works for clients that can set headers
      const h = await connect(b.url(`/api/websocket/chat/${id('t')}`),
        { headers: { Authorization: `Bearer ${tok}` } });
      assert.equal(await Promise.race([h.closed, sleep(300).then(() => 'open')]), 'open');
      h.ws.close();
      // the CLI mints tokens the bridge accepts
      const cli = join(ROOT, process.env.BUILD || 'build', 'parley');
      if (existsSync(cli)) {
        const r = spawnSync(cli, ['token', 'bob', '60'], { env: { ...process.env, PARLEY_JWT_SECRET: secret,
          PARLEY_DB: join(b.dir, 'parley.db') }, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        const svc2 = new WebSocketService(b.base, { token: r.stdout.trim() });
        const hello2 = svc2.next('message');
        svc2.connect(id('s'));
        assert.equal((await hello2).user_id, 'bob');
        svc2.close();
      }
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('WEBSOCKET_TIMEOUT closes an idle connection with 1000 "idle timeout"', async () => {
    const b = await startBridge({ WEBSOCKET_TIMEOUT: '1' });
    try {
      const c = await connect(b.url(`/ws/chat/techpro`));
      const t0 = Date.now();
      const cl = await c.closed;
      assert.equal(cl.code, 1000);
      assert.equal(cl.reason, 'idle timeout');
      assert.ok(Date.now() - t0 >= 900, 'not before the timeout');
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('WebSocket PINGs find a dead peer (--ping): a peer that never answers is dropped', async () => {
    const b = await startBridge({}, ['--ping', '1']);
    try {
      const alive = await connect(b.url(`/ws/chat/techpro`));
      let pings = 0;
      alive.ws.on('ping', () => { pings++; });          // ws answers with a pong itself
      const dead = await connect(b.url(`/api/websocket/chat/${id('t')}`));
      dead.ws._socket.pause();                          // reads nothing: no pong
      const gauge = async () => Number((await (await fetch(b.http('/metrics'))).text())
        .match(/^parley_ws_connections (\d+)$/m)[1]);
      assert.equal(await gauge(), 2);
      const t0 = Date.now();
      while (await gauge() !== 1) {
        assert.ok(Date.now() - t0 < 8000 * SLOW, 'the silent peer is dropped within seconds');
        await sleep(100);
      }
      dead.ws._socket.resume();                         // now it sees the hang-up
      const cl = await dead.closed;
      assert.ok(cl.code === 1006 || cl.code === 1000 || cl.code === 1001, `closed ${cl.code}`);
      assert.ok(pings >= 1, 'the live peer was pinged');
      assert.equal(alive.ws.readyState, WebSocket.OPEN, 'the live peer stays');
      alive.ws.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });

  test('a reader that stops reading is closed 1008 "slow consumer"; others are not stalled', async () => {
    const b = await startBridge({}, []);
    try {
      const slow = await connect(b.url(`/ws/chat/techpro`));
      await slow.until((m) => m.length >= 1);
      slow.ws._socket.pause();                          // stop reading
      const ping = JSON.stringify({ type: 'ping', data: {} });
      const fast = new ChatbotWebSocket(b.base, 'techpro');
      await fast.connect();
      let closed = null;
      slow.closed.then((c) => { closed = c; });
      for (let round = 0; round < 200 && !closed; round++) {
        for (let i = 0; i < 500; i++) slow.ws.send(ping);
        await sleep(20);
        const m = await (await fetch(b.http('/metrics'))).text();
        if (/parley_ws_closes_total\{reason="slow_consumer"\} [1-9]/.test(m)) break;
      }
      const m = await (await fetch(b.http('/metrics'))).text();
      assert.match(m, /parley_ws_closes_total\{reason="slow_consumer"\} 1/);
      // the other client is served meanwhile
      fast.sendPing();
      while (!fast.pongs.length) await sleep(10);
      fast.close();
      slow.ws._socket.resume();
      const cl = await slow.closed;
      assert.ok(cl.code === 1008 || cl.code === 1006, `closed ${cl.code}`);
      if (cl.code === 1008) assert.equal(cl.reason, 'slow consumer');
    } finally {
      assert.equal((await b.stop()).code, 0);
    }
  });
});

// --------------------------------------------------------------- process

describe('process', { skip: OWN, timeout: SUITE_MS }, () => {
  test('SIGTERM closes every connection with 1001 and exits 0', async () => {
    const b = await startBridge();
    const a = await connect(b.url(`/ws/chat/techpro`));
    const c = await connect(b.url(`/api/websocket/chat/${id('t')}`));
    const r = b.stop('SIGTERM');
    const [ca, cc] = await Promise.all([a.closed, c.closed]);
    assert.equal(ca.code, 1001);
    assert.equal(cc.code, 1001);
    assert.equal(ca.reason, 'server shutting down');
    const { code } = await r;
    assert.equal(code, 0);
  });

  test('a unix socket listener serves the same protocols', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-ws-sock-'));
    const sock = join(dir, 'ws.sock');
    const b = await startBridge({}, ['--socket', sock]);
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(10);
      const c = await connect(`ws+unix://${sock}:/ws/chat/techpro`);
      await c.until((m) => m.length >= 1);
      assert.equal(c.msgs[0].type, 'welcome');
      c.ws.close();
    } finally {
      assert.equal((await b.stop()).code, 0);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('SIGHUP reopens the --log file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-ws-log-'));
    const log = join(dir, 'ws.log');
    const b = await startBridge({}, ['--log', log]);
    try {
      assert.match(readFileSync(log, 'utf8'), /listening on/);
      renameSync(log, `${log}.1`);
      b.child.kill('SIGHUP');
      for (let i = 0; i < 100 && !existsSync(log); i++) await sleep(20);
      assert.match(readFileSync(log, 'utf8'), /log reopened/);
    } finally {
      assert.equal((await b.stop()).code, 0);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const valgrind = spawnSync('valgrind', ['--version']).status === 0;
  test('under valgrind: a session of every protocol and SIGTERM leave no leak or error',
    { skip: SANITIZED ? 'sanitized build: LeakSanitizer checks every bridge instead'
      : !valgrind && 'valgrind not installed', timeout: 120000 }, async () => {
      const b = await startBridge({}, ['--workers', '2', '--gen-threads', '2'],
        ['valgrind', '--leak-check=full', '--errors-for-leak-kinds=definite',
          '--error-exitcode=99', '--quiet']);
      const ticket = id('t');
      const t = new TicketAIChat(b.url(`/api/websocket/chat/${ticket}`), `valgrind [[fake tokens=5]] ${ticket}`);
      assert.equal(await t.done, 'done');
      const svc = new WebSocketService(b.base);
      svc.connect(id('s'));
      await svc.next('connected', 20000);
      const end = svc.next('streamEnd', 20000);
      svc.sendMessage('oi [[fake tokens=3]]');
      await end;
      const bot = new ChatbotWebSocket(b.base, 'techpro');
      await bot.connect();
      await bot.sendMessage('a phone please [[fake tokens=3]]');
      const big = await connect(b.url(`/ws/${id('s')}`));
      big.ws.send('x'.repeat(70000));
      assert.equal((await big.closed).code, 1009);
      const r = await b.stop('SIGTERM');           // t, svc and bot still open: closed 1001
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /definitely lost: [1-9]|Invalid (read|write)|uninitialised/);
    });

  // The bridge carries long-poll for Apache + mod_fcgid (ws-bridge/httpfront.c):
  // the FastCGI front's handlers over lws HTTP, its parked GETs, its exit.
  test('long-poll carried by the bridge: a parked GET answered by a POSTed ticket, Phoenix LongPoll, a GET parked at SIGTERM answered at once; exit clean' +
    (valgrind && !SANITIZED ? ' (under valgrind)' : ' (sanitizers check the exit)'), { timeout: 120000 }, async () => {
    const b = await startBridge({}, ['--workers', '2'], valgrind && !SANITIZED
      ? ['valgrind', '--leak-check=full', '--errors-for-leak-kinds=definite', '--error-exitcode=99', '--quiet']
      : []);
    const http = (p) => b.base.replace(/^ws/, 'http') + p;
    const ticket = id('lp');
    const open = await fetch(http('/api/poll/open'), { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ path: `/api/websocket/chat/${ticket}` }) });
    assert.equal(open.status, 200);
    const { sid } = await open.json();
    // parked first (nothing to say yet), then answered by the POSTed ticket
    let cursor = 0, text = '', done = false;
    const first = fetch(http(`/api/poll/${sid}?cursor=0&wait=20`));
    await sleep(200);
    const post = await fetch(http(`/api/poll/${sid}`), { method: 'POST', body: JSON.stringify({ ticketBody: `lp [[fake tokens=5]] ${ticket}` }) });
    assert.equal(post.status, 202);
    for (let r = await first, i = 0; !done && i < 50; i++) {
      assert.equal(r.status, 200);
      const j = await r.json();
      for (const m of j.messages) { if (m.type === 'stream') text += m.content; if (m.type === 'done') done = true; }
      cursor = j.cursor;
      if (!done) r = await fetch(http(`/api/poll/${sid}?cursor=${cursor}&wait=10`));
    }
    assert.ok(done && text.length > 0, `text ${JSON.stringify(text)}`);
    // Phoenix LongPoll: a new session (410 + token), then a heartbeat posted
    const g = await (await fetch(http('/socket/longpoll?vsn=2.0.0'))).json();
    assert.equal(g.status, 410);
    const hb = await fetch(http(`/socket/longpoll?vsn=2.0.0&token=${g.token}`), { method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' }, body: '[null,"1","phoenix","heartbeat",{}]' });
    assert.equal((await hb.json()).status, 200);
    // a GET parked at SIGTERM is answered at once, before the bridge exits
    const parked = fetch(http(`/api/poll/${sid}?cursor=${cursor}&wait=30`));
    await sleep(300);
    const t0 = Date.now();
    const stopped = b.stop('SIGTERM');
    const last = await parked;
    assert.equal(last.status, 200);
    assert.ok(Date.now() - t0 < 5000, 'answered at shutdown, not at the end of its wait');
    const r = await stopped;
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /definitely lost: [1-9]|Invalid (read|write)|uninitialised/);
  });

  test('/metrics and the stats file count connections, bytes, users and generation latency', async () => {
    const ticket = id('t');
    const c = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), `métricas [[fake tokens=4]] ${ticket}`);
    await c.done;
    c.close();
    const m = await (await fetch(br.http('/metrics'))).text();
    for (const name of ['parley_ws_messages_sent_total', 'parley_ws_sent_bytes_total',
      'parley_ws_messages_received_total', 'parley_generation_seconds_count',
      'parley_generation_first_token_seconds_count']) {
      const v = Number(m.match(new RegExp(`^${name} (\\d+)`, 'm'))?.[1]);
      assert.ok(v > 0, `${name} = ${v}`);
    }
    assert.match(m, /^parley_ws_users [1-9]\d*$/m);
    assert.match(m, /^parley_ws_user_sent_bytes_max [1-9]\d*$/m);
    assert.doesNotMatch(m, /user="/, 'no metric names a user');
    for (let i = 0; i < 80 && !existsSync(join(br.dir, 'stats.prom')); i++) await sleep(100);
    assert.match(readFileSync(join(br.dir, 'stats.prom'), 'utf8'), /^parley_ws_connections \d+$/m);
  });
});

// ------------------------------------------------------- cross-transport

describe('cross-transport (through the web server)', { skip: !POLL && 'WS_POLL_URL not set', timeout: SUITE_MS }, () => {
  test('long-poll starts, WebSocket joins: identical text from one upstream call', async () => {
    const ticket = id('x');
    const body = `Long-poll first [[fake tokens=24 token_ms=100]] ${ticket}`;
    const before0 = (await fakeStats()).total;
    const lp = new LongPoll(POLL, `/api/websocket/chat/${ticket}`);
    await lp.open();
    await lp.send({ ticketBody: body });
    const ws = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    try {
      await lp.until(ended);
      assert.equal(await ws.done, 'done');
      assert.ok(types(ws.log).includes('stream'), 'the WebSocket client watched the live stream');
      assert.equal(lp.msgs.at(-1).type, 'done');
      assert.equal(lp.text(), answerText(body, 24));
      assert.equal(ws.aiResponse, lp.text());
      assert.equal((await fakeStats()).total - before0, 1, 'one upstream call');
    } finally {
      ws.close();       // a failed assertion must not leave the socket open until the bridge's idle timeout
    }
  });

  test('WebSocket starts, long-poll joins: identical text from one upstream call', async () => {
    const ticket = id('x');
    // 2.4 s of streaming: the long-poll client's first requests may reach a
    // parley.fcgi that mod_fcgid is still spawning (slow under ASan); at
    // token_ms=25 the answer was sometimes over (and cached) before its POST.
    const body = `WebSocket first [[fake tokens=24 token_ms=100]] ${ticket}`;
    const before0 = (await fakeStats()).total;
    const ws = new TicketAIChat(br.url(`/api/websocket/chat/${ticket}`), body);
    try {
      while (!ws.log.length) await sleep(10);
      const lp = new LongPoll(POLL, `/api/websocket/chat/${ticket}`);
      await lp.open();
      await lp.send({ ticketBody: body });
      assert.equal(await ws.done, 'done');
      await lp.until(ended);
      assert.ok(types(lp.msgs).includes('stream'), 'the long-poll client watched the live stream');
      assert.equal(lp.text(), ws.aiResponse);
      assert.equal(ws.aiResponse, answerText(body, 24));
      assert.equal((await fakeStats()).total - before0, 1, 'one upstream call');
    } finally {
      ws.close();       // a failed assertion must not leave the socket open until the bridge's idle timeout
    }
  });

  test('seed 001: a session streamed over WebSocket is the same conversation over long-poll', async () => {
    const session = id('s');
    const svc = new WebSocketService(br.base);
    svc.connect(session);
    await svc.next('connected');
    const end = svc.next('streamEnd');
    svc.sendMessage(`cross [[fake tokens=4]] ${session}`);
    await end;
    svc.close();
    const lp = new LongPoll(POLL, `/ws/${session}`);
    await lp.open();
    await lp.until((m) => m.length >= 1);
    assert.equal(lp.msgs[0].type, 'connected');
    assert.equal(lp.msgs[0].session_id, session);
    await lp.send({ type: 'ping' });
    await lp.until((m) => m.some((x) => x.type === 'pong'));
  });
});
