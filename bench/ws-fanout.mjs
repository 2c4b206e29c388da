// ws-fanout.mjs — fan-out through parley-ws, or through Nchan for
// comparison: C channels, S WebSocket subscribers on each, messages
// published at a fixed rate; reports frames delivered per second and the
// append -> receive latency (p50, p99, max) over every frame.
//
//   node bench/ws-fanout.mjs --server parley|nchan [--channels 1] [--subs 1000]
//        [--rate 50] [--count 250] [--size 64] [--threads 2] [--bin build/parley-ws]
//        [--label NAME]   (the first column; default the server's name)
//        [--bridge-preload SO]  LD_PRELOAD for the bridge(s) only: an
//                         experiment, e.g. build/bench/nagle.so (bench/preload/
//                         nagle.c: the bridge's sockets keep Nagle on, as
//                         Nchan's WebSocket subscribers do)
//        [--db URI]       parley: PARLEY_DB for the bridge(s) and ws-pub (a PostgreSQL
//                         connection string or a SQLite path; default a fresh SQLite
//                         file in a temporary directory)
//        [--bridges N]    parley: N parley-ws processes ("nodes", each its own
//                         PARLEY_NODE_PREFIX) on that database; every channel's
//                         subscribers are split evenly between them (subscriber s
//                         of a channel on bridge s mod N). Default 1.
//        [--db-pid PID]   also measure this process and its children (the
//                         postmaster and its backends) over the same window
//        [--details FILE] append one Markdown bullet per run to FILE: the CPU per
//                         frame of each bridge (and of --db-pid)
//
// Parley: the bridge follows ticket channels (subscribers open
// /api/websocket/chat/<id>?after=0&seq=1); the publisher is
// build/bench/ws-pub, which appends "token" events to the event log like a
// generation does, so each message travels append -> doorbell -> watcher ->
// shared log read -> per-connection frame -> socket. On PostgreSQL the
// doorbell is LISTEN/NOTIFY: each append NOTIFYs in its transaction, and
// every bridge's listening connection wakes its watcher, so with
// --bridges 2 each append is read by both nodes and each frame leaves the
// node its subscriber is connected to.
// Nchan: nginx with libnginx-mod-nchan started on loopback with a temporary
// config (one worker per core); the publisher POSTs to /pub/<id> over
// keep-alive HTTP, subscribers use /sub/<id> over WebSocket. The published
// body is the same JSON Parley sends, so frames are the same size.
// Subscribers are spread over --threads worker threads. Prints one row of
// a Markdown table; its last column is the server's CPU time (user +
// system, the bridge(s) summed, or nginx with its workers) per frame
// delivered, which is steadier than rates on a shared machine (PostgreSQL's
// own backends are not in it). Bounded by count/rate + 30 s, plus the
// bridges' start (at most 15 s).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';

const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

// ------------------------------------------------------------ subscriber thread
if (!isMainThread) {
  const { urls } = workerData;
  const lat = [];
  let received = 0;
  let last = 0;
  const socks = [];
  let opened = 0;
  for (const url of urls) {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => { if (++opened === urls.length) parentPort.postMessage({ opened }); });
    ws.on('message', (data) => {
      const t = nowUs();
      let m;
      try {
        m = JSON.parse(data.toString());
      } catch (e) {
        parentPort.postMessage({ error: `bad frame: ${e.message}: ${JSON.stringify(data.toString())}` });
        return;
      }
      const ts = parseInt(m.content, 10);
      if (ts > 0) lat.push(t - ts);
      received++;
      last = t;
    });
    ws.on('error', (e) => parentPort.postMessage({ error: e.message }));
    socks.push(ws);
  }
  parentPort.on('message', (msg) => {
    if (msg === 'report') {
      parentPort.postMessage({ received, last, lat: Float64Array.from(lat) });
    } else if (msg === 'close') {
      for (const ws of socks) ws.terminate();
      parentPort.postMessage({ closed: true });
    }
  });
} else {
  await main();
}

// CPU seconds used so far by pid and its children (nginx workers).
function cpuSeconds(pid) {
  const hz = 100;
  let pids = [pid];
  try {
    pids = pids.concat(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)
      .filter(Boolean).map(Number));
  } catch { /* no children file */ }
  let ticks = 0;
  for (const p of pids) {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      ticks += Number(f[11]) + Number(f[12]);            // utime + stime
    } catch { /* gone */ }
  }
  return ticks / hz;
}

async function freePort() {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  return port;
}

async function main() {
  const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
    (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
  const server = args.server || 'parley';
  const C = Number(args.channels || 1), S = Number(args.subs || 1000);
  const RATE = Number(args.rate || 50), COUNT = Number(args.count || 250);
  const SIZE = Number(args.size || 64), THREADS = Number(args.threads || 2);
  const build = process.env.BUILD || 'build';
  const BIN = args.bin || join(build, 'parley-ws');
  const NB = Number(args.bridges || 1);
  if (!(NB >= 1 && NB <= 8) || !(C >= 1) || !(S >= 1)) {
    console.error('ws-fanout: --bridges must be 1..8, --channels and --subs at least 1');
    process.exit(2);
  }
  if (server !== 'parley' && (args.db || NB !== 1)) {
    console.error('ws-fanout: --db and --bridges are for --server parley');
    process.exit(2);
  }
  const dir = mkdtempSync(join(tmpdir(), `ws-fanout-${server}-`));
  // unique per run: a shared PostgreSQL database keeps earlier runs' channels
  const prefix = `f${Date.now().toString(36)}${process.pid.toString(36)}x`;
  const DB = args.db || join(dir, 'p.db');
  const children = [];
  let port;
  let ports = [];
  let subUrl;

  if (server === 'parley') {
    for (let b = 0; b < NB; b++) {
      const portFile = join(dir, `port${b}`);
      const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--stats-file', '-'], {
        env: { ...process.env, PARLEY_DB: DB, PARLEY_NODE_PREFIX: join(dir, `node${b}`),
          ...(args['bridge-preload'] ? { LD_PRELOAD: args['bridge-preload'] } : {}),
          WEBSOCKET_MAX_CONNECTIONS: String(C * S + 100),
          WEBSOCKET_TIMEOUT: '3600', OLLAMA_SERVER: 'http://127.0.0.1:9' },
        stdio: ['ignore', 'ignore', process.env.FANOUT_STDERR ? 'inherit' : 'ignore'],
      });
      children.push(child);
      let exited = null;
      child.on('exit', (code, sig) => { exited = sig || code; });
      // one bridge at a time: the first runs the migrations of a new database
      const until = Date.now() + 15000;
      while (!existsSync(portFile) && exited === null && Date.now() < until) await sleep(10);
      if (!existsSync(portFile)) {
        console.error(`ws-fanout: parley-ws ${b} did not start (${exited === null ? 'no port file after 15 s'
          : `exited: ${exited}`}; FANOUT_STDERR=1 shows its log)`);
        for (const ch of children) ch.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
        process.exit(1);
      }
      ports.push(Number(readFileSync(portFile, 'utf8')));
    }
    port = ports[0];
    subUrl = (c, s) => `ws://127.0.0.1:${ports[s % NB]}/api/websocket/chat/${prefix}${c}?after=0&seq=1`;
  } else {
    port = await freePort();
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'nginx.conf'), `
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location ~ ^/pub/(\\w+)$ { nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 64; }
    location ~ ^/sub/(\\w+)$ { nchan_subscriber websocket; nchan_channel_id $1; }
  }
}
`);
    children.push(spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;'],
      { stdio: ['ignore', 'ignore', 'inherit'] }));
    for (let i = 0; i < 200; i++) {
      try { await fetch(`http://127.0.0.1:${port}/`); break; } catch { await sleep(25); }
    }
    subUrl = (c) => `ws://127.0.0.1:${port}/sub/${prefix}${c}`;
  }

  // subscribers, spread over threads
  const urls = [];
  for (let c = 0; c < C; c++) for (let s = 0; s < S; s++) urls.push(subUrl(c, s));
  const workers = [];
  for (let t = 0; t < THREADS; t++) {
    const mine = urls.filter((_, i) => i % THREADS === t);
    const w = new Worker(new URL(import.meta.url), { workerData: { urls: mine } });
    workers.push(w);
  }
  await Promise.all(workers.map((w) => new Promise((res, rej) => {
    w.on('message', (m) => { if (m.opened) res(); if (m.error) rej(new Error(m.error)); });
  })));
  for (const w of workers) w.on('message', (m) => { if (m.error) console.error(m.error); });
  await sleep(1500);                    // every subscriber registered its channel

  // publish
  const serverCpu = () => children.reduce((a, ch) => a + cpuSeconds(ch.pid), 0);
  const cpu0 = serverCpu();
  const cpuEach0 = children.map((ch) => cpuSeconds(ch.pid));
  const db0 = args['db-pid'] ? cpuSeconds(Number(args['db-pid'])) : 0;
  const t0 = nowUs();
  let pubSaid = '';
  if (server === 'parley') {
    // DB "-": ws-pub reads PARLEY_DB, so a password stays off its command line
    const pub = spawn(join(build, 'bench', 'ws-pub'),
      ['-', prefix, String(C), String(RATE), String(COUNT), String(SIZE)],
      { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, PARLEY_DB: DB } });
    pub.stdout.on('data', (d) => { pubSaid += d; });
    const [code] = await once(pub, 'exit');
    if (code !== 0) console.error(`ws-fanout: ws-pub exited with status ${code}`);
  } else {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    const start = performance.now();
    const pending = [];
    for (let i = 0; i < COUNT; i++) {
      const due = start + (i * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      // the same JSON Parley's ticket protocol sends, same size
      const ts = `${Math.round(nowUs())} `;
      const content = ts + 'x'.repeat(Math.max(0, SIZE - ts.length));
      const body = JSON.stringify({ type: 'stream', content, seq: i + 1 });
      pending.push(new Promise((res) => {
        const req = http.request({ host: '127.0.0.1', port, path: `/pub/${prefix}${i % C}`,
          method: 'POST', agent, headers: { 'content-type': 'application/json' } },
        (r) => { r.resume(); r.on('end', res); });
        req.on('error', res);
        req.end(body);
      }));
    }
    await Promise.all(pending);
    agent.destroy();
  }

  // collect
  const expected = COUNT * S;
  const deadline = Date.now() + 30000;
  let reports;
  for (;;) {
    reports = await Promise.all(workers.map((w) => new Promise((res) => {
      const on = (m) => { if ('received' in m) { w.off('message', on); res(m); } };
      w.on('message', on);
      w.postMessage('report');
    })));
    const got = reports.reduce((a, r) => a + r.received, 0);
    if (got >= expected || Date.now() > deadline) break;
    await sleep(200);
  }
  const got = reports.reduce((a, r) => a + r.received, 0);
  const cpu = serverCpu() - cpu0;
  const bridgeCpu = children.map((ch, b) => cpuSeconds(ch.pid) - cpuEach0[b]);
  const dbCpu = args['db-pid'] ? cpuSeconds(Number(args['db-pid'])) - db0 : NaN;
  const last = Math.max(...reports.map((r) => r.last));
  const lat = Float64Array.from(reports.flatMap((r) => Array.from(r.lat))).sort();
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] / 1000 : NaN);
  const secs = (last - t0) / 1e6;
  console.log(`| ${args.label || server} | ${C} × ${S} | ${RATE}/s × ${COUNT} | ${SIZE} B | ${got}/${expected} | ` +
    `${Math.round(got / secs)} | ${pct(0.5).toFixed(2)} ms | ${pct(0.99).toFixed(2)} ms | ` +
    `${(lat.length ? lat[lat.length - 1] / 1000 : NaN).toFixed(1)} ms | ` +
    `${((cpu * 1e6) / Math.max(1, got)).toFixed(1)} µs |`);
  if (args.details) {
    const per = (x) => `${((x * 1e6) / Math.max(1, got)).toFixed(1)} µs`;
    appendFileSync(args.details, `- ${args.label || server}, ${C} × ${S}, ${RATE}/s × ${COUNT}: ` +
      (server === 'parley' ? `CPU per frame of each bridge ${bridgeCpu.map(per).join(' + ')}` : `server ${per(cpu)}`) +
      (args['db-pid'] ? `; PostgreSQL (postmaster and every backend) ${per(dbCpu)}, ` +
        `${((dbCpu * 1e6) / COUNT).toFixed(0)} µs per message` : '') +
      (pubSaid.trim() ? `; ws-pub: ${pubSaid.trim()}` : '') + '\n');
  }

  if (server === 'parley' && process.env.FANOUT_STDERR) {
    for (const p of ports) {
      const m = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
      console.error(`bridge on port ${p}:\n` +
        m.split('\n').filter((l) => /errors_total\{|closes_total\{reason="slow/.test(l)).join('\n'));
    }
  }
  for (const w of workers) w.postMessage('close');
  await sleep(200);
  for (const w of workers) await w.terminate();
  for (const ch of children) {
    if (ch.exitCode === null && ch.signalCode === null) {
      ch.kill('SIGTERM');
      await once(ch, 'exit');
    }
  }
  rmSync(dir, { recursive: true, force: true });
  process.exit(got >= expected ? 0 : 1);
}
