// readonly-ws.mjs — COUNT seed 000 generations at once over WebSocket, for
// t0515-readonly.sh (issue 8 defect a: a read-only spell of the database).
//
//   node readonly-ws.mjs WS_BASE PREFIX COUNT --expect done|read-only
//        [--slow] [--chmod-0444-after-first-token PATH]
//
// Opens WS_BASE/api/websocket/chat/PREFIX-<i> for i = 1..COUNT together,
// sends each a ticket body and waits for the outcome: "done" (a stream
// ended, or a cached answer), or the text of an "error" message. Prints
// one line per outcome kind. Exits 0 when every connection ended as
// expected: --expect done, every one done; --expect read-only, every one
// got an error saying the database is read-only (not a generic database
// error, not "generation interrupted"). A connection still open after 60 s
// counts as "no outcome" (a safety net, not a timing assertion).
// --slow asks the simulated LLM for 40 tokens 25 ms apart; with
// --chmod-0444-after-first-token PATH, once every connection has its first
// token, PATH is made read-only (the spell begins while they stream).
import { chmodSync } from 'node:fs';
import WebSocket from 'ws';

const [base, prefix, countArg] = process.argv.slice(2);
const arg = (name) => {
  const k = process.argv.indexOf(name);
  return k > 0 ? process.argv[k + 1] : undefined;
};
const expect = arg('--expect') ?? 'done';
const chmodPath = arg('--chmod-0444-after-first-token');
const slow = process.argv.includes('--slow') ? ' [[fake tokens=40 token_ms=25]]' : '';
const count = Number(countArg);
let streaming = 0;
const firstToken = () => {
  if (++streaming === count && chmodPath) {
    chmodSync(chmodPath, 0o444);
    console.log(`${chmodPath} made read-only while ${count} generations stream`);
  }
};

function one(n) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${base}/api/websocket/chat/${prefix}-${n}`);
    let settled = false;
    const end = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(() => end('no outcome within 60 s'), 60000);
    let seen = false;
    ws.on('open', () => ws.send(JSON.stringify({ ticketBody: `read-only spell test ${prefix} ${n}${slow}` })));
    ws.on('message', (raw) => {
      let m;
      try { m = JSON.parse(raw.toString()); } catch { return end(`not JSON: ${raw}`); }
      if (m.type === 'stream' && !seen) {
        seen = true;
        firstToken();
      }
      if (m.type === 'done') end('done');
      else if (m.type === 'error') end(`error: ${m.message}`);
    });
    ws.on('close', (code) => end(`closed (${code}) before an outcome`));
    ws.on('error', (e) => end(`socket error: ${e.message}`));
  });
}

const outcomes = await Promise.all(Array.from({ length: count }, (_, k) => one(k + 1)));
const tally = {};
for (const o of outcomes) tally[o] = (tally[o] ?? 0) + 1;
for (const [o, n] of Object.entries(tally)) console.log(`${n} x ${o}`);
const good = (o) => (expect === 'done' ? o === 'done' : /^error: .*read-only/i.test(o));
process.exit(outcomes.every(good) ? 0 : 1);
