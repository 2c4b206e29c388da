// openai.mjs — the official `openai` npm client against Parley's
// OpenAI-compatible API (docs/openai.md) through a web server (BASE), run by
// t0900-openai.sh once per setup. Environment: BASE, SECRET (the JWT
// secret), RUN (unique per setup), FAKE_LLM_URL (the simulated LLM and its
// request log), PARLEY_CLI (the real `parley` command on the setup's
// database, for `parley keys`), RATE (RATE_LIMIT_MESSAGES_PER_MINUTE).
// Every answer is compared with the simulated LLM's deterministic text
// (tests/fake-llm/answer.mjs: answerText).
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { answerText } from '../fake-llm/answer.mjs';
import { jwtHS256 } from '../node/clients.mjs';

const { BASE, SECRET, RUN, FAKE_LLM_URL, PARLEY_CLI } = process.env;
const RATE = Number(process.env.RATE || 0);
const MODEL = 'llama3.2';

const cli = (args) => execSync(`${PARLEY_CLI} ${args}`, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const client = (apiKey) => new OpenAI({ apiKey, baseURL: `${BASE}/v1`, maxRetries: 0, timeout: 30000 });
const jwtClient = (who) => client(jwtHS256(SECRET, `${who}-${RUN}`));

// The simulated LLM's request log entries whose prompt contains tag.
async function fakeRequests(tag) {
  const r = await fetch(`${FAKE_LLM_URL}/_fake/requests`);
  const j = await r.json();
  return j.requests.filter((q) => (q.prompt ?? '').includes(tag));
}
async function fakeEnded(tag, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const qs = await fakeRequests(tag);
    if (qs.length && qs.every((q) => q.ended_at !== null)) return qs;
    if (Date.now() > end) throw new Error(`the upstream request for ${tag} did not end: ${JSON.stringify(qs)}`);
    await sleep(20);
  }
}

const user = (content) => [{ role: 'user', content }];

test('GET /v1/models lists the configured model', async () => {
  const models = await jwtClient('models').models.list();
  const ids = [];
  for await (const m of models) ids.push(m);
  assert.ok(ids.some((m) => m.id === MODEL && m.object === 'model' && m.owned_by === 'parley'),
    JSON.stringify(ids));
});

let KEY = null;
let KEY_ID = null;

test('parley keys create: a key for a user, shown once, listed by its prefix only', () => {
  KEY = cli(`keys create --user key-${RUN} --name it`).trim();
  assert.match(KEY, /^sk-parley-[0-9a-f]{48}$/);
  const list = JSON.parse(cli(`keys list --user key-${RUN} --json`));
  assert.equal(list.length, 1);
  assert.equal(list[0].user, `key-${RUN}`);
  assert.equal(list[0].prefix, KEY.slice(0, 14));
  assert.equal(list[0].revoked_at, null);
  assert.ok(!JSON.stringify(list).includes(KEY.slice(14)), 'the key itself is not stored');
  KEY_ID = list[0].id;
});

test('non-streaming completion with an API key: the simulated answer, usage', async () => {
  const prompt = `plain-${RUN} [[fake tokens=7 token_ms=2]]`;
  const r = await client(KEY).chat.completions.create({ model: MODEL, messages: user(prompt) });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, MODEL);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, answerText(prompt, 7));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 7);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 7);
});

test('streaming completion with a JWT: role first, the simulated answer, usage in the stream', async () => {
  const prompt = `stream-${RUN} [[fake tokens=9 token_ms=5]]`;
  const { data: stream, response } = await jwtClient('streamer').chat.completions.create({
    model: MODEL, messages: user(prompt), stream: true, stream_options: { include_usage: true },
  }).withResponse();
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(response.headers.get('x-parley-cache'), 'bypass');
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.ok(chunks.length >= 4, `${chunks.length} chunks`);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.model === MODEL));
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, answerText(prompt, 9));
  const fin = chunks[chunks.length - 2];
  assert.equal(fin.choices[0].finish_reason, 'stop');
  const last = chunks[chunks.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 9);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 9);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
});

test('a bad key is 401 invalid_api_key; no key at all too', async () => {
  for (const k of ['sk-parley-' + '0'.repeat(48), 'not-a-parley-token']) {
    await assert.rejects(client(k).chat.completions.create({ model: MODEL, messages: user('x') }),
      (e) => e.status === 401 && e.code === 'invalid_api_key' && e.type === 'invalid_request_error');
  }
  const r = await fetch(`${BASE}/v1/models`);
  assert.equal(r.status, 401);
  assert.equal((await r.json()).error.code, 'invalid_api_key');
});

test('an unknown model is 404 model_not_found', async () => {
  await assert.rejects(jwtClient('unknown').chat.completions.create({ model: 'no-such-model', messages: user('x') }),
    (e) => e.status === 404 && e.code === 'model_not_found');
});

test('a bad request is 400 invalid_request_error (n > 1, bad role, bad JSON)', async () => {
  const c = jwtClient('bad');
  await assert.rejects(c.chat.completions.create({ model: MODEL, messages: user('x'), n: 2 }),
    (e) => e.status === 400 && e.type === 'invalid_request_error');
  await assert.rejects(c.chat.completions.create({ model: MODEL, messages: [{ role: 'tool', content: 'x' }] }),
    (e) => e.status === 400 && e.type === 'invalid_request_error');
  const r = await fetch(`${BASE}/v1/chat/completions`, {
    method: 'POST', body: '{oops', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
  });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.type, 'invalid_request_error');
});

test('over the rate limit: 429 with Retry-After', { skip: !RATE && 'RATE not set' }, async () => {
  const c = jwtClient('limited');
  for (let i = 0; i < RATE; i++) {
    await c.chat.completions.create({ model: MODEL, messages: user(`rl-${RUN}-${i} [[fake tokens=1 token_ms=0]]`) });
  }
  const err = await c.chat.completions.create({ model: MODEL, messages: user(`rl-${RUN}-over`) }).then(
    () => null, (e) => e);
  assert.ok(err, 'the request over the limit was answered');
  assert.equal(err.status, 429);
  assert.equal(err.code, 'rate_limit_exceeded');
  const ra = Number(err.headers.get('retry-after'));
  assert.ok(ra >= 1 && ra <= 60, `Retry-After ${err.headers.get('retry-after')}`);
  assert.equal((await fakeRequests(`rl-${RUN}-over`)).length, 0, 'never reached the upstream');
});

test('parley keys revoke: the key is refused at its next request', async () => {
  assert.match(cli(`keys revoke ${KEY_ID}`), /revoked/);
  await assert.rejects(client(KEY).chat.completions.create({ model: MODEL, messages: user('x') }),
    (e) => e.status === 401 && e.code === 'invalid_api_key');
  assert.notEqual(JSON.parse(cli(`keys list --user key-${RUN} --json`))[0].revoked_at, null);
});

test('a client that aborts mid-stream alone: the upstream request is closed', async () => {
  const tag = `alone-${RUN}`;
  const prompt = `${tag} [[fake tokens=400 token_ms=10]]`;
  const ac = new AbortController();
  const stream = await jwtClient('aborter').chat.completions.create(
    { model: MODEL, messages: user(prompt), stream: true }, { signal: ac.signal });
  let n = 0;
  try {
    for await (const ch of stream) {
      if (ch.choices[0]?.delta?.content && ++n === 5) ac.abort();
    }
  } catch (e) {
    // the client ends the iteration, or throws an abort error
    assert.ok(/abort/i.test(e.name + e.message), String(e));
  }
  assert.equal(n, 5, 'the stream stopped after the abort');
  const [q] = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true, 'Parley closed the upstream connection');
  assert.ok(q.ended_at - q.started_at < 3500, `the upstream ran ${q.ended_at - q.started_at} ms of 4 s`);
});

test('single flight: one client aborts, the identical second request still completes; then a cache hit', async () => {
  const tag = `shared-${RUN}`;
  // 3 s: long enough for mod_fcgid to start a second process for the second request
  const prompt = `${tag} [[fake tokens=150 token_ms=20]]`;
  const body = { model: MODEL, messages: user(prompt), stream: true, temperature: 0 };
  const ac = new AbortController();
  const a = await jwtClient('first').chat.completions.create(body, { signal: ac.signal }).withResponse();
  assert.equal(a.response.headers.get('x-parley-cache'), 'miss');
  const itA = a.data[Symbol.asyncIterator]();
  await itA.next();                      // the first chunk: the generation runs
  const b = await jwtClient('second').chat.completions.create(body).withResponse();
  assert.equal(b.response.headers.get('x-parley-cache'), 'shared');
  ac.abort();
  await itA.next().catch(() => {});
  let text = '';
  let finish = null;
  for await (const ch of b.data) {
    text += ch.choices[0]?.delta?.content ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, answerText(prompt, 150));
  assert.equal(finish, 'stop');
  const qs = await fakeEnded(tag);
  assert.equal(qs.length, 1, 'one upstream request for both');
  assert.equal(qs[0].closed_by_client, false, 'the upstream was not stopped');
  // the same request again: from the cache, no upstream request
  const c = await jwtClient('third').chat.completions.create({ ...body, stream: false }).withResponse();
  assert.equal(c.response.headers.get('x-parley-cache'), 'hit');
  assert.equal(c.data.choices[0].message.content, answerText(prompt, 150));
  assert.equal((await fakeRequests(tag)).length, 1);
});

test('an upstream failure before any text is a 5xx with the error body', async () => {
  const prompt = `fail-${RUN} [[fake status=500]]`;
  await assert.rejects(jwtClient('failing').chat.completions.create({ model: MODEL, messages: user(prompt), stream: true }),
    (e) => e.status >= 500 && e.status < 600 && e.type === 'server_error');
});

test('/api/metrics counts the requests by endpoint and outcome', async () => {
  const r = await fetch(`${BASE}/api/metrics`, { headers: { authorization: `Bearer ${jwtHS256(SECRET, `metrics-${RUN}`, { role: 'admin' })}` } });
  assert.equal(r.status, 200);
  const text = await r.text();
  const n = (endpoint, outcome) => {
    const m = text.match(new RegExp(`^parley_openai_requests_total\\{endpoint="${endpoint}",outcome="${outcome}"\\} (\\d+)$`, 'm'));
    return m ? Number(m[1]) : 0;
  };
  for (const o of ['ok', 'unauthorized', 'not_found', 'bad_input', 'client_gone', 'shared', 'cached', 'upstream']) {
    assert.ok(n('chat.completions', o) >= 1,
      `chat.completions ${o}: ${text.split('\n').filter((l) => l.includes('openai')).join(' | ')}`);
  }
  if (RATE) assert.ok(n('chat.completions', 'rate_limited') >= 1);
  assert.ok(n('models', 'ok') >= 1);
  assert.ok(n('models', 'unauthorized') >= 1);
});
