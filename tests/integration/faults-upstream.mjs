// faults-upstream.mjs — issue 13 item 2, the upstream part of the fault
// matrix, through real web servers (run by t0920-fault-upstream.sh on
// SQLite and t0921-pg-fault-upstream.sh on PostgreSQL).
//
// Every fault × transport case runs at the same time (the cases are
// started when this file loads; each test awaits its own). The upstream is
// tests/integration/faults-upstream-proxy.mjs: a private simulated LLM
// behind a proxy that lets a question's fault fire only for its first
// request(s), so the SAME question asked again reaches a healthy upstream.
//
// Faults (the simulated LLM's per-request directives, docs/fake-llm.md):
//   hang      hang_after=3: 3 tokens, then silence on an open socket;
//             Parley's PARLEY_IDLE_TIMEOUT_MS (small in the scripts) ends it
//   drop      drop_after=3: the socket destroyed after 3 tokens
//   garbage   malformed_after=3: a line that is not JSON after 3 tokens
//   hang0     hang_after=0: no first token; PARLEY_FIRST_TOKEN_TIMEOUT_MS
//             ends the attempt and Parley retries (transparent)
//   drop0     drop_after=0: cut before the first token, retried (transparent)
//   garbage0  malformed_after=0: not retried, nothing answered
//   http500   status=500 on both attempts (PARLEY_UPSTREAM_ATTEMPTS=2)
//   http429   status=429 with Retry-After: 1 once: Parley waits and retries
//             (transparent: the client gets the whole answer)
//   http429long  429 with Retry-After: 3600, beyond PARLEY_TOTAL_TIMEOUT_MS:
//             no retry, the error at once (its own upstream "busy")
//   unreachable  a model only a closed port serves (upstream "dead")
//   errobj    error_after=3: the provider's error object mid-stream
//   oai*      hang, drop, garbage, error object, 500, 429 from an
//             OpenAI-compatible upstream (model gpt-fup, upstream "oai")
//   stopHang0, stopRetryAfter  a stop while Parley waits for a first token
//             or for a Retry-After's end (seed 000, WebSocket and long-poll)
// Transports (TRANSPORTS env, comma list; default all):
//   ws000 seed 000 over WebSocket (the bridge), lp000 seed 000 over Parley
//   long-poll (/api/poll), ws001 seed 001 WebSocket session, ws002 seed 002
//   brand chat (/ws/chat/techpro), sse004 seed 004 POST /api/chat/send,
//   phxws / phxlp seed 003 over Phoenix WebSocket / LongPoll (the official
//   phoenix client), openai /v1/chat/completions with stream: true and
//   temperature 0, openaiNS the same without stream (one JSON body),
//   aisdk the AI SDK UI message stream (POST
//   /api/ai-sdk/chat; its error part has no code: errorText is checked).
// Each case checks: what the client sees (the documented code of
// docs/errors.md, the text before it a prefix of the full answer, or the
// whole answer), that the upstream connection was closed (the fake's
// request log: ended_at), that the same question asked again makes a new
// upstream request (no partial answer cached; a cached full answer for
// 429 on the caching protocols) and gets the fake's full deterministic
// answer, that every stored answer row (the answers cache) and every
// stored assistant message of the case is that full answer, that no
// request to the upstream carried a partial answer in its history (the
// proxy's log), and that the case's jobs all ended: the faulty one failed
// with its error recorded, none running. After every case: no job running
// (none past its lease), the database's consistency (SQLite PRAGMA
// integrity_check and foreign_key_check / PostgreSQL amcheck's
// bt_index_check and verify_heapam, and no orphan rows), and one normal
// answer per transport.
//
// Env: BASE, SECRET, RUN, PROXY_URL (the proxy; /_fake/* reaches the fake),
// SQL (JSON argv prefix running one SQL statement, printing rows
// "a|b"), DB_KIND (sqlite|pg), TRANSPORTS.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LongPoll as PhxLongPoll, Socket } from 'phoenix';
import WebSocket from 'ws';
import { answerText, answerTokens } from '../fake-llm/answer.mjs';
import { connect, jwtHS256, LongPoll, SLOW } from '../node/clients.mjs';

// Every HTTP request of this file (its own, clients.mjs's and the phoenix
// client's, all through the global fetch) on its own connection. On the
// shared 2-core machine under load the client's event loop can stall for
// seconds: its 4 s keep-alive timer then fires late and it reuses a
// connection the server (lighttpd and Node both close one idle for 5 s)
// has just closed, and undici fails the request with "other side closed"
// before it reached anyone. Seen (undici's diagnostics channels) on
// requests to lighttpd and to this test's own proxy at the same instant:
// the harness's race, not Parley's; a fresh connection per request leaves
// what is tested unchanged.
const fetch0 = globalThis.fetch;
globalThis.fetch = (input, init = {}) => {
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  headers.set('connection', 'close');
  return fetch0(input, { ...init, headers });
};

const { BASE, SECRET, PROXY_URL } = process.env;
const RUN = process.env.RUN || `r${process.pid}`;
const WS = BASE.replace(/^http/, 'ws');
const SQL = JSON.parse(process.env.SQL || 'null');
const DB_KIND = process.env.DB_KIND || 'sqlite';
const ALL = ['ws000', 'lp000', 'ws001', 'ws002', 'sse004', 'phxws', 'phxlp', 'openai', 'openaiNS', 'aisdk'];
const TRANSPORTS = (process.env.TRANSPORTS || ALL.join(',')).split(',').filter(Boolean);
const TOKENS = 8;
const WAIT = 30000 * SLOW;          // the bound of every wait for a client
const CACHING = new Set(['ws000', 'lp000', 'phxws', 'phxlp', 'openai', 'openaiNS']);  // protocols with an answer cache
const BRAND = 'techpro';            // a brand of share/sample-catalog.json (seed 002)

// code: the documented code of the client's error (docs/errors.md), null for
// a transparent retry; says: what the error's message must say (the
// protocols without a code, AI SDK's errorText, are checked by it too);
// after: answer tokens the client gets before the error; attempts: upstream
// requests of the first ask; first: what the first of them saw (a
// transparent retry: its status, whether Parley closed it, the least wait
// before the retry)
const FAULTS = {
  hang: { knobs: 'hang_after=3', faults: 1, code: 'upstream_error', after: 3, says: /idle limit/ },
  drop: { knobs: 'drop_after=3', faults: 1, code: 'upstream_error', after: 3, says: /closed the connection/ },
  garbage: { knobs: 'malformed_after=3', faults: 1, code: 'upstream_error', after: 3, says: /not a JSON object/ },
  errobj: { knobs: 'error_after=3', faults: 1, code: 'upstream_error', after: 3, says: /error was encountered/ },
  // before the first token: a hang or a cut is retried (docs/upstreams.md),
  // so the client gets the whole answer from the second request; a
  // malformed stream is not, and nothing was answered
  hang0: { knobs: 'hang_after=0', faults: 1, code: null, attempts: 2,
    first: { status: 200, closed_by_client: true } },
  // (the fake's log calls any response it did not finish closed_by_client,
  // its own drop too: only the status is checked)
  drop0: { knobs: 'drop_after=0', faults: 1, code: null, attempts: 2, first: { status: 200 } },
  garbage0: { knobs: 'malformed_after=0', faults: 1, code: 'upstream_unavailable', after: 0,
    says: /not a JSON object/ },
  http500: { knobs: 'status=500', faults: 2, code: 'upstream_unavailable', after: 0, attempts: 2,
    says: /HTTP 500.*after 2 attempts/ },
  http429: { knobs: 'status=429 retry_after=1', faults: 1, code: null, attempts: 2,
    first: { status: 429, wait: 900 } },
  // a Retry-After beyond PARLEY_TOTAL_TIMEOUT_MS: no retry, the 429 is the
  // error at once. Its own upstream "busy" (same fake, PARLEY_UPSTREAMS in
  // the scripts), as Parley remembers an upstream's Retry-After and would
  // hold the other cases' retries on "main"; only where a client names the model
  http429long: { knobs: 'status=429 retry_after=3600', faults: 1, model: 'busy', code: 'upstream_unavailable',
    after: 0, says: /HTTP 429/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  // the same faults from an OpenAI-compatible upstream ("oai": the fake's
  // /v1/chat/completions SSE, PARLEY_UPSTREAMS in the scripts); only where
  // a client names the model
  oaiHang: { knobs: 'hang_after=3', faults: 1, model: 'gpt-fup', code: 'upstream_error', after: 3,
    says: /idle limit/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  oaiDrop: { knobs: 'drop_after=3', faults: 1, model: 'gpt-fup', code: 'upstream_error', after: 3,
    says: /closed the connection/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  oaiGarbage: { knobs: 'malformed_after=3', faults: 1, model: 'gpt-fup', code: 'upstream_error', after: 3,
    says: /event whose data is not a JSON object/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  oaiErrobj: { knobs: 'error_after=3', faults: 1, model: 'gpt-fup', code: 'upstream_error', after: 3,
    says: /server had an error/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  oai500: { knobs: 'status=500', faults: 2, model: 'gpt-fup', code: 'upstream_unavailable', after: 0, attempts: 2,
    says: /HTTP 500.*after 2 attempts/, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  oai429: { knobs: 'status=429 retry_after=1', faults: 1, model: 'gpt-fup', code: null, attempts: 2,
    first: { status: 429, wait: 900 }, only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
  // a stop (docs/stop.md) while Parley waits for the upstream: its first
  // token (a hang) or a Retry-After's end; the stop ends the answer at
  // once (done marked stopped), no retry goes out after it, nothing is
  // cached; seed 000 over WebSocket and long-poll
  stopHang0: { stop: true, knobs: 'hang_after=0', code: null, when: 'open', quiet: 5500,
    only: new Set(['ws000', 'lp000']) },
  stopRetryAfter: { stop: true, knobs: 'status=429 retry_after=4', code: null, when: '429', quiet: 4500,
    only: new Set(['ws000', 'lp000']) },
  // a model only the upstream "dead" serves: a closed port (PARLEY_UPSTREAMS
  // in the scripts); only the protocols where a client names the model
  unreachable: { dead: true, model: 'deadend', code: 'upstream_unavailable', after: 0, says: /cannot connect/,
    only: new Set(['phxws', 'phxlp', 'openai', 'openaiNS']) },
};

// One SQL statement through the database's own command-line client: its
// output trimmed; or (rows) an array of its rows, for a query whose one
// column ends with US (char(31), the unit separator: an answer may hold "\n").
const US = DB_KIND === 'pg' ? 'chr(31)' : 'char(31)';
// Asynchronous: a blocked event loop (a synchronous psql per check, dozens
// of cases at once) starves the clients' sockets; undici then reuses a
// kept-alive connection the web server has closed meanwhile ("other side
// closed") — the harness's failure, not Parley's.
const execFileP = promisify(execFile);
async function sql(q, rows = false) {
  const { stdout: out } = await execFileP(SQL[0], [...SQL.slice(1), q], { encoding: 'utf8', timeout: 20000 });
  if (!rows) return out.trim();
  const parts = out.split('\x1f\n');
  assert.equal(parts.pop().trim(), '', `rows not ended by the separator: ${out.slice(-200)}`);
  return parts;
}
const STORES = new Set(['ws001', 'ws002', 'sse004', 'phxws', 'phxlp', 'aisdk']);  // answers kept as messages
const FULLS = new Set();            // every whole answer a case expects (the answers table holds only these)
const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;
const tok = (who) => jwtHS256(SECRET, `${who}-${RUN}`);
// p, or an error after ms; the timer is cleared (a pending one would keep
// the process, and so the script, alive for ms after the last test)
function withTimeout(p, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no end within ${ms} ms (a hang)`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// ---- the upstream's witnesses -------------------------------------------

async function fakeRequests(tag) {
  const r = await fetch(`${PROXY_URL}/_fake/requests`);
  return (await r.json()).requests.filter((q) => (q.prompt ?? '').includes(tag));
}
async function proxyLog(tag) {
  const r = await fetch(`${PROXY_URL}/_proxy/log`);
  return (await r.json()).filter((e) => (e.key ?? '').includes(tag));
}
// The fake's requests for tag once there are at least n and all ended.
async function fakeEnded(tag, n) {
  const end = Date.now() + WAIT;
  for (;;) {
    const qs = await fakeRequests(tag);
    if (qs.length >= n && qs.every((q) => q.ended_at !== null)) return qs;
    if (Date.now() > end) throw new Error(`upstream requests for ${tag} did not end: ${JSON.stringify(qs)}`);
    await sleep(25);
  }
}

// ---- one question over each transport:
// { end: 'done'|'error', code, message (the error's text), text, cached, raw }

const isEnd000 = (ms) => ms.some((m) => m.type === 'done' || m.type === 'error');
function result000(msgs) {
  const err = msgs.find((m) => m.type === 'error');
  const cached = msgs.find((m) => m.type === 'cached');
  const text = cached ? cached.response : msgs.filter((m) => m.type === 'stream').map((m) => m.content).join('');
  return { end: err ? 'error' : 'done', code: err?.code ?? null, message: err?.message, text,
    cached: !!cached, raw: msgs };
}

const TR = {
  async ws000(c, q) {
    const w = await connect(`${WS}/api/websocket/chat/${c.id}?token=${c.token}`);
    try {
      w.ws.send(JSON.stringify({ ticketBody: q }));
      return result000(await w.until(isEnd000, WAIT));
    } finally { w.ws.close(); }
  },
  async lp000(c, q) {
    const p = new LongPoll(BASE, `/api/websocket/chat/${c.id}`, { token: c.token });
    await p.open();
    await p.send({ ticketBody: q });
    const r = result000(await p.until(isEnd000, WAIT));
    await fetch(`${BASE}/api/poll/${p.sid}`, { method: 'DELETE', headers: p.headers });
    return r;
  },
  async ws001(c, q) {
    const w = await connect(`${WS}/ws/${c.id}?token=${c.token}`);
    try {
      await w.until((ms) => ms.some((m) => m.type === 'connected'), WAIT);
      const from = w.msgs.length;
      w.ws.send(JSON.stringify({ type: 'message', content: q, metadata: {} }));
      const mine = () => w.msgs.slice(from);
      await w.until(() => mine().some((m) => m.type === 'stream_end' || m.type === 'error'), WAIT);
      const ms = mine();
      const err = ms.find((m) => m.type === 'error');
      if (err) assert.equal(typeof err.message_id, 'string', `the error names its answer: ${JSON.stringify(err)}`);
      return { end: err ? 'error' : 'done', code: err?.code ?? null, message: err?.message, raw: ms,
        cached: false, text: ms.filter((m) => m.type === 'stream_chunk').map((m) => m.content).join('') };
    } finally { w.ws.close(); }
  },
  // seed 002: a chat in the brand's conversation of this case (the id the
  // chunks tell; a new one when the first answer failed before any)
  async ws002(c, q) {
    const w = await connect(`${WS}/ws/chat/${BRAND}?token=${c.token}`);
    try {
      await w.until((ms) => ms.some((m) => m.type === 'welcome'), WAIT);
      const from = w.msgs.length;
      w.ws.send(JSON.stringify({ type: 'chat', data: { message: q, conversation_id: c.conv ?? null } }));
      const mine = () => w.msgs.slice(from);
      await w.until(() => mine().some((m) => m.type === 'complete' || m.type === 'error'), WAIT);
      const ms = mine();
      const err = ms.find((m) => m.type === 'error');
      const conv = ms.find((m) => typeof m.data?.conversation_id === 'string');
      if (conv) c.conv = conv.data.conversation_id;
      return { end: err ? 'error' : 'done', code: err?.data?.code ?? null, message: err?.data?.message,
        raw: ms, cached: false,
        text: ms.filter((m) => m.type === 'chunk').map((m) => m.data.content).join('') };
    } finally { w.ws.close(); }
  },
  async sse004(c, q) {
    const res = await fetch(`${BASE}/api/chat/send`, {
      method: 'POST', signal: AbortSignal.timeout(WAIT),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ conversationId: c.conv, content: q }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    const ev = body.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));
    const last = ev.at(-1);
    assert.equal(last?.done, true, `the stream ends with a done frame: ${body.slice(-500)}`);
    return { end: last.error !== undefined ? 'error' : 'done', code: last.code ?? null, message: last.error,
      raw: ev, cached: false,
      text: ev.filter((e) => typeof e.content === 'string').map((e) => e.content).join('') };
  },
  phxws(c, q) { return phxAsk(c, q, WebSocket); },
  phxlp(c, q) { return phxAsk(c, q, PhxLongPoll); },
  async openai(c, q) {
    const res = await fetch(`${BASE}/v1/chat/completions`, {
      method: 'POST', signal: AbortSignal.timeout(WAIT),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ model: c.model ?? 'llama3.2', stream: true, temperature: 0,
        messages: [{ role: 'user', content: q }] }),
    });
    const body = await res.text();
    const cached = res.headers.get('x-parley-cache') === 'hit';
    if (res.status !== 200) {
      const j = JSON.parse(body);
      return { end: 'error', code: j.error?.code ?? null, message: j.error?.message, status: res.status,
        text: '', cached, raw: body };
    }
    const data = body.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    const chunks = data.filter((d) => d !== '[DONE]').map((d) => JSON.parse(d));
    const err = chunks.find((x) => x.error);
    const text = chunks.map((x) => x.choices?.[0]?.delta?.content ?? '').join('');
    if (err) {
      assert.notEqual(data.at(-1), '[DONE]', 'an error chunk ends the stream without [DONE]');
      return { end: 'error', code: err.error.code, message: err.error.message, text, cached, raw: body };
    }
    assert.equal(data.at(-1), '[DONE]', body.slice(-300));
    return { end: 'done', code: null, text, cached, raw: body };
  },
  // /v1/chat/completions without stream: one JSON body, the answer or (502)
  // the error object; a failed answer's partial text never reaches the client
  async openaiNS(c, q) {
    const res = await fetch(`${BASE}/v1/chat/completions`, {
      method: 'POST', signal: AbortSignal.timeout(WAIT),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ model: c.model ?? 'llama3.2', temperature: 0,
        messages: [{ role: 'user', content: q }] }),
    });
    const body = await res.text();
    const j = JSON.parse(body);
    const cached = res.headers.get('x-parley-cache') === 'hit';
    if (res.status !== 200) {
      return { end: 'error', code: j.error?.code ?? null, message: j.error?.message, status: res.status,
        text: '', cached, raw: body };
    }
    assert.equal(j.object, 'chat.completion', body.slice(0, 300));
    return { end: 'done', code: null, text: j.choices[0].message.content, cached, raw: body };
  },
  // the AI SDK UI message stream: its error part is {type: error,
  // errorText} (no code in that protocol), then [DONE] without a finish
  async aisdk(c, q) {
    const res = await fetch(`${BASE}/api/ai-sdk/chat`, {
      method: 'POST', signal: AbortSignal.timeout(WAIT),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ id: c.id, trigger: 'submit-message',
        messages: [{ id: randomUUID(), role: 'user', parts: [{ type: 'text', text: q }] }] }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    const data = body.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    assert.equal(data.at(-1), '[DONE]', `the stream ends with [DONE]: ${body.slice(-300)}`);
    const parts = data.slice(0, -1).map((d) => JSON.parse(d));
    const err = parts.find((x) => x.type === 'error');
    const text = parts.filter((x) => x.type === 'text-delta').map((x) => x.delta).join('');
    if (err) {
      assert.ok(!parts.some((x) => x.type === 'finish'), `no finish part after an error: ${body.slice(-500)}`);
      return { end: 'error', code: null, message: err.errorText, text, cached: false, raw: parts };
    }
    assert.equal(parts.at(-1)?.type, 'finish', body.slice(-300));
    return { end: 'done', code: null, text, cached: false, raw: parts };
  },
};

// Seed 003 over either Phoenix transport: stream_query on the case's topic.
async function phxAsk(c, q, transport) {
  const socket = new Socket(`${WS}/socket`, {
    transport, params: { user_id: c.who, auth_token: c.token }, timeout: 15000 * SLOW,
    reconnectAfterMs: () => 60000, rejoinAfterMs: () => 60000,
  });
  const transportErrors = [];
  socket.onError((e, t, code) => transportErrors.push(String(e?.message ?? e?.type ?? e) + ` ${code ?? ''}`));
  socket.connect();
  try {
    const ch = socket.channel(`proxy:${c.id}`, {});
    await new Promise((resolve, reject) => ch.join().receive('ok', resolve)
      .receive('error', (e) => reject(new Error(`join: ${JSON.stringify(e)}`)))
      .receive('timeout', () => reject(new Error('join timeout'))));
    const out = await new Promise((resolve, reject) => {
      let text = '', tokens = 0;
      const timer = setTimeout(() => reject(new Error('phoenix stream: no end')), WAIT);
      const fin = (v) => { clearTimeout(timer); resolve(v); };
      // A join after the topic's last answer failed replays that answer to
      // its stream_error (docs/protocol-phoenix.md) — on the second ask
      // after a fault, the first try's, same question: the stream is this
      // ask's once its stream_query was taken (its phx_reply ok comes
      // before its stream_start; the replay stops there).
      let mine = false;
      ch.on('stream_start', () => { if (mine) { text = ''; tokens = 0; } });
      ch.on('stream_token', (p) => { if (mine) { text += p.token; tokens += 1; } });
      ch.on('stream_complete', () => { if (mine) fin({ end: 'done', code: null, text, tokens }); });
      ch.on('stream_error', (p) => { if (mine) fin({ end: 'error', code: p.code, message: p.error, text, tokens, raw: p }); });
      ch.on('phx_error', (p) => fin({ end: 'error', code: 'phx_error', text, tokens, raw: { p, transportErrors } }));
      ch.push('stream_query', c.model ? { query: q, model: c.model } : { query: q })
        .receive('ok', () => { mine = true; })
        .receive('error', (p) => fin({ end: 'error', code: p.code, message: p.reason ?? p.error, text, tokens, raw: p }));
    });
    // a stream_query tells no cache hit (one stream_token with the whole
    // answer then; coalescing under load may merge a live answer's tokens
    // too): the caller counts the upstream requests instead
    out.cached = undefined;
    return out;
  } finally {
    socket.disconnect();
  }
}

// What each case needs before its first question (a conversation for seed 004).
async function prepare(tr, c) {
  if (tr !== 'sse004') return;
  const r = await fetch(`${BASE}/api/chat/sessions`, { method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
    body: JSON.stringify({ kind: 'sse' }) });
  const j = await r.json();
  assert.ok(r.status === 200 || r.status === 201, JSON.stringify(j));
  c.conv = j.id;
}

// At most LIMIT cases at once hold a parley.fcgi thread (an SSE stream:
// seed 004, OpenAI, AI SDK); the rest wait their turn (lighttpd's --threads 16).
const LIMIT = 8;
let holders = 0;
const queue = [];
async function holdThread(fn) {
  while (holders >= LIMIT) await new Promise((r) => queue.push(r));
  holders += 1;
  try { return await fn(); } finally { holders -= 1; queue.shift()?.(); }
}
const HOLDS = new Set(['sse004', 'openai', 'openaiNS', 'aisdk']);
const T0 = Date.now();
const ask = (tr, c, q) => withTimeout(
  HOLDS.has(tr) ? holdThread(() => TR[tr](c, q)) : TR[tr](c, q),
  WAIT + 5000, `${tr} question`).catch((e) => {
  // fetch's "fetch failed" hides why: the cause (a reset, a closed socket)
  if (e.cause) e.message = `${e.message}: ${e.cause.code ?? ''} ${e.cause.message ?? e.cause}`;
  e.message = `${tr} "${q.slice(0, 40)}": ${e.message}`;
  throw e;
});

// ---- one case --------------------------------------------------------------

async function runCase(fault, tr) {
  const f = FAULTS[fault];
  const tag = `f${randomUUID().slice(0, 8)}-${fault}-${tr}`;
  const c = { who: `fup-${fault}-${tr}`, id: tag, token: tok(`fup-${fault}-${tr}`), model: f.model };
  await prepare(tr, c);
  if (f.dead) return unreachable(f, tr, c, tag);
  if (f.stop) return stopCase(f, tr, c, tag);
  const q = `Why does ${tag} fail? [[fup faults=${f.faults}]] [[fake tokens=${TOKENS} token_ms=20 ${f.knobs}]]`;
  const clean = q.replace(/\s*\[\[fup[^\]]*\]\]/g, '');
  const full = answerText(clean, TOKENS);
  const log = [];

  // 1. the faulty answer
  const r1 = await ask(tr, c, q);
  log.push({ first: { end: r1.end, code: r1.code, text: r1.text, at: Date.now() - T0 } });
  const n1 = f.attempts ?? 1;
  const reqs1 = await fakeEnded(tag, n1);     // the upstream connection(s) closed
  assert.equal(reqs1.length, n1, `upstream requests of the first question: ${JSON.stringify(reqs1)}`);
  if (f.code === null) {
    // a transparent retry (after the wait a Retry-After asked for)
    assert.equal(r1.end, 'done', `a transparent resume, got ${JSON.stringify(r1).slice(0, 800)}`);
    assert.equal(r1.text, full, 'the whole answer');
    const [a, b] = reqs1;
    if (f.first.status !== undefined) assert.equal(a.status, f.first.status, 'the failed attempt\'s status');
    if (f.first.closed_by_client !== undefined) {
      assert.equal(a.closed_by_client, f.first.closed_by_client, `Parley closed the failed attempt: ${JSON.stringify(a)}`);
    }
    assert.equal(b.status, 200);
    if (f.first.wait) {
      assert.ok(b.started_at - a.ended_at >= f.first.wait,
        `the retry waited for Retry-After (${Math.round(b.started_at - a.ended_at)} ms)`);
    }
  } else {
    assert.equal(r1.end, 'error', `an error, got ${JSON.stringify(r1).slice(0, 800)}`);
    // AI SDK's error part has no code; every other protocol has the documented one
    assert.equal(r1.code, tr === 'aisdk' ? null : f.code,
      `the documented code: ${JSON.stringify(r1.raw ?? r1).slice(0, 800)}`);
    assert.match(r1.message ?? '', f.says, `the error says what failed: ${JSON.stringify(r1.raw ?? r1).slice(0, 800)}`);
    if ((tr === 'openai' && f.after === 0) || tr === 'openaiNS') {
      assert.equal(r1.status, 502, 'OpenAI: 502 before any text (without stream: always)');
    }
    // what streamed before the failure is the answer's start, no garbage
    // (without stream nothing of a failed answer is sent)
    const first = answerTokens(clean, TOKENS).slice(0, tr === 'openaiNS' ? 0 : f.after).join('');
    assert.equal(r1.text, first, `the text before the error is the answer's first ${f.after} tokens`);
  }

  // 2. the same question again: a new upstream request (nothing partial
  // cached) and the whole answer; after a complete answer (429) the caching
  // protocols answer from the cache without asking the upstream
  const r2 = await ask(tr, c, q);
  let r3 = null;
  log.push({ second: { end: r2.end, text: r2.text, cached: r2.cached, at: Date.now() - T0 } });
  assert.equal(r2.end, 'done', `the second ask: ${JSON.stringify(r2).slice(0, 800)}`);
  assert.equal(r2.text, full, 'the second ask gets the whole deterministic answer');
  const fromCache = f.code === null && CACHING.has(tr);
  const reqs2 = await fakeEnded(tag, n1 + (fromCache ? 0 : 1));
  assert.equal(reqs2.length, n1 + (fromCache ? 0 : 1),
    `upstream requests after the second ask: ${JSON.stringify(reqs2.map((x) => [x.status, x.closed_by_client]))}`);
  if (!fromCache) assert.equal(reqs2.at(-1).status, 200);
  if (CACHING.has(tr) && r2.cached !== undefined) assert.equal(r2.cached, fromCache, `served from the cache: ${fromCache}`);
  r2.cached = fromCache;              // as the upstream's log shows
  const plog = await proxyLog(tag);
  assert.equal(plog.length, reqs2.length, 'the proxy and the fake saw the same requests');

  // 3. a third ask on the caching protocols: now from the cache, the full answer
  if (CACHING.has(tr) && !fromCache) {
    r3 = await ask(tr, c, q);
    assert.equal(r3.end, 'done', `the third ask: ${JSON.stringify(r3).slice(0, 800)}`);
    assert.equal(r3.text, full);
    if (r3.cached !== undefined) assert.equal(r3.cached, true, 'the complete answer was cached');
    assert.equal((await fakeRequests(tag)).length, reqs2.length, 'no upstream request for a cache hit');
    r3.cached = true;
    log.push({ third: { at: Date.now() - T0 } });
  }

  // 4. every stored answer of this case (the answers table) is the whole answer
  FULLS.add(full);
  const mine = `(coalesce(ticket_id, '') LIKE ${lit(`%${tag}%`)}
    OR coalesce(query_norm, '') LIKE ${lit(`%${tag.toLowerCase()}%`)})`;
  const stored = Number(await sql(`SELECT count(*) FROM answers WHERE ${mine}`));
  const partial = await sql(`SELECT count(*) FROM answers WHERE ${mine} AND response <> ${lit(full)}`);
  assert.equal(partial, '0', 'a stored answer that is not the whole answer');
  if (tr === 'ws000' || tr === 'lp000' || tr === 'phxws' || tr === 'phxlp') {
    assert.equal(stored, 1, 'the whole answer is stored once');
  }

  // 5. no partial answer in the history: every upstream request of the case
  // carried only whole answers as assistant turns, and every stored
  // assistant message of the case's conversations is the whole answer, one
  // per answer the client got in full
  const asks = [r1, r2, ...(r3 ? [r3] : [])];
  for (const e of plog) {
    for (const a of e.assistant ?? []) {
      assert.equal(a, full.slice(0, 300), `request ${e.n} to the upstream carried a partial answer in its history`);
    }
  }
  const msgs = await storedAnswers(tag);
  for (const m of msgs) assert.equal(m, full, 'a stored assistant message that is not the whole answer');
  if (STORES.has(tr)) {
    assert.equal(msgs.length, asks.filter((r) => r.end === 'done').length,
      'one stored assistant message per whole answer, none for the failed one');
  }

  // 6. the case's jobs: one per answer not served from the cache, the
  // failed one with its error recorded, every one finished
  const jobs = await caseJobs(tr, tag);
  if (jobs !== null) {
    const want = asks.filter((r) => !r.cached).map((r) => (r.end === 'error' ? 'failed' : 'done'));
    assert.deepEqual(jobs.map((j) => j.state), want, `the case's jobs: ${JSON.stringify(jobs)}`);
    for (const j of jobs) {
      assert.ok(j.finished, `job ${j.id} has no finished_at`);
      if (j.state === 'failed') assert.match(j.error, f.says, `the failed job's recorded error`);
      else assert.equal(j.error, '', `a done job with an error: ${j.error}`);
    }
  }
  return log;
}

// The assistant messages stored in the conversations where the case's
// question was asked (its tag in a user message).
async function storedAnswers(tag) {
  const out = await sql(`SELECT m.content || ${US} FROM messages m WHERE m.role = 'assistant' AND m.conversation_id IN
    (SELECT u.conversation_id FROM messages u WHERE u.role = 'user' AND u.content LIKE ${lit(`%${tag}%`)})
    ORDER BY m.created_at`, true);
  return out;
}

// The jobs of the case's channels in order ({id, state, error, finished}):
// ticket:<tag> for seed 000, conv:<id> for the conversations holding its
// question; null for OpenAI (its channel is a hash of the request).
async function caseJobs(tr, tag) {
  if (tr === 'openai' || tr === 'openaiNS') return null;
  const chans = tr === 'ws000' || tr === 'lp000'
    ? lit(`ticket:${tag}`)
    : `SELECT 'conv:' || u.conversation_id FROM messages u WHERE u.role = 'user' AND u.content LIKE ${lit(`%${tag}%`)}`;
  const rows = await sql(`SELECT id || '|' || state || '|' || (CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END)
    || '|' || coalesce(error, '') || ${US} FROM jobs WHERE channel IN (${chans}) ORDER BY id`, true);
  return rows.map((r) => {
    const [id, state, finished, ...err] = r.split('|');
    return { id, state, finished: finished === '1', error: err.join('|') };
  });
}

// The fake's request of tag once it is open ('open') or has ended with a
// 429 ('429').
async function upstreamIs(tag, when) {
  const end = Date.now() + WAIT;
  for (;;) {
    const qs = await fakeRequests(tag);
    const hit = qs.find((x) => (when === 'open' ? x.ended_at === null : x.ended_at !== null && x.status === 429));
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`upstream request of ${tag} never ${when}: ${JSON.stringify(qs)}`);
    await sleep(25);
  }
}

// A stop while Parley waits for the upstream (f.when), then the same
// question again.
async function stopCase(f, tr, c, tag) {
  const q = `Stop ${tag} now [[fake tokens=${TOKENS} token_ms=20 ${f.knobs}]]`;
  const full = answerText(q, TOKENS);
  let r1, first;
  if (tr === 'ws000') {
    const w = await connect(`${WS}/api/websocket/chat/${c.id}?token=${c.token}`);
    try {
      w.ws.send(JSON.stringify({ ticketBody: q }));
      first = await upstreamIs(tag, f.when);
      w.ws.send(JSON.stringify({ type: 'stop' }));
      r1 = result000(await w.until(isEnd000, WAIT));
    } finally { w.ws.close(); }
  } else {
    const p = new LongPoll(BASE, `/api/websocket/chat/${c.id}`, { token: c.token });
    await p.open();
    await p.send({ ticketBody: q });
    first = await upstreamIs(tag, f.when);
    await p.send({ type: 'stop' });
    r1 = result000(await p.until(isEnd000, WAIT));
    await fetch(`${BASE}/api/poll/${p.sid}`, { method: 'DELETE', headers: p.headers });
  }
  const log = [{ first: { end: r1.end, at: Date.now() - T0 } }];
  assert.equal(r1.end, 'done', `the stopped answer: ${JSON.stringify(r1.raw).slice(0, 800)}`);
  assert.equal(r1.raw.find((m) => m.type === 'done').stopped, true, 'the end frame is marked stopped');
  assert.equal(r1.text, '', 'nothing was answered before the first token');
  // the upstream request closed (by Parley for a hang), and no retry once
  // its moment (the first-token timeout, the Retry-After's end) has passed
  const [a] = await fakeEnded(tag, 1);
  if (f.when === 'open') assert.equal(a.closed_by_client, true, 'Parley closed the hung request');
  const from = f.when === 'open' ? first.started_at : a.ended_at;
  await sleep(Math.max(0, from + f.quiet - Date.now()));
  assert.equal((await fakeRequests(tag)).length, 1, 'no upstream request after the stop');
  assert.equal(await sql(`SELECT count(*) FROM answers WHERE ticket_id = ${lit(c.id)}`), '0', 'nothing cached');
  assert.equal(await sql(`SELECT count(*) FROM jobs WHERE channel = ${lit(`ticket:${c.id}`)}
    AND state = 'done' AND stopped_at IS NOT NULL`), '1', 'the job ended as stopped');

  // the same question again: a new upstream request, the whole answer
  const r2 = await ask(tr, c, q);
  log.push({ second: { end: r2.end, at: Date.now() - T0 } });
  assert.equal(r2.end, 'done', `the second ask: ${JSON.stringify(r2).slice(0, 800)}`);
  assert.equal(r2.cached, false);
  assert.equal(r2.text, full);
  const reqs = await fakeEnded(tag, 2);
  assert.deepEqual(reqs.map((x) => x.status), [f.when === 'open' ? 200 : 429, 200]);
  FULLS.add(full);
  assert.deepEqual((await caseJobs(tr, tag)).map((j) => j.state), ['done', 'done']);
  return log;
}

// The upstream of the model is a closed port: the error at once (no hang),
// again on the second ask (nothing cached, a new attempt), nothing stored,
// and no request ever reached the simulated LLM.
async function unreachable(f, tr, c, tag) {
  const q = `Is ${tag} reachable?`;
  for (const ask_ of ['first', 'second']) {
    const r = await ask(tr, c, q);
    assert.equal(r.end, 'error', `${ask_} ask: ${JSON.stringify(r).slice(0, 800)}`);
    assert.equal(r.code, f.code, `${ask_} ask: ${JSON.stringify(r.raw ?? r).slice(0, 800)}`);
    assert.match(r.message ?? '', f.says, `${ask_} ask: the error says what failed`);
    assert.equal(r.text, '');
    if (tr === 'openai' || tr === 'openaiNS') assert.equal(r.status, 502);
  }
  assert.equal((await fakeRequests(tag)).length, 0, 'nothing reached the simulated LLM');
  assert.equal(await sql(`SELECT count(*) FROM answers WHERE coalesce(query_norm, '') LIKE ${lit(`%${tag.toLowerCase()}%`)}`),
    '0', 'nothing stored');
  assert.deepEqual(await storedAnswers(tag), [], 'no assistant message stored');
  const jobs = await caseJobs(tr, tag);
  if (jobs !== null) {
    assert.deepEqual(jobs.map((j) => j.state), ['failed', 'failed'], `the case's jobs: ${JSON.stringify(jobs)}`);
    for (const j of jobs) assert.match(j.error, f.says);
  }
  return [];
}

// ---- the matrix: every case started now, at once ---------------------------

const cases = [];
for (const fault of Object.keys(FAULTS)) {
  for (const tr of TRANSPORTS) {
    if (FAULTS[fault].only && !FAULTS[fault].only.has(tr)) continue;
    const p = runCase(fault, tr);
    p.catch(() => {});        // awaited by its test
    cases.push({ fault, tr, p });
  }
}

for (const k of cases) {
  const code = FAULTS[k.fault].code;
  const name = FAULTS[k.fault].dead
    ? `error ${code} at once, again on a second ask (nothing cached), nothing stored`
    : FAULTS[k.fault].stop
      ? 'a stop while Parley waits ends the answer marked stopped, no retry after it, nothing cached, ' +
        'then the same question answered in full'
      : `${code ? `error ${code}` : 'transparent retry'}, ` +
      'no partial answer cached, the same question answered in full';
  test(`${k.fault} × ${k.tr}: ${name}`, async (t) => {
    const log = await k.p;
    t.diagnostic(`done at ${Date.now() - T0} ms: ${JSON.stringify(log)}`);
  });
}

test('after every fault: no job left running (none past its lease)', async () => {
  await Promise.allSettled(cases.map((k) => k.p));
  const now = Date.now();
  const end = now + WAIT;
  let running;
  for (;;) {
    running = await sql("SELECT id || '|' || channel || '|' || coalesce(lease_expires, 0) FROM jobs WHERE state = 'running'");
    if (!running) break;
    // a job still running must at least hold a live lease
    for (const row of running.split('\n')) {
      const exp = Number(row.split('|').at(-1));
      assert.ok(exp >= Date.now() - 1000, `job running past its lease: ${row}`);
    }
    assert.ok(Date.now() < end, `jobs still running: ${running}`);
    await sleep(100);
  }
  const failed = Number(await sql(`SELECT count(*) FROM jobs WHERE state = 'failed'`));
  // one per failed answer: the first ask of an error case, both of an unreachable one
  const nErr = cases.reduce((n, k) => n + (FAULTS[k.fault].dead ? 2 : FAULTS[k.fault].code !== null ? 1 : 0), 0);
  assert.equal(failed, nErr, 'a failed job per failed answer');
});

test(`the database is consistent (${DB_KIND})`, async () => {
  await Promise.allSettled(cases.map((k) => k.p));
  if (DB_KIND === 'sqlite') {
    assert.equal(await sql('PRAGMA integrity_check'), 'ok');
    assert.equal(await sql('PRAGMA foreign_key_check'), '');
  } else {
    // PostgreSQL: amcheck — every B-tree index of Parley's tables agrees
    // with its table (bt_index_check with heapallindexed), no corrupt heap
    // page (verify_heapam); then no running job without an owner's lease,
    // no event of an unknown job, no message of an unknown conversation
    await sql('CREATE EXTENSION IF NOT EXISTS amcheck');
    const idx = Number(await sql(`SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE a.amname = 'btree' AND n.nspname = 'public'`));
    assert.ok(idx > 5, `Parley's indexes found (${idx})`);
    assert.equal(await sql(`SELECT count(*) FROM (SELECT bt_index_check(c.oid, true) FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE a.amname = 'btree' AND n.nspname = 'public') AS checked`), String(idx));
    assert.equal(await sql(`SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
      LATERAL verify_heapam(c.oid) WHERE c.relkind = 'r' AND n.nspname = 'public'`), '0',
    'verify_heapam: corrupt heap pages');
    assert.equal(await sql("SELECT count(*) FROM jobs WHERE state = 'running' AND lease_expires IS NULL"), '0');
    assert.equal(await sql('SELECT count(*) FROM events e WHERE e.job_id IS NOT NULL AND NOT EXISTS ' +
      '(SELECT 1 FROM jobs j WHERE j.id = e.job_id)'), '0');
    assert.equal(await sql('SELECT count(*) FROM messages m WHERE NOT EXISTS ' +
      '(SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)'), '0');
  }
  // the answer cache as a whole (OpenAI's rows are keyed by a hash, not by
  // the question): only whole answers, one per case on a caching protocol
  const cached = await sql(`SELECT response || ${US} FROM answers`, true);
  for (const a of cached) assert.ok(FULLS.has(a), `a cached answer that no case got whole: ${JSON.stringify(a)}`);
  const nCaching = cases.filter((k) => CACHING.has(k.tr) && !FAULTS[k.fault].dead).length;
  assert.equal(cached.length, nCaching, 'one cached answer per case on a caching protocol');
});

for (const tr of TRANSPORTS) {
  test(`after the faults, ${tr} still serves a normal answer (one upstream request)`, async () => {
    await Promise.allSettled(cases.map((k) => k.p));
    const tag = `a${randomUUID().slice(0, 8)}-after-${tr}`;
    const c = { who: `fup-after-${tr}`, id: tag, token: tok(`fup-after-${tr}`) };
    await prepare(tr, c);
    const q = `After the storm ${tag} [[fake tokens=${TOKENS} token_ms=5]]`;
    const r = await ask(tr, c, q);
    assert.equal(r.end, 'done', JSON.stringify(r).slice(0, 800));
    assert.equal(r.text, answerText(q, TOKENS));
    assert.equal((await fakeEnded(tag, 1)).length, 1);
  });
}
