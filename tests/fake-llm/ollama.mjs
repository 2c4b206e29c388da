// ollama.mjs — the Ollama 0.x wire format: /api/generate, /api/chat,
// /api/tags, /api/version and "/".
//
// Ollama is a Go (gin) server: bodies are Go json.Marshal output (fields in
// struct order, `omitempty` zero values left out, < > & escaped as \u003c
// \u003e \u0026), streams are NDJSON lines in a chunked
// `application/x-ndjson` response, errors are {"error":"..."} with
// `application/json; charset=utf-8`, and unknown routes get gin's plain
// "404 page not found". Runs on the server's event loop; see server.mjs for
// the request context (ctx) every handler receives.

import { createHash } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { answerTokens, cleanPrompt, countTokens, splitAnswer, tokenId } from './answer.mjs';
import { modelExists } from './knobs.mjs';
import { play } from './playback.mjs';
import { goJSON, nowNs, omitEmpty, rfc3339Nano, sendBody, startStream } from './wire.mjs';

export const OLLAMA_VERSION = '0.5.7';
const DEFAULT_MODELS = ['llama3.2:latest', 'qwen2.5:0.5b'];
const JSON_TYPE = 'application/json; charset=utf-8';
const LOAD_DURATION_NS = 1_734_625;
const MIDSTREAM_ERROR = 'an error was encountered while running the model: unexpected EOF';

// The error message a real Ollama gives with each status.
function statusMessage(status, model) {
  switch (status) {
    case 400: return 'invalid request';
    case 404: return `model "${model}" not found, try pulling it first`;
    case 500: return 'llama runner process has terminated: signal: killed';
    case 503: return 'server busy, please try again.  maximum pending requests exceeded';
    default: return (STATUS_CODES[status] ?? `status ${status}`).toLowerCase();
  }
}

export function sendError(res, status, message, headers = {}) {
  sendBody(res, status, JSON_TYPE, goJSON({ error: message }), headers);
}

export function notFound(res) {
  sendBody(res, 404, 'text/plain', '404 page not found');
}

// Go's encoding/json message for a body JSON.parse rejected.
function goSyntaxError(text, err) {
  if (/end of JSON input/i.test(err.message)) return 'unexpected EOF';
  let c;
  const pos = /at position (\d+)/.exec(err.message);
  if (pos) c = text[Number(pos[1])];
  const tok = /Unexpected token '(.)'/.exec(err.message);
  if (c === undefined && tok) c = tok[1];
  if (c === undefined) return 'unexpected EOF';
  const q = c === "'" ? "'\\''" : `'${c}'`;
  if (/after JSON/.test(err.message)) return `invalid character ${q} after top-level value`;
  return `invalid character ${q} looking for beginning of value`;
}

function goType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'boolean') return 'bool';
  return typeof v;   // string, number, object
}

// Field type checks in Go's words; returns a message or null.
const FIELD_TYPES = {
  GenerateRequest: { model: 'string', prompt: 'string', system: 'string', suffix: 'string',
    template: 'string', stream: 'bool', raw: 'bool', options: 'object', format: 'any',
    keep_alive: 'any', context: 'array', images: 'array', think: 'any' },
  ChatRequest: { model: 'string', messages: 'array', stream: 'bool', options: 'object',
    format: 'any', keep_alive: 'any', tools: 'array', think: 'any' },
};
const GO_FIELD = { string: 'string', bool: 'bool', object: 'map[string]interface {}',
  array: '[]' };

function checkBody(ctx, structName) {
  if (ctx.bodyError === 'empty') return 'missing request body';
  if (ctx.bodyError) return goSyntaxError(ctx.bodyText, ctx.bodyErrorObj);
  const b = ctx.body;
  if (b === null) return null;
  if (goType(b) !== 'object') {
    return `json: cannot unmarshal ${goType(b)} into Go value of type api.${structName}`;
  }
  for (const [k, want] of Object.entries(FIELD_TYPES[structName])) {
    const v = b[k];
    if (v === undefined || v === null || want === 'any') continue;
    const got = goType(v);
    if (got !== want) {
      const goWant = k === 'messages' ? '[]api.Message' : GO_FIELD[want];
      return `json: cannot unmarshal ${got} into Go struct field ${structName}.${k} of type ${goWant}`;
    }
  }
  if (structName === 'ChatRequest' && Array.isArray(b.messages)) {
    for (const m of b.messages) {
      if (goType(m) !== 'object') {
        return `json: cannot unmarshal ${goType(m)} into Go struct field ChatRequest.messages of type api.Message`;
      }
      for (const f of ['role', 'content']) {
        if (m[f] !== undefined && m[f] !== null && typeof m[f] !== 'string') {
          return `json: cannot unmarshal ${goType(m[f])} into Go struct field Message.messages.${f} of type string`;
        }
      }
    }
  }
  return null;
}

// GET / and HEAD /
export function root(ctx) {
  sendBody(ctx.res, 200, 'text/plain; charset=utf-8', 'Ollama is running');
}

// GET /api/version
export function version(ctx) {
  sendBody(ctx.res, 200, JSON_TYPE, goJSON({ version: OLLAMA_VERSION }));
}

function modelDetails(name) {
  const family = /^qwen/.test(name) ? 'qwen2' : /^(gemma|mistral|phi)/.exec(name)?.[1] ?? 'llama';
  const size = /:(\d+(?:\.\d+)?)b/.exec(name)?.[1];
  return {
    parent_model: '',
    format: 'gguf',
    family,
    families: [family],
    parameter_size: size ? `${size}B` : '3.2B',
    quantization_level: 'Q4_K_M',
  };
}

// GET /api/tags
export function tags(ctx) {
  let knobs;
  try { knobs = ctx.baseKnobs(); } catch (e) { return sendError(ctx.res, 400, `fake-llm: ${e.message}`); }
  const names = (knobs.models ?? DEFAULT_MODELS).map((m) => (m.includes(':') ? m : `${m}:latest`));
  const models = names.map((name, i) => ({
    name,
    model: name,
    modified_at: '2024-10-01T10:00:00.123456789Z',
    size: 2019393189 - i * 1000,
    digest: createHash('sha256').update(name).digest('hex'),
    details: modelDetails(name),
  }));
  sendBody(ctx.res, 200, JSON_TYPE, goJSON({ models }));
}

// POST /api/generate
export function generate(ctx) {
  return answer(ctx, 'GenerateRequest');
}

// POST /api/chat
export function chat(ctx) {
  return answer(ctx, 'ChatRequest');
}

function lastUserMessage(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role === 'user') return String(messages[i].content ?? '');
  }
  return '';
}

async function answer(ctx, structName) {
  const { res } = ctx;
  const isChat = structName === 'ChatRequest';
  const bad = checkBody(ctx, structName);
  if (bad) return sendError(res, 400, bad);
  const body = ctx.body ?? {};
  const model = body.model ?? '';
  const messages = isChat ? (body.messages ?? []) : null;
  const prompt = isChat ? lastUserMessage(messages) : (body.prompt ?? '');

  let knobs;
  try {
    knobs = ctx.knobsFor(prompt);
  } catch (e) {
    return sendError(res, 400, `fake-llm: ${e.message}`);
  }
  if (knobs.status) {
    return sendError(res, knobs.status, statusMessage(knobs.status, model),
      knobs.retry_after !== null ? { 'Retry-After': knobs.retry_after } : {});
  }
  if (!model) return sendError(res, 400, 'model is required');
  if (!modelExists(knobs, model)) return sendError(res, 404, statusMessage(404, model));

  const stream = body.stream !== false;
  const created = () => rfc3339Nano();

  // An empty request only loads the model: one done message, no answer.
  if (isChat ? messages.length === 0 : (body.prompt ?? '') === '') {
    const msg = isChat
      ? { model, created_at: created(), message: { role: 'assistant', content: '' }, done_reason: 'load', done: true }
      : { model, created_at: created(), response: '', done: true, done_reason: 'load' };
    if (!stream) return sendBody(res, 200, JSON_TYPE, goJSON(msg));
    startStream(res, 'application/x-ndjson');
    res.end(`${goJSON(msg)}\n`);
    return;
  }

  let tokens = knobs.answer !== null ? splitAnswer(knobs.answer) : answerTokens(prompt, knobs.tokens);
  let doneReason = 'stop';
  const numPredict = body.options?.num_predict;
  if (Number.isInteger(numPredict) && numPredict >= 0 && numPredict < tokens.length) {
    tokens = tokens.slice(0, numPredict);
    doneReason = 'length';
  }

  const promptText = isChat
    ? messages.map((m) => cleanPrompt(m?.content ?? '')).join('\n')
    : [body.system ?? '', cleanPrompt(prompt)].join('\n');
  const promptCount = Math.max(1, countTokens(promptText));
  let firstNs = null;
  let lastNs = null;

  const piece = (text) => (isChat
    ? { model, created_at: created(), message: { role: 'assistant', content: text }, done: false }
    : { model, created_at: created(), response: text, done: false });
  const finalMessage = (text, sent) => {
    const end = nowNs();
    const metrics = omitEmpty({
      total_duration: Number(end - ctx.startNs),
      load_duration: LOAD_DURATION_NS,
      prompt_eval_count: promptCount,
      prompt_eval_duration: Number((firstNs ?? end) - ctx.startNs),
      eval_count: sent,
      eval_duration: Number((lastNs ?? end) - (firstNs ?? end)),
    });
    if (isChat) {
      return { model, created_at: created(), message: { role: 'assistant', content: text },
        done_reason: doneReason, done: true, ...metrics };
    }
    const context = [...splitAnswer(promptText), ...tokens.slice(0, sent)].map(tokenId);
    return { model, created_at: created(), response: text, done: true, done_reason: doneReason,
      ...omitEmpty({ context }), ...metrics };
  };
  const stamp = () => {
    lastNs = nowNs();
    if (firstNs === null) firstNs = lastNs;
  };

  const pb = ctx.playback();
  if (stream) {
    startStream(res, 'application/x-ndjson');
    await play(pb, knobs, tokens.length, {
      token: (i) => { stamp(); res.write(`${goJSON(piece(tokens[i]))}\n`); },
      final: (n) => res.end(`${goJSON(finalMessage('', n))}\n`),
      error: () => res.end(`${goJSON({ error: MIDSTREAM_ERROR })}\n`),
      malformed: () => res.end('{not json\n'),
    });
    return;
  }
  // stream:false — the same timing, then one object (or one failure).
  await play(pb, knobs, tokens.length, {
    token: () => stamp(),
    final: (n) => sendBody(res, 200, JSON_TYPE, goJSON(finalMessage(tokens.join(''), n))),
    error: () => sendError(res, 500, MIDSTREAM_ERROR),
    malformed: () => sendBody(res, 200, JSON_TYPE, '{not json'),
  });
}
