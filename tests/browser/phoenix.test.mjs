// phoenix.test.mjs — seed 003 (NeuralBridge, Phoenix Channels) in headless
// Chromium with the OFFICIAL phoenix.js (the npm package's browser build,
// served as /vendor/phoenix.js) against a real web server + parley.fcgi
// (+ the bridge when PARLEY_WS=1). Run by
// tests/integration/t0610-phoenix-browser.sh.
//
// www/neuralbridge.html: join, query then the same query (source "cache"),
// the metadata line, the stream toggle (tokens appear, then complete),
// get_history, markup in an answer shown as text, the "Force LongPoll"
// switch, the WebSocket → LongPoll fallback (longPollFallbackMs) when the
// WebSocket fails or opens but never answers. www/seed003.html (the seed's
// own page, socket URL changed) in open mode: query, cache, streaming, over
// LongPoll (the page's WebSocket removed, so phoenix.js picks LongPoll
// itself) and over WebSocket; its hash-only CSP stops markup in an answer
// from running script.
//
// With PHX_GROUPS (t0610 sets it per setup) also: the long run (60 s of
// heartbeats on each transport and server, leave/rejoin, two topics, on the
// harness page tests/browser/fixtures/phoenix-harness.html) and a stream
// cut on WebSocket completed on LongPoll.
//
// Whether the bridge speaks Phoenix at /socket/websocket at all is probed
// first (a heartbeat answered within 3 s; the token as the LAST query
// argument, so that the probe does not depend on where phoenix.js puts it);
// WebSocket tests are skipped, saying so, when it does not.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import {
  BASE, SETUP, WS, SECRET, TOKEN, launch, openPage, pageProblems, uid, answerDirective, shotPath,
} from './lib.mjs';

const T = { timeout: 30000 };
const MARKUP = 'Try <b>bold</b> steps: Tom&Jerry <i>said</i> "1 < 2 && 3 > 2" <img src=x onerror=alert(1)> café 🚀';
let browser;
let PHX_WS = false;       // the bridge answers Phoenix frames at /socket/websocket

// A heartbeat over /socket/websocket answered within 3 s.
function probeWebSocket() {
  if (!WS) return Promise.resolve(false);
  const q = new URLSearchParams({ vsn: '2.0.0' });
  if (TOKEN) q.set('auth_token', TOKEN);
  return new Promise((resolve) => {
    let ws;
    const end = (v) => { clearTimeout(timer); try { ws.terminate(); } catch { /* gone */ } resolve(v); };
    const timer = setTimeout(() => end(false), 3000);
    try {
      ws = new WebSocket(`${BASE.replace(/^http/, 'ws')}/socket/websocket?${q}`);
    } catch { end(false); return; }
    ws.on('open', () => ws.send(JSON.stringify([null, '1', 'phoenix', 'heartbeat', {}])));
    ws.on('message', (d) => {
      try {
        const f = JSON.parse(String(d));
        end(Array.isArray(f) && f[1] === '1' && f[3] === 'phx_reply' && f[4]?.status === 'ok');
      } catch { end(false); }
    });
    ws.on('error', () => end(false));
    ws.on('close', () => end(false));
  });
}

before(async () => {
  PHX_WS = await probeWebSocket();
  console.log(`# ${SETUP}: Phoenix over WebSocket at /socket/websocket: ${PHX_WS ? 'yes' : 'NO (LongPoll and fallback only)'}`);
  browser = await launch();
});
after(async () => { await browser?.close(); });

// WebSocket tests only where a bridge runs (PARLEY_WS=1); they skip
// themselves, saying so, when the probe in before() finds no Phoenix there.
const TRANSPORTS = WS ? ['longpoll', 'websocket'] : ['longpoll'];

async function noProblems(page, allow = []) {
  const p = (await pageProblems(page)).filter((x) => !allow.some((re) => re.test(x)));
  assert.deepEqual(p, [], 'page errors, console errors or CSP violations');
}

const sockets = (page) => page.sockets.filter((u) => u.includes('/socket/websocket'));
const longpolls = (page) => page.requests.filter((r) => r.url.includes('/socket/longpoll'));

// Which groups of tests run (PHX_GROUPS, comma-separated; t0610 picks them
// per setup): pages (the demo pages, as before), fallback (the fallback test
// alone), long (60 s of heartbeats, leave/rejoin, two topics, with the
// harness page), drop (a stream cut on WebSocket completed on LongPoll).
const GROUPS = new Set((process.env.PHX_GROUPS || 'pages').split(',').map((g) => g.trim()).filter(Boolean));
// The servers the long run and the drop test use: this one, and lighttpd
// (with the bridge behind it) when t0610 started one next to it.
const SERVERS = [{ name: SETUP, base: BASE }];
if (process.env.PARLEY_BASE_LIGHTTPD) SERVERS.push({ name: 'lighttpd', base: process.env.PARLEY_BASE_LIGHTTPD });
const HARNESS = '/_test/phoenix-harness.html';   // tests/browser/fixtures/, served by t0610
const LONG_MS = Number(process.env.PHX_LONG_MS || 60000);
const HB_MS = 5000;

// --- long run: the official client kept open for LONG_MS ----------------------
//
// One harness page per server, opened first; on it, one socket per
// transport (LongPoll forced; WebSocket without fallback, so a WebSocket
// that breaks is not hidden by LongPoll) with a heartbeat every 5 s, and on
// WebSocket one more socket at phoenix.js's default 30 s (the rhythm
// applications run: 30 s of silence through the proxy between frames).
// phoenix.js sends no heartbeat over LongPoll (its LongPoll has
// skipHeartbeat); the harness sends the same frame there itself
// (socket.ping) every 5 s. The other tests of the file run meanwhile; the
// leave/rejoin and two-topic tests use these very sockets; the last test
// waits for LONG_MS and checks every heartbeat was answered with no
// reconnect.
const LR = [];            // {server, page, t0, socks: [{name, transport, hb}]}
const runLong = GROUPS.has('long');

async function harnessOpen(page, name, opts) {
  await page.evaluate(([n, o]) => window.PT.open(n, o), [name, opts]);
}
async function harnessConnected(page, name, transport, ms = 15000) {
  await page.waitForFunction(([n, tr]) => {
    const s = window.PT.stats(n);
    return s.connected && s.transport === tr;
  }, [name, transport], { timeout: ms }).catch(async (e) => {
    const st = await page.evaluate((n) => window.PT.stats(n), name).catch(() => null);
    throw new Error(`${name}: not connected over ${transport} (${JSON.stringify(st)}): ${e.message}`);
  });
}

if (runLong) {
  test(`${SETUP}: long run starts: the official client on ${SERVERS.map((x) => x.name).join(' and ')}, each transport, heartbeats every 5 s (WebSocket also at the default 30 s)`, T, async () => {
    for (const server of SERVERS) {
      const page = await openPage(browser.context, server.base + HARNESS);
      const run = { server, page, socks: [] };
      for (const transport of (PHX_WS ? ['longpoll', 'websocket'] : ['longpoll'])) {
        run.socks.push({ name: `${transport}-5s`, transport, hb: HB_MS });
        if (transport === 'websocket') run.socks.push({ name: 'websocket-30s', transport, hb: 30000 });
      }
      for (const k of run.socks) {
        await harnessOpen(page, k.name, { transport: k.transport, token: TOKEN, hbMs: k.hb });
      }
      for (const k of run.socks) await harnessConnected(page, k.name, k.transport);
      run.t0 = Date.now();
      // a channel on each, answering
      for (const k of run.socks) {
        const pong = await page.evaluate(async ([n, id]) => {
          const ch = window.PT.socks[n].sock.channel(`proxy:${id}`, {});
          await window.PT.joined(ch);
          const p = window.PT.next(ch, 'pong', 10000);
          ch.push('ping', {});
          return (await p).timestamp;
        }, [k.name, uid('lr')]);
        assert.match(pong, /^\d{4}-\d\d-\d\dT/);
      }
      LR.push(run);
    }
  });
}

// --- www/neuralbridge.html ---------------------------------------------------

// The tests of the pages group (and the fallback test, also in its own group).
const none = () => {};
const pagesTest = GROUPS.has('pages') ? test : none;
const fallbackTest = GROUPS.has('pages') || GROUPS.has('fallback') ? test : none;

async function waitJoined(page) {
  await page.waitForFunction(() => {
    const s = document.querySelector('#status');
    return s && s.dataset.state === 'open' && /Joined/.test(s.textContent);
  }, null, { timeout: 15000 }).catch(async (e) => {
    throw new Error(`not joined: "${await page.textContent('#status').catch(() => '?')}" (${e.message})`);
  });
  return page.getAttribute('body', 'data-transport');
}

// The n-th (1-based) finished assistant message.
async function answer(page, n) {
  await page.waitForFunction((k) => document.querySelectorAll(
    '#messages .msg.assistant[data-state="done"]:not([data-history]), #messages .msg.error').length >= k,
  n, { timeout: 20000 });
  const err = await page.$$eval('#messages .msg.error .text', (es) => es.map((e) => e.textContent));
  assert.deepEqual(err, [], 'no error message');
  return page.$$eval('#messages .msg.assistant[data-state="done"]:not([data-history])', (bs, k) => {
    const b = bs[k - 1];
    const t = b.querySelector('.text');
    const m = b.querySelector('.meta');
    return { text: t.textContent, elements: t.querySelectorAll('*').length, source: b.dataset.source || '',
             meta: m ? m.textContent : null };
  }, n);
}

async function ask(page, text) {
  await page.waitForFunction(() => !document.querySelector('#send').disabled, null, { timeout: 15000 });
  await page.fill('#message', text);
  await page.click('#send');
}

for (const transport of TRANSPORTS) {
  pagesTest(`${SETUP}: NeuralBridge page over ${transport}: query, same query from the cache, stream, history, markup as text`, T, async (t) => {
    if (transport === 'websocket' && !PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
    const session = uid('nb');
    // websocket: no fallback, so the test fails if the WebSocket does not work.
    const q = transport === 'longpoll' ? '&transport=longpoll' : '&fallback=0';
    const page = await openPage(browser.context, `/neuralbridge.html?session=${session}${q}`);
    assert.equal(await waitJoined(page), transport);

    const q1 = `How do I reset my router ${uid('q')}? ${answerDirective(MARKUP, 5)}`;
    await ask(page, q1);
    const a1 = await answer(page, 1);
    assert.equal(a1.text, MARKUP, 'the answer, character for character');
    assert.equal(a1.elements, 0, 'no element created from the answer\'s markup');
    assert.equal(a1.source, 'llm');
    assert.match(a1.meta, /^source llm · confidence (—|[\d.]+%) · [\d,]+ ms · RAG context \d+ · model \S+/);

    await ask(page, q1);
    const a2 = await answer(page, 2);
    assert.equal(a2.source, 'cache', 'the same query again comes from the cache');
    assert.equal(a2.text, MARKUP);
    assert.match(a2.meta, /^source cache · /);

    // Stream toggle: tokens appear one by one, then the stream completes.
    await page.click('#stream');
    assert.equal(await page.getAttribute('#stream', 'aria-pressed'), 'true');
    const words = Array.from({ length: 24 }, (_, i) => `word${i}`);
    const long = words.join(' ');
    await ask(page, `Explain streaming ${uid('q')} ${answerDirective(long, 60)}`);
    const partial = await page.waitForFunction((full) => {
      const b = document.querySelector('#messages .msg.assistant[data-state="streaming"] .text');
      return b && b.textContent.length > 0 && b.textContent.length < full.length ? b.textContent : null;
    }, long, { timeout: 15000 });
    assert.ok(long.startsWith(await partial.jsonValue()), 'a prefix of the answer while streaming');
    const a3 = await answer(page, 3);
    assert.equal(a3.text, long);
    assert.equal(a3.meta, null, 'a stream has no metadata line');

    // History: the session's messages, oldest first, as text.
    await page.click('#history');
    await page.waitForSelector('#messages[data-history]', { timeout: 15000 });
    const hist = await page.$$eval('#messages .msg[data-history]', (bs) => bs.map((b) => ({
      role: b.classList.contains('user') ? 'user' : b.classList.contains('assistant') ? 'assistant' : b.className,
      text: b.querySelector('.text').textContent, elements: b.querySelector('.text').querySelectorAll('*').length,
    })));
    assert.deepEqual(hist.map((h) => h.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']);
    assert.equal(hist[0].text, q1);
    assert.equal(hist[1].text, MARKUP);
    assert.equal(hist[3].text, MARKUP);
    assert.equal(hist[5].text, long);
    assert.ok(hist.every((h) => h.elements === 0));

    // Ping.
    await page.click('#ping');
    await page.waitForSelector('#messages .notice.pong', { timeout: 10000 });

    if (transport === 'longpoll') {
      assert.deepEqual(sockets(page), [], 'no WebSocket opened when LongPoll is forced');
      assert.ok(longpolls(page).length > 0);
    } else {
      assert.ok(sockets(page).length >= 1);
      assert.deepEqual(longpolls(page).map((r) => r.url), [], 'no LongPoll request over WebSocket');
    }
    await page.screenshot({ path: shotPath(`neuralbridge-${transport}`), fullPage: true });
    await noProblems(page);
    await page.close();
  });
}

pagesTest(`${SETUP}: NeuralBridge page: the "Force LongPoll" switch moves the session to LongPoll and back`, T, async () => {
  const session = uid('nb');
  const page = await openPage(browser.context, `/neuralbridge.html?session=${session}&fallback=1500`);
  const first = await waitJoined(page);
  assert.equal(first, PHX_WS ? 'websocket' : 'longpoll');
  const q1 = `Switch test ${uid('q')} ${answerDirective('before the switch', 5)}`;
  await ask(page, q1);
  assert.equal((await answer(page, 1)).text, 'before the switch');

  const before = sockets(page).length;
  await page.check('#force-longpoll');
  await page.waitForFunction(() => document.body.dataset.transport === 'longpoll' &&
    document.querySelector('#status').dataset.state === 'open', null, { timeout: 15000 });
  await waitJoined(page);
  const lpBefore = longpolls(page).length;
  await ask(page, `After the switch ${uid('q')} ${answerDirective('over LongPoll', 5)}`);
  assert.equal((await answer(page, 2)).text, 'over LongPoll');
  assert.equal(sockets(page).length, before, 'no WebSocket opened once LongPoll is forced');
  assert.ok(longpolls(page).length > lpBefore, 'the answer came over /socket/longpoll');

  if (PHX_WS) {
    await page.uncheck('#force-longpoll');
    await page.waitForFunction(() => document.body.dataset.transport === 'websocket' &&
      document.querySelector('#status').dataset.state === 'open', null, { timeout: 15000 });
    await ask(page, `Back again ${uid('q')} ${answerDirective('over WebSocket', 5)}`);
    assert.equal((await answer(page, 3)).text, 'over WebSocket');
  }
  await noProblems(page);
  await page.close();
});

fallbackTest(`${SETUP}: NeuralBridge page: a WebSocket that fails (no Phoenix bridge) or opens and never answers (bridge there, intercepted) → LongPoll fallback, the chat works`, T, async () => {
  const session = uid('nb');
  let intercepted = 0;
  const hold = PHX_WS ? async (page) => {
    // The page's WebSocket to /socket/websocket is taken over by the test:
    // it opens, and nothing ever answers (no heartbeat reply, no join reply).
    await page.routeWebSocket(/\/socket\/websocket/, () => { intercepted++; });
  } : undefined;
  const t0 = Date.now();
  const page = await openPage(browser.context, `/neuralbridge.html?session=${session}&fallback=1500`, hold);
  assert.equal(await waitJoined(page), 'longpoll');
  if (PHX_WS) {
    assert.ok(intercepted >= 1, 'the WebSocket was tried (and held) first');
    assert.ok(Date.now() - t0 >= 1400, 'LongPoll only after longPollFallbackMs');
  } else {
    assert.ok(sockets(page).length >= 1 || page.wsFailures.length >= 1, 'a WebSocket was tried first');
  }
  assert.match(await page.textContent('#status'), /fell back to LongPoll/);
  await ask(page, `Fallback ${uid('q')} ${answerDirective('answered over the fallback', 5)}`);
  assert.equal((await answer(page, 1)).text, 'answered over the fallback');
  await page.click('#stream');
  await ask(page, `Fallback stream ${uid('q')} ${answerDirective('streamed over the fallback', 20)}`);
  assert.equal((await answer(page, 2)).text, 'streamed over the fallback');
  await noProblems(page);
  await page.close();
});

// --- www/seed003.html: the seed's own page -----------------------------------

async function seedAssistant(page, n) {
  await page.waitForFunction((k) => document.querySelectorAll('#messages .message.assistant:not(.streaming)').length >= k,
    n, { timeout: 20000 }).catch(async (e) => {
    throw new Error(`no answer ${n}: status "${await page.textContent('#status')}", error "${await page.textContent('#error')}" (${e.message})`);
  });
  return page.$$eval('#messages .message.assistant:not(.streaming)', (bs, k) => bs[k - 1].textContent, n);
}

async function seedSend(page, text) {
  await page.waitForFunction(() => !document.querySelector('#send-button').disabled, null, { timeout: 15000 });
  await page.fill('#message-input', text);
  await page.press('#message-input', 'Enter');
}

// The seed's page sends no token: open mode only.
for (const transport of SECRET ? [] : TRANSPORTS) {
  pagesTest(`${SETUP}: the seed's own page (seed003.html) over ${transport}: query, cache, streaming; markup cannot run script`, T, async (t) => {
    if (transport === 'websocket' && !PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
    // LongPoll: the page's browser has no WebSocket, so phoenix.js itself
    // picks LongPoll (its default is `global.WebSocket || LongPoll`); the
    // page is not changed.
    const noWs = transport === 'longpoll'
      ? (page) => page.addInitScript(() => { window.WebSocket = undefined; }) : undefined;
    const page = await openPage(browser.context, '/seed003.html', noWs);
    await page.waitForFunction(() => document.querySelector('#status').textContent === 'Conectado', null, { timeout: 15000 });

    const q = `Seed page ${uid('q')} ${answerDirective('Hello from Parley', 5)}`;
    await seedSend(page, q);
    const a1 = await seedAssistant(page, 1);
    assert.match(a1, /Hello from Parley/);
    assert.match(a1, /Fonte: llm/);
    await seedSend(page, q);
    assert.match(await seedAssistant(page, 2), /Fonte: cache/);

    await page.click('button:has(#streaming-mode)');
    assert.equal(await page.textContent('#streaming-mode'), 'Stream: ON');
    const long = Array.from({ length: 12 }, (_, i) => `token${i}`).join(' ');
    await seedSend(page, `Seed stream ${uid('q')} ${answerDirective(long, 40)}`);
    assert.equal((await seedAssistant(page, 3)).trim(), long);

    // The seed renders answers with innerHTML; the page's CSP (hashes only,
    // img-src 'none') keeps an injected handler from running.
    await page.click('button:has(#streaming-mode)');
    await seedSend(page, `Seed xss ${uid('q')} ${answerDirective('<img src=x onerror="window.__pwned=1">ok', 5)}`);
    await seedAssistant(page, 4);
    await page.waitForTimeout(300);
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'the injected handler did not run');

    if (transport === 'longpoll') {
      assert.deepEqual(sockets(page), []);
      assert.ok(longpolls(page).length > 0);
    } else {
      assert.ok(sockets(page).length >= 1);
      assert.deepEqual(longpolls(page).map((r) => r.url), []);
    }
    await page.screenshot({ path: shotPath(`seed003-${transport}`), fullPage: true });
    // Only the blocked image and handler of the injected markup.
    await noProblems(page, [/img-src/, /script-src-attr|inline event handler|Refused to load the image|Refused to execute/]);
    await page.close();
  });
}

pagesTest(`${SETUP}: /vendor/phoenix.js is the npm package's build; seed003.html allows its inline code by hash only`, T, async () => {
  const served = await (await fetch(`${BASE}/vendor/phoenix.js`)).text();
  assert.equal(served, readFileSync('node_modules/phoenix/priv/static/phoenix.js', 'utf8'));
  const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
  assert.equal(JSON.parse(readFileSync('node_modules/phoenix/package.json', 'utf8')).version, pkg.devDependencies.phoenix);
  const html = await (await fetch(`${BASE}/seed003.html`)).text();
  const csp = html.match(/<meta http-equiv="Content-Security-Policy" content="([^"]*)">/)?.[1];
  assert.ok(csp, 'seed003.html has a policy');
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/);
  for (const d of ["default-src 'none'", "img-src 'none'", "connect-src 'self'", "base-uri 'none'", "form-action 'none'"]) {
    assert.ok(csp.includes(d), d);
  }
  assert.match(html, /new Phoenix\.Socket\("\/socket"\)/);
  assert.match(html, /<script src="\/vendor\/phoenix\.js"><\/script>/);
});

// --- long run, while the heartbeats go on -------------------------------------

const words = (w, n) => Array.from({ length: n }, (_, i) => `${w}${i}`).join(' ');

if (runLong) {
  for (const server of SERVERS) {
    for (const transport of TRANSPORTS) {
      test(`${SETUP}: long run, ${server.name} over ${transport}: leave and rejoin; two topics on one socket each get only their own answers (heartbeats running)`, T, async (t) => {
        if (transport === 'websocket' && !PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
        const run = LR.find((r) => r.server === server);
        assert.ok(run, 'the long run started');
        const name = `${transport}-5s`;
        const A = words('apple', 12), B = words('banana', 12);
        const r = await run.page.evaluate(async ([n, ids, qs]) => {
          const PT = window.PT, sock = PT.socks[n].sock;
          const out = {};
          // leave and rejoin the same topic
          const a = sock.channel(`proxy:${ids[0]}`, {});
          await PT.joined(a);
          let p = PT.next(a, 'pong', 10000); a.push('ping', {}); await p;
          out.leave = await new Promise((resolve) => a.leave(10000).receive('ok', () => resolve('ok')).receive('timeout', () => resolve('timeout')));
          out.leftState = a.state;
          out.stillListed = sock.channels.includes(a);
          const again = sock.channel(`proxy:${ids[0]}`, {});
          await PT.joined(again);
          p = PT.next(again, 'response', 20000); again.push('query', { query: qs[0] });
          out.rejoined = (await p).response;
          // two topics at once on this socket: a stream and a query each
          const x = sock.channel(`proxy:${ids[1]}`, {}), y = sock.channel(`proxy:${ids[2]}`, {});
          await Promise.all([PT.joined(x), PT.joined(y)]);
          const topics = {};
          const ref = sock.onMessage((m) => { (topics[m.topic] = topics[m.topic] || []).push(m.event); });
          const sx = PT.stream(x, 30000), sy = PT.stream(y, 30000);
          x.push('stream_query', { query: qs[1] });
          y.push('stream_query', { query: qs[2] });
          await Promise.all([sx.promise, sy.promise]);
          const rx = PT.next(x, 'response', 20000), ry = PT.next(y, 'response', 20000);
          x.push('query', { query: qs[3] });
          y.push('query', { query: qs[4] });
          out.responses = [(await rx).response, (await ry).response];
          const hx = PT.next(x, 'history', 10000), hy = PT.next(y, 'history', 10000);
          x.push('get_history', {}); y.push('get_history', {});
          out.history = [(await hx).messages.map((m) => m.content), (await hy).messages.map((m) => m.content)];
          sock.off([ref]);
          out.streams = [{ text: sx.text, starts: sx.starts, tokens: sx.tokens }, { text: sy.text, starts: sy.starts, tokens: sy.tokens }];
          out.topicEvents = topics;
          x.leave(); y.leave(); again.leave();
          return out;
        }, [name, [uid('lr-a'), uid('lr-x'), uid('lr-y')], [
          `rejoined ${uid('q')} ${answerDirective('answer after the rejoin', 5)}`,
          `topic x ${uid('q')} ${answerDirective(A, 25)}`,
          `topic y ${uid('q')} ${answerDirective(B, 25)}`,
          `query x ${uid('q')} ${answerDirective('only for x', 5)}`,
          `query y ${uid('q')} ${answerDirective('only for y', 5)}`,
        ]]);
        assert.equal(r.leave, 'ok', 'phx_leave answered');
        assert.equal(r.leftState, 'closed');
        assert.equal(r.stillListed, false, 'the left channel is gone from the socket');
        assert.equal(r.rejoined, 'answer after the rejoin', 'the rejoined topic answers');
        assert.deepEqual(r.streams.map((x) => x.text), [A, B], 'each topic streamed exactly its own answer');
        assert.ok(r.streams.every((x) => x.starts === 1 && x.tokens >= 6), `streamed in tokens: ${JSON.stringify(r.streams.map((x) => x.tokens))}`);
        assert.deepEqual(r.responses, ['only for x', 'only for y']);
        assert.equal(r.history[0].length, 4);
        assert.deepEqual([r.history[0][1], r.history[0][3]], [A, 'only for x'], 'history of x: its own messages only');
        assert.deepEqual([r.history[1][1], r.history[1][3]], [B, 'only for y'], 'history of y: its own messages only');
        const tx = Object.keys(r.topicEvents).filter((k) => k.startsWith('proxy:'));
        assert.equal(tx.length, 2, `frames on the two topics only: ${tx}`);
        await noProblems(run.page);
      });
    }
  }
}

// --- a stream cut on WebSocket, completed on LongPoll ---------------------------
//
// The page's WebSocket is routed through the test (page.routeWebSocket +
// connectToServer: a real connection to the bridge). Once part of a slow
// stream has arrived, the test closes that connection on both sides and
// holds every later WebSocket (it opens, nothing answers): phoenix.js
// reconnects, its health check goes unanswered, it falls back to LongPoll
// after longPollFallbackMs and rejoins the topic there. The server follows a
// running generation from its start for a channel that joins
// (docs/protocol-phoenix.md "Sessions"), so the client gets stream_start
// again and every token from the first: reassembled as a client must (a
// stream_start restarts the answer), the text is the answer exactly once.
//
// On the harness phoenix.js rejoins late: the join it pushed into the held
// WebSocket is not failed when the fallback replaces that socket, so the
// channel waits for that push's timeout (the Socket's `timeout`, 10 s),
// sends phx_leave with that join_ref, and rejoins after rejoinAfterMs
// (1 s): about 11 s after the cut. The harness's answer therefore streams
// for 20 s (50 tokens, 400 ms apart), so that it is still running when the
// rejoin comes. (With 100 ms tokens it had ended 6 s before the rejoin and
// the join rightly followed nothing: no answer was being generated.)

async function routedPage(url, ctl) {
  return openPage(browser.context, url, async (p) => {
    p.lpAnswers = [];
    p.on('response', async (r) => {
      if (r.url().includes('/socket/longpoll') && r.request().method() === 'GET') p.lpAnswers.push(await r.text().catch(() => '?'));
    });
    await p.routeWebSocket(/\/socket\/websocket/, (ws) => {
      if (!ctl.pass) { ctl.held++; return; }
      ctl.routes.push({ ws, server: ws.connectToServer() });
    });
  });
}

async function cut(ctl) {
  ctl.pass = false;
  for (const r of ctl.routes) {
    await r.server.close().catch(() => {});
    await r.ws.close().catch(() => {});
  }
}

if (GROUPS.has('drop')) {
  for (const server of SERVERS) {
    test(`${SETUP}: ${server.name}: a stream running when the WebSocket drops is completed on LongPoll (longPollFallbackMs), the answer exactly once`, { timeout: 60000 }, async (t) => {
      if (!PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
      const ctl = { pass: true, routes: [], held: 0 };
      const page = await routedPage(server.base + HARNESS, ctl);
      await harnessOpen(page, 'drop', { transport: 'websocket', token: TOKEN, fallbackMs: 1500 });
      await harnessConnected(page, 'drop', 'websocket');
      assert.equal(ctl.routes.length, 1, 'the WebSocket went through the route');
      const expected = words('tok', 50);
      const id = uid('drop');
      await page.evaluate(async ([sid, q]) => {
        const ch = window.PT.socks.drop.sock.channel(`proxy:${sid}`, {});
        await window.PT.joined(ch);
        window.__ch = ch;
        window.__st = window.PT.stream(ch, 45000);
        window.__st.promise.catch(() => {});
        ch.push('stream_query', { query: q });
      }, [id, `drop test ${uid('q')} ${answerDirective(expected, 400)}`]);
      await page.waitForFunction(() => window.__st.tokens >= 8, null, { timeout: 15000 });
      const before = await page.evaluate(() => ({ text: window.__st.text, tokens: window.__st.tokens }));
      await cut(ctl);
      await page.waitForFunction(() => window.__st.done, null, { timeout: 30000 }).catch(async (e) => {
        const now = await page.evaluate(() => ({ st: { text: window.__st.text, starts: window.__st.starts, tokens: window.__st.tokens },
          channel: { state: window.__ch.state, joinRef: window.__ch.joinRef() }, stats: window.PT.stats('drop') })).catch(() => null);
        now.answers = page.lpAnswers;
        now.longpoll = page.requests.filter((r) => r.url.includes('/socket/longpoll')).map((r) => `${r.method} ${r.body || ''}`);
        throw new Error(`the stream did not complete after the cut (held ${ctl.held}; ${JSON.stringify(now)}): ${e.message}`);
      });
      const st = await page.evaluate(() => ({ text: window.__st.text, naive: window.__st.naive, starts: window.__st.starts,
        tokens: window.__st.tokens, error: window.__st.error }));
      const s = await page.evaluate(() => window.PT.stats('drop'));
      t.diagnostic(`before the cut: ${before.tokens} tokens over WebSocket; after: ${st.starts} stream_start, ${st.tokens} tokens in all; transport log: ${s.log.join(' | ')}`);
      assert.equal(st.error, null);
      assert.ok(before.text.length > 0 && before.text.length < expected.length && expected.startsWith(before.text),
        'the cut came in the middle of the stream');
      assert.equal(s.transport, 'longpoll', 'the client fell back to LongPoll');
      assert.ok(s.log.some((l) => /falling back to LongPoll/.test(l)), 'by its fallback');
      assert.ok(ctl.held >= 1, 'a WebSocket was tried again (and held) before the fallback');
      assert.ok(page.requests.some((r) => r.url.includes('/socket/longpoll')), 'LongPoll requests went out');
      assert.equal(st.starts, 2, 'stream_start again after the rejoin on LongPoll (the server replays from the start)');
      assert.equal(st.text, expected, 'the answer, no token lost or repeated');
      t.diagnostic(`a client appending every token without restarting at stream_start would show ${st.naive.length} characters for an answer of ${expected.length}`);
      // stored once
      const hist = await page.evaluate(async () => {
        const p = window.PT.next(window.__ch, 'history', 10000);
        window.__ch.push('get_history', {});
        return (await p).messages.map((m) => `${m.role}:${m.content}`);
      });
      assert.equal(hist.length, 2);
      assert.equal(hist[1], `assistant:${expected}`, 'the answer is stored once, whole');
      await page.evaluate(() => window.PT.close('drop'));
      await noProblems(page, [/WebSocket/]);
      await page.close();
    });
  }

  // The same on the demo page: what a user sees. A stream_start while a
  // bubble is still streaming is the same answer replayed (a topic streams
  // one at a time: `busy`): neuralbridge.js restarts that bubble, so the
  // part received before the cut is not shown twice.
  test(`${SETUP}: NeuralBridge page: a stream running when the WebSocket drops is shown once, whole, after the fallback to LongPoll`, { timeout: 60000 }, async (t) => {
    if (!PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
    const ctl = { pass: true, routes: [], held: 0 };
    const page = await routedPage(`${BASE}/neuralbridge.html?session=${uid('nb')}&fallback=1500&stream=1`, ctl);
    assert.equal(await waitJoined(page), 'websocket');
    const expected = words('tok', 50);
    await ask(page, `page drop ${uid('q')} ${answerDirective(expected, 100)}`);
    await page.waitForFunction(() => {
      const b = document.querySelector('#messages .msg.assistant[data-state="streaming"] .text');
      return b && b.textContent.split(' ').length >= 8;
    }, null, { timeout: 15000 });
    await cut(ctl);
    await page.waitForFunction((full) => [...document.querySelectorAll('#messages .msg.assistant .text')]
      .some((e) => e.textContent === full) && !document.querySelector('#messages .msg.assistant[data-state="streaming"]'),
    expected, { timeout: 40000 });
    assert.equal(await page.getAttribute('body', 'data-transport'), 'longpoll');
    const shown = await page.$$eval('#messages .msg.assistant .text', (es) => es.map((e) => e.textContent));
    assert.deepEqual(shown, [expected], `one answer bubble with the whole answer (shown: ${JSON.stringify(shown.map((x) => x.length))} characters)`);
    await noProblems(page, [/WebSocket/]);
    await page.close();
  });
}

// The same with an answer that ends before phoenix.js rejoins over LongPoll:
// the server does not replay an answer that has ended (a join cannot tell a
// rejoin from a new page), so the page loads the history after the rejoin
// and shows the finished answer once, whole.
if (GROUPS.has('drop')) {
  test(`${SETUP}: NeuralBridge page: an answer that ends while the page falls back to LongPoll is shown once, whole (from the history)`, { timeout: 60000 }, async (t) => {
    if (!PHX_WS) { t.skip('no Phoenix WebSocket transport behind this server'); return; }
    const ctl = { pass: true, routes: [], held: 0 };
    const page = await routedPage(`${BASE}/neuralbridge.html?session=${uid('nb')}&fallback=1500&stream=1`, ctl);
    assert.equal(await waitJoined(page), 'websocket');
    const expected = words('end', 14);
    await ask(page, `page drop short ${uid('q')} ${answerDirective(expected, 100)}`);
    await page.waitForFunction(() => {
      const b = document.querySelector('#messages .msg.assistant[data-state="streaming"] .text');
      return b && b.textContent.split(' ').length >= 8;
    }, null, { timeout: 15000 });
    await cut(ctl);                   // ~0.6 s of answer left: over before the rejoin
    await page.waitForFunction((full) => [...document.querySelectorAll('#messages .msg.assistant .text')]
      .some((e) => e.textContent === full) && !document.querySelector('#messages .msg.assistant[data-state="streaming"]'),
    expected, { timeout: 40000 });
    assert.equal(await page.getAttribute('body', 'data-transport'), 'longpoll');
    const shown = await page.$$eval('#messages .msg.assistant .text', (es) => es.map((e) => e.textContent));
    assert.deepEqual(shown, [expected], `one answer bubble with the whole answer (shown: ${JSON.stringify(shown.map((x) => x.length))} characters)`);
    await noProblems(page, [/WebSocket/]);
    await page.close();
  });
}

// --- long run: the end -----------------------------------------------------------

if (runLong) {
  test(`${SETUP}: long run: ${LONG_MS / 1000} s on each server and transport, every heartbeat answered (phx_reply on topic phoenix), no reconnect, no close`, { timeout: LONG_MS + 60000 }, async (t) => {
    assert.equal(LR.length, SERVERS.length, 'the long run started on every server');
    const end = Math.max(...LR.map((r) => r.t0)) + LONG_MS + 1500;
    if (Date.now() < end) await new Promise((r) => setTimeout(r, end - Date.now()));
    for (const run of LR) {
      for (const k of run.socks) {
        // the last heartbeat may still be on its way: up to 5 s for it
        await run.page.waitForFunction((n) => window.PT.stats(n).missing.length === 0, k.name, { timeout: 5000 }).catch(() => {});
        const s = await run.page.evaluate((n) => window.PT.stats(n), k.name);
        const where = `${run.server.name} ${k.name}`;
        t.diagnostic(`${where}: ${s.sent} heartbeats sent, ${s.answered} answered, ${s.ms} ms, LongPoll sessions ${s.lpTokens.length}`);
        const want = Math.floor(LONG_MS / k.hb) - 1;
        assert.ok(s.sent >= want, `${where}: ${s.sent} heartbeats sent, at least ${want} expected`);
        assert.deepEqual(s.missing, [], `${where}: every heartbeat answered`);
        assert.equal(s.bad, 0, `${where}: no error reply`);
        assert.equal(s.pingRefused, 0, `${where}: never disconnected when a heartbeat was due`);
        assert.equal(s.opens, 1, `${where}: opened once, never reconnected`);
        assert.deepEqual(s.closes, [], `${where}: never closed`);
        assert.equal(s.errors, 0, `${where}: no transport error`);
        assert.ok(s.connected && s.transport === k.transport, `${where}: still connected over ${k.transport}`);
        assert.ok(!s.log.some((l) => /falling back|heartbeat timeout/.test(l)), `${where}: ${s.log.join(' | ')}`);
        if (k.transport === 'longpoll') assert.equal(s.lpTokens.length, 1, `${where}: one LongPoll session all along`);
      }
      for (const k of run.socks) await run.page.evaluate((n) => window.PT.close(n), k.name);
      await noProblems(run.page);
      await run.page.close();
    }
  });
}
