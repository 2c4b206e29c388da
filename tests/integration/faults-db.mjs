// faults-db.mjs — the database part of the fault matrix (issue 13 item 2),
// one scenario per run, on one setup (lighttpd + parley.fcgi + parley-ws
// with the shipped apache-conf files; t0930-fault-db.sh / t0931-pg-fault-db.sh
// start them and run the scenarios of one script concurrently).
//
//   node faults-db.mjs readonly|locked|full|pg
//
// Environment: BASE (the web server), WS (ws://127.0.0.1:<bridge port>),
// FAKE (the simulated LLM, whose request log is the witness of upstream
// calls), DB (SQLite: the database file) or SIGDIR (pg: a directory for the
// hand-shake with the shell, which stops and starts PostgreSQL), AS_APP
// (the command prefix that runs a program as the app account, may be
// empty), LEASE_MS (the servers' PARLEY_LEASE_MS).
//
// Output: one line per check, "PASS <name>" or "FAIL <name>", each
// followed by "# " diagnostics; the script turns them into TAP. Every
// transport of faults-db-clients.mjs asks during the fault; each outcome must
// be the whole answer (compared with the simulated LLM's deterministic
// text) or an error with a code of docs/errors.md — never a hang. After the
// fault, for each transport: the same question again gives the whole answer,
// and when the first try did not end "done" the simulated LLM got a NEW
// request for it (no partial answer was cached); a new question ends done
// (the server serves others without a restart); /api/health says ok; no job
// is left running past its lease; the database is consistent (SQLite:
// PRAGMA integrity_check; PostgreSQL: the script's SQL).
//
// Scenarios:
//   readonly  (the transports t0515 does not cover) parley.db made 0444
//             while 5 generations stream — they end done; during the spell
//             new questions on Parley long-poll, Phoenix LongPoll and
//             WebSocket and the OpenAI API get database_readonly without an
//             upstream call, health 503 "read-only"; then 0644.
//   locked    another process holds BEGIN EXCLUSIVE on parley.db for 10 s
//             (the sqlite3 CLI, as the app account) while 6 generations
//             stream; 6 new questions start during it; health must answer
//             during it.
//   full      the database's file system (a small tmpfs) filled while 6
//             generations stream (they end interrupted or
//             database_readonly), then 6 new questions (database_readonly,
//             no upstream call), health 503; then the filler is removed.
//   In readonly and full, a long-poll client (Parley or Phoenix) may wait
//   through the fault (its session lives in the database: 503 "retry
//   later" / phoenix.js reconnecting) and is judged on what it gets after.
//   pg        PostgreSQL restarted (fast shutdown) while 6 generations
//             stream (they end interrupted or database_unavailable); then
//             stopped (new questions on every transport: database_unavailable
//             with no upstream call — a long-poll client may wait through
//             it and is judged after —, health 503 "unavailable"); then
//             started again (t0931-pg-fault-db.sh).
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, openSync, writeSync, closeSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { answerText } from '../fake-llm/answer.mjs';
import { holdLock } from './db-lock.mjs';
import { TRANSPORTS, DOCUMENTED_CODES, ask, firstModel, fakeRequests, health, show } from './faults-db-clients.mjs';

const scenario = process.argv[2];
const { BASE, WS, FAKE, DB, SIGDIR } = process.env;
const AS_APP = (process.env.AS_APP || '').split(' ').filter(Boolean);
const LEASE_MS = Number(process.env.LEASE_MS || 10000);
const env = { base: BASE, ws: WS, model: await firstModel(BASE), limitMs: 60000 };
let failed = 0;

function report(name, good, diags = []) {
  console.log(`${good ? 'PASS' : 'FAIL'} ${scenario}: ${name}`);
  for (const d of [diags].flat()) for (const l of String(d).split('\n')) console.log(`# ${l}`);
  if (!good) failed++;
}

// A question: unique tag, the simulated LLM's knobs, the expected answer.
function question(phase, transport, tokens, tokenMs) {
  const id = randomUUID();
  const tag = `fdb-${scenario}-${phase}-${transport}-${id.slice(0, 8)}`;
  const prompt = `Fault matrix ${tag} [[fake tokens=${tokens} token_ms=${tokenMs}]]`;
  return { id, tag, prompt, transport, want: answerText(prompt, tokens) };
}

// The outcome is the whole answer, or an error with a documented code
// (allowed: the codes this fault may give; null = any documented one).
function judge(q, o, allowed = null) {
  if (o.end === 'done') return o.text === q.want ? null : `done but the text differs (${o.text.length} of ${q.want.length} chars)`;
  if (o.end === 'hang') return o.message;
  if (!o.code || !DOCUMENTED_CODES.has(o.code)) return `error without a documented code (${o.code})`;
  if (allowed && !allowed.includes(o.code)) return `code ${o.code}, expected ${allowed.join(' or ')}`;
  return null;
}

// Asks each question at once; onAllStreaming runs once every one of them has
// streamed text (or ended).
async function askAll(qs, onAllStreaming) {
  let n = 0;
  const hit = () => { if (++n === qs.length && onAllStreaming) onAllStreaming(); };
  return Promise.all(qs.map((q) => ask(q, env, onAllStreaming ? hit : undefined)));
}

// The same, one promise per question (each resolves with its outcome).
function askEach(qs, onAllStreaming) {
  let n = 0;
  const hit = () => { if (++n === qs.length && onAllStreaming) onAllStreaming(); };
  return qs.map((q) => {
    q.held = new Promise((r) => { q.onBlocked = r; });
    return ask(q, env, onAllStreaming ? hit : undefined);
  });
}

// The long-poll transports keep their sessions in the database: while it
// cannot be written, a Parley long-poll GET is refused 503 database_readonly
// ("retry later": the client polls again) and a Phoenix LongPoll poll gets
// {"status":500} (phoenix.js reconnects, then rejoins: get_history or the
// question again, faults-db-clients.mjs). Such a client waits through the
// fault and resumes after it. So the fault ends once every client of the
// phase has an outcome or is waiting so (q.held); the outcomes are judged
// after it.
async function settledDuring(...lists) {
  await Promise.all(lists.flatMap(([qs, ps]) => ps.map((p, i) => Promise.race([p, qs[i].held]))));
}

// Resolves once cond() holds (checked every 20 ms), at most ms.
async function until(cond, ms) {
  for (const end = Date.now() + ms; !cond() && Date.now() < end;) await sleep(20);
}

// Reports each outcome of a phase.
function reportPhase(label, qs, outs, allowed) {
  for (let i = 0; i < qs.length; i++) {
    const why = judge(qs[i], outs[i], allowed);
    report(`${label}: ${qs[i].transport} ${why ? 'FAILED' : outs[i].end === 'done' ? 'got the whole answer' : `got ${outs[i].code}`}`,
      !why, [show(outs[i]), ...(why ? [why] : []), ...(outs[i].end === 'hang' ? outs[i].log : [])]);
  }
}

// After the fault: each question again gives the whole answer; when its
// first try did not end done, the upstream got a new request for it.
async function reask(label, qs, firstOuts) {
  const before = await Promise.all(qs.map((q) => fakeRequests(FAKE, q.tag)));
  const outs = await askAll(qs);
  const after = await Promise.all(qs.map((q) => fakeRequests(FAKE, q.tag)));
  for (let i = 0; i < qs.length; i++) {
    const o = outs[i];
    const fresh = after[i].length - before[i].length;
    const whole = o.end === 'done' && o.text === qs[i].want;
    const needFresh = firstOuts[i].end !== 'done';
    const good = whole && (!needFresh || fresh === 1);
    report(`${label}: ${qs[i].transport} the same question again: the whole answer` +
      (needFresh ? ', from a new upstream request (nothing partial cached)' : ''), good,
    [`first: ${show(firstOuts[i])}`, `again: ${show(o)}`, `upstream requests for it: ${before[i].length} before, ${after[i].length} after`]);
  }
}

// New questions on every transport end done with the whole answer.
async function othersServed(label) {
  const qs = TRANSPORTS.map((t) => question(`${label}-new`, t, 5, 5));
  const outs = await askAll(qs);
  for (let i = 0; i < qs.length; i++) {
    const good = outs[i].end === 'done' && outs[i].text === qs[i].want;
    report(`${label}: a new question on ${qs[i].transport} ends done, whole`, good, show(outs[i]));
  }
}

async function healthIs(label, http, database) {
  let h;
  for (let i = 0; i < 50; i++) {      // it may take a probe or two to see the change
    h = await health(BASE);
    if (h.http === http && h.json?.database === database) break;
    await sleep(100);
  }
  report(`${label}: /api/health ${http} database "${database}"`, h.http === http && h.json?.database === database,
    `HTTP ${h.http} ${h.text}`);
}

// ---- SQLite helpers

function sqlite(sql) {
  const [cmd, ...args] = AS_APP.length ? [...AS_APP, 'sqlite3'] : ['sqlite3'];
  return execFileSync(cmd, [...args, '-bail', DB, `.timeout 20000`, sql], { encoding: 'utf8', timeout: 30000 }).trim();
}

const STALE = `SELECT id, channel, state, lease_expires FROM jobs WHERE state = 'running' ` +
  `AND lease_expires < CAST(strftime('%s','now') AS INTEGER) * 1000`;

// `parley maintain` on the setup's database as the app account: the
// documented cron upkeep (docs/cli.md), which fails the jobs whose lease
// expired and nobody follows.
function maintain() {
  const [cmd, ...args] = AS_APP.length ? [...AS_APP, 'env'] : ['env'];
  return execFileSync(cmd, [...args, `PARLEY_DB=${DB}`, `PARLEY_CONFIG=${process.env.PARLEY_CONFIG || ''}`,
    process.env.PARLEY_CLI, 'maintain', '--json'], { encoding: 'utf8', timeout: 60000 }).trim();
}

async function sqliteAfter(label) {
  let ic;
  try { ic = sqlite('PRAGMA integrity_check'); } catch (e) { ic = `sqlite3 failed: ${e.message}`; }
  report(`${label}: PRAGMA integrity_check ok`, ic === 'ok', ic.slice(0, 500));
  // Wait out the leases of what the fault cut, then the cron upkeep.
  await sleep(LEASE_MS + 500);
  const before = sqlite(STALE);
  let m;
  try { m = maintain(); } catch (e) { m = `parley maintain failed: ${e.message}`; }
  const rows = sqlite(STALE);
  report(`${label}: no job left running past its lease (after parley maintain, the cron upkeep)`, rows === '',
    [`running past their lease before maintain (nobody followed them): ${before ? before.split('\n').length : 0}`, m, rows]);
  const stuck = sqlite(`SELECT count(*) FROM jobs WHERE state = 'running'`);
  report(`${label}: no job running once every client is done`, stuck === '0', `running: ${stuck}`);
  const partial = sqlite(`SELECT a.key FROM answers a WHERE NOT EXISTS ` +
    `(SELECT 1 FROM jobs j WHERE j.prompt_key = a.key AND j.state = 'done')`);
  report(`${label}: every cached answer belongs to a job that ended done`, partial === '', partial);
}

// The sqlite3 CLI holding BEGIN EXCLUSIVE on DB for ms, as the app account.
// Returns { taken (a promise: the lock is held), released (a promise of
// { heldMs, out }) }.
function holdLockFor(ms) {
  const lock = holdLock(DB, AS_APP);
  const released = lock.taken.then(async () => { await sleep(ms); return lock.release(); });
  return { taken: lock.taken, released };
}

// ---- scenarios

async function readonlyScenario() {
  const inflight = ['lp000', 'sse004', 'phxlp', 'phxws', 'openai'].map((t) => question('inflight', t, 40, 25));
  let spell = false;
  const ps1 = askEach(inflight, () => { chmodSync(DB, 0o444); spell = true; });
  await until(() => spell, 30000);
  chmodSync(DB, 0o444);

  const spellQs = ['lp000', 'phxlp', 'phxws', 'openai'].map((t) => question('spell', t, 5, 5));
  const ps2 = askEach(spellQs);
  await settledDuring([inflight, ps1], [spellQs, ps2]);
  await healthIs('during the spell', 503, 'read-only');

  chmodSync(DB, 0o644);
  const outs1 = await Promise.all(ps1);
  const outs2 = await Promise.all(ps2);
  reportPhase('a spell that begins while 5 generations stream', inflight, outs1, []);
  reportPhase('during the spell', spellQs, outs2, ['database_readonly']);
  const refused = spellQs.filter((_, i) => outs2[i].end === 'error');
  const calls = (await Promise.all(refused.map((q) => fakeRequests(FAKE, q.tag)))).map((r) => r.length);
  report('during the spell: no upstream call for the refused questions', refused.length > 0 && calls.every((n) => n === 0),
    `refused: ${refused.map((q) => q.transport)}; their upstream calls: ${calls}`);
  await healthIs('after', 200, 'ok');
  await reask('after', spellQs, outs2);
  await othersServed('after');
  await sqliteAfter('after');
}

async function lockedScenario() {
  const inflight = TRANSPORTS.map((t) => question('inflight', t, 40, 50));
  let lock = null;
  let newOuts = null;
  let h = null;
  const newQs = TRANSPORTS.map((t) => question('during', t, 10, 10));
  const during = [];
  const outs1 = await askAll(inflight, () => {
    lock = holdLockFor(10000);
    during.push(lock.taken.then(async () => {
      await sleep(1000);
      const hp = health(BASE);
      newOuts = await askAll(newQs);
      h = await hp;
    }));
  });
  await Promise.all(during);
  const held = await lock.released;
  report('the lock was held 10 s by another process', held.heldMs >= 10000, `held ${held.heldMs} ms ${held.out.trim()}`);
  reportPhase('6 generations streaming when the lock is taken', inflight, outs1);
  reportPhase('6 new questions while the database is locked', newQs, newOuts);
  report('while locked: /api/health answers (200 or 503, never a hang)', h.http === 200 || h.http === 503,
    `HTTP ${h.http} ${h.text}`);
  await healthIs('after', 200, 'ok');
  await reask('after (streaming ones)', inflight, outs1);
  await reask('after (new ones)', newQs, newOuts);
  await othersServed('after');
  await sqliteAfter('after');
}

// Fills the file system of DB (a small tmpfs) with FILL until ENOSPC.
function fill(path) {
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(64 * 1024, 0x55);
  let n = 0;
  try {
    for (;;) { writeSync(fd, buf); n += buf.length; }
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
    // the last partial block too
    for (let s = 32768; s >= 512; s /= 2) {
      try { for (;;) { writeSync(fd, buf.subarray(0, s)); n += s; } } catch { /* full */ }
    }
  } finally { closeSync(fd); }
  return n;
}

async function fullScenario() {
  const filler = join(process.env.FILL_DIR, 'filler');
  const inflight = TRANSPORTS.map((t) => question('inflight', t, 60, 30));
  let filled = 0;
  const ps1 = askEach(inflight, () => { filled = fill(filler); });
  await until(() => filled, 30000);
  if (!filled) filled = fill(filler);
  report('the file system was filled while 6 generations streamed', filled > 0, `${filled} bytes of filler`);
  await settledDuring([inflight, ps1]);
  const newQs = TRANSPORTS.map((t) => question('during', t, 60, 2));
  const ps2 = askEach(newQs);
  await settledDuring([newQs, ps2]);
  const h = await health(BASE);
  report('disk full: /api/health says the database cannot be written (503, not "ok")',
    h.http === 503 && h.json?.database !== 'ok', `HTTP ${h.http} ${h.text}`);
  unlinkSync(filler);
  const outs1 = await Promise.all(ps1);
  const newOuts = await Promise.all(ps2);
  // (what "cannot be written now" gives: the lease of what streamed ran
  // out, or a write refused; a client that waited gets the answer after)
  reportPhase('6 generations streaming when the disk fills', inflight, outs1, ['interrupted', 'database_readonly']);
  reportPhase('6 new questions while the disk is full', newQs, newOuts, ['database_readonly']);
  const refused = newQs.filter((_, i) => newOuts[i].end === 'error');
  const calls = (await Promise.all(refused.map((q) => fakeRequests(FAKE, q.tag)))).map((r) => r.length);
  report('disk full: no upstream call for the refused questions', refused.length > 0 && calls.every((n) => n === 0),
    `refused: ${refused.map((q) => q.transport)}; their upstream calls: ${calls}`);
  await healthIs('after', 200, 'ok');
  await reask('after (streaming ones)', inflight, outs1);
  await reask('after (new ones)', newQs, newOuts);
  await othersServed('after');
  await sqliteAfter('after');
}

// PostgreSQL: the shell restarts and stops it; hand-shake files in SIGDIR.
const mark = (name) => writeFileSync(join(SIGDIR, name), '');
async function waitMark(name, ms = 60000) {
  const until = Date.now() + ms;
  while (!existsSync(join(SIGDIR, name))) {
    if (Date.now() > until) throw new Error(`no ${name} from the script within ${ms / 1000} s`);
    await sleep(50);
  }
}

async function pgScenario() {
  const inflight = TRANSPORTS.map((t) => question('restart', t, 80, 40));
  const outs1 = await askAll(inflight, () => mark('streaming'));
  reportPhase('PostgreSQL restarted while 6 generations stream', inflight, outs1,
    ['database_unavailable', 'interrupted']);
  await waitMark('restarted');

  // While it is down, a long-poll client (its session lives in the
  // database) may wait through the outage (settledDuring) and is judged on
  // what it gets once PostgreSQL is back: the whole answer, or the code.
  mark('stop-now');
  await waitMark('down');
  const downQs = TRANSPORTS.map((t) => question('down', t, 5, 5));
  const psDown = askEach(downQs);
  const [, h] = await Promise.all([settledDuring([downQs, psDown]), health(BASE)]);
  report('PostgreSQL down: /api/health 503 database "unavailable"', h.http === 503 && h.json?.database === 'unavailable',
    `HTTP ${h.http} ${h.text}`);
  mark('start-now');
  await waitMark('up');
  const downOuts = await Promise.all(psDown);
  reportPhase('PostgreSQL down', downQs, downOuts, ['database_unavailable']);
  const refused = downQs.filter((_, i) => downOuts[i].end === 'error');
  const calls = (await Promise.all(refused.map((q) => fakeRequests(FAKE, q.tag)))).map((r) => r.length);
  report('PostgreSQL down: no upstream call for the refused questions', refused.length > 0 && calls.every((n) => n === 0),
    `refused: ${refused.map((q) => q.transport)}; their upstream calls: ${calls}`);
  await healthIs('after', 200, 'ok');
  await reask('after (the restart)', inflight, outs1);
  await reask('after (the outage)', downQs, downOuts);
  await othersServed('after');
}

const run = { readonly: readonlyScenario, locked: lockedScenario, full: fullScenario, pg: pgScenario }[scenario];
if (!run) { console.error('usage: faults-db.mjs readonly|locked|full|pg'); process.exit(2); }
try {
  await run();
} catch (e) {
  report('the scenario ran to its end', false, e.stack);
}
if (SIGDIR) mark('finished');
process.exit(failed ? 1 : 0);
