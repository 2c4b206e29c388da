// faults-db-clients.mjs — one generation on each transport, for the
// database fault matrix (t0930-fault-db.sh, t0931-pg-fault.sh; issue 13).
//
// ask(q, env) runs ONE question q on its transport and resolves
// with its outcome, never rejecting:
//   { transport, end: 'done' | 'error' | 'hang', code, message, http, text,
//     ms, streamed (text pieces seen before the end) }
// end 'hang' means no outcome within env.limitMs (default 60 s): a safety
// net against a client that waits for ever, not a timing assertion.
//
// Transports (open mode: no JWT configured, RATE_LIMIT off):
//   ws000   seed 000 ticket over the bridge's WebSocket (env.ws)
//   lp000   the same ticket protocol over Parley long-poll (/api/poll, env.base)
//   sse004  seed 004: a conversation, then POST /api/chat/send (SSE)
//   phxlp   seed 003 stream_query over Phoenix LongPoll (official client)
//   phxws   the same over the bridge's Phoenix WebSocket
//   openai  POST /v1/chat/completions with stream: true (SSE)
// The error code is the one the protocol carries (docs/errors.md; OpenAI:
// error.code of its body or of its in-stream error chunk).
import { setTimeout as sleep } from 'node:timers/promises';
import { Socket, LongPoll } from 'phoenix';
import WebSocket from 'ws';

export const TRANSPORTS = ['ws000', 'lp000', 'sse004', 'phxlp', 'phxws', 'openai'];

// Every code docs/errors.md lists (test_codes keeps that table and core in step).
export const DOCUMENTED_CODES = new Set(['bad_input', 'too_long', 'too_large', 'unauthorized',
  'forbidden', 'not_found', 'conflict', 'gone', 'queue_full', 'rate_limited', 'budget_exhausted',
  'upstream_unavailable', 'upstream_error', 'interrupted', 'database_readonly',
  'database_unavailable', 'unavailable', 'internal']);

const jsonOr = (t) => { try { return JSON.parse(t); } catch { return null; } };

// Outcome builder shared by the transports.
function outcome(transport) {
  const t0 = Date.now();
  const o = { transport, end: null, code: null, message: null, http: null, text: '', ms: 0, streamed: 0,
    blocked: 0, log: [], t0 };
  let settle;
  const done = new Promise((r) => { settle = r; });
  o.finish = (end, extra = {}) => {
    if (o.end) return;
    Object.assign(o, extra, { end, ms: Date.now() - t0 });
    settle();
  };
  o.done = done;
  return o;
}

// The client waits for the database (a retryable refusal of its transport,
// not an outcome): counted, and q.onBlocked() called (faults-db.mjs ends
// the fault once every client has an outcome or waits so).
function blocked(o, q) {
  o.blocked++;
  if (q.onBlocked) q.onBlocked();
}

// A REST failure as an outcome: Parley's {success:false, message, code},
// or OpenAI's {error:{message, code}}.
function restError(o, status, text) {
  const j = jsonOr(text);
  const e = j && typeof j.error === 'object' && j.error ? j.error : j;
  o.finish('error', { http: status, code: e?.code ?? null, message: e?.message ?? text.slice(0, 200) });
}

async function ws000(o, prompt, env, q) {
  const ws = new WebSocket(`${env.ws}/api/websocket/chat/fdb-${q.id}`);
  ws.on('open', () => ws.send(JSON.stringify({ ticketBody: prompt })));
  ws.on('message', (raw) => {
    const m = jsonOr(raw.toString());
    if (!m) return o.finish('error', { message: `not JSON: ${raw}` });
    if (m.type === 'stream') { o.text += m.content ?? ''; o.streamed++; }
    else if (m.type === 'cached') o.text = m.response ?? '';
    else if (m.type === 'done') o.finish('done');
    else if (m.type === 'error') o.finish('error', { code: m.code, message: m.message });
  });
  ws.on('unexpected-response', (_q, res) => o.finish('error', { http: res.statusCode, message: 'upgrade refused' }));
  ws.on('close', (code) => o.finish('error', { message: `closed (${code}) before an outcome` }));
  ws.on('error', (e) => o.finish('error', { message: `socket error: ${e.message}` }));
  await o.done;
  ws.terminate();
}

async function lp000(o, prompt, env, q) {
  const r = await fetch(`${env.base}/api/poll/open`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ path: `/api/websocket/chat/fdb-${q.id}` }) });
  const t = await r.text();
  if (r.status !== 200) return restError(o, r.status, t);
  const sid = jsonOr(t)?.sid;
  const p = await fetch(`${env.base}/api/poll/${sid}`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ticketBody: prompt }) });
  const pt = await p.text();
  if (p.status !== 202) return restError(o, p.status, pt);
  let cursor = 0;
  while (!o.end) {
    const g = await fetch(`${env.base}/api/poll/${sid}?cursor=${cursor}&wait=5`);
    const gt = await g.text();
    if (g.status === 503 && ['database_readonly', 'database_unavailable'].includes(jsonOr(gt)?.code)) {
      // the session's outbox cannot be written now: "retry later"
      // (docs/errors.md); the message was accepted, its answer goes on
      blocked(o, q);
      await sleep(200);
      continue;
    }
    if (g.status !== 200) return restError(o, g.status, gt);
    const j = jsonOr(gt);
    for (const m of j.messages) {
      if (m.type === 'stream') { o.text += m.content ?? ''; o.streamed++; }
      else if (m.type === 'cached') o.text = m.response ?? '';
      else if (m.type === 'done') o.finish('done');
      else if (m.type === 'error') o.finish('error', { code: m.code, message: m.message });
    }
    cursor = j.cursor;
  }
}

// Reads an SSE body: calls onData(text of one event's data lines) per event.
async function readSSE(res, onData, o) {
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      const data = ev.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) onData(data);
      if (o.end) return;
    }
  }
}

async function sse004(o, prompt, env, q) {
  if (!q.conv) {
    const c = await fetch(`${env.base}/api/chat/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'faults-db' }) });
    const ct = await c.text();
    if (c.status !== 200 && c.status !== 201) return restError(o, c.status, ct);
    const cj = jsonOr(ct);
    q.conv = cj?.id ?? cj?.session?.id ?? cj?.data?.id;
  }
  const conv = q.conv;
  const r = await fetch(`${env.base}/api/chat/send`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ conversationId: conv, content: prompt }) });
  if (r.status !== 200) return restError(o, r.status, await r.text());
  await readSSE(r, (d) => {
    const m = jsonOr(d);
    if (!m) return;
    if (m.error) o.finish('error', { code: m.code, message: m.error });
    else if (typeof m.content === 'string') { o.text += m.content; o.streamed++; }
    if (m.done && !m.error) o.finish('done');
  }, o);
  o.finish('error', { message: 'the SSE stream ended without done or error' });
}

async function phoenix(o, prompt, env, q, transport) {
  const url = transport === 'ws' ? `${env.ws}/socket` : `${env.base.replace(/^http/, 'ws')}/socket`;
  const socket = new Socket(url, { transport: transport === 'ws' ? WebSocket : LongPoll,
    params: { user_id: 'fdb' }, timeout: 20000, reconnectAfterMs: () => 500, rejoinAfterMs: () => 500,
    // the client's log: the last lines are shown when it ends without an outcome
    logger: (k, m, d) => {
      const line = `${Date.now() - o.t0} ms ${k} ${m} ${JSON.stringify(d ?? '').slice(0, 160)}`;
      o.log.push(line);
      if (k === 'transport' && m.startsWith('error')) blocked(o, q);
      if (o.log.length > 40) o.log.shift();
      if (env.phxLog) env.phxLog(line);
    } });
  socket.connect();
  const ch = socket.channel(`proxy:fdb-${q.id}`, {});
  let pushed = false;
  // A first join may replay the topic's latest answer when it failed (its
  // stream_start .. stream_error: docs/protocol-phoenix.md) — an earlier
  // ask's, not this one's: the stream is ours once our stream_query was
  // taken (its phx_reply ok comes before its stream_start; the replay
  // stops there), or after a rejoin (then a replay is our answer's).
  let ours = false;
  ch.on('stream_token', (p) => { if (ours) { o.text += p.token ?? ''; o.streamed++; } });
  ch.on('stream_start', () => { if (ours) o.text = ''; });   // (a replay restarts the answer)
  ch.on('stream_complete', () => { if (ours) o.finish('done'); });
  ch.on('stream_error', (p) => { if (ours) o.finish('error', { code: p.code, message: p.error }); });
  ch.on('error', (p) => o.finish('error', { code: p.code, message: p.message ?? p.error }));
  const query = () => ch.push('stream_query', { query: prompt }, 30000)
    .receive('ok', () => { ours = true; })
    .receive('error', (p) => o.finish('error', { code: p.code, message: p.message ?? p.error }));
  // A rejoin (phoenix.js rejoins after the transport failed: LongPoll's
  // {"status":500} while the database cannot be written) follows a running
  // answer from its stream_start; one that ended meanwhile is in get_history
  // (docs/protocol-phoenix.md). So, as a client that missed the end: the
  // answer from the history when it is there, else the question again
  // (the cache, a new generation, or a clear refusal) unless the rejoin
  // follows it.
  let rejoins = 0, startedAt = 0;
  ch.on('stream_start', () => { startedAt = rejoins; });
  ch.on('history', (p) => {
    const m = p?.messages ?? [];
    const last = m[m.length - 1], before = m[m.length - 2];
    if (last?.role === 'assistant' && before?.role === 'user' && before.content === prompt) {
      o.text = last.content;
      o.finish('done');
    } else if (startedAt !== rejoins) {
      query();
    }
  });
  const push = () => {
    if (!pushed) {
      pushed = true;
      return query();
    }
    rejoins++;
    ours = true;
    if (!o.end) ch.push('get_history', {}, 30000);
  };
  ch.join(30000).receive('ok', push)
    .receive('error', (p) => o.finish('error', { code: p.code, message: `join: ${p.reason}` }))
    .receive('timeout', () => o.finish('error', { message: 'join timeout' }));
  await o.done;
  socket.disconnect();
}

async function openai(o, prompt, env) {
  const r = await fetch(`${env.base}/v1/chat/completions`, { method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer open-mode' },
    body: JSON.stringify({ model: env.model, stream: true, messages: [{ role: 'user', content: prompt }] }) });
  if (r.status !== 200) return restError(o, r.status, await r.text());
  await readSSE(r, (d) => {
    if (d === '[DONE]') return o.finish('done');
    const m = jsonOr(d);
    if (!m) return;
    if (m.error) return o.finish('error', { code: m.error.code, message: m.error.message });
    const c = m.choices?.[0]?.delta?.content;
    if (typeof c === 'string' && c) { o.text += c; o.streamed++; }
  }, o);
  o.finish('error', { message: 'the SSE stream ended without [DONE] or an error' });
}

const RUN = { ws000, lp000, sse004, openai,
  phxlp: (o, p, e, q) => phoenix(o, p, e, q, 'lp'), phxws: (o, p, e, q) => phoenix(o, p, e, q, 'ws') };

// ask(q, env) — see the header; q: { transport, prompt, id } (id names the
// ticket / Phoenix topic, so asking q again reopens the same one; seed 004
// keeps its conversation in q.conv). env: { base, ws, model, limitMs }.
// onStream (optional) is called once, at the outcome's first text piece.
export async function ask(q, env, onStream) {
  const { transport, prompt } = q;
  const o = outcome(transport);
  const timer = setTimeout(() => o.finish('hang', { message: `no outcome within ${(env.limitMs ?? 60000) / 1000} s` }),
    env.limitMs ?? 60000);
  if (onStream) {
    const iv = setInterval(() => { if (o.streamed > 0 || o.end) { clearInterval(iv); onStream(o); } }, 20);
  }
  RUN[transport](o, prompt, env, q).catch((e) => o.finish('error', { message: `client: ${e.message}` }));
  await o.done;
  clearTimeout(timer);
  const { finish, done, ...plain } = o;
  return plain;
}

// The model the OpenAI route accepts (the first of GET /v1/models).
export async function firstModel(base) {
  for (let i = 0; i < 50; i++) {
    try {
      const r = await fetch(`${base}/v1/models`, { headers: { authorization: 'Bearer open-mode' } });
      if (r.status === 200) return (await r.json()).data[0].id;
    } catch { /* not up yet */ }
    await sleep(100);
  }
  return 'llama3.2';
}

// The simulated LLM's requests whose logged prompt contains tag.
export async function fakeRequests(fake, tag) {
  const j = await (await fetch(`${fake}/_fake/requests`)).json();
  return j.requests.filter((q) => (q.prompt ?? '').includes(tag));
}

// GET /api/health: { http, json } (json null when not JSON); bounded.
export async function health(base) {
  try {
    const r = await fetch(`${base}/api/health`, { signal: AbortSignal.timeout(20000) });
    const t = await r.text();
    return { http: r.status, json: jsonOr(t), text: t.slice(0, 300) };
  } catch (e) {
    return { http: 0, json: null, text: `no answer: ${e.message}` };
  }
}

// A short description of an outcome for diagnostics.
export const show = (o) => `${o.transport}: ${o.end}${o.code ? ` code=${o.code}` : ''}${o.http ? ` http=${o.http}` : ''}` +
  `${o.blocked ? ` (waited for the database: ${o.blocked} retryable refusals of its transport)` : ''}` +
  `${o.message ? ` "${String(o.message).slice(0, 120)}"` : ''} text=${o.text.length}ch streamed=${o.streamed} ${o.ms}ms`;
