#!/usr/bin/env node
// streams-box.mjs — the load client, the stamped simulated LLM and the
// report of bench/streams-box.sh (issue 14 target 5: streams per box).
//
//   node bench/streams-box.mjs llm --port-file FILE
//       The simulated LLM (tests/fake-llm/server.mjs's FakeLLM, unchanged,
//       the same wire formats) in this process, plus a log: the time of
//       every write of a streamed answer (CLOCK_MONOTONIC, the clock
//       process.hrtime() reads in every process of the box) and the text of
//       the token it carried, keyed by the stream id found in the request
//       body. GET /_bench/times?prefix=P hands over (and forgets) the log of
//       the streams whose id starts with P.
//
//   node bench/streams-box.mjs run --setup NAME --kind ws|sse --base URL \
//        --llm URL [--parley-sessions] --server-pids "PID..." \
//        [--aux-pids "name=PID ..."] [--steps "50 100 ..."] [--tokens 150] \
//        [--token-ms 50] [--first-ms 100] [--ramp-ms 2000] [--p99-ms 50] \
//        [--warmup 20] [--retry 0] [--out FILE]
//       --retry K: a step that misses is run again, up to K more times
//       (every attempt is reported; the knee counts a step that held once).
//       First an unreported warm-up step of --warmup streams (JIT, pools).
//       For each step N (ascending; stops after the first step that misses):
//       N generations, one viewer each, started evenly over --ramp-ms (so
//       their tokens do not all fall on the same instants), each a unique
//       question (no cache hit) whose answer is --tokens tokens every
//       --token-ms ms. ws: seed 000 (GET /api/websocket/chat/{id}, send
//       {"ticketBody"}, "stream" frames until "done"); sse: seed 004
//       (POST /api/chat/send {"conversationId","content"}, "data:" events
//       until the response ends or a {"done"} event; --parley-sessions
//       first creates each conversation with POST /api/chat/sessions
//       {"kind":"sse"}, outside the measured window).
//       Token delivery latency: for every token the LLM sent, the time the
//       viewer received the frame completing it minus the time the LLM
//       wrote it, both on CLOCK_MONOTONIC. Server CPU: utime + stime of
//       --server-pids (/proc/PID/stat) over the step; memory: the sum of
//       their VmRSS when all N stream (the middle of the step) minus the
//       same sum before the first step, / N. The aux pids (the simulated
//       LLM) and this client's own CPU are reported beside. One JSON line
//       per step to --out (and stdout).
//
//   node bench/streams-box.mjs table FILE...
//       The Markdown table of the steps in the files.
//
// Loopback only; every wait is bounded.
import http from 'node:http';
import { readFileSync, renameSync, writeFileSync, appendFileSync, readlinkSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const args = process.argv.slice(2);
const MODE = args[0];
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};

// ---------------------------------------------------------------- llm ----
async function llmMain() {
  const { FakeLLM } = await import('../tests/fake-llm/server.mjs');
  const fake = new FakeLLM({});
  const ID_RE = /sb[0-9a-z]+x[0-9]+w?(?:r[0-9]+)?i[0-9]+/;
  const log = new Map();          // id -> { t: [ms], c: [chunk] }
  const orig = fake.handle.bind(fake);
  fake.handle = (req, res) => {
    if (req.url.startsWith('/_bench/times')) return Promise.resolve(dump(req, res));
    if (req.method === 'POST') {
      let head = '';
      let rec = null;
      req.on('data', (c) => { if (head.length < 65536) head += c.toString('utf8'); });
      req.on('end', () => {
        const m = ID_RE.exec(head);
        if (m && !log.has(m[0])) { rec = { arrive: nowMs(), t: [], c: [] }; log.set(m[0], rec); }
      });
      const write = res.write;
      res.write = function stamped(chunk, ...rest) {
        if (rec) { rec.t.push(nowMs()); rec.c.push(chunk); }
        return write.call(this, chunk, ...rest);
      };
    }
    return orig(req, res);
  };
  // The token text of one write: Ollama NDJSON (response / message.content)
  // or OpenAI SSE (choices[0].delta.content); '' for anything else.
  const tokenOf = (chunk) => {
    const s = String(chunk).trim();
    try {
      if (s.startsWith('data: ')) {
        const j = JSON.parse(s.slice(6));
        return j.choices?.[0]?.delta?.content ?? '';
      }
      const j = JSON.parse(s);
      return j.response ?? j.message?.content ?? '';
    } catch {
      return '';
    }
  };
  function dump(req, res) {
    const prefix = new URL(req.url, 'http://x').searchParams.get('prefix') || '';
    const out = {};
    for (const [id, rec] of log) {
      if (!id.startsWith(prefix)) continue;
      const t = [];
      const n = [];
      rec.c.forEach((c, k) => {
        const len = tokenOf(c).length;
        if (len > 0) { t.push(Math.round(rec.t[k] * 1000) / 1000); n.push(len); }
      });
      out[id] = { arrive: rec.arrive, t, n };
      log.delete(id);
    }
    const body = JSON.stringify(out);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }
  const port = await fake.listen(0, '127.0.0.1');
  const pf = opt('port-file', '');
  if (pf) {
    writeFileSync(`${pf}.tmp`, String(port));
    renameSync(`${pf}.tmp`, pf);
  }
  const stop = () => { fake.close().then(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---------------------------------------------------------------- run ----
const CLK_TCK = 100;
const NCPU = (await import('node:os')).availableParallelism();
function procCpuMs(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}
function procRssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}
function boxBusy() {        // [busy, total, irq + softirq] jiffies of the whole machine
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const idle = f[3] + (f[4] || 0);
  const total = f.reduce((a, b) => a + b, 0);
  return [total - idle, total, (f[5] || 0) + (f[6] || 0)];
}
const pct = (sorted, p) => (sorted.length
  ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] : null);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const noKeep = new http.Agent({ keepAlive: false });
function getJSON(url, init = {}) {
  return new Promise((resolve, reject) => {
    const body = init.body ? Buffer.from(init.body) : null;
    const req = http.request(url, {
      method: init.method || 'GET', agent: noKeep,
      headers: body ? { 'Content-Type': 'application/json', 'Content-Length': body.length } : {},
      timeout: 60000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try { resolve({ status: res.statusCode, json: JSON.parse(text) }); } catch { resolve({ status: res.statusCode, text }); }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

async function runMain() {
  const SETUP = opt('setup', '?');
  const KIND = opt('kind', 'ws');
  const BASE = opt('base', '');
  const LLM = opt('llm', '');
  const PARLEY_SESSIONS = args.includes('--parley-sessions');
  const SERVER_PIDS = opt('server-pids', '').split(/\s+/).filter(Boolean).map(Number);
  const AUX = Object.fromEntries(opt('aux-pids', '').split(/\s+/).filter(Boolean).map((kv) => {
    const [k, v] = kv.split('=');
    return [k, Number(v)];
  }));
  const STEPS = opt('steps', '50 100 200 400 800 1600').split(/\s+/).filter(Boolean).map(Number);
  const TOKENS = Number(opt('tokens', 150));
  const TOKEN_MS = Number(opt('token-ms', 50));
  const FIRST_MS = Number(opt('first-ms', 100));
  const RAMP_MS = Number(opt('ramp-ms', 2000));
  const P99_MS = Number(opt('p99-ms', 50));
  const OUT = opt('out', '');
  const ALL = args.includes('--all');
  if (!BASE || !LLM || !SERVER_PIDS.length || !['ws', 'sse'].includes(KIND)) {
    console.error('usage: streams-box.mjs run --setup NAME --kind ws|sse --base URL --llm URL --server-pids "PID..."');
    process.exit(2);
  }
  const names = SERVER_PIDS.map((p) => { try { return readlinkSync(`/proc/${p}/exe`).split('/').pop(); } catch { return '?'; } });
  const run = randomUUID().replace(/-/g, '').slice(0, 8);
  const rssIdle = SERVER_PIDS.reduce((a, p) => a + procRssKb(p), 0);

  const WARMUP = Number(opt('warmup', 20));
  const plan = [...(WARMUP > 0 ? [[WARMUP, true]] : []), ...STEPS.map((n) => [n, false])];
  const RETRY = Number(opt('retry', 0));
  let again = 0;
  for (let pi = 0; pi < plan.length; pi++) {
    const [N, warm] = plan[pi];
    const prefix = `sb${run}x${N}${warm ? 'w' : ''}${again ? `r${again}` : ''}i`;
    // One connection per SSE stream, closed with it: a kept-alive socket of
    // the step before may be closed by the server's idle timeout (lighttpd
    // and node: 5 s) just as it is reused, a reset that is not the server's
    // fault.
    const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
    const streams = Array.from({ length: N }, (_, i) => ({
      id: `${prefix}${i}`, cum: [], at: [], len: 0, done: false, fail: '', conv: randomUUID(),
    }));
    if (KIND === 'sse' && PARLEY_SESSIONS) {
      // the conversations, before the measured window, 32 requests at a time
      for (let i = 0; i < N; i += 32) {
        await Promise.all(streams.slice(i, i + 32).map(async (s) => {
          const r = await getJSON(`${BASE}/api/chat/sessions`, { method: 'POST', body: JSON.stringify({ kind: 'sse' }) })
            .catch((e) => ({ status: 0, text: e.message }));
          if (r.status === 200 || r.status === 201) s.conv = r.json.id;
          else s.fail = `session: HTTP ${r.status} ${(r.text || JSON.stringify(r.json)).slice(0, 80)}`;
        }));
      }
    }
    await sleep(500);
    const cpu0 = SERVER_PIDS.map(procCpuMs);
    const aux0 = Object.fromEntries(Object.entries(AUX).map(([k, p]) => [k, procCpuMs(p)]));
    const me0 = process.cpuUsage();
    const box0 = boxBusy();
    const t0 = nowMs();
    const question = (s) => `Ticket ${s.id}: the customer cannot log in after the update, what should we check? ` +
      `[[fake tokens=${TOKENS} token_ms=${TOKEN_MS} first_ms=${FIRST_MS}]]`;
    let ended = 0;
    let allEnded;
    const allDone = new Promise((r) => { allEnded = r; });
    const finish = (s, why) => {
      if (s.finished) return;
      s.finished = true;
      if (why && !s.fail) s.fail = why;
      if (++ended === N) allEnded();
    };
    const got = (s, content) => {
      s.len += content.length;
      s.cum.push(s.len);
      s.at.push(nowMs());
    };
    const startWs = (s) => {
      const ws = new WebSocket(`${BASE.replace(/^http/, 'ws')}/api/websocket/chat/${s.id}`, { perMessageDeflate: false });
      s.ws = ws;
      ws.on('open', () => { s.sentAt = nowMs(); ws.send(JSON.stringify({ ticketBody: question(s) })); });
      ws.on('message', (raw) => {
        let m;
        try { m = JSON.parse(raw.toString()); } catch { finish(s, 'bad frame'); return; }
        if (m.type === 'stream') got(s, m.content);
        else if (m.type === 'done') { s.done = true; ws.close(); finish(s); }
        else if (m.type === 'error') finish(s, `error frame: ${m.message}`);
      });
      ws.on('close', (code) => finish(s, s.done ? '' : `closed ${code}`));
      ws.on('error', (e) => finish(s, `ws: ${e.message}`));
      ws.on('unexpected-response', (q, r) => finish(s, `HTTP ${r.statusCode}`));
    };
    const startSse = (s) => {
      const body = Buffer.from(JSON.stringify({ conversationId: s.conv, content: question(s) }));
      const req = http.request(`${BASE}/api/chat/send`, {
        method: 'POST', agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': body.length, Accept: 'text/event-stream' },
      }, (res) => {
        if (res.statusCode !== 200) { res.resume(); finish(s, `HTTP ${res.statusCode}`); return; }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (d) => {
          buf += d;
          let k;
          while ((k = buf.indexOf('\n\n')) >= 0) {
            const ev = buf.slice(0, k);
            buf = buf.slice(k + 2);
            for (const line of ev.split('\n')) {
              if (!line.startsWith('data: ')) continue;
              let m;
              try { m = JSON.parse(line.slice(6)); } catch { finish(s, 'bad event'); return; }
              if (m.error) finish(s, `error event: ${m.error}`);
              else if (m.content) got(s, m.content);
              if (m.done && !m.error) s.done = true;
            }
          }
        });
        res.on('end', () => { s.done = true; finish(s); });
        res.on('error', (e) => finish(s, `sse: ${e.message}`));
      });
      s.req = req;
      s.sentAt = nowMs();
      req.on('error', (e) => finish(s, `sse: ${e.message}`));
      req.end(body);
    };
    streams.forEach((s, i) => {
      if (s.fail) { finish(s); return; }
      setTimeout(() => (KIND === 'ws' ? startWs(s) : startSse(s)), (RAMP_MS * i) / N);
    });
    // memory when all N stream: the middle of the full-overlap window
    const streamMs = FIRST_MS + TOKENS * TOKEN_MS;
    let rssMid = null;
    const midTimer = setTimeout(() => {
      rssMid = SERVER_PIDS.reduce((a, p) => a + procRssKb(p), 0);
    }, (RAMP_MS + streamMs) / 2);
    const deadline = RAMP_MS + streamMs + 20000;
    const timedOut = await Promise.race([allDone.then(() => false), sleep(deadline).then(() => true)]);
    clearTimeout(midTimer);
    const t1 = nowMs();
    const cpu1 = SERVER_PIDS.map(procCpuMs);
    const aux1 = Object.fromEntries(Object.entries(AUX).map(([k, p]) => [k, procCpuMs(p)]));
    const me1 = process.cpuUsage(me0);
    const box1 = boxBusy();
    if (timedOut) for (const s of streams) finish(s, 'no end before the deadline');
    for (const s of streams) { if (s.ws) s.ws.terminate(); if (s.req && !s.done) s.req.destroy(); }

    // the LLM's send times, token by token
    const times = (await getJSON(`${LLM}/_bench/times?prefix=${prefix}`)).json || {};
    const lat = [];
    const firstAdded = [];          // (upstream request − viewer request) + token 0's latency
    let sent = 0;
    let delivered = 0;
    let complete = 0;
    const fails = {};
    for (const s of streams) {
      if (!s.fail && s.done) complete++;
      if (s.fail) { const k = s.fail.replace(/[0-9a-f-]{36}|sb\w+/g, '…').slice(0, 60); fails[k] = (fails[k] || 0) + 1; }
      const rec = times[s.id];
      if (!rec) continue;
      sent += rec.t.length;
      let end = 0;
      let j = 0;
      for (let k = 0; k < rec.t.length; k++) {
        end += rec.n[k];
        while (j < s.cum.length && s.cum[j] < end) j++;
        if (j >= s.cum.length) break;
        delivered++;
        lat.push(s.at[j] - rec.t[k]);
        if (k === 0 && s.sentAt) firstAdded.push(rec.arrive - s.sentAt + s.at[j] - rec.t[k]);
      }
    }
    lat.sort((a, b) => a - b);
    firstAdded.sort((a, b) => a - b);
    const r1 = (x) => (x === null ? null : Math.round(x * 10) / 10);
    const serverCpuMs = cpu1.reduce((a, v, k) => a + v - cpu0[k], 0);
    const row = {
      setup: SETUP, kind: KIND, n: N, tokens_per_stream: TOKENS, token_ms: TOKEN_MS,
      complete, failed: N - complete, fails,
      tokens_expected: N * TOKENS, tokens_sent: sent, tokens_delivered: delivered,
      p50_ms: r1(pct(lat, 50)), p99_ms: r1(pct(lat, 99)), max_ms: r1(lat.length ? lat[lat.length - 1] : null),
      first_added_p50_ms: r1(pct(firstAdded, 50)), first_added_p99_ms: r1(pct(firstAdded, 99)),
      wall_s: Math.round((t1 - t0) / 100) / 10,
      server: Object.fromEntries(SERVER_PIDS.map((p, k) => [`${names[k]}[${p}]`, Math.round(cpu1[k] - cpu0[k])])),
      server_cpu_ms: Math.round(serverCpuMs),
      server_us_per_token: delivered ? Math.round((serverCpuMs * 1000) / delivered) : null,
      aux_cpu_ms: Object.fromEntries(Object.keys(AUX).map((k) => [k, Math.round(aux1[k] - aux0[k])])),
      client_cpu_ms: Math.round((me1.user + me1.system) / 1000),
      box_busy_pct: Math.round(((box1[0] - box0[0]) * 100) / Math.max(1, box1[1] - box0[1])),
      // interrupts (loopback packets are mostly softirq work of this benchmark)
      irq_pct: Math.round(((box1[2] - box0[2]) * 100) / Math.max(1, box1[1] - box0[1])),
      // the CPU of everything else on the machine (other users' work) in % of the box
      others_pct: Math.max(0, Math.round(((box1[0] - box0[0] - (box1[2] - box0[2])) * 100) / Math.max(1, box1[1] - box0[1]) -
        ((serverCpuMs + Object.keys(AUX).reduce((a, k) => a + aux1[k] - aux0[k], 0) + (me1.user + me1.system) / 1000) * 100) /
        ((t1 - t0) * NCPU))),
      rss_idle_kb: rssIdle, rss_mid_kb: rssMid,
      rss_per_stream_kb: rssMid === null ? null : Math.round(((rssMid - rssIdle) / N) * 10) / 10,
    };
    row.ok = row.failed === 0 && delivered === N * TOKENS && row.p99_ms !== null && row.p99_ms <= P99_MS &&
      row.first_added_p99_ms !== null && row.first_added_p99_ms <= P99_MS;
    if (warm) {                     // JIT, pools, caches: not reported
      console.error(`# warm-up (${N} streams): ${JSON.stringify(row)}`);
      await sleep(1000);
      continue;
    }
    row.attempt = again + 1;
    const line = JSON.stringify(row);
    console.log(line);
    if (OUT) appendFileSync(OUT, `${line}\n`);
    agent.destroy();
    await sleep(2000);              // connections close, the servers settle
    if (!row.ok && again < RETRY) { again++; pi--; continue; }   // the same step once more
    again = 0;
    if (!row.ok && !ALL) break;
  }
  process.exit(0);
}

// -------------------------------------------------------------- table ----
function tableMain() {
  const rows = [];
  for (const f of args.slice(1)) {
    for (const l of readFileSync(f, 'utf8').split('\n')) {
      if (!l.trim()) continue;
      try { rows.push(JSON.parse(l)); } catch { /* a line that is not a step */ }
    }
  }
  const out = [];
  out.push('| setup | N streams | complete | tokens delivered / expected | p50 (ms) | p99 (ms) | max (ms) | first token added p50 / p99 (ms) | within target | server CPU (ms) | server CPU per delivered token (µs) | server RSS at N (MiB) | RSS per stream (KiB) | simulated LLM CPU (ms) | client CPU (ms) | box busy (%) | of which irq + softirq (%) | other processes on the box (%) |');
  out.push('|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    out.push(`| ${r.setup} | ${r.n}${r.attempt > 1 ? ` (again)` : ''} | ${r.complete} | ${r.tokens_delivered} / ${r.tokens_expected} | ${r.p50_ms ?? '-'} | ${r.p99_ms ?? '-'} | ${r.max_ms ?? '-'} | ${r.first_added_p50_ms ?? '-'} / ${r.first_added_p99_ms ?? '-'} | ${r.ok ? 'yes' : '**no**'} | ${r.server_cpu_ms} | ${r.server_us_per_token ?? '-'} | ${r.rss_mid_kb === null ? '-' : (r.rss_mid_kb / 1024).toFixed(1)} | ${r.rss_per_stream_kb ?? '-'} | ${r.aux_cpu_ms.llm ?? '-'} | ${r.client_cpu_ms} | ${r.box_busy_pct} | ${r.irq_pct ?? '-'} | ${r.others_pct ?? '-'} |`);
  }
  out.push('');
  // the knee of each setup: the largest N within the target
  const setups = [...new Set(rows.map((r) => r.setup))];
  out.push('| setup | knee: most streams within target (p99 ≤ 50 ms, first token added p99 ≤ 50 ms, every token delivered) | first step past it | server CPU per delivered token at the knee (µs) | RSS per stream at the knee (KiB) |');
  out.push('|---|---:|---|---:|---:|');
  for (const s of setups) {
    const rs = rows.filter((r) => r.setup === s);
    const good = rs.filter((r) => r.ok);
    const knee = good.length ? good[good.length - 1] : null;
    const last = rs[rs.length - 1];
    const past = last.ok ? null : last;      // the step that missed (its last attempt)
    const why = past ? `${past.n}: p99 ${past.p99_ms ?? '-'} ms, first token added p99 ${past.first_added_p99_ms ?? '-'} ms, ${past.tokens_delivered}/${past.tokens_expected} tokens, ${past.failed} failed${Object.keys(past.fails).length ? ` (${Object.entries(past.fails).map(([k, v]) => `${v}× ${k}`).join('; ')})` : ''}` : '(none: every step held)';
    out.push(`| ${s} | ${knee ? knee.n : '< ' + rs[0].n} | ${why} | ${knee?.server_us_per_token ?? '-'} | ${knee?.rss_per_stream_kb ?? '-'} |`);
  }
  console.log(out.join('\n'));
}

if (MODE === 'llm') await llmMain();
else if (MODE === 'run') await runMain();
else if (MODE === 'table') tableMain();
else {
  console.error('usage: streams-box.mjs llm|run|table ...');
  process.exit(2);
}
