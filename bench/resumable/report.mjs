// report.mjs — Markdown tables of bench/resumable.sh from the JSON lines of
// scenarios.mjs and load.mjs.
//
//   node bench/resumable/report.mjs scenarios PEER.jsonl PARLEY.jsonl
//   node bench/resumable/report.mjs load FILE.jsonl...
import { readFileSync } from 'node:fs';

const lines = (f) => {
  try {
    return readFileSync(f, 'utf8').split('\n').flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } });
  } catch { return []; }
};
const [mode, ...files] = process.argv.slice(2);
const s = (ms) => (ms == null ? '?' : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const errs = (es) => (es ?? []).map((e) => `${e.n}× "${e.msg}" (from ${s(e.at)})`).join(', ');
const verdict = (r) => (r.ok ? '**yes**' : '**no**');

function cell(r) {
  if (!r) return 'not run';
  if (r.exception) return `${verdict(r)} — the bench failed: ${r.exception}`;
  switch (r.scenario) {
  case 'reload':
    if (r.outcome === 'none' || r.outcome === 'error' && r.resumed_deltas === undefined) {
      return `${verdict(r)} — ${r.outcome}: ${errs(r.resume?.errors) || 'nothing to resume'}`;
    }
    return `${verdict(r)} — ${r.outcome}${r.replay_from_start ? ', replayed from the start' : ''}${r.same_message_id ? ' under the same message id' : ''}; ` +
      `first token ${s(r.first_token_ms)}, end ${s(r.end_ms)} after the resume request` +
      `${r.resume_attempts > 1 ? `; ${r.resume_attempts} attempts: ${errs(r.resume_errors)}` : ''}${r.message_error ? `; useChat: ${r.message_error}` : ''}`;
  case 'tab':
    return `${verdict(r)} — tab 2 ${r.outcome}${r.tab2_ok ? ' (whole answer)' : ''}, tab 1 ${r.tab1}; tab 2's first token ${s(r.tab2_first_token_ms)}, ` +
      `then behind tab 1 by p50 ${s(r.tab2_lag_ms?.p50)}, max ${s(r.tab2_lag_ms?.max)}` +
      `${r.resume_attempts > 1 ? `; ${r.resume_attempts} attempts: ${errs(r.resume_errors)}` : ''}`;
  case 'done':
    return `${verdict(r)} — resume: ${r.resume} in ${s(r.resume_ms)}; stored answer ${r.stored_answer_equals_upstream ? 'whole' : `not whole (HTTP ${r.stored_status})`}`;
  case 'kill': {
    const ot = r.open_tab ?? {};
    let t = `${verdict(r)} — ${r.outcome}. Open tab: ${ot.end}${ot.error_part ? ` ("${ot.error_part}")` : ''} after ${s(ot.after_ms)}. ` +
      `Resume (retried ${s(20000)} on errors, as a reloaded page would): ${r.resume_attempts} attempt(s)`;
    if (r.resume_errors?.length) t += ` — ${errs(r.resume_errors)}`;
    if (r.error_part) t += `; the stream ends with the error part "${r.error_part}" ${s(r.end_ms)} after the kill, ${r.resumed_text_chars}/${r.expected_chars} characters`;
    else if (r.end) t += `; stream ${r.end} ${s(r.end_ms)} after the kill`;
    t += `. Afterwards: history ${r.stored_after?.status === 200 ? (r.stored_after.chars == null ? `without the answer (messages: ${r.stored_after.roles})` : `with ${r.stored_after.chars} chars of it`) : `HTTP ${r.stored_after?.status} (nothing stored)`}, a second resume ${r.resume_again}, a new message ${r.new_turn}`;
    return t;
  }
  default: return JSON.stringify(r);
  }
}

if (mode === 'scenarios') {
  const [peer, parley] = files.map(lines);
  const names = { reload: '1. reload mid-stream (response dropped after k tokens, resumed)',
    kill: '2. the producing process SIGKILLed mid-stream, the page resumes',
    tab: '3. a second tab follows while the first reads',
    done: '4. resume after the stream finished' };
  console.log('| scenario | resumable-stream 2.2.13 + Redis (peer) | Parley (lighttpd, AI SDK stream) |');
  console.log('|---|---|---|');
  for (const k of ['reload', 'kill', 'tab', 'done']) {
    const a = peer.find((r) => r.scenario === k);
    const b = parley.find((r) => r.scenario === k);
    if (!a && !b) continue;
    console.log(`| ${names[k]} | ${cell(a)} | ${cell(b)} |`);
  }
} else if (mode === 'seed000') {
  const names = { 'ws-reload': 'reload: WebSocket dropped after k tokens, reopened with `?seq=1&after=<last seq>`',
    'sse-reload': 'reload: SSE `GET /api/tickets/{id}/ai/stream` dropped after k tokens, reopened with `Last-Event-ID`',
    'sse-tab': 'second tab: an SSE reader joins a WebSocket reader after k tokens',
    done: 'after the answer: SSE GET, and a WebSocket reopened with the same body' };
  console.log('| scenario | Parley, seed 000 |');
  console.log('|---|---|');
  for (const r of lines(files[0])) {
    let c;
    if (r.exception) c = `**no** — the bench failed: ${r.exception}`;
    else if (r.scenario === 'ws-reload' || r.scenario === 'sse-reload') {
      c = `${verdict(r)} — ${r.outcome}: ${r.before_chars} + ${r.after_chars} characters of ${r.expected_chars}, nothing twice; ` +
        `first token ${s(r.first_token_ms)}, end ${s(r.end_ms)} after the reconnect${r.next_reconnect ? `; the next reconnect: ${r.next_reconnect}` : ''}`;
    } else if (r.scenario === 'sse-tab') {
      c = `${verdict(r)} — ${r.outcome}; first token ${s(r.tab2_first_token_ms)}, then behind the WebSocket tab by p50 ${s(r.tab2_lag_ms?.p50)}, max ${s(r.tab2_lag_ms?.max)}`;
    } else c = `${verdict(r)} — SSE: ${r.sse} (${s(r.sse_ms)}); WebSocket: ${r.ws}`;
    console.log(`| ${names[r.scenario] ?? r.scenario} | ${c} |`);
  }
} else if (mode === 'load') {
  console.log('| side | readers per stream | streams read | complete, exact | tokens delivered | wall (s) | server CPU (ms, by process) | CPU per delivered token (µs) | RSS before → peak (MB) | RSS per stream (KB) | first token p50 / p99 (ms) |');
  console.log('|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|');
  for (const f of files) {
    for (const r of lines(f)) {
      const by = Object.entries(r.cpu_ms).map(([g, v]) => `${g} ${Math.round(v)}`).join(', ');
      const side = r.side === 'peer' ? 'resumable-stream + Redis' : `Parley (lighttpd, --threads ${r.threads ?? '?'}${r.threads === '16' ? ', as shipped' : ''})`;
      console.log(`| ${side} | ${r.readers} | ${r.streams_read} | ${r.complete_exact} | ${r.tokens_delivered} | ${r.wall_s} | ${Math.round(r.cpu_ms_total)} (${by}) | ${r.cpu_us_per_token ?? '-'} | ${r.rss_before_mb} → ${r.rss_peak_mb} | ${r.rss_per_stream_kb} | ${r.first_token_ms.p50} / ${r.first_token_ms.p99} |`);
      if (r.failed) console.log(`| | | failures: ${r.failed} | ${JSON.stringify(r.failures).replace(/\|/g, '/')} | | | | | | | |`);
    }
  }
}
