// lp-fanout.mjs — long-poll fan-out, Parley or Nchan, measured by the same
// client code; one run of bench/lp-run.sh.
//
//   node bench/lp-fanout.mjs --mode parley|nchan --base http://127.0.0.1:PORT
//        [--channels 1] [--viewers 200] [--rate 20] [--count 100] [--size 64]
//        [--db PATH --pub build/bench/ws-pub]      (parley: the publisher)
//        [--server-pids "PID..."] [--label TEXT] [--timeout 120]
//        [--poll-delay MS]   a viewer waits MS after an answer that carried
//                            events before its next GET (nchan.js's pollDelay):
//                            fewer, fuller answers, later events; default 0
//
// C channels, V viewers on each (C × V long-poll clients, one keep-alive
// socket each); on every channel COUNT events at RATE per second (so
// C × RATE events/s in all, round-robin over the channels), each event's
// text starting with the publisher's wall-clock time in µs when it sent it.
//
// Viewers (the same loop for both; only the request and how an answer is
// read differ):
//   parley  POST /api/poll/open {path: /api/websocket/chat/<ticket>?after=0}
//           (seed 000's ticket channel, from seq 0), then
//           GET /api/poll/{sid}?cursor=N&wait=25 again as soon as an answer
//           is in; every "stream" frame of an answer is an event.
//   nchan   GET /sub/<channel>, then again with If-Modified-Since and
//           If-None-Match set from the previous answer's Last-Modified and
//           Etag (Nchan's long-poll: one message per answer, the next one
//           queued for the caller answered at once; 304/408 = nothing yet).
// Publisher:
//   parley  --pub (bench/ws-pub.c): evlog_append of each event, one write
//           transaction + the doorbell, as a generation does; its own
//           process, not among the server's.
//   nchan   this file as a process of its own (--nchan-pub): HTTP POST
//           /pub/<channel> over keep-alive, one channel's events one after
//           the other, the body the JSON Parley's ticket protocol sends
//           ({"type":"stream","content":...}), so both carry the same text.
//           nginx's handling of that POST IS in the server CPU (it is the
//           server's own publish path); ws-pub's append is not (Parley's
//           publish path is the generation's process, the app's cost).
//
// Exactly once: events of one channel carry strictly increasing stamps, so
// each viewer counts distinct stamps (delivered), repeats (duplicated),
// stamps older than one it had (out of order) and events it never got
// (lost = expected − delivered).
//
// Server CPU: every process under --server-pids (the roots: the web server,
// a FastCGI service, the bridge, nginx) and all their descendants, read
// from /proc/<pid>/stat at the start and end of the window (from the first
// event published to the last one delivered, or the deadline): utime +
// stime + cutime + cstime of each. A process that started in the window
// counts whole; one that ended in it counts through its parent's cutime
// and cstime once reaped (mod_fcgid's process manager reaps its
// parley.fcgi). Split by the program's name (comm) on stderr.
//
// Prints one Markdown row:
// | setup | viewers × channels | rate | events expected / delivered | lost | duplicated |
//   p50 | p99 | max | server CPU s | CPU µs per delivered event |
// and "#" detail lines on stderr. Exit status 0 only if every event reached
// every viewer exactly once and no request failed. Bounded by --timeout s.

import http from 'node:http';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
// --nchan-pub URL: the Nchan publisher alone, a process of its own (the
// viewers' event loop must not delay it). Each channel's events are POSTed
// one after the other (the next once the previous is answered, as ws-pub's
// appends follow each other), stamped when sent, channels interleaved at
// RATE per channel. Prints "published N in S s, F failed"; exit 1 if any failed.
if (args['nchan-pub']) {
  const base = new URL(args['nchan-pub']);
  const c = Number(args.channels), rate = Number(args.rate), count = Number(args.count);
  const size = Number(args.size);
  const via = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const post = (path, body) => new Promise((resolve) => {
    const req = http.request({ host: base.hostname, port: base.port, method: 'POST', path, agent: via,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
    (res) => { res.resume(); res.on('end', () => resolve(res.statusCode < 300)); });
    req.on('error', () => resolve(false));
    req.end(body);
  });
  const start = performance.now();
  let bad = 0;
  const chains = Array.from({ length: c }, () => Promise.resolve());
  for (let i = 0; i < count * c; i++) {
    const wait = start + (i * 1000) / (rate * c) - performance.now();
    if (wait > 1) await sleep(wait);
    const ch = i % c;
    chains[ch] = chains[ch].then(async () => {
      const ts = `${Math.round((performance.timeOrigin + performance.now()) * 1000)} `;
      const body = JSON.stringify({ type: 'stream', content: ts + 'x'.repeat(Math.max(0, size - ts.length)) });
      if (!(await post(`${args['path-prefix'] || ''}/pub/${args.prefix}${ch}`, body))) bad++;
    });
  }
  await Promise.all(chains);
  via.destroy();
  console.log(`published ${count * c} in ${((performance.now() - start) / 1000).toFixed(2)} s, ${bad} failed`);
  process.exit(bad ? 1 : 0);
}
const MODE = args.mode || 'parley';
const BASE = new URL(args.base || 'http://127.0.0.1:8080');
const C = Math.max(1, Number(args.channels || 1));
const V = Math.max(1, Number(args.viewers || 200));
const RATE = Number(args.rate || 20);          // per channel
const COUNT = Number(args.count || 100);       // per channel
const SIZE = Number(args.size || 64);
// nchan mode: what comes before /sub/ and /pub/ (bench/lp-floor.c behind a
// web server's shipped snippet answers under /api/)
const PATH_PREFIX = args['path-prefix'] || '';
const POLL_DELAY = Number(args['poll-delay'] || 0);
const TIMEOUT_MS = Number(args.timeout || 120) * 1000;
const ROOTS = String(args['server-pids'] || '').split(/\s+/).filter(Boolean).map(Number);
if (!['parley', 'nchan'].includes(MODE) || !(RATE > 0) || !(COUNT >= 1) || SIZE < 24) {
  console.error('lp-fanout: --mode parley|nchan, --rate > 0, --count >= 1, --size >= 24');
  process.exit(2);
}
if (MODE === 'parley' && !(args.db && args.pub)) {
  console.error('lp-fanout: --mode parley needs --db and --pub');
  process.exit(2);
}
const PREFIX = `lp${Date.now().toString(36)}${process.pid.toString(36)}x`;
const N = C * V;
const t0 = Date.now();
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const note = (s) => process.stderr.write(`# ${s}\n`);
const hardStop = setTimeout(() => { note(`timeout after ${TIMEOUT_MS / 1000} s`); process.exit(1); }, TIMEOUT_MS);
hardStop.unref();

// --- server CPU ------------------------------------------------------------
const HZ = 100;                 // USER_HZ of /proc/<pid>/stat on Linux
function descendants(roots) {
  const seen = new Set();
  const todo = [...roots];
  while (todo.length) {
    const p = todo.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    let tids = [];
    try { tids = readdirSync(`/proc/${p}/task`); } catch { continue; }
    for (const t of tids) {
      try {
        for (const c of readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(/\s+/))
          if (c) todo.push(Number(c));
      } catch { /* thread gone */ }
    }
  }
  return seen;
}
// pid -> { comm, ticks: utime + stime + cutime + cstime }
function cpuSnapshot() {
  const m = new Map();
  for (const p of descendants(ROOTS)) {
    try {
      const s = readFileSync(`/proc/${p}/stat`, 'utf8');
      const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'));
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      // after "pid (comm) ": [0] state ... [11] utime [12] stime [13] cutime [14] cstime
      m.set(p, { comm, ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
    } catch { /* ended */ }
  }
  return m;
}
// seconds by comm, and in all, between two snapshots (see the header)
function cpuDelta(a, b) {
  const by = {};
  let all = 0;
  for (const [p, e] of b) {
    const d = (e.ticks - (a.has(p) ? a.get(p).ticks : 0)) / HZ;
    by[e.comm] = (by[e.comm] || 0) + d;
    all += d;
  }
  for (const [p, e] of a) {
    if (b.has(p)) continue;
    // ended in the window: its parent's cutime at the end holds its final
    // total; take off what it had used before the window
    by[e.comm] = (by[e.comm] || 0) - e.ticks / HZ;
    all -= e.ticks / HZ;
  }
  return { by, all };
}

// --- HTTP --------------------------------------------------------------------
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
function request(method, path, { body, headers = {}, via = agent } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (data) { h['content-type'] = 'application/json'; h['content-length'] = data.length; }
    const req = http.request({ host: BASE.hostname, port: BASE.port, method, path, agent: via, headers: h },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
          text: Buffer.concat(chunks).toString(), at: nowUs() }));
        res.on('error', reject);
      });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// --- viewers -----------------------------------------------------------------
const lat = [];                 // ms, every first delivery of an event to a viewer
let polls = 0, errors = 0, reconnects = 0, waitingAnswers = 0, started = 0, stopping = false;
const firstErrors = [];
const viewers = [];
// after the window (stopping) the DELETEs answer the waiting GETs 410: not errors
const failed = (what) => {
  if (stopping) return;
  errors++;
  if (firstErrors.length < 3) firstErrors.push(String(what).replace(/\s+/g, ' '));
};

function take(me, content, at) {
  const stamp = Number(String(content).split(' ')[0]);
  if (!(stamp > 0)) { failed(`frame without a stamp: ${String(content).slice(0, 60)}`); return; }
  if (me.seen.has(stamp)) { me.dup++; return; }
  if (stamp < me.last) me.disorder++;
  me.last = Math.max(me.last, stamp);
  me.seen.add(stamp);
  lat.push((at - stamp) / 1000);
}

// one long-poll exchange; returns false when the answer carried nothing
const modes = {
  parley: {
    async open(me) {
      const r = await request('POST', '/api/poll/open',
        { body: { path: `/api/websocket/chat/${PREFIX}${me.ch}?after=0` } });
      if (r.status !== 200) throw new Error(`poll/open: HTTP ${r.status}: ${r.text.slice(0, 200)}`);
      me.sid = JSON.parse(r.text).sid;
      me.cursor = 0;
    },
    async poll(me) {
      const r = await request('GET', `/api/poll/${me.sid}?cursor=${me.cursor}&wait=25`);
      if (r.status !== 200) { failed(`HTTP ${r.status}: ${r.text.slice(0, 120)}`); return null; }
      const o = JSON.parse(r.text);
      let n = 0;
      for (const m of o.messages) {
        const f = typeof m === 'string' ? JSON.parse(m) : m;
        if (f.type === 'stream') { take(me, f.content, r.at); n++; }
      }
      me.cursor = o.cursor;
      return n;
    },
    close(me, via) { return request('DELETE', `/api/poll/${me.sid}`, { via }); },
  },
  nchan: {
    async open(me) { me.hdr = {}; },
    async poll(me) {
      const r = await request('GET', `${PATH_PREFIX}/sub/${PREFIX}${me.ch}`, { headers: me.hdr });
      if (r.status === 304 || r.status === 408) return 0;     // the wait ended, nothing new
      if (r.status !== 200) { failed(`HTTP ${r.status}: ${r.text.slice(0, 120)}`); return null; }
      me.hdr = {};
      if (r.headers['last-modified']) me.hdr['if-modified-since'] = r.headers['last-modified'];
      if (r.headers.etag) me.hdr['if-none-match'] = r.headers.etag;
      take(me, JSON.parse(r.text).content, r.at);
      return 1;
    },
    close() { return Promise.resolve(); },
  },
};
const M = modes[MODE];

for (let i = 0; i < N; i += 100) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + 100); j++) {
    const me = { ch: j % C, seen: new Set(), last: 0, dup: 0, disorder: 0, polls: 0, sentAt: 0 };
    viewers.push(me);
    batch.push(M.open(me));
  }
  await Promise.all(batch);
}

async function loop(me) {
  let first = true;
  while (!stopping) {
    if (first) { started++; first = false; }
    polls++;
    me.polls++;
    me.sentAt = Date.now();
    let n;
    try {
      n = await M.poll(me);
    } catch (e) {
      if (stopping) return;
      // a kept socket the server closed as it was reused: again, at once
      if (e.code === 'ECONNRESET' || /socket hang up/.test(e.message)) { reconnects++; continue; }
      failed(String(e.message));
      await sleep(100);
      continue;
    }
    if (n === null) await sleep(100);
    else if (n === 0) waitingAnswers++;
    else if (POLL_DELAY > 0) await sleep(POLL_DELAY);
  }
}
const loops = viewers.map(loop);
while (started < N && Date.now() - t0 < TIMEOUT_MS) await sleep(20);
await sleep(1000);        // every first GET has arrived and is waiting

// --- publish and deliver -----------------------------------------------------
const expectedPer = COUNT;              // per viewer
const expected = N * expectedPer;
const delivered = () => viewers.reduce((a, v) => a + v.seen.size, 0);
const pollsBefore = polls;
const cpu0 = cpuSnapshot();
const c0 = process.cpuUsage();
const pubStart = Date.now();
let pubCode = null, pubSaid = '';
let pubDone;
if (MODE === 'parley') {
  const pub = spawn(args.pub, [args.db, PREFIX, String(C), String(RATE * C), String(COUNT * C), String(SIZE)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  pub.stdout.on('data', (d) => { pubSaid += d; });
  pubDone = new Promise((res) => pub.on('exit', (code) => { pubCode = code; res(); }));
} else {
  // the same file as a separate process (below), like ws-pub for Parley
  const pub = spawn(process.execPath, [new URL(import.meta.url).pathname, '--nchan-pub', BASE.href,
    '--prefix', PREFIX, '--path-prefix', PATH_PREFIX, '--channels', String(C), '--rate', String(RATE), '--count', String(COUNT),
    '--size', String(SIZE)], { stdio: ['ignore', 'pipe', 'inherit'] });
  pub.stdout.on('data', (d) => { pubSaid += d; });
  pubDone = new Promise((res) => pub.on('exit', (code) => { pubCode = code; res(); }));
}
const deadline = pubStart + (COUNT / RATE) * 1000 + 15000;
while (delivered() < expected && Date.now() < deadline && Date.now() - t0 < TIMEOUT_MS) {
  if (pubCode !== null && pubCode !== 0) break;
  await sleep(20);
}
const windowMs = Date.now() - pubStart;
const cpu = cpuDelta(cpu0, cpuSnapshot());
const cDel = process.cpuUsage(c0);
const pollsWindow = polls - pollsBefore;
await Promise.race([pubDone, sleep(3000)]);
const errorsSeen = errors;
stopping = true;
// Sessions deleted: their waiting GETs answer at once and free what they hold.
const delAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });
await Promise.race([Promise.allSettled(viewers.map((v) => M.close(v, delAgent))), sleep(5000)]);
agent.destroy();
delAgent.destroy();
await Promise.race([Promise.allSettled(loops), sleep(1000)]);

const got = delivered();
const dup = viewers.reduce((a, v) => a + v.dup, 0);
const disorder = viewers.reduce((a, v) => a + v.disorder, 0);
const lost = expected - got;
for (const v of viewers.filter((x) => x.seen.size < expectedPer).slice(0, 3))
  note(`viewer on channel ${v.ch}: ${v.seen.size}/${expectedPer} events, ${v.polls} polls, ` +
       `current poll sent ${Date.now() - v.sentAt} ms ago`);
lat.sort((x, y) => x - y);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : NaN);
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');
const us = (s) => (got ? ((s * 1e6) / got).toFixed(1) : '–');
const split = Object.entries(cpu.by).filter(([, s]) => Math.abs(s) >= 0.005).sort((a, b) => b[1] - a[1])
  .map(([k, s]) => `${k} ${s.toFixed(2)} s (${us(s)} µs/event)`).join(', ');
note(`${args.label || MODE}: publisher exit ${pubCode} (${pubSaid.trim()}); ${got}/${expected} in ` +
     `${(windowMs / 1000).toFixed(1)} s; ${pollsWindow} polls in the window (${(got / Math.max(1, pollsWindow)).toFixed(2)} ` +
     `events per poll), ${waitingAnswers} answers with nothing new; server CPU by program: ${split || 'none'}; ` +
     `this client ${((cDel.user + cDel.system) / 1e6).toFixed(2)} s; out of order ${disorder}; reconnects ${reconnects}; ` +
     `errors ${errorsSeen}${firstErrors.length ? ': ' + firstErrors.join(' | ') : ''}`);
console.log(`| ${args.label || MODE} | ${V} × ${C} | ${RATE}/s × ${COUNT} per channel | ${expected} / ${got} | ` +
  `${lost} | ${dup} | ${f2(pct(50))} | ${f2(pct(99))} | ${f2(lat[lat.length - 1])} | ` +
  `${cpu.all.toFixed(2)} | ${us(cpu.all)} |`);
process.exit(lost === 0 && dup === 0 && errorsSeen === 0 && pubCode === 0 ? 0 : 1);
