// lib.mjs — what Parley's browser tests share: headless Chromium (Debian's
// /usr/bin/chromium through playwright-core, a fresh profile per file), the
// server under test, pages that record their own problems, and the
// simulated LLM's expected answers.
//
// Environment (tests/integration/t0300-browser.sh sets it):
//   PARLEY_BASE        http://127.0.0.1:PORT — the web server serving www/ and the API
//   FAKE_LLM_URL       the simulated LLM parley.fcgi talks to
//   PARLEY_JWT_SECRET  the server's secret ("" or unset: open mode, no token)
//   PARLEY_WS          1 when the WebSocket bridge runs behind the web server
//   PARLEY_SETUP       a name for test titles and screenshots (lighttpd, fcgid…)
//   PARLEY_SHOTS       where screenshots go (default build/browser)
//   CHROMIUM           the browser binary (default /usr/bin/chromium)
// Only 127.0.0.1; every wait is bounded.
import { chromium } from 'playwright-core';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BASE = process.env.PARLEY_BASE;
export const FAKE = process.env.FAKE_LLM_URL;
export const SECRET = process.env.PARLEY_JWT_SECRET || '';
export const WS = process.env.PARLEY_WS === '1';
export const SETUP = process.env.PARLEY_SETUP || 'server';
export const SHOTS = process.env.PARLEY_SHOTS || 'build/browser';
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE || !FAKE) throw new Error('PARLEY_BASE and FAKE_LLM_URL must be set (run tests/integration/t0300-browser.sh)');
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(BASE)) throw new Error(`PARLEY_BASE must be http://127.0.0.1:PORT, not ${BASE}`);

// The transports every page is tested over: long-poll always, WebSocket
// when the bridge is there.
export const TRANSPORTS = WS ? ['longpoll', 'websocket'] : ['longpoll'];

const b64u = (b) => Buffer.from(b).toString('base64url');
// An HS256 JWT for user sub, signed with the server's secret.
export function jwt(sub, secret = SECRET) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
// The token the pages use ('' in open mode).
export const TOKEN = SECRET ? jwt('browser-tester') : '';

export function uid(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

// A fake-LLM directive that streams exactly `text` (JSON-quoted, so any
// character works), token_ms apart.
export function answerDirective(text, tokenMs = 20) {
  return `[[fake answer=${JSON.stringify(text)} token_ms=${tokenMs}]]`;
}

// What the simulated LLM streams for this prompt (directives included).
export async function fakeAnswer(prompt) {
  const r = await fetch(`${FAKE}/_fake/answer`, {
    method: 'POST', body: JSON.stringify({ prompt }), signal: AbortSignal.timeout(5000),
  });
  return (await r.json()).text;
}

// REST call to the server under test, with the token.
export async function api(method, path, body) {
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Starts Chromium with a new empty profile. Returns {context, close()}.
// The token (if any) is in localStorage before any page script runs, as
// the seed 001 client keeps it ('auth_token').
export async function launch() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS,
      viewport: { width: 1100, height: 800 }, timeout: 20000,
    });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  context.setDefaultTimeout(10000);
  context.setDefaultNavigationTimeout(10000);
  await context.addInitScript((tok) => {
    // Record Content-Security-Policy violations for the tests.
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(`${e.violatedDirective}: ${e.blockedURI || ''} ${e.sample || ''}`.trim());
    });
    if (tok) { try { localStorage.setItem('auth_token', tok); } catch { /* opaque origin */ } }
  }, TOKEN);
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Opens BASE + path in a new page that records its JavaScript errors and
// unexpected console errors (page.problems). WebSocket handshake failures
// are expected where there is no bridge and are counted apart
// (page.wsFailures); page.sockets lists the WebSocket URLs it opened.
// before(page), when given, runs before the page loads (an init script, a
// WebSocket route). path may be a whole http:// URL (another server).
export async function openPage(context, path, before) {
  const page = await context.newPage();
  page.problems = [];
  page.wsFailures = [];
  page.sockets = [];
  page.requests = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const t = m.text();
    if (/WebSocket connection to .* failed/.test(t)) page.wsFailures.push(t);
    else if (/Failed to load resource.*(409|410)/.test(t)) { /* expected in some tests */ }
    else page.problems.push(`console: ${t}`);
  });
  page.on('websocket', (ws) => page.sockets.push(ws.url()));
  page.on('request', (r) => page.requests.push({ method: r.method(), url: r.url(), body: r.postData() }));
  if (before) await before(page);
  await page.goto(/^https?:\/\//.test(path) ? path : BASE + path, { waitUntil: 'load' });
  return page;
}

// The page's recorded problems and CSP violations; [] when all is well.
export async function pageProblems(page) {
  const csp = await page.evaluate(() => window.__csp || []).catch(() => []);
  return [...page.problems, ...csp.map((c) => `CSP violation: ${c}`)];
}

export function shotPath(name) {
  mkdirSync(SHOTS, { recursive: true });
  return join(SHOTS, `${name}-${SETUP}.png`);
}
