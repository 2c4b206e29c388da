// ws-idle.mjs — how much memory parley-ws holds per idle WebSocket.
//
//   node bench/ws-idle.mjs [--conns 10000] [--bin build/parley-ws] [--path /api/websocket/chat/]
//
// Starts the bridge on a free loopback port with a temporary database,
// reads its RSS (VmRSS) with no client, opens N connections (ticket
// protocol, each on its own ticket, then idle: no message sent), waits
// until the bridge reports them all in /metrics, reads RSS again, and
// prints one Markdown table row. Bounded: gives up after --timeout seconds.
// The file-descriptor limit must allow N sockets in this process and in the
// bridge (bench/ws-run.sh raises `ulimit -n`).

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) =>
  (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const N = Number(args.conns || 10000);
const BIN = args.bin || join(process.env.BUILD || 'build', 'parley-ws');
const PATH = args.path || '/api/websocket/chat/';
const TIMEOUT = Number(args.timeout || 120) * 1000;
const t0 = Date.now();

function rssKiB(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
  return Number(m[1]);
}

async function metric(port, name) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\d+)`, 'm'))?.[1] ?? NaN);
}

const dir = mkdtempSync(join(tmpdir(), 'parley-ws-idle-'));
const portFile = join(dir, 'port');
const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--stats-file', '-'], {
  env: { ...process.env, PARLEY_DB: join(dir, 'p.db'), WEBSOCKET_MAX_CONNECTIONS: String(N + 100),
    WEBSOCKET_TIMEOUT: '3600', OLLAMA_SERVER: 'http://127.0.0.1:9' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
const exited = once(child, 'exit');
while (!existsSync(portFile)) await sleep(10);
const port = Number(readFileSync(portFile, 'utf8'));
await sleep(300);
const base = rssKiB(child.pid);

const socks = [];
let failed = 0;
const BATCH = 500;
for (let i = 0; i < N && Date.now() - t0 < TIMEOUT; i += BATCH) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + BATCH); j++) {
    batch.push(new Promise((res) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${PATH}idle-${j}`, { perMessageDeflate: false });
      ws.on('open', () => { socks.push(ws); res(); });
      ws.on('error', () => { failed++; res(); });
    }));
  }
  await Promise.all(batch);
}
let open = 0;
for (let i = 0; i < 200 && Date.now() - t0 < TIMEOUT; i++) {
  open = await metric(port, 'parley_ws_connections');
  if (open >= socks.length) break;
  await sleep(50);
}
await sleep(1000);                       // let workers finish proto_open
const full = rssKiB(child.pid);
const per = ((full - base) * 1024) / Math.max(1, open);
console.log(`| ${N} | ${open} | ${failed} | ${(base / 1024).toFixed(1)} MiB | ` +
  `${(full / 1024).toFixed(1)} MiB | **${(per / 1024).toFixed(2)} KiB** | ${((Date.now() - t0) / 1000).toFixed(1)} s |`);
for (const ws of socks) ws.terminate();
child.kill('SIGTERM');
await exited;
rmSync(dir, { recursive: true, force: true });
process.exit(open >= N ? 0 : 1);
