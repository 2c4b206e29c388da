// soak-report.mjs — the summary of bench/soak.sh: reads DIR/clients-*.json
// (bench/soak-clients.mjs's counters), DIR/samples.tsv (RSS, descriptors
// and threads of every server process: at start, every SOAK_SAMPLE_S
// seconds under load, at the end of the load and after it settled) and
// DIR/info.json (the database at the end, the run's settings), prints
// Markdown, and exits 1 when the verdict fails (bench/soak.sh's header
// lists the checks; the bounds come from SOAK_RSS_PCT, SOAK_RSS_SLACK_MB,
// SOAK_FD_SLACK, SOAK_WAL_MAX_MB).
//
//   node bench/soak-report.mjs DIR
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
const info = JSON.parse(readFileSync(join(dir, 'info.json'), 'utf8'));
const RSS_PCT = Number(process.env.SOAK_RSS_PCT || 20);
const RSS_SLACK_KB = Number(process.env.SOAK_RSS_SLACK_MB || 8) * 1024;
const FD_SLACK = Number(process.env.SOAK_FD_SLACK || 32);
const WAL_MAX = Number(process.env.SOAK_WAL_MAX_MB || 64) * 1024 * 1024;
const PG_WAL_MAX = 1100 * 1024 * 1024;
const fail = [];
const bump = (o, k) => { o[k] = (o[k] || 0) + 1; };
const fmtN = (n) => (n ?? 0).toLocaleString('en-US');
const mb = (kb) => (kb / 1024).toFixed(1);

// ---- clients
const kinds = {};
const files = readdirSync(dir).filter((f) => /^clients-.*\.json$/.test(f));
const finals = [];
for (const f of files) {
  const j = JSON.parse(readFileSync(join(dir, f), 'utf8'));
  finals.push(j.final);
  for (const [k, s] of Object.entries(j.kinds)) kinds[k] = s;
}
if (files.length < 4) fail.push(`${4 - files.length} client processes wrote no counters`);
if (finals.some((x) => !x)) fail.push('a client process did not write its final counters (killed?)');

const order = ['ws-ticket', 'ws-chat', 'ws-brand', 'poll-ticket', 'poll-chat', 'poll-brand', 'sse', 'phx-ws', 'phx-lp'];
const names = { 'ws-ticket': 'WebSocket, tickets (seed 000)', 'ws-chat': 'WebSocket, chats (seed 001)',
  'ws-brand': 'WebSocket, brand chats (seed 002)', 'poll-ticket': 'long-poll, tickets', 'poll-chat': 'long-poll, chats',
  'poll-brand': 'long-poll, brand chats', sse: 'SSE (seed 004)', 'phx-ws': 'Phoenix WebSocket (seed 003)',
  'phx-lp': 'Phoenix LongPoll (seed 003)' };
const T = { clients: 0, asked: 0, checked: 0, cached_checked: 0, viewers_checked: 0, wrong: 0, lost: 0, dup: 0, seq_dup: 0 };
const errs = {}, retries = {};
console.log('### Answers');
console.log();
console.log('| clients | n | questions | answers checked | + cached | + second viewers | wrong | chunks lost | chunks duplicated | seq repeated | errors | requests repeated | beyond the upstream p50 / p99 / max (ms) |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const k of order) {
  const s = kinds[k];
  const want = info.clients_expected[k] || 0;
  if (!s) { if (want) fail.push(`${k}: no counters`); continue; }
  for (const f of Object.keys(T)) T[f] += s[f] || 0;
  const ne = Object.values(s.errors).reduce((a, b) => a + b, 0);
  const nr = Object.values(s.retries).reduce((a, b) => a + b, 0);
  for (const [e, n] of Object.entries(s.errors)) errs[`${k}: ${e}`] = n;
  for (const [e, n] of Object.entries(s.retries)) retries[`${k}: ${e}`] = n;
  const ex = s.excess_ms;
  console.log(`| ${names[k]} | ${s.clients} | ${fmtN(s.asked)} | ${fmtN(s.checked)} | ${fmtN(s.cached_checked)} | ` +
    `${fmtN(s.viewers_checked)} | ${s.wrong} | ${s.lost} | ${s.dup} | ${s.seq_dup} | ${ne} | ${nr} | ` +
    `${ex.p50 ?? '-'} / ${ex.p99 ?? '-'} / ${ex.max ?? '-'} |`);
  if (want && s.checked === 0) fail.push(`${k}: no answer checked`);
  for (const w of s.wrong_samples || []) console.error(`wrong answer (${k}): ${JSON.stringify(w)}`);
}
const nErr = Object.values(errs).reduce((a, b) => a + b, 0);
const nRetry = Object.values(retries).reduce((a, b) => a + b, 0);
console.log(`| **all** | ${T.clients} | ${fmtN(T.asked)} | ${fmtN(T.checked)} | ${fmtN(T.cached_checked)} | ` +
  `${fmtN(T.viewers_checked)} | ${T.wrong} | ${T.lost} | ${T.dup} | ${T.seq_dup} | ${nErr} | ${nRetry} | |`);
console.log();
console.log('"Chunks" are the words of an answer: lost and duplicated come from a word-level longest common');
console.log('subsequence of the expected and the received text of every answer that ended (0 when they are');
console.log('equal). "Beyond the upstream": how much longer each answer took than first_ms + tokens × token_ms.');
console.log();
if (T.lost) fail.push(`${T.lost} chunks lost`);
if (T.dup) fail.push(`${T.dup} chunks duplicated`);
if (T.seq_dup) fail.push(`${T.seq_dup} frames repeated a seq`);
if (T.wrong) fail.push(`${T.wrong} answers differ from the simulated LLM's`);
if (nErr) fail.push(`${nErr} errors`);
if (nErr) {
  console.log('Errors by kind: ' + Object.entries(errs).map(([k, n]) => `${k} ×${n}`).join('; ') + '.');
  console.log();
}
if (nRetry) {
  console.log('Requests repeated as www/parley.js repeats them (not errors): ' +
    Object.entries(retries).map(([k, n]) => `${k} ×${n}`).join('; ') + '.');
  console.log();
}

// ---- processes
const rows = readFileSync(join(dir, 'samples.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => {
  const [t, phase, role, pid, rss, thr, fds, sock, file, other, cpu] = l.split('\t');
  return { t: +t, phase, role, pid: +pid, rss: +rss, thr: +thr, fds: +fds, sock: +sock, file: +file, other: +other, cpu: +cpu };
});
const procs = new Map();
for (const r of rows) {
  const key = `${r.role} ${r.pid}`;
  if (!procs.has(key)) procs.set(key, { role: r.role, pid: r.pid, s: [] });
  procs.get(key).s.push(r);
}
console.log('### Server processes');
console.log();
console.log('| process | pid | RSS start (MB) | after warm-up | peak | end of load | settled | growth after warm-up | open fds start / peak / settled | of which sockets (+ after the probe) | files | other | threads start / settled | CPU s |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|');
const startRoles = new Set(rows.filter((r) => r.phase === 'start').map((r) => `${r.role} ${r.pid}`));
for (const [key, p] of procs) {
  const s = p.s;
  if (p.role === 'clients') continue;
  const first = s[0];
  const warm = s.find((r) => r.t >= info.warmup_s && r.phase !== 'start') || s[s.length - 1];
  const loadEnd = s.filter((r) => r.phase === 'load' || r.phase === 'load-end').at(-1) || s[s.length - 1];
  const end = s.find((r) => r.phase === 'end') || s[s.length - 1];
  const peak = Math.max(...s.map((r) => r.rss));
  const peakFd = Math.max(...s.map((r) => r.fds));
  const growth = loadEnd.rss - warm.rss;
  console.log(`| ${p.role} | ${p.pid} | ${mb(first.rss)} | ${mb(warm.rss)} (${warm.t} s) | ${mb(peak)} | ${mb(loadEnd.rss)} | ` +
    `${mb(end.rss)} | ${growth >= 0 ? '+' : ''}${mb(growth)} MB (${(100 * growth / warm.rss).toFixed(1)} %) | ` +
    `${first.fds} / ${peakFd} / ${end.fds} | ${first.sock} / ${Math.max(...s.map((r) => r.sock))} / ${end.sock} ` +
    `(${s.find((r) => r.phase === 'probe')?.sock ?? '-'}) | ` +
    `${first.file} / ${Math.max(...s.map((r) => r.file))} / ${end.file} | ${first.other} / ${Math.max(...s.map((r) => r.other))} / ${end.other} | ` +
    `${first.thr} / ${end.thr} | ${((s[s.length - 1].cpu - first.cpu) / 100).toFixed(1)} |`);
  const key2 = p.role === 'bridge' || p.role === 'parley.fcgi';
  if (key2 && !startRoles.has(key)) fail.push(`${p.role} pid ${p.pid} appeared during the run (a restart?)`);
  if (key2 && startRoles.has(key) && !s.some((r) => r.phase === 'end')) fail.push(`${p.role} pid ${p.pid} was gone at the end`);
  if (key2 && loadEnd.rss > warm.rss * (1 + RSS_PCT / 100) + RSS_SLACK_KB) {
    fail.push(`${p.role} ${p.pid}: RSS grew from ${mb(warm.rss)} MB after the warm-up to ${mb(loadEnd.rss)} MB ` +
      `(bound ${RSS_PCT} % + ${RSS_SLACK_KB / 1024} MB)`);
  }
  // Settled, every client gone: its sockets and other descriptors are back
  // to the start's; regular files may add the database connections each
  // worker thread opens at its first request (the database and its WAL,
  // plus the shared -shm: at most 3 per thread).
  // Sockets: after the probe question, which lets libcurl close the idle
  // upstream connections its cache kept.
  const probe = s.find((r) => r.phase === 'probe');
  if (startRoles.has(key) && !probe) fail.push(`${p.role} ${p.pid} was gone after the probe question`);
  if (probe && probe.sock > first.sock + FD_SLACK) {
    fail.push(`${p.role} ${p.pid}: ${probe.sock} sockets open after the clients left and one more question, ${first.sock} at the start (slack ${FD_SLACK})`);
  }
  if (startRoles.has(key) && s.some((r) => r.phase === 'end')) {
    if (end.other > first.other + FD_SLACK) fail.push(`${p.role} ${p.pid}: ${end.other} pipes/eventfds/… open at the end, ${first.other} at the start (slack ${FD_SLACK})`);
    if (end.file > first.file + 3 * end.thr + FD_SLACK) {
      fail.push(`${p.role} ${p.pid}: ${end.file} files open at the end, ${first.file} at the start (bound: + 3 per thread + ${FD_SLACK})`);
    }
  }
}
const cl = [...procs.values()].filter((p) => p.role === 'clients');
if (cl.length) {
  console.log(`| the clients (${cl.length} node processes, the load generator) | | ` +
    `${mb(cl.reduce((a, p) => a + p.s[0].rss, 0))} | | ${mb(cl.reduce((a, p) => a + Math.max(...p.s.map((r) => r.rss)), 0))} | | | | | | | | | ` +
    `${(cl.reduce((a, p) => a + p.s[p.s.length - 1].cpu - p.s[0].cpu, 0) / 100).toFixed(1)} |`);
}
console.log();
console.log(`Samples every ${info.sample_s} s; warm-up ${info.warmup_s} s; the load ran ${info.load_s} s; "settled":`);
console.log('after the clients left and no job was running, plus 10 s. RSS over time (MB, each sample):');
console.log();
for (const [, p] of procs) {
  if (p.role !== 'bridge' && p.role !== 'parley.fcgi') continue;
  console.log(`- ${p.role} ${p.pid}: ${p.s.map((r) => `${r.t} s ${mb(r.rss)}`).join(', ')}`);
}
console.log();

// ---- sockets left
for (const [file, when] of [['sockets-end.txt', 'after the clients left'], ['sockets-probe.txt', 'after the probe question']]) {
  let left = '';
  try { left = readFileSync(join(dir, file), 'utf8').trim(); } catch { /* none */ }
  if (!left) continue;
  const by = {};
  for (const l of left.split('\n')) {
    const [pid, state, , peer] = l.split(' ');
    const role = [...procs.values()].find((p) => p.pid === +pid)?.role || pid;
    bump(by, `${role} ${pid} ${state}${peer.endsWith(`:${info.upstream_port}`) ? ' (to the upstream)' : ''}`);
  }
  console.log(`TCP sockets of the servers ${when} (by state): ` +
    Object.entries(by).map(([k, n]) => `${k} ×${n}`).join('; ') + '.');
  console.log();
}
let probe = null;
try { probe = JSON.parse(readFileSync(join(dir, 'probe.json'), 'utf8')); } catch { /* none */ }
const probeOk = probe && Object.values(probe.kinds).every((k) => k.checked > 0 && !Object.keys(k.errors).length && !k.wrong);
if (!probeOk) fail.push(`the probe question after the soak failed: ${JSON.stringify(probe?.kinds ?? null).slice(0, 300)}`);

// ---- database
console.log('### Database at the end');
console.log();
if (info.pg) {
  console.log(`- PostgreSQL pg_wal: ${(info.wal_bytes / 1048576).toFixed(1)} MB; database size ${(info.db_bytes / 1048576).toFixed(1)} MB`);
  if (info.wal_bytes > PG_WAL_MAX) fail.push(`pg_wal is ${(info.wal_bytes / 1048576).toFixed(0)} MB`);
} else {
  console.log(`- SQLite WAL (-wal file): ${(info.wal_bytes / 1048576).toFixed(1)} MB (bound ${WAL_MAX / 1048576} MB); ` +
    `database file ${(info.db_bytes / 1048576).toFixed(1)} MB; PRAGMA quick_check: ${info.integrity}`);
  let wal = [];
  try { wal = readFileSync(join(dir, 'wal.tsv'), 'utf8').trim().split('\n').map((l) => l.split('\t')); } catch { /* none */ }
  if (wal.length) console.log(`- WAL size over time (MB): ${wal.map(([t, , b]) => `${t} s ${(b / 1048576).toFixed(1)}`).join(', ')}`);
  if (info.wal_bytes > WAL_MAX) fail.push(`the WAL is ${(info.wal_bytes / 1048576).toFixed(1)} MB`);
  if (info.integrity !== 'ok') fail.push(`quick_check: ${info.integrity}`);
}
console.log(`- jobs left running: ${info.jobs_running}; long-poll sessions left: ${info.poll_sessions_left} ` +
  `(clients delete theirs; an abandoned one expires after PARLEY_POLL_IDLE); events kept: ${info.events_left}`);
if (info.jobs_running !== 0) fail.push(`${info.jobs_running} jobs left running`);
if (info.dead.trim()) fail.push(`server processes died: ${info.dead.trim()}`);
console.log();
console.log('### Verdict');
console.log();
if (fail.length) {
  console.log('**FAILED**:');
  for (const f of fail) console.log(`- ${f}`);
} else {
  console.log(`**passed**: ${fmtN(T.checked + T.cached_checked + T.viewers_checked)} answers checked, 0 chunks lost or ` +
    'duplicated, no error, RSS flat after the warm-up within the bound, descriptors back, no job left running.');
}
process.exit(fail.length ? 1 : 0);
