#!/usr/bin/env node
// server.mjs — fake-llm: the simulated LLM upstream every Parley test and
// benchmark talks to. Speaks Ollama 0.x (/api/*) and OpenAI (/v1/*) on one
// loopback port, with knobs for answer length, token timing and failures
// (see docs/fake-llm.md), plus a control API under /_fake/.
//
//   node tests/fake-llm/server.mjs [--port N] [--host 127.0.0.1]
//        [--port-file FILE] [--timing-log FILE] [--api-key K] [--tokens N] [--token-ms N] ...
//
// --timing-log FILE (benchmarks only; off by default, nothing else changes):
// one NDJSON line per request when it ends, {id, path, tag, req_ns,
// first_ns, end_ns, status}: process.hrtime.bigint() (CLOCK_MONOTONIC, the
// same clock in every process of the machine) when the request arrived,
// when its first body byte was written (a stream's first token) and when
// it closed; tag is the first "gwl-..." word of the request body (how
// bench/gw-latency.mjs finds its own questions).
//
// One process, one event loop: every request is handled here, streams are
// timers on the loop. Other Node code may instead import startFakeLLM().

import { createWriteStream, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { answerTokens, parseDirectives, parsePairs, splitAnswer } from './answer.mjs';
import { DEFAULTS, isKnob, merge } from './knobs.mjs';
import * as ollama from './ollama.mjs';
import * as openai from './openai.mjs';
import { Playback } from './playback.mjs';
import { nowNs } from './wire.mjs';

const MAX_BODY = 16 * 1024 * 1024;
const TOO_LARGE = 'request body too large';

// method + path → handler. Anything else: 404 in the format of the path's
// provider (/v1/* OpenAI, everything else Ollama/gin).
const ROUTES = new Map([
  ['GET /', ollama.root],
  ['HEAD /', ollama.root],
  ['GET /api/version', ollama.version],
  ['HEAD /api/version', ollama.version],
  ['GET /api/tags', ollama.tags],
  ['HEAD /api/tags', ollama.tags],
  ['POST /api/generate', ollama.generate],
  ['POST /api/chat', ollama.chat],
  ['GET /v1/models', openai.models],
  ['POST /v1/chat/completions', openai.chatCompletions],
]);

function sendJSON(res, status, value) {
  const body = `${JSON.stringify(value)}\n`;
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolveBody, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);   // past the cap: read on, keep nothing
    });
    req.on('end', () => {
      if (size > MAX_BODY) reject(new Error(TOO_LARGE));
      else resolveBody(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', reject);
  });
}

// How many requests GET /_fake/requests remembers (the newest).
const REQUEST_LOG_MAX = 1000;

// The prompt of a request body for the request log: Ollama's prompt, else
// the last user message's content (text parts joined); cut to 200 chars.
function promptOf(body) {
  if (!body || typeof body !== 'object') return null;
  let p = typeof body.prompt === 'string' ? body.prompt : null;
  if (p === null && Array.isArray(body.messages)) {
    for (let i = body.messages.length - 1; i >= 0; i -= 1) {
      const m = body.messages[i];
      if (m && m.role === 'user') {
        p = typeof m.content === 'string' ? m.content
          : Array.isArray(m.content) ? m.content.map((x) => x?.text ?? '').join('') : null;
        break;
      }
    }
  }
  return p === null ? null : p.slice(0, 200);
}

// The state of one fake-llm instance: knobs, stats and the HTTP server.
export class FakeLLM {
  // defaults: raw knobs overriding DEFAULTS; they are what /_fake/reset
  // restores. Throws on an invalid knob.
  // timingLog: a file name for the per-request timing log (see the top).
  constructor(defaults = {}, { timingLog = null } = {}) {
    this.timing = timingLog ? createWriteStream(timingLog, { flags: 'a' }) : null;
    this.defaults = merge(DEFAULTS, defaults);
    this.knobs = { ...this.defaults };
    this.timers = new Set();
    this.resetStats();
    this.server = http.createServer({ noDelay: true, keepAliveTimeout: 5000 },
      (req, res) => this.handle(req, res).catch((e) => this.crash(res, e)));
  }

  resetStats() {
    this.stats = { total: 0, active: 0, by_path: {}, last_body: null, last_path: null,
      last_headers: null };
    this.requests = [];
    this.nextId = 1;
  }

  crash(res, e) {
    process.stderr.write(`fake-llm: internal error: ${e.stack ?? e}\n`);
    if (!res.headersSent) sendJSON(res, 500, { error: `fake-llm internal error: ${e.message}` });
    else res.destroy();
  }

  async handle(req, res) {
    const url = new URL(req.url, 'http://fake-llm.invalid');
    const path = url.pathname;
    const method = req.method;
    if (path.startsWith('/_fake/')) return this.control(req, res, path, method);

    const st = this.stats;
    st.total += 1;
    st.active += 1;
    st.by_path[path] = (st.by_path[path] ?? 0) + 1;
    st.last_path = path;
    st.last_headers = { ...req.headers };
    // The request log (GET /_fake/requests): when each response began and
    // ended, and whether the CLIENT closed the connection before the
    // response was complete (a stopped generation).
    const entry = { id: this.nextId++, path, prompt: null, started_at: performance.timeOrigin + performance.now(),
      ended_at: null, closed_by_client: false, status: null };
    this.requests.push(entry);
    if (this.requests.length > REQUEST_LOG_MAX) this.requests.shift();
    res.on('close', () => {
      st.active -= 1;
      entry.ended_at = performance.timeOrigin + performance.now();
      entry.closed_by_client = !res.writableEnded;
      entry.status = res.headersSent ? res.statusCode : null;
    });

    if (this.timing) this.timeRequest(entry, req, res, () => ctx.bodyText);
    const ctx = {
      req, res, path, method,
      startNs: nowNs(),
      body: undefined, bodyText: '', bodyError: null, bodyErrorObj: null,
      playback: () => new Playback(res, this.timers),
      // Server knobs + X-Fake-LLM header. Throws on an invalid knob.
      baseKnobs: () => merge(this.knobs, parsePairs(req.headers['x-fake-llm'] ?? '')),
      // ... + the directives in text. Throws on an invalid knob.
      knobsFor: (text) => merge(ctx.baseKnobs(), parseDirectives(text)),
    };
    if (method === 'POST') {
      try {
        ctx.bodyText = await readBody(req);
      } catch (e) {
        // too large: 413; the client went away mid-body: nothing to answer
        if (e.message === TOO_LARGE && !res.headersSent && !res.destroyed) {
          sendJSON(res, 413, { error: e.message });
        }
        return undefined;
      }
      if (ctx.bodyText.trim() === '') {
        ctx.bodyError = 'empty';
      } else {
        try {
          ctx.body = JSON.parse(ctx.bodyText);
        } catch (e) {
          ctx.bodyError = 'syntax';
          ctx.bodyErrorObj = e;
        }
      }
      st.last_body = ctx.bodyError ? ctx.bodyText : ctx.body;
      entry.prompt = promptOf(ctx.body);
    }

    const route = ROUTES.get(`${method} ${path}`);
    if (route) return route(ctx);
    if (path === '/v1' || path.startsWith('/v1/')) return openai.notFound(ctx);
    return ollama.notFound(res);
  }

  // --timing-log: stamps the request's arrival, its first body write and
  // its end on the monotonic clock; one line when it closes.
  timeRequest(entry, req, res, bodyText) {
    const t = { req_ns: process.hrtime.bigint(), first_ns: null };
    const write = res.write;
    res.write = function timedWrite(...a) {
      if (t.first_ns === null) t.first_ns = process.hrtime.bigint();
      return write.apply(this, a);
    };
    res.on('close', () => {
      const end = process.hrtime.bigint();
      const tag = /gwl-[A-Za-z0-9_.-]+/.exec(bodyText() ?? '')?.[0] ?? null;
      this.timing.write(`${JSON.stringify({ id: entry.id, path: entry.path, tag,
        req_ns: String(t.req_ns), first_ns: t.first_ns === null ? null : String(t.first_ns),
        end_ns: String(end), status: res.headersSent ? res.statusCode : null })}\n`);
    });
  }

  // The control API, never counted in stats.
  async control(req, res, path, method) {
    let body = {};
    if (method === 'POST') {
      const text = await readBody(req).catch(() => null);
      if (text === null) return res.destroyed ? undefined : sendJSON(res, 413, { error: TOO_LARGE });
      if (text.trim() !== '') {
        try {
          body = JSON.parse(text);
        } catch (e) {
          return sendJSON(res, 400, { error: `invalid JSON: ${e.message}` });
        }
      }
    }
    const route = `${method} ${path}`;
    try {
      switch (route) {
        case 'GET /_fake/config':
          return sendJSON(res, 200, this.knobs);
        case 'POST /_fake/config':
          if (body === null || typeof body !== 'object' || Array.isArray(body)) {
            return sendJSON(res, 400, { error: 'want a JSON object of knobs' });
          }
          this.knobs = merge(this.knobs, body);
          return sendJSON(res, 200, this.knobs);
        case 'POST /_fake/reset':
          this.knobs = { ...this.defaults };
          this.resetStats();
          return sendJSON(res, 200, this.knobs);
        case 'GET /_fake/stats':
          return sendJSON(res, 200, this.stats);
        case 'GET /_fake/requests':
          return sendJSON(res, 200, { now: performance.timeOrigin + performance.now(),
            requests: this.requests });
        case 'POST /_fake/answer':
        case 'GET /_fake/answer':
          return sendJSON(res, 200, this.expectedAnswer(method === 'GET'
            ? Object.fromEntries(new URL(req.url, 'http://x').searchParams) : body));
        default:
          return sendJSON(res, 404, { error: `no such control endpoint: ${route}` });
      }
    } catch (e) {
      return sendJSON(res, 400, { error: e.message });
    }
  }

  // What the server would answer to `prompt`: with an explicit `tokens`,
  // answerTokens(prompt, tokens); otherwise under the current knobs plus the
  // prompt's directives (so `answer` and `tokens` knobs are honoured).
  expectedAnswer(body) {
    if (body === null || typeof body !== 'object') throw new Error('want {"prompt": "...", "tokens": N}');
    const prompt = String(body.prompt ?? '');
    let tokens;
    if (body.tokens !== undefined && body.tokens !== null) {
      const n = Number(body.tokens);
      if (!Number.isInteger(n) || n < 0 || n > 1e6) throw new Error('tokens wants a whole number >= 0');
      tokens = answerTokens(prompt, n);
    } else {
      const knobs = merge(this.knobs, parseDirectives(prompt));
      tokens = knobs.answer !== null ? splitAnswer(knobs.answer) : answerTokens(prompt, knobs.tokens);
    }
    return { text: tokens.join(''), tokens };
  }

  // Starts listening; resolves with the bound port.
  listen(port = 0, host = '127.0.0.1') {
    return new Promise((resolveListen, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolveListen(this.server.address().port);
      });
    });
  }

  // Stops: no new connections, every open one (hung streams too) destroyed.
  close() {
    if (this.timing) this.timing.end();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    return new Promise((resolveClose) => {
      this.server.close(() => resolveClose());
      this.server.closeAllConnections();
    });
  }
}

// Starts an instance in this process: { url, port, fake, close() }.
export async function startFakeLLM({ port = 0, host = '127.0.0.1', knobs = {} } = {}) {
  const fake = new FakeLLM(knobs);
  const bound = await fake.listen(port, host);
  return { url: `http://${host}:${bound}`, port: bound, fake, close: () => fake.close() };
}

const USAGE = `usage: node tests/fake-llm/server.mjs [--port N] [--host 127.0.0.1] [--port-file FILE]
       [--timing-log FILE] [--api-key K] [--<knob> VALUE]...   (knobs: ${Object.keys(DEFAULTS).join(', ')})`;

function parseArgs(argv) {
  const opts = { port: 0, host: '127.0.0.1', portFile: null, timingLog: null, knobs: {} };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${arg}`);
    const eq = arg.indexOf('=');
    if (eq >= 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      value = argv[++i];
    }
    const name = arg.slice(2).replace(/-/g, '_');
    if (name === 'port') {
      if (!/^\d+$/.test(value) || Number(value) > 65535) throw new Error(`bad --port ${value}`);
      opts.port = Number(value);
    } else if (name === 'host') {
      opts.host = value;
    } else if (name === 'port_file') {
      opts.portFile = value;
    } else if (name === 'timing_log') {
      opts.timingLog = resolve(value);
    } else if (isKnob(name)) {
      opts.knobs[name] = value;
    } else {
      throw new Error(`unknown option ${arg}`);
    }
  }
  const loopback = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;
  if (!loopback.test(opts.host)) throw new Error(`--host must be a loopback address, got ${opts.host}`);
  return opts;
}

async function main() {
  let opts;
  let fake;
  try {
    opts = parseArgs(process.argv.slice(2));
    fake = new FakeLLM(opts.knobs, { timingLog: opts.timingLog });
  } catch (e) {
    process.stderr.write(`fake-llm: ${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  const port = await fake.listen(opts.port, opts.host);
  if (opts.portFile) {
    const file = resolve(opts.portFile);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, String(port));
    renameSync(`${file}.tmp`, file);
  }
  const shown = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  process.stdout.write(`fake-llm: listening on http://${shown}:${port}\n`);

  let stopping = false;
  const stop = (sig) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`fake-llm: ${sig}, stopping\n`);
    fake.close().then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((e) => {
    process.stderr.write(`fake-llm: ${e.stack ?? e}\n`);
    process.exit(1);
  });
}
