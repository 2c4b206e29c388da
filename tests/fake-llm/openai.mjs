// openai.mjs — the OpenAI wire format: /v1/chat/completions and /v1/models.
//
// Streams are Server-Sent Events (`data: {...}\n\n`, compact JSON, ending
// with `data: [DONE]\n\n`); non-streamed bodies are pretty-printed JSON;
// errors are {"error":{"message","type","param","code"}} with the statuses
// the real API uses. Runs on the server's event loop; see server.mjs for the
// request context (ctx) every handler receives.

import { randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { answerTokens, cleanPrompt, countTokens, splitAnswer } from './answer.mjs';
import { modelExists } from './knobs.mjs';
import { play } from './playback.mjs';
import { randomAlnum, sendBody, startStream } from './wire.mjs';

const DEFAULT_MODELS = ['gpt-4o-mini', 'gpt-4o'];
const SYSTEM_FINGERPRINT = 'fp_e2f22fdd0a';
const KEYS_URL = 'https://platform.openai.com/account/api-keys';
const HELP_HINT = 'If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.';
const SERVER_ERROR = 'The server had an error while processing your request. Sorry about that!';

function err(message, type, code = null, param = null) {
  return { message, type, param, code };
}

// The error object a real OpenAI API gives with each status.
function statusError(status, model, key) {
  switch (status) {
    case 400: return err('Invalid request.', 'invalid_request_error');
    case 401: return err(`Incorrect API key provided: ${maskKey(key ?? 'sk-fake')}. You can find your API key at ${KEYS_URL}.`,
      'invalid_request_error', 'invalid_api_key');
    case 403: return err('Country, region, or territory not supported', 'request_forbidden',
      'unsupported_country_region_territory');
    case 404: return err(`The model \`${model}\` does not exist or you do not have access to it.`,
      'invalid_request_error', 'model_not_found');
    case 429: return err(`Rate limit reached for ${model || 'gpt-4o-mini'} in organization org-fakellm on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.`,
      'requests', 'rate_limit_exceeded');
    case 500: return err(SERVER_ERROR, 'server_error');
    case 503: return err('The engine is currently overloaded, please try again later', 'server_error');
    default: return err(STATUS_CODES[status] ?? `Status ${status}`,
      status >= 500 ? 'server_error' : 'invalid_request_error');
  }
}

// "sk-abc...wxyz" with the middle starred, as the real 401 message shows it.
function maskKey(key) {
  if (key.length <= 8) return '*'.repeat(key.length);
  return key.slice(0, 3) + '*'.repeat(key.length - 7) + key.slice(-4);
}

export function sendError(res, status, error, headers = {}) {
  // The real API indents its error bodies by four spaces and ends them with
  // a newline.
  sendBody(res, status, 'application/json; charset=utf-8',
    `${JSON.stringify({ error }, null, 4)}\n`, { ...requestHeaders(), ...headers });
}

function requestHeaders() {
  return {
    'openai-version': '2020-10-01',
    'openai-processing-ms': '12',
    'x-request-id': `req_${randomBytes(16).toString('hex')}`,
    'access-control-expose-headers': 'X-Request-ID',
  };
}

// 401 when an API key is configured and the request does not carry it.
// Returns true when it answered.
export function checkAuth(ctx, knobs) {
  if (!knobs.api_key) return false;
  const h = ctx.req.headers.authorization;
  if (h === `Bearer ${knobs.api_key}`) return false;
  const given = /^Bearer\s+(.+)$/i.exec(h ?? '')?.[1]?.trim();
  if (!given) {
    sendError(ctx.res, 401, err("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from "
      + `${KEYS_URL}.`, 'invalid_request_error'));
  } else {
    sendError(ctx.res, 401, statusError(401, '', given));
  }
  return true;
}

// Any /v1 path or method that does not exist.
export function notFound(ctx) {
  const known = ['/v1/chat/completions', '/v1/models'].includes(ctx.path);
  if (known) {
    return sendError(ctx.res, 405, err(`Invalid method for URL (${ctx.method} ${ctx.path})`,
      'invalid_request_error'));
  }
  sendError(ctx.res, 404, err(`Invalid URL (${ctx.method} ${ctx.path})`, 'invalid_request_error'));
}

// GET /v1/models
export function models(ctx) {
  let knobs;
  try { knobs = ctx.baseKnobs(); } catch (e) {
    return sendError(ctx.res, 400, err(`fake-llm: ${e.message}`, 'invalid_request_error'));
  }
  if (checkAuth(ctx, knobs)) return;
  const data = (knobs.models ?? DEFAULT_MODELS).map((id) => ({
    id, object: 'model', created: 1721172741, owned_by: 'system',
  }));
  sendBody(ctx.res, 200, 'application/json', JSON.stringify({ object: 'list', data }, null, 2),
    requestHeaders());
}

// The text of one message's content: a string or an array of text parts.
function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((p) => (typeof p === 'string' ? p : p?.type === 'text' ? String(p.text ?? '') : '')).join('');
  }
  return '';
}

function lastUserMessage(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.role === 'user') return contentText(messages[i].content);
  }
  return '';
}

// POST /v1/chat/completions
export async function chatCompletions(ctx) {
  const { res } = ctx;
  let knobs;
  const body = ctx.bodyError ? null : ctx.body;
  const messages = Array.isArray(body?.messages) ? body.messages : [];
  const prompt = lastUserMessage(messages);
  try {
    knobs = body ? ctx.knobsFor(prompt) : ctx.baseKnobs();
  } catch (e) {
    return sendError(res, 400, err(`fake-llm: ${e.message}`, 'invalid_request_error'));
  }
  if (checkAuth(ctx, knobs)) return;
  if (ctx.bodyError || body === null || typeof body !== 'object' || Array.isArray(body)) {
    return sendError(res, 400, err(`We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. ${HELP_HINT})`,
      'invalid_request_error'));
  }
  const model = typeof body.model === 'string' ? body.model : '';
  if (knobs.status) {
    return sendError(res, knobs.status, statusError(knobs.status, model),
      knobs.retry_after !== null ? { 'retry-after': knobs.retry_after } : {});
  }
  if (!model) return sendError(res, 400, err('you must provide a model parameter', 'invalid_request_error'));
  if (body.messages === undefined) {
    return sendError(res, 400, err("Missing required parameter: 'messages'.", 'invalid_request_error',
      'missing_required_parameter', 'messages'));
  }
  if (!Array.isArray(body.messages)) {
    return sendError(res, 400, err(`Invalid type for 'messages': expected an array of objects, but got ${typeof body.messages === 'string' ? 'a string' : `${typeof body.messages}`} instead.`,
      'invalid_request_error', 'invalid_type', 'messages'));
  }
  if (messages.length === 0) {
    return sendError(res, 400, err("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
      'invalid_request_error', 'empty_array', 'messages'));
  }
  if (!modelExists(knobs, model)) return sendError(res, 404, statusError(404, model));

  let tokens = knobs.answer !== null ? splitAnswer(knobs.answer) : answerTokens(prompt, knobs.tokens);
  let finishReason = 'stop';
  const limit = body.max_completion_tokens ?? body.max_tokens;
  if (Number.isInteger(limit) && limit >= 0 && limit < tokens.length) {
    tokens = tokens.slice(0, limit);
    finishReason = 'length';
  }
  const promptTokens = Math.max(1, countTokens(messages.map((m) => cleanPrompt(contentText(m?.content))).join('\n')));
  const usage = (n) => ({
    prompt_tokens: promptTokens,
    completion_tokens: n,
    total_tokens: promptTokens + n,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0,
      accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  });
  const id = `chatcmpl-${randomAlnum(29)}`;
  const created = Math.floor(Date.now() / 1000);
  const pb = ctx.playback();

  if (body.stream === true) {
    const withUsage = body.stream_options?.include_usage === true;
    const chunk = (choices, extra = {}) => `data: ${JSON.stringify({
      id, object: 'chat.completion.chunk', created, model,
      system_fingerprint: SYSTEM_FINGERPRINT, choices,
      ...(withUsage ? { usage: null } : {}), ...extra,
    })}\n\n`;
    const choice = (delta, finish = null) => [{ index: 0, delta, logprobs: null, finish_reason: finish }];
    startStream(res, 'text/event-stream; charset=utf-8', requestHeaders());
    let started = false;
    const begin = () => {
      if (!started) res.write(chunk(choice({ role: 'assistant', content: '' })));
      started = true;
    };
    await play(pb, knobs, tokens.length, {
      token: (i) => { begin(); res.write(chunk(choice({ content: tokens[i] }))); },
      final: (n) => {
        begin();
        let out = chunk(choice({}, finishReason));
        if (withUsage) out += chunk([], { usage: usage(n) });
        res.end(`${out}data: [DONE]\n\n`);
      },
      error: () => res.end(`data: ${JSON.stringify({ error: err(SERVER_ERROR, 'server_error') })}\n\n`),
      malformed: () => res.end('data: {not json\n\n'),
    });
    return;
  }

  await play(pb, knobs, tokens.length, {
    token: () => {},
    final: (n) => sendBody(res, 200, 'application/json', JSON.stringify({
      id,
      object: 'chat.completion',
      created,
      model,
      choices: [{
        index: 0,
        message: { role: 'assistant', content: tokens.join(''), refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: finishReason,
      }],
      usage: usage(n),
      service_tier: 'default',
      system_fingerprint: SYSTEM_FINGERPRINT,
    }, null, 2), requestHeaders()),
    error: () => sendError(res, 500, err(SERVER_ERROR, 'server_error')),
    malformed: () => sendBody(res, 200, 'application/json', '{not json'),
  });
}
