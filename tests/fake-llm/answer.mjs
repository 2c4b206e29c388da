// answer.mjs — the fake LLM's deterministic answers and its prompt directives.
//
// Owns: the word list, answerTokens() (the answer as a function of the prompt
// text and a token count), splitAnswer() (an exact answer text cut into
// word tokens) and the `[[fake k=v ...]]` directive syntax. Pure functions,
// no I/O: the server and the Node tests import the same code, so a test can
// compute the text the server will stream.

// Tokens carry their leading space like real BPE tokenizers. The list mixes
// plain words with tokens that break naive encoders: accented Latin, CJK, a
// 4-byte UTF-8 emoji, a double quote, a backslash, a newline, HTML-looking
// text (Go's JSON encoder escapes < > & as \u003c \u003e \u0026), a printf
// conversion and punctuation without a leading space.
export const WORDS = Object.freeze([
  ' the', ' answer', ' is', ' ticket', ' customer', ' order', ' refund',
  ' please', ' check', ' your', ' account', ' settings', ' and', ' we',
  ' will', ' help', ' you', ' today', ' streaming', ' token', ' server',
  ' model', ' request', ' reply',
  ',', '.',
  ' café', ' não', ' über', ' 日本語', ' 你好', ' 한국어', ' 🚀', ' 👍🏽',
  ' "quoted"', ' back\\slash', '\n', ' <b>bold</b>', ' Tom&Jerry', ' 100%s',
]);

// Tokens that never start an answer (nor follow a newline), and never end it.
const NOT_FIRST = new Set([',', '.', '\n']);
const NOT_LAST = new Set(['\n']);

const DIRECTIVE_RE = /\[\[fake\b((?:[^\]"]|"(?:[^"\\]|\\.)*")*)\]\]/g;
const PAIR_RE = /([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"\]]*)/g;

// FNV-1a, 32 bits, over the UTF-8 bytes of s.
export function fnv1a(s) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

// mulberry32: a tiny seeded PRNG returning floats in [0, 1).
function rng32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Removes every `[[fake ...]]` directive from text (does not trim).
export function stripDirectives(text) {
  return String(text ?? '').replace(DIRECTIVE_RE, '');
}

// Parses "k=v k2=v2" / "k=v,k2=v2" (values may be JSON double-quoted strings)
// into an object of raw string values. Throws on a malformed quoted value.
export function parsePairs(s) {
  const out = {};
  for (const m of String(s ?? '').matchAll(PAIR_RE)) {
    let v = m[2];
    if (v.startsWith('"')) v = JSON.parse(v);
    out[m[1].replace(/-/g, '_')] = v;
  }
  return out;
}

// The knobs set by every `[[fake ...]]` directive in text, later ones
// overriding earlier ones. Values are raw strings (see knobs.mjs).
export function parseDirectives(text) {
  const out = {};
  for (const m of String(text ?? '').matchAll(DIRECTIVE_RE)) {
    Object.assign(out, parsePairs(m[1]));
  }
  return out;
}

// The prompt text the answer is computed from: directives stripped, trimmed.
export function cleanPrompt(prompt) {
  return stripDirectives(prompt).trim();
}

// The answer to `prompt` as an array of n token strings; deterministic: the
// same prompt and n always give the same tokens. Directives in prompt are
// ignored, so a test may pass either the raw prompt or the prompt without its
// directive. Only the first token and tokens after "\n" lose their leading
// space; an answer never starts or ends with "\n".
export function answerTokens(prompt, n = 12) {
  const count = Math.max(0, Math.floor(Number(n) || 0));
  const next = rng32(fnv1a(cleanPrompt(prompt)));
  const out = [];
  for (let i = 0; i < count; i++) {
    let w = WORDS[Math.floor(next() * WORDS.length)];
    const startOfLine = i === 0 || out[i - 1] === '\n';
    if (startOfLine && NOT_FIRST.has(w)) w = ' the';
    if (i === count - 1 && NOT_LAST.has(w)) w = '.';
    if (startOfLine && w.startsWith(' ')) w = w.slice(1);
    out.push(w);
  }
  return out;
}

// The full answer text: answerTokens(prompt, n).join('').
export function answerText(prompt, n = 12) {
  return answerTokens(prompt, n).join('');
}

// Cuts an exact answer text into word tokens that keep their leading
// whitespace; splitAnswer(t).join('') === t for every string t.
export function splitAnswer(text) {
  return String(text ?? '').match(/\s*\S+|\s+/g) ?? [];
}

// A deterministic stand-in for a prompt's token count (not a real tokenizer).
export function countTokens(text) {
  return splitAnswer(stripDirectives(text)).length;
}

// A fake token id for one token string, in a llama-3-sized vocabulary.
export function tokenId(tok) {
  return fnv1a(tok) % 128000;
}
