// load.mjs — server CPU per delivered token and memory per stream of
// bench/resumable.sh: N chats started at once, each answer TOKENS tokens at
// one per TOKEN_MS, each read by its POST's client and, with --readers 2,
// also by a second tab that resumes it (GET …/stream) at its first token.
// Same client for both sides (plain fetch and an SSE parser: the client's own
// CPU is not counted and should stay small on a shared 2-core box).
//
//   node bench/resumable/load.mjs --side peer|parley --base URL [--token JWT]
//        --n 100 --tokens 100 --token-ms 50 --readers 1 --pids web:PID,app:PID,...
//
// CPU = utime + stime (/proc/PID/stat) of the listed server processes from
// just before the first POST to the end of the last stream; memory = the sum
// of their VmRSS, before and at its peak (sampled every 100 ms). One JSON line.
import { readFileSync } from 'node:fs';
import { answerText } from '../../tests/fake-llm/answer.mjs';

const arg = (n, d) => { const i = process.argv.indexOf(`--${n}`); return i > 0 ? process.argv[i + 1] : d; };
const SIDE = arg('side');
const BASE = arg('base');
const TOKEN = arg('token', '');
const N = Number(arg('n', '100'));
const TOKENS = Number(arg('tokens', '100'));
const TOKEN_MS = Number(arg('token-ms', '50'));
const READERS = Number(arg('readers', '1'));
const THREADS = arg('threads', '');   // parley.fcgi --threads (reported only)
const RUN = arg('run', `l${process.pid}`);
const PIDS = arg('pids', '').split(',').filter(Boolean).map((s) => { const [g, p] = s.split(':'); return { g, p: Number(p) }; });
const DEADLINE = TOKENS * TOKEN_MS + 60000;
const HZ = 100;   // sysconf(_SC_CLK_TCK) on Linux

const API = SIDE === 'parley' ? `${BASE}/api/ai-sdk/chat` : `${BASE}/api/chat`;
const auth = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
const now = () => performance.now();

function ticks(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch { return null; }
}
function rssKb(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m);
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}
const rssSum = () => PIDS.reduce((a, { p }) => a + rssKb(p), 0);

// Reads an SSE response of the UI message stream: the joined text deltas,
// their count, whether it ended with finish + [DONE].
async function readStream(res, t0, firstCb) {
  const dec = new TextDecoder();
  let buf = '';
  let text = '';
  let n = 0;
  let finished = false;
  let done = false;
  let tFirst = null;
  for await (const b of res.body) {
    buf += dec.decode(b, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of ev.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const d = line.slice(6);
        if (d === '[DONE]') { done = true; continue; }
        const j = JSON.parse(d);
        if (j.type === 'text-delta') {
          if (tFirst === null) { tFirst = now() - t0; if (firstCb) firstCb(); }
          text += j.delta; n++;
        } else if (j.type === 'finish') finished = true;
      }
    }
  }
  return { text, n, ok: finished && done, tFirst };
}

async function oneChat(i) {
  const chatId = `load-${SIDE}-${RUN}-${i}`;
  const q = `load ${RUN} ${i} [[fake tokens=${TOKENS} token_ms=${TOKEN_MS}]]`;
  const expected = answerText(q, TOKENS);
  const t0 = now();
  const body = JSON.stringify({ id: chatId, trigger: 'submit-message', messageId: undefined,
    messages: [{ id: `u-${RUN}-${i}`, role: 'user', parts: [{ type: 'text', text: q }] }] });
  const results = [];
  let second = null;
  const startSecond = () => {
    if (READERS < 2) return;
    second = (async () => {
      const t1 = now();
      const r = await fetch(`${API}/${chatId}/stream`, { headers: auth, signal: AbortSignal.timeout(DEADLINE) });
      if (r.status !== 200) return { text: '', n: 0, ok: false, status: r.status };
      return readStream(r, t1);
    })().catch((e) => ({ text: '', n: 0, ok: false, error: e.message }));
  };
  try {
    const r = await fetch(API, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body,
      signal: AbortSignal.timeout(DEADLINE) });
    if (r.status !== 200) results.push({ text: '', n: 0, ok: false, status: r.status, body: (await r.text()).slice(0, 100) });
    else results.push(await readStream(r, t0, startSecond));
  } catch (e) { results.push({ text: '', n: 0, ok: false, error: e.message }); }
  if (second) results.push(await second);
  return results.map((r) => ({ ...r, exact: r.text === expected }));
}

// Warm-up (not measured): WARMUP (default N) short answers at once (5
// tokens, 20 ms apart), so that neither side is measured while it starts
// (Node's JIT, parley.fcgi's threads and their SQLite connections).
const WARMUP = Number(arg('warmup', String(N)));
async function warm(i) {
  const q = `warm ${RUN} ${i} [[fake tokens=5 token_ms=20]]`;
  const r = await fetch(API, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ id: `warm-${SIDE}-${RUN}-${i}`, trigger: 'submit-message',
      messages: [{ id: `w-${RUN}-${i}`, role: 'user', parts: [{ type: 'text', text: q }] }] }) });
  const x = await readStream(r, now());
  if (x.text !== answerText(q, 5)) throw new Error(`warm-up answer ${i} differs: ${JSON.stringify(x).slice(0, 200)}`);
}
await Promise.all(Array.from({ length: WARMUP }, (_, i) => warm(i)));
await new Promise((r) => setTimeout(r, 1000));

const before = PIDS.map(({ g, p }) => ({ g, p, t: ticks(p) }));
const rss0 = rssSum();
let rssPeak = rss0;
const sampler = setInterval(() => { const s = rssSum(); if (s > rssPeak) rssPeak = s; }, 100);
const t0 = now();
const all = (await Promise.all(Array.from({ length: N }, (_, i) => oneChat(i)))).flat();
const wall = now() - t0;
clearInterval(sampler);
const after = PIDS.map(({ p }) => ticks(p));
const cpu = {};
before.forEach(({ g, t }, i) => {
  const d = (after[i] ?? t) - (t ?? 0);
  cpu[g] = (cpu[g] ?? 0) + d * 1000 / HZ;
});
const cpuMs = Object.values(cpu).reduce((a, b) => a + b, 0);
const tokens = all.reduce((a, r) => a + (r.exact ? TOKENS : 0), 0);
const deltas = all.reduce((a, r) => a + r.n, 0);
const firsts = all.filter((r) => r.tFirst != null).map((r) => r.tFirst).sort((a, b) => a - b);
const pct = (p) => firsts.length ? Math.round(firsts[Math.min(firsts.length - 1, Math.floor(p * firsts.length))]) : null;
const bad = all.filter((r) => !(r.ok && r.exact));
console.log(JSON.stringify({
  side: SIDE, n: N, readers: READERS, threads: THREADS || undefined, tokens_per_stream: TOKENS, token_ms: TOKEN_MS,
  streams_read: all.length, complete_exact: all.length - bad.length, failed: bad.length,
  failures: bad.slice(0, 3).map((r) => ({ status: r.status, error: r.error, body: r.body, n: r.n, ok: r.ok, exact: r.exact })),
  tokens_delivered: tokens, deltas_delivered: deltas, wall_s: +(wall / 1000).toFixed(2),
  cpu_ms: cpu, cpu_ms_total: cpuMs, cpu_us_per_token: tokens ? +(cpuMs * 1000 / tokens).toFixed(1) : null,
  rss_before_mb: +(rss0 / 1024).toFixed(1), rss_peak_mb: +(rssPeak / 1024).toFixed(1),
  rss_per_stream_kb: +((rssPeak - rss0) / N).toFixed(0),
  first_token_ms: { p50: pct(0.5), p99: pct(0.99), max: firsts.length ? Math.round(firsts.at(-1)) : null },
}));
