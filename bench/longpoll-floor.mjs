// longpoll-floor.mjs — the floor for bench/gens-bench.sh's long-poll rows:
// the same work with Parley's part removed. A Node HTTP server that speaks
// exactly what tests/integration/concurrent.mjs uses of Parley's long-poll
// transport (POST /api/poll/open → {sid, cursor}; GET /api/poll/{sid}?cursor
// &wait → {messages, cursor, closed}, waiting until a frame is there;
// POST /api/poll/{sid} {ticketBody} → 202), with everything in memory and the
// answer made by timers instead of an upstream: after first_ms, `tokens`
// seed 000 "stream" frames token_ms apart, then "done" — the very tokens the
// simulated LLM would send for that body (tests/fake-llm/answer.mjs). No web
// server, no database, no upstream connection, frames kept as objects:
// what is left is the client, the HTTP round trips and the timers on the
// same cores, so the viewers' first-token time against it is the least any
// server could give on this machine.
// It also speaks Phoenix's LongPoll transport at /socket/longpoll, as much
// as phoenix.js's LongPoll and bench/gw-latency.mjs's phx-lp use of it: a
// GET without a session token → {"status":410,"token":T,"messages":[]}; a
// GET with one → waits (up to 20 s) for frames → {"status":200,"token":T,
// "messages":["<V2 frame>",...]} or 204; a POST of NDJSON V2 frames →
// {"status":200}, each phx_join / phx_leave / heartbeat answered with an ok
// phx_reply, each stream_query with an ok phx_reply and then, by timers,
// stream_token {token} frames and a stream_complete, as seed 003 sends
// them. So phoenix.js's own part (its batching and delivery timers, its
// HTTP requests) is in the floor too.
//
//   node bench/longpoll-floor.mjs [--port N] [--port-file F]
// Loopback only; stops on SIGTERM/SIGINT.
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { answerTokens, parseDirectives } from '../tests/fake-llm/answer.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};

const sessions = new Map();   // sid -> { frames: [], waiters: Set<fn> }

function push(s, frame) {
  s.frames.push(frame);
  for (const w of s.waiters) w();
  s.waiters.clear();
}

// Pushes to s, by timers, the tokens the simulated LLM would send for the
// question's directives — token(t) for each, then end() — as the frames
// the caller makes of them.
function answerWith(s, question, token, end) {
  const d = parseDirectives(question);
  const n = Number(d.tokens || 12), every = Number(d.token_ms || 0), first = Number(d.first_ms || 0);
  const toks = answerTokens(question, n);
  let i = 0;
  const tick = () => {
    if (i < toks.length) {
      push(s, token(toks[i++]));
      setTimeout(tick, every);
    } else {
      push(s, end());
    }
  };
  setTimeout(tick, first);
}

function answer(s, body) {
  answerWith(s, body, (t) => ({ type: 'stream', content: t }), () => ({ type: 'done' }));
}

function reply(res, status, obj) {
  const body = obj === undefined ? '' : JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function read(req) {
  return new Promise((resolve) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts).toString()));
  });
}

// ---- Phoenix LongPoll (/socket/longpoll) ----
const phx = new Map();        // token -> { frames: [] (JSON strings), waiters: Set<fn> }

function phxAnswer(s, joinRef, topic, query) {
  answerWith(s, query, (t) => JSON.stringify([joinRef, null, topic, 'stream_token', { token: t }]),
    () => JSON.stringify([joinRef, null, topic, 'stream_complete', {}]));
}

async function phxServe(req, res, url) {
  const reply = (obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const token = req.headers['x-phoenix-longpoll-token'] || url.searchParams.get('token');
  const s = token && phx.get(token);
  if (req.method === 'GET') {
    if (!s) {
      const t = randomUUID();
      phx.set(t, { frames: [], waiters: new Set() });
      return reply({ status: 410, token: t, messages: [] });
    }
    const answerNow = () => {
      const messages = s.frames;
      s.frames = [];
      reply({ status: messages.length ? 200 : 204, token, messages });
    };
    if (s.frames.length) return answerNow();
    const timer = setTimeout(() => { s.waiters.delete(w); answerNow(); }, 20000);
    const w = () => { clearTimeout(timer); answerNow(); };
    s.waiters.add(w);
    return;
  }
  if (req.method !== 'POST') { res.writeHead(400); return res.end(); }
  const body = await read(req);
  if (!s) return reply({ status: 410 });
  for (const line of body.split('\n')) {
    let f;
    try { f = JSON.parse(line); } catch { continue; }
    if (!Array.isArray(f) || f.length !== 5) continue;
    const [joinRef, ref, topic, event, payload] = f;
    push(s, JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'ok', response: {} }]));
    if (event === 'stream_query' && payload && typeof payload.query === 'string')
      phxAnswer(s, joinRef, topic, payload.query);
  }
  reply({ status: 200 });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/socket/longpoll') return phxServe(req, res, url);
  const m = url.pathname.match(/^\/api\/poll\/([^/]+)$/);
  if (req.method === 'POST' && url.pathname === '/api/poll/open') {
    await read(req);
    const sid = randomUUID();
    sessions.set(sid, { frames: [], waiters: new Set() });
    return reply(res, 200, { sid, cursor: 0 });
  }
  const s = m && sessions.get(m[1]);
  if (!s)
    return reply(res, 410, { success: false, message: 'Unknown or expired poll session' });
  if (req.method === 'POST') {
    let j = null;
    try { j = JSON.parse(await read(req)); } catch { /* answered below */ }
    if (!j || typeof j.ticketBody !== 'string') return reply(res, 400, { success: false });
    answer(s, j.ticketBody);
    return reply(res, 202, { success: true, accepted: 1 });
  }
  if (req.method === 'DELETE') {
    sessions.delete(m[1]);
    return reply(res, 204);
  }
  const cursor = Number(url.searchParams.get('cursor') || 0);
  const wait = Number(url.searchParams.get('wait') || 25) * 1000;
  const answerNow = () => {
    const messages = s.frames.slice(cursor);
    reply(res, 200, { messages, cursor: s.frames.length, closed: false });
  };
  if (s.frames.length > cursor) return answerNow();
  const timer = setTimeout(() => { s.waiters.delete(w); answerNow(); }, wait);
  const w = () => { clearTimeout(timer); answerNow(); };
  s.waiters.add(w);
});
server.keepAliveTimeout = 60000;
server.listen(Number(opt('port', 0)), '127.0.0.1', () => {
  const f = opt('port-file', '');
  if (f) writeFileSync(f, String(server.address().port));
  else console.log(server.address().port);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
