// aisdk-browser.mjs — a page using the `ai` package's client transport
// (tests/browser/aisdk-page/, loaded unbundled through an import map) in
// headless Chromium (Debian's, through playwright-core; tests/browser/lib.mjs),
// run by t0911-aisdk-browser.sh against a real web server + parley.fcgi:
//   - the page sends a message and streams the answer; reloaded mid-answer,
//     it resumes (GET /api/ai-sdk/chat/{id}/stream) and shows the whole
//     answer, exactly the simulated LLM's, under the same message id;
//   - nothing was posted twice (one question, one answer stored);
//   - reloaded again once the answer is over: nothing to resume (204), the
//     page is ready;
//   - no page error or console error.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { api, jwt, launch, openPage, pageProblems, shotPath, uid } from '../browser/lib.mjs';
import { answerText } from '../fake-llm/answer.mjs';

const T = { timeout: 60000 };
let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('the page survives a reload mid-answer: the resumed answer is whole, once', T, async () => {
  const chat = uid('aisdk-page');
  const token = jwt('browser-tester');
  const page = await openPage(browser.context, `/aisdk/index.html?token=${token}&chat=${chat}`);
  await page.waitForFunction(() => document.getElementById('status').textContent === 'ready');
  const q = `browser reload ${chat} [[fake tokens=150 token_ms=25]]`;
  await page.fill('#q', q);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('answer').textContent.length > 20);
  const before = await page.$eval('#answer', (e) => ({ text: e.textContent, id: e.dataset.messageId }));
  assert.equal(await page.textContent('#status'), 'streaming');
  await page.reload();
  await page.waitForFunction(() => window.resumed === 1, null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById('status').textContent !== 'streaming',
    null, { timeout: 20000 });
  assert.equal(await page.textContent('#status'), 'done');
  const text = await page.textContent('#answer');
  const want = answerText(q, 150);
  assert.ok(want.startsWith(before.text), 'the part seen before the reload is the answer\'s start');
  assert.equal(text, want, 'the whole answer, once');
  assert.equal(await page.$eval('#answer', (e) => e.dataset.messageId), before.id);
  await page.screenshot({ path: shotPath('aisdk'), fullPage: true });
  const h = await api('GET', `/api/chat/sessions/${chat}/messages`);
  assert.equal(h.status, 200, h.text);
  const stored = h.json.messages ?? h.json;
  assert.deepEqual(stored.map((m) => m.role), ['user', 'assistant']);
  assert.equal(stored[1].content, want);
  await page.reload();
  await page.waitForFunction(() => document.getElementById('status').textContent === 'ready');
  assert.equal(await page.evaluate(() => window.resumed), 0);
  const problems = await pageProblems(page);
  assert.deepEqual(problems, [], JSON.stringify(problems));
  await page.close();
});
