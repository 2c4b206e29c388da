// openapi.mjs — real responses of parley.fcgi, through a real web server,
// checked against docs/openapi.yaml (its JSON twin docs/openapi.json), so
// the contract cannot drift from the code (docs/openapi.md).
//
// Run by tests/integration/t0870-openapi.sh with:
//   PARLEY_BASE        http://127.0.0.1:PORT (lighttpd + parley.fcgi)
//   PARLEY_JWT_SECRET  the app's secret
//   FAKE_LLM_URL       the simulated LLM
//   RATE_LIMIT         the app's RATE_LIMIT_MESSAGES_PER_MINUTE
//   BAD_ORIGIN         an Origin the app does not allow (PARLEY_ALLOWED_ORIGINS)
// Every exchange goes through check(): the route must be an operation of the
// document, the status one the operation declares, the Content-Type one the
// response declares (none when it declares no content), and the body must
// match the schema (openapi-backend's response validator; each SSE event's
// data against the schema named by x-parley-sse-data). The last test fails
// when an operation of the document was never exercised, or when one of
// the error statuses 400, 401, 403, 404, 405, 409, 410, 413, 415, 429 never
// came. Only loopback; every wait is bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import OpenAPIBackend from 'openapi-backend';
import { Validator } from '@seriousme/openapi-schema-validator';
import Ajv from 'ajv';

const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET || '';
const RATE_LIMIT = Number(process.env.RATE_LIMIT || 0);
const BAD_ORIGIN = process.env.BAD_ORIGIN || '';
const SPEC_FILE = process.env.OPENAPI_JSON || new URL('../../docs/openapi.json', import.meta.url).pathname;
if (!BASE || !SECRET) throw new Error('PARLEY_BASE and PARLEY_JWT_SECRET must be set');

const b64u = (b) => Buffer.from(b).toString('base64url');
function jwt(sub, claims = {}) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...claims }));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const run = randomUUID().slice(0, 8);
const ALICE = jwt(`alice-${run}`);
const BOB = jwt(`bob-${run}`);
const ADMIN = jwt(`admin-${run}`, { role: 'admin' });

const specText = readFileSync(SPEC_FILE, 'utf8');
const spec = JSON.parse(specText);
let api;                       // openapi-backend over the dereferenced document
const ajv = new Ajv({ strict: false, allErrors: true });
const sseValidators = new Map();
const seen = new Map();        // operationId -> Set of statuses
const statuses = new Set();
const log = [];

// ---- the checker -----------------------------------------------------------

function operationFor(method, path) {
  return api.router.matchOperation({ method: method.toLowerCase(), path, headers: {}, query: {} });
}

// The SSE events of a text/event-stream body: [{id, data, event}] ("retry:"
// and comment lines skipped; a data line must hold the whole event).
function sseEvents(text) {
  const out = [];
  for (const block of text.split(/\n\n/)) {
    const ev = {};
    for (const line of block.split('\n')) {
      if (line.startsWith('data: ')) ev.data = (ev.data === undefined ? '' : ev.data + '\n') + line.slice(6);
      else if (line.startsWith('id: ')) ev.id = line.slice(4);
      else if (line.startsWith('event: ')) ev.event = line.slice(7);
    }
    if (ev.data !== undefined) out.push(ev);
  }
  return out;
}

const shared = new Map();
function validateWith(schema, value) {
  if (!shared.has(schema)) shared.set(schema, ajv.compile(schema));
  const v = shared.get(schema);
  return v(value) ? { valid: true } : { valid: false, errors: v.errors };
}

function sseValidator(media) {
  const schema = media['x-parley-sse-data'];
  assert.ok(schema, 'a text/event-stream response must name its event data schema (x-parley-sse-data)');
  if (!sseValidators.has(schema)) sseValidators.set(schema, ajv.compile(schema));
  return sseValidators.get(schema);
}

// Checks one response against the document; returns {status, json, text,
// headers, events}. opts.expect: the status the test wants (asserted after
// the document check, so a wrong status is told as such).
function check(method, path, res, text, expect) {
  const where = `${method} ${path} -> ${res.status}`;
  let op = operationFor(method, path);
  if (!op && (res.status === 404 || res.status === 405)) {
    // no operation: an unknown path (404) or a method the path does not
    // serve (405, only where the path exists): the dispatcher's errors,
    // checked against the document's shared responses
    const other = ['get', 'post', 'put', 'patch', 'delete'].some((m) => operationFor(m, path));
    assert.equal(res.status, other ? 405 : 404, `${where}: no operation of docs/openapi.yaml matches`);
    op = { operationId: other ? '(method not allowed)' : '(unknown path)',
           responses: { [res.status]: api.definition.components.responses[other ? 'MethodNotAllowed' : 'NotFound'] } };
  }
  assert.ok(op && op.operationId, `${where}: no operation of docs/openapi.yaml matches`);
  const declared = op.responses || {};
  const r = declared[String(res.status)];
  assert.ok(r, `${where}: status ${res.status} is not declared by ${op.operationId} (declared: ${Object.keys(declared).join(', ')})`);
  const ctype = (res.headers.get('content-type') || '').split(';')[0].trim().toLowerCase();
  const out = { status: res.status, text, headers: res.headers, json: null, events: null };
  if (!r.content) {
    assert.equal(text, '', `${where}: ${op.operationId} declares no body for ${res.status}, got ${JSON.stringify(text.slice(0, 200))}`);
  } else {
    assert.ok(r.content[ctype], `${where}: Content-Type ${ctype || '(none)'} is not declared (declared: ${Object.keys(r.content).join(', ')})`);
    if (ctype === 'application/json') {
      try { out.json = JSON.parse(text); } catch { assert.fail(`${where}: body is not JSON: ${text.slice(0, 200)}`); }
      const v = op.operationId.startsWith('(') ? validateWith(r.content[ctype].schema, out.json)
        : api.validator.validateResponse(out.json, op, res.status);
      assert.ok(v.valid, `${where}: body does not match ${op.operationId} ${res.status}: ${JSON.stringify(v.errors)}\n${text.slice(0, 400)}`);
    } else if (ctype === 'text/event-stream') {
      const validate = sseValidator(r.content[ctype]);
      out.events = sseEvents(text);
      assert.ok(out.events.length > 0, `${where}: an event stream without events`);
      // a declared end sentinel (x-parley-sse-done, "[DONE]") is not JSON:
      // it may only be the last event
      const done = r.content[ctype]['x-parley-sse-done'];
      if (done !== undefined && out.events.at(-1).data === done) out.done = out.events.pop();
      for (const ev of out.events) {
        let data;
        try { data = JSON.parse(ev.data); } catch { assert.fail(`${where}: event data is not JSON: ${ev.data}`); }
        assert.ok(validate(data), `${where}: event ${ev.data} does not match: ${JSON.stringify(validate.errors)}`);
        ev.json = data;
      }
    } else {
      const schema = r.content[ctype].schema || {};
      if (schema.type === 'string') assert.equal(typeof text, 'string');
    }
  }
  if (!seen.has(op.operationId)) seen.set(op.operationId, new Set());
  seen.get(op.operationId).add(res.status);
  statuses.add(res.status);
  log.push(where);
  if (expect !== undefined) assert.equal(res.status, expect, `${where}: expected ${expect}: ${text.slice(0, 300)}`);
  return out;
}

async function call(method, path, { body, raw, token = ALICE, headers = {}, expect, timeout = 30000 } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) payload = raw;
  else if (body !== undefined) { payload = JSON.stringify(body); h['Content-Type'] ??= 'application/json'; }
  const res = await fetch(BASE + path, { method, headers: h, body: payload, signal: AbortSignal.timeout(timeout) });
  const text = await res.text();
  return check(method, path.split('?')[0], res, text, expect);
}

// ---- the document itself ---------------------------------------------------

test('docs/openapi.json is a valid OpenAPI 3.1 document', async () => {
  const v = new Validator({ strict: true });
  const r = await v.validate(structuredClone(spec));
  assert.ok(r.valid, JSON.stringify(r.errors, null, 1));
  assert.match(spec.openapi, /^3\.1\./);
  assert.equal(v.version, '3.1');
  api = new OpenAPIBackend({ definition: structuredClone(spec), strict: true });
  // openapi-backend's own document check knows OpenAPI 3.0 only (const,
  // info.summary...): the 3.1 check is the one above.
  api.validateDefinition = function () { return this.document; };
  await api.init();
  assert.ok(api.router.getOperations().length > 20);
});

test('every route of fcgi/routes.c is an operation of the document, and no other', () => {
  const src = readFileSync(new URL('../../fcgi/routes.c', import.meta.url), 'utf8');
  const routes = [...src.matchAll(/\{\s*"([A-Z]+)",\s*"([^"]+)",\s*h_/g)].map((m) => `${m[1]} ${m[2]}`);
  assert.ok(routes.length > 20, 'routes.c was read');
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths))
    for (const m of ['get', 'post', 'put', 'patch', 'delete', 'options'])
      if (item[m]) ops.push(`${m.toUpperCase()} ${path}`);
  // the pattern's capture names may differ from the document's: compare shapes
  const shape = (r) => r.replace(/\{[^}]+\}/g, '{}');
  const have = new Set(ops.map(shape));
  const want = new Set(routes.map(shape));
  assert.deepEqual(routes.filter((r) => !have.has(shape(r))), [], 'routes missing from docs/openapi.yaml');
  assert.deepEqual(ops.filter((o) => !want.has(shape(o))), [], 'operations of docs/openapi.yaml that routes.c does not serve');
});

test('the ErrorCode enum is the table of docs/errors.md', () => {
  const md = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  const table = [...md.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]);
  assert.ok(table.length > 10, 'docs/errors.md was read');
  assert.deepEqual([...spec.components.schemas.ErrorCode.enum].sort(), [...table].sort());
});

test('GET /api/openapi.json serves this document (ETag, cache headers)', async () => {
  const r = await call('GET', '/api/openapi.json', { token: null, expect: 200 });
  assert.equal(r.text, specText, 'the served document is byte for byte docs/openapi.json');
  assert.match(r.headers.get('etag') || '', /^"[0-9a-f]{16}"$/);
  assert.match(r.headers.get('cache-control') || '', /max-age=\d+/);
  await call('POST', '/api/openapi.json', { token: null, body: {}, expect: 405 });
});

// ---- misc ------------------------------------------------------------------

test('health, brands, metrics, usage', async () => {
  const h = await call('GET', '/api/health', { token: null, expect: 200 });
  assert.equal(h.json.auth, 'jwt');
  await call('GET', '/brands/active', { token: null, expect: 200 });
  await call('GET', '/api/metrics', { token: ADMIN, expect: 200 });
  await call('GET', '/api/metrics', { expect: 403 });
  await call('GET', '/api/metrics', { token: null, expect: 401 });
  await call('GET', '/api/metrics', { token: 'not.a.jwt', expect: 401 });
  await call('GET', '/api/usage', { expect: 200 });
  await call('GET', '/api/usage?days=0', { expect: 400 });
  await call('GET', `/api/usage?user=bob-${run}`, { expect: 403 });
  await call('GET', `/api/usage?user=alice-${run}&days=2`, { token: ADMIN, expect: 200 });
  await call('PUT', '/api/health', { token: null, body: {}, expect: 405 });
  await call('GET', '/api/no-such-route', { token: null, expect: 404 });
  if (BAD_ORIGIN) await call('GET', '/api/health', { token: null, headers: { Origin: BAD_ORIGIN }, expect: 403 });
});

// ---- seed 001 REST, seed 004 SSE, stop --------------------------------------

async function newSession(token = ALICE, body = { title: 'openapi' }) {
  return (await call('POST', '/api/chat/sessions', { token, body, expect: 201 })).json;
}

test('chat sessions, messages, reactions, export', async () => {
  const s = await newSession();
  await call('POST', '/api/chat/sessions', { body: { kind: 'sse' }, expect: 201 });
  const proj = await call('POST', '/api/chat/sessions', { body: { title: 'in a project', project_id: `p-${run}` }, expect: 201 });
  assert.equal(proj.json.project_id, `p-${run}`);
  const inProj = await call('GET', `/api/chat/sessions?project_id=p-${run}`, { expect: 200 });
  assert.deepEqual(inProj.json.sessions.map((x) => x.session_id), [proj.json.session_id]);
  await call('POST', '/api/chat/sessions', { body: { project_id: 'no spaces' }, expect: 400 });
  await call('POST', '/api/chat/sessions', { raw: '{"title": ', headers: { 'Content-Type': 'application/json' }, expect: 400 });
  await call('POST', '/api/chat/sessions', { raw: '{"title":"x"}', headers: { 'Content-Type': 'text/plain' }, expect: 415 });
  await call('POST', '/api/chat/sessions', { body: { title: 7 }, expect: 400 });
  await call('GET', '/api/chat/sessions?limit=5', { expect: 200 });
  await call('GET', '/api/chat/sessions?kind=nope', { expect: 400 });
  await call('GET', '/api/chat/sessions', { token: null, expect: 401 });
  await call('GET', `/api/chat/sessions/${s.session_id}`, { expect: 200 });
  await call('GET', `/api/chat/sessions/${s.session_id}`, { token: BOB, expect: 404 });
  await call('GET', '/api/chat/sessions/no-such-session', { expect: 404 });

  const sent = await call('POST', '/api/chat/send', { body: { conversationId: s.session_id, content: 'Hello, what is a router?' }, expect: 200 });
  const last = sent.events.at(-1).json;
  assert.equal(last.done, true, 'the stream ends with done');
  assert.ok(sent.events.some((e) => typeof e.json.content === 'string'));

  const msgs = await call('GET', `/api/chat/sessions/${s.session_id}/messages?limit=10`, { expect: 200 });
  assert.equal(msgs.json.messages.length, 2);
  const mid = msgs.json.messages[1].message_id;
  await call('GET', `/api/chat/sessions/${s.session_id}/messages?offset=-1`, { expect: 400 });
  await call('GET', '/api/chat/sessions/no-such-session/messages', { expect: 404 });
  await call('POST', `/api/chat/sessions/${s.session_id}/messages/${mid}/reactions`, { body: { helpful: true, rating: 5 }, expect: 200 });
  await call('POST', `/api/chat/sessions/${s.session_id}/messages/${mid}/reactions`, { body: { rating: 9 }, expect: 400 });
  await call('POST', `/api/chat/sessions/${s.session_id}/messages/no-such-message/reactions`, { body: { helpful: false }, expect: 404 });
  const ex = await call('POST', '/api/chat/export', { body: { session_id: s.session_id }, expect: 200 });
  assert.equal(ex.json.messages.length, 2);
  const md = await call('POST', '/api/chat/export', { body: { session_id: s.session_id, format: 'markdown' }, expect: 200 });
  assert.match(md.headers.get('content-type'), /^text\/markdown/);
  await call('POST', '/api/chat/export', { body: { session_id: s.session_id, format: 'pdf' }, expect: 400 });
  await call('POST', '/api/chat/export', { body: { session_id: 'no-such-session' }, expect: 404 });

  // stop: nothing ran on a new conversation; a finished one is a conflict
  const fresh = await newSession();
  await call('POST', `/api/chat/sessions/${fresh.session_id}/stop`, { expect: 404 });
  await call('POST', `/api/chat/sessions/${s.session_id}/stop`, { expect: 409 });

  // the send refusals before the stream
  await call('POST', '/api/chat/send', { body: { conversationId: 'no-such-session', content: 'hi' }, expect: 404 });
  await call('POST', '/api/chat/send', { body: { conversationId: s.session_id }, expect: 400 });
  await call('POST', '/api/chat/send', { body: { conversationId: s.session_id, content: 'x'.repeat(20000) }, expect: 400 });

  // close (history kept), then a send is a conflict; purge
  const del = await call('DELETE', `/api/chat/sessions/${s.session_id}`, { expect: 200 });
  assert.equal(del.json.status, 'closed');
  await call('POST', '/api/chat/send', { body: { conversationId: s.session_id, content: 'again' }, expect: 409 });
  await call('DELETE', `/api/chat/sessions/${s.session_id}?purge=maybe`, { expect: 400 });
  await call('DELETE', `/api/chat/sessions/${s.session_id}?purge=true`, { expect: 204 });
  await call('DELETE', `/api/chat/sessions/${s.session_id}`, { expect: 404 });
});

test('stopping a running generation (REST), by its starter and not by another user', async () => {
  const s = await newSession();
  const ctl = new AbortController();
  const stream = fetch(`${BASE}/api/chat/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ALICE}` },
    body: JSON.stringify({ conversationId: s.session_id, content: 'Long one [[fake tokens=200 token_ms=50]]' }),
    signal: AbortSignal.any([ctl.signal, AbortSignal.timeout(30000)]),
  });
  const res = await stream;
  const textP = res.text();
  // the generation is claimed before the stream starts: stop it
  await call('POST', `/api/chat/sessions/${s.session_id}/stop`, { token: BOB, expect: 403 });
  const st = await call('POST', `/api/chat/sessions/${s.session_id}/stop`, { expect: 202 });
  assert.equal(st.json.stopped, true);
  const out = check('POST', '/api/chat/send', res, await textP, 200);
  const end = out.events.at(-1).json;
  assert.equal(end.done, true);
  assert.equal(end.stopped, true, 'the last event is marked stopped');
});

test('seed 004 rate limit and daily budget: 429 before the stream', async () => {
  if (RATE_LIMIT > 0) {
    const user = jwt(`rl-${run}`);
    const s = await newSession(user, { kind: 'sse' });
    let got429 = null;
    for (let i = 0; i <= RATE_LIMIT && !got429; i++) {
      const r = await call('POST', '/api/chat/send', { token: user, body: { conversationId: s.session_id, content: `question ${i}` } });
      if (r.status === 429) got429 = r;
      else assert.equal(r.status, 200);
    }
    assert.ok(got429, `no 429 within ${RATE_LIMIT + 1} messages`);
    assert.equal(got429.json.code, 'rate_limited');
  }
  const poor = jwt(`poor-${run}`, { token_budget: 1 });
  const s2 = await newSession(poor);
  await call('POST', '/api/chat/send', { token: poor, body: { conversationId: s2.session_id, content: 'spend it' }, expect: 200 });
  const r = await call('POST', '/api/chat/send', { token: poor, body: { conversationId: s2.session_id, content: 'more' }, expect: 429 });
  assert.equal(r.json.code, 'budget_exhausted');
});

// ---- long-poll (seed 000 over it) and the ticket REST + SSE -----------------

async function pollAll(sid, token = ALICE, until = (f) => f.type === 'done' || f.type === 'error') {
  let cursor = 0;
  const frames = [];
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const r = await call('GET', `/api/poll/${sid}?cursor=${cursor}&wait=5`, { token, expect: 200 });
    frames.push(...r.json.messages);
    cursor = r.json.cursor;
    if (r.json.closed || frames.some(until)) break;
  }
  return { frames, cursor };
}

test('long-poll transport and seed 000 tickets (REST and SSE)', async () => {
  const ticket = `OA-${run}`;
  await call('POST', '/api/poll/open', { body: {}, expect: 400 });
  await call('POST', '/api/poll/open', { body: { path: '/nowhere/at/all' }, expect: 404 });
  await call('POST', '/api/poll/open', { token: null, body: { path: `/api/websocket/chat/${ticket}` }, expect: 401 });
  const open = await call('POST', '/api/poll/open', { body: { path: `/api/websocket/chat/${ticket}` }, expect: 200 });
  const sid = open.json.sid;
  await call('GET', `/api/poll/${sid}?cursor=-1`, { expect: 400 });
  await call('GET', `/api/poll/${sid}?cursor=0&wait=0`, { token: BOB, expect: 410 });
  await call('POST', `/api/poll/${sid}`, { raw: '', expect: 400 });
  const many = Array.from({ length: 257 }, () => '{"type":"nothing"}').join('\n');
  await call('POST', `/api/poll/${sid}`, { raw: many, headers: { 'Content-Type': 'application/x-ndjson' }, expect: 413 });
  await call('POST', `/api/poll/${sid}`, { body: { ticketBody: 'My printer prints blank pages [[fake tokens=8]]' }, expect: 202 });
  const got = await pollAll(sid);
  assert.ok(got.frames.some((f) => f.type === 'done'), JSON.stringify(got.frames));
  await call('DELETE', `/api/poll/${sid}`, { expect: 204 });
  await call('GET', `/api/poll/${sid}?cursor=0&wait=0`, { expect: 410 });
  await call('POST', `/api/poll/${sid}`, { body: { ticketBody: 'x' }, expect: 410 });
  await call('DELETE', `/api/poll/${sid}`, { expect: 410 });

  // the ticket's REST view and its SSE stream (the cached answer)
  const ai = await call('GET', `/api/tickets/${ticket}/ai`, { expect: 200 });
  assert.equal(ai.json.status, 'cached');
  await call('GET', `/api/tickets/${encodeURIComponent('bad id!')}/ai`, { expect: 400 });
  await call('GET', `/api/tickets/NONE-${run}/ai`, { expect: 200 });
  const cached = await call('GET', `/api/tickets/${ticket}/ai/stream`, { expect: 200 });
  assert.deepEqual(cached.events.map((e) => e.json.type), ['cached', 'done']);
  await call('GET', `/api/tickets/${ticket}/ai/stream?after=999999`, { expect: 204 });
  await call('GET', `/api/tickets/${ticket}/ai/stream?after=x`, { expect: 400 });
  await call('GET', `/api/tickets/NONE-${run}/ai/stream`, { expect: 404 });
  await call('POST', `/api/tickets/NONE-${run}/ai/stop`, { expect: 404 });
  await call('POST', `/api/tickets/${encodeURIComponent('bad id!')}/ai/stop`, { expect: 400 });
  await call('POST', `/api/tickets/${ticket}/ai/stop`, { expect: 409 });
  await call('DELETE', `/api/tickets/NONE-${run}/ai?regenerate=1`, { expect: 409 });
  await call('DELETE', `/api/tickets/${ticket}/ai`, { expect: 200 });

  // regenerate: a running generation, streamed with event ids, then stopped
  await call('DELETE', `/api/tickets/${ticket}/ai?regenerate=1`, { expect: 202 });
  const live = await call('GET', `/api/tickets/${ticket}/ai/stream`, { expect: 200 });
  assert.equal(live.events.at(-1).json.type, 'done');
  assert.ok(live.events.every((e) => /^\d+$/.test(e.id)), 'live events carry ids');
});

test('a ticket generation stopped over REST ends its SSE stream with done stopped', async () => {
  const ticket = `OS-${run}`;
  const open = await call('POST', '/api/poll/open', { body: { path: `/api/websocket/chat/${ticket}` }, expect: 200 });
  await call('POST', `/api/poll/${open.json.sid}`, { body: { ticketBody: 'Slow ticket [[fake tokens=200 token_ms=50]]' }, expect: 202 });
  const res = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, { headers: { Authorization: `Bearer ${ALICE}` }, signal: AbortSignal.timeout(30000) });
  const textP = res.text();
  await call('POST', `/api/tickets/${ticket}/ai/stop`, { token: BOB, expect: 403 });
  await call('POST', `/api/tickets/${ticket}/ai/stop`, { expect: 202 });
  const out = check('GET', `/api/tickets/${ticket}/ai/stream`, res, await textP, 200);
  assert.deepEqual(out.events.at(-1).json, { type: 'done', stopped: true });
  await call('DELETE', `/api/poll/${open.json.sid}`, { expect: 204 });
});

test('long-poll bounds: pings over the rate limit are 429 with Retry-After', { skip: !RATE_LIMIT }, async (t) => {
  const brands = (await call('GET', '/brands/active', { token: null, expect: 200 })).json;
  if (!brands.length) return t.skip('no active brand: nothing here carries pings');
  const user = jwt(`pinger-${run}`);
  const open = await call('POST', '/api/poll/open', { token: user, body: { path: `/ws/chat/${brands[0].brand_id}` }, expect: 200 });
  const pings = Array.from({ length: RATE_LIMIT + 1 }, () => '{"type":"ping","data":{}}').join('\n');
  const r = await call('POST', `/api/poll/${open.json.sid}`, { token: user, raw: pings, headers: { 'Content-Type': 'application/x-ndjson' }, expect: 429 });
  assert.equal(r.json.code, 'rate_limited');
  assert.match(r.headers.get('retry-after') || '', /^\d+$/);
  await call('DELETE', `/api/poll/${open.json.sid}`, { token: user, expect: 204 });
});

test('an anonymous visitor (PARLEY_ANONYMOUS=brand) opens a brand session without a JWT', async (t) => {
  const brands = (await call('GET', '/brands/active', { token: null, expect: 200 })).json;
  if (!brands.length) return t.skip('no active brand');
  const open = await call('POST', '/api/poll/open', { token: null, body: { path: `/ws/chat/${brands[0].brand_id}` }, expect: 200 });
  assert.match(open.json.visitor, /^v1\./);
  assert.match(open.headers.get('set-cookie') || '', /parley_visitor=/);
  const headers = { 'X-Parley-Visitor': open.json.visitor };
  const first = await call('GET', `/api/poll/${open.json.sid}?cursor=0&wait=5`, { token: null, headers, expect: 200 });
  assert.equal(first.json.messages[0].type, 'welcome');
  await call('DELETE', `/api/poll/${open.json.sid}`, { token: null, headers, expect: 204 });
  // a ticket is not anonymous here: 401
  await call('GET', `/api/tickets/T-${run}/ai`, { token: null, expect: 401 });
});

test('admin endpoints: role admin only; stop a running generation by its job id', async () => {
  for (const p of ['/api/admin/overview', '/api/admin/generations', '/api/admin/connections']) {
    await call('GET', p, { token: ADMIN, expect: 200 });
    await call('GET', p, { expect: 403 });
    await call('GET', p, { token: null, expect: 401 });
  }
  await call('POST', '/api/admin/generations/x/stop', { token: ADMIN, expect: 400 });
  await call('POST', '/api/admin/generations/999999999/stop', { token: ADMIN, expect: 404 });
  await call('POST', '/api/admin/generations/1/stop', { expect: 403 });
  const s = await newSession();
  const res = await fetch(`${BASE}/api/chat/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ALICE}` },
    body: JSON.stringify({ conversationId: s.session_id, content: 'Admin stops me [[fake tokens=200 token_ms=50]]' }),
    signal: AbortSignal.timeout(30000),
  });
  const textP = res.text();
  const gens = await call('GET', '/api/admin/generations', { token: ADMIN, expect: 200 });
  const mine = gens.json.generations.find((g) => g.channel === `conv:${s.session_id}`);
  assert.ok(mine, JSON.stringify(gens.json));
  await call('POST', `/api/admin/generations/${mine.job_id}/stop`, { token: ADMIN, expect: 202 });
  const out = check('POST', '/api/chat/send', res, await textP, 200);
  assert.equal(out.events.at(-1).json.stopped, true);
  await call('POST', `/api/admin/generations/${mine.job_id}/stop`, { token: ADMIN, expect: 409 });
});

test('the AI SDK UI message stream: a chat, its resume, refusals', async () => {
  const chat = randomUUID();
  const body = (text) => ({ id: chat, trigger: 'submit-message', messageId: null,
    messages: [{ id: randomUUID(), role: 'user', parts: [{ type: 'text', text }] }] });
  const r = await call('POST', '/api/ai-sdk/chat', { body: body('Hello there'), expect: 200 });
  assert.equal(r.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
  assert.ok(r.done, 'the stream ends with data: [DONE]');
  assert.deepEqual(r.events.map((e) => e.json.type).filter((t) => t !== 'text-delta'),
    ['start', 'start-step', 'text-start', 'text-end', 'finish-step', 'finish']);
  await call('GET', `/api/ai-sdk/chat/${chat}/stream`, { expect: 204 });
  await call('POST', '/api/ai-sdk/chat', { body: { id: chat, messages: [] }, expect: 400 });
  await call('POST', '/api/ai-sdk/chat', { token: BOB, body: body('not yours'), expect: 404 });
  await call('POST', '/api/ai-sdk/chat', { token: null, body: body('who'), expect: 401 });
  // a running answer: resumed from its start by a second request, then stopped
  const slow = fetch(`${BASE}/api/ai-sdk/chat`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ALICE}` },
    body: JSON.stringify(body('Long [[fake tokens=200 token_ms=30]]')), signal: AbortSignal.timeout(30000),
  });
  const res = await slow;
  const textP = res.text();
  await call('POST', '/api/ai-sdk/chat', { body: body('meanwhile'), expect: 409 });
  const resumeP = fetch(`${BASE}/api/ai-sdk/chat/${chat}/stream`, { headers: { Authorization: `Bearer ${ALICE}` }, signal: AbortSignal.timeout(30000) });
  await new Promise((ok) => setTimeout(ok, 300));
  await call('POST', `/api/chat/sessions/${chat}/stop`, { expect: 202 });
  const first = check('POST', '/api/ai-sdk/chat', res, await textP, 200);
  assert.equal(first.events.at(-1).json.type, 'finish');
  const resumed = await resumeP;
  const again = check('GET', `/api/ai-sdk/chat/${chat}/stream`, resumed, await resumed.text(), 200);
  assert.equal(again.events[0].json.type, 'start');
});

test('the OpenAI-compatible API: models, completions (JSON and stream), refusals', async () => {
  const models = await call('GET', '/v1/models', { expect: 200 });
  const model = models.json.data[0].id;
  await call('GET', '/v1/models', { token: null, expect: 401 });
  await call('PUT', '/v1/models', { body: {}, expect: 405 });
  const msgs = [{ role: 'user', content: 'Say hello' }];
  const one = await call('POST', '/v1/chat/completions', { body: { model, messages: msgs }, expect: 200 });
  assert.equal(one.json.object, 'chat.completion');
  assert.match(one.headers.get('x-parley-cache') || '', /^(hit|miss|shared|bypass)$/);
  const st = await call('POST', '/v1/chat/completions', {
    body: { model, messages: msgs, stream: true, stream_options: { include_usage: true } }, expect: 200 });
  assert.ok(st.done, 'the stream ends with data: [DONE]');
  assert.ok(st.events.at(-1).json.usage, 'include_usage: the last chunk carries usage');
  await call('POST', '/v1/chat/completions', { body: { model }, expect: 400 });
  await call('POST', '/v1/chat/completions', { body: { model: `no-such-model-${run}`, messages: msgs }, expect: 404 });
  await call('POST', '/v1/chat/completions', { token: 'sk-wrong', body: { model, messages: msgs }, expect: 401 });
});

test('a body over the 1 MiB limit is 413', async () => {
  const big = JSON.stringify({ title: 'x'.repeat(1100 * 1024) });
  const res = await fetch(`${BASE}/api/chat/sessions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ALICE}` }, body: big,
    signal: AbortSignal.timeout(20000),
  });
  check('POST', '/api/chat/sessions', res, await res.text(), 413);
});

// ---- Phoenix LongPoll --------------------------------------------------------

test('Phoenix LongPoll: session, join, frames, refusals', async () => {
  const vsn = 'vsn=2.0.0';
  const hello = await call('GET', `/socket/longpoll?${vsn}`, { expect: 200 });
  assert.equal(hello.json.status, 410);
  const tok = hello.json.token;
  const refused = await call('GET', `/socket/longpoll?${vsn}`, { token: null, expect: 200 });
  assert.equal(refused.json.status, 403);
  const topic = `proxy:${randomUUID()}`;
  const join = JSON.stringify(['1', '1', topic, 'phx_join', {}]);
  const posted = await call('POST', `/socket/longpoll?${vsn}&token=${tok}`, { raw: join, headers: { 'Content-Type': 'application/json' }, expect: 200 });
  assert.equal(posted.json.status, 200);
  const got = await call('GET', `/socket/longpoll?${vsn}&token=${tok}`, { expect: 200 });
  assert.equal(got.json.status, 200);
  assert.ok(got.json.messages.some((m) => JSON.parse(m)[3] === 'phx_reply'));
  for (const m of ['PUT', 'PATCH', 'DELETE']) await call(m, '/socket/longpoll', { token: null, expect: 400 });
  await call('OPTIONS', '/socket/longpoll', { token: null, headers: { Origin: 'http://127.0.0.1', 'Access-Control-Request-Method': 'POST' }, expect: 200 });
});

// ---- coverage --------------------------------------------------------------

test('every operation of the document was exercised, and every reachable error status', () => {
  const missing = api.router.getOperations().map((o) => o.operationId).filter((id) => !seen.has(id));
  assert.deepEqual(missing, [], `operations never exercised: ${missing.join(', ')}`);
  const want = [200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 410, 413, 415, 429];
  const notSeen = want.filter((s) => !statuses.has(s));
  assert.deepEqual(notSeen, [], `statuses never seen: ${notSeen.join(', ')}`);
  console.log(`# ${log.length} responses checked against docs/openapi.json, ${seen.size} operations`);
});
