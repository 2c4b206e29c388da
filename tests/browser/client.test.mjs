// client.test.mjs — www/parley.js itself, driven inside a page of the real
// server: long-poll delivers every frame exactly once across a lost
// response, queues sends in order with one POST at a time, reports 410 and
// a server-side close; WebSocket failures behave as documented; the SSE
// reader resumes with Last-Event-ID. Run by tests/integration/t0300-browser.sh.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SETUP, WS, TOKEN, launch, openPage, pageProblems, uid, answerDirective, api } from './lib.mjs';

const T = { timeout: 20000 };
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const POLL_GET = /\/api\/poll\/[0-9a-f-]{36}\?cursor=\d+/;

// Counts requests matching re that are in flight at once; returns a getter.
function inFlight(page, re, method) {
  let now = 0, max = 0;
  const match = (r) => re.test(r.url()) && (!method || r.method() === method);
  page.on('request', (r) => { if (match(r)) max = Math.max(max, ++now); });
  page.on('requestfinished', (r) => { if (match(r)) now--; });
  page.on('requestfailed', (r) => { if (match(r)) now--; });
  return () => max;
}

// Opens a connection in the page as window.__c, recording everything in
// window.__ev. The token (when the server wants one) is added to opts.
async function connectInPage(page, path, opts) {
  if (TOKEN) opts = { token: TOKEN, ...opts };
  await page.evaluate(([p, o]) => {
    window.__ev = [];
    const c = window.__c = Parley.connect(p, o);
    c.onopen = (e) => window.__ev.push({ kind: 'open', transport: c.transport });
    c.onmessage = (f) => window.__ev.push({ kind: 'frame', frame: f });
    c.onerror = (e) => window.__ev.push({ kind: 'error', message: e.message, status: e.status });
    c.onclose = (e) => window.__ev.push({ kind: 'close', code: e.code, reason: e.reason, transport: e.transport });
  }, [path, opts]);
}
const events = (page) => page.evaluate(() => window.__ev);
const waitEvent = (page, fnSource, timeout = 15000) =>
  page.waitForFunction(fnSource, null, { timeout });

test(`${SETUP}: long-poll repeats a GET whose response was lost from the same cursor: no frame lost, none doubled`, T, async () => {
  const page = await openPage(browser.context, '/tickets.html');
  const maxGets = inFlight(page, POLL_GET, 'GET');
  const answer = 'one two three four five six seven eight nine ten eleven twelve';
  const gets = [];
  let dropped = null;
  await page.route(POLL_GET, async (route) => {
    const url = route.request().url();
    gets.push(Number(new URL(url).searchParams.get('cursor')));
    if (!dropped) {
      // The first response that carries part of the answer (a chunk): the
      // server answers, the browser never sees it (connection reset). Which
      // GET that is depends on timing: under mod_fcgid a GET that finds
      // every process busy waits a second in the web server and may then
      // carry the welcome and the whole answer at once.
      const res = await route.fetch();
      const body = await res.json();
      const frameOf = (m) => (typeof m === 'string' ? JSON.parse(m) : m);
      if ((body.messages || []).some((m) => frameOf(m).type === 'chunk')) {
        dropped = { cursor: gets.at(-1), body };
        return route.abort('connectionreset');
      }
      return route.fulfill({ response: res, json: body });
    }
    return route.continue();
  });
  await connectInPage(page, '/ws/chat/techpro', { transport: 'longpoll' });
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'open'));
  await page.evaluate((m) => window.__c.send({ type: 'chat', data: { message: m } }),
                      `Laptop please ${answerDirective(answer, 60)}`);
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && ['complete', 'error'].includes(e.frame.type)));
  await page.evaluate(() => window.__c.close());
  const ev = await events(page);
  const frames = ev.filter((e) => e.kind === 'frame').map((e) => e.frame);
  assert.deepEqual([...new Set(frames.map((f) => f.type))], ['welcome', 'chunk', 'complete']);
  assert.equal(frames.filter((f) => f.type === 'chunk').map((f) => f.data.content).join(''), answer);
  assert.equal(frames.filter((f) => f.type === 'welcome').length, 1);
  assert.ok(dropped && dropped.body.messages.length > 0, `a response with frames was lost: ${JSON.stringify(dropped)}`);
  const i = gets.indexOf(dropped.cursor);
  assert.equal(gets[i + 1], dropped.cursor, `the next GET asks from the same cursor (GETs: ${gets})`);
  assert.equal(maxGets(), 1, 'one GET at a time');
  assert.deepEqual(ev.filter((e) => e.kind === 'error'), []);
  // The reset this test caused is the only console error.
  assert.deepEqual((await pageProblems(page)).filter((p) => !/ERR_CONNECTION_RESET/.test(p)), []);
  await page.close();
});

test(`${SETUP}: long-poll sends queue in order, one POST at a time, frames sent before the open included`, T, async () => {
  const page = await openPage(browser.context, '/tickets.html');
  const maxPosts = inFlight(page, /\/api\/poll\/[0-9a-f-]{36}$/, 'POST');
  const bodies = [];
  page.on('request', (r) => { if (r.method() === 'POST' && /\/api\/poll\/[0-9a-f-]{36}$/.test(r.url())) bodies.push(r.postData()); });
  await connectInPage(page, '/ws/chat/homestyle', { transport: 'longpoll' });
  // Sent at once, before the connection is open: queued.
  const sent = await page.evaluate(() => {
    const out = [];
    for (let i = 0; i < 6; i++) { const f = { type: 'ping', data: { n: i } }; out.push(JSON.stringify(f)); window.__c.send(f); }
    return out;
  });
  await waitEvent(page, () => window.__ev.filter((e) => e.kind === 'frame' && e.frame.type === 'pong').length === 6);
  await page.evaluate(() => window.__c.close());
  const lines = bodies.flatMap((b) => b.split('\n'));
  assert.deepEqual(lines, sent, 'every frame POSTed once, in order');
  assert.equal(maxPosts(), 1, 'one POST at a time');
  const ev = await events(page);
  assert.equal(ev.filter((e) => e.kind === 'open').length, 1);
  assert.equal(ev.filter((e) => e.kind === 'frame')[0].frame.type, 'welcome', 'welcome comes first');
  assert.deepEqual(await pageProblems(page), []);
  await page.close();
});

test(`${SETUP}: long-poll reports a session that is gone (410) as a close with code 4410`, T, async () => {
  const page = await openPage(browser.context, '/tickets.html');
  await connectInPage(page, '/ws/chat/techpro', { transport: 'longpoll' });
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && e.frame.type === 'welcome'));
  const sid = await page.evaluate(() => window.__c.sid);
  const d = await api('DELETE', `/api/poll/${sid}`);
  assert.equal(d.status, 204);
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'close'));
  const ev = await events(page);
  const close = ev.find((e) => e.kind === 'close');
  assert.equal(close.code, 4410, JSON.stringify(ev));
  assert.equal(close.transport, 'longpoll');
  assert.equal(await page.evaluate(() => window.__c.readyState), 'closed');
  await page.close();
});

for (const transport of WS ? ['longpoll', 'websocket'] : ['longpoll']) {
  test(`${SETUP}: a session the server closes (unknown brand) ends with its error frame and onclose over ${transport}`, T, async () => {
    const page = await openPage(browser.context, '/tickets.html');
    const brand = uid('no-such-brand');
    await connectInPage(page, `/ws/chat/${brand}`, { transport });
    await waitEvent(page, () => window.__ev.some((e) => e.kind === 'close'));
    const ev = await events(page);
    const frames = ev.filter((e) => e.kind === 'frame').map((e) => e.frame);
    assert.deepEqual(frames, [{ type: 'error', data: { message: `Brand '${brand}' not found or inactive`, code: 'not_found' } }]);
    const close = ev.find((e) => e.kind === 'close');
    assert.equal(close.transport, transport);
    assert.ok(close.reason.length > 0, `a reason is given: ${JSON.stringify(close)}`);
    // The adapter's close code and reason when the transport carries them
    // (WebSocket close frame; long-poll "close_code"/"close_reason"), else
    // 1000 and the error frame's message.
    assert.ok(close.code === 1000 || close.code >= 4000 || close.code === 1008, `close code ${close.code}`);
    if (transport === 'longpoll' && close.code === 1000) {
      assert.equal(close.reason, `Brand '${brand}' not found or inactive`);
    }
    assert.ok(ev.findIndex((e) => e.kind === 'frame') < ev.findIndex((e) => e.kind === 'close'));
    assert.deepEqual(await pageProblems(page), []);
    await page.close();
  });
}

if (!WS) {
  test(`${SETUP}: forced WebSocket without a bridge reports onerror and onclose 1006, and never long-polls`, T, async () => {
    const page = await openPage(browser.context, '/tickets.html');
    await connectInPage(page, '/ws/chat/techpro', { transport: 'websocket' });
    await waitEvent(page, () => window.__ev.some((e) => e.kind === 'close'));
    const ev = await events(page);
    assert.equal(ev[0].kind, 'error');
    assert.match(ev[0].message, /WebSocket/);
    const close = ev.find((e) => e.kind === 'close');
    assert.equal(close.code, 1006);
    assert.equal(close.transport, 'websocket');
    assert.equal(page.requests.filter((r) => r.url.includes('/api/poll/')).length, 0);
    assert.equal(page.sockets.length, 1);
    await page.close();
  });

  test(`${SETUP}: 'auto' falls back once per page, then goes straight to long-poll`, T, async () => {
    const page = await openPage(browser.context, '/tickets.html');
    for (let round = 0; round < 2; round++) {
      await connectInPage(page, '/ws/chat/techpro', { transport: 'auto' });
      await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && e.frame.type === 'welcome'));
      const ev = await events(page);
      assert.deepEqual(ev.filter((e) => e.kind === 'open'), [{ kind: 'open', transport: 'longpoll' }]);
      assert.deepEqual(ev.filter((e) => e.kind === 'error'), [], 'the failed upgrade is not an application error');
      await page.evaluate(() => window.__c.close());
    }
    assert.equal(page.sockets.length, 1, 'one WebSocket attempt in all');
    await page.close();
  });
} else {
  test(`${SETUP}: 'auto' opens a WebSocket through the web server and never long-polls`, T, async () => {
    const page = await openPage(browser.context, '/tickets.html');
    await connectInPage(page, '/ws/chat/techpro', { transport: 'auto' });
    await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && e.frame.type === 'welcome'));
    await page.evaluate(() => window.__c.send({ type: 'ping', data: {} }));
    await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && e.frame.type === 'pong'));
    await page.evaluate(() => window.__c.close());
    await waitEvent(page, () => window.__ev.some((e) => e.kind === 'close'));
    const ev = await events(page);
    assert.deepEqual(ev.find((e) => e.kind === 'open'), { kind: 'open', transport: 'websocket' });
    assert.equal(ev.find((e) => e.kind === 'close').code, 1000);
    assert.equal(page.requests.filter((r) => r.url.includes('/api/poll/')).length, 0);
    assert.equal(page.sockets.length, 1);
    assert.deepEqual(await pageProblems(page), []);
    await page.close();
  });
}

test(`${SETUP}: Parley.sse resumes a cut ticket stream with Last-Event-ID, without repeating an event`, T, async () => {
  const page = await openPage(browser.context, '/tickets.html');
  const id = uid('resume');
  const answer = 'uno dos tres cuatro cinco seis siete ocho';
  // Start the generation over long-poll.
  await connectInPage(page, `/api/websocket/chat/${id}`, { transport: 'longpoll' });
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'open'));
  await page.evaluate((b) => window.__c.send({ ticketBody: b }), `Resume me ${answerDirective(answer, 80)}`);
  await waitEvent(page, () => window.__ev.some((e) => e.kind === 'frame' && e.frame.type === 'stream'));

  const streamUrl = new RegExp(`/api/tickets/${id}/ai/stream$`);
  const seen = [];
  let cutAfter = null;
  await page.route(streamUrl, async (route) => {
    const req = route.request();
    seen.push(req.headers()['last-event-id'] || null);
    if (seen.length > 1) return route.continue();
    // First request: the real stream, cut after its third event.
    const res = await route.fetch();
    const text = await res.text();
    const blocks = text.split('\n\n');
    const kept = [];
    let events = 0;
    for (const b of blocks) {
      kept.push(b);
      if (/^data:/m.test(b) && ++events === 3) break;
    }
    cutAfter = kept.join('\n\n').match(/^id: (\d+)$/gm).at(-1).slice(4);
    const headers = { ...res.headers() };
    delete headers['content-length'];
    delete headers['transfer-encoding'];
    return route.fulfill({ status: 200, headers, body: kept.join('\n\n') + '\n\n' });
  });
  const got = await page.evaluate(([u, token]) => new Promise((resolve) => {
    const out = [];
    const h = Parley.sse(u, {
      retry: 200,
      token: token || undefined,
      onevent: (d, meta) => { out.push({ id: meta.id, frame: d }); if (d.type === 'done' || d.type === 'error') h.close(); },
      onclose: () => resolve(out),
    });
    setTimeout(() => { h.close(); }, 15000);
  }), [`/api/tickets/${id}/ai/stream`, TOKEN]);
  assert.equal(seen.length, 2, `two requests: ${JSON.stringify(seen)}`);
  assert.equal(seen[0], null);
  assert.equal(seen[1], cutAfter, 'the second request resumes after the last event received');
  const ids = got.filter((g) => g.frame.type === 'stream').map((g) => Number(g.id));
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  assert.equal(new Set(ids).size, ids.length, 'no event twice');
  assert.equal(got.filter((g) => g.frame.type === 'stream').map((g) => g.frame.content).join(''), answer);
  assert.equal(got.at(-1).frame.type, 'done');
  await page.evaluate(() => window.__c.close());
  await page.close();
});
