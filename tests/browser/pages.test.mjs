// pages.test.mjs — the demo pages (www/*.html) in headless Chromium against
// a real web server + parley.fcgi (+ the WebSocket bridge when PARLEY_WS=1):
// each page completes a streamed answer over every transport in
// TRANSPORTS, model output with markup shows as literal text, a reopened
// ticket shows its cached answer, 'auto' picks what works, and no page
// breaks its Content-Security-Policy. Run by tests/integration/t0300-browser.sh.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE, FAKE, SETUP, WS, TRANSPORTS, launch, openPage, pageProblems, uid, answerDirective, api, shotPath,
} from './lib.mjs';

const T = { timeout: 20000 };
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// Text with everything a naive renderer gets wrong.
const MARKUP = 'Try <b>bold</b> steps: Tom&Jerry <i>said</i> "1 < 2 && 3 > 2" <img src=x onerror=alert(1)> café 🚀';

// Waits until selector's data-state is one of states; returns the state.
async function waitState(page, selector, states, timeout = 15000) {
  await page.waitForFunction(([sel, st]) => {
    const e = document.querySelector(sel);
    return !!e && st.includes(e.dataset.state);
  }, [selector, states], { timeout });
  return page.getAttribute(selector, 'data-state');
}

async function noProblems(page) {
  assert.deepEqual(await pageProblems(page), [], 'page errors, console errors or CSP violations');
}

// What a stream-rendering element holds, and how many elements are inside.
async function rendered(page, selector) {
  return page.$eval(selector, (e) => ({ text: e.textContent, elements: e.querySelectorAll('*').length }));
}

async function ticketRound(page, id, body) {
  await page.fill('#ticket-id', id);
  await page.fill('#ticket-body', body);
  await page.click('#open');
  const st = await waitState(page, '#answer', ['done', 'error']);
  assert.equal(st, 'done', `ticket answer ended in state ${st}: ${await page.textContent('#error')}`);
  return {
    ...(await rendered(page, '#answer')),
    source: await page.getAttribute('#answer', 'data-source'),
    badge: await page.textContent('#answer-badge'),
    transport: await page.getAttribute('body', 'data-transport'),
  };
}

for (const transport of TRANSPORTS) {
  test(`${SETUP}: tickets page streams an answer over ${transport}, as text, and shows it cached when reopened`, T, async () => {
    const page = await openPage(browser.context, `/tickets.html?transport=${transport}`);
    const id = uid('ticket');
    const answer = `${MARKUP}\nRestart the adapter.`;
    const body = `Wi-Fi stopped working <b>after</b> the update ${answerDirective(answer, 15)}`;

    const first = await ticketRound(page, id, body);
    assert.equal(first.transport, transport);
    assert.equal(first.source, 'stream');
    assert.equal(first.text, answer, 'the streamed answer, character for character');
    assert.equal(first.elements, 0, 'no element created from the answer\'s markup');

    // Opened again on the same page: the cached answer, no new generation.
    const again = await ticketRound(page, id, body);
    assert.equal(again.source, 'cached');
    assert.match(again.badge, /cached/i);
    assert.equal(again.text, answer);
    assert.equal(again.elements, 0);

    // And from a fresh page: the REST check says an answer is stored.
    const page2 = await openPage(browser.context, `/tickets.html?transport=${transport}`);
    const third = await ticketRound(page2, id, body);
    assert.equal(third.source, 'cached');
    assert.equal(third.text, answer);
    assert.match(await page2.textContent('#ticket-info'), /cache/i);
    await noProblems(page);
    await noProblems(page2);
    await page.close();
    await page2.close();
  });

  test(`${SETUP}: chat page streams answers with metadata over ${transport} and shows the history on reconnect`, T, async () => {
    const page = await openPage(browser.context, `/chat.html?transport=${transport}`);
    await page.click('#new-session');
    await page.waitForSelector('#send:not([disabled])');
    const sid = await page.inputValue('#session-id');
    assert.match(sid, /^[0-9a-f-]{36}$/);
    assert.equal(await page.getAttribute('body', 'data-transport'), transport);

    const answers = [`First: ${MARKUP}`, 'Second answer, plain & short.'];
    for (let i = 0; i < answers.length; i++) {
      await page.fill('#message', `Question ${i + 1} <b>x</b> ${answerDirective(answers[i], 15)}`);
      await page.click('#send');
      const sel = `#messages .msg.assistant:nth-of-type(${2 * i + 2})`;
      await page.waitForSelector(`${sel}[data-state="done"], #messages .msg.error`, { timeout: 15000 });
      assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
      const got = await rendered(page, `${sel} .text`);
      assert.equal(got.text, answers[i]);
      assert.equal(got.elements, 0);
      const meta = await page.textContent(`${sel} .meta`);
      assert.match(meta, /\d+ tokens · [\d.]+ s · \S+/, `stream_end metadata shown: ${meta}`);
    }
    assert.equal(await page.locator('#messages b, #messages i, #messages img').count(), 0);

    // Reconnect to the session from a new page: its history, as text.
    const page2 = await openPage(browser.context, `/chat.html?transport=${transport}&session=${sid}`);
    await page2.waitForSelector('#send:not([disabled])');
    const history = await page2.$$eval('#messages .msg[data-history="1"]', (els) =>
      els.map((e) => ({ role: e.classList.contains('user') ? 'user' : 'assistant', text: e.querySelector('.text').textContent })));
    assert.equal(history.length, 4);
    assert.deepEqual(history.filter((h) => h.role === 'assistant').map((h) => h.text), answers);
    assert.equal(await page2.locator('#messages b, #messages i, #messages img').count(), 0);
    await noProblems(page);
    await noProblems(page2);
    await page.close();
    await page2.close();
  });

  test(`${SETUP}: brands page shows the welcome, streams an answer with product cards over ${transport}, voice gives one sentence`, T, async () => {
    const brands = (await api('GET', '/brands/active')).json;
    assert.ok(Array.isArray(brands) && brands.length > 0, 'GET /brands/active lists brands');
    const brand = brands.find((b) => b.brand_id === 'techpro') || brands[0];

    const page = await openPage(browser.context, `/brands.html?transport=${transport}`);
    await page.waitForSelector('#brand[data-loaded="1"]');
    const options = await page.$$eval('#brand option', (os) => os.map((o) => [o.value, o.textContent]));
    assert.deepEqual(options, brands.map((b) => [b.brand_id, b.brand_name]));
    await page.selectOption('#brand', brand.brand_id);
    await page.click('#connect');
    await page.waitForSelector('#messages .msg.welcome');
    assert.equal(await page.textContent('#messages .msg.welcome .text'), brand.welcome_message);
    assert.equal(await page.textContent('#brand-name'), brand.brand_name);
    assert.equal(await page.getAttribute('body', 'data-transport'), transport);

    const answer = `Here are laptops for business: ${MARKUP}`;
    await page.fill('#message', `I need a laptop for business work ${answerDirective(answer, 15)}`);
    await page.click('#send');
    const sel = '#messages .msg.assistant:not(.welcome)';
    await page.waitForSelector(`${sel}[data-state="done"], #messages .msg.error`, { timeout: 15000 });
    assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
    const got = await rendered(page, `${sel} .text`);
    assert.equal(got.text, answer);
    assert.equal(got.elements, 0);
    const cards = await page.$$eval(`${sel} .product`, (ps) => ps.map((p) => ({
      name: p.querySelector('h3').textContent, price: p.querySelector('.price').textContent })));
    assert.ok(cards.length >= 1, 'a laptop question suggests products');
    for (const c of cards) { assert.ok(c.name.length > 0); assert.match(c.price, /\d/); }
    assert.match(await page.textContent(`${sel} .confidence`), /^Match confidence: \d+%$/);

    // Voice: one sentence only.
    await page.check('#voice');
    await page.fill('#message', `What is your cheapest laptop? ${answerDirective('The Acer Aspire 5 is the cheapest. It costs less than the others.', 15)}`);
    await page.click('#send');
    const voiceSel = '#messages .msg.assistant:not(.welcome):nth-last-of-type(1)';
    await page.waitForFunction(() => document.querySelectorAll('#messages .msg.assistant[data-state="done"]:not(.welcome)').length === 2
      || document.querySelector('#messages .msg.error'), null, { timeout: 15000 });
    assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
    assert.equal(await page.textContent(`${voiceSel} .text`), 'The Acer Aspire 5 is the cheapest.');
    const sent = page.requests.filter((r) => r.method === 'POST' && /\/api\/poll\/[0-9a-f-]+$/.test(r.url)).map((r) => r.body);
    if (transport === 'longpoll') assert.ok(sent.some((b) => b.includes('"voice":true')), 'the voice flag was sent');
    await page.screenshot({ path: shotPath(`brands-${transport}`), fullPage: true });
    await noProblems(page);
    await page.close();
  });

  test(`${SETUP}: send page continues a conversation over ${transport} (chat frames) after an SSE answer`, T, async () => {
    const page = await openPage(browser.context, '/send.html');
    assert.equal(await page.inputValue('#transport'), 'sse');
    await page.click('#new-conversation');
    await page.waitForSelector('#send:not([disabled])');
    const a1 = `Over SSE: ${MARKUP}`;
    await page.fill('#message', `Hello ${answerDirective(a1, 15)}`);
    await page.click('#send');
    await page.waitForSelector('#messages .msg.assistant[data-state="done"], #messages .msg.error', { timeout: 15000 });
    assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
    const got1 = await rendered(page, '#messages .msg.assistant .text');
    assert.equal(got1.text, a1);
    assert.equal(got1.elements, 0);
    assert.equal(await page.getAttribute('body', 'data-transport'), 'sse');

    await page.selectOption('#transport', transport);
    const a2 = 'Over the chat protocol now <b>still text</b>.';
    await page.fill('#message', `Again ${answerDirective(a2, 15)}`);
    await page.click('#send');
    await page.waitForFunction(() => document.querySelectorAll('#messages .msg.assistant[data-state="done"]').length === 2
      || document.querySelector('#messages .msg.error'), null, { timeout: 15000 });
    assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
    const got2 = await rendered(page, '#messages .msg.assistant:nth-last-of-type(1) .text');
    assert.equal(got2.text, a2);
    assert.equal(got2.elements, 0);
    assert.equal(await page.getAttribute('body', 'data-transport'), transport);
    await noProblems(page);
    await page.close();
  });
}

test(`${SETUP}: send page (seed 004) streams over Server-Sent Events, token by token`, T, async () => {
  const page = await openPage(browser.context, '/send.html');
  await page.click('#new-conversation');
  await page.waitForSelector('#send:not([disabled])');
  const answer = 'one two three four five six seven eight';
  await page.fill('#message', `Count ${answerDirective(answer, 120)}`);
  await page.click('#send');
  // Partway through, part of the answer is already there.
  await page.waitForFunction(() => {
    const t = document.querySelector('#messages .msg.assistant .text');
    return t && t.textContent.length > 0 && t.closest('.msg').dataset.state === 'streaming';
  }, null, { timeout: 10000 });
  const partial = await page.textContent('#messages .msg.assistant .text');
  assert.ok(answer.startsWith(partial) && partial.length < answer.length, `partial answer while streaming: '${partial}'`);
  await page.waitForSelector('#messages .msg.assistant[data-state="done"], #messages .msg.error', { timeout: 15000 });
  assert.equal(await page.locator('#messages .msg.error').count(), 0, await page.textContent('#messages'));
  assert.equal(await page.textContent('#messages .msg.assistant .text'), answer);
  assert.match(await page.textContent('#messages .msg.assistant .meta'), /8 tokens/);
  await noProblems(page);
  await page.close();
});

test(`${SETUP}: 'auto' ${WS ? 'uses the WebSocket bridge' : 'falls back to long-poll when no bridge answers'} on every page`, T, async () => {
  const expected = WS ? 'websocket' : 'longpoll';
  // tickets
  const p1 = await openPage(browser.context, '/tickets.html?transport=auto');
  const r = await ticketRound(p1, uid('auto'), `Auto ${answerDirective('Auto <b>answer</b>.', 10)}`);
  assert.equal(r.transport, expected);
  assert.equal(r.text, 'Auto <b>answer</b>.');
  if (!WS) assert.ok(p1.wsFailures.length >= 1, 'a WebSocket was tried first');
  // brands and chat: connected, and over which transport
  const p2 = await openPage(browser.context, '/brands.html?transport=auto');
  await p2.waitForSelector('#brand[data-loaded="1"]');
  await p2.click('#connect');
  await p2.waitForSelector('#messages .msg.welcome');
  assert.equal(await p2.getAttribute('body', 'data-transport'), expected);
  const p3 = await openPage(browser.context, '/chat.html?transport=auto');
  await p3.click('#new-session');
  await p3.waitForSelector('#send:not([disabled])');
  assert.equal(await p3.getAttribute('body', 'data-transport'), expected);
  for (const p of [p1, p2, p3]) { await noProblems(p); await p.close(); }
});

test(`${SETUP}: ticket page follows a running answer over SSE from a second page`, T, async () => {
  const id = uid('follow');
  const answer = 'alpha beta gamma delta epsilon zeta eta theta';
  const p1 = await openPage(browser.context, '/tickets.html?transport=longpoll');
  await p1.fill('#ticket-id', id);
  await p1.fill('#ticket-body', `Slow one ${answerDirective(answer, 150)}`);
  await p1.click('#open');
  await p1.waitForFunction(() => document.querySelector('#answer').dataset.state === 'streaming', null, { timeout: 10000 });
  const p2 = await openPage(browser.context, '/tickets.html');
  await p2.fill('#ticket-id', id);
  await p2.click('#watch');
  const st = await waitState(p2, '#answer', ['done', 'error']);
  assert.equal(st, 'done', await p2.textContent('#error'));
  assert.equal(await p2.textContent('#answer'), answer);
  assert.equal(await p2.getAttribute('body', 'data-transport'), 'sse');
  assert.equal(await waitState(p1, '#answer', ['done', 'error']), 'done');
  assert.equal(await p1.textContent('#answer'), answer);
  for (const p of [p1, p2]) { await noProblems(p); await p.close(); }
});

test(`${SETUP}: the home page links every demo and reports the server's health`, T, async () => {
  const page = await openPage(browser.context, '/');
  await page.waitForFunction(() => document.querySelector('#health').dataset.state !== 'idle');
  assert.equal(await page.getAttribute('#health', 'data-state'), 'open', await page.textContent('#health'));
  const links = await page.$$eval('main .cards a', (as) => as.map((a) => a.getAttribute('href')));
  assert.deepEqual(links, ['tickets.html', 'chat.html', 'brands.html', 'send.html', 'neuralbridge.html', 'seed003.html']);
  for (const href of links) {
    const res = await fetch(`${BASE}/${href}`);
    assert.equal(res.status, 200, href);
  }
  await noProblems(page);
  await page.close();
});

// The simulated LLM's knobs for every request (a clean question in the
// screenshot, no directive); reset before and after.
async function fakeKnobs(knobs) {
  await fetch(`${FAKE}/_fake/reset`, { method: 'POST', signal: AbortSignal.timeout(5000) });
  if (knobs) {
    const r = await fetch(`${FAKE}/_fake/config`, { method: 'POST', body: JSON.stringify(knobs), signal: AbortSignal.timeout(5000) });
    assert.equal(r.status, 200, await r.text());
  }
}

test(`${SETUP}: screenshot of the chat page (${shotPath('chat')})`, T, async () => {
  const page = await openPage(browser.context, '/chat.html?transport=longpoll');
  await page.click('#new-session');
  await page.waitForSelector('#send:not([disabled])');
  try {
    await fakeKnobs({ token_ms: 10, answer: 'Open Settings → Account, choose "Reset password" and follow the link in the e-mail. Markup such as <b>this</b> stays text.' });
    await page.fill('#message', 'How do I reset my password?');
    await page.click('#send');
    await page.waitForSelector('#messages .msg.assistant[data-state="done"]', { timeout: 15000 });
  } finally {
    await fakeKnobs(null);
  }
  await page.fill('#message', 'And if the e-mail never arrives?');
  const path = shotPath('chat');
  await page.screenshot({ path, fullPage: true });
  assert.equal(await page.textContent('#messages .msg.assistant .text'),
               'Open Settings → Account, choose "Reset password" and follow the link in the e-mail. Markup such as <b>this</b> stays text.');
  await noProblems(page);
  await page.close();
});

test(`${SETUP}: the pages' scripts contain no HTML sink and no eval, and every page carries the strict policy`, T, async () => {
  const sinks = /\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\s*\(|setTimeout\s*\(\s*['"`]/;
  for (const js of ['parley.js', 'demo.js', 'tickets.js', 'chat.js', 'brands.js', 'send.js', 'index.js', 'neuralbridge.js']) {
    const res = await fetch(`${BASE}/${js}`);
    assert.equal(res.status, 200, js);
    // Comments may mention innerHTML; code may not.
    const code = (await res.text()).replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"])\/\/.*$/gm, '$1');
    const m = code.match(sinks);
    assert.equal(m, null, `${js} uses ${m && m[0]}`);
  }
  // seed003.html is the seed's own page (inline script and handlers, allowed
  // by hash only): phoenix.test.mjs checks it.
  for (const html of ['index.html', 'tickets.html', 'chat.html', 'brands.html', 'send.html', 'neuralbridge.html']) {
    const text = await (await fetch(`${BASE}/${html}`)).text();
    assert.match(text, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'self'; style-src 'self';[^"]*require-trusted-types-for 'script'/, html);
    assert.doesNotMatch(text, /<script(?![^>]*\ssrc=)[^>]*>|\sstyle=|\son[a-z]+=/i, `${html}: inline script, style or handler`);
  }
});
