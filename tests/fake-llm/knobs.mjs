// knobs.mjs — the fake LLM's behaviour switches: names, defaults, validation.
//
// Knobs come from three layers, later overriding earlier: the server's
// defaults (command line), POST /_fake/config, and per request a
// `[[fake ...]]` directive in the prompt or an `X-Fake-LLM` header.
// normalize() turns a raw value (JSON value or directive string) into the
// stored form and throws an Error with a readable message when it is invalid.

export const DEFAULTS = Object.freeze({
  tokens: 12,            // answer length in tokens
  token_ms: 10,          // delay between tokens
  first_ms: 0,           // delay before the first token (headers go at once)
  answer: null,          // exact answer text instead of the generated one
  status: null,          // fail before streaming with this HTTP status
  error_after: null,     // provider's mid-stream error after N tokens
  malformed_after: null, // a line that is not JSON after N tokens
  hang_after: null,      // stop sending after N tokens, keep the socket open
  drop_after: null,      // destroy the socket after N tokens
  api_key: null,         // require "Authorization: Bearer KEY" (OpenAI paths)
  models: null,          // list of model names that exist; null: every name
  retry_after: null,     // with status: send this Retry-After header (seconds or HTTP date)
});

const INT_KNOBS = new Set(['tokens', 'token_ms', 'first_ms', 'status',
  'error_after', 'malformed_after', 'hang_after', 'drop_after']);
const OFF_WORDS = new Set(['', 'off', 'none', 'null', 'false']);
const LIMITS = { tokens: 1e6, token_ms: 36e5, first_ms: 36e5 };

export function isKnob(name) {
  return Object.hasOwn(DEFAULTS, name);
}

// Returns the stored value for knob `name` given raw `value`; null means
// "off" (or "default" for tokens/token_ms/first_ms). Throws on bad input.
export function normalize(name, value) {
  if (!isKnob(name)) throw new Error(`unknown knob "${name}"`);
  if (value === null || value === undefined ||
      (typeof value === 'string' && OFF_WORDS.has(value.trim().toLowerCase()))) {
    return ['tokens', 'token_ms', 'first_ms'].includes(name) ? DEFAULTS[name] : null;
  }
  if (INT_KNOBS.has(name)) {
    const n = typeof value === 'number' ? value
      : typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`knob ${name} wants a whole number >= 0, got ${JSON.stringify(value)}`);
    }
    if (name === 'status') {
      if (n === 0) return null;
      if (n < 400 || n > 599) throw new Error(`knob status wants 400-599, got ${n}`);
    }
    if (LIMITS[name] !== undefined && n > LIMITS[name]) {
      throw new Error(`knob ${name} is at most ${LIMITS[name]}, got ${n}`);
    }
    return n;
  }
  if (name === 'retry_after') {
    const s = String(value).trim();
    if (!/^\d+$/.test(s) && Number.isNaN(Date.parse(s))) {
      throw new Error(`knob retry_after wants whole seconds or an HTTP date, got ${JSON.stringify(value)}`);
    }
    return s;
  }
  if (name === 'models') {
    const list = Array.isArray(value) ? value : String(value).split(/[\s,]+/);
    const names = list.map((m) => String(m).trim()).filter(Boolean);
    return names.length ? names : null;
  }
  if (typeof value !== 'string' && typeof value !== 'number') {
    throw new Error(`knob ${name} wants a string, got ${JSON.stringify(value)}`);
  }
  return String(value);
}

// Merges raw knobs `changes` into a copy of `base`, normalizing each one.
// Throws (and changes nothing) on the first invalid knob.
export function merge(base, changes) {
  const out = { ...base };
  for (const [k, v] of Object.entries(changes ?? {})) {
    const name = k.replace(/-/g, '_');
    out[name] = normalize(name, v);
  }
  return out;
}

// The first failure knob that fires at step i (i tokens already sent), or
// null. Ties go to the more drastic failure: drop, hang, error, malformed.
export function failureAt(knobs, i) {
  for (const [name, kind] of [['drop_after', 'drop'], ['hang_after', 'hang'],
    ['error_after', 'error'], ['malformed_after', 'malformed']]) {
    if (knobs[name] !== null && knobs[name] === i) return kind;
  }
  return null;
}

// Whether model exists under these knobs (Ollama accepts "name" for
// "name:latest").
export function modelExists(knobs, model) {
  if (!knobs.models) return true;
  const base = (m) => (m.includes(':') ? m : `${m}:latest`);
  return knobs.models.some((m) => base(m) === base(model));
}
