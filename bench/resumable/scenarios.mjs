// scenarios.mjs — the four resume scenarios of bench/resumable.sh, run with
// the `ai` package's own client side (DefaultChatTransport: what useChat
// sends and how useChat({ resume: true }) reconnects; readUIMessageStream:
// how useChat builds the message) against either side:
//
//   --side peer    bench/resumable/peer.mjs (resumable-stream + Redis):
//                  POST /api/chat, GET /api/chat/:id/stream,
//                  GET /api/chat/:id/messages; the producer is the peer's
//                  Node process (its pid from --pid-file)
//   --side parley  POST /api/ai-sdk/chat, GET /api/ai-sdk/chat/:id/stream,
//                  GET /api/chat/sessions/:id/messages; the producer is the
//                  parley.fcgi process whose lease owns the generation
//                  (GET /api/admin/generations, as tests/integration/aisdk.mjs)
//
//   node bench/resumable/scenarios.mjs --side S --base URL [--token JWT --admin JWT]
//        [--pid-file F] [--tokens 100] [--token-ms 50] [--k 20] [--run TAG]
//        [--only reload,kill,tab,done]
//
// One JSON line per scenario: { scenario, outcome, ok, ... timings in ms }.
// outcome: complete | partial | error | hang | none (nothing to resume).
// "ok" = the client ended with exactly the upstream's answer (every token
// once, in order). Each check is bounded (timeouts below), so a hang is
// reported as "hang" and the script goes on.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { DefaultChatTransport, readUIMessageStream } from 'ai';
import { answerText } from '../../tests/fake-llm/answer.mjs';

const arg = (n, d) => { const i = process.argv.indexOf(`--${n}`); return i > 0 ? process.argv[i + 1] : d; };
const SIDE = arg('side');
const BASE = arg('base');
const TOKEN = arg('token', '');
const ADMIN = arg('admin', '');
const PID_FILE = arg('pid-file', '');
const TOKENS = Number(arg('tokens', '100'));
const TOKEN_MS = Number(arg('token-ms', '50'));
const K = Number(arg('k', '20'));
const RUN = arg('run', `r${process.pid}`);
const ONLY = arg('only', 'reload,kill,tab,done').split(',');
const RETRY_FOR = 20000;                       // a reloaded page retrying a failed resume
const STREAM_MS = TOKENS * TOKEN_MS + 30000;   // a stream not ended by then: hang

const API = SIDE === 'parley' ? `${BASE}/api/ai-sdk/chat` : `${BASE}/api/chat`;
const auth = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
// fetch that remembers the last status, so a failed resume names it
let lastStatus = null;
const fetchRec = async (...a) => { lastStatus = null; const r = await fetch(...a); lastStatus = r.status; return r; };
const transport = () => new DefaultChatTransport({ api: API, headers: auth, fetch: fetchRec });
let nextId = 0;
const userMessage = (text) => ({ id: `u${++nextId}-${RUN}`, role: 'user', parts: [{ type: 'text', text }] });
const now = () => Number(process.hrtime.bigint() / 1000000n);
const deltas = (chunks) => chunks.filter((c) => c.type === 'text-delta').map((c) => c.delta).join('');

function send(tr, chatId, text, signal) {
  return tr.sendMessages({ chatId, messages: [userMessage(text)], trigger: 'submit-message',
    messageId: undefined, abortSignal: signal });
}

// Reads a chunk stream until it ends, errors or `ms` pass.
// -> { chunks, end: 'done' | 'error: ...' | 'hang', t_first, t_end }
async function drain(stream, ms, t0 = now(), onChunk = null) {
  const chunks = [];
  const reader = stream.getReader();
  const until = t0 + ms;
  let t_first = null;
  for (;;) {
    const left = until - now();
    if (left <= 0) { reader.cancel().catch(() => {}); return { chunks, end: 'hang', t_first, t_end: now() - t0 }; }
    let r;
    try {
      r = await Promise.race([reader.read(), sleep(left).then(() => ({ timeout: true }))]);
    } catch (e) {
      return { chunks, end: `error: ${e.message}`, t_first, t_end: now() - t0 };
    }
    if (r.timeout) continue;
    if (r.done) return { chunks, end: 'done', t_first, t_end: now() - t0 };
    if (t_first === null && r.value.type === 'text-delta') t_first = now() - t0;
    chunks.push(r.value);
    if (onChunk) onChunk(r.value, chunks);
  }
}

// The message useChat would show for these chunks (null + error when it fails).
async function messageOf(chunks) {
  let last = null;
  try {
    const s = new ReadableStream({ start(c) { for (const x of chunks) c.enqueue(x); c.close(); } });
    for await (const m of readUIMessageStream({ stream: s, terminateOnError: true })) last = m;
    return { text: last ? last.parts.filter((p) => p.type === 'text').map((p) => p.text).join('') : '', error: null };
  } catch (e) {
    return { text: null, error: e.message };
  }
}

// How a drained stream ended, as the user sees it.
function classify(d, expected) {
  const err = d.chunks.find((c) => c.type === 'error');
  const fin = d.chunks.some((c) => c.type === 'finish');
  const text = deltas(d.chunks);
  if (d.end === 'hang') return 'hang';
  if (err) return 'error';
  if (d.end !== 'done') return 'error';
  if (fin && text === expected) return 'complete';
  return 'partial';
}

// reconnectToStream, repeated on a thrown error (5xx, refused) for up to
// RETRY_FOR ms, as a reloaded page would. -> { stream|null, attempts, errors, t }
async function reconnect(tr, chatId, t0) {
  const errors = [];
  for (let attempt = 1; ; attempt++) {
    try {
      const s = await tr.reconnectToStream({ chatId });
      return { stream: s, attempts: attempt, errors, t: now() - t0 };
    } catch (e) {
      let msg = String(e.message ?? e).replace(/\s+/g, ' ');
      if (/^<(\?xml|!DOCTYPE|html)/i.test(msg)) msg = 'an HTML error page';
      msg = `${lastStatus ? `HTTP ${lastStatus}: ` : ''}${msg.slice(0, 100)}`;
      if (!errors.length || errors.at(-1).msg !== msg) errors.push({ at: now() - t0, msg, n: 1 });
      else errors.at(-1).n++;
      if (now() - t0 > RETRY_FOR) return { stream: undefined, attempts: attempt, errors, t: now() - t0 };
      await sleep(100);
    }
  }
}

// Reads the first k text deltas of a stream (its reader stays open).
async function firstK(stream, k) {
  const reader = stream.getReader();
  const seen = [];
  while (seen.filter((c) => c.type === 'text-delta').length < k) {
    const r = await reader.read();
    if (r.done) break;
    seen.push(r.value);
  }
  return { reader, seen };
}

async function storedAnswer(chatId) {
  if (SIDE === 'parley') {
    const r = await fetch(`${BASE}/api/chat/sessions/${chatId}/messages`, { headers: auth });
    if (!r.ok) return { status: r.status, text: null };
    const j = await r.json();
    const a = j.messages.at(-1)?.role === 'assistant' ? j.messages.at(-1) : null;
    return { status: r.status, text: a ? a.content : null, roles: j.messages.map((m) => m.role).join(',') };
  }
  const r = await fetch(`${BASE}/api/chat/${chatId}/messages`);
  if (!r.ok) return { status: r.status, text: null };
  const j = await r.json();
  const a = j.at(-1)?.role === 'assistant' ? j.at(-1) : null;
  return { status: r.status, text: a ? a.parts.filter((p) => p.type === 'text').map((p) => p.text).join('') : null,
    roles: j.map((m) => m.role).join(',') };
}

async function killProducer(chatId) {
  let pid;
  if (SIDE === 'parley') {
    const r = await fetch(`${BASE}/api/admin/generations`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const j = await r.json();
    const job = j.generations.find((x) => x.channel === `conv:${chatId}`);
    if (!job) throw new Error(`no generation of conv:${chatId} listed`);
    pid = Number(job.lease_owner.split(':')[0]);
  } else {
    pid = Number(readFileSync(PID_FILE, 'utf8'));
  }
  process.kill(pid, 'SIGKILL');
  return pid;
}

const q = (name) => `${name} ${SIDE} ${RUN} [[fake tokens=${TOKENS} token_ms=${TOKEN_MS}]]`;
const out = (o) => console.log(JSON.stringify({ side: SIDE, ...o }));

// 1. reload mid-stream: the response dropped after K tokens, then resumed.
async function reload() {
  const chatId = `reload-${SIDE}-${RUN}`;
  const text = q('reload');
  const expected = answerText(text, TOKENS);
  const ac = new AbortController();
  const first = await send(transport(), chatId, text, ac.signal);
  const { reader, seen } = await firstK(first, K);
  ac.abort();
  await reader.cancel().catch(() => {});
  const t0 = now();
  const rc = await reconnect(transport(), chatId, t0);
  if (!rc.stream) {
    return out({ scenario: 'reload', outcome: rc.stream === null ? 'none' : 'error', ok: false,
      seen_before: deltas(seen).length, resume: rc });
  }
  const d = await drain(rc.stream, STREAM_MS, t0);
  const m = await messageOf(d.chunks);
  const before = deltas(seen);
  const after = deltas(d.chunks);
  out({ scenario: 'reload', outcome: classify(d, expected), ok: m.text === expected,
    replay_from_start: after.startsWith(before) && after.length >= before.length,
    same_message_id: d.chunks[0]?.messageId === seen[0]?.messageId,
    resumed_deltas: d.chunks.filter((c) => c.type === 'text-delta').length,
    first_token_ms: d.t_first, end_ms: d.t_end, end: d.end, message_error: m.error,
    resume_attempts: rc.attempts, resume_errors: rc.errors });
}

// 2. the producing process SIGKILLed after K tokens; the page reloads and resumes.
async function kill() {
  const chatId = `kill-${SIDE}-${RUN}`;
  const text = q('kill');
  const expected = answerText(text, TOKENS);
  const tr = transport();
  const first = await send(tr, chatId, text);
  const { reader, seen } = await firstK(first, K);
  const pid = await killProducer(chatId);
  const t0 = now();
  // what the open tab saw
  const rest = [];
  let firstEnd = 'hang';
  const until = t0 + 10000;
  for (;;) {
    const left = until - now();
    if (left <= 0) break;
    try {
      const r = await Promise.race([reader.read(), sleep(left).then(() => ({ timeout: true }))]);
      if (r.timeout) break;
      if (r.done) { firstEnd = 'closed'; break; }
      rest.push(r.value);
    } catch (e) { firstEnd = `error: ${String(e.message).slice(0, 80)}`; break; }
  }
  const firstEndMs = now() - t0;
  reader.cancel().catch(() => {});
  const rc = await reconnect(transport(), chatId, now());
  let res = { scenario: 'kill', killed_pid: pid, open_tab: { end: firstEnd, after_ms: firstEndMs,
    more_deltas: rest.filter((c) => c.type === 'text-delta').length, error_part: rest.find((c) => c.type === 'error')?.errorText },
    resume_attempts: rc.attempts, resume_errors: rc.errors, resume_answer_ms: rc.t };
  if (!rc.stream) {
    res = { ...res, outcome: rc.stream === null ? 'none' : 'error', ok: false };
  } else {
    const t1 = now();
    const d = await drain(rc.stream, STREAM_MS, t1);
    const m = await messageOf(d.chunks);
    res = { ...res, outcome: classify(d, expected), ok: m.text === expected,
      error_part: d.chunks.find((c) => c.type === 'error')?.errorText, resumed_text_chars: deltas(d.chunks).length,
      expected_chars: expected.length, end: d.end, end_ms: d.t_end + (t1 - t0) };
  }
  // afterwards: the answer in the stored history, a second resume, a new turn
  res.stored_after = await storedAnswer(chatId).then((s) => ({ status: s.status, chars: s.text?.length ?? null, roles: s.roles }));
  try {
    const again = await transport().reconnectToStream({ chatId });
    res.resume_again = again === null ? '204' : 'a stream';
    if (again) again.cancel().catch(() => {});
  } catch (e) { res.resume_again = `error: ${String(e.message).slice(0, 80)}`; }
  try {
    const t2 = q('after-kill').replace(`tokens=${TOKENS} token_ms=${TOKEN_MS}`, 'tokens=3 token_ms=1');
    const d = await drain(await send(transport(), chatId, t2), 15000);
    res.new_turn = (await messageOf(d.chunks)).text === answerText(t2, 3) ? 'works' : `fails (${d.end})`;
  } catch (e) { res.new_turn = `fails: ${String(e.message).slice(0, 80)}`; }
  out(res);
}

// 3. a second tab follows the stream while the first reads it.
async function tab() {
  const chatId = `tab-${SIDE}-${RUN}`;
  const text = q('tab');
  const expected = answerText(text, TOKENS);
  const firstStream = await send(transport(), chatId, text);
  const arrivals = new Map();       // delta index -> [t tab1, t tab2]
  let n1 = 0;
  let n2 = 0;
  let startTab2;
  const tab2Started = new Promise((r) => { startTab2 = r; });
  const d1p = drain(firstStream, STREAM_MS, now(), (c) => {
    if (c.type !== 'text-delta') return;
    arrivals.set(n1, [now(), null]); n1++;
    if (n1 === K) startTab2();
  });
  await Promise.race([tab2Started, d1p]);
  const t0 = now();
  const rc = await reconnect(transport(), chatId, t0);
  let d2 = null;
  if (rc.stream) {
    d2 = await drain(rc.stream, STREAM_MS, t0, (c) => {
      if (c.type !== 'text-delta') return;
      const a = arrivals.get(n2);
      if (a) a[1] = now(); n2++;
    });
  }
  const d1 = await d1p;
  const m1 = await messageOf(d1.chunks);
  const m2 = d2 ? await messageOf(d2.chunks) : { text: null };
  // live lag of tab 2 behind tab 1 on the tokens after it joined
  const lags = [...arrivals.entries()].filter(([i, a]) => i >= K + 2 && a[1] !== null).map(([, a]) => a[1] - a[0]).sort((a, b) => a - b);
  const pct = (p) => lags.length ? lags[Math.min(lags.length - 1, Math.floor(p * lags.length))] : null;
  out({ scenario: 'tab', outcome: d2 ? classify(d2, expected) : (rc.stream === null ? 'none' : 'error'),
    ok: m1.text === expected && m2.text === expected, tab1: classify(d1, expected), tab2_ok: m2.text === expected,
    tab2_first_token_ms: d2?.t_first ?? null, tab2_lag_ms: { p50: pct(0.5), p99: pct(0.99), max: lags.at(-1) ?? null },
    resume_attempts: rc.attempts, resume_errors: rc.errors });
}

// 4. resume after the stream finished.
async function done() {
  const chatId = `done-${SIDE}-${RUN}`;
  const text = q('done');
  const expected = answerText(text, TOKENS);
  const d = await drain(await send(transport(), chatId, text), STREAM_MS);
  const m = await messageOf(d.chunks);
  await sleep(500);
  const t0 = now();
  let resume;
  let outcome;
  let okResume;
  try {
    const s = await transport().reconnectToStream({ chatId });
    if (s === null) { resume = '204 (nothing to resume)'; outcome = 'clean end'; okResume = true; } else {
      const d2 = await drain(s, STREAM_MS, t0);
      const m2 = await messageOf(d2.chunks);
      resume = `a stream (${classify(d2, expected)})`;
      outcome = classify(d2, expected);
      okResume = m2.text === expected;
    }
  } catch (e) { resume = `error: ${String(e.message).slice(0, 100)}`; outcome = 'error'; okResume = false; }
  const ms = now() - t0;
  const stored = await storedAnswer(chatId);
  out({ scenario: 'done', outcome, ok: m.text === expected && okResume && stored.text === expected,
    first: classify(d, expected), resume, resume_ms: ms, stored_status: stored.status,
    stored_answer_equals_upstream: stored.text === expected });
}

const SCEN = { reload, tab, done, kill };
for (const s of ONLY) {
  try { await SCEN[s](); } catch (e) {
    out({ scenario: s, outcome: 'error', ok: false, exception: String(e.stack ?? e).split('\n').slice(0, 3).join(' | ') });
  }
}
