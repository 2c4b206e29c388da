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

// --- www/neuralbridge.html ---------------------------------------------------

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
  test(`${SETUP}: NeuralBridge page over ${transport}: query, same query from the cache, stream, history, markup as text`, T, async (t) => {
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

test(`${SETUP}: NeuralBridge page: the "Force LongPoll" switch moves the session to LongPoll and back`, T, async () => {
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

test(`${SETUP}: NeuralBridge page: a WebSocket that fails (no Phoenix bridge) or opens and never answers (bridge there, intercepted) → LongPoll fallback, the chat works`, T, async () => {
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
  test(`${SETUP}: the seed's own page (seed003.html) over ${transport}: query, cache, streaming; markup cannot run script`, T, async (t) => {
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

test(`${SETUP}: /vendor/phoenix.js is the npm package's build; seed003.html allows its inline code by hash only`, T, async () => {
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
