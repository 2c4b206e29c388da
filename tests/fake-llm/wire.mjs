// wire.mjs — byte-level helpers shared by the two wire formats.
//
// Go's encoding/json (Ollama) and Python/JSON (OpenAI) render the same value
// differently; these helpers produce the exact bytes each server sends.

import { randomBytes } from 'node:crypto';

// JSON exactly as Go's json.Marshal writes it for plain values: like
// JSON.stringify, except that <, >, &, U+2028 and U+2029 are \u-escaped.
export function goJSON(value) {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Drops keys whose value is 0, '' or an empty array, like Go's `omitempty`.
export function omitEmpty(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    if (v === 0 || v === '' || v === null || v === undefined ||
        (Array.isArray(v) && v.length === 0)) continue;
    out[k] = v;
  }
  return out;
}

// Nanoseconds since the epoch, as a BigInt, with a monotonic fine part.
const EPOCH_OFFSET = BigInt(Date.now()) * 1000000n - process.hrtime.bigint();
export function nowNs() {
  return EPOCH_OFFSET + process.hrtime.bigint();
}

// A UTC time in Go's time.RFC3339Nano layout (trailing zeros of the
// fraction trimmed): "2024-06-01T12:00:00.123456789Z".
export function rfc3339Nano(ns = nowNs()) {
  const ms = Number(ns / 1000000n);
  const frac = (ns % 1000000000n).toString().padStart(9, '0').replace(/0+$/, '');
  const base = new Date(ms).toISOString().slice(0, 19);
  return frac ? `${base}.${frac}Z` : `${base}Z`;
}

// Random [A-Za-z0-9] string of length n.
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export function randomAlnum(n) {
  const bytes = randomBytes(n);
  let s = '';
  for (const b of bytes) s += ALNUM[b % ALNUM.length];
  return s;
}

// Sends a complete (non-streamed) response with a Content-Length.
export function sendBody(res, status, contentType, body, headers = {}) {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.end();
    return;
  }
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, {
    ...headers,
    'Content-Type': contentType,
    'Content-Length': buf.length,
  });
  res.end(buf);
}

// Starts a streamed (chunked) 200 response and sends its headers at once,
// as real servers do before the first token is ready.
export function startStream(res, contentType, headers = {}) {
  res.writeHead(200, { ...headers, 'Content-Type': contentType });
  res.flushHeaders();
}
