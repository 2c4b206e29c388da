// longpoll-latency.mjs — long-poll delivery latency and idle waiters' CPU,
// for bench/longpoll-bench.sh.
//
//   node bench/longpoll-latency.mjs --base http://127.0.0.1:PORT --db PATH --pub build/bench/ws-pub
//        [--clients 200] [--channels 1] [--count 100] [--rate 20] [--size 32] [--idle 5]
//        [--app-pids "1 2"] [--server-pids "3 4"] [--label TEXT] [--timeout 60]
//
// 1. Opens --clients long-poll sessions (POST /api/poll/open) on --channels
//    ticket channels (client i follows channel i mod channels: 1 = every
//    client on one ticket, the fan-out; = clients: each its own ticket, a
//    help desk), /api/websocket/chat/<ticket>?after=0 (seed 000, following the
//    channel's events from seq 0), and starts one poll loop per session:
//    GET /api/poll/{sid}?cursor=N&wait=25, again as soon as the answer is in.
//    Node's http with a keep-alive agent, one socket per client.
// 2. Idle: once every client has sent its first GET, waits 1 s, then measures
//    for --idle seconds, with nothing appended, the CPU time and the
//    voluntary context switches (wake-ups) of the app's and the web server's
//    processes, all threads (/proc/PID/task/TID/schedstat and status).
// 3. Delivery: runs the publisher (bench/ws-pub.c: evlog_append of --count
//    "token" events at --rate per second in all, round-robin over the
//    channels, each text starting
//    with the wall-clock time of the append in µs) and records, for every
//    frame every client receives, receive time minus that time.
// Prints one Markdown table row (the columns of longpoll-bench.sh's header),
// and details as "#" lines on stderr. Bounded by --timeout seconds.

import http from 'node:http';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const BASE = new URL(args.base || 'http://127.0.0.1:8080');
const CLIENTS = Number(args.clients || 200);
const CHANNELS = Math.max(1, Math.min(Number(args.channels || 1), CLIENTS));
const COUNT = Number(args.count || 100);
const RATE = Number(args.rate || 20);
const SIZE = Number(args.size || 32);
const IDLE_S = Number(args.idle || 5);
const TIMEOUT_MS = Number(args.timeout || 60) * 1000;
const pids = (s) => String(s || '').split(/\s+/).filter(Boolean).map(Number);
const APP = pids(args['app-pids']);
const SERVER = pids(args['server-pids']);
const PREFIX = `lp${Date.now().toString(36)}x`;
// ws-pub's channels: ticket:PREFIX0 ... ticket:PREFIX<CHANNELS-1>; event i
// goes to channel i mod CHANNELS, so channel k gets this many:
const perChannel = (k) => Math.floor(COUNT / CHANNELS) + (k < COUNT % CHANNELS ? 1 : 0);
const t0 = Date.now();
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const note = (s) => process.stderr.write(`# ${s}\n`);

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

function request(method, path, body, via = agent) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const req = http.request({
      host: BASE.hostname, port: BASE.port, method, path, agent: via,
      headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString(), at: nowUs() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// CPU time (ns) and voluntary context switches of every thread of the pids.
function usage(list) {
  let ns = 0, wakes = 0, threads = 0;
  for (const pid of list) {
    let tids = [];
    try { tids = readdirSync(`/proc/${pid}/task`); } catch { continue; }
    for (const tid of tids) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
        const m = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8').match(/^voluntary_ctxt_switches:\s+(\d+)/m);
        wakes += m ? Number(m[1]) : 0;
        threads++;
      } catch { /* thread ended */ }
    }
  }
  return { ns, wakes, threads };
}
const diff = (a, b) => ({ ms: (b.ns - a.ns) / 1e6, wakes: b.wakes - a.wakes, threads: b.threads });

// --- sessions ---------------------------------------------------------------
const sids = [];
for (let i = 0; i < CLIENTS; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(CLIENTS, i + 50); j++)
    batch.push(request('POST', '/api/poll/open', { path: `/api/websocket/chat/${PREFIX}${j % CHANNELS}?after=0` }));
  for (const r of await Promise.all(batch)) {
    if (r.status !== 200) throw new Error(`poll/open: HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    sids.push(JSON.parse(r.text).sid);
  }
}

const lat = [];              // ms, every frame every client received
let frames = 0, polls = 0, errors = 0, reconnects = 0, started = 0, stopping = false;
const firstErrors = [];

const clients = [];           // per client: frames, cursor, when its current poll was sent
async function loop(sid, idx) {
  let cursor = 0, first = true;
  const me = { sid, frames: 0, cursor: 0, sentAt: 0, polls: 0, want: perChannel(idx % CHANNELS) };
  clients.push(me);
  while (!stopping) {
    if (first) { started++; first = false; }
    let r;
    try {
      polls++;
      me.polls++;
      me.sentAt = Date.now();
      r = await request('GET', `/api/poll/${sid}?cursor=${cursor}&wait=25`);
      if (stopping) return;
    } catch (e) {
      if (stopping) return;
      // A keep-alive socket the server closed as we reused it (Apache's
      // MaxKeepAliveRequests 100): poll again at once on a new one.
      if (e.code === 'ECONNRESET' || /socket hang up/.test(e.message)) { reconnects++; continue; }
      errors++;
      if (firstErrors.length < 3) firstErrors.push(String(e.message));
      await sleep(100);
      continue;
    }
    if (r.status !== 200) {
      errors++;
      if (firstErrors.length < 3) firstErrors.push(`HTTP ${r.status}: ${r.text.slice(0, 120)}`);
      await sleep(100);
      continue;
    }
    const o = JSON.parse(r.text);
    for (const m of o.messages) {
      const f = typeof m === 'string' ? JSON.parse(m) : m;
      if (f.type !== 'stream') continue;
      const sent = Number(String(f.content).split(' ')[0]);
      lat.push((r.at - sent) / 1000);
      frames++;
      me.frames++;
    }
    cursor = o.cursor;
    me.cursor = cursor;
  }
}

const loops = sids.map((sid, i) => loop(sid, i));
while (started < CLIENTS && Date.now() - t0 < TIMEOUT_MS) await sleep(20);
await sleep(1000);          // every first GET has pumped and gone to sleep

// --- idle -------------------------------------------------------------------
const pollsBefore = polls;
const a0 = usage(APP), s0 = usage(SERVER), c0 = process.cpuUsage();
await sleep(IDLE_S * 1000);
const idleApp = diff(a0, usage(APP)), idleSrv = diff(s0, usage(SERVER));
const cIdle = process.cpuUsage(c0);
const idlePolls = polls - pollsBefore;
note(`idle ${IDLE_S} s, ${CLIENTS} waiting on ${CHANNELS} channel(s): app ${idleApp.ms.toFixed(3)} ms CPU, ${idleApp.wakes} wake-ups ` +
     `(${idleApp.threads} threads); server ${idleSrv.ms.toFixed(3)} ms, ${idleSrv.wakes} wake-ups; ` +
     `client ${((cIdle.user + cIdle.system) / 1000).toFixed(1)} ms; new polls ${idlePolls}`);

// --- delivery ---------------------------------------------------------------
let expected = 0;
for (let i = 0; i < CLIENTS; i++) expected += perChannel(i % CHANNELS);
const a1 = usage(APP), s1 = usage(SERVER), pollsBeforePub = polls, c1 = process.cpuUsage();
const pubStart = Date.now();
const pub = spawn(args.pub, [args.db, PREFIX, String(CHANNELS), String(RATE), String(COUNT), String(SIZE)],
  { stdio: ['ignore', 'pipe', 'inherit'] });
let pubOut = '';
pub.stdout.on('data', (d) => { pubOut += d; });
const pubDone = new Promise((res) => pub.on('exit', (code) => res(code)));
const deadline = Date.now() + Math.max(10000, (COUNT / RATE) * 1000 + 10000);
let pubCode = null;
pubDone.then((c) => { pubCode = c; });
while (frames < expected && Date.now() < deadline && Date.now() - t0 < TIMEOUT_MS) {
  if (pubCode !== null && pubCode !== 0) break;
  await sleep(20);
}
const deliverMs = Date.now() - pubStart;
const delApp = diff(a1, usage(APP)), delSrv = diff(s1, usage(SERVER));
const cDel = process.cpuUsage(c1);
const perFrame = (ms) => (frames ? `${((ms * 1000) / frames).toFixed(0)} µs/frame` : '–');
await Promise.race([pubDone, sleep(2000)]);
const errorsSeen = errors;
stopping = true;
// Delete the sessions: their waiting polls answer at once (410) and give
// their server threads back before the next run.
const delAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });
await Promise.race([Promise.allSettled(sids.map((sid) =>
  request('DELETE', `/api/poll/${sid}`, undefined, delAgent))), sleep(5000)]);
await Promise.race([Promise.allSettled(loops), sleep(2000)]);
agent.destroy();
delAgent.destroy();

for (const c of clients.filter((x) => x.frames < x.want).slice(0, 5))
  note(`client ${c.sid}: ${c.frames}/${c.want} frames, cursor ${c.cursor}, ${c.polls} polls, ` +
       `current poll sent ${Date.now() - c.sentAt} ms ago`);
lat.sort((x, y) => x - y);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : NaN);
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '–');
note(`delivery: publisher exit ${pubCode} (${pubOut.trim()}); ${frames}/${expected} frames in ` +
     `${(deliverMs / 1000).toFixed(1)} s; ${polls - pollsBeforePub} polls; CPU: app ${delApp.ms.toFixed(0)} ms ` +
     `(${perFrame(delApp.ms)}), web server ${delSrv.ms.toFixed(0)} ms (${perFrame(delSrv.ms)}), ` +
     `this client ${((cDel.user + cDel.system) / 1000).toFixed(0)} ms (${perFrame((cDel.user + cDel.system) / 1000)}); reconnects ${reconnects}; errors ${errorsSeen}${firstErrors.length ? ': ' + firstErrors.join(' | ') : ''}`);
// | setup | clients | channels | events | frames | p50 | p90 | p99 | max | app CPU during delivery | idle: app CPU | idle: app wake-ups | idle: server CPU | errors |
console.log(`| ${args.label || BASE.host} | ${CLIENTS} | ${CHANNELS} | ${COUNT} × ${RATE}/s | ${frames}/${expected} | ` +
  `${f2(pct(50))} | ${f2(pct(90))} | ${f2(pct(99))} | ${f2(lat[lat.length - 1])} | ` +
  `${(delApp.ms / 1000 / (deliverMs / 1000) * 100).toFixed(0)} % of a core, ` +
  `${frames ? ((delApp.ms * 1000) / frames).toFixed(0) : '–'} µs per frame | ` +
  `${idleApp.ms.toFixed(1)} ms | ${idleApp.wakes} | ${idleSrv.ms.toFixed(1)} ms | ${errorsSeen} |`);
process.exit(frames === expected && errorsSeen === 0 ? 0 : 1);
