// admin-browser.mjs — www/admin.html in headless Chromium (Debian's, through
// playwright-core; tests/browser/lib.mjs), run by t0860-admin.sh against a
// real web server + parley.fcgi + the WebSocket bridge, JWT required:
//   - with an admin token the page shows a generation a WebSocket client is
//     streaming (its channel, its user), and the model's text — full of
//     markup — appears as the characters it is: no element is created
//     from it;
//   - the page's Stop button stops it (the client gets stream_end marked
//     stopped) and the row goes away;
//   - without role "admin" the page says it is refused;
//   - no page error, console error or CSP violation.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { connect } from '../node/clients.mjs';
import { answerDirective, launch, openPage, pageProblems, shotPath, uid } from '../browser/lib.mjs';

const BASE = process.env.PARLEY_BASE;
const WS = BASE.replace(/^http/, 'ws');
const SECRET = process.env.PARLEY_JWT_SECRET;
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(sub, role) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...(role ? { role } : {}) });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const ADMIN = jwt('root', 'admin');
const USER = jwt('dana');
const MARKUP = '<b>bold</b> <img src=x onerror=alert(1)> Tom&Jerry <i>said</i> "1 < 2" ';

const T = { timeout: 60000 };
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const has = (type) => (msgs) => msgs.some((m) => m.type === type);

test('the admin page shows a live generation, its model text as text, and stops it', T, async () => {
  const sid = uid('admin-page');
  const ws = await connect(`${WS}/ws/${sid}?token=${USER}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content: `watch me ${answerDirective(MARKUP.repeat(60), 60)}` }));
  await ws.until((m) => m.filter((x) => x.type === 'stream_chunk').length >= 8);

  const page = await openPage(browser.context, `/admin.html?token=${ADMIN}`);
  const row = `#generations tr[data-job]:has(td.mono:text-is("conv:${sid}"))`;
  await page.waitForSelector(row, { timeout: 15000 });
  const seen = await page.$eval(row, (tr) => ({
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
    tail: tr.querySelector('td.tail').textContent,
    elementsInTail: tr.querySelector('td.tail').querySelectorAll('*').length,
  }));
  assert.equal(seen.cells[1], `conv:${sid}`);
  assert.equal(seen.cells[2], 'dana');
  assert.ok(seen.tail.includes('<b>bold</b>') || seen.tail.includes('<i>said</i>'), `tail: ${seen.tail}`);
  assert.equal(seen.elementsInTail, 0, 'model text made no element');
  assert.equal(await page.$$eval('main img, main b, main i', (n) => n.length), 0, 'no element from markup anywhere');
  assert.match(await page.textContent('#status'), /Updated/);
  await page.screenshot({ path: shotPath('admin'), fullPage: true });

  await page.click(`${row} button`);
  const end = (await ws.until(has('stream_end'), 10000)).find((m) => m.type === 'stream_end');
  assert.equal(end.metadata.stopped, true, 'the client got stream_end marked stopped');
  await page.waitForSelector(row, { state: 'detached', timeout: 10000 });
  assert.deepEqual(await pageProblems(page), [], 'page errors, console errors or CSP violations');
  ws.ws.close();
  await page.close();
});

test('without role "admin" the page says it is refused', T, async () => {
  const page = await openPage(browser.context, `/admin.html?token=${USER}`);
  await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'error');
  assert.match(await page.textContent('#status'), /admin/);
  assert.match(await page.textContent('#status'), /403/);
  // a refused fetch logs "Failed to load resource: 403" in the console: expected here
  page.problems = page.problems.filter((p) => !/Failed to load resource.*403/.test(p));
  assert.deepEqual(await pageProblems(page), []);
  await page.close();
});
