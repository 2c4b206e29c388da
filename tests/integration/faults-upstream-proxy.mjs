#!/usr/bin/env node
// faults-upstream-proxy.mjs — the upstream of t0920/t0921 (the upstream
// fault matrix): a private simulated LLM (tests/fake-llm/server.mjs,
// started in this process) behind a small HTTP proxy that makes each
// question's fault happen a bounded number of times.
//
// Why: a fault is asked for per request with the simulated LLM's own
// directive in the question ("... [[fake tokens=8 drop_after=3]]"), so
// other cases sharing the server are unaffected. To prove that a failed
// answer was not cached, the test asks the SAME question again and wants
// a new upstream request AND the full deterministic answer; with the
// directive still in the question the fault would fire again. So this
// proxy counts the requests per prompt text and, once a prompt has had
// its faults (1 by default; `[[fup faults=N]]` in the question for N),
// removes the failure knobs (status, retry_after, error_after,
// malformed_after, hang_after, drop_after) from the directive before
// forwarding. `[[fup ...]]` itself is always removed. Everything else
// (paths, headers, the streamed response bytes, a dropped or hung
// connection, a client that leaves) passes through unchanged: a cut from
// the fake cuts the connection to Parley, Parley leaving closes the
// connection to the fake (its request log records closed_by_client).
//
//   node tests/integration/faults-upstream-proxy.mjs --port-file FILE
//
// Writes "PROXY_PORT FAKE_PORT" to FILE once both listen. GET /_proxy/log
// lists what was forwarded: [{n, key, armed, path, status, started_at,
// ended_at, assistant}] (key: the prompt as Parley sent it, first 300
// characters; assistant: the assistant turns of its messages, 300 each).
// /_fake/* is forwarded to the fake (its request log: GET /_fake/requests).
// Stops on SIGTERM / SIGINT.
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { startFakeLLM } from '../fake-llm/server.mjs';

const FAIL_KNOBS = /\s*\b(status|retry_after|error_after|malformed_after|hang_after|drop_after)=("[^"]*"|[^\s\]]+)/g;
const FUP = /\[\[fup\s+faults=(\d+)\]\]/;
const FUP_ALL = /\s*\[\[fup[^\]]*\]\]/g;

const args = process.argv.slice(2);
const portFile = args[args.indexOf('--port-file') + 1];
if (!portFile || args.indexOf('--port-file') < 0) {
  process.stderr.write('usage: faults-upstream-proxy.mjs --port-file FILE\n');
  process.exit(2);
}

const fake = await startFakeLLM({ knobs: { token_ms: 5 } });
const seen = new Map();       // prompt text → requests so far
const log = [];

// The prompt text of a request body and a setter for it: Ollama's prompt,
// or the last user message (string content) of /api/chat and OpenAI.
function promptSlot(body) {
  if (!body || typeof body !== 'object') return null;
  if (typeof body.prompt === 'string') {
    return { get: () => body.prompt, set: (v) => { body.prompt = v; } };
  }
  if (Array.isArray(body.messages)) {
    for (let i = body.messages.length - 1; i >= 0; i -= 1) {
      const m = body.messages[i];
      if (m && m.role === 'user' && typeof m.content === 'string') {
        return { get: () => m.content, set: (v) => { m.content = v; } };
      }
    }
  }
  return null;
}

// The body to forward (a Buffer) and the log entry of this request.
function rewrite(raw, path) {
  const entry = { n: 0, key: null, armed: false, path, status: null,
    started_at: Date.now(), ended_at: null };
  let body;
  try { body = JSON.parse(raw.toString('utf8')); } catch { return { out: raw, entry }; }
  const slot = promptSlot(body);
  if (!slot) return { out: raw, entry };
  const text = slot.get();
  const n = (seen.get(text) ?? 0) + 1;
  seen.set(text, n);
  const m = FUP.exec(text);
  const faults = m ? Number(m[1]) : 1;
  let next = text.replace(FUP_ALL, '');
  entry.n = n;
  entry.key = text.slice(0, 300);
  // the assistant turns of the history Parley sent (a partial answer kept
  // in a conversation would show here)
  if (Array.isArray(body.messages)) {
    entry.assistant = body.messages.filter((m) => m && m.role === 'assistant')
      .map((m) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content)).slice(0, 300));
  }
  entry.armed = n <= faults && /\[\[fake/.test(text);
  if (!entry.armed) next = next.replace(/\[\[fake([^\]]*)\]\]/g, (_, inner) => `[[fake${inner.replace(FAIL_KNOBS, '')}]]`);
  slot.set(next);
  return { out: Buffer.from(JSON.stringify(body)), entry };
}

const server = http.createServer((req, res) => {
  if (req.url === '/_proxy/log') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(log));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const isFake = req.url.startsWith('/_fake/');
    const { out, entry } = req.method === 'POST' && !isFake
      ? rewrite(raw, req.url) : { out: raw, entry: null };
    if (entry) log.push(entry);
    const headers = { ...req.headers };
    delete headers['content-length'];
    delete headers['transfer-encoding'];
    if (req.method === 'POST') headers['content-length'] = String(out.length);
    const up = http.request({ host: '127.0.0.1', port: fake.port, method: req.method, path: req.url, headers },
      (ures) => {
        if (entry) entry.status = ures.statusCode;
        res.writeHead(ures.statusCode, ures.headers);
        ures.pipe(res);
        // the fake destroyed its socket (drop_after): cut ours too
        ures.on('aborted', () => res.destroy());
        ures.on('error', () => res.destroy());
      });
    up.on('error', () => res.destroy());
    // Parley left (an idle timeout, a stop): leave the fake too
    res.on('close', () => {
      if (entry) entry.ended_at = Date.now();
      if (!res.writableFinished) up.destroy();
    });
    up.end(out);
  });
});
server.listen(0, '127.0.0.1', () => {
  writeFileSync(`${portFile}.tmp`, `${server.address().port} ${fake.port}\n`);
  // rename: the reader never sees a half-written file
  import('node:fs').then(({ renameSync }) => renameSync(`${portFile}.tmp`, portFile));
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  fake.close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
