// fake-llm.test.mjs — tests/fake-llm against the official `ollama` and
// `openai` client libraries, plus its raw bytes, knobs and control API.
//
//   node --test --test-reporter=tap tests/node/fake-llm.test.mjs
//
// Starts its own server (node tests/fake-llm/server.mjs --port 0) and stops
// it with SIGTERM at the end; tests run one after another and reset the
// server's knobs and stats before each.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import {
  WORDS, answerText, answerTokens, parseDirectives, splitAnswer, stripDirectives,
} from '../fake-llm/answer.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SERVER = join(ROOT, 'tests', 'fake-llm', 'server.mjs');
const MODEL = 'llama3.2';
const GPT = 'gpt-4o-mini';
const OLLAMA_MIDSTREAM = 'an error was encountered while running the model: unexpected EOF';
const OPENAI_MIDSTREAM = 'The server had an error while processing your request. Sorry about that!';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

// Starts `node server.mjs --port 0 --port-file F ...args`; resolves with
// { child, url, port, portFileText, stdout() } once the port file exists.
async function startServer(args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'fake-llm-test-'));
  const portFile = join(dir, 'port');
  const child = spawn(process.execPath, [SERVER, '--port', '0', '--port-file', portFile, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  for (let i = 0; i < 200 && !existsSync(portFile); i++) {
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  assert.ok(existsSync(portFile), `server did not start: ${err}`);
  const portFileText = readFileSync(portFile, 'utf8');
  rmSync(dir, { recursive: true, force: true });
  for (let i = 0; i < 100 && !out.includes('\n'); i++) await sleep(10);
  const port = Number(portFileText);
  return { child, port, url: `http://127.0.0.1:${port}`, portFileText,
    stdout: () => out, stderr: () => err };
}

async function stopServer(srv) {
  if (srv.child.exitCode !== null) return srv.child.exitCode;
  const exited = once(srv.child, 'exit');
  srv.child.kill('SIGTERM');
  const [code] = await exited;
  return code;
}

let srv;
let base;
let ollama;
let oai;

before(async () => {
  srv = await startServer();
  base = srv.url;
  ollama = new Ollama({ host: base });
  oai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-test-key', maxRetries: 0, timeout: 10000,
    logger: silent });
});

after(async () => {
  if (srv) await stopServer(srv);
});

beforeEach(async () => {
  const r = await fetch(`${base}/_fake/reset`, { method: 'POST' });
  assert.equal(r.status, 200);
});

async function control(path, body) {
  const r = await fetch(`${base}${path}`, body === undefined ? {}
    : { method: 'POST', body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

const stats = async () => (await control('/_fake/stats')).json;

async function post(path, body, headers = {}) {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

// Reads an async iterator until it ends or throws; returns { items, error }.
async function drain(iterable, onItem = () => {}) {
  const items = [];
  try {
    for await (const it of iterable) {
      items.push(it);
      onItem(it);
    }
    return { items, error: null };
  } catch (error) {
    return { items, error };
  }
}

async function waitFor(pred, ms = 2000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await sleep(20);
  }
  return false;
}

const timeout = (ms) => new Promise((r) => { setTimeout(() => r('timeout'), ms); });

// ---------------------------------------------------------------- process

test('server writes only digits to its port file and announces its URL', () => {
  assert.match(srv.portFileText, /^\d+$/);
  assert.ok(srv.port > 0 && srv.port < 65536);
  assert.match(srv.stdout(), new RegExp(`^fake-llm: listening on http://127\\.0\\.0\\.1:${srv.port}\\n`));
});

test('SIGTERM stops the server cleanly even with a hung stream open', async () => {
  const other = await startServer(['--token-ms', '0']);
  const req = http.request(`${other.url}/api/generate`, { method: 'POST' });
  req.end(JSON.stringify({ model: MODEL, prompt: 'hold [[fake hang_after=1]]' }));
  const [res] = await once(req, 'response');
  assert.equal(res.statusCode, 200);
  let got = '';
  res.on('data', (d) => { got += d; });
  const ended = new Promise((r) => { res.on('close', r); res.on('error', r); });
  assert.ok(await waitFor(() => got.includes('\n')), 'first token arrived');
  const t0 = Date.now();
  const code = await stopServer(other);
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 1900, 'exited promptly, not by the 2 s fallback');
  await ended;
  assert.equal(got.split('\n').filter(Boolean).length, 1, 'only the token before the hang');
});

test('command-line knobs become server defaults that /_fake/reset restores', async () => {
  const other = await startServer(['--tokens', '3', '--api-key', 'sk-cli-key-0000']);
  try {
    const client = new OpenAI({ baseURL: `${other.url}/v1`, apiKey: 'sk-cli-key-0000', maxRetries: 0 });
    const done = await client.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: 'cli' }] });
    assert.equal(done.choices[0].message.content, answerText('cli', 3));
    await fetch(`${other.url}/_fake/config`, { method: 'POST', body: '{"tokens": 5}' });
    await fetch(`${other.url}/_fake/reset`, { method: 'POST' });
    const knobs = await (await fetch(`${other.url}/_fake/config`)).json();
    assert.equal(knobs.tokens, 3);
    assert.equal(knobs.api_key, 'sk-cli-key-0000');
    const r = await fetch(`${other.url}/v1/models`);
    assert.equal(r.status, 401);
  } finally {
    assert.equal(await stopServer(other), 0);
  }
});

// ---------------------------------------------------------------- answers

test('answerTokens is deterministic, prompt-dependent and sized', () => {
  const a = answerTokens('Where is my order?', 12);
  assert.equal(a.length, 12);
  assert.deepEqual(answerTokens('Where is my order?', 12), a);
  assert.notDeepEqual(answerTokens('Where is my refund?', 12), a);
  assert.deepEqual(answerTokens('  Where is my order? [[fake tokens=3]] ', 12), a,
    'directives and surrounding blanks do not change the answer');
  assert.equal(answerTokens('x', 0).length, 0);
  assert.equal(answerText('Where is my order?', 12), a.join(''));
  const long = answerTokens('a long one', 300);
  assert.ok(!long[0].startsWith(' '), 'first token has no leading space');
  for (let i = 1; i < long.length; i++) {
    const t = long[i];
    assert.ok(t.startsWith(' ') || [',', '.', '\n'].includes(t) || long[i - 1] === '\n',
      `token ${JSON.stringify(t)} carries its leading space`);
  }
  assert.notEqual(long[0], '\n');
  assert.notEqual(long.at(-1), '\n');
});

test('the word list holds tokens that test encoders', () => {
  const has = (pred) => WORDS.some(pred);
  assert.ok(WORDS.includes(' café') && WORDS.includes(' não'), 'accented Latin');
  assert.ok(has((w) => /[\u4e00-\u9fff]/.test(w)), 'CJK');
  assert.ok(has((w) => [...w].some((c) => c.codePointAt(0) > 0xffff)), 'a 4-byte UTF-8 emoji');
  assert.ok(has((w) => w.includes('"')), 'a double quote');
  assert.ok(has((w) => w.includes('\\')), 'a backslash');
  assert.ok(WORDS.includes('\n'), 'a newline');
  const words = WORDS.filter((w) => /\w/.test(w));
  assert.ok(words.every((w) => w.startsWith(' ')), 'words carry their leading space');
});

test('directives parse, strip, and split answers round-trip', () => {
  assert.deepEqual(parseDirectives('a [[fake tokens=5 error_after=2]] b [[fake token-ms=3]]'),
    { tokens: '5', error_after: '2', token_ms: '3' });
  assert.deepEqual(parseDirectives('[[fake answer="x \\"y\\" ]] z\\n" tokens=1]]'),
    { answer: 'x "y" ]] z\n', tokens: '1' });
  assert.equal(stripDirectives('a [[fake tokens=5]] b'), 'a  b');
  for (const t of ['Hello  world\nfoo ', '', ' lead', 'a\tb', 'Ça va? "yes" \\o/ 🚀\nbye']) {
    assert.equal(splitAnswer(t).join(''), t);
  }
  assert.deepEqual(splitAnswer('Hello big world'), ['Hello', ' big', ' world']);
});

test('POST /_fake/answer gives the same text as answerTokens', async () => {
  const { status, json } = await control('/_fake/answer', { prompt: 'Quel est le statut? [[fake tokens=7]]', tokens: 20 });
  assert.equal(status, 200);
  assert.deepEqual(json.tokens, answerTokens('Quel est le statut?', 20));
  assert.equal(json.text, answerText('Quel est le statut?', 20));
  // without "tokens": the prompt's directive, then the server's knobs
  assert.equal((await control('/_fake/answer', { prompt: 'p [[fake tokens=7]]' })).json.tokens.length, 7);
  await control('/_fake/config', { answer: 'Fixed  text' });
  assert.deepEqual((await control('/_fake/answer', { prompt: 'p' })).json,
    { text: 'Fixed  text', tokens: ['Fixed', '  text'] });
});

// ---------------------------------------------------------------- Ollama

test('Ollama info endpoints: /, /api/version, /api/tags', async () => {
  const root = await fetch(`${base}/`);
  assert.equal(root.status, 200);
  assert.equal(await root.text(), 'Ollama is running');
  const v = await ollama.version();
  assert.match(v.version, /^0\.\d+\.\d+$/);
  const list = await ollama.list();
  assert.ok(list.models.length >= 1);
  assert.equal(list.models[0].name, 'llama3.2:latest');
  assert.match(list.models[0].digest, /^[0-9a-f]{64}$/);
  assert.equal(list.models[0].details.format, 'gguf');
  await control('/_fake/config', { models: ['mistral:7b'] });
  assert.deepEqual((await ollama.list()).models.map((m) => m.name), ['mistral:7b']);
});

test('ollama generate stream reassembles the expected answer', async () => {
  const prompt = 'Why is my order late?';
  const parts = [];
  const stream = await ollama.generate({ model: MODEL, prompt, system: 'Be brief.', stream: true,
    options: { temperature: 0.2 } });
  for await (const p of stream) parts.push(p);
  assert.equal(parts.length, 13);
  const last = parts.at(-1);
  assert.equal(parts.map((p) => p.response).join(''), answerText(prompt, 12));
  assert.ok(parts.slice(0, -1).every((p) => p.done === false && p.model === MODEL));
  assert.equal(last.done, true);
  assert.equal(last.done_reason, 'stop');
  assert.equal(last.response, '');
  assert.equal(last.eval_count, 12);
  assert.ok(last.prompt_eval_count > 0);
  assert.ok(Array.isArray(last.context) && last.context.length > 12);
  assert.ok(last.total_duration > 0 && last.eval_duration > 0 && last.load_duration > 0);
  const st = await stats();
  assert.equal(st.by_path['/api/generate'], 1);
  assert.equal(st.last_body.options.temperature, 0.2);
  assert.equal(st.last_body.system, 'Be brief.');
});

test('Ollama stream bytes: NDJSON, chunked, Go field order and escaping', async () => {
  const r = await post('/api/generate', { model: MODEL, prompt: 'bytes [[fake tokens=3]]' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/x-ndjson');
  assert.equal(r.headers.get('transfer-encoding'), 'chunked');
  assert.ok(r.headers.get('date'));
  const body = await r.text();
  assert.ok(body.endsWith('}\n'));
  const lines = body.split('\n').slice(0, -1);
  assert.equal(lines.length, 4);
  const objs = lines.map((l) => JSON.parse(l));
  for (const o of objs.slice(0, 3)) {
    assert.deepEqual(Object.keys(o), ['model', 'created_at', 'response', 'done']);
    assert.match(o.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/);
  }
  assert.deepEqual(Object.keys(objs[3]), ['model', 'created_at', 'response', 'done', 'done_reason',
    'context', 'total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration',
    'eval_count', 'eval_duration']);
  assert.ok(lines[0].startsWith(`{"model":"${MODEL}","created_at":"`));
  // Go's json.Marshal escapes < > & ; quotes, backslashes and newlines as usual
  const r2 = await post('/api/generate', { model: MODEL,
    prompt: '[[fake answer="<b>Tom & \\"Jerry\\" \\\\ café 🚀\\nbye"]] x' });
  const raw = await r2.text();
  assert.ok(raw.includes('"response":"\\u003cb\\u003eTom"'), raw);
  assert.ok(raw.includes('"response":" \\u0026"'));
  assert.ok(raw.includes('"response":" \\"Jerry\\""'));
  assert.ok(raw.includes('"response":" \\\\"'));
  assert.ok(raw.includes('"response":" café"') && raw.includes('"response":" 🚀"')
    && raw.includes('"response":"\\nbye"'));
  const text = raw.split('\n').filter(Boolean).map((l) => JSON.parse(l).response).join('');
  assert.equal(text, '<b>Tom & "Jerry" \\ café 🚀\nbye');
});

test('ollama chat stream answers the last user message', async () => {
  const last = 'And the refund?';
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Hello' },
    { role: 'assistant', content: 'Hi!' },
    { role: 'user', content: last },
  ];
  const parts = [];
  for await (const p of await ollama.chat({ model: MODEL, messages, stream: true })) parts.push(p);
  assert.equal(parts.map((p) => p.message.content).join(''), answerText(last, 12));
  assert.ok(parts.every((p) => p.message.role === 'assistant'));
  const fin = parts.at(-1);
  assert.equal(fin.done, true);
  assert.equal(fin.done_reason, 'stop');
  assert.equal(fin.eval_count, 12);
  assert.equal(fin.context, undefined, 'chat has no context');
  const raw = await (await post('/api/chat', { model: MODEL, messages: [{ role: 'user', content: 'k [[fake tokens=1]]' }] })).text();
  const lines = raw.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.deepEqual(Object.keys(lines[0]), ['model', 'created_at', 'message', 'done']);
  assert.deepEqual(Object.keys(lines[0].message), ['role', 'content']);
  assert.deepEqual(Object.keys(lines[1]).slice(0, 5), ['model', 'created_at', 'message', 'done_reason', 'done']);
  assert.deepEqual(lines[1].message, { role: 'assistant', content: '' });
  assert.equal((await stats()).by_path['/api/chat'], 2);
});

test('ollama stream:false returns one object with the full text', async () => {
  const g = await ollama.generate({ model: MODEL, prompt: 'whole', stream: false });
  assert.equal(g.response, answerText('whole', 12));
  assert.equal(g.done, true);
  assert.equal(g.done_reason, 'stop');
  assert.equal(g.eval_count, 12);
  const c = await ollama.chat({ model: MODEL, messages: [{ role: 'user', content: 'whole chat' }], stream: false });
  assert.equal(c.message.content, answerText('whole chat', 12));
  assert.equal(c.done, true);
  const r = await post('/api/generate', { model: MODEL, prompt: 'whole', stream: false });
  assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
  assert.ok(r.headers.get('content-length'));
});

test('ollama num_predict cuts the answer with done_reason "length"', async () => {
  const parts = [];
  for await (const p of await ollama.generate({ model: MODEL, prompt: 'cut', stream: true, options: { num_predict: 3 } })) parts.push(p);
  assert.equal(parts.map((p) => p.response).join(''), answerTokens('cut', 12).slice(0, 3).join(''));
  assert.equal(parts.at(-1).done_reason, 'length');
  assert.equal(parts.at(-1).eval_count, 3);
});

test('ollama empty prompt only loads the model', async () => {
  const g = await ollama.generate({ model: MODEL, prompt: '', stream: false });
  assert.equal(g.done, true);
  assert.equal(g.done_reason, 'load');
  assert.equal(g.response, '');
});

test('Ollama HTTP errors surface as ResponseError with the real status and message', async () => {
  await assert.rejects(ollama.generate({ model: 'nosuch', prompt: 'x [[fake status=404]]', stream: true }),
    (e) => e.name === 'ResponseError' && e.status_code === 404
      && e.error === 'model "nosuch" not found, try pulling it first');
  await assert.rejects(ollama.chat({ model: MODEL, messages: [{ role: 'user', content: 'x [[fake status=500]]' }] }),
    (e) => e.name === 'ResponseError' && e.status_code === 500 && /llama runner/.test(e.error));
  await assert.rejects(ollama.generate({ model: MODEL, prompt: 'x [[fake status=503]]', stream: false }),
    (e) => e.status_code === 503 && /server busy/.test(e.error));
  await control('/_fake/config', { models: ['llama3.2'] });
  await assert.rejects(ollama.generate({ model: 'qwen2.5:0.5b', prompt: 'x', stream: false }),
    (e) => e.status_code === 404 && e.error === 'model "qwen2.5:0.5b" not found, try pulling it first');
  const ok = await ollama.generate({ model: 'llama3.2:latest', prompt: 'x', stream: false });
  assert.equal(ok.response, answerText('x', 12));
});

test('Ollama bad bodies get 400 {"error"} and unknown paths gin\'s 404', async () => {
  const cases = [
    ['{"model":"llama3.2",', 'unexpected EOF'],
    ['not json', /^invalid character '.' looking for beginning of value$/],
    ['', 'missing request body'],
    ['{"model":"llama3.2","prompt":5}', 'json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string'],
    ['{"prompt":"hi"}', 'model is required'],
  ];
  for (const [body, want] of cases) {
    const r = await post('/api/generate', body);
    assert.equal(r.status, 400, body);
    assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8');
    const j = await r.json();
    assert.deepEqual(Object.keys(j), ['error']);
    if (want instanceof RegExp) assert.match(j.error, want); else assert.equal(j.error, want);
  }
  const nf = await fetch(`${base}/api/nothing`);
  assert.equal(nf.status, 404);
  assert.equal(nf.headers.get('content-type'), 'text/plain');
  assert.equal(await nf.text(), '404 page not found');
  const wrongMethod = await fetch(`${base}/api/generate`);
  assert.equal(wrongMethod.status, 404);
  const badKnob = await post('/api/generate', { model: MODEL, prompt: 'x [[fake tokenz=3]]' });
  assert.equal(badKnob.status, 400);
  assert.match((await badKnob.json()).error, /unknown knob "tokenz"/);
});

test('ollama mid-stream error throws after the tokens sent before it', async () => {
  const prompt = 'break later [[fake tokens=8 error_after=3]]';
  const { items, error } = await drain(await ollama.generate({ model: MODEL, prompt, stream: true }));
  assert.ok(error instanceof Error);
  assert.equal(error.message, OLLAMA_MIDSTREAM);
  assert.equal(items.map((p) => p.response).join(''), answerTokens(prompt, 8).slice(0, 3).join(''));
  const raw = await (await post('/api/generate', { model: MODEL, prompt })).text();
  const lines = raw.split('\n');
  assert.equal(lines.at(-1), '');
  assert.equal(lines.at(-2), JSON.stringify({ error: OLLAMA_MIDSTREAM }));
  assert.equal(lines.length, 5);
  // stream:false: the error becomes a 500
  await assert.rejects(ollama.generate({ model: MODEL, prompt, stream: false }),
    (e) => e.status_code === 500 && e.error === OLLAMA_MIDSTREAM);
});

test('ollama malformed line makes the stream fail', async () => {
  const prompt = 'garble [[fake tokens=8 malformed_after=2]]';
  const warned = [];
  const warn = console.warn;
  console.warn = (...a) => { warned.push(a.join(' ')); };
  let res;
  try {
    res = await drain(await ollama.generate({ model: MODEL, prompt, stream: true }));
  } finally {
    console.warn = warn;
  }
  assert.ok(res.error instanceof Error);
  assert.match(res.error.message, /Did not receive done/);
  assert.ok(warned.some((w) => /invalid json/.test(w)), 'ollama-js saw a line that is not JSON');
  assert.equal(res.items.length, 2);
  const lines = (await (await post('/api/generate', { model: MODEL, prompt })).text()).split('\n');
  assert.equal(lines.length, 4);
  assert.throws(() => JSON.parse(lines[2]));
});

test('ollama dropped connection makes the stream throw', async () => {
  const prompt = 'cut me [[fake tokens=8 drop_after=2]]';
  const { items, error } = await drain(await ollama.generate({ model: MODEL, prompt, stream: true }));
  assert.ok(error, 'the library threw');
  assert.equal(items.length, 2);
  assert.equal(items.map((p) => p.response).join(''), answerTokens(prompt, 8).slice(0, 2).join(''));
  assert.ok(await waitFor(async () => (await stats()).active === 0));
});

test('hang keeps the stream open until the client gives up', async () => {
  const prompt = 'hang [[fake tokens=8 hang_after=2 token_ms=5]]';
  const stream = await ollama.generate({ model: MODEL, prompt, stream: true });
  const it = stream[Symbol.asyncIterator]();
  assert.equal((await it.next()).value.done, false);
  assert.equal((await it.next()).value.done, false);
  const next = it.next();
  next.catch(() => {});
  assert.equal(await Promise.race([next, timeout(400)]), 'timeout', 'a client-side timeout fired');
  assert.equal((await stats()).active, 1, 'the hung request is still active');
  stream.abort();
  await next.catch(() => {});
  assert.ok(await waitFor(async () => (await stats()).active === 0), 'server saw the client leave');

  // OpenAI, non-streamed: no headers ever come, so the library's own timeout fires
  const quick = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'k', maxRetries: 0, timeout: 300, logger: silent });
  const t0 = Date.now();
  await assert.rejects(quick.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: 'h [[fake hang_after=0]]' }] }),
    (e) => e instanceof OpenAI.APIConnectionTimeoutError);
  assert.ok(Date.now() - t0 >= 250);
  assert.ok(await waitFor(async () => (await stats()).active === 0));
});

test('first_ms and token_ms are roughly honoured; headers come at once', async () => {
  const t0 = Date.now();
  const r = await post('/api/generate', { model: MODEL, prompt: 'slow [[fake tokens=2 first_ms=400 token_ms=0]]' });
  const headersAt = Date.now() - t0;
  assert.equal(r.status, 200);
  assert.ok(headersAt < 300, `headers after ${headersAt} ms`);
  const reader = r.body.getReader();
  await reader.read();
  const firstAt = Date.now() - t0;
  assert.ok(firstAt >= 350, `first token after ${firstAt} ms`);
  while (!(await reader.read()).done);

  const t1 = Date.now();
  const parts = [];
  for await (const p of await ollama.generate({ model: MODEL, prompt: 'paced [[fake tokens=6 token_ms=60]]', stream: true })) {
    parts.push(Date.now() - t1);
  }
  const total = parts.at(-1);
  assert.ok(total >= 300, `6 tokens at 60 ms took ${total} ms`);
  assert.ok(total < 5000);
  assert.ok(parts[5] - parts[0] >= 200, 'tokens are spread out, not sent in one burst');
});

// ---------------------------------------------------------------- OpenAI

test('openai streaming gives the expected text, finish_reason and usage', async () => {
  const prompt = 'Where is my parcel?';
  const stream = await oai.chat.completions.create({
    model: GPT, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: prompt }],
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, answerText(prompt, 12));
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const fin = chunks.at(-2);
  assert.equal(fin.choices[0].finish_reason, 'stop');
  assert.deepEqual(fin.choices[0].delta, {});
  const u = chunks.at(-1);
  assert.deepEqual(u.choices, []);
  assert.equal(u.usage.completion_tokens, 12);
  assert.ok(u.usage.prompt_tokens > 0);
  assert.equal(u.usage.total_tokens, u.usage.prompt_tokens + 12);
  for (const c of chunks) {
    assert.match(c.id, /^chatcmpl-[A-Za-z0-9]+$/);
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.model, GPT);
    assert.ok(Number.isInteger(c.created));
  }
  assert.equal((await stats()).last_body.stream_options.include_usage, true);
});

test('OpenAI stream bytes: SSE framing, field order, [DONE]', async () => {
  const r = await post('/v1/chat/completions', { model: GPT, stream: true,
    messages: [{ role: 'user', content: 'sse [[fake tokens=2]]' }] });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/event-stream/);
  assert.match(r.headers.get('x-request-id'), /^req_/);
  const raw = await r.text();
  assert.ok(raw.endsWith('data: [DONE]\n\n'));
  const events = raw.split('\n\n').slice(0, -1);
  assert.ok(events.every((e) => e.startsWith('data: ') && !e.includes('\n')));
  assert.equal(events.length, 5, 'role, 2 tokens, finish, [DONE] (no usage chunk unless asked)');
  const objs = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)));
  assert.deepEqual(Object.keys(objs[0]), ['id', 'object', 'created', 'model', 'system_fingerprint', 'choices']);
  assert.deepEqual(Object.keys(objs[0].choices[0]), ['index', 'delta', 'logprobs', 'finish_reason']);
  assert.equal(objs[0].choices[0].logprobs, null);
  assert.ok(events[0].startsWith('data: {"id":"chatcmpl-'));
  assert.equal(objs.slice(1, 3).map((o) => o.choices[0].delta.content).join(''), answerText('sse', 2));
  assert.equal(objs[3].choices[0].finish_reason, 'stop');
});

test('openai non-streaming gives a chat.completion with usage', async () => {
  const prompt = 'Summarise ticket 42';
  const c = await oai.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: prompt }] });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(c.choices[0].message.content, answerText(prompt, 12));
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.equal(c.usage.completion_tokens, 12);
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
  const cut = await oai.chat.completions.create({ model: GPT, max_tokens: 2,
    messages: [{ role: 'user', content: [{ type: 'text', text: prompt }] }] });
  assert.equal(cut.choices[0].message.content, answerTokens(prompt, 12).slice(0, 2).join(''));
  assert.equal(cut.choices[0].finish_reason, 'length');
  const models = [];
  for await (const m of oai.models.list()) models.push(m.id);
  assert.ok(models.includes(GPT));
});

test('OpenAI HTTP errors surface as the library\'s error classes', async () => {
  const ask = (directive, model = GPT) => oai.chat.completions.create({ model, stream: true,
    messages: [{ role: 'user', content: `q [[fake ${directive}]]` }] });
  await assert.rejects(ask('status=401'), (e) => e instanceof OpenAI.AuthenticationError
    && e.status === 401 && e.code === 'invalid_api_key' && /Incorrect API key/.test(e.message));
  await assert.rejects(ask('status=404', 'gpt-nope'), (e) => e instanceof OpenAI.NotFoundError
    && e.status === 404 && e.code === 'model_not_found'
    && e.message === '404 The model `gpt-nope` does not exist or you do not have access to it.');
  await assert.rejects(ask('status=429'), (e) => e instanceof OpenAI.RateLimitError
    && e.status === 429 && e.code === 'rate_limit_exceeded');
  await assert.rejects(ask('status=500'), (e) => e instanceof OpenAI.InternalServerError
    && e.status === 500 && e.type === 'server_error');
  await assert.rejects(ask('status=503'), (e) => e instanceof OpenAI.InternalServerError && e.status === 503);
  await assert.rejects(ask('status=400'), (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
  await control('/_fake/config', { models: [GPT] });
  await assert.rejects(ask('tokens=1', 'gpt-other'), (e) => e instanceof OpenAI.NotFoundError
    && e.code === 'model_not_found');

  const bad = await post('/v1/chat/completions', '{"model":');
  assert.equal(bad.status, 400);
  const j = await bad.json();
  assert.deepEqual(Object.keys(j.error), ['message', 'type', 'param', 'code']);
  assert.match(j.error.message, /could not parse the JSON body/);
  const missing = await (await post('/v1/chat/completions', { model: GPT })).json();
  assert.equal(missing.error.code, 'missing_required_parameter');
  const nf = await fetch(`${base}/v1/nothing`);
  assert.equal(nf.status, 404);
  assert.equal((await nf.json()).error.message, 'Invalid URL (GET /v1/nothing)');
});

test('an API key, once configured, is required on OpenAI endpoints', async () => {
  const key = 'sk-test-Secret-0123456789';
  await control('/_fake/config', { api_key: key });
  const good = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
  const c = await good.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: 'k' }] });
  assert.equal(c.choices[0].message.content, answerText('k', 12));
  assert.equal((await stats()).last_headers.authorization, `Bearer ${key}`);
  const wrong = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-test-Wrong-9876543210', maxRetries: 0 });
  await assert.rejects(wrong.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: 'k' }] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.code === 'invalid_api_key'
      && !e.message.includes('Wrong-9876') && e.message.includes('3210'));
  const none = await post('/v1/chat/completions', { model: GPT, messages: [{ role: 'user', content: 'k' }] });
  assert.equal(none.status, 401);
  assert.match((await none.json()).error.message, /You didn't provide an API key/);
  assert.equal((await fetch(`${base}/v1/models`)).status, 401);
  // Ollama paths stay open
  assert.equal((await ollama.generate({ model: MODEL, prompt: 'k', stream: false })).done, true);
  // a directive can demand a key for one request
  await control('/_fake/reset', {});
  await assert.rejects(oai.chat.completions.create({ model: GPT,
    messages: [{ role: 'user', content: 'k [[fake api_key=sk-other]]' }] }),
  (e) => e instanceof OpenAI.AuthenticationError);
});

test('openai mid-stream error throws an APIError and no [DONE] is sent', async () => {
  const prompt = 'break [[fake tokens=8 error_after=3]]';
  const stream = await oai.chat.completions.create({ model: GPT, stream: true,
    messages: [{ role: 'user', content: prompt }] });
  const { items, error } = await drain(stream);
  assert.ok(error instanceof OpenAI.APIError);
  assert.equal(error.message, OPENAI_MIDSTREAM);
  assert.equal(error.type, 'server_error');
  assert.equal(items.map((c) => c.choices[0].delta.content ?? '').join(''),
    answerTokens(prompt, 8).slice(0, 3).join(''));
  const raw = await (await post('/v1/chat/completions', { model: GPT, stream: true,
    messages: [{ role: 'user', content: prompt }] })).text();
  assert.ok(!raw.includes('[DONE]'));
  assert.ok(raw.endsWith(`data: ${JSON.stringify({ error: { message: OPENAI_MIDSTREAM, type: 'server_error', param: null, code: null } })}\n\n`));
  await assert.rejects(oai.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: prompt }] }),
    (e) => e instanceof OpenAI.InternalServerError);
});

test('openai malformed line makes the stream throw', async () => {
  const prompt = 'garble [[fake tokens=8 malformed_after=2]]';
  const stream = await oai.chat.completions.create({ model: GPT, stream: true,
    messages: [{ role: 'user', content: prompt }] });
  const { items, error } = await drain(stream);
  assert.ok(error instanceof SyntaxError, String(error));
  assert.equal(items.length, 3, 'role chunk and 2 tokens');
  const raw = await (await post('/v1/chat/completions', { model: GPT, stream: true,
    messages: [{ role: 'user', content: prompt }] })).text();
  assert.ok(raw.endsWith('data: {not json\n\n'));
});

test('openai dropped connection makes the stream throw', async () => {
  const prompt = 'cut [[fake tokens=8 drop_after=2]]';
  const stream = await oai.chat.completions.create({ model: GPT, stream: true,
    messages: [{ role: 'user', content: prompt }] });
  const { items, error } = await drain(stream);
  assert.ok(error, 'the library threw');
  assert.equal(items.map((c) => c.choices[0].delta.content ?? '').join(''),
    answerTokens(prompt, 8).slice(0, 2).join(''));
  await assert.rejects(oai.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: prompt }] }),
    (e) => e instanceof OpenAI.APIConnectionError);
});

test('openai hang: a client-side abort ends the wait', async () => {
  const ac = new AbortController();
  const stream = await oai.chat.completions.create({ model: GPT, stream: true,
    messages: [{ role: 'user', content: 'h [[fake tokens=5 hang_after=1]]' }] }, { signal: ac.signal });
  const it = stream[Symbol.asyncIterator]();
  assert.deepEqual((await it.next()).value.choices[0].delta, { role: 'assistant', content: '' });
  assert.equal((await it.next()).value.choices[0].delta.content, answerTokens('h', 5)[0]);
  const next = it.next();
  next.catch(() => {});
  assert.equal(await Promise.race([next, timeout(300)]), 'timeout');
  ac.abort();
  await next.catch(() => {});
  assert.ok(await waitFor(async () => (await stats()).active === 0));
});

// ---------------------------------------------------------------- knobs & stats

test('knob layers: /_fake/config < X-Fake-LLM header < prompt directive', async () => {
  const set = await control('/_fake/config', { tokens: 7, token_ms: 0 });
  assert.equal(set.status, 200);
  assert.equal(set.json.tokens, 7);
  assert.equal(set.json.first_ms, 0, 'merged, other knobs kept');
  const gen = async (prompt, headers) => {
    const r = await post('/api/generate', { model: MODEL, prompt, stream: false }, headers);
    return (await r.json()).response;
  };
  assert.equal(await gen('layers'), answerText('layers', 7));
  assert.equal(await gen('layers', { 'X-Fake-LLM': 'tokens=4,error_after=9' }), answerText('layers', 4));
  assert.equal(await gen('layers [[fake tokens=2]]', { 'X-Fake-LLM': 'tokens=4' }), answerText('layers', 2));
  const oc = await oai.chat.completions.create({ model: GPT, messages: [{ role: 'user', content: 'l' }] },
    { headers: { 'X-Fake-LLM': 'answer="Hi there" token_ms=0' } });
  assert.equal(oc.choices[0].message.content, 'Hi there');
  const bad = await control('/_fake/config', { tokens: -1 });
  assert.equal(bad.status, 400);
  assert.equal((await control('/_fake/config', { nope: 1 })).status, 400);
  assert.equal((await control('/_fake/config')).json.tokens, 7, 'a rejected change changes nothing');
  await control('/_fake/config', { error_after: 1 });
  await assert.rejects(ollama.generate({ model: MODEL, prompt: 'x', stream: false }), (e) => e.status_code === 500);
  await control('/_fake/config', { error_after: null });
  assert.equal(await gen('x'), answerText('x', 7));
  const reset = await control('/_fake/reset', {});
  assert.equal(reset.json.tokens, 12);
  assert.equal(reset.json.token_ms, 10);
  assert.equal(reset.json.first_ms, 0);
  for (const k of ['answer', 'status', 'error_after', 'malformed_after', 'hang_after', 'drop_after', 'api_key']) {
    assert.equal(reset.json[k], null, k);
  }
});

test('stats count upstream calls by path, active streams and the last body', async () => {
  assert.deepEqual(await stats(), { total: 0, active: 0, by_path: {}, last_body: null,
    last_path: null, last_headers: null });
  const slow = ollama.generate({ model: MODEL, prompt: 'slow [[fake first_ms=300 tokens=1]]', stream: false });
  assert.ok(await waitFor(async () => (await stats()).active === 1), 'one request in flight');
  await slow;
  await ollama.generate({ model: MODEL, prompt: 'two', stream: false });
  const body = { model: GPT, messages: [{ role: 'user', content: 'three [[fake tokens=1]]' }] };
  await oai.chat.completions.create(body);
  const st = await stats();
  assert.equal(st.total, 3, '/_fake/* calls are not counted');
  assert.equal(st.active, 0);
  assert.deepEqual(st.by_path, { '/api/generate': 2, '/v1/chat/completions': 1 });
  assert.deepEqual(st.last_body, body);
  assert.equal(st.last_path, '/v1/chat/completions');
});

test('concurrent streams are independent and each counted once', async () => {
  await control('/_fake/config', { token_ms: 5 });
  const prompts = Array.from({ length: 20 }, (_, i) => `parallel ${i}`);
  const texts = await Promise.all(prompts.map(async (p, i) => {
    if (i % 2) {
      const s = await oai.chat.completions.create({ model: GPT, stream: true, messages: [{ role: 'user', content: p }] });
      let t = '';
      for await (const c of s) t += c.choices[0]?.delta?.content ?? '';
      return t;
    }
    let t = '';
    for await (const part of await ollama.generate({ model: MODEL, prompt: p, stream: true })) t += part.response;
    return t;
  }));
  assert.deepEqual(texts, prompts.map((p) => answerText(p, 12)));
  const st = await stats();
  assert.equal(st.total, 20);
  assert.equal(st.by_path['/api/generate'], 10);
  assert.equal(st.by_path['/v1/chat/completions'], 10);
});

// ---------------------------------------------------------------- request log

test('GET /_fake/requests logs each request and when the client closed it early', async () => {
  // one complete answer
  const done = await post('/api/generate', { model: MODEL, prompt: 'whole [[fake tokens=3 token_ms=1]]' });
  await done.text();
  // one the client abandons mid-stream
  const ac = new AbortController();
  const chat = await post('/api/chat', { model: MODEL, messages: [{ role: 'user', content: 'cut me [[fake tokens=2 token_ms=1]]' }] });
  await chat.text();
  const r = await fetch(`${base}/api/generate`, {
    method: 'POST', signal: ac.signal, headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: MODEL, prompt: 'abandon [[fake tokens=50 token_ms=20]]' }),
  });
  const reader = r.body.getReader();
  await reader.read();                          // the first bytes arrived
  const closedAt = performance.timeOrigin + performance.now();
  ac.abort();
  assert.ok(await waitFor(async () => {
    const { json } = await control('/_fake/requests');
    return json.requests.find((q) => q.prompt?.startsWith('abandon'))?.ended_at != null;
  }));
  const { json } = await control('/_fake/requests');
  assert.equal(typeof json.now, 'number');
  const whole = json.requests.find((q) => q.prompt?.startsWith('whole'));
  const gone = json.requests.find((q) => q.prompt?.startsWith('abandon'));
  assert.equal(whole.path, '/api/generate');
  assert.equal(whole.closed_by_client, false);
  assert.ok(whole.ended_at >= whole.started_at);
  assert.equal(gone.closed_by_client, true);
  assert.ok(gone.ended_at >= closedAt - 5, 'closed after the client aborted');
  assert.ok(gone.ended_at - closedAt < 500, `seen within 500 ms (${gone.ended_at - closedAt})`);
  const chatReq = json.requests.find((q) => q.path === '/api/chat');
  assert.equal(chatReq.prompt, 'cut me [[fake tokens=2 token_ms=1]]');
  assert.equal(chatReq.closed_by_client, false);
  // ids are increasing; reset empties the log
  assert.ok(whole.id < gone.id);
  await control('/_fake/reset', {});
  assert.deepEqual((await control('/_fake/requests')).json.requests, []);
});

// ---------------------------------------------------------------- Retry-After

test('retry_after sends a Retry-After header with a status failure; the log shows the status', async () => {
  // Ollama, seconds
  const a = await post('/api/generate', { model: MODEL, prompt: 'busy [[fake status=429 retry_after=2]]' });
  assert.equal(a.status, 429);
  assert.equal(a.headers.get('retry-after'), '2');
  await a.text();
  // OpenAI, an HTTP date
  const when = 'Wed, 21 Oct 2037 07:28:00 GMT';
  const b = await post('/v1/chat/completions', {
    model: GPT, stream: true, messages: [{ role: 'user', content: `busy [[fake status=503 retry_after="${when}"]]` }],
  });
  assert.equal(b.status, 503);
  assert.equal(b.headers.get('retry-after'), when);
  await b.text();
  // without status nothing changes: a normal answer and no header
  const c = await post('/api/generate', { model: MODEL, prompt: 'fine [[fake tokens=2 token_ms=1 retry_after=5]]' });
  assert.equal(c.status, 200);
  assert.equal(c.headers.get('retry-after'), null);
  await c.text();
  // a bad value is the provider's 400
  const d = await post('/api/generate', { model: MODEL, prompt: '[[fake status=429 retry_after=soon]]' });
  assert.equal(d.status, 400);
  assert.match(await d.text(), /retry_after/);
  const { json } = await control('/_fake/requests');
  const st = json.requests.map((q) => q.status);
  assert.deepEqual(st.slice(-4), [429, 503, 200, 400]);
});
