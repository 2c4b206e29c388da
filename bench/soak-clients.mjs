// soak-clients.mjs — the clients of bench/soak.sh: many simulated users, each
// in a loop asking a question, reassembling the streamed answer and checking
// it against the simulated LLM's deterministic answer
// (tests/fake-llm/answer.mjs), for as long as --seconds says.
//
//   node bench/soak-clients.mjs --base http://127.0.0.1:PORT --secret S --out FILE \
//        [--seconds 600] [--tag RUN] [--ramp 20] [--slow 1]
//        [--ws-ticket N] [--ws-chat N] [--ws-brand N]     WebSocket through the web server
//        [--poll-ticket N] [--poll-chat N] [--poll-brand N]  Parley long-poll (/api/poll/*)
//        [--sse N]                                          seed 004, POST /api/chat/send
//        [--phx-ws N] [--phx-lp N]                          seed 003, official phoenix client
//        [--think-min MS] [--think-max MS]                  pause between two questions
//        [--tokens-min N] [--tokens-max N] [--token-ms-min MS] [--token-ms-max MS]
//        [--first-ms-max MS]                                per-question directives
//
// Each question carries its own `[[fake tokens=T token_ms=M first_ms=F]]`
// directive (nothing global is changed on the simulated LLM), so the
// expected text is answerText(question, T). Per client kind the program
// counts: questions asked, answers checked (complete and equal), answers
// wrong, words lost and words duplicated (a word-level longest common
// subsequence between the expected and the received text; a "chunk" below
// is such a word), frames whose `seq` did not grow (seed 000/001 WebSocket
// clients ask for seq=1), errors by kind, and requests repeated the way
// www/parley.js repeats a long-poll request (a reset kept connection, 502,
// 503, 504, 429) by cause — those are not errors. It also records how much
// longer than the upstream's own time (F + T × M) each answer took.
//
// Clients of each kind:
//   ws-ticket   seed 000: a new connection per ticket (/api/websocket/chat/<id>?seq=1);
//               every 10th ticket gets a second viewer opened after the first
//               token (it must get the whole answer: replayed, then live), every
//               6th question re-opens an answered ticket (the `cached` answer
//               must be the same text)
//   ws-chat     seed 001: one connection (/ws/<session>?seq=1), one message at a time
//   ws-brand    seed 002: one connection (/ws/chat/<brand>), `chat` frames
//   poll-*      the same three protocols over /api/poll (one session per ticket;
//               one per chat/brand client), a GET always waiting as parley.js does
//   sse         seed 004: one conversation, POST /api/chat/send read as SSE
//   phx-ws/-lp  seed 003: phoenix.js Socket (WebSocket or LongPoll transport), one
//               topic, `stream_query` (every 4th question `query`)
// The counters go to --out (JSON) every 5 s and at the end. At --seconds
// the clients stop asking, finish the answer they wait for (bounded) and
// close; SIGTERM stops them at once. Loopback only.
import { createHmac, randomUUID } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { Socket, LongPoll as PhxLongPoll } from 'phoenix';
import { answerText, splitAnswer } from '../tests/fake-llm/answer.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const num = (name, def) => Number(opt(name, def));
const BASE = opt('base', '');
const WSB = BASE.replace(/^http/, 'ws');
const SECRET = opt('secret', '');
const OUT = opt('out', '');
const SECONDS = num('seconds', 600);
const TAG = opt('tag', randomUUID().slice(0, 8));
const RAMP_MS = num('ramp', 20) * 1000;
const SLOW = num('slow', 1);
const THINK = [num('think-min', 5000), num('think-max', 15000)];
const TOKENS = [num('tokens-min', 8), num('tokens-max', 40)];
const TOKEN_MS = [num('token-ms-min', 10), num('token-ms-max', 50)];
const FIRST_MS_MAX = num('first-ms-max', 200);
const BRANDS = ['techpro', 'homestyle'];
if (!BASE.startsWith('http://127.0.0.1:') || !OUT) {
  console.error('usage: soak-clients.mjs --base http://127.0.0.1:PORT --out FILE [options] (loopback only)');
  process.exit(2);
}

const t0 = Date.now();
const stopAt = t0 + SECONDS * 1000;
let stopping = false;
const live = () => !stopping && Date.now() < stopAt;
const rnd = ([a, b]) => a + Math.floor(Math.random() * (b - a + 1));

function jwt(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 6 * 3600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

// ------------------------------------------------------------------ counters
const stats = {};
function kindStats(kind) {
  stats[kind] ??= { clients: 0, asked: 0, checked: 0, wrong: 0, lost: 0, dup: 0, seq_dup: 0,
    cached_checked: 0, viewers_checked: 0, errors: {}, retries: {}, excess_ms: [], wrong_samples: [] };
  return stats[kind];
}
const bump = (o, k, n = 1) => { o[k] = (o[k] || 0) + n; };

// Longest common subsequence of two word arrays (the answers are at most a
// few hundred words: O(n·m) is fine).
function lcs(a, b) {
  let prev = new Uint16Array(b.length + 1);
  let cur = new Uint16Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

// One answer received completely (its end frame came): compare.
function check(st, q, got, { seqDup = 0, kind = 'checked' } = {}) {
  st.seq_dup += seqDup;
  if (got === q.want && !seqDup) {
    st[kind]++;
    if (kind === 'checked') st.excess_ms.push(Date.now() - q.sentAt - q.upstreamMs);
    return true;
  }
  const w = splitAnswer(q.want), g = splitAnswer(got);
  const common = lcs(w, g);
  st.wrong++;
  st.lost += w.length - common;
  st.dup += g.length - common;
  if (st.wrong_samples.length < 5) {
    st.wrong_samples.push({ question: q.prompt.slice(0, 120), want: q.want.slice(0, 200), got: got.slice(0, 200), seqDup });
  }
  return false;
}

class Failure extends Error {
  constructor(kind, detail = '') { super(`${kind}${detail ? `: ${detail}` : ''}`); this.kind = kind; }
}

// A question: the text with its directive and the expected answer.
let qn = 0;
function question(who) {
  const tokens = rnd(TOKENS), tokenMs = rnd(TOKEN_MS), firstMs = rnd([0, FIRST_MS_MAX]);
  const prompt = `soak ${TAG} ${who} q${++qn} ${randomUUID().slice(0, 8)} please help ` +
    `[[fake tokens=${tokens} token_ms=${tokenMs} first_ms=${firstMs}]]`;
  return { prompt, tokens, want: answerText(prompt, tokens), upstreamMs: firstMs + tokens * tokenMs,
    deadlineMs: (firstMs + tokens * tokenMs + 30000) * SLOW, sentAt: 0 };
}

// ------------------------------------------------------------ WebSocket base
// A WebSocket whose frames go to this.onFrame; opened() resolves once open
// or rejects with a Failure (HTTP status of a refused upgrade, network).
class Ws {
  constructor(url) {
    this.ws = new WebSocket(url, { handshakeTimeout: 30000 * SLOW });
    this.onFrame = () => {};
    this.onEnd = () => {};
    this.closed = false;
    this.opened = new Promise((resolve, reject) => {
      this.ws.on('open', resolve);
      this.ws.on('unexpected-response', (req, res) => { reject(new Failure(`ws-upgrade-http-${res.statusCode}`)); req.destroy(); });
      this.ws.on('error', (e) => { reject(new Failure('ws-connect', e.code || e.message)); this.onEnd(new Failure('ws-error', e.code || e.message)); });
    });
    this.ws.on('message', (raw) => {
      let m;
      try { m = JSON.parse(raw.toString()); } catch { this.onEnd(new Failure('bad-frame', raw.toString().slice(0, 80))); return; }
      this.onFrame(m);
    });
    this.ws.on('close', (code) => { this.closed = true; this.onEnd(new Failure(`ws-close-${code}`)); });
  }
  send(o) { this.ws.send(JSON.stringify(o)); }
  close() { try { this.ws.close(1000); } catch { /* already gone */ } setTimeout(() => this.ws.terminate(), 2000).unref(); }
}

// Waits until handler(frame) returns a value other than undefined, an end
// of the connection, or the deadline. Resolves with the value; rejects with
// a Failure.
function collect(conn, deadlineMs, handler) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Failure('timeout')), deadlineMs);
    conn.onFrame = (m) => {
      let v;
      try { v = handler(m); } catch (e) { clearTimeout(t); reject(e); return; }
      if (v !== undefined) { clearTimeout(t); resolve(v); }
    };
    conn.onEnd = (f) => { clearTimeout(t); reject(f); };
  });
}

// seq bookkeeping: frames whose seq does not grow.
function seqTracker() {
  let last = -1;
  return { dups: 0, see(m) { if (typeof m.seq === 'number') { if (m.seq <= last) this.dups++; else last = m.seq; } } };
}

// ---------------------------------------------------------- long-poll base
const RETRYABLE = new Set([429, 502, 503, 504]);
async function fetchRetry(st, url, init) {
  const until = Date.now() + 60000 * SLOW;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    let why;
    try {
      const r = await fetch(url, init());
      if (!RETRYABLE.has(r.status) || Date.now() + delay > until) return r;
      await r.arrayBuffer().catch(() => {});
      why = `HTTP ${r.status}`;
    } catch (e) {
      if (e.name === 'TimeoutError' || e.name === 'AbortError') throw new Failure('http-timeout', url.replace(BASE, ''));
      why = `reset ${e.cause?.code || e.name}`;
      if (Date.now() + delay > until) throw new Failure('http-network', why);
    }
    bump(st.retries, why);
    await sleep(delay);
  }
}

// A Parley long-poll session on a protocol path; a GET always waiting.
class Poll {
  constructor(st, token, path) {
    this.st = st; this.path = path; this.cursor = 0;
    this.headers = { authorization: `Bearer ${token}` };
    this.onFrame = () => {}; this.onEnd = () => {};
    this.dead = null;
  }
  async open() {
    const r = await fetchRetry(this.st, `${BASE}/api/poll/open`, () => ({ method: 'POST',
      headers: { ...this.headers, 'content-type': 'application/json' }, body: JSON.stringify({ path: this.path }),
      signal: AbortSignal.timeout(30000 * SLOW) }));
    const j = await r.json().catch(() => null);
    if (r.status !== 200 || !j?.sid) throw new Failure(`poll-open-http-${r.status}`);
    this.sid = j.sid;
    this.cursor = j.cursor || 0;
    this.loop = this.pollLoop();
  }
  async pollLoop() {
    while (!this.dead) {
      let r, j;
      try {
        r = await fetchRetry(this.st, `${BASE}/api/poll/${this.sid}?cursor=${this.cursor}&wait=25`, () => ({
          headers: this.headers, signal: AbortSignal.timeout(85000 * SLOW) }));
        j = await r.json().catch(() => null);
      } catch (e) {
        this.end(e instanceof Failure ? e : new Failure('poll-get', e.message));
        return;
      }
      if (this.dead) return;
      if (r.status !== 200 || !Array.isArray(j?.messages)) { this.end(new Failure(`poll-get-http-${r.status}`)); return; }
      if (j.cursor > this.cursor) this.cursor = j.cursor;
      for (const m of j.messages) this.onFrame(m);
      if (j.closed) { this.end(new Failure('poll-session-closed')); return; }
    }
  }
  end(f) { if (!this.dead) { this.dead = f; this.onEnd(f); } }
  async send(frame) {
    const r = await fetchRetry(this.st, `${BASE}/api/poll/${this.sid}`, () => ({ method: 'POST',
      headers: { ...this.headers, 'content-type': 'application/json' }, body: JSON.stringify(frame),
      signal: AbortSignal.timeout(30000 * SLOW) }));
    await r.arrayBuffer().catch(() => {});
    if (r.status !== 202 && r.status !== 200) throw new Failure(`poll-send-http-${r.status}`);
  }
  async close() {
    this.dead ??= new Failure('closed');
    await fetch(`${BASE}/api/poll/${this.sid}`, { method: 'DELETE', headers: this.headers,
      signal: AbortSignal.timeout(10000) }).then((r) => r.arrayBuffer()).catch(() => {});
  }
}

// ------------------------------------------------------------------ clients
// Each client: ask() once (throws a Failure), reset() after a failure,
// close() at the end.
class TicketClient {
  constructor(kind, i, poll) {
    this.kind = kind; this.i = i; this.poll = poll; this.st = kindStats(kind);
    this.user = `soak-${TAG}-${kind}-${i}`; this.token = jwt(this.user);
    this.n = 0; this.answered = [];
  }
  url(ticket) { return `${WSB}/api/websocket/chat/${ticket}?seq=1&token=${this.token}`; }
  async connect(ticket) {
    if (this.poll) {
      const c = new Poll(this.st, this.token, `/api/websocket/chat/${ticket}`);
      await c.open();
      return c;
    }
    const c = new Ws(this.url(ticket));
    await c.opened;
    return c;
  }
  // One viewer of a ticket: sends the body, returns { text, cached, seqDups }
  // once done; onFirst is called at the first streamed piece.
  async view(ticket, q, onFirst) {
    const conn = await this.connect(ticket);
    try {
      const seq = seqTracker();
      let text = '', cached = false, first = true;
      const done = collect(conn, q.deadlineMs, (m) => {
        seq.see(m);
        if (m.type === 'stream') { text += m.content; if (first) { first = false; onFirst?.(); } }
        else if (m.type === 'cached') { text = m.response; cached = true; }
        else if (m.type === 'done') { if (m.stopped) throw new Failure('stopped'); return true; }
        else if (m.type === 'error') throw new Failure(`error-frame-${m.code || 'none'}`, m.message);
        return undefined;
      });
      await conn.send({ ticketBody: q.prompt });
      await done;
      return { text, cached, seqDups: seq.dups };
    } finally {
      await conn.close();
    }
  }
  async ask() {
    this.n++;
    if (this.n % 6 === 0 && this.answered.length) {
      // an answered ticket again: the cache
      const a = this.answered[Math.floor(Math.random() * this.answered.length)];
      const q = { ...a.q, sentAt: Date.now() };
      this.st.asked++;
      const r = await this.view(a.ticket, q);
      if (!r.cached) throw new Failure('not-cached');
      check(this.st, q, r.text, { kind: 'cached_checked' });
      return;
    }
    const ticket = `sk-${TAG}-${this.kind}-${this.i}-${this.n}`;
    const q = question(`${this.kind}-${this.i}`);
    q.sentAt = Date.now();
    this.st.asked++;
    let second = null;
    const two = !this.poll && this.n % 10 === 3;
    const r = await this.view(ticket, q, two ? () => {
      second = this.view(ticket, { ...q }).catch((e) => e);
    } : null);
    check(this.st, q, r.text, { seqDup: r.seqDups });
    if (second) {
      const r2 = await second;
      if (r2 instanceof Error) throw r2.kind ? new Failure(`viewer-${r2.kind}`) : r2;
      check(this.st, q, r2.text, { seqDup: r2.seqDups, kind: 'viewers_checked' });
    }
    this.answered.push({ ticket, q });
    if (this.answered.length > 5) this.answered.shift();
  }
  reset() {}
  close() {}
}

// Seed 001 (chat) and seed 002 (brand): one connection or session, one
// question at a time.
class ChatClient {
  constructor(kind, i, poll, brand) {
    this.kind = kind; this.i = i; this.poll = poll; this.brand = brand; this.st = kindStats(kind);
    this.user = `soak-${TAG}-${kind}-${i}`; this.token = jwt(this.user);
    this.session = `sk-${TAG}-${kind}-${i}`;
    this.conn = null; this.conversation = null;
  }
  path() { return this.brand ? `/ws/chat/${this.brand}` : `/ws/${this.session}`; }
  async connect() {
    const hello = this.brand ? 'welcome' : 'connected';
    if (this.poll) {
      const c = new Poll(this.st, this.token, this.path());
      await c.open();
      await collect(c, 30000 * SLOW, (m) => (m.type === hello ? true : m.type === 'error'
        ? (() => { throw new Failure(`error-frame-${m.code}`, m.message); })() : undefined));
      return c;
    }
    const c = new Ws(`${WSB}${this.path()}?${this.brand ? '' : 'seq=1&'}token=${this.token}`);
    const hi = collect(c, 30000 * SLOW, (m) => (m.type === hello ? true : undefined));
    await c.opened;
    await hi;
    return c;
  }
  async ask() {
    if (!this.conn || this.conn.closed || this.conn.dead) this.conn = await this.connect();
    const q = question(`${this.kind}-${this.i}`);
    const seq = seqTracker();
    let text = '', mid = null;
    const done = collect(this.conn, q.deadlineMs, this.brand ? (m) => {
      if (m.type === 'chunk') { text += m.data.content; this.conversation = m.data.conversation_id; }
      else if (m.type === 'complete') { this.conversation = m.data.conversation_id; if (m.data.stopped) throw new Failure('stopped'); return true; }
      else if (m.type === 'error') throw new Failure(`error-frame-${m.data?.code || 'none'}`, m.data?.message);
      return undefined;
    } : (m) => {
      seq.see(m);
      if (m.type === 'stream_start') mid = m.message_id;
      else if (m.type === 'stream_chunk') { if (mid && m.message_id !== mid) throw new Failure('foreign-chunk'); text += m.content; }
      else if (m.type === 'stream_end') { if (m.metadata?.stopped) throw new Failure('stopped'); return true; }
      else if (m.type === 'error') throw new Failure(`error-frame-${m.code || 'none'}`, m.message);
      return undefined;
    });
    q.sentAt = Date.now();
    this.st.asked++;
    await this.conn.send(this.brand
      ? { type: 'chat', data: { message: q.prompt, conversation_id: this.conversation } }
      : { type: 'message', content: q.prompt });
    await done;
    check(this.st, q, text, { seqDup: seq.dups });
  }
  reset() { this.conn?.close(); this.conn = null; }
  close() { return this.conn?.close(); }
}

// Seed 004: POST /api/chat/send answered as Server-Sent Events.
class SseClient {
  constructor(kind, i) {
    this.kind = kind; this.i = i; this.st = kindStats(kind);
    this.token = jwt(`soak-${TAG}-${kind}-${i}`); this.conv = null;
  }
  async ask() {
    const auth = { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' };
    if (!this.conv) {
      const r = await fetchRetry(this.st, `${BASE}/api/chat/sessions`, () => ({ method: 'POST', headers: auth,
        body: JSON.stringify({ kind: 'sse', title: 'soak' }), signal: AbortSignal.timeout(30000 * SLOW) }));
      const j = await r.json().catch(() => null);
      if (r.status !== 201 || !j?.id) throw new Failure(`sse-create-http-${r.status}`);
      this.conv = j.id;
    }
    const q = question(`${this.kind}-${this.i}`);
    q.sentAt = Date.now();
    this.st.asked++;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), q.deadlineMs);
    let text = '', end = null;
    try {
      const r = await fetchRetry(this.st, `${BASE}/api/chat/send`, () => ({ method: 'POST', headers: auth,
        body: JSON.stringify({ conversationId: this.conv, content: q.prompt }), signal: ctl.signal }));
      if (r.status !== 200 || !(r.headers.get('content-type') || '').startsWith('text/event-stream')) {
        await r.arrayBuffer().catch(() => {});
        throw new Failure(`sse-http-${r.status}`);
      }
      const dec = new TextDecoder();
      let buf = '';
      outer: for await (const chunk of r.body) {
        buf += dec.decode(chunk, { stream: true });
        for (let k; (k = buf.indexOf('\n\n')) >= 0;) {
          const ev = buf.slice(0, k);
          buf = buf.slice(k + 2);
          for (const line of ev.split('\n')) {
            if (!line.startsWith('data: ')) continue;
            const d = JSON.parse(line.slice(6));
            if (d.error) throw new Failure(`sse-error-${d.code || 'none'}`, d.error);
            if (typeof d.content === 'string') text += d.content;
            if (d.done) { end = d; break outer; }
          }
        }
      }
    } catch (e) {
      if (e instanceof Failure) throw e;
      throw new Failure(ctl.signal.aborted ? 'timeout' : 'sse-read', e.cause?.code || e.message);
    } finally {
      clearTimeout(timer);
      ctl.abort();
    }
    if (!end) throw new Failure('sse-ended-without-done');
    if (end.stopped) throw new Failure('stopped');
    check(this.st, q, text);
  }
  reset() {}
  close() {}
}

// Seed 003 over the official phoenix client.
class PhxClient {
  constructor(kind, i, longpoll) {
    this.kind = kind; this.i = i; this.st = kindStats(kind); this.longpoll = longpoll;
    this.user = `soak-${TAG}-${kind}-${i}`; this.n = 0; this.socket = null;
  }
  async connect() {
    const socket = new Socket(`${WSB}/socket`, {
      transport: this.longpoll ? PhxLongPoll : WebSocket,
      params: { user_id: this.user, auth_token: jwt(this.user) },
      timeout: 30000 * SLOW, reconnectAfterMs: () => 2000, rejoinAfterMs: () => 2000,
      logger: () => {},
    });
    socket.onError(() => bump(this.st.errors, 'phx-socket-error'));
    socket.connect();
    const ch = socket.channel(`proxy:sk-${TAG}-${this.kind}-${this.i}-${randomUUID().slice(0, 8)}`, { user_id: this.user });
    this.socket = socket; this.ch = ch;
    await new Promise((resolve, reject) => {
      ch.join().receive('ok', resolve).receive('error', (r) => reject(new Failure('phx-join-error', r?.reason)))
        .receive('timeout', () => reject(new Failure('phx-join-timeout')));
    });
  }
  async ask() {
    if (!this.socket) await this.connect();
    const ch = this.ch;
    this.n++;
    const q = question(`${this.kind}-${this.i}`);
    const refs = [];
    const off = () => { for (const [ev, ref] of refs) ch.off(ev, ref); };
    const once = this.n % 4 === 0;
    const text = await new Promise((resolve, reject) => {
      let t = '';
      const timer = setTimeout(() => { off(); reject(new Failure('timeout')); }, q.deadlineMs);
      const fin = (err, v) => { clearTimeout(timer); off(); err ? reject(err) : resolve(v); };
      if (once) {
        refs.push(['response', ch.on('response', (p) => fin(null, p.response))]);
      } else {
        refs.push(['stream_token', ch.on('stream_token', (p) => { t += p.token; })]);
        refs.push(['stream_complete', ch.on('stream_complete', (p) => (p?.stopped ? fin(new Failure('stopped')) : fin(null, t)))]);
        refs.push(['stream_error', ch.on('stream_error', (p) => fin(new Failure(`stream-error-${p.code || p.error}`)))]);
      }
      refs.push(['error', ch.on('error', (p) => fin(new Failure(`error-frame-${p.code || p.error}`, p.message)))]);
      refs.push(['phx_error', ch.on('phx_error', () => fin(new Failure('phx-channel-error')))]);
      q.sentAt = Date.now();
      this.st.asked++;
      ch.push(once ? 'query' : 'stream_query', { query: q.prompt })
        .receive('error', (r) => fin(new Failure('phx-push-refused', JSON.stringify(r))))
        .receive('timeout', () => fin(new Failure('phx-push-timeout')));
    });
    check(this.st, q, text);
  }
  reset() { this.close(); }
  close() { try { this.socket?.disconnect(); } catch { /* gone */ } this.socket = null; }
}

// --------------------------------------------------------------------- main
const clients = [];
const add = (kind, n, make) => {
  for (let i = 0; i < n; i++) { clients.push(make(i)); kindStats(kind).clients++; }
};
add('ws-ticket', num('ws-ticket', 0), (i) => new TicketClient('ws-ticket', i, false));
add('ws-chat', num('ws-chat', 0), (i) => new ChatClient('ws-chat', i, false, null));
add('ws-brand', num('ws-brand', 0), (i) => new ChatClient('ws-brand', i, false, BRANDS[i % BRANDS.length]));
add('poll-ticket', num('poll-ticket', 0), (i) => new TicketClient('poll-ticket', i, true));
add('poll-chat', num('poll-chat', 0), (i) => new ChatClient('poll-chat', i, true, null));
add('poll-brand', num('poll-brand', 0), (i) => new ChatClient('poll-brand', i, true, BRANDS[i % BRANDS.length]));
add('sse', num('sse', 0), (i) => new SseClient('sse', i));
add('phx-ws', num('phx-ws', 0), (i) => new PhxClient('phx-ws', i, false));
add('phx-lp', num('phx-lp', 0), (i) => new PhxClient('phx-lp', i, true));

function write(final) {
  const out = { pid: process.pid, tag: TAG, final, elapsed_s: Math.round((Date.now() - t0) / 1000), kinds: {} };
  for (const [k, s] of Object.entries(stats)) {
    const ex = [...s.excess_ms].sort((a, b) => a - b);
    const pct = (p) => (ex.length ? ex[Math.min(ex.length - 1, Math.ceil((p / 100) * ex.length) - 1)] : null);
    out.kinds[k] = { ...s, excess_ms: { n: ex.length, p50: pct(50), p99: pct(99), max: pct(100) } };
  }
  writeFileSync(`${OUT}.tmp`, JSON.stringify(out, null, 1));
  renameSync(`${OUT}.tmp`, OUT);
}

async function run(c) {
  await sleep(Math.random() * RAMP_MS);
  let backoff = 1000;
  while (live()) {
    try {
      await c.ask();
      backoff = 1000;
    } catch (e) {
      bump(c.st.errors, e instanceof Failure ? e.kind : `exception-${e.name}`);
      if (!(e instanceof Failure) && !c.st.errors_logged) { c.st.errors_logged = true; console.error(e); }
      c.reset();
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
      continue;
    }
    if (live()) await sleep(Math.min(rnd(THINK), Math.max(0, stopAt - Date.now())));
  }
  await c.close();
}

const ticker = setInterval(() => write(false), 5000);
process.on('SIGTERM', () => { stopping = true; write(true); process.exit(0); });
await Promise.all(clients.map(run));
clearInterval(ticker);
for (const s of Object.values(stats)) delete s.errors_logged;
write(true);
await sleep(500);
process.exit(0);
