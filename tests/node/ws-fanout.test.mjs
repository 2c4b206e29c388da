// ws-fanout.test.mjs — parley-ws fan-out: a channel pump formats an event
// once for every follower whose adapter output is the same and shares the
// frame; the service thread writes several queued frames at once. These
// tests check what a client sees does not change: every follower gets
// every frame exactly once, in order, byte for byte what its own
// parameters ask for (two classes on one channel: with and without "seq"),
// a resumed follower gets exactly what it missed, and a follower that stops
// reading lags (flow control) without losing, duplicating or reordering
// anything and without holding the others up.
//
//   node --test --test-reporter=tap tests/node/ws-fanout.test.mjs
//
// Events are appended like a generation does by ${BUILD:-build}/bench/ws-pub
// (evlog_append + doorbell); the tests are skipped when it is not built.
// Under SANITIZE=address,undefined the bridge's stderr is checked for
// sanitizer reports.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD = join(ROOT, process.env.BUILD || 'build');
const BIN = join(BUILD, 'parley-ws');
const PUB = join(BUILD, 'bench', 'ws-pub');
const SANITIZED = existsSync(BIN) && readFileSync(BIN).includes('__asan_init');
const SLOW = SANITIZED ? 3 : 1;
const SKIP = process.env.WS_BRIDGE_URL ? 'needs a bridge of its own (external mode)'
  : !existsSync(PUB) ? `${PUB} not built` : false;
let uniq = 0;
const tid = () => `fan${process.pid}x${Date.now().toString(36)}x${++uniq}`;

async function startBridge() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-ws-fanout-'));
  const portFile = join(dir, 'port');
  const child = spawn(BIN, ['--listen', '127.0.0.1:0', '--port-file', portFile, '--drain', '2',
    '--stats-file', '-'], {
    env: {
      PATH: process.env.PATH, PARLEY_DB: join(dir, 'parley.db'), OLLAMA_SERVER: 'http://127.0.0.1:9',
      WEBSOCKET_MAX_CONNECTIONS: '1000', WEBSOCKET_TIMEOUT: '600',
      PARLEY_WS_VERIFY_SHARED: '1',      // every shared frame checked against per-connection formatting
      ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1',
      UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || 'print_stacktrace=1',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = once(child, 'exit');
  for (let i = 0; i < 500 && !existsSync(portFile); i++) {
    if (child.exitCode !== null) break;
    await sleep(10);
  }
  assert.ok(existsSync(portFile), `parley-ws did not start: ${stderr}`);
  const port = Number(readFileSync(portFile, 'utf8'));
  return {
    db: join(dir, 'parley.db'),
    url: (path) => `ws://127.0.0.1:${port}${path}`,
    http: (path) => `http://127.0.0.1:${port}${path}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const [code] = await exited;
      rmSync(dir, { recursive: true, force: true });
      assert.doesNotMatch(stderr, /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:/,
        'sanitizer report in the bridge log');
      return code;
    },
  };
}

// A follower keeping every frame's raw text.
function follow(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const raw = [];
    ws.on('message', (d) => raw.push(d.toString()));
    ws.on('error', reject);
    ws.on('open', () => resolve({
      ws, raw,
      async until(n, ms = 20000 * SLOW) {
        const t0 = Date.now();
        while (raw.length < n) {
          if (Date.now() - t0 > ms) throw new Error(`timeout: ${raw.length}/${n} frames`);
          await sleep(20);
        }
      },
    }));
  });
}

// Appends count "token" events to ticket:<prefix>0 at rate/s (bench/ws-pub:
// each text is "<µs timestamp> xxx…", size bytes).
async function publish(db, prefix, rate, count, size = 48) {
  const p = spawn(PUB, [db, prefix, '1', String(rate), String(count), String(size)],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const [code] = await once(p, 'exit');
  assert.equal(code, 0, 'ws-pub failed');
}

// The frames of a ticket stream from seq `from` (1-based) for one class.
function checkStream(raw, count, withSeq, from = 1) {
  assert.equal(raw.length, count - from + 1, 'frame count');
  let prevTs = 0;
  raw.forEach((text, i) => {
    const m = JSON.parse(text);
    assert.equal(m.type, 'stream');
    const ts = parseInt(m.content, 10);
    assert.ok(ts >= prevTs, 'frames in publish order');
    prevTs = ts;
    if (withSeq) {
      assert.equal(m.seq, from + i, 'seq: no loss, duplicate or reorder');
      assert.equal(text, JSON.stringify({ type: 'stream', content: m.content, seq: from + i }));
    } else {
      assert.equal(m.seq, undefined);
      assert.equal(text, JSON.stringify({ type: 'stream', content: m.content }));
    }
  });
}

describe('fan-out', { skip: SKIP, timeout: 240000 * SLOW }, () => {
  test('one channel, two classes of followers: each gets every frame once, in order, identical within its class', async () => {
    const b = await startBridge();
    try {
      const prefix = tid(), id = `${prefix}0`;
      const seqd = await Promise.all(Array.from({ length: 40 },
        () => follow(b.url(`/api/websocket/chat/${id}?after=0&seq=1`))));
      const plain = await Promise.all(Array.from({ length: 10 },
        () => follow(b.url(`/api/websocket/chat/${id}?after=0`))));
      await sleep(300);
      const COUNT = 400;
      await publish(b.db, prefix, 2000, COUNT);
      await Promise.all([...seqd, ...plain].map((f) => f.until(COUNT)));
      await sleep(200);                                   // nothing more arrives
      checkStream(seqd[0].raw, COUNT, true);
      checkStream(plain[0].raw, COUNT, false);
      for (const f of seqd) assert.deepEqual(f.raw, seqd[0].raw);
      for (const f of plain) assert.deepEqual(f.raw, plain[0].raw);
      // the two classes carry the same events
      plain[0].raw.forEach((t, i) =>
        assert.equal(JSON.parse(t).content, JSON.parse(seqd[0].raw[i]).content));

      // a follower resuming from seq 250 gets exactly 251..COUNT
      const late = await follow(b.url(`/api/websocket/chat/${id}?after=250&seq=1`));
      await late.until(COUNT - 250);
      await sleep(200);
      checkStream(late.raw, COUNT, true, 251);
      assert.deepEqual(late.raw, seqd[0].raw.slice(250));
      for (const f of [...seqd, ...plain, late]) f.ws.close();
    } finally {
      assert.equal(await b.stop(), 0);
    }
  });

  test('a follower that stops reading lags and catches up without loss; the others are not held up', async () => {
    const b = await startBridge();
    try {
      const prefix = tid(), id = `${prefix}0`;
      const fast = await Promise.all(Array.from({ length: 20 },
        () => follow(b.url(`/api/websocket/chat/${id}?after=0&seq=1`))));
      const slow = await follow(b.url(`/api/websocket/chat/${id}?after=0&seq=1`));
      await sleep(300);
      slow.ws._socket.pause();                            // stop reading
      const COUNT = 3000;                 // 6 MB: far more than its queue and socket hold
      await publish(b.db, prefix, 5000, COUNT, 2000);
      await Promise.all(fast.map((f) => f.until(COUNT)));
      for (const f of fast) checkStream(f.raw, COUNT, true);
      assert.ok(slow.raw.length < COUNT, 'the paused follower is behind');
      slow.ws._socket.resume();
      await slow.until(COUNT);
      await sleep(200);
      checkStream(slow.raw, COUNT, true);
      assert.deepEqual(slow.raw, fast[0].raw);
      const m = await (await fetch(b.http('/metrics'))).text();
      assert.match(m, /parley_ws_closes_total\{reason="slow_consumer"\} 0/);
      assert.match(m, new RegExp(`parley_ws_messages_sent_total ${21 * COUNT}\\b`));
      for (const f of [...fast, slow]) f.ws.close();
    } finally {
      assert.equal(await b.stop(), 0);
    }
  });
});
